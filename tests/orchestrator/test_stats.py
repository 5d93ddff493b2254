"""A study's corrected tests and power against hand computations and scipy on fixed numbers:
Holm and Benjamini-Hochberg adjusted p-values, the paired t-test and TOST over many arms at once,
and the paired t-test's power, minimum detectable effect and seeds needed (noncentral t)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.space.arms import CORRECTIONS as SPACE_CORRECTIONS
from orchestrator.stats import (
    CORRECTIONS,
    adjust_pvalues,
    min_detectable_effect,
    paired_power,
    paired_t_tests,
    seeds_for_power,
    tost_pvalues,
)

P = [0.01, 0.04, 0.03, 0.005]


def test_holm_against_hand_computed_values():
    # Sorted: 0.005, 0.01, 0.03, 0.04; times m - i + 1 = 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04;
    # running maximum: 0.02, 0.03, 0.06, 0.06; back in input order:
    np.testing.assert_allclose(adjust_pvalues(P, "holm"), [0.03, 0.06, 0.06, 0.02])
    # Capped at 1, and the default is Holm.
    np.testing.assert_allclose(adjust_pvalues([0.3, 0.6]), [0.6, 0.6])
    np.testing.assert_allclose(adjust_pvalues([0.6, 0.7]), [1.0, 1.0])


def test_bh_against_hand_computed_values_and_scipy():
    # Sorted: 0.005, 0.01, 0.03, 0.04; times m / i = 4, 2, 4/3, 1: 0.02, 0.02, 0.04, 0.04;
    # running minimum from the top: 0.02, 0.02, 0.04, 0.04.
    np.testing.assert_allclose(adjust_pvalues(P, "bh"), [0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(3)
    for p in (rng.uniform(size=9), rng.uniform(0, 0.1, size=5), np.array([0.2, 0.2, 0.01])):
        np.testing.assert_allclose(
            adjust_pvalues(p, "bh"), stats.false_discovery_control(p, method="bh")
        )


def test_nan_is_no_test_and_rows_are_families_of_their_own():
    # Two tests, not three: 0.01 * 2 and max(0.02, 0.04 * 1).
    np.testing.assert_allclose(
        adjust_pvalues([0.04, math.nan, 0.01]), [0.04, math.nan, 0.02], equal_nan=True
    )
    rows = np.array([P, [0.5, 0.01, 0.02, 0.03]])
    got = adjust_pvalues(rows, "bh")
    np.testing.assert_allclose(got[0], adjust_pvalues(P, "bh"))
    np.testing.assert_allclose(got[1], stats.false_discovery_control(rows[1], method="bh"))
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues(P, "bonferroni")


def test_the_space_and_the_statistics_know_the_same_corrections():
    assert SPACE_CORRECTIONS == CORRECTIONS


def test_paired_t_tests_are_scipys_one_sample_t_tests():
    diffs = np.array([[0.01, 0.02, -0.005, 0.012], [0.03, 0.01, 0.02, 0.025]])
    mean, sd, p = paired_t_tests(diffs)
    for i, row in enumerate(diffs):
        assert mean[i] == pytest.approx(row.mean(), abs=1e-15)
        assert sd[i] == pytest.approx(row.std(ddof=1), abs=1e-15)
        assert p[i] == pytest.approx(stats.ttest_1samp(row, 0.0).pvalue, rel=1e-9)
    # No p-value below two pairs or for equal differences (t undefined, not huge).
    assert np.isnan(paired_t_tests([0.01])[2]) and np.isnan(paired_t_tests([0.02, 0.02])[2])


def test_tost_is_the_larger_of_two_one_sided_scipy_t_tests():
    arm = np.array([0.701, 0.712, 0.695, 0.705, 0.709])
    base = np.array([0.700, 0.708, 0.699, 0.701, 0.703])
    margin = 0.01
    lower = stats.ttest_1samp(arm - base, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(arm - base, margin, alternative="less").pvalue
    assert float(tost_pvalues(arm - base, margin)) == pytest.approx(max(lower, upper), rel=1e-9)
    # The same as paired tests of the arm against the baseline shifted by ∓ margin.
    paired = stats.ttest_rel(arm, base - margin, alternative="greater").pvalue
    assert lower == pytest.approx(paired, rel=1e-9)
    # A difference far outside the margin is not equivalent.
    assert float(tost_pvalues(arm - base + 0.05, margin)) > 0.99


def _power_by_hand(effect: float, sd: float, n: int, alpha: float) -> float:
    """P(|T| > t_{1-α/2, n-1}) for T noncentral t with n - 1 df and noncentrality Δ/sd·√n; the
    lower tail P(T < -c | nc) written as P(T > c | -nc) (scipy's cdf is NaN far out at df 1)."""
    df, noncentrality = n - 1, effect / sd * math.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(
        stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality)
    )


@pytest.mark.parametrize(
    ("effect", "sd", "n", "alpha"), [(0.01, 0.01, 10, 0.05), (0.004, 0.0044, 6, 0.05),
                                     (0.02, 0.01, 3, 0.01), (-0.01, 0.01, 10, 0.05)]
)  # fmt: skip
def test_power_is_the_noncentral_t_computation(effect, sd, n, alpha):
    assert paired_power(effect, sd, n, alpha) == pytest.approx(
        _power_by_hand(effect, sd, n, alpha), rel=1e-12
    )


def test_power_mde_and_seeds_against_textbook_values():
    # d = 1 with 10 pairs: power 0.803 (G*Power's 0.8031); 80% power at d = 1 takes 10 pairs,
    # at d = 0.5 34 pairs (G*Power's paired-t sample sizes).
    assert paired_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert seeds_for_power(1.0, 1.0) == 10 and seeds_for_power(0.5, 1.0) == 34
    assert paired_power(0.5, 1.0, 33) < 0.8 <= paired_power(0.5, 1.0, 34)


@pytest.mark.parametrize(("sd", "n"), [(0.01, 3), (0.0044, 5), (0.01, 12), (1.0, 2)])
def test_at_the_mde_the_power_is_80_percent(sd, n):
    mde = min_detectable_effect(sd, n)
    assert _power_by_hand(mde, sd, n, 0.05) == pytest.approx(0.80, abs=1e-3)
    assert _power_by_hand(0.9 * mde, sd, n, 0.05) < 0.79


def test_undefined_power_is_nan_and_no_effect_needs_infinitely_many_seeds():
    assert math.isnan(min_detectable_effect(0.01, 1)) and math.isnan(min_detectable_effect(0, 5))
    assert math.isnan(paired_power(0.01, 0.0, 5)) and math.isnan(seeds_for_power(0.01, 0.0))
    assert seeds_for_power(0.0, 0.01) == math.inf
    assert seeds_for_power(1e-6, 0.01) == math.inf  # beyond MAX_POWER_SEEDS
