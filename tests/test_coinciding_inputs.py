"""Kinked activations (relu, leaky relu, elu) at coinciding, collinear and zero inputs (issues 16, 17).

The derivative form contracts the tensors of a pair of inputs with expectations of products of
delta functions that diverge like (1 - rho^2)^(-k/2) as the pair's kernel block becomes singular;
the contraction stays finite.  Singular blocks are evaluated exactly in the range of the block and
blocks with 1 - rho^2 <= 1e-5 in their coincidence limit (``rgflow-core`` ``expect::collinear``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgflow import MLP, Activation, expect, sample, theory
from rgflow.testing import reference

KINKED = ["relu", Activation("leaky_relu", slope=0.2), Activation("elu", alpha=0.7)]


def _moved_copy(x: np.ndarray, delta: float, direction: np.ndarray) -> np.ndarray:
    """x with a copy of its first row moved by delta along a unit direction appended."""
    return np.vstack([x, x[0] + delta * direction / np.linalg.norm(direction)])


# ------------------------------------------------------------------- continuity at coincidence
@settings(max_examples=12, deadline=None)
@given(
    act=st.sampled_from(KINKED),
    seed=st.integers(0, 10_000),
    k=st.integers(1, 9),
)
def test_moving_a_copy_changes_entries_by_order_angle(act, seed: int, k: int):
    """Θ1, K1, Θ, K entries (a, copy of a moved by δ = 10^-k) approach the (a, a) entries as O(δ)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2))
    delta = 10.0**-k
    xs = _moved_copy(x, delta, rng.standard_normal(2))
    net = MLP(act, depth=4, width=10, C_b=0.1, C_W=1.5, lambda_b=0.5, lambda_W=1.0)
    th = theory(net, xs)
    for name in ("K", "Theta", "K1", "Theta1"):
        t = getattr(th, name)
        assert np.all(np.isfinite(t)), name
        scale = 1.0 + np.abs(t).max()
        diff = np.abs(t[:, 0, 2] - t[:, 0, 0]).max()
        assert diff <= 10 * delta * scale, (name, delta, diff, scale)


def test_theta1_is_linear_and_k1_cubic_in_the_angle():
    """Issue 16 case (relu, C_b = 0.1, C_W = 1, depth 3, x = [[0, 1], [0, 0]] plus a copy of the
    first row moved by δ): the true behaviour is Θ1_{0c} - Θ1_{00} ∝ δ (the |ψ| of ⟨σ'σ'⟩) and
    K1_{0c} ∝ δ³ (the ψ³ of the arc-cosine kernel); at δ = 1e-3 the earlier derivative form
    returned 0.10 (exact: 1.25e-4), at 1e-4 5.6e3."""
    net = MLP("relu", depth=3, width=10, C_b=0.1, C_W=1.0)
    base = np.array([[0.0, 1.0], [0.0, 0.0]])
    t1, k1 = {}, {}
    for delta in (0.02, 0.01, 1e-3, 1e-5, 1e-9):
        th = theory(net, _moved_copy(base, delta, np.array([1.0, 0.0])))
        t1[delta], k1[delta] = th.Theta1[-1, 0, 2], th.K1[-1, 0, 2]
        assert th.Theta1[-1, 0, 0] == 0.0 and abs(th.K1[-1, 0, 0]) < 1e-15  # scale invariance
    slope_t = math.log(t1[0.02] / t1[0.01]) / math.log(2)
    slope_k = math.log(k1[0.02] / k1[0.01]) / math.log(2)
    assert 0.95 < slope_t < 1.05, slope_t
    assert 2.8 < slope_k < 3.2, slope_k
    assert t1[0.01] / 0.01 == pytest.approx(0.1250, abs=2e-3)
    # inside the coincidence threshold (1 - rho^2 <= 1e-5): within O(δ) of the limit 0
    for delta in (1e-3, 1e-5, 1e-9):
        assert abs(t1[delta]) < 0.2 * delta and abs(k1[delta]) < 1e-12, (delta, t1[delta], k1[delta])


def _sampled_check(net: MLP, x: np.ndarray, networks: int, seed: int) -> None:
    th = theory(net, x)
    e = sample(net, x, networks=networks, groups=16, seed=seed, theory=th, progress=False)
    n = net.widths[1]
    for name in ("K1", "Theta1"):
        est, se, exact = getattr(e, name)[-1], getattr(e.stderr, name)[-1], getattr(th, name)[-1]
        allowance = 2.0 * np.abs(exact).max() / n + 1e-3  # O(1/n) remainder of n(E - Θ) - Θ1
        z = np.abs(est - exact) / (se + allowance / 4.5)
        print(name, "theory", exact.ravel(), "sampled", est.ravel(), "±", se.ravel())
        assert np.all(z < 4.5), (name, z)


def test_nearly_coinciding_relu_inputs_match_sampled_networks():
    """Issue 17 case: relu, C_b = 0.1, x = [[1, 0], [1, 1e-4]] (Θ1 was -1e5, values up to 2e14)."""
    net = MLP("relu", depth=3, width=8, C_b=0.1, C_W=2.0, lambda_b=1.0, lambda_W=1.0)
    _sampled_check(net, np.array([[1.0, 0.0], [1.0, 1e-4]]), networks=20_000, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("act", KINKED)
@pytest.mark.parametrize("delta", [1e-2, 1e-3])
def test_small_angle_matches_sampled_networks_slow(act, delta: float):
    net = MLP(act, depth=4, width=8, C_b=0.1, C_W=1.8, lambda_b=1.0, lambda_W=1.0)
    x = np.array([[1.0, 0.0], [1.0, delta], [0.3, -0.9]])
    _sampled_check(net, x, networks=200_000, seed=7)


# ------------------------------------------------------------------- singular blocks at C_b = 0
@pytest.mark.parametrize("act", KINKED, ids=str)
@pytest.mark.parametrize(
    "x",
    [
        [[1.0], [2.0], [-0.5]],  # n0 = 1: every pair collinear
        [[1.0, 0.5], [0.0, 0.0], [2.0, 1.0]],  # a zero row and a collinear pair
        [[0.3, -0.7], [0.3, -0.7], [1.1, 0.2]],  # an exact duplicate
    ],
    ids=["n0=1", "zero-row", "duplicate"],
)
def test_singular_inputs_match_the_reference(act, x):
    """Valid inputs once refused ("linearly dependent or duplicated"): every tensor against the
    independent inverse-kernel reference (restricted pseudo-inverse; exact for range tensors)."""
    x = np.array(x)
    net = MLP(act, depth=3, width=10, C_b=0.0, C_W=1.5, lambda_b=0.5, lambda_W=1.0)
    a, r = theory(net, x), reference.theory(net, x)
    tol = 1e-6 if str(act).startswith("Activation('elu'") else 1e-12
    for name, t in a.tensors().items():
        ref = getattr(r, name)
        assert np.abs(t - ref).max() <= tol * (1 + np.abs(ref).max()), name


def test_positive_multiples_scale_exactly():
    """relu, C_b = λ_b = 0: z_b = c z_a in every network, so each tensor of (x, c x) is the
    single-input tensor times c^(number of indices on the multiple)."""
    x = np.array([[0.8, -0.3, 0.5]])
    c = 2.5
    net = MLP("relu", depth=4, width=10, C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    one, two = theory(net, x), theory(net, np.vstack([x, c * x]))
    for name, t in two.tensors().items():
        idx = np.indices(t.shape[1:])
        power = (idx == 1).sum(axis=0)
        expected = one.tensors()[name][(slice(None),) + (0,) * (t.ndim - 1)][:, None] * c ** power.ravel()
        np.testing.assert_allclose(t.reshape(t.shape[0], -1), expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_zero_input_closed_form():
    """A zero input at C_b = 0 has z ≡ 0 at every layer: K, K1, V vanish on it exactly, and its
    NTK follows Θ' = λ_b + C_W σ'(0)² Θ with the networks' σ'(0) = 1 (right-hand value; for relu
    σ'(0) is a convention, so these entries are convention-dependent), Θ'_{a0} = λ_b + C_W ½ σ'(0) Θ_{a0}."""
    x = np.array([[1.0, -0.5], [0.0, 0.0]])
    lb, cw = 0.5, 1.5
    net = MLP("relu", depth=4, width=10, C_b=0.0, C_W=cw, lambda_b=lb, lambda_W=1.0)
    th = theory(net, x)
    for name in ("K", "K1"):
        assert np.all(getattr(th, name)[:, 1, :] == 0) and np.all(getattr(th, name)[:, :, 1] == 0)
    assert np.all(th.V[:, 1] == 0)
    t_bb, t_ab = lb, lb
    for layer in range(4):
        assert th.Theta[layer, 1, 1] == pytest.approx(t_bb, rel=1e-14)
        assert th.Theta[layer, 0, 1] == pytest.approx(t_ab, rel=1e-14)
        t_bb, t_ab = lb + cw * t_bb, lb + cw * 0.5 * t_ab


# ------------------------------------------------------------------- extreme scales in expect
@pytest.mark.parametrize("act, slope", [("relu", 0.0), (Activation("leaky_relu", slope=0.3), 0.3)])
@pytest.mark.parametrize("scales", [(1e308, 1e308), (1e12, 1.0), (1e-300, 1e-300), (1e200, 1e-200)])
def test_extreme_scales_are_exact(act, slope: float, scales):
    """Issue 16: relu at 1e308·I and diag(1e12, 1) returned 0.0; positive homogeneity rescales exactly."""
    K = np.diag(scales)
    mean = (1 - slope) / math.sqrt(2 * math.pi)  # ⟨σ(z)⟩ / √K
    exact = mean**2 * math.sqrt(scales[0]) * math.sqrt(scales[1])
    assert expect(K, [(0, 0), (1, 0)], act) == pytest.approx(exact, rel=1e-13)
    assert expect(K, [(0, 0), (1, 0)], act, method="quadrature") == pytest.approx(exact, rel=1e-12)
    # ⟨σ''σ''⟩ = (1 - slope)² p(0, 0) at a correlated block of huge scale
    s = 1e300
    rho = 0.5
    K2 = s * np.array([[1.0, rho], [rho, 1.0]])
    dd = (1 - slope) ** 2 / (2 * math.pi * s * math.sqrt(1 - rho**2))
    assert expect(K2, [(0, 2), (1, 2)], act) == pytest.approx(dd, rel=1e-13)
