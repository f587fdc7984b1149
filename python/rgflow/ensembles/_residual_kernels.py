"""Residual-network forward steps and per-batch sums, written against an array namespace ``xp``
(numpy or ``jax.numpy``): one definition traced by both backends of the residual samplers.

* pre-activation ResNets (``resnets.md``): :func:`block_step` (block law, the exact conditional
  Gaussian of one block given φ), :func:`weights_step` (dense weights), :func:`pre_sums`;
* residual MLPs (Appendix B): :func:`res_forward`, :func:`res_sums`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def res_sums(xp: Any, z: Any, w: Any = None) -> tuple[Any, Any, Any]:
    """float64 sums over a batch of networks (weights ``w`` (B,) or None) of the per-network pair
    estimators of one layer, ``z`` (B, n, N):  ``Ĝ_ab = Σ_i z_ia z_ib / n``,
    ``P_abcd = Σ_{i≠j} z_ia z_ib z_jc z_jd / (n(n−1))``, ``R_abc = Σ_{i≠j} z_ia z_ib z_jc / (n(n−1))``."""
    B, n, N = z.shape
    z = z.astype(xp.float64)
    zz = (z[:, :, :, None] * z[:, :, None, :]).reshape(B, n, N * N)  # z_ia z_ib
    Gh = zz.sum(axis=1).reshape(B, N, N) / n
    q4 = (xp.swapaxes(zz, 1, 2) @ zz).reshape(B, N, N, N, N)  # Σ_i z_ia z_ib z_ic z_id
    q3 = (xp.swapaxes(zz, 1, 2) @ z).reshape(B, N, N, N)  # Σ_i z_ia z_ib z_ic
    m1 = z.sum(axis=1)
    P = (n * n * Gh[:, :, :, None, None] * Gh[:, None, None, :, :] - q4) / (n * (n - 1))
    R = (n * Gh[:, :, :, None] * m1[:, None, None, :] - q3) / (n * (n - 1))
    if w is not None:
        Gh, P, R = (a * w.reshape((-1,) + (1,) * (a.ndim - 1)) for a in (Gh, P, R))
    return Gh.sum(0), P.sum(0), R.sum(0)


def res_forward(xp: Any, sig: Any, z: Any, W: Any, b: Any, gamma: float) -> Any:
    """Residual layer (B.3) with ξ = 1: ``z' = b + W σ(z) + γ z`` (W, b already scaled)."""
    return b + W @ sig(z) + gamma * z


def sqrtm_psd(xp: Any, q: Any) -> Any:
    """The principal square root R = U √w Uᵀ (symmetric, R R = q) of a batch of symmetric PSD
    matrices; negative rounding-level eigenvalues are clipped to 0.  Unique, so the numpy and
    JAX backends turn the same noise into the same step."""
    w, u = xp.linalg.eigh(q)
    return (u * xp.sqrt(xp.clip(w, 0.0, None))[..., None, :]) @ xp.swapaxes(u, -1, -2)


def psd_factor(xp: Any, q: Any) -> Any:
    """F with F Fᵀ = q for a batch of symmetric PSD matrices: the Cholesky factor when every
    matrix of the batch is positive definite, else (a singular Σ̂: repeated inputs, n < N) the
    principal square root.  Both are unique, so the numpy and JAX backends agree."""
    if xp is np:
        try:
            return np.linalg.cholesky(q)
        except np.linalg.LinAlgError:
            return sqrtm_psd(np, q)
    import jax

    L = xp.linalg.cholesky(q)
    return jax.lax.cond(xp.all(xp.isfinite(L)), lambda: L, lambda: sqrtm_psd(xp, q))


def block_step(xp: Any, phi: Any, s: Any, Z: Any, eps: float, C_W: float) -> Any:
    """One block of the exact block law (spec a.2): ``φ' = φ + ε Z Fᵀ`` with ``F Fᵀ = C_W Σ̂``,
    ``Σ̂ = σ(φ)ᵀσ(φ)/n``; ``Z`` (B, n, N) standard normal.  Same law as ``φ + ε W σ(φ)``."""
    n = phi.shape[-2]
    sig = (xp.swapaxes(s, -1, -2) @ s) * (C_W / n)
    return phi + eps * (Z @ xp.swapaxes(psd_factor(xp, sig), -1, -2))


def weights_step(xp: Any, phi: Any, s: Any, W: Any, eps: float) -> Any:
    """One block with explicit weights ``W`` (B, n, n), already scaled to variance C_W/n."""
    return phi + eps * (W @ s)


def pre_sums(xp: Any, phi: Any, s: Any, w: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """float64 sums over a batch (weights ``w`` (B,) or None) of ``G = φᵀφ/n`` (N, N),
    ``vec G vec Gᵀ`` (N², N²), ``Σ̂ = σᵀσ/n`` (N, N), ``vec G vec Σ̂ᵀ`` and ``vec Σ̂ vec Σ̂ᵀ``."""
    B, n, N = phi.shape
    G = ((xp.swapaxes(phi, -1, -2) @ phi) / n).astype(xp.float64)
    S = ((xp.swapaxes(s, -1, -2) @ s) / n).astype(xp.float64)
    Gf = G.reshape(B, N * N)
    Sf = S.reshape(B, N * N)
    if w is not None:
        G, S, Gw, Sw = G * w[:, None, None], S * w[:, None, None], Gf * w[:, None], Sf * w[:, None]
    else:
        Gw, Sw = Gf, Sf
    return G.sum(0), Gw.T @ Gf, S.sum(0), Gw.T @ Sf, Sw.T @ Sf
