"""The error-controlled rule for smooth activations without closed forms (issue 14, part 1).

With ``method="auto"`` and no fixed order, 3- and 4-sample blocks of smooth activations
(tanh, sigmoid, swish, softplus, sin, custom callables) use per-level orders and an
interpolated innermost level (``rust/core/src/expect/fast.rs``).  These tests check it against
converged fixed-order quadrature (``method="quadrature"`` at a high order) on random
covariance blocks, including strongly correlated ones (ρ up to 0.999), and on full theory
tensors; that the old rule stays reachable; and that results do not depend on the thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rgflow
from rgflow import Activation
from rgflow._util.native import core as _core
from rgflow.gauss import core_activation

ROOT = Path(__file__).resolve().parent.parent


def _custom() -> Activation:
    """A smooth custom callable without closed form: x + sin(2x)/2 (entire)."""
    return Activation.from_callable(
        lambda x: x + 0.5 * np.sin(2 * x),
        derivatives=[lambda x: 1 + np.cos(2 * x), lambda x: -2 * np.sin(2 * x)],
        name="wiggly_linear",
    )


ACTS = ["tanh", "swish", "softplus", "sigmoid", "sin", "custom"]


def _act(name: str) -> Activation:
    return _custom() if name == "custom" else Activation(name)


def _blocks(d: int, seed: int) -> list[np.ndarray]:
    """Random d×d covariances: generic ones with variances in [0.3, 1.6], and ones with a
    pair (or a chain) of samples at correlation 0.99 / -0.995 / 0.999."""
    rng = np.random.default_rng(seed)
    out = []
    for rho in (None, 0.99, -0.995, 0.999):
        a = rng.standard_normal((d, d + 2))
        c = a @ a.T / (d + 2)
        if rho is not None:
            corr = np.eye(d)
            corr[0, 1] = corr[1, 0] = rho
            if d >= 3:  # a third sample close to the first pair
                corr[0, 2] = corr[2, 0] = 0.9 * abs(rho)
                corr[1, 2] = corr[2, 1] = 0.9 * rho
            w, v = np.linalg.eigh(corr)
            corr = (v * np.maximum(w, 1e-6)) @ v.T
            sd = np.sqrt(np.diag(corr))
            c = corr / np.outer(sd, sd)
        s = np.sqrt(rng.uniform(0.3, 1.6, d))
        out.append(c / np.outer(np.sqrt(np.diag(c)), np.sqrt(np.diag(c))) * np.outer(s, s))
    return out


def _integrands(d: int) -> list[list[tuple[int, int, list[int]]]]:
    """⟨σσσσ⟩-type integrands: no, two and all samples differentiated once (d = 4), and the
    3-sample block of a repeated input ⟨σ_a² σ_b σ'_c⟩ style products (d = 3)."""
    if d == 4:
        return [[(0, 0, [m >> i & 1]) for i in range(4)] for m in (0b0000, 0b0011, 0b0101, 0b1111)]
    return [
        [(0, 0, [0, 0]), (0, 0, [0]), (0, 0, [0])],
        [(0, 0, [0, 1]), (0, 0, [1]), (0, 0, [0])],
        [(0, 0, [1, 1]), (0, 0, [1]), (0, 0, [1])],
    ]


@pytest.mark.parametrize("act_name", ACTS)
@pytest.mark.parametrize("d", [3, 4])
def test_fast_rule_matches_converged_quadrature(act_name: str, d: int) -> None:
    """Fast rule (order 0, auto) vs fixed-order quadrature converged to ~1e-13: ≤ 1e-9 relative."""
    act = core_activation(_act(act_name))
    covs = np.ascontiguousarray(_blocks(d, seed=10 * d + len(act_name)))
    its = _integrands(d)
    fast = _core.expect_batch(act, covs, its, 0, False).reshape(len(covs), -1)
    ref_order = 24 if d == 4 else 40
    ref = _core.expect_batch(act, covs, its, ref_order, True).reshape(len(covs), -1)
    ref2 = _core.expect_batch(act, covs, its, ref_order - 4, True).reshape(len(covs), -1)
    # the reference is converged: two orders agree (and it converges geometrically, so the
    # higher one is far more accurate than their difference)
    scale = np.maximum(np.abs(ref), 1e-3)
    assert np.max(np.abs(ref - ref2) / scale) < 3e-10
    err = np.abs(fast - ref) / scale
    assert np.max(err) <= 1e-9, f"{act_name} d={d}: max relative error {np.max(err):.2e}"


def test_kinked_elu_keeps_the_split_rule() -> None:
    """elu has a kink: the default rule is the fixed-order split rule, identical to method='quadrature'."""
    act = core_activation(Activation("elu", alpha=0.7))
    covs = np.ascontiguousarray(_blocks(4, seed=3)[:2])
    its = _integrands(4)
    a = _core.expect_batch(act, covs, its, 0, False)
    b = _core.expect_batch(act, covs, its, 0, True)
    np.testing.assert_array_equal(a, b)


def test_tolerance_knob_tightens_the_error() -> None:
    """A tighter ``tol`` gives a smaller error (tanh, 4-D)."""
    act = core_activation(Activation("tanh"))
    covs = np.ascontiguousarray(_blocks(4, seed=7))
    its = _integrands(4)
    ref = _core.expect_batch(act, covs, its, 22, True)
    errs = [np.max(np.abs(_core.expect_batch(act, covs, its, 0, False, tol) - ref)) for tol in (1e-6, 1e-12)]
    assert errs[1] < errs[0]
    assert errs[1] < 1e-10


def _theory(act: str | Activation, n: int, depth: int, **kw: object) -> rgflow.Theory:
    x = np.random.default_rng(n).standard_normal((n, 3))
    net = rgflow.MLP(act, depth=depth, width=32, C_b=0.05, C_W=1.2)
    return rgflow.theory(net, x, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("act_name", ["tanh", "swish"])
def test_theory_tensors_match_converged_quadrature(act_name: str) -> None:
    """All first-order tensors, N = 4, depth 3: default (fast rule) vs quadrature at order 32
    per piece: max|Δ|/max|T| ≤ 1e-9 per tensor."""
    fast = _theory(act_name, 4, 3)
    ref = _theory(act_name, 4, 3, quad_order=32, expectations="quadrature")
    for name, t in ref.tensors().items():
        f = fast.tensors()[name]
        err = np.max(np.abs(f - t)) / np.max(np.abs(t))
        assert err <= 1e-9, f"{act_name} {name}: {err:.2e}"


def test_old_rule_stays_reachable() -> None:
    """An explicit quad_order selects the fixed-order rule, with or without closed forms."""
    a = _theory("tanh", 4, 2, quad_order=8)
    b = _theory("tanh", 4, 2, quad_order=8, expectations="quadrature")
    for name, t in a.tensors().items():
        np.testing.assert_array_equal(t, b.tensors()[name])


_SCRIPT = """
import sys, numpy as np, rgflow
x = np.random.default_rng(5).standard_normal((5, 3))
th = rgflow.theory(rgflow.MLP("tanh", depth=3, width=32, C_b=0.05, C_W=1.2), x)
np.savez(sys.argv[1], **th.tensors())
"""


def test_identical_across_thread_counts(tmp_path: Path) -> None:
    """RAYON_NUM_THREADS=1 and 2 give bit-identical tensors."""
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads, PYTHONPATH=str(ROOT / "python"))
        path = tmp_path / f"t{threads}.npz"
        subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], env=env, check=True, timeout=300)
        out[threads] = dict(np.load(path))
    for name, t in out["1"].items():
        np.testing.assert_array_equal(t, out["2"][name])


def _network_x(n: int) -> np.ndarray:
    """The inputs of ``benches/bench_fastexp.py``: N standard normal points in 4-D."""
    return np.random.default_rng(n).standard_normal((n, 4))


def test_nearly_singular_network_block() -> None:
    """A layer-1 block of the benchmark's tanh network (inputs 0, 2, 3, 4 of N = 8; smallest
    correlation eigenvalue 8e-4, largest sd 1.3): the fast rule to ≤ 5e-10 of converged
    quadrature (its split levels also cut at the Gaussian's centre unless a cut lies within
    0.3 of it; with the nested rule's 1.5 it was off by 8e-10 on the first pass)."""
    x = _network_x(8)[[0, 2, 3, 4]]
    cov = x @ x.T / 4  # K at layer 1: C_b = 0, C_W = 1, n0 = 4
    assert np.linalg.eigvalsh(cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))))[0] < 1e-3
    act = core_activation(Activation("tanh"))
    its = [[(0, 0, [m >> i & 1]) for i in range(4)] for m in (0b0000, 0b0011, 0b0101, 0b1001, 0b1111)]
    covs = np.ascontiguousarray(cov[None])
    fast = _core.expect_batch(act, covs, its, 0, False)
    ref = _core.expect_batch(act, covs, its, 28, True)
    ref2 = _core.expect_batch(act, covs, its, 24, True)
    scale = np.maximum(np.abs(ref), 1e-3)
    assert np.max(np.abs(ref - ref2) / scale) < 2e-10
    err = np.max(np.abs(fast - ref) / scale)
    assert err <= 5e-10, f"max relative error {err:.2e}"


def test_odd_integrands_vanish_by_symmetry() -> None:
    """tanh is odd: level 0 integrates u ≥ 0 only, each class weighted by 1 + its parity, so
    integrands odd under z → -z (an odd number of σ factors: ⟨σσσ⟩, ⟨σσσσ'⟩) are 0 and even ones
    (⟨σσσ'⟩, ⟨σσσσ⟩, ⟨σσσ'σ'⟩) match the fixed-order rule."""
    act = core_activation(Activation("tanh"))
    s, p = (0, 0, [0]), (0, 0, [1])
    cases = {
        3: ([[s, s, s], [p, p, s]], [[s, s, p], [p, p, p]]),
        4: ([[s, s, s, p], [p, p, p, s]], [[s, s, s, s], [s, s, p, p]]),
    }
    for d, (odd, even) in cases.items():
        covs = np.ascontiguousarray(_blocks(d, seed=40 + d))
        fast = _core.expect_batch(act, covs, odd + even, 0, False).reshape(len(covs), -1)
        ref = _core.expect_batch(act, covs, odd + even, 24 if d == 4 else 40, True).reshape(len(covs), -1)
        assert np.max(np.abs(ref[:, :2])) <= 1e-12  # they are 0 (not an artefact of the fold)
        assert np.max(np.abs(fast[:, :2])) <= 1e-15
        assert np.max(np.abs(fast[:, 2:] - ref[:, 2:]) / np.maximum(np.abs(ref[:, 2:]), 1e-3)) <= 1e-9


def _network_theory(n: int, depth: int, **kw: object) -> rgflow.Theory:
    net = rgflow.MLP("tanh", depth=depth, width=64, C_b=0.0, C_W=1.0)
    return rgflow.theory(net, _network_x(n), **kw)  # type: ignore[arg-type]


def _check_network_theory(n: int, depth: int, order: int) -> None:
    fast = _network_theory(n, depth)
    ref = _network_theory(n, depth, quad_order=order, expectations="quadrature")
    for name, t in ref.tensors().items():
        f = fast.tensors()[name]
        if not np.any(t):  # K1, Theta1 at depth 2 (V = 0 at layer 1)
            assert not np.any(f), name
            continue
        err = np.max(np.abs(f - t)) / np.max(np.abs(t))
        assert err <= 1e-9, f"{name}: {err:.2e}"


@pytest.mark.slow
def test_network_theory_matches_converged_quadrature(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's network (tanh, C_b = 0, C_W = 1, inputs in 4-D: the largest variances,
    sd ≈ 1.5 at layer 1), N = 5, depth 2: every first-order tensor within 1e-9 (max|Δ|/max|T|)
    of quadrature at order 32 per piece (~3 min; the reference's pair tables need it: at order
    28 their error, 2e-11, shows in A as 1.7e-9)."""
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "0")
    _check_network_theory(5, 2, 32)


@pytest.mark.slow
def test_network_theory_depth_10_matches_converged_quadrature(monkeypatch: pytest.MonkeyPatch) -> None:
    """As above through depth 10 (the benchmark's depth, ~15 min)."""
    monkeypatch.setenv("RGFLOW_MAX_EVALUATIONS", "0")
    _check_network_theory(5, 10, 32)
