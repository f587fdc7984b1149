"""Documentation generated from the schema (:mod:`._schema`): the commented example TOML of
``rgflow run --schema`` and the README's configuration section.

``rgflow.cli.update_readme("README.md")`` rewrites that section in place; ``tests/test_config_schema.py``
fails when it is out of date.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ._schema import ARCHITECTURES, Config, Key, LearnConfig
from ._validate import describe_type, fields, type_alternatives

__all__ = ["schema_text", "schema_markdown", "schema_keys", "update_readme", "README_START", "README_END"]

README_START = "### Configuration (`rgflow run`)"
README_END = "\n## "
FIX_COMMAND = "python -c 'import rgflow.cli; rgflow.cli.update_readme(\"README.md\")'"

_WIDTH = 40  # column of the comments in the example


def toml_value(v: object) -> str:
    """A TOML literal for the example values of the schema."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(e)}" for k, e in v.items()) + "}"
    return repr(v)


def _tables(root: type = Config) -> list[tuple[str, type]]:
    return [(name, tp) for name, tp, _ in fields(root) if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")]


def _subtables(tp: Any) -> list[type]:
    return [a for a in type_alternatives(tp) if hasattr(a, "__dataclass_fields__")]


def _type(tp: Any, meta: Key) -> str:
    text = meta.type_text or describe_type(tp)
    bounds = [f">= {meta.ge:g}" if meta.ge is not None else "", f"> {meta.gt:g}" if meta.gt is not None else ""]
    bounds.append(f"<= {meta.le}" if meta.le else "")
    return " ".join([text, *filter(None, bounds)])


def _default(meta: Key) -> str:
    if meta.default_text is not None:
        return meta.default_text
    if meta.required:
        return "required"
    if meta.default is None:
        return "none"
    if meta.default == {}:
        return "defaults"
    return toml_value(meta.default)


def _archs(meta: Key) -> str:
    return "all" if meta.archs == ARCHITECTURES else ", ".join(meta.archs)


def schema_keys() -> list[tuple[str, Any, Key]]:
    """Every key of the schema as (path, type, Key), sub-table keys included, in document order."""
    out: list[tuple[str, Any, Key]] = []
    for name, tp, meta in fields(Config):
        if not hasattr(tp, "__dataclass_fields__"):
            out.append((name, tp, meta))
    for tname, ttype in _tables():
        for name, tp, meta in fields(ttype):
            out.append((f"{tname}.{name}", tp, meta))
            for sub in _subtables(tp):  # an inline table applies where its key does
                out += [(f"{tname}.{name}.{n}", t, dataclasses.replace(m, archs=meta.archs)) for n, t, m in fields(sub)]
    return out


def _line(name: str, tp: Any, meta: Key, arch: str, others: bool, details: bool) -> list[str]:
    applies = arch in meta.archs
    if not applies and not others:
        return []
    ex = meta.example_for(arch)
    off = not applies or arch in meta.commented or ex is None
    text = f"{'# ' if off else ''}{name} = {toml_value(ex if ex is not None else '...')}"
    scope = "" if meta.archs == ARCHITECTURES else f"[{_archs(meta)}] "
    extra = f" ({_type(tp, meta)}; {_default_words(meta)})" if details else ""
    lines = [f"{text:<{_WIDTH - 1}} # {scope}{meta.help}{extra}"]
    for sub in _subtables(tp) if details else ():
        for n, t, m in fields(sub):
            lines.append(f"{'#':<{_WIDTH - 1}} #   {name}.{n}: {m.help} ({_type(t, m)}; {_default_words(m)})")
    return lines


def _default_words(meta: Key) -> str:
    d = _default(meta)
    return d if d == "required" else f"default {d}"


def schema_text(architecture: str = "mlp", others: bool = True, details: bool = True, root: type = Config) -> str:
    """A complete, commented example configuration for ``architecture``: every key of the schema, those of
    other architectures (``others``) and alternatives commented out, with help, and (``details``) type,
    bounds, default and the keys of inline tables.  It is itself a valid configuration.  ``root``:
    :class:`Config` (``rgflow run``) or :class:`LearnConfig` (``rgflow learn``, MLPs only)."""
    lines: list[str] = []
    for name, tp, meta in fields(root):
        if not hasattr(tp, "__dataclass_fields__"):
            lines += _line(name, tp, meta, architecture, others, details)
    if root is LearnConfig:
        lines.append("# rgflow learn configuration (MLPs); generated from the schema by 'rgflow learn --schema'")
    else:
        lines.append(
            f"# rgflow run configuration for network.architecture = {architecture!r}; generated from the schema by "
            "'rgflow run --schema [" + "|".join(ARCHITECTURES) + "]'"
        )
    top = {n: m for n, _, m in fields(root)}
    for tname, ttype in _tables(root):
        head = f"[{tname}]"
        lines += ["", f"{head:<{_WIDTH}}# {'required' if top[tname].required else 'optional'}: {top[tname].help}"]
        for name, tp, meta in fields(ttype):
            lines += _line(name, tp, meta, architecture, others, details)
        names = {n for n, _, m in fields(ttype) if others or architecture in m.archs}
        rules = [r.text(tname) for r in getattr(ttype, "RULES", ()) if set(r.mentions) <= names]
        lines += [f"# rule: {r}" for r in rules]
    return "\n".join(lines) + "\n"


_DESIGN = """\
*Design note.* The schema is one module of typed stdlib dataclasses (`python/rgflow/cli/_schema.py`),
one per table; each field declares its type, default, bounds, architectures and help.  A small
generic validator (`_validate.py`) walks them, and this section and `rgflow run --schema` are
rendered from them.  Stdlib dataclasses rather than pydantic or msgspec: no new dependency (numpy
stays the only runtime requirement), and the error messages (the key path, one line, exit code 2)
and the per-architecture applicability rules are ours to control rather than a library's format."""

_NOTES = """\
The preresnet table lists, at the checkpoints t = ε²ℓ, K0 against Ḡ, V4 against n·Cov(G) and K1 against
n(Ḡ − K0), with relative errors (theory/sampled − 1) and their standard errors, for the converged theory
and the published scheme side by side.  `examples/gelu_critical.toml` is an MLP example;
`examples/preresnet_paper.toml` is the paper's Fig. 1 setup.  Measured on 2 CPU cores shared with
other jobs: `gelu_critical` 128 s, `preresnet_paper` 629 s (175 s on free cores)."""


def schema_markdown() -> str:
    """The README's configuration section (from its heading up to the next ``##`` heading)."""
    rows = ["| key | type | default | architectures | meaning |", "|---|---|---|---|---|"]
    for path, tp, meta in schema_keys():
        cells = [f"`{path}`", _type(tp, meta), _default(meta), _archs(meta), meta.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rules = [f"* {r.text(t)}" for t, tt in _tables() for r in getattr(tt, "RULES", ())]
    parts = [
        README_START,
        f"<!-- generated from python/rgflow/cli/_schema.py: do not edit, run `{FIX_COMMAND}` -->",
        "A TOML file with the tables `[network]`, `[inputs]`, `[ensemble]` (required), `[theory]` and `[report]`."
        "  `rgflow run --schema [mlp|resmlp|preresnet]` prints a commented example with every key.  Unknown keys,"
        " keys of another architecture (`network.architecture`) and bad values are errors that name the key"
        " (exit code 2).  `inputs.file` is relative to the configuration file, `report.out` to the current"
        " directory.",
        "\n".join(rows),
        "Rules across keys:\n\n" + "\n".join(rules),
        "An MLP (`rgflow run --schema` prints it with every key of the other architectures, types and defaults):",
        "```toml\n" + schema_text("mlp", others=False, details=False) + "```",
        "A pre-activation ResNet (`rgflow run --schema preresnet`):",
        "```toml\n" + schema_text("preresnet", others=False, details=False) + "```",
        _NOTES,
        _DESIGN,
    ]
    return "\n\n".join(parts) + "\n"


def readme_block(text: str) -> tuple[int, int]:
    """(start, end) of the configuration section in README text."""
    start = text.index(README_START)
    end = text.index(README_END, start)
    return start, end + 1


def update_readme(path: str | Path, check: bool = False) -> bool:
    """Rewrite the README's configuration section from the schema; True when it was already current."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    start, end = readme_block(text)
    current = text[start:end] == schema_markdown() + "\n"
    if not current and not check:
        p.write_text(text[:start] + schema_markdown() + "\n" + text[end:], encoding="utf-8")
    return current
