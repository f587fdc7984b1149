"""Public wrappers: evidence gradient, GD trajectory, generalisation, ∗-polation, representation
shift, conditional variance — each validating its arguments and reading the output layer of a Theory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import MLP
from ..recursions import Theory, mlp_theory
from ._bayes import evidence_kernel_gradient, hebbian_conditional_variance, log_evidence_from_kernel
from ._bayes import representation_shift as _shift
from ._checks import Chol, check_indices, check_noise, check_targets, check_theory
from ._ntk import gamma_components, gd_trajectory, one_point_generalisation, polation_expansion, polation_weights
from ._predict import Prediction, check_schedule, layer_tensor, require_width


@dataclass
class EvidenceGradient:
    """log p(y_A|H) (6.34) and its derivatives in the initialisation hyperparameters.

    ``C_b``, ``C_W``: d log p / dC when every layer's C_b (C_W) moves together; ``per_layer_C_b``,
    ``per_layer_C_W``: (L,) derivatives in each layer's value (their sums are ``C_b``, ``C_W``).
    """

    log_evidence: float
    C_b: float
    C_W: float
    per_layer_C_b: np.ndarray
    per_layer_C_W: np.ndarray


def evidence_gradient(
    net: MLP, x: Any, y: Any, train: Any = None, *, noise: float = 0.0, step: float = 1e-5
) -> EvidenceGradient:
    """Gradient of the infinite-width evidence (6.34) in C_b^{(ℓ)}, C_W^{(ℓ)} ("evidence for criticality").

    The chain rule ∂ log p/∂C = Σ (∂ log p/∂K̃) ∘ ∂K̃/∂C with ∂ log p/∂K̃ = ½K̃⁻¹yyᵀK̃⁻¹ − (n_L/2)K̃⁻¹
    in closed form and ∂K̃/∂C by central differences of the kernel recursion (4.118) (relative step
    ``step``, error O(step²)).  ``train`` defaults to every input.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    xx = np.asarray(x, dtype=float)
    th = mlp_theory(net, xx, ntk=False, order=0)
    tr = check_indices("train", np.arange(th.n_inputs) if train is None else train, th.n_inputs)
    yy = check_targets(y, len(tr))
    s2 = check_noise(noise)
    Kt = th.K[-1][np.ix_(tr, tr)]
    Chol(Kt + s2 * np.eye(len(tr)), "kernel K", x=th.x, idx=tr)
    dlogp = evidence_kernel_gradient(Kt, yy, s2)
    L = net.depth
    grads = {}
    for name in ("C_b", "C_W"):
        g = np.zeros(L)
        for ell in range(L):
            vals = list(getattr(net, name))
            h = step * max(1.0, abs(vals[ell]))
            Ks = []
            for sgn in (1.0, -1.0):
                v = list(vals)
                v[ell] = vals[ell] + sgn * h
                cb = v if name == "C_b" else list(net.C_b)
                cw = v if name == "C_W" else list(net.C_W)
                shifted = MLP(net.activation, L, widths=list(net.widths), C_b=cb, C_W=cw, lambda_b=list(net.lambda_b),
                              lambda_W=list(net.lambda_W), out_width=net.out_width)  # fmt: skip
                Ks.append(mlp_theory(shifted, xx, ntk=False, order=0).K[-1][np.ix_(tr, tr)])
            g[ell] = float(np.sum(dlogp * (Ks[0] - Ks[1]) / (2 * h)))
        grads[name] = g
    logp = log_evidence_from_kernel(Kt, yy, s2)
    return EvidenceGradient(logp, float(grads["C_b"].sum()), float(grads["C_W"].sum()), grads["C_b"], grads["C_W"])


@dataclass
class Trajectory:
    """Infinite-width GD trajectory: per time (rows of ``steps`` / ``time``), the ensemble mean
    (T, N_B, n_L), covariance (T, N_B, N_B) and mean training residual E[z_A(t)] − y (T, N_A, n_L)."""

    steps: np.ndarray | None
    lr: float | None
    time: np.ndarray | None
    mean: np.ndarray
    cov: np.ndarray
    train_residual: np.ndarray

    @property
    def train_loss(self) -> np.ndarray:
        """½ Σ (E[z_A] − y)² per time: the loss of the mean prediction (the ensemble adds variance)."""
        return 0.5 * np.sum(self.train_residual**2, axis=(1, 2))


def trajectory(
    th: Theory, y: Any, train: Any, test: Any, *, steps: Any = None, lr: float | None = None, time: Any = None
) -> Trajectory:
    """Mean and covariance of the infinite-width ensemble after ``steps`` (array) full-batch GD steps at
    global rate ``lr``, or after gradient-flow times ``time`` (the linear dynamics of (10.3) at all times)."""
    th = check_theory(th, need=("K", "Theta"))
    tr = check_indices("train", train, th.n_inputs)
    te = check_indices("test", test, th.n_inputs)
    yy = check_targets(y, len(tr))
    st, eta, tau = check_schedule(steps, lr, time)
    Theta, K = layer_tensor(th, "Theta"), layer_tensor(th, "K")
    Chol(Theta[np.ix_(tr, tr)], "NTK Θ", x=th.x, idx=tr)
    m, c, r = gd_trajectory(Theta, K, yy, tr, te, steps=st, lr=eta, time=tau)
    return Trajectory(st, eta, tau, m, c, r)


@dataclass
class Generalization:
    """Expected test loss (10.52) = bias + variance, ½ Σ_β Σ_i of (m − y)² and of Var[z]."""

    bias: float
    variance: float

    @property
    def total(self) -> float:
        return self.bias + self.variance


def generalization(pred: Prediction, y_test: Any) -> Generalization:
    """Bias/variance decomposition (10.52) of E[L_B] for a prediction and the test targets (N_B, n_L)."""
    if not isinstance(pred, Prediction):
        raise TypeError(f"pred must be the result of rgflow.predict, got {type(pred).__name__}")
    yt = check_targets(y_test, len(pred.test), name="y_test")
    if yt.shape[1] != pred.n_out:
        raise ValueError(f"y_test has {yt.shape[1]} outputs but the prediction has n_L = {pred.n_out}")
    bias = 0.5 * float(np.sum((pred.mean - yt) ** 2))
    variance = 0.5 * pred.n_out * float(np.trace(pred.cov))
    return Generalization(bias, variance)


def robustness(th: Theory, plus: int, minus: int) -> tuple[float, float]:
    """One training input ``plus``, test input ``minus``: (Θ_{−+}/Θ_{++} − 1 (10.57), trained variance (10.63))."""
    th = check_theory(th, need=("K", "Theta"))
    p, m = check_indices("plus/minus", [plus, minus], th.n_inputs)
    return one_point_generalisation(layer_tensor(th, "Theta"), layer_tensor(th, "K"), int(p), int(m))


def gamma_basis(th: Theory, plus: int, minus: int, tensor: str = "Theta") -> tuple[float, float, float]:
    """γ-basis components (M_[0], M_[1], M_[2]) of the output-layer ``tensor`` ("K" or "Theta") on a pair."""
    if tensor not in ("K", "Theta", "K1", "Theta1"):
        raise ValueError(f"tensor must be 'K', 'Theta', 'K1' or 'Theta1', got {tensor!r}")
    th = check_theory(th, need=(tensor,))
    p, m = check_indices("plus/minus", [plus, minus], th.n_inputs)
    return gamma_components(layer_tensor(th, tensor), int(p), int(m))


@dataclass
class Polation:
    """∗-polation between training inputs x_± (spec §3.5): exact weights w_± per test input, the exact
    mean w_+ y_+ + w_− y_− (N_B, n_L) and, when the midpoint is given, the corrected small-δ expansion."""

    s: np.ndarray
    w_plus: np.ndarray
    w_minus: np.ndarray
    mean: np.ndarray
    expansion: np.ndarray | None


def polation(
    th: Theory, plus: int, minus: int, test: Any, y_plus: Any, y_minus: Any, *, mid: int | None = None
) -> Polation:
    """∗-polation (10.104)–(10.115) with the corrected −s(1−s) coefficient; s from the test inputs'
    position along x_+ − x_− (x_t = x_0 + (2s − 1)(x_+ − x_−)/2, x_0 the midpoint)."""
    th = check_theory(th, need=("K", "Theta"))
    p, m = (int(v) for v in check_indices("plus/minus", [plus, minus], th.n_inputs))
    te = check_indices("test", test, th.n_inputs)
    yp, ym = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (y_plus, y_minus))
    if yp.shape != ym.shape or yp.ndim != 1:
        raise ValueError(f"y_plus and y_minus must be equal-length 1-D target vectors, got {yp.shape}, {ym.shape}")
    Theta = layer_tensor(th, "Theta")
    if not np.isclose(Theta[p, p], Theta[m, m], rtol=1e-8):
        raise ValueError("∗-polation's two-channel form needs equal-norm training inputs (Θ_++ = Θ_−−)")
    x = th.x
    dx = x[p] - x[m]
    x0 = 0.5 * (x[p] + x[m])
    s = 0.5 + (x[te] - x0) @ dx / float(dx @ dx)
    wp, wm = polation_weights(Theta, p, m, te)
    mean = wp[:, None] * yp[None, :] + wm[:, None] * ym[None, :]
    exp = None
    if mid is not None:
        (mi,) = check_indices("mid", [mid], th.n_inputs)
        exp = polation_expansion(Theta, p, m, int(mi), s, yp, ym)
    return Polation(s, wp, wm, mean, exp)


def representation_shift(th: Theory, y: Any, train: Any, rows: Any = None) -> np.ndarray:
    """(6.104): O(1/n) posterior shift of the penultimate feature kernel Σ_j σ_j;δ1 σ_j;δ2 / n_{L-1} on
    ``rows`` (default all inputs), (len(rows), len(rows))."""
    th = check_theory(th, need=("K", "V"))
    n = require_width(th, "the representation shift (6.104)")
    tr = check_indices("train", train, th.n_inputs)
    rr = check_indices("rows", np.arange(th.n_inputs) if rows is None else rows, th.n_inputs)
    yy = check_targets(y, len(tr))
    K, V = layer_tensor(th, "K"), layer_tensor(th, "V")
    Chol(K[np.ix_(tr, tr)], "kernel K", x=th.x, idx=tr)
    return _shift(K, V, th.net.C_W[-1], n, yy, tr, rr)


def conditional_variance(th: Theory, z1: Any, *, input: int = 0, layer: int | None = None) -> np.ndarray:
    """Hebbian "fire together" (6.78): E[(z_2)² | z_1 = ž] for two neurons of ``layer`` (default the
    output layer) on one input, G = K + K1/n at O(1/n)."""
    th = check_theory(th, need=("K", "K1", "V"))
    (i,) = check_indices("input", [input], th.n_inputs)
    ell = th.depth if layer is None else int(layer)
    if not 2 <= ell <= th.depth:
        raise ValueError(f"layer must be in 2..{th.depth} (layer 1 is exactly Gaussian), got {layer}")
    n = th.width(ell)
    li = th.layer_index(ell)
    G = th.K[li][i, i] + th.K1[li][i, i] / n  # type: ignore[index]
    V = th.V[li][i, i, i, i]  # type: ignore[index]
    return hebbian_conditional_variance(float(G), float(V), n, z1)
