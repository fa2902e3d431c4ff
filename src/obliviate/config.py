"""Typed dataclass configs: YAML files plus dotted `key=value` overrides, strict keys.

Every run stores the resolved config (`to_dict`) beside its results (ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import math
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


_NULLS = ("null", "none", "~")


def _structured(value: Any, where: str) -> Any:
    """`[a, b]` / `{k: v}` given as text (a key=value override) parsed as YAML; other text
    stays text. A field's declared type decides, so a text field keeps brackets and colons."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ObliviateError(f"{where}: cannot read {value!r} as a list or mapping "
                                 f"({str(exc).splitlines()[0]})") from None
    return value


def _number(value: Any, tp: type, where: str) -> int | float:
    if isinstance(value, bool) or isinstance(value, dict | list | tuple):
        raise ObliviateError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ObliviateError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if not math.isfinite(number):
        raise ObliviateError(f"{where}: expected a finite number, got {value!r}")
    if tp is int:
        if number != int(number):
            raise ObliviateError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    return number


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value or the text of a key=value override to the declared type, or raise
    a clear error. Text fields take the text as it is (a prompt template may hold brackets,
    colons or a trailing space); a mapping or a list given for one is an error."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and tp is not str and isinstance(value, str)
                         and value.strip().lower() in _NULLS):
        if optional:
            return None
        raise ObliviateError(f"{where}: a value is required (got null)")
    if tp is str:
        if isinstance(value, dict | list | tuple):
            raise ObliviateError(f"{where}: expected text, got {type(value).__name__} {value!r}")
        return value if isinstance(value, str) else str(value)
    if dataclasses.is_dataclass(tp):
        value = _structured(value, where)
        if not isinstance(value, dict):
            raise ObliviateError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        value = _structured(value, where)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ObliviateError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        value = _structured(value, where)
        if not isinstance(value, dict):
            raise ObliviateError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise ObliviateError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        return _number(value, tp, where)
    return value


class ConfigError(ObliviateError):
    """A config value out of its range, raised by a config's own check (`require`); the
    parser adds the path of the key (`optim.steps`)."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


def require(ok: bool, key: str, message: str) -> None:
    """A config dataclass's check of one value (called from its __post_init__)."""
    if not ok:
        raise ConfigError(key, message)


def require_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    require(value in choices, key, f"unknown value '{value}'{suggest(value, list(choices))}; "
            f"one of: {', '.join(choices)}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a mapping; unknown keys raise with a suggestion."""
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        key = unknown[0]
        if not isinstance(key, str):  # YAML allows `? ` (null) or number keys
            raise ObliviateError(f"config key {prefix}{key!r} is not a name; valid keys: {', '.join(types_)}")
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
    except ConfigError as exc:  # a value out of range: name it by its full path
        raise ObliviateError(f"{prefix}{exc.key}: {exc.message}") from None
    except TypeError as exc:  # a required field is missing
        raise ObliviateError(f"{prefix or cls.__name__}: {exc}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': '1'}, 'c': 'x'}. Values stay text: `from_dict` converts
    each to its field's declared type, so a text field gets exactly what was typed."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ObliviateError(f"override '{pair}' is not of the form key=value")
        key, value = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ObliviateError(f"override '{pair}': the key before '=' is empty or has an "
                                 "empty part (write section.key=value)")
        node = out
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


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = (),
                defaults: dict[str, Any] | None = None) -> C:
    """Defaults (the class's, then `defaults`) <- YAML file <- dotted overrides, validated into
    dataclass `cls`."""
    return from_dict(cls, merge(defaults or {}, raw_config(path, overrides)))


def raw_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """The YAML file with the dotted overrides over it, not yet validated (the CLI reads
    `benchmark` / `model` from it to tell a classifier run from a language model's)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ObliviateError(f"config file not found: {path}")
        try:  # utf-8-sig: a byte-order mark some editors write is not part of the text
            loaded = yaml.safe_load(path.read_bytes().decode("utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            raise ObliviateError(f"config file {path} is not UTF-8 text (byte {exc.start}); "
                                 "save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ObliviateError(f"config file {path} is not valid YAML: "
                                 f"{' '.join(str(exc).split())}") from None
        except RecursionError:
            raise ObliviateError(f"config file {path} is nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ObliviateError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    return merge(data, parse_overrides(list(overrides)))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
