"""Per-batch float64 sums of the MLP estimators (numpy or JAX through the ``xp`` namespace).

One forward pass over a batch of networks gives, at every layer, the sums over networks of the
conditional-Gaussian estimators that :mod:`rgflow.ensembles._mlp` turns into K, V, Θ, D, F, A, B
(see that module's docstring for the normalisation).  Shared by the numpy and JAX backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pairs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangular sample pairs (a <= c), the pair index of every (a, c), and a <= c mask."""
    ia, ic = np.triu_indices(N)
    pidx = np.zeros((N, N), dtype=np.int64)
    pidx[ia, ic] = np.arange(ia.size)
    pidx[ic, ia] = np.arange(ia.size)
    upper = np.arange(N)[:, None] <= np.arange(N)[None, :]
    return ia, ic, pidx, upper


def _ntk_step(xp: Any, W: Any, U: Any, diag: bool, base: Any, pairs: tuple) -> Any:
    """Forward equation (PDLT 8.12): Θ̂'_{ab} = δ (λ_b + λ_W Σ_ab) + W P_ab W^T.

    ``U`` is P = σ'_a ⊙ Θ̂_ab ⊙ σ'_b of the previous layer, shape (B, N, N, n, n) -- or, if
    ``diag``, its diagonal (B, N, N, n) (previous NTK proportional to the identity).  Only the
    pairs a <= c are multiplied out; Θ̂'_{ca} = Θ̂'_{ac}^T fills the rest.
    Returns Θ̂' of shape (B, N, N, m, m): [b, a, c, i1, i2] = Θ̂'_{i1 i2; a c}.
    """
    ia, ic, pidx, upper = pairs
    Wt = xp.swapaxes(W, -1, -2)[:, None]
    if diag:
        T = (W[:, None] * U[:, ia, ic][:, :, None, :]) @ Wt
    else:
        T = (W[:, None] @ U[:, ia, ic]) @ Wt
    m = W.shape[1]
    if xp is np:
        theta = np.empty(T.shape[:1] + upper.shape + T.shape[2:], dtype=T.dtype)
        theta[:, ic, ia] = np.swapaxes(T, -1, -2)
        theta[:, ia, ic] = T
        np.einsum("...ii->...i", theta)[...] += base[..., None]  # writable diagonal view
        return theta
    full = T[:, pidx]
    theta = xp.where(upper[None, :, :, None, None], full, xp.swapaxes(full, -1, -2))
    return theta + base[:, :, :, None, None] * xp.eye(m, dtype=W.dtype)


def _einsum(xp: Any, spec: str, *ops: Any) -> Any:
    if xp is np:
        return np.einsum(spec, *ops, optimize=True)
    return xp.einsum(spec, *ops)


def _outer_sum(xp: Any, X: Any, Y: Any, w: Any) -> Any:
    """Σ_b w_b X_b ⊗ Y_b for X, Y of shape (B, N, N) -> (N, N, N, N), float64."""
    if w is not None:
        X = X * w[:, None, None]
    return _einsum(xp, "bij,bkl->ijkl", X, Y)


def _fb_sums(xp: Any, U: Any, R: Any, diag: bool, w: Any, f64: Any) -> tuple[Any, Any]:
    """Unnormalised F and B statistics of one layer.

    Fs[a1, a2, a3, a4] = Σ_b Σ_{k1k2} R_{k1;a1} U_{k1k2;a3a4} R_{k2;a2}
    Bs[a1, a2, a3, a4] = Σ_b Σ_{k1k2} U_{k1k2;a1a2} U_{k1k2;a3a4}
    with U (B, N, N, n, n) (or its diagonal (B, N, N, n) if ``diag``) and R (B, n, N).
    """
    B, N = U.shape[0], U.shape[1]
    Uw = U if w is None else U * w.reshape((B,) + (1,) * (U.ndim - 1))
    if diag:
        Fs = _einsum(xp, "bka,bcdk,bke->aecd", R, Uw, R)
        Uf = U.reshape(B, N * N, -1)
        Ufw = Uw.reshape(B, N * N, -1)
        Bs = _einsum(xp, "bpk,bqk->pq", Ufw, Uf)
    else:
        T1 = xp.swapaxes(R, -1, -2)[:, None, None] @ Uw  # (B, N, N, N, n): [b, a3, a4, a1, k2]
        Fs = _einsum(xp, "bcdak,bke->aecd", T1, R)
        n2 = U.shape[-1] * U.shape[-2]
        Uf = U.reshape(B, N * N, n2)
        Bs = _gram(xp, Uf if w is None else Uw.reshape(B, N * N, n2), Uf)
    return f64(Fs), f64(Bs).reshape(N, N, N, N)


def _gram(xp: Any, A: Any, B_: Any) -> Any:
    """Σ_b A_b B_b^T for A, B of shape (B, p, k) -> (p, p)."""
    if xp is np:
        # per network: A_b @ A_b.T of one buffer is a BLAS syrk, and no transposed copy is made
        out = np.zeros((A.shape[1], A.shape[1]), dtype=A.dtype)
        for b in range(A.shape[0]):
            out += A[b] @ (A[b].T if B_ is A else B_[b].T)
        return out
    # per-network products then a sum over the batch: XLA runs this faster than one
    # dot_general contracting (b, k), and it stays a batched op on accelerators
    return xp.sum(A @ xp.swapaxes(B_, -1, -2), axis=0)


def batch_sums(
    xp: Any,
    act: tuple[Any, Any],
    x: Any,
    Ws: Sequence[Any],
    bs: Sequence[Any],
    hp: dict[str, Any],
    consts: dict[str, Any],
    shifts: tuple[Any, Any],
    *,
    B: int,
    widths: tuple[int, ...],
    ntk: bool,
    direct: bool,
    mask: Any = None,
) -> dict[str, Any]:
    """Sums over one batch of networks of every per-network statistic, all layers stacked.

    ``Ws[l-1]`` (B, n_l, n_{l-1}) and ``bs[l-1]`` (B, n_l) are the already scaled weights and
    biases of layer l (only the layers the estimator needs); ``hp`` holds per-layer arrays C_b,
    C_W, lambda_b, lambda_W (index l-1); ``consts`` the layer-1 Ĝ^(1), Ĥ^(1) (float64, exact);
    ``shifts`` per-layer centring (L, N, N) of Ĝ, Ĥ; ``mask`` (B,) zero/one weights or None.
    Returned sums are float64 with a leading layer axis.
    """
    sigma, dsigma = act
    L = len(widths) - 1
    N = x.shape[0]
    dt = x.dtype
    pairs = _pairs(N)
    w = mask

    def f64(a: Any) -> Any:
        return a.astype(xp.float64)

    shift_g, shift_h = shifts
    zeros2 = xp.zeros((N, N), dtype=xp.float64)
    zeros4 = xp.zeros((N, N, N, N), dtype=xp.float64)
    cnt = f64(xp.sum(w)) if w is not None else xp.asarray(float(B), dtype=xp.float64)
    out: dict[str, list[Any]] = {k: [] for k in ("Sx", "Sy", "Pxx", "Pxy", "Pyy", "Qxx", "Qxy", "Qyy", "Fs", "Bs")}

    def push_rb(l: int, X: Any, Y: Any) -> None:
        """Conditional estimator: X = Ĝ, Y = Ĥ per network (B, N, N), or None for layer 1."""
        if X is None:
            out["Sx"].append(zeros2)
            out["Pxx"].append(zeros4)
            if ntk:
                for k in ("Sy", "Pxy", "Pyy"):
                    out[k].append(zeros2 if k == "Sy" else zeros4)
            return
        Xc = f64(X) - shift_g[l - 1]
        Xw = Xc if w is None else Xc * w[:, None, None]
        out["Sx"].append(xp.sum(Xw, axis=0))
        out["Pxx"].append(_outer_sum(xp, Xc, Xc, w))
        if ntk:
            Yc = f64(Y) - shift_h[l - 1]
            Yw = Yc if w is None else Yc * w[:, None, None]
            out["Sy"].append(xp.sum(Yw, axis=0))
            out["Pxy"].append(_outer_sum(xp, Xc, Yc, w))
            out["Pyy"].append(_outer_sum(xp, Yc, Yc, w))

    def push_direct(l: int, z: Any, theta: Any, theta_diag: bool) -> None:
        """Direct estimator: per-neuron X_i = z_i z_i, Y_i = Θ̂_ii of layer l, pairs i != j."""
        m = z.shape[1]
        norm = 1.0 / (m * (m - 1))
        Xi = f64(z[:, :, :, None] * z[:, :, None, :]) - shift_g[l - 1]  # (B, m, N, N)
        Xb = xp.mean(Xi, axis=1)
        Xbw = Xb if w is None else Xb * w[:, None, None]
        Xiw = Xi if w is None else Xi * w[:, None, None, None]
        out["Sx"].append(xp.sum(Xbw, axis=0))
        qxx = _outer_sum(xp, Xb, Xb, w)
        out["Qxx"].append(qxx)
        out["Pxx"].append((m * m * qxx - _einsum(xp, "bmij,bmkl->ijkl", Xiw, Xi)) * norm)
        if not ntk:
            return
        if theta_diag:  # layer 1: Θ̂_ij = δ_ij Ĥ^(1), deterministic
            Yi = xp.broadcast_to(f64(theta) - shift_h[l - 1], Xi.shape)
        else:
            Yi = xp.moveaxis(f64(xp.diagonal(theta, axis1=-2, axis2=-1)), -1, 1) - shift_h[l - 1]
        Yb = xp.mean(Yi, axis=1)
        Ybw = Yb if w is None else Yb * w[:, None, None]
        out["Sy"].append(xp.sum(Ybw, axis=0))
        qxy = _outer_sum(xp, Xb, Yb, w)
        qyy = _outer_sum(xp, Yb, Yb, w)
        out["Qxy"].append(qxy)
        out["Qyy"].append(qyy)
        out["Pxy"].append((m * m * qxy - _einsum(xp, "bmij,bmkl->ijkl", Xiw, Yi)) * norm)
        Yiw = Yi if w is None else Yi * w[:, None, None, None]
        out["Pyy"].append((m * m * qyy - _einsum(xp, "bmij,bmkl->ijkl", Yiw, Yi)) * norm)
        if theta_diag:
            out["Fs"].append(zeros4)
            out["Bs"].append(zeros4)
            return
        Fs, Bs = _fb_sums(xp, theta, z, False, w, f64)
        # remove the i = j terms
        dth = xp.diagonal(theta, axis1=-2, axis2=-1)  # (B, N, N, m): Θ̂_ii;cd
        dthw = dth if w is None else dth * w[:, None, None, None]
        Fs = Fs - f64(_einsum(xp, "bia,bie,bcdi->aecd", z, z, dthw))
        Bs = Bs - f64(_einsum(xp, "bpqi,brsi->pqrs", dthw, dth))
        out["Fs"].append(Fs * norm)
        out["Bs"].append(Bs * norm)

    # ---------------------------------------------------------------- layer 1
    h1 = consts["h1"]
    z = None
    theta = None  # NTK of the current layer: None (l = 1: δ_ij h1) or (B, N, N, n, n)
    if direct or L > 1:
        z = bs[0][:, :, None] + Ws[0] @ xp.asarray(x).T  # (B, n1, N)
    if direct:
        push_direct(1, z, xp.asarray(h1, dtype=xp.float64), True)
    else:
        push_rb(1, None, None)
        if ntk:
            out["Fs"].append(zeros4)
            out["Bs"].append(zeros4)

    # ---------------------------------------------------------------- layers 2..L
    for l in range(2, L + 1):
        n = widths[l - 1]
        Cb, Cw, lb, lw = hp["C_b"][l - 1], hp["C_W"][l - 1], hp["lambda_b"][l - 1], hp["lambda_W"][l - 1]
        s = sigma(z)
        Sig = _einsum(xp, "bka,bkc->bac", s, s) / n
        X = Cb + Cw * Sig
        U = None
        diag = l == 2
        if ntk:
            sp = dsigma(z)
            spT = xp.swapaxes(sp, -1, -2)  # (B, N, n)
            if diag:
                U = spT[:, :, None, :] * spT[:, None, :, :] * xp.asarray(h1, dtype=dt)[None, :, :, None]
                trU = xp.sum(U, axis=-1)
            else:
                U = theta * spT[:, :, None, :, None] * spT[:, None, :, None, :]
                trU = xp.trace(U, axis1=-2, axis2=-1)
            Y = lb + lw * Sig + (Cw / n) * trU
        else:
            Y = None
        if not direct:
            push_rb(l, X, Y)
            if ntk:
                Fs, Bs = _fb_sums(xp, U, s, diag, w, f64)
                fac = (Cw / n) ** 2
                out["Fs"].append(Fs * fac)
                out["Bs"].append(Bs * fac)
        if l < L or direct:
            W = Ws[l - 1]
            z_new = bs[l - 1][:, :, None] + W @ s
            if ntk:
                theta = _ntk_step(xp, W, U, diag, lb + lw * Sig, pairs)
            z = z_new
            if direct:
                push_direct(l, z, theta, False)

    res = {k: xp.stack(v) for k, v in out.items() if v}
    res["count"] = cnt
    return res


# ============================================================================ numpy backend
