"""Every reference document the code, tests, examples and README cite ships with a clone (issue 17).

The spec notes live in ``docs/spec/`` (copied from the project's reference notes); a path
``docs/...`` cited anywhere must exist, and a bare spec name (``ntk.md`` §1.2) must be one of them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("python", "rust", "tests", "benches", "examples", "docs")
SUFFIXES = {".py", ".pyi", ".rs", ".md", ".toml"}


def _sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for tree in TREES:
        files += [
            p
            for p in (ROOT / tree).rglob("*")
            if p.suffix in SUFFIXES
            and "target" not in p.parts
            and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)  # e.g. benches/.nt-venv
        ]
    return files


def test_cited_docs_exist() -> None:
    cited: dict[str, list[str]] = {}
    for f in _sources():
        text = f.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"docs/[\w./-]*\w", text):
            cited.setdefault(m.group(0), []).append(str(f.relative_to(ROOT)))
    assert "docs/spec/ntk.md" in cited and "docs/sigma_kernel.md" in cited
    missing = {p: where for p, where in cited.items() if not (ROOT / p).exists()}
    assert not missing, f"cited but missing: {missing}"


def test_no_links_outside_the_clone() -> None:
    bad = [
        str(f.relative_to(ROOT))
        for f in _sources()
        if "docs/spec" not in f.as_posix()
        and f != Path(__file__).resolve()
        and re.search(r"shared/spec|\.\./shared", f.read_text(errors="replace"))
    ]
    assert not bad, f"references to ../shared/ (not in a clone): {bad}"


def test_bare_spec_names_are_in_docs_spec() -> None:
    names = set()
    for f in _sources():
        if "docs/spec" in f.as_posix():
            continue
        names |= set(re.findall(r"`{1,2}(\w+\.md)`{1,2} ?§", f.read_text(errors="replace")))
    assert {"ntk.md", "dntk.md"} <= names
    spec = {p.name for p in (ROOT / "docs" / "spec").glob("*.md")} | {p.name for p in (ROOT / "docs").glob("*.md")}
    assert names <= spec, f"spec notes cited but not in docs/: {sorted(names - spec)}"
