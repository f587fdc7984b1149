"""Sampled residual MLPs (Appendix B): estimates of K, V, S with batch-means standard errors."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._util.progress import Progress
from .._util.validation import check_inputs
from ..models import ResMLP
from ..recursions import ResTheory
from ._residual_kernels import res_forward, res_sums


class ResEnsemble:
    """Result of :func:`sample_resmlp`: estimates ``G`` (L, N, N), ``V`` (L, N⁴), ``S`` (L, N³) and
    their batch-means standard errors ``G_err``, ``V_err``, ``S_err``."""

    def __init__(self, **kw: Any) -> None:
        self.networks: int = kw.pop("networks")
        self.width: int = kw.pop("width")
        for k, v in kw.items():
            setattr(self, k, v)

    def K1(self, theory: ResTheory) -> tuple[np.ndarray, np.ndarray]:
        """Estimate of ``n (G − K)`` and its standard error, for comparison with ``theory.K1``."""
        return self.width * (self.G - theory.K), self.width * self.G_err

    def __repr__(self) -> str:
        return f"ResEnsemble(networks={self.networks}, width={self.width}, L={self.G.shape[0]}, N={self.G.shape[1]})"


def sample_resmlp(
    net: ResMLP,
    x: Any,
    networks: int = 10_000,
    seed: int = 0,
    groups: int = 32,
    batch: int | None = None,
    *,
    backend: str = "numpy",
    devices: Sequence[Any] | None = None,
    progress: bool = False,
) -> ResEnsemble:
    """Sample residual MLPs by drawing every weight (float64; numpy or JAX).

    A residual net is *not* conditionally Gaussian given the previous layer's metric alone (the
    identity branch carries z itself), so weights are drawn directly.  Estimators, over
    networks and all neuron pairs i ≠ j (n = width):

    * ``G[a,b] = E[(1/n) Σ_i z_{i;a} z_{i;b}]``
    * ``V[a,b,c,d] = n (E_{i≠j}[z_{i;a} z_{i;b} z_{j;c} z_{j;d}] − G_ab G_cd)``
    * ``S[a,b,c] = n E_{i≠j}[z_{i;a} z_{i;b} z_{j;c}]``

    Standard errors are batch means over ``groups`` groups of networks.  ``backend="numpy"``
    (default batch 256, batch k from ``default_rng(SeedSequence(seed, spawn_key=(k,)))``) or
    ``"jax"`` (jit + ``lax.scan``; network i from ``fold_in(key(seed), i)``, independent of the
    batch size and of the devices the batches are sharded over).  ``progress=True`` shows a
    progress line on stderr (after 2 s, updated per group).
    """
    if not isinstance(net, ResMLP):
        raise TypeError(f"net must be an rgflow.resnet.ResMLP, got {type(net).__name__}")
    x = check_inputs(x)
    for name, v, lo in (("networks", networks, 2), ("groups", groups, 2), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (automatic), got {batch!r}")
    if groups > networks:
        raise ValueError(f"groups ({groups}) must not exceed networks ({networks})")
    if backend not in ("numpy", "jax"):
        raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")
    if net.width < 2:
        raise ValueError("sampling the pair estimators needs width >= 2")
    n, L, N = net.width, net.depth, x.shape[0]
    bounds = np.linspace(0, networks, groups + 1).astype(int)
    t0 = time.perf_counter()
    if backend == "jax":
        from . import _jax_residual

        gen, used_batch = _jax_residual.run_resmlp(net, x, bounds, batch, int(seed), devices)
    else:
        used_batch = int(batch or 256)
        gen = _run_resmlp_numpy(net, x, bounds, used_batch, int(seed))
    sums = {k: np.zeros((groups, L) + (N,) * r) for k, r in (("G", 2), ("P", 4), ("R", 3))}
    prog = Progress(networks, progress, f"rgflow.sample_resmlp[{backend}]")
    try:
        for g, out in enumerate(gen):
            for k in sums:
                sums[k][g] = out[k]
            prog.update(int(bounds[g + 1]))
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0
    counts = np.diff(bounds).astype(float)

    def est(G: np.ndarray, P: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        V = n * (P - G[..., :, :, None, None] * G[..., None, None, :, :])
        return G, V, n * R

    tot = est(*(sums[k].sum(0) / networks for k in ("G", "P", "R")))
    per = est(*(sums[k] / counts.reshape((-1,) + (1,) * (sums[k].ndim - 1)) for k in ("G", "P", "R")))
    errs = [p.std(axis=0, ddof=1) / math.sqrt(groups) for p in per]
    return ResEnsemble(
        networks=int(networks),
        width=n,
        G=tot[0],
        V=tot[1],
        S=tot[2],
        G_err=errs[0],
        V_err=errs[1],
        S_err=errs[2],
        backend=backend,
        batch=used_batch,
        elapsed=elapsed,
        networks_per_second=networks / elapsed if elapsed > 0 else float("inf"),
    )


def _run_resmlp_numpy(
    net: ResMLP, x: np.ndarray, bounds: np.ndarray, batch: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Per group of networks: float64 sums of the pair estimators, every layer stacked."""
    n, L, (N, n0) = net.width, net.depth, x.shape
    sig = net.activation.numpy
    bidx = 0
    for g in range(len(bounds) - 1):
        acc = {k: np.zeros((L,) + (N,) * r) for k, r in (("G", 2), ("P", 4), ("R", 3))}
        done = bounds[g]
        while done < bounds[g + 1]:
            B = min(batch, bounds[g + 1] - done)
            done += B
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(bidx,)))
            bidx += 1
            z = np.sqrt(net.C_b[0]) * rng.standard_normal((B, n, 1))
            z = z + np.sqrt(net.C_W[0] / n0) * rng.standard_normal((B, n, n0)) @ x.T
            for l in range(L):
                if l > 0:
                    W = np.sqrt(net.C_W[l] / n) * rng.standard_normal((B, n, n))
                    b = np.sqrt(net.C_b[l]) * rng.standard_normal((B, n, 1))
                    z = res_forward(np, sig, z, W, b, net.gamma[l])
                for k, v in zip(("G", "P", "R"), res_sums(np, z), strict=True):
                    acc[k][l] += v
        yield acc
