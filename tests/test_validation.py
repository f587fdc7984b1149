"""rgflow.theory (the Rust engine) against sampled finite-width networks.

Tolerances: the sampled mean metric/NTK equal ``K + K1/n`` and ``Theta + Theta1/n`` up to an
O(1/n²) remainder, negligible against the standard errors here, so those are held to 4 standard
errors.  The four-point tensors are first-order coefficients: the sampled estimate differs from
the theory by R/n + O(1/n²).  We check that behaviour across two widths: the remainder measured
at n₁ predicts the one at n₂ = 2n₁ (Δ₂ ≈ Δ₁/2) within 4 combined standard errors plus a 35 %
allowance for the next order (Δ₁/2 · (n₁/n₂)·O(1)); a wrong recursion leaves an O(1) offset
that does not halve and fails.
"""

from __future__ import annotations

import numpy as np
import pytest

import rgflow

X = np.array([[0.9, -0.4], [0.3, 1.1], [-0.6, 0.2]])


def _run(act: str, cb: float, cw: float, n: int, networks: int, depth: int = 3):
    net = rgflow.MLP(act, depth=depth, width=n, C_b=cb, C_W=cw, lambda_b=0.5, lambda_W=1.5)
    th = rgflow.theory(net, X)
    ens = rgflow.sample(net, X, networks=networks, seed=7, progress=False, theory=th)
    return th, ens


def _check(act: str, cb: float, cw: float, n1: int, networks: int, depth: int = 3) -> dict[str, float]:
    th1, e1 = _run(act, cb, cw, n1, networks, depth)
    th2, e2 = _run(act, cb, cw, 2 * n1, networks, depth)
    report = {}
    for layer in range(2, depth + 1):
        i = layer - 1
        for th, ens in ((th1, e1), (th2, e2)):
            for name, mean in (("K", th.metric(layer)), ("Theta", th.ntk_mean(layer))):
                z = np.abs(getattr(ens, name)[i] - mean) / getattr(ens.stderr, name)[i]
                assert z.max() < 4.5, f"{act} {name} layer {layer}: max z {z.max():.2f}"
        for name in ("V", "D", "F", "A", "B"):
            t = getattr(th1, name)[i]
            d1 = getattr(e1, name)[i] - t
            d2 = getattr(e2, name)[i] - t
            s = np.sqrt(getattr(e2.stderr, name)[i] ** 2 + (getattr(e1.stderr, name)[i] / 2) ** 2)
            excess = np.abs(d2 - d1 / 2) - (4 * s + 0.35 * np.abs(d1) / 2)
            assert excess.max() <= 0, f"{act} {name} layer {layer}: remainder does not scale like 1/n"
            report[f"{name}{layer}"] = float(np.abs(d2).max() / max(np.abs(t).max(), 1e-300))
    return report


def test_tanh_theory_matches_sampled_networks():
    rep = _check("tanh", 0.0, 1.0, 16, 16_000)
    # At n = 32 the four-point tensors agree to a few per cent (O(1/n) relative remainder).
    assert max(rep.values()) < 0.15, rep


@pytest.mark.slow
@pytest.mark.parametrize("act,cb,cw", [("gelu", 0.17292239, 1.98305826), ("relu", 0.0, 2.0), ("tanh", 0.0, 1.0)])
def test_theory_matches_sampled_networks_at_criticality(act, cb, cw):
    rep = _check(act, cb, cw, 24, 100_000, depth=4)
    print(act, {k: f"{v:.3f}" for k, v in rep.items()})
