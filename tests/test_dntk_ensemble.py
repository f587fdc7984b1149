"""Sampled dNTK / ddNTK tensors P, Q, R, S, T, U (``rgflow.sample(..., dntk=True)``).

* the per-network kernel against JAX automatic differentiation of the definitions
  (``learning.md`` §0: nested ``jvp`` for dĤ, ddIĤ; Hessian-vector products for ddIIĤ) -- the
  forward-equation route and the autodiff route agree to rounding;
* tanh at criticality, depth 3, width 32: every tensor within the standard errors at layer 2
  (exact there) and within the errors plus the O(1/n) remainder at layer 3;
* last-layer-only training gives exactly zero; numpy = JAX within errors; options and errors.
* slow: tanh and GELU at criticality, depth 4, widths 32 and 64 (Richardson 2·X64 − X32).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import rgflow
from rgflow.activations import array_function
from rgflow.ensembles import (
    Ensemble,
    MLPStderr,
    _dntk,  # the per-batch kernel under test
)

DNTK = ("P", "Q", "R", "S", "T", "U")
X3 = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.7], [0.5, 0.9, 0.1]])


def _autodiff_estimates(act: str, widths: tuple[int, ...], N: int, r: int, seed: int, hyper: dict) -> tuple:
    """(kernel sums, autodiff estimates) of one network with ``r`` given probe rows per layer."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    Cb, Cw, lb, lw = hyper["C_b"], hyper["C_W"], hyper["lambda_b"], hyper["lambda_W"]
    rng = np.random.default_rng(seed)
    L = len(widths) - 1
    x = rng.normal(size=(N, widths[0]))
    Ws = [rng.normal(size=(widths[l], widths[l - 1])) * np.sqrt(Cw / widths[l - 1]) for l in range(1, L)]
    bs = [rng.normal(size=(widths[l],)) * np.sqrt(Cb) for l in range(1, L)]
    probes = [rng.normal(size=(r, widths[l - 1])) * np.sqrt(Cw / widths[l - 1]) for l in range(2, L + 1)]
    hp = {k: np.full(L, v) for k, v in hyper.items()}
    h1 = lb + lw * x @ x.T / widths[0]
    jet = [array_function(np, act, {}, d) for d in range(4)]
    sums = _dntk.dntk_sums(
        np, jet, x, [W[None] for W in Ws], [b[None] for b in bs], [p[None] for p in probes], hp, h1, L=L
    )

    sig = array_function(jnp, act, {}, 0)
    ests = {}
    with jax.enable_x64(True):
        for l in range(2, L + 1):
            m = l - 1
            params = [(jnp.array(Ws[k]), jnp.array(bs[k])) for k in range(m)] + [
                (jnp.array(probes[l - 2]), jnp.zeros(r))
            ]
            metric = [
                (lw / widths[k] * jnp.ones_like(params[k][0]), lb * jnp.ones_like(params[k][1])) for k in range(m + 1)
            ]

            def hidden(p, xa, m=m):
                h = xa
                for W, b in p[:m]:
                    h = sig(W @ h + b)
                return h

            def zf(p, d, c, m=m, hidden=hidden):
                W, b = p[m]
                return (W @ hidden(p, x[d]) + b)[c]

            def mul(a, b):
                return jax.tree_util.tree_map(lambda u, v: u * v, a, b)

            def jv(f, u):
                return lambda p: jax.jvp(f, (p,), (u,))[1]

            V = {(c, d): mul(metric, jax.grad(zf)(params, d, c)) for c in range(r) for d in range(N)}
            s_m = [hidden(params, x[d]) for d in range(N)]
            pairs = [(a, b) for a in range(r) for b in range(r) if a != b]
            n = widths[m]
            est = {k: np.zeros((N,) * 4) for k in DNTK}
            for d0, d1, d2, d3 in itertools.product(range(N), repeat=4):
                # P: conditional mean over probe a's row: C_W ∂²(σ_3·σ(z_0))[v_b1, v_b2]
                def top(p, d0=d0, d3=d3, hidden=hidden, s_m=s_m):
                    return s_m[d3] @ hidden(p, x[d0])

                p_b = [jv(jv(top, V[b, d1]), V[b, d2])(params) for b in range(r)]
                est["P"][d0, d1, d2, d3] = Cw * np.mean(p_b)
                vt = mul(
                    metric, jax.grad(lambda p, d2=d2, d3=d3, hidden=hidden, s_m=s_m: s_m[d3] @ hidden(p, x[d2]))(params)
                )
                est["Q"][d0, d1, d2, d3] = Cw * np.mean(
                    [jv(jv(lambda p, a=a, d0=d0: zf(p, d0, a), V[a, d1]), vt)(params) for a in range(r)]
                )
                cyclic = [(a, (a + 1) % r) for a in range(r)]  # R: the pairs (a, a+1 mod r)
                est["R"][d0, d1, d2, d3] = n * np.mean(
                    [
                        jv(jv(jv(lambda p, a=a, d0=d0: zf(p, d0, a), V[a, d1]), V[b, d2]), V[b, d3])(params)
                        for a, b in cyclic
                    ]
                )
            hv = {}
            for c, d, e, f in itertools.product(range(r), range(N), range(r), range(N)):
                vdir = V[e, f]
                g = jax.grad(lambda p, c=c, d=d, vdir=vdir, zf=zf: jax.jvp(lambda q: zf(q, d, c), (p,), (vdir,))[1])(
                    params
                )
                hv[c, d, e, f] = g

            def ip(g1, g2, metric=metric):
                leaves = zip(*(jax.tree_util.tree_leaves(t) for t in (g1, g2, metric)), strict=True)
                return float(sum(jnp.sum(a * b * w) for a, b, w in leaves))

            for d1, d2, d3, d4 in itertools.product(range(N), repeat=4):
                est["S"][d1, d2, d3, d4] = n * np.mean([ip(hv[a, d1, b, d3], hv[a, d2, b, d4]) for a, b in pairs])
                est["T"][d1, d3, d4, d2] = n * np.mean([ip(hv[a, d1, a, d3], hv[b, d2, b, d4]) for a, b in pairs])
                est["U"][d1, d4, d2, d3] = n * np.mean([ip(hv[a, d1, b, d3], hv[b, d2, a, d4]) for a, b in pairs])
            ests[l] = est
    return sums, ests


def test_forward_equations_match_autodiff():
    """The forward-equation kernel reproduces JAX autodiff of the definitions, per network."""
    hyper = {"C_b": 0.1, "C_W": 1.3, "lambda_b": 0.4, "lambda_W": 2.2}  # every λ, C_W factor visible
    sums, ests = _autodiff_estimates("gelu", (3, 5, 4, 2), N=2, r=3, seed=3, hyper=hyper)
    for k in DNTK:
        assert np.all(sums[k + "s"][0] == 0)
        for l, est in ests.items():
            scale = np.max(np.abs(est[k]))
            assert scale > 1e-3, (k, l)
            np.testing.assert_allclose(
                sums[k + "s"][l - 1], est[k], rtol=0, atol=1e-12 * scale, err_msg=f"{k} layer {l}"
            )


@pytest.fixture(scope="module")
def tanh_run():
    net = rgflow.MLP.critical("tanh", depth=3, width=32)
    th = rgflow.theory(net, X3, dntk=True)
    ens = rgflow.sample(net, X3, networks=1600, seed=11, groups=16, dntk=True, progress=False)
    return net, th, ens


def _within(th, ens, name: str, layer: int, nsigma: float, rel: float) -> tuple[float, float]:
    t, e, s = getattr(th, name)[layer - 1], getattr(ens, name)[layer - 1], getattr(ens.stderr, name)[layer - 1]
    tol = nsigma * s + rel * np.max(np.abs(t))
    excess = float(np.max(np.abs(e - t) - tol))
    return excess, float(np.max(np.abs(e - t) / np.where(s > 0, s, np.inf)))


def test_sampled_tanh_critical_matches_theory(tanh_run):
    """Layer 1 is exactly 0, layer 2 is exact (within 5σ), layer 3 within 5σ + O(1/n) (4/n relative)."""
    net, th, ens = tanh_run
    n = 32
    for k in DNTK:
        est, se = getattr(ens, k), getattr(ens.stderr, k)
        assert est.shape == (3, 3, 3, 3, 3) and se.shape == est.shape
        assert np.all(est[0] == 0) and np.all(se[0] == 0)
        assert np.all(se[1:] > 0)
        excess, z = _within(th, ens, k, 2, 5.0, 0.0)
        assert excess <= 0, f"{k} layer 2: max |z| = {z:.2f}"
        excess, z = _within(th, ens, k, 3, 5.0, 4.0 / n)
        assert excess <= 0, f"{k} layer 3: max |z| = {z:.2f} beyond 5σ + 4/n"
    rows = {(r.tensor, r.layer) for r in rgflow.compare(th, ens)}
    assert {(k, l) for k in DNTK for l in (1, 2, 3)} <= rows


def test_spec_symmetries_hold_per_estimate(tanh_run):
    """The estimators respect P_0123 = P_0213 exactly; the other symmetries hold within errors."""
    _, _, ens = tanh_run
    np.testing.assert_allclose(ens.P, np.transpose(ens.P, (0, 1, 3, 2, 4)), rtol=1e-12, atol=1e-14)
    for k, perm in (("R", (0, 1, 2, 4, 3)), ("S", (0, 2, 1, 4, 3)), ("T", (0, 4, 3, 2, 1)), ("U", (0, 3, 4, 1, 2))):
        a, s = getattr(ens, k), getattr(ens.stderr, k)
        d = np.abs(a - np.transpose(a, perm)) / np.maximum(np.hypot(s, np.transpose(s, perm)), 1e-300)
        assert np.max(d[1:]) < 5.0, k


def test_last_layer_only_training_gives_zero():
    """λ = 0 below the last layer: every direction lives in the last layer, z is linear there."""
    L = 3
    lam = [0.0] * (L - 1) + [1.0]
    net = rgflow.MLP("tanh", depth=L, width=8, C_b=0.0, C_W=1.0, lambda_b=lam, lambda_W=lam)
    ens = rgflow.sample(net, X3, networks=8, groups=2, dntk=True, progress=False, theory=False)
    for k in DNTK:
        assert np.all(getattr(ens, k) == 0), k
        assert np.all(getattr(ens.stderr, k) == 0), k


def test_default_off_and_other_estimates_unchanged():
    net = rgflow.MLP.critical("tanh", depth=3, width=8)
    kw = dict(networks=16, groups=4, seed=5, progress=False, theory=False)
    plain = rgflow.sample(net, X3, **kw)
    with_d = rgflow.sample(net, X3, dntk=True, **kw)
    assert isinstance(plain, Ensemble) and all(getattr(plain, k) is None for k in DNTK)
    assert all(getattr(plain.stderr, k) is None for k in DNTK)
    assert set(plain.tensors()) & set(DNTK) == set()
    assert set(DNTK) <= set(with_d.tensors()) and set(DNTK) <= set(with_d.stderr.tensors())
    for k in ("K", "Theta", "V", "D", "F", "A", "B"):  # the probes come after the network's own draws
        np.testing.assert_array_equal(getattr(plain, k), getattr(with_d, k))
    assert set(DNTK) <= set(MLPStderr.ESTIMATES)


def test_dntk_errors():
    with pytest.raises(ValueError, match="smooth activation"):
        rgflow.sample(rgflow.MLP.critical("relu", depth=2, width=4), X3, networks=8, groups=2, dntk=True)
    f = rgflow.Activation.from_callable(np.tanh, derivatives=[lambda z: 1 - np.tanh(z) ** 2], name="t")
    with pytest.raises(ValueError, match="derivatives=\\[f1, f2, f3\\]"):
        rgflow.sample(rgflow.MLP(f, depth=2, width=4, C_W=1.0), X3, networks=8, groups=2, dntk=True)


def test_numpy_and_jax_agree():
    pytest.importorskip("jax")
    net = rgflow.MLP.critical("gelu", depth=3, width=16)
    x = X3[:2]
    kw = dict(networks=400, groups=10, dntk=True, progress=False, theory=False)
    a = rgflow.sample(net, x, seed=1, **kw)
    b = rgflow.sample(net, x, seed=2, backend="jax", **kw)
    for k in DNTK:
        ea, eb, sa, sb = getattr(a, k), getattr(b, k), getattr(a.stderr, k), getattr(b.stderr, k)
        z = np.abs(ea - eb)[1:] / np.hypot(sa, sb)[1:]
        assert np.max(z) < 5.0, (k, float(np.max(z)))
        assert np.all(eb[0] == 0)


def test_jax_is_the_same_kernel():
    """Same weights, same probes: the JAX trace of the kernel equals numpy to rounding."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    widths, L, B, r = (3, 6, 5, 4), 3, 2, 3
    x = rng.normal(size=(2, 3))
    Ws = [rng.normal(size=(B, widths[l], widths[l - 1])) / np.sqrt(widths[l - 1]) for l in range(1, L)]
    bs = [0.3 * rng.normal(size=(B, widths[l])) for l in range(1, L)]
    probes = [rng.normal(size=(B, r, widths[l - 1])) / np.sqrt(widths[l - 1]) for l in range(2, L + 1)]
    hp = {"C_b": np.full(L, 0.1), "C_W": np.full(L, 1.2), "lambda_b": np.full(L, 0.5), "lambda_W": np.full(L, 1.5)}
    h1 = 0.5 + 1.5 * x @ x.T / 3
    ref = _dntk.dntk_sums(np, [array_function(np, "erf", {}, d) for d in range(4)], x, Ws, bs, probes, hp, h1, L=L)
    jet = [array_function(jnp, "erf", {}, d) for d in range(4)]
    with jax.enable_x64(True):
        fn = jax.jit(lambda *a: _dntk.dntk_sums(jnp, jet, *a, L=L))
        out = fn(
            jnp.asarray(x),
            [jnp.asarray(w) for w in Ws],
            [jnp.asarray(b) for b in bs],
            [jnp.asarray(p) for p in probes],
            {k: jnp.asarray(v) for k, v in hp.items()},
            jnp.asarray(h1),
        )
        for k, v in ref.items():
            np.testing.assert_allclose(np.asarray(out[k]), v, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_sampled_depth4_richardson(act):
    """Depth 4, widths 32 and 64: layer 2 within 5σ at both widths, the deviations at layers 3-4
    shrink with n, and the Richardson combination 2·X64 − X32 (no O(1/n) term) is within
    5σ + 3 % of max |theory| (the O(1/n²) remainder) of the first-order theory."""
    runs = {}
    for n, networks in ((32, 4000), (64, 2000)):
        net = rgflow.MLP.critical(act, depth=4, width=n)
        th = rgflow.theory(net, X3, dntk=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            runs[n] = (th, rgflow.sample(net, X3, networks=networks, seed=n, dntk=True, progress=False))
    th = runs[64][0]
    for k in DNTK:
        for n in (32, 64):
            excess, z = _within(runs[n][0], runs[n][1], k, 2, 5.0, 0.0)
            assert excess <= 0, f"{act} {k} n={n} layer 2: max |z| = {z:.2f}"
        for layer in (3, 4):
            t = getattr(th, k)[layer - 1]
            e32, e64 = getattr(runs[32][1], k)[layer - 1], getattr(runs[64][1], k)[layer - 1]
            s32, s64 = getattr(runs[32][1].stderr, k)[layer - 1], getattr(runs[64][1].stderr, k)[layer - 1]
            rich = 2 * e64 - e32
            srich = np.sqrt(4 * s64**2 + s32**2)
            assert np.all(np.abs(rich - t) <= 5 * srich + 0.03 * np.max(np.abs(t))), f"{act} {k} layer {layer}"
            # the deviation shrinks with the width (up to the noise)
            d32 = np.max(np.abs(e32 - t))
            d64 = np.max(np.abs(e64 - t))
            assert d64 <= d32 + 5 * np.max(np.hypot(s32, s64)), f"{act} {k} layer {layer}: {d64} > {d32}"
