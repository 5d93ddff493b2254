"""What `orchestrator ensemble` is asked for (`EnsembleRequest`: K, sweep, ranking metric,
method, selection, splits), its choices (METHODS, SELECTIONS, SPLITS), the trials it may draw on
(`Candidate`), and the one error type of the ensemble package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.config import ConfigError
from model.evaluate import (
    DEV_METRICS,
    OVERALL,
    REPORTED_METRICS,
    SELECTION_OVERALL,
)
from orchestrator.contract import (
    best_key,
)

METHODS: tuple[str, ...] = ("vote", "mean")


# `orchestrator ensemble`'s and EnsembleRequest's: mean was at least as good as vote at most k
# on the quickstart and a 12-run CPU study (docs/ensembles.md, "Ensembles and ablation tables").
DEFAULT_METHOD = "mean"


SELECTIONS: tuple[str, ...] = ("top", "greedy", "pareto")  # pareto: top K of the front


SPLITS: tuple[str, ...] = ("dev", "test")


# Trials whose best checkpoint is a fair member: ran to the end, or were stopped early by ASHA
# (their checkpoint is still their best epoch). Failed and killed trials are left out.


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


@dataclass(frozen=True)
class Candidate:
    """A finished trial that may join the ensemble, and the sweep's value of its ranking metric."""

    run_id: str
    run_name: str
    trial_id: str
    state: str
    value: float
    checkpoint: Path | None
