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
    STOP_MAX,
    STOP_WORSE,
    RacingDesign,
    decide,
    judge_look,
    next_round,
)

DESIGN = RacingDesign(min_seeds=3, max_seeds=9, step=3, alpha=0.05)  # looks 3, 6, 9


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
