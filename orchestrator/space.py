"""Search-space YAML -> a validated `SearchSpace`: which config keys a sweep varies, and how.

A space file names the sweep, its base training config, the metric, sampler, scheduler and
resources, and maps dotted `TrainConfig` keys to a distribution (`{float: [lo, hi], log: true}`,
`{int: [lo, hi]}`, `{choice: [...]}`) or a fixed value, optionally under a condition
(`when: {smart.weight: {gt: 0}}`). Everything is checked at load time against the trainer's
dataclasses; a `SpaceError` names the file and the key. Nothing here knows Optuna or Ray.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from model.config import (
    ConfigError,
    TrainConfig,
    config_field_types,
    flatten,
)
from orchestrator.config import apply_params, load_train_config, load_yaml_file
from orchestrator.contract import METRICS

SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes", "gp", "qmc")
OPERATORS: tuple[str, ...] = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in")
TOP_LEVEL_KEYS = frozenset(
    {
        "name", "description", "base", "metric", "mode", "num_samples", "max_concurrent",
        "resources", "sampler", "seed", "scheduler", "repeats", "space",
    }
)  # fmt: skip
SPEC_KINDS = ("float", "int", "choice", "value")
SPEC_OPTIONS = frozenset({"log", "step", "when"})

ParamKind = Literal["float", "int", "choice", "fixed"]


class SpaceError(ConfigError):
    """A search-space file is invalid; the message names the file and the offending key."""


@dataclass(frozen=True)
class Condition:
    """`key op value`, evaluated against the values sampled so far in a trial."""

    key: str
    op: str
    value: Any

    def holds(self, values: Mapping[str, Any]) -> bool:
        """False when the key was not sampled (its own condition failed) or the test fails."""
        if self.key not in values:
            return False
        actual = values[self.key]
        if self.op in ("in", "not_in"):
            return (actual in self.value) == (self.op == "in")
        if self.op in ("eq", "ne"):
            return (actual == self.value) == (self.op == "eq")
        try:
            return {
                "gt": actual > self.value,
                "ge": actual >= self.value,
                "lt": actual < self.value,
                "le": actual <= self.value,
            }[self.op]
        except TypeError:
            return False


@dataclass(frozen=True)
class Param:
    """One dotted config key: a float/int range, a categorical choice, or a fixed value."""

    key: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[Condition, ...] = ()

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether every condition holds for the values sampled before this parameter."""
        return all(condition.holds(values) for condition in self.when)


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for: CPUs and a (possibly fractional) GPU."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class SchedulerSpec:
    """`asha` stops weak trials at rungs of `grace_period * reduction_factor**k` epochs."""

    name: Literal["asha", "none"] = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_epochs: int = 1


@dataclass(frozen=True)
class SearchSpace:
    """A validated sweep: base config, objective, sampler, scheduler and the parameters."""

    name: str
    source: str
    base: TrainConfig
    params: tuple[Param, ...]
    metric: str = "dev/overall"
    mode: Literal["max", "min"] = "max"
    num_samples: int = 8
    max_concurrent: int | None = None
    resources: Resources = Resources()
    sampler: str = "tpe"
    seed: int = 0
    scheduler: SchedulerSpec = SchedulerSpec()
    repeats: int = 1
    description: str = ""

    @property
    def searched(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.searched)

    @property
    def total_trials(self) -> int:
        """Ray trials in the sweep: every sampled config runs `repeats` times with new seeds."""
        return self.num_samples * self.repeats

    def replace(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **changes)


def load_space(path: Path | str) -> SearchSpace:
    """Read and validate a search-space YAML file; raise SpaceError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file")
    raw = load_yaml_file(path, SpaceError)
    return parse_space(raw, source=str(path), base_dir=path.parent, default_name=path.stem)


def parse_space(
    raw: Any, *, source: str = "<inline>", base_dir: Path = Path("."), default_name: str = "sweep"
) -> SearchSpace:
    """Validate a search-space mapping (as read from YAML); `source` names it in errors."""

    def fail(key: str, message: str) -> SpaceError:
        return SpaceError(f"{source}: {key}: {message}")

    if not isinstance(raw, Mapping):
        raise SpaceError(f"{source}: expected a mapping at the top level")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise fail(str(key), f"unknown key (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")

    name = check_name(raw.get("name", default_name), source)
    base = _load_base(raw.get("base"), base_dir, fail)

    metric = raw.get("metric", "dev/overall")
    if metric not in METRICS:
        raise fail("metric", f"{metric!r} is not one of {', '.join(METRICS)}")
    mode = raw.get("mode", "min" if metric == "train/loss" else "max")
    if mode not in ("max", "min"):
        raise fail("mode", f"expected max or min, got {mode!r}")

    num_samples = _positive_int(raw.get("num_samples", 8), "num_samples", fail)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _positive_int(max_concurrent, "max_concurrent", fail)
    repeats = _positive_int(raw.get("repeats", 1), "repeats", fail)
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise fail("seed", f"expected an integer, got {seed!r}")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise fail("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    resources = _parse_resources(raw.get("resources", {}), fail)

    space_raw = raw.get("space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise fail("space", "expected a non-empty mapping of dotted config keys to distributions")
    params: list[Param] = []
    for key, spec in _expand_sections(space_raw).items():
        params.append(_parse_param(key, spec, base, params, fail))
    keys = {p.key for p in params}
    if repeats > 1 and "seed" in keys:
        raise fail("repeats", "repeats > 1 sets the seed of each repeat; remove 'seed' from space")
    if sampler == "grid":
        for p in params:
            if p.kind == "float" and p.step is None:
                raise fail(f"space.{p.key}", "grid sampler: use choice, int, or float with step")

    max_epochs = _max_epochs(base, params)
    scheduler = _parse_scheduler(raw.get("scheduler", "asha"), max_epochs, fail)
    return SearchSpace(
        name=name,
        source=source,
        base=base,
        params=tuple(params),
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        resources=resources,
        sampler=sampler,
        seed=seed,
        scheduler=scheduler,
        repeats=repeats,
        description=str(raw.get("description", "")),
    )


def check_name(name: Any, source: str = "--name") -> str:
    """A sweep name is a directory and an MLflow experiment: letters, digits, `_`, `-`, `.`."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpaceError(
            f"{source}: name: expected letters, digits, '_', '-' or '.', got {name!r}"
        )
    return name



def run_name(space: SearchSpace, params: Mapping[str, Any]) -> str:
    """A short name carrying the swept values, e.g. `smart.weight=2.1 optim.lr=3e-05`."""
    parts = [f"{p.key}={_short(params[p.key])}" for p in space.searched if p.key in params]
    if space.repeats > 1 and "seed" in params:
        parts.append(f"seed={params['seed']}")
    return " ".join(parts) or "base"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


def _load_base(base: Any, base_dir: Path, fail: Any) -> TrainConfig:
    """`base:` is a YAML path (relative to the space file) or an inline mapping."""
    if base is None:
        raise fail("base", "missing: give a training config path (../configs/x.yaml) or a mapping")
    if isinstance(base, str):
        path = Path(base)
        if not path.is_absolute() and (base_dir / path).is_file():
            path = base_dir / path  # relative to the space file first, then to the working dir
        if not path.is_file():
            raise fail("base", f"no such config file {path}")
        try:
            return load_train_config(path)
        except ConfigError as err:
            raise fail("base", str(err)) from None
    if isinstance(base, Mapping):
        try:
            return load_train_config(base)
        except ConfigError as err:
            raise fail("base", str(err)) from None
    raise fail("base", f"expected a path or a mapping, got {type(base).__name__}")


def _positive_int(value: Any, key: str, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(key, f"expected an integer >= 1, got {value!r}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_resources(raw: Any, fail: Any) -> Resources:
    if not isinstance(raw, Mapping):
        raise fail("resources", "expected a mapping like {cpu: 1, gpu: 0.5}")
    for key in raw:
        if key not in ("cpu", "gpu"):
            raise fail(f"resources.{key}", "unknown key (known: cpu, gpu)")
    cpu, gpu = raw.get("cpu", 1.0), raw.get("gpu", 0.0)
    if not _number(cpu) or cpu <= 0:
        raise fail("resources.cpu", f"expected a number > 0, got {cpu!r}")
    if not _number(gpu) or gpu < 0:
        raise fail("resources.gpu", f"expected a number >= 0 (fractions share a GPU), got {gpu!r}")
    return Resources(cpu=float(cpu), gpu=float(gpu))


def _parse_scheduler(raw: Any, max_epochs: int, fail: Any) -> SchedulerSpec:
    if raw in ("asha", "none", None):
        name = "asha" if raw == "asha" else "none"
        return SchedulerSpec(name=name, max_epochs=max_epochs)
    if not isinstance(raw, Mapping):
        raise fail("scheduler", f"expected asha, none or a mapping, got {raw!r}")
    known = {"name", "grace_period", "reduction_factor", "max_epochs"}
    for key in raw:
        if key not in known:
            raise fail(f"scheduler.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    name = raw.get("name", "asha")
    if name not in ("asha", "none"):
        raise fail("scheduler.name", f"expected asha or none, got {name!r}")
    grace = _positive_int(raw.get("grace_period", 1), "scheduler.grace_period", fail)
    factor = raw.get("reduction_factor", 2)
    if not _number(factor) or factor <= 1:
        raise fail("scheduler.reduction_factor", f"expected a number > 1, got {factor!r}")
    epochs = _positive_int(raw.get("max_epochs", max_epochs), "scheduler.max_epochs", fail)
    if name == "asha" and grace > epochs:
        raise fail("scheduler.grace_period", f"{grace} exceeds max_epochs {epochs}")
    return SchedulerSpec(name, grace, float(factor), epochs)


def _max_epochs(base: TrainConfig, params: list[Param]) -> int:
    """The most epochs any trial can train: the base's, or the top of a swept `optim.epochs`."""
    for p in params:
        if p.key == "optim.epochs":
            if p.kind == "fixed":
                return int(p.value)
            if p.kind == "choice":
                return int(max(p.choices))
            return int(p.high)  # type: ignore[arg-type]
    return base.optim.epochs


def _expand_sections(space: Mapping[str, Any]) -> dict[str, Any]:
    """A fixed mapping on a config section (`data.max_examples: {sst: 800}`) becomes one fixed
    value per leaf (`data.max_examples.sst: 800`); everything else passes through."""
    leaves = config_field_types()
    out: dict[str, Any] = {}
    for key, spec in space.items():
        key = str(key)
        is_section = key not in leaves and any(k.startswith(f"{key}.") for k in leaves)
        if is_section and isinstance(spec, Mapping) and not set(spec) & {*SPEC_KINDS, "when"}:
            out.update(flatten({key: spec}))
        else:
            out[key] = spec
    return out


def _parse_param(key: str, spec: Any, base: TrainConfig, earlier: list[Param], fail: Any) -> Param:
    where = f"space.{key}"
    hints = config_field_types()
    if key not in hints:
        import difflib

        close = difflib.get_close_matches(key, list(hints), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise fail(where, f"unknown config key{hint}")
    hint = hints[key]

    if not isinstance(spec, Mapping):
        param = Param(key, "fixed", value=spec)
    else:
        kinds = [k for k in SPEC_KINDS if k in spec]
        unknown = [k for k in spec if k not in SPEC_KINDS and k not in SPEC_OPTIONS]
        if unknown or len(kinds) != 1:
            if not kinds and _mapping_valued(hint):
                param = Param(key, "fixed", value=dict(spec))  # e.g. a dict-valued leaf
            else:
                raise fail(
                    where,
                    "expected exactly one of {float: [lo, hi]}, {int: [lo, hi]}, {choice: [...]}, "
                    f"{{value: x}} (plus log/step/when), got keys {sorted(map(str, spec))}",
                )
        else:
            param = _parse_distribution(key, kinds[0], spec, hint, fail)
        if "when" in spec:
            param = dataclasses.replace(param, when=_parse_when(spec["when"], key, earlier, fail))

    for value in _values_to_check(param):
        try:
            apply_params(base, {key: value})
        except ConfigError as err:
            raise fail(where, str(err)) from None
    return param


def _parse_distribution(key: str, kind: str, spec: Mapping, hint: Any, fail: Any) -> Param:
    where = f"space.{key}"
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"{where}.log", f"expected true/false, got {log!r}")
    step = spec.get("step")
    if kind == "value":
        return Param(key, "fixed", value=spec["value"])
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            raise fail(where, "choice needs a non-empty list of values")
        if log or step is not None:
            raise fail(where, "log/step apply to float and int ranges, not to choice")
        return Param(key, "choice", choices=tuple(_freeze(c) for c in choices))

    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2 or not all(map(_number, bounds)):
        raise fail(where, f"{kind} needs [lo, hi] with two numbers, got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise fail(where, f"lo must be < hi, got [{low}, {high}]")
    if log and low <= 0:
        raise fail(where, f"a log range needs lo > 0, got [{low}, {high}]")
    if step is not None and (not _number(step) or step <= 0):
        raise fail(f"{where}.step", f"expected a number > 0, got {step!r}")
    if step is not None and log:
        raise fail(where, "log and step cannot be combined")
    if step is not None and step > high - low:
        raise fail(f"{where}.step", f"{step} exceeds the range [{low}, {high}]: only lo is drawn")
    accepted = _scalar_types(hint)
    if kind == "int":
        if not all(isinstance(b, int) for b in bounds) or (step is not None and step != int(step)):
            raise fail(where, f"int needs integer bounds and step, got {bounds!r}")
        if int not in accepted and float not in accepted:
            raise fail(where, f"int range on a key of type {_hint_name(hint)}")
        return Param(key, "int", low=low, high=high, log=log, step=step)
    if float not in accepted:
        raise fail(where, f"float range on a key of type {_hint_name(hint)}; use int or choice")
    return Param(key, "float", low=float(low), high=float(high), log=log, step=step)


def _parse_when(raw: Any, key: str, earlier: list[Param], fail: Any) -> tuple[Condition, ...]:
    where = f"space.{key}.when"
    if not isinstance(raw, Mapping) or not raw:
        raise fail(where, "expected a mapping like {smart.weight: {gt: 0}}")
    declared = {p.key: p for p in earlier}
    conditions = []
    for other, test in raw.items():
        other = str(other)
        if other not in declared:
            if other == key:
                raise fail(where, "a parameter cannot depend on itself")
            raise fail(
                f"{where}.{other}",
                "condition on a parameter that does not exist in space "
                "(conditions may only use parameters declared above)",
            )
        if isinstance(test, Mapping):
            if len(test) != 1 or next(iter(test)) not in OPERATORS:
                raise fail(f"{where}.{other}", f"expected one of {', '.join(OPERATORS)}")
            op, value = next(iter(test.items()))
            if op in ("in", "not_in") and not isinstance(value, list):
                raise fail(f"{where}.{other}", f"{op} needs a list")
            if op in ("gt", "ge", "lt", "le") and not _number(value):
                raise fail(f"{where}.{other}", f"{op} needs a number, got {value!r}")
        else:
            op, value = "eq", test
        _check_reachable(declared[other], op, value, f"{where}.{other}", fail)
        value = tuple(_freeze(v) for v in value) if isinstance(value, list) else _freeze(value)
        conditions.append(Condition(other, op, value))
    return tuple(conditions)


def _check_reachable(param: Param, op: str, value: Any, where: str, fail: Any) -> None:
    """Reject a condition that can never hold: the parameter would silently never be sampled."""
    if isinstance(value, Mapping):
        raise fail(where, f"expected a value or one of {', '.join(OPERATORS)}, got {value!r}")
    takes: tuple[Any, ...] | None = None  # the values a choice or fixed parameter can have
    if param.kind == "choice":
        takes = param.choices
    elif param.kind == "fixed":
        takes = (param.value,)
    if takes is None:  # a float / int range: only comparisons against numbers make sense
        tested = value if op in ("in", "not_in") else [value]
        if not all(_number(v) for v in tested):
            raise fail(where, f"{param.key} is a number range, got {value!r}")
        return
    if op in ("gt", "ge", "lt", "le"):
        if not all(_number(v) for v in takes):
            raise fail(where, f"{op} compares numbers, but {param.key} takes {list(takes)}")
        return
    tested = value if op in ("in", "not_in") else [value]
    missing = [v for v in tested if _freeze(v) not in takes]
    if missing:
        raise fail(where, f"{missing[0]!r} is not a value {param.key} takes ({list(takes)})")


def _values_to_check(param: Param) -> list[Any]:
    """Values that must build a valid TrainConfig: bounds, every choice, the fixed value."""
    if param.kind == "fixed":
        return [param.value]
    if param.kind == "choice":
        return list(param.choices)
    return [param.low, param.high]


def _freeze(value: Any) -> Any:
    """Lists become tuples so params hash and compare like the frozen config does."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _scalar_types(hint: Any) -> set[type]:
    """The scalar Python types a config type hint accepts (Optional and unions unwrapped)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        out: set[type] = set()
        for arg in typing.get_args(hint):
            out |= _scalar_types(arg)
        return out
    if origin is Literal:
        return {type(a) for a in typing.get_args(hint)}
    return {hint} if isinstance(hint, type) else set()


def _mapping_valued(hint: Any) -> bool:
    return typing.get_origin(hint) is dict or hint is dict


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")

