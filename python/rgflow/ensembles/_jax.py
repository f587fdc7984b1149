"""What every JAX backend shares (optional: ``pip install rgflow[jax]``): the import check, the
scoped float64 switch, the activation as ``jax.numpy`` functions, the one batching rule, the 1-D
device mesh, the network indices of a group, the cache of jitted functions and the per-group loop.

Per group of networks the architecture's jitted function runs a ``lax.scan`` over ``nb`` batches
of ``bs`` networks (padded with masked-out networks); network i draws from
``fold_in(key(seed), i)``, so results do not depend on the batch size or on the devices.  The
batch axis is sharded over a 1-D mesh (``NamedSharding``); XLA reduces the sums across devices.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..activations import array_function, array_functions

_INSTALL = "pip install rgflow[jax]"
#: Memory budget (bytes) of one batch when ``batch=None``: per device on CPU, and on GPU/TPU.
CPU_BATCH_BYTES = 96 * 2**20
ACCEL_BATCH_BYTES = 2 * 2**30
#: Largest automatic batch: on CPU (all devices together), and per accelerator.
CPU_BATCH_CAP = 2048
ACCEL_BATCH_CAP = 8192


def require_jax() -> Any:
    """Import jax or raise an ImportError that names the optional extra."""
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in the tests
        raise ImportError(
            f"backend='jax' needs JAX, which is an optional dependency: {_INSTALL} "
            "(or pip install jax); or use backend='numpy'"
        ) from exc
    return jax


def x64(jax: Any) -> Any:
    """A context manager enabling 64-bit types for the duration of the run."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is not None:
        try:
            return ctx(True)
        except TypeError:  # pragma: no cover - older jax
            pass
    try:  # pragma: no cover - jax < 0.5
        from jax.experimental import enable_x64  # type: ignore[attr-defined]

        return enable_x64()
    except ImportError:  # pragma: no cover
        jax.config.update("jax_enable_x64", True)
        return contextlib.nullcontext()


def activation(act: Any) -> tuple[Any, Any]:
    """(σ, σ') as jax.numpy functions: a built-in's one definition
    (:mod:`rgflow.activations._array`) traced with ``jax.numpy``, or a jax-traceable custom
    activation (σ' from ``jax.grad`` when no derivative was supplied)."""
    import jax
    import jax.numpy as jnp

    if not act.is_custom:
        return array_functions(jnp, act.name, act.params)
    f = act.function
    df = act.derivatives[0] if act.derivatives else jnp.vectorize(jax.grad(f))

    def check(g: Any) -> Any:
        def wrapped(z: Any) -> Any:
            try:
                return g(z)
            except Exception as exc:  # numpy-only user code cannot be traced
                raise ValueError(
                    "the custom activation could not be traced by JAX (write it with jax.numpy), or use backend='numpy'"
                ) from exc

        return wrapped

    return check(f), check(df)


def jet(act: Any) -> tuple[Any, Any, Any, Any]:
    """σ and its first three derivatives as jax.numpy functions (the dNTK samplers): a built-in's array
    definitions, or a custom activation's supplied derivatives completed by forward-mode
    differentiation of the highest one supplied."""
    import jax
    import jax.numpy as jnp

    if not act.is_custom:
        return tuple(array_function(jnp, act.name, act.params, d) for d in range(4))  # type: ignore[return-value]
    fs = list(activation(act))
    fs.extend(act.derivatives[1:3])

    def derivative(g: Any) -> Any:
        return lambda z: jax.jvp(g, (z,), (jnp.ones_like(z),))[1]

    while len(fs) < 4:
        fs.append(derivative(fs[-1]))
    return fs[0], fs[1], fs[2], fs[3]


def act_key(act: Any) -> Any:
    return ("custom", id(act)) if act.is_custom else (act.name, tuple(sorted(act.params.items())))


_CACHE: dict[Any, tuple[Any, Any]] = {}


def cached(key: Any, act: Any, build: Callable[[], Any]) -> Any:
    """The jitted function for ``key`` (built once; custom activations are keyed by id and kept alive)."""
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0]
    fn = build()
    if len(_CACHE) >= 16:
        _CACHE.clear()
    _CACHE[key] = (fn, act)
    return fn


def devices(jax: Any, devs: Sequence[Any] | None) -> tuple[Any, ...]:
    with x64(jax):
        out = tuple(jax.devices() if devs is None else devs)
    if not out:
        raise ValueError("devices is empty; give at least one jax device or None for all")
    return out


def batching(devs: tuple[Any, ...], gmax: int, batch: int | None, bytes_per_network: int) -> tuple[int, int]:
    """(batches per group, networks per batch) for groups of at most ``gmax`` networks.

    ``batch=None``: the memory budget (:data:`CPU_BATCH_BYTES` per device on CPU,
    :data:`ACCEL_BATCH_BYTES` per accelerator) over ``bytes_per_network``, capped at
    :data:`CPU_BATCH_CAP` (CPU) or :data:`ACCEL_BATCH_CAP` per accelerator.  Then the batches of a
    group are balanced and rounded up to a multiple of the number of devices.
    """
    nd = len(devs)
    if batch is None:
        accel = devs[0].platform != "cpu"
        budget = ACCEL_BATCH_BYTES if accel else CPU_BATCH_BYTES
        batch = max(1, budget // max(1, bytes_per_network)) * nd
        batch = min(batch, ACCEL_BATCH_CAP * nd if accel else CPU_BATCH_CAP)
    batch = int(min(batch, gmax))
    nb = math.ceil(gmax / batch)
    bs = math.ceil(gmax / nb)
    return nb, nd * math.ceil(bs / nd)


def mesh(devs: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """(batch-axis sharding, replicated, (scan, batch) index sharding) on a 1-D mesh of ``devs``."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    m = Mesh(np.array(devs), ("d",))
    return NamedSharding(m, P("d")), NamedSharding(m, P()), NamedSharding(m, P(None, "d"))


def indices(start: int, end: int, nb: int, bs: int) -> tuple[np.ndarray, np.ndarray]:
    """Network indices (nb, bs) of the group [start, end) and the mask of the real ones."""
    idx = start + np.arange(nb * bs, dtype=np.int64).reshape(nb, bs)
    mask = idx < end
    return np.where(mask, idx, start).astype(np.uint32), mask


def run_groups(
    bounds: Sequence[tuple[int, int]],
    batch: int | None,
    seed: int,
    devs: Sequence[Any] | None,
    bytes_per_network: int,
    make_group: Callable[[tuple[Any, ...], int, int], Callable[..., Any]],
) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """(generator of per-group float64 sums, networks per batch)."""
    jax = require_jax()
    dv = devices(jax, devs)
    gmax = max(e - s for s, e in bounds)
    nb, bs = batching(dv, gmax, batch, bytes_per_network)

    def gen() -> Iterator[dict[str, np.ndarray]]:
        with x64(jax):
            fn = make_group(dv, nb, bs)
            key = jax.random.key(seed)
            for start, end in bounds:
                idx, mask = indices(start, end, nb, bs)
                out = fn(idx, mask, key)
                yield {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    return gen(), bs
