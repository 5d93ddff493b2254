"""Real `orchestrator` processes sharing one results directory and store, and a sweep stopped by
Ctrl-C: several sweeps, `train`, `ensemble` and `report` started together all finish with every
trial logged once; SIGINT ends a sweep with exit 130, its MLflow runs KILLED, nothing half-written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")
SMALL = {"data.max_examples.sst": 32, "data.max_examples.para": 32, "data.max_examples.sts": 32}


def write_space(tmp_path: Path, name: str, **changes: Any) -> Path:
    raw = {
        "name": name,
        "base": TINY,
        "num_samples": 2,
        "max_concurrent": 1,
        "sampler": "random",
        "scheduler": "none",
        "space": {
            "optim.lr": {"float": [1.0e-3, 1.0e-2], "log": True},
            "optim.epochs": 1,
            **SMALL,
        },
        **changes,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start(tmp_path: Path, label: str, *args: str) -> subprocess.Popen:
    """`orchestrator ARGS` in its own process group, its output in `<tmp>/<label>.log`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    with (tmp_path / f"{label}.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGKILL of the group ends its Ray cluster too
            # A runner started in the background inherits SIGINT ignored; a terminal's job has it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def finish_all(tmp_path: Path, processes: dict[str, subprocess.Popen], timeout: float) -> None:
    """Wait for every process; each must exit 0 (its log in the failure message)."""
    deadline = time.monotonic() + timeout
    try:
        for label, process in processes.items():
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{label} exited {code}:\n{(tmp_path / f'{label}.log').read_text()}"
    finally:
        for process in processes.values():
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # what is left of its Ray cluster, if anything
    except ProcessLookupError:
        pass
    process.wait()


def sweep_runs(results: Path, name: str) -> tuple[list[Any], list[Any]]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, name
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    return parents, trials


def ray_trial_ids(results: Path, name: str) -> list[str]:
    from ray.tune import ExperimentAnalysis

    return sorted(t.trial_id for t in ExperimentAnalysis(str(results / name)).trials)


def test_sweeps_train_ensemble_and_report_started_together_all_finish(
    tmp_path: Path, data_dir: Path
) -> None:
    results = tmp_path / "results"  # fresh: no store yet
    common = ("--results-dir", str(results), "--data-dir", str(data_dir))
    train = ("train", TINY, "--set", "optim.epochs=1", "--data-dir", str(data_dir))
    # 1: two sweeps and a train on the fresh directory (two sweeps once raced to create the store).
    first = {
        "sweep-a": start(tmp_path, "sweep-a", "sweep", str(write_space(tmp_path, "a")), *common),
        "sweep-b": start(tmp_path, "sweep-b", "sweep", str(write_space(tmp_path, "b")), *common),
        "train-1": start(tmp_path, "train-1", *train, "--out", str(results / "train-1")),
    }
    finish_all(tmp_path, first, timeout=900)
    # 2: a third sweep writing while ensemble and report read the finished ones, and a train.
    ensemble = ("ensemble", "--top", "2", "--sweep", "a", "--dev", "sweep", "--splits", "dev")
    second = {
        "sweep-c": start(tmp_path, "sweep-c", "sweep", str(write_space(tmp_path, "c")), *common),
        "ensemble-a": start(tmp_path, "ensemble-a", *ensemble, *common),
        "report-b": start(tmp_path, "report-b", "report", "b", "--results-dir", str(results)),
        "train-2": start(tmp_path, "train-2", *train, "--out", str(results / "train-2")),
    }
    finish_all(tmp_path, second, timeout=900)

    for name in ("a", "b", "c"):
        parents, trials = sweep_runs(results, name)
        assert [p.info.status for p in parents] == ["FINISHED"], name
        # Each Ray trial logged once, under its sweep's parent run, and finished.
        assert sorted(r.data.tags["trial_id"] for r in trials) == ray_trial_ids(results, name)
        assert len(trials) == 2
        assert {r.info.status for r in trials} == {"FINISHED"}
        assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert (results / "a" / "ensemble" / "metrics.json").is_file()
    assert (results / "b" / "trials.parquet").is_file()
    for run in ("train-1", "train-2"):
        assert (results / run / "metrics.json").is_file()
    ensemble_log = (tmp_path / "ensemble-a.log").read_text()
    assert "member 2: " in ensemble_log and " elapsed " in ensemble_log, ensemble_log


def test_a_sweep_stopped_by_ctrl_c_exits_130_with_its_runs_killed(
    tmp_path: Path, data_dir: Path
) -> None:
    results = tmp_path / "results"
    space = write_space(tmp_path, "stopped", space={"optim.epochs": 5000, **SMALL})
    driver = start(tmp_path, "sweep", "sweep", str(space), "--results-dir", str(results),
                   "--data-dir", str(data_dir))  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        # The trial is training: its stderr.log in the sweep's results has its epoch lines.
        while not any("epoch 2/5000  step " in log.read_text()
                      for log in results.glob("stopped/*/stderr.log")):  # fmt: skip
            assert driver.poll() is None, (tmp_path / "sweep.log").read_text()
            assert time.monotonic() < deadline, "the trial never trained"
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
        assert driver.wait(timeout=300) == 130, (tmp_path / "sweep.log").read_text()
    finally:
        stop_group(driver)
    output = (tmp_path / "sweep.log").read_text()
    assert (
        output.splitlines()[-1]
        == "interrupted: sweep 'stopped' stopped; continue it with --resume"
    )
    parents, trials = sweep_runs(results, "stopped")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert len(trials) == 1 and trials[0].info.status == "KILLED"
    assert trials[0].data.tags["trial_state"] == "killed"
    half_written = [
        path for path in results.rglob("*")
        if path.name.endswith((".partial", ".tmp")) or path.name.startswith((".best.", ".last."))
    ]  # fmt: skip
    assert half_written == []
