"""Which finished trials keep their weights: `retention: {keep_best: K}` parsed, the best K kept
as trials finish (`KeepBestWeights`) and over a whole sweep (`settle_weights`), the others left
with their metrics and a note that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import (
    METRICS_FILE,
    WEIGHTS_DROPPED_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_weights,
)
from orchestrator.contract import BEST_CHECKPOINT, EPOCHS_LEFT, NONFINITE_LOSS
from orchestrator.space.retention import DEFAULT_KEEP_BEST
from orchestrator.space.schema import SpaceError, parse_space
from orchestrator.sweep.listeners import TrialSnapshot
from orchestrator.sweep.outcome import TrialOutcome
from orchestrator.sweep.retention import BestWeights, KeepBestWeights, settle_weights

TINY = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"


def space(**changes: object):
    raw = {"base": str(TINY), "num_samples": 8, "space": {"optim.lr": {"float": [1e-4, 1e-2]}}}
    return parse_space({**raw, **changes}, source="s.yaml", base_dir=Path.cwd())


def checkpoint(root: Path, name: str) -> Path:
    path = root / name / "train" / "checkpoints" / "best"
    path.mkdir(parents=True)
    (path / WEIGHTS_FILE).write_bytes(b"weights")
    (path / METRICS_FILE).write_text("{}")
    return path


def has_weights(path: Path) -> bool:
    return (path / WEIGHTS_FILE).is_file()


def test_keep_best_defaults_to_ten_and_all_keeps_every_trial() -> None:
    assert space().keep_best == DEFAULT_KEEP_BEST == 10
    assert space(retention={"keep_best": 3}).keep_best == 3
    assert space(retention={"keep_best": "all"}).keep_best is None
    # A multi-objective sweep keeps every trial's weights: no one metric ranks its front.
    assert space(metric=["dev/sst_acc", "dev/para_acc"], mode=["max", "max"]).keep_best is None


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"keep_best": 0}, "retention.keep_best: expected an integer >= 1 or 'all', got 0"),
        ({"keep_best": "most"}, "retention.keep_best: expected an integer >= 1 or 'all'"),
        ({"keep": 3}, "retention.keep: unknown key (known: keep_best)"),
        (5, "retention: expected a mapping like {keep_best: 10}"),
    ],
)
def test_a_bad_retention_names_its_key(retention: object, message: str) -> None:
    with pytest.raises(SpaceError, match=r"s\.yaml") as raised:
        space(retention=retention)
    assert message in str(raised.value)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_weights_lets_the_worst_fall_out_as_better_ones_come(mode: str) -> None:
    best = BestWeights(2, {"dev/overall": mode})
    values = [3.0, 1.0, 2.0, 5.0]
    fallen = [best.offer(f"t{i}", {"dev/overall": v}, Path(f"c{i}")) for i, v in enumerate(values)]
    if mode == "max":  # kept {3, 2} then {3, 5}: 1 falls at once, then 2
        assert fallen == [[], [], [Path("c1")], [Path("c2")]]
    else:  # kept {1, 2}: 3 falls, then 5 at once
        assert fallen == [[], [], [Path("c0")], [Path("c3")]]


def test_a_trial_keeps_its_weights_while_it_is_among_the_best_by_any_ranking() -> None:
    """The sweep's metric and what `ensemble` ranks on by default (dev/overall) both count."""
    best = BestWeights(1, {"dev/sst_acc": "max", "dev/overall": "max"})
    assert best.offer("a", {"dev/sst_acc": 0.5, "dev/overall": 0.6}, Path("a")) == []
    assert best.offer("b", {"dev/sst_acc": 0.6, "dev/overall": 0.4}, Path("b")) == []  # sst best
    assert best.offer("c", {"dev/sst_acc": 0.7, "dev/overall": 0.7}, Path("c")) == [
        Path("a"), Path("b"),
    ]  # fmt: skip


def finished(trial_id: str, value: float, path: Path, **result: object) -> TrialSnapshot:
    last = {"best/dev/overall": value, EPOCHS_LEFT: 0, BEST_CHECKPOINT: str(path), **result}
    return TrialSnapshot(trial_id, "TERMINATED", {}, last)


def test_as_trials_finish_only_the_best_k_keep_their_weights(tmp_path: Path) -> None:
    listener = KeepBestWeights(space(), 2, tmp_path / "no-ensemble")
    paths = {name: checkpoint(tmp_path, name) for name in ("a", "b", "c", "d", "e")}
    listener.trial_completed(finished("a", 0.4, paths["a"]))
    listener.trial_completed(finished("b", 0.6, paths["b"]))
    assert has_weights(paths["a"]) and has_weights(paths["b"])
    listener.trial_completed(finished("c", 0.5, paths["c"]))  # a (0.4) falls out
    listener.trial_completed(finished("d", 0.9, paths["d"], **{NONFINITE_LOSS: "nan"}))  # failed
    listener.trial_completed(finished("e", 0.3, paths["e"]))  # worse than both kept
    assert [name for name, path in paths.items() if has_weights(path)] == ["b", "c"]
    # The others keep their metrics and say why their weights went, as loading them says.
    for name in ("a", "e"):
        note = (paths[name] / WEIGHTS_DROPPED_FILE).read_text()
        assert "retention keep_best: 2: not among the sweep's 2 best trials" in note
        assert (paths[name] / METRICS_FILE).is_file()
    assert "a trial failed joins no ensemble" in (paths["d"] / WEIGHTS_DROPPED_FILE).read_text()
    with pytest.raises(CheckpointError, match=r"missing model.safetensors \(retention keep_best"):
        load_weights(paths["a"], model=None)  # type: ignore[arg-type]


def outcome(trial_id: str, value: float | None, path: Path | None, state: str = "completed",
            feasible: bool = True) -> TrialOutcome:  # fmt: skip
    best = {} if value is None else {"dev/overall": value}
    where = str(path) if path else None
    return TrialOutcome(trial_id, state, {}, trial_id, 1, value, where,
                        feasible=feasible, best_metrics=best)  # fmt: skip


def test_settling_a_sweep_keeps_the_best_k_of_all_its_trials(tmp_path: Path) -> None:
    paths = {name: checkpoint(tmp_path, name) for name in "abcdef"}
    trials = [
        outcome("a", 0.5, paths["a"]),
        outcome("b", 0.7, paths["b"], state="pruned"),  # stopped early: still a member
        outcome("c", 0.9, paths["c"], feasible=False),  # broke a constraint: never a member
        outcome("d", 0.6, paths["d"]),
        outcome("e", None, paths["e"], state="killed"),  # runs on after --resume: untouched
        outcome("f", 0.8, paths["f"], state="failed"),
    ]
    gone = settle_weights(space(retention={"keep_best": 2}), trials)
    assert sorted(gone) == ["a", "c", "f"]
    assert [name for name, path in paths.items() if has_weights(path)] == ["b", "d", "e"]
    # Settling again changes nothing and still names every trial without weights.
    assert sorted(settle_weights(space(retention={"keep_best": 2}), trials)) == ["a", "c", "f"]
    assert settle_weights(space(retention={"keep_best": "all"}), trials) == []


def test_a_built_ensembles_members_keep_their_weights_whatever_their_rank(tmp_path: Path) -> None:
    from orchestrator.ensemble.manifest import manifest_for_selection, write_manifest
    from orchestrator.ensemble.request import Candidate
    from orchestrator.sweep.retention import ensemble_members

    paths = {name: checkpoint(tmp_path, name) for name in "abc"}
    ensemble_dir = tmp_path / "ensemble"
    ensemble_dir.mkdir()
    member = Candidate("run-a", "a", "a", "completed", 0.3, paths["a"])  # built before c, b
    manifest = manifest_for_selection(sweep="s", method="vote", select="top",
                                      metric="dev/overall", selected=[member], dev={})  # fmt: skip
    write_manifest(ensemble_dir, manifest)
    members = ensemble_members(ensemble_dir)
    assert members == {paths["a"].resolve()}
    trials = [outcome(n, v, paths[n]) for n, v in (("a", 0.3), ("b", 0.9), ("c", 0.8))]
    settle_weights(space(retention={"keep_best": 1}), trials, members)
    assert [name for name, path in paths.items() if has_weights(path)] == ["a", "b"]


def test_a_sweep_started_before_retention_keeps_every_trials_weights() -> None:
    from orchestrator.sweep.parent_run import RETENTION_KEY, recorded_retention

    new = space(retention={"keep_best": 3})
    assert recorded_retention(new, {RETENTION_KEY: "keep_best: 3"}).keep_best == 3
    assert recorded_retention(new, {"parent_run_id": "r1"}).keep_best is None  # no record
