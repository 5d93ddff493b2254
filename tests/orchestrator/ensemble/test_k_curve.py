"""The ensemble's k-curve: vote (mode, median) and mean ensembles of the best k members against
hand-computed accuracies and Pearson r, its table, plot and reader, and `ensemble` / `report`
writing it (metrics.json, k_curve.png, ensemble.md, logged to MLflow)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from model.evaluate import OVERALL, TaskPredictions
from orchestrator.cli import main
from orchestrator.ensemble import k_curve_plot
from orchestrator.ensemble.k_curve import (
    best_k,
    check_curve,
    k_curve,
    k_curve_line,
    k_curve_markdown,
    read_k_curve,
)
from orchestrator.ensemble.request import EnsembleError
from orchestrator.report.sweep_report import write_report
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
    tiny_config,
)

IDS = ["a", "b", "c", "d"]


def _sst(labels: list[int], confidence: float) -> TaskPredictions:
    """SST predictions putting `confidence` on each predicted class, the rest spread evenly."""
    probabilities = np.full((len(labels), 5), (1.0 - confidence) / 4, dtype=np.float32)
    probabilities[np.arange(len(labels)), labels] = confidence
    return TaskPredictions("sst", IDS, np.array(labels), probabilities)


def _para(p: list[float]) -> TaskPredictions:
    labels = (np.array(p) > 0.5).astype(np.int64)
    return TaskPredictions("para", IDS, labels, np.array(p, dtype=np.float32))


def _sts(scores: list[float]) -> TaskPredictions:
    return TaskPredictions("sts", IDS, np.array(scores, dtype=np.float32), None)


# Three members in rank order, and the dev labels. Worked by hand below.
MEMBERS = [
    {"sst": _sst([0, 1, 2, 0], 0.4), "para": _para([0.9, 0.2, 0.4, 0.1]),
     "sts": _sts([0, 1, 2, 3])},
    {"sst": _sst([0, 1, 4, 3], 0.4), "para": _para([0.6, 0.7, 0.65, 0.3]),
     "sts": _sts([1, 0, 2, 3])},
    {"sst": _sst([0, 2, 2, 3], 0.96), "para": _para([0.3, 0.4, 0.35, 0.45]),
     "sts": _sts([3, 3, 3, 0])},
]  # fmt: skip
LABELS = {
    "sst": np.array([0, 1, 2, 3]),
    "para": np.array([1, 0, 1, 0]),
    "sts": np.array([0, 1, 2, 3], dtype=np.float32),
}


def _overall(sst: float, para: float, r: float) -> float:
    return (sst + para + (r + 1) / 2) / 3


# SST. k=2: examples c (2 vs 4) and d (0 vs 3) tie at equal mean probability 0.275, so the
# lower class wins: [0, 1, 2, 0], 3/4 by vote and mean alike. k=3: the mode is [0, 1, 2, 3]
# (4/4); the mean's example b has class 2 at (0.15 + 0.15 + 0.96) / 3 = 0.42 over class 1's
# (0.4 + 0.4 + 0.01) / 3 = 0.27, so the confident third member wins it: 3/4.
# Quora. k=2: a 1, b 0.45 -> 0, c 0.525 -> 1, d 0 (4/4); k=3: c is 0.4667 -> 0 and the mode of
# c (0, 1, 0) is 0 too: 3/4.
# STS against [0, 1, 2, 3]: member 2 [1, 0, 2, 3] has r = 4 / 5 = 0.8; member 3 [3, 3, 3, 0]
# r = -sqrt(0.6); k=2 mean = median = [.5, .5, 2, 3], r = sqrt(0.9); k=3 median [1, 1, 2, 3],
# r = 3.5 / sqrt(2.75 * 5); k=3 mean [4/3, 4/3, 7/3, 2], r = sqrt(0.6).
EXPECTED = {
    "single": [(0.75, 0.75, 1.0), (0.75, 0.75, 0.8), (0.75, 0.5, -math.sqrt(0.6))],
    "vote": [(0.75, 0.75, 1.0), (0.75, 1.0, math.sqrt(0.9)), (1.0, 0.75, 3.5 / math.sqrt(13.75))],
    "mean": [(0.75, 0.75, 1.0), (0.75, 1.0, math.sqrt(0.9)), (0.75, 0.75, math.sqrt(0.6))],
}


def _scores(point: dict[str, float]) -> tuple[float, float, float, float]:
    keys = ("dev/sst_acc", "dev/para_acc", "dev/sts_corr", OVERALL)
    return tuple(point[k] for k in keys)  # type: ignore[return-value]


def _curve() -> dict[str, Any]:
    return k_curve(MEMBERS, LABELS, trial_ids=["t1", "t2", "t3"], ranked_by="dev/overall")


def test_k_curve_matches_hand_computed_vote_and_mean_ensembles() -> None:
    curve = _curve()
    assert curve["ranked_by"] == "dev/overall"
    assert [s["trial_id"] for s in curve["single"]] == ["t1", "t2", "t3"]
    assert [p["k"] for p in curve["vote"]] == [1, 2, 3] == [p["k"] for p in curve["mean"]]
    for entry, expected in EXPECTED.items():
        for point, (sst, para, r) in zip(curve[entry], expected, strict=True):
            wanted = (sst, para, r, _overall(sst, para, r))
            assert _scores(point) == pytest.approx(wanted, abs=1e-6), (entry, point)


def test_best_k_is_the_fewest_members_at_the_best_score() -> None:
    curve = _curve()
    # vote overall: 0.8333, 0.9081, 0.9073; mean: 0.8333, 0.9081, 0.7958.
    assert best_k(curve, "vote") == 2 and best_k(curve, "mean") == 2
    assert best_k(curve, "vote", "dev/sst_acc") == 3
    assert best_k(curve, "mean", "dev/sst_acc") == 1  # 0.75 at every k: the first
    line = k_curve_line(curve)
    assert line.startswith("k-curve of dev/overall, k=1..3: vote 0.8333 0.9081 0.9073 (best k=2)")
    assert line.endswith("mean 0.8333 0.9081 0.7958 (best k=2)")


def test_k_curve_needs_one_trial_id_per_member() -> None:
    with pytest.raises(ValueError, match="2 members for 3 trial ids"):
        k_curve(MEMBERS[:2], LABELS, trial_ids=["t1", "t2", "t3"], ranked_by="dev/overall")
    with pytest.raises(ValueError):
        k_curve([], LABELS, trial_ids=[], ranked_by="dev/overall")


def test_k_curve_markdown_has_a_row_per_k_and_bolds_each_methods_best() -> None:
    text = k_curve_markdown(_curve(), sweep="qs", examples="the sweep's fixed dev subsets")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`t" in line]
    assert len(rows) == 3
    # k=2: Quora 1.0, STS r sqrt(0.9) = 0.9487, overall 0.9081 (bold: the best of both).
    assert rows[1].startswith("| 2 | `t2` | 0.8000 | 0.7500 | 1.0000 | 0.9487 | **0.9081** |")
    assert rows[2].endswith("| 0.7500 | 0.7500 | 0.7746 | 0.7958 |")
    assert "vote = mode of labels, median of STS scores" in text
    assert "Best k: vote 2, mean 2." in text and "fixed dev subsets" in text


def test_read_k_curve_round_trips_and_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    assert read_k_curve(path) is None  # no ensemble yet
    path.write_text(json.dumps({"sweep": "qs"}))
    assert read_k_curve(path) is None  # an ensemble written before k-curves
    path.write_text(json.dumps({"k_curve": _curve(), "dev_examples": "full dev files"}))
    assert read_k_curve(path) == (json.loads(json.dumps(_curve())), "full dev files")
    path.write_text('{"k_curve": ')
    with pytest.raises(EnsembleError, match=f"^{re.escape(str(path))}: not readable JSON"):
        read_k_curve(path)
    broken = _curve()
    broken["mean"] = broken["mean"][:2]
    path.write_text(json.dumps({"k_curve": broken}))
    with pytest.raises(EnsembleError, match=r"k_curve\.mean does not have one point per member"):
        read_k_curve(path)
    assert check_curve({"single": [], "ranked_by": "x"}) == "k_curve has no members"


def test_k_curve_plot_draws_each_method_and_the_members_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, Any] = {}
    save = k_curve_plot._save_figure

    def keep_lines(fig: Any, path: Path) -> None:
        overall = fig.axes[3]  # panels: SST, Quora, STS, overall
        drawn.update({line.get_label(): list(line.get_ydata()) for line in overall.lines})
        drawn["alone"] = [float(y) for _, y in overall.collections[0].get_offsets()]
        save(fig, path)

    monkeypatch.setattr(k_curve_plot, "_save_figure", keep_lines)
    curve = _curve()
    path = k_curve_plot.plot_k_curve(curve, tmp_path / "k_curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["k_curve.png"]  # no partial file left
    assert drawn["vote"] == [p[OVERALL] for p in curve["vote"]]
    assert drawn["mean"] == [p[OVERALL] for p in curve["mean"]]
    assert drawn["alone"] == pytest.approx([s[OVERALL] for s in curve["single"]])


# ---------------------------------------------------------------------------------------------
# `ensemble` and `report` on a small store (untrained tiny checkpoints, 12 examples per file)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("k_curve")
    make_tiny_data_dir(data_dir, root / "data", rows=12)
    results = root / "results"
    trials = []
    for i, value in enumerate([0.50, 0.70, 0.60]):
        checkpoint = save_untrained_checkpoint(results / "kc" / f"t{i}" / "best", tiny_config(i))
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i},
                                history=[value]))  # fmt: skip
    fake_sweep(f"sqlite:///{results}/mlflow.db", "kc", trials, searched=("seed",))
    return root


def test_ensemble_writes_the_k_curve_and_report_shows_it(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = store / "results"
    args = ["--results-dir", str(results), "--data-dir", str(store / "data")]
    result = CliRunner().invoke(main, ["ensemble", "--top", "3", "--method", "mean", *args])
    assert result.exit_code == 0, result.output
    out = results / "kc" / "ensemble"
    summary = json.loads((out / "metrics.json").read_text())
    curve = summary["k_curve"]
    # Rank order (t1 0.7, t2 0.6, t0 0.5); k=1 is the top member alone, k=3 the ensemble built.
    assert [s["trial_id"] for s in curve["single"]] == ["t1", "t2", "t0"]
    assert curve["ranked_by"] == "dev/overall"
    assert curve["mean"][2][OVERALL] == pytest.approx(summary["ensemble"]["dev"][OVERALL])
    top = next(m for m in summary["members"] if m["trial_id"] == "t1")["dev"]
    for method in ("vote", "mean"):
        assert _scores(curve[method][0]) == pytest.approx(_scores(top), abs=1e-6)
    assert k_curve_line(curve) in result.output.splitlines()
    assert (out / "k_curve.png").read_bytes()[:4] == b"\x89PNG"
    logged = {p.name for p in results.glob("mlartifacts/**/*") if p.is_file()}
    assert "k_curve.png" in logged

    written = write_report("kc", results_dir=results)
    table = (results / "kc" / "ensemble.md").read_text()
    assert table == k_curve_markdown(curve, sweep="kc", examples=summary["dev_examples"])
    plot = results / "kc" / "plots" / "ensemble_k_curve.png"
    assert plot in written.files and plot.read_bytes()[:4] == b"\x89PNG"
    logged = {p.as_posix().split("/artifacts/")[-1] for p in results.glob("mlartifacts/**/*")}
    assert {"report/ensemble.md", "report/plots/ensemble_k_curve.png"} <= logged


def test_report_on_a_broken_ensemble_metrics_file_is_one_line(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = store / "results"
    metrics = results / "kc" / "ensemble" / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("{not json")
    result = CliRunner().invoke(main, ["report", "kc", "--results-dir", str(results)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {metrics}: not readable JSON")
