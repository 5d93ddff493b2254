"""Optuna behind Ray Tune: a define-by-run function generated from a `SearchSpace`, the sampler it
names, and an `OptunaSearch` that records scheduler-stopped trials as PRUNED.

The only module that imports optuna. Ray's `OptunaSearch` tells Optuna every trial that ASHA stops
as COMPLETE (Ray reports them through `on_trial_complete` like finished ones), so TPE would treat a
one-epoch score as a final one; `PruningAwareOptunaSearch` tells them PRUNED with their last value.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from orchestrator.contract import EPOCHS_LEFT, NONFINITE_LOSS
from orchestrator.space import Param, SearchSpace, SpaceError

logger = logging.getLogger(__name__)

REPEAT_ATTR = "repeat"  # which seed of a repeated config an Optuna trial runs (0 = first)
GROUP_ATTR = "group"  # Optuna number of the trial whose params a repeat copies
RAY_TRIAL_ATTR = "ray_trial_id"
ORPHAN_ATTR = "orphaned"  # asked by a driver that died before its state was saved


class DefineByRun:
    """Suggests every active parameter of a `SearchSpace` on an Optuna trial, in file order.

    Parameters whose `when` conditions fail are not suggested at all, so Optuna sees a conditional
    space; fixed values and (for repeats) the seed are returned alongside the suggested ones. A
    class rather than a closure because Ray pickles the searcher into its experiment state.
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
        return values


def _suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.kind == "float":
        return trial.suggest_float(
            param.key, param.low, param.high, log=param.log, step=param.step
        )
    if param.kind == "int":
        return trial.suggest_int(
            param.key, int(param.low), int(param.high), log=param.log, step=int(param.step or 1)
        )
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
    raise SpaceError(f"{space.source}: sampler: unknown sampler {space.sampler!r}")


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records scheduler-stopped trials as PRUNED and runs config repeats.

    A trial is pruned when it completes without error while its last result still has epochs left
    (`EPOCHS_LEFT` > 0). Repeats enqueue the same parameters again with the next seed.
    """

    def __init__(self, space: SearchSpace, *, storage: str | None = None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._repeats = space.repeats
        self._pending_repeats: list[tuple[dict[str, Any], int, int]] = []
        super().__init__(
            space=DefineByRun(space),
            metric=space.metric,
            mode=space.mode,
            sampler=make_sampler(space),
            study_name=space.name,
            storage=optuna.storages.RDBStorage(storage) if storage else None,
        )

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._pending_repeats:
            params, repeat, group = self._pending_repeats.pop(0)
            self._ot_study.enqueue_trial(
                params, user_attrs={REPEAT_ATTR: repeat, GROUP_ATTR: group}
            )
        config = super().suggest(trial_id)
        trial = self._ot_trials[trial_id]
        trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        if self._repeats > 1 and REPEAT_ATTR not in trial.user_attrs:
            trial.set_user_attr(REPEAT_ATTR, 0)
            trial.set_user_attr(GROUP_ATTR, trial.number)
            for repeat in range(1, self._repeats):
                self._pending_repeats.append((dict(trial.params), repeat, trial.number))
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._ot_trials:
            logger.warning("optuna: completion of unknown trial %s ignored", trial_id)
            return None
        if trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        trial = self._ot_trials[trial_id]
        value = result.get(self.metric) if result else None
        stopped_early = bool(result) and not error and float(result.get(EPOCHS_LEFT, 0)) > 0
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if finite:
            # Ray never passes a trial's stopping result to on_trial_result: report it here so
            # the study holds every epoch, and Optuna stores it as a pruned trial's value.
            step = int(result.get("training_iteration", result.get("epoch", 0)))
            if step not in self._ot_study.trials[trial.number].intermediate_values:
                trial.report(float(value), step)
        if stopped_early and finite:
            self._tell(trial, None, TrialState.PRUNED)
        elif result and not error and not finite and value is not None:
            reason = result.get(NONFINITE_LOSS) or f"{self.metric} is {value}"
            trial.set_user_attr("fail_reason", str(reason))
            self._tell(trial, None, TrialState.FAIL)
        else:
            return super().on_trial_complete(trial_id, result=result, error=error)
        self._completed_trials.add(trial_id)
        return None

    def _tell(self, trial: optuna.Trial, value: float | None, state: TrialState) -> None:
        try:
            self._ot_study.tell(trial, value, state=state)
        except (ValueError, RuntimeError) as err:  # e.g. already told before a driver restart
            logger.warning("optuna: %s", err)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Ray's saved searcher, then fail trials asked after that save (driver died)."""
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                optuna.Trial(self._ot_study, frozen._trial_id).set_user_attr(ORPHAN_ATTR, True)
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)


def sample_configs(space: SearchSpace, count: int) -> list[dict[str, Any]]:
    """`count` parameter sets drawn as the sweep's first trials would be (for --dry-run)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=make_sampler(space), direction="maximize" if space.mode == "max" else "minimize"
    )
    suggest = DefineByRun(space)
    out = []
    for _ in range(count):
        trial = study.ask()
        out.append(suggest(trial))  # left running, as concurrent trials of a sweep would be
    return out


def study_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of a sweep's persisted Optuna study (for tests and result tables)."""
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA parameter importances of a study (seeded, so reruns agree)."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)))


def study_importances(storage: str, study_name: str) -> dict[str, float]:
    """Parameter importances of a sweep's persisted Optuna study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return importances(optuna.load_study(study_name=study_name, storage=storage))


def params_of(trial: Mapping[str, Any]) -> dict[str, Any]:
    """A Ray trial config without Ray's own keys (those starting with an underscore)."""
    return {k: v for k, v in trial.items() if not k.startswith("_")}
