"""Argument validation shared by every layer: ints, per-layer hyperparameters, inputs, reals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_int(name: str, value: Any, *, minimum: int = 1, hint: str = "") -> int:
    """An int (not bool) >= ``minimum``: TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{hint}, got {value}")
    return int(value)


def per_layer(name: str, value: float | Sequence[float], depth: int, *, positive: bool) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.integer, np.floating)):
        vals = (float(value),) * depth
    else:
        try:
            vals = tuple(float(v) for v in value)
        except TypeError as exc:
            raise TypeError(f"{name} must be a number or a sequence of {depth} numbers") from exc
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
    """Validate inputs: a finite float array of shape (N, n0) with N >= 1 (ValueError otherwise)."""
    arr = np.asarray(x, dtype=float)
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
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or inf; clean the inputs first")
    return np.ascontiguousarray(arr)


def real(name: str, v: Any) -> float:
    """A real number (not bool) as float; TypeError naming ``name`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


def recorded_layers(depth: int, every: int) -> list[int]:
    """Layers 0, every, 2·every, …, depth at which the residual recursions and samplers record."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    return [0] + [ell for ell in range(1, depth + 1) if ell % every == 0 or ell == depth]
