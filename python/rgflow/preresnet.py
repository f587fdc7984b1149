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
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .activations import Activation, as_activation
from .network import check_inputs, check_int


def _real(name: str, v: Any) -> float:
    """A real number (not bool) as float; TypeError naming ``name`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


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
        eps, C_W, C_b = (_real(k, v) for k, v in (("eps", eps), ("C_W", C_W), ("C_b", C_b)))
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be finite and > 0 (use eps = sqrt(T/L)), got {eps}")
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
            scale = max(1.0, float(np.abs(k).max()))
            if np.abs(k - k.T).max() > 1e-12 * scale:
                i, j = np.unravel_index(int(np.argmax(np.abs(k - k.T))), k.shape)
                raise ValueError(
                    f"kernel must be symmetric: kernel[{i},{j}] = {k[i, j]} but kernel[{j},{i}] = {k[j, i]}"
                )
            wmin = float(np.linalg.eigvalsh(k).min())
            if wmin < -1e-9 * scale:
                raise ValueError(
                    f"kernel is not positive semi-definite (smallest eigenvalue {wmin:.3g}); "
                    "pass a covariance matrix, e.g. a Gram matrix x·xᵀ/n0"
                )
            return np.ascontiguousarray((k + k.T) / 2)
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
    ``V4``, ``V_GS``, ``V_SS`` (M, N, N, N, N) (``U1``, ``V_GS``, ``V_SS`` are None for
    :func:`preresnet_theory_gh`); ``accepted``/``rejected`` ODE steps."""

    def __init__(self, net: PreResNet, k_init: np.ndarray, out: dict[str, Any], method: str, closure: str) -> None:
        self.net, self.K_init, self.method, self.closure = net, k_init, method, closure
        self.layers = np.asarray(out["layers"], dtype=int)
        self.t = np.asarray(out["t"], dtype=float)
        self.K0 = np.asarray(out["K0"])
        self.K1 = np.asarray(out["K1"])
        self.E2 = np.asarray(out["E2"])
        self.V4 = np.asarray(out["V4"])
        # U1, V_GS, V_SS: None for the published scheme (preresnet_theory_gh), which has no Σ̂ state
        self.U1 = None if out.get("U1") is None else np.asarray(out["U1"])
        self.V_GS = None if out.get("V_GS") is None else np.asarray(out["V_GS"])
        self.V_SS = None if out.get("V_SS") is None else np.asarray(out["V_SS"])
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
    layers = _layers(net.depth, every)
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
    mixed = {(0, 1): [], (0, 2): [], (1, 2): []}
    for (i, j), pts in mixed.items():
        for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            d = [0.0, 0.0, 0.0]
            d[i], d[j] = si * h, sj * h
            pts.append(tuple(d))
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


_DTYPES = {"float64": np.float64, "float32": np.float32}
BACKENDS = ("numpy", "jax")
SAMPLERS = ("block", "weights")


def _sqrtm_psd(xp: Any, q: Any) -> Any:
    """The principal square root R = U √w Uᵀ (symmetric, R R = q) of a batch of symmetric PSD
    matrices; negative rounding-level eigenvalues are clipped to 0.  Unique, so the numpy and
    JAX backends turn the same noise into the same step."""
    w, u = xp.linalg.eigh(q)
    return (u * xp.sqrt(xp.clip(w, 0.0, None))[..., None, :]) @ xp.swapaxes(u, -1, -2)


def _factor(xp: Any, q: Any) -> Any:
    """F with F Fᵀ = q for a batch of symmetric PSD matrices: the Cholesky factor when every
    matrix of the batch is positive definite, else (a singular Σ̂: repeated inputs, n < N) the
    principal square root.  Both are unique, so the numpy and JAX backends agree."""
    if xp is np:
        try:
            return np.linalg.cholesky(q)
        except np.linalg.LinAlgError:
            return _sqrtm_psd(np, q)
    import jax

    L = xp.linalg.cholesky(q)
    return jax.lax.cond(xp.all(xp.isfinite(L)), lambda: L, lambda: _sqrtm_psd(xp, q))


def _block_step(xp: Any, phi: Any, s: Any, Z: Any, eps: float, C_W: float) -> Any:
    """One block of the exact block law (spec a.2): ``φ' = φ + ε Z Fᵀ`` with ``F Fᵀ = C_W Σ̂``,
    ``Σ̂ = σ(φ)ᵀσ(φ)/n``; ``Z`` (B, n, N) standard normal.  Same law as ``φ + ε W σ(φ)``."""
    n = phi.shape[-2]
    sig = (xp.swapaxes(s, -1, -2) @ s) * (C_W / n)
    return phi + eps * (Z @ xp.swapaxes(_factor(xp, sig), -1, -2))


def _weights_step(xp: Any, phi: Any, s: Any, W: Any, eps: float) -> Any:
    """One block with explicit weights ``W`` (B, n, n), already scaled to variance C_W/n."""
    return phi + eps * (W @ s)


def _pre_sums(xp: Any, phi: Any, s: Any, w: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """float64 sums over a batch (weights ``w`` (B,) or None) of ``G = φᵀφ/n`` (N, N),
    ``vec G vec Gᵀ`` (N², N²), ``Σ̂ = σᵀσ/n`` (N, N), ``vec G vec Σ̂ᵀ`` and ``vec Σ̂ vec Σ̂ᵀ``."""
    B, n, N = phi.shape
    G = ((xp.swapaxes(phi, -1, -2) @ phi) / n).astype(xp.float64)
    S = ((xp.swapaxes(s, -1, -2) @ s) / n).astype(xp.float64)
    Gf = G.reshape(B, N * N)
    Sf = S.reshape(B, N * N)
    if w is not None:
        G, S, Gw, Sw = G * w[:, None, None], S * w[:, None, None], Gf * w[:, None], Sf * w[:, None]
    else:
        Gw, Sw = Gf, Sf
    return G.sum(0), Gw.T @ Gf, S.sum(0), Gw.T @ Sf, Sw.T @ Sf


def _check_sampling_args(
    networks: Any, groups: Any, batch: Any, seed: Any, backend: Any, dtype: Any, devices: Any
) -> None:
    for name, v, lo in (("networks", networks, 2), ("groups", groups, 2), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if networks < 2 * groups:
        raise ValueError(
            f"need networks >= 2*groups for batch-means errors, got networks={networks}, groups={groups}; "
            f"use groups <= {networks // 2}"
        )
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (automatic), got {batch!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' (recommended) or 'float32', got {dtype!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")


def sample_preresnet(
    net: PreResNet,
    x: Any = None,
    *,
    kernel: Any = None,
    networks: int = 10_000,
    seed: int = 0,
    groups: int = 32,
    every: int = 1,
    batch: int | None = None,
    sampler: str = "block",
    backend: str = "numpy",
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    progress: bool = False,
) -> PreResEnsemble:
    """Sample ``networks`` independent pre-activation ResNets and estimate Ḡ, n·Cov(G) and mean Σ̂
    at layers ``0, every, …, L`` with batch-means errors over ``groups`` groups of
    ``networks // groups`` networks each (the remainder is not sampled).

    ``sampler="weights"`` draws every ``W^ℓ`` (n×n) explicitly; ``sampler="block"`` (default, same
    law, ~n/N times cheaper) uses the exact block law of spec a.2: given φ, the rows of ``Wσ(φ)``
    are i.i.d. ``N(0, C_W Σ̂)``.

    ``backend="numpy"`` (batch k of the run uses ``default_rng(SeedSequence(seed, spawn_key=(k,)))``;
    default batch 1000) or ``"jax"`` (``pip install rgflow[jax]``: jit, ``lax.scan`` over batches
    and blocks, network i drawn from ``fold_in(key(seed), i)`` whatever the batch size or device
    count, batches sharded over ``devices``, default all).  ``dtype="float32"`` runs the forward
    pass in single precision; every sum is accumulated in float64 either way.  ``progress=True``
    shows a progress line on stderr (after 2 s, updated per group).
    """
    if not isinstance(net, PreResNet):
        raise TypeError(f"net must be an rgflow.preresnet.PreResNet, got {type(net).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be 'block' or 'weights', got {sampler!r}")
    _check_sampling_args(networks, groups, batch, seed, backend, dtype, devices)
    networks, groups, seed = int(networks), int(groups), int(seed)
    if dtype == "float32":
        warnings.warn(
            "dtype='float32': the forward pass runs in single precision (sums are still float64); "
            "V4 = n·Cov(G) and K1 = n(Ḡ − K0) are 1/n effects, so use float64 for quantitative checks",
            UserWarning,
            stacklevel=2,
        )
    layers = _layers(net.depth, every)
    k0 = net.input_kernel(x, kernel)
    r0 = _sqrtm_psd(np, (k0 + k0.T) / 2)
    N, n, M = k0.shape[0], net.width, len(layers)
    per = networks // groups
    t0 = time.perf_counter()
    if backend == "jax":
        from . import _jax_residual

        gen, used_batch = _jax_residual.run_preresnet(
            net, r0, layers, sampler, per, groups, batch, seed, dtype, devices
        )
    else:
        used_batch = int(min(batch or 1000, per))
        gen = _run_preresnet_numpy(net, r0, layers, sampler, per, groups, used_batch, seed, _DTYPES[dtype])
    sg = np.zeros((groups, M, N, N))
    sgg = np.zeros((groups, M, N * N, N * N))
    ss = np.zeros((groups, M, N, N))
    sgs = np.zeros((groups, M, N * N, N * N))
    sss = np.zeros((groups, M, N * N, N * N))
    from .ensemble import _Progress

    prog = _Progress(per * groups, progress, f"rgflow.sample_preresnet[{backend}, {sampler}]")
    try:
        for g, sums in enumerate(gen):
            sg[g], sgg[g], ss[g], sgs[g], sss[g] = sums
            prog.update((g + 1) * per)
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0

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
        t=net.eps**2 * np.array(layers, dtype=float),
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
        backend=backend,
        sampler=sampler,
        dtype=dtype,
        batch=used_batch,
        elapsed=elapsed,
        networks_per_second=per * groups / elapsed if elapsed > 0 else float("inf"),
    )


def _run_preresnet_numpy(
    net: PreResNet,
    r0: np.ndarray,
    layers: list[int],
    sampler: str,
    per: int,
    groups: int,
    batch: int,
    seed: int,
    dt: Any,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Per group: the float64 sums (G (M, N, N), vec G vec Gᵀ (M, N², N²), Σ̂ (M, N, N),
    vec G vec Σ̂ᵀ and vec Σ̂ vec Σ̂ᵀ (M, N², N²))."""
    rec = {ell: i for i, ell in enumerate(layers)}
    N, n, M = r0.shape[0], net.width, len(layers)
    act = net.activation
    eps, cw = net.eps, net.C_W
    r0 = r0.astype(dt)
    bidx = 0
    for _g in range(groups):
        sums = [np.zeros((M, N, N)), np.zeros((M, N * N, N * N)), np.zeros((M, N, N))]
        sums += [np.zeros((M, N * N, N * N)), np.zeros((M, N * N, N * N))]
        done = 0
        while done < per:
            b = min(batch, per - done)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(bidx,)))
            bidx += 1
            phi = rng.standard_normal((b, n, N), dtype=dt) @ r0
            for ell in range(net.depth + 1):
                s = act.numpy(phi).astype(dt, copy=False)
                if ell in rec:
                    i = rec[ell]
                    for acc, v in zip(sums, _pre_sums(np, phi, s), strict=True):
                        acc[i] += v
                if ell == net.depth:
                    break
                if sampler == "block":
                    phi = _block_step(np, phi, s, rng.standard_normal((b, n, N), dtype=dt), eps, cw)
                else:
                    W = rng.standard_normal((b, n, n), dtype=dt) * dt(math.sqrt(cw / n))
                    phi = _weights_step(np, phi, s, W, eps)
            done += b
        yield tuple(sums)
