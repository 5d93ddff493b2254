"""Ablation studies: arms × paired seeds, an optional tuning phase, the arm table.

Modules:
- `phases`: the study's phases as sweeps (tune each arm, then confirm every arm on every seed).
- `study_run`: `run_ablation_study`, the phases through the sweep lifecycle, one parent run.
- `phase_run`: one phase as a Ray experiment, run to its end or skipped when it finished before.
- `race_run`: a racing study's phase 2 in rounds, each round for the arms still unresolved.
- `arm_table`: the table: each arm's mean ± CI per metric and its paired difference to baseline.
- `verdicts`: corrected tests per arm (Holm / BH, TOST with a margin), power, and the verdict.
- `racing`: the racing rule: after each round of seeds, which arms stop (better, worse,
  equivalent, at max) under a boundary that accounts for the repeated looks, and the next round.
- `sst_details`: the best arm's SST per-class scores and confusion matrix.
- `study_info`: what a study's parent run says of it (arms, baseline, seeds, rule, race).
- `race_report`: a race's part of the report: seeds per arm, how each race ended, the rule.
- `study_report`: the study's stored confirm runs as `ablation.md`, `.tex`, `.parquet` and curves.

    from orchestrator.ablation import run_ablation_study
    space = load_space("search_spaces/ablation.yaml")
    outcome = run_ablation_study(space, data_dir=Path("data"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.ablation.arm_table import ablation_table, arm_table_markdown
    from orchestrator.ablation.study_run import run_ablation_study

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "ablation_table": "arm_table",
    "arm_table_markdown": "arm_table",
    "run_ablation_study": "study_run",
}
__all__ = [
    "ablation_table",
    "arm_table_markdown",
    "run_ablation_study",
]


# Where the classes of the old flat module `orchestrator.ablation` live now (for old pickles).
LEGACY = ('arm_table',)


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name, LEGACY)
