"""What a researcher reads after a sweep: the report under results/SWEEP/ and in MLflow.

Modules:
- `sweep_report`: `write_report`: trials.parquet, the tables, plots, the saved MLflow UI view.
- `trials_table`: one row per trial run with its params parsed back.
- `tables`: an HPO sweep's markdown tables (each swept axis's effect; importances).
- `tradeoffs`: objectives and constraints of a stored sweep: feasible / Pareto columns and
  `objectives.md`.
- `plots`: the PNG plots (history, parallel coordinates, axis effects, curves, Pareto front).
- `published`: a study's paired arm differences beside a paper's published ones (published.md).

    from orchestrator.report import write_report
    written = write_report("smart", results_dir=Path("results"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.report.sweep_report import ReportError, build_report, write_report

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "ReportError": "sweep_report",
    "build_report": "sweep_report",
    "write_report": "sweep_report",
}
__all__ = [
    "ReportError",
    "build_report",
    "write_report",
]


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name)
