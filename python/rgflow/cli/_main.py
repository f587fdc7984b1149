"""The ``rgflow`` command line: ``demo``, ``run CONFIG.toml`` and ``critical``.

Usage::

    rgflow demo [--out DIR] [--networks N] [--quick] [--dntk] [--no-learning] [--no-plots] [--quiet]
    rgflow run CONFIG.toml [--out DIR] [--networks N] [--no-plots] [--quiet]
                                      # architecture = "depthmup": trained depth sweeps (cli._depthmup)
    rgflow run --schema [mlp|resmlp|preresnet]   # every configuration key, as a commented example
    rgflow learn CONFIG.toml [--out DIR] [--networks N] [--no-plots] [--quiet]
    rgflow learn --schema                     # every key of a learning configuration
    rgflow critical [ACTIVATION ...]          # e.g. rgflow critical gelu leaky_relu:slope=0.2

Exit codes: 0 success, 2 bad usage or configuration, 1 any other failure.  Errors are one line
on stderr; ``rgflow --debug ...`` shows the traceback.  The configuration format is declared once,
in :mod:`._schema`; ``rgflow run --schema`` prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .._util.version import VERSION as __version__
from ..activations import Activation
from ..criticality import critical as find_critical
from ..report import (
    LearnSpec,
    ResidualRunSpec,
    RunSpec,
    format_learning_table,
    format_residual_table,
    format_table,
    pyplot,
    run_learning_report,
    run_report,
    run_residual_report,
)
from ._config import DEMO_CRITICAL, demo_spec, load_config
from ._depthmup import is_depthmup, read_toml, run_depthmup
from ._docs import schema_text
from ._learn import demo_learn_spec, load_learn_config
from ._schema import ARCHITECTURES, ConfigError, LearnConfig
from ._validate import parse_activation

__all__ = ["main", "build_parser", "load_config", "ConfigError", "DEMO_CRITICAL"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as :class:`ConfigError`."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see '{self.prog} --help')")


# ============================================================================ commands


def _plots_wanted(config: dict, args: argparse.Namespace) -> bool:
    """Whether to draw plots (--no-plots, report.plots), with matplotlib checked up front; drops the
    private ``_plots``/``_out`` entries from the configuration the report records."""
    plots = bool(not args.no_plots and config.get("_plots", True))
    config.pop("_plots", None)
    config.pop("_out", None)
    if plots:
        try:
            pyplot()
        except ImportError as exc:
            raise _Failure(str(exc)) from None
    return plots


def _report(spec: RunSpec | ResidualRunSpec, out: str, args: argparse.Namespace, command: str) -> int:
    plots = _plots_wanted(spec.config, args)
    t0 = time.perf_counter()
    log = None if args.quiet else sys.stderr
    if isinstance(spec, ResidualRunSpec):
        res = run_residual_report(spec, out, plots=plots, progress=not args.quiet, log=log, command=command)
        print(format_residual_table(res))
    else:
        res = run_report(spec, out, plots=plots, progress=not args.quiet, log=log, command=command)
        print(format_table(res))
    print(
        f"\nreport: {out}/ (results.json, theory.npz, ensemble_*.npz{', *.png' if res['plots'] else ''}); "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    return 0


class _Failure(RuntimeError):
    """A runtime failure with a message meant for the user (exit code 1)."""


def _learn_report(spec: LearnSpec, out: str, args: argparse.Namespace, command: str) -> int:
    plots = _plots_wanted(spec.config, args)
    t0 = time.perf_counter()
    res = run_learning_report(
        spec, out, plots=plots, progress=not args.quiet, log=None if args.quiet else sys.stderr, command=command
    )
    print(format_learning_table(res))
    print(
        f"\nlearning report: {out}/ (learning.json, learning.npz{', learning_*.png' if res['plots'] else ''}); "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    spec = demo_spec(args.networks, args.quick, args.dntk)
    flags = (" --quick" if args.quick else "") + (" --dntk" if args.dntk else "")
    code = _report(spec, args.out, args, "rgflow demo" + flags)
    if code or args.no_learning:
        return code
    print("\n== learning panel: what trained networks predict at finite width ==")
    lspec = demo_learn_spec(args.quick, args.networks)
    return _learn_report(lspec, str(Path(args.out) / "learning"), args, "rgflow demo" + flags)


def _cmd_learn(args: argparse.Namespace) -> int:
    if args.schema:
        print(schema_text("mlp", others=False, details=True, root=LearnConfig), end="")
        return 0
    if args.config is None:
        raise ConfigError("rgflow learn: the CONFIG.toml argument is missing (see 'rgflow learn --help')")
    spec = load_learn_config(args.config, networks=args.networks)
    out = args.out if args.out is not None else spec.config["_out"]
    return _learn_report(spec, out, args, f"rgflow learn {args.config}")


def _cmd_run(args: argparse.Namespace) -> int:
    if args.schema is not None:
        print(schema_text(args.schema), end="")
        return 0
    if args.config is None:
        raise ConfigError("rgflow run: the CONFIG.toml argument is missing (see 'rgflow run --help')")
    raw = read_toml(args.config)
    if is_depthmup(raw):  # trained depth-μP ResNet depth sweeps (nfd.md §3): their own tables
        t0 = time.perf_counter()
        _, _, folder = run_depthmup(
            raw, out=args.out, networks=args.networks, plots=not args.no_plots, quiet=args.quiet
        )
        print(f"\nreport: {folder}/ (depthmup.md, depthmup.json, *.png); total {time.perf_counter() - t0:.1f} s")
        return 0
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
    names = args.activation or BUILTIN_TABLE
    acts = [parse_activation(a, "ACTIVATION") if args.activation else Activation(a) for a in names]

    def f(v: float | None, w: int, p: int = 10) -> str:
        return f"{'—':>{w}}" if v is None else f"{float(v):>{w}.{p}g}"

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
            "  rgflow learn examples/learn_tanh.toml\n"
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
    d.add_argument(
        "--dntk",
        action="store_true",
        help="also the dNTK family P, Q, R, S, T, U (theory and sampled values at the table layer; theory.dntk = true)",
    )
    d.add_argument(
        "--no-learning",
        action="store_true",
        help="skip the learning panel (trained GELU networks at widths 8, 16, 32 against the infinite-width and "
        "O(1/n) predictions; written to DIR/learning/)",
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
    r.add_argument(
        "--schema",
        nargs="?",
        const="mlp",
        choices=ARCHITECTURES,
        metavar="ARCH",
        help="print every configuration key as a commented example for ARCH (mlp, resmlp, preresnet; default mlp)",
    )
    common(r, None)
    r.set_defaults(func=_cmd_run)

    le = sub.add_parser(
        "learn",
        help="what trained MLPs predict: infinite width, O(1/n), and trained ensembles, from a TOML file",
        description=(
            "Reads CONFIG.toml ([network], [data], [learning], [report]; 'rgflow learn --schema' prints every key, "
            "examples/learn_tanh.toml is a full example). For each hidden width it computes the infinite-width and "
            "the O(1/n) prediction of the test outputs (gradient descent: (10.40) and (∞.160)-(∞.165); Bayes: "
            "(6.64) and (6.87)-(6.88)), trains (or exactly conditions) an ensemble of networks of that width, and "
            "writes a report folder: learning.json, learning.npz and plots of the predictions against 1/n, the "
            "bias/variance decomposition (10.52) when test targets are known, and the evidence (6.34) over a "
            "(C_b, C_W) grid when asked."
        ),
        epilog=(
            "minimal configuration:\n"
            '  [network]\n  activation = "tanh"\n  depth = 3\n  critical = true\n'
            "  [data]\n  generate = {n_train = 4, n_test = 2, dim = 3}\n"
            "  [learning]\n  widths = [16, 32]\n  networks = 200"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    le.add_argument("config", metavar="CONFIG.toml", nargs="?", help="the configuration file")
    le.add_argument("--schema", action="store_true", help="print every configuration key as a commented example")
    common(le, None)
    le.set_defaults(func=_cmd_learn)

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
