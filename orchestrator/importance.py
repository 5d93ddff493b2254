"""Optuna's fANOVA parameter importances of a sweep's persisted study, for `importance.md`.

With `search.py`, the only module that imports optuna. `report` loads it only when a sweep has a
study to read, so writing the tables never imports Ray, and Optuna only for this.
"""

from __future__ import annotations

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA parameter importances of a study (seeded, so reruns agree)."""
    return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)))


def study_importances(storage: str, study_name: str) -> dict[str, float]:
    """Parameter importances of a sweep's persisted Optuna study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return importances(optuna.load_study(study_name=study_name, storage=storage))
