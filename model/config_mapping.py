"""Nested mappings -> checked, typed dataclasses, and back: the machinery under model/config.py.

Generic over any frozen config dataclass: `build_config` rejects unknown keys and wrong types with
a `ConfigError` naming the dotted key; `check_field_types` is the same check for a dataclass that
was built directly (its `__post_init__` calls it). The dotted views (`flatten`, `unflatten`) are
how YAML overrides, search spaces and MLflow params name a config key. Import these names from
model.config, the config's public face.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range; the message names the key."""


def build_config(cls: type[T], values: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a nested mapping, checking every key and type."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"config key '{where}': expected a mapping, got {type(values).__name__}")
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key '{dotted}'{_suggest(str(key), set(hints))}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


class NewFieldsDefault:
    """Mixin of the config dataclasses: a config pickled before a field was added (a sweep's Ray
    state read by `--resume`, an old registered model) unpickles with that field's default, not
    without the attribute."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            if spec.name not in state:
                factory = spec.default_factory
                missing = factory() if factory is not dataclasses.MISSING else spec.default
                state[spec.name] = missing
        self.__dict__.update(state)  # frozen: pickle's own way in, as without __setstate__


def check_field_types(config: Any, prefix: str) -> None:
    """Check every field of a frozen dataclass against its type hint, normalising in place what
    `build_config` would (int -> float, list -> tuple, a mapping -> its section dataclass)."""
    for name, hint in _type_hints(type(config)).items():
        value = getattr(config, name)
        checked = _coerce(hint, value, f"{prefix}{name}")
        if checked is not value:
            object.__setattr__(config, name, checked)  # frozen: the one sanctioned write


def check_ranges(prefix: str, checks: list[tuple[str, bool, str]]) -> None:
    """Raise a ConfigError for the first `(key, ok, message)` whose check failed."""
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(f"config key '{prefix}{key}' {message}")


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hint_name(hint: Any) -> str:
    """A type hint as a user reads it in an error: `int`, `float | None`, `Literal['a', 'b']`."""
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config (tuples become lists), for JSON/YAML/MLflow."""
    return _lists(dataclasses.asdict(config))


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1}} -> {'optim.lr': 1}."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_config(config: Any) -> dict[str, Any]:
    """Dotted view of a whole config (`optim.lr` -> 2e-5), for params, tags and hashes."""
    return flatten(config_to_dict(config))


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 1} -> {'optim': {'lr': 1}}; later keys win over earlier ones."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested mappings; `override` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


_TYPE_HINTS: dict[type, dict[str, Any]] = {}  # per dataclass: resolving string hints is slow


def _type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field names and resolved type hints (annotations are strings here)."""
    if cls not in _TYPE_HINTS:
        hints = typing.get_type_hints(cls)
        _TYPE_HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _TYPE_HINTS[cls]


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type hint `hint`; allow int -> float and list -> tuple."""
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # type: ignore[arg-type]
            return value
        return build_config(hint, value, prefix=f"{key}.")  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _coerce_union(hint, value, key)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        return _coerce_tuple(hint, value, key)
    return _coerce_scalar(hint, value, key)


def _coerce_union(hint: Any, value: Any, key: str) -> Any:
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, key)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:  # `X | None`: X's own message says more than the union's
        raise errors[0]
    raise ConfigError(f"config key '{key}': expected {hint_name(hint)}, got {value!r}")


def _coerce_tuple(hint: Any, value: Any, key: str) -> tuple[Any, ...]:
    args = typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
    pairs = enumerate(zip(args, value, strict=True))
    return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return value if type(value) is float else float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    # Reached only when a config dataclass gains a kind of type hint not handled above.
    raise ConfigError(f"config key '{key}': unsupported type {hint_name(hint)}")


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
