"""What a sweep optimises and what it must satisfy: one or several `Objective`s (`metric:` as a
name or a list, `mode:` as one direction or one per metric) and `Constraint`s
(`constraints: {dev/sst_acc: {ge: 0.45}}`; parsed by `space/objective_keys.py`), and the pure
computations on trials' final (best-epoch) metrics: constraint violations, feasibility, the Pareto
front, and the parent-run params that name them.

A violation follows Optuna's convention: a number <= 0 when the constraint holds, the distance to
its bound when it does not, infinite when the metric is missing. Nothing here imports a framework:
`search/optuna_search.py` hands the violations to Optuna, the report and the ensemble filter
and rank with them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast

from model.config import ConfigError, is_finite_number
from model.evaluate import OVERALL, metric_mode
from orchestrator.contract import (
    BEST_PREFIX,
    FINISHED_STATES,
    SWEEP_CONSTRAINTS_PARAM,
    SWEEP_METRIC_PARAM,
    SWEEP_MODE_PARAM,
    SWEEP_OBJECTIVES_PARAM,
)

Mode = Literal["max", "min"]
BOUNDS = ("ge", "le")  # a constraint's bounds: metric >= ge, metric <= le


@dataclass(frozen=True)
class Objective:
    """One metric a sweep optimises, and whether higher (`max`) or lower (`min`) is better."""

    metric: str
    mode: Mode = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"objective {self.metric}: mode must be max or min, not {self.mode}")

    def sign(self) -> float:
        """+1 for max, -1 for min: `sign * value` is larger when better."""
        return 1.0 if self.mode == "max" else -1.0


@dataclass(frozen=True)
class Constraint:
    """`metric >= ge` and/or `metric <= le`, on a trial's best-epoch value of `metric`."""

    metric: str
    ge: float | None = None
    le: float | None = None

    def __post_init__(self) -> None:
        if self.ge is None and self.le is None:
            raise ConfigError(f"constraint on {self.metric}: give ge, le or both")
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise ConfigError(f"constraint on {self.metric}: ge {self.ge} exceeds le {self.le}")

    def violation(self, value: Any) -> float:
        """How far `value` is outside the bounds (<= 0: inside); inf for a missing value."""
        if not is_finite_number(value):
            return math.inf
        below = self.ge - float(value) if self.ge is not None else -math.inf
        above = float(value) - self.le if self.le is not None else -math.inf
        return max(below, above)

    def describe(self) -> str:
        """`dev/sst_acc >= 0.45`, `0.2 <= dev/sts_corr <= 0.9`."""
        if self.ge is not None and self.le is not None:
            return f"{self.ge:g} <= {self.metric} <= {self.le:g}"
        if self.ge is not None:
            return f"{self.metric} >= {self.ge:g}"
        return f"{self.metric} <= {self.le:g}"


# ---------------------------------------------------------------------------------------------
# Trials: violations, feasibility, the Pareto front


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A trial's best-epoch metrics by plain name (`dev/sst_acc`), from the `best/...` keys of its
    last result or MLflow run."""
    return {
        key.removeprefix(BEST_PREFIX): float(value)
        for key, value in result.items()
        if key.startswith(BEST_PREFIX) and is_finite_number(value)
    }


def constraint_values(
    constraints: Sequence[Constraint], metrics: Mapping[str, Any]
) -> dict[str, float]:
    """Each constraint's violation (metric -> value; <= 0: met) for a trial's final `metrics`."""
    return {c.metric: c.violation(metrics.get(c.metric)) for c in constraints}


def is_feasible(constraints: Sequence[Constraint], metrics: Mapping[str, Any]) -> bool:
    """Whether a trial's final `metrics` meet every constraint (always, without any)."""
    return all(v <= 0 for v in constraint_values(constraints, metrics).values())


def objective_point(
    objectives: Sequence[Objective], metrics: Mapping[str, Any]
) -> tuple[float, ...] | None:
    """A trial's values of the objectives, in order; None when one is missing or not finite."""
    values = [metrics.get(o.metric) for o in objectives]
    if not all(is_finite_number(v) for v in values):
        return None
    return tuple(float(v) for v in values)  # type: ignore[arg-type]


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """Whether point `a` is at least as good as `b` on every objective and better on one."""
    gains = [o.sign() * (x - y) for x, y, o in zip(a, b, objectives, strict=True)]
    return all(g >= 0 for g in gains) and any(g > 0 for g in gains)


def pareto_front(
    points: Sequence[Sequence[float] | None], objectives: Sequence[Objective]
) -> list[int]:
    """Indices of the points no other point dominates (equal points are all kept), in order;
    None points (a trial without every objective) are never on it."""
    present = [i for i, p in enumerate(points) if p is not None]
    return [
        i
        for i in present
        if not any(dominates(points[j], points[i], objectives) for j in present if j != i)  # type: ignore[arg-type]
    ]


def front_indices(
    objectives: Sequence[Objective],
    metrics: Sequence[Mapping[str, Any]],
    eligible: Sequence[bool],
) -> list[int]:
    """The Pareto front of the `eligible` trials (by their final `metrics`) of a sweep with
    several objectives; empty with one (its best trial says it all)."""
    if len(objectives) < 2:
        return []
    points = [
        objective_point(objectives, m) if ok else None
        for m, ok in zip(metrics, eligible, strict=True)
    ]
    return pareto_front(points, objectives)


class Judged(Protocol):
    """A trial outcome as the functions below read it (`sweep.TrialOutcome`)."""

    @property
    def run_name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def feasible(self) -> bool: ...

    @property
    def pareto(self) -> bool: ...


JudgedT = TypeVar("JudgedT", bound=Judged)


class HasState(Protocol):
    """A live trial outcome or a stored run: anything with a trial state."""

    @property
    def state(self) -> str: ...


StatedT = TypeVar("StatedT", bound=HasState)


class Goals(Protocol):
    """What a sweep optimises and must satisfy (`space.SearchSpace` has both)."""

    @property
    def objectives(self) -> tuple[Objective, ...]: ...

    @property
    def constraints(self) -> tuple[Constraint, ...]: ...


def judge_outcomes(
    goals: Goals, trials: Sequence[tuple[JudgedT, Mapping[str, Any]]]
) -> list[JudgedT]:
    """The trial outcomes (dataclasses, each with its last result) with `feasible` and `pareto`
    set by `judge`."""
    judgement = judge(goals, [(outcome.state, result) for outcome, result in trials])
    return [
        dataclasses.replace(cast(Any, outcome), feasible=ok, pareto=on)
        for (outcome, _), ok, on in zip(trials, judgement.feasible, judgement.pareto, strict=True)
    ]


def judged_lines(trials: Sequence[Judged], *, multi_objective: bool = False) -> list[str]:
    """What the sweep's summary adds: how many finished trials missed a constraint, and for
    several objectives the Pareto front's trials (there is no single best trial then)."""
    finished = [t for t in trials if t.state in FINISHED_STATES]
    infeasible = sum(not t.feasible for t in finished)
    lines = []
    if infeasible:
        left = "left off the Pareto front" if multi_objective else "the best is among the others"
        lines.append(
            f"infeasible: {infeasible} of {len(finished)} finished trials missed a constraint "
            f"({left})"
        )
    front = [t.run_name for t in trials if t.pareto]
    if front:
        lines.append(f"pareto front ({len(front)} trials): " + "; ".join(front))
    elif multi_objective:
        lines.append("pareto front (0 trials): no trial completed and met every constraint")
    return lines


def ranked_indices(
    values: Sequence[float | None], mode: str, eligible: Sequence[bool] | None = None
) -> list[int]:
    """Indices of the eligible finite values, best first (`mode` max or min; the earlier first
    on ties): the one ranking of "best trial" the sweep, the report and a warm start use."""
    sign = 1.0 if mode == "max" else -1.0
    ok = eligible if eligible is not None else [True] * len(values)
    present = [i for i, v in enumerate(values) if ok[i] and is_finite_number(v)]
    return sorted(present, key=lambda i: -sign * float(values[i]))  # type: ignore[arg-type]


def best_index(
    values: Sequence[float | None], mode: str, eligible: Sequence[bool] | None = None
) -> int | None:
    """Index of the best eligible value (see `ranked_indices`); None when there is none."""
    ranked = ranked_indices(values, mode, eligible)
    return ranked[0] if ranked else None


# ---------------------------------------------------------------------------------------------
# The sweep parent run's params naming them (read back by `report` and `ensemble`)


def objectives_text(objectives: Sequence[Objective]) -> str:
    """The objectives as JSON for an MLflow param: [["dev/sst_acc", "max"], ...]."""
    return json.dumps([[o.metric, o.mode] for o in objectives])


def constraints_text(constraints: Sequence[Constraint]) -> str:
    """The constraints as JSON for an MLflow param: {"dev/sst_acc": {"ge": 0.45}, ...}."""
    return json.dumps(
        {
            c.metric: {b: getattr(c, b) for b in BOUNDS if getattr(c, b) is not None}
            for c in constraints
        }
    )


def objective_params(
    objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> dict[str, str]:
    """The sweep parent run's params naming its objectives and (if any) its constraints."""
    params = {SWEEP_OBJECTIVES_PARAM: objectives_text(objectives)}
    if constraints:
        params[SWEEP_CONSTRAINTS_PARAM] = constraints_text(constraints)
    return params


def read_objectives(text: str | None, metric: str, mode: str) -> tuple[Objective, ...]:
    """The objectives a parent run's param names; a sweep logged before it: (metric, mode)."""
    if not text:
        return (Objective(metric, "min" if mode == "min" else "max"),)
    return tuple(Objective(str(m), "min" if d == "min" else "max") for m, d in json.loads(text))


def read_constraints(text: str | None) -> tuple[Constraint, ...]:
    """The constraints a parent run's param names; none for a sweep logged without any."""
    if not text:
        return ()
    return tuple(
        Constraint(str(m), bounds.get("ge"), bounds.get("le"))
        for m, bounds in json.loads(text).items()
    )


@dataclass(frozen=True)
class SweepGoals:
    """What a stored sweep optimised and had to satisfy, read back from its parent run."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def judged(self) -> bool:
        """Whether there is anything to judge: constraints, or a front to find."""
        return bool(self.constraints) or self.multi_objective


def sweep_goals(params: Mapping[str, str]) -> SweepGoals:
    """The goals a sweep parent run's params name (`sweep.objectives`, `sweep.constraints`); a
    sweep logged before them has one objective, `sweep.metric`, and no constraint."""
    metric = params.get(SWEEP_METRIC_PARAM, OVERALL)
    mode = params.get(SWEEP_MODE_PARAM) or metric_mode(metric)
    return SweepGoals(
        read_objectives(params.get(SWEEP_OBJECTIVES_PARAM), metric, mode),
        read_constraints(params.get(SWEEP_CONSTRAINTS_PARAM)),
    )


@dataclass(frozen=True)
class Judgement:
    """Per trial, in the order given: whether it met the constraints (always, without any), and
    whether it is on the Pareto front of the completed feasible trials (never with one
    objective)."""

    feasible: list[bool]
    pareto: list[bool]

    def infeasible(self, trials: Sequence[StatedT], states: Sequence[str]) -> list[StatedT]:
        """The trials in one of `states` that missed a constraint."""
        return [
            t for t, ok in zip(trials, self.feasible, strict=True) if t.state in states and not ok
        ]


def judge(goals: Goals, trials: Sequence[tuple[str, Mapping[str, Any]]]) -> Judgement:
    """The one judge of live and stored trials: each trial is its state and its metrics (a Ray
    result or an MLflow run's, read by their `best/...` keys)."""
    metrics = [final_metrics(result) for _, result in trials]
    feasible = [is_feasible(goals.constraints, m) for m in metrics]
    states = [state for state, _ in trials]
    eligible = [s == "completed" and ok for s, ok in zip(states, feasible, strict=True)]
    front = set(front_indices(goals.objectives, metrics, eligible))
    return Judgement(feasible, [i in front for i in range(len(trials))])
