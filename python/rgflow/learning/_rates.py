"""Convergence rates from multilevel differences (spec ``nfd.md`` §3.2): paired means with standard
errors, and weighted log-log fits |E[obs(L) − obs(2L)]| ≈ C L^{-p} with the uncertainty of p.

If obs(L) = obs(∞) + c/L^p + o(L^{-p}), then obs(L) − obs(2L) = c(1 − 2^{-p}) L^{-p}: the differences
decay with the same exponent, and successive ratios are 2^p (2 for first order, 4 for second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def paired_mean(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard error) over the first axis (independent networks); pairs are differenced
    per network before averaging, so shared noise cancels."""
    v = np.asarray(v, dtype=np.float64)
    k = v.shape[0]
    mean = v.mean(axis=0)
    if k < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, v.std(axis=0, ddof=1) / math.sqrt(k)


@dataclass(frozen=True)
class Rate:
    """A fitted power law |d(L)| ≈ prefactor · L^{-p}: exponent ``p`` ± ``stderr`` (scaled by
    √(χ²/dof) when that exceeds 1), ``chi2`` and ``dof`` of the fit, and the points used."""

    p: float
    stderr: float
    prefactor: float
    chi2: float
    dof: int
    L: tuple[float, ...]
    d: tuple[float, ...]
    se: tuple[float, ...]

    def consistent_with(self, p: float, sigmas: float = 2.0) -> bool:
        """Whether the fitted exponent is within ``sigmas`` standard errors of ``p``."""
        return bool(abs(self.p - p) <= sigmas * self.stderr)

    def __str__(self) -> str:
        return f"p = {self.p:.2f} ± {self.stderr:.2f} (χ²/dof = {self.chi2:.1f}/{self.dof})"


def fit_rate(L: np.ndarray, d: np.ndarray, se: np.ndarray) -> Rate:
    """Weighted least squares of log|d| = log C − p log L with σ_log = se/|d| (delta method).

    Points with d = 0 or a non-finite value are dropped; at least two must remain (ValueError)."""
    L, d, se = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (L, d, se))
    if not (L.shape == d.shape == se.shape):
        raise ValueError(f"L, d and se must have one entry per depth, got shapes {L.shape}, {d.shape}, {se.shape}")
    if np.any(L <= 0):
        raise ValueError(f"depths L must be > 0, got {L.tolist()}")
    ok = np.isfinite(d) & np.isfinite(se) & (np.abs(d) > 0)
    if ok.sum() < 2:
        raise ValueError("a rate fit needs at least two depths with finite, non-zero differences")
    x, yv = np.log(L[ok]), np.log(np.abs(d[ok]))
    sig = np.maximum(se[ok] / np.abs(d[ok]), 1e-12)
    w = 1.0 / sig**2
    A = np.stack([np.ones_like(x), -x], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))
    c, p = cov @ (A.T @ (w * yv))
    res = yv - A @ np.array([c, p])
    chi2 = float(np.sum(w * res**2))
    dof = int(ok.sum() - 2)
    scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
    return Rate(
        p=float(p),
        stderr=float(math.sqrt(cov[1, 1] * scale)),
        prefactor=float(math.exp(c)),
        chi2=chi2,
        dof=dof,
        L=tuple(L.tolist()),
        d=tuple(d.tolist()),
        se=tuple(se.tolist()),
    )
