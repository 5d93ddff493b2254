"""Optuna's fANOVA parameter importances of a sweep's persisted study, for `importance.md`.

`search/` is the only package that imports optuna. `report` loads this module only when a
sweep has a study to read, so writing the tables never imports Ray, and Optuna only for this.
"""

from __future__ import annotations

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA parameter importances of a study (seeded, so reruns agree); of its first
    objective when it has several."""
    target = (lambda trial: trial.values[0]) if len(study.directions) > 1 else None
    evaluator = FanovaImportanceEvaluator(seed=0)
    return dict(get_param_importances(study, evaluator=evaluator, target=target))


def study_importances(storage: str, study_name: str) -> dict[str, float]:
    """Parameter importances of a sweep's persisted Optuna study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return importances(optuna.load_study(study_name=study_name, storage=storage))
