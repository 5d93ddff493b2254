"""Run a sweep on Ray Tune: one lifecycle for a plain sweep, `--extend` and study phases.

Modules:
- `lifecycle`: `run_lifecycle` (check, join Ray, open the MLflow parent run, fit, end it), the
  one listener assembly (`new_tuner`) and `SweepPlace` (where it runs).
- `plain`: `run_plain_sweep`, a new or resumed sweep.
- `extend`: `extend_sweep`, N more trials of a finished sweep (`--extend N`).
- `warm_start`: what a new sweep takes from an earlier one.
- `outcome`: `SweepOutcome` / `TrialOutcome`, what the drivers return.
- `parent_run`: the sweep's MLflow parent run: opened with its params, ended with its best trial.
- `state`: `sweep.json`, read and changed under a lock.
- `listeners`: what happens as trials start, report and end (MLflow relay, live table).
- `placement`: whether Ray can ever start a trial, decided before anything is written.
- `lost_checkpoint`: a resumed trial's checkpoint that Ray deleted after its last snapshot, put
  back from the newest one every listener has seen.
- `resume_state`: a trial's optimizer state, kept only while it can resume (Ray's newest copy).
- `retention`: which finished trials keep their weights (`retention: {keep_best: K}`).
- `ray_cluster`, `ray_tune`, `trainable`: the only modules that import Ray (start or join it;
  Tune; the trial).
- `storage_fault`: a full or read-only results directory stops the sweep, resumable.

    from orchestrator.sweep import run_plain_sweep
    outcome = run_plain_sweep(space, data_dir=Path("data"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.lazy_exports import exported_attribute

if TYPE_CHECKING:
    from orchestrator.sweep.extend import extend_sweep
    from orchestrator.sweep.lifecycle import SweepPlace, run_lifecycle
    from orchestrator.sweep.outcome import SweepOutcome, TrialOutcome
    from orchestrator.sweep.plain import run_plain_sweep

# Each public name and the module it lives in, imported on first use (lazy_exports.py).
EXPORTS = {
    "SweepOutcome": "outcome",
    "SweepPlace": "lifecycle",
    "TrialOutcome": "outcome",
    "extend_sweep": "extend",
    "run_lifecycle": "lifecycle",
    "run_plain_sweep": "plain",
}
__all__ = [
    "SweepOutcome",
    "SweepPlace",
    "TrialOutcome",
    "extend_sweep",
    "run_lifecycle",
    "run_plain_sweep",
]


# Where the classes of the old flat module `orchestrator.sweep` live now (for old pickles).
LEGACY = ('plain', 'outcome', 'parent_run', 'lifecycle')


def __getattr__(name: str) -> Any:
    return exported_attribute(__name__, EXPORTS, name, LEGACY)
