"""Benchmark 2: the first-order theory, rgflow.theory (Rust core) vs rgflow.reference.theory (numpy).

All tensors (K, K1, Theta, Theta1, V, D, F, A, B) of a depth-L MLP (default L = 10) for gelu at
criticality and relu (C_W = 2), on N random inputs, for N in ``--sizes`` (default 4 8 16).  The
four-point tensors have N^4 entries per layer, so the cost grows like N^4: for each size above
``--always`` (8) and each implementation, the time of the previous size is scaled by
(N/N_prev)^4 and the run is skipped (reported as skipped, with the estimate) if that exceeds
``--cap`` (100) seconds.

Reported: wall time and time per layer of each implementation, their ratio, and the largest
difference over all tensors and layers, absolute and relative to the tensor's largest entry
(the worst tensor is named).

Usage: ``python benches/bench_theory.py [--depth 10] [--sizes 4 8 16] [--cap 100] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow import reference  # noqa: E402

NETS = {
    "gelu": {"C_b": 0.17292239, "C_W": 1.98305826},
    "relu": {"C_b": 0.0, "C_W": 2.0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--dim", type=int, default=4, help="input dimension n0 (default 4)")
    ap.add_argument("--cap", type=float, default=100.0, help="skip a run whose estimated time exceeds this (s)")
    ap.add_argument("--always", type=int, default=8, help="sizes up to this one run whatever the estimate (default 8)")
    ap.add_argument("--acts", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    results = []
    impls = {"rgflow": rgflow.theory, "reference": reference.theory}
    for act in args.acts:
        prev: dict[str, tuple[int, float]] = {}
        for N in sorted(args.sizes):
            x = np.random.default_rng(N).standard_normal((N, args.dim))
            net = rgflow.MLP(act, depth=args.depth, width=64, **NETS[act])
            row: dict = {"activation": act, "N": N, "depth": args.depth, "skipped": {}}
            out = {}
            for key, fn in impls.items():
                if key in prev:
                    n_prev, t_prev = prev[key]
                    est = t_prev * (N / n_prev) ** 4
                    if N > args.always and est > args.cap:
                        log(f"{act} N={N}: {key} skipped (estimated {est:.0f} s > cap {args.cap:.0f} s)")
                        row["skipped"][key] = est
                        continue
                log(f"{act} N={N}: {key}")
                out[key], t = timed(fn, net, x)
                row[f"{key}_s"] = t
                row[f"{key}_s_per_layer"] = t / args.depth
                prev[key] = (N, t)
                log(f"{act} N={N}: {key} {t:.1f} s")
            if len(out) == 2:
                row["ratio_rgflow_reference"] = row["rgflow_s"] / row["reference_s"]
                worst_abs, worst_rel, worst_name = 0.0, 0.0, ""
                per_tensor = {}
                for name, a in out["rgflow"].tensors().items():
                    b = getattr(out["reference"], name)
                    d = float(np.max(np.abs(a - b)))
                    scale = float(np.max(np.abs(b)))
                    rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
                    per_tensor[name] = {"max_abs_diff": d, "max_abs": scale, "rel": rel}
                    worst_abs = max(worst_abs, d)
                    if rel >= worst_rel:
                        worst_rel, worst_name = rel, name
                row.update(
                    max_abs_diff=worst_abs, max_rel_diff=worst_rel, worst_tensor=worst_name, per_tensor=per_tensor
                )
            results.append(row)

    headers = ["act", "N", "rgflow s", "rgflow s/layer", "reference s", "reference s/layer", "rgflow/ref",
               "max|Δ|", "max|Δ|/max|T|", "worst tensor"]  # fmt: skip
    rows = []
    for r in results:
        cells = [r["activation"], r["N"]]
        for key in ("rgflow", "reference"):
            if key in r["skipped"]:
                cells += [f"skipped (est. {r['skipped'][key]:.0f} s)", "—"]
            else:
                cells += [fmt(r[f"{key}_s"]), fmt(r[f"{key}_s_per_layer"])]
        if "max_abs_diff" in r:
            cells += [fmt(r["ratio_rgflow_reference"], ".2f"), fmt(r["max_abs_diff"], ".1e"),
                      fmt(r["max_rel_diff"], ".1e"), r["worst_tensor"]]  # fmt: skip
        else:
            cells += ["—", "—", "—", "—"]
        rows.append(cells)
    print(f"First-order theory, all tensors, depth {args.depth}: rgflow.theory vs rgflow.reference.theory (numpy)")
    print(table(headers, rows))
    write_json(args.json, {"benchmark": "theory", "machine": machine(), "results": results,
                           "headers": headers, "rows": rows, "cap_s": args.cap})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
