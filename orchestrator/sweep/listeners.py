"""What the sweep driver does as trials start, report and end: relay them to MLflow, drop finished
trials' resume state, draw a live table. No Ray here: Ray's callback adapter
(`ray_tune.TrialEvents`) hands these listeners plain `TrialSnapshot`s.

Logging from the driver means one process writes the MLflow store, so concurrent trials cannot lock
SQLite, and workers on other nodes need no access to it. The listeners are pickled into Ray's
`tuner.pkl` when the Tuner is built, so they open their clients in `setup()` and drop them when
pickled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import is_finite_number
from model.data_dir import resolve_data_files
from orchestrator.config import apply_params
from orchestrator.contract import (
    BEST_CHECKPOINT,
    BEST_PREFIX,
    EPOCH_KEY,
    EPOCHS_LEFT,
    FEASIBLE_TAG,
    METRICS,
    NONFINITE_LOSS,
    PRECISION_KEY,
    STATE_TAG,
    TRIAL_ID_TAG,
    SweepLayout,
    best_key,
)
from orchestrator.objectives import final_metrics, is_feasible
from orchestrator.space.schema import SearchSpace, run_name
from orchestrator.sweep.resume_state import drop_resume_state

logger = logging.getLogger(__name__)

# Ray Tune's trial statuses that `trial_state` tells apart (the others are lower-cased).
ERROR = "ERROR"
TERMINATED = "TERMINATED"


@dataclass(frozen=True)
class TrialSnapshot:
    """One trial as Ray Tune last saw it, in plain data."""

    trial_id: str
    status: str  # Ray's: PENDING, RUNNING, PAUSED, TERMINATED or ERROR
    params: Mapping[str, Any]  # the sampled dotted config keys
    last_result: Mapping[str, Any]  # {} before the first epoch
    error_file: str | None = None
    retries: int = 0  # times Ray restarted it after a failure
    name: str = ""  # Ray's trial name, e.g. train_trial_8f1c2_00003
    labels: Mapping[str, str] = field(default_factory=dict)  # a study's arm and phase


def trial_state(trial: TrialSnapshot, *, ending: bool = False) -> str:
    """pending / running / completed / pruned / failed / killed, from Ray's status and last result.

    `ending`: the trial is being completed, while Ray still says RUNNING.
    """
    if trial.status == ERROR or NONFINITE_LOSS in trial.last_result:
        return "failed"
    if trial.status == TERMINATED or ending:
        left = trial.last_result.get(EPOCHS_LEFT)
        if left is None:
            return "killed"  # stopped before reporting any epoch
        return "pruned" if float(left) > 0 else "completed"
    return trial.status.lower()


def error_reason(trial: TrialSnapshot) -> str:
    """The last line of a failed trial's error file (its exception)."""
    path = trial.error_file
    if path and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return "unknown error"


class TrialListener:
    """Notified by the driver as trials go; each method does nothing unless overridden."""

    def setup(self) -> None: ...

    def trial_started(self, trial: TrialSnapshot) -> None: ...

    def trial_result(self, trial: TrialSnapshot, result: Mapping[str, Any]) -> None: ...

    def trial_completed(self, trial: TrialSnapshot) -> None: ...

    def trial_errored(self, trial: TrialSnapshot) -> None: ...

    def trial_recovered(self, trial: TrialSnapshot) -> None: ...

    def state_saved(self) -> None:
        """Ray is saving the experiment's state (every trial's status) for `--resume`."""

    def refresh_due(self) -> bool:
        """Whether `refresh` wants every trial now (snapshotting them all is not free)."""
        return False

    def refresh(self, trials: Sequence[TrialSnapshot]) -> None: ...

    def experiment_ended(self, trials: Sequence[TrialSnapshot]) -> None: ...


class MlflowRelay(TrialListener):
    """Mirror each trial into a nested MLflow child run of the sweep's parent run."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        parent_run_id: str,
        space: SearchSpace,
        data_dir: str,
        git_sha: str,
        experiment: str | None = None,
        run_tags: Mapping[str, str] | None = None,
    ) -> None:
        # A study's phases run as sweeps of their own, all in the study's experiment.
        self.experiment = experiment or space.name
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.space = space
        self.data_dir = data_dir
        self.git_sha = git_sha
        self.run_tags = dict(run_tags or {})  # on every trial run besides its own (extension)
        self._tracker: Any = None
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None, "_runs": {}, "_precision_tags": {}}

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from orchestrator.tracking.writer import SweepTracker

            self._tracker = SweepTracker(self.tracking_uri, self.experiment)
            self._tracker.parent_run_id = self.parent_run_id
        return self._tracker

    def setup(self) -> None:
        self.tracker  # noqa: B018 (open the store before the first trial starts)

    def trial_started(self, trial: TrialSnapshot) -> None:
        self._guard(self._start, trial)

    def trial_result(self, trial: TrialSnapshot, result: Mapping[str, Any]) -> None:
        self._guard(self._result, trial, result)

    def trial_completed(self, trial: TrialSnapshot) -> None:
        self._guard(self._complete, trial)

    def trial_errored(self, trial: TrialSnapshot) -> None:
        self._guard(self._error, trial)

    def trial_recovered(self, trial: TrialSnapshot) -> None:
        self._guard(
            lambda: self.tracker.set_tags(self._run(trial), {"retries": str(trial.retries)})
        )

    def experiment_ended(self, trials: Sequence[TrialSnapshot]) -> None:
        self._guard(self._end, trials)

    def _guard(self, call: Callable[..., None], *args: Any) -> None:
        # A tracking hiccup must not take the sweep (and every running trial) down with it.
        try:
            call(*args)
        except Exception:
            logger.exception("MLflow logging failed; the sweep goes on")

    def _run(self, trial: TrialSnapshot) -> str:
        if trial.trial_id not in self._runs:
            self._start(trial)
        return self._runs[trial.trial_id]

    def _start(self, trial: TrialSnapshot) -> None:
        from orchestrator.tracking.provenance import data_sha256

        # A sampled (or an arm's) data.para_train: auto, resolved as the trial's training does.
        config = resolve_data_files(
            apply_params(self.space.base, trial.params), Path(self.data_dir), strict=False
        )
        tags = {
            "sampler": self.space.sampler,
            "git_sha": self.git_sha,
            "data_sha256": data_sha256(config, Path(self.data_dir)),
            "ray_trial_name": trial.name,
            **self.run_tags,
        }
        self._runs[trial.trial_id] = self.tracker.start_trial(
            trial.trial_id,
            run_name=run_name(self.space, trial.params, trial.labels),
            config=config,
            tags=tags,
            labels=trial.labels,
        )

    def _result(self, trial: TrialSnapshot, result: Mapping[str, Any]) -> None:
        if EPOCH_KEY not in result:
            return
        metrics = {
            k: float(result[k]) for k in (*METRICS, EPOCH_KEY) if is_finite_number(result.get(k))
        }
        self.tracker.log_epoch(self._run(trial), metrics, step=int(result[EPOCH_KEY]))
        # What precision: auto chose on the trial's machine: tagged once per trial (again only if
        # a retry on another machine chose otherwise). setdefault: relays pickled before it.
        precision = str(result.get(PRECISION_KEY) or "")
        tagged = self.__dict__.setdefault("_precision_tags", {})
        if precision and tagged.get(trial.trial_id) != precision:
            self.tracker.set_tags(self._run(trial), {PRECISION_KEY: precision})
            tagged[trial.trial_id] = precision

    def _final(self, trial: TrialSnapshot) -> tuple[dict[str, float], dict[str, str]]:
        result = trial.last_result
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k.startswith(BEST_PREFIX) and is_finite_number(v)
        }
        tags = {STATE_TAG: trial_state(trial, ending=True)}
        if self.space.constraints:  # from its best epoch's metrics, as Optuna was told
            feasible = is_feasible(self.space.constraints, final_metrics(result))
            tags[FEASIBLE_TAG] = str(feasible).lower()
        if result.get(BEST_CHECKPOINT):
            tags[BEST_CHECKPOINT] = str(result[BEST_CHECKPOINT])
        return metrics, tags

    def _complete(self, trial: TrialSnapshot) -> None:
        metrics, tags = self._final(trial)
        result = trial.last_result
        status = "FINISHED"
        if tags[STATE_TAG] == "pruned":
            scheduler = self.space.scheduler
            value = result.get(self.space.metric, float("nan"))
            tags["pruned_reason"] = (
                f"{scheduler.name} stopped it after epoch {int(result.get(EPOCH_KEY, 0))} "
                f"of {scheduler.max_epochs} with {self.space.metric}={value:.4f}"
            )
        elif tags[STATE_TAG] == "killed":
            status = "KILLED"
        elif tags[STATE_TAG] == "failed":
            status = "FAILED"
            tags["failed_reason"] = str(result[NONFINITE_LOSS])[:500]
        self.tracker.finish_run(self._run(trial), status, metrics=metrics, tags=tags)

    def _error(self, trial: TrialSnapshot) -> None:
        metrics, tags = self._final(trial)
        tags.update({STATE_TAG: "failed", "failed_reason": error_reason(trial)})
        self.tracker.finish_run(self._run(trial), "FAILED", metrics=metrics, tags=tags)

    def _end(self, trials: Sequence[TrialSnapshot]) -> None:
        """Runs of trials the sweep left unfinished are KILLED; runs whose trial the driver
        forgot when it died (asked after its last saved state) are marked orphaned."""
        for trial in trials:
            if trial.trial_id in self._runs and trial.status not in (TERMINATED, ERROR):
                self.tracker.finish_run(
                    self._runs[trial.trial_id], "KILLED", tags={STATE_TAG: "killed"}
                )
        live = {t.trial_id for t in trials}
        for run in self.tracker.child_runs():
            if run.data.tags.get(TRIAL_ID_TAG) not in live and run.info.status == "RUNNING":
                self.tracker.finish_run(run.info.run_id, "KILLED", tags={STATE_TAG: "orphaned"})


class DropResumeState(TrialListener):
    """Delete a finished trial's resume state (the trainer's `train/checkpoints/last/` and Ray's
    `checkpoint_<n>/`, each the model with its optimizer moments: 3x the model) once the saved
    experiment state in the results directory says it finished: until then a driver killed now
    would resume the trial from it (`lost_checkpoint.py`). An errored trial keeps Ray's copy:
    `--resume` runs it again when a full or read-only disk failed it (storage_fault.py)."""

    def __init__(self, layout: SweepLayout) -> None:
        self.layout = layout
        self._ended: list[str] = []  # since Ray last saved the experiment's state
        # Trials a save recorded finished: [ids, the state file's mtime seen, changes seen].
        self._recorded: list[list[Any]] = []

    def trial_completed(self, trial: TrialSnapshot) -> None:
        # setdefault: a DropResumeState pickled in an older sweep's tuner.pkl has no lists.
        self.__dict__.setdefault("_ended", []).append(trial.trial_id)

    def trial_errored(self, trial: TrialSnapshot) -> None:
        drop_resume_state(self.layout.trial(trial.trial_id), ray_copies=False)

    def state_saved(self) -> None:
        # Ray copies each save into the results directory in the background, one at a time,
        # skipping saves while a copy runs: of the copies that land after a save (each rewrites
        # the state file), the first may be an older save's, the second is that one's or newer.
        seen = newest_state_mtime(self.layout.root)
        waiting = []
        for batch in self.__dict__.get("_recorded", []):
            if seen != batch[1]:
                batch[1], batch[2] = seen, batch[2] + 1
            if batch[2] < 2:
                waiting.append(batch)
                continue
            for trial_id in batch[0]:
                drop_resume_state(self.layout.trial(trial_id))
        ended = self.__dict__.get("_ended", [])
        self._recorded = waiting + ([[ended, seen, 0]] if ended else [])
        self._ended = []


def newest_state_mtime(experiment_dir: Path) -> int | None:
    """When Ray's saved experiment state in `experiment_dir` was last written (ns), if it was."""
    found = []
    for path in experiment_dir.glob("experiment_state-*.json"):
        with contextlib.suppress(FileNotFoundError):  # replaced as we looked
            found.append(path.stat().st_mtime_ns)
    return max(found, default=None)


class LiveTrialTable(TrialListener):
    """A rich table of trials (state, swept values, epoch, metric) redrawn while the sweep runs."""

    def __init__(self, space: SearchSpace, *, refresh_s: float = 1.0) -> None:
        self.space = space
        self.refresh_s = refresh_s
        self._live: Any = None
        self._last_draw = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None}

    def setup(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        if not console.is_terminal:
            console = Console(stderr=True, width=160)  # logs and CI: no wrapping at 80 columns
        self._live = Live(console=console, auto_refresh=False)
        self._live.start()

    def refresh_due(self) -> bool:
        return self._live is not None and time.monotonic() - self._last_draw >= self.refresh_s

    def refresh(self, trials: Sequence[TrialSnapshot]) -> None:
        self._last_draw = time.monotonic()
        self._live.update(render_trials(self.space, trials), refresh=True)

    def experiment_ended(self, trials: Sequence[TrialSnapshot]) -> None:
        if self._live is not None:
            self.refresh(trials)
            self._live.stop()
            self._live = None


TABLE_ENDED_ROWS = 10  # ended trials the live table shows: the best ones


def render_trials(space: SearchSpace, trials: Sequence[TrialSnapshot]) -> Any:
    """The trials as a rich Table: id, state, swept values, epoch, last and best metric. Every
    trial still to end, then the best `TABLE_ENDED_ROWS` that ended and a count of the rest, so
    a redraw costs the same at trial 1,000 as at trial 10."""
    from rich.table import Table

    metric = space.metric
    table = Table(title=f"sweep {space.name}: {len(trials)}/{space.total_trials} trials")
    for column in ("trial", "state", "params", "epoch", metric, f"best {metric}"):
        table.add_column(column, overflow="fold")
    styles = {"failed": "red", "pruned": "yellow", "completed": "green", "running": "cyan"}
    ended = [t for t in trials if t.status in (TERMINATED, ERROR)]
    sign = -1.0 if space.mode == "max" else 1.0
    ranked = sorted(ended, key=lambda t: _rank(t.last_result.get(best_key(metric)), sign))
    shown = [t for t in trials if t.status not in (TERMINATED, ERROR)]
    for trial in shown + ranked[:TABLE_ENDED_ROWS]:
        result = trial.last_result
        state = trial_state(trial)
        table.add_row(
            trial.trial_id,
            f"[{styles.get(state, 'white')}]{state}[/]",
            run_name(space, trial.params, trial.labels),
            str(int(result[EPOCH_KEY])) if EPOCH_KEY in result else "-",
            _fmt(result.get(metric)),
            _fmt(result.get(best_key(metric))),
        )
    if len(ranked) > TABLE_ENDED_ROWS:
        table.caption = f"and {len(ranked) - TABLE_ENDED_ROWS} more ended trials"
    return table


def _rank(value: Any, sign: float) -> float:
    return sign * float(value) if is_finite_number(value) else math.inf


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if is_finite_number(value) else "-"
