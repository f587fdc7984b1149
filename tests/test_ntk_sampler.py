"""The NTK statistics of the MLP sampler (``rgflow.sample(mlp, x, ntk=True)``) at small sizes.

* regression: every estimate and standard error of a few small runs equals, to ~1e-12, what the
  dense per-network implementation of rgflow 0.2 (main before issue 17, commit 2d43bd1) gave;
  the reference numbers are in ``tests/data/ntk_sampler_main.npz``, written by running this file
  as a script (``PYTHONPATH=<that checkout>/python python tests/test_ntk_sampler.py``);
* the per-batch kernel against an independent dense reference: the per-network NTK from the
  Jacobians, Θ̂^(l)_{ac} = Σ_{l'} h^(l')_{ac} J^(l,l')_a J^(l,l')_cᵀ (a sum over parameters, not
  the forward equation 8.12), and F, B from their definitions;
* a custom activation that is non-finite far from the origin raises an error naming it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import rgflow
from rgflow import MLP
from rgflow.activations import Activation

DATA = Path(__file__).resolve().parent / "data" / "ntk_sampler_main.npz"
NAMES = ("K", "Theta", "V", "D", "F", "A", "B")

X4 = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7], [0.9, 0.1, 0.4], [-0.6, 0.8, 0.2]])


def _cases() -> dict[str, tuple[MLP, np.ndarray, dict]]:
    return {
        # unequal widths, per-layer hyperparameters, several batches per group
        "tanh_widths": (
            MLP(
                "tanh",
                depth=4,
                widths=[5, 6, 4],
                out_width=3,
                C_b=0.1,
                C_W=[1.3, 1.0, 1.1, 0.9],
                lambda_b=0.4,
                lambda_W=[1.7, 1.2, 0.8, 1.1],
            ),  # fmt: skip
            X4[:3],
            {"networks": 24, "groups": 3, "batch": 5, "seed": 3},
        ),
        "gelu_equal": (
            MLP("gelu", depth=5, width=7, C_b=0.17, C_W=1.98, lambda_b=0.3, lambda_W=1.1),
            X4,
            {"networks": 12, "groups": 2, "seed": 11},
        ),
        "relu_single_input": (
            MLP("relu", depth=3, width=6, C_W=2.0),
            X4[:1],
            {"networks": 10, "groups": 2, "batch": 3, "seed": 1},
        ),
        "tanh_direct": (
            MLP("tanh", depth=3, width=5, C_b=0.2, C_W=1.1),
            X4[:3],
            {"networks": 12, "groups": 2, "seed": 4, "estimator": "direct"},
        ),
    }


def _run(net: MLP, x: np.ndarray, kw: dict) -> dict[str, np.ndarray]:
    e = rgflow.sample(net, x, progress=False, theory=False, **kw)
    out = {}
    for name in NAMES:
        out[name] = np.asarray(getattr(e, name))
        out["se_" + name] = np.asarray(getattr(e.stderr, name))
    return out


@pytest.mark.parametrize("case", list(_cases()))
def test_estimates_equal_the_dense_implementation(case):
    net, x, kw = _cases()[case]
    ref = np.load(DATA)
    got = _run(net, x, kw)
    for key, v in got.items():
        r = ref[f"{case}/{key}"]
        scale = max(float(np.max(np.abs(r))), 1e-300)
        np.testing.assert_allclose(v, r, rtol=1e-11, atol=1e-12 * scale, err_msg=f"{case}: {key}")


# ---------------------------------------------------------------------------- the per-batch kernel


def _jacobian_reference(act, x, Ws, bs, hp, widths):
    """Per network and layer l >= 2: Ĝ, Ĥ and the unnormalised F, B sums, from explicit Jacobians."""
    sig = lambda z: act.numpy(z, 0)  # noqa: E731
    dsig = lambda z: act.numpy(z, 1)  # noqa: E731
    L = len(widths) - 1
    N = x.shape[0]
    out = {"X": [], "Y": [], "Fs": [], "Bs": []}
    zs, Ss = [], [x.T]  # Ss[k] = σ(z^(k)) (n_k, N), Ss[0] = x
    for k in range(L - 1):
        zs.append(Ws[k] @ Ss[-1] + bs[k][:, None])
        Ss.append(sig(zs[-1]))
    for l in range(2, L + 1):
        # NTK of layer m = l - 1 from Jacobians J^(m,k)_a = dz^(m)_a / dz^(k)_a, k = 1..m
        m = l - 1
        theta = np.zeros((N, N, widths[m], widths[m]))
        for a in range(N):
            for c in range(N):
                for k in range(1, m + 1):
                    Ja, Jc = np.eye(widths[k]), np.eye(widths[k])
                    for j in range(k + 1, m + 1):  # z^(j) = W^(j) σ(z^(j-1)) + b
                        Ja = Ws[j - 1] @ (dsig(zs[j - 2][:, a])[:, None] * Ja)
                        Jc = Ws[j - 1] @ (dsig(zs[j - 2][:, c])[:, None] * Jc)
                    nk = widths[k - 1]
                    h = hp["lambda_b"][k - 1] + hp["lambda_W"][k - 1] * (Ss[k - 1][:, a] @ Ss[k - 1][:, c]) / nk
                    theta[a, c] += h * Ja @ Jc.T
        n = widths[m]
        s, sp = Ss[m], dsig(zs[m - 1])
        U = theta * sp.T[:, None, :, None] * sp.T[None, :, None, :]
        Sig = s.T @ s / n
        out["X"].append(hp["C_b"][l - 1] + hp["C_W"][l - 1] * Sig)
        out["Y"].append(
            hp["lambda_b"][l - 1] + hp["lambda_W"][l - 1] * Sig + hp["C_W"][l - 1] / n * np.einsum("acii->ac", U)
        )
        fac = (hp["C_W"][l - 1] / n) ** 2
        out["Fs"].append(fac * np.einsum("ia,cdij,je->aecd", s, U, s))
        out["Bs"].append(fac * np.einsum("abij,cdij->abcd", U, U))
    return out


@pytest.mark.parametrize(
    "act, widths, N, B",
    [("tanh", (3, 5, 4, 6, 2), 3, 2), ("gelu", (2, 4, 4, 4, 4), 4, 1), ("tanh", (3, 3, 7, 2), 1, 3)],
)
def test_batch_kernel_against_jacobian_reference(act, widths, N, B):
    from rgflow.ensembles import _estimators

    a = Activation(act)
    L = len(widths) - 1
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, widths[0]))
    hp = {
        "C_b": rng.uniform(0.1, 0.3, L),
        "C_W": rng.uniform(0.8, 1.5, L),
        "lambda_b": rng.uniform(0.2, 1.0, L),
        "lambda_W": rng.uniform(0.5, 1.5, L),
    }
    Ws = [
        rng.normal(size=(B, widths[k], widths[k - 1])) * math.sqrt(hp["C_W"][k - 1] / widths[k - 1])
        for k in range(1, L)
    ]
    bs = [rng.normal(size=(B, widths[k])) * math.sqrt(hp["C_b"][k - 1]) for k in range(1, L)]
    gram0 = x @ x.T / widths[0]
    consts = {"g1": hp["C_b"][0] + hp["C_W"][0] * gram0, "h1": hp["lambda_b"][0] + hp["lambda_W"][0] * gram0}
    zero = (np.zeros((L, N, N)), np.zeros((L, N, N)))
    act_fns = (lambda z: a.numpy(z, 0), lambda z: a.numpy(z, 1))
    s = _estimators.batch_sums(np, act_fns, x, Ws, bs, hp, consts, zero, B=B, widths=widths, ntk=True, direct=False)
    refs = [_jacobian_reference(a, x, [W[b] for W in Ws], [v[b] for v in bs], hp, widths) for b in range(B)]
    for key, skey in (("X", "Sx"), ("Y", "Sy"), ("Fs", "Fs"), ("Bs", "Bs")):
        want = sum(np.stack(r[key]) for r in refs)
        got = s[skey][1:]
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13 * np.max(np.abs(want)), err_msg=key)
    want_pyy = sum(np.einsum("lab,lcd->labcd", np.stack(r["Y"]), np.stack(r["Y"])) for r in refs)
    np.testing.assert_allclose(s["Pyy"][1:], want_pyy, rtol=1e-11)


@pytest.mark.parametrize("widths, N, B", [((3, 5, 4, 6, 2), 3, 2), ((2, 4, 4), 4, 1), ((3, 3, 7, 2), 1, 3)])
def test_packed_sums_unpack_to_the_dense_sums(widths, N, B):
    """rgflow.sample's packed four-point sums (by sample-pair symmetry) hold exactly the dense ones."""
    from rgflow.ensembles import _estimators

    a = Activation("tanh")
    L = len(widths) - 1
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, widths[0]))
    hp = {k: rng.uniform(0.2, 1.5, L) for k in ("C_b", "C_W", "lambda_b", "lambda_W")}
    Ws = [rng.normal(size=(B, widths[k], widths[k - 1])) / math.sqrt(widths[k - 1]) for k in range(1, L)]
    bs = [rng.normal(size=(B, widths[k])) for k in range(1, L)]
    gram0 = x @ x.T / widths[0]
    consts = {"g1": hp["C_b"][0] + hp["C_W"][0] * gram0, "h1": hp["lambda_b"][0] + hp["lambda_W"][0] * gram0}
    shifts = (rng.normal(size=(L, N, N)) * 0.1, rng.normal(size=(L, N, N)) * 0.1)
    shifts = tuple((v + np.swapaxes(v, 1, 2)) / 2 for v in shifts)
    fns = (lambda z: a.numpy(z, 0), lambda z: a.numpy(z, 1))
    kw = dict(B=B, widths=widths, ntk=True, direct=False)
    dense = _estimators.batch_sums(np, fns, x, Ws, bs, hp, consts, shifts, **kw)
    packed = _estimators.batch_sums(np, fns, x, Ws, bs, hp, consts, shifts, packed=True, **kw)
    P = N * (N + 1) // 2
    assert packed["Pxx"].shape == (L, P * (P + 1) // 2) and packed["Fs"].shape == (L, N, P, N)
    for key, kind in (("Pxx", "tri"), ("Pxy", "sym"), ("Pyy", "tri"), ("Fs", "F"), ("Bs", "B")):
        want = dense[key] if kind in ("tri", "sym") else np.transpose(dense[key], (0, 1, 3, 2, 4))
        got = _estimators.unpack(kind, packed[key], N)
        scale = max(float(np.max(np.abs(want))), 1e-300)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * scale, err_msg=key)
    for key in ("Sx", "Sy"):
        np.testing.assert_array_equal(packed[key], dense[key])
    with pytest.raises(ValueError, match="packed"):
        _estimators.batch_sums(np, fns, x, Ws, bs, hp, consts, shifts, packed=True, **{**kw, "direct": True})


# ---------------------------------------------------------------------------- the result holds them packed


def test_result_keeps_four_point_tensors_packed_until_read():
    """rgflow.sample returns V, D, F, A, B (and their standard errors) packed by their sample
    symmetries; reading an attribute unpacks that one tensor (equal to the packed numbers, kept)."""
    import pickle

    from rgflow.ensembles import _estimators
    from rgflow.ensembles._api import check_finite_ensemble

    net, x, kw = _cases()["gelu_equal"]
    e = rgflow.sample(net, x, progress=False, theory=False, **kw)
    L, N = net.depth, x.shape[0]
    P = N * (N + 1) // 2
    T = P * (P + 1) // 2
    held = e.stored()
    assert held["V"].shape == (L, T) and held["D"].shape == (L, P, P) and held["A"].shape == (L, T)
    assert held["F"].shape == (L, N, P, N) and held["B"].shape == (L, 2, T)
    assert e.stderr.stored()["B"].shape == (L, 2, T)
    # 480 numbers per layer instead of 5 N^4 = 1280 at N = 4 (1/5.1 at N = 32)
    assert sum(held[k].nbytes for k in "VDFAB") == L * (4 * T + P * P + N * P * N) * 8 == L * 480 * 8
    assert "V, D, F, A, B" in repr(e) and e.stored()["V"].ndim == 2  # repr reads no tensor
    copy = pickle.loads(pickle.dumps(e))  # still packed: pickles the packed form
    assert copy.stored()["F"].ndim == 4
    check_finite_ensemble(e)  # checks the packed numbers, unpacks nothing
    assert e.stored()["A"].ndim == 2
    kinds = {"V": "tri", "D": "sym", "A": "tri", "F": "F", "B": "B"}
    for k, kind in kinds.items():
        for obj in (e, e.stderr, copy, copy.stderr):
            packed = obj.stored()[k]
            full = getattr(obj, k)
            assert full.shape == (L, N, N, N, N) and getattr(obj, k) is full  # unpacked once, then kept
            np.testing.assert_array_equal(full, _estimators.unpack(kind, packed, N))
            assert obj.stored()[k] is full
        np.testing.assert_array_equal(getattr(copy, k), getattr(e, k))
    # symmetric in each sample pair and under pair exchange (V, A); F, B in their own index order
    np.testing.assert_array_equal(e.V, np.transpose(e.V, (0, 2, 1, 3, 4)))
    np.testing.assert_array_equal(e.A, np.transpose(e.A, (0, 3, 4, 1, 2)))
    again = dataclasses.replace(e)
    np.testing.assert_array_equal(again.B, e.B)
    # a non-finite packed number is found without unpacking, with its layer
    bad = rgflow.sample(net, x, progress=False, theory=False, **kw)
    bad.stderr.__dict__["B"].data[3, 1, 5] = np.nan
    with pytest.raises(ValueError, match=r"stderr\.B is not finite \(layer axis entry 3\)"):
        check_finite_ensemble(bad)


def test_assigning_a_four_point_tensor_replaces_the_packed_one():
    net, x, kw = _cases()["relu_single_input"]
    e = rgflow.sample(net, x, progress=False, theory=False, **kw)
    new = np.ones((net.depth, 1, 1, 1, 1))
    e.V = new
    assert e.V is new and e.stored()["V"] is new
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.stderr.V = new  # type: ignore[misc]


# ---------------------------------------------------------------------------- progress


def test_progress_is_reported_after_every_batch(monkeypatch):
    """The progress line is updated after each batch (from the first network on), not once per group."""
    from rgflow.ensembles import _engine

    calls = []

    class Recorder:
        def __init__(self, total, enabled, label, delay=2.0):
            assert total == 9 and enabled

        def update(self, done):
            calls.append(done)

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(_engine, "Progress", Recorder)
    net = MLP("tanh", depth=3, width=4)
    rgflow.sample(net, X4[:2], networks=9, groups=2, batch=2, progress=True, theory=False)
    assert calls[:5] == [2, 4, 5, 5, 7] and calls[-3:] == [9, 9, "closed"]


# ---------------------------------------------------------------------------- non-finite activations


def _far_nan(z):
    z = np.asarray(z, dtype=float)
    return np.where(np.abs(z) > 2.5, np.nan, np.tanh(z))


def _far_nan_d1(z):
    z = np.asarray(z, dtype=float)
    return 1.0 - np.tanh(z) ** 2


@pytest.mark.parametrize("ntk", [False, True])
def test_non_finite_activation_is_named(ntk):
    act = Activation.from_callable(_far_nan, derivatives=[_far_nan_d1])
    net = MLP(act, depth=3, width=8, C_W=4.0)
    x = 3.0 * X4
    # refused up front (the layer-1 expectation check names the activation) or by the sampler itself
    with pytest.raises(ValueError, match=r"non-finite.*(_far_nan|'custom')|(_far_nan|'custom').*non-finite"):
        rgflow.sample(net, x, networks=8, groups=2, progress=False, theory=False, ntk=ntk)


def test_non_finite_derivative_is_named():
    act = Activation.from_callable(np.tanh, derivatives=[_far_nan])
    net = MLP(act, depth=3, width=8, C_W=4.0)
    with pytest.raises(ValueError, match=r"derivative 1"):
        rgflow.sample(net, 3.0 * X4, networks=8, groups=2, progress=False, theory=False)


if __name__ == "__main__":  # write the reference numbers with the rgflow on sys.path
    arrays = {}
    for case, (net, x, kw) in _cases().items():
        for key, v in _run(net, x, kw).items():
            arrays[f"{case}/{key}"] = v
    DATA.parent.mkdir(exist_ok=True)
    np.savez_compressed(DATA, **arrays)
    print(f"wrote {DATA} from {rgflow.__file__}", file=sys.stderr)
