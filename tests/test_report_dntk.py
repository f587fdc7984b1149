"""``theory.dntk = true`` in ``rgflow run`` samples P, Q, R, S, T, U too (issue 12's leftover,
issue 17): the comparison rows, the dNTK table and results.json carry the sampled values, marked
as leading-order theory; kinked activations stay theory only, with the reason logged."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from rgflow import cli
from rgflow.recursions import DNTK_TENSORS
from rgflow.report import format_table, run_report

RAW = {
    "title": "dntk sampled",
    "network": {"activation": "tanh", "depth": 3, "C_b": 0.1, "C_W": 1.5, "lambda_W": 1.3},
    "inputs": {"generate": {"n": 2, "dim": 3, "seed": 1}},
    "theory": {"dntk": True},
    "ensemble": {"widths": [8], "networks": 400, "groups": 8},
}


def test_run_samples_the_dntk_family(tmp_path):
    spec = cli.config_from_dict(RAW)
    log = io.StringIO()
    res = run_report(spec, tmp_path, plots=False, progress=False, log=log)
    assert "with the dNTK family P..U" in log.getvalue()
    (ens,) = res["_ensembles"]
    th = res["_theory"]
    assert all(getattr(ens, t) is not None for t in DNTK_TENSORS)
    rows = [r for r in res["ensembles"][0]["comparison"] if r["tensor"] in DNTK_TENSORS]
    assert {r["tensor"] for r in rows} == set(DNTK_TENSORS) and len(rows) == 6 * 3
    assert all(r["leading_order"] for r in rows)
    # layers 1 and 2 are exact: no remainder there; layer 3 gets 4 (l-2)/n max|T|
    for r in rows:
        if r["layer"] <= 2:
            assert r["remainder"] == 0.0
        else:
            assert r["remainder"] == pytest.approx(4 * 1 / 8 * r["max_abs_theory"], rel=1e-12)
        assert r["z"] is not None and r["z"] < 1e3
    # the table entries are the ensemble's numbers
    e = next(d for d in res["dntk"] if d["tensor"] == "U" and d["layer"] == 3 and d["index"] == [0, 1, 1, 0])
    (s,) = e["sampled"]
    assert s["value"] == ens.U[2, 0, 1, 1, 0] and s["stderr"] == ens.stderr.U[2, 0, 1, 1, 0]
    assert s["z"] == pytest.approx(abs(th.U[2, 0, 1, 1, 0] - s["value"]) / s["stderr"])
    text = format_table(res)
    assert "sampled ± stderr" in text and "P..U theory is leading order" in text
    u_rows = text.split("\nU ")[1].splitlines()
    assert u_rows[1].split()[0] == "n=8" and f"{ens.U[2, 0, 0, 0, 0]:.6g}" in u_rows[1].split()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["ensembles"][0]["dntk_sampled"] is True
    assert np.load(tmp_path / "ensemble_n_8.npz")["U"].shape == (3, 2, 2, 2, 2)


def test_kinked_activation_stays_theory_only(tmp_path):
    raw = {**RAW, "network": {**RAW["network"], "activation": "relu"}}
    log = io.StringIO()
    with pytest.warns(RuntimeWarning, match="ddNTK means R, S, T, U are not defined"):
        res = run_report(cli.config_from_dict(raw), None, plots=False, progress=False, log=log)
    assert "the dNTK family is theory only (relu is kinked" in log.getvalue()
    assert res["ensembles"][0]["dntk_sampled"] is False
    assert not any(r["tensor"] in DNTK_TENSORS for r in res["ensembles"][0]["comparison"])
    assert all(d["sampled"] == [] for d in res["dntk"])
    assert "sampled ± stderr" not in format_table(res)
