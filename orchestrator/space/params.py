"""One search-space parameter: a dotted config key's distribution and its `when` conditions.

A `space:` entry is a float/int range (`{float: [lo, hi], log: true}`, `{int: [lo, hi], step: 2}`),
a categorical `{choice: [...]}` or a fixed value, optionally under conditions on parameters
declared above it (`when: {smart.weight: {gt: 0}}`). `parse_params` checks every entry against
the trainer's dataclasses: each bound, choice and fixed value must build a valid TrainConfig.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from model.config import (
    ConfigError,
    TrainConfig,
    config_field_types,
    flatten,
    hint_name,
    is_finite_number,
)
from orchestrator.config import apply_params

OPERATORS: tuple[str, ...] = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in")
SPEC_KINDS = ("float", "int", "choice", "value")
SPEC_OPTIONS = frozenset({"log", "step", "when"})

ParamKind = Literal["float", "int", "choice", "fixed"]
# fail(dotted key, message) -> the SpaceError to raise, naming the space file and the key
Fail = Callable[[str, str], ConfigError]


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


def parse_params(space: Any, base: TrainConfig, fail: Fail) -> list[Param]:
    """The `space:` mapping as validated parameters, in the order declared."""
    if not isinstance(space, Mapping) or not space:
        raise fail("space", "expected a non-empty mapping of dotted config keys to distributions")
    params: list[Param] = []
    for key, spec in _expand_sections(space).items():
        params.append(_parse_param(key, spec, base, params, fail))
    return params


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


def _parse_param(
    key: str, spec: Any, base: TrainConfig, earlier: list[Param], fail: Fail
) -> Param:
    where = f"space.{key}"
    hints = config_field_types()
    if key not in hints:
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


def _parse_distribution(key: str, kind: str, spec: Mapping, hint: Any, fail: Fail) -> Param:
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
    if not isinstance(bounds, list) or len(bounds) != 2 or not all(map(is_finite_number, bounds)):
        raise fail(where, f"{kind} needs [lo, hi] with two numbers, got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise fail(where, f"lo must be < hi, got [{low}, {high}]")
    if log and low <= 0:
        raise fail(where, f"a log range needs lo > 0, got [{low}, {high}]")
    if step is not None and (not is_finite_number(step) or step <= 0):
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
            raise fail(where, f"int range on a key of type {hint_name(hint)}")
        return Param(key, "int", low=low, high=high, log=log, step=step)
    if float not in accepted:
        raise fail(where, f"float range on a key of type {hint_name(hint)}; use int or choice")
    return Param(key, "float", low=float(low), high=float(high), log=log, step=step)


def _parse_when(raw: Any, key: str, earlier: list[Param], fail: Fail) -> tuple[Condition, ...]:
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
            if op in ("gt", "ge", "lt", "le") and not is_finite_number(value):
                raise fail(f"{where}.{other}", f"{op} needs a number, got {value!r}")
        else:
            op, value = "eq", test
        _check_reachable(declared[other], op, value, f"{where}.{other}", fail)
        value = tuple(_freeze(v) for v in value) if isinstance(value, list) else _freeze(value)
        conditions.append(Condition(other, op, value))
    return tuple(conditions)


def _check_reachable(param: Param, op: str, value: Any, where: str, fail: Fail) -> None:
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
        if not all(is_finite_number(v) for v in tested):
            raise fail(where, f"{param.key} is a number range, got {value!r}")
        return
    if op in ("gt", "ge", "lt", "le"):
        if not all(is_finite_number(v) for v in takes):
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
