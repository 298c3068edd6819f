"""Typed configs: dataclass defaults, then a YAML file, then dotted `key=value` overrides, validated before work.

Every command's config is a (possibly nested) dataclass; `build_config` fills it and reports all unknown keys and
type errors together as one UserError, so a run never starts on a misspelt option.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from newtonrewards.errors import UserError

T = TypeVar("T")


def build_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults of `cls` <- YAML mapping at `yaml_path` <- `overrides` ({"a.b": value}); one error lists all problems."""
    data: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path}: a config file must hold a mapping of option names to values")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    errors: list[str] = []
    cfg = _fill(cls, data, "", errors)
    if errors:
        raise UserError("invalid config: " + "; ".join(errors))
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3): the value is read as YAML, so numbers, booleans and lists keep their types."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def overrides_from_args(args: Any, mapping: dict[str, str]) -> dict[str, Any]:
    """{option: value} for each CLI flag in `mapping` ({flag attribute: dotted option}) that was given, then --set."""
    out = {opt: getattr(args, flag) for flag, opt in mapping.items() if getattr(args, flag, None) is not None}
    out.update(parse_override(s) for s in getattr(args, "set", []))
    return out


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass (for dataset.json, checkpoints and reports)."""
    return dataclasses.asdict(cfg)


def _fill(cls: type, data: dict, prefix: str, errors: list[str]):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            errors.append(f"unknown option {prefix + key!r} (known: {', '.join(fields)})")
    kwargs = {}
    for name in fields:
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(data[name], dict):
                errors.append(f"option {prefix}{name} must be a mapping, got {data[name]!r}")
                continue
            kwargs[name] = _fill(kind, data[name], f"{prefix}{name}.", errors)
        else:
            kwargs[name] = _coerce(data[name], kind, f"{prefix}{name}", errors)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, name: str, errors: list[str]) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(k for k in options if k is not type(None))
        origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is str:
            return str(value)
        if origin is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            (item_kind,) = typing.get_args(kind)
            return [_coerce(v.strip() if isinstance(v, str) else v, item_kind, name, errors) for v in items]
        if origin is dict:
            _, val_kind = typing.get_args(kind)
            if isinstance(value, str):  # "train=10,test=2"
                value = dict(parse_override(p) for p in value.split(",") if p.strip())
            return {str(k): _coerce(v, val_kind, f"{name}.{k}", errors) for k, v in dict(value).items()}
    except (TypeError, ValueError, UserError):
        pass
    else:
        return value
    errors.append(f"option {name} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value
