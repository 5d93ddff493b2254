"""What `fit` shows while it trains: a rich progress bar over steps and one line per epoch."""

from __future__ import annotations

import warnings

from model.evaluate import EPOCH, METRIC_NAMES, OVERALL, SELECTION_SPLIT, TRAIN_LOSS, on_split

# The scores in the order they are shown, on dev and then (when held out) on the selection split.
SCORE_ORDER: tuple[str, ...] = (*METRIC_NAMES.values(), OVERALL)
SHOWN_SCORES: tuple[str, ...] = (
    *SCORE_ORDER,
    *(on_split(name, SELECTION_SPLIT) for name in SCORE_ORDER),
)
# The epoch line's metrics, in this order: where training is, then the scores it reached.
EPOCH_LINE_METRICS: tuple[str, ...] = (EPOCH, TRAIN_LOSS, *SHOWN_SCORES)


def format_metrics(metrics: dict[str, float]) -> str:
    """`epoch=1  train/loss=2.44  dev/sst_acc=0.38 ...` for the metrics present."""
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in EPOCH_LINE_METRICS if k in metrics)


def best_epoch_summary(best: dict[str, float], epochs_run: int, selected_by: str) -> str:
    """The best epoch's summary `orchestrator train` prints: which epoch, the metric that picked
    it, then its scores one per line (dev, then selection when that split was held out)."""
    shown = [name for name in SHOWN_SCORES if name in best]
    width = max([14, *(len(name) + 1 for name in shown)])
    head = f"best epoch {int(best.get(EPOCH, 0))} of {epochs_run} (picked by {selected_by})"
    return "\n".join([head, *(f"{name:{width}s} {best[name]:.4f}" for name in shown)])


class TrainingProgress:
    """A rich progress bar over training steps, or nothing when progress is off."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.bar = None
        # torch's UserWarnings would tear the live bar apart; they are muted while it is shown
        # (and only then: the filter is restored when the bar closes).
        self._muted = warnings.catch_warnings()
        if enabled:
            self._muted.__enter__()
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("training", total=total, completed=done)

    def update(self, completed: int, description: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, description=description)

    def advance(self, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self._muted.__exit__(None, None, None)
            self.bar = None
