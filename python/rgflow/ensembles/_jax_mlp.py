"""JAX backend of the MLP sampler (optional: ``pip install rgflow[jax]``).

The per-batch statistics are the same function as the numpy backend
(:func:`rgflow.ensembles._estimators.batch_sums`, written against an array namespace), here
traced with ``jax.numpy``.  Per group of networks one jitted call runs a ``lax.scan`` over its
batches; in each step the network keys ``fold_in(key(seed), i)`` are turned into weights by a
``vmap``-ed sampler, the batch statistics are summed and added to the float64 carry.  Batching,
sharding and the group loop are those of every JAX backend (:mod:`rgflow.ensembles._jax`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _jax
from ._dntk import DNTK_SUMS, dntk_sums
from ._estimators import batch_sums


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
    probes: int = 0,
) -> Any:
    """The jitted per-group function, cached on the static structure of the run (``probes``:
    dNTK probe neurons per layer, 0 without the dNTK family)."""
    key = ("mlp", _jax.act_key(act), widths, N, dtype_name, ntk, direct, layers_drawn, devices, nb, bs, probes)

    def build() -> Any:
        import jax
        import jax.numpy as jnp

        fns = _jax.activation(act)
        jet = _jax.jet(act) if probes else None
        dt = jnp.dtype(dtype_name)
        batch_sharding, replicated, in_sh = _jax.mesh(devices)

        def draw(key: Any, scales: Any) -> tuple[list[Any], list[Any], list[Any]]:
            keys = jax.random.split(key, 2 * max(layers_drawn, 1))
            Ws, bs_ = [], []
            for l in range(1, layers_drawn + 1):
                n, m = widths[l - 1], widths[l]
                Ws.append(jax.random.normal(keys[2 * l - 2], (m, n), dtype=dt) * scales[0][l - 1])
                bs_.append(jax.random.normal(keys[2 * l - 1], (m,), dtype=dt) * scales[1][l - 1])
            if probes:  # probe rows of layers 2..L from their own key: the other draws are unchanged
                pkeys = jax.random.split(jax.random.fold_in(key, 2**31 - 1), max(len(widths) - 2, 1))
                Ps = [
                    jax.random.normal(pkeys[l - 2], (probes, widths[l - 1]), dtype=dt) * scales[2][l - 2]
                    for l in range(2, len(widths))
                ]
                return Ws, bs_, Ps
            return Ws, bs_, []

        def run_group(
            idx: Any, mask: Any, base_key: Any, x: Any, hp: Any, consts: Any, shifts: Any, scales: Any, zero: Any
        ) -> Any:
            def body(carry: Any, xs: Any) -> Any:
                i, msk = xs
                i = jax.lax.with_sharding_constraint(i, batch_sharding)
                keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(i)
                Ws, bs_, Ps = jax.vmap(lambda k: draw(k, scales))(keys)
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
                if probes:
                    L = len(widths) - 1
                    s.update(dntk_sums(jnp, jet or (), x, Ws, bs_, Ps, hp, consts["h1"], L=L, mask=msk.astype(dt)))
                return jax.tree_util.tree_map(lambda a, b: a + b, carry, s), None

            out, _ = jax.lax.scan(body, zero, (idx, mask))
            return out

        return jax.jit(run_group, in_shardings=(in_sh, in_sh) + (replicated,) * 7, out_shardings=replicated)

    return _jax.cached(key, act, build)


def group_function(plan: Any, shifts: Any, devs: tuple[Any, ...], nb: int, bs: int) -> Any:
    """``(idx, mask, key) -> float64 sums`` of one group (call inside ``jax.enable_x64``)."""
    import jax.numpy as jnp

    dname = np.dtype(plan.dtype).name
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
        plan.probes if plan.dntk else 0,
    )
    x = jnp.asarray(plan.x, dtype=dname)
    hp = {k: jnp.asarray(v, dtype=dname) for k, v in plan.hp.items()}
    consts = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in plan.consts.items()}
    sh = (jnp.asarray(shifts[0]), jnp.asarray(shifts[1]))
    w = np.asarray(plan.widths[:-1], dtype=np.float64)
    scales = (
        jnp.asarray(np.sqrt(plan.hp["C_W"] / w), dtype=dname),
        jnp.asarray(np.sqrt(plan.hp["C_b"]), dtype=dname),
        jnp.asarray(np.sqrt(plan.hp["C_W"][1:] / w[1:]), dtype=dname),  # dNTK probes of layers 2..L
    )
    zero = {k: jnp.zeros(v, dtype=jnp.float64) for k, v in _sum_shapes(plan).items()}

    def group(idx: Any, mask: Any, key: Any) -> Any:
        return fn(idx, mask, key, x, hp, consts, sh, scales, zero)

    return group


def _sum_shapes(plan: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the per-batch sums returned by ``batch_sums`` (the scan carry)."""
    L, N = plan.L, plan.N
    two, four = (L, N, N), (L, N, N, N, N)
    shapes: dict[str, tuple[int, ...]] = {"count": (), "Sx": two, "Pxx": four}
    if plan.direct:
        shapes["Qxx"] = four
    if plan.ntk:
        shapes.update({"Sy": two, "Pxy": four, "Pyy": four, "Fs": four, "Bs": four})
        if plan.direct:
            shapes.update({"Qxy": four, "Qyy": four})
    if plan.dntk:
        shapes.update({k: four for k in DNTK_SUMS})
    return shapes
