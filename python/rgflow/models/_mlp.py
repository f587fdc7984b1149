"""Network architectures: the multilayer perceptron of the book's eq. (2.5).

Conventions (``docs/spec/preactivations.md`` §1, ``ntk.md`` §1.1): layers l = 1..L,
``Var b = C_b``, ``Var W = C_W / n_{l-1}``, NTK learning rates ``lambda_b`` and
``lambda_W / n_{l-1}``.  Hyperparameters may differ per layer; widths are the hidden widths
``n_1 .. n_{L-1}``; ``n_0`` is the input dimension (taken from the inputs) and ``n_L`` the
output width (used by samplers only: the theory does not depend on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._util.validation import check_int, per_layer
from ..activations import Activation, as_activation
from ..criticality import critical
from ..criticality import learning_rates as equivalence_learning_rates


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
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
            raise TypeError(f"widths must be a list of ints [n_1, ..., n_{{L-1}}], got widths={widths!r}")
        widths = list(widths)
        if len(widths) != depth - 1:
            raise ValueError(
                f"widths has {len(widths)} entries but a depth-{depth} network has {depth - 1} hidden layers"
            )
        name = "width" if width is not None else "widths[{i}]"
        self.widths: tuple[int, ...] = tuple(
            check_int(name.format(i=i), n, hint=f" (the hidden width n_{i + 1})") for i, n in enumerate(widths)
        )
        if out_width is None:
            out_width = self.widths[-1] if self.widths else (check_int("width", width) if width is not None else 1)
        self.out_width = check_int("out_width", out_width, hint=" (the output width n_L used by samplers)")
        self.C_b = per_layer("C_b", C_b, depth, positive=False)
        self.C_W = per_layer("C_W", C_W, depth, positive=True)
        self.lambda_b = per_layer("lambda_b", lambda_b, depth, positive=False)
        self.lambda_W = per_layer("lambda_W", lambda_W, depth, positive=False)

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


def critical_mlp(
    activation: str | Activation,
    depth: int,
    width: int | None = None,
    *,
    widths: Sequence[int] | None = None,
    out_width: int | None = None,
    lambda_b: float = 1.0,
    lambda_W: float = 1.0,
    learning_rates: str = "equivalence",
) -> MLP:
    """An :class:`~rgflow.MLP` at criticality (C_b, C_W from :func:`critical`).

    ``learning_rates="equivalence"`` (default) scales the NTK learning rates per layer by the
    book's learning-rate equivalence principle, (9.94) for the scale-invariant (and, our
    extension, half-stable) class and (9.95)/(9.96) for the K* = 0 class, with ``lambda_b``,
    ``lambda_W`` the order-one λ̃_b, λ̃_W (see :func:`rgflow.criticality.learning_rates`).
    ``learning_rates="constant"`` uses ``lambda_b``, ``lambda_W`` unchanged in every layer (the
    book's (9.44) convention, Θ^(ℓ) = (λ_b + λ_W A₂K*) ℓ for scale-invariant σ).

    Raises ``ValueError`` (with the reason) for activations without criticality.  For the
    half-stable class, inputs should have K^(1) = C_b + C_W |x|²/n₀ near K* (see ``.K_star``).
    """
    crit = critical(activation)
    if not crit.is_critical:
        raise ValueError(
            f"{crit.activation!r} has no critical initialisation ({crit.reason}); "
            "choose e.g. 'tanh' (K*=0 class) or 'relu' (scale-invariant)"
        )
    assert crit.C_b is not None and crit.C_W is not None  # set for every critical class
    if learning_rates == "equivalence":
        lb, lw = equivalence_learning_rates(crit, depth, lambda_b, lambda_W)
    elif learning_rates == "constant":
        lb, lw = (float(lambda_b),) * depth, (float(lambda_W),) * depth
    else:
        raise ValueError(f"learning_rates must be 'equivalence' or 'constant', got {learning_rates!r}")
    return MLP(
        crit.activation, depth, width=width, widths=widths, C_b=crit.C_b, C_W=crit.C_W,
        lambda_b=list(lb), lambda_W=list(lw), out_width=out_width,
    )  # fmt: skip
