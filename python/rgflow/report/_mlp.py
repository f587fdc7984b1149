"""Theory-versus-samples reports: the engine behind ``rgflow demo`` and ``rgflow run``.

A report computes the first-order theory of one MLP on one set of inputs (infinite-width
``K, Theta`` and the 1/n tensors ``K1, Theta1, V, D, F, A, B``), samples ensembles of finite
networks at one or more widths (:func:`rgflow.ensemble.sample`), and writes to a folder

* ``results.json``: the configuration, machine, timings, the comparison rows of
  :func:`rgflow.ensemble.compare` per ensemble, and the representative entries of the table;
* ``theory.npz`` (:meth:`rgflow.Theory.save`) and ``ensemble_<label>.npz`` (every sampled tensor
  and its standard error, ``stderr_<name>``);
* PNG plots (matplotlib, Agg backend, imported only here): ``depth.png`` (theory and samples
  across depth), ``width.png`` (across 1/n at one layer), ``scaling.png`` (1/n scaling:
  ``n (sampled - K_inf)`` against the theory ``K1``, and sampled against theory four-point
  tensors), ``zscores.png`` (largest |z| per tensor and layer).

Conventions: layer-l tensors are normalised by ``n = n_{l-1}``.  The sampled ``K`` and
``Theta`` are the sampled *means* of the metric and the NTK, compared with ``K + K1/n`` and
``Theta + Theta1/n``; the sampled four-point tensors are ``n`` times covariances, compared with
their leading-order theory ``V, D, F, A, B``, which they match up to O(1/n) relative corrections
(of size about ``depth/n``, so at small widths their z-scores grow with the number of networks).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import ensembles
from .._util.validation import check_inputs
from ..recursions import DNTK_TENSORS
from ..recursions import theory as _theory
from ._common import Log, clean, legend_every_line, machine_info, num, pyplot, save_figure, zs, zscore
from ._spec import EnsembleSpec, RunSpec

__all__ = ["EnsembleSpec", "RunSpec", "run_report", "format_table", "REPORT_TENSORS"]

#: Tensors shown in reports, in order; the two-point ones get a 1/n-corrected theory.
REPORT_TENSORS = ("K", "Theta", "V", "D", "F", "A", "B")
_TWO = ("K", "Theta")
_FIRST_ORDER = {"K": "K1", "Theta": "Theta1"}
_LABEL = {"K": "K", "Theta": "Θ", "V": "V", "D": "D", "F": "F", "A": "A", "B": "B", **{t: t for t in DNTK_TENSORS}}
#: Legend labels of the theory lines in depth.png / width.png (one label, one line style).
THEORY_INFINITE = "theory n=∞ (K, Θ)"
THEORY_FIRST = "theory K + K1/n, Θ + Θ1/n"
THEORY_LEADING = "theory, leading order (O(ℓ/n) not computed)"


# ============================================================================ helpers


def representative_indices(N: int) -> dict[str, list[tuple[int, ...]]]:
    """Entries shown in tables and plots: a diagonal and a mixed one per tensor."""
    a, b = 0, min(1, N - 1)
    two: list[tuple[int, ...]] = [(a, a), (a, b)] if b != a else [(a, a)]
    four_pair: list[tuple[int, ...]] = [(a, a, a, a), (a, a, b, b)] if b != a else [(a, a, a, a)]
    four_cross: list[tuple[int, ...]] = [(a, a, a, a), (a, b, a, b)] if b != a else [(a, a, a, a)]
    return {
        "K": two,
        "Theta": two,
        "V": four_pair,
        "D": four_pair,
        "A": four_pair,
        "F": four_cross,
        "B": four_cross,
    }


def _ens_label(spec: RunSpec, es: EnsembleSpec, multi_backend: bool) -> str:
    hw = es.hidden_widths(spec.depth)
    lab = f"n={hw[0]}" if len(set(hw)) <= 1 and hw else f"n={'-'.join(str(w) for w in hw) or '-'}"
    return f"{lab} {es.backend}" if multi_backend else lab


def _fmt_entry(name: str, idx: tuple[int, ...]) -> str:
    sym = _LABEL[name]
    if len(idx) == 2:
        return f"{sym}[{idx[0]},{idx[1]}]"
    if name in ("V", "A"):
        return f"{sym}[({idx[0]}{idx[1]})({idx[2]}{idx[3]})]"
    return f"{sym}[{idx[0]}{idx[1]}{idx[2]}{idx[3]}]"


def run_report(
    spec: RunSpec,
    out: str | Path | None,
    *,
    plots: bool = True,
    progress: bool = True,
    log: TextIO | None = sys.stderr,
    command: str | None = None,
) -> dict[str, Any]:
    """Compute theory and ensembles for ``spec``, write the report folder ``out`` (None: write nothing).

    Returns the results dictionary (as written to ``results.json``), with two extra keys not
    written to disk: ``"_theory"`` (the :class:`~rgflow.Theory`) and ``"_ensembles"`` (the
    :class:`~rgflow.ensemble.Ensemble` objects).
    """

    say = Log(log)
    t_start = time.perf_counter()
    x = check_inputs(spec.x)
    N = x.shape[0]
    if not spec.ensembles:
        raise ValueError("a report needs at least one ensemble (a width to sample)")
    layer = spec.layer if spec.layer is not None else spec.depth
    if not 1 <= layer <= spec.depth:
        raise ValueError(f"report layer {layer} is outside 1..{spec.depth}")
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ theory
    net0 = spec.net()
    say(f"theory: {net0!r} on {N} inputs of dimension {x.shape[1]} (order={spec.order}, ntk={spec.ntk})")
    t0 = time.perf_counter()
    if spec.dntk and not (spec.ntk and spec.order == 1):
        raise ValueError("theory.dntk = true needs theory.ntk = true and theory.order = 1")
    th = _theory(
        net0, x, ntk=spec.ntk, order=spec.order, quad_order=spec.quad_order, expectations=spec.method, dntk=spec.dntk
    )
    t_theory = time.perf_counter() - t0
    say(f"theory done in {t_theory:.2f} s")

    # ------------------------------------------------------------ ensembles
    multi_backend = len({e.backend for e in spec.ensembles}) > 1
    labels = []
    for es in spec.ensembles:
        lab = _ens_label(spec, es, multi_backend)
        k = 2
        base = lab
        while lab in labels:  # the same width and backend twice: make labels unique
            lab = f"{base} #{k}"
            k += 1
        labels.append(lab)
    ens_objs: list[ensembles.Ensemble] = []
    ens_results: list[dict[str, Any]] = []
    for lab, es in zip(labels, spec.ensembles, strict=True):
        net = spec.net(es)
        why_not = _dntk_unsampled(net, es.backend) if spec.dntk else None
        sample_dntk = spec.dntk and why_not is None
        if spec.dntk and why_not:
            say(f"{lab}: the dNTK family is theory only ({why_not})")
        say(
            f"sampling {lab}: {es.networks} networks, backend={es.backend}, dtype={es.dtype}, groups={es.groups}"
            + (", with the dNTK family P..U" if sample_dntk else "")
        )
        t0 = time.perf_counter()
        ens = ensembles.sample_mlp(
            net,
            x,
            networks=es.networks,
            seed=es.seed,
            backend=es.backend,
            batch=es.batch,
            dtype=es.dtype,
            theory=th,
            groups=es.groups,
            progress=progress,
            ntk=spec.ntk,
            estimator=es.estimator,
            dntk=sample_dntk,
        )
        dt = time.perf_counter() - t0
        say(f"sampled {lab} in {dt:.1f} s ({es.networks / dt:,.0f} networks/s)")
        rows = ensembles.compare(th, ens)
        ens_objs.append(ens)
        ens_results.append(
            {
                "label": lab,
                "hidden_widths": es.hidden_widths(spec.depth),
                "normalisation_widths": list(ens.widths),
                "backend": es.backend,
                "dtype": es.dtype,
                "estimator": es.estimator,
                "networks": es.networks,
                "groups": es.groups,
                "seed": es.seed,
                "batch": ens.batch,
                "seconds": dt,
                "networks_per_second": es.networks / dt if dt > 0 else None,
                "dntk_sampled": sample_dntk,
                "comparison": [
                    {
                        "tensor": r.tensor,
                        "layer": r.layer,
                        "z": r.z,
                        "rel_error": r.rel_error,
                        "max_abs_diff": r.max_abs_diff,
                        "max_abs_theory": r.max_abs_theory,
                        "worst_index": list(r.worst_index),
                        "leading_order": r.leading_order,
                        "remainder": r.remainder,
                        "z_eff": r.z_eff,
                        "verdict": r.verdict,
                    }
                    for r in rows
                ],
            }
        )

    entries = _entries(th, ens_objs, labels, N)
    results: dict[str, Any] = {
        "title": spec.title,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "config": spec.config,
        "network": {k: v for k, v in net0.to_dict().items() if k not in ("widths", "out_width")},
        "inputs": {"x": x, **spec.inputs},
        "table_layer": layer,
        "theory": {
            "file": "theory.npz" if out_path is not None else None,
            "order": spec.order,
            "ntk": spec.ntk,
            "dntk": spec.dntk,
            "quad_order": spec.quad_order,
            "expectations": spec.method,
            "seconds": t_theory,
            "tensors": list(th.tensors()),
        },
        "ensembles": ens_results,
        "entries": entries,
        "dntk": _dntk_entries(th, N, ens_objs, labels),
        "machine": machine_info(),
        "plots": [],
    }

    # ------------------------------------------------------------ files
    if out_path is not None:
        th.save(out_path / "theory.npz")
        for er, ens in zip(ens_results, ens_objs, strict=True):
            fname = "ensemble_" + "".join(c if c.isalnum() else "_" for c in er["label"]).strip("_") + ".npz"
            arrays: dict[str, np.ndarray] = {"x": x, "widths": np.array(ens.widths), **ens.tensors()}
            for name in ens.tensors():
                se = getattr(ens.stderr, name, None)
                if se is not None:
                    arrays[f"stderr_{name}"] = se
            np.savez_compressed(out_path / fname, allow_pickle=False, **arrays)
            er["file"] = fname
        if plots:
            say("plotting")
            t0 = time.perf_counter()
            results["plots"] = make_plots(th, ens_objs, labels, entries, layer, out_path, spec.title)
            say(f"plots done in {time.perf_counter() - t0:.1f} s")
    results["total_seconds"] = time.perf_counter() - t_start
    if out_path is not None:
        with open(out_path / "results.json", "w", encoding="utf-8") as fh:
            json.dump(clean(results), fh, indent=1, allow_nan=False)
            fh.write("\n")
        say(f"report written to {out_path}/ (results.json{', plots' if results['plots'] else ''})")
    results["_theory"] = th
    results["_ensembles"] = ens_objs
    return results


#: Representative sample patterns of the dNTK tables: one input, two inputs in each pairing.
_DNTK_PATTERNS = ((0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0), (1, 0, 0, 0))


def _dntk_unsampled(net: Any, backend: str) -> str | None:
    """Why the ensembles cannot sample P..U for ``net`` (None: they can; :func:`rgflow.sample` with dntk=True)."""
    act = net.activation
    if act.kinked:
        return f"{act.name} is kinked: the sampled second derivatives miss the kink's delta functions"
    if act.is_custom and len(act.derivatives) < 3 and backend == "numpy":
        return "a custom activation without its first three derivatives, on the numpy backend"
    return None


def _dntk_entries(th: Any, N: int, ens_objs: Sequence[Any] = (), labels: Sequence[str] = ()) -> list[dict[str, Any]]:
    """P, Q, R, S, T, U at representative entries, every layer (empty without dntk): the theory and,
    per ensemble that sampled them, ``sampled`` ± ``stderr`` and |z| (leading-order theory)."""
    out: list[dict[str, Any]] = []
    pats = [p for p in _DNTK_PATTERNS if max(p) < N]
    for name in DNTK_TENSORS:
        t = getattr(th, name, None)
        if t is None:
            continue
        for idx in pats:
            for li in range(t.shape[0]):
                v = float(t[li][idx])
                row: dict[str, Any] = {
                    "tensor": name,
                    "index": list(idx),
                    "layer": li + 1,
                    "theory": None if math.isnan(v) else v,
                    "sampled": [],
                }
                for lab, ens in zip(labels, ens_objs, strict=True):
                    e, s = getattr(ens, name, None), getattr(ens.stderr, name, None)
                    if e is None or s is None:
                        continue
                    samp, se = float(e[li][idx]), float(s[li][idx])
                    z = None if math.isnan(v) else zscore(v - samp, se, max(abs(v), abs(samp)))
                    row["sampled"].append(
                        {"ensemble": lab, "n": int(ens.widths[li]), "value": samp, "stderr": se, "z": z}
                    )
                out.append(row)
    return out


def _entries(th: Any, ens_objs: Sequence[Any], labels: Sequence[str], N: int) -> list[dict[str, Any]]:
    """Representative entries at every layer for every ensemble (theory, sampled, stderr, z)."""
    out = []
    idxs = representative_indices(N)
    for name in REPORT_TENSORS:
        tt = getattr(th, name, None)
        if tt is None:
            continue
        corr = getattr(th, _FIRST_ORDER[name], None) if name in _TWO else None
        for idx in idxs[name]:
            for lab, ens in zip(labels, ens_objs, strict=True):
                e = getattr(ens, name, None)
                s = getattr(ens.stderr, name, None)
                if e is None or s is None:
                    continue
                for li in range(tt.shape[0]):
                    n = float(ens.widths[li])
                    lead = float(tt[li][idx])
                    first = lead + float(corr[li][idx]) / n if corr is not None else None
                    samp, se = float(e[li][idx]), float(s[li][idx])
                    ref = first if first is not None else lead
                    scale = max(abs(ref), abs(samp))
                    out.append(
                        {
                            "tensor": name,
                            "index": list(idx),
                            "label": _fmt_entry(name, idx),
                            "layer": li + 1,
                            "ensemble": lab,
                            "n": int(n),
                            "theory_infinite": lead,
                            "theory_first_order": first,
                            "sampled": samp,
                            "stderr": se,
                            "z": zscore(ref - samp, se, scale),
                            "z_infinite": zscore(lead - samp, se, scale) if name in _TWO else None,
                            "extrapolated": False,
                        }
                    )
            out.extend(_extrapolate(out, name, idx, tt))
    return out


#: Ensemble label of the n -> infinity fit rows.
FIT_LABEL = "n→∞ fit"


def _extrapolate(
    entries: list[dict[str, Any]], name: str, idx: tuple[int, ...], tt: np.ndarray
) -> list[dict[str, Any]]:
    """Weighted least-squares fit ``a + b/n`` over the sampled widths, per layer (Richardson for two widths).

    The intercept ``a`` removes the O(1/n) part: it estimates the infinite-width K, Theta and the
    leading-order four-point tensors, up to O(1/n^2).
    """
    rows = []
    for li in range(tt.shape[0]):
        pts = [
            e
            for e in entries
            if e["tensor"] == name
            and tuple(e["index"]) == tuple(idx)
            and e["layer"] == li + 1
            and not e["extrapolated"]
        ]
        ns = np.array([e["n"] for e in pts], dtype=float)
        if len(set(ns.tolist())) < 2:
            continue
        y = np.array([e["sampled"] for e in pts])
        s = np.array([e["stderr"] for e in pts])
        if np.any(s <= 0):
            continue  # exact values (layer 1): nothing to extrapolate
        X = np.stack([np.ones_like(ns), 1.0 / ns], axis=1)
        w = 1.0 / s**2
        cov = np.linalg.inv(X.T @ (X * w[:, None]))
        a, b = cov @ (X.T @ (w * y))
        se = float(np.sqrt(cov[0, 0]))
        lead = float(tt[li][idx])
        rows.append(
            {
                "tensor": name,
                "index": list(idx),
                "label": _fmt_entry(name, idx),
                "layer": li + 1,
                "ensemble": FIT_LABEL,
                "n": None,
                "theory_infinite": lead,
                "theory_first_order": None,
                "sampled": float(a),
                "stderr": se,
                "slope": float(b),
                "z": zscore(lead - float(a), se, max(abs(lead), abs(float(a)))),
                "z_infinite": None,
                "extrapolated": True,
            }
        )
    return rows


# ============================================================================ text table


def format_table(results: dict[str, Any], layer: int | None = None) -> str:
    """The readable table of representative entries at one layer (default: the report's layer)."""
    layer = layer if layer is not None else results["table_layer"]
    rows = [e for e in results["entries"] if e["layer"] == layer]
    net = results["network"]
    act = net["activation"]
    act_s = act["name"] + (
        "(" + ", ".join(f"{k}={v:g}" for k, v in act.items() if k != "name") + ")" if len(act) > 1 else ""
    )

    def hp(key: str) -> str:
        vals = net[key]
        return f"{vals[0]:.8g}" if len(set(vals)) == 1 else str([round(v, 8) for v in vals])

    x = np.asarray(results["inputs"]["x"])
    lines = [
        results["title"],
        f"  {act_s} MLP, depth {net['depth']}, C_b={hp('C_b')}, C_W={hp('C_W')}, "
        f"λ_b={hp('lambda_b')}, λ_W={hp('lambda_W')}; {x.shape[0]} inputs of dimension {x.shape[1]}",
        f"  theory: {results['theory']['seconds']:.2f} s;  "
        + ";  ".join(
            f"{e['label']}: {e['networks']} networks ({e['backend']}) in {e['seconds']:.1f} s"
            for e in results["ensembles"]
        ),
        "",
        f"layer {layer} (n = n_{layer - 1}, the width feeding layer {layer})",
    ]
    head = (
        f"{'entry':<16}{'ensemble':>10} {'theory n=∞':>11} {'theory+1/n':>11} {'sampled':>11} "
        f"{'± stderr':>10} {'|z|':>8} {'|z| n=∞':>8}"
    )
    lines += [head, "-" * len(head)]
    for e in rows:
        lines.append(
            f"{e['label']:<16}{e['ensemble']:>10} {num(e['theory_infinite'])} {num(e['theory_first_order'])} "
            f"{num(e['sampled'])} {num(e['stderr'], 10)} {zs(e['z'])} {zs(e['z_infinite'])}"
        )
    lines += [
        "",
        "K, Θ: sampled means of the metric and the NTK against K + K1/n (|z|) and K (|z| n=∞).",
        "V, D, F, A, B: n × sampled covariances against the leading-order theory; they differ by O(ℓ/n)",
        "relative corrections (not computed), so at small n their |z| grows with the number of networks.",
        f"{FIT_LABEL}: weighted least-squares fit a + b/n over the sampled widths (Richardson extrapolation for",
        "two widths); its intercept a removes the O(1/n) part and is compared with the theory at n=∞.",
    ]
    # largest z per tensor over layers, per ensemble
    lines += ["", "max |z| over all entries, per tensor and layer (LO: leading-order theory, z_eff in brackets):"]
    tens = ("K", "Theta", "V", "D", "F", "A", "B", *DNTK_TENSORS)
    flagged = checks = 0
    for er in results["ensembles"]:
        by: dict[str, list[str]] = {}
        lo: set[str] = set()
        for r in er["comparison"]:
            if r["layer"] < 2 or r["tensor"] in ("K1", "Theta1"):
                continue  # layer 1 is exact; K1/Theta1 rows repeat K/Theta
            z, ze = r["z"], r.get("z_eff")
            cell = "inf" if z is None or math.isinf(z) else f"{z:.1f}"
            if r.get("leading_order"):
                lo.add(r["tensor"])
                if z is None or z > 3:
                    cell += "(" + ("inf" if ze is None or math.isinf(ze) else f"{ze:.1f}") + ")"
            flagged += r.get("verdict") == "ok*"
            checks += r.get("verdict") == "CHECK"
            by.setdefault(r["tensor"], []).append(cell)
        cells = "  ".join(f"{t}{' LO' if t in lo else ''}: {'/'.join(by[t])}" for t in tens if t in by)
        lines.append(f"  {er['label']:<10} (layers 2..{net['depth']})  {cells}")
    lines += [
        "LO: leading-order theory; its O(1/n) correction, of relative size r = V/(nK²) of the layer below (~ ℓ/n at",
        "criticality), is not computed.  z_eff = |Δ|/sqrt(stderr² + (r·max|T|)²) adds that expected remainder to the",
        "standard error: z_eff <= 3 is consistent (each value is a maximum over the entries of a layer, so a few",
        "values between 3 and 4 are expected by chance alone).",
        f"  {flagged} rows have |z| > 3 but are consistent within the O(ℓ/n) remainder (not failures); "
        f"{checks} have z_eff > 3.",
    ]
    dn = [e for e in results.get("dntk", []) if e["layer"] == layer]
    if dn:
        pats = sorted({tuple(e["index"]) for e in dn})
        sampled = any(e.get("sampled") for e in dn)
        what = "theory (leading order) and sampled ± stderr (|z|)" if sampled else "theory"
        lines += [
            "",
            f"dNTK family at layer {layer} ({what}, each multiplying 1/n_{layer - 1}; docs/spec/dntk.md §1.3):",
        ]
        head = f"{'tensor':<8}{'':>10}" + "".join(f"{'[' + ','.join(map(str, p)) + ']':>14}" for p in pats)
        lines += [head, "-" * len(head)]
        for name in DNTK_TENSORS:
            by_pat = {tuple(e["index"]): e for e in dn if e["tensor"] == name}
            if not by_pat:
                continue
            cells = "".join(
                f"{'n/a' if by_pat[p]['theory'] is None else format(by_pat[p]['theory'], '.6g'):>14}" for p in pats
            )
            lines.append(f"{name:<8}{'theory':>10}{cells}")
            for er in results["ensembles"]:
                got = {p: _sampled_in(by_pat[p], er["label"]) for p in pats}
                if not any(got.values()):
                    continue
                lines.append(f"{'':<8}{er['label']:>10}" + "".join(_cell(got[p], "value") for p in pats))
                lines.append(f"{'':<8}{'±':>10}" + "".join(_cell(got[p], "pm") for p in pats))
        if sampled:
            lines.append(
                "P..U theory is leading order in 1/n: at small n and large depth their |z| grows with the number of"
            )
            lines.append("networks; see their z_eff (the expected O(ℓ/n) remainder) in the summary above.")
        if any(e["theory"] is None for e in dn):
            lines.append("n/a: not defined for kinked activations (PDLT (∞.39)-(∞.44)).")
    return "\n".join(lines)


def _sampled_in(row: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((s for s in row.get("sampled", []) if s["ensemble"] == label), None)


def _cell(s: dict[str, Any] | None, what: str) -> str:
    if s is None:
        return f"{'—':>14}"
    if what == "value":
        return f"{s['value']:>14.6g}"
    z = s["z"]
    return f"{'±' + format(s['stderr'], '.2g') + ' (' + ('—' if z is None else f'{z:.1f}') + ')':>14}"


# ============================================================================ plots


def make_plots(
    th: Any,
    ens_objs: Sequence[Any],
    labels: Sequence[str],
    entries: Sequence[dict[str, Any]],
    layer: int,
    out: Path,
    title: str,
) -> list[str]:
    """Write depth.png, width.png, scaling.png and zscores.png into ``out``; return the file names."""
    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    L = th.depth
    files: list[str] = []
    # panels: the representative entries (first two of K, Theta; first of each four-point tensor)
    N = th.n_inputs
    idxs = representative_indices(N)
    panels = [(n, i) for n in _TWO for i in idxs[n]] + [(n, idxs[n][0]) for n in ("V", "D", "F", "A", "B")]
    panels = [(n, i) for n, i in panels if getattr(th, n, None) is not None]
    ne = len(ens_objs)

    def ent(name: str, idx: tuple[int, ...], lab: str) -> list[dict[str, Any]]:
        return sorted(
            (e for e in entries if e["tensor"] == name and tuple(e["index"]) == tuple(idx) and e["ensemble"] == lab),
            key=lambda e: e["layer"],
        )

    ncol = 3 if len(panels) > 4 else 2
    nrow = math.ceil(len(panels) / ncol)

    # ------------------------------------------------------------ depth
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    layers = np.arange(1, L + 1)
    for ax, (name, idx) in zip(axes.flat, panels, strict=False):
        lead = getattr(th, name)[(slice(None), *idx)]
        if name in _TWO:
            ax.plot(layers, lead, "k--", lw=1.2, label=THEORY_INFINITE)
        else:
            ax.plot(layers, lead, "k-.", lw=1.2, label=THEORY_LEADING)
        for k, lab in enumerate(labels):
            es = ent(name, idx, lab)
            if not es:
                continue
            c = colors[k % len(colors)]
            ls = np.array([e["layer"] for e in es], dtype=float)
            if name in _TWO and es[0]["theory_first_order"] is not None:
                ax.plot(ls, [e["theory_first_order"] for e in es], "-", color=c, lw=1.2, label=f"theory+1/n, {lab}")
            off = (k - (ne - 1) / 2) * 0.08
            ax.errorbar(
                ls + off,
                [e["sampled"] for e in es],
                yerr=[e["stderr"] for e in es],
                fmt="o",
                ms=3.5,
                color=c,
                capsize=2,
                label=f"sampled, {lab}",
            )
        fit = ent(name, idx, FIT_LABEL)
        if fit:
            ax.errorbar(
                [e["layer"] + (ne / 2 + 0.5) * 0.08 for e in fit],
                [e["sampled"] for e in fit],
                yerr=[e["stderr"] for e in fit],
                fmt="s",
                ms=4,
                mfc="none",
                color="k",
                capsize=2,
                label=FIT_LABEL,
            )
        ax.set_title(_fmt_entry(name, idx))
        ax.set_xlabel("layer ℓ")
        ax.set_xticks(layers)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    legend_every_line(axes.flat, fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: theory vs sampled across depth", fontsize=10)
    save_figure(plt, fig, out, "depth.png", files)

    # ------------------------------------------------------------ width (1/n at the report layer)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    inv = [1.0 / ens.widths[layer - 1] for ens in ens_objs]
    xmax = 1.15 * max(inv)
    grid = np.linspace(0.0, xmax, 50)
    for ax, (name, idx) in zip(axes.flat, panels, strict=False):
        lead = float(getattr(th, name)[(layer - 1, *idx)])
        if name in _TWO and getattr(th, _FIRST_ORDER[name], None) is not None:
            c1 = float(getattr(th, _FIRST_ORDER[name])[(layer - 1, *idx)])
            ax.plot(grid, lead + c1 * grid, "k-", lw=1.2, label=THEORY_FIRST)
        else:
            lab0 = THEORY_LEADING if name not in _TWO else THEORY_INFINITE
            ax.plot(grid, np.full_like(grid, lead), "k-." if name not in _TWO else "k--", lw=1.2, label=lab0)
        for k, lab in enumerate(labels):
            es = [e for e in ent(name, idx, lab) if e["layer"] == layer]
            if not es:
                continue
            ax.errorbar(
                [1.0 / es[0]["n"]],
                [es[0]["sampled"]],
                yerr=[es[0]["stderr"]],
                fmt="o",
                ms=4,
                color=colors[k % len(colors)],
                capsize=2,
                label=f"sampled, {lab}",
            )
        fit = [e for e in ent(name, idx, FIT_LABEL) if e["layer"] == layer]
        if fit:
            ax.plot(grid, fit[0]["sampled"] + fit[0]["slope"] * grid, ":", color="0.4", lw=1, label="fit a + b/n")
            ax.errorbar(
                [0.0],
                [fit[0]["sampled"]],
                yerr=[fit[0]["stderr"]],
                fmt="s",
                ms=4,
                mfc="none",
                color="k",
                capsize=2,
                label=FIT_LABEL,
                clip_on=False,
            )
        ax.set_title(f"{_fmt_entry(name, idx)}, layer {layer}")
        ax.set_xlabel(f"1/n_{layer - 1}")
        ax.set_xlim(0, xmax)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    legend_every_line(axes.flat, fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: theory vs sampled across width", fontsize=10)
    save_figure(plt, fig, out, "width.png", files)

    # ------------------------------------------------------------ 1/n scaling
    sc_panels = [n for n in ("K1", "Theta1") if getattr(th, n, None) is not None]
    four = [n for n in ("V", "D", "F", "A", "B") if getattr(th, n, None) is not None]
    npan = len(sc_panels) + (1 if four else 0)
    if npan:
        fig, axes = plt.subplots(1, npan, figsize=(4.6 * npan, 4.2), squeeze=False)
        iu = np.triu_indices(N)
        for ax, name in zip(axes.flat, sc_panels, strict=False):
            t = getattr(th, name)
            lo, hi = np.inf, -np.inf
            for k, (lab, ens) in enumerate(zip(labels, ens_objs, strict=True)):
                e, s = getattr(ens, name, None), getattr(ens.stderr, name, None)
                if e is None or s is None:
                    continue
                tv = np.concatenate([t[li][iu] for li in range(1, L)]) if L > 1 else np.zeros(0)
                ev = np.concatenate([e[li][iu] for li in range(1, L)]) if L > 1 else np.zeros(0)
                sv = np.concatenate([s[li][iu] for li in range(1, L)]) if L > 1 else np.zeros(0)
                if tv.size == 0:
                    continue
                ax.errorbar(
                    tv,
                    ev,
                    yerr=sv,
                    fmt="o",
                    ms=3,
                    color=colors[k % len(colors)],
                    capsize=1.5,
                    alpha=0.8,
                    label=f"{lab}",
                )
                lo, hi = min(lo, tv.min(), ev.min()), max(hi, tv.max(), ev.max())
            if np.isfinite(lo):
                pad = 0.05 * (hi - lo + 1e-12)
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=1, label="y = x")
            base = "K" if name == "K1" else "Θ"
            ax.set_xlabel(f"theory {base}1 (layers 2..{L}, all entries)")
            ax.set_ylabel(f"n·(sampled mean − {base}∞)")
            ax.set_title(f"1/n scaling of the mean {'metric' if base == 'K' else 'NTK'}")
            ax.legend(fontsize=7)
        if four:
            ax = axes.flat[len(sc_panels)]
            lo, hi = np.inf, -np.inf
            rng = np.random.default_rng(0)
            for k, (lab, ens) in enumerate(zip(labels, ens_objs, strict=True)):
                tparts: list[np.ndarray] = []
                eparts: list[np.ndarray] = []
                for name in four:
                    e = getattr(ens, name, None)
                    if e is None or L < 2:
                        continue
                    tparts.append(getattr(th, name)[1:].ravel())
                    eparts.append(e[1:].ravel())
                if not tparts:
                    continue
                tvv, evv = np.concatenate(tparts), np.concatenate(eparts)
                if tvv.size > 3000:
                    keep = rng.choice(tvv.size, 3000, replace=False)
                    tvv, evv = tvv[keep], evv[keep]
                ax.plot(tvv, evv, "o", ms=2, alpha=0.5, color=colors[k % len(colors)], label=lab)
                lo, hi = min(lo, tvv.min(), evv.min()), max(hi, tvv.max(), evv.max())
            if np.isfinite(lo):
                ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="y = x")
            ax.set_xlabel(f"theory ({', '.join(four)}), layers 2..{L}")
            ax.set_ylabel("sampled n·covariance")
            ax.set_title("four-point tensors (deviation is O(1/n))")
            ax.legend(fontsize=7)
        fig.suptitle(f"{title}: 1/n scaling", fontsize=10)
        save_figure(plt, fig, out, "scaling.png", files)

    # ------------------------------------------------------------ z-scores
    compare = ensembles.compare

    tens = [n for n in ("K", "Theta", "V", "D", "F", "A", "B", *DNTK_TENSORS) if getattr(th, n, None) is not None]
    tens = [n for n in tens if any(getattr(ens, n, None) is not None for ens in ens_objs)]
    if L > 1 and tens:
        fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.6 * len(tens) * (L - 1) + 1.5)), 3.8))
        width = 0.8 / max(1, ne)
        xt, xl = [], []
        pos = 0.0
        centers = {}
        for name in tens:
            for li in range(2, L + 1):
                centers[(name, li)] = pos
                xt.append(pos)
                xl.append(f"{_LABEL[name]}{li}")
                pos += 1
            pos += 0.6
        any_lo = False
        for k, (lab, ens) in enumerate(zip(labels, ens_objs, strict=True)):
            rows = [r for r in compare(th, ens, tens) if r.layer >= 2]
            c = colors[k % len(colors)]
            for lo in (False, True):
                sel = [r for r in rows if r.leading_order == lo]
                if not sel:
                    continue
                xs = [centers[(r.tensor, r.layer)] + (k - (ne - 1) / 2) * width for r in sel]
                zz = [min(r.z, 1e6) if math.isfinite(r.z) else 1e6 for r in sel]
                kw: dict[str, Any] = {"hatch": "////", "edgecolor": "w", "alpha": 0.55} if lo else {}
                ax.bar(
                    xs,
                    np.maximum(zz, 1e-2),
                    width=width,
                    color=c,
                    label=f"{lab}{', leading order' if lo else ''}",
                    **kw,
                )
                if lo:
                    any_lo = True
                    ze = [min(r.z_eff, 1e6) if math.isfinite(r.z_eff) else 1e6 for r in sel]
                    ax.plot(xs, np.maximum(ze, 1e-2), "_", ms=9, mew=2, color="k")
        ax.axhline(3.0, color="k", lw=0.8, ls="--", label="|z| = 3")
        if any_lo:
            ax.plot([], [], "_", ms=9, mew=2, color="k", label="z_eff: stderr ⊕ expected O(ℓ/n) remainder")
        ax.set_yscale("log")
        ax.set_xticks(xt)
        ax.set_xticklabels(xl, fontsize=7, rotation=90)
        ax.set_ylabel("max |theory − sampled| / stderr")
        ax.set_title(
            f"{title}: largest |z| per tensor and layer\n"
            "hatched: leading-order theory, its O(ℓ/n) correction not computed (|z| > 3 expected at small n)\n"
            "black ticks: z_eff, with the expected remainder added to the stderr (z_eff ≤ 3: consistent)",
            fontsize=8,
        )
        ax.legend(fontsize=7)
        save_figure(plt, fig, out, "zscores.png", files)
    return files
