"""A trial's resume state, kept while it can resume and no longer.

A running trial holds its model three times: its best checkpoint (`train/checkpoints/best`: the
weights `ensemble` and `predict` load, its metrics and stored dev predictions), the trainer's
resume state (`train/checkpoints/last`: weights with the optimizer's moments, ~3x the weights)
and Ray's copy of that resume state (`checkpoint_<n>/`, what Ray restores a retried or resumed
trial from). Only the newest Ray copy is kept while it runs, and once it ended both resume
states go, so a finished trial keeps its weights once (`DropResumeState` in `listeners.py`
decides when). No Ray here: Ray's directories are known by name (`lost_checkpoint.py`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.contract import TrialLayout
from orchestrator.sweep.lost_checkpoint import RAY_CHECKPOINT_PREFIX, ray_checkpoint_index


def drop_older_ray_checkpoints(newest: Path) -> list[Path]:
    """Delete the Ray checkpoints of a trial older than `newest` (`<trial>/checkpoint_<n>`), as
    Ray's own `num_to_keep=1` would; returns what was deleted. The sweep asks Ray to keep them
    all and deletes them itself, because Ray with `num_to_keep` set saves the whole experiment's
    state after every checkpoint of every trial: O(trials) work per epoch of each trial."""
    index = ray_checkpoint_index(newest)
    if index < 0:
        return []
    older = [p for p in ray_checkpoints(newest.parent) if ray_checkpoint_index(p) < index]
    for path in older:
        shutil.rmtree(path, ignore_errors=True)
    return older


def ray_checkpoints(trial_root: Path) -> list[Path]:
    """Ray's checkpoint directories of a trial, oldest first."""
    found = [p for p in trial_root.glob(f"{RAY_CHECKPOINT_PREFIX}*") if p.is_dir()]
    return sorted(found, key=ray_checkpoint_index)


def drop_resume_state(trial: TrialLayout, *, ray_copies: bool = True) -> None:
    """Delete a trial's resume state: the trainer's `last` checkpoint and (`ray_copies`) Ray's
    checkpoints of it. Its best checkpoint stays."""
    shutil.rmtree(trial.train.last, ignore_errors=True)
    if ray_copies:
        for path in ray_checkpoints(trial.root):
            shutil.rmtree(path, ignore_errors=True)
