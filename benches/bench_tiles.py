"""Distributed tiles with Dask (issue 14 part 4): 1 → 2 workers, and a measured cost model.

Part A (scaling): the same tuple set (all N⁴ ordered tuples of N inputs, gelu at criticality,
depth L) through ``rgflow.theory(net, x, tuples=..., client=...)`` on a ``LocalCluster`` of 1 and
of 2 single-threaded worker processes (``RAYON_NUM_THREADS=1`` in each: one core per worker), next
to the single-process ``rgflow.theory`` (all cores); results checked equal.

Part B (cost model, one single-threaded worker): seconds per tuple-layer per core ``b`` from one
tile of M₁ and of M₂ random tuples (t = a₀ + b·M·L); the per-tile overhead ``a`` from the same
tuples in 1 and in k tiles; the gather bandwidth from fetching a 64 MB result.  Projection of
N = 256, depth 10 onto P = 100 cores: t ≈ b·M·L/P + n_tiles·a/P (+ gathered bytes / bandwidth).

While ``rgflow.theory`` has no ``tuples=`` (the engine of issue 14 part 3, branch ``tuples``),
each tile runs the temporary dense fallback (the dense theory of all N inputs, indexed), whose
cost does not grow with the tile's tuples; the bench says so and takes ``b`` from the dense
engine instead (its time on one core over N⁴·L).

Usage: ``python benches/bench_tiles.py [--n 16] [--depth 10] [--json out.json]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, write_json  # noqa: E402

GELU = {"C_b": 0.17292239, "C_W": 1.98305826}


def has_tuples_engine() -> bool:
    net = rgflow.MLP("gelu", depth=2, width=8, **GELU)
    try:
        rgflow.theory(net, np.eye(2), tuples=np.zeros((1, 4), dtype=np.int64))
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            return False
        raise
    return True


def cluster(workers: int):
    from distributed import Client, LocalCluster

    lc = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"RAYON_NUM_THREADS": "1"},  # one core per worker: the core's rayon pool is one thread
    )
    c = Client(lc)
    c.run(lambda: __import__("rgflow") and None)  # workers import rgflow before the clock starts
    return lc, c


def timed_run(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def worst(a: rgflow.Theory, b: rgflow.Theory) -> float:
    return max(float(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in ("V", "D", "F", "A", "B"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="inputs N of the scaling run (all N⁴ tuples)")
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--tiles", type=int, default=8, help="tiles of the scaling run (default 8)")
    ap.add_argument("--cost-n", type=int, default=16, help="inputs the cost-model tuples are drawn from")
    ap.add_argument("--cost-m", type=int, nargs=2, default=[2048, 8192], help="tuples M₁ M₂ of the cost fit")
    ap.add_argument("--split", type=int, default=8, help="k tiles for the per-tile overhead")
    ap.add_argument("--project", type=int, nargs=3, default=[256, 10, 100], help="N, depth, cores projected")
    ap.add_argument("--bandwidth", type=float, default=1e9, help="assumed cluster gather bandwidth (B/s)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    tuples_engine = has_tuples_engine()
    engine = "tuples engine" if tuples_engine else "dense fallback (no tuples= yet)"
    L, N = args.depth, args.n
    net = rgflow.MLP("gelu", depth=L, width=64, **GELU)
    x = np.random.default_rng(0).standard_normal((N, 4))
    log(f"bench_tiles: gelu N={N} depth {L}, {N**4} tuples, tile engine: {engine}, {os.cpu_count()} cores")

    # ---- A: scaling
    dense, t_dense = timed_run(rgflow.theory, net, x)
    rows = [["single process rgflow.theory (dense, all cores)", "—", fmt(t_dense), "—", "—"]]
    res: dict = {"engine": engine, "N": N, "depth": L, "tuples": N**4, "single_process_s": t_dense, "workers": {}}
    tile = math.ceil(N**4 / args.tiles)
    base = None
    for w in (1, 2):
        lc, c = cluster(w)
        try:
            th, t = timed_run(rgflow.theory, net, x, client=c, tile_size=tile, progress=False)
        finally:
            c.close()
            lc.close()
        err = worst(th, dense)
        base = base or t
        res["workers"][w] = {"s": t, "speedup": base / t, "max_abs_diff": err}
        rows.append([f"LocalCluster, {w} worker(s) × 1 thread", str(args.tiles), fmt(t), fmt(base / t), fmt(err)])
    log(table(["run", "tiles", "wall s", "speedup vs 1 worker", "max |Δ| vs single"], rows))

    # ---- B: cost model on one single-threaded worker
    lc, c = cluster(1)
    try:
        cn = args.cost_n
        xc = np.random.default_rng(1).standard_normal((cn, 4))
        rng = np.random.default_rng(2)
        m1, m2 = args.cost_m
        t1 = rng.integers(0, cn, size=(m1, 4))
        t2 = rng.integers(0, cn, size=(m2, 4))
        rgflow.theory(net, xc, tuples=t1[:8], client=c, tile_size=8, progress=False)  # warm-up (rule caches)
        _, s1 = timed_run(rgflow.theory, net, xc, tuples=t1, client=c, tile_size=m1, progress=False)
        _, s2 = timed_run(rgflow.theory, net, xc, tuples=t2, client=c, tile_size=m2, progress=False)
        _, sk = timed_run(rgflow.theory, net, xc, tuples=t1, client=c, tile_size=m1 // args.split, progress=False)
        b_fit = (s2 - s1) / ((m2 - m1) * L)
        a_tile = (sk - s1) / (args.split - 1)

        def one_core_dense() -> float:
            t0 = time.perf_counter()
            rgflow.theory(net, xc)
            return time.perf_counter() - t0

        t_dense1 = next(iter(c.run(one_core_dense).values()))
        futs = [c.submit(int, i, pure=False) for i in range(400)]  # warm the task path
        c.gather(futs)
        t0 = time.perf_counter()
        c.gather([c.submit(abs, -i, pure=False) for i in range(400)])
        a_dask = (time.perf_counter() - t0) / 400
        b_dense = t_dense1 / (cn**4 * L)
        payload = 64 * 2**20
        fut = c.submit(np.ones, payload // 8, pure=False)
        fut.result()  # computed; fetch again for the transfer alone
        fut2 = c.submit(np.ones, payload // 8, pure=False)
        from distributed import wait

        wait(fut2)
        _, tg = timed_run(fut2.result)
        bw = payload / tg
    finally:
        c.close()
        lc.close()
    b = b_fit if tuples_engine else b_dense
    a = a_tile if tuples_engine else a_dask  # the fallback's tiles each cost a whole dense theory
    res["cost"] = {
        "cost_n": cn,
        "m1": m1,
        "m2": m2,
        "s1": s1,
        "s2": s2,
        "s_split": sk,
        "b_fit_s_per_tuple_layer": b_fit,
        "b_dense_s_per_tuple_layer": b_dense,
        "dense_one_core_s": t_dense1,
        "per_tile_overhead_split_s": a_tile,
        "per_task_overhead_dask_s": a_dask,
        "a_used": a,
        "loopback_gather_B_per_s": bw,
        "b_used": b,
    }
    log(
        table(
            ["quantity", "value"],
            [
                [f"one tile of M₁={m1} random tuples (N={cn}, depth {L})", f"{fmt(s1)} s"],
                [f"one tile of M₂={m2}", f"{fmt(s2)} s"],
                [f"M₁ tuples in {args.split} tiles", f"{fmt(sk)} s"],
                ["b from the fit (s per tuple-layer per core)", fmt(b_fit)],
                [f"b of the dense engine, one core (N={cn}: {fmt(t_dense1)} s / (N⁴·L))", fmt(b_dense)],
                [f"per-tile overhead from the split into {args.split} (s)", fmt(a_tile)],
                ["dask overhead per task, trivial tasks (s)", fmt(a_dask)],
                ["gather bandwidth, loopback (MB/s)", fmt(bw / 1e6)],
            ],
        )
    )

    # ---- projection
    pn, pl, pp = args.project
    rows = []
    proj = {}
    for label, m in (("all N⁴ ordered tuples", float(pn) ** 4), ("one per V symmetry class ≈ N⁴/8", pn**4 / 8.0)):
        n_tiles = math.ceil(m / 65_536)
        compute = b * m * pl / pp
        over = n_tiles * max(a, 0.0) / pp
        gather_v_last = 8.0 * m / args.bandwidth  # layers=[-1], tensors=("V",)
        gather_all = 8.0 * m * pl * 5
        proj[label] = {
            "tuples": m,
            "tiles": n_tiles,
            "compute_s": compute,
            "overhead_s": over,
            "gather_V_last_layer_s": gather_v_last,
            "gather_all_bytes": gather_all,
        }
        rows.append(
            [
                label,
                f"{m:.3g}",
                str(n_tiles),
                fmt(compute / 3600),
                fmt(over),
                fmt(gather_v_last),
                f"{gather_all / 1e12:.2f} TB",
            ]
        )
    res["projection"] = {"N": pn, "depth": pl, "cores": pp, "b": b, "bandwidth": args.bandwidth, "rows": proj}
    log(
        f"projection: N={pn}, depth {pl}, {pp} cores, b={fmt(b)} s/tuple-layer, a={fmt(a)} s/tile, 65 536 tuples/tile, "
        f"gather at {fmt(args.bandwidth / 1e9)} GB/s"
    )
    log(table(["tuples", "M", "tiles", "compute h", "tile overhead s", "gather V(L) s", "all 5 × L layers"], rows))
    res["machine"] = machine()
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
