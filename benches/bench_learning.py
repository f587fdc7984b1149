"""Benchmark: learning predictions from the layer tensors vs the ensembles that judge them.

Part 1 — prediction cost against the training-set size N_A (8…64, N_B = 4 test inputs): the
infinite-width Bayes/GP (6.57)/(6.64) and NTK (10.40)/(10.41) predictions, the O(1/n) Bayesian
mean (spec §2.3 compact form; the book's route (4.108)+(6.88) up to N_A = 32) and the O(1/n) GD mean
(∞.160)–(∞.165) with the dNTK family.  The tensors are
synthetic (the prediction cost does not depend on their values; computing V on 68 inputs is the
theory's job, timed separately for the small sizes).

Part 2 — what the O(1/n) correction costs to resolve by brute force: a GELU MLP at criticality
(depth 3, width 64, N_A = 8, N_B = 4, n_L = 1).  Pilot ensembles (exactly conditioned sampled
networks; GD-trained networks) give the time per network and the standard error per √network; the
table projects the number of networks (and the time) at which the predicted correction stands at
3σ in the test output where it is largest relative to the noise.

Part 3 (``--lean``) — the real cost as N_A grows: the theory call *and* the prediction, each in a
fresh subprocess (time and peak RSS), for the lean route (``rgflow.prediction_theory``: the output
layer only, only the families the prediction reads) against the dense route (``rgflow.theory(net, x,
dntk=True)``: every layer, every family) where its estimated memory fits ``--dense-gb``.  Bayes
order 1 (K, K1, V) and GD order 1 (K, Θ, Θ1, A, B, P…U), N_B test inputs, depth 3, at criticality.

Usage: ``python benches/bench_learning.py [--sizes 8 16 32 64] [--width 64] [--json out.json]``
(defaults run in well under 2 minutes on 2 cores);
``python benches/bench_learning.py --lean [--lean-sizes 8 16 32 64] [--acts gelu] [--test 4]``
(minutes: the GD route at N_A = 64 computes the dNTK family on 68 inputs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, markdown, timed, write_json  # noqa: E402
from rgflow import learning as lg  # noqa: E402


def _inputs(NA: int, NB: int, n0: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n0, n0)))
    xte = rng.normal(size=(NB, n0))
    xte *= np.sqrt(n0) / np.linalg.norm(xte, axis=1, keepdims=True)
    return np.vstack([Q[:NA] * np.sqrt(n0), xte])


def _synthetic(N: int, width: int) -> rgflow.Theory:
    rng = np.random.default_rng(1)
    A = rng.normal(size=(N, N + 4))
    K = A @ A.T / N + 0.5 * np.eye(N)
    V = rng.normal(size=(N, N, N, N)) * 0.01
    V = V + V.transpose(1, 0, 2, 3)
    V = V + V.transpose(0, 1, 3, 2)
    V = V + V.transpose(2, 3, 0, 1)
    two = {
        k: np.broadcast_to(M, (2, N, N))
        for k, M in (("K", K), ("K1", 0.1 * K), ("Theta", K + np.eye(N)), ("Theta1", 0.1 * K))
    }
    four = {k: np.broadcast_to(V, (2, *V.shape)) for k in ("V", "A", "B", "P", "Q", "R", "S", "T", "U")}
    net = rgflow.MLP("gelu", depth=2, width=width)
    return rgflow.Theory(net, np.arange(N, dtype=float)[:, None], {**two, **four})


def part1(sizes: list[int], width: int, repeat: int) -> list[dict]:
    rows = []
    for NA in sizes:
        N = NA + 4
        th = _synthetic(N, width)
        y = np.random.default_rng(2).normal(size=(NA, 1))
        tr, te = np.arange(NA), np.arange(NA, N)
        _, t0 = timed(rgflow.predict, th, y, tr, te, repeat=repeat)
        _, tg = timed(rgflow.predict, th, y, tr, te, kind="gd", repeat=repeat)
        _, t1 = timed(rgflow.predict, th, y, tr, te, order=1, repeat=repeat)
        tb = None
        if NA <= 32:
            _, tb = timed(rgflow.predict, th, y, tr, te, order=1, method="book", repeat=1)
        _, tg1 = timed(rgflow.predict, th, y, tr, te, kind="gd", order=1, repeat=1)
        rows.append({"N_A": NA, "bayes_0_s": t0, "gd_0_s": tg, "bayes_1_s": t1, "bayes_1_book_s": tb, "gd_1_s": tg1})
        log(f"N_A={NA}: order 0 {t0:.2e} s, order 1 {t1:.2e} s")
    return rows


def part2(width: int, pilot_train: int, pilot_condition: int) -> dict:
    NA, NB = 8, 4
    x = _inputs(NA, NB, n0=8)
    tr, te = np.arange(NA), np.arange(NA, NA + NB)
    net = rgflow.MLP.critical("gelu", depth=3, width=width, learning_rates="constant")
    th, t_theory = timed(rgflow.theory, net, x)
    y = np.random.default_rng(1).normal(size=(NA, 1)) * np.sqrt(th.K[-1][0, 0])
    p1, t_pred = timed(rgflow.predict, th, y, tr, te, order=1)
    corr = np.abs(p1.mean_correction).ravel()
    target = corr / 3  # the stderr at which a component's correction stands at 3σ; the best component counts
    cond, t_cond = timed(lg.condition, net, x, y, tr, te, networks=pilot_condition, seed=1)
    need_c = int(np.ceil(pilot_condition * np.min((cond.stderr.ravel() / target) ** 2)))
    ens, t_train = timed(rgflow.train, net, x, y, tr, te, networks=pilot_train, groups=10, theory=th, seed=1)
    need_t = int(np.ceil(pilot_train * np.min((ens.stderr_cv.ravel() / target) ** 2)))
    need_plain = int(np.ceil(pilot_train * np.min((ens.stderr.ravel() / target) ** 2)))
    return {
        "theory_s": t_theory,
        "predict_order1_s": t_pred,
        "correction": corr.tolist(),
        "condition": {
            "pilot": pilot_condition, "s": t_cond, "needed": need_c,
            "projected_s": t_cond / pilot_condition * need_c,
        },
        "train": {
            "pilot": pilot_train, "s": t_train, "steps": ens.steps, "needed_cv": need_t,
            "projected_cv_s": t_train / pilot_train * need_t, "needed_plain": need_plain,
            "projected_plain_s": t_train / pilot_train * need_plain,
        },
    }  # fmt: skip


def lean_one(route: str, kind: str, act: str, NA: int, NB: int, width: int) -> dict:
    """One measurement (run in its own process): theory call + predict, time and peak RSS."""
    import resource
    import time

    x = _inputs(NA, NB, n0=max(8, NA + NB))
    tr, te = np.arange(NA), np.arange(NA, NA + NB)
    net = rgflow.MLP.critical(act, depth=3, width=width, learning_rates="constant")
    y = np.random.default_rng(1).normal(size=(NA, 1))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    if route == "lean":
        th = rgflow.prediction_theory(net, x, tr, te, kind=kind, order=1)
    else:
        th = rgflow.theory(net, x, dntk=kind == "gd")
    t1 = time.perf_counter()
    p = rgflow.predict(th, y, tr, te, kind=kind, order=1)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {
        "route": route, "kind": kind, "act": act, "N_A": NA, "N_B": NB, "theory_s": t1 - t0, "predict_s": t2 - t1,
        "peak_gb": rss, "base_gb": rss0, "mean": p.mean.ravel().tolist(),
    }  # fmt: skip


def dense_gb(kind: str, NA: int, NB: int) -> float:
    """Estimated peak of the dense route (``rgflow.theory(net, x, dntk=…)``, depth 3)."""
    from rgflow.recursions._mlp import theory_memory

    N = NA + NB
    return theory_memory(N, N, 3, True, 1, kind == "gd", False) / 1e9


def part3(sizes: list[int], acts: list[str], NB: int, width: int, budget_gb: float) -> list[dict]:
    import json
    import subprocess

    rows = []
    for act in acts:
        for NA in sizes:
            for kind in ("bayes", "gd"):
                res = {}
                for route in ("lean", "dense"):
                    if route == "dense" and dense_gb(kind, NA, NB) > budget_gb:
                        res[route] = None
                        continue
                    cmd = [sys.executable, __file__, "--lean-one", route, kind, act, str(NA), str(NB), str(width)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    res[route] = json.loads(out.strip().splitlines()[-1])
                    r = res[route]
                    log(f"{act} {kind} N_A={NA} {route}: theory {r['theory_s']:.3g} s, predict {r['predict_s']:.3g} s, "
                        f"peak {r['peak_gb']:.3g} GB")  # fmt: skip
                lean, dense = res["lean"], res["dense"]
                diff = None if dense is None else float(np.max(np.abs(np.subtract(lean["mean"], dense["mean"]))))
                rows.append({"act": act, "kind": kind, "N_A": NA, "lean": lean, "dense": dense, "max_diff": diff})
    return rows


def print_part3(rows: list[dict], NB: int) -> None:
    print(f"\n### Theory + prediction as N_A grows (depth 3, N_B = {NB}, n_L = 1; fresh process each)\n")
    out = []
    for r in rows:
        ln, dn = r["lean"], r["dense"]
        out.append([
            r["act"], r["kind"] + " O(1/n)", r["N_A"], fmt(ln["theory_s"]), fmt(ln["predict_s"]), fmt(ln["peak_gb"]),
            "—" if dn is None else fmt(dn["theory_s"]), "—" if dn is None else fmt(dn["predict_s"]),
            "—" if dn is None else fmt(dn["peak_gb"]), "—" if r["max_diff"] is None else fmt(r["max_diff"]),
        ])  # fmt: skip
    heads = ["act", "prediction", "N_A", "lean theory (s)", "lean predict (s)", "lean peak (GB)", "dense theory (s)",
             "dense predict (s)", "dense peak (GB)", "max |lean − dense|"]  # fmt: skip
    print(markdown(heads, out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pilot-train", type=int, default=100)
    ap.add_argument("--pilot-condition", type=int, default=4000)
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--lean", action="store_true", help="part 3 only: lean vs dense theory + predict")
    ap.add_argument("--lean-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--acts", nargs="+", default=["gelu"])
    ap.add_argument("--test", type=int, default=4, help="N_B for part 3")
    ap.add_argument("--dense-gb", type=float, default=4.0, help="run the dense route when its estimate fits")
    ap.add_argument("--lean-one", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.lean_one:
        import json

        route, kind, act, NA, NB, width = args.lean_one
        print(json.dumps(lean_one(route, kind, act, int(NA), int(NB), int(width))))
        return 0
    info = machine()
    if args.lean:
        r3 = part3(args.lean_sizes, args.acts, args.test, args.width, args.dense_gb)
        print_part3(r3, args.test)
        print(f"\nmachine: {info.get('cpu')}, nproc {info.get('nproc')}, load {info.get('loadavg_1min')}")
        write_json(args.json, {"machine": info, "lean": r3})
        return 0
    r1 = part1(args.sizes, args.width, args.repeat)
    print("\n### Prediction cost (synthetic tensors, N_B = 4, n_L = 1)\n")
    print(
        markdown(
            ["N_A", "Bayes n=∞ (s)", "GD n=∞ (s)", "Bayes O(1/n), §2.3 (s)", "Bayes O(1/n), book (s)",
             "GD O(1/n) (s)"],
            [
                [r["N_A"], fmt(r["bayes_0_s"]), fmt(r["gd_0_s"]), fmt(r["bayes_1_s"]), fmt(r["bayes_1_book_s"]),
                 fmt(r["gd_1_s"])]
                for r in r1
            ],
        )
    )  # fmt: skip
    r2 = part2(args.width, args.pilot_train, args.pilot_condition)
    c, t = r2["condition"], r2["train"]
    note_c = f"pilot {c['pilot']} in {fmt(c['s'])} s"
    note_t = f"pilot {t['pilot']} in {fmt(t['s'])} s, {t['steps']} steps"
    print(
        f"\n### Resolving the O(1/n) Bayesian correction at 3σ (GELU, depth 3, width {args.width}, N_A = 8, N_B = 4)\n"
    )
    print(f"predicted |correction| per test output: {', '.join(fmt(v) for v in r2['correction'])}\n")
    print(
        markdown(
            ["method", "time (s)", "networks", "note"],
            [
                ["rgflow.theory (K, K1, Θ, V, … on 12 inputs)", fmt(r2["theory_s"]), "—", "once per architecture"],
                ["rgflow.predict order=1", fmt(r2["predict_order1_s"]), "—", "spec §2.3"],
                ["condition (exact posterior), projected", fmt(c["projected_s"]), c["needed"], note_c],
                ["train GD, control variate, projected", fmt(t["projected_cv_s"]), t["needed_cv"], note_t],
                ["train GD, plain mean, projected", fmt(t["projected_plain_s"]), t["needed_plain"], "same pilot"],
            ],
        )
    )  # fmt: skip
    print(f"\nmachine: {info.get('cpu')}, nproc {info.get('nproc')}, load {info.get('loadavg_1min')}")
    write_json(args.json, {"machine": info, "prediction": r1, "resolve": r2})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
