"""Benchmark 5: residual networks -- depth-ODE solves and sampler throughput, side by side.

Theory (the paper setup of spec ``resnets.md``: tanh, C_W = 2, N = 4 inputs with K0(0) diagonal 2 /
off-diagonal 0.6, ε = 0.05, L = 800, T = 2; K0, V4 and K1 together, recorded every 100 blocks):

* ``preresnet_theory(method="ode")`` -- adaptive Dormand-Prince 5(4), rtol 1e-8 / atol 1e-10;
* ``preresnet_theory(method="discrete")`` -- the block-by-block recursion (800 steps);
* ``preresnet_theory_gh`` -- the published scheme (forward Euler, plain 32-point Gauss-Hermite, numpy).

Samplers (networks per second; JAX: first run with tracing and compilation, then the steady state):

* ``sample_preresnet`` on the same setup (width 64, L = 800): numpy and JAX, block law and dense
  weights;
* ``sample_resmlp``: ReLU, γ² = ½ at criticality, depth 10, width 64, 4 inputs: numpy and JAX.

The result column gives the value at the last layer (theory) or the sampled value ± stderr, and
for JAX rows the largest |numpy − jax| / combined stderr over all entries (different random
streams: O(1) values are expected).

Usage: ``python benches/bench_residual.py [--networks 1000] [--json out.json]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow import PreResNet, ResMLP
from rgflow.ensembles import sample
from rgflow.recursions import (  # noqa: E402
    preresnet_theory,
    preresnet_theory_gh,
    resmlp_theory,  # noqa: E402
)

K_PAPER = 2 * (0.7 * np.eye(4) + 0.3)


def zmax(a, b, keys) -> float:
    zs = []
    for k in keys:
        se = np.hypot(getattr(a.stderr, k), getattr(b.stderr, k))
        d = np.abs(getattr(a, k) - getattr(b, k))
        m = se > 0
        zs.append(float(np.max(d[m] / se[m])))
    return max(zs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=800, help="pre-activation ResNet blocks L (ε = sqrt(2/L))")
    ap.add_argument("--networks", type=int, default=1000, help="networks per block-law / resmlp sampler run")
    ap.add_argument("--weights-networks", type=int, default=200, help="networks per dense-weights sampler run")
    ap.add_argument("--res-depth", type=int, default=10)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--backends", nargs="+", default=["numpy", "jax"], choices=["numpy", "jax"])
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    L = args.depth
    eps = math.sqrt(2.0 / L)
    every = max(1, L // 8)
    net = PreResNet("tanh", depth=L, width=64, eps=eps, C_W=2.0)
    headers = ["task", "implementation", "size", "first run s", "time s", "networks/s", "result at the last layer"]
    rows, results = [], []

    # ------------------------------------------------------------------ theory
    def th_row(name: str, fn, **kw) -> None:
        log(f"theory: {name}")
        th, t = timed(fn, net, kernel=K_PAPER, every=every, **kw)
        if th.method == "discrete":
            steps = f"{L} blocks"
        else:
            steps = f"{th.accepted} steps" + (f" (+{th.rejected} rejected)" if th.rejected else "")
        res = f"K0[0,0]={th.K[-1, 0, 0]:.4f}, V4[0000]={th.V[-1, 0, 0, 0, 0]:.3f}, K1[0,0]={th.K1[-1, 0, 0]:.4f}"
        rows.append(["preresnet theory K0+V4+K1", name, f"L={L}, N=4, {steps}", "—", fmt(t), "—", res])
        last = {"K0_00": th.K[-1, 0, 0], "V4_0000": th.V[-1, 0, 0, 0, 0], "K1_00": th.K1[-1, 0, 0]}
        results.append({"task": "theory", "implementation": name, "seconds": t, "accepted": th.accepted, **last})

    th_row("preresnet_theory ode (Rust, DP5(4))", preresnet_theory, method="ode")
    th_row("preresnet_theory discrete (Rust)", preresnet_theory, method="discrete")
    th_row("preresnet_theory_gh 32-pt GH Euler (numpy)", preresnet_theory_gh, gh_order=32)

    # ------------------------------------------------------------------ samplers
    have_jax = "jax" in args.backends
    if have_jax:
        try:
            import jax

            jax_version = jax.__version__
        except ImportError:
            log("jax is not installed: skipping the jax backend")
            have_jax = False
    backends = [b for b in args.backends if b != "jax" or have_jax]

    def sampler_rows(task: str, size: str, call, keys, show) -> None:
        got = {}
        for be in backends:
            first = None
            if be == "jax":  # the first run traces and compiles; the second is the steady state
                log(f"{task} [{be}]: first run")
                _, first = timed(call, be)
            log(f"{task} [{be}]: timed run")
            e, t = timed(call, be)
            got[be] = e
            res = show(e)
            if be == "jax" and "numpy" in got:
                res += f"; max|np−jax|/σ {zmax(got['numpy'], e, keys):.2f}"
            label = f"{be} {'' if be == 'numpy' else jax_version}".strip()
            rows.append([task, label, size, fmt(first), fmt(t), fmt(e.networks / t, ".4g"), res])
            results.append({"task": task, "backend": be, "networks": e.networks, "first_run_s": first,
                            "run_s": t, "networks_per_second": e.networks / t, "batch": e.batch})  # fmt: skip

    def pre_show(e) -> str:
        return f"V4[0000]={e.V[-1, 0, 0, 0, 0]:.2f} ± {e.stderr.V[-1, 0, 0, 0, 0]:.2f}"

    for sampler, nn in (("block", args.networks), ("weights", args.weights_networks)):
        sampler_rows(
            f"sample_preresnet {sampler}",
            f"L={L}, n=64, N=4, {nn} nets",
            lambda be, s=sampler, m=nn: sample(
                net, kernel=K_PAPER, networks=m, groups=args.groups, every=every, sampler=s, backend=be, progress=False
            ),
            ("K", "V", "Sigma"),
            pre_show,
        )

    res_net = ResMLP.critical("relu", args.res_depth, 64, math.sqrt(0.5))
    x = np.random.default_rng(0).standard_normal((4, 8))
    rth = resmlp_theory(res_net, x)

    def res_show(e) -> str:
        v, se = e.V[-1, 0, 0, 0, 0], e.stderr.V[-1, 0, 0, 0, 0]
        return f"V[0000]={v:.2f} ± {se:.2f} (theory {rth.V[-1, 0, 0, 0, 0]:.2f})"

    sampler_rows(
        "sample_resmlp",
        f"depth {args.res_depth}, n=64, N=4, {args.networks} nets",
        lambda be: sample(res_net, x, networks=args.networks, groups=args.groups, backend=be, progress=False),
        ("K", "V", "S"),
        res_show,
    )

    print(f"Residual networks: theory (paper setup, tanh, T = 2) and sampler throughput ({os.cpu_count()} CPUs)")
    print(table(headers, rows))
    write_json(args.json, {"benchmark": "residual", "machine": machine(), "results": results,
                           "headers": headers, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
