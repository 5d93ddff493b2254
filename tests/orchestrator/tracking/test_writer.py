"""MLflow bookkeeping: parent/child runs, params, epoch metrics, resume, retries, provenance."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from model.config import TrainConfig
from orchestrator.config import load_train_config
from orchestrator.tracking.provenance import config_hash, data_sha256
from orchestrator.tracking.writer import (
    EXPERIMENT_KIND,
    SweepTracker,
    artifact_location,
    tracking_uri,
    with_retries,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One SQLite store for the module: creating MLflow's schema takes a few seconds.
    return tracking_uri(tmp_path_factory.mktemp("mlflow"))


def test_tracking_uri_prefers_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert (
        artifact_location(tracking_uri(tmp_path)) == (tmp_path / "mlartifacts").resolve().as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking_uri(tmp_path) == "http://mlflow:5000"
    assert artifact_location("http://mlflow:5000") is None


def test_sweep_and_trial_runs(store: str) -> None:
    tracker = SweepTracker(store, "unit-runs")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    parent = tracker.start_sweep(run_name="unit (sweep)", params={"sweep.sampler": "tpe"}, tags={})
    cfg = load_train_config({"optim": {"lr": 3e-5}, "smart": {"weight": 2.1}})
    child = tracker.start_trial(
        "t1", run_name="smart.weight=2.1 optim.lr=3e-05", config=cfg, tags={"sampler": "tpe"}
    )
    assert tracker.log_epoch(child, {"dev/overall": 0.5, "epoch": 1.0}, step=1)
    assert tracker.log_epoch(child, {"dev/overall": 0.6, "epoch": 2.0}, step=2)
    tracker.finish_run(
        child, "FINISHED", metrics={"best/dev/overall": 0.6}, tags={"trial_state": "completed"}
    )

    run = tracker.client.get_run(child)
    assert run.info.run_name == "smart.weight=2.1 optim.lr=3e-05"
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["trial_id"] == "t1" and run.data.tags["trial_state"] == "completed"
    assert run.data.tags["config_hash"] == config_hash(cfg)
    assert run.data.params["optim.lr"] == "3e-05" and run.data.params["smart.weight"] == "2.1"
    assert run.data.params["smart.tasks"] == '["sst", "para", "sts"]'
    assert run.data.metrics["best/dev/overall"] == 0.6
    history = tracker.client.get_metric_history(child, "dev/overall")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    assert [r.info.run_id for r in tracker.child_runs()] == [child]


def test_an_interrupted_sweep_ends_its_running_trial_runs_as_killed(store: str) -> None:
    tracker = SweepTracker(store, "unit-interrupted")
    tracker.start_sweep(run_name="s", params={}, tags={})
    done = tracker.start_trial("t1", run_name="a", config=TrainConfig(), tags={})
    tracker.finish_run(done, "FINISHED", tags={"trial_state": "completed"})
    running = tracker.start_trial("t2", run_name="b", config=TrainConfig(), tags={})
    assert tracker.end_running_trials("KILLED", {"trial_state": "killed"}) == 1
    assert tracker.client.get_run(done).info.status == "FINISHED"
    killed = tracker.client.get_run(running)
    assert killed.info.status == "KILLED" and killed.data.tags["trial_state"] == "killed"
    assert tracker.end_running_trials("KILLED", {"trial_state": "killed"}) == 0


def test_resumed_sweep_reuses_runs_and_skips_logged_epochs(store: str) -> None:
    first = SweepTracker(store, "unit-resume")
    parent = first.start_sweep(run_name="s", params={}, tags={})
    child = first.start_trial("t1", run_name="a", config=TrainConfig(), tags={})
    first.log_epoch(child, {"dev/overall": 0.5, "epoch": 1.0}, step=1)
    # The driver dies; a new one reopens the same parent and finds the trial's run by tag.
    second = SweepTracker(store, "unit-resume")
    assert second.start_sweep(run_name="s", params={}, tags={}, resume_run_id=parent) == parent
    assert second.start_trial("t1", run_name="a", config=TrainConfig(), tags={}) == child
    assert not second.log_epoch(child, {"dev/overall": 0.9, "epoch": 1.0}, step=1)
    assert second.log_epoch(child, {"dev/overall": 0.7, "epoch": 2.0}, step=2)
    second.finish_run(child, "KILLED")
    history = second.client.get_metric_history(child, "dev/overall")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]
    assert second.client.get_run(child).info.status == "KILLED"
    assert len(second.child_runs()) == 1


def test_concurrent_writers_do_not_fail(store: str) -> None:
    tracker = SweepTracker(store, "unit-concurrent")
    tracker.start_sweep(run_name="s", params={}, tags={})
    runs = [
        tracker.start_trial(f"t{i}", run_name=f"r{i}", config=TrainConfig(), tags={})
        for i in range(4)
    ]
    errors: list[BaseException] = []

    def write(run_id: str) -> None:
        own = SweepTracker(store, "unit-concurrent")
        try:
            for step in range(1, 16):
                own.log_epoch(run_id, {"dev/overall": step / 100}, step=step)
        except BaseException as err:  # pragma: no cover - the failure being tested for
            errors.append(err)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for run_id in runs:
        assert len(tracker.client.get_metric_history(run_id, "dev/overall")) == 15


def test_with_retries_backs_off_only_on_locks() -> None:
    calls = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert with_retries(locked_twice, base_delay=0.001) == "ok" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such table")

    calls.clear()
    with pytest.raises(ValueError, match="no such table"):
        with_retries(broken, base_delay=0.001)
    assert len(calls) == 1

    def always_locked() -> None:
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="locked"):
        with_retries(always_locked, attempts=3, base_delay=0.001)


def test_config_hash_tells_configs_apart() -> None:
    a, b = TrainConfig(), load_train_config({"optim": {"lr": 3e-5}})
    assert config_hash(a) == config_hash(TrainConfig()) and config_hash(a) != config_hash(b)
    assert len(config_hash(a)) == 16


def test_data_sha256_sees_a_same_size_rewrite_within_one_timestamp_tick(tmp_path: Path) -> None:
    # A filesystem with coarse timestamps gives both writes the same mtime: set it so, then the
    # hash must still follow the content (a cache keyed by path, size and mtime would not).
    data = tmp_path / "ids-sst-train.csv"
    tick = (1_700_000_000 * 10**9, 1_700_000_000 * 10**9)
    data.write_text("\tid\tsentence\tsentiment\n0\ta\thi\t1\n")
    os.utime(data, ns=tick)
    before = data_sha256(TrainConfig(), tmp_path)
    assert before == data_sha256(TrainConfig(), tmp_path)
    data.write_text("\tid\tsentence\tsentiment\n0\ta\thi\t2\n")
    os.utime(data, ns=tick)
    assert data_sha256(TrainConfig(), tmp_path) != before


def test_finding_the_newest_sweep_in_a_store_without_sweeps_says_so(tmp_path):
    from orchestrator.tracking.store import SweepNotFound, find_sweep
    from orchestrator.tracking.writer import tracking_client, tracking_uri

    tracking_client(tracking_uri(tmp_path)).search_experiments()  # creates the empty store
    with pytest.raises(SweepNotFound, match="holds no sweep: run `orchestrator sweep"):
        find_sweep(tmp_path, None)
