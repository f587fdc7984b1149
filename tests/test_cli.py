"""The ``rgflow`` command line: help, exit codes, configuration errors, run, demo, critical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rgflow import cli

ROOT = Path(__file__).resolve().parents[1]

TINY = """
title = "tiny"
[network]
activation = "relu"
depth = 2
C_W = 2.0
[inputs]
generate = {n = 2, dim = 2, seed = 1}
[ensemble]
widths = [4, 8]
networks = 64
groups = 4
[report]
plots = false
"""

RESULT_KEYS = {
    "title",
    "created",
    "command",
    "config",
    "network",
    "inputs",
    "table_layer",
    "theory",
    "ensembles",
    "entries",
    "machine",
    "plots",
    "total_seconds",
}


def run_main(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return lines[0]


# ------------------------------------------------------------------------ help and usage


def test_help_lists_commands(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for word in ("demo", "run", "critical", "exit codes", "--debug"):
        assert word in out


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        ("demo", ["--out", "--networks", "--quick", "--no-plots", "GELU", "criticality"]),
        ("run", ["CONFIG.toml", "--out", "--networks", "[network]", "[ensemble]"]),
        ("critical", ["ACTIVATION", "C_b", "C_W", "name:key=value"]),
    ],
)
def test_subcommand_help(cmd, words, capsys):
    code, out, _ = run_main([cmd, "--help"], capsys)
    assert code == 0
    for w in words:
        assert w in out, w


def test_run_schema(capsys, tmp_path):
    code, out, _ = run_main(["run", "--schema"], capsys)
    spec = cli.load_config(write(tmp_path, out))  # the printed schema is itself a valid configuration
    assert spec.depth == 4 and len(spec.ensembles) == 2
    assert code == 0
    for key in ("[network]", "activation", "critical", "[inputs]", "generate", "mean_square", "[ensemble]", "backend"):
        assert key in out
    assert out.startswith('title = "')
    code, _, err = run_main(["run"], capsys)
    assert code == 2
    assert "CONFIG.toml" in one_line(err)


def test_no_command_is_usage_error(capsys):
    code, out, _ = run_main([], capsys)
    assert code == 2
    assert "usage" in out


def test_unknown_command_and_option(capsys):
    code, _, err = run_main(["frobnicate"], capsys)
    assert code == 2
    assert "invalid choice" in one_line(err)
    code, _, err = run_main(["demo", "--bogus"], capsys)
    assert code == 2
    assert "--bogus" in one_line(err)


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0
    assert out.startswith("rgflow ")


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "rgflow", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "critical" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rgflow", "run", "/no/such/file.toml"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "no such configuration file" in one_line(r.stderr)


# ------------------------------------------------------------------------ configuration errors


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("depth = 2", "depth = 2\nwidht = 3"), "network.widht"),
        (('title = "tiny"', 'title = "tiny"\nnetworks = 3'), "unknown key 'networks'"),
        (("groups = 4", "groups = 4\nbackends = 'jax'"), "ensemble.backends"),
        (("seed = 1}", "seed = 1, size = 3}"), "inputs.generate.size"),
        (('activation = "relu"', 'activation = "rleu"'), "network.activation"),
        (('activation = "relu"', 'activation = {name = "leaky_relu", slop = 0.1}'), "network.activation"),
        (("depth = 2", 'depth = "two"'), "network.depth"),
        (("depth = 2", "depth = 0"), "network.depth"),
        (("C_W = 2.0", "C_W = [2.0, 2.0, 2.0]"), "network.C_W"),
        (("C_W = 2.0", "C_W = -1.0"), "C_W"),
        (("C_W = 2.0", ""), "network.C_W"),
        (("networks = 64", "networks = 5"), "ensemble.networks"),
        (("networks = 64", "networks = [64]"), "ensemble.networks"),
        (("widths = [4, 8]", "widths = []"), "ensemble.widths"),
        (("widths = [4, 8]", "widths = [4, 0]"), "ensemble.widths[1]"),
        (("widths = [4, 8]", "widths = [[4, 4]]"), "ensemble.widths[0]"),
        (("groups = 4", "groups = 4\nbackend = 'torch'"), "ensemble.backend"),
        (("plots = false", "plots = 'no'"), "report.plots"),
        (("plots = false", "layer = 5"), "report.layer"),
        (("[inputs]", "[inputs]\nfile = 'x.npy'"), "inputs"),
        (("[ensemble]", "[theory]\norder = 2\n[ensemble]"), "theory.order"),
        (("[ensemble]", "[theory]\nexpectations = 'exact'\n[ensemble]"), "theory.expectations"),
        (("C_W = 2.0", "C_W = 2.0\ncritical = true"), "network.C_W"),
        (("[network]", "[netwrok]"), "netwrok"),
        (("depth = 2", "depth = 2\n[[bad]]"), "bad"),
    ],
)
def test_bad_config_exit_2(tmp_path, capsys, edit, needle):
    old, new = edit
    assert old in TINY
    cfg = write(tmp_path, TINY.replace(old, new, 1))
    code, out, err = run_main(["run", str(cfg)], capsys)
    assert code == 2, err
    line = one_line(err)
    assert needle in line, line
    assert not (tmp_path / "rgflow-report").exists()


def test_missing_section_and_invalid_toml(tmp_path, capsys):
    code, _, err = run_main(["run", str(write(tmp_path, "[network]\nactivation='relu'\ndepth=2\nC_W=2.0\n"))], capsys)
    assert code == 2
    assert "[inputs]" in one_line(err) or "[ensemble]" in err
    code, _, err = run_main(["run", str(write(tmp_path, "[network\n", "bad.toml"))], capsys)
    assert code == 2
    assert "invalid TOML" in one_line(err)


def test_bad_inputs_file(tmp_path, capsys):
    np.save(tmp_path / "x3d.npy", np.zeros((2, 2, 2)))
    cfg = TINY.replace("generate = {n = 2, dim = 2, seed = 1}", "file = 'x3d.npy'")
    code, _, err = run_main(["run", str(write(tmp_path, cfg))], capsys)
    assert code == 2
    assert "inputs.file" in one_line(err)
    cfg = TINY.replace("generate = {n = 2, dim = 2, seed = 1}", "file = 'missing.npy'")
    code, _, err = run_main(["run", str(write(tmp_path, cfg))], capsys)
    assert code == 2
    assert "missing.npy" in one_line(err)


def test_debug_shows_traceback(tmp_path, capsys):
    cfg = write(tmp_path, TINY.replace("depth = 2", "depth = 2\nwidht = 3"))
    code, _, err = run_main(["--debug", "run", str(cfg)], capsys)
    assert code == 2
    assert "Traceback" in err


def test_runtime_failure_exit_1(tmp_path, capsys, monkeypatch):
    import rgflow.cli._main

    def boom(*a, **k):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setattr(rgflow.cli._main, "run_report", boom)
    cfg = write(tmp_path, TINY)
    code, _, err = run_main(["run", str(cfg)], capsys)
    assert code == 1
    line = one_line(err)
    assert "simulated failure second line" in line and "--debug" in line
    code, _, err = run_main(["run", str(cfg), "--debug"], capsys)
    assert code == 1
    assert "Traceback" in err


def test_missing_matplotlib_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    cfg = write(tmp_path, TINY.replace("plots = false", "plots = true"))
    code, _, err = run_main(["run", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert code == 1
    line = one_line(err)
    assert "matplotlib" in line and "--no-plots" in line
    code, _, err = run_main(["run", str(cfg), "--out", str(tmp_path / "r"), "--no-plots", "--quiet"], capsys)
    assert code == 0, err


def test_bad_networks_flag(capsys):
    code, _, err = run_main(["demo", "--networks", "1"], capsys)
    assert code == 2
    assert "--networks" in one_line(err)
    code, _, err = run_main(["demo", "--networks", "lots"], capsys)
    assert code == 2


# ------------------------------------------------------------------------ run


def test_run_tiny(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    code, out, err = run_main(["run", str(cfg), "--out", "rep"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert [e["label"] for e in res["ensembles"]] == ["n=4", "n=8"]
    for e in res["ensembles"]:
        assert {"networks", "seconds", "networks_per_second", "comparison", "file", "backend"} <= set(e)
        assert {r["tensor"] for r in e["comparison"]} >= {"K", "K1", "Theta", "Theta1", "V", "D", "F", "A", "B"}
        assert (tmp_path / "rep" / e["file"]).is_file()
    assert res["plots"] == []
    assert res["network"]["activation"]["name"] == "relu"
    assert np.asarray(res["inputs"]["x"]).shape == (2, 2)
    assert {
        "tensor",
        "index",
        "layer",
        "ensemble",
        "theory_infinite",
        "theory_first_order",
        "sampled",
        "stderr",
        "z",
    } <= set(res["entries"][0])
    assert any(e["extrapolated"] for e in res["entries"])
    # the saved theory loads and matches the library call
    import rgflow

    th = rgflow.Theory.load(tmp_path / "rep" / "theory.npz")
    ref = rgflow.theory(rgflow.MLP("relu", depth=2, width=4, C_W=2.0), np.asarray(res["inputs"]["x"]))
    np.testing.assert_allclose(th.V, ref.V)
    # the table
    assert "layer 2" in out and "K[0,1]" in out and "n→∞ fit" in out
    assert "[rgflow] theory" in err  # progress on stderr


def test_run_npy_inputs_jax_and_numpy(tmp_path, capsys):
    pytest.importorskip("jax")
    x = np.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8], [-0.4, 0.5, 1.2]])
    np.save(tmp_path / "x.npy", x)
    cfg = TINY.replace("generate = {n = 2, dim = 2, seed = 1}", 'file = "x.npy"')
    cfg = cfg.replace('activation = "relu"', 'activation = {name = "leaky_relu", slope = 0.1}')
    cfg = cfg.replace("widths = [4, 8]", "widths = [[6]]").replace(
        "groups = 4", "groups = 4\nbackend = ['numpy', 'jax']"
    )
    code, out, err = run_main(["run", str(write(tmp_path, cfg)), "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 0, err
    assert err == ""
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [e["backend"] for e in res["ensembles"]] == ["numpy", "jax"]
    assert res["inputs"]["file"].endswith("x.npy")
    np.testing.assert_allclose(res["inputs"]["x"], x)
    assert res["network"]["activation"] == {"name": "leaky_relu", "slope": 0.1}


def test_run_theory_order0_with_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    cfg = TINY.replace("plots = false", "plots = true").replace(
        "[ensemble]", "[theory]\norder = 0\nntk = false\n[ensemble]"
    )
    cfg = cfg.replace("depth = 2", "depth = 3")
    code, out, err = run_main(["run", str(write(tmp_path, cfg)), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["theory"]["tensors"] == ["K"]
    assert {e["tensor"] for e in res["entries"]} == {"K"}
    for f in res["plots"]:
        assert (tmp_path / "r" / f).stat().st_size > 1000


def test_run_expectations_quadrature_matches_closed_form(tmp_path, capsys):
    """``theory.expectations = "quadrature"`` forces the quadrature engine; relu theory agrees with
    the default closed forms to the quadrature's accuracy."""
    res = {}
    for method in ("auto", "quadrature"):
        cfg = TINY.replace("[ensemble]", f"[theory]\nexpectations = '{method}'\n[ensemble]")
        out_dir = tmp_path / method
        code, out, err = run_main(["run", str(write(tmp_path, cfg)), "--out", str(out_dir)], capsys)
        assert code == 0, err
        res[method] = json.loads((out_dir / "results.json").read_text())
        assert res[method]["theory"]["expectations"] == method
    for a, b in zip(res["auto"]["entries"], res["quadrature"]["entries"], strict=True):
        for key in ("theory_infinite", "theory_first_order"):
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-8, abs=1e-10)


def test_run_critical_and_depth_one(tmp_path, capsys):
    pytest.importorskip("rgflow.criticality")
    cfg = TINY.replace('activation = "relu"', 'activation = "gelu"\ncritical = true').replace("C_W = 2.0\n", "")
    spec = cli.load_config(write(tmp_path, cfg))
    assert spec.C_b == pytest.approx(0.17292239, abs=1e-8) and spec.C_W == pytest.approx(1.98305826, abs=1e-8)
    cfg1 = TINY.replace("depth = 2", "depth = 1").replace("widths = [4, 8]", "widths = [4]")
    code, out, err = run_main(["run", str(write(tmp_path, cfg1, "d1.toml")), "--out", str(tmp_path / "d1")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "d1" / "results.json").read_text())
    assert res["table_layer"] == 1 and res["ensembles"][0]["hidden_widths"] == []


def test_example_config_is_valid():
    spec = cli.load_config(ROOT / "examples" / "gelu_critical.toml")
    assert spec.depth == 4 and spec.activation.name == "gelu"
    assert [e.width for e in spec.ensembles] == [16, 32, 64]
    assert spec.x.shape == (4, 3)
    np.testing.assert_allclose(np.mean(spec.x**2, axis=1), 1.70876726)


def test_networks_override():
    spec = cli.load_config(ROOT / "examples" / "gelu_critical.toml", networks=100)
    assert [e.networks for e in spec.ensembles] == [100, 100, 100]


# ------------------------------------------------------------------------ critical


def test_critical_bad_activation_exit_2(capsys):
    code, _, err = run_main(["critical", "rleu"], capsys)
    assert code == 2
    assert "rleu" in one_line(err)
    code, _, err = run_main(["critical", "leaky_relu:slop=0.1"], capsys)
    assert code == 2


def test_critical_table(capsys):
    pytest.importorskip("rgflow.criticality")
    code, out, err = run_main(["critical"], capsys)
    assert code == 0, err
    relu = [ln for ln in out.splitlines() if ln.startswith("relu ")]
    assert relu, out
    nums = [float(t) for t in relu[0].split()[2:4]]
    assert nums == [0.0, 2.0]
    gelu = [ln for ln in out.splitlines() if ln.startswith("gelu ")][0]
    assert "0.17292239" in gelu and "1.9830582" in gelu and "half-stable" in gelu
    assert "sigmoid" in out
    code, out, err = run_main(["critical", "leaky_relu:slope=0.5"], capsys)
    assert code == 0, err
    assert "1.6" in out  # C_W = 2 / (1 + a^2)


# ------------------------------------------------------------------------ demo


def _load_factor() -> float:
    """The 30 s budget is for an otherwise idle 2-core machine; scale it by the current load."""
    try:
        return max(1.0, os.getloadavg()[0] / max(1, os.cpu_count() or 1))
    except OSError:  # pragma: no cover
        return 1.0


def test_demo_quick(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    t0 = time.perf_counter()
    code, out, err = run_main(["demo", "--quick", "--no-learning", "--out", str(tmp_path / "demo")], capsys)
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    assert elapsed < 30 * _load_factor(), elapsed
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["network"]["activation"]["name"] == "gelu"
    assert res["network"]["C_b"][0] == pytest.approx(0.17292239)
    assert sorted(res["plots"]) == ["depth.png", "scaling.png", "width.png", "zscores.png"]
    for f in res["plots"]:
        assert (tmp_path / "demo" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {e["tensor"] for e in res["entries"]} == {"K", "Theta", "V", "D", "F", "A", "B"}
    for word in ("theory n=∞", "theory+1/n", "sampled", "± stderr", "|z|", "Θ[0,1]", "B[0101]"):
        assert word in out


@pytest.mark.slow
def test_demo_full(tmp_path):
    """The full demo, as a user runs it (< 3 minutes on 2 idle cores)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "rgflow", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 180 * _load_factor(), elapsed
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [e["label"] for e in res["ensembles"]] == ["n=16", "n=64"]
    # the n -> infinity fit agrees with the leading-order theory for every representative entry
    fits = [e for e in res["entries"] if e["extrapolated"] and e["layer"] >= 2]
    assert fits and max(e["z"] for e in fits) < 5
    # the 1/n-corrected mean metric and NTK agree with the samples at both widths
    two = [e for e in res["entries"] if e["tensor"] in ("K", "Theta") and not e["extrapolated"]]
    assert max(e["z"] for e in two) < 5
    # the learning panel: trained networks agree with the O(1/n) GD mean at every width
    learn = json.loads((tmp_path / "demo" / "learning" / "learning.json").read_text())
    assert [r["width"] for r in learn["rows"]] == [8, 16, 32]
    assert max(float(np.max(r["z_order1"])) for r in learn["rows"]) < 4
    assert {"learning_width.png", "learning_bias_variance.png", "learning_evidence.png"} <= set(learn["files"])
