"""Inert settings in a search space (model/config_guards.py), checked where each one is set.

A space layers values on its base config: the base itself, fixed `space:` values, sampled values,
and a study's arms. A setting counts against the layer that set its inert key, so a shared base's
round-robin sampling that one space turns off with `schedule.kind: simultaneous` is no mistake:
- the base config and fixed values: a warning at space load (another space may need them);
- sampled values: a warning per sampled trial (the sampler may legitimately draw them);
- an arm: an error at space load, since an arm whose change has no effect measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from model.config import ConfigError, TrainConfig
from model.config_guards import InertSetting, inert_settings, warn_inert_settings
from orchestrator.config import apply_params
from orchestrator.space.arms import StudySpec
from orchestrator.space.params import Param

__all__ = ["check_space_settings", "warn_sampled_settings"]

Fail = Callable[[str, str], ConfigError]


def check_space_settings(
    source: str, base: TrainConfig, params: Iterable[Param], study: StudySpec | None, fail: Fail
) -> None:
    """Warn about inert settings of the base config and fixed values; raise `fail(...)` for an
    arm that sets an inert key."""
    params = list(params)
    fixed = {p.key: p.value for p in params if p.kind == "fixed" and not p.when}
    from_base = {s.key for s in inert_settings(base)}
    for setting in _inert_whatever_is_drawn(base, fixed, params):
        if setting.key in fixed:
            warn_inert_settings([setting], f"{source}: space.{setting.key}: ", stacklevel=4)
        elif setting.key in from_base:
            warn_inert_settings([setting], f"{source}: base: ", stacklevel=4)
    if study is None:
        return
    for arm in study.arms:
        # At phase 2's budget: its runs alone enter the ablation table.
        values = {**fixed, **arm.params, "optim.epochs": study.confirm_epochs}
        inert = _inert_whatever_is_drawn(base, values, params)
        own = [s for s in inert if s.key in arm.params]
        if own:
            raise fail(f"arms.{arm.name}.{own[0].key}", f"{own[0].message}; the arm tests nothing")


def _inert_whatever_is_drawn(
    base: TrainConfig, values: Mapping[str, Any], params: list[Param]
) -> list[InertSetting]:
    """The inert settings of `base` with `values` that stay inert whichever value the searched
    keys take: each searched key tried at each of its choices (or both bounds), one key at a
    time with the others at their first value. A fixed smart.epsilon is live when smart.weight
    is searched over [1, 5], though the base's weight is 0."""
    searched = [p for p in params if p.searched and not p.when]
    first = {p.key: _drawable(p)[0] for p in searched}
    found = inert_settings(apply_params(base, {**first, **values}))
    for param in searched:
        for value in _drawable(param)[1:]:
            try:
                config = apply_params(base, {**first, param.key: value, **values})
            except ConfigError:  # this combination cannot be drawn with these values
                continue
            keys = {s.key for s in inert_settings(config)}
            found = [s for s in found if s.key in keys]
    return found


def _drawable(param: Param) -> list[Any]:
    """Values the sampler may draw for a searched `param`: its choices, or its range's bounds."""
    if param.kind == "choice":
        return list(param.choices)
    assert param.low is not None and param.high is not None  # a range has both (params.py)
    bounds = [param.low, param.high]
    return [int(b) for b in bounds] if param.kind == "int" else bounds


def warn_sampled_settings(
    base: TrainConfig, params: Mapping[str, Any], sampled: Iterable[str], label: str
) -> list[InertSetting]:
    """Warn about inert settings among a trial's `sampled` keys; `label` names the trial."""
    keys = set(sampled) & set(params)
    if not keys:
        return []
    own = [s for s in inert_settings(apply_params(base, params)) if s.key in keys]
    warn_inert_settings(own, f"{label}: ", stacklevel=3)
    return own
