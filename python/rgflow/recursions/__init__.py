"""Layer recursions of every architecture: the infinite-width kernels and their 1/n tensors.

Layer 5 (depends on models, gauss and the Rust core).  One entry point, :func:`theory`, that
dispatches on the network type:

* :class:`~rgflow.MLP` → :class:`Theory` (K, K1, Θ, Θ1, V, D, F, A, B; ``ntk.md`` §1.2; with
  ``dntk=True`` also P, Q, R, S, T, U; ``dntk.md``),
* :class:`~rgflow.ResMLP` → :class:`ResTheory` (K, V, S, K1; Appendix B),
* :class:`~rgflow.PreResNet` → :class:`PreResTheory` (K0, V4, K1, …; ``resnets.md``),
* :class:`~rgflow.DepthMuPResNet` → :class:`DepthMuPTheory` (K, G, Θ, Θ_dec at ℓ = 0..L and the
  L → ∞ depth-ODE limit; ``nfd.md`` §2.1).

:func:`theory_tiles` (also ``rgflow.theory(mlp, x, tuples=..., client=...)``) runs an MLP's sample
tuples in tiles, on a Dask cluster or in-process, gathered or reduced through a contraction.
"""

from ._api import theory
from ._depthmup import DepthMuPLimit, DepthMuPTheory, depthmup_theory, ntk_weights
from ._mlp import (
    ALL_TENSORS,
    DNTK_TENSORS,
    FOUR_POINT,
    THEORY_TENSORS,
    TWO_POINT,
    Theory,
    mlp_theory,
    tuples_at_most_one,
)
from ._overflow import K4_LIMIT, check_finite_result, overflow_cause, overflow_scan
from ._preresnet import PreResTheory, preresnet_theory, preresnet_theory_gh
from ._resmlp import ResTheory, nu_scale_invariant, resmlp_theory
from ._tiles import theory_tiles

__all__ = [
    "ALL_TENSORS",
    "K4_LIMIT",
    "DNTK_TENSORS",
    "FOUR_POINT",
    "THEORY_TENSORS",
    "TWO_POINT",
    "check_finite_result",
    "overflow_cause",
    "overflow_scan",
    "DepthMuPLimit",
    "DepthMuPTheory",
    "PreResTheory",
    "ResTheory",
    "Theory",
    "depthmup_theory",
    "mlp_theory",
    "ntk_weights",
    "nu_scale_invariant",
    "preresnet_theory",
    "preresnet_theory_gh",
    "resmlp_theory",
    "theory",
    "theory_tiles",
    "tuples_at_most_one",
]
