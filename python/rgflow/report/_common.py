"""Helpers shared by the reports: machine description, JSON cleaning, number formatting,
z-scores, the progress log and figure saving."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._util.version import VERSION


def machine_info() -> dict[str, Any]:
    """CPU count, CPU model, OS, Python and library versions."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    info["rgflow"] = VERSION
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        pass
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def clean(v: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return clean(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, Path):
        return str(v)
    return v


def zscore(diff: float, se: float, scale: float) -> float:
    """|diff| / se; a zero standard error counts only if the values differ."""
    d = abs(diff)
    if se > 0:
        return d / se
    return 0.0 if d <= 1e-12 * max(scale, 1e-300) else math.inf


def save_figure(plt: Any, fig: Any, out: Path, name: str, files: list[str]) -> None:
    """Lay out, write ``out/name`` as PNG, close the figure and record the file."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    files.append(name)


def legend_every_line(axes: Any, **kw: Any) -> None:
    """Give every distinct line label of the panels a legend entry: a legend on the first panel
    that shows a label no earlier legend has (lines with one label share one style)."""
    seen: set[str] = set()
    for ax in axes:
        labels = set(ax.get_legend_handles_labels()[1])
        if labels and not labels <= seen:
            ax.legend(**kw)
            seen |= labels


class Log:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def __call__(self, msg: str) -> None:
        if self.stream is not None:
            self.stream.write(f"[rgflow] {msg}\n")
            self.stream.flush()


# ============================================================================ the run


def num(v: float | None, width: int = 11) -> str:
    if v is None:
        return f"{'—':>{width}}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:>{width}.3e}"
    return f"{v:>{width}.5f}"


def zs(v: float | None) -> str:
    if v is None:
        return f"{'—':>8}"
    if math.isinf(v):
        return f"{'inf':>8}"
    return f"{v:8.2f}"


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'rgflow[plot]' (or matplotlib); or pass --no-plots"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
