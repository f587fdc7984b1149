"""Benchmark 2: the first-order theory, rgflow.theory (Rust core) vs rgflow.testing.reference.theory (numpy).

All tensors (K, K1, Theta, Theta1, V, D, F, A, B) of a depth-L MLP (default L = 10) for gelu at
criticality and relu (C_W = 2), on N random inputs, for N in ``--sizes`` (default 4 8 16 32).
The four-point tensors have N^4 entries per layer, so the cost grows like N^4: for each size
above ``--always`` (8) the reference's time per layer is estimated from the previous size
(× (N/N_prev)^4); if the full-depth run would exceed ``--cap`` (300 s), both implementations
are run at the largest depth that fits (at least 2, i.e. one recursion step) and compared per
layer; if even depth 2 would exceed ``--max-cap`` (900 s) the reference is skipped and its
estimate reported.

Reported: wall time and time per layer of each implementation, their ratio, and the largest
difference over all tensors and layers, absolute and relative to the tensor's largest entry
(the worst tensor is named).

Usage: ``python benches/bench_theory.py [--depth 10] [--sizes 4 8 16 32] [--cap 300] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow.testing import reference  # noqa: E402

NETS = {
    "gelu": {"C_b": 0.17292239, "C_W": 1.98305826},
    "relu": {"C_b": 0.0, "C_W": 2.0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--dim", type=int, default=4, help="input dimension n0 (default 4)")
    ap.add_argument("--cap", type=float, default=300.0, help="reduce the depth of a run estimated above this (s)")
    ap.add_argument("--max-cap", type=float, default=900.0, help="skip a reference run estimated above this (s)")
    ap.add_argument("--always", type=int, default=8, help="sizes up to this one run whatever the estimate (default 8)")
    ap.add_argument("--acts", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    results = []
    rgflow.theory(rgflow.MLP("relu", depth=2, width=8), np.eye(2))  # warm-up (rule caches)
    impls = {"rgflow": rgflow.theory, "reference": reference.theory}
    for act in args.acts:
        prev: dict[str, tuple[int, float]] = {}
        for N in sorted(args.sizes):
            x = np.random.default_rng(N).standard_normal((N, args.dim))
            row: dict = {"activation": act, "N": N, "depth": args.depth, "skipped": {}}
            out = {}
            depth = args.depth
            if "reference" in prev and N > args.always:
                n_prev, t_layer = prev["reference"]
                est_layer = t_layer * (N / n_prev) ** 4  # per recursion step
                if est_layer * (args.depth - 1) > args.cap:
                    depth = max(2, 1 + int(args.cap // est_layer))
                    if est_layer * (depth - 1) > args.max_cap:
                        log(f"{act} N={N}: reference skipped (estimated {est_layer:.0f} s per layer)")
                        row["skipped"]["reference"] = est_layer * (args.depth - 1)
                        depth = args.depth
            row["depth"] = depth
            net = rgflow.MLP(act, depth=depth, width=64, **NETS[act])
            for key, fn in impls.items():
                if key in row["skipped"]:
                    continue
                log(f"{act} N={N} depth {depth}: {key}")
                out[key], t = timed(fn, net, x)
                row[f"{key}_s"] = t
                row[f"{key}_s_per_layer"] = t / depth
                prev[key] = (N, t / max(depth - 1, 1))
                log(f"{act} N={N}: {key} {t:.1f} s")
            if "rgflow" in out and depth != args.depth:
                # rgflow at the full depth as well (the headline figure)
                net_full = rgflow.MLP(act, depth=args.depth, width=64, **NETS[act])
                _, t = timed(rgflow.theory, net_full, x)
                row["rgflow_full_s"] = t
            if len(out) == 2:
                row["ratio_rgflow_reference"] = row["rgflow_s"] / row["reference_s"]
                row["speedup"] = row["reference_s"] / row["rgflow_s"]
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

    headers = ["act", "N", "depth", "rgflow s", "rgflow s/layer", "reference s", "reference s/layer", "ref/rgflow",
               "max|Δ|", "max|Δ|/max|T|", "worst tensor", f"rgflow s at depth {args.depth}"]  # fmt: skip
    rows = []
    for r in results:
        cells = [r["activation"], r["N"], r["depth"]]
        for key in ("rgflow", "reference"):
            if key in r["skipped"]:
                est = r["skipped"][key]
                cells += [f"skipped (est. {est:.0f} s)", f"est. {est / (r['depth'] - 1):.0f}"]
            else:
                cells += [fmt(r[f"{key}_s"]), fmt(r[f"{key}_s_per_layer"])]
        if "max_abs_diff" in r:
            cells += [f"{r['speedup']:.0f}×", fmt(r["max_abs_diff"], ".1e"),
                      fmt(r["max_rel_diff"], ".1e"), r["worst_tensor"]]  # fmt: skip
        else:
            cells += ["—", "—", "—", "—"]
        cells.append(fmt(r.get("rgflow_full_s", r.get("rgflow_s"))))
        rows.append(cells)
    print(f"First-order theory, all tensors, depth {args.depth}: rgflow.theory vs the numpy reference (rgflow.testing)")
    print(table(headers, rows))
    write_json(args.json, {"benchmark": "theory", "machine": machine(), "results": results,
                           "headers": headers, "rows": rows, "cap_s": args.cap})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
