"""Before/after comparison of two rgflow trees (e.g. a refactor), workload by workload, in one run.

Each workload runs in a fresh child process with ``PYTHONPATH`` set to one tree's ``python/``
folder (each tree with its own built extension ``rgflow/_core.abi3.so``); the two trees alternate,
each workload ``--repeats`` times, and the minimum wall time of the timed operation (after import
and warm-up) and the child's peak resident memory are reported.  The workloads use only the API
that both trees share (with fallbacks for names that moved).

Usage::

    git worktree add /tmp/rgflow-before <commit>      # then build or copy its _core.abi3.so
    python benches/bench_before_after.py --before /tmp/rgflow-before --after . [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PRELUDE = """
import resource, time, json, sys, warnings
import numpy as np
import rgflow
warnings.simplefilter("ignore")
def _get(*names):
    for n in names:
        obj = rgflow
        try:
            for part in n.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AttributeError(names)
rng = np.random.default_rng(0)
"""

WORKLOADS: dict[str, tuple[str, str]] = {
    "theory relu N=32 L=10 (all tensors)": (
        "net = rgflow.MLP('relu', depth=10, width=64, C_W=2.0); x = np.random.default_rng(32).normal(size=(32, 4))",
        "rgflow.theory(net, x)",
    ),
    "theory gelu N=32 L=10 (all tensors)": (
        "net = rgflow.MLP('gelu', depth=10, width=64, C_b=0.17292239, C_W=1.98305826)\n"
        "x = np.random.default_rng(32).normal(size=(32, 4))",
        "rgflow.theory(net, x)",
    ),
    "theory relu N=12 L=10, rank-deficient layer 1 (n0=3, C_b=0)": (
        "net = rgflow.MLP('relu', depth=10, width=64, C_W=2.0); x = np.random.default_rng(12).normal(size=(12, 3))",
        "rgflow.theory(net, x)",
    ),
    "theory tanh N=6 L=4 (quadrature)": (
        "net = rgflow.MLP('tanh', depth=4, width=64, C_W=1.0); x = rng.normal(size=(6, 3))",
        "rgflow.theory(net, x)",
    ),
    "expect gelu 2-D <σσ> 10k blocks (closed form)": (
        "A = rng.normal(size=(10000, 2, 2)); K = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(2)",
        "rgflow.expect(K, [(0, 0), (1, 0)], 'gelu')",
    ),
    "expect tanh 2-D <σ'σ'> 2k blocks (quadrature)": (
        "A = rng.normal(size=(2000, 2, 2)); K = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(2)",
        "rgflow.expect(K, [(0, 1), (1, 1)], 'tanh', order=32)",
    ),
    "critical('gelu') + critical('swish')": (
        "",
        "rgflow.critical('gelu'); rgflow.critical('swish')",
    ),
    "sample MLP numpy gelu n=64 L=4 N=8, 192 nets": (
        "net = rgflow.MLP('gelu', depth=4, width=64, C_b=0.17292239, C_W=1.98305826); x = rng.normal(size=(8, 3))\n"
        "rgflow.sample(net, x, networks=16, groups=4, seed=1, progress=False)",
        "rgflow.sample(net, x, networks=192, groups=8, seed=0, progress=False)",
    ),
    "sample MLP jax gelu n=64 L=4 N=8, 192 nets (steady)": (
        "net = rgflow.MLP('gelu', depth=4, width=64, C_b=0.17292239, C_W=1.98305826); x = rng.normal(size=(8, 3))\n"
        "rgflow.sample(net, x, networks=192, groups=8, seed=1, progress=False, backend='jax')",
        "rgflow.sample(net, x, networks=192, groups=8, seed=0, progress=False, backend='jax')",
    ),
    "preresnet theory ODE, paper setup (L=800)": (
        "net = rgflow.PreResNet('tanh', depth=800, width=64, eps=0.05, C_W=2.0); k = 2 * (0.7 * np.eye(4) + 0.3)\n"
        "pt = _get('recursions.preresnet_theory', 'preresnet_theory')",
        "pt(net, kernel=k, every=100)",
    ),
    "sample preresnet block numpy L=80 n=64, 64 nets": (
        "net = rgflow.PreResNet('tanh', depth=80, width=64, eps=0.05, C_W=2.0); k = 2 * (0.7 * np.eye(4) + 0.3)\n"
        "sp = _get('ensembles.sample_preresnet', 'sample_preresnet')",
        "sp(net, kernel=k, networks=64, groups=4, every=10, seed=0)",
    ),
    "sample resmlp numpy relu L=10 n=64 N=4, 256 nets": (
        "net = rgflow.ResMLP('relu', 10, 64, C_W=1.0, gamma=0.7071); x = rng.normal(size=(4, 3))\n"
        "sr = _get('ensembles.sample_resmlp', 'sample_resmlp')",
        "sr(net, x, networks=256, groups=4, seed=0)",
    ),
}


def child_code(setup: str, op: str) -> str:
    return (
        PRELUDE
        + setup
        + "\n"
        + textwrap.dedent(f"""
            t0 = time.perf_counter()
            {op}
            dt = time.perf_counter() - t0
            print(json.dumps({{"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
        """)
    )


def run(tree: Path, setup: str, op: str, timeout: float) -> dict[str, float] | str:
    env = {**os.environ, "PYTHONPATH": str(tree / "python")}
    try:
        p = subprocess.run(
            [sys.executable, "-c", child_code(setup, op)], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if p.returncode != 0:
        return "error: " + (p.stderr.strip().splitlines() or ["?"])[-1][:120]
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings of workload names")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print("| workload | before s | after s | after/before | before peak MB | after peak MB |")
    print("|---|---|---|---|---|---|")
    for name, (setup, op) in WORKLOADS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        res: dict[str, list[dict[str, float] | str]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side in ("before", "after"):
                res[side].append(run(getattr(args, side), setup, op, args.timeout))
        best = {}
        for side, rs in res.items():
            ok = [r for r in rs if isinstance(r, dict)]
            best[side] = (
                {"seconds": min(r["seconds"] for r in ok), "rss_mb": max(r["rss_mb"] for r in ok)} if ok else rs[0]
            )
        b, a = best["before"], best["after"]
        if isinstance(a, dict) and isinstance(b, dict):
            line = (
                f"| {name} | {b['seconds']:.3g} | {a['seconds']:.3g} | {a['seconds'] / b['seconds']:.2f} | "
                f"{b['rss_mb']:.0f} | {a['rss_mb']:.0f} |"
            )
        else:
            line = f"| {name} | {b} | {a} | — | — | — |"
        print(line, flush=True)
        rows.append({"workload": name, "before": b, "after": a})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
