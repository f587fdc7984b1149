"""``rgflow run`` with architecture = "depthmup" (trained depth sweeps, nfd.md §3)."""

from pathlib import Path

import pytest

import rgflow.cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "depthmup_tanh.toml"


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[network]\narchitecture = "depthmup"\nwidth = 4\n', "network.width"),
        ('[network]\narchitecture = "depthmup"\ngamma0 = -1.0\n', "gamma0"),
        ('[network]\narchitecture = "depthmup"\n[ensemble]\nwidths = [4]\n', r"\[ensemble\]"),
        ('[network]\narchitecture = "depthmup"\nactivation = "nope"\n', "nope"),
        ('[network]\narchitecture = "depthmup"\n[training]\nwidths = []\n', "widths"),
    ],
)
def test_bad_depthmup_configs_are_named(tmp_path, capsys, text, match):
    assert rgflow.cli.main(["run", write(tmp_path, text), "--quiet", "--no-plots"]) == 2
    import re

    assert re.search(match, capsys.readouterr().err)


def test_the_example_is_a_valid_depthmup_config():
    from rgflow.cli._depthmup import build, is_depthmup, read_toml, settings

    raw = read_toml(EXAMPLE)
    assert is_depthmup(raw)
    cfg = settings(raw, networks=8)
    net, x, y = build(cfg)
    assert cfg["training"]["networks"] == 8 and net.gamma0 == 2.0 and x.shape == (2, 2) and y.shape == (2,)


@pytest.mark.slow
def test_rgflow_run_depthmup_end_to_end(tmp_path, capsys):
    pytest.importorskip("jax")
    text = (
        '[network]\narchitecture = "depthmup"\nactivation = "relu"\n'
        "[training]\ndepths = [2, 4, 8]\nwidths = [16]\nnetworks = 4\n[dmft]\nsamples = 500\nreplicas = 2\n"
    )
    out = tmp_path / "rep"
    assert rgflow.cli.main(["run", write(tmp_path, text), "--out", str(out), "--quiet", "--no-plots"]) == 0
    assert "| 16 | 4 | coupled | f(x1,T) |" in (out / "depthmup.md").read_text()
    assert "DMFT (n = ∞)" in capsys.readouterr().out
