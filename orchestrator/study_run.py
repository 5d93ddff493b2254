"""Run an ablation study (a space with `arms:`, see study.py) as a sequence of sweeps.

Phase 1 (`tune`, only when the space searches something): per arm, a sweep of `num_samples`
trials on the first seed, with the space's sampler and scheduler, ranking on its metric (the
selection split's when `data.selection` is on). Phase 2 (`confirm`): every arm's best config (its
own overrides when nothing is tuned) on every seed, at `confirm_epochs`, no early stopping; only
these runs enter the ablation table. Each phase is a Ray experiment of its own under
`<results>/<study>/<phase>/`, all logged under one MLflow parent run; `sweep.json` records the
finished phases, so `--resume` restores the unfinished one and runs the rest.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import ConfigError
from orchestrator import ray_tune
from orchestrator.contract import (
    ARM_PARAM,
    CONFIRM_PHASE,
    PHASE_PARAM,
    SEED_PARAM,
    TUNE_PHASE,
    SweepLayout,
)
from orchestrator.proposer import FixedTrials, TrialProposer
from orchestrator.search import SweepStudy, make_sampler
from orchestrator.space import Param, SchedulerSpec, SearchSpace
from orchestrator.study import Arm, StudySpec
from orchestrator.sweep import (
    ENDED_STATES,
    SweepOutcome,
    SweepRun,
    SweepStateError,
    TrialOutcome,
    finish_tracking,
    join_ray,
    start_tracking,
    trial_outcomes,
)
from orchestrator.sweep_callbacks import (
    DropResumeState,
    LiveTrialTable,
    MlflowRelay,
    TrialListener,
)
from orchestrator.tracking.writer import Status

PHASES_KEY = "finished_phases"  # in sweep.json: the phases that ran to the end


class StudyError(ConfigError):
    """A study cannot go on as asked (e.g. an arm whose tuning phase completed no trial)."""


@dataclass(frozen=True)
class Phase:
    """One sweep of a study: its directory name (`tune-smart`, `confirm`), its space, and the
    configs it runs in order (confirm), or None when its space's Optuna study proposes them."""

    key: str
    space: SearchSpace
    configs: tuple[dict[str, Any], ...] | None = None


def run_study(
    space: SearchSpace,
    *,
    data_dir: Path,
    results_dir: Path = Path("results"),
    address: str | None = None,
    resume: bool = False,
    live_table: bool = True,
    num_cpus: int | None = None,
    echo: Callable[[str], None] = print,
) -> SweepOutcome:
    """Run (or with `resume`, continue) the study `space`; every trial of every phase is in the
    returned outcome (`labels` say each one's arm and phase)."""
    study = _study_of(space)
    started = time.monotonic()
    make_sampler(space)  # a sampler that cannot be built fails before anything is written
    layout = SweepLayout.of(results_dir, space.name)
    state = open_study_state(layout, resume=resume)
    space = join_ray(space, layout, Path(data_dir).resolve(), address, num_cpus, echo=echo)
    run = start_tracking(space, layout, Path(data_dir).resolve(), state)
    outcome = SweepOutcome(
        name=space.name,
        experiment_dir=layout.root,
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        optuna_storage=run.optuna_storage,
        metric=space.metric,
        mode=space.mode,
    )
    status: Status = "FAILED"
    try:
        finished = run_phases(run, study, resume=resume, live_table=live_table, outcome=outcome)
        status = "FINISHED" if finished else "KILLED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome.wall_s = time.monotonic() - started
        finish_tracking(run, outcome, status)
    return outcome


def _study_of(space: SearchSpace) -> StudySpec:
    if space.study is None:
        raise ValueError(f"{space.source}: not a study (no arms:)")
    return space.study


def open_study_state(layout: SweepLayout, *, resume: bool) -> dict[str, Any]:
    """The saved `sweep.json` of the study to resume, or {} for a new one."""
    if resume:
        if not layout.state_file.is_file():
            raise SweepStateError(
                f"{layout.root}: no study '{layout.name}' to resume; run it without --resume first"
            )
        return dict(json.loads(layout.state_file.read_text()))
    if layout.state_file.exists():
        raise SweepStateError(
            f"{layout.root}: study '{layout.name}' already exists; pass --resume to continue it "
            "or --name NEW to start another"
        )
    return {}


def run_phases(
    run: SweepRun, study: StudySpec, *, resume: bool, live_table: bool, outcome: SweepOutcome
) -> bool:
    """Tune each arm (if the space searches anything), then confirm every arm on every seed.
    False when a phase stopped early (Ctrl-C): later phases do not start."""
    chosen: dict[str, dict[str, Any]] = {}
    for arm in study.arms:
        if not run.space.searched:
            chosen[arm.name] = _untuned_params(run.space, arm)
            continue
        phase = tune_phase(run.space, study, arm)
        trials, done = run_phase(run, phase, resume=resume, live_table=live_table)
        outcome.trials += trials
        if not done:
            return False
        chosen[arm.name] = best_params(phase.space, trials)
    confirm = confirm_phase(run.space, study, chosen)
    trials, done = run_phase(run, confirm, resume=resume, live_table=live_table)
    outcome.trials += trials
    return done


def tune_phase(space: SearchSpace, study: StudySpec, arm: Arm) -> Phase:
    """Phase 1 of `arm`: the space's search with the arm's overrides fixed, on the first seed."""
    fixed = [Param(key, "fixed", value=value) for key, value in arm.overrides]
    fixed.append(Param(SEED_PARAM, "fixed", value=study.seeds[0]))
    key = f"{TUNE_PHASE}-{arm.name}"
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
    space: SearchSpace, study: StudySpec, chosen: dict[str, dict[str, Any]]
) -> Phase:
    """Phase 2: each arm's chosen params on every seed, `confirm_epochs` each, run to the end."""
    configs = [
        {
            **chosen[arm.name],
            SEED_PARAM: seed,
            "optim.epochs": study.confirm_epochs,
            ARM_PARAM: arm.name,
            PHASE_PARAM: CONFIRM_PHASE,
        }
        for arm in study.arms
        for seed in study.seeds
    ]
    confirm = space.replace(
        name=f"{space.name}.{CONFIRM_PHASE}",
        params=(),
        num_samples=len(configs),
        repeats=1,
        scheduler=SchedulerSpec("none", max_epochs=study.confirm_epochs),
        labels=((PHASE_PARAM, CONFIRM_PHASE),),
        study=None,
    )
    return Phase(CONFIRM_PHASE, confirm, tuple(configs))


def run_phase(
    run: SweepRun, phase: Phase, *, resume: bool, live_table: bool
) -> tuple[list[TrialOutcome], bool]:
    """Run one phase to its end (or skip it when `sweep.json` says it finished before); returns
    its trials and whether every one of them ended."""
    layout = SweepLayout(run.layout.root / phase.key)
    finished = _finished_phases(run.layout)
    if phase.key not in finished:
        if resume and ray_tune.can_restore(layout):
            tuner = ray_tune.restore_tuner(phase.space, layout, data_dir=run.data_dir)
        else:
            # A phase whose driver died before Ray saved any state starts over; its trials'
            # MLflow runs and Optuna trials are ended as orphans (relay, `fail_orphans`).
            shutil.rmtree(layout.root, ignore_errors=True)
            tuner = _build_tuner(run, phase, layout, live_table=live_table)
        tuner.fit()
    trials = trial_outcomes(phase.space, layout)
    done = len(trials) >= phase.space.total_trials and all(t.state in ENDED_STATES for t in trials)
    if done and phase.key not in finished:
        _mark_finished(run.layout, phase.key)
    return trials, done


def _build_tuner(run: SweepRun, phase: Phase, layout: SweepLayout, *, live_table: bool) -> Any:
    proposer: TrialProposer
    if phase.configs is None:
        proposer = study = SweepStudy(phase.space, run.optuna_storage)
        study.fail_orphans()
    else:
        proposer = FixedTrials(phase.space, phase.configs)
    relay = MlflowRelay(
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        space=phase.space,
        data_dir=str(run.data_dir),
        git_sha=run.git_sha,
        experiment=run.space.name,
    )
    listeners: list[TrialListener] = [relay, DropResumeState(layout)]
    if live_table:
        listeners.append(LiveTrialTable(phase.space))
    return ray_tune.build_tuner(
        phase.space, layout, data_dir=run.data_dir, study=proposer, listeners=listeners
    )


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


def _untuned_params(space: SearchSpace, arm: Arm) -> dict[str, Any]:
    """What an arm runs when nothing is tuned: the space's fixed values and its own overrides."""
    fixed = {p.key: p.value for p in space.params if not p.searched}
    return {**fixed, **arm.params}


def _finished_phases(layout: SweepLayout) -> list[str]:
    return list(json.loads(layout.state_file.read_text()).get(PHASES_KEY, []))


def _mark_finished(layout: SweepLayout, key: str) -> None:
    state = json.loads(layout.state_file.read_text())
    state[PHASES_KEY] = [*state.get(PHASES_KEY, []), key]
    tmp = layout.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(layout.state_file)  # a driver killed here leaves the old file whole


def study_dry_run_lines(space: SearchSpace) -> list[str]:
    """What `sweep --dry-run` prints for a study: arms, seeds, phases and the runs of each
    (each arm's overrides validated; tuning configs sampled as its first trials would be)."""
    from orchestrator.search import describe_dry_run

    study = _study_of(space)
    tuned = bool(space.searched)
    lines = [
        f"{space.source}: valid study; {len(study.arms)} arms x {len(study.seeds)} seeds "
        f"{list(study.seeds)}, baseline {study.baseline}, ranked on {space.metric}",
    ]
    if tuned:
        lines.append(f"phase {TUNE_PHASE}: {space.total_trials} trials per arm, {space.sampler}")
    lines.append(f"phase {CONFIRM_PHASE}: {study.runs} runs of {study.confirm_epochs} epoch(s)")
    for arm in study.arms:
        lines.append(f"  arm {arm.name}: {arm.describe()}")
        if tuned:
            phase = tune_phase(space, study, arm)
            for label, _params in describe_dry_run(phase.space, min(space.num_samples, 3)):
                lines.append(f"      {TUNE_PHASE}: {label}")
    return lines


def study_summary(space: SearchSpace, outcome: SweepOutcome) -> list[str]:
    """What `orchestrator sweep` prints when a study ends: its confirm runs per arm."""
    study = _study_of(space)
    confirm = [t for t in outcome.trials if t.labels.get(PHASE_PARAM) == CONFIRM_PHASE]
    lines = [f"study {space.name}: {len(outcome.trials)} runs in {outcome.wall_s:.0f} s"]
    for arm in study.arms:
        runs = [t for t in confirm if t.labels.get(ARM_PARAM) == arm.name]
        values = [t.best_value for t in runs if t.best_value is not None]
        mean = f"{sum(values) / len(values):.4f}" if values else "-"
        lines.append(
            f"  {arm.name:24s} {len(values)}/{len(study.seeds)} confirm runs, "
            f"mean best {space.metric} {mean}"
        )
    if len(confirm) < study.runs:
        lines.append("stopped before the end: run the same command with --resume to go on")
    lines.append(f"results:    {outcome.experiment_dir}")
    lines.append(f"mlflow:     {outcome.tracking_uri} (experiment {space.name})")
    return lines


def study_command_lines(
    space: SearchSpace,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
    dry_run: bool,
) -> list[str]:
    """What `orchestrator sweep` prints for a study: its plan (`dry_run`), or its runs' summary."""
    if dry_run:
        return study_dry_run_lines(space)
    outcome = run_study(
        space, data_dir=data_dir, results_dir=results_dir, address=address, resume=resume
    )
    return study_summary(space, outcome)
