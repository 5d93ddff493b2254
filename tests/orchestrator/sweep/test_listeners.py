"""The driver's listeners on plain trial snapshots (no Ray): how a trial's state is read from
Ray's status and its last result, why it failed, and what a finished trial's files keep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.contract import BEST_CHECKPOINT, EPOCHS_LEFT, NONFINITE_LOSS, SweepLayout
from orchestrator.sweep.listeners import DropResumeState, TrialSnapshot, error_reason, trial_state
from orchestrator.sweep.resume_state import drop_older_ray_checkpoints

TINY = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"


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


def test_a_finished_trial_drops_its_resume_state_once_a_saved_state_records_it(
    tmp_path: Path,
) -> None:
    """Its trainer `last` and Ray's copy go once the state file in the results directory was
    rewritten twice after the save that recorded it (the first copy to land may be an older
    save's); its best checkpoint stays."""
    layout = SweepLayout(tmp_path / "sweep")
    trial = layout.trial("t1")
    run = trial.train
    for checkpoint in (run.best, run.last, trial.root / "checkpoint_000001"):
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_text("weights")
    state_file = layout.root / "experiment_state-2026.json"

    def land_a_copy(mtime_ns: int) -> None:
        state_file.write_text("{}")
        os.utime(state_file, ns=(mtime_ns, mtime_ns))

    def resume_state_kept() -> bool:
        return run.last.exists() and (trial.root / "checkpoint_000001").exists()

    dropper = DropResumeState(layout)
    dropper.trial_completed(snap("RUNNING", {EPOCHS_LEFT: 0, BEST_CHECKPOINT: str(run.best)}))
    kept = [resume_state_kept()]
    dropper.state_saved()  # the save that records it finished: no copy of it on disk yet
    dropper.state_saved()  # no copy landed meanwhile
    kept.append(resume_state_kept())
    land_a_copy(10**18)
    dropper.state_saved()  # one copy landed: perhaps an older save's
    kept.append(resume_state_kept())
    land_a_copy(2 * 10**18)
    dropper.state_saved()  # a second one: that save's or newer
    assert kept == [True, True, True] and not run.last.exists()
    assert not (trial.root / "checkpoint_000001").exists()
    assert (run.best / "model.safetensors").is_file()


def test_an_errored_trial_keeps_rays_copy_to_resume_from(tmp_path: Path) -> None:
    layout = SweepLayout(tmp_path / "sweep")
    trial = layout.trial("t1")
    for checkpoint in (trial.train.last, trial.root / "checkpoint_000000"):
        checkpoint.mkdir(parents=True)
    dropper = DropResumeState(layout)
    dropper.trial_errored(snap("ERROR"))
    dropper.state_saved()
    dropper.state_saved()
    assert not trial.train.last.exists() and (trial.root / "checkpoint_000000").is_dir()


def test_only_the_newest_ray_checkpoint_of_a_trial_is_kept(tmp_path: Path) -> None:
    for index in (0, 1, 2, 10):
        (tmp_path / f"checkpoint_{index:06d}").mkdir()
    (tmp_path / "train").mkdir()
    dropped = drop_older_ray_checkpoints(tmp_path / "checkpoint_000002")
    assert [p.name for p in dropped] == ["checkpoint_000000", "checkpoint_000001"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint_000002", "checkpoint_000010", "train"]




def test_the_live_table_shows_trials_to_end_and_the_best_ten_that_ended() -> None:
    from orchestrator.space.schema import parse_space
    from orchestrator.sweep.listeners import render_trials

    space = parse_space(
        {"base": str(TINY), "metric": "dev/overall", "num_samples": 32,
         "space": {"optim.lr": {"float": [1e-4, 1e-2]}}},
        source="<test>",
        base_dir=Path.cwd(),
    )
    ended = [
        TrialSnapshot(f"t{i:02d}", "TERMINATED", {}, {EPOCHS_LEFT: 0, "best/dev/overall": i / 100})
        for i in range(30)
    ]
    running = [TrialSnapshot(f"r{i}", "RUNNING", {}, {}) for i in range(2)]
    table = render_trials(space, ended + running)
    shown = list(table.columns[0].cells)
    assert shown == ["r0", "r1"] + [f"t{i:02d}" for i in range(29, 19, -1)]
    assert table.caption == "and 20 more ended trials"
