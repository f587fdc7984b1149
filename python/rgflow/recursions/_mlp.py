"""First-order finite-width theory of an MLP at initialisation (the Rust recursion engine).

Tensors, each float64, layer axis 0 = layer 1 (``docs/spec/ntk.md`` §1.2):

* ``K, K1, Theta, Theta1``: shape (L, N, N).  Mean metric ``K + K1/n_{l-1}``, NTK mean
  ``Theta + Theta1/n_{l-1}``.
* ``V[l, a1, a2, a3, a4] = V_{(a1 a2)(a3 a4)}`` four-point vertex,
  ``D[l, a1, a2, a3, a4] = D_{a1 a2 a3 a4}``, ``F[l, a1, a2, a3, a4] = F_{a1 a2 a3 a4}``
  (slots 1, 3 preactivation samples, 2, 4 NTK samples),
  ``A[l, a1, a2, a3, a4] = A_{(a1 a2)(a3 a4)}``, ``B[l, a1, a2, a3, a4] = B_{a1 a2 a3 a4}``:
  shape (L, N, N, N, N).  Every layer-l tensor multiplies ``1/n_{l-1}``.
* ``layers=`` keeps only some layers (axis 0 follows :attr:`Theory.layers`), ``tensors=`` only
  some families, and ``tuples=`` (M, 4) gives the four-point families as (n_layers, M) arrays at
  those sample tuples (``th.V[l, m] == V[l, *tuples[m]]``); the engine propagates only what they
  need (issue 14).
* With ``dntk=True`` (``docs/spec/dntk.md`` §1.3, each tensor in its own subscript order):
  ``P[l, d0, d1, d2, d3] = P_{d0 d1 d2 d3}``, ``Q`` likewise (dNTK-preactivation
  cross-correlations, PDLT (11.30)), ``R`` (first ddNTK mean, (∞.11)), ``S``, ``T``, ``U``
  (second ddNTK mean, (∞.12): ``T[l, a, b, c, d] = T_{abcd}``, so the recursion's
  ``T_{1342}`` is ``T[l, d1, d3, d4, d2]``), all (L, N, N, N, N), each multiplying ``1/n_{l-1}``.
  ``layers=`` and ``tensors=`` (names among P…U too) apply: the dNTK family streams through the
  unkept layers and only the asked families and what they read (R → P, T → Q; B, F) are propagated;
  ``tuples=`` is refused with ``dntk``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._util.limits import check_cost, check_memory, max_evaluations
from .._util.native import core as _core
from .._util.validation import check_bool, check_inputs, check_int, check_quad_order
from ..gauss import core_activation, quadrature_only
from ..models import MLP
from ._overflow import check_finite_result, is_overflow_error, overflow_cause

#: Tensors of the first-order theory; the (L, N, N) ones and the (L, N, N, N, N) ones.
TWO_POINT = ("K", "K1", "Theta", "Theta1")
FOUR_POINT = ("V", "D", "F", "A", "B")
ALL_TENSORS = TWO_POINT + FOUR_POINT
#: The dNTK family (``rgflow.theory(..., dntk=True)``; ``dntk.md``): P, Q and the ddNTK means R, S, T, U.
DNTK_TENSORS = ("P", "Q", "R", "S", "T", "U")
#: Every tensor a :class:`Theory` can hold.
THEORY_TENSORS = ALL_TENSORS + DNTK_TENSORS
#: Activations whose expectations the core evaluates in closed form (``expectations="auto"``).
CLOSED_FORM = ("relu", "leaky_relu", "linear", "monomial", "erf", "gelu")


def _default_order(dim: int) -> int:
    """The core's default nodes per piece for ``dim`` integrated directions (``nested.rs``)."""
    return {0: 64, 1: 64, 2: 32, 3: 16, 4: 12}.get(dim, 8)


def theory_memory(
    n_unique: int,
    n_inputs: int,
    depth: int,
    ntk: bool,
    order: int,
    dntk: bool,
    kinked: bool,
    *,
    n_layers: int | None = None,
    tensors: tuple[str, ...] | None = None,
    closure: tuple[int, int, int] | None = None,
) -> float:
    """Estimated peak bytes of :func:`mlp_theory`.

    Dense and every layer (the defaults): the (L, N, N, N, N) tensors (at the unique inputs, and
    again at all inputs when some repeat) and the per-layer working tables of the core.  With
    ``n_layers`` kept, the families ``tensors`` asked for (and those they depend on) and
    ``closure`` = (M tuples asked, tuples propagated, multisets per layer) for ``tuples=``: the kept
    layers of the asked families, one layer of each propagated family, the new layer, one
    contraction, the four-point expectations per multiset, and for a kinked activation with
    ``dntk`` the NaN ddNTK tensors."""
    L_keep = depth if n_layers is None else n_layers
    n4u = float(n_unique) ** 4
    if dntk and (n_layers is not None or tensors is not None):
        # streaming: the kept layers of the asked four-point families; one layer of each propagated
        # family and its new layer; the expectation tables
        asked = set(tensors) if tensors is not None else set(ALL_TENSORS + DNTK_TENSORS)
        dn = asked & set(DNTK_TENSORS)
        dn_prop = dn | ({"P"} if "R" in dn else set()) | ({"Q"} if "T" in dn else set())
        need = _needed(asked - dn) | ({"B"} if dn_prop & {"P", "R", "S"} else set())
        need |= {"F"} if dn_prop & {"Q", "T"} else set()
        n_asked = sum(t in asked for t in FOUR_POINT + DNTK_TENSORS)
        n_prop = sum(t in need for t in FOUR_POINT) + len(dn_prop)
        patterns = 1 + 2 * ntk + 1 + 2 * (not kinked and bool(dn & {"R", "S", "T", "U"}))
        out = n_asked * L_keep * n4u
        if n_inputs != n_unique:
            out += n_asked * L_keep * float(n_inputs) ** 4
        work = (2 * n_prop + 2) * n4u + 12.0 * patterns * math.comb(n_unique + 3, 4)
        return 8.0 * (out + work + 4 * L_keep * n_inputs**2 + 2 * n_unique**2)
    if dntk or order == 0:
        four = (1 + 4 * ntk + 2 * dntk + 4 * dntk) if order == 1 else 0
        patterns = (1 + 2 * ntk + dntk + 2 * (dntk and not kinked)) if order == 1 else 0
        out = four * depth * n4u
        if n_inputs != n_unique:
            out += four * depth * float(n_inputs) ** 4
        work = (2 * patterns + four + 2) * n4u if order == 1 else 0.0
        return 8.0 * (out + work + 4 * L_keep * n_unique**2)
    asked = set(tensors) if tensors is not None else set(ALL_TENSORS if ntk else ("K", "K1", "V"))
    need = _needed(asked)
    n_asked = sum(t in asked for t in FOUR_POINT)
    n_need = sum(t in need for t in FOUR_POINT)
    if closure is None:
        space, m4, multisets = n4u, n4u, math.comb(n_unique + 3, 4)
        out = n_asked * L_keep * m4
        if n_inputs != n_unique:
            out += n_asked * L_keep * float(n_inputs) ** 4
    else:
        m4, space, multisets = float(closure[0]), float(closure[1]), closure[2]
        out = n_asked * L_keep * m4 + 4.0 * m4  # and the tuple list in the core
    work = (n_need + 2) * space + 12.0 * multisets if n_need else 0.0
    return 8.0 * (out + work + 4 * L_keep * n_inputs**2 + 2 * n_unique**2)


def _needed(asked: set[str]) -> set[str]:
    """The families propagated to compute ``asked`` (each recursion's inputs, closed)."""
    need = set(asked) | {"K"}
    if "Theta1" in need:
        need |= {"K1", "D", "F"}
    if "A" in need:
        need |= {"D"}
    if need & {"D", "K1"}:
        need |= {"V"}
    return need


def theory_cost(n: int, depth: int, q: int | None) -> float:
    """Estimated quadrature nodes of the four-point tables with a fixed order ``q`` per piece
    (``None``: the core's default per dimension): for each of the L - 1 layer steps, each
    multiset of four of the n inputs with k distinct samples (there are C(n, k)·C(3, k-1)) costs
    (2q)^k nodes."""
    per_layer = sum(
        math.comb(n, k) * math.comb(3, k - 1) * (2.0 * (q if q is not None else _default_order(k))) ** k
        for k in range(1, 5)
    )
    return max(depth - 1, 0) * per_layer


class Theory:
    """Result of :func:`rgflow.theory`: tensors plus the network and inputs they came from.

    Tensors not computed (``ntk=False``, ``order=0``, ``dntk=False`` or left out of ``tensors=``)
    are ``None``.  ``layers``: the 1-based layers kept, in order (axis 0 of every array);
    ``tuples``: the (M, 4) sample tuples the four-point arrays (n_layers, M) are given at, or
    None for the dense (n_layers, N, N, N, N) arrays.
    """

    def __init__(
        self,
        net: MLP,
        x: np.ndarray,
        tensors: dict[str, np.ndarray | None],
        options: dict[str, Any] | None = None,
        *,
        layers: tuple[int, ...] | None = None,
        tuples: np.ndarray | None = None,
    ):
        self.net = net
        self.x = x
        self.options = dict(options or {})
        self.layers: tuple[int, ...] = tuple(range(1, net.depth + 1)) if layers is None else tuple(layers)
        self.tuples: np.ndarray | None = tuples
        self.K: np.ndarray = tensors["K"]  # type: ignore[assignment]
        self.K1: np.ndarray | None = tensors.get("K1")
        self.Theta: np.ndarray | None = tensors.get("Theta")
        self.Theta1: np.ndarray | None = tensors.get("Theta1")
        self.V: np.ndarray | None = tensors.get("V")
        self.D: np.ndarray | None = tensors.get("D")
        self.F: np.ndarray | None = tensors.get("F")
        self.A: np.ndarray | None = tensors.get("A")
        self.B: np.ndarray | None = tensors.get("B")
        self.P: np.ndarray | None = tensors.get("P")
        self.Q: np.ndarray | None = tensors.get("Q")
        self.R: np.ndarray | None = tensors.get("R")
        self.S: np.ndarray | None = tensors.get("S")
        self.T: np.ndarray | None = tensors.get("T")
        self.U: np.ndarray | None = tensors.get("U")

    @property
    def depth(self) -> int:
        return self.net.depth

    @property
    def n_inputs(self) -> int:
        return int(self.x.shape[0])

    def tensors(self) -> dict[str, np.ndarray]:
        """The computed tensors by name."""
        return {k: getattr(self, k) for k in THEORY_TENSORS if getattr(self, k) is not None}

    def width(self, layer: int) -> int:
        """n_{l-1}, the width whose inverse multiplies layer-l corrections (1-based layer)."""
        return self.net.correction_width(layer, self.x.shape[1])

    def metric(self, layer: int | None = None) -> np.ndarray:
        """Mean metric to first order, ``K + K1 / n_{l-1}``: at 1-based ``layer`` (N, N), or every
        layer (L, N, N) when ``layer`` is None (the convention of every theory result)."""
        if self.K1 is None:
            raise ValueError("K1 was not computed (order=0); call rgflow.theory(..., order=1)")
        if layer is None:
            return np.stack([self.metric(ell) for ell in self.layers])
        return self.K[self._idx(layer)] + self.K1[self._idx(layer)] / self.width(layer)

    def ntk_mean(self, layer: int | None = None) -> np.ndarray:
        """NTK mean to first order, ``Theta + Theta1 / n_{l-1}``: at 1-based ``layer`` (N, N), or
        every layer (L, N, N) when ``layer`` is None."""
        if self.Theta is None or self.Theta1 is None:
            raise ValueError("Theta1 was not computed; call rgflow.theory(..., ntk=True, order=1)")
        if layer is None:
            return np.stack([self.ntk_mean(ell) for ell in self.layers])
        return self.Theta[self._idx(layer)] + self.Theta1[self._idx(layer)] / self.width(layer)

    def _idx(self, layer: int) -> int:
        return self.layer_index(layer)

    def layer_index(self, layer: int) -> int:
        """Position along axis 0 of the arrays of 1-based ``layer`` (ValueError when that layer
        was not kept: ``rgflow.theory(..., layers=...)``)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be in 1..{self.depth} (1-based), got {layer}")
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} was not kept (this Theory holds layers {list(self.layers)}); "
                f"compute it with rgflow.theory(..., layers=[..., {layer}])"
            )
        return self.layers.index(layer)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Save tensors, inputs and network to an ``.npz`` file."""
        meta = {"net": self.net.to_dict(), "options": self.options, "layers": list(self.layers)}
        arrays: dict[str, np.ndarray] = {"x": self.x, "meta": np.array(json.dumps(meta)), **self.tensors()}
        if self.tuples is not None:
            arrays["tuples"] = self.tuples
        np.savez_compressed(path, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Theory:
        """Load a :class:`Theory` saved by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            tensors = {k: (np.array(data[k]) if k in data.files else None) for k in THEORY_TENSORS}
            x = np.array(data["x"])
            tuples = np.array(data["tuples"]) if "tuples" in data.files else None
        layers = tuple(meta["layers"]) if "layers" in meta else None
        return cls(MLP.from_dict(meta["net"]), x, tensors, meta.get("options"), layers=layers, tuples=tuples)

    def __repr__(self) -> str:
        have = ", ".join(self.tensors())
        extra = "" if self.layers == tuple(range(1, self.depth + 1)) else f", layers={list(self.layers)}"
        if self.tuples is not None:
            extra += f", tuples={len(self.tuples)}"
        return f"Theory({self.net!r}, N={self.n_inputs}, tensors=[{have}]{extra})"


def mlp_theory(
    net: MLP,
    x: Any,
    *,
    ntk: bool = True,
    order: int = 1,
    quad_order: int | None = None,
    expectations: str = "auto",
    method: str | None = None,
    dntk: bool = False,
    layers: Any = None,
    tensors: Any = None,
    tuples: Any = None,
) -> Theory:
    """Compute the infinite-width kernels and their first-order (1/n) tensors for ``net`` on ``x``.

    Parameters
    ----------
    net: the :class:`~rgflow.MLP`.
    x: inputs, shape (N, n0).
    ntk: also compute the NTK family (Theta, and with order=1: Theta1, D, F, A, B).
    order: 0 for infinite width only (K, Theta), 1 for the first-order tensors.
    quad_order: quadrature nodes per piece and level (default: chosen per dimension,
        see :func:`rgflow.expect`).
    expectations: ``"auto"`` (closed-form expectations for relu, leaky_relu, linear, monomial,
        erf and gelu; quadrature otherwise) or ``"quadrature"`` (always quadrature).
    method: deprecated name of ``expectations`` (rgflow 0.1).
    dntk: also the dNTK family (``dntk.md``; needs ``ntk=True``, ``order=1``): P, Q (PDLT ch. 11)
        and the ddNTK means R, S, T, U (ch. ∞).  For kinked activations (relu, leaky_relu, elu)
        the ddNTK means are not defined (PDLT (∞.39)-(∞.44), ``dntk.md`` §6.1): R, S, T, U are
        NaN, with a :class:`RuntimeWarning`; P and Q are computed.
    layers: the 1-based layers to keep (negative counts from the end: -1 is the last; default
        all); the recursion streams through the others.  ``th.layers`` lists them (axis 0).
    tensors: names among K, Theta, K1, Theta1, V, D, F, A, B (and with ``dntk`` P, Q, R, S, T, U) to
        compute (default: all the other options imply; K is always returned); only the families they
        depend on are propagated (R reads P, T reads Q; the dNTK family reads B and F).
    tuples: an int array (M, 4) of sample indices: the four-point families are returned as
        (n_layers, M) arrays, ``th.V[l, m] == V[l, *tuples[m]]`` (the two-point ones stay
        (n_layers, N, N)); only the closure of these tuples is propagated (time and memory
        grow with it, not with N⁴).  Patterns: :func:`tuples_at_most_one`.  Not with ``dntk``.
    """

    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    ntk, dntk = check_bool("ntk", ntk), check_bool("dntk", dntk)
    order = check_int("order", order, minimum=0, maximum=1, hint=" (0: infinite width, 1: first order in 1/n)")
    quad_order = check_quad_order(quad_order)
    if dntk and not (ntk and order == 1):
        raise ValueError("dntk=True needs ntk=True and order=1 (the dNTK family is first order in 1/n)")
    keep = check_layers(layers, net.depth)
    names = check_tensors(tensors, ntk, order, dntk)
    tup = check_tuples(tuples, len(x))
    if dntk and tuples is not None:
        raise ValueError(
            "dntk=True is not supported with tuples= (the dNTK family is computed dense, N⁴ per layer); use "
            "layers= and tensors= to keep only what you need (e.g. layers=[-1], tensors=['P', 'Q'])"
        )

    if method is not None:
        warnings.warn(
            "rgflow.theory(..., method=) for MLPs is deprecated; use expectations= ('auto' | 'quadrature')",
            DeprecationWarning,
            stacklevel=2,
        )
    qonly = quadrature_only(method, "method") if method is not None else quadrature_only(expectations, "expectations")
    if method is not None:
        expectations = method
    act = core_activation(net.activation)
    widths = np.array(net.layer_widths(x.shape[1]), dtype=float)
    # Exactly repeated inputs: compute on the unique ones and expand (exact, no jitter).
    xu, inv = np.unique(x, axis=0, return_inverse=True)
    inverse: np.ndarray | None = inv.reshape(-1)
    if len(xu) == len(x):
        xu, inverse = x, None
    tup_u = tup if (tup is None or inverse is None) else inverse[tup]
    if tup_u is None and order == 1 and not dntk and names is not None and not set(names) & set(FOUR_POINT):
        # only two-point tensors asked: propagate the pairs' own tuples (the closure of one tuple)
        # instead of the dense N⁴ space; no four-point family is returned either way
        tup_u = np.zeros((1, 4), dtype=np.int64)
    _check_resources(net, len(xu), len(x), ntk, order, dntk, quad_order, qonly, keep=keep, names=names, tuples=tup_u)
    try:
        out = _core.mlp_theory(
            act,
            np.ascontiguousarray(xu),
            widths,
            np.array(net.C_b),
            np.array(net.C_W),
            np.array(net.lambda_b),
            np.array(net.lambda_W),
            bool(ntk),
            int(order),
            0 if quad_order is None else int(quad_order),
            qonly,
            bool(dntk),
            max_evals=max_evaluations(),
            layers=None if keep is None else [ell - 1 for ell in keep],
            tensors=None if names is None else list(names),
            tuples=tup_u,
        )
    except ValueError as exc:
        if is_overflow_error(exc):
            raise ValueError(f"rgflow.theory: {exc}: {overflow_cause(net, x)}") from exc
        raise
    tensors = {k: out.get(k) for k in THEORY_TENSORS}
    asked_dd = [k for k in ("R", "S", "T", "U") if names is None or k in names]
    kinked_nan = tuple(asked_dd) if dntk and asked_dd and all(out.get(k) is None for k in asked_dd) else ()
    check_finite_result("rgflow.theory", tensors, net, x, skip=kinked_nan)
    if kinked_nan:
        warnings.warn(
            f"the ddNTK means R, S, T, U are not defined for the kinked activation {net.activation.name!r} "
            "(PDLT (∞.39)-(∞.44)); they are NaN.  P and Q are computed; use a smooth activation (gelu, swish) "
            "for the ddNTKs",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = np.full((len(out["layers"]),) + (len(xu),) * 4, np.nan)
        for k in kinked_nan:
            tensors[k] = nan.copy()
    if inverse is not None:
        for k, v in tensors.items():
            if v is not None and not (tup is not None and k in FOUR_POINT):
                idx = (slice(None),) + np.ix_(*([inverse] * (v.ndim - 1)))
                tensors[k] = np.ascontiguousarray(v[idx])
    options = {"ntk": ntk, "order": order, "quad_order": quad_order, "expectations": expectations, "dntk": dntk}
    return Theory(net, x, tensors, options, layers=tuple(out["layers"]), tuples=tup)


def check_layers(layers: Any, depth: int) -> tuple[int, ...] | None:
    """``layers=``: 1-based layer numbers (negative from the end), as a sorted tuple without
    repeats; None for every layer."""
    if layers is None:
        return None
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    try:
        items = list(layers)
    except TypeError:
        raise TypeError(
            f"layers must be an iterable of 1-based layer numbers (e.g. [-1] for the last), got {layers!r}"
        ) from None
    if not items:
        raise ValueError("layers is empty: pass at least one 1-based layer number (e.g. layers=[-1])")
    out = set()
    for ell in items:
        if isinstance(ell, bool) or not isinstance(ell, (int, np.integer)):
            raise TypeError(f"layers entries must be ints (1-based, -1 = last), got {ell!r} in layers={layers!r}")
        e = int(ell)
        if not (1 <= e <= depth or -depth <= e <= -1):
            raise ValueError(
                f"layer {e} in layers={layers!r} is out of range: use 1..{depth} or -{depth}..-1 (0 is not a layer)"
            )
        out.add(e if e > 0 else depth + 1 + e)
    return tuple(sorted(out))


def check_tensors(tensors: Any, ntk: bool, order: int, dntk: bool = False) -> tuple[str, ...] | None:
    """``tensors=``: names among :data:`ALL_TENSORS` (and with ``dntk`` :data:`DNTK_TENSORS`) the
    options compute (None: all)."""
    if tensors is None:
        return None
    items = [tensors] if isinstance(tensors, str) else list(tensors)
    known = THEORY_TENSORS if dntk else ALL_TENSORS
    if not items:
        raise ValueError(f"tensors is empty: name at least one of {', '.join(known)}")
    for t in items:
        if t in DNTK_TENSORS and not dntk:
            raise ValueError(f"tensor {t!r} belongs to the dNTK family: it needs dntk=True (in tensors={tensors!r})")
        if t not in known:
            raise ValueError(f"unknown tensor {t!r} in tensors={tensors!r}; choose among {', '.join(known)}")
        if order == 0 and t not in ("K", "Theta"):
            raise ValueError(f"tensor {t!r} is first order in 1/n: it needs order=1 (got order=0)")
        if not ntk and t in ("Theta", "Theta1", "D", "F", "A", "B"):
            raise ValueError(f"tensor {t!r} belongs to the NTK family: it needs ntk=True")
    return tuple(dict.fromkeys(items))


def check_tuples(tuples: Any, n: int) -> np.ndarray | None:
    """``tuples=``: an integer array (M, 4) of sample indices in 0..n-1, M >= 1 (int64)."""
    if tuples is None:
        return None
    arr = np.asarray(tuples)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if arr.size and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            hint = " (cast with .astype(int))"
        else:
            hint = ""
        raise TypeError(f"tuples must be an integer array of sample indices, got dtype {arr.dtype}{hint}")
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise ValueError(f"tuples must have shape (M, 4) with M >= 1 (one row per (a, b, c, d)), got {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"tuples holds the sample index {bad}, out of range 0..{n - 1} for N = {n} inputs")
    return np.ascontiguousarray(arr, dtype=np.int64)


def tuples_at_most_one(train: Any, test: Any) -> np.ndarray:
    """Every tuple (a, b, c, d) of the indices ``train`` and ``test`` with at most one test
    index (what the O(1/n) learning predictions contract over), as an int64 array (M, 4): all
    training tuples, then those with the test index in slot 0, 1, 2, 3 (M = T⁴ + 4·S·T³)."""
    tr = np.asarray(train, dtype=np.int64).reshape(-1)
    te = np.asarray(test, dtype=np.int64).reshape(-1)
    t, m = len(tr), len(te)
    out = np.empty((t**4 + 4 * m * t**3, 4), dtype=np.int64)
    start = 0
    for slot in (None, 0, 1, 2, 3):  # all training tuples, then the test index in each slot
        axes = [te if i == slot else tr for i in range(4)]
        size = int(np.prod([len(ax) for ax in axes]))
        block = out[start : start + size].reshape(*[len(ax) for ax in axes], 4)
        for i, ax in enumerate(axes):
            block[..., i] = ax.reshape([-1 if j == i else 1 for j in range(4)])
        start += size
    return out


def _check_resources(
    net: MLP,
    n_unique: int,
    n_inputs: int,
    ntk: bool,
    order: int,
    dntk: bool,
    quad_order: int | None,
    qonly: bool,
    *,
    keep: tuple[int, ...] | None = None,
    names: tuple[str, ...] | None = None,
    tuples: np.ndarray | None = None,
) -> None:
    """Refuse before allocating: MemoryError when the tensors cannot fit, ValueError when the
    fixed-order quadrature of the four-point tables would exceed the cost limit."""
    L = net.depth
    n_keep = L if keep is None else len(keep)
    closure = None
    if tuples is not None and order == 1:
        pairs = names is None or bool({"K1", "Theta1"} & set(names))
        size, ms = _core.tuple_closure(n_unique, tuples, pairs)
        closure = (len(tuples), size, ms)
    nbytes = theory_memory(
        n_unique, n_inputs, L, ntk, order, dntk, net.activation.kinked, n_layers=n_keep, tensors=names, closure=closure
    )
    four = [t for t, on in (("V", True), ("D, F, A, B", ntk), ("P, Q, R, S, T, U", dntk)) if on]
    if names is not None:
        four = [t for t in FOUR_POINT + DNTK_TENSORS if t in names] or ["none"]
    reduce = []
    if keep is None or len(keep) > 1:
        reduce.append(f"layers=[-1] (keep only the last of {n_keep} layers)")
    if names is None:
        reduce.append("tensors=[...] (only the families you need, e.g. ['K', 'K1', 'V'])")
    if tuples is None:
        reduce.append(
            "tuples=... (the four-point tensors at the sample tuples you need, e.g. rgflow.tuples_at_most_one)"
        )
    reduce.append(f"fewer inputs (memory grows as N⁴; N = {n_unique})")
    if ntk and order == 1 and names is None:
        reduce.append("ntk=False (drops D, F, A, B)")
    if dntk:
        reduce.append("dntk=False")
    reduce += ["order=0 (K and Theta only)", f"a shallower network (depth {L})"]
    shape = (
        f"({n_keep}, {len(tuples)})"
        if tuples is not None
        else f"({n_keep}, {n_unique}, {n_unique}, {n_unique}, {n_unique})"
    )
    check_memory(
        nbytes,
        f"rgflow.theory: the four-point tensors ({', '.join(four)}; each {shape}) and the working tables",
        ", ".join(reduce),
    )
    closed = not net.activation.is_custom and net.activation.name in CLOSED_FORM
    if order == 1 and (qonly or (quad_order is not None and not closed)):
        check_cost(
            theory_cost(n_unique, L, None if quad_order is None else int(quad_order)),
            f"rgflow.theory: the four-point tables of {n_unique} inputs over {L - 1} layers at quad_order "
            f"{quad_order if quad_order is not None else 'default'}",
            "lower quad_order (or leave it None: the error-controlled rule), use fewer inputs",
        )
