"""Learning: predictions of trained and Bayesian-conditioned networks from the layer tensors
(PDLT ch. 6, 10, ∞, App. A; spec ``learning.md``), and the ensembles that judge them.

Layer 6 (depends on recursions, models and _util).  Entry points:

* :func:`predict` — kind ``"bayes"`` (GP posterior (6.57), (6.64); O(1/n) mean, spec §2.3 ≡ (6.87)–(6.88))
  or ``"gd"`` (NTK regression (10.40)–(10.41), finite-step/flow trajectory; the O(1/n) fully trained
  mean (∞.160)–(∞.165), with the dNTK tensors P…U unless only the last layer trains);
* :func:`prediction_theory` — the lean theory a prediction reads (output layer, its families, optionally
  its at-most-one-test-index tuples; spec §10), :class:`OutputTensors` the blocks it reads;
* :func:`log_evidence`, :func:`evidence_gradient` — (6.34) and its C_b/C_W gradient;
* :func:`trajectory`, :func:`generalization`, :func:`robustness`, :func:`gamma_basis`, :func:`polation`;
* :func:`representation_shift` (6.104), :func:`conditional_variance` (6.78);
* :func:`entropy`, :func:`mutual_information`, :func:`optimal_aspect_ratio` (Appendix A);
* :func:`train` — gradient-descent-trained ensembles (with :func:`empirical_ntk` and :func:`linear_parts`,
  the frozen-NTK control variate of its ``mean_lin``); :func:`condition` — exactly conditioned ones;
* :func:`train_depth_sweep` — multilevel-coupled depth sweeps of trained depth-μP ResNets (nfd.md §3),
  :func:`dmft` / :func:`dmft_depth_limit` — their infinite-width limit (§2.2–2.3), :func:`fit_rate`.
"""

from ._analysis import (
    EvidenceGradient,
    Generalization,
    Polation,
    Trajectory,
    conditional_variance,
    evidence_gradient,
    gamma_basis,
    generalization,
    polation,
    representation_shift,
    robustness,
    trajectory,
)
from ._depthmup_dmft import DMFTSolution, dmft, dmft_depth_limit
from ._depthmup_train import TAUS, DepthSweep, train_depth_sweep
from ._finite_gd import ALGORITHMS, Projectors, projectors
from ._info import entropy, mutual_information, nu_of, optimal_aspect_ratio
from ._lean import OutputTensors, prediction_tensors, prediction_theory
from ._network import NetworkPrediction, NetworkTensors, network_prediction, predict_network
from ._predict import DNTK_TENSORS, KINDS, Prediction, log_evidence, predict, trains_last_layer_only
from ._rates import Rate, fit_rate, paired_mean
from ._train import BACKENDS, ConditionedEnsemble, TrainedEnsemble, condition, empirical_ntk, linear_parts, train

__all__ = [
    "OutputTensors",
    "prediction_tensors",
    "prediction_theory",
    "TAUS",
    "DMFTSolution",
    "DepthSweep",
    "Rate",
    "dmft",
    "dmft_depth_limit",
    "fit_rate",
    "paired_mean",
    "train_depth_sweep",
    "ALGORITHMS",
    "BACKENDS",
    "DNTK_TENSORS",
    "KINDS",
    "NetworkPrediction",
    "NetworkTensors",
    "ConditionedEnsemble",
    "EvidenceGradient",
    "Generalization",
    "Polation",
    "Prediction",
    "Projectors",
    "TrainedEnsemble",
    "Trajectory",
    "condition",
    "conditional_variance",
    "empirical_ntk",
    "entropy",
    "evidence_gradient",
    "gamma_basis",
    "generalization",
    "linear_parts",
    "log_evidence",
    "mutual_information",
    "network_prediction",
    "nu_of",
    "optimal_aspect_ratio",
    "polation",
    "predict",
    "predict_network",
    "projectors",
    "representation_shift",
    "robustness",
    "train",
    "trains_last_layer_only",
    "trajectory",
]
