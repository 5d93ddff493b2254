"""The statistics of a sweep's report: a mean's t-interval, a Welch interval of a difference,
trials grouped by their value (or value bin) of one swept axis, and the epoch every trial reached.
`report/tables.py` and `report/plots.py` share them. A study's corrected tests too: Holm / BH
adjusted p-values, paired t-tests and TOST over many arms at once, and the paired t-test's power
(the minimum detectable effect, the seeds a given effect needs); `ablation/verdicts.py` and
`ablation/racing.py` share those.

Pure numpy / scipy / pandas on the `trials.parquet` frame: no tracking store, no framework.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

MAX_LEVELS = 6  # a numeric axis with more distinct values than this is binned
MIN_PER_BIN = 3  # trials per bin of a binned axis: a row of one trial has no interval
MAX_BINS = 4
CORRECTIONS: tuple[str, ...] = ("holm", "bh")  # Holm (family-wise), Benjamini-Hochberg (FDR)
POWER = 0.8  # the power of a minimum detectable effect and of `seeds_for_power`
MAX_POWER_SEEDS = 1000  # `seeds_for_power` looks no further (inf beyond)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of its t-interval, and n (half-width NaN for fewer than two values)."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(array)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(array[0]), math.nan, 1
    sem = float(array.std(ddof=1)) / math.sqrt(n)
    return float(array.mean()), float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem, n


def paired_difference(
    arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """Mean of `arm - baseline` (paired, same order), its t-interval half-width, the paired
    t-test's two-sided p-value (NaN below two pairs, or when every difference is equal: the t
    statistic is undefined then, not huge) and the number of pairs."""
    a, b = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    mean, half, n = mean_ci(list(a - b), confidence)
    p_value = math.nan
    if n >= 2 and np.ptp(a - b) > 1e-12:
        p_value = float(stats.ttest_rel(a, b).pvalue)
    return mean, half, p_value, n


def adjust_pvalues(p_values: Any, method: str = "holm") -> np.ndarray:
    """Holm (step-down, family-wise error) or Benjamini-Hochberg (step-up, false discovery rate)
    adjusted p-values along the last axis. NaN (no test) stays NaN and is not in the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {', '.join(CORRECTIONS)}, got {method!r}")
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1, kind="stable")  # NaN last
    ranked = np.take_along_axis(p, order, axis=-1)
    family = np.isfinite(p).sum(axis=-1, keepdims=True)  # m: the tests that were run
    rank = np.arange(1, p.shape[-1] + 1)
    if method == "holm":  # max over j <= i of (m - j + 1) p_(j)
        adjusted = np.fmax.accumulate((family - rank + 1) * ranked, axis=-1)
    else:  # min over j >= i of m / j p_(j)
        scaled = np.flip(family / rank * ranked, axis=-1)
        adjusted = np.flip(np.fmin.accumulate(scaled, axis=-1), axis=-1)
    adjusted = np.where(np.isnan(ranked), np.nan, np.minimum(adjusted, 1.0))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def paired_t_tests(diffs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, SD (ddof 1) and the two-sided one-sample t-test's p-value (H0: mean 0) of paired
    differences along the last axis, n of them per row. p is NaN below two pairs or when every
    difference is equal (as in `paired_difference`)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = d.shape[-1]
    mean = d.mean(axis=-1) if n else np.full(d.shape[:-1], np.nan)
    sd = d.std(axis=-1, ddof=1) if n >= 2 else np.full(d.shape[:-1], np.nan)
    tested = (np.ptp(d, axis=-1) > 1e-12) if n >= 2 else np.zeros(d.shape[:-1], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / math.sqrt(max(n, 1)))
        p = 2 * stats.t.sf(np.abs(t), max(n - 1, 1))
    return mean, sd, np.where(tested, p, np.nan)


def tost_pvalues(diffs: Any, margin: float) -> np.ndarray:
    """Two one-sided paired t-tests of equivalence within ±margin along the last axis: the larger
    p of H0 `mean <= -margin` (vs greater) and H0 `mean >= +margin` (vs less). NaN as in
    `paired_t_tests`."""
    d = np.asarray(diffs, dtype=np.float64)
    n = d.shape[-1]
    mean, sd, p = paired_t_tests(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / math.sqrt(max(n, 1))
        lower = stats.t.sf((mean + margin) / se, max(n - 1, 1))
        upper = stats.t.cdf((mean - margin) / se, max(n - 1, 1))
    return np.where(np.isnan(p), np.nan, np.maximum(lower, upper))


def _power_at(noncentrality: Any, df: Any, alpha: float) -> Any:
    """The two-sided t-test's power at a noncentrality parameter (noncentral t, both tails). The
    far tail as P(T > c | -nc), not P(T < -c | nc): scipy's cdf there is NaN at some points."""
    critical = stats.t.ppf(1 - alpha / 2, df)
    far = np.nan_to_num(stats.nct.sf(critical, df, -np.asarray(noncentrality)), nan=0.0)
    return stats.nct.sf(critical, df, noncentrality) + far


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """The power of a two-sided paired t-test at level alpha with n pairs whose differences
    have mean `effect` and SD `sd` (noncentrality effect / sd · √n, n - 1 degrees of freedom)."""
    if n < 2 or not sd > 0 or not math.isfinite(effect):
        return math.nan
    return float(_power_at(effect / sd * math.sqrt(n), n - 1, alpha))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest |mean difference| a two-sided paired t-test at level alpha detects with the
    given power, from n pairs with differences of SD `sd` (NaN below two pairs or no spread)."""
    if n < 2 or not sd > 0:
        return math.nan
    high = 1.0
    while _power_at(high, n - 1, alpha) < power:  # bracket the noncentrality, then solve
        high *= 2
    noncentrality = optimize.brentq(
        lambda nc: _power_at(nc, n - 1, alpha) - power, 0.0, high, xtol=1e-10
    )
    return float(noncentrality * sd / math.sqrt(n))


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05, power: float = POWER) -> float:
    """The fewest pairs (>= 2) with which a two-sided paired t-test at level alpha detects a mean
    difference `effect` given differences of SD `sd`, with the given power; inf beyond
    MAX_POWER_SEEDS or for no effect, NaN without a spread."""
    if not sd > 0 or not math.isfinite(effect):
        return math.nan
    if effect == 0:
        return math.inf
    n = np.arange(2, MAX_POWER_SEEDS + 1)
    reached = np.flatnonzero(_power_at(abs(effect) / sd * np.sqrt(n), n - 1, alpha) >= power)
    return float(n[reached[0]]) if len(reached) else math.inf


def delta_ci(
    values: Sequence[float], base: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Difference of means (values - base) and the half-width of its Welch t-interval."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    delta = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return delta, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return delta, 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return delta, float(stats.t.ppf((1 + confidence) / 2, dof)) * math.sqrt(va + vb)


@dataclass(frozen=True)
class AxisGroup:
    """The trials (frame index labels) that ran one value, or one quartile bin, of an axis."""

    label: str
    rows: list[Any]
    is_base: bool


def value_label(value: Any) -> str:
    """A swept value as a table cell or tick label (floats to four significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def is_continuous(values: pd.Series) -> bool:
    """Whether a numeric axis is binned: more than MAX_LEVELS distinct values, or more than half
    of its trials with a value of their own (a sampled float, where each row would hold one)."""
    present = values.dropna()
    if not len(present) or not pd.api.types.is_numeric_dtype(present):
        return False
    if pd.api.types.is_bool_dtype(present):
        return False
    levels = present.nunique()
    return levels > MAX_LEVELS or (levels > 1 and levels > len(present) / 2)


def axis_groups(frame: pd.DataFrame, axis: str, base: Any = None) -> list[AxisGroup]:
    """Trials grouped by their value of `axis`, in value order.

    A continuous axis (`is_continuous`) is binned into equal-count bins of at least MIN_PER_BIN
    trials where there are enough (2 to MAX_BINS bins); the bin holding the base value is the
    base group.
    """
    values = frame[axis]
    present = values.dropna()
    if is_continuous(values):
        bins = min(MAX_BINS, max(2, len(present) // MIN_PER_BIN))
        return _quantile_groups(present.astype(float), base, bins)
    levels = list(dict.fromkeys(present.tolist()))
    if len(present) and pd.api.types.is_numeric_dtype(present):
        levels.sort()
    return [
        AxisGroup(
            label=value_label(level),
            rows=list(values.index[values.map(lambda v, lv=level: _same(v, lv))]),
            is_base=base is not None and _same(level, base),
        )
        for level in levels
    ]


def _quantile_groups(values: pd.Series, base: Any, bins: int) -> list[AxisGroup]:
    """Numeric values in (up to) `bins` equal-count bins, lowest first, each labelled by the
    range of the values in it. The base value belongs to the bin whose edges enclose it."""
    codes, edges = pd.qcut(values, q=bins, labels=False, retbins=True, duplicates="drop")
    numeric_base = isinstance(base, (int, float)) and not isinstance(base, bool)
    value = float(base) if numeric_base else math.nan
    groups = []
    for code in range(len(edges) - 1):
        members = values[codes == code]
        if members.empty:
            continue
        low, high = float(members.min()), float(members.max())
        label = value_label(low) if low == high else f"{value_label(low)} – {value_label(high)}"
        # Bins are (left, right]; the first one holds its left edge, the smallest value, too.
        above = value >= edges[code] if code == 0 else value > edges[code]
        inside = above and value <= edges[code + 1]  # False for NaN: no numeric base
        groups.append(AxisGroup(label=label, rows=list(members.index), is_base=bool(inside)))
    return groups


def common_rung(epochs: Sequence[int]) -> int:
    """The last epoch every trial reached (pruned ones included): where they all compare; 0 when
    some trial logged no epoch."""
    return min(epochs, default=0)
