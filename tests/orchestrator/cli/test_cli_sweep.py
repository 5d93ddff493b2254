"""`orchestrator sweep`: dry runs, and one-line usage errors (exit 2) before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[3]


def write_space(tmp_path: Path, **changes: object) -> Path:
    raw = {
        "name": "cli-demo",
        "base": str(REPO / "configs" / "tiny.yaml"),
        "num_samples": 3,
        "space": {
            "optim.lr": {"float": [1.0e-4, 1.0e-3], "log": True},
            "smart.weight": {"choice": [0.0, 1.0]},
            "smart.steps": {"int": [1, 2], "when": {"smart.weight": {"gt": 0}}},
        },
        **changes,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_dry_run_prints_sampled_configs(tmp_path: Path) -> None:
    path = write_space(tmp_path)
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--num-samples", "4"])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid; 4 trials, sampler tpe" in result.output
    labels = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(labels) == 4 and all(" optim.lr=" in line for line in labels)
    assert not (tmp_path / "results").exists()


def test_bad_space_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    path = write_space(tmp_path, space={"optim.lr": {"float": [1.0e-3, 1.0e-4]}})
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {path}: space.optim.lr: lo must be < hi, got [0.001, 0.0001]"
    ]


def test_bad_name_option_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sweep", str(write_space(tmp_path)), "--name", "a b"])
    assert result.exit_code == 2 and "name: expected letters" in result.output


def test_existing_sweep_needs_resume_and_resume_needs_a_sweep(
    tmp_path: Path, data_dir: Path
) -> None:
    path = write_space(tmp_path)
    results = tmp_path / "results"
    args = ["sweep", str(path), "--results-dir", str(results), "--data-dir", str(data_dir)]
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 2 and "no sweep 'cli-demo' to resume" in resumed.output
    (results / "cli-demo").mkdir(parents=True)
    (results / "cli-demo" / "sweep.json").write_text(json.dumps({"parent_run_id": "x"}))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    assert "sweep 'cli-demo' already exists; pass --resume to continue it" in again.output


def test_dry_run_checks_the_data_and_results_dirs_the_real_run_needs(tmp_path: Path) -> None:
    path = write_space(tmp_path)
    missing = CliRunner().invoke(
        main, ["sweep", str(path), "--dry-run", "--data-dir", str(tmp_path / "nowhere")]
    )
    assert missing.exit_code == 2 and "nowhere: data directory not found" in missing.output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    blocked = CliRunner().invoke(
        main, ["sweep", str(path), "--dry-run", "--results-dir", str(blocker / "results")]
    )
    assert blocked.exit_code == 2 and "is a file, not a directory" in blocked.output


def test_resources_no_machine_has_are_one_line_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.cluster import ClusterNode
    from orchestrator.sweep import ray_tune

    # Ray itself is faked: a 2-core machine without a GPU (tests/integration has the real one).
    monkeypatch.setattr(ray_tune, "init_ray", lambda address, num_cpus: None)
    laptop = [ClusterNode(node_id="n1", ip="127.0.0.1", resources={"CPU": 2.0})]
    monkeypatch.setattr(ray_tune, "alive_nodes", lambda: laptop)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    results = tmp_path / "results"
    args = ["--results-dir", str(results), "--data-dir", str(tmp_path / "data")]
    for resources, key in (({"cpu": 1000}, "resources.cpu"), ({"gpu": 1.5}, "resources.gpu")):
        path = write_space(tmp_path, resources=resources)
        result = CliRunner().invoke(main, ["sweep", str(path), *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: {key}: "), lines
        assert not results.exists()
