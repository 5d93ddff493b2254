"""Per-trial resources against a real local Ray of 2 CPUs and no GPU: a request the machine can
never meet is a one-line error before the results directory exists, and a GPU space runs its
(one, tiny) trial on the CPU instead of waiting forever for a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main

pytestmark = pytest.mark.integration

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def write_space(path: Path, resources: dict[str, float]) -> Path:
    raw: dict[str, Any] = {
        "name": "resources-it",
        "base": TINY,
        "num_samples": 1,
        "resources": resources,
        "scheduler": {"name": "none"},
        "space": {"optim.lr": {"float": [1.0e-4, 1.0e-3]}, "optim.epochs": 1},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_cpus_no_node_has_fail_before_anything_is_written(
    ray_2cpu: None, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space(tmp_path / "big.yaml", {"cpu": 1000})
    results = tmp_path / "results"
    args = ["sweep", str(space), "--results-dir", str(results), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {space}: resources.cpu: 1000 CPUs per trial, but this machine has 2; Ray could "
        "never start a trial (ask for at most 2)"
    ]
    assert not results.exists()


def test_a_gpu_space_without_a_gpu_trains_on_cpu(
    ray_2cpu: None, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from mlflow import MlflowClient

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU: the space runs on it")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space(tmp_path / "gpu.yaml", {"cpu": 4, "gpu": 0.5})
    results = tmp_path / "results"
    args = ["sweep", str(space), "--results-dir", str(results), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        f"note: {space} asks for resources.gpu 0.5 per trial but this machine has no GPU; "
        "running the trials on CPU (2 CPU each)"
    ) in result.output.splitlines()
    assert "sweep resources-it: 1 trials (1 completed, 0 pruned, 0 failed)" in result.output

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    experiment = client.get_experiment_by_name("resources-it")
    runs = {r.data.tags["role"]: r for r in client.search_runs([experiment.experiment_id])}
    assert runs["sweep"].data.params["sweep.resources.gpu"] == "0.0"
    assert runs["sweep"].data.params["sweep.resources.cpu"] == "2.0"
    assert runs["trial"].data.params["device"] == "cpu"
    assert runs["trial"].data.tags["trial_state"] == "completed"
