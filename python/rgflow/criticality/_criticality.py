"""Criticality and universality classes of deep MLPs (Roberts & Yaida, ch. 5 and §9.4).

Spec: ``docs/spec/preactivations.md`` §6 (susceptibilities, practical algorithm, table 6b,
universality classes 6c).  Conventions: ``K' = C_b + C_W g(K)`` with ``g(K) = <σσ>_K`` (5.4),

* ``χ∥(K) = C_W g'(K) = C_W <σ'σ' + σσ''>_K = (C_W/K) <zσσ'>_K``  (5.50),
* ``χ⊥(K) = C_W <σ'σ'>_K``  (5.51).

Criticality (5.55)–(5.56) is ``χ∥(K*) = χ⊥(K*) = 1`` at a fixed point ``K* = C_b + C_W g(K*)``.
Since ``χ∥ - χ⊥ = C_W <σσ''>_K``, the book's ratio condition (5.73) is equivalent to

    ``φ(K*) ≡ <σ(z) σ''(z)>_{K*} = 0``,  then  ``C_W = 1/<σ'σ'>_{K*}``,  ``C_b = K* - C_W <σσ>_{K*}``  (5.72)

and the solution must have ``C_b >= 0``.  :func:`critical` scans ``K*`` on a log grid for sign
changes of φ (the ``<σ²(z²-K)>/(2K²) - <σ'σ'>`` form when σ'' is not available or carries a delta
function), refines each with Ridders' method on adaptive quadrature, and classifies:

* ``"scale-invariant"``: σ(λz) = λσ(z) for λ > 0 (checked numerically on a grid), i.e.
  σ = a₊z (z ≥ 0), a₋z (z < 0): ``(C_b, C_W) = (0, 1/A₂)`` (5.67), a line of fixed points.
* ``"K*=0"``: σ₀ = 0, σ₁ ≠ 0 and the K* = 0 fixed point is attractive: ``-a₁ > 0`` (5.89)
  (or a₁ = 0 and -a₂ > 0, footnote 19): ``(C_b, C_W) = (0, 1/σ₁²)``.
* ``"half-stable"``: a nonzero K* solves the conditions with C_b >= 0 (SWISH, GELU), with
  ``ΔK' = ΔK + ã₁ΔK²`` (5.102), ``ã₁ = ½ C_W g''(K*)``.
* ``"none"``: nothing of the above (sigmoid, softplus, monomials z^p with p >= 2, ...), with
  the reason.

Learning rates (:func:`critical_mlp`) follow the book's *learning-rate equivalence principle*
(§9.4): (9.94) for the scale-invariant class and (9.95) for the K* = 0 class; see there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._util.validation import real, real_array
from ..activations import Activation, as_activation
from ..gauss import expect

__all__ = [
    "CriticalPoint",
    "Criticality",
    "FixedPoint",
    "critical",
    "fixed_point",
    "learning_rates",
    "susceptibilities",
    "taylor_coefficients",
    "universality_class",
]

#: Range of K* scanned for nonzero critical points, and grid density (points per decade).
K_SCAN = (1e-6, 1e4)
_PER_DECADE = 20
#: Relative tolerance of the adaptive quadrature used to refine roots.
_TOL = 1e-14
#: Cap on the adaptive quadrature order (see ``_Gauss._expect``).
_MAX_ORDER = 480


# ---------------------------------------------------------------------------- results


class CriticalPoint(NamedTuple):
    """One solution of (5.71)–(5.73): a fixed point K* with χ∥ = χ⊥ = 1 at (C_b, C_W).

    ``a1_tilde`` is ã₁ of (5.102) (``ΔK' = ΔK + ã₁ΔK²``, ``ã₁ = ½C_W g''(K*)``); for K* = 0 it
    is a₁ of (5.83) (None if σ is not analytic at 0).  ``stability``: ``"stable"``,
    ``"unstable"``, ``"attracting from below"`` / ``"attracting from above"`` (half-stable), or
    ``"marginal"``.  ``admissible`` is False when C_b < 0 (not a variance).
    """

    K_star: float
    C_b: float
    C_W: float
    a1_tilde: float | None
    stability: str
    admissible: bool


@dataclass(frozen=True)
class Criticality:
    """Result of :func:`critical`.

    Attributes (the first six in the order ``Criticality(C_b, C_W, K_star, universality_class,
    chi_parallel, chi_perp, ...)``)
    ----------
    C_b, C_W: critical initialisation hyperparameters (None when ``"none"``).
    K_star: the critical fixed point; ``0.0`` for the K* = 0 class; ``None`` for the
        scale-invariant class (a line of fixed points, K* = |x|²/(n₀A₂) set by the input (5.66))
        and for ``"none"``.
    universality_class: ``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or ``"none"``.
    chi_parallel, chi_perp: χ∥ and χ⊥ evaluated at K* (K → 0⁺ for K* = 0); both 1 up to
        quadrature error when critical.
    activation: the activation analysed.
    a_1, a_2, b_1: Taylor-coefficient combinations (5.86)–(5.88) when σ is analytic at 0 and
        σ₁ ≠ 0 (None otherwise).  They describe the K* = 0 point even when it is not the
        critical point returned (SWISH, GELU: a₁ > 0, unstable).
    a1_tilde: ã₁ of (5.102) for the half-stable class (``-ã₁`` is what the book prints).
    p_perp: the perpendicular critical exponent: b₁/a₁ (5.99) for the K* = 0 class
        (numerical estimate if σ is not analytic at 0); 0 for the scale-invariant and
        half-stable classes (χ⊥ = 1 at a finite K*).
    reason: one line: why this class (or why there is no criticality).
    notes: further remarks (other critical points, book equations, caveats).
    candidates: every critical point found (including inadmissible and unstable ones).
    """

    C_b: float | None
    C_W: float | None
    K_star: float | None
    universality_class: str
    chi_parallel: float | None
    chi_perp: float | None
    activation: Activation
    a_1: float | None = None
    a_2: float | None = None
    b_1: float | None = None
    a1_tilde: float | None = None
    p_perp: float | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()
    candidates: tuple[CriticalPoint, ...] = field(default=())

    @property
    def is_critical(self) -> bool:
        """True unless the universality class is ``"none"``."""
        return self.universality_class != "none"

    def __str__(self) -> str:
        if not self.is_critical:
            return f"{self.activation!r}: no criticality ({self.reason})"
        ks = "line (set by input)" if self.K_star is None else f"{self.K_star:.10g}"
        return (
            f"{self.activation!r}: {self.universality_class}, C_b={self.C_b:.10g}, C_W={self.C_W:.10g}, "
            f"K*={ks}, chi_par={self.chi_parallel:.12g}, chi_perp={self.chi_perp:.12g}"
        )


class FixedPoint(NamedTuple):
    """Result of ``fixed_point(..., return_reason=True)``.

    ``K_star``: the attracting fixed point returned by :func:`fixed_point` (None if none);
    ``reason``: why (or why not); ``fixed_points``: every fixed point found, as
    ``(K, chi_parallel, stability)`` tuples, ascending in K.
    """

    K_star: float | None
    reason: str
    fixed_points: tuple[tuple[float, float, str], ...]


# ---------------------------------------------------------------------------- Gaussian helpers


class _Gauss:
    """Single-input Gaussian expectations of one activation, choosing the best available form."""

    def __init__(self, act: Activation) -> None:
        self.act = act
        nd = act.max_derivative
        # derivative (Stein) forms need σ'' (and σ'''' for ã₁); kinked activations carry delta
        # functions in σ'' that may not share a sample with σ, so they use the z-power forms.
        self.has_d1 = nd >= 1
        self.smooth2 = nd >= 2 and not act.kinked
        self.smooth4 = nd >= 4 and not act.kinked

    def _expect(self, K: np.ndarray, factors: Sequence[Any], order: int | None, tol: float) -> Any:
        """:func:`rgflow.expect` on a batch of 1-D blocks K (B, 1, 1), the adaptive order capped at
        ``_MAX_ORDER`` (the default 1-D cap of :func:`rgflow.expect`, 320, is too low for the hard
        integrands met in the K* scan; 480 keeps every order tried below the core's limit)."""
        if order is not None:
            out = np.asarray(expect(K, factors, self.act, order=order))
            return float(out[0]) if K.shape[0] == 1 else out
        if K.shape[0] == 1:
            return float(expect(K[0], factors, self.act, tol=tol, max_order=_MAX_ORDER))
        return np.asarray(expect(K, factors, self.act, tol=tol, max_order=_MAX_ORDER))

    def E(self, K: float | np.ndarray, factors: Sequence[Any], order: int | None = None) -> Any:
        arr = np.asarray(K, dtype=float)
        if arr.ndim == 0:
            return self._expect(np.array([[[float(arr)]]]), factors, order, _TOL)
        # batches use one quadrature order, fixed on the largest K: chunk them (K ascending) so
        # that small-K blocks do not pay for the order needed at large K
        flat = arr.reshape(-1)
        out = np.empty(flat.shape)
        idx = np.argsort(flat)
        for chunk in np.array_split(idx, max(1, len(idx) // 40)):
            out[chunk] = self._expect(flat[chunk].reshape(-1, 1, 1), factors, order, 1e-12)
        return out.reshape(arr.shape)

    def need_d1(self, what: str) -> None:
        if not self.has_d1:
            raise ValueError(
                f"{what} needs sigma'(z); the custom activation has no derivatives: use "
                "Activation.from_callable(f, derivatives=[f1, f2, f3, f4]) (at least f1; f2 for accuracy)"
            )

    def g(self, K: Any) -> Any:
        return self.E(K, [(0, 0), (0, 0)])

    def p(self, K: Any) -> Any:
        """<σ'σ'>_K."""
        self.need_d1("this computation")
        return self.E(K, [(0, 1), (0, 1)])

    def phi(self, K: Any) -> Any:
        """φ(K) = (χ∥ - χ⊥)/C_W = <σσ''>_K (or its z-power form)."""
        if self.smooth2:
            return self.E(K, [(0, 0), (0, 2)])
        return self.gprime(K) - self.p(K)

    def gprime(self, K: Any) -> Any:
        """g'(K) = χ∥/C_W."""
        if self.smooth2:
            return self.p(K) + self.E(K, [(0, 0), (0, 2)])
        K = np.asarray(K, dtype=float)
        if np.any(K <= 0):
            raise ValueError("chi_parallel at K = 0 needs sigma'' (a smooth activation); give K > 0")
        return self.E(K, [(0, 0), (0, 0), (0, "z", 2)]) / (2 * K * K) - self.g(K) / (2 * K)

    def g4(self, K: float) -> float:
        """<(σ²)''''>_K = 4 g''(K)."""
        if self.smooth4:
            return 2 * (self.E(K, [(0, 0), (0, 4)]) + 4 * self.E(K, [(0, 1), (0, 3)]) + 3 * self.E(K, [(0, 2), (0, 2)]))
        z4 = self.E(K, [(0, 0), (0, 0), (0, "z", 4)])
        z2 = self.E(K, [(0, 0), (0, 0), (0, "z", 2)])
        return (z4 - 6 * K * z2 + 3 * K * K * self.g(K)) / K**4


def _check_hyper(C_b: float, C_W: float) -> tuple[float, float]:
    C_b, C_W = real("C_b", C_b), real("C_W", C_W)
    if not (math.isfinite(C_W) and C_W > 0):
        raise ValueError(
            f"C_W = {C_W} must be a finite number > 0 (the weight variance; C_W = 0 can never be "
            "critical, footnote 10 of ch. 5); e.g. use rgflow.critical(activation).C_W"
        )
    if not (math.isfinite(C_b) and C_b >= 0):
        raise ValueError(f"C_b = {C_b} must be a finite number >= 0 (the bias variance); e.g. C_b = 0")
    return C_b, C_W


def _ridders(f: Callable[[float], float], a: float, b: float, fa: float, fb: float, xtol: float) -> float:
    """Root of f in [a, b] with f(a) f(b) < 0 (Ridders' method)."""
    if fa == 0:
        return a
    if fb == 0:
        return b
    x = 0.5 * (a + b)
    for _ in range(200):
        m = 0.5 * (a + b)
        fm = f(m)
        s = math.sqrt(max(fm * fm - fa * fb, 0.0))
        if s == 0.0:
            return m
        x = m + (m - a) * (math.copysign(1.0, fa - fb) * fm / s)
        fx = f(x)
        if fx == 0.0:
            return x
        if math.copysign(1.0, fm) != math.copysign(1.0, fx):
            a, fa, b, fb = m, fm, x, fx
        elif math.copysign(1.0, fa) != math.copysign(1.0, fx):
            b, fb = x, fx
        else:
            a, fa = x, fx
        if a > b:
            a, fa, b, fb = b, fb, a, fa
        if abs(b - a) <= xtol:
            return 0.5 * (a + b)
    return x


def _sign_changes(y: np.ndarray) -> np.ndarray:
    s = np.sign(y)
    return np.nonzero((s[:-1] * s[1:]) < 0)[0]


# ---------------------------------------------------------------------------- activation analysis


def _scale_invariant(act: Activation) -> tuple[float, float] | None:
    """(a₊, a₋) if σ(λz) = λσ(z) for λ > 0 (checked on a grid), else None."""
    if not act.is_custom:
        if act.name == "linear" or (act.name == "monomial" and act.params["p"] == 1):
            return 1.0, 1.0
        if act.name == "relu":
            return 1.0, 0.0
        if act.name == "leaky_relu":
            return 1.0, act.params["slope"]
        return None  # every other built-in is not scale-invariant
    z = np.concatenate([-np.geomspace(5.0, 0.05, 12), np.geomspace(0.05, 5.0, 12)])
    try:
        f0 = np.asarray(act(z), dtype=float)
        ap, am = float(act(np.array([1.0]))[0]), -float(act(np.array([-1.0]))[0])
        for lam in (0.37, 2.9):
            f1 = np.asarray(act(lam * z), dtype=float)
            if not np.allclose(f1, lam * f0, rtol=1e-12, atol=1e-14):
                return None
    except (ValueError, FloatingPointError):  # pragma: no cover - defensive
        return None
    if not (math.isfinite(ap) and math.isfinite(am)):
        return None
    return ap, am


def _sigma_derivs_at_zero(act: Activation, upto: int = 5) -> list[float] | None:
    """[σ(0), σ'(0), ..., σ^(upto)(0)]; None if σ is not smooth at 0 (kinked built-ins)."""
    if act.kinked:
        return None
    if not act.is_custom:
        return [_value_at_zero(act, m) for m in range(upto + 1)]
    assert act.function is not None  # a custom activation always carries its function
    fs = (act.function, *act.derivatives)
    vals = [_value_at_zero(act, m) for m in range(min(upto + 1, len(fs)))]
    if len(vals) <= upto:
        # Chebyshev interpolation of the highest supplied derivative on [-r, r] (spectrally
        # accurate for functions analytic near 0), differentiated at 0.
        top = len(fs) - 1
        r, deg = 0.5, 24
        nodes = r * np.cos(np.pi * (np.arange(deg + 1) + 0.5) / (deg + 1))
        vals_top = np.asarray(fs[top](nodes), dtype=float)
        cheb = np.polynomial.Chebyshev.fit(nodes, vals_top, deg, domain=[-r, r])
        for k in range(1, upto - top + 1):
            vals.append(float(cheb.deriv(k)(0.0)))
    return vals


def taylor_coefficients(activation: str | Activation) -> dict[str, Any]:
    """Taylor data of σ at 0 and the K* = 0 coefficients (5.80), (5.86)–(5.88).

    Returns a dict with

    * ``sigma_p``: ``(σ₀, σ₁, ..., σ₅)``, ``σ_p = σ^(p)(0)`` (None for activations that are not
      smooth at 0: relu, leaky_relu, elu);
    * ``a_1 = σ₃/σ₁ + ¾(σ₂/σ₁)²`` (5.86), ``a_2 = ¼σ₅/σ₁ + ⅝(σ₄/σ₁)(σ₂/σ₁) + (5/12)(σ₃/σ₁)²``
      (5.87), ``b_1 = σ₃/σ₁ + (σ₂/σ₁)²`` (5.88) (None when σ₁ = 0 or σ is not smooth at 0);
    * ``p_perp = b_1/a_1`` (5.99) (None if undefined);
    * ``analytic`` (bool) and ``note`` (str).

    With ``C_W = 1/σ₁²``: ``C_W g(K) = K + a₁K² + a₂K³ + ...`` (5.83), ``χ∥ = 1 + 2a₁K + 3a₂K²``
    (5.84), ``χ⊥ = 1 + b₁K`` (5.85).  For custom activations, derivatives beyond those supplied are
    obtained by differentiating a Chebyshev interpolant of the highest supplied one (accurate to
    about 1e-9 for functions analytic in a disc of radius ~1 around 0).
    """
    act = as_activation(activation)
    s = _sigma_derivs_at_zero(act)
    out: dict[str, Any] = {"sigma_p": None, "a_1": None, "a_2": None, "b_1": None, "p_perp": None}
    if s is None:
        out.update(analytic=False, note=f"{act.name} is not smooth at z = 0: its Taylor coefficients do not exist")
        return out
    out["sigma_p"] = tuple(s)
    s0, s1, s2, s3, s4, s5 = s
    if s1 == 0.0 or abs(s1) < 1e-14 * max(1.0, *map(abs, s)):
        out.update(analytic=True, note="sigma_1 = 0: a_1, a_2, b_1 (normalised by sigma_1) are undefined")
        return out
    r2, r3, r4, r5 = s2 / s1, s3 / s1, s4 / s1, s5 / s1
    a1 = r3 + 0.75 * r2 * r2
    a2 = 0.25 * r5 + 0.625 * r4 * r2 + (5.0 / 12.0) * r3 * r3
    b1 = r3 + r2 * r2
    out.update(a_1=a1, a_2=a2, b_1=b1, analytic=True)
    out["p_perp"] = b1 / a1 if a1 != 0 else None
    out["note"] = "" if s0 == 0 else "sigma_0 != 0: not in the K*=0 class (a_1, a_2, b_1 given for reference)"
    return out


def _value_at_zero(act: Activation, deriv: int = 0) -> float:
    """σ^(deriv)(0) (for kinked built-ins the core's convention at the kink)."""
    if act.is_custom:
        assert act.function is not None  # a custom activation always carries its function
        fs = (act.function, *act.derivatives)
        return float(np.asarray(fs[deriv](np.zeros(1)), dtype=float)[0])
    return float(expect(np.zeros((1, 1)), [(0, deriv)], act, order=8))


def _is_zero(x: float, scale: float = 1.0) -> bool:
    return abs(x) <= 1e-12 * max(1.0, abs(scale))


def _one_sided_slopes(act: Activation) -> tuple[float, float]:
    """(σ'(0⁺), σ'(0⁻))."""
    eps = 1e-300
    if act.is_custom:
        d = act.derivatives[0]
        return float(d(np.array([eps]))[0]), float(d(np.array([-eps]))[0])
    return float(act.numpy(np.array([eps]), 1)[0]), float(act.numpy(np.array([-eps]), 1)[0])


def _critical_points(G: _Gauss, lo: float, hi: float) -> list[CriticalPoint]:
    """Nonzero solutions K* of (5.73) in [lo, hi] (sign changes of φ on a log grid)."""
    G.need_d1("critical()")
    n = max(int(_PER_DECADE * math.log10(hi / lo)) + 1, 3)
    Ks = np.geomspace(lo, hi, n)
    ph = np.asarray(G.phi(Ks), dtype=float)
    out: list[CriticalPoint] = []
    for i in _sign_changes(ph):
        a, b = float(Ks[i]), float(Ks[i + 1])
        f = lambda K: float(G.phi(K))  # noqa: E731
        K = _ridders(f, a, b, f(a), f(b), xtol=4e-16 * b)
        p = float(G.p(K))
        if p <= 0:
            continue
        C_W = 1.0 / p
        C_b = K - C_W * float(G.g(K))
        if abs(C_b) < 1e-13 * K:
            C_b = 0.0
        a1t = 0.125 * C_W * float(G.g4(K))
        if _is_zero(a1t, 1e-3):
            stab = "marginal"
        else:
            stab = "attracting from below" if a1t > 0 else "attracting from above"
        out.append(CriticalPoint(K, C_b, C_W, a1t, stab, C_b >= 0))
    return out


def critical(activation: str | Activation, *, K_range: tuple[float, float] = K_SCAN) -> Criticality:
    """Critical initialisation hyperparameters and universality class of an activation.

    Parameters
    ----------
    activation: a built-in name, an :class:`~rgflow.Activation`, or a custom activation made
        with ``Activation.from_callable(f, derivatives=[f1, f2, f3, f4, f5])`` (σ' is required;
        σ'' and σ'''' make the numerics more accurate; up to σ^(5) for exact a₂).
    K_range: range of K* scanned for nonzero critical points (log grid, 20 points per decade,
        each sign change refined to machine precision).  Critical points outside are missed, as
        are double roots of (5.73) (no sign change).

    Custom activations are tested for scale invariance (σ(λz) = λσ(z) on a grid); otherwise they
    are assumed smooth, and the Taylor coefficients at 0 come from the supplied derivatives.

    Returns a :class:`Criticality`.  Examples (book values in brackets):

    * relu ``(0, 2)``, leaky_relu(a) ``(0, 2/(1+a²))``, linear ``(0, 1)`` (5.67);
    * tanh, sin ``(0, 1)``, erf ``(0, π/4)`` in the K* = 0 class (5.90);
    * swish ``K* ≈ 14.32017362, (C_b, C_W) ≈ (0.55514317, 1.98800468)`` (5.101);
    * gelu ``K* = (3+√17)/2, (C_b, C_W) ≈ (0.17292239, 1.98305826)`` (5.105);
    * sigmoid, softplus, monomials z^p (p >= 2): no criticality (5.74), (5.75), (5.78).
    """
    act = as_activation(activation)
    lo, hi = (float(K_range[0]), float(K_range[1]))
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"K_range must be (lo, hi) with 0 < lo < hi, got {K_range}")
    G = _Gauss(act)

    # ---- scale-invariant class (5.58)-(5.67)
    si = _scale_invariant(act)
    if si is not None:
        ap, am = si
        A2 = 0.5 * (ap * ap + am * am)
        if A2 <= 0:
            return Criticality(None, None, None, "none", None, None, act, reason="sigma is identically zero")
        C_W = 1.0 / A2
        A4 = 0.5 * (ap**4 + am**4)
        nu = 3 * A4 / A2**2 - 1
        return Criticality(
            0.0,
            C_W,
            None,
            "scale-invariant",
            1.0,
            1.0,
            act,
            p_perp=0.0,
            reason=f"sigma(lambda z) = lambda sigma(z) with a_+ = {ap:g}, a_- = {am:g}: (C_b, C_W) = (0, 1/A_2) (5.67)",
            notes=(
                "line of fixed points: K* = |x|^2/(n0 A_2) is set by the input (5.66)",
                f"A_2 = {A2:.12g}, A_4 = {A4:.12g}; at criticality V(l) = (l-1) nu K*^2 with nu = {nu:.12g} (5.120)",
            ),
        )

    G.need_d1("critical()")
    notes: list[str] = []
    tc = taylor_coefficients(act)
    a1, a2, b1 = tc["a_1"], tc["a_2"], tc["b_1"]
    s0 = _value_at_zero(act)

    # ---- the K* = 0 candidate: sigma_0 = 0 and nonzero slope at 0
    zero_point: CriticalPoint | None = None
    p_perp: float | None = None
    zero_reason = ""
    if _is_zero(s0):
        if tc["analytic"]:
            s1 = tc["sigma_p"][1]
            A2_0 = s1 * s1
        else:
            sp, sm = _one_sided_slopes(act)
            A2_0 = 0.5 * (sp * sp + sm * sm)
        if A2_0 > 0:
            C_W0 = 1.0 / A2_0
            if a1 is not None and not _is_zero(a1):
                stab = "stable" if a1 < 0 else "unstable"
                zero_reason = f"-a_1 = {-a1:.10g} {'>' if a1 < 0 else '<'} 0 (5.89)"
                p_perp = b1 / a1
            elif a1 is not None:
                stab = "stable" if a2 < 0 else ("unstable" if a2 > 0 else "marginal")
                zero_reason = f"a_1 = 0 and -a_2 = {-a2:.10g} (footnote 19: K ~ 1/sqrt(l) when -a_2 > 0)"
                notes.append("a_1 = 0: the K*=0 approach is K ~ 1/sqrt(l), not 1/l (footnote 19)")
            else:
                # not analytic at 0 (elu): decide stability from the sign of C_W g(K) - K at small K
                Ks = np.array([1e-8, 1e-7, 1e-6])
                dK = C_W0 * np.asarray(G.g(Ks)) - Ks
                stab = "stable" if np.all(dK < 0) else ("unstable" if np.all(dK > 0) else "marginal")
                zero_reason = "sigma is not analytic at 0; stability from C_W g(K) - K at small K"
                if stab == "stable":
                    # K' - K ~ -c K^(1+q); 1 - chi_perp ~ c' K^q  =>  p_perp = (1-chi_perp) K / (q (K - C_W g))
                    k1, k2 = 1e-7, 1e-6
                    d1, d2 = k1 - C_W0 * float(G.g(k1)), k2 - C_W0 * float(G.g(k2))
                    q = math.log((d2 / k2) / (d1 / k1)) / math.log(k2 / k1)
                    p_perp = (1 - C_W0 * float(G.p(k2))) * k2 / (q * d2)
                    notes.append(
                        f"sigma not analytic at 0: K' - K ~ -c K^(1+q) with q = {q:.3f}; p_perp ~ {p_perp:.3f} "
                        "(numerical); the book's expansions (5.83)-(5.88) do not apply"
                    )
            zero_point = CriticalPoint(0.0, 0.0, C_W0, a1, stab, True)

    # ---- nonzero critical points (5.71)-(5.73)
    pts = _critical_points(G, lo, hi)
    admissible = [c for c in pts if c.admissible]
    candidates = tuple(([zero_point] if zero_point else []) + pts)

    def result(cls: str, cp: CriticalPoint, reason: str, **kw: Any) -> Criticality:
        K = cp.K_star
        if K == 0.0:
            chi_par = cp.C_W * (float(G.p(0.0)) + float(G.phi(0.0))) if G.smooth2 else 1.0
            chi_perp = cp.C_W * float(G.p(0.0)) if G.smooth2 else 1.0
        else:
            chi_par = cp.C_W * float(G.gprime(K))
            chi_perp = cp.C_W * float(G.p(K))
        return Criticality(
            cp.C_b, cp.C_W, K, cls, chi_par, chi_perp, act, a_1=a1, a_2=a2, b_1=b1, reason=reason,
            notes=tuple(notes), candidates=candidates, **kw,
        )  # fmt: skip

    if zero_point is not None and zero_point.stability == "stable":
        for c in admissible:
            notes.append(f"also critical at K* = {c.K_star:.10g}, (C_b, C_W) = ({c.C_b:.10g}, {c.C_W:.10g})")
        return result("K*=0", zero_point, f"sigma_0 = 0, sigma_1 != 0, {zero_reason}", p_perp=p_perp)
    if zero_point is not None:
        notes.append(
            f"K* = 0 with (C_b, C_W) = (0, {zero_point.C_W:.10g}) is a fixed point but {zero_point.stability}: "
            + zero_reason
        )
    if admissible:
        cp = admissible[0]
        if len(admissible) > 1:
            notes.append("several critical points; the smallest K* is returned (all are in .candidates)")
        side = "below" if (cp.a1_tilde or 0) > 0 else "above"
        notes.append(
            f"-a1_tilde = {-(cp.a1_tilde or 0):.9g}: K is attracted to K* from {side} and repelled from the other "
            "side (5.102)-(5.103); with a1_tilde small the network behaves almost scale-invariantly near K*"
        )
        return result(
            "half-stable",
            cp,
            f"nonzero K* = {cp.K_star:.10g} solves chi_par = chi_perp = 1 with C_b >= 0 and a1_tilde != 0",
            a1_tilde=cp.a1_tilde,
            p_perp=0.0,
        )

    # ---- no criticality: explain
    reasons: list[str] = []
    if not act.is_custom and act.name == "monomial":
        p = int(act.params["p"])
        if p == 0:
            reasons.append("sigma is constant: sigma' = 0 so chi_perp = 0 for every C_W")
        else:
            reasons.append(f"for z^{p} the ratio (5.73) is p/(2p-1) = {p / (2 * p - 1):.6g} != 1 for every K* (5.78)")
    if zero_point is not None:
        reasons.append(f"the K* = 0 fixed point (C_b, C_W) = (0, {zero_point.C_W:.6g}) is {zero_point.stability}: "
                       + zero_reason)  # fmt: skip
    inadmissible = [c for c in pts if not c.admissible]
    for c in inadmissible:
        reasons.append(f"K* = {c.K_star:.6g} solves (5.73) but needs C_b = {c.C_b:.6g} < 0")
    if not pts and not (not act.is_custom and act.name == "monomial"):
        reasons.append(f"no K* in [{lo:g}, {hi:g}] satisfies the criticality condition (5.73)")
    if not _is_zero(s0):
        s1 = _value_at_zero(act, 1)
        if s1 != 0:
            reasons.append(
                f"the K* -> 0 limit of (5.72) needs C_b = -(sigma_0/sigma_1)^2 = {-((s0 / s1) ** 2):.6g} < 0 (5.74)"
            )
    return Criticality(
        None, None, None, "none", None, None, act, a_1=a1, a_2=a2, b_1=b1, reason="; ".join(reasons),
        notes=tuple(notes), candidates=candidates,
    )  # fmt: skip


def universality_class(activation: str | Activation) -> str:
    """``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or ``"none"`` (see :func:`critical`)."""
    return critical(activation).universality_class


# ---------------------------------------------------------------------------- susceptibilities, fixed points


def susceptibilities(activation: str | Activation, K: Any, C_b: float, C_W: float) -> tuple[Any, Any]:
    """(χ∥(K), χ⊥(K)) of (5.50)–(5.51) for a single input with kernel K.

    ``χ∥ = C_W <σ'σ' + σσ''>_K`` (``(C_W/K)<zσσ'>_K`` for kinked or custom activations without
    σ''), ``χ⊥ = C_W <σ'σ'>_K``.  ``C_b`` does not enter (it only moves the fixed point); it is
    validated.  ``K`` may be a scalar (floats returned) or an array (arrays returned).
    ``K = 0`` is allowed for smooth activations (the K → 0 limits C_W(σ₁² + σ₀σ₂) and C_W σ₁²).
    """
    act = as_activation(activation)
    C_b, C_W = _check_hyper(C_b, C_W)
    Karr = real_array("K", K)
    if not np.all(np.isfinite(Karr)) or np.any(Karr < 0):
        raise ValueError(f"K must be finite and >= 0 (a variance), got K={K!r}")
    G = _Gauss(act)
    G.need_d1("susceptibilities()")
    if act.kinked and np.any(Karr == 0):
        raise ValueError(f"{act.name} has a kink at z = 0: give K > 0")
    chi_par = C_W * np.asarray(G.gprime(Karr))
    chi_perp = C_W * np.asarray(G.p(Karr))
    if Karr.ndim == 0:
        return float(chi_par), float(chi_perp)
    return chi_par.reshape(Karr.shape), chi_perp.reshape(Karr.shape)


def _stability(chi: float, a1t: float | None) -> str:
    if chi < 1 - 1e-9:
        return "stable"
    if chi > 1 + 1e-9:
        return "unstable"
    if a1t is None or _is_zero(a1t, 1e-3):
        return "marginal"
    return "attracting from below" if a1t > 0 else "attracting from above"


def fixed_point(
    activation: str | Activation,
    C_b: float,
    C_W: float,
    *,
    return_reason: bool = False,
    K_max: float = 1e4,
) -> float | None | FixedPoint:
    """The attracting fixed point K* = C_b + C_W g(K*) of the single-input kernel recursion (5.7).

    Returns the smallest fixed point that attracts K from at least one side (χ∥ < 1, or
    χ∥ = 1 with the sign of ã₁ making it half-stable), or ``None`` when there is none: K flows
    to infinity, the only fixed points repel, or (scale-invariant, χ = 1, C_b = 0) every K is a
    fixed point.  With ``return_reason=True`` a :class:`FixedPoint` is returned instead, holding
    the value, the reason, and every fixed point found in [0, K_max] with its χ∥ and stability.
    """
    act = as_activation(activation)
    C_b, C_W = _check_hyper(C_b, C_W)

    def done(K: float | None, reason: str, fps: Sequence[tuple[float, float, str]]) -> Any:
        return FixedPoint(K, reason, tuple(fps)) if return_reason else K

    si = _scale_invariant(act)
    if si is not None:
        A2 = 0.5 * (si[0] ** 2 + si[1] ** 2)
        chi = A2 * C_W
        if abs(chi - 1) <= 1e-12:
            if C_b == 0:
                return done(None, "chi = A_2 C_W = 1 and C_b = 0: every K is a fixed point; K* = K^(1) (5.66)", [])
            return done(None, f"chi = 1 and C_b = {C_b:g} > 0: K grows linearly, K ~ C_b l (semi-criticality)", [])
        if chi < 1:
            K = C_b / (1 - chi)
            return done(K, f"chi = A_2 C_W = {chi:.6g} < 1: K* = C_b/(1 - chi), exponentially attractive",
                        [(K, chi, "stable")])  # fmt: skip
        if C_b == 0:
            return done(None, f"chi = {chi:.6g} > 1: K = 0 is a repelling fixed point; K explodes exponentially",
                        [(0.0, chi, "unstable")])  # fmt: skip
        return done(None, f"chi = {chi:.6g} > 1 with C_b > 0: no fixed point, K explodes exponentially", [])

    G = _Gauss(act)
    G.need_d1("fixed_point()")
    fps: list[tuple[float, float, str]] = []
    s0 = _value_at_zero(act)
    # K = 0 is a fixed point iff C_b = 0 and sigma(0) = 0
    if C_b == 0 and _is_zero(s0):
        if G.smooth2:
            chi0 = C_W * (float(G.p(0.0)) + float(G.phi(0.0)))
        else:
            sp, sm = _one_sided_slopes(act)
            chi0 = C_W * 0.5 * (sp * sp + sm * sm)
        k = 1e-6
        if abs(chi0 - 1) <= 1e-9:
            d = C_b + C_W * float(G.g(k)) - k
            stab = "stable" if d < 0 else ("unstable" if d > 0 else "marginal")
        else:
            stab = _stability(chi0, None)
        fps.append((0.0, chi0, stab))
    lo = 1e-8
    n = int(_PER_DECADE * math.log10(K_max / lo)) + 1
    Ks = np.geomspace(lo, K_max, n)
    f = C_b + C_W * np.asarray(G.g(Ks)) - Ks
    y = f / np.maximum(Ks, C_b + 1e-300)

    def fK(K: float) -> float:
        return C_b + C_W * float(G.g(K)) - K

    roots: list[float] = []
    for i in _sign_changes(y):
        a, b = float(Ks[i]), float(Ks[i + 1])
        roots.append(_ridders(fK, a, b, fK(a), fK(b), xtol=4e-16 * b))

    # tangent (double) roots: stationary points of f (chi_par = 1) where f vanishes.  They can
    # only sit where |f| is small: near a transverse root or a local minimum of |f|; search the
    # neighbouring grid cells finely for sign changes of f' = chi_par - 1 (two stationary points
    # may share one coarse cell, as for SWISH at criticality: K* = 14.32 and a maximum near 14.45).
    def hK(K: float) -> float:
        return C_W * float(G.gprime(K)) - 1.0

    ay = np.abs(y)
    spots = set(_sign_changes(y).tolist()) | {
        i for i in range(1, n - 1) if ay[i] <= ay[i - 1] and ay[i] <= ay[i + 1] and ay[i] < 1e-3
    }
    tangent: list[float] = []
    ghosts: list[tuple[float, float]] = []
    for i in sorted(spots):
        a, b = float(Ks[max(i - 1, 0)]), float(Ks[min(i + 2, n - 1)])
        sub = np.geomspace(a, b, 160)
        hs = C_W * np.asarray(G.gprime(sub)) - 1.0
        for k in _sign_changes(hs):
            Kt = _ridders(hK, float(sub[k]), float(sub[k + 1]), float(hs[k]), float(hs[k + 1]), 4e-16 * sub[k + 1])
            if any(abs(r - Kt) <= 1e-6 * Kt for r in roots + tangent):
                continue
            fv = fK(Kt)
            if abs(fv) <= 1e-12 * max(1.0, Kt):
                tangent.append(Kt)
            else:
                f2 = 0.25 * C_W * G.g4(Kt)  # f''(K) = C_W g''(K)
                if fv * f2 > 0:
                    if abs(fv) <= 1e-6 * max(1.0, Kt):
                        ghosts.append((Kt, fv))  # a minimum of f above 0 (or a maximum below): no root
                elif f2 != 0:
                    # an extremum on the far side of 0: a close pair of roots, possibly in one grid cell
                    step = 2.0 * math.sqrt(abs(2 * fv / f2))
                    for sgn in (-1.0, 1.0):
                        d = step
                        for _ in range(60):
                            Ko = Kt + sgn * d
                            if not (0 < Ko <= K_max):
                                break
                            fo = fK(Ko)
                            if fo * fv < 0:
                                a, b, fa, fb = (Ko, Kt, fo, fv) if sgn < 0 else (Kt, Ko, fv, fo)
                                r = _ridders(fK, a, b, fa, fb, 4e-16 * b)
                                if not any(abs(q - r) <= 1e-9 * r for q in roots):
                                    roots.append(r)
                                break
                            d *= 2
    roots += tangent
    for K in sorted(roots):
        chi = C_W * float(G.gprime(K))
        a1t = 0.125 * C_W * G.g4(K) if abs(chi - 1) <= 1e-9 else None
        fps.append((K, chi, _stability(chi, a1t)))
    fps.sort(key=lambda t: t[0])
    ghost = "".join(
        f"; near-tangent point K = {Kg:.8g} with K' - K = {fv:.2g} (slow 'bottleneck' flow; the hyperparameters are "
        "close to, but not exactly at, a critical point)"
        for Kg, fv in ghosts
    )
    for K, chi, stab in fps:
        if stab != "unstable":
            return done(K, f"K* = {K:.10g} with chi_par = {chi:.10g} ({stab})" + ghost, fps)
    if fps:
        return done(None, "only repelling fixed points: " + ", ".join(f"K = {K:.6g}" for K, _, _ in fps), fps)
    if y[-1] > 0:
        return done(None, f"no fixed point in [0, {K_max:g}]: K grows without bound (C_b + C_W g(K) > K)", fps)
    return done(None, f"no fixed point found in [0, {K_max:g}]", fps)  # pragma: no cover


# ---------------------------------------------------------------------------- critical MLP


def learning_rates(
    crit: Criticality, depth: int, lambda_b: float = 1.0, lambda_W: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-layer NTK learning rates (λ_b^(ℓ), λ_W^(ℓ)), ℓ = 1..L, by the equivalence principle (§9.4).

    ``lambda_b``, ``lambda_W`` are the book's order-one constants λ̃_b, λ̃_W.  (λ_W^(ℓ) multiplies
    ``1/n_{ℓ-1}`` inside the NTK, as everywhere in rgflow.)

    * scale-invariant (9.94): ``λ_b^(ℓ) = λ̃_b/L``, ``λ_W^(ℓ) = λ̃_W/L``.  At criticality the frozen
      NTK then grows linearly, ``Θ^(ℓ) = (λ̃_b + λ̃_W A₂K*) ℓ/L`` (9.44), order one at ℓ = L.
    * K* = 0 (9.95): ``λ_b^(ℓ) = λ̃_b L^(p⊥-1)/ℓ^p⊥``, ``λ_W^(ℓ) = λ̃_W (L/ℓ)^(p⊥-1)``, p⊥ = b₁/a₁
      (5.99); for odd σ (tanh, sin, erf) p⊥ = 1 and this is (9.96): ``λ_b = λ̃_b/ℓ``, ``λ_W = λ̃_W``.
      Then Θ^(ℓ) → (λ̃_b + λ̃_W σ₁²/(-a₁)) (L/ℓ)^(p⊥-1) (9.71).
    * half-stable (not treated in the book; our choice): χ⊥ = 1 and g(K*) finite at a nonzero
      K*, exactly as for the scale-invariant class, so (9.94) is used.
    """
    L = int(depth)
    cls = crit.universality_class
    if cls == "none":
        raise ValueError(f"{crit.activation!r} has no critical initialisation: {crit.reason}")
    if cls in ("scale-invariant", "half-stable"):
        return (lambda_b / L,) * L, (lambda_W / L,) * L
    p = crit.p_perp
    if p is None or not math.isfinite(p):
        raise ValueError("the perpendicular exponent p_perp is undefined; pass learning_rates='constant'")
    ls = np.arange(1, L + 1, dtype=float)
    lb = lambda_b * L ** (p - 1) / ls**p
    lw = lambda_W * (L / ls) ** (p - 1)
    return tuple(float(v) for v in lb), tuple(float(v) for v in lw)
