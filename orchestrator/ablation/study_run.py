"""Run an ablation study (a space with `arms:`, see space/arms.py) as a sequence of sweeps.

Phase 1 (`tune`, only when the space searches something): per arm, a sweep of `num_samples`
trials on the first seed, with the space's sampler and scheduler, ranking on its metric (the
selection split's when `data.selection` is on). Phase 2 (`confirm`): every arm's best config (its
own overrides when nothing is tuned) on every seed, at `confirm_epochs`, no early stopping; only
these runs enter the ablation table. Each phase is a Ray experiment of its own under
`<results>/<study>/<phase>/`, all logged under one MLflow parent run; `sweep.json` records the
finished phases, so `--resume` restores the unfinished one and runs the rest. A racing study
(`seeds: {min, max, step}`) runs phase 2 as rounds instead (`race_run.py`). The phases run
through the one sweep lifecycle (`sweep/lifecycle.py`) as a `StudyKind`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.ablation.phase_run import run_phase
from orchestrator.ablation.phases import (
    best_params,
    confirm_phase,
    study_of,
    tune_phase,
    untuned_params,
)
from orchestrator.ablation.race_run import add_race_rounds, run_race
from orchestrator.contract import SweepLayout
from orchestrator.space.arms import StudySpec
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep.lifecycle import SweepPlace, run_lifecycle, stderr_line
from orchestrator.sweep.outcome import SweepOutcome
from orchestrator.sweep.parent_run import SweepRun, start_tracking, study_record
from orchestrator.sweep.state import SweepStateError, read_state

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
    extra_rounds: int = 0,
) -> SweepOutcome:
    """Run (or with `resume`, continue) the study `space`; every trial of every phase is in the
    returned outcome (`labels` say each one's arm and phase). `extra_rounds` (`--extend N` of a
    racing study): continue its race N rounds past its `max` seeds."""
    if study_of(space).race is None and extra_rounds:  # refused before anything starts
        raise SweepStateError(f"{space.source}: seeds: only a race (seeds: {{min, max}}) extends")
    place = SweepPlace(
        Path(data_dir), Path(results_dir), address, num_cpus, live_table, echo or stderr_line
    )
    kind = StudyKind(resume=resume or extra_rounds > 0, extra_rounds=extra_rounds)
    return run_lifecycle(space, place, kind)


class StudyKind:
    """An ablation study as `run_lifecycle` runs it: one parent run, a Ray experiment per
    phase, the finished phases recorded in `sweep.json`."""

    def __init__(self, *, resume: bool, extra_rounds: int = 0) -> None:
        self.resume = resume
        self.extra_rounds = extra_rounds
        self.state: dict[str, Any] = {}

    def plan(self, space: SearchSpace, layout: SweepLayout) -> SearchSpace:
        if self.extra_rounds and not layout.state_file.is_file():
            raise SweepStateError(
                f"{layout.root}: no study '{layout.name}' to extend; run it first without --extend"
            )
        self.state = open_study_state(space, layout, resume=self.resume)
        if self.extra_rounds:
            add_race_rounds(layout, self.extra_rounds)
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
    if study.race is not None:
        return run_race(run, study, chosen, resume=resume, live_table=live_table, outcome=outcome)
    confirm = confirm_phase(run.space, study, chosen)
    trials, done = run_phase(run, confirm, resume=resume, live_table=live_table)
    outcome.trials += trials
    return done
