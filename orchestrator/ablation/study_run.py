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
from pathlib import Path
from typing import Any

from model.data_dir import quora_runs_notes
from orchestrator.sweep import ray_tune
from orchestrator.contract import (
    ARM_PARAM,
    CONFIRM_PHASE,
    PARA_TRAIN_PARAM,
    PHASE_PARAM,
    SweepLayout,
)
from orchestrator.search.proposer import FixedTrials, TrialProposer
from orchestrator.search.optuna_search import SweepStudy, make_sampler
from orchestrator.space.schema import SearchSpace
from orchestrator.space.arms import StudySpec
from orchestrator.ablation.phases import (
    Phase,
    best_params,
    confirm_phase,
    study_of,
    tune_phase,
    untuned_params,
)
from orchestrator.sweep.driver import (
    ENDED_STATES,
    SweepOutcome,
    SweepRun,
    SweepStateError,
    TrialOutcome,
    finish_tracking,
    join_ray,
    outcome_of,
    read_state,
    start_tracking,
    stderr_line,
    study_record,
    trial_outcomes,
)
from orchestrator.sweep.listeners import (
    DropResumeState,
    LiveTrialTable,
    MlflowRelay,
    TrialListener,
)
from orchestrator.sweep.state import update_state
from orchestrator.tracking.writer import Status

PHASES_KEY = "finished_phases"  # in sweep.json: the phases that ran to the end
STUDY_KEY = "study"  # in sweep.json: the arms and seeds the study started with
ABLATION_MARKDOWN = "ablation.md"


def run_study(
    space: SearchSpace,
    *,
    data_dir: Path,
    results_dir: Path = Path("results"),
    address: str | None = None,
    resume: bool = False,
    live_table: bool = True,
    num_cpus: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run (or with `resume`, continue) the study `space`; every trial of every phase is in the
    returned outcome (`labels` say each one's arm and phase)."""
    study = study_of(space)
    started = time.monotonic()
    space = space.with_data_files(data_dir)  # data.para_train: auto -> the file trials read
    make_sampler(space)  # a sampler that cannot be built fails before anything is written
    layout = SweepLayout.of(results_dir, space.name)
    state = open_study_state(space, layout, resume=resume)
    space = join_ray(
        space, layout, Path(data_dir).resolve(), address, num_cpus, echo=echo or stderr_line
    )
    run = start_tracking(space, layout, Path(data_dir).resolve(), state)
    outcome = outcome_of(run)
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


def open_study_state(space: SearchSpace, layout: SweepLayout, *, resume: bool) -> dict[str, Any]:
    """The saved `sweep.json` of the study to resume (which must be this study: same arms,
    seeds, budget and searched keys), or {} for a new one."""
    if resume:
        if not layout.state_file.is_file():
            raise SweepStateError(
                f"{layout.root}: no study '{layout.name}' to resume; run it without --resume first"
            )
        state = read_state(layout)
        saved, now = state.get(STUDY_KEY), json.loads(json.dumps(study_record(space)))
        changed = [key for key in now if saved is None or saved.get(key) != now[key]]
        if changed:
            raise SweepStateError(
                f"{space.source}: {changed[0]}: differs from the study '{layout.name}' being "
                "resumed; resume it with its own space file, or start a new study with --name NEW"
            )
        return state
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
            chosen[arm.name] = untuned_params(run.space, arm)
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
        if ray_tune.fit_tuner(tuner):  # Ctrl-C: the study is KILLED, later phases never start
            raise KeyboardInterrupt(f"study '{run.space.name}' stopped; continue it with --resume")
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


def _finished_phases(layout: SweepLayout) -> list[str]:
    return list(read_state(layout).get(PHASES_KEY, []))


def _mark_finished(layout: SweepLayout, key: str) -> None:
    """Record a finished phase in sweep.json, under the sweep's lock like every other change."""

    def add_phase(state: dict[str, Any]) -> None:
        state[PHASES_KEY] = [*state.get(PHASES_KEY, []), key]

    update_state(layout, add_phase)


def study_summary(space: SearchSpace, outcome: SweepOutcome) -> list[str]:
    """What `orchestrator sweep` prints when a study ends: its confirm runs per arm."""
    study = study_of(space)
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
    # An arm may train Quora on a file of its own (data.para_train among its overrides).
    files = [dict(arm.overrides).get(PARA_TRAIN_PARAM, outcome.quora_train) for arm in study.arms]
    lines += [f"note: {note}" for note in quora_runs_notes(files, noun="arm")]
    lines.append(f"results:    {outcome.experiment_dir}")
    lines.append(f"mlflow:     {outcome.tracking_uri} (experiment {space.name})")
    return lines


def study_command_lines(
    space: SearchSpace,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
) -> list[str]:
    """What `orchestrator sweep` prints for a study: its runs' summary, then (when every run
    ended) where its report went: the ablation table is what a study is run for."""
    from orchestrator.report.sweep_report import ReportError, write_report

    outcome = run_study(
        space, data_dir=data_dir, results_dir=results_dir, address=address, resume=resume
    )
    lines = study_summary(space, outcome)
    try:
        written = write_report(space.name, results_dir=results_dir)
    except ReportError as err:
        return [*lines, f"no report: {err}"]
    table = next((p for p in written.files if p.name == ABLATION_MARKDOWN), None)
    lines += [f"note: {note}" for note in written.notes]
    return [*lines, f"table:      {table or written.files[0]}"]
