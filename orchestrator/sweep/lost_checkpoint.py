"""A resumed trial whose checkpoint Ray deleted: put back the newest one every listener has seen.

The driver keeps one Ray checkpoint per trial (`ray_tune.TrialEvents.on_checkpoint`): when a
trial reports epoch e+1 it registers `checkpoint_<e+1>` and deletes `checkpoint_<e>` at once,
while the experiment snapshot Ray saves every few seconds may still name `checkpoint_<e>`. A
driver killed before its next snapshot leaves a trial that Ray cannot restore ("Could not
recover from checkpoint as it does not exist on storage anymore"); with retries spent, it fails.

Before `--resume` hands the snapshot to Ray, `refill_lost_checkpoint` puts a complete checkpoint
back at the path the snapshot names, chosen from what is on disk, not from when Ray last saved:
- the oldest complete Ray checkpoint newer than the lost one. The driver deletes one only after
  registering a newer one, and registers it only after its result went to the scheduler, the
  searcher and the MLflow listener, so that epoch and every one before it were recorded and
  resuming after it skips nothing. A still newer one may hold an epoch the driver never saw (a
  trial reports a checkpoint before the driver reads its result) or be a copy cut short by the
  kill: it is removed, and Ray writes that name again as the trial goes on;
- else the trainer's own `train/checkpoints/last`, which `fit` replaces atomically each epoch.
Keeping two checkpoints instead would only move the window: a snapshot can lag any number of
epochs when epochs are short. The trial's epochs then continue from the restored one; Ray's
iteration count comes from the snapshot, so the searcher steps by epoch (`ray_tune._step`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from model.checkpoint import CheckpointError, check_resumable, saved_versions
from orchestrator.contract import TrialLayout

RAY_CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint directories: checkpoint_000003


def refill_lost_checkpoint(named: Path, trial: TrialLayout) -> Path | None:
    """If the checkpoint `named` (under `trial.root`) is gone, put the checkpoint to resume from
    in its place (see module docstring) and return where it came from; None when `named` exists
    or no complete checkpoint is left (Ray then fails the trial as before)."""
    if named.exists():
        return None
    index = ray_checkpoint_index(named)
    newer = _ray_checkpoints_after(trial.root, index)
    source = next((path for path in newer if _resumable(path)), None)
    if source is not None:
        os.replace(source, named)  # Ray's restored state never named it: nothing else reads it
    else:
        source = next((p for p in saved_versions(trial.train.last) if _resumable(p)), None)
        if source is None:
            return None
        _copy_into_place(source, named)  # fit keeps writing `last`: a copy, as Ray would make
    for stale in _ray_checkpoints_after(trial.root, index):
        shutil.rmtree(stale, ignore_errors=True)
    return source


def ray_checkpoint_index(path: Path) -> int:
    """The index in a Ray checkpoint directory's name (checkpoint_000003 -> 3); -1 otherwise."""
    digits = path.name.removeprefix(RAY_CHECKPOINT_PREFIX)
    if path.name.startswith(RAY_CHECKPOINT_PREFIX) and digits.isdigit():
        return int(digits)
    return -1


def _ray_checkpoints_after(trial_root: Path, index: int) -> list[Path]:
    """Ray's checkpoint directories of a trial with an index above `index`, oldest first."""
    found = [p for p in trial_root.glob(f"{RAY_CHECKPOINT_PREFIX}*") if p.is_dir()]
    return sorted((p for p in found if ray_checkpoint_index(p) > index), key=ray_checkpoint_index)


def _resumable(checkpoint: Path) -> bool:
    try:
        check_resumable(checkpoint)
    except CheckpointError:
        return False
    return True


def _copy_into_place(source: Path, target: Path) -> None:
    """A copy of `source` at `target`, which appears whole or not at all."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
