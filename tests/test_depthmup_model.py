"""The depth-μP ResNet specification (nfd.md §1): parametrisation, learning-rate rule, validation."""

import math

import pytest

import rgflow


def test_branch_and_learning_rates_follow_the_spec_rule():
    net = rgflow.DepthMuPResNet("tanh", depth=16, width=256, gamma0=2.0)
    assert net.branch_multiplier == pytest.approx(1 / 4)  # √(T/L), T = 1
    assert net.block_variance == pytest.approx(1 / 16)
    for group in ("input", "hidden", "readout"):  # η γ0² n for every group, depth exponent 0 (§1.2)
        assert net.learning_rate(group, 0.1) == pytest.approx(0.1 * 4 * 256)
    lin = net.with_(branch="linear", horizon=2.0)
    assert lin.branch_multiplier == pytest.approx(2 / 16)
    frozen = net.with_(train=("hidden", "readout"), hidden_lr_depth_power=0.5)
    assert frozen.learning_rate("input", 0.1) == 0.0
    assert frozen.learning_rate("hidden", 0.1) == pytest.approx(0.1 * 4 * 256 / math.sqrt(16))


def test_decoupled_twin_differs_only_in_backward():
    net = rgflow.DepthMuPResNet("relu", depth=8, width=64)
    twin = net.decoupled()
    assert twin.backward == "decoupled" and net.backward == "coupled"
    assert twin.with_(backward="coupled") == net
    assert twin != net


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"depth": 0}, ValueError, "depth"),
        ({"width": -3}, ValueError, "width"),
        ({"gamma0": 0.0}, ValueError, "gamma0"),
        ({"gamma0": float("nan")}, ValueError, "gamma0"),
        ({"branch": "cube"}, ValueError, "branch"),
        ({"train": "hidden"}, TypeError, "train"),
        ({"train": ("hidden", "bias")}, ValueError, "bias"),
        ({"horizon": -1.0}, ValueError, "horizon"),
        ({"depth": 2.5}, TypeError, "depth"),
    ],
)
def test_bad_parameters_are_refused_with_the_argument_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rgflow.DepthMuPResNet("tanh", **kwargs)
