"""Argument checks and the linear algebra every learning formula shares.

All training-set solves go through a Cholesky factor of the training block (never an explicit
inverse); a factorisation failure becomes a ValueError that names the cause and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._util.validation import real_array
from ..recursions import Theory


def check_theory(
    th: Any, *, need: tuple[str, ...] = ("K",), why: str = "", hint: str = "", tuples_ok: bool = False
) -> Theory:
    """A :class:`rgflow.Theory` (an MLP theory result) with the output layer and the tensors in
    ``need``; ``hint``: the theory call that provides them; ``tuples_ok``: the caller reads a
    ``tuples=`` theory (through :class:`rgflow.learning.OutputTensors`)."""
    if not isinstance(th, Theory):
        raise TypeError(
            f"th must be the result of rgflow.theory(net, x) for an rgflow.MLP (a Theory), got {type(th).__name__}"
        )
    missing = [k for k in need if getattr(th, k, None) is None]
    if missing:
        hint = hint or (
            "rgflow.theory(net, x, ntk=True, order=1)" if set(missing) - {"K", "Theta"} else "rgflow.theory(net, x)"
        )
        raise ValueError(f"th carries no {', '.join(missing)}{why}; recompute it with {hint}")
    if th.tuples is not None and not tuples_ok and set(need) & {"V", "D", "F", "A", "B"}:
        raise ValueError(
            "th was computed with tuples= (four-point tensors at a list of sample tuples); the learning "
            "predictions need the dense tensors: recompute it without tuples="
        )
    if th.depth not in th.layers:
        raise ValueError(
            f"th holds layers {list(th.layers)} but not the output layer {th.depth}; recompute it with "
            + (hint if hint else "layers=[-1] (or without layers=)")
        )
    return th


def check_indices(name: str, idx: Any, n_inputs: int) -> np.ndarray:
    """Integer index array into the theory's N inputs: 1-D, in range, no repeats."""
    arr = np.asarray(idx)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of input indices, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; give at least one index into the inputs th.x")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer indices into th.x (rows 0..{n_inputs - 1}), got dtype {arr.dtype}")
    if arr.min() < -n_inputs or arr.max() >= n_inputs:
        raise ValueError(
            f"{name} has indices out of range for {n_inputs} inputs (allowed 0..{n_inputs - 1}); "
            "compute the theory on all train and test inputs together"
        )
    arr = np.where(arr < 0, arr + n_inputs, arr).astype(np.intp)
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{name} repeats an index; list each input once")
    return arr


def check_targets(y: Any, n_train: int, *, name: str = "y") -> np.ndarray:
    """Targets as a finite float array (N_A, n_L); a 1-D array is one output (n_L = 1)."""
    arr = real_array(name, y)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N_A, n_L) (training inputs × outputs), got shape {arr.shape}")
    if arr.shape[0] != n_train:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but there are {n_train} training inputs; "
            f"give one row of targets per training index (shape ({n_train}, n_L))"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no output columns (n_L = 0)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop or impute those targets first")
    return arr


def check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise must be a real number (the observation-noise variance σ²), got {type(noise).__name__}")
    v = float(noise)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"noise is the observation-noise variance σ² and must be finite and >= 0, got {noise}")
    return v


def duplicate_rows(x: np.ndarray, idx: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of training indices whose input rows are identical."""
    out = []
    rows = x[idx]
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            if np.array_equal(rows[a], rows[b]):
                out.append((int(idx[a]), int(idx[b])))
    return out


class Chol:
    """Cholesky factor of a symmetric positive-definite training block, with solves."""

    def __init__(self, M: np.ndarray, what: str, *, x: np.ndarray | None = None, idx: np.ndarray | None = None):
        M = 0.5 * (M + M.T)
        try:
            self.L = np.linalg.cholesky(M)
            ok = bool(np.all(np.isfinite(self.L)))
        except np.linalg.LinAlgError:
            ok = False
        # a numerically singular block factorises with a tiny pivot; treat it as singular too
        if ok:
            d = np.diag(self.L) ** 2
            ok = bool(d.min() > 1e-13 * max(float(np.max(np.diag(M))), 1e-300))
        if not ok:
            dup = duplicate_rows(x, idx) if x is not None and idx is not None else []
            cause = (
                f"repeated training inputs (train indices {', '.join(f'{a}={b}' for a, b in dup[:3])})"
                if dup
                else "nearly collinear training inputs or a degenerate kernel"
            )
            raise ValueError(
                f"the training-set {what} is singular (not positive definite): {cause}; "
                "remove the repeated training inputs (average their targets) or pass noise=σ²>0"
            )
        self.n = M.shape[0]

    def solve(self, b: np.ndarray) -> np.ndarray:
        """M^{-1} b through two triangular solves."""
        return np.linalg.solve(self.L.T, np.linalg.solve(self.L, b))

    def logdet(self) -> float:
        return float(2.0 * np.sum(np.log(np.diag(self.L))))


def output_block(T: np.ndarray, layer: int | None) -> np.ndarray:
    """The (N, …) tensor of the output layer (or a 1-based layer) from an (L, …) stack."""
    return T[-1] if layer is None else T[layer - 1]
