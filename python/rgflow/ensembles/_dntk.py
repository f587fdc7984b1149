"""Per-batch float64 sums of the dNTK / ddNTK estimators P, Q, R, S, T, U (numpy or JAX via ``xp``).

The spec is ``docs/spec/dntk.md`` §1.2-1.3 (definitions) and §2 (stochastic forward
equations); equation numbers are PDLT's.  Everything here is exact at any width: every
estimator is unbiased for the decompositions (11.30), (∞.11), (∞.12), which *define* P..U at
finite width with the prefactor ``1/n`` (``n = n_{l-1}``, the width feeding layer l).

Probe neurons
-------------
For every layer l >= 2 the estimators use ``r`` *probe neurons* of layer l: rows ``w_a`` of
W^(l), drawn afresh (i.i.d. N(0, C_W/n), exactly the law of a real neuron of layer l given the
layers below; their biases never enter).  Distinct probes a != b are distributed like two
distinct neurons of layer l, so the neuron patterns of ``dntk.md`` §1.3 isolate each tensor:
``n E[dĤ_abb z_a] = P``, ``n E[dĤ_aab z_b] = Q``, ``n E[ddIĤ_aabb] = R``,
``n E[ddIIĤ_aabb] = S_1234``, ``n E[ddIIĤ_abab] = T_1342``, ``n E[ddIIĤ_abba] = U_1423``.
The output width n_L plays no role (as in the theory).

Directional derivatives (``learning.md`` §0, ``dntk.md`` §1.2)
--------------------------------------------------------------
``v_{aδ} = λ∇_θ z_{a;δ}`` has rank-one weight components: with the backprop vectors
``g^(k)_{aδ} = ∂z_{a;δ}/∂z^(k)_δ`` its layer-k part is ``(λ_b g, (λ_W/n_{k-1}) g ⊗ σ^(k-1)_δ)``.
The tangents ``T1_α[u] = ∂z^(k)_α[u]``, ``T2_α[u,u']``, ``T3_α[u,u',u'']`` of all neurons of the
hidden layers are carried forward layer by layer -- the §2 forward equations (11.24), (∞.174)
contracted with the probe rows -- for example

    T1^(k)_α[v_{aδ}] = h^(k)_{δα} g^(k)_{aδ} + W^(k) (σ'_α ∘ T1^(k-1)_α),
    T2^(k)_α[u, u'] = (λ_W/n_{k-1}) [g_u (σ_{δu}·(σ'_α∘T1_α[u'])) + g_{u'} (σ_{δu'}·(σ'_α∘T1_α[u]))]
                      + W^(k) (σ''_α ∘ T1_α[u] ∘ T1_α[u'] + σ'_α ∘ T2^(k-1)_α[u, u']),

with ``h^(k)_{δα} = λ_b + λ_W σ^(k-1)_δ·σ^(k-1)_α / n_{k-1}`` (layer 1 is linear in θ: T2 = T3 = 0
there), so that ``dĤ_{abb;012} = w_a·(σ''_0∘T1_0[v_b1]∘T1_0[v_b2] + σ'_0∘T2_0[v_b1, v_b2])`` (a != b) and
``ddIĤ`` likewise with the third-order forward equation.  ddIIĤ (∞.7) is an inner product of
Hessian-vector products, ``⟨∇f, ∇f'⟩_λ`` with ``f = ∂z_{c;α}[v_{dδ}]`` (direction held fixed);
``∇f`` comes from an exact reverse pass through the (z, T1) forward equations, whose layer-k
weight gradient has rank two: ``ζ^(k) ⊗ σ^(k-1)_α + g^(k)_{cα} ⊗ (σ'^(k-1)_α ∘ T1^(k-1)_α)``.

Estimators (per network; then averaged over networks), all at layer l with n = n_{l-1}
-----------------------------------------------------------------------------------------
* ``P_0123 = C_W mean_b σ_3·Y^b_012``, ``Y^b_012 = σ''_0∘T1_0[v_b1]∘T1_0[v_b2] + σ'_0∘T2_0[v_b1, v_b2]``:
  the exact conditional mean of ``n dĤ_abb;012 z_a;3`` over probe a's weights and bias
  (dĤ_abb is linear in w_a, ``z_a = b_a + w_a·σ_3``) -- no noise from probe a.
* ``Q_0123 = C_W mean_a ∂²z_{a;0}[v_a1, ṽ_32]``: the conditional mean of ``n dĤ_aab;012 z_b;3``
  over probe b, which is linear in w_b through the direction v_b2; ṽ_32 is v_b2 with w_b
  replaced by σ_3 (``dntk.md`` §7.1's Rao-Blackwellisation).
* ``R_0123 = n mean_a ∂³z_{a;0}[v_a1, v_b2, v_b3]`` over the r ordered pairs (a, b = a+1 mod r)
  (third-order tangents carry N⁴ sample tuples per pair, so not all r(r-1) pairs),
  ``S_1234 = n mean_{a≠b} ddIIĤ_{aabb;1234}``, ``T_1342 = n mean_{a≠b} ddIIĤ_{abab;1234}``,
  ``U_1423 = n mean_{a≠b} ddIIĤ_{abba;1234}``: averages over all r(r-1) ordered probe pairs.

Arrays are in the spec's index order (``P[l, δ0, δ1, δ2, δ3]`` etc., as :class:`rgflow.Theory`);
layer 1 is exactly zero (z^(1) is linear in θ).  Smooth activations only: for kinked ones the
sampled second derivatives miss the delta functions that the theory's P, Q contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Default number of probe neurons per layer.
DEFAULT_PROBES = 4
DNTK_SUMS = ("Ps", "Qs", "Rs", "Ss", "Ts", "Us")


def _mv(xp: Any, X: Any, W: Any) -> Any:
    """Σ_k X[b, ..., k] W[b, j, k] -> [b, ..., j] (one batched GEMM)."""
    B, k = X.shape[0], X.shape[-1]
    X2 = X.reshape(B, -1, k)
    if xp is np:  # one 2-D BLAS call per network (stacked matmul with a transposed view is slow)
        out = np.empty((B, X2.shape[1], W.shape[1]), dtype=np.result_type(X2, W))
        for b in range(B):
            out[b] = X2[b] @ W[b].T
    else:
        out = xp.matmul(X2, xp.swapaxes(W, -1, -2))
    return out.reshape(X.shape[:-1] + (W.shape[1],))


def _mtv(xp: Any, X: Any, W: Any) -> Any:
    """Σ_j X[b, ..., j] W[b, j, k] -> [b, ..., k]."""
    B, j = X.shape[0], X.shape[-1]
    out = xp.matmul(X.reshape(B, -1, j), W)
    return out.reshape(X.shape[:-1] + (W.shape[2],))


def _ein(xp: Any, spec: str, *ops: Any) -> Any:
    if xp is np:
        return np.einsum(spec, *ops, optimize=True)
    return xp.einsum(spec, *ops)


class _Net:
    """Forward pass of the hidden layers 1..L-1 of one batch: σ-jets and the h^(k) matrices."""

    def __init__(self, xp: Any, jet: Sequence[Any], x: Any, Ws: Sequence[Any], bs: Sequence[Any], hp: Any, h1: Any):
        B = Ws[0].shape[0] if Ws else 1
        self.W = [None, *Ws]  # W[k]: (B, n_k, n_{k-1})
        self.S: list[Any] = [xp.broadcast_to(x[None], (B,) + x.shape)]  # S[k]: σ(z^(k)) (B, N, n_k); S[0] = x
        self.S1: list[Any] = [None]
        self.S2: list[Any] = [None]
        self.S3: list[Any] = [None]
        self.h: list[Any] = [None, xp.broadcast_to(xp.asarray(h1, dtype=x.dtype)[None], (B,) + h1.shape)]
        for k, (W, b) in enumerate(zip(Ws, bs, strict=True), start=1):
            z = _mv(xp, self.S[k - 1], W) + b[:, None, :]
            self.S.append(jet[0](z))
            self.S1.append(jet[1](z))
            self.S2.append(jet[2](z))
            self.S3.append(jet[3](z))
            n = self.S[k].shape[-1]
            gram = xp.matmul(self.S[k], xp.swapaxes(self.S[k], -1, -2)) / n
            self.h.append(hp["lambda_b"][k] + hp["lambda_W"][k] * gram)  # h^(k+1)


def _backprop(xp: Any, net: _Net, omega: Any, m: int) -> tuple[list[Any], list[Any]]:
    """Backprop vectors of top weight vectors ω (B, D, n_m) at every sample.

    Returns (G, Gh): G[k] = g^(k) (B, D, N, n_k) for k = 1..m; Gh[k] = W^(k+1)ᵀ g^(k+1) (before σ').
    """
    G: list[Any] = [None] * (m + 1)
    Gh: list[Any] = [None] * (m + 1)
    Gh[m] = xp.broadcast_to(omega[:, :, None, :], omega.shape[:2] + (net.S[m].shape[1], omega.shape[-1]))
    G[m] = omega[:, :, None, :] * net.S1[m][:, None]
    for k in range(m, 1, -1):
        Gh[k - 1] = _mtv(xp, G[k], net.W[k])
        G[k - 1] = net.S1[k - 1][:, None] * Gh[k - 1]
    return G, Gh


def _tangent1(xp: Any, net: _Net, G: list[Any], m: int) -> list[Any]:
    """T1[k] (B, D, N_α, N_δ, n_k) = ∂z^(k)_α[v_{·δ}] for k = 1..m (α first)."""
    T: list[Any] = [None] * (m + 1)
    for k in range(1, m + 1):
        src = net.h[k][:, None, :, :, None] * G[k][:, :, None, :, :]  # h_{αδ} = h_{δα}: symmetric
        if k > 1:
            src = src + _mv(xp, net.S1[k - 1][:, None, :, None, :] * T[k - 1], net.W[k])
        T[k] = src
    return T


def _tangent2(
    xp: Any, net: _Net, lw: Any, Gu: list[Any], Tu: list[Any], Gv: list[Any], Tv: list[Any], m: int
) -> list[Any]:
    """T2[k] (B, Du, Dv, N0, N1, N2, n_k) = ∂²z^(k)_{δ0}[u_{δ1}, v_{δ2}] for k = 1..m."""
    B, Du, N = Gu[1].shape[0], Gu[1].shape[1], Gu[1].shape[2]
    Dv = Gv[1].shape[1]
    T: list[Any] = [None] * (m + 1)
    T[1] = xp.zeros((B, Du, Dv, N, N, N, Gu[1].shape[-1]), dtype=Gu[1].dtype)
    for k in range(2, m + 1):
        s, s1, s2 = net.S[k - 1], net.S1[k - 1], net.S2[k - 1]
        c = lw[k - 1] / s.shape[-1]
        qu = s1[:, None, :, None, :] * Tu[k - 1]  # (B, Du, α, δu, n)
        qv = s1[:, None, :, None, :] * Tv[k - 1]
        squ = _ein(xp, "Bun,Bpavn->Bpavu", s, qu)  # s_{δ'}·q_{p δ, α}: (B, Du, α, δ, δ')
        sqv = _ein(xp, "Bun,Bpavn->Bpavu", s, qv)
        lam = Gu[k][:, :, None, None, :, None, :] * xp.swapaxes(sqv, -1, -2)[:, None, :, :, :, :, None]
        lam = lam + Gv[k][:, None, :, None, None, :, :] * squ[:, :, None, :, :, :, None]
        inner = (
            s2[:, None, None, :, None, None, :]
            * Tu[k - 1][:, :, None, :, :, None, :]
            * Tv[k - 1][:, None, :, :, None, :, :]
        )
        inner = inner + s1[:, None, None, :, None, None, :] * T[k - 1]
        T[k] = c * lam + _mv(xp, inner, net.W[k])
    return T


def _offdiag_mean(xp: Any, X: Any) -> Any:
    """mean over ordered pairs a != b of X (B, r, r, ...)."""
    r = X.shape[1]
    off = (1.0 - np.eye(r)).reshape((1, r, r) + (1,) * (X.ndim - 3))
    return xp.sum(X * xp.asarray(off, dtype=X.dtype), axis=(1, 2)) / (r * (r - 1))


def _layer(xp: Any, net: _Net, hp: Any, l: int, w: Any) -> dict[str, Any]:
    """Per-network P..U estimates of layer l >= 2 (each (B, N, N, N, N)) from probes w (B, r, n_{l-1})."""
    m = l - 1
    lw = hp["lambda_W"]
    Cw, lwt = hp["C_W"][l - 1], lw[l - 1]
    s, s1, s2 = net.S[m], net.S1[m], net.S2[m]
    n = s.shape[-1]
    B, r = w.shape[0], w.shape[1]
    cl = lwt / n

    G, Gh = _backprop(xp, net, w, m)
    T1 = _tangent1(xp, net, G, m)
    AB = _tangent2(xp, net, lw, G, T1, G, T1, m)  # probe pairs (a, b): ∂²z_{δ0}[v_{a δ1}, v_{b δ2}]

    TT = T1[m]  # (B, r, α, δ, n)
    ar = np.arange(r)
    D2 = AB[m][:, ar, ar]  # (B, r, α, δ1, δ2, n): T2[v_b1, v_b2]
    Yb = (
        s2[:, None, :, None, None, :] * TT[:, :, :, :, None, :] * TT[:, :, :, None, :, :]
        + s1[:, None, :, None, None, :] * D2
    )
    out: dict[str, Any] = {}
    out["P"] = Cw * _ein(xp, "Bbxyzn,Bwn->Bxyzw", Yb, s) / r

    # Q: directions ṽ_{(3) δ2}: top weight vector σ_3 (the Rao-Blackwellised probe b), sample δ2
    Gq, _ = _backprop(xp, net, s, m)
    Tq = _tangent1(xp, net, Gq, m)  # (B, N3, α, δ2, n)
    Q2 = _tangent2(xp, net, lw, G, T1, Gq, Tq, m)[m]  # (B, r, N3, δ0, δ1, δ2, n)
    qtop = s1[:, None, :, None, :] * Tq[m]  # (B, 3, 0, 2, n)
    val = cl * _ein(xp, "Byn,Bwxzn->Bxyzw", s, qtop)[:, None]  # (B, 1, 0, 1, 2, 3)
    A = s2[:, None, None, :, None, None, :] * TT[:, :, None, :, :, None, :] * Tq[m][:, None, :, :, None, :, :]
    A = A + s1[:, None, None, :, None, None, :] * Q2  # (B, a, 3, 0, 1, 2, n)
    val = val + _ein(xp, "Bawxyzn,Ban->Baxyzw", A, w)
    out["Q"] = Cw * xp.mean(val, axis=1)

    # R: third-order tangents for the probe pairs (a, b = π(a)), π the cyclic shift
    nb = np.roll(ar, -1)
    R3 = None
    for k in range(2, m + 1):
        R3 = _tangent3(xp, net, lw, G, T1, AB, R3, k, nb)
    val = _ein(xp, "Bawxyzn,Ban->Bawxyz", _third_inner(net, m, T1[m], AB[m], R3, nb), w)
    val = val + cl * _ein(xp, "Bxn,Bawyzn->Bawxyz", s, Yb[:, nb])
    out["R"] = n * xp.mean(val, axis=1)

    # S, T, U: ⟨∇f_{cα,dδ}, ∇f_{c'β,d'δ'}⟩_λ by an exact reverse pass
    eye = xp.asarray(np.eye(r), dtype=s.dtype)[None, :, :, None, None, None]
    Z = eye * cl * (s1[:, None, None, :, None, :] * s[:, None, None, None, :, :])
    Z = Z + w[:, :, None, None, None, :] * s2[:, None, None, :, None, :] * TT[:, None]  # (B, c, d, α, δ, n)
    qtop = s1[:, None, :, None, :] * TT  # (B, d, α, δ, n)
    ipS = cl * _ein(xp, "Bbxzn,Bbywn->Bbxzyw", qtop, qtop)[:, None]  # (B, 1, b, α, δ, β, δ'): c = c' = a
    ipS = xp.broadcast_to(ipS, (B, r) + ipS.shape[2:])
    ipT = xp.zeros_like(ipS)
    ipU = xp.zeros_like(ipS)
    for k in range(m, 0, -1):
        sp = net.S[k - 1]
        c_w = lw[k - 1] / sp.shape[-1]
        lb = hp["lambda_b"][k - 1]
        tau = G[k]  # (B, c, α, n_k)
        if k > 1:
            q = net.S1[k - 1][:, None, :, None, :] * T1[k - 1]  # (B, d, α, δ, n_{k-1})
        else:
            q = None
        ss = _ein(xp, "Ban,Bbn->Bab", sp, sp)
        for name, cd1, cd2 in (("S", "ab", "ab"), ("T", "aa", "bb"), ("U", "ab", "ba")):
            Z1, t1, q1 = _family(xp, Z, tau, q, cd1, r)
            Z2, t2, q2 = _family(xp, Z, tau, q, cd2, r)
            zz = _ein(xp, "Bxyadn,Bxyben->Bxyadbe", Z1, Z2)
            ip = (lb + c_w * ss[:, None, None, :, None, :, None]) * zz
            if q is not None:  # (layer 1: T1^(0) = 0, the weight gradient is ζ ⊗ x only)
                zt = _ein(xp, "Bxyadn,Bxybn->Bxyadb", Z1, t2)
                tz = _ein(xp, "Bxyan,Bxyben->Bxyabe", t1, Z2)
                sq2 = _ein(xp, "Ban,Bxyben->Bxyabe", sp, q2)
                qs1 = _ein(xp, "Bxyadn,Bbn->Bxyadb", q1, sp)
                tt = _ein(xp, "Bxyan,Bxybn->Bxyab", t1, t2)
                qq = _ein(xp, "Bxyadn,Bxyben->Bxyadbe", q1, q2)
                ip = ip + c_w * (
                    zt[..., None] * sq2[:, :, :, :, None, :, :]
                    + tz[:, :, :, :, None, :, :] * qs1[..., None]
                    + tt[:, :, :, :, None, :, None] * qq
                )
            if name == "S":
                ipS = ipS + ip
            elif name == "T":
                ipT = ipT + ip
            else:
                ipU = ipU + ip
        if k > 1:  # ζ^(k-1)
            s1p, s2p = net.S1[k - 1], net.S2[k - 1]
            gg = _ein(xp, "Bdsn,Bcan->Bcdas", G[k], tau)
            Zn = s1p[:, None, None, :, None, :] * _mtv(xp, Z, net.W[k])
            Zn = Zn + c_w * gg[..., None] * (s1p[:, None, None, :, None, :] * sp[:, None, None, None, :, :])
            Zn = Zn + s2p[:, None, None, :, None, :] * T1[k - 1][:, None] * Gh[k - 1][:, :, None, :, None, :]
            Z = Zn
    # (α, δ, β, δ') -> spec order: S_{1234}: (α, β, δ, δ'); T_{1342}: (α, δ, δ', β); U_{1423}: (α, δ', β, δ)
    out["S"] = n * xp.transpose(_offdiag_mean(xp, ipS), (0, 1, 3, 2, 4))
    out["T"] = n * xp.transpose(_offdiag_mean(xp, ipT), (0, 1, 2, 4, 3))
    out["U"] = n * xp.transpose(_offdiag_mean(xp, ipU), (0, 1, 4, 3, 2))
    return out


def _family(xp: Any, Z: Any, tau: Any, q: Any, cd: str, r: int) -> tuple[Any, Any, Any]:
    """ζ, τ = g_c, q_d of the functions f_{c α, d δ} on the (a, b) probe-pair grid, for (c, d) = ``cd``."""
    B = Z.shape[0]

    def pick(X: Any, who: str) -> Any:  # X indexed by one probe -> (B, r, r, ...)
        Y = X[:, :, None] if who == "a" else X[:, None, :]
        return xp.broadcast_to(Y, (B, r, r) + X.shape[2:])

    if cd == "ab":
        Zs = Z
    elif cd == "ba":
        Zs = xp.swapaxes(Z, 1, 2)
    else:  # "aa" or "bb": the diagonal family
        ar = np.arange(r)
        Zs = pick(Z[:, ar, ar], cd[0])
    t = pick(tau, cd[0])
    qq = None if q is None else pick(q, cd[1])
    return Zs, t, qq


def _third_inner(net: _Net, k: int, TT: Any, ABk: Any, prev: Any, nb: Any) -> Any:
    """σ-jet part of ∂³ at layer k (B, a, N0, N1, N2, N3, n) for directions (v_{a δ1}, v_{b δ2}, v_{b δ3}), b = nb[a]:
    σ3∘T1T1T1 + σ2∘(T2[a1,b2]T1[b3] + T2[b2,b3]T1[a1] + T2[a1,b3]T1[b2]) + σ1∘T3 (``dntk.md`` (∞.174)), σk = σ^(k)."""
    s1, s2, s3 = net.S1[k], net.S2[k], net.S3[k]
    ar = np.arange(TT.shape[1])
    Tb = TT[:, nb]
    TTa = TT[:, :, :, :, None, None, :]  # (B, a, 0, 1, 1, 1, n)
    TTb2 = Tb[:, :, :, None, :, None, :]
    TTb3 = Tb[:, :, :, None, None, :, :]
    Ap = ABk[:, ar, nb]  # (B, a, 0, 1, 2, n): T2[v_a1, v_b2]
    Db = ABk[:, nb, nb]  # (B, a, 0, 2, 3, n): T2[v_b2, v_b3]
    inner = s3[:, None, :, None, None, None, :] * TTa * TTb2 * TTb3
    inner = inner + s2[:, None, :, None, None, None, :] * (
        Ap[:, :, :, :, :, None, :] * TTb3 + Db[:, :, :, None, :, :, :] * TTa + Ap[:, :, :, :, None, :, :] * TTb2
    )
    if prev is not None:
        inner = inner + s1[:, None, :, None, None, None, :] * prev
    return inner


def _tangent3(
    xp: Any, net: _Net, lw: Any, G: list[Any], T1: list[Any], AB: list[Any], prev: Any, k: int, nb: Any
) -> Any:
    """T3[k] (B, a, N0, N1, N2, N3, n_k) = ∂³z^(k)_{δ0}[v_{a δ1}, v_{b δ2}, v_{b δ3}], b = nb[a] (k >= 2)."""
    s, s1, s2 = net.S[k - 1], net.S1[k - 1], net.S2[k - 1]
    c = lw[k - 1] / s.shape[-1]
    r = G[k].shape[1]
    TT = T1[k - 1]
    ABp = AB[k - 1]
    ar = np.arange(r)
    Tb = TT[:, nb]
    # λ terms: the direction that carries the layer-k weight component, times σ_{δ_i}·(second-order factor)
    Y23 = s2[:, None, :, None, None, :] * Tb[:, :, :, :, None, :] * Tb[:, :, :, None, :, :]
    Y23 = Y23 + s1[:, None, :, None, None, :] * ABp[:, nb, nb]  # (B, a, 0, 2, 3, n)
    c1 = _ein(xp, "Bxn,Bawyzn->Bawxyz", s, Y23)  # σ_{δ1}·Y23
    Y12 = s2[:, None, :, None, None, :] * TT[:, :, :, :, None, :] * Tb[:, :, :, None, :, :]
    Y12 = Y12 + s1[:, None, :, None, None, :] * ABp[:, ar, nb]  # (B, a, 0, 1, 2, n)
    c3 = _ein(xp, "Bzn,Bawxyn->Bawxyz", s, Y12)  # σ_{δ3}·Y12[0,1,2]
    c2 = _ein(xp, "Byn,Bawxzn->Bawxyz", s, Y12)  # σ_{δ2}·Y13[0,1,3]
    Ga, Gb = G[k], G[k][:, nb]
    lam = Ga[:, :, None, :, None, None, :] * c1[..., None]
    lam = lam + Gb[:, :, None, None, :, None, :] * c2[..., None]
    lam = lam + Gb[:, :, None, None, None, :, :] * c3[..., None]
    return c * lam + _mv(xp, _third_inner(net, k - 1, TT, ABp, prev, nb), net.W[k])


def dntk_sums(
    xp: Any,
    jet: Sequence[Any],
    x: Any,
    Ws: Sequence[Any],
    bs: Sequence[Any],
    probes: Sequence[Any],
    hp: dict[str, Any],
    h1: Any,
    *,
    L: int,
    mask: Any = None,
) -> dict[str, Any]:
    """Float64 sums over one batch of the per-network P..U estimates, layers stacked (L, N, N, N, N).

    ``jet`` = (σ, σ', σ'', σ''') in ``xp``; ``Ws``/``bs`` the scaled weights and biases of layers
    1..L-1; ``probes[l-2]`` (B, r, n_{l-1}) the scaled probe rows of layer l = 2..L; ``hp`` per-layer
    C_b, C_W, lambda_b, lambda_W (index l-1); ``h1`` the layer-1 NTK; ``mask`` (B,) weights or None.
    """
    N = x.shape[0]
    zeros = xp.zeros((N, N, N, N), dtype=xp.float64)
    out: dict[str, list[Any]] = {k: [zeros] for k in DNTK_SUMS}
    if L == 1:
        return {k: xp.stack(v) for k, v in out.items()}
    net = _Net(xp, jet, x, Ws[: L - 1], bs[: L - 1], hp, h1)
    for l in range(2, L + 1):
        est = _layer(xp, net, hp, l, probes[l - 2])
        for name in ("P", "Q", "R", "S", "T", "U"):
            v = est[name].astype(xp.float64)
            if mask is not None:
                v = v * mask.astype(xp.float64)[:, None, None, None, None]
            out[name + "s"].append(xp.sum(v, axis=0))
    return {k: xp.stack(v) for k, v in out.items()}


def bytes_per_network(widths: tuple[int, ...], N: int, r: int, itemsize: int) -> int:
    """Rough peak memory of one network in :func:`dntk_sums` (sets the automatic batch)."""
    n = max(widths[1:-1]) if len(widths) > 2 else 1
    L = len(widths) - 1
    big = 10 * r * N**4 * n + 4 * r * r * N**3 * n * L + 12 * r * r * N**4
    return int(big * itemsize)
