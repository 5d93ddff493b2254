"""Ensembles of a sweep's trials: which trials become members, and how their predictions combine.

Pure logic on prediction arrays (no I/O, no frameworks). `vote` takes the mode of the members'
labels for SST and Quora, ties going to the tied class with the highest mean probability, and the
median of their STS scores; `mean` averages probabilities and scores. Members are the K best
finished trials by a metric the trials logged (the selection split's overall when they have it),
or a greedy forward selection with replacement on dev (Caruana et al., 2004, "Ensemble selection
from libraries of models"). `ensemble_members.py` loads the
members and predicts with them; `ensemble_run.py` reads the sweep and writes the ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.config import ConfigError
from model.evaluate import (
    DEV_METRICS,
    OVERALL,
    REPORTED_METRICS,
    SELECTION_OVERALL,
    TaskPredictions,
    dev_metrics,
)
from orchestrator.contract import best_key

METHODS: tuple[str, ...] = ("vote", "mean")
# `orchestrator ensemble`'s and EnsembleRequest's: mean was at least as good as vote at most k
# on the quickstart and a 12-run CPU study (README, "Ensembles and ablation tables").
DEFAULT_METHOD = "mean"
SELECTIONS: tuple[str, ...] = ("top", "greedy", "pareto")  # pareto: top K of the front
SPLITS: tuple[str, ...] = ("dev", "test")
# Trials whose best checkpoint is a fair member: ran to the end, or were stopped early by ASHA
# (their checkpoint is still their best epoch). Failed and killed trials are left out.
FINISHED_STATES: tuple[str, ...] = ("completed", "pruned")


class EnsembleError(ConfigError):
    """An ensemble cannot be built as asked (unknown sweep, bad K, missing members); one line."""


@dataclass(frozen=True)
class EnsembleRequest:
    """What `orchestrator ensemble` is asked to build: the K members of which sweep, ranked by
    which metric, selected and combined how, predicting which splits.

    `method` and `select` are the CLI's choices (METHODS, SELECTIONS), and `top` is checked by
    `check_top` once the sweep's finished trials are known; the rest is checked here.
    """

    top: int
    sweep: str | None = None  # None: the newest sweep in the store
    results_dir: Path = Path("results")
    data_dir: Path | None = None  # None: the members' configured data directory
    metric: str | None = None  # None: `default_metric` of the trials
    method: str = DEFAULT_METHOD
    select: str = "top"
    splits: tuple[str, ...] = SPLITS
    dev_subset: bool = False  # score on the trials' fixed dev subsets, not the full dev files

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in REPORTED_METRICS:
            raise EnsembleError(
                f"--metric must be one of {', '.join(REPORTED_METRICS)}, got {self.metric!r}"
            )
        if self.greedy and self.metric is not None and greedy_metric(self.metric) is None:
            raise EnsembleError(
                f"--select greedy scores ensembles on dev predictions, and {self.metric} has no "
                f"dev counterpart: use --metric {OVERALL} (or another dev or selection metric)"
            )
        if any(s not in SPLITS for s in self.splits) or "dev" not in self.splits:
            raise EnsembleError(
                f"--splits must include dev and name only dev, test; got {self.splits}"
            )

    @property
    def greedy(self) -> bool:
        return self.select == "greedy"

    @property
    def pareto(self) -> bool:
        """Members from the Pareto front of a multi-objective sweep (tradeoffs.ensemble_runs)."""
        return self.select == "pareto"


def default_metric(trial_metrics: Sequence[Mapping[str, float]]) -> str:
    """The metric to rank trials on when --metric is not given: the selection split's overall
    when every trial logged it (so dev stays a clean reporting split), else dev/overall."""
    if trial_metrics and all(best_key(SELECTION_OVERALL) in m for m in trial_metrics):
        return SELECTION_OVERALL
    return OVERALL


def greedy_metric(metric: str) -> str | None:
    """The dev metric greedy selection scores its ensembles by, for a ranking metric: the metric
    itself on dev, its dev namesake for a selection-split metric, None when there is none.

    The ensemble predicts dev (and test) only, not the selection slice of the training data, so a
    selection metric can order the library but not score the forward steps.
    """
    dev = "dev/" + metric.split("/", 1)[1] if "/" in metric else metric
    return dev if dev in DEV_METRICS else None


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


def greedy_forward_selection(
    num_models: int, score: Callable[[list[int]], float], steps: int
) -> tuple[list[int], float]:
    """Caruana et al.'s ensemble selection: start empty, `steps` times add (with replacement)
    the model whose addition scores best, and return the best-scoring prefix and its score.

    Ties go to the lower model index (the library is ordered best-first), then the shorter prefix.
    """
    if num_models < 1 or steps < 1:
        raise ValueError(f"greedy selection needs models and steps, got {num_models}, {steps}")
    chosen: list[int] = []
    best: tuple[list[int], float] = ([], -math.inf)
    for _ in range(steps):
        scores = [score([*chosen, i]) for i in range(num_models)]
        pick = int(np.argmax(scores))  # first maximum: the better-ranked model
        chosen.append(pick)
        if scores[pick] > best[1]:
            best = (list(chosen), scores[pick])
    return best


@dataclass(frozen=True)
class Candidate:
    """A finished trial that may join the ensemble, and the sweep's value of its ranking metric."""

    run_id: str
    run_name: str
    trial_id: str
    state: str
    value: float
    checkpoint: Path | None


def rank_candidates(candidates: Sequence[Candidate], mode: str = "max") -> list[Candidate]:
    """Best first by `value` (`mode` max or min); ties keep the given (start-time) order."""
    sign = -1.0 if mode == "max" else 1.0
    indexed = sorted(enumerate(candidates), key=lambda pair: (sign * pair[1].value, pair[0]))
    return [candidate for _, candidate in indexed]


def check_top(
    top: int,
    finished: int,
    total: int,
    sweep: str,
    *,
    runs: str = "finished trial",
    kind: str = "sweep",
) -> None:
    """Raise EnsembleError unless 1 <= top <= the number of candidate `runs` (which it names);
    a study's candidates are its completed confirm runs."""
    if top < 1:
        raise EnsembleError(f"--top must be at least 1, got {top}")
    if finished == 0:
        raise EnsembleError(
            f"{kind} '{sweep}' has no {runs} yet (of {total}); nothing to ensemble"
        )
    if top > finished:
        raise EnsembleError(
            f"{kind} '{sweep}' has {finished} {runs}{'s' if finished != 1 else ''} "
            f"(of {total}); --top {top} asks for more: use --top {finished} or fewer"
        )


def best_member(member_scores: Sequence[Mapping[str, float]], metric: str = OVERALL) -> int:
    """Index of the member with the best dev `metric` (first one on ties)."""
    return int(np.argmax([scores[metric] for scores in member_scores]))


def gain(ensemble: Mapping[str, float], member: Mapping[str, float]) -> dict[str, float]:
    """Ensemble minus member for every dev metric they share."""
    return {k: float(ensemble[k]) - float(member[k]) for k in ensemble if k in member}
