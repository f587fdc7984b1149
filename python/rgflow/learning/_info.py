"""Information theory at finite width (PDLT Appendix A; spec ``learning.md`` §6).

Single input, layer ℓ, x ≡ V/(n G²): the entropy of m neurons (A.52)/(A.66), the mutual
information between disjoint groups of m₁, m₂ neurons (A.53)/(A.67), and the optimal aspect
ratio r* = 4/((20 + 3m₁ + 3m₂) ν) (A.72)–(A.74) that maximises (A.71) at criticality, where
V/(n K²) = ν L/n (A.68)–(A.70).
"""

from __future__ import annotations

import math

import numpy as np

#: ν of (A.69)–(A.70) and footnote 26: V/(nK²) = ν ℓ/n at criticality.
NU = {"tanh": 2.0 / 3.0, "erf": 2.0 / 3.0, "sin": 2.0 / 3.0, "relu": 5.0, "linear": 2.0}


def nu_of(activation: str | float, *, slope: float | None = None) -> float:
    """ν for a universality class: a number, ``"tanh"``/``"erf"``/``"sin"`` (K* = 0 class, 2/3),
    ``"relu"`` (5), ``"linear"`` (2) or ``"leaky_relu"`` (6(1 + a⁴)/(1 + a²)² − 1, slope a)."""
    if isinstance(activation, (int, float)) and not isinstance(activation, bool):
        if not (math.isfinite(activation) and activation > 0):
            raise ValueError(f"nu must be a positive number, got {activation}")
        return float(activation)
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name or ν itself (a number), got {type(activation).__name__}")
    key = activation.lower()
    if key == "leaky_relu":
        a = 0.01 if slope is None else float(slope)
        return 6.0 * (1 + a**4) / (1 + a * a) ** 2 - 1.0
    if key not in NU:
        raise ValueError(f"no ν known for {activation!r}; choose one of {sorted(NU) + ['leaky_relu']} or pass ν")
    return NU[key]


def entropy(G: float, V: float, width: int, m: int) -> float:
    """(A.66): S = m/2 log(2πeG) − (m² + 2m)/16 x² + (m³ + 10m² + 16m)/48 x³, x = V/(nG²)."""
    x = V / (width * G * G)
    return (
        0.5 * m * math.log(2 * math.pi * math.e * G)
        - (m * m + 2 * m) / 16 * x**2
        + (m**3 + 10 * m * m + 16 * m) / 48 * x**3
    )


def mutual_information(G: float, V: float, width: int, m1: int, m2: int) -> float:
    """(A.67): I = m₁m₂/8 x² − m₁m₂(20 + 3m₁ + 3m₂)/48 x³ + O(x⁴), x = V/(nG²)."""
    x = V / (width * G * G)
    return m1 * m2 / 8 * x**2 - m1 * m2 * (20 + 3 * m1 + 3 * m2) / 48 * x**3


def optimal_aspect_ratio(activation: str | float, n_out: int | None = None, *, m1: int | None = None,
                         m2: int | None = None, slope: float | None = None) -> tuple[float, float]:  # fmt: skip
    """(A.72)–(A.74): (r*, I*) with r* = 4/((20 + 3m₁ + 3m₂) ν), by default m₁ = m₂ = n_out/2.

    I* = (m₁m₂/6)·16/(20 + 3m₁ + 3m₂)² is ν-independent (= (n_L/(20 + 3n_L))²/6 for m₁ = m₂ = n_L/2).
    """
    nu = nu_of(activation, slope=slope)
    if m1 is None or m2 is None:
        if n_out is None:
            raise ValueError("give n_out (the partitioned layer's width, split in halves) or both m1 and m2")
        m1 = m2 = n_out / 2  # type: ignore[assignment]
    assert m1 is not None and m2 is not None
    if m1 <= 0 or m2 <= 0:
        raise ValueError(f"group sizes must be positive, got m1={m1}, m2={m2}")
    c = 20 + 3 * m1 + 3 * m2
    r = 4.0 / (c * nu)
    x = nu * r
    info = m1 * m2 / 8 * x**2 - m1 * m2 * c / 48 * x**3
    return float(r), float(np.float64(info))
