"""YAML configuration files parsed into dataclasses.

Every key must name a dataclass field: an unknown key raises `ConfigError` with its dotted path, so a typo never
turns into a silently ignored setting. Command-line overrides use the same dotted paths (`train.lr=3e-4`).

A section whose keys are declared at run time rather than by a dataclass (the `sequence:` settings, which each
registered modality declares as `Setting`s) is a class with `from_config(mapping)` and `to_config()`; the parser
calls the one and `to_dict` the other.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _convert(value: Any, tp: Any, path: str) -> Any:
    if value is None:
        return None
    tp = _strip_optional(tp)
    if isinstance(tp, type) and hasattr(tp, "from_config"):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}.")
        return tp.from_config(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping of {tp.__name__} fields, got {value!r}.")
        return from_dict(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}.")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}.")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {k: _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{path} must be a number, got {value!r}.") from None
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{path} must be of type {tp.__name__}, got {value!r}.")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{path} must be an integer, got {value!r}.")
    return value


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a plain dict, recursing into nested dataclasses; unknown keys raise."""
    types_by_name = _field_types(cls)
    unknown = sorted(set(data) - set(types_by_name), key=str)
    if unknown:
        where = f"{path}." if path else ""
        known = ", ".join(sorted(types_by_name))
        raise ConfigError(f"unknown config key {where}{unknown[0]}; the known keys here are: {known}.")
    kwargs = {}
    for name, value in data.items():
        dotted = f"{path}.{name}" if path else name
        kwargs[name] = _convert(value, types_by_name[name], dotted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        key = getattr(err, "key", None)
        if path and key and key.split(".")[0] in types_by_name:  # a field's check names it (`steps`): add the path
            dotted = f"{path}.{key}"
            raise ConfigError(str(err).replace(f"`{key}`", f"`{dotted}`", 1), key=dotted) from None
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path or cls.__name__}: {err}", key=key) from None


MAX_LENGTH = 65536  # the largest length or width a sequence setting may take: past any sequence a model holds


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared config key: its type, default, allowed range and meaning, validated with its dotted path.

    Modalities declare their sequence settings this way (`Modality.sequence_settings`), so a new modality brings its
    own lengths and shapes without a field added to a package class."""

    name: str  # the key, e.g. "caption_length" under `sequence:`
    type: Any  # int, float, str, bool or a typed list/dict, optionally `| None`
    default: Any  # the value when a config leaves the key out
    doc: str  # what the value means, shown in error messages
    minimum: float | None = None  # smallest allowed value (None: unbounded)
    maximum: float | None = None  # largest allowed value (None: unbounded)

    def validate(self, value: Any, section: str) -> Any:
        """`value` converted to the declared type, or `ConfigError` naming `section.name`, the bound and the doc."""
        path = f"{section}.{self.name}"
        value = _convert(value, self.type, path)
        if value is None:
            if _strip_optional(self.type) is self.type:
                raise ConfigError(f"{path} must be set ({self.doc}); leave it out for the default {self.default!r}.")
            return None
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{path} must be >= {self.minimum} ({self.doc}), got {value!r}.")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{path} must be <= {self.maximum} ({self.doc}), got {value!r}.")
        return value


def to_dict(config: Any) -> Any:
    """The plain form of a config dataclass (what `save_config` writes): nested dataclasses and `to_config()`
    sections become dicts, lists and tuples keep their type."""
    if hasattr(config, "to_config"):
        return config.to_config()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return type(config)(to_dict(item) for item in config)
    if isinstance(config, dict):
        return {key: to_dict(value) for key, value in config.items()}
    return copy.deepcopy(config)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict; values are parsed as YAML scalars (`3e-4`, `true`, `[1, 2]`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value.")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a mapping.")
        node[parts[-1]] = _parse_yaml(raw, f"override {key}")
    return data


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: {text[:80]!r} is not valid YAML ({str(err).splitlines()[0]}).") from None


def check_renamed(data: dict[str, Any], renamed: dict[str, tuple[str, str]]) -> None:
    """Raise `ConfigError` naming the new key for any renamed key (`{old: (new, how the value carries over)}`)."""
    for old, (new, how) in renamed.items():
        node: Any = data
        for part in old.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            raise ConfigError(f"config key {old} was renamed to {new} ({how}); write {new}: ... instead.")


_MISSING = object()


def load_config(path: str | Path, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read a YAML file into dataclass `cls`, after applying dotted `key=value` overrides. A `RENAMED` table in the
    module of `cls` makes old keys fail with their new name."""
    import sys

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    data = _parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level, got {type(data).__name__}.")
    data = apply_overrides(data, overrides or [])
    check_renamed(data, getattr(sys.modules[cls.__module__], "RENAMED", {}))
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back with `load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
