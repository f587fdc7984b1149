"""Benchmark: depth-μP ResNet kernels at initialisation (nfd.md §2.1) -- Rust core vs numpy reference.

For N inputs (random, |x|² = d = 8) and L = 64 blocks, side by side in one run:

* ``rgflow.theory(net, x, limit=False)`` -- the finite-L recursions K, G, Θ, Θ_dec in the Rust core
  (pair expectations: closed forms for relu, the engine's converged quadrature for tanh; pairs in
  parallel);
* ``rgflow.testing.depthmup_reference.depthmup_theory`` -- the same recursion in numpy (relu: the
  arc-cosine closed forms; tanh: a whitened 2-D trapezoid rule, h = 0.15, vectorised over pairs);
* ``rgflow.theory(net, x)`` -- with the L → ∞ depth-ODE limit (Dormand–Prince, rtol 1e-11, on the
  default grid of L + 1 points and on a coarse grid of 9 points).

The last column is max |Θ_rust − Θ_numpy|.

Usage: ``python benches/bench_depthmup.py [--sizes 2 16 64] [--tanh-sizes 2 16] [--depth 64] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow.testing import depthmup_reference  # noqa: E402


def inputs(N: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((N, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[2, 16, 64], help="N for relu")
    ap.add_argument("--tanh-sizes", type=int, nargs="*", default=[2, 16, 64], help="N for tanh")
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    L = args.depth
    headers = ["activation", "N", "rust s", "numpy s", "numpy/rust", "rust+limit s", "rust+limit(9) s", "max|ΔΘ|"]
    rows, results = [], []
    for act, sizes in (("relu", args.sizes), ("tanh", args.tanh_sizes)):
        net = rgflow.DepthMuPResNet(act, depth=L)
        for N in sizes:
            x = inputs(N)
            log(f"{act} N={N}: rust")
            th, t_rust = timed(rgflow.theory, net, x, limit=False, repeat=args.repeat)
            _, t_lim = timed(rgflow.theory, net, x, repeat=args.repeat)
            _, t_lim9 = timed(rgflow.theory, net, x, limit_grid=8, repeat=args.repeat)
            log(f"{act} N={N}: numpy")
            ref, t_np = timed(depthmup_reference.depthmup_theory, net, x, repeat=args.repeat)
            diff = float(np.abs(th.Theta - ref["Theta"]).max())
            rows.append([act, N, fmt(t_rust), fmt(t_np), fmt(t_np / t_rust), fmt(t_lim), fmt(t_lim9), f"{diff:.1e}"])
            results.append(
                {
                    "activation": act,
                    "N": N,
                    "depth": L,
                    "rust_s": t_rust,
                    "numpy_s": t_np,
                    "rust_limit_s": t_lim,
                    "rust_limit9_s": t_lim9,
                    "max_abs_diff_theta": diff,
                }
            )
    print(table(headers, rows))
    write_json(args.json, {"machine": machine(), "depth": L, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
