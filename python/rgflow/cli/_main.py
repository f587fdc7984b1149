"""The ``rgflow`` command line: ``demo``, ``run CONFIG.toml`` and ``critical``.

Usage::

    rgflow demo [--out DIR] [--networks N] [--quick] [--no-plots] [--quiet]
    rgflow run CONFIG.toml [--out DIR] [--networks N] [--no-plots] [--quiet]
    rgflow critical [ACTIVATION ...]          # e.g. rgflow critical gelu leaky_relu:slope=0.2

Exit codes: 0 success, 2 bad usage or configuration, 1 any other failure.  Errors are one line
on stderr; ``rgflow --debug ...`` shows the traceback.

Configuration file (TOML) for ``rgflow run``
--------------------------------------------
Unknown keys and bad values are errors that name the key.  Relative paths are relative to the
configuration file (``inputs.file``) or to the current directory (``report.out``).

.. code-block:: toml

    title = "GELU MLP at criticality"     # optional: table and plot titles

    [network]                             # required
    activation = "gelu"                   # built-in name, or {name = "leaky_relu", slope = 0.1}
    depth = 4                             # number of layers L >= 1
    C_b = 0.17292239                      # bias variance: a number or a list of L numbers (default 0)
    C_W = 1.98305826                      # weight variance: a number or a list (required ...
    # critical = true                     # ... unless critical = true: C_b, C_W from rgflow.critical)
    lambda_b = 1.0                        # NTK learning rates (default 1), numbers or lists
    lambda_W = 1.0
    out_width = 1                         # sampler output width n_L (the theory does not use it)

    [inputs]                              # required: exactly one of generate / file
    generate = {n = 4, dim = 3, seed = 0, scale = 1.0}  # x = scale * standard normal (n, dim)
    # generate = {n = 4, dim = 3, mean_square = 1.7}    # rows rescaled to |x|^2/dim = mean_square
    # file = "x.npy"                      # an (N, n0) float array saved with numpy.save

    [theory]                              # optional
    ntk = true                            # also the NTK family (Theta, Theta1, D, F, A, B)
    order = 1                             # 0: infinite width only (K, Theta), 1: first order in 1/n
    quad_order = 0                        # quadrature nodes per piece (0: the core's default)
    expectations = "auto"                 # "auto": closed forms (relu, leaky_relu, gelu, erf, linear,
                                          # monomial), quadrature otherwise; "quadrature": always

    [ensemble]                            # required
    widths = [16, 64]                     # hidden widths to sample: ints, or lists of L-1 ints
    networks = 8000                       # networks per ensemble: an int, or one per width (default 4000)
    backend = "numpy"                     # "numpy" | "jax", or a list: every width with each
    dtype = "float64"                     # or "float32" (forward pass only)
    groups = 32                           # batch-means groups for standard errors
    batch = 0                             # networks per batch (0: automatic)
    seed = 0
    estimator = "conditional"             # or "direct"

    [report]                              # optional
    out = "rgflow-report"                 # output folder (--out overrides)
    plots = true                          # PNG plots (needs matplotlib)
    layer = 0                             # layer of the printed table (0: the last)

    # ---- residual architectures: network.architecture = "resmlp" or "preresnet" -------------------
    # Keys above that do not apply to an architecture are errors (lambda_b, lambda_W, out_width,
    # theory.ntk and ensemble.estimator are for "mlp" only).  ensemble.widths are plain ints (every
    # layer has that width).  See examples/preresnet_paper.toml.
    #
    # [network]
    # architecture = "mlp"                # "mlp" (default) | "resmlp" | "preresnet"
    # gamma = 0.7                         # resmlp (required): residual weight γ (B.3), a number or one per layer;
    #                                     #   C_b, C_W as above; critical = true takes C_W = (1 - γ²)/A₂ (B.19)-(B.21)
    # epsilon = 0.05                      # preresnet: branch scale ε > 0 of φ' = φ + εWσ(φ) ...
    # T = 2.0                             # ... or the total time T = ε²L instead (exactly one of the two);
    #                                     #   depth = L blocks, C_W > 0 required, C_b (>= 0) enters only
    #                                     #   through inputs x: K0(0) = C_b + C_W x·xᵀ/n0
    # [inputs]
    # kernel = [[2.0, 0.6], [0.6, 2.0]]   # preresnet: the input kernel K0(0) itself (symmetric PSD), or
    # kernel = {n = 4, diagonal = 2.0, off_diagonal = 0.6}   # (instead of generate / file)
    # [theory]
    # corrected = true                    # resmlp: S-corrected vertex (false: the book's B.25); order = 0 | 1
    # method = "ode"                      # preresnet: "ode" (Dormand-Prince) | "discrete" (block by block)
    # closure = "g_only"                  # preresnet: K1 closure, "g_only" (the spec's K1,EFT) | "connected"
    # every = 100                         # preresnet: checkpoints ℓ = 0, every, 2·every, ..., L (default L/8)
    # rtol = 1e-8                         # preresnet, method = "ode": tolerances
    # atol = 1e-10
    # paper_gh_order = 32                 # preresnet: also the published scheme (forward Euler, plain
    #                                     #   32-point Gauss-Hermite; 0 = off), reported next to the converged one
    # [ensemble]
    # sampler = "block"                   # preresnet: "block" (exact block law) | "weights" (dense W) | both, a list
    # dtype = "float32"                   # preresnet: float32 forward pass (sums in float64); resmlp: float64 only
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._util.version import VERSION as __version__
from ..activations import Activation
from ..criticality import critical as find_critical
from ..models import ResMLP
from ..report import (
    EnsembleSpec,
    ResidualEnsembleSpec,
    ResidualRunSpec,
    RunSpec,
    format_residual_table,
    format_table,
    pyplot,
    run_report,
    run_residual_report,
)

__all__ = ["main", "load_config", "ConfigError", "DEMO_CRITICAL"]

#: GELU criticality (PDLT eq. 5.105): K* = (3 + sqrt 17)/2.
DEMO_CRITICAL = {"C_b": 0.17292239, "C_W": 1.98305826}
#: Demo inputs: random directions with |x|^2/n0 = DEMO_MEAN_SQUARE.
DEMO_MEAN_SQUARE = 0.3


class ConfigError(ValueError):
    """A bad configuration or command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as :class:`ConfigError`."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see '{self.prog} --help')")


# ============================================================================ configuration

_SCHEMA: dict[str, set[str]] = {
    "": {"title", "network", "inputs", "theory", "ensemble", "report"},
    "network": {
        "architecture",
        "activation",
        "depth",
        "critical",
        "C_b",
        "C_W",
        "lambda_b",
        "lambda_W",
        "out_width",
        "gamma",
        "epsilon",
        "T",
    },
    "inputs": {"generate", "file", "kernel"},
    "inputs.generate": {"n", "dim", "seed", "scale", "mean_square"},
    "inputs.kernel": {"n", "diagonal", "off_diagonal"},
    "theory": {
        "ntk",
        "order",
        "quad_order",
        "corrected",
        "method",
        "closure",
        "every",
        "rtol",
        "atol",
        "paper_gh_order",
        "expectations",
    },
    "ensemble": {"widths", "networks", "backend", "dtype", "groups", "batch", "seed", "estimator", "sampler"},
    "report": {"out", "plots", "layer"},
}

ARCHITECTURES = ("mlp", "resmlp", "preresnet")
#: Keys that only one or two architectures accept (section.key -> architectures).
_ONLY: dict[str, tuple[str, ...]] = {
    "network.lambda_b": ("mlp",),
    "network.lambda_W": ("mlp",),
    "network.out_width": ("mlp",),
    "network.critical": ("mlp", "resmlp"),
    "network.gamma": ("resmlp",),
    "network.epsilon": ("preresnet",),
    "network.T": ("preresnet",),
    "inputs.kernel": ("preresnet",),
    "theory.ntk": ("mlp",),
    "theory.expectations": ("mlp",),
    "theory.order": ("mlp", "resmlp"),
    "theory.corrected": ("resmlp",),
    "theory.method": ("preresnet",),
    "theory.closure": ("preresnet",),
    "theory.every": ("preresnet",),
    "theory.rtol": ("preresnet",),
    "theory.atol": ("preresnet",),
    "theory.paper_gh_order": ("preresnet",),
    "ensemble.estimator": ("mlp",),
    "ensemble.sampler": ("preresnet",),
    "report.layer": ("mlp", "resmlp"),
}


def _check_architecture(raw: dict[str, Any], arch: str) -> None:
    """A key that does not apply to ``arch`` is an error naming it and the architectures it is for."""
    for key, archs in _ONLY.items():
        sec, _, k = key.partition(".")
        tbl = raw.get(sec)
        if isinstance(tbl, dict) and k in tbl and arch not in archs:
            raise ConfigError(
                f"'{key}' applies to network.architecture = {' or '.join(repr(a) for a in archs)} only, "
                f"not {arch!r}; remove it"
            )


def _check_keys(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"'{where}' must be a table ({{...}} or a [{where}] section), got {type(table).__name__}")
    allowed = _SCHEMA[where]
    for k in table:
        if k not in allowed:
            name = f"{where}.{k}" if where else k
            raise ConfigError(
                f"unknown key '{name}' (allowed{' in [' + where + ']' if where else ''}: {', '.join(sorted(allowed))})"
            )
    return table


def _int(v: Any, key: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"'{key}' must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"'{key}' must be >= {lo}, got {v}")
    return v


def _num(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"'{key}' must be a finite number, got {v!r}")
    return float(v)


def _num_or_list(v: Any, key: str, depth: int) -> float | list[float]:
    if isinstance(v, list):
        if len(v) != depth:
            raise ConfigError(
                f"'{key}' has {len(v)} entries but depth = {depth}; give one per layer or a single number"
            )
        return [_num(e, f"{key}[{i}]") for i, e in enumerate(v)]
    return _num(v, key)


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"'{key}' must be true or false, got {v!r}")
    return v


def _str(v: Any, key: str, choices: Sequence[str] | None = None) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"'{key}' must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"'{key}' = {v!r}: choose one of {', '.join(choices)}")
    return v


def parse_activation(spec: Any, key: str = "activation") -> Any:
    """An Activation from a name, ``name:param=value,...`` or a TOML table {name = ..., param = ...}."""

    try:
        if isinstance(spec, dict):
            d = dict(spec)
            if "name" not in d:
                raise ConfigError(f"'{key}' table needs a 'name' key, e.g. {{name = \"leaky_relu\", slope = 0.1}}")
            name = _str(d.pop("name"), f"{key}.name")
            params = {k: _num(v, f"{key}.{k}") for k, v in d.items()}
            return Activation(name, **params)
        if not isinstance(spec, str):
            raise ConfigError(f"'{key}' must be a name or a table, got {spec!r}")
        name, _, rest = spec.partition(":")
        params = {}
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            if not eq:
                raise ConfigError(f"'{key}' = {spec!r}: parameters are written name:key=value,key=value")
            try:
                params[k.strip()] = float(v)
            except ValueError:
                raise ConfigError(f"'{key}' = {spec!r}: parameter {k.strip()!r} is not a number") from None
        return Activation(name.strip(), **params)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"'{key}': {exc}") from None


def _generate_inputs(n: int, dim: int, seed: int, scale: float, mean_square: float | None) -> Any:
    """Standard normal (n, dim) inputs times ``scale``, or rescaled rows with |x|^2/dim = ``mean_square``."""
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((n, dim))
    if mean_square is None:
        return scale * x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0) * np.sqrt(mean_square * dim)


def _inputs(tbl: dict[str, Any], base: Path) -> tuple[Any, dict[str, Any]]:
    import numpy as np

    _check_keys(tbl, "inputs")
    if ("generate" in tbl) == ("file" in tbl):
        raise ConfigError(
            "[inputs] needs exactly one of 'inputs.generate' = {n = ..., dim = ...} or 'inputs.file' = \"x.npy\""
        )
    if "generate" in tbl:
        g = _check_keys(tbl["generate"], "inputs.generate")
        for k in ("n", "dim"):
            if k not in g:
                raise ConfigError(f"missing key 'inputs.generate.{k}'")
        n = _int(g["n"], "inputs.generate.n", 1)
        dim = _int(g["dim"], "inputs.generate.dim", 1)
        seed = _int(g.get("seed", 0), "inputs.generate.seed", 0)
        scale = _num(g.get("scale", 1.0), "inputs.generate.scale")
        ms = None
        if "mean_square" in g:
            if "scale" in g:
                raise ConfigError("'inputs.generate.mean_square' and 'inputs.generate.scale' exclude each other")
            ms = _num(g["mean_square"], "inputs.generate.mean_square")
            if ms <= 0:
                raise ConfigError(f"'inputs.generate.mean_square' must be > 0, got {ms}")
        x = _generate_inputs(n, dim, seed, scale, ms)
        desc = {"n": n, "dim": dim, "seed": seed, **({"mean_square": ms} if ms is not None else {"scale": scale})}
        return x, {"generate": desc}
    f = _str(tbl["file"], "inputs.file")
    path = Path(f)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(f"'inputs.file': no such file {str(path)!r}")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"'inputs.file': cannot read {str(path)!r} as a .npy array: {exc}") from None
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ConfigError(f"'inputs.file': expected an (N, n0) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ConfigError("'inputs.file': the array must be numeric and finite")
    return x.astype(float), {"file": str(path)}


def load_config(path: str | Path, *, networks: int | None = None) -> Any:
    """Read and validate a TOML configuration; return a :class:`rgflow.report.RunSpec`.

    Raises :class:`ConfigError` naming the offending key.  ``networks`` overrides
    ``ensemble.networks``.
    """
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no such configuration file: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(raw, base=path.resolve().parent, networks=networks)


def config_from_dict(raw: dict[str, Any], *, base: Path | None = None, networks: int | None = None) -> Any:
    """Validate a configuration dictionary (the parsed TOML) into a :class:`rgflow.report.RunSpec`."""

    base = base or Path.cwd()
    _check_keys(raw, "")
    for sec in ("network", "inputs", "ensemble"):
        if sec not in raw:
            raise ConfigError(f"missing section [{sec}]")
    title = _str(raw.get("title", "rgflow report"), "title")
    nw0 = _check_keys(raw["network"], "network")
    arch = _str(nw0.get("architecture", "mlp"), "network.architecture", ARCHITECTURES)
    _check_architecture(raw, arch)
    if arch != "mlp":
        return _residual_config(raw, arch, title, base, networks)

    # ---------------------------------------------------------------- network
    nw = _check_keys(raw["network"], "network")
    if "activation" not in nw:
        raise ConfigError("missing key 'network.activation'")
    if "depth" not in nw:
        raise ConfigError("missing key 'network.depth'")
    act = parse_activation(nw["activation"], "network.activation")
    depth = _int(nw["depth"], "network.depth", 1)
    critical = _bool(nw.get("critical", False), "network.critical")
    resolved_net: dict[str, Any] = {"activation": act.to_dict() if not act.is_custom else str(act), "depth": depth}
    if critical:
        for k in ("C_b", "C_W"):
            if k in nw:
                raise ConfigError(f"'network.{k}' conflicts with 'network.critical = true' (which sets C_b and C_W)")
        try:
            crit = find_critical(act)
        except ValueError as exc:
            raise ConfigError(f"'network.critical': {exc}") from None
        C_b, C_W = float(crit.C_b), float(crit.C_W)
    else:
        C_b = _num_or_list(nw.get("C_b", 0.0), "network.C_b", depth)
        if "C_W" not in nw:
            raise ConfigError("missing key 'network.C_W' (or set 'network.critical = true')")
        C_W = _num_or_list(nw["C_W"], "network.C_W", depth)
    lambda_b = _num_or_list(nw.get("lambda_b", 1.0), "network.lambda_b", depth)
    lambda_W = _num_or_list(nw.get("lambda_W", 1.0), "network.lambda_W", depth)
    out_width = _int(nw["out_width"], "network.out_width", 1) if "out_width" in nw else None
    resolved_net.update(
        {
            "critical": critical,
            "C_b": C_b,
            "C_W": C_W,
            "lambda_b": lambda_b,
            "lambda_W": lambda_W,
            "out_width": out_width,
        }
    )

    # ---------------------------------------------------------------- inputs
    x, inputs_desc = _inputs(raw["inputs"], base)

    # ---------------------------------------------------------------- theory
    tt = _check_keys(raw.get("theory", {}), "theory")
    ntk = _bool(tt.get("ntk", True), "theory.ntk")
    order = _int(tt.get("order", 1), "theory.order", 0)
    if order not in (0, 1):
        raise ConfigError(f"'theory.order' must be 0 or 1, got {order}")
    qo = _int(tt.get("quad_order", 0), "theory.quad_order", 0)
    quad_order = qo or None
    method = _str(tt.get("expectations", "auto"), "theory.expectations", ("auto", "quadrature"))

    # ---------------------------------------------------------------- ensemble
    en = _check_keys(raw["ensemble"], "ensemble")
    if "widths" not in en:
        raise ConfigError("missing key 'ensemble.widths' (a list of hidden widths to sample)")
    ws = en["widths"]
    if not isinstance(ws, list) or not ws:
        raise ConfigError(f"'ensemble.widths' must be a non-empty list, got {ws!r}")
    widths: list[int | list[int]] = []
    for i, w in enumerate(ws):
        if isinstance(w, list):
            if len(w) != depth - 1:
                raise ConfigError(
                    f"'ensemble.widths[{i}]' has {len(w)} entries; depth {depth} means {depth - 1} hidden layers"
                )
            widths.append([_int(v, f"ensemble.widths[{i}][{j}]", 1) for j, v in enumerate(w)])
        else:
            widths.append(_int(w, f"ensemble.widths[{i}]", 1))
    if depth == 1 and any(isinstance(w, int) for w in widths):
        widths = [[] for _ in widths]
    nets = en.get("networks", 4000) if networks is None else networks
    if isinstance(nets, list):
        if len(nets) != len(widths):
            raise ConfigError(f"'ensemble.networks' has {len(nets)} entries but there are {len(widths)} widths")
        nets_l = [_int(v, f"ensemble.networks[{i}]", 2) for i, v in enumerate(nets)]
    else:
        nets_l = [_int(nets, "ensemble.networks", 2)] * len(widths)
    be = en.get("backend", "numpy")
    backends = be if isinstance(be, list) else [be]
    if not backends:
        raise ConfigError("'ensemble.backend' is an empty list")
    backends = [_str(b, "ensemble.backend", ("numpy", "jax")) for b in backends]
    dtype = _str(en.get("dtype", "float64"), "ensemble.dtype", ("float64", "float32"))
    groups = _int(en.get("groups", 32), "ensemble.groups", 2)
    batch = _int(en.get("batch", 0), "ensemble.batch", 0) or None
    seed = _int(en.get("seed", 0), "ensemble.seed", 0)
    estimator = _str(en.get("estimator", "conditional"), "ensemble.estimator", ("conditional", "direct"))
    for i, nn in enumerate(nets_l):
        if nn < 2 * groups:
            key = "ensemble.networks" + (f"[{i}]" if isinstance(nets, list) else "")
            raise ConfigError(f"'{key}' = {nn} is too small for ensemble.groups = {groups} (need >= {2 * groups})")
    ensembles = [
        EnsembleSpec(w, nn, b, dtype, groups, batch, seed, estimator)
        for w, nn in zip(widths, nets_l, strict=True)
        for b in backends
    ]

    # ---------------------------------------------------------------- report
    rp = _check_keys(raw.get("report", {}), "report")
    out = _str(rp.get("out", "rgflow-report"), "report.out")
    plots = _bool(rp.get("plots", True), "report.plots")
    layer = _int(rp.get("layer", 0), "report.layer", 0) or None
    if layer is not None and layer > depth:
        raise ConfigError(f"'report.layer' = {layer} exceeds network.depth = {depth}")

    spec = RunSpec(
        activation=act,
        depth=depth,
        x=x,
        ensembles=ensembles,
        C_b=C_b,
        C_W=C_W,
        lambda_b=lambda_b,
        lambda_W=lambda_W,
        out_width=out_width,
        title=title,
        ntk=ntk,
        order=order,
        quad_order=quad_order,
        method=method,
        layer=layer,
        inputs=inputs_desc,
    )
    try:  # the network itself (e.g. per-layer lengths, variances >= 0)
        for es in ensembles:
            spec.net(es)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[network]: {exc}") from None
    spec.config = {
        "title": title,
        "network": resolved_net,
        "inputs": inputs_desc,
        "theory": {"ntk": ntk, "order": order, "quad_order": qo, "expectations": method},
        "ensemble": {
            "widths": widths,
            "networks": nets_l,
            "backend": backends,
            "dtype": dtype,
            "groups": groups,
            "batch": batch or 0,
            "seed": seed,
            "estimator": estimator,
        },
        "report": {"out": out, "plots": plots, "layer": layer or 0},
    }
    spec.config["_out"] = out
    spec.config["_plots"] = plots
    return spec


def _kernel_input(v: Any) -> tuple[Any, dict[str, Any]]:
    """``inputs.kernel``: an (N, N) list of lists, or {n, diagonal, off_diagonal} (``d·I + o·(11ᵀ − I)``)."""
    import numpy as np

    if isinstance(v, dict):
        t = _check_keys(v, "inputs.kernel")
        for k in ("n", "diagonal", "off_diagonal"):
            if k not in t:
                raise ConfigError(f"missing key 'inputs.kernel.{k}' (or give the matrix as a list of rows)")
        n = _int(t["n"], "inputs.kernel.n", 1)
        d = _num(t["diagonal"], "inputs.kernel.diagonal")
        o = _num(t["off_diagonal"], "inputs.kernel.off_diagonal")
        k = np.full((n, n), o)
        np.fill_diagonal(k, d)
        desc: dict[str, Any] = {"kernel": {"n": n, "diagonal": d, "off_diagonal": o}}
    elif isinstance(v, list) and v and all(isinstance(r, list) for r in v):
        N = len(v)
        for i, r in enumerate(v):
            if len(r) != N:
                raise ConfigError(f"'inputs.kernel' must be square: row {i} has {len(r)} entries, expected {N}")
        k = np.array([[_num(e, f"inputs.kernel[{i}][{j}]") for j, e in enumerate(r)] for i, r in enumerate(v)])
        desc = {"kernel": k.tolist()}
    else:
        raise ConfigError(
            f"'inputs.kernel' must be a list of rows [[...], ...] or {{n = ..., diagonal = ..., off_diagonal = ...}}, "
            f"got {v!r}"
        )
    if np.abs(k - k.T).max() > 1e-12 * max(1.0, float(np.abs(k).max())):
        raise ConfigError("'inputs.kernel' must be symmetric")
    wmin = float(np.linalg.eigvalsh(k).min())
    if wmin < -1e-9 * max(1.0, float(np.abs(k).max())):
        raise ConfigError(
            f"'inputs.kernel' is not positive semi-definite (smallest eigenvalue {wmin:.3g}); "
            "for the {n, diagonal, off_diagonal} form use -diagonal/(n-1) <= off_diagonal <= diagonal"
        )
    return k, desc


def _residual_config(raw: dict[str, Any], arch: str, title: str, base: Path, networks: int | None) -> Any:
    """Validate a configuration of a residual architecture into a :class:`rgflow.report_residual.ResidualRunSpec`."""

    nw = raw["network"]
    for k in ("activation", "depth"):
        if k not in nw:
            raise ConfigError(f"missing key 'network.{k}'")
    act = parse_activation(nw["activation"], "network.activation")
    depth = _int(nw["depth"], "network.depth", 1)
    resolved: dict[str, Any] = {
        "architecture": arch,
        "activation": act.to_dict() if not act.is_custom else str(act),
        "depth": depth,
    }
    kw: dict[str, Any] = {}
    if arch == "preresnet":
        if ("epsilon" in nw) == ("T" in nw):
            raise ConfigError(
                "[network] of architecture = 'preresnet' needs exactly one of 'network.epsilon' (the branch scale ε) "
                "or 'network.T' (the total time T = ε²L)"
            )
        if "epsilon" in nw:
            eps = _num(nw["epsilon"], "network.epsilon")
            if eps <= 0:
                raise ConfigError(f"'network.epsilon' must be > 0 (ε = sqrt(T/L)), got {eps}")
        else:
            T = _num(nw["T"], "network.T")
            if T <= 0:
                raise ConfigError(f"'network.T' must be > 0 (T = ε²L), got {T}")
            eps = math.sqrt(T / depth)
        if "C_W" not in nw:
            raise ConfigError("missing key 'network.C_W'")
        C_W = _num(nw["C_W"], "network.C_W")
        if C_W <= 0:
            raise ConfigError(f"'network.C_W' must be > 0, got {C_W}")
        C_b = _num(nw.get("C_b", 0.0), "network.C_b")
        if C_b < 0:
            raise ConfigError(f"'network.C_b' must be >= 0 (a variance), got {C_b}")
        kw.update(eps=eps, C_W=C_W, C_b=C_b)
        resolved.update(epsilon=eps, T=eps * eps * depth, C_W=C_W, C_b=C_b)
    else:
        if "gamma" not in nw:
            raise ConfigError("missing key 'network.gamma' (the residual weight γ of architecture = 'resmlp')")
        gamma = _num_or_list(nw["gamma"], "network.gamma", depth)
        if _bool(nw.get("critical", False), "network.critical"):
            for k in ("C_b", "C_W"):
                if k in nw:
                    raise ConfigError(
                        f"'network.{k}' conflicts with 'network.critical = true' (which sets C_b and C_W)"
                    )
            if isinstance(gamma, list):
                raise ConfigError("'network.gamma' must be one number with 'network.critical = true' (B.19)-(B.21)")

            try:
                crit = ResMLP.critical(act, depth, 2, gamma)
            except ValueError as exc:
                raise ConfigError(f"'network.critical': {exc}") from None
            C_b, C_W = crit.C_b[0], crit.C_W[0]
        else:
            if "C_W" not in nw:
                raise ConfigError("missing key 'network.C_W' (or set 'network.critical = true')")
            C_W = _num_or_list(nw["C_W"], "network.C_W", depth)
            C_b = _num_or_list(nw.get("C_b", 0.0), "network.C_b", depth)
        kw.update(gamma=gamma, C_W=C_W, C_b=C_b)
        resolved.update(critical=bool(nw.get("critical", False)), gamma=gamma, C_W=C_W, C_b=C_b)

    # ---------------------------------------------------------------- inputs
    inp = _check_keys(raw["inputs"], "inputs")
    x = kernel = None
    if "kernel" in inp:
        if "generate" in inp or "file" in inp:
            raise ConfigError("[inputs] needs exactly one of 'inputs.kernel', 'inputs.generate' or 'inputs.file'")
        kernel, inputs_desc = _kernel_input(inp["kernel"])
    else:
        x, inputs_desc = _inputs(inp, base)

    # ---------------------------------------------------------------- theory
    tt = _check_keys(raw.get("theory", {}), "theory")
    qo = _int(tt.get("quad_order", 0), "theory.quad_order", 0)
    theory_desc: dict[str, Any] = {"quad_order": qo}
    if arch == "resmlp":
        order = _int(tt.get("order", 1), "theory.order", 0)
        if order not in (0, 1):
            raise ConfigError(f"'theory.order' must be 0 or 1, got {order}")
        corrected = _bool(tt.get("corrected", True), "theory.corrected")
        kw.update(order=order, corrected=corrected)
        theory_desc.update(order=order, corrected=corrected)
    else:
        method = _str(tt.get("method", "ode"), "theory.method", ("ode", "discrete"))
        closure = _str(tt.get("closure", "g_only"), "theory.closure", ("g_only", "connected"))
        every = _int(tt.get("every", max(1, depth // 8)), "theory.every", 1)
        if every > depth:
            raise ConfigError(f"'theory.every' = {every} exceeds network.depth = {depth}")
        rtol = _num(tt.get("rtol", 1e-8), "theory.rtol")
        atol = _num(tt.get("atol", 1e-10), "theory.atol")
        if rtol <= 0 or atol <= 0:
            raise ConfigError("'theory.rtol' and 'theory.atol' must be > 0")
        gh = _int(tt.get("paper_gh_order", 0), "theory.paper_gh_order", 0)
        if gh == 1:
            raise ConfigError("'theory.paper_gh_order' must be 0 (off) or >= 2 Gauss-Hermite points, e.g. 32")
        kw.update(method=method, closure=closure, every=every, rtol=rtol, atol=atol, paper_gh_order=gh)
        theory_desc.update(method=method, closure=closure, every=every, rtol=rtol, atol=atol, paper_gh_order=gh)

    # ---------------------------------------------------------------- ensemble
    en = _check_keys(raw["ensemble"], "ensemble")
    if "widths" not in en:
        raise ConfigError("missing key 'ensemble.widths' (a list of widths to sample)")
    ws = en["widths"]
    if not isinstance(ws, list) or not ws:
        raise ConfigError(f"'ensemble.widths' must be a non-empty list, got {ws!r}")
    lo = 2 if arch == "resmlp" else 1
    widths = [_int(w, f"ensemble.widths[{i}]", lo) for i, w in enumerate(ws)]
    nets = en.get("networks", 4000) if networks is None else networks
    if isinstance(nets, list):
        if len(nets) != len(widths):
            raise ConfigError(f"'ensemble.networks' has {len(nets)} entries but there are {len(widths)} widths")
        nets_l = [_int(v, f"ensemble.networks[{i}]", 2) for i, v in enumerate(nets)]
    else:
        nets_l = [_int(nets, "ensemble.networks", 2)] * len(widths)
    be = en.get("backend", "numpy")
    backends = [_str(b, "ensemble.backend", ("numpy", "jax")) for b in (be if isinstance(be, list) else [be])]
    if not backends:
        raise ConfigError("'ensemble.backend' is an empty list")
    sm = en.get("sampler", "block")
    samplers = [_str(v, "ensemble.sampler", ("block", "weights")) for v in (sm if isinstance(sm, list) else [sm])]
    if not samplers:
        raise ConfigError("'ensemble.sampler' is an empty list")
    dtype = _str(en.get("dtype", "float64"), "ensemble.dtype", ("float64", "float32"))
    if arch == "resmlp" and dtype != "float64":
        raise ConfigError("'ensemble.dtype' must be 'float64' for architecture = 'resmlp'")
    groups = _int(en.get("groups", 32), "ensemble.groups", 2)
    batch = _int(en.get("batch", 0), "ensemble.batch", 0) or None
    seed = _int(en.get("seed", 0), "ensemble.seed", 0)
    for i, nn in enumerate(nets_l):
        if nn < 2 * groups:
            key = "ensemble.networks" + (f"[{i}]" if isinstance(nets, list) else "")
            raise ConfigError(f"'{key}' = {nn} is too small for ensemble.groups = {groups} (need >= {2 * groups})")
    ensembles = [
        ResidualEnsembleSpec(w, nn, b, dtype, groups, batch, seed, smp)
        for w, nn in zip(widths, nets_l, strict=True)
        for b in backends
        for smp in samplers
    ]

    # ---------------------------------------------------------------- report
    rp = _check_keys(raw.get("report", {}), "report")
    out = _str(rp.get("out", "rgflow-report"), "report.out")
    plots = _bool(rp.get("plots", True), "report.plots")
    layer = None
    if arch == "resmlp":
        layer = _int(rp.get("layer", 0), "report.layer", 0) or None
        if layer is not None and layer > depth:
            raise ConfigError(f"'report.layer' = {layer} exceeds network.depth = {depth}")

    spec = ResidualRunSpec(
        architecture=arch,
        activation=act,
        depth=depth,
        ensembles=ensembles,
        x=x,
        kernel=kernel,
        title=title,
        quad_order=qo or None,
        layer=layer,
        inputs=inputs_desc,
        **kw,
    )
    try:  # the networks themselves and the input kernel (PSD, from x or given)
        for es in ensembles:
            net = spec.net(es.width)
        if arch == "preresnet":
            net.input_kernel(x, kernel)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[network]: {exc}") from None
    spec.config = {
        "title": title,
        "network": resolved,
        "inputs": inputs_desc,
        "theory": theory_desc,
        "ensemble": {
            "widths": widths,
            "networks": nets_l,
            "backend": backends,
            "sampler": samplers,
            "dtype": dtype,
            "groups": groups,
            "batch": batch or 0,
            "seed": seed,
        },
        "report": {"out": out, "plots": plots, "layer": layer or 0},
        "_out": out,
        "_plots": plots,
    }
    return spec


# ============================================================================ demo


def demo_spec(networks: int | None = None, quick: bool = False) -> Any:
    """The demo: a GELU MLP at criticality, depth 4, sampled at widths 16 and 64 (numpy)."""

    if quick:
        n_inputs, widths, nets, groups = 3, (16, 32), 1000 if networks is None else networks, 16
    else:
        n_inputs, widths, nets, groups = 4, (16, 64), 8000 if networks is None else networks, 32
    if nets < 2 * groups:
        raise ConfigError(f"--networks {nets} is too small: need >= {2 * groups}")
    # inputs on the sphere |x|^2/n0 = 0.3 (K_aa = C_b + 0.3 C_W ~ 0.77 at layer 1): there the 1/n
    # corrections K1, Theta1 are large compared with the sampling noise (near the fixed point
    # K* = (3 + sqrt 17)/2 they nearly vanish)
    x = _generate_inputs(n_inputs, 3, 0, 1.0, DEMO_MEAN_SQUARE)
    ens = [EnsembleSpec(w, nets, "numpy", "float64", groups, None, 0, "conditional") for w in widths]
    spec = RunSpec(
        activation=Activation("gelu"),
        depth=4,
        x=x,
        ensembles=ens,
        C_b=DEMO_CRITICAL["C_b"],
        C_W=DEMO_CRITICAL["C_W"],
        title="rgflow demo: GELU MLP at criticality" + (" (quick)" if quick else ""),
        inputs={"generate": {"n": n_inputs, "dim": 3, "seed": 0, "mean_square": DEMO_MEAN_SQUARE}},
    )
    spec.config = {
        "title": spec.title,
        "network": {
            "activation": {"name": "gelu"},
            "depth": 4,
            "critical": True,
            **DEMO_CRITICAL,
            "lambda_b": 1.0,
            "lambda_W": 1.0,
            "out_width": None,
        },
        "inputs": spec.inputs,
        "theory": {"ntk": True, "order": 1, "quad_order": 0},
        "ensemble": {
            "widths": list(widths),
            "networks": [nets] * len(widths),
            "backend": ["numpy"],
            "dtype": "float64",
            "groups": groups,
            "batch": 0,
            "seed": 0,
            "estimator": "conditional",
        },
        "report": {"out": "rgflow-report", "plots": True, "layer": 0},
    }
    return spec


# ============================================================================ commands


def _report(spec: Any, out: str, args: argparse.Namespace, command: str) -> int:

    residual = isinstance(spec, ResidualRunSpec)

    plots = not args.no_plots and spec.config.get("_plots", True)
    spec.config.pop("_plots", None)
    spec.config.pop("_out", None)
    if plots:
        try:
            pyplot()
        except ImportError as exc:
            raise _Failure(str(exc)) from None
    t0 = time.perf_counter()
    res = (run_residual_report if residual else run_report)(
        spec,
        out,
        plots=plots,
        progress=not args.quiet,
        log=None if args.quiet else sys.stderr,
        command=command,
    )
    print(format_residual_table(res) if residual else format_table(res))
    print(
        f"\nreport: {out}/ (results.json, theory.npz, ensemble_*.npz{', *.png' if res['plots'] else ''}); "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    return 0


class _Failure(RuntimeError):
    """A runtime failure with a message meant for the user (exit code 1)."""


def _cmd_demo(args: argparse.Namespace) -> int:
    spec = demo_spec(args.networks, args.quick)
    return _report(spec, args.out, args, "rgflow demo" + (" --quick" if args.quick else ""))


def schema_text() -> str:
    """The documented TOML schema (from this module's docstring)."""
    doc = __doc__ or ""
    start = doc.index(".. code-block:: toml")
    body = doc[start:].split("\n", 2)[2]
    return "\n".join(line[4:] if line.startswith("    ") else line for line in body.rstrip().splitlines())


def _cmd_run(args: argparse.Namespace) -> int:
    if args.schema:
        print(schema_text())
        return 0
    if args.config is None:
        raise ConfigError("rgflow run: the CONFIG.toml argument is missing (see 'rgflow run --help')")
    spec = load_config(args.config, networks=args.networks)
    out = args.out if args.out is not None else spec.config["_out"]
    return _report(spec, out, args, f"rgflow run {args.config}")


BUILTIN_TABLE = (
    "relu",
    "leaky_relu",
    "linear",
    "gelu",
    "swish",
    "tanh",
    "erf",
    "sin",
    "elu",
    "softplus",
    "sigmoid",
    "monomial",
)


def _cmd_critical(args: argparse.Namespace) -> int:
    acts = [parse_activation(a, "ACTIVATION") for a in args.activation] if args.activation else None

    if acts is None:
        acts = [Activation(n) for n in BUILTIN_TABLE]

    def f(v: Any, w: int, p: int = 10) -> str:
        try:
            return f"{float(v):>{w}.{p}g}"
        except (TypeError, ValueError):
            return f"{'—':>{w}}"

    head = f"{'activation':<24}{'class':<17}{'C_b':>14}{'C_W':>14}{'K*':>14}{'χ_∥':>9}{'χ_⊥':>9}"
    print(head)
    print("-" * len(head))
    failed = False
    for act in acts:
        name = act.name + ("(" + ", ".join(f"{k}={v:g}" for k, v in act.params.items()) + ")" if act.params else "")
        try:
            c = find_critical(act)
        except (ValueError, ArithmeticError, NotImplementedError) as exc:
            print(f"{name:<24}{'none':<17}  {' '.join(str(exc).split())}")
            continue
        except Exception as exc:  # one bad row should not hide the others
            print(f"{name:<24}{'error':<17}  {type(exc).__name__}: {' '.join(str(exc).split())}")
            failed = True
            continue
        cls = str(getattr(c, "universality_class", "") or "")
        reason = str(getattr(c, "reason", "") or "")
        if c.C_b is None or c.C_W is None:
            print(f"{name:<24}{cls or 'none':<17}  {reason}")
            continue
        ks = getattr(c, "K_star", None)
        ks_s = f"{'line':>14}" if ks is None and cls == "scale-invariant" else f(ks, 14)
        print(
            f"{name:<24}{cls:<17}{f(c.C_b, 14)}{f(c.C_W, 14)}{ks_s}"
            f"{f(getattr(c, 'chi_parallel', None), 9, 6)}{f(getattr(c, 'chi_perp', None), 9, 6)}"
        )
        if args.verbose:
            for line in (reason, *getattr(c, "notes", ())):
                if line:
                    print(f"{'':<24}  {line}")
    if not args.verbose:
        print("\nK* 'line': scale-invariant activations have a line of fixed points K* = |x|^2/(n0 A_2) (PDLT 5.66);")
        print("'rgflow critical -v' prints the reasons and notes.")
    return 1 if failed else 0


# ============================================================================ parser and main


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rgflow",
        description=(
            "Finite-width effective theory of deep MLPs at initialisation (Roberts & Yaida): infinite-width and "
            "first-order (1/n) kernels K, Θ, V, D, F, A, B, checked against ensembles of sampled networks."
        ),
        epilog=(
            "examples:\n"
            "  rgflow demo                      # GELU at criticality; report in ./rgflow-report/\n"
            "  rgflow run examples/gelu_critical.toml --out my-report\n"
            "  rgflow critical gelu leaky_relu:slope=0.2\n\n"
            "exit codes: 0 success, 2 bad usage or configuration, 1 failure"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    p.add_argument("--version", action="version", version=f"rgflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, out_default: str | None) -> None:
        sp.add_argument(
            "--out",
            metavar="DIR",
            default=out_default,
            help="report folder (default: %(default)s)"
            if out_default
            else "report folder (default: report.out of the configuration, else rgflow-report)",
        )
        sp.add_argument(
            "--networks",
            type=int,
            metavar="N",
            default=None,
            help="networks sampled per ensemble (overrides the default or the configuration)",
        )
        sp.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
        sp.add_argument("--quiet", action="store_true", help="no progress messages on stderr")

    d = sub.add_parser(
        "demo",
        help="GELU MLP at criticality: theory vs sampled networks, with a report folder",
        description=(
            "Runs the built-in demo with no files: a GELU MLP at criticality (C_b=0.17292239, C_W=1.98305826), "
            "depth 4, 4 random inputs on the sphere |x|^2 = 0.9 in 3 dimensions. Computes the infinite-width and "
            "first-order theory of "
            "K, Θ, V, D, F, A, B, samples 8000 networks at hidden widths 16 and 64 (numpy backend), prints a "
            "table (theory, theory + 1/n, sampled ± stderr, |z|, and an n→∞ fit over the two widths) and writes a "
            "report folder with results.json, the tensors (.npz) and PNG plots. Takes about a minute on 2 CPU cores "
            "(--networks N trades time for precision)."
        ),
    )
    common(d, "rgflow-report")
    d.add_argument(
        "--quick",
        action="store_true",
        help="a smoke-test version: 3 inputs, widths 16 and 32, 1000 networks (a few seconds)",
    )
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser(
        "run",
        help="theory vs sampled networks for a network described in a TOML file",
        description=(
            "Reads CONFIG.toml ([network], [inputs], [theory], [ensemble], [report]; 'rgflow run --schema' "
            "prints every key, examples/gelu_critical.toml is a full example), computes the theory, samples the "
            "ensembles and writes the report folder, as 'rgflow demo' does."
        ),
        epilog=(
            "minimal configuration:\n"
            '  [network]\n  activation = "relu"\n  depth = 3\n  C_W = 2.0\n'
            "  [inputs]\n  generate = {n = 3, dim = 2, seed = 0}\n"
            "  [ensemble]\n  widths = [32]\n  networks = 2000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("config", metavar="CONFIG.toml", nargs="?", help="the configuration file")
    r.add_argument("--schema", action="store_true", help="print the configuration schema (all keys) and exit")
    common(r, None)
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser(
        "critical",
        help="critical initialisation hyperparameters (C_b, C_W) and universality classes",
        description=(
            "Prints the criticality table: universality class, critical C_b and C_W, the fixed point K* and the "
            "susceptibilities χ_∥, χ_⊥ there. Activations without a critical point are listed as 'none'."
        ),
    )
    c.add_argument(
        "activation",
        nargs="*",
        metavar="ACTIVATION",
        help="activation names, optionally with parameters as name:key=value (default: all built-ins)",
    )
    c.add_argument("-v", "--verbose", action="store_true", help="also print the reason and notes for each activation")
    c.set_defaults(func=_cmd_critical)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 bad usage or configuration)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "networks", None) is not None and args.networks < 2:
            raise ConfigError(f"--networks must be >= 2, got {args.networks}")
        return int(args.func(args))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ConfigError as exc:
        if debug:
            traceback.print_exc()
        msg = str(exc)
        print(msg if msg.startswith("rgflow") else f"rgflow: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rgflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (traceback with --debug)
        if debug:
            traceback.print_exc()
        text = " ".join(str(exc).split()) or "(no message)"
        kind = "" if isinstance(exc, _Failure) else f"{type(exc).__name__}: "
        print(f"rgflow: error: {kind}{text} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
