"""An ensemble of a sweep whose retention setting dropped some trials' weights: those trials
are left out (and said to be), the best ones that kept their weights are the members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.checkpoint import drop_weights
from orchestrator.cli import main
from orchestrator.contract import WEIGHTS_DROPPED, WEIGHTS_TAG
from orchestrator.tracking.writer import SweepTracker
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
)
from tests.tiny_model import tiny_config


@pytest.fixture
def kept_two(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sweep `kept` of 4 trials; the best (t3, 0.9) and the worst (t0) lost their weights."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_tiny_data_dir(data_dir, tmp_path / "data", rows=12)
    results = tmp_path / "results"
    trials = []
    for i, value in enumerate([0.5, 0.7, 0.6, 0.9]):
        checkpoint = save_untrained_checkpoint(results / "kept" / f"t{i}" / "best", tiny_config())
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    uri = f"sqlite:///{results}/mlflow.db"
    fake_sweep(uri, "kept", trials, searched=("seed",))
    for dropped in (trials[3], trials[0]):
        assert dropped.checkpoint is not None
        drop_weights(dropped.checkpoint, "retention keep_best: 2: not among the best")
    # Tagged as the sweep's end does; the ensemble reads the checkpoints themselves.
    assert SweepTracker(uri, "kept").tag_trials(["t3", "t0"], {WEIGHTS_TAG: WEIGHTS_DROPPED}) == 2
    return tmp_path


def ensemble(root: Path, top: int) -> tuple[int, str]:
    args = ["ensemble", "--top", str(top), "--sweep", "kept", "--splits", "dev",
            "--results-dir", str(root / "results"), "--data-dir", str(root / "data")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_members_are_the_best_trials_that_kept_their_weights(kept_two: Path) -> None:
    code, output = ensemble(kept_two, 2)
    assert code == 0, output
    summary = json.loads((kept_two / "results" / "kept" / "ensemble" / "metrics.json").read_text())
    assert [m["trial_id"] for m in summary["members"]] == ["t1", "t2"]
    assert "2 whose weights retention dropped left out" in summary["candidates"]


def test_asking_for_more_members_than_kept_weights_says_why(kept_two: Path) -> None:
    code, output = ensemble(kept_two, 3)
    assert code != 0
    assert (
        "sweep 'kept' has 2 finished trials (of 4; 2 whose weights retention dropped left out); "
        "--top 3 asks for more: use --top 2 or fewer"
    ) in output
