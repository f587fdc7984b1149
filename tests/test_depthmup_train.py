"""Trained depth-μP ResNet ensembles (nfd.md §1.2, §3): the low-rank trainer against dense GD, the
multilevel construction, the spec's numbers (§3.1 setup), the decoupled DMFT, rate fits, bad input."""

import math
import warnings

import numpy as np
import pytest

import rgflow
from rgflow.learning import _depthmup_train as T  # the per-depth kernel, to feed it chosen weights

jax = pytest.importorskip("jax")
jnp = jax.numpy

X = math.sqrt(2) * np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # 60°, |x|² = d (§3.1)
Y = np.array([1.0, -1.0])


def dense_gd(net, W, Wb, U, v, steps, eta, x=X, y=Y):
    """Plain numpy GD with full matrices: forward with W, backward with Wb (= W: coupled), both
    updated by the same rank-P increments; the reference for the low-rank trainer (§1.2)."""
    W, Wb, U, v = (np.array(a, dtype=float) for a in (W, Wb, U, v))
    L, n = W.shape[0], W.shape[1]
    d = x.shape[1]
    a = net.branch_multiplier
    g0 = net.gamma0
    lr = {k: net.learning_rate(k, eta) for k in ("input", "hidden", "readout")}
    phi, dphi = (lambda z: net.activation.numpy(z)), (lambda z: net.activation.numpy(z, 1))
    fs, losses = [], []
    for _t in range(steps + 1):
        hs = [U @ x.T / math.sqrt(d)]
        for ell in range(L):
            hs.append(hs[-1] + a / math.sqrt(n) * W[ell] @ phi(hs[-1]))
        r = hs[-1] if net.readout == "h" else phi(hs[-1])
        f = v @ r / (g0 * n)
        delta = y - f
        fs.append(f)
        losses.append(0.5 * np.sum(delta**2))
        g = np.outer(v, np.ones(len(y))) if net.readout == "h" else v[:, None] * dphi(hs[-1])
        gs = [None] * (L + 1)
        gs[L] = g
        for ell in range(L, 0, -1):
            g = g + a / math.sqrt(n) * dphi(hs[ell - 1]) * (Wb[ell - 1].T @ g)
            gs[ell - 1] = g
        # dL/dθ = -Σ Δ ∂f/∂θ ; θ += lr Σ Δ ∂f/∂θ
        for ell in range(1, L + 1):
            inc = lr["hidden"] * a / (g0 * n * math.sqrt(n)) * (gs[ell] * delta) @ phi(hs[ell - 1]).T
            W[ell - 1] += inc
            Wb[ell - 1] += inc if Wb is not W else 0.0
        U += lr["input"] / (g0 * n) * (gs[0] * delta) @ x / math.sqrt(d)
        v += lr["readout"] / (g0 * n) * r @ delta
    return np.array(fs), np.array(losses)


NET = rgflow.DepthMuPResNet("tanh", depth=3, width=12, gamma0=1.5)


def weights(seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((3, 12, 12)),
        rng.standard_normal((3, 12, 12)),
        rng.standard_normal((12, 2)),
        rng.standard_normal(12) * 3,
    )


def run_kernel(net, W, Wb, U, v, eta, steps=3):
    with T.x64(jax):
        fn = T._compiled(net, net.depth, steps, 2, 2)
        return {k: np.asarray(o)[0] for k, o in fn(*(jnp.asarray(a[None]) for a in (W, Wb, U, v)), X.T, Y, eta).items()}


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_low_rank_trainer_equals_dense_gd(mode):
    W, Wt, U, v = weights(3)
    Wb = Wt if mode == "decoupled" else W
    out = run_kernel(NET, W, Wb, U, v, 0.2)
    f_ref, loss_ref = dense_gd(NET, W, Wb.copy() if mode == "decoupled" else W, U, v, 3, 0.2)
    np.testing.assert_allclose(out["f"], f_ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out["loss"], loss_ref, rtol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_low_rank_trainer_equals_dense_gd_phi_readout_frozen_input(act):
    net = NET.with_(activation=act, readout="phi", train=("hidden", "readout"), branch="linear", horizon=2.0)
    W, Wt, U, v = weights(4)
    out = run_kernel(net, W, Wt, U, v, 0.1)
    f_ref, loss_ref = dense_gd(net, W, Wt.copy(), U, v, 3, 0.1)
    np.testing.assert_allclose(out["f"], f_ref, rtol=1e-10, atol=1e-12)


def test_ntk_at_init_equals_autodiff():
    """Θ(0) = (1/η) Σ_groups lr ∂f·∂f (f(t+1) = f(t) + ηΘΔ + O(η²γ0²)), checked with jax.jacobian."""
    W, _, U, v = weights(5)
    eta, a, n, g0 = 0.2, NET.branch_multiplier, 12, NET.gamma0
    out = run_kernel(NET, W, W, U, v, eta)
    with T.x64(jax):

        def f(params):
            W_, U_, v_ = params
            h = U_ @ jnp.asarray(X.T) / math.sqrt(2)
            for ell in range(3):
                h = h + a / math.sqrt(n) * W_[ell] @ jnp.tanh(h)
            return v_ @ h / (g0 * n)

        J = jax.jacobian(f)((jnp.asarray(W), jnp.asarray(U), jnp.asarray(v)))
        lrs = [NET.learning_rate(k, eta) for k in ("hidden", "input", "readout")]
        theta = sum(
            lr * (np.asarray(j).reshape(2, -1) @ np.asarray(j).reshape(2, -1).T) for lr, j in zip(lrs, J, strict=True)
        )
    np.testing.assert_allclose(out["ntk"][0], theta / eta, rtol=1e-11)


def test_multilevel_bridge_keeps_block_sums_and_the_law():
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((2, 40, 40))
    fine = T._level(rng, coarse, 8, 40, 4)
    np.testing.assert_allclose(fine.reshape(2, 4, 40, 40).sum(1) / 2.0, coarse, atol=1e-12)
    # children are N(0,1) and uncorrelated with each other: sample moments over 4·3200 entries
    c = fine.reshape(2, 4, -1)
    assert abs(c.var() - 1.0) < 0.05
    assert abs(np.mean(c[:, 0] * c[:, 1])) < 0.05


@pytest.fixture(scope="module")
def spec_sweep():  # ~15 s of compile + training on an idle core
    """§3.1 setup (tanh, η = 0.1, γ0 = 2, 3 steps), n = 256, L = 4, 8; 8 networks."""
    net = rgflow.DepthMuPResNet("tanh", width=256, gamma0=2.0)
    return rgflow.train_depth_sweep(net, X, Y, depths=(4, 8), steps=3, eta=0.1, networks=8, seed=11)


@pytest.mark.slow
def test_spec_numbers_gap_and_learned_output(spec_sweep):
    r = spec_sweep
    gap, se = r.gap("f")
    # t = 1 std − dec gap: 0.0353(9) at L = 4, 0.0360(10) at L = 8 (n = 512, §3.3); same at n = 256
    for i, ref in enumerate((0.0353, 0.0360)):
        assert abs(gap[i, 1, 0] - ref) < 3.5 * se[i, 1, 0] + 0.002
    # f(x_1, 3) at L = 8: 0.5915 + 0.0046 + 0.0027 + 0.0009 − 0.0 ≈ 0.5833 (n = 512, §3.2 table)
    f3, s3 = r.mean["f"][1, 0, 3, 0], r.stderr["f"][1, 0, 3, 0]
    assert abs(f3 - 0.583) < 3.5 * s3 + 0.01
    # the t = 0 NTK is the spec's Θ_L (4: 3.42689 / 1.61860) up to noise and O(1/n)
    th, ts = r.mean["ntk"][0, 0, 0], r.stderr["ntk"][0, 0, 0]
    assert abs(th[0, 0] - 3.42689) < 3.5 * ts[0, 0] + 0.03
    assert abs(th[0, 1] - 1.61860) < 3.5 * ts[0, 1] + 0.03
    # loss falls from ≈ 1 to ≈ 0.17 (coupled) and stays higher for the decoupled network (§3.3)
    assert r.mean["loss"][1, 0, 3] < 0.25 < r.mean["loss"][1, 1, 3]
    d, ds = r.differences("f")
    assert d.shape == (1, 4, 2) and np.all(ds >= 0)


def dmft_l4():
    net = rgflow.DepthMuPResNet("tanh", depth=4, width=256, gamma0=2.0)
    return rgflow.dmft(net, X, Y, steps=3, eta=0.1, samples=4000, replicas=3, seed=1)


def test_decoupled_dmft_reproduces_the_init_kernels_and_first_step():
    s = dmft_l4()
    # t = 0 kernels: the §2.1 table at L = 4 (K_L 1.41922, Θ 3.42689 / 1.61860)
    assert abs(s.mean["kernels"][0, -1, 0, 0] - 1.41922) < 4 * s.stderr["kernels"][0, -1, 0, 0] + 0.01
    assert abs(s.mean["ntk"][0, 0, 0] - 3.42689) < 4 * s.stderr["ntk"][0, 0, 0] + 0.02
    # first step of the decoupled network: η Θ_dec y = 0.1·(2.83843 − 1.39013) = 0.1448 (+ O(η²γ0²))
    assert abs(s.mean["f"][1, 0] - 0.1448) < 0.01
    assert np.all(np.diff(s.mean["loss"]) < 0)


@pytest.mark.slow
def test_dmft_matches_the_ensembles_coupled_and_decoupled(spec_sweep):
    net = rgflow.DepthMuPResNet("tanh", depth=4, width=256, gamma0=2.0)
    for j, coupled in enumerate((True, False)):
        s = rgflow.dmft(net, X, Y, steps=3, eta=0.1, samples=4000, replicas=3, seed=1, coupled=coupled)
        ens, se = spec_sweep.mean["f"][0, j, :, 0], spec_sweep.stderr["f"][0, j, :, 0]
        assert np.all(np.abs(s.mean["f"][1:, 0] - ens[1:]) < 3.5 * np.hypot(se[1:], s.stderr["f"][1:, 0]) + 0.01)


def test_rate_fit_recovers_exponents():
    L = np.array([4.0, 8.0, 16.0, 32.0])
    for p in (1.0, 2.0):
        d = 0.3 * L**-p
        r = rgflow.learning.fit_rate(L, d, 0.05 * d)
        assert r.p == pytest.approx(p, abs=1e-9)
        assert r.stderr == pytest.approx(0.05 / math.sqrt(np.sum((np.log(L) - np.log(L).mean()) ** 2)), rel=1e-6)
        assert r.consistent_with(p) and not r.consistent_with(p + 1)
    with pytest.raises(ValueError, match="two depths"):
        rgflow.learning.fit_rate(L, np.zeros(4), np.ones(4))


def test_divergent_learning_rate_is_named():
    net = rgflow.DepthMuPResNet("tanh", width=8, gamma0=2.0)
    with pytest.warns(RuntimeWarning, match="λ_max"), pytest.raises(FloatingPointError, match="eta=50.0"):
        rgflow.train_depth_sweep(net, X, Y, depths=(2,), steps=30, eta=50.0, networks=2)


def test_unstable_learning_rate_warns():
    net = rgflow.DepthMuPResNet("tanh", width=8, gamma0=2.0)
    with pytest.warns(RuntimeWarning, match="λ_max"), pytest.raises(FloatingPointError, match="eta=0.45"):
        rgflow.train_depth_sweep(net, X, Y, depths=(2,), steps=30, eta=0.45, networks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stable rate trains silently
        r = rgflow.train_depth_sweep(net, X, Y, depths=(2,), steps=30, eta=0.1, networks=2)
    assert np.all(np.isfinite(r.values["loss"])) and r.mean["loss"][0, 0, -1] < 0.1


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"depths": (4, 6)}, ValueError, "multiple"),
        ({"depths": (0, 4)}, ValueError, "depths"),
        ({"depths": ()}, ValueError, "depths"),
        ({"eta": -0.1}, ValueError, "eta"),
        ({"eta": float("nan")}, ValueError, "eta"),
        ({"networks": 1}, ValueError, "networks"),
        ({"modes": ("coupled", "sideways")}, ValueError, "modes"),
        ({"steps": -1}, ValueError, "steps"),
        ({"y": [1.0]}, ValueError, "y"),
    ],
)
def test_bad_input_is_named(kw, exc, match):
    net = rgflow.DepthMuPResNet("tanh", width=8)
    args = {"x": X, "y": Y}
    args.update({k: kw.pop(k) for k in ("x", "y") if k in kw})
    with pytest.raises(exc, match=match):
        rgflow.train_depth_sweep(net, args["x"], args["y"], **kw)
    with pytest.raises(TypeError, match="DepthMuPResNet"):
        rgflow.train_depth_sweep("resnet", X, Y)


def test_coupled_dmft_first_step_is_the_ntk_step():
    """With the Stein responses A, B the true network's first step is η Θ y (Θ, not Θ_dec):
    0.1·(3.42689 − 1.61860) = 0.1808 at L = 4, measured 0.181(4) on networks (nfd.md §2.1), and the
    coupled network learns faster than the decoupled one (§3.3 gap)."""
    net = rgflow.DepthMuPResNet("tanh", depth=4, width=256, gamma0=2.0)
    c = rgflow.dmft(net, X, Y, steps=2, eta=0.1, samples=4000, replicas=2, seed=3, coupled=True)
    d = rgflow.dmft(net, X, Y, steps=2, eta=0.1, samples=4000, replicas=2, seed=3)
    assert c.coupled and not d.coupled
    assert abs(c.mean["f"][1, 0] - 0.1808) < 4 * c.stderr["f"][1, 0] + 0.006
    gap = c.mean["f"][1, 0] - d.mean["f"][1, 0]
    assert 0.025 < gap < 0.045  # 0.036 ± 0.002 measured at n = 256 (t = 1, L = 4)


def test_dmft_bad_input():
    net = rgflow.DepthMuPResNet("tanh", depth=2, width=8)
    with pytest.raises(ValueError, match="eta"):
        rgflow.dmft(net, X, Y, eta=0.0)
    with pytest.raises(ValueError, match="samples"):
        rgflow.dmft(net, X, Y, samples=3)
    with pytest.raises(ValueError, match="Richardson"):
        rgflow.dmft_depth_limit(net, X, Y, depths=(4, 6))
