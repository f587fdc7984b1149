"""``rgflow.sample(net, x, ...)``: one entry point for every architecture."""

from __future__ import annotations

from typing import Any

from ..models import MLP, PreResNet, ResMLP
from ._mlp import Ensemble, sample_mlp
from ._preresnet import PreResEnsemble, sample_preresnet
from ._resmlp import ResEnsemble, sample_resmlp


def sample(net: MLP | ResMLP | PreResNet, x: Any = None, **options: Any) -> Ensemble | ResEnsemble | PreResEnsemble:
    """Sample finite-width networks like ``net`` on inputs ``x`` (N, n0) and estimate the theory's
    tensors with batch-means standard errors.

    Dispatches on the type of ``net``; ``options`` are those of :func:`sample_mlp`,
    :func:`sample_resmlp` or :func:`sample_preresnet` (``networks``, ``seed``, ``backend``, …).
    """
    if isinstance(net, MLP):
        return sample_mlp(net, x, **options)
    if isinstance(net, ResMLP):
        return sample_resmlp(net, x, **options)
    if isinstance(net, PreResNet):
        return sample_preresnet(net, x, **options)
    raise TypeError(f"net must be an rgflow.MLP, ResMLP or PreResNet, got {type(net).__name__}")
