"""Closed-form expectations (rust/core/src/closed_form.rs, orthant.rs) against independent
oracles and against the quadrature engine, which stays reachable with ``method="quadrature"``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rgflow
from rgflow import expect

CLOSED = ["relu", "leaky_relu", "gelu", "erf", "linear"]


def random_cov(rng: np.random.Generator, d: int, corr: float = 0.0) -> np.ndarray:
    a = rng.normal(size=(d, d + 2))
    a += corr * rng.normal(size=(1, d + 2))  # a shared direction: strongly correlated samples
    k = a @ a.T / (d + 2)
    return k * rng.uniform(0.3, 2.5)


def test_equicorrelated_orthant_is_one_over_d_plus_one() -> None:
    """P(z > 0) = 1/(d+1) for equicorrelation 1/2: ⟨relu'…relu'⟩ in 2, 3 and 4 dimensions."""
    for d in (2, 3, 4):
        K = 0.5 * np.eye(d) + 0.5
        val = expect(K * 1.7, [(i, 1) for i in range(d)], "relu")
        assert val == pytest.approx(1 / (d + 1), abs=1e-15)


def test_block_diagonal_four_point_factorises() -> None:
    """A block-diagonal 4-D covariance: the expectation is the product of two arc-cosine kernels."""
    k = np.zeros((4, 4))
    k[:2, :2] = [[1.3, 1.1], [1.1, 1.2]]
    k[2:, 2:] = [[0.7, -0.6], [-0.6, 0.9]]

    def arccos1(k11: float, k12: float, k22: float) -> float:
        th = math.acos(k12 / math.sqrt(k11 * k22))
        return math.sqrt(k11 * k22) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * math.cos(th))

    want = arccos1(1.3, 1.1, 1.2) * arccos1(0.7, -0.6, 0.9)
    assert expect(k, [(0, 0), (1, 0), (2, 0), (3, 0)], "relu") == pytest.approx(want, rel=1e-14)


def test_gelu_kernel_matches_price_integral() -> None:
    """⟨gelu gelu⟩ = ⟨gelu⟩⟨gelu⟩ + ∫_0^{K12} ⟨gelu' gelu'⟩(c) dc (Price's theorem), the integrand
    being the closed form too: checks the closed-form derivative algebra against itself along c."""
    k11, k22, k12 = 1.4, 0.8, 0.75
    mean = [k / math.sqrt(2 * math.pi * (1 + k)) for k in (k11, k22)]  # ⟨zΦ(z)⟩ = K φ-type term
    nodes, weights = np.polynomial.legendre.leggauss(40)
    cs = 0.5 * k12 * (nodes + 1)
    integrand = [expect(np.array([[k11, c], [c, k22]]), [(0, 1), (1, 1)], "gelu") for c in cs]
    want = mean[0] * mean[1] + 0.5 * k12 * float(np.dot(weights, integrand))
    got = expect(np.array([[k11, k12], [k12, k22]]), [(0, 0), (1, 0)], "gelu")
    assert got == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("act", CLOSED)
def test_closed_form_matches_quadrature_four_point_patterns(act: str) -> None:
    """All eight σ/σ' patterns of a strongly correlated 4-D block, closed form vs quadrature
    (order 20: the quadrature's own error is ~1e-7 here; it converges to the closed form, e.g.
    erf σ'σ'σσ: |Δ| = 4e-9 at order 20, 3e-12 at order 28)."""
    rng = np.random.default_rng(3)
    K = random_cov(rng, 4, corr=1.5)
    for mask in range(16):
        if bin(mask).count("1") % 2:
            continue
        factors = [(i, (mask >> i) & 1) for i in range(4)]
        a = expect(K, factors, act)
        b = expect(K, factors, act, order=20, method="quadrature")
        assert a == pytest.approx(b, rel=2e-6, abs=1e-9), (mask, a, b)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    act=st.sampled_from(CLOSED),
    d=st.integers(1, 3),
    data=st.data(),
)
def test_closed_form_matches_quadrature_random(seed: int, act: str, d: int, data: st.DataObject) -> None:
    """Random covariances (1–3 samples), random products of derivatives and powers of z."""
    rng = np.random.default_rng(seed)
    K = random_cov(rng, d, corr=data.draw(st.sampled_from([0.0, 1.0])))
    n_factors = data.draw(st.integers(1, 4))
    factors: list = []
    for _ in range(n_factors):
        s = data.draw(st.integers(0, d - 1))
        if data.draw(st.booleans()) and d == 1:
            factors.append((s, "z", data.draw(st.integers(1, 2))))
        else:
            factors.append((s, data.draw(st.integers(0, 1 if act in ("relu", "leaky_relu") else 3))))
    a = expect(K, factors, act)
    b = expect(K, factors, act, order={1: 160, 2: 64, 3: 28}[d], method="quadrature")
    assert a == pytest.approx(b, rel=1e-8, abs=1e-9), (act, d, factors, a, b)


def test_quadrature_path_still_matches_oracles() -> None:
    """The quadrature engine (used for tanh, swish, …, and for blocks the closed forms decline)
    keeps its accuracy on the relu arc-cosine and erf arcsine kernels."""
    k11, k22, rho = 1.3, 0.8, 0.95
    k12 = rho * math.sqrt(k11 * k22)
    K = np.array([[k11, k12], [k12, k22]])
    th = math.acos(rho)
    arccos1 = math.sqrt(k11 * k22) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * math.cos(th))
    assert expect(K, [(0, 0), (1, 0)], "relu", method="quadrature") == pytest.approx(arccos1, rel=1e-12)
    arcsin = 2 / math.pi * math.asin(2 * k12 / math.sqrt((1 + 2 * k11) * (1 + 2 * k22)))
    assert expect(K, [(0, 0), (1, 0)], "erf", method="quadrature") == pytest.approx(arcsin, rel=1e-11)


def test_declined_blocks_fall_back_exactly() -> None:
    """Singular relu blocks and relu pair derivatives (delta functions) go to quadrature."""
    K = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert expect(K, [(0, 0), (1, 0)], "relu") == pytest.approx(0.5, abs=1e-14)
    K = np.array([[1.3, 1.0], [1.0, 0.9]])
    a = expect(K, [(0, 2), (1, 0)], "relu")  # δ(z0) relu(z1)
    b = expect(K, [(0, 2), (1, 0)], "relu", method="quadrature")
    assert a == b


def test_theory_methods_agree() -> None:
    """All first-order tensors: closed forms vs quadrature (the quadrature's own error ~1e-8)."""
    x = np.random.default_rng(0).normal(size=(4, 3))
    for act in ("gelu", "relu", "erf"):
        net = rgflow.MLP.critical(act, 4, width=32)
        a = rgflow.theory(net, x)
        b = rgflow.theory(net, x, expectations="quadrature")
        for name in ("K", "K1", "Theta", "Theta1", "V", "D", "F", "A", "B"):
            ta, tb = getattr(a, name), getattr(b, name)
            assert np.max(np.abs(ta - tb)) <= 1e-7 * np.max(np.abs(tb)), (act, name)


def test_bad_method() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        expect(np.eye(1), [(0, 0)], "relu", method="exact")
    net = rgflow.MLP.critical("relu", 2, width=8)
    with pytest.raises(ValueError, match="method must be one of"), pytest.warns(DeprecationWarning, match="method="):
        rgflow.theory(net, np.ones((2, 2)), method="fast")
    with pytest.raises(ValueError, match="expectations must be one of"):
        rgflow.theory(net, np.ones((2, 2)), expectations="fast")
