"""Benchmark 3: sampling throughput of rgflow.ensemble.sample, numpy vs JAX (CPU) backends.

A GELU MLP at criticality, width 64, depth 4, 8 inputs, all tensors (K, Theta, V, D, F, A, B
with standard errors; the conditional estimator).  Each backend samples ``--networks`` networks
with the same settings twice on JAX (the first run includes tracing and XLA compilation, the
second is the steady state) and once on numpy after a small warm-up.  Reported: networks per
second (steady state), JAX's first-run time, batch
size, and the largest |numpy - jax| / stderr over all tensors (the two backends use different
random streams, so this is a statistical comparison: O(1) values are expected).

With ``--dntk`` every backend runs twice back to back, without and with ``dntk=True`` (the
dNTK family P, Q, R, S, T, U on top of all the other tensors), and the table has a ``dntk`` column.

Usage: ``python benches/bench_ensemble.py [--networks 96] [--dntk] [--json out.json]``
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow import ensembles as ensemble  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=96)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--backends", nargs="+", default=["numpy", "jax"], choices=["numpy", "jax"])
    ap.add_argument("--dntk", action="store_true", help="also time dntk=True (P..U) after each plain run")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    x = np.random.default_rng(0).standard_normal((args.inputs, 4))
    net = rgflow.MLP("gelu", depth=args.depth, width=args.width, C_b=0.17292239, C_W=1.98305826)
    th = rgflow.theory(net, x, order=0)
    results, ens = [], {}
    runs = [(be, d) for be in args.backends for d in ((False, True) if args.dntk else (False,))]
    for be, dntk in runs:
        if be == "jax":
            try:
                import jax

                jax_version = jax.__version__
            except ImportError:
                log("jax is not installed: skipping the jax backend")
                results.append({"backend": "jax", "skipped": "jax not installed"})
                continue
        kw = dict(networks=args.networks, groups=args.groups, progress=False, theory=th, backend=be, dntk=dntk)
        if be == "jax":  # the first run traces and compiles; the second is the steady state
            log(f"{be}: first run ({args.networks} networks)")
            _, t_first = timed(ensemble.sample, net, x, **kw)
        else:  # nothing to compile: a small warm-up, then one timed run
            ensemble.sample(net, x, **{**kw, "networks": 2 * args.groups})
            t_first = None
        log(f"{be}: timed run ({args.networks} networks)")
        e, t = timed(ensemble.sample, net, x, **kw)
        if not dntk:
            ens[be] = e
        results.append(
            {
                "backend": be,
                "dntk": dntk,
                "skipped": None,
                "networks": args.networks,
                "batch": e.batch,
                "first_run_s": t_first,
                "run_s": t,
                "networks_per_second": args.networks / t,
                "version": np.__version__ if be == "numpy" else jax_version,
            }
        )
    zmax = None
    if len(ens) == 2:
        a, b = ens["numpy"], ens["jax"]
        zs = []
        for name in ("K", "Theta", "V", "D", "F", "A", "B"):
            ea, eb = getattr(a, name), getattr(b, name)
            sa, sb = getattr(a.stderr, name), getattr(b.stderr, name)
            s = np.sqrt(sa**2 + sb**2)
            m = s > 0
            if np.any(m):
                zs.append(float(np.max(np.abs(ea - eb)[m] / s[m])))
        zmax = max(zs) if zs else None
    headers = ["backend", "networks", "batch", "first run s", "steady s", "networks/s", "version"]
    if args.dntk:
        headers.insert(1, "dntk")
    rows = []
    for r in results:
        if r.get("skipped"):
            row = [r["backend"], "skipped: " + r["skipped"], "", "", "", "", ""]
        else:
            row = [r["backend"], r["networks"], r["batch"], fmt(r["first_run_s"]), fmt(r["run_s"]),
                   fmt(r["networks_per_second"], ".4g"), r["version"]]  # fmt: skip
        if args.dntk:
            row.insert(1, "yes" if r.get("dntk") else "no")
        rows.append(row)
    print(
        f"Ensemble sampling, GELU width {args.width}, depth {args.depth}, {args.inputs} inputs, all tensors "
        f"({os.cpu_count()} CPUs)"
    )
    print(table(headers, rows))
    if zmax is not None:
        print(f"max |numpy - jax| / stderr over all tensor entries: {zmax:.2f}")
    write_json(args.json, {"benchmark": "ensemble", "machine": machine(), "results": results,
                           "max_z_numpy_vs_jax": zmax, "headers": headers, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
