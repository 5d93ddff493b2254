"""The `metric:`, `mode:` and `constraints:` keys of a space file as `Objective`s and
`Constraint`s (orchestrator/objectives.py), and the combinations of them with a sampler, a
scheduler or a study that cannot work; every error names the file and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from model.config import ConfigError, TrainConfig, is_finite_number
from model.evaluate import (
    DEV_METRICS,
    OVERALL,
    SELECTION_METRICS,
    SELECTION_OVERALL,
    SELECTION_SPLIT,
    metric_mode,
    on_split,
)
from orchestrator.contract import METRICS
from orchestrator.objectives import BOUNDS, Constraint, Objective

Fail = Callable[[str, str], ConfigError]
# Samplers that take several objectives, and those that read Optuna's constraint values (the
# others do not adapt to any result, except cmaes: see check_fit).
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random", "grid", "qmc", "gp")
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")


def check_metric(metric: Any, base: TrainConfig, key: str, fail: Fail) -> str:
    """A metric a sweep may rank or filter on: reported, and on the selection split when the base
    holds one out (dev is then kept for reporting)."""
    split_on = base.data.selection > 0
    if split_on and metric in DEV_METRICS:
        raise fail(
            key,
            f"{metric} would rank trials on dev, which data.selection keeps for reporting; "
            f"use {on_split(metric, SELECTION_SPLIT)}",
        )
    if metric not in METRICS:
        raise fail(key, f"{metric!r} is not one of {', '.join(METRICS)}")
    if metric in SELECTION_METRICS and not split_on:
        raise fail(
            key,
            f"{metric} needs a selection split: set data.selection (e.g. 0.1) in the base config",
        )
    return str(metric)


def parse_objectives(
    raw: Mapping[str, Any], base: TrainConfig, fail: Fail
) -> tuple[Objective, ...]:
    """`metric` (a name or a list; by default selection/overall with a selection split, else
    dev/overall) and `mode` (one direction, or one per metric; by default each metric's own)."""
    default = SELECTION_OVERALL if base.data.selection > 0 else OVERALL
    metrics = raw.get("metric", default)
    several = isinstance(metrics, list)
    if several and not metrics:
        raise fail("metric", "expected a metric name or a non-empty list of them")
    names = [check_metric(m, base, "metric", fail) for m in (metrics if several else [metrics])]
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise fail("metric", f"{', '.join(repeated)} listed more than once")
    modes = raw.get("mode")
    if modes is None:
        modes = [metric_mode(m) for m in names]
    elif isinstance(modes, list):
        if not several:
            raise fail("mode", "a list of modes needs a list of metrics (metric: [a, b])")
        if len(modes) != len(names):
            raise fail(
                "mode",
                f"{len(modes)} modes for {len(names)} metrics: give one per metric or one for all",
            )
    else:
        modes = [modes] * len(names)
    for mode in modes:
        if mode not in ("max", "min"):
            raise fail("mode", f"expected max or min, got {mode!r}")
    return tuple(Objective(m, mode) for m, mode in zip(names, modes, strict=True))


def parse_constraints(raw: Any, base: TrainConfig, fail: Fail) -> tuple[Constraint, ...]:
    """`constraints: {METRIC: {ge: X, le: Y}}`: each metric checked like `metric:`, each bound a
    finite number, at least one bound per metric."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise fail("constraints", "expected a mapping like {dev/sst_acc: {ge: 0.45}}")
    out = []
    for metric, bounds in raw.items():
        key = f"constraints.{metric}"
        check_metric(metric, base, key, fail)
        if not isinstance(bounds, Mapping) or not bounds:
            raise fail(key, "expected a mapping like {ge: 0.45} or {le: 0.9}")
        for bound, value in bounds.items():
            if bound not in BOUNDS:
                raise fail(f"{key}.{bound}", "unknown bound (known: ge, le)")
            if not is_finite_number(value):
                raise fail(f"{key}.{bound}", f"expected a number, got {value!r}")
        try:
            out.append(Constraint(str(metric), bounds.get("ge"), bounds.get("le")))
        except ConfigError as err:
            raise fail(key, str(err).split(": ", 1)[-1]) from None
    return tuple(out)


def check_fit(
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
    raw: Mapping[str, Any],
    fail: Fail,
) -> None:
    """Combinations that cannot work: ASHA on several objectives (it ranks one number), a sampler
    that cannot take several objectives or ignores constraints while adapting (cmaes), and a
    study (it picks each arm's config on one metric, over every trial)."""
    sampler = raw.get("sampler", "tpe")
    if len(objectives) > 1:
        if _scheduler_name(raw.get("scheduler")) == "asha":
            raise fail(
                "scheduler",
                "ASHA stops trials by one metric, which would cut trials on the Pareto front of "
                "the others; a multi-objective sweep runs every trial to the end: scheduler: none",
            )
        if sampler not in MULTI_OBJECTIVE_SAMPLERS:
            raise fail(
                "sampler",
                f"{sampler} optimises one metric; for metric: [...] use "
                + ", ".join(MULTI_OBJECTIVE_SAMPLERS),
            )
    if constraints and sampler == "cmaes":
        raise fail("sampler", f"cmaes ignores constraints; use {', '.join(CONSTRAINED_SAMPLERS)}")
    if "arms" in raw and (len(objectives) > 1 or constraints):
        key = "metric" if len(objectives) > 1 else "constraints"
        raise fail(key, "a study picks each arm's config on one metric; not in a study")


def _scheduler_name(raw: Any) -> str | None:
    """The scheduler a space names (None when it names none, so the default applies)."""
    if isinstance(raw, Mapping):
        return str(raw.get("name", "asha"))
    return None if raw is None else str(raw)
