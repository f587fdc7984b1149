"""Memory bounded by what is asked (issue 14 parts 2-3): ``rgflow.theory(mlp, x, layers=,
tensors=, tuples=)`` returns exactly the entries of the dense all-layer run (the same floating
point operations on the same inputs: equal to the last bit, asserted to 1e-14), whatever tuple
set, order, split or thread count they were computed in."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rgflow
from rgflow.recursions._mlp import theory_memory

ROOT = Path(__file__).resolve().parents[1]
FOUR = ("V", "D", "F", "A", "B")
TWO = ("K", "K1", "Theta", "Theta1")
N, DEPTH = 4, 4


def _net(act: str, depth: int = DEPTH) -> rgflow.MLP:
    return rgflow.MLP(depth=depth, width=10, activation=act, C_W=2.0 if act == "relu" else 1.5, C_b=0.1)


def _x(n: int = N) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, 3))


@functools.cache
def _dense(act: str) -> rgflow.Theory:
    return rgflow.theory(_net(act), _x())


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14 * max(1.0, float(np.max(np.abs(ref)))))


def _check_tuples(th: rgflow.Theory, dense: rgflow.Theory, tuples: np.ndarray) -> None:
    rows = [ell - 1 for ell in th.layers]
    a, b, c, d = tuples.T
    for k in FOUR:
        _close(getattr(th, k), getattr(dense, k)[rows][:, a, b, c, d])
    for k in TWO:
        _close(getattr(th, k), getattr(dense, k)[rows])


@pytest.mark.parametrize("act", ["gelu", "relu", "tanh"])
def test_tuples_and_layers_equal_the_dense_run(act: str) -> None:
    dense = _dense(act)
    T = np.random.default_rng(1).integers(0, N, size=(40, 4))
    T = np.concatenate([T, [[0, 0, 0, 0], [1, 2, 1, 2], [3, 3, 2, 2]], T[:3]])  # degenerate tuples, duplicates
    th = rgflow.theory(_net(act), _x(), tuples=T, layers=[2, -1])
    assert th.layers == (2, DEPTH) and th.tuples is not None and th.V is not None
    assert th.V.shape == (2, len(T)) and th.K.shape == (2, N, N)
    _check_tuples(th, dense, T)
    # every layer, dense, only some families
    part = rgflow.theory(_net(act), _x(), layers=[-1], tensors=["A", "Theta1"])
    assert part.layers == (DEPTH,) and part.V is None and part.B is None and part.K1 is None
    _close(part.A, dense.A[-1:])  # type: ignore[arg-type, index]
    _close(part.Theta1, dense.Theta1[-1:])  # type: ignore[arg-type, index]
    _close(part.K, dense.K[-1:])


@pytest.mark.parametrize("act", ["gelu", "relu", "tanh"])
def test_two_point_only_equals_the_dense_run_without_the_dense_space(act: str) -> None:
    """tensors= with only two-point families propagates the pairs' own tuples, not all N⁴: the
    same numbers bit for bit, no four-point family, and a dense-looking result (tuples None)."""
    dense = _dense(act)
    th = rgflow.theory(_net(act), _x(), tensors=["K1", "Theta1"], layers=[2, -1])
    assert th.tuples is None and th.layers == (2, DEPTH)
    assert all(getattr(th, k) is None for k in FOUR)
    for k in ("K", "K1", "Theta1"):
        np.testing.assert_array_equal(getattr(th, k), getattr(dense, k)[[1, DEPTH - 1]])


@settings(max_examples=12, deadline=None)
@given(
    rows=st.lists(st.tuples(*[st.integers(0, 3)] * 4), min_size=1, max_size=12),
    layers=st.sets(st.integers(1, 3), min_size=1),
    tensors=st.sets(st.sampled_from(("K", "K1", "Theta", "Theta1") + FOUR), min_size=1),
)
def test_random_tuple_subsets(rows: list[tuple[int, ...]], layers: set[int], tensors: set[str]) -> None:
    x = _x(4)
    dense = rgflow.theory(_net("gelu", 3), x)
    T = np.array(rows)
    th = rgflow.theory(_net("gelu", 3), x, tuples=T, layers=sorted(layers), tensors=sorted(tensors))
    assert th.layers == tuple(sorted(layers))
    rows_l = [ell - 1 for ell in th.layers]
    for k in FOUR + TWO:
        got = getattr(th, k)
        if k not in tensors and k != "K":
            assert got is None
            continue
        ref = getattr(dense, k)[rows_l]
        _close(got, ref[:, T[:, 0], T[:, 1], T[:, 2], T[:, 3]] if k in FOUR else ref)


def test_order_split_and_duplicates_of_the_tuple_list() -> None:
    net, x = _net("relu"), _x(6)
    T = np.random.default_rng(2).integers(0, N, size=(30, 4))
    full = rgflow.theory(net, x, tuples=T)
    perm = np.random.default_rng(3).permutation(len(T))
    shuffled = rgflow.theory(net, x, tuples=T[perm])
    halves = [rgflow.theory(net, x, tuples=h) for h in (T[:13], T[13:])]
    doubled = rgflow.theory(net, x, tuples=np.concatenate([T, T]))
    for k in FOUR:
        f = getattr(full, k)
        assert np.array_equal(getattr(shuffled, k), f[:, perm])
        assert np.array_equal(np.concatenate([getattr(h, k) for h in halves], axis=1), f)
        assert np.array_equal(getattr(doubled, k), np.concatenate([f, f], axis=1))


def test_repeated_inputs_with_tuples() -> None:
    x = _x(4)
    xr = x[[0, 1, 2, 1, 3]]  # input 3 repeats input 1
    dense = rgflow.theory(_net("gelu"), xr)
    T = np.array([[3, 1, 0, 4], [3, 3, 1, 1], [2, 4, 3, 0]])
    th = rgflow.theory(_net("gelu"), xr, tuples=T)
    _check_tuples(th, dense, T)


CHILD = r"""
import sys, numpy as np, rgflow
x = np.random.default_rng(7).normal(size=(6, 3))
net = rgflow.MLP(depth=4, width=10, activation="gelu")
T = np.random.default_rng(4).integers(0, 6, size=(60, 4))
th = rgflow.theory(net, x, tuples=T, layers=[-1])
dn = rgflow.theory(net, x, layers=[2, 4], tensors=["V", "Theta1"])
np.savez(sys.argv[1], **{k: getattr(th, k) for k in ("V", "D", "F", "A", "B", "Theta1")}, dV=dn.V, dT=dn.Theta1)
"""


def test_identical_across_thread_counts(tmp_path: Path) -> None:
    out = []
    for threads in (1, 2):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), RAYON_NUM_THREADS=str(threads))
        f = tmp_path / f"t{threads}.npz"
        p = subprocess.run([sys.executable, "-c", CHILD, str(f)], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        out.append(np.load(f))
    for k in out[0].files:
        assert np.array_equal(out[0][k], out[1][k]), k


def test_theory_layers_attribute_and_persistence(tmp_path: Path) -> None:
    net, x = _net("gelu"), _x()
    dense = _dense("gelu")
    T = np.array([[0, 1, 2, 3], [3, 3, 0, 1]])
    th = rgflow.theory(net, x, layers=[1, 3], tuples=T)
    _close(th.metric(3), dense.metric(3))
    _close(th.ntk_mean(1), dense.ntk_mean(1))
    _close(th.metric(), dense.metric()[[0, 2]])
    with pytest.raises(ValueError, match="layer 2 was not kept"):
        th.metric(2)
    th.save(tmp_path / "t.npz")
    back = rgflow.Theory.load(tmp_path / "t.npz")
    assert back.layers == (1, 3) and np.array_equal(back.tuples, T)  # type: ignore[arg-type]
    assert np.array_equal(back.A, th.A)  # type: ignore[arg-type]
    assert "layers=[1, 3]" in repr(back) and "tuples=2" in repr(back)
    assert dense.tuples is None and dense.layers == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("tuples", "exc", "match"),
    [
        ([[0, 1, 2, N]], ValueError, "out of range"),
        ([[0, -1, 2, 3]], ValueError, "out of range"),
        ([[0, 1, 2]], ValueError, r"shape \(M, 4\)"),
        ([0, 1, 2, 3], ValueError, r"shape \(M, 4\)"),
        (np.zeros((0, 4), dtype=int), ValueError, r"M >= 1"),
        ([[0.0, 1.0, 2.0, 3.0]], TypeError, "integer array"),
        ([[True, False, True, False]], TypeError, "integer array"),
    ],
)
def test_bad_tuples(tuples: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        rgflow.theory(_net("gelu"), _x(), tuples=tuples)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"layers": [0]}, ValueError, "0 is not a layer"),
        ({"layers": [DEPTH + 1]}, ValueError, "out of range"),
        ({"layers": [-DEPTH - 1]}, ValueError, "out of range"),
        ({"layers": []}, ValueError, "layers is empty"),
        ({"layers": [1.0]}, TypeError, "must be ints"),
        ({"tensors": ["V", "W"]}, ValueError, "unknown tensor 'W'"),
        ({"tensors": []}, ValueError, "tensors is empty"),
        ({"tensors": ["A"], "ntk": False}, ValueError, "needs ntk=True"),
        ({"tensors": ["V"], "order": 0}, ValueError, "needs order=1"),
        ({"tuples": [[0, 1, 2, 3]], "dntk": True}, ValueError, "not supported with"),
    ],
)
def test_bad_layers_and_tensors(kw: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        rgflow.theory(_net("gelu"), _x(), **kw)


def test_memory_estimate_and_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    full = theory_memory(64, 64, 10, True, 1, False, False)
    last = theory_memory(64, 64, 10, True, 1, False, False, n_layers=1)
    assert 6.7e9 < full and last < 2e9 and last > 5 * 8 * 64**4  # the kept layer plus one working layer
    only_v = theory_memory(64, 64, 10, True, 1, False, False, n_layers=1, tensors=("K", "V"))
    assert only_v < last / 2
    tup = theory_memory(64, 64, 10, True, 1, False, False, n_layers=1, closure=(1000, 20000, 5000))
    assert tup < 1e7
    import rgflow._util.limits as limits

    monkeypatch.setattr(limits, "available_memory", lambda: (1e4, "a test budget"))
    with pytest.raises(MemoryError) as e:
        rgflow.theory(_net("gelu"), _x())
    msg = str(e.value)
    assert "GB" in msg and "a test budget" in msg
    assert "layers=[-1]" in msg and "tensors=" in msg and "tuples=" in msg


def test_tuples_at_most_one() -> None:
    tr, te = np.array([0, 2, 3]), np.array([1, 4])
    T = rgflow.tuples_at_most_one(tr, te)
    assert T.shape == (3**4 + 4 * 2 * 3**3, 4) and T.dtype == np.int64
    ref = {
        t
        for t in np.ndindex(5, 5, 5, 5)
        if sum(i in te for i in t) <= 1  # at most one test index
    }
    assert {tuple(int(i) for i in r) for r in T} == ref and len(ref) == len(T)


def test_symmetries_of_the_dense_tensors() -> None:
    # the index symmetries a canonical-tuple storage could use, checked on the dense outputs
    th = _dense("tanh")
    for k in ("V", "A"):
        t = getattr(th, k)
        for axes in ((0, 2, 1, 3, 4), (0, 1, 2, 4, 3), (0, 3, 4, 1, 2)):
            _close(t.transpose(axes), t)
    for axes in ((0, 2, 1, 3, 4), (0, 1, 2, 4, 3)):
        _close(th.D.transpose(axes), th.D)  # type: ignore[union-attr]
    _close(th.F.transpose(0, 3, 4, 1, 2), th.F)  # type: ignore[union-attr]
    for axes in ((0, 2, 1, 4, 3), (0, 3, 4, 1, 2)):
        _close(th.B.transpose(axes), th.B)  # type: ignore[union-attr]


def test_child_result_format() -> None:
    # the dict the core returns carries the kept layers
    th = rgflow.theory(_net("relu"), _x(), layers=[-2], tensors=["K"])
    assert th.layers == (DEPTH - 1,) and th.K.shape == (1, N, N) and th.V is None
    assert json.loads(json.dumps(list(th.layers))) == [DEPTH - 1]


def test_other_architectures_refuse_the_options() -> None:
    net = rgflow.ResMLP(depth=3, width=8, activation="relu")
    with pytest.raises(TypeError, match="rgflow.MLP only"):
        rgflow.theory(net, _x(), layers=[-1])
