"""Run every benchmark and write the results table into benches/README.md.

Each benchmark runs as a child process (``python benches/bench_*.py --json ...``); its table is
echoed, and the collected results, with the machine details (nproc, CPU model, load average,
numpy/scipy/jax versions) and each benchmark's wall time, replace the part of
``benches/README.md`` between the markers ``<!-- results:begin -->`` and ``<!-- results:end -->``.

Usage::

    python benches/run_all.py                  # all five, about 15 minutes on 2 busy cores
    python benches/run_all.py --only expect theory
    python benches/run_all.py --quick          # small sizes: a smoke test of the scripts (~2 min)
    python benches/run_all.py --no-readme      # print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, machine, markdown  # noqa: E402

BENCHES = {
    "expect": (
        "bench_expect.py",
        [],
        ["--blocks2", "1000", "--blocks4", "4", "--scipy-blocks", "2", "--ref-blocks4", "1"],
    ),
    "theory": ("bench_theory.py", [], ["--depth", "4", "--sizes", "3", "4"]),
    "ensemble": ("bench_ensemble.py", [], ["--networks", "32", "--groups", "4"]),
    "neural_tangents": ("bench_neural_tangents.py", [], ["--n", "20"]),
    "residual": (
        "bench_residual.py",
        [],
        ["--depth", "80", "--networks", "64", "--weights-networks", "32", "--res-depth", "3", "--groups", "4"],
    ),
}
TITLES = {
    "expect": "1. Batched Gaussian expectations (`bench_expect.py`)",
    "theory": "2. First-order theory: Rust core vs numpy reference (`bench_theory.py`)",
    "ensemble": "3. Ensemble sampling: numpy vs JAX on CPU (`bench_ensemble.py`)",
    "neural_tangents": "4. Infinite-width kernels vs neural-tangents (`bench_neural_tangents.py`)",
    "residual": "5. Residual networks (`bench_residual.py`)",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def run_one(name: str, quick: bool, outdir: Path) -> dict:
    script, full, small = BENCHES[name]
    out = outdir / f"{name}.json"
    cmd = [sys.executable, str(HERE / script), *(small if quick else full), "--json", str(out)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, text=True, stdout=subprocess.PIPE)
    wall = time.perf_counter() - t0
    print(r.stdout, end="", flush=True)
    res = {"name": name, "wall_s": wall, "returncode": r.returncode, "stdout": r.stdout,
           "command": "python benches/" + " ".join([script, *(small if quick else full)])}  # fmt: skip
    if r.returncode == 0 and out.exists():
        res["data"] = json.loads(out.read_text())
    return res


def _notes(name: str, data: dict) -> list[str]:
    if name == "neural_tangents":
        lines = [f"neural-tangents: {data.get('neural_tangents')}"]
        if data.get("nt_versions"):
            lines[0] += " (" + ", ".join(f"{k} {v}" for k, v in data["nt_versions"].items()) + ")"
        conv = data.get("gelu_reference_convergence")
        if conv is not None:
            lines.append(f"gelu reference: Gauss–Hermite 160 vs 128 nodes per dimension differ by {conv:.1e} (NTK)")
        return lines
    if name == "ensemble" and data.get("max_z_numpy_vs_jax") is not None:
        return [
            f"max |numpy − jax| / combined stderr over all ~10^5 tensor entries: {data['max_z_numpy_vs_jax']:.2f} "
            "(different random streams; batch-means errors from few groups have heavy tails)"
        ]
    if name == "residual":
        return [
            "theory rows: the paper setup of spec resnets.md (tanh, C_W = 2, N = 4, ε = 0.05, L = 800, T = 2), "
            "K0, V4 and K1 together; the 32-point Euler scheme is the published one (its V4 is 10 % low, spec a.3b)",
            "sampler rows: networks per second; JAX first run includes tracing and XLA compilation; "
            "max|np−jax|/σ compares the two backends' estimates entry by entry (different random streams)",
        ]
    if name == "theory":
        return [
            f"above N = 8, when the reference's estimated time exceeds {data.get('cap_s')} s, both implementations "
            "run at the largest depth that fits (column depth; compare s/layer), or the reference is skipped with "
            "its estimate; the last column is rgflow at the full depth",
            "rgflow uses the closed-form expectations (relu, gelu: method='auto'); the reference is the independent "
            "numpy implementation (inverse-kernel form, quadrature)",
            "s/layer = total / depth; max|Δ|/max|T|: largest difference over all tensors and layers, relative to the "
            "tensor's largest entry",
        ]
    return []


def render(results: list[dict], info: dict, quick: bool, started: str, load_end: float | None) -> str:
    lines = [
        BEGIN,
        "",
        f"Results of `python benches/run_all.py{' --quick' if quick else ''}`, {started}.",
        "",
        f"Machine: {info.get('nproc')} CPUs ({info.get('cpu')}), {info.get('platform')}; Python {info.get('python')}, "
        f"numpy {info.get('numpy')}, scipy {info.get('scipy')}, jax {info.get('jax')}, rgflow {info.get('rgflow')}.",
        f"Load average (1 min) at start {info.get('loadavg_1min')}, at end {load_end}: the CPUs were shared with other "
        "processes, so wall times are indicative (compare the columns of one table, measured back to back).",
        "",
    ]
    for r in results:
        lines.append(f"### {TITLES[r['name']]}")
        lines.append("")
        lines.append(f"`{r['command']}` — {r['wall_s']:.0f} s")
        lines.append("")
        if "data" not in r:
            lines.append(f"*failed (exit code {r['returncode']})*")
            lines.append("")
            continue
        d = r["data"]
        lines.append(markdown(d["headers"], d["rows"]))
        lines.append("")
        for n in _notes(r["name"], d):
            lines.append(f"- {n}")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def update_readme(block: str) -> Path:
    path = HERE / "README.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# rgflow benchmarks\n\n## Results\n\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test; the README says so)")
    ap.add_argument("--no-readme", action="store_true", help="do not touch benches/README.md")
    ap.add_argument("--keep", metavar="DIR", help="keep the JSON results in DIR")
    args = ap.parse_args(argv)

    names = args.only or list(BENCHES)
    info = machine()
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(args.keep) if args.keep else Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        results = [run_one(n, args.quick, outdir) for n in names]
    try:
        load_end = round(os.getloadavg()[0], 2)
    except OSError:
        load_end = None
    failed = [r["name"] for r in results if r["returncode"] != 0]
    if not args.no_readme:
        path = update_readme(render(results, info, args.quick, started, load_end))
        print(f"\nwrote the results table to {path}")
    print("total " + ", ".join(f"{r['name']} {r['wall_s']:.0f} s" for r in results))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
