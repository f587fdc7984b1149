"""The typed configuration schema of ``rgflow run`` (``rgflow.cli._schema``): one source for the validator,
``rgflow run --schema`` and the README's configuration section."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgflow import cli
from rgflow.cli._docs import FIX_COMMAND, readme_block
from rgflow.cli._schema import ARCHITECTURES, ConfigError
from rgflow.cli._validate import _kind, type_alternatives

ROOT = Path(__file__).resolve().parents[1]
KEYS = cli.schema_keys()


def example(arch: str) -> dict:
    return tomllib.loads(cli.schema_text(arch))


def run_main(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------ one text, everywhere


def test_readme_section_is_generated_from_the_schema():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme_block(text)
    assert text[start:end] == cli.schema_markdown() + "\n", (
        f"the README's configuration section disagrees with the schema; regenerate it: {FIX_COMMAND}"
    )


@pytest.mark.parametrize(("path", "meta"), [(p, m) for p, _, m in KEYS], ids=[p for p, _, _ in KEYS])
def test_every_key_is_documented(path, meta, capsys):
    code, out, _ = run_main(["run", "--schema"], capsys)
    assert code == 0
    leaf = path.rsplit(".", 1)[-1]
    parent = path.rsplit(".", 2)[-2] if path.count(".") == 2 else None
    needle = f"{parent}.{leaf}:" if parent else f"{leaf} = "
    assert needle in out, path
    assert meta.help in out
    assert f"| `{path}` |" in cli.schema_markdown()
    assert f"| `{path}` |" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_schema_example_of_each_architecture_is_valid(arch, capsys, tmp_path):
    code, out, _ = run_main(["run", "--schema", arch], capsys)
    assert code == 0 and out == cli.schema_text(arch)
    cfg = tmp_path / "schema.toml"
    cfg.write_text(out, encoding="utf-8")
    spec = cli.load_config(cfg)
    assert getattr(spec, "architecture", "mlp") == arch


def test_schema_bad_architecture_exit_2(capsys):
    code, _, err = run_main(["run", "--schema", "cnn"], capsys)
    assert code == 2 and "invalid choice" in err


def test_module_docstring_does_not_repeat_the_schema():
    import rgflow.cli._main as m

    assert "rgflow run --schema" in (m.__doc__ or "")
    assert "[ensemble]" not in (m.__doc__ or "")


# ------------------------------------------------------------------------ errors name the key


def _wrong_values(tp) -> list:
    """Values whose TOML type the key never accepts."""
    alts = type_alternatives(tp)
    kinds = {_kind(a) for a in alts}
    scalars = [a for a in alts if _kind(a) == "scalar"]
    out: list = []
    if "list" not in kinds:
        out.append([1, 2])
    if "table" not in kinds:
        out.append({"bogus": 1})
    if bool not in scalars:
        out.append(True)
    if str not in scalars and "table" not in kinds or not scalars and "table" in kinds:
        out.append("§bogus")
    return out


def _set(cfg: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        cfg = cfg[p]
    if value is _DELETE:
        del cfg[leaf]
    else:
        cfg[leaf] = value


def _has(cfg: dict, path: str) -> bool:
    for p in path.split("."):
        if not isinstance(cfg, dict) or p not in cfg:
            return False
        cfg = cfg[p]
    return True


_DELETE = object()
_ARCH_OF = {p: m.archs for p, _, m in KEYS}


def _corruptions(arch: str) -> list[tuple[str, object]]:
    base = example(arch)
    out: list[tuple[str, object]] = []
    for path, tp, meta in KEYS:
        if path == "network.architecture":
            continue
        if _has(base, path):
            out += [(path, v) for v in _wrong_values(tp)]
            if meta.required:
                out.append((path, _DELETE))
            if meta.ge is not None or meta.gt is not None:
                out.append((path, -7))
        elif arch in meta.archs and _has(base, path.rsplit(".", 1)[0]):  # an optional key the example omits
            out += [(path, v) for v in _wrong_values(tp)]
        elif arch not in meta.archs and path.count(".") == 1:
            ex = meta.example_for(arch)
            out.append((path, ex if ex is not None else 1))  # a key of another architecture
    for table in ("network", "inputs", "theory", "ensemble", "report", "inputs.generate"):
        if _has(base, table):
            out.append((f"{table}.bogus_key", 1))
    return out


CORRUPTIONS = {arch: _corruptions(arch) for arch in ARCHITECTURES}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ARCHITECTURES).flatmap(lambda a: st.tuples(st.just(a), st.sampled_from(CORRUPTIONS[a]))))
def test_single_key_corruption_names_the_key(case):
    arch, (path, value) = case
    cfg = copy.deepcopy(example(arch))
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as exc:
        cli.config_from_dict(cfg)
    assert path in str(exc.value), (path, value, str(exc.value))


def test_every_key_is_corrupted_somewhere():
    covered = {p for cs in CORRUPTIONS.values() for p, _ in cs}
    assert {p for p, _, _ in KEYS} - {"network.architecture"} <= covered


@pytest.mark.parametrize(
    ("path", "value"),
    [("network.depth", "§bogus"), ("ensemble.widths", [0]), ("theory.order", 3), ("network.gamma", 0.5)],
)
def test_corruption_exit_status_2(path, value, tmp_path, capsys):
    cfg = example("mlp")
    _set(cfg, path, value)
    lines = []
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {cli._docs.toml_value(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {cli._docs.toml_value(vv)}" for kk, vv in v.items()]
    p = tmp_path / "bad.toml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run_main(["run", str(p), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert path in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_validate_returns_typed_tables():
    cfg = cli.validate(example("preresnet"))
    assert cfg.network.architecture == "preresnet" and cfg.network.depth == 800
    assert cfg.inputs.kernel is not None and cfg.inputs.generate is None
    assert cfg.theory.every == 100 and cfg.ensemble.sampler == "block"
    assert cfg.network.gamma is None  # a key of another architecture: not set
