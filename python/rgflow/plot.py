"""Plots of the representation-group flow across depth (optional extra: ``pip install rgflow[plot]``).

:func:`sweep` computes :func:`rgflow.theory` for a grid of initialisation hyperparameters
around the critical point of an activation; :func:`flow` draws, against the layer ℓ, the
single-input kernel ``K^(ℓ)``, the normalised four-point vertex ``V^(ℓ)/(n_{ℓ-1} (K^(ℓ))²)``
(book (5.128)–(5.131), the depth-to-width ratio at criticality) and the frozen NTK ``Θ^(ℓ)``.

matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import Activation, as_activation
from .criticality import Criticality, critical, learning_rates
from .models import MLP
from .recursions import Theory, theory

__all__ = ["Sweep", "SweepEntry", "flow", "sweep"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised by a monkeypatched test
        raise ImportError(
            "rgflow.plot needs matplotlib, an optional extra: pip install rgflow[plot]  (or pip install matplotlib)"
        ) from exc
    return plt


@dataclass
class SweepEntry:
    """One network of a :class:`Sweep`: its hyperparameters, a label and its :class:`Theory`."""

    C_b: float
    C_W: float
    label: str
    theory: Theory
    is_critical: bool = False


@dataclass
class Sweep:
    """Result of :func:`sweep`: the critical point and one :class:`SweepEntry` per network."""

    activation: Activation
    criticality: Criticality
    depth: int
    width: int
    x: np.ndarray
    entries: list[SweepEntry] = field(default_factory=list)

    def __iter__(self) -> Any:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _default_input(crit: Criticality) -> np.ndarray:
    """One input with K^(1) = K* (half-stable class) or K^(1) = 1 otherwise (n₀ = 1)."""
    assert crit.C_b is not None and crit.C_W is not None  # only called for critical activations
    target = crit.K_star if crit.K_star else 1.0
    return np.array([[float(np.sqrt(max(target - crit.C_b, 1e-12) / crit.C_W))]])


def sweep(
    activation: str | Activation,
    depth: int = 20,
    width: int = 100,
    x: Any = None,
    *,
    C_W_factors: Sequence[float] = (0.9, 0.95, 1.0, 1.05, 1.1),
    C_b_shifts: Sequence[float] = (0.0,),
    lambda_b: float = 1.0,
    lambda_W: float = 1.0,
    ntk: bool = True,
    order: int = 1,
) -> Sweep:
    """Theory for a grid of ``(C_b, C_W) = (C_b* + shift, C_W* × factor)`` around criticality.

    The NTK learning rates are those of :func:`rgflow.criticality.critical_mlp` (equivalence
    principle, §9.4) for every network of the grid.  ``x`` defaults to one input whose first-
    layer kernel is K* (half-stable class) or 1.  Raises ``ValueError`` if the activation has no
    critical point.
    """
    act = as_activation(activation)
    crit = critical(act)
    if not crit.is_critical:
        raise ValueError(f"{act!r} has no critical initialisation ({crit.reason}); nothing to sweep around")
    assert crit.C_b is not None and crit.C_W is not None  # set for every critical class
    X = _default_input(crit) if x is None else np.asarray(x, dtype=float)
    lb, lw = learning_rates(crit, depth, lambda_b, lambda_W)
    out = Sweep(act, crit, int(depth), int(width), X)
    for shift in C_b_shifts:
        for fac in C_W_factors:
            C_b = crit.C_b + float(shift)
            C_W = crit.C_W * float(fac)
            if C_b < 0:
                raise ValueError(f"C_b shift {shift} makes C_b = {C_b:g} < 0; use shifts >= {-crit.C_b:g}")
            net = MLP(act, depth, width=width, C_b=C_b, C_W=C_W, lambda_b=list(lb), lambda_W=list(lw))
            th = theory(net, X, ntk=ntk, order=order)
            assert isinstance(th, Theory)  # theory() of an MLP is a Theory
            is_crit = fac == 1.0 and shift == 0.0
            parts = [f"C_W = {fac:g} C_W*"] + ([f"C_b = C_b* {shift:+g}"] if shift else [])
            label = ", ".join(parts) + (" (critical)" if is_crit else "")
            out.entries.append(SweepEntry(C_b, C_W, label, th, is_crit))
    return out


def flow(
    th_or_sweep: Theory | Sweep | Sequence[Theory],
    *,
    sample: int = 0,
    labels: Sequence[str] | None = None,
    axes: Any = None,
    title: str | None = None,
) -> Any:
    """Draw K, V/(nK²) and Θ (diagonal entries of input ``sample``) against the layer ℓ.

    ``th_or_sweep``: a :class:`~rgflow.Theory`, a list of them, or a :class:`Sweep`.  Panels for
    tensors that were not computed (``order=0`` → no V; ``ntk=False`` → no Θ) are left out.
    ``axes``: optional sequence of matplotlib axes to draw into (one per panel).
    Returns the matplotlib ``Figure``.
    """
    plt = _pyplot()
    items: list[tuple[Theory, str | None, bool]]
    if isinstance(th_or_sweep, Sweep):
        items = [(e.theory, e.label, e.is_critical) for e in th_or_sweep.entries]
        if title is None:
            c = th_or_sweep.criticality
            title = (
                f"{th_or_sweep.activation!r}: {c.universality_class}, critical (C_b, C_W) = ({c.C_b:.6g}, {c.C_W:.6g})"
            )
    elif isinstance(th_or_sweep, Theory):
        items = [(th_or_sweep, None, False)]
    else:
        items = [(t, None, False) for t in th_or_sweep]
        if not all(isinstance(t, Theory) for t, _, _ in items):
            raise TypeError("flow() takes a Theory, a sequence of Theory objects, or a Sweep")
    if not items:
        raise ValueError("nothing to plot")
    if labels is not None:
        if len(labels) != len(items):
            raise ValueError(f"labels has {len(labels)} entries for {len(items)} curves")
        items = [(t, lab, c) for (t, _, c), lab in zip(items, labels, strict=True)]
    n_inputs = items[0][0].n_inputs
    if not 0 <= sample < n_inputs:
        raise ValueError(f"sample must be in 0..{n_inputs - 1}, got {sample}")

    panels = ["K"]
    if all(t.V is not None and t.tuples is None for t, _, _ in items):
        panels.append("V")
    if all(t.Theta is not None for t, _, _ in items):
        panels.append("Theta")
    if axes is None:
        fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        axs = list(axs[0])
    else:
        axs = list(np.ravel(axes))
        if len(axs) < len(panels):
            raise ValueError(f"need {len(panels)} axes, got {len(axs)}")
        fig = axs[0].figure
    a = sample
    for th, lab, is_crit in items:
        ell = np.asarray(th.layers)  # the layers kept (rgflow.theory(..., layers=))
        kw: dict[str, Any] = {"label": lab}
        if is_crit:
            kw.update(color="k", lw=2.2, zorder=5)
        K = th.K[:, a, a]
        axs[0].plot(ell, K, **kw)
        if "V" in panels:
            assert th.V is not None  # the V panel is drawn only if every theory has V
            n = np.array([th.width(int(layer)) for layer in ell], dtype=np.float64)
            axs[panels.index("V")].plot(ell, th.V[:, a, a, a, a] / (n * K * K), **kw)
        if "Theta" in panels:
            assert th.Theta is not None  # the Theta panel is drawn only if every theory has Theta
            axs[panels.index("Theta")].plot(ell, th.Theta[:, a, a], **kw)
    names = {
        "K": r"kernel $K^{(\ell)}$",
        "V": r"$V^{(\ell)}/(n_{\ell-1}K^{(\ell)2})$",
        "Theta": r"frozen NTK $\Theta^{(\ell)}$",
    }
    for p, ax in zip(panels, axs[: len(panels)], strict=True):
        ax.set_xlabel(r"layer $\ell$")
        ax.set_title(names[p])
        vals = np.concatenate([line.get_ydata() for line in ax.get_lines()])
        if p in ("K", "Theta") and np.all(vals > 0) and vals.max() / vals.min() > 50:
            ax.set_yscale("log")
    if any(lab for _, lab, _ in items):
        axs[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
