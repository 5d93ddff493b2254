"""Which finished trials keep their weights: unless the space says `retention: {keep_best: all}`
(space/retention.py), only the best `keep_best` finished trials of a plain sweep do.
`KeepBestWeights` deletes the others' weights as trials finish (with `BestWeights`, O(log K) a
trial), and `settle_weights` settles it over the whole sweep, its extensions too, when it ends.
A trial whose weights went keeps its metrics, config and stored dev predictions, and a
`weights_dropped.txt` that says why (model/checkpoint.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.checkpoint import drop_weights, weights_dropped
from model.config import is_finite_number
from orchestrator.contract import (
    BEST_CHECKPOINT,
    FINAL_STATES,
    FINISHED_STATES,
    RETENTION_TAG,
    WEIGHTS_DROPPED,
    WEIGHTS_TAG,
    best_key,
)
from orchestrator.objectives import final_metrics, is_feasible
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep.listeners import TrialListener, TrialSnapshot, trial_state

if TYPE_CHECKING:
    from orchestrator.sweep.outcome import TrialOutcome
    from orchestrator.tracking.writer import SweepTracker


def keep_best_note(keep: int, metric: str) -> str:
    """What `weights_dropped.txt` says of a trial outside the best `keep`."""
    return f"retention keep_best: {keep}: not among the sweep's {keep} best trials by {metric}"


class BestWeights:
    """The finished trials that keep their weights while a sweep runs: the best `keep` seen so
    far. A heap, so each trial costs O(log keep) whatever the sweep's size."""

    def __init__(self, keep: int, mode: str) -> None:
        self.keep = keep
        self.sign = 1.0 if mode == "max" else -1.0
        self._heap: list[tuple[float, str, str]] = []  # (signed value, trial id, checkpoint)

    def offer(self, trial_id: str, value: float, checkpoint: Path) -> list[Path]:
        """Count a finished trial in; the best checkpoints that fall out of the best `keep`."""
        heapq.heappush(self._heap, (self.sign * value, trial_id, str(checkpoint)))
        fallen = []
        while len(self._heap) > self.keep:
            fallen.append(Path(heapq.heappop(self._heap)[2]))
        return fallen


def settle_weights(space: SearchSpace, trials: Sequence[TrialOutcome]) -> list[str]:
    """Over every trial of a sweep (its extensions' too): delete the weights of each finished
    one outside the best `space.keep_best` that still has them; returns the ids of all trials
    whose weights are gone (now or before). The ensemble ranks the same trials the same way
    (completed or stopped early, feasible, by the best epoch's value of the sweep's metric)."""
    keep = space.keep_best
    if keep is None:
        return []
    eligible = [
        t for t in trials
        if t.state in FINISHED_STATES and t.feasible and is_finite_number(t.best_value)
    ]  # fmt: skip
    sign = -1.0 if space.mode == "max" else 1.0
    ranked = sorted(eligible, key=lambda t: sign * float(t.best_value or 0.0))
    kept = {t.trial_id for t in ranked[:keep]}
    gone = []
    for trial in trials:
        if trial.best_checkpoint is None or trial.state not in FINAL_STATES:
            continue  # killed: it runs on when the sweep is resumed
        checkpoint = Path(trial.best_checkpoint)
        if trial.trial_id not in kept:
            drop_weights(checkpoint, keep_best_note(keep, space.metric))
        if weights_dropped(checkpoint) is not None:
            gone.append(trial.trial_id)
    return gone


class KeepBestWeights(TrialListener):
    """As each trial finishes: delete its weights if it cannot join an ensemble (failed, or
    infeasible), else those of whichever trial falls out of the best `space.keep_best`. So disk
    holds about `keep_best` models however long the sweep. After `--resume` it starts counting
    afresh (keeping more, never fewer); `settle_weights` then makes it exact."""

    def __init__(self, space: SearchSpace, keep: int) -> None:
        self.space = space
        self.best = BestWeights(keep, space.mode)

    def trial_completed(self, trial: TrialSnapshot) -> None:
        result = trial.last_result
        checkpoint = result.get(BEST_CHECKPOINT)
        if not checkpoint:
            return
        value = result.get(best_key(self.space.metric))
        state = trial_state(trial, ending=True)
        feasible = is_feasible(self.space.constraints, final_metrics(result))
        joins = state in FINISHED_STATES and feasible and is_finite_number(value)
        if value is None or not joins:
            why = state if feasible else "infeasible"
            drop_weights(Path(checkpoint), f"retention: a trial {why} joins no ensemble")
            return
        for fallen in self.best.offer(trial.trial_id, float(value), Path(checkpoint)):
            drop_weights(fallen, keep_best_note(self.best.keep, self.space.metric))


def settle_retention(
    space: SearchSpace, trials: Sequence[TrialOutcome], tracker: SweepTracker, parent_run_id: str
) -> int:
    """`settle_weights`, then say so in MLflow: `weights: dropped` on each trial run whose weights
    are gone, the setting and the count on the sweep's parent run. Returns the count."""
    if space.keep_best is None:
        return 0
    gone = settle_weights(space, trials)
    tracker.tag_trials(gone, {WEIGHTS_TAG: WEIGHTS_DROPPED})
    summary = f"{space.retention.describe()}; {len(gone)} of {len(trials)} trials' weights dropped"
    tracker.set_tags(parent_run_id, {RETENTION_TAG: summary})
    return len(gone)
