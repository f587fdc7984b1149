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
default rules; the published figures used an under-resolved 32-point rule, spec a.3b).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .activations import Activation, as_activation
from .network import check_inputs, check_int


class PreResNet:
    """A pre-activation ResNet ``φ' = φ + ε W σ(φ)`` with L blocks of width n.

    Parameters
    ----------
    activation: name or :class:`~rgflow.Activation`.
    depth: number of residual blocks L (>= 1).
    width: width n of every layer.
    eps: branch scale ε > 0 (``t = ε²ℓ``; ``eps = sqrt(T/L)``).
    C_W: weight variance (``Var W = C_W/n``), > 0.
    C_b: bias variance of the input layer only (when the input kernel comes from ``x``).
    """

    def __init__(
        self,
        activation: str | Activation = "tanh",
        depth: int = 100,
        width: int = 64,
        eps: float = 0.05,
        C_W: float = 1.0,
        C_b: float = 0.0,
    ) -> None:
        self.activation = as_activation(activation)
        depth = check_int("depth", depth, hint=" (the number of residual blocks L)")
        width = check_int("width", width)
        eps = float(eps)
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be finite and > 0 (use eps = sqrt(T/L)), got {eps}")
        C_W, C_b = float(C_W), float(C_b)
        if not (math.isfinite(C_W) and C_W > 0):
            raise ValueError(f"C_W must be finite and > 0, got {C_W}")
        if not (math.isfinite(C_b) and C_b >= 0):
            raise ValueError(f"C_b must be finite and >= 0, got {C_b}")
        self.depth, self.width, self.eps, self.C_W, self.C_b = int(depth), int(width), eps, C_W, C_b

    @property
    def L(self) -> int:
        return self.depth

    @property
    def T(self) -> float:
        """Total time ``ε²L``."""
        return self.eps**2 * self.depth

    def input_kernel(self, x: Any = None, kernel: Any = None) -> np.ndarray:
        """``K⁰``: ``kernel`` as given (symmetric PSD, finite), or ``C_b + C_W x·xᵀ/n0``."""
        if (x is None) == (kernel is None):
            raise ValueError("give exactly one of x (inputs, shape (N, n0)) or kernel (K0 at t = 0, shape (N, N))")
        if kernel is not None:
            k = np.asarray(kernel, dtype=float)
            if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
                raise ValueError(f"kernel must be a square (N, N) array, got shape {k.shape}")
            if not np.all(np.isfinite(k)):
                raise ValueError("kernel contains NaN or inf; pass a finite PSD matrix")
            return np.ascontiguousarray(k)
        xs = check_inputs(x)
        return self.C_b + self.C_W * (xs @ xs.T) / xs.shape[1]

    def __repr__(self) -> str:
        return (
            f"PreResNet({self.activation.name!r}, depth={self.depth}, width={self.width}, eps={self.eps}, "
            f"C_W={self.C_W}, C_b={self.C_b})"
        )


def _layers(depth: int, every: int) -> list[int]:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    return [0] + [ell for ell in range(1, depth + 1) if ell % every == 0 or ell == depth]


class PreResTheory:
    """Result of :func:`preresnet_theory`: ``layers`` (M,), ``t`` (M,), ``K0``, ``K1``, ``E2``, ``U1`` (M, N, N),
    ``V4``, ``V_GS``, ``V_SS`` (M, N, N, N, N); ``accepted``/``rejected`` ODE steps."""

    def __init__(self, net: PreResNet, k_init: np.ndarray, out: dict[str, Any], method: str, closure: str) -> None:
        self.net, self.K_init, self.method, self.closure = net, k_init, method, closure
        self.layers = np.asarray(out["layers"], dtype=int)
        self.t = np.asarray(out["t"], dtype=float)
        self.K0 = np.asarray(out["K0"])
        self.K1 = np.asarray(out["K1"])
        self.E2 = np.asarray(out["E2"])
        self.V4 = np.asarray(out["V4"])
        self.U1 = np.asarray(out["U1"])
        self.V_GS = np.asarray(out["V_GS"])
        self.V_SS = np.asarray(out["V_SS"])
        self.accepted = int(out["accepted"])
        self.rejected = int(out["rejected"])

    def metric(self) -> np.ndarray:
        """``E[G] ≈ K0 + K1/n``."""
        return self.K0 + self.K1 / self.net.width

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
    from . import _core
    from .expectations import _core_activation

    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    if method not in ("ode", "discrete"):
        raise ValueError(f"method must be 'ode' or 'discrete', got {method!r}")
    if closure not in ("g_only", "connected", "sigma"):
        raise ValueError(f"closure must be 'g_only', 'connected' or 'sigma', got {closure!r}")
    _layers(net.depth, every)
    k0 = net.input_kernel(x, kernel)
    out = _core.preresnet_theory(
        _core_activation(net.activation),
        k0,
        net.C_W,
        net.eps,
        net.depth,
        int(every),
        method,
        float(rtol),
        float(atol),
        closure,
        0 if quad_order is None else int(quad_order),
    )
    return PreResTheory(net, k0, dict(out), method, closure)


class PreResEnsemble:
    """Result of :func:`sample_preresnet`: ``layers``, ``t``; estimates ``G`` (M, N, N) = mean
    empirical kernel, ``V4`` (M, N, N, N, N) = n·Cov(G), ``Sigma`` (M, N, N) = mean ``Σ̂ = σ(φ)ᵀσ(φ)/n``,
    ``V_GS[ℓ,a,b,c,d] = n·Cov(G_ab, Σ̂_cd)``, ``V_SS = n·Cov(Σ̂, Σ̂)``, each with a batch-means standard
    error ``*_err``."""

    def __init__(self, **kw: Any) -> None:
        self.networks: int = kw.pop("networks")
        self.width: int = kw.pop("width")
        for k, v in kw.items():
            setattr(self, k, v)

    def K1(self, theory: PreResTheory) -> tuple[np.ndarray, np.ndarray]:
        """``K1_mic = n(Ḡ − K0)`` and its standard error (K0 must be accurate to ≪ 1/n)."""
        return self.width * (self.G - theory.K0), self.width * self.G_err

    def U1(self, theory: PreResTheory) -> tuple[np.ndarray, np.ndarray]:
        """``U1_exact = n(mean Σ̂ − ⟨σσ⟩_{K0})`` and its standard error."""
        return self.width * (self.Sigma - theory.E2), self.width * self.Sigma_err


def _sqrtm_psd(q: np.ndarray) -> np.ndarray:
    """R with R Rᵀ = q for a (batch of) symmetric PSD matrices."""
    w, u = np.linalg.eigh(q)
    return u * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def sample_preresnet(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    networks: int = 10_000,
    seed: int = 0,
    groups: int = 32,
    every: int = 1,
    batch: int = 1000,
    sampler: str = "block",
) -> PreResEnsemble:
    """Sample ``networks`` independent pre-activation ResNets (float64, numpy) and estimate Ḡ,
    n·Cov(G) and mean Σ̂ at layers ``0, every, …, L`` with batch-means errors over ``groups`` groups.

    ``sampler="weights"`` draws every ``W^ℓ`` (n×n) explicitly; ``sampler="block"`` (default, same
    law, ~n/N times cheaper) uses the exact block law of spec a.2: given φ, the rows of ``Wσ(φ)``
    are i.i.d. ``N(0, C_W Σ̂)``.
    """
    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    if sampler not in ("block", "weights"):
        raise ValueError(f"sampler must be 'block' or 'weights', got {sampler!r}")
    if groups < 2 or networks < 2 * groups:
        raise ValueError(f"need groups >= 2 and networks >= 2*groups, got networks={networks}, groups={groups}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    layers = _layers(net.depth, every)
    rec = {ell: i for i, ell in enumerate(layers)}
    k0 = net.input_kernel(x, kernel)
    if np.linalg.eigvalsh((k0 + k0.T) / 2).min() < -1e-9 * max(1.0, np.abs(k0).max()):
        raise ValueError("the input kernel is not positive semi-definite")
    r0 = _sqrtm_psd((k0 + k0.T) / 2)
    N, n, M = k0.shape[0], net.width, len(layers)
    act = net.activation
    rng = np.random.default_rng(seed)
    per = networks // groups
    sg = np.zeros((groups, M, N, N))
    sgg = np.zeros((groups, M, N * N, N * N))
    ss = np.zeros((groups, M, N, N))
    sgs = np.zeros((groups, M, N * N, N * N))
    sss = np.zeros((groups, M, N * N, N * N))
    eps, cw = net.eps, net.C_W
    for g in range(groups):
        done = 0
        while done < per:
            b = min(batch, per - done)
            phi = rng.standard_normal((b, n, N)) @ r0.T
            for ell in range(net.depth + 1):
                s = act.numpy(phi)
                sig = np.einsum("bia,bic->bac", s, s) / n
                if ell in rec:
                    i = rec[ell]
                    G = np.einsum("bia,bic->bac", phi, phi) / n
                    Gf = G.reshape(b, N * N)
                    Sf = sig.reshape(b, N * N)
                    sg[g, i] += G.sum(0)
                    sgg[g, i] += Gf.T @ Gf
                    ss[g, i] += sig.sum(0)
                    sgs[g, i] += Gf.T @ Sf
                    sss[g, i] += Sf.T @ Sf
                if ell == net.depth:
                    break
                if sampler == "block":
                    R = _sqrtm_psd(cw * sig)
                    phi = phi + eps * (rng.standard_normal((b, n, N)) @ np.swapaxes(R, 1, 2))
                else:
                    W = rng.standard_normal((b, n, n)) * math.sqrt(cw / n)
                    phi = phi + eps * (W @ s)
            done += b

    def est(
        sg_: np.ndarray, sgg_: np.ndarray, ss_: np.ndarray, sgs_: np.ndarray, sss_: np.ndarray, m: int
    ) -> tuple[np.ndarray, ...]:
        def ncov(sxy: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
            fx, fy = mx.reshape(*mx.shape[:-2], N * N), my.reshape(*my.shape[:-2], N * N)
            cov = (sxy / m - fx[..., :, None] * fy[..., None, :]) * (m / (m - 1))
            return n * cov.reshape(*cov.shape[:-2], N, N, N, N)

        mg, ms = sg_ / m, ss_ / m
        return mg, ncov(sgg_, mg, mg), ms, ncov(sgs_, mg, ms), ncov(sss_, ms, ms)

    Gg, Vg, Sg, GSg, SSg = est(sg, sgg, ss, sgs, sss, per)
    G, V, S, GS, SS = est(sg.sum(0), sgg.sum(0), ss.sum(0), sgs.sum(0), sss.sum(0), per * groups)

    def se(a: np.ndarray) -> np.ndarray:
        return a.std(axis=0, ddof=1) / math.sqrt(groups)

    return PreResEnsemble(
        networks=per * groups,
        width=n,
        layers=np.array(layers),
        t=eps**2 * np.array(layers, dtype=float),
        G=G,
        G_err=se(Gg),
        V4=V,
        V4_err=se(Vg),
        Sigma=S,
        Sigma_err=se(Sg),
        V_GS=GS,
        V_GS_err=se(GSg),
        V_SS=SS,
        V_SS_err=se(SSg),
    )
