"""Depth-μP ResNets at initialisation, infinite width (spec ``nfd.md`` §2.1, [C, sim]).

For :class:`~rgflow.DepthMuPResNet` (``h_ℓ = h_{ℓ-1} + a_L W_ℓ φ(h_{ℓ-1})/√n``, ``f = vᵀr/(γ0 n)``)
on inputs ``x`` (N, d), with ``Φ(K) = ⟨φφ⟩_K`` and ``Ψ(K) = ⟨φ'φ'⟩_K`` (closed forms for relu, erf,
gelu, linear, …; the engine's converged quadrature for tanh etc.), the Rust core computes:

* ``K[ℓ]`` (ℓ = 0..L): ``K_ℓ = K_{ℓ-1} + a_L² Φ(K_{ℓ-1})``, ``K_0 = K_in = x xᵀ/d``;
* ``G[ℓ]``: the gradient kernel ``⟨g_ℓ, g_ℓ'⟩/n`` (``g_ℓ = γ0 n ∂f/∂h_ℓ``),
  ``G_{ℓ-1} = G_ℓ ⊙ (1 + a_L² Ψ(K_{ℓ-1}))``, ``G_L = 𝟏𝟏ᵀ`` (readout ``"h"``) or ``Ψ(K_L)``
  (readout ``"phi"``: ``g_L = v ⊙ φ'(h_L)``);
* ``Theta``: the NTK for the model's learning-rate rule (every trained group at ``η γ0² n``, hidden
  times ``L^{-p}``), normalised so that the first GD step is ``f(1) = f(0) + η Θ Δ(0) + O(η²γ0²)``:
  ``Θ = w_out R + w_hid a_L² Σ_{ℓ=1}^L G_ℓ ⊙ Φ(K_{ℓ-1}) + w_in G_0 ⊙ K_in`` with ``R = K_L``
  (readout h) or ``Φ(K_L)`` (readout phi) and ``w = 0`` for a frozen group;
* ``Theta_decoupled``: the first-step kernel of the decoupled twin (independent backward
  ``W̃(0)``): G replaced by the forward/backward cross kernel, which is ``G_L`` at every ℓ, so
  ``Θ_dec = w_out R + w_hid G_L ⊙ (K_L − K_in) + w_in G_L ⊙ K_in``;
* ``limit``: the L → ∞ values (rate ``c = lim L a_L²``: T for ``branch="sqrt"``, 0 for ``"linear"``),
  ``dK/ds = cΦ(K)``, ``G(s) = G(1) ⊙ exp(∫_s^1 cΨ)``,
  ``Θ_∞ = w_out R(1) + w_hid^∞ ∫_0^1 c G ⊙ Φ ds + w_in G(0) ⊙ K_in`` (adaptive Dormand–Prince 5(4))
  on the depth-time grid ``τ = iT/M`` (M = ``limit_grid``, default L: the finite-L grid).  The
  finite-L recursion is its Euler scheme: the error is O(1/L) (nfd.md: ``L(Θ_L − Θ_∞) → −0.303``
  / ``−0.080`` for the §3.1 tanh example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util.native import core as _core
from .._util.validation import check_inputs, check_int, real
from ..gauss import core_activation
from ..models import DepthMuPResNet


@dataclass(frozen=True, eq=False)
class DepthMuPLimit:
    """The L → ∞ (depth ODE) values of :class:`DepthMuPTheory` on the grid ``tau`` (M+1,), M =
    ``limit_grid`` (default L): ``K``, ``G`` (M+1, N, N), ``Theta``, ``Theta_decoupled`` (N, N);
    ``accepted``/``rejected`` ODE steps at tolerances ``rtol``, ``atol``."""

    tau: np.ndarray
    K: np.ndarray
    G: np.ndarray
    Theta: np.ndarray
    Theta_decoupled: np.ndarray
    accepted: int
    rejected: int
    rtol: float
    atol: float


@dataclass(eq=False)
class DepthMuPTheory:
    """Result of :func:`depthmup_theory` (``rgflow.theory(net, x)`` for a :class:`~rgflow.DepthMuPResNet`).

    Attributes
    ----------
    net, x: the network and the inputs (N, d); ``K_in = x xᵀ/d``.
    tau: (L+1,) depth time ``ℓT/L`` of the rows of K, G, Phi, Psi (ℓ = 0..L).
    K, G: (L+1, N, N) forward and gradient kernels at ℓ = 0..L (``G[0]`` is G_0, ``K[-1]`` is K_L).
    Phi, Psi: (L+1, N, N) ``⟨φφ⟩`` and ``⟨φ'φ'⟩`` at ``K[ℓ]``.
    Theta, Theta_decoupled: (N, N) NTK of the network and first-step kernel of its decoupled twin.
    """

    net: DepthMuPResNet
    x: np.ndarray
    K_in: np.ndarray
    tau: np.ndarray
    K: np.ndarray
    G: np.ndarray
    Phi: np.ndarray
    Psi: np.ndarray
    Theta: np.ndarray
    Theta_decoupled: np.ndarray
    _limit: DepthMuPLimit | None = None
    _no_limit: str = ""

    @property
    def limit(self) -> DepthMuPLimit:
        """The L → ∞ depth-ODE values (ValueError when they were not computed or do not exist)."""
        if self._limit is None:
            raise ValueError(self._no_limit or "the depth limit was not computed (call theory(..., limit=True))")
        return self._limit

    @property
    def first_step_kernel(self) -> np.ndarray:
        """``Theta`` for ``backward="coupled"``, ``Theta_decoupled`` for ``backward="decoupled"``."""
        return self.Theta if self.net.backward == "coupled" else self.Theta_decoupled

    def depth_error(self, name: str = "Theta") -> np.ndarray:
        """``L·(X_L − X_∞)`` for X = ``Theta``, ``Theta_decoupled``, ``K_L`` (``"K"``) or ``G_0`` (``"G"``):
        the coefficient of the O(1/L) Euler error."""
        lim = self.limit
        pairs = {
            "Theta": (self.Theta, lim.Theta),
            "Theta_decoupled": (self.Theta_decoupled, lim.Theta_decoupled),
            "K": (self.K[-1], lim.K[-1]),
            "G": (self.G[0], lim.G[0]),
        }
        if name not in pairs:
            raise ValueError(f"name must be one of {sorted(pairs)}, got {name!r}")
        fin, inf = pairs[name]
        return self.net.depth * (fin - inf)

    def __repr__(self) -> str:
        return f"DepthMuPTheory({self.net!r}, N={self.K.shape[1]}, limit={'yes' if self._limit else 'no'})"


def ntk_weights(net: DepthMuPResNet) -> tuple[float, float, float]:
    """NTK weights (input, hidden, readout) = learning rate / (η γ0² n) of each group (0 if frozen)."""
    unit = net.gamma0**2 * net.width
    w_in, w_hid, w_out = (net.learning_rate(g, 1.0) / unit for g in ("input", "hidden", "readout"))
    return w_in, w_hid, w_out


def depthmup_theory(
    net: DepthMuPResNet,
    x: Any,
    *,
    limit: bool = True,
    limit_grid: int | None = None,
    rtol: float = 1e-11,
    atol: float = 1e-12,
    quad_order: int | None = None,
) -> DepthMuPTheory:
    """Infinite-width K, G, Θ, Θ_dec of a depth-μP ResNet at every depth ℓ = 0..L (nfd.md §2.1),
    and with ``limit=True`` their L → ∞ depth-ODE values (``theory.limit``).

    ``limit_grid``: intervals of the limit's depth-time grid ``τ = iT/limit_grid`` (None: L, the
    grid of the finite-L rows; every grid point is one ODE step at least, so a coarser grid is
    cheaper for large L); ``rtol``/``atol``: Dormand–Prince tolerances of the limit; ``quad_order``: fixed quadrature
    order of the pair expectations (None: the engine's converged default).  The limit of Θ does
    not exist for ``hidden_lr_depth_power < 0`` with a trained hidden group (it grows like
    ``L^{-p}``); ``theory.limit`` then raises a ValueError saying so.
    """
    if not isinstance(net, DepthMuPResNet):
        raise TypeError(f"net must be an rgflow.DepthMuPResNet, got {type(net).__name__}")
    x = check_inputs(x)
    rtol, atol = real("rtol", rtol), real("atol", atol)
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be finite and > 0, got {rtol}")
    if not (np.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be finite and >= 0, got {atol}")
    qo = 0 if quad_order is None else check_int("quad_order", quad_order)
    grid = net.depth if limit_grid is None else check_int("limit_grid", limit_grid)
    w_in, w_hid, w_out = ntk_weights(net)
    p = net.hidden_lr_depth_power
    no_limit = ""
    if w_hid == 0.0 or p > 0:
        w_hid_lim = 0.0
    elif p == 0:
        w_hid_lim = 1.0
    else:
        w_hid_lim = 0.0
        no_limit = (
            f"Theta has no L → ∞ limit for hidden_lr_depth_power={p:g} < 0 with the hidden layers trained "
            "(the hidden term grows like L^{-p}); use p >= 0 or freeze the hidden group"
        )
    rate = net.horizon if net.branch == "sqrt" else 0.0
    out = _core.depthmup_theory(
        core_activation(net.activation),
        x,
        net.depth,
        net.block_variance,
        net.readout == "phi",
        w_in,
        w_hid,
        w_out,
        bool(limit),
        rate,
        w_hid_lim,
        grid,
        rtol,
        atol,
        qo,
    )
    L = net.depth
    tau = net.horizon * np.arange(L + 1) / L
    lim = None
    if limit:
        lim = DepthMuPLimit(
            tau=net.horizon * np.asarray(out["limit_s"], dtype=float),
            K=np.asarray(out["limit_K"]),
            G=np.asarray(out["limit_G"]),
            Theta=np.asarray(out["limit_Theta"])[0],
            Theta_decoupled=np.asarray(out["limit_Theta_decoupled"])[0],
            accepted=int(out["limit_accepted"]),
            rejected=int(out["limit_rejected"]),
            rtol=rtol,
            atol=atol,
        )
        if no_limit:
            lim = None
    return DepthMuPTheory(
        net=net,
        x=x,
        K_in=x @ x.T / x.shape[1],
        tau=tau,
        K=np.asarray(out["K"]),
        G=np.asarray(out["G"]),
        Phi=np.asarray(out["Phi"]),
        Psi=np.asarray(out["Psi"]),
        Theta=np.asarray(out["Theta"])[0],
        Theta_decoupled=np.asarray(out["Theta_decoupled"])[0],
        _limit=lim,
        _no_limit=no_limit,
    )
