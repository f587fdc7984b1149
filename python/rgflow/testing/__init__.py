"""Testing aids: the independent numpy reference implementation and consistency checks.

* :mod:`rgflow.testing.reference` — the book's inverse-kernel form of the recursions in plain
  numpy (marginal blocks, fixed-order quadrature): slow, independent of the Rust core.
* :mod:`rgflow.testing.depthmup_reference` — the depth-μP ResNet kernels of ``nfd.md`` §2.1 in plain
  numpy (arc-cosine closed forms for ReLU, a whitened trapezoid rule otherwise).
* :func:`assert_consistent` — theory against sampled networks within standard errors.
"""

from . import _depthmup_reference as depthmup_reference
from . import reference
from ._consistency import assert_consistent

__all__ = ["assert_consistent", "depthmup_reference", "reference"]
