"""Benchmark: ``rgflow.critical`` for every built-in activation (target: < 1 s in total).

Run as ``python benches/bench_critical.py``.  Prints one row per activation (class, critical
hyperparameters, K*, time) and the total; the first call of the process is included (it
builds the quadrature rules), so this is the cold-start cost.
"""

from __future__ import annotations

import time

import rgflow
from rgflow.activations import BUILTIN_PARAMS
from rgflow.criticality import critical


def main() -> float:
    rows = []
    t_all = time.perf_counter()
    for name in BUILTIN_PARAMS:
        t0 = time.perf_counter()
        c = critical(rgflow.Activation(name))
        rows.append((name, c, time.perf_counter() - t0))
    total = time.perf_counter() - t_all

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.10g}"

    print(f"{'activation':<12} {'class':<16} {'C_b':>14} {'C_W':>14} {'K*':>14} {'ms':>8}")
    for name, c, dt in rows:
        ks = "line" if c.universality_class == "scale-invariant" else f(c.K_star)
        print(f"{name:<12} {c.universality_class:<16} {f(c.C_b):>14} {f(c.C_W):>14} {ks:>14} {1e3 * dt:8.1f}")
    print(f"total: {total:.3f} s for {len(rows)} activations (target < 1 s)")
    return total


if __name__ == "__main__":
    main()
