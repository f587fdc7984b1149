"""JAX backend of :func:`rgflow.ensemble.sample` (optional: ``pip install rgflow[jax]``).

The per-batch statistics are the same function as the numpy backend
(:func:`rgflow.ensemble._batch_sums`, written against an array namespace), here traced with
``jax.numpy``.  Per group of networks one jitted call runs a ``lax.scan`` over its batches; in
each step the network keys ``fold_in(key(seed), i)`` are turned into weights by a ``vmap``-ed
sampler, the batch statistics are summed and added to the float64 carry.  With several devices
the batch axis is sharded over a 1-D mesh (``NamedSharding``); the sums are reduced across
devices by XLA.  Network i gets the same weights whatever the batch size or device count, so
sharded and unsharded runs agree up to floating-point summation order.

float64 runs inside ``jax.enable_x64`` (a scoped setting; the global default is not touched).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._estimators import batch_sums

_INSTALL = "pip install rgflow[jax]"
#: Memory budget (bytes) of one batch when ``batch=None``: per device on CPU, and on GPU/TPU.
CPU_BATCH_BYTES = 96 * 2**20
ACCEL_BATCH_BYTES = 2 * 2**30


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
        from jax.experimental import enable_x64

        return enable_x64()
    except ImportError:  # pragma: no cover
        jax.config.update("jax_enable_x64", True)
        return contextlib.nullcontext()


def jax_activation(act: Any) -> tuple[Any, Any]:
    """(σ, σ') as jax.numpy functions for a built-in or a jax-traceable custom activation."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import erf

    name, p = act.name, act.params
    if act.is_custom:
        f = act.function
        df = act.derivatives[0] if act.derivatives else jnp.vectorize(jax.grad(f))

        def check(g: Any) -> Any:
            def wrapped(z: Any) -> Any:
                try:
                    return g(z)
                except Exception as exc:  # numpy-only user code cannot be traced
                    raise ValueError(
                        "the custom activation could not be traced by JAX (write it with jax.numpy), "
                        "or use backend='numpy'"
                    ) from exc

            return wrapped

        return check(f), check(df)
    if name == "linear":
        return (lambda z: z), (lambda z: jnp.ones_like(z))
    if name in ("relu", "leaky_relu"):
        a = 0.0 if name == "relu" else p["slope"]
        return (lambda z: jnp.where(z > 0, z, a * z)), (lambda z: jnp.where(z > 0, 1.0, a).astype(z.dtype))
    if name == "tanh":
        return jnp.tanh, (lambda z: 1 - jnp.tanh(z) ** 2)
    if name == "erf":
        return erf, (lambda z: (2.0 / math.sqrt(math.pi)) * jnp.exp(-z * z))
    if name == "sin":
        return jnp.sin, jnp.cos
    if name == "gelu":
        r2, r2pi = math.sqrt(2.0), math.sqrt(2.0 * math.pi)

        def cdf(z: Any) -> Any:
            return 0.5 * (1 + erf(z / r2))

        return (lambda z: z * cdf(z)), (lambda z: cdf(z) + z * jnp.exp(-0.5 * z * z) / r2pi)
    if name in ("swish", "softplus", "sigmoid"):

        def sig(z: Any) -> Any:
            return 0.5 * (1 + jnp.tanh(0.5 * z))

        if name == "sigmoid":
            return sig, (lambda z: sig(z) * (1 - sig(z)))
        if name == "softplus":
            return (lambda z: jnp.logaddexp(0.0, z)), sig
        return (lambda z: z * sig(z)), (lambda z: sig(z) + z * sig(z) * (1 - sig(z)))
    if name == "elu":
        al = p["alpha"]
        return (
            (lambda z: jnp.where(z > 0, z, al * (jnp.exp(jnp.minimum(z, 0.0)) - 1))),
            (lambda z: jnp.where(z > 0, 1.0, al * jnp.exp(jnp.minimum(z, 0.0))).astype(z.dtype)),
        )
    if name == "monomial":
        k = int(p["p"])
        if k == 0:
            return (lambda z: jnp.ones_like(z)), (lambda z: jnp.zeros_like(z))
        return (lambda z: z**k), (lambda z: k * z ** (k - 1))
    raise ValueError(f"activation {name!r} has no JAX implementation; use backend='numpy'")  # pragma: no cover


def act_key(act: Any) -> Any:
    return ("custom", id(act)) if act.is_custom else (act.name, tuple(sorted(act.params.items())))


_CACHE: dict[Any, tuple[Any, Any]] = {}


def _compiled(
    act: Any,
    widths: tuple[int, ...],
    N: int,
    dtype_name: str,
    ntk: bool,
    direct: bool,
    layers_drawn: int,
    devices: tuple[Any, ...],
    nb: int,
    bs: int,
) -> Any:
    """The jitted per-group function, cached on the static structure of the run."""
    key = (act_key(act), widths, N, dtype_name, ntk, direct, layers_drawn, devices, nb, bs)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0]
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    fns = jax_activation(act)
    dt = jnp.dtype(dtype_name)
    mesh = Mesh(np.array(devices), ("d",))
    batch_sharding = NamedSharding(mesh, P("d"))
    replicated = NamedSharding(mesh, P())

    def draw(key: Any, scales: Any) -> tuple[list[Any], list[Any]]:
        keys = jax.random.split(key, 2 * max(layers_drawn, 1))
        Ws, bs_ = [], []
        for l in range(1, layers_drawn + 1):
            n, m = widths[l - 1], widths[l]
            Ws.append(jax.random.normal(keys[2 * l - 2], (m, n), dtype=dt) * scales[0][l - 1])
            bs_.append(jax.random.normal(keys[2 * l - 1], (m,), dtype=dt) * scales[1][l - 1])
        return Ws, bs_

    def run_group(
        idx: Any, mask: Any, base_key: Any, x: Any, hp: Any, consts: Any, shifts: Any, scales: Any, zero: Any
    ) -> Any:
        def body(carry: Any, xs: Any) -> Any:
            i, msk = xs
            i = jax.lax.with_sharding_constraint(i, batch_sharding)
            keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(i)
            Ws, bs_ = jax.vmap(lambda k: draw(k, scales))(keys)
            Ws = [jax.lax.with_sharding_constraint(W, batch_sharding) for W in Ws]
            s = batch_sums(
                jnp,
                fns,
                x,
                Ws,
                bs_,
                hp,
                consts,
                shifts,
                B=bs,
                widths=widths,
                ntk=ntk,
                direct=direct,
                mask=msk.astype(dt),
            )
            return jax.tree_util.tree_map(lambda a, b: a + b, carry, s), None

        out, _ = jax.lax.scan(body, zero, (idx, mask))
        return out

    in_sh = NamedSharding(mesh, P(None, "d"))
    fn = jax.jit(
        run_group,
        in_shardings=(in_sh, in_sh) + (replicated,) * 7,
        out_shardings=replicated,
    )
    if len(_CACHE) >= 16:
        _CACHE.clear()
    _CACHE[key] = (fn, act)  # keep act alive: custom activations are keyed by id
    return fn


def run(
    plan: Any,
    bounds: Sequence[tuple[int, int]],
    batch: int | None,
    seed: int,
    shifts: Any,
    progress: Any,
    devices: Sequence[Any] | None,
) -> tuple[Any, int]:
    """Returns (generator of per-group float64 numpy sums, batch size used)."""
    jax = require_jax()
    import jax.numpy as jnp

    with x64(jax):
        devs = tuple(jax.devices() if devices is None else devices)
        if not devs:
            raise ValueError("devices is empty; give at least one jax device or None for all")
    nd = len(devs)
    gmax = max(e - s for s, e in bounds)
    if batch is None:
        accel = devs[0].platform not in ("cpu",)
        budget = ACCEL_BATCH_BYTES if accel else CPU_BATCH_BYTES
        batch = max(1, budget // max(1, plan.bytes_per_network())) * nd
        batch = min(batch, 4096 * nd if accel else 2048)
    batch = int(min(batch, gmax))
    nb = math.ceil(gmax / batch)
    bs = math.ceil(gmax / nb)  # balance the batches of a group
    bs = nd * math.ceil(bs / nd)  # divisible over the devices
    dname = np.dtype(plan.dtype).name

    def gen():
        with x64(jax):
            fn = _compiled(
                plan.net.activation,
                tuple(plan.widths),
                plan.N,
                dname,
                plan.ntk,
                plan.direct,
                plan.layers_drawn,
                devs,
                nb,
                bs,
            )
            base_key = jax.random.key(seed)
            x = jnp.asarray(plan.x, dtype=dname)
            hp = {k: jnp.asarray(v, dtype=dname) for k, v in plan.hp.items()}
            consts = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in plan.consts.items()}
            sh = (jnp.asarray(shifts[0]), jnp.asarray(shifts[1]))
            w = np.asarray(plan.widths[:-1], dtype=np.float64)
            scales = (
                jnp.asarray(np.sqrt(plan.hp["C_W"] / w), dtype=dname),
                jnp.asarray(np.sqrt(plan.hp["C_b"]), dtype=dname),
            )
            zero = {k: jnp.zeros(v, dtype=jnp.float64) for k, v in _sum_shapes(plan).items()}
            done = 0
            for start, end in bounds:
                idx = start + np.arange(nb * bs, dtype=np.int64).reshape(nb, bs)
                mask = idx < end
                idx = np.where(mask, idx, start).astype(np.uint32)
                out = fn(idx, mask, base_key, x, hp, consts, sh, scales, zero)
                sums = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
                done += end - start
                progress.update(done)
                yield sums

    return gen(), bs


def _sum_shapes(plan: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the per-batch sums returned by ``_batch_sums`` (the scan carry)."""
    L, N = plan.L, plan.N
    two, four = (L, N, N), (L, N, N, N, N)
    shapes: dict[str, tuple[int, ...]] = {"count": (), "Sx": two, "Pxx": four}
    if plan.direct:
        shapes["Qxx"] = four
    if plan.ntk:
        shapes.update({"Sy": two, "Pxy": four, "Pyy": four, "Fs": four, "Bs": four})
        if plan.direct:
            shapes.update({"Qxy": four, "Qyy": four})
    return shapes
