"""Sampled residual MLPs (PDLT Appendix B): estimates of K, V, S with batch-means standard errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._util.validation import check_inputs
from ..models import ResMLP, check_same_origin
from ..recursions import ResTheory
from . import _jax_residual
from ._engine import DEFAULT_GROUPS, DEFAULT_NETWORKS, DEFAULT_SEED, Sampler, check_options, run, warn_float32
from ._jax_residual import resmlp_bytes_per_network
from ._residual_kernels import res_forward, res_sums
from ._results import ResEnsemble, ResStderr, make_stderr, theory_kernel

#: numpy networks per batch when ``batch=None``.
NUMPY_BATCH = 256


def sample_resmlp(
    net: ResMLP,
    x: Any,
    networks: int = DEFAULT_NETWORKS,
    seed: int = DEFAULT_SEED,
    groups: int = DEFAULT_GROUPS,
    batch: int | None = None,
    *,
    backend: str = "numpy",
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    theory: Any = None,
    progress: bool = True,
) -> ResEnsemble:
    """Sample residual MLPs by drawing every weight (numpy or JAX); use :func:`rgflow.sample`.

    A residual net is *not* conditionally Gaussian given the previous layer's metric alone (the
    identity branch carries z itself), so weights are drawn directly.  Estimators, over
    networks and all neuron pairs i ≠ j (n = width):

    * ``K[a,b] = E[(1/n) Σ_i z_{i;a} z_{i;b}]``
    * ``V[a,b,c,d] = n (E_{i≠j}[z_{i;a} z_{i;b} z_{j;c} z_{j;d}] − K_ab K_cd)``
    * ``S[a,b,c] = n E_{i≠j}[z_{i;a} z_{i;b} z_{j;c}]``
    * ``K1 = n (K − theory.K)`` when ``theory`` (a :class:`~rgflow.ResTheory`) is given, else None.

    The common arguments (``networks``, ``seed``, ``groups``, ``batch``, ``backend``, ``dtype``,
    ``devices``, ``progress``) are those of :func:`rgflow.sample`; ``batch=None`` means 256
    networks per numpy batch, or the memory budget of the JAX backends.
    """
    if not isinstance(net, ResMLP):
        raise TypeError(f"net must be an rgflow.ResMLP, got {type(net).__name__}")
    x = check_inputs(x)
    opts = check_options(networks, groups, seed, batch, backend, dtype, devices, progress)
    if net.width < 2:
        raise ValueError("sampling the pair estimators needs width >= 2")
    warn_float32(opts, "V = n·Cov and S")
    n, L, (N, n0) = net.width, net.depth, x.shape
    K_inf = None
    if theory is not None and theory is not False:
        if isinstance(theory, ResTheory):
            check_same_origin(
                "rgflow.sample(theory=)", ("theory", theory.net, theory.x), ("the sampled net", net, x), widths="ignore"
            )
        K_inf = theory_kernel(theory)
        if K_inf.shape != (L, N, N):
            raise ValueError(f"theory.K has shape {K_inf.shape}, expected {(L, N, N)} for this network and x")
    dt = opts.np_dtype
    sig_np = net.activation.numpy
    xd = x.astype(dt, copy=False)
    sb = [np.sqrt(net.C_b[l]) for l in range(L)]
    sw = [np.sqrt(net.C_W[0] / n0)] + [np.sqrt(net.C_W[l] / n) for l in range(1, L)]

    def sig(z: np.ndarray) -> np.ndarray:
        return sig_np(z).astype(dt, copy=False)

    def numpy_sums(rng: np.random.Generator, B: int) -> dict[str, np.ndarray]:
        acc = {k: np.zeros((L,) + (N,) * r) for k, r in (("G", 2), ("P", 4), ("R", 3))}
        z = (sb[0] * rng.standard_normal((B, n, 1))).astype(dt, copy=False)
        z = z + (sw[0] * rng.standard_normal((B, n, n0))).astype(dt, copy=False) @ xd.T
        for l in range(L):
            if l > 0:
                W = (sw[l] * rng.standard_normal((B, n, n))).astype(dt, copy=False)
                b = (sb[l] * rng.standard_normal((B, n, 1))).astype(dt, copy=False)
                z = res_forward(np, sig, z, W, b, net.gamma[l])
            for k, v in zip(("G", "P", "R"), res_sums(np, z), strict=True):
                acc[k][l] += v
        return acc

    def estimates(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = float(s["count"])
        G, P, R = s["G"] / m, s["P"] / m, s["R"] / m
        return {"K": G, "V": n * (P - G[..., :, :, None, None] * G[..., None, None, :, :]), "S": n * R}

    def jax_group(devs: tuple[Any, ...], nb: int, bs: int) -> Any:
        return _jax_residual.resmlp_group(net, x, opts.dtype, devs, nb, bs)

    res = run(
        opts,
        Sampler(
            label="ResMLP",
            numpy_sums=numpy_sums,
            numpy_batch=NUMPY_BATCH,
            estimates=estimates,
            jax_group=jax_group,
            bytes_per_network=resmlp_bytes_per_network(n, n0, N),
        ),
    )
    est, se = res.estimates, res.stderr
    if K_inf is not None:
        est["K1"], se["K1"] = n * (est["K"] - K_inf), n * se["K"]
    return ResEnsemble(
        net=net,
        x=x,
        width=n,
        networks=opts.networks,
        groups=opts.groups,
        seed=opts.seed,
        backend=opts.backend,
        batch=res.batch,
        dtype=opts.dtype,
        elapsed=res.elapsed,
        networks_per_second=res.networks_per_second,
        K=est["K"],
        V=est["V"],
        S=est["S"],
        K1=est.get("K1"),
        stderr=make_stderr(ResStderr, se),
    )
