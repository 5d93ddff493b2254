"""The resume window (issue 25): Ray deleted the checkpoint its last snapshot names, after
registering a newer one. The trial's directory is laid out as a driver SIGKILLed in that window
leaves it, and Ray's own existence check (the one that failed the resume) is asked before and
after the repair."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ray import tune
from ray.train._internal.storage import _exists_at_fs_path

from model.checkpoint import (
    METRICS_FILE,
    OPTIMIZER_FILE,
    ResumeState,
    TrainerState,
    load_resume_state,
    save_checkpoint,
)
from model.train import build_model, seed_everything
from orchestrator.contract import TrialLayout
from orchestrator.sweep.lost_checkpoint import ray_checkpoint_index, refill_lost_checkpoint
from tests.tiny_model import tiny_config


@pytest.fixture(scope="module")
def epochs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Resumable tiny checkpoints after epochs 1 to 3, as `fit` writes `last` (written once)."""
    cfg = tiny_config()
    seed_everything(cfg.seed)
    model, model_dir = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    saved = {}
    for epoch in (1, 2, 3):
        state = TrainerState(epoch, 4 * epoch, 0.5, {}, [{"epoch": float(e)} for e in range(1, 4)])
        resume = ResumeState(state, optimizer.state_dict(), {}, torch.get_rng_state(), {})
        target = tmp_path_factory.mktemp(f"epoch{epoch}") / "last"
        metrics = {"epoch": float(epoch)}
        saved[epoch] = save_checkpoint(target, model, cfg, model_dir, metrics, resume=resume)
    return saved


def ray_checkpoint(trial: TrialLayout, index: int, epoch: Path) -> Path:
    """Ray's copy of a reported checkpoint: checkpoint_<index> in the trial's directory."""
    target = trial.root / f"checkpoint_{index:06d}"
    shutil.copytree(epoch, target)
    return target


def epoch_of(checkpoint: Path) -> int:
    return load_resume_state(checkpoint).progress.epoch


def ray_can_restore(checkpoint: Path) -> bool:
    """What Ray's Trainable.restore checks before it raises "Could not recover from checkpoint
    as it does not exist on storage anymore"."""
    named = tune.Checkpoint.from_directory(str(checkpoint))
    return bool(_exists_at_fs_path(named.filesystem, named.path))


def window(tmp_path: Path, epochs: dict[int, Path]) -> tuple[TrialLayout, Path]:
    """The snapshot names checkpoint_000000 (epoch 1), which Ray deleted when it registered
    checkpoint_000001 (epoch 2); the kill cut Ray's copy of epoch 3 short, after the trainer
    had written its own `last` for epoch 3."""
    trial = TrialLayout(tmp_path / "trial")
    trial.root.mkdir()
    named = trial.root / "checkpoint_000000"
    ray_checkpoint(trial, 1, epochs[2])
    cut_short = ray_checkpoint(trial, 2, epochs[3])
    (cut_short / OPTIMIZER_FILE).unlink()
    shutil.copytree(epochs[3], trial.train.last)
    return trial, named


def test_a_deleted_checkpoint_is_replaced_by_the_oldest_complete_newer_one(
    tmp_path: Path, epochs: dict[int, Path]
) -> None:
    trial, named = window(tmp_path, epochs)
    assert not ray_can_restore(named)  # the old failure: Ray gives the trial up
    assert refill_lost_checkpoint(named, trial) == trial.root / "checkpoint_000001"
    assert ray_can_restore(named)
    # Epoch 2, whose result the driver had recorded before it deleted epoch 1: nothing skipped.
    assert epoch_of(named) == 2
    # Ray's newer names are gone (it writes them again); the trainer's own `last` stays.
    assert sorted(p.name for p in trial.root.glob("checkpoint_*")) == [named.name]
    assert epoch_of(trial.train.last) == 3


def test_without_a_complete_ray_checkpoint_the_trainers_last_is_copied_in(
    tmp_path: Path, epochs: dict[int, Path]
) -> None:
    trial, named = window(tmp_path, epochs)
    (trial.root / "checkpoint_000001" / METRICS_FILE).unlink()
    assert refill_lost_checkpoint(named, trial) == trial.train.last
    assert ray_can_restore(named) and epoch_of(named) == 3
    assert epoch_of(trial.train.last) == 3 and not list(trial.root.glob("checkpoint_00000[12]"))
    assert not list(trial.root.glob(".checkpoint_*"))  # no temp copy left behind


def test_a_last_moved_aside_by_a_save_cut_short_is_used(
    tmp_path: Path, epochs: dict[int, Path]
) -> None:
    trial, named = window(tmp_path, epochs)
    shutil.rmtree(trial.root / "checkpoint_000001")
    aside = trial.train.last.with_name(".last.old")  # killed between save_checkpoint's renames
    trial.train.last.rename(aside)
    assert refill_lost_checkpoint(named, trial) == aside and epoch_of(named) == 3


def test_a_checkpoint_that_exists_is_left_alone(tmp_path: Path, epochs: dict[int, Path]) -> None:
    trial, named = window(tmp_path, epochs)
    ray_checkpoint(trial, 0, epochs[1])
    assert refill_lost_checkpoint(named, trial) is None
    assert epoch_of(named) == 1 and (trial.root / "checkpoint_000001").is_dir()


def test_with_nothing_complete_left_nothing_is_put_back(
    tmp_path: Path, epochs: dict[int, Path]
) -> None:
    trial, named = window(tmp_path, epochs)
    shutil.rmtree(trial.root / "checkpoint_000001")
    shutil.rmtree(trial.train.last)
    assert refill_lost_checkpoint(named, trial) is None and not named.exists()


def test_ray_checkpoint_names_give_their_index() -> None:
    assert ray_checkpoint_index(Path("t/checkpoint_000012")) == 12
    assert ray_checkpoint_index(Path("t/checkpoint_tmp")) == -1
    assert ray_checkpoint_index(Path("t/train")) == -1
