"""The Ray adapter without a Ray cluster: Tune's searcher calls reach the Optuna study (through
Tune's own concurrency limiter and searcher checkpoint files), and Tune's callbacks reach the
driver's listeners as plain snapshots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter

from orchestrator.contract import EPOCHS_LEFT
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.schema import parse_space
from orchestrator.sweep.listeners import TrialListener, TrialSnapshot
from orchestrator.sweep.ray_tune import StudySearcher, TrialEvents

REPO = Path(__file__).resolve().parents[3]
SPACE = {
    "name": "adapter",
    "base": str(REPO / "configs" / "tiny.yaml"),
    "space": {"optim.lr": {"float": [1e-5, 1e-3], "log": True}},
}


def result(value: float, epoch: int, left: int) -> dict[str, Any]:
    """A result as Tune hands it to a searcher: ours plus Ray's iteration count."""
    return {"dev/overall": value, "epoch": epoch, "training_iteration": epoch, EPOCHS_LEFT: left}


def stored_states(tmp_path: Path) -> dict[str, TrialState]:
    study = optuna.load_study(study_name="adapter", storage=f"sqlite:///{tmp_path}/o.db")
    return {t.user_attrs["ray_trial_id"]: t.state for t in study.trials}


def searcher(tmp_path: Path) -> StudySearcher:
    return StudySearcher(SweepStudy(parse_space(SPACE), storage=f"sqlite:///{tmp_path}/o.db"))


def test_tune_searcher_calls_reach_the_study_and_a_stopped_trial_is_pruned(
    tmp_path: Path,
) -> None:
    search = ConcurrencyLimiter(searcher(tmp_path), max_concurrent=2)  # as Tune wraps it
    first, second = search.suggest("stopped"), search.suggest("finished")
    assert set(first) == set(second) == {"optim.lr"} and first != second
    assert search.suggest("third") is None  # two at a time: Tune asks again later
    search.on_trial_result("stopped", result(0.30, 1, 2))
    search.on_trial_complete("stopped", result(0.35, 2, 1))  # the scheduler stopped it
    search.on_trial_result("finished", result(0.40, 1, 2))
    search.on_trial_complete("finished", result(0.55, 3, 0))
    assert stored_states(tmp_path) == {
        "stopped": TrialState.PRUNED,
        "finished": TrialState.COMPLETE,
    }


def test_tune_checkpoints_the_searcher_and_a_restored_driver_fails_the_lost_trial(
    tmp_path: Path,
) -> None:
    search = searcher(tmp_path)
    search.suggest("kept")
    search.save_to_dir(str(tmp_path), session_str="s1")  # what Tune does every few seconds
    search.suggest("lost")  # the driver is killed before the next save
    restored = searcher(tmp_path)
    restored.restore_from_dir(str(tmp_path))
    assert stored_states(tmp_path) == {"kept": TrialState.RUNNING, "lost": TrialState.FAIL}
    restored.on_trial_complete("kept", result(0.5, 1, 0))
    assert stored_states(tmp_path)["kept"] == TrialState.COMPLETE


class Recorder(TrialListener):
    def __init__(self, *, due: bool) -> None:
        self.due = due
        self.seen: list[tuple[str, Any]] = []

    def trial_result(self, trial: TrialSnapshot, result: Mapping[str, Any]) -> None:
        self.seen.append(("result", (trial, dict(result))))

    def trial_completed(self, trial: TrialSnapshot) -> None:
        self.seen.append(("completed", trial))

    def refresh_due(self) -> bool:
        return self.due

    def refresh(self, trials: Sequence[TrialSnapshot]) -> None:
        self.seen.append(("refresh", list(trials)))


def fake_trial(trial_id: str, status: str, last: dict[str, Any]) -> Any:
    """What the adapter reads of a Ray `Trial`."""
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        config={"optim.lr": 1e-4, "__trial_index__": 0},
        last_result=last,
        error_file=None,
        run_metadata=SimpleNamespace(num_failures=1),
    )


def test_tune_callbacks_reach_listeners_as_snapshots_and_only_due_ones_refresh() -> None:
    drawing, quiet = Recorder(due=True), Recorder(due=False)
    events = TrialEvents([drawing, quiet])
    trial = fake_trial("t1", "RUNNING", {"epoch": 1})
    events.on_trial_result(0, [trial], trial, {"epoch": 1})
    events.on_trial_complete(0, [trial], trial)
    events.on_step_end(0, [trial, fake_trial("t2", "PENDING", {})])
    kinds = [kind for kind, _ in quiet.seen]
    assert kinds == ["result", "completed"]
    assert [kind for kind, _ in drawing.seen] == [*kinds, "refresh"]
    snap, reported = quiet.seen[0][1]
    assert snap == TrialSnapshot(
        trial_id="t1",
        status="RUNNING",
        params={"optim.lr": 1e-4},  # Ray's own keys dropped
        last_result={"epoch": 1},
        error_file=None,
        retries=1,
        name=str(trial),
    )
    assert reported == {"epoch": 1}
    assert [t.trial_id for t in drawing.seen[-1][1]] == ["t1", "t2"]
