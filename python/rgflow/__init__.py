"""rgflow: the finite-width effective theory of deep networks at initialisation.

Layer-to-layer "representation group flow" of Roberts & Yaida, *The Principles of Deep
Learning Theory*: Gaussian expectations and the recursions for K, V, K1, Theta, Theta1,
D, F, A, B (Rust core), checked against ensembles of sampled finite-width networks.

The package is layered, each layer importing only from the ones before it::

    _util → activations → gauss → criticality → models → recursions, ensembles → testing, report, plot → cli

One API for every architecture: ``rgflow.theory(net, x)`` and ``rgflow.sample(net, x)``.
"""

from __future__ import annotations

from . import plot
from ._deprecated import preresnet_theory, resmlp_theory, sample_preresnet, sample_resmlp
from ._util.version import VERSION as __version__
from .activations import Activation
from .criticality import (
    Criticality,
    CriticalPoint,
    FixedPoint,
    critical,
    fixed_point,
    susceptibilities,
    taylor_coefficients,
    universality_class,
)
from .ensembles import Comparison, DepthMuPEnsemble, Ensemble, PreResEnsemble, ResEnsemble, compare, sample
from .gauss import expect, expect_with_error, sigma, zpow
from .learning import (
    ConditionedEnsemble,
    DepthSweep,
    DMFTSolution,
    Prediction,
    TrainedEnsemble,
    dmft,
    dmft_depth_limit,
    predict,
    prediction_theory,
    train,
    train_depth_sweep,
)
from .models import MLP, DepthMuPResNet, PreResNet, ResMLP, critical_mlp
from .recursions import (
    DepthMuPTheory,
    PreResTheory,
    ResTheory,
    Theory,
    preresnet_theory_gh,
    theory,
    theory_tiles,
    tuples_at_most_one,
)

__all__ = [
    "MLP",
    "Activation",
    "Comparison",
    "ConditionedEnsemble",
    "CriticalPoint",
    "DMFTSolution",
    "DepthMuPEnsemble",
    "DepthMuPResNet",
    "DepthMuPTheory",
    "DepthSweep",
    "Criticality",
    "Ensemble",
    "FixedPoint",
    "PreResEnsemble",
    "PreResNet",
    "PreResTheory",
    "Prediction",
    "ResEnsemble",
    "ResMLP",
    "ResTheory",
    "Theory",
    "TrainedEnsemble",
    "__version__",
    "compare",
    "critical",
    "critical_mlp",
    "dmft",
    "dmft_depth_limit",
    "expect",
    "expect_with_error",
    "fixed_point",
    "plot",
    "predict",
    "prediction_theory",
    "preresnet_theory",
    "preresnet_theory_gh",
    "resmlp_theory",
    "sample",
    "sample_preresnet",
    "sample_resmlp",
    "sigma",
    "susceptibilities",
    "taylor_coefficients",
    "theory",
    "theory_tiles",
    "tuples_at_most_one",
    "train",
    "train_depth_sweep",
    "universality_class",
    "zpow",
]
