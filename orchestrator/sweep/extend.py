"""`orchestrator sweep SPACE.yaml --extend N`: N more trials of a finished or stopped sweep.

The same Optuna study (its sampler sees every earlier trial; trial numbers go on), the same
results directory and MLflow experiment. Each extension is a Ray experiment of its own in
`<results>/<sweep>/extend-<n>/` (Ray cannot add trials to a finished experiment) and a parent run
of its own, tagged with the sweep's first parent run (`EXTENDS_RUN_TAG`), so `report` and
`ensemble` read the trials of all of them (`tracking.store.read_sweep`). `sweep.json` lists the
extensions; `--resume` finishes the last one when its driver died.

One extension at a time: `--extend` refuses while the sweep's first run or its last extension
is RUNNING in MLflow, and an extension starts under `sweep.json`'s lock (`sweep/state.py`) with
an exclusive mkdir of its directory, so two `--extend` started together never share one.
N counts configs, as `num_samples` does: with `repeats: R` an extension runs N x R trials.

What ASHA sees: Ray's scheduler starts empty in a new experiment, so the earlier trials' value at
each rung (the study holds every epoch's value) is put into the new ASHA's rungs first
(`ray_tune.seed_rungs`). That is sound only when the earlier trials ran under the same rungs,
metric and config, which the `sweep.json` record of the sweep proves; a sweep older than that
record extends with empty rungs (each new trial then compared only with the extension's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.contract import (
    EXTENDS_RUN_TAG,
    EXTENSION_TAG,
    EXTENSIONS_KEY,
    FINAL_STATES,
    SEARCH_RECORD_KEY,
    SweepLayout,
    extension_dir,
)
from orchestrator.search.history import (
    PastStudy,
    read_past_study,
    rung_history,
    space_specs,
    sweep_record,
)
from orchestrator.search.optuna_search import SweepStudy
from orchestrator.space.lineage import distribution_differences, record_differences
from orchestrator.space.schema import SearchSpace, SpaceError
from orchestrator.sweep import ray_tune
from orchestrator.sweep.lifecycle import (
    SweepPlace,
    fit_experiment,
    new_tuner,
    run_lifecycle,
    stderr_line,
)
from orchestrator.sweep.listeners import (
    trial_state,
)
from orchestrator.sweep.outcome import SweepOutcome, trial_outcomes
from orchestrator.sweep.parent_run import RETENTION_KEY, SweepRun, start_tracking
from orchestrator.sweep.state import SweepStateError, read_state, update_state
from orchestrator.tracking.store import run_status


@dataclass(frozen=True)
class Extension:
    """One extension of a sweep: its number, its space (N trials, its own sampler seed), the
    sweep's saved state, and the earlier study's rung values for ASHA ({} when not sound)."""

    number: int
    space: SearchSpace
    state: dict[str, Any]
    rungs: dict[str, dict[int, float]]
    parent_run_id: str | None = None  # set when resuming it

    @property
    def directory(self) -> str:
        return extension_dir(self.number)


def extend_sweep(
    space: SearchSpace,
    extra: int | None,
    *,
    data_dir: Path,
    results_dir: Path = Path("results"),
    address: str | None = None,
    live_table: bool = True,
    num_cpus: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run `extra` more configs (x repeats trials) of the sweep `space` names (None: finish its
    last extension, `--resume`); the outcome holds every trial of the sweep, earlier ones first.

    Raises SweepStateError / SpaceError, before anything is written, when there is no such
    sweep, it is a study, it (or its last extension) is still running, or the space differs from
    the sweep's in what its study or ASHA's rungs cannot take (objectives, a parameter's type or
    range, the base config, the scheduler)."""
    place = SweepPlace(
        Path(data_dir), Path(results_dir), address, num_cpus, live_table, echo or stderr_line
    )
    return run_lifecycle(space, place, ExtensionKind(extra))


class ExtensionKind:
    """An extension of a sweep as `run_lifecycle` runs it: planned and checked, then started
    (or resumed) as a Ray experiment of its own, logged under a parent run of its own."""

    def __init__(self, extra: int | None) -> None:
        self.extra = extra
        self.ext: Extension | None = None

    def plan(self, space: SearchSpace, layout: SweepLayout) -> SearchSpace:
        self.ext = plan_extension(space, layout, self.extra)
        return self.ext.space

    def start(self, space: SearchSpace, layout: SweepLayout, data_dir: Path) -> SweepRun:
        assert self.ext is not None, "plan() runs first"
        self.ext = replace(self.ext, space=space)  # trial resources fitted to the cluster
        return start_extension(self.ext, layout, data_dir)

    def fit(self, run: SweepRun, outcome: SweepOutcome, place: SweepPlace) -> bool:
        """Run (or resume) the extension's Ray experiment; `outcome` gets every trial of the
        sweep, judged together (one Pareto front): the parent run's best is the sweep's."""
        assert self.ext is not None, "plan() runs first"
        ext = self.ext
        layout = SweepLayout(run.layout.root / ext.directory)
        stopped = fit_experiment(
            ext.space,
            layout,
            run.data_dir,
            restore=ext.parent_run_id is not None and ray_tune.can_restore(layout),
            build=lambda: extension_tuner(run, ext, layout, live_table=place.live_table),
        )
        own = ray_tune.trial_snapshots(layout)
        outcome.trials = trial_outcomes(ext.space, *sweep_layouts(run.layout, ext.number))
        if stopped:
            raise KeyboardInterrupt(f"extension {ext.number} stopped; finish it with --resume")
        ended = all(trial_state(t) in FINAL_STATES for t in own)
        return ended and len(own) >= ext.space.total_trials

    def finished(self, run: SweepRun) -> None:
        assert self.ext is not None, "plan() runs first"
        _mark_finished(run.layout, self.ext.directory)


def plan_extension(space: SearchSpace, layout: SweepLayout, extra: int | None) -> Extension:
    """The extension to run (or, with `extra` None, the unfinished one to resume), checked."""
    if not layout.state_file.is_file():
        raise SweepStateError(
            f"{layout.state_file}: no sweep '{layout.name}' to extend; run it first without "
            "--extend (or pass --name / --results-dir of the sweep)"
        )
    state = read_state(layout)
    if "study" in state:
        raise SweepStateError(
            f"{layout.state_file}: study: '{layout.name}' is an ablation study; --extend adds "
            "trials to a plain sweep"
        )
    past = read_past_study(str(state.get("optuna_storage")), str(state.get("name", space.name)))
    if past is None:
        raise SweepStateError(f"{layout.optuna_db}: no Optuna study '{layout.name}' to extend")
    check_same_search(space, state, past)
    check_stopped(state, layout, resuming=extra is None)
    done = list(state.get(EXTENSIONS_KEY, []))
    rungs = rung_history(past) if SEARCH_RECORD_KEY in state else {}
    if extra is None:
        if not done or done[-1].get("finished"):
            raise SweepStateError(f"{layout.state_file}: {EXTENSIONS_KEY}: none left unfinished")
        last = done[-1]
        ext_space = _extension_space(space, len(done), int(last["num_samples"]))
        return Extension(len(done), ext_space, state, rungs, str(last["parent_run_id"]))
    number = len(done) + 1
    return Extension(number, _extension_space(space, number, extra), state, rungs)


def _extension_space(space: SearchSpace, number: int, extra: int) -> SearchSpace:
    # The sampler's own seed: the sweep's would draw its first configs again (random sampler,
    # TPE's start-up trials).
    return space.replace(num_samples=extra, seed=space.seed + number)


def check_stopped(state: dict[str, Any], layout: SweepLayout, *, resuming: bool) -> None:
    """SweepStateError while the sweep's first run, or (for a new extension) its last
    extension, is RUNNING in MLflow: its driver is still at work, or died without ending it."""
    runs = [("its first run", state.get("parent_run_id"))]
    done = state.get(EXTENSIONS_KEY, [])
    if done and not resuming:
        runs.append((f"its extension {done[-1].get('dir')}", done[-1].get("parent_run_id")))
    uri = str(state.get("tracking_uri", ""))
    for what, run_id in runs:
        if run_id and run_status(uri, str(run_id)) == "RUNNING":
            raise SweepStateError(
                f"{layout.state_file}: sweep '{layout.name}' is still running ({what}, MLflow run "
                f"{run_id}); extend it once that ends, or if its driver died, --resume it first"
            )


def check_same_search(space: SearchSpace, state: dict[str, Any], past: PastStudy) -> None:
    """SpaceError naming the space file and the first key where `space` is not the sweep's own:
    against its `sweep.json` record, else (an older sweep) against what its study stored."""
    source = state.get("space_file", space.source)
    hint = "keep the sweep's space, or start a new sweep with --name NEW and warm_start from it"
    record = state.get(SEARCH_RECORD_KEY)
    if isinstance(record, dict):
        differences = record_differences(record, sweep_record(space))
    else:
        differences = distribution_differences(past.specs, space_specs(space))
        modes = [o.mode for o in space.objectives]
        if [d[:3] for d in past.directions] != [m[:3] for m in modes]:  # maximize vs max
            differences.insert(0, ("mode", f"{modes} here, {list(past.directions)} in the study"))
    if differences:
        key, change = differences[0]
        raise SpaceError(f"{space.source}: {key}: {change} '{past.name}' ({source}); {hint}")


def start_extension(ext: Extension, layout: SweepLayout, data_dir: Path) -> SweepRun:
    """Open the extension's parent run: the one of the extension being resumed, or a new one
    linked to the sweep's first from its creation (so `read_sweep` never takes it for the
    sweep's own), made under `sweep.json`'s lock with the extension's directory and entry."""
    # The sweep's store and study; not its parent run (a new one), or the resumed extension's.
    saved = {
        "tracking_uri": ext.state["tracking_uri"],
        "optuna_storage": ext.state.get("optuna_storage", layout.optuna_url),
    }
    if RETENTION_KEY in ext.state:  # else the sweep predates retention: it keeps every trial
        saved[RETENTION_KEY] = ext.state[RETENTION_KEY]
    if ext.parent_run_id is not None:
        return start_tracking(
            ext.space, layout, data_dir, {**saved, "parent_run_id": ext.parent_run_id}
        )
    directory = layout.root / ext.directory

    def add_extension(state: dict[str, Any]) -> SweepRun:
        listed = state.get(EXTENSIONS_KEY, [])
        if len(listed) != ext.number - 1:
            raise SweepStateError(
                f"{layout.state_file}: {EXTENSIONS_KEY}: another --extend started "
                f"{listed[-1].get('dir')} meanwhile; extend it once that ends"
            )
        try:
            directory.mkdir()  # exclusive: the guard against a second `--extend` of this number
        except FileExistsError:
            raise SweepStateError(
                f"{directory}: exists, but {layout.state_file} lists no extension there: another "
                "--extend is starting it, or one died starting it (then remove the directory)"
            ) from None
        try:
            tags = {EXTENDS_RUN_TAG: str(ext.state["parent_run_id"]), EXTENSION_TAG: ext.directory}
            title = f"{ext.space.name} (extend {ext.number})"
            run = start_tracking(ext.space, layout, data_dir, saved, title=title, tags=tags)
        except BaseException:
            directory.rmdir()  # ours and still empty: the next --extend may take the number
            raise
        entry = {"dir": ext.directory, "parent_run_id": run.parent_run_id, "finished": False}
        entry.update(num_samples=ext.space.num_samples, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        state[EXTENSIONS_KEY] = [*listed, entry]
        return run

    return update_state(layout, add_extension)


def extension_tuner(
    run: SweepRun, ext: Extension, layout: SweepLayout, *, live_table: bool
) -> Any:
    """A Tuner of the extension's trials: proposed by the sweep's study, logged under the
    extension's parent run, stopped by an ASHA whose rungs hold the earlier trials."""
    study = SweepStudy(ext.space, run.optuna_storage)
    study.fail_orphans()  # a stopped sweep's unfinished trials: no driver will tell them
    tags = {EXTENSION_TAG: ext.directory}
    return new_tuner(
        run, ext.space, layout, study, live_table=live_table, run_tags=tags, rung_history=ext.rungs
    )


def sweep_layouts(root: SweepLayout, number: int) -> list[SweepLayout]:
    """The Ray experiments of the sweep's first run and of its extensions up to `number`, those
    that hold any state, oldest first."""
    layouts = [root] + [SweepLayout(root.root / extension_dir(n)) for n in range(1, number + 1)]
    return [layout for layout in layouts if ray_tune.can_restore(layout)]


def _mark_finished(layout: SweepLayout, directory: str) -> None:
    def mark(state: dict[str, Any]) -> None:
        for entry in state.get(EXTENSIONS_KEY, []):
            if entry.get("dir") == directory:
                entry["finished"] = True

    update_state(layout, mark)


def runs_an_extension(results_dir: Path, name: str, *, extend: int | None, resume: bool) -> bool:
    """Whether a plain sweep run as asked is an extension: `extend` N more configs, or `resume`
    of a sweep whose last extension did not finish (it goes on with that extension, not with its
    finished first run). The CLI and the Python API decide it here alike."""
    return extend is not None or (resume and pending_extension(results_dir, name))


def pending_extension(results_dir: Path, name: str) -> bool:
    """Whether the sweep's last extension did not finish (then `--resume` goes on with it)."""
    layout = SweepLayout.of(results_dir, name)
    if not layout.state_file.is_file():
        return False
    try:
        extensions = read_state(layout).get(EXTENSIONS_KEY, [])
    except SweepStateError:
        return False
    return bool(extensions) and not extensions[-1].get("finished")


