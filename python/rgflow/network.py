"""Network architectures: the multilayer perceptron of the book's eq. (2.5).

Conventions (``../shared/spec/preactivations.md`` §1, ``ntk.md`` §1.1): layers l = 1..L,
``Var b = C_b``, ``Var W = C_W / n_{l-1}``, NTK learning rates ``lambda_b`` and
``lambda_W / n_{l-1}``.  Hyperparameters may differ per layer; widths are the hidden widths
``n_1 .. n_{L-1}``; ``n_0`` is the input dimension (taken from the inputs) and ``n_L`` the
output width (used by samplers only: the theory does not depend on it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .activations import Activation, as_activation


def check_int(name: str, value: Any, *, minimum: int = 1, hint: str = "") -> int:
    """An int (not bool) >= ``minimum``: TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{hint}, got {value}")
    return int(value)


def _per_layer(name: str, value: float | Sequence[float], depth: int, *, positive: bool) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.integer, np.floating)):
        vals = (float(value),) * depth
    else:
        try:
            vals = tuple(float(v) for v in value)
        except TypeError as exc:
            raise TypeError(f"{name} must be a number or a sequence of {depth} numbers") from exc
        if len(vals) != depth:
            raise ValueError(
                f"{name} has {len(vals)} entries but depth={depth}; give one value per layer "
                f"(layers 1..{depth}) or a single scalar"
            )
    for i, v in enumerate(vals):
        if not math.isfinite(v):
            raise ValueError(f"{name}[layer {i + 1}] = {v} is not finite")
        if positive and v <= 0:
            raise ValueError(f"{name}[layer {i + 1}] = {v} must be > 0")
        if not positive and v < 0:
            raise ValueError(f"{name}[layer {i + 1}] = {v} must be >= 0 (it is a variance)")
    return vals


class MLP:
    """A multilayer perceptron at initialisation.

    Parameters
    ----------
    activation: name, :class:`~rgflow.Activation`, or custom activation.
    depth: number of layers L (>= 1); the output is z^(L).
    width: common hidden width n (used for n_1..n_{L-1}); or give ``widths``.
    widths: hidden widths [n_1, ..., n_{L-1}] (length depth-1).
    C_b, C_W: bias and weight variances, scalars or one per layer (length L).
    lambda_b, lambda_W: NTK learning rates, scalars or one per layer.
    out_width: output width n_L used by samplers (default: the last hidden width, or 1).
    """

    def __init__(
        self,
        activation: str | Activation = "relu",
        depth: int = 2,
        width: int | None = None,
        widths: Sequence[int] | None = None,
        C_b: float | Sequence[float] = 0.0,
        C_W: float | Sequence[float] = 1.0,
        lambda_b: float | Sequence[float] = 1.0,
        lambda_W: float | Sequence[float] = 1.0,
        out_width: int | None = None,
    ) -> None:
        self.activation = as_activation(activation)
        self.depth = check_int("depth", depth)
        if widths is not None and width is not None:
            raise ValueError("give either width (a common hidden width) or widths, not both")
        if widths is None:
            if width is None:
                if depth > 1:
                    raise ValueError("give width=n (common hidden width) or widths=[n_1, ..., n_{L-1}]")
                widths = []
            else:
                widths = [width] * (depth - 1)
        widths = list(widths)
        if len(widths) != depth - 1:
            raise ValueError(
                f"widths has {len(widths)} entries but a depth-{depth} network has {depth - 1} hidden layers"
            )
        for i, n in enumerate(widths):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) != n:
                raise TypeError(f"widths[{i}] must be an int, got {n!r}")
            if n < 1:
                raise ValueError(f"widths[{i}] (n_{i + 1}) = {n} must be a positive integer")
        self.widths: tuple[int, ...] = tuple(int(n) for n in widths)
        if out_width is None:
            out_width = self.widths[-1] if self.widths else (int(width) if width else 1)
        if int(out_width) < 1:
            raise ValueError(f"out_width must be >= 1, got {out_width}")
        self.out_width = int(out_width)
        self.C_b = _per_layer("C_b", C_b, depth, positive=False)
        self.C_W = _per_layer("C_W", C_W, depth, positive=True)
        self.lambda_b = _per_layer("lambda_b", lambda_b, depth, positive=False)
        self.lambda_W = _per_layer("lambda_W", lambda_W, depth, positive=False)

    # ------------------------------------------------------------------ helpers
    @property
    def L(self) -> int:
        return self.depth

    def layer_widths(self, n0: int) -> tuple[int, ...]:
        """(n_0, n_1, ..., n_L) for input dimension n0."""
        return (int(n0), *self.widths, self.out_width)

    def correction_width(self, layer: int, n0: int) -> int:
        """n_{l-1}: the width whose inverse multiplies layer-l corrections (layer is 1-based)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be in 1..{self.depth}, got {layer}")
        return self.layer_widths(n0)[layer - 1]

    @classmethod
    def critical(cls, activation: str | Activation, depth: int, width: int | None = None, **kw: Any) -> MLP:
        """A network tuned to criticality (see :func:`rgflow.critical`)."""
        from .criticality import critical_mlp

        return critical_mlp(activation, depth, width, **kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation": self.activation.to_dict(),
            "depth": self.depth,
            "widths": list(self.widths),
            "out_width": self.out_width,
            "C_b": list(self.C_b),
            "C_W": list(self.C_W),
            "lambda_b": list(self.lambda_b),
            "lambda_W": list(self.lambda_W),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLP:
        return cls(
            activation=Activation.from_dict(d["activation"]),
            depth=int(d["depth"]),
            widths=list(d["widths"]),
            out_width=int(d["out_width"]),
            C_b=d["C_b"],
            C_W=d["C_W"],
            lambda_b=d["lambda_b"],
            lambda_W=d["lambda_W"],
        )

    def __repr__(self) -> str:
        def short(v: tuple[float, ...]) -> str:
            return f"{v[0]:g}" if len(set(v)) == 1 else str(list(v))

        w = self.widths[0] if len(set(self.widths)) == 1 and self.widths else list(self.widths)
        return (
            f"MLP({self.activation!r}, depth={self.depth}, widths={w}, C_b={short(self.C_b)}, "
            f"C_W={short(self.C_W)}, lambda_b={short(self.lambda_b)}, lambda_W={short(self.lambda_W)})"
        )


def check_inputs(x: Any) -> np.ndarray:
    """Validate inputs: a finite float array of shape (N, n0) with N >= 1 (ValueError otherwise)."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        raise ValueError(
            f"x must have shape (N, n0); got a 1-D array of shape {arr.shape} (use x[None, :] for one input)"
        )
    if arr.ndim != 2:
        raise ValueError(f"x must have shape (N, n0), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("x has no inputs (N = 0); give at least one row")
    if arr.shape[1] == 0:
        raise ValueError("x has zero input dimension (n0 = 0)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or inf; clean the inputs first")
    return np.ascontiguousarray(arr)
