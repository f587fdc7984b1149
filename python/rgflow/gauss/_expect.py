"""Gaussian expectations ⟨Π_k f_k(z_{a_k})⟩ for z ~ N(0, K) (book eq. 1.68 / 4.25).

Each factor is an activation derivative σ^(m)(z_a) or a power z_a^p.  For relu, leaky_relu,
gelu, erf, linear and monomials the expectation is computed in closed form (Stein's identity
down to centred orthant probabilities, ``rust/core/src/closed_form.rs``); otherwise (and with
``method="quadrature"``) by nested quadrature, where kinked activations (relu, leaky_relu, elu)
are integrated exactly: the line is split at the kink and the delta functions in their higher
derivatives are integrated analytically.
Degenerate covariances (repeated samples, rank deficiency, zero variance) are handled by
exact marginalisation, not jitter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._util.limits import max_evaluations
from .._util.native import core as _core
from .._util.validation import check_finite, check_int, check_optional_int, real, real_array
from ..activations import Activation, as_activation

Factor = tuple[int, int] | tuple[int, str, int]
#: One sample's term as the core takes it: (derivative order, power of z, σ-derivative orders).
TermSpec = tuple[int, int, Sequence[int]]

#: Largest quadrature order the adaptive rule may reach, per number of integrated samples.
MAX_ADAPTIVE_ORDER = {1: 320, 2: 128, 3: 48, 4: 28}


def sigma(sample: int, deriv: int = 0) -> tuple[int, int]:
    """Factor σ^(deriv)(z_sample)."""
    return (int(sample), int(deriv))


def zpow(sample: int, power: int) -> tuple[int, str, int]:
    """Factor z_sample^power."""
    return (int(sample), "z", int(power))


def core_activation(act: Activation) -> tuple[Any, ...]:
    """The activation as the tuple the Rust core understands."""
    if act.is_custom:
        return ("custom", act.label, [act.function, *act.derivatives])
    name, params = act.spec()
    return ("builtin", name, params)


def _terms(core_act: tuple[Any, ...], factors: Sequence[Factor], d: int, max_deriv: int) -> list[TermSpec]:
    orders: list[list[int]] = [[] for _ in range(d)]
    zp = [0] * d
    if len(factors) == 0:
        raise ValueError("factors is empty; give at least one (sample, derivative) factor")
    for f in factors:
        if not isinstance(f, tuple) or len(f) not in (2, 3):
            raise TypeError(f"each factor must be (sample, derivative) or (sample, 'z', power), got {f!r}")
        s = f[0]
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < d:
            raise ValueError(f"factor {f!r}: sample index must be an int in 0..{d - 1} for a {d}x{d} covariance")
        if len(f) == 2:
            m = f[1]
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= max_deriv:
                raise ValueError(f"factor {f!r}: derivative order must be an int in 0..{max_deriv}")
            orders[s].append(int(m))
        else:
            if f[1] != "z" or isinstance(f[2], bool) or not isinstance(f[2], (int, np.integer)) or f[2] < 0:
                raise ValueError(f"factor {f!r}: a power factor is (sample, 'z', p) with integer p >= 0")
            zp[s] += int(f[2])
    out: list[TermSpec] = []
    for k in range(d):
        if not orders[k] and zp[k] == 0:
            out.append((0, 0, []))
        elif not orders[k]:
            out.append((0, zp[k], []))
        else:
            out.append(_core.term_from_factors(core_act, orders[k], zp[k]))
    return out


#: Accepted values of the ``method`` argument.
METHODS = ("auto", "quadrature")


def quadrature_only(method: str, name: str = "method") -> bool:
    """Validate ``method`` ("auto": closed forms where they exist, else quadrature;
    "quadrature": always the nested quadrature rule; ``name``: the argument's name in errors)
    and return whether to skip closed forms."""
    if method not in METHODS:
        raise ValueError(f"{name} must be one of {METHODS}, got {method!r}")
    return method == "quadrature"


def _order_cap(d: int, max_order: int | None) -> int:
    if max_order is None:
        return MAX_ADAPTIVE_ORDER.get(d, 24)
    return check_int("max_order", max_order, minimum=1, maximum=480, hint=" or None (default per dimension)")


def _covariance(K: Any, *, batch: bool) -> np.ndarray:
    """K as a real float64 (d, d) (or, with ``batch``, (B, d, d)) array with finite entries."""
    arr = real_array("K", K)
    ok = arr.ndim in ((2, 3) if batch else (2,)) and arr.shape[-1] == arr.shape[-2] and arr.shape[-1] > 0
    if not ok:
        shapes = "(d, d) or (B, d, d)" if batch else "(d, d)"
        raise ValueError(f"K must have shape {shapes} with d >= 1, got shape {arr.shape}")
    return check_finite("K", arr, "; a covariance must be finite")


def _finite_value(vals: Any, K: np.ndarray, act: Activation) -> np.ndarray:
    """The core's values if finite; else a ValueError naming the cause (the scale of K, or the activation)."""
    out = np.asarray(vals, dtype=float)
    if not np.all(np.isfinite(out)):
        kmax = float(np.max(np.abs(K)))
        who = f"the custom activation {act.label!r}" if act.is_custom else f"{act!r}"
        raise ValueError(
            f"the expectation is not finite in float64: the factors of {who} at the scale of K "
            f"(max |K| = {kmax:.3g}) overflow; rescale K (or the activation's values)"
        )
    return out


def _check_tol(tol: Any) -> None:
    if not real("tol", tol) > 0:
        raise ValueError(f"tol must be > 0 (the adaptive rule's target accuracy), got tol={tol!r}")


def expect(
    K: Any,
    factors: Sequence[Factor],
    activation: str | Activation = "relu",
    *,
    order: int | None = None,
    tol: float = 1e-12,
    method: str = "auto",
    max_order: int | None = None,
) -> float | np.ndarray:
    """⟨Π_k f_k⟩ under z ~ N(0, K).

    Parameters
    ----------
    K: covariance of the d samples involved, shape (d, d), or a batch (B, d, d).
    factors: ``(a, m)`` for σ^(m)(z_a), ``(a, "z", p)`` for z_a^p (see :func:`sigma`, :func:`zpow`).
        Several factors may share a sample (a product); for kinked activations a factor that
        carries delta functions (σ'' of relu) must stand alone on its sample.
    activation: name or :class:`~rgflow.Activation` (including custom callables).
    order: quadrature nodes per piece and level.  ``None`` (default) chooses it adaptively:
        the order is raised by 3/2 until two successive values agree to ``tol`` (relative to
        max(1, |value|)), and a ``ValueError`` is raised when they still differ at ``max_order``
        (:func:`expect_with_error` returns the estimate instead); for a batch, the order is fixed
        by this rule on the block with the largest variance and used for all blocks.
    tol: target accuracy of the adaptive rule.  A quadrature pass whose nested rule would need
        more than ``RGFLOW_MAX_EVALUATIONS`` nodes (default 1e8; the core counts the nodes its
        rule builds, between (2·order)^d and (3·order)^d for d correlated samples, one level
        fewer for relu-type activations) is refused with a ValueError stating the estimate and
        the limit.
    method: ``"auto"`` (default) evaluates relu, leaky_relu, linear, monomial, erf and gelu
        expectations in closed form (Stein's identity down to centred orthant probabilities,
        exact to rounding; ``order`` and ``tol`` are then unused) and everything else by
        quadrature; ``"quadrature"`` always uses the nested quadrature rule.

    Returns a float for one block, an array of shape (B,) for a batch.
    """
    act = as_activation(activation)
    core_act = core_activation(act)
    arr = _covariance(K, batch=True)
    single = arr.ndim == 2
    order = check_optional_int("order", order, minimum=1, maximum=320, hint=" or None (adaptive)")
    _check_tol(tol)
    qonly = quadrature_only(method)
    d = arr.shape[-1]
    max_deriv = act.max_derivative
    its = [_terms(core_act, factors, d, max_deriv)]
    batch = arr[None] if single else arr
    if batch.shape[0] == 0:
        return np.zeros(0)
    batch = np.ascontiguousarray(batch)
    if order is None:
        worst = int(np.argmax(np.einsum("bii->b", batch)))
        cap = _order_cap(d, max_order)
        vals, err, used = _core.expect_adaptive(
            core_act, batch[worst], its, tol, cap, qonly, max_evals=max_evaluations()
        )
        if err > tol:
            raise ValueError(
                f"expect did not converge for activation {act.label!r}: successive quadrature orders "
                f"(up to order {min(used, cap)}, max_order={cap}) still differ by {err:.2e} > tol={tol:g} "
                f"at variance {float(np.max(np.diagonal(batch[worst]))):.3e}; the requested accuracy cannot be "
                "met: raise max_order or tol, or use expect_with_error for the estimate"
            )
        if single:
            return float(_finite_value(vals, arr, act)[0])
        order = used
    raw = _core.expect_batch(core_act, batch, its, int(order), qonly, max_evals=max_evaluations())
    out = _finite_value(raw, batch, act)
    return float(out[0]) if single else np.asarray(out)


def expect_with_error(
    K: Any,
    factors: Sequence[Factor],
    activation: str | Activation = "relu",
    *,
    tol: float = 1e-12,
    method: str = "auto",
) -> tuple[float, float, int]:
    """Adaptive :func:`expect` for one block returning (value, error estimate, order used);
    a block done in closed form reports error 0.0 and order 0."""
    act = as_activation(activation)
    core_act = core_activation(act)
    arr = _covariance(K, batch=False)
    _check_tol(tol)
    d = arr.shape[0]
    its = [_terms(core_act, factors, d, act.max_derivative)]
    vals, err, used = _core.expect_adaptive(
        core_act,
        np.ascontiguousarray(arr),
        its,
        tol,
        MAX_ADAPTIVE_ORDER.get(d, 24),
        quadrature_only(method),
        max_evals=max_evaluations(),
    )
    return float(_finite_value(vals, arr, act)[0]), float(err), int(used)
