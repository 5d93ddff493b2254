"""Ensembles from stored predictions: a trial's best checkpoint keeps its dev predictions, and a
member's predictions combined from storage equal those recomputed from its checkpoint (exactly,
in fp32), with the model run only for the rows storage lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import TASKS, TrainConfig
from model.evaluate import TaskPredictions
from model.stored_predictions import (
    DEV_PREDICTIONS_FILE,
    combine_rows,
    read_dev_predictions,
    write_dev_predictions,
)
from model.train import fit
from orchestrator.ensemble.member_predictions import SplitInputs, predict_member
from tests.orchestrator.sweep_store import make_tiny_data_dir
from tests.tiny_model import tiny_config

CPU = torch.device("cpu")


def trained(tmp_path: Path, data: Path, **data_keys: object) -> tuple[TrainConfig, Path]:
    """A tiny fp32 model fitted for one epoch on `data`; its config and best checkpoint."""
    cfg = tiny_config(data={"batch_size": 8, "eval_batch_size": 8, **data_keys},
                      optim={"epochs": 1})  # fmt: skip
    result = fit(cfg, data_dir=data, out_dir=tmp_path / "run", prediction_splits=())
    return cfg, result.best_checkpoint


def assert_same(got: TaskPredictions, want: TaskPredictions) -> None:
    assert got.ids == want.ids
    np.testing.assert_array_equal(got.values, want.values)
    assert got.values.dtype == want.values.dtype
    if want.probabilities is None:
        assert got.probabilities is None
    else:
        np.testing.assert_array_equal(got.probabilities, want.probabilities)


@pytest.fixture
def tiny_data(tmp_path: Path, data_dir: Path) -> Path:
    return make_tiny_data_dir(data_dir, tmp_path / "data", rows=24)


def test_the_best_checkpoint_keeps_the_dev_predictions_its_epoch_made(
    tmp_path: Path, tiny_data: Path
) -> None:
    cfg, best = trained(tmp_path, tiny_data)
    stored = read_dev_predictions(best)
    assert sorted(stored) == sorted(TASKS)
    assert all(len(stored[task].ids) == 24 for task in TASKS)
    # The same rows predicted again from the checkpoint, as an ensemble member would: equal.
    (best / DEV_PREDICTIONS_FILE).rename(tmp_path / "aside.npz")
    recomputed = predict_member(best, SplitInputs(cfg, tiny_data, ("dev",), []), ("dev",), CPU)
    for task in TASKS:
        assert_same(stored[task], recomputed["dev"][task])


def test_combined_from_storage_equals_recomputed_and_runs_only_the_missing_rows(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, best = trained(tmp_path, tiny_data)
    inputs = SplitInputs(cfg, tiny_data, ("dev",), [])
    ran: list[int] = []
    from orchestrator.ensemble import member_predictions

    real_predict = member_predictions.predict_task

    def counting(model: torch.nn.Module, encoded: object, **kwargs: object) -> TaskPredictions:
        ran.append(len(encoded))  # type: ignore[arg-type]
        return real_predict(model, encoded, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(member_predictions, "predict_task", counting)
    from_storage = predict_member(best, inputs, ("dev",), CPU)
    assert ran == []  # every dev row was stored: the model never ran

    # Storage that lacks a third of each task's rows (a trial evaluated on a dev subset).
    stored = read_dev_predictions(best)
    kept = {
        task: TaskPredictions(
            task,
            preds.ids[8:],
            preds.values[8:],
            None if preds.probabilities is None else preds.probabilities[8:],
        )
        for task, preds in stored.items()
    }
    write_dev_predictions(best, kept)
    partial = predict_member(best, inputs, ("dev",), CPU)
    assert ran == [8, 8, 8]  # only the missing rows ran
    for task in TASKS:
        got, want = partial["dev"][task], from_storage["dev"][task]
        assert got.ids == want.ids
        np.testing.assert_array_equal(got.values[8:], want.values[8:])  # from storage, exact
        np.testing.assert_allclose(  # run again in other batches: equal to rounding
            got.probabilities if got.probabilities is not None else got.values,
            want.probabilities if want.probabilities is not None else want.values,
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip


def test_combine_rows_names_an_id_no_part_holds() -> None:
    part = TaskPredictions("sts", ["a", "b"], np.asarray([1.0, 2.0], dtype=np.float32))
    combined = combine_rows(["b", "a"], [part])
    assert combined.ids == ["b", "a"] and combined.values.tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match=r"sts: no prediction for 1 ids \(c, ...\)"):
        combine_rows(["a", "c"], [part])


def test_an_unreadable_store_is_no_store(tmp_path: Path) -> None:
    (tmp_path / DEV_PREDICTIONS_FILE).write_bytes(b"not a zip")
    assert read_dev_predictions(tmp_path) == {}
    assert read_dev_predictions(tmp_path / "missing") == {}


def test_a_checkpoint_that_no_longer_loads_fails_even_with_every_row_stored(
    tmp_path: Path, tiny_data: Path
) -> None:
    """So `load_members` skips it, as it did before predictions were stored."""
    from model.checkpoint import CheckpointError
    from model.weights import WeightsError

    cfg, best = trained(tmp_path, tiny_data)
    (best / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises((CheckpointError, WeightsError, OSError)):
        predict_member(best, SplitInputs(cfg, tiny_data, ("dev",), []), ("dev",), CPU)
