"""Benchmark: the numpy MLP sampler's per-network NTK statistics against the width (issue 17).

One network (batch of one) of a GELU MLP at criticality, ``--depth`` layers (default 10), ``--inputs``
inputs (default 32), NTK on, the conditional estimator: the time of the per-batch kernel
(``rgflow.ensembles._estimators.batch_sums``: forward pass, per-network NTK, the sums of Ĝ, Ĥ, their
products, F and B at every layer) and the peak resident memory of the process, for each width and
for each rgflow checkout given with ``--versions`` (``label=path/to/python``; default: the rgflow
on sys.path).  Every (version, width) runs in its own subprocess, so the peak memory is that
run's; one that would need more than ``--mem-limit`` GB by the dense estimate ``8 N² n² · 8 bytes``
(the pre-issue-17 implementation) is skipped with that estimate, and a run over ``--timeout`` s
is stopped.  ``--depth-large D --large W`` runs widths >= W at depth D instead (recorded in the table).

``--sweep NETWORKS`` (issue 14 part 6) times whole ``rgflow.sample(networks=NETWORKS, groups=2)``
calls instead for every width, ``--ntk off on`` and ``--backends numpy jax`` (JAX: the second of
two calls, the first traces and compiles), with the rgflow on sys.path: networks/s and peak RSS
(the last layer's V is read, which unpacks that one tensor).

Usage::

    python benches/bench_ntk_sampler.py --widths 64 128 256 512 1024 \\
        --versions before=/work/main/python after=python [--json out.json]
    python benches/bench_ntk_sampler.py --sweep 32 --widths 64 128 256 512 1024 --ntk off --backends numpy jax
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, log, machine, markdown, write_json  # noqa: E402

WHOLE = r"""
import json, resource, sys, time
import numpy as np
import rgflow
width, depth, N, networks, limit = (int(v) for v in sys.argv[1:6])
resource.setrlimit(resource.RLIMIT_AS, (limit * 2**30, limit * 2**30))  # a MemoryError, not the OOM killer
x = np.random.default_rng(0).standard_normal((N, 4))
net = rgflow.MLP("gelu", depth=depth, width=width, C_b=0.17292239, C_W=1.98305826)
t = time.perf_counter()
e = rgflow.sample(net, x, networks=networks, groups=2, ntk=True, theory=False, progress=False)
wall = time.perf_counter() - t
assert e.B.shape == (depth, N, N, N, N) and np.all(np.isfinite(e.stderr.B))
print(json.dumps({"seconds": wall / networks, "wall": wall, "nps": e.networks_per_second,
                  "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rgflow": rgflow.__file__}))
"""

SWEEP = r"""
import json, os, resource, sys, time
import numpy as np
import rgflow
width, depth, N, networks, groups = (int(v) for v in sys.argv[1:6])
ntk, backend = sys.argv[6] == "on", sys.argv[7]
x = np.random.default_rng(0).standard_normal((N, 4))
net = rgflow.MLP("gelu", depth=depth, width=width, C_b=0.17292239, C_W=1.98305826)
kw = dict(networks=networks, groups=groups, ntk=ntk, theory=False, progress=False, backend=backend)
first = None
if backend == "jax":  # the first call traces and compiles; the second is the steady state
    t = time.perf_counter()
    rgflow.sample(net, x, **kw)
    first = time.perf_counter() - t
t = time.perf_counter()
e = rgflow.sample(net, x, **kw)
wall = time.perf_counter() - t
assert np.all(np.isfinite(e.stderr.V[-1]))
print(json.dumps({"seconds": wall / networks, "wall": wall, "first": first, "batch": e.batch,
                  "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "load": os.getloadavg()[0], "rgflow": rgflow.__file__}))
"""

CHILD = r"""
import inspect, json, resource, sys, time
import numpy as np
import rgflow
from rgflow.ensembles import _estimators, _mlp
width, depth, N, reps = (int(v) for v in sys.argv[1:5])
# the packed four-point sums of rgflow.sample where this checkout has them
kw = {"packed": True} if "packed" in inspect.signature(_estimators.batch_sums).parameters else {}
x = np.random.default_rng(0).standard_normal((N, 4))
net = rgflow.MLP("gelu", depth=depth, width=width, C_b=0.17292239, C_W=1.98305826)
plan = _mlp._make_plan(net, x, True, False, np.float64)
act = _mlp._numpy_activation(net.activation, np.float64)
zero = (np.zeros((plan.L, N, N)), np.zeros((plan.L, N, N)))
small = _mlp._make_plan(rgflow.MLP("gelu", depth=4, width=8), x[:4], True, False, np.float64)
Ws, bs = _mlp._draw_numpy(np.random.default_rng(0), 1, small.widths, small.hp, small.layers_drawn, np.float64)
_estimators.batch_sums(np, act, small.x, Ws, bs, small.hp, small.consts, (np.zeros((4, 4, 4)),) * 2,
                       B=1, widths=small.widths, ntk=True, direct=False)  # warm-up: one-off first-call costs
times = []
for r in range(reps):
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(r,)))
    Ws, bs = _mlp._draw_numpy(rng, 1, plan.widths, plan.hp, plan.layers_drawn, np.float64)
    t = time.perf_counter()
    s = _estimators.batch_sums(np, act, plan.x, Ws, bs, plan.hp, plan.consts, zero, B=1,
                               widths=plan.widths, ntk=True, direct=False, **kw)
    times.append(time.perf_counter() - t)
    del s, Ws, bs
print(json.dumps({"seconds": min(times), "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "rgflow": rgflow.__file__}))
"""


def run_one(
    path: str, width: int, depth: int, N: int, reps: int, timeout: float, threads: int | None, whole: int, limit: float
) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    args = (
        [WHOLE, str(width), str(depth), str(N), str(whole), str(int(limit))]
        if whole
        else [CHILD, str(width), str(depth), str(N), str(reps)]
    )
    try:
        p = subprocess.run(
            [sys.executable, "-c", *args],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    if p.returncode != 0:
        return {"skipped": f"failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def sweep(args: argparse.Namespace) -> int:
    """networks/s and peak RSS of whole sample() calls against the width (NTK off/on, numpy/JAX)."""
    results = []
    for ntk in args.ntk:
        for backend in args.backends:
            for width in args.widths:
                log(f"ntk {ntk}, {backend}: width {width}")
                argv = [SWEEP, str(width), str(args.depth), str(args.inputs), str(args.sweep), "2", ntk, backend]
                env = dict(os.environ)
                if args.blas_threads:
                    env["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
                try:
                    p = subprocess.run(
                        [sys.executable, "-c", *argv], capture_output=True, text=True, timeout=args.timeout, env=env
                    )
                    r = (
                        json.loads(p.stdout.strip().splitlines()[-1])
                        if p.returncode == 0
                        else {"skipped": f"failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:]}"}
                    )
                except subprocess.TimeoutExpired:
                    r = {"skipped": f"over {args.timeout:.0f} s"}
                r.update(width=width, ntk=ntk, backend=backend)
                results.append(r)
                log(f"  {r}")
    headers = ["NTK", "backend", "width", "networks/s", "s/network", "JAX first call s", "batch", "peak RSS GB", "load"]
    rows = []
    for r in results:
        if "seconds" not in r:
            rows.append([r["ntk"], r["backend"], r["width"], r["skipped"], "", "", "", "", ""])
            continue
        rows.append([r["ntk"], r["backend"], r["width"], fmt(1 / r["seconds"], ".3g"), fmt(r["seconds"], ".3g"),
                     fmt(r["first"], ".3g") if r["first"] else "", r["batch"], fmt(r["maxrss_gb"], ".3g"),
                     fmt(r["load"], ".1f")])  # fmt: skip
    print(f"whole rgflow.sample(networks={args.sweep}, groups=2) calls, GELU at criticality, depth {args.depth}, "
          f"{args.inputs} inputs, conditional estimator ({os.cpu_count()} CPUs)")  # fmt: skip
    print(markdown(headers, rows))
    write_json(
        args.json,
        {"benchmark": "ntk_sampler_sweep", "machine": machine(), "results": results, "headers": headers, "rows": rows},
    )
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--reps", type=int, default=1, help="networks timed per run (the fastest is kept)")
    ap.add_argument("--versions", nargs="+", default=None, help="label=path (a checkout's python/ directory)")
    ap.add_argument("--mem-limit", type=float, default=6.0, help="skip runs whose dense estimate exceeds this (GB)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--large", type=int, default=10**9, help="widths >= this run at --depth-large")
    ap.add_argument("--depth-large", type=int, default=None)
    ap.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS_NUM_THREADS of the runs")
    ap.add_argument(
        "--whole", type=int, default=0, help="time whole rgflow.sample(networks=WHOLE, groups=2) calls instead "
        "(pilot, estimates, unpacking included; s/network = wall time / WHOLE)",
    )  # fmt: skip
    ap.add_argument("--sweep", type=int, default=0, help="networks/s of whole sample(networks=SWEEP) calls")
    ap.add_argument("--ntk", nargs="+", default=["off", "on"], choices=["off", "on"], help="--sweep: NTK off/on")
    ap.add_argument("--backends", nargs="+", default=["numpy"], choices=["numpy", "jax"], help="--sweep backends")
    ap.add_argument("--as-limit", type=float, default=14.0, help="address-space limit (GB) of a --whole run")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.sweep:
        return sweep(args)
    versions = [
        v.split("=", 1) for v in (args.versions or ["current=" + str(Path(__file__).resolve().parents[1] / "python")])
    ]
    N = args.inputs
    results = []
    for width in args.widths:
        depth = args.depth_large if (args.depth_large and width >= args.large) else args.depth
        for label, path in versions:
            dense_gb = 8 * N * N * width * width * 8 / 2**30
            if label == versions[0][0] and len(versions) > 1 and dense_gb > args.mem_limit:
                r = {"skipped": f"dense estimate {dense_gb:.0f} GB > {args.mem_limit:g} GB"}
            else:
                log(f"{label}: width {width}, depth {depth}")
                r = run_one(
                    path, width, depth, N, args.reps, args.timeout, args.blas_threads, args.whole, args.as_limit
                )
            r.update(version=label, width=width, depth=depth)
            results.append(r)
            log(f"  {r}")
    labels = [lab for lab, _ in versions]
    headers = ["width", "depth", *(f"{lab} s/network" for lab in labels), *(f"{lab} networks/s" for lab in labels)]
    headers += [f"{lab} peak RSS GB" for lab in labels]
    if len(versions) == 2:
        headers.append("speed-up")
    rows = []
    for width in args.widths:
        rs = [next(r for r in results if r["width"] == width and r["version"] == lab) for lab, _ in versions]
        row = [width, rs[0]["depth"]]
        row += [fmt(r.get("seconds"), ".3g") if "seconds" in r else r["skipped"] for r in rs]
        row += [fmt(1 / r["seconds"], ".3g") if "seconds" in r else "" for r in rs]
        row += [fmt(r.get("maxrss_gb"), ".3g") if "seconds" in r else "" for r in rs]
        if len(versions) == 2:
            ok = all("seconds" in r for r in rs)
            row.append(fmt(rs[0]["seconds"] / rs[1]["seconds"], ".3g") if ok else "")
        rows.append(row)
    what = (
        f"whole rgflow.sample(networks={args.whole}, groups=2) calls"
        if args.whole
        else "per network (one network per batch)"
    )
    print(f"NTK sampler {what} (numpy), GELU, {N} inputs, conditional estimator "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(markdown(headers, rows))
    write_json(
        args.json,
        {"benchmark": "ntk_sampler", "machine": machine(), "results": results, "headers": headers, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
