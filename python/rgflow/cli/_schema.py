"""The configuration schema of ``rgflow run``: one typed dataclass per TOML table.

This module is the single source of the configuration format.  Each field is declared with
:func:`key`: its Python type (what :mod:`._validate` checks a TOML value against and converts it
to), default, one-line help, the architectures it applies to, bounds and the example value that
``rgflow run --schema`` prints.  Rules that involve several keys of one table (exactly one of,
conflicts, required unless) are the ``RULES`` of the table; the few checks that need other tables
(per-layer lengths, widths against the depth, networks against groups) are the ``check`` of a key.
:mod:`._validate` walks these declarations generically; :mod:`._docs` renders them as the commented
example of ``rgflow run --schema`` and as the README's configuration section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ..activations import Activation

__all__ = [
    "ARCHITECTURES",
    "REQUIRED",
    "Arch",
    "ByArch",
    "Config",
    "ConfigError",
    "Conflicts",
    "Ensemble",
    "ExactlyOne",
    "Generate",
    "Inputs",
    "Kernel",
    "Key",
    "LearnConfig",
    "LearnData",
    "LearnGenerate",
    "LearnReport",
    "Learning",
    "Evidence",
    "Network",
    "Report",
    "RequiredUnless",
    "Rule",
    "Theory",
]

Arch = Literal["mlp", "resmlp", "preresnet"]
ARCHITECTURES: tuple[Arch, ...] = ("mlp", "resmlp", "preresnet")
RESIDUAL: tuple[Arch, ...] = ("resmlp", "preresnet")
Backend = Literal["numpy", "jax"]
Sampler = Literal["block", "weights"]
#: Converted values so far, by key path ("network.depth", ...): what checks look at.
Values = Mapping[str, object]


class ConfigError(ValueError):
    """A bad configuration or command line (exit code 2)."""


def fail(path: str, message: str) -> ConfigError:
    """The error for key ``path``: ``'path' message``."""
    return ConfigError(f"'{path}' {message}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key that must be given (in the architectures it applies to).
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class ByArch:
    """An example value that depends on the architecture."""

    values: Mapping[str, object]


Check = Callable[[Any, str, Values], None]


@dataclass(frozen=True)
class Key:
    """The declaration of one configuration key (``dataclasses.field`` metadata)."""

    help: str
    default: object = REQUIRED
    archs: tuple[Arch, ...] = ARCHITECTURES
    ge: float | None = None
    gt: float | None = None
    le: str | None = None  # another key's path: the value must not exceed it
    per_layer: bool = False  # a number, or a list of network.depth numbers
    nonempty: bool = False  # lists: at least one entry
    example: object = None  # for ``--schema`` (None: the default); ByArch for one per architecture
    commented: tuple[Arch, ...] = ()  # architectures whose example shows this key commented out
    type_text: str | None = None  # the type as documented (default: from the annotation)
    default_text: str | None = None  # the default as documented (default: the default's TOML text)
    check: Check | None = None  # a check that needs other keys: raises ConfigError naming the key

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def example_for(self, arch: str) -> object:
        ex = self.example.values.get(arch) if isinstance(self.example, ByArch) else self.example
        return self.default if ex is None else ex


def key(help: str, default: object = REQUIRED, **kw: Any) -> Any:
    """A schema field: the dataclass field of one configuration key (see :class:`Key`)."""
    return field(metadata={"key": Key(help, default, **kw)})


# ============================================================================ rules


class Rule:
    """A rule over the keys of one table: ``given`` are the keys present in the TOML table, ``values`` the
    converted values of the table, ``applicable`` the keys that apply to the architecture ``arch``."""

    keys: tuple[str, ...] = ()

    @property
    def mentions(self) -> tuple[str, ...]:
        """The keys this rule is about."""
        return self.keys

    def apply(self, given: set[str], values: Mapping[str, object], where: str, arch: str, applicable: set[str]) -> None:
        raise NotImplementedError

    def text(self, where: str) -> str:
        raise NotImplementedError


def _q(where: str, k: str) -> str:
    return f"'{where}.{k}'" if where else f"'{k}'"


@dataclass(frozen=True)
class ExactlyOne(Rule):
    """Exactly one of ``keys`` (of those that apply to the architecture) must be given."""

    keys: tuple[str, ...]

    def apply(self, given: set[str], values: Mapping[str, object], where: str, arch: str, applicable: set[str]) -> None:
        keys = [k for k in self.keys if k in applicable]
        if len(keys) > 1 and sum(k in given for k in keys) != 1:
            names = ", ".join(_q(where, k) for k in keys[:-1]) + " or " + _q(where, keys[-1])
            raise ConfigError(f"[{where}] of architecture = {arch!r} needs exactly one of {names}")

    def text(self, where: str) -> str:
        return "exactly one of " + ", ".join(f"`{where}.{k}`" for k in self.keys)


@dataclass(frozen=True)
class Conflicts(Rule):
    """``key`` set (and not false) excludes ``others``."""

    key: str
    others: tuple[str, ...]
    reason: str = ""

    def apply(self, given: set[str], values: Mapping[str, object], where: str, arch: str, applicable: set[str]) -> None:
        if self.key in given and values[self.key] is not False:
            for k in self.others:
                if k in given:
                    raise ConfigError(
                        f"{_q(where, k)} conflicts with {_q(where, self.key)}"
                        + (f" ({self.reason})" if self.reason else "")
                    )

    @property
    def mentions(self) -> tuple[str, ...]:
        return (self.key, *self.others)

    def text(self, where: str) -> str:
        return f"`{where}.{self.key}` excludes " + ", ".join(f"`{where}.{k}`" for k in self.others)


@dataclass(frozen=True)
class RequiredUnless(Rule):
    """``key`` is required unless ``unless`` is true (where that applies)."""

    key: str
    unless: str
    unless_archs: tuple[Arch, ...] = ARCHITECTURES  # where ``unless`` applies

    def apply(self, given: set[str], values: Mapping[str, object], where: str, arch: str, applicable: set[str]) -> None:
        if self.key not in given and values.get(self.unless) is not True:
            alt = f" (or set {_q(where, self.unless)} = true)" if arch in self.unless_archs else ""
            raise ConfigError(f"missing key {_q(where, self.key)}{alt}")

    @property
    def mentions(self) -> tuple[str, ...]:
        return (self.key, self.unless)

    def text(self, where: str) -> str:
        return f"`{where}.{self.key}` is required unless `{where}.{self.unless} = true`"


# ============================================================================ checks


def _arch(values: Values) -> str:
    return str(values["network.architecture"])


def _scalar_for_preresnet(v: object, path: str, values: Values) -> None:
    if _arch(values) == "preresnet" and isinstance(v, list):
        raise fail(path, "must be one number for architecture = 'preresnet'")


def _gamma(v: object, path: str, values: Values) -> None:
    if values.get("network.critical") is True and isinstance(v, list):
        raise fail(path, "must be one number with 'network.critical = true' (B.19)-(B.21)")


def _kernel(v: object, path: str, values: Values) -> None:
    """Square, symmetric and positive semi-definite (the matrix form or {n, diagonal, off_diagonal})."""
    if v is None:
        return
    if isinstance(v, Kernel):
        k = np.full((v.n, v.n), v.off_diagonal)
        np.fill_diagonal(k, v.diagonal)
    else:
        assert isinstance(v, list)
        for i, row in enumerate(v):
            if len(row) != len(v):
                raise fail(path, f"must be square: row {i} has {len(row)} entries, expected {len(v)}")
        if not v:
            raise fail(path, "must not be empty")
        k = np.array(v, dtype=float)
    scale = max(1.0, float(np.abs(k).max()))
    if np.abs(k - k.T).max() > 1e-12 * scale:
        raise fail(path, "must be symmetric")
    wmin = float(np.linalg.eigvalsh(k).min())
    if wmin < -1e-9 * scale:
        raise fail(
            path,
            f"is not positive semi-definite (smallest eigenvalue {wmin:.3g}); for the "
            "{n, diagonal, off_diagonal} form use -diagonal/(n-1) <= off_diagonal <= diagonal",
        )


def _paper_gh(v: int, path: str, values: Values) -> None:
    if v == 1:
        raise fail(path, "must be 0 (off) or >= 2 Gauss-Hermite points, e.g. 32")


def _widths(v: list[int | list[int]], path: str, values: Values) -> None:
    arch, depth = _arch(values), values["network.depth"]
    assert isinstance(depth, int)
    for i, w in enumerate(v):
        if arch != "mlp" and isinstance(w, list):
            raise fail(f"{path}[{i}]", f"must be an integer for architecture = {arch!r} (every layer has that width)")
        if arch == "mlp" and isinstance(w, list) and len(w) != depth - 1:
            raise fail(f"{path}[{i}]", f"has {len(w)} entries; depth {depth} means {depth - 1} hidden layers")
        if arch == "resmlp" and isinstance(w, int) and w < 2:
            raise fail(f"{path}[{i}]", f"must be >= 2 for architecture = 'resmlp', got {w}")


def _networks(v: int | list[int], path: str, values: Values) -> None:
    """``<table>.networks`` against ``<table>.widths`` and ``<table>.groups`` ([ensemble] or [learning])."""
    table = path.rsplit(".", 1)[0]
    widths, groups = values[f"{table}.widths"], values[f"{table}.groups"]
    assert isinstance(widths, list) and isinstance(groups, int)
    if isinstance(v, list) and len(v) != len(widths):
        raise fail(path, f"has {len(v)} entries but there are {len(widths)} widths")
    for i, n in enumerate(v if isinstance(v, list) else [v]):
        if n < 2 * groups:
            p = f"{path}[{i}]" if isinstance(v, list) else path
            raise fail(p, f"= {n} is too small for {table}.groups = {groups} (need >= {2 * groups})")


def _dtype(v: str, path: str, values: Values) -> None:
    if _arch(values) == "resmlp" and v != "float64":
        raise fail(path, "must be 'float64' for architecture = 'resmlp'")


# ============================================================================ tables

_MLP: tuple[Arch, ...] = ("mlp",)
_NOT_PRE: tuple[Arch, ...] = ("mlp", "resmlp")
_PRE: tuple[Arch, ...] = ("preresnet",)
_VAR = "number or list of depth numbers"


@dataclass(frozen=True)
class Network:
    """``[network]``: the architecture and its hyperparameters."""

    architecture: Arch = key(
        "the network: MLP, residual MLP (PDLT App. B) or pre-activation ResNet φ' = φ + εWσ(φ)",
        "mlp",
        example=ByArch({"resmlp": "resmlp", "preresnet": "preresnet"}),
    )
    activation: Activation = key(
        'built-in name, or a table {name = "leaky_relu", slope = 0.1}',
        example=ByArch({"mlp": "gelu", "resmlp": "relu", "preresnet": "tanh"}),
        type_text="name or table",
    )
    depth: int = key(
        "number of layers L (preresnet: residual blocks)",
        ge=1,
        example=ByArch({"mlp": 4, "resmlp": 3, "preresnet": 800}),
    )
    critical: bool = key(
        "C_b, C_W at criticality (mlp: rgflow.critical; resmlp: C_W = (1 - γ²)/A₂, B.19-B.21)",
        False,
        archs=_NOT_PRE,
        example=True,
        commented=ARCHITECTURES,
    )
    C_b: float | list[float] = key(
        "bias variance (preresnet: one number; enters only through inputs x: K0 = C_b + C_W x·xᵀ/n0)",
        0.0,
        ge=0,
        per_layer=True,
        type_text=_VAR,
        example=ByArch({"mlp": 0.17292239}),
        check=_scalar_for_preresnet,
    )
    C_W: float | list[float] | None = key(
        "weight variance, Var W = C_W/n_{l-1}",
        None,
        gt=0,
        per_layer=True,
        type_text=_VAR,
        default_text="required",
        example=ByArch({"mlp": 1.98305826, "resmlp": 1.0, "preresnet": 2.0}),
        check=_scalar_for_preresnet,
    )
    lambda_b: float | list[float] = key("NTK bias learning rate", 1.0, archs=_MLP, ge=0, per_layer=True, type_text=_VAR)
    lambda_W: float | list[float] = key(
        "NTK weight learning rate", 1.0, archs=_MLP, ge=0, per_layer=True, type_text=_VAR
    )
    out_width: int | None = key(
        "sampler output width n_L (the theory does not use it)", None, archs=_MLP, ge=1, example=1,
        default_text="last hidden width",
    )  # fmt: skip
    gamma: float | list[float] | None = key(
        "residual weight γ (B.3)", archs=("resmlp",), ge=0, per_layer=True, type_text=_VAR, example=0.5, check=_gamma
    )
    epsilon: float | None = key("branch scale ε of φ' = φ + εWσ(φ)", None, archs=_PRE, gt=0, example=0.05)
    T: float | None = key("total time T = ε²L, instead of epsilon", None, archs=_PRE, gt=0, example=2.0, commented=_PRE)

    RULES: ClassVar[tuple[Rule, ...]] = (
        ExactlyOne(("epsilon", "T")),
        Conflicts("critical", ("C_b", "C_W"), "which sets C_b and C_W"),
        RequiredUnless("C_W", "critical", unless_archs=_NOT_PRE),
    )


@dataclass(frozen=True)
class Generate:
    """``inputs.generate``: random inputs."""

    n: int = key("number of inputs N", ge=1, example=4)
    dim: int = key("input dimension n0", ge=1, example=3)
    seed: int = key("random seed", 0, ge=0)
    scale: float = key("x = scale · standard normal (N, dim)", 1.0)
    mean_square: float | None = key("instead of scale: rows rescaled to |x|²/dim = mean_square", None, gt=0)

    RULES: ClassVar[tuple[Rule, ...]] = (Conflicts("mean_square", ("scale",), "they exclude each other"),)


@dataclass(frozen=True)
class Kernel:
    """``inputs.kernel`` as a table: d·I + o·(11ᵀ − I)."""

    n: int = key("number of inputs N", ge=1, example=4)
    diagonal: float = key("diagonal of K0(0)", example=2.0)
    off_diagonal: float = key("off-diagonal of K0(0)", example=0.6)


@dataclass(frozen=True)
class Inputs:
    """``[inputs]``: the inputs x, or (preresnet) the input kernel itself."""

    generate: Generate | None = key(
        "random inputs (a table, keys below)", None, example={"n": 4, "dim": 3, "seed": 0, "scale": 1.0},
        commented=_PRE, type_text="table",
    )  # fmt: skip
    file: str | None = key(
        "an (N, n0) array saved with numpy.save, relative to the configuration file",
        None,
        example="x.npy",
        commented=ARCHITECTURES,
    )
    kernel: Kernel | list[list[float]] | None = key(
        "the input kernel K0(0): a symmetric PSD list of rows, or a table (keys below)",
        None,
        archs=_PRE,
        example={"n": 4, "diagonal": 2.0, "off_diagonal": 0.6},
        type_text="list of rows or table",
        check=_kernel,
    )

    RULES: ClassVar[tuple[Rule, ...]] = (ExactlyOne(("generate", "file", "kernel")),)


@dataclass(frozen=True)
class Theory:
    """``[theory]``: what theory to compute and how."""

    ntk: bool = key("also the NTK family (Θ, Θ1, D, F, A, B)", True, archs=_MLP)
    dntk: bool = key(
        "also the dNTK family P, Q, R, S, T, U (needs ntk, order = 1; sampled too for smooth activations; "
        "R-U NaN for kinked ones)",
        False,
        archs=_MLP,
    )
    order: Literal[0, 1] = key("0: infinite width only, 1: first order in 1/n", 1, archs=_NOT_PRE)
    quad_order: int = key("quadrature nodes per piece (0: the core's default)", 0, ge=0)
    expectations: Literal["auto", "quadrature"] = key(
        "auto: closed forms where they exist (relu, gelu, erf, ...), else quadrature", "auto", archs=_MLP
    )
    corrected: bool = key("the S-corrected vertex (false: the book's B.25)", True, archs=("resmlp",))
    method: Literal["ode", "discrete"] = key(
        "ode: Dormand-Prince on the continuous-depth ODEs; discrete: block by block", "ode", archs=_PRE
    )
    closure: Literal["g_only", "connected"] = key(
        "K1 closure: g_only (the spec's K1,EFT) or connected", "g_only", archs=_PRE
    )
    every: int | None = key(
        "checkpoints ℓ = 0, every, 2·every, ..., L",
        None,
        archs=_PRE,
        ge=1,
        le="network.depth",
        example=100,
        default_text="depth/8",
    )
    rtol: float = key("ODE relative tolerance", 1e-8, archs=_PRE, gt=0)
    atol: float = key("ODE absolute tolerance", 1e-10, archs=_PRE, gt=0)
    paper_gh_order: int = key(
        "also the published scheme (forward Euler, plain Gauss-Hermite with this many points); 0: off",
        0,
        archs=_PRE,
        ge=0,
        example=32,
        check=_paper_gh,
    )


@dataclass(frozen=True)
class Ensemble:
    """``[ensemble]``: the sampled networks."""

    widths: list[int | list[int]] = key(
        "hidden widths to sample (mlp: an int or a list of depth-1 ints each; residual: ints)",
        ge=1,
        nonempty=True,
        example=ByArch({"mlp": [16, 64], "resmlp": [32], "preresnet": [64]}),
        type_text="list of ints",
        check=_widths,
    )
    networks: int | list[int] = key(
        "networks per ensemble, or one per width (--networks overrides)",
        4000,
        ge=2,
        example=ByArch({"mlp": 8000, "preresnet": 16000}),
        type_text="int or list",
        check=_networks,
    )
    backend: Backend | list[Backend] = key("sampler backend, or a list: every width with each", "numpy", nonempty=True)
    dtype: Literal["float64", "float32"] = key(
        "forward pass precision (sums in float64; resmlp: float64 only)", "float64", check=_dtype
    )
    groups: int = key("batch-means groups for standard errors", 32, ge=2)
    batch: int = key("networks per batch (0: automatic)", 0, ge=0)
    seed: int = key("random seed", 0, ge=0)
    estimator: Literal["conditional", "direct"] = key("ensemble estimator", "conditional", archs=_MLP)
    sampler: Sampler | list[Sampler] = key(
        "block: the exact block law, weights: dense W, or a list of both", "block", archs=_PRE, nonempty=True
    )


@dataclass(frozen=True)
class Report:
    """``[report]``: the output."""

    out: str = key("output folder (--out overrides)", "rgflow-report")
    plots: bool = key("PNG plots (needs matplotlib; --no-plots overrides)", True)
    layer: int = key("layer of the printed table (0: the last)", 0, archs=_NOT_PRE, ge=0, le="network.depth")


@dataclass(frozen=True)
class Config:
    """A whole configuration file."""

    title: str = key(
        "table and plot titles",
        "rgflow report",
        example=ByArch(
            {
                "mlp": "GELU MLP at criticality",
                "resmlp": "ReLU residual MLP",
                "preresnet": "Pre-activation ResNet (tanh)",
            }
        ),
    )
    network: Network = key("the network")
    inputs: Inputs = key("the inputs")
    theory: Theory = key("the theory", {})
    ensemble: Ensemble = key("the sampled ensembles")
    report: Report = key("the report", {})


# ============================================================================ rgflow learn


def _widths_learn(v: list[int], path: str, values: Values) -> None:
    if len(set(v)) != len(v):
        raise fail(path, f"has repeated widths {v}; give each hidden width once")


def _evidence_grid(v: list[float], path: str, values: Values) -> None:
    if len(v) < 2:
        raise fail(path, "needs at least 2 values for a grid")


@dataclass(frozen=True)
class LearnGenerate:
    """``data.generate``: random inputs on a sphere and targets of a random teacher."""

    n_train: int = key("number of training inputs N_A", ge=1, example=4)
    n_test: int = key("number of test inputs N_B", ge=1, example=2)
    dim: int = key("input dimension n0", ge=1, example=3)
    seed: int = key("random seed (inputs and teacher)", 0, ge=0)
    mean_square: float = key("rows rescaled to |x|²/dim = mean_square", 1.0, gt=0)
    target: Literal["sin", "tanh", "linear"] = key(
        "y = f(w·x/√dim) per output, w a standard normal teacher", "sin", example="sin"
    )
    outputs: int = key("number of outputs n_L", 1, ge=1)


@dataclass(frozen=True)
class LearnData:
    """``[data]``: training and test inputs and targets."""

    generate: LearnGenerate | None = key(
        "random inputs and teacher targets (a table, keys below)",
        None,
        example={"n_train": 4, "n_test": 2, "dim": 3, "seed": 0, "mean_square": 0.5, "target": "sin"},
        type_text="table",
    )
    file: str | None = key(
        "an .npz with arrays x_train (N_A, n0), y_train (N_A, n_L), x_test (N_B, n0) and optionally y_test, "
        "relative to the configuration file",
        None,
        example="data.npz",
        commented=ARCHITECTURES,
    )

    RULES: ClassVar[tuple[Rule, ...]] = (ExactlyOne(("generate", "file")),)


@dataclass(frozen=True)
class Evidence:
    """``learning.evidence``: the grid of the evidence (6.34), the same C_b, C_W in every layer."""

    C_b: list[float] = key("bias variances", ge=0, nonempty=True, example=[0.0, 0.1, 0.2], check=_evidence_grid)
    C_W: list[float] = key("weight variances", gt=0, nonempty=True, example=[1.0, 1.5, 2.0], check=_evidence_grid)


@dataclass(frozen=True)
class Learning:
    """``[learning]``: the algorithm, the widths and the ensembles that judge the predictions."""

    algorithm: Literal["gd", "bayes"] = key(
        "gd: fully trained by gradient descent (10.40), (∞.160)-(∞.165); bayes: the posterior (6.64), (6.87)",
        "gd",
    )
    widths: list[int] = key("hidden widths (every hidden layer)", ge=1, nonempty=True, example=[16, 32, 64],
                            type_text="list of ints", check=_widths_learn)  # fmt: skip
    networks: int | list[int] = key(
        "networks per ensemble, or one per width (--networks overrides)",
        400,
        ge=2,
        type_text="int or list",
        check=_networks,
    )
    groups: int = key("batch-means groups for standard errors", 20, ge=2)
    backend: Backend = key("trainer backend (gd)", "numpy")
    seed: int = key("random seed of the ensembles", 0, ge=0)
    lr: float | None = key("global learning rate η (gd; default 1/λ_max of the training NTK)", None, gt=0,
                           example=0.5, commented=ARCHITECTURES)  # fmt: skip
    tol: float = key("gd: train each network until its training loss is below tol", 1e-12, gt=0)
    evidence: Evidence | None = key(
        "also the evidence (6.34) over a (C_b, C_W) grid (a table, keys below)",
        None,
        example={"C_b": [0.0, 0.1, 0.2], "C_W": [1.0, 1.5, 2.0]},
        commented=ARCHITECTURES,
        type_text="table",
    )


@dataclass(frozen=True)
class LearnReport:
    """``[report]`` of ``rgflow learn``."""

    out: str = key("output folder (--out overrides)", "rgflow-learn")
    plots: bool = key("PNG plots (needs matplotlib; --no-plots overrides)", True)


@dataclass(frozen=True)
class LearnConfig:
    """A whole ``rgflow learn`` configuration file (network.architecture = 'mlp' only)."""

    title: str = key("table and plot titles", "rgflow learn", example="GELU MLP at criticality: trained networks")
    network: Network = key("the network (hidden widths come from learning.widths)")
    data: LearnData = key("the data")
    learning: Learning = key("the predictions and the ensembles")
    report: LearnReport = key("the report", {})
