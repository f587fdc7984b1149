"""Ensembles of sampled finite-width networks: Monte-Carlo estimates of the theory's tensors
with batch-means standard errors (numpy, or JAX sharded over devices), and the comparison.

Layer 5 (depends on models and recursions — the infinite-width kernels that the 1/n estimators
subtract).  One entry point, :func:`sample`, that dispatches on the network type:

* :class:`~rgflow.MLP` → :class:`Ensemble`: K, K1, Theta, Theta1, V, D, F, A, B (per layer l = 1..L),
  and with ``dntk=True`` the dNTK family P, Q, R, S, T, U (``_dntk``: probe neurons, exact forward
  equations in directional-derivative form);
* :class:`~rgflow.ResMLP` → :class:`ResEnsemble`: K, K1, V, S (per layer l = 1..L);
* :class:`~rgflow.PreResNet` → :class:`PreResEnsemble`: K, K1, V, Sigma, V_GS, V_SS (at ``ens.layers``);
* :class:`~rgflow.DepthMuPResNet` → :class:`DepthMuPEnsemble`: K, G (ℓ = 0..L), Theta, Theta_decoupled
  at initialisation (``_depthmup``; numpy only).

Module layout: ``_api`` (the dispatcher), ``_engine`` (argument checks, groups, seeds, group
loop, batch means), ``_jax`` (what the JAX backends share: batching rule, mesh, jit cache, group
loop), ``_mlp`` / ``_resmlp`` / ``_preresnet`` (per-architecture sums and estimates),
``_estimators`` / ``_dntk`` / ``_residual_kernels`` (xp-generic per-batch kernels, numpy and JAX),
``_jax_mlp`` / ``_jax_residual`` (the jitted per-group functions), ``_results`` (the result
dataclasses), ``_compare``.

Conventions, the same for every result:

* ``K`` is the sampled mean kernel E[Ĝ] (first order ``K∞ + K1/n``); ``V = n·Cov(Ĝ, Ĝ)`` with
  the index order ``V[l, a1, a2, a3, a4] = V_{(a1a2)(a3a4)}``.
* Standard errors only as ``ens.stderr.<name>``: a frozen dataclass with the same field names
  and shapes as the estimates (``ens.tensors()`` / ``ens.stderr.tensors()`` list them).
* ``ens.K1`` is the array ``n·(K − K∞)`` (n the width feeding each layer, ``ens.widths``), None
  when no infinite-width kernel was available (MLP: computed by the Rust core unless
  ``theory=False``; residual nets: pass ``theory=``).  ``ens.k1(theory)`` returns
  ``(n·(K − K∞), stderr)`` for any theory object; :class:`PreResEnsemble` also has
  ``ens.u1(theory)``.
* Common fields: ``net``, ``networks``, ``groups``, ``seed``, ``backend``, ``batch``, ``dtype``,
  ``elapsed``, ``networks_per_second``, and ``x`` (PreResNet: ``x`` or None, and ``kernel``).

rgflow 0.1 names kept for one release (DeprecationWarning): ``G``/``G_err``/``V_err``/``S_err``
(:class:`ResEnsemble`), ``G``/``G_err``/``V4``/``V4_err``/``Sigma_err``/``V_GS_err``/``V_SS_err``/
``U1(theory)`` (:class:`PreResEnsemble`), and the top-level ``rgflow.sample_resmlp`` /
``rgflow.sample_preresnet``.
"""

from ._api import sample
from ._compare import Comparison, ComparisonRow, compare
from ._depthmup import DepthMuPEnsemble, DepthMuPStderr, sample_depthmup
from ._engine import BACKENDS
from ._mlp import ESTIMATORS, sample_mlp
from ._preresnet import SAMPLERS, sample_preresnet
from ._resmlp import sample_resmlp
from ._results import Ensemble, MLPStderr, PreResEnsemble, PreResStderr, ResEnsemble, ResStderr

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "SAMPLERS",
    "Comparison",
    "ComparisonRow",
    "DepthMuPEnsemble",
    "DepthMuPStderr",
    "Ensemble",
    "MLPStderr",
    "PreResEnsemble",
    "PreResStderr",
    "ResEnsemble",
    "ResStderr",
    "compare",
    "sample",
    "sample_depthmup",
    "sample_mlp",
    "sample_preresnet",
    "sample_resmlp",
]
