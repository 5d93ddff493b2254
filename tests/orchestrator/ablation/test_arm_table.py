"""The ablation table's arithmetic against scipy on fixed numbers, and its rendering."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.ablation.arm_table import (
    TABLE_METRICS,
    ablation_table,
    arm_table_latex,
    arm_table_markdown,
    paired_delta,
    t_interval,
)

BASE = {0: 0.61, 1: 0.64, 2: 0.60}
SMART = {0: 0.63, 1: 0.65, 2: 0.64}


def test_t_interval_matches_scipy():
    values = [0.61, 0.64, 0.60, 0.66]
    n, mean, sem = len(values), np.mean(values), stats.sem(values)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    got = t_interval(values)
    assert got.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert got.mean - got.half_width == pytest.approx(low, abs=1e-12)
    assert got.mean + got.half_width == pytest.approx(high, abs=1e-12)
    assert got.n == 4


def test_t_interval_of_one_value_has_no_width_and_nan_is_ignored():
    assert t_interval([0.5]).half_width != t_interval([0.5]).half_width  # NaN
    assert t_interval([0.5, math.nan, 0.7]).n == 2


def test_paired_delta_is_scipys_paired_t_test():
    got = paired_delta(SMART, BASE)
    a, b = np.array([SMART[s] for s in (0, 1, 2)]), np.array([BASE[s] for s in (0, 1, 2)])
    diff = a - b
    low, high = stats.t.interval(0.95, 2, loc=diff.mean(), scale=stats.sem(diff))
    assert got.mean == pytest.approx(diff.mean(), abs=1e-12)
    assert got.mean - got.half_width == pytest.approx(low, abs=1e-12)
    assert got.mean + got.half_width == pytest.approx(high, abs=1e-12)
    assert got.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-12)
    assert got.pairs == 3


def test_paired_delta_uses_only_the_shared_seeds():
    got = paired_delta({0: 0.7, 1: 0.8, 5: 0.1}, {0: 0.6, 1: 0.6, 2: 0.9})
    assert got.pairs == 2
    assert got.mean == pytest.approx(0.15)
    # The unpaired (Welch) difference of these means would be far from 0.15.
    assert got.p_value == pytest.approx(stats.ttest_rel([0.7, 0.8], [0.6, 0.6]).pvalue)


def test_paired_delta_of_identical_differences_has_no_p_value():
    got = paired_delta({0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.7})
    assert got.mean == pytest.approx(0.1) and got.half_width == pytest.approx(0.0)
    assert math.isnan(got.p_value)


def runs_frame() -> pd.DataFrame:
    rows = []
    for arm, scores, wall in (("baseline", BASE, 10.0), ("smart", SMART, 25.0)):
        for seed, overall in scores.items():
            row = {"arm": arm, "seed": seed, "wall_s": wall + seed}
            row.update({m: overall - 0.01 * i for i, m in enumerate(TABLE_METRICS[:-1])})
            row["dev/overall"] = overall
            rows.append(row)
    return pd.DataFrame(rows)


def test_ablation_table_rows_per_arm_with_paired_deltas_and_cost():
    table = ablation_table(runs_frame(), "baseline", ["baseline", "smart"]).set_index("arm")
    assert list(table.index) == ["baseline", "smart"]
    assert table.loc["smart", "dev/overall"] == pytest.approx(np.mean(list(SMART.values())))
    assert table.loc["smart", "dev/overall n"] == 3
    expected = paired_delta(SMART, BASE)
    assert table.loc["smart", "Δ dev/overall"] == pytest.approx(expected.mean)
    assert table.loc["smart", "Δ dev/overall p"] == pytest.approx(expected.p_value)
    assert table.loc["baseline", "Δ dev/overall"] == pytest.approx(0.0)
    assert table.loc["smart", "cost ×"] == pytest.approx(26.0 / 11.0)


def test_markdown_and_latex_name_the_baseline_and_show_intervals():
    table = ablation_table(runs_frame(), "baseline", ["baseline", "smart"])
    markdown = arm_table_markdown(table, "baseline")
    smart_line = next(line for line in markdown.splitlines() if line.startswith("| smart "))
    delta = paired_delta(SMART, BASE)
    assert f"{delta.mean:+.4f} ± {delta.half_width:.4f} (p={delta.p_value:.3f})" in smart_line
    assert "| baseline (baseline) |" in markdown
    latex = arm_table_latex(table, "baseline")
    assert latex.count(r"\\") == 3 and r"\toprule" in latex and "\\pm" in latex


def test_a_missing_baseline_leaves_the_deltas_empty_instead_of_failing():
    runs = runs_frame()
    table = ablation_table(runs[runs["arm"] == "smart"], "baseline", ["baseline", "smart"])
    markdown = arm_table_markdown(table, "baseline")
    smart_line = next(line for line in markdown.splitlines() if line.startswith("| smart "))
    assert smart_line.count("| – ") == len(TABLE_METRICS)


def test_a_repeated_seed_counts_once_in_means_and_deltas():
    runs = runs_frame()
    again = runs[(runs["arm"] == "smart") & (runs["seed"] == 0)].assign(**{"dev/overall": 0.69})
    table = ablation_table(pd.concat([runs, again]), "baseline", ["baseline", "smart"]).set_index(
        "arm"
    )
    smart = {**SMART, 0: (SMART[0] + 0.69) / 2}
    assert table.loc["smart", "seeds"] == 3 and table.loc["smart", "dev/overall n"] == 3
    assert table.loc["smart", "dev/overall"] == pytest.approx(np.mean(list(smart.values())))
    assert table.loc["smart", "Δ dev/overall"] == pytest.approx(paired_delta(smart, BASE).mean)
