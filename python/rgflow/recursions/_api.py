"""``rgflow.theory(net, x, ...)``: one entry point for every architecture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from ..models import MLP, DepthMuPResNet, PreResNet, ResMLP
from ._depthmup import DepthMuPTheory, depthmup_theory
from ._mlp import Theory, mlp_theory
from ._preresnet import PreResTheory, preresnet_theory
from ._resmlp import ResTheory, resmlp_theory
from ._tiles import theory_tiles

#: Options that run an MLP theory in tiles of sample tuples (:func:`theory_tiles`) when not None.
TILE_OPTIONS = ("client", "tile_size", "reduce")


@overload
def theory(net: MLP, x: Any = None, *, reduce: Callable[..., Any], **options: Any) -> Any: ...
@overload
def theory(net: MLP, x: Any = None, **options: Any) -> Theory: ...
@overload
def theory(net: ResMLP, x: Any = None, **options: Any) -> ResTheory: ...
@overload
def theory(net: PreResNet, x: Any = None, **options: Any) -> PreResTheory: ...
@overload
def theory(net: DepthMuPResNet, x: Any = None, **options: Any) -> DepthMuPTheory: ...
def theory(
    net: MLP | ResMLP | PreResNet | DepthMuPResNet, x: Any = None, **options: Any
) -> Theory | ResTheory | PreResTheory | DepthMuPTheory:
    """The infinite-width kernels and first-order (1/n) tensors of ``net`` on inputs ``x`` (N, n0).

    Dispatches on the type of ``net``; ``options`` are those of the architecture's recursion:
    :func:`mlp_theory` (``ntk``, ``order``, ``quad_order``, ``method``, ``layers``, ``tensors``,
    ``tuples``), :func:`resmlp_theory`
    (``corrected``, ``order``, ``quad_order``) or :func:`preresnet_theory` (``kernel``, ``method``,
    ``rtol``, ``atol``, ``closure``, ``every``, ``quad_order``) or :func:`depthmup_theory` (``limit``,
    ``rtol``, ``atol``, ``quad_order``).

    For an MLP, ``client=`` (a ``dask.distributed.Client``), ``tile_size=`` or ``reduce=`` (not None)
    run the sample tuples in tiles (:func:`theory_tiles`; ``tuples=None`` then means all N⁴ tuples).
    """
    if any(options.get(k) is not None for k in TILE_OPTIONS) or "progress" in options:
        if not isinstance(net, MLP):
            raise TypeError(
                f"client=, tile_size=, reduce= and progress= (tiles of sample tuples) are for an rgflow.MLP, "
                f"got {type(net).__name__}"
            )
        return theory_tiles(net, x, **options)
    if isinstance(net, MLP):
        return mlp_theory(net, x, **options)
    only_mlp = [k for k in ("layers", "tensors", "tuples") if k in options]
    if only_mlp and isinstance(net, (ResMLP, PreResNet, DepthMuPResNet)):
        raise TypeError(
            f"{', '.join(k + '=' for k in only_mlp)} are supported for rgflow.MLP only, not for a "
            f"{type(net).__name__}; compute every layer and slice the result"
        )
    if isinstance(net, ResMLP):
        return resmlp_theory(net, x, **options)
    if isinstance(net, PreResNet):
        return preresnet_theory(net, x, **options)
    if isinstance(net, DepthMuPResNet):
        if x is None:
            raise ValueError("x is required for a DepthMuPResNet: inputs of shape (N, d)")
        return depthmup_theory(net, x, **options)
    raise TypeError(f"net must be an rgflow.MLP, ResMLP, PreResNet or DepthMuPResNet, got {type(net).__name__}")
