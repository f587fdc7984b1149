"""The one sampling engine behind :func:`rgflow.sample` for every architecture.

It validates the common arguments (one set of defaults and one error text per argument), splits
the networks into groups (:func:`rgflow._util.stats.group_bounds`: sizes differ by at most one,
every network is used), seeds the batches, drives the per-group loop with the progress line,
accumulates float64 sums, and turns them into point estimates (all networks pooled) and
batch-means standard errors (the spread of the per-group estimates, :class:`~rgflow._util.stats.Welford`).

An architecture supplies a :class:`Sampler`: a per-batch *sums* function for numpy (and a
per-group jitted function for JAX, built from the same ``xp``-generic kernels) and an
*estimates-from-sums* function.

Random streams
--------------
* numpy: batch k of the run (counted over all groups) draws from
  ``default_rng(SeedSequence(seed, spawn_key=(k,)))``; a batch never straddles two groups.
* JAX: network i (0-based over the run) draws from ``fold_in(key(seed), i)``, so the numbers do
  not depend on the batch size or on the devices (up to the summation order).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util.limits import check_memory, gb
from .._util.progress import Progress
from .._util.stats import Welford, group_bounds
from .._util.validation import check_bool
from . import _jax

BACKENDS = ("numpy", "jax")
DTYPES: dict[str, Any] = {"float64": np.float64, "float32": np.float32}

#: Defaults of the common arguments, the same for every architecture.
DEFAULT_NETWORKS = 10_000
DEFAULT_GROUPS = 32
DEFAULT_SEED = 0

Sums = dict[str, np.ndarray]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a TypeError; also a ValueError, as rgflow 0.1's residual
    samplers raised for these)."""


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _int_arg(name: str, v: Any, lo: int) -> int:
    if not _is_int(v):
        raise ArgumentTypeError(f"{name} must be an int >= {lo}, got {name}={v!r} ({type(v).__name__})")
    if v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {name}={v!r}")
    return int(v)


@dataclass(frozen=True)
class Options:
    """The validated common arguments of a sampling run."""

    networks: int
    groups: int
    seed: int
    batch: int | None
    backend: str
    dtype: str
    devices: tuple[Any, ...] | None
    progress: bool

    @property
    def np_dtype(self) -> Any:
        return DTYPES[self.dtype]


def check_options(
    networks: Any,
    groups: Any,
    seed: Any,
    batch: Any,
    backend: Any,
    dtype: Any,
    devices: Sequence[Any] | None,
    progress: Any,
) -> Options:
    """Validate the arguments every architecture shares (same rules, same messages)."""
    networks = _int_arg("networks", networks, 2)
    groups = _int_arg("groups", groups, 2)
    if networks < 2 * groups:
        raise ValueError(
            f"networks={networks} with groups={groups} leaves fewer than 2 networks per group: "
            f"batch-means errors need networks >= 2*groups; use groups <= {networks // 2} or more networks"
        )
    seed = _int_arg("seed", seed, 0)
    if batch is not None and (not _is_int(batch) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (automatic), got batch={batch!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'numpy' or 'jax', got backend={backend!r}")
    key = _dtype_name(dtype)
    if key not in DTYPES:
        raise ValueError(f"dtype must be 'float64' (recommended) or 'float32', got dtype={dtype!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")
    if backend == "jax":
        _jax.require_jax()  # an ImportError naming the rgflow[jax] extra, before any work is done
    return Options(
        networks,
        groups,
        seed,
        None if batch is None else int(batch),
        backend,
        key,
        None if devices is None else tuple(devices),
        check_bool("progress", progress),
    )


def _dtype_name(dtype: Any) -> str | None:
    """'float64' for "float64", np.float64 or np.dtype("float64"); None if not a dtype."""
    if isinstance(dtype, str) or dtype is None:
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return None


def warn_float32(opts: Options, what: str, stacklevel: int = 4) -> None:
    """The one float32 warning (``what``: the 1/n quantities of the architecture)."""
    if opts.dtype == "float32":
        warnings.warn(
            "dtype='float32': the forward pass runs in single precision (sums are still float64); "
            f"{what} are 1/n effects resolved against O(1) values, so single-precision rounding "
            "(~1e-7 relative, amplified by n and by depth) limits them -- use float64 for quantitative checks",
            UserWarning,
            stacklevel=stacklevel,
        )


@dataclass
class Sampler:
    """What an architecture supplies to :func:`run`.

    numpy_sums(rng, B): float64 sums over B networks drawn from ``rng`` (one dict of arrays).
    numpy_batch: the numpy batch size when ``batch=None`` (capped at the largest group).
    numpy_accumulates: numpy_sums takes a third argument, the sums of the group so far (None for
        its first batch), adds the batch to them in place and returns them.
    jax_group(devices, nb, bs): a function ``(idx (nb, bs) uint32, mask (nb, bs) bool, key) ->
        dict of float64 sums`` for one group (called inside ``jax.enable_x64``), or None.
    bytes_per_network: memory of one network in a JAX batch (sets the automatic batch size).
    estimates(sums): every estimate from (group or pooled) sums; ``sums["count"]`` is the number
        of networks summed.
    """

    label: str
    numpy_sums: Callable[..., Sums]
    numpy_batch: int
    estimates: Callable[[Sums], dict[str, np.ndarray]]
    jax_group: Callable[[tuple[Any, ...], int, int], Callable[..., Any]] | None = None
    bytes_per_network: int = 1
    numpy_accumulates: bool = False


@dataclass
class Run:
    """Output of :func:`run`: pooled estimates, batch-means standard errors and timing."""

    estimates: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    batch: int
    elapsed: float
    networks_per_second: float


def _own(v: Any) -> np.ndarray:
    """``v`` as a writable float64 array, copied only if it is not one already (the N^4 sums are large)."""
    if isinstance(v, np.ndarray) and v.dtype == np.float64 and v.flags.writeable and v.base is None:
        return v
    return np.array(v, dtype=np.float64)


def _numpy_groups(
    bounds: Sequence[tuple[int, int]], batch: int, seed: int, sampler: Sampler, done: Callable[[int], None]
) -> Iterator[Sums]:
    k = 0
    for start, end in bounds:
        acc: Sums | None = None
        for b0 in range(start, end, batch):
            B = min(batch, end - b0)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
            k += 1
            if sampler.numpy_accumulates:  # adds in place: no per-batch copies of the sums
                acc = sampler.numpy_sums(rng, B, acc)
                done(b0 + B)
                continue
            s = sampler.numpy_sums(rng, B)
            if acc is None:
                acc = {name: _own(v) for name, v in s.items()}
            else:
                for name, v in s.items():
                    acc[name] += v
            del s
            done(b0 + B)  # progress after every batch, not only every group
        assert acc is not None
        yield acc


def run(opts: Options, sampler: Sampler) -> Run:
    """Sample ``opts.networks`` networks in ``opts.groups`` groups; estimates and standard errors."""
    bounds = group_bounds(opts.networks, opts.groups)
    gmax = max(e - s for s, e in bounds)
    t0 = time.perf_counter()
    prog = Progress(opts.networks, opts.progress, f"rgflow.sample[{sampler.label}, {opts.backend}]")
    groups: Iterator[Sums]
    if opts.backend == "numpy":
        batch = min(opts.batch or max(1, sampler.numpy_batch), gmax)
        # One batch must fit (huge widths: a single network's weights can exceed the memory).
        check_memory(
            float(sampler.bytes_per_network) * batch,
            f"sampling {sampler.label}: {batch} network(s) per batch at {gb(sampler.bytes_per_network)} each",
            "smaller widths (a layer's weights grow as width²), fewer inputs, ntk=False, or batch=1",
        )
        groups = _numpy_groups(bounds, batch, opts.seed, sampler, prog.update)
    else:
        if sampler.jax_group is None:  # pragma: no cover - every architecture has one
            raise ValueError(f"{sampler.label} has no JAX backend; use backend='numpy'")
        groups, batch = _jax.run_groups(
            bounds, opts.batch, opts.seed, opts.devices, sampler.bytes_per_network, sampler.jax_group
        )
    wf = Welford()
    total: Sums | None = None
    try:
        for (start, end), sums in zip(bounds, groups, strict=True):
            sums["count"] = np.asarray(float(end - start))
            wf.add(sampler.estimates(sums))
            if total is None:  # the first group's sums are not used again: no copy
                total = {k: _own(v) for k, v in sums.items()}
            else:
                for k, v in sums.items():
                    total[k] += v
            del sums  # not held while the next group is sampled
            prog.update(end)
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0
    assert total is not None
    return Run(
        estimates=sampler.estimates(total),
        stderr=wf.stderr(),
        batch=int(batch),
        elapsed=elapsed,
        networks_per_second=opts.networks / elapsed if elapsed > 0 else float("inf"),
    )
