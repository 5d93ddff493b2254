"""Which finished trials keep their weights: unless the space says `retention: {keep_best: all}`
(space/retention.py), only the best `keep_best` finished trials of a plain sweep do.
`KeepBestWeights` deletes the others' weights as trials finish (with `BestWeights`, O(log K) a
trial), and `settle_weights` settles it over the whole sweep, its extensions too, when it ends.
A trial whose weights went keeps its metrics, config and stored dev predictions, and a
`weights_dropped.txt` that says why (model/checkpoint.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import drop_weights, weights_dropped
from model.config import is_finite_number
from model.evaluate import OVERALL, SELECTION_OVERALL
from orchestrator.contract import (
    BEST_CHECKPOINT,
    FINAL_STATES,
    FINISHED_STATES,
    RETENTION_TAG,
    WEIGHTS_DROPPED,
    WEIGHTS_TAG,
)
from orchestrator.ensemble.manifest import ManifestError, read_manifest
from orchestrator.objectives import final_metrics, is_feasible
from orchestrator.space.schema import SearchSpace
from orchestrator.sweep.listeners import TrialListener, TrialSnapshot, trial_state

if TYPE_CHECKING:
    from orchestrator.sweep.outcome import TrialOutcome
    from orchestrator.tracking.writer import SweepTracker


def keep_best_note(keep: int) -> str:
    """What `weights_dropped.txt` says of a trial outside the best `keep`."""
    return f"retention keep_best: {keep}: not among the sweep's {keep} best trials"


def rankings(space: SearchSpace) -> dict[str, str]:
    """What a trial's weights are kept for: being among the best K by the sweep's metric, or by
    what `ensemble` ranks on without --metric (selection/overall when trials log it, else
    dev/overall; ensemble/request.default_metric). Metric -> mode."""
    return {space.metric: space.mode, SELECTION_OVERALL: "max", OVERALL: "max"}


def rank_key(sign: float, value: float, trial_id: str) -> tuple[float, str]:
    """Ascending = worst first; ties broken by trial id, the same way everywhere."""
    return (sign * value, trial_id)


class BestWeights:
    """The finished trials that keep their weights while a sweep runs: the best `keep` seen so
    far by each ranking metric. A heap per metric, so a trial costs O(log keep) however many
    trials the sweep has; a trial keeps its weights while any heap holds it."""

    def __init__(self, keep: int, ranked_by: Mapping[str, str]) -> None:
        self.keep = keep
        self.signs = {metric: 1.0 if mode == "max" else -1.0 for metric, mode in ranked_by.items()}
        self._heaps: dict[str, list[tuple[float, str]]] = {metric: [] for metric in ranked_by}
        self._holders: Counter[str] = Counter()  # trial id -> heaps holding it
        self._checkpoints: dict[str, Path] = {}

    def offer(self, trial_id: str, values: Mapping[str, Any], checkpoint: Path) -> list[Path]:
        """Count a finished trial in; the checkpoints no heap holds any more (its own too)."""
        self._checkpoints[trial_id] = checkpoint
        touched = {trial_id}
        for metric, heap in self._heaps.items():
            value = values.get(metric)
            if value is None or not is_finite_number(value):
                continue
            heapq.heappush(heap, rank_key(self.signs[metric], float(value), trial_id))
            self._holders[trial_id] += 1
            while len(heap) > self.keep:
                worst = heapq.heappop(heap)[1]
                self._holders[worst] -= 1
                touched.add(worst)
        fallen = sorted(t for t in touched if self._holders[t] <= 0)
        return [self._checkpoints.pop(t) for t in fallen]


def settle_weights(
    space: SearchSpace, trials: Sequence[TrialOutcome], protected: Collection[Path] = ()
) -> list[str]:
    """Over every trial of a sweep (its extensions' too): delete the weights of each ended one
    outside the best `space.keep_best` by every ranking metric (`rankings`), unless a built
    ensemble's manifest names it (`protected`); returns the ids of all trials whose weights are
    gone (now or before). Eligible, as for `ensemble`: completed or stopped early, feasible."""
    keep = space.keep_best
    if keep is None:
        return []
    eligible = [t for t in trials if t.state in FINISHED_STATES and t.feasible]
    kept: set[str] = set()
    for metric, mode in rankings(space).items():
        sign = 1.0 if mode == "max" else -1.0
        valued = [t for t in eligible if is_finite_number(t.best_metrics.get(metric))]
        best = sorted(valued, key=lambda t: rank_key(sign, t.best_metrics[metric], t.trial_id))
        kept.update(t.trial_id for t in best[-keep:])
    saved = {str(Path(p).resolve()) for p in protected}
    gone = []
    for trial in trials:
        if trial.best_checkpoint is None or trial.state not in FINAL_STATES:
            continue  # killed: it runs on when the sweep is resumed
        checkpoint = Path(trial.best_checkpoint)
        if trial.trial_id not in kept and str(checkpoint.resolve()) not in saved:
            drop_weights(checkpoint, keep_best_note(keep))
        if weights_dropped(checkpoint) is not None:
            gone.append(trial.trial_id)
    return gone


def ensemble_members(ensemble_dir: Path) -> set[Path]:
    """The checkpoints the sweep's built ensemble (`ensemble_dir/manifest.json`) reads: kept
    whatever their rank, or `predict --ensemble` would break."""
    try:
        manifest = read_manifest(ensemble_dir, verify=False)
    except (OSError, ManifestError):
        return set()  # none built (or not readable: then it cannot be predicted with anyway)
    return {member.checkpoint.resolve() for member in manifest.members}


class KeepBestWeights(TrialListener):
    """As each trial finishes: delete its weights if it cannot join an ensemble (failed, or
    infeasible), else those of whichever trial falls out of the best `keep` by every ranking
    metric. So disk holds about `keep` models (per ranking metric) however long the sweep.
    After `--resume` it starts counting afresh (keeping more, never fewer); `settle_weights`
    then makes it exact. Members of a built ensemble are never touched."""

    def __init__(self, space: SearchSpace, keep: int, ensemble_dir: Path) -> None:
        self.space = space
        self.best = BestWeights(keep, rankings(space))
        self.ensemble_dir = ensemble_dir

    def trial_completed(self, trial: TrialSnapshot) -> None:
        result = trial.last_result
        checkpoint = result.get(BEST_CHECKPOINT)
        if not checkpoint:
            return
        state = trial_state(trial, ending=True)
        values = final_metrics(result)
        feasible = is_feasible(self.space.constraints, values)
        if state not in FINISHED_STATES or not feasible:
            why = state if feasible else "infeasible"
            self._drop(Path(checkpoint), f"retention: a trial {why} joins no ensemble")
            return
        for fallen in self.best.offer(trial.trial_id, values, Path(checkpoint)):
            self._drop(fallen, keep_best_note(self.best.keep))

    def _drop(self, checkpoint: Path, why: str) -> None:
        if checkpoint.resolve() not in ensemble_members(self.ensemble_dir):
            drop_weights(checkpoint, why)


def settle_retention(
    space: SearchSpace,
    trials: Sequence[TrialOutcome],
    tracker: SweepTracker,
    parent_run_id: str,
    ensemble_dir: Path,
) -> int:
    """`settle_weights`, then say so in MLflow: `weights: dropped` on each trial run whose weights
    are gone, the setting and the count on the sweep's parent run. Returns the count."""
    if space.keep_best is None:
        return 0
    gone = settle_weights(space, trials, ensemble_members(ensemble_dir))
    tracker.tag_trials(gone, {WEIGHTS_TAG: WEIGHTS_DROPPED})
    summary = f"{space.retention.describe()}; {len(gone)} of {len(trials)} trials' weights dropped"
    tracker.set_tags(parent_run_id, {RETENTION_TAG: summary})
    return len(gone)
