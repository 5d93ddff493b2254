"""Everything the sweep asks of Ray Tune: build, restore and read back a Tune experiment
(trainable, searcher, scheduler, retries, callbacks); starting or joining Ray is `ray_cluster.py`'s
(re-exported). With `trainable.py`, the only modules that import Ray (its API moves between
releases: one place to fix). The rest sees plain data: the Optuna study behind `StudySearcher`,
the listeners behind `TrialEvents`, `TrialSnapshot`s instead of Ray's `Trial`s.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, ExperimentAnalysis
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from orchestrator.contract import (
    EPOCH_KEY,
    SweepLayout,
    trial_labels,
    trial_params,
    tune_keys,
    unpack_result,
)
from orchestrator.search.proposer import TrialProposer
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep import resume_state, storage_fault
from orchestrator.sweep.listeners import TrialListener, TrialSnapshot
from orchestrator.sweep.lost_checkpoint import refill_lost_checkpoint
from orchestrator.sweep.ray_cluster import alive_nodes as alive_nodes
from orchestrator.sweep.ray_cluster import init_ray as init_ray
from orchestrator.sweep.ray_cluster import run_on_nodes as run_on_nodes
from orchestrator.sweep.ray_cluster import set_snapshot_period as set_snapshot_period
from orchestrator.sweep.trainable import train_trial

MAX_FAILURES = 2  # Ray retries a failed trial from its last checkpoint this many times
TRAINING_ITERATION = "training_iteration"  # Ray's count of a trial's results
TUNER_FILE = "tuner.pkl"  # how the Tuner was built, in the experiment directory


def concurrent_trials(space: SearchSpace) -> int:
    """Trials the cluster can run at once, so the searcher proposes only that many ahead."""
    resources, asked = ray.cluster_resources(), space.resources
    slots = [resources.get("CPU", 1.0) / asked.cpu]
    slots += [resources.get("GPU", 0.0) / asked.gpu] if asked.gpu > 0 else []
    return max(1, int(min(slots)))


# ------------------------------------------------------------------- searcher and callbacks


class StudySearcher(Searcher):
    """Ray Tune's searcher interface, forwarded to the sweep's Optuna study."""

    def __init__(self, study: TrialProposer, experiment_dir: Path | None = None) -> None:
        super().__init__(metric=study.space.metric, mode=study.space.mode)
        self.study = study
        self.experiment_dir = experiment_dir  # where the trials' error files are

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self.study.ask(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        result = unpack_result(result)
        value = result.get(self.study.space.metric)
        if value is not None:
            self.study.report(trial_id, value, _step(result))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if error and self.failed_on_storage(trial_id):
            # The disk failed, not the trial: `--resume` runs it again (restore_tuner) and
            # Optuna hears then how it ended; told FAIL now, it could not be told again.
            return
        last = unpack_result(result or {})
        self.study.tell(trial_id, last, step=_step(last), error=error)

    def failed_on_storage(self, trial_id: str) -> bool:
        """Ray asks the searcher before the callbacks (TrialEvents), so it looks itself."""
        if self.experiment_dir is None:
            return False
        error_file = self.experiment_dir / trial_id / "error.txt"
        results_dir = self.experiment_dir.parent
        reason = storage_fault.trial_failed_on_storage(error_file, results_dir)
        if reason is None:
            return False
        storage_fault.WATCH.record(reason)
        return True

    def save(self, checkpoint_path: str) -> None:
        self.study.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.study.restore(checkpoint_path)


def _step(result: Mapping[str, Any]) -> int:
    # By epoch: Ray's iteration count lags it in a trial resumed from a newer checkpoint than
    # its snapshot named (sweep/lost_checkpoint.py); otherwise the two are equal.
    return int(result.get(EPOCH_KEY, result.get(TRAINING_ITERATION, 0)))


def snapshot(trial: Trial, *, packed: bool = False) -> TrialSnapshot:
    """A Ray trial as plain data; `packed`: its last result without the packed metrics (what
    the live table shows, redrawn every second for every trial, needs none of them)."""
    last = trial.last_result or {}
    return TrialSnapshot(
        trial_id=trial.trial_id,
        status=trial.status,
        params=trial_params(trial.config or {}),
        last_result=dict(last) if packed else unpack_result(last),
        error_file=trial.error_file,
        retries=trial.run_metadata.num_failures,
        name=str(trial),
        labels=trial_labels(trial.config or {}),
    )


class TrialEvents(Callback):
    """Ray Tune's driver callbacks, passed on to the sweep's listeners as `TrialSnapshot`s. A
    trial failure that is a storage fault of `results_dir` stops the experiment as Ctrl-C does
    (sweep/storage_fault.py)."""

    def __init__(
        self, listeners: Sequence[TrialListener], results_dir: Path | None = None
    ) -> None:
        self.listeners = tuple(listeners)
        self.results_dir = results_dir
        self.stopping = False  # this driver asked Tune to stop (a fresh one after --resume)

    def watch_storage(self, trial: Trial) -> None:
        if self.results_dir is None:
            return
        error = Path(trial.error_file) if trial.error_file else None
        reason = storage_fault.trial_failed_on_storage(error, self.results_dir)
        if reason is None:
            return
        first = storage_fault.WATCH.record(reason) or not self.stopping
        graceful = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
        if first and graceful:
            self.stopping = True
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own graceful stop, as on Ctrl-C

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        for listener in self.listeners:
            listener.setup()

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        seen = snapshot(trial)
        for listener in self.listeners:
            listener.trial_started(seen)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any
    ) -> None:
        seen = snapshot(trial)
        for listener in self.listeners:
            listener.trial_result(seen, unpack_result(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        seen = snapshot(trial)
        for listener in self.listeners:
            listener.trial_completed(seen)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self.watch_storage(trial)
        seen = snapshot(trial)
        for listener in self.listeners:
            listener.trial_errored(seen)

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self.watch_storage(trial)
        seen = snapshot(trial)
        for listener in self.listeners:
            listener.trial_recovered(seen)

    def on_checkpoint(self, iteration: int, trials: list, trial: Trial, checkpoint: Any, **_: Any):
        # Once its result reached every listener. An older sweep's trial (num_to_keep=1) has
        # Ray delete them itself, and Ray errs on a path already gone.
        kept = getattr(trial.run_metadata.checkpoint_manager, "checkpoint_config", None)
        if kept is None or kept.num_to_keep is None:
            resume_state.drop_older_ray_checkpoints(Path(checkpoint.path))

    def get_state(self) -> dict | None:  # Ray asks as it saves the experiment's state
        for listener in self.listeners:
            listener.state_saved()
        return None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        due = [listener for listener in self.listeners if listener.refresh_due()]
        if due:
            seen = [snapshot(t, packed=True) for t in trials]
            for listener in due:
                listener.refresh(seen)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        seen = [snapshot(t) for t in trials]
        for listener in self.listeners:
            listener.experiment_ended(seen)


# ------------------------------------------------------------------------------------- Tuner


def experiment_exists(layout: SweepLayout) -> bool:
    """Whether Ray has started an experiment in the sweep's directory."""
    return (layout.root / TUNER_FILE).exists()


def can_restore(layout: SweepLayout) -> bool:
    """Whether the experiment saved its state at least once (a driver killed right after building
    the Tuner leaves `tuner.pkl` but nothing to restore)."""
    saved = any(layout.root.glob("experiment_state-*.json"))
    return saved and bool(tune.Tuner.can_restore(str(layout.root)))


def build_tuner(
    space: SearchSpace,
    layout: SweepLayout,
    *,
    data_dir: Path,
    study: TrialProposer,
    listeners: Sequence[TrialListener],
    rung_history: Mapping[str, Mapping[int, float]] | None = None,
) -> tune.Tuner:
    """A new Tune experiment in `layout.root`: `space.total_trials` trials proposed by `study`,
    stopped early by the space's scheduler, retried from their last checkpoint on failure.
    `rung_history` (earlier trials' metric per epoch) is put in ASHA's rungs first."""
    set_snapshot_period(space.total_trials)
    return tune.Tuner(
        _trainable(space, layout, data_dir),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            search_alg=StudySearcher(study, layout.root),
            scheduler=seed_rungs(_scheduler(space), rung_history or {}, space.mode),
            num_samples=space.total_trials,
            max_concurrent_trials=space.max_concurrent or concurrent_trials(space),
            trial_dirname_creator=trial_dirname,
            # Each trial in a fresh worker process: a reused worker kept what earlier trials
            # had allocated (two workers that had run 3-4 MiniLM trials each held 12.5 and 8 GB
            # when Ray's OOM killer ended the seed-systems CPU study; a trial alone peaks ~3 GB).
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=layout.name,
            storage_path=str(layout.root.parent),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            # All, for Ray: with a number set it saves the whole experiment's state after each
            # trial's checkpoint, O(trials) per epoch. TrialEvents deletes all but the newest
            # instead; a snapshot naming one deleted since is mended on --resume
            # (refill_lost_checkpoints), so keeping more would buy nothing.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[TrialEvents(listeners, layout.root.parent)],
            verbose=0,
        ),
    )


def fit_tuner(tuner: tune.Tuner) -> bool:
    """Run the experiment; True when Ctrl-C (SIGINT) stopped it: Tune stops the trials and saves
    its state, as on its own SIGINT handler, which returns normally (and a sweep stopped by
    Ctrl-C must not exit 0). A second Ctrl-C raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        tuner.fit()  # signal handlers exist only in the main thread (nor does Tune set one)
        return False
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop, which it also listens to

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours instead, which can tell the driver
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        tuner.fit()
    finally:
        signal.signal(signal.SIGINT, previous)
    return interrupted.is_set()


def restore_tuner(space: SearchSpace, layout: SweepLayout, *, data_dir: Path) -> tune.Tuner:
    """The sweep's Tune experiment as its driver last saved it, to run its unfinished trials (and
    errored ones, when a full or read-only disk failed some), after putting back checkpoints the
    snapshot names but the driver deleted since (sweep/lost_checkpoint.py)."""
    refill_lost_checkpoints(layout)
    set_snapshot_period(space.total_trials)
    return tune.Tuner.restore(
        str(layout.root),
        _trainable(space, layout, data_dir),
        resume_unfinished=True,
        # Every errored trial or none: one that failed for its own reason runs again too.
        resume_errored=any(
            storage_fault.failed_on_storage_text(_read(layout.root / t.trial_id / "error.txt"))
            for t in trial_snapshots(layout)
            if t.status == Trial.ERROR
        ),
    )


def refill_lost_checkpoints(layout: SweepLayout) -> dict[str, Path]:
    """Every unfinished trial of the saved experiment whose named checkpoint is gone, and the
    checkpoint put back in its place (see `refill_lost_checkpoint`)."""
    refilled = {}
    for trial in ExperimentAnalysis(str(layout.root)).trials:
        if trial.status in (Trial.TERMINATED, Trial.ERROR) or trial.checkpoint is None:
            continue
        trial_layout = layout.trial(trial.trial_id)
        # By name under the trial's directory: the snapshot's path is where the sweep was then.
        named = trial_layout.root / Path(trial.checkpoint.path).name
        source = refill_lost_checkpoint(named, trial_layout)
        if source is not None:
            refilled[trial.trial_id] = source
    return refilled


def _trainable(space: SearchSpace, layout: SweepLayout, data_dir: Path) -> Any:
    return tune.with_resources(
        tune.with_parameters(
            train_trial,
            base=space.base,
            data_dir=str(data_dir),
            experiment_dir=str(layout.root),
            threads=max(1, math.floor(space.resources.cpu)),
            gpu_share=space.resources.gpu,
            scheduled=tune_keys(space.metric),  # the rest reaches the driver packed
        ),
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )


def _scheduler(space: SearchSpace) -> TrialScheduler:
    """ASHA on the space's metric, or FIFO (no early stopping) for `scheduler: none` and for every
    multi-objective sweep: ASHA compares trials on one number, so a rung on any one objective (or
    a weighted sum, which fixes the trade-off the sweep is there to show) would stop trials on
    the Pareto front of the others; space/schema.py rejects `scheduler: asha` with several
    metrics."""
    if space.scheduler.name == "none" or space.multi_objective:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=EPOCH_KEY,
        max_t=space.scheduler.max_epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def seed_rungs(
    scheduler: TrialScheduler, history: Mapping[str, Mapping[int, float]], mode: str
) -> TrialScheduler:
    """ASHA with each earlier trial's value at every rung it reached already recorded, as if it
    had run in this experiment (with one result per epoch a rung at epoch m holds the value at
    epoch m). Ray has no public API for this: it fills the brackets' rung records; the decisions
    that follow are tested on the pinned Ray (test_sweep_extend.py). Other schedulers pass."""
    if not history or not isinstance(scheduler, ASHAScheduler):
        return scheduler
    sign = 1.0 if mode == "max" else -1.0  # ASHA keeps larger-is-better values
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            for key, values in history.items():
                reached = [step for step in values if step >= milestone]
                if reached:
                    recorded[key] = sign * float(values[min(reached)])
    return scheduler


def trial_dirname(trial: Trial) -> str:  # `<results>/<sweep>/<trial_id>/` (contract.TrialLayout)
    return str(trial.trial_id)


def trial_snapshots(layout: SweepLayout) -> list[TrialSnapshot]:
    """Every trial of the experiment in `layout.root`, from Ray's saved experiment state, in
    the order they were created (Ray saves them in the order it first saved each)."""
    trials = ExperimentAnalysis(str(layout.root)).trials
    return [snapshot(trial) for trial in sorted(trials, key=_creation_index)]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""

def _creation_index(trial: Trial) -> int:  # a searched trial's tag starts with its count: `3_...`
    count = str(trial.experiment_tag).partition("_")[0]
    return int(count) if count.isdigit() else 0
