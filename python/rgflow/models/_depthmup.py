"""Depth-μP ResNet specification (spec ``nfd.md`` §1): one-layer blocks, 1/√L branch, μP readout.

The model (nfd.md §1.1, [C] reconstruction; the form matches the paper's abstract [B])::

    h_0 = U x / √d,   h_ℓ = h_{ℓ-1} + a_L W_ℓ φ(h_{ℓ-1}) / √n  (ℓ = 1..L),   f = vᵀ r / (γ0 n)

with U, W_ℓ, v i.i.d. N(0, 1), branch multiplier ``a_L = √(T/L)`` (``branch="sqrt"``, the
depth-μP reading) or ``T/L`` (``branch="linear"``, emergentmind's literal rendering, nfd.md §2.4
item 3), readout ``r = h_L`` (``readout="h"``) or ``φ(h_L)`` (``readout="phi"``).

Gradient descent (nfd.md §1.2): in this multiplier form every trained parameter group gets the
learning rate ``η γ0² n`` (depth exponent 0 for SGD/GD); ``hidden_lr_depth_power`` p multiplies
the hidden-layer rate by ``L^{-p}`` (p = 0 is depth-μP; p > 0 is the "depth-decaying hidden
learning rate" reading of §2.4). ``train`` names the groups that train (``"input"``, ``"hidden"``,
``"readout"``); freezing the input layer is the §3.5 variant.

``backward="decoupled"`` is the network of §1.2 whose backward pass uses an independent copy
W̃(0) of the initial hidden weights (with the same accumulated updates): its infinite-width limit
drops the reused-weight response terms A, B of §2.2 — the NFD system.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from .._util.validation import check_int, real
from ..activations import Activation, as_activation

Branch = Literal["sqrt", "linear"]
Readout = Literal["h", "phi"]
Backward = Literal["coupled", "decoupled"]
GROUPS = ("input", "hidden", "readout")


class DepthMuPResNet:
    """A depth-μP ResNet with one-layer blocks (nfd.md §1) — a specification, no computation.

    Parameters
    ----------
    activation: name or :class:`~rgflow.Activation` (tanh, relu, gelu, ...).
    depth: number of residual blocks L (>= 1).
    width: width n of every hidden layer (>= 1).
    gamma0: feature-learning strength γ0 > 0 (γ0 → 0 is the lazy/NTK regime).
    branch: ``"sqrt"`` (multiplier √(T/L), depth-μP) or ``"linear"`` (T/L).
    horizon: total depth time T > 0 (τ = ℓ T / L); 1 in the spec.
    readout: ``"h"`` (f reads h_L) or ``"phi"`` (f reads φ(h_L)).
    train: the parameter groups that gradient descent updates (subset of input/hidden/readout).
    backward: ``"coupled"`` (the true network) or ``"decoupled"`` (independent backward W̃(0)).
    hidden_lr_depth_power: p in the hidden learning rate ``η γ0² n L^{-p}`` (0 = depth-μP).
    """

    def __init__(
        self,
        activation: str | Activation = "tanh",
        depth: int = 16,
        width: int = 256,
        gamma0: float = 1.0,
        *,
        branch: Branch = "sqrt",
        horizon: float = 1.0,
        readout: Readout = "h",
        train: Iterable[str] = GROUPS,
        backward: Backward = "coupled",
        hidden_lr_depth_power: float = 0.0,
    ) -> None:
        self.activation = as_activation(activation)
        self.depth = check_int("depth", depth, hint=" (the number of residual blocks L)")
        self.width = check_int("width", width)
        self.gamma0 = real("gamma0", gamma0)
        if not (math.isfinite(self.gamma0) and self.gamma0 > 0):
            raise ValueError(f"gamma0 must be finite and > 0 (the feature-learning strength γ0), got {gamma0}")
        self.horizon = real("horizon", horizon)
        if not (math.isfinite(self.horizon) and self.horizon > 0):
            raise ValueError(f"horizon must be finite and > 0 (total depth time T), got {horizon}")
        self.branch: Branch = _choice("branch", branch, ("sqrt", "linear"))
        self.readout: Readout = _choice("readout", readout, ("h", "phi"))
        self.backward: Backward = _choice("backward", backward, ("coupled", "decoupled"))
        if isinstance(train, str):
            raise TypeError(f"train must be a collection of group names from {GROUPS}, got the string {train!r}")
        groups = tuple(train)
        for g in groups:
            if g not in GROUPS:
                raise ValueError(f"train: unknown parameter group {g!r}; choose from {GROUPS}")
        self.train = tuple(g for g in GROUPS if g in groups)
        self.hidden_lr_depth_power = real("hidden_lr_depth_power", hidden_lr_depth_power)
        if not math.isfinite(self.hidden_lr_depth_power):
            raise ValueError(f"hidden_lr_depth_power must be finite, got {hidden_lr_depth_power}")

    @property
    def L(self) -> int:
        return self.depth

    @property
    def branch_multiplier(self) -> float:
        """a_L: √(T/L) for ``branch="sqrt"``, T/L for ``branch="linear"``."""
        ratio = self.horizon / self.depth
        return math.sqrt(ratio) if self.branch == "sqrt" else ratio

    @property
    def block_variance(self) -> float:
        """a_L², the per-block variance factor: T/L (sqrt branch) — the Euler step of the depth ODE."""
        return self.branch_multiplier**2

    def learning_rate(self, group: str, eta: float) -> float:
        """Learning rate of ``group`` in the multiplier convention (nfd.md §1.2 table): η γ0² n,
        times L^{-p} for the hidden layers; 0 for a frozen group."""
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        eta = real("eta", eta)
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"eta must be finite and > 0, got {eta}")
        if group not in self.train:
            return 0.0
        lr = eta * self.gamma0**2 * self.width
        if group == "hidden":
            lr *= float(self.depth) ** (-self.hidden_lr_depth_power)
        return lr

    def with_(self, **changes: Any) -> DepthMuPResNet:
        """A copy with some fields changed, e.g. ``net.with_(depth=32)`` or ``net.with_(backward="decoupled")``."""
        fields: dict[str, Any] = {
            "activation": self.activation,
            "depth": self.depth,
            "width": self.width,
            "gamma0": self.gamma0,
            "branch": self.branch,
            "horizon": self.horizon,
            "readout": self.readout,
            "train": self.train,
            "backward": self.backward,
            "hidden_lr_depth_power": self.hidden_lr_depth_power,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown DepthMuPResNet field(s) {sorted(unknown)}; fields are {sorted(fields)}")
        fields.update(changes)
        return DepthMuPResNet(**fields)

    def decoupled(self) -> DepthMuPResNet:
        """The decoupled ("independent backward weights") twin of this network (nfd.md §1.2)."""
        return self.with_(backward="decoupled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DepthMuPResNet) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        return (
            f"DepthMuPResNet({self.activation!r}, depth={self.depth}, width={self.width}, gamma0={self.gamma0:g}, "
            f"branch={self.branch!r}, horizon={self.horizon:g}, readout={self.readout!r}, train={self.train!r}, "
            f"backward={self.backward!r}, hidden_lr_depth_power={self.hidden_lr_depth_power:g})"
        )


def _choice(name: str, value: Any, options: tuple[str, ...]) -> Any:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
