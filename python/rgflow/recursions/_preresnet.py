"""Pre-activation ResNets at initialisation in the depth scaling ``t = ε²ℓ`` (spec ``resnets.md``,
paper (a): Kawase & Ota, *Collective kernel EFT for pre-activation ResNets*).

Model: the rows (neurons) of ``φ⁰ ∈ R^{n×N}`` are i.i.d. ``N(0, K⁰)``; for ``ℓ = 0 … L−1``::

    φ^{ℓ+1} = φ^ℓ + ε W^ℓ σ(φ^ℓ),      W^ℓ_ij ~ N(0, C_W/n),  no bias, all widths n.

``K⁰`` is given directly (``kernel=``) or from inputs ``x`` (N, n0) through a random first
linear layer, ``K⁰ = C_b + C_W x·xᵀ/n0`` (``C_b`` enters only there).  Continuous time is
``t = ε²ℓ``; total ``T = ε²L`` (``ε = sqrt(T/L)``).

Quantities (spec a.2), with ``G = φᵀφ/n`` the empirical kernel:

* ``K0`` — infinite-width kernel, ``dK0/dt = C_W⟨σσ⟩_{K0}`` (the discrete recursion
  ``K0' = K0 + ε²C_W⟨σσ⟩`` is the exact mean-field recursion for any ε).
* ``V4[ℓ,a,b,c,d] = n·Cov(G_ab, G_cd)`` (Wishart at ℓ = 0), G-only closure: transport by
  ``χ = C_W ∂⟨σσ⟩/∂K`` on each pair plus the source ``Σ(K0, C_W⟨σσ⟩)``.
* ``K1 = n(E[G] − K0)``: ``closure="g_only"`` is the spec's ``K1,EFT``
  (``dK1/dt = χ[K1] + (C_W/2) Hess⟨σσ⟩ : V4``); ``closure="connected"`` contracts the Hessian
  with ``V4 − Wishart(K0)`` instead (so the source vanishes at t = 0, as it must).
  **Both are closures, not exact** — see ``tests/test_preresnet.py`` for the gaps measured
  against sampled networks.
* ``closure="sigma"``: the sigma-kernel ("G+Σ") closure (``docs/sigma_kernel.md``): the empirical
  sigma-kernel ``Σ̂ = σ(φ)ᵀσ(φ)/n`` and its time integral are carried as state; it changes V4 as well
  as K1 and is exact for linear σ and at t = 0.
* ``E2 = ⟨σσ⟩_{K0}`` (for the source diagnostic ``U1 = n(E[Σ̂] − E2)``, ``dK1/dt = C_W U1`` exactly).
* ``U1`` — the closure's model of that source (the spec's ``U1_model`` for ``g_only``);
  ``V_GS[ℓ,a,b,c,d] = n·Cov(G_ab, Σ̂_cd)`` and ``V_SS = n·Cov(Σ̂, Σ̂)`` as the closure predicts them
  (``g_only``/``connected``: ``δΣ̂ = J δG`` with ``J = ∂⟨σσ⟩/∂K``).

``method="ode"`` integrates the continuous-depth ODEs with adaptive Dormand–Prince 5(4)
(per-component local error ``≤ atol + rtol·|y|``); ``method="discrete"`` runs the block-by-block
recursion.  Expectations use the exact Gaussian engine (``quad_order=None``: converged
default rules; ``quad_order=32`` is *not* the paper's rule: the engine splits each line into
half-range pieces and is converged there too).  The published figures used forward Euler with an
under-resolved plain 32-point Gauss–Hermite rule (spec a.3b); :func:`preresnet_theory_gh`
reproduces that scheme, for comparison.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .._util.limits import check_memory, max_evaluations
from .._util.native import core as _core
from .._util.validation import check_int, check_quad_order, real, recorded_layers, warn_unusual
from ..gauss import core_activation
from ..models import PreResNet


class PreResTheory:
    """Result of :func:`preresnet_theory`: ``layers`` (M,), ``t`` (M,), ``K`` (the infinite-width
    kernel K0 of the spec), ``K1``, ``E2``, ``U1`` (M, N, N), ``V`` (the spec's V4 = n·Cov(G, G), the
    same quantity as the MLP's V), ``V_GS``, ``V_SS`` (M, N, N, N, N) (``U1``, ``V_GS``, ``V_SS`` are
    None for :func:`preresnet_theory_gh`); ``accepted``/``rejected`` ODE steps.

    ``K0`` and ``V4`` are the rgflow 0.1 names of ``K`` and ``V`` (deprecated aliases)."""

    def __init__(self, net: PreResNet, k_init: np.ndarray, out: dict[str, Any], method: str, closure: str) -> None:
        self.net, self.K_init, self.method, self.closure = net, k_init, method, closure
        self.layers = np.asarray(out["layers"], dtype=int)
        self.t = np.asarray(out["t"], dtype=float)
        self.K = np.asarray(out["K0"])
        self.K1 = np.asarray(out["K1"])
        self.E2 = np.asarray(out["E2"])
        self.V = np.asarray(out["V4"])
        # U1, V_GS, V_SS: None for the published scheme (preresnet_theory_gh), which has no Σ̂ state
        self.U1 = None if out.get("U1") is None else np.asarray(out["U1"])
        self.V_GS = None if out.get("V_GS") is None else np.asarray(out["V_GS"])
        self.V_SS = None if out.get("V_SS") is None else np.asarray(out["V_SS"])
        self.accepted = int(out["accepted"])
        self.rejected = int(out["rejected"])

    @property
    def K0(self) -> np.ndarray:
        """Deprecated alias of :attr:`K` (rgflow 0.1)."""
        warnings.warn("PreResTheory.K0 is deprecated; use .K", DeprecationWarning, stacklevel=2)
        return self.K

    @property
    def V4(self) -> np.ndarray:
        """Deprecated alias of :attr:`V` (rgflow 0.1)."""
        warnings.warn("PreResTheory.V4 is deprecated; use .V", DeprecationWarning, stacklevel=2)
        return self.V

    def metric(self, layer: int | None = None) -> np.ndarray:
        """``E[G] ≈ K + K1/n``: at the recorded ``layer`` (N, N; one of :attr:`layers`), or at every
        recorded layer (M, N, N) when ``layer`` is None."""
        if layer is None:
            return self.K + self.K1 / self.net.width
        hit = np.flatnonzero(self.layers == layer)
        if hit.size == 0:
            raise ValueError(f"layer {layer} was not recorded; recorded layers: {self.layers.tolist()}")
        i = int(hit[0])
        return self.K[i] + self.K1[i] / self.net.width

    def __repr__(self) -> str:
        return f"PreResTheory({self.net!r}, method={self.method!r}, closure={self.closure!r}, M={len(self.t)})"


def preresnet_theory(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    method: str = "ode",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    closure: str = "g_only",
    every: int = 1,
    quad_order: int | None = None,
) -> PreResTheory:
    """K0, V4, K1 (and E2 = ⟨σσ⟩) at layers ``0, every, 2·every, …, L`` (times ``t = ε²ℓ``).

    ``method="ode"``: adaptive Dormand–Prince 5(4) with tolerances ``rtol``/``atol`` (hits every
    recorded time exactly; ``every`` > 1 lets it take long steps).  ``method="discrete"``: the
    block-by-block recursion.  ``closure``: ``"g_only"`` (the spec's K1,EFT), ``"connected"``,
    or ``"sigma"`` (sigma-kernel closure; needs four-point expectations at every step, so it is
    ~10-100× slower).  Raises ValueError on bad input and on a failed integration (step-size
    underflow, non-finite state, kernel leaving the PSD cone).
    """

    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    if method not in ("ode", "discrete"):
        raise ValueError(f"method must be 'ode' or 'discrete', got {method!r}")
    if closure not in ("g_only", "connected", "sigma"):
        raise ValueError(f"closure must be 'g_only', 'connected' or 'sigma', got {closure!r}")
    recorded_layers(net.depth, every)
    rtol, atol = real("rtol", rtol, finite=True), real("atol", atol, finite=True)
    if rtol <= 0 or atol < 0:
        raise ValueError(f"the ODE tolerances need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")
    if method == "ode" and rtol > 1e-2:
        warn_unusual("rtol", rtol, "a relative tolerance above 1e-2 gives inaccurate kernels; the default is 1e-8")
    quad_order = check_quad_order(quad_order)
    k0 = net.input_kernel(x, kernel)
    n = k0.shape[0]
    records = len(recorded_layers(net.depth, every))
    # V4, V_GS, V_SS at every recorded layer, plus the solver's working set: the (N², N²) Jacobian
    # and Hessian terms, the state and the 7 Dormand–Prince stages (≈ 12 N⁴), or 4 N⁴ tables per
    # step of the sigma closure.
    check_memory(
        8.0 * (3 * records + 12) * float(n) ** 4,
        f"rgflow.theory (PreResNet): the four-point tensors V4, V_GS, V_SS ({records} recorded layers of "
        f"N = {n} inputs, each ({records}, {n}, {n}, {n}, {n})) and the solver's working set",
        f"fewer inputs (memory grows as N⁴), or fewer recorded layers (every = {every} now; raise it)",
    )
    out = _core.preresnet_theory(
        core_activation(net.activation),
        k0,
        net.C_W,
        net.eps,
        net.depth,
        int(every),
        method,
        rtol,
        atol,
        closure,
        0 if quad_order is None else int(quad_order),
        max_evals=max_evaluations(),
    )
    return PreResTheory(net, k0, dict(out), method, closure)


def _gh_points(
    q1: np.ndarray, q2: np.ndarray, c: np.ndarray, rule: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``φ₁ = √q1·x, φ₂ = √q2(ρx + √(1−ρ²)y)`` (shape ``q1.shape + (order²,)``) and weights
    of the published code's rule (spec a.3b): a plain tensor-product Gauss–Hermite rule
    (``rule`` = hermgauss nodes and weights), ``ρ = c/√(q1q2)`` clipped to ±(1 − 1e-10)."""
    t, wt = rule
    x = math.sqrt(2.0) * np.repeat(t, t.size)
    y = math.sqrt(2.0) * np.tile(t, t.size)
    rho = np.clip(c / np.sqrt(q1 * q2), -1 + 1e-10, 1 - 1e-10)[..., None]
    p1 = np.sqrt(q1)[..., None] * x
    p2 = np.sqrt(q2)[..., None] * (rho * x + np.sqrt(1 - rho * rho) * y)
    return p1, p2, np.outer(wt, wt).ravel() / math.pi


def preresnet_theory_gh(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    gh_order: int = 32,
    every: int = 1,
    closure: str = "g_only",
    fd_step: float = 5e-4,
) -> PreResTheory:
    """K0, V4, K1 as the paper's published code computes them (spec a.2–a.3b), for comparison
    with the converged :func:`preresnet_theory`.

    Forward Euler with one step ``ε²`` per block; pair expectations ``⟨σσ⟩, ⟨σ'σ'⟩, ⟨σ''σ⟩`` by a
    plain ``gh_order``-point tensor-product Gauss–Hermite rule (``⟨σ²⟩`` on the diagonal by the
    1-D rule); the Hessian of ``⟨σσ⟩`` in ``(K_aa, K_bb, K_ab)`` by central differences of step
    ``fd_step``.  At the default 32 points this rule is **not converged** for tanh at the variances
    of the paper setup (spec a.3b: ``E[σ'²]`` −6 % at q = 4.37): it reproduces the published
    numbers, K0[0,0](T=2) = 4.3730, V4[0000] = 14.447 / 22.663 / 32.313 / 42.878 at t = 0.5 … 2,
    K1[0,0](T=2) = −0.901, against the converged 4.3680, 47.78, −1.03.  numpy only; cost
    O(L·N²·gh_order²).
    """
    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    gh_order = check_int("gh_order", gh_order, minimum=2)
    if closure not in ("g_only", "connected"):
        raise ValueError(f"closure must be 'g_only' or 'connected', got {closure!r}")
    fd_step = float(fd_step)
    if not (math.isfinite(fd_step) and fd_step > 0):
        raise ValueError(f"fd_step must be finite and > 0, got {fd_step}")
    layers = recorded_layers(net.depth, every)
    rec = {ell: i for i, ell in enumerate(layers)}
    K = net.input_kernel(x, kernel).copy()
    N = K.shape[0]
    N2, act, cw, e2 = N * N, net.activation, net.C_W, net.eps**2
    a_idx, b_idx = np.nonzero(np.ones((N, N), dtype=bool))  # ordered pairs, row-major
    V = (np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)).reshape(N2, N2)
    K1 = np.zeros((N, N))
    out: dict[str, Any] = {k: [] for k in ("K0", "K1", "E2", "V4")}
    h = fd_step
    # Hessian stencil in (q1, q2, c): the 9 points of the diagonal and the 4x3 of the mixed terms
    steps = [(0, 0, 0), (h, 0, 0), (-h, 0, 0), (0, h, 0), (0, -h, 0), (0, 0, h), (0, 0, -h)]
    mixed: dict[tuple[int, int], list[tuple[float, ...]]] = {(0, 1): [], (0, 2): [], (1, 2): []}
    for (i, j), pts in mixed.items():
        for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            off = [0.0, 0.0, 0.0]
            off[i], off[j] = si * h, sj * h
            pts.append(tuple(off))
    stencil = steps + [p for pts in mixed.values() for p in pts]
    iu, ju = np.triu_indices(N, 1)  # unordered off-diagonal pairs a < b (Hessian)
    ao, bo = a_idx[a_idx != b_idx], b_idx[a_idx != b_idx]  # ordered off-diagonal pairs
    ar = np.arange(N)
    rule = np.polynomial.hermite.hermgauss(gh_order)
    t1, w1 = math.sqrt(2.0) * rule[0], rule[1] / math.sqrt(math.pi)
    d = np.array(stencil)
    for ell in range(net.depth + 1):
        q = np.diag(K).copy()
        # ordered pairs (a, b), φ_a on the first axis of the rule (as the published code); the
        # diagonal by the 1-D rule
        E2, Epp, E2s = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
        if N > 1:
            p1, p2, w = _gh_points(q[ao], q[bo], K[ao, bo], rule)
            s1, s2 = act.numpy(p1), act.numpy(p2)
            E2[ao, bo] = (s1 * s2) @ w
            Epp[ao, bo] = (act.numpy(p1, 1) * act.numpy(p2, 1)) @ w
            E2s[ao, bo] = (act.numpy(p1, 2) * s2) @ w
        z = np.sqrt(q)[:, None] * t1
        sd = act.numpy(z)
        E2[ar, ar] = (sd * sd) @ w1
        Epp[ar, ar] = act.numpy(z, 1) ** 2 @ w1
        E2s[ar, ar] = (act.numpy(z, 2) * sd) @ w1
        if ell in rec:
            out["K0"].append(K.copy())
            out["K1"].append(K1.copy())
            out["E2"].append(E2.copy())
            out["V4"].append(V.reshape(N, N, N, N).copy())
        if ell == net.depth:
            break
        # χ[A]_ab = (C_W/2)[(A_ab + A_ba)⟨σ'σ'⟩_ab + A_aa⟨σ''σ⟩_ab + A_bb⟨σ''σ⟩_ba]  (N², N²)
        chi = np.zeros((N2, N2))
        ab = np.arange(N2)
        np.add.at(chi, (ab, a_idx * N + b_idx), 0.5 * cw * Epp.ravel())
        np.add.at(chi, (ab, b_idx * N + a_idx), 0.5 * cw * Epp.ravel())
        np.add.at(chi, (ab, a_idx * N + a_idx), 0.5 * cw * E2s.ravel())
        np.add.at(chi, (ab, b_idx * N + b_idx), 0.5 * cw * E2s.T.ravel())
        # Hessian of ⟨σσ⟩_ab in (K_aa, K_bb, K_ab) by central differences, all stencil points at once
        p1, p2, w = _gh_points(q[iu][None] + d[:, :1], q[ju][None] + d[:, 1:2], K[iu, ju][None] + d[:, 2:], rule)
        fd = (act.numpy(p1) * act.numpy(p2)) @ w  # (19, pairs)
        f0 = fd[0]
        H = np.zeros((iu.size, 3, 3))
        for i in range(3):
            H[:, i, i] = (fd[1 + 2 * i] - 2 * f0 + fd[2 + 2 * i]) / h**2
        for k, (i, j) in enumerate(mixed):
            pp, pm, mp, mm = fd[7 + 4 * k : 11 + 4 * k]
            H[:, i, j] = H[:, j, i] = (pp - pm - mp + mm) / (4 * h * h)
        sq = act.numpy(np.sqrt(q[None] + np.array([0.0, h, -h])[:, None])[..., None] * t1)
        fq = (sq * sq) @ w1
        hdiag = (fq[1] - 2 * fq[0] + fq[2]) / h**2
        Wv = V.reshape(N, N, N, N)
        if closure == "connected":
            Wv = Wv - np.einsum("ac,bd->abcd", K, K) - np.einsum("ad,bc->abcd", K, K)
        src = np.zeros((N, N))
        src[ar, ar] = hdiag * Wv[ar, ar, ar, ar]
        a, b = iu, ju
        src[a, b] = src[b, a] = (
            H[:, 0, 0] * Wv[a, a, a, a]
            + H[:, 1, 1] * Wv[b, b, b, b]
            + H[:, 2, 2] * Wv[a, b, a, b]
            + 2 * H[:, 0, 1] * Wv[a, a, b, b]
            + 2 * H[:, 0, 2] * Wv[a, a, a, b]
            + 2 * H[:, 1, 2] * Wv[b, b, a, b]
        )
        Q = cw * E2
        sig = (
            np.einsum("ac,bd->abcd", K, Q)
            + np.einsum("ad,bc->abcd", K, Q)
            + np.einsum("bc,ad->abcd", K, Q)
            + np.einsum("bd,ac->abcd", K, Q)
        ).reshape(N2, N2)
        dK1 = (chi @ K1.ravel()).reshape(N, N) + 0.5 * cw * src
        V = V + e2 * (chi @ V + V @ chi.T + sig)
        K1 = K1 + e2 * dK1
        K = K + e2 * Q
    return PreResTheory(
        net,
        net.input_kernel(x, kernel),
        {
            "layers": layers,
            "t": net.eps**2 * np.array(layers, dtype=float),
            **{k: np.array(v) for k, v in out.items()},
            "accepted": net.depth,
            "rejected": 0,
        },
        f"euler-gh{gh_order}",
        closure,
    )
