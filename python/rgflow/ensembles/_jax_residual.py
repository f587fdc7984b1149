"""JAX backends of the residual samplers (optional: ``pip install rgflow[jax]``).

The per-block steps and the per-batch statistics are the same functions as the numpy backends
(:mod:`rgflow.ensembles._residual_kernels`: ``block_step``, ``weights_step``, ``pre_sums``;
``res_forward``, ``res_sums``), written against an array namespace and traced here with
``jax.numpy``.  Per group of networks one jitted call runs a ``lax.scan`` over its batches and,
inside, a ``lax.scan`` over the layers; the float64 sums are the scan carry.  Network i draws all
its noise from ``fold_in(key(seed), i)`` (then ``fold_in(·, ℓ)`` per layer).  Batching, sharding
and the group loop are those of every JAX backend (:mod:`rgflow.ensembles._jax`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _jax
from ._residual_kernels import block_step, pre_sums, res_forward, res_sums, weights_step

PRE_SUMS = ("G", "GG", "S", "GS", "SS")
RES_SUMS = ("G", "P", "R")

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
    key = ("pre", _jax.act_key(act), n, N, depth, layers, sampler, eps, C_W, dtype_name, devs)

    def build() -> Any:
        import jax
        import jax.numpy as jnp

        sigma, _ = _jax.activation(act)
        dt = jnp.dtype(dtype_name)
        batch_sh, repl, idx_sh = _jax.mesh(devs)
        M = len(layers)
        slot = np.full(depth + 1, -1, dtype=np.int32)
        slot[list(layers)] = np.arange(M, dtype=np.int32)
        w_scale = math.sqrt(C_W / n)

        def add(acc: Any, i: Any, sums: tuple[Any, ...]) -> Any:
            return {k: acc[k].at[i].add(s) for k, s in zip(PRE_SUMS, sums, strict=True)}

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

        return jax.jit(run_group, in_shardings=(idx_sh, idx_sh, repl, repl, repl), out_shardings=repl)

    return _jax.cached(key, act, build)


def preresnet_group(
    net: Any, r0: np.ndarray, layers: Sequence[int], sampler: str, dtype: str, devs: tuple[Any, ...], nb: int, bs: int
) -> Any:
    """``(idx, mask, key) -> float64 sums`` (G, GG, S, GS, SS at the recorded layers) of one group."""
    import jax.numpy as jnp

    N, n, M = r0.shape[0], net.width, len(layers)
    fn = _preresnet_fn(net.activation, n, N, net.depth, tuple(layers), sampler, net.eps, net.C_W, dtype, devs)
    r0j = jnp.asarray(r0, dtype=dtype)
    two, four = (M, N, N), (M, N * N, N * N)
    zero = {k: jnp.zeros(two if k in ("G", "S") else four, jnp.float64) for k in PRE_SUMS}

    def group(idx: Any, mask: Any, key: Any) -> Any:
        return fn(idx, mask, key, r0j, zero)

    return group


def preresnet_bytes_per_network(n: int, N: int, sampler: str, dtype: str) -> int:
    itemsize = 8 if dtype == "float64" else 4
    return itemsize * (8 * n * N + (3 * n * n if sampler == "weights" else 0)) + 8 * 4 * N**4


# ============================================================================ residual MLP


def _resmlp_fn(act: Any, n: int, N: int, n0: int, depth: int, dtype_name: str, devs: tuple[Any, ...]) -> Any:
    key = ("res", _jax.act_key(act), n, N, n0, depth, dtype_name, devs)

    def build() -> Any:
        import jax
        import jax.numpy as jnp

        sigma, _ = _jax.activation(act)
        dt = jnp.dtype(dtype_name)
        batch_sh, repl, idx_sh = _jax.mesh(devs)

        def add(acc: Any, l: Any, sums: tuple[Any, Any, Any]) -> Any:
            return {k: acc[k].at[l].add(s) for k, s in zip(RES_SUMS, sums, strict=True)}

        def batch_stats(acc: Any, i: Any, msk: Any, base_key: Any, x: Any, hp: Any) -> Any:
            i = jax.lax.with_sharding_constraint(i, batch_sh)
            keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(i)
            w = msk.astype(jnp.float64)

            def draw(l: Any, m: int) -> tuple[Any, Any]:
                # one normal draw per network and layer: weights (n, m) and bias (n, 1) side by side
                Wb = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, l), (n, m + 1), dt))(keys)
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

        return jax.jit(run_group, in_shardings=(idx_sh, idx_sh, repl, repl, repl, repl), out_shardings=repl)

    return _jax.cached(key, act, build)


def resmlp_group(net: Any, x: np.ndarray, dtype: str, devs: tuple[Any, ...], nb: int, bs: int) -> Any:
    """``(idx, mask, key) -> float64 sums`` {G, P, R} (stacked over the layers) of one group."""
    import jax.numpy as jnp

    n, L, (N, n0) = net.width, net.depth, x.shape
    fn = _resmlp_fn(net.activation, n, N, n0, L, dtype, devs)
    w = np.array([n0] + [n] * (L - 1), dtype=np.float64)
    hp = {
        "sw": jnp.asarray(np.sqrt(np.array(net.C_W) / w), dtype=dtype),
        "sb": jnp.asarray(np.sqrt(np.array(net.C_b)), dtype=dtype),
        "gamma": jnp.asarray(np.array(net.gamma, dtype=np.float64), dtype=dtype),
    }
    xj = jnp.asarray(x, dtype=dtype)
    zero = {k: jnp.zeros((L,) + (N,) * r, jnp.float64) for k, r in (("G", 2), ("P", 4), ("R", 3))}

    def group(idx: Any, mask: Any, key: Any) -> Any:
        return fn(idx, mask, key, xj, hp, zero)

    return group


def resmlp_bytes_per_network(n: int, n0: int, N: int) -> int:
    return 8 * (2 * n * max(n, n0) + 6 * n * N + n * N**4)
