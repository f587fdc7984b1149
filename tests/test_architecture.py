"""The package's architecture, checked: layering and cycles are import-linter contracts
(``lint-imports``, pyproject ``[tool.importlinter]``, run by ``.ci/run``); this module checks what
import-linter does not — private names and private modules stay inside their owner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rgflow

PACKAGE = Path(rgflow.__file__).resolve().parent
#: Private (underscore) packages every layer may use: shared helpers, not another module's internals.
SHARED_PRIVATE = {"_util"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _resolve(module: list[str], is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute dotted path of ``from <node.module> import ...`` inside ``module``."""
    if node.level == 0:
        return (node.module or "").split(".")
    base = module if is_package else module[:-1]
    base = base[: len(base) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def _imports(path: Path) -> list[tuple[int, list[str], list[str], bool]]:
    """(line, target module path, imported names, inside a function) for every rgflow import."""
    tree = ast.parse(path.read_text(), str(path))
    module, is_package = _dotted(path), path.name == "__init__.py"
    out = []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target and target[0] == "rgflow":
                out.append((node.lineno, target, [a.name for a in node.names], id(node) in nested))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "rgflow":
                    out.append((node.lineno, a.name.split("."), [], id(node) in nested))
    return out


def _owner(parts: list[str]) -> list[str]:
    """The package that owns a private module or name: everything up to its first private part."""
    for i, p in enumerate(parts):
        if p.startswith("_") and not p.startswith("__"):
            return parts[:i]
    return parts


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_imports_across_owners(path: Path) -> None:
    module = _dotted(path)
    bad = []
    for line, target, names, _ in _imports(path):
        for name in names:
            if not name.startswith("_") or name.startswith("__") or name == "_core":
                continue
            submodule = PACKAGE.parent.joinpath(*target, name)
            is_module = submodule.with_suffix(".py").exists() or submodule.is_dir()
            if not (is_module and module[: len(target)] == target):  # a sibling module of the same package is fine
                bad.append(f"l.{line}: private name {name!r} imported from {'.'.join(target)}")
        private = [p for p in target[1:] if p.startswith("_") and not p.startswith("__")]
        if not private or private[0] in SHARED_PRIVATE:
            continue
        owner = _owner(target)
        if module[: len(owner)] != owner:
            bad.append(f"l.{line}: private module {'.'.join(target)} imported from outside {'.'.join(owner)}")
    assert not bad, f"{path.relative_to(PACKAGE)}:\n" + "\n".join(bad)


def test_the_scan_sees_the_package() -> None:
    mods = _modules()
    assert len(mods) > 30
    assert any(t[1][:2] == ["rgflow", "recursions"] for p in mods for t in _imports(p))


def test_theory_is_a_function_and_the_results_are_reachable() -> None:
    """``rgflow.theory`` used to be both a function and a submodule (``rgflow.theory.Theory`` failed)."""
    assert callable(rgflow.theory) and callable(rgflow.sample)
    assert rgflow.Theory is rgflow.recursions.Theory and rgflow.Ensemble is rgflow.ensembles.Ensemble


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_rgflow_imports_inside_functions(path: Path) -> None:
    """Imports of rgflow modules sit at module level, where the dependency graph shows them (optional
    third-party packages — jax, matplotlib, scipy — may still be imported lazily inside functions)."""
    inside = [f"l.{line}: {'.'.join(target)}" for line, target, _, nested in _imports(path) if nested]
    assert not inside, f"{path.relative_to(PACKAGE)}: rgflow imports inside functions:\n" + "\n".join(inside)
