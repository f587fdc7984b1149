"""The dNTK family P, Q, R, S, T, U (``docs/spec/dntk.md``): the Rust engine against the
spec's reference values (§6.4), the numpy reference in the book's inverse-kernel form, every
closed form and asymptotic of §6, initial conditions, symmetries and invariances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rgflow
from rgflow.recursions import DNTK_TENSORS, Theory
from rgflow.testing import reference

X2 = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.7]])  # dntk.md §6.4 / §7.1 inputs
X3 = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.7], [-0.6, 0.4, 0.9]])
GELU_CB, GELU_CW = 0.17292239, 1.98305826

# dntk.md §6.4: layer 4, entries [0000, 0011, 0101, 0110, 1000, 0001] of each tensor
ENTRIES = [(0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0), (1, 0, 0, 0), (0, 0, 0, 1)]
SPEC_TANH = {
    "F": [0.25292405, -0.043832516, 0.45523849, -0.036130634, -0.073364186, 0.20672239],
    "B": [6.6631623, 2.6220575, 5.7888417, 2.5803721, 4.0192354, 4.0192354],
    "P": [-1.5866944, 0.24376665, 0.24376665, -0.77156459, 0.1551235, 0.46075737],
    "Q": [-0.99883734, 0.15546798, 0.9709315, -0.91446507, 0.41691861, 0.2810266],
    "R": [-35.603577, -12.698896, -11.221172, -11.221172, -6.7903556, -20.412101],
    "S": [15.587981, 6.394014, 6.504458, 2.7962684, 4.4526927, 9.4033861],
    "T": [4.5305582, -0.59487303, -3.2937991, 6.5356027, -1.7834095, -1.7834095],
    "U": [4.6095571, -0.30063315, 2.4045176, -0.65821246, -0.48078875, 3.1957516],
}
SPEC_GELU = {
    "F": [16.339971, 4.1886673, 9.9326792, 4.1401394, 9.1562859, 5.0779157],
    "B": [41.423904, 7.2425065, 25.429714, 6.0283857, 12.880086, 12.880086],
    "P": [5.055306, 4.5522242, 4.5522242, 0.64849461, 3.485327, 9.5710363],
    "Q": [21.498252, 8.4307875, 12.568201, 4.1045962, 7.716012, 14.869364],
    "R": [-95.20882, -15.586583, -7.5691874, -7.5691874, 0.20786744, -26.720897],
    "S": [93.946048, 21.708669, 26.505069, 6.3883822, 15.963853, 26.67774],
    "T": [61.408455, 19.968098, 5.0364425, 25.983297, 13.750468, 13.750468],
    "U": [29.296961, 1.9110513, 9.3888483, 7.0298902, 4.6979321, 11.386826],
}


def _dntk(net: rgflow.MLP, x: np.ndarray, **kw) -> Theory:
    return rgflow.theory(net, x, dntk=True, **kw)


@pytest.mark.parametrize(
    "act,cb,cw,table", [("tanh", 0.0, 1.0, SPEC_TANH), ("gelu", GELU_CB, GELU_CW, SPEC_GELU)], ids=["tanh", "gelu"]
)
def test_spec_reference_values(act, cb, cw, table):
    """dntk.md §6.4: every printed digit (8 significant) of F, B, P, Q, R, S, T, U at layer 4."""
    th = _dntk(rgflow.MLP(act, depth=4, width=64, C_b=cb, C_W=cw), X2)
    for name, vals in table.items():
        got = np.array([getattr(th, name)[3][e] for e in ENTRIES])
        np.testing.assert_allclose(got, vals, rtol=6e-8, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(
    "net",
    [
        # a misplaced lambda_W, C_W or rho shows: all differ from 1, and vary per layer
        rgflow.MLP(
            "tanh",
            depth=4,
            widths=[7, 13, 5],
            C_b=[0.1, 0.2, 0.05, 0.3],
            C_W=[1.3, 0.9, 1.6, 1.1],
            lambda_b=[0.4, 1.2, 0.7, 0.2],
            lambda_W=[2.2, 0.5, 1.7, 0.9],
        ),
        rgflow.MLP(
            "gelu", depth=4, widths=[20, 10, 40], C_b=GELU_CB, C_W=[GELU_CW, 1.5, 2.3, 1.2], lambda_b=0.3, lambda_W=1.9
        ),
        rgflow.MLP("swish", depth=3, width=16, C_b=0.2, C_W=1.7, lambda_b=0.6, lambda_W=1.4),
    ],
    ids=["tanh", "gelu", "swish"],
)
def test_engine_matches_reference_inverse_kernel_form(net):
    """Derivative form (Rust; closed forms or nested quadrature) vs the book's K^{-1} form (numpy;
    tensor Gauss-Hermite), with per-layer hyperparameters and unequal widths: <= 1e-9."""
    th = _dntk(net, X2)
    ref = reference.theory(net, X2, dntk=True)
    for name in DNTK_TENSORS:
        a, b = getattr(th, name), getattr(ref, name)
        assert a.shape == (net.depth, 2, 2, 2, 2)
        scale = np.max(np.abs(a))
        assert scale > 1e-3, name  # a real comparison, not two zeros
        assert np.max(np.abs(a - b)) <= 1e-9 * scale, (name, np.max(np.abs(a - b)) / scale)


def test_engine_matches_reference_three_inputs():
    """Blocks of three distinct samples (4-point integrands over 3-D blocks)."""
    net = rgflow.MLP("gelu", depth=3, width=32, C_b=GELU_CB, C_W=GELU_CW, lambda_b=0.5, lambda_W=1.5)
    th = _dntk(net, X3)
    ref = reference.theory(net, X3, dntk=True)
    for name in DNTK_TENSORS:
        a, b = getattr(th, name), getattr(ref, name)
        assert np.max(np.abs(a - b)) <= 1e-9 * np.max(np.abs(a)), name


def test_deep_linear_multi_input_closed_forms():
    """dntk.md §6.2 (∞.45)-(∞.48) and its multi-input generalisation, exact at every depth."""
    L, lbt, lwt = 6, 0.7, 1.3
    net = rgflow.MLP("linear", depth=L, width=10, C_b=0.0, C_W=1.0, lambda_b=lbt / L, lambda_W=lwt / L)
    th = _dntk(net, X3)
    G = X3 @ X3.T / 3
    c = lbt + lwt * G
    for ell in range(1, L + 1):
        i = ell - 1
        np.testing.assert_allclose(th.Theta[i], c * ell / L, rtol=1e-13)
        np.testing.assert_allclose(th.F[i], np.einsum("ac,bd->abcd", G, c) * ell * (ell - 1) / (2 * L), atol=1e-13)
        Q = lwt * np.einsum("bd,ac->abcd", G, c) * (ell**3 - ell) / (6 * L**2)
        S = lwt * np.einsum("ac,bd->abcd", c, c) * ell**2 * (ell**2 - 1) / (12 * L**3)
        T = lwt**2 * np.einsum("bc,ad->abcd", G, c) * ell**2 * (ell**2 - 1) / (12 * L**3)
        np.testing.assert_allclose(th.Q[i], Q, atol=1e-13)
        np.testing.assert_allclose(th.S[i], S, atol=1e-13)
        np.testing.assert_allclose(th.T[i], T, atol=1e-13)
        for name in ("P", "R", "U"):
            assert np.max(np.abs(getattr(th, name)[i])) < 1e-14
    assert np.max(np.abs(th.S[-1])) > 0.1 and np.max(np.abs(th.T[-1])) > 0.1


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5], ids=["relu", "leaky0.1", "leaky-0.5"])
def test_scale_invariant_single_input(slope):
    """dntk.md §6.1, (11.72)-(11.79): P = 0 and the closed form of Q at criticality; the ddNTKs
    are refused (NaN with a warning) for kinked activations."""
    act = rgflow.Activation("relu") if slope == 0.0 else rgflow.Activation("leaky_relu", slope=slope)
    A2, A4 = (1 + slope**2) / 2, (1 + slope**4) / 2
    L, lbt, lwt = 8, 0.6, 1.7
    x = np.array([[1.2, -0.4, 0.9]])
    net = rgflow.MLP(act, depth=L, width=10, C_b=0.0, C_W=1 / A2, lambda_b=lbt / L, lambda_W=lwt / L)
    with pytest.warns(RuntimeWarning, match="not defined"):
        th = _dntk(net, x)
    Kstar = float(np.sum(x**2) / 3 / A2)
    lam = lbt + lwt * A2 * Kstar
    for ell in range(1, L + 1):
        i = ell - 1
        assert th.K[i, 0, 0] == pytest.approx(Kstar, rel=1e-13)
        assert th.Theta[i, 0, 0] == pytest.approx(lam * ell / L, rel=1e-12)
        assert th.F[i, 0, 0, 0, 0] == pytest.approx(ell * (ell - 1) / (2 * L) * A4 / A2**2 * lam * Kstar, rel=1e-11)
        q = ell * (ell**2 - 1) / (6 * L**2) * A4 / A2 * lam * lwt * Kstar  # (11.79)
        assert th.Q[i, 0, 0, 0, 0] == pytest.approx(q, rel=1e-11, abs=1e-14)
        assert abs(th.P[i, 0, 0, 0, 0]) < 1e-13  # (11.74)
    assert th.Q[-1, 0, 0, 0, 0] > 0.1
    for name in ("R", "S", "T", "U"):
        assert np.all(np.isnan(getattr(th, name)))


def test_scale_invariant_recursions_hold_for_kinked_multi_input_q():
    """Q of relu with two inputs: finite, satisfies Q' = chi^2-type propagation only through the
    derivative form (no closed form in the book); here: the single-input diagonal still obeys
    (11.73) Q' = chi^2 Q + (lambda_W/C_W) F' while off-diagonal entries are finite."""
    net = rgflow.MLP("relu", depth=4, width=10, C_b=0.0, C_W=2.0, lambda_b=0.3, lambda_W=1.4)
    with pytest.warns(RuntimeWarning):
        th = _dntk(net, X2)
    assert np.all(np.isfinite(th.P)) and np.all(np.isfinite(th.Q))
    for a in range(2):
        for i in range(1, 4):
            chi = 1.0  # C_W A_2 at criticality
            expect = chi**2 * th.Q[i - 1, a, a, a, a] + 1.4 / 2.0 * th.F[i, a, a, a, a]
            assert th.Q[i, a, a, a, a] == pytest.approx(expect, rel=1e-11)
            assert abs(th.P[i, a, a, a, a]) < 1e-12
    assert np.max(np.abs(th.P[-1])) > 1e-3  # off the diagonal P does not vanish


def test_k_star_zero_tanh_asymptotics():
    """dntk.md §6.3 (11.92)-(11.103), (∞.30)-(∞.38): tanh at criticality, lambda_b = 0.8/l,
    lambda_W = 1.1, K(1) = 0.5; the book's large-depth coefficients and exponents
    (P, Q ~ l; R, S, T ~ l^2; U -> const).  The remainder is O(log l / l)."""
    L = 4000
    lb = [0.8 / ell for ell in range(1, L + 1)]
    net = rgflow.MLP("tanh", depth=L, width=100, C_b=0.0, C_W=1.0, lambda_b=lb, lambda_W=1.1)
    th = _dntk(net, np.array([[np.sqrt(0.5)]]))
    v = {k: getattr(th, k)[:, 0, 0, 0, 0] for k in DNTK_TENSORS}
    ells = np.array([L // 2, L])
    book = {"P": (-0.151875, 1), "Q": (-0.0675, 1), "R": (-0.349313, 2), "S": (0.167063, 2), "T": (0.054, 2)}
    for name, (coef, p) in book.items():
        vals = v[name][ells - 1] / ells.astype(float) ** p
        # Richardson in 1/l over the two depths removes the leading remainder
        extrap = 2 * vals[1] - vals[0]
        assert extrap == pytest.approx(coef, rel=3e-3), (name, vals, extrap)
        slope = np.log(v[name][L - 1] / v[name][L // 2 - 1]) / np.log(2)
        assert slope == pytest.approx(p, abs=0.02), name  # exponents (11.99), (∞.38)
    u = v["U"][ells - 1]
    assert 2 * u[1] - u[0] == pytest.approx(2.460375, rel=3e-3)
    # the width-scaled ratio P / (n Theta^2) ~ -(1/12) l/n (11.100)
    theta = th.Theta[L - 1, 0, 0]
    assert v["P"][L - 1] / (theta**2 * L) == pytest.approx(-1 / 12, rel=2e-2)


def test_initial_conditions_layer_one_zero_layer_two_closed_forms():
    """dntk.md §4: layer 1 vanishes; layer 2 is (11.31), (11.32) and the ddNTK sources."""
    cw, lw, lb, cb = 1.7, 1.3, 0.4, 0.1
    net = rgflow.MLP("tanh", depth=2, width=10, C_b=cb, C_W=cw, lambda_b=lb, lambda_W=lw)
    x = np.array([[0.8, -0.3]])
    th = _dntk(net, x)
    for name in DNTK_TENSORS:
        assert np.all(getattr(th, name)[0] == 0.0)
    K = th.K[0, 0, 0]
    Th = th.Theta[0, 0, 0]
    zs, ws = np.polynomial.hermite_e.hermegauss(160)
    ws = ws / np.sqrt(2 * np.pi)
    t = np.tanh(np.sqrt(K) * zs)
    s0, s1, s2 = t, 1 - t * t, -2 * t * (1 - t * t)
    s3 = -2 * (1 - t * t) * (1 - 3 * t * t)

    def E(f):
        return float(ws @ f)

    P2 = cw**2 * Th**2 * E(s2 * s1 * s1 * s0)
    Q2 = P2 + lw * cw * Th * E(s1 * s0 * s1 * s0)
    R2 = cw * Th**2 * (lw * E(s2 * s0 * s1 * s1) + cw * Th * E(s3 * s1**3))
    S2 = cw * Th**2 * (lw * E(s1**4) + cw * Th * E(s2 * s2 * s1 * s1))
    T2 = Th * (
        lw**2 * E(s1 * s1 * s0 * s0) + 2 * lw * cw * Th * E(s2 * s1 * s1 * s0) + cw**2 * Th**2 * E(s2**2 * s1**2)
    )
    U2 = cw**2 * Th**3 * E(s2**2 * s1**2)
    for name, val in zip(DNTK_TENSORS, (P2, Q2, R2, S2, T2, U2), strict=True):
        assert getattr(th, name)[1, 0, 0, 0, 0] == pytest.approx(val, rel=1e-9), name
        assert abs(val) > 1e-3


def test_last_layer_only_training_gives_zero():
    """learning.md §8 item 11: lambda = 0 below the last layer -> P = Q = R = S = T = U = 0."""
    L = 4
    net = rgflow.MLP(
        "gelu", depth=L, width=16, C_b=GELU_CB, C_W=GELU_CW, lambda_b=[0, 0, 0, 1.0], lambda_W=[0, 0, 0, 1.0]
    )
    th = _dntk(net, X3)
    assert np.max(th.Theta[-1]) > 0.5
    for name in DNTK_TENSORS:
        assert np.max(np.abs(getattr(th, name))) == 0.0, name
    # and not when the layer below trains too
    net2 = rgflow.MLP(
        "gelu", depth=L, width=16, C_b=GELU_CB, C_W=GELU_CW, lambda_b=[0, 0, 1.0, 1.0], lambda_W=[0, 0, 1.0, 1.0]
    )
    th2 = _dntk(net2, X3)
    for name in DNTK_TENSORS:
        assert np.max(np.abs(getattr(th2, name)[-1])) > 1e-3, name


@settings(max_examples=12, deadline=None)
@given(
    act=st.sampled_from(["tanh", "gelu", "swish", "erf"]),
    cw=st.floats(0.5, 2.5),
    cb=st.floats(0.0, 0.5),
    lb=st.floats(0.1, 2.0),
    lw=st.floats(0.1, 2.0),
    seed=st.integers(0, 2**16),
)
def test_symmetries(act, cw, cb, lb, lw, seed):
    """dntk.md §1.3: P_0123 = P_0213, R_0123 = R_0132, S_abcd = S_badc, T_abcd = T_dcba, U_abcd = U_cdab."""
    x = np.random.default_rng(seed).normal(size=(3, 4))
    net = rgflow.MLP(act, depth=3, width=8, C_b=cb, C_W=cw, lambda_b=lb, lambda_W=lw)
    th = _dntk(net, x)
    pairs = {
        "P": (0, 1, 3, 2, 4),
        "R": (0, 1, 2, 4, 3),
        "S": (0, 2, 1, 4, 3),
        "T": (0, 4, 3, 2, 1),
        "U": (0, 3, 4, 1, 2),
    }
    for name, perm in pairs.items():
        a = getattr(th, name)
        scale = np.max(np.abs(a))
        assert scale > 0
        assert np.max(np.abs(a - a.transpose(perm))) <= 1e-12 * scale, name
    # Q has no such symmetry (footnote 3 of ch. 11): the test above can fail
    assert np.max(np.abs(th.Q - th.Q.transpose(0, 1, 3, 2, 4))) > 1e-6 * np.max(np.abs(th.Q))


def test_permutation_of_inputs_and_duplicates():
    net = rgflow.MLP("gelu", depth=3, width=8, C_b=GELU_CB, C_W=GELU_CW, lambda_b=0.5, lambda_W=1.5)
    th = _dntk(net, X3)
    perm = np.array([2, 0, 1])
    thp = _dntk(net, X3[perm])
    ix = (slice(None), *np.ix_(perm, perm, perm, perm))
    for name in DNTK_TENSORS:
        np.testing.assert_allclose(getattr(thp, name), getattr(th, name)[ix], rtol=1e-12, atol=1e-12, err_msg=name)
    # a repeated input is the same sample
    thd = _dntk(net, X3[[0, 1, 2, 0]])
    for name in DNTK_TENSORS:
        np.testing.assert_allclose(getattr(thd, name)[:, 3, 3, 3, 3], getattr(th, name)[:, 0, 0, 0, 0], rtol=1e-12)
        np.testing.assert_allclose(getattr(thd, name)[:, 3, 1, 2, 0], getattr(th, name)[:, 0, 1, 2, 0], rtol=1e-12)


def test_first_order_tensors_unchanged_and_options(tmp_path):
    net = rgflow.MLP("tanh", depth=3, width=8, C_b=0.1, C_W=1.2)
    # with a fixed quadrature order the dNTK pass leaves the first-order tensors bit-identical; the
    # default error-controlled rule for smooth activations chooses its nodes per block from all the
    # integrands it is given, so there they agree to within its tolerance (2e-11), not bitwise
    a, b = rgflow.theory(net, X3, quad_order=12), _dntk(net, X3, quad_order=12)
    for name in ("K", "K1", "Theta", "Theta1", "V", "D", "F", "A", "B"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    a = rgflow.theory(net, X3)
    b = _dntk(net, X3)
    for name in ("K", "K1", "Theta", "Theta1", "V", "D", "F", "A", "B"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-11, atol=1e-14)
    assert a.P is None and a.U is None
    assert b.options["dntk"] is True
    with pytest.raises(ValueError, match="dntk"):
        rgflow.theory(net, X3, dntk=True, order=0)
    with pytest.raises(ValueError, match="dntk"):
        rgflow.theory(net, X3, dntk=True, ntk=False)
    # save / load round trip
    b.save(tmp_path / "t.npz")
    c = Theory.load(tmp_path / "t.npz")
    for name in DNTK_TENSORS:
        np.testing.assert_array_equal(getattr(c, name), getattr(b, name))
    assert "P" in repr(c)


def test_quadrature_path_matches_closed_forms():
    """GELU: the closed-form four-point expectations (default) vs forced nested quadrature."""
    net = rgflow.MLP("gelu", depth=3, width=8, C_b=GELU_CB, C_W=GELU_CW, lambda_b=0.5, lambda_W=1.5)
    a = _dntk(net, X3)
    b = _dntk(net, X3, expectations="quadrature")
    for name in DNTK_TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.max(np.abs(x - y)) <= 1e-9 * np.max(np.abs(x)), name


def test_no_warning_for_smooth():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        th = _dntk(rgflow.MLP("gelu", depth=2, width=4, C_b=0.1, C_W=1.5), X2)
    assert np.all(np.isfinite(th.U))
