"""How an ensemble's member predictions combine, pure logic on prediction arrays (no I/O, no
frameworks): `vote` takes the mode of the members' labels for SST and Quora, ties going to the
tied class with the highest mean probability, and the median of their STS scores; `mean` averages
probabilities and scores. Which trials become members is `select.py`'s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model.evaluate import (
    TaskPredictions,
    dev_metrics,
)
from orchestrator.ensemble.request import METHODS

# ---------------------------------------------------------------------------------------------
# Combining predictions


def vote_labels(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The per-example mode of the members' labels; ties go to the tied class with the highest
    mean probability, then to the lowest class id.

    labels: [M, N] class ids of M members; probabilities: [M, N, C]. Returns [N] int64.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 2 or probabilities.shape[:2] != labels.shape:
        raise ValueError(f"vote: labels {labels.shape} and probabilities {probabilities.shape}")
    classes = np.arange(probabilities.shape[-1])
    counts = (labels[:, :, None] == classes).sum(axis=0)  # [N, C] votes per class
    tied = counts == counts.max(axis=1, keepdims=True)  # [N, C] classes sharing the top count
    mean_probability = probabilities.mean(axis=0)  # [N, C]
    # argmax returns the first maximum, so equal mean probabilities fall to the lowest class id.
    return np.where(tied, mean_probability, -np.inf).argmax(axis=1).astype(np.int64)


def _class_probabilities(member: TaskPredictions) -> np.ndarray:
    """[N, C] class probabilities of a member: SST softmax, or [1 - p, p] for Quora."""
    if member.probabilities is None:
        raise ValueError(f"{member.task}: member predictions carry no probabilities")
    if member.task == "para":
        p = np.asarray(member.probabilities, dtype=np.float64).reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return np.asarray(member.probabilities, dtype=np.float64).reshape(len(member.ids), -1)


def combine(members: Sequence[TaskPredictions], method: str) -> TaskPredictions:
    """One task's ensemble prediction from its members' predictions (same examples, same order)."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r} (expected {', '.join(METHODS)})")
    if not members:
        raise ValueError("combine: no members")
    task, ids = members[0].task, members[0].ids
    for member in members[1:]:
        if member.task != task or member.ids != ids:
            raise ValueError(f"{task}: members predicted different examples; cannot combine")
    if task == "sts":
        scores = np.stack([np.asarray(m.values, dtype=np.float64) for m in members])  # [M, N]
        combined = np.median(scores, axis=0) if method == "vote" else scores.mean(axis=0)
        return TaskPredictions(task, list(ids), combined.astype(np.float32), None)

    probabilities = np.stack([_class_probabilities(m) for m in members])  # [M, N, C]
    mean_probability = probabilities.mean(axis=0)  # [N, C]
    if method == "vote":
        labels = np.stack([np.asarray(m.values, dtype=np.int64) for m in members])  # [M, N]
        combined = vote_labels(labels, probabilities)
    else:
        combined = mean_probability.argmax(axis=1).astype(np.int64)
    kept = mean_probability if task == "sst" else mean_probability[:, 1]
    return TaskPredictions(task, list(ids), combined, kept.astype(np.float32))


def combine_tasks(
    members: Sequence[Mapping[str, TaskPredictions]], method: str
) -> dict[str, TaskPredictions]:
    """Combine every task the members all predicted; each member maps task -> predictions."""
    tasks = [t for t in members[0] if all(t in m for m in members)] if members else []
    return {task: combine([m[task] for m in members], method) for task in tasks}


def ensemble_dev_metrics(
    members: Sequence[Mapping[str, TaskPredictions]],
    labels: Mapping[str, np.ndarray],
    method: str,
) -> dict[str, float]:
    """The four dev metrics of the ensemble of `members` (a member may appear more than once)."""
    return dev_metrics(combine_tasks(members, method), labels)


# ---------------------------------------------------------------------------------------------
# Choosing members


def gain(ensemble: Mapping[str, float], member: Mapping[str, float]) -> dict[str, float]:
    """Ensemble minus member for every dev metric they share."""
    return {k: float(ensemble[k]) - float(member[k]) for k in ensemble if k in member}
