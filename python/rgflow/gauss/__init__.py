"""Gaussian expectations ⟨Π_k f_k(z_{a_k})⟩ for z ~ N(0, K): the public face of the Rust engine.

Layer 2 (depends on :mod:`rgflow.activations` and the core).  Everything above that needs an
expectation — criticality, the recursions — calls :func:`expect` or hands
:func:`core_activation` to the core.
"""

from ._expect import (
    MAX_ADAPTIVE_ORDER,
    METHODS,
    Factor,
    core_activation,
    expect,
    expect_with_error,
    quadrature_only,
    sigma,
    zpow,
)

__all__ = [
    "MAX_ADAPTIVE_ORDER",
    "METHODS",
    "Factor",
    "core_activation",
    "expect",
    "expect_with_error",
    "quadrature_only",
    "sigma",
    "zpow",
]
