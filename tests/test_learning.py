"""rgflow.learning: closed forms, independent numpy reimplementations and properties (fast)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgflow
from rgflow import learning as lg


# ----------------------------------------------------------------------------- fixtures
def _inputs(NA: int, NB: int, n0: int = 8, seed: int = 0) -> np.ndarray:
    """Orthogonal training inputs and random test inputs, all of squared norm n0 (well-conditioned kernels)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n0, n0)))
    xte = rng.normal(size=(NB, n0))
    xte *= np.sqrt(n0) / np.linalg.norm(xte, axis=1, keepdims=True)
    return np.vstack([Q[:NA] * np.sqrt(n0), xte])


@pytest.fixture(scope="module")
def erf_theory() -> rgflow.Theory:
    net = rgflow.MLP.critical("erf", depth=3, width=32, learning_rates="constant")
    return rgflow.theory(net, _inputs(4, 3))


def _fake_theory(K: np.ndarray, Theta: np.ndarray | None = None, width: int = 16) -> rgflow.Theory:
    """A Theory carrying given output-layer tensors (depth 2, so n_{L-1} = width)."""
    N = len(K)
    net = rgflow.MLP("tanh", depth=2, width=width)
    T = {"K": np.stack([K, K]), "Theta": None if Theta is None else np.stack([Theta, Theta])}
    return rgflow.Theory(net, np.arange(N, dtype=float)[:, None], T)


def _spd(rng: np.random.Generator, N: int) -> np.ndarray:
    A = rng.normal(size=(N, N + 2))
    return A @ A.T / N + 0.3 * np.eye(N)


# ----------------------------------------------------------------------------- infinite-width Bayes
def test_gp_posterior_matches_explicit_formulas_with_noise() -> None:
    rng = np.random.default_rng(1)
    K = _spd(rng, 7)
    th = _fake_theory(K)
    tr, te = np.array([0, 2, 3, 5]), np.array([1, 4, 6])
    y = rng.normal(size=(4, 3))
    for s2 in (0.0, 0.37):
        p = rgflow.predict(th, y, tr, te, noise=s2)
        Kt = K[np.ix_(tr, tr)] + s2 * np.eye(4)
        inv = np.linalg.inv(Kt)
        np.testing.assert_allclose(p.mean, K[np.ix_(te, tr)] @ inv @ y, rtol=1e-12, atol=1e-12)  # (6.64)
        np.testing.assert_allclose(
            p.cov, K[np.ix_(te, te)] - K[np.ix_(te, tr)] @ inv @ K[np.ix_(tr, te)], rtol=1e-12, atol=1e-12
        )  # (6.57)
        logp = -1.5 * np.linalg.slogdet(2 * np.pi * Kt)[1] - 0.5 * np.trace(y.T @ inv @ y)  # (6.34)
        assert p.log_evidence == pytest.approx(logp, rel=1e-12)


def test_noise_is_diagonal_not_a_bias_shift() -> None:
    """Spec §9 item 7: i.i.d. noise adds σ²δ to K; the book's C_b → C_b + σ² would add σ² everywhere."""
    rng = np.random.default_rng(2)
    K = _spd(rng, 4)
    y = rng.normal(size=(3, 1))
    p = rgflow.predict(_fake_theory(K), y, [0, 1, 2], [3], noise=0.5)
    shifted = rgflow.predict(_fake_theory(K + 0.5), y, [0, 1, 2], [3])
    assert not np.allclose(p.mean, shifted.mean, atol=1e-3)


def test_evidence_single_input_peaks_at_mean_square_target() -> None:
    """(6.36): p(y|H) = (2πK)^{-n_L/2} e^{-Σy²/2K}, maximal at K = Σ_i y_i²/n_L."""
    y = np.array([[0.3, -1.1, 0.7]])
    Ks = np.linspace(0.2, 1.5, 261)
    logp = [lg.log_evidence(_fake_theory(np.array([[k]])), y, [0]) for k in Ks]
    closed = -1.5 * np.log(2 * np.pi * Ks) - np.sum(y**2) / (2 * Ks)
    np.testing.assert_allclose(logp, closed, rtol=1e-12)
    assert Ks[int(np.argmax(logp))] == pytest.approx(np.sum(y**2) / 3, abs=0.006)


def test_evidence_two_inputs_gamma_basis() -> None:
    """(6.45) (equal norms) and (6.48) (general) in the γ basis."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=(2, 3))
    for K0, K1, K2 in ((1.2, 0.0, 0.3), (1.2, 0.25, 0.3)):
        K = np.array([[K0 + K1 + K2, K0 - K2], [K0 - K2, K0 - K1 + K2]])
        Y0 = np.sum(((y[0] + y[1]) / 2) ** 2)
        Y2 = np.sum(((y[0] - y[1]) / 2) ** 2)
        Y1 = 0.5 * (np.sum(y[0] ** 2) - np.sum(y[1] ** 2))
        det = 4 * K0 * K2 - K1**2
        closed = -1.5 * np.log(4 * np.pi**2 * det) - (4 * K0 * Y2 + 4 * K2 * Y0 - 2 * K1 * Y1) / (2 * det)
        assert lg.log_evidence(_fake_theory(K), y, [0, 1]) == pytest.approx(closed, rel=1e-12)
        if K1 == 0:  # (6.45) factorises into the two channels
            f = -1.5 * np.log(4 * np.pi * K0) - Y0 / (2 * K0) - 1.5 * np.log(4 * np.pi * K2) - Y2 / (2 * K2)
            assert lg.log_evidence(_fake_theory(K), y, [0, 1]) == pytest.approx(f, rel=1e-12)
        assert lg.gamma_basis(_fake_theory(K, K), 0, 1, "K") == pytest.approx((K0, K1, K2), rel=1e-12)


def test_evidence_gradient_deep_linear_closed_form() -> None:
    """Depth 2, linear σ: K² = C_b² + C_W²(C_b¹ + C_W¹ x·x/n0); the chain rule done by hand."""
    x = _inputs(3, 0, n0=4)
    y = np.array([[0.5], [-0.2], [0.9]])
    net = rgflow.MLP("linear", depth=2, width=5, C_b=[0.2, 0.3], C_W=[1.1, 0.8])
    g = lg.evidence_gradient(net, x, y)
    G0 = x @ x.T / 4
    K1 = 0.2 + 1.1 * G0
    K = 0.3 + 0.8 * K1
    inv = np.linalg.inv(K)
    dK = -0.5 * inv + 0.5 * inv @ y @ y.T @ inv
    expect_b = [np.sum(dK * 0.8), np.sum(dK)]  # ∂K/∂C_b¹ = C_W², ∂K/∂C_b² = 1
    expect_w = [np.sum(dK * 0.8 * G0), np.sum(dK * K1)]
    np.testing.assert_allclose(g.per_layer_C_b, expect_b, rtol=1e-7)
    np.testing.assert_allclose(g.per_layer_C_W, expect_w, rtol=1e-7)
    assert g.C_b == pytest.approx(sum(expect_b), rel=1e-7)
    assert g.log_evidence == pytest.approx(
        -1.5 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(K)[1] - 0.5 * (y.T @ inv @ y).item(), rel=1e-12
    )


def test_evidence_favours_criticality_for_deep_tanh() -> None:
    """(6.45): at large depth the evidence of typical targets is larger at criticality (C_W = 1) than
    off it, and its C_W-gradient at criticality is small compared with off-critical ones."""
    x = _inputs(2, 0, n0=4)
    rng = np.random.default_rng(4)
    cp = rgflow.critical("erf")
    crit = rgflow.MLP("erf", depth=12, width=8, C_b=cp.C_b, C_W=cp.C_W)
    Kc = rgflow.theory(crit, x, ntk=False, order=0).K[-1]
    y = rng.normal(size=(2, 4)) * np.sqrt(Kc[0, 0])
    lp = {}
    for cw in (0.8 * cp.C_W, cp.C_W, 1.25 * cp.C_W):
        net = rgflow.MLP("erf", depth=12, width=8, C_b=cp.C_b, C_W=cw)
        lp[cw] = lg.log_evidence(rgflow.theory(net, x, ntk=False, order=0), y, [0, 1])
    assert lp[cp.C_W] > lp[0.8 * cp.C_W] and lp[cp.C_W] > lp[1.25 * cp.C_W]


# ----------------------------------------------------------------------------- infinite-width GD
def test_gd_matches_explicit_formulas() -> None:
    rng = np.random.default_rng(5)
    K, Th = _spd(rng, 6), _spd(rng, 6)
    tr, te = np.array([0, 1, 3]), np.array([2, 4, 5])
    y = rng.normal(size=(3, 2))
    p = rgflow.predict(_fake_theory(K, Th), y, tr, te, kind="gd")
    P = Th[np.ix_(te, tr)] @ np.linalg.inv(Th[np.ix_(tr, tr)])
    np.testing.assert_allclose(p.mean, P @ y, atol=1e-12)  # (10.40)
    KBA = K[np.ix_(te, tr)]
    cov = K[np.ix_(te, te)] - P @ KBA.T - KBA @ P.T + P @ K[np.ix_(tr, tr)] @ P.T  # (10.41)
    np.testing.assert_allclose(p.cov, cov, atol=1e-12)


def test_gd_trajectory_matches_iterated_linear_model() -> None:
    """(10.3) iterated: z ← z − η Θ_{·A}(z_A − y); mean and covariance of the linear map of z(0) ~ N(0, K)."""
    rng = np.random.default_rng(6)
    K, Th = _spd(rng, 5), _spd(rng, 5)
    tr, te = np.array([0, 1, 2]), np.array([3, 4])
    y = rng.normal(size=(3, 2))
    eta = 1.7 / np.linalg.eigvalsh(Th[np.ix_(tr, tr)]).max()  # past the η λ = 1 point: oscillating modes
    steps = [0, 1, 7, 40]
    traj = lg.trajectory(_fake_theory(K, Th), y, tr, te, steps=steps, lr=eta)
    mean = np.zeros((5, 2))
    M = np.eye(5)  # z(t) = M z(0) + c
    c = np.zeros((5, 2))
    out = {}
    for t in range(41):
        if t in steps:
            out[t] = (c.copy(), M.copy())
        resid_M, resid_c = M[tr], c[tr] - y
        M = M - eta * Th[:, tr] @ resid_M
        c = c - eta * Th[:, tr] @ resid_c
    for k, t in enumerate(steps):
        ct, Mt = out[t]
        np.testing.assert_allclose(traj.mean[k], ct[te], atol=1e-10)
        np.testing.assert_allclose(traj.cov[k], Mt[te] @ K @ Mt[te].T, atol=1e-10)
        np.testing.assert_allclose(traj.train_residual[k], ct[tr] - y, atol=1e-10)
    del mean
    # long times → the fully trained (10.40)/(10.41); gradient flow agrees with small-η GD at τ = ηt
    full = rgflow.predict(_fake_theory(K, Th), y, tr, te, kind="gd")
    late = rgflow.predict(_fake_theory(K, Th), y, tr, te, kind="gd", steps=4000, lr=eta)
    np.testing.assert_allclose(late.mean, full.mean, atol=1e-10)
    flow = lg.trajectory(_fake_theory(K, Th), y, tr, te, time=[0.8])
    small = lg.trajectory(_fake_theory(K, Th), y, tr, te, steps=[80_000], lr=1e-5)
    np.testing.assert_allclose(flow.mean, small.mean, atol=1e-5)


def test_gd_equals_bayes_when_only_the_last_layer_trains_with_lambda_equal_C() -> None:
    """Spec §8 #1, (10.44)–(10.49): λ^(L) = C^(L), λ^(ℓ<L) = 0 ⇒ Θ^(L) = K^(L), (10.40) = (6.64), (10.41) = (6.57)."""
    x = _inputs(4, 2)
    cp = rgflow.critical("erf")
    net = rgflow.MLP("erf", depth=3, width=16, C_b=cp.C_b, C_W=cp.C_W, lambda_b=[0, 0, cp.C_b], lambda_W=[0, 0, cp.C_W])
    th = rgflow.theory(net, x, order=0)
    np.testing.assert_allclose(th.Theta[-1], th.K[-1], rtol=1e-13, atol=1e-15)
    y = np.random.default_rng(7).normal(size=(4, 2))
    gd = rgflow.predict(th, y, np.arange(4), [4, 5], kind="gd")
    bayes = rgflow.predict(th, y, np.arange(4), [4, 5])
    np.testing.assert_allclose(gd.mean, bayes.mean, atol=1e-12)
    np.testing.assert_allclose(gd.cov, bayes.cov, atol=1e-12)


def test_generalization_bias_variance() -> None:
    """(10.52): E[L_B] = ½ΣΣ(m − y)² + ½ n_L Σ Var — checked against Gaussian samples of the trained outputs."""
    rng = np.random.default_rng(8)
    K, Th = _spd(rng, 5), _spd(rng, 5)
    y = rng.normal(size=(3, 2))
    p = rgflow.predict(_fake_theory(K, Th), y, [0, 1, 2], [3, 4], kind="gd")
    yt = rng.normal(size=(2, 2))
    gen = lg.generalization(p, yt)
    z = rng.multivariate_normal(np.zeros(2), p.cov, size=(200_000, 2)).transpose(0, 2, 1) + p.mean
    mc = 0.5 * np.mean(np.sum((z - yt) ** 2, axis=(1, 2)))
    assert gen.total == pytest.approx(mc, rel=0.01)
    assert gen.variance == pytest.approx(np.trace(p.cov), rel=1e-12)


def test_one_point_variance_small_delta() -> None:
    """(10.62)–(10.63): equal norms, Θ_{−+}/Θ_{++} − 1 → −2δδΘ_[2]/Θ_00 and Var → 4δδK_[2] + O(δ⁴)."""
    cp = rgflow.critical("erf")
    net = rgflow.MLP("erf", depth=3, width=8, C_b=cp.C_b, C_W=cp.C_W)
    ratios = []
    for d in (0.2, 0.1, 0.05):
        u = np.array([0.0, 1.0, 0.0])
        x0 = np.array([1.2, 0.0, 0.4])
        x = np.stack([x0 + d * u / 2, x0 - d * u / 2])
        th = rgflow.theory(net, x, order=0)
        r, var = lg.robustness(th, 0, 1)
        _, _, K2 = lg.gamma_basis(th, 0, 1, "K")
        ratios.append(var / (4 * K2))
    assert abs(ratios[-1] - 1) < 0.01 and abs(ratios[-1] - 1) < abs(ratios[0] - 1)


def test_polation_corrected_coefficient() -> None:
    """Spec §3.5 / §8 #7: for y_+ = y_− the ∗-polation correction is −s(1−s) δδΘ_[0]/Θ_00 (y_+ + y_−);
    the book's −4s(1−s) is 4× too large."""
    cp = rgflow.critical("erf")
    net = rgflow.MLP("erf", depth=4, width=8, C_b=cp.C_b, C_W=cp.C_W)
    x0 = np.array([1.0, 0.3, -0.5, 0.8])
    u = np.array([0.3, -1.0, 0.0, 0.0])
    u -= (u @ x0) / (x0 @ x0) * x0  # ⊥ x0: x_± have equal norms
    ratios = []
    for d in (0.4, 0.2, 0.1):
        s = np.array([0.25, 0.6, 1.5, -0.3])  # interpolation and extrapolation
        xt = x0[None, :] + ((2 * s - 1) * d / 2)[:, None] * u[None, :]
        x = np.vstack([x0 + d * u / 2, x0 - d * u / 2, x0, xt])
        th = rgflow.theory(net, x, order=0)
        yv = np.array([0.7])
        pol = lg.polation(th, 0, 1, np.arange(3, 7), yv, yv, mid=2)
        np.testing.assert_allclose(pol.s, s, atol=1e-12)
        full = rgflow.predict(th, np.array([yv, yv]), [0, 1], np.arange(3, 7), kind="gd")
        np.testing.assert_allclose(pol.mean, full.mean, atol=1e-10)  # exact two-channel form = (10.40)
        exact = pol.mean[:, 0] - 0.7  # minus the linear interpolation s y_+ + (1−s) y_−
        assert pol.expansion is not None
        pred = pol.expansion[:, 0] - 0.7
        ratios.append(exact / pred)
    ratios = np.array(ratios)
    assert np.all(np.abs(ratios[-1] - 1) < 0.02)
    assert np.all(np.abs(ratios[-1] - 1) <= np.abs(ratios[0] - 1) + 1e-12)


# ----------------------------------------------------------------------------- finite-width Bayes
def test_compact_and_book_routes_agree_to_second_order(erf_theory: rgflow.Theory) -> None:
    """Spec §2.3 vs (4.108) + (6.81)–(6.88): same O(1/n) term, difference O(1/n²)."""
    th = erf_theory
    y = np.random.default_rng(9).normal(size=(4, 2)) * np.sqrt(th.K[-1][0, 0])
    diffs, corr = [], []
    for n in (64, 128, 256):
        net = rgflow.MLP(th.net.activation, 3, width=n, C_b=th.net.C_b, C_W=th.net.C_W)
        t = rgflow.Theory(net, th.x, th.tensors())
        a = rgflow.predict(t, y, np.arange(4), [4, 5, 6], order=1)
        b = rgflow.predict(t, y, np.arange(4), [4, 5, 6], order=1, method="book")
        diffs.append(np.max(np.abs(a.mean - b.mean)))
        corr.append(np.max(np.abs(a.mean_correction)))
    assert corr[2] > 8 * diffs[2]  # measured: 0.00088 vs 6.4e-5 at n = 256
    assert diffs[1] / diffs[0] == pytest.approx(0.25, rel=0.15) and diffs[2] / diffs[1] == pytest.approx(0.25, rel=0.1)
    assert corr[1] / corr[0] == pytest.approx(0.5, rel=0.05)


def test_finite_width_mean_pieces(erf_theory: rgflow.Theory) -> None:
    """The metric piece is G_BA G̃⁻¹y − K_BA K̃⁻¹y with G = K + K1/n; the vertex piece is linear in V."""
    th = erf_theory
    y = np.random.default_rng(10).normal(size=(4, 1))
    p = rgflow.predict(th, y, np.arange(4), [4, 5, 6], order=1)
    G = th.K[-1] + th.K1[-1] / 32
    m = G[4:, :4] @ np.linalg.solve(G[:4, :4], y)
    np.testing.assert_allclose(p.pieces["metric"], m - p.mean_infinite, atol=1e-12)
    t2 = rgflow.Theory(th.net, th.x, {**th.tensors(), "V": 2 * th.V})
    p2 = rgflow.predict(t2, y, np.arange(4), [4, 5, 6], order=1)
    np.testing.assert_allclose(p2.pieces["vertex"], 2 * p.pieces["vertex"], rtol=1e-10)
    np.testing.assert_allclose(p.mean, p.mean_infinite + p.pieces["metric"] + p.pieces["vertex"], atol=1e-12)


def test_representation_shift_closed_form(erf_theory: rgflow.Theory) -> None:
    """(6.104) vanishes for 'typical' targets Σ_i y_i y_iᵀ = n_L K̃ and matches the explicit contraction."""
    th = erf_theory
    Kt = th.K[-1][:4, :4]
    Lc = np.linalg.cholesky(Kt)
    y = Lc @ np.linalg.qr(np.random.default_rng(11).normal(size=(6, 4)))[0].T * np.sqrt(6)  # y yᵀ = 6 K̃
    np.testing.assert_allclose(lg.representation_shift(th, y, np.arange(4)), 0, atol=1e-12)
    y2 = np.random.default_rng(12).normal(size=(4, 2))
    inv = np.linalg.inv(Kt)
    M = inv @ (y2 @ y2.T - 2 * Kt) @ inv
    V = th.V[-1]
    expect = np.einsum("abcd,cd->ab", V[:, :, :4, :4], M) / (2 * 32 * th.net.C_W[-1])
    np.testing.assert_allclose(lg.representation_shift(th, y2, np.arange(4)), expect, rtol=1e-10)


def test_conditional_variance_closed_form(erf_theory: rgflow.Theory) -> None:
    th = erf_theory
    G = th.K[-1][0, 0] + th.K1[-1][0, 0] / 32
    V = th.V[-1][0, 0, 0, 0]
    z = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(lg.conditional_variance(th, z), G + 0.5 * (z**2 - G) * V / (32 * G**2), rtol=1e-14)
    # at ž² = G the Hebbian shift vanishes
    assert float(lg.conditional_variance(th, np.sqrt(G))) == pytest.approx(G, rel=1e-14)


# ----------------------------------------------------------------------------- Appendix A
@pytest.mark.parametrize(
    ("act", "n_out", "r_star", "i_star"),
    [
        ("tanh", 2, 6 / 26, 1 / 1014),
        ("relu", 2, 4 / 130, 1 / 1014),
        ("linear", 2, 4 / 52, 1 / 1014),
        ("tanh", 10, 0.12, 1 / 150),
        ("relu", 10, 0.016, 1 / 150),
        ("tanh", 100, 0.01875, 1 / 61.44),
        ("linear", 100, 0.00625, 1 / 61.44),
    ],
)
def test_optimal_aspect_ratio_table(act: str, n_out: int, r_star: float, i_star: float) -> None:
    r, info = lg.optimal_aspect_ratio(act, n_out)
    assert r == pytest.approx(r_star, rel=1e-12)
    assert info == pytest.approx(i_star, rel=1e-12)
    # r* maximises I(r) = m²/8 ν² r² − m²(20 + 6m)/48 ν³ r³
    nu, m = lg.nu_of(act), n_out / 2
    rs = np.linspace(0.5 * r, 1.5 * r, 2001)
    i_r = m * m / 8 * (nu * rs) ** 2 - m * m * (20 + 6 * m) / 48 * (nu * rs) ** 3
    assert rs[np.argmax(i_r)] == pytest.approx(r, rel=1e-3)


def test_entropy_and_mutual_information_consistency() -> None:
    """(A.66)/(A.67): I[M1:M2] = S(m1) + S(m2) − S(m1 + m2) through O(x³)."""
    G, V, n = 1.3, 0.9, 50
    for m1, m2 in ((1, 1), (1, 2), (2, 3)):
        i = lg.mutual_information(G, V, n, m1, m2)
        s = lg.entropy(G, V, n, m1) + lg.entropy(G, V, n, m2) - lg.entropy(G, V, n, m1 + m2)
        assert i == pytest.approx(s, rel=1e-12)


# ----------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["bayes", "gd"]), order=st.sampled_from([0, 1]))
def test_permuting_training_inputs_changes_nothing(erf_theory: rgflow.Theory, seed: int, kind: str, order: int) -> None:
    if kind == "gd" and order == 1:
        order = 0
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(4, 2))
    perm = rng.permutation(4)
    a = rgflow.predict(erf_theory, y, np.arange(4), [4, 5, 6], kind=kind, order=order)
    b = rgflow.predict(erf_theory, y[perm], perm, [4, 5, 6], kind=kind, order=order)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-11)
    np.testing.assert_allclose(a.cov, b.cov, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), noise=st.sampled_from([0.0, 0.1]))
def test_posterior_covariance_is_psd_and_training_targets_are_reproduced(seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    N = int(rng.integers(3, 8))
    NA = int(rng.integers(1, N))
    K, Th = _spd(rng, N), _spd(rng, N)
    perm = rng.permutation(N)
    tr, te = perm[:NA], perm[NA:]
    y = rng.normal(size=(NA, 2))
    for kind in ("bayes", "gd"):
        p = rgflow.predict(_fake_theory(K, Th), y, tr, te, kind=kind, noise=noise if kind == "bayes" else 0.0)
        assert np.linalg.eigvalsh(p.cov).min() > -1e-10
    p = rgflow.predict(_fake_theory(K, Th), y, tr, tr)
    np.testing.assert_allclose(p.mean, y, atol=1e-9)
    np.testing.assert_allclose(p.cov, 0, atol=1e-9)
    g = rgflow.predict(_fake_theory(K, Th), y, tr, tr, kind="gd")
    np.testing.assert_allclose(g.mean, y, atol=1e-9)


def test_order_one_reproduces_training_targets(erf_theory: rgflow.Theory) -> None:
    y = np.random.default_rng(13).normal(size=(4, 3))
    p = rgflow.predict(erf_theory, y, np.arange(4), [2, 0, 5], order=1)
    np.testing.assert_allclose(p.mean[:2], y[[2, 0]], atol=1e-12)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_name_the_argument(erf_theory: rgflow.Theory) -> None:
    th, y = erf_theory, np.zeros((4, 1))
    with pytest.raises(ValueError, match="y has 3 rows but there are 4 training inputs"):
        rgflow.predict(th, np.zeros((3, 1)), np.arange(4), [4])
    with pytest.raises(ValueError, match="y contains NaN"):
        rgflow.predict(th, np.array([[0.0], [np.nan], [1.0], [2.0]]), np.arange(4), [4])
    with pytest.raises(ValueError, match="noise .* >= 0"):
        rgflow.predict(th, y, np.arange(4), [4], noise=-0.1)
    with pytest.raises(TypeError, match="noise must be a real number"):
        rgflow.predict(th, y, np.arange(4), [4], noise="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="test has indices out of range for 7 inputs"):
        rgflow.predict(th, y, np.arange(4), [7])
    with pytest.raises(ValueError, match="train repeats an index"):
        rgflow.predict(th, y, [0, 1, 1, 2], [4])
    with pytest.raises(TypeError, match="train must hold integer indices"):
        rgflow.predict(th, y, np.array([0.0, 1, 2, 3]), [4])
    with pytest.raises(ValueError, match="kind must be one of"):
        rgflow.predict(th, y, np.arange(4), [4], kind="sgd")
    with pytest.raises(ValueError, match="order must be 0"):
        rgflow.predict(th, y, np.arange(4), [4], order=2)
    with pytest.raises(TypeError, match="th must be the result of rgflow.theory"):
        rgflow.predict(th.K, y, np.arange(4), [4])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise applies to kind='bayes' only"):
        rgflow.predict(th, y, np.arange(4), [4], kind="gd", noise=0.1)
    with pytest.raises(ValueError, match="both steps"):
        rgflow.predict(th, y, np.arange(4), [4], kind="gd", steps=10)


def test_singular_training_kernel_names_the_fix() -> None:
    x = np.array([[1.0, 0.2], [0.3, -0.4], [1.0, 0.2], [0.5, 0.5]])
    th = rgflow.theory(rgflow.MLP("erf", depth=2, width=8), x, order=0)
    with pytest.raises(ValueError, match=r"repeated training inputs \(train indices 0=2\).*noise=σ²>0"):
        rgflow.predict(th, np.zeros((3, 1)), [0, 1, 2], [3])
    with pytest.raises(ValueError, match="repeated training inputs"):
        rgflow.predict(th, np.zeros((3, 1)), [0, 1, 2], [3], kind="gd")
    # the fix works: i.i.d. noise regularises the repeated inputs
    p = rgflow.predict(th, np.array([[1.0], [0.0], [0.5]]), [0, 1, 2], [3], noise=0.1)
    assert np.isfinite(p.mean).all()


def test_missing_tensors_and_depth_one() -> None:
    x = _inputs(2, 1, n0=3)
    th0 = rgflow.theory(rgflow.MLP("erf", depth=2, width=8), x, order=0)
    with pytest.raises(ValueError, match="th carries no K1, V"):
        rgflow.predict(th0, np.zeros((2, 1)), [0, 1], [2], order=1)
    th1 = rgflow.theory(rgflow.MLP("erf", depth=1), x, order=1)
    with pytest.raises(ValueError, match="depth 1"):
        rgflow.predict(th1, np.zeros((2, 1)), [0, 1], [2], order=1)
    with pytest.raises(ValueError, match="depth >= 2"):
        rgflow.train(rgflow.MLP("erf", depth=1), x, np.zeros((2, 1)), [0, 1], [2], networks=4, groups=2)


def test_gd_first_order_names_the_missing_dntk_tensors(erf_theory: rgflow.Theory) -> None:
    with pytest.raises(ValueError, match=r"P, Q, R, S, T, U.*rgflow\.theory\(net, x, dntk=True\)"):
        rgflow.predict(erf_theory, np.zeros((4, 1)), np.arange(4), [4], kind="gd", order=1)
