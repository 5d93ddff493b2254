"""`--extend` and `warm_start:` without Ray: the schema, the compatibility checks (an extension
must be the same sweep, a warm start the same kinds of parameters), a warm start filling a real
Optuna study, ASHA's rungs seeded with earlier trials (the real Ray scheduler), and MLflow's read
side finding an extension's trials once."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from model.config import ConfigError
from orchestrator.contract import EXTENDS_RUN_TAG, EXTENSION_TAG, SweepLayout
from orchestrator.search.history import (
    WARM_START_ATTR,
    PastStudy,
    PastTrial,
    best_configs,
    read_past_study,
    space_specs,
    sweep_record,
)
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.lineage import (
    WarmStartSpec,
    record_differences,
    warm_start_problems,
)
from orchestrator.space.schema import SpaceError, parse_space
from tests.orchestrator.earlier_sweep import (
    EARLIER,
    RAW,
    edited,
    run_earlier_sweep,
    space_of,
    tiny_base,
)

# ------------------------------------------------------------------------------------- schema


def test_warm_start_parses_and_defaults_to_the_best_config() -> None:
    assert space_of().warm_start is None
    assert space_of(warm_start={"sweep": "a", "top": 3}).warm_start == WarmStartSpec("a", 3)
    assert space_of(warm_start={"sweep": "a"}).warm_start == WarmStartSpec("a", 1)


@pytest.mark.parametrize(
    ("warm_start", "key"),
    [
        ("a", "warm_start"),
        ({"sweep": "a", "topp": 2}, "warm_start.topp"),
        ({"top": 2}, "warm_start.sweep"),
        ({"sweep": "a", "top": -1}, "warm_start.top"),
        ({"sweep": "a", "top": True}, "warm_start.top"),
    ],
)
def test_bad_warm_start_names_the_file_and_key(warm_start: Any, key: str) -> None:
    with pytest.raises(SpaceError, match=rf"^s\.yaml: {key}: "):
        space_of(warm_start=warm_start)


def test_a_study_cannot_warm_start() -> None:
    raw = {**RAW, "arms": {"baseline": {}, "smart": {"smart.weight": 1.0}}, "seeds": 2}
    with pytest.raises(SpaceError, match=r"^s\.yaml: warm_start: an ablation study"):
        parse_space({**raw, "warm_start": {"sweep": "a"}}, source="s.yaml")


# -------------------------------------------------------------------------- compatibility


def test_an_extension_must_keep_every_recorded_key() -> None:
    record = sweep_record(space_of())
    assert record_differences(record, sweep_record(space_of())) == []
    # What an extension may change: the budget, the sampler and its seed, resources.
    same = space_of(num_samples=9, sampler="tpe", seed=5, resources={"cpu": 2})
    assert record_differences(record, sweep_record(same)) == []
    changes = {
        "space.optim.lr": edited("optim.lr", {"float": [1e-4, 1e-1], "log": True}),
        "space.model.head_dropout": edited("model.head_dropout", {"float": [0.0, 0.2]}),
        "scheduler.grace_period": space_of(scheduler={"name": "asha", "grace_period": 2}),
        "objectives": space_of(metric="dev/sst_acc"),
        "repeats": space_of(repeats=2),
        "base.optim.lr": space_of(base=tiny_base(optim={"lr": 5e-4})),
    }
    for key, space in changes.items():
        differences = record_differences(record, sweep_record(space))
        assert differences and differences[0][0] == key, (key, differences)
    lr = record_differences(record, sweep_record(changes["space.optim.lr"]))[0][1]
    assert lr == (
        "{float: [0.0001, 0.1], log: true} here, {float: [0.0001, 0.01], log: true} in the sweep"
    )


def test_a_warm_start_needs_the_same_kinds_and_scales_but_not_ranges() -> None:
    old = space_specs(space_of())
    wider = edited("optim.lr", {"float": [1e-5, 1e-1], "log": True})
    fewer = edited("model.head_dropout", {"choice": [0.1]})
    assert warm_start_problems(old, space_specs(wider)) == []
    assert warm_start_problems(old, space_specs(fewer)) == []
    linear = edited("optim.lr", {"float": [1e-4, 1e-2]})
    assert warm_start_problems(old, space_specs(linear)) == [
        "space.optim.lr (linear scale here, not there)"
    ]
    kind = edited("model.head_dropout", {"float": [0.0, 0.2]})
    assert warm_start_problems(old, space_specs(kind)) == [
        "space.model.head_dropout (float here, choice there)"
    ]
    other = space_of(space={"optim.lr": RAW["space"]["optim.lr"], "smart.steps": {"int": [1, 3]}})
    assert warm_start_problems(old, space_specs(other)) == [
        "space.smart.steps (not searched there)",
        "space.model.head_dropout (searched there, not here)",
    ]


def test_the_record_uses_the_distributions_the_study_stores(tmp_path: Path) -> None:
    """A space's specs equal those read back from trials its SweepStudy suggested."""
    space = space_of()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = SweepStudy(space, storage)
    for i in range(3):
        study.ask(f"t{i}")
    past = read_past_study(storage, space.name)
    assert past is not None and past.specs == space_specs(space)
    assert read_past_study(f"sqlite:///{tmp_path / 'none.db'}", "early") is None
    assert not (tmp_path / "none.db").exists()


def test_best_configs_take_one_per_config_and_the_pareto_front() -> None:
    def trial(number: int, values: tuple[float, ...], lr: float) -> PastTrial:
        return PastTrial(number, "COMPLETE", {"optim.lr": lr}, values)

    one = PastStudy("a", ("maximize",), {}, (
        trial(0, (0.5,), 1e-3), trial(1, (0.7,), 2e-3), trial(2, (0.7,), 2e-3),  # a repeat
        trial(3, (0.6,), 3e-3), PastTrial(4, "PRUNED", {"optim.lr": 4e-3}, (0.9,)),
    ))  # fmt: skip
    assert [t.number for t in best_configs(one, 2)] == [1, 3]
    low = PastStudy("a", ("minimize",), {}, one.trials)
    assert [t.number for t in best_configs(low, 2)] == [0, 3]
    two = PastStudy("a", ("maximize", "minimize"), {}, (
        trial(0, (0.5, 1.0), 1e-3), trial(1, (0.7, 2.0), 2e-3), trial(2, (0.4, 1.5), 3e-3),
        trial(3, (0.6, 0.5), 4e-3),
    ))  # fmt: skip
    # Brute force: 2 is dominated by 0 (lower first, higher second); 0 by 3.
    assert [t.number for t in best_configs(two, 5)] == [1, 3]


# ----------------------------------------------------------------------------- warm start


def test_a_warm_start_tells_the_fitting_trials_and_runs_the_best_first(tmp_path: Path) -> None:
    from orchestrator.sweep.warm_start import NewSweep

    run_earlier_sweep(tmp_path, EARLIER)
    space = edited("optim.lr", {"float": [1e-4, 4e-3], "log": True}, name="later")
    space = space.replace(warm_start=WarmStartSpec("early", 2))
    new = NewSweep.check(space, tmp_path, resume=False)
    assert new.warm is not None
    storage = f"sqlite:///{tmp_path / 'later.db'}"
    tags = new.warm.apply(storage)
    assert tags == {"warm_start": "early", "warm_start.told": "4",
                    "warm_start.left_out": "1", "warm_start.enqueued": "2"}  # fmt: skip
    study = SweepStudy(space, storage)
    first, second = study.ask("n0"), study.ask("n1")
    assert [first["optim.lr"], second["optim.lr"]] == [2e-3, 3e-4]  # the best two that fit
    assert second["model.head_dropout"] == 0.0
    told = [t for t in study.study.get_trials() if t.state.is_finished()]
    assert sorted(t.user_attrs["warm_start_number"] for t in told) == [0, 2, 3, 4]
    assert {t.user_attrs[WARM_START_ATTR] for t in told} == {"early"}
    assert all("ray_trial_id" not in t.user_attrs for t in told)
    pruned = [t for t in told if t.state.name == "PRUNED"]
    assert len(pruned) == 1 and pruned[0].intermediate_values == {1: pytest.approx(0.3)}
    # Applied twice (a rerun of the same new sweep): nothing is told again.
    assert new.warm.apply(storage)["warm_start.told"] == "0"


@pytest.mark.parametrize(
    ("space_changes", "message"),
    [
        ({"warm_start": {"sweep": "nope"}}, r"warm_start\.sweep: no sweep 'nope' in "),
        (
            {"warm_start": {"sweep": "early"}, "name": "early"},
            r"warm_start\.sweep: 'early' is "
            "this sweep; use --extend N",
        ),
        (
            {"warm_start": {"sweep": "early", "top": 5}},
            r"warm_start\.top: 5 exceeds num_samples 4",
        ),
        (
            {"warm_start": {"sweep": "early"}, "metric": "dev/sst_acc"},
            r"warm_start\.sweep: sweep 'early' optimised dev/overall \(max\)",
        ),
        (
            {
                "warm_start": {"sweep": "early"},
                "space": {**RAW["space"], "model.head_dropout": {"float": [0.0, 0.2]}},
            },
            r"warm_start: incompatible with sweep 'early': "
            r"space\.model\.head_dropout \(float here, choice there\)$",
        ),
    ],
)
def test_a_warm_start_that_cannot_be_done_is_one_error_before_any_write(
    tmp_path: Path, space_changes: dict[str, Any], message: str
) -> None:
    from orchestrator.sweep.warm_start import NewSweep

    run_earlier_sweep(tmp_path, EARLIER[:2])
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    space = space_of(**{"name": "later", **space_changes})
    with pytest.raises(SpaceError, match=rf"^s\.yaml: {message}"):
        NewSweep.check(space, tmp_path, resume=False)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------- extension


def test_an_extension_of_an_edited_space_names_the_key_and_writes_nothing(tmp_path: Path) -> None:
    from orchestrator.sweep.extend import plan_extension

    run_earlier_sweep(tmp_path, EARLIER[:2])
    layout = SweepLayout.of(tmp_path, "early")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    plan = plan_extension(space_of(), layout, 2)
    assert (plan.number, plan.space.num_samples, plan.space.seed) == (1, 2, 1)
    assert sorted(plan.rungs) == ["early#0", "early#1"]  # ASHA gets their epochs
    assert plan.rungs["early#0"] == {1: pytest.approx(0.4), 2: 0.5}
    wider = edited("optim.lr", {"float": [1e-4, 1e-1], "log": True})
    with pytest.raises(
        SpaceError, match=r"^s\.yaml: space\.optim\.lr: \{float: \[0\.0001, 0\.1\]"
    ):
        plan_extension(wider, layout, 2)
    with pytest.raises(SpaceError, match=r"^s\.yaml: base\.optim\.lr: 0\.0005 here, 0\.001 in"):
        plan_extension(space_of(base=tiny_base(optim={"lr": 5e-4})), layout, 2)
    with pytest.raises(ConfigError, match=r"sweep\.json: no sweep 'other' to extend"):
        plan_extension(space_of(name="other"), SweepLayout.of(tmp_path, "other"), 2)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_an_older_sweep_without_a_record_is_checked_against_its_study(tmp_path: Path) -> None:
    from orchestrator.sweep.extend import plan_extension

    root = run_earlier_sweep(tmp_path, EARLIER[:2])
    state = json.loads((root / "sweep.json").read_text())
    del state["search"]
    (root / "sweep.json").write_text(json.dumps(state))
    layout = SweepLayout.of(tmp_path, "early")
    assert plan_extension(space_of(), layout, 1).rungs == {}  # not known to be sound
    kind = edited("model.head_dropout", {"float": [0.0, 0.2]})
    with pytest.raises(SpaceError, match=r"^s\.yaml: space\.model\.head_dropout: \{float: "):
        plan_extension(kind, layout, 1)
    with pytest.raises(SpaceError, match=r"^s\.yaml: mode: "):
        plan_extension(space_of(mode="min"), layout, 1)


def write_space_file(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**RAW, **changes}, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--extend", "2", "--resume"], "Error: --extend: cannot be combined with --resume"),
        (
            ["--extend", "2", "--num-samples", "3"],
            "Error: --extend: cannot be combined with --num",
        ),
        (["--extend", "2"], "Error: {results}/early/sweep.json: no sweep 'early' to extend"),
        (["--extend", "0"], "Error: --extend 0: expected N >= 1, the number of configs to add"),
    ],
)
def test_cli_extend_errors_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], start: str, data_dir: Path
) -> None:
    from orchestrator.cli import main

    path, results = write_space_file(tmp_path), tmp_path / "results"
    argv = ["sweep", str(path), "--results-dir", str(results), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(main, [*argv, *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start.format(results=results.resolve()))
    assert not results.exists()


# ------------------------------------------------------------------------------ ASHA rungs


def test_seeded_asha_stops_a_trial_below_the_earlier_trials_rung(tmp_path: Path) -> None:
    """The real Ray ASHAScheduler: a new trial at rung 1 is compared with earlier trials."""
    from ray.tune.schedulers import TrialScheduler

    from orchestrator.sweep.ray_tune import _scheduler, seed_rungs

    space = space_of(scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    history = {"early#0": {1: 0.6, 2: 0.7}, "early#1": {1: 0.5, 2: 0.55}, "early#2": {1: 0.55}}

    def first_decision(scheduler: Any, value: float) -> str:
        scheduler.set_search_properties("dev/overall", "max")
        trial = types.SimpleNamespace(trial_id="new")  # ASHA reads only its id
        scheduler.on_trial_add(None, trial)
        return str(scheduler.on_trial_result(None, trial, {"epoch": 1, "dev/overall": value}))

    assert first_decision(_scheduler(space), 0.52) == TrialScheduler.CONTINUE  # empty rungs
    seeded: Any = seed_rungs(_scheduler(space), history, "max")
    assert first_decision(seeded, 0.52) == TrialScheduler.STOP  # below the rung's median 0.55
    assert first_decision(seed_rungs(_scheduler(space), history, "max"), 0.58) == "CONTINUE"
    lower = {key: {step: -v for step, v in values.items()} for key, values in history.items()}

    def min_decision(value: float) -> str:
        scheduler: Any = seed_rungs(_scheduler(space.replace(mode="min")), lower, "min")
        scheduler.set_search_properties("dev/overall", "min")
        trial = types.SimpleNamespace(trial_id="new")
        scheduler.on_trial_add(None, trial)
        return str(scheduler.on_trial_result(None, trial, {"epoch": 1, "dev/overall": value}))

    # Lower is better: the rung's median is -0.55, so -0.52 is worse and -0.58 better.
    assert (min_decision(-0.52), min_decision(-0.58)) == ("STOP", "CONTINUE")


# ---------------------------------------------------------------------------- MLflow reads


def test_read_sweep_reads_each_extension_trial_once(tmp_path: Path) -> None:
    from orchestrator.ensemble.select import checkpoint_places
    from orchestrator.tracking.store import read_sweep
    from orchestrator.tracking.writer import SweepTracker
    from tests.tiny_model import tiny_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = SweepTracker(uri, "early")
    parent = first.start_sweep(run_name="early (sweep)", params={}, tags={})
    for tid in ("a_00000", "a_00001"):
        first.start_trial(tid, run_name=tid, config=tiny_config(), tags={})
    later = SweepTracker(uri, "early")
    extension = later.start_sweep(
        run_name="early (extend 1)", params={}, tags={EXTENDS_RUN_TAG: parent}
    )
    later.start_trial("b_00000", run_name="b", config=tiny_config(),
                      tags={EXTENSION_TAG: "extend-1"})  # fmt: skip
    stored = read_sweep(uri, "early")
    assert stored is not None and stored.parent.run_id == parent  # not the newer extension
    assert [run.run_id for run in stored.extensions] == [extension]
    assert sorted(run.trial_id for run in stored.trials) == ["a_00000", "a_00001", "b_00000"]
    ext_trial = next(run for run in stored.trials if run.trial_id == "b_00000")
    root = tmp_path / "results" / "early"
    assert checkpoint_places(ext_trial, [root]) == [
        SweepLayout(root / "extend-1").trial("b_00000").best_checkpoint,
        SweepLayout(root).trial("b_00000").best_checkpoint,
    ]


def test_resume_goes_on_with_an_unfinished_extension_only(tmp_path: Path) -> None:
    from orchestrator.sweep.extend import EXTENSIONS_KEY, pending_extension, plan_extension
    from orchestrator.sweep.plain import SweepStateError

    root = run_earlier_sweep(tmp_path, EARLIER[:2])
    layout = SweepLayout.of(tmp_path, "early")
    assert not pending_extension(tmp_path, "early")
    with pytest.raises(SweepStateError, match=r"sweep\.json: extensions: none left unfinished"):
        plan_extension(space_of(), layout, None)
    state = json.loads((root / "sweep.json").read_text())
    entry = {"dir": "extend-1", "parent_run_id": "p1", "num_samples": 3, "finished": False}
    (root / "sweep.json").write_text(json.dumps({**state, EXTENSIONS_KEY: [entry]}))
    assert pending_extension(tmp_path, "early")
    plan = plan_extension(space_of(), layout, None)
    assert (plan.number, plan.parent_run_id, plan.space.num_samples) == (1, "p1", 3)
    assert plan_extension(space_of(), layout, 2).number == 2  # a new one after a stopped one
    entry["finished"] = True
    (root / "sweep.json").write_text(json.dumps({**state, EXTENSIONS_KEY: [entry]}))
    assert not pending_extension(tmp_path, "early")
