"""A race's rounds from the trials so far: who runs which seeds next, the race replayed from
completed trials on the table metric, and round 1 and round 2's configs with their labels."""

from __future__ import annotations

import math

import numpy as np

from orchestrator.ablation.phases import confirm_phase
from orchestrator.ablation.race_run import race_design, race_stops, round_plan
from orchestrator.ablation.racing import CONTINUE, STOP_WORSE, RaceStop
from orchestrator.space.schema import parse_space
from orchestrator.sweep.outcome import TrialOutcome
from tests.orchestrator.ablation.test_racing import with_p

SPACE = parse_space(
    {
        "name": "raced",
        "base": {"data": {"selection": 0.1}},
        "metric": "selection/overall",
        "arms": {"base": {}, "worse": {"smart.weight": 1.0}, "same": {"pcgrad.enabled": True}},
        "seeds": {"min": 3, "max": 6, "step": 3, "futility": 0},
    }
)
STUDY = SPACE.study
assert STUDY is not None


def trial(arm: str, seed: int, dev: float, state: str = "completed") -> TrialOutcome:
    return TrialOutcome(
        trial_id=f"{arm}{seed}",
        state=state,
        params={"seed": seed},
        run_name=arm,
        epochs=1,
        best_value=0.0,  # selection/overall: the race judges dev/overall, as the table does
        best_checkpoint=None,
        labels={"arm": arm, "phase": "confirm", "round": "1"},
        best_metrics={"dev/overall": dev},
    )


def test_round_one_runs_every_arm_on_the_first_min_seeds():
    design = race_design(STUDY)
    assert design.looks == (3, 6) and design.correction == "holm" and design.futility == 0
    plan = round_plan(race_stops([], STUDY, design, "dev/overall"), [], STUDY, design)
    assert plan == {"base": range(0, 3), "worse": range(0, 3), "same": range(0, 3)}
    phase = confirm_phase(SPACE, STUDY, {a.name: {} for a in STUDY.arms}, (1, plan))
    assert phase.key == "confirm" and phase.space.name == "raced.confirm"
    assert [(c["arm"], c["seed"], c["round"]) for c in phase.configs or ()][:4] == [
        ("base", 0, 1), ("base", 1, 1), ("base", 2, 1), ("worse", 0, 1)
    ]  # fmt: skip


def test_after_a_look_only_unresolved_arms_and_the_baseline_run_on():
    design = race_design(STUDY)
    worse = 0.5 + np.array(with_p(0.001, sign=-1))
    same = 0.5 + np.array(with_p(0.7))
    trials = [trial("base", s, 0.5) for s in range(3)]
    trials += [trial("worse", s, float(v)) for s, v in enumerate(worse)]
    trials += [trial("same", s, float(v)) for s, v in enumerate(same)]
    stops = race_stops(trials, STUDY, design, "dev/overall")
    assert stops == {"worse": RaceStop(STOP_WORSE, 1, 3), "same": RaceStop(CONTINUE, 1, 3)}
    plan = round_plan(stops, trials, STUDY, design)
    assert plan == {"same": range(3, 6), "base": range(3, 6)}
    phase = confirm_phase(SPACE, STUDY, {a.name: {} for a in STUDY.arms}, (2, plan))
    assert phase.key == "confirm-r2"
    assert sorted((c["arm"], c["seed"]) for c in phase.configs or ()) == [
        ("base", 3), ("base", 4), ("base", 5), ("same", 3), ("same", 4), ("same", 5)
    ]  # fmt: skip
    # A failed run counts as run (the arm does not rerun that seed) but decides nothing.
    trials[3] = trial("worse", 0, 0.0, state="failed")
    again = race_stops(trials, STUDY, design, "dev/overall")
    assert again["worse"] == RaceStop(CONTINUE, 1, 3)
    assert round_plan(again, trials, STUDY, design)["worse"] == range(3, 6)


def test_an_extension_races_on_from_the_last_look():
    design = race_design(STUDY, extra_rounds=1)
    assert design.looks == (3, 6, 9) and math.isclose(design.error_bound, 0.05 * 9 / 6)
    trials = [trial(arm, s, 0.5 + 0.01 * ((s * 7 + i) % 3)) for i, arm in
              enumerate(("base", "same")) for s in range(6)]  # fmt: skip
    trials += [trial("worse", s, 0.1) for s in range(3)]  # far worse: stopped at look 1
    stops = race_stops(trials, STUDY, design, "dev/overall")
    assert stops["same"].look == 2 and stops["same"].decision == CONTINUE
    assert round_plan(stops, trials, STUDY, design) == {"same": range(6, 9), "base": range(6, 9)}
