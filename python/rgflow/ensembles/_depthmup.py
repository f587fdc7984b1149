"""Sampled depth-μP ResNets at initialisation (spec ``nfd.md`` §1.1, §2.1): kernels and NTK with
batch-means standard errors (numpy).

Every weight is drawn (U, W_ℓ, v i.i.d. N(0, 1); the decoupled twin's backward weights W̃_ℓ
independently), and per network, with ``g_ℓ = γ0 n ∂f/∂h_ℓ`` from backpropagation through the same
W_ℓ and ``g̃_ℓ`` through W̃_ℓ (``g_L = g̃_L = v`` or ``v ⊙ φ'(h_L)``):

* ``K[ℓ] = E[h_ℓᵀh_ℓ/n]``, ``G[ℓ] = E[g_ℓᵀg_ℓ/n]`` (ℓ = 0..L);
* ``Theta = E[w_out r̂ᵀr̂/n + w_hid a_L² Σ_ℓ (g_ℓᵀg_ℓ/n) ⊙ (φ_{ℓ-1}ᵀφ_{ℓ-1}/n) + w_in (g_0ᵀg_0/n) ⊙ K_in]``:
  the exact empirical NTK of each network for its learning-rate rule (every trained group at
  η γ0² n, hidden times L^{-p}), normalised so that ``f(1) = f(0) + η Θ̂ Δ(0) + O(η²)``;
* ``Theta_decoupled``: the same with ``g_ℓ(x)ᵀg̃_ℓ(x')/n`` in place of ``g_ℓᵀg_ℓ/n`` (the decoupled
  twin's first-step kernel: the output moves through g, the update is built from g̃).

The means differ from the infinite-width values of :func:`rgflow.theory` by O(1/n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._util.validation import check_inputs
from ..models import DepthMuPResNet
from ..recursions import ntk_weights
from ._engine import DEFAULT_GROUPS, DEFAULT_NETWORKS, DEFAULT_SEED, Sampler, check_options, run
from ._results import DepthMuPEnsemble, DepthMuPStderr, make_stderr

#: Memory budget of one numpy batch (the stored W_ℓ) when ``batch=None``.
BATCH_BYTES = 1 << 27
#: Most numpy networks per batch.
NUMPY_BATCH = 256


def _auto_batch(n: int, L: int, decoupled: bool) -> int:
    per = 8 * L * n * n * (2 if decoupled else 1)
    return max(1, min(NUMPY_BATCH, BATCH_BYTES // per))


def sample_depthmup(
    net: DepthMuPResNet,
    x: Any,
    networks: int = DEFAULT_NETWORKS,
    seed: int = DEFAULT_SEED,
    groups: int = DEFAULT_GROUPS,
    batch: int | None = None,
    *,
    backend: str = "numpy",
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    decoupled: bool = True,
    progress: bool = True,
) -> DepthMuPEnsemble:
    """Sample depth-μP ResNets at initialisation; use :func:`rgflow.sample`.

    Estimates ``K``, ``G`` (ℓ = 0..L), ``Theta`` and (``decoupled=True``) ``Theta_decoupled`` with
    batch-means standard errors (see the module doc).  numpy only (``backend="jax"`` is a
    ValueError).  ``batch=None``: as many networks per batch as fit in 128 MiB of weights (≤ 256).
    """
    if not isinstance(net, DepthMuPResNet):
        raise TypeError(f"net must be an rgflow.DepthMuPResNet, got {type(net).__name__}")
    if backend != "numpy":
        raise ValueError(f"DepthMuPResNet ensembles run on backend='numpy' only, got backend={backend!r}")
    x = check_inputs(x)
    opts = check_options(networks, groups, seed, batch, backend, dtype, devices, progress)
    if not isinstance(decoupled, bool):
        raise TypeError(f"decoupled must be a bool, got {decoupled!r}")
    n, L, (N, d) = net.width, net.depth, x.shape
    a = net.branch_multiplier
    a2 = net.block_variance
    w_in, w_hid, w_out = ntk_weights(net)
    phi_readout = net.readout == "phi"
    dt = opts.np_dtype
    xd = x.astype(dt, copy=False)
    K_in = x @ x.T / d
    act = net.activation
    scale = a / math.sqrt(n)

    def phi(z: np.ndarray, k: int = 0) -> np.ndarray:
        return act.numpy(z, k).astype(dt, copy=False)

    def gram(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Per-network uᵀv/n, (B, N, N) in float64."""
        return np.matmul(u.transpose(0, 2, 1), v).astype(np.float64) / n

    def numpy_sums(rng: np.random.Generator, B: int) -> dict[str, np.ndarray]:
        U = rng.standard_normal((B, n, d)).astype(dt, copy=False)
        v = rng.standard_normal((B, n, 1)).astype(dt, copy=False)
        h = np.matmul(U, xd.T) / dt(math.sqrt(d))
        hs, Ws, Phis = [h], [], []
        for _ in range(L):
            W = rng.standard_normal((B, n, n)).astype(dt, copy=False)
            p = phi(h)
            Phis.append(gram(p, p))
            h = h + dt(scale) * np.matmul(W, p)
            hs.append(h)
            Ws.append(W)
        K = np.stack([gram(hl, hl).sum(0) for hl in hs])
        r = phi(h) if phi_readout else h
        readout = gram(r, r)
        g = v * phi(h, 1) if phi_readout else np.broadcast_to(v, (B, n, N))
        gt = g
        G = np.zeros((L + 1, N, N))
        hidden = np.zeros((B, N, N))
        hidden_dec = np.zeros((B, N, N))
        for ell in range(L, 0, -1):
            Gl = gram(g, g)
            G[ell] = Gl.sum(0)
            hidden += Gl * Phis[ell - 1]
            dphi = phi(hs[ell - 1], 1)
            g_next = g + dt(scale) * dphi * np.matmul(Ws[ell - 1].transpose(0, 2, 1), g)
            if decoupled:
                hidden_dec += gram(g, gt) * Phis[ell - 1]
                Wt = rng.standard_normal((B, n, n)).astype(dt, copy=False)
                gt = gt + dt(scale) * dphi * np.matmul(Wt.transpose(0, 2, 1), gt)
            g = g_next
        G0 = gram(g, g)
        G[0] = G0.sum(0)
        theta = w_out * readout + w_hid * a2 * hidden + w_in * G0 * K_in
        out = {"K": K, "G": G, "Theta": theta.sum(0)}
        if decoupled:
            theta_dec = w_out * readout + w_hid * a2 * hidden_dec + w_in * gram(g, gt) * K_in
            out["Theta_decoupled"] = theta_dec.sum(0)
        return out

    def estimates(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = float(s["count"])
        return {k: v / m for k, v in s.items() if k != "count"}

    res = run(
        opts,
        Sampler(
            label="DepthMuPResNet",
            numpy_sums=numpy_sums,
            numpy_batch=_auto_batch(n, L, decoupled),
            estimates=estimates,
        ),
    )
    est, se = res.estimates, res.stderr
    return DepthMuPEnsemble(
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
        G=est["G"],
        Theta=est["Theta"],
        Theta_decoupled=est.get("Theta_decoupled"),
        stderr=make_stderr(DepthMuPStderr, se),
    )
