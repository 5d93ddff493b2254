"""Reading a sweep back from MLflow, for `ensemble`, `report` and `ui`, and the runs they log.

Reads the store through the same client and retries as the writer; the only writes are the
ensemble's own run and the report's artifacts (and a study's per-arm means) on the sweep's parent
run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from model.config import ConfigError
from orchestrator.contract import (
    ENSEMBLE_ROLE,
    EXTENDS_RUN_TAG,
    MEMBERS_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    SWEEP_ROLE,
    TRIAL_ID_TAG,
    TRIAL_ROLE,
)
from orchestrator.tracking.writer import param_text, tracking_client, tracking_uri, with_retries


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
    """The newest invocation of a sweep in the store: its parent run, the parent runs of its
    extensions (`sweep --extend`), and the child runs of the trials of all of them, each once."""

    name: str
    experiment_id: str
    parent: StoredRun
    trials: list[StoredRun]
    extensions: tuple[StoredRun, ...] = ()


class SweepNotFound(ConfigError):
    """No MLflow store, or no sweep of that name in it; the message says what exists."""


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
    """Every active run matching `filter_string`, newest first, page by page."""
    runs: list[Any] = []
    token = None
    while True:
        page = with_retries(
            partial(
                client.search_runs,
                experiment_ids,
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
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
    client = tracking_client(uri)
    experiments = with_retries(lambda: client.search_experiments(max_results=1000))
    ids = {e.experiment_id: e.name for e in experiments}
    if not ids:
        return []
    parents = _search_all(client, list(ids), f"tags.{ROLE_TAG} = '{SWEEP_ROLE}'")
    names: list[str] = []
    for run in parents:  # newest first
        name = ids[run.info.experiment_id]
        if name not in names:
            names.append(name)
    return names


def read_sweep(uri: str, name: str) -> StoredSweep | None:
    """The newest parent run of sweep `name` (an extension's parent run is not one), its
    extensions' parent runs and every child trial run of them; None if there is none."""
    if not store_exists(uri):
        return None
    client = tracking_client(uri)
    experiment = with_retries(lambda: client.get_experiment_by_name(name))
    if experiment is None:
        return None
    exp_id = experiment.experiment_id
    parents = _search_all(client, [exp_id], f"tags.{ROLE_TAG} = '{SWEEP_ROLE}'")
    firsts = [run for run in parents if EXTENDS_RUN_TAG not in run.data.tags]
    if not firsts:
        return None
    parent = firsts[0]
    extensions = [
        run for run in reversed(parents)  # oldest first
        if run.data.tags.get(EXTENDS_RUN_TAG) == parent.info.run_id
    ]  # fmt: skip
    trials: dict[str, StoredRun] = {}
    for run_id in [parent.info.run_id, *(run.info.run_id for run in extensions)]:
        for child in _search_all(client, [exp_id], f"tags.`{PARENT_TAG}` = '{run_id}'"):
            if child.data.tags.get(ROLE_TAG) == TRIAL_ROLE:
                trials[child.info.run_id] = _stored(child)
    ordered = sorted(trials.values(), key=lambda r: (r.start_ms or 0, r.run_id))
    extended = tuple(_stored(run) for run in extensions)
    return StoredSweep(name, exp_id, _stored(parent), ordered, extensions=extended)


def run_status(uri: str, run_id: str) -> str | None:
    """A run's MLflow status (RUNNING, FINISHED, KILLED, FAILED); None when the store or the
    run is not there."""
    if not store_exists(uri):
        return None
    client = tracking_client(uri)
    try:
        return str(with_retries(lambda: client.get_run(run_id)).info.status)
    except MlflowException:
        return None


def find_sweep(results_dir: Path, sweep: str | None) -> tuple[str, StoredSweep]:
    """The tracking URI and the named sweep (the newest when `sweep` is None), or SweepNotFound."""
    uri = tracking_uri(results_dir)
    if not store_exists(uri):
        raise SweepNotFound(f"no MLflow store at {uri}: run `orchestrator sweep SPACE.yaml` first")
    known = sweep_names(uri)
    name = sweep or (known[0] if known else None)
    stored = read_sweep(uri, name) if name else None
    if stored is None:
        if name is None:
            raise SweepNotFound(f"{uri} holds no sweep: run `orchestrator sweep SPACE.yaml` first")
        where = f"sweeps there: {', '.join(known)}" if known else "it holds no sweep"
        raise SweepNotFound(f"no sweep named '{name}' in {uri} ({where})")
    return uri, stored


History = dict[str, list[tuple[int, float]]]  # metric -> (step, value), by step
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
BULK_RUNS = 500  # runs per query: under SQLite's 999 bound parameters
SERVER_READERS = 8  # requests at once to a tracking server


def metric_histories(uri: str, run_id: str, keys: Iterable[str]) -> History:
    """(step, value) pairs of each metric of a run; the last value logged at a step wins."""
    client = tracking_client(uri)
    out: History = {}
    for key in keys:
        history = with_retries(partial(client.get_metric_history, run_id, key))
        out[key] = _by_step(sorted(history, key=lambda m: m.timestamp))
    return out


def metric_histories_of(
    uri: str, run_ids: Iterable[str], keys: Iterable[str]
) -> dict[str, History]:
    """`metric_histories` of many runs. From a database store, one query per metric for 500
    runs (a query per run and metric took the report 40 s at 1,000 trials); from a tracking
    server, which has no such call, a request per run and metric, 8 at a time."""
    runs, keys = list(run_ids), list(keys)
    if uri.split(":", 1)[0].split("+", 1)[0] not in DATABASE_SCHEMES:
        with ThreadPoolExecutor(SERVER_READERS) as pool:
            read = pool.map(lambda run: metric_histories(uri, run, keys), runs)
            return dict(zip(runs, read, strict=True))
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = _database_store(uri, SqlAlchemyStore)
    out: dict[str, History] = {run: {key: [] for key in keys} for run in runs}
    for key in keys:
        for start in range(0, len(runs), BULK_RUNS):
            chunk = runs[start : start + BULK_RUNS]
            # Sorted by run, then timestamp: the last value logged at a step wins.
            rows = with_retries(partial(store.get_metric_history_bulk, chunk, key, 10**9))
            by_run: dict[str, list[Metric]] = {}
            for row in rows:
                by_run.setdefault(row.run_id, []).append(row)
            for run, metrics in by_run.items():
                out[run][key] = _by_step(metrics)
    return out


_DATABASE_STORES: dict[str, Any] = {}


def _database_store(uri: str, store_class: Any) -> Any:
    """MLflow's own SQL store on `uri` (its bulk history read is not on the client), one per
    process; reads only (the artifact root it is given is never used)."""
    if uri not in _DATABASE_STORES:
        tracking_client(uri)  # a SQLite store is created or migrated under its lock first
        _DATABASE_STORES[uri] = store_class(uri, "unused-artifact-root")
    return _DATABASE_STORES[uri]


def _by_step(metrics: Iterable[Metric]) -> list[tuple[int, float]]:
    return sorted({int(m.step): float(m.value) for m in metrics}.items())


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
    client = tracking_client(uri)
    member_run_ids = list(member_run_ids)
    all_tags = {
        ROLE_TAG: ENSEMBLE_ROLE,
        MEMBERS_TAG: ",".join(member_run_ids),
        **{f"ensemble.member.{i}": run_id for i, run_id in enumerate(member_run_ids)},
        **tags,
    }
    run = with_retries(lambda: client.create_run(experiment_id, run_name=run_name, tags=all_tags))
    run_id: str = run.info.run_id
    with_retries(
        lambda: client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
            params=[Param(k, param_text(v)) for k, v in params.items()],
        )
    )
    if artifact_dir is not None:
        with_retries(lambda: client.log_artifacts(run_id, str(artifact_dir)))
    with_retries(lambda: client.set_terminated(run_id, status="FINISHED"))
    return run_id


def log_run_artifacts(uri: str, run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
    """Upload files and directories to a run under `artifact_path` (the report: parent run)."""
    client = tracking_client(uri)
    for path in paths:
        if Path(path).is_dir():
            target = f"{artifact_path}/{Path(path).name}"
            with_retries(partial(client.log_artifacts, run_id, str(path), target))
        else:
            with_retries(partial(client.log_artifact, run_id, str(path), artifact_path))


def log_run_metrics(
    uri: str, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
) -> None:
    """Log final metrics on a run at step 0, and set tags (the report: each arm's means, stats
    and verdict on a study's parent)."""
    client = tracking_client(uri)
    now = int(time.time() * 1000)
    rows = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for start in range(0, len(rows), 1000):  # MLflow takes at most 1000 metrics per batch
        with_retries(partial(client.log_batch, run_id, metrics=rows[start : start + 1000]))
    if tags:
        labels = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retries(partial(client.log_batch, run_id, tags=labels))
