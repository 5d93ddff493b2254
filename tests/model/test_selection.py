"""The selection split (data.selection): a fixed held-out slice of each training file that fit
evaluates every epoch and picks its best epoch by, so dev stays a clean reporting split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.checkpoint import load_checkpoint_model
from model.config import TASKS, ConfigError, DataConfig, TrainConfig
from model.data import encode_task, hold_out, read_task_file
from model.evaluate import (
    DEV_METRICS,
    OVERALL,
    SELECTION_METRICS,
    SELECTION_OVERALL,
    dev_metrics,
    predict_task,
)
from model.task_data import SELECTION_SEED, load_task_data, resolve_data_path, task_file
from model.weights import resolve_model_dir
from tests.tiny_model import tiny_config

SMALL = {"max_examples": {"sst": 48, "para": 48, "sts": 48}, "batch_size": 16}
SMALL_DEV = {"dev_max_examples": {"sst": 64, "para": 64, "sts": 64}, "eval_batch_size": 64}


def selection_config(
    seed: int = 0, selection: float = 0.1, data: dict[str, Any] | None = None, **sections: Any
) -> TrainConfig:
    """The tiny model on a few dozen examples per task, holding out `selection`."""
    data = {**SMALL, **SMALL_DEV, "selection": selection, **(data or {})}
    return tiny_config(seed, data=data, **sections)


def file_examples(cfg: TrainConfig, data_dir: Path, task: str) -> list:
    return read_task_file(task, resolve_data_path(data_dir, task_file(cfg, task, "train")), True)


# ---------------------------------------------------------------------------------------------
# The slice


def test_hold_out_splits_a_seeded_fraction_in_file_order() -> None:
    items = list(range(101))
    kept, held = hold_out(items, 0.1, seed=5)
    assert len(held) == 10 and sorted(kept + held) == items
    assert kept == sorted(kept) and held == sorted(held)
    assert hold_out(items, 0.1, seed=5) == (kept, held)
    assert hold_out(items, 0.1, seed=6)[1] != held
    assert len(hold_out(items[:3], 0.01, seed=0)[1]) == 1  # at least one example
    with pytest.raises(ValueError, match="cannot hold out"):
        hold_out(items[:1], 0.1, seed=0)  # nothing would be left to train on


@pytest.mark.parametrize("value", [-0.1, 0.5, float("nan")])
def test_selection_fraction_outside_0_to_half_names_the_key(value: float) -> None:
    with pytest.raises(ConfigError, match=r"data\.selection"):
        DataConfig(selection=value)


def test_selection_slice_is_disjoint_sized_and_shared_by_seeds_and_arms(data_dir: Path) -> None:
    tokenizer_dir = resolve_model_dir("minilm")
    arm = {"max_examples": {"sst": 200}, "subsample_ratio": {"para": 0.5}}
    runs = {
        "seed 0": load_task_data(selection_config(0), data_dir, tokenizer_dir),
        "seed 7": load_task_data(selection_config(7), data_dir, tokenizer_dir),
        # An arm that trains on more, subsampled differently, holds out the same slice.
        "arm": load_task_data(selection_config(3, data=arm), data_dir, tokenizer_dir),
    }
    cfg = selection_config()
    for task in TASKS:
        file_ids = [e.id for e in file_examples(cfg, data_dir, task)]
        slices = {name: data.selection[task].ids for name, data in runs.items()}
        assert len(slices["seed 0"]) == round(0.1 * len(file_ids)), task
        assert slices["seed 7"] == slices["seed 0"] == slices["arm"], task
        assert set(slices["seed 0"]) <= set(file_ids)
        for name, data in runs.items():
            assert not set(data.train[task].ids) & set(slices[name]), (task, name)
        # The training subsample still follows the run's seed.
        assert runs["seed 0"].train[task].ids != runs["seed 7"].train[task].ids
    assert len(runs["arm"].train["sst"]) == 200


def test_without_selection_nothing_is_held_out(data_dir: Path) -> None:
    data = load_task_data(selection_config(selection=0.0), data_dir, resolve_model_dir("minilm"))
    assert data.selection == {}
    assert all(len(data.train[t]) == 48 for t in TASKS)


# ---------------------------------------------------------------------------------------------
# fit with the split on


@pytest.fixture(scope="module")
def selection_fit(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from model.train import fit

    cfg = selection_config(1, selection=0.05, optim={"epochs": 3, "lr": 2e-3})
    out = tmp_path_factory.mktemp("selection_fit")
    return cfg, out, fit(cfg, data_dir=data_dir, out_dir=out, prediction_splits=())


def test_fit_reports_selection_metrics_every_epoch_and_picks_by_them(selection_fit) -> None:
    _, out, result = selection_fit
    assert result.selected_by == SELECTION_OVERALL
    assert all(set(SELECTION_METRICS) | set(DEV_METRICS) <= set(h) for h in result.history)
    scores = [h[SELECTION_OVERALL] for h in result.history]
    best = int(np.argmax(scores))  # the first of equal scores: a later tie is not "better"
    assert result.best_metrics == result.history[best]
    assert result.best_metrics["epoch"] == best + 1
    assert json.loads((out / "metrics.json").read_text()) == result.best_metrics
    on_disk = json.loads((result.best_checkpoint / "metrics.json").read_text())
    assert on_disk["epoch"] == best + 1


def test_selection_metrics_are_dev_metrics_of_the_held_out_examples(
    selection_fit, data_dir: Path
) -> None:
    """Recomputed from scratch: the slice from the file with SELECTION_SEED, the best
    checkpoint's predictions on it, the dev metric functions."""
    cfg, _, result = selection_fit
    model, tokenizer, _ = load_checkpoint_model(result.best_checkpoint)
    preds, labels = {}, {}
    for i, task in enumerate(TASKS):
        examples = file_examples(cfg, data_dir, task)
        _, held = hold_out(examples, cfg.data.selection, SELECTION_SEED + i)
        encoded = encode_task(task, held, tokenizer, cfg.model.pair_encoding)
        preds[task] = predict_task(
            model,
            encoded,
            batch_size=cfg.data.eval_batch_size,
            device="cpu",
            pad_id=tokenizer.pad_id,
        )
        labels[task] = encoded.labels
    expected = dev_metrics(preds, labels)
    for name, value in expected.items():
        selection_name = name.replace("dev/", "selection/")
        assert result.best_metrics[selection_name] == pytest.approx(value, abs=1e-6), name
    assert expected[OVERALL] == pytest.approx(result.best_metrics[SELECTION_OVERALL], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Which split picks the epoch, when dev and selection disagree


def scripted_fit(monkeypatch, data_dir: Path, tmp_path: Path, selection: float):
    """`fit` over 3 epochs whose evaluation is scripted: dev peaks at epoch 3, selection at 1."""
    import model.train as train

    dev = iter([0.50, 0.55, 0.60])
    held = iter([0.70, 0.65, 0.60])

    def evaluate(run) -> tuple[dict[str, float], dict]:
        metrics = {OVERALL: next(dev)}
        if run.data.selection:
            metrics[SELECTION_OVERALL] = next(held)
        return metrics, {}

    monkeypatch.setattr(train, "_evaluate", evaluate)
    cfg = selection_config(selection=selection, optim={"epochs": 3})
    return train.fit(cfg, data_dir=data_dir, out_dir=tmp_path, prediction_splits=())


@pytest.mark.parametrize(("selection", "picked", "by"), [(0.1, 1, SELECTION_OVERALL),
                                                         (0.0, 3, OVERALL)])  # fmt: skip
def test_the_selection_split_picks_the_epoch_when_on_and_dev_when_off(
    monkeypatch, data_dir: Path, tmp_path: Path, selection: float, picked: int, by: str
) -> None:
    result = scripted_fit(monkeypatch, data_dir, tmp_path, selection)
    assert result.selected_by == by
    assert result.best_metrics["epoch"] == picked
    best_on_disk = json.loads((tmp_path / "checkpoints" / "best" / "metrics.json").read_text())
    assert best_on_disk["epoch"] == picked


def test_the_train_summary_says_what_picked_the_epoch_and_shows_selection_scores() -> None:
    from model.progress import best_epoch_summary

    dev = {"dev/sst_acc": 0.38, "dev/para_acc": 0.782, "dev/sts_corr": 0.8656, OVERALL: 0.6981}
    assert best_epoch_summary({**dev, "epoch": 1.0}, 1, OVERALL).splitlines() == [
        "best epoch 1 of 1 (picked by dev/overall)",
        "dev/sst_acc    0.3800",
        "dev/para_acc   0.7820",
        "dev/sts_corr   0.8656",
        "dev/overall    0.6981",
    ]
    held = {name.replace("dev/", "selection/"): value for name, value in dev.items()}
    lines = best_epoch_summary({**dev, **held, "epoch": 2.0}, 3, SELECTION_OVERALL).splitlines()
    assert lines[0] == "best epoch 2 of 3 (picked by selection/overall)"
    assert [line.split()[0] for line in lines[1:]] == [*dev, *held]
    assert lines[-1] == "selection/overall   0.6981"
