"""`retention:` in a search space: which finished trials keep their weights on disk.

    retention: {keep_best: 10}    # the default; `all` keeps every trial's weights

A finished trial always keeps its weights once and drops its optimizer state (sweep/
resume_state.py). Beyond that a plain sweep keeps the weights of its best `keep_best` finished
trials, by its metric and by what `ensemble` ranks on (sweep/retention.py), and deletes the
others' (~91 MB a MiniLM trial, ~440 MB a bert-base one), keeping their metrics, config and
stored dev predictions. A study (whose arms' runs are its result) and a multi-objective sweep
(whose Pareto front no one metric ranks) keep every trial's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.space.params import Fail

# Twice `ensemble --top`'s default of 5: room to try larger ensembles and a k-curve to 10.
DEFAULT_KEEP_BEST = 10
KEEP_ALL = "all"


@dataclass(frozen=True)
class RetentionSpec:
    """How many of a sweep's best finished trials keep their weights (None: every one)."""

    keep_best: int | None = DEFAULT_KEEP_BEST

    def __post_init__(self) -> None:
        if self.keep_best is not None and self.keep_best < 1:
            raise ValueError(f"keep_best must be >= 1 or None, got {self.keep_best}")

    def describe(self) -> str:
        return f"keep_best: {KEEP_ALL if self.keep_best is None else self.keep_best}"


def parse_retention(raw: Any, fail: Fail) -> RetentionSpec:
    """`retention: {keep_best: K | all}`; absent: the default."""
    if raw is None:
        return RetentionSpec()
    if not isinstance(raw, dict):
        raise fail("retention", "expected a mapping like {keep_best: 10}")
    for key in raw:
        if key != "keep_best":
            raise fail(f"retention.{key}", "unknown key (known: keep_best)")
    keep = raw.get("keep_best", DEFAULT_KEEP_BEST)
    if keep == KEEP_ALL:
        return RetentionSpec(keep_best=None)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise fail("retention.keep_best", f"expected an integer >= 1 or 'all', got {keep!r}")
    return RetentionSpec(keep_best=keep)
