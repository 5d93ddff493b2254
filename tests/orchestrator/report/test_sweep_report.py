"""Sweep results: params parsed back, one parquet row per trial, mean ± 95% CI and Welch deltas
against scipy, ablation / importance markdown, plots, and `orchestrator report` on a small
store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.image import imread
from scipy import stats

from orchestrator.cli import main
from orchestrator.report.plots import write_plots
from orchestrator.report.sweep_report import swept_axes, write_report
from orchestrator.report.tables import axes_table_markdown, importance_markdown
from orchestrator.report.trials_table import parse_param, trials_frame
from orchestrator.search.importance import importances
from orchestrator.stats import axis_groups, delta_ci, is_continuous, mean_ci
from orchestrator.tracking.store import StoredRun
from tests.orchestrator.sweep_store import FakeTrial, fake_sweep


def test_parse_param_reads_back_what_mlflow_stored() -> None:
    assert parse_param("null") is None and parse_param(None) is None
    assert parse_param("True") is True and parse_param("false") is False
    assert parse_param("3") == 3 and isinstance(parse_param("3"), int)
    assert parse_param("3e-05") == pytest.approx(3e-5)
    assert parse_param('["sst", "para"]') == '["sst", "para"]'
    assert parse_param("cosine") == "cosine"


def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [0.61, 0.64, 0.58, 0.66, 0.60]
    mean, half, n = mean_ci(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert n == 5 and mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((high - low) / 2)
    assert mean_ci([0.5])[:2] == (0.5, pytest.approx(math.nan, nan_ok=True))
    assert mean_ci([])[2] == 0


def test_delta_ci_matches_scipy_welch_interval() -> None:
    a, b = [0.70, 0.72, 0.69, 0.74], [0.60, 0.66, 0.61]
    delta, half = delta_ci(a, b)
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert delta == pytest.approx(np.mean(a) - np.mean(b))
    assert delta - half == pytest.approx(interval.low) and delta + half == pytest.approx(
        interval.high
    )
    assert math.isnan(delta_ci([0.7], b)[1])


def _run(i: int, state: str, params: dict[str, str], best: float | None) -> StoredRun:
    metrics = {} if best is None else {"best/dev/overall": best, "best/dev/sst_acc": best / 2}
    return StoredRun(
        run_id=f"r{i}",
        run_name=f"trial {i}",
        status="FINISHED",
        params=params,
        metrics=metrics,
        tags={"trial_id": f"t{i}", "trial_state": state},
        start_ms=1000 * i,
        end_ms=1000 * i + 2500,
    )


def test_trials_frame_has_one_row_per_trial_and_round_trips_through_parquet(
    tmp_path: Path,
) -> None:
    runs = [
        _run(0, "completed", {"optim.lr": "0.001", "loss.sts_loss": "mse", "x": "null"}, 0.5),
        _run(1, "pruned", {"optim.lr": "3e-05", "loss.sts_loss": "cosine", "x": "2"}, 0.4),
        _run(2, "failed", {"optim.lr": "0.01", "loss.sts_loss": "mse", "x": "[1, 2]"}, None),
    ]
    histories = {
        "r0": {"dev/overall": [(1, 0.45), (2, 0.5)]},
        "r1": {"dev/overall": [(1, 0.4)]},
        "r2": {"dev/overall": []},
    }
    frame = trials_frame(runs, histories)
    assert len(frame) == 3 and frame["run_id"].tolist() == ["r0", "r1", "r2"]
    assert frame["optim.lr"].tolist() == [0.001, 3e-05, 0.01]
    # Mixed values become text (one type per column); missing stays missing.
    assert pd.isna(frame["x"][0]) and frame["x"].tolist()[1:] == ["2", "[1, 2]"]
    assert frame["state"].tolist() == ["completed", "pruned", "failed"]
    assert frame["pruned_at_epoch"].tolist()[1] == 1 and pd.isna(frame["pruned_at_epoch"][0])
    assert frame["wall_s"].tolist() == [2.5, 2.5, 2.5]
    assert frame["dev/overall@2"].tolist()[0] == 0.5 and pd.isna(frame["dev/overall@2"][1])
    assert frame["best/dev/overall"].tolist()[:2] == [0.5, 0.4]
    path = tmp_path / "trials.parquet"
    frame.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_dtype=False)


def test_trials_frame_has_best_selection_columns_only_where_the_split_was_on() -> None:
    dev_only = trials_frame([_run(0, "completed", {}, 0.5)], {"r0": {}})
    assert not [c for c in dev_only.columns if c.startswith("best/selection/")]
    ranked = _run(1, "completed", {}, 0.5)
    ranked.metrics["best/selection/overall"] = 0.7
    failed = _run(2, "failed", {}, None)
    histories = {"r1": {"selection/sst_acc": [(1, 0.3), (2, 0.35)]}, "r2": {}}
    frame = trials_frame([ranked, failed], histories)
    assert frame["best/selection/overall"].tolist()[0] == 0.7
    assert frame["best/selection/sst_acc"].tolist()[0] == 0.35  # from the history
    assert frame[["best/selection/overall", "best/selection/sst_acc"]].iloc[1].isna().all()
    assert "best/dev/overall" in frame and "best/selection/para_acc" not in frame


def test_a_sweep_ranked_on_the_selection_split_plots_and_tables_it(tmp_path: Path) -> None:
    rows = [("mse", v, "completed") for v in (0.50, 0.52, 0.51)]
    rows += [("cosine", v, "completed") for v in (0.60, 0.61, 0.62)]
    frame = _frame(rows).assign(**{"best/selection/overall": [0.7, 0.71, 0.72, 0.8, 0.81, 0.82]})
    text = axes_table_markdown(frame, ["loss.sts_loss"], {"loss.sts_loss": "mse"}, sweep="s",
                             metrics=("dev/overall",), metric="selection/overall")  # fmt: skip
    assert "ranked them on `selection/overall`, on the selection split (held out of train)." in (
        text
    )
    header = "| value | n | pruned | selection/overall | dev/overall | Δ selection/overall |"
    assert header in text
    assert "| mse (base) | 3 | 0 | 0.7100 ± " in text
    assert "ranked them on `dev/overall`, on dev." in axes_table_markdown(
        frame, ["loss.sts_loss"], {}, sweep="s"
    )
    assert "`selection/overall` (on the selection split" in importance_markdown(
        {"x": 1.0}, sweep="s", metric="selection/overall"
    )
    # The plots read best/selection/overall: finite points, not an empty history.
    from orchestrator.report import plots

    drawn: list[int] = []
    scatter = plots.plt.Axes.scatter

    def counting_scatter(self, x, y, *args, **kwargs):
        drawn.append(len(x))
        return scatter(self, x, y, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots.plt.Axes, "scatter", counting_scatter)
        plots.optimization_history(frame, "selection/overall", tmp_path / "history.png")
    assert sum(drawn) == 6


def test_learning_curves_without_runs_say_so_in_the_title(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.report import plots

    titles: list[str] = []
    save = plots._save

    def title_then_save(fig, path: Path) -> Path:
        titles.append(fig.axes[0].get_title())
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", title_then_save)
    plots.plot_learning_curves({}, tmp_path / "empty.png")
    curve = pd.DataFrame({"epoch": [1, 2], "mean": [0.5, 0.6], "half": [0.01, 0.02]})
    plots.plot_learning_curves({"base": curve}, tmp_path / "one.png", baseline="base")
    assert titles == [
        "no completed confirm run",
        "learning curves per arm (bands: 95% CI; bold: base)",
    ]


def _frame(rows: list[tuple[str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "state": [r[2] for r in rows],
            "loss.sts_loss": [r[0] for r in rows],
            "best/dev/overall": [r[1] for r in rows],
        }
    )


def test_axis_groups_keep_choice_levels_and_bin_continuous_axes() -> None:
    frame = _frame([("mse", 0.5, "completed"), ("cosine", 0.6, "completed")])
    groups = axis_groups(frame, "loss.sts_loss", "mse")
    assert [(g.label, g.rows, g.is_base) for g in groups] == [
        ("mse", [0], True),
        ("cosine", [1], False),
    ]
    # A choice axis (few levels, each run by several trials) keeps one row per value.
    dropout = pd.DataFrame({"model.head_dropout": [0.0, 0.1, 0.0, 0.1, 0.0, 0.1]})
    assert [g.label for g in axis_groups(dropout, "model.head_dropout", 0.1)] == ["0", "0.1"]
    assert not is_continuous(dropout["model.head_dropout"])
    # A sampled float: every trial its own value. The quickstart's 6 trials were 6 rows of n = 1;
    # now 2 bins of 3, labelled by the range of the values in them.
    lr = pd.DataFrame({"optim.lr": [3e-5, 1.9e-4, 5e-5, 1.2e-4, 8e-5, 4e-5]})
    bins = axis_groups(lr, "optim.lr", 2e-5)
    assert [sorted(g.rows) for g in bins] == [[0, 2, 5], [1, 3, 4]]
    assert [g.label for g in bins] == ["3e-05 – 5e-05", "8e-05 – 0.00019"]
    assert [g.is_base for g in bins] == [False, False]  # 2e-5 is below every sampled value
    # Twelve trials: four bins of three; the base value's bin is the base group.
    many = pd.DataFrame({"optim.lr": [1e-5 * (i + 1) for i in range(12)]})
    bins = axis_groups(many, "optim.lr", 5.5e-5)
    assert [len(g.rows) for g in bins] == [3, 3, 3, 3]
    assert [g.is_base for g in bins] == [False, True, False, False]
    assert all(len(g.rows) >= 3 for g in axis_groups(many.iloc[:7], "optim.lr", None))


def test_ablation_markdown_means_cis_and_deltas() -> None:
    rows = [("mse", v, "completed") for v in (0.50, 0.52, 0.51)]
    rows += [("cosine", v, "completed") for v in (0.60, 0.61, 0.62)]
    text = axes_table_markdown(_frame(rows), ["loss.sts_loss"], {"loss.sts_loss": "mse"},
                             sweep="s", metrics=("dev/overall",))  # fmt: skip
    assert "6 completed and 0 pruned trials." in text
    mean, half, _ = mean_ci([0.60, 0.61, 0.62])
    delta, dhalf = delta_ci([0.60, 0.61, 0.62], [0.50, 0.52, 0.51])
    base_half = mean_ci([0.5, 0.52, 0.51])[1]
    assert "| value | n | pruned | dev/overall | Δ dev/overall |" in text
    assert f"| mse (base) | 3 | 0 | {0.51:.4f} ± {base_half:.4f} | — |" in text
    assert f"| cosine | 3 | 0 | {mean:.4f} ± {half:.4f} | +{delta:.4f} ± {dhalf:.4f}* |" in text

    no_base = axes_table_markdown(_frame(rows), ["loss.sts_loss"], {"loss.sts_loss": "pearson"},
                                sweep="s", metrics=("dev/overall",))  # fmt: skip
    assert "| value | n | pruned | dev/overall |\n" in no_base
    assert "No trial ran the base value, so there is no Δ column." in no_base


def test_pruned_trials_are_counted_named_and_compared_at_their_common_rung() -> None:
    frame = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "state": ["completed", "completed", "pruned", "pruned", "failed"],
            "loss.sts_loss": ["mse", "cosine", "mse", "cosine", "mse"],
            "epochs": [3, 3, 1, 2, 1],
            "best/dev/overall": [0.50, 0.60, 0.30, 0.41, None],
            "dev/overall@1": [0.40, 0.45, 0.30, 0.35, 0.1],
            "dev/overall@2": [0.45, 0.55, None, 0.41, None],
        }
    )
    text = axes_table_markdown(frame, ["loss.sts_loss"], {"loss.sts_loss": "mse"}, sweep="s",
                             metrics=("dev/overall",))  # fmt: skip
    assert "2 completed and 2 pruned trials." in text
    assert "Pruned (stopped early by the scheduler): `c` (epoch 1), `d` (epoch 2)." in text
    assert "Left out (no comparable score): failed `e`." in text
    # Every completed and pruned trial reached epoch 1: each row compares them all there.
    assert "| value | n | pruned | dev/overall | dev/overall@1 (all) | Δ dev/overall |" in text
    mse_rung, mse_half, _ = mean_ci([0.40, 0.30])
    assert f"| mse (base) | 1 | 1 | 0.5000 | {mse_rung:.4f} ± {mse_half:.4f} | — |" in text
    cosine_rung, cosine_half, _ = mean_ci([0.45, 0.35])
    assert f"| cosine | 1 | 1 | 0.6000 | {cosine_rung:.4f} ± {cosine_half:.4f} | +0.1000 |" in text


def test_importances_of_a_study_find_the_parameter_that_matters() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize"
    )
    study.optimize(
        lambda t: t.suggest_float("x", 0, 1) * 10 + 0 * t.suggest_float("y", 0, 1), n_trials=30
    )
    scores = importances(study)
    assert set(scores) == {"x", "y"} and scores["x"] > 0.9
    text = importance_markdown(scores, sweep="s")
    assert text.index("`x`") < text.index("`y`")
    assert "too few" in importance_markdown(None, sweep="s", note="too few trials")


def test_write_plots_writes_three_pngs(tmp_path: Path) -> None:
    rows = [("mse", 0.5, "completed"), ("cosine", 0.6, "completed"), ("mse", 0.4, "pruned")]
    frame = _frame(rows)
    files = write_plots(frame, ["loss.sts_loss"], {"loss.sts_loss": "mse"}, tmp_path)
    assert [f.name for f in files] == [
        "optimization_history.png",
        "parallel_coordinates.png",
        "axis_effects.png",
    ]
    for path in files:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # No completed trial at all still gives (empty) plots rather than an exception.
    assert len(write_plots(frame.assign(state="pruned"), ["loss.sts_loss"], {}, tmp_path)) == 3


def test_swept_axes_from_the_parent_run_or_the_varying_params() -> None:
    frame = pd.DataFrame({"run_id": ["a", "b"], "optim.lr": [1.0, 2.0], "seed": [0, 0]})
    assert swept_axes({"sweep.searched": "smart.weight optim.lr"}, frame) == [
        "smart.weight",
        "optim.lr",
    ]
    assert swept_axes({}, frame) == ["optim.lr"]


def test_report_command_on_a_small_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    trials = [
        FakeTrial("a", 0.50, params={"optim.lr": 2e-5}, history=[0.45, 0.50]),  # the base lr
        FakeTrial("b", 0.55, params={"optim.lr": 3e-3}, history=[0.50, 0.55]),
        FakeTrial("c", 0.30, state="pruned", params={"optim.lr": 1e-2}, history=[0.30]),
    ]
    fake_sweep(f"sqlite:///{results}/mlflow.db", "rep", trials, searched=("optim.lr",))
    written = write_report("rep", results_dir=results)
    out = results / "rep"
    frame = pd.read_parquet(out / "trials.parquet")
    assert len(frame) == 3 and written.trials == 3
    assert frame.set_index("trial_id")["pruned_at_epoch"]["c"] == 1
    assert frame.set_index("trial_id")["dev/overall@2"]["b"] == 0.55
    ablation = (out / "ablation.md").read_text()
    # Three values of a continuous axis: two bins, the pruned trial counted and named, and all
    # three compared at epoch 1, the last one every trial reached.
    assert "## `optim.lr` (base: 2e-05)" in ablation
    assert "| 2e-05 – 0.003 (base) | 2 | 0 | 0.5250 ± " in ablation
    rung = mean_ci([0.45, 0.50])
    assert f"| n/a | {rung[0]:.4f} ± {rung[1]:.4f} | — | — | — | — |" in ablation
    assert "| 0.01 | 0 | 1 | n/a | n/a | n/a | n/a | 0.3000 | n/a | n/a | n/a | n/a |" in ablation
    assert "Pruned (stopped early by the scheduler): `c` (epoch 1)." in ablation
    assert "sweep.json" in (out / "importance.md").read_text()  # no Optuna study in this store
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "axis_effects.png",
        "optimization_history.png",
        "parallel_coordinates.png",
    ]
    stored = [p.as_posix() for p in results.glob("mlartifacts/**/*") if p.is_file()]
    logged = {path.split("/artifacts/")[-1] for path in stored}
    assert {"report/ablation.md", "report/trials.parquet", "report/plots/axis_effects.png"} <= (
        logged
    )

    # The runs-table view `orchestrator ui` opens is stored on the experiment.
    from mlflow import MlflowClient

    experiment = MlflowClient(f"sqlite:///{results}/mlflow.db").get_experiment_by_name("rep")
    view = json.loads(experiment.tags["mlflow.sharedViewState.ablation"])
    assert view["selectedColumns"][0] == "params.`optim.lr`"
    assert "metrics.`best/dev/overall`" in view["selectedColumns"]

    result = CliRunner().invoke(main, ["report", "nope", "--results-dir", str(results)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: no sweep named 'nope' in sqlite:///{results}/mlflow.db (sweeps there: rep)"
    ]


def test_report_with_no_finished_trial_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    fake_sweep(f"sqlite:///{results}/mlflow.db", "empty", [])
    fake_sweep(f"sqlite:///{results}/mlflow.db", "busy", [FakeTrial("a", 0.4, state="running")])
    before = sorted(results.rglob("*"))
    for sweep, running in (("empty", ""), ("busy", " (1 running)")):
        result = CliRunner().invoke(main, ["report", sweep, "--results-dir", str(results)])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            f"Error: {sweep}: no finished trials yet{running}; nothing to report"
        ]
    assert sorted(results.rglob("*")) == before


def test_a_report_that_fails_midway_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.report import plots

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    trials = [FakeTrial("a", 0.5, params={"optim.lr": 2e-5}, history=[0.5])]
    fake_sweep(f"sqlite:///{results}/mlflow.db", "rep", trials, searched=("optim.lr",))
    real_write_plots = plots.write_plots

    def one_plot_then_fail(frame: pd.DataFrame, axes, base, out_dir: Path, **kwargs) -> None:
        plots.optimization_history(frame, "dev/overall", out_dir / "optimization_history.png")
        raise RuntimeError("plotting broke")

    monkeypatch.setattr(plots, "write_plots", one_plot_then_fail)
    with pytest.raises(RuntimeError, match="plotting broke"):
        write_report("rep", results_dir=results, log_to_mlflow=False)
    assert not (results / "rep").exists()  # a first report: no directory at all

    monkeypatch.setattr(plots, "write_plots", real_write_plots)
    written = write_report("rep", results_dir=results, log_to_mlflow=False)
    report = {p: p.read_bytes() for p in written.files}
    assert len(report) == 6 and all(p.is_relative_to(results / "rep") for p in report)

    monkeypatch.setattr(plots, "write_plots", one_plot_then_fail)
    with pytest.raises(RuntimeError, match="plotting broke"):
        write_report("rep", results_dir=results, log_to_mlflow=False)
    assert {p: p.read_bytes() for p in written.files} == report
    assert sorted(p.name for p in (results / "rep").iterdir()) == [
        "ablation.md",
        "importance.md",
        "plots",
        "trials.parquet",
    ]
