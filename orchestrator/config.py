"""YAML + `--set key=value` overrides -> TrainConfig, validated once at the edge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from model.config import ConfigError, TrainConfig, build_config, check_ranges, merge, unflatten


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; errors name the file (and line for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where} malformed YAML ({problem})") from err
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
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from err
    # YAML 1.1 reads "3e-5" as a string; a number is what anyone typing it means.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
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
        cfg = build_config(TrainConfig, merge(base, unflatten(flat_overrides)))
        check_ranges(cfg)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None
    return cfg
