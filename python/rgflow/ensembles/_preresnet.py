"""Sampled pre-activation ResNets (block law or dense weights): estimates with batch-means standard errors."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._util.progress import Progress
from .._util.validation import recorded_layers
from ..models import PreResNet
from ..recursions import PreResTheory
from ._residual_kernels import block_step, pre_sums, sqrtm_psd, weights_step


class PreResEnsemble:
    """Result of :func:`sample_preresnet`: ``layers``, ``t``; estimates ``G`` (M, N, N) = mean
    empirical kernel, ``V4`` (M, N, N, N, N) = n·Cov(G), ``Sigma`` (M, N, N) = mean ``Σ̂ = σ(φ)ᵀσ(φ)/n``,
    ``V_GS[ℓ,a,b,c,d] = n·Cov(G_ab, Σ̂_cd)``, ``V_SS = n·Cov(Σ̂, Σ̂)``, each with a batch-means standard
    error ``*_err``."""

    def __init__(self, **kw: Any) -> None:
        self.networks: int = kw.pop("networks")
        self.width: int = kw.pop("width")
        for k, v in kw.items():
            setattr(self, k, v)

    def K1(self, theory: PreResTheory) -> tuple[np.ndarray, np.ndarray]:
        """``K1_mic = n(Ḡ − K0)`` and its standard error (K0 must be accurate to ≪ 1/n)."""
        return self.width * (self.G - theory.K0), self.width * self.G_err

    def U1(self, theory: PreResTheory) -> tuple[np.ndarray, np.ndarray]:
        """``U1_exact = n(mean Σ̂ − ⟨σσ⟩_{K0})`` and its standard error."""
        return self.width * (self.Sigma - theory.E2), self.width * self.Sigma_err


_DTYPES = {"float64": np.float64, "float32": np.float32}
BACKENDS = ("numpy", "jax")
SAMPLERS = ("block", "weights")


def _check_sampling_args(
    networks: Any, groups: Any, batch: Any, seed: Any, backend: Any, dtype: Any, devices: Any
) -> None:
    for name, v, lo in (("networks", networks, 2), ("groups", groups, 2), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if networks < 2 * groups:
        raise ValueError(
            f"need networks >= 2*groups for batch-means errors, got networks={networks}, groups={groups}; "
            f"use groups <= {networks // 2}"
        )
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (automatic), got {batch!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' (recommended) or 'float32', got {dtype!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")


def sample_preresnet(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    networks: int = 10_000,
    seed: int = 0,
    groups: int = 32,
    every: int = 1,
    batch: int | None = None,
    sampler: str = "block",
    backend: str = "numpy",
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    progress: bool = False,
) -> PreResEnsemble:
    """Sample ``networks`` independent pre-activation ResNets and estimate Ḡ, n·Cov(G) and mean Σ̂
    at layers ``0, every, …, L`` with batch-means errors over ``groups`` groups of
    ``networks // groups`` networks each (the remainder is not sampled).

    ``sampler="weights"`` draws every ``W^ℓ`` (n×n) explicitly; ``sampler="block"`` (default, same
    law, ~n/N times cheaper) uses the exact block law of spec a.2: given φ, the rows of ``Wσ(φ)``
    are i.i.d. ``N(0, C_W Σ̂)``.

    ``backend="numpy"`` (batch k of the run uses ``default_rng(SeedSequence(seed, spawn_key=(k,)))``;
    default batch 1000) or ``"jax"`` (``pip install rgflow[jax]``: jit, ``lax.scan`` over batches
    and blocks, network i drawn from ``fold_in(key(seed), i)`` whatever the batch size or device
    count, batches sharded over ``devices``, default all).  ``dtype="float32"`` runs the forward
    pass in single precision; every sum is accumulated in float64 either way.  ``progress=True``
    shows a progress line on stderr (after 2 s, updated per group).
    """
    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be 'block' or 'weights', got {sampler!r}")
    _check_sampling_args(networks, groups, batch, seed, backend, dtype, devices)
    networks, groups, seed = int(networks), int(groups), int(seed)
    if dtype == "float32":
        warnings.warn(
            "dtype='float32': the forward pass runs in single precision (sums are still float64); "
            "V4 = n·Cov(G) and K1 = n(Ḡ − K0) are 1/n effects, so use float64 for quantitative checks",
            UserWarning,
            stacklevel=2,
        )
    layers = recorded_layers(net.depth, every)
    k0 = net.input_kernel(x, kernel)
    r0 = sqrtm_psd(np, (k0 + k0.T) / 2)
    N, n, M = k0.shape[0], net.width, len(layers)
    per = networks // groups
    t0 = time.perf_counter()
    if backend == "jax":
        from . import _jax_residual

        gen, used_batch = _jax_residual.run_preresnet(
            net, r0, layers, sampler, per, groups, batch, seed, dtype, devices
        )
    else:
        used_batch = int(min(batch or 1000, per))
        gen = _run_preresnet_numpy(net, r0, layers, sampler, per, groups, used_batch, seed, _DTYPES[dtype])
    sg = np.zeros((groups, M, N, N))
    sgg = np.zeros((groups, M, N * N, N * N))
    ss = np.zeros((groups, M, N, N))
    sgs = np.zeros((groups, M, N * N, N * N))
    sss = np.zeros((groups, M, N * N, N * N))
    prog = Progress(per * groups, progress, f"rgflow.sample_preresnet[{backend}, {sampler}]")
    try:
        for g, sums in enumerate(gen):
            sg[g], sgg[g], ss[g], sgs[g], sss[g] = sums
            prog.update((g + 1) * per)
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0

    def est(
        sg_: np.ndarray, sgg_: np.ndarray, ss_: np.ndarray, sgs_: np.ndarray, sss_: np.ndarray, m: int
    ) -> tuple[np.ndarray, ...]:
        def ncov(sxy: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
            fx, fy = mx.reshape(*mx.shape[:-2], N * N), my.reshape(*my.shape[:-2], N * N)
            cov = (sxy / m - fx[..., :, None] * fy[..., None, :]) * (m / (m - 1))
            return n * cov.reshape(*cov.shape[:-2], N, N, N, N)

        mg, ms = sg_ / m, ss_ / m
        return mg, ncov(sgg_, mg, mg), ms, ncov(sgs_, mg, ms), ncov(sss_, ms, ms)

    Gg, Vg, Sg, GSg, SSg = est(sg, sgg, ss, sgs, sss, per)
    G, V, S, GS, SS = est(sg.sum(0), sgg.sum(0), ss.sum(0), sgs.sum(0), sss.sum(0), per * groups)

    def se(a: np.ndarray) -> np.ndarray:
        return a.std(axis=0, ddof=1) / math.sqrt(groups)

    return PreResEnsemble(
        networks=per * groups,
        width=n,
        layers=np.array(layers),
        t=net.eps**2 * np.array(layers, dtype=float),
        G=G,
        G_err=se(Gg),
        V4=V,
        V4_err=se(Vg),
        Sigma=S,
        Sigma_err=se(Sg),
        V_GS=GS,
        V_GS_err=se(GSg),
        V_SS=SS,
        V_SS_err=se(SSg),
        backend=backend,
        sampler=sampler,
        dtype=dtype,
        batch=used_batch,
        elapsed=elapsed,
        networks_per_second=per * groups / elapsed if elapsed > 0 else float("inf"),
    )


def _run_preresnet_numpy(
    net: PreResNet,
    r0: np.ndarray,
    layers: list[int],
    sampler: str,
    per: int,
    groups: int,
    batch: int,
    seed: int,
    dt: Any,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Per group: the float64 sums (G (M, N, N), vec G vec Gᵀ (M, N², N²), Σ̂ (M, N, N),
    vec G vec Σ̂ᵀ and vec Σ̂ vec Σ̂ᵀ (M, N², N²))."""
    rec = {ell: i for i, ell in enumerate(layers)}
    N, n, M = r0.shape[0], net.width, len(layers)
    act = net.activation
    eps, cw = net.eps, net.C_W
    r0 = r0.astype(dt)
    bidx = 0
    for _g in range(groups):
        sums = [np.zeros((M, N, N)), np.zeros((M, N * N, N * N)), np.zeros((M, N, N))]
        sums += [np.zeros((M, N * N, N * N)), np.zeros((M, N * N, N * N))]
        done = 0
        while done < per:
            b = min(batch, per - done)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(bidx,)))
            bidx += 1
            phi = rng.standard_normal((b, n, N), dtype=dt) @ r0
            for ell in range(net.depth + 1):
                s = act.numpy(phi).astype(dt, copy=False)
                if ell in rec:
                    i = rec[ell]
                    for acc, v in zip(sums, pre_sums(np, phi, s), strict=True):
                        acc[i] += v
                if ell == net.depth:
                    break
                if sampler == "block":
                    phi = block_step(np, phi, s, rng.standard_normal((b, n, N), dtype=dt), eps, cw)
                else:
                    W = rng.standard_normal((b, n, n), dtype=dt) * dt(math.sqrt(cw / n))
                    phi = weights_step(np, phi, s, W, eps)
            done += b
        yield tuple(sums)
