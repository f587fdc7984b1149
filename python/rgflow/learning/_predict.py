"""``rgflow.predict``: predictions of trained (or Bayesian-conditioned) networks from the
output-layer tensors of a :class:`rgflow.Theory` computed on all inputs (train ∪ test).

kind="bayes": order 0 — GP posterior (6.57), (6.64); order 1 — posterior mean at O(1/n_{L-1})
(spec §2.3, ≡ (6.87)–(6.88)), covariance at leading order (the book prints no O(1/n) posterior
covariance).  kind="gd": order 0 — (10.40), (10.41), or the trajectory after ``steps`` GD steps at
rate ``lr`` / flow time ``time``; order 1 — the fully trained ensemble mean (∞.160)–(∞.165) with
the spec's fixes (σ_Δ = −1, the general Z_B form of (∞.163), T ↔ U in (∞.165); ``_finite_gd``)
for ``algorithm`` "gd" (rate ``lr``), "flow" or "newton"; it needs P, Q, R, S, T, U
(``rgflow.theory(net, x, dntk=True)``) unless only the last layer trains (λ^{(ℓ<L)} = 0), where
P = … = U = 0 (∞.173).  The NTK mean is H = Θ + Θ1/n (``theta1=True``; beyond the book, which
leaves H^{1} uncomputed and sets H ≈ Θ); the covariance stays at leading order (10.41).

``th`` may be lean (spec §10, ``_lean``): only the output layer (``layers=[-1]``), only the families
the prediction reads (``tensors=``), and for the Bayes mean (or last-layer GD) only the tuples with at
most one test index (``tuples=rgflow.tuples_at_most_one(train, test)``);
:func:`rgflow.prediction_theory` makes exactly that call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._util.validation import check_bool, check_int
from ..recursions import Theory
from ._bayes import finite_width_mean, finite_width_mean_book, gp_posterior, log_evidence_from_kernel
from ._checks import Chol, check_indices, check_noise, check_targets, check_theory
from ._finite_gd import ALGORITHMS, gd_mean_first_order, projectors
from ._lean import OutputTensors, last_layer_only, theory_call
from ._ntk import gd_fully_trained, gd_trajectory

KINDS = ("bayes", "gd")
#: The dNTK / ddNTK tensors that the finite-width GD mean (∞.160)–(∞.165) needs (issue 13 part 3).
DNTK_TENSORS = ("P", "Q", "R", "S", "T", "U")


@dataclass
class Prediction:
    """Result of :func:`rgflow.predict`.

    Attributes
    ----------
    mean: (N_B, n_L) predicted ensemble/posterior mean of the test outputs.
    cov: (N_B, N_B) covariance of each output component (identical for every component, δ_{i1 i2}).
    mean_infinite, cov_infinite: the infinite-width parts ((6.64)/(6.57) or (10.40)/(10.41)).
    mean_correction: ``mean − mean_infinite`` — the O(1/n_{L-1}) part (zero at order 0).
    pieces: named terms of the correction (e.g. ``metric`` and ``vertex`` for Bayes, ``ntk_mean`` and
        ``ntk_variance`` for last-layer GD), each (N_B, n_L) and already divided by n.
    cov_order: the order in 1/n to which ``cov`` is exact (0: leading order only).
    log_evidence: log p(y_A | H) (6.34) at infinite width (Bayes only).
    """

    kind: str
    order: int
    train: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    mean_infinite: np.ndarray
    cov_infinite: np.ndarray
    width: int | None
    n_out: int
    noise: float = 0.0
    cov_order: int = 0
    log_evidence: float | None = None
    pieces: dict[str, np.ndarray] = field(default_factory=dict)
    lr: float | None = None
    algorithm: str | None = None

    @property
    def mean_correction(self) -> np.ndarray:
        return self.mean - self.mean_infinite

    @property
    def std(self) -> np.ndarray:
        """(N_B,) standard deviation of each test output."""
        return np.sqrt(np.maximum(np.diag(self.cov), 0.0))

    def __repr__(self) -> str:
        return (
            f"Prediction(kind={self.kind!r}, order={self.order}, N_A={len(self.train)}, N_B={len(self.test)}, "
            f"n_L={self.n_out}, n_{{L-1}}={self.width})"
        )


def output_width(th: Theory) -> int | None:
    """n_{L-1}, the width whose inverse multiplies the output-layer corrections (None for depth 1)."""
    return None if th.net.depth == 1 else int(th.net.widths[-1])


def require_width(th: Theory, what: str) -> int:
    n = output_width(th)
    if n is None:
        raise ValueError(
            f"{what} needs a hidden layer below the output (n_{{L-1}}), but the network has depth 1; "
            "use depth >= 2 or order=0"
        )
    return n


def layer_tensor(th: Theory, name: str) -> np.ndarray:
    """The output-layer tensor ``name`` (th must hold the output layer: :func:`check_theory`)."""
    T = getattr(th, name)
    return np.asarray(T[th.layer_index(th.depth)], dtype=float)


def _common(
    th: Any, y: Any, train: Any, test: Any, need: tuple[str, ...], hint: str = ""
) -> tuple[Theory, np.ndarray, np.ndarray, np.ndarray]:
    th = check_theory(th, need=need, hint=hint, tuples_ok=True)
    N = th.n_inputs
    tr = check_indices("train", train, N)
    te = check_indices("test", test, N)
    yy = check_targets(y, len(tr))
    return th, yy, tr, te


def predict(
    th: Theory,
    y: Any,
    train: Any,
    test: Any,
    *,
    kind: str = "bayes",
    order: int = 0,
    noise: float = 0.0,
    steps: int | None = None,
    lr: float | None = None,
    time: float | None = None,
    method: str = "compact",
    algorithm: str = "gd",
    theta1: bool = True,
) -> Prediction:
    """Predict the test outputs of networks trained on (x[train], y).

    Parameters
    ----------
    th: ``rgflow.theory(net, x)`` on all inputs (train and test together); the output layer is used.
        Lean theories work too: ``rgflow.prediction_theory(net, x, train, test, kind=, order=)`` computes
        only what this prediction reads (the output layer, its families, optionally its tuples) — for
        ``kind="bayes", order=1``: ``rgflow.theory(net, x, ntk=False, layers=[-1], tensors=["K", "K1",
        "V"])``; for ``kind="gd", order=1``: ``rgflow.theory(net, x, dntk=True, layers=[-1],
        tensors=["K", "Theta", "Theta1", "A", "B", "P", "Q", "R", "S", "T", "U"])`` (without the dNTK
        family when only the last layer trains).
    y: training targets (N_A, n_L) (1-D: one output).
    train, test: integer index arrays into ``th.x`` (test may include training inputs).
    kind: ``"bayes"`` (posterior given the training data) or ``"gd"`` (gradient descent on the MSE (10.5)).
    order: 0 (infinite width) or 1 (with the O(1/n_{L-1}) mean correction).
    noise: i.i.d. observation-noise variance σ² ≥ 0 added to the training kernel's diagonal (Bayes).
    steps, lr: finite GD (``kind="gd"``, order 0): ``steps`` full-batch steps at global rate ``lr``;
        ``time``: gradient flow for τ = ηt.  Default: fully trained.
    method: Bayes order 1: ``"compact"`` (spec §2.3) or ``"book"`` ((4.108) + (6.81)–(6.88)).
    algorithm: GD order 1 (fully trained): ``"gd"`` many-step full-batch gradient descent at the global
        rate ``lr`` (default 1/λ_max(Θ̃), as :func:`rgflow.train`), ``"flow"`` gradient flow (η → 0),
        ``"newton"`` the two-step Newton-like scheme (∞.79); spec §4.3.
    theta1: GD order 1: use the NTK mean H = Θ + Θ1/n (default; beyond the book, which sets H ≈ Θ
        because it never computes the 1/n part of the NTK mean) or H = Θ (``False``, the book).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    order = check_int("order", order, minimum=0, maximum=1, hint=" (0: infinite width, 1: first order in 1/n)")
    theta1 = check_bool("theta1", theta1)
    sigma2 = check_noise(noise)
    if kind == "bayes":
        need: tuple[str, ...] = ("K",) if order == 0 else ("K", "K1", "V")
        th, yy, tr, te = _common(th, y, train, test, need, _call(th, "bayes", order, theta1))
        return _predict_bayes(th, yy, tr, te, order, sigma2, method)
    if sigma2:
        raise ValueError("noise applies to kind='bayes' only; gradient descent fits the targets exactly (noise=0)")
    th, yy, tr, te = _common(th, y, train, test, ("K", "Theta"), _call(th, "gd", order, theta1))
    if order == 1:
        if steps is not None or time is not None:
            raise NotImplementedError(
                "the O(1/n) GD prediction is implemented for fully trained networks only (no steps/time; lr is the "
                "rate η of the fully trained algorithm)"
            )
        return _predict_gd_first_order(th, yy, tr, te, lr, algorithm, theta1)
    return _predict_gd(th, yy, tr, te, steps, lr, time)


def _call(th: Any, kind: str, order: int, theta1: bool) -> str:
    """The theory call that provides what the prediction reads (for error messages)."""
    last = isinstance(th, Theory) and last_layer_only(th.net)
    tup = isinstance(th, Theory) and th.tuples is not None and (kind == "bayes" or last)
    call = theory_call(kind, order, last_only=last, theta1=theta1, tuples=tup)
    return f"{call} (= rgflow.prediction_theory(net, x, train, test, kind={kind!r}, order={order}))"


def _predict_bayes(
    th: Theory, y: np.ndarray, tr: np.ndarray, te: np.ndarray, order: int, noise: float, method: str
) -> Prediction:
    K = layer_tensor(th, "K")
    c = Chol(K[np.ix_(tr, tr)] + noise * np.eye(len(tr)), "kernel K", x=th.x, idx=tr)
    mean0, cov0 = gp_posterior(K, y, tr, te, noise, chol=c)
    logev = log_evidence_from_kernel(K[np.ix_(tr, tr)], y, noise, chol=c)
    pieces: dict[str, np.ndarray] = {}
    width = output_width(th)
    mean = mean0
    if order == 1:
        n = require_width(th, "the O(1/n) Bayesian posterior")
        out = OutputTensors(th, tr, te, _call(th, "bayes", 1, True))
        K1 = out.two("K1")
        if method == "compact":
            VB, VA = out.block("V", "tabc"), out.block("V", "abce")
            metric, vertex, _ = finite_width_mean(K, K1, VB, VA, n, y, tr, te, noise, chol=c)
            pieces = {"metric": metric - mean0, "vertex": vertex}
            mean = metric + vertex
        elif method == "book":
            if noise:
                raise ValueError("method='book' has no noise term; use method='compact' with noise")
            if th.tuples is not None:
                raise ValueError(
                    "method='book' contracts V over all of (train ∪ test)⁴, but th holds V at tuples= only; "
                    "use method='compact' or a theory without tuples="
                )
            mean = finite_width_mean_book(K, K1, layer_tensor(th, "V"), n, y.shape[1], y, tr, te)
        else:
            raise ValueError(f"method must be 'compact' or 'book', got {method!r}")
    return Prediction("bayes", order, tr, te, mean, cov0, mean0, cov0, width, y.shape[1], noise, 0, logev, pieces)


def _predict_gd(
    th: Theory, y: np.ndarray, tr: np.ndarray, te: np.ndarray, steps: Any, lr: Any, time: Any
) -> Prediction:
    K, Theta = layer_tensor(th, "K"), layer_tensor(th, "Theta")
    c = Chol(Theta[np.ix_(tr, tr)], "NTK Θ", x=th.x, idx=tr)
    mean0, cov0 = gd_fully_trained(Theta, K, y, tr, te, chol=c)
    mean, cov = mean0, cov0
    if steps is not None or lr is not None or time is not None:
        st, eta, tau = check_schedule(steps, lr, time)
        means, covs, _ = gd_trajectory(Theta, K, y, tr, te, steps=st, lr=eta, time=tau)
        mean, cov = means[0], covs[0]
        mean0, cov0 = mean, cov
    return Prediction("gd", 0, tr, te, mean, cov, mean0, cov0, output_width(th), y.shape[1])


def check_schedule(steps: Any, lr: Any, time: Any) -> tuple[Any, Any, Any]:
    if time is not None:
        if steps is not None or lr is not None:
            raise ValueError("give either time (gradient flow τ = ηt) or steps and lr, not both")
        t = np.atleast_1d(np.asarray(time, dtype=float))
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"time must be finite and >= 0, got {time}")
        return None, None, t
    if steps is None or lr is None:
        raise ValueError("finite-step gradient descent needs both steps (an int >= 0) and lr (the global rate η > 0)")
    st = np.atleast_1d(np.asarray(steps))
    if not np.issubdtype(st.dtype, np.integer) or np.any(st < 0):
        raise ValueError(f"steps must be non-negative integers, got {steps}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not lr > 0:
        raise ValueError(f"lr (the global learning rate η) must be a number > 0, got {lr!r}")
    return st, float(lr), None


def trains_last_layer_only(th: Theory) -> bool:
    """True when λ_b = λ_W = 0 in every layer below the output (only W^(L), b^(L) move)."""
    return last_layer_only(th.net)


def _predict_gd_first_order(
    th: Theory, y: np.ndarray, tr: np.ndarray, te: np.ndarray, lr: Any, algorithm: str, theta1: bool
) -> Prediction:
    """The fully trained ensemble mean at O(1/n) (∞.160)–(∞.165), spec §4.3–4.5 (module docstring)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    last_only = trains_last_layer_only(th)
    call = _call(th, "gd", 1, theta1)
    need = ("Theta1", "A", "B") if theta1 else ("A", "B")
    check_theory(th, need=need, why=" (needed by the O(1/n) GD mean)", hint=call, tuples_ok=True)
    if not last_only:
        missing = [k for k in DNTK_TENSORS if getattr(th, k, None) is None]
        if missing:
            raise ValueError(
                f"th carries no {', '.join(missing)}: the O(1/n) gradient-descent mean (∞.160)–(∞.165) needs the "
                f"dNTK/ddNTK tensors; recompute it with {call} (or rgflow.theory(net, x, dntk=True); or use order=0)"
            )
        act = th.net.activation
        idx = th.layer_index(th.depth)
        if act.kinked or not all(np.isfinite(getattr(th, k)[idx].flat[0]) for k in ("R", "S", "T", "U")):
            raise ValueError(
                f"the O(1/n) gradient-descent mean is undefined for the kinked activation {act.name!r}: its ddNTK "
                "means R, S, T, U do not exist (PDLT (∞.39)–(∞.44); the update is O(1/√n), not O(1/n)); use a "
                "smooth activation (gelu, swish, tanh, erf), or order=0"
            )
    n = require_width(th, "the O(1/n) GD mean")
    K, Theta = layer_tensor(th, "K"), layer_tensor(th, "Theta")
    c = Chol(Theta[np.ix_(tr, tr)], "NTK Θ", x=th.x, idx=tr)
    mean0, cov0 = gd_fully_trained(Theta, K, y, tr, te, chol=c)
    H = th.ntk_mean(th.depth) if theta1 else Theta
    Chol(H[np.ix_(tr, tr)], "NTK mean H = Θ + Θ1/n" if theta1 else "NTK Θ", x=th.x, idx=tr)
    if lr is None:  # the default of rgflow.train
        eta = 1.0 / float(np.linalg.eigvalsh(Theta[np.ix_(tr, tr)]).max())
    elif isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not lr > 0:
        raise ValueError(f"lr (the global learning rate η) must be a number > 0, got {lr!r}")
    else:
        eta = float(lr)
    if algorithm != "gd" and lr is not None:
        raise ValueError(f"lr is the rate of algorithm='gd'; the {algorithm!r} projectors do not depend on it")
    Z = projectors(H[np.ix_(tr, tr)], eta, algorithm)
    out = OutputTensors(th, tr, te, call)
    mean, parts = gd_mean_first_order(H, K, out.block, not last_only, n, y, tr, te, Z)
    pieces = {"ntk_mean": parts.pop("mean_ntk") - mean0, **parts}
    return Prediction(
        "gd", 1, tr, te, mean, cov0, mean0, cov0, n, y.shape[1], pieces=pieces,
        lr=eta if algorithm == "gd" else None, algorithm=algorithm,
    )  # fmt: skip


def log_evidence(th: Theory, y: Any, train: Any, *, noise: float = 0.0) -> float:
    """log p(y_A | H) (6.34) of the infinite-width output kernel on the training inputs."""
    th = check_theory(th)
    tr = check_indices("train", train, th.n_inputs)
    yy = check_targets(y, len(tr))
    K = layer_tensor(th, "K")
    s2 = check_noise(noise)
    c = Chol(K[np.ix_(tr, tr)] + s2 * np.eye(len(tr)), "kernel K", x=th.x, idx=tr)
    return log_evidence_from_kernel(K[np.ix_(tr, tr)], yy, s2, chol=c)
