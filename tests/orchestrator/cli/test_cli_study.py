"""`orchestrator sweep` on a study (a space with arms:): its plan, and every bad input as a
one-line error (exit 2) before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[3]
TINY = str(REPO / "configs" / "tiny.yaml")


def write_study(tmp_path: Path, text: str | None = None, **changes: object) -> Path:
    raw: dict[str, object] = {
        "name": "cli-study",
        "base": TINY,
        "arms": {"plain": {}, "smart": {"smart.weight": 1.0}},
        "seeds": 2,
        **changes,
    }
    path = tmp_path / "study.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw, sort_keys=False))
    return path


def sweep(path: Path, tmp_path: Path, data_dir: Path, *args: str):
    results = tmp_path / "results"
    command = ["sweep", str(path), "--results-dir", str(results), "--data-dir", str(data_dir)]
    return CliRunner().invoke(main, [*command, *args]), results


def test_dry_run_shows_arms_seeds_and_phases(tmp_path: Path, data_dir: Path) -> None:
    path = write_study(
        tmp_path, num_samples=2, space={"optim.lr": {"float": [1e-4, 1e-3], "log": True}}
    )
    result, results = sweep(path, tmp_path, data_dir, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "valid study; 2 arms x 2 seeds [0, 1], baseline plain" in lines[0]
    assert lines[1] == "phase tune: 2 trials per arm, tpe"
    assert lines[2] == "phase confirm: 4 runs of 2 epoch(s)"
    assert "  arm smart: smart.weight=1.0" in lines
    assert sum(line.startswith("      tune: smart optim.lr=") for line in lines) == 2
    assert not results.exists()


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"arms": {"plain": {"optim.lrr": 1.0}}}, "arms.plain.optim.lrr"),
        (
            {"arms": {"a": {"optim.lr": 1e-3}}, "space": {"optim.lr": {"choice": [1e-4, 1e-3]}}},
            "arms.a.optim.lr",
        ),
        ({"baseline": "nope"}, "baseline"),
        ({"seeds": [0, -1]}, "seeds"),
        ({"seeds": "three"}, "seeds"),
        ({"confirm_epochs": 0}, "confirm_epochs"),
        ({"repeats": 3}, "repeats"),
    ],
)
def test_bad_study_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, data_dir: Path, changes: dict, key: str
) -> None:
    path = write_study(tmp_path, **changes)
    result, results = sweep(path, tmp_path, data_dir)
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()
    assert len(message) == 1 and f"{path}: {key}: " in message[0], result.output
    assert not results.exists()


def test_duplicate_arm_names_are_one_line_naming_the_line(tmp_path: Path, data_dir: Path) -> None:
    text = f"base: {TINY}\narms:\n  a: {{}}\n  a: {{smart.weight: 1.0}}\nseeds: 2\n"
    result, results = sweep(write_study(tmp_path, text), tmp_path, data_dir)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "duplicate key 'a'" in result.output
    assert not results.exists()


def test_resuming_an_edited_study_is_refused(tmp_path: Path, data_dir: Path) -> None:
    from orchestrator.space.schema import load_space
    from orchestrator.sweep.parent_run import study_record

    path = write_study(tmp_path)
    state_dir = tmp_path / "results" / "cli-study"
    state_dir.mkdir(parents=True)
    saved = study_record(load_space(path))
    (state_dir / "sweep.json").write_text(json.dumps({"study": saved, "parent_run_id": "x"}))
    edited = write_study(tmp_path, seeds=[0, 7])
    result, _ = sweep(edited, tmp_path, data_dir, "--resume")
    assert result.exit_code == 2
    assert f"{edited}: seeds: differs from the study 'cli-study' being resumed" in result.output
    assert json.loads((state_dir / "sweep.json").read_text())["study"] == saved  # untouched
