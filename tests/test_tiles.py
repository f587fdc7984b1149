"""Tiles of sample tuples on a Dask cluster (issue 14 part 4): ``rgflow.theory(net, x, tuples=...,
client=...)`` equals the single-process theory to 1e-14 for every tile size, ``reduce=`` equals
the contraction of the full arrays, a killed worker's tiles are recomputed, progress is reported
once per tile, and bad arguments are refused with messages naming them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rgflow
from rgflow.recursions import _tiles

FOUR = ("V", "D", "F", "A", "B")
N = 4


def _net(act: str) -> rgflow.MLP:
    return rgflow.MLP(activation=act, depth=3, width=16, C_b=0.1, C_W=1.5)


def _x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, 3))


def _tuples(m: int = 40) -> np.ndarray:
    """Random tuples with repeated samples, plus every coincidence pattern explicitly."""
    fixed = [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1], [1, 2, 3, 0], [3, 3, 2, 1]]
    return np.concatenate([fixed, np.random.default_rng(1).integers(0, N, size=(m, 4))])


DENSE: dict[str, rgflow.Theory] = {}


def _dense(act: str) -> rgflow.Theory:
    """The single-process theory (computed once per activation)."""
    if act not in DENSE:
        DENSE[act] = rgflow.theory(_net(act), _x())
    return DENSE[act]


def _at(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[(slice(None), *t.T)]


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14 * float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def client() -> Any:
    pytest.importorskip("distributed")
    import cloudpickle
    from distributed import Client, LocalCluster

    # the reducers below are defined in this test module, which the workers cannot import
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("act", ["gelu", "tanh"])
@pytest.mark.parametrize("tile_size", [1, 7, 64])
def test_tiles_equal_single_process(client: Any, act: str, tile_size: int) -> None:
    t = _tuples(15 if tile_size == 1 else 40)
    th = rgflow.theory(_net(act), _x(), tuples=t, client=client, tile_size=tile_size, progress=False)
    ref = _dense(act)
    for name in FOUR:
        got = getattr(th, name)
        assert got.shape == (3, len(t))
        _assert_close(got, _at(getattr(ref, name), t))
    for name in ("K", "K1", "Theta", "Theta1"):
        _assert_close(getattr(th, name), getattr(ref, name))
    np.testing.assert_array_equal(th.tuples, t)


def test_layers_and_tensors_are_passed_to_every_tile(client: Any) -> None:
    t = _tuples(10)
    th = rgflow.theory(_net("gelu"), _x(), tuples=t, client=client, tile_size=4, layers=[1, -1], tensors=("K", "V"))
    ref = _dense("gelu")
    assert th.D is None and th.Theta1 is None and tuple(th.layers) == (1, 3)
    _assert_close(th.V, _at(ref.V, t)[[0, 2]])
    _assert_close(th.K, ref.K[[0, 2]])


def test_client_without_tuples_gives_the_dense_theory(client: Any) -> None:
    """All N⁴ ordered tuples, tiled and reshaped: the result of rgflow.theory(net, x)."""
    th = rgflow.theory(_net("gelu"), _x(), client=client, tile_size=50)
    ref = _dense("gelu")
    assert th.tuples is None
    for name in FOUR:
        assert getattr(th, name).shape == (3, N, N, N, N)
        _assert_close(getattr(th, name), getattr(ref, name))


def _weighted_v(tuples: np.ndarray, th: rgflow.Theory) -> np.ndarray:
    """Σ_m V[l, m] w_a w_b w_c w_d: a per-layer contraction of the four-point vertex."""
    w = np.linspace(-1.0, 2.0, N)
    return th.V @ np.prod(w[tuples], axis=1)


def test_reduce_equals_the_contraction_of_the_full_arrays(client: Any) -> None:
    w = np.linspace(-1.0, 2.0, N)
    ref = _dense("tanh")
    want = np.einsum("labcd,a,b,c,d->l", ref.V, w, w, w, w)
    got = rgflow.theory(_net("tanh"), _x(), client=client, tile_size=37, reduce=_weighted_v)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # a float per tile, explicit tuples, the two-point tensors seen by every tile
    t = _tuples()

    def scalar(tt: np.ndarray, th: rgflow.Theory) -> float:
        return float(th.B[-1].sum() + th.K[-1, 0, 1] * len(tt))

    got_s = rgflow.theory(_net("tanh"), _x(), tuples=t, client=client, tile_size=9, reduce=scalar)
    assert isinstance(got_s, float)
    assert got_s == pytest.approx(_at(ref.B, t)[-1].sum() + ref.K[-1, 0, 1] * len(t), rel=1e-13)


def test_reduce_in_process_without_a_client() -> None:
    """client=None runs the tiles one after the other here (no dask needed) with the same result."""
    w = np.linspace(-1.0, 2.0, N)
    ref = _dense("gelu")
    got = rgflow.theory(_net("gelu"), _x(), tile_size=100, reduce=_weighted_v, progress=False)
    np.testing.assert_allclose(got, np.einsum("labcd,a,b,c,d->l", ref.V, w, w, w, w), rtol=1e-13)
    t = _tuples()
    th = rgflow.theory_tiles(_net("gelu"), _x(), t, tile_size=6, progress=False)
    _assert_close(th.A, _at(ref.A, t))


def _kill_once(flag: str) -> Any:
    def reduce(tuples: np.ndarray, th: rgflow.Theory) -> np.ndarray:
        if not os.path.exists(flag):
            Path(flag).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies in the middle of its tile
        return _weighted_v(tuples, th)

    return reduce


def test_a_worker_that_dies_mid_tile_loses_nothing(client: Any, tmp_path: Path) -> None:
    flag = str(tmp_path / "killed")
    w = np.linspace(-1.0, 2.0, N)
    want = np.einsum("labcd,a,b,c,d->l", _dense("gelu").V, w, w, w, w)
    try:
        got = rgflow.theory(_net("gelu"), _x(), client=client, tile_size=16, reduce=_kill_once(flag))
        assert Path(flag).exists()  # the kill happened: one tile (and the sums held there) ran twice
        np.testing.assert_allclose(got, want, rtol=1e-13)
    finally:
        client.wait_for_workers(2, timeout=60)


def test_a_worker_killed_while_gathering_loses_nothing(client: Any) -> None:
    t = _tuples(200)
    before = set(client.nthreads())
    victim = sorted(before)[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    calls: list[int] = []

    def kill_at_first_tile(done: int, total: int) -> None:
        calls.append(done)
        if done == 1:
            os.kill(pid, signal.SIGKILL)  # the worker process dies while its tiles are queued or running

    try:
        th = rgflow.theory(_net("gelu"), _x(), tuples=t, client=client, tile_size=5, progress=kill_at_first_tile)
        for name in FOUR:
            _assert_close(getattr(th, name), _at(getattr(_dense("gelu"), name), t))
        assert calls == list(range(1, 42))
    finally:
        client.wait_for_workers(2, timeout=60)
    assert victim not in set(client.nthreads())  # the worker really died (its nanny started a new one)


def test_progress_is_reported_once_per_tile(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    t = _tuples(15)  # 20 tuples
    rgflow.theory(_net("gelu"), _x(), tuples=t, client=client, tile_size=3, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(d, 7) for d in range(1, 8)]
    seen.clear()

    def record(d: int, n: int) -> None:
        seen.append((d, n))

    rgflow.theory(_net("gelu"), _x(), tuples=t, client=client, tile_size=6, reduce=_weighted_v, progress=record)
    assert seen == [(d, 4) for d in range(1, 5)]  # tiles, not the pairwise sums of the tree reduction

    lines: list[tuple[int, int]] = []

    class Line:
        def __init__(self, total: int, enabled: bool, label: str, unit: str) -> None:
            assert enabled and unit == "tiles"
            self.total = total

        def update(self, done: int) -> None:
            lines.append((done, self.total))

        def close(self) -> None:
            lines.append((-1, -1))

    monkeypatch.setattr(_tiles, "Progress", Line)
    rgflow.theory(_net("gelu"), _x(), tuples=t, client=client, tile_size=10)
    assert lines == [(1, 2), (2, 2), (-1, -1)]  # the line is closed (ends with a newline)


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"client": "tcp://127.0.0.1:8786"}, TypeError, "client must be a dask.distributed.Client"),
        ({"client": object()}, TypeError, "client must be a dask.distributed.Client"),
        ({"tile_size": 0}, ValueError, "tile_size must be >= 1"),
        ({"tile_size": 2.5}, TypeError, "tile_size must be an int"),
        ({"tile_size": True}, TypeError, "tile_size must be an int"),
        ({"reduce": 3.0}, TypeError, "reduce must be a function"),
        ({"progress": "yes"}, TypeError, "progress must be True, False or a function"),
        ({"tuples": np.zeros((3, 3), int), "tile_size": 1}, ValueError, "shape (M, 4)"),
        ({"tuples": np.zeros((3, 4)), "tile_size": 1}, TypeError, "integer array"),
        ({"tuples": np.full((3, 4), N), "tile_size": 1}, ValueError, "index the N = 4 inputs"),
        ({"tile_size": 4, "order": 0}, ValueError, "order=0"),
        ({"tile_size": 4, "dntk": True}, ValueError, "dntk=True is not tiled"),
        ({"tile_size": 4, "tensors": ("V", "P")}, ValueError, "cannot be tiled"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], exc: type[Exception], words: str) -> None:
    if "client" in kwargs:
        pytest.importorskip("distributed")
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        rgflow.theory(_net("gelu"), _x(), **kwargs)


def test_bad_reducers_and_closed_clients_are_refused(client: Any) -> None:
    with pytest.raises(TypeError, match="reduce must return a float or a numeric numpy array"):
        rgflow.theory(_net("gelu"), _x(), tile_size=64, client=client, reduce=lambda t, th: "x")
    with pytest.raises(ValueError, match="same shape for every tile"):
        rgflow.theory(_net("gelu"), _x(), tile_size=100, client=client, reduce=lambda t, th: np.zeros(len(t)))
    with pytest.raises(TypeError, match="progress must be True, False or a function f"):
        rgflow.theory(_net("gelu"), _x(), client=client, progress=1)
    with pytest.raises(TypeError, match="for an rgflow.MLP"):
        rgflow.theory(rgflow.ResMLP(depth=2, width=8), _x(), client=client)
    from distributed import Client

    closed = Client(client.scheduler.address)
    closed.close()
    with pytest.raises(ValueError, match="client is not connected"):
        rgflow.theory(_net("gelu"), _x(), client=closed)


def test_without_dask_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """import rgflow never imports dask; client= without it names the extra to install."""
    code = "import sys, rgflow; print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install rgflow\[dask\]"):
        rgflow.theory(_net("gelu"), _x(), tuples=_tuples(), client=object())


def test_the_readme_recipe_runs(client: Any) -> None:
    """README's 'Running on a Dask cluster' block, on this module's cluster, against the dense theory."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Running on a Dask cluster\n.*?```python\n(.*?)```", text, re.S)
    assert match, "README has no 'Running on a Dask cluster' python block"
    lines = [ln for ln in match.group(1).splitlines() if not ln.startswith(("cluster =", "client ="))]
    net = rgflow.MLP("gelu", depth=4, width=64, C_b=0.17292239, C_W=1.98305826)
    x = np.array([[1.3, 0.4], [0.2, -1.1], [0.5, 0.9]])
    scope: dict[str, Any] = {"np": np, "rgflow": rgflow, "net": net, "x": x, "client": client}
    exec(compile("\n".join(lines), "README.md", "exec"), scope)
    ref, w = rgflow.theory(net, x), scope["w"]
    _assert_close(scope["th"].V, ref.V[-1:])
    np.testing.assert_allclose(scope["s"], np.einsum("labcd,a,b,c,d->l", ref.V, w, w, w, w), rtol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_all_tuples_are_tiled_once_as_whole_multisets(n: int) -> None:
    """client= without tuples=: the tiles hold every one of the N⁴ ordered tuples exactly once, every
    ordering of a multiset in the same tile, about tile_size tuples per tile."""
    prefixes, counts = _tiles._prefix_counts(n)
    assert counts.sum() == n**4 and len(prefixes) == n * (n + 1) * (n + 2) // 6
    tiles = [_tiles._tile_tuples(spec, n) for spec in _tiles._dense_specs(n, 50)]
    every = np.concatenate(tiles)
    assert len(every) == n**4 and len(np.unique(every, axis=0)) == n**4
    owner = {tuple(sorted(t)): i for i, tile in enumerate(tiles) for t in tile}
    assert all(owner[tuple(sorted(t))] == i for i, tile in enumerate(tiles) for t in tile)
    assert all(len(t) < 50 + 24 * n for t in tiles)
