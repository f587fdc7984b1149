"""Bayesian inference with the output-layer tensors (PDLT ch. 6; spec ``learning.md`` §1–2).

Infinite width: the Gaussian-process evidence (6.34) and posterior (6.57), (6.64), with
optional i.i.d. observation noise σ² added to the *diagonal* of the training kernel (spec §9
item 7; the book's footnote 6 shift C_b → C_b + σ² would add it to every entry).  Finite width
(all corrections carry 1/n_{L-1}): the posterior mean at O(1/n) in the compact Hermite form of
spec §2.3 and in the book's route (4.108), (6.81)–(6.88); the penultimate-layer representation
shift (6.104); the Hebbian conditional variance (6.78).

Index conventions: ``V[a1, a2, a3, a4] = V_{(a1 a2)(a3 a4)}`` (one layer's slice of ``Theory.V``).
"""

from __future__ import annotations

import numpy as np

from ._checks import Chol


def _with_noise(Kt: np.ndarray, noise: float) -> np.ndarray:
    return Kt + noise * np.eye(len(Kt)) if noise else Kt


def log_evidence_from_kernel(Kt: np.ndarray, y: np.ndarray, noise: float = 0.0, *, chol: Chol | None = None) -> float:
    """log p(y_A | H) of (6.34): −n_L/2 log|2π K̃| − ½ Σ_i y_iᵀ K̃⁻¹ y_i (K̃ the training block + σ²·1)."""
    c = chol or Chol(_with_noise(Kt, noise), "kernel K")
    n_out = y.shape[1]
    quad = float(np.sum(y * c.solve(y)))
    return -0.5 * n_out * (c.logdet() + len(Kt) * np.log(2.0 * np.pi)) - 0.5 * quad


def evidence_kernel_gradient(Kt: np.ndarray, y: np.ndarray, noise: float = 0.0) -> np.ndarray:
    """∂ log p / ∂K̃ (symmetric N_A×N_A): −n_L/2 K̃⁻¹ + ½ K̃⁻¹ (Σ_i y_i y_iᵀ) K̃⁻¹."""
    c = Chol(_with_noise(Kt, noise), "kernel K")
    n_out = y.shape[1]
    yhat = c.solve(y)
    # K̃⁻¹ itself appears in the gradient; obtain it as a solve against the identity
    return -0.5 * n_out * c.solve(np.eye(len(Kt))) + 0.5 * yhat @ yhat.T


def gp_posterior(
    K: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, noise: float = 0.0, *, chol: Chol | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """GP posterior mean (6.64) (N_B, n_L) and covariance (6.57) (N_B, N_B) of the noiseless outputs."""
    c = chol or Chol(_with_noise(K[np.ix_(train, train)], noise), "kernel K")
    KAB = K[np.ix_(train, test)]
    S = c.solve(KAB)  # K̃⁻¹ K_AB
    mean = S.T @ y
    cov = K[np.ix_(test, test)] - KAB.T @ S
    return mean, 0.5 * (cov + cov.T)


def finite_width_mean(
    K: np.ndarray,
    K1: np.ndarray,
    VB: np.ndarray,
    VA: np.ndarray,
    width: int,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    noise: float = 0.0,
    *,
    chol: Chol | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean at O(1/n), compact form of spec §2.3 (equivalent to (6.87)–(6.88)).

    Returns ``(metric_term, vertex_term, infinite)``: the full mean is ``metric_term + vertex_term``,
    where ``metric_term = G_BA G̃⁻¹ y`` with ``G = K + K1/n`` and ``vertex_term`` is the
    1/(2n) V̄ contraction; ``infinite = K_BA K̃⁻¹ y`` is (6.64).  ``VB = V[test, train, train, train]``
    and ``VA = V[train, train, train, train]`` are the only entries of V it reads (at most one test index).
    """
    n = float(width)
    c = chol or Chol(_with_noise(K[np.ix_(train, train)], noise), "kernel K")
    G = K + K1 / n
    cg = Chol(_with_noise(G[np.ix_(train, train)], noise), "metric G = K + K1/n")
    metric_term = G[np.ix_(test, train)] @ cg.solve(y)
    infinite = K[np.ix_(test, train)] @ c.solve(y)
    n_out = y.shape[1]
    yhat = c.solve(y)  # ŷ = K̃⁻¹ y, (N_A, n_L)
    P = c.solve(K[np.ix_(train, test)]).T  # K_BA K̃⁻¹, (N_B, N_A)
    # V̄_{b;123} = V_{(b1)(23)} − Σ_4 P_{b4} V_{(41)(23)}
    Vbar = VB - np.einsum("bd,dpqr->bpqr", P, VA)
    S = yhat @ yhat.T  # Σ_j ŷ_{j;2} ŷ_{j;3}
    t1 = np.einsum("bpqr,qr->bp", Vbar, S)  # contracted with ŷ_{i;1}
    # Σ_23 V̄_{b;123} K̃^{23} and Σ_12 V̄_{b;123} K̃^{12}, as traces of solves (no explicit inverse)
    NA = len(train)
    X = c.solve(Vbar.transpose(2, 0, 1, 3).reshape(NA, -1)).reshape(NA, len(test), NA, NA)  # K̃^{2·} V̄_{b;1·3}
    tr23 = np.einsum("rbpr->bp", X)
    Y = c.solve(Vbar.transpose(1, 0, 2, 3).reshape(NA, -1)).reshape(NA, len(test), NA, NA)  # K̃^{1·} V̄_{b;·23}
    tr12 = np.einsum("qbqr->br", Y)
    vertex = (t1 - n_out * tr23) @ yhat - 2.0 * tr12 @ yhat
    return metric_term, vertex / (2.0 * n), infinite


def finite_width_mean_book(
    K: np.ndarray,
    K1: np.ndarray,
    V: np.ndarray,
    width: int,
    n_out: int,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """The book's route to the O(1/n) posterior mean: couplings (4.108), (4.82); naive posterior
    (6.81)–(6.82); the quartic corrections (6.87)–(6.88), with 𝒢 → 𝕂 and m → m∞ inside the v terms.

    Needs the kernel on all of D = A ∪ B (restricted to ``train`` ∪ ``test``) to be invertible.
    Agrees with :func:`finite_width_mean` up to O(1/n²).
    """
    n = float(width)
    D = np.concatenate([train, test])
    NA, NB = len(train), len(test)
    KD = K[np.ix_(D, D)]
    VD = V[np.ix_(D, D, D, D)]
    cD = Chol(KD, "kernel K on train ∪ test")
    Kinv = cD.solve(np.eye(len(D)))  # the raised-index K^{..} of (4.108) over all of D
    # (4.108): g = K + [G1 − Σ K^{b1b2} ((n_L/2) V_(a1a2)(b1b2) + V_(a1b1)(a2b2))]/n
    corr = K1[np.ix_(D, D)] - 0.5 * n_out * np.einsum("abcd,cd->ab", VD, Kinv) - np.einsum("acbd,cd->ab", VD, Kinv)
    g = KD + corr / n
    A, B = slice(0, NA), slice(NA, NA + NB)
    cg = Chol(g[A, A], "coupling g")
    m = g[B, A] @ cg.solve(y)  # (6.81)
    # v^{(12)(34)} = K^{..}⁴ V / n over all of D (4.82)–(4.83)
    v = np.einsum("ae,bf,cg,dh,efgh->abcd", Kinv, Kinv, Kinv, Kinv, VD, optimize=True) / n
    cK = Chol(KD[A, A], "kernel K")
    minf = KD[B, A] @ cK.solve(y)
    Kpost = KD[B, B] - KD[B, A] @ cK.solve(KD[A, B])  # 𝕂 (6.57) in place of 𝒢 in the v terms
    Phi = np.concatenate([y, minf], axis=0)  # Φ_{i;δ} (6.83)
    vB = v[B]  # v^{(b1 δ1)(δ2 δ3)}
    # first correction: ½ Σ_b1 𝕂_{b b1} Σ_k v^{(b1 δ1)(δ2 δ3)} Φ_{i;δ1} Φ_{k;δ2} Φ_{k;δ3}
    PP = Phi @ Phi.T
    t1 = np.einsum("xabc,ai,bc->xi", vB, Phi, PP)
    first = 0.5 * Kpost @ t1
    # second: ½ Σ (n_L 𝕂_{b1b2} 𝕂_{b b3} + 2 𝕂_{b b1} 𝕂_{b2 b3}) v^{(b1b2)(b3δ1)} Φ_{i;δ1}
    vBBB = v[B][:, B][:, :, B]  # (b1, b2, b3, δ1)
    w = np.einsum("pqrd,di->pqri", vBBB, Phi)
    second = 0.5 * (
        n_out * np.einsum("pq,br,pqri->bi", Kpost, Kpost, w) + 2 * np.einsum("bp,qr,pqri->bi", Kpost, Kpost, w)
    )
    return m + first + second


def representation_shift(
    K: np.ndarray, V: np.ndarray, C_W: float, width: int, y: np.ndarray, train: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """(6.104): posterior shift of the penultimate feature kernel O = Σ_j σ_j σ_j / n_{L-1} on ``rows``:
    1/(2 n C_W) Σ V_{(δ1δ2)(α1α2)} K̃^{α1α3} K̃^{α2α4} Σ_i (y_{i;α3} y_{i;α4} − K̃_{α3α4})."""
    Kt = K[np.ix_(train, train)]
    c = Chol(Kt, "kernel K")
    n_out = y.shape[1]
    M = c.solve(c.solve(y @ y.T - n_out * Kt).T)  # K̃⁻¹ (Σ_i y_i y_iᵀ − n_L K̃) K̃⁻¹ (symmetric)
    Vr = V[np.ix_(rows, rows, train, train)]
    return np.einsum("abcd,cd->ab", Vr, M) / (2.0 * float(width) * C_W)


def hebbian_conditional_variance(G: float, V: float, width: int, z1: np.ndarray | float) -> np.ndarray:
    """(6.78): E[(z_2)² | z_1 = ž] = G + ½ (ž² − G) V / (n G²) for two different neurons, one input."""
    z = np.asarray(z1, dtype=float)
    return G + 0.5 * (z * z - G) * V / (float(width) * G * G)
