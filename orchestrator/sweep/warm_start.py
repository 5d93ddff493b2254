"""What a new sweep takes from an earlier one and keeps for later ones: a warm start
(`warm_start: {sweep: NAME, top: K}` in its space: the earlier sweep's finished trials are told
to the new study and its K best configs run first), and the record of its search in `sweep.json`
that `--extend` checks an edited space against (`NewSweep`, called by `sweep.run_plain_sweep`).

`prepare_warm_start` checks everything before the sweep writes anything (the earlier sweep exists
in the same results directory, optimised the same objectives under the same constraints, searched
the same parameters with the same kinds and scales, and K fits the budget); `WarmStart.apply` then
fills the new study. The constraints must be the same because the study keeps only each trial's
violations, not the metrics to compute new ones from.
ASHA is not seeded from the earlier sweep: its base config and scheduler may differ, so its epoch
values need not be comparable to the new trials' (an extension's are, see sweep/extend.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.contract import SEARCH_RECORD_KEY, WARM_START_TAG, SweepLayout
from orchestrator.objectives import Constraint
from orchestrator.search.history import (
    PastStudy,
    read_past_study,
    space_specs,
    sweep_record,
    warm_start_study,
)
from orchestrator.space.lineage import normalised, warm_start_problems
from orchestrator.space.schema import SearchSpace, SpaceError
from orchestrator.sweep.state import read_state, update_state


@dataclass(frozen=True)
class WarmStart:
    """A checked warm start: the new sweep's space and the earlier sweep's study."""

    space: SearchSpace
    past: PastStudy
    top: int

    def apply(self, storage: str) -> dict[str, str]:
        """Fill the new sweep's study in `storage`; returns the parent run's tags saying so."""
        counts = warm_start_study(self.space, storage, self.past, self.top)
        return {
            WARM_START_TAG: self.past.name,
            f"{WARM_START_TAG}.told": str(counts.told),
            f"{WARM_START_TAG}.left_out": str(counts.left_out),
            f"{WARM_START_TAG}.enqueued": str(counts.enqueued),
        }


class StartedSweep(Protocol):
    """What `NewSweep.begin` needs of a sweep whose parent run and `sweep.json` exist."""

    @property
    def layout(self) -> SweepLayout: ...

    @property
    def tracker(self) -> Any: ...  # tracking.writer.SweepTracker

    @property
    def parent_run_id(self) -> str: ...

    @property
    def optuna_storage(self) -> str: ...


@dataclass(frozen=True)
class NewSweep:
    """A sweep about to start: its space and checked warm start (None: not warm-started);
    `resume` when it is an old sweep going on (then nothing is added)."""

    space: SearchSpace
    warm: WarmStart | None
    resume: bool

    @classmethod
    def check(cls, space: SearchSpace, results_dir: Path, *, resume: bool) -> NewSweep:
        """Check the space's warm start before anything is written (SpaceError if it fails)."""
        warm = None if resume else prepare_warm_start(space, results_dir)
        return cls(space, warm, resume)

    def begin(self, run: StartedSweep) -> None:
        """Add the search record to the new sweep's `sweep.json` and warm-start its study."""
        if self.resume:
            return
        record = sweep_record(self.space)
        update_state(run.layout, lambda state: state.update({SEARCH_RECORD_KEY: record}))
        if self.warm is not None:
            run.tracker.set_tags(run.parent_run_id, self.warm.apply(run.optuna_storage))


def prepare_warm_start(space: SearchSpace, results_dir: Path) -> WarmStart | None:
    """The space's warm start, checked; None without one. SpaceError naming the space file and
    `warm_start` (or the parameters) when it cannot be done."""
    spec = space.warm_start
    if spec is None:
        return None

    def fail(message: str, key: str = "warm_start.sweep") -> SpaceError:
        return SpaceError(f"{space.source}: {key}: {message}")

    if spec.sweep == space.name:
        raise fail(f"'{spec.sweep}' is this sweep; use --extend N to add trials to it")
    if spec.top > space.num_samples:
        raise fail(f"{spec.top} exceeds num_samples {space.num_samples}", "warm_start.top")
    earlier = SweepLayout.of(results_dir, spec.sweep)
    if not earlier.state_file.is_file():
        raise fail(
            f"no sweep '{spec.sweep}' in {earlier.root.parent} ({earlier.state_file} is missing)"
        )
    state = read_state(earlier)
    if "study" in state:
        raise fail(f"'{spec.sweep}' is an ablation study; warm-start from a plain sweep")
    storage = str(state.get("optuna_storage") or earlier.optuna_url)
    past = read_past_study(storage, str(state.get("name") or spec.sweep))
    if past is None:
        raise fail(f"no Optuna study of sweep '{spec.sweep}' in {storage}")
    _check_objective(space, state, past, fail)
    _check_constraints(space, state, earlier)
    problems = warm_start_problems(_earlier_specs(state, past), space_specs(space))
    if problems:
        raise fail(f"incompatible with sweep '{spec.sweep}': {', '.join(problems)}", "warm_start")
    return WarmStart(space, past, spec.top)


def _check_objective(
    space: SearchSpace, state: dict[str, Any], past: PastStudy, fail: Any
) -> None:
    """The told values must mean what the new study's do: the same objectives, each the same way
    up (from the earlier `sweep.json`; its study's directions where it predates the record)."""
    now = [[o.metric, o.mode] for o in space.objectives]
    was = state.get(SEARCH_RECORD_KEY, {}).get("objectives")
    if was is None:
        was = [["?", "max" if d == "maximize" else "min"] for d in past.directions]
        now = [["?", mode] for _, mode in now]
    if normalised(was) != now:
        shown = ", ".join(f"{m} ({d})" for m, d in was)
        raise fail(f"sweep '{past.name}' optimised {shown}; this space must optimise the same")


def _check_constraints(space: SearchSpace, state: dict[str, Any], earlier: SweepLayout) -> None:
    """SpaceError naming both files' keys unless the earlier sweep had the same constraints
    (in any order; a sweep recorded before constraints existed had none): its trials are told
    with the violations it recorded, which mean something only for the same bounds."""
    record = state.get(SEARCH_RECORD_KEY)
    was = record.get("constraints", []) if isinstance(record, dict) else []
    now = normalised([[c.metric, c.ge, c.le] for c in space.constraints])
    if sorted(map(str, normalised(was))) == sorted(map(str, now)):
        return

    def shown(rows: list[Any]) -> str:
        return "; ".join(Constraint(m, ge, le).describe() for m, ge, le in rows) or "none"

    raise SpaceError(
        f"{space.source}: constraints: {shown(now)} here, but {earlier.state_file}: "
        f"{SEARCH_RECORD_KEY}.constraints: {shown(was)}; a warm start needs the same constraints"
    )


def _earlier_specs(state: dict[str, Any], past: PastStudy) -> dict[str, Any]:
    """The earlier sweep's searched parameters: from its `sweep.json` record (it names those
    whose condition never held too), else from the distributions its study stored."""
    record = state.get(SEARCH_RECORD_KEY)
    if not isinstance(record, dict):
        return past.specs
    return {
        key.removeprefix("space."): spec
        for key, spec in record.items()
        if key.startswith("space.") and isinstance(spec, dict) and spec.get("kind") != "fixed"
    }
