"""Theory against sampled networks: one row per (tensor, layer) with the largest |z|."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..recursions import THEORY_TENSORS, Theory
from ._mlp import Ensemble


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


def compare(th: Theory, ens: Ensemble, tensors: Sequence[str] | None = None) -> Comparison:
    """Compare a theory with an ensemble, tensor by tensor and layer by layer.

    ``K`` and ``Theta`` rows compare the first-order means ``K + K1/n`` and ``Θ + Θ1/n`` (the
    infinite-width values if the theory has no K1/Θ1) with the sampled means ``ens.K``,
    ``ens.Theta``.  The other rows compare like with like.  The z column is the largest
    |theory - sampled| / stderr over the entries of a layer; remember the O(1/n) remainder of
    the first-order theory when reading it at small width.
    """
    rows = Comparison()
    names = tensors if tensors is not None else THEORY_TENSORS
    for name in names:
        t = getattr(th, name, None)
        e = getattr(ens, name, None)
        s = getattr(ens.stderr, name, None)
        if t is None or e is None or s is None:
            continue
        t = np.asarray(t, dtype=float)
        if name == "K" and th.K1 is not None:
            t = t + th.K1 / np.asarray(ens.widths, dtype=float)[:, None, None]
        if name == "Theta" and th.Theta1 is not None:
            t = t + th.Theta1 / np.asarray(ens.widths, dtype=float)[:, None, None]
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
            rows.append(ComparisonRow(name, li + 1, float(zz.flat[k]), rel, mad, scale, worst))
    return rows
