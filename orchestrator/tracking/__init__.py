"""MLflow runs of sweeps, the only package besides `registry/` that imports mlflow.

Modules:
- `writer`: the sweep driver's runs (a parent per sweep, a child per trial), the store's URI and
  retries while SQLite is locked.
- `store`: reading a sweep back (`ensemble`, `report`) and the runs those commands log.
- `provenance`: what a run records to be reproducible: config hash, data and git checksums.
- `views`: the MLflow UI: a stored runs-table view, its URL and the `orchestrator ui` command.
- `server`: `orchestrator tracking-server`, an `mlflow server` for a cluster's sweeps.

    from orchestrator.tracking import find_sweep
    uri, stored = find_sweep(Path("results"), "quickstart")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.tracking.store import StoredRun, StoredSweep, find_sweep
    from orchestrator.tracking.writer import SweepTracker, tracking_uri

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "StoredRun": "store",
    "StoredSweep": "store",
    "SweepTracker": "writer",
    "find_sweep": "store",
    "tracking_uri": "writer",
}
__all__ = [
    "StoredRun",
    "StoredSweep",
    "SweepTracker",
    "find_sweep",
    "tracking_uri",
]


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name)
