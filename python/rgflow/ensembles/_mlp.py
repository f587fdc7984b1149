"""Ensembles of sampled finite-width MLPs: Monte-Carlo estimates of every theory tensor.

:func:`sample` draws ``networks`` independent MLPs at initialisation (numpy or JAX), runs
them on the inputs ``x`` and estimates, at every layer l = 1..L, the same tensors as
:class:`rgflow.theory.Theory` (``docs/spec/ntk.md`` §1.2, ``preactivations.md`` §1, §4a, §9),
each with a batch-means standard error.  :func:`compare` tabulates theory against samples.

Conventions
-----------
Layer axis 0 is layer 1; the layer-l tensors are normalised by ``n = n_{l-1}`` (``n_0`` = input
dimension).  Per network the stochastic metric and the stochastic NTK mean of layer l are

* ``Ĝ^(l)_ab = C_b + C_W/n Σ_j σ(z^(l-1)_{j;a}) σ(z^(l-1)_{j;b})``  (``σ(z^(0)) ≡ x``),
* ``Ĥ^(l)_ab = λ_b + λ_W/n Σ_j σ_{j;a}σ_{j;b} + C_W/n Σ_j σ'_{j;a}σ'_{j;b} Θ̂^(l-1)_{jj;ab}``,

the exact conditional means, given layer l-1, of ``z_{i;a}z_{i;b}`` and of ``Θ̂^(l)_{ii;ab}``.  The
per-network NTK ``Θ̂^(l)`` (all neuron pairs, every hidden layer) is built with the exact
layer-wise forward equation (PDLT 8.12, ``ntk.md`` §1.1), learning rates ``λ_b`` and ``λ_W/n_{l-1}``;
the numpy backend holds it once per unordered sample pair (``N(N+1)/2 · n²`` numbers per network,
:mod:`rgflow.ensembles._estimators`), the JAX backend as a dense ``(N, N, n, n)`` array.

Estimators (default ``estimator="conditional"``), each exact, i.e. unbiased at any width:

* ``K = E[Ĝ]`` -- the *sampled mean metric*, which is ``K + K1/n + O(1/n²)`` of the theory;
  ``Theta = E[Ĥ] = E[Θ̂_ii]`` likewise ``Θ + Θ1/n + O(1/n²)``.  (``mean_metric``/``mean_ntk``
  are the same arrays.)
* ``K1 = n (E[Ĝ] - K_∞)``, ``Theta1 = n (E[Ĥ] - Θ_∞)`` with the infinite-width ``K_∞, Θ_∞``.
* ``V = n Cov(Ĝ_{a1a2}, Ĝ_{a3a4})`` (PDLT 4.76),
  ``D = n Cov(Ĝ_{a1a2}, Ĥ_{a3a4})`` (= n E[z_{i;a1}z_{i;a2} ΔΘ_{jj;a3a4}], i≠j),
  ``A = n Cov(Ĥ_{a1a2}, Ĥ_{a3a4})`` (= n E[ΔΘ_{ii;a1a2} ΔΘ_{jj;a3a4}], i≠j).
* ``F[a1,a3,a2,a4] = n E[z_{i;a1} z_{j;a2} Θ̂_{ij;a3a4}]`` (i≠j), estimated by its exact
  conditional mean ``(C_W/n)² Σ_{k1k2} σ_{k1;a1}σ'_{k1;a3} Θ̂^(l-1)_{k1k2;a3a4} σ'_{k2;a4}σ_{k2;a2}``.
* ``B[a1,a3,a2,a4] = n E[Θ̂_{ij;a1a2} Θ̂_{ij;a3a4}]`` (i≠j), estimated by
  ``(C_W/n)² Σ_{k1k2} P_{k1k2;a1a2} P_{k1k2;a3a4}`` with ``P_{k1k2;ab} = σ'_{k1;a}σ'_{k2;b}Θ̂^(l-1)_{k1k2;ab}``.

Conditioning on layer l-1 integrates out the layer-l weights analytically: these are the
averages over *all* distinct neuron pairs i≠j (infinitely many), so the variance is far lower
than with sampled pairs, and the output width n_L does not matter (the theory does not depend
on it either).  ``estimator="direct"`` instead averages products of sampled preactivations and
NTK entries over all pairs of distinct neurons i≠j of layer l (needs every n_l >= 2); it
estimates the same quantities, with larger errors, and serves as a cross-check.

dNTK family (``dntk=True``): P, Q, R, S, T, U of ``docs/spec/dntk.md`` §1.3, in the same
index order and ``1/n_{l-1}`` normalisation as :class:`rgflow.Theory`, estimated with ``r = 4``
probe neurons per layer by the exact stochastic forward equations (§2) in directional-derivative
form; P and Q are conditional means over one probe's weights, R-U averages over the ordered probe
pairs (formulas in :mod:`rgflow.ensembles._dntk`).  Each is unbiased at any width.

Index order of F and B follows ``ntk.md`` §1.2: F slots 1, 3 are preactivation samples and
2, 4 NTK samples; in B the pairs (1,3) and (2,4) share neurons.

Standard errors: the networks are split into ``groups`` independent groups of (nearly) equal
size; every estimator is evaluated per group; ``stderr = std_over_groups(ddof=1)/sqrt(groups)``.
The point estimates pool all networks.  Sums of products are accumulated in float64 and
streamed batch by batch: memory does not grow with ``networks``.  With the numpy backend and the conditional
estimator the four-point sums, group estimates and standard errors are held packed by their
sample symmetries (:func:`rgflow.ensembles._estimators.unpack`); the returned :class:`Ensemble`
keeps them packed and builds each full (L, N, N, N, N) array on its first attribute access.

Speed: with ``ntk=True`` the numpy backend is GEMM-bound (the forward equation and B's Gram
matrices, ~``30·P·n³ + 8·P²·n²`` flops per network at depth 10, P = N(N+1)/2).  On a machine
shared with other jobs, multi-threaded BLAS calls wait for threads the scheduler gives away:
``OPENBLAS_NUM_THREADS=1`` (one process per free core) was up to 5× faster there
(``benches/README.md``, issue 17 second pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util.validation import check_bool, check_inputs
from ..models import MLP, check_same_origin
from ..recursions import Theory, mlp_theory
from . import _jax_mlp
from ._dntk import DEFAULT_PROBES, DNTK_SUMS, dntk_sums
from ._dntk import bytes_per_network as dntk_bytes
from ._engine import (
    BACKENDS,
    DEFAULT_GROUPS,
    DEFAULT_NETWORKS,
    DEFAULT_SEED,
    Sampler,
    check_options,
    run,
    warn_float32,
)
from ._estimators import batch_sums
from ._results import Ensemble, MLPStderr, Packed, make_stderr

__all__ = ["BACKENDS", "ESTIMATORS", "Ensemble", "sample_mlp"]

ESTIMATORS = ("conditional", "direct")
#: Memory budget (bytes) for one numpy batch when ``batch=None``.
NUMPY_BATCH_BYTES = 96 * 2**20


# ============================================================================ shared kernel
# The per-batch computation is written once against an array namespace ``xp`` (numpy or
# jax.numpy) and is used by both backends.


def _describe(act: Any, d: int) -> str:
    """The activation (and, for a callable, the function of derivative ``d``) in an error message."""
    if act.is_custom:
        fs = (act.function, *act.derivatives)
        f = fs[d] if d < len(fs) else None
        return f"{act!r} [derivative {d}: {getattr(f, '__qualname__', repr(f))}]"
    return f"{act!r} [derivative {d}]"


def _checked(act: Any, d: int, dtype: Any) -> Any:
    """σ^(d) as a numpy function that raises a ValueError naming the activation on a non-finite value."""

    def f(z: np.ndarray) -> np.ndarray:
        out = np.asarray(act.numpy(z, d), dtype=dtype)
        if not np.all(np.isfinite(out)):
            bad = np.flatnonzero(~np.isfinite(out))[0]
            zb = np.asarray(z).reshape(-1)[bad]
            raise ValueError(
                f"the activation {_describe(act, d)} returned a non-finite value ({out.reshape(-1)[bad]}) at "
                f"z = {zb!r} (preactivations of these networks reach |z| = {float(np.max(np.abs(z))):.3g}); "
                "the sampler needs sigma and its derivatives finite wherever the networks go: fix the "
                "activation there (or use smaller C_W, C_b or inputs)"
            )
        return out

    return f


def _numpy_jet(act: Any, dtype: Any) -> tuple[Any, ...]:
    """σ and its first three derivatives as numpy functions (the dNTK estimators)."""
    return tuple(_checked(act, d, dtype) for d in range(4))


def _draw_probes(rng: np.random.Generator, B: int, widths: tuple[int, ...], hp: dict, r: int, dtype: Any) -> list:
    """Probe rows of layers 2..L: (B, r, n_{l-1}) with Var = C_W^(l)/n_{l-1}."""
    out = []
    for l in range(2, len(widths)):
        n = widths[l - 1]
        P = rng.standard_normal((B, r, n), dtype=np.float64)
        P *= math.sqrt(hp["C_W"][l - 1] / n)
        out.append(P.astype(dtype, copy=False))
    return out


def _numpy_activation(act: Any, dtype: Any) -> tuple[Any, Any]:
    """σ and σ' as numpy functions (raising on non-finite values)."""
    return _checked(act, 0, dtype), _checked(act, 1, dtype)


def _draw_numpy(rng: np.random.Generator, B: int, widths: tuple[int, ...], hp: dict, layers: int, dtype: Any):
    Ws, bs = [], []
    for l in range(1, layers + 1):
        n, m = widths[l - 1], widths[l]
        W = rng.standard_normal((B, m, n), dtype=np.float64)
        W *= math.sqrt(hp["C_W"][l - 1] / n)
        b = rng.standard_normal((B, m), dtype=np.float64)
        b *= math.sqrt(hp["C_b"][l - 1])
        Ws.append(W.astype(dtype, copy=False))
        bs.append(b.astype(dtype, copy=False))
    return Ws, bs


# ============================================================================ the run


@dataclass
class _Plan:
    net: MLP
    x: np.ndarray  # float64 (N, n0)
    widths: tuple[int, ...]  # (n0, n1, ..., nL)
    hp: dict[str, np.ndarray]
    consts: dict[str, np.ndarray]
    ntk: bool
    direct: bool
    dtype: Any
    layers_drawn: int  # number of layers whose weights are sampled
    dntk: bool = False
    probes: int = DEFAULT_PROBES

    @property
    def L(self) -> int:
        return len(self.widths) - 1

    @property
    def N(self) -> int:
        return self.x.shape[0]

    def bytes_per_network(self) -> int:
        N, item = self.N, np.dtype(self.dtype).itemsize
        nmax = max(self.widths[1:]) if self.L > 1 or self.direct else 1
        weights = sum(self.widths[l] * (self.widths[l - 1] + 1) for l in range(1, self.layers_drawn + 1))
        base = (weights + 6 * nmax * N) * item + 8 * N**4
        if self.ntk:
            base += 8 * N * N * nmax * nmax * item + 2 * N**3 * nmax * item
        if self.dntk:
            base += dntk_bytes(self.widths, N, self.probes, item)
        return int(base)

    def numpy_bytes_per_network(self) -> int:
        """Memory of one network in a numpy batch: with the conditional estimator the NTK is held
        by sample pairs (``_estimators``: P n^2 for P = N(N+1)/2, plus chunks), else as for JAX."""
        if not self.ntk or self.direct:
            return self.bytes_per_network()
        N, item = self.N, np.dtype(self.dtype).itemsize
        nmax = max(self.widths[1:]) if self.L > 1 else 1
        P = N * (N + 1) // 2
        dense = 8 * N * N * nmax * nmax * item + 2 * N**3 * nmax * item
        return int(self.bytes_per_network() - dense + (P * nmax * nmax + 2 * N * P * nmax) * item)


def _make_plan(net: MLP, x: np.ndarray, ntk: bool, direct: bool, dtype: Any, dntk: bool = False) -> _Plan:
    widths = net.layer_widths(x.shape[1])
    L = net.depth
    hp = {k: np.asarray(getattr(net, k), dtype=np.float64) for k in ("C_b", "C_W", "lambda_b", "lambda_W")}
    gram0 = x @ x.T / x.shape[1]
    consts = {"g1": hp["C_b"][0] + hp["C_W"][0] * gram0, "h1": hp["lambda_b"][0] + hp["lambda_W"][0] * gram0}
    layers_drawn = L if direct else L - 1
    return _Plan(net, x, widths, hp, consts, ntk, direct, dtype, layers_drawn, dntk)


def _pilot_shifts(plan: _Plan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer centring values for the streamed sums: Ĝ, Ĥ of a few pilot networks (layer 1 exact).

    Centring only improves the float64 accumulation of covariances; it does not change any
    estimate beyond rounding.  Layer 1 is centred on its exact (deterministic) value.
    """
    L, N = plan.L, plan.N
    sg = np.zeros((L, N, N))
    sh = np.zeros((L, N, N))
    sg[0], sh[0] = plan.consts["g1"], plan.consts["h1"]
    if L == 1 and not plan.direct:
        return sg, sh
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 - 1,)))
    B = 4
    Ws, bs = _draw_numpy(rng, B, plan.widths, plan.hp, plan.layers_drawn, np.float64)
    zero = (np.zeros((L, N, N)), np.zeros((L, N, N)))
    # a custom activation may lack a numpy sigma' (the jax backend differentiates it): then
    # centre the NTK sums on the layer-1 value only
    act = plan.net.activation
    ntk = plan.ntk and not (act.is_custom and len(act.derivatives) < 1)
    fns = _numpy_activation(act, np.float64)
    s: dict[str, np.ndarray] = {}
    for i in range(B):  # one network at a time: the pilot needs no more memory than a batch of one
        si = batch_sums(
            np,
            fns,
            plan.x,
            [W[i : i + 1] for W in Ws],
            [b[i : i + 1] for b in bs],
            plan.hp,
            plan.consts,
            zero,
            B=1,
            widths=plan.widths,
            ntk=ntk,
            direct=plan.direct,
            fb=False,
            packed=not plan.direct,
        )
        for k in ("Sx", "Sy"):
            if k in si:
                s[k] = si[k] + s[k] if k in s else si[k]
    sg[1:] = s["Sx"][1:] / B
    if ntk:
        sh[1:] = s["Sy"][1:] / B
    elif plan.ntk:
        sh[1:] = plan.consts["h1"]
    if plan.direct:  # layer 1 of the direct estimator is random in X
        sg[0] = s["Sx"][0] / B
    return sg, sh


def _estimates(s: dict[str, np.ndarray], shifts: tuple[np.ndarray, np.ndarray], nprev: np.ndarray, ntk: bool) -> dict:
    """Every estimator from (group or pooled) sums."""
    c = float(s["count"])
    packed = s["Pxx"].ndim == 2  # numpy, conditional: the four-point sums by sample pairs (_estimators.unpack)
    n4 = nprev[:, None, None, None, None]
    est: dict[str, np.ndarray] = {}
    ia, ic = np.triu_indices(s["Sx"].shape[-1])
    t0, t1 = np.triu_indices(ia.size)

    def cov(P: str, Q: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """The covariance estimate and its n_{l-1} normalisation (broadcast to its packing)."""
        Qv = s.get(Q, s[P])
        if not packed:
            return s[P] / c - (np.einsum("lij,lkm->lijkm", s[a], s[b]) - Qv) / (c * (c - 1)), n4
        Sa, Sb = s[a][:, ia, ic], s[b][:, ia, ic]
        outer = Sa[:, t0] * Sb[:, t1] if s[P].ndim == 2 else np.einsum("li,lk->lik", Sa, Sb)
        return s[P] / c - (outer - Qv) / (c * (c - 1)), nprev.reshape((-1,) + (1,) * (s[P].ndim - 1))

    def scaled(v: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return v[1] * v[0]

    est["K"] = shifts[0] + s["Sx"] / c
    est["V"] = scaled(cov("Pxx", "Qxx", "Sx", "Sx"))
    if ntk:
        est["Theta"] = shifts[1] + s["Sy"] / c
        est["D"] = scaled(cov("Pxy", "Qxy", "Sx", "Sy"))
        est["A"] = scaled(cov("Pyy", "Qyy", "Sy", "Sy"))
        if packed:  # unpacked (and transposed to F's, B's index order) on access
            est["F"] = nprev[:, None, None, None] * (s["Fs"] / c)
            est["B"] = nprev[:, None, None] * (s["Bs"] / c)
        else:
            est["F"] = n4 * np.transpose(s["Fs"] / c, (0, 1, 3, 2, 4))
            est["B"] = n4 * np.transpose(s["Bs"] / c, (0, 1, 3, 2, 4))
    for key in DNTK_SUMS:
        if key in s:
            est[key[0]] = s[key] / c  # already n_{l-1}-normalised per network
    return est


#: The packed form of each four-point estimate of the numpy conditional estimator.
PACKED = {"V": "tri", "D": "sym", "A": "tri", "F": "F", "B": "B"}


def _lazy(d: dict[str, Any], N: int) -> None:
    """In place: the packed four-point estimates (or standard errors) of ``d`` wrapped as
    :class:`~rgflow.ensembles._results.Packed`, unpacked by the result on first attribute access."""
    for key, kind in PACKED.items():
        if key in d and d[key].ndim != 5:
            d[key] = Packed(kind, d[key], N)


def _infinite_width(net: MLP, x: np.ndarray, theory: Any, ntk: bool) -> tuple[Any, Any, str | None]:
    L, N = net.depth, x.shape[0]
    if theory is False:
        return None, None, None
    if theory is not None:
        if not isinstance(theory, Theory):
            raise TypeError(f"theory must be an rgflow.Theory (infinite-width K, Theta), got {type(theory).__name__}")
        check_same_origin(
            "rgflow.sample(theory=)", ("theory", theory.net, theory.x), ("the sampled net", net, x), widths="ignore"
        )
        K = np.asarray(theory.K, dtype=float)
        if K.shape != (L, N, N):
            raise ValueError(f"theory.K has shape {K.shape}, expected {(L, N, N)} for this network and x")
        Th = None
        if ntk:
            if theory.Theta is None:
                raise ValueError("theory has no Theta; compute it with ntk=True or pass ntk=False")
            Th = np.asarray(theory.Theta, dtype=float)
        return K, Th, "theory argument"
    try:
        th = mlp_theory(net, x, ntk=ntk, order=0)
        return th.K, th.Theta, "rgflow.theory(order=0)"
    except (ImportError, NotImplementedError, ValueError) as exc:
        errors = [f"rgflow.theory: {exc}"]
    warnings.warn(
        "no infinite-width K/Theta available (" + "; ".join(errors) + "); K1 and Theta1 are left None. "
        "Pass theory=rgflow.theory(net, x, order=0) to get them.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None, None, None


def _check_dntk(net: MLP, backend: str) -> None:
    act = net.activation
    if act.kinked:
        raise ValueError(
            f"dntk=True needs a smooth activation: the sampled second derivatives of {act.name!r} networks "
            "miss the delta functions at the kink that the theory's P, Q contain (and R-U are undefined)"
        )
    if act.is_custom and len(act.derivatives) < 3 and backend == "numpy":
        raise ValueError(
            "dntk=True with backend='numpy' needs sigma', sigma'', sigma'''; pass "
            "Activation.from_callable(f, derivatives=[f1, f2, f3]) or use backend='jax'"
        )


def sample_mlp(
    net: MLP,
    x: Any,
    networks: int = DEFAULT_NETWORKS,
    seed: int = DEFAULT_SEED,
    backend: str = "numpy",
    batch: int | None = None,
    dtype: str = "float64",
    devices: Sequence[Any] | None = None,
    theory: Theory | None | bool = None,
    groups: int = DEFAULT_GROUPS,
    progress: bool = True,
    ntk: bool = True,
    estimator: str = "conditional",
    dntk: bool = False,
) -> Ensemble:
    """Sample ``networks`` finite-width MLPs and estimate every tensor with standard errors.

    Parameters
    ----------
    net: the :class:`~rgflow.MLP` (hidden widths, output width, per-layer C_b, C_W, λ_b, λ_W).
    x: inputs, shape (N, n0).
    networks: number of independent networks (>= 2 per group; groups differ in size by at most one).
    seed: random seed.  numpy: batch k uses ``default_rng(SeedSequence(seed, spawn_key=(k,)))``
        (the k-th child of ``SeedSequence(seed).spawn``), so results are reproducible for a given
        seed and batch size.  jax: network i uses ``fold_in(key(seed), i)``, so results do not
        depend on the batch size or on the number of devices (up to summation order).
    backend: ``"numpy"`` or ``"jax"`` (``pip install rgflow[jax]``; jit + vmap + lax.scan,
        sharded over ``devices``).
    batch: networks per batch (default: from a memory budget).  With jax it is rounded up to a
        multiple of the number of devices.
    dtype: ``"float64"`` (default) or ``"float32"`` for the network forward pass; the sums are
        accumulated in float64 either way.  float32 warns: the 1/n quantities (K1, Θ1 and the
        four-point tensors) are differences of O(1) numbers and lose precision.
    devices: jax devices to shard batches over (default: all ``jax.devices()``).
    theory: a :class:`~rgflow.Theory` providing the infinite-width K and Θ used for K1 and
        Θ1.  If None: ``rgflow.theory(net, x, order=0)`` (Rust core) if importable, else
        ``rgflow.reference.theory(net, x, order=0)`` (numpy reference), else K1 and Θ1 are
        None (with a warning).  ``theory=False`` skips this: K1 and Θ1 are None.
    groups: number of independent groups for batch-means standard errors.
    progress: show a progress line on stderr for runs longer than ~2 s.
    ntk: also estimate the NTK family (Theta, Theta1, D, F, A, B).
    estimator: ``"conditional"`` (default; exact conditional means over the layer-l weights,
        lowest variance) or ``"direct"`` (products over distinct sampled neurons i != j; needs
        all n_l >= 2; a cross-check).
    dntk: also estimate the dNTK family P, Q, R, S, T, U (``dntk.md`` §1.3; smooth activations
        only; default False: the other estimates, their speed and memory are unchanged, and with
        ``dntk=True`` the other estimates are bitwise those of ``dntk=False``).

    Returns
    -------
    :class:`Ensemble`.  Note that ``ens.K`` and ``ens.Theta`` are the *sampled means*
    (``K + K1/n`` and ``Θ + Θ1/n`` to first order), not the infinite-width kernels.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    opts = check_options(networks, groups, seed, batch, backend, dtype, devices, progress)
    ntk, dntk = check_bool("ntk", ntk), check_bool("dntk", dntk)
    if theory is True:
        raise TypeError("theory must be an rgflow.Theory, None (computed) or False (skip K1, Theta1), got True")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator={estimator!r}; choose one of {ESTIMATORS}")
    warn_float32(opts, "K1 = n (E[G] - K), Theta1 and the four-point tensors")
    direct = estimator == "direct"
    widths = net.layer_widths(x.shape[1])
    if direct and min(widths[1:]) < 2:
        raise ValueError(
            f"estimator='direct' needs at least 2 neurons in every layer (pairs i != j); widths are {widths[1:]}; "
            "use estimator='conditional'"
        )
    if ntk and net.activation.is_custom and len(net.activation.derivatives) < 1 and backend == "numpy":
        raise ValueError("ntk=True needs sigma'; pass Activation.from_callable(f, derivatives=[f1]) or ntk=False")
    if dntk:
        _check_dntk(net, backend)
    K_inf, Th_inf, source = _infinite_width(net, x, theory, ntk)

    plan = _make_plan(net, x, ntk, direct, opts.np_dtype, dntk)
    shifts = _pilot_shifts(plan, opts.seed)
    nprev = np.array(widths[:-1], dtype=np.float64)
    act = _numpy_activation(net.activation, plan.dtype)
    xd = plan.x.astype(plan.dtype)

    jet = _numpy_jet(net.activation, plan.dtype) if dntk else None

    def numpy_sums(rng: np.random.Generator, B: int, into: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        Ws, bs = _draw_numpy(rng, B, plan.widths, plan.hp, plan.layers_drawn, plan.dtype)
        out = batch_sums(
            np,
            act,
            xd,
            Ws,
            bs,
            plan.hp,
            plan.consts,
            shifts,
            B=B,
            widths=plan.widths,
            ntk=ntk,
            direct=direct,
            into=into,
            packed=not direct,
        )
        if dntk:
            probes = _draw_probes(rng, B, plan.widths, plan.hp, plan.probes, plan.dtype)
            for k, v in dntk_sums(np, jet or (), xd, Ws, bs, probes, plan.hp, plan.consts["h1"], L=plan.L).items():
                if into is not None:
                    out[k] += v
                else:
                    out[k] = v
        return out

    def jax_group(devs: tuple[Any, ...], nb: int, bs: int) -> Any:
        return _jax_mlp.group_function(plan, shifts, devs, nb, bs)

    res = run(
        opts,
        Sampler(
            label="MLP",
            numpy_sums=numpy_sums,
            numpy_accumulates=True,
            numpy_batch=NUMPY_BATCH_BYTES // max(1, plan.numpy_bytes_per_network()),
            estimates=lambda s: _estimates(s, shifts, nprev, ntk),
            jax_group=jax_group,
            bytes_per_network=plan.bytes_per_network(),
        ),
    )
    est, se = res.estimates, res.stderr
    bad = [k for k, v in est.items() if not np.all(np.isfinite(v))]
    if bad:  # the jax backend cannot raise inside the compiled kernel: check the results
        raise ValueError(
            f"the sampled {', '.join(bad)} are not finite: the activation {_describe(net.activation, 0)} "
            "(or a derivative of it) returned nan/inf at preactivations these networks reach; fix the "
            "activation there (or use smaller C_W, C_b or inputs)"
        )
    _lazy(est, plan.N)
    _lazy(se, plan.N)
    n3 = nprev[:, None, None]
    if K_inf is not None:
        est["K1"] = n3 * (est["K"] - K_inf)
        se["K1"] = n3 * se["K"]
    if ntk and Th_inf is not None:
        est["Theta1"] = n3 * (est["Theta"] - Th_inf)
        se["Theta1"] = n3 * se["Theta"]
    return Ensemble(
        net=net,
        x=x,
        networks=opts.networks,
        groups=opts.groups,
        seed=opts.seed,
        backend=opts.backend,
        dtype=opts.dtype,
        estimator=estimator,
        batch=res.batch,
        elapsed=res.elapsed,
        networks_per_second=res.networks_per_second,
        widths=tuple(int(v) for v in nprev),
        infinite_width=source,
        K_infinite=K_inf,
        Theta_infinite=Th_inf,
        stderr=make_stderr(MLPStderr, se),
        **{k: est.get(k) for k in MLPStderr.ESTIMATES},  # type: ignore[arg-type]
    )
