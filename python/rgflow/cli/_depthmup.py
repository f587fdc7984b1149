"""``rgflow run`` for ``[network] architecture = "depthmup"``: trained depth-μP ResNet depth sweeps
(spec ``nfd.md`` §3) and the DMFT (coupled and decoupled), written as the depth-convergence report.

The configuration (every key optional except the inputs; defaults are the spec's §3.1 setup)::

    title = "depth-μP ResNet, tanh"
    [network]
    architecture = "depthmup"
    activation = "tanh"            # name or {name = ..., param = ...}
    gamma0 = 2.0
    branch = "sqrt"                # or "linear"
    horizon = 1.0
    readout = "h"                  # or "phi"
    train = ["input", "hidden", "readout"]
    hidden_lr_depth_power = 0.0
    [inputs]
    x = [[1.4142135623730951, 0.0], [0.7071067811865476, 1.224744871391589]]
    y = [1.0, -1.0]
    [training]
    depths = [4, 8, 16, 32, 64]    # each a multiple of the previous (multilevel coupling)
    widths = [256]
    steps = 3
    eta = 0.1
    networks = 32                  # --networks overrides
    seed = 0
    modes = ["coupled", "decoupled"]
    [dmft]
    samples = 20000                # 0: no DMFT
    replicas = 4
    [report]
    out = "rgflow-report"
    plots = true

This is kept apart from the MLP/residual schema of :mod:`._schema` (a different object: a training
sweep, not an initialisation ensemble); unknown keys are rejected by name.
"""

from __future__ import annotations

import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from ..learning import DepthSweep, DMFTSolution, dmft, train_depth_sweep
from ..models import DepthMuPResNet
from ..report import depthmup_report, format_depthmup_table
from ._schema import ConfigError
from ._validate import parse_activation

ARCH = "depthmup"
SPEC_X = [[math.sqrt(2.0), 0.0], [math.sqrt(2.0) / 2, math.sqrt(6.0) / 2]]  # 60°, |x|² = d (nfd.md §3.1)
TABLES: dict[str, dict[str, Any]] = {
    "network": {
        "architecture": ARCH,
        "activation": "tanh",
        "gamma0": 2.0,
        "branch": "sqrt",
        "horizon": 1.0,
        "readout": "h",
        "train": ["input", "hidden", "readout"],
        "hidden_lr_depth_power": 0.0,
    },
    "inputs": {"x": SPEC_X, "y": [1.0, -1.0]},
    "training": {
        "depths": [4, 8, 16, 32, 64],
        "widths": [256],
        "steps": 3,
        "eta": 0.1,
        "networks": 32,
        "seed": 0,
        "modes": ["coupled", "decoupled"],
    },
    "dmft": {"samples": 20000, "replicas": 4},
    "report": {"out": "rgflow-report", "plots": True},
}


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no such configuration file: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def is_depthmup(raw: dict[str, Any]) -> bool:
    net = raw.get("network")
    return isinstance(net, dict) and net.get("architecture") == ARCH


def settings(raw: dict[str, Any], networks: int | None = None) -> dict[str, Any]:
    """The validated settings: the defaults of :data:`TABLES` updated by ``raw`` (ConfigError naming
    any unknown table or key)."""
    out: dict[str, Any] = {"title": raw.get("title", "depth-μP ResNet depth sweep")}
    for name in raw:
        if name != "title" and name not in TABLES:
            raise ConfigError(f"unknown table [{name}] for architecture = 'depthmup'; tables are {sorted(TABLES)}")
    for table, defaults in TABLES.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{table}] must be a table")
        for k in given:
            if k not in defaults:
                raise ConfigError(f"unknown key {table}.{k} for architecture = 'depthmup'; keys are {sorted(defaults)}")
        out[table] = {**defaults, **given}
    if networks is not None:
        out["training"]["networks"] = networks
    return out


def build(cfg: dict[str, Any]) -> tuple[DepthMuPResNet, np.ndarray, np.ndarray]:
    n = cfg["network"]
    widths = cfg["training"]["widths"]
    if not isinstance(widths, list) or not widths:
        raise ConfigError("training.widths must be a non-empty list of ints, e.g. [256, 512]")
    try:
        net = DepthMuPResNet(
            parse_activation(n["activation"], "network.activation"),
            depth=cfg["training"]["depths"][0] if cfg["training"]["depths"] else 1,
            width=widths[0],
            gamma0=n["gamma0"],
            branch=n["branch"],
            horizon=n["horizon"],
            readout=n["readout"],
            train=n["train"],
            hidden_lr_depth_power=n["hidden_lr_depth_power"],
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[network]: {exc}") from None
    try:
        x = np.asarray(cfg["inputs"]["x"], dtype=float)
        y = np.asarray(cfg["inputs"]["y"], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[inputs]: x must be a list of equal-length number lists, y a number list ({exc})") from None
    return net, x, y


def run_depthmup(
    raw: dict[str, Any], *, out: str | None, networks: int | None, plots: bool, quiet: bool
) -> tuple[list[DepthSweep], list[DMFTSolution], str]:
    """Train the sweeps (one per width), solve the DMFT per depth and mode, write the report; return
    (sweeps, DMFT solutions, the output folder)."""
    cfg = settings(raw, networks)
    net, x, y = build(cfg)
    tr = cfg["training"]
    folder = out if out is not None else str(cfg["report"]["out"])

    def log(msg: str) -> None:
        if not quiet:
            print(f"[rgflow] {msg}", file=sys.stderr, flush=True)

    sweeps: list[DepthSweep] = []
    try:
        for w in tr["widths"]:
            t0 = time.perf_counter()
            s = train_depth_sweep(
                net.with_(width=w),
                x,
                y,
                depths=tuple(tr["depths"]),
                steps=tr["steps"],
                eta=tr["eta"],
                networks=tr["networks"],
                seed=tr["seed"],
                modes=tuple(tr["modes"]),
            )
            dt = time.perf_counter() - t0
            log(f"width {w}: {s.networks} networks × {len(s.depths)} depths × {len(s.modes)} modes in {dt:.1f} s")
            sweeps.append(s)
        solutions: list[DMFTSolution] = []
        samples = cfg["dmft"]["samples"]
        if samples:
            for L in tr["depths"]:
                for mode in tr["modes"]:
                    t0 = time.perf_counter()
                    sol = dmft(
                        net.with_(depth=L),
                        x,
                        y,
                        steps=tr["steps"],
                        eta=tr["eta"],
                        samples=samples,
                        replicas=cfg["dmft"]["replicas"],
                        seed=tr["seed"],
                        coupled=mode == "coupled",
                    )
                    solutions.append(sol)
                    log(f"{mode} DMFT at L = {L}: {time.perf_counter() - t0:.1f} s")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{exc}") from None
    depthmup_report(sweeps, folder, dmft=solutions, plots=plots and bool(cfg["report"]["plots"]))
    print(format_depthmup_table(sweeps, solutions))
    return sweeps, solutions, folder
