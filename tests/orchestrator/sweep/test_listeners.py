"""The driver's listeners on plain trial snapshots (no Ray): how a trial's state is read from
Ray's status and its last result, why it failed, and what a finished trial's files keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.contract import BEST_CHECKPOINT, EPOCHS_LEFT, NONFINITE_LOSS, SweepLayout
from orchestrator.sweep.listeners import DropResumeState, TrialSnapshot, error_reason, trial_state


def snap(status: str, last: dict[str, Any] | None = None, **changes: Any) -> TrialSnapshot:
    return TrialSnapshot("t1", status, {"optim.lr": 1e-4}, last or {}, **changes)


@pytest.mark.parametrize(
    ("status", "last", "ending", "state"),
    [
        ("PENDING", {}, False, "pending"),
        ("RUNNING", {"epoch": 1, EPOCHS_LEFT: 2}, False, "running"),
        ("TERMINATED", {"epoch": 3, EPOCHS_LEFT: 0}, False, "completed"),
        ("TERMINATED", {"epoch": 1, EPOCHS_LEFT: 2}, False, "pruned"),
        ("TERMINATED", {}, False, "killed"),  # stopped before its first epoch
        ("ERROR", {"epoch": 1, EPOCHS_LEFT: 2}, False, "failed"),
        ("TERMINATED", {EPOCHS_LEFT: 0, NONFINITE_LOSS: "loss is nan"}, False, "failed"),
        # Being completed: Ray still says RUNNING.
        ("RUNNING", {"epoch": 1, EPOCHS_LEFT: 2}, True, "pruned"),
        ("RUNNING", {"epoch": 3, EPOCHS_LEFT: 0}, True, "completed"),
    ],
)
def test_trial_state_from_status_and_last_result(
    status: str, last: dict[str, Any], ending: bool, state: str
) -> None:
    assert trial_state(snap(status, last), ending=ending) == state


def test_error_reason_is_the_last_line_of_the_error_file(tmp_path: Path) -> None:
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback ...\n  File x\nRuntimeError: out of memory\n\n")
    assert error_reason(snap("ERROR", error_file=str(error_file))) == "RuntimeError: out of memory"
    assert error_reason(snap("ERROR", error_file=str(tmp_path / "gone"))) == "unknown error"
    assert error_reason(snap("ERROR")) == "unknown error"


def test_a_finished_trial_keeps_its_best_checkpoint_and_drops_its_resume_state(
    tmp_path: Path,
) -> None:
    layout = SweepLayout(tmp_path / "sweep")
    run = layout.trial("t1").train
    for checkpoint in (run.best, run.last):
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_text("weights")
    DropResumeState(layout).trial_completed(
        snap("RUNNING", {EPOCHS_LEFT: 0, BEST_CHECKPOINT: str(run.best)})
    )
    assert (run.best / "model.safetensors").is_file() and not run.last.exists()
