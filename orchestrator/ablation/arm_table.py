"""The ablation table of a study: one row per arm, each task's dev score as mean ± 95% t-interval
over seeds, and the paired difference to the baseline arm over the seeds both ran.

Input is one row per confirm (phase 2) run: `arm`, `seed`, `wall_s` and the dev metrics.
Rendered as `ablation.md`, `ablation.tex` (a booktabs table that drops into a report) and
`ablation.parquet`.
Pure pandas and scipy: the tests check every number against scipy on fixed inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from model.evaluate import METRIC_NAMES, OVERALL
from orchestrator.stats import mean_ci, paired_difference

TABLE_METRICS: tuple[str, ...] = (*METRIC_NAMES.values(), OVERALL)
LABELS = {
    METRIC_NAMES["sst"]: "SST acc",
    METRIC_NAMES["para"]: "Quora acc",
    METRIC_NAMES["sts"]: "STS r",
    OVERALL: "overall",
}
CONFIDENCE = 0.95
CORRECTION_LABELS = {"holm": "Holm", "bh": "BH"}  # stats.CORRECTIONS as a table shows them


@dataclass(frozen=True)
class Interval:
    """A mean with the half-width of its t-interval (NaN below two values) and n."""

    mean: float
    half_width: float
    n: int


@dataclass(frozen=True)
class PairedDelta:
    """Mean of `arm - baseline` over shared seeds, its t-interval half-width, the paired t-test's
    two-sided p-value (NaN below two pairs or when every difference is equal) and the pairs."""

    mean: float
    half_width: float
    p_value: float
    pairs: int


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s / √n of the finite values (see `stats.mean_ci`)."""
    return Interval(*mean_ci(values, confidence))


def shared_seed_scores(
    arm: dict[int, float], baseline: dict[int, float]
) -> tuple[list[float], list[float]]:
    """Two arms' scores over the seeds both have a finite score for, in seed order: the pairs."""
    seeds = sorted(s for s in set(arm) & set(baseline) if math.isfinite(arm[s] - baseline[s]))
    return [arm[s] for s in seeds], [baseline[s] for s in seeds]


def paired_delta(
    arm: dict[int, float], baseline: dict[int, float], confidence: float = CONFIDENCE
) -> PairedDelta:
    """The paired difference of two arms' scores keyed by seed, over the seeds both have."""
    return PairedDelta(*paired_difference(*shared_seed_scores(arm, baseline), confidence))


def ablation_table(runs: pd.DataFrame, baseline: str, arm_order: Sequence[str]) -> pd.DataFrame:
    """One row per arm (in `arm_order`): per metric `<m>` mean, `<m> ±`, `<m> n`, and against
    the baseline `Δ <m>`, `Δ <m> ±`, `Δ <m> p`; then `wall_s` (mean per run) and `cost ×`."""
    by_arm = {arm: group for arm, group in runs.groupby("arm")}
    base = by_arm.get(baseline)
    base_wall = float(base["wall_s"].mean()) if base is not None else math.nan
    rows = []
    for arm in arm_order:
        group = by_arm.get(arm)
        if group is None:
            continue
        row: dict[str, object] = {"arm": arm, "seeds": group["seed"].nunique()}
        for metric in TABLE_METRICS:
            interval = t_interval(list(scores_by_seed(group, metric).values()))
            row.update({metric: interval.mean, f"{metric} ±": interval.half_width})
            row[f"{metric} n"] = interval.n
            if base is not None:
                delta = paired_delta(scores_by_seed(group, metric), scores_by_seed(base, metric))
                row.update({f"Δ {metric}": delta.mean, f"Δ {metric} ±": delta.half_width})
                row.update({f"Δ {metric} p": delta.p_value, f"Δ {metric} pairs": delta.pairs})
        wall = float(group["wall_s"].mean())
        row.update({"wall_s": wall, "cost ×": wall / base_wall if base_wall > 0 else math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def scores_by_seed(group: pd.DataFrame, metric: str) -> dict[int, float]:
    """An arm's score per seed; repeated runs of one seed are averaged, so they count once."""
    means = group.groupby("seed")[metric].mean()
    return {int(seed): float(value) for seed, value in means.items()}


def _pm(mean: float, half: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def _delta(row: pd.Series, metric: str) -> str:
    mean = row.get(f"Δ {metric}", math.nan)  # no Δ columns when the baseline has no run
    half, p = row.get(f"Δ {metric} ±", math.nan), row.get(f"Δ {metric} p", math.nan)
    if not math.isfinite(mean):
        return "–"
    text = f"{mean:+.4f}" + (f" ± {half:.4f}" if math.isfinite(half) else "")
    return text + (f" (p={p:.3f})" if math.isfinite(p) else "")


def arm_table_markdown(table: pd.DataFrame, baseline: str, *, split: str = "dev") -> str:
    """The table as markdown: scores (mean ± 95% CI, n), paired Δ vs baseline, cost."""
    head = ["arm", *(LABELS[m] for m in TABLE_METRICS), *(f"Δ {LABELS[m]}" for m in TABLE_METRICS)]
    lines = ["| " + " | ".join([*head, "s / run", "cost ×"]) + " |"]
    lines.append("|" + "---|" * (len(head) + 2))
    for _, row in table.iterrows():
        name = f"{row['arm']} (baseline)" if row["arm"] == baseline else str(row["arm"])
        scores = [f"{_pm(row[m], row[f'{m} ±'])} (n={row[f'{m} n']})" for m in TABLE_METRICS]
        deltas = ["–" if row["arm"] == baseline else _delta(row, m) for m in TABLE_METRICS]
        cost = [f"{row['wall_s']:.0f}", f"{row['cost ×']:.2f}"]
        lines.append("| " + " | ".join([name, *scores, *deltas, *cost]) + " |")
    note = (
        f"Scores on {split}, mean ± 95% t-interval over seeds (n runs). Δ: mean paired "
        f"difference to `{baseline}` over the seeds both arms ran, its 95% t-interval and the "
        "paired t-test's p-value. s / run: mean wall-clock per run; cost ×: relative to the "
        "baseline."
    )
    return "\n".join([*lines, "", note, ""])


def arm_table_latex(
    table: pd.DataFrame,
    baseline: str,
    *,
    split: str = "dev",
    metric: str = OVERALL,
    correction: str = "holm",
) -> str:
    """A booktabs `table` of scores (mean ± CI), Δ `metric` with its p-value and, when the table
    has them (`verdicts.with_verdicts`), each arm's verdict with its corrected p-value."""
    verdicts = "verdict" in table.columns
    label = CORRECTION_LABELS.get(correction, correction)
    cols = "l" + "c" * (len(TABLE_METRICS) + 1) + ("l" if verdicts else "")
    head = ["Arm", *(LABELS[m] for m in TABLE_METRICS), rf"$\Delta$ {LABELS[metric]}"]
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    lines += [" & ".join(head + (["Verdict"] if verdicts else [])) + r" \\", r"\midrule"]
    for _, row in table.iterrows():
        cells = [str(row["arm"]).replace("_", r"\_")]
        for m in TABLE_METRICS:
            mean, half = row[m], row[f"{m} ±"]
            cells.append(f"${mean:.3f}" + (rf" \pm {half:.3f}$" if math.isfinite(half) else "$"))
        delta = row.get(f"Δ {metric}", math.nan)
        if row["arm"] == baseline or not math.isfinite(delta):
            cells.append("--")
        else:
            p = row[f"Δ {metric} p"]
            cells.append(f"${delta:+.3f}$" + (f" ($p={p:.2f}$)" if math.isfinite(p) else ""))
        if verdicts:  # with the adjusted p that decided it (TOST's for `equivalent`)
            adjusted = row["verdict p"]
            shown = f" ($p_{{\\mathrm{{{label}}}}}={adjusted:.2f}$)"
            shown = shown if math.isfinite(adjusted) else ""
            cells.append("--" if not row["verdict"] else row["verdict"] + shown)
        lines.append(" & ".join(cells) + r" \\")
    seeds = int(table["seeds"].max()) if len(table) else 0
    escaped = baseline.replace("_", r"\_")
    caption = (
        f"Ablation on {split}: mean $\\pm$ 95\\% CI over {seeds} seeds; "
        f"$\\Delta$ is the paired difference to {escaped}"
        + (f"; verdicts from {label}-adjusted paired t-tests." if verdicts else ".")
    )
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""]
    return "\n".join(lines)
