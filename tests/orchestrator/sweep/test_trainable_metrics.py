"""What the trainable reports to Tune each epoch: dev, selection and SST detail metrics, and the
best epoch's under best/ (read back from its checkpoint), without a Ray session."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from model.evaluate import (
    DEV_METRICS,
    SELECTION_METRICS,
    SST_BALANCED_ACC,
    confusion_key,
    per_class_key,
)
from orchestrator.contract import (
    BEST_CHECKPOINT,
    EPOCHS_LEFT,
    RESULT_DETAILS_KEY,
    best_key,
    tune_keys,
    unpack_result,
)
from orchestrator.sweep import trainable
from tests.tiny_model import tiny_config


class FakeTune:
    """The slice of `ray.tune` the trainable calls, recording every report."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.Checkpoint = SimpleNamespace(from_directory=lambda path: path)

    def get_context(self) -> SimpleNamespace:
        return SimpleNamespace(get_trial_id=lambda: "trial_0")

    def get_checkpoint(self) -> None:
        return None

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self.reports.append(dict(metrics))


@pytest.mark.parametrize("selection", [0.05, 0.0])
def test_each_epoch_reports_selection_and_sst_details_and_their_best(
    monkeypatch, data_dir: Path, tmp_path: Path, selection: float
) -> None:
    fake = FakeTune()
    monkeypatch.setattr(trainable, "tune", fake)
    small = {"max_examples": {"sst": 32, "para": 32, "sts": 32}, "selection": selection}
    base = tiny_config(data={**small, "dev_max_examples": {"sst": 48, "para": 48, "sts": 48}})
    trainable.train_trial(
        {"optim.epochs": 2},
        base=base,
        data_dir=str(data_dir),
        experiment_dir=str(tmp_path),
        scheduled=tune_keys("dev/overall"),
    )
    assert [r[EPOCHS_LEFT] for r in fake.reports] == [1, 0]
    # Tune sees the scheduled keys as numbers and the rest as one text it keeps no statistics of.
    scheduled = {"dev/overall", "best/dev/overall", "epoch", EPOCHS_LEFT}
    assert all(set(r) == {*scheduled, RESULT_DETAILS_KEY} for r in fake.reports)
    details = [SST_BALANCED_ACC, per_class_key("f1", 4), confusion_key(4, 0)]
    for report in map(unpack_result, fake.reports):
        expected = {*DEV_METRICS, *details, *(SELECTION_METRICS if selection else ())}
        assert expected <= set(report)
        assert {best_key(m) for m in expected} <= set(report)
        assert selection > 0 or not set(SELECTION_METRICS) & set(report)
        assert all(isinstance(report[m], float) for m in expected)
        assert report[BEST_CHECKPOINT].endswith("trial_0/train/checkpoints/best")
