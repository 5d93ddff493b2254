"""Corrected tests and a verdict per arm of a study, against its baseline.

For each table metric the non-baseline arms' paired t-tests are one family: their p-values are
Holm-adjusted (family-wise error; `correction: bh` for Benjamini-Hochberg's false discovery rate).
On the study's metric an optional equivalence margin (`equivalence: 0.005`) adds two one-sided
paired t-tests (TOST) per arm, adjusted across the arms as a family of their own. The verdict:

- `equivalent`: the adjusted TOST p <= α — the difference, real or not, lies inside the margin the
  study declared not to matter (this wins over a significant but smaller-than-margin difference);
- `better` / `worse`: the adjusted p <= α, by the sign of Δ (every table metric is better high);
- `unresolved`: neither, at this n.

Per arm and metric also: the observed paired SD and n, the minimum effect a two-sided paired t-test
at α detects with 80% power from them (MDE80, noncentral t), and the pairs it would take to detect
the margin (without one: the observed |Δ|) with 80% power. Both at the uncorrected α: with k arms
a Holm test needs up to α / k, so they are lower bounds. Pure numpy / scipy / pandas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.config import ConfigError
from model.evaluate import OVERALL
from orchestrator.ablation.arm_table import (
    CORRECTION_LABELS,
    LABELS,
    TABLE_METRICS,
    scores_by_seed,
    shared_seed_scores,
)
from orchestrator.contract import arm_metric, arm_verdict_tag
from orchestrator.stats import (
    CORRECTIONS,
    adjust_pvalues,
    min_detectable_effect,
    paired_t_tests,
    seeds_for_power,
    tost_pvalues,
)

ALPHA = 0.05
BETTER, WORSE, EQUIVALENT, UNRESOLVED = "better", "worse", "equivalent", "unresolved"
VERDICTS: tuple[str, ...] = (BETTER, WORSE, EQUIVALENT, UNRESOLVED)
# Per arm and metric `m`, the columns `with_verdicts` adds (`Δ m p equiv*`: the study's metric).
STAT_COLUMNS = ("sd", "p adj", "p equiv", "p equiv adj", "MDE80", "seeds needed")


@dataclass(frozen=True)
class VerdictRule:
    """How a study's arms are judged: α, the correction across arms, the optional equivalence
    margin and the table metric it applies to (the study's metric)."""

    alpha: float = ALPHA
    correction: str = "holm"
    equivalence: float | None = None
    metric: str = OVERALL

    def __post_init__(self) -> None:
        check_judging(self.alpha, self.correction, self.equivalence)
        if self.metric not in TABLE_METRICS:
            raise ConfigError(f"metric: {self.metric!r} is not a table metric")


def check_judging(alpha: float, correction: str, equivalence: float | None) -> None:
    """ConfigError naming the key when α, the correction or the equivalence margin is invalid
    (shared by a table's VerdictRule and a race's RacingDesign)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha: expected 0 < alpha < 1, got {alpha}")
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction: expected one of {', '.join(CORRECTIONS)}")
    if equivalence is not None and not equivalence > 0:
        raise ConfigError(f"equivalence: expected a margin > 0, got {equivalence}")


def table_metric(study_metric: str) -> str:
    """The table metric the study ranks on: its `metric:` on dev (`selection/overall` is
    reported as `dev/overall`), or dev/overall when the table has no such column."""
    name = "dev/" + study_metric.split("/", 1)[-1]
    return name if name in TABLE_METRICS else OVERALL


def classify_differences(delta: Any, p_adjusted: Any, p_equivalent: Any, alpha: float) -> Any:
    """The verdict of each entry (element-wise over arrays): `equivalent` where the adjusted TOST
    p <= alpha, else `better` / `worse` by the sign of Δ where the adjusted p <= alpha, else
    `unresolved` (NaN p-values decide nothing)."""
    delta, p, p_eq = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (delta, p_adjusted, p_equivalent))
    )
    out = np.full(delta.shape, UNRESOLVED, dtype=object)
    significant = np.nan_to_num(p, nan=1.0) <= alpha
    out[significant & (delta > 0)] = BETTER
    out[significant & (delta < 0)] = WORSE
    out[np.nan_to_num(p_eq, nan=1.0) <= alpha] = EQUIVALENT
    return out


def with_verdicts(
    table: pd.DataFrame, runs: pd.DataFrame, baseline: str, rule: VerdictRule
) -> pd.DataFrame:
    """`arm_table.ablation_table`'s table with, per metric `m`, the columns `Δ m <stat>` of
    STAT_COLUMNS and `m verdict`, and `verdict` (the study's metric); the baseline's row holds
    NaN and "", and `verdict p`, the adjusted p that decided it. Unchanged when the baseline
    has no run (no Δ to test)."""
    if table.empty or f"Δ {OVERALL}" not in table.columns:
        return table
    table = table.copy()
    groups = {str(arm): group for arm, group in runs.groupby("arm")}
    for metric in TABLE_METRICS:
        base = scores_by_seed(groups[baseline], metric)
        diffs = [
            np.array([]) if arm == baseline else np.subtract(
                *shared_seed_scores(scores_by_seed(groups[arm], metric), base)
            )
            for arm in table["arm"]
        ]  # fmt: skip
        margin = rule.equivalence if metric == rule.metric else None
        is_base = (table["arm"] == baseline).to_numpy()
        for column, values in _family(diffs, is_base, margin, rule).items():
            table[column.format(m=metric)] = values
    table["verdict"] = table[f"{rule.metric} verdict"]
    # The adjusted p that decided it: TOST's for `equivalent`, else the difference test's.
    decided = table[f"Δ {rule.metric} p adj"]
    if rule.equivalence is not None:
        tost = table[f"Δ {rule.metric} p equiv adj"]
        decided = decided.where(table["verdict"] != EQUIVALENT, tost)
    table["verdict p"] = decided
    return table


def _family(
    diffs: list[np.ndarray], is_base: np.ndarray, margin: float | None, rule: VerdictRule
) -> dict[str, Any]:
    """One metric's columns for the arms' paired differences (the baseline's row: an empty array,
    no verdict; another arm's without pairs: `unresolved`)."""
    results = [paired_t_tests(d) if len(d) else (math.nan,) * 3 for d in diffs]
    mean, sd, p = (np.array([float(r[i]) for r in results]) for i in range(3))
    n = np.array([len(d) for d in diffs])
    p_equiv = np.array([float(tost_pvalues(d, margin)) if margin and len(d) else math.nan
                        for d in diffs])  # fmt: skip
    p_adj = adjust_pvalues(p, rule.correction)
    p_equiv_adj = adjust_pvalues(p_equiv, rule.correction)
    verdict = classify_differences(mean, p_adj, p_equiv_adj, rule.alpha)
    columns: dict[str, Any] = {
        "Δ {m} sd": sd,
        "Δ {m} p adj": p_adj,
        "Δ {m} MDE80": [
            min_detectable_effect(s, k, rule.alpha) for s, k in zip(sd, n, strict=True)
        ],
        "Δ {m} seeds needed": [
            seeds_for_power(margin or abs(x), s, rule.alpha) for x, s in zip(mean, sd, strict=True)
        ],
        "{m} verdict": np.where(is_base, "", verdict),
    }
    if margin is not None:
        columns.update({"Δ {m} p equiv": p_equiv, "Δ {m} p equiv adj": p_equiv_adj})
    return columns


def verdict_metrics(table: pd.DataFrame, baseline: str) -> dict[str, float]:
    """Each non-baseline arm's finite Δ and stats per metric `m`, named `arm/<arm>/<m>/<stat>`
    (delta, sd, p_adj, p_equiv_adj, mde80, seeds_needed, ...), for the study's parent run."""
    out: dict[str, float] = {}
    if "verdict" not in table.columns:
        return out
    for _, row in table[table["arm"] != baseline].iterrows():
        for metric in TABLE_METRICS:
            for stat in ("", *STAT_COLUMNS):
                value = row.get(f"Δ {metric} {stat}".rstrip(), math.nan)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    name = stat.replace(" ", "_").lower() or "delta"
                    out[arm_metric(str(row["arm"]), f"{metric}/{name}")] = float(value)
    return out


def verdict_tags(table: pd.DataFrame, baseline: str) -> dict[str, str]:
    """Each non-baseline arm's verdict on the study's metric, as the parent run's tags (tags, not
    params: a later report, after more runs, may change a verdict)."""
    if "verdict" not in table.columns:
        return {}
    rows = table[table["arm"] != baseline]
    return {arm_verdict_tag(str(a)): str(v) for a, v in rows[["arm", "verdict"]].values}


def verdicts_markdown(table: pd.DataFrame, baseline: str, rule: VerdictRule) -> list[str]:
    """The verdicts section of ablation.md: one row per non-baseline arm, the study's metric in
    full (Δ, p, adjusted p, verdict, paired SD, n, MDE80, seeds needed), then each other metric's
    verdict with its adjusted p."""
    if "verdict" not in table.columns:
        return []
    label, m = CORRECTION_LABELS[rule.correction], rule.metric
    others = [metric for metric in TABLE_METRICS if metric != m]
    margin = rule.equivalence
    head = ["arm", f"Δ {LABELS[m]}", "p", f"p ({label})"]
    head += [f"p equiv. ({label})"] if margin else []
    head += ["verdict", "paired SD", "n", "MDE80", "seeds needed", *(LABELS[o] for o in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table[table["arm"] != baseline].iterrows():
        cells = [str(row["arm"]), _num(row[f"Δ {m}"], "+.4f"), _num(row[f"Δ {m} p"], ".3f")]
        cells += [_num(row[f"Δ {m} p adj"], ".3f")]
        cells += [_num(row[f"Δ {m} p equiv adj"], ".3f")] if margin else []
        cells += [f"**{row['verdict']}**", _num(row[f"Δ {m} sd"], ".4f"), str(row[f"Δ {m} pairs"])]
        cells += [_num(row[f"Δ {m} MDE80"], ".4f"), _seeds(row[f"Δ {m} seeds needed"])]
        cells += [f"{row[f'{o} verdict']} ({_num(row[f'Δ {o} p adj'], '.3f')})" for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    within = f"; equivalent: TOST within ±{margin:g}, {label}-adjusted too" if margin else ""
    needed = f"the margin ±{margin:g}" if margin else "the observed |Δ|"
    note = (
        f"On {m} against `{baseline}`: paired t-tests {label}-adjusted across the "
        f"{len(lines) - 2} arms (each metric a family of its own), α = {rule.alpha:g}{within}. "
        f"MDE80: the smallest |Δ| a two-sided paired t-test at α detects with 80% power from "
        f"this n and paired SD; seeds needed: pairs for 80% power at {needed} (uncorrected α, a "
        f"lower bound). Other metrics: verdict ({label}-adjusted p)."
    )
    return [f"## Verdicts against `{baseline}`", "", *lines, "", note, ""]


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) and math.isfinite(value) else "–"


def _seeds(value: float) -> str:
    if math.isinf(value):
        return "> 1000"
    return "–" if math.isnan(value) else f"{value:.0f}"
