"""The MLflow runs of a sweep: one experiment per sweep name, a parent run per sweep, a nested
child run per trial, written only from the sweep driver.

Every write goes through `MlflowClient` with explicit run ids (no global "active run") and is
retried with backoff when SQLite says the database is locked, so several drivers (or a results
reader) can share one `mlflow.db`. Resumed sweeps find their runs again by tag and keep writing to
them; epochs already logged are not logged twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from model.config import ConfigError, TrainConfig, config_to_dict, flatten_config
from orchestrator.contract import (
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    SWEEP_ROLE,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIAL_ROLE,
)
from orchestrator.tracking.provenance import config_hash

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

Status = Literal["FINISHED", "FAILED", "KILLED"]
T = TypeVar("T")


def tracking_uri(results_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI if set, else a SQLite store `<results_dir>/mlflow.db`."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{(Path(results_dir) / 'mlflow.db').resolve()}"


def artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite store (`mlartifacts/`); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def with_retries(call: Callable[[], T], *, attempts: int = 8, base_delay: float = 0.05) -> T:
    """Run an MLflow call, retrying with jittered exponential backoff while SQLite is locked."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # MlflowException or sqlalchemy's OperationalError
            text = str(err).lower()
            if attempt == attempts - 1 or ("locked" not in text and "busy" not in text):
                raise
            time.sleep(base_delay * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


# SQLite stores this process has created (or found complete) under their lock.
_OPENED_STORES: set[str] = set()


class TrackingStoreError(ConfigError):
    """A SQLite MLflow store that is missing and cannot be created (a read-only results dir)."""


def tracking_client(uri: str) -> MlflowClient:
    """An MlflowClient on `uri`; a SQLite store is created once, under an exclusive lock on
    `<db>.lock`, so commands started together on a fresh results directory do not all run
    MLflow's table creation at once (`table ... already exists`). A store already at MLflow's
    schema needs no lock, so one in a read-only results directory can be read."""
    if not uri.startswith("sqlite:///") or uri in _OPENED_STORES:
        return MlflowClient(tracking_uri=uri)
    db = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if _store_is_current(db):
        _OPENED_STORES.add(uri)
        return MlflowClient(tracking_uri=uri)
    # MLflow announces creating and migrating a new SQLite store at INFO: not our user's news.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    lock_path = db.with_name(f"{db.name}.lock")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")  # closed by the `with` below
    except OSError as err:
        raise TrackingStoreError(
            f"{lock_path}: cannot create the MLflow store here ({err.strerror or err}); "
            "use a writable --results-dir, or set MLFLOW_TRACKING_URI"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
        client = MlflowClient(tracking_uri=uri)
        # MLflow builds (and caches per process) each store on first use: the tracking store
        # creates and migrates every table, the registry store only checks for them.
        with_retries(lambda: client.search_experiments(max_results=1))
        with_retries(lambda: client.search_registered_models(max_results=1))
    _OPENED_STORES.add(uri)
    return client


def _store_is_current(db: Path) -> bool:
    """Whether the SQLite store `db` exists at the schema this MLflow writes: its tables are
    all there (a store being created or migrated has an older `alembic_version` until the end)."""
    if not db.is_file():
        return False
    try:
        with contextlib.closing(
            sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        ) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # no such table yet, a hot journal in a read-only dir, not SQLite
        return False
    from mlflow.store.db.utils import _get_latest_schema_revision  # alembic: only when needed

    return row is not None and row[0] == _get_latest_schema_revision()


def param_text(value: Any) -> str:
    """A param value as MLflow stores it: lists as JSON, None as `null`."""
    if isinstance(value, list):
        return json.dumps(value)
    return "null" if value is None else str(value)


class SweepTracker:
    """The MLflow runs of one sweep; construct in the driver, call from the driver only."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self.client = tracking_client(uri)
        self.experiment_id = with_retries(self._experiment_id)
        self.parent_run_id: str | None = None
        self._logged_steps: dict[str, set[int]] = {}
        self._trial_runs: dict[str, str] | None = None  # trial id -> run id (trial_run_id)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(
                    found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment,
                artifact_location=artifact_location(self.uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException:  # created meanwhile by another driver
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def start_sweep(
        self,
        *,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        artifacts: Iterable[Path] = (),
        resume_run_id: str | None = None,
    ) -> str:
        """Create the parent run (or reopen `resume_run_id` of a resumed sweep); return its id."""
        if resume_run_id is not None:
            with_retries(lambda: self.client.update_run(resume_run_id, status="RUNNING"))
            with_retries(lambda: self.client.set_tag(resume_run_id, "resumed", "true"))
            self.parent_run_id, self._trial_runs = resume_run_id, None
            return resume_run_id
        run = with_retries(
            lambda: self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={ROLE_TAG: SWEEP_ROLE, SWEEP_TAG: self.experiment, **tags},
            )
        )
        run_id: str = run.info.run_id
        self._log_batch(run_id, params=params)
        for path in artifacts:
            with_retries(partial(self.client.log_artifact, run_id, str(path)))
        self.parent_run_id, self._trial_runs = run_id, None
        return run_id

    def trial_run_id(self, trial_id: str) -> str | None:
        """The child run already holding `trial_id` under this sweep's parent run, if any. The
        parent's children are searched once, then kept: this driver is the only one adding
        trials to its parent run, and a search per trial would cost O(trials) each."""
        if self._trial_runs is None:
            self._trial_runs = {
                run.data.tags[TRIAL_ID_TAG]: run.info.run_id
                for run in self.child_runs()
                if TRIAL_ID_TAG in run.data.tags
            }
        return self._trial_runs.get(trial_id)

    def start_trial(
        self,
        trial_id: str,
        *,
        run_name: str,
        config: TrainConfig,
        tags: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Open a trial's child run: a new one (params, tags, config artifact) or its old one.
        A study's `labels` (arm, phase) are logged as params beside the config's keys."""
        existing = self.trial_run_id(trial_id)
        if existing is not None:
            return self._reopen_trial(existing)
        all_tags = {
            PARENT_TAG: str(self.parent_run_id),
            ROLE_TAG: TRIAL_ROLE,
            SWEEP_TAG: self.experiment,
            TRIAL_ID_TAG: trial_id,
            STATE_TAG: "running",
            "config_hash": config_hash(config),
            **tags,
        }
        run = with_retries(
            lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        )
        run_id: str = run.info.run_id
        if self._trial_runs is not None:  # filled by trial_run_id above
            self._trial_runs[trial_id] = run_id
        params = {k: param_text(v) for k, v in flatten_config(config).items()}
        self._log_batch(run_id, params={**params, **(labels or {})})
        with_retries(lambda: self.client.log_dict(run_id, config_to_dict(config), "config.yaml"))
        self._logged_steps[run_id] = set()
        return run_id

    def _reopen_trial(self, run_id: str) -> str:
        """A resumed trial's run: RUNNING again, remembering the epochs it already logged."""
        with_retries(lambda: self.client.update_run(run_id, status="RUNNING"))
        self._log_batch(run_id, tags={STATE_TAG: "running"})
        history = with_retries(lambda: self.client.get_metric_history(run_id, "epoch"))
        self._logged_steps[run_id] = {int(m.step) for m in history}
        return run_id

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int) -> bool:
        """Log one epoch's metrics at `step`; False (and nothing logged) if the step is logged."""
        logged = self._logged_steps.setdefault(run_id, set())
        if step in logged:
            return False
        self._log_batch(run_id, metrics=metrics, step=step)
        logged.add(step)
        return True

    def finish_run(
        self,
        run_id: str,
        status: Status,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log final metrics and tags, then mark the run FINISHED, FAILED or KILLED."""
        self._log_batch(run_id, metrics=metrics or {}, tags=tags or {})
        with_retries(lambda: self.client.set_terminated(run_id, status=status))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._log_batch(run_id, tags=tags)

    def end_running_trials(self, status: Status, tags: Mapping[str, str]) -> int:
        """Finish every trial run of this sweep still RUNNING (a sweep stopped by Ctrl-C: Ray
        calls no callback for its unfinished trials); returns how many there were."""
        running = [run for run in self.child_runs() if run.info.status == "RUNNING"]
        for run in running:
            self.finish_run(run.info.run_id, status, tags=tags)
        return len(running)

    def child_runs(self) -> list[Any]:
        """Every child run of this sweep's parent run (mlflow `Run` objects)."""
        return list(
            with_retries(
                lambda: self.client.search_runs(
                    [self.experiment_id],
                    filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                    run_view_type=ViewType.ALL,
                    max_results=10000,
                )
            )
        )

    def tag_trials(self, trial_ids: Collection[str], tags: Mapping[str, str]) -> int:
        """Set `tags` on the trial runs of this experiment that hold `trial_ids` (under any
        parent run: an extension's trials are under its own) and lack them; returns how many
        runs changed. One search for them all."""
        wanted = set(trial_ids)
        runs = with_retries(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.{ROLE_TAG} = '{TRIAL_ROLE}'",
                run_view_type=ViewType.ALL,
                max_results=50000,
            )
        )
        changed = [
            run for run in runs
            if run.data.tags.get(TRIAL_ID_TAG) in wanted
            and any(run.data.tags.get(key) != value for key, value in tags.items())
        ]  # fmt: skip
        for run in changed:
            self._log_batch(run.info.run_id, tags=tags)
        return len(changed)

    def _log_batch(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        now = int(time.time() * 1000)
        metric_rows = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        param_rows = [Param(k, str(v)) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        # MLflow takes at most 1000 metrics / 100 params / 100 tags per batch.
        for start in range(0, max(len(metric_rows), len(param_rows), len(tag_rows), 1), 100):
            end = start + 100
            batch = partial(
                self.client.log_batch,
                run_id,
                metrics=metric_rows[start:end],
                params=param_rows[start:end],
                tags=tag_rows[start:end],
            )
            with_retries(batch)
