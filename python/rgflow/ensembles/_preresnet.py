"""Sampled pre-activation ResNets (block law or dense weights): estimates with batch-means standard errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._util.validation import recorded_layers
from ..models import PreResNet, check_same_origin
from ..recursions import PreResTheory
from . import _jax_residual
from ._engine import DEFAULT_GROUPS, DEFAULT_NETWORKS, DEFAULT_SEED, Sampler, check_options, run, warn_float32
from ._jax_residual import preresnet_bytes_per_network
from ._residual_kernels import block_step, pre_sums, sqrtm_psd, weights_step
from ._results import PreResEnsemble, PreResStderr, make_stderr, theory_kernel

SAMPLERS = ("block", "weights")
#: numpy networks per batch when ``batch=None``.
NUMPY_BATCH = 1000


def sample_preresnet(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    networks: int = DEFAULT_NETWORKS,
    seed: int = DEFAULT_SEED,
    groups: int = DEFAULT_GROUPS,
    every: int = 1,
    batch: int | None = None,
    sampler: str = "block",
    backend: str = "numpy",
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    theory: Any = None,
    progress: bool = True,
) -> PreResEnsemble:
    """Sample ``networks`` independent pre-activation ResNets; use :func:`rgflow.sample`.

    Estimates at layers ``0, every, …, L`` (inputs ``x`` or the input ``kernel``): the mean kernel
    ``K = E[G]`` (``G = φᵀφ/n``), ``V = n·Cov(G, G)``, the mean ``Sigma`` of ``Σ̂ = σ(φ)ᵀσ(φ)/n``,
    ``V_GS = n·Cov(G, Σ̂)``, ``V_SS = n·Cov(Σ̂, Σ̂)``, and ``K1 = n(K − K∞)`` when ``theory`` (a
    :class:`~rgflow.PreResTheory` at the same layers) is given.

    ``sampler="weights"`` draws every ``W^ℓ`` (n×n) explicitly; ``sampler="block"`` (default, same
    law, ~n/N times cheaper) uses the exact block law of spec a.2: given φ, the rows of ``Wσ(φ)``
    are i.i.d. ``N(0, C_W Σ̂)``.

    The common arguments are those of :func:`rgflow.sample`; ``batch=None`` means 1000 networks
    per numpy batch, or the memory budget of the JAX backends.
    """
    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.PreResNet, got {type(net).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be 'block' or 'weights', got {sampler!r}")
    opts = check_options(networks, groups, seed, batch, backend, dtype, devices, progress)
    warn_float32(opts, "V = n·Cov(G) and K1 = n(Ḡ − K∞)")
    layers = recorded_layers(net.depth, every)
    k0 = net.input_kernel(x, kernel)
    r0 = sqrtm_psd(np, (k0 + k0.T) / 2)
    N, n, M = k0.shape[0], net.width, len(layers)
    K_inf = None
    if theory is not None and theory is not False:
        if isinstance(theory, PreResTheory):
            check_same_origin(
                "rgflow.sample(theory=)", ("theory", theory.net, theory.K_init), ("the sampled net", net, k0), "ignore"
            )
        K_inf = theory_kernel(theory)
        if K_inf.shape != (M, N, N):
            raise ValueError(
                f"theory kernel has shape {K_inf.shape}, expected {(M, N, N)}: compute it at the same layers (every=)"
            )
    rec = {ell: i for i, ell in enumerate(layers)}
    dt = opts.np_dtype
    act = net.activation
    eps, cw = net.eps, net.C_W
    r0d = r0.astype(dt)

    def numpy_sums(rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
        two, four = np.zeros((M, N, N)), np.zeros((M, N * N, N * N))
        sums = {"G": two, "GG": four, "S": two.copy(), "GS": four.copy(), "SS": four.copy()}
        phi = rng.standard_normal((b, n, N), dtype=dt) @ r0d
        for ell in range(net.depth + 1):
            s = act.numpy(phi).astype(dt, copy=False)
            if ell in rec:
                i = rec[ell]
                for acc, v in zip(sums.values(), pre_sums(np, phi, s), strict=True):
                    acc[i] += v
            if ell == net.depth:
                break
            if sampler == "block":
                phi = block_step(np, phi, s, rng.standard_normal((b, n, N), dtype=dt), eps, cw)
            else:
                W = rng.standard_normal((b, n, n), dtype=dt) * dt(math.sqrt(cw / n))
                phi = weights_step(np, phi, s, W, eps)
        return sums

    def estimates(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = float(s["count"])

        def ncov(sxy: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
            fx, fy = mx.reshape(*mx.shape[:-2], N * N), my.reshape(*my.shape[:-2], N * N)
            cov = (sxy / m - fx[..., :, None] * fy[..., None, :]) * (m / (m - 1))
            return n * cov.reshape(*cov.shape[:-2], N, N, N, N)

        mg, ms = s["G"] / m, s["S"] / m
        return {
            "K": mg,
            "V": ncov(s["GG"], mg, mg),
            "Sigma": ms,
            "V_GS": ncov(s["GS"], mg, ms),
            "V_SS": ncov(s["SS"], ms, ms),
        }

    def jax_group(devs: tuple[Any, ...], nb: int, bs: int) -> Any:
        return _jax_residual.preresnet_group(net, r0, layers, sampler, opts.dtype, devs, nb, bs)

    res = run(
        opts,
        Sampler(
            label=f"PreResNet, {sampler}",
            numpy_sums=numpy_sums,
            numpy_batch=NUMPY_BATCH,
            estimates=estimates,
            jax_group=jax_group,
            bytes_per_network=preresnet_bytes_per_network(n, N, sampler, opts.dtype),
        ),
    )
    est, se = res.estimates, res.stderr
    if K_inf is not None:
        est["K1"], se["K1"] = n * (est["K"] - K_inf), n * se["K"]
    return PreResEnsemble(
        net=net,
        x=None if x is None else np.asarray(x, dtype=float),
        kernel=k0,
        sampler=sampler,
        width=n,
        layers=np.array(layers),
        t=net.eps**2 * np.array(layers, dtype=float),
        networks=opts.networks,
        groups=opts.groups,
        seed=opts.seed,
        backend=opts.backend,
        batch=res.batch,
        dtype=opts.dtype,
        elapsed=res.elapsed,
        networks_per_second=res.networks_per_second,
        stderr=make_stderr(PreResStderr, se),
        K1=est.get("K1"),
        **{k: est[k] for k in ("K", "V", "Sigma", "V_GS", "V_SS")},
    )
