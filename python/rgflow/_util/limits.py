"""Cost and memory limits checked before a long or large computation starts.

* :func:`max_evaluations`: the largest number of quadrature nodes one nested rule (and the
  four-point tables of a theory with a fixed ``quad_order``) may use, from the environment
  variable ``RGFLOW_MAX_EVALUATIONS`` (default :data:`DEFAULT_MAX_EVALUATIONS`; ``0`` or ``inf``
  disables the limit).  The core refuses a rule above it with a ``ValueError`` that states the
  estimate, the limit and this variable.
* :func:`check_cost`: the same refusal for a whole computation estimated in Python.
* :func:`available_memory` / :func:`check_memory`: raise ``MemoryError`` before allocating
  tensors that cannot fit (the address-space limit ``RLIMIT_AS`` or the memory the system
  reports available), naming the estimate and the options that reduce it.
"""

from __future__ import annotations

import math
import os
import sys

#: Default limit on the estimated quadrature nodes (at the 2.5e6 to 1e7 nodes per second of one
#: core on 4 to 8 correlated samples, 10 to 40 s of work).
DEFAULT_MAX_EVALUATIONS = 1e8
#: Environment variable overriding :data:`DEFAULT_MAX_EVALUATIONS`.
MAX_EVALUATIONS_ENV = "RGFLOW_MAX_EVALUATIONS"


def max_evaluations() -> float:
    """The node limit (0.0: none), from ``RGFLOW_MAX_EVALUATIONS`` or the default."""
    raw = os.environ.get(MAX_EVALUATIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_EVALUATIONS
    try:
        v = float(raw)
    except ValueError:
        raise ValueError(f"{MAX_EVALUATIONS_ENV}={raw!r} is not a number (e.g. 1e10; 0 disables the limit)") from None
    if math.isnan(v) or v < 0:
        raise ValueError(f"{MAX_EVALUATIONS_ENV}={raw!r} must be >= 0 (0 disables the limit)")
    return 0.0 if math.isinf(v) else v


def check_cost(cost: float, what: str, reduce: str) -> None:
    """ValueError when ``cost`` (quadrature nodes) exceeds :func:`max_evaluations`."""
    limit = max_evaluations()
    if limit > 0 and cost > limit:
        raise ValueError(
            f"{what}: estimated cost {cost:.2e} quadrature nodes exceeds the limit {limit:.2e}; {reduce}, "
            f"or raise the limit with the environment variable {MAX_EVALUATIONS_ENV} "
            f"(e.g. {MAX_EVALUATIONS_ENV}={10 ** math.ceil(math.log10(cost)):.0e}; 0 disables it)"
        )


def _meminfo_available() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


def _address_space_left() -> float | None:
    """Room left under the soft ``RLIMIT_AS`` (None when unlimited or unknown)."""
    if sys.platform == "win32":  # pragma: no cover
        return None
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0.0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    used = float(line.split()[1]) * 1024.0
                    break
    except OSError:
        pass
    return max(float(soft) - used, 0.0)


def available_memory() -> tuple[float, str] | None:
    """(bytes, where the figure comes from) of memory a computation may still allocate, or
    None when unknown."""
    cands: list[tuple[float, str]] = []
    a = _address_space_left()
    if a is not None:
        cands.append((a, "the address-space limit RLIMIT_AS"))
    m = _meminfo_available()
    if m is not None:
        cands.append((m, "MemAvailable in /proc/meminfo"))
    return min(cands) if cands else None


def gb(nbytes: float) -> str:
    """``nbytes`` as "1.23 GB"."""
    return f"{nbytes / 1e9:.2f} GB"


def check_memory(nbytes: float, what: str, reduce: str) -> None:
    """MemoryError when ``nbytes`` exceed :func:`available_memory`, naming ``what`` was
    estimated and the options that ``reduce`` it."""
    avail = available_memory()
    if avail is not None and nbytes > avail[0]:
        raise MemoryError(
            f"{what} need about {gb(nbytes)}, more than the {gb(avail[0])} available ({avail[1]}); "
            f"reduce it with {reduce}"
        )
