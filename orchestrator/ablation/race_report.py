"""A racing study's part of its report: how many seeds each arm ran, how its race ended (the
decision the driver recorded on the parent run after each look, `arm/<arm>/race`), and the rule
that made the decisions, with the bound it keeps on false verdicts.

Input is the parent run's tags and the confirm runs frame (`study_report.runs_frame`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd

from orchestrator.ablation.racing import CONTINUE, STOP_VERDICTS, RaceStop, RacingDesign
from orchestrator.ablation.study_info import StudyInfo
from orchestrator.ablation.verdicts import ALPHA, UNRESOLVED
from orchestrator.contract import RACE_EXTRA_ROUNDS_TAG, arm_race_tag

RACE_COLUMNS = ("seeds run", "race")


def tagged_race_stops(info: StudyInfo, tags: Mapping[str, str]) -> dict[str, RaceStop | None]:
    """Each arm's race as its tag says (None: the driver recorded no look for it yet)."""
    stops: dict[str, RaceStop | None] = {}
    for arm in info.arms:
        if arm == info.baseline:
            continue
        raw = tags.get(arm_race_tag(arm))
        try:
            record = json.loads(raw) if raw else None
            stops[arm] = RaceStop(**record) if record else None
        except (ValueError, TypeError):
            stops[arm] = None  # a hand-edited tag: shown as not judged
    return stops


def race_design_of(info: StudyInfo, tags: Mapping[str, str]) -> RacingDesign:
    """The race the study ran, with the rounds `--extend` added."""
    race = info.race or {}
    design = RacingDesign(
        int(race["min"]),
        int(race["max"]),
        int(race["step"]),
        ALPHA,
        info.rule.correction,
        info.rule.equivalence,
        futility=float(race.get("futility", 0.0)),
    )
    extra = tags.get(RACE_EXTRA_ROUNDS_TAG, "0")
    return design.extended(int(extra) if extra.isdigit() else 0)


def futility_sentence(futility: float) -> str:
    if not futility:
        return ""
    return (
        f" Before the last look an unresolved arm stops `stop-futile` when its conditional power"
        f" (the chance that the last look resolves it if its observed mean and SD hold) is below"
        f" {futility:g}: no verdict, so no false one."
    )


def race_bounds(info: StudyInfo) -> str:
    race = info.race or {}
    return f"min {race.get('min')}, max {race.get('max')}, step {race.get('step')}"


def seeds_per_arm(runs: pd.DataFrame) -> dict[str, int]:
    """Each arm's confirm runs, in any state."""
    return {str(arm): len(group) for arm, group in runs.groupby("arm")}


def with_race_columns(
    table: pd.DataFrame, stops: Mapping[str, RaceStop | None], runs: pd.DataFrame
) -> pd.DataFrame:
    """The table with `seeds run`, `race` (how the arm's race ended; the baseline: "") and
    `verdict` from the race: the fixed-sample tests beside it (`Δ … p adj`) were computed on
    however many seeds the race gave each arm, so they describe, and only the race's stop
    carries the error bound. An arm still racing, or stopped futile or at max: unresolved."""
    if table.empty:
        return table
    table = table.copy()
    ran = seeds_per_arm(runs)
    arms = [str(arm) for arm in table["arm"]]
    table["seeds run"] = [ran.get(arm, 0) for arm in arms]
    table["race"] = [_describe(stops.get(arm)) if arm in stops else "" for arm in arms]
    if "verdict" in table.columns:
        table["verdict"] = [
            _verdict(stops.get(arm)) if arm in stops else verdict
            for arm, verdict in zip(arms, table["verdict"], strict=True)
        ]
    return table


def _verdict(stop: RaceStop | None) -> str:
    return STOP_VERDICTS.get(stop.decision, UNRESOLVED) if stop is not None else UNRESOLVED


def _describe(stop: RaceStop | None) -> str:
    return "not judged yet" if stop is None else stop.describe()


def race_markdown(
    info: StudyInfo,
    stops: Mapping[str, RaceStop | None],
    runs: pd.DataFrame,
    tags: Mapping[str, str],
) -> list[str]:
    """The race's section: per arm its seeds and how it stopped, and the rule."""
    design = race_design_of(info, tags)
    ran = seeds_per_arm(runs)
    looks = ", ".join(str(n) for n in design.looks)
    spread = design.spend_seeds or design.max_seeds
    lines = [
        "## Race",
        "",
        f"Seeds in rounds ({race_bounds(info)}; looks at {looks} seeds per arm). At each look "
        f"every arm still racing is tested against `{info.baseline}` on `{info.rule.metric}` "
        f"(paired t-test{', and TOST within the margin' if info.rule.equivalence else ''}, "
        f"{info.rule.correction} across the arms) at level α·(seeds added)/{spread}"
        f" with α = {ALPHA}: Bonferroni over the looks with linear alpha spending, so the chance "
        f"of any false better / worse verdict stays <= {design.error_bound:.3g} however many "
        "looks it takes"
        + (f" (of a false equivalent one, another {design.error_bound:.3g})"
           if info.rule.equivalence else "")
        + ". The `verdict` column above is each arm's race stop; the p-values beside it are "
        "fixed-sample tests on the seeds the race gave the arm: they describe, the race decides."
        + futility_sentence(design.futility),
        "",
        "| arm | seeds run | race |",
        "|---|---:|---|",
        f"| `{info.baseline}` (baseline) | {ran.get(info.baseline, 0)} | runs every seed any "
        "arm runs |",
    ]
    for arm, stop in stops.items():
        lines.append(f"| `{arm}` | {ran.get(arm, 0)} | {_describe(stop)} |")
    racing = [arm for arm, stop in stops.items() if stop is None or stop.decision == CONTINUE]
    if racing:
        lines += ["", f"Still racing: {', '.join(racing)}; `--resume` runs the next round."]
    extra = design.max_seeds - int((info.race or {}).get("max", design.max_seeds))
    if extra:
        grown = f"the bound grew to {design.error_bound:.3g}"
        extended = f"`--extend` raised the max by {extra} seeds past the planned {spread}"
        lines += ["", f"{extended}: {grown}."]
    return [*lines, ""]
