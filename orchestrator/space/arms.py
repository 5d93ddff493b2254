"""The ablation-study part of a search space: `arms` × `seeds`, one arm the baseline.

    arms:                      # arm name -> dotted-key overrides of the base config
      baseline: {}
      smart: {smart.weight: 1.0}
      cross: {model.pair_encoding: cross}
    baseline: baseline         # default: the first arm
    seeds: 3                   # every arm runs on the same seeds: 0, 1, 2 (or a list [0, 7, 42])
    # or a race: seeds 0, 1, ... in rounds, each round only for the arms still unresolved
    # seeds: {min: 3, max: 12, step: 3}   # (futility: 0.1, ablation/racing.py; 0: never)
    confirm_epochs: 2          # phase 2's budget per run (default: the base config's epochs)
    equivalence: 0.005         # optional: |Δ| on the study's metric that does not matter (TOST)
    correction: holm           # across arms: holm (family-wise, default) or bh (FDR)

Every arm runs on every seed, so arm differences are paired by seed. With a `space:` too, phase 1
tunes those knobs inside each arm (`num_samples` trials per arm) and phase 2 re-runs each arm's
best config on every seed at the full budget; only phase 2 enters the table. Nothing here knows
Ray, Optuna or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from model.config import ConfigError, TrainConfig, config_field_types, flatten
from orchestrator.config import apply_params

STUDY_KEYS = ("arms", "baseline", "seeds", "confirm_epochs", "equivalence", "correction")
# The report's corrections across arms: stats.CORRECTIONS, spelled here too so that loading a
# space imports no scipy (a test keeps the two equal).
CORRECTIONS: tuple[str, ...] = ("holm", "bh")
# Keys an arm may not change: the study sets them the same for every arm, or comparisons break.
STUDY_OWNED = {
    "seed": "the study sets the seed of every run: use seeds:",
    "optim.epochs": "every arm gets the same budget: use confirm_epochs:",
    "data.selection": "every arm ranks on the same selection split: set it in the base config",
}
MAX_SEEDS = 1000  # a typo guard: `seeds: 30000` is not an ablation anyone waits for

Fail = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class Arm:
    """One model variant: its name and the dotted config keys it changes."""

    name: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.overrides)

    def describe(self) -> str:
        """`smart.weight=1.0, pcgrad.enabled=True`, or `base config` for the baseline."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides) or "base config"


@dataclass(frozen=True)
class SeedRace:
    """`seeds: {min, max, step}`: every arm runs seeds 0..min-1, then rounds of `step` more seeds
    for the arms still unresolved, up to `max` (ablation/racing.py decides after each round)."""

    min: int
    max: int
    step: int
    futility: float = 0.1  # an unresolved arm stops below this conditional power (0: never)

    def __post_init__(self) -> None:
        if not 2 <= self.min <= self.max <= MAX_SEEDS:
            raise ConfigError(
                f"seeds: expected 2 <= min <= max <= {MAX_SEEDS}, "
                f"got min {self.min}, max {self.max}"
            )
        if self.step < 1:
            raise ConfigError(f"seeds.step: expected >= 1 seed per round, got {self.step}")
        if not 0 <= self.futility < 1:
            raise ConfigError(f"seeds.futility: expected a power in [0, 1), got {self.futility}")

    def record(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "step": self.step, "futility": self.futility}


@dataclass(frozen=True)
class StudySpec:
    """Validated arms, the baseline arm's name, the shared seeds, phase 2's epochs, and how the
    report judges the arms: the correction across them and an optional equivalence margin."""

    arms: tuple[Arm, ...]
    baseline: str
    seeds: tuple[int, ...]
    confirm_epochs: int
    correction: str = "holm"
    equivalence: float | None = None
    race: SeedRace | None = None  # seeds in rounds; `seeds` is then 0..race.max-1

    def __post_init__(self) -> None:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"arms: duplicate arm names in {names}")
        if self.baseline not in names:
            raise ConfigError(f"baseline: {self.baseline!r} is not an arm ({', '.join(names)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {list(self.seeds)}")
        if self.confirm_epochs < 1:
            raise ConfigError(f"confirm_epochs: expected >= 1, got {self.confirm_epochs}")
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"correction: expected one of {CORRECTIONS}, got {self.correction}")
        if self.equivalence is not None and not self.equivalence > 0:
            raise ConfigError(f"equivalence: expected a margin > 0, got {self.equivalence}")
        if self.race is not None and self.seeds != tuple(range(self.race.max)):
            raise ConfigError(f"seeds: a race runs seeds 0-{self.race.max - 1}, got {self.seeds}")

    def arm(self, name: str) -> Arm:
        return next(arm for arm in self.arms if arm.name == name)

    @property
    def runs(self) -> int:
        """Phase-2 runs: every arm on every seed (for a race, at most)."""
        return len(self.arms) * len(self.seeds)


def parse_study(
    raw: Mapping[str, Any], base: TrainConfig, space_keys: Iterable[str], fail: Fail
) -> StudySpec | None:
    """The study of a space mapping, or None when it declares no `arms`; `fail(key, message)`
    builds the error naming the space file and key."""
    if "arms" not in raw:
        stray = [key for key in STUDY_KEYS if key in raw]
        if stray:
            raise fail(stray[0], "only meaningful with arms: (declare the arms of the study)")
        return None
    arms = _parse_arms(raw["arms"], base, set(space_keys), fail)
    baseline = raw.get("baseline", arms[0].name)
    if not isinstance(baseline, str) or baseline not in {arm.name for arm in arms}:
        known = ", ".join(arm.name for arm in arms)
        raise fail("baseline", f"{baseline!r} is not one of the arms ({known})")
    race = _parse_race(raw["seeds"], fail) if isinstance(raw.get("seeds"), Mapping) else None
    seeds = tuple(range(race.max)) if race else _parse_seeds(raw.get("seeds", 3), fail)
    epochs = raw.get("confirm_epochs", _fixed_epochs(raw, base))
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise fail("confirm_epochs", f"phase 2 needs an integer budget >= 1, got {epochs!r}")
    correction = raw.get("correction", "holm")
    if correction not in CORRECTIONS:
        raise fail("correction", f"expected holm or bh, got {correction!r}")
    margin = _equivalence(raw, fail)
    return StudySpec(tuple(arms), baseline, seeds, epochs, correction, margin, race)


def _equivalence(raw: Mapping[str, Any], fail: Fail) -> float | None:
    """The equivalence margin on the study's metric: a number > 0, or None when not given."""
    margin = raw.get("equivalence")
    if margin is None:
        return None
    number = isinstance(margin, (int, float)) and not isinstance(margin, bool)
    if not number or not math.isfinite(margin) or margin <= 0:
        raise fail("equivalence", f"expected a margin > 0 on the study's metric, got {margin!r}")
    return float(margin)


def _parse_arms(raw: Any, base: TrainConfig, space_keys: set[str], fail: Fail) -> list[Arm]:
    if not isinstance(raw, Mapping) or not raw:
        raise fail("arms", "expected a mapping of arm names to overrides, e.g. {smart: {...}}")
    arms = []
    for name, overrides in raw.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise fail(f"arms.{name}", "an arm name is letters, digits, '_' or '-'")
        arms.append(Arm(name, _parse_overrides(name, overrides, base, space_keys, fail)))
    _check_distinct(arms, base, fail)
    return arms


def _check_distinct(arms: list[Arm], base: TrainConfig, fail: Fail) -> None:
    """Two arms that build the same config are one variant under two names: its runs would be
    compared with themselves (a zero difference reported as a finding)."""
    built: list[tuple[Arm, TrainConfig]] = []
    for arm in arms:
        config = apply_params(base, arm.params)
        same = next((other for other, seen in built if seen == config), None)
        if same is not None:
            raise fail(
                f"arms.{arm.name}",
                f"the same settings as arm '{same.name}' ({same.describe()}; {arm.describe()}): "
                "one variant under two names; drop one, or change what it overrides",
            )
        built.append((arm, config))


def _parse_overrides(
    name: str, raw: Any, base: TrainConfig, space_keys: set[str], fail: Fail
) -> tuple[tuple[str, Any], ...]:
    where = f"arms.{name}"
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise fail(where, f"expected a mapping of dotted config keys to values, got {raw!r}")
    known = config_field_types()
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        is_section = key not in known and any(k.startswith(f"{key}.") for k in known)
        nested = is_section and isinstance(value, Mapping)
        flat.update(flatten({key: value}) if nested else {key: value})
    for key, value in flat.items():
        if key not in known:
            raise fail(f"{where}.{key}", "unknown config key")
        if key in STUDY_OWNED:
            raise fail(f"{where}.{key}", STUDY_OWNED[key])
        if key in space_keys:
            raise fail(f"{where}.{key}", "also in space: an arm fixes what phase 1 would tune")
        try:
            apply_params(base, {key: value})
        except ConfigError as err:
            raise fail(f"{where}.{key}", str(err)) from None
    try:
        apply_params(base, flat)  # the arm's keys together (e.g. a schedule and its order)
    except ConfigError as err:
        raise fail(where, str(err)) from None
    return tuple((k, _freeze(v)) for k, v in flat.items())


def _fixed_epochs(raw: Mapping[str, Any], base: TrainConfig) -> Any:
    """Phase 2's default budget: a fixed `optim.epochs` of the space, else the base config's."""
    space = raw.get("space")
    fixed = space.get("optim.epochs") if isinstance(space, Mapping) else None
    return fixed if isinstance(fixed, int) and not isinstance(fixed, bool) else base.optim.epochs


def _parse_seeds(raw: Any, fail: Fail) -> tuple[int, ...]:
    def non_negative_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value

    if non_negative_int(raw):
        if not 1 <= raw <= MAX_SEEDS:
            raise fail("seeds", f"expected a count in 1-{MAX_SEEDS} or a list, got {raw!r}")
        return tuple(range(raw))
    if not isinstance(raw, list) or not raw or not all(map(non_negative_int, raw)):
        raise fail("seeds", f"expected a count or a list of non-negative integers, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise fail("seeds", f"seeds repeat: {raw}")
    return tuple(raw)


def _parse_race(raw: Mapping[str, Any], fail: Fail) -> SeedRace:
    """`seeds: {min: 3, max: 12, step: 3, futility: 0.1}` (step defaults to min)."""
    unknown = sorted(set(map(str, raw)) - {"min", "max", "step", "futility"})
    if unknown:
        expected = "expected min, max, step, futility"
        raise fail(f"seeds.{unknown[0]}", f"unknown key of a race; {expected}")
    for key in ("min", "max"):
        if key not in raw:
            raise fail("seeds", f"a race needs {key}: e.g. {{min: 3, max: 12, step: 3}}")
    values = {key: raw.get(key, raw["min"]) for key in ("min", "max", "step")}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"seeds.{key}", f"expected an integer, got {value!r}")
    futility = raw.get("futility", 0.1)
    if isinstance(futility, bool) or not isinstance(futility, (int, float)):
        raise fail("seeds.futility", f"expected a number, got {futility!r}")
    try:
        return SeedRace(values["min"], values["max"], values["step"], float(futility))
    except ConfigError as err:
        key, _, message = str(err).partition(": ")
        raise fail(key, message) from None


def _freeze(value: Any) -> Any:
    """Lists become tuples, so arms hash and compare like the frozen config does."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value
