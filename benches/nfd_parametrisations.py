"""Depth rates and coupling of trained depth-μP ResNets under two alternative readings of nfd.md §2.4:
the literal T/L branch and a depth-decaying hidden learning rate L^-1/2 (tanh, spec §3.1 setup,
n = 128, 16 networks, L = 4..32).  Usage: ``python benches/nfd_parametrisations.py``"""

import time

import numpy as np

import rgflow

x = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]]) * np.sqrt(2.0)
y = np.array([1.0, -1.0])
for label, kw in (
    ("tanh, literal 1/L branch (T/L)", dict(branch="linear")),
    ("tanh, depth-decaying hidden lr L^-1/2", dict(hidden_lr_depth_power=0.5)),
):
    net = rgflow.DepthMuPResNet("tanh", depth=4, width=128, gamma0=2.0, **kw)
    t = time.perf_counter()
    sw = rgflow.train_depth_sweep(net, x, y, (4, 8, 16, 32), steps=3, eta=0.1, networks=16, seed=2)
    print(label, f"{time.perf_counter() - t:.0f} s")
    for k, r in sw.rates().items():
        print("  ", k, r)
    g, se = sw.gap("f")
    print("   gap f(x1,3) by L:", [f"{a:.4f}±{b:.4f}" for a, b in zip(g[:, -1, 0], se[:, -1, 0], strict=True)])
