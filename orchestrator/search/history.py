"""A sweep's Optuna history read back and carried into a later study: an extension (`--extend`)
and a warm start (`warm_start:`) read the earlier study's trials here, a warm start tells them to
its new study and enqueues the best configs first, and an extension's ASHA gets their rung values.

Like every module of `search/`, it imports optuna. What it hands out is plain data
(`PastStudy`, distribution specs as in `space/lineage.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from model.config import flatten_config
from orchestrator.objectives import Objective, pareto_front, ranked_indices
from orchestrator.search.optuna_search import (
    GROUP_ATTR,
    RAY_TRIAL_ATTR,
    REPEAT_ATTR,
    SweepStudy,
    _encode_choice,
)
from orchestrator.space.lineage import normalised
from orchestrator.space.schema import Param, SearchSpace

WARM_START_ATTR = "warm_start_sweep"  # on a told or enqueued trial: the sweep it came from
WARM_START_NUMBER_ATTR = "warm_start_number"  # a told trial's number in that sweep's study
WARM_START_RANK_ATTR = "warm_start_rank"  # an enqueued config's rank there (0 = best)
# Bookkeeping of the driver that ran a trial: meaningless in another study.
DRIVER_ATTRS = (RAY_TRIAL_ATTR, REPEAT_ATTR, GROUP_ATTR)
TOLD_STATES = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class PastTrial:
    """One trial of an earlier study: state name, params as suggested, values, epoch values,
    and its constraint violations (metric -> value; <= 0: met)."""

    number: int
    state: str  # COMPLETE / PRUNED / FAIL / RUNNING / WAITING
    params: dict[str, Any]
    values: tuple[float, ...] | None
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def told_from_elsewhere(self) -> bool:
        """A trial a warm start told this study: it ran in another sweep (a config enqueued
        from there, WARM_START_RANK_ATTR, ran here)."""
        return WARM_START_NUMBER_ATTR in self.user_attrs


@dataclass(frozen=True)
class PastStudy:
    """An earlier study: its name, directions (`maximize` / `minimize`), the latest distribution
    spec of each parameter its trials suggested, and its trials in number order."""

    name: str
    directions: tuple[str, ...]
    specs: dict[str, dict[str, Any]]
    trials: tuple[PastTrial, ...]


def param_distribution(param: Param) -> BaseDistribution:
    """The distribution `search.DefineByRun` suggests `param` with (the same object, so a trial
    told with it and one suggested are in one search space for TPE)."""
    low, high = param.low, param.high
    if param.kind == "float":
        assert low is not None and high is not None
        return FloatDistribution(low, high, log=param.log, step=param.step)
    if param.kind == "int":
        assert low is not None and high is not None
        return IntDistribution(int(low), int(high), log=param.log, step=int(param.step or 1))
    return CategoricalDistribution([_encode_choice(c) for c in param.choices])


def distribution_spec(distribution: BaseDistribution) -> dict[str, Any]:
    """A distribution as a plain spec (see space/lineage.py)."""
    if isinstance(distribution, CategoricalDistribution):
        return {"kind": "choice", "choices": normalised(list(distribution.choices))}
    kind = "int" if isinstance(distribution, IntDistribution) else "float"
    assert isinstance(distribution, (IntDistribution, FloatDistribution))
    return {
        "kind": kind,
        "low": distribution.low,
        "high": distribution.high,
        "log": distribution.log,
        "step": distribution.step,
    }


def space_specs(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The spec of every searched parameter of `space`, in file order."""
    return {p.key: distribution_spec(param_distribution(p)) for p in space.searched}


def sweep_record(space: SearchSpace) -> dict[str, Any]:
    """What `sweep.json` keeps of a sweep so `--extend` can tell the same sweep from an edited
    one: objectives and constraints, seeds per config, the scheduler, every parameter (with its
    conditions) and the base config, as dotted keys."""
    record: dict[str, Any] = {
        "objectives": [[o.metric, o.mode] for o in space.objectives],
        "constraints": [[c.metric, c.ge, c.le] for c in space.constraints],
        "repeats": space.repeats,
    }
    for key in ("name", "grace_period", "reduction_factor", "max_epochs"):
        record[f"scheduler.{key}"] = getattr(space.scheduler, key)
    specs = space_specs(space)
    for p in space.params:
        spec = specs.get(p.key, {"kind": "fixed", "value": p.value})
        if p.when:
            spec = {**spec, "when": [[c.key, c.op, c.value] for c in p.when]}
        record[f"space.{p.key}"] = spec
    record.update({f"base.{k}": v for k, v in flatten_config(space.base).items()})
    return dict(normalised(record))


def read_past_study(storage: str, study_name: str) -> PastStudy | None:
    """The study `study_name` in `storage`, or None when there is none (a SQLite file that does
    not exist is not created)."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(
            study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:
        return None
    specs: dict[str, dict[str, Any]] = {}
    trials = []
    for frozen in study.get_trials(deepcopy=False):
        specs.update({k: distribution_spec(d) for k, d in frozen.distributions.items()})
        trials.append(
            PastTrial(
                number=frozen.number,
                state=frozen.state.name,
                params=dict(frozen.params),
                values=tuple(frozen.values) if frozen.values is not None else None,
                intermediate={int(s): float(v) for s, v in frozen.intermediate_values.items()},
                user_attrs=dict(frozen.user_attrs),
                constraints=dict(frozen.constraints),
            )
        )
    directions = tuple(d.name.lower() for d in study.directions)
    return PastStudy(study_name, directions, specs, tuple(trials))


def rung_history(past: PastStudy) -> dict[str, dict[int, float]]:
    """Each earlier trial's finite per-epoch values of the metric (what ASHA's rungs recorded
    of it), keyed `<study>#<number>` so they never collide with a Ray trial id. Trials a warm
    start told the study are left out: they ran under another sweep's base config and rungs."""
    out = {}
    for trial in past.trials:
        if trial.told_from_elsewhere:
            continue
        values = {s: v for s, v in trial.intermediate.items() if math.isfinite(v)}
        if values:
            out[f"{past.name}#{trial.number}"] = values
    return out


def best_configs(past: PastStudy, top: int) -> list[PastTrial]:
    """The `top` best COMPLETE feasible trials, one per distinct config (repeats of a config
    share its params): by value for one objective, the Pareto front in number order for
    several."""
    ok = [t for t in past.trials if t.state == "COMPLETE" and t.values and t.feasible]
    points = [tuple(t.values or ()) for t in ok]
    objectives = [
        Objective(f"value {i}", "max" if d == "maximize" else "min")
        for i, d in enumerate(past.directions)
    ]
    if len(objectives) == 1:
        order = ranked_indices([point[0] for point in points], objectives[0].mode)
    else:
        order = pareto_front(points, objectives)
    ranked = [ok[i] for i in order]
    out: list[PastTrial] = []
    for trial in ranked:
        if len(out) < top and all(trial.params != kept.params for kept in out):
            out.append(trial)
    return out


@dataclass(frozen=True)
class WarmStartCounts:
    """What a warm start did: trials told, trials left out (outside the new space), configs
    enqueued to run first."""

    told: int
    left_out: int
    enqueued: int


def warm_start_study(
    space: SearchSpace, storage: str, past: PastStudy, top: int
) -> WarmStartCounts:
    """Tell the new sweep's study (created here as the sweep will open it) every COMPLETE and
    PRUNED trial of `past` whose params fit `space`'s distributions (with their constraint
    values: `warm_start.py` checked both sweeps have the same constraints), then enqueue its
    `top` best feasible configs among those; a study already warm-started (a rerun) is left as
    it is."""
    study = SweepStudy(space, storage).study
    if any(WARM_START_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return WarmStartCounts(0, 0, 0)
    distributions = {p.key: param_distribution(p) for p in space.searched}
    constrained = {c.metric for c in space.constraints}
    told, left_out = [], 0
    for trial in past.trials:
        if trial.state not in TOLD_STATES:
            continue
        frozen = _told_trial(trial, distributions, past.name, constrained)
        if frozen is None:
            left_out += 1
            continue
        study.add_trial(frozen)
        told.append(trial)
    kept = PastStudy(past.name, past.directions, past.specs, tuple(told))
    best = best_configs(kept, top)
    for rank, trial in enumerate(best):
        attrs = {WARM_START_ATTR: past.name, WARM_START_RANK_ATTR: rank}
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return WarmStartCounts(len(told), left_out, len(best))


def _told_trial(
    trial: PastTrial,
    distributions: dict[str, BaseDistribution],
    source: str,
    constrained: set[str],
) -> optuna.trial.FrozenTrial | None:
    """`trial` as a finished trial of the new study, or None if a param lies outside it. Of
    the earlier study's system attrs only the values of `constrained` metrics go on (through
    Optuna's constraint API); the rest are that study's sampler's bookkeeping."""
    if any(key not in distributions for key in trial.params):
        return None
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in DRIVER_ATTRS}
    user_attrs.update({WARM_START_ATTR: source, WARM_START_NUMBER_ATTR: trial.number})
    try:
        return optuna.trial.create_trial(
            state=TrialState[trial.state],
            values=list(trial.values) if trial.values is not None else None,
            params=trial.params,
            distributions={key: distributions[key] for key in trial.params},
            intermediate_values=trial.intermediate,
            user_attrs=user_attrs,
            constraints={k: v for k, v in trial.constraints.items() if k in constrained},
        )
    except ValueError:  # a value outside the new range or choices
        return None
