"""Run a search space as a sweep: Optuna proposes, Ray Tune runs the trials (ASHA stops the poor
ones early), MLflow records; `run_plain_sweep` is `lifecycle.run_lifecycle` of a `PlainSweep`.

Everything lands under `<results>/<sweep>/` (`contract.SweepLayout`): Ray's experiment state, one
`<trial_id>/` directory per trial (Ray's result files and latest `checkpoint_*`; the trainer's
output in `train/`, see `contract.TrialLayout`), `optuna.db` (the study) and `sweep.json` (the
MLflow parent run and Optuna study the sweep writes to: `resume` keeps writing to the same ones).
Ray itself is behind `ray_tune.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.contract import (
    FINAL_STATES,
    SweepLayout,
)
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep import ray_tune
from orchestrator.sweep.lifecycle import (
    SweepPlace,
    fit_experiment,
    new_tuner,
    run_lifecycle,
    stderr_line,
)
from orchestrator.sweep.outcome import SweepOutcome, trial_outcomes
from orchestrator.sweep.parent_run import SweepRun, start_tracking
from orchestrator.sweep.state import SweepStateError, read_state
from orchestrator.sweep.warm_start import NewSweep


def run_plain_sweep(
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
    """Run (or with `resume`, continue) the sweep `space` and return how every trial ended.

    Raises SweepStateError before anything starts when `<results>/<name>/` already holds a sweep
    and `resume` is false, or holds none and `resume` is true; ResourcesError when local Ray can
    never start a trial. `echo` shows notices (default: stderr).
    """
    place = SweepPlace(
        Path(data_dir), Path(results_dir), address, num_cpus, live_table, echo or stderr_line
    )
    return run_lifecycle(space, place, PlainSweep(resume=resume))


class PlainSweep:
    """A new sweep, or a resumed one: one Ray experiment in the sweep's own directory."""

    def __init__(self, *, resume: bool) -> None:
        self.resume = resume
        self.state: dict[str, Any] = {}
        self.new: NewSweep | None = None

    def plan(self, space: SearchSpace, layout: SweepLayout) -> SearchSpace:
        self.state = open_state(layout, resume=self.resume)
        # Its warm start, checked before any write.
        self.new = NewSweep.check(space, layout.root.parent, resume=self.resume)
        return space

    def start(self, space: SearchSpace, layout: SweepLayout, data_dir: Path) -> SweepRun:
        run = start_tracking(space, layout, data_dir, self.state)
        if self.new is not None:
            self.new.begin(run)
        return run

    def fit(self, run: SweepRun, outcome: SweepOutcome, place: SweepPlace) -> bool:
        proposer = SweepStudy(run.space, run.optuna_storage)
        stopped = fit_experiment(
            run.space,
            run.layout,
            run.data_dir,
            restore=self.resume,
            build=lambda: new_tuner(
                run, run.space, run.layout, proposer, live_table=place.live_table
            ),
        )
        outcome.trials = trial_outcomes(run.space, run.layout)
        if stopped:
            raise KeyboardInterrupt(f"sweep '{run.space.name}' stopped; continue it with --resume")
        ended = all(t.state in FINAL_STATES for t in outcome.trials)
        return ended and len(outcome.trials) >= run.space.total_trials

    def finished(self, run: SweepRun) -> None:
        """Nothing to record: `sweep.json` already says all a finished sweep needs."""


def open_state(layout: SweepLayout, *, resume: bool) -> dict[str, Any]:
    """The saved `sweep.json` of the sweep to resume, or {} for a new sweep. Raises
    SweepStateError when there is nothing to resume, or a new sweep's directory holds one."""
    if resume:
        if not layout.state_file.is_file() or not ray_tune.can_restore(layout):
            raise SweepStateError(
                f"{layout.root}: no sweep '{layout.name}' to resume; run it without --resume first"
            )
        return read_state(layout)
    if layout.state_file.exists() or ray_tune.experiment_exists(layout):
        raise SweepStateError(
            f"{layout.root}: sweep '{layout.name}' already exists; pass --resume to continue it "
            "or --name NEW to start another"
        )
    return {}
