"""A checkpoint's own dev predictions: what the best epoch predicted on every dev row it
evaluated (class probabilities and STS scores, keyed by example id), stored in the checkpoint
directory, so an ensemble combines members without running them again.

`dev_predictions.npz` holds, per task, `<task>/ids`, `<task>/values` and (SST, Quora)
`<task>/probabilities` in the dtypes `predict_task` returns, so a stored prediction is bit for bit
the one the evaluation made. It is written inside the checkpoint's temporary directory and swapped
into place with it (checkpoint.py): a checkpoint never has a stale or half-written file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model.evaluate import TaskPredictions

DEV_PREDICTIONS_FILE = "dev_predictions.npz"


def write_dev_predictions(directory: Path, predictions: Mapping[str, TaskPredictions]) -> Path:
    """Store `predictions` (task -> the best epoch's dev predictions) in `directory`."""
    arrays: dict[str, np.ndarray] = {}
    for task, preds in predictions.items():
        arrays[f"{task}/ids"] = np.asarray(preds.ids, dtype=np.str_)
        arrays[f"{task}/values"] = np.asarray(preds.values)
        if preds.probabilities is not None:
            arrays[f"{task}/probabilities"] = np.asarray(preds.probabilities)
    path = Path(directory) / DEV_PREDICTIONS_FILE
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def read_dev_predictions(directory: Path) -> dict[str, TaskPredictions]:
    """The stored dev predictions of the checkpoint in `directory`; {} when it has none (saved
    before they were stored) or the file is unreadable (then the member is simply run)."""
    path = Path(directory) / DEV_PREDICTIONS_FILE
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            tasks = sorted({key.split("/")[0] for key in stored.files})
            return {
                task: TaskPredictions(
                    task,
                    [str(i) for i in stored[f"{task}/ids"]],
                    stored[f"{task}/values"],
                    stored[f"{task}/probabilities"]
                    if f"{task}/probabilities" in stored.files
                    else None,
                )
                for task in tasks
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}


def combine_rows(ids: Sequence[str], parts: Sequence[TaskPredictions]) -> TaskPredictions:
    """One task's predictions for `ids`, in their order, taken from `parts` (stored and newly
    computed rows) that together hold every id; the first part holding an id gives its row."""
    position: dict[str, int] = {}
    for k, example_id in enumerate(i for part in parts for i in part.ids):
        position.setdefault(example_id, k)
    missing = [example_id for example_id in ids if example_id not in position]
    if missing:
        task = parts[0].task
        raise ValueError(f"{task}: no prediction for {len(missing)} ids ({missing[0]}, ...)")
    index = np.asarray([position[example_id] for example_id in ids], dtype=np.int64)
    values = np.concatenate([part.values for part in parts])[index]
    probabilities = None
    if parts[0].probabilities is not None:
        probabilities = np.concatenate([part.probabilities for part in parts])[index]
    return TaskPredictions(parts[0].task, list(ids), values, probabilities)
