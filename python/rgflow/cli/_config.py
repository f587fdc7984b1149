"""From a configuration file to the report's run specification.

:func:`load_config` reads TOML, :func:`~._validate.validate` checks it against the schema
(:mod:`._schema`), and :func:`build_spec` turns the typed :class:`~._schema.Config` into a
:class:`rgflow.report.RunSpec` (``mlp``) or :class:`rgflow.report.ResidualRunSpec` (``resmlp``,
``preresnet``): inputs generated or loaded, criticality resolved, one ensemble per width, backend
and sampler.  ``rgflow run --schema`` prints every key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import Activation
from ..criticality import critical as find_critical
from ..models import ResMLP
from ..report import EnsembleSpec, ResidualEnsembleSpec, ResidualRunSpec, RunSpec
from ._schema import Config, ConfigError, Inputs, Kernel
from ._validate import fields, validate

__all__ = [
    "load_config",
    "read_toml",
    "config_from_dict",
    "build_spec",
    "demo_spec",
    "DEMO_CRITICAL",
    "generate_inputs",
]

#: GELU criticality (PDLT eq. 5.105): K* = (3 + sqrt 17)/2.
DEMO_CRITICAL = {"C_b": 0.17292239, "C_W": 1.98305826}
#: Demo inputs: random directions with |x|^2/n0 = DEMO_MEAN_SQUARE.
DEMO_MEAN_SQUARE = 0.3


def load_config(path: str | Path, *, networks: int | None = None) -> RunSpec | ResidualRunSpec:
    """Read and validate a TOML configuration into a :class:`rgflow.report.RunSpec` (or ResidualRunSpec).

    Raises :class:`ConfigError` naming the offending key.  ``networks`` overrides ``ensemble.networks``.
    """
    path = Path(path)
    return config_from_dict(read_toml(path), base=path.resolve().parent, networks=networks)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document at ``path``, or a ConfigError (missing file, invalid TOML)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no such configuration file: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def config_from_dict(
    raw: dict[str, Any], *, base: Path | None = None, networks: int | None = None
) -> RunSpec | ResidualRunSpec:
    """Validate a configuration dictionary (the parsed TOML) into a run specification."""
    if networks is not None and isinstance(raw.get("ensemble"), dict):
        raw = {**raw, "ensemble": {**raw["ensemble"], "networks": networks}}
    return build_spec(validate(raw), base or Path.cwd())


def generate_inputs(n: int, dim: int, seed: int, scale: float, mean_square: float | None) -> np.ndarray:
    """Standard normal (n, dim) inputs times ``scale``, or rescaled rows with |x|^2/dim = ``mean_square``."""
    x = np.random.default_rng(seed).standard_normal((n, dim))
    if mean_square is None:
        return scale * x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0) * np.sqrt(mean_square * dim)


def _inputs(inp: Inputs, base: Path) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """(x, kernel, description) from [inputs]: generated x, x from a file, or the kernel itself."""
    if inp.generate is not None:
        g = inp.generate
        x = generate_inputs(g.n, g.dim, g.seed, g.scale, g.mean_square)
        how = {"mean_square": g.mean_square} if g.mean_square is not None else {"scale": g.scale}
        return x, None, {"generate": {"n": g.n, "dim": g.dim, "seed": g.seed, **how}}
    if isinstance(inp.kernel, Kernel):
        k = np.full((inp.kernel.n, inp.kernel.n), inp.kernel.off_diagonal)
        np.fill_diagonal(k, inp.kernel.diagonal)
        return None, k, {"kernel": dataclasses.asdict(inp.kernel)}
    if inp.kernel is not None:
        return None, np.array(inp.kernel, dtype=float), {"kernel": inp.kernel}
    assert inp.file is not None
    path = Path(inp.file) if Path(inp.file).is_absolute() else base / inp.file
    if not path.is_file():
        raise ConfigError(f"'inputs.file': no such file {str(path)!r}")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head != b"\x93NUMPY":
        kind = "a .npz archive" if head.startswith(b"PK") else f"not a .npy file (it starts with {head!r})"
        raise ConfigError(
            f"'inputs.file': {str(path)!r} is {kind}; give one (N, n0) array saved with numpy.save('x.npy', x) "
            "(a text file converts with numpy.save('x.npy', numpy.loadtxt('x.txt', ndmin=2)))"
        )
    try:
        x = np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"'inputs.file': cannot read {str(path)!r} as a numeric .npy array ({exc}); "
            "save a float array with numpy.save('x.npy', x)"
        ) from None
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ConfigError(f"'inputs.file': expected an (N, n0) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ConfigError("'inputs.file': the array must be numeric and finite")
    return x.astype(float), None, {"file": str(path)}


def _resolved(cfg: Config) -> dict[str, Any]:
    """The configuration as results.json records it: every key that applies, with its value in effect."""
    arch = cfg.network.architecture

    def plain(v: object) -> object:
        if isinstance(v, Activation):
            return v.to_dict() if not v.is_custom else str(v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {k: plain(e) for k, e in dataclasses.asdict(v).items()}
        return v

    out: dict[str, Any] = {"title": cfg.title}
    for sec in ("network", "theory", "ensemble", "report"):
        tbl = getattr(cfg, sec)
        out[sec] = {name: plain(getattr(tbl, name)) for name, _, meta in fields(type(tbl)) if arch in meta.archs}
    return out


def build_spec(cfg: Config, base: Path) -> RunSpec | ResidualRunSpec:
    """The run specification of a validated configuration (``base``: the folder of relative paths)."""
    nw, th, en, rp = cfg.network, cfg.theory, cfg.ensemble, cfg.report
    arch, depth = nw.architecture, nw.depth
    x, kernel, inputs_desc = _inputs(cfg.inputs, base)
    resolved = _resolved(cfg)
    widths = en.widths
    if arch == "mlp" and depth == 1:
        widths = [[] for _ in widths]
    nets = en.networks if isinstance(en.networks, list) else [en.networks] * len(widths)
    backends = en.backend if isinstance(en.backend, list) else [en.backend]
    batch = en.batch or None
    C_b: float | list[float] = nw.C_b
    C_W: float | list[float] = nw.C_W if nw.C_W is not None else 0.0
    spec: RunSpec | ResidualRunSpec
    try:
        if arch == "mlp":
            if nw.critical:
                crit = find_critical(nw.activation)
                if crit.C_b is None or crit.C_W is None:
                    raise ValueError(
                        f"{nw.activation!r} has no critical point ({crit.reason}); set network.C_b and "
                        "network.C_W instead of 'critical = true', or choose an activation with one "
                        "(e.g. 'tanh', 'relu', 'gelu'; 'rgflow critical' lists them)"
                    )
                C_b, C_W = float(crit.C_b), float(crit.C_W)
        elif arch == "resmlp" and nw.critical:
            assert nw.gamma is not None and not isinstance(nw.gamma, list)
            net = ResMLP.critical(nw.activation, depth, 2, nw.gamma)
            C_b, C_W = net.C_b[0], net.C_W[0]
    except ValueError as exc:
        raise ConfigError(f"'network.critical': {exc}") from None
    resolved["network"].update(C_b=C_b, C_W=C_W)
    resolved["inputs"] = inputs_desc
    resolved["ensemble"].update(widths=widths, networks=nets, backend=backends)
    if arch == "mlp":
        assert x is not None
        if th.dntk and not (th.ntk and th.order == 1):
            raise ConfigError("'theory.dntk': the dNTK family needs theory.ntk = true and theory.order = 1")
        spec = RunSpec(
            activation=nw.activation,
            depth=depth,
            x=x,
            ensembles=[
                EnsembleSpec(w, n, b, en.dtype, en.groups, batch, en.seed, en.estimator)
                for w, n in zip(widths, nets, strict=True)
                for b in backends
            ],
            C_b=C_b,
            C_W=C_W,
            lambda_b=nw.lambda_b,
            lambda_W=nw.lambda_W,
            out_width=nw.out_width,
            title=cfg.title,
            ntk=th.ntk,
            dntk=th.dntk,
            order=th.order,
            quad_order=th.quad_order or None,
            method=th.expectations,
            layer=rp.layer or None,
            inputs=inputs_desc,
        )
    else:
        samplers = en.sampler if isinstance(en.sampler, list) else [en.sampler]
        kw: dict[str, Any] = {}
        if arch == "preresnet":
            eps = nw.epsilon if nw.epsilon is not None else math.sqrt((nw.T or 0.0) / depth)
            every = th.every if th.every is not None else max(1, depth // 8)
            kw.update(eps=eps, method=th.method, closure=th.closure, every=every, rtol=th.rtol, atol=th.atol)
            kw.update(paper_gh_order=th.paper_gh_order)
            resolved["network"].update(epsilon=eps, T=eps * eps * depth)
            resolved["theory"]["every"] = every
            resolved["ensemble"]["sampler"] = samplers
        else:
            kw.update(gamma=nw.gamma, order=th.order, corrected=th.corrected)
        plain = [w for w in widths if isinstance(w, int)]  # residual widths are plain ints (validated)
        spec = ResidualRunSpec(
            architecture=arch,
            activation=nw.activation,
            depth=depth,
            ensembles=[
                ResidualEnsembleSpec(w, n, b, en.dtype, en.groups, batch, en.seed, s)
                for w, n in zip(plain, nets, strict=True)
                for b in backends
                for s in samplers
            ],
            x=x,
            kernel=kernel,
            C_W=C_W,
            C_b=C_b,
            title=cfg.title,
            quad_order=th.quad_order or None,
            layer=(rp.layer or None) if arch == "resmlp" else None,
            inputs=inputs_desc,
            **kw,
        )
    try:  # the networks themselves (per-layer lengths, variances) and the input kernel
        if isinstance(spec, RunSpec):
            for es in spec.ensembles:
                spec.net(es)
        else:
            for res in spec.ensembles:
                pnet = spec.net(res.width)
            if arch == "preresnet":
                pnet.input_kernel(x, kernel)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[network]: {exc}") from None
    spec.config = {**resolved, "_out": rp.out, "_plots": rp.plots}
    return spec


def demo_spec(networks: int | None = None, quick: bool = False, dntk: bool = False) -> RunSpec:
    """The demo: a GELU MLP at criticality, depth 4, sampled at widths 16 and 64 (numpy)."""
    n_inputs, widths, nets, groups = (3, [16, 32], 1000, 16) if quick else (4, [16, 64], 8000, 32)
    nets = nets if networks is None else networks
    if nets < 2 * groups:
        raise ConfigError(f"--networks {nets} is too small: need >= {2 * groups}")
    # inputs on the sphere |x|^2/n0 = 0.3 (K_aa = C_b + 0.3 C_W ~ 0.77 at layer 1): there the 1/n
    # corrections K1, Theta1 are large compared with the sampling noise (near the fixed point
    # K* = (3 + sqrt 17)/2 they nearly vanish)
    raw = {
        "title": "rgflow demo: GELU MLP at criticality" + (" (quick)" if quick else ""),
        "network": {"activation": "gelu", "depth": 4, **DEMO_CRITICAL},
        "inputs": {"generate": {"n": n_inputs, "dim": 3, "seed": 0, "mean_square": DEMO_MEAN_SQUARE}},
        "ensemble": {"widths": widths, "networks": nets, "groups": groups},
        "theory": {"dntk": dntk},
    }
    spec = config_from_dict(raw)
    assert isinstance(spec, RunSpec)
    spec.config["network"]["critical"] = True  # the values given are GELU's critical point
    return spec
