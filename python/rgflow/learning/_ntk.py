"""Gradient descent at infinite width: kernel regression with the frozen NTK (PDLT ch. 10;
spec ``learning.md`` §3).

* fully trained ensemble mean (10.40) and covariance (10.41) (any algorithm, (10.33)–(10.39));
* the trajectory of full-batch GD after ``t`` steps at global rate η — the linear model
  z(t) = z(0) − Θ_{·A} Θ̃⁻¹ [1 − (1 − ηΘ̃)^t] (z_A(0) − y), from (10.3) iterated — and the
  gradient-flow limit (η → 0 at fixed τ = ηt), through the eigenbasis of Θ̃;
* the generalisation error's bias/variance split (10.52), the γ-basis components
  (6.41), (10.58) and the one-training-point robustness/variance (10.57), (10.63);
* ∗-polation between two equal-norm training inputs with the corrected coefficient −s(1−s)
  of spec §3.5 (the book's (10.113)–(10.115) print −4s(1−s)).
"""

from __future__ import annotations

import numpy as np

from ._checks import Chol


def gd_fully_trained(
    Theta: np.ndarray, K: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, chol: Chol | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(10.40) mean (N_B, n_L) and (10.41) covariance (N_B, N_B) of the fully trained ensemble."""
    c = chol or Chol(Theta[np.ix_(train, train)], "NTK Θ")
    P = c.solve(Theta[np.ix_(train, test)]).T  # Θ_BA Θ̃⁻¹
    mean = P @ y
    KAB = K[np.ix_(train, test)]
    cov = K[np.ix_(test, test)] - P @ KAB - KAB.T @ P.T + P @ K[np.ix_(train, train)] @ P.T
    return mean, 0.5 * (cov + cov.T)


def _decay_factors(lam: np.ndarray, steps: np.ndarray | None, lr: float | None, time: np.ndarray | None) -> np.ndarray:
    """f(λ) = [1 − (1 − ηλ)^t]/λ per time (rows) and eigenvalue (columns); flow: [1 − e^{−λτ}]/λ."""
    if time is not None:
        tau = np.asarray(time, dtype=float)[:, None]
        return -np.expm1(-lam[None, :] * tau) / lam[None, :]
    assert steps is not None and lr is not None
    t = np.asarray(steps, dtype=float)[:, None]
    q = 1.0 - lr * lam[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        powr = np.where(q > 0, -np.expm1(t * np.log1p(-lr * lam[None, :])), 1.0 - np.sign(q) ** t * np.abs(q) ** t)
    return powr / lam[None, :]


def gd_trajectory(
    Theta: np.ndarray,
    K: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    steps: np.ndarray | None = None,
    lr: float | None = None,
    time: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ensemble mean (T, N_B, n_L), covariance (T, N_B, N_B) and mean training residual
    (T, N_A, n_L) = E[z_A(t)] − y after ``steps`` GD steps at rate ``lr`` (or at flow times ``time``)."""
    Tt = Theta[np.ix_(train, train)]
    Chol(Tt, "NTK Θ")  # the same singularity check (and message) as the fully trained case
    lam, U = np.linalg.eigh(0.5 * (Tt + Tt.T))
    f = _decay_factors(lam, steps, lr, time)  # (T, N_A)
    TBA = Theta[np.ix_(test, train)] @ U  # (N_B, N_A) in the eigenbasis
    Uy = U.T @ y
    KAB, KBB, KAA = K[np.ix_(train, test)], K[np.ix_(test, test)], K[np.ix_(train, train)]
    means, covs, resid = [], [], []
    for ft in f:
        M = (TBA * ft[None, :]) @ U.T  # Θ_BA Θ̃⁻¹ [1 − (1 − ηΘ̃)^t]
        means.append(M @ y)
        cov = KBB - M @ KAB - KAB.T @ M.T + M @ KAA @ M.T
        covs.append(0.5 * (cov + cov.T))
        resid.append(-(U @ ((1.0 - lam * ft)[:, None] * Uy)))  # −(1 − ηΘ̃)^t y
    return np.array(means), np.array(covs), np.array(resid)


def gamma_components(M: np.ndarray, plus: int, minus: int) -> tuple[float, float, float]:
    """γ-basis components (M_[0], M_[1], M_[2]) of a 2×2 kernel block, (6.41)/(10.58):
    M_±± = M_[0] ± M_[1] + M_[2], M_±∓ = M_[0] − M_[2]."""
    pp, mm, pm = M[plus, plus], M[minus, minus], M[plus, minus]
    return float((pp + mm + 2 * pm) / 4), float((pp - mm) / 2), float((pp + mm - 2 * pm) / 4)


def one_point_generalisation(Theta: np.ndarray, K: np.ndarray, plus: int, minus: int) -> tuple[float, float]:
    """One training input ``plus``, test input ``minus``: the robustness Θ_{−+}/Θ_{++} − 1 (10.57) and
    the trained variance K_{−−} − 2 r K_{−+} + r² K_{++}, r = Θ_{−+}/Θ_{++} (10.63)."""
    r = Theta[minus, plus] / Theta[plus, plus]
    var = K[minus, minus] - 2 * r * K[minus, plus] + r * r * K[plus, plus]
    return float(r - 1.0), float(var)


def polation_weights(Theta: np.ndarray, plus: int, minus: int, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-channel ∗-polation weights w_± (spec §3.5) for equal-norm training inputs ``plus``, ``minus``:
    m∞_t = w_+ y_+ + w_− y_−."""
    tp, tm = Theta[test, plus], Theta[test, minus]
    sym = (tp + tm) / (Theta[plus, plus] + Theta[plus, minus])
    anti = (tp - tm) / (Theta[plus, plus] - Theta[plus, minus])
    return 0.5 * (sym + anti), 0.5 * (sym - anti)


def polation_expansion(
    Theta: np.ndarray, plus: int, minus: int, mid: int, s: np.ndarray, y_plus: np.ndarray, y_minus: np.ndarray
) -> np.ndarray:
    """Small-δ ∗-polation (spec §3.5, corrected (10.115)), rows = s:
    s y_+ + (1 − s) y_− − s(1 − s) (δδΘ_[0]/Θ_00)(y_+ + y_−), with δδΘ_[0] = Θ_[0] − Θ_00 and
    Θ_00 the NTK at the midpoint input ``mid``.  The antisymmetric O(δ²) term is omitted (it vanishes
    for y_+ = y_−)."""
    T0, _, _ = gamma_components(Theta, plus, minus)
    ratio = (T0 - Theta[mid, mid]) / Theta[mid, mid]
    s = np.asarray(s, dtype=float)[:, None]
    return s * y_plus[None, :] + (1 - s) * y_minus[None, :] - s * (1 - s) * ratio * (y_plus + y_minus)[None, :]
