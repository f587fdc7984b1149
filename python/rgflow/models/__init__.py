"""Network specifications: plain descriptions of the architectures, no computation.

Layer 4 (depends on activations, criticality for the ``critical`` constructors):

* :class:`MLP` — the multilayer perceptron (2.5), per-layer widths and hyperparameters;
* :class:`ResMLP` — the residual MLP of Appendix B;
* :class:`PreResNet` — the pre-activation ResNet in the depth scaling t = ε²ℓ (``resnets.md``);
* :class:`DepthMuPResNet` — the depth-μP ResNet of ``nfd.md`` §1 (one-layer blocks, 1/√L branch, μP readout).

``rgflow.theory(net, x)`` and ``rgflow.sample(net, x)`` dispatch on these types.
"""

from ._depthmup import DepthMuPResNet
from ._identity import check_same_origin, network_mismatch
from ._mlp import MLP, critical_mlp
from ._preresnet import PreResNet
from ._resmlp import ResMLP

__all__ = ["MLP", "DepthMuPResNet", "PreResNet", "ResMLP", "check_same_origin", "critical_mlp", "network_mismatch"]
