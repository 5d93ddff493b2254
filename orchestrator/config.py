"""YAML + `--set key=value` overrides -> TrainConfig, validated once at the edge."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from model.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_to_dict,
    merge,
    unflatten,
)


class YamlLoader(yaml.SafeLoader):
    """SafeLoader for configs and search spaces: `1e-5` is a float, a repeated key an error.

    YAML 1.1 reads `1e-5` as a string (it wants `1.0e-5`, and nobody types that); and a key given
    twice would silently keep the last value, so one of two edits to a file would be lost.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml_file(path: Path, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in `path`; every problem is an `error` naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=YamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error(f"{path}:{where} malformed YAML ({problem})") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping; errors name the file (and line for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    loaded = load_yaml_file(path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-5' -> ('optim.lr', 3e-05); the value is read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-5")
    try:
        # The loader of config files, so `3e-5` is the same number on the command line.
        value = yaml.load(raw, Loader=YamlLoader) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from err
    return key.strip(), value


def load_train_config(
    source: Path | str | Mapping[str, Any] | None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """TrainConfig from a YAML path or mapping plus dotted overrides."""
    where = ""
    if source is None:
        base: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        base = dict(source)
    else:
        base = read_yaml(Path(source))
        where = f"{source}: "
    flat_overrides = dict(parse_override(item) for item in overrides)
    try:
        return build_config(TrainConfig, merge(base, unflatten(flat_overrides)))
    except ConfigError as err:
        if flat_overrides and _valid(base):
            where = "--set: "  # the file alone is fine, so an override is at fault
        raise ConfigError(f"{where}{err}") from None


def _valid(values: Mapping[str, Any]) -> bool:
    try:
        build_config(TrainConfig, values)
    except ConfigError:
        return False
    return True


def apply_params(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """The base config with dotted `params` applied, validated (types and ranges) once more."""
    return build_config(TrainConfig, merge(config_to_dict(base), unflatten(dict(params))))
