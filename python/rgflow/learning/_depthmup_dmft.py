"""Infinite-width training limit of the depth-μP ResNet at finite depth: the discrete-step DMFT of
spec ``nfd.md`` §2.2 (coupled, or decoupled: A = B = 0), solved by Monte Carlo over single-site fields, and its
depth limit §2.3 by Richardson extrapolation in 1/L.

Single-site fields (normalised gradients g = γ0 n ∂f/∂h; a = branch multiplier; c_W = a²·lr_W/(γ0 n),
c_U = lr_U/(γ0 n), c_v = lr_v/(γ0 n) — for depth-μP c_W = ηγ0/L, c_U = c_v = ηγ0)::

    h_0(x,t) = u_0(x) + c_U Σ_{s<t,x'} Δ(x',s) g_0(x',s) K_in(x,x'),                 u_0 ~ N(0, K_in)
    h_ℓ(x,t) = h_{ℓ-1}(x,t) + a u_ℓ(x,t) + c_W Σ_{s<t,x'} Δ(x',s) Φ_{ℓ-1}(x,t;x',s) g_ℓ(x',s)
    v(t)     = v_0 + c_v Σ_{s<t,x} Δ(x,s) r(x,s),   r = h_L or φ(h_L),   f(x,t) = E[v(t) r(x,t)] / γ0
    g_L(x,t) = v(t) (or v(t) φ'(h_L)),
    g_{ℓ-1}  = g_ℓ + φ'(h_{ℓ-1}(x,t)) [a r_ℓ(x,t) + c_W Σ_{s<t,x'} Δ(x',s) G_ℓ(x,t;x',s) φ(h_{ℓ-1}(x',s))]

u_ℓ (covariance Φ_{ℓ-1}) and r_ℓ (covariance G_ℓ) are Gaussian in (x, t), independent across ℓ and
of each other, and the value at step t is drawn *conditionally on the earlier ones* (fixed initial
weights): with the causal Cholesky factor of the joint covariance over (s ≤ t, x) applied to fixed
standard normals, the earlier rows are unchanged as t grows.  The kernels are sample averages over the
M single-site samples at the moment they are needed (the solve is causal: no iteration).

``coupled=True`` adds the reused-weight responses of §2.2 — forward a Σ_{s<t} A_ℓ g_ℓ(s), backward
a φ'(h) Σ_{s≤t} B_ℓ φ(h_{ℓ-1}(s)) — with A, B estimated pathwise by Gaussian integration by parts
(E[∂F/∂z] = Cov(z)^{-1} E[z F] for the stored noises): the limit of the true network.  The decoupled
system (A = B = 0) is the limit of the ``backward="decoupled"`` network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util.validation import check_inputs, check_int, real
from ..models import DepthMuPResNet
from ._depthmup_train import TAUS
from ._rates import paired_mean


@dataclass
class DMFTSolution:
    """The DMFT at depth L (``coupled``: with the responses A, B): means over ``replicas``
    independent solves of ``samples`` sites each,
    with standard errors.  Keys: ``f`` (T+1, P), ``loss`` (T+1,), ``kernels`` (T+1, 5, P, P) at τ =
    ``TAUS``, ``ntk`` (T+1, P, P); ``values`` holds the per-replica numbers."""

    net: DepthMuPResNet
    steps: int
    eta: float
    samples: int
    coupled: bool
    values: dict[str, np.ndarray]

    @property
    def mean(self) -> dict[str, np.ndarray]:
        return {k: paired_mean(v)[0] for k, v in self.values.items()}

    @property
    def stderr(self) -> dict[str, np.ndarray]:
        return {k: paired_mean(v)[1] for k, v in self.values.items()}


def dmft(
    net: DepthMuPResNet,
    x: Any,
    y: Any,
    *,
    steps: int = 3,
    eta: float = 0.1,
    samples: int = 20000,
    replicas: int = 4,
    coupled: bool = False,
    seed: int = 0,
) -> DMFTSolution:
    """Solve the discrete-step DMFT of ``net`` (its depth L, activation, γ0, branch, readout, trained
    groups; the width only enters through the lr convention and cancels) for ``steps`` GD steps of
    rate ``eta`` by Monte Carlo over ``samples`` single-site fields, ``replicas`` times independently.

    ``coupled=True`` adds the reused-weight responses A, B (§2.2), estimated pathwise by Gaussian
    integration by parts (Stein): A_ℓ(x,t;·) = E[φ(h_{ℓ-1}(x,t)) r_ℓ] Cov(r_ℓ)^{-1} over the earlier
    (x', s < t), B_ℓ(x,t;·) = E[g_ℓ(x,t) u_ℓ] Cov(u_ℓ)^{-1} over (x', s ≤ t) — the limit of the true
    (coupled) network; ``coupled=False`` (A = B = 0) is the limit of the decoupled network."""
    if not isinstance(net, DepthMuPResNet):
        raise TypeError(f"net must be a rgflow.DepthMuPResNet, got {type(net).__name__}")
    xs = check_inputs(x)
    P, d = xs.shape
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if ys.shape != (P,) or not np.all(np.isfinite(ys)):
        raise ValueError(f"y must hold one finite scalar target per input: shape ({P},), got {np.shape(y)}")
    steps = check_int("steps", steps, minimum=0)
    eta = real("eta", eta)
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be finite and > 0 (the GD learning rate), got {eta}")
    samples = check_int("samples", samples, minimum=16)
    replicas = check_int("replicas", replicas, minimum=2, hint=" (standard errors need at least 2)")
    seed = check_int("seed", seed, minimum=0)
    coupled = bool(coupled)
    runs = [
        _solve(net, xs, ys, steps, eta, samples, np.random.SeedSequence([seed, r]), coupled) for r in range(replicas)
    ]
    values = {k: np.stack([r[k] for r in runs]) for k in runs[0]}
    if not all(np.all(np.isfinite(v)) for v in values.values()):
        raise FloatingPointError(
            f"the DMFT solve diverged (non-finite fields): eta={eta} is too large for this network; lower eta or gamma0"
        )
    return DMFTSolution(net, steps, eta, samples, coupled, values)


def dmft_depth_limit(
    net: DepthMuPResNet, x: Any, y: Any, *, depths: Sequence[int] = (64, 128), **kw: Any
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """L → ∞ of the DMFT (§2.3; ``coupled`` passed on in ``kw``) by Richardson extrapolation of
    first order in 1/L from the
    last two ``depths``: obs(∞) ≈ 2 obs(2L) − obs(L).  Returns (means, standard errors)."""
    ds = tuple(check_int("depths", L) for L in depths)
    if len(ds) < 2 or ds[-1] != 2 * ds[-2]:
        raise ValueError(f"depths must end with a pair (L, 2L) for the Richardson step, got {ds}")
    a = dmft(net.with_(depth=ds[-2]), x, y, **kw)
    b = dmft(net.with_(depth=ds[-1]), x, y, **kw)
    mean, se = {}, {}
    for k in a.values:
        mean[k] = 2 * b.mean[k] - a.mean[k]
        se[k] = np.sqrt(4 * b.stderr[k] ** 2 + a.stderr[k] ** 2)
    return mean, se


def _cholesky(C: np.ndarray) -> np.ndarray:
    jitter = 1e-12 * max(1.0, float(np.trace(C)) / C.shape[0])
    for _ in range(8):
        try:
            return np.linalg.cholesky(C + jitter * np.eye(C.shape[0]))
        except np.linalg.LinAlgError:
            jitter *= 100
    raise FloatingPointError("a DMFT covariance is not positive semi-definite (the fields diverged?)")


def _conditional(F: np.ndarray, z: np.ndarray, t: int, P: int) -> np.ndarray:
    """The step-t Gaussian with covariance of the samples F (M, t+1, P) over (s ≤ t, x), conditioned on
    its earlier values: the rows (t, ·) of the causal Cholesky factor applied to fixed normals z."""
    M = F.shape[0]
    Ff = F.reshape(M, (t + 1) * P)
    Lc = _cholesky(Ff.T @ Ff / M)
    return z[:, : (t + 1) * P] @ Lc[t * P :, :].T


def _stein(F: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """E[∂F/∂z] for Gaussian samples Z (M, k) and values F (M, P): E[F zᵀ] Cov(z)^{-1} (P, k)."""
    M = Z.shape[0]
    C = Z.T @ Z / M
    return np.linalg.solve(C + 1e-12 * np.trace(C) / C.shape[0] * np.eye(C.shape[0]), Z.T @ F / M).T


def _solve(
    net: DepthMuPResNet,
    X: np.ndarray,
    y: np.ndarray,
    T: int,
    eta: float,
    M: int,
    ss: np.random.SeedSequence,
    coupled: bool = False,
) -> dict[str, np.ndarray]:
    act = net.activation
    phi = lambda z: act.numpy(z)  # noqa: E731
    Fphi = phi
    dphi = lambda z: act.numpy(z, 1)  # noqa: E731
    P, d = X.shape
    L, n, g0 = net.depth, net.width, net.gamma0
    a = net.branch_multiplier
    cW = a * a * net.learning_rate("hidden", eta) / (g0 * n)
    cU = net.learning_rate("input", eta) / (g0 * n)
    cv = net.learning_rate("readout", eta) / (g0 * n)
    Kin = X @ X.T / d
    base, ku, kr = ss.spawn(3)
    rng = np.random.default_rng(base)
    u0 = rng.standard_normal((M, P)) @ _cholesky(Kin).T
    v0 = rng.standard_normal(M)
    seeds_u, seeds_r = ku.spawn(L), kr.spawn(L)
    H = np.zeros((L + 1, M, T + 1, P))  # h_ℓ(x, s), ℓ = 0..L
    G = np.zeros((L + 1, M, T + 1, P))  # g_ℓ(x, s)
    R = np.zeros((M, T + 1, P))  # readout vector r(x, s)
    if coupled:  # the Gaussian noises u_ℓ, r_ℓ themselves, for the Stein responses
        Un = np.zeros((L, M, T + 1, P))
        Rn = np.zeros((L, M, T + 1, P))
    delta = np.zeros((T + 1, P))
    ells = sorted({round(tau * L) for tau in TAUS})
    out_f = np.zeros((T + 1, P))
    out_loss = np.zeros(T + 1)
    out_k = np.zeros((T + 1, len(TAUS), P, P))
    out_ntk = np.zeros((T + 1, P, P))
    for t in range(T + 1):
        # forward
        h = u0 + cU * np.einsum("msy,sy,yx->mx", G[0][:, :t], delta[:t], Kin)
        H[0][:, t] = h
        for ell in range(1, L + 1):
            Fp = phi(H[ell - 1][:, : t + 1])
            z = np.random.default_rng(seeds_u[ell - 1]).standard_normal((M, (T + 1) * P))
            u = _conditional(Fp, z, t, P)
            if t:
                Phi = np.einsum("mx,msy->xsy", Fp[:, t], Fp[:, :t]) / M
                drift = np.einsum("xsy,sy,msy->mx", Phi, delta[:t], G[ell][:, :t])
            else:
                drift = 0.0
            if coupled:
                Un[ell - 1][:, t] = u
                if t:  # Ż = Σ_{s<t,x'} A_ℓ(x,t;x',s) g_ℓ(x',s)
                    A = _stein(Fp[:, t], Rn[ell - 1][:, :t].reshape(M, t * P))
                    u = u + G[ell][:, :t].reshape(M, t * P) @ A.T
            h = h + a * u + cW * drift
            H[ell][:, t] = h
        r = h if net.readout == "h" else phi(h)
        R[:, t] = r
        v = v0 + cv * np.einsum("msx,sx->m", R[:, :t], delta[:t])
        f = (v @ r) / (M * g0)
        delta[t] = y - f
        out_f[t], out_loss[t] = f, 0.5 * float(np.sum(delta[t] ** 2))
        for i, tau in enumerate(TAUS):
            hk = H[round(tau * L)][:, t]
            out_k[t, i] = hk.T @ hk / M
        # backward
        g = v[:, None] * np.ones((1, P)) if net.readout == "h" else v[:, None] * dphi(h)
        G[L][:, t] = g
        th_hidden = np.zeros((P, P))
        for ell in range(L, 0, -1):
            Gp = G[ell][:, : t + 1]
            z = np.random.default_rng(seeds_r[ell - 1]).standard_normal((M, (T + 1) * P))
            rr = _conditional(Gp, z, t, P)
            hp = H[ell - 1][:, t]
            p_now = phi(hp)
            th_hidden += (g.T @ g / M) * (p_now.T @ p_now / M)
            if t:
                Gk = np.einsum("mx,msy->xsy", g, Gp[:, :t]) / M
                driftb = np.einsum("xsy,sy,msy->mx", Gk, delta[:t], phi(H[ell - 1][:, :t]))
            else:
                driftb = 0.0
            if coupled:
                Rn[ell - 1][:, t] = rr
                # Ż = Σ_{s≤t,x'} B_ℓ(x,t;x',s) φ(h_{ℓ-1}(x',s))
                B = _stein(g, Un[ell - 1][:, : t + 1].reshape(M, (t + 1) * P))
                rr = rr + Fphi(H[ell - 1][:, : t + 1]).reshape(M, (t + 1) * P) @ B.T
            g = g + dphi(hp) * (a * rr + cW * driftb)
            G[ell - 1][:, t] = g
        lr_v, lr_w, lr_u = (net.learning_rate(k, eta) for k in ("readout", "hidden", "input"))
        th = lr_v / (g0**2 * n) * (r.T @ r / M) + lr_w * a * a / (g0**2 * n) * th_hidden
        th = th + lr_u / (g0**2 * n) * (g.T @ g / M) * Kin
        out_ntk[t] = th / eta
    del ells
    return {"f": out_f, "loss": out_loss, "kernels": out_k, "ntk": out_ntk}
