"""What `orchestrator predict` writes: a prediction CSV (or a CS224N leaderboard file), atomically,
and its progress on standard error.

The CSV has `id` (the input's id, or its line number for plain text), `prediction` (SST class,
Quora 0/1, STS score) and the class probabilities (`prob_0..4` for SST, `prob_0, prob_1` for
Quora). Floats are written as numpy prints a float32: its shortest text that reads back to the
same value, as the leaderboard files do, so the two compare to the last digit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from model.atomic_write import write_text_atomic
from model.evaluate import TaskPredictions, write_predictions
from orchestrator.predict.predictor import (
    ID_COLUMN,
    PREDICTION_COLUMN,
    PROBABILITY_COLUMNS,
    predictions_frame,
)

CSV_OUTPUT = "csv"
LEADERBOARD_OUTPUT = "leaderboard"
OUTPUT_FORMATS = (CSV_OUTPUT, LEADERBOARD_OUTPUT)
# Without a terminal: one progress line every this many batches.
PROGRESS_LINE_BATCHES = 50
# With one: a bar once the work (rows x members) reaches this many rows.
PROGRESS_BAR_ROWS = 2000


def prediction_csv(predictions: TaskPredictions) -> str:
    """The prediction CSV of one task's predictions, as text."""
    frame = predictions_frame(predictions)
    task = predictions.task
    columns = [ID_COLUMN, PREDICTION_COLUMN, *PROBABILITY_COLUMNS[task]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    values = frame[PREDICTION_COLUMN].to_numpy()
    shown = [str(int(v)) for v in values] if task != "sts" else [_float32(v) for v in values]
    probabilities = [frame[c].to_numpy() for c in PROBABILITY_COLUMNS[task]]
    for row, (identifier, value) in enumerate(zip(frame[ID_COLUMN], shown, strict=True)):
        writer.writerow([identifier, value, *(_float32(p[row]) for p in probabilities)])
    return buffer.getvalue()


def _float32(value: float) -> str:
    return str(np.float32(value))


def write_output(
    predictions: TaskPredictions, out: Path | None, out_format: str, stdout: TextIO
) -> None:
    """Write to `out` atomically (nothing at `out` unless complete), or to `stdout`."""
    if out_format == LEADERBOARD_OUTPUT:
        if out is None:  # the CLI asks for --out first
            raise ValueError("the leaderboard format is written to a file only")
        write_predictions(out, predictions)  # atomic itself
        return
    text = prediction_csv(predictions)
    if out is None:
        stdout.write(text)
        return
    write_text_atomic(out, text)


class PredictProgress:
    """Rows predicted so far, over every member: a bar on a terminal for long inputs, else a
    line every PROGRESS_LINE_BATCHES batches (nothing for short inputs off a terminal)."""

    def __init__(self, total_rows: int, *, terminal: bool, echo: Callable[[str], None]):
        self.total, self.done, self.batches = total_rows, 0, 0
        self.echo = echo
        self.bar = None
        if terminal and total_rows >= PROGRESS_BAR_ROWS:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress(
                BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.task = self.bar.add_task("predicting", total=total_rows)
            self.bar.start()

    def __call__(self, rows: int) -> None:
        self.done += rows
        self.batches += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.batches % PROGRESS_LINE_BATCHES == 0:
            self.echo(f"predicted {self.done}/{self.total} rows ({self.batches} batches)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
