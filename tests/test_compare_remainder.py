"""compare() marks leading-order rows and estimates their O(ℓ/n) remainder (issue 17 item 4).

At width 8 and depth >= 3 the sampled four-point tensors differ from their leading-order theory
by O(ℓ/n) relative corrections that rgflow does not compute, so |z| > 3 for a correct theory;
the row must say so (leading order, remainder, z_eff <= 3: "ok*"), while a wrong theory must
still be flagged.
"""

from __future__ import annotations

import numpy as np
import pytest

import rgflow
from rgflow.ensembles import compare

X2 = np.array([[1.0, 0.3, -0.5], [0.2, -1.0, 0.7]])


@pytest.fixture(scope="module")
def tanh_small():
    c = rgflow.critical("tanh")
    net = rgflow.MLP("tanh", 4, width=8, C_b=c.C_b, C_W=c.C_W)
    th = rgflow.theory(net, X2)
    ens = rgflow.sample(net, X2, networks=6000, seed=1, progress=False, theory=th)
    return net, th, ens


def test_leading_order_rows_are_flagged_and_within_the_remainder(tanh_small):
    net, th, ens = tanh_small
    rows = compare(th, ens)
    by = {(r.tensor, r.layer): r for r in rows}
    for name in ("V", "D", "F", "A", "B", "K1", "Theta1"):
        assert all(by[(name, layer)].leading_order for layer in range(1, 5)), name
    for name in ("K", "Theta"):  # compared with K + K1/n, Θ + Θ1/n
        assert not any(by[(name, layer)].leading_order for layer in range(1, 5)), name
    # the expected remainder, by hand: r = V_(aa)(aa)/(n K_aa²) of the layer below, times max|T|
    idx = np.arange(2)
    r = np.max(th.V[:, idx, idx, idx, idx] / (8.0 * th.K[:, idx, idx] ** 2), axis=1)
    for layer in (1, 2):  # layers 1 and 2 are exact at any width
        assert by[("V", layer)].remainder == 0.0 and by[("K", layer)].remainder == 0.0
    for layer in (3, 4):
        assert by[("V", layer)].remainder == pytest.approx(r[layer - 2] * np.max(np.abs(th.V[layer - 1])), rel=1e-12)
        k1 = np.max(np.abs(th.K1[layer - 1])) / 8.0
        assert by[("K", layer)].remainder == pytest.approx(r[layer - 2] * k1, rel=1e-12)
        assert 0.0 < r[layer - 2] < 0.5  # ~ (2/3)(ℓ-1)/n for the K* = 0 class
    # the case: |z| > 3 for V at depth >= 3, a correct theory within the remainder
    v4 = by[("V", 4)]
    assert v4.z > 3.0 and v4.z_eff <= 3.0 and v4.verdict == "ok*"
    deep = [r for r in rows if r.layer >= 3 and r.leading_order and r.tensor in ("V", "D", "F", "A", "B")]
    assert max(r.z for r in deep) > 5.0
    assert max(r.z_eff for r in deep) <= 3.0
    assert all(r.z_eff <= r.z + 1e-12 for r in rows)
    text = str(rows)
    for word in ("LO", "1st", "~remainder", "z_eff", "ok*", "consistent within the O(ℓ/n)"):
        assert word in text


def test_a_wrong_theory_is_still_flagged(tanh_small):
    net, _, ens = tanh_small
    wrong = rgflow.theory(rgflow.MLP("tanh", 4, width=8, C_b=net.C_b[0], C_W=1.3 * net.C_W[0]), X2)
    with pytest.raises(ValueError, match="different networks"):  # compare refuses a theory of another network
        compare(wrong, ens)
    wrong.net = net  # wrong numbers under the right label: the table must still flag them
    rows = compare(wrong, ens)
    assert any(r.verdict == "CHECK" for r in rows if r.tensor == "V" and r.layer >= 3)
    assert any(r.verdict == "CHECK" for r in rows if r.tensor == "K")


def test_order0_theory_falls_back_to_depth_over_width(tanh_small):
    net, _, ens = tanh_small
    rows = compare(rgflow.theory(net, X2, order=0), ens, ["K"])
    by = {r.layer: r for r in rows}
    assert all(r.leading_order for r in rows)
    assert by[2].remainder == 0.0
    assert by[4].remainder == pytest.approx(2 / 8 * by[4].max_abs_theory)
