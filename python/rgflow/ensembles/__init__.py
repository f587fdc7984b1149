"""Ensembles of sampled finite-width networks: Monte-Carlo estimates of the theory's tensors
with batch-means standard errors (numpy, or JAX sharded over devices), and the comparison.

Layer 5 (depends on models and recursions — the infinite-width kernels that the 1/n estimators
subtract).  One entry point, :func:`sample`, that dispatches on the network type.
"""

from ._api import sample
from ._compare import Comparison, ComparisonRow, compare
from ._mlp import BACKENDS, ESTIMATORS, Ensemble, sample_mlp
from ._preresnet import SAMPLERS, PreResEnsemble, sample_preresnet
from ._resmlp import ResEnsemble, sample_resmlp

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "SAMPLERS",
    "Comparison",
    "ComparisonRow",
    "Ensemble",
    "PreResEnsemble",
    "ResEnsemble",
    "compare",
    "sample",
    "sample_mlp",
    "sample_preresnet",
    "sample_resmlp",
]
