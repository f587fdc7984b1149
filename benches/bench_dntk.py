"""Benchmark: the dNTK family P, Q, R, S, T, U in the Rust engine.

Three measurements, printed as a markdown table:

1. **Engine vs numpy reference** (``rgflow.testing.reference``, the book's inverse-kernel form on
   tensor Gauss-Hermite rules): all tensors including P..U, wall time of each and the largest
   relative difference of P..U (per tensor, relative to its largest entry).  The reference's
   cost is N^4 Python-level entries per layer with up-to-4-D quadrature grids, so it only runs
   up to ``--ref-max`` inputs (default 4); larger sizes report the engine alone.
2. **Cost of the dNTK family**: engine time with ``dntk=True`` over the first-order pass
   without it (K, K1, Θ, Θ1, V, D, F, A, B): the target is <= 2x.
3. Sizes: ``--sizes`` (default: the small configuration N = 3, 4, depth 4); ``--full`` runs the
   issue's configurations N = 16 and 32 at depth 10 (GELU at criticality).

Usage: ``python benches/bench_dntk.py [--full] [--sizes 3 4] [--depth 4] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, markdown, timed, write_json  # noqa: E402
from rgflow.testing import reference  # noqa: E402

GELU = {"C_b": 0.17292239, "C_W": 1.98305826}
DNTK = ("P", "Q", "R", "S", "T", "U")


def run(n: int, depth: int, act: str, ref_max: int, repeat: int) -> dict:
    x = np.random.default_rng(0).normal(size=(n, 3))
    net = rgflow.MLP(act, depth=depth, width=64, lambda_b=0.5, lambda_W=1.5, **GELU)
    _, t_first = timed(rgflow.theory, net, x, repeat=repeat)
    th, t_dntk = timed(rgflow.theory, net, x, dntk=True, repeat=repeat)
    row = {"N": n, "depth": depth, "activation": act, "engine_first_order_s": t_first, "engine_dntk_s": t_dntk}
    row["dntk_cost_ratio"] = t_dntk / t_first
    if n <= ref_max:
        log(f"reference N={n} depth={depth}")
        ref, t_ref = timed(reference.theory, net, x, dntk=True)
        row["reference_s"] = t_ref
        row["speedup"] = t_ref / t_dntk
        row["max_rel_diff"] = {
            k: float(np.max(np.abs(getattr(th, k) - getattr(ref, k))) / np.max(np.abs(getattr(th, k)))) for k in DNTK
        }
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--activation", default="gelu")
    ap.add_argument("--full", action="store_true", help="the issue's sizes: N = 16 and 32 at depth 10")
    ap.add_argument("--ref-max", type=int, default=4, help="largest N at which the numpy reference runs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sizes, depth = ([16, 32], 10) if args.full else (args.sizes, args.depth)
    rows = []
    for n in sizes:
        log(f"engine N={n} depth={depth}")
        rows.append(run(n, depth, args.activation, args.ref_max, 1 if n >= 16 else args.repeat))
    headers = ["N", "depth", "act", "first-order pass (s)", "with dNTK (s)", "dNTK cost ×", "reference (s)", "speedup"]
    headers += [f"max rel diff {k}" for k in DNTK]
    out = []
    for r in rows:
        d = r.get("max_rel_diff", {})
        out.append(
            [r["N"], r["depth"], r["activation"], fmt(r["engine_first_order_s"]), fmt(r["engine_dntk_s"])]
            + [fmt(r["dntk_cost_ratio"]), fmt(r.get("reference_s", "—")), fmt(r.get("speedup", "—"))]
            + [fmt(d.get(k, "—"), ".1e") for k in DNTK]
        )
    print(markdown(headers, out))
    write_json(args.json, {"machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
