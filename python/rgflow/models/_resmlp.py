"""Residual MLP specification (PDLT Appendix B; spec ``preactivations.md`` §8)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._util.validation import check_int, per_layer
from ..activations import Activation, as_activation
from ..criticality import critical


class ResMLP:
    """A residual MLP at initialisation (Appendix B).

    Parameters
    ----------
    activation: name or :class:`~rgflow.Activation`.
    depth: number of layers L (>= 1); layer 1 is ordinary, layers 2..L are residual.
    width: common width n of layers 1..L (the residual branch needs equal widths).
    C_b, C_W: bias and weight variances, scalars or one per layer (``Var W = C_W/n_{l-1}``).
    gamma: residual weight γ >= 0 (scalar or one per layer; the layer-1 entry is unused).
    """

    def __init__(
        self,
        activation: str | Activation = "relu",
        depth: int = 2,
        width: int = 64,
        C_b: float | Sequence[float] = 0.0,
        C_W: float | Sequence[float] = 1.0,
        gamma: float | Sequence[float] = 0.0,
    ) -> None:
        self.activation = as_activation(activation)
        self.depth = check_int("depth", depth)
        self.width = check_int("width", width)
        self.C_b = per_layer("C_b", C_b, self.depth, positive=False)
        self.C_W = per_layer("C_W", C_W, self.depth, positive=True)
        self.gamma = per_layer("gamma", gamma, self.depth, positive=False)

    @property
    def L(self) -> int:
        return self.depth

    @classmethod
    def critical(cls, activation: str | Activation, depth: int, width: int, gamma: float) -> ResMLP:
        """Residual criticality (B.19)–(B.21): ``C_b = 0`` and ``C_W = (1 − γ²)/A₂`` (scale-invariant
        class) or ``(1 − γ²)/σ₁²`` (K* = 0 class).  Requires ``0 < γ² < 1``."""
        g2 = float(gamma) ** 2
        if not math.isfinite(g2) or not 0.0 < g2 < 1.0:
            raise ValueError(
                f"residual criticality needs 0 < gamma^2 < 1 (B.19)-(B.21), got gamma = {gamma}; "
                "gamma = 1 is never critical"
            )
        crit = critical(activation)
        if crit.universality_class not in ("scale-invariant", "K*=0") or crit.C_W is None:
            raise ValueError(
                f"residual criticality (B.19)-(B.21) is known for the scale-invariant and K*=0 classes only; "
                f"{crit.activation!r} is {crit.universality_class!r}"
            )
        if crit.C_b:
            raise ValueError(f"{crit.activation!r}: expected C_b = 0 at criticality, got {crit.C_b}")
        return cls(crit.activation, depth, width, C_b=0.0, C_W=(1.0 - g2) * crit.C_W, gamma=abs(float(gamma)))

    def __repr__(self) -> str:
        def short(v: tuple[float, ...]) -> str:
            return f"{v[0]:g}" if len(set(v)) == 1 else str(list(v))

        return (
            f"ResMLP({self.activation!r}, depth={self.depth}, width={self.width}, C_b={short(self.C_b)}, "
            f"C_W={short(self.C_W)}, gamma={short(self.gamma)})"
        )
