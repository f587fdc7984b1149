"""Whether two network specifications describe the same network, field by field, to the bit.

A theory and an ensemble (or a theory passed to a sampler) must come from the same network:
same type, activation (a custom activation: the same object), depth, widths and every per-layer
hyperparameter (float equality, i.e. bitwise up to the sign of zero).  The output width of an
MLP is left out: neither the theory nor the estimators depend on it.  The hidden widths are
compared as the caller asks: ``"ignore"`` (an infinite-width kernel passed to a sampler),
``"ratios"`` (a first-order theory against an ensemble: the tensors are coefficients of 1/n and
depend on the widths only through the ratios n_l/n_{l-1}, l >= 2, of the recursion, e.g. PDLT
(4.90) with unequal widths) or ``"exact"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._util.validation import same_array

#: Fields that do not enter the theory or the sampled estimators.
_IGNORED = frozenset({"out_width"})
#: The width fields (MLP: hidden widths; residual nets: the common width).
_WIDTHS = frozenset({"widths", "width"})


def _proportional(wa: Any, wb: Any) -> bool:
    if isinstance(wa, int) or isinstance(wb, int):
        return isinstance(wa, int) and isinstance(wb, int)
    return len(wa) == len(wb) and all(p * wb[0] == q * wa[0] for p, q in zip(wa, wb, strict=True))


def network_mismatch(a: Any, b: Any, widths: str = "exact") -> str | None:
    """None if ``a`` and ``b`` are the same network; otherwise the first differing field as text."""
    if type(a) is not type(b):
        return f"the network types differ ({type(a).__name__} vs {type(b).__name__})"
    fa, fb = vars(a), vars(b)
    for key in sorted(set(fa) | set(fb)):
        if key in _IGNORED:
            continue
        if key in _WIDTHS and widths != "exact":
            if widths == "ratios" and not _proportional(fa.get(key), fb.get(key)):
                return f"the width ratios n_l/n_(l-1) differ ({key} {fa.get(key)!r} vs {fb.get(key)!r})"
            continue
        va, vb = fa.get(key), fb.get(key)
        if key == "activation":
            same = va is vb if (va.is_custom or vb.is_custom) else va == vb
        else:
            same = type(va) is type(vb) and va == vb
        if not same:
            return f"{key} differs ({va!r} vs {vb!r})"
    return None


def check_same_origin(
    what: str, first: tuple[str, Any, Any], second: tuple[str, Any, Any], widths: str = "exact"
) -> None:
    """ValueError unless two (label, network, inputs) triples match: the same network
    (:func:`network_mismatch`) and bitwise-equal inputs (``x``, or a PreResNet's input kernel)."""
    (la, na, xa), (lb, nb, xb) = first, second
    diff = network_mismatch(na, nb, widths)
    if diff is not None:
        raise ValueError(
            f"{what}: {la} and {lb} come from different networks: {diff}; "
            f"compute both from the same network (rgflow.theory(net, x) and rgflow.sample(net, x))"
        )
    if (xa is None) != (xb is None) or (xa is not None and not same_array(xa, xb)):
        sa = None if xa is None else np.shape(xa)
        sb = None if xb is None else np.shape(xb)
        raise ValueError(
            f"{what}: {la} and {lb} were computed on different inputs (shapes {sa} and {sb}, "
            "or different values); use the same inputs, bit for bit"
        )
