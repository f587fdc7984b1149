"""Type stubs for the Rust extension module ``rgflow._core`` (conversion and dispatch only)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "term_from_factors",
    "expect_batch",
    "expect_adaptive",
    "quadrature_rule",
    "mlp_theory",
    "tuple_closure",
    "resmlp_theory",
    "preresnet_theory",
    "depthmup_theory",
    "MAX_DERIVATIVE",
]

#: Activation spec: ("builtin", name, params) or ("custom", label, [f, f', f'', ...]).
_ActivationSpec = tuple[Any, ...]
# Every long function runs with the GIL released on a worker thread and stops on Ctrl-C
# (KeyboardInterrupt); a failed large allocation is a MemoryError; ``max_evals`` > 0 refuses a
# fixed-order nested quadrature rule of more nodes (ValueError stating the estimate and limit).

#: Per-sample term: (derivative order m, power q, sigma derivative orders) = D^m[z^q Π σ^(j)].
#: The orders are a Rust ``Vec<u8>``: accepted as any sequence of small ints, returned as ``bytes``.
_TermSpec = tuple[int, int, Sequence[int]]

MAX_DERIVATIVE: int

def term_from_factors(act: _ActivationSpec, orders: list[int], zpow: int) -> tuple[int, int, bytes]: ...
def expect_batch(
    act: _ActivationSpec,
    covs: npt.NDArray[np.float64],
    integrands: list[list[_TermSpec]],
    order: int,
    quadrature_only: bool,
    tol: float = 0.0,
    max_evals: float = 0.0,
) -> npt.NDArray[np.float64]: ...
def expect_adaptive(
    act: _ActivationSpec,
    cov: npt.NDArray[np.float64],
    integrands: list[list[_TermSpec]],
    tol: float,
    max_order: int,
    quadrature_only: bool,
    max_evals: float = 0.0,
) -> tuple[npt.NDArray[np.float64], float, int]: ...
def quadrature_rule(kind: str, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def mlp_theory(
    act: _ActivationSpec,
    x: npt.NDArray[np.float64],
    widths: npt.NDArray[np.float64],
    c_b: npt.NDArray[np.float64],
    c_w: npt.NDArray[np.float64],
    lambda_b: npt.NDArray[np.float64],
    lambda_w: npt.NDArray[np.float64],
    ntk: bool,
    order: int,
    quad_order: int,
    quadrature_only: bool,
    dntk: bool = False,
    tol: float = 0.0,
    max_evals: float = 0.0,
    layers: list[int] | None = None,
    tensors: list[str] | None = None,
    tuples: npt.NDArray[np.int64] | None = None,
) -> dict[str, Any]: ...

#: Size of the closure of sample tuples (M, 4) over n inputs: (tuples propagated, multisets per layer).
def tuple_closure(n: int, tuples: npt.NDArray[np.int64], pairs: bool) -> tuple[int, int]: ...

#: The theory functions return C-contiguous float64 arrays (L, N, N) / (L, N, N, N, N) whose memory
#: is the Rust buffer itself (no copy on the way out).
def resmlp_theory(
    act: _ActivationSpec,
    x: npt.NDArray[np.float64],
    c_b: npt.NDArray[np.float64],
    c_w: npt.NDArray[np.float64],
    gamma: npt.NDArray[np.float64],
    width: int,
    corrected: bool,
    order: int,
    quad_order: int,
    max_evals: float = 0.0,
) -> dict[str, npt.NDArray[np.float64]]: ...

#: Pre-activation ResNet kernel EFT.  ``method``: "ode" | "discrete"; ``closure``: "g_only" | "connected" |
#: "sigma".  Keys: layers, t, K0, K1, E2, U1 (M, N, N); V4, V_GS, V_SS (M, N, N, N, N); accepted, rejected.
def preresnet_theory(
    act: _ActivationSpec,
    k_init: npt.NDArray[np.float64],
    c_w: float,
    eps: float,
    depth: int,
    every: int,
    method: str,
    rtol: float,
    atol: float,
    closure: str,
    quad_order: int,
    max_evals: float = 0.0,
) -> dict[str, Any]: ...

#: Depth-μP ResNet at infinite width (nfd.md §2.1).  Keys: K, G, Phi, Psi (L+1, N, N); Theta,
#: Theta_decoupled (N, N); with ``limit`` also limit_s (list), limit_K, limit_G (limit_grid+1, N, N),
#: limit_Theta, limit_Theta_decoupled (N, N), limit_accepted, limit_rejected.
def depthmup_theory(
    act: _ActivationSpec,
    x: npt.NDArray[np.float64],
    depth: int,
    block_variance: float,
    readout_phi: bool,
    w_input: float,
    w_hidden: float,
    w_readout: float,
    limit: bool,
    rate: float,
    w_hidden_limit: float,
    limit_grid: int,
    rtol: float,
    atol: float,
    quad_order: int,
) -> dict[str, Any]: ...
