"""One life of a sweep, shared by a plain sweep (`plain.py`), an extension (`extend.py`) and an
ablation study (`ablation/study_run.py`): check, join Ray, open the MLflow parent run, fit, and
end that run FINISHED, KILLED (Ctrl-C) or FAILED (it raised), whatever happened in between.

What differs between the three is a `SweepKind`: what it checks before anything is written
(`plan`), how it opens its parent run (`start`) and which Ray experiments it fits (`fit`). Every
Tuner is built by `new_tuner`, the one place the trial listeners are put together. Nothing here
prints: notices go to `SweepPlace.echo`, and the caller (the CLI) prints the outcome.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.cluster import check_cluster_paths
from orchestrator.contract import SweepLayout
from orchestrator.search.optuna_search import make_sampler
from orchestrator.search.proposer import TrialProposer
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep import ray_tune, storage_fault
from orchestrator.sweep.listeners import TERMINATED, DropResumeState, LiveTrialTable, MlflowRelay
from orchestrator.sweep.outcome import SweepOutcome
from orchestrator.sweep.parent_run import SweepRun, finish_tracking, outcome_of
from orchestrator.sweep.placement import fit_trials_to_cluster
from orchestrator.sweep.resume_state import drop_resume_state
from orchestrator.sweep.retention import KeepBestWeights, settle_retention
from orchestrator.sweep.state import read_state
from orchestrator.tracking.writer import Status

logger = logging.getLogger(__name__)


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepPlace:
    """Where a sweep runs (data, results, Ray cluster) and what it shows while it runs."""

    data_dir: Path
    results_dir: Path = Path("results")
    address: str | None = None  # None: a local Ray
    num_cpus: int | None = None  # local Ray's CPUs (None: all)
    live_table: bool = True  # the live trial table on stderr
    echo: Callable[[str], None] = stderr_line  # notices, e.g. trial resources fitted to nodes


class SweepKind(Protocol):
    """What a plain sweep, an extension and a study do differently within `run_lifecycle`."""

    def plan(self, space: SearchSpace, layout: SweepLayout) -> SearchSpace:
        """Check what must hold before anything is written (SweepStateError, SpaceError);
        return the space whose trials Ray must be able to place."""
        ...

    def start(self, space: SearchSpace, layout: SweepLayout, data_dir: Path) -> SweepRun:
        """Open the MLflow parent run and record the sweep in `sweep.json`."""
        ...

    def fit(self, run: SweepRun, outcome: SweepOutcome, place: SweepPlace) -> bool:
        """Run the trials, putting every one in `outcome.trials`; True when each planned trial
        ended. KeyboardInterrupt when the run was stopped (its state kept for --resume)."""
        ...

    def finished(self, run: SweepRun) -> None:
        """Called after the parent run ended FINISHED."""
        ...


def run_lifecycle(space: SearchSpace, place: SweepPlace, kind: SweepKind) -> SweepOutcome:
    """Run `kind`'s sweep of `space` from its checks to its parent run's end; return how every
    trial ended."""
    started = time.monotonic()
    space = space.with_data_files(place.data_dir)  # data.para_train: auto -> the file trials read
    make_sampler(space)  # a sampler that cannot be built (cmaes without its package) fails here
    layout = SweepLayout.of(place.results_dir, space.name)
    planned = kind.plan(space, layout)
    data_dir = Path(place.data_dir).resolve()
    fitted = join_ray(planned, layout, data_dir, place.address, place.num_cpus, echo=place.echo)
    run = kind.start(fitted, layout, data_dir)
    outcome = outcome_of(run)
    status: Status = "FAILED"
    try:
        status = "FINISHED" if kind.fit(run, outcome, place) else "KILLED"
    except (KeyboardInterrupt, storage_fault.StorageFault):
        status = "KILLED"  # both continue with --resume
        raise
    except Exception as err:
        # The driver's own writes (MLflow's SQLite store, Ray's state) met the full or
        # read-only results directory before any trial reported it.
        fault = storage_fault.driver_storage_fault(err, layout.root.parent)
        if fault is None:
            raise
        status = "KILLED"
        raise fault from err
    finally:
        outcome.wall_s = time.monotonic() - started
        end_tracking(run, outcome, status)
    if status == "FINISHED":
        kind.finished(run)
        settle_weights_of(run, outcome)
    return outcome


def settle_weights_of(run: SweepRun, outcome: SweepOutcome) -> None:
    """Keep the weights of the sweep's best `keep_best` trials of all (sweep/retention.py),
    noted on its first parent run, which `report` reads. A failure here costs disk, not
    results, and the next --resume or --extend settles again: logged, not raised."""
    try:
        first_parent = read_state(run.layout).get("parent_run_id", run.parent_run_id)
        settle_retention(
            run.space, outcome.trials, run.tracker, first_parent, run.layout.ensemble_dir
        )
    except Exception:
        logger.exception("retention: could not settle which trials keep their weights")


def end_tracking(run: SweepRun, outcome: SweepOutcome, status: Status) -> None:
    """`finish_tracking`, unless the store cannot be written because the results directory is
    full or read-only: then the parent run stays as it is (`--resume` ends it later) and the
    storage fault, already on its way up, is what the user sees."""
    try:
        finish_tracking(run, outcome, status)
    except Exception as err:
        results_dir = run.layout.root.parent
        if status != "KILLED" or storage_fault.driver_storage_fault(err, results_dir) is None:
            raise


def join_ray(
    space: SearchSpace,
    layout: SweepLayout,
    data_dir: Path,
    address: str | None,
    num_cpus: int | None,
    *,
    echo: Callable[[str], None],
) -> SearchSpace:
    """Start Ray (or join `address`) and return `space` with trial resources its nodes can place.

    Before anything is written: trials Ray could never start (placement.py) or, on a cluster, a
    results or data path some node cannot see (cluster.py) stop the sweep with a one-line error.
    """
    ray_tune.init_ray(address, num_cpus)
    nodes = ray_tune.alive_nodes()
    space = fit_trials_to_cluster(space, nodes, local=address is None, echo=echo)
    check_cluster_paths(layout.root.parent, nodes, ray_tune.run_on_nodes, data_dir=data_dir)
    return space


def new_tuner(
    run: SweepRun,
    space: SearchSpace,
    layout: SweepLayout,
    proposer: TrialProposer,
    *,
    live_table: bool,
    run_tags: Mapping[str, str] | None = None,
    rung_history: Mapping[str, Mapping[int, float]] | None = None,
) -> Any:
    """A new Tuner of `space`'s trials in `layout`, proposed by `proposer`, each relayed to
    MLflow as a child of `run`'s parent run (with `run_tags`), its resume state dropped once it
    ended, and drawn in the live table; ASHA's rungs start with `rung_history`."""
    relay = MlflowRelay(
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        space=space,
        data_dir=str(run.data_dir),
        git_sha=run.git_sha,
        experiment=run.space.name,
        run_tags=run_tags,
    )
    listeners = [relay, DropResumeState(layout)]
    if run.space.keep_best is not None:  # the sweep's: recorded in sweep.json (parent_run.py)
        listeners.append(KeepBestWeights(space, run.space.keep_best, run.layout.ensemble_dir))
    if live_table:
        listeners.append(LiveTrialTable(space))
    return ray_tune.build_tuner(
        space,
        layout,
        data_dir=run.data_dir,
        study=proposer,
        listeners=listeners,
        rung_history=rung_history,
    )


def fit_experiment(
    space: SearchSpace,
    layout: SweepLayout,
    data_dir: Path,
    *,
    restore: bool,
    build: Callable[[], Any],
) -> bool:
    """Run one Ray experiment: restored from `layout` with `restore`, else `build()` a new
    Tuner. True when Ctrl-C stopped it (trials stopped, Ray's state saved for --resume)."""
    tuner = ray_tune.restore_tuner(space, layout, data_dir=data_dir) if restore else build()
    storage_fault.WATCH.clear()
    stopped = bool(ray_tune.fit_tuner(tuner))
    storage_fault.WATCH.raise_if_seen(layout.root.parent)  # a full or read-only results dir
    # Ray's last save, which it waits for, holds every trial that ended since the one before.
    for trial in ray_tune.trial_snapshots(layout):
        if trial.status == TERMINATED:
            drop_resume_state(layout.trial(trial.trial_id))
    return stopped
