"""Gaussian expectations against closed forms, identities and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rgflow
from rgflow import expect


def cov2(k11: float, k22: float, rho: float) -> np.ndarray:
    k12 = rho * math.sqrt(k11 * k22)
    return np.array([[k11, k12], [k12, k22]])


# ---------------------------------------------------------------- closed forms
@pytest.mark.parametrize("rho", [-0.95, -0.3, 0.0, 0.4, 0.9, 0.999])
@pytest.mark.parametrize("k11,k22", [(1.0, 1.0), (2.3, 0.4)])
def test_relu_arccos_kernels(k11: float, k22: float, rho: float) -> None:
    """Arc-cosine kernels of order 1 and 0 (book 5.158/5.161), and the delta term ⟨σ''σ⟩ (spec §4c)."""
    K = cov2(k11, k22, rho)
    psi = math.acos(rho)
    exact1 = math.sqrt(k11 * k22) / (2 * math.pi) * (math.sin(psi) + (math.pi - psi) * rho)
    exact0 = 0.5 - psi / (2 * math.pi)
    assert expect(K, [(0, 0), (1, 0)], "relu") == pytest.approx(exact1, rel=1e-10, abs=1e-12)
    assert expect(K, [(0, 1), (1, 1)], "relu") == pytest.approx(exact0, rel=1e-10, abs=1e-12)
    exact_delta = math.sqrt(k11 * k22 - K[0, 1] ** 2) / (2 * math.pi * k11)
    assert expect(K, [(0, 2), (1, 0)], "relu") == pytest.approx(exact_delta, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("a", [0.0, 0.1, -0.5, 2.0])
def test_leaky_relu_closed_forms(a: float) -> None:
    """General a± kernels (5.159) and ⟨σ'σ'⟩ (5.161) extended to unequal norms."""
    k11, k22, rho = 1.7, 0.6, 0.35
    K = cov2(k11, k22, rho)
    psi = math.acos(rho)
    ap, am = 1.0, a
    kd = math.sqrt(k11 * k22)
    ss = kd / (2 * math.pi) * (ap - am) ** 2 * (math.sin(psi) - psi * rho) + (ap**2 + am**2) / 2 * kd * rho
    pp = (ap**2 + am**2) / 2 - psi / (2 * math.pi) * (ap - am) ** 2
    act = rgflow.Activation("leaky_relu", slope=a)
    assert expect(K, [(0, 0), (1, 0)], act) == pytest.approx(ss, rel=1e-10)
    assert expect(K, [(0, 1), (1, 1)], act) == pytest.approx(pp, rel=1e-10)


@pytest.mark.parametrize("K", [cov2(0.9, 2.1, -0.4), cov2(3.0, 3.0, 0.97), cov2(0.05, 0.2, 0.5)])
def test_erf_arcsine_kernel(K: np.ndarray) -> None:
    exact = 2 / math.pi * math.asin(2 * K[0, 1] / math.sqrt((1 + 2 * K[0, 0]) * (1 + 2 * K[1, 1])))
    assert expect(K, [(0, 0), (1, 0)], "erf") == pytest.approx(exact, rel=1e-10, abs=1e-13)


def test_single_input_moments() -> None:
    """ReLU: ⟨σ²⟩ = K/2, ⟨σ⁴⟩ = 3K²/2 (5.114); tanh'(0) moments against a direct series."""
    K = np.array([[1.7]])
    assert expect(K, [(0, 0), (0, 0)], "relu") == pytest.approx(0.85, rel=1e-13)
    assert expect(K, [(0, 0)] * 4, "relu") == pytest.approx(1.5 * 1.7**2, rel=1e-12)
    # ⟨sin(z)⟩ = 0, ⟨cos(z)⟩ = e^{-K/2}: ⟨sin'⟩
    assert expect(K, [(0, 1)], "sin") == pytest.approx(math.exp(-0.85), rel=1e-13)
    # monomial p=3: ⟨z³ z³⟩ = 15 K³
    assert expect(K, [(0, 0), (0, 0)], rgflow.Activation("monomial", p=3)) == pytest.approx(15 * 1.7**3, rel=1e-12)


def test_isserlis_four_point_linear_and_monomial() -> None:
    K = np.array([[1.0, 0.3, 0.2, 0.1], [0.3, 1.5, 0.4, 0.2], [0.2, 0.4, 0.8, 0.3], [0.1, 0.2, 0.3, 1.2]])
    exact = K[0, 1] * K[2, 3] + K[0, 2] * K[1, 3] + K[0, 3] * K[1, 2]
    assert expect(K, [(0, 0), (1, 0), (2, 0), (3, 0)], "linear") == pytest.approx(exact, rel=1e-12)
    sq = rgflow.Activation("monomial", p=2)
    assert expect(K[:2, :2], [(0, 0), (1, 0)], sq) == pytest.approx(K[0, 0] * K[1, 1] + 2 * K[0, 1] ** 2, rel=1e-12)


@pytest.mark.parametrize("act", ["gelu", "tanh", "swish", "softplus", "sigmoid", "erf", "relu", "elu"])
def test_stein_identity(act: str) -> None:
    """⟨z_1 σ(z_1) σ(z_2)⟩ = K11⟨σ'σ⟩ + K12⟨σσ'⟩ (Gaussian integration by parts)."""
    K = cov2(1.4, 0.8, 0.45)
    lhs = expect(K, [(0, "z", 1), (0, 0), (1, 0)], act)
    rhs = K[0, 0] * expect(K, [(0, 1), (1, 0)], act) + K[0, 1] * expect(K, [(0, 0), (1, 1)], act)
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("act", ["gelu", "tanh", "relu", "leaky_relu"])
def test_price_theorem_second_derivatives(act: str) -> None:
    """d/dK12 ⟨σ^(m)σ^(m)⟩ = ⟨σ^(m+1)σ^(m+1)⟩ (Price), by finite differences in K12; for relu the
    right-hand side is a delta-function expectation."""
    h = 1e-4
    for m in (0, 1):

        def f(k12: float, m: int = m) -> float:
            return expect(np.array([[1.2, k12], [k12, 0.9]]), [(0, m), (1, m)], act)

        fd = (f(0.3 + h) - f(0.3 - h)) / (2 * h)
        exact = expect(np.array([[1.2, 0.3], [0.3, 0.9]]), [(0, m + 1), (1, m + 1)], act)
        assert exact == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_gelu_orders_agree() -> None:
    """Two quadrature orders agree to 1e-10 on 2-D gelu expectations of several derivatives."""
    K = cov2(3.5, 2.0, 0.7)
    for factors in ([(0, 0), (1, 0)], [(0, 1), (1, 1)], [(0, 4), (1, 0)], [(0, 3), (1, 1)]):
        a = expect(K, factors, "gelu", order=40, method="quadrature")
        b = expect(K, factors, "gelu", order=80, method="quadrature")
        assert a == pytest.approx(b, rel=1e-10, abs=1e-12)
        assert expect(K, factors, "gelu") == pytest.approx(b, rel=1e-12, abs=1e-13)  # closed form
    v, err, used = rgflow.expect_with_error(K, [(0, 0), (1, 0)], "gelu", method="quadrature")
    assert err < 1e-12 and used >= 8
    assert rgflow.expect_with_error(K, [(0, 0), (1, 0)], "gelu")[1:] == (0.0, 0)


def test_default_is_accurate_for_large_variance_tanh() -> None:
    """Spec §9 pitfall: GH converges slowly for tanh at K≈3; the adaptive default reaches 1e-10."""
    K = np.array([[3.0]])
    ref = expect(K, [(0, 0), (0, 0)], "tanh", order=300)
    assert expect(K, [(0, 0), (0, 0)], "tanh") == pytest.approx(ref, rel=1e-11)


# ---------------------------------------------------------------- degenerate covariances
def test_repeated_and_degenerate_samples() -> None:
    K3 = np.array([[1.2, 1.2, 0.3], [1.2, 1.2, 0.3], [0.3, 0.3, 0.9]])
    K2 = np.array([[1.2, 0.3], [0.3, 0.9]])
    for act in ("tanh", "relu", "gelu"):
        a = expect(K3, [(0, 0), (1, 0), (2, 0), (2, 0)], act)
        b = expect(K2, [(0, 0), (0, 0), (1, 0), (1, 0)], act)
        assert a == pytest.approx(b, rel=1e-11)
    # zero variance: z = 0 exactly
    Kz = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert expect(Kz, [(0, 0), (1, 1)], "gelu") == pytest.approx(0.5 * expect([[1.0]], [(0, 0)], "gelu"), abs=1e-14)
    # rank-2 block of 3 samples (z3 = z1 + z2)
    Kr = np.array([[1.0, 0.2, 1.2], [0.2, 0.5, 0.7], [1.2, 0.7, 1.9]])
    rng = np.random.default_rng(1)
    z = rng.standard_normal((400_000, 2)) @ np.linalg.cholesky(Kr[:2, :2]).T
    mc = np.tanh(z[:, 0]) * np.tanh(z[:, 1]) * np.tanh(z.sum(1))
    val = expect(Kr, [(0, 0), (1, 0), (2, 0)], "tanh")
    assert abs(val - mc.mean()) < 5 * mc.std() / math.sqrt(len(mc))


# ---------------------------------------------------------------- hypothesis properties
def random_psd(seed: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d + 1))
    return A @ A.T / (d + 1) + 0.05 * np.eye(d)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["tanh", "relu", "gelu", "erf"]))
def test_permutation_and_symmetry(seed: int, act: str) -> None:
    K = random_psd(seed, 3)
    perm = np.random.default_rng(seed).permutation(3)
    inv = np.argsort(perm)
    Kp = K[np.ix_(perm, perm)]
    factors = [(0, 0), (1, 1), (2, 0), (2, 1)]
    permuted = [(int(inv[s]), m) for s, m in factors]
    assert expect(K, factors, act, order=24) == pytest.approx(expect(Kp, permuted, act, order=24), rel=1e-12, abs=1e-14)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["tanh", "relu", "gelu"]))
def test_marginalisation_consistency(seed: int, act: str) -> None:
    """A 4-D expectation whose factors use 2 samples equals the 2-D one on the sub-block."""
    K = random_psd(seed, 4)
    four = expect(K, [(1, 0), (3, 1)], act)
    two = expect(K[np.ix_([1, 3], [1, 3])], [(0, 0), (1, 1)], act)
    assert four == pytest.approx(two, rel=1e-11, abs=1e-13)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batch_equals_loop(seed: int) -> None:
    Ks = np.stack([random_psd(seed + i, 2) for i in range(5)])
    batch = expect(Ks, [(0, 0), (1, 0)], "gelu", order=32)
    loop = [expect(k, [(0, 0), (1, 0)], "gelu", order=32) for k in Ks]
    np.testing.assert_allclose(batch, loop, rtol=1e-14)


# ---------------------------------------------------------------- custom activations
def test_custom_callable_matches_builtin() -> None:
    act = rgflow.Activation.from_callable(
        np.tanh, derivatives=[lambda z: 1 - np.tanh(z) ** 2, lambda z: -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)]
    )
    K = cov2(1.1, 0.7, 0.3)
    for factors in ([(0, 0), (1, 0)], [(0, 1), (1, 1)], [(0, 2), (1, 0)]):
        # different rules (the built-in splits at 0), both converged by the adaptive default
        assert expect(K, factors, act) == pytest.approx(expect(K, factors, "tanh"), rel=1e-11)
    with pytest.raises(ValueError, match="derivative"):
        expect(K, [(0, 3), (1, 0)], act)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "K,msg",
    [
        ([[1.0, 0.5], [0.4, 1.0]], "symmetric"),
        ([[1.0, 2.0], [2.0, 1.0]], "positive semi-definite"),
        ([[np.nan, 0.0], [0.0, 1.0]], "NaN"),
        ([[-1.0]], "negative|positive"),
        (np.ones((2, 3)), "shape"),
    ],
)
def test_bad_covariances(K: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        expect(K, [(0, 0)], "tanh")


def test_bad_factors_and_activation() -> None:
    K = np.eye(2)
    with pytest.raises(ValueError, match="unknown activation"):
        expect(K, [(0, 0)], "nope")
    with pytest.raises(ValueError, match="sample index"):
        expect(K, [(2, 0)], "tanh")
    with pytest.raises(ValueError, match="not defined"):
        expect(K, [(0, 2), (0, 0)], "relu")  # δ(z)·σ(z) at one sample: a product of distributions
    with pytest.raises(TypeError):
        expect(K, [(0, 0)], 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="singular|linearly"):
        expect(np.ones((2, 2)), [(0, 2), (1, 0)], "relu")
