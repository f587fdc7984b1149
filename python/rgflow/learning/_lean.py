"""The output-layer tensors a prediction reads, from a dense or a lean :class:`rgflow.Theory`
(spec ``learning.md`` §10), and :func:`prediction_theory`, the theory call that computes exactly them.

Every O(1/n) prediction of :func:`rgflow.predict` contracts the output-layer four-point tensors
over sample tuples with **at most one test index** (the others are training indices): the Bayes
mean (spec §2.3) reads V_{(b1)(23)} and V_{(41)(23)}; the GD mean (∞.160)–(∞.165) reads A, B, P,
Q, R, S, T, U with the row index δ (test or training) in one slot.  So a theory needs only

* the output layer (``layers=[-1]``; the recursion streams through the others),
* the families of the prediction (``tensors=[...]``, :func:`prediction_tensors`), and
* optionally only the tuples with at most one test index (``tuples=rgflow.tuples_at_most_one(train,
  test)``; not with ``dntk=True``).  With few test inputs (N_B ≪ N_A) these are nearly all N⁴
  tuples and the (M, 4) index list costs more memory than it saves, so dense is the default.

:class:`OutputTensors` reads the blocks the formulas need from either form (equal entries, so the
predictions agree to rounding) and names the missing piece and the theory call that provides it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models import MLP
from ..recursions import Theory, theory, tuples_at_most_one
from ._checks import check_indices

FOUR_POINT = ("V", "D", "F", "A", "B", "P", "Q", "R", "S", "T", "U")
DNTK = ("P", "Q", "R", "S", "T", "U")


def last_layer_only(net: MLP) -> bool:
    """True when λ_b = λ_W = 0 in every layer below the output (only W^(L), b^(L) move)."""
    return all(net.lambda_b[i] == 0 and net.lambda_W[i] == 0 for i in range(net.depth - 1))


def prediction_tensors(
    kind: str, order: int, *, last_only: bool = False, theta1: bool = True, method: str = "compact"
) -> tuple[str, ...]:
    """The output-layer families :func:`rgflow.predict` reads for ``kind``/``order`` (spec §10)."""
    if kind == "bayes":
        return ("K",) if order == 0 else ("K", "K1", "V")
    if order == 0:
        return ("K", "Theta")
    return ("K", "Theta", *(("Theta1",) if theta1 else ()), "A", "B", *(() if last_only else DNTK))


def theory_call(
    kind: str,
    order: int,
    *,
    last_only: bool = False,
    theta1: bool = True,
    tuples: bool = False,
    method: str = "compact",
) -> str:
    """The ``rgflow.theory`` call (as text) that computes what :func:`rgflow.predict` reads."""
    names = prediction_tensors(kind, order, last_only=last_only, theta1=theta1, method=method)
    opts = ["net", "x"]
    if kind == "bayes":
        opts.append("ntk=False")
    if order == 0:
        opts.append("order=0")
    elif kind == "gd" and not last_only:
        opts.append("dntk=True")
    opts.append("layers=[-1]")
    if order == 1:
        opts.append(f"tensors={list(names)}")
        if tuples:
            opts.append("tuples=rgflow.tuples_at_most_one(train, test)")
    return f"rgflow.theory({', '.join(opts)})"


def prediction_theory(
    net: MLP,
    x: Any,
    train: Any,
    test: Any,
    *,
    kind: str = "bayes",
    order: int = 1,
    theta1: bool = True,
    method: str = "compact",
    tuples: bool = False,
    **options: Any,
) -> Theory:
    """The lean theory :func:`rgflow.predict` needs for ``kind``/``order`` on the inputs ``x``
    (train ∪ test): the output layer only, only the families the prediction reads
    (:func:`prediction_tensors`; with the dNTK family P…U for the O(1/n) GD mean unless only the
    last layer trains), and with ``tuples=True`` only the sample tuples with at most one test index
    (``rgflow.tuples_at_most_one(train, test)``; Bayes, or GD with last-layer training).
    ``options`` (``quad_order``, ``expectations``) go to :func:`rgflow.theory`.  The prediction
    from it equals the one from the dense all-layer theory to rounding (the entries are equal).

    Example: ``th = rgflow.prediction_theory(net, x, tr, te, kind="gd", order=1)`` then
    ``rgflow.predict(th, y, tr, te, kind="gd", order=1)``.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    if kind not in ("bayes", "gd"):
        raise ValueError(f"kind must be 'bayes' or 'gd', got {kind!r}")
    if order not in (0, 1) or isinstance(order, bool):
        raise ValueError(f"order must be 0 or 1, got {order!r}")
    bad = set(options) - {"quad_order", "expectations"}
    if bad:
        raise TypeError(
            f"prediction_theory got unexpected options {sorted(bad)}; it chooses ntk, order, dntk, layers, tensors "
            "and tuples itself (pass quad_order= or expectations= only)"
        )
    n_in = len(np.asarray(x))
    tr, te = check_indices("train", train, n_in), check_indices("test", test, n_in)
    last_only = last_layer_only(net)
    dntk = kind == "gd" and order == 1 and not last_only
    if tuples and dntk:
        raise ValueError(
            "tuples=True is not available for the O(1/n) gradient-descent mean of a network whose hidden layers "
            "train: its dNTK family (P…U) is computed dense (rgflow.theory(..., dntk=True) refuses tuples=); "
            "use tuples=False"
        )
    if tuples and method == "book":
        raise ValueError("method='book' contracts V over all of (train ∪ test)⁴; use tuples=False")
    if dntk and net.activation.kinked:
        raise ValueError(
            f"the O(1/n) gradient-descent mean is undefined for the kinked activation {net.activation.name!r}: its "
            "ddNTK means R, S, T, U do not exist (PDLT (∞.39)–(∞.44)); use a smooth activation or order=0"
        )
    names = prediction_tensors(kind, order, last_only=last_only, theta1=theta1, method=method)
    kw: dict[str, Any] = {"ntk": kind == "gd", "order": order, "layers": [-1], **options}
    if order == 1:
        kw["tensors"] = list(names)
        kw["dntk"] = dntk
        if tuples:
            kw["tuples"] = tuples_at_most_one(tr, te)
    return theory(net, x, **kw)


def _is_range(idx: np.ndarray) -> bool:
    """Whether ``idx`` is a run of consecutive ascending indices (a slice)."""
    return len(idx) > 0 and bool(np.all(np.diff(idx) == 1))


class OutputTensors:
    """The output-layer tensors of ``th`` as the dense blocks the prediction formulas read.

    :meth:`two` gives a two-point tensor (N, N); :meth:`block` a four-point one restricted slot by
    slot: ``"d"`` the rows (``test`` then ``train``), ``"t"`` the test inputs, any other letter the
    training inputs — e.g. ``block("V", "tabc") == V[-1][np.ix_(test, train, train, train)]``.  A
    ``tuples=`` theory must hold every tuple asked for (at most one test index: what
    :func:`rgflow.tuples_at_most_one` lists)."""

    def __init__(self, th: Theory, train: np.ndarray, test: np.ndarray, call: str = ""):
        self.th, self.tr, self.te = th, train, test
        self.rows = np.concatenate([test, train])
        self.call = call
        self.layer = th.layer_index(th.depth)
        self._layout: bool | None = None
        self._keys: tuple[np.ndarray, np.ndarray] | None = None

    def _tensor(self, name: str) -> np.ndarray:
        T = getattr(self.th, name, None)
        if T is None:
            how = f"; compute it with {self.call}" if self.call else ""
            raise ValueError(f"th carries no {name} (needed by this prediction){how}")
        return np.asarray(T[self.layer])

    def two(self, name: str) -> np.ndarray:
        return np.asarray(self._tensor(name), dtype=float)

    def _sets(self, slots: str) -> list[np.ndarray]:
        return [self.rows if c == "d" else self.te if c == "t" else self.tr for c in slots]

    def block(self, name: str, slots: str) -> np.ndarray:
        if "d" in slots:  # the rows are the test inputs, then the training ones
            k = slots.index("d")
            parts = [self.block(name, slots[:k] + c + slots[k + 1 :]) for c in "ta"]
            return np.concatenate(parts, axis=k)
        T = self._tensor(name)
        if self.th.tuples is None:
            sets = self._sets(slots)
            if all(_is_range(s) for s in sets):  # a view, no gather
                return np.asarray(T[tuple(slice(int(s[0]), int(s[-1]) + 1) for s in sets)], dtype=float)
            return np.asarray(T[np.ix_(*sets)], dtype=float)
        if self._at_most_one() and slots.count("t") <= 1:
            return self._structured(T, slots)
        return self._lookup(name, T, slots)

    # ------------------------------------------------------------------ tuples= theories
    def _at_most_one(self) -> bool:
        """Whether th.tuples is exactly ``tuples_at_most_one(train, test)`` (checked block by block)."""
        if self._layout is None:
            tu, tr, te = self.th.tuples, self.tr, self.te
            assert tu is not None
            t, m = len(tr), len(te)
            ok = len(tu) == t**4 + 4 * m * t**3
            start = 0
            for slot in (None, 0, 1, 2, 3):
                if not ok:
                    break
                axes = [te if i == slot else tr for i in range(4)]
                size = int(np.prod([len(ax) for ax in axes]))
                blk = tu[start : start + size].reshape(*[len(ax) for ax in axes], 4)
                for i, ax in enumerate(axes):
                    shape = [-1 if j == i else 1 for j in range(4)]
                    ok = ok and bool(np.all(blk[..., i] == ax.reshape(shape)))
                start += size
            self._layout = ok
        return self._layout

    def _chunk(self, T: np.ndarray, slot: int | None) -> np.ndarray:
        t, m = len(self.tr), len(self.te)
        if slot is None:
            return T[: t**4].reshape(t, t, t, t)
        start = t**4 + slot * m * t**3
        return T[start : start + m * t**3].reshape([m if i == slot else t for i in range(4)])

    def _structured(self, T: np.ndarray, slots: str) -> np.ndarray:
        """A block with at most one test slot of the ``tuples_at_most_one`` layout (a reshaped view)."""
        k = slots.find("t")
        return np.asarray(self._chunk(T, None if k < 0 else k), dtype=float)

    def _lookup(self, name: str, T: np.ndarray, slots: str) -> np.ndarray:
        """Any tuple list: find each requested tuple by its sorted key."""
        N = self.th.n_inputs
        if self._keys is None:
            tu = self.th.tuples
            assert tu is not None
            keys = ((tu[:, 0] * N + tu[:, 1]) * N + tu[:, 2]) * N + tu[:, 3]
            order = np.argsort(keys, kind="stable")
            self._keys = (keys[order], order)
        skeys, order = self._keys
        sets = self._sets(slots)
        want = np.zeros([len(s) for s in sets], dtype=np.int64)
        for i, s in enumerate(sets):
            want = want * N + s.reshape([-1 if j == i else 1 for j in range(4)])
        pos = np.searchsorted(skeys, want.ravel())
        pos = np.minimum(pos, len(skeys) - 1)
        found = skeys[pos] == want.ravel()
        if not np.all(found):
            miss = int(want.ravel()[np.argmin(found)])
            tup = (miss // N**3, miss // N**2 % N, miss // N % N, miss % N)
            raise ValueError(
                f"th was computed with tuples= that lack the tuple {tup} of {name} this prediction contracts over; "
                "compute it with tuples=rgflow.tuples_at_most_one(train, test) for the same train and test"
                + (f" ({self.call})" if self.call else "")
            )
        return np.asarray(T[order[pos]].reshape(want.shape), dtype=float)
