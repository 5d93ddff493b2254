"""Opening a SQLite MLflow store: a store already at MLflow's schema is opened without the
creation lock (so `report` or `predict --model` can read one in a read-only results directory);
a store that cannot be created is a one-line error. A real store, real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.tracking import writer
from orchestrator.tracking.writer import TrackingStoreError, tracking_client, tracking_uri


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if each open were the first of a new process: no store counts as opened before.
    monkeypatch.setattr(writer, "_OPENED_STORES", set())


def make_store(results: Path) -> str:
    """A real store under `results/` with one experiment in it, its lock file removed."""
    uri = tracking_uri(results)
    tracking_client(uri).create_experiment("kept")
    writer._OPENED_STORES.clear()
    (results / "mlflow.db.lock").unlink()
    return uri


def test_a_store_at_mlflows_schema_opens_without_the_lock(tmp_path: Path) -> None:
    results = tmp_path / "results"
    uri = make_store(results)
    (results / "mlflow.db.lock").mkdir()  # a lock that cannot be opened, as in a read-only dir
    client = tracking_client(uri)
    assert [e.name for e in client.search_experiments() if e.name == "kept"] == ["kept"]


def test_a_store_being_created_is_opened_under_the_lock(tmp_path: Path) -> None:
    # A file that exists but holds no MLflow schema yet (another process is creating it) is not
    # taken for a finished store: this process waits on the lock and finishes the tables.
    results = tmp_path / "results"
    results.mkdir()
    (results / "mlflow.db").write_bytes(b"")
    client = tracking_client(tracking_uri(results))
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert (results / "mlflow.db.lock").is_file()


def test_a_store_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "mlflow.db.lock").mkdir()  # the lock cannot be opened, even by root
    with pytest.raises(TrackingStoreError) as caught:
        tracking_client(tracking_uri(results))
    assert str(caught.value) == (
        f"{results.resolve() / 'mlflow.db.lock'}: cannot create the MLflow store here (Is a "
        "directory); use a writable --results-dir, or set MLFLOW_TRACKING_URI"
    )
    assert not (results / "mlflow.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_results_dir_reads_its_store_and_cannot_start_one(tmp_path: Path) -> None:
    results, empty = tmp_path / "results", tmp_path / "empty"
    uri = make_store(results)
    empty.mkdir()
    results.chmod(0o555)
    empty.chmod(0o555)
    try:
        names = [e.name for e in tracking_client(uri).search_experiments()]
        with pytest.raises(TrackingStoreError, match=r"mlflow.db.lock: .*\(Permission denied\)"):
            tracking_client(tracking_uri(empty))
    finally:
        results.chmod(0o755)
        empty.chmod(0o755)
    assert "kept" in names
