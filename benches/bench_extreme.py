"""Extreme scales (issue 16): accuracy of ⟨tanh'⟩ at huge variance, theory at large and anisotropic
inputs, a custom tanh against the built-in, and the ordinary-input timing (theory tanh, N = 8,
depth 10) that must not regress.  Run once per build to compare (figures in benches/README.md):

    PYTHONPATH=/path/to/build/python python benches/bench_extreme.py
"""

from __future__ import annotations

import time

import numpy as np

import rgflow
from rgflow import MLP, Activation, expect, theory

X3 = np.array([[0.9, -0.4], [0.3, 1.1], [-0.6, 0.2]])
# ⟨tanh'(z)⟩, z ~ N(0, K): scipy quad with breakpoints (tests/test_extreme_scales.py)
TANH_PRIME = {1e4: 0.007978517519486958, 1e6: 0.0007978842326862749, 1e8: 7.978845575216966e-05}


def _tanh_custom() -> Activation:
    t = np.tanh
    f = [
        lambda z: t(z),
        lambda z: 1 - t(z) ** 2,
        lambda z: -2 * t(z) * (1 - t(z) ** 2),
        lambda z: (1 - t(z) ** 2) * (6 * t(z) ** 2 - 2),
        lambda z: (1 - t(z) ** 2) * (16 * t(z) - 24 * t(z) ** 3),
        lambda z: (1 - t(z) ** 2) * (16 - 120 * t(z) ** 2 + 120 * t(z) ** 4),
    ]
    return Activation.from_callable(f[0], derivatives=f[1:], name="custom_tanh")


def main() -> None:
    print("rgflow from", rgflow.__file__)
    for K, want in TANH_PRIME.items():
        v = expect([[K]], [(0, 1)], "tanh")
        print(f"<tanh'> K={K:.0e}: {v:.16e}  rel err {abs(v - want) / want:.1e}")
    net = MLP("tanh", depth=4, width=10, C_b=0.0, C_W=1.0)
    t0 = time.perf_counter()
    try:
        a = theory(net, 100 * X3).A[-1][0, 0, 0, 0]
        print(f"theory tanh 100*X3 A[4][0000] = {a!r} ({time.perf_counter() - t0:.2f} s)")
    except ValueError as e:
        print(f"theory tanh 100*X3 raised: {e}")
    relu = MLP("relu", depth=3, width=10, C_b=0.0, C_W=2.0)
    k12 = theory(relu, np.diag([1e6, 1.0])).K[1][0, 1]
    print(f"theory relu diag(1e6, 1) K[2][0,1] = {k12!r} (exact 1e6/π = {1e6 / np.pi!r})")
    tb, tc = theory(net, X3), theory(MLP(_tanh_custom(), depth=4, width=10, C_b=0.0, C_W=1.0), X3)
    print("custom tanh vs built-in, max |ΔA| =", float(np.max(np.abs(tb.A - tc.A))))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4))
    big = MLP("tanh", depth=10, width=20, C_b=0.0, C_W=1.0)
    theory(big, x[:2])
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        theory(big, x)
        ts.append(time.perf_counter() - t0)
    print(f"theory tanh N=8 depth 10: best of 3 {min(ts):.2f} s")


if __name__ == "__main__":
    main()
