"""Theory-versus-samples reports for the residual architectures (``rgflow run`` with
``network.architecture = "preresnet"`` or ``"resmlp"``).

* ``preresnet`` (spec ``resnets.md``, paper (a)): :func:`rgflow.preresnet_theory` (converged
  quadrature) and optionally :func:`rgflow.preresnet.preresnet_theory_gh` (the published code's
  forward Euler with a plain Gauss–Hermite rule, e.g. 32 points) against
  :func:`rgflow.sample_preresnet`, at the checkpoints ``ℓ = 0, every, …, L`` (``t = ε²ℓ``):
  ``K0`` against ``Ḡ``, ``V4`` against ``n·Cov(G)``, ``K1`` against ``K1_mic = n(Ḡ − K0)``.
  Relative errors are ``theory/sampled − 1`` (the paper's sign convention).
* ``resmlp`` (PDLT Appendix B): :func:`rgflow.resmlp_theory` against :func:`rgflow.sample_resmlp`,
  layer by layer: ``K + K1/n`` against ``Ḡ``, ``V`` and ``S`` against their estimators.

Writes ``results.json``, ``theory.npz``, ``ensemble_<label>.npz`` and (optionally) ``depth.png``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..ensembles import sample_preresnet, sample_resmlp
from ..recursions import preresnet_theory, preresnet_theory_gh, resmlp_theory
from ._common import Log, clean, machine_info, num, pyplot, save_figure, zs, zscore
from ._spec import ResidualEnsembleSpec, ResidualRunSpec

__all__ = ["ResidualEnsembleSpec", "ResidualRunSpec", "run_residual_report", "format_residual_table"]

ARCHITECTURES = ("resmlp", "preresnet")


def _label(es: ResidualEnsembleSpec, multi_backend: bool, multi_sampler: bool) -> str:
    lab = f"n={es.width}"
    if multi_backend:
        lab += f" {es.backend}"
    if multi_sampler:
        lab += f" {es.sampler}"
    return lab


def _unique_labels(spec: ResidualRunSpec) -> list[str]:
    mb = len({e.backend for e in spec.ensembles}) > 1
    ms = len({e.sampler for e in spec.ensembles}) > 1
    labels: list[str] = []
    for es in spec.ensembles:
        lab = base = _label(es, mb, ms)
        k = 2
        while lab in labels:
            lab = f"{base} #{k}"
            k += 1
        labels.append(lab)
    return labels


def _fname(label: str) -> str:
    return "ensemble_" + "".join(c if c.isalnum() else "_" for c in label).strip("_") + ".npz"


def _rel(th: float, samp: float, se: float) -> tuple[float | None, float | None]:
    """(theory/sampled − 1, its standard error from the sampled one); None when the sampled value
    is not resolved (|sampled| <= 2 stderr): a relative error is meaningless there."""
    if not math.isfinite(samp) or abs(samp) <= 2 * se or samp == 0:
        return None, None
    return th / samp - 1, abs(th / samp) * se / abs(samp)


def _entry_label(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{','.join(str(i) for i in idx)}]" if len(idx) == 2 else f"{name}[{''.join(str(i) for i in idx)}]"


# ============================================================================ the run


def run_residual_report(
    spec: ResidualRunSpec,
    out: str | Path | None,
    *,
    plots: bool = True,
    progress: bool = True,
    log: TextIO | None = sys.stderr,
    command: str | None = None,
) -> dict[str, Any]:
    """Compute the theory and the ensembles of ``spec``, write the report folder ``out`` (None:
    write nothing) and return the results (as in ``results.json``, plus ``"_theory"``,
    ``"_theory_gh"`` and ``"_ensembles"``, not written)."""
    say = Log(log)
    t_start = time.perf_counter()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    if spec.architecture == "preresnet":
        res = _run_preresnet(spec, say, progress)
    elif spec.architecture == "resmlp":
        res = _run_resmlp(spec, say, progress)
    else:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {spec.architecture!r}")
    th, th_gh, ens_objs = res.pop("_theory"), res.pop("_theory_gh"), res.pop("_ensembles")
    results: dict[str, Any] = {
        "title": spec.title,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "config": spec.config,
        "architecture": spec.architecture,
        **res,
        "machine": machine_info(),
        "plots": [],
    }
    if out_path is not None:
        arrays: dict[str, Any] = {}
        for k in ("layers", "t", "K", "K1", "V", "E2", "S"):
            v = getattr(th, k, None)
            if v is not None:
                arrays[k] = np.asarray(v)
        if th_gh is not None:
            for k in ("K", "V", "K1", "E2"):
                arrays[f"gh_{k}"] = np.asarray(getattr(th_gh, k))
        np.savez_compressed(out_path / "theory.npz", **arrays)
        results["theory"]["file"] = "theory.npz"
        for er, ens in zip(results["ensembles"], ens_objs, strict=True):
            data: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in ens.tensors().items()}
            data.update({f"stderr_{k}": np.asarray(v) for k, v in ens.stderr.tensors().items()})
            for k in ("layers", "t"):
                if getattr(ens, k, None) is not None:
                    data[k] = np.asarray(getattr(ens, k))
            er["file"] = _fname(er["label"])
            np.savez_compressed(out_path / er["file"], allow_pickle=False, **data)
        if plots:
            say("plotting")
            results["plots"] = _plots(spec, results, out_path)
    results["total_seconds"] = time.perf_counter() - t_start
    if out_path is not None:
        with open(out_path / "results.json", "w", encoding="utf-8") as fh:
            json.dump(clean(results), fh, indent=1, allow_nan=False)
            fh.write("\n")
        say(f"report written to {out_path}/ (results.json{', plots' if results['plots'] else ''})")
    results["_theory"], results["_theory_gh"], results["_ensembles"] = th, th_gh, ens_objs
    return results


# ---------------------------------------------------------------------------- pre-activation ResNet

#: Entries of the preresnet table: (quantity, index).
#: Report labels of the paper (K0, V4) → the theory results' attributes (K, V).
_THEORY_ATTR = {"K0": "K", "V4": "V"}

PRE_ENTRIES = (
    ("K0", (0, 0)),
    ("K0", (0, 1)),
    ("V4", (0, 0, 0, 0)),
    ("V4", (0, 1, 0, 1)),
    ("K1", (0, 0)),
    ("K1", (0, 1)),
)


def _run_preresnet(spec: ResidualRunSpec, say: Log, progress: bool) -> dict[str, Any]:
    net = spec.net()
    src = {"kernel": spec.kernel} if spec.kernel is not None else {"x": spec.x}
    say(f"theory: {net!r}, T = {net.T:g} (method={spec.method}, closure={spec.closure}, every={spec.every})")
    t0 = time.perf_counter()
    th = preresnet_theory(
        net,
        **src,
        method=spec.method,
        rtol=spec.rtol,
        atol=spec.atol,
        closure=spec.closure,
        every=spec.every,
        quad_order=spec.quad_order,
    )
    t_th = time.perf_counter() - t0
    say(f"theory done in {t_th:.2f} s")
    th_gh, t_gh = None, None
    if spec.paper_gh_order:
        say(f"published scheme: forward Euler, {spec.paper_gh_order}-point Gauss-Hermite")
        t0 = time.perf_counter()
        th_gh = preresnet_theory_gh(net, **src, gh_order=spec.paper_gh_order, every=spec.every, closure=spec.closure)
        t_gh = time.perf_counter() - t0
        say(f"published scheme done in {t_gh:.2f} s")
    N = th.K.shape[1]
    entries_def = [(q, idx) for q, idx in PRE_ENTRIES if max(idx) < N]
    labels = _unique_labels(spec)
    ens_objs, ens_res, entries = [], [], []
    for lab, es in zip(labels, spec.ensembles, strict=True):
        say(
            f"sampling {lab}: {es.networks} networks, backend={es.backend}, sampler={es.sampler}, "
            f"dtype={es.dtype}, groups={es.groups}"
        )
        t0 = time.perf_counter()
        ens = sample_preresnet(
            spec.net(es.width),
            **src,
            networks=es.networks,
            seed=es.seed,
            groups=es.groups,
            every=spec.every,
            batch=es.batch,
            sampler=es.sampler,
            backend=es.backend,
            dtype=es.dtype,
            progress=progress,
        )
        dt = time.perf_counter() - t0
        say(f"sampled {lab} in {dt:.1f} s ({ens.networks / dt:,.0f} networks/s)")
        n = es.width
        rows = []
        for i, (ell, t) in enumerate(zip(th.layers, th.t, strict=True)):
            for q, idx in entries_def:
                row = _pre_row(q, idx, i, n, th, th_gh, ens)
                row.update({"layer": int(ell), "t": float(t), "ensemble": lab, "n": n})
                rows.append(row)
        entries += rows
        ens_objs.append(ens)
        ens_res.append(
            {
                "label": lab,
                "width": n,
                "backend": es.backend,
                "sampler": es.sampler,
                "dtype": es.dtype,
                "networks": ens.networks,
                "groups": es.groups,
                "seed": es.seed,
                "batch": ens.batch,
                "seconds": dt,
                "networks_per_second": ens.networks / dt if dt > 0 else None,
                "summary": _pre_summary(th, th_gh, ens),
            }
        )
    return {
        "network": {
            "activation": spec.activation.to_dict() if not spec.activation.is_custom else str(spec.activation),
            "depth": spec.depth,
            "epsilon": spec.eps,
            "T": net.T,
            "C_W": spec.C_W,
            "C_b": spec.C_b,
        },
        "inputs": {"K0_init": th.K_init, **spec.inputs},
        "theory": {
            "method": spec.method,
            "closure": spec.closure,
            "every": spec.every,
            "rtol": spec.rtol,
            "atol": spec.atol,
            "quad_order": spec.quad_order or 0,
            "seconds": t_th,
            "accepted_steps": th.accepted,
            "rejected_steps": th.rejected,
            "layers": th.layers,
            "t": th.t,
            "paper_gh": None
            if th_gh is None
            else {"gh_order": spec.paper_gh_order, "method": "forward Euler, one step per block", "seconds": t_gh},
        },
        "ensembles": ens_res,
        "entries": entries,
        "_theory": th,
        "_theory_gh": th_gh,
        "_ensembles": ens_objs,
    }


def _pre_row(q: str, idx: tuple[int, ...], i: int, n: int, th: Any, th_gh: Any, ens: Any) -> dict[str, Any]:
    """One (quantity, entry, checkpoint) row: theory (converged, published scheme), sampled, errors."""
    first: float | None
    s_gh: float | None
    if q == "K0":
        samp, se = float(ens.K[i][idx]), float(ens.stderr.K[i][idx])
        first = float(th.K[i][idx] + th.K1[i][idx] / n)
        s_gh = samp
    elif q == "V4":
        samp, se = float(ens.V[i][idx]), float(ens.stderr.V[i][idx])
        first = None
        s_gh = samp
    else:  # K1_mic = n(Ḡ − K0): with the converged K0, and with the published scheme's K0
        samp, se = float(n * (ens.K[i][idx] - th.K[i][idx])), float(n * ens.stderr.K[i][idx])
        first = None
        s_gh = float(n * (ens.K[i][idx] - th_gh.K[i][idx])) if th_gh is not None else None
    attr = _THEORY_ATTR.get(q, q)
    tv = float(getattr(th, attr)[i][idx])
    tg = float(getattr(th_gh, attr)[i][idx]) if th_gh is not None else None
    rel, rel_se = _rel(tv, samp, se)
    rel_gh = _rel(tg, s_gh, se)[0] if tg is not None and s_gh is not None else None
    ref = first if first is not None else tv
    return {
        "quantity": q,
        "index": list(idx),
        "label": _entry_label(q, idx),
        "theory": tv,
        "theory_first_order": first,
        "theory_gh": tg,
        "sampled": samp,
        "stderr": se,
        "sampled_gh": s_gh,
        "rel_error": rel,
        "rel_error_stderr": rel_se,
        "rel_error_gh": rel_gh,
        "z": zscore(ref - samp, se, max(abs(ref), abs(samp))),
    }


def _pre_summary(th: Any, th_gh: Any, ens: Any) -> dict[str, Any]:
    """K0 mean relative error over checkpoints ℓ > 0 and entries a ≤ b; V4 and K1 at T; max |z|."""
    N = th.K.shape[1]
    iu = np.triu_indices(N)
    n = ens.width

    def k0_err(K0: np.ndarray) -> float:
        return float(np.mean(np.abs(ens.K[1:][:, iu[0], iu[1]] / K0[1:][:, iu[0], iu[1]] - 1)))

    with np.errstate(divide="ignore", invalid="ignore"):
        zk = np.abs(ens.K - th.metric()) / ens.stderr.K
        zv = np.abs(ens.V - th.V) / ens.stderr.V
    rel_se = ens.stderr.K[1:][:, iu[0], iu[1]] / np.abs(th.K[1:][:, iu[0], iu[1]])
    dg = np.arange(N)
    out: dict[str, Any] = {
        "K0_mean_rel_error": k0_err(th.K),
        "K0_mean_rel_stderr": float(np.mean(rel_se)),  # pure noise gives a mean |error| of ~0.8 of this
        "K0_mean_rel_error_diagonal": float(np.mean(np.abs(ens.K[1:][:, dg, dg] / th.K[1:][:, dg, dg] - 1))),
        "K0_mean_rel_stderr_diagonal": float(np.mean(ens.stderr.K[1:][:, dg, dg] / np.abs(th.K[1:][:, dg, dg]))),
        "K0_max_z_first_order": float(np.nanmax(np.where(np.isfinite(zk), zk, np.nan)[1:])),
        "V4_max_z": float(np.nanmax(np.where(np.isfinite(zv), zv, np.nan)[1:])),
        "V4_rel_error_at_T": {},
        "K1_at_T": {},
    }
    if th_gh is not None:
        out["K0_mean_rel_error_gh"] = k0_err(th_gh.K)
    for q, idx in PRE_ENTRIES:
        if max(idx) >= N:
            continue
        lab = _entry_label(q, idx)
        if q == "V4":
            r, rs = _rel(float(th.V[-1][idx]), float(ens.V[-1][idx]), float(ens.stderr.V[-1][idx]))
            d = {"theory": float(th.V[-1][idx]), "sampled": float(ens.V[-1][idx]), "rel": r, "rel_stderr": rs}
            if th_gh is not None:
                d["theory_gh"] = float(th_gh.V[-1][idx])
                d["rel_gh"] = _rel(float(th_gh.V[-1][idx]), float(ens.V[-1][idx]), float(ens.stderr.V[-1][idx]))[0]
            out["V4_rel_error_at_T"][lab] = d
        if q == "K1":
            d = {
                "theory": float(th.K1[-1][idx]),
                "sampled": float(n * (ens.K[-1][idx] - th.K[-1][idx])),
                "stderr": float(n * ens.stderr.K[-1][idx]),
            }
            if th_gh is not None:
                d["theory_gh"] = float(th_gh.K1[-1][idx])
                d["sampled_gh"] = float(n * (ens.K[-1][idx] - th_gh.K[-1][idx]))
            out["K1_at_T"][lab] = d
    return out


# ---------------------------------------------------------------------------- residual MLP

#: Entries of the resmlp table.
RES_ENTRIES = (
    ("K", (0, 0)),
    ("K", (0, 1)),
    ("V", (0, 0, 0, 0)),
    ("V", (0, 0, 1, 1)),
    ("S", (0, 0, 0)),
    ("S", (0, 1, 1)),
)


def _run_resmlp(spec: ResidualRunSpec, say: Log, progress: bool) -> dict[str, Any]:
    net = spec.net()
    assert spec.x is not None
    x = spec.x
    say(f"theory: {net!r} on {x.shape[0]} inputs of dimension {x.shape[1]} (order={spec.order})")
    t0 = time.perf_counter()
    th = resmlp_theory(net, x, corrected=spec.corrected, order=spec.order, quad_order=spec.quad_order)
    t_th = time.perf_counter() - t0
    say(f"theory done in {t_th:.2f} s")
    N = x.shape[0]
    labels = _unique_labels(spec)
    ens_objs, ens_res, entries = [], [], []
    for lab, es in zip(labels, spec.ensembles, strict=True):
        say(f"sampling {lab}: {es.networks} networks, backend={es.backend}, groups={es.groups}")
        t0 = time.perf_counter()
        ens = sample_resmlp(
            spec.net(es.width), x, networks=es.networks, seed=es.seed, groups=es.groups, batch=es.batch,
            backend=es.backend, progress=progress,
        )  # fmt: skip
        dt = time.perf_counter() - t0
        say(f"sampled {lab} in {dt:.1f} s ({es.networks / dt:,.0f} networks/s)")
        n = es.width
        zmax: dict[str, list[float | None]] = {}
        for q, idx in RES_ENTRIES:
            tt = getattr(th, q)
            if tt is None or max(idx) >= N:
                continue
            e, s = getattr(ens, q), getattr(ens.stderr, q)
            for li in range(spec.depth):
                lead = float(tt[li][idx])
                first = lead + float(th.K1[li][idx]) / n if q == "K" and th.K1 is not None else None
                samp, se = float(e[li][idx]), float(s[li][idx])
                ref = first if first is not None else lead
                entries.append(
                    {
                        "quantity": q,
                        "index": list(idx),
                        "label": _entry_label(q, idx),
                        "layer": li + 1,
                        "ensemble": lab,
                        "n": n,
                        "theory": lead,
                        "theory_first_order": first,
                        "sampled": samp,
                        "stderr": se,
                        "z": zscore(ref - samp, se, max(abs(ref), abs(samp))),
                        "z_infinite": zscore(lead - samp, se, max(abs(lead), abs(samp))) if q == "K" else None,
                    }
                )
        for q in ("K", "V", "S"):
            tt = getattr(th, q)
            if tt is None:
                continue
            t_all = tt + th.K1 / n if q == "K" and th.K1 is not None else tt
            e, s = getattr(ens, q), getattr(ens.stderr, q)
            zl: list[float | None] = []
            for li in range(spec.depth):
                d = np.abs(t_all[li] - e[li])
                with np.errstate(divide="ignore", invalid="ignore"):
                    zz = np.where(s[li] > 0, d / np.where(s[li] > 0, s[li], 1.0), np.where(d < 1e-12, 0.0, np.inf))
                zl.append(float(zz.max()))
            zmax[q] = zl
        ens_objs.append(ens)
        ens_res.append(
            {
                "label": lab,
                "width": n,
                "backend": es.backend,
                "networks": es.networks,
                "groups": es.groups,
                "seed": es.seed,
                "batch": ens.batch,
                "seconds": dt,
                "networks_per_second": es.networks / dt if dt > 0 else None,
                "max_z_per_layer": zmax,
            }
        )
    return {
        "network": {
            "activation": spec.activation.to_dict() if not spec.activation.is_custom else str(spec.activation),
            "depth": spec.depth,
            "C_b": list(net.C_b),
            "C_W": list(net.C_W),
            "gamma": list(net.gamma),
        },
        "inputs": {"x": x, **spec.inputs},
        "table_layer": spec.layer or spec.depth,
        "theory": {
            "order": spec.order,
            "corrected": spec.corrected,
            "quad_order": spec.quad_order or 0,
            "seconds": t_th,
        },
        "ensembles": ens_res,
        "entries": entries,
        "_theory": th,
        "_theory_gh": None,
        "_ensembles": ens_objs,
    }


# ============================================================================ text table


def _pct(v: float | None, se: float | None = None) -> str:
    if v is None:
        return f"{'—':>15}"
    s = f"{100 * v:+.2f}%"
    if se is not None:
        s += f" ±{100 * se:.2f}"
    return f"{s:>15}"


def format_residual_table(results: dict[str, Any]) -> str:
    """The readable table of a residual report (theory vs sampled, with relative errors)."""
    if results["architecture"] == "preresnet":
        return _format_pre(results)
    return _format_res(results)


def _act_name(net: dict[str, Any]) -> str:
    act = net["activation"]
    if not isinstance(act, dict):
        return str(act)
    return act["name"] + (
        "(" + ", ".join(f"{k}={v:g}" for k, v in act.items() if k != "name") + ")" if len(act) > 1 else ""
    )


def _format_pre(results: dict[str, Any]) -> str:
    net, th = results["network"], results["theory"]
    gh = th.get("paper_gh")
    K = np.asarray(results["inputs"]["K0_init"])
    lines = [
        results["title"],
        f"  pre-activation ResNet, {_act_name(net)}, L = {net['depth']}, ε = {net['epsilon']:g} (T = ε²L = "
        f"{net['T']:g}), C_W = {net['C_W']:g}; {K.shape[0]} inputs, K0(0) diagonal {np.diag(K).tolist()}",
        f"  theory ({th['method']}, closure {th['closure']}, converged quadrature): {th['seconds']:.2f} s"
        + (f";  published scheme (Euler, {gh['gh_order']}-point Gauss–Hermite): {gh['seconds']:.2f} s" if gh else ""),
        "  "
        + ";  ".join(
            f"{e['label']}: {e['networks']} networks ({e['backend']}, {e['sampler']}) in {e['seconds']:.1f} s"
            for e in results["ensembles"]
        ),
        "",
    ]
    ghl = f"GH{gh['gh_order']}" if gh else None
    head = f"{'t':>6} {'entry':<11}{'ensemble':>11} {'theory':>11}" + (f" {ghl:>11}" if gh else "")
    head += f" {'sampled':>11} {'± stderr':>10} {'rel.err ± se':>15}" + (f" {f'rel.err {ghl}':>15}" if gh else "")
    head += f" {'|z|':>7}"
    lines += [head, "-" * len(head)]
    layers = sorted({e["layer"] for e in results["entries"]})
    if len(layers) > 9:  # print at most 9 checkpoints, evenly spaced, first and last included
        layers = [layers[round(i * (len(layers) - 1) / 8)] for i in range(9)]
    for e in results["entries"]:
        if e["layer"] not in layers:
            continue
        row = f"{e['t']:>6.3g} {e['label']:<11}{e['ensemble']:>11} {num(e['theory'])}"
        if gh:
            row += f" {num(e['theory_gh'])}"
        row += f" {num(e['sampled'])} {num(e['stderr'], 10)} {_pct(e['rel_error'], e['rel_error_stderr'])}"
        if gh:
            row += f" {_pct(e['rel_error_gh'])}"
        lines.append(row + f" {zs(e['z'])[1:]}")
    lines += [
        "",
        "rel.err = theory/sampled − 1 (± its standard error).  K0 rows: sampled Ḡ (|z| against K0 + K1/n);",
        "V4 rows: n·Cov(G) (|z| against V4); K1 rows: sampled K1_mic = n(Ḡ − K0) with the converged K0"
        + (f" ({ghl} column: with the {ghl} K0, as the paper did)" if gh else "")
        + ".",
        "",
    ]
    for e in results["ensembles"]:
        s = e["summary"]
        lines.append(
            f"{e['label']}: K0 mean |Ḡ/K0 − 1| over depth and entries a ≤ b = {100 * s['K0_mean_rel_error']:.3f}%"
            + (f" ({ghl}: {100 * s['K0_mean_rel_error_gh']:.3f}%)" if gh else "")
            + f", mean relative stderr {100 * s['K0_mean_rel_stderr']:.3f}%; diagonal "
            f"{100 * s['K0_mean_rel_error_diagonal']:.3f}% (stderr {100 * s['K0_mean_rel_stderr_diagonal']:.3f}%)"
        )
        lines.append(
            f"  max |z| over all entries and checkpoints: K0 + K1/n {s['K0_max_z_first_order']:.1f}, "
            f"V4 {s['V4_max_z']:.1f}"
        )
        for lab, d in s["V4_rel_error_at_T"].items():
            lines.append(
                f"  {lab} at T: theory {d['theory']:.3f} vs sampled {d['sampled']:.3f}: "
                + _pct(d["rel"], d["rel_stderr"]).strip()
                + (f"  ({ghl}: {d['theory_gh']:.3f}, {_pct(d['rel_gh']).strip()})" if gh else "")
            )
        for lab, d in s["K1_at_T"].items():
            lines.append(
                f"  {lab} at T: theory {d['theory']:.3f} vs K1_mic {d['sampled']:.3f} ± {d['stderr']:.3f}"
                + (f"  ({ghl}: theory {d['theory_gh']:.3f} vs K1_mic {d['sampled_gh']:.3f})" if gh else "")
            )
    return "\n".join(lines)


def _format_res(results: dict[str, Any]) -> str:
    net = results["network"]
    layer = results["table_layer"]

    def hp(v: list[float]) -> str:
        return f"{v[0]:.8g}" if len(set(v)) == 1 else str([round(a, 8) for a in v])

    x = np.asarray(results["inputs"]["x"])
    lines = [
        results["title"],
        f"  residual MLP, {_act_name(net)}, depth {net['depth']}, C_b={hp(net['C_b'])}, C_W={hp(net['C_W'])}, "
        f"γ={hp(net['gamma'][1:] or net['gamma'])}; {x.shape[0]} inputs of dimension {x.shape[1]}",
        f"  theory: {results['theory']['seconds']:.2f} s;  "
        + ";  ".join(
            f"{e['label']}: {e['networks']} networks ({e['backend']}) in {e['seconds']:.1f} s"
            for e in results["ensembles"]
        ),
        "",
        f"layer {layer}",
    ]
    head = (
        f"{'entry':<12}{'ensemble':>11} {'theory n=∞':>11} {'theory+1/n':>11} {'sampled':>11} {'± stderr':>10} "
        f"{'rel.err':>9} {'|z|':>8} {'|z| n=∞':>8}"
    )
    lines += [head, "-" * len(head)]
    for e in results["entries"]:
        if e["layer"] != layer:
            continue
        ref = e["theory_first_order"] if e["theory_first_order"] is not None else e["theory"]
        rel = f"{100 * (ref / e['sampled'] - 1):+8.2f}%" if e["sampled"] else f"{'—':>9}"
        lines.append(
            f"{e['label']:<12}{e['ensemble']:>11} {num(e['theory'])} {num(e['theory_first_order'])} "
            f"{num(e['sampled'])} {num(e['stderr'], 10)} {rel} {zs(e['z'])} {zs(e['z_infinite'])}"
        )
    lines += [
        "",
        "K: sampled mean metric against K + K1/n (|z|) and K (|z| n=∞); K1 is approximate for residual nets.",
        "V, S: n × sampled pair estimators against the leading-order theory (O(depth/n) corrections).",
        "",
        "max |z| over all entries, layers 1..L:",
    ]
    for e in results["ensembles"]:
        cells = "  ".join(
            f"{q}: {'/'.join('inf' if v is None or math.isinf(v) else f'{v:.1f}' for v in zl)}"
            for q, zl in e["max_z_per_layer"].items()
        )
        lines.append(f"  {e['label']:<10} {cells}")
    return "\n".join(lines)


# ============================================================================ plots


def _plots(spec: ResidualRunSpec, results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    files: list[str] = []
    entries = results["entries"]
    pre = spec.architecture == "preresnet"
    keys: list[tuple[str, tuple[int, ...]]] = []
    for e in entries:
        key = (e["quantity"], tuple(e["index"]))
        if key not in keys:
            keys.append(key)
    labels = [e["label"] for e in results["ensembles"]]
    ncol = 2 if pre else 3
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.2 * nrow), squeeze=False)
    xkey = "t" if pre else "layer"
    for ax, (q, idx) in zip(axes.flat, keys, strict=False):
        rows0 = [e for e in entries if e["quantity"] == q and tuple(e["index"]) == idx and e["ensemble"] == labels[0]]
        xs = [e[xkey] for e in rows0]
        ax.plot(xs, [e["theory"] for e in rows0], "k-", lw=1.3, label="theory" + (" (converged)" if pre else ""))
        if pre and rows0 and rows0[0]["theory_gh"] is not None:
            gh = results["theory"]["paper_gh"]["gh_order"]
            ax.plot(xs, [e["theory_gh"] for e in rows0], "k--", lw=1.1, label=f"published scheme (GH{gh})")
        for k, lab in enumerate(labels):
            rows = [e for e in entries if e["quantity"] == q and tuple(e["index"]) == idx and e["ensemble"] == lab]
            ax.errorbar(
                [e[xkey] for e in rows],
                [e["sampled"] for e in rows],
                yerr=[e["stderr"] for e in rows],
                fmt="o",
                ms=3.5,
                capsize=2,
                color=colors[k % len(colors)],
                label=f"sampled, {lab}",
            )
        ax.set_title(_entry_label(q, idx) + (" (K1_mic = n(Ḡ − K0))" if q == "K1" else ""))
        ax.set_xlabel("t = ε²ℓ" if pre else "layer ℓ")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{spec.title}: theory vs sampled", fontsize=10)
    save_figure(plt, fig, out, "depth.png", files)
    return files
