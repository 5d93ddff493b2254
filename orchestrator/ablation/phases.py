"""An ablation study's phases as sweeps: which runs each phase holds, and what it prints
before it runs (`--dry-run`). No framework here: a study's plan is checked without starting Ray.

Phase 1 (`tune-<arm>`, only when the space searches something) is the space's search with the
arm's overrides fixed, on the first seed; phase 2 (`confirm`) is every arm's chosen config on every
seed at `confirm_epochs`, run to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model.config import ConfigError
from orchestrator.contract import (
    ARM_PARAM,
    CONFIRM_PHASE,
    PHASE_PARAM,
    ROUND_PARAM,
    SEED_PARAM,
    TUNE_PHASE,
    race_round_dir,
    study_phase_dir,
)
from orchestrator.space.arms import Arm, StudySpec
from orchestrator.space.schema import Param, SchedulerSpec, SearchSpace

if TYPE_CHECKING:
    from orchestrator.sweep.outcome import TrialOutcome


class StudyError(ConfigError):
    """A study cannot go on as asked (e.g. an arm whose tuning phase completed no trial)."""


@dataclass(frozen=True)
class Phase:
    """One sweep of a study: its directory name (`tune-smart`, `confirm`), its space, and the
    configs it runs in order (confirm), or None when its space's Optuna study proposes them."""

    key: str
    space: SearchSpace
    configs: tuple[dict[str, Any], ...] | None = None


def study_of(space: SearchSpace) -> StudySpec:
    if space.study is None:
        raise ValueError(f"{space.source}: not a study (no arms:)")
    return space.study


def tune_phase(space: SearchSpace, study: StudySpec, arm: Arm) -> Phase:
    """Phase 1 of `arm`: the space's search with the arm's overrides fixed, on the first seed."""
    fixed = [Param(key, "fixed", value=value) for key, value in arm.overrides]
    fixed.append(Param(SEED_PARAM, "fixed", value=study.seeds[0]))
    key = study_phase_dir(TUNE_PHASE, arm.name)
    return Phase(
        key,
        space.replace(
            name=f"{space.name}.{key}",  # the Optuna study's name in the shared optuna.db
            params=(*fixed, *space.params),
            labels=((ARM_PARAM, arm.name), (PHASE_PARAM, TUNE_PHASE)),
            study=None,
        ),
    )


def confirm_phase(
    space: SearchSpace,
    study: StudySpec,
    chosen: dict[str, dict[str, Any]],
    race_round: tuple[int, dict[str, range]] | None = None,
) -> Phase:
    """Phase 2: each arm's chosen params on every seed, `confirm_epochs` each, run to the end;
    for a race's round (`race_round`: its number and the seeds each arm runs in it) those seeds
    of those arms, each run labelled with its round."""
    number, seeds = race_round or (1, {arm.name: range(len(study.seeds)) for arm in study.arms})
    round_label = {ROUND_PARAM: number} if race_round else {}
    configs = [
        {
            **chosen[arm.name],
            SEED_PARAM: index if study.race else study.seeds[index],  # a race: seeds 0, 1, ...
            "optim.epochs": study.confirm_epochs,
            ARM_PARAM: arm.name,
            PHASE_PARAM: CONFIRM_PHASE,
            **round_label,
        }
        for arm in study.arms
        for index in seeds.get(arm.name, ())
    ]
    key = race_round_dir(number)
    confirm = space.replace(
        name=f"{space.name}.{key}",
        params=(),
        num_samples=len(configs),
        repeats=1,
        scheduler=SchedulerSpec("none", max_epochs=study.confirm_epochs),
        labels=((PHASE_PARAM, CONFIRM_PHASE),),
        study=None,
    )
    return Phase(key, confirm, tuple(configs))


def best_params(space: SearchSpace, trials: list[TrialOutcome]) -> dict[str, Any]:
    """The params of a tune phase's best completed trial (ASHA-stopped ones trained less), without
    the seed and epochs, which the confirm phase sets."""
    completed = [t for t in trials if t.state == "completed" and t.best_value is not None]
    if not completed:
        raise StudyError(
            f"{space.source}: phase {space.name}: no tuning trial completed, so there is no "
            "config to confirm; see the trials' errors with `orchestrator report`"
        )
    sign = 1.0 if space.mode == "max" else -1.0
    best = max(completed, key=lambda t: sign * float(t.best_value))  # type: ignore[arg-type]
    return {k: v for k, v in best.params.items() if k not in (SEED_PARAM, "optim.epochs")}


def untuned_params(space: SearchSpace, arm: Arm) -> dict[str, Any]:
    """What an arm runs when nothing is tuned: the space's fixed values and its own overrides."""
    fixed = {p.key: p.value for p in space.params if not p.searched}
    return {**fixed, **arm.params}


def race_plan_line(study: StudySpec) -> str:
    """A race's confirm phase in one line: its looks, and the fewest and most runs it can take."""
    race = study.race
    assert race is not None
    looks = [*range(race.min, race.max, race.step), race.max]
    arms = len(study.arms)
    return (
        f"phase {CONFIRM_PHASE}: a race of {study.confirm_epochs}-epoch runs, seeds in rounds "
        f"(looks at {', '.join(map(str, looks))} seeds per arm): between {arms * race.min} "
        f"and {arms * race.max} runs; each arm stops once its verdict is resolved"
    )


def study_dry_run_lines(space: SearchSpace) -> list[str]:
    """What `sweep --dry-run` prints for a study: arms, seeds, phases and the runs of each
    (each arm's overrides validated; tuning configs sampled as its first trials would be)."""
    from orchestrator.search.optuna_search import describe_dry_run

    study = study_of(space)
    tuned = bool(space.searched)
    lines = [
        f"{space.source}: valid study; {len(study.arms)} arms x {len(study.seeds)} seeds "
        f"{list(study.seeds)}, baseline {study.baseline}, ranked on {space.metric}",
    ]
    if tuned:
        lines.append(f"phase {TUNE_PHASE}: {space.total_trials} trials per arm, {space.sampler}")
    epochs = study.confirm_epochs
    fixed = f"phase {CONFIRM_PHASE}: {study.runs} runs of {epochs} epoch(s)"
    lines.append(race_plan_line(study) if study.race else fixed)
    for arm in study.arms:
        lines.append(f"  arm {arm.name}: {arm.describe()}")
        if tuned:
            phase = tune_phase(space, study, arm)
            for label, _params in describe_dry_run(phase.space, min(space.num_samples, 3)):
                lines.append(f"      {TUNE_PHASE}: {label}")
    return lines
