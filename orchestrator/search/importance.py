"""Optuna's fANOVA parameter importances of a sweep's persisted study, for `importance.md`.

`search/` is the only package that imports optuna. `report` loads this module only when a
sweep has a study to read, so writing the tables never imports Ray, and Optuna only for this.
"""

from __future__ import annotations

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

# fANOVA's cost grows with its trees times the trials each is fit on (21 s of a 1,000-trial
# report with Optuna's 64 trees): Optuna's 64 up to 200 trials, fewer beyond, at least 8.
TREE_TRIALS = 64 * 200
MIN_TREES = 8


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA parameter importances of a study (seeded, so reruns agree); of its first
    objective when it has several."""
    target = (lambda trial: trial.values[0]) if len(study.directions) > 1 else None
    told = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    trees = max(MIN_TREES, min(64, TREE_TRIALS // max(1, told)))
    evaluator = FanovaImportanceEvaluator(n_trees=trees, seed=0)
    return dict(get_param_importances(study, evaluator=evaluator, target=target))


def study_importances(storage: str, study_name: str) -> dict[str, float]:
    """Parameter importances of a sweep's persisted Optuna study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return importances(optuna.load_study(study_name=study_name, storage=storage))
