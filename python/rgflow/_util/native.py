"""The compiled Rust extension :mod:`rgflow._core`, imported in one place.

Every layer that calls the core imports it from here (``from .._util.native import core``), so the
import graph stays layered: the import-linter contract ignores exactly this one edge to the package
root, through which the extension module is reached.
"""

from __future__ import annotations

from .. import _core as core

__all__ = ["core"]
