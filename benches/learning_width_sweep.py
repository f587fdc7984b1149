"""Width sweep of the O(1/n) learning predictions against trained and conditioned ensembles (issue 13, 4b).

GD: MLPs at criticality (depth 3, N_A = 4 orthogonal training inputs, N_B = 3 random test inputs, all
of squared norm n0 = 8, n_L = 1, λ_b = λ_W = 1, η = 1/λ_max(Θ̃)), trained by full-batch gradient
descent to a training loss < 1e-12 at widths n = 16…128.  The ensemble mean E[z_B(T)] is estimated
with the linearised control variate of ``rgflow.train`` (``mean_lin``: each network's own frozen-NTK
prediction, whose odd part z_B(0) − P̂ z_A(0) has mean exactly zero under the last-layer sign flip,
and whose even part P̂ y is averaged over independent untrained networks), and compared with the
O(1/n) mean (∞.160)–(∞.165) (spec fixes, H = Θ + Θ1/n) of ``rgflow.predict(kind="gd", order=1)``.

Bayes: the exact posterior of the same architectures, sampled by conditioning sampled networks
(``rgflow.learning.condition``), against the O(1/n) posterior mean (spec §2.3, ≡ (6.87)–(6.88)).

Per width: n·Δ = n·(sampled − infinite width), n·pred = n·(O(1/n) − infinite width), n·stderr, the
z-score (sampled − O(1/n))/stderr, the O(1/n²) allowance (GD: |pieces with H = Θ + Θ1/n − pieces with
H = Θ| beyond the NTK-mean piece; Bayes: |compact − book route|, two forms equal at O(1/n)) and
z_∞ = (sampled − infinite)/stderr (is the shift resolved?).

Usage (each call appends its points to the JSON file, so widths can run as separate jobs)::

    python benches/learning_width_sweep.py --kind gd --acts tanh gelu --widths 16 32 64 128 --json sweep.json
    python benches/learning_width_sweep.py --kind bayes --acts tanh gelu --widths 32 64 128 --json sweep.json
    python benches/learning_width_sweep.py --table sweep.json        # markdown tables of all points
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import rgflow
from rgflow import learning as lg

#: trained and untrained (aux) networks per activation and width: n·stderr ≈ 0.1 (GELU), 0.03 (tanh)
GD_NETWORKS = {
    "gelu": {16: 3000, 32: 4000, 64: 4000, 128: 3000},
    "tanh": {16: 2000, 32: 2000, 64: 2000, 128: 2000},
}
GD_AUX = {
    "gelu": {16: 12_000, 32: 24_000, 64: 40_000, 128: 45_000},
    "tanh": {16: 8000, 32: 12_000, 64: 20_000, 128: 30_000},
}
BAYES_NETWORKS = 100_000


def inputs(NA: int, NB: int, n0: int = 8, seed: int = 0) -> np.ndarray:
    """Orthogonal training inputs and random test inputs, all of squared norm n0 (as in the tests)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n0, n0)))
    xte = rng.normal(size=(NB, n0))
    xte *= np.sqrt(n0) / np.linalg.norm(xte, axis=1, keepdims=True)
    return np.vstack([Q[:NA] * np.sqrt(n0), xte])


def _setup(act: str, depth: int, n: int, NA: int, NB: int, dntk: bool):
    x = inputs(NA, NB)
    net = rgflow.MLP.critical(act, depth=depth, width=n, learning_rates="constant")
    th = rgflow.theory(net, x, dntk=dntk)
    y = np.random.default_rng(1).normal(size=(NA, 1)) * np.sqrt(th.K[-1][0, 0])
    return net, x, th, y, np.arange(NA), np.arange(NA, NA + NB)


def _point(n: int, sampled: np.ndarray, se: np.ndarray, pred: Any, allowance: np.ndarray) -> dict[str, Any]:
    m, m0 = pred.mean.ravel(), pred.mean_infinite.ravel()
    s, se, al = sampled.ravel(), se.ravel(), allowance.ravel()
    return {
        "width": n,
        "n_delta": (n * (s - m0)).tolist(),
        "n_pred": (n * (m - m0)).tolist(),
        "n_stderr": (n * se).tolist(),
        "n_allowance": (n * al).tolist(),
        "z": ((s - m) / se).tolist(),
        "z_infinite": ((s - m0) / se).tolist(),
        "agrees": bool(np.all(np.abs(s - m) <= 3 * se + al)),
    }


def gd_point(act: str, n: int, networks: int, aux: int, seed: int = 0, depth: int = 3, NA: int = 4, NB: int = 3):
    """One width of the GD sweep: trained ensemble (``mean_lin``) vs the O(1/n) GD mean."""
    net, x, th, y, tr, te = _setup(act, depth, n, NA, NB, dntk=True)
    p1 = rgflow.predict(th, y, tr, te, kind="gd", order=1)
    book = rgflow.predict(th, y, tr, te, kind="gd", order=1, theta1=False)
    rest = [k for k in p1.pieces if k != "ntk_mean"]
    allowance = np.abs(sum(p1.pieces[k] for k in rest) - sum(book.pieces[k] for k in rest))
    t0 = time.perf_counter()
    ens = rgflow.train(net, x, y, tr, te, networks=networks, aux_networks=aux, groups=20, theory=th, seed=seed)
    wall = time.perf_counter() - t0
    if not ens.converged:
        raise RuntimeError(f"{act} n={n}: not every network reached the loss tolerance (max {ens.max_loss:.2e})")
    assert ens.mean_lin is not None and ens.stderr_lin is not None
    out = _point(n, ens.mean_lin, ens.stderr_lin, p1, allowance)
    e = ens.extra
    out.update(
        kind="gd", act=act, depth=depth, NA=NA, NB=NB, networks=networks, aux_networks=aux, seed=seed,
        seconds=round(wall, 1), steps=ens.steps,
        n_stderr_plain=(n * ens.stderr).ravel().tolist(), n_stderr_cv=(n * ens.stderr_cv).ravel().tolist(),
        z_odd=(e["lin_odd_mean"] / e["lin_odd_stderr"]).ravel().tolist(),
        z_control=(e["control_mean"] / e["control_stderr"]).ravel().tolist(),
        n_delta_cv=(n * (ens.mean_cv - p1.mean_infinite)).ravel().tolist(),
        n_pred_book=(n * book.mean_correction).ravel().tolist(),
    )  # fmt: skip
    return out


def bayes_point(act: str, n: int, networks: int, seed: int = 0, depth: int = 3, NA: int = 4, NB: int = 2):
    """One width of the Bayes sweep: exactly conditioned networks vs the O(1/n) posterior mean."""
    net, x, th, y, tr, te = _setup(act, depth, n, NA, NB, dntk=False)
    p1 = rgflow.predict(th, y, tr, te, order=1)
    try:
        allowance = np.abs(rgflow.predict(th, y, tr, te, order=1, method="book").mean - p1.mean)
    except ValueError:  # the book route's coupling is not positive definite at small n (GELU n = 32)
        allowance = np.full_like(p1.mean, np.nan)
    t0 = time.perf_counter()
    ens = lg.condition(net, x, y, tr, te, networks=networks, seed=seed)
    out = _point(n, ens.mean, ens.stderr, p1, np.nan_to_num(allowance))
    out.update(kind="bayes", act=act, depth=depth, NA=NA, NB=NB, networks=networks, seed=seed,
               seconds=round(time.perf_counter() - t0, 1), ess=round(ens.ess, 1),
               book_route=bool(np.all(np.isfinite(allowance))))  # fmt: skip
    return out


def pool(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge the points of one (kind, activation, width) from independent runs (seeds): inverse-variance
    weighted n·Δ, networks summed, z-scores recomputed."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["kind"], p["act"], p["width"]), []).append(p)
    out = []
    for ps in groups.values():
        if len(ps) == 1:
            out.append(ps[0])
            continue
        w = 1.0 / np.array([p["n_stderr"] for p in ps]) ** 2
        d = (w * np.array([p["n_delta"] for p in ps])).sum(axis=0) / w.sum(axis=0)
        se = 1.0 / np.sqrt(w.sum(axis=0))
        pred, al = np.array(ps[0]["n_pred"]), np.array(ps[0]["n_allowance"])
        q = {**ps[0], "n_delta": d.tolist(), "n_stderr": se.tolist(), "z": ((d - pred) / se).tolist()}
        q.update(z_infinite=(d / se).tolist(), agrees=bool(np.all(np.abs(d - pred) <= 3 * se + al)),
                 networks=sum(p["networks"] for p in ps), seed=[p["seed"] for p in ps])  # fmt: skip
        if "aux_networks" in q:
            q["aux_networks"] = sum(p["aux_networks"] for p in ps)
        out.append(q)
    return out


# ----------------------------------------------------------------------------- convergence
def extrapolate(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Weighted least-squares fit n·(sampled − O(1/n)) = a + b/n over the widths, per test output.

    The O(1/n) prediction is right iff a = 0 (n·(sampled − ∞) → n·(predicted − ∞) as n → ∞); b/n² is
    the fitted O(1/n²) remainder of the mean.  Returns a, its standard error, a/σ_a, b, χ²/dof."""
    ps = sorted(points, key=lambda p: p["width"])
    n = np.array([p["width"] for p in ps], dtype=float)
    gap = np.array([np.subtract(p["n_delta"], p["n_pred"]) for p in ps])  # (widths, outputs)
    se = np.array([p["n_stderr"] for p in ps])
    X = np.stack([np.ones_like(n), 1.0 / n], axis=1)
    a, a_se, b, chi2 = [], [], [], []
    for j in range(gap.shape[1]):
        w = 1.0 / se[:, j]
        coef, *_ = np.linalg.lstsq(X * w[:, None], gap[:, j] * w, rcond=None)
        cov = np.linalg.inv((X * w[:, None]).T @ (X * w[:, None]))
        a.append(coef[0])
        a_se.append(np.sqrt(cov[0, 0]))
        b.append(coef[1])
        chi2.append(float(np.sum(((X @ coef - gap[:, j]) * w) ** 2)) / max(len(n) - 2, 1))
    a_arr, a_se_arr = np.array(a), np.array(a_se)
    return {"a": a, "a_stderr": a_se, "z_a": (a_arr / a_se_arr).tolist(), "b": b, "chi2_dof": chi2,
            "widths": n.tolist()}  # fmt: skip


# ----------------------------------------------------------------------------- tables
def _f(v: list[float], d: int = 2) -> str:
    return "[" + ", ".join(f"{a:+.{d}f}" for a in v) + "]"


def table(points: list[dict[str, Any]]) -> str:
    """One markdown table per (kind, activation): width, n·Δ, n·pred, n·stderr, allowance, z, z_∞."""
    out = []
    points = pool(points)
    keys = sorted({(p["kind"], p["act"]) for p in points})
    for kind, act in keys:
        ps = sorted((p for p in points if (p["kind"], p["act"]) == (kind, act)), key=lambda p: p["width"])
        p0 = ps[0]
        what = "trained (GD, `mean_lin`)" if kind == "gd" else "conditioned (Bayes)"
        out.append(f"\n{act}, depth {p0['depth']}, N_A = {p0['NA']}, N_B = {p0['NB']}, {what}:\n")
        out.append("| n | networks | n·(sampled − ∞) | n·(O(1/n) − ∞) | n·stderr | n·allowance | z | max\\|z_∞\\| |")
        out.append("|---|---|---|---|---|---|---|---|")
        for p in ps:
            nets = f"{p['networks']}" + (f" + {p['aux_networks']} aux" if kind == "gd" else "")
            out.append(
                f"| {p['width']} | {nets} | {_f(p['n_delta'])} | {_f(p['n_pred'])} | {_f(p['n_stderr'])} | "
                f"{_f(p['n_allowance'])} | {_f(p['z'], 1)} | {max(abs(v) for v in p['z_infinite']):.1f} |"
            )
        if len(ps) >= 3:
            e = extrapolate(ps)
            out.append(
                f"\nfit n·(sampled − O(1/n)) = a + b/n: a = {_f(e['a'], 3)} ± {_f(e['a_stderr'], 3)} "
                f"(a/σ = {_f(e['z_a'], 1)}), b = {_f(e['b'])}, χ²/dof = {_f(e['chi2_dof'], 1)}"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("gd", "bayes"), default="gd")
    ap.add_argument("--acts", nargs="+", default=["tanh", "gelu"])
    ap.add_argument("--widths", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--networks", type=int, default=None, help="trained/conditioned networks (default per width)")
    ap.add_argument("--aux", type=int, default=None, help="untrained networks for mean_lin (default per width)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="append the points to this JSON file")
    ap.add_argument("--table", type=Path, default=None, help="print the tables of a JSON file and exit")
    a = ap.parse_args()
    if a.table is not None:
        print(table(json.loads(a.table.read_text())["points"]))
        return 0
    points = []
    for act in a.acts:
        for n in a.widths:
            if a.kind == "gd":
                nets = a.networks or GD_NETWORKS.get(act, {}).get(n, 4000)
                aux = a.aux if a.aux is not None else GD_AUX.get(act, {}).get(n, 10 * nets)
                p = gd_point(act, n, nets, aux, a.seed)
            else:
                p = bayes_point(act, n, a.networks or BAYES_NETWORKS, a.seed)
            print(json.dumps(p), file=sys.stderr, flush=True)
            points.append(p)
            if a.json is not None:
                old = json.loads(a.json.read_text())["points"] if a.json.exists() else []
                a.json.write_text(json.dumps({"points": [*old, p]}, indent=1))
    print(table(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
