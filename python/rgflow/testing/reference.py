"""Independent pure-numpy reference for the first-order MLP recursions.

Public API: :func:`theory` (same signature and output as :func:`rgflow.theory`),
:func:`gaussian_expectation` and :func:`default_quad_orders` (quadrature helpers for tests).

This module recomputes every first-order tensor (K, K1, Theta, Theta1, V, D, F, A, B) without
the Rust core, for tests and benchmarks, on a deliberately *different code path*:

* The engine uses the derivative (integration-by-parts) form of the recursions.  Here every
  interaction term uses the book's **inverse-kernel (Hermite) form**: Gaussian moments
  ``<O (z_b1 z_b2 - K_b1b2)>`` (and the 4th-order ones of the N[O] helper, PDLT 4.115) contracted
  with raised indices ``K^{b g}``.  Each sum is restricted to the samples the expectation
  ``<O>`` depends on, and the raised indices use the inverse of that *restricted* block
  (PDLT footnote 13; ``docs/spec/preactivations.md`` §2).  Only sigma and sigma' are evaluated.
* The quadrature rules differ from Gauss-Hermite product rules too (see below).

Quadrature
----------
A marginal block ``K_S`` (d <= 4 samples) is factorised by pivoted Cholesky, ``z_S = M xi``
with ``xi`` standard normal of dimension ``r = rank K_S``.  Exactly collinear inputs give
``r < d``; raised indices then use the pseudo-inverse, which is exact because every contracted
tensor lies in the range of ``K_S``.

* Smooth activations: trapezoid rules in ``xi`` (exponentially convergent for integrands
  analytic in a strip; far more efficient than Gauss-Hermite for tanh, whose poles at
  ``z = i pi/2`` make 120-node Gauss-Hermite only ~2e-6 accurate at K = 4).  The step of each
  level is ``strip / (coefficient of that level's variable)``, with ``strip`` calibrated per
  activation and power of sigma (``_STRIPS``).  The 3- and 4-sample expectations (products
  ``prod_v sigma^p sigma'^q``) integrate the last level in closed loop: ``<h(c + M_dd xi)>``
  depends on one scalar ``c``, is tabulated on a fine grid and interpolated, so a 4-sample
  expectation costs a 3-dimensional grid.  Polynomial activations (linear, monomial) use
  Gauss-Hermite, which is exact for them.
* Kinked activations (relu, leaky_relu, elu): the kinks of ``z_s = 0`` are never integrated
  across.  One or two samples: 1-D half-line Gauss rules / a polar rule (Gauss-Legendre on each
  arc between the kink rays x a Gauss rule for ``r exp(-r^2/2) dr``).  Three or four samples:
  each whitened level is split at the breakpoints of the variables whose last dependence is that
  level, each piece integrated on its own analytic branch with half-line Gauss rules for
  ``phi`` (tabulated on a grid of start points ``t``, spacing 0.05, built by Lanczos and
  Sturm bisection); the last level is tabulated as above.

Measured accuracy (float64; ``tests/test_reference.py``):

* 1-2 samples: relu/leaky relu closed forms (arc-cosine kernels, <s'' s>) to ~1e-15 (Hermite
  moments of nearly equal inputs: ~4e-13 at correlation 0.999, ~1e-7 at 1 - 1e-7, from the
  ill-conditioned restricted inverse); tanh/gelu up to K ~ 4 to ~1e-13.
* 3-4 samples: relu/leaky relu/elu ~1e-11 (orthant probabilities; self-convergence); a pair at
  correlation 0.99: ~3e-11, at 0.999: ~2e-10 (3 samples) / ~5e-8 (4 samples); a sample nearly
  a linear combination of several others in its block (e.g. N > n0 inputs at layer 1 with
  C_b = 0): ~1e-7.  tanh/gelu/swish ~1e-12 at K ~ 2, ~3e-9 (tanh) at K ~ 4.  Only entries of
  V, D, F, A, B with 3-4 distinct samples use these; K1 and Theta1 need at most 2.
* Recursions: deep-linear and scale-invariant closed forms to ~1e-13; layer-2 V, D, F, A, B
  within Monte Carlo error; derivative-form V and K1 to 1e-10; the ``docs/spec/ntk.md`` §1.7
  table to all printed digits.

Exactly repeated inputs (identical rows of ``x``) are deduplicated first; every tensor is
computed on the unique inputs and expanded back by index mapping (exact, no jitter).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from .._util.validation import check_bool, check_finite, check_inputs, check_int, check_quad_order, real_array
from ..activations import Activation
from ..models import MLP
from ..recursions import THEORY_TENSORS, Theory, check_finite_result, overflow_scan
from ._dntk import dntk_layers

__all__ = ["theory", "gaussian_expectation", "default_quad_orders"]

_SQRT2PI = math.sqrt(2.0 * math.pi)

#: Default orders per block size d.  "trap": trapezoid nodes per level (smooth non-polynomial
#: activations); "gh": Gauss-Hermite nodes per level (polynomial activations, exact);
#: "kink": d = 2 -> (radial, angular-per-arc) nodes of the polar rule, otherwise
#: (Gauss-Hermite, tail-rule) nodes per level of the kink-split rule.
_DEFAULT_ORDERS: dict[str, dict[int, tuple[int, int]]] = {
    "trap": {1: (200, 0), 2: (160, 0), 3: (64, 0), 4: (32, 0)},
    "gh": {1: (60, 0), 2: (40, 0), 3: (24, 0), 4: (16, 0)},
    "kink": {1: (48, 32), 2: (40, 40), 3: (16, 20), 4: (16, 14)},
}
_POLYNOMIAL = {"linear", "monomial"}
_NL_CAP = {3: 96, 4: 48}  # cap of the collinearity-refined half-line orders of kinked 3-/4-sample blocks
_NL_STEPS = (14, 20, 24, 32, 48, 64, 96)

_TAIL_STEP = 0.05  # tau grid spacing of the tabulated tail rules
_TAIL_MAX = 12.0  # beyond this, phi(tau) < 1e-31: tail integrals are dropped
_RANK_TOL = 1e-11  # relative pivot threshold of the pivoted Cholesky
_COEF_TOL = 1e-9  # relative threshold below which a Cholesky coefficient counts as zero
_CHUNK_ELEMS = 3_000_000  # (blocks x nodes) per vectorised chunk (~24 MB per float array)


def _rule_kind(act: Activation | None) -> str:
    if act is None:
        return "trap"
    if act.kinked:
        return "kink"
    return "gh" if act.name in _POLYNOMIAL else "trap"


def default_quad_orders(activation: str | Activation | None, d: int) -> tuple[int, int]:
    """Default quadrature orders for a d-sample block (d = 1..4), see the module docstring.

    Returns (n1, n2): trapezoid or Gauss-Hermite nodes per level (n2 unused) for smooth
    activations; for kinked ones (radial, angular-per-arc) nodes when d = 2 and
    (Gauss-Hermite, tail-rule) nodes per level otherwise.
    """
    act = None if activation is None else (activation if isinstance(activation, Activation) else Activation(activation))
    return _DEFAULT_ORDERS[_rule_kind(act)][d]


class _Rule:
    """Quadrature choice for one activation: kind plus per-block-size orders."""

    def __init__(self, act: Activation | None, quad_order: int | None):
        self.kind = _rule_kind(act)
        self.act_name = "custom" if act is None else act.name
        self.quad_order = quad_order

    def orders(self, d: int) -> tuple[int, int]:
        if self.quad_order is None:
            return _DEFAULT_ORDERS[self.kind][d]
        q = int(self.quad_order)
        return q, q


# ---------------------------------------------------------------------------------------------
# 1-D rules
# ---------------------------------------------------------------------------------------------
@cache
def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes/weights for the standard normal density (weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / _SQRT2PI


def _trap_halfwidth(n: int) -> float:
    """Truncation half-width L of the n-node trapezoid rule on [-L, L].

    Balances the truncation error ~exp(-L^2/2) against the discretisation error
    ~exp(-2 pi a / h) (h = 2L/(n-1)) for integrands analytic in a strip |Im xi| < a ~ 1.3.
    """
    return min(11.0, (8.0 * n) ** (1.0 / 3.0))


@cache
def _trap(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid rule for the standard normal density on [-L, L] (exponentially convergent)."""
    L = _trap_halfwidth(n)
    x = np.linspace(-L, L, n)
    h = x[1] - x[0]
    return x, h * np.exp(-0.5 * x * x) / _SQRT2PI


@cache
def _product_grid(kind: str, n: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """r-dimensional tensor-product rule (trapezoid grids are truncated to the ball |xi| <= L)."""
    x, w = _gh(n) if kind == "gh" else _trap(n)
    X = np.stack(np.meshgrid(*([x] * r), indexing="ij"), axis=-1).reshape(-1, r)
    Wt = np.prod(np.stack(np.meshgrid(*([w] * r), indexing="ij"), axis=-1).reshape(-1, r), axis=1)
    if kind == "trap" and r > 1:
        L = _trap_halfwidth(n)
        keep = np.sum(X * X, axis=1) <= L * L * (1 + 1e-12)
        X, Wt = X[keep], Wt[keep]
    return X, Wt


def _gauss_from_discrete(x: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss rules of discrete positive measures (batched over leading axes).

    Lanczos with full reorthogonalisation on the vectors sqrt(w) p(x), then Golub-Welsch.
    """
    x = np.atleast_2d(x)
    w = np.atleast_2d(w)
    B, m = x.shape
    Q = np.zeros((B, n, m))
    alpha = np.zeros((B, n))
    beta = np.zeros((B, n))
    mu0 = w.sum(axis=1)
    Q[:, 0] = np.sqrt(w / mu0[:, None])
    for k in range(n):
        v = x * Q[:, k]
        alpha[:, k] = np.einsum("bm,bm->b", Q[:, k], v)
        v = v - alpha[:, k, None] * Q[:, k]
        if k > 0:
            v = v - beta[:, k, None] * Q[:, k - 1]
        for _ in range(2):  # reorthogonalise twice
            v = v - np.einsum("bkm,bk->bm", Q[:, : k + 1], np.einsum("bkm,bm->bk", Q[:, : k + 1], v))
        if k + 1 < n:
            beta[:, k + 1] = np.linalg.norm(v, axis=1)
            Q[:, k + 1] = v / beta[:, k + 1, None]
    return _jacobi_gauss(alpha, beta, mu0)


def _jacobi_gauss(alpha: np.ndarray, beta: np.ndarray, mu0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss nodes/weights from recurrence coefficients (Golub-Welsch without LAPACK).

    Nodes: eigenvalues of the Jacobi matrix (diagonal alpha, off-diagonal beta[1:]) by
    Sturm-sequence bisection, batched; weights: Christoffel numbers mu0 / sum_k p_k(x)^2 with
    the orthonormal polynomials p_k.  (Batched tiny LAPACK calls are avoided on purpose: they
    can be very slow under thread oversubscription.)
    """
    B, n = alpha.shape
    b2 = beta**2
    rad = np.abs(beta) + np.abs(np.concatenate([beta[:, 1:], np.zeros((B, 1))], axis=1))
    lo = np.broadcast_to(np.min(alpha - rad, axis=1, keepdims=True), (B, n)).copy() - 1e-12
    hi = np.broadcast_to(np.max(alpha + rad, axis=1, keepdims=True), (B, n)).copy() + 1e-12
    target = np.arange(n)
    tiny = 1e-300
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        cnt = np.zeros((B, n), dtype=np.int64)
        dk = alpha[:, :1] - mid
        dk = np.where(dk == 0.0, tiny, dk)
        cnt += dk < 0
        for k in range(1, n):
            dk = alpha[:, k : k + 1] - mid - b2[:, k : k + 1] / dk
            dk = np.where(dk == 0.0, tiny, dk)
            cnt += dk < 0
        below = cnt > target  # eigenvalue #target lies below mid
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
        if np.all(hi - lo <= 4e-16 * np.maximum(np.abs(lo), np.abs(hi)) + 1e-300):
            break
    x = 0.5 * (lo + hi)
    p_prev = np.zeros_like(x)
    p = np.ones_like(x)
    ssum = np.ones_like(x)
    for k in range(n - 1):
        p_next = ((x - alpha[:, k : k + 1]) * p - beta[:, k : k + 1] * p_prev) / beta[:, k + 1 : k + 2]
        p_prev, p = p, p_next
        ssum += p * p
    return x, mu0[:, None] / ssum


_HALF_TABLES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_HALF_J = int(round(2 * _TAIL_MAX / _TAIL_STEP)) + 1


def _half_table(n: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rules for the weight exp(-(t_j + s)^2/2) on s in [0, inf), t_j = -12 + 0.05 j (j < 481).

    Returns the full (J, n) node and weight tables with at least ``rows`` filled in (rules are
    built on demand and cached).  Each rule discretises its weight with 200-point
    Gauss-Legendre on [0, S] (S = -t + sqrt(t^2 + 160): past S the weight is below e^-80 of its
    maximum), then Lanczos + Golub-Welsch.
    """
    if n not in _HALF_TABLES:
        _HALF_TABLES[n] = (np.zeros((_HALF_J, n)), np.zeros((_HALF_J, n)), np.zeros(_HALF_J, dtype=bool))
    nodes, weights, done = _HALF_TABLES[n]
    need = np.unique(rows)
    need = need[~done[need]]
    if need.size:
        t = -_TAIL_MAX + need * _TAIL_STEP
        gx, gw = _leggauss(200)
        S = -t + np.sqrt(t * t + 160.0)
        sv = 0.5 * S[:, None] * (gx + 1.0)
        ws = 0.5 * S[:, None] * gw * np.exp(-0.5 * (t[:, None] + sv) ** 2)
        nodes[need], weights[need] = _gauss_from_discrete(sv, ws, n)
        done[need] = True
    return nodes, weights


def _half_rule(t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes xi >= t and weights with int_t^inf h(xi) phi(xi) dxi ~= sum_i w_i h(xi_i), any real t.

    Uses the tabulated rule of the grid point t_j <= t and integrates the smooth remainder
    exp(-delta (t_j + s) - delta^2/2), delta = t - t_j, with it.  For t < -12 the (negligible)
    piece below -12 is dropped; for t > 12 the weights are 0.
    """
    tc = np.clip(t, -_TAIL_MAX, _TAIL_MAX)
    jj = np.minimum(np.floor((tc + _TAIL_MAX) / _TAIL_STEP).astype(np.int64), _HALF_J - 1)
    tn, tw = _half_table(n, jj.ravel())
    sv = tn[jj]
    tj = (-_TAIL_MAX + jj * _TAIL_STEP)[..., None]
    delta = tc[..., None] - tj
    w = tw[jj] * np.exp(-delta * (tj + sv) - 0.5 * delta * delta) / _SQRT2PI
    w = np.where((t > _TAIL_MAX)[..., None], 0.0, w)
    return tc[..., None] + sv, w


@cache
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@cache
def _radial_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the weight r exp(-r^2/2) on [0, inf) (weights sum to 1)."""
    gx, gw = _leggauss(300)
    R = 13.0
    r = 0.5 * R * (gx + 1.0)
    x, w = _gauss_from_discrete(r, 0.5 * R * gw * r * np.exp(-0.5 * r * r), n)
    return x[0], w[0]


# ---------------------------------------------------------------------------------------------
# Block factorisation and tensor-product nodes
# ---------------------------------------------------------------------------------------------
def _pivoted_cholesky(Kb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Pivoted Cholesky of a small PSD matrix: Kb[perm][:, perm] = M M^T, M (d, r) lower-trapezoidal."""
    d = Kb.shape[0]
    S = np.array(Kb, dtype=float)
    perm = np.arange(d)
    L = np.zeros((d, d))
    scale = max(float(np.max(np.diag(S))), 0.0)
    r = 0
    for j in range(d):
        p = j + int(np.argmax(np.diag(S)[j:]))
        if p != j:
            S[[j, p]] = S[[p, j]]
            S[:, [j, p]] = S[:, [p, j]]
            L[[j, p]] = L[[p, j]]
            perm[[j, p]] = perm[[p, j]]
        piv = S[j, j]
        if not piv > _RANK_TOL * scale or piv <= 0.0:
            break
        L[j, j] = math.sqrt(piv)
        L[j + 1 :, j] = S[j + 1 :, j] / L[j, j]
        S[j + 1 :, j + 1 :] -= np.outer(L[j + 1 :, j], L[j + 1 :, j])
        r += 1
    return L[:, :r], perm, r


class _Factored:
    """Pivoted-Cholesky factors ``z_block[perm] = M xi`` of a batch of d x d blocks, grouped by pattern.

    ``levels[i]`` is the last xi coordinate pivot row i depends on (-1: z identically 0).
    """

    def __init__(self, Kblocks: np.ndarray):
        B, d, _ = Kblocks.shape
        self.d = d
        if not np.all(np.isfinite(Kblocks)):
            raise FloatingPointError(
                "a kernel block has NaN or inf entries; with rgflow.testing.reference.theory this means the "
                "recursion overflowed (rgflow.recursions.overflow_cause(net, x) names the cause)"
            )
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        facs: list[tuple[np.ndarray, np.ndarray]] = []
        for b in range(B):
            M, perm, r = _pivoted_cholesky(Kblocks[b])
            scale = math.sqrt(max(float(np.max(np.diag(Kblocks[b]))), 1e-300))
            M = np.where(np.abs(M) > _COEF_TOL * scale, M, 0.0)
            levels: list[int] = []
            for i in range(d):
                nz = np.nonzero(M[i])[0]
                levels.append(i if i < r else (int(nz[-1]) if nz.size else -1))
            facs.append((M, perm))
            groups.setdefault((r, tuple(levels)), []).append(b)
        #: (block indices, rank, levels, factors (b, d, r), pivot permutations (b, d)) per pattern
        self.groups: list[tuple[np.ndarray, int, tuple[int, ...], np.ndarray, np.ndarray]] = []
        for (rank, lv), idx in groups.items():
            Ms = np.array([facs[b][0] for b in idx]).reshape(len(idx), d, rank)
            perms = np.array([facs[b][1] for b in idx]).reshape(len(idx), d)
            self.groups.append((np.array(idx), rank, lv, Ms, perms))


def _level_nodes(
    xi: np.ndarray,
    W: np.ndarray,
    pos: np.ndarray,
    Ms: np.ndarray,
    levels: tuple[int, ...],
    j: int,
    nh: int,
    nl: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kink-split rule: add integration level j (coordinate xi_j) to the node set of a group.

    The m variables whose last dependence is xi_j have kinks (breakpoints) t_1 <= ... <= t_m in
    xi_j.  Each piece is integrated on its own analytic branch:
    (-inf, t_1] and [t_m, inf) with half-line Gauss rules for phi, and an inner segment
    [t_k, t_k+1] as int_{t_k}^inf - int_{t_k+1}^inf of its branch.  No kink is integrated across.
    Levels without breakpoints use Gauss-Hermite (nh nodes); a breakpoint level has 2 m nl nodes.
    """
    b, P, _ = xi.shape
    vars_j = [i for i in range(len(levels)) if levels[i] == j]
    m = len(vars_j)
    if m == 0:
        gx, gw = _gh(nh)
        nc = nh
        new_xi = np.broadcast_to(gx, (b, P, nh))
        new_w = np.broadcast_to(gw, (b, P, nh))
    else:
        c = np.einsum("bpi,bsi->bps", xi, Ms[:, vars_j, :j])  # z_s at xi_j = 0
        a = np.broadcast_to(Ms[:, vars_j, j][:, None, :], c.shape)  # slope of z_s in xi_j
        t = -c / a  # breakpoints
        order = np.argsort(t, axis=-1, kind="stable")
        ts = np.take_along_axis(t, order, axis=-1)
        left = a < 0  # branch of each z_s as xi_j -> -inf
        # pattern of segment k (k = 0..m): left pattern with the k first-sorted variables flipped
        flip = np.zeros((b, P, m + 1, m), dtype=bool)
        onehot = np.eye(m, dtype=bool)[order]  # (b,P,k,s): sorted breakpoint k belongs to var s
        flip[:, :, 1:] = np.cumsum(onehot, axis=2) % 2 == 1
        pat = left[:, :, None, :] ^ flip  # (b,P,m+1,m)
        xs, ws = [], []
        ps = []
        xl, wl = _half_rule(-ts[..., 0], nl)  # left half-line, mirrored
        xs.append(-xl)
        ws.append(wl)
        ps.append(np.broadcast_to(pat[:, :, 0, None, :], (b, P, nl, m)))
        for k in range(1, m):  # inner segments [ts_{k-1}, ts_k] with pattern k
            xa, wa = _half_rule(ts[..., k - 1], nl)
            xb, wb = _half_rule(ts[..., k], nl)
            xs += [xa, xb]
            ws += [wa, -wb]
            ps += [np.broadcast_to(pat[:, :, k, None, :], (b, P, nl, m))] * 2
        xr, wr = _half_rule(ts[..., m - 1], nl)
        xs.append(xr)
        ws.append(wr)
        ps.append(np.broadcast_to(pat[:, :, m, None, :], (b, P, nl, m)))
        new_xi = np.concatenate(xs, axis=2)
        new_w = np.concatenate(ws, axis=2)
        new_pos = np.concatenate(ps, axis=2)
        nc = new_xi.shape[2]
    xi2 = np.concatenate([np.broadcast_to(xi[:, :, None, :], (b, P, nc, j)), new_xi[..., None]], axis=3).reshape(
        b, P * nc, j + 1
    )
    W2 = (W[:, :, None] * new_w).reshape(b, P * nc)
    pos2 = np.broadcast_to(pos[:, :, None, :], (b, P, nc, pos.shape[2])).copy()
    if m:
        pos2[..., vars_j] = new_pos
    return xi2, W2, pos2.reshape(b, P * nc, pos.shape[2])


def _polar_nodes(Ms: np.ndarray, nr: int, na: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polar rule for full-rank 2-sample blocks with kinks at z_s = 0.

    In whitened coordinates the kinks are rays; between them (4 arcs) the integrand is analytic
    in the angle and, along each ray, in the radius.  Gauss-Legendre per arc x Gauss rule for
    r exp(-r^2/2) dr.
    """
    b = Ms.shape[0]
    th0 = np.arctan2(-Ms[:, :, 0], Ms[:, :, 1]) % np.pi  # (b, 2): directions with z_s = 0
    th = np.sort(np.concatenate([th0, th0 + np.pi], axis=1), axis=1)  # (b, 4)
    th_end = np.concatenate([th[:, 1:], th[:, :1] + 2 * np.pi], axis=1)
    mid, half = 0.5 * (th + th_end), 0.5 * (th_end - th)
    gx, gw = _leggauss(na)
    rr, rw = _radial_rule(nr)
    ang = mid[:, :, None] + half[:, :, None] * gx  # (b, 4, na)
    wa = half[:, :, None] * gw / (2 * np.pi)
    midvec = np.stack([np.cos(mid), np.sin(mid)], axis=-1)  # (b, 4, 2)
    arcpos = np.einsum("bsi,bki->bks", Ms, midvec) > 0  # (b, 4 arcs, 2 vars)
    om = np.stack([np.cos(ang), np.sin(ang)], axis=-1)  # (b, 4, na, 2)
    xi = (om[:, :, :, None, :] * rr[:, None]).reshape(b, 4 * na * nr, 2)
    W = (wa[..., None] * rw).reshape(b, 4 * na * nr)
    pos = np.broadcast_to(arcpos[:, :, None, None, :], (b, 4, na, nr, 2)).reshape(b, 4 * na * nr, 2)
    return xi, W, pos


def _group_nodes(
    Ms: np.ndarray,
    perms: np.ndarray,
    r: int,
    levels: tuple[int, ...],
    rule: _Rule,
    h: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Nodes of a group of blocks: xi (b,P,r), z (b,P,d) in block order, W (b,P), branches (b,P,d).

    ``h``: step of the adaptive trapezoid grid (smooth activations, default orders).
    """
    b, d, _ = Ms.shape
    n1, n2 = rule.orders(d)
    kinked = rule.kind == "kink"
    if r == 0:
        xi, W = np.zeros((b, 1, 0)), np.ones((b, 1))
        pos = np.ones((b, 1, d), dtype=bool) if kinked else None
    elif not kinked:
        X, Wt = _uniform_grid(h, r) if h is not None else _product_grid(rule.kind, n1, r)
        xi, W, pos = np.broadcast_to(X, (b,) + X.shape), np.broadcast_to(Wt, (b,) + Wt.shape), None
    elif d == 2 and r == 2:
        xi, W, pos = _polar_nodes(Ms, n1, n2)
    else:
        xi, W = np.zeros((b, 1, 0)), np.ones((b, 1))
        pos = np.ones((b, 1, d), dtype=bool)
        for j in range(r):
            xi, W, pos = _level_nodes(xi, W, pos, Ms, levels, j, n1, n2)
    zp = np.einsum("bpi,bsi->bps", xi, Ms)  # pivot order
    inv = np.argsort(perms, axis=1)  # block var v sits at pivot row inv[v]
    z = np.take_along_axis(zp, inv[:, None, :], axis=2)
    if pos is not None:
        pos = np.take_along_axis(pos, inv[:, None, :], axis=2)
    return xi, z, W, pos


def _nodes_count(d: int, r: int, levels: tuple[int, ...], rule: _Rule) -> int:
    n1, n2 = rule.orders(d)
    if r == 0:
        return 1
    if rule.kind != "kink":
        return _product_grid(rule.kind, n1, r)[1].size
    if d == 2 and r == 2:
        return 4 * n1 * n2
    n = 1
    for j in range(r):
        m = sum(1 for lv in levels if lv == j)
        n *= 2 * m * n2 if m else n1
    return n


# ---------------------------------------------------------------------------------------------
# Activation branches
# ---------------------------------------------------------------------------------------------
class _Sigma:
    """sigma and sigma' on quadrature nodes; for kinked activations, by analytic branch."""

    def __init__(self, act: Activation):
        self.act = act
        self.kinked = act.kinked
        self.name = act.name
        #: (sigma, sigma') on the z < 0 branch of a kinked activation
        self._neg: tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
        if self.kinked:
            if act.name == "relu":
                self._neg = (np.zeros_like, np.zeros_like)
            elif act.name == "leaky_relu":
                a = act.params["slope"]
                self._neg = (lambda z: a * z, lambda z: np.full_like(z, a))
            elif act.name == "elu":
                al = act.params["alpha"]
                self._neg = (
                    lambda z: al * np.expm1(np.minimum(z, 60.0)),
                    lambda z: al * np.exp(np.minimum(z, 60.0)),
                )
            else:  # pragma: no cover
                raise AssertionError(act.name)

    def both(self, z: np.ndarray, pos: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(sigma, sigma') together (gelu: one erf evaluation, sigma = z (sigma' - z phi(z)))."""
        if self.name == "gelu" and not self.act.is_custom:
            s1 = np.asarray(self.act.numpy(z, 1), dtype=float)
            return z * (s1 - z * np.exp(-0.5 * z * z) / _SQRT2PI), s1
        return self(z, pos, 0), self(z, pos, 1)

    def __call__(self, z: np.ndarray, pos: np.ndarray | None, deriv: int) -> np.ndarray:
        if not self.kinked:
            return np.asarray(self.act.numpy(z, deriv), dtype=float)
        assert pos is not None  # kinked activations use the kink rules, whose nodes carry branches
        plus = z if deriv == 0 else np.ones_like(z)
        return np.where(pos, plus, self._neg[deriv](z))


def _group_step(Ms: np.ndarray, levels: tuple[int, ...], rule: _Rule) -> float | None:
    """Trapezoid step of the adaptive smooth rule for a group (None: fixed-order rule)."""
    if rule.kind != "trap" or rule.quad_order is not None or not 1 <= Ms.shape[2] <= 2:
        return None  # fixed-order rules (3-/4-dimensional smooth products use _smooth_product_block)
    lv = np.array(levels)
    scale = 0.0
    for k in range(Ms.shape[2]):
        scale = max(scale, float(np.max(np.abs(Ms[:, lv == k, k]))))
    return _quantise_step(min(0.7, _strip(rule.act_name, 4) / max(scale, 1e-12)))


def _iter_chunks(fac: _Factored, rule: _Rule):
    """Yield (block indices, xi, z, W, pos, M, perms) chunks over all blocks of a factorised batch."""
    for idx, r, levels, Ms, perms in fac.groups:
        h = _group_step(Ms, levels, rule)
        P = _uniform_grid(h, r)[1].size if h is not None else _nodes_count(fac.d, r, levels, rule)
        step = max(1, _CHUNK_ELEMS // max(P, 1))
        for s in range(0, idx.size, step):
            sl = slice(s, s + step)
            xi, z, W, pos = _group_nodes(Ms[sl], perms[sl], r, levels, rule, h)
            yield idx[sl], xi, z, W, pos, Ms[sl], perms[sl]


def gaussian_expectation(
    f: Callable[..., np.ndarray],
    K: Any,
    activation: str | Activation | None = None,
    *,
    quad_order: int | None = None,
) -> float:
    """<f> for z ~ N(0, K) (d = 1..4 samples) by the reference quadrature.

    Without ``activation``, ``f(z)`` receives z of shape (P, d) and the trapezoid rule is used.
    With ``activation``, ``f(z, s0, s1)`` also receives sigma(z) and sigma'(z) (shape (P, d)),
    evaluated branch-wise, and the rule of that activation is used (kink-split for kinked ones).
    """
    K = np.atleast_2d(real_array("K", K))
    if K.ndim != 2 or K.shape[0] != K.shape[1] or not 1 <= K.shape[0] <= 4:
        raise ValueError(f"K must be a square covariance matrix of 1..4 samples, got shape {K.shape}")
    check_finite("K", K, "; a covariance must be finite")
    scale = max(float(np.max(np.abs(K))), 1e-300)
    if np.max(np.abs(K - K.T)) > 1e-12 * scale:
        raise ValueError(f"K must be symmetric (a covariance), got K = {K.tolist()}")
    wmin = float(np.linalg.eigvalsh(K).min())
    if wmin < -1e-10 * scale:
        raise ValueError(
            f"K is not positive semi-definite (smallest eigenvalue {wmin:.3g}): a covariance must be PSD; "
            "check the inputs or hyperparameters"
        )
    quad_order = check_quad_order(quad_order, minimum=2)
    act = None if activation is None else (activation if isinstance(activation, Activation) else Activation(activation))
    rule = _Rule(act, quad_order)
    total = 0.0
    for _, _, z, W, pos, _, _ in _iter_chunks(_Factored(K[None]), rule):
        if act is None:
            vals = f(z[0])
        else:
            sg = _Sigma(act)
            p = None if pos is None else pos[0]
            vals = f(z[0], sg(z[0], p, 0), sg(z[0], p, 1))
        total += float(np.sum(W[0] * vals))
    return total


# ---------------------------------------------------------------------------------------------
# Expectations needed by one layer step
# ---------------------------------------------------------------------------------------------
def _inv_small(G: np.ndarray) -> np.ndarray:
    """Inverse of a batch of r x r (r <= 2) positive-definite matrices, explicitly."""
    r = G.shape[-1]
    if r == 0:
        return G.copy()
    if r == 1:
        return 1.0 / G
    det = G[:, 0, 0] * G[:, 1, 1] - G[:, 0, 1] * G[:, 1, 0]
    out = np.empty_like(G)
    out[:, 0, 0] = G[:, 1, 1] / det
    out[:, 1, 1] = G[:, 0, 0] / det
    out[:, 0, 1] = -G[:, 0, 1] / det
    out[:, 1, 0] = -G[:, 1, 0] / det
    return out


def _pair_quantities(
    K: np.ndarray,
    K1: np.ndarray | None,
    V: np.ndarray | None,
    sig: _Sigma,
    rule: _Rule,
    need_hermite: bool,
    need_ntk: bool,
) -> dict[str, np.ndarray]:
    """Two-sample expectations on every pair block S = {a, b} (a <= b), in Hermite form.

    Returns G = <s_a s_b>, P = <s'_a s'_b>; and with ``need_hermite``:
    Hs[a,b,g1,g2] = K_S^{g1 b1} K_S^{g2 b2} <s_a s_b (z_b1 z_b2 - K_b1b2)>  (PDLT 4.119/8.77),
    Hp likewise for s'_a s'_b, H1[a,b,g] = K_S^{g b} <s_a s'_b z_b>  (8.79),
    Ns[a,b] = N[s_a s_b] and Np[a,b] = N[s'_a s'_b], the bracket of PDLT (4.115) /
    ntk.md §1.3 with the block-restricted inverse kernel.
    """
    N = K.shape[0]
    out: dict[str, np.ndarray] = {"G": np.zeros((N, N)), "P": np.zeros((N, N))}
    if need_hermite:
        for k in ("Hs", "Hp"):
            out[k] = np.zeros((N, N, N, N))
        out["H1"] = np.zeros((N, N, N))
        out["Ns"] = np.zeros((N, N))
        out["Np"] = np.zeros((N, N))
    for d in (1, 2):
        pairs = np.array([(a, a) for a in range(N)]) if d == 1 else np.array(list(itertools.combinations(range(N), 2)))
        if pairs.size == 0:
            continue
        blk = pairs[:, :d]
        Kb = K[blk[:, :, None], blk[:, None, :]]
        fac = _Factored(Kb)
        for bidx, xi, z, W, pos, Ms, perms in _iter_chunks(fac, rule):
            if need_ntk or need_hermite:
                s0, s1 = sig.both(z, pos)
            else:
                s0, s1 = sig(z, pos, 0), None
            a_, b_ = pairs[bidx, 0], pairs[bidx, 1]
            Os = s0[..., 0] * s0[..., d - 1]
            out["G"][a_, b_] = out["G"][b_, a_] = np.einsum("bp,bp->b", W, Os)
            if s1 is not None:
                Op = s1[..., 0] * s1[..., d - 1]
                out["P"][a_, b_] = out["P"][b_, a_] = np.einsum("bp,bp->b", W, Op)
            if not need_hermite:
                continue
            assert s1 is not None  # need_hermite: sigma' was evaluated with sigma (sig.both)
            # u = K_S^+ z in block order: u = A xi with A = M (M^T M)^{-1}, rows reordered.
            inv = np.argsort(perms, axis=1)
            Mb = np.take_along_axis(Ms, inv[:, :, None], axis=1)  # (b, d, r) block order
            A = Mb @ _inv_small(np.swapaxes(Mb, 1, 2) @ Mb)
            u = np.einsum("bpi,bsi->bps", xi, A)
            Kp = A @ np.swapaxes(A, 1, 2)  # K_S^+ (inverse of the restricted block)
            O3 = s0[..., 0] * s1[..., d - 1]  # s_a s'_b
            O4 = s0[..., d - 1] * s1[..., 0]  # s_b s'_a
            h1_ab = np.einsum("bp,bp,bpg->bg", W, O3, u)
            h1_ba = np.einsum("bp,bp,bpg->bg", W, O4, u)
            gidx = blk[bidx]  # (b, d) global sample of each block var
            K1b = None if K1 is None else K1[gidx[:, :, None], gidx[:, None, :]]
            Vb = None
            if V is not None:
                g = gidx
                Vb = V[
                    g[:, :, None, None, None],
                    g[:, None, :, None, None],
                    g[:, None, None, :, None],
                    g[:, None, None, None, :],
                ]
            for name, O, Nname in (("Hs", Os, "Ns"), ("Hp", Op, "Np")):
                Wo = W * O
                m0 = Wo.sum(axis=1)
                m2 = np.einsum("bp,bpi,bpj->bij", Wo, u, u)
                T2 = m2 - Kp * m0[:, None, None]  # K^{g1 b1} K^{g2 b2} <O (z z - K)>_{b1 b2}
                Hfull = out[name]
                for i in range(d):
                    for j in range(d):
                        Hfull[a_, b_, gidx[:, i], gidx[:, j]] = T2[:, i, j]
                        Hfull[b_, a_, gidx[:, i], gidx[:, j]] = T2[:, i, j]
                # N[O] (PDLT 4.115 bracket; ntk.md §1.3) with restricted inverse kernel K^+:
                #   1/2 K^{b1 b3} K^{b2 b4} K1_{b3 b4} <O (z_b1 z_b2 - K_b1b2)>
                # + 1/8 V^{(b1 b2)(b3 b4)} <O (z_b1 z_b2 - K_b1b2)(z_b3 z_b4 - K_b3b4)>
                # + 1/4 V^{(b1 b3)(b2 b4)} K_{b3 b4} <O (K_b1b2 - 2 z_b1 z_b2)>
                val = np.zeros(len(bidx))
                if K1b is not None:
                    val += 0.5 * np.einsum("bij,bij->b", K1b, T2)
                if Vb is not None:
                    m4 = np.einsum("bp,bpi,bpj,bpk,bpl->bijkl", Wo, u, u, u, u, optimize=True)
                    quart = (
                        m4
                        - np.einsum("bkl,bij->bijkl", Kp, m2)
                        - np.einsum("bij,bkl->bijkl", Kp, m2)
                        + np.einsum("bij,bkl->bijkl", Kp, Kp) * m0[:, None, None, None, None]
                    )
                    val += 0.125 * np.einsum("bijkl,bijkl->b", Vb, quart)
                    # V_{(g1 g2)(g3 g4)} K^{g2 g4} (K^{g1 g3} <O> - 2 <O u_g1 u_g3>)
                    inner = Kp * m0[:, None, None] - 2.0 * m2
                    val += 0.25 * np.einsum("bijkl,bjl,bik->b", Vb, Kp, inner)
                out[Nname][a_, b_] = out[Nname][b_, a_] = val
            H1 = out["H1"]
            for i in range(d):
                H1[a_, b_, gidx[:, i]] = h1_ab[:, i]
                H1[b_, a_, gidx[:, i]] = h1_ba[:, i]
    return out


def _product_expectations(Kb: np.ndarray, keys: np.ndarray, sig: _Sigma, rule: _Rule) -> np.ndarray:
    """<prod_v sigma(z_v)^e0[v] sigma'(z_v)^e1[v]> for every key (Q, 2d) and block (B, d, d) -> (Q, B)."""
    B, d, _ = Kb.shape
    vals = np.zeros((keys.shape[0], B))
    fac = _Factored(Kb)
    needs1 = bool(np.any(keys[:, 1::2]))
    if rule.kind == "trap" and d >= 2 and rule.quad_order is None:
        for idx, _r, levels, Ms, perms in fac.groups:
            for k, b in enumerate(idx):
                vals[:, b] = _smooth_product_block(Ms[k], perms[k], levels, keys, sig)
        fac.groups = []
    elif rule.kind == "kink" and d >= 3:
        full = [g for g in fac.groups if g[1] == d]
        fac.groups = [g for g in fac.groups if g[1] != d]
        for idx, _r, levels, Ms, perms in full:
            for k, b in enumerate(idx):
                vals[:, b] = _kinked_product_block(Ms[k], perms[k], levels, keys, sig, rule)
    for bidx, _xi, z, W, pos, _Ms, _p in _iter_chunks(fac, rule):
        s0, s1 = sig.both(z, pos) if needs1 else (sig(z, pos, 0), None)
        for q, key in enumerate(keys):
            prod = W.copy()
            for v in range(d):
                e0, e1 = key[2 * v], key[2 * v + 1]
                if e0:
                    prod *= s0[..., v] ** e0
                if e1:
                    assert s1 is not None  # a key with a sigma' power sets needs1
                    prod *= s1[..., v] ** e1
            vals[q, bidx] = prod.sum(axis=1)
    return vals


_ADAPT_L = 8.5  # truncation radius of the adaptive trapezoid rules of product blocks (8.5^3 phi(8.5) ~ 1e-13)
_LAGRANGE_P = 5  # degree of the local interpolation of the innermost (tabulated) integral
_TABLE_STEP = 0.0125  # grid spacing of the innermost table


#: Trapezoid step x coefficient scale ("strip"), per activation and per power e = p + q of
#: sigma^p sigma'^q on one variable (e <= 1, e = 2, e >= 3): set by the distance of the nearest
#: complex singularity (tanh: i pi/2, pole order growing with e; sigmoid family: i pi) or by the
#: growth of entire functions (erf, gelu, sin).  Calibrated for a 1-D error < 3e-12 relative to
#: <|f|> at scales up to 2 (K <= 4).  Custom callables get values below tanh's.
_STRIPS = {
    "tanh": (0.28, 0.22, 0.2),
    "erf": (0.45, 0.3, 0.22),
    "gelu": (0.55, 0.45, 0.3),
    "swish": (0.55, 0.45, 0.33),
    "sigmoid": (0.55, 0.45, 0.33),
    "softplus": (0.55, 0.55, 0.45),
    "sin": (0.55, 0.55, 0.55),
}
_STRIPS_DEFAULT = (0.25, 0.2, 0.18)


def _strip(name: str, e: int) -> float:
    return _STRIPS.get(name, _STRIPS_DEFAULT)[min(max(int(e), 1), 3) - 1]


def _adaptive_trap(scale: float, strip: float) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid rule (step h = min(0.7, strip/scale), |xi| <= 9) for one whitened level whose
    variable enters sigma with coefficient ``scale`` (see ``_STRIPS``)."""
    return _uniform_rule(_quantise_step(min(0.7, strip / max(scale, 1e-12))), _ADAPT_L)


def _quantise_step(h: float) -> float:
    """Round a step down to 2^(k/8) so that rules can be cached."""
    return 2.0 ** (math.floor(8.0 * math.log2(h)) / 8.0)


@cache
def _uniform_rule(h: float, L: float) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid rule of step h on [-L, L] (nodes at multiples of h) for the normal density."""
    m = int(math.ceil(L / h))
    x = h * np.arange(-m, m + 1)
    return x, h * np.exp(-0.5 * x * x) / _SQRT2PI


@cache
def _uniform_grid(h: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """r-dimensional trapezoid grid of step h, truncated to the ball |xi| <= 10 (room for the
    polynomial Hermite weights: 10^8 phi(10) ~ 1e-14)."""
    L = 10.0
    x, w = _uniform_rule(h, L)
    X = np.stack(np.meshgrid(*([x] * r), indexing="ij"), axis=-1).reshape(-1, r)
    Wt = np.prod(np.stack(np.meshgrid(*([w] * r), indexing="ij"), axis=-1).reshape(-1, r), axis=1)
    keep = np.sum(X * X, axis=1) <= L**2 * (1 + 1e-12)
    return X[keep], Wt[keep]


def _lagrange(table: np.ndarray, c0: float, dc: float, x: np.ndarray) -> np.ndarray:
    """Local degree-p barycentric Lagrange interpolation of tables (T, G) on c0 + g dc at x (P,)."""
    p = _LAGRANGE_P
    G = table.shape[1]
    t = (x - c0) / dc
    i0 = np.clip(np.floor(t).astype(np.int64) - (p - 1) // 2, 0, G - p - 1)
    sloc = t - i0
    wj = np.array([(-1.0) ** (p - k) * math.comb(p, k) for k in range(p + 1)])
    diff = sloc[:, None] - np.arange(p + 1)
    q = wj / np.where(diff == 0.0, 1e-200, diff)  # an exact hit gets all the weight
    q /= q.sum(axis=1, keepdims=True)
    out = table[:, i0] * q[:, 0]
    for k in range(1, p + 1):
        out += table[:, i0 + k] * q[:, k]
    return out


def _smooth_product_block(
    M: np.ndarray, perm: np.ndarray, levels: tuple[int, ...], keys: np.ndarray, sig: _Sigma
) -> np.ndarray:
    """Product expectations on one smooth block (d >= 2), ``z[perm] = M xi``.

    Each level xi_k gets an adaptive trapezoid rule (step set by the largest coefficient of a
    variable whose last dependence is xi_k); the grid is truncated to the ball |xi| <= 8.  For a
    full-rank block the innermost integral I(c) = <h(c + M_dd xi)> depends on the scalar
    c = sum_i M_{d-1,i} xi_i only: it is tabulated on a fine grid and interpolated (degree-9
    local Lagrange), so the node count is that of a (d-1)-dimensional grid.
    Accuracy ~1e-12 for tanh/gelu at K <~ 2, ~1e-10 at K ~ 4.
    """
    d, r = M.shape
    out = np.empty(keys.shape[0])
    if r == 0:
        z0 = np.zeros((1, d))
        s0, s1 = sig(z0, None, 0)[0], sig(z0, None, 1)[0]
        for q, key in enumerate(keys):
            out[q] = np.prod(s0 ** key[0::2][perm] * s1 ** key[1::2][perm])
        return out
    tab = r == d
    nout = r - 1 if tab else r
    lv = np.array(levels)
    power = keys[:, 0::2] + keys[:, 1::2]  # (Q, d) total power per block variable
    rules = []
    for k in range(nout):
        rows_k = np.nonzero(lv == k)[0]
        scale = float(np.max(np.abs(M[rows_k, k]))) if rows_k.size else 0.0
        e = int(np.max(power[:, perm[rows_k]])) if rows_k.size else 1
        rules.append(_adaptive_trap(scale, _strip(sig.name, e)))
    if nout:
        X = np.stack(np.meshgrid(*[ru[0] for ru in rules], indexing="ij"), axis=-1).reshape(-1, nout)
        Wt = np.prod(np.stack(np.meshgrid(*[ru[1] for ru in rules], indexing="ij"), axis=-1).reshape(-1, nout), axis=1)
        keep = np.sum(X * X, axis=1) <= _ADAPT_L**2
        X, Wt = X[keep], Wt[keep]
    else:
        X, Wt = np.zeros((1, 0)), np.ones(1)
    rows = d - 1 if tab else d  # pivot rows evaluated on the outer grid
    z = X @ M[:rows, :nout].T
    s0, s1 = sig.both(z, None)
    if tab:
        # innermost table for every (e0, e1) that the keys put on block var perm[d-1]
        vin = perm[d - 1]
        types, tinv = np.unique(keys[:, 2 * vin : 2 * vin + 2], axis=0, return_inverse=True)
        tinv = tinv.reshape(-1)
        c = X @ M[d - 1, :nout]
        pad = (_LAGRANGE_P + 2) * _TABLE_STEP
        c0 = float(c.min()) - pad
        G = int(math.ceil((float(c.max()) + pad - c0) / _TABLE_STEP)) + 1
        cg = c0 + _TABLE_STEP * np.arange(G)
        tabs = []
        evals: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for e0, e1 in types:
            xin, win = _adaptive_trap(abs(M[d - 1, d - 1]), _strip(sig.name, e0 + e1))
            key = float(xin[1] - xin[0]) if xin.size > 1 else 0.0
            if key not in evals:
                zin = cg[:, None] + M[d - 1, d - 1] * xin  # (G, n_in)
                evals[key] = (*sig.both(zin, None), win)
            h0, h1, win = evals[key]
            tabs.append((h0**e0 * h1**e1) @ win)
        tabv = np.stack(tabs)  # (T, G)
        J = _lagrange(tabv, c0, _TABLE_STEP, c)  # (T, P)
        for q, key in enumerate(keys):
            out[q] = _weighted_sum(Wt * J[tinv[q]], key, perm, s0, s1, rows)
    else:
        for q, key in enumerate(keys):
            out[q] = _weighted_sum(Wt, key, perm, s0, s1, rows)
    return out


def _weighted_sum(
    weights: np.ndarray, key: np.ndarray, perm: np.ndarray, s0: np.ndarray, s1: np.ndarray, rows: int
) -> float:
    """Σ_nodes weights · Π_{i < rows} σ(z_i)^{e0} σ'(z_i)^{e1}, the powers (e0, e1) of block variable
    perm[i] read from ``key`` (pairs per variable), σ and σ' on the nodes in ``s0``, ``s1``."""
    prod = weights
    for i in range(rows):
        v = perm[i]
        e0, e1 = key[2 * v], key[2 * v + 1]
        if e0:
            prod = prod * s0[:, i] ** e0
        if e1:
            prod = prod * s1[:, i] ** e1
    return float(prod.sum())


def _split_rule_1d(c: np.ndarray, slope: float, nl: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kink-split rule for int g(c + slope xi) phi(xi) dxi, g kinked at 0, slope > 0, for each c (G,).

    Returns xi (G, 2 nl), weights, branch (True: the z > 0 branch).
    """
    t = -c / slope
    xl, wl = _half_rule(-t, nl)
    xr, wr = _half_rule(t, nl)
    G = c.size
    pos = np.concatenate([np.zeros((G, nl), dtype=bool), np.ones((G, nl), dtype=bool)], axis=1)
    return np.concatenate([-xl, xr], axis=1), np.concatenate([wl, wr], axis=1), pos


def _kinked_product_block(
    M: np.ndarray, perm: np.ndarray, levels: tuple[int, ...], keys: np.ndarray, sig: _Sigma, rule: _Rule
) -> np.ndarray:
    """Product expectations on one full-rank kinked block (d >= 3), ``z[perm] = M xi``.

    Outer levels xi_0..xi_{d-2}: kink-split rule.  The innermost integral
    I(c) = <h(c + M_dd xi)> (a Gaussian smoothing of a kinked function, analytic in c) is
    tabulated with the 1-D kink-split rule on a grid of spacing min(0.025, M_dd/8) and
    interpolated (degree-7 local Lagrange).
    """
    d = M.shape[0]
    nh, nl = rule.orders(d)
    nls = [nl] * (d - 1)
    if rule.quad_order is None:
        # A sample nearly determined by earlier ones (small conditional sd w_k = M_kk / |M_k|)
        # makes the integrand of the levels it depends on vary on a scale ~w_k: refine those
        # levels' half-line rules (orders from a short list, so that tables are reused).
        for k in range(1, d):
            w = abs(M[k, k]) / max(float(np.linalg.norm(M[k])), 1e-300)
            want = min(_NL_CAP[d], int(math.ceil(6.0 / max(w, 1e-12))))
            if want <= nl:
                continue
            q = next(q for q in _NL_STEPS if q >= want)
            big = np.abs(M[k, :k]) >= 0.2 * np.max(np.abs(M[k, :k]))
            for lvl in np.nonzero(big)[0]:
                nls[lvl] = max(nls[lvl], q)
    Mo = M[None, : d - 1, : d - 1]
    xi, W, pos = np.zeros((1, 1, 0)), np.ones((1, 1)), np.ones((1, 1, d - 1), dtype=bool)
    for j in range(d - 1):
        xi, W, pos = _level_nodes(xi, W, pos, Mo, tuple(levels[: d - 1]), j, nh, nls[j])
    xi, W, pos = xi[0], W[0], pos[0]
    z = xi @ M[: d - 1, : d - 1].T
    s0, s1 = sig.both(z, pos)
    vin = perm[d - 1]
    types, tinv = np.unique(keys[:, 2 * vin : 2 * vin + 2], axis=0, return_inverse=True)
    tinv = tinv.reshape(-1)
    c = xi @ M[d - 1, : d - 1]
    sl = float(M[d - 1, d - 1])
    step = max(min(_TABLE_STEP, sl / 8.0), 1e-4)
    pad = (_LAGRANGE_P + 2) * step
    c0 = float(c.min()) - pad
    G = int(math.ceil((float(c.max()) + pad - c0) / step)) + 1
    cg = c0 + step * np.arange(G)
    n_in = _DEFAULT_ORDERS["kink"][1][1] if rule.quad_order is None else int(rule.quad_order)
    xin, win, pin = _split_rule_1d(cg, sl, n_in)
    zin = cg[:, None] + sl * xin
    h0, h1 = sig.both(zin, pin)
    tabv = np.stack([np.sum(win * h0**e0 * h1**e1, axis=1) for e0, e1 in types])  # (T, G)
    J = _lagrange(tabv, c0, step, c)
    out = np.empty(keys.shape[0])
    for q, key in enumerate(keys):
        out[q] = _weighted_sum(W * J[tinv[q]], key, perm, s0, s1, d - 1)
    return out


@cache
def _tuple_index(N: int) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For every 4-tuple of samples: its distinct-sample block and the slots' local indices.

    Returns {d: (flat tuple indices, block id among combinations(range(N), d), local (n, 4))}.
    """
    T = np.array(list(itertools.product(range(N), repeat=4)), dtype=np.int64).reshape(-1, 4)
    Ts = np.sort(T, axis=1)
    new = np.concatenate([np.ones((T.shape[0], 1), bool), np.diff(Ts, axis=1) != 0], axis=1)
    dcount = new.sum(axis=1)
    # local index of slot value v = number of distinct values < v
    local = np.stack([np.sum(new & (Ts < T[:, [k]]), axis=1) for k in range(4)], axis=1)
    res = {}
    for d in range(1, 5):
        sel = np.nonzero(dcount == d)[0]
        if sel.size == 0:
            continue
        combos = np.array(list(itertools.combinations(range(N), d)), dtype=np.int64).reshape(-1, d)
        base = N + 1
        ccode = (combos * base ** np.arange(d)).sum(axis=1)
        distinct = np.where(new[sel], Ts[sel], -1)
        vals = np.sort(np.where(distinct < 0, np.iinfo(np.int64).max, distinct), axis=1)[:, :d]
        tcode = (vals * base ** np.arange(d)).sum(axis=1)
        order = np.argsort(ccode)
        bid = order[np.searchsorted(ccode[order], tcode)]
        res[d] = (sel, bid, local[sel])
    return res


def _four_point(
    K: np.ndarray, sig: _Sigma, families: dict[str, tuple[int, int, int, int]], rule: _Rule
) -> dict[str, np.ndarray]:
    """Full (N,N,N,N) tables of <prod_slots sigma^(k_slot)(z_{a_slot})> for each family.

    ``families`` maps a name to the derivative order (0: sigma, 1: sigma') of the 4 slots.
    Each distinct monomial is integrated once on the marginal block of its distinct samples.
    """
    N = K.shape[0]
    out = {name: np.zeros(N**4) for name in families}
    tix = _tuple_index(N)
    for d, (sel, bid, local) in tix.items():
        # exponent key per (family, tuple): counts of sigma and sigma' per local variable
        keys = []
        for ders in families.values():
            e = np.zeros((sel.size, d, 2), dtype=np.int64)
            for slot in range(4):
                np.add.at(e[:, :, ders[slot]], (np.arange(sel.size), local[:, slot]), 1)  # a view of e
            keys.append(e.reshape(sel.size, 2 * d))
        allkeys = np.concatenate(keys)
        ukeys, kinv = np.unique(allkeys, axis=0, return_inverse=True)
        kinv = kinv.reshape(-1)
        combos = np.array(list(itertools.combinations(range(N), d)), dtype=np.int64).reshape(-1, d)
        Kb = K[combos[:, :, None], combos[:, None, :]]
        vals = _product_expectations(Kb, ukeys, sig, rule)
        for f, name in enumerate(families):
            kq = kinv[f * sel.size : (f + 1) * sel.size]
            out[name][sel] = vals[kq, bid]
    return {k: v.reshape(N, N, N, N) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# The recursions
# ---------------------------------------------------------------------------------------------
def _step(
    state: dict[str, np.ndarray],
    sig: _Sigma,
    Cb: float,
    CW: float,
    lb: float,
    lW: float,
    rho: float,
    ntk: bool,
    order: int,
    rule: _Rule,
) -> dict[str, np.ndarray]:
    """One step l -> l+1.  Expectations at K^(l); hyperparameters of layer l+1; rho = n_l / n_{l-1}.

    ``state`` holds the tensors of layer l that are computed (Theta, Theta1, D, F, A, B with
    ``ntk``; K1, V, ... with ``order == 1``); the result holds those of layer l+1.
    """
    K = state["K"]
    Th = state.get("Theta")
    first = order == 1
    V, K1 = state.get("V"), state.get("K1")
    interacting = bool(
        first
        and V is not None
        and (np.any(V) or np.any(K1) or (ntk and np.any(state["D"])) or (ntk and np.any(state["F"])))
    )
    pq = _pair_quantities(
        K, K1 if first else None, V if first else None, sig, rule, need_hermite=interacting, need_ntk=ntk
    )
    G, P = pq["G"], pq["P"]
    new: dict[str, np.ndarray] = {}
    new["K"] = Cb + CW * G  # PDLT (4.118)
    if ntk:
        assert Th is not None  # the state of an NTK run carries Theta
        new["Theta"] = lb + lW * G + CW * P * Th  # PDLT (9.5) / ntk.md §1.4
    if not first:
        return new

    fams = {"S4": (0, 0, 0, 0)}
    if ntk:
        fams.update({"M": (0, 0, 1, 1), "P4": (1, 1, 1, 1)})
    fp = _four_point(K, sig, fams, rule)
    S4 = fp["S4"]
    GG = np.einsum("ab,cd->abcd", G, G)

    # V (PDLT 4.119): C_W^2 [<s s s s> - <s s><s s>] + C_W^2/4 rho V^{(b)} <s s (zz-K)> <s s (zz-K)>
    Vn = CW**2 * (S4 - GG)
    if interacting:
        assert V is not None  # interacting implies V
        Hs = pq["Hs"]
        Vn = Vn + 0.25 * CW**2 * rho * np.einsum("abij,ijkl,cdkl->abcd", Hs, V, Hs, optimize=True)
        # K1 (PDLT 4.115): rho C_W N[s s]
        new["K1"] = rho * CW * pq["Ns"]
    else:
        new["K1"] = np.zeros_like(K)
    new["V"] = Vn
    if not ntk:
        return new
    assert Th is not None  # the state of an NTK run carries Theta

    M4, P4 = fp["M"], fp["P4"]  # M4[a,b,c,d] = <s_a s_b s'_c s'_d>
    D, F, A, B, Th1 = state["D"], state["F"], state["A"], state["B"], state["Theta1"]
    Obar = lW * G + CW * Th * P  # <Omega_ab>, Omega = lW s s + CW Theta s' s'
    ThTh = np.einsum("ab,cd->abcd", Th, Th)
    PP = np.einsum("ab,cd->abcd", P, P)
    # D (PDLT 8.77), first (Gaussian) part: C_W [<s1 s2 Omega34> - <s1 s2><Omega34>]
    Dn = CW * (lW * (S4 - GG) + CW * Th[None, None] * (M4 - np.einsum("ab,cd->abcd", G, P)))
    # F (PDLT 8.79): F'[p1, n1, p2, n2] = C_W^2 <s_p1 s_p2 s'_n1 s'_n2> Theta_n1n2 + ...
    Fn = CW**2 * np.einsum("acbd,bd->abcd", M4, Th)
    # B (PDLT 8.89): B'[i,j,k,l] = C_W^2 [<s'^4> Theta_ik Theta_jl + rho P_ij P_kl B_ijkl]
    Bn = CW**2 * (P4 * np.einsum("ik,jl->ijkl", Th, Th) + rho * PP * B)
    # A (PDLT 8.97), Gaussian part: <Omega_ab Omega_cd> - <Omega_ab><Omega_cd> + rho C_W^2 P P A
    OO = (
        lW**2 * S4
        + lW * CW * (Th[None, None] * M4 + Th[:, :, None, None] * np.transpose(M4, (2, 3, 0, 1)))
        + CW**2 * ThTh * P4
    )
    An = OO - np.einsum("ab,cd->abcd", Obar, Obar) + rho * CW**2 * PP * A
    Th1n = rho * CW * P * Th1
    if interacting:
        assert V is not None  # interacting implies V
        Hp, H1 = pq["Hp"], pq["H1"]
        HO = lW * Hs + CW * Th[:, :, None, None] * Hp  # K^{..}K^{..}<Omega (zz-K)>
        Dn = Dn + 0.25 * CW * rho * np.einsum("abij,ijkl,cdkl->abcd", Hs, V, HO, optimize=True)
        Dn = Dn + 0.5 * CW**2 * rho * np.einsum("abij,ijcd->abcd", Hs, D) * P[None, None]
        Fn = Fn + CW**2 * rho * np.einsum("pnx,qmy,xnym->pnqm", H1, H1, F, optimize=True)
        HOD = np.einsum("abij,ijcd->abcd", HO, D)  # K^{b g}K^{b g}<Omega_ab (zz-K)> D_{g g cd}
        An = (
            An
            + 0.25 * rho * np.einsum("abij,ijkl,cdkl->abcd", HO, V, HO, optimize=True)
            + 0.5 * rho * CW * (HOD * P[None, None] + np.transpose(HOD, (2, 3, 0, 1)) * P[:, :, None, None])
        )
        # Theta1 (ntk.md §1.4, boxed): rho { C_W P Theta1 + lW N[s s] + C_W Theta N[s' s']
        #   + C_W K^{b1 g1} K^{b2 g2} <s'_a s'_b (z_b1 z_b2 - K)> (D_{g1 g2 a b}/2 + F_{g1 a g2 b}) }
        DF = 0.5 * D + np.transpose(F, (0, 2, 1, 3))  # DF[g1,g2,a,b] = D/2 + F[g1,a,g2,b]
        Th1n = Th1n + rho * (lW * pq["Ns"] + CW * Th * pq["Np"] + CW * np.einsum("abij,ijab->ab", Hp, DF))
    new.update({"D": Dn, "F": Fn, "A": An, "B": Bn, "Theta1": Th1n})
    return new


def theory(
    net: MLP, x: Any, *, ntk: bool = True, order: int = 1, quad_order: int | None = None, dntk: bool = False
) -> Theory:
    """Reference (pure numpy) first-order theory of ``net`` on inputs ``x``; same output as :func:`rgflow.theory`.

    Parameters
    ----------
    net: the :class:`~rgflow.MLP` (per-layer C_b, C_W, lambda_b, lambda_W; widths n_0..n_L).
    x: inputs, shape (N, n0).
    ntk: also compute Theta (and with order=1: Theta1, D, F, A, B).
    order: 0 (K, Theta only) or 1 (all first-order tensors).
    quad_order: None (default) for the adaptive rules described in the module docstring; an
        integer n forces plain fixed rules with n nodes per level (per piece for kinked
        activations) for every block size (for convergence studies; n^d nodes per block).
    dntk: also P, Q, R, S, T, U (``docs/spec/dntk.md``; needs ntk and order=1; smooth
        activations), by the book's inverse-kernel form of the recursions on tensor
        Gauss-Hermite rules (``rgflow.testing._dntk``; ``quad_order`` sets its nodes per
        dimension too).

    Returns a :class:`~rgflow.theory.Theory` with K, K1, Theta, Theta1 of shape (L, N, N) and
    V, D, F, A, B of shape (L, N, N, N, N), index order of ``docs/spec/ntk.md`` §1.2.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    ntk, dntk = check_bool("ntk", ntk), check_bool("dntk", dntk)
    order = check_int("order", order, minimum=0, maximum=1, hint=" (0: infinite width, 1: first order in 1/n)")
    if dntk and not (ntk and order == 1):
        raise ValueError("dntk=True needs ntk=True and order=1")
    quad_order = check_quad_order(quad_order, minimum=2)
    cause = overflow_scan(net, x)
    if cause is not None:
        raise ValueError(f"rgflow.testing.reference.theory: {cause}")
    xu, inv = np.unique(x, axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    N = xu.shape[0]
    n0 = x.shape[1]
    widths = net.layer_widths(n0)
    sig = _Sigma(net.activation)
    rule = _Rule(net.activation, quad_order)
    L = net.depth

    gram = xu @ xu.T / n0
    z2, z4 = np.zeros((N, N)), np.zeros((N, N, N, N))
    # Initial conditions (PDLT 4.8; ntk.md §1.5): layer 1 is exactly Gaussian.
    state: dict[str, np.ndarray] = {"K": net.C_b[0] + net.C_W[0] * gram}
    if ntk:
        state["Theta"] = net.lambda_b[0] + net.lambda_W[0] * gram
    if order == 1:
        state.update({"K1": z2, "V": z4})
        if ntk:
            state.update({"Theta1": z2, "D": z4, "F": z4, "A": z4, "B": z4})
    hist = [state]
    for l in range(1, L):  # step l -> l+1 (1-based layers)
        rho = widths[l] / widths[l - 1]
        state = _step(state, sig, net.C_b[l], net.C_W[l], net.lambda_b[l], net.lambda_W[l], rho, ntk, order, rule)
        hist.append(state)

    names2 = ["K"] + (["Theta"] if ntk else []) + (["K1"] if order == 1 else [])
    if order == 1 and ntk:
        names2.append("Theta1")
    names4 = (["V"] + (["D", "F", "A", "B"] if ntk else [])) if order == 1 else []
    ix2 = np.ix_(inv, inv)
    ix4 = np.ix_(inv, inv, inv, inv)
    tensors: dict[str, np.ndarray | None] = {k: None for k in THEORY_TENSORS}
    for k in names2:
        tensors[k] = np.stack([np.asarray(h[k], dtype=float)[ix2] for h in hist])
    for k in names4:
        tensors[k] = np.stack([np.asarray(h[k], dtype=float)[ix4] for h in hist])
    if dntk:
        rhos = [widths[l] / widths[l - 1] for l in range(1, L)]
        d = dntk_layers(
            net.activation,
            [h["K"] for h in hist],
            [h["Theta"] for h in hist],
            [h["F"] for h in hist],
            [h["B"] for h in hist],
            list(net.C_W),
            list(net.lambda_W),
            rhos,
            quad_order,
        )
        for k, v in d.items():
            tensors[k] = np.ascontiguousarray(np.stack([layer[ix4] for layer in v]))
    kinked = ("R", "S", "T", "U") if net.activation.kinked else ()
    check_finite_result("rgflow.testing.reference.theory", tensors, net, x, skip=kinked)
    options = {"ntk": ntk, "order": order, "quad_order": quad_order, "engine": "reference", "dntk": dntk}
    return Theory(net, x, tensors, options)
