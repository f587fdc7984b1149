"""JAX backends of :func:`rgflow.sample_preresnet` and :func:`rgflow.sample_resmlp`
(optional: ``pip install rgflow[jax]``).

The per-block steps and the per-batch statistics are the same functions as the numpy backends
(``preresnet.block_step``, ``weights_step``, ``pre_sums``; ``resnet.res_forward``,
``res_sums``), written against an array namespace and traced here with ``jax.numpy``.  Per
group of networks one jitted call runs a ``lax.scan`` over its batches and, inside, a
``lax.scan`` over the layers; the float64 sums are the scan carry.  Network i draws all its
noise from ``fold_in(key(seed), i)`` (then ``fold_in(·, ℓ)`` per layer), so results do not
depend on the batch size or on the number of devices; with several devices the batch axis is
sharded over a 1-D mesh (``NamedSharding``), as in :mod:`rgflow._jax_sampler`.

float64 runs inside ``jax.enable_x64`` (scoped; the global default is not touched).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._jax_mlp import ACCEL_BATCH_BYTES, CPU_BATCH_BYTES, act_key, jax_activation, require_jax, x64
from ._residual_kernels import block_step, pre_sums, res_forward, res_sums, weights_step

_CACHE: dict[Any, tuple[Any, Any]] = {}


def _remember(key: Any, fn: Any, act: Any) -> Any:
    if len(_CACHE) >= 16:
        _CACHE.clear()
    _CACHE[key] = (fn, act)  # keep act alive: custom activations are keyed by id
    return fn


def _devices(jax: Any, devices: Sequence[Any] | None) -> tuple[Any, ...]:
    with x64(jax):
        devs = tuple(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices is empty; give at least one jax device or None for all")
    return devs


def _batching(devs: tuple[Any, ...], gmax: int, batch: int | None, bytes_per_network: int) -> tuple[int, int]:
    """(batches per group, networks per batch): balanced, divisible over the devices."""
    nd = len(devs)
    if batch is None:
        accel = devs[0].platform != "cpu"
        budget = ACCEL_BATCH_BYTES if accel else CPU_BATCH_BYTES
        batch = max(1, budget // max(1, bytes_per_network)) * nd
        batch = min(batch, 8192 * nd if accel else 2048)
    batch = int(min(batch, gmax))
    nb = math.ceil(gmax / batch)
    bs = math.ceil(gmax / nb)
    return nb, nd * math.ceil(bs / nd)


def _mesh(devs: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(devs), ("d",))
    return NamedSharding(mesh, P("d")), NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "d"))


def _indices(start: int, end: int, nb: int, bs: int) -> tuple[np.ndarray, np.ndarray]:
    idx = start + np.arange(nb * bs, dtype=np.int64).reshape(nb, bs)
    mask = idx < end
    return np.where(mask, idx, start).astype(np.uint32), mask


# ============================================================================ pre-activation ResNet


def _preresnet_fn(
    act: Any,
    n: int,
    N: int,
    depth: int,
    layers: tuple[int, ...],
    sampler: str,
    eps: float,
    C_W: float,
    dtype_name: str,
    devs: tuple[Any, ...],
) -> Any:
    key = ("pre", act_key(act), n, N, depth, layers, sampler, eps, C_W, dtype_name, devs)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0]
    import jax
    import jax.numpy as jnp

    sigma, _ = jax_activation(act)
    dt = jnp.dtype(dtype_name)
    batch_sh, repl, idx_sh = _mesh(devs)
    M = len(layers)
    slot = np.full(depth + 1, -1, dtype=np.int32)
    slot[list(layers)] = np.arange(M, dtype=np.int32)
    w_scale = math.sqrt(C_W / n)

    def add(acc: Any, i: Any, sums: tuple[Any, ...]) -> Any:
        return tuple(a.at[i].add(s) for a, s in zip(acc, sums, strict=True))

    def batch_stats(acc: Any, i: Any, msk: Any, base_key: Any, r0: Any) -> Any:
        i = jax.lax.with_sharding_constraint(i, batch_sh)
        keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(i)
        w = msk.astype(jnp.float64)

        def noise(ell: Any, shape: tuple[int, ...]) -> Any:
            z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, ell), shape, dtype=dt))(keys)
            return jax.lax.with_sharding_constraint(z, batch_sh)

        phi = noise(0, (n, N)) @ r0

        def block(carry: Any, xs: Any) -> Any:
            phi, acc = carry
            ell, k = xs
            s = sigma(phi)
            acc = jax.lax.cond(k >= 0, lambda a: add(a, k, pre_sums(jnp, phi, s, w)), lambda a: a, acc)
            if sampler == "block":
                phi = block_step(jnp, phi, s, noise(ell + 1, (n, N)), eps, C_W)
            else:
                phi = weights_step(jnp, phi, s, noise(ell + 1, (n, n)) * w_scale, eps)
            return (phi, acc), None

        ells = jnp.arange(depth, dtype=jnp.uint32)
        (phi, acc), _ = jax.lax.scan(block, (phi, acc), (ells, jnp.asarray(slot[:depth])))
        return add(acc, M - 1, pre_sums(jnp, phi, sigma(phi), w))

    def run_group(idx: Any, mask: Any, base_key: Any, r0: Any, zero: Any) -> Any:
        def body(acc: Any, xs: Any) -> Any:
            return batch_stats(acc, xs[0], xs[1], base_key, r0), None

        out, _ = jax.lax.scan(body, zero, (idx, mask))
        return out

    fn = jax.jit(run_group, in_shardings=(idx_sh, idx_sh, repl, repl, repl), out_shardings=repl)
    return _remember(key, fn, act)


def run_preresnet(
    net: Any,
    r0: np.ndarray,
    layers: Sequence[int],
    sampler: str,
    per: int,
    groups: int,
    batch: int | None,
    seed: int,
    dtype: str,
    devices: Sequence[Any] | None,
) -> tuple[Iterator[tuple[np.ndarray, ...]], int]:
    """(generator of per-group float64 sums (G, vec G vec Gᵀ, Σ̂, vec G vec Σ̂ᵀ, vec Σ̂ vec Σ̂ᵀ) at the
    recorded layers, batch size)."""
    jax = require_jax()
    import jax.numpy as jnp

    devs = _devices(jax, devices)
    N, n, M = r0.shape[0], net.width, len(layers)
    itemsize = 8 if dtype == "float64" else 4
    per_net = itemsize * (8 * n * N + (3 * n * n if sampler == "weights" else 0)) + 8 * 4 * N**4
    nb, bs = _batching(devs, per, batch, per_net)

    def gen() -> Iterator[tuple[np.ndarray, ...]]:
        with x64(jax):
            fn = _preresnet_fn(net.activation, n, N, net.depth, tuple(layers), sampler, net.eps, net.C_W, dtype, devs)
            base_key = jax.random.key(seed)
            r0j = jnp.asarray(r0, dtype=dtype)
            zero = (
                jnp.zeros((M, N, N), jnp.float64),
                jnp.zeros((M, N * N, N * N), jnp.float64),
                jnp.zeros((M, N, N), jnp.float64),
                jnp.zeros((M, N * N, N * N), jnp.float64),
                jnp.zeros((M, N * N, N * N), jnp.float64),
            )
            for g in range(groups):
                idx, mask = _indices(g * per, (g + 1) * per, nb, bs)
                out = fn(idx, mask, base_key, r0j, zero)
                yield tuple(np.asarray(a, dtype=np.float64) for a in out)  # type: ignore[misc]

    return gen(), bs


# ============================================================================ residual MLP


def _resmlp_fn(act: Any, n: int, N: int, n0: int, depth: int, devs: tuple[Any, ...]) -> Any:
    key = ("res", act_key(act), n, N, n0, depth, devs)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0]
    import jax
    import jax.numpy as jnp

    sigma, _ = jax_activation(act)
    batch_sh, repl, idx_sh = _mesh(devs)

    def add(acc: Any, l: Any, sums: tuple[Any, Any, Any]) -> Any:
        return {k: acc[k].at[l].add(s) for k, s in zip(("G", "P", "R"), sums, strict=True)}

    def batch_stats(acc: Any, i: Any, msk: Any, base_key: Any, x: Any, hp: Any) -> Any:
        i = jax.lax.with_sharding_constraint(i, batch_sh)
        keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(i)
        w = msk.astype(jnp.float64)

        def draw(l: Any, m: int) -> tuple[Any, Any]:
            # one normal draw per network and layer: weights (n, m) and bias (n, 1) side by side
            Wb = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, l), (n, m + 1), jnp.float64))(keys)
            Wb = jax.lax.with_sharding_constraint(Wb, batch_sh)
            return Wb[:, :, :m], Wb[:, :, m:]

        W, b = draw(0, n0)
        z = hp["sb"][0] * b + (hp["sw"][0] * W) @ x.T
        acc = add(acc, 0, res_sums(jnp, z, w))

        def layer(carry: Any, xs: Any) -> Any:
            z, acc = carry
            l, sw, sb, g = xs
            W, b = draw(l, n)
            z = res_forward(jnp, sigma, z, sw * W, sb * b, g)
            return (z, add(acc, l, res_sums(jnp, z, w))), None

        if depth > 1:
            ls = jnp.arange(1, depth, dtype=jnp.int32)
            (z, acc), _ = jax.lax.scan(layer, (z, acc), (ls, hp["sw"][1:], hp["sb"][1:], hp["gamma"][1:]))
        return acc

    def run_group(idx: Any, mask: Any, base_key: Any, x: Any, hp: Any, zero: Any) -> Any:
        def body(acc: Any, xs: Any) -> Any:
            return batch_stats(acc, xs[0], xs[1], base_key, x, hp), None

        out, _ = jax.lax.scan(body, zero, (idx, mask))
        return out

    fn = jax.jit(run_group, in_shardings=(idx_sh, idx_sh, repl, repl, repl, repl), out_shardings=repl)
    return _remember(key, fn, act)


def run_resmlp(
    net: Any, x: np.ndarray, bounds: np.ndarray, batch: int | None, seed: int, devices: Sequence[Any] | None
) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """(generator of per-group float64 sums {G, P, R} stacked over the layers, batch size)."""
    jax = require_jax()
    import jax.numpy as jnp

    devs = _devices(jax, devices)
    n, L, (N, n0) = net.width, net.depth, x.shape
    gmax = int(np.max(np.diff(bounds)))
    per_net = 8 * (2 * n * max(n, n0) + 6 * n * N + n * N**4)
    nb, bs = _batching(devs, gmax, batch, per_net)
    w = np.array([x.shape[1]] + [n] * (L - 1), dtype=np.float64)

    def gen() -> Iterator[dict[str, np.ndarray]]:
        with x64(jax):
            fn = _resmlp_fn(net.activation, n, N, n0, L, devs)
            base_key = jax.random.key(seed)
            hp = {
                "sw": jnp.asarray(np.sqrt(np.array(net.C_W) / w)),
                "sb": jnp.asarray(np.sqrt(np.array(net.C_b))),
                "gamma": jnp.asarray(np.array(net.gamma, dtype=np.float64)),
            }
            xj = jnp.asarray(x, dtype=jnp.float64)
            zero = {k: jnp.zeros((L,) + (N,) * r, jnp.float64) for k, r in (("G", 2), ("P", 4), ("R", 3))}
            for g in range(len(bounds) - 1):
                idx, mask = _indices(int(bounds[g]), int(bounds[g + 1]), nb, bs)
                out = fn(idx, mask, base_key, xj, hp, zero)
                yield {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    return gen(), bs
