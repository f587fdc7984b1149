"""A plain-text progress line on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Plain-text progress line on stderr (appears after ``delay`` seconds; throttled)."""

    def __init__(self, total: int, enabled: bool, label: str, delay: float = 2.0, unit: str = "networks") -> None:
        self.total, self.enabled, self.label, self.delay, self.unit = total, enabled, label, delay, unit
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        el = now - self.t0
        if el < self.delay or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total
        bar = "#" * int(pct / 5) + "." * (20 - int(pct / 5))
        sys.stderr.write(
            f"\r{self.label} [{bar}] {done}/{self.total} {self.unit} ({pct:5.1f}%), {rate:,.0f}/s, ETA {eta:,.0f} s "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
