"""``rgflow demo --dntk`` and ``theory.dntk = true`` in ``rgflow run``: the dNTK family in the reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import rgflow
from rgflow import cli
from rgflow.recursions import Theory

CONFIG = """
title = "dntk test"
[network]
activation = "{act}"
depth = 3
C_b = 0.1
C_W = 1.5
lambda_W = 1.3
[inputs]
generate = {{ n = 2, dim = 3, seed = 1 }}
[theory]
dntk = true
{extra}
[ensemble]
widths = [8]
networks = 64
groups = 4
[report]
plots = false
"""


def _run(tmp_path: Path, capsys, act: str = "tanh", extra: str = "") -> tuple[int, str, str]:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(act=act, extra=extra), encoding="utf-8")
    code = cli.main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_config_dntk_table_results_and_theory_file(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys)
    assert code == 0
    assert "dNTK family at layer 3" in out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["theory"]["dntk"] is True
    assert set(res["theory"]["tensors"]) >= {"P", "Q", "R", "S", "T", "U"}
    th = Theory.load(tmp_path / "out" / "theory.npz")
    direct = rgflow.theory(th.net, th.x, dntk=True)
    entries = [e for e in res["dntk"] if e["layer"] == 3]
    assert len(entries) == 6 * 5
    for e in entries:
        assert e["theory"] == getattr(direct, e["tensor"])[(2, *e["index"])]
    # the printed row of U at [0,1,1,0] is the value, to the printed digits
    u = direct.U[2, 0, 1, 1, 0]
    row = next(ln for ln in out.splitlines() if ln.startswith("U "))
    assert f"{u:.6g}" in row.split()
    np.testing.assert_array_equal(th.P, direct.P)


def test_run_config_dntk_kinked_and_invalid(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys, act="relu")
    assert code == 0
    assert "n/a" in out and "not defined for kinked" in out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(e["theory"] is None for e in res["dntk"] if e["tensor"] in "RSTU")
    assert any(e["theory"] not in (None, 0.0) for e in res["dntk"] if e["tensor"] == "Q")
    code, _, err = _run(tmp_path, capsys, extra="order = 0")
    assert code == 2 and "'theory.dntk'" in err


def test_run_without_dntk_has_no_table(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys, extra="")
    assert code == 0
    cfg = (tmp_path / "cfg.toml").read_text().replace("dntk = true", "dntk = false")
    (tmp_path / "cfg.toml").write_text(cfg)
    assert cli.main(["run", str(tmp_path / "cfg.toml"), "--out", str(tmp_path / "o2"), "--quiet"]) == 0
    out2, _ = capsys.readouterr()
    assert "dNTK family" not in out2
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res["dntk"] == [] and res["theory"]["dntk"] is False
