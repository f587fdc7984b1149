"""The generic validator: walks the dataclasses of :mod:`._schema` over a parsed TOML document.

It knows types (``bool``, ``int``, ``float``, ``str``, ``Literal``, ``list``, unions, ``None``,
nested tables and :class:`~rgflow.Activation`), the :class:`~._schema.Key` metadata (bounds,
per-layer lengths, applicability to an architecture, required keys) and the tables' ``RULES``;
nothing here names a particular configuration key.  Every error is a :class:`ConfigError` whose
message names the offending key path (``'ensemble.widths[1]' must be >= 1, got 0``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ..activations import Activation
from ._schema import Config, ConfigError, Key, LearnConfig, Network, fail

__all__ = ["validate", "validate_learn", "parse_activation", "describe_type"]

T = TypeVar("T")
_NONE = type(None)


def parse_activation(spec: object, key: str = "activation") -> Activation:
    """An Activation from a name, ``name:param=value,...`` or a TOML table {name = ..., param = ...}."""
    try:
        if isinstance(spec, dict):
            params = dict(spec)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise fail(key, "table needs a string 'name' key, e.g. {name = \"leaky_relu\", slope = 0.1}")
            return Activation(name, **{k: _number(v, f"{key}.{k}") for k, v in params.items()})
        if not isinstance(spec, str):
            raise fail(key, f"must be a name or a table, got {spec!r}")
        name, _, rest = spec.partition(":")
        kw: dict[str, float] = {}
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            if not eq:
                raise fail(key, f"= {spec!r}: parameters are written name:key=value,key=value")
            try:
                kw[k.strip()] = float(v)
            except ValueError:
                raise fail(key, f"= {spec!r}: parameter {k.strip()!r} is not a number") from None
        return Activation(name.strip(), **kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"'{key}': {exc}") from None


def _number(v: object, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise fail(path, f"must be a finite number, got {v!r}")
    return float(v)


def _meta(f: dataclasses.Field[Any]) -> Key:
    meta = f.metadata["key"]
    assert isinstance(meta, Key)
    return meta


def fields(cls: type) -> list[tuple[str, Any, Key]]:
    """(name, type, Key) of each field of a schema table, in declaration order."""
    hints = get_type_hints(cls)
    return [(f.name, hints[f.name], _meta(f)) for f in dataclasses.fields(cls)]


def type_alternatives(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not _NONE]
    return [tp]


def _kind(tp: Any) -> str:
    if get_origin(tp) is list:
        return "list"
    if dataclasses.is_dataclass(tp) or tp is Activation:
        return "table"
    return "scalar"


def describe_type(tp: Any) -> str:
    """The type as words: ``int``, ``number``, ``"a" | "b"``, ``list of ints``, ..."""
    alts = type_alternatives(tp)
    if len(alts) > 1:
        return " or ".join(describe_type(a) for a in alts)
    tp = alts[0]
    if get_origin(tp) is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in get_args(tp))
    if get_origin(tp) is list:
        inner = describe_type(get_args(tp)[0])
        return f"list of ({inner})" if " " in inner else f"list of {inner}s"
    names = {bool: "bool", int: "int", float: "number", str: "string", Activation: "name or table"}
    return names.get(tp, "table")


class _Walker:
    """One validation: the architecture, and the converted values by key path (for checks)."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.values: dict[str, object] = {"network.architecture": arch}

    def table(self, cls: type[T], raw: object, where: str) -> T:
        if not isinstance(raw, dict):
            what = f"a [{where}] section" if "." not in where else "an inline table {...}"
            raise fail(where, f"must be a table ({what}), got {type(raw).__name__}")
        specs = fields(cls)
        names = {name for name, _, _ in specs}
        for k in raw:
            if k not in names:
                allowed = f"allowed in [{where}]" if where else "allowed"
                raise ConfigError(f"unknown key '{_join(where, k)}' ({allowed}: {', '.join(sorted(names))})")
        for name, _, meta in specs:
            if name in raw and self.arch not in meta.archs:
                archs = " or ".join(repr(a) for a in meta.archs)
                raise ConfigError(
                    f"'{_join(where, name)}' applies to network.architecture = {archs} only, not {self.arch!r}; "
                    "remove it"
                )
        out: dict[str, object] = {}
        for name, tp, meta in specs:
            path = _join(where, name)
            applies = self.arch in meta.archs
            if name in raw and applies:
                v = self.convert(raw[name], tp, path, meta)
            elif meta.required and applies:
                if dataclasses.is_dataclass(tp) and not where:
                    raise ConfigError(f"missing section [{name}]")
                raise ConfigError(f"missing key '{path}'")
            elif meta.required:
                v = None
            elif dataclasses.is_dataclass(tp):
                v = self.convert(copy.deepcopy(meta.default), tp, path, meta)
            else:
                v = copy.deepcopy(meta.default)
            out[name] = self.values[path] = v
        given = {k for k in raw if k in names}
        applicable = {name for name, _, meta in specs if self.arch in meta.archs}
        for rule in getattr(cls, "RULES", ()):
            rule.apply(given, out, where, self.arch, applicable)
        for name, _, meta in specs:
            if meta.check is not None and self.arch in meta.archs and out[name] is not None:
                meta.check(out[name], _join(where, name), self.values)
        return cls(**out)

    def convert(self, v: object, tp: Any, path: str, meta: Key) -> Any:
        alts = type_alternatives(tp)
        if len(alts) > 1:
            kind = "list" if isinstance(v, list) else "table" if isinstance(v, dict) else "scalar"
            match = [a for a in alts if _kind(a) == kind]
            if len(match) != 1:
                raise fail(path, f"must be {describe_type(tp)}, got {v!r}")
            out = self.convert(v, match[0], path, meta)
            if meta.per_layer and isinstance(out, list):
                depth = self.values["network.depth"]
                if len(out) != depth:
                    raise fail(
                        path, f"has {len(out)} entries but depth = {depth}; give one per layer or a single number"
                    )
            return out
        tp = alts[0]
        if tp is Activation:
            return parse_activation(v, path)
        if dataclasses.is_dataclass(tp):
            return self.table(typing.cast(type, tp), v, path)
        if get_origin(tp) is list:
            if not isinstance(v, list):
                raise fail(path, f"must be a list ({describe_type(tp)}), got {v!r}")
            if meta.nonempty and not v:
                raise fail(path, "must be a non-empty list")
            return [self.convert(e, get_args(tp)[0], f"{path}[{i}]", meta) for i, e in enumerate(v)]
        if get_origin(tp) is Literal:
            choices = get_args(tp)
            if isinstance(v, bool) or v not in choices:
                raise fail(path, f"= {v!r}: choose one of {', '.join(map(str, choices))}")
            return v
        if tp is bool:
            if not isinstance(v, bool):
                raise fail(path, f"must be true or false, got {v!r}")
            return v
        if tp is str:
            if not isinstance(v, str):
                raise fail(path, f"must be a string, got {v!r}")
            return v
        if tp is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise fail(path, f"must be an integer, got {v!r}")
            return self.bounds(v, path, meta)
        if tp is float:
            return self.bounds(_number(v, path), path, meta)
        raise TypeError(f"schema type {tp!r} of '{path}' is not supported")  # pragma: no cover

    def bounds(self, v: T, path: str, meta: Key) -> T:
        x = typing.cast(float, v)
        if meta.ge is not None and x < meta.ge:
            raise fail(path, f"must be >= {meta.ge:g}, got {v}")
        if meta.gt is not None and x <= meta.gt:
            raise fail(path, f"must be > {meta.gt:g}, got {v}")
        if meta.le is not None:
            limit = self.values[meta.le]
            assert isinstance(limit, (int, float))
            if x > limit:
                raise fail(path, f"= {v} exceeds {meta.le} = {limit}")
        return v


def _join(where: str, k: str) -> str:
    return f"{where}.{k}" if where else k


def validate(raw: Mapping[str, object]) -> Config:
    """Validate a parsed TOML document against the schema: the typed :class:`Config` or a ConfigError."""
    arch: str = "mlp"
    net = raw.get("network")
    if isinstance(net, dict) and "architecture" in net:
        _, tp, meta = next(f for f in fields(Network) if f[0] == "architecture")
        arch = _Walker("mlp").convert(net["architecture"], tp, "network.architecture", meta)
    return _Walker(arch).table(Config, dict(raw), "")


def validate_learn(raw: Mapping[str, object]) -> LearnConfig:
    """Validate an ``rgflow learn`` document: the typed :class:`LearnConfig` (MLPs only) or a ConfigError."""
    net = raw.get("network")
    if isinstance(net, dict) and net.get("architecture", "mlp") != "mlp":
        raise fail(
            "network.architecture",
            f"= {net['architecture']!r}: rgflow learn predicts trained MLPs only; use 'mlp' (or leave it out)",
        )
    return _Walker("mlp").table(LearnConfig, dict(raw), "")
