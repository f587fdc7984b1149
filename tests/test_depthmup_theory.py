"""Depth-μP ResNets at initialisation, infinite width (spec nfd.md §2.1): finite-L recursions in the
Rust core, their L → ∞ depth-ODE limit, and sampled finite networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rgflow
from rgflow.recursions import DepthMuPTheory, depthmup_theory
from rgflow.testing import depthmup_reference

R2 = math.sqrt(2.0)
#: nfd.md §3.1: two inputs at 60° with |x|² = d = 2, so K_in = [[1, ½], [½, 1]].
X60 = np.array([[R2, 0.0], [R2 / 2, R2 * math.sqrt(0.75)]])

#: nfd.md §2.1 table (tanh): L → (K_L, G_0, Θ, Θ_dec), each ([0,0], [0,1]), printed to 5 decimals.
TABLE = {
    4: ((1.41922, 0.69506), (1.51872, 1.40566), (3.42689, 1.61860), (2.83843, 1.39013)),
    16: ((1.42571, 0.69715), (1.53503, 1.41084), (3.47968, 1.63321), (2.85143, 1.39430)),
    64: ((1.42735, 0.69766), (1.53932, 1.41213), (3.49361, 1.63694), (2.85470, 1.39532)),
}
#: The "∞ (Richardson)" row.
TABLE_INF = ((1.42790, 0.69783), (1.54077, 1.41256), (3.49832, 1.63819), (2.85580, 1.39566))
#: Half a unit in the 5th decimal (+ rounding slack).
HALF_ULP5 = 5.1e-6


def net(L: int, act: str = "tanh", **kw) -> rgflow.DepthMuPResNet:
    return rgflow.DepthMuPResNet(act, depth=L, **kw)


def entries(th: DepthMuPTheory) -> tuple[np.ndarray, ...]:
    return th.K[-1], th.G[0], th.Theta, th.Theta_decoupled


@pytest.mark.parametrize("L", sorted(TABLE))
def test_spec_table(L):
    th = rgflow.theory(net(L), X60)
    assert isinstance(th, DepthMuPTheory)
    assert th.K.shape == th.G.shape == (L + 1, 2, 2)
    np.testing.assert_allclose(th.K[0], [[1, 0.5], [0.5, 1]], atol=1e-15)
    for got, want in zip(entries(th), TABLE[L], strict=True):
        assert abs(got[0, 0] - want[0]) < HALF_ULP5, (got, want)
        assert abs(got[0, 1] - want[1]) < HALF_ULP5, (got, want)
        np.testing.assert_allclose(got, got.T, atol=1e-15)
    lim = th.limit
    for got, want in zip((lim.K[-1], lim.G[0], lim.Theta, lim.Theta_decoupled), TABLE_INF, strict=True):
        assert abs(got[0, 0] - want[0]) < HALF_ULP5 and abs(got[0, 1] - want[1]) < HALF_ULP5, (got, want)


def test_one_over_L_coefficients():
    # nfd.md §2.1: L·(Θ_L − Θ_∞) = −0.286, −0.298, −0.302, −0.303 ([0,0]) at L = 4, 16, 64, 1024;
    # the off-diagonal coefficient tends to −0.080.
    want = {4: -0.286, 16: -0.298, 64: -0.302}
    for L, w in want.items():
        c = rgflow.theory(net(L), X60).depth_error()
        assert abs(c[0, 0] - w) < 5.1e-4, (L, c)
    c = rgflow.theory(net(256), X60).depth_error()
    # Euler: c(L) = c∞ + O(1/L); at L = 256 within 0.002 of the printed limits.
    assert abs(c[0, 0] + 0.303) < 2e-3 and abs(c[0, 1] + 0.080) < 1e-3, c
    # Richardson on c(L): 2c(2L) − c(L) removes the 1/L term.
    c128 = rgflow.theory(net(128), X60).depth_error()
    r = 2 * c - c128
    assert abs(r[0, 0] + 0.303) < 5.1e-4 and abs(r[0, 1] + 0.080) < 5.1e-4, r


def test_limit_grid():
    fine = rgflow.theory(net(64), X60).limit
    coarse = rgflow.theory(net(64), X60, limit_grid=4).limit
    assert coarse.K.shape == (5, 2, 2) and fine.K.shape == (65, 2, 2)
    np.testing.assert_allclose(coarse.tau, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(coarse.Theta, fine.Theta, rtol=1e-9)
    np.testing.assert_allclose(coarse.K, fine.K[::16], rtol=1e-9)
    np.testing.assert_allclose(coarse.G, fine.G[::16], rtol=1e-9)
    with pytest.raises(ValueError, match="limit_grid"):
        rgflow.theory(net(4), X60, limit_grid=0)


@pytest.mark.parametrize("act", ["tanh", "relu", "erf"])
def test_limit_against_richardson(act):
    x = np.array([[1.2, -0.3, 0.5], [0.1, 0.9, -1.1], [-0.7, 0.4, 0.8]])
    th = {L: rgflow.theory(net(L, act), x, limit=(L == 32)) for L in (32, 64, 128)}
    lim = th[32].limit
    for name in ("Theta", "Theta_decoupled"):
        a, b, c = (getattr(th[L], name) for L in (32, 64, 128))
        r = (4 * (2 * c - b) - (2 * b - a)) / 3  # second-order Richardson
        np.testing.assert_allclose(getattr(lim, name), r, atol=2e-6 * np.abs(r).max())
        # and the Euler error is first order: the difference halves per doubling
        ratio = np.abs(a - b).max() / np.abs(b - c).max()
        assert 1.8 < ratio < 2.2, ratio
    # the limit's K and G on the τ grid: K(τ) against the finite-L K at the same τ within O(1/L)
    for ell in (0, 8, 16, 32):
        np.testing.assert_allclose(lim.K[ell], th[128].K[4 * ell], atol=0.1 / 128 * np.abs(lim.K[ell]).max() * 10)
    np.testing.assert_allclose(lim.G[-1], np.ones((3, 3)), atol=1e-15)
    np.testing.assert_allclose(lim.tau, np.arange(33) / 32)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"readout": "phi"},
        {"train": ("hidden",)},
        {"train": ("input", "readout"), "horizon": 2.0},
        {"branch": "linear", "readout": "phi"},
        {"hidden_lr_depth_power": 0.5, "train": ("hidden", "readout")},
    ],
)
def test_against_numpy_reference(act, kw):
    x = np.array([[1.0, 0.2], [-0.4, 1.3], [0.9, 0.9]])
    n = net(6, act, **kw)
    th = rgflow.theory(n, x, limit=False)
    ref = depthmup_reference.depthmup_theory(n, x)
    tol = 1e-12 if act == "relu" else 1e-9
    for name in ("K", "G", "Theta", "Theta_decoupled"):
        np.testing.assert_allclose(getattr(th, name), ref[name], rtol=tol, atol=tol, err_msg=name)


def test_relu_closed_forms_and_decoupled_identity():
    # Θ_dec = K_L + (K_L − K_in) + K_in = 2 K_L for readout h with all groups trained, exactly.
    x = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.3]])
    th = rgflow.theory(net(10, "relu"), x)
    np.testing.assert_allclose(th.Theta_decoupled, 2 * th.K[-1], rtol=1e-13)
    np.testing.assert_allclose(th.limit.Theta_decoupled, 2 * th.limit.K[-1], rtol=1e-12)
    # ReLU single input: Φ = q/2, Ψ = 1/2, so K_ℓ = (1 + 1/(2L))^ℓ q and G_ℓ = (1 + 1/(2L))^{L-ℓ}.
    r = 1 + 1 / 20
    q = x[0] @ x[0] / 2
    np.testing.assert_allclose(th.K[:, 0, 0], q * r ** np.arange(11), rtol=1e-13)
    np.testing.assert_allclose(th.G[:, 0, 0], r ** np.arange(10, -1, -1), rtol=1e-13)
    np.testing.assert_allclose(th.limit.K[-1, 0, 0], q * math.exp(0.5), rtol=1e-9)
    np.testing.assert_allclose(th.limit.G[0, 0, 0], math.exp(0.5), rtol=1e-9)


def test_linear_exact():
    # φ = id: E[J Jᵀ] = (1 + 1/L)^{L-ℓ} I, i.e. G_ℓ = (1 + 1/L)^{L-ℓ} 𝟏𝟏ᵀ, K_ℓ = (1 + 1/L)^ℓ K_in;
    # Θ = K_L + L·(1/L)(1 + 1/L)^{L-1} K_in + (1 + 1/L)^L K_in = (3 + 2/L)(1 + 1/L)^{L-1} K_in → 3e K_in.
    x = np.array([[1.0, 0.5], [-0.2, 0.7]])
    L = 7
    th = rgflow.theory(net(L, "linear"), x)
    K_in = x @ x.T / 2
    r = 1 + 1 / L
    for ell in range(L + 1):
        np.testing.assert_allclose(th.K[ell], r**ell * K_in, rtol=1e-13)
        np.testing.assert_allclose(th.G[ell], np.full((2, 2), r ** (L - ell)), rtol=1e-13)
    np.testing.assert_allclose(th.Theta, (3 + 2 / L) * r ** (L - 1) * K_in, rtol=1e-13)
    np.testing.assert_allclose(th.limit.Theta, 3 * math.e * K_in, rtol=1e-9)
    np.testing.assert_allclose(th.limit.G[:, 0, 0], np.exp(1 - th.limit.tau), rtol=1e-9)
    # decoupled (E[J J̃ᵀ] = I): Θ_dec = K_L + (K_L − K_in) + K_in = 2 K_L → 2e K_in
    np.testing.assert_allclose(th.Theta_decoupled, 2 * r**L * K_in, rtol=1e-13)
    np.testing.assert_allclose(th.limit.Theta_decoupled, 2 * math.e * K_in, rtol=1e-9)


def test_linear_branch_limit_is_trivial():
    x = np.array([[1.0, 0.5], [-0.2, 0.7]])
    th = rgflow.theory(net(50, "tanh", branch="linear"), x)
    K_in = x @ x.T / 2
    np.testing.assert_allclose(th.limit.K[-1], K_in, atol=1e-15)
    np.testing.assert_allclose(th.limit.Theta, 2 * K_in, atol=1e-14)
    assert np.abs(th.Theta - th.limit.Theta).max() < 0.05  # O(1/L) away


def test_learning_rate_rule_and_frozen_groups():
    x = X60
    full = rgflow.theory(net(8), x, limit=False)
    parts = {g: rgflow.theory(net(8, train=(g,)), x, limit=False).Theta for g in ("input", "hidden", "readout")}
    np.testing.assert_allclose(sum(parts.values()), full.Theta, rtol=1e-13)
    np.testing.assert_allclose(parts["readout"], full.K[-1], rtol=1e-13)
    np.testing.assert_allclose(parts["input"], full.G[0] * full.K[0], rtol=1e-13)
    slow = rgflow.theory(net(8, hidden_lr_depth_power=1.0), x)
    np.testing.assert_allclose(slow.Theta - parts["input"] - parts["readout"], parts["hidden"] / 8, rtol=1e-12)
    # p > 0: the hidden term vanishes in the limit
    np.testing.assert_allclose(slow.limit.Theta, slow.limit.K[-1] + slow.limit.G[0] * slow.K[0], rtol=1e-12)
    with pytest.raises(ValueError, match="no L → ∞ limit"):
        rgflow.theory(net(8, hidden_lr_depth_power=-0.5), x).limit  # noqa: B018
    assert rgflow.theory(net(8).decoupled(), x, limit=False).first_step_kernel is not None


def test_readout_phi_top_gradient_kernel():
    th = rgflow.theory(net(5, readout="phi"), X60)
    np.testing.assert_allclose(th.G[-1], th.Psi[-1], rtol=1e-15)
    np.testing.assert_allclose(th.limit.G[-1], th.Psi[-1], atol=2e-2)  # Ψ(K(1)) vs Ψ(K_L), O(1/L)


def test_bad_input():
    with pytest.raises(TypeError, match="DepthMuPResNet"):
        depthmup_theory(rgflow.MLP("tanh", depth=2, width=4), X60)
    with pytest.raises(ValueError, match="x is required"):
        rgflow.theory(net(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        rgflow.theory(net(4), np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        rgflow.theory(net(4), np.ones(3))
    with pytest.raises(ValueError, match="rtol"):
        rgflow.theory(net(4), X60, rtol=0.0)
    with pytest.raises(TypeError, match="quad_order"):
        rgflow.theory(net(4), X60, quad_order=2.5)
    with pytest.raises(ValueError, match="name must be one of"):
        rgflow.theory(net(4), X60).depth_error("V")
    with pytest.raises(ValueError, match="not computed"):
        rgflow.theory(net(4), X60, limit=False).limit  # noqa: B018
    with pytest.raises(ValueError, match="numpy"):
        rgflow.sample(net(4, width=8), X60, networks=8, groups=2, backend="jax")
    with pytest.raises(ValueError, match="x is required"):
        rgflow.sample(net(4, width=8))
    with pytest.raises(TypeError, match="decoupled"):
        rgflow.sample(net(4, width=8), X60, networks=8, groups=2, decoupled="yes")


def _check_sampled(n: int, L: int, networks: int, act: str = "tanh", **kw) -> None:
    """Sampled networks against the infinite-width theory: |Δ| ≤ 4σ + 2|th|/n (the O(1/n) bias)."""
    m = net(L, act, width=n, **kw)
    th = rgflow.theory(m, X60, limit=False)
    ens = rgflow.sample(m, X60, networks=networks, seed=3, groups=16, progress=False)
    assert ens.K.shape == ens.G.shape == (L + 1, 2, 2)
    for name in ("K", "G", "Theta", "Theta_decoupled"):
        t, e, s = getattr(th, name), getattr(ens, name), getattr(ens.stderr, name)
        assert np.all(s > 0), name
        bad = np.abs(t - e) > 4 * s + 2 * np.abs(t) / n
        assert not bad.any(), (name, t, e, s)
    rows = rgflow.compare(th, ens)
    assert {r.tensor for r in rows} == {"K", "G", "Theta", "Theta_decoupled"}
    assert [r.layer for r in rows if r.tensor == "Theta"] == [L]
    # the decoupled kernel is resolved as different from the coupled one
    assert (th.Theta - th.Theta_decoupled)[0, 0] > 6 * ens.stderr.Theta[0, 0]
    assert (ens.Theta - ens.Theta_decoupled)[0, 0] > 0.5 * (th.Theta - th.Theta_decoupled)[0, 0]


@pytest.mark.parametrize("kw", [{}, {"readout": "phi"}])
def test_sampled_networks_small(kw):
    _check_sampled(128, 8, 320, **kw)


def test_sampled_exact_linear_jacobian():
    # φ = id: E[g_0ᵀ g_0 / n] = (1 + 1/L)^L exactly at every width (nfd.md §2.1, E[JJᵀ]).
    m = net(4, "linear", width=16)
    ens = rgflow.sample(m, X60, networks=2000, seed=5, groups=20, progress=False)
    want = (1 + 1 / 4) ** np.arange(4, -1, -1)
    assert np.all(np.abs(ens.G[:, 0, 0] - want) < 4 * ens.stderr.G[:, 0, 0])


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{}, {"readout": "phi"}])
def test_sampled_networks_large(kw):
    _check_sampled(512, 16, 128, **kw)
