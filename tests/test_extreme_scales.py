"""Expectations and theory at extreme scales (issue 16): saturating activations at huge variance,
strongly anisotropic inputs, custom callables against the built-in, non-finite custom values."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from scipy.integrate import quad

import rgflow
from rgflow import MLP, Activation, expect, theory

X3 = np.array([[0.9, -0.4], [0.3, 1.1], [-0.6, 0.2]])


def _sech2(z: float) -> float:
    e = np.exp(-2.0 * abs(z))
    return float(4.0 * e / (1.0 + e) ** 2)


def _tanh_prime_mean(K: float) -> float:
    """⟨tanh'(z)⟩ at z ~ N(0, K) by adaptive quadrature with breakpoints (independent reference)."""
    f = lambda z: _sech2(z) * np.exp(-z * z / (2.0 * K))  # noqa: E731
    pieces = [(0, 1), (1, 5), (5, 20), (20, 60)]
    s = sum(quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0] for a, b in pieces)
    return 2.0 * s / np.sqrt(2.0 * np.pi * K)


def _pieces(f: Callable[[float], float], edges: list[float]) -> float:
    """∫ f over consecutive pieces between sorted edges (scipy quad)."""
    return sum(quad(f, lo, hi, epsabs=1e-15, epsrel=1e-12, limit=200)[0] for lo, hi in itertools.pairwise(edges))


def _tanh_sq_pair(k11: float, k12: float, k22: float) -> float:
    """⟨tanh(z1) tanh(z2)⟩ by nested scipy quadrature in the Cholesky coordinates."""
    s1 = np.sqrt(k11)
    a = k12 / s1
    r = np.sqrt(k22 - a * a)

    def inner(u: float) -> float:
        m = a * u
        g = lambda v: np.tanh(m + r * v) * np.exp(-v * v / 2)  # noqa: E731
        c = -m / r
        pts = sorted({c - 20 / r, c, c + 20 / r})
        edges = [-12.0] + [p for p in pts if -12 < p < 12] + [12.0]
        return _pieces(g, edges)

    h = lambda u: np.tanh(s1 * u) * inner(u) * np.exp(-u * u / 2)  # noqa: E731
    edges = [-12.0, -20 / s1, 0.0, 20 / s1, 12.0]
    tot = _pieces(h, edges)
    return tot / (2 * np.pi)


@pytest.mark.parametrize("K", [1e2, 1e4, 1e6, 1e8, 1e10])
def test_tanh_prime_at_huge_variance(K: float) -> None:
    """⟨tanh'⟩ ≈ 2/√(2πK) at large K: the transition region (width O(1)) is resolved at any scale
    (before: 0.3 % off at 1e6 and 0.0 at 1e8)."""
    want = _tanh_prime_mean(K)
    assert expect([[K]], [(0, 1)], "tanh") == pytest.approx(want, rel=1e-12)
    assert expect([[K]], [(0, 1)], "tanh", method="quadrature", order=64) == pytest.approx(want, rel=1e-12)
    if K >= 1e6:
        assert want == pytest.approx(2 / np.sqrt(2 * np.pi * K), rel=2 / K)


@pytest.mark.parametrize("act", ["sigmoid", "softplus", "swish"])
def test_saturating_builtins_at_huge_variance(act: str) -> None:
    """⟨σ'⟩ at K = 1e8 against its large-K limit: σ'(±∞) averaged, plus the O(1/√K) transition term
    ∫(σ' - σ'(∞)θ(z) - σ'(-∞)θ(-z)) dz / √(2πK)."""
    K = 1e8
    lim = {"sigmoid": 0.0, "softplus": 0.5, "swish": 0.5}[act]
    # transition integrals: sigmoid ∫σ' = 1; softplus ∫(sigmoid - θ) = 0; swish ∫(swish' - θ) = 0
    trans = {"sigmoid": 1.0, "softplus": 0.0, "swish": 0.0}[act]
    want = lim + trans / np.sqrt(2 * np.pi * K)
    assert expect([[K]], [(0, 1)], act) == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_tanh_theory_at_large_inputs() -> None:
    """theory with x = 100·X3 (K ≈ 5e3): the layer-2 kernel against an independent nested
    quadrature, and the default order against a finer explicit one (before: A off by 10 %)."""
    net = MLP("tanh", depth=3, width=10, C_b=0.0, C_W=1.0)
    x = 100 * X3
    th = theory(net, x)
    k = th.K[0]
    for a, b in [(0, 0), (0, 2), (1, 2)]:
        want = _tanh_sq_pair(k[a, a], k[a, b], k[b, b]) if a != b else None
        if want is not None:
            assert th.K[1][a, b] == pytest.approx(want, rel=1e-9)
    fine = theory(net, x, quad_order=48)
    for name in ("K", "K1", "V", "A", "Theta1"):
        got, ref = getattr(th, name), getattr(fine, name)
        assert np.max(np.abs(got - ref)) <= 1e-9 * np.max(np.abs(ref)), name


def test_relu_anisotropic_inputs_scale_exactly() -> None:
    """relu is positively homogeneous: x = diag(1e6, 1) gives the unit-input tensors scaled by
    λ_a λ_b (λ_a λ_b λ_c λ_d).  Before, the variance-1 sample counted as degenerate next to the
    variance-1e12 one (K12 = 0 at layer 2)."""
    lam = np.array([1e6, 1.0])
    net = MLP("relu", depth=4, width=10, C_b=0.0, C_W=2.0, lambda_b=0.0)
    big, unit = theory(net, np.diag(lam)), theory(net, np.eye(2))
    for name in ("K", "K1", "V", "Theta", "Theta1", "A", "B", "D", "F"):
        u = getattr(unit, name)
        s = np.ones(u.shape[1:])
        for ax in range(u.ndim - 1):
            shape = [1] * (u.ndim - 1)
            shape[ax] = 2
            s = s * lam.reshape(shape)
        want = u * s
        got = getattr(big, name)
        assert np.max(np.abs(got - want) / (np.abs(want) + 1e-12 * np.max(np.abs(want)))) < 1e-9, name
    # the covariance itself: ⟨relu relu⟩ at diag(1e12, 1) = 1e6 / (2π)
    assert expect(np.diag([1e12, 1.0]), [(0, 0), (1, 0)], "relu") == pytest.approx(1e6 / (2 * np.pi), rel=1e-13)
    assert expect(np.diag([1e12, 1.0]), [(0, 0), (1, 0)], "tanh") == pytest.approx(0.0, abs=1e-12)


def _tanh_jets() -> list:
    t = np.tanh
    return [
        lambda z: t(z),
        lambda z: 1 - t(z) ** 2,
        lambda z: -2 * t(z) * (1 - t(z) ** 2),
        lambda z: (1 - t(z) ** 2) * (6 * t(z) ** 2 - 2),
        lambda z: (1 - t(z) ** 2) * (16 * t(z) - 24 * t(z) ** 3),
        lambda z: (1 - t(z) ** 2) * (16 - 120 * t(z) ** 2 + 120 * t(z) ** 4),
    ]


def test_custom_tanh_matches_builtin() -> None:
    """tanh as a custom callable with exact derivatives gets the built-in's quadrature (split at
    the centre): every tensor agrees to ~1e-12 (before: A 2.8e-6 off)."""
    f = _tanh_jets()
    custom = Activation.from_callable(f[0], derivatives=f[1:], name="mytanh")
    net_b = MLP("tanh", depth=4, width=10, C_b=0.0, C_W=1.0)
    net_c = MLP(custom, depth=4, width=10, C_b=0.0, C_W=1.0)
    tb, tc = theory(net_b, X3), theory(net_c, X3)
    for name in ("K", "K1", "V", "Theta1", "A", "B", "D", "F"):
        b, c = getattr(tb, name), getattr(tc, name)
        assert np.max(np.abs(b - c)) <= 1e-10 * max(1.0, np.max(np.abs(b))), name
    assert expect([[1e8]], [(0, 1)], custom) == pytest.approx(_tanh_prime_mean(1e8), rel=1e-12)


def test_custom_nan_far_from_origin_raises() -> None:
    """A custom activation that is NaN only for |z| > 6 is reported at construction (a warning
    naming the nearest probe point) and raises (naming it and the point) as soon as the quadrature
    reaches that region."""
    f = _tanh_jets()
    nan_far = [lambda z, g=g: np.where(np.abs(z) > 6, np.nan, g(z)) for g in f]
    with pytest.warns(RuntimeWarning, match=r"'nan_far': derivative 0 is not finite at z = (-)?10"):
        act = Activation.from_callable(nan_far[0], derivatives=nan_far[1:], name="nan_far")
    with pytest.raises(ValueError, match=r"custom activation 'nan_far' derivative 0 returned a non-finite value"):
        expect([[1.0]], [(0, 0), (0, 0)], act)
    with pytest.raises(ValueError, match="nan_far"):
        theory(MLP(act, depth=3, width=10), X3)


def test_unconverged_expectations_raise() -> None:
    """sin oscillates on the scale 1 at any variance: at K = 1e8 no order reaches tol, so expect
    raises (expect_with_error reports the estimate), and theory refuses the block."""
    with pytest.raises(ValueError, match="did not converge"):
        expect([[1e8]], [(0, 0), (0, 0)], "sin")
    v, err, _ = rgflow.expect_with_error([[1e8]], [(0, 0), (0, 0)], "sin")
    assert err > 1e-6
    assert expect([[1e4]], [(0, 0), (0, 0)], "sin") == pytest.approx(0.5 * (1 - np.exp(-2e4)), rel=1e-12)
    with pytest.raises(ValueError, match="did not converge"):
        theory(MLP("sin", depth=2, width=10), np.array([[1e4, 0.0]]), ntk=False, order=0)
