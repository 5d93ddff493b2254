"""What `fit` prints without a terminal: one line per epoch with the real values it reached."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import pytest

from model.evaluate import EPOCH, OVERALL, TRAIN_LOSS
from model.progress import TrainingProgress, duration_text, epoch_line
from model.warning_format import show_warnings_as_lines
from tests.tiny_model import tiny_config

SMALL = {"max_examples": {"sst": 48, "para": 48, "sts": 48}, "batch_size": 16}
SMALL_DEV = {"dev_max_examples": {"sst": 32, "para": 32, "sts": 32}, "eval_batch_size": 32}
LINE = re.compile(
    r"^epoch (\d+)/(\d+)  step (\d+)/(\d+)  (.*)  elapsed (\d+(?:s|m\d\ds|h\d\dm))"
    r"  eta (\d+(?:s|m\d\ds|h\d\dm))$"
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (42, "42s"), (60, "1m00s"), (723.4, "12m03s"), (7500, "2h05m"), (-3, "0s")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_epoch_line_shows_where_training_is_and_what_it_reached() -> None:
    metrics = {EPOCH: 2.0, TRAIN_LOSS: 1.23456, OVERALL: 0.5, "dev/sst_tp_2": 3.0}
    line = epoch_line(metrics, epochs=3, step=20, total_steps=30, elapsed_s=75, eta_s=37.5)
    # SST details (per-class counts) stay out of the line; the scores keep 4 digits.
    assert (
        line == "epoch 2/3  step 20/30  train/loss=1.235  dev/overall=0.5  elapsed 1m15s  eta 38s"
    )


def test_eta_extrapolates_the_pace_since_start_not_the_steps_done_before_a_resume() -> None:
    out = io.StringIO()
    with TrainingProgress(False, total=40, done=20, epochs=4, stream=out) as progress:
        progress._started -= 10.0  # 10 s for the 10 steps of epoch 3
        progress.epoch_done({EPOCH: 3.0, TRAIN_LOSS: 0.5}, step=30)
    match = LINE.match(out.getvalue().rstrip("\n"))
    assert match is not None, out.getvalue()
    assert match.group(6) == "10s" and match.group(7) == "10s"  # 10 more steps at 1 step/s


def test_fit_without_a_bar_prints_a_line_per_epoch_with_its_metrics(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.train import fit

    cfg = tiny_config(data={**SMALL, **SMALL_DEV}, optim={"epochs": 3, "lr": 2e-3})
    result = fit(cfg, data_dir=data_dir, out_dir=tmp_path, progress=False, prediction_splits=())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    steps_per_epoch = 3  # 48 examples per task in batches of 16; a step takes one of each task
    for epoch, (line, metrics) in enumerate(zip(lines, result.history, strict=True), start=1):
        match = LINE.match(line)
        assert match is not None, line
        assert [int(match.group(i)) for i in (1, 2, 3, 4)] == [
            epoch,
            3,
            epoch * steps_per_epoch,
            3 * steps_per_epoch,
        ]
        shown = dict(item.split("=") for item in match.group(5).split("  "))
        assert set(shown) == {TRAIN_LOSS, "dev/sst_acc", "dev/para_acc", "dev/sts_corr", OVERALL}
        for key, text in shown.items():
            assert float(text) == pytest.approx(metrics[key], rel=5e-4, abs=1e-12)
    assert match.group(7) == "0s"  # nothing left after the last epoch
    # The best epoch's line carries the scores metrics.json holds.
    best = json.loads((tmp_path / "metrics.json").read_text())
    best_line = dict(
        item.split("=") for item in LINE.match(lines[int(best[EPOCH]) - 1])[5].split("  ")
    )
    assert float(best_line[OVERALL]) == pytest.approx(best[OVERALL], rel=5e-4)


def test_warnings_print_as_one_line_each_without_file_or_source() -> None:
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show_warnings_as_lines()
        warnings.warn(
            "data/x.csv: not found,\n  no sst test predictions", UserWarning, stacklevel=1
        )
        warnings.showwarning("second", RuntimeWarning, __file__, 1, file=out)
    assert out.getvalue() == "warning: second\n"
    assert warnings.showwarning is not show_warnings_as_lines  # restored by catch_warnings


def test_a_warning_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show_warnings_as_lines()
        warnings.warn(
            "data/x.csv: not found,\n  no sst test predictions", UserWarning, stacklevel=1
        )
    assert capsys.readouterr().err == "warning: data/x.csv: not found, no sst test predictions\n"
