"""A study's arm differences beside published ones: `orchestrator report STUDY --published F`.

F (YAML) names, per arm, the published system it reproduces and two rows of its paper's table,
the paper's baseline and its best system, each a score per task:

    source: ../shared/seeds                      # where the papers are (quoted in the table)
    arms:
      smarter_000:
        paper: "000 A SMARTer minBERT"
        split: dev
        baseline: {row: "Cross-Encoding (000:143)", sst: 0.480, para: 0.830, sts: 0.838}
        best: {row: "Cross-Encoding + PCGrad + SMART 2 (000:146)", sst: 0.500, para: 0.825,
               sts: 0.843}

`beside_published` puts the paper's Δ (best − baseline) per task next to the study's paired Δ of
that arm against the study's baseline (± 95% CI, n, p and the p adjusted across the study's arms,
from `ablation.parquet`), and a verdict: `agrees` when our difference is significant after the
adjustment with the paper's sign, `opposite` when with the other sign, else `unresolved` (and
when the paper's Δ is 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from model.atomic_write import write_text_atomic
from model.config import ConfigError, is_finite_number
from model.evaluate import METRIC_NAMES

TASKS = ("sst", "para", "sts")
TASK_LABELS = {"sst": "SST acc", "para": "Quora acc", "sts": "STS r"}
ALPHA = 0.05


class PublishedError(ConfigError):
    """The published-numbers file is unreadable or a field is missing or wrong."""


@dataclass(frozen=True)
class PublishedRow:
    row: str  # how the paper names the row, with where to find it
    scores: Mapping[str, float]  # task -> score


@dataclass(frozen=True)
class PublishedArm:
    arm: str
    paper: str
    split: str
    baseline: PublishedRow
    best: PublishedRow

    def delta(self, task: str) -> float:
        return self.best.scores[task] - self.baseline.scores[task]


def load_published(path: Path) -> tuple[str, list[PublishedArm]]:
    """(source, arms) from the YAML file; a bad field is a PublishedError naming it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise PublishedError(f"{path}: cannot read it ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("arms"), dict) or not raw["arms"]:
        raise PublishedError(f"{path}: expected a mapping with a non-empty 'arms' mapping")
    arms = [_arm(path, name, spec) for name, spec in raw["arms"].items()]
    return str(raw.get("source", "")), arms


def _arm(path: Path, name: str, spec: Any) -> PublishedArm:
    where = f"{path}: arms.{name}"
    if not isinstance(spec, dict):
        raise PublishedError(f"{where}: expected a mapping")
    for key in ("paper", "split", "baseline", "best"):
        if key not in spec:
            raise PublishedError(f"{where}.{key}: missing")
    rows = {key: _row(f"{where}.{key}", spec[key]) for key in ("baseline", "best")}
    return PublishedArm(name, str(spec["paper"]), str(spec["split"]), **rows)


def _row(where: str, spec: Any) -> PublishedRow:
    if not isinstance(spec, dict) or "row" not in spec:
        raise PublishedError(f"{where}: expected a mapping with 'row' and a score per task")
    scores = {}
    for task in TASKS:
        value = spec.get(task)
        if not isinstance(value, (int, float)) or not is_finite_number(value):
            raise PublishedError(f"{where}.{task}: expected a number, got {value!r}")
        scores[task] = float(value)
    return PublishedRow(str(spec["row"]), scores)


def verdict(paper: float, ours: float, half: float, p_adjusted: float = math.nan) -> str:
    """Whether our paired Δ supports the paper's Δ's direction. Significant: the study's
    multiplicity-adjusted p (when it has one) is at most ALPHA, else its interval holds no 0."""
    if not math.isfinite(ours) or paper == 0:
        return "unresolved"
    if math.isfinite(p_adjusted):
        significant = p_adjusted <= ALPHA
    else:
        significant = math.isfinite(half) and abs(ours) > half
    if not significant or ours == 0:
        return "unresolved"
    return "agrees" if (ours > 0) == (paper > 0) else "opposite"


def beside_published(table: pd.DataFrame, arms: list[PublishedArm]) -> pd.DataFrame:
    """One row per (published arm, task): the paper's Δ and ours, from `ablation.parquet`."""
    by_arm = {str(row["arm"]): row for _, row in table.iterrows()}
    rows = []
    for arm in arms:
        ours = by_arm.get(arm.arm)
        for task in TASKS:
            metric = METRIC_NAMES[task]
            mean, half, p, p_adj = (
                _number(ours, f"Δ {metric}{suffix}") for suffix in ("", " ±", " p", " p adj")
            )
            pairs = _number(ours, f"Δ {metric} pairs")
            n = int(pairs) if math.isfinite(pairs) else 0
            rows.append({
                "arm": arm.arm, "paper": arm.paper, "task": task,
                "paper Δ": arm.delta(task), "paper baseline": arm.baseline.row,
                "paper best": arm.best.row, "our Δ": mean, "our Δ ±": half, "p": p,
                "p adj": p_adj, "n": n, "verdict": verdict(arm.delta(task), mean, half, p_adj),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _number(row: pd.Series | None, column: str) -> float:
    """A number of the study's row, NaN when the row or the column (an older table) is absent."""
    if row is None or column not in row.index:
        return math.nan
    return float(row[column])


def published_markdown(beside: pd.DataFrame, source: str, study: str) -> str:
    """The table as markdown, one line per arm and task, then which rows each Δ comes from."""
    lines = [
        "| arm | paper | task | paper Δ | our Δ (95% CI) | n | p | p (adj.) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in beside.iterrows():
        ours = "–" if not math.isfinite(r["our Δ"]) else f"{r['our Δ']:+.4f}"
        if math.isfinite(r["our Δ ±"]):
            ours += f" ± {r['our Δ ±']:.4f}"
        p, p_adj = (f"{r[c]:.3f}" if math.isfinite(r[c]) else "–" for c in ("p", "p adj"))
        lines.append(
            f"| {r['arm']} | {r['paper']} | {TASK_LABELS[r['task']]} | {r['paper Δ']:+.3f} | "
            f"{ours} | {r['n']} | {p} | {p_adj} | {r['verdict']} |"
        )
    firsts = beside.drop_duplicates("arm").iterrows()
    cited = [f"- {r['arm']}: {r['paper best']} − {r['paper baseline']}" for _, r in firsts]
    note = (
        f"Paper Δ: the published best row minus the published baseline row ({source}). Our Δ: "
        f"study `{study}`'s mean paired difference of the arm to its baseline over n seeds, its "
        "95% t-interval, the paired t-test's p and that p adjusted across the study's arms "
        "(by the study's `correction:`, Holm unless it says bh). verdict: agrees / opposite "
        "when the adjusted p is at most 0.05 and our Δ has the paper's sign / the other sign, "
        "else unresolved."
    )
    return "\n".join([*lines, "", note, "", "Rows compared:", *cited, ""])


def write_published(sweep_dir: Path, published: Path) -> Path:
    """`published.md` in a study's report folder, from its `ablation.parquet` and `published`."""
    source, arms = load_published(published)
    table_file = sweep_dir / "ablation.parquet"
    if not table_file.is_file():
        raise PublishedError(f"{sweep_dir}: no ablation.parquet; --published needs a study")
    table = pd.read_parquet(table_file)
    if "arm" not in table.columns or f"Δ {METRIC_NAMES['sst']}" not in table.columns:
        raise PublishedError(
            f"{table_file}: no paired differences yet (no finished run of an arm and of the "
            "baseline); rerun the report when the study's runs have finished"
        )
    unknown = sorted({arm.arm for arm in arms} - set(table["arm"]))
    if unknown:
        raise PublishedError(f"{published}: {unknown} are not arms of study {sweep_dir.name}")
    out = sweep_dir / "published.md"
    markdown = published_markdown(beside_published(table, arms), source, sweep_dir.name)
    write_text_atomic(out, markdown)
    return out
