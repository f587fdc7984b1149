"""``rgflow.theory(net, x, ...)``: one entry point for every architecture."""

from __future__ import annotations

from typing import Any, overload

from ..models import MLP, PreResNet, ResMLP
from ._mlp import Theory, mlp_theory
from ._preresnet import PreResTheory, preresnet_theory
from ._resmlp import ResTheory, resmlp_theory


@overload
def theory(net: MLP, x: Any = None, **options: Any) -> Theory: ...
@overload
def theory(net: ResMLP, x: Any = None, **options: Any) -> ResTheory: ...
@overload
def theory(net: PreResNet, x: Any = None, **options: Any) -> PreResTheory: ...
def theory(net: MLP | ResMLP | PreResNet, x: Any = None, **options: Any) -> Theory | ResTheory | PreResTheory:
    """The infinite-width kernels and first-order (1/n) tensors of ``net`` on inputs ``x`` (N, n0).

    Dispatches on the type of ``net``; ``options`` are those of the architecture's recursion:
    :func:`mlp_theory` (``ntk``, ``order``, ``quad_order``, ``method``), :func:`resmlp_theory`
    (``corrected``, ``order``, ``quad_order``) or :func:`preresnet_theory` (``kernel``, ``method``,
    ``rtol``, ``atol``, ``closure``, ``every``, ``quad_order``).
    """
    if isinstance(net, MLP):
        return mlp_theory(net, x, **options)
    if isinstance(net, ResMLP):
        return resmlp_theory(net, x, **options)
    if isinstance(net, PreResNet):
        return preresnet_theory(net, x, **options)
    raise TypeError(f"net must be an rgflow.MLP, ResMLP or PreResNet, got {type(net).__name__}")
