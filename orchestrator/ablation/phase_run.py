"""One phase of a study as a Ray experiment under `<results>/<study>/<phase>/`: run it to its
end, or skip it when `sweep.json` lists it as finished (`--resume` restores an unfinished one).
Shared by the fixed study (`study_run.py`) and the race's rounds (`race_run.py`).
"""

from __future__ import annotations

import shutil
from typing import Any

from orchestrator.ablation.phases import Phase
from orchestrator.contract import FINAL_STATES, SweepLayout
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.search.proposer import FixedTrials, TrialProposer
from orchestrator.sweep import ray_tune
from orchestrator.sweep.lifecycle import fit_experiment, new_tuner
from orchestrator.sweep.outcome import TrialOutcome, trial_outcomes
from orchestrator.sweep.parent_run import SweepRun
from orchestrator.sweep.state import read_state, update_state

PHASES_KEY = "finished_phases"  # in sweep.json: the phases that ran to the end


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
