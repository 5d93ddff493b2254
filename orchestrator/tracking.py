"""MLflow bookkeeping of sweeps: one experiment per sweep name, a parent run per sweep, a nested
child run per trial, written only from the sweep driver.

The only module that imports mlflow. Every write goes through `MlflowClient` with explicit run ids
(no global "active run") and is retried with backoff when SQLite says the database is locked, so
several drivers (or a results reader) can share one `mlflow.db`. Resumed sweeps find their runs
again by tag and keep writing to them; epochs already logged are not logged twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from model.config import TASKS, ConfigError, TrainConfig, config_to_dict

logger = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_ID_TAG = "trial_id"
SWEEP_TAG = "sweep"
ROLE_TAG = "role"  # "sweep" on the parent, "trial" on children
STATE_TAG = "trial_state"  # completed / pruned / failed / killed

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


class SweepTracker:
    """The MLflow runs of one sweep; construct in the driver, call from the driver only."""

    def __init__(self, uri: str, experiment: str) -> None:
        # MLflow announces creating and migrating a new SQLite store at INFO: not our user's news.
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = with_retries(self._experiment_id)
        self.parent_run_id: str | None = None
        self._logged_steps: dict[str, set[int]] = {}

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
            self.parent_run_id = resume_run_id
            return resume_run_id
        run = with_retries(
            lambda: self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={ROLE_TAG: "sweep", SWEEP_TAG: self.experiment, **tags},
            )
        )
        run_id = run.info.run_id
        self._log_batch(run_id, params=params)
        for path in artifacts:
            with_retries(lambda p=path: self.client.log_artifact(run_id, str(p)))
        self.parent_run_id = run_id
        return run_id

    def trial_run_id(self, trial_id: str) -> str | None:
        """The child run already holding `trial_id` under this sweep's parent run, if any."""
        runs = with_retries(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=(
                    f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' "
                    f"and tags.{TRIAL_ID_TAG} = '{trial_id}'"
                ),
                run_view_type=ViewType.ALL,
            )
        )
        return runs[0].info.run_id if runs else None

    def start_trial(
        self,
        trial_id: str,
        *,
        run_name: str,
        config: TrainConfig,
        tags: Mapping[str, str],
    ) -> str:
        """Open a trial's child run: a new one (params, tags, config artifact) or its old one."""
        existing = self.trial_run_id(trial_id)
        if existing is not None:
            with_retries(lambda: self.client.update_run(existing, status="RUNNING"))
            self._log_batch(existing, tags={STATE_TAG: "running"})
            history = with_retries(lambda: self.client.get_metric_history(existing, "epoch"))
            self._logged_steps[existing] = {int(m.step) for m in history}
            return existing
        all_tags = {
            PARENT_TAG: str(self.parent_run_id),
            ROLE_TAG: "trial",
            SWEEP_TAG: self.experiment,
            TRIAL_ID_TAG: trial_id,
            STATE_TAG: "running",
            "config_hash": config_hash(config),
            **tags,
        }
        run = with_retries(
            lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        )
        run_id = run.info.run_id
        flat = flatten_config(config)
        self._log_batch(run_id, params={k: _param_text(v) for k, v in flat.items()})
        with_retries(lambda: self.client.log_dict(run_id, config_to_dict(config), "config.yaml"))
        self._logged_steps[run_id] = set()
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
            chunk = slice(start, start + 100)
            with_retries(
                lambda c=chunk: self.client.log_batch(
                    run_id, metrics=metric_rows[c], params=param_rows[c], tags=tag_rows[c]
                )
            )


def flatten_config(config: TrainConfig) -> dict[str, Any]:
    """Dotted keys of the whole resolved config: `optim.lr`, `data.max_examples.sst`, ..."""
    from model.config import flatten

    return flatten(config_to_dict(config))


def _param_text(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value)
    return "null" if value is None else str(value)


def config_hash(config: TrainConfig) -> str:
    """First 16 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so a sweep hashes each file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def data_sha256(config: TrainConfig, data_dir: Path) -> str:
    """One sha256 over the train/dev/test files a config reads (missing files count as absent)."""
    data = config.data
    names: list[str] = []
    for task in TASKS:
        names += [getattr(data, f"{task}_{split}") for split in ("train", "dev", "test")]
        names += list(getattr(data.extra_train, task))
    digest = hashlib.sha256()
    for name in names:
        path = Path(data_dir) / name
        digest.update(f"{name}:{file_sha256(path) if path.is_file() else 'absent'}\n".encode())
    return digest.hexdigest()


def git_sha(repo: Path | None = None) -> str:
    """HEAD of the project's git checkout (`-dirty` when tracked files changed), else `unknown`."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=cwd, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty.returncode == 1 else "")


# =============================================================================================
# Reading a sweep back, for `ensemble`, `report` and `ui` (orchestrator/ensemble.py, results.py).
# Reads the store through the same client and retries; the only writes are the ensemble's own run
# and the report's artifacts on the parent run.

ENSEMBLE_ROLE = "ensemble"  # ROLE_TAG of the run `orchestrator ensemble` logs
MEMBERS_TAG = "ensemble.members"  # comma-separated member run ids of that run


@dataclass(frozen=True)
class StoredRun:
    """A run as stored: params as logged (strings), latest metric values, tags, times in ms."""

    run_id: str
    run_name: str
    status: str  # FINISHED / FAILED / KILLED / RUNNING / SCHEDULED
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_ms: int | None
    end_ms: int | None

    @property
    def trial_id(self) -> str:
        return self.tags.get(TRIAL_ID_TAG, "")

    @property
    def state(self) -> str:
        """completed / pruned / failed / killed / running, as the sweep tagged it."""
        return self.tags.get(STATE_TAG, "")


@dataclass(frozen=True)
class StoredSweep:
    """The newest invocation of a sweep in the store: its parent run and its trials' child runs."""

    name: str
    experiment_id: str
    parent: StoredRun
    trials: list[StoredRun]


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is missing (reading must not create an empty one)."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def _stored(run: Any) -> StoredRun:
    return StoredRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=run.info.status,
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=dict(run.data.tags),
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
    )


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = with_retries(
            lambda t=token: client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=t,
            )
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def sweep_names(uri: str) -> list[str]:
    """Names of the experiments holding a sweep parent run, newest sweep first."""
    if not store_exists(uri):
        return []
    client = MlflowClient(tracking_uri=uri)
    experiments = with_retries(lambda: client.search_experiments(max_results=1000))
    ids = {e.experiment_id: e.name for e in experiments}
    if not ids:
        return []
    parents = _search_all(client, list(ids), f"tags.{ROLE_TAG} = 'sweep'")
    names: list[str] = []
    for run in parents:  # newest first
        name = ids[run.info.experiment_id]
        if name not in names:
            names.append(name)
    return names


def read_sweep(uri: str, name: str) -> StoredSweep | None:
    """The newest parent run of sweep `name` and its child trial runs; None if there is none."""
    if not store_exists(uri):
        return None
    client = MlflowClient(tracking_uri=uri)
    experiment = with_retries(lambda: client.get_experiment_by_name(name))
    if experiment is None:
        return None
    exp_id = experiment.experiment_id
    parents = _search_all(client, [exp_id], f"tags.{ROLE_TAG} = 'sweep'")
    if not parents:
        return None
    parent = parents[0]
    children = _search_all(client, [exp_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    trials = [_stored(r) for r in children if r.data.tags.get(ROLE_TAG) == "trial"]
    trials.sort(key=lambda r: (r.start_ms or 0, r.run_id))
    return StoredSweep(name=name, experiment_id=exp_id, parent=_stored(parent), trials=trials)


class SweepNotFound(ConfigError):
    """No MLflow store, or no sweep of that name in it; the message says what exists."""


def find_sweep(results_dir: Path, sweep: str | None) -> tuple[str, StoredSweep]:
    """The tracking URI and the named sweep (the newest when `sweep` is None), or SweepNotFound."""
    uri = tracking_uri(results_dir)
    if not store_exists(uri):
        raise SweepNotFound(f"no MLflow store at {uri}: run `orchestrator sweep SPACE.yaml` first")
    known = sweep_names(uri)
    name = sweep or (known[0] if known else None)
    stored = read_sweep(uri, name) if name else None
    if stored is None:
        where = f"sweeps there: {', '.join(known)}" if known else "it holds no sweep"
        raise SweepNotFound(f"no sweep named '{name}' in {uri} ({where})")
    return uri, stored


def metric_histories(
    uri: str, run_id: str, keys: Iterable[str]
) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of each metric of a run; the last value logged at a step wins."""
    client = MlflowClient(tracking_uri=uri)
    out: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        history = with_retries(lambda k=key: client.get_metric_history(run_id, k))
        by_step = {int(m.step): float(m.value) for m in sorted(history, key=lambda m: m.timestamp)}
        out[key] = sorted(by_step.items())
    return out


def log_ensemble_run(
    uri: str,
    experiment_id: str,
    *,
    run_name: str,
    member_run_ids: Iterable[str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifact_dir: Path | None = None,
) -> str:
    """Log a finished ensemble as its own run in the sweep's experiment; returns the run id."""
    client = MlflowClient(tracking_uri=uri)
    member_run_ids = list(member_run_ids)
    all_tags = {
        ROLE_TAG: ENSEMBLE_ROLE,
        MEMBERS_TAG: ",".join(member_run_ids),
        **{f"ensemble.member.{i}": run_id for i, run_id in enumerate(member_run_ids)},
        **tags,
    }
    run = with_retries(lambda: client.create_run(experiment_id, run_name=run_name, tags=all_tags))
    run_id = run.info.run_id
    with_retries(
        lambda: client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
            params=[Param(k, _param_text(v)) for k, v in params.items()],
        )
    )
    if artifact_dir is not None:
        with_retries(lambda: client.log_artifacts(run_id, str(artifact_dir)))
    with_retries(lambda: client.set_terminated(run_id, status="FINISHED"))
    return run_id


def log_run_artifacts(uri: str, run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
    """Upload files and directories to a run under `artifact_path` (the report: parent run)."""
    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        if Path(path).is_dir():
            target = f"{artifact_path}/{Path(path).name}"
            with_retries(lambda p=path, t=target: client.log_artifacts(run_id, str(p), t))
        else:
            with_retries(lambda p=path: client.log_artifact(run_id, str(p), artifact_path))


SHARED_VIEW_TAG = "mlflow.sharedViewState."  # experiment tag the UI reads for ?viewStateShareKey=


def view_column(kind: Literal["attributes", "params", "metrics", "tags"], name: str) -> str:
    """A runs-table column as the MLflow UI names it, e.g. params.`optim.lr`."""
    return f"{kind}.`{name}`"


def set_runs_view(
    uri: str,
    experiment_id: str,
    key: str,
    *,
    search_filter: str,
    order_by_metric: str,
    columns: Iterable[str],
) -> None:
    """Store a runs-table view (filter, order, visible columns) as the experiment tag the MLflow
    UI loads for `?viewStateShareKey=<key>`, so the table opens showing params and metrics."""
    state = {
        "searchFilter": search_filter,
        "orderByKey": view_column("metrics", order_by_metric),
        "orderByAsc": False,
        "selectedColumns": list(columns),
    }
    client = MlflowClient(tracking_uri=uri)
    with_retries(
        lambda: client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
    )


def runs_url(base_url: str, experiment_id: str, *, view_key: str | None = None) -> str:
    """The MLflow UI page that lists an experiment's runs as a table (in a stored view)."""
    url = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={view_key}" if view_key else url


def ui_command(uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv of an MLflow UI server (`mlflow server`) on `host:port` against the store `uri`."""
    import sys

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    location = artifact_location(uri)
    if location is not None:
        # Experiments keep their own artifact location; this only serves new ones beside the store.
        command += ["--default-artifact-root", location]
    return command
