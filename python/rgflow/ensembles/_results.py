"""Result classes of :func:`rgflow.sample`: dataclasses with declared fields, one naming.

* ``K`` is the sampled mean kernel in every result; ``V`` is ``n·Cov(Ĝ, Ĝ)`` (same index order).
* Standard errors live only in ``ens.stderr.<name>``: a frozen dataclass with the same field
  names (and shapes) as the estimates.
* ``K1`` is the attribute ``n·(K − K∞)`` (None when no infinite-width kernel was available);
  ``ens.k1(theory)`` returns ``(n·(K − theory's K∞), its stderr)`` for any theory object.
* The four-point tensors V, D, F, A, B of an :class:`Ensemble` (and of its ``stderr``) may be held
  packed by their sample symmetries (:class:`Packed`, the numpy conditional estimator): the full
  ``(L, N, N, N, N)`` array is built on first access of the attribute and kept (:class:`_Lazy`), so
  a result whose four-point tensors are not all read never holds them all unpacked.

The names of rgflow 0.1 (``G``, ``G_err``, ``V4``, ``V_err``, ``Sigma_err``, …, ``U1(theory)``) are
kept for one release as properties that warn with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ._estimators import unpack

Array = np.ndarray


class Packed:
    """A four-point estimate or standard error held by its sample symmetries: ``kind`` and
    ``data`` as in :func:`rgflow.ensembles._estimators.unpack` (leading layer axis), N inputs."""

    __slots__ = ("N", "data", "kind")

    def __init__(self, kind: str, data: Array, N: int) -> None:
        self.kind, self.data, self.N = kind, data, N

    def full(self) -> Array:
        """The full (L, N, N, N, N) array (every entry a copy of one packed number)."""
        return unpack(self.kind, self.data, self.N)


class _Lazy:
    """A dataclass field (default None) that may be set to a :class:`Packed` value: the first
    attribute access unpacks it, keeps the full array in its place (freeing the packed one) and
    returns it; later accesses return that same array.  Any other value is stored as is."""

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Array | None:
        if obj is None:
            return None  # the dataclass default
        v = obj.__dict__.get(self.name)
        if isinstance(v, Packed):
            v = obj.__dict__[self.name] = v.full()
        return v

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = value


def _stored(obj: object, name: str) -> Any:
    """The value of field ``name`` as held: a :class:`Packed` tensor's packed data (not unpacked)."""
    v = obj.__dict__.get(name) if name in obj.__dict__ else getattr(obj, name)
    return v.data if isinstance(v, Packed) else v


def _deprecated(cls: str, old: str, new: str) -> None:
    warnings.warn(f"{cls}.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


class _DeprecatedAlias:
    """A read-only rgflow 0.1 attribute name that warns and returns ``self.<path>`` (e.g. ``G`` →
    ``K``, ``G_err`` → ``stderr.K``), kept for one release."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Array:
        if obj is None:
            raise AttributeError(self.name)
        _deprecated(type(obj).__name__, self.name, f"{type(obj).__name__}.{self.path}")
        value: Any = obj
        for part in self.path.split("."):
            value = getattr(value, part)
        return np.asarray(value)


def theory_kernel(theory: Any) -> np.ndarray:
    """The infinite-width kernel of a theory object (``K``; ``K0`` for rgflow 0.1's PreResTheory)."""
    k = getattr(theory, "K", None)
    if k is None:
        k = getattr(theory, "K0", None)
    if k is None:
        raise TypeError(f"theory must have an infinite-width kernel K, got {type(theory).__name__}")
    return np.asarray(k, dtype=float)


def theory_vertex(theory: Any) -> np.ndarray | None:
    """The four-point vertex of a theory object (``V``; ``V4`` for rgflow 0.1's PreResTheory)."""
    v = getattr(theory, "V", None)
    if v is None:
        v = getattr(theory, "V4", None)
    return None if v is None else np.asarray(v, dtype=float)


class _Estimates:
    """The estimates and standard errors of a result, by name."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ()

    def tensors(self) -> dict[str, Array]:
        """The estimated tensors by name (None-valued ones left out; packed ones unpacked)."""
        return {k: getattr(self, k) for k in self.names()}

    def names(self) -> list[str]:
        """The names of the estimated tensors (None-valued ones left out), without unpacking any."""
        return [k for k in self.ESTIMATES if _stored(self, k) is not None]

    def stored(self) -> dict[str, Array]:
        """The tensors as held (packed ones as their packed data, leading layer axis), e.g. to check
        them for NaN without building the full arrays."""
        return {k: _stored(self, k) for k in self.names()}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {', '.join(self.names())}>"


# ------------------------------------------------------------------------------------ standard errors


@dataclass(frozen=True, eq=False, repr=False)
class MLPStderr(_Estimates):
    """Standard errors of an :class:`Ensemble` (same names and shapes as its estimates)."""

    ESTIMATES: ClassVar[tuple[str, ...]] = (
        "K",
        "K1",
        "Theta",
        "Theta1",
        "V",
        "D",
        "F",
        "A",
        "B",
        "P",
        "Q",
        "R",
        "S",
        "T",
        "U",
    )
    K: Array | None = None
    K1: Array | None = None
    Theta: Array | None = None
    Theta1: Array | None = None
    V: Array | None = _Lazy()  # type: ignore[assignment]
    D: Array | None = _Lazy()  # type: ignore[assignment]
    F: Array | None = _Lazy()  # type: ignore[assignment]
    A: Array | None = _Lazy()  # type: ignore[assignment]
    B: Array | None = _Lazy()  # type: ignore[assignment]
    P: Array | None = None
    Q: Array | None = None
    R: Array | None = None
    S: Array | None = None
    T: Array | None = None
    U: Array | None = None


@dataclass(frozen=True, eq=False, repr=False)
class ResStderr(_Estimates):
    """Standard errors of a :class:`ResEnsemble`."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ("K", "K1", "V", "S")
    K: Array
    V: Array
    S: Array
    K1: Array | None = None


@dataclass(frozen=True, eq=False, repr=False)
class PreResStderr(_Estimates):
    """Standard errors of a :class:`PreResEnsemble`."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ("K", "K1", "V", "Sigma", "V_GS", "V_SS")
    K: Array
    V: Array
    Sigma: Array
    V_GS: Array
    V_SS: Array
    K1: Array | None = None


def make_stderr(cls: type, se: dict[str, Array]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in se.items() if k in names})


# ------------------------------------------------------------------------------------ results


@dataclass(eq=False, repr=False, kw_only=True)
class _Result(_Estimates):
    """Fields every result has."""

    net: Any
    networks: int
    groups: int
    seed: int
    backend: str
    batch: int
    dtype: str
    elapsed: float
    networks_per_second: float

    def _n(self) -> np.ndarray:
        """Normalisation width per recorded layer (``widths``), broadcastable against K."""
        return np.asarray(getattr(self, "widths"), dtype=float)[:, None, None]  # noqa: B009

    def k1(self, theory: Any) -> tuple[Array, Array]:
        """``n·(K − K∞)`` with the infinite-width kernel of ``theory``, and its standard error."""
        K = theory_kernel(theory)
        if K.shape != self.K.shape:  # type: ignore[attr-defined]
            raise ValueError(f"theory kernel has shape {K.shape}, expected {self.K.shape}")  # type: ignore[attr-defined]
        n = self._n()
        return n * (self.K - K), n * self.stderr.K  # type: ignore[attr-defined]


@dataclass(eq=False, repr=False, kw_only=True)
class Ensemble(_Result):
    """Monte-Carlo estimates from sampled MLPs (see :func:`rgflow.ensembles.sample_mlp`).

    Attributes
    ----------
    K, Theta: (L, N, N) sampled means E[Ĝ], E[Θ̂_ii] -- first order ``K + K1/n``, ``Θ + Θ1/n``.
    mean_metric, mean_ntk: the same arrays (raw sampled means).
    K1, Theta1: (L, N, N) ``n_{l-1} (E - infinite width)``; None if no infinite-width values.
    V, D, F, A, B: (L, N, N, N, N), index order as :class:`rgflow.Theory` (numpy backend,
        conditional estimator: held packed by their sample symmetries, ~1/5 of N⁴ per layer at
        N = 32, and built on first access; :meth:`stored` gives the packed numbers).
    P, Q, R, S, T, U: (L, N, N, N, N), the dNTK/ddNTK tensors (``dntk=True`` only, else None),
        index order as :class:`rgflow.Theory` (``dntk.md`` §1.3); layer 1 is exactly 0.
    stderr: :class:`MLPStderr`, the standard error of every tensor above.
    widths: n_{l-1} per layer (the normalisation of layer l).
    infinite_width: where K∞ and Θ∞ came from (K_infinite, Theta_infinite hold them).
    networks, groups, seed, backend, dtype, estimator, batch, elapsed, networks_per_second.
    """

    ESTIMATES: ClassVar[tuple[str, ...]] = MLPStderr.ESTIMATES
    x: Array
    estimator: str
    widths: tuple[int, ...]
    infinite_width: str | None
    K_infinite: Array | None
    Theta_infinite: Array | None
    K: Array
    stderr: MLPStderr
    K1: Array | None = None
    Theta: Array | None = None
    Theta1: Array | None = None
    V: Array | None = _Lazy()  # type: ignore[assignment]
    D: Array | None = _Lazy()  # type: ignore[assignment]
    F: Array | None = _Lazy()  # type: ignore[assignment]
    A: Array | None = _Lazy()  # type: ignore[assignment]
    B: Array | None = _Lazy()  # type: ignore[assignment]
    P: Array | None = None
    Q: Array | None = None
    R: Array | None = None
    S: Array | None = None
    T: Array | None = None
    U: Array | None = None

    @property
    def mean_metric(self) -> Array:
        return self.K

    @property
    def mean_ntk(self) -> Array | None:
        return self.Theta

    @property
    def depth(self) -> int:
        return int(self.net.depth)

    def __repr__(self) -> str:
        return (
            f"Ensemble({self.net!r}, N={self.x.shape[0]}, networks={self.networks}, groups={self.groups}, "
            f"backend={self.backend!r}, estimator={self.estimator!r}, tensors=[{', '.join(self.names())}])"
        )


@dataclass(eq=False, repr=False, kw_only=True)
class ResEnsemble(_Result):
    """Sampled residual MLPs (see :func:`rgflow.ensembles.sample_resmlp`): ``K`` (L, N, N) mean
    kernel, ``V`` (L, N, N, N, N) = n·Cov, ``S`` (L, N, N, N) third cumulant, ``K1`` = n(K − K∞)
    (with ``theory=``); standard errors in ``stderr``."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ResStderr.ESTIMATES
    x: Array
    width: int
    K: Array
    V: Array
    S: Array
    stderr: ResStderr
    K1: Array | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.width,) * self.K.shape[0]

    G = _DeprecatedAlias("K")
    G_err = _DeprecatedAlias("stderr.K")
    V_err = _DeprecatedAlias("stderr.V")
    S_err = _DeprecatedAlias("stderr.S")

    def __repr__(self) -> str:
        return f"ResEnsemble(networks={self.networks}, width={self.width}, L={self.K.shape[0]}, N={self.K.shape[1]})"


@dataclass(eq=False, repr=False, kw_only=True)
class PreResEnsemble(_Result):
    """Sampled pre-activation ResNets (see :func:`rgflow.ensembles.sample_preresnet`), at the
    recorded ``layers`` (times ``t = ε²ℓ``): ``K`` (M, N, N) mean kernel Ḡ, ``V`` (M, N, N, N, N) =
    n·Cov(G, G), ``Sigma`` (M, N, N) mean ``Σ̂ = σ(φ)ᵀσ(φ)/n``, ``V_GS = n·Cov(G, Σ̂)``,
    ``V_SS = n·Cov(Σ̂, Σ̂)``, ``K1`` = n(K − K∞) (with ``theory=``); standard errors in ``stderr``."""

    ESTIMATES: ClassVar[tuple[str, ...]] = PreResStderr.ESTIMATES
    x: Array | None
    kernel: Array
    sampler: str
    width: int
    layers: Array
    t: Array
    K: Array
    V: Array
    Sigma: Array
    V_GS: Array
    V_SS: Array
    stderr: PreResStderr
    K1: Array | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.width,) * len(self.layers)

    def u1(self, theory: Any) -> tuple[Array, Array]:
        """``U1 = n(mean Σ̂ − ⟨σσ⟩_{K∞})`` with ``theory.E2``, and its standard error."""
        return self.width * (self.Sigma - np.asarray(theory.E2)), self.width * self.stderr.Sigma

    def U1(self, theory: Any) -> tuple[Array, Array]:
        _deprecated("PreResEnsemble", "U1(theory)", "PreResEnsemble.u1(theory)")
        return self.u1(theory)

    G = _DeprecatedAlias("K")
    G_err = _DeprecatedAlias("stderr.K")
    V4 = _DeprecatedAlias("V")
    V4_err = _DeprecatedAlias("stderr.V")
    Sigma_err = _DeprecatedAlias("stderr.Sigma")
    V_GS_err = _DeprecatedAlias("stderr.V_GS")
    V_SS_err = _DeprecatedAlias("stderr.V_SS")

    def __repr__(self) -> str:
        return (
            f"PreResEnsemble(networks={self.networks}, width={self.width}, sampler={self.sampler!r}, "
            f"layers={[int(v) for v in self.layers]}, N={self.K.shape[1]})"
        )


@dataclass(frozen=True, eq=False, repr=False)
class DepthMuPStderr(_Estimates):
    """Standard errors of a :class:`DepthMuPEnsemble` (same names and shapes as its estimates)."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ("K", "G", "Theta", "Theta_decoupled")
    K: Array
    G: Array
    Theta: Array
    Theta_decoupled: Array | None = None


@dataclass(eq=False, repr=False, kw_only=True)
class DepthMuPEnsemble(_Result):
    """Sampled depth-μP ResNets at initialisation (see :func:`rgflow.ensembles.sample_depthmup`).

    Attributes
    ----------
    K, G: (L+1, N, N) mean forward and gradient kernels at ℓ = 0..L.
    Theta: (N, N) mean empirical NTK; Theta_decoupled: (N, N) mean first-step kernel of the
        decoupled twin (None with ``decoupled=False``).
    stderr: :class:`DepthMuPStderr`.  x, width, and the common fields of every result.
    """

    ESTIMATES: ClassVar[tuple[str, ...]] = DepthMuPStderr.ESTIMATES
    x: Array
    width: int
    K: Array
    G: Array
    Theta: Array
    stderr: DepthMuPStderr
    Theta_decoupled: Array | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.width,) * self.K.shape[0]
