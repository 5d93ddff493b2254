"""The minBERT sweep orchestrator: Optuna explores a search space, Ray Tune runs the trials (ASHA
stops the poor ones early), MLflow records every trial; ensembles, reports and predictions.

From Python, `import orchestrator` gives the functions of `orchestrator.api` and `load_predictor`
(each returns plain data; nothing is imported until one is used, so `import orchestrator` stays
quick):

    import orchestrator

    trials = orchestrator.load_trials("quickstart")   # a pandas DataFrame, one row per trial
    outcome = orchestrator.run_sweep("search_spaces/quickstart.yaml")

Packages, lowest layer first (no package imports one above it; tests/orchestrator/
test_architecture.py checks it): the root modules (contract, config, objectives, stats, cluster,
data_fetch, file_digest) → tracking → space, ensemble → search, predict → sweep, registry →
ablation → report → api, cli.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.api import (
        build_ensemble,
        load_ablation_table,
        load_search_space,
        load_trials,
        run_study,
        run_sweep,
    )
    from orchestrator.predict.predictor import load_predictor

# The Python API: each name and the module it lives in, imported on first use.
EXPORTS = {
    "build_ensemble": "api",
    "load_ablation_table": "api",
    "load_predictor": "predict.predictor",
    "load_search_space": "api",
    "load_trials": "api",
    "run_study": "api",
    "run_sweep": "api",
}
__all__ = [
    "build_ensemble",
    "load_ablation_table",
    "load_predictor",
    "load_search_space",
    "load_trials",
    "run_study",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name)


# Modules that moved into packages, by their old names. Pickles made before the move name their
# classes by these: an MLflow model registered then (`orchestrator.tracking.pyfunc_model.
# PredictorModel`), and a sweep's Ray state (`tuner.pkl`: the searcher and the listeners), which
# `--resume` unpickles. Old names that are packages now (`orchestrator.space`, `.search`,
# `.sweep`, `.ensemble`, `.ablation`) find their old classes through the package's `LEGACY`.
MOVED_MODULES = {
    f"orchestrator.{old}": f"orchestrator.{new}"
    for old, new in {
        "tracking.pyfunc_model": "registry.pyfunc_model",
        "tracking.models": "registry.models",
        "tracking.checkpoint_registry": "registry.checkpoint",
        "space_params": "space.params",
        "space_guards": "space.guards",
        "objectives_schema": "space.objective_keys",
        "study": "space.arms",
        "sweep_lineage": "space.lineage",
        "search_history": "search.history",
        "proposer": "search.proposer",
        "importance": "search.importance",
        "sweep_extend": "sweep.extend",
        "warm_start": "sweep.warm_start",
        "sweep_state": "sweep.state",
        "sweep_callbacks": "sweep.listeners",
        "placement": "sweep.placement",
        "ray_tune": "sweep.ray_tune",
        "trainable": "sweep.trainable",
        "sweep_command": "cli.sweep",
        "study_phases": "ablation.phases",
        "study_run": "ablation.study_run",
        "sst_details": "ablation.sst_details",
        "study_report": "ablation.study_report",
        "ensemble_curve": "ensemble.k_curve",
        "ensemble_manifest": "ensemble.manifest",
        "ensemble_members": "ensemble.member_predictions",
        "ensemble_run": "ensemble.run",
        "tradeoffs": "report.tradeoffs",
        "predictor": "predict.predictor",
        "predict_input": "predict.inputs",
        "predict_output": "predict.outputs",
        "results": "report.sweep_report",
        "trials_table": "report.trials_table",
        "tables": "report.tables",
        "plots": "report.plots",
    }.items()
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import an old module name as the module it moved to (the very same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self.own_specs: dict[str, Any] = {}

    def create_module(self, spec: Any) -> ModuleType:
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self.own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the new module ran when it was imported); importlib has just given
        the module the old name's spec, so give it back its own."""
        module.__spec__ = self.own_specs[module.__name__]


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
