"""Why a computation overflowed: the inputs, C_W (C_b) of a layer, or the activation.

A theory or an ensemble with NaN/inf entries is never returned.  :func:`overflow_cause` replays
the diagonal of the kernel recursion (PDLT (4.118): ``K^(l+1) = C_b + C_W ⟨σ(z)²⟩_{K^(l)}``, plus
``γ² K^(l)`` for the residual MLP, (B.12)) in float64 on the largest input, and reports the
first quantity that stops being finite -- the inputs' scale ``|x|²/n0``, the product with
``C_W`` of a layer, or ``⟨σ²⟩`` of the activation -- or, when every kernel is finite, that the
first-order tensors (which scale like ``K²``) overflow and where ``K`` got large.
:func:`check_finite_result` raises a ValueError with that cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..gauss import expect

#: Above this kernel value the first-order tensors (~ K²) overflow float64.
K2_LIMIT = 1e152
#: Above this kernel value the sampled variances of the four-point tensors (~ K⁴) overflow.
K4_LIMIT = 1e76


def _per_layer(v: Any, depth: int) -> tuple[float, ...]:
    return tuple(float(u) for u in v) if isinstance(v, (tuple, list)) else (float(v),) * depth


def overflow_cause(
    net: Any, x: np.ndarray | None = None, kernel: np.ndarray | None = None, limit: float = K2_LIMIT
) -> str:
    """A sentence naming what overflowed for ``net`` on inputs ``x`` (or the input kernel ``kernel``)."""
    cause = overflow_scan(net, x, kernel, limit)
    if cause is not None:
        return cause
    C_W = _per_layer(net.C_W, int(net.depth))
    return (
        f"non-finite values although the kernel recursion stays finite: max C_W = {max(C_W):.3g}, "
        f"activation {net.activation!r}; check a custom activation's derivatives and the hyperparameters"
    )


def overflow_scan(
    net: Any, x: np.ndarray | None = None, kernel: np.ndarray | None = None, limit: float = K2_LIMIT
) -> str | None:
    """The cause of a float64 overflow of ``net`` on ``x`` (or ``kernel``), or None if the diagonal
    kernel recursion stays finite and below ``limit`` (default: where K² overflows)."""
    act = net.activation
    depth = int(net.depth)
    C_b, C_W = _per_layer(net.C_b, depth), _per_layer(net.C_W, depth)
    gamma = _per_layer(getattr(net, "gamma", 0.0), depth)
    step_b, step_W = C_b, C_W
    if hasattr(net, "eps"):  # PreResNet: K += ε² C_W ⟨σ²⟩ per block (resnets.md)
        gamma, step_b, step_W = (1.0,) * depth, (0.0,) * depth, tuple(net.eps**2 * c for c in C_W)
    with np.errstate(all="ignore"):
        if kernel is not None:
            K = float(np.max(np.diag(np.asarray(kernel, dtype=float))))
            origin = "the input kernel"
        else:
            assert x is not None
            q = np.sum(x * x, axis=1) / x.shape[1]
            if not np.all(np.isfinite(q)):
                a = int(np.argmin(np.isfinite(q)))
                return (
                    f"the inputs overflow: |x[{a}]|²/n0 is not finite in float64 (max |x| = {np.max(np.abs(x)):.3g}); "
                    "rescale x (e.g. to mean square ~1)"
                )
            qmax = float(np.max(q))
            K = C_b[0] + C_W[0] * qmax
            if not np.isfinite(K):
                return (
                    f"the inputs times C_W overflow at layer 1: C_W[layer 1] = {C_W[0]:.3g} times |x|²/n0 = {qmax:.3g} "
                    "is not finite in float64; reduce C_W or rescale x"
                )
            origin = f"the inputs (|x|²/n0 up to {qmax:.3g}) and C_W[layer 1] = {C_W[0]:.3g}"
    kmax, lmax = K, 1
    for ell in range(2, depth + 1):
        detail = ""
        try:
            s2 = float(expect(np.array([[K]]), [(0, 0), (0, 0)], act, order=24))  # a magnitude only
        except (ValueError, OverflowError, FloatingPointError) as exc:
            text = str(exc)
            if not any(w in text for w in ("finite", "NaN or inf", "overflow")):
                return None  # not a magnitude problem (e.g. a custom activation the core cannot call)
            s2, detail = float("nan"), f" ({text})"
        if not np.isfinite(s2):
            if act.is_custom and "non-finite value" in detail:  # NaN/inf returned, not a large value
                return (
                    f"the custom activation {act.label!r} returns a non-finite value where the layer-{ell - 1} "
                    f"preactivation (variance K = {K:.3g}) reaches{detail}; make σ finite on the whole real line"
                )
            if act.is_custom:
                return (
                    f"the custom activation {act.label!r} overflows: ⟨σ(z)²⟩ at the layer-{ell - 1} preactivation "
                    f"variance K = {K:.3g} is not finite{detail}; make σ return moderate values (|σ| well below 1e150)"
                )
            return (
                f"⟨σ(z)²⟩ of {act!r} overflows at layer {ell - 1}, where the preactivation variance K = {K:.3g} "
                f"(grown from {origin} through C_W = {list(C_W[: ell - 1])}){detail}; reduce C_W or the input scale"
            )
        with np.errstate(all="ignore"):
            K_next = step_b[ell - 1] + step_W[ell - 1] * s2 + gamma[ell - 1] ** 2 * K
        if not np.isfinite(K_next):
            who = f"the custom activation {act.label!r} (⟨σ²⟩ = {s2:.3g})" if act.is_custom else f"⟨σ²⟩ = {s2:.3g}"
            return f"C_W[layer {ell}] = {C_W[ell - 1]:.3g} times {who} overflows float64 at layer {ell}; reduce C_W" + (
                " or the activation's scale" if act.is_custom else " or the input scale"
            )
        K = K_next
        if K > kmax:
            kmax, lmax = K, ell
    if kmax > limit:
        big_act = act.is_custom and lmax > 1
        source = f"the custom activation {act.label!r}'s values" if big_act else f"C_W = {max(C_W):.3g}"
        if kernel is None and lmax == 1:
            source = origin
        return (
            f"the kernel reaches K = {kmax:.3g} at layer {lmax} (from {source}); products of kernels (the "
            "four-point tensors ~ K², their sampled variances ~ K⁴) overflow float64; reduce C_W or rescale x"
            + (" or σ" if act.is_custom else "")
        )
    return None


def first_nonfinite(tensors: Mapping[str, Any], skip: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """(name, 1-based layer) of the first tensor with a NaN/inf entry, or None."""
    for name, v in tensors.items():
        if v is None or name in skip:
            continue
        arr = np.asarray(v, dtype=float)
        bad = ~np.isfinite(arr)
        if np.any(bad):
            return name, int(np.argwhere(bad)[0][0]) + 1
    return None


def check_finite_result(
    what: str,
    tensors: Mapping[str, Any],
    net: Any,
    x: np.ndarray | None = None,
    kernel: np.ndarray | None = None,
    skip: tuple[str, ...] = (),
    limit: float = K2_LIMIT,
) -> None:
    """ValueError naming the first non-finite tensor of ``what`` and :func:`overflow_cause`."""
    bad = first_nonfinite(tensors, skip)
    if bad is not None:
        name, layer = bad
        cause = overflow_cause(net, x, kernel, limit)
        raise ValueError(f"{what}: {name} is not finite (layer axis entry {layer - 1}): {cause}")


def is_overflow_error(exc: BaseException) -> bool:
    """True for the core's "covariance contains NaN or inf" / non-finite kernel errors."""
    text = str(exc)
    return ("NaN or inf" in text or "non-finite" in text or "not finite" in text) and "custom activation" not in text
