"""Predictions from lean theories (issue 13 part 6; spec ``learning.md`` §10): the output layer only,
only the families a prediction reads, only the tuples with at most one test index — equal to the
dense all-layer prediction; the dNTK family streamed through the layers (``dntk=True`` with
``layers=``/``tensors=``) equal to the dense run; the errors that name what is missing."""

from __future__ import annotations

import numpy as np
import pytest

import rgflow
from rgflow import learning as lg
from rgflow.learning._finite_gd import _perm, contract6, rotate
from rgflow.recursions._mlp import theory_memory

NA, NB = 5, 3
TR, TE = np.arange(NA), np.arange(NA, NA + NB)
ALL = ("K", "Theta", "Theta1", "A", "B", "P", "Q", "R", "S", "T", "U")


def _x(n: int = NA + NB, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def _y(n_out: int = 2) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(NA, n_out))


@pytest.fixture(scope="module")
def net() -> rgflow.MLP:
    return rgflow.MLP.critical("gelu", depth=3, width=32, learning_rates="constant")


@pytest.fixture(scope="module")
def dense(net: rgflow.MLP) -> rgflow.Theory:
    return rgflow.theory(net, _x(), dntk=True)


@pytest.mark.parametrize(("kind", "order"), [("bayes", 0), ("bayes", 1), ("gd", 0), ("gd", 1)])
def test_lean_theory_predicts_what_the_dense_one_does(
    net: rgflow.MLP, dense: rgflow.Theory, kind: str, order: int
) -> None:
    th = rgflow.prediction_theory(net, _x(), TR, TE, kind=kind, order=order)
    assert th.layers == (3,) and th.V is None if kind == "gd" else th.layers == (3,)
    assert set(th.tensors()) == set(lg.prediction_tensors(kind, order))
    want = rgflow.predict(dense, _y(), TR, TE, kind=kind, order=order)
    got = rgflow.predict(th, _y(), TR, TE, kind=kind, order=order)
    assert np.abs(got.mean - want.mean).max() <= 1e-12
    assert np.abs(got.cov - want.cov).max() <= 1e-12
    for k, v in want.pieces.items():
        assert np.abs(got.pieces[k] - v).max() <= 1e-12, k
    if order == 1:
        assert np.abs(want.mean_correction).max() > 1e-3  # a real correction is compared


def test_at_most_one_test_index_tuples_suffice_for_the_bayes_mean(net: rgflow.MLP, dense: rgflow.Theory) -> None:
    th = rgflow.prediction_theory(net, _x(), TR, TE, kind="bayes", order=1, tuples=True)
    assert th.tuples is not None and len(th.tuples) == NA**4 + 4 * NB * NA**3
    m = 17
    np.testing.assert_array_equal(th.V[0, m], dense.V[-1][tuple(th.tuples[m])])
    want = rgflow.predict(dense, _y(), TR, TE, order=1)
    got = rgflow.predict(th, _y(), TR, TE, order=1)
    assert np.abs(got.mean - want.mean).max() <= 1e-12
    # any other order of the same tuples (the generic lookup): a permuted training set, tuples shuffled
    tr, te = TR[::-1], TE[[2, 0, 1]]
    tup = rgflow.tuples_at_most_one(tr, te)[np.random.default_rng(0).permutation(len(th.tuples))]
    th2 = rgflow.theory(net, _x(), ntk=False, layers=[-1], tensors=["K", "K1", "V"], tuples=tup)
    y2 = _y()[::-1]
    want = rgflow.predict(dense, y2, tr, te, order=1)
    assert np.abs(rgflow.predict(th2, y2, tr, te, order=1).mean - want.mean).max() <= 1e-12


def test_last_layer_gd_needs_no_dntk_and_works_on_tuples(dense: rgflow.Theory) -> None:
    cp = rgflow.critical("gelu")
    net = rgflow.MLP("gelu", depth=3, width=32, C_b=cp.C_b, C_W=cp.C_W, lambda_b=[0, 0, 1], lambda_W=[0, 0, 1])
    full = rgflow.theory(net, _x())
    want = rgflow.predict(full, _y(), TR, TE, kind="gd", order=1)
    for tuples in (False, True):
        th = rgflow.prediction_theory(net, _x(), TR, TE, kind="gd", order=1, tuples=tuples)
        assert th.P is None and (th.tuples is not None) == tuples
        got = rgflow.predict(th, _y(), TR, TE, kind="gd", order=1)
        assert np.abs(got.mean - want.mean).max() <= 1e-12


def test_missing_pieces_name_the_theory_call(net: rgflow.MLP) -> None:
    x, y = _x(), _y()
    only_k = rgflow.theory(net, x, ntk=False, layers=[-1], tensors=["K"])
    with pytest.raises(ValueError, match=r"no K1, V.*tensors=\['K', 'K1', 'V'\].*prediction_theory"):
        rgflow.predict(only_k, y, TR, TE, order=1)
    first = rgflow.theory(net, x, ntk=False, layers=[1], tensors=["K", "K1", "V"])
    with pytest.raises(ValueError, match=r"not the output layer 3.*layers=\[-1\]"):
        rgflow.predict(first, y, TR, TE, order=1)
    short = rgflow.theory(
        net, x, ntk=False, layers=[-1], tensors=["K", "K1", "V"], tuples=rgflow.tuples_at_most_one(TR[:-1], TE)
    )
    with pytest.raises(ValueError, match=r"lack the tuple .* of V.*tuples_at_most_one\(train, test\)"):
        rgflow.predict(short, y, TR, TE, order=1)
    with pytest.raises(ValueError, match="method='book'.*tuples"):
        rgflow.predict(rgflow.prediction_theory(net, x, TR, TE, tuples=True), y, TR, TE, order=1, method="book")
    no_dntk = rgflow.theory(net, x, layers=[-1], tensors=["K", "Theta", "Theta1", "A", "B"])
    with pytest.raises(ValueError, match=r"no P, Q, R, S, T, U.*dntk=True.*tensors="):
        rgflow.predict(no_dntk, y, TR, TE, kind="gd", order=1)
    no_th1 = rgflow.theory(net, x, dntk=True, layers=[-1], tensors=["K", "Theta", "A", "B", "P", "Q"])
    with pytest.raises(ValueError, match=r"no Theta1.*Theta1"):
        rgflow.predict(no_th1, y, TR, TE, kind="gd", order=1)
    # theta1=False needs no Theta1, but R, S, T, U
    with pytest.raises(ValueError, match=r"no R, S, T, U"):
        rgflow.predict(no_th1, y, TR, TE, kind="gd", order=1, theta1=False)


def test_prediction_theory_bad_arguments(net: rgflow.MLP) -> None:
    x = _x()
    with pytest.raises(ValueError, match="tuples=True is not available.*dNTK"):
        rgflow.prediction_theory(net, x, TR, TE, kind="gd", order=1, tuples=True)
    with pytest.raises(ValueError, match="method='book'"):
        rgflow.prediction_theory(net, x, TR, TE, order=1, method="book", tuples=True)
    with pytest.raises(ValueError, match="kinked activation 'relu'"):
        rgflow.prediction_theory(rgflow.MLP.critical("relu", depth=3, width=8), x, TR, TE, kind="gd", order=1)
    with pytest.raises(TypeError, match=r"unexpected options \['layers'\]"):
        rgflow.prediction_theory(net, x, TR, TE, layers=[1])
    with pytest.raises(ValueError, match="kind must be"):
        rgflow.prediction_theory(net, x, TR, TE, kind="sgd")
    with pytest.raises(ValueError, match="test has indices out of range"):
        rgflow.prediction_theory(net, x, TR, [NA + NB])
    with pytest.raises(TypeError, match="rgflow.MLP"):
        rgflow.prediction_theory("net", x, TR, TE)  # type: ignore[arg-type]


def test_dntk_streams_through_layers_and_families(net: rgflow.MLP, dense: rgflow.Theory) -> None:
    x = _x()
    th = rgflow.theory(net, x, dntk=True, layers=[-1], tensors=["R", "T", "K"])
    assert th.layers == (3,) and th.P is None and th.Q is None and th.S is None and th.V is None
    for k in ("R", "T", "K"):
        assert np.abs(getattr(th, k)[0] - getattr(dense, k)[-1]).max() <= 1e-14, k
    th = rgflow.theory(net, x, dntk=True, layers=[1, 3])
    for k in ALL:
        assert np.abs(getattr(th, k) - getattr(dense, k)[[0, 2]]).max() <= 1e-14, k
    assert np.abs(dense.R[-1]).max() > 1e-2  # nonzero tensors are compared


def test_dntk_streaming_kinked_and_errors() -> None:
    x = _x(4)
    relu = rgflow.MLP.critical("relu", depth=3, width=8)
    with pytest.warns(RuntimeWarning, match="not defined for the kinked"):
        dense = rgflow.theory(relu, x, dntk=True)
    with pytest.warns(RuntimeWarning, match="not defined for the kinked"):
        th = rgflow.theory(relu, x, dntk=True, layers=[-1], tensors=["P", "R"])
    np.testing.assert_array_equal(th.P[0], dense.P[-1])
    assert th.R is not None and np.all(np.isnan(th.R)) and th.R.shape == (1, 4, 4, 4, 4) and th.S is None
    gelu = rgflow.MLP.critical("gelu", depth=2, width=8)
    with pytest.raises(ValueError, match="'P' belongs to the dNTK family: it needs dntk=True"):
        rgflow.theory(gelu, x, tensors=["K", "P"])
    with pytest.raises(ValueError, match="not supported with tuples="):
        rgflow.theory(gelu, x, dntk=True, tuples=[[0, 1, 2, 3]])


def test_dntk_memory_estimate_streams() -> None:
    full = theory_memory(64, 64, 6, True, 1, True, False)
    last = theory_memory(64, 64, 6, True, 1, True, False, n_layers=1, tensors=ALL)
    pq = theory_memory(64, 64, 6, True, 1, True, False, n_layers=1, tensors=("K", "P", "Q"))
    n4 = 8.0 * 64**4
    assert full > 60 * n4 and 8 * n4 < last < full / 2 and pq < last / 2


def test_eigenbasis_contraction_equals_the_dense_projectors() -> None:
    """contract6 (no N_A⁶ tensor) against the dense projector for every relabelling the ddNTK terms use."""
    rng = np.random.default_rng(3)
    M, rows, n_out = 4, 3, 2
    A = rng.normal(size=(M, M + 2))
    Z = lg.projectors(A @ A.T / M + 0.3 * np.eye(M), 0.1, "gd")
    X, Y = rng.normal(size=(rows, M, M, M)), rng.normal(size=(n_out, M, M, M))
    Yr = rotate(Y, Z.vecs)
    for name in ("Z_IA", "Z_IB", "Z_IIA", "Z_IIB"):
        for spec in ("123456", "231564", "312645", "123564", "123645"):
            want = np.einsum("dabc,abcefg,iefg->di", X, _perm(Z.dense(name), spec), Y)
            got = contract6(X, Z.f[name], Yr, Z.vecs, spec)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_train_reuses_the_initial_outputs_of_the_empirical_ntk() -> None:
    """aux_networks > 0 takes z(0) from the empirical-NTK pass: the same networks, the same control variate."""
    net = rgflow.MLP.critical("tanh", depth=2, width=8, learning_rates="constant")
    x, y = _x(5), _y()[:3]
    tr, te = np.arange(3), np.arange(3, 5)
    a = rgflow.train(net, x, y, tr, te, networks=8, groups=4, aux_networks=0, seed=2, backend="numpy", steps=30)
    b = rgflow.train(net, x, y, tr, te, networks=8, groups=4, aux_networks=8, seed=2, backend="numpy", steps=30)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_allclose(b.mean_cv, a.mean_cv, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(b.stderr_cv, a.stderr_cv, rtol=1e-10)
    assert np.abs(a.mean - a.mean_cv).max() > 1e-3  # the control variate is not trivial
