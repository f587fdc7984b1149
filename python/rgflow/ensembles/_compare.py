"""Theory against sampled networks: one row per (tensor, layer) with the largest |z|.

Each row also says whether its theory is leading order only and estimates the size of the
remainder it leaves (issue 17): the sampled four-point tensors are ``n`` times covariances whose
1/n expansion starts with the leading-order V, D, F, A, B (P, Q, R, S, T, U); their O(1/n)
corrections are not computed, so at small width and large depth |z| grows with the number of
networks although the theory is right.  The size of that remainder is estimated with the
expansion parameter of the effective theory, the normalised vertex (PDLT (5.128)-(5.131)),

    r^(l) = max_a V^(l)_{(aa)(aa)} / (n_{l-1} (K^(l)_aa)^2)      (~ nu l/n at criticality),

as ``|remainder| ~ c r^(l-1) max|T^(l)|`` for a leading-order tensor T at layer l (c = 1 but for A) and
``|remainder| ~ r^(l-1) max|T1^(l)|/n`` for the first-order means K + K1/n, Θ + Θ1/n (the next
term, again one power of r smaller).  The previous layer's r is used because layers 1 and 2 are
exact at any width (``docs/spec/preactivations.md`` §0, ``docs/spec/dntk.md`` §4: V^(1) = 0 gives
r^(1) = 0).  For deep linear networks, where the next term is known exactly ((3.28): relative
(l-2)/n), the estimate 2(l-2)/n is twice the true size.  Sampled networks (tanh at criticality and
at C_W = 1.5, ReLU at criticality; depth 3-6, n = 8 and 16, 8000-20 000 networks; issue 17)
gave relative remainders of 0.1-1.1 times the estimate for V, D, F, B, but 2.3-5 times for A
(the NTK variance) with tanh: A's estimate carries a factor 4 (``REMAINDER_C``).  The
residual architectures use the same layer's r (their layer 2 is not exact).  The dNTK family P..U
has larger corrections than r suggests: ``docs/spec/dntk.md`` §7.2 measured relative remainders
c (l-2)/n with c ~ 2-4 (largest for U), so their estimate is ``4 (l-2)/n_{l-1} max|T|``.  ``z_eff`` adds the
estimate to the standard error in quadrature; ``z_eff <= 3`` reads "consistent within the
expected O(1/n) remainder".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util.validation import check_names
from ..models import check_same_origin
from ..recursions import DNTK_TENSORS, THEORY_TENSORS, DepthMuPTheory, PreResTheory, ResTheory, Theory
from ._results import (
    DepthMuPEnsemble,
    Ensemble,
    PreResEnsemble,
    ResEnsemble,
    theory_kernel,
    theory_vertex,
)


@dataclass(frozen=True)
class ComparisonRow:
    """One (tensor, layer) line of :func:`compare`.

    z: max over entries of |theory - sampled| / stderr (entries with zero stderr count only if
       they differ, then z = inf).
    rel_error: max |theory - sampled| / max |theory| (nan when the theory is identically 0 and
       the sample is not).
    leading_order: the theory of this row is leading order only (V, D, F, A, B, P..U, K1,
       Theta1; K, Theta without their 1/n correction): its O(1/n) correction is not computed.
    remainder: the estimated size of the theory's remainder at this layer (module docstring).
    z_eff: max over entries of |theory - sampled| / sqrt(stderr^2 + remainder^2).
    """

    tensor: str
    layer: int
    z: float
    rel_error: float
    max_abs_diff: float
    max_abs_theory: float
    worst_index: tuple[int, ...]
    leading_order: bool = False
    remainder: float = 0.0
    z_eff: float = float("nan")

    @property
    def verdict(self) -> str:
        """``"ok"`` (|z| <= 3), ``"ok*"`` (|z| > 3 but within the expected remainder: z_eff <= 3) or ``"CHECK"``."""
        if self.z <= 3.0:
            return "ok"
        return "ok*" if self.z_eff <= 3.0 else "CHECK"

    def __iter__(self):
        return iter((self.tensor, self.layer, self.z, self.rel_error))


class Comparison(list):
    """A list of :class:`ComparisonRow` with a readable table as ``str``."""

    def max_z(self, tensor: str | None = None) -> float:
        zs = [r.z for r in self if tensor is None or r.tensor == tensor]
        return max(zs) if zs else 0.0

    def __str__(self) -> str:
        head = (
            f"{'tensor':<7}{'layer':>5}  {'theory':>6}  {'max|Δ|/σ':>9}  {'rel.err':>9}  {'max|Δ|':>10}  "
            f"{'max|th|':>10}  {'~remainder':>10}  {'z_eff':>7}  {'':<5}  worst"
        )
        lines = [head, "-" * len(head)]
        for r in self:
            rel = "-" if math.isnan(r.rel_error) else f"{r.rel_error:9.2e}"
            lines.append(
                f"{r.tensor:<7}{r.layer:>5}  {'LO' if r.leading_order else '1st':>6}  {r.z:9.2f}  {rel:>9}  "
                f"{r.max_abs_diff:10.3e}  {r.max_abs_theory:10.3e}  {r.remainder:10.3e}  {r.z_eff:7.2f}  "
                f"{r.verdict:<5}  {r.worst_index}"
            )
        lines += [
            "",
            "theory LO: leading order only (V, D, F, A, B, P..U; K1, Θ1): its O(1/n) correction is not computed;",
            "1st: K + K1/n, Θ + Θ1/n.  ~remainder: the expected size of the rest, r·max|T| (LO) or r·max|T1|/n (1st),",
            "with r = V/(nK²) of the layer below (the depth-to-width ratio, ~ ℓ/n at criticality).",
            "z_eff = |Δ|/sqrt(σ² + remainder²).  ok: |z| <= 3;  ok*: |z| > 3 but consistent within the O(ℓ/n)",
            "remainder (z_eff <= 3), not a failure;  CHECK: z_eff > 3.",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()


#: One comparable tensor: name, theory, sampled, stderr, leading order?, the 1/n term added to the theory.
_Row = tuple[str, np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray | None]


def _expansion_parameter(K: np.ndarray, V: np.ndarray | None, n: np.ndarray) -> np.ndarray | None:
    """r^(l) = max_a V_(aa)(aa) / (n_{l-1} K_aa²) per recorded layer (PDLT (5.128)); None without V."""
    if V is None:
        return None
    idx = np.arange(K.shape[1])
    kaa = K[:, idx, idx]
    vaa = V[:, idx, idx, idx, idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(kaa > 0, np.abs(vaa) / (n[:, None] * kaa**2), 0.0)
    return np.max(r, axis=1)


def _first_order(t: np.ndarray, corr: Any, n: np.ndarray) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """``t + corr/n`` (a first-order row) when the theory has the 1/n correction, else ``t`` (leading order)."""
    if corr is None:
        return t, True, None
    c = np.asarray(corr, dtype=float) / n
    return t + c, False, c


#: c of the dNTK family's relative remainder c (l-2)/n (``docs/spec/dntk.md`` §7.2: c ~ 2-4).
DNTK_REMAINDER_C = 4.0
#: Per-tensor factors of the remainder estimate r·max|T| (default 1; measured, module docstring).
REMAINDER_C = {"A": 4.0}


def _rows(
    th: Any, ens: Any, tensors: Sequence[str] | None
) -> tuple[list[_Row], list[int] | dict[str, list[int]], np.ndarray | dict[str, np.ndarray]]:
    """The comparable tensors, the layer labels and the remainder's expansion parameter per row layer
    (one list/array, or one per tensor name: the depth-μP pair labels K, G by ℓ and Θ by L)."""
    _check_pair(th, ens)
    n = np.asarray(ens.widths, dtype=float)[:, None, None]
    nl = np.asarray(ens.widths, dtype=float)
    out: list[tuple[str, Any, Any, Any, bool, Any]] = []
    labels: list[int] | dict[str, list[int]]
    r: Any
    if isinstance(ens, Ensemble) and isinstance(th, Theory):
        labels = list(range(1, ens.K.shape[0] + 1))
        for name in _names(tensors, THEORY_TENSORS):
            t = getattr(th, name, None)
            if t is None:
                continue
            t = np.asarray(t, dtype=float)
            corr = {"K": th.K1, "Theta": th.Theta1}.get(name)
            t, lead, c = _first_order(t, corr, n)
            out.append((name, t, getattr(ens, name, None), getattr(ens.stderr, name, None), lead, c))
        r = _expansion_parameter(np.asarray(th.K, dtype=float), theory_vertex(th), nl)
        # layers 1 and 2 are exact: the remainder at layer l is set by r of layer l-1
        r = None if r is None else np.concatenate([[0.0], r[:-1]])
    elif isinstance(ens, ResEnsemble) and isinstance(th, ResTheory):
        labels = list(range(1, ens.K.shape[0] + 1))
        for name in _names(tensors, RES_TENSORS):
            t = getattr(th, name, None)
            if t is None:
                continue
            t = np.asarray(t, dtype=float)
            t, lead, c = _first_order(t, th.K1 if name == "K" else None, n)
            out.append((name, t, getattr(ens, name, None), getattr(ens.stderr, name, None), lead, c))
        r = _expansion_parameter(np.asarray(th.K, dtype=float), theory_vertex(th), nl)
    elif isinstance(ens, PreResEnsemble) and isinstance(th, PreResTheory):
        labels = [int(v) for v in ens.layers]
        K, V = theory_kernel(th), theory_vertex(th)
        K1 = getattr(th, "K1", None)
        theory = {"K": K, "V": V, "K1": K1}
        theory.update({k: getattr(th, k, None) for k in ("V_GS", "V_SS")})
        for name in _names(tensors, PRERES_TENSORS):
            t = theory.get(name)
            if t is None:
                continue
            t, lead, c = _first_order(np.asarray(t, dtype=float), K1 if name == "K" else None, n)
            out.append((name, t, getattr(ens, name, None), getattr(ens.stderr, name, None), lead, c))
        r = _expansion_parameter(K, V, nl)
    elif isinstance(ens, DepthMuPEnsemble) and isinstance(th, DepthMuPTheory):
        # K, G at ℓ = 0..L (rows labelled by ℓ); Theta, Theta_decoupled as one row labelled L.
        L = ens.K.shape[0] - 1
        by_name: dict[str, list[int]] = {}
        for name in tensors if tensors is not None else ("K", "G", "Theta", "Theta_decoupled"):
            t, e, s = getattr(th, name, None), getattr(ens, name, None), getattr(ens.stderr, name, None)
            if t is None or e is None or s is None:
                continue
            if name.startswith("Theta"):
                t, e, s = t[None], e[None], s[None]
                by_name[name] = [L]
            else:
                by_name[name] = list(range(L + 1))
            out.append((name, np.asarray(t, dtype=float), e, s, True, None))
        labels = by_name
        # infinite-width theory against width n: the remainder is O(1/n) of the value
        r = {name: np.full(len(lbl), 1.0 / float(ens.width)) for name, lbl in by_name.items()}
    else:
        raise TypeError(
            "compare(theory, ens) supports (rgflow.Theory, Ensemble), (ResTheory, ResEnsemble), "
            "(PreResTheory, PreResEnsemble) and (DepthMuPTheory, DepthMuPEnsemble); "
            f"got ({type(th).__name__}, {type(ens).__name__})"
        )
    if r is None:  # no vertex (order 0): the depth-to-width ratio of the layers below, (l - 2)/n
        assert isinstance(labels, list)
        r = np.array([max(lab - 2, 0) for lab in labels], dtype=float) / nl
    rows = [(k, t, e, s, lead, c) for k, t, e, s, lead, c in out if e is not None and s is not None]
    if tensors is not None:
        missing = [k for k in tensors if k not in {r[0] for r in rows}]
        if missing:
            raise ValueError(
                f"compare(..., tensors={list(tensors)!r}): {missing} not computed by both the theory and the "
                "ensemble (the dNTK family needs theory(..., dntk=True) and sample(..., dntk=True); K1/Theta1 "
                "need order=1 and an infinite-width kernel); leave tensors=None to compare what both have"
            )
    return rows, labels, r


#: Comparable tensors of the residual pairs.
RES_TENSORS = ("K", "V", "S", "K1")
PRERES_TENSORS = ("K", "V", "V_GS", "V_SS", "K1")
_THEORIES = (Theory, ResTheory, PreResTheory, DepthMuPTheory)
_ENSEMBLES = (Ensemble, ResEnsemble, PreResEnsemble, DepthMuPEnsemble)


def _names(tensors: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return default if tensors is None else tuple(tensors)


def _check_pair(th: Any, ens: Any) -> None:
    """TypeError for swapped or unsupported arguments; ValueError when the theory and the ensemble
    come from different networks or inputs (compared bitwise)."""
    if isinstance(th, _ENSEMBLES) and isinstance(ens, _THEORIES):
        raise TypeError(
            f"compare(theory, ensemble) takes the theory first: got ({type(th).__name__}, {type(ens).__name__}); "
            "call rgflow.compare(th, ens)"
        )
    pairs = (
        (Theory, Ensemble),
        (ResTheory, ResEnsemble),
        (PreResTheory, PreResEnsemble),
        (DepthMuPTheory, DepthMuPEnsemble),
    )
    if not any(isinstance(th, a) and isinstance(ens, b) for a, b in pairs):
        raise TypeError(
            "compare(theory, ens) supports (rgflow.Theory, Ensemble), (ResTheory, ResEnsemble), "
            "(PreResTheory, PreResEnsemble) and (DepthMuPTheory, DepthMuPEnsemble); "
            f"got ({type(th).__name__}, {type(ens).__name__})"
        )
    if isinstance(th, PreResTheory):
        check_same_origin(
            "rgflow.compare", ("the theory", th.net, th.K_init), ("the ensemble", ens.net, ens.kernel), widths="ratios"
        )
    else:
        check_same_origin(
            "rgflow.compare", ("the theory", th.net, th.x), ("the ensemble", ens.net, ens.x), widths="ratios"
        )


def compare(th: Any, ens: Any, tensors: Sequence[str] | None = None) -> Comparison:
    """Compare a theory with an ensemble, tensor by tensor and layer by layer.

    Supported pairs: :class:`~rgflow.Theory` with :class:`Ensemble` (K, Theta, K1, Theta1, V, D,
    F, A, B, and P, Q, R, S, T, U when both have them: ``theory(dntk=True)``, ``sample(dntk=True)``),
    :class:`~rgflow.ResTheory` with :class:`ResEnsemble` (K, V, S, K1) and
    :class:`~rgflow.PreResTheory` with :class:`PreResEnsemble` (K, V, V_GS, V_SS, K1 at the recorded
    layers, which label the rows; the theory must be computed at the same layers) and
    :class:`~rgflow.recursions.DepthMuPTheory` with :class:`DepthMuPEnsemble` (K, G at ℓ = 0..L;
    Theta, Theta_decoupled as one row labelled L; infinite-width theory against finite n, so
    mind the O(1/n) bias).  Any other pair raises TypeError.

    ``K`` and ``Theta`` rows compare the first-order means ``K + K1/n`` and ``Θ + Θ1/n`` (the
    infinite-width values if the theory has no K1/Θ1) with the sampled means ``ens.K``,
    ``ens.Theta``.  The other rows compare like with like.  The z column is the largest
    |theory - sampled| / stderr over the entries of a layer.  Every row also says whether its
    theory is leading order only, estimates the size of the remainder (module docstring:
    ``r^(l-1) max|T|`` with the normalised vertex r ~ l/n) and gives ``z_eff`` with that remainder
    added to the standard error; ``row.verdict`` is ``"ok*"`` for |z| > 3 within the remainder.
    """
    rows = Comparison()
    names = check_names("tensors", tensors, THEORY_TENSORS + ("V_GS", "V_SS", "G", "Theta_decoupled"))
    triples, labels, r0 = _rows(th, ens, names)
    for name, t, e, s, lead, corr in triples:
        if isinstance(r0, dict):
            rr = r0[name]
        elif name in DNTK_TENSORS and isinstance(th, Theory):
            assert isinstance(labels, list)
            rr = DNTK_REMAINDER_C * np.array([max(lab - 2, 0) for lab in labels], dtype=float) / np.asarray(ens.widths)
        else:
            rr = r0
        if t.shape != e.shape:
            raise ValueError(f"{name}: theory shape {t.shape} != ensemble shape {e.shape}")
        for li in range(t.shape[0]):
            d = np.abs(t[li] - e[li])
            se = s[li]
            scale = float(np.max(np.abs(t[li]))) if t[li].size else 0.0
            tiny = 1e-12 * max(scale, float(np.max(np.abs(e[li]))), 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                zz = np.where(se > 0, d / np.where(se > 0, se, 1.0), np.where(d <= tiny, 0.0, np.inf))
            k = int(np.argmax(zz)) if zz.size else 0
            mad = float(np.max(d)) if d.size else 0.0
            if scale > 0:
                rel = mad / scale
            else:
                rel = 0.0 if mad <= tiny else float("nan")
            worst = tuple(int(i) for i in np.unravel_index(k, zz.shape))
            # the expected size of the theory's remainder at this layer (module docstring)
            size = scale if corr is None else (float(np.max(np.abs(corr[li]))) if corr[li].size else 0.0)
            rem = REMAINDER_C.get(name, 1.0) * float(rr[li]) * size if math.isfinite(float(rr[li])) else 0.0
            tot = np.sqrt(se**2 + rem**2)
            with np.errstate(divide="ignore", invalid="ignore"):
                ze = np.where(tot > 0, d / np.where(tot > 0, tot, 1.0), np.where(d <= tiny, 0.0, np.inf))
            z_eff = float(np.max(ze)) if ze.size else 0.0
            label = labels[name][li] if isinstance(labels, dict) else labels[li]
            rows.append(ComparisonRow(name, label, float(zz.flat[k]), rel, mad, scale, worst, lead, rem, z_eff))
    return rows
