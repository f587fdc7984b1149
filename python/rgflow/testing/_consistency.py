"""Theory against sampled networks: a one-line assertion for tests and pipelines."""

from __future__ import annotations

from collections.abc import Sequence

from ..ensembles import Comparison, Ensemble, compare
from ..recursions import Theory


def assert_consistent(
    theory: Theory, ensemble: Ensemble, *, max_z: float = 5.0, tensors: Sequence[str] | None = None
) -> Comparison:
    """Raise AssertionError unless every compared entry of ``theory`` (with its 1/n correction)
    agrees with the sampled ``ensemble`` within ``max_z`` standard errors.

    The comparison is :func:`rgflow.compare` (same tensors, same normalisation); ``max_z``
    should allow for the O(1/n²) remainder at small widths and for the number of entries
    compared (the largest |z| of many entries grows like sqrt(2 log #entries)).
    Returns the comparison, so callers can print it.
    """
    if not max_z > 0:
        raise ValueError(f"max_z must be > 0, got {max_z}")
    rows = compare(theory, ensemble, tensors)
    worst = rows.max_z()
    if not worst <= max_z:
        raise AssertionError(f"theory and samples disagree: max |z| = {worst:.2f} > {max_z}\n{rows}")
    return rows
