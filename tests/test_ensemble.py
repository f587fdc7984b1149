"""Validation of the ensemble samplers (rgflow.ensemble) against closed forms.

Fast tests use exact finite-width results that need no theory engine: layer 1, layer 2 (exact
Gaussian expectations, checked by an independent brute-force Gaussian MC), deep linear
networks (PDLT ch. 3), the scale-invariance of the ReLU diagonal, and the ntk.md §1.7 table.
``-m slow`` adds the comparison with ``rgflow.testing.reference`` (skipped if it does not exist).
All thresholds are in units of the reported standard errors; seeds are fixed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from rgflow import MLP, PreResNet, ResMLP
from rgflow._util.progress import Progress as _Progress
from rgflow.activations import Activation
from rgflow.ensembles import Comparison, Ensemble, PreResEnsemble, ResEnsemble, compare, sample
from rgflow.recursions import ALL_TENSORS, Theory, mlp_theory

HAVE_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
FOUR = ("V", "D", "F", "A", "B")

X3 = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7], [0.9, 0.1, 0.4]])
X17 = math.sqrt(2.0) * np.array([[1.3, 0.4], [0.2, -1.1]])  # ntk.md §1.7 inputs


def zmax(est: np.ndarray, exact: np.ndarray, se: np.ndarray) -> float:
    """max |est - exact| / se over entries (se == 0 entries must match to 1e-12)."""
    d = np.abs(np.asarray(est) - np.asarray(exact))
    se = np.asarray(se)
    bad = (se == 0) & (d > 1e-12 * (1 + np.abs(exact)))
    if np.any(bad):
        return math.inf
    return float(np.max(np.where(se > 0, d / np.where(se > 0, se, 1), 0.0)))


def quiet_sample(*args, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("theory", False)
    return sample(*args, **kw)


# ---------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"networks": 1}, ValueError, "networks=1"),
        ({"networks": 10, "groups": 1}, ValueError, "groups=1"),
        ({"networks": 10, "groups": 6}, ValueError, "fewer than 2 networks per group"),
        ({"backend": "torch"}, ValueError, "backend='torch'"),
        ({"dtype": "float16"}, ValueError, "dtype='float16'"),
        ({"estimator": "exact"}, ValueError, "estimator='exact'"),
        ({"devices": ["cpu"]}, ValueError, "devices= is for backend='jax'"),
        ({"batch": 0}, ValueError, "batch"),
        ({"seed": -1}, ValueError, "seed"),
        ({"networks": 2.5}, TypeError, "networks"),
        ({"theory": "K"}, TypeError, "theory"),
    ],
)
def test_bad_arguments(kw, exc, match):
    net = MLP("tanh", depth=2, width=3)
    args = {"networks": 64, "groups": 4, "progress": False}
    args.update(kw)
    with pytest.raises(exc, match=match):
        sample(net, X3, **args)


def test_bad_net_and_direct_width():
    with pytest.raises(TypeError, match="rgflow.MLP"):
        sample("tanh", X3, networks=8, groups=2)
    net = MLP("tanh", depth=3, widths=[4, 1], out_width=3)
    with pytest.raises(ValueError, match="estimator='direct' needs at least 2 neurons"):
        quiet_sample(net, X3, networks=8, groups=2, estimator="direct")
    net = MLP("tanh", depth=2, width=3)
    bad = Theory(net, X3, {"K": np.zeros((3, 3, 3))})
    with pytest.raises(ValueError, match="theory.K has shape"):
        sample(net, X3, networks=8, groups=2, theory=bad, progress=False)


def test_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` raise ImportError
    net = MLP("tanh", depth=2, width=3)
    with pytest.raises(ImportError, match=r"rgflow\[jax\]"):
        quiet_sample(net, X3, networks=8, groups=2, backend="jax")


def test_float32_warns_and_agrees():
    net = MLP("tanh", depth=3, width=5, C_W=1.2, C_b=0.1)
    with pytest.warns(UserWarning, match="float32"):
        e32 = quiet_sample(net, X3, networks=4000, groups=8, dtype="float32", seed=4)
    e64 = quiet_sample(net, X3, networks=4000, groups=8, seed=4)
    # same random draws (float64 normals cast to float32): equal to float32 precision
    for name in ("K", "Theta", "V", "B"):
        np.testing.assert_allclose(getattr(e32, name), getattr(e64, name), rtol=1e-3, atol=1e-4)


def test_no_infinite_width_warns_and_leaves_k1_none(monkeypatch):
    sampler_mod = importlib.import_module("rgflow.ensembles._mlp")

    def missing(*a, **k):
        raise ImportError("no _core")

    monkeypatch.setattr(sampler_mod, "mlp_theory", missing)
    net = MLP("tanh", depth=2, width=3)
    with pytest.warns(RuntimeWarning, match="K1 and Theta1 are left None"):
        e = sample(net, X3, networks=8, groups=2, progress=False)
    assert e.K1 is None and e.Theta1 is None and e.infinite_width is None


# ---------------------------------------------------------------------------- API, determinism


def test_shapes_api_and_compare():
    net = MLP("gelu", depth=3, width=4, C_b=0.1, C_W=1.5)
    L, N = 3, 3
    th0 = Theory(net, X3, {"K": np.ones((L, N, N)), "Theta": np.ones((L, N, N))})
    e = sample(net, X3, networks=400, groups=4, seed=1, theory=th0, progress=False)
    assert isinstance(e, Ensemble) and e.infinite_width == "theory argument"
    for name in ALL_TENSORS:
        shape = (L, N, N) if name in ("K", "K1", "Theta", "Theta1") else (L, N, N, N, N)
        assert getattr(e, name).shape == shape, name
        assert getattr(e.stderr, name).shape == shape, name
        assert np.all(getattr(e.stderr, name) >= 0)
    assert e.mean_metric is e.K and e.mean_ntk is e.Theta
    assert e.widths == (3, 4, 4)
    np.testing.assert_allclose(e.K1, np.array(e.widths)[:, None, None] * (e.K - 1.0))
    # symmetries of the estimators
    np.testing.assert_allclose(e.V, e.V.transpose(0, 3, 4, 1, 2), atol=1e-12)
    np.testing.assert_allclose(e.V, e.V.transpose(0, 2, 1, 3, 4), atol=1e-12)
    np.testing.assert_allclose(e.A, e.A.transpose(0, 3, 4, 1, 2), atol=1e-12)
    np.testing.assert_allclose(e.B, e.B.transpose(0, 3, 4, 1, 2), atol=1e-12)  # (13)(24) <-> (24)(13)
    np.testing.assert_allclose(e.F, e.F.transpose(0, 3, 4, 1, 2), atol=1e-12)
    # a theory equal to the samples compares perfectly
    th = Theory(net, X3, {k: getattr(e, k) for k in ALL_TENSORS if k not in ("K1", "Theta1")})
    rows = compare(th, e)
    assert isinstance(rows, Comparison) and len(rows) == 7 * L
    assert rows.max_z() == 0.0
    text = str(rows)
    assert "tensor" in text and "max|Δ|/σ" in text and "V" in text
    tensor, layer, z, rel = rows[0]
    assert (tensor, layer) == ("K", 1) and z == 0.0 and rel == 0.0
    # a wrong theory is flagged
    th.V = th.V + 1.0
    assert compare(th, e).max_z("V") > 3
    assert "Ensemble(" in repr(e)


def test_deterministic_for_seed_and_batch():
    net = MLP("tanh", depth=3, width=4)
    a = quiet_sample(net, X3, networks=300, groups=3, seed=5, batch=40)
    b = quiet_sample(net, X3, networks=300, groups=3, seed=5, batch=40)
    c = quiet_sample(net, X3, networks=300, groups=3, seed=6, batch=40)
    for name in ("K", "V", "Theta", "D", "F", "A", "B"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a.stderr, name), getattr(b.stderr, name))
    assert not np.allclose(a.V[1], c.V[1])


def test_progress_line(capsys):
    p = _Progress(100, True, "rgflow.ensemble[test]", delay=0.0)
    p.update(50)
    p.update(100)
    p.close()
    err = capsys.readouterr().err
    assert "50/100 networks" in err and "100/100" in err and err.endswith("\n")
    q = _Progress(100, False, "x", delay=0.0)
    q.update(100)
    q.close()
    assert capsys.readouterr().err == ""


def test_ntk_false_and_depth_one():
    net = MLP("relu", depth=3, width=4, C_W=2.0)
    e = quiet_sample(net, X3, networks=200, groups=4, ntk=False)
    assert e.Theta is None and e.D is None and e.B is None and e.V.shape == (3, 3, 3, 3, 3)
    net1 = MLP("tanh", depth=1, out_width=2, C_b=0.3, C_W=1.7)
    e1 = quiet_sample(net1, X3, networks=10, groups=2)
    np.testing.assert_allclose(e1.K[0], 0.3 + 1.7 * X3 @ X3.T / 3, rtol=1e-14, atol=0)
    assert np.all(e1.V == 0) and np.all(e1.stderr.K == 0)


# ---------------------------------------------------------------------------- exact results


@pytest.mark.parametrize("estimator", ["conditional", "direct"])
def test_layer1_exact(estimator):
    net = MLP("tanh", depth=3, widths=[5, 4], C_b=0.2, C_W=[1.3, 1.0, 1.1], lambda_b=0.4, lambda_W=1.7)
    e = quiet_sample(net, X3, networks=2000, groups=8, seed=2, estimator=estimator)
    gram = X3 @ X3.T / 3
    np.testing.assert_allclose(e.K[0], 0.2 + 1.3 * gram, rtol=0, atol=1e-15 if estimator == "conditional" else 0.1)
    np.testing.assert_allclose(e.Theta[0], 0.4 + 1.7 * gram, rtol=0, atol=1e-15)
    for name in ("A", "F", "B"):  # the layer-1 NTK is deterministic and diagonal in neurons
        assert np.all(getattr(e, name)[0] == 0), name
        assert np.all(getattr(e.stderr, name)[0] == 0), name
    if estimator == "conditional":  # Ĝ^(1) is deterministic
        for name in ("V", "D"):
            assert np.all(getattr(e, name)[0] == 0), name
        assert np.all(e.stderr.K[0] == 0)
    else:  # distinct layer-1 neurons are independent: V = 0 statistically
        assert np.all(e.D[0] == 0)
        assert zmax(e.V[0], 0.0, e.stderr.V[0]) < 4.5


def _linear_exact(x, widths, C_W, lambda_b, lambda_W):
    """Deep linear net, C_b = 0: exact K, Θ and V at finite width (PDLT ch. 3, multi-input)."""
    G0 = x @ x.T / x.shape[1]
    L = len(C_W)
    K = np.empty((L,) + G0.shape)
    Th = np.empty_like(K)
    V = np.empty((L,) + G0.shape * 2)
    K[0] = C_W[0] * G0
    Th[0] = lambda_b[0] + lambda_W[0] * G0
    M = np.einsum("ab,cd->abcd", K[0], K[0])  # E[Ĝ_ab Ĝ_cd]
    V[0] = 0.0
    for l in range(1, L):
        n = widths[l]  # n_l, the width of layer l (1-based) feeding layer l+1
        c = C_W[l]
        # conditionally Gaussian z_j ~ N(0, Ĝ): E[Ĝ'Ĝ' | Ĝ] = c^2 [Ĝ12Ĝ34 + (Ĝ13Ĝ24 + Ĝ14Ĝ23)/n]
        M = c * c * (M + (M.transpose(0, 2, 1, 3) + M.transpose(0, 2, 3, 1)) / n)
        K[l] = c * K[l - 1]
        Th[l] = lambda_b[l] + lambda_W[l] * K[l - 1] + c * Th[l - 1]
        V[l] = n * (M - np.einsum("ab,cd->abcd", K[l], K[l]))
    return K, Th, V


def test_deep_linear_exact_multi_input():
    C_W, lb, lw = [1.2, 0.9, 1.3, 1.1], [0.3, 0.5, 0.2, 0.1], [1.0, 0.7, 1.4, 0.9]
    widths = [3, 5, 3, 4]
    net = MLP("linear", depth=4, widths=widths[1:], C_b=0.0, C_W=C_W, lambda_b=lb, lambda_W=lw, out_width=2)
    e = quiet_sample(net, X3, networks=30000, groups=16, seed=11)
    K, Th, V = _linear_exact(X3, widths, C_W, lb, lw)
    figures = {"K": zmax(e.K, K, e.stderr.K), "Theta": zmax(e.Theta, Th, e.stderr.Theta), "V": zmax(e.V, V, e.stderr.V)}
    print("deep linear, multi-input, max z:", figures)
    assert max(figures.values()) < 4.5
    # V is a genuinely finite-width effect here: far from zero
    assert np.max(np.abs(V[3])) > 10 * np.max(e.stderr.V[3])


def test_deep_linear_single_input_325():
    """PDLT (3.25): V^(l)/n_{l-1} = G4 - G2^2 with G4 = prod_{l'<l}(1 + 2/n_l') G2^2, exact."""
    n, L, C_W = 4, 5, 1.0
    x = np.array([[0.8, -0.6, 1.1]])
    net = MLP("linear", depth=L, width=n, C_b=0.0, C_W=C_W)
    e = quiet_sample(net, x, networks=30000, groups=16, seed=3, ntk=False)
    G2 = C_W ** np.arange(1, L + 1) * float((x @ x.T)[0, 0]) / 3
    G4 = np.array([(1 + 2 / n) ** (l - 1) for l in range(1, L + 1)]) * G2**2
    widths = np.array([3] + [n] * (L - 1))
    V = widths * (G4 - G2**2)
    z = zmax(e.V[:, 0, 0, 0, 0], V, e.stderr.V[:, 0, 0, 0, 0])
    print("deep linear (3.25): V", e.V[:, 0, 0, 0, 0], "exact", V, "max z", z)
    assert z < 4.5


def _gauss_layer2(act, x, net, samples=1_000_000, chunks=20, seed=7):
    """Exact layer-2 tensors by brute-force Gaussian MC over z^(1) ~ N(0, G^(1)), with errors.

    ntk.md §1.4 at l+1 = 2 (V^(1) = D^(1) = ... = 0, so only the Gaussian terms remain):
    V = C_W^2 [<σσσσ> - <σσ><σσ>], D = C_W [<σσΩ> - <σσ><Ω>], A = <ΩΩ> - <Ω><Ω>,
    F_{a1a3a2a4} = C_W^2 <σ_a1 σ_a2 σ'_a3 σ'_a4> Θ_a3a4, B_{a1a3a2a4} = C_W^2 <σ'σ'σ'σ'> Θ_a1a2 Θ_a3a4,
    with Ω = λ_W σσ + C_W Θ^(1) σ'σ' and all hyperparameters those of layer 2.
    """
    n0 = x.shape[1]
    gram = x @ x.T / n0
    g1 = net.C_b[0] + net.C_W[0] * gram
    h1 = net.lambda_b[0] + net.lambda_W[0] * gram
    Cb, Cw, lb, lw = net.C_b[1], net.C_W[1], net.lambda_b[1], net.lambda_W[1]
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(g1)
    res = []
    for _ in range(chunks):
        z = rng.standard_normal((samples // chunks, x.shape[0])) @ chol.T
        s, sp = act.numpy(z, 0), act.numpy(z, 1)
        ss = np.einsum("ka,kb->kab", s, s)
        pp = np.einsum("ka,kb->kab", sp, sp)
        om = lw * ss + Cw * h1 * pp
        m = len(z)

        def cov(a, b, m=m):
            return np.einsum("kab,kcd->abcd", a, b) / m - np.einsum("ab,cd->abcd", a.mean(0), b.mean(0))

        s4 = np.einsum("ka,kb,kc,kd->abcd", s, s, sp, sp) / m
        p4 = np.einsum("kab,kcd->abcd", pp, pp) / m
        res.append(
            {
                "K": Cb + Cw * ss.mean(0),
                "Theta": lb + om.mean(0),
                "V": Cw**2 * cov(ss, ss),
                "D": Cw * cov(ss, om),
                "A": cov(om, om),
                "F": (Cw**2 * s4 * h1[None, None]).transpose(0, 2, 1, 3),
                "B": (Cw**2 * p4 * h1[:, :, None, None] * h1[None, None]).transpose(0, 2, 1, 3),
            }
        )
    mean = {k: np.mean([r[k] for r in res], axis=0) for k in res[0]}
    se = {k: np.std([r[k] for r in res], axis=0, ddof=1) / math.sqrt(chunks) for k in res[0]}
    return mean, se


@pytest.mark.parametrize(
    "act, estimator, networks",
    [("gelu", "conditional", 20000), ("tanh", "conditional", 12000), ("gelu", "direct", 12000)],
)
def test_layer2_exact_against_gaussian_mc(act, estimator, networks):
    """Layer 2 is exact at any width (layer 1 is Gaussian): all tensors vs brute force, at n_1 = 4."""
    net = MLP(
        act,
        depth=3,
        widths=[4, 5],
        C_b=[0.2, 0.17, 0.1],
        C_W=[1.5, 1.98, 1.2],
        lambda_b=[0.5, 0.7, 1.0],
        lambda_W=[1.1, 0.9, 1.0],
        out_width=3,
    )
    e = quiet_sample(net, X3, networks=networks, groups=16, seed=13, estimator=estimator)
    ex, exse = _gauss_layer2(Activation(act), X3, net)
    figures = {}
    for name in ("K", "Theta") + FOUR:
        se = np.hypot(getattr(e.stderr, name)[1], exse[name])
        figures[name] = round(zmax(getattr(e, name)[1], ex[name], se), 2)
    print(f"layer 2 exact, {act}/{estimator}, max z per tensor:", figures)
    assert max(figures.values()) < 4.5, figures


def _relu_kernels(x, net):
    """Infinite-width K and Θ of a ReLU net (arc-cosine kernel), all entries."""
    L = net.depth
    gram = x @ x.T / x.shape[1]
    K = np.empty((L,) + gram.shape)
    Th = np.empty_like(K)
    K[0] = net.C_b[0] + net.C_W[0] * gram
    Th[0] = net.lambda_b[0] + net.lambda_W[0] * gram
    for l in range(1, L):
        k = K[l - 1]
        d = np.sqrt(np.outer(np.diag(k), np.diag(k)))
        th = np.arccos(np.clip(k / d, -1, 1))
        ss = d / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        pp = (np.pi - th) / (2 * np.pi)
        K[l] = net.C_b[l] + net.C_W[l] * ss
        Th[l] = net.lambda_b[l] + net.lambda_W[l] * ss + net.C_W[l] * pp * Th[l - 1]
    return K, Th


def test_relu_diagonal_k1_theta1_vanish_exactly():
    """Scale invariance (ntk.md §1.6): diagonal E[z^2], E[Θ_ii] follow the infinite-width recursion exactly."""
    net = MLP("relu", depth=4, width=6, C_b=0.1, C_W=2.0, lambda_b=0.5, lambda_W=1.0)
    K, Th = _relu_kernels(X17, net)
    th = Theory(net, X17, {"K": K, "Theta": Th})
    e = sample(net, X17, networks=30000, groups=16, seed=21, theory=th, progress=False)
    dK1 = np.diagonal(e.K1, axis1=1, axis2=2)
    dT1 = np.diagonal(e.Theta1, axis1=1, axis2=2)
    zK = zmax(dK1, 0.0, np.diagonal(e.stderr.K1, axis1=1, axis2=2))
    zT = zmax(dT1, 0.0, np.diagonal(e.stderr.Theta1, axis1=1, axis2=2))
    print("relu diag K1", dK1, "Theta1", dT1, "max z", zK, zT)
    print("relu off-diagonal K1, Theta1 (layer 4):", e.K1[3, 0, 1], e.Theta1[3, 0, 1], "±", e.stderr.Theta1[3, 0, 1])
    assert zK < 4.5 and zT < 4.5
    # ... while the off-diagonal entries do get a finite-width correction
    assert abs(e.K1[3, 0, 1]) > 6 * e.stderr.K1[3, 0, 1]


def test_tanh_ntk_table_section_1_7():
    """ntk.md §1.7: tanh (C_b, C_W) = (0, 1), n = 8, layer 4: n(MC - Θ) -> Θ1 (01: 0.1576, 00: 0.0533)."""
    n = 8
    net = MLP("tanh", depth=4, width=n, C_b=0.0, C_W=1.0, lambda_b=1.0, lambda_W=1.0)
    e = quiet_sample(net, X17, networks=200_000, groups=32, seed=17)
    allowance = 0.01  # O(1/n) remainder: §1.7's own n=8 MC is within 0.005 of theory
    for (a, b), theta, theta1 in (((0, 1), 2.06625, 0.1576), ((0, 0), 3.12852, 0.0533)):
        got = n * (e.Theta[3, a, b] - theta)
        se = n * e.stderr.Theta[3, a, b]
        print(
            f"tanh layer 4 entry {a}{b}: n(MC - Θ) = {got:.4f} ± {se:.4f} (theory Θ1 = {theta1}, z = "
            f"{(got - theta1) / se:.2f})"
        )
        assert abs(got - theta1) <= 4 * se + allowance
    # the correction is resolved: far from the infinite-width value
    assert 8 * (e.Theta[3, 0, 1] - 2.06625) > 8 * 8 * e.stderr.Theta[3, 0, 1]


def test_direct_and_conditional_estimators_agree():
    net = MLP("tanh", depth=3, width=6, C_b=0.1, C_W=1.3, out_width=5)
    a = quiet_sample(net, X17, networks=8000, groups=16, seed=31)
    b = quiet_sample(net, X17, networks=8000, groups=16, seed=32, estimator="direct")
    figures = {}
    for name in ("K", "Theta") + FOUR:
        se = np.hypot(getattr(a.stderr, name), getattr(b.stderr, name))
        figures[name] = round(zmax(getattr(a, name), getattr(b, name), se), 2)
    print("direct vs conditional, max z:", figures)
    assert max(figures.values()) < 4.5
    # the conditional estimator has much smaller errors
    assert np.max(a.stderr.B[2]) < 0.7 * np.max(b.stderr.B[2])


# ---------------------------------------------------------------------------- JAX backend


@needs_jax
def test_numpy_and_jax_backends_agree():
    net = MLP("gelu", depth=3, width=5, C_b=0.17292239, C_W=1.98305826, out_width=3)
    a = quiet_sample(net, X3, networks=6000, groups=12, seed=41)
    b = quiet_sample(net, X3, networks=6000, groups=12, seed=41, backend="jax")
    assert b.backend == "jax"
    figures = {}
    for name in ("K", "Theta") + FOUR:
        se = np.hypot(getattr(a.stderr, name), getattr(b.stderr, name))
        figures[name] = round(zmax(getattr(a, name), getattr(b, name), se), 2)
    print("numpy vs jax, max z:", figures)
    assert max(figures.values()) < 4.5
    assert np.all(b.V[0] == 0) and np.all(b.B[0] == 0)


@needs_jax
def test_jax_sharded_equals_unsharded():
    """Two host devices (XLA flag, fresh interpreter): same networks, same numbers."""
    code = textwrap.dedent(
        """
        import numpy as np, jax
        from rgflow import MLP
        from rgflow.ensembles import sample
        assert len(jax.devices()) == 2, jax.devices()
        x = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7]])
        net = MLP("tanh", depth=3, width=4, C_b=0.1, C_W=1.2)
        kw = dict(networks=600, groups=4, seed=3, batch=50, backend="jax", progress=False, theory=False)
        two = sample(net, x, **kw)
        one = sample(net, x, devices=jax.devices()[:1], **kw)
        for k in ("K", "Theta", "V", "D", "F", "A", "B"):
            a, b = getattr(two, k), getattr(one, k)
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12 * np.max(np.abs(b)))
            np.testing.assert_allclose(getattr(two.stderr, k), getattr(one.stderr, k), rtol=1e-8, atol=1e-12)
        print("max rel diff", max(float(np.max(np.abs(getattr(two, k) - getattr(one, k))) /
              max(np.max(np.abs(getattr(one, k))), 1e-300)) for k in ("K", "Theta", "V", "D", "F", "A", "B")))
        print("OK", two.batch, one.batch)
        """
    )
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    src = os.path.join(os.path.dirname(__file__), "..", "python")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    print(out.stdout, out.stderr[-2000:])
    assert out.returncode == 0, out.stderr[-4000:]
    assert "OK" in out.stdout


@needs_jax
def test_jax_float32_and_custom_activation():
    """float32 warns; a jax-traceable custom activation gets sigma' from jax.grad; statistics agree."""
    import jax.numpy as jnp

    def f(z):
        return jnp.tanh(z) if not isinstance(z, np.ndarray) else np.tanh(z)

    act = Activation.from_callable(f, name="tanh-callable")
    net = MLP(act, depth=3, width=4, C_b=0.1, C_W=1.2)
    ref = quiet_sample(MLP("tanh", depth=3, width=4, C_b=0.1, C_W=1.2), X17, networks=4000, groups=8, seed=61)
    with pytest.warns(UserWarning, match="float32"):
        e = quiet_sample(net, X17, networks=4000, groups=8, seed=62, backend="jax", dtype="float32")
    assert e.dtype == "float32"
    for name in ("K", "Theta", "V", "B"):
        se = np.hypot(getattr(e.stderr, name), getattr(ref.stderr, name))
        assert zmax(getattr(e, name), getattr(ref, name), se) < 4.5, name


def _gpu_available() -> bool:
    if not HAVE_JAX:
        return False
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="no GPU visible to jax")
def test_jax_gpu_matches_numpy():
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    net = MLP("tanh", depth=4, width=16, C_b=0.0, C_W=1.0)
    a = quiet_sample(net, X3, networks=20000, groups=16, seed=51)
    b = quiet_sample(net, X3, networks=20000, groups=16, seed=51, backend="jax", devices=gpus)
    for name in ("K", "Theta") + FOUR:
        se = np.hypot(getattr(a.stderr, name), getattr(b.stderr, name))
        assert zmax(getattr(a, name), getattr(b, name), se) < 4.5, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = quiet_sample(net, X3, networks=20000, groups=16, seed=51, backend="jax", devices=gpus, dtype="float32")
    np.testing.assert_allclose(c.K, b.K, rtol=1e-4)


# ---------------------------------------------------------------------------- vs the numpy reference (slow)

CRITICAL = {
    "gelu": (0.17292239, 1.98305826),
    "tanh": (0.0, 1.0),
    "relu": (0.0, 2.0),
}


def _reference():
    try:
        from rgflow.testing import reference  # noqa: F401
    except ImportError:
        pytest.skip("rgflow.testing.reference is not available yet")
    return reference


def _first_order(th: Theory, name: str) -> np.ndarray:
    """Theory value of a tensor as the ensemble estimates it (K, Θ: the first-order means)."""
    if name == "K":
        return np.stack([th.metric(l) for l in range(1, th.depth + 1)])
    if name == "Theta":
        return np.stack([th.ntk_mean(l) for l in range(1, th.depth + 1)])
    return np.asarray(getattr(th, name))


@pytest.mark.slow
@pytest.mark.parametrize("act", ["gelu", "tanh", "relu"])
def test_against_reference_at_criticality(act):
    """Every tensor vs rgflow.reference at criticality, depth 4, 3 inputs, widths 16 and 48.

    Δ(n) = sampled - first-order theory is noise plus a remainder r/n^p (p = 2 for the means
    K + K1/n, Θ + Θ1/n; p = 1 for K1, Θ1, V, D, F, A, B).  The remainder coefficient is measured
    at the small width n1 (r = n1^p max|Δ(n1)| per tensor and layer) and the larger width must
    satisfy |Δ(n2)| <= 4 stderr + 2 r / n2^p (factor 2: margin for the next order).  Also the
    scaled residual n^p max|Δ| must not grow with n beyond noise, i.e. the ensembles converge
    to the theory, and n (E[Ĝ] - K∞), n (E[Θ̂] - Θ∞) approach K1, Θ1.
    """
    reference = _reference()
    Cb, Cw = CRITICAL[act]
    x = np.array([[1.0, 0.4, -0.6], [0.3, -0.9, 0.5], [-0.7, 0.2, 0.8]]) * 1.2
    n1, n2 = 16, 48
    nets = {n: MLP(act, depth=4, width=n, C_b=Cb, C_W=Cw) for n in (n1, n2)}
    ths = {n: reference.theory(nets[n], x, ntk=True, order=1) for n in (n1, n2)}
    ens = {
        n: sample(nets[n], x, networks=N, groups=32, seed=100 + n, theory=ths[n], progress=False)
        for n, N in ((n1, 60000), (n2, 30000))
    }
    print(f"\n== {act} at criticality (C_b={Cb}, C_W={Cw}), depth 4, 3 inputs")
    for n in (n1, n2):
        print(f"-- width {n}: {ens[n].networks} networks, {ens[n].networks_per_second:.0f} networks/s")
        print(compare(ths[n], ens[n]))
    failures = []
    print(f"{'tensor':<7}{'layer':>5} {'z(n1)':>7} {'z(n2)':>7} {'n1^p|Δ1|':>10} {'n2^p|Δ2|':>10} {'allow(n2)':>10}")
    for name in ("K", "Theta", "K1", "Theta1") + FOUR:
        p = 2 if name in ("K", "Theta") else 1
        d = {n: getattr(ens[n], name) - _first_order(ths[n], name) for n in (n1, n2)}
        se = {n: getattr(ens[n].stderr, name) for n in (n1, n2)}
        for li in range(4):
            r1 = n1**p * float(np.max(np.abs(d[n1][li])))
            r2 = n2**p * float(np.max(np.abs(d[n2][li])))
            allow = 4 * se[n2][li] + 2 * r1 / n2**p + 1e-12
            ratio = float(np.max(np.abs(d[n2][li]) / allow))
            z1 = zmax(d[n1][li], 0.0, se[n1][li])
            z2 = zmax(d[n2][li], 0.0, se[n2][li])
            print(f"{name:<7}{li + 1:>5} {z1:7.2f} {z2:7.2f} {r1:10.3e} {r2:10.3e} {float(np.max(allow)):10.3e}")
            if ratio > 1:
                failures.append((name, li + 1, round(ratio, 2)))
    print("failures:", failures)
    assert not failures


# ---------------------------------------------------------------------------- one API for every architecture

RES_NET = ResMLP("tanh", 3, 6, C_b=0.1, C_W=1.2, gamma=0.5)
PRE_NET = PreResNet("tanh", depth=4, width=6, eps=0.2, C_W=2.0)
X2 = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7]])


def _nets():
    return [MLP("tanh", depth=3, width=4, C_b=0.1, C_W=1.2), RES_NET, PRE_NET]


def test_sample_dispatches_on_the_network_type():
    import rgflow

    kinds = (Ensemble, ResEnsemble, PreResEnsemble)
    for net, kind in zip(_nets(), kinds, strict=True):
        e = rgflow.sample(net, X2, networks=40, groups=4, progress=False)
        assert type(e) is kind and e.net is net and e.networks == 40 and e.groups == 4
        assert (e.seed, e.backend, e.dtype) == (0, "numpy", "float64")
        assert e.batch >= 1 and e.elapsed > 0 and e.networks_per_second > 0
        assert dataclasses.is_dataclass(e) and dataclasses.is_dataclass(e.stderr)
    with pytest.raises(TypeError, match="MLP, ResMLP, PreResNet or DepthMuPResNet"):
        rgflow.sample("tanh", X2)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"networks": 1}, ValueError, "networks must be an int >= 2, got networks=1"),
        ({"networks": 2.5}, TypeError, "networks must be an int"),
        ({"groups": 1}, ValueError, "groups must be an int >= 2, got groups=1"),
        ({"networks": 10, "groups": 6}, ValueError, "fewer than 2 networks per group"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"batch": 0}, ValueError, "batch must be a positive int"),
        ({"backend": "torch"}, ValueError, "backend must be 'numpy' or 'jax', got backend='torch'"),
        ({"dtype": "float16"}, ValueError, "dtype must be 'float64'"),
        ({"devices": ["cpu"]}, ValueError, "devices= is for backend='jax'"),
    ],
)
def test_common_arguments_one_rule_one_message(kw, exc, match):
    for net in _nets():
        with pytest.raises(exc, match=match):
            sample(net, X2, **({"networks": 64, "groups": 4, "progress": False} | kw))


def test_indivisible_networks_are_all_used():
    """networks = 103 in 4 groups (26, 26, 26, 25): every network is sampled.  With batch=1 the
    numpy stream of network i does not depend on the grouping, so the pooled estimates of 4 and
    of 3 groups agree, and differ from the first 100 networks."""
    for net in _nets():
        kw = {"networks": 103, "batch": 1, "seed": 9, "progress": False}
        a = sample(net, X2, groups=4, **kw)
        b = sample(net, X2, groups=3, **kw)
        c = sample(net, X2, **(kw | {"networks": 100, "groups": 4}))
        assert a.networks == 103 and a.groups == 4
        np.testing.assert_allclose(a.K, b.K, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(a.V, b.V, rtol=1e-11, atol=1e-12)
        assert not np.allclose(a.K[-1], c.K[-1], rtol=1e-12, atol=0)


def test_group_bounds_sizes_differ_by_at_most_one():
    from rgflow._util.stats import group_bounds

    for networks, groups in ((103, 4), (100, 4), (7, 3), (64, 32)):
        b = group_bounds(networks, groups)
        sizes = [e - s for s, e in b]
        assert b[0][0] == 0 and b[-1][1] == networks and sum(sizes) == networks
        assert max(sizes) - min(sizes) <= 1 and all(b[i][1] == b[i + 1][0] for i in range(groups - 1))


def test_every_estimate_has_a_stderr_of_the_same_shape():
    for net in _nets():
        e = sample(net, X2, networks=40, groups=4, progress=False)
        names = e.tensors()
        assert "K" in names and "V" in names
        for name, est in names.items():
            se = getattr(e.stderr, name)
            assert se is not None and se.shape == est.shape, (type(e).__name__, name)
            assert np.all(se >= 0)
        assert set(e.stderr.tensors()) == set(names)
        assert {f.name for f in dataclasses.fields(e.stderr)} == set(type(e.stderr).ESTIMATES)


def test_k1_attribute_and_method_on_every_result():
    from rgflow.recursions import preresnet_theory, resmlp_theory

    net = MLP("tanh", depth=3, width=4, C_b=0.1, C_W=1.2)
    th = mlp_theory(net, X2, order=0)
    e = sample(net, X2, networks=40, groups=4, progress=False)
    k1, se = e.k1(th)
    np.testing.assert_allclose(k1, e.K1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(se, e.stderr.K1, rtol=1e-12)
    rth = resmlp_theory(RES_NET, X2)
    r0 = sample(RES_NET, X2, networks=40, groups=4, progress=False)
    assert r0.K1 is None and r0.stderr.K1 is None
    r = sample(RES_NET, X2, networks=40, groups=4, progress=False, theory=rth)
    np.testing.assert_array_equal(r.K1, RES_NET.width * (r.K - rth.K))
    np.testing.assert_array_equal(r.k1(rth)[0], r.K1)
    np.testing.assert_array_equal(r.stderr.K1, RES_NET.width * r.stderr.K)
    pth = preresnet_theory(PRE_NET, X2, every=2)
    p0 = sample(PRE_NET, X2, networks=40, groups=4, every=2, progress=False)
    assert p0.K1 is None
    p = sample(PRE_NET, X2, networks=40, groups=4, every=2, progress=False, theory=pth)
    np.testing.assert_allclose(p.K1, p.k1(pth)[0], rtol=0, atol=0)
    u, ue = p.u1(pth)
    assert u.shape == ue.shape == p.Sigma.shape
    with pytest.raises(ValueError, match="same layers"):
        sample(PRE_NET, X2, networks=40, groups=4, every=1, progress=False, theory=pth)


def test_old_names_warn_and_agree():
    import rgflow
    from rgflow.recursions import preresnet_theory

    with pytest.warns(DeprecationWarning, match="rgflow.sample_resmlp is deprecated"):
        r = rgflow.sample_resmlp(RES_NET, X2, networks=40, groups=4, progress=False)
    with pytest.warns(DeprecationWarning, match="rgflow.sample_preresnet is deprecated"):
        p = rgflow.sample_preresnet(PRE_NET, X2, networks=40, groups=4, every=2, progress=False)
    for obj, old, new in [
        (r, "G", r.K),
        (r, "G_err", r.stderr.K),
        (r, "V_err", r.stderr.V),
        (r, "S_err", r.stderr.S),
        (p, "G", p.K),
        (p, "G_err", p.stderr.K),
        (p, "V4", p.V),
        (p, "V4_err", p.stderr.V),
        (p, "Sigma_err", p.stderr.Sigma),
        (p, "V_GS_err", p.stderr.V_GS),
        (p, "V_SS_err", p.stderr.V_SS),
    ]:
        with pytest.warns(DeprecationWarning, match=f"{type(obj).__name__}.{old} is deprecated"):
            assert getattr(obj, old) is new
    th = preresnet_theory(PRE_NET, X2, every=2)
    with pytest.warns(DeprecationWarning, match="U1"):
        u, ue = p.U1(th)
    np.testing.assert_array_equal(u, p.u1(th)[0])


def test_compare_residual_results_and_unsupported_pairs():
    from rgflow.recursions import preresnet_theory, resmlp_theory

    rth = resmlp_theory(RES_NET, X2)
    r = sample(RES_NET, X2, networks=400, groups=8, progress=False, theory=rth)
    rows = compare(rth, r)
    assert {row.tensor for row in rows} == {"K", "V", "S", "K1"} and len(rows) == 4 * 3
    assert rows.max_z("K") < 6
    pth = preresnet_theory(PRE_NET, X2, every=2)
    p = sample(PRE_NET, X2, networks=400, groups=8, every=2, progress=False)
    rows = compare(pth, p)
    assert {row.tensor for row in rows} == {"K", "V", "V_GS", "V_SS"}
    assert [row.layer for row in rows if row.tensor == "K"] == [0, 2, 4]
    assert rows.max_z("K") < 6
    mlp = sample(MLP("tanh", depth=3, width=4), X2, networks=40, groups=4, progress=False)
    with pytest.raises(TypeError, match=r"compare\(theory, ens\) supports"):
        compare(rth, mlp)
    with pytest.raises(TypeError, match="ResTheory, ResEnsemble"):
        compare(pth, r)
