"""``rgflow learn CONFIG.toml`` (issue 13 part 5): the learning report against the library calls it wraps,
its schema, its bad-configuration errors, and the learning panel of ``rgflow demo``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

import rgflow
from rgflow import cli
from rgflow.cli._learn import learn_config_from_dict, teacher_data
from rgflow.cli._validate import validate_learn

TINY = """
title = "tiny learn"
[network]
activation = "tanh"
depth = 3
critical = true
[data]
generate = {{n_train = 3, n_test = 2, dim = 3, seed = 4, mean_square = 0.5, target = "sin"}}
[learning]
algorithm = "{algorithm}"
widths = [8, 16]
networks = 32
groups = 8
seed = 3
{extra}
[report]
plots = {plots}
"""


def run_main(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "learn.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_schema_example_is_a_valid_learn_configuration(capsys):
    code, out, _ = run_main(["learn", "--schema"], capsys)
    assert code == 0
    cfg = validate_learn(tomllib.loads(out))
    assert cfg.learning.algorithm == "gd" and cfg.learning.widths == [16, 32, 64]
    assert cfg.data.generate is not None and cfg.data.generate.n_train == 4


def test_gd_report_reproduces_the_library_calls(tmp_path, capsys):
    """Every number of the report is the library's: predict(order=0, 1) on the theory of that width and the
    linearised mean (mean_lin) of rgflow.train with the same seed (bitwise), and the z-scores are consistent."""
    cfg = write(tmp_path, TINY.format(algorithm="gd", extra="evidence = {C_b = [0.0, 0.1], C_W = [0.9, 1.1]}",
                                      plots="false"))  # fmt: skip
    code, out, err = run_main(["learn", str(cfg), "--out", str(tmp_path / "rep"), "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "rep" / "learning.json").read_text())
    x, y, y_test = teacher_data(3, 2, 3, 4, 0.5, "sin", 1)
    tr, te = [0, 1, 2], [3, 4]
    for row in res["rows"]:
        n = row["width"]
        net = rgflow.MLP.critical("tanh", depth=3, width=n, learning_rates="constant", out_width=1)
        th = rgflow.theory(net, x, dntk=True)
        p0 = rgflow.predict(th, y, tr, te, kind="gd", order=0)
        p1 = rgflow.predict(th, y, tr, te, kind="gd", order=1)
        np.testing.assert_allclose(row["mean_infinite"], p0.mean, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(row["mean_order1"], p1.mean, rtol=1e-13, atol=1e-15)
        ens = rgflow.train(net, x, y, tr, te, networks=32, groups=8, seed=3 + n, theory=th)
        assert ens.mean_lin is not None and ens.stderr_lin is not None and row["estimator"] == "mean_lin"
        np.testing.assert_array_equal(row["mean_sampled"], ens.mean_lin)
        np.testing.assert_array_equal(row["stderr_sampled"], ens.stderr_lin)
        z = np.abs(ens.mean_lin - p1.mean) / ens.stderr_lin
        np.testing.assert_allclose(row["z_order1"], z, rtol=1e-12)
        assert np.all(z < 4.5)  # 32 networks agree with the O(1/n) mean within sampling error
        bv = row["bias_variance"]["infinite"]
        g = rgflow.learning.generalization(p0, y_test)
        assert bv["bias"] == pytest.approx(g.bias, rel=1e-12) and bv["variance"] == pytest.approx(g.variance, rel=1e-12)
    ev = res["evidence"]
    for i, cb in enumerate(ev["C_b"]):
        for j, cw in enumerate(ev["C_W"]):
            th0 = rgflow.theory(rgflow.MLP("tanh", depth=3, width=2, C_b=cb, C_W=cw, out_width=1), x, order=0)
            assert ev["log_evidence"][i][j] == pytest.approx(rgflow.learning.log_evidence(th0, y, tr), rel=1e-12)
    assert "tiny learn" in out and "|z| O(1/n)" in out and "evidence (6.34) maximum" in out


def test_bayes_report_uses_exactly_conditioned_networks(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    cfg = write(tmp_path, TINY.format(algorithm="bayes", extra="", plots="true"))
    code, _, err = run_main(["learn", str(cfg), "--out", str(tmp_path / "rep"), "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "rep" / "learning.json").read_text())
    x, y, _ = teacher_data(3, 2, 3, 4, 0.5, "sin", 1)
    row = res["rows"][1]
    net = rgflow.MLP.critical("tanh", depth=3, width=16, learning_rates="constant", out_width=1)
    th = rgflow.theory(net, x)
    np.testing.assert_allclose(
        row["mean_order1"], rgflow.predict(th, y, [0, 1, 2], [3, 4], kind="bayes", order=1).mean, rtol=1e-13
    )
    cens = rgflow.learning.condition(net, x, y, [0, 1, 2], [3, 4], networks=32, groups=8, seed=3 + 16)
    np.testing.assert_array_equal(row["mean_sampled"], cens.mean)
    for f in ("learning_width.png", "learning_bias_variance.png"):
        assert (tmp_path / "rep" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "learning_evidence.png" not in res["files"]


def test_data_file(tmp_path, capsys):
    x, y, yt = teacher_data(3, 2, 3, 0, 0.5, "tanh", 2)
    np.savez(tmp_path / "d.npz", x_train=x[:3], y_train=y, x_test=x[3:], y_test=yt)
    text = TINY.format(algorithm="gd", extra="", plots="false").replace(
        'generate = {n_train = 3, n_test = 2, dim = 3, seed = 4, mean_square = 0.5, target = "sin"}', 'file = "d.npz"'
    )
    spec = learn_config_from_dict(tomllib.loads(text), base=tmp_path)
    np.testing.assert_array_equal(spec.x, x)
    np.testing.assert_array_equal(spec.y, y)
    np.testing.assert_array_equal(spec.y_test, yt)
    assert list(spec.train) == [0, 1, 2] and list(spec.test) == [3, 4]
    assert spec.net(8).out_width == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[network]", '[network]\narchitecture = "resmlp"'), "learn predicts trained MLPs only"),
        (('activation = "tanh"', 'activation = "sigmoid"'), "'network.critical'"),
        (("widths = [8, 16]", "widths = [8, 8]"), "repeated widths"),
        (("networks = 32", "networks = 8"), "too small for learning.groups"),
        (("depth = 3", "depth = 1"), "'network.depth' must be >= 2"),
        (('algorithm = "gd"', 'algorithm = "adam"'), "'learning.algorithm'"),
        (("seed = 3", "seed = 3\nevidence = {C_b = [0.1], C_W = [1.0, 2.0]}"), "at least 2 values"),
        (("[learning]", "[learning]\nbogus = 1"), "unknown key 'learning.bogus'"),
    ],
)
def test_bad_learn_configurations_exit_2_naming_the_key(tmp_path, capsys, change, message):
    text = TINY.format(algorithm="gd", extra="", plots="false")
    assert change[0] in text
    cfg = write(tmp_path, text.replace(change[0], change[1], 1))
    code, _, err = run_main(["learn", str(cfg), "--out", str(tmp_path / "rep")], capsys)
    assert code == 2, err
    assert message in err


def test_data_file_errors(tmp_path, capsys):
    text = TINY.format(algorithm="gd", extra="", plots="false").replace(
        'generate = {n_train = 3, n_test = 2, dim = 3, seed = 4, mean_square = 0.5, target = "sin"}', 'file = "d.npz"'
    )
    cfg = write(tmp_path, text)
    code, _, err = run_main(["learn", str(cfg)], capsys)
    assert code == 2 and "no such file" in err
    (tmp_path / "d.npz").write_text("1 2 3\n4 5 6\n")  # a text file: not an archive, and no advice to unpickle
    code, _, err = run_main(["learn", str(cfg)], capsys)
    assert code == 2 and "cannot read" in err and ".npz" in err and "pickle" not in err
    np.savez(tmp_path / "d.npz", x_train=np.ones((2, 2)), y_train=np.ones((2, 1)))
    code, _, err = run_main(["learn", str(cfg)], capsys)
    assert code == 2 and "'x_test'" in err
    np.savez(tmp_path / "d.npz", x_train=np.ones((2, 2)), y_train=np.ones((3, 1)), x_test=np.ones((1, 2)))
    code, _, err = run_main(["learn", str(cfg)], capsys)
    assert code == 2 and "y_train must be (N_A, n_L)" in err


def test_learn_without_config_and_help(capsys):
    code, _, err = run_main(["learn"], capsys)
    assert code == 2 and "CONFIG.toml argument is missing" in err
    code, out, _ = run_main(["learn", "--help"], capsys)
    assert code == 0 and "O(1/n)" in out and "--schema" in out


def test_demo_learning_panel_quick(tmp_path, capsys):
    """``rgflow demo --quick`` ends with the learning panel: trained GELU networks against n = ∞ and O(1/n)."""
    code, out, err = run_main(["demo", "--quick", "--no-plots", "--quiet", "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "d" / "learning" / "learning.json").read_text())
    assert [r["width"] for r in res["rows"]] == [8, 16]
    assert res["kind"] == "gd" and res["evidence"]["critical"]["C_W"] == pytest.approx(1.98305826, rel=1e-7)
    assert "learning panel" in out and "|z| O(1/n)" in out
    assert cli.build_parser().parse_args(["demo", "--no-learning"]).no_learning is True
