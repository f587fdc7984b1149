"""Benchmark 1: batched Gaussian expectations, rgflow.expect vs numpy vs scipy.

Integrands: ``<σ(z1)σ(z2)>`` and ``<σ'(z1)σ'(z2)>`` over random 2×2 covariance blocks (10,000 by
default), and ``<σ(z1)σ(z2)σ(z3)σ(z4)>`` over random 4×4 blocks (fewer: a 4-D block costs
up to (3·order)^4 nodes), for relu and gelu.

* **rgflow closed**: ``rgflow.expect(K_batch, factors, act)`` (default ``method="auto"``): relu
  and gelu in closed form (Stein's identity down to centred orthant probabilities,
  ``rust/core/src/closed_form.rs``), exact to rounding; 4-D also on 10,000 blocks.
* **rgflow quad**: ``rgflow.expect(..., order=..., method="quadrature")`` at the core's default
  orders (32 nodes per piece for 2-D, 12 for 4-D), Rust, parallel over blocks.
* **numpy**: a vectorised numpy implementation of the *same* rule as the core
  (``rust/core/src/expect.rs``): greedy pivoted Cholesky ``z = L u``; levels integrated one by one;
  at each level, if the kink/split point z = 0 lies within ±9 standard deviations of the
  conditional mean, half-range Gauss–Hermite rules (``order`` nodes) on either side of the cut
  (and Gauss–Legendre between the cut and 0 when |cut| > 1.5), otherwise probabilists'
  Gauss–Hermite with 2·order nodes (the core splits gelu at 0 as well); extra cuts at
  ±4r around the projected kinks of later samples that are nearly determined by this level
  (r = remaining/explained standard deviation < 0.5: highly correlated inputs); for relu the
  innermost level in closed form (truncated Gaussian moments), as the core does for
  piecewise-linear activations.  Same nodes (the rule tables are computed independently), so
  the two agree to ~1e-13; the comparison is speed.
* **scipy**: ``scipy.integrate.nquad`` in whitened coordinates, with the kink passed as a
  breakpoint, on a few 2-D blocks (time per block, extrapolated to the full batch).

Accuracy is the largest ``|value − reference| / max(|reference|, scale)`` over the blocks, with the
block's natural scale Π_k √K_kk for σ factors and 1 for σ' factors (so values that nearly cancel,
e.g. relu at correlation −1, do not inflate it).  References: relu against closed forms
(arc-cosine kernels for 2-D; products of arc-cosine kernels for block-diagonal 4-D covariances
with shuffled samples); gelu against a higher-order run of the numpy rule (2× the order for
2-D, 1.5× for 4-D, on a subset of the blocks).

Usage: ``python benches/bench_expect.py [--blocks2 10000] [--blocks4 24] [--json out.json]``
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import fmt, log, machine, table, timed, write_json  # noqa: E402
from rgflow.activations import Activation  # noqa: E402

CUTOFF = 9.0
RTOL = 1e-12  # the core's DEGENERATE_RTOL
ORDER = {2: 32, 4: 12}  # the core's default_order(d) (rust/core/src/expect.rs)


# ============================================================================ the numpy rule


def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite rule, weights summing to 1."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


def _gl(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@functools.cache
def _half_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the weight φ(v) on [0, ∞) (weights sum to 1/2): Stieltjes/Lanczos on a
    600-point Gauss–Legendre discretisation of [0, 16], then Golub–Welsch (as the core does)."""
    x, w = np.polynomial.legendre.leggauss(600)
    v = 8.0 * (x + 1.0)
    w = w * 8.0 * np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    mu0 = w.sum()
    alpha, off = np.zeros(n), np.zeros(n)
    q_prev, q, b_prev = np.zeros_like(v), np.full_like(v, 1.0 / math.sqrt(mu0)), 0.0
    for k in range(n):
        alpha[k] = np.sum(w * v * q * q)
        r = (v - alpha[k]) * q - b_prev * q_prev
        r -= q * np.sum(w * r * q)  # re-orthogonalise (Lanczos)
        b = math.sqrt(np.sum(w * r * r))
        off[k] = b
        q_prev, q, b_prev = q, r / b, b
    J = np.diag(alpha) + np.diag(off[: n - 1], 1) + np.diag(off[: n - 1], -1)
    nodes, vecs = np.linalg.eigh(J)
    return nodes, mu0 * vecs[0] ** 2


def pivoted_cholesky(K: np.ndarray) -> np.ndarray:
    """Greedy pivoted Cholesky per block (largest remaining variance first), vectorised over blocks.

    Returns L (B, d, d) in pivot order; directions with pivot <= 1e-12 × max variance get zero
    columns (exact marginalisation), as in the core.
    """
    B, d, _ = K.shape
    A = K.astype(float).copy()
    L = np.zeros_like(A)
    tol = RTOL * np.max(np.einsum("bii->bi", K), axis=1)
    bi = np.arange(B)
    done = np.zeros(B, dtype=bool)
    for k in range(d):
        diag = np.einsum("bii->bi", A)[:, k:]
        p = k + np.argmax(diag, axis=1)
        idx = np.tile(np.arange(d), (B, 1))
        idx[bi, k], idx[bi, p] = p, k
        A = A[bi[:, None, None], idx[:, :, None], idx[:, None, :]]
        L = L[bi[:, None], idx, :]
        piv = A[:, k, k]
        done |= piv <= tol
        s = np.where(done, 0.0, np.sqrt(np.where(done, 1.0, piv)))
        L[:, k, k] = s
        col = np.where(done[:, None], 0.0, A[:, k + 1 :, k] / np.where(s > 0, s, 1.0)[:, None])
        L[:, k + 1 :, k] = col
        A[:, k + 1 :, k + 1 :] -= col[:, :, None] * col[:, None, :]
    return L


def _level_nodes(
    c: np.ndarray, s: np.ndarray, order: int, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u and weights w (shape c.shape + (M,)) of one level, as the core (``Nested::nodes`` in
    expect.rs) chooses them for a split point at z = 0.

    ``c``, ``s``: conditional mean and standard deviation of this level's sample (``c.shape``);
    ``extra``: further cut candidates (``c.shape + (m,)``, NaN = none), the windows around the
    projected kinks of later, nearly determined samples.  Rule:

    * no cut within ±9 standard deviations: Gauss–Hermite with 2·order nodes;
    * otherwise the cuts (plus 0 if none lies within ±1.5): half-range Gauss–Hermite (order nodes)
      left of the first cut and right of the last, Gauss–Legendre (order nodes) between
      consecutive cuts.

    Paths need different numbers of nodes; unused slots have weight 0 and are moved to the end,
    and the trailing all-zero columns are dropped.
    """
    xg, wg = _gl(order)
    xh, wh = _gh(2 * order)
    xr, wr = _half_hermite(order)
    inv = 1.0 / math.sqrt(2.0 * math.pi)
    sp = np.where(s > 0, s, 1.0)
    cand = [(-c / sp)[..., None]]
    if extra is not None:
        cand.append(extra)
    cuts = np.concatenate(cand + [np.full(c.shape + (1,), np.nan)], axis=-1)
    cuts = np.where(np.abs(cuts) < CUTOFF - 1e-9, cuts, np.nan)
    cuts[..., -1] = np.where(np.nanmin(np.abs(np.where(np.isnan(cuts), np.inf, cuts)), axis=-1) <= 1.5, np.nan, 0.0)
    valid = ~np.isnan(cuts)
    nv = valid.sum(axis=-1)
    has = (nv > 1) | ((nv == 1) & np.isnan(cuts[..., -1]))  # a real cut (not only the added 0)
    has &= s > 0
    cuts = np.sort(cuts, axis=-1)  # NaN last
    first = cuts[..., :1]
    last = np.take_along_axis(cuts, np.maximum(nv - 1, 0)[..., None], axis=-1)
    left_u = first - xr
    left_w = wr * np.exp(first * xr - 0.5 * first * first)
    right_u = last + xr
    right_w = wr * np.exp(-last * xr - 0.5 * last * last)
    a, b = cuts[..., :-1, None], cuts[..., 1:, None]
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    half, mid = 0.5 * (b - a), 0.5 * (a + b)
    mid_u = mid + half * xg
    mid_w = np.where(ok, wg * half * np.exp(-0.5 * mid_u * mid_u) * inv, 0.0)
    u_s = np.concatenate([left_u, mid_u.reshape(c.shape + (-1,)), right_u], axis=-1)
    w_s = np.concatenate([left_w, mid_w.reshape(c.shape + (-1,)), right_w], axis=-1)
    M = u_s.shape[-1]
    u_h = np.concatenate([xh, np.zeros(M - xh.size)])
    w_h = np.concatenate([wh, np.zeros(M - wh.size)])
    u = np.where(has[..., None], np.nan_to_num(u_s), u_h)
    w = np.where(has[..., None], np.nan_to_num(w_s), w_h)
    deg = ~(s > 0)
    if np.any(deg):  # degenerate level: one node at 0 with weight 1
        w0 = np.zeros(M)
        w0[0] = 1.0
        u = np.where(deg[..., None], 0.0, u)
        w = np.where(deg[..., None], w0, w)
    # compact: nonzero weights first (stable), drop the columns that are zero everywhere
    order_idx = np.argsort(w == 0.0, axis=-1, kind="stable")
    u = np.take_along_axis(u, order_idx, axis=-1)
    w = np.take_along_axis(w, order_idx, axis=-1)
    keep = int(np.max(np.sum(w != 0.0, axis=-1))) if w.size else M
    return u[..., :keep], w[..., :keep]


def _kink_windows(Lc: np.ndarray, cs: list, k: int) -> np.ndarray | None:
    """Cut candidates of level k from later samples j whose kink is sharp in u_k (the core's
    ``sharp`` list): r = |(L_j,k+1..j)| / |L_jk| < 0.5; cuts at (0 - c_j)/L_jk ± 4 r (one cut if r = 0)."""
    d = Lc.shape[1]
    out = []
    for j in range(k + 1, d):
        ljk = Lc[:, j, k]
        rest = np.sqrt(np.sum(Lc[:, j, k + 1 : j + 1] ** 2, axis=1))
        r = np.where(ljk != 0, rest / np.where(ljk != 0, np.abs(ljk), 1.0), np.inf)
        sharp = (ljk != 0) & (r < 0.5)
        if not np.any(sharp):
            continue
        centre = -cs[j] / np.where(ljk != 0, ljk, 1.0)[:, None]
        rr = r[:, None]
        lo = np.where(rr == 0, centre, centre - 4.0 * rr)
        hi = np.where(rr == 0, np.nan, centre + 4.0 * rr)
        m = sharp[:, None]
        out += [np.where(m, lo, np.nan)[..., None], np.where(m, hi, np.nan)[..., None]]
    return np.concatenate(out, axis=-1) if out else None


def relu_last_level(deriv: int):
    """Closed-form innermost level for relu (truncated Gaussian moments, as the core does for
    piecewise-linear activations): E_u[relu(c + s u)] = c Φ(c/s) + s φ(c/s), E_u[step(c + s u)] = Φ(c/s)."""
    from scipy.special import ndtr

    def last(c: np.ndarray, s: np.ndarray) -> np.ndarray:
        t = c / s
        if deriv == 0:
            return c * ndtr(t) + s * np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        return ndtr(t)

    return last


def nested_expect(K: np.ndarray, f, order: int, last=None, max_nodes: float = 4e6) -> np.ndarray:
    """E[Π_k f(z_k)], z ~ N(0, K_b), for a batch K (B, d, d): the core's nested rule in numpy.

    ``last(c, s)``, if given, is E_u[f(c + s u)] in closed form, used for the innermost level
    where its standard deviation s is > 0 (relu: :func:`relu_last_level`).
    """
    B, d, _ = K.shape
    L = pivoted_cholesky(K)
    per_block = (3 * order) ** (d - 1 if last is not None else d)
    chunk = max(1, int(max_nodes // per_block))
    out = np.empty(B)
    for s0 in range(0, B, chunk):
        Lc = L[s0 : s0 + chunk]
        Bc = Lc.shape[0]
        acc = np.ones((Bc, 1))
        cs = [np.zeros((Bc, 1)) for _ in range(d)]
        for k in range(d):
            s = np.broadcast_to(Lc[:, k, k][:, None], cs[k].shape)
            if k == d - 1 and last is not None:
                pos = s > 0
                val = np.where(pos, last(cs[k], np.where(pos, s, 1.0)), f(cs[k]))
                acc = acc * val
                break
            u, w = _level_nodes(cs[k], s, order, _kink_windows(Lc, cs, k))
            z = cs[k][..., None] + s[..., None] * u
            acc = (acc[..., None] * (w * f(z))).reshape(Bc, -1)
            for j in range(k + 1, d):
                cs[j] = (cs[j][..., None] + Lc[:, j, k][:, None, None] * u).reshape(Bc, -1)
            cs[k] = None  # type: ignore[call-overload]
        out[s0 : s0 + Bc] = acc.sum(axis=1)
    return out


# ============================================================================ references


def arccos_relu(K: np.ndarray, deriv: int) -> np.ndarray:
    """<relu(z1) relu(z2)> (deriv 0) or <step(z1) step(z2)> (deriv 1) in closed form."""
    k11, k22, k12 = K[:, 0, 0], K[:, 1, 1], K[:, 0, 1]
    r = np.sqrt(k11 * k22)
    th = np.arctan2(np.sqrt(np.maximum(k11 * k22 - k12 * k12, 0.0)), k12)  # precise near θ = 0
    cos = np.cos(th)
    if deriv == 0:
        return r / (2 * math.pi) * (np.sin(th) + (math.pi - th) * cos)
    return (math.pi - th) / (2 * math.pi)


def scipy_2d(K: np.ndarray, f, kink: bool) -> np.ndarray:
    """nquad in whitened coordinates (z1 = l11 u1, z2 = l21 u1 + l22 u2), kink as breakpoint."""
    from scipy import integrate

    out = []
    phi = 1.0 / math.sqrt(2.0 * math.pi)
    for Kb in K:
        Lb = np.linalg.cholesky(Kb)
        l11, l21, l22 = Lb[0, 0], Lb[1, 0], Lb[1, 1]

        def g(u2, u1, l11=l11, l21=l21, l22=l22):
            return phi * phi * math.exp(-0.5 * (u1 * u1 + u2 * u2)) * f(l11 * u1) * f(l21 * u1 + l22 * u2)

        def opts_inner(u1, l21=l21, l22=l22):
            return (
                {"points": [-l21 * u1 / l22], "epsabs": 1e-14, "epsrel": 1e-12, "limit": 200}
                if kink
                else {"epsabs": 1e-14, "epsrel": 1e-12, "limit": 200}
            )

        opts_outer = {"points": [0.0], "epsabs": 1e-14, "epsrel": 1e-12, "limit": 200}
        val, _ = integrate.nquad(g, [[-12, 12], [-12, 12]], opts=[opts_inner, opts_outer])
        out.append(val)
    return np.array(out)


# ============================================================================ the benchmark


def random_blocks(rng: np.random.Generator, B: int, d: int) -> np.ndarray:
    A = rng.standard_normal((B, d, d))
    K = A @ A.transpose(0, 2, 1) / d + 0.05 * np.eye(d)
    return K * rng.uniform(0.5, 3.0, B)[:, None, None]


def factorised_blocks(rng: np.random.Generator, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4×4 covariances of two independent pairs, samples shuffled; returns (K4, K2a, K2b)."""
    Ka, Kb = random_blocks(rng, B, 2), random_blocks(rng, B, 2)
    K4 = np.zeros((B, 4, 4))
    K4[:, :2, :2], K4[:, 2:, 2:] = Ka, Kb
    perm = np.array([0, 2, 1, 3])
    return K4[:, perm][:, :, perm], Ka, Kb


def _scalar(act: Activation, deriv: int, z: float) -> float:
    return float(act.numpy(np.array(z), deriv))


def block_scale(K: np.ndarray, deriv: int) -> np.ndarray:
    """Natural size of Π_k σ^(deriv)(z_k) for a block: Π_k √K_kk for σ (relu, gelu grow like z), 1 for σ'."""
    if deriv == 1:
        return np.ones(K.shape[0])
    return np.prod(np.sqrt(np.einsum("bii->bi", K)), axis=1)


def rel_err(a: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> float:
    """max over blocks of |a - ref| / max(|ref|, scale): relative error, with the block's natural
    scale as the floor (values that nearly cancel, e.g. relu at correlation -1, are not inflated)."""
    floor = np.abs(ref) if scale is None else np.maximum(np.abs(ref), scale[: len(ref)])
    return float(np.max(np.abs(a - ref) / np.maximum(floor, 1e-300)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks2", type=int, default=10_000, help="2-D covariance blocks (default 10000)")
    ap.add_argument("--blocks4", type=int, default=24, help="4-D covariance blocks (default 24)")
    ap.add_argument("--closed-blocks4", type=int, default=10_000, help="4-D blocks for the closed form (default 10000)")
    ap.add_argument("--scipy-blocks", type=int, default=4, help="2-D blocks integrated with scipy (default 4)")
    ap.add_argument("--ref-blocks2", type=int, default=1000, help="2-D blocks for the high-order gelu reference")
    ap.add_argument("--ref-blocks4", type=int, default=4, help="4-D blocks for the high-order gelu reference")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(2024)
    K2 = random_blocks(rng, args.blocks2, 2)
    K4 = random_blocks(rng, args.blocks4, 4)
    K4big = random_blocks(rng, args.closed_blocks4, 4)
    K4f, K2a, K2b = factorised_blocks(rng, max(8, args.blocks4 // 8))
    rows, results = [], []
    acts = {"relu": Activation("relu"), "gelu": Activation("gelu")}

    for name, act in acts.items():
        for deriv in (0, 1):
            sym = "<σσ>" if deriv == 0 else "<σ'σ'>"
            f = functools.partial(act.numpy, deriv=deriv)
            log(f"{name} 2-D {sym}: {len(K2)} blocks")
            quad = functools.partial(rgflow.expect, order=ORDER[2], method="quadrature")
            quad(K2[:2], [(0, deriv), (1, deriv)], name)  # warm-up (rule caches)
            r_v, r_t = timed(quad, K2, [(0, deriv), (1, deriv)], name)
            rgflow.expect(K2[:2], [(0, deriv), (1, deriv)], name)  # warm-up
            c_v, c_t = timed(rgflow.expect, K2, [(0, deriv), (1, deriv)], name)
            last = relu_last_level(deriv) if name == "relu" else None
            nested_expect(K2[:2], f, ORDER[2], last)  # warm-up (rule tables)
            n_v, n_t = timed(nested_expect, K2, f, ORDER[2], last)
            Ks = K2[: args.scipy_blocks]
            s_v, s_t = timed(scipy_2d, Ks, functools.partial(_scalar, act, deriv), True)
            sc = block_scale(K2, deriv)
            if name == "relu":
                m = len(K2)
                ref, ref_name = arccos_relu(K2, deriv), "closed form (arc-cosine)"
            else:
                m = min(args.ref_blocks2, len(K2))
                ref, ref_name = nested_expect(K2[:m], f, 2 * ORDER[2]), f"numpy rule, order {2 * ORDER[2]}, {m} blocks"
            res = {
                "case": f"{name} 2-D {sym}",
                "blocks": len(K2),
                "order": ORDER[2],
                "rgflow_s": r_t,
                "numpy_s": n_t,
                "ratio_rgflow_numpy": r_t / n_t,
                "closed_s": c_t,
                "closed_blocks": len(K2),
                "speedup_numpy_closed": n_t / c_t,
                "err_closed": rel_err(c_v[:m], ref, sc),
                "scipy_s_per_block": s_t / len(Ks),
                "scipy_s_extrapolated": s_t / len(Ks) * len(K2),
                "scipy_blocks": len(Ks),
                "err_rgflow": rel_err(r_v[:m], ref, sc),
                "err_numpy": rel_err(n_v[:m], ref, sc),
                "err_scipy": rel_err(s_v, ref[: len(Ks)], sc),
                "rgflow_vs_numpy": rel_err(r_v, n_v, sc),
                "reference": ref_name,
            }
            results.append(res)
    for name, act in acts.items():
        f = functools.partial(act.numpy, deriv=0)
        fac = [(0, 0), (1, 0), (2, 0), (3, 0)]
        log(f"{name} 4-D <σσσσ>: {len(K4)} blocks")
        quad = functools.partial(rgflow.expect, order=ORDER[4], method="quadrature")
        r_v, r_t = timed(quad, K4, fac, name)
        c_v, _ = timed(rgflow.expect, K4, fac, name)
        c_big, c_t = timed(rgflow.expect, K4big, fac, name)
        last = relu_last_level(0) if name == "relu" else None
        nested_expect(K4[:1], f, ORDER[4], last)  # warm-up
        n_v, n_t = timed(nested_expect, K4, f, ORDER[4], last)
        if name == "relu":
            ref_f = arccos_relu(K2a, 0) * arccos_relu(K2b, 0)
            sc = block_scale(K4f, 0)
            err_r = rel_err(quad(K4f, fac, name), ref_f, sc)
            err_n = rel_err(nested_expect(K4f, f, ORDER[4], last), ref_f, sc)
            err_c = rel_err(rgflow.expect(K4f, fac, name), ref_f, sc)
            ref_name = f"closed form on {len(K4f)} factorised blocks"
        else:
            m = min(args.ref_blocks4, len(K4))
            ref = nested_expect(K4[:m], f, 3 * ORDER[4] // 2)
            sc = block_scale(K4, 0)
            err_r, err_n = rel_err(r_v[:m], ref, sc), rel_err(n_v[:m], ref, sc)
            err_c = rel_err(c_v[:m], ref, sc)
            ref_name = f"numpy rule, order {3 * ORDER[4] // 2}, {m} blocks"
        results.append(
            {
                "case": f"{name} 4-D <σσσσ>",
                "blocks": len(K4),
                "order": ORDER[4],
                "rgflow_s": r_t,
                "numpy_s": n_t,
                "ratio_rgflow_numpy": r_t / n_t,
                "closed_s": c_t,
                "closed_blocks": len(K4big),
                # per-block times: numpy on len(K4) blocks, closed form on len(K4big)
                "speedup_numpy_closed": (n_t / len(K4)) / (c_t / len(K4big)),
                "err_closed": err_c,
                "scipy_s_per_block": None,
                "scipy_s_extrapolated": None,
                "err_rgflow": err_r,
                "err_numpy": err_n,
                "err_scipy": None,
                "rgflow_vs_numpy": rel_err(r_v, n_v, block_scale(K4, 0)),
                "reference": ref_name,
            }
        )

    headers = [
        "case",
        "blocks",
        "order",
        "rgflow quad s",
        "numpy s",
        "quad/numpy",
        "rgflow closed s (blocks)",
        "numpy/closed per block",
        "scipy s (extrap.)",
        "err quad",
        "err numpy",
        "err closed",
        "err scipy",
        "|quad-numpy|",
        "reference",
    ]
    for r in results:
        rows.append(
            [
                r["case"],
                r["blocks"],
                r["order"],
                fmt(r["rgflow_s"]),
                fmt(r["numpy_s"]),
                fmt(r["ratio_rgflow_numpy"], ".2f"),
                f"{r['closed_s']:.3g} ({r['closed_blocks']})",
                f"{r['speedup_numpy_closed']:.0f}×",
                "—"
                if r["scipy_s_extrapolated"] is None
                else f"{r['scipy_s_extrapolated']:.3g} ({r['scipy_blocks']} blk)",
                fmt(r["err_rgflow"], ".1e"),
                fmt(r["err_numpy"], ".1e"),
                fmt(r["err_closed"], ".1e"),
                fmt(r["err_scipy"], ".1e"),
                fmt(r["rgflow_vs_numpy"], ".1e"),
                r["reference"],
            ]
        )
    print("Batched Gaussian expectations (errors: max over blocks of |value - reference| / max(|reference|, Π√K_aa))")
    print(table(headers, rows))
    write_json(
        args.json, {"benchmark": "expect", "machine": machine(), "results": results, "headers": headers, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
