"""Residual MLPs at initialisation (PDLT Appendix B; spec ``preactivations.md`` §8).

Forward equation (B.3) with ξ = 1: layer 1 is the ordinary ``z1 = b + W x``; every later
layer is ``z' = b + W σ(z) + γ z`` with all widths equal to ``n`` (B.4), so every first-order
tensor is the coefficient of the same ``1/n``.

Tensors (layer axis first, ``[layer-1, α1, ...]``):

* ``K``  — kernel (B.11), ``K' = C_b + C_W⟨σσ⟩ + γ²K``.
* ``V``  — four-point vertex ``V[l,a,b,c,d] = V_(ab)(cd)``: ``corrected=False`` gives the book's
  (B.24)–(B.25); ``corrected=True`` (default) adds the third-cumulant terms of spec §8c.
  **The book's (B.25) is discrepant for non-odd σ** (ReLU, GELU, …): it assumes an even action,
  but the identity branch creates an O(1/n) odd cumulant; sampled networks follow the
  corrected recursion (see ``tests/test_resmlp.py``).  For odd (tanh) or even (|z|, linear)
  σ, S ≡ 0 and both forms agree.
* ``S``  — odd third cumulant ``S[l,a,b,c] = S_(ab)c``:
  ``E[z_{i;a} z_{j;b} z_{k;c}] = (1/n)[δ_ij S_(ab)c + δ_ik S_(ac)b + δ_jk S_(bc)a]``.
* ``K1`` — NLO metric, ``E[z_{i;a} z_{i;b}] = K + K1/n``, from the spec's Edgeworth extension.
  **Only approximate for residual nets** (not in the book; the self-interaction cumulants
  κ(j^m, k²), m ≥ 3, are missing: ReLU γ² = ½, layer 3: 0.2251 against the exact 0.2046).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .activations import Activation, as_activation
from .network import _per_layer, check_inputs, check_int


class ResMLP:
    """A residual MLP at initialisation (Appendix B).

    Parameters
    ----------
    activation: name or :class:`~rgflow.Activation`.
    depth: number of layers L (>= 1); layer 1 is ordinary, layers 2..L are residual.
    width: common width n of layers 1..L (the residual branch needs equal widths).
    C_b, C_W: bias and weight variances, scalars or one per layer (``Var W = C_W/n_{l-1}``).
    gamma: residual weight γ >= 0 (scalar or one per layer; the layer-1 entry is unused).
    """

    def __init__(
        self,
        activation: str | Activation = "relu",
        depth: int = 2,
        width: int = 64,
        C_b: float | Sequence[float] = 0.0,
        C_W: float | Sequence[float] = 1.0,
        gamma: float | Sequence[float] = 0.0,
    ) -> None:
        self.activation = as_activation(activation)
        self.depth = check_int("depth", depth)
        self.width = check_int("width", width)
        self.C_b = _per_layer("C_b", C_b, self.depth, positive=False)
        self.C_W = _per_layer("C_W", C_W, self.depth, positive=True)
        self.gamma = _per_layer("gamma", gamma, self.depth, positive=False)

    @property
    def L(self) -> int:
        return self.depth

    @classmethod
    def critical(cls, activation: str | Activation, depth: int, width: int, gamma: float) -> ResMLP:
        """Residual criticality (B.19)–(B.21): ``C_b = 0`` and ``C_W = (1 − γ²)/A₂`` (scale-invariant
        class) or ``(1 − γ²)/σ₁²`` (K* = 0 class).  Requires ``0 < γ² < 1``."""
        from .criticality import critical

        g2 = float(gamma) ** 2
        if not math.isfinite(g2) or not 0.0 < g2 < 1.0:
            raise ValueError(
                f"residual criticality needs 0 < gamma^2 < 1 (B.19)-(B.21), got gamma = {gamma}; "
                "gamma = 1 is never critical"
            )
        crit = critical(activation)
        if crit.universality_class not in ("scale-invariant", "K*=0") or crit.C_W is None:
            raise ValueError(
                f"residual criticality (B.19)-(B.21) is known for the scale-invariant and K*=0 classes only; "
                f"{crit.activation!r} is {crit.universality_class!r}"
            )
        if crit.C_b:
            raise ValueError(f"{crit.activation!r}: expected C_b = 0 at criticality, got {crit.C_b}")
        return cls(crit.activation, depth, width, C_b=0.0, C_W=(1.0 - g2) * crit.C_W, gamma=abs(float(gamma)))

    def __repr__(self) -> str:
        def short(v: tuple[float, ...]) -> str:
            return f"{v[0]:g}" if len(set(v)) == 1 else str(list(v))

        return (
            f"ResMLP({self.activation!r}, depth={self.depth}, width={self.width}, C_b={short(self.C_b)}, "
            f"C_W={short(self.C_W)}, gamma={short(self.gamma)})"
        )


class ResTheory:
    """Result of :func:`resmlp_theory`: ``K``, ``K1`` (L, N, N), ``S`` (L, N, N, N), ``V`` (L, N⁴)."""

    def __init__(self, net: ResMLP, x: np.ndarray, tensors: dict[str, np.ndarray | None], corrected: bool) -> None:
        self.net = net
        self.x = x
        self.corrected = corrected
        self.K: np.ndarray = tensors["K"]  # type: ignore[assignment]
        self.V = tensors.get("V")
        self.S = tensors.get("S")
        self.K1 = tensors.get("K1")

    def metric(self, layer: int) -> np.ndarray:
        """Approximate mean metric ``K + K1/n`` at 1-based ``layer`` (K1 is approximate here)."""
        if not 1 <= layer <= self.net.depth:
            raise ValueError(f"layer must be in 1..{self.net.depth}, got {layer}")
        if self.K1 is None:
            raise ValueError("K1 was not computed (order=0)")
        return self.K[layer - 1] + self.K1[layer - 1] / self.net.width

    def __repr__(self) -> str:
        form = "S-corrected" if self.corrected else "book (B.25)"
        return f"ResTheory({self.net!r}, N={self.K.shape[1]}, vertex={form})"


def resmlp_theory(
    net: ResMLP, x: Any, corrected: bool = True, order: int = 1, quad_order: int | None = None
) -> ResTheory:
    """Kernel and first-order tensors of a residual MLP on inputs ``x`` (N, n0).

    ``corrected=True`` uses the S-corrected vertex (spec §8c, agrees with sampled networks);
    ``corrected=False`` the book's (B.25) (and K1 without the S term).  S is returned either way.
    """
    from . import _core
    from .expectations import _core_activation

    if not isinstance(net, ResMLP):
        raise TypeError(f"net must be an rgflow.resnet.ResMLP, got {type(net).__name__}")
    x = check_inputs(x)
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (infinite width) or 1 (first order in 1/n), got {order}")
    out = _core.resmlp_theory(
        _core_activation(net.activation),
        x,
        np.array(net.C_b),
        np.array(net.C_W),
        np.array(net.gamma),
        net.width,
        bool(corrected),
        int(order),
        0 if quad_order is None else int(quad_order),
    )
    return ResTheory(net, x, dict(out), bool(corrected))


class ResEnsemble:
    """Result of :func:`sample_resmlp`: estimates ``G`` (L, N, N), ``V`` (L, N⁴), ``S`` (L, N³) and
    their batch-means standard errors ``G_err``, ``V_err``, ``S_err``."""

    def __init__(self, **kw: Any) -> None:
        self.networks: int = kw.pop("networks")
        self.width: int = kw.pop("width")
        for k, v in kw.items():
            setattr(self, k, v)

    def K1(self, theory: ResTheory) -> tuple[np.ndarray, np.ndarray]:
        """Estimate of ``n (G − K)`` and its standard error, for comparison with ``theory.K1``."""
        return self.width * (self.G - theory.K), self.width * self.G_err

    def __repr__(self) -> str:
        return f"ResEnsemble(networks={self.networks}, width={self.width}, L={self.G.shape[0]}, N={self.G.shape[1]})"


def _res_sums(xp: Any, z: Any, w: Any = None) -> tuple[Any, Any, Any]:
    """float64 sums over a batch of networks (weights ``w`` (B,) or None) of the per-network pair
    estimators of one layer, ``z`` (B, n, N):  ``Ĝ_ab = Σ_i z_ia z_ib / n``,
    ``P_abcd = Σ_{i≠j} z_ia z_ib z_jc z_jd / (n(n−1))``, ``R_abc = Σ_{i≠j} z_ia z_ib z_jc / (n(n−1))``."""
    B, n, N = z.shape
    z = z.astype(xp.float64)
    zz = (z[:, :, :, None] * z[:, :, None, :]).reshape(B, n, N * N)  # z_ia z_ib
    Gh = zz.sum(axis=1).reshape(B, N, N) / n
    q4 = (xp.swapaxes(zz, 1, 2) @ zz).reshape(B, N, N, N, N)  # Σ_i z_ia z_ib z_ic z_id
    q3 = (xp.swapaxes(zz, 1, 2) @ z).reshape(B, N, N, N)  # Σ_i z_ia z_ib z_ic
    m1 = z.sum(axis=1)
    P = (n * n * Gh[:, :, :, None, None] * Gh[:, None, None, :, :] - q4) / (n * (n - 1))
    R = (n * Gh[:, :, :, None] * m1[:, None, None, :] - q3) / (n * (n - 1))
    if w is not None:
        Gh, P, R = (a * w.reshape((-1,) + (1,) * (a.ndim - 1)) for a in (Gh, P, R))
    return Gh.sum(0), P.sum(0), R.sum(0)


def _res_forward(xp: Any, sig: Any, z: Any, W: Any, b: Any, gamma: float) -> Any:
    """Residual layer (B.3) with ξ = 1: ``z' = b + W σ(z) + γ z`` (W, b already scaled)."""
    return b + W @ sig(z) + gamma * z


def sample_resmlp(
    net: ResMLP,
    x: Any,
    networks: int = 10_000,
    seed: int = 0,
    groups: int = 32,
    batch: int | None = None,
    *,
    backend: str = "numpy",
    devices: Sequence[Any] | None = None,
    progress: bool = False,
) -> ResEnsemble:
    """Sample residual MLPs by drawing every weight (float64; numpy or JAX).

    A residual net is *not* conditionally Gaussian given the previous layer's metric alone (the
    identity branch carries z itself), so weights are drawn directly.  Estimators, over
    networks and all neuron pairs i ≠ j (n = width):

    * ``G[a,b] = E[(1/n) Σ_i z_{i;a} z_{i;b}]``
    * ``V[a,b,c,d] = n (E_{i≠j}[z_{i;a} z_{i;b} z_{j;c} z_{j;d}] − G_ab G_cd)``
    * ``S[a,b,c] = n E_{i≠j}[z_{i;a} z_{i;b} z_{j;c}]``

    Standard errors are batch means over ``groups`` groups of networks.  ``backend="numpy"``
    (default batch 256, batch k from ``default_rng(SeedSequence(seed, spawn_key=(k,)))``) or
    ``"jax"`` (jit + ``lax.scan``; network i from ``fold_in(key(seed), i)``, independent of the
    batch size and of the devices the batches are sharded over).  ``progress=True`` shows a
    progress line on stderr (after 2 s, updated per group).
    """
    if not isinstance(net, ResMLP):
        raise TypeError(f"net must be an rgflow.resnet.ResMLP, got {type(net).__name__}")
    x = check_inputs(x)
    for name, v, lo in (("networks", networks, 2), ("groups", groups, 2), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (automatic), got {batch!r}")
    if groups > networks:
        raise ValueError(f"groups ({groups}) must not exceed networks ({networks})")
    if backend not in ("numpy", "jax"):
        raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")
    if devices is not None and backend != "jax":
        raise ValueError("devices= is for backend='jax' only; leave it None with backend='numpy'")
    if net.width < 2:
        raise ValueError("sampling the pair estimators needs width >= 2")
    n, L, N = net.width, net.depth, x.shape[0]
    bounds = np.linspace(0, networks, groups + 1).astype(int)
    t0 = time.perf_counter()
    if backend == "jax":
        from . import _jax_residual

        gen, used_batch = _jax_residual.run_resmlp(net, x, bounds, batch, int(seed), devices)
    else:
        used_batch = int(batch or 256)
        gen = _run_resmlp_numpy(net, x, bounds, used_batch, int(seed))
    sums = {k: np.zeros((groups, L) + (N,) * r) for k, r in (("G", 2), ("P", 4), ("R", 3))}
    from .ensemble import _Progress

    prog = _Progress(networks, progress, f"rgflow.sample_resmlp[{backend}]")
    try:
        for g, out in enumerate(gen):
            for k in sums:
                sums[k][g] = out[k]
            prog.update(int(bounds[g + 1]))
    finally:
        prog.close()
    elapsed = time.perf_counter() - t0
    counts = np.diff(bounds).astype(float)

    def est(G: np.ndarray, P: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        V = n * (P - G[..., :, :, None, None] * G[..., None, None, :, :])
        return G, V, n * R

    tot = est(*(sums[k].sum(0) / networks for k in ("G", "P", "R")))
    per = est(*(sums[k] / counts.reshape((-1,) + (1,) * (sums[k].ndim - 1)) for k in ("G", "P", "R")))
    errs = [p.std(axis=0, ddof=1) / math.sqrt(groups) for p in per]
    return ResEnsemble(
        networks=int(networks),
        width=n,
        G=tot[0],
        V=tot[1],
        S=tot[2],
        G_err=errs[0],
        V_err=errs[1],
        S_err=errs[2],
        backend=backend,
        batch=used_batch,
        elapsed=elapsed,
        networks_per_second=networks / elapsed if elapsed > 0 else float("inf"),
    )


def _run_resmlp_numpy(
    net: ResMLP, x: np.ndarray, bounds: np.ndarray, batch: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Per group of networks: float64 sums of the pair estimators, every layer stacked."""
    n, L, (N, n0) = net.width, net.depth, x.shape
    sig = net.activation.numpy
    bidx = 0
    for g in range(len(bounds) - 1):
        acc = {k: np.zeros((L,) + (N,) * r) for k, r in (("G", 2), ("P", 4), ("R", 3))}
        done = bounds[g]
        while done < bounds[g + 1]:
            B = min(batch, bounds[g + 1] - done)
            done += B
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(bidx,)))
            bidx += 1
            z = np.sqrt(net.C_b[0]) * rng.standard_normal((B, n, 1))
            z = z + np.sqrt(net.C_W[0] / n0) * rng.standard_normal((B, n, n0)) @ x.T
            for l in range(L):
                if l > 0:
                    W = np.sqrt(net.C_W[l] / n) * rng.standard_normal((B, n, n))
                    b = np.sqrt(net.C_b[l]) * rng.standard_normal((B, n, 1))
                    z = _res_forward(np, sig, z, W, b, net.gamma[l])
                for k, v in zip(("G", "P", "R"), _res_sums(np, z), strict=True):
                    acc[k][l] += v
        yield acc


def nu_scale_invariant(gamma: float, A2: float, A4: float) -> float:
    """The book's slope ν(γ) of (B.29): ``V^(ℓ) = (ℓ−1) ν (K*)²`` at residual criticality
    (scale-invariant class; exact when S = 0, i.e. ``a₊² = a₋²``)."""
    g2 = gamma * gamma
    return (1 - g2) * ((1 - g2) * (3 * A4 / A2**2 - 1) + 4 * g2)
