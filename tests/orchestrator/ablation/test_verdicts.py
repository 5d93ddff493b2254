"""A study table's corrected tests and verdicts on fixed numbers: Holm / BH across arms against a
reference computation and scipy, TOST against two one-sided scipy t-tests, power columns, the
verdict rule's cases, and their markdown, LaTeX and MLflow forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from model.config import ConfigError
from model.evaluate import METRIC_NAMES, OVERALL
from orchestrator.ablation.arm_table import TABLE_METRICS, ablation_table, arm_table_latex
from orchestrator.ablation.verdicts import (
    BETTER,
    EQUIVALENT,
    UNRESOLVED,
    WORSE,
    VerdictRule,
    classify_differences,
    table_metric,
    verdict_metrics,
    verdict_tags,
    verdicts_markdown,
    with_verdicts,
)
from orchestrator.stats import min_detectable_effect, seeds_for_power

SEEDS = (0, 1, 2, 3, 4)
BASE = np.array([0.700, 0.704, 0.698, 0.702, 0.706])
DIFFS = {  # dev/overall, arm - baseline per seed
    "up": np.array([0.020, 0.024, 0.018, 0.022, 0.021]),
    "same": np.array([0.0005, -0.0004, 0.0002, -0.0003, 0.0001]),
    "noisy": np.array([0.010, -0.008, 0.015, -0.012, 0.004]),
    "down": np.array([-0.030, -0.028, -0.033, -0.029, -0.031]),
}
ARMS = ("baseline", *DIFFS)
SST = METRIC_NAMES["sst"]


def runs() -> pd.DataFrame:
    """One row per arm × seed; each task metric moves with the arm's overall difference, scaled
    by the task's position, plus a seed-dependent wobble of its own."""
    rows = []
    for arm in ARMS:
        diffs = DIFFS.get(arm, np.zeros(len(SEEDS)))
        for i, seed in enumerate(SEEDS):
            row = {"arm": arm, "seed": seed, "wall_s": 10.0, OVERALL: BASE[i] + diffs[i]}
            for j, metric in enumerate(TABLE_METRICS[:-1]):
                wobble = 0.0 if arm == "baseline" else 0.002 * ((i * (j + 2)) % 3)
                row[metric] = 0.1 * j + BASE[i] - 0.2 + (j + 1) * diffs[i] + wobble
            rows.append(row)
    return pd.DataFrame(rows)


def judged(**rule: object) -> pd.DataFrame:
    frame = runs()
    table = ablation_table(frame, "baseline", ARMS)
    return with_verdicts(table, frame, "baseline", VerdictRule(**rule)).set_index("arm")  # type: ignore[arg-type]


def holm_reference(p: list[float]) -> list[float]:
    """Holm's step-down written out: the i-th smallest times (m - i), running maximum."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def scipy_p(metric: str, frame: pd.DataFrame) -> list[float]:
    base = frame[frame["arm"] == "baseline"].sort_values("seed")[metric].to_numpy()
    return [
        stats.ttest_rel(frame[frame["arm"] == arm].sort_values("seed")[metric], base).pvalue
        for arm in DIFFS
    ]


def test_each_metric_is_a_holm_family_across_the_non_baseline_arms():
    table, frame = judged(), runs()
    for metric in TABLE_METRICS:
        expected = holm_reference(scipy_p(metric, frame))
        got = table.loc[list(DIFFS), f"Δ {metric} p adj"].tolist()
        assert got == pytest.approx(expected, rel=1e-9), metric
    assert math.isnan(table.loc["baseline", f"Δ {OVERALL} p adj"])
    assert table.loc["baseline", "verdict"] == ""


def test_bh_is_scipys_false_discovery_control():
    table, frame = judged(correction="bh"), runs()
    expected = stats.false_discovery_control(scipy_p(SST, frame), method="bh")
    np.testing.assert_allclose(table.loc[list(DIFFS), f"Δ {SST} p adj"], expected, rtol=1e-9)


def test_verdicts_tost_and_power_with_a_margin():
    table = judged(equivalence=0.005)
    assert table["verdict"].to_dict() == {
        "baseline": "", "up": BETTER, "same": EQUIVALENT, "noisy": UNRESOLVED, "down": WORSE,
    }  # fmt: skip
    tost = []
    for arm, d in DIFFS.items():
        lower = stats.ttest_1samp(d, -0.005, alternative="greater").pvalue
        upper = stats.ttest_1samp(d, 0.005, alternative="less").pvalue
        tost.append(max(lower, upper))
        assert table.loc[arm, f"Δ {OVERALL} p equiv"] == pytest.approx(max(lower, upper))
        sd = d.std(ddof=1)
        assert table.loc[arm, f"Δ {OVERALL} sd"] == pytest.approx(sd, rel=1e-9)
        assert table.loc[arm, f"Δ {OVERALL} MDE80"] == pytest.approx(min_detectable_effect(sd, 5))
        assert table.loc[arm, f"Δ {OVERALL} seeds needed"] == seeds_for_power(0.005, sd)
    got = table.loc[list(DIFFS), f"Δ {OVERALL} p equiv adj"].tolist()
    assert got == pytest.approx(holm_reference(tost), rel=1e-9)
    # The margin is on the study's metric only: the task metrics get no TOST.
    assert f"Δ {SST} p equiv" not in table.columns


def test_without_a_margin_nothing_is_equivalent_and_seeds_target_the_observed_delta():
    table = judged()
    assert table.loc["same", "verdict"] == UNRESOLVED and table.loc["up", "verdict"] == BETTER
    assert f"Δ {OVERALL} p equiv" not in table.columns
    sd, delta = DIFFS["noisy"].std(ddof=1), DIFFS["noisy"].mean()
    assert table.loc["noisy", f"Δ {OVERALL} seeds needed"] == seeds_for_power(abs(delta), sd)


def test_the_study_metric_decides_the_verdict_column():
    table = judged(metric=SST)
    assert table["verdict"].tolist() == table[f"{SST} verdict"].tolist()
    assert table_metric("selection/overall") == OVERALL
    assert table_metric("selection/sst_acc") == SST and table_metric("train/loss") == OVERALL


@pytest.mark.parametrize(
    ("delta", "p", "p_equivalent", "verdict"),
    [
        (0.02, 0.01, math.nan, BETTER),
        (-0.02, 0.05, math.nan, WORSE),  # p <= α counts
        (0.02, 0.051, math.nan, UNRESOLVED),
        (0.001, 0.01, 0.02, EQUIVALENT),  # inside the margin: equivalent, significant or not
        (0.001, 0.4, 0.3, UNRESOLVED),
        (0.02, math.nan, math.nan, UNRESOLVED),
        (0.0, 0.0, math.nan, UNRESOLVED),  # no sign, no direction
    ],
)
def test_verdict_rule(delta, p, p_equivalent, verdict):
    assert classify_differences(delta, p, p_equivalent, 0.05) == verdict


def test_verdicts_apply_element_wise():
    got = classify_differences([0.1, -0.1, 0.1], [0.01, 0.01, 0.2], [np.nan, np.nan, 0.01], 0.05)
    assert got.tolist() == [BETTER, WORSE, EQUIVALENT]


@pytest.mark.parametrize(
    ("rule", "key"),
    [({"correction": "bonferroni"}, "correction"), ({"equivalence": 0.0}, "equivalence"),
     ({"alpha": 1.0}, "alpha"), ({"metric": "train/loss"}, "metric")],
)  # fmt: skip
def test_a_bad_rule_names_its_key(rule, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        VerdictRule(**rule)


def test_markdown_latex_and_mlflow_forms():
    rule = VerdictRule(equivalence=0.005)
    frame = runs()
    table = with_verdicts(ablation_table(frame, "baseline", ARMS), frame, "baseline", rule)
    markdown = "\n".join(verdicts_markdown(table, "baseline", rule))
    assert "## Verdicts against `baseline`" in markdown
    head = "| arm | Δ overall | p | p (Holm) | p equiv. (Holm) | verdict | paired SD | n | MDE80 |"
    assert head in markdown
    up = next(line for line in markdown.splitlines() if line.startswith("| up "))
    assert up.startswith(f"| up | {DIFFS['up'].mean():+.4f} | ") and "| **better** |" in up
    assert "equivalent: TOST within ±0.005, Holm-adjusted too" in markdown
    bh = VerdictRule(correction="bh")
    assert "| p (BH) |" in "\n".join(verdicts_markdown(table, "baseline", bh))

    latex = arm_table_latex(table, "baseline")
    row = next(line for line in latex.splitlines() if line.startswith("up "))
    p_adj = table.set_index("arm").loc["up", f"Δ {OVERALL} p adj"]
    assert row.endswith(rf"better ($p_{{\mathrm{{Holm}}}}={p_adj:.2f}$) \\")
    assert latex.count(r"\\") == 1 + len(ARMS) and "verdicts from Holm-adjusted" in latex
    same = table.set_index("arm").loc["same"]  # equivalent: TOST's adjusted p decided it
    assert same["verdict p"] == same[f"Δ {OVERALL} p equiv adj"] < 0.05
    assert same[f"Δ {OVERALL} p adj"] > 0.05

    metrics = verdict_metrics(table, "baseline")
    assert metrics[f"arm/up/{OVERALL}/p_adj"] == pytest.approx(p_adj)
    assert metrics[f"arm/up/{OVERALL}/delta"] == pytest.approx(DIFFS["up"].mean())
    assert f"arm/same/{OVERALL}/p_equiv_adj" in metrics and f"arm/up/{SST}/mde80" in metrics
    assert not any(key.startswith("arm/baseline/") for key in metrics)
    assert verdict_tags(table, "baseline") == {
        "arm/up/verdict": BETTER, "arm/same/verdict": EQUIVALENT,
        "arm/noisy/verdict": UNRESOLVED, "arm/down/verdict": WORSE,
    }  # fmt: skip


def test_an_arm_without_pairs_is_unresolved_not_blank():
    frame = runs()
    frame.loc[frame["arm"] == "up", "seed"] += 100  # no seed shared with the baseline
    table = ablation_table(frame, "baseline", ARMS)
    table = with_verdicts(table, frame, "baseline", VerdictRule()).set_index("arm")
    assert table.loc["up", "verdict"] == UNRESOLVED and table.loc["baseline", "verdict"] == ""
    assert math.isnan(table.loc["up", f"Δ {OVERALL} p adj"])
    # The other three arms are a family of three: `up` ran no test.
    p = dict(zip(DIFFS, scipy_p(OVERALL, runs()), strict=True))
    expected = holm_reference([p["same"], p["noisy"], p["down"]])
    got = table.loc[["same", "noisy", "down"], f"Δ {OVERALL} p adj"].tolist()
    assert got == pytest.approx(expected)


def test_a_table_without_baseline_runs_is_left_as_it_is():
    frame = runs()
    frame = frame[frame["arm"] != "baseline"]
    table = ablation_table(frame, "baseline", ARMS)
    assert with_verdicts(table, frame, "baseline", VerdictRule()).equals(table)
