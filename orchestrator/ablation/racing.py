"""The racing rule of a study: after each round of seeds, which arms stop, and why.

A race runs every arm on `min_seeds` seeds, then adds `step` seeds per round to the arms still
unresolved, up to `max_seeds`; the baseline runs every seed any arm runs, so every difference
stays paired (`next_round`). After each round (a look) every arm still racing is judged as
`verdicts.py` judges a table: a paired t-test against the baseline and, with an equivalence
margin, two one-sided tests (TOST), each family corrected across the arms. An arm stops
`stop-better`, `stop-worse` or `stop-equivalent` when its verdict is resolved, `stop-max` when it
is still unresolved at `max_seeds`, `stop-futile` when it is unresolved and resolving it by
`max_seeds` has become unlikely, and otherwise continues.

Futility (`futility`, default 0.1): at a look before the last, an unresolved arm stops when its
conditional power is below `futility`: the chance, if the arm's true difference and SD were the
ones observed so far ("the current trend"), that the test at the planned max_seeds (at that
look's level, before correction: an optimistic bar, so the stop is cautious) would call it
better / worse or, with a margin, equivalent; looks that `--extend` adds have no futility stop.
Such a stop gives no verdict, so it cannot add a false one (a non-binding futility boundary); it
costs power on arms whose early seeds understate their effect, which `bench/racing.py`
measures. 0 turns it off.

Looking again after every round must not inflate the error rate. The boundary here is
Bonferroni over the planned looks with a linear spending schedule: look k, at n_k seeds, tests
at level α_k = α · (n_k − n_{k−1}) / max_seeds (n_0 = 0), the increments of the Kim–DeMets
power-family spending function α·t^ρ at information t = n / max_seeds (ρ = 1, between Pocock's
and O'Brien–Fleming's), used as plain per-look levels with no credit for the correlation
between looks. The α_k sum to α (looks `--extend` adds spend more: `error_bound`), so by the
union bound the chance of any false verdict of one family over all looks is at most α whatever
the dependence between looks (with an equivalence margin there are two families, the difference
tests and the TOST tests, each held to α: 2α for both together).
That is why this and not a group-sequential boundary proper: Pocock / O'Brien–Fleming boundaries
and their spending-function versions assume normal statistics with known variance and independent
increments, while a race's t-statistics have 2 to ~11 degrees of freedom. The price is power at
the last look (α_K < α); `bench/racing.py` measures it against the fixed `max_seeds` design.

Across arms at each look: Holm (or BH) over the arms not yet stopped better / worse; those were
rejections, so they leave the family as in Holm's step-down (for the first false rejection, every
earlier one was true), while arms stopped as equivalent stay in it with p = 1. The TOST family
likewise: arms stopped as equivalent leave it, the others stay with p = 1. A first false verdict at
look k then needs some true null's p <= α_k / (number of true nulls): probability <= α_k, and the
sum over looks <= α. With `bh` each look controls the false discovery rate instead (and, when no
arm differs, the family-wise rate, by the same sum). Pure numpy / scipy: no Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from model.config import ConfigError
from orchestrator.ablation.verdicts import (
    ALPHA,
    BETTER,
    EQUIVALENT,
    WORSE,
    check_judging,
    classify_differences,
)
from orchestrator.stats import adjust_pvalues, paired_t_tests, tost_pvalues

CONTINUE = "continue"
STOP_BETTER, STOP_WORSE = "stop-better", "stop-worse"
STOP_EQUIVALENT, STOP_MAX, STOP_FUTILE = "stop-equivalent", "stop-max", "stop-futile"
DECISIONS: tuple[str, ...] = (
    STOP_BETTER, STOP_WORSE, STOP_EQUIVALENT, CONTINUE, STOP_MAX, STOP_FUTILE
)  # fmt: skip
STOP_VERDICTS = {STOP_BETTER: BETTER, STOP_WORSE: WORSE, STOP_EQUIVALENT: EQUIVALENT}


@dataclass(frozen=True)
class RacingDesign:
    """A race: seeds per arm from `min_seeds` to `max_seeds` in rounds of `step`, the overall
    error rate α, the correction across arms and an optional equivalence margin."""

    min_seeds: int = 3
    max_seeds: int = 12
    step: int = 3
    alpha: float = ALPHA
    correction: str = "holm"
    equivalence: float | None = None
    # The seeds α is spread over (default max_seeds). `--extend N` raises max_seeds by N rounds
    # but not this: the extra looks spend α·step/spend_seeds each, beyond α (see `extended`).
    spend_seeds: int | None = None
    futility: float = 0.1  # stop an unresolved arm below this conditional power (0: never)

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ConfigError(
                f"seeds: expected 2 <= min <= max, got min {self.min_seeds}, max {self.max_seeds}"
            )
        if self.step < 1:
            raise ConfigError(f"step: expected >= 1 seed per round, got {self.step}")
        check_judging(self.alpha, self.correction, self.equivalence)
        if not 0 <= self.futility < 1:
            raise ConfigError(f"futility: expected a power in [0, 1), got {self.futility}")
        planned = self.spend_seeds or self.max_seeds
        whole_rounds = (self.max_seeds - planned) % self.step == 0
        if not (self.min_seeds <= planned <= self.max_seeds and whole_rounds):
            raise ConfigError(
                f"spend_seeds: expected min_seeds <= it <= max_seeds, whole rounds of "
                f"step before max_seeds, got {self.spend_seeds}"
            )

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per arm at each look: min, min + step, ..., and the planned max; after
        `extended`, a look every step seeds past it up to max_seeds."""
        planned = self.planned_max
        extra = range(planned + self.step, self.max_seeds + 1, self.step)
        return (*range(self.min_seeds, planned, self.step), planned, *extra)

    def look_alpha(self, look: int) -> float:
        """The level of look `look` (1-based): α · (n_k − n_{k−1}) / planned_max, n_0 = 0."""
        seeds = (0, *self.looks)
        return self.alpha * (seeds[look] - seeds[look - 1]) / self.planned_max

    @property
    def planned_max(self) -> int:
        """max_seeds as planned, before `extended`: the futility rule's horizon."""
        return self.spend_seeds or self.max_seeds

    @property
    def error_bound(self) -> float:
        """The bound on a family's chance of any false verdict: the sum of the looks' levels (α,
        or more after `--extend`)."""
        return sum(self.look_alpha(k) for k in range(1, len(self.looks) + 1))

    def extended(self, rounds: int) -> RacingDesign:
        """The race with `rounds` more rounds of `step` seeds after max_seeds, spending at the
        planned rate per seed, so the bound grows to α·(max + rounds·step)/max."""
        if rounds < 0:
            raise ValueError(f"rounds: expected >= 0, got {rounds}")
        planned = self.planned_max
        return replace(self, max_seeds=self.max_seeds + rounds * self.step, spend_seeds=planned)

    def next_look(self, seeds: int) -> int | None:
        """The seeds of the first look after `seeds` (None at or past max_seeds)."""
        return next((n for n in self.looks if n > seeds), None)


def judge_look(diffs: Any, state: Any, look: int, design: RacingDesign) -> np.ndarray:
    """The decisions of one look for many races at once. `diffs` [..., arms, n_k]: each arm's
    paired differences over the look's n_k seeds (rows of stopped arms are ignored); `state`
    [..., arms]: CONTINUE for an arm still racing, else how it stopped. Returns the new state."""
    d = np.asarray(diffs, dtype=np.float64)
    state = np.asarray(state, dtype=object)
    if d.shape[-1] != design.looks[look - 1]:
        raise ValueError(f"look {look} judges {design.looks[look - 1]} seeds, got {d.shape[-1]}")
    running = state == CONTINUE
    mean, _, p = paired_t_tests(d)
    rejected = (state == STOP_BETTER) | (state == STOP_WORSE)
    adjusted = adjust_pvalues(_family(p, running, rejected), design.correction)
    adjusted_equivalent = np.full(adjusted.shape, np.nan)
    if design.equivalence is not None:
        p_equivalent = tost_pvalues(d, design.equivalence)
        family = _family(p_equivalent, running, state == STOP_EQUIVALENT)
        adjusted_equivalent = adjust_pvalues(family, design.correction)
    verdict = classify_differences(mean, adjusted, adjusted_equivalent, design.look_alpha(look))
    last = look == len(design.looks)
    before_horizon = d.shape[-1] < design.planned_max  # futility looks no further (see below)
    futile = (conditional_power(d, design) < design.futility) & before_horizon
    decided = np.select(
        [verdict == BETTER, verdict == WORSE, verdict == EQUIVALENT, futile],
        [STOP_BETTER, STOP_WORSE, STOP_EQUIVALENT, STOP_FUTILE],
        STOP_MAX if last else CONTINUE,
    )
    return np.where(running, decided, state)


def conditional_power(diffs: Any, design: RacingDesign) -> np.ndarray:
    """Per arm, the chance under the current trend that the planned last look resolves it (the
    planned max, not one `--extend` added, so an extension never changes an earlier decision):
    the mean over those N seeds is then normal around the observed mean d with SD
    s·sqrt(N − n)/N (the N − n seeds to come), against that look's two-sided t bound c·s/sqrt(N)
    (better / worse) or,
    with a margin m, the one-sided bound c1·s/sqrt(N) inside ±m (equivalent). NaN statistics
    (fewer than 2 pairs, equal differences): 1, never futile."""
    d = np.asarray(diffs, dtype=np.float64)
    n, total = d.shape[-1], design.planned_max
    mean, sd, p = paired_t_tests(d)
    level = design.look_alpha(design.looks.index(total) + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = sd * math.sqrt(max(total - n, 0)) / total
        bound = stats.t.isf(level / 2, total - 1) * sd / math.sqrt(total)
        size = np.abs(mean)  # both tails: past +bound or below -bound
        power = stats.norm.sf((bound - size) / spread) + stats.norm.cdf((-bound - size) / spread)
        if design.equivalence is not None:
            inner = design.equivalence - stats.t.isf(level, total - 1) * sd / math.sqrt(total)
            low, high = ((edge - mean) / spread for edge in (-inner, inner))
            inside = stats.norm.cdf(high) - stats.norm.cdf(low)
            power = np.maximum(power, np.where(inner > 0, inside, 0.0))
    return np.where(np.isnan(p) | np.isnan(power), 1.0, power)


def _family(p: np.ndarray, running: np.ndarray, left: np.ndarray) -> np.ndarray:
    """A look's p-values for one family: running arms' own (NaN, no test yet, as 1), NaN for the
    arms that left the family (not counted), 1 for the other stopped arms (counted)."""
    return np.where(running, np.nan_to_num(p, nan=1.0), np.where(left, np.nan, 1.0))


def decide(
    diffs: Mapping[str, Sequence[float]],
    look: int,
    design: RacingDesign,
    stopped: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The decision at look `look` (1-based) for each arm still racing. `diffs`: each such arm's
    paired differences to the baseline in the order its seeds ran (the first n_k count);
    `stopped`: each arm that stopped at an earlier look, and how."""
    stopped = dict(stopped or {})
    if not 1 <= look <= len(design.looks):
        raise ValueError(f"look: expected 1-{len(design.looks)}, got {look}")
    n = design.looks[look - 1]
    for arm, values in diffs.items():
        if arm in stopped:
            raise ValueError(f"{arm}: has stopped ({stopped[arm]}), it cannot race on")
        if len(values) < n:
            raise ValueError(f"{arm}: {len(values)} paired seeds, look {look} needs {n}")
    if any(how not in DECISIONS or how == CONTINUE for how in stopped.values()):
        raise ValueError(f"stopped: expected decisions among {DECISIONS[:3]}, got {stopped}")
    arms = [*diffs, *stopped]
    matrix = np.zeros((len(arms), n))
    for i, arm in enumerate(diffs):
        matrix[i] = np.asarray(diffs[arm], dtype=np.float64)[:n]
    state = np.array([CONTINUE] * len(diffs) + list(stopped.values()), dtype=object)
    decided = judge_look(matrix, state, look, design)[: len(diffs)]
    return {arm: str(how) for arm, how in zip(diffs, decided, strict=True)}


def next_round(
    decisions: Mapping[str, str], seeds_run: Mapping[str, int], baseline: str, design: RacingDesign
) -> dict[str, int]:
    """How many seeds each arm runs next: every arm that continues goes up to the next look's
    count, the baseline up to the most seeds any arm will then have run; arms that stopped run
    none. {} when no arm continues. `seeds_run` counts each arm's paired seeds so far (a missing
    arm: none)."""
    targets: dict[str, int] = {}
    for arm, how in decisions.items():
        target = design.next_look(seeds_run.get(arm, 0)) if how == CONTINUE else None
        if target is not None:
            targets[arm] = target
    if not targets:
        return {}
    plan = {arm: target - seeds_run.get(arm, 0) for arm, target in targets.items()}
    base = max(targets.values()) - seeds_run.get(baseline, 0)
    return plan | ({baseline: base} if base > 0 else {})


@dataclass(frozen=True)
class RaceStop:
    """Where an arm's race stands: its decision (a stop, or `continue`), the look that made it
    (0: none judged yet) and the seeds per arm at that look."""

    decision: str
    look: int
    seeds: int

    def describe(self) -> str:
        if self.look == 0:
            return "not judged yet"
        return f"{self.decision} at look {self.look} ({self.seeds} seeds)"


def replay_race(
    values: Mapping[str, Mapping[int, float]],
    ran: Mapping[str, int],
    arms: Sequence[str],
    baseline: str,
    design: RacingDesign,
) -> dict[str, RaceStop]:
    """The race so far, look by look, of every arm but the baseline. `values`: each arm's study
    metric per seed index (completed runs only); `ran`: how many seeds each arm has run (in any
    state). A look is judged once every arm still racing and the baseline have run its seeds; a
    seed an arm or the baseline has no value for (a failed run) is a NaN difference, so its
    test is NaN and decides nothing (the arm races on)."""
    stops = {arm: RaceStop(CONTINUE, 0, 0) for arm in arms if arm != baseline}
    for look, n in enumerate(design.looks, start=1):
        racing = [arm for arm, stop in stops.items() if stop.decision == CONTINUE]
        if not racing or min(ran.get(arm, 0) for arm in (*racing, baseline)) < n:
            break
        base = values.get(baseline, {})
        diffs = {
            arm: [values.get(arm, {}).get(s, np.nan) - base.get(s, np.nan) for s in range(n)]
            for arm in racing
        }
        stopped = {arm: stop.decision for arm, stop in stops.items() if arm not in diffs}
        for arm, how in decide(diffs, look, design, stopped).items():
            stops[arm] = RaceStop(how, look, n)
    return stops
