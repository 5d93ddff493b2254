"""A racing study's report from stored runs and the parent run's race tags: each arm's seeds and
how its race ended, no false alarms about seeds an arm never had to run, and the race's rule."""

from __future__ import annotations

import json

from model.evaluate import OVERALL
from orchestrator.ablation.study_info import study_info
from orchestrator.ablation.study_report import build_study_report
from orchestrator.contract import (
    ARM_PARAM,
    PHASE_PARAM,
    RACE_EXTRA_ROUNDS_TAG,
    SEED_PARAM,
    STUDY_ARMS_PARAM,
    STUDY_RACE_PARAM,
    STUDY_SEEDS_PARAM,
    arm_race_tag,
    best_key,
)
from orchestrator.tracking.store import StoredRun

PARAMS = {
    STUDY_ARMS_PARAM: json.dumps(["baseline", "smart", "cross"]),
    STUDY_SEEDS_PARAM: json.dumps(list(range(6))),
    STUDY_RACE_PARAM: json.dumps({"min": 3, "max": 6, "step": 3}),
}
TAGS = {
    arm_race_tag("smart"): json.dumps({"decision": "stop-worse", "look": 1, "seeds": 3}),
    arm_race_tag("cross"): json.dumps({"decision": "stop-max", "look": 2, "seeds": 6}),
    RACE_EXTRA_ROUNDS_TAG: "0",
}


def stored(arm: str, seed: int, overall: float) -> StoredRun:
    return StoredRun(
        run_id=f"{arm}-{seed}",
        run_name=f"{arm} seed={seed}",
        status="FINISHED",
        params={ARM_PARAM: arm, PHASE_PARAM: "confirm", SEED_PARAM: str(seed)},
        metrics={best_key(OVERALL): overall},
        tags={"trial_state": "completed", "trial_id": f"{arm}{seed}"},
        start_ms=0,
        end_ms=1000,
    )


RUNS = [
    *(stored("baseline", s, 0.60 + 0.01 * s) for s in range(6)),
    *(stored("smart", s, 0.40 + 0.01 * s + (0.003, -0.002, 0.001)[s]) for s in range(3)),
    *(stored("cross", s, 0.61 + 0.01 * s + (0.02 if s % 2 else -0.02)) for s in range(6)),
]


def test_the_report_of_a_race_gives_each_arms_seeds_and_stop():
    info = study_info(PARAMS)
    assert info is not None and info.race == {"min": 3, "max": 6, "step": 3}
    report = build_study_report("raced", info, RUNS, {}, parent_tags=TAGS)
    md = report.markdown
    assert "a race, seeds 0-5 in rounds (min 3, max 6, step 3). 15 confirm runs completed" in md
    assert "| `smart` | 3 | stop-worse at look 1 (3 seeds) |" in md
    assert "| `cross` | 6 | stop-max at look 2 (6 seeds) |" in md
    assert "| `baseline` (baseline) | 6 |" in md
    assert "looks at 3, 6 seeds per arm" in md and "stays <= 0.05" in md
    # An arm stopped early did not "miss" seeds, and arms may stop at different seeds.
    assert report.notes == []
    rows = report.table.set_index("arm")
    assert rows.loc["smart", "seeds run"] == 3 and rows.loc["cross", "seeds run"] == 6
    assert rows.loc["smart", "race"] == "stop-worse at look 1 (3 seeds)"
    assert rows.loc["baseline", "race"] == ""
    assert rows.loc["smart", "Δ dev/overall pairs"] == 3  # its 3 seeds, paired
    assert rows.loc["smart", "verdict"] == "worse" and rows.loc["cross", "verdict"] == "unresolved"
    assert report.tags["arm/cross/verdict"] == "unresolved"


def test_a_races_verdict_is_its_stop_not_the_fixed_test_on_the_seeds_it_ran():
    info = study_info(PARAMS)
    assert info is not None
    futile = json.dumps({"decision": "stop-futile", "look": 1, "seeds": 3})
    report = build_study_report(
        "raced", info, RUNS, {}, parent_tags={**TAGS, arm_race_tag("smart"): futile}
    )
    rows = report.table.set_index("arm")
    # 0.2 below the baseline on every seed: the fixed test would call it worse.
    assert rows.loc["smart", "Δ dev/overall p adj"] < 0.05
    assert rows.loc["smart", "verdict"] == "unresolved"
    assert report.tags["arm/smart/verdict"] == "unresolved"
    row = next(line for line in report.markdown.splitlines() if line.startswith("| smart | -0.19"))
    assert "**unresolved**" in row


def test_an_untagged_arm_a_stray_seed_and_an_extension_are_said():
    info = study_info(PARAMS)
    assert info is not None
    tags = {**TAGS, RACE_EXTRA_ROUNDS_TAG: "1"}
    del tags[arm_race_tag("cross")]
    runs = [r for r in RUNS if not (r.params[ARM_PARAM] == "baseline" and r.params["seed"] == "5")]
    report = build_study_report("raced", info, runs, {}, parent_tags=tags)
    assert "| `cross` | 6 | not judged yet |" in report.markdown
    assert "Still racing: cross" in report.markdown
    assert "raised the max by 3 seeds past the planned 6: the bound grew to 0.075" in (
        report.markdown
    )
    assert report.notes == ["seeds not shared: `cross` ran seeds [5] the baseline did not."]
