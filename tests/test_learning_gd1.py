"""Finite-width gradient descent at O(1/n) (issue 13 part 3; spec ``learning.md`` §4.3–4.5): the
projectors against their literal definitions and closed forms, the assembled mean's structure and
its errors.  The judge by trained ensembles is in ``test_learning_ensembles.py``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rgflow
from rgflow import learning as lg


def _inputs(NA: int, NB: int, n0: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n0, n0)))
    xte = rng.normal(size=(NB, n0))
    xte *= np.sqrt(n0) / np.linalg.norm(xte, axis=1, keepdims=True)
    return np.vstack([Q[:NA] * np.sqrt(n0), xte])


@pytest.fixture(scope="module")
def gelu_theory() -> rgflow.Theory:
    net = rgflow.MLP.critical("gelu", depth=3, width=32, learning_rates="constant")
    return rgflow.theory(net, _inputs(4, 3), dntk=True)


def _spd(rng: np.random.Generator, N: int) -> np.ndarray:
    A = rng.normal(size=(N, N + 2))
    return A @ A.T / N + 0.3 * np.eye(N)


def _literal(H: np.ndarray, eta: float) -> dict[str, np.ndarray]:
    """The projectors from their definitions (∞.107)–(∞.147) (spec §4.3), by dense inverses."""
    N = len(H)
    Id = np.eye(N)
    Hi = np.linalg.inv(H)
    k = np.kron
    X2 = np.linalg.inv(k(H, Id) + k(Id, H) - eta * k(H, H)).reshape((N,) * 4)
    s1 = k(k(H, Id), Id) + k(k(Id, H), Id) + k(k(Id, Id), H)
    s2 = k(k(H, H), Id) + k(k(H, Id), H) + k(k(Id, H), H)
    X3 = np.linalg.inv(s1 - eta * s2 + eta**2 * k(k(H, H), H)).reshape((N,) * 6)
    e = np.einsum
    Y1 = e("abde,cf->abcdef", X2, Hi) - e("cg,abgdef->abcdef", Hi, X3)
    Y2 = e("ac,bd->abcd", Hi, Hi) - e("be,aecd->abcd", Hi, X2)
    Y3 = (
        e("ad,be,cf->abcdef", Hi, Hi, Hi)
        - e("bg,agde,cf->abcdef", Hi, X2, Hi)
        - e("ad,cg,bgef->abcdef", Hi, Hi, X2)
        + e("ci,bigh,aghdef->abcdef", Hi, X2, X3)
    )
    Y4 = e("ad,bcef->abcdef", Hi, X2) - e("bcgh,aghdef->abcdef", X2, X3)
    return {
        "Z_A": Y2,
        "Z_B": Y2 + eta / 2 * X2,
        "Z_IA": -Y3 - eta / 2 * Y4,
        "Z_IB": -Y3 - eta / 2 * Y4 - eta / 2 * Y1 - eta**2 / 6 * X3,
        "Z_IIA": -Y3,
        "Z_IIB": -Y3 - e("bacedf->abcdef", Y3) - e("acbdfe->abcdef", Y3) - eta * Y4 - eta * Y1,
    }


@pytest.mark.parametrize("u", [0.0, 0.4, 1.0, 1.7])
def test_projectors_match_their_literal_definitions(u: float) -> None:
    """The eigenbasis forms equal (∞.107)–(∞.147) built with dense inverses, for η λ_max = u."""
    H = _spd(np.random.default_rng(3), 3)
    eta = u / np.linalg.eigvalsh(H).max()
    Z = lg.projectors(H, eta, "gd" if u > 0 else "flow")
    lit = _literal(H, eta)
    for name, val in lit.items():
        np.testing.assert_allclose(Z.dense(name), val, rtol=1e-10, atol=1e-10 * np.abs(val).max(), err_msg=name)


def test_single_input_projectors_closed_forms() -> None:
    """Spec §4.3 (one training input, u = ηH) and the ODE limit (∞.168)."""
    H = 1.7
    for u in (0.0, 0.3, 1.0, 1.9):
        Z = lg.projectors(np.array([[H]]), u / H, "gd" if u else "flow")
        z = {k: float(Z.dense(k).ravel()[0]) for k in Z.f}
        q = u * u - 3 * u + 3
        exp = {
            "Z_A": (1 - u) / (H**2 * (2 - u)),
            "Z_B": 1 / (2 * H**2),
            "Z_IA": -(1 - u) * (u * u - 2 * u + 2) / (2 * H**3 * (2 - u) * q),
            "Z_IB": -1 / (6 * H**3),
            "Z_IIA": -((1 - u) ** 3) / (H**3 * (2 - u) * q),
            "Z_IIB": -(1 - u) / (H**3 * (2 - u)),
        }
        for k, v in exp.items():
            assert z[k] == pytest.approx(v, rel=1e-12, abs=1e-14), (u, k)
    flow = lg.projectors(np.array([[H]]), 0.0, "flow")
    limits = [1 / (2 * H**2), 1 / (2 * H**2), -1 / (6 * H**3), -1 / (6 * H**3), -1 / (6 * H**3), -1 / (2 * H**3)]
    got = [float(flow.dense(k).ravel()[0]) for k in ("Z_A", "Z_B", "Z_IA", "Z_IB", "Z_IIA", "Z_IIB")]
    np.testing.assert_allclose(got, limits, rtol=1e-13)


def test_b_projectors_are_algorithm_independent() -> None:
    """Spec §4.3: ½(Z_B^{1234} + Z_B^{2143}) = ½ H̃⁻¹H̃⁻¹ and Sym_{S3} Z_IB = −⅙ H̃⁻¹H̃⁻¹H̃⁻¹ for GD at any η,
    gradient flow and Newton alike; the A-projectors and Z_IIB are not (and Z_IIB is not pair-symmetric)."""
    H = _spd(np.random.default_rng(5), 3)
    Hi = np.linalg.inv(H)
    half = 0.5 * np.einsum("ac,bd->abcd", Hi, Hi)
    sixth = -np.einsum("ad,be,cf->abcdef", Hi, Hi, Hi) / 6
    lmax = np.linalg.eigvalsh(H).max()
    zs = [lg.projectors(H, u / lmax, "gd") for u in (0.5, 1.5)] + [
        lg.projectors(H, 0.0, "flow"),
        lg.projectors(H, 0.0, "newton"),
    ]
    for Z in zs:
        ZB = Z.dense("Z_B")
        np.testing.assert_allclose(0.5 * (ZB + ZB.transpose(1, 0, 3, 2)), half, atol=1e-12)
        ZIB = Z.dense("Z_IB")
        sym = sum(ZIB.transpose(*p, *(3 + np.array(p))) for p in itertools.permutations(range(3))) / 6
        np.testing.assert_allclose(sym, sixth, atol=1e-12)
    ZIIB = zs[0].dense("Z_IIB")
    assert np.abs(ZIIB - ZIIB.transpose(1, 0, 2, 4, 3, 5)).max() > 1e-3 * np.abs(ZIIB).max()
    assert np.abs(zs[0].dense("Z_A") - zs[1].dense("Z_A")).max() > 1e-3


def test_flow_is_the_small_rate_limit_of_gd(gelu_theory: rgflow.Theory) -> None:
    th = gelu_theory
    y = np.random.default_rng(2).normal(size=(4, 2))
    tr, te = np.arange(4), np.arange(4, 7)
    flow = rgflow.predict(th, y, tr, te, kind="gd", order=1, algorithm="flow")
    gd = rgflow.predict(th, y, tr, te, kind="gd", order=1, lr=1e-7)
    np.testing.assert_allclose(gd.mean, flow.mean, atol=1e-7 * np.abs(flow.mean).max())
    default = rgflow.predict(th, y, tr, te, kind="gd", order=1)
    assert default.lr == pytest.approx(1 / np.linalg.eigvalsh(th.Theta[-1][:4, :4]).max())  # rgflow.train's η
    # the rate matters at O(1/n): through Z_A, Z_IA, Z_IIA, Z_IIB (spec §4.3)
    assert (
        np.abs(default.pieces["ddntk_2"] - flow.pieces["ddntk_2"]).max() > 1e-3 * np.abs(flow.pieces["ddntk_2"]).max()
    )
    # the NTK-variance and ΔH parts are algorithm-independent
    for k in ("ntk_mean", "ntk_variance"):
        np.testing.assert_allclose(default.pieces[k], flow.pieces[k], atol=1e-14)


def test_order_one_gd_mean_structure(gelu_theory: rgflow.Theory) -> None:
    """Training inputs are reproduced exactly; the pieces add up; n·correction is width-independent with
    H = Θ (theta1=False), and Θ1 changes only the ntk_mean piece; permuting training inputs changes nothing."""
    th = gelu_theory
    y = np.random.default_rng(4).normal(size=(4, 2))
    tr, te = np.arange(4), np.arange(4, 7)
    p = rgflow.predict(th, y, tr, np.r_[te, tr], kind="gd", order=1)
    np.testing.assert_allclose(p.mean[3:], y, atol=1e-12)
    p = rgflow.predict(th, y, tr, te, kind="gd", order=1)
    assert set(p.pieces) == {"ntk_mean", "ntk_variance", "dntk", "ddntk_1", "ddntk_2"}
    np.testing.assert_allclose(p.mean_infinite + sum(p.pieces.values()), p.mean, atol=1e-14)
    book = rgflow.predict(th, y, tr, te, kind="gd", order=1, theta1=False)
    np.testing.assert_allclose(book.pieces["ntk_mean"], 0, atol=1e-14)
    for k in ("ntk_variance", "dntk", "ddntk_1", "ddntk_2"):  # differ at O(1/n²) only
        np.testing.assert_allclose(book.pieces[k], p.pieces[k], atol=0.4 * np.abs(p.pieces[k]).max())
    perm = np.array([2, 0, 3, 1])
    q = rgflow.predict(th, y[perm], tr[perm], te, kind="gd", order=1)
    np.testing.assert_allclose(q.mean, p.mean, atol=1e-12)
    # the correction is O(1/n) with every piece present and of comparable size (nothing vanishes by accident)
    for k in ("ntk_variance", "dntk", "ddntk_1", "ddntk_2"):
        assert 1e-3 < 32 * np.abs(p.pieces[k]).max() < 10, k


def test_order_one_gd_mean_with_one_training_input_matches_the_book_scalars() -> None:
    """One training input, one output, gradient flow: every piece in closed form from the spec's scalar
    projectors (∞.168) — checks the contractions of (∞.162)–(∞.165) index by index."""
    net = rgflow.MLP.critical("gelu", depth=3, width=16, learning_rates="constant")
    x = _inputs(1, 1)
    th = rgflow.theory(net, x, dntk=True)
    yv = 0.7
    p = rgflow.predict(th, [[yv]], [0], [1], kind="gd", order=1, algorithm="flow", theta1=False)
    T = {k: getattr(th, k)[-1] for k in ("K", "Theta", "A", "B", "P", "Q", "R", "S", "T", "U")}
    H, K = T["Theta"][0, 0], T["K"][0, 0]
    r = T["Theta"][1, 0] / H  # projection weight H_δα H̃⁻¹

    def perp(f: object) -> float:
        return float(f(1) - r * f(0))  # type: ignore[operator]

    n = 16
    ZA = ZB = 1 / (2 * H**2)
    ZIA = ZIB = ZIIA = -1 / (6 * H**3)
    ZIIB = -1 / (2 * H**3)
    Yc = yv * (yv * yv + K) + 2 * yv * K  # 𝒴 with n_L = 1
    A, B, P, Q, R, S, Tt, U = (T[k] for k in ("A", "B", "P", "Q", "R", "S", "T", "U"))
    dvar = perp(lambda d: (A[d, 0, 0, 0] + 2 * B[d, 0, 0, 0]) / H**2 * yv)
    dntk = perp(
        lambda d: (
            -(2 * (P[d, 0, 0, 0] + 2 * Q[d, 0, 0, 0]) * ZB + 2 * (P[0, d, 0, 0] + Q[0, d, 0, 0] + Q[0, 0, d, 0]) * ZA)
            * yv
        )
    )
    dd1 = perp(lambda d: -(3 * R[d, 0, 0, 0] * ZIB + (R[0, d, 0, 0] + R[0, 0, 0, d] + R[0, 0, d, 0]) * ZIA) * Yc)
    dd2 = perp(
        lambda d: (
            -(
                (S[d, 0, 0, 0] + Tt[d, 0, 0, 0] + U[d, 0, 0, 0]) * ZIIB
                + (S[0, 0, d, 0] + Tt[0, d, 0, 0] + U[0, 0, 0, d]) * ZIIA
            )
            * Yc
        )
    )
    assert p.pieces["ntk_variance"][0, 0] == pytest.approx(-dvar / n, rel=1e-10)
    assert p.pieces["dntk"][0, 0] == pytest.approx(dntk / n, rel=1e-10)
    assert p.pieces["ddntk_1"][0, 0] == pytest.approx(dd1 / n, rel=1e-10)
    assert p.pieces["ddntk_2"][0, 0] == pytest.approx(dd2 / n, rel=1e-10)


def test_order_one_gd_errors(gelu_theory: rgflow.Theory) -> None:
    y, tr, te = np.zeros((4, 1)), np.arange(4), [4]
    net = rgflow.MLP.critical("gelu", depth=3, width=32, learning_rates="constant")
    plain = rgflow.theory(net, _inputs(4, 3))
    with pytest.raises(ValueError, match=r"th carries no P, Q, R, S, T, U.*rgflow\.theory\(net, x, dntk=True\)"):
        rgflow.predict(plain, y, tr, te, kind="gd", order=1)
    relu = rgflow.MLP.critical("relu", depth=3, width=32, learning_rates="constant")
    with pytest.warns(RuntimeWarning, match="not defined for the kinked"):
        th_relu = rgflow.theory(relu, _inputs(4, 3), dntk=True)
    with pytest.raises(ValueError, match="kinked activation 'relu'.*smooth activation"):
        rgflow.predict(th_relu, y, tr, te, kind="gd", order=1)
    th = gelu_theory
    lmax = np.linalg.eigvalsh(th.ntk_mean(3)[:4, :4]).max()
    with pytest.raises(ValueError, match="does not converge"):
        rgflow.predict(th, y, tr, te, kind="gd", order=1, lr=2.01 / lmax)
    with pytest.raises(ValueError, match="do not depend on it"):
        rgflow.predict(th, y, tr, te, kind="gd", order=1, algorithm="flow", lr=0.1)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        rgflow.predict(th, y, tr, te, kind="gd", order=1, algorithm="adam")
    with pytest.raises(NotImplementedError, match="fully trained networks only"):
        rgflow.predict(th, y, tr, te, kind="gd", order=1, steps=10, lr=0.1)
    with pytest.raises(ValueError, match="lr .* must be a number > 0"):
        rgflow.predict(th, y, tr, te, kind="gd", order=1, lr=-1.0)


# ----------------------------------------------------------------------------- single network (∞.141)
def _gd_check_setup(n: int) -> tuple[rgflow.MLP, np.ndarray, np.ndarray]:
    """The spec's ``gd_check.py`` set-up (§4.4): tanh, L = 3, C_W = 1, C_b = 0, λ = 1, n_L = 2, three
    orthonormal training inputs ×√3 and two random test inputs of norm √3, y ~ N(0, 0.64)."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    xte = rng.normal(size=(2, 3))
    xte *= np.sqrt(3) / np.linalg.norm(xte, axis=1, keepdims=True)
    net = rgflow.MLP("tanh", depth=3, width=n, C_b=0, C_W=1, lambda_b=1, lambda_W=1)
    return net, np.vstack([Q * np.sqrt(3), xte]), rng.normal(size=(3, 2)) * 0.8


def _single_network_ratios(n: int, seeds: range) -> tuple[np.ndarray, np.ndarray]:
    net, x, y = _gd_check_setup(n)
    full, free = [], []
    for s in seeds:
        p = lg.network_prediction(net, x, y, np.arange(3), [3, 4], seed=s)
        assert p.loss is not None and p.loss < 1e-24 and p.trained is not None
        full.append(np.abs(p.trained - p.mean).max())
        free.append(np.abs(p.trained - p.free).max())
    return np.array(full), np.array(free)


def test_single_network_prediction_reproduces_training_targets_and_tensors() -> None:
    """(∞.141) on the training inputs returns y exactly; the autodiff differentials have the symmetries of
    spec §0 and Ĥ matches the infinite-width Θ up to O(1/√n) fluctuations."""
    pytest.importorskip("jax")
    net, x, y = _gd_check_setup(16)
    p = lg.network_prediction(net, x, y, np.arange(3), [3, 4, 0, 2], seed=1, fit=False)
    np.testing.assert_allclose(p.mean[2:], y[[0, 2]], atol=1e-12)
    t = p.extra["tensors"]
    np.testing.assert_allclose(t.dH, t.dH.transpose(0, 2, 1), atol=1e-12)  # symmetric in its two directions
    for perm in itertools.permutations((1, 2, 3)):
        np.testing.assert_allclose(t.ddIH, t.ddIH.transpose(0, *perm), atol=1e-10)
    np.testing.assert_allclose(t.ddIIH, t.ddIIH.transpose(1, 0, 3, 2), atol=1e-12)  # joint swap only
    assert np.abs(t.ddIIH - t.ddIIH.transpose(0, 1, 3, 2)).max() > 1e-6
    Theta = rgflow.theory(net, x, order=0).Theta[-1]
    H00 = t.H[:5, :5]  # output neuron 0
    assert np.abs(H00 - Theta).max() < 0.5 * np.abs(Theta).max()


def test_single_network_prediction_beats_the_free_solution() -> None:
    """Networks of width 64 trained by GD to loss < 1e-24: (∞.141) with the network's own tensors cuts the
    residual of the frozen-NTK solution (spec §4.4: median ratio 0.16 at n = 64; here measured 0.11–0.33)."""
    pytest.importorskip("jax")
    full, free = _single_network_ratios(64, range(3))
    assert np.median(full / free) < 0.4, full / free


@pytest.mark.slow
def test_single_network_prediction_improves_with_width() -> None:
    """Median residual ratio (spec §4.4: 0.16 at n = 64, 0.09 at n = 256; measured here 0.3 and 0.08)."""
    pytest.importorskip("jax")
    f64, r64 = _single_network_ratios(64, range(6))
    f256, r256 = _single_network_ratios(256, range(6))
    assert np.median(f256 / r256) < 0.15
    assert np.median(f256) < 0.3 * np.median(f64)  # the residual falls faster than 1/n
