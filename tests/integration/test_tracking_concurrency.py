"""Commands started at the same moment on a fresh results directory share one new SQLite MLflow
store: it is created once, under a lock, instead of by each of them at once (which failed with
`table ... already exists`). Real processes, a real store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration  # real processes, a 25 s common start

REPO = Path(__file__).resolve().parents[2]
# Each process waits for the same instant, then opens the store and its sweep's experiment.
OPEN_TOGETHER = """
import sys, time
from pathlib import Path
from orchestrator.tracking.writer import SweepTracker, tracking_uri
start, results, name = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while time.time() < start:
    time.sleep(0.001)
tracker = SweepTracker(tracking_uri(results), name)
run_id = tracker.start_sweep(run_name=name, params={"p": 1}, tags={})
tracker.finish_run(run_id, "FINISHED")
"""


def test_processes_opening_a_fresh_store_together_all_succeed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    # Far enough ahead that every interpreter has imported mlflow before the start.
    start = time.time() + 25
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_TOGETHER, str(start), str(results), f"sweep-{i}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert time.time() > start, "the processes did not start together: raise the lead time"
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    names = sorted(e.name for e in client.search_experiments() if e.name.startswith("sweep-"))
    assert names == [f"sweep-{i}" for i in range(4)]
    for name in names:
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        assert [(r.info.run_name, r.info.status) for r in runs] == [(name, "FINISHED")]
    assert (results / "mlflow.db.lock").is_file()
