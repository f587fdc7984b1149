"""From an ``rgflow learn`` configuration to the learning report's specification.

:func:`load_learn_config` reads TOML, :func:`~._validate.validate_learn` checks it against the schema
(:class:`~._schema.LearnConfig`), and :func:`build_learn_spec` resolves criticality, generates or
loads the data and returns a :class:`rgflow.report.LearnSpec`.  :func:`demo_learn_spec` is the
learning panel of ``rgflow demo``.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import Activation
from ..criticality import critical as find_critical
from ..report import LearnSpec
from ._config import read_toml
from ._schema import ConfigError, LearnConfig, LearnData
from ._validate import validate_learn

__all__ = ["load_learn_config", "learn_config_from_dict", "build_learn_spec", "demo_learn_spec", "teacher_data"]

_TARGETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"sin": np.sin, "tanh": np.tanh, "linear": lambda u: u}


def load_learn_config(path: str | Path, *, networks: int | None = None) -> LearnSpec:
    """Read and validate an ``rgflow learn`` TOML file; ``networks`` overrides ``learning.networks``."""
    path = Path(path)
    return learn_config_from_dict(read_toml(path), base=path.resolve().parent, networks=networks)


def learn_config_from_dict(raw: dict[str, Any], *, base: Path | None = None, networks: int | None = None) -> LearnSpec:
    """Validate a parsed ``rgflow learn`` configuration into a :class:`rgflow.report.LearnSpec`."""
    if networks is not None and isinstance(raw.get("learning"), dict):
        raw = {**raw, "learning": {**raw["learning"], "networks": networks}}
    return build_learn_spec(validate_learn(raw), base or Path.cwd())


def teacher_data(
    n_train: int, n_test: int, dim: int, seed: int, mean_square: float, target: str, outputs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (N_A + N_B, dim), y_train (N_A, n_L), y_test (N_B, n_L)): standard normal directions rescaled to
    |x|²/dim = mean_square, targets y = f(x·w/√dim) with a standard normal teacher w per output."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0) * np.sqrt(mean_square * dim)
    w = rng.standard_normal((dim, outputs))
    y = _TARGETS[target](x @ w / np.sqrt(dim))
    return x, y[:n_train], y[n_train:]


def _data(data: LearnData, base: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, dict[str, Any]]:
    """(x, y_train, y_test or None, N_A, description) from [data]."""
    if data.generate is not None:
        g = data.generate
        x, ytr, yte = teacher_data(g.n_train, g.n_test, g.dim, g.seed, g.mean_square, g.target, g.outputs)
        return x, ytr, yte, g.n_train, {"generate": dataclasses.asdict(g)}
    assert data.file is not None
    path = Path(data.file) if Path(data.file).is_absolute() else base / data.file
    if not path.is_file():
        raise ConfigError(f"'data.file': no such file {str(path)!r}")
    if not zipfile.is_zipfile(path):  # np.load would call a text file "pickled (object) data"
        raise ConfigError(
            f"'data.file': cannot read {str(path)!r}: it is not an .npz archive; write one with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"'data.file': cannot read {str(path)!r} as an .npz archive (numpy.savez with x_train, y_train, "
            f"x_test): {exc}"
        ) from None
    for k in ("x_train", "y_train", "x_test"):
        if k not in arrays:
            raise ConfigError(f"'data.file': {str(path)!r} has no array {k!r} (it has {sorted(arrays)})")
    for k, a in arrays.items():
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a) or not np.all(np.isfinite(a)):
            raise ConfigError(f"'data.file': array {k!r} must be real, numeric and finite")
    xtr, xte = arrays["x_train"].astype(float), arrays["x_test"].astype(float)
    ytr = arrays["y_train"].astype(float)
    ytr = ytr[:, None] if ytr.ndim == 1 else ytr
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1] or min(xtr.shape + xte.shape) < 1:
        raise ConfigError(
            f"'data.file': x_train and x_test must be (N, n0) arrays with the same n0, got {xtr.shape}, {xte.shape}"
        )
    if ytr.ndim != 2 or ytr.shape[0] != xtr.shape[0]:
        raise ConfigError(f"'data.file': y_train must be (N_A, n_L) with N_A = {xtr.shape[0]}, got {ytr.shape}")
    y_test = arrays.get("y_test")
    if y_test is not None:
        y_test = y_test.astype(float)
        y_test = y_test[:, None] if y_test.ndim == 1 else y_test
        if y_test.shape != (xte.shape[0], ytr.shape[1]):
            raise ConfigError(f"'data.file': y_test must have shape {(xte.shape[0], ytr.shape[1])}, got {y_test.shape}")
    return np.vstack([xtr, xte]), ytr, y_test, xtr.shape[0], {"file": str(path)}


def build_learn_spec(cfg: LearnConfig, base: Path) -> LearnSpec:
    """The :class:`rgflow.report.LearnSpec` of a validated configuration (``base``: folder of relative paths)."""
    nw, ln = cfg.network, cfg.learning
    if nw.depth < 2:
        raise ConfigError("'network.depth' must be >= 2 for rgflow learn: the 1/n corrections need a hidden layer")
    x, ytr, yte, n_train, desc = _data(cfg.data, base)
    if nw.out_width is not None and nw.out_width != ytr.shape[1]:
        raise ConfigError(
            f"'network.out_width' = {nw.out_width} disagrees with the targets' n_L = {ytr.shape[1]}; remove it"
        )
    C_b: float | list[float] = nw.C_b
    C_W: float | list[float] = nw.C_W if nw.C_W is not None else 0.0
    if nw.critical:
        crit = find_critical(nw.activation)
        if not crit.is_critical or crit.C_b is None or crit.C_W is None:
            raise ConfigError(
                f"'network.critical': {nw.activation!r} has no critical point ({crit.reason}); give C_b and C_W instead"
            )
        C_b, C_W = float(crit.C_b), float(crit.C_W)
    nets = ln.networks if isinstance(ln.networks, list) else [ln.networks] * len(ln.widths)
    N = x.shape[0]
    config = {
        "title": cfg.title,
        "network": {
            "activation": _plain(nw.activation), "depth": nw.depth, "C_b": C_b, "C_W": C_W,
            "lambda_b": nw.lambda_b, "lambda_W": nw.lambda_W, "critical": nw.critical,
        },
        "data": desc,
        "learning": {**dataclasses.asdict(ln), "networks": nets},
        "report": dataclasses.asdict(cfg.report),
    }  # fmt: skip
    spec = LearnSpec(
        activation=nw.activation,
        depth=nw.depth,
        x=x,
        y=ytr,
        train=np.arange(n_train),
        test=np.arange(n_train, N),
        widths=list(ln.widths),
        networks=nets,
        C_b=C_b,
        C_W=C_W,
        lambda_b=nw.lambda_b,
        lambda_W=nw.lambda_W,
        kind=ln.algorithm,
        y_test=yte,
        groups=ln.groups,
        seed=ln.seed,
        backend=ln.backend,
        lr=ln.lr,
        tol=ln.tol,
        evidence_C_b=ln.evidence.C_b if ln.evidence else None,
        evidence_C_W=ln.evidence.C_W if ln.evidence else None,
        title=cfg.title,
        config={**config, "_out": cfg.report.out, "_plots": cfg.report.plots},
    )
    try:
        for w in spec.widths:
            spec.net(w)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[network]: {exc}") from None
    return spec


def _plain(act: Activation) -> object:
    return act.to_dict() if not act.is_custom else str(act)


def demo_learn_spec(quick: bool = False, networks: int | None = None) -> LearnSpec:
    """The learning panel of ``rgflow demo``: a GELU MLP at criticality, depth 3, 4 training and 2 test
    inputs (|x|²/n0 = 0.5, a sin teacher), trained ensembles at widths 8, 16, 32 against the
    infinite-width (10.40) and O(1/n) (∞.160)–(∞.165) predictions, and the evidence near criticality."""
    widths, nets, groups = ([8, 16], 32, 8) if quick else ([8, 16, 32], 320, 16)
    nets = nets if networks is None else max(2 * groups, min(networks, nets))
    raw = {
        "title": "rgflow demo: what trained GELU networks predict at finite width" + (" (quick)" if quick else ""),
        "network": {"activation": "gelu", "depth": 3, "critical": True},
        "data": {"generate": {"n_train": 4, "n_test": 2, "dim": 3, "seed": 1, "mean_square": 0.5, "target": "sin"}},
        "learning": {
            "algorithm": "gd",
            "widths": widths,
            "networks": nets,
            "groups": groups,
            "tol": 1e-8,  # a training loss of 1e-8 moves the test outputs by ~1e-4, far below the error bars
            "evidence": {"C_b": [0.0, 0.1, 0.17292239, 0.25], "C_W": [1.5, 1.98305826, 2.5]},
        },
    }
    return learn_config_from_dict(raw)
