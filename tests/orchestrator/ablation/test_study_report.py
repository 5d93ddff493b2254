"""`orchestrator report` on an ablation study logged as the contract says (through the real
tracking writer): the table files hold `ablation_table`'s numbers for the confirm runs, missing
and failed runs are noted, every arm's runs carry the same seeds, the best arm's SST details and
the learning curves, the per-arm means on the parent run and the grouped UI view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.image import imread
from mlflow import MlflowClient

from model.config import ConfigError
from model.evaluate import DEV_METRICS, OVERALL, sst_detail_metrics
from orchestrator.ablation.arm_table import TABLE_METRICS, ablation_table
from orchestrator.ablation.sst_details import CONFUSION_KEYS
from orchestrator.ablation.study_info import StudyInfo, study_info
from orchestrator.ablation.study_report import phase_runs, runs_frame, seed_notes, seed_sets
from orchestrator.ablation.verdicts import VerdictRule, with_verdicts
from orchestrator.cli import main
from orchestrator.contract import (
    CONFIRM_PHASE,
    STUDY_CORRECTION_PARAM,
    STUDY_EQUIVALENCE_PARAM,
    TUNE_PHASE,
    arm_metric,
    arm_verdict_tag,
)
from orchestrator.report.sweep_report import write_report
from orchestrator.tracking.store import read_sweep
from tests.orchestrator.sweep_store import FakeStudyRun, fake_study

ARMS = ("baseline", "smart", "cross")
SEEDS = (0, 1, 2)
SCORES = {  # arm -> seed -> (sst acc, para acc, sts r)
    "baseline": {0: (0.40, 0.70, 0.30), 1: (0.42, 0.71, 0.28), 2: (0.39, 0.69, 0.33)},
    "smart": {0: (0.43, 0.72, 0.31), 1: (0.44, 0.72, 0.30), 2: (0.42, 0.70, 0.35)},
    "cross": {0: (0.41, 0.75, 0.40), 1: (0.43, 0.77, 0.41), 2: (0.40, 0.74, 0.39)},
}
WALL = {"baseline": 10.0, "smart": 25.0, "cross": 40.0}
LABELS = [0, 1, 2, 3, 4] * 4


def _predictions(arm: str, seed: int) -> list[int]:
    """SST predictions that get more right for the better arms, and differ by seed."""
    right = {"baseline": 8, "smart": 11, "cross": 14}[arm] + seed
    return [label if i < right else (label + 1) % 5 for i, label in enumerate(LABELS)]


def _run(arm: str, seed: int, **kwargs) -> FakeStudyRun:
    bump = 0.01 * ARMS.index(arm)
    return FakeStudyRun(
        arm, seed, SCORES[arm][seed], history=[0.50 + bump + 0.01 * seed, 0.55 + bump],
        sst=(LABELS, _predictions(arm, seed)), wall_s=WALL[arm] + seed, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def blank_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite file: creating one takes seconds, copying it none."""
    path = tmp_path_factory.mktemp("blank") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def results(tmp_path: Path, blank_store: Path) -> Path:
    """A results directory holding an empty tracking store."""
    (tmp_path / "results").mkdir()
    shutil.copy(blank_store, tmp_path / "results" / "mlflow.db")
    return tmp_path / "results"


def _study(results: Path, runs: list[FakeStudyRun], name: str = "abl", **kwargs: Any) -> str:
    uri = f"sqlite:///{results}/mlflow.db"
    fake_study(uri, name, runs, arms=ARMS, seeds=SEEDS, **kwargs)
    return uri


def _expected_table(runs: list[FakeStudyRun], rule: VerdictRule | None = None) -> pd.DataFrame:
    """`ablation_table` and its verdicts on the very numbers the fake study logged."""
    rows = [
        {"arm": r.arm, "seed": r.seed, "wall_s": r.wall_s, **r.best}
        for r in runs
        if r.phase == CONFIRM_PHASE and r.state == "completed"
    ]
    table = ablation_table(pd.DataFrame(rows), "baseline", ARMS)
    return with_verdicts(table, pd.DataFrame(rows), "baseline", rule or VerdictRule())


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_report_on_a_study_writes_the_table_of_its_confirm_runs(results: Path) -> None:
    runs = [_run(arm, seed) for arm in ARMS for seed in SEEDS]
    uri = _study(results, runs)
    written = write_report("abl", results_dir=results)
    out = results / "abl"
    assert written.notes == []
    # No tuning phase: no HPO tables or plots.
    assert {p.name for p in written.files} == {
        "trials.parquet",
        "ablation.parquet",
        "ablation.md",
        "ablation.tex",
        "learning_curves.png",
        "sst_confusion.png",
    }

    table = pd.read_parquet(out / "ablation.parquet")
    expected = _expected_table(runs)
    assert table["arm"].tolist() == list(ARMS)
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9, atol=1e-12)
    markdown = (out / "ablation.md").read_text()
    assert "seeds [0, 1, 2], shared by every arm. 9 of 9 confirm runs completed" in markdown
    assert "picked on dev (dev/overall)" in markdown
    smart = expected.set_index("arm").loc["smart"]
    delta = f"{smart['Δ dev/overall']:+.4f} ± {smart['Δ dev/overall ±']:.4f}"
    assert f"{delta} (p={smart['Δ dev/overall p']:.3f})" in markdown
    assert "| baseline (baseline) |" in markdown and "Confirm runs not completed" not in markdown
    latex = (out / "ablation.tex").read_text()
    assert latex.startswith(r"\begin{table}") and latex.count(r"\\") == 1 + len(ARMS)

    # Each arm's means on the parent run, and the files as its artifacts.
    stored = read_sweep(uri, "abl")
    assert stored is not None
    for arm, row in expected.set_index("arm").iterrows():
        for metric in TABLE_METRICS:
            key = arm_metric(str(arm), metric)
            assert stored.parent.metrics[key] == pytest.approx(row[metric])
    client = MlflowClient(tracking_uri=uri)
    listed = {a.path for a in client.list_artifacts(stored.parent.run_id, "report")}
    assert {"report/ablation.md", "report/ablation.parquet", "report/ablation.tex"} <= listed
    plots = {a.path for a in client.list_artifacts(stored.parent.run_id, "report/plots")}
    assert plots == {"report/plots/learning_curves.png", "report/plots/sst_confusion.png"}


def test_the_study_params_set_the_verdicts_their_columns_and_the_parent_runs_record(
    results: Path,
) -> None:
    runs = [_run(arm, seed) for arm in ARMS for seed in SEEDS]
    params = {STUDY_CORRECTION_PARAM: "bh", STUDY_EQUIVALENCE_PARAM: "0.02"}
    uri = _study(results, runs, study_params=params)
    write_report("abl", results_dir=results)
    out = results / "abl"
    rule = VerdictRule(correction="bh", equivalence=0.02)
    expected = _expected_table(runs, rule)
    table = pd.read_parquet(out / "ablation.parquet")
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9, atol=1e-12)
    assert {"verdict", "verdict p", f"Δ {OVERALL} p adj", f"Δ {OVERALL} p equiv adj",
            f"Δ {OVERALL} MDE80", f"Δ {OVERALL} seeds needed"} <= set(table.columns)  # fmt: skip
    markdown = (out / "ablation.md").read_text()
    assert "## Verdicts against `baseline`" in markdown
    assert "| p (BH) | p equiv. (BH) |" in markdown
    assert "equivalent: TOST within ±0.02, BH-adjusted too" in markdown
    assert "verdicts from BH-adjusted" in (out / "ablation.tex").read_text()

    stored = read_sweep(uri, "abl")
    assert stored is not None
    info = study_info(stored.parent.params)
    assert info is not None and info.rule == VerdictRule(correction="bh", equivalence=0.02)
    for arm, row in expected.set_index("arm").drop("baseline").iterrows():
        assert stored.parent.tags[arm_verdict_tag(str(arm))] == row["verdict"]
        key = arm_metric(str(arm), f"{OVERALL}/p_adj")
        assert stored.parent.metrics[key] == pytest.approx(row[f"Δ {OVERALL} p adj"])
    assert arm_metric("baseline", f"{OVERALL}/p_adj") not in stored.parent.metrics


def test_unreadable_study_params_name_the_problem() -> None:
    params = {"study.arms": '["a", "b"]', STUDY_CORRECTION_PARAM: "sidak"}
    with pytest.raises(ConfigError, match="unreadable params: correction: expected"):
        study_info(params)


def test_the_best_arms_sst_details_and_every_arms_learning_curve(results: Path) -> None:
    runs = [_run(arm, seed) for arm in ARMS for seed in SEEDS]
    uri = _study(results, runs)
    stored = read_sweep(uri, "abl")
    assert stored is not None
    from orchestrator.ablation.study_report import build_study_report
    from orchestrator.tracking.store import metric_histories

    confirm = phase_runs(stored.trials, CONFIRM_PHASE)
    histories = {r.run_id: metric_histories(uri, r.run_id, [OVERALL]) for r in confirm}
    info = study_info(stored.parent.params)
    assert info is not None and info.arms == ARMS and info.seeds == SEEDS
    report = build_study_report("abl", info, confirm, histories)

    # `cross` has the highest mean overall: its SST details, averaged / summed over its seeds.
    assert report.sst is not None and report.sst.arm == "cross" and report.sst.seeds == 3
    details = [sst_detail_metrics(np.array(LABELS), np.array(_predictions("cross", s)))
               for s in SEEDS]  # fmt: skip
    balanced = np.mean([d["dev/sst_balanced_acc"] for d in details])
    assert report.sst.balanced_acc[0] == pytest.approx(balanced)
    f1_of_2 = np.mean([d["dev/sst_f1/2"] for d in details])
    assert report.sst.per_class.set_index("class").loc[2, "f1"] == pytest.approx(f1_of_2)
    confusion = np.array([sum(d[k] for d in details) for k in CONFUSION_KEYS]).reshape(5, 5)
    np.testing.assert_array_equal(report.sst.confusion, confusion)
    assert report.sst.confusion.sum() == 3 * len(LABELS)
    assert "SST details of the best arm, `cross` (mean over 3 seeds)" in report.markdown
    assert f"Balanced accuracy {balanced:.4f} ± " in report.markdown

    # Learning curves: dev/overall per epoch, the mean over each arm's seeds.
    assert list(report.curves) == list(ARMS)
    smart = report.curves["smart"].set_index("epoch")
    assert smart.loc[1, "mean"] == pytest.approx(np.mean([0.51, 0.52, 0.53]))
    assert smart.loc[2, "mean"] == pytest.approx(0.56) and smart.loc[2, "n"] == 3

    write_report("abl", results_dir=results, log_to_mlflow=False)
    for name in ("learning_curves", "sst_confusion"):
        image = imread(results / "abl" / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_missing_and_failed_confirm_runs_are_counted_per_arm(results: Path) -> None:
    runs = [_run(arm, seed) for arm in ARMS for seed in SEEDS if (arm, seed) != ("cross", 1)]
    runs[runs.index(_run("smart", 2))] = _run("smart", 2, state="failed")
    _study(results, runs)
    written = write_report("abl", results_dir=results, log_to_mlflow=False)
    markdown = (results / "abl" / "ablation.md").read_text()
    assert "7 of 9 confirm runs completed" in markdown
    assert "- `smart`: 2 of 3 completed; 1 failed (seeds [2])" in markdown
    assert "- `cross`: 2 of 3 completed; 1 missing (seeds [1])" in markdown
    assert "- `baseline`" not in markdown
    assert written.notes == [
        "not completed: `smart`: 2 of 3 completed; 1 failed (seeds [2])",
        "not completed: `cross`: 2 of 3 completed; 1 missing (seeds [1])",
        "seeds not shared: The arms ran different seed sets: `baseline` [0, 1, 2], "
        "`smart` [0, 1, 2], `cross` [0, 2].",
    ]
    table = pd.read_parquet(results / "abl" / "ablation.parquet").set_index("arm")
    pd.testing.assert_frame_equal(table, _expected_table(runs).set_index("arm"), rtol=1e-9)
    assert table.loc["smart", "seeds"] == 2 and table.loc["smart", "Δ dev/overall pairs"] == 2


def test_every_arm_carries_the_same_seeds_read_back_from_mlflow(results: Path) -> None:
    uri = _study(results, [_run(arm, seed) for arm in ARMS for seed in SEEDS])
    stored = read_sweep(uri, "abl")
    assert stored is not None
    runs = runs_frame(phase_runs(stored.trials, CONFIRM_PHASE))
    assert seed_sets(runs) == {arm: frozenset(SEEDS) for arm in ARMS}
    assert len(runs) == len(ARMS) * len(SEEDS) and not runs.duplicated(["arm", "seed"]).any()


def test_a_study_whose_arms_ran_other_seeds_is_flagged(results: Path) -> None:
    runs = [_run(arm, seed) for arm in ARMS for seed in SEEDS]
    runs[-1] = FakeStudyRun("cross", 7, SCORES["cross"][2], wall_s=40.0)  # not a study seed
    _study(results, runs)
    result = CliRunner().invoke(main, ["report", "abl", "--results-dir", str(results),
                                       "--no-mlflow"])  # fmt: skip
    assert result.exit_code == 0, result.output
    markdown = (results / "abl" / "ablation.md").read_text()
    assert "shared by every arm" not in markdown and "**Seeds not shared:**" in markdown
    assert "`cross` ran seeds [7] that are not the study's seeds [0, 1, 2]." in markdown
    assert "note: seeds not shared: `cross` ran seeds [7]" in result.output
    # The paired Δ of `cross` uses the two seeds it shares with the baseline.
    table = pd.read_parquet(results / "abl" / "ablation.parquet").set_index("arm")
    assert table.loc["cross", "Δ dev/overall pairs"] == 2 and table.loc["cross", "seeds"] == 3


def test_a_tuned_study_also_reports_its_tuning_phase_per_arm(results: Path) -> None:
    confirm = [_run(arm, seed) for arm in ("baseline", "smart", "cross") for seed in SEEDS]
    tune = [
        _run(arm, 0, phase=TUNE_PHASE, params={"optim.lr": lr},
             state="pruned" if i == 3 else "completed")
        for arm in ARMS for i, lr in enumerate((1e-4, 2e-4, 5e-4, 1e-3))
    ]  # fmt: skip
    _study(results, tune + confirm, searched=("optim.lr",))
    _tune_studies(results / "abl", "abl", ARMS[:2])  # `cross` has no Optuna study: noted
    written = write_report("abl", results_dir=results, log_to_mlflow=False)
    names = {p.name for p in written.files}
    assert {"tuning.md", "importance.md", "optimization_history.png", "axis_effects.png"} <= names
    tuning = (results / "abl" / "tuning.md").read_text()
    for arm in ARMS:
        assert f"# Tuning (phase 1) of arm `{arm}`" in tuning
    assert tuning.count("3 completed and 1 pruned trials.") == 3
    assert tuning.count("The sweep ranked them on `dev/overall`, on dev.") == 3
    # Each arm's importances come from its own Optuna study, `<study>.tune-<arm>`.
    importance = (results / "abl" / "importance.md").read_text()
    sections = importance.split("## Arm ")[1:]
    assert [section.split("`")[1] for section in sections] == list(ARMS)
    for section in sections[:2]:
        assert section.index("`optim.lr`") < section.index("`optim.warmup`"), section
    assert "Optuna could not compute importances" in sections[2]
    assert "## `optim.lr`" in tuning
    # Only the confirm runs make the table.
    table = pd.read_parquet(results / "abl" / "ablation.parquet")
    assert table["seeds"].tolist() == [3, 3, 3]
    assert len(pd.read_parquet(results / "abl" / "trials.parquet")) == len(tune) + len(confirm)


def _tune_studies(root: Path, study: str, arms: tuple[str, ...]) -> None:
    """The Optuna studies of the arms' tuning phases in `<root>/optuna.db`, named as the study
    driver names them, where `optim.lr` drives the objective; and the sweep.json naming them."""
    import optuna

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("optim.warmup", 0, 1)  # no effect on the objective
        return trial.suggest_float("optim.lr", 0, 1)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{root}/optuna.db"
    for arm in arms:
        tuned = optuna.create_study(
            study_name=f"{study}.tune-{arm}", storage=storage, direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=0),
        )  # fmt: skip
        tuned.optimize(objective, n_trials=12)
    (root / "sweep.json").write_text(json.dumps({"name": study, "optuna_storage": storage}))


def test_the_ui_view_of_a_study_groups_its_completed_confirm_runs_by_arm(results: Path) -> None:
    uri = _study(results, [_run(arm, seed) for arm in ARMS for seed in SEEDS])
    from orchestrator.report.sweep_report import ui_target

    command, url = ui_target(results, "abl", 5123)
    assert url.endswith("?viewStateShareKey=ablation") and "--port" in command
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("abl")
    view = json.loads(experiment.tags["mlflow.sharedViewState.ablation"])
    assert view["searchFilter"] == (
        "tags.role = 'trial' and params.phase = 'confirm' and tags.trial_state = 'completed'"
    )
    assert view["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "param", "groupByData": "arm"}],
    }
    assert view["groupsExpanded"] == {f"param.arm.{arm}": False for arm in ARMS}
    assert view["orderByKey"] == "metrics.`best/dev/overall`"
    assert view["selectedColumns"] == [f"metrics.`best/{m}`" for m in DEV_METRICS]


def test_seed_notes_name_unshared_foreign_and_repeated_seeds_and_stray_arms() -> None:
    info = StudyInfo(arms=("a", "b"), baseline="a", seeds=(0, 1))
    shared = pd.DataFrame(
        {"arm": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "state": ["completed"] * 4}
    )
    assert seed_notes(shared, info) == []
    broken = pd.DataFrame(
        {
            "arm": ["a", "a", "a", "b", "b", "c"],
            "seed": [0, 1, 1, 0, 5, 0],
            "state": ["completed"] * 6,
        }
    )
    assert seed_notes(broken, info) == [
        "Confirm runs of arms the study does not declare: `c`.",
        "The arms ran different seed sets: `a` [0, 1], `b` [0, 5], `c` [0].",
        "`b` ran seeds [5] that are not the study's seeds [0, 1].",
        "`a` completed seed 1 2 times; the table averages them into one score for that seed "
        "before pairing.",
    ]
