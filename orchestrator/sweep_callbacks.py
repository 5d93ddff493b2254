"""Driver-side Ray Tune callbacks: relay every trial to MLflow, and draw a live table of trials.

Logging from the driver means one process writes the MLflow store, so concurrent trials cannot lock
SQLite, and workers on other nodes need no access to it. Both callbacks are pickled into Ray's
`tuner.pkl` when the Tuner is built, so they open their clients in `setup()` and drop them when
pickled.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.config import apply_params
from orchestrator.contract import (
    BEST_CHECKPOINT,
    BEST_PREFIX,
    EPOCHS_LEFT,
    METRICS,
    NONFINITE_LOSS,
)
from orchestrator.space import SearchSpace, run_name
from orchestrator.trainable import trial_params

logger = logging.getLogger(__name__)


def trial_state(trial: Trial, *, ending: bool = False) -> str:
    """pending / running / completed / pruned / failed / killed, from Ray's status and last result.

    `ending`: called from on_trial_complete, where Ray still says RUNNING.
    """
    if trial.status == Trial.ERROR or NONFINITE_LOSS in (trial.last_result or {}):
        return "failed"
    if trial.status == Trial.TERMINATED or ending:
        left = (trial.last_result or {}).get(EPOCHS_LEFT)
        if left is None:
            return "killed"  # stopped before reporting any epoch
        return "pruned" if float(left) > 0 else "completed"
    return trial.status.lower()


def error_reason(trial: Trial) -> str:
    """The last line of a failed trial's error file (its exception)."""
    path = trial.error_file
    if path and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return "unknown error"


class MlflowRelay(Callback):
    """Mirror each trial into a nested MLflow child run of the sweep's parent run."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        parent_run_id: str,
        space: SearchSpace,
        data_dir: str,
        git_sha: str,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.space = space
        self.data_dir = data_dir
        self.git_sha = git_sha
        self._tracker: Any = None
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None, "_runs": {}}

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from orchestrator.tracking import SweepTracker

            self._tracker = SweepTracker(self.tracking_uri, self.space.name)
            self._tracker.parent_run_id = self.parent_run_id
        return self._tracker

    def setup(self, **info: Any) -> None:
        self.tracker  # noqa: B018 (open the store before the first trial starts)

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._guard(self._start, trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any
    ) -> None:
        self._guard(self._result, trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._guard(self._complete, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._guard(self._error, trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        failures = trial.run_metadata.num_failures
        self._guard(lambda: self.tracker.set_tags(self._run(trial), {"retries": str(failures)}))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._guard(self._end, trials)

    def _guard(self, call: Any, *args: Any) -> None:
        # A tracking hiccup must not take the sweep (and every running trial) down with it.
        try:
            call(*args)
        except Exception:
            logger.exception("MLflow logging failed; the sweep goes on")

    def _run(self, trial: Trial) -> str:
        if trial.trial_id not in self._runs:
            self._start(trial)
        return self._runs[trial.trial_id]

    def _start(self, trial: Trial) -> None:
        from orchestrator.tracking import data_sha256

        params = trial_params(trial.config)
        config = apply_params(self.space.base, params)
        tags = {
            "sampler": self.space.sampler,
            "git_sha": self.git_sha,
            "data_sha256": data_sha256(config, Path(self.data_dir)),
            "ray_trial_name": str(trial),
        }
        self._runs[trial.trial_id] = self.tracker.start_trial(
            trial.trial_id, run_name=run_name(self.space, params), config=config, tags=tags
        )

    def _result(self, trial: Trial, result: Mapping[str, Any]) -> None:
        if "epoch" not in result:
            return
        metrics = {
            k: float(result[k]) for k in (*METRICS, "epoch") if _finite_number(result.get(k))
        }
        self.tracker.log_epoch(self._run(trial), metrics, step=int(result["epoch"]))

    def _final(self, trial: Trial) -> tuple[dict[str, float], dict[str, str]]:
        result = trial.last_result or {}
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k.startswith(BEST_PREFIX) and _finite_number(v)
        }
        tags = {"trial_state": trial_state(trial, ending=True)}
        if result.get(BEST_CHECKPOINT):
            tags[BEST_CHECKPOINT] = str(result[BEST_CHECKPOINT])
        return metrics, tags

    def _complete(self, trial: Trial) -> None:
        metrics, tags = self._final(trial)
        result = trial.last_result or {}
        status = "FINISHED"
        if tags["trial_state"] == "pruned":
            value = result.get(self.space.metric, float("nan"))
            epoch = int(result.get("epoch", 0))
            tags["pruned_reason"] = (
                f"{self.space.scheduler.name} stopped it after epoch {epoch} "
                f"of {self.space.scheduler.max_epochs} with {self.space.metric}={value:.4f}"
            )
        elif tags["trial_state"] == "killed":
            status = "KILLED"
        elif tags["trial_state"] == "failed":
            status = "FAILED"
            tags["failed_reason"] = str(result[NONFINITE_LOSS])[:500]
        self.tracker.finish_run(self._run(trial), status, metrics=metrics, tags=tags)

    def _error(self, trial: Trial) -> None:
        metrics, tags = self._final(trial)
        tags.update(trial_state="failed", failed_reason=error_reason(trial))
        self.tracker.finish_run(self._run(trial), "FAILED", metrics=metrics, tags=tags)

    def _end(self, trials: list[Trial]) -> None:
        """Runs of trials the sweep left unfinished are KILLED; runs whose trial the driver
        forgot when it died (asked after its last saved state) are marked orphaned."""
        live = {t.trial_id: t for t in trials}
        for trial in trials:
            if trial.trial_id in self._runs and trial.status not in (
                Trial.TERMINATED,
                Trial.ERROR,
            ):
                self.tracker.finish_run(
                    self._runs[trial.trial_id], "KILLED", tags={"trial_state": "killed"}
                )
        for run in self.tracker.child_runs():
            if run.data.tags.get("trial_id") not in live and run.info.status == "RUNNING":
                self.tracker.finish_run(
                    run.info.run_id, "KILLED", tags={"trial_state": "orphaned"}
                )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class DropResumeState(Callback):
    """Delete a finished trial's trainer resume state (`train/checkpoints/last/`, with optimizer
    moments: 3x the model). Ray keeps its own copy as long as the trial could resume."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        best = (trial.last_result or {}).get(BEST_CHECKPOINT)
        if best:
            shutil.rmtree(Path(best).parent / "last", ignore_errors=True)

    on_trial_error = on_trial_complete


class LiveTrialTable(Callback):
    """A rich table of trials (state, swept values, epoch, metric) redrawn while the sweep runs."""

    def __init__(self, space: SearchSpace, *, refresh_s: float = 1.0) -> None:
        self.space = space
        self.refresh_s = refresh_s
        self._live: Any = None
        self._last_draw = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None}

    def setup(self, **info: Any) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        if not console.is_terminal:
            console = Console(stderr=True, width=160)  # logs and CI: no wrapping at 80 columns
        self._live = Live(console=console, auto_refresh=False)
        self._live.start()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._live is not None and time.monotonic() - self._last_draw >= self.refresh_s:
            self._draw(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._draw(trials)
            self._live.stop()
            self._live = None

    def _draw(self, trials: list[Trial]) -> None:
        self._last_draw = time.monotonic()
        self._live.update(render_trials(self.space, trials), refresh=True)


def render_trials(space: SearchSpace, trials: list[Trial]) -> Any:
    """The trials as a rich Table: id, state, swept values, epoch, last and best metric."""
    from rich.table import Table

    metric = space.metric
    table = Table(title=f"sweep {space.name}: {len(trials)}/{space.total_trials} trials")
    for column in ("trial", "state", "params", "epoch", metric, f"best {metric}"):
        table.add_column(column, overflow="fold")
    styles = {"failed": "red", "pruned": "yellow", "completed": "green", "running": "cyan"}
    for trial in trials:
        result = trial.last_result or {}
        state = trial_state(trial)
        table.add_row(
            trial.trial_id,
            f"[{styles.get(state, 'white')}]{state}[/]",
            run_name(space, trial_params(trial.config)),
            str(int(result["epoch"])) if "epoch" in result else "-",
            _fmt(result.get(metric)),
            _fmt(result.get(f"{BEST_PREFIX}{metric}")),
        )
    return table


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if _finite_number(value) else "-"
