"""rgflow: the finite-width effective theory of deep networks at initialisation.

Layer-to-layer "representation group flow" of Roberts & Yaida, *The Principles of Deep
Learning Theory*: Gaussian expectations and the recursions for K, V, K1, Theta, Theta1,
D, F, A, B (Rust core), checked against ensembles of sampled finite-width networks.
"""

from __future__ import annotations

from . import plot
from .activations import Activation
from .criticality import (
    Criticality,
    CriticalPoint,
    FixedPoint,
    critical,
    critical_mlp,
    fixed_point,
    susceptibilities,
    taylor_coefficients,
    universality_class,
)
from .ensemble import Ensemble, compare, sample
from .expectations import expect, expect_with_error, sigma, zpow
from .network import MLP
from .preresnet import PreResNet, preresnet_theory, preresnet_theory_gh, sample_preresnet
from .resnet import ResEnsemble, ResMLP, ResTheory, resmlp_theory, sample_resmlp
from .theory import Theory, theory

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Activation",
    "PreResNet",
    "ResEnsemble",
    "ResMLP",
    "ResTheory",
    "CriticalPoint",
    "Criticality",
    "Ensemble",
    "FixedPoint",
    "Theory",
    "__version__",
    "compare",
    "critical",
    "critical_mlp",
    "expect",
    "expect_with_error",
    "fixed_point",
    "plot",
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
    "universality_class",
    "zpow",
]
