"""One definition per activation (``rgflow.activations._array``): numpy results are bitwise those
of rgflow 0.1's numpy evaluation (copied below as the reference), and the same definition traced
with jax.numpy agrees to rounding."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from rgflow.activations import BUILTIN_PARAMS, Activation, array_function

HAVE_JAX = importlib.util.find_spec("jax") is not None

GRID = np.concatenate(
    [
        np.array([0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, 40.0, -40.0, 1e3, -1e3, 1e150, -1e150, 0.5, -2.5]),
        np.linspace(-8.0, 8.0, 161),
    ]
)
ACTS = [Activation(n) for n in BUILTIN_PARAMS] + [
    Activation("leaky_relu", slope=0.2),
    Activation("elu", alpha=0.7),
    Activation("monomial", p=0),
    Activation("monomial", p=1),
    Activation("monomial", p=3),
]


def _old_numpy(act: Activation, z: np.ndarray, deriv: int) -> np.ndarray:
    """rgflow 0.1's Activation.numpy for built-ins (verbatim)."""
    from scipy.special import erf as _erf

    z = np.asarray(z, dtype=float)
    n, p = act.name, act.params
    if n == "linear":
        return z.copy() if deriv == 0 else (np.ones_like(z) if deriv == 1 else np.zeros_like(z))
    if n in ("relu", "leaky_relu"):
        a = 0.0 if n == "relu" else p["slope"]
        if deriv == 0:
            return np.where(z > 0, z, a * z)
        if deriv == 1:
            return np.where(z > 0, 1.0, a)
        return np.zeros_like(z)
    if n == "tanh":
        t = np.tanh(z)
        return t if deriv == 0 else (1 - t * t if deriv == 1 else -2 * t * (1 - t * t))
    if n == "erf":
        if deriv == 0:
            return _erf(z)
        g = 2.0 / math.sqrt(math.pi) * np.exp(-z * z)
        return g if deriv == 1 else -2 * z * g
    if n == "sin":
        return (np.sin(z), np.cos(z), -np.sin(z))[deriv]
    if n == "gelu":
        cdf = 0.5 * (1 + _erf(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return (z * cdf, cdf + z * pdf, 2 * pdf - z * z * pdf)[deriv]
    if n in ("swish", "softplus", "sigmoid"):
        s = 0.5 * (1 + np.tanh(0.5 * z))
        ds = s * (1 - s)
        d2s = ds * (1 - 2 * s)
        if n == "sigmoid":
            return (s, ds, d2s)[deriv]
        if n == "softplus":
            return (np.logaddexp(0.0, z), s, ds)[deriv]
        return (z * s, s + z * ds, 2 * ds + z * d2s)[deriv]
    if n == "elu":
        al = p["alpha"]
        e = al * np.exp(np.minimum(z, 0.0))
        if deriv == 0:
            return np.where(z > 0, z, e - al)
        if deriv == 1:
            return np.where(z > 0, 1.0, e)
        return np.where(z > 0, 0.0, e)
    if n == "monomial":
        k = int(p["p"])
        if deriv > k:
            return np.zeros_like(z)
        return math.perm(k, deriv) * z ** (k - deriv)
    raise AssertionError(n)


@pytest.mark.parametrize("deriv", [0, 1, 2])
@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_numpy_is_bitwise_the_old_implementation(act, deriv):
    with np.errstate(all="ignore"):
        want = _old_numpy(act, GRID, deriv)
        got = act.numpy(GRID, deriv)
        direct = array_function(np, act.name, act.params, deriv)(GRID)
    assert got.dtype == want.dtype == np.float64 and got.shape == GRID.shape
    np.testing.assert_array_equal(got, want)  # NaN == NaN, and exact equality elsewhere
    assert np.array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(direct, want)
    assert got is not GRID  # a fresh array (linear: a copy)


@pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_jax_traces_the_same_definition(act):
    import jax
    import jax.numpy as jnp

    from rgflow.ensembles._jax import activation, x64

    z = np.linspace(-6.0, 6.0, 121)
    with x64(jax):
        sigma, dsigma = activation(act)
        for deriv, f in ((0, sigma), (1, dsigma)):
            got = np.asarray(jax.jit(f)(jnp.asarray(z)))
            np.testing.assert_allclose(got, act.numpy(z, deriv), rtol=1e-13, atol=1e-14, err_msg=f"{act} {deriv}")
        g2 = np.asarray(array_function(jnp, act.name, act.params, 2)(jnp.asarray(z)))
        np.testing.assert_allclose(g2, act.numpy(z, 2), rtol=1e-13, atol=1e-14)
        # float32 in, float32 out (constants such as relu's slope do not promote)
        z32 = jnp.asarray(z, dtype=jnp.float32)
        assert sigma(z32).dtype == jnp.float32 and dsigma(z32).dtype == jnp.float32


def test_custom_callables_still_work():
    act = Activation.from_callable(np.tanh, derivatives=[lambda z: 1 - np.tanh(z) ** 2], name="t")
    z = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(act.numpy(z), np.tanh(z))
    np.testing.assert_array_equal(act.numpy(z, 1), 1 - np.tanh(z) ** 2)
    with pytest.raises(ValueError, match="derivative 2"):
        act.numpy(z, 2)
    with pytest.raises(ValueError, match="derivatives 0, 1, 2, 3"):
        Activation("tanh").numpy(z, 4)
