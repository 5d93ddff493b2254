"""A study's paired arm differences beside a paper's: the numbers, the verdicts, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from orchestrator.ablation.arm_table import ablation_table
from orchestrator.report.published import (
    PublishedError,
    beside_published,
    load_published,
    verdict,
    write_published,
)

REPO = Path(__file__).resolve().parents[3]
PUBLISHED = """
source: test papers
arms:
  smart:
    paper: "P1"
    split: dev
    baseline: {row: "base (P1:10)", sst: 0.40, para: 0.70, sts: 0.50}
    best: {row: "best (P1:12)", sst: 0.45, para: 0.69, sts: 0.50}
"""


def _runs() -> pd.DataFrame:
    """Two arms on three seeds: smart adds +0.02, +0.03, +0.04 to SST and costs Quora 0.05."""
    rows = []
    scores = [(0.30, 0.70, 0.5), (0.32, 0.72, 0.6), (0.31, 0.71, 0.7)]
    for seed, (sst, para, sts) in enumerate(scores):
        base = {"seed": seed, "dev/sst_acc": sst, "dev/para_acc": para, "dev/sts_corr": sts}
        rows.append({**base, "arm": "baseline", "wall_s": 10.0})
        smart = {"dev/sst_acc": sst + 0.02 + 0.01 * seed, "dev/para_acc": para - 0.05}
        smart["dev/sts_corr"] = sts + (0.01, -0.01, 0.0)[seed]
        rows.append({**base, **smart, "arm": "smart", "wall_s": 20.0})
    frame = pd.DataFrame(rows)
    tasks = frame["dev/sst_acc"] + frame["dev/para_acc"] + (frame["dev/sts_corr"] + 1) / 2
    frame["dev/overall"] = tasks / 3
    return frame


def test_our_delta_is_the_paired_difference_and_the_paper_delta_best_minus_baseline(tmp_path):
    spec = tmp_path / "published.yaml"
    spec.write_text(PUBLISHED)
    source, arms = load_published(spec)
    beside = beside_published(ablation_table(_runs(), "baseline", ["baseline", "smart"]), arms)
    sst = beside.set_index("task").loc["sst"]
    assert source == "test papers" and sst["paper Δ"] == pytest.approx(0.05)
    assert sst["our Δ"] == pytest.approx(0.03)
    differences = [0.02, 0.03, 0.04]
    assert sst["p"] == pytest.approx(stats.ttest_1samp(differences, 0.0).pvalue)
    half = stats.t.ppf(0.975, 2) * stats.sem(differences)
    assert sst["our Δ ±"] == pytest.approx(half) and sst["n"] == 3
    verdicts = beside.set_index("task")["verdict"].to_dict()
    # SST: both up; Quora: both down (ours by 0.05 on every seed); STS: the paper's Δ is 0.
    assert verdicts == {"sst": "agrees", "para": "agrees", "sts": "unresolved"}
    assert math.isnan(sst["p adj"])  # a table without the study's adjusted p (an older report)


def test_the_adjusted_p_decides_when_the_study_table_has_it(tmp_path):
    spec = tmp_path / "published.yaml"
    spec.write_text(PUBLISHED)
    _, arms = load_published(spec)
    table = ablation_table(_runs(), "baseline", ["baseline", "smart"])
    table["Δ dev/sst_acc p adj"] = [math.nan, 0.2]  # many arms: no longer significant
    sst = beside_published(table, arms).set_index("task").loc["sst"]
    assert sst["p adj"] == 0.2 and sst["verdict"] == "unresolved"
    table["Δ dev/sst_acc p adj"] = [math.nan, 0.01]
    assert beside_published(table, arms).set_index("task").loc["sst", "verdict"] == "agrees"


@pytest.mark.parametrize(
    ("paper", "ours", "half", "p_adj", "expected"),
    [
        (0.1, 0.05, 0.01, math.nan, "agrees"),
        (-0.1, -0.05, 0.01, math.nan, "agrees"),
        (0.1, -0.05, 0.01, math.nan, "opposite"),
        (0.1, 0.05, 0.06, math.nan, "unresolved"),
        (0.1, 0.05, math.nan, math.nan, "unresolved"),
        (0.0, 0.05, 0.01, math.nan, "unresolved"),
        (0.1, 0.05, 0.01, 0.06, "unresolved"),  # the interval alone would say agrees
        (0.1, -0.05, 0.06, 0.04, "opposite"),  # the adjusted p decides, not the interval
    ],
)
def test_verdict(paper: float, ours: float, half: float, p_adj: float, expected: str) -> None:
    assert verdict(paper, ours, half, p_adj) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("arms: {}", "non-empty 'arms'"),
        ("arms: {a: {paper: p, split: dev, best: {row: r, sst: 1, para: 1, sts: 1}}}",
         r"arms\.a\.baseline: missing"),
        ("arms: {a: {paper: p, split: dev, baseline: {row: r, sst: 1, para: 1, sts: x},"
         " best: {row: r, sst: 1, para: 1, sts: 1}}}",
         r"arms\.a\.baseline\.sts: expected a number"),
        ("arms: [", "cannot read it"),
    ],
)  # fmt: skip
def test_bad_files_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(PublishedError, match=needle):
        load_published(spec)


def test_write_published_refuses_arms_the_study_lacks_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "published.yaml"
    spec.write_text(PUBLISHED.replace("  smart:", "  missing_arm:"))
    sweep = tmp_path / "study"
    sweep.mkdir()
    table = ablation_table(_runs(), "baseline", ["baseline", "smart"])
    table.to_parquet(sweep / "ablation.parquet")
    with pytest.raises(PublishedError, match=r"\['missing_arm'\] are not arms of study study"):
        write_published(sweep, spec)
    assert not (sweep / "published.md").exists()
    spec.write_text(PUBLISHED)
    text = write_published(sweep, spec).read_text()
    assert "| smart | P1 | SST acc | +0.050 | +0.0300 ± " in text
    assert "- smart: best (P1:12) − base (P1:10)" in text


def test_shipped_seed_reports_file_names_the_seed_study_arms() -> None:
    from orchestrator.space.schema import load_space

    _, arms = load_published(REPO / "docs" / "seed_reports.yaml")
    study = load_space(REPO / "search_spaces" / "seed_systems_cpu.yaml").study
    assert study is not None
    assert [a.arm for a in arms] == [a.name for a in study.arms if a.name != study.baseline]


def test_a_sweep_without_a_study_table_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "published.yaml"
    spec.write_text(PUBLISHED)
    with pytest.raises(PublishedError, match=r"no ablation\.parquet; --published needs a study"):
        write_published(tmp_path, spec)
    pd.DataFrame().to_parquet(tmp_path / "ablation.parquet")  # the report before any run ended
    with pytest.raises(PublishedError, match="no paired differences yet"):
        write_published(tmp_path, spec)
    runs = _runs()
    only_smart = ablation_table(runs[runs["arm"] == "smart"], "baseline", ["baseline", "smart"])
    only_smart.to_parquet(tmp_path / "ablation.parquet")  # the baseline has no run: no Δ
    with pytest.raises(PublishedError, match="no paired differences yet"):
        write_published(tmp_path, spec)
