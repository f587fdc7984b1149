"""Pre-activation ResNet specification in the depth scaling ``t = ε²ℓ`` (spec ``resnets.md``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._util.validation import check_inputs, check_int, real
from ..activations import Activation, as_activation


class PreResNet:
    """A pre-activation ResNet ``φ' = φ + ε W σ(φ)`` with L blocks of width n.

    Parameters
    ----------
    activation: name or :class:`~rgflow.Activation`.
    depth: number of residual blocks L (>= 1).
    width: width n of every layer.
    eps: branch scale ε > 0 (``t = ε²ℓ``; ``eps = sqrt(T/L)``).
    C_W: weight variance (``Var W = C_W/n``), > 0.
    C_b: bias variance of the input layer only (when the input kernel comes from ``x``).
    """

    def __init__(
        self,
        activation: str | Activation = "tanh",
        depth: int = 100,
        width: int = 64,
        eps: float = 0.05,
        C_W: float = 1.0,
        C_b: float = 0.0,
    ) -> None:
        self.activation = as_activation(activation)
        depth = check_int("depth", depth, hint=" (the number of residual blocks L)")
        width = check_int("width", width)
        eps, C_W, C_b = (real(k, v) for k, v in (("eps", eps), ("C_W", C_W), ("C_b", C_b)))
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be finite and > 0 (use eps = sqrt(T/L)), got {eps}")
        if not (math.isfinite(C_W) and C_W > 0):
            raise ValueError(f"C_W must be finite and > 0, got {C_W}")
        if not (math.isfinite(C_b) and C_b >= 0):
            raise ValueError(f"C_b must be finite and >= 0, got {C_b}")
        self.depth, self.width, self.eps, self.C_W, self.C_b = int(depth), int(width), eps, C_W, C_b

    @property
    def L(self) -> int:
        return self.depth

    @property
    def T(self) -> float:
        """Total time ``ε²L``."""
        return self.eps**2 * self.depth

    def input_kernel(self, x: Any = None, kernel: Any = None) -> np.ndarray:
        """``K⁰``: ``kernel`` as given (symmetric PSD, finite), or ``C_b + C_W x·xᵀ/n0``."""
        if (x is None) == (kernel is None):
            raise ValueError("give exactly one of x (inputs, shape (N, n0)) or kernel (K0 at t = 0, shape (N, N))")
        if kernel is not None:
            k = np.asarray(kernel, dtype=float)
            if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
                raise ValueError(f"kernel must be a square (N, N) array, got shape {k.shape}")
            if not np.all(np.isfinite(k)):
                raise ValueError("kernel contains NaN or inf; pass a finite PSD matrix")
            scale = max(1.0, float(np.abs(k).max()))
            if np.abs(k - k.T).max() > 1e-12 * scale:
                i, j = np.unravel_index(int(np.argmax(np.abs(k - k.T))), k.shape)
                raise ValueError(
                    f"kernel must be symmetric: kernel[{i},{j}] = {k[i, j]} but kernel[{j},{i}] = {k[j, i]}"
                )
            wmin = float(np.linalg.eigvalsh(k).min())
            if wmin < -1e-9 * scale:
                raise ValueError(
                    f"kernel is not positive semi-definite (smallest eigenvalue {wmin:.3g}); "
                    "pass a covariance matrix, e.g. a Gram matrix x·xᵀ/n0"
                )
            return np.ascontiguousarray((k + k.T) / 2)
        xs = check_inputs(x)
        return self.C_b + self.C_W * (xs @ xs.T) / xs.shape[1]

    def __repr__(self) -> str:
        return (
            f"PreResNet({self.activation.name!r}, depth={self.depth}, width={self.width}, eps={self.eps}, "
            f"C_W={self.C_W}, C_b={self.C_b})"
        )
