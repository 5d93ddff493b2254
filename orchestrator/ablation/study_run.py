"""Run an ablation study (a space with `arms:`, see space/arms.py) as a sequence of sweeps.

Phase 1 (`tune`, only when the space searches something): per arm, a sweep of `num_samples`
trials on the first seed, with the space's sampler and scheduler, ranking on its metric (the
selection split's when `data.selection` is on). Phase 2 (`confirm`): every arm's best config (its
own overrides when nothing is tuned) on every seed, at `confirm_epochs`, no early stopping; only
these runs enter the ablation table. Each phase is a Ray experiment of its own under
`<results>/<study>/<phase>/`, all logged under one MLflow parent run; `sweep.json` records the
finished phases, so `--resume` restores the unfinished one and runs the rest. The phases run
through the one sweep lifecycle (`sweep/lifecycle.py`) as a `StudyKind`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.ablation.phases import (
    Phase,
    best_params,
    confirm_phase,
    study_of,
    tune_phase,
    untuned_params,
)
from orchestrator.contract import (
    FINAL_STATES,
    SweepLayout,
)
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.search.proposer import FixedTrials, TrialProposer
from orchestrator.space.arms import StudySpec
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep import ray_tune
from orchestrator.sweep.lifecycle import (
    SweepPlace,
    fit_experiment,
    new_tuner,
    run_lifecycle,
    stderr_line,
)
from orchestrator.sweep.outcome import SweepOutcome, TrialOutcome, trial_outcomes
from orchestrator.sweep.parent_run import (
    SweepRun,
    start_tracking,
    study_record,
)
from orchestrator.sweep.state import SweepStateError, read_state, update_state

PHASES_KEY = "finished_phases"  # in sweep.json: the phases that ran to the end
STUDY_KEY = "study"  # in sweep.json: the arms and seeds the study started with


def run_ablation_study(
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
    study_of(space)  # a plain sweep's space is refused before anything starts
    place = SweepPlace(
        Path(data_dir), Path(results_dir), address, num_cpus, live_table, echo or stderr_line
    )
    return run_lifecycle(space, place, StudyKind(resume=resume))


class StudyKind:
    """An ablation study as `run_lifecycle` runs it: one parent run, a Ray experiment per
    phase, the finished phases recorded in `sweep.json`."""

    def __init__(self, *, resume: bool) -> None:
        self.resume = resume
        self.state: dict[str, Any] = {}

    def plan(self, space: SearchSpace, layout: SweepLayout) -> SearchSpace:
        self.state = open_study_state(space, layout, resume=self.resume)
        return space

    def start(self, space: SearchSpace, layout: SweepLayout, data_dir: Path) -> SweepRun:
        return start_tracking(space, layout, data_dir, self.state)

    def fit(self, run: SweepRun, outcome: SweepOutcome, place: SweepPlace) -> bool:
        study = study_of(run.space)
        return run_phases(
            run, study, resume=self.resume, live_table=place.live_table, outcome=outcome
        )

    def finished(self, run: SweepRun) -> None:
        """Nothing more: each phase recorded itself in `sweep.json` as it finished."""


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
        restore = resume and ray_tune.can_restore(layout)
        if not restore:
            # A phase whose driver died before Ray saved any state starts over; its trials'
            # MLflow runs and Optuna trials are ended as orphans (relay, `fail_orphans`).
            shutil.rmtree(layout.root, ignore_errors=True)
        stopped = fit_experiment(
            phase.space,
            layout,
            run.data_dir,
            restore=restore,
            build=lambda: phase_tuner(run, phase, layout, live_table=live_table),
        )
        if stopped:  # Ctrl-C: the study is KILLED, later phases never start
            raise KeyboardInterrupt(f"study '{run.space.name}' stopped; continue it with --resume")
    trials = trial_outcomes(phase.space, layout)
    done = len(trials) >= phase.space.total_trials and all(t.state in FINAL_STATES for t in trials)
    if done and phase.key not in finished:
        _mark_finished(run.layout, phase.key)
    return trials, done


def phase_tuner(run: SweepRun, phase: Phase, layout: SweepLayout, *, live_table: bool) -> Any:
    """A new Tuner of the phase's trials: proposed by the study's Optuna study when the phase
    tunes, else its fixed configs."""
    proposer: TrialProposer
    if phase.configs is None:
        proposer = study = SweepStudy(phase.space, run.optuna_storage)
        study.fail_orphans()
    else:
        proposer = FixedTrials(phase.space, phase.configs)
    return new_tuner(run, phase.space, layout, proposer, live_table=live_table)


def _finished_phases(layout: SweepLayout) -> list[str]:
    return list(read_state(layout).get(PHASES_KEY, []))


def _mark_finished(layout: SweepLayout, key: str) -> None:
    """Record a finished phase in sweep.json, under the sweep's lock like every other change."""

    def add_phase(state: dict[str, Any]) -> None:
        state[PHASES_KEY] = [*state.get(PHASES_KEY, []), key]

    update_state(layout, add_phase)


