"""Typed dataclass configs: YAML files plus dotted `key=value` overrides, strict keys.

Every run stores the resolved config (`to_dict`) beside its results (ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ObliviateError
from .registry import suggest

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the declared type, or raise a clear error."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ObliviateError(f"{where}: a value is required (got null)")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ObliviateError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ObliviateError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ObliviateError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ObliviateError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ObliviateError(f"{where}: expected a number, got {value!r}")
        try:
            number = tp(value) if not isinstance(value, str) else tp(float(value))
        except (TypeError, ValueError):
            raise ObliviateError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and float(value) != number:
            raise ObliviateError(f"{where}: expected an integer, got {value!r}")
        return number
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a mapping; unknown keys raise with a suggestion."""
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        key = unknown[0]
        raise ObliviateError(
            f"unknown config key '{prefix}{key}'{suggest(key, list(types_))}; "
            f"valid keys: {', '.join(types_)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        default = _default_of(fields[k])
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            # A partial nested mapping overrides the field's own default, key by key.
            v = merge(dataclasses.asdict(default), v)
        kwargs[k] = _coerce(v, types_[k], f"{prefix}{k}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ObliviateError(f"{prefix or cls.__name__}: {exc}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ObliviateError(f"override '{pair}' is not of the form key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ObliviateError(f"override '{pair}' conflicts with another override")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` over `base` (new dict)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Defaults <- YAML file <- dotted overrides, validated into dataclass `cls`."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ObliviateError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ObliviateError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ObliviateError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data = merge(data, parse_overrides(list(overrides)))
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
