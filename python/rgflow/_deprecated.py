"""The per-architecture entry points of rgflow 0.1, kept for one release as thin aliases of
:func:`rgflow.theory` and :func:`rgflow.sample` (each warns with a DeprecationWarning)."""

from __future__ import annotations

import warnings
from typing import Any

from . import ensembles, recursions


def _warn(old: str, new: str) -> None:
    warnings.warn(f"rgflow.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def resmlp_theory(net: Any, x: Any, **options: Any) -> recursions.ResTheory:
    """Deprecated: use ``rgflow.theory(net, x, ...)``."""
    _warn("resmlp_theory", "rgflow.theory(net, x, ...)")
    return recursions.resmlp_theory(net, x, **options)


def preresnet_theory(net: Any, x: Any = None, **options: Any) -> recursions.PreResTheory:
    """Deprecated: use ``rgflow.theory(net, x, ...)``."""
    _warn("preresnet_theory", "rgflow.theory(net, x, ...)")
    return recursions.preresnet_theory(net, x, **options)


def sample_resmlp(net: Any, x: Any, **options: Any) -> ensembles.ResEnsemble:
    """Deprecated: use ``rgflow.sample(net, x, ...)``."""
    _warn("sample_resmlp", "rgflow.sample(net, x, ...)")
    return ensembles.sample_resmlp(net, x, **options)


def sample_preresnet(net: Any, x: Any = None, **options: Any) -> ensembles.PreResEnsemble:
    """Deprecated: use ``rgflow.sample(net, x, ...)``."""
    _warn("sample_preresnet", "rgflow.sample(net, x, ...)")
    return ensembles.sample_preresnet(net, x, **options)
