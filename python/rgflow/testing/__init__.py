"""Testing aids: the independent numpy reference implementation and consistency checks.

* :mod:`rgflow.testing.reference` — the book's inverse-kernel form of the recursions in plain
  numpy (marginal blocks, fixed-order quadrature): slow, independent of the Rust core.
* :func:`assert_consistent` — theory against sampled networks within standard errors.
"""

from . import reference
from ._consistency import assert_consistent

__all__ = ["assert_consistent", "reference"]
