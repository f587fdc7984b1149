"""Benchmark: fast expectations for activations without closed forms (issue 14, part 1).

1. Accuracy vs time per candidate rule on 4-sample blocks ⟨σσσσ⟩, ⟨σσσ'σ'⟩, ⟨σ'σ'σ'σ'⟩ drawn
   from the kernels of a tanh MLP (C_W = 1, C_b = 0, N = 32 random inputs in 4-D) at layers 1, 2,
   5 and 9 (largest standard deviations 1.55, 0.74, 0.38, 0.26): the fixed-order split rule
   (``method="quadrature"``, the old default for tanh is order 12 per piece in 4-D) and the
   error-controlled rule (default, ``tol`` = 2e-11) at several tolerances; errors are maximum
   relative errors per block against the split rule at order 26 (converged to ~1e-13).
2. Wall times of ``rgflow.theory`` (all first-order tensors), tanh depth 10, N = 8, 16, 32:
   the new default and the old rule (``expectations="quadrature"``), back to back; the old rule
   is skipped above ``--old-max`` inputs (its time is extrapolated by N⁴ from the largest size run).
   With ``--baseline DIR`` (the ``python`` folder of another rgflow checkout, e.g. main's), the
   same call is also timed there (in a subprocess, default expectations), back to back with this
   checkout, for before/after figures of the default rule; ``--baseline-max`` caps its N.
   Every row records the 1-minute load average (2 shared cores: compare rows of one run).

Usage: ``python benches/bench_fastexp.py [--sizes 8 16 32] [--old-max 8] [--blocks 6]
[--baseline ../main/python] [--baseline-max 16] [--acts tanh swish] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, timed, write_json  # noqa: E402
from rgflow._util.native import core as _core  # noqa: E402
from rgflow.gauss import core_activation  # noqa: E402


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table (pasted into benches/README.md)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


ITS = [[(0, 0, [m >> i & 1]) for i in range(4)] for m in (0b0000, 0b0011, 0b1111)]


def blocks(n_blocks: int) -> dict[int, np.ndarray]:
    x = np.random.default_rng(32).standard_normal((32, 4))
    th = rgflow.theory(rgflow.MLP("tanh", depth=10, width=64, C_b=0.0, C_W=1.0), x, order=0, ntk=False)
    rng = np.random.default_rng(5)
    out = {}
    for layer in (1, 2, 5, 9):
        k = th.K[layer - 1]
        out[layer] = np.ascontiguousarray(
            [k[np.ix_(s, s)] for s in (rng.choice(32, 4, replace=False) for _ in range(n_blocks))]
        )
    return out


def accuracy_table(act_name: str, n_blocks: int) -> list[dict]:
    act = core_activation(rgflow.Activation(act_name))
    cands: list[tuple[str, int, bool, float]] = [(f"split order {o}", o, True, 0.0) for o in (8, 12, 16, 20)]
    cands += [(f"fast tol {t:.0e}", 0, False, t) for t in (1e-8, 1e-10, 2e-11, 1e-12)]
    rows = []
    for layer, covs in blocks(n_blocks).items():
        log(f"{act_name} layer {layer}: reference")
        ref = _core.expect_batch(act, covs, ITS, 26, True).reshape(len(covs), -1)
        for name, order, qonly, tol in cands:
            vals, t = timed(_core.expect_batch, act, covs, ITS, order, qonly, tol)
            err = np.max(np.abs(vals.reshape(len(covs), -1) - ref) / np.maximum(np.abs(ref), 1e-3))
            rows.append(
                {
                    "activation": act_name,
                    "layer": layer,
                    "sd_max": float(np.sqrt(np.max(np.diagonal(covs, axis1=1, axis2=2)))),
                    "rule": name,
                    "ms_per_block": 1e3 * t / len(covs),
                    "max_rel_err": float(err),
                }
            )
    return rows


_BASELINE = """
import json, sys, time
import numpy as np
import rgflow
n, act = int(sys.argv[1]), sys.argv[2]
x = np.random.default_rng(n).standard_normal((n, 4))
t = time.perf_counter()
rgflow.theory(rgflow.MLP(act, depth=10, width=64, C_b=0.0, C_W=1.0), x)
print(json.dumps({"s": time.perf_counter() - t, "rgflow": rgflow.__file__}))
"""


def baseline_time(path: str, n: int, act: str) -> float:
    """Wall time of the same ``theory`` call with the rgflow package under ``path``."""
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(n), act], env=env, check=True, capture_output=True, text=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"baseline ({res['rgflow']}) N={n} {act}: {res['s']:.2f} s")
    return float(res["s"])


def theory_times(
    sizes: list[int], old_max: int, baseline: str | None = None, baseline_max: int = 16, act: str = "tanh"
) -> list[dict]:
    rows = []
    old_last: tuple[int, float] | None = None
    for n in sizes:
        x = np.random.default_rng(n).standard_normal((n, 4))
        net = rgflow.MLP(act, depth=10, width=64, C_b=0.0, C_W=1.0)
        log(f"theory {act} N={n}: new")
        new, t_new = timed(rgflow.theory, net, x)
        row: dict = {"activation": act, "N": n, "new_s": t_new, "load": round(os.getloadavg()[0], 2)}
        if baseline is not None and n <= baseline_max:
            row["baseline_s"] = baseline_time(baseline, n, act)
        if n <= old_max:
            log(f"theory {act} N={n}: old")
            old, t_old = timed(rgflow.theory, net, x, expectations="quadrature")
            row["old_s"] = t_old
            row["max_rel_diff"] = max(
                float(np.max(np.abs(new.tensors()[k] - v)) / np.max(np.abs(v))) for k, v in old.tensors().items()
            )
            old_last = (n, t_old)
        elif old_last is not None:
            row["old_est_s"] = old_last[1] * (n / old_last[0]) ** 4
        rows.append(row)
        log(f"theory {act} N={n}: {row}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--old-max", type=int, default=8, help="largest N for the old rule (default 8)")
    ap.add_argument("--blocks", type=int, default=6, help="4-D blocks per layer in the accuracy table")
    ap.add_argument("--acts", nargs="+", default=["tanh", "swish"])
    ap.add_argument("--theory-acts", nargs="+", default=["tanh"], help="activations of the theory() timings")
    ap.add_argument("--baseline", help="python folder of another rgflow checkout to time the same calls with")
    ap.add_argument("--baseline-max", type=int, default=16, help="largest N for the baseline (default 16)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the per-block accuracy table")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    acc = [] if args.no_accuracy else [r for a in args.acts for r in accuracy_table(a, args.blocks)]
    print("\n### Accuracy vs time, 4-D blocks\n")
    print(
        table(
            ["act", "layer", "max sd", "rule", "ms/block", "max rel err"],
            [
                [
                    r["activation"],
                    r["layer"],
                    fmt(r["sd_max"]),
                    r["rule"],
                    fmt(r["ms_per_block"]),
                    f"{r['max_rel_err']:.1e}",
                ]
                for r in acc
            ],
        )
    )
    th = [
        r
        for a in args.theory_acts
        for r in theory_times(sorted(args.sizes), args.old_max, args.baseline, args.baseline_max, a)
    ]
    print("\n### theory(), depth 10, all first-order tensors\n")
    print(
        table(
            ["act", "N", "load", "new s", "baseline s", "baseline/new", "old s", "old/new", "max|new-old|/max|old|"],
            [
                [
                    r["activation"],
                    r["N"],
                    fmt(r["load"]),
                    fmt(r["new_s"]),
                    fmt(r.get("baseline_s")),
                    fmt(r["baseline_s"] / r["new_s"]) if "baseline_s" in r else "—",
                    fmt(r.get("old_s")) if "old_s" in r else f"est. {fmt(r.get('old_est_s'))}",
                    fmt((r.get("old_s") or r.get("old_est_s") or float("nan")) / r["new_s"]),
                    f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "—",
                ]
                for r in th
            ],
        )
    )
    if args.json:
        write_json(args.json, {"machine": machine(), "accuracy": acc, "theory": th})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
