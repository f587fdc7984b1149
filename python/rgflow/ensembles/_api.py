"""``rgflow.sample(net, x, ...)``: one entry point for every architecture."""

from __future__ import annotations

from typing import Any, overload

from .._util.validation import check_inputs
from ..models import MLP, DepthMuPResNet, PreResNet, ResMLP
from ..recursions import K4_LIMIT, check_finite_result, overflow_scan
from ._depthmup import DepthMuPEnsemble, sample_depthmup
from ._mlp import sample_mlp
from ._preresnet import sample_preresnet
from ._resmlp import sample_resmlp
from ._results import Ensemble, PreResEnsemble, ResEnsemble


@overload
def sample(net: MLP, x: Any = None, **options: Any) -> Ensemble: ...
@overload
def sample(net: ResMLP, x: Any = None, **options: Any) -> ResEnsemble: ...
@overload
def sample(net: PreResNet, x: Any = None, **options: Any) -> PreResEnsemble: ...
@overload
def sample(net: DepthMuPResNet, x: Any = None, **options: Any) -> DepthMuPEnsemble: ...
def sample(
    net: MLP | ResMLP | PreResNet | DepthMuPResNet, x: Any = None, **options: Any
) -> Ensemble | ResEnsemble | PreResEnsemble | DepthMuPEnsemble:
    """Sample finite-width networks like ``net`` on inputs ``x`` (N, n0) and estimate the theory's
    tensors with batch-means standard errors.

    Dispatches on the type of ``net``: :func:`sample_mlp` → :class:`Ensemble`,
    :func:`sample_resmlp` → :class:`ResEnsemble`, :func:`sample_preresnet` →
    :class:`PreResEnsemble` (which also takes ``kernel=`` instead of ``x``), :func:`sample_depthmup`
    → :class:`DepthMuPEnsemble` (K, G, Theta, Theta_decoupled at initialisation; numpy only).

    Common options, the same defaults for every architecture: ``networks=10_000``,
    ``seed=0``, ``groups=32`` (groups of sizes differing by at most one; every network is used),
    ``batch=None`` (automatic), ``backend="numpy"`` or ``"jax"``, ``dtype="float64"`` or
    ``"float32"``, ``devices=None`` (JAX: all), ``progress=True`` (a progress line on stderr for
    runs longer than ~2 s), ``theory=None`` (infinite-width kernels for ``K1``).  Architecture
    options: ``ntk``, ``estimator``, ``dntk`` (MLP: also P, Q, R, S, T, U); ``kernel``, ``every``,
    ``sampler`` (PreResNet); ``decoupled`` (DepthMuPResNet).
    """
    if isinstance(net, (MLP, ResMLP)) and x is not None:
        # an overflowing network is refused before sampling (the estimates would be NaN/inf)
        cause = overflow_scan(net, check_inputs(x), limit=K4_LIMIT)
        if cause is not None:
            raise ValueError(f"rgflow.sample: {cause}")
    ens: Ensemble | ResEnsemble | PreResEnsemble
    if isinstance(net, MLP):
        ens = sample_mlp(net, x, **options)
    elif isinstance(net, ResMLP):
        ens = sample_resmlp(net, x, **options)
    elif isinstance(net, PreResNet):
        ens = sample_preresnet(net, x, **options)
    elif isinstance(net, DepthMuPResNet):
        if x is None:
            raise ValueError("x is required for a DepthMuPResNet: inputs of shape (N, d)")
        return sample_depthmup(net, x, **options)
    else:
        raise TypeError(f"net must be an rgflow.MLP, ResMLP, PreResNet or DepthMuPResNet, got {type(net).__name__}")
    check_finite_ensemble(ens)
    return ens


def check_finite_ensemble(ens: Ensemble | ResEnsemble | PreResEnsemble) -> None:
    """ValueError naming the cause (inputs, C_W, activation) if an estimate or standard error is NaN/inf.

    Packed four-point tensors are checked as held (their packed data), without unpacking them."""
    tensors = {**ens.stored(), **{f"stderr.{k}": v for k, v in ens.stderr.stored().items()}}
    x = getattr(ens, "x", None)
    kernel = getattr(ens, "kernel", None) if x is None else None
    check_finite_result("rgflow.sample", tensors, ens.net, x, kernel, limit=K4_LIMIT)
