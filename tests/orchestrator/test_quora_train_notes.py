"""Every Quora figure says which training file it came from: a sweep resolves `data.para_train:
auto` once, whoever starts it (so its MLflow params and data checksum name the file read), and
the sweep, study, ensemble and report output each say which file the runs trained on."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from model.config import TrainConfig
from model.data_dir import FULL_QUORA_TRAIN, PARA_TRAIN_AUTO, PARTIAL_QUORA_TRAIN
from model.evaluate import OVERALL
from orchestrator.cli import main
from orchestrator.cli.sweep import study_summary
from orchestrator.report.sweep_report import write_report
from orchestrator.space.schema import load_space
from orchestrator.sweep.outcome import SweepOutcome
from orchestrator.tracking.provenance import data_sha256
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
)
from tests.tiny_model import tiny_config

REPO = Path(__file__).resolve().parents[2]
PARTIAL_NOTE = (
    "note: Quora trained on pairs drawn from the 5,000-pair partial file "
    "partial/quora-train-head5000.csv"
)


def with_para_train(cfg: TrainConfig, name: str) -> TrainConfig:
    return replace(cfg, data=replace(cfg.data, para_train=name))


def test_the_data_checksum_hashes_the_file_auto_means(tmp_path: Path) -> None:
    (tmp_path / "partial").mkdir()
    partial = tmp_path / PARTIAL_QUORA_TRAIN
    partial.write_text("id\tsentence1\tsentence2\tis_duplicate\n")
    auto = TrainConfig()
    explicit = data_sha256(with_para_train(auto, PARTIAL_QUORA_TRAIN), tmp_path)
    assert data_sha256(auto, tmp_path) == explicit  # not `auto: absent`
    partial.unlink()
    assert data_sha256(auto, tmp_path) != explicit  # now absent: a different digest


def test_a_space_resolves_auto_in_the_data_dir_it_runs_on(tmp_path: Path) -> None:
    space = load_space(REPO / "search_spaces" / "quickstart.yaml")
    assert space.base.data.para_train == PARA_TRAIN_AUTO
    assert space.with_data_files(tmp_path).base == space.base  # neither file: trials say so
    (tmp_path / FULL_QUORA_TRAIN).write_text("x")
    resolved = space.with_data_files(tmp_path)
    assert resolved.base == with_para_train(space.base, FULL_QUORA_TRAIN)
    assert resolved.searched == space.searched


def test_the_sweep_summary_names_the_quora_file() -> None:
    outcome = SweepOutcome(
        "s", Path("results/s"), "sqlite:///m.db", "p", "o", OVERALL, "max", quora_train="q.csv"
    )
    assert "note: Quora trained on pairs drawn from q.csv" in outcome.summary()
    outcome.quora_train = PARTIAL_QUORA_TRAIN
    assert PARTIAL_NOTE in outcome.summary()


def test_the_study_summary_names_each_arms_quora_file(tmp_path: Path) -> None:
    space_file = tmp_path / "study.yaml"
    arms = {"baseline": {}, "full": {"data.para_train": FULL_QUORA_TRAIN}, "smart": {}}
    space_file.write_text(
        yaml.safe_dump(
            {
                "name": "quora_files",
                "base": str(REPO / "configs" / "tiny.yaml"),
                "metric": OVERALL,
                "arms": {**arms, "smart": {"smart.weight": 1.0}},
                "baseline": "baseline",
                "seeds": 2,
            }
        )
    )
    space = load_space(space_file)
    outcome = SweepOutcome(
        space.name, tmp_path, "sqlite:///m.db", "p", "o", OVERALL, "max",
        quora_train=PARTIAL_QUORA_TRAIN,
    )  # fmt: skip
    assert study_summary(space, outcome)[-3] == (
        "note: Quora trained on pairs drawn from several files: the 5,000-pair partial file "
        "partial/quora-train-head5000.csv (2 arms), the full quora-train.csv (1 arm)"
    )


@pytest.fixture
def partial_store(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """results/ with sweep `fake` (3 finished trials with untrained checkpoints) whose trials
    trained Quora on the partial file, and a tiny data directory beside it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_tiny_data_dir(data_dir, tmp_path / "data", rows=12)
    results = tmp_path / "results"
    base = with_para_train(tiny_config(), PARTIAL_QUORA_TRAIN)
    trials = []
    for i, value in enumerate([0.5, 0.7, 0.6]):
        checkpoint = save_untrained_checkpoint(results / "fake" / f"t{i}" / "best", base)
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    fake_sweep(f"sqlite:///{results}/mlflow.db", "fake", trials, searched=("seed",), base=base)
    return tmp_path


def test_the_report_and_the_ensemble_name_the_trials_quora_file(partial_store: Path) -> None:
    results = partial_store / "results"
    written = write_report("fake", results_dir=results, log_to_mlflow=False)
    assert f"note: {written.notes[-1]}" == PARTIAL_NOTE
    args = ["ensemble", "--top", "2", "--results-dir", str(results)]
    result = CliRunner().invoke(main, [*args, "--data-dir", str(partial_store / "data")])
    assert result.exit_code == 0, result.output
    assert PARTIAL_NOTE in result.output.splitlines()
    assert os.path.isfile(results / "fake" / "ensemble" / "metrics.json")
