"""Dev metrics (scipy / scikit-learn), batched prediction, CS224N leaderboard prediction files."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as skm

from model.atomic_write import write_text_atomic
from model.batching import batch_indices, collate
from model.config import TASKS
from model.data import DataError, EncodedTask

METRIC_NAMES: dict[str, str] = {
    "sst": "dev/sst_acc",
    "para": "dev/para_acc",
    "sts": "dev/sts_corr",
}
OVERALL = "dev/overall"
TRAIN_LOSS = "train/loss"
EPOCH = "epoch"
SELECTION_SPLIT = "selection"  # held out of train (data.selection): tuning ranks on it, not dev


def on_split(metric: str, split: str) -> str:
    """A dev metric's name on another split: on_split("dev/overall", "selection")."""
    return f"{split}/{metric.split('/', 1)[1]}" if metric.startswith("dev/") else metric


DEV_METRICS: tuple[str, ...] = (OVERALL, *METRIC_NAMES.values())
# The dev metrics on the selection split; a run reports them only when data.selection > 0.
SELECTION_METRICS: tuple[str, ...] = tuple(on_split(m, SELECTION_SPLIT) for m in DEV_METRICS)
SELECTION_OVERALL = on_split(OVERALL, SELECTION_SPLIT)
# Every metric name a run reports each epoch, here and only here: metrics.json, Ray results,
# MLflow, tables. (The SST details below ride along in the same dicts, named by their functions.)
REPORTED_METRICS: tuple[str, ...] = (*DEV_METRICS, TRAIN_LOSS, *SELECTION_METRICS)


def metric_mode(metric: str) -> str:
    """Whether a reported metric is better high ("max": scores) or low ("min": the loss)."""
    return "min" if metric == TRAIN_LOSS else "max"


SST_CLASSES = 5
# SST details of a run's dev predictions, flat float metrics beside the four scores.
SST_BALANCED_ACC = "dev/sst_balanced_acc"
SST_MACRO_F1 = "dev/sst_macro_f1"
SST_PER_CLASS_STATS: tuple[str, ...] = ("precision", "recall", "f1")
# Header column of each task's prediction file; "Similiary" is the handout's own spelling.
PREDICTION_HEADERS: dict[str, str] = {
    "sst": "Predicted_Sentiment",
    "para": "Predicted_Is_Paraphrase",
    "sts": "Predicted_Similiary",
}


def overall_score(sst_acc: float, para_acc: float, sts_corr: float) -> float:
    """The CS224N leaderboard score: mean of the two accuracies and (r + 1) / 2."""
    return (sst_acc + para_acc + (sts_corr + 1.0) / 2.0) / 3.0


@dataclass
class TaskPredictions:
    """One task's predictions in example order.

    values: sst class ids, para 0/1, sts scores; probabilities: sst [N, 5] softmax, para [N]
    P(duplicate), sts None.
    """

    task: str
    ids: list[str]
    values: np.ndarray
    probabilities: np.ndarray | None = None


def task_metric(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy for sst and para, Pearson r for sts (0.0 where r is undefined: constant input)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{task}: {predictions.shape} predictions for {labels.shape} labels")
    if task in ("sst", "para"):
        return float(skm.accuracy_score(labels.astype(np.int64), predictions.astype(np.int64)))
    if task != "sts":
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        # A constant prediction (e.g. an untrained head) has no correlation; 0.0 keeps the
        # overall score finite for ASHA and Optuna instead of NaN.
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        r = float(stats.pearsonr(predictions.astype(np.float64), labels.astype(np.float64))[0])
    return 0.0 if np.isnan(r) else r


def dev_metrics(
    preds: Mapping[str, TaskPredictions], labels: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """The four dev metrics by their shared names (dev/sst_acc, ..., dev/overall)."""
    missing = [t for t in TASKS if t not in preds or t not in labels]
    if missing:
        raise ValueError(f"dev_metrics: no predictions or labels for {', '.join(missing)}")
    result = {METRIC_NAMES[t]: task_metric(t, preds[t].values, labels[t]) for t in TASKS}
    result[OVERALL] = overall_score(*(result[METRIC_NAMES[t]] for t in TASKS))
    return result


def split_metrics(
    preds: Mapping[str, TaskPredictions], labels: Mapping[str, np.ndarray], split: str
) -> dict[str, float]:
    """`dev_metrics` of another split's predictions, under that split's names (selection/...)."""
    return {on_split(name, split): value for name, value in dev_metrics(preds, labels).items()}


def classification_details(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Per-class precision / recall / F1, balanced accuracy and the confusion matrix (sklearn)."""
    classes = list(range(num_classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predictions)),
        "macro_f1": float(np.mean(f1)),
        "per_class": [
            {
                "class": c,
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in classes
        ],
        # rows = true class, columns = predicted class
        "confusion_matrix": skm.confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def per_class_key(stat: str, c: int) -> str:
    """The metric of one SST class's precision, recall or f1 on dev: `dev/sst_f1/3`."""
    return f"dev/sst_{stat}/{c}"


def confusion_key(true: int, pred: int) -> str:
    """The metric counting dev SST examples of class `true` predicted as `pred`."""
    return f"dev/sst_confusion/{true}/{pred}"


def sst_detail_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """`classification_details` of SST dev predictions as flat float metrics: balanced accuracy,
    macro F1, per-class precision / recall / F1 and the confusion counts."""
    with warnings.catch_warnings():
        # A small dev subset may lack a class the model predicts; balanced accuracy still holds.
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        details = classification_details(labels, predictions, SST_CLASSES)
    out = {SST_BALANCED_ACC: details["balanced_accuracy"], SST_MACRO_F1: details["macro_f1"]}
    for row in details["per_class"]:
        out.update({per_class_key(stat, row["class"]): row[stat] for stat in SST_PER_CLASS_STATS})
    for true, counts in enumerate(details["confusion_matrix"]):
        out.update({confusion_key(true, pred): float(n) for pred, n in enumerate(counts)})
    return out


@torch.inference_mode()
def predict_task(
    model: torch.nn.Module,
    encoded: EncodedTask,
    *,
    batch_size: int,
    device: torch.device | str,
    pad_id: int,
    autocast_dtype: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TaskPredictions:
    """Run `model` over a task in length-sorted batches; results come back in example order.
    `on_batch(rows)` is called after each batch (progress for long inputs)."""
    device = torch.device(device)
    order = batch_indices(encoded.lengths, batch_size, bucketing=True, shuffle=False, seed=0)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    try:
        with autocast:
            for indices in order:
                batch = collate(encoded, indices, pad_id).to(device, non_blocking=True)
                # Kept on the device: one transfer at the end instead of a sync per batch.
                outputs.append(model(batch).float())
                if on_batch is not None:
                    on_batch(len(indices))
    finally:
        model.train(was_training)

    n = len(encoded)
    positions = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    if encoded.task == "sst":
        logits = torch.cat(outputs).cpu() if outputs else torch.zeros(0, SST_CLASSES)  # [N, 5]
        classes = np.empty(n, dtype=np.int64)
        classes[positions] = logits.argmax(dim=-1).numpy()
        probabilities = np.empty((n, logits.shape[-1]), dtype=np.float32)
        probabilities[positions] = torch.softmax(logits, dim=-1).numpy()
        return TaskPredictions("sst", list(encoded.ids), classes, probabilities)
    flat = torch.cat([o.reshape(-1) for o in outputs]).cpu() if outputs else torch.zeros(0)  # [N]
    if encoded.task == "para":
        duplicate = np.empty(n, dtype=np.int64)
        duplicate[positions] = (flat > 0).long().numpy()
        p_duplicate = np.empty(n, dtype=np.float32)
        p_duplicate[positions] = torch.sigmoid(flat).numpy()
        return TaskPredictions("para", list(encoded.ids), duplicate, p_duplicate)
    scores = np.empty(n, dtype=np.float32)
    scores[positions] = flat.numpy()
    return TaskPredictions(encoded.task, list(encoded.ids), scores, None)


def prediction_filename(task: str, split: str) -> str:
    """The handout's file name, e.g. "sst-dev-output.csv"."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if split not in ("dev", "test"):
        raise ValueError(f"unknown split {split!r} (expected dev or test)")
    return f"{task}-{split}-output.csv"


def _format_value(task: str, value: Any) -> str:
    if task == "sst":
        return str(int(value))
    if task == "para":
        return str(float(value))  # "0.0" / "1.0", as the handout's sigmoid().round() writes
    return str(value)  # numpy's shortest repr that reads back to the same float


def write_predictions(path: Path, predictions: TaskPredictions) -> None:
    """Write a CS224N leaderboard file (`id \\t Predicted_...`, `{id} , {value}`) atomically."""
    task = predictions.task
    if task not in PREDICTION_HEADERS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if len(predictions.ids) != len(predictions.values):
        raise ValueError(
            f"{task}: {len(predictions.ids)} ids but {len(predictions.values)} predictions"
        )
    path = Path(path)
    # The handout's exact bytes, trailing spaces included.
    lines = [f"id \t {PREDICTION_HEADERS[task]} \n"]
    pairs = zip(predictions.ids, predictions.values, strict=True)
    lines += [f"{i} , {_format_value(task, v)} \n" for i, v in pairs]
    write_text_atomic(path, "".join(lines))


def read_predictions(path: Path) -> tuple[str, list[str], np.ndarray]:
    """Parse a prediction file back into (task, ids, values); sst / para values as int64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [part.strip() for part in lines[0].split("\t")] if lines else []
    by_header = {name: task for task, name in PREDICTION_HEADERS.items()}
    if len(header) != 2 or header[0] != "id" or header[1] not in by_header:
        raise DataError(f"{path}: line 1: not a prediction file header: {lines[:1]!r}")
    task = by_header[header[1]]
    ids: list[str] = []
    raw: list[float] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            if len(parts) != 2:
                raise ValueError("expected '{id} , {value}'")
            raw.append(float(parts[1]))
        except ValueError as err:
            raise DataError(f"{path}: line {number}: {err}: {line!r}") from None
        ids.append(parts[0].strip())
    values = np.asarray(raw, dtype=np.float64)
    if task in ("sst", "para"):
        values = values.astype(np.int64)
    return task, ids, values
