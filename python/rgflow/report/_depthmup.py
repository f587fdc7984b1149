"""The depth-convergence report of trained depth-μP ResNets (spec ``nfd.md`` §3): tables of the
measured network → limit rates, the coupling (coupled − decoupled) per depth and width, the
decoupled DMFT against the widest ensemble; plots of |E[obs(L) − obs(2L)]| and of the coupling
against L with fitted slopes and the reference slopes 1 and 2, and the kernels over depth time τ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..learning import TAUS, DepthSweep, DMFTSolution, Rate, fit_rate
from ._common import clean, pyplot, save_figure


def _pm(v: float, s: float) -> str:
    return f"{v:+.4f} ± {s:.4f}"


def format_depthmup_table(sweeps: Sequence[DepthSweep], dmft: Sequence[DMFTSolution] | None = None) -> str:
    """Markdown tables: fitted rates per width and mode; the std − dec gap and S_coup per depth;
    the DMFT (coupled and/or decoupled, n = ∞) against the widest ensemble of the same mode."""
    lines: list[str] = []
    s0 = sweeps[0]
    T = s0.steps
    net = s0.net
    lines.append(
        f"# Depth-μP ResNet: depth convergence ({net.activation.name}, γ0 = {net.gamma0:g}, η = {s0.eta:g}, "
        f"{T} GD steps, train = {','.join(net.train)}, branch = {net.branch})"
    )
    lines.append("")
    lines.append("## Rates: |E[obs(L) − obs(2L)]| ∝ L^-p (p = 1: O(1/L); p = 2: O(1/L²))")
    lines.append("")
    lines.append("| width n | networks | mode | observable | p ± se | χ²/dof |")
    lines.append("|---|---|---|---|---|---|")
    for s in sweeps:
        for mode in s.modes:
            for label, r in s.rates(mode).items():
                if label.startswith("gap") and mode != "coupled":
                    continue
                fit = f"{r.p:.2f} ± {r.stderr:.2f} | {r.chi2:.1f}/{r.dof}"
                lines.append(f"| {s.width} | {s.networks} | {mode} | {label} | {fit} |")
    if all(set(s.modes) == {"coupled", "decoupled"} for s in sweeps):
        lines.append("")
        lines.append("## Coupling: E[coupled − decoupled] per depth (paired networks) and S_coup (§3.4)")
        lines.append("")
        lines.append(
            "| width n | L | f(x1, t=1) | f(x1, t=T) | loss(T) | S_coup[0,0] coupled | S_coup[0,0] decoupled |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for s in sweeps:
            g, gs = s.gap("f")
            lg, lgs = s.gap("loss")
            sc, scs = s.mean["S_coup"], s.stderr["S_coup"]
            for i, L in enumerate(s.depths):
                t1 = min(1, T)
                lines.append(
                    f"| {s.width} | {L} | {_pm(g[i, t1, 0], gs[i, t1, 0])} | {_pm(g[i, T, 0], gs[i, T, 0])} | "
                    f"{_pm(lg[i, T], lgs[i, T])} | {_pm(sc[i, 0, 0, 0], scs[i, 0, 0, 0])} | "
                    f"{_pm(sc[i, 1, 0, 0], scs[i, 1, 0, 0])} |"
                )
    if dmft:
        wide = max(sweeps, key=lambda s: s.width)
        lines.append("")
        lines.append(f"## DMFT (n = ∞) against the ensemble at n = {wide.width} (residual = DMFT − ensemble)")
        lines.append("")
        lines.append(
            "| L | mode | f(x1,T) DMFT | f(x1,T) ensemble | residual | loss(T) DMFT | loss(T) ensemble | residual |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for d in dmft:
            mode = "coupled" if d.coupled else "decoupled"
            L = d.net.depth
            if mode not in wide.modes or L not in wide.depths:
                continue
            i, j = wide.depths.index(L), wide.mode_index(mode)
            fm, fs = d.mean["f"][T, 0], d.stderr["f"][T, 0]
            em, es = wide.mean["f"][i, j, T, 0], wide.stderr["f"][i, j, T, 0]
            lm, ls = d.mean["loss"][T], d.stderr["loss"][T]
            elm, els = wide.mean["loss"][i, j, T], wide.stderr["loss"][i, j, T]
            lines.append(
                f"| {L} | {mode} | {_pm(fm, fs)} | {_pm(em, es)} | {_pm(fm - em, float(np.hypot(fs, es)))} | "
                f"{_pm(lm, ls)} | {_pm(elm, els)} | {_pm(lm - elm, float(np.hypot(ls, els)))} |"
            )
    return "\n".join(lines) + "\n"


def _rate_line(ax: Any, r: Rate, L: np.ndarray, **kw: Any) -> None:
    ax.plot(L, r.prefactor * L ** (-r.p), "--", **kw)


def make_depthmup_plots(sweeps: Sequence[DepthSweep], out: Path) -> list[str]:
    """Write depthmup_convergence.png, depthmup_coupling.png and depthmup_kernels.png; return the names."""
    plt = pyplot()
    files: list[str] = []
    # 1. |E[f_L − f_2L]| (and the loss, the kernel change) against L
    names = [("f", (-1, 0), "f(x1,T)"), ("loss", (-1,), "loss(T)"), ("dK", (0, -1), "ΔK_L[0,1]")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6))
    for ax, (name, idx, label) in zip(axes, names, strict=True):
        for s in sweeps:
            L = np.asarray(s.depths[:-1], dtype=float)
            for mode in s.modes:
                d, se = s.differences(name, mode)
                sel: tuple[Any, ...] = (slice(None), *idx)
                dd, ss = np.abs(d[sel]), se[sel]
                line = ax.errorbar(L, dd, yerr=ss, marker="o", ls="none", label=f"n={s.width} {mode}")
                try:
                    r = fit_rate(L, dd, ss)
                    _rate_line(ax, r, L, color=line[0].get_color(), label=f"p={r.p:.2f}±{r.stderr:.2f}")
                except ValueError:
                    pass
        L = np.asarray(sweeps[0].depths[:-1], dtype=float)
        ref = ax.get_lines()[0].get_ydata()[0] if ax.get_lines() else 1.0
        ax.plot(L, ref * (L / L[0]) ** -1.0, "k:", lw=1, label="slope −1")
        ax.plot(L, ref * (L / L[0]) ** -2.0, "k-.", lw=1, label="slope −2")
        ax.set(xscale="log", yscale="log", xlabel="L", title=f"|E[{label}(L) − {label}(2L)]|")
        ax.legend(fontsize=6)
    save_figure(plt, fig, out, "depthmup_convergence.png", files)
    # 2. the coupling against L
    both = [s for s in sweeps if set(s.modes) == {"coupled", "decoupled"}]
    if both:
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
        for s in both:
            L = np.asarray(s.depths, dtype=float)
            g, gs = s.gap("f")
            axes[0].errorbar(L, np.abs(g[:, -1, 0]), yerr=gs[:, -1, 0], marker="o", label=f"n={s.width}, t=T")
            axes[0].errorbar(L, np.abs(g[:, 1, 0]), yerr=gs[:, 1, 0], marker="s", label=f"n={s.width}, t=1")
            sc, scs = s.mean["S_coup"], s.stderr["S_coup"]
            axes[1].errorbar(L, sc[:, 0, 0, 0], yerr=scs[:, 0, 0, 0], marker="o", label=f"coupled n={s.width}")
            axes[1].errorbar(L, sc[:, 1, 0, 0], yerr=scs[:, 1, 0, 0], marker="s", label=f"decoupled n={s.width}")
            axes[1].plot(L, s.mean["S_dir"][:, 0, 0, 0], "k:", lw=1)
        L = np.asarray(both[0].depths, dtype=float)
        g0 = abs(both[0].gap("f")[0][0, -1, 0])
        axes[0].plot(L, g0 * (L / L[0]) ** -1.0, "k:", lw=1, label="slope −1")
        axes[0].plot(L, g0 * (L / L[0]) ** -2.0, "k-.", lw=1, label="slope −2")
        axes[0].set(xscale="log", yscale="log", xlabel="L", title="|E[f_coupled − f_decoupled]| (x1)")
        axes[1].set(xscale="log", xlabel="L", title="S_coup[0,0] at t=1 (dotted: S_dir)")
        for ax in axes:
            ax.legend(fontsize=6)
        save_figure(plt, fig, out, "depthmup_coupling.png", files)
    # 3. the kernels over depth time τ (widest sweep, coupled mode)
    s = max(sweeps, key=lambda q: q.width)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    j = 0
    for i, depth in enumerate(s.depths):
        kt = s.mean["kernels"][i, j]
        axes[0].plot(TAUS, kt[0, :, 0, -1], "o-", label=f"L={depth} t=0")
        axes[0].plot(TAUS, kt[-1, :, 0, -1], "s--", label=f"L={depth} t=T")
        axes[1].plot(TAUS, kt[-1, :, 0, 0] - kt[0, :, 0, 0], "o-", label=f"L={depth}")
    axes[0].set(xlabel="τ = ℓ/L", title=f"K_τ[0,1] ({s.modes[j]}, n={s.width})")
    axes[1].set(xlabel="τ = ℓ/L", title="K_τ[0,0](T) − K_τ[0,0](0)")
    for ax in axes:
        ax.legend(fontsize=6)
    save_figure(plt, fig, out, "depthmup_kernels.png", files)
    return files


def depthmup_report(
    sweeps: Sequence[DepthSweep],
    out: str | Path,
    *,
    dmft: Sequence[DMFTSolution] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write ``depthmup.md`` (the tables), ``depthmup.json`` (rates, gaps, means and standard errors)
    and, with ``plots``, the three figures into ``out``; return the JSON summary."""
    if not sweeps:
        raise ValueError("sweeps is empty; give at least one DepthSweep from rgflow.train_depth_sweep")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    table = format_depthmup_table(sweeps, dmft)
    (path / "depthmup.md").write_text(table, encoding="utf-8")
    summary: dict[str, Any] = {"sweeps": []}
    for s in sweeps:
        entry: dict[str, Any] = {
            "width": s.width,
            "networks": s.networks,
            "depths": list(s.depths),
            "modes": list(s.modes),
            "rates": {
                m: {k: {"p": r.p, "stderr": r.stderr, "chi2": r.chi2, "dof": r.dof} for k, r in s.rates(m).items()}
                for m in s.modes
            },  # fmt: skip
            "mean": {k: v for k, v in s.mean.items()},
            "stderr": {k: v for k, v in s.stderr.items()},
        }
        if set(s.modes) == {"coupled", "decoupled"}:
            entry["gap_f"] = {"mean": s.gap("f")[0], "stderr": s.gap("f")[1]}
        summary["sweeps"].append(entry)
    if dmft:
        summary["dmft"] = [
            {"depth": d.net.depth, "coupled": d.coupled, "mean": d.mean, "stderr": d.stderr} for d in dmft
        ]
    files = ["depthmup.md", "depthmup.json"]
    if plots:
        files += make_depthmup_plots(sweeps, path)
    summary["files"] = files
    (path / "depthmup.json").write_text(json.dumps(clean(summary), indent=1), encoding="utf-8")
    return summary
