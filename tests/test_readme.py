"""The README's quick start runs as written (with fewer sampled networks)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S)
    assert match, "README has no '## Quick start' python block"
    code = match.group(1).replace("networks=20_000", "networks=400").replace("networks=2_000", "networks=200")
    scope: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), scope)
    th, ens, tr = scope["th"], scope["ens"], scope["tr"]
    assert th.K.shape == (4, 3, 3) and ens.K.shape == (4, 3, 3)  # type: ignore[attr-defined]
    assert tr.mean.shape == (1, 1)  # type: ignore[attr-defined]


def _demo_paragraph(text: str) -> str:
    start = text.index("`rgflow demo` needs no files")
    return text[start : text.index("Exit codes", start)]


def test_demo_files_named_in_readme_exist(tmp_path: Path) -> None:
    """Every output file the README's demo paragraph names is written by ``rgflow demo`` (issue 17)."""
    pytest.importorskip("matplotlib")
    from rgflow import cli

    para = _demo_paragraph(README.read_text(encoding="utf-8"))
    named = set(re.findall(r"`([\w<>.-]+\.(?:npz|png|json))`", para))
    concrete = {f for f in named if "<" not in f}
    assert {"results.json", "theory.npz", "ensemble_n_16.npz", "ensemble_n_64.npz", "zscores.png"} <= concrete
    out = tmp_path / "demo"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["demo", "--networks", "64", "--quiet", "--out", str(out)]) == 0
    written = {p.name for p in out.rglob("*") if p.is_file()}  # the learning panel writes to out/learning/
    assert concrete <= written, f"named in README but not written: {sorted(concrete - written)}"
    for pattern in named - concrete:  # placeholders such as ensemble_n_<width>.npz
        rx = re.escape(pattern).replace(re.escape("<width>"), r"\d+")
        assert any(re.fullmatch(rx, w) for w in written), pattern
