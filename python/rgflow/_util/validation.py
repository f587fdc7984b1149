"""Argument validation shared by every layer: strict ints and bools, names, real arrays, reals.

No silent coercion: a float where an int is expected (``order=2.5``, even ``2.0``), a string
(``order='5'``, ``ntk='no'``), a complex array or a string array is refused with a TypeError that
names the argument, its value and the fix -- never truncated, parsed or cast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer (not bool)."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """An int (not bool, float or str) in ``minimum..maximum``: TypeError / ValueError naming ``name`` otherwise."""
    if not is_int(value):
        raise TypeError(
            f"{name} must be an int, got {name}={_show(value)} ({type(value).__name__}); "
            f"pass an integer >= {minimum}{hint} (no rounding or parsing is done)"
        )
    if value < minimum or (maximum is not None and value > maximum):
        kind = {0: " (a non-negative integer)", 1: " (a positive integer)"}.get(minimum, "")
        if maximum is not None and maximum - minimum <= 2:
            span = " or ".join(str(v) for v in range(minimum, maximum + 1))
        else:
            span = (f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}") + kind
        raise ValueError(f"{name} must be {span}{hint}, got {name}={value}")
    return int(value)


def check_optional_int(
    name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, hint: str = ""
) -> int | None:
    """None, or :func:`check_int`."""
    return None if value is None else check_int(name, value, minimum=minimum, maximum=maximum, hint=hint)


def check_bool(name: str, value: Any) -> bool:
    """True or False (Python or numpy bool) only: ``'no'``, ``0``, ``None`` raise TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be True or False, got {name}={_show(value)} ({type(value).__name__}); "
            "strings and numbers are not read as booleans"
        )
    return bool(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices`` (ValueError naming the choices otherwise)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {name}={_show(value)}")
    return value


def check_names(name: str, value: Any, allowed: Sequence[str]) -> tuple[str, ...] | None:
    """None, or a list/tuple of distinct names from ``allowed``.  A bare string (``'KV'``, which
    would iterate its characters) is a TypeError; unknown names a ValueError listing ``allowed``."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in allowed:
            hint = [value]
        elif all(c in allowed for c in value):
            hint = list(value)
        else:
            hint = list(allowed[:2])
        raise TypeError(
            f"{name} must be a list of names, got the string {name}={value!r}; "
            f"write e.g. {name}={hint!r} (choose from {list(allowed)})"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of names from {list(allowed)}, got {_show(value)}") from None
    for v in names:
        if not isinstance(v, str):
            raise TypeError(f"{name} entries must be names (str), got {_show(v)} in {name}={_show(value)}")
        if v not in allowed:
            raise ValueError(f"{name}: unknown name {v!r} in {name}={_show(value)}; choose from {list(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} lists a name twice: {name}={_show(value)}")
    if not names:
        raise ValueError(f"{name} is empty; give at least one of {list(allowed)} or None for all")
    return names


def real_array(name: str, value: Any, fix: str = "") -> np.ndarray:
    """``value`` as a float64 array, refusing complex (TypeError: the imaginary part would be
    dropped), strings, booleans and other non-numeric data; finiteness is the caller's check."""
    arr = np.asarray(value)
    if np.iscomplexobj(arr):
        raise TypeError(
            f"{name} is complex (dtype {arr.dtype}); rgflow works with real numbers -- "
            + (fix or f"pass the real part explicitly ({name}.real) if that is what you mean")
        )
    if arr.dtype == object:
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of real numbers, got entries that are not numbers") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} must be an array of real numbers, got dtype {arr.dtype} ({_show(value)}); "
            "convert it to a float array first (strings and booleans are not read as numbers)"
        )
    return np.asarray(arr, dtype=float)


def check_finite(name: str, arr: np.ndarray, fix: str = "") -> np.ndarray:
    """``arr`` if every entry is finite; ValueError naming the first bad entry otherwise."""
    bad = ~np.isfinite(arr)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        count = int(bad.sum())
        raise ValueError(
            f"{name} contains NaN or inf: {name}{list(idx)} = {arr[idx]} ({count} non-finite "
            f"entr{'y' if count == 1 else 'ies'}){fix}"
        )
    return arr


#: The largest quadrature order per piece the core accepts.
MAX_QUAD_ORDER = 320


def check_quad_order(value: Any, name: str = "quad_order", *, minimum: int = 1) -> int | None:
    """None (the automatic rule) or an int >= ``minimum``; a UserWarning below 4 nodes (a rule that
    coarse integrates only low-degree polynomials exactly: the results are inaccurate)."""
    q = check_optional_int(name, value, minimum=minimum, hint=" or None (automatic)")
    if q is not None and q > MAX_QUAD_ORDER:
        raise ValueError(
            f"{name} must be <= {MAX_QUAD_ORDER} (the core's largest rule per piece), got {q}; "
            "leave it None (automatic) or use <= 64 for convergence studies"
        )
    if q is not None and q < 4:
        warn_unusual(
            name,
            q,
            "fewer than 4 quadrature nodes per level give inaccurate expectations; "
            "leave it None (automatic) or use >= 8 for convergence studies",
        )
    return q


def warn_unusual(name: str, value: Any, why: str) -> None:
    """A UserWarning for an accepted but suspicious argument (e.g. ``quad_order=1``, ``rtol=10``)."""
    warnings.warn(f"{name}={value!r}: {why}", UserWarning, stacklevel=4)


def per_layer(name: str, value: float | Sequence[float], depth: int, *, positive: bool) -> tuple[float, ...]:
    """One real value per layer (a scalar is repeated); finite, and > 0 or >= 0 per ``positive``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        vals = (float(value),) * depth
    else:
        if isinstance(value, (str, bytes, bool, np.bool_, complex)) or not hasattr(value, "__iter__"):
            raise TypeError(
                f"{name} must be a real number or a sequence of {depth} real numbers, "
                f"got {name}={_show(value)} ({type(value).__name__})"
            )
        vals = tuple(real(f"{name}[{i}]", v) for i, v in enumerate(value))
        if len(vals) != depth:
            raise ValueError(
                f"{name} has {len(vals)} entries but depth={depth}; give one value per layer "
                f"(layers 1..{depth}) or a single scalar"
            )
    for i, v in enumerate(vals):
        if not math.isfinite(v):
            raise ValueError(f"{name}[layer {i + 1}] = {v} is not finite")
        if positive and v <= 0:
            raise ValueError(f"{name}[layer {i + 1}] = {v} must be > 0")
        if not positive and v < 0:
            raise ValueError(f"{name}[layer {i + 1}] = {v} must be >= 0 (it is a variance)")
    return vals


def check_inputs(x: Any) -> np.ndarray:
    """Validate inputs: a finite real array of shape (N, n0) with N >= 1 (ValueError otherwise;
    TypeError for complex or non-numeric data)."""
    if x is None:
        raise TypeError("x (the inputs) is required: pass an array of shape (N, n0)")
    arr = real_array("x", x)
    if arr.ndim == 1:
        raise ValueError(
            f"x must have shape (N, n0); got a 1-D array of shape {arr.shape} (use x[None, :] for one input)"
        )
    if arr.ndim != 2:
        raise ValueError(f"x must have shape (N, n0), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("x has no inputs (N = 0); give at least one row")
    if arr.shape[1] == 0:
        raise ValueError("x has zero input dimension (n0 = 0)")
    check_finite("x", arr, "; clean the inputs first (x must be finite)")
    return np.ascontiguousarray(arr)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two arrays (shape, and every float64 bit)."""
    a64, b64 = np.ascontiguousarray(a, dtype=float), np.ascontiguousarray(b, dtype=float)
    return a64.shape == b64.shape and a64.tobytes() == b64.tobytes()


def real(name: str, v: Any, *, finite: bool = False) -> float:
    """A real number (not bool, str or complex) as float; TypeError naming ``name`` otherwise
    (and ValueError if ``finite`` and it is NaN or inf)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {name}={_show(v)} ({type(v).__name__})")
    out = float(v)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {name}={out}")
    return out


def recorded_layers(depth: int, every: int) -> list[int]:
    """Layers 0, every, 2·every, …, depth at which the residual recursions and samplers record."""
    if not is_int(every) or every < 1:
        raise ValueError(f"every must be a positive integer, got every={every!r}")
    return [0] + [ell for ell in range(1, depth + 1) if ell % every == 0 or ell == depth]
