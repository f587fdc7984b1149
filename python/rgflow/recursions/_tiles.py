"""Tiles of sample tuples: the MLP theory of many four-point tuples, on a Dask cluster or in-process.

In the derivative form of the recursions (``ntk.md`` §1.2) an entry of V, D, F, A or B at layer
ℓ + 1 needs only entries over the same samples at layer ℓ, so any set of sample tuples splits
into *tiles* that each propagate through all layers independently (issue 14 part 4).  A tile is
one call ``rgflow.theory(net, x, tuples=tile, tensors=..., layers=...)``; :func:`theory_tiles`
runs the tiles as tasks on a ``dask.distributed`` :class:`~distributed.Client` (or one after the
other in this process when ``client=None``) and either

* gathers them into the full (n_layers_kept, M) arrays, in the order of ``tuples``, each tile's
  result written as soon as it arrives and released on the cluster, or
* with ``reduce=f``, sums ``f(tile_tuples, tile_theory)`` over the tiles: the partial sums are
  added pairwise on the workers (a tree reduction; only the final sum travels back), so neither
  the client nor any worker ever holds more than one tile of the four-point arrays.

The two-point tensors (K, K1, Θ, Θ1; (n_layers_kept, N, N)) are computed once, in one task, and
handed to every tile's theory.  A worker that dies takes no result with it: the scheduler
reruns its tiles from their inputs (Dask's lineage), which only needs the futures held here.

dask is optional (``pip install rgflow[dask]``); it is imported inside the functions that need
it, so nothing changes for users without it.
"""

from __future__ import annotations

import itertools
import math
import operator
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._util.limits import check_memory, gb
from .._util.progress import Progress
from .._util.validation import check_bool, check_inputs, check_int
from ..models import MLP
from ._mlp import FOUR_POINT, TWO_POINT, Theory, mlp_theory

#: Largest default tile: 65 536 tuples keep one tile's result at 5 families × 10 layers ≈ 26 MB.
MAX_DEFAULT_TILE = 65_536
#: Tiles per worker thread aimed at by the default tile size (load balance, cheap recovery).
TILES_PER_THREAD = 4
#: How to install the optional dependency, in every message that needs it.
DASK_HINT = "pip install rgflow[dask]  (dask[distributed] >= 2024.1)"

Reducer = Callable[[np.ndarray, Theory], Any]
ProgressArg = bool | Callable[[int, int], Any]


# ---------------------------------------------------------------------------------- the engine
def _tile_theory(net: MLP, x: np.ndarray, tuples: np.ndarray | None, options: dict[str, Any]) -> Theory:
    """``rgflow.theory(net, x, tuples=tuples, **options)`` for one tile (``tuples=None``: the
    two-point tensors named in ``options['tensors']``, no tuples)."""
    kw = dict(options) if tuples is None else {**options, "tuples": tuples}
    return mlp_theory(net, x, **kw)


# ------------------------------------------------------------------------- tasks (on workers)
#: The 24 orderings of four slots.
_PERMS = np.array(list(itertools.permutations(range(4))))


def _tile_tuples(spec: np.ndarray, n: int) -> np.ndarray:
    """A tile's tuples: an explicit (m, 4) slice, or, for all N⁴ tuples, a (p, 3) array of sorted
    prefixes a ≤ b ≤ c: every ordering of every multiset a ≤ b ≤ c ≤ d < N with those three
    smallest samples (generated on the worker: the N⁴ tuples never exist in one place).  A tuple's
    recursion reads only tuples over its own samples, so tiles of whole multisets share that work
    within a tile instead of repeating it in every tile."""
    if spec.shape[1] == 4:
        return spec
    lengths = n - spec[:, 2]  # d = c .. N-1
    row = np.repeat(np.arange(len(spec)), lengths)
    start = np.cumsum(lengths) - lengths
    d = spec[row, 2] + np.arange(int(lengths.sum())) - start[row]
    ms = np.column_stack([spec[row], d])
    distinct = (ms[:, 0] < ms[:, 1]) & (ms[:, 1] < ms[:, 2]) & (ms[:, 2] < ms[:, 3])
    repeated = np.unique(ms[~distinct][:, _PERMS].reshape(-1, 4), axis=0)  # fewer than 24 orderings
    return np.concatenate([ms[distinct][:, _PERMS].reshape(-1, 4), repeated])


def _prefix_counts(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted prefixes a ≤ b ≤ c < N, in order, and the number of ordered tuples each stands for
    (the orderings of the multisets a ≤ b ≤ c ≤ d; they sum to N⁴)."""
    a, b, c = (v.astype(np.int64) for v in np.nonzero(np.triu(np.ones((n, n), bool))[:, :, None] & _upper(n)))
    ab, bc = a == b, b == c
    # orderings with d > c (d distinct from a, b, c) and with d = c: 24/∏(multiplicity!)
    gt = np.select([ab & bc, ab | bc], [4, 12], 24)
    eq = np.select([ab & bc, ab, bc], [1, 6, 4], 12)
    counts = (n - 1 - c) * gt + eq
    return np.column_stack([a, b, c]), counts


def _upper(n: int) -> np.ndarray:
    """(1, N, N) mask b ≤ c."""
    return np.triu(np.ones((n, n), bool))[None, :, :]


def _dense_specs(n: int, tile_size: int) -> list[np.ndarray]:
    """Consecutive prefix groups of about ``tile_size`` ordered tuples each (at least one prefix,
    at most 24·N tuples)."""
    prefixes, counts = _prefix_counts(n)
    ends = np.cumsum(counts)
    assert int(ends[-1]) == n**4
    # cut after the first prefix whose running total reaches each multiple of tile_size
    cuts = np.unique(np.searchsorted(ends, np.arange(tile_size, int(ends[-1]), tile_size), side="left") + 1)
    return [p for p in np.split(prefixes, cuts) if len(p)]


def _tile_four(net: MLP, x: np.ndarray, spec: Any, options: dict[str, Any]) -> dict[str, np.ndarray]:
    """Task: the four-point arrays (n_layers_kept, m) of one tile (only these travel back) and, for
    a tile of all N⁴ tuples, their flat positions in the dense (N, N, N, N) arrays (``"at"``)."""
    n = len(x)
    tuples = _tile_tuples(spec, n)
    th = _tile_theory(net, x, tuples, options)
    out = {name: np.ascontiguousarray(getattr(th, name)) for name in options["tensors"]}
    if spec.shape[1] != 4:
        out["at"] = np.ravel_multi_index(tuple(tuples.T), (n, n, n, n))
    return out


def _tile_reduce(
    net: MLP, x: np.ndarray, spec: Any, options: dict[str, Any], two: dict[str, Any], reduce: Reducer
) -> Any:
    """Task: ``reduce(tile_tuples, tile_theory)`` of one tile, checked to be a number or array."""
    tuples = _tile_tuples(spec, len(x))
    th = _tile_theory(net, x, tuples, options)
    for name in TWO_POINT:  # the shared two-point tensors
        if name in two:
            setattr(th, name, two[name])
    out = reduce(tuples, th)
    arr = np.asarray(out) if isinstance(out, (int, float, complex, np.number, np.ndarray)) else None
    if arr is None or arr.dtype.kind not in "iufc":
        raise TypeError(
            f"reduce must return a float or a numeric numpy array (summed over the tiles), got "
            f"{type(out).__name__} from reduce={getattr(reduce, '__name__', reduce)!r}"
        )
    return arr if arr.ndim else arr.item()


def _add(a: Any, b: Any) -> Any:
    """Task: the sum of two partial reductions (same shape)."""
    if np.shape(a) != np.shape(b):
        raise ValueError(
            f"reduce returned shape {np.shape(a)} for one tile and {np.shape(b)} for another: "
            "it must return the same shape for every tile (its results are summed)"
        )
    return operator.add(a, b)


def _same(v: Any) -> Any:
    """Task: its argument (puts an input into the task graph once, recomputable)."""
    return v


def _two_point(net: MLP, x: np.ndarray, options: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Task: the two-point tensors ``names`` (n_layers_kept, N, N) and the kept layer numbers."""
    # two-point names only: the engine propagates the pairs' own tuples, not all N⁴ (mlp_theory)
    th = _tile_theory(net, x, None, {**options, "tensors": tuple(names)})
    out: dict[str, Any] = {name: getattr(th, name) for name in names}
    out["layers"] = th.layers
    return out


# --------------------------------------------------------------------------- validation
def _client(client: Any) -> Any:
    """``client`` if it is a running ``distributed.Client`` (ImportError without dask)."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ImportError(f"client= needs dask.distributed, which is not installed: {DASK_HINT}") from exc
    if not isinstance(client, Client):
        raise TypeError(
            f"client must be a dask.distributed.Client, got client={client!r} ({type(client).__name__}); "
            "e.g. Client(LocalCluster(n_workers=4)) on one machine or Client('tcp://scheduler:8786') for a "
            "running cluster, or client=None to run the tiles in this process"
        )
    if client.status != "running":
        raise ValueError(f"client is not connected (status {client.status!r}); pass a running Client")
    return client


def _tuples(tuples: Any, n: int) -> np.ndarray:
    """Validated (M, 4) int64 sample indices into the N inputs."""
    arr = np.asarray(tuples)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"tuples must be an integer array of shape (M, 4) (sample indices), got dtype {arr.dtype}; "
            "e.g. np.array([[0, 1, 2, 3], [0, 0, 1, 1]])"
        )
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise ValueError(f"tuples must have shape (M, 4) with M >= 1, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"tuples must index the N = {n} inputs (0..{n - 1}), got values in {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _families(net: MLP, options: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(two-point, four-point) tensor names to compute, from ``tensors=`` or the defaults."""
    if options.get("order", 1) != 1:
        raise ValueError(
            f"tiles split the four-point tensors of order=1; got order={options['order']!r}: call "
            "rgflow.theory(net, x, order=0) without client=, tile_size= or reduce="
        )
    if options.get("dntk", False):
        raise ValueError("dntk=True is not tiled (only V, D, F, A, B); call rgflow.theory(net, x, dntk=True)")
    ntk = check_bool("ntk", options.get("ntk", True))
    names = options.get("tensors")
    if names is None:
        return (TWO_POINT if ntk else ("K", "K1")), (FOUR_POINT if ntk else ("V",))
    names = (names,) if isinstance(names, str) else tuple(names)
    bad = [t for t in names if t not in TWO_POINT + FOUR_POINT]
    if bad:
        raise ValueError(
            f"tensors={names!r}: {bad} cannot be tiled; choose from {TWO_POINT + FOUR_POINT} "
            "(the dNTK family is not tiled)"
        )
    two = tuple(dict.fromkeys(("K", *(t for t in names if t in TWO_POINT))))
    return two, tuple(t for t in names if t in FOUR_POINT)


def _layers_kept(net: MLP, options: dict[str, Any]) -> int:
    layers = options.get("layers")
    if layers is None:
        return net.depth
    return len([layers] if isinstance(layers, (int, np.integer)) else list(layers))


def _progress(progress: Any, n_tiles: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update, close) for ``progress``: True/False (the stderr progress line of the samplers) or
    a function ``f(done, total)``."""
    if callable(progress):
        return (lambda done: progress(done, n_tiles)), (lambda: None)
    line = Progress(n_tiles, check_bool("progress", progress), "rgflow.theory[tiles]", unit="tiles")
    return line.update, line.close


# --------------------------------------------------------------------------- entry point
def theory_tiles(
    net: MLP,
    x: Any,
    tuples: Any = None,
    *,
    client: Any = None,
    tile_size: int | None = None,
    reduce: Reducer | None = None,
    progress: ProgressArg = True,
    **options: Any,
) -> Any:
    """The first-order theory of ``net`` on ``x`` at the sample tuples ``tuples``, in tiles.

    Parameters
    ----------
    net, x: the :class:`~rgflow.MLP` and its inputs (N, n0).
    tuples: int array (M, 4) of sample indices.  ``None``: all N⁴ ordered tuples, and
        the gathered result is the dense :class:`Theory` of ``rgflow.theory(net, x)`` (four-point
        tensors (n_layers_kept, N, N, N, N)), computed tile by tile — symmetric copies such as
        V_{(a2 a1)(a3 a4)} are computed, not mirrored, so a dense result costs ~N⁴ tuples.
    client: a running ``dask.distributed.Client`` (``Client(LocalCluster(...))`` or
        ``Client("tcp://scheduler:8786")``; the workers need rgflow installed), or None to run the
        tiles one after the other in this process (no dask needed; bounded memory with ``reduce``).
    tile_size: tuples per tile (default: ~4 tiles per worker thread, at most 65 536).  A tile's
        result is 8 bytes × n_layers_kept × tile_size per four-point family.  Tuples over the same
        samples are put in the same tile (``tuples`` sorted by their sorted samples; with
        ``tuples=None`` a tile holds every ordering of whole multisets, ``tile_size`` to
        ``tile_size`` + 24·N tuples); the results keep the order of ``tuples``.
    reduce: ``f(tile_tuples, tile_theory) -> float | ndarray``, summed over the tiles (same shape
        for every tile) and returned instead of a :class:`Theory`; ``tile_theory`` has the tile's
        four-point arrays (n_layers_kept, m) and the full two-point tensors.  The full arrays are
        never built.
    progress: True (a progress line on stderr after ~2 s, as the samplers), False, or a function
        ``f(tiles_done, tiles_total)`` called after every finished tile.
    options: those of :func:`rgflow.theory` for an MLP (``ntk``, ``quad_order``, ``expectations``,
        ``layers``, ``tensors``); ``order`` must be 1 and ``dntk`` False.

    Returns
    -------
    A :class:`Theory` (four-point V, D, F, A, B of shape (n_layers_kept, M), ``th.V[l, m] =
    V[l, *tuples[m]]``; two-point (n_layers_kept, N, N); ``th.tuples``), or the sum of ``reduce``.
    Every tuple's values are those of the single-process computation: a tuple's recursion does
    not depend on the other tuples, the tiles or the workers.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"tiles (client=, tile_size=, reduce=) are for an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    n = len(x)
    dask_client = None if client is None else _client(client)
    if reduce is not None and not callable(reduce):
        raise TypeError(
            f"reduce must be a function f(tile_tuples, tile_theory) -> float | ndarray, got reduce={reduce!r}"
        )
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be True, False or a function f(done, total), got progress={progress!r}")
    two, four = _families(net, options)
    dense = tuples is None
    arr = None if dense else _tuples(tuples, n)
    m_total = n**4 if arr is None else len(arr)
    threads = 1 if dask_client is None else max(1, sum(dask_client.nthreads().values()))
    if tile_size is None:
        tile_size = int(min(MAX_DEFAULT_TILE, max(1, math.ceil(m_total / (TILES_PER_THREAD * threads)))))
    tile_size = check_int("tile_size", tile_size, minimum=1, hint=" (tuples per tile)")
    if arr is None:
        specs, order, bounds = _dense_specs(n, tile_size), None, []
    else:  # tuples over the same samples side by side (their shared work stays in one tile)
        order = np.lexsort(np.sort(arr, axis=1).T[::-1])
        bounds = [(s, min(s + tile_size, m_total)) for s in range(0, m_total, tile_size)]
        specs = [arr[order[s:e]] for s, e in bounds]
    n_layers = _layers_kept(net, options)
    if reduce is None:
        check_memory(
            8.0 * n_layers * m_total * len(four),
            f"the gathered four-point tensors ({', '.join(four)}; each ({n_layers}, {m_total}) = "
            f"{gb(8.0 * n_layers * m_total)})",
            "reduce= (a contraction summed over the tiles, nothing gathered), fewer tuples, layers= or tensors=",
        )
    tile_opts = {**options, "tensors": four}
    done, close = _progress(progress, len(specs))
    try:
        if dask_client is None:
            shared = _two_point(net, x, options, two)
            results = _run_local(net, x, specs, tile_opts, shared, reduce, done)
        else:
            shared, results = _run_dask(dask_client, net, x, specs, tile_opts, options, two, reduce, done)
        if reduce is not None:
            return next(results)[1]
        out = {name: np.empty((n_layers, m_total)) for name in four}
        for i, res in results:
            at = res["at"] if order is None else order[bounds[i][0] : bounds[i][1]]
            for name in four:
                out[name][:, at] = res[name]
    finally:
        close()
    return _assemble(net, x, shared, out, None if arr is None else arr, options)


def _assemble(
    net: MLP,
    x: np.ndarray,
    shared: dict[str, Any],
    four: dict[str, np.ndarray],
    tuples: np.ndarray | None,
    options: dict[str, Any],
) -> Theory:
    """The gathered :class:`Theory`: shared two-point tensors, the four-point arrays (reshaped to
    (n_layers_kept, N, N, N, N) for all N⁴ tuples), ``tuples`` and ``layers``."""
    n = len(x)
    tensors: dict[str, Any] = {k: v for k, v in shared.items() if k in TWO_POINT}
    for name, v in four.items():
        tensors[name] = v if tuples is not None else v.reshape(v.shape[0], n, n, n, n)
    engine = {k: v for k, v in options.items() if k not in ("tensors", "layers")}
    return Theory(net, x, tensors, {"order": 1, **engine}, layers=shared.get("layers"), tuples=tuples)


def _run_local(
    net: MLP,
    x: np.ndarray,
    specs: list[Any],
    tile_opts: dict[str, Any],
    shared: dict[str, Any],
    reduce: Reducer | None,
    done: Callable[[int], None],
) -> Iterator[tuple[int, Any]]:
    """The tiles one after the other in this process: (index, four-point arrays), or one
    (0, sum of ``reduce``)."""
    total: Any = None
    for i, spec in enumerate(specs):
        if reduce is None:
            res = _tile_four(net, x, spec, tile_opts)
            done(i + 1)
            yield i, res
            continue
        r = _tile_reduce(net, x, spec, tile_opts, shared, reduce)
        total = r if total is None else _add(total, r)
        done(i + 1)
    if reduce is not None:
        yield 0, total


def _run_dask(
    client: Any,
    net: MLP,
    x: np.ndarray,
    specs: list[Any],
    tile_opts: dict[str, Any],
    options: dict[str, Any],
    two: tuple[str, ...],
    reduce: Reducer | None,
    done: Callable[[int], None],
) -> tuple[dict[str, Any], Iterator[tuple[int, Any]]]:
    """Submit the two-point task and one task per tile; (two-point tensors, iterator over
    (index, result)) — results in completion order, or one (0, sum) after the tree reduction."""
    from distributed import as_completed

    tag = uuid.uuid4().hex[:8]
    # net and x enter the graph once, as tasks (not scattered data): a lost copy is rebuilt from them
    net_f = client.submit(_same, net, key=f"rgflow-net-{tag}", pure=False)
    x_f = client.submit(_same, x, key=f"rgflow-x-{tag}", pure=False)
    two_f = client.submit(_two_point, net_f, x_f, options, two, key=f"rgflow-two-point-{tag}", pure=False)
    if reduce is None:
        tiles = [
            client.submit(_tile_four, net_f, x_f, spec, tile_opts, key=f"rgflow-tile-{tag}-{i}", pure=False)
            for i, spec in enumerate(specs)
        ]
    else:
        tiles = [
            client.submit(
                _tile_reduce, net_f, x_f, spec, tile_opts, two_f, reduce, key=f"rgflow-tile-{tag}-{i}", pure=False
            )
            for i, spec in enumerate(specs)
        ]
    index = {f.key: i for i, f in enumerate(tiles)}
    try:
        shared = two_f.result()
    except BaseException:
        client.cancel(tiles + [two_f])
        raise
    return shared, _collect(client, tiles, index, reduce is not None, done, tag, as_completed)


def _collect(
    client: Any,
    tiles: list[Any],
    index: dict[Any, int],
    reducing: bool,
    done: Callable[[int], None],
    tag: str,
    as_completed: Any,
) -> Iterator[tuple[int, Any]]:
    """Results as tiles finish (each released on the cluster once copied), or the tree reduction:
    every two finished partial results are added on a worker, until one is left."""
    ac = as_completed(tiles)
    pending: list[Any] = []
    del tiles  # as_completed holds the futures now; each is dropped once handled
    finished = sums = 0
    try:
        for fut in ac:
            if fut.status == "error":
                fut.result()  # raises the task's exception here
            if fut.key in index:
                finished += 1
                done(finished)
            if not reducing:
                res = fut.result()
                i = index[fut.key]
                fut.release()
                yield i, res
                continue
            pending.append(fut)
            if len(pending) == 2:
                a, b = pending
                pending = []
                sums += 1
                ac.add(client.submit(_add, a, b, key=f"rgflow-sum-{tag}-{sums}", pure=False))
        if reducing:
            yield 0, pending[0].result()
    except BaseException:
        client.cancel(list(ac.futures) + pending)
        raise
