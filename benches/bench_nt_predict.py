"""Infinite-width predictions, rgflow.predict against neural-tangents' ``nt.predict`` (issue 13 part 4a).

Both libraries get the *same* kernels (rgflow's order-0 K and Θ of a depth-3 MLP on N_A training
and N_B test inputs), so the comparison isolates the prediction formulas:

* GP posterior with observation noise σ² (6.57), (6.64) against ``nt.predict.gp_inference(get='nngp',
  diag_reg=σ², diag_reg_absolute_scale=True)``;
* the fully trained gradient-descent ensemble (10.40), (10.41) against ``gp_inference(get='ntk')``
  (NT's "infinite ensemble of infinitely wide networks trained with gradient flow for infinite time");
* the gradient-flow trajectory at finite time against ``nt.predict.gradient_descent_mse_ensemble``,
  whose kernel function here looks the precomputed kernels up by input index.  Conventions: NT's MSE
  loss is averaged over the N_A·n_L training outputs, rgflow's is the book's ½Σ (10.5), so NT's time t
  is rgflow's flow time τ = t/(N_A·n_L) (``rgflow.predict(..., time=τ)``).

The mapping of the parameterisations (for users who compare kernels too): NT's NTK parameterisation
with ``W_std² = C_W``, ``b_std² = C_b`` is rgflow's with λ_b = C_b, λ_W = C_W; NT's depth counts the
Dense layers including the readout, so ``stax.serial(Dense, act, Dense, act, Dense)`` is rgflow's
depth 3.  neural-tangents needs jax <= 0.5.3 and runs in ``benches/.nt-venv`` (see
``bench_neural_tangents.py``, which builds it).

Usage: ``python benches/bench_nt_predict.py [--n-train 64] [--n-test 16] [--outputs 2]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import rgflow

HERE = Path(__file__).resolve().parent
VENV_PY = HERE / ".nt-venv" / "bin" / "python"

CHILD = r"""
import json, sys, time
from collections import namedtuple
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt

d = np.load(sys.argv[1])
K, Th, y, tr, te = d["K"], d["Theta"], d["y"], d["train"], d["test"]
noise, times = float(d["noise"]), [float(t) for t in d["times"]]
Kern = namedtuple("Kern", ["nngp", "ntk"])
kk = lambda a, b: Kern(jnp.asarray(K[np.ix_(a, b)]), jnp.asarray(Th[np.ix_(a, b)]))
out = {}
t0 = time.perf_counter()
fn = nt.predict.gp_inference(kk(tr, tr), jnp.asarray(y), diag_reg=noise, diag_reg_absolute_scale=True)
g = fn(get="nngp", k_test_train=kk(te, tr), k_test_test=kk(te, te))
out["nngp_mean"], out["nngp_cov"] = np.asarray(g.mean).tolist(), np.asarray(g.covariance).tolist()
out["t_nngp"] = time.perf_counter() - t0
t0 = time.perf_counter()
fn = nt.predict.gp_inference(kk(tr, tr), jnp.asarray(y), diag_reg=0.0)
g = fn(get="ntk", k_test_train=kk(te, tr), k_test_test=kk(te, te))
out["ntk_mean"], out["ntk_cov"] = np.asarray(g.mean).tolist(), np.asarray(g.covariance).tolist()
out["t_ntk"] = time.perf_counter() - t0

def kernel_fn(x1, x2=None, get=None, **kw):
    a = np.asarray(x1[:, 0]).astype(int)
    b = a if x2 is None else np.asarray(x2[:, 0]).astype(int)
    k = kk(a, b)
    if get is None:
        return k
    if isinstance(get, str):
        return getattr(k, get)
    return Kern(*(getattr(k, g) for g in get)) if set(get) == {"nngp", "ntk"} else tuple(getattr(k, g) for g in get)

x_tr = jnp.asarray(tr, dtype=jnp.float64)[:, None]
x_te = jnp.asarray(te, dtype=jnp.float64)[:, None]
fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_tr, jnp.asarray(y), learning_rate=1.0)
traj = []
for t in times:
    g = fn(t=t, x_test=x_te, get="ntk", compute_cov=True)
    traj.append({"t": t, "mean": np.asarray(g.mean).tolist(), "cov": np.asarray(g.covariance).tolist()})
out["trajectory"] = traj
out["nt_version"] = nt.__version__
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--outputs", type=int, default=2)
    ap.add_argument("--activation", default="erf")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not VENV_PY.exists():
        sys.exit(f"no neural-tangents venv at {VENV_PY}: run benches/bench_neural_tangents.py once to build it")
    rng = np.random.default_rng(0)
    NA, NB, nL = args.n_train, args.n_test, args.outputs
    x = rng.standard_normal((NA + NB, 8))
    y = np.sin(x[:NA, :nL])
    tr, te = np.arange(NA), np.arange(NA, NA + NB)
    net = rgflow.MLP(args.activation, depth=3, width=64, C_b=0.1, C_W=1.5, lambda_b=0.1, lambda_W=1.5)
    th = rgflow.theory(net, x, order=0)
    K, Th = th.K[-1], th.Theta[-1]
    noise = 0.05
    taus = [0.1, 1.0, 10.0]
    times = [tau * NA * nL for tau in taus]
    results: dict[str, object] = {"n_train": NA, "n_test": NB, "outputs": nL, "activation": args.activation}
    t0 = time.perf_counter()
    pb = rgflow.predict(th, y, tr, te, kind="bayes", noise=noise)
    t_bayes = time.perf_counter() - t0
    t0 = time.perf_counter()
    pg = rgflow.predict(th, y, tr, te, kind="gd")
    t_gd = time.perf_counter() - t0
    trajs = [rgflow.predict(th, y, tr, te, kind="gd", time=tau) for tau in taus]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "k.npz"
        np.savez(f, K=K, Theta=Th, y=y, train=tr, test=te, noise=noise, times=np.array(times))
        (Path(tmp) / "child.py").write_text(CHILD)
        r = subprocess.run([str(VENV_PY), str(Path(tmp) / "child.py"), str(f)], capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    if r.returncode != 0:
        sys.exit("neural-tangents child failed:\n" + r.stderr[-3000:])
    nt = json.loads(r.stdout.strip().splitlines()[-1])

    def rel(a: np.ndarray, b: object) -> float:
        bb = np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - bb)) / max(np.max(np.abs(bb)), 1e-300))

    rows = [
        ("GP posterior mean (6.64), σ² = 0.05", rel(pb.mean, nt["nngp_mean"])),
        ("GP posterior covariance (6.57)", rel(pb.cov, nt["nngp_cov"])),
        ("GD fully trained mean (10.40)", rel(pg.mean, nt["ntk_mean"])),
        ("GD fully trained covariance (10.41)", rel(pg.cov, nt["ntk_cov"])),
    ]
    for tau, p, tr_nt in zip(taus, trajs, nt["trajectory"], strict=True):
        rows.append((f"gradient flow τ = {tau:g}: mean", rel(p.mean, tr_nt["mean"])))
        rows.append((f"gradient flow τ = {tau:g}: covariance", rel(p.cov, tr_nt["cov"])))
    print(f"neural-tangents {nt['nt_version']}; {args.activation} MLP depth 3, N_A = {NA}, N_B = {NB}, n_L = {nL}")
    print(f"{'quantity':<42} {'max |rgflow - nt| / max |nt|':>30}")
    for name, v in rows:
        print(f"{name:<42} {v:>30.2e}")
    print(
        f"time: rgflow.predict bayes {t_bayes * 1e3:.2f} ms, gd {t_gd * 1e3:.2f} ms; "
        f"nt gp_inference nngp {nt['t_nngp'] * 1e3:.1f} ms, ntk {nt['t_ntk'] * 1e3:.1f} ms (first call, jit)"
    )
    results["rows"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    worst = max(v for _, v in rows)
    if worst > 1e-10:
        sys.exit(f"disagreement {worst:.2e} > 1e-10")


if __name__ == "__main__":
    main()
