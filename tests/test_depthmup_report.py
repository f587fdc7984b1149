"""The depth-μP depth-convergence report (nfd.md §3): tables, JSON and plots — from a synthetic sweep
with known power laws (fast), and from a small trained sweep (slow)."""

import json
import math

import numpy as np
import pytest

import rgflow
from rgflow.learning import DepthSweep
from rgflow.report import depthmup_report, format_depthmup_table

X = math.sqrt(2) * np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
Y = np.array([1.0, -1.0])
DEPTHS = (4, 8, 16, 32)


def synthetic_sweep(N=6, T=3, p=1.0, gap=0.1, seed=0):
    """Per-network values obs(L) = c + a/L^p + noise·1e-6, and coupled − decoupled = gap (flat in L)."""
    rng = np.random.default_rng(seed)
    L = np.asarray(DEPTHS, dtype=float)[None, :, None]
    D, M, P = len(DEPTHS), 2, 2

    def obs(shape, a):
        base = 0.5 + a * L.reshape((1, D, 1) + (1,) * len(shape)) ** -p
        mode = np.array([gap, 0.0]).reshape((1, 1, M) + (1,) * len(shape))
        return base + mode + 1e-6 * rng.standard_normal((N, D, M) + shape)

    values = {
        "f": obs((T + 1, P), 0.3),
        "loss": obs((T + 1,), 0.2),
        "kernels": obs((T + 1, 5, P, P), 0.0)
        + np.linspace(0, 1, T + 1).reshape(1, 1, 1, T + 1, 1, 1, 1) * L[..., None, None, None, None] ** -p,
        "ntk": obs((T + 1, P, P), 0.0),
        "G0": obs((P, P), 0.0),
        "S_coup": obs((P, P), 0.0),
        "S_dir": obs((P, P), 0.0),
    }
    net = rgflow.DepthMuPResNet("tanh", width=64, gamma0=2.0)
    return DepthSweep(net, X, Y, DEPTHS, ("coupled", "decoupled"), T, 0.1, 0, values)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_rates_and_gaps_of_a_synthetic_sweep(p):
    s = synthetic_sweep(p=p)
    r = s.rates()
    assert r["f(x1,T)"].p == pytest.approx(p, abs=1e-3)
    assert r["loss(T)"].p == pytest.approx(p, abs=1e-3)
    assert r["dK_L[0,-1]"].p == pytest.approx(p, abs=1e-3)
    g, gs = s.gap("f")
    np.testing.assert_allclose(g, 0.1, atol=1e-5)
    assert abs(r["gap f(x1,T) size"].p) < 1e-3  # a flat coupling: slope 0
    d, _ = s.differences("f")
    np.testing.assert_allclose(d[:, 0, 0], 0.3 * (np.array(DEPTHS[:-1]) ** -p - np.array(DEPTHS[1:]) ** -p), atol=1e-5)
    table = format_depthmup_table([s])
    assert f"| 64 | 6 | coupled | f(x1,T) | {p:.2f} ± 0.00 |" in table
    with pytest.raises(ValueError, match="three depths"):
        DepthSweep(s.net, X, Y, DEPTHS[:2], s.modes, 3, 0.1, 0, {k: v[:, :2] for k, v in s.values.items()}).rates()


def test_report_writes_tables_json_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    s = synthetic_sweep()
    summary = depthmup_report([s], tmp_path)
    for name in (
        "depthmup.md",
        "depthmup.json",
        "depthmup_convergence.png",
        "depthmup_coupling.png",
        "depthmup_kernels.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    js = json.loads((tmp_path / "depthmup.json").read_text())
    assert js["sweeps"][0]["rates"]["coupled"]["f(x1,T)"]["p"] == pytest.approx(1.0, abs=1e-3)
    v = s.values["f"]
    np.testing.assert_allclose(js["sweeps"][0]["gap_f"]["mean"], (v[:, :, 0] - v[:, :, 1]).mean(0))
    assert summary["files"][:2] == ["depthmup.md", "depthmup.json"]
    with pytest.raises(ValueError, match="sweeps"):
        depthmup_report([], tmp_path)


@pytest.mark.slow
def test_report_from_a_trained_sweep_with_dmft(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("matplotlib")
    net = rgflow.DepthMuPResNet("tanh", width=16, gamma0=2.0)
    sweep = rgflow.train_depth_sweep(net, X, Y, depths=(2, 4, 8), steps=3, eta=0.1, networks=4, seed=2)
    dm = [
        rgflow.dmft(net.with_(depth=L), X, Y, steps=3, eta=0.1, samples=400, replicas=2, coupled=c)
        for L in (2, 4)
        for c in (True, False)
    ]
    depthmup_report([sweep], tmp_path, dmft=dm)
    table = (tmp_path / "depthmup.md").read_text()
    assert "| 16 | 4 | coupled | f(x1,T) |" in table and "DMFT (n = ∞)" in table
