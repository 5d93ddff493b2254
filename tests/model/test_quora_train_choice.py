"""`data.para_train: auto`: the full quora-train.csv when present, else the partial stand-in."""

from __future__ import annotations

import pytest

from model.config import TrainConfig
from model.data import DataError
from model.data_dir import (
    FULL_QUORA_TRAIN,
    PARA_TRAIN_AUTO,
    PARTIAL_QUORA_TRAIN,
    check_data_dir,
    quora_runs_notes,
    quora_train_note,
    resolve_data_files,
    resolve_para_train,
)


def test_the_default_config_asks_for_auto():
    assert TrainConfig().data.para_train == PARA_TRAIN_AUTO


def test_auto_prefers_the_full_file_and_falls_back_to_the_partial_one(tmp_path):
    with pytest.raises(DataError) as caught:
        resolve_para_train(PARA_TRAIN_AUTO, tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: data.para_train: auto: neither quora-train.csv nor "
        f"partial/quora-train-head5000.csv found; run `orchestrator data fetch {tmp_path}`"
    )
    (tmp_path / "partial").mkdir()
    (tmp_path / PARTIAL_QUORA_TRAIN).write_text("x")
    assert resolve_para_train(PARA_TRAIN_AUTO, tmp_path) == PARTIAL_QUORA_TRAIN
    (tmp_path / FULL_QUORA_TRAIN).write_text("x")
    assert resolve_para_train(PARA_TRAIN_AUTO, tmp_path) == FULL_QUORA_TRAIN
    # An explicit name is used as given, present or not.
    assert resolve_para_train(PARTIAL_QUORA_TRAIN, tmp_path) == PARTIAL_QUORA_TRAIN
    assert resolve_para_train("mine/quora.csv", tmp_path) == "mine/quora.csv"


def test_resolve_data_files_changes_only_para_train(tmp_path):
    (tmp_path / FULL_QUORA_TRAIN).write_text("x")
    cfg = TrainConfig()
    resolved = resolve_data_files(cfg, tmp_path)
    assert resolved.data.para_train == FULL_QUORA_TRAIN
    assert resolved.data.sst_train == cfg.data.sst_train and resolved.optim == cfg.optim
    assert resolve_data_files(resolved, tmp_path) is resolved  # nothing left to resolve


def test_without_either_quora_file_strict_resolution_fails_and_lenient_keeps_auto(tmp_path):
    cfg = TrainConfig()
    with pytest.raises(DataError, match=r"neither quora-train\.csv nor"):
        resolve_data_files(cfg, tmp_path)
    assert resolve_data_files(cfg, tmp_path, strict=False) is cfg


def test_the_note_names_the_file_and_the_pairs_really_trained_on():
    # The quickstart caps Quora at data.max_examples.para pairs: the note gives that count,
    # not the file's size.
    assert quora_train_note(FULL_QUORA_TRAIN, 1000) == (
        "note: Quora trained on 1,000 pairs drawn from the full quora-train.csv."
    )
    assert quora_train_note(PARTIAL_QUORA_TRAIN, 5000) == (
        "note: Quora trained on 5,000 pairs drawn from the 5,000-pair partial file "
        "partial/quora-train-head5000.csv."
    )
    assert quora_train_note("/abs/quora-sample.csv") == (
        "note: Quora trained on pairs drawn from /abs/quora-sample.csv."
    )


def test_the_runs_note_names_one_file_or_counts_each():
    assert quora_runs_notes([FULL_QUORA_TRAIN, FULL_QUORA_TRAIN, None]) == [
        "Quora trained on pairs drawn from the full quora-train.csv"
    ]
    assert quora_runs_notes([FULL_QUORA_TRAIN, PARTIAL_QUORA_TRAIN, FULL_QUORA_TRAIN]) == [
        "Quora trained on pairs drawn from several files: the full quora-train.csv (2 runs), "
        "the 5,000-pair partial file partial/quora-train-head5000.csv (1 run)"
    ]
    assert quora_runs_notes([PARTIAL_QUORA_TRAIN, PARTIAL_QUORA_TRAIN], noun="arm") == [
        "Quora trained on pairs drawn from the 5,000-pair partial file "
        "partial/quora-train-head5000.csv"
    ]
    # Runs logged without the param, or with `auto` unresolved (no Quora file: no Quora figure).
    assert quora_runs_notes([None, "", PARA_TRAIN_AUTO]) == []


def test_data_check_needs_one_of_the_two_quora_training_files(tmp_path):
    checks = {c.name: c for c in check_data_dir(tmp_path)}
    full, partial = checks[FULL_QUORA_TRAIN], checks[PARTIAL_QUORA_TRAIN]
    assert not full.ok and full.problem == (
        "missing, and no partial/quora-train-head5000.csv either; run `orchestrator data fetch`"
    )
    assert partial.ok and partial.problem == "missing (optional: quora-train.csv is used)"
    assert checks["quora-test-student.csv"].ok
