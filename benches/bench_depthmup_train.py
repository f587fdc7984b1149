"""Benchmark: trained depth-μP ResNets (nfd.md §3) — networks per second against depth and width,
and the decoupled DMFT solve against the ensemble it replaces.

Part 1 — ``rgflow.train_depth_sweep`` at one depth per call (coupled + decoupled, 3 GD steps, P = 2
inputs): wall time of the first call (compile + run) and of a second call (run only), and trained
networks per second (both modes counted as one network) for each (width, depth).  The hidden matrices
are drawn in numpy (O(L n²) normals per network and mode), the training is O(T L n² P) per network.

Part 2 — the decoupled DMFT (``rgflow.dmft``, M single-site samples × replicas) at depth L against
the decoupled ensemble at width n that resolves f(x_1, T) to the same standard error.

Usage: ``python benches/bench_depthmup_train.py [--widths 64 128 256] [--depths 4 16 64]
[--networks 8] [--json out.json]``.  On a GPU (jax[cuda]) the same script times the accelerator.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rgflow  # noqa: E402
from _common import log, machine, markdown, timed, write_json  # noqa: E402

X = math.sqrt(2) * np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
Y = np.array([1.0, -1.0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--networks", type=int, default=8)
    ap.add_argument("--dmft-depth", type=int, default=16)
    ap.add_argument("--dmft-samples", type=int, default=20000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import jax

    info = machine()
    info["jax_backend"] = jax.default_backend()
    log(f"machine: {info}")
    rows, payload = [], {"machine": info, "train": [], "dmft": {}}
    for n in a.widths:
        for L in a.depths:
            net = rgflow.DepthMuPResNet("tanh", width=n, gamma0=2.0)
            kw = dict(depths=(L,), steps=3, eta=0.1, networks=a.networks, seed=1)
            _, first = timed(rgflow.train_depth_sweep, net, X, Y, **kw)
            _, run = timed(rgflow.train_depth_sweep, net, X, Y, **kw)
            rows.append([n, L, f"{first:.2f}", f"{run:.2f}", f"{a.networks / run:.3g}"])
            payload["train"].append({"width": n, "depth": L, "first_s": first, "run_s": run})
            log(f"n={n} L={L}: first {first:.2f}s, run {run:.2f}s")
    print(markdown(["width n", "depth L", "first call s", "run s", "networks/s"], rows))
    # Part 2: DMFT vs the ensemble it replaces (same SE on f(x1, T) of the decoupled network)
    L = a.dmft_depth
    net = rgflow.DepthMuPResNet("tanh", depth=L, width=256, gamma0=2.0)
    sol, t_dmft = timed(rgflow.dmft, net, X, Y, steps=3, eta=0.1, samples=a.dmft_samples, replicas=4)
    se_dmft = float(sol.stderr["f"][-1, 0])
    sw, t_ens = timed(
        rgflow.train_depth_sweep, net, X, Y, depths=(L,), modes=("decoupled",), networks=a.networks, seed=2
    )
    per_net = t_ens / a.networks
    sd = float(sw.stderr["f"][0, 0, -1, 0]) * math.sqrt(a.networks)
    need = (sd / se_dmft) ** 2
    print(
        markdown(
            [
                "L",
                "DMFT samples×replicas",
                "DMFT s",
                "SE f(x1,T) DMFT",
                "ensemble n=256: s/network",
                "networks for same SE",
                "ensemble s",
            ],
            [
                [
                    L,
                    f"{a.dmft_samples}×4",
                    f"{t_dmft:.2f}",
                    f"{se_dmft:.4f}",
                    f"{per_net:.3f}",
                    f"{need:.0f}",
                    f"{need * per_net:.1f}",
                ]
            ],
        )
    )
    payload["dmft"] = {
        "depth": L,
        "seconds": t_dmft,
        "se": se_dmft,
        "ensemble_s_per_network": per_net,
        "networks_same_se": need,
    }
    write_json(a.json, payload)


if __name__ == "__main__":
    main()
