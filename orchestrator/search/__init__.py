"""Optuna, and only here: the sweep's searcher, its stored history, what proposes trials.

Modules:
- `optuna_search`: `SweepStudy`, a define-by-run function generated from a `SearchSpace`, the
  samplers, and `--dry-run`'s sampled configs.
- `history`: a sweep's Optuna study read back for `--extend` (ASHA's rungs) and warm starts.
- `proposer`: `TrialProposer`, what Ray's searcher adapter asks for trials (`FixedTrials` for a
  study's confirm phase).
- `importance`: fANOVA parameter importances of a finished study.

    from orchestrator.search import SweepStudy
    study = SweepStudy(space, "sqlite:///results/smart/optuna.db")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.search.optuna_search import SweepStudy, make_sampler
    from orchestrator.search.proposer import FixedTrials, TrialProposer

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "FixedTrials": "proposer",
    "SweepStudy": "optuna_search",
    "TrialProposer": "proposer",
    "make_sampler": "optuna_search",
}
__all__ = [
    "FixedTrials",
    "SweepStudy",
    "TrialProposer",
    "make_sampler",
]


# Where the classes of the old flat module `orchestrator.search` live now (for old pickles).
LEGACY = ('optuna_search',)


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name, LEGACY)
