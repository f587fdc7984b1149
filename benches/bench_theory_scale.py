"""Memory bounded by what is asked (issue 14 parts 2-3): rgflow.theory for a gelu MLP, side by side.

Configurations, each run in a fresh subprocess (so that its peak resident set is its own):

* ``dense``: every tensor at every layer (the default, (L, N, N, N, N) four-point arrays);
* ``last``: ``layers=[-1]`` (every tensor at the last layer; the recursion streams through the
  others);
* ``tuples``: ``tuples=rgflow.tuples_at_most_one(train, test)`` with ``layers=[-1]``: the
  four-point tensors at every tuple with at most one test index (what the O(1/n) learning
  predictions contract over), N = train + test inputs.

Reported per configuration: wall time, CPU time, peak RSS (``ru_maxrss`` of the child), the
number of four-point entries returned, and the largest difference to the dense run's entries
where both ran (0 = identical to the last bit).

Usage: ``python benches/bench_theory_scale.py [--n 24] [--depth 4] [--train 16 --test 4]
[--configs dense last tuples] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine, table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np
import rgflow

cfg = json.loads(sys.argv[1])
n, depth = cfg["n"], cfg["depth"]
x = np.random.default_rng(0).normal(size=(n, 4))
net = rgflow.MLP(depth=depth, width=64, activation="gelu", C_b=0.17292239, C_W=1.98305826)
kw = {}
if cfg["kind"] in ("last", "tuples"):
    kw["layers"] = [-1]
if cfg["kind"] == "tuples":
    kw["tuples"] = rgflow.tuples_at_most_one(np.arange(cfg["train"]), np.arange(cfg["train"], n))
t0, c0 = time.perf_counter(), time.process_time()
th = rgflow.theory(net, x, **kw)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
entries = sum(getattr(th, k)[-1].size for k in ("V", "D", "F", "A", "B"))
if cfg.get("save"):
    last = {k: getattr(th, k)[-1] for k in ("V", "D", "F", "A", "B", "K1", "Theta1")}
    if "tuples" in kw:
        last["tuples"] = kw["tuples"]
    np.savez(cfg["save"], **last)
print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss, "entries": int(entries)}))
"""


def run(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    p = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env, timeout=7200
    )
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="inputs of the dense and last runs (default 24)")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--train", type=int, default=16, help="training inputs of the tuples run (default 16)")
    ap.add_argument("--test", type=int, default=4, help="test inputs of the tuples run (default 4)")
    ap.add_argument("--configs", nargs="+", default=["dense", "last", "tuples"], choices=["dense", "last", "tuples"])
    ap.add_argument("--compare", action="store_true", help="check every run's entries against the dense run")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    rows, results, saved = [], [], {}
    for kind in args.configs:
        n = args.train + args.test if kind == "tuples" else args.n
        cfg = {"kind": kind, "n": n, "depth": args.depth, "train": args.train}
        if args.compare:
            cfg["save"] = str(tmp / f"bench_theory_scale_{kind}_{os.getpid()}.npz")
        log(f"{kind}: N={n} depth={args.depth} ...")
        r = run(cfg)
        results.append({**cfg, **r})
        if "error" in r:
            rows.append([kind, str(n), str(args.depth), "-", "-", "-", "-", r["error"][:60]])
            continue
        if args.compare:
            saved[kind] = cfg["save"]
        rows.append(
            [
                kind,
                str(n),
                str(args.depth),
                f"{r['wall']:.2f}",
                f"{r['cpu']:.2f}",
                f"{r['rss'] / 1e9:.2f}",
                f"{r['entries']:.3g}",
                "",
            ]
        )
    if args.compare and "dense" in saved:
        dense = np.load(saved["dense"])
        for kind, path in saved.items():
            other = np.load(path)
            if kind == "tuples":
                if args.train + args.test != args.n:
                    continue
                t = other["tuples"]
                diff = max(
                    float(np.max(np.abs(other[k] - dense[k][t[:, 0], t[:, 1], t[:, 2], t[:, 3]]))) for k in "VDFAB"
                )
            else:
                diff = max(float(np.max(np.abs(other[k] - dense[k]))) for k in other.files)
            log(f"{kind}: largest difference to the dense run {diff:.3g}")
            for res in results:
                if res["kind"] == kind:
                    res["max_diff"] = diff
        for path in saved.values():
            Path(path).unlink(missing_ok=True)
    print(table(["config", "N", "depth", "wall s", "cpu s", "peak RSS GB", "4-pt entries", "note"], rows))
    if args.json:
        write_json(args.json, {"machine": machine(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
