"""Ensembles of sampled finite-width MLPs: Monte-Carlo estimates of every theory tensor.

:func:`sample` draws ``networks`` independent MLPs at initialisation (numpy or JAX), runs
them on the inputs ``x`` and estimates, at every layer l = 1..L, the same tensors as
:class:`rgflow.theory.Theory` (``../shared/spec/ntk.md`` §1.2, ``preactivations.md`` §1, §4a, §9),
each with a batch-means standard error.  :func:`compare` tabulates theory against samples.

Conventions
-----------
Layer axis 0 is layer 1; the layer-l tensors are normalised by ``n = n_{l-1}`` (``n_0`` = input
dimension).  Per network the stochastic metric and the stochastic NTK mean of layer l are

* ``Ĝ^(l)_ab = C_b + C_W/n Σ_j σ(z^(l-1)_{j;a}) σ(z^(l-1)_{j;b})``  (``σ(z^(0)) ≡ x``),
* ``Ĥ^(l)_ab = λ_b + λ_W/n Σ_j σ_{j;a}σ_{j;b} + C_W/n Σ_j σ'_{j;a}σ'_{j;b} Θ̂^(l-1)_{jj;ab}``,

the exact conditional means, given layer l-1, of ``z_{i;a}z_{i;b}`` and of ``Θ̂^(l)_{ii;ab}``.  The
per-network NTK ``Θ̂^(l)`` (all neuron pairs, every hidden layer) is built with the exact
layer-wise forward equation (PDLT 8.12, ``ntk.md`` §1.1), learning rates ``λ_b`` and ``λ_W/n_{l-1}``.

Estimators (default ``estimator="conditional"``), each exact, i.e. unbiased at any width:

* ``K = E[Ĝ]`` -- the *sampled mean metric*, which is ``K + K1/n + O(1/n²)`` of the theory;
  ``Theta = E[Ĥ] = E[Θ̂_ii]`` likewise ``Θ + Θ1/n + O(1/n²)``.  (``mean_metric``/``mean_ntk``
  are the same arrays.)
* ``K1 = n (E[Ĝ] - K_∞)``, ``Theta1 = n (E[Ĥ] - Θ_∞)`` with the infinite-width ``K_∞, Θ_∞``.
* ``V = n Cov(Ĝ_{a1a2}, Ĝ_{a3a4})`` (PDLT 4.76),
  ``D = n Cov(Ĝ_{a1a2}, Ĥ_{a3a4})`` (= n E[z_{i;a1}z_{i;a2} ΔΘ_{jj;a3a4}], i≠j),
  ``A = n Cov(Ĥ_{a1a2}, Ĥ_{a3a4})`` (= n E[ΔΘ_{ii;a1a2} ΔΘ_{jj;a3a4}], i≠j).
* ``F[a1,a3,a2,a4] = n E[z_{i;a1} z_{j;a2} Θ̂_{ij;a3a4}]`` (i≠j), estimated by its exact
  conditional mean ``(C_W/n)² Σ_{k1k2} σ_{k1;a1}σ'_{k1;a3} Θ̂^(l-1)_{k1k2;a3a4} σ'_{k2;a4}σ_{k2;a2}``.
* ``B[a1,a3,a2,a4] = n E[Θ̂_{ij;a1a2} Θ̂_{ij;a3a4}]`` (i≠j), estimated by
  ``(C_W/n)² Σ_{k1k2} P_{k1k2;a1a2} P_{k1k2;a3a4}`` with ``P_{k1k2;ab} = σ'_{k1;a}σ'_{k2;b}Θ̂^(l-1)_{k1k2;ab}``.

Conditioning on layer l-1 integrates out the layer-l weights analytically: these are the
averages over *all* distinct neuron pairs i≠j (infinitely many), so the variance is far lower
than with sampled pairs, and the output width n_L does not matter (the theory does not depend
on it either).  ``estimator="direct"`` instead averages products of sampled preactivations and
NTK entries over all pairs of distinct neurons i≠j of layer l (needs every n_l >= 2); it
estimates the same quantities, with larger errors, and serves as a cross-check.

Index order of F and B follows ``ntk.md`` §1.2: F slots 1, 3 are preactivation samples and
2, 4 NTK samples; in B the pairs (1,3) and (2,4) share neurons.

Standard errors: the networks are split into ``groups`` independent groups of (nearly) equal
size; every estimator is evaluated per group; ``stderr = std_over_groups(ddof=1)/sqrt(groups)``.
The point estimates pool all networks.  Sums of products are accumulated in float64 and
streamed batch by batch: memory does not grow with ``networks``.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .network import MLP, check_inputs
from .theory import ALL_TENSORS, Theory

__all__ = ["Ensemble", "Comparison", "ComparisonRow", "sample", "compare"]

BACKENDS = ("numpy", "jax")
ESTIMATORS = ("conditional", "direct")
_DTYPES = {"float64": np.float64, "float32": np.float32}
#: Memory budget (bytes) for one numpy batch when ``batch=None``.
NUMPY_BATCH_BYTES = 96 * 2**20


# ============================================================================ shared kernel
# The per-batch computation is written once against an array namespace ``xp`` (numpy or
# jax.numpy) and is used by both backends.


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


def _batch_sums(
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


def _numpy_activation(act: Any, dtype: Any) -> tuple[Any, Any]:
    def sigma(z: np.ndarray) -> np.ndarray:
        return np.asarray(act.numpy(z, 0), dtype=dtype)

    def dsigma(z: np.ndarray) -> np.ndarray:
        return np.asarray(act.numpy(z, 1), dtype=dtype)

    return sigma, dsigma


def _draw_numpy(rng: np.random.Generator, B: int, widths: tuple[int, ...], hp: dict, layers: int, dtype: Any):
    Ws, bs = [], []
    for l in range(1, layers + 1):
        n, m = widths[l - 1], widths[l]
        W = rng.standard_normal((B, m, n), dtype=np.float64)
        W *= math.sqrt(hp["C_W"][l - 1] / n)
        b = rng.standard_normal((B, m), dtype=np.float64)
        b *= math.sqrt(hp["C_b"][l - 1])
        Ws.append(W.astype(dtype, copy=False))
        bs.append(b.astype(dtype, copy=False))
    return Ws, bs


# ============================================================================ the run


@dataclass
class _Plan:
    net: MLP
    x: np.ndarray  # float64 (N, n0)
    widths: tuple[int, ...]  # (n0, n1, ..., nL)
    hp: dict[str, np.ndarray]
    consts: dict[str, np.ndarray]
    ntk: bool
    direct: bool
    dtype: Any
    layers_drawn: int  # number of layers whose weights are sampled

    @property
    def L(self) -> int:
        return len(self.widths) - 1

    @property
    def N(self) -> int:
        return self.x.shape[0]

    def bytes_per_network(self) -> int:
        N, item = self.N, np.dtype(self.dtype).itemsize
        nmax = max(self.widths[1:]) if self.L > 1 or self.direct else 1
        weights = sum(self.widths[l] * (self.widths[l - 1] + 1) for l in range(1, self.layers_drawn + 1))
        base = (weights + 6 * nmax * N) * item + 8 * N**4
        if self.ntk:
            base += 8 * N * N * nmax * nmax * item + 2 * N**3 * nmax * item
        return int(base)


def _make_plan(net: MLP, x: np.ndarray, ntk: bool, direct: bool, dtype: Any) -> _Plan:
    widths = net.layer_widths(x.shape[1])
    L = net.depth
    hp = {k: np.asarray(getattr(net, k), dtype=np.float64) for k in ("C_b", "C_W", "lambda_b", "lambda_W")}
    gram0 = x @ x.T / x.shape[1]
    consts = {"g1": hp["C_b"][0] + hp["C_W"][0] * gram0, "h1": hp["lambda_b"][0] + hp["lambda_W"][0] * gram0}
    layers_drawn = L if direct else L - 1
    return _Plan(net, x, widths, hp, consts, ntk, direct, dtype, layers_drawn)


def _pilot_shifts(plan: _Plan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer centring values for the streamed sums: Ĝ, Ĥ of a few pilot networks (layer 1 exact).

    Centring only improves the float64 accumulation of covariances; it does not change any
    estimate beyond rounding.  Layer 1 is centred on its exact (deterministic) value.
    """
    L, N = plan.L, plan.N
    sg = np.zeros((L, N, N))
    sh = np.zeros((L, N, N))
    sg[0], sh[0] = plan.consts["g1"], plan.consts["h1"]
    if L == 1 and not plan.direct:
        return sg, sh
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 - 1,)))
    B = 4
    Ws, bs = _draw_numpy(rng, B, plan.widths, plan.hp, plan.layers_drawn, np.float64)
    zero = (np.zeros((L, N, N)), np.zeros((L, N, N)))
    # a custom activation may lack a numpy sigma' (the jax backend differentiates it): then
    # centre the NTK sums on the layer-1 value only
    act = plan.net.activation
    ntk = plan.ntk and not (act.is_custom and len(act.derivatives) < 1)
    s = _batch_sums(
        np,
        _numpy_activation(act, np.float64),
        plan.x,
        Ws,
        bs,
        plan.hp,
        plan.consts,
        zero,
        B=B,
        widths=plan.widths,
        ntk=ntk,
        direct=plan.direct,
    )
    sg[1:] = s["Sx"][1:] / B
    if ntk:
        sh[1:] = s["Sy"][1:] / B
    elif plan.ntk:
        sh[1:] = plan.consts["h1"]
    if plan.direct:  # layer 1 of the direct estimator is random in X
        sg[0] = s["Sx"][0] / B
    return sg, sh


def _estimates(s: dict[str, np.ndarray], shifts: tuple[np.ndarray, np.ndarray], nprev: np.ndarray, ntk: bool) -> dict:
    """Every estimator from (group or pooled) sums."""
    c = float(s["count"])
    n4 = nprev[:, None, None, None, None]
    est: dict[str, np.ndarray] = {}

    def cov(P: str, Q: str, a: str, b: str) -> np.ndarray:
        Qv = s.get(Q, s[P])
        return s[P] / c - (np.einsum("lij,lkm->lijkm", s[a], s[b]) - Qv) / (c * (c - 1))

    est["K"] = shifts[0] + s["Sx"] / c
    est["V"] = n4 * cov("Pxx", "Qxx", "Sx", "Sx")
    if ntk:
        est["Theta"] = shifts[1] + s["Sy"] / c
        est["D"] = n4 * cov("Pxy", "Qxy", "Sx", "Sy")
        est["A"] = n4 * cov("Pyy", "Qyy", "Sy", "Sy")
        est["F"] = n4 * np.transpose(s["Fs"] / c, (0, 1, 3, 2, 4))
        est["B"] = n4 * np.transpose(s["Bs"] / c, (0, 1, 3, 2, 4))
    return est


class _Welford:
    """Running mean and M2 of the per-group estimates (dict of arrays)."""

    def __init__(self) -> None:
        self.k = 0
        self.mean: dict[str, np.ndarray] = {}
        self.m2: dict[str, np.ndarray] = {}

    def add(self, est: dict[str, np.ndarray]) -> None:
        self.k += 1
        for name, v in est.items():
            if name not in self.mean:
                self.mean[name] = v.copy()
                self.m2[name] = np.zeros_like(v)
                continue
            d = v - self.mean[name]
            self.mean[name] += d / self.k
            self.m2[name] += d * (v - self.mean[name])

    def stderr(self) -> dict[str, np.ndarray]:
        return {k: np.sqrt(np.maximum(m2, 0.0) / (self.k - 1) / self.k) for k, m2 in self.m2.items()}


class _Progress:
    """Plain-text progress line on stderr (appears after ``delay`` seconds; throttled)."""

    def __init__(self, total: int, enabled: bool, label: str, delay: float = 2.0) -> None:
        self.total, self.enabled, self.label, self.delay = total, enabled, label, delay
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        el = now - self.t0
        if el < self.delay or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total
        bar = "#" * int(pct / 5) + "." * (20 - int(pct / 5))
        sys.stderr.write(
            f"\r{self.label} [{bar}] {done}/{self.total} networks ({pct:5.1f}%), {rate:,.0f}/s, ETA {eta:,.0f} s "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _group_bounds(networks: int, groups: int) -> list[tuple[int, int]]:
    base, extra = divmod(networks, groups)
    bounds, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


def _run_numpy(plan: _Plan, bounds, batch: int, seed: int, shifts, progress: _Progress):
    """Yields the sums of each group (streamed over batches)."""
    act = _numpy_activation(plan.net.activation, plan.dtype)
    x = plan.x.astype(plan.dtype)
    done = 0
    bidx = 0
    for start, end in bounds:
        acc: dict[str, np.ndarray] | None = None
        for b0 in range(start, end, batch):
            B = min(batch, end - b0)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(bidx,)))
            bidx += 1
            Ws, bs = _draw_numpy(rng, B, plan.widths, plan.hp, plan.layers_drawn, plan.dtype)
            s = _batch_sums(
                np,
                act,
                x,
                Ws,
                bs,
                plan.hp,
                plan.consts,
                shifts,
                B=B,
                widths=plan.widths,
                ntk=plan.ntk,
                direct=plan.direct,
            )
            if acc is None:
                acc = {k: np.array(v, dtype=np.float64) for k, v in s.items()}
            else:
                for k, v in s.items():
                    acc[k] += v
            done += B
            progress.update(done)
        yield acc


# ============================================================================ results


class _Tensors:
    """A plain namespace of tensors (K, K1, Theta, Theta1, V, D, F, A, B)."""

    def __init__(self, d: dict[str, np.ndarray | None]) -> None:
        for k in ALL_TENSORS:
            setattr(self, k, d.get(k))

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ALL_TENSORS if getattr(self, k) is not None}

    def __repr__(self) -> str:
        return f"<tensors {', '.join(self.tensors())}>"


class Ensemble:
    """Monte-Carlo estimates from sampled networks (see :func:`sample` and the module docstring).

    Attributes
    ----------
    K, Theta: (L, N, N) sampled means E[Ĝ], E[Θ̂_ii] -- first order ``K + K1/n``, ``Θ + Θ1/n``.
    mean_metric, mean_ntk: the same arrays (raw sampled means).
    K1, Theta1: (L, N, N) ``n_{l-1} (E - infinite width)``; None if no infinite-width values.
    V, D, F, A, B: (L, N, N, N, N), index order as :class:`rgflow.theory.Theory`.
    stderr: namespace with the standard error of every tensor above.
    widths: n_{l-1} per layer (the normalisation of layer l).
    infinite_width: where K∞ and Θ∞ came from (K_infinite, Theta_infinite hold them).
    networks, groups, seed, backend, dtype, estimator, batch, elapsed, networks_per_second.
    """

    def __init__(self, **kw: Any) -> None:
        est: dict = kw.pop("estimates")
        se: dict = kw.pop("stderr")
        for k in ALL_TENSORS:
            setattr(self, k, est.get(k))
        self.stderr = _Tensors(se)
        self.mean_metric = self.K
        self.mean_ntk = self.Theta
        for k, v in kw.items():
            setattr(self, k, v)

    def tensors(self) -> dict[str, np.ndarray]:
        """The estimated tensors by name."""
        return {k: getattr(self, k) for k in ALL_TENSORS if getattr(self, k) is not None}

    @property
    def depth(self) -> int:
        return self.net.depth

    def __repr__(self) -> str:
        return (
            f"Ensemble({self.net!r}, N={self.x.shape[0]}, networks={self.networks}, groups={self.groups}, "
            f"backend={self.backend!r}, estimator={self.estimator!r}, tensors=[{', '.join(self.tensors())}])"
        )


def _infinite_width(net: MLP, x: np.ndarray, theory: Any, ntk: bool) -> tuple[Any, Any, str | None]:
    L, N = net.depth, x.shape[0]
    if theory is False:
        return None, None, None
    if theory is not None:
        if not isinstance(theory, Theory):
            raise TypeError(f"theory must be an rgflow.Theory (infinite-width K, Theta), got {type(theory).__name__}")
        K = np.asarray(theory.K, dtype=float)
        if K.shape != (L, N, N):
            raise ValueError(f"theory.K has shape {K.shape}, expected {(L, N, N)} for this network and x")
        Th = None
        if ntk:
            if theory.Theta is None:
                raise ValueError("theory has no Theta; compute it with ntk=True or pass ntk=False")
            Th = np.asarray(theory.Theta, dtype=float)
        return K, Th, "theory argument"
    errors = []
    try:
        from .theory import theory as core_theory

        th = core_theory(net, x, ntk=ntk, order=0)
        return th.K, th.Theta, "rgflow.theory(order=0)"
    except (ImportError, NotImplementedError, ValueError) as exc:  # e.g. the Rust extension is not built
        errors.append(f"rgflow.theory: {exc}")
    try:
        from . import reference  # type: ignore[attr-defined]

        th = reference.theory(net, x, ntk=ntk, order=0)
        return th.K, th.Theta, "rgflow.reference.theory(order=0)"
    except (ImportError, NotImplementedError, ValueError) as exc:
        errors.append(f"rgflow.reference: {exc}")
    warnings.warn(
        "no infinite-width K/Theta available (" + "; ".join(errors) + "); K1 and Theta1 are left None. "
        "Pass theory=rgflow.theory(net, x, order=0) to get them.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None, None, None


def _check_args(networks, groups, backend, dtype, estimator, batch, seed, devices) -> tuple[str, Any]:
    if isinstance(networks, bool) or not isinstance(networks, (int, np.integer)):
        raise TypeError(f"networks must be an int, got {type(networks).__name__}")
    if networks < 2:
        raise ValueError(f"networks={networks}: need at least 2 networks to estimate covariances and errors")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 2:
        raise ValueError(f"groups={groups}: need at least 2 groups for batch-means standard errors")
    if networks < 2 * groups:
        raise ValueError(
            f"networks={networks} with groups={groups} leaves fewer than 2 networks per group; "
            f"use groups <= {networks // 2} or more networks"
        )
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend={backend!r}; choose one of {BACKENDS}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator={estimator!r}; choose one of {ESTIMATORS}")
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype={dtype!r}; use 'float64' (recommended) or 'float32'")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive int or None (automatic), got {batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")
    return key, _DTYPES[key]


def sample(
    net: MLP,
    x: Any,
    networks: int = 100_000,
    seed: int = 0,
    backend: str = "numpy",
    batch: int | None = None,
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    theory: Theory | None | bool = None,
    groups: int = 32,
    progress: bool = True,
    ntk: bool = True,
    estimator: str = "conditional",
) -> Ensemble:
    """Sample ``networks`` finite-width MLPs and estimate every tensor with standard errors.

    Parameters
    ----------
    net: the :class:`~rgflow.MLP` (hidden widths, output width, per-layer C_b, C_W, λ_b, λ_W).
    x: inputs, shape (N, n0).
    networks: number of independent networks (>= 2 per group).
    seed: random seed.  numpy: batch k uses ``default_rng(SeedSequence(seed, spawn_key=(k,)))``
        (the k-th child of ``SeedSequence(seed).spawn``), so results are reproducible for a given
        seed and batch size.  jax: network i uses ``fold_in(key(seed), i)``, so results do not
        depend on the batch size or on the number of devices (up to summation order).
    backend: ``"numpy"`` or ``"jax"`` (``pip install rgflow[jax]``; jit + vmap + lax.scan,
        sharded over ``devices``).
    batch: networks per batch (default: from a memory budget).  With jax it is rounded up to a
        multiple of the number of devices.
    dtype: ``"float64"`` (default) or ``"float32"`` for the network forward pass; the sums are
        accumulated in float64 either way.  float32 warns: the 1/n quantities (K1, Θ1 and the
        four-point tensors) are differences of O(1) numbers and lose precision.
    devices: jax devices to shard batches over (default: all ``jax.devices()``).
    theory: a :class:`~rgflow.Theory` providing the infinite-width K and Θ used for K1 and
        Θ1.  If None: ``rgflow.theory(net, x, order=0)`` (Rust core) if importable, else
        ``rgflow.reference.theory(net, x, order=0)`` (numpy reference), else K1 and Θ1 are
        None (with a warning).  ``theory=False`` skips this: K1 and Θ1 are None.
    groups: number of independent groups for batch-means standard errors.
    progress: show a progress line on stderr for runs longer than ~2 s.
    ntk: also estimate the NTK family (Theta, Theta1, D, F, A, B).
    estimator: ``"conditional"`` (default; exact conditional means over the layer-l weights,
        lowest variance) or ``"direct"`` (products over distinct sampled neurons i != j; needs
        all n_l >= 2; a cross-check).

    Returns
    -------
    :class:`Ensemble`.  Note that ``ens.K`` and ``ens.Theta`` are the *sampled means*
    (``K + K1/n`` and ``Θ + Θ1/n`` to first order), not the infinite-width kernels.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    dkey, dtype_np = _check_args(networks, groups, backend, dtype, estimator, batch, seed, devices)
    networks, groups, seed = int(networks), int(groups), int(seed)
    if dkey == "float32":
        warnings.warn(
            "dtype='float32': the forward pass runs in single precision (sums are still float64); "
            "K1 = n (E[G] - K), Theta1 and the four-point tensors are O(1/n) effects resolved against "
            "O(1) values, so single-precision rounding (~1e-7 relative, amplified by n and by depth) "
            "limits them -- use float64 for quantitative checks",
            UserWarning,
            stacklevel=2,
        )
    direct = estimator == "direct"
    widths = net.layer_widths(x.shape[1])
    if direct and min(widths[1:]) < 2:
        raise ValueError(
            f"estimator='direct' needs at least 2 neurons in every layer (pairs i != j); widths are {widths[1:]}; "
            "use estimator='conditional'"
        )
    if backend == "jax":
        from . import _jax_sampler  # raises ImportError naming rgflow[jax] if jax is missing

        _jax_sampler.require_jax()
    if ntk and net.activation.is_custom and len(net.activation.derivatives) < 1 and backend == "numpy":
        raise ValueError("ntk=True needs sigma'; pass Activation.from_callable(f, derivatives=[f1]) or ntk=False")
    K_inf, Th_inf, source = _infinite_width(net, x, theory, ntk)

    plan = _make_plan(net, x, ntk, direct, dtype_np)
    shifts = _pilot_shifts(plan, seed)
    bounds = _group_bounds(networks, groups)
    gmax = max(e - s for s, e in bounds)
    if backend == "numpy" and batch is None:
        batch = max(1, min(gmax, NUMPY_BATCH_BYTES // max(1, plan.bytes_per_network())))
    prog = _Progress(networks, progress, f"rgflow.ensemble[{backend}]")
    t0 = time.perf_counter()
    if backend == "numpy":
        gen = _run_numpy(plan, bounds, int(batch), seed, shifts, prog)
        used_batch = int(batch)
    else:
        gen, used_batch = _jax_sampler.run(plan, bounds, batch, seed, shifts, prog, devices)
    nprev = np.array(widths[:-1], dtype=np.float64)
    wf = _Welford()
    total: dict[str, np.ndarray] | None = None
    try:
        for sums in gen:
            wf.add(_estimates(sums, shifts, nprev, ntk))
            if total is None:
                total = {k: v.copy() for k, v in sums.items()}
            else:
                for k, v in sums.items():
                    total[k] += v
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0
    assert total is not None
    est = _estimates(total, shifts, nprev, ntk)
    se = wf.stderr()
    n3 = nprev[:, None, None]
    if K_inf is not None:
        est["K1"] = n3 * (est["K"] - K_inf)
        se["K1"] = n3 * se["K"]
    if ntk and Th_inf is not None:
        est["Theta1"] = n3 * (est["Theta"] - Th_inf)
        se["Theta1"] = n3 * se["Theta"]
    return Ensemble(
        estimates=est,
        stderr=se,
        net=net,
        x=x,
        networks=networks,
        groups=groups,
        seed=seed,
        backend=backend,
        dtype=dkey,
        estimator=estimator,
        batch=used_batch,
        elapsed=elapsed,
        networks_per_second=networks / elapsed if elapsed > 0 else float("inf"),
        widths=tuple(int(v) for v in nprev),
        infinite_width=source,
        K_infinite=K_inf,
        Theta_infinite=Th_inf,
    )


# ============================================================================ comparison


@dataclass(frozen=True)
class ComparisonRow:
    """One (tensor, layer) line of :func:`compare`.

    z: max over entries of |theory - sampled| / stderr (entries with zero stderr count only if
       they differ, then z = inf).
    rel_error: max |theory - sampled| / max |theory| (nan when the theory is identically 0 and
       the sample is not).
    """

    tensor: str
    layer: int
    z: float
    rel_error: float
    max_abs_diff: float
    max_abs_theory: float
    worst_index: tuple[int, ...]

    def __iter__(self):
        return iter((self.tensor, self.layer, self.z, self.rel_error))


class Comparison(list):
    """A list of :class:`ComparisonRow` with a readable table as ``str``."""

    def max_z(self, tensor: str | None = None) -> float:
        zs = [r.z for r in self if tensor is None or r.tensor == tensor]
        return max(zs) if zs else 0.0

    def __str__(self) -> str:
        head = f"{'tensor':<7}{'layer':>5}  {'max|Δ|/σ':>9}  {'rel.err':>9}  {'max|Δ|':>10}  {'max|th|':>10}  worst"
        lines = [head, "-" * len(head)]
        for r in self:
            rel = "-" if math.isnan(r.rel_error) else f"{r.rel_error:9.2e}"
            lines.append(
                f"{r.tensor:<7}{r.layer:>5}  {r.z:9.2f}  {rel:>9}  {r.max_abs_diff:10.3e}  "
                f"{r.max_abs_theory:10.3e}  {r.worst_index}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()


def compare(th: Theory, ens: Ensemble, tensors: Sequence[str] | None = None) -> Comparison:
    """Compare a theory with an ensemble, tensor by tensor and layer by layer.

    ``K`` and ``Theta`` rows compare the first-order means ``K + K1/n`` and ``Θ + Θ1/n`` (the
    infinite-width values if the theory has no K1/Θ1) with the sampled means ``ens.K``,
    ``ens.Theta``.  The other rows compare like with like.  The z column is the largest
    |theory - sampled| / stderr over the entries of a layer; remember the O(1/n) remainder of
    the first-order theory when reading it at small width.
    """
    rows = Comparison()
    names = tensors if tensors is not None else ALL_TENSORS
    for name in names:
        t = getattr(th, name, None)
        e = getattr(ens, name, None)
        s = getattr(ens.stderr, name, None)
        if t is None or e is None or s is None:
            continue
        t = np.asarray(t, dtype=float)
        if name == "K" and th.K1 is not None:
            t = t + th.K1 / np.asarray(ens.widths, dtype=float)[:, None, None]
        if name == "Theta" and th.Theta1 is not None:
            t = t + th.Theta1 / np.asarray(ens.widths, dtype=float)[:, None, None]
        if t.shape != e.shape:
            raise ValueError(f"{name}: theory shape {t.shape} != ensemble shape {e.shape}")
        for li in range(t.shape[0]):
            d = np.abs(t[li] - e[li])
            se = s[li]
            scale = float(np.max(np.abs(t[li]))) if t[li].size else 0.0
            tiny = 1e-12 * max(scale, float(np.max(np.abs(e[li]))), 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                zz = np.where(se > 0, d / np.where(se > 0, se, 1.0), np.where(d <= tiny, 0.0, np.inf))
            k = int(np.argmax(zz)) if zz.size else 0
            mad = float(np.max(d)) if d.size else 0.0
            if scale > 0:
                rel = mad / scale
            else:
                rel = 0.0 if mad <= tiny else float("nan")
            worst = tuple(int(i) for i in np.unravel_index(k, zz.shape))
            rows.append(ComparisonRow(name, li + 1, float(zz.flat[k]), rel, mad, scale, worst))
    return rows
