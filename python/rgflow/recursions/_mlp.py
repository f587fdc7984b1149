"""First-order finite-width theory of an MLP at initialisation (the Rust recursion engine).

Tensors, each float64, layer axis 0 = layer 1 (``docs/spec/ntk.md`` §1.2):

* ``K, K1, Theta, Theta1``: shape (L, N, N).  Mean metric ``K + K1/n_{l-1}``, NTK mean
  ``Theta + Theta1/n_{l-1}``.
* ``V[l, a1, a2, a3, a4] = V_{(a1 a2)(a3 a4)}`` four-point vertex,
  ``D[l, a1, a2, a3, a4] = D_{a1 a2 a3 a4}``, ``F[l, a1, a2, a3, a4] = F_{a1 a2 a3 a4}``
  (slots 1, 3 preactivation samples, 2, 4 NTK samples),
  ``A[l, a1, a2, a3, a4] = A_{(a1 a2)(a3 a4)}``, ``B[l, a1, a2, a3, a4] = B_{a1 a2 a3 a4}``:
  shape (L, N, N, N, N).  Every layer-l tensor multiplies ``1/n_{l-1}``.
* With ``dntk=True`` (``docs/spec/dntk.md`` §1.3, each tensor in its own subscript order):
  ``P[l, d0, d1, d2, d3] = P_{d0 d1 d2 d3}``, ``Q`` likewise (dNTK-preactivation
  cross-correlations, PDLT (11.30)), ``R`` (first ddNTK mean, (∞.11)), ``S``, ``T``, ``U``
  (second ddNTK mean, (∞.12): ``T[l, a, b, c, d] = T_{abcd}``, so the recursion's
  ``T_{1342}`` is ``T[l, d1, d3, d4, d2]``), all (L, N, N, N, N), each multiplying ``1/n_{l-1}``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._util.limits import check_cost, check_memory, gb, max_evaluations
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


def theory_memory(n_unique: int, n_inputs: int, depth: int, ntk: bool, order: int, dntk: bool, kinked: bool) -> float:
    """Estimated peak bytes of :func:`mlp_theory`: the (L, N, N, N, N) tensors (at the unique
    inputs, and again at all inputs when some repeat), the per-layer working tables of the core
    (four-point expectation tables, the new layer's tensors, the multiset values) and, for a
    kinked activation with ``dntk``, the NaN ddNTK tensors."""
    four = (1 + 4 * ntk + 2 * dntk + 4 * dntk) if order == 1 else 0
    patterns = (1 + 2 * ntk + dntk + 2 * (dntk and not kinked)) if order == 1 else 0
    n4u = float(n_unique) ** 4
    out = four * depth * n4u
    if n_inputs != n_unique:
        out += four * depth * float(n_inputs) ** 4
    work = (2 * patterns + four + 2) * n4u if order == 1 else 0.0
    return 8.0 * (out + work + 4 * depth * n_unique**2)


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

    Tensors not computed (``ntk=False``, ``order=0`` or ``dntk=False``) are ``None``.
    """

    def __init__(
        self, net: MLP, x: np.ndarray, tensors: dict[str, np.ndarray | None], options: dict[str, Any] | None = None
    ):
        self.net = net
        self.x = x
        self.options = dict(options or {})
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
            return np.stack([self.metric(ell) for ell in range(1, self.depth + 1)])
        return self.K[self._idx(layer)] + self.K1[self._idx(layer)] / self.width(layer)

    def ntk_mean(self, layer: int | None = None) -> np.ndarray:
        """NTK mean to first order, ``Theta + Theta1 / n_{l-1}``: at 1-based ``layer`` (N, N), or
        every layer (L, N, N) when ``layer`` is None."""
        if self.Theta is None or self.Theta1 is None:
            raise ValueError("Theta1 was not computed; call rgflow.theory(..., ntk=True, order=1)")
        if layer is None:
            return np.stack([self.ntk_mean(ell) for ell in range(1, self.depth + 1)])
        return self.Theta[self._idx(layer)] + self.Theta1[self._idx(layer)] / self.width(layer)

    def _idx(self, layer: int) -> int:
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer must be in 1..{self.depth} (1-based), got {layer}")
        return layer - 1

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Save tensors, inputs and network to an ``.npz`` file."""
        meta = {"net": self.net.to_dict(), "options": self.options}
        arrays: dict[str, np.ndarray] = {"x": self.x, "meta": np.array(json.dumps(meta)), **self.tensors()}
        np.savez_compressed(path, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Theory:
        """Load a :class:`Theory` saved by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            tensors = {k: (np.array(data[k]) if k in data.files else None) for k in THEORY_TENSORS}
            x = np.array(data["x"])
        return cls(MLP.from_dict(meta["net"]), x, tensors, meta.get("options"))

    def __repr__(self) -> str:
        have = ", ".join(self.tensors())
        return f"Theory({self.net!r}, N={self.n_inputs}, tensors=[{have}])"


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
    """

    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    x = check_inputs(x)
    ntk, dntk = check_bool("ntk", ntk), check_bool("dntk", dntk)
    order = check_int("order", order, minimum=0, maximum=1, hint=" (0: infinite width, 1: first order in 1/n)")
    quad_order = check_quad_order(quad_order)
    if dntk and not (ntk and order == 1):
        raise ValueError("dntk=True needs ntk=True and order=1 (the dNTK family is first order in 1/n)")

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
    _check_resources(net, len(xu), len(x), ntk, order, dntk, quad_order, qonly)
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
        )
    except ValueError as exc:
        if is_overflow_error(exc):
            raise ValueError(f"rgflow.theory: {exc}: {overflow_cause(net, x)}") from exc
        raise
    tensors = {k: out.get(k) for k in THEORY_TENSORS}
    kinked_nan = ("R", "S", "T", "U") if dntk and out.get("R") is None else ()
    check_finite_result("rgflow.theory", tensors, net, x, skip=kinked_nan)
    if dntk and out.get("R") is None:
        warnings.warn(
            f"the ddNTK means R, S, T, U are not defined for the kinked activation {net.activation.name!r} "
            "(PDLT (∞.39)-(∞.44)); they are NaN.  P and Q are computed; use a smooth activation (gelu, swish) "
            "for the ddNTKs",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = np.full_like(out["P"], np.nan)
        for k in ("R", "S", "T", "U"):
            tensors[k] = nan.copy()
    if inverse is not None:
        for k, v in tensors.items():
            if v is not None:
                idx = (slice(None),) + np.ix_(*([inverse] * (v.ndim - 1)))
                tensors[k] = np.ascontiguousarray(v[idx])
    options = {"ntk": ntk, "order": order, "quad_order": quad_order, "expectations": expectations, "dntk": dntk}
    return Theory(net, x, tensors, options)


def _check_resources(
    net: MLP, n_unique: int, n_inputs: int, ntk: bool, order: int, dntk: bool, quad_order: int | None, qonly: bool
) -> None:
    """Refuse before allocating: MemoryError when the tensors cannot fit, ValueError when the
    fixed-order quadrature of the four-point tables would exceed the cost limit."""
    L = net.depth
    nbytes = theory_memory(n_unique, n_inputs, L, ntk, order, dntk, net.activation.kinked)
    four = [t for t, on in (("V", True), ("D, F, A, B", ntk), ("P, Q, R, S, T, U", dntk)) if on]
    reduce = [f"fewer inputs (memory grows as N⁴; N = {n_unique})"]
    if ntk and order == 1:
        reduce.append("ntk=False (drops D, F, A, B)")
    if dntk:
        reduce.append("dntk=False")
    reduce += ["order=0 (K and Theta only)", f"a shallower network (depth {L})"]
    check_memory(
        nbytes,
        f"rgflow.theory: the four-point tensors ({', '.join(four)}; each (L, N, N, N, N) = ({L}, {n_unique}, "
        f"{n_unique}, {n_unique}, {n_unique}), {gb(8.0 * L * float(n_unique) ** 4)}) and the working tables",
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
