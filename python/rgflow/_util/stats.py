"""Batch means: running mean and standard error over independent groups, and the group split."""

from __future__ import annotations

import numpy as np


class Welford:
    """Running mean and M2 of the per-group estimates (dict of arrays)."""

    def __init__(self) -> None:
        self.k = 0
        self.mean: dict[str, np.ndarray] = {}
        self.m2: dict[str, np.ndarray] = {}

    def add(self, est: dict[str, np.ndarray]) -> None:
        self.k += 1
        for name, v in est.items():
            if name not in self.mean:
                self.mean[name] = v.copy()
                self.m2[name] = np.zeros_like(v)
                continue
            d = v - self.mean[name]
            self.mean[name] += d / self.k
            self.m2[name] += d * (v - self.mean[name])

    def stderr(self) -> dict[str, np.ndarray]:
        return {k: np.sqrt(np.maximum(m2, 0.0) / (self.k - 1) / self.k) for k, m2 in self.m2.items()}


def group_bounds(networks: int, groups: int) -> list[tuple[int, int]]:
    base, extra = divmod(networks, groups)
    bounds, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds
