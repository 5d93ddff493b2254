"""Ensembles of a sweep's best trials: which trials join, and how they combine.

Modules:
- `request`: `EnsembleRequest`, what is asked (K, sweep, metric, method, selection, splits).
- `select`: the one home of member choice: eligible runs, ranking, top-K or greedy selection.
- `combine`: vote (mode / median) or mean of the members' predictions, and their dev metrics.
- `member_predictions`: each member's dev and test predictions from its checkpoint.
- `manifest`: `ensemble/manifest.json`, the members and their sha256, for `predict`.
- `k_curve`, `k_curve_plot`: dev metrics of the best-k ensemble for k = 1..K, and its plot.
- `run`: `run_ensemble`: rank, load, select, write the files and the MLflow run.

    from orchestrator.ensemble import EnsembleRequest, run_ensemble
    result = run_ensemble(EnsembleRequest(top=5, sweep="smart"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.ensemble.request import EnsembleError, EnsembleRequest
    from orchestrator.ensemble.run import EnsembleResult, run_ensemble

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "EnsembleError": "request",
    "EnsembleRequest": "request",
    "EnsembleResult": "run",
    "run_ensemble": "run",
}
__all__ = [
    "EnsembleError",
    "EnsembleRequest",
    "EnsembleResult",
    "run_ensemble",
]


# Where the classes of the old flat module `orchestrator.ensemble` live now (for old pickles).
LEGACY = ('request', 'select', 'combine')


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name, LEGACY)
