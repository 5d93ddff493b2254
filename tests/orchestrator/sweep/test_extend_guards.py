"""What keeps `--extend` and `warm_start:` honest, without Ray: a warm start needs the earlier
sweep's constraints and enqueues its best feasible configs; an extension's ASHA is not seeded
with another sweep's trials, never starts while the sweep runs, takes its directory exclusively
and is linked to the sweep from its creation; a sweep and its extensions form one Pareto front;
`sweep.json` changes under a lock; a multi-objective sweep names its front, not a best trial."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.contract import EPOCHS_LEFT, EXTENDS_RUN_TAG, EXTENSIONS_KEY, SweepLayout
from orchestrator.search.history import read_past_study, rung_history
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.lineage import WarmStartSpec
from orchestrator.space.schema import SpaceError
from orchestrator.sweep.outcome import SweepOutcome, TrialOutcome
from orchestrator.sweep.plain import SweepStateError
from orchestrator.tracking.writer import SweepTracker
from tests.orchestrator.earlier_sweep import EARLIER, RAW, run_earlier_sweep, space_of

FLOOR = {"dev/sst_acc": {"ge": 0.45}}
# dev/sst_acc of each EARLIER trial: its two best by dev/overall (0.80, 0.70) miss the floor.
SST = [{"dev/sst_acc": v} for v in (0.5, 0.3, 0.3, 0.5, 0.5)]


def test_a_warm_start_tells_constraint_values_only_and_runs_the_feasible_best_first(
    tmp_path: Path,
) -> None:
    from orchestrator.sweep.warm_start import NewSweep

    constrained = space_of(constraints=FLOOR)
    run_earlier_sweep(tmp_path, EARLIER, constrained, SST)
    later = constrained.replace(name="later", warm_start=WarmStartSpec("early", 1))
    new = NewSweep.check(later, tmp_path, resume=False)
    assert new.warm is not None
    storage = f"sqlite:///{tmp_path / 'later.db'}"
    new.warm.apply(storage)
    study = SweepStudy(later, storage)
    told = [t for t in study.study.get_trials() if t.state.is_finished()]
    assert [t.constraints for t in told] == [
        {"dev/sst_acc": pytest.approx(0.45 - row["dev/sst_acc"])} for row in SST
    ]
    # The earlier study's own bookkeeping (its enqueued params) is not carried over.
    assert all(set(t.system_attrs) == {"constraints:dev/sst_acc"} for t in told)
    assert study.ask("n0")["optim.lr"] == 3e-4  # 0.60: the best that met the floor

    # The new sweep's ASHA is seeded with the trials that ran in it, not the told ones.
    study.report("n0", 0.55, 1)
    study.tell("n0", {"dev/overall": 0.6, "best/dev/sst_acc": 0.5, EPOCHS_LEFT: 0}, step=2)
    past = read_past_study(storage, "later")
    assert past is not None
    assert rung_history(past) == {f"later#{study.asked['n0']}": {1: 0.55, 2: 0.6}}


@pytest.mark.parametrize(
    ("earlier", "later", "message"),
    [
        ({}, FLOOR, r"constraints: dev/sst_acc >= 0\.45 here, but \S+/early/sweep\.json: "
                    r"search\.constraints: none; "),
        (FLOOR, {}, r"constraints: none here, but \S+/early/sweep\.json: "
                    r"search\.constraints: dev/sst_acc >= 0\.45; "),
        (FLOOR, {"dev/sst_acc": {"ge": 0.5}}, r"constraints: dev/sst_acc >= 0\.5 here, "),
    ],
)  # fmt: skip
def test_a_warm_start_across_other_constraints_is_one_error(
    tmp_path: Path, earlier: dict[str, Any], later: dict[str, Any], message: str
) -> None:
    from orchestrator.sweep.warm_start import NewSweep

    run_earlier_sweep(tmp_path, EARLIER[:2], space_of(constraints=earlier), SST[:2])
    space = space_of(name="later", constraints=later, warm_start={"sweep": "early"})
    with pytest.raises(SpaceError, match=rf"^s\.yaml: {message}"):
        NewSweep.check(space, tmp_path, resume=False)


def test_a_dry_run_checks_the_warm_start(tmp_path: Path, data_dir: Path) -> None:
    from orchestrator.cli import main

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**RAW, "warm_start": {"sweep": "nope"}}, sort_keys=False))
    argv = ["sweep", str(path), "--dry-run", "--results-dir", str(tmp_path / "results")]
    result = CliRunner().invoke(main, [*argv, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {path}: warm_start.sweep: no sweep 'nope' in {(tmp_path / 'results').resolve()} "
        f"({(tmp_path / 'results' / 'nope' / 'sweep.json').resolve()} is missing)"
    ]


def started_sweep(tmp_path: Path) -> tuple[SweepLayout, SweepTracker, str]:
    """An earlier sweep whose first run is a real (RUNNING) MLflow parent run."""
    root = run_earlier_sweep(tmp_path, EARLIER[:2])
    state = json.loads((root / "sweep.json").read_text())
    tracker = SweepTracker(state["tracking_uri"], "early")
    first = tracker.start_sweep(run_name="early (sweep)", params={}, tags={})
    (root / "sweep.json").write_text(json.dumps({**state, "parent_run_id": first}))
    return SweepLayout(root), tracker, first


def test_extend_waits_for_the_sweep_and_its_last_extension_to_stop(tmp_path: Path) -> None:
    from orchestrator.sweep.extend import plan_extension

    layout, tracker, first = started_sweep(tmp_path)
    with pytest.raises(
        SweepStateError, match=rf"sweep\.json: sweep 'early' is still running \(its first run, "
        rf"MLflow run {first}\); extend it once that ends, or if its driver died, --resume it"
    ):  # fmt: skip
        plan_extension(space_of(), layout, 2)
    tracker.finish_run(first, "FINISHED")
    assert plan_extension(space_of(), layout, 2).number == 1
    running = tracker.start_sweep(run_name="x", params={}, tags={EXTENDS_RUN_TAG: first})
    state = json.loads(layout.state_file.read_text())
    entry = {"dir": "extend-1", "parent_run_id": running, "num_samples": 2, "finished": False}
    layout.state_file.write_text(json.dumps({**state, EXTENSIONS_KEY: [entry]}))
    with pytest.raises(SweepStateError, match=r"still running \(its extension extend-1, "):
        plan_extension(space_of(), layout, 2)
    assert plan_extension(space_of(), layout, None).parent_run_id == running  # --resume it


def test_an_extension_takes_its_directory_exclusively_and_is_linked_from_its_creation(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.sweep.extend import plan_extension, start_extension
    from orchestrator.tracking.store import read_sweep

    layout, tracker, first = started_sweep(tmp_path)
    tracker.finish_run(first, "FINISHED")
    plan = plan_extension(space_of(), layout, 2)
    (layout.root / "extend-1").mkdir()  # another `--extend` got there first
    with pytest.raises(SweepStateError, match=r"extend-1: exists, but \S+ lists no extension"):
        start_extension(plan, layout, data_dir)
    stored = read_sweep(tracker.uri, "early")
    assert stored is not None and stored.extensions == ()  # no parent run was made
    (layout.root / "extend-1").rmdir()

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # a driver that dies right after creating its parent run

    monkeypatch.setattr(SweepTracker, "set_tags", killed)
    run = start_extension(plan, layout, data_dir)
    stored = read_sweep(tracker.uri, "early")
    assert stored is not None and stored.parent.run_id == first
    assert [(r.run_id, r.run_name) for r in stored.extensions] == [
        (run.parent_run_id, "early (extend 1)")
    ]
    entries = json.loads(layout.state_file.read_text())[EXTENSIONS_KEY]
    assert [(e["dir"], e["parent_run_id"]) for e in entries] == [("extend-1", run.parent_run_id)]
    with pytest.raises(SweepStateError, match=r"another --extend started extend-1 meanwhile"):
        start_extension(plan, layout, data_dir)  # planned before that one started


def test_a_sweep_and_its_extension_are_judged_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Pareto front of every trial: the extension's `b` is dominated by the first run's `a`."""
    from orchestrator.sweep import ray_tune
    from orchestrator.sweep.listeners import TrialSnapshot
    from orchestrator.sweep.outcome import trial_outcomes

    tasks = ["dev/sst_acc", "dev/para_acc"]
    parsed = space_of(metric=tasks, mode=["max", "max"])

    def snapshot(trial_id: str, sst: float, para: float) -> TrialSnapshot:
        best = {"best/dev/sst_acc": sst, "best/dev/para_acc": para}
        return TrialSnapshot(trial_id, "TERMINATED", {}, {**best, EPOCHS_LEFT: 0})

    first, extension = SweepLayout(tmp_path), SweepLayout(tmp_path / "extend-1")
    trials = {first.root: [snapshot("a", 0.6, 0.6)],
              extension.root: [snapshot("b", 0.5, 0.5), snapshot("c", 0.7, 0.4)]}  # fmt: skip
    monkeypatch.setattr(ray_tune, "trial_snapshots", lambda layout: trials[layout.root])
    judged = trial_outcomes(parsed, first, extension)
    assert [(t.trial_id, t.pareto) for t in judged] == [("a", True), ("b", False), ("c", True)]


def test_sweep_json_changes_one_driver_at_a_time(tmp_path: Path) -> None:
    from orchestrator.sweep.state import read_state, update_state

    layout = SweepLayout(tmp_path)
    layout.state_file.write_text(json.dumps({"count": 0}))

    def add_one(state: dict[str, Any]) -> None:
        seen = state["count"]
        time.sleep(0.002)  # another driver's read falls in here without the lock
        state["count"] = seen + 1

    def driver() -> None:
        for _ in range(10):
            update_state(layout, add_one)

    threads = [threading.Thread(target=driver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_state(layout) == {"count": 40}


def outcome(trial_id: str, value: float, *, pareto: bool) -> TrialOutcome:
    return TrialOutcome(trial_id, "completed", {}, trial_id, 2, value, None, pareto=pareto)


def test_a_multi_objective_summary_names_its_front_not_a_best_trial(tmp_path: Path) -> None:
    trials = [outcome("a", 0.9, pareto=False), outcome("b", 0.5, pareto=True)]
    multi = SweepOutcome("m", tmp_path, "uri", "p", "s", "dev/sst_acc", "max", trials)
    multi.multi_objective = True
    assert multi.best is None
    lines = multi.summary()
    assert not any(line.startswith("best ") for line in lines)
    assert "pareto front (1 trials): b" in lines
    multi.trials = []
    assert (
        "pareto front (0 trials): no trial completed and met every constraint" in multi.summary()
    )
    single = SweepOutcome("s", tmp_path, "uri", "p", "s", "dev/sst_acc", "max", trials)
    assert single.best is not None and single.best.trial_id == "a"


def test_an_extension_with_repeats_says_how_many_trials_it_ran(tmp_path: Path) -> None:
    from orchestrator.cli.sweep import extension_lines

    done = SweepOutcome("early", tmp_path, "uri", "p", "s", "dev/overall", "max")
    assert extension_lines(done, space_of(repeats=3), 2)[0] == (
        "extended sweep early by 2 configs (6 trials)"
    )
    assert extension_lines(done, space_of(), 2)[0] == "extended sweep early by 2 trials"
