"""A racing study's phase 2 (`seeds: {min, max, step}`): the confirm runs in rounds.

Round 1 (`<results>/<study>/confirm/`) runs every arm on seeds 0..min-1. After each round the
race is replayed look by look from the finished rounds' runs (`racing.replay_race`, on the
study's table metric: `dev/overall` when the study ranks on `selection/overall`), and round r+1
(`confirm-r<r+1>/`) runs the arms still racing up to the next look's seeds (`step` more, or
fewer before an uneven `max`), the baseline as many as any of them then has. Each round is a
phase of its own, so `--resume` restores the unfinished one and replays the rest, and every run
carries its round as the MLflow param `round`. After each look the parent run's tags
`arm/<arm>/race` say how each arm stands; `--extend N` (`extra_rounds` in `sweep.json`) races
the arms still unresolved at `max` for N more rounds.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.ablation.phase_run import run_phase
from orchestrator.ablation.phases import confirm_phase
from orchestrator.ablation.racing import RaceStop, RacingDesign, next_round, replay_race
from orchestrator.ablation.verdicts import ALPHA, table_metric
from orchestrator.contract import ARM_PARAM, RACE_EXTRA_ROUNDS_TAG, SweepLayout, arm_race_tag
from orchestrator.space.arms import StudySpec
from orchestrator.sweep.outcome import SweepOutcome, TrialOutcome
from orchestrator.sweep.parent_run import SweepRun
from orchestrator.sweep.state import read_state, update_state

RACE_KEY = "race"  # in sweep.json: {"extra_rounds": N} once `--extend` added rounds


def race_design(study: StudySpec, extra_rounds: int = 0) -> RacingDesign:
    """The race the study's `seeds:`, `correction:` and `equivalence:` ask for, with
    `extra_rounds` more rounds from `--extend`."""
    race = study.race
    assert race is not None, "a racing study"
    design = RacingDesign(
        race.min, race.max, race.step, ALPHA, study.correction, study.equivalence,
        futility=race.futility,
    )  # fmt: skip
    return design.extended(extra_rounds)


def extra_rounds(layout: SweepLayout) -> int:
    return int(read_state(layout).get(RACE_KEY, {}).get("extra_rounds", 0))


def add_race_rounds(layout: SweepLayout, rounds: int) -> int:
    """Record `--extend N` in sweep.json (before any of its runs starts, so a `--resume` of a
    killed extension races the same rounds); returns the extra rounds now."""

    def add(state: dict[str, Any]) -> int:
        race = state.setdefault(RACE_KEY, {})
        race["extra_rounds"] = int(race.get("extra_rounds", 0)) + rounds
        return int(race["extra_rounds"])

    return update_state(layout, add)


def run_race(
    run: SweepRun,
    study: StudySpec,
    chosen: dict[str, dict[str, Any]],
    *,
    resume: bool,
    live_table: bool,
    outcome: SweepOutcome,
) -> bool:
    """Run the race's rounds until no arm races on; False when a round stopped early."""
    extra = extra_rounds(run.layout)
    design = race_design(study, extra)
    metric = table_metric(run.space.metric)
    trials: list[TrialOutcome] = []
    for number in range(1, len(design.looks) + 1):  # round r brings the racing arms to look r
        plan = round_plan(race_stops(trials, study, design, metric), trials, study, design)
        if not plan:
            break
        phase = confirm_phase(run.space, study, chosen, (number, plan))
        round_trials, done = run_phase(run, phase, resume=resume, live_table=live_table)
        trials += round_trials
        outcome.trials += round_trials
        if not done:
            return False
        # After each look, so the MLflow UI shows the race as it goes.
        stops = race_stops(trials, study, design, metric)
        tags = {arm_race_tag(arm): race_tag(stop) for arm, stop in stops.items()}
        run.tracker.set_tags(run.parent_run_id, {**tags, RACE_EXTRA_ROUNDS_TAG: str(extra)})
    return True


def race_stops(
    trials: list[TrialOutcome], study: StudySpec, design: RacingDesign, metric: str
) -> dict[str, RaceStop]:
    """The race replayed from the runs so far: each completed run's `metric` by arm and seed."""
    values: dict[str, dict[int, float]] = {}
    for trial in trials:
        value = trial.best_metrics.get(metric)
        if trial.state == "completed" and value is not None:
            # A race's seeds are 0, 1, ...: seed s is the arm's (s+1)-th.
            values.setdefault(trial.labels[ARM_PARAM], {})[int(trial.params["seed"])] = value
    arms = [arm.name for arm in study.arms]
    return replay_race(values, seeds_run(trials), arms, study.baseline, design)


def seeds_run(trials: list[TrialOutcome]) -> dict[str, int]:
    """How many seeds each arm has run, in any state."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.labels[ARM_PARAM]] = counts.get(trial.labels[ARM_PARAM], 0) + 1
    return counts


def round_plan(
    stops: dict[str, RaceStop], trials: list[TrialOutcome], study: StudySpec, design: RacingDesign
) -> dict[str, range]:
    """The seed indices each arm runs in the next round ({} when the race is over)."""
    ran = seeds_run(trials)
    decisions = {arm: stop.decision for arm, stop in stops.items()}
    counts = next_round(decisions, ran, study.baseline, design)
    return {arm: range(ran.get(arm, 0), ran.get(arm, 0) + n) for arm, n in counts.items()}


def race_tag(stop: RaceStop) -> str:
    return json.dumps({"decision": stop.decision, "look": stop.look, "seeds": stop.seeds})
