"""Run specifications: what a report computes (built by :mod:`rgflow.cli` from a configuration file).

:class:`RunSpec` / :class:`EnsembleSpec` for MLPs (:func:`rgflow.report.run_report`),
:class:`ResidualRunSpec` / :class:`ResidualEnsembleSpec` for residual MLPs and pre-activation ResNets
(:func:`rgflow.report.run_residual_report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..activations import Activation
from ..models import MLP, PreResNet, ResMLP

__all__ = ["EnsembleSpec", "RunSpec", "ResidualEnsembleSpec", "ResidualRunSpec"]


@dataclass
class EnsembleSpec:
    """One sampled ensemble: hidden widths (an int for all hidden layers, or a list) and options."""

    width: int | list[int]
    networks: int
    backend: str = "numpy"
    dtype: str = "float64"
    groups: int = 32
    batch: int | None = None
    seed: int = 0
    estimator: str = "conditional"

    def hidden_widths(self, depth: int) -> list[int]:
        if isinstance(self.width, int):
            return [int(self.width)] * (depth - 1)
        return [int(w) for w in self.width]


@dataclass
class RunSpec:
    """Everything a report needs; built by ``rgflow demo`` or from a TOML file (:mod:`rgflow.cli`)."""

    activation: Activation
    depth: int
    x: np.ndarray
    ensembles: list[EnsembleSpec]
    C_b: float | list[float] = 0.0
    C_W: float | list[float] = 1.0
    lambda_b: float | list[float] = 1.0
    lambda_W: float | list[float] = 1.0
    out_width: int | None = None
    title: str = "rgflow report"
    ntk: bool = True
    dntk: bool = False  # also P, Q, R, S, T, U (theory, and sampled for smooth activations; needs ntk and order = 1)
    order: int = 1
    quad_order: int | None = None
    method: str = "auto"  # expectations: closed forms where available ("auto") or "quadrature"
    layer: int | None = None  # layer of the printed table; None = last
    inputs: dict[str, Any] = field(default_factory=dict)  # how x was obtained (for results.json)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved configuration

    def net(self, ens: EnsembleSpec | None = None) -> MLP:
        """The MLP with the hidden widths of ``ens`` (the first ensemble if None)."""
        ens = ens or self.ensembles[0]
        return MLP(
            self.activation,
            depth=self.depth,
            widths=ens.hidden_widths(self.depth),
            C_b=self.C_b,
            C_W=self.C_W,
            lambda_b=self.lambda_b,
            lambda_W=self.lambda_W,
            out_width=self.out_width,
        )


@dataclass
class ResidualEnsembleSpec:
    """One sampled ensemble of a residual architecture (all layers of width ``width``)."""

    width: int
    networks: int
    backend: str = "numpy"
    dtype: str = "float64"
    groups: int = 32
    batch: int | None = None
    seed: int = 0
    sampler: str = "block"  # preresnet: "block" (exact block law) or "weights" (dense W)


@dataclass
class ResidualRunSpec:
    """Everything a residual report needs (built from a TOML file by :mod:`rgflow.cli`)."""

    architecture: str
    activation: Activation
    depth: int
    ensembles: list[ResidualEnsembleSpec]
    x: np.ndarray | None = None
    kernel: np.ndarray | None = None
    C_W: float | list[float] = 1.0
    C_b: float | list[float] = 0.0
    gamma: float | list[float] = 0.0  # resmlp
    eps: float = 0.05  # preresnet
    title: str = "rgflow report"
    order: int = 1  # resmlp
    corrected: bool = True  # resmlp
    quad_order: int | None = None
    method: str = "ode"  # preresnet
    closure: str = "g_only"
    every: int = 1
    rtol: float = 1e-8
    atol: float = 1e-10
    paper_gh_order: int = 0  # preresnet: 0 = do not compute the published scheme
    layer: int | None = None  # resmlp table layer (None: last)
    inputs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def net(self, width: int | None = None) -> Any:
        """The network at ``width`` (the first ensemble's by default)."""
        w = self.ensembles[0].width if width is None else width
        if self.architecture == "preresnet":
            return PreResNet(self.activation, depth=self.depth, width=w, eps=self.eps, C_W=self.C_W, C_b=self.C_b)  # type: ignore[arg-type]
        return ResMLP(self.activation, self.depth, w, C_b=self.C_b, C_W=self.C_W, gamma=self.gamma)
