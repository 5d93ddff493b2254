"""Search-space YAML -> a validated `SearchSpace`: which config keys a sweep varies, and how.

A space file names the sweep, its base training config, the metric, sampler, scheduler and
resources, and maps dotted `TrainConfig` keys to a distribution (`{float: [lo, hi], log: true}`,
`{int: [lo, hi]}`, `{choice: [...]}`) or a fixed value, optionally under a condition
(`when: {smart.weight: {gt: 0}}`); orchestrator/space/params.py parses those entries. Everything
is checked at load time against the trainer's dataclasses; a `SpaceError` names the file and the
key. Nothing here knows Optuna or Ray.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from model.config import ConfigError, TrainConfig, is_finite_number
from model.data_dir import resolve_data_files
from model.evaluate import OVERALL
from orchestrator.config import load_train_config, load_yaml_file
from orchestrator.objectives import Constraint, Objective
from orchestrator.space.arms import STUDY_KEYS, StudySpec, parse_study
from orchestrator.space.guards import check_space_settings
from orchestrator.space.lineage import WarmStartSpec, parse_warm_start
from orchestrator.space.objective_keys import check_fit, parse_constraints, parse_objectives
from orchestrator.space.params import Condition, Fail, Param, parse_params
from orchestrator.space.retention import RetentionSpec, parse_retention

__all__ = [
    "Condition",
    "Param",
    "Resources",
    "SchedulerSpec",
    "SearchSpace",
    "SpaceError",
    "check_name",
    "load_space",
    "parse_space",
    "run_name",
]

SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2")
TOP_LEVEL_KEYS = frozenset(
    {
        "name", "description", "base", "metric", "mode", "num_samples", "max_concurrent",
        "resources", "sampler", "seed", "scheduler", "repeats", "space", "constraints",
        "warm_start", "retention",
        *STUDY_KEYS,
    }
)  # fmt: skip


class SpaceError(ConfigError):
    """A search-space file is invalid; the message names the file and the offending key."""


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for: CPUs and a (possibly fractional) GPU."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class SchedulerSpec:
    """`asha` stops weak trials at rungs of `grace_period * reduction_factor**k` epochs."""

    name: Literal["asha", "none"] = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_epochs: int = 1


@dataclass(frozen=True)
class SearchSpace:
    """A validated sweep: base config, objective, sampler, scheduler and the parameters."""

    name: str
    source: str
    base: TrainConfig
    params: tuple[Param, ...]
    metric: str = OVERALL
    mode: Literal["max", "min"] = "max"
    num_samples: int = 8
    max_concurrent: int | None = None
    resources: Resources = Resources()
    sampler: str = "tpe"
    seed: int = 0
    scheduler: SchedulerSpec = SchedulerSpec()
    repeats: int = 1
    description: str = ""
    study: StudySpec | None = None  # arms × seeds (space/arms.py); None: a plain sweep
    # Labels every trial of this space carries besides config keys (a study phase's arm and
    # phase, see contract.LABEL_KEYS); empty for a plain sweep.
    labels: tuple[tuple[str, str], ...] = ()
    # Every objective (`metric: [a, b]`; the first is `metric`/`mode`), and the constraints a
    # trial's final metrics must meet to count (orchestrator/objectives.py).
    objectives: tuple[Objective, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    warm_start: WarmStartSpec | None = None  # an earlier sweep to start from (warm_start.py)
    # Which finished trials keep their weights (space/retention.py). A plain default (frozen,
    # so shared safely): a class attribute, which a space pickled before it existed reads.
    retention: RetentionSpec = RetentionSpec()  # noqa: RUF009

    def __post_init__(self) -> None:
        first = Objective(self.metric, self.mode)
        if len(self.objectives) <= 1:  # one objective: metric/mode say it (also after replace)
            object.__setattr__(self, "objectives", (first,))
        elif self.objectives[0] != first:
            raise SpaceError(f"{self.source}: metric: the first objective must be {first}")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def keep_best(self) -> int | None:
        """How many best finished trials keep their weights; None: all (a study, its phases and
        a multi-objective sweep always: see space/retention.py)."""
        if self.study is not None or self.labels or self.multi_objective:
            return None
        return self.retention.keep_best

    @property
    def searched(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.searched)

    @property
    def total_trials(self) -> int:
        """Ray trials in the sweep: every sampled config runs `repeats` times with new seeds."""
        return self.num_samples * self.repeats

    def replace(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **changes)

    def with_data_files(self, data_dir: Path) -> SearchSpace:
        """This space with its base's `data.para_train: auto` resolved to the Quora file in
        `data_dir`, so MLflow params and sweep.json name the file the trials read."""
        return self.replace(base=resolve_data_files(self.base, Path(data_dir), strict=False))


def load_space(path: Path | str) -> SearchSpace:
    """Read and validate a search-space YAML file; raise SpaceError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file")
    raw = load_yaml_file(path, SpaceError)
    return parse_space(raw, source=str(path), base_dir=path.parent, default_name=path.stem)


def parse_space(
    raw: Any, *, source: str = "<inline>", base_dir: Path = Path("."), default_name: str = "sweep"
) -> SearchSpace:
    """Validate a search-space mapping (as read from YAML); `source` names it in errors."""

    def fail(key: str, message: str) -> SpaceError:
        return SpaceError(f"{source}: {key}: {message}")

    if not isinstance(raw, Mapping):
        raise SpaceError(f"{source}: expected a mapping at the top level")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise fail(str(key), f"unknown key (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    # Checked in the order a reader meets the keys; the first problem is the one reported.
    name = check_name(raw.get("name", default_name), source)
    base = _load_base(raw.get("base"), base_dir, fail)
    fields: dict[str, Any] = {
        "name": name,
        "base": base,
        **_parse_objective(raw, base, fail),
        **_parse_budget(raw, fail),
        "resources": _parse_resources(raw.get("resources", {}), fail),
    }
    check_fit(fields["objectives"], fields["constraints"], raw, fail)
    # A study may run its arms without tuning anything: then `space:` is optional.
    no_space = "arms" in raw and raw.get("space") is None
    params = [] if no_space else parse_params(raw.get("space"), fields["base"], fail)
    _check_params_fit(params, fields["repeats"], fields["sampler"], fail)
    study = parse_study(raw, fields["base"], [p.key for p in params], fail)
    if study is not None:
        _check_study_fits(study, params, fields["repeats"], fail)
    warm_start = parse_warm_start(raw.get("warm_start"), fail)
    if warm_start is not None and study is not None:
        raise fail("warm_start", "an ablation study cannot warm-start; use it in a plain sweep")
    check_space_settings(source, base, params, study, fail)  # inert knobs: warn, or fail an arm
    max_epochs = _max_epochs(fields["base"], params)
    # Several objectives run every trial to the end (objectives.check_fit says why).
    scheduler = raw.get("scheduler", "none" if len(fields["objectives"]) > 1 else "asha")
    return SearchSpace(
        source=source,
        params=tuple(params),
        scheduler=_parse_scheduler(scheduler, max_epochs, fail),
        description=str(raw.get("description", "")),
        study=study,
        warm_start=warm_start,
        retention=parse_retention(raw.get("retention"), fail),
        **fields,
    )


def _check_study_fits(study: StudySpec, params: list[Param], repeats: int, fail: Fail) -> None:
    """A study owns the seeds (every arm runs each of them) and phase 2's epochs."""
    if repeats > 1:
        raise fail("repeats", "a study runs every arm on each of its seeds: use seeds:")
    for key in ("seed", "optim.epochs"):
        if any(p.key == key and p.searched for p in params):
            owner = "seeds:" if key == "seed" else "confirm_epochs: (phase 2) and the scheduler"
            raise fail(f"space.{key}", f"in a study {key} is set by {owner}; do not search it")


def _parse_objective(raw: Mapping[str, Any], base: TrainConfig, fail: Fail) -> dict[str, Any]:
    """`metric` and `mode` (one objective or several), then `constraints`; see objectives.py."""
    objectives = parse_objectives(raw, base, fail)
    constraints = parse_constraints(raw.get("constraints"), base, fail)
    first = objectives[0]
    return {"metric": first.metric, "mode": first.mode, "objectives": objectives,
            "constraints": constraints}  # fmt: skip


def _parse_budget(raw: Mapping[str, Any], fail: Fail) -> dict[str, Any]:
    """How many trials, how many at once, repeats per config, and the sampler with its seed."""
    num_samples = _positive_int(raw.get("num_samples", 8), "num_samples", fail)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _positive_int(max_concurrent, "max_concurrent", fail)
    repeats = _positive_int(raw.get("repeats", 1), "repeats", fail)
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise fail("seed", f"expected an integer, got {seed!r}")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise fail("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    return {
        "num_samples": num_samples,
        "max_concurrent": max_concurrent,
        "repeats": repeats,
        "seed": seed,
        "sampler": sampler,
    }


def _check_params_fit(params: list[Param], repeats: int, sampler: str, fail: Fail) -> None:
    """Rules that tie the parameters to the rest of the space: repeats own the seed, and the
    grid sampler needs a finite grid."""
    if repeats > 1 and any(p.key == "seed" for p in params):
        raise fail("repeats", "repeats > 1 sets the seed of each repeat; remove 'seed' from space")
    if sampler == "grid":
        for p in params:
            if p.kind == "float" and p.step is None:
                raise fail(f"space.{p.key}", "grid sampler: use choice, int, or float with step")


def check_name(name: Any, source: str = "--name") -> str:
    """A sweep name is a directory and an MLflow experiment: letters, digits, `_`, `-`, `.`."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpaceError(
            f"{source}: name: expected letters, digits, '_', '-' or '.', got {name!r}"
        )
    return name


def run_name(
    space: SearchSpace, params: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> str:
    """A short name carrying the swept values, e.g. `smart.weight=2.1 optim.lr=3e-05`; a study's
    runs lead with their arm (`labels`): `smart optim.lr=3e-05 seed=1`."""
    arm = (labels or {}).get("arm")
    parts = [arm] if arm else []
    parts += [f"{p.key}={_short(params[p.key])}" for p in space.searched if p.key in params]
    if (space.repeats > 1 or arm) and "seed" in params:
        parts.append(f"seed={params['seed']}")
    return " ".join(parts) or "base"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


def _load_base(base: Any, base_dir: Path, fail: Fail) -> TrainConfig:
    """`base:` is a YAML path (relative to the space file) or an inline mapping."""
    if base is None:
        raise fail("base", "missing: give a training config path (../configs/x.yaml) or a mapping")
    if isinstance(base, str):
        path = Path(base)
        if not path.is_absolute() and (base_dir / path).is_file():
            path = base_dir / path  # relative to the space file first, then to the working dir
        if not path.is_file():
            raise fail("base", f"no such config file {path}")
        try:
            return load_train_config(path)
        except ConfigError as err:
            raise fail("base", str(err)) from None
    if isinstance(base, Mapping):
        try:
            return load_train_config(base)
        except ConfigError as err:
            raise fail("base", str(err)) from None
    raise fail("base", f"expected a path or a mapping, got {type(base).__name__}")


def _positive_int(value: Any, key: str, fail: Fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(key, f"expected an integer >= 1, got {value!r}")
    return value


def _parse_resources(raw: Any, fail: Fail) -> Resources:
    if not isinstance(raw, Mapping):
        raise fail("resources", "expected a mapping like {cpu: 1, gpu: 0.5}")
    for key in raw:
        if key not in ("cpu", "gpu"):
            raise fail(f"resources.{key}", "unknown key (known: cpu, gpu)")
    cpu, gpu = raw.get("cpu", 1.0), raw.get("gpu", 0.0)
    if not is_finite_number(cpu) or cpu <= 0:
        raise fail("resources.cpu", f"expected a number > 0, got {cpu!r}")
    if not is_finite_number(gpu) or gpu < 0:
        raise fail("resources.gpu", f"expected a number >= 0 (fractions share a GPU), got {gpu!r}")
    return Resources(cpu=float(cpu), gpu=float(gpu))


def _parse_scheduler(raw: Any, max_epochs: int, fail: Fail) -> SchedulerSpec:
    if raw in ("asha", "none", None):
        name: Literal["asha", "none"] = "asha" if raw == "asha" else "none"
        return SchedulerSpec(name=name, max_epochs=max_epochs)
    if not isinstance(raw, Mapping):
        raise fail("scheduler", f"expected asha, none or a mapping, got {raw!r}")
    known = {"name", "grace_period", "reduction_factor", "max_epochs"}
    for key in raw:
        if key not in known:
            raise fail(f"scheduler.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    name = raw.get("name", "asha")
    if name not in ("asha", "none"):
        raise fail("scheduler.name", f"expected asha or none, got {name!r}")
    grace = _positive_int(raw.get("grace_period", 1), "scheduler.grace_period", fail)
    factor = raw.get("reduction_factor", 2)
    if not is_finite_number(factor) or factor <= 1:
        raise fail("scheduler.reduction_factor", f"expected a number > 1, got {factor!r}")
    epochs = _positive_int(raw.get("max_epochs", max_epochs), "scheduler.max_epochs", fail)
    if name == "asha" and grace > epochs:
        raise fail("scheduler.grace_period", f"{grace} exceeds max_epochs {epochs}")
    return SchedulerSpec(name, grace, float(factor), epochs)


def _max_epochs(base: TrainConfig, params: list[Param]) -> int:
    """The most epochs any trial can train: the base's, or the top of a swept `optim.epochs`."""
    for p in params:
        if p.key == "optim.epochs":
            if p.kind == "fixed":
                return int(p.value)
            if p.kind == "choice":
                return int(max(p.choices))
            return int(p.high)  # type: ignore[arg-type]
    return base.optim.epochs
