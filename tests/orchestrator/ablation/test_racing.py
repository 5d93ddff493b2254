"""The racing rule's boundaries on hand-made sequences: the per-look levels, which arms count in
each family at a look, equivalence, the last look, and the next round's seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from model.config import ConfigError
from orchestrator.ablation.racing import (
    CONTINUE,
    STOP_BETTER,
    STOP_EQUIVALENT,
    STOP_FUTILE,
    STOP_MAX,
    STOP_WORSE,
    RaceStop,
    RacingDesign,
    conditional_power,
    decide,
    judge_look,
    next_round,
    replay_race,
)

DESIGN = RacingDesign(3, 9, 3, alpha=0.05, futility=0)  # looks 3, 6, 9; no futility stop


def with_p(p: float, n: int = 3, sign: float = 1.0, spread: float = 0.001) -> list[float]:
    """n paired differences whose two-sided one-sample t-test has p-value `p`: a symmetric
    spread around the mean that gives that t."""
    offsets = np.linspace(-1, 1, n)
    offsets *= spread / offsets.std(ddof=1)
    t = stats.t.isf(p / 2, n - 1)
    diffs = sign * t * spread / math.sqrt(n) + offsets
    assert stats.ttest_1samp(diffs, 0.0).pvalue == pytest.approx(p, rel=1e-6)
    return diffs.tolist()


def test_the_looks_and_their_levels_sum_to_alpha():
    assert DESIGN.looks == (3, 6, 9)
    levels = [DESIGN.look_alpha(k) for k in (1, 2, 3)]
    assert levels == pytest.approx([0.05 / 3] * 3) and sum(levels) == pytest.approx(0.05)
    uneven = RacingDesign(min_seeds=3, max_seeds=10, step=4)  # looks 3, 7, 10
    assert uneven.looks == (3, 7, 10)
    assert [uneven.look_alpha(k) for k in (1, 2, 3)] == pytest.approx([0.015, 0.02, 0.015])
    assert RacingDesign(min_seeds=5, max_seeds=5).looks == (5,)
    assert DESIGN.next_look(0) == 3 and DESIGN.next_look(4) == 6 and DESIGN.next_look(9) is None


def test_a_look_tests_at_its_own_level_not_at_alpha():
    level = DESIGN.look_alpha(1)  # 1/60
    # p = 0.03 would pass a single test at 0.05; at the first look it does not.
    assert decide({"a": with_p(0.03)}, 1, DESIGN) == {"a": CONTINUE}
    assert decide({"a": with_p(0.98 * level)}, 1, DESIGN) == {"a": STOP_BETTER}
    assert decide({"a": with_p(1.02 * level)}, 1, DESIGN) == {"a": CONTINUE}
    assert decide({"a": with_p(0.5 * level, sign=-1)}, 1, DESIGN) == {"a": STOP_WORSE}


def test_holm_across_arms_and_who_counts_in_the_family():
    level = DESIGN.look_alpha(2)
    a, b = with_p(0.7 * level, n=6), with_p(0.5, n=6)
    # Two running arms: Holm needs the smaller p below level / 2.
    assert decide({"a": a, "b": b}, 2, DESIGN) == {"a": CONTINUE, "b": CONTINUE}
    # An arm stopped better or worse was a rejection: it leaves the family, so `a` is alone.
    assert decide({"a": a}, 2, DESIGN, stopped={"b": STOP_BETTER}) == {"a": STOP_BETTER}
    assert decide({"a": a}, 2, DESIGN, stopped={"b": STOP_WORSE}) == {"a": STOP_BETTER}
    # An arm stopped as equivalent was not: it stays in the family with p = 1.
    assert decide({"a": a}, 2, DESIGN, stopped={"b": STOP_EQUIVALENT}) == {"a": CONTINUE}
    # BH: the larger p of two is compared with the level itself, the smaller with level / 2.
    bh = RacingDesign(min_seeds=3, max_seeds=9, step=3, correction="bh")
    both = {"a": with_p(0.9 * level, n=6), "b": with_p(0.8 * level, n=6)}
    assert decide(both, 2, bh) == {"a": STOP_BETTER, "b": STOP_BETTER}
    assert decide(both, 2, DESIGN) == {"a": CONTINUE, "b": CONTINUE}


def test_equivalence_within_the_margin_stops_an_arm():
    design = RacingDesign(min_seeds=3, max_seeds=9, step=3, equivalence=0.01)
    flat = [0.0004, -0.0003, 0.0001, -0.0002, 0.0003, -0.0001]
    assert decide({"a": flat}, 2, design) == {"a": STOP_EQUIVALENT}
    # Without a margin the same arm is unresolved, and at the last look it stops at max.
    assert decide({"a": flat}, 2, DESIGN) == {"a": CONTINUE}
    assert decide({"a": [*flat, 0.0002, -0.0004, 0.0]}, 3, DESIGN) == {"a": STOP_MAX}
    # Only the first n_k differences count at look k.
    assert decide({"a": [*flat, 0.5, 0.6, 0.7]}, 2, design) == {"a": STOP_EQUIVALENT}


def test_equal_differences_decide_nothing():
    assert decide({"a": [0.01, 0.01, 0.01]}, 1, DESIGN) == {"a": CONTINUE}


def test_judge_look_races_many_studies_at_once():
    level = DESIGN.look_alpha(1)
    diffs = np.array([[with_p(0.4 * level), with_p(0.5)], [with_p(0.5), with_p(0.5)]])
    state = np.full((2, 2), CONTINUE, dtype=object)
    state[1, 1] = STOP_WORSE  # stopped earlier: kept as it is
    got = judge_look(diffs, state, 1, DESIGN)
    assert got.tolist() == [[STOP_BETTER, CONTINUE], [CONTINUE, STOP_WORSE]]
    with pytest.raises(ValueError, match="look 2 judges 6 seeds, got 3"):
        judge_look(diffs, state, 2, DESIGN)


def test_bad_calls_and_designs_say_what_is_wrong():
    with pytest.raises(ValueError, match="a: 2 paired seeds, look 1 needs 3"):
        decide({"a": [0.1, 0.2]}, 1, DESIGN)
    with pytest.raises(ValueError, match="look: expected 1-3, got 4"):
        decide({"a": [0.1] * 9}, 4, DESIGN)
    with pytest.raises(ValueError, match="a: has stopped"):
        decide({"a": [0.1] * 3}, 1, DESIGN, stopped={"a": STOP_BETTER})
    bad_designs = [
        ({"min_seeds": 1}, "seeds"), ({"min_seeds": 13}, "seeds"), ({"step": 0}, "step"),
        ({"alpha": 0.0}, "alpha"), ({"correction": "none"}, "correction"),
        ({"equivalence": -0.1}, "equivalence"),
    ]  # fmt: skip
    for bad, key in bad_designs:
        with pytest.raises(ConfigError, match=f"^{key}: "):
            RacingDesign(**bad)  # type: ignore[arg-type]


def test_next_round_adds_seeds_to_running_arms_and_the_baseline():
    # The first round: every arm and the baseline on min_seeds.
    first = next_round({"a": CONTINUE, "b": CONTINUE}, {}, "base", DESIGN)
    assert first == {"a": 3, "b": 3, "base": 3}
    # After look 1: `b` stopped; `a` and the baseline go on to 6.
    seeds = {"base": 3, "a": 3, "b": 3}
    assert next_round({"a": CONTINUE, "b": STOP_WORSE}, seeds, "base", DESIGN) == {
        "a": 3, "base": 3,
    }  # fmt: skip
    # The baseline already ran the seeds (a resumed race): it runs none again.
    seeds = {"base": 6, "a": 3, "b": 6}
    assert next_round({"a": CONTINUE, "b": STOP_BETTER}, seeds, "base", DESIGN) == {"a": 3}
    # An uneven last round, and nothing once no arm continues.
    uneven = RacingDesign(min_seeds=3, max_seeds=8, step=3)  # looks 3, 6, 8
    assert next_round({"a": CONTINUE}, {"a": 6, "base": 6}, "base", uneven) == {"a": 2, "base": 2}
    assert next_round({"a": STOP_MAX, "b": STOP_BETTER}, {"a": 8, "b": 3}, "base", uneven) == {}


def test_an_extended_race_looks_past_max_at_the_planned_rate():
    uneven = RacingDesign(min_seeds=3, max_seeds=10, step=4)  # looks 3, 7, 10
    longer = uneven.extended(2)
    assert longer.looks == (3, 7, 10, 14, 18) and longer.max_seeds == 18
    # Planned looks keep their levels (what already ran stays judged as it was); each extra
    # round spends α·step/10 more, so the bound is α·18/10.
    assert [longer.look_alpha(k) for k in (1, 2, 3)] == [uneven.look_alpha(k) for k in (1, 2, 3)]
    assert longer.look_alpha(4) == pytest.approx(0.05 * 4 / 10)
    assert uneven.error_bound == pytest.approx(0.05)
    assert longer.error_bound == pytest.approx(0.05 * 18 / 10)
    assert longer.extended(1).looks == (3, 7, 10, 14, 18, 22)  # extending twice adds up
    assert uneven.extended(0) == RacingDesign(3, 10, 4, spend_seeds=10)
    with pytest.raises(ConfigError, match="spend_seeds"):
        RacingDesign(min_seeds=3, max_seeds=12, step=4, spend_seeds=10)  # 2 seeds: no round


def test_replay_judges_each_look_once_every_racing_arm_has_run_it():
    design = RacingDesign(3, 6, 3, alpha=0.05, futility=0)  # looks 3, 6
    base = {s: 0.5 for s in range(6)}
    worse = dict(enumerate(0.5 + np.array(with_p(0.001, sign=-1) + [0.0] * 3)))
    noisy = dict(enumerate(0.5 + np.array(with_p(0.6) + with_p(0.6))))
    values = {"base": base, "worse": worse, "noisy": noisy}
    # Look 1 needs 3 seeds of every arm and the baseline; with 2 nothing is judged.
    early = replay_race(values, {"base": 3, "worse": 3, "noisy": 2}, ARMS, "base", design)
    assert early == {"worse": RaceStop(CONTINUE, 0, 0), "noisy": RaceStop(CONTINUE, 0, 0)}
    ran = {"base": 3, "worse": 3, "noisy": 3}
    first = replay_race(values, ran, ARMS, "base", design)
    direct = decide({a: [values[a][s] - base[s] for s in range(3)] for a in ARMS[1:]}, 1, design)
    assert direct == {"worse": STOP_WORSE, "noisy": CONTINUE}
    assert first == {"worse": RaceStop(STOP_WORSE, 1, 3), "noisy": RaceStop(CONTINUE, 1, 3)}
    # Look 2 judges only the arm still racing, with the stopped one in Holm's family as
    # `decide` counts it; a seed the baseline failed (no value) decides nothing.
    final = replay_race(values, {"base": 6, "worse": 3, "noisy": 6}, ARMS, "base", design)
    assert final["worse"] == RaceStop(STOP_WORSE, 1, 3)
    noisy_diffs = [noisy[s] - base[s] for s in range(6)]
    expected = decide({"noisy": noisy_diffs}, 2, design, {"worse": STOP_WORSE})["noisy"]
    assert final["noisy"] == RaceStop(expected, 2, 6) and expected == STOP_MAX
    failed = {**values, "base": {s: v for s, v in base.items() if s != 1}}
    ran = {"base": 3, "worse": 3, "noisy": 3}
    assert replay_race(failed, ran, ARMS, "base", design)["worse"] == RaceStop(CONTINUE, 1, 3)


ARMS = ["base", "worse", "noisy"]


def test_conditional_power_is_the_chance_the_last_look_resolves_under_the_current_trend():
    design = RacingDesign(3, 12, 3, alpha=0.05)  # last look at 12 seeds, level 0.0125
    diffs = np.array([0.004, 0.001, 0.007])
    mean, sd = diffs.mean(), diffs.std(ddof=1)
    # Monte Carlo of what the rule assumes: 9 more differences drawn with the observed mean and
    # SD, the 12-seed mean against the last look's two-sided t bound at the observed SD.
    rng = np.random.default_rng(0)
    final = (diffs.sum() + rng.normal(mean, sd, size=(200_000, 9)).sum(axis=1)) / 12
    bound = stats.t.isf(0.0125 / 2, 11) * sd / math.sqrt(12)
    simulated = np.mean(np.abs(final) > bound)
    assert conditional_power(diffs, design) == pytest.approx(simulated, abs=0.005)
    # With a margin, the chance of landing inside ±(margin - one-sided bound) counts too.
    margin = RacingDesign(3, 12, 3, alpha=0.05, equivalence=0.02)
    inner = 0.02 - stats.t.isf(0.0125, 11) * sd / math.sqrt(12)
    inside = np.mean(np.abs(final) < inner)
    assert conditional_power(diffs, margin) == pytest.approx(max(simulated, inside), abs=0.005)


def test_an_arm_unlikely_to_resolve_stops_futile_and_never_at_the_last_look():
    design = RacingDesign(3, 12, 3, alpha=0.05)  # futility 0.1 by default
    flat = with_p(0.9)  # tiny trend, wide spread: hopeless at 12 seeds
    promising = with_p(0.04)  # unresolved now (level 0.0125) but likely by 12 seeds
    decisions = decide({"flat": flat, "promising": promising}, 1, design)
    assert decisions == {"flat": STOP_FUTILE, "promising": CONTINUE}
    assert conditional_power(np.array(flat), design) < 0.1 < conditional_power(
        np.array(promising), design
    )
    # Off, or at the last look, an unresolved arm is never futile.
    assert decide({"flat": flat}, 1, RacingDesign(3, 12, 3, futility=0)) == {"flat": CONTINUE}
    assert decide({"flat": with_p(0.9, n=12)}, 4, design) == {"flat": STOP_MAX}
    # A futile arm keeps its place in the next look's family, with p = 1.
    assert next_round({"flat": STOP_FUTILE, "promising": CONTINUE}, {"flat": 3, "promising": 3,
                      "base": 3}, "base", design) == {"promising": 3, "base": 3}  # fmt: skip
    # An extension leaves earlier decisions as they were, and has no futility stop of its own.
    longer = design.extended(2)
    assert decide({"flat": flat, "promising": promising}, 1, longer) == decisions
    assert decide({"flat": with_p(0.9, n=12)}, 4, longer) == {"flat": CONTINUE}
    with pytest.raises(ConfigError, match="futility"):
        RacingDesign(futility=1.0)
