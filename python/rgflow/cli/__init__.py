"""The ``rgflow`` command line: ``demo``, ``run CONFIG.toml``, ``critical``.

Top layer (depends on report, models, criticality).  The configuration format of ``rgflow run`` is
declared once, as typed dataclasses in :mod:`._schema`; :func:`schema_text` (``rgflow run --schema``)
and :func:`schema_markdown` (the README's configuration section) are rendered from it.
"""

from ._config import build_spec, config_from_dict, demo_spec, load_config
from ._docs import schema_keys, schema_markdown, schema_text, update_readme
from ._main import build_parser, main
from ._schema import ARCHITECTURES, Config, ConfigError
from ._validate import parse_activation, validate

__all__ = [
    "ARCHITECTURES",
    "Config",
    "ConfigError",
    "build_parser",
    "build_spec",
    "config_from_dict",
    "demo_spec",
    "load_config",
    "main",
    "parse_activation",
    "schema_keys",
    "schema_markdown",
    "schema_text",
    "update_readme",
    "validate",
]
