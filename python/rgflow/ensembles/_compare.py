"""Theory against sampled networks: one row per (tensor, layer) with the largest |z|."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..recursions import THEORY_TENSORS, DepthMuPTheory, PreResTheory, ResTheory, Theory
from ._results import DepthMuPEnsemble, Ensemble, PreResEnsemble, ResEnsemble, theory_kernel, theory_vertex


@dataclass(frozen=True)
class ComparisonRow:
    """One (tensor, layer) line of :func:`compare`.

    z: max over entries of |theory - sampled| / stderr (entries with zero stderr count only if
       they differ, then z = inf).
    rel_error: max |theory - sampled| / max |theory| (nan when the theory is identically 0 and
       the sample is not).
    """

    tensor: str
    layer: int
    z: float
    rel_error: float
    max_abs_diff: float
    max_abs_theory: float
    worst_index: tuple[int, ...]

    def __iter__(self):
        return iter((self.tensor, self.layer, self.z, self.rel_error))


class Comparison(list):
    """A list of :class:`ComparisonRow` with a readable table as ``str``."""

    def max_z(self, tensor: str | None = None) -> float:
        zs = [r.z for r in self if tensor is None or r.tensor == tensor]
        return max(zs) if zs else 0.0

    def __str__(self) -> str:
        head = f"{'tensor':<7}{'layer':>5}  {'max|Δ|/σ':>9}  {'rel.err':>9}  {'max|Δ|':>10}  {'max|th|':>10}  worst"
        lines = [head, "-" * len(head)]
        for r in self:
            rel = "-" if math.isnan(r.rel_error) else f"{r.rel_error:9.2e}"
            lines.append(
                f"{r.tensor:<7}{r.layer:>5}  {r.z:9.2f}  {rel:>9}  {r.max_abs_diff:10.3e}  "
                f"{r.max_abs_theory:10.3e}  {r.worst_index}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()


def _rows(
    th: Any, ens: Any, tensors: Sequence[str] | None
) -> tuple[list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], list[int] | dict[str, list[int]]]:
    """(name, theory, sampled, stderr) per comparable tensor, and the layer labels (one list, or one per
    tensor name), for a supported pair."""
    n = np.asarray(ens.widths, dtype=float)[:, None, None]
    out: list[tuple[str, Any, Any, Any]] = []
    labels: list[int] | dict[str, list[int]]
    if isinstance(ens, Ensemble) and isinstance(th, Theory):
        labels = list(range(1, ens.K.shape[0] + 1))
        for name in tensors if tensors is not None else THEORY_TENSORS:
            t = getattr(th, name, None)
            if t is None:
                continue
            t = np.asarray(t, dtype=float)
            if name == "K" and th.K1 is not None:
                t = t + th.K1 / n
            if name == "Theta" and th.Theta1 is not None:
                t = t + th.Theta1 / n
            out.append((name, t, getattr(ens, name, None), getattr(ens.stderr, name, None)))
    elif isinstance(ens, ResEnsemble) and isinstance(th, ResTheory):
        labels = list(range(1, ens.K.shape[0] + 1))
        for name in tensors if tensors is not None else ("K", "V", "S", "K1"):
            t = getattr(th, name, None)
            if t is None:
                continue
            t = np.asarray(t, dtype=float)
            if name == "K" and th.K1 is not None:
                t = t + th.K1 / n
            out.append((name, t, getattr(ens, name, None), getattr(ens.stderr, name, None)))
    elif isinstance(ens, PreResEnsemble) and isinstance(th, PreResTheory):
        labels = [int(v) for v in ens.layers]
        K, V = theory_kernel(th), theory_vertex(th)
        K1 = getattr(th, "K1", None)
        theory = {"K": K if K1 is None else K + np.asarray(K1) / n, "V": V, "K1": K1}
        theory.update({k: getattr(th, k, None) for k in ("V_GS", "V_SS")})
        for name in tensors if tensors is not None else ("K", "V", "V_GS", "V_SS", "K1"):
            t = theory.get(name)
            if t is None:
                continue
            out.append((name, np.asarray(t, dtype=float), getattr(ens, name, None), getattr(ens.stderr, name, None)))
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
            out.append((name, np.asarray(t, dtype=float), e, s))
        labels = by_name
    else:
        raise TypeError(
            "compare(theory, ens) supports (rgflow.Theory, Ensemble), (ResTheory, ResEnsemble), "
            "(PreResTheory, PreResEnsemble) and (DepthMuPTheory, DepthMuPEnsemble); "
            f"got ({type(th).__name__}, {type(ens).__name__})"
        )
    return [(k, t, e, s) for k, t, e, s in out if e is not None and s is not None], labels


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
    |theory - sampled| / stderr over the entries of a layer; remember the O(1/n) remainder of
    the first-order theory when reading it at small width.
    """
    rows = Comparison()
    triples, labels = _rows(th, ens, tensors)
    for name, t, e, s in triples:
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
            label = labels[name][li] if isinstance(labels, dict) else labels[li]
            rows.append(ComparisonRow(name, label, float(zz.flat[k]), rel, mad, scale, worst))
    return rows
