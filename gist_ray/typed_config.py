"""Typed configuration from plain mappings: dataclasses whose fields carry their own constraints.

A config class is a dataclass; a field declared with :func:`setting` carries bounds (``ge``, ``gt``, ``le``,
``lt``) and YAML aliases in its metadata, checked by :func:`from_dict`, so most configs need no hand-written
checks. A class may still define ``check(where)`` for rules across fields, or ``from_raw(data, where)`` to parse
itself. Every error is a :class:`~gist_ray.errors.ConfigError` that names the field path (``train.lr``).
Also here: YAML files, ``a.b=value`` overrides. Imports nothing from gist-ray but :mod:`gist_ray.errors`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from gist_ray.errors import ConfigError

_BOUNDS = ("ge", "gt", "le", "lt")


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, aliases: tuple[str, ...] = (), doc: str = "",
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds checked on load, YAML aliases and a one-line help text."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta.update({"aliases": tuple(aliases), "doc": doc})
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounds_text(meta: typing.Mapping[str, Any]) -> str:
    """``must be > 0`` / ``must be in [0, 1)`` from a field's bounds."""
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"must be in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f"must be {'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    return f"must be {'<=' if hi[0] == ']' else '<'} {hi[1]:g}" if hi else ""


def _within(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    return not (("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"])
                or ("le" in meta and value > meta["le"]) or ("lt" in meta and value >= meta["lt"]))


def check_bounds(obj: Any, where: str = "") -> None:
    """Raise a ConfigError naming the first field of dataclass ``obj`` outside its :func:`setting` bounds."""
    for f in dataclasses.fields(obj):
        if any(k in f.metadata for k in _BOUNDS):
            value = getattr(obj, f.name)
            if not _within(value, f.metadata):
                raise ConfigError(f"{where + '.' if where else ''}{f.name}: {bounds_text(f.metadata)}, got {value}")


def _aliases(cls: type) -> dict[str, str]:
    return {a: f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (lightly coerced: ints to floats, ``1e-3``)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping: unknown keys, wrong types and out-of-bounds values are refused."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    if hasattr(cls, "from_raw"):
        return cls.from_raw(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    aliases = _aliases(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        path = f"{where}.{key}" if where else str(key)
        if name not in names:
            raise ConfigError(f"{path}: unknown field; known fields: {', '.join(sorted(names))}")
        kwargs[name] = coerce(value, hints[name], path)
    obj = cls(**kwargs)
    check_bounds(obj, where)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-dict form of a config (round-trips through :func:`from_dict`)."""
    return dataclasses.asdict(obj)


def require(cond: bool, where: str, name: str, msg: str) -> None:
    """A ConfigError ``where.name: msg`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{where + '.' if where else ''}{name}: {msg}")


# ----------------------------------------------------------------------------- YAML + overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def set_path(data: dict, path: list[str], value: Any) -> None:
    """Set ``data[a][b] = value`` creating intermediate mappings."""
    cur = data
    for i, part in enumerate(path[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])}: is not a section, cannot set {'.'.join(path)}")
        cur = nxt
    cur[path[-1]] = value


def with_paths(data: dict, values: typing.Mapping[str, Any]) -> dict:
    """A deep copy of ``data`` with ``{"a.b": value}`` set."""
    out = copy.deepcopy(data)
    for key, value in values.items():
        set_path(out, key.split("."), value)
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    """A YAML file's top-level mapping; a missing file or a syntax error names the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data
