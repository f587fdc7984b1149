"""Residual MLPs at initialisation (PDLT Appendix B; spec ``preactivations.md`` §8).

Forward equation (B.3) with ξ = 1: layer 1 is the ordinary ``z1 = b + W x``; every later
layer is ``z' = b + W σ(z) + γ z`` with all widths equal to ``n`` (B.4), so every first-order
tensor is the coefficient of the same ``1/n``.

Tensors (layer axis first, ``[layer-1, α1, ...]``):

* ``K``  — kernel (B.11), ``K' = C_b + C_W⟨σσ⟩ + γ²K``.
* ``V``  — four-point vertex ``V[l,a,b,c,d] = V_(ab)(cd)``: ``corrected=False`` gives the book's
  (B.24)–(B.25); ``corrected=True`` (default) adds the third-cumulant terms of spec §8c.
  **The book's (B.25) is discrepant for non-odd σ** (ReLU, GELU, …): it assumes an even action,
  but the identity branch creates an O(1/n) odd cumulant; sampled networks follow the
  corrected recursion (see ``tests/test_resmlp.py``).  For odd (tanh) or even (|z|, linear)
  σ, S ≡ 0 and both forms agree.
* ``S``  — odd third cumulant ``S[l,a,b,c] = S_(ab)c``:
  ``E[z_{i;a} z_{j;b} z_{k;c}] = (1/n)[δ_ij S_(ab)c + δ_ik S_(ac)b + δ_jk S_(bc)a]``.
* ``K1`` — NLO metric, ``E[z_{i;a} z_{i;b}] = K + K1/n``, from the spec's Edgeworth extension.
  **Only approximate for residual nets** (not in the book; the self-interaction cumulants
  κ(j^m, k²), m ≥ 3, are missing: ReLU γ² = ½, layer 3: 0.2251 against the exact 0.2046).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._util.limits import check_memory, max_evaluations
from .._util.native import core as _core
from .._util.validation import check_bool, check_inputs, check_int, check_quad_order
from ..gauss import core_activation
from ..models import ResMLP
from ._overflow import check_finite_result, is_overflow_error, overflow_cause


class ResTheory:
    """Result of :func:`resmlp_theory`: ``K``, ``K1`` (L, N, N), ``S`` (L, N, N, N), ``V`` (L, N⁴)."""

    def __init__(self, net: ResMLP, x: np.ndarray, tensors: dict[str, np.ndarray | None], corrected: bool) -> None:
        self.net = net
        self.x = x
        self.corrected = corrected
        self.K: np.ndarray = tensors["K"]  # type: ignore[assignment]
        self.V = tensors.get("V")
        self.S = tensors.get("S")
        self.K1 = tensors.get("K1")

    def metric(self, layer: int | None = None) -> np.ndarray:
        """Approximate mean metric ``K + K1/n`` (K1 is approximate here): at 1-based ``layer``
        (N, N), or every layer (L, N, N) when ``layer`` is None."""
        if self.K1 is None:
            raise ValueError("K1 was not computed (order=0)")
        if layer is None:
            return self.K + self.K1 / self.net.width
        if not 1 <= layer <= self.net.depth:
            raise ValueError(f"layer must be in 1..{self.net.depth}, got {layer}")
        return self.K[layer - 1] + self.K1[layer - 1] / self.net.width

    def __repr__(self) -> str:
        form = "S-corrected" if self.corrected else "book (B.25)"
        return f"ResTheory({self.net!r}, N={self.K.shape[1]}, vertex={form})"


def resmlp_theory(
    net: ResMLP, x: Any, *, corrected: bool = True, order: int = 1, quad_order: int | None = None
) -> ResTheory:
    """Kernel and first-order tensors of a residual MLP on inputs ``x`` (N, n0).

    ``corrected=True`` uses the S-corrected vertex (spec §8c, agrees with sampled networks);
    ``corrected=False`` the book's (B.25) (and K1 without the S term).  S is returned either way.
    """

    if not isinstance(net, ResMLP):
        raise TypeError(f"net must be an rgflow.resnet.ResMLP, got {type(net).__name__}")
    x = check_inputs(x)
    corrected = check_bool("corrected", corrected)
    order = check_int("order", order, minimum=0, maximum=1, hint=" (0: infinite width, 1: first order in 1/n)")
    quad_order = check_quad_order(quad_order)
    n, L = x.shape[0], net.depth
    if order == 1:
        # V (L, N⁴) and S (L, N³) kept, plus about four N⁴ working tensors per layer.
        check_memory(
            8.0 * ((L + 4) * float(n) ** 4 + L * float(n) ** 3),
            f"rgflow.theory (ResMLP): the vertex V of shape ({L}, {n}, {n}, {n}, {n}) and the working tables",
            f"fewer inputs (memory grows as N⁴; N = {n}), order=0, or a shallower network (depth {L})",
        )
    try:
        out = _core.resmlp_theory(
            core_activation(net.activation),
            x,
            np.array(net.C_b),
            np.array(net.C_W),
            np.array(net.gamma),
            net.width,
            corrected,
            order,
            0 if quad_order is None else quad_order,
            max_evals=max_evaluations(),
        )
    except ValueError as exc:
        if is_overflow_error(exc):
            raise ValueError(f"rgflow.theory: {exc}: {overflow_cause(net, x)}") from exc
        raise
    check_finite_result("rgflow.theory", dict(out), net, x)
    return ResTheory(net, x, dict(out), corrected)


def nu_scale_invariant(gamma: float, A2: float, A4: float) -> float:
    """The book's slope ν(γ) of (B.29): ``V^(ℓ) = (ℓ−1) ν (K*)²`` at residual criticality
    (scale-invariant class; exact when S = 0, i.e. ``a₊² = a₋²``)."""
    g2 = gamma * gamma
    return (1 - g2) * ((1 - g2) * (3 * A4 / A2**2 - 1) + 4 * g2)
