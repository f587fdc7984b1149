"""Bad and extreme inputs: a clear error (naming the argument, the value and the fix) or a
correct result -- never a silent coercion, a silently wrong number or a misleading message.

One test per class of the reliability review (silent overflow, mismatched objects, the numpy
reference's covariance checks, silent coercion, messages), each with the cases it listed; the
randomised version over every entry point is ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import rgflow
from rgflow.cli import main
from rgflow.testing import reference

X = np.array([[0.9, -0.4], [0.3, 1.1]])
SMALL = {"networks": 64, "groups": 4, "progress": False}


@pytest.fixture(scope="module")
def tanh_pair():
    net = rgflow.MLP("tanh", depth=2, width=4)
    return net, rgflow.theory(net, X), rgflow.sample(net, X, **SMALL)


@pytest.fixture(scope="module")
def relu_theory():
    return rgflow.theory(rgflow.MLP("relu", depth=2, width=4, C_W=2.0), X)


# ------------------------------------------------------------------------------ 1. overflow


@pytest.mark.parametrize("call", ["theory", "sample", "reference"])
def test_overflowing_C_W_names_C_W(call):
    net = rgflow.MLP("tanh", depth=3, width=4, C_W=1e300)
    f = {
        "theory": lambda: rgflow.theory(net, X),
        "sample": lambda: rgflow.sample(net, X, **SMALL),
        "reference": lambda: reference.theory(net, X, order=0),
    }[call]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any numpy overflow warning
        with pytest.raises(ValueError, match=r"C_W = 1e\+300.*reduce C_W"):
            f()


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_overflowing_inputs_name_the_inputs_not_C_W(act):
    net = rgflow.MLP(act, depth=2, width=4)
    for f in (lambda: rgflow.theory(net, X * 1e200), lambda: rgflow.sample(net, X * 1e200, **SMALL)):
        with pytest.raises(ValueError, match=r"the inputs overflow.*rescale x") as err:
            f()
        assert "reduce depth" not in str(err.value)


def test_inputs_times_C_W_overflow_names_both():
    net = rgflow.MLP("tanh", depth=2, width=4, C_W=1e200)
    with pytest.raises(ValueError, match=r"inputs times C_W overflow at layer 1.*C_W\[layer 1\] = 1e\+200"):
        rgflow.theory(net, X * 1e60)


def test_activation_with_huge_values_names_the_activation():
    big = rgflow.Activation.from_callable(
        lambda z: 1e300 * np.tanh(z), derivatives=[lambda z: 1e300 / np.cosh(z) ** 2], name="bigtanh"
    )
    net = rgflow.MLP(big, depth=3, width=4)
    for f in (lambda: rgflow.theory(net, X, order=0), lambda: rgflow.sample(net, X, **SMALL)):
        with pytest.raises(ValueError, match=r"custom activation 'bigtanh' overflows"):
            f()


def test_finite_large_but_representable_scales_still_work():
    # K ~ C_W² ~ 1e100 at layer 2 keeps V ~ K² finite: a correct (large) result, not an error
    net = rgflow.MLP("relu", depth=2, width=4, C_W=1e50)
    th = rgflow.theory(net, X)
    assert all(np.all(np.isfinite(v)) for v in th.tensors().values())
    np.testing.assert_allclose(th.K[0], 1e50 * X @ X.T / 2, rtol=1e-15)
    np.testing.assert_allclose(th.K[1].diagonal(), 1e50 * th.K[0].diagonal() / 2, rtol=1e-14)


# ------------------------------------------------------------------------------ 1. mismatched objects


def test_sample_with_the_theory_of_another_network_raises(tanh_pair, relu_theory):
    net, _, _ = tanh_pair
    with pytest.raises(ValueError, match=r"different networks: (C_W|activation) differs"):
        rgflow.sample(net, X, theory=relu_theory, **SMALL)


def test_sample_with_a_theory_on_other_inputs_raises(tanh_pair):
    net, th, _ = tanh_pair
    x2 = X.copy()
    x2[0, 0] = np.nextafter(x2[0, 0], 2.0)  # one bit
    with pytest.raises(ValueError, match="different inputs"):
        rgflow.sample(net, x2, theory=th, **SMALL)


def test_sample_accepts_the_theory_at_another_width():
    # K and Theta at infinite width do not depend on the hidden widths
    th = rgflow.theory(rgflow.MLP("tanh", depth=2, width=4), X, order=0)
    ens = rgflow.sample(rgflow.MLP("tanh", depth=2, width=8), X, theory=th, **SMALL)
    assert ens.K1 is not None


def test_compare_mismatched_networks_or_inputs_raises(tanh_pair, relu_theory):
    net, th, ens = tanh_pair
    with pytest.raises(ValueError, match=r"rgflow.compare: .*different networks"):
        rgflow.compare(relu_theory, ens)
    th2 = rgflow.theory(net, X[::-1].copy())
    with pytest.raises(ValueError, match="different inputs"):
        rgflow.compare(th2, ens)
    # unequal width ratios change the first-order tensors
    th3 = rgflow.theory(rgflow.MLP("tanh", depth=3, widths=[4, 8]), X)
    ens3 = rgflow.sample(rgflow.MLP("tanh", depth=3, widths=[4, 4]), X, **SMALL)
    with pytest.raises(ValueError, match="width ratios"):
        rgflow.compare(th3, ens3)


def test_compare_swapped_arguments_say_so(tanh_pair):
    _, th, ens = tanh_pair
    with pytest.raises(TypeError, match=r"takes the theory first.*rgflow.compare\(th, ens\)"):
        rgflow.compare(ens, th)
    with pytest.raises(TypeError, match="supports"):
        rgflow.compare(th, th)


# ------------------------------------------------------------------------------ 1. numpy reference


def test_reference_validates_covariances_like_the_core():
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="positive semi-definite"):
        rgflow.expect(bad, [(0, "z", 1), (1, "z", 1)], "tanh")
    with pytest.raises(ValueError, match="positive semi-definite"):
        reference.gaussian_expectation(lambda z: z[:, 0] * z[:, 1], bad)
    for K in (np.array([[np.nan]]), np.array([[1.0, np.inf], [np.inf, 1.0]])):
        for f in (
            lambda K=K: reference.gaussian_expectation(lambda z: z[:, 0], K),
            lambda K=K: rgflow.expect(K, [(0, 0)], "tanh"),
        ):
            with pytest.raises(ValueError, match="NaN or inf") as err:
                f()
            assert "C_W" not in str(err.value)
    with pytest.raises(ValueError, match="symmetric"):
        reference.gaussian_expectation(lambda z: z[:, 0], np.array([[1.0, 0.5], [0.0, 1.0]]))
    # a valid one still gives the right number
    assert reference.gaussian_expectation(lambda z: z[:, 0] * z[:, 1], [[1.0, 0.3], [0.3, 2.0]]) == pytest.approx(0.3)


# ------------------------------------------------------------------------------ 5. no silent coercion


@pytest.mark.parametrize(
    "f",
    [
        lambda: rgflow.theory(rgflow.MLP("tanh", depth=2, width=4), X + 1j),
        lambda: rgflow.sample(rgflow.MLP("tanh", depth=2, width=4), X + 0j, **SMALL),
        lambda: rgflow.expect(np.eye(1) + 0j, [(0, 0)], "tanh"),
        lambda: rgflow.expect_with_error(np.eye(1) + 0j, [(0, 0)], "tanh"),
        lambda: reference.gaussian_expectation(lambda z: z[:, 0] ** 2, np.eye(1) + 0j),
        lambda: reference.theory(rgflow.MLP("tanh", depth=2, width=4), X + 0j),
        lambda: rgflow.Activation.from_callable(lambda z: np.tanh(z) + 1j * z),
        lambda: rgflow.Activation.from_callable(np.tanh, derivatives=[lambda z: (1 / np.cosh(z) ** 2).astype(complex)]),
    ],
    ids=["theory-x", "sample-x", "expect-K", "expect_with_error-K", "ref-K", "ref-x", "custom-f", "custom-f1"],
)
def test_complex_is_a_type_error(f):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning either
        with pytest.raises(TypeError, match="complex"):
            f()


def test_string_and_boolean_arrays_are_not_parsed():
    net = rgflow.MLP("tanh", depth=2, width=4)
    with pytest.raises(TypeError, match="real numbers"):
        rgflow.theory(net, [["1", "2"]])
    with pytest.raises(TypeError, match="real numbers"):
        rgflow.theory(net, np.ones((2, 2), dtype=bool))


@pytest.mark.parametrize(
    ("call", "kw", "name"),
    [
        ("theory", {"order": 2.5}, "order"),
        ("theory", {"order": "5"}, "order"),
        ("theory", {"order": 1.0}, "order"),
        ("theory", {"quad_order": 8.5}, "quad_order"),
        ("theory", {"ntk": "no"}, "ntk"),
        ("theory", {"ntk": 0}, "ntk"),
        ("theory", {"dntk": "yes"}, "dntk"),
        ("sample", {"ntk": "no"}, "ntk"),
        ("sample", {"progress": "no"}, "progress"),
        ("sample", {"networks": 64.0}, "networks"),
        ("res", {"corrected": "no"}, "corrected"),
        ("res", {"order": 0.5}, "order"),
        ("expect", {"order": 8.5}, "order"),
        ("reference", {"quad_order": 8.5}, "quad_order"),
        ("reference", {"ntk": "no"}, "ntk"),
    ],
)
def test_no_silent_coercion_of_options(call, kw, name):
    net = rgflow.MLP("tanh", depth=2, width=4)
    f = {
        "theory": lambda: rgflow.theory(net, X, **kw),
        "sample": lambda: rgflow.sample(net, X, **{**SMALL, **kw}),
        "res": lambda: rgflow.theory(rgflow.ResMLP("tanh", depth=2, width=4), X, **kw),
        "expect": lambda: rgflow.expect(np.eye(1), [(0, 0)], "tanh", **kw),
        "reference": lambda: reference.theory(net, X, **kw),
    }[call]
    with pytest.raises(TypeError, match=rf"{name} must be .*got {name}={kw[name]!r}"):
        f()


@pytest.mark.parametrize(
    "kw", [{"out_width": 2.5}, {"width": 4.0}, {"widths": [4.5]}, {"C_W": "1.0"}, {"C_b": [True, 0.0]}, {"C_W": 1j}]
)
def test_network_arguments_are_not_coerced(kw):
    base = {"depth": 2, "width": 4}
    if "widths" in kw:
        base.pop("width")
    with pytest.raises(TypeError, match=next(iter(kw))):
        rgflow.MLP("tanh", **{**base, **kw})


def test_compare_tensor_names_are_validated(tanh_pair):
    _, th, ens = tanh_pair
    with pytest.raises(TypeError, match=r"tensors=\['K', 'V'\]"):
        rgflow.compare(th, ens, tensors="KV")
    with pytest.raises(ValueError, match=r"\['Q'\] not computed by both.*dntk=True"):
        rgflow.compare(th, ens, tensors=["Q"])
    with pytest.raises(ValueError, match="unknown name 'X'"):
        rgflow.compare(th, ens, tensors=["K", "X"])
    rows = rgflow.compare(th, ens, tensors=["K", "V"])
    assert [r.tensor for r in rows] == ["K", "K", "V", "V"]


def test_suspicious_accuracy_options_warn():
    net = rgflow.MLP("tanh", depth=2, width=4)
    with pytest.warns(UserWarning, match="quad_order=1: fewer than 4 quadrature nodes"):
        rgflow.theory(net, X, quad_order=1)
    pre = rgflow.PreResNet("tanh", depth=4, width=8)
    with pytest.warns(UserWarning, match="rtol=10"):
        rgflow.theory(pre, X, rtol=10)
    with pytest.raises(ValueError, match="rtol > 0"):
        rgflow.theory(pre, X, rtol=-1.0)


# ------------------------------------------------------------------------------ 6. messages / CLI


def _run_cli(tmp_path: Path, network: str, inputs: str, capsys) -> str:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[network]\n{network}\n[inputs]\n{inputs}\n[ensemble]\nwidths = [8]\nnetworks = 64\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-plots", "--quiet"])
    assert code != 0
    return capsys.readouterr().err


def test_cli_text_inputs_file_is_not_called_pickled(tmp_path, capsys):
    txt = tmp_path / "x.txt"
    txt.write_text("1 2 3\n4 5 6\n")
    err = _run_cli(tmp_path, 'activation = "tanh"\ndepth = 2\ncritical = true', f'file = "{txt}"', capsys)
    assert "inputs.file" in err and "numpy.save" in err
    assert "pickle" not in err and "allow_pickle" not in err


def test_cli_critical_without_a_critical_point_says_why(tmp_path, capsys):
    err = _run_cli(
        tmp_path, 'activation = "sigmoid"\ndepth = 2\ncritical = true', "generate = {n = 2, dim = 2}", capsys
    )
    assert "network.critical" in err and "no critical point" in err and "C_b" in err
    assert "NoneType" not in err


# ------------------------------------------------------------------------------ found by the fuzz suite


def test_expectation_that_overflows_float64_raises():
    with pytest.raises(ValueError, match=r"not finite in float64.*max \|K\| = 1e\+300"):
        rgflow.expect(np.eye(3) * 1e300, [(0, 0), (0, 0), (0, 0)], "relu")
    with pytest.raises(ValueError, match="not finite in float64"):
        rgflow.expect_with_error(np.eye(1) * 1e300, [(0, 0), (0, 0), (0, 0)], "relu")


def test_criticality_arguments_are_not_coerced():
    with pytest.raises(TypeError, match=r"C_W must be a real number, got C_W=1j"):
        rgflow.fixed_point("tanh", 0.0, 1j)
    with pytest.raises(TypeError, match="C_b must be a real number"):
        rgflow.fixed_point("tanh", "0.1", 1.0)
    with pytest.raises(TypeError, match="K is complex"):
        rgflow.susceptibilities("tanh", 1j, 0.0, 1.0)
    with pytest.raises(TypeError, match="activation parameter slope"):
        rgflow.Activation("leaky_relu", slope="0.1")


def test_learning_arguments_and_mismatched_theory():
    net = rgflow.MLP("tanh", depth=2, width=4)
    x = np.array([[0.9, -0.4], [0.3, 1.1], [-0.5, 0.2]])
    th = rgflow.theory(net, x)
    y = np.array([[0.5], [-0.2]])
    with pytest.raises(TypeError, match="order must be an int"):
        rgflow.predict(th, y, [0, 1], [2], order=1.0)
    with pytest.raises(TypeError, match="theta1 must be True or False"):
        rgflow.predict(th, y, [0, 1], [2], kind="gd", order=1, theta1="no")
    with pytest.raises(TypeError, match="y is complex"):
        rgflow.predict(th, y + 0j, [0, 1], [2])
    other = rgflow.theory(rgflow.MLP("relu", depth=2, width=4, C_W=2.0), x)
    with pytest.raises(ValueError, match=r"rgflow.train\(theory=\): .*different networks"):
        rgflow.train(net, x, y, [0, 1], [2], networks=8, groups=2, theory=other)
