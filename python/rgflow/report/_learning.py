"""The learning report of ``rgflow learn`` (and the learning panel of ``rgflow demo``).

For one MLP and a training/test split it writes, per hidden width n, the infinite-width prediction
((10.40) for gradient descent, (6.64) for Bayesian inference), the O(1/n) prediction ((∞.160)–(∞.165)
with the spec's fixes, or (6.87)–(6.88); ``rgflow.predict(..., order=1)``) and the mean of an
ensemble of networks that were actually trained (``rgflow.train``, its linearised mean ``mean_lin``) or exactly
conditioned (``rgflow.learning.condition``), with standard errors and z-scores; the bias/variance
decomposition (10.52) of the test loss when test targets are known; and the infinite-width evidence
(6.34) over a (C_b, C_W) grid ("evidence for criticality").  Files: ``learning.json``,
``learning.npz`` and the figures ``learning_width.png``, ``learning_bias_variance.png``,
``learning_evidence.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..activations import Activation
from ..criticality import critical
from ..learning import condition, generalization, log_evidence, predict, train
from ..models import MLP
from ..recursions import theory
from ._common import Log, clean, machine_info, num, pyplot, save_figure, zs

__all__ = ["LearnSpec", "run_learning_report", "format_learning_table"]

KINDS = ("gd", "bayes")


@dataclass
class LearnSpec:
    """What ``rgflow learn`` computes: a network family (hyperparameters; the hidden width varies), the
    inputs ``x`` (train ∪ test), training targets ``y`` (N_A, n_L), optional test targets, the algorithm
    and the ensembles (one per width)."""

    activation: Activation
    depth: int
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    widths: list[int]
    networks: list[int]
    C_b: float | list[float] = 0.0
    C_W: float | list[float] = 1.0
    lambda_b: float | list[float] = 1.0
    lambda_W: float | list[float] = 1.0
    kind: str = "gd"
    y_test: np.ndarray | None = None
    groups: int = 20
    seed: int = 0
    backend: str = "numpy"
    lr: float | None = None
    tol: float = 1e-12
    evidence_C_b: list[float] | None = None
    evidence_C_W: list[float] | None = None
    title: str = "rgflow learn"
    config: dict[str, Any] = field(default_factory=dict)

    def net(self, width: int) -> MLP:
        """The MLP of hidden width ``width`` (every hidden layer) with n_L = the number of target outputs."""
        return MLP(
            self.activation, self.depth, width=width, C_b=self.C_b, C_W=self.C_W, lambda_b=self.lambda_b,
            lambda_W=self.lambda_W, out_width=int(self.y.shape[1]),
        )  # fmt: skip


def _needs_dntk(spec: LearnSpec, net: MLP) -> bool:
    """The O(1/n) GD mean needs P..U unless only the last layer trains (∞.173)."""
    if spec.kind != "gd":
        return False
    return not all(lb == 0 and lw == 0 for lb, lw in zip(net.lambda_b[:-1], net.lambda_W[:-1], strict=True))


def run_learning_report(
    spec: LearnSpec,
    out: str | Path,
    *,
    plots: bool = True,
    progress: bool = False,
    log: TextIO | None = None,
    command: str = "rgflow learn",
) -> dict[str, Any]:
    """Compute the predictions and the ensembles of ``spec``, write the report folder ``out``; return the
    results (what ``learning.json`` holds)."""
    if spec.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {spec.kind!r}")
    say = Log(log)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tr, te = np.asarray(spec.train), np.asarray(spec.test)
    n_out = int(spec.y.shape[1])
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"x": spec.x, "y_train": spec.y, "train": tr, "test": te}
    timings: dict[str, float] = {}
    for w, nets in zip(spec.widths, spec.networks, strict=True):
        net = spec.net(w)
        t0 = time.perf_counter()
        dntk = _needs_dntk(spec, net)
        th = theory(net, spec.x, dntk=dntk)
        p0 = predict(th, spec.y, tr, te, kind=spec.kind, order=0, lr=spec.lr)
        p1 = predict(th, spec.y, tr, te, kind=spec.kind, order=1, lr=spec.lr)
        t_theory = time.perf_counter() - t0
        doing = "training" if spec.kind == "gd" else "conditioning"
        say(f"width {w}: theory {t_theory:.1f} s; {doing} {nets} networks")
        t0 = time.perf_counter()
        if spec.kind == "gd":
            ens = train(
                net, spec.x, spec.y, tr, te, networks=nets, seed=spec.seed + w, backend=spec.backend,
                lr=spec.lr, tol=spec.tol, groups=spec.groups, theory=th, progress=progress,
            )  # fmt: skip
            # the linearised estimator (each network's own frozen-NTK model as control variate; the
            # lowest-variance mean of rgflow.train), the fixed-kernel control variate without aux networks
            if ens.mean_lin is not None and ens.stderr_lin is not None:
                mean, se, estimator = ens.mean_lin, ens.stderr_lin, "mean_lin"
            else:
                mean, se, estimator = ens.mean_cv, ens.stderr_cv, "mean_cv"
            ens_cov = ens.cov
            extra = {"lr": ens.lr, "max_loss": ens.max_loss, "steps": ens.steps, "estimator": estimator}
        else:
            cens = condition(net, spec.x, spec.y, tr, te, networks=nets, seed=spec.seed + w, groups=spec.groups)
            mean, se = cens.mean, cens.stderr
            ens_cov, extra = cens.cov, {"ess": cens.ess}
        t_ens = time.perf_counter() - t0
        timings[f"width_{w}"] = t_theory + t_ens
        row: dict[str, Any] = {
            "width": w,
            "networks": nets,
            "theory_s": t_theory,
            "ensemble_s": t_ens,
            "mean_infinite": p0.mean,
            "mean_order1": p1.mean,
            "mean_sampled": mean,
            "stderr_sampled": se,
            "z_order1": np.abs(mean - p1.mean) / np.where(se > 0, se, np.inf),
            "z_infinite": np.abs(mean - p0.mean) / np.where(se > 0, se, np.inf),
            "n_times_correction": w * (p1.mean - p0.mean),
            "n_times_sampled_shift": w * (mean - p0.mean),
            "n_times_stderr": w * se,
            **extra,
        }
        if spec.y_test is not None:
            g0, g1 = generalization(p0, spec.y_test), generalization(p1, spec.y_test)
            ens_bias = 0.5 * float(np.sum((mean - spec.y_test) ** 2))
            ens_var = 0.5 * n_out * float(np.trace(ens_cov))
            row["bias_variance"] = {
                "infinite": {"bias": g0.bias, "variance": g0.variance},
                "order1": {"bias": g1.bias, "variance": g1.variance},
                "sampled": {"bias": ens_bias, "variance": ens_var},
            }
        rows.append(row)
        for k in ("mean_infinite", "mean_order1", "mean_sampled", "stderr_sampled"):
            arrays[f"{k}_n_{w}"] = np.asarray(row[k])
    evidence = _evidence(spec, say) if spec.evidence_C_b and spec.evidence_C_W else None
    if evidence is not None:
        arrays["evidence_log"] = evidence["log_evidence"]
        arrays["evidence_C_b"] = np.asarray(evidence["C_b"])
        arrays["evidence_C_W"] = np.asarray(evidence["C_W"])
    files = ["learning.json", "learning.npz"]
    np.savez(outp / "learning.npz", **arrays)  # type: ignore[arg-type]
    res: dict[str, Any] = {
        "title": spec.title,
        "command": command,
        "kind": spec.kind,
        "n_train": len(tr),
        "n_test": len(te),
        "n_out": n_out,
        "rows": rows,
        "evidence": evidence,
        "config": spec.config,
        "machine": machine_info(),
        "plots": False,
        "files": files,
    }
    if plots:
        _plots(res, spec, outp, files)
        res["plots"] = True
    res["total_s"] = time.perf_counter() - t_start
    with open(outp / "learning.json", "w", encoding="utf-8") as fh:
        json.dump(clean(res), fh, indent=1)
    return res


def _evidence(spec: LearnSpec, say: Log) -> dict[str, Any]:
    """log p(y_A | C_b, C_W) (6.34) of the infinite-width output kernel over the grid (all layers alike)."""
    assert spec.evidence_C_b is not None and spec.evidence_C_W is not None
    grid = np.full((len(spec.evidence_C_b), len(spec.evidence_C_W)), np.nan)
    for i, cb in enumerate(spec.evidence_C_b):
        for j, cw in enumerate(spec.evidence_C_W):
            net = MLP(spec.activation, spec.depth, width=2, C_b=cb, C_W=cw, out_width=int(spec.y.shape[1]))
            th = theory(net, spec.x, order=0, ntk=False)
            try:
                grid[i, j] = log_evidence(th, spec.y, spec.train)
            except ValueError:  # a singular training kernel (e.g. C_b = 0 with a zero input): no evidence
                grid[i, j] = np.nan
    i, j = (int(v) for v in np.unravel_index(int(np.nanargmax(grid)), grid.shape))
    crit = critical(spec.activation)
    say(f"evidence: maximum at C_b = {spec.evidence_C_b[i]:g}, C_W = {spec.evidence_C_W[j]:g}")
    return {
        "C_b": list(spec.evidence_C_b),
        "C_W": list(spec.evidence_C_W),
        "log_evidence": grid,
        "argmax": {"C_b": spec.evidence_C_b[i], "C_W": spec.evidence_C_W[j]},
        "critical": {"C_b": crit.C_b, "C_W": crit.C_W} if crit.is_critical else None,
    }


def format_learning_table(res: dict[str, Any]) -> str:
    """The text table: per width and test input, infinite-width, O(1/n) and sampled predictions."""
    kind = "gradient descent (fully trained)" if res["kind"] == "gd" else "Bayesian posterior"
    lines = [
        f"{res['title']} — {kind}: {res['n_train']} training, {res['n_test']} test inputs, n_L = {res['n_out']}",
        f"{'width':>6} {'test':>5} {'n=∞':>11} {'O(1/n)':>11} {'sampled':>11} {'± stderr':>11} "
        f"{'|z| O(1/n)':>10} {'|z| n=∞':>8}",
    ]
    for row in res["rows"]:
        keys = ("mean_infinite", "mean_order1", "mean_sampled", "stderr_sampled")
        m0, m1, ms, se = (np.asarray(row[k]) for k in keys)
        z1, z0 = np.asarray(row["z_order1"]), np.asarray(row["z_infinite"])
        for b in range(m0.shape[0]):
            for i in range(m0.shape[1]):
                tag = f"{b}" if m0.shape[1] == 1 else f"{b}.{i}"
                lines.append(
                    f"{row['width']:>6} {tag:>5} {num(m0[b, i])} {num(m1[b, i])} {num(ms[b, i])} {num(se[b, i])} "
                    f"{zs(float(z1[b, i])):>10} {zs(float(z0[b, i]))}"
                )
        if "bias_variance" in row:
            bv = row["bias_variance"]
            parts = [f"{k} {bv[k]['bias']:.4g} + {bv[k]['variance']:.4g}" for k in ("infinite", "order1", "sampled")]
            lines.append("       test loss bias + variance (10.52): " + ", ".join(parts))
    ev = res.get("evidence")
    if ev:
        crit = ev.get("critical")
        at = f" (criticality: C_b = {crit['C_b']:.6g}, C_W = {crit['C_W']:.6g})" if crit else ""
        best = ev["argmax"]
        lines.append(f"evidence (6.34) maximum on the grid: C_b = {best['C_b']:g}, C_W = {best['C_W']:g}{at}")
    return "\n".join(lines)


def _plots(res: dict[str, Any], spec: LearnSpec, out: Path, files: list[str]) -> None:
    plt = pyplot()
    rows = res["rows"]
    widths = np.array([r["width"] for r in rows], dtype=float)
    m0 = np.array([r["mean_infinite"] for r in rows])
    m1 = np.array([r["mean_order1"] for r in rows])
    ms = np.array([r["mean_sampled"] for r in rows])
    se = np.array([r["stderr_sampled"] for r in rows])
    NB, nL = m0.shape[1], m0.shape[2]
    panels = [(b, i) for b in range(NB) for i in range(nL)][:6]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    inv = np.linspace(0.0, 1.05 / widths.min(), 50)
    for ax, (b, i) in zip(axes[0], panels, strict=False):
        slope = np.mean((m1[:, b, i] - m0[:, b, i]) * widths)  # the O(1/n) coefficient (width-independent)
        ax.axhline(m0[0, b, i], color="k", lw=1, label="infinite width (n = ∞)")
        ax.plot(inv, m0[0, b, i] + slope * inv, color="C0", label="O(1/n) theory")
        lab = "trained ensembles" if spec.kind == "gd" else "conditioned ensembles"
        ax.errorbar(1 / widths, ms[:, b, i], yerr=se[:, b, i], fmt="o", color="C3", capsize=3, label=lab + " ± 1 s.e.")
        ax.set_xlabel("1/n (hidden width)")
        ax.set_title(f"test input {b}" + (f", output {i}" if nL > 1 else ""))
        ax.set_ylabel("mean prediction")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(res["title"], fontsize=10)
    save_figure(plt, fig, out, "learning_width.png", files)
    if all("bias_variance" in r for r in rows):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for k, (name, c) in enumerate((("infinite", "k"), ("order1", "C0"), ("sampled", "C3"))):
            bias = [r["bias_variance"][name]["bias"] for r in rows]
            var = [r["bias_variance"][name]["variance"] for r in rows]
            pos = np.arange(len(rows)) + (k - 1) * 0.27
            ax.bar(pos, bias, width=0.25, color=c, alpha=0.9, label=f"{name}: bias")
            ax.bar(pos, var, width=0.25, bottom=bias, color=c, alpha=0.35, label=f"{name}: variance")
        ax.set_xticks(np.arange(len(rows)), [f"n = {int(w)}" for w in widths])
        ax.set_ylabel("expected test loss (10.52)")
        ax.legend(fontsize=7, ncol=3)
        save_figure(plt, fig, out, "learning_bias_variance.png", files)
    ev = res.get("evidence")
    if ev:
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        g = np.asarray(ev["log_evidence"], dtype=float)
        im = ax.pcolormesh(ev["C_W"], ev["C_b"], g, shading="nearest")
        fig.colorbar(im, ax=ax, label="log evidence (6.34)")
        ax.plot([ev["argmax"]["C_W"]], [ev["argmax"]["C_b"]], "w*", ms=12, label="maximum on the grid")
        if ev.get("critical"):
            ax.plot([ev["critical"]["C_W"]], [ev["critical"]["C_b"]], "r+", ms=12, mew=2, label="criticality")
        ax.set_xlabel("C_W")
        ax.set_ylabel("C_b")
        ax.legend(fontsize=8)
        save_figure(plt, fig, out, "learning_evidence.png", files)
