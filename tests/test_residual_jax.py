"""JAX backends of the residual samplers (``rgflow._jax_residual``): the same estimates and
standard errors as the numpy backends.

* Exact: the per-block steps and per-batch statistics are shared functions written against an
  array namespace; on the same arrays numpy and jax.numpy give the same numbers (1e-12).
* Statistical (fixed seeds, thresholds in units of the reported standard errors): JAX against
  numpy (different random streams) and against the theory (K0 + K1/n and V4 for the
  pre-activation ResNet, K + K1/n and V for the residual MLP).
* ``-m slow``: the dense-weights sampler, float32, batch-size and device-count invariance (two
  host devices in a fresh interpreter).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rgflow import PreResNet, ResMLP
from rgflow.ensembles import sample
from rgflow.ensembles._residual_kernels import block_step as _block_step
from rgflow.ensembles._residual_kernels import pre_sums as _pre_sums
from rgflow.ensembles._residual_kernels import psd_factor as _factor
from rgflow.ensembles._residual_kernels import res_forward as _res_forward
from rgflow.ensembles._residual_kernels import res_sums as _res_sums
from rgflow.ensembles._residual_kernels import sqrtm_psd as _sqrtm_psd
from rgflow.ensembles._residual_kernels import weights_step as _weights_step
from rgflow.recursions import preresnet_theory, resmlp_theory

HAVE_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")

K3 = (2 * (0.7 * np.eye(4) + 0.3))[:3, :3]  # the paper's input kernel, 3 inputs
X2 = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7]])
PRE = PreResNet("tanh", depth=20, width=32, eps=0.1, C_W=2.0)  # T = 0.2
RES = ResMLP("relu", 4, 16, C_b=0.1, C_W=1.0, gamma=0.7)


def zmax(a: np.ndarray, b: np.ndarray, se: np.ndarray) -> float:
    """max |a − b| / se over entries with se > 0 (entries with se = 0 must agree to 1e-12)."""
    d = np.abs(a - b)
    assert np.all(d[se == 0] <= 1e-12 * (1 + np.abs(b[se == 0])))
    return float(np.max(np.where(se > 0, d / np.where(se > 0, se, 1.0), 0.0)))


@needs_jax
def test_shared_kernels_are_the_same_functions():
    import jax
    import jax.numpy as jnp

    from rgflow.ensembles._jax import x64 as _x64

    rng = np.random.default_rng(0)
    B, n, N = 3, 7, 3
    phi = rng.standard_normal((B, n, N)) @ np.linalg.cholesky(K3).T
    s = np.tanh(phi)
    Z = rng.standard_normal((B, n, N))
    W = rng.standard_normal((B, n, n)) / np.sqrt(n)
    w = np.array([1.0, 0.0, 1.0])
    with _x64(jax):
        J = jnp.asarray
        # the principal square root is unique: same matrix from both eigen-solvers
        q = np.einsum("bia,bic->bac", s, s) / n
        r_np, r_j = _sqrtm_psd(np, q), np.asarray(_sqrtm_psd(jnp, J(q)))
        np.testing.assert_allclose(r_np @ r_np, q, atol=1e-13)
        np.testing.assert_allclose(r_j, r_np, atol=1e-13)
        # F Fᵀ = q: Cholesky (positive definite), or the principal root for a singular batch (repeated input)
        qs = q.copy()
        qs[1] = np.einsum("ia,ic->ac", s[1][:, [0, 0, 2]], s[1][:, [0, 0, 2]]) / n
        for qq in (q, qs):
            f_np, f_j = _factor(np, qq), np.asarray(_factor(jnp, J(qq)))
            np.testing.assert_allclose(f_np @ np.swapaxes(f_np, 1, 2), qq, atol=1e-13)
            np.testing.assert_allclose(f_j, f_np, atol=1e-12)
        np.testing.assert_allclose(
            np.asarray(_block_step(jnp, J(phi), J(s), J(Z), 0.1, 2.0)), _block_step(np, phi, s, Z, 0.1, 2.0), atol=1e-13
        )
        np.testing.assert_allclose(
            np.asarray(_weights_step(jnp, J(phi), J(s), J(W), 0.1)), _weights_step(np, phi, s, W, 0.1), atol=1e-13
        )
        for got, want in zip(_pre_sums(jnp, J(phi), J(s), J(w)), _pre_sums(np, phi[[0, 2]], s[[0, 2]]), strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13, atol=1e-13)
        z2 = _res_forward(np, np.tanh, phi, W, Z[:, :, :1], 0.7)
        np.testing.assert_allclose(
            np.asarray(_res_forward(jnp, jnp.tanh, J(phi), J(W), J(Z[:, :, :1]), 0.7)), z2, atol=1e-13
        )
        for got, want in zip(_res_sums(jnp, J(z2), J(w)), _res_sums(np, z2[[0, 2]]), strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


@needs_jax
def test_preresnet_jax_agrees_with_numpy_and_theory():
    th = preresnet_theory(PRE, kernel=K3, every=10)
    kw = dict(kernel=K3, networks=2400, groups=24, every=10, seed=0)
    a = sample(PRE, **kw)
    b = sample(PRE, backend="jax", **kw)
    assert (b.backend, b.sampler, b.networks) == ("jax", "block", 2400)
    np.testing.assert_array_equal(a.layers, b.layers)
    np.testing.assert_array_equal(a.t, b.t)
    for k in ("K", "V", "Sigma"):
        se = np.hypot(getattr(a.stderr, k), getattr(b.stderr, k))
        assert zmax(getattr(a, k), getattr(b, k), se) < 5, k  # measured 0.9 / 2.3 / 1.2 (seed 0)
        # the two backends' errors estimate the same spread
        ra = getattr(b.stderr, k)[1:] / getattr(a.stderr, k)[1:]
        assert 0.5 < np.median(ra) < 2.0, k
    assert zmax(b.K, th.metric(), b.stderr.K) < 5  # measured 1.2
    assert zmax(b.V, th.V, b.stderr.V) < 5  # measured 2.2
    u, ue = b.u1(th)  # U1_exact(0) = 0 exactly (Gaussian layer 0)
    assert np.all(np.abs(u[0]) < 5 * ue[0])


@needs_jax
def test_resmlp_jax_agrees_with_numpy_and_theory():
    th = resmlp_theory(RES, X2)
    a = sample(RES, X2, networks=2400, groups=24, seed=0)
    b = sample(RES, X2, networks=2400, groups=24, seed=0, backend="jax")
    assert b.backend == "jax" and b.K.shape == a.K.shape == (4, 2, 2)
    for k in ("K", "V", "S"):
        se = np.hypot(getattr(a.stderr, k), getattr(b.stderr, k))
        assert zmax(getattr(a, k), getattr(b, k), se) < 5, k  # measured 1.2 / 2.3 / 1.2 (seed 0)
    assert zmax(b.K, th.K + th.K1 / RES.width, b.stderr.K) < 5  # measured 1.1
    assert zmax(b.S, th.S, b.stderr.S) < 5  # measured 2.0
    assert zmax(b.V[1:], th.V[1:], b.stderr.V[1:]) < 5  # measured 2.8


def test_backend_argument_errors():
    with pytest.raises(ValueError, match="backend"):
        sample(PRE, kernel=K3, networks=64, backend="torch")
    with pytest.raises(ValueError, match="devices"):
        sample(PRE, kernel=K3, networks=64, devices=["cpu"])
    with pytest.raises(ValueError, match="dtype"):
        sample(PRE, kernel=K3, networks=64, dtype="float16")
    with pytest.raises(ValueError, match="backend"):
        sample(RES, X2, networks=64, backend="torch")
    with pytest.raises(ValueError, match="devices"):
        sample(RES, X2, networks=64, devices=["cpu"])


def test_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ImportError, match=r"rgflow\[jax\]"):
        sample(PRE, kernel=K3, networks=64, backend="jax")
    with pytest.raises(ImportError, match=r"rgflow\[jax\]"):
        sample(RES, X2, networks=64, backend="jax")


@needs_jax
@pytest.mark.slow
def test_preresnet_jax_weights_sampler_and_float32():
    th = preresnet_theory(PRE, kernel=K3, every=10)
    kw = dict(kernel=K3, networks=2400, groups=24, every=10)
    a = sample(PRE, backend="jax", sampler="weights", seed=1, **kw)
    b = sample(PRE, seed=2, **kw)
    for k in ("K", "V", "Sigma"):
        se = np.hypot(getattr(a.stderr, k), getattr(b.stderr, k))
        assert zmax(getattr(a, k), getattr(b, k), se) < 5, k
    assert zmax(a.K, th.metric(), a.stderr.K) < 5
    with pytest.warns(UserWarning, match="float32"):
        c = sample(PRE, backend="jax", dtype="float32", seed=3, **kw)
    assert zmax(c.K, th.metric(), c.stderr.K) < 5
    assert zmax(c.V, th.V, c.stderr.V) < 5


@needs_jax
@pytest.mark.slow
def test_jax_batch_and_device_invariance():
    """Network i draws from fold_in(key(seed), i): the batch size and the device count (two host
    devices, fresh interpreter) change only the summation order."""
    code = textwrap.dedent(
        """
        import numpy as np, jax
        from rgflow import PreResNet
        from rgflow import ResMLP
        from rgflow.ensembles import sample
        assert len(jax.devices()) == 2, jax.devices()
        K = 2 * (0.7 * np.eye(3) + 0.3)
        pre = PreResNet("tanh", depth=6, width=8, eps=0.2, C_W=2.0)
        kw = dict(kernel=K, networks=240, groups=4, every=3, seed=5, backend="jax")
        runs = [sample(pre, batch=60, **kw), sample(pre, batch=14, **kw),
                sample(pre, batch=60, devices=jax.devices()[:1], **kw)]
        for r in runs[1:]:
            for k in ("K", "V", "Sigma"):
                if k != "Sigma":
                    np.testing.assert_allclose(getattr(r.stderr, k), getattr(runs[0].stderr, k), rtol=1e-9, atol=1e-11)
                np.testing.assert_allclose(getattr(r, k), getattr(runs[0], k), rtol=1e-9, atol=1e-11)
        res = ResMLP("tanh", 3, 6, C_b=0.1, C_W=1.2, gamma=0.5)
        x = np.array([[1.0, 0.5], [0.2, -1.0]])
        kw = dict(networks=240, groups=4, seed=5, backend="jax")
        runs = [sample(res, x, batch=60, **kw), sample(res, x, batch=14, **kw),
                sample(res, x, batch=60, devices=jax.devices()[:1], **kw)]
        for r in runs[1:]:
            for k in ("K", "V", "S"):
                if k != "S":
                    np.testing.assert_allclose(getattr(r.stderr, k), getattr(runs[0].stderr, k), rtol=1e-9, atol=1e-11)
                np.testing.assert_allclose(getattr(r, k), getattr(runs[0], k), rtol=1e-9, atol=1e-11)
        print("OK", [r.batch for r in runs])
        """
    )
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    src = os.path.join(os.path.dirname(__file__), "..", "python")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "OK" in out.stdout


def _gpus() -> list:
    if not HAVE_JAX:
        return []
    try:
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    except Exception:
        return []


@pytest.mark.gpu
@pytest.mark.skipif(not _gpus(), reason="no GPU visible to jax")
def test_jax_gpu_matches_numpy():
    gpus = _gpus()
    net = PreResNet("tanh", depth=40, width=64, eps=0.05, C_W=2.0)
    kw = dict(kernel=K3, networks=20_000, groups=20, every=20)
    a = sample(net, seed=1, **kw)
    b = sample(net, seed=2, backend="jax", devices=gpus, **kw)
    for k in ("K", "V", "Sigma"):
        se = np.hypot(getattr(a.stderr, k), getattr(b.stderr, k))
        assert zmax(getattr(a, k), getattr(b, k), se) < 5, k
    r = sample(RES, X2, networks=20_000, groups=20, seed=1)
    g = sample(RES, X2, networks=20_000, groups=20, seed=2, backend="jax", devices=gpus)
    for k in ("K", "V", "S"):
        se = np.hypot(getattr(r.stderr, k), getattr(g.stderr, k))
        assert zmax(getattr(r, k), getattr(g, k), se) < 5, k
