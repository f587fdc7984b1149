"""Reference (pure numpy) dNTK and ddNTK recursions: P, Q (PDLT ch. 11) and R, S, T, U (ch. ∞).

An independent second implementation of ``docs/spec/dntk.md`` §3 for tests and benchmarks,
on a code path deliberately different from the Rust engine's:

* **The book's inverse-kernel form.**  Every sample gradient of a pair function is written as
  PDLT prints it, ``sum_beta K^{gamma beta} <z_beta g>`` (Hermite moments), with the inverse
  of the marginal block of the pair's samples (PDLT footnote 13); ``Q`` uses the printed
  (11.52) with the ``(lambda_W / C_W) F^(l+1)`` term (``dntk.md`` §3.2) instead of the
  engine's merged form; ``sigma''`` and ``sigma'''`` appear only where the book prints them.
* **Different quadrature.**  Tensor-product Gauss-Hermite rules on the marginal block of the
  distinct samples of each entry (symmetric square root of the block, so rank-deficient blocks
  are exact), against the engine's closed forms and nested kink-aware quadrature.
* The layer-l F and B come from the numpy reference's own recursions.

Smooth activations only (tanh, erf, gelu, swish, sigmoid, softplus, sin, linear, monomial, and
custom ones with three derivatives): for kinked ones the ddNTKs are not defined and the
distributional P, Q terms need the engine's total-derivative forms.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import numpy as np

from ..activations import Activation

_SQRT2PI = math.sqrt(2.0 * math.pi)
#: Gauss-Hermite nodes per dimension for a block of d distinct samples.
_ORDERS = {1: 160, 2: 90, 3: 48, 4: 28}


def _third(act: Activation, z: np.ndarray) -> np.ndarray:
    """The third derivative of a smooth built-in activation."""
    n, p = act.name, act.params
    if n == "tanh":
        t = np.tanh(z)
        return -2 * (1 - t * t) * (1 - 3 * t * t)
    if n == "erf":
        return (4 * z * z - 2) * 2.0 / math.sqrt(math.pi) * np.exp(-z * z)
    if n == "gelu":
        return (z**3 - 4 * z) * np.exp(-0.5 * z * z) / _SQRT2PI
    if n == "sin":
        return -np.cos(z)
    if n in ("swish", "softplus", "sigmoid"):
        s = 0.5 * (1 + np.tanh(0.5 * z))
        d1 = s * (1 - s)
        d2 = d1 * (1 - 2 * s)
        d3 = d1 * (1 - 6 * s + 6 * s * s)
        return {"sigmoid": d3, "softplus": d2, "swish": 3 * d2 + z * d3}[n]
    if n == "linear":
        return np.zeros_like(z)
    if n == "monomial":
        k = int(p["p"])
        return math.perm(k, 3) * z ** (k - 3) if k >= 3 else np.zeros_like(z)
    raise ValueError(f"no third derivative for activation {n!r} in the reference")


def sigma_jet(act: Activation, z: np.ndarray) -> np.ndarray:
    """The activation and its first three derivatives at z: shape (4, *z.shape)."""
    if act.kinked:
        raise ValueError(f"the reference dNTK recursions need a smooth activation, not {act.name!r}")
    if act.is_custom:
        fs = (act.function, *act.derivatives)
        if len(fs) < 4:
            raise ValueError("the reference dNTK recursions need a custom activation with 3 derivatives")
        return np.stack([np.asarray(f(z), dtype=float) for f in fs[:4]])  # type: ignore[misc]
    return np.stack([act.numpy(z, 0), act.numpy(z, 1), act.numpy(z, 2), _third(act, z)])


@cache
def _grid(d: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite grid for N(0, 1)^d: nodes (P, d), weights (P,), P <= q^d."""
    x, w = np.polynomial.hermite_e.hermegauss(q)
    w = w / _SQRT2PI
    xs = np.stack(np.meshgrid(*([x] * d), indexing="ij"), axis=-1).reshape(-1, d)
    ws = np.prod(np.stack(np.meshgrid(*([w] * d), indexing="ij"), axis=-1).reshape(-1, d), axis=1)
    keep = ws > 1e-22  # the far corners of the tensor grid carry nothing at double precision
    return np.ascontiguousarray(xs[keep]), np.ascontiguousarray(ws[keep])


class _Block:
    """Quadrature on the marginal block of the samples ``s`` (distinct, sorted): z at the nodes,
    the weights, the jets of sigma, and the (pseudo-)inverse of the block."""

    def __init__(self, K: np.ndarray, s: tuple[int, ...], act: Activation, quad_order: int | None):
        d = len(s)
        Ks = K[np.ix_(s, s)]
        lam, U = np.linalg.eigh(Ks)
        lam = np.clip(lam, 0.0, None)
        root = U * np.sqrt(lam)  # z = root @ xi
        xi, self.w = _grid(d, quad_order or _ORDERS[d])
        self.z = xi @ root.T  # (Q, d)
        self.jet = sigma_jet(act, self.z.T)  # (4, d, Q)
        self.kinv = np.linalg.pinv(Ks, rcond=1e-12)
        self.pos = {g: i for i, g in enumerate(s)}

    def mean(self, f: np.ndarray) -> float:
        return float(self.w @ f)

    def factor(self, sample: int, order: int) -> np.ndarray:
        return self.jet[order, self.pos[sample]]

    def grad(self, f: np.ndarray) -> dict[int, float]:
        """<grad_gamma f> in the book's form: sum_beta K^{gamma beta} <z_beta f> over the block."""
        mom = self.z.T @ (self.w * f)  # <z_beta f>
        g = self.kinv @ mom
        return {smp: float(g[i]) for smp, i in self.pos.items()}


def dntk_layers(
    act: Activation,
    Ks: list[np.ndarray],
    Ths: list[np.ndarray],
    Fs: list[np.ndarray],
    Bs: list[np.ndarray],
    C_W: list[float],
    lambda_W: list[float],
    rhos: list[float],
    quad_order: int | None = None,
) -> dict[str, np.ndarray]:
    """P, Q, R, S, T, U at every layer (L, N, N, N, N) from the per-layer K, Theta, F, B.

    ``C_W[l]``, ``lambda_W[l]`` are the 0-based layer-l hyperparameters; ``rhos[l] = n_l / n_{l-1}``
    is the width ratio of the step from layer l to l+1 (1-based l).
    """
    L = len(Ks)
    N = Ks[0].shape[0]
    z4 = np.zeros((N,) * 4)
    out = {k: [z4] for k in "PQRSTU"}  # layer 1: zero (11.26, 11.57, text before (∞.13))
    tuples = list(itertools.product(range(N), repeat=4))
    for l in range(1, L):
        K, Th, F, B = Ks[l - 1], Ths[l - 1], Fs[l - 1], Bs[l - 1]
        Fn = Fs[l]  # F at layer l+1: the book's Q recursion (11.52) uses it
        cw, lw, rho = C_W[l], lambda_W[l], rhos[l - 1]
        P, Q, R, S, T, U = (out[k][-1] for k in "PQRSTU")
        blocks: dict[tuple[int, ...], _Block] = {}

        def block(*samples: int, _b: dict[tuple[int, ...], _Block] = blocks, _K: np.ndarray = K) -> _Block:
            s = tuple(sorted(set(samples)))
            if s not in _b:
                _b[s] = _Block(_K, s, act, quad_order)
            return _b[s]

        # two-point expectations <sigma^(i)_a sigma^(j)_b> and the K^{-1}-form gradients
        e2 = np.zeros((4, 4, N, N))
        gx: dict[tuple[int, int], dict[int, float]] = {}  # <grad X_ab>, X_ab = lW s'_a s_b + CW Th s''_a s'_b
        gz: dict[tuple[int, int], dict[int, float]] = {}  # <grad z-> (s''_a s'_b)> (Q's printed F term)
        gs: dict[tuple[int, int], dict[int, float]] = {}  # <grad (s'_a s_b)>
        for a, b in itertools.product(range(N), repeat=2):
            bk = block(a, b)
            for i, j in itertools.product(range(4), repeat=2):
                if i + j <= 4:
                    e2[i, j, a, b] = bk.mean(bk.factor(a, i) * bk.factor(b, j))
            f10 = bk.factor(a, 1) * bk.factor(b, 0)
            f21 = bk.factor(a, 2) * bk.factor(b, 1)
            gx[a, b] = bk.grad(lw * f10 + cw * Th[a, b] * f21)
            gz[a, b] = bk.grad(f21)
            gs[a, b] = bk.grad(f10)
        p2 = e2[1, 1]
        s20 = e2[2, 0]
        xx = lw * e2[2, 0] + cw * Th * e2[3, 1]  # <X^xx_ab>
        xy = lw * e2[1, 1] + cw * Th * e2[2, 2]  # <X^xy_ab>

        def g4(orders: tuple[int, int, int, int], idx: tuple[int, int, int, int]) -> float:
            bk = block(*idx)
            f = bk.factor(idx[0], orders[0])
            for o, smp in zip(orders[1:], idx[1:], strict=True):
                f = f * bk.factor(smp, o)
            return bk.mean(f)

        Pn, Qn, Rn, Sn, Tn, Un = (np.zeros((N,) * 4) for _ in range(6))
        for d0, d1, d2, d3 in tuples:
            # P (11.49), as printed
            Pn[d0, d1, d2, d3] = cw**2 * Th[d0, d1] * Th[d0, d2] * g4(
                (2, 1, 1, 0), (d0, d1, d2, d3)
            ) + rho * cw**2 * p2[d1, d2] * (
                s20[d0, d3] * (B[d0, d0, d1, d2] + P[d0, d1, d2, d0]) + p2[d0, d3] * P[d0, d1, d2, d3]
            )
            # Q (11.52), as printed (coefficient lambda_W / C_W of F^(l+1), dntk.md §3.2)
            tf = sum(v1 * v2 * F[g1, d0, g2, d2] for g1, v1 in gz[d0, d1].items() for g2, v2 in gs[d2, d3].items())
            Qn[d0, d1, d2, d3] = (
                cw**2 * Th[d0, d1] * Th[d0, d2] * g4((2, 1, 1, 0), (d0, d1, d2, d3))
                + lw / cw * Fn[d1, d0, d3, d2]
                + rho * cw**2 * p2[d0, d1] * (s20[d2, d3] * Q[d0, d1, d2, d2] + p2[d2, d3] * Q[d0, d1, d2, d3])
                + rho * cw**2 * Th[d0, d1] * tf
            )
            # R (∞.177), lambda_W and C_W on both terms of their brackets (dntk.md §3.3)
            src = lw * g4((2, 0, 1, 1), (d0, d1, d2, d3)) + cw * Th[d0, d1] * g4((3, 1, 1, 1), (d0, d1, d2, d3))
            tp = sum(v * P[d0, d2, d3, g] for g, v in gx[d0, d1].items())
            Rn[d0, d1, d2, d3] = (
                cw * Th[d0, d2] * Th[d0, d3] * src
                + rho * cw * p2[d2, d3] * (xx[d0, d1] * B[d0, d0, d2, d3] + tp)
                + rho * cw**2 * p2[d0, d1] * p2[d2, d3] * R[d0, d1, d2, d3]
            )
            # S (∞.179): S_{1234} with (1, 2, 3, 4) = (d0, d1, d2, d3)
            a1, a2, a3, a4 = d0, d1, d2, d3
            src = lw * g4((1, 1, 1, 1), (a1, a2, a3, a4)) + cw * Th[a1, a2] * g4((2, 2, 1, 1), (a1, a2, a3, a4))
            Sn[a1, a2, a3, a4] = (
                cw * Th[a1, a3] * Th[a2, a4] * src
                + rho * cw * p2[a3, a4] * xy[a1, a2] * B[a1, a2, a3, a4]
                + rho * cw**2 * p2[a1, a2] * p2[a3, a4] * S[a1, a2, a3, a4]
            )
            # T (∞.180): the entry T_{1342}, i.e. T[d0, d1, d2, d3] with 1 = d0, 3 = d1, 4 = d2, 2 = d3
            a1, a3, a4, a2 = d0, d1, d2, d3
            src = (
                lw**2 * g4((1, 1, 0, 0), (a1, a2, a3, a4))
                + lw * cw * Th[a2, a4] * g4((1, 2, 0, 1), (a1, a2, a3, a4))
                + lw * cw * Th[a1, a3] * g4((2, 1, 1, 0), (a1, a2, a3, a4))
                + cw**2 * Th[a1, a3] * Th[a2, a4] * g4((2, 2, 1, 1), (a1, a2, a3, a4))
            )
            tf = sum(v1 * v2 * F[g1, a1, g2, a2] for g1, v1 in gx[a1, a3].items() for g2, v2 in gx[a2, a4].items())
            tq = p2[a2, a4] * sum(v * Q[a2, a4, a1, g] for g, v in gx[a1, a3].items()) + p2[a1, a3] * sum(
                v * Q[a1, a3, a2, g] for g, v in gx[a2, a4].items()
            )
            Tn[a1, a3, a4, a2] = (
                Th[a1, a2] * src + rho * tf + rho * cw * tq + rho * cw**2 * p2[a1, a3] * p2[a2, a4] * T[a1, a3, a4, a2]
            )
            # U (∞.181): the entry U_{1423}, i.e. U[d0, d1, d2, d3] with 1 = d0, 4 = d1, 2 = d2, 3 = d3
            a1, a4, a2, a3 = d0, d1, d2, d3
            Un[a1, a4, a2, a3] = (
                cw**2 * Th[a1, a2] * Th[a1, a3] * Th[a2, a4] * g4((2, 2, 1, 1), (a1, a2, a3, a4))
                + rho * cw**2 * p2[a1, a4] * p2[a2, a3] * U[a1, a4, a2, a3]
            )
        for k, v in zip("PQRSTU", (Pn, Qn, Rn, Sn, Tn, Un), strict=True):
            out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}
