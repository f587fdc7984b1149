"""The README's quick start runs as written (with fewer sampled networks)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

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
