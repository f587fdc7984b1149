"""The ``rgflow`` command line: ``demo``, ``run CONFIG.toml``, ``critical``.

Top layer (depends on report, models, criticality).
"""

from ._main import load_config, main

__all__ = ["load_config", "main"]
