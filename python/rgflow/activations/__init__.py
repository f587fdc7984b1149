"""Activation functions σ: the built-ins (with exact derivatives) and user callables.

Layer 1 of the package (depends only on numpy): :class:`Activation` is the one specification
that the Rust core, the numpy samplers and the JAX samplers all read.
"""

from ._activation import BUILTIN_PARAMS, KINKED, Activation, as_activation
from ._array import array_function, array_functions, erf_for

__all__ = ["BUILTIN_PARAMS", "KINKED", "Activation", "array_function", "array_functions", "as_activation", "erf_for"]
