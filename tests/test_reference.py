"""Tests of the independent numpy reference :mod:`rgflow.reference` against exact results.

Oracles: closed-form Gaussian integrals, deep-linear and scale-invariant exact results
(``docs/spec/preactivations.md`` §7), layer-2 exactness against brute-force Monte Carlo,
tanh criticality asymptotics, the ``docs/spec/ntk.md`` §1.7 table, the single-input forms
of every recursion (implemented here independently with 1-D quadrature), the derivative
(integration-by-parts) form of V and K1, and symmetry/permutation properties.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgflow import MLP, Activation
from rgflow.testing import reference as ref

SQ2 = math.sqrt(2.0)
X_TABLE = SQ2 * np.array([[1.3, 0.4], [0.2, -1.1]])  # ntk.md §1.7 inputs


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@functools.cache
def _gl(n: int):
    return np.polynomial.legendre.leggauss(n)


def e1(f, K: float, n: int = 400) -> float:
    """<f(z)> for z ~ N(0, K): Gauss-Legendre on [-12 sqrt K, 0] and [0, 12 sqrt K] (kink-safe)."""
    x, w = _gl(n)
    L = 12.0 * math.sqrt(K)
    tot = 0.0
    for a, b in ((-L, 0.0), (0.0, L)):
        z = 0.5 * (b - a) * x + 0.5 * (b + a)
        tot += np.sum(0.5 * (b - a) * w * f(z) * np.exp(-z * z / (2 * K))) / math.sqrt(2 * math.pi * K)
    return float(tot)


def single_input(net: MLP, x0: np.ndarray) -> dict[str, np.ndarray]:
    """Single-input recursions (PDLT 5.109, 5.110, ntk.md §1.4 single-input form, and the
    single-input reductions of 8.77, 8.79, 8.89, 8.97), with their own 1-D quadrature."""
    act = net.activation
    s0 = lambda z: act.numpy(z, 0)  # noqa: E731
    s1 = lambda z: act.numpy(z, 1)  # noqa: E731
    n0 = x0.size
    widths = net.layer_widths(n0)
    g0 = float(x0 @ x0) / n0
    K = net.C_b[0] + net.C_W[0] * g0
    Th = net.lambda_b[0] + net.lambda_W[0] * g0
    V = K1 = Th1 = D = F = A = B = 0.0
    out = {k: [] for k in ("K", "Theta", "V", "K1", "Theta1", "D", "F", "A", "B")}

    def push():
        for k, v in zip(out, (K, Th, V, K1, Th1, D, F, A, B), strict=True):
            out[k].append(v)

    push()
    for l in range(1, net.depth):
        Cb, CW, lb, lW = net.C_b[l], net.C_W[l], net.lambda_b[l], net.lambda_W[l]
        rho = widths[l] / widths[l - 1]
        Kc = K

        def E(f, Kc=Kc):
            return e1(f, Kc)

        def he4(z, Kc=Kc):
            return z**4 - 6 * Kc * z**2 + 3 * Kc**2

        def Om(z, Th=Th, lW=lW, CW=CW):
            return lW * s0(z) ** 2 + CW * Th * s1(z) ** 2

        g = E(lambda z: s0(z) ** 2)
        chi_par = CW / (2 * Kc**2) * E(lambda z, Kc=Kc: s0(z) ** 2 * (z * z - Kc))
        chi_perp = CW * E(lambda z: s1(z) ** 2)
        h = CW / (4 * Kc**2) * E(lambda z, Kc=Kc: s1(z) ** 2 * (z * z - Kc))
        Om_m = E(Om)
        Om_h = E(lambda z, Om=Om, Kc=Kc: Om(z) * (z * z - Kc))
        s2h = E(lambda z, Kc=Kc: s0(z) ** 2 * (z * z - Kc))
        n_ss = V / (8 * Kc**4) * E(lambda z, he4=he4: s0(z) ** 2 * he4(z))
        n_pp = V / (8 * Kc**4) * E(lambda z, he4=he4: s1(z) ** 2 * he4(z))
        Kn = Cb + CW * g
        Thn = lb + lW * g + chi_perp * Th
        Vn = CW**2 * (E(lambda z: s0(z) ** 4) - g * g) + rho * chi_par**2 * V  # (5.109)
        K1n = rho * (chi_par * K1 + CW * n_ss)  # (5.110)
        Th1n = rho * (
            chi_perp * Th1 + lW * (chi_par / CW * K1 + n_ss) + Th * (2 * h * K1 + CW * n_pp) + h * (2 * D + 4 * F)
        )
        Dn = (
            CW * (E(lambda z, Om=Om: s0(z) ** 2 * Om(z)) - g * Om_m)
            + CW / 4 * rho * V / Kc**4 * s2h * Om_h
            + rho * chi_par * chi_perp * D
        )
        Fn = (
            CW**2 * E(lambda z: s0(z) ** 2 * s1(z) ** 2) * Th
            + rho * CW**2 * (E(lambda z: s0(z) * s1(z) * z) / Kc) ** 2 * F
        )
        Bn = CW**2 * E(lambda z: s1(z) ** 4) * Th**2 + rho * chi_perp**2 * B
        An = (
            E(lambda z, Om=Om: Om(z) ** 2)
            - Om_m**2
            + rho / 4 * V / Kc**4 * Om_h**2
            + rho * chi_perp**2 * A
            + rho * CW / Kc**2 * Om_h * (chi_perp / CW) * D
        )
        K, Th, V, K1, Th1, D, F, A, B = Kn, Thn, Vn, K1n, Th1n, Dn, Fn, An, Bn
        push()
    return {k: np.array(v) for k, v in out.items()}


def diag(th, name: str, a: int) -> np.ndarray:
    t = getattr(th, name)
    return t[:, a, a] if t.ndim == 3 else t[:, a, a, a, a]


def rel_close(a, b, rtol, atol_frac=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(b)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol_frac * scale)


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K12", [1.3, -1.0, 0.999 * math.sqrt(2.0 * 1.5)])
def test_relu_two_point_closed_forms(K12):
    K = np.array([[2.0, K12], [K12, 1.5]])
    c = K12 / math.sqrt(3.0)
    psi = math.acos(c)
    ss = math.sqrt(3.0) / (2 * math.pi) * (math.sin(psi) + (math.pi - psi) * c)  # (5.158)
    pp = 0.5 - psi / (2 * math.pi)  # (5.161)
    q12 = math.sqrt(3.0 - K12**2) / (2 * math.pi * 2.0)  # <s''_1 s_2>, preactivations.md §4c
    Ki = np.linalg.inv(K)
    got_ss = ref.gaussian_expectation(lambda z, s0, s1: s0[:, 0] * s0[:, 1], K, "relu")
    got_pp = ref.gaussian_expectation(lambda z, s0, s1: s1[:, 0] * s1[:, 1], K, "relu")
    # Hermite form of <d1 d1 (s1 s2)> = <s1 s2 ((K^-1 z)_1^2 - K^11)> and of <d1 d2 (s1 s2)> = P12
    c11 = ref.gaussian_expectation(lambda z, s0, s1: s0[:, 0] * s0[:, 1] * ((z @ Ki)[:, 0] ** 2 - Ki[0, 0]), K, "relu")
    c12 = ref.gaussian_expectation(
        lambda z, s0, s1: s0[:, 0] * s0[:, 1] * ((z @ Ki)[:, 0] * (z @ Ki)[:, 1] - Ki[0, 1]), K, "relu"
    )
    tol = 1e-13 if abs(c) < 0.99 else 1e-9  # Hermite form is ill-conditioned for nearly equal inputs
    assert abs(got_ss - ss) < 1e-13 and abs(got_pp - pp) < 1e-13
    assert abs(c11 - q12) < tol and abs(c12 - pp) < tol


def test_relu_orthant_probabilities_3d():
    K = np.array([[2.0, 1.3, 0.4], [1.3, 1.5, -0.2], [0.4, -0.2, 1.0]])
    d = np.sqrt(np.diag(K))
    C = K / np.outer(d, d)
    exact = 1 / 8 + (math.asin(C[0, 1]) + math.asin(C[0, 2]) + math.asin(C[1, 2])) / (4 * math.pi)
    got = ref.gaussian_expectation(lambda z, s0, s1: np.prod(s1, axis=1), K, "relu")
    assert abs(got - exact) < 1e-9
    # the 3-D product path used by the recursions (innermost level tabulated)
    sig = ref._Sigma(Activation("relu"))
    vals = ref._product_expectations(K[None], np.array([[0, 1, 0, 1, 0, 1]]), sig, ref._Rule(Activation("relu"), None))
    assert abs(vals[0, 0] - exact) < 1e-9


@pytest.mark.parametrize("rho, tol", [(0.5, 1e-12), (0.99, 1e-9)])
def test_relu_orthant_probability_4d_nearly_collinear(rho, tol):
    """Two independent pairs, one nearly collinear: P(all z > 0) = P2(rho) P2(rho'),
    P2(r) = 1/4 + asin(r)/(2 pi), through the 4-sample product path."""
    K = np.zeros((4, 4))
    K[:2, :2] = [[1.0, rho], [rho, 1.0]]
    K[2:, 2:] = [[1.5, 0.4], [0.4, 0.8]]
    P2 = lambda r: 0.25 + math.asin(r) / (2 * math.pi)  # noqa: E731
    exact = P2(rho) * P2(0.4 / math.sqrt(1.2))
    sig = ref._Sigma(Activation("relu"))
    got = ref._product_expectations(K[None], np.array([[0, 1] * 4]), sig, ref._Rule(Activation("relu"), None))
    assert abs(got[0, 0] - exact) < tol


def test_isserlis_through_kinked_and_smooth_paths():
    K = np.array([[2.0, 1.3, 0.4, 0.3], [1.3, 1.5, -0.2, 0.1], [0.4, -0.2, 1.0, 0.5], [0.3, 0.1, 0.5, 1.2]])
    exact = K[0, 1] * K[2, 3] + K[0, 2] * K[1, 3] + K[0, 3] * K[1, 2]
    for act in (Activation("leaky_relu", slope=1.0), Activation("linear")):
        got = ref.gaussian_expectation(lambda z, s0, s1: np.prod(s0, axis=1), K, act)
        assert abs(got - exact) < 1e-12


@pytest.mark.parametrize("K", [0.5, 1.85, 4.0])
def test_smooth_one_dimensional_accuracy(K):
    for name in ("tanh", "gelu"):
        act = Activation(name)
        f = lambda z, act=act: act.numpy(z, 0) ** 2 * act.numpy(z, 1) ** 2  # noqa: E731
        exact = e1(f, K)
        got = ref.gaussian_expectation(lambda z, s0, s1: s0[:, 0] ** 2 * s1[:, 0] ** 2, [[K]], act)
        assert abs(got - exact) < 1e-12 * max(1.0, abs(exact))


# ---------------------------------------------------------------------------------------------
# exact closed forms
# ---------------------------------------------------------------------------------------------
def test_deep_linear_exact():
    """Deep linear nets (Ch. 3): K = prod C_W G0 (3.15); V/n_{l-1} = C_W-products x
    (G13 G24 + G14 G23) sum_m 1/n_m, the first-order coefficient of (3.25); K1 = Theta1 = 0."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4))
    CW = [1.3, 0.7, 1.1, 0.9, 1.2]
    widths = [5, 9, 4, 7]
    net = MLP("linear", depth=5, widths=widths, C_b=0.0, C_W=CW)
    th = ref.theory(net, x)
    G0 = x @ x.T / 4
    n = net.layer_widths(4)
    S = np.einsum("ac,bd->abcd", G0, G0) + np.einsum("ad,bc->abcd", G0, G0)
    for l in range(1, 6):
        cw = float(np.prod(CW[:l]))
        rel_close(th.K[l - 1], cw * G0, 1e-13)
        Vl = n[l - 1] * cw**2 * S * sum(1.0 / n[m] for m in range(1, l))
        rel_close(th.V[l - 1], Vl, 1e-12)
        assert np.max(np.abs(th.K1[l - 1])) < 1e-12
        assert np.max(np.abs(th.Theta1[l - 1])) < 1e-11
    # single input, equal widths: V = 2 (l - 1) K^2 (3.28)
    th1 = ref.theory(MLP("linear", depth=6, width=10, C_W=1.0), x[:1], ntk=False)
    K = th1.K[:, 0, 0]
    np.testing.assert_allclose(th1.V[:, 0, 0, 0, 0], 2 * np.arange(6) * K**2, rtol=1e-13)


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.5])
def test_scale_invariant_critical_single_input(slope):
    """V = (l-1) nu K*^2 at criticality (5.120), nu = 6(1 + a^4)/(1 + a^2)^2 - 1; K1 = 0 (5.117)."""
    act = Activation("relu") if slope == 0 else Activation("leaky_relu", slope=slope)
    nu = 6 * (1 + slope**4) / (1 + slope**2) ** 2 - 1
    net = MLP(act, depth=7, width=20, C_b=0.0, C_W=2 / (1 + slope**2))
    th = ref.theory(net, np.array([[0.7, -1.2, 0.4]]))
    Ks = th.K[0, 0, 0]
    np.testing.assert_allclose(th.K[:, 0, 0], Ks, rtol=1e-12)
    np.testing.assert_allclose(th.V[:, 0, 0, 0, 0], nu * np.arange(7) * Ks**2, rtol=1e-12, atol=1e-13)
    assert np.max(np.abs(th.K1)) < 1e-12 and np.max(np.abs(th.Theta1)) < 1e-12
    if slope == 0:
        assert nu == 5


@pytest.mark.parametrize("act", [Activation("relu"), Activation("leaky_relu", slope=0.2)])
def test_scale_invariant_diagonal_corrections_vanish(act):
    """ntk.md §1.6: K1_aa = Theta1_aa = 0 for scale-invariant sigma; off-diagonal entries do not."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 3))
    net = MLP(act, depth=4, width=12, C_b=0.3, C_W=1.7, lambda_b=0.5, lambda_W=1.5)
    th = ref.theory(net, x)
    for l in range(4):
        assert np.max(np.abs(np.diag(th.K1[l]))) < 1e-11
        assert np.max(np.abs(np.diag(th.Theta1[l]))) < 1e-10
    off = ~np.eye(3, dtype=bool)
    assert np.min(np.abs(th.K1[3][off])) > 1e-3
    assert np.min(np.abs(th.Theta1[3][off])) > 1e-3


def test_collinear_inputs_relu():
    """x2 = 2 x1, C_b = lambda_b = 0: z2 = 2 z1 exactly (rank-1 blocks, pseudo-inverse path)."""
    x = np.array([[0.6, -0.9], [1.2, -1.8]])
    net = MLP("relu", depth=5, width=10, C_b=0.0, C_W=2.0, lambda_b=0.0, lambda_W=1.0)
    th = ref.theory(net, x)
    for l in range(5):
        np.testing.assert_allclose(th.K[l][0, 1], 2 * th.K[l][0, 0], rtol=1e-13)
        np.testing.assert_allclose(th.V[l][0, 1, 0, 1], 4 * th.V[l][0, 0, 0, 0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(th.Theta[l][0, 1], 2 * th.Theta[l][0, 0], rtol=1e-13)
        assert np.max(np.abs(th.K1[l])) < 1e-10 and np.max(np.abs(th.Theta1[l])) < 1e-10


# ---------------------------------------------------------------------------------------------
# layer 2 exactness vs Monte Carlo
# ---------------------------------------------------------------------------------------------
def test_layer2_exact_vs_monte_carlo():
    """Layer 2 is exact (layer 1 is Gaussian): V, D, F, A, B at layer 2 vs brute-force MC over
    z ~ N(0, K^(1)) (2e6 draws; tolerance 5 standard errors); K1 = Theta1 = 0 at layer 2."""
    x = np.array([[0.9, -0.3], [0.2, 1.1], [-0.7, -0.6]])
    CW, lW, lb = 1.6, 0.8, 0.3
    net = MLP("tanh", depth=2, width=8, C_b=0.2, C_W=CW, lambda_b=lb, lambda_W=lW)
    th = ref.theory(net, x)
    assert np.all(th.K1[1] == 0) and np.all(th.Theta1[1] == 0)
    K = th.K[0]
    Th = th.Theta[0]
    rng = np.random.default_rng(11)
    n = 2_000_000
    z = rng.standard_normal((n, 3)) @ np.linalg.cholesky(K).T
    s, sp = np.tanh(z), 1 - np.tanh(z) ** 2

    def cov(f, g):
        """Estimate Cov(f, g) = E[f g] - E f E g and its standard error (delta method)."""
        mf, mg = f.mean(), g.mean()
        infl = (f - mf) * (g - mg)
        return infl.mean(), infl.std() / math.sqrt(n)

    tuples = [(0, 0, 0, 0), (0, 1, 0, 1), (0, 1, 2, 2), (0, 0, 1, 2), (0, 1, 1, 2), (2, 1, 0, 0), (1, 2, 0, 1)]
    for a, b, c, d in tuples:
        om_cd = lW * s[:, c] * s[:, d] + CW * Th[c, d] * sp[:, c] * sp[:, d]
        om_ab = lW * s[:, a] * s[:, b] + CW * Th[a, b] * sp[:, a] * sp[:, b]
        checks = {
            "V": (th.V[1][a, b, c, d], CW**2, cov(s[:, a] * s[:, b], s[:, c] * s[:, d])),
            "D": (th.D[1][a, b, c, d], CW, cov(s[:, a] * s[:, b], om_cd)),
            "A": (th.A[1][a, b, c, d], 1.0, cov(om_ab, om_cd)),
        }
        for name, (val, pref, (m, se)) in checks.items():
            assert abs(val - pref * m) < 5 * pref * se + 1e-12, (name, (a, b, c, d), val, pref * m, pref * se)
        # F[p1, n1, p2, n2] = C_W^2 <s_p1 s_p2 s'_n1 s'_n2> Theta_n1n2; B[i,j,k,l] = C_W^2 <s'^4> Th_ik Th_jl
        f = s[:, a] * s[:, c] * sp[:, b] * sp[:, d]
        tf = CW**2 * Th[b, d]
        assert abs(th.F[1][a, b, c, d] - tf * f.mean()) < 5 * abs(tf) * f.std() / math.sqrt(n)
        g = sp[:, a] * sp[:, b] * sp[:, c] * sp[:, d]
        tb = CW**2 * Th[a, c] * Th[b, d]
        assert abs(th.B[1][a, b, c, d] - tb * g.mean()) < 5 * abs(tb) * g.std() / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# criticality asymptotics and the ntk.md table
# ---------------------------------------------------------------------------------------------
def test_tanh_criticality_deep():
    """K*=0 class at criticality (5.92, 5.127, 5.134): l K -> 1/2, l V -> 1/6, K1 -> -1/6 for
    tanh; corrections O(log l / l) (at l = 300: ~5e-3, ~1.3e-3, ~3e-3)."""
    net = MLP("tanh", depth=300, width=50, C_b=0.0, C_W=1.0)
    th = ref.theory(net, np.array([[1.0]]), ntk=False)
    l = np.arange(1, 301)
    lK, lV, K1 = l * th.K[:, 0, 0], l * th.V[:, 0, 0, 0, 0], th.K1[:, 0, 0]
    assert abs(lK[-1] - 0.5) < 0.01 and abs(lV[-1] - 1 / 6) < 0.004 and abs(K1[-1] + 1 / 6) < 0.006
    # and the deviations shrink with depth
    assert abs(lK[-1] - 0.5) < abs(lK[99] - 0.5) < abs(lK[29] - 0.5)
    assert abs(K1[-1] + 1 / 6) < abs(K1[99] + 1 / 6) < abs(K1[29] + 1 / 6)


@pytest.mark.parametrize(
    "act, Cb, CW, theta01, theta00, t1_01, t1_00",
    [
        (Activation("tanh"), 0.0, 1.0, 2.06625, 3.12852, 0.1576, 0.0533),
        (Activation("gelu"), 0.17292239, 1.98305826, 3.55045, 11.44052, 1.3907, -1.6124),
        (Activation("relu"), 0.0, 2.0, 3.67088, 11.4, 0.9695, 0.0),
        (Activation("leaky_relu", slope=0.1), 0.0, 2 / 1.01, 3.63018, 11.4, 0.664, 0.0),
    ],
)
def test_ntk_table_layer4(act, Cb, CW, theta01, theta00, t1_01, t1_00):
    """ntk.md §1.7 (inputs sqrt2 (1.3, 0.4), sqrt2 (0.2, -1.1); lambda_b = lambda_W = 1), layer 4."""
    th = ref.theory(MLP(act, depth=4, width=16, C_b=Cb, C_W=CW), X_TABLE)
    digits = lambda v: len(str(v).split(".")[1])  # noqa: E731
    for got, want in (
        (th.Theta[3, 0, 1], theta01),
        (th.Theta[3, 0, 0], theta00),
        (th.Theta1[3, 0, 1], t1_01),
        (th.Theta1[3, 0, 0], t1_00),
    ):
        assert round(float(got), digits(want)) == pytest.approx(want, abs=1e-12), (got, want)
    if act.name == "relu":
        assert round(float(th.K1[3, 0, 1]), 2) == -2.26  # ntk.md §1.6
    if act.name == "tanh":  # layer 3 values quoted in §1.7
        assert (round(float(th.Theta1[2, 0, 1]), 4), round(float(th.Theta1[2, 0, 0]), 4)) == (0.0797, 0.0256)


def test_ntk_single_input_A_B_values():
    """ntk.md §1.4: single-input tanh (C_W = 1, K^(1) = 2): A^(3), A^(4) = 0.747, 1.194 (with the
    C_W/2 prefactor of the D-terms) and B^(4) = 6.1815."""
    th = ref.theory(MLP("tanh", depth=4, width=8, C_b=0.0, C_W=1.0), np.array([[SQ2]]))
    assert round(float(th.A[2, 0, 0, 0, 0]), 3) == 0.747
    assert round(float(th.A[3, 0, 0, 0, 0]), 3) == 1.194
    assert round(float(th.B[3, 0, 0, 0, 0]), 4) == 6.1815


# ---------------------------------------------------------------------------------------------
# single-input reductions and the derivative form
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "act", [Activation("tanh"), Activation("gelu"), Activation("elu", alpha=0.7), Activation("swish")]
)
def test_single_input_reductions_match_diagonal(act):
    """(5.109)/(5.110) and the single-input forms of Theta1, D, F, A, B equal the multi-input code
    on the diagonal (unequal widths and per-layer hyperparameters)."""
    x = np.array([[0.8, -1.1], [0.3, 0.5], [-1.4, 0.2]])
    net = MLP(
        act,
        depth=4,
        widths=[6, 9, 5],
        C_b=[0.1, 0.2, 0.05, 0.3],
        C_W=[1.4, 1.1, 1.3, 0.9],
        lambda_b=[0.5, 1.0, 0.2, 0.7],
        lambda_W=[1.2, 0.8, 1.0, 1.5],
    )
    th = ref.theory(net, x)
    for a in range(3):
        si = single_input(net, x[a])
        for name in ("K", "Theta", "V", "K1", "Theta1", "D", "F", "A", "B"):
            rel_close(diag(th, name, a), si[name], 1e-10, 1e-11)


def test_derivative_form_of_V_and_K1():
    """PDLT (4.119) and (4.115) in the Hermite form with restricted inverses equal their
    derivative forms (preactivations.md §4c, §5) for tanh, two inputs, layer 3 -> 4."""
    x = np.array([[0.9, -0.4], [0.1, 1.0]])
    net = MLP("tanh", depth=4, width=10, C_b=0.1, C_W=1.3)
    th = ref.theory(net, x)
    K, V, K1 = th.K[2], th.V[2], th.K1[2]
    CW = 1.3

    def dtanh(z, k):
        t = np.tanh(z)
        tp = 1 - t * t
        return (t, tp, -2 * t * tp, -2 * tp * (1 - 3 * t * t), 8 * t * tp * (2 - 3 * t * t))[k]

    gx, gw = np.polynomial.hermite_e.hermegauss(120)
    gw = gw / math.sqrt(2 * math.pi)
    Lc = np.linalg.cholesky(K)
    X = np.stack(np.meshgrid(gx, gx, indexing="ij"), -1).reshape(-1, 2)
    W = np.outer(gw, gw).ravel()
    Z = X @ Lc.T

    def E(f):
        return float(np.sum(W * f(Z)))

    def deriv_pair(a, b, gammas):
        """<d_{gammas} (s_a s_b)> by Leibniz (gammas a tuple of sample indices in {a, b})."""
        if any(g not in (a, b) for g in gammas):
            return 0.0
        if a == b:
            k = len(gammas)
            return E(lambda z: sum(math.comb(k, j) * dtanh(z[:, a], j) * dtanh(z[:, a], k - j) for j in range(k + 1)))
        ka = sum(g == a for g in gammas)
        return E(lambda z: dtanh(z[:, a], ka) * dtanh(z[:, b], len(gammas) - ka))

    idx = range(2)
    C = {(a, b): np.array([[deriv_pair(a, b, (g1, g2)) for g2 in idx] for g1 in idx]) for a in idx for b in idx}
    C4 = {
        (a, b): np.array(
            [[[[deriv_pair(a, b, (g1, g2, g3, g4)) for g4 in idx] for g3 in idx] for g2 in idx] for g1 in idx]
        )
        for a in idx
        for b in idx
    }
    for a in idx:
        for b in idx:
            k1 = CW * (0.5 * np.sum(K1 * C[(a, b)]) + 0.125 * np.sum(V * C4[(a, b)]))
            assert abs(th.K1[3][a, b] - k1) < 1e-10
            for c in idx:
                for d in idx:
                    ss = E(
                        lambda z, a=a, b=b, c=c, d=d: (
                            np.tanh(z[:, a]) * np.tanh(z[:, b]) * np.tanh(z[:, c]) * np.tanh(z[:, d])
                        )
                    )
                    g_ab = E(lambda z, a=a, b=b: np.tanh(z[:, a]) * np.tanh(z[:, b]))
                    g_cd = E(lambda z, c=c, d=d: np.tanh(z[:, c]) * np.tanh(z[:, d]))
                    v = CW**2 * (ss - g_ab * g_cd) + CW**2 / 4 * np.einsum("ij,ijkl,kl->", C[(a, b)], V, C[(c, d)])
                    assert abs(th.V[3][a, b, c, d] - v) < 1e-10


# ---------------------------------------------------------------------------------------------
# symmetries, permutations, duplicates, options
# ---------------------------------------------------------------------------------------------
def test_tensor_symmetries():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2))
    th = ref.theory(MLP("gelu", depth=4, width=8, C_b=0.1, C_W=1.5, lambda_b=0.3), x)
    for T in (th.V, th.A):
        np.testing.assert_allclose(T, np.transpose(T, (0, 2, 1, 3, 4)), atol=1e-12)  # (12) -> (21)
        np.testing.assert_allclose(T, np.transpose(T, (0, 1, 2, 4, 3)), atol=1e-12)  # (34) -> (43)
        np.testing.assert_allclose(T, np.transpose(T, (0, 3, 4, 1, 2)), atol=1e-12)  # (12) <-> (34)
    np.testing.assert_allclose(th.D, np.transpose(th.D, (0, 2, 1, 3, 4)), atol=1e-12)
    np.testing.assert_allclose(th.D, np.transpose(th.D, (0, 1, 2, 4, 3)), atol=1e-12)
    # F[p1, n1, p2, n2] and B[a1, a3, a2, a4]: the two (neuron-sharing) pairs can be swapped
    np.testing.assert_allclose(th.F, np.transpose(th.F, (0, 3, 4, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(th.B, np.transpose(th.B, (0, 3, 4, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(th.B, np.transpose(th.B, (0, 2, 1, 4, 3)), atol=1e-12)
    for T in (th.K, th.K1, th.Theta, th.Theta1):
        np.testing.assert_allclose(T, np.transpose(T, (0, 2, 1)), atol=1e-13)
    # V is not symmetric under a2 <-> a3 in general
    assert np.max(np.abs(th.V - np.transpose(th.V, (0, 1, 3, 2, 4)))) > 1e-4


@settings(max_examples=4, deadline=None)
@given(perm=st.permutations(range(3)), seed=st.integers(0, 2**16), act=st.sampled_from(["tanh", "relu"]))
def test_permuting_inputs_permutes_tensors(perm, seed, act):
    x = np.random.default_rng(seed).normal(size=(3, 2))
    net = MLP(act, depth=3, width=6, C_b=0.1, C_W=1.5)
    p = np.array(perm)
    a = ref.theory(net, x)
    b = ref.theory(net, x[p])
    for name, T in a.tensors().items():
        Tb = getattr(b, name)
        ix = (slice(None),) + np.ix_(*([p] * (T.ndim - 1)))
        rel_close(Tb, T[ix], 1e-9, 1e-10)


def test_duplicate_inputs_are_exact():
    x = np.array([[0.5, -1.0], [1.2, 0.3], [0.5, -1.0]])
    net = MLP("tanh", depth=3, width=6, C_b=0.1, C_W=1.4)
    full = ref.theory(net, x)
    uniq = ref.theory(net, x[:2])
    m = np.array([0, 1, 0])
    for name, T in uniq.tensors().items():
        ix = (slice(None),) + np.ix_(*([m] * (T.ndim - 1)))
        np.testing.assert_array_equal(getattr(full, name), T[ix])
    assert full.x.shape == (3, 2)


def test_options_and_bad_input():
    x = np.array([[0.3, 0.1], [-0.2, 0.9]])
    net = MLP("tanh", depth=3, width=5)
    t0 = ref.theory(net, x, order=0)
    assert t0.K.shape == (3, 2, 2) and t0.Theta.shape == (3, 2, 2)
    assert all(getattr(t0, k) is None for k in ("K1", "Theta1", "V", "D", "F", "A", "B"))
    t1 = ref.theory(net, x, ntk=False)
    assert t1.V.shape == (3, 2, 2, 2, 2) and t1.K1.shape == (3, 2, 2)
    assert all(getattr(t1, k) is None for k in ("Theta", "Theta1", "D", "F", "A", "B"))
    t2 = ref.theory(net, x)
    for k in ("K", "K1", "Theta", "Theta1"):
        assert getattr(t2, k).shape == (3, 2, 2) and getattr(t2, k).dtype == np.float64
    for k in ("V", "D", "F", "A", "B"):
        assert getattr(t2, k).shape == (3, 2, 2, 2, 2)
    np.testing.assert_allclose(t0.K, t2.K, rtol=0, atol=0)
    with pytest.raises(TypeError):
        ref.theory("tanh", x)
    with pytest.raises(ValueError):
        ref.theory(net, np.array([0.3, 0.1]))
    with pytest.raises(ValueError):
        ref.theory(net, np.array([[np.nan, 0.1]]))
    with pytest.raises(ValueError):
        ref.theory(net, x, order=2)
    with pytest.raises(ValueError):
        ref.theory(net, x, quad_order=1)


def test_custom_callable_matches_builtin():
    x = np.array([[0.7, -0.2], [0.1, 0.8], [-0.5, -0.5]])
    custom = Activation.from_callable(np.tanh, derivatives=[lambda z: 1 - np.tanh(z) ** 2])
    a = ref.theory(MLP("tanh", depth=3, width=6, C_W=1.2), x)
    b = ref.theory(MLP(custom, depth=3, width=6, C_W=1.2), x)
    for name, T in a.tensors().items():
        rel_close(getattr(b, name), T, 1e-10, 1e-11)


# ---------------------------------------------------------------------------------------------
# slow: convergence of the 3-/4-sample quadrature against high fixed orders
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "act, Cb, CW", [("tanh", 0.0, 1.5), ("gelu", 0.17292239, 1.98305826), ("relu", 0.0, 2.0), ("elu", 0.1, 1.5)]
)
def test_four_sample_quadrature_converged(act, Cb, CW):
    """The default (adaptive / tabulated) 3-D and 4-D rules agree with plain high-order
    tensor-product rules on all four-point tensors (N = 4 inputs, depth 3), and with
    themselves at 0.6x the trapezoid step (smooth activations)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5))
    net = MLP(act, depth=3, width=10, C_b=Cb, C_W=CW)
    kind = ref._rule_kind(net.activation)
    if kind == "trap":  # plain 48^4 trapezoid grids are accurate to ~1e-10 only for K <~ 1.2
        x = 0.6 * x
    a = ref.theory(net, x)
    orders = {3: (96, 96), 4: (48, 48)} if kind == "trap" else {3: (24, 24), 4: (20, 20)}
    b = _fixed_order_theory(net, x, kind, orders)
    for name in ("V", "D", "F", "A", "B"):
        rel_close(getattr(a, name), getattr(b, name), 0, 1e-9)
    if kind == "trap":
        saved = dict(ref._STRIPS)
        try:
            ref._STRIPS[act] = tuple(0.6 * v for v in saved[act])
            c = ref.theory(net, x / 0.6)
        finally:
            ref._STRIPS.update(saved)
        a = ref.theory(net, x / 0.6)
        for name in ("V", "D", "F", "A", "B"):
            rel_close(getattr(a, name), getattr(c, name), 0, 1e-10)


def _fixed_order_theory(net, x, kind, orders):
    """Reference with plain tensor-product rules of the given orders for 3- and 4-sample blocks."""
    orig = ref._product_expectations

    def plain(Kb, keys, sig, rule):
        B, d, _ = Kb.shape
        if d < 3:
            return orig(Kb, keys, sig, rule)
        r = ref._Rule(net.activation, orders[d][0])
        r.orders = lambda dd: orders[dd]
        vals = np.zeros((keys.shape[0], B))
        for bidx, _xi, z, W, pos, _M, _p in ref._iter_chunks(ref._Factored(Kb), r):
            s0, s1 = sig(z, pos, 0), sig(z, pos, 1)
            for q, key in enumerate(keys):
                prod = W.copy()
                for v in range(d):
                    prod = prod * s0[..., v] ** key[2 * v] * s1[..., v] ** key[2 * v + 1]
                vals[q, bidx] = prod.sum(axis=1)
        return vals

    ref._product_expectations = plain
    try:
        return ref.theory(net, x)
    finally:
        ref._product_expectations = orig
