"""Full-batch GD of ensembles of depth-μP ResNets (spec ``nfd.md`` §1.2, §3.1), multilevel-coupled in depth.

Every network is trained at every depth of the sweep, in both backward modes, from one draw of the
Gaussian weights (optional extra ``rgflow[jax]``; float64, vmapped over networks):

* **multilevel coupling** (§3.1): the hidden matrices of depth L and of depth mL share their Gaussian
  increments, W^{(L)}_ℓ = Σ_{j ∈ block ℓ} W^{(mL)}_j / √m.  The finer level is drawn from the coarser
  one by the Gaussian bridge c_j = S/√m + Z_j − Z̄ (fresh Z; exactly the law of m independent N(0,1)
  matrices with sum √m S), so only one level is held at a time.  E[obs(L) − obs(2L)] then has small
  variance.  U, v (and W̃(0)) are shared by all depths; the coupled and decoupled networks share
  their forward weights, so the paired gap has small variance too;
* **low-rank updates** (§1.2): W_ℓ(t) = W_ℓ(0) + (a/√n)·lr_W/(γ0 n)·Σ_{s<t,x'} Δ(x',s) g_ℓ(x',s) φ(h_{ℓ−1}(x',s))ᵀ
  is never formed; only the rank-P factors of every step are kept, so n = 1024, L = 64 fits;
* **decoupled** backward (§1.2): the backward pass uses W̃(0) (independent) plus the same updates.

Recorded per network, depth, mode and step t = 0..T: f(x,t); the loss ½Σ(f−y)²; the feature kernels
K_ℓ(t) = h_ℓᵀh_ℓ/n at depth times τ ∈ {0, ¼, ½, ¾, 1} (ℓ = round(τL)); the network's own NTK Θ(t)
(normalised so that f(t+1) = f(t) + η Θ(t) Δ(t) + O(η²γ0²)); G_0 = g_0ᵀg_0/n; and the coupling
diagnostic of §3.4: S_coup = Σ_ℓ ⟨(a/√n) W_ℓ(0) φ(h_{ℓ−1}(x,1)), g_ℓ(x',0)⟩/n and the same overlap
S_dir of the explicit drift.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._util.validation import check_inputs, check_int, real
from ..activations import array_functions
from ..models import DepthMuPResNet
from ._rates import Rate, fit_rate, paired_mean
from ._train import x64

MODES = ("coupled", "decoupled")
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: per-network observables: name -> trailing shape given (T, P)
OBSERVABLES = ("f", "loss", "kernels", "ntk", "G0", "S_coup", "S_dir")
#: Memory budget (bytes) of one vmapped batch of networks on CPU.
CPU_BATCH_BYTES = 512 * 2**20


@dataclass
class DepthSweep:
    """Trained depth-μP ensembles over a multilevel-coupled depth sweep (nfd.md §3).

    ``values[name]`` holds the per-network numbers, shape ``(networks, depths, modes, ...)``:
    ``f`` (T+1, P), ``loss`` (T+1,), ``kernels`` (T+1, 5, P, P) at τ = :data:`TAUS`, ``ntk``
    (T+1, P, P), ``G0`` (P, P) at t = 0, ``S_coup`` / ``S_dir`` (P, P) at t = 1.  ``mean`` and
    ``stderr`` are the ensemble means and standard errors, shape ``(depths, modes, ...)``.
    """

    net: DepthMuPResNet
    x: np.ndarray
    y: np.ndarray
    depths: tuple[int, ...]
    modes: tuple[str, ...]
    steps: int
    eta: float
    seed: int
    values: dict[str, np.ndarray]
    mean: dict[str, np.ndarray] = field(init=False)
    stderr: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.mean, self.stderr = {}, {}
        for k, v in self.values.items():
            self.mean[k], self.stderr[k] = paired_mean(v)

    @property
    def networks(self) -> int:
        return int(next(iter(self.values.values())).shape[0])

    @property
    def width(self) -> int:
        return self.net.width

    def mode_index(self, mode: str) -> int:
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} was not trained; this sweep has modes {self.modes}")
        return self.modes.index(mode)

    def observable(self, name: str) -> np.ndarray:
        """Per-network values of a named observable, shape (networks, depths, modes, ...).

        Besides the keys of ``values``: ``"dK"`` — the trained kernel change K_L(T) − K_L(0)."""
        if name == "dK":
            k = self.values["kernels"]
            return k[:, :, :, -1, -1] - k[:, :, :, 0, -1]
        if name not in self.values:
            raise ValueError(f"unknown observable {name!r}; choose from {sorted(self.values) + ['dK']}")
        return self.values[name]

    def differences(self, name: str, mode: str = "coupled") -> tuple[np.ndarray, np.ndarray]:
        """Multilevel differences E[obs(L_i) − obs(L_{i+1})] and their standard errors (paired
        over networks), shape (depths − 1, ...)."""
        v = self.observable(name)[:, :, self.mode_index(mode)]
        return paired_mean(v[:, :-1] - v[:, 1:])

    def gap(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The coupling: E[obs(coupled) − obs(decoupled)] per depth (paired), shape (depths, ...)."""
        v = self.observable(name)
        return paired_mean(v[:, :, self.mode_index("coupled")] - v[:, :, self.mode_index("decoupled")])

    def rates(self, mode: str = "coupled") -> dict[str, Rate]:
        """Fitted exponents p of |E[obs(L) − obs(2L)]| ∝ L^{-p} (weighted log-log fit with
        uncertainties) for f(x_1,T), the loss at T, K_L[0,0](T), the kernel change ΔK_L[0,-1] and,
        with both modes trained, the std − dec gap at t = T (its own multilevel differences) and the
        gap's size |gap(L)| ∝ L^{-p} (p ≈ 0: the coupling does not vanish with depth)."""
        out: dict[str, Rate] = {}
        L = np.asarray(self.depths[:-1], dtype=float)
        P = self.x.shape[1]
        pick = {
            "f(x1,T)": ("f", (-1, 0)),
            "loss(T)": ("loss", (-1,)),
            "K_L[0,0](T)": ("kernels", (-1, -1, 0, 0)),
            "dK_L[0,-1]": ("dK", (0, P - 1)),
        }
        if len(self.depths) < 3:
            raise ValueError(f"rates need at least three depths (two multilevel differences), got {self.depths}")
        for label, (name, idx) in pick.items():
            d, s = self.differences(name, mode)
            out[label] = fit_rate(L, d[(slice(None), *idx)], s[(slice(None), *idx)])
        if set(MODES) <= set(self.modes):
            v = self.observable("f")[:, :, self.mode_index("coupled"), -1, 0]
            v = v - self.observable("f")[:, :, self.mode_index("decoupled"), -1, 0]
            d, s = paired_mean(v[:, :-1] - v[:, 1:])
            out["gap f(x1,T) differences"] = fit_rate(L, d, s)
            g, gs = paired_mean(v)
            out["gap f(x1,T) size"] = fit_rate(np.asarray(self.depths, dtype=float), g, gs)
        return out


def train_depth_sweep(
    net: DepthMuPResNet,
    x: Any,
    y: Any,
    depths: Sequence[int] = (4, 8, 16, 32, 64),
    *,
    steps: int = 3,
    eta: float = 0.1,
    networks: int = 16,
    seed: int = 0,
    modes: Sequence[str] = MODES,
    batch: int | None = None,
) -> DepthSweep:
    """Train ``networks`` depth-μP ResNets (``net``'s activation, width, γ0, branch, readout, trained
    groups; ``net.depth`` is replaced by each of ``depths``) by ``steps`` full-batch GD steps of rate
    ``eta`` (multiplier convention, :meth:`DepthMuPResNet.learning_rate`) on inputs ``x`` (P, d) and
    targets ``y`` (P,), coupled and/or decoupled, multilevel-coupled over ``depths`` (each depth a
    multiple of the previous one).  Needs JAX (``pip install rgflow[jax]``).

    Warns when η·λ_max(Θ) ≥ 2 at initialisation (GD unstable) or when the mean loss grows; raises
    FloatingPointError if any trained network's loss is not finite.
    """
    if not isinstance(net, DepthMuPResNet):
        raise TypeError(f"net must be a rgflow.DepthMuPResNet, got {type(net).__name__}")
    xs = check_inputs(x)
    P, d = xs.shape
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if ys.shape != (P,):
        raise ValueError(f"y must hold one scalar target per input: shape ({P},), got {np.shape(y)}")
    if not np.all(np.isfinite(ys)):
        raise ValueError("y must be finite")
    ds = _check_depths(depths)
    steps = check_int("steps", steps, minimum=0)
    eta = real("eta", eta)
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be finite and > 0 (the GD learning rate), got {eta}")
    networks = check_int("networks", networks, minimum=2, hint=" (standard errors need at least 2)")
    seed = check_int("seed", seed, minimum=0)
    ms = tuple(modes)
    if not ms or any(m not in MODES for m in ms) or len(set(ms)) != len(ms):
        raise ValueError(f"modes must be distinct names from {MODES}, got {modes!r}")
    if batch is not None:
        batch = check_int("batch", batch)

    jax = _require_jax()
    n = net.width
    per_net = 8 * n * n * ds[-1] * (2 if "decoupled" in ms else 1) * 3
    bs = batch or max(1, min(networks, CPU_BATCH_BYTES // per_net))
    chunks: list[dict[str, np.ndarray]] = []
    with x64(jax):
        fns = [_compiled(net, L, steps, P, d) for L in ds]
        for start in range(0, networks, bs):
            idx = range(start, min(networks, start + bs))
            rngs = [[np.random.default_rng([seed, i, k]) for k in range(3)] for i in idx]
            k = len(rngs)
            U = _pad(np.stack([r[2].standard_normal((n, d)) for r in rngs]), bs)
            v0 = _pad(np.stack([r[2].standard_normal(n) for r in rngs]), bs)
            W: list[np.ndarray | None] = [None] * k
            Wt: list[np.ndarray | None] = [None] * k
            per_depth: list[dict[str, np.ndarray]] = []
            for j, L in enumerate(ds):
                m = L // ds[j - 1] if j else 0
                W = [_level(r[0], w, L, n, m) for r, w in zip(rngs, W, strict=True)]
                if "decoupled" in ms:
                    Wt = [_level(r[1], w, L, n, m) for r, w in zip(rngs, Wt, strict=True)]
                Wj = jax.numpy.asarray(_pad(np.stack(W), bs))  # type: ignore[arg-type]
                Wtj = jax.numpy.asarray(_pad(np.stack(Wt), bs)) if "decoupled" in ms else None  # type: ignore[arg-type]
                outs = [fns[j](Wj, Wj if md == "coupled" else Wtj, U, v0, xs.T, ys, eta) for md in ms]
                per_depth.append(
                    {q: np.stack([np.asarray(o[q], dtype=np.float64)[:k] for o in outs], axis=1) for q in outs[0]}
                )
            chunks.append({k: np.stack([p[k] for p in per_depth], axis=1) for k in per_depth[0]})
    values = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    _check_stability(values, eta, ds)
    return DepthSweep(net, xs, ys, ds, ms, steps, eta, seed, values)


def _check_depths(depths: Sequence[int]) -> tuple[int, ...]:
    if isinstance(depths, int | np.integer):
        depths = (int(depths),)
    ds = tuple(check_int("depths", L) for L in depths)
    if not ds:
        raise ValueError("depths is empty; give at least one depth, e.g. (4, 8, 16, 32, 64)")
    for a, b in zip(ds[:-1], ds[1:], strict=True):
        if b <= a or b % a:
            raise ValueError(
                f"depths must increase and each must be a multiple of the previous (multilevel coupling), got {ds}"
            )
    return ds


def _check_stability(values: dict[str, np.ndarray], eta: float, depths: tuple[int, ...]) -> None:
    loss = values["loss"]
    ntk0 = values["ntk"][:, :, :, 0]
    ntk0 = ntk0[np.isfinite(ntk0).all(axis=(-1, -2))]
    lam = float(np.linalg.eigvalsh(ntk0.mean(axis=0)).max()) if ntk0.size else math.inf
    unstable = eta * lam >= 2.0
    if unstable:
        warnings.warn(
            f"eta·λ_max(Θ) = {eta * lam:.3g} >= 2 at initialisation: full-batch GD with eta={eta} is unstable "
            "(the loss will oscillate or diverge); lower eta",
            RuntimeWarning,
            stacklevel=3,
        )
    bad = ~np.isfinite(loss).all(axis=-1)
    if bad.any():
        where = [depths[j] for j in sorted(set(np.nonzero(bad)[1].tolist()))]
        raise FloatingPointError(
            f"the training loss diverged (non-finite) at depths {where}: eta={eta} is too large for this "
            "network (GD needs eta·λ_max(Θ) < 2); lower eta or gamma0"
        )
    if not unstable and loss.shape[-1] > 1 and (loss.mean(axis=0)[..., -1] > loss.mean(axis=0)[..., 0]).any():
        warnings.warn(
            f"the mean training loss grew over the GD steps (eta={eta}): the learning rate is too large",
            RuntimeWarning,
            stacklevel=3,
        )


def _require_jax() -> Any:
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("train_depth_sweep needs JAX, an optional dependency: pip install rgflow[jax]") from exc
    return jax


_CACHE: dict[Any, Any] = {}


def jax_pair(act: Any) -> tuple[Any, Any]:
    """(φ, φ') as jax.numpy functions (custom activations: φ' by jax.grad)."""
    import jax
    import jax.numpy as jnp

    if not act.is_custom:
        return array_functions(jnp, act.name, act.params)
    f = act.function
    df = act.derivatives[0] if act.derivatives else jnp.vectorize(jax.grad(f))
    return f, df


def _pad(a: np.ndarray, bs: int) -> np.ndarray:
    """Pad the network axis to the batch size (repeats of network 0, cut from the results)."""
    if a.shape[0] == bs:
        return a
    return np.concatenate([a, np.repeat(a[:1], bs - a.shape[0], axis=0)])


def _level(rng: np.random.Generator, coarse: np.ndarray | None, L: int, n: int, m: int) -> np.ndarray:
    """Hidden matrices (L, n, n) of the next level: fresh, or the Gaussian bridge refinement of
    ``coarse`` (L/m blocks) into m children per block, c_j = S/√m + Z_j − Z̄, Σ_j c_j = √m S."""
    if coarse is None:
        return rng.standard_normal((L, n, n))
    Z = rng.standard_normal((coarse.shape[0], m, n, n))
    Z -= Z.mean(axis=1, keepdims=True)
    Z += coarse[:, None] / math.sqrt(m)
    return Z.reshape(L, n, n)


def _compiled(net: DepthMuPResNet, L: int, T: int, P: int, d: int) -> Any:
    key = (repr(net.with_(depth=L)), T, P, d)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 32:
            _CACHE.clear()
        hit = _CACHE[key] = _build(net.with_(depth=L), T, P, d)
    return hit


def _build(net: DepthMuPResNet, T: int, P: int, d: int) -> Any:
    """The jitted, network-vmapped trainer of one depth: (W, W_backward, U, v0, X (d, P), y, η) -> observables."""
    import jax
    import jax.numpy as jnp

    phi, dphi = jax_pair(net.activation)
    n, g0, L = net.width, net.gamma0, net.depth
    lr_u1 = net.learning_rate("input", 1.0)  # learning rates are η times these
    lr_v1 = net.learning_rate("readout", 1.0)
    lr_w1 = net.learning_rate("hidden", 1.0)
    sq = math.sqrt(n)

    def run_depth(W: Any, Wb: Any, U: Any, v0: Any, X: Any, y: Any, eta: Any) -> dict[str, Any]:
        a = net.branch_multiplier
        lr_w, lr_u, lr_v = lr_w1 * eta, lr_u1 * eta, lr_v1 * eta
        cW = lr_w * a / (g0 * n * sq)  # low-rank update coefficient of W_ℓ
        cU, cv = lr_u / (g0 * n), lr_v / (g0 * n)
        Kin = X.T @ X / d
        h0i = U @ X / math.sqrt(d)
        ells = sorted({round(t * L) for t in TAUS})
        tau_idx = jnp.asarray([ells.index(round(t * L)) for t in TAUS])

        def step(carry: Any, t: Any) -> Any:
            hg, hp, dl, h0s, v, hg0 = carry  # histories (L, T+1, n, P), Δ (T+1, P)
            h0 = h0i + h0s

            def fwd(h: Any, xs: Any) -> Any:
                Wl, gl, pl = xs
                p = phi(h)
                init = Wl @ p
                coef = jnp.einsum("snp,nq->spq", pl, p) * dl[:, :, None]
                drift = cW * jnp.einsum("snp,spq->nq", gl, coef)
                sc = a / sq * init.T @ gl[0] / n
                sd = a / sq * drift.T @ gl[0] / n
                return h + a / sq * (init + drift), (h, p, sc, sd)

            hL, (hs, ps, scs, sds) = jax.lax.scan(fwd, h0, (W, hg, hp))
            r = hL if net.readout == "h" else phi(hL)
            f = v @ r / (g0 * n)
            delta = y - f
            loss = 0.5 * jnp.sum(delta**2)
            hall = jnp.concatenate([hs, hL[None]])
            kern = jnp.einsum("lnp,lnq->lpq", hall[jnp.asarray(ells)], hall[jnp.asarray(ells)]) / n
            gL = v[:, None] * jnp.ones((1, P)) if net.readout == "h" else v[:, None] * dphi(hL)

            def bwd(g: Any, xs: Any) -> Any:
                Wl, gl, pl, h = xs
                coef = jnp.einsum("snp,nq->spq", gl, g) * dl[:, :, None]
                drift = cW * jnp.einsum("snp,spq->nq", pl, coef)
                return g + a / sq * dphi(h) * (Wl.T @ g + drift), g

            g0_, gs = jax.lax.scan(bwd, gL, (Wb, hg, hp, hs), reverse=True)
            # own NTK (1/η) Σ_groups lr ∂f·∂f  (normalised as in nfd.md §2.1)
            th = (lr_v / (g0**2 * n * n)) * (r.T @ r)
            th = th + (lr_w * a * a / (g0**2 * n**3)) * jnp.einsum("lnp,lnq,lmp,lmq->pq", gs, gs, ps, ps)
            th = th + (lr_u / (g0**2 * n * n)) * (g0_.T @ g0_) * Kin
            hg = hg.at[:, t].set(gs)
            hp = hp.at[:, t].set(ps)
            dl = dl.at[t].set(delta)
            h0s = h0s + cU * g0_ @ (delta[:, None] * Kin)
            v = v + cv * r @ delta
            out = {
                "f": f,
                "loss": loss,
                "kernels": kern[tau_idx],
                "ntk": th / eta,
                "G0": g0_.T @ g0_ / n,
                "S_coup": scs.sum(0),
                "S_dir": sds.sum(0),
            }
            return (hg, hp, dl, h0s, v, g0_), out

        z = jnp.zeros((L, T + 1, n, P))
        carry0 = (z, z, jnp.zeros((T + 1, P)), jnp.zeros((n, P)), v0, jnp.zeros((n, P)))
        _, out = jax.lax.scan(step, carry0, jnp.arange(T + 1))
        out["G0"] = out["G0"][0]
        i1 = min(1, T)
        out["S_coup"] = out["S_coup"][i1]
        out["S_dir"] = out["S_dir"][i1]
        return out

    return jax.jit(jax.vmap(run_depth, in_axes=(0, 0, 0, 0, None, None, None)))
