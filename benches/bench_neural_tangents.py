"""Benchmark 4: infinite-width NNGP/NTK kernels, rgflow (order=0) vs neural-tangents.

rgflow runs twice: with its closed forms (relu, erf, gelu: ``method="auto"``, the default) and
with its general quadrature engine (``method="quadrature"``, what any other activation uses;
the like-for-like peer of neural-tangents' ``ElementwiseNumerical``).

Depth-3 MLPs (three dense layers, two activations) with C_b = 0.1, C_W = 1.5 and NTK learning
rates lambda_b = C_b, lambda_W = C_W (neural-tangents' NTK parameterisation), on 100 random
inputs of dimension 8, for erf, relu and gelu.  Errors are the largest |K - K_ref| / max|K_ref|
over the output-layer NNGP kernel K and NTK Θ, against

* relu: the arc-cosine recursion (Cho & Saul), erf: the arcsine recursion (Williams), both in
  closed form in numpy;
* gelu: numpy tensor-product Gauss–Hermite in whitened coordinates, 160 nodes per dimension
  (gelu is entire; the script prints how far 128 and 160 nodes differ, an upper bound on the
  error of the 128-node rule: ~1e-12).

neural-tangents (stax.Erf, stax.Relu, stax.Gelu and stax.ElementwiseNumerical for gelu at several
``deg``) only imports with jax <= 0.5.3, so it runs in its own virtual environment
``benches/.nt-venv`` (created on first use with ``pip install neural-tangents "jax[cpu]<=0.5.3"``,
bounded by ``--install-timeout``).  A child script there loads the inputs, computes the kernels
(jit-compiled; the first call with compilation and the second are timed) and writes them to JSON.
If the environment cannot be built, that part is skipped with a message.

Usage: ``python benches/bench_neural_tangents.py [--n 100] [--install-timeout 600] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import HERE, fmt, log, machine, table, timed, write_json  # noqa: E402

VENV = HERE / ".nt-venv"
C_B, C_W, DEPTH = 0.1, 1.5, 3
ACTS = ("erf", "relu", "gelu")
NUMERICAL_DEGS = (10, 25, 50, 100)

CHILD = r"""
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from neural_tangents import stax
import neural_tangents

cfg = json.load(open(sys.argv[1]))
x = jnp.asarray(np.load(cfg["x"]))
C_b, C_W, depth = cfg["C_b"], cfg["C_W"], cfg["depth"]

def mlp(act):
    layers = []
    for _ in range(depth - 1):
        layers += [stax.Dense(512, W_std=C_W ** 0.5, b_std=C_b ** 0.5), act]
    layers += [stax.Dense(1, W_std=C_W ** 0.5, b_std=C_b ** 0.5)]
    return stax.serial(*layers)[2]

cases = [("erf", "stax.Erf", lambda: stax.Erf()), ("relu", "stax.Relu", lambda: stax.Relu())]
if hasattr(stax, "Gelu"):
    cases.append(("gelu", "stax.Gelu", lambda: stax.Gelu(approximate=False)))
for deg in cfg["degs"]:
    cases.append(("gelu", f"ElementwiseNumerical deg={deg}",
                  lambda deg=deg: stax.ElementwiseNumerical(lambda z: jax.nn.gelu(z, approximate=False), deg=deg)))
out = {"versions": {"jax": jax.__version__, "neural_tangents": neural_tangents.__version__}, "cases": []}
for act, label, make in cases:
    try:
        kfn = jax.jit(mlp(make()), static_argnames="get")
        t0 = time.perf_counter()
        k = kfn(x, None, ("nngp", "ntk"))
        k = jax.block_until_ready(k)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = jax.block_until_ready(kfn(x, None, ("nngp", "ntk")))
        t = time.perf_counter() - t0
        out["cases"].append({"act": act, "label": label, "first_s": t_first, "s": t,
                             "nngp": np.asarray(k.nngp).tolist(), "ntk": np.asarray(k.ntk).tolist()})
    except Exception as exc:
        out["cases"].append({"act": act, "label": label, "error": f"{type(exc).__name__}: {exc}"})
json.dump(out, open(cfg["out"], "w"))
"""


# ============================================================================ references


def _arccos_step(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.diag(K)
    r = np.sqrt(np.outer(d, d))
    # θ = angle between the inputs; atan2 keeps full precision near θ = 0 (arccos would not)
    th = np.arctan2(np.sqrt(np.maximum(np.outer(d, d) - K**2, 0.0)), K)
    cos = np.cos(th)
    g = r / (2 * math.pi) * (np.sin(th) + (math.pi - th) * cos)
    gd = (math.pi - th) / (2 * math.pi)
    return g, gd


def _arcsine_step(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = 1.0 + 2.0 * np.diag(K)
    den = np.outer(d, d)
    g = 2.0 / math.pi * np.arcsin(np.clip(2.0 * K / np.sqrt(den), -1.0, 1.0))
    gd = 4.0 / math.pi / np.sqrt(den - 4.0 * K**2)
    return g, gd


def _gh_step(K: np.ndarray, nodes: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """<σσ>, <σ'σ'> for gelu by tensor Gauss–Hermite in whitened coordinates (all pairs)."""
    from rgflow.activations import Activation

    act = Activation("gelu")
    u, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    N = K.shape[0]
    ia, ib = np.triu_indices(N)
    k11, k22, k12 = K[ia, ia], K[ib, ib], K[ia, ib]
    l11 = np.sqrt(k11)
    l21 = k12 / l11
    l22 = np.sqrt(np.maximum(k22 - l21**2, 0.0))
    g = np.zeros((N, N))
    gd = np.zeros((N, N))
    W2 = np.outer(w, w)
    for s in range(0, ia.size, 256):
        sl = slice(s, s + 256)
        z1 = l11[sl, None, None] * u[None, :, None]
        z2 = l21[sl, None, None] * u[None, :, None] + l22[sl, None, None] * u[None, None, :]
        v = np.einsum("pij,ij->p", act.numpy(z1, 0) * act.numpy(z2, 0), W2)
        vd = np.einsum("pij,ij->p", act.numpy(z1, 1) * act.numpy(z2, 1), W2)
        g[ia[sl], ib[sl]] = v
        gd[ia[sl], ib[sl]] = vd
    g = g + np.triu(g, 1).T
    gd = gd + np.triu(gd, 1).T
    return g, gd


def reference_kernels(act: str, x: np.ndarray, nodes: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Output-layer (K, Θ) of the depth-3 MLP: K' = C_b + C_W g(K), Θ' = λ_b + λ_W g(K) + C_W ġ(K) Θ."""
    n0 = x.shape[1]
    K = C_B + C_W * (x @ x.T) / n0
    T = C_B + C_W * (x @ x.T) / n0
    step = {"relu": _arccos_step, "erf": _arcsine_step, "gelu": lambda k: _gh_step(k, nodes)}[act]
    for _ in range(DEPTH - 1):
        g, gd = step(K)
        K, T = C_B + C_W * g, C_B + C_W * g + C_W * gd * T
    return K, T


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


# ============================================================================ neural-tangents child


def ensure_venv(timeout: float) -> tuple[Path | None, str]:
    """The venv's python if neural-tangents imports there (building it if needed), else (None, why)."""
    py = VENV / "bin" / "python"
    check = [str(py), "-c", "import neural_tangents, jax; print(jax.__version__)"]
    if py.exists():
        r = subprocess.run(check, capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            return py, "existing venv"
    t0 = time.perf_counter()
    try:
        if not py.exists():
            log(f"creating {VENV} ...")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        log('pip install neural-tangents "jax[cpu]<=0.5.3" (bounded by --install-timeout) ...')
        left = max(10.0, timeout - (time.perf_counter() - t0))
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "neural-tangents", "jax[cpu]<=0.5.3"],
            capture_output=True,
            text=True,
            timeout=left,
        )
        if r.returncode != 0:
            tail = " ".join(r.stderr.strip().splitlines()[-2:])
            return None, f"pip install failed: {tail}"
        r = subprocess.run(check, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            tail = " ".join(r.stderr.strip().splitlines()[-1:])
            return None, f"neural-tangents does not import: {tail}"
        return py, f"built in {time.perf_counter() - t0:.0f} s"
    except subprocess.TimeoutExpired:
        return None, f"building the venv took longer than {timeout:.0f} s"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv: {exc}"


def run_child(py: Path, x: np.ndarray, timeout: float) -> tuple[dict | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x)
        (tmp / "child.py").write_text(CHILD, encoding="utf-8")
        cfg = {"x": str(tmp / "x.npy"), "out": str(tmp / "out.json"), "C_b": C_B, "C_W": C_W, "depth": DEPTH,
               "degs": list(NUMERICAL_DEGS)}  # fmt: skip
        (tmp / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        try:
            r = subprocess.run([str(py), str(tmp / "child.py"), str(tmp / "cfg.json")], capture_output=True,
                               text=True, timeout=timeout, env=env)  # fmt: skip
        except subprocess.TimeoutExpired:
            return None, f"the neural-tangents run took longer than {timeout:.0f} s"
        if r.returncode != 0:
            return None, "the neural-tangents run failed: " + " ".join(r.stderr.strip().splitlines()[-2:])
        return json.loads((tmp / "out.json").read_text()), ""


# ============================================================================ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="number of inputs (default 100)")
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--install-timeout", type=float, default=600.0)
    ap.add_argument("--run-timeout", type=float, default=600.0)
    ap.add_argument("--skip-nt", action="store_true", help="do not run neural-tangents")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    x = np.random.default_rng(0).standard_normal((args.n, args.dim))
    refs = {}
    for act in ACTS:
        log(f"reference kernels: {act}")
        refs[act] = reference_kernels(act, x)
    gelu_conv = rel(reference_kernels("gelu", x, 128)[1], refs["gelu"][1])

    results = []
    for act in ACTS:
        net = rgflow.MLP(act, depth=DEPTH, width=512, C_b=C_B, C_W=C_W, lambda_b=C_B, lambda_W=C_W)
        K, T = refs[act]
        for method, label in (("auto", "rgflow.theory(order=0) closed form"),
                              ("quadrature", "rgflow.theory(order=0, method='quadrature')")):  # fmt: skip
            log(f"{label}: {act}")
            rgflow.theory(net, x[:4], order=0, expectations=method)  # warm the quadrature caches
            th, t = timed(rgflow.theory, net, x, order=0, ntk=True, expectations=method)
            results.append({"act": act, "impl": label, "first_s": None, "s": t,
                            "err_nngp": rel(th.K[-1], K), "err_ntk": rel(th.Theta[-1], T)})  # fmt: skip

    nt_status = "skipped (--skip-nt)"
    versions = {}
    if not args.skip_nt:
        py, why = ensure_venv(args.install_timeout)
        if py is None:
            nt_status = f"skipped: {why}"
            log(nt_status)
        else:
            log(f"neural-tangents venv: {why}; running the child script")
            out, err = run_child(py, x, args.run_timeout)
            if out is None:
                nt_status = f"skipped: {err}"
                log(nt_status)
            else:
                nt_status = "ran"
                versions = out["versions"]
                for c in out["cases"]:
                    if "error" in c:
                        results.append({"act": c["act"], "impl": "neural-tangents " + c["label"], "error": c["error"]})
                        continue
                    K, T = refs[c["act"]]
                    results.append({"act": c["act"], "impl": "neural-tangents " + c["label"], "first_s": c["first_s"],
                                    "s": c["s"], "err_nngp": rel(np.asarray(c["nngp"]), K),
                                    "err_ntk": rel(np.asarray(c["ntk"]), T)})  # fmt: skip

    results.sort(key=lambda r: ACTS.index(r["act"]))
    headers = ["act", "implementation", "first call s", "time s", "err NNGP", "err NTK"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["act"], r["impl"], "error", r["error"][:60], "", ""])
        else:
            rows.append([r["act"], r["impl"], fmt(r["first_s"]), fmt(r["s"]), fmt(r["err_nngp"], ".1e"),
                         fmt(r["err_ntk"], ".1e")])  # fmt: skip
    print(f"Infinite-width kernels, depth {DEPTH}, {args.n} inputs of dimension {args.dim}, C_b={C_B}, C_W={C_W}")
    print(table(headers, rows))
    print(
        f"neural-tangents: {nt_status}"
        + (f" ({', '.join(f'{k} {v}' for k, v in versions.items())})" if versions else "")
    )
    print(f"gelu reference: Gauss–Hermite 160 vs 128 nodes per dimension differ by {gelu_conv:.1e} (NTK, relative)")
    payload = {"benchmark": "neural_tangents", "machine": machine(), "results": results, "headers": headers,
               "rows": rows, "neural_tangents": nt_status, "nt_versions": versions}  # fmt: skip
    payload["gelu_reference_convergence"] = gelu_conv
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
