"""The widest trained depth-μP ensembles (n = 1024) against the discrete-step DMFT at each depth
(issue 15 part 4; nfd.md §3.1 setup: tanh, 2 inputs at 60° with |x|² = d = 2, y = (1, −1),
η = 0.1, γ0 = 2, 3 GD steps, all layers trained).

Usage: ``python benches/nfd_widest.py [--width 1024] [--networks 4] [--depths 4 8 16 32] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import rgflow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--networks", type=int, default=4)
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    x = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]]) * np.sqrt(2.0)  # 60°, |x|² = d = 2
    y = np.array([1.0, -1.0])
    net = rgflow.DepthMuPResNet("tanh", depth=a.depths[0], width=a.width, gamma0=2.0)
    t0 = time.perf_counter()
    sw = rgflow.train_depth_sweep(net, x, y, a.depths, steps=3, eta=0.1, networks=a.networks, seed=1)
    t_ens = time.perf_counter() - t0
    rows = []
    for i, L in enumerate(a.depths):
        for j, mode in enumerate(sw.modes):
            t1 = time.perf_counter()
            sol = rgflow.dmft(net.with_(depth=L), x, y, steps=3, eta=0.1, samples=a.samples,
                              coupled=(mode == "coupled"), seed=L)  # fmt: skip
            t_d = time.perf_counter() - t1
            fe, se = sw.mean["f"][i, j, -1, 0], sw.stderr["f"][i, j, -1, 0]
            fd, sd = sol.mean["f"][-1, 0], sol.stderr["f"][-1, 0]
            le, lse = sw.mean["loss"][i, j, -1], sw.stderr["loss"][i, j, -1]
            ld = sol.mean["loss"][-1]
            rows.append({"L": L, "mode": mode, "f_ens": fe, "f_ens_se": se, "f_dmft": fd, "f_dmft_se": sd,
                         "z_f": (fe - fd) / np.hypot(se, sd), "loss_ens": le, "loss_ens_se": lse,
                         "loss_dmft": ld, "dmft_s": t_d})  # fmt: skip
            r = rows[-1]
            print(
                f"L={L:3d} {mode:9s} f(x1,3): ensemble {fe:.4f} ± {se:.4f}  DMFT {fd:.4f} ± {sd:.4f}  "
                f"z = {r['z_f']:+.2f}; loss: ensemble {le:.4f} ± {lse:.4f}  DMFT {ld:.4f}  ({t_d:.0f} s)",
                flush=True,
            )
    print(f"ensemble: n = {a.width}, {a.networks} networks, depths {a.depths}: {t_ens:.0f} s")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"width": a.width, "networks": a.networks, "ensemble_s": t_ens, "rows": rows}, fh, indent=1,
                      default=float)  # fmt: skip


if __name__ == "__main__":
    main()
