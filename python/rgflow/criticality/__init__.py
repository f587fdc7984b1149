"""Criticality and universality classes (PDLT ch. 5, §9.4): fixed points, susceptibilities,
critical initialisation and the learning-rate equivalence principle.

Layer 3 (depends on :mod:`rgflow.gauss`): single-input Gaussian expectations only, no network.
"""

from ._criticality import (
    K_SCAN,
    Criticality,
    CriticalPoint,
    FixedPoint,
    critical,
    fixed_point,
    learning_rates,
    susceptibilities,
    taylor_coefficients,
    universality_class,
)

__all__ = [
    "K_SCAN",
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
