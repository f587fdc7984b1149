"""The built-in activations σ, σ', σ'' (and σ''') written once against an array namespace ``xp``.

``xp`` is ``numpy`` or ``jax.numpy`` (anything with the numpy functions used below); the error
function comes from :func:`erf_for` (``scipy.special.erf`` for numpy, ``jax.scipy.special.erf``
for JAX).  :meth:`rgflow.Activation.numpy` and the JAX samplers both evaluate these closures,
so every built-in is defined in Python exactly once (the Rust core has its own, exact
implementation with derivatives up to 6th order).

At a kink (relu, leaky_relu, elu at z = 0) the derivatives take their right-hand value; the
delta functions of the distributional derivatives are the core's business.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: Highest derivative order defined here.
MAX_DERIVATIVE = 3

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)

ArrayFn = Callable[[Any], Any]


def _numpy_erf(z: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf

        return erf(z)
    except ImportError:  # pragma: no cover - scipy is a test dependency only
        return np.vectorize(math.erf, otypes=[float])(z)


def erf_for(xp: Any) -> ArrayFn:
    """The error function of the namespace ``xp`` (numpy: scipy's; jax.numpy: jax.scipy's)."""
    if xp is np:
        return _numpy_erf
    name = getattr(xp, "__name__", "")
    if name.startswith("jax"):
        from jax.scipy.special import erf

        return erf
    erf_ = getattr(xp, "erf", None)
    if erf_ is None:
        raise TypeError(f"array namespace {name or xp!r} has no erf; pass numpy or jax.numpy")
    return erf_


def _constant(xp: Any, z: Any, value: Any) -> Any:
    """``value`` (a scalar or an array from ``xp.where`` on scalars) with the dtype of ``z``."""
    out = xp.asarray(value)
    return out if out.dtype == z.dtype else out.astype(z.dtype)


def array_function(xp: Any, name: str, params: dict[str, float], deriv: int = 0) -> ArrayFn:
    """``z ↦ σ^(deriv)(z)`` of the built-in activation ``name`` (parameters ``params``) in ``xp``.

    ``deriv`` is 0, 1, 2 or 3 (the third for the dNTK samplers).  The expressions are those of
    rgflow 0.1's numpy evaluation, so numpy results are bitwise unchanged; under JAX they trace to
    the same arithmetic.
    """
    if deriv not in (0, 1, 2, 3):
        raise ValueError("array evaluation provides derivatives 0, 1, 2, 3 only")
    p = params
    if name == "linear":
        if deriv == 0:
            return lambda z: z
        return (lambda z: xp.ones_like(z)) if deriv == 1 else (lambda z: xp.zeros_like(z))
    if name in ("relu", "leaky_relu"):
        a = 0.0 if name == "relu" else p["slope"]
        if deriv == 0:
            return lambda z: xp.where(z > 0, z, a * z)
        if deriv == 1:
            return lambda z: _constant(xp, z, xp.where(z > 0, 1.0, a))
        return lambda z: xp.zeros_like(z)
    if name == "tanh":
        if deriv == 0:
            return xp.tanh

        def dtanh(z: Any) -> Any:
            t = xp.tanh(z)
            if deriv == 3:
                return -2 * (1 - t * t) * (1 - 3 * t * t)
            return 1 - t * t if deriv == 1 else -2 * t * (1 - t * t)

        return dtanh
    if name == "erf":
        if deriv == 0:
            return erf_for(xp)

        def derf(z: Any) -> Any:
            g = _TWO_OVER_SQRTPI * xp.exp(-z * z)
            if deriv == 3:
                return (4 * z * z - 2) * g
            return g if deriv == 1 else -2 * z * g

        return derf
    if name == "sin":
        return (xp.sin, xp.cos, lambda z: -xp.sin(z), lambda z: -xp.cos(z))[deriv]
    if name == "gelu":
        erf = erf_for(xp)

        def gelu(z: Any) -> Any:
            if deriv == 0:
                return z * (0.5 * (1 + erf(z / _SQRT2)))
            pdf = xp.exp(-0.5 * z * z) / _SQRT2PI
            if deriv == 1:
                return 0.5 * (1 + erf(z / _SQRT2)) + z * pdf
            if deriv == 3:
                return (z * z - 4) * z * pdf
            return 2 * pdf - z * z * pdf

        return gelu
    if name in ("swish", "softplus", "sigmoid"):
        if name == "softplus" and deriv == 0:
            return lambda z: xp.logaddexp(0.0, z)
        # sigmoid's derivative order used: softplus^(d) = sigmoid^(d-1), swish needs s, s', s''
        order = deriv - 1 if name == "softplus" else deriv

        def logistic(z: Any) -> Any:
            s = 0.5 * (1 + xp.tanh(0.5 * z))
            if name != "swish" and order == 0:
                return s
            ds = s * (1 - s)
            if name == "swish":
                if deriv == 0:
                    return z * s
                if deriv == 1:
                    return s + z * ds
                if deriv == 2:
                    return 2 * ds + z * (ds * (1 - 2 * s))
                return 3 * ds * (1 - 2 * s) + z * (ds * (1 - 6 * s + 6 * s * s))
            if order == 3:
                return ds * (1 - 6 * s + 6 * s * s)
            return ds if order == 1 else ds * (1 - 2 * s)

        return logistic
    if name == "elu":
        al = p["alpha"]

        def elu(z: Any) -> Any:
            e = al * xp.exp(xp.minimum(z, 0.0))
            if deriv == 0:
                return xp.where(z > 0, z, e - al)
            return xp.where(z > 0, 1.0 if deriv == 1 else 0.0, e)

        return elu
    if name == "monomial":
        k = int(p["p"])
        if deriv > k:
            return lambda z: xp.zeros_like(z)
        c = math.perm(k, deriv)
        return lambda z: c * z ** (k - deriv)
    raise ValueError(f"unknown built-in activation {name!r}")


def array_functions(xp: Any, name: str, params: dict[str, float]) -> tuple[ArrayFn, ArrayFn]:
    """(σ, σ') of a built-in in the namespace ``xp``."""
    return array_function(xp, name, params, 0), array_function(xp, name, params, 1)
