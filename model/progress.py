"""What `fit` shows while it trains: a rich progress bar over steps on a terminal, and one line
per epoch (steps, train loss, scores, elapsed, ETA) always, so a log file or a Ray trial's
stderr tells how far a run is."""

from __future__ import annotations

import sys
import time
import warnings
from typing import TextIO

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


def duration_text(seconds: float) -> str:
    """`42s`, `12m03s` or `2h05m`: short enough for a log line, exact enough for a run."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def epoch_line(
    metrics: dict[str, float],
    *,
    epochs: int,
    step: int,
    total_steps: int,
    elapsed_s: float,
    eta_s: float,
) -> str:
    """`epoch 1/3  step 120/360  train/loss=1.23  dev/sst_acc=0.41 ...  elapsed 2m10s  eta 4m20s`:
    where training is, what it reached, and how long the rest will take at this pace."""
    scores = {k: v for k, v in metrics.items() if k != EPOCH}
    return (
        f"epoch {int(metrics.get(EPOCH, 0))}/{epochs}  step {step}/{total_steps}  "
        f"{format_metrics(scores)}  elapsed {duration_text(elapsed_s)}  eta {duration_text(eta_s)}"
    )


def best_epoch_summary(best: dict[str, float], epochs_run: int, selected_by: str) -> str:
    """The best epoch's summary `orchestrator train` prints: which epoch, the metric that picked
    it, then its scores one per line (dev, then selection when that split was held out)."""
    shown = [name for name in SHOWN_SCORES if name in best]
    width = max([14, *(len(name) + 1 for name in shown)])
    head = f"best epoch {int(best.get(EPOCH, 0))} of {epochs_run} (picked by {selected_by})"
    return "\n".join([head, *(f"{name:{width}s} {best[name]:.4f}" for name in shown)])


class TrainingProgress:
    """A rich progress bar over training steps when `enabled` (a terminal), and one epoch line
    per epoch either way: above the bar, else on `stream` (default: stderr at the time)."""

    def __init__(
        self,
        enabled: bool,
        total: int,
        done: int,
        epochs: int = 0,
        *,
        stream: TextIO | None = None,
    ):
        self.total, self.epochs, self.stream = total, epochs, stream
        # The ETA extrapolates this run's own pace: steps done before a resume took no time here.
        self._start_step, self._started = done, time.monotonic()
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
        """`message` above the bar, or on the stream when there is no bar."""
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream or sys.stderr, flush=True)

    def epoch_done(self, metrics: dict[str, float], step: int) -> None:
        """The epoch line of an epoch that ended at global step `step` (evaluation included)."""
        elapsed = time.monotonic() - self._started
        done = step - self._start_step
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        self.log(
            epoch_line(
                metrics,
                epochs=self.epochs,
                step=step,
                total_steps=self.total,
                elapsed_s=elapsed,
                eta_s=eta,
            )
        )

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self._muted.__exit__(None, None, None)
            self.bar = None
