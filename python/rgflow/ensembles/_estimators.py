"""Per-batch float64 sums of the MLP estimators (numpy or JAX through the ``xp`` namespace).

One forward pass over a batch of networks gives, at every layer, the sums over networks of the
conditional-Gaussian estimators that :mod:`rgflow.ensembles._mlp` turns into K, V, Θ, D, F, A, B
(see that module's docstring for the normalisation).  Shared by the numpy and JAX backends.
"""

from __future__ import annotations

import math
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


def _outer_sum_packed(xp: Any, X: Any, Y: Any, w: Any) -> Any:
    """Σ_b X_b ⊗ Y_b for X, Y of shape (B, P) (the sample pairs a <= c) -> (P, P), float64."""
    return _einsum(xp, "bp,bq->pq", X, Y)


def pack(Fs: Any, Bs: Any, ia: Any, ic: Any) -> tuple[Any, Any]:
    """Dense F and B sums [a1, a2, a3, a4] -> their packed forms (see :func:`unpack`)."""
    Bp = Bs[ia, ic]
    tu = np.triu_indices(ia.size)
    Fp = np.ascontiguousarray(np.transpose(Fs[:, :, ia, ic], (0, 2, 1)))
    return Fp, np.stack((Bp[:, ia, ic][tu], Bp[:, ic, ia][tu]))


def unpack(kind: str, a: Any, N: int) -> Any:
    """The full (L, N, N, N, N) array of a packed four-point estimate (or its standard error).

    The packed forms use the symmetries of the estimators (``ntk.md`` §1.2) over the sample pairs
    p = (a <= c), P = N(N+1)/2 of them, index ``pidx[a, c]``:

    * ``"sym"`` (D; (L, P, P)): X_{a1a2;a3a4}, symmetric in (a1, a2) and in (a3, a4).
    * ``"tri"`` (V, A; (L, P(P+1)/2)): also symmetric under (a1a2) <-> (a3a4): the triangle p <= q
      (``np.triu_indices(P)`` order).
    * ``"F"`` ((L, N, P, N) = [a1, p(a3a4), a2] for a3 <= a4), returned in F's order
      [a1, a3, a2, a4]; a3 > a4 from F_{a1a3a2a4} = F_{a2a4a1a3} (Θ̂_{ca} = Θ̂_{ac}ᵀ).
    * ``"B"`` ((L, 2, P(P+1)/2): the triangles of ⟨U_p, U_q⟩ and ⟨U_p, U_qᵀ⟩), returned in B's
      order [a1, a3, a2, a4]: the first where (a1 <= a2) == (a3 <= a4), else the second.
    Every entry is a copy of one packed number (the unpacked array equals the dense one exactly).
    """
    _, _, pidx, upper = _pairs(N)
    r = np.arange(N)
    L = a.shape[0]
    out = np.empty((L, N, N, N, N), dtype=a.dtype)
    P = N * (N + 1) // 2
    tidx = np.zeros((P, P), dtype=np.int64)  # triangle index of (p, q) and (q, p)
    t0, t1 = np.triu_indices(P)
    tidx[t0, t1] = tidx[t1, t0] = np.arange(t0.size)
    if kind in ("sym", "tri"):
        i, j = pidx[:, :, None, None], pidx[None, None, :, :]
        t = tidx[i, j]
        for l in range(L):
            out[l] = a[l][t] if kind == "tri" else a[l][i, j]
        return out
    # grids in the output order [a1, a3, a2, a4]
    a1, a3, a2, a4 = r[:, None, None, None], r[None, :, None, None], r[None, None, :, None], r[None, None, None, :]
    up34 = upper[a3, a4]
    if kind == "F":
        first, last, p = np.where(up34, a1, a2), np.where(up34, a2, a1), pidx[a3, a4]
        for l in range(L):
            out[l] = a[l][first, p, last]
        return out
    if kind == "B":
        which = (upper[a1, a2] != up34).astype(np.int64)
        t = tidx[pidx[a1, a2], pidx[a3, a4]]
        for l in range(L):
            out[l] = a[l][which, t]
        return out
    raise ValueError(f"unknown packed kind {kind!r}")


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


# ============================================================================ numpy: the NTK by sample pairs
# The per-network NTK Θ̂^(l) is stored once per unordered sample pair p = (a <= c), in the layout
# TH[b, i, p, j] = Θ̂^(l)_{ij;ac} (B, n, P, n), P = N(N+1)/2 (Θ̂_{ca} = Θ̂_{ac}ᵀ is never formed).
# The forward equation (PDLT 8.12) is then two 2-D GEMMs per network, Θ̂' = W (U W^T) with
# U = σ'_a ∘ Θ̂ ∘ σ'_c, computed in place in row / column chunks; F and B are read from U without
# the dense (N, N, n, n) per-network arrays: memory P n^2 per network instead of ~8 N^2 n^2.

#: Elements of one chunk temporary of the numpy NTK path (32 MiB of float64).
CHUNK = 2**22


def _chunk(total: int, per_row: int) -> int:
    return max(1, min(total, CHUNK // max(1, per_row)))


def _pair_scale(TH: Any, sp: Any, ia: Any, ic: Any) -> None:
    """In place: TH[b, i, p, j] *= σ'_{i;a_p} σ'_{j;c_p} (Θ̂ -> U of the previous layer)."""
    TH *= sp[:, :, ia][:, :, :, None]
    TH *= np.swapaxes(sp, 1, 2)[:, ic][:, None]


def _pair_trace(U: Any) -> Any:
    """tr U_p per network (B, P)."""
    return np.einsum("bipi->bp", U)


def _pair_f(U: Any, s: Any, ia: Any, ic: Any, N: int, packed: bool = False) -> Any:
    """Σ_b Σ_{k1k2} s_{k1;a1} U_{k1k2;a3a4} s_{k2;a2} as [a1, a2, a3, a4] (float64), or if
    ``packed`` as [a1, p, a2] for the pairs p = (a3 <= a4) (the rest follows by symmetry)."""
    B, n, P, _ = U.shape
    A = np.matmul(U.reshape(B, n * P, n), s)  # [b, k1, p, a2]
    sT = np.ascontiguousarray(np.swapaxes(s, 1, 2))
    M = np.matmul(sT, A.reshape(B, n, P * N)).sum(axis=0, dtype=np.float64).reshape(N, P, N)
    if packed:
        return M
    Fs = np.empty((N, N, N, N))
    Fs[:, :, ic, ia] = np.transpose(M, (2, 0, 1))  # U_{ca} = U_pᵀ
    Fs[:, :, ia, ic] = np.transpose(M, (0, 2, 1))
    return Fs


def _pair_b(U: Any, pidx: Any, sgn: Any, packed: bool = False) -> Any:
    """Σ_b Σ_{k1k2} U_{k1k2;a1a2} U_{k1k2;a3a4} as [a1, a2, a3, a4] (float64).

    With S_p = U_p + U_pᵀ and A_p = U_p - U_pᵀ, ⟨U_p, U_q⟩ = (⟨S_p,S_q⟩ + ⟨A_p,A_q⟩)/4 and
    ⟨U_p, U_qᵀ⟩ = (⟨S_p,S_q⟩ - ⟨A_p,A_q⟩)/4; each of the two Gram matrices runs over the
    n(n+1)/2 entries of one triangle (the diagonal blocks of the row chunks in full, weight 1; the
    rest of the upper triangle weight 2): 1/8 of the products of the dense N^2 x n^2 Gram matrix.
    ``packed``: the upper triangles (p <= q) of the two symmetric P x P blocks ⟨U_p, U_q⟩ and
    ⟨U_p, U_qᵀ⟩ = ⟨U_q, U_pᵀ⟩ instead, (2, P(P+1)/2) (see :func:`unpack`).
    """
    B, n, P, _ = U.shape
    GS = np.zeros((P, P), dtype=U.dtype)
    GA = np.zeros((P, P), dtype=U.dtype)
    c = _chunk(n, 4 * B * P * n)
    r2 = math.sqrt(2.0)
    for r0 in range(0, n, c):
        r1 = min(n, r0 + c)
        X = U[:, r0:r1, :, r0:]
        Yt = np.transpose(U[:, r0:, :, r0:r1], (0, 3, 2, 1))
        for G, Z in ((GS, X + Yt), (GA, X - Yt)):
            Z[..., r1 - r0 :] *= r2
            Zp = np.ascontiguousarray(np.transpose(Z, (2, 0, 1, 3))).reshape(P, -1)
            G += Zp @ Zp.T  # BLAS syrk
    if packed:
        GS, GA = GS.astype(np.float64), GA.astype(np.float64)
        tu = np.triu_indices(P)
        return np.stack(((GS + GA)[tu], (GS - GA)[tu])) * 0.25
    GS = GS.astype(np.float64)[pidx][:, :, pidx]
    GA = GA.astype(np.float64)[pidx][:, :, pidx]
    return (GS + sgn[:, :, None, None] * sgn[None, None] * GA) * 0.25


def _pair_diag_add(TH: Any, base_p: Any) -> None:
    m = TH.shape[1]
    idx = np.arange(m)
    TH[:, idx, :, idx] += base_p[None]


def _pairs_from_diag(W: Any, u: Any, base_p: Any) -> Any:
    """Θ̂^(2)_p = W diag(u_p) Wᵀ + δ base_p as TH (B, m, P, m); u (B, P, n)."""
    B, m, n = W.shape
    P = u.shape[1]
    Wt = np.ascontiguousarray(np.swapaxes(W, 1, 2))
    TH = np.empty((B, m, P, m), dtype=W.dtype)
    c = _chunk(m, B * P * max(n, m))
    for r0 in range(0, m, c):
        r1 = min(m, r0 + c)
        V = W[:, r0:r1, None, :] * u[:, None, :, :]
        TH[:, r0:r1] = np.matmul(V.reshape(B, (r1 - r0) * P, n), Wt).reshape(B, r1 - r0, P, m)
    _pair_diag_add(TH, base_p)
    return TH


def _pair_step(U: Any, W: Any, base_p: Any) -> Any:
    """Θ̂'_p = W U_p Wᵀ + δ base_p (PDLT 8.12) as TH (B, m, P, m); in place in ``U`` if m == n."""
    B, n, P, _ = U.shape
    m = W.shape[1]
    Wt = np.ascontiguousarray(np.swapaxes(W, 1, 2))
    rows = U.reshape(B, n * P, n)
    R = rows if m == n else np.empty((B, n * P, m), dtype=U.dtype)
    c = _chunk(n * P, B * max(n, m))
    for r0 in range(0, n * P, c):
        R[:, r0 : r0 + c] = np.matmul(rows[:, r0 : r0 + c], Wt)  # U_p Wᵀ
    R2 = R.reshape(B, n, P * m)
    T = R2 if m == n else np.empty((B, m, P * m), dtype=U.dtype)
    c = _chunk(P * m, B * max(n, m))
    for c0 in range(0, P * m, c):
        T[:, :, c0 : c0 + c] = np.matmul(W, R2[:, :, c0 : c0 + c])  # W (U_p Wᵀ)
    T = T.reshape(B, m, P, m)
    _pair_diag_add(T, base_p)
    return T


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
    fb: bool = True,
    into: dict[str, Any] | None = None,
    packed: bool = False,
) -> dict[str, Any]:
    """Sums over one batch of networks of every per-network statistic, all layers stacked.

    ``Ws[l-1]`` (B, n_l, n_{l-1}) and ``bs[l-1]`` (B, n_l) are the already scaled weights and
    biases of layer l (only the layers the estimator needs); ``hp`` holds per-layer arrays C_b,
    C_W, lambda_b, lambda_W (index l-1); ``consts`` the layer-1 Ĝ^(1), Ĥ^(1) (float64, exact);
    ``shifts`` per-layer centring (L, N, N) of Ĝ, Ĥ; ``mask`` (B,) zero/one weights or None;
    ``fb=False`` leaves the F and B sums zero (the pilot run needs only Ĝ and Ĥ); ``into`` (numpy):
    the sums of earlier batches, added to in place and returned; ``packed`` (numpy, conditional
    estimator, no mask): the four-point sums stored by their sample symmetries (:func:`unpack`),
    Pxx, Pxy, Pyy as (P, P), Fs as (N, P, N), Bs as (2, P, P) per layer, P = N(N+1)/2.
    Returned sums are float64 with a leading layer axis.
    """
    if packed and (xp is not np or direct or mask is not None):
        raise ValueError("packed sums need the numpy backend, the conditional estimator and no mask")
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
    ia, ic, pidx, upper = pairs
    P = ia.size
    zeros4 = xp.zeros((N, N, N, N), dtype=xp.float64)
    zero = {k: zeros4 for k in ("Pxx", "Pxy", "Pyy", "Fs", "Bs")}
    if packed:
        T = P * (P + 1) // 2
        zero = {"Pxx": np.zeros(T), "Pxy": np.zeros((P, P)), "Pyy": np.zeros(T)}
        zero.update(Fs=np.zeros((N, P, N)), Bs=np.zeros((2, T)))
        tu = np.triu_indices(P)
    cnt = f64(xp.sum(w)) if w is not None else xp.asarray(float(B), dtype=xp.float64)
    keys = ("Sx", "Sy", "Pxx", "Pxy", "Pyy", "Qxx", "Qxy", "Qyy", "Fs", "Bs")
    out: dict[str, Any] = {k: _Layers(xp, L, None if into is None else into.get(k)) for k in keys}

    def push_rb(l: int, X: Any, Y: Any) -> None:
        """Conditional estimator: X = Ĝ, Y = Ĥ per network (B, N, N), or None for layer 1."""
        if X is None:
            out["Sx"].append(zeros2)
            out["Pxx"].append(zero["Pxx"])
            if ntk:
                for k in ("Sy", "Pxy", "Pyy"):
                    out[k].append(zeros2 if k == "Sy" else zero[k])
            return
        Xc = f64(X) - shift_g[l - 1]
        Xw = Xc if w is None else Xc * w[:, None, None]
        out["Sx"].append(xp.sum(Xw, axis=0))
        outer = _outer_sum
        if packed:  # symmetric in (a1, a2) and in (a3, a4): the pairs a <= c only
            Xc = Xc[:, ia, ic]
            outer = _outer_sum_packed
            out["Pxx"].append(outer(xp, Xc, Xc, w)[tu])  # and under (a1a2) <-> (a3a4)
        else:
            out["Pxx"].append(outer(xp, Xc, Xc, w))
        if ntk:
            Yc = f64(Y) - shift_h[l - 1]
            Yw = Yc if w is None else Yc * w[:, None, None]
            out["Sy"].append(xp.sum(Yw, axis=0))
            if packed:
                Yc = Yc[:, ia, ic]
            out["Pxy"].append(outer(xp, Xc, Yc, w))
            out["Pyy"].append(outer(xp, Yc, Yc, w)[tu] if packed else outer(xp, Yc, Yc, w))

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
            out["Fs"].append(zero["Fs"])
            out["Bs"].append(zero["Bs"])

    # ---------------------------------------------------------------- layers 2..L
    # numpy, conditional estimator: the NTK by sample pairs (TH, see above); else dense (B, N, N, n, n)
    lean = xp is np and ntk and not direct and w is None
    sgn = np.where(upper, 1.0, -1.0)
    for l in range(2, L + 1):
        n = widths[l - 1]
        Cb, Cw, lb, lw = hp["C_b"][l - 1], hp["C_W"][l - 1], hp["lambda_b"][l - 1], hp["lambda_W"][l - 1]
        s = sigma(z)
        Sig = _einsum(xp, "bka,bkc->bac", s, s) / n
        X = Cb + Cw * Sig
        U = None
        diag = l == 2
        fac = (Cw / n) ** 2
        if ntk:
            sp = dsigma(z)
            spT = xp.swapaxes(sp, -1, -2)  # (B, N, n)
            if diag:
                U = spT[:, :, None, :] * spT[:, None, :, :] * xp.asarray(h1, dtype=dt)[None, :, :, None]
                trU = xp.sum(U, axis=-1)
            elif lean:
                U = theta
                _pair_scale(U, sp, ia, ic)
                tr = _pair_trace(U)
                trU = np.empty((B, N, N), dtype=tr.dtype)
                trU[:, ic, ia] = tr
                trU[:, ia, ic] = tr
            else:
                U = theta * spT[:, :, None, :, None] * spT[:, None, :, None, :]
                trU = xp.trace(U, axis1=-2, axis2=-1)
            Y = lb + lw * Sig + (Cw / n) * trU
        else:
            Y = None
        if not direct:
            push_rb(l, X, Y)
            if ntk and not fb:
                out["Fs"].append(zero["Fs"])
                out["Bs"].append(zero["Bs"])
            elif ntk and lean and not diag:
                out["Fs"].append(_pair_f(U, s, ia, ic, N, packed) * fac)
                out["Bs"].append(_pair_b(U, pidx, sgn, packed) * fac)
            elif ntk:
                Fs, Bs = _fb_sums(xp, U, s, diag, w, f64)
                if packed:
                    Fs, Bs = pack(Fs, Bs, ia, ic)
                out["Fs"].append(Fs * fac)
                out["Bs"].append(Bs * fac)
        if l < L or direct:
            W = Ws[l - 1]
            z_new = bs[l - 1][:, :, None] + W @ s
            if ntk and lean:
                base_p = (lb + lw * Sig)[:, ia, ic]
                if diag:
                    assert U is not None
                    theta = _pairs_from_diag(W, U[:, ia, ic], base_p)
                else:
                    theta = _pair_step(U, W, base_p)
                U = None
            elif ntk:
                theta = _ntk_step(xp, W, U, diag, lb + lw * Sig, pairs)
            z = z_new
            if direct:
                push_direct(l, z, theta, False)

    res = {k: v.result() for k, v in out.items() if v.used}
    if into is not None:
        into["count"] = into["count"] + cnt
        return into
    res["count"] = cnt
    return res


class _Layers:
    """The per-layer values of one sum: a list stacked at the end (JAX), or with numpy added layer by
    layer into one (L, ...) float64 array -- ``into`` (the running sum of the group) if given -- so
    that no per-layer copies of the N^4 statistics pile up."""

    def __init__(self, xp: Any, L: int, into: Any) -> None:
        self.xp, self.L, self.acc, self.i = xp, L, into, 0
        self.items: list[Any] = []
        self.used = False

    def append(self, v: Any) -> None:
        self.used = True
        if self.xp is not np:
            self.items.append(v)
            return
        if self.acc is None:
            self.acc = np.zeros((self.L,) + np.shape(v), dtype=np.float64)
        self.acc[self.i] += v
        self.i += 1

    def result(self) -> Any:
        return self.xp.stack(self.items) if self.xp is not np else self.acc


# ============================================================================ numpy backend
