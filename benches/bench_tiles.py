"""Distributed tiles with Dask (issue 14 part 4): 1 → 2 workers, and a measured cost model.

Part A (scaling): the same tuple set (all N⁴ ordered tuples of N inputs, gelu at criticality,
depth L) through ``rgflow.theory(net, x, tuples=..., client=...)`` on a ``LocalCluster`` of 1 and
of 2 single-threaded worker processes (``RAYON_NUM_THREADS=1`` in each: one core per worker), next
to the single-process ``rgflow.theory`` (all cores); results checked equal.

Part B (cost model, one single-threaded worker, CPU seconds of the worker process, so that other
jobs on a shared machine do not count): seconds per tuple-layer per core, ``b_all`` for
all N⁴ tuples (whole-multiset tiles; the fit between two N) and ``b_rand`` for random tuples of
many inputs (hardly two share a sample; the fit between two M); the cost of a tile boundary
(the same tuples in k tiles vs one), Dask's round trip per task and the gather bandwidth of a 64 MB
result.  Projection onto P cores: t ≈ b·M·L/P + n_tiles·a/P (+ gathered bytes / bandwidth).

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
        dashboard_address=":0",
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
    ap.add_argument("--all-n", type=int, nargs=2, default=[8, 16], help="N₁ N₂ of the all-tuples fit")
    ap.add_argument("--cost-n", type=int, default=64, help="inputs the random cost-model tuples are drawn from")
    ap.add_argument("--cost-m", type=int, nargs=2, default=[256, 1024], help="random tuples M₁ M₂ of the fit")
    ap.add_argument("--split", type=int, default=4, help="k tiles (all-tuples fit, tile-boundary cost)")
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
    rows = [["single process rgflow.theory (dense, all cores)", "—", fmt(t_dense), "—", "—", "—", "—"]]
    res: dict = {"engine": engine, "N": N, "depth": L, "tuples": N**4, "single_process_s": t_dense, "workers": {}}
    tile = math.ceil(N**4 / args.tiles)
    base = None
    for w in (1, 2):
        lc, c = cluster(w)
        try:
            cpu0 = c.run(time.process_time)
            th, t = timed_run(rgflow.theory, net, x, client=c, tile_size=tile, progress=False)
            cpu1 = c.run(time.process_time)
        finally:
            c.close()
            lc.close()
        cpu = [cpu1[k] - cpu0[k] for k in cpu0]  # CPU seconds each worker spent (load-independent)
        err = worst(th, dense)
        base = base or t
        res["workers"][w] = {"s": t, "speedup": base / t, "max_abs_diff": err, "worker_cpu_s": cpu}
        rows.append(
            [
                f"LocalCluster, {w} worker(s) × 1 thread",
                str(args.tiles),
                fmt(t),
                fmt(base / t),
                " + ".join(fmt(v) for v in cpu),
                fmt(sum(cpu) / max(cpu)),
                fmt(err),
            ]
        )
    log(
        table(
            ["run", "tiles", "wall s", "speedup", "worker CPU s", "CPU total / busiest", "max |Δ| vs single"],
            rows,
        )
    )
    log(f"load average during the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # ---- B: cost model on one single-threaded worker
    lc, c = cluster(1)
    try:

        def run(xx, tuples=None, tile_size=None) -> float:
            """CPU seconds the worker spent (wall time on a loaded machine counts other jobs too)."""
            cpu0 = c.run(time.process_time)
            rgflow.theory(net, xx, tuples=tuples, client=c, tile_size=tile_size, progress=False)
            cpu1 = c.run(time.process_time)
            return sum(cpu1[k] - cpu0[k] for k in cpu0)

        # (i) all N⁴ tuples, whole-multiset tiles: b_all = Δt / Δ(N⁴·L) between two N
        n1, n2 = args.all_n
        xa1 = np.random.default_rng(1).standard_normal((n1, 4))
        xa2 = np.random.default_rng(1).standard_normal((n2, 4))
        run(xa1, tile_size=n1**4)  # warm-up (rule caches, imports)
        ta1 = run(xa1, tile_size=math.ceil(n1**4 / args.split))
        ta2 = run(xa2, tile_size=math.ceil(n2**4 / args.split))
        b_all = (ta2 - ta1) / ((n2**4 - n1**4) * L)
        # (ii) random tuples of many inputs (hardly two share a sample): b_rand = Δt / (ΔM·L)
        cn = args.cost_n
        xc = np.random.default_rng(1).standard_normal((cn, 4))
        rng = np.random.default_rng(2)
        m1, m2 = args.cost_m
        t1 = rng.integers(0, cn, size=(m1, 4))
        t2 = rng.integers(0, cn, size=(m2, 4))
        s1 = run(xc, t1, m1)
        s2 = run(xc, t2, m2)
        sk = run(xc, t2, math.ceil(m2 / args.split))
        b_rand = (s2 - s1) / ((m2 - m1) * L)
        a_tile = (sk - s2) / (args.split - 1)  # M₂ in k tiles vs one: the cost of a tile boundary

        def one_core_dense() -> float:
            t0 = time.process_time()
            rgflow.theory(net, xa2)
            return time.process_time() - t0

        t_dense1 = next(iter(c.run(one_core_dense).values()))
        b_dense = t_dense1 / (n2**4 * L)
        c.gather([c.submit(int, i, pure=False) for i in range(400)])  # warm the task path
        t0 = time.perf_counter()
        c.gather([c.submit(abs, -i, pure=False) for i in range(400)])
        a_dask = (time.perf_counter() - t0) / 400
        payload = 64 * 2**20
        from distributed import wait

        fut = c.submit(np.ones, payload // 8, pure=False)
        wait(fut)
        _, tg = timed_run(fut.result)
        bw = payload / tg
    finally:
        c.close()
        lc.close()
    if not tuples_engine:  # the fallback's tiles each cost a whole dense theory: use the dense engine
        b_all = b_rand = b_dense
        a_tile = a_dask
    a = max(a_tile, a_dask)
    res["cost"] = {
        "all_n": [n1, n2],
        "all_s": [ta1, ta2],
        "b_all_s_per_tuple_layer": b_all,
        "random_from_n": cn,
        "m": [m1, m2],
        "random_s": [s1, s2],
        "random_m2_in_k_tiles_s": sk,
        "b_random_s_per_tuple_layer": b_rand,
        "dense_one_core_s": t_dense1,
        "b_dense_s_per_tuple_layer": b_dense,
        "per_tile_overhead_s": a_tile,
        "per_task_overhead_dask_s": a_dask,
        "loopback_gather_B_per_s": bw,
    }
    k = args.split
    log(
        table(
            [f"quantity (one worker, one core, depth {L}; CPU seconds)", "value"],
            [
                [f"all N⁴ tuples in {k} tiles, N = {n1} / N = {n2} (s)", f"{fmt(ta1)} / {fmt(ta2)}"],
                ["b_all: s per tuple-layer, all tuples (fit)", fmt(b_all)],
                [f"dense engine, one core, N = {n2} (s) → s per tuple-layer", f"{fmt(t_dense1)} → {fmt(b_dense)}"],
                [f"random tuples of {cn} inputs, M = {m1} / M = {m2} in one tile (s)", f"{fmt(s1)} / {fmt(s2)}"],
                ["b_rand: s per tuple-layer, random tuples (fit)", fmt(b_rand)],
                [f"M = {m2} in {k} tiles (s) → cost of one tile boundary (s)", f"{fmt(sk)} → {fmt(a_tile)}"],
                ["Dask round trip per task, 400 trivial tasks (s)", fmt(a_dask)],
                ["gather bandwidth, loopback (MB/s)", fmt(bw / 1e6)],
            ],
        )
    )

    # ---- projection
    pn, pl, pp = args.project
    rows = []
    proj = {}
    for label, m, b in (
        ("all N⁴ ordered tuples", float(pn) ** 4, b_all),
        ("one per V symmetry class ≈ N⁴/8", pn**4 / 8.0, b_all),
        ("1e8 random tuples of N inputs", 1e8, b_rand),
    ):
        n_tiles = math.ceil(m / 65_536)
        compute = b * m * pl / pp
        over = n_tiles * max(a, 0.0) / pp
        gather_v_last = 8.0 * m / args.bandwidth  # layers=[-1], tensors=("V",)
        gather_all = 8.0 * m * pl * 5
        proj[label] = {
            "tuples": m,
            "b": b,
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
                fmt(b),
                str(n_tiles),
                fmt(compute / 3600),
                fmt(over),
                fmt(gather_v_last),
                f"{gather_all / 1e12:.3g} TB",
            ]
        )
    res["projection"] = {"N": pn, "depth": pl, "cores": pp, "a": a, "bandwidth": args.bandwidth, "rows": proj}
    log(
        f"projection: N={pn}, depth {pl}, {pp} cores, a={fmt(a)} s/tile, 65 536 tuples/tile, "
        f"gather at {fmt(args.bandwidth / 1e9)} GB/s"
    )
    log(table(["tuples", "M", "b", "tiles", "compute h", "tile overhead s", "gather V(L) s", "all 5 × L"], rows))
    res["machine"] = machine()
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
