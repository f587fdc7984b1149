"""Fuzzing every public entry point: a clear exception or a correct result, within a hang bound.

Each test draws arguments (shapes, dtypes, extreme scales, NaN/inf, degenerate and non-PSD
kernels, mismatched objects, custom callables that raise or misbehave, wrong types) and asserts:

* the call either returns a result that passes cheap exactness checks (finite tensors of the
  right shape; the layer-1 kernel ``C_b + C_W x·xᵀ/n0`` and Gaussian moments in closed form), or
* raises TypeError/ValueError with a message (never AttributeError, IndexError, KeyError,
  ZeroDivisionError, FloatingPointError, a Rust panic or a ``NoneType`` text), and
* never emits a ComplexWarning (no silent complex -> real cast), and
* returns within ``HANG_BOUND`` seconds (a hang guard, not a speed test: every call here
  takes well under a second).

The default run draws ``FAST`` examples per entry point; ``-m slow`` runs ``SLOW`` each.

Left out on purpose (other parts of the reliability work own them): calls of large cost
(many inputs, deep or wide networks, many sampled networks: memory/time limits), Ctrl-C,
nearly-duplicate inputs (inputs are drawn on an integer grid, so rows are equal or well
apart), the accuracy of expectations at extreme scales (only "error or finite" is asserted
there), the samplers' internals and the JAX backend.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgflow
import rgflow.cli
from rgflow.testing import reference

FAST, SLOW = 25, 300
HANG_BOUND = 60.0  # seconds
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
SMALL_SAMPLE = {"networks": 32, "groups": 4, "progress": False}

#: Texts of raw Python errors that escaped validation (they name no argument and no fix).
BAD_TEXT = (
    "float() argument must be",
    "int() argument must be",
    "'NoneType' object",
    "object has no attribute",
    "unsupported operand",
    "index out of range",
    "not subscriptable",
    "object is not iterable",
    "could not convert string to float",
    "Maximum allowed size exceeded",
    "pickled",
)


def outcome(f: Callable[[], Any]) -> Any:
    """Run ``f``: its result, or the TypeError/ValueError it raised (checked for a clear message)."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            result = f()
    except RuntimeError as exc:  # a custom activation's own error may surface unchanged
        assert "user function failed" in str(exc), repr(exc)
        result = exc
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert len(text) >= 15, f"unclear message {text!r}"
        assert not any(b in text for b in BAD_TEXT), f"misleading message {text!r}"
        result = exc
    elapsed = time.perf_counter() - t0
    assert elapsed < HANG_BOUND, f"call took {elapsed:.0f} s (hang bound {HANG_BOUND} s)"
    return result


# ---------------------------------------------------------------------------------------- strategies

SCALES = [0.0, 1e-300, 1e-150, 1e-8, 1.0, 3.0, 1e8, 1e150, 1e300]
SPECIALS = [math.nan, math.inf, -math.inf]


def _custom(kind: str) -> Any:
    """Custom activations, well-behaved and misbehaving (construction may itself raise)."""
    t = np.tanh

    def d1(z):
        return 1 - t(z) ** 2

    def d2(z):
        return -2 * t(z) * d1(z)

    def d3(z):
        return -2 * d1(z) * (1 - 3 * t(z) ** 2)

    def d4(z):
        return 8 * t(z) * d1(z) * (2 - 3 * t(z) ** 2)

    good = [d1, d2, d3, d4]
    if kind == "good":
        return rgflow.Activation.from_callable(t, derivatives=good, name="tanh_custom")
    if kind == "raises_later":
        calls = {"n": 0}

        def f(z):
            calls["n"] += 1
            if calls["n"] > 1:
                raise RuntimeError("user function failed")
            return t(z)

        return rgflow.Activation.from_callable(f, derivatives=good, name="raises")
    bad: dict[str, Callable[[Any], Any]] = {
        "nan": lambda z: np.where(np.abs(z) > 1.5, np.nan, t(z)),
        "huge": lambda z: 1e300 * t(z),
        "scalar": lambda z: 1.0,
        "none": lambda z: None,
        "list": lambda z: [float(v) for v in np.ravel(z)],
        "complex": lambda z: t(z) + 0j,
        "wrongshape": lambda z: np.tanh(np.ravel(z))[:1],
        "str": lambda z: np.array(["a"] * np.size(z)),
    }
    return rgflow.Activation.from_callable(bad[kind], derivatives=good, name=kind)


CUSTOM_KINDS = ["good", "raises_later", "nan", "huge", "scalar", "none", "list", "complex", "wrongshape", "str"]


@st.composite
def activations(draw: Any) -> Any:
    choice = draw(st.sampled_from(["builtin"] * 6 + ["custom", "custom", "bad"]))
    if choice == "builtin":
        return draw(st.sampled_from(["relu", "tanh", "gelu", "erf", "linear", "swish", "sin", "softplus", "elu"]))
    if choice == "custom":
        kind = draw(st.sampled_from(CUSTOM_KINDS))
        built = outcome(lambda: _custom(kind))
        return "tanh" if isinstance(built, Exception) else built
    return draw(st.sampled_from(["nope", "", 3, None, np.tanh]))


def maybe_bad(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 10) -> Any:
    """``valid`` mostly, ``bad`` about once in ``one_in`` draws (so that most cases reach the
    computation and a good share exercise the validation)."""
    return st.integers(1, one_in).flatmap(lambda k: bad if k == 1 else valid)


numbers = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 0.5]), st.floats(min_value=0.0, max_value=5.0))
odd_values = st.sampled_from(
    ["1.0", 1j, True, None, [1.0, 2.0, 3.0, 4.0, 5.0], (), object(), -1.0, 1e-300, 1e300, *SPECIALS]
)
hyper = maybe_bad(numbers, odd_values)
positive = maybe_bad(st.sampled_from([1.0, 2.0, 0.5, 1.5]), odd_values)
int_like = st.sampled_from([-1, 0, 2.0, 2.5, "2", True, None, 1e9])
small_int = maybe_bad(st.integers(1, 3), int_like)


@st.composite
def inputs(draw: Any, *, allow_bad: bool = True) -> Any:
    """(N, n0) inputs on an integer grid times a scale; with ``allow_bad`` also wrong shapes,
    NaN/inf, complex, bool, str and object data."""
    N = draw(st.integers(min_value=1, max_value=3))
    n0 = draw(st.integers(min_value=1, max_value=3))
    grid = np.array(draw(st.lists(st.integers(-3, 3), min_size=N * n0, max_size=N * n0)), dtype=float)
    scales = maybe_bad(st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from(SCALES), one_in=4)
    x = grid.reshape(N, n0) * draw(scales if allow_bad else st.sampled_from([0.5, 1.0, 2.0]))
    if not allow_bad:
        return x
    mutate = draw(st.sampled_from(["none"] * 24 + ["special", "complex", "bool", "str", "1d", "3d", "empty", "f32"]))
    if mutate == "special":
        x = x.copy()
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIALS))
    elif mutate == "complex":
        x = x + 1j
    elif mutate == "bool":
        x = x > 0
    elif mutate == "str":
        x = x.astype(str)
    elif mutate == "1d":
        x = x.ravel()
    elif mutate == "3d":
        x = x[None]
    elif mutate == "empty":
        x = x[:0]
    elif mutate == "f32":
        x = x.astype(np.float32)
    return x


@st.composite
def mlps(draw: Any) -> Any:
    return outcome(
        lambda: rgflow.MLP(
            draw(activations()),
            depth=draw(small_int),
            width=draw(maybe_bad(st.integers(1, 4), int_like)),
            C_b=draw(hyper),
            C_W=draw(positive),
            lambda_b=draw(hyper),
            lambda_W=draw(hyper),
        )
    )


def layer_one_kernel(net: Any, x: np.ndarray) -> np.ndarray:
    return net.C_b[0] + net.C_W[0] * (np.asarray(x, dtype=float) @ np.asarray(x, dtype=float).T) / x.shape[1]


def assert_finite_tensors(obj: Any) -> None:
    for name, v in obj.tensors().items():
        if name in ("R", "S", "T", "U") and obj.net.activation.kinked:
            continue
        assert np.all(np.isfinite(v)), f"{name} has NaN/inf in a returned result"


# ---------------------------------------------------------------------------------------- entry points


def _mlp_constructor(data: Any) -> None:
    net = data.draw(mlps())
    if isinstance(net, Exception):
        return
    assert all(isinstance(n, int) and n >= 1 for n in net.widths) and isinstance(net.depth, int)
    for k in ("C_b", "C_W", "lambda_b", "lambda_W"):
        v = getattr(net, k)
        assert len(v) == net.depth and all(math.isfinite(u) and u >= 0 for u in v)
    assert all(c > 0 for c in net.C_W)
    repr(net)


def _theory(data: Any) -> None:
    net = data.draw(mlps())
    if isinstance(net, Exception):
        return
    x = data.draw(inputs())
    kw = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "order": st.one_of(st.sampled_from([0, 1]), int_like),
                "ntk": st.sampled_from([True, False, "no", 1, None]),
                "quad_order": st.sampled_from([None, 8, 16, 8.5, "8", 0, -3]),
                "expectations": st.sampled_from(["auto", "quadrature", "exact", None]),
            },
        )
    )
    th = outcome(lambda: rgflow.theory(net, x, **kw))
    if isinstance(th, Exception):
        return
    assert isinstance(th, rgflow.Theory)
    assert_finite_tensors(th)
    N = np.shape(x)[0]
    assert th.K.shape == (net.depth, N, N)
    np.testing.assert_allclose(th.K[0], layer_one_kernel(net, x), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(th.K, np.transpose(th.K, (0, 2, 1)))


def _sample(data: Any) -> None:
    net = data.draw(mlps())
    if isinstance(net, Exception):
        return
    x = data.draw(inputs())
    kw = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "networks": st.sampled_from([32, 1, 0, 32.0, "32", None]),
                "groups": st.sampled_from([4, 1, 64, 4.5]),
                "seed": st.sampled_from([0, 1, -1, 1.5, "0"]),
                "ntk": st.sampled_from([True, False, "no"]),
                "estimator": st.sampled_from(["conditional", "direct", "bogus"]),
                "dtype": st.sampled_from(["float64", "float32", "int8", np.float64]),
                "batch": st.sampled_from([None, 8, 0, 2.5]),
                "theory": st.sampled_from([None, False, True, "theory"]),
            },
        )
    )
    ens = outcome(lambda: rgflow.sample(net, x, **{**SMALL_SAMPLE, **kw}))
    if isinstance(ens, Exception):
        return
    assert isinstance(ens, rgflow.Ensemble)
    assert_finite_tensors(ens)
    if kw.get("estimator", "conditional") == "conditional":
        # layer 1 of the conditional estimator is exact: C_b + C_W x·xᵀ/n0
        np.testing.assert_allclose(ens.K[0], layer_one_kernel(net, x), rtol=1e-12, atol=1e-300)


@st.composite
def covariances(draw: Any, max_scale: float = 1e300) -> Any:
    d = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["psd", "psd", "rank1", "zero", "nonpsd", "asym", "nan", "complex", "shape", "list"]))
    A = np.array(draw(st.lists(st.integers(-2, 2), min_size=d * d, max_size=d * d)), dtype=float).reshape(d, d)
    scale = draw(st.sampled_from([v for v in (1e-300, 1e-8, 1.0, 4.0, 1e8, 1e300) if v <= max_scale]))
    K = (A @ A.T + np.eye(d)) * scale
    if kind == "rank1":
        v = A[:, :1]
        K = v @ v.T * scale
    elif kind == "zero":
        K = np.zeros((d, d))
    elif kind == "nonpsd":
        K = np.ones((d, d)) - 3 * np.eye(d) if d > 1 else -np.eye(1)
    elif kind == "asym":
        K = K + np.triu(np.ones((d, d)), 1)
        kind = "asym" if d > 1 else "psd"
    elif kind == "nan":
        K = K.copy()
        K.flat[0] = math.nan
    elif kind == "complex":
        K = K + 0j
    elif kind == "shape":
        K = np.ones((d, d + 1))
    elif kind == "list":
        K = K.tolist()
    return kind, scale, K


factors_st = st.one_of(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=3).map(tuple),
    st.sampled_from([((0, "z", 2),), ((0, "z", 1), (0, "z", 1)), (), ((5, 0),), ((0, 2.5),), ("x",), ((0, "q", 1),)]),
)


def _expect(data: Any) -> None:
    kind, scale, K = data.draw(covariances())
    factors = data.draw(factors_st)
    act = data.draw(activations())
    kw = data.draw(st.fixed_dictionaries({}, optional={"order": st.sampled_from([None, 16, 0, 8.5, "8"])}))
    v = outcome(lambda: rgflow.expect(K, list(factors), act, **kw))
    if not isinstance(v, Exception):
        assert np.all(np.isfinite(v)), f"expect returned {v} for a {kind} covariance"
        if kind == "psd" and 1e-8 <= scale <= 1e8 and tuple(factors) == ((0, "z", 2),):
            assert v == pytest.approx(np.asarray(K)[0, 0], rel=1e-10)
    w = outcome(lambda: rgflow.expect_with_error(K, list(factors), act))
    if not isinstance(w, Exception):
        assert all(np.isfinite(u) for u in w[:2])


def _reference_expectation(data: Any) -> None:
    # scales up to 4 only: the reference's trapezoid step shrinks like 1/sqrt(K), so a 1e8-scale
    # block needs ~1e10 nodes (a memory-limit case, left to that part of the reliability work)
    kind, scale, K = data.draw(covariances(max_scale=4.0))
    assume_d = np.shape(K)[0] if np.ndim(K) == 2 else 1
    v = outcome(lambda: reference.gaussian_expectation(lambda z: z[:, 0] * z[:, -1], K))
    if isinstance(v, Exception):
        assert kind not in ("psd", "rank1", "zero", "list") or not math.isfinite(scale), f"{kind}: {v}"
        return
    assert kind in ("psd", "rank1", "zero", "list"), f"accepted a {kind} covariance: {v}"
    if 1e-8 <= scale <= 1e8:
        Ka = np.asarray(K, dtype=float)
        assert v == pytest.approx(Ka[0, assume_d - 1], rel=1e-8, abs=1e-12 * scale)


def _reference_theory(data: Any) -> None:
    net = data.draw(mlps())
    if isinstance(net, Exception):
        return
    x = data.draw(inputs())
    if np.ndim(x) == 2 and np.issubdtype(np.asarray(x).dtype, np.number):
        # inputs of scale > 3 only where they overflow: the reference's trapezoid step shrinks like
        # 1/sqrt(K), so large finite scales need ~1e10 nodes (memory limits: other work)
        with np.errstate(all="ignore"):
            big = np.nanmax(np.abs(np.asarray(x, dtype=complex))) if np.size(x) else 0.0
        if 3.0 < big < 1e150:
            x = np.asarray(x) / big
    kw = data.draw(st.fixed_dictionaries({}, optional={"order": st.sampled_from([0, 1, 2, 0.0, "1"])}))
    kw.setdefault("order", 0)  # order 1 of the reference is slow for custom activations
    th = outcome(lambda: reference.theory(net, x, **kw))
    if not isinstance(th, Exception):
        assert_finite_tensors(th)
        np.testing.assert_allclose(th.K[0], layer_one_kernel(net, x), rtol=1e-13, atol=0)


def _residual(data: Any) -> None:
    arch = data.draw(st.sampled_from(["resmlp", "preresnet"]))
    act = data.draw(activations())
    if arch == "resmlp":
        net = outcome(
            lambda: rgflow.ResMLP(
                act,
                depth=data.draw(small_int),
                width=data.draw(maybe_bad(st.integers(2, 4), int_like)),
                C_W=data.draw(positive),
                gamma=data.draw(maybe_bad(st.sampled_from([0.0, 0.5, 1.0]), odd_values)),
            )
        )
    else:
        net = outcome(
            lambda: rgflow.PreResNet(
                act,
                depth=data.draw(small_int),
                width=data.draw(maybe_bad(st.integers(2, 4), int_like)),
                eps=data.draw(maybe_bad(st.sampled_from([0.1, 0.5]), odd_values)),
                C_W=data.draw(positive),
            )
        )
    if isinstance(net, Exception):
        return
    x = data.draw(inputs())
    kw = data.draw(
        st.fixed_dictionaries({}, optional={"quad_order": st.sampled_from([None, 16, 2.5]), "every": st.just(1)})
    )
    if arch == "resmlp":
        kw.pop("every", None)
    th = outcome(lambda: rgflow.theory(net, x, **kw))
    if not isinstance(th, Exception):
        for v in th.tensors().values() if hasattr(th, "tensors") else (th.K,):
            assert np.all(np.isfinite(v))


# one small fixed family of theories and ensembles to compare (built once)
_PAIRS: dict[str, Any] = {}


def _pairs() -> dict[str, Any]:
    if not _PAIRS:
        x = np.array([[1.0, 0.0], [0.0, 2.0]])
        for name, net in {
            "tanh": rgflow.MLP("tanh", depth=2, width=3),
            "relu": rgflow.MLP("relu", depth=2, width=3, C_W=2.0),
            "tanh3": rgflow.MLP("tanh", depth=3, width=3),
        }.items():
            _PAIRS[f"th_{name}"] = rgflow.theory(net, x)
            _PAIRS[f"ens_{name}"] = rgflow.sample(net, x, **SMALL_SAMPLE)
        _PAIRS["th_tanh_x2"] = rgflow.theory(rgflow.MLP("tanh", depth=2, width=3), 2 * x)
        res = rgflow.ResMLP("tanh", depth=2, width=3, gamma=0.5)
        _PAIRS["th_res"] = rgflow.theory(res, x)
        _PAIRS["ens_res"] = rgflow.sample(res, x, **SMALL_SAMPLE)
        _PAIRS["junk"] = np.eye(2)
    return _PAIRS


def _compare(data: Any) -> None:
    objs = _pairs()
    if data.draw(st.booleans()):  # a matching pair
        name = data.draw(st.sampled_from(["tanh", "relu", "tanh3", "res"]))
        a, b = objs[f"th_{name}"], objs[f"ens_{name}"]
    else:
        a = objs[data.draw(st.sampled_from(sorted(objs)))]
        b = objs[data.draw(st.sampled_from(sorted(objs)))]
    good = st.sampled_from([None, None, ["K"], ["K", "V"]])
    tensors = data.draw(maybe_bad(good, st.sampled_from(["KV", ["Q"], ["X"], [], ["K", "K"], [1], "K"]), one_in=3))
    rows = outcome(lambda: rgflow.compare(a, b, tensors=tensors))
    if isinstance(rows, Exception):
        return
    same = (a is objs["th_tanh"] and b is objs["ens_tanh"]) or (a is objs["th_relu"] and b is objs["ens_relu"])
    same = same or (a is objs["th_tanh3"] and b is objs["ens_tanh3"]) or (a is objs["th_res"] and b is objs["ens_res"])
    assert same, "compare accepted a mismatched or swapped pair"
    assert rows and all(math.isfinite(r.z) or r.z == math.inf for r in rows)


def _criticality(data: Any) -> None:
    act = data.draw(activations())
    c = outcome(lambda: rgflow.critical(act))
    if not isinstance(c, Exception) and c.is_critical:
        assert c.C_W is not None and c.C_W > 0 and c.C_b is not None and c.C_b >= 0
    fp = outcome(lambda: rgflow.fixed_point(act, data.draw(hyper), data.draw(positive)))
    if not isinstance(fp, Exception) and getattr(fp, "K", None) is not None:
        assert math.isfinite(fp.K) and fp.K >= 0
    outcome(lambda: rgflow.susceptibilities(act, data.draw(hyper), data.draw(hyper), data.draw(positive)))


CLI_BASE: dict[str, dict[str, Any]] = {
    "network": {"activation": "tanh", "depth": 2, "C_b": 0.0, "C_W": 1.0},
    "inputs": {"generate": {"n": 2, "dim": 2, "seed": 0}},
    "theory": {"ntk": True, "order": 1},
    "ensemble": {"widths": [4], "networks": 64, "groups": 4, "seed": 0},
}
CLI_KEYS = [
    ("network", "activation"),
    ("network", "depth"),
    ("network", "C_W"),
    ("network", "C_b"),
    ("network", "critical"),
    ("network", "architecture"),
    ("inputs", "generate"),
    ("inputs", "kernel"),
    ("inputs", "file"),
    ("theory", "ntk"),
    ("theory", "order"),
    ("theory", "quad_order"),
    ("ensemble", "widths"),
    ("ensemble", "networks"),
    ("ensemble", "groups"),
    ("ensemble", "backend"),
    ("ensemble", "dtype"),
]
cli_values = st.sampled_from(
    [True, False, 0, 1, 2, -1, 2.5, 1e300, "tanh", "sigmoid", "no", "", [], [4, 8], [[4]], {}, {"n": 2}, "x.txt",
     "mlp", "resmlp", "float32", [[1.0, 2.0], [2.0, 1.0]], math.nan]
)  # fmt: skip


def _cli_config(data: Any) -> None:
    raw = {k: dict(v) for k, v in CLI_BASE.items()}
    for _ in range(data.draw(st.integers(0, 2))):
        sec, key = data.draw(st.sampled_from(CLI_KEYS))
        raw[sec][key] = data.draw(cli_values)
        if key == "critical" or sec == "inputs":
            for k in ("C_b", "C_W") if key == "critical" else ("generate",):
                if k != key:
                    raw[sec].pop(k, None)
    spec = outcome(lambda: rgflow.cli.config_from_dict(raw))
    if isinstance(spec, Exception):
        assert isinstance(spec, rgflow.cli.ConfigError), f"not a configuration error: {spec!r}"


ENTRY_POINTS = {
    "cli config": _cli_config,
    "MLP": _mlp_constructor,
    "theory": _theory,
    "sample": _sample,
    "expect": _expect,
    "reference.gaussian_expectation": _reference_expectation,
    "reference.theory": _reference_theory,
    "residual theory": _residual,
    "compare": _compare,
    "criticality": _criticality,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@settings(max_examples=FAST, **SETTINGS)
@given(data=st.data())
def test_fuzz(entry: str, data: Any) -> None:
    ENTRY_POINTS[entry](data)


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@settings(max_examples=SLOW, **SETTINGS)
@given(data=st.data())
def test_fuzz_slow(entry: str, data: Any) -> None:
    ENTRY_POINTS[entry](data)
