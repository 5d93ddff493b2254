"""Optuna, the sweep's searcher: a define-by-run function generated from a `SearchSpace`, the
sampler it names, and `SweepStudy`, the persisted ask/tell study the sweep driver feeds.

With `search/importance.py`, the only module that imports optuna; it knows nothing of Ray (the Ray
adapter, `ray_tune.StudySearcher`, forwards Tune's searcher calls here). A trial the scheduler
stopped early is told PRUNED with its last value, not COMPLETE (as Ray's own `OptunaSearch`
would), so TPE never mistakes a one-epoch score for a final one; a non-finite one is told FAIL.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import optuna
from optuna.trial import TrialState

from model.config import is_finite_number
from orchestrator.config import apply_params
from orchestrator.contract import EPOCHS_LEFT, NONFINITE_LOSS, trial_labels, trial_params
from orchestrator.objectives import constraint_values, final_metrics
from orchestrator.space.guards import warn_sampled_settings
from orchestrator.space.schema import Param, SearchSpace, SpaceError, run_name

logger = logging.getLogger(__name__)

REPEAT_ATTR = "repeat"  # which seed of a repeated config an Optuna trial runs (0 = first)
GROUP_ATTR = "group"  # Optuna number of the trial whose params a repeat copies
RAY_TRIAL_ATTR = "ray_trial_id"
ORPHAN_ATTR = "orphaned"  # asked by a driver that died before its state was saved
FAIL_REASON_ATTR = "fail_reason"


class DefineByRun:
    """Suggests every active parameter of a `SearchSpace` on an Optuna trial, in file order.

    Parameters whose `when` conditions fail are not suggested at all, so Optuna sees a conditional
    space; fixed values and (for repeats) the seed are returned alongside the suggested ones.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.space.params:
            if not param.active(values):
                continue
            values[param.key] = param.value if param.kind == "fixed" else _suggest(trial, param)
        if self.space.repeats > 1:
            values["seed"] = self.space.base.seed + int(trial.user_attrs.get(REPEAT_ATTR, 0))
        values.update(self.space.labels)  # a study phase's arm and phase (not config keys)
        return values


def _suggest(trial: optuna.Trial, param: Param) -> Any:
    low, high = param.low, param.high
    if param.kind == "float":
        assert low is not None and high is not None  # a range: space/schema.py checked it
        return trial.suggest_float(param.key, low, high, log=param.log, step=param.step)
    if param.kind == "int":
        assert low is not None and high is not None
        step = int(param.step or 1)
        return trial.suggest_int(param.key, int(low), int(high), log=param.log, step=step)
    encoded = [_encode_choice(c) for c in param.choices]
    picked = trial.suggest_categorical(param.key, encoded)
    return param.choices[encoded.index(picked)]


def _encode_choice(choice: Any) -> Any:
    """Optuna categoricals hold None/bool/int/float/str; lists (a task order) go in as JSON."""
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return json.dumps(choice)


def grid(space: SearchSpace) -> dict[str, list[Any]]:
    """Every searched parameter's grid values (choices, int range, float range by step)."""
    out: dict[str, list[Any]] = {}
    for p in space.searched:
        if p.kind == "choice":
            out[p.key] = [_encode_choice(c) for c in p.choices]
        else:
            step = p.step or 1
            count = math.floor((p.high - p.low) / step + 1e-9) + 1  # type: ignore[operator]
            values = [p.low + i * step for i in range(count)]  # type: ignore[operator]
            out[p.key] = [int(v) for v in values] if p.kind == "int" else values
    return out


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the space names, seeded with its `seed`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(space)


def _make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.seed
    if space.sampler == "tpe":
        # Random start-up trials: half the sweep, at most Optuna's default of 10, so a 6-trial
        # quickstart still gets some TPE proposals. `group` handles conditional parameters;
        # `constant_liar` keeps concurrent trials from proposing the same point.
        startup = max(1, min(10, space.total_trials // 2))
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup,
            multivariate=True,
            group=True,
            constant_liar=True,
        )
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if space.sampler == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise SpaceError(
                f"{space.source}: sampler: cmaes needs the 'cmaes' package (pip install cmaes)"
            )
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if space.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if space.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if space.sampler == "nsga2":
        # Two generations at least in a small sweep; Optuna's default population is 50.
        population = max(2, min(50, space.total_trials // 2))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    raise SpaceError(f"{space.source}: sampler: unknown sampler {space.sampler!r}")


class Repeat(NamedTuple):
    """A config to run again with the next seed: the first run's params and its trial number."""

    params: dict[str, Any]
    repeat: int
    group: int


class SweepStudy:
    """The sweep's Optuna study in an RDB `storage` (`sqlite:///.../optuna.db`), asked and told
    once per trial of the driver (named by the driver's trial id, stored as a user attr).

    Besides the study it holds only plain data (which trial ids were asked and told, the repeats
    still to run, the sampler and its RNG), which `save` writes and `restore` reads back; trials
    a dead driver asked after its last save are failed on restore instead of staying RUNNING.
    """

    def __init__(self, space: SearchSpace, storage: str) -> None:
        self.space = space
        self.storage = storage
        self.sampler = make_sampler(space)
        self.asked: dict[str, int] = {}  # trial id -> Optuna trial number
        self.told: set[str] = set()
        self.pending_repeats: list[Repeat] = []
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.RDBStorage | None = None
        self._storage_ids: dict[int, int] = {}  # trial number -> the storage's trial id

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into Ray's experiment state: the study reconnects to its storage when used.
        return {**self.__dict__, "_study": None, "_storage": None, "_storage_ids": {}}

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._storage = optuna.storages.RDBStorage(self.storage)
            self._study = optuna.create_study(
                storage=self._storage,
                sampler=self.sampler,
                pruner=optuna.pruners.NopPruner(),  # the sweep's scheduler stops trials
                study_name=self.space.name,
                directions=study_directions(self.space),
                load_if_exists=True,
            )
        return self._study

    def ask(self, trial_id: str) -> dict[str, Any]:
        """The params of trial `trial_id`: new ones from the sampler, or a config's next repeat."""
        new = trial_id not in self.asked
        if not new:
            trial = self._trial(self.asked[trial_id])
        else:
            trial = self._new_trial()
            self.asked[trial_id] = trial.number
        params = DefineByRun(self.space)(trial)
        if new and not trial.user_attrs.get(REPEAT_ATTR):  # once per sampled config
            label = f"{self.space.name} trial {trial.number}"
            warn_sampled_settings(
                self.space.base, trial_params(params), _searched(self.space), label
            )
        trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        if self.space.repeats > 1 and REPEAT_ATTR not in trial.user_attrs:
            trial.set_user_attr(REPEAT_ATTR, 0)
            trial.set_user_attr(GROUP_ATTR, trial.number)
            for repeat in range(1, self.space.repeats):
                self.pending_repeats.append(Repeat(dict(trial.params), repeat, trial.number))
        return params

    def _new_trial(self) -> optuna.Trial:
        if self.pending_repeats:
            params, repeat, group = self.pending_repeats.pop(0)
            self.study.enqueue_trial(params, user_attrs={REPEAT_ATTR: repeat, GROUP_ATTR: group})
        return self.study.ask()

    def report(self, trial_id: str, value: float, step: int) -> None:
        """An intermediate value (one epoch's metric) of a running trial; none in a
        multi-objective study (Optuna keeps intermediate values of one objective only)."""
        if self.space.multi_objective:
            return
        if trial_id in self.told or trial_id not in self.asked:
            logger.warning("optuna: result of a trial not running (%s) ignored", trial_id)
            return
        self._trial(self.asked[trial_id]).report(value, step)

    def tell(
        self, trial_id: str, last: Mapping[str, Any] | None, *, step: int, error: bool = False
    ) -> TrialState | None:
        """End a trial from its last result: COMPLETE, PRUNED when it ended with epochs left
        (or before any result), FAIL on `error` or a non-finite metric. Returns the state told."""
        if trial_id in self.told or trial_id not in self.asked:
            logger.warning("optuna: end of a trial not running (%s) ignored", trial_id)
            return None
        self.told.add(trial_id)
        number, last = self.asked[trial_id], last or {}
        values = self._objective_values(last)
        if error:
            return self._tell(number, None, TrialState.FAIL)
        nonfinite = [
            f"{o.metric} is {v}"
            for o, v in zip(self.space.objectives, values, strict=True)
            if v is not None and not is_finite_number(v)
        ]
        if nonfinite:
            reason = last.get(NONFINITE_LOSS) or nonfinite[0]
            self._trial(number).set_user_attr(FAIL_REASON_ATTR, str(reason))
            return self._tell(number, None, TrialState.FAIL)
        self._set_constraints(number, last)
        if None in values:  # stopped before its first result
            return self._tell(number, None, TrialState.PRUNED)
        # The scheduler's stopping result reaches only `tell`: report it so the study holds
        # every epoch, and a pruned trial's value (its last intermediate one) is this one.
        multi = self.space.multi_objective
        if not multi and step not in self._frozen(number).intermediate_values:
            self._trial(number).report(float(values[0]), step)
        if float(last.get(EPOCHS_LEFT, 0)) > 0:
            return self._tell(number, None, TrialState.PRUNED)
        told = [float(v) for v in values]
        return self._tell(number, told if multi else told[0], TrialState.COMPLETE)

    def _objective_values(self, last: Mapping[str, Any]) -> list[Any]:
        """The values told for a trial's last result: the last epoch's metric of one objective
        (what ASHA compared), or the best epoch's value of each of several (the point of the
        checkpoint `report` and `ensemble --select pareto` take; last epoch's if missing)."""
        if not self.space.multi_objective:
            return [last.get(self.space.metric)]
        best = final_metrics(last)
        return [best.get(o.metric, last.get(o.metric)) for o in self.space.objectives]

    def _set_constraints(self, number: int, last: Mapping[str, Any]) -> None:
        """Record each constraint's violation on the trial (Optuna 5's `set_constraint`), from
        its best-epoch metrics, so TPE, NSGA-II and GP and `study.best_trial(s)` know which
        trials are feasible; a trial without metrics violates every constraint (inf)."""
        trial, metrics = self._trial(number), final_metrics(last)
        for metric, violation in constraint_values(self.space.constraints, metrics).items():
            trial.set_constraint(metric, violation)

    def save(self, path: str | Path) -> None:
        """Write what `restore` needs to go on where this driver stands (the study is in RDB)."""
        state = {
            "asked": self.asked,
            "told": self.told,
            "pending_repeats": self.pending_repeats,
            "sampler": self.sampler,
        }
        Path(path).write_bytes(pickle.dumps(state))

    def restore(self, path: str | Path) -> None:
        """Go on from a `save`, failing trials asked after it (their driver died) as orphans."""
        state = pickle.loads(Path(path).read_bytes())
        self.asked, self.told = dict(state["asked"]), set(state["told"])
        self.pending_repeats = list(state["pending_repeats"])
        self.sampler, self._study, self._storage = state["sampler"], None, None
        self._storage_ids = {}
        self.fail_orphans()

    def fail_orphans(self) -> int:
        """Fail the study's RUNNING trials this object never asked (a dead driver's), so the
        sampler does not wait on them; returns how many there were."""
        known = set(self.asked.values())
        orphans = [
            frozen.number
            for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if frozen.number not in known
        ]
        for number in orphans:
            self._trial(number).set_user_attr(ORPHAN_ATTR, True)
            self._tell(number, None, TrialState.FAIL)
        return len(orphans)

    def _storage_id(self, number: int) -> int:
        """The storage's id of trial `number` (what `optuna.Trial` and the storage take),
        looked up once per trial: each lookup is two queries, and a trial is asked, reported
        and told through several handles."""
        ids = self.__dict__.setdefault("_storage_ids", {})  # setdefault: older pickles
        if number not in ids:
            study = self.study
            assert self._storage is not None  # opened with the study
            study_id = self._storage.get_study_id_from_name(study.study_name)
            ids[number] = self._storage.get_trial_id_from_study_id_trial_number(study_id, number)
        return int(ids[number])

    def _trial(self, number: int) -> optuna.Trial:
        """A handle on trial `number` to suggest, report and set attributes through."""
        return optuna.Trial(self.study, self._storage_id(number))

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        trial_id = self._storage_id(number)
        assert self._storage is not None
        return self._storage.get_trial(trial_id)

    def _tell(
        self, number: int, value: float | list[float] | None, state: TrialState
    ) -> TrialState:
        try:
            self.study.tell(number, value, state=state)
        except (ValueError, RuntimeError) as err:  # e.g. already told before a driver restart
            logger.warning("optuna: %s", err)
        return state


def sample_configs(space: SearchSpace, count: int) -> list[dict[str, Any]]:
    """`count` parameter sets drawn as the sweep's first trials would be (for --dry-run)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(space), directions=study_directions(space))
    suggest = DefineByRun(space)
    out = []
    for _ in range(count):
        trial = study.ask()
        out.append(suggest(trial))  # left running, as concurrent trials of a sweep would be
    return out


def study_directions(space: SearchSpace) -> list[Literal["maximize", "minimize"]]:
    """Optuna's direction of each objective of the space (one for a single-objective sweep)."""
    return ["maximize" if o.mode == "max" else "minimize" for o in space.objectives]


def _searched(space: SearchSpace) -> list[str]:
    return [p.key for p in space.searched]


def describe_dry_run(space: SearchSpace, count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` sampled parameter sets, each validated against TrainConfig, with their run names."""
    out = []
    for values in sample_configs(space, count):
        params, labels = trial_params(values), trial_labels(values)
        apply_params(space.base, params)  # raises ConfigError naming the key
        label = run_name(space, params, labels)
        warn_sampled_settings(space.base, params, _searched(space), f"{space.name} {label}")
        out.append((label, params))
    return out


def dry_run_lines(space: SearchSpace) -> Iterator[str]:
    """What `sweep --dry-run` prints: that the space is valid, then its first `num_samples`
    sampled configs, all validated first (a ConfigError names the key)."""
    yield f"{space.source}: valid; {space.total_trials} trials, sampler {space.sampler}"
    for i, (label, params) in enumerate(describe_dry_run(space, space.num_samples)):
        yield f"[{i}] {label}"
        for key, value in params.items():
            yield f"      {key} = {value!r}"


def study_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of a sweep's persisted Optuna study (for tests and result tables)."""
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
