"""Computations that would run for minutes are refused up front (or stop) with an error stating
the estimated cost and the limit and how to raise it (issue 16, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

import rgflow
from rgflow._util.limits import DEFAULT_MAX_EVALUATIONS, max_evaluations
from rgflow.gauss import expect, sigma
from rgflow.recursions._mlp import theory_cost

K5 = 0.5 * np.eye(5) + 0.5


def test_the_default_limit() -> None:
    assert max_evaluations() == DEFAULT_MAX_EVALUATIONS == 1e8


def test_expect_over_five_tanh_samples_stops_raising_the_order_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # (the default limit 1e8 stops this case before order 21, after ~10 s; 1e6 before order 9)
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "1e6")
    with pytest.raises(
        ValueError,
        match=r"adaptive rule has not reached tol = 1\.0e-12 at order 6 .* order 9 would bring its estimated cost "
        r"to 2\.\d+e\+?0?6 quadrature nodes over 5 dimensions, above the limit 1\.00e\+?0?6.*RGFLOW_MAX_EVALUATIONS",
    ):
        expect(K5, [sigma(i, 1) for i in range(5)], "tanh")


def test_expect_over_eight_relu_samples_is_refused_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "1e6")
    K = 0.5 * np.eye(8) + 0.5
    with pytest.raises(ValueError, match=r"estimated cost .* 8-dimensional nested rule at order 4 exceeds the limit"):
        expect(K, [sigma(i) for i in range(8)], "relu")


def test_the_limit_is_raised_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    K = 0.5 * np.eye(4) + 0.5
    factors = [sigma(i, 1) for i in range(4)]
    ref = expect(K, factors, "tanh", order=8)
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "1e4")  # (2·8)^4 = 65536 nodes
    with pytest.raises(ValueError, match=r"6\.55e\+?0?4 quadrature nodes .* limit 1\.00e\+?0?4"):
        expect(K, factors, "tanh", order=8)
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "1e5")
    assert expect(K, factors, "tanh", order=8) == ref
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "lots")
    with pytest.raises(ValueError, match="RGFLOW_MAX_EVALUATIONS='lots' is not a number"):
        expect(K, factors, "tanh", order=8)


def test_theory_with_a_huge_quadrature_order_is_refused() -> None:
    net = rgflow.MLP("tanh", depth=3, width=8)
    x = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValueError, match=r"quad_order must be <= 320"):
        rgflow.theory(net, x, quad_order=10**6)
    with pytest.raises(ValueError, match=r"estimated cost 3\.9\de\+12 quadrature nodes exceeds the limit"):
        rgflow.theory(net, x, quad_order=300)


def test_theory_cost_counts_multisets_by_distinct_samples() -> None:
    # n = 4, one layer step, q = 1: k distinct of 4 samples in C(4,k)·C(3,k-1) multisets, 2^k nodes
    assert theory_cost(4, 2, 1) == 4 * 2 + 6 * 3 * 4 + 4 * 3 * 8 + 1 * 16


def test_a_blowing_up_preresnet_stops_with_an_error_naming_it() -> None:
    net = rgflow.PreResNet("relu", eps=10.0, depth=10, width=8)
    with pytest.raises(ValueError, match="blows up at t = "):
        rgflow.theory(net, np.random.default_rng(0).normal(size=(2, 3)))
