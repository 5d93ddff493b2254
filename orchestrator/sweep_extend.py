"""`orchestrator sweep SPACE.yaml --extend N`: N more trials of a finished or stopped sweep.

The same Optuna study (its sampler sees every earlier trial; trial numbers go on), the same
results directory and MLflow experiment. Each extension is a Ray experiment of its own in
`<results>/<sweep>/extend-<n>/` (Ray cannot add trials to a finished experiment) and a parent run
of its own, tagged with the sweep's first parent run (`EXTENDS_RUN_TAG`), so `report` and
`ensemble` read the trials of all of them (`tracking.store.read_sweep`). `sweep.json` lists the
extensions; `--resume` finishes the last one when its driver died.

What ASHA sees: Ray's scheduler starts empty in a new experiment, so the earlier trials' value at
each rung (the study holds every epoch's value) is put into the new ASHA's rungs first
(`ray_tune.seed_rungs`). That is sound only when the earlier trials ran under the same rungs,
metric and config, which the `sweep.json` record of the sweep proves; a sweep older than that
record extends with empty rungs (each new trial then compared only with the extension's).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from orchestrator import ray_tune
from orchestrator.contract import (
    EXTENDS_RUN_TAG,
    EXTENSION_TAG,
    SweepLayout,
    extension_dir,
)
from orchestrator.search import SweepStudy, make_sampler
from orchestrator.search_history import (
    PastStudy,
    read_past_study,
    rung_history,
    space_specs,
    sweep_record,
)
from orchestrator.space import SearchSpace, SpaceError
from orchestrator.sweep import (
    ENDED_STATES,
    SweepOutcome,
    SweepRun,
    SweepStateError,
    TrialOutcome,
    finish_tracking,
    join_ray,
    outcome_of,
    read_state,
    run_sweep,
    start_tracking,
    stderr_line,
    trial_outcomes,
)
from orchestrator.sweep_callbacks import (
    DropResumeState,
    LiveTrialTable,
    MlflowRelay,
    TrialListener,
)
from orchestrator.sweep_lineage import distribution_differences, record_differences
from orchestrator.tracking.writer import Status

EXTENSIONS_KEY = "extensions"  # in sweep.json: one entry per extension, oldest first
RUN_NAME_TAG = "mlflow.runName"


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
    """Run `extra` more trials of the sweep `space` names (None: finish its last extension,
    `--resume`); the outcome holds every trial of the sweep, the earlier ones first.

    Raises SweepStateError / SpaceError, before anything is written, when there is no such
    sweep, it is a study, or the space differs from the sweep's in what its study or ASHA's rungs
    cannot take (objectives, a parameter's type or range, the base config, the scheduler)."""
    started = time.monotonic()
    make_sampler(space)
    layout = SweepLayout.of(results_dir, space.name)
    ext = plan_extension(space, layout, extra)
    data_dir = Path(data_dir).resolve()
    fitted = join_ray(ext.space, layout, data_dir, address, num_cpus, echo=echo or stderr_line)
    ext = replace(ext, space=fitted)
    run = start_extension(ext, layout, data_dir)
    return run_extension(run, ext, live_table=live_table, started=started)


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
    done = list(state.get(EXTENSIONS_KEY, []))
    rungs = rung_history(past) if "search" in state else {}
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


def check_same_search(space: SearchSpace, state: dict[str, Any], past: PastStudy) -> None:
    """SpaceError naming the space file and the first key where `space` is not the sweep's own:
    against its `sweep.json` record, else (an older sweep) against what its study stored."""
    source = state.get("space_file", space.source)
    hint = "keep the sweep's space, or start a new sweep with --name NEW and warm_start from it"
    record = state.get("search")
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
    """Open the extension's parent run (a new one, linked to the sweep's first; or the one of
    the extension being resumed) and list a new extension in `sweep.json`."""
    first = str(ext.state["parent_run_id"])
    # The sweep's store and study; not its parent run (a new one), or the resumed extension's.
    saved = {"tracking_uri": ext.state["tracking_uri"], "optuna_storage": layout.optuna_url}
    saved.update(optuna_storage=ext.state.get("optuna_storage", layout.optuna_url))
    if ext.parent_run_id is not None:
        saved["parent_run_id"] = ext.parent_run_id
    run = start_tracking(ext.space, layout, data_dir, saved)
    tags = {EXTENDS_RUN_TAG: first, EXTENSION_TAG: ext.directory}
    tags[RUN_NAME_TAG] = f"{ext.space.name} (extend {ext.number})"
    run.tracker.set_tags(run.parent_run_id, tags)
    if ext.parent_run_id is None:
        entry = {"dir": ext.directory, "parent_run_id": run.parent_run_id, "finished": False}
        entry.update(num_samples=ext.space.num_samples, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        state = read_state(layout)
        state[EXTENSIONS_KEY] = [*state.get(EXTENSIONS_KEY, []), entry]
        write_json_atomic(layout.state_file, state)
    return run


def run_extension(
    run: SweepRun, ext: Extension, *, live_table: bool, started: float
) -> SweepOutcome:
    """Run (or resume) the extension's Ray experiment, end its parent run as `fit_and_finish`
    does, and return every trial of the sweep."""
    ext_layout = SweepLayout(run.layout.root / ext.directory)
    outcome = outcome_of(replace(run, layout=ext_layout))
    status: Status = "FAILED"
    try:
        if ext.parent_run_id is not None and ray_tune.can_restore(ext_layout):
            tuner = ray_tune.restore_tuner(ext.space, ext_layout, data_dir=run.data_dir)
        else:
            shutil.rmtree(ext_layout.root, ignore_errors=True)  # nothing Ray could restore
            tuner = build_extension_tuner(run, ext, ext_layout, live_table=live_table)
        stopped = ray_tune.fit_tuner(tuner)
        outcome.trials = trial_outcomes(ext.space, ext_layout)
        ended = all(t.state in ENDED_STATES for t in outcome.trials)
        finished = ended and len(outcome.trials) >= ext.space.total_trials
        status = "FINISHED" if finished else "KILLED"
        if stopped:
            raise KeyboardInterrupt(f"extension {ext.number} stopped; finish it with --resume")
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome.wall_s = time.monotonic() - started
        finish_tracking(run, outcome, status)
    if status == "FINISHED":
        _mark_finished(run.layout, ext.directory)
    outcome.trials = [*earlier_trials(ext.space, run.layout, ext.number), *outcome.trials]
    outcome.experiment_dir = run.layout.root
    return outcome


def build_extension_tuner(
    run: SweepRun, ext: Extension, layout: SweepLayout, *, live_table: bool
) -> Any:
    """A Tuner of the extension's trials: proposed by the sweep's study, logged under the
    extension's parent run, stopped by an ASHA whose rungs hold the earlier trials."""
    study = SweepStudy(ext.space, run.optuna_storage)
    study.fail_orphans()  # a stopped sweep's unfinished trials: no driver will tell them
    relay = MlflowRelay(
        tracking_uri=run.tracker.uri,
        parent_run_id=run.parent_run_id,
        space=ext.space,
        data_dir=str(run.data_dir),
        git_sha=run.git_sha,
        run_tags={EXTENSION_TAG: ext.directory},
    )
    listeners: list[TrialListener] = [relay, DropResumeState(layout)]
    if live_table:
        listeners.append(LiveTrialTable(ext.space))
    return ray_tune.build_tuner(
        ext.space,
        layout,
        data_dir=run.data_dir,
        study=study,
        listeners=listeners,
        rung_history=ext.rungs,
    )


def earlier_trials(space: SearchSpace, root: SweepLayout, number: int) -> list[TrialOutcome]:
    """The trials of the sweep's first run and of its extensions before `number`."""
    layouts = [root] + [SweepLayout(root.root / extension_dir(n)) for n in range(1, number)]
    out: list[TrialOutcome] = []
    for layout in layouts:
        if ray_tune.can_restore(layout):
            out += trial_outcomes(space, layout)
    return out


def _mark_finished(layout: SweepLayout, directory: str) -> None:
    state = read_state(layout)
    for entry in state.get(EXTENSIONS_KEY, []):
        if entry.get("dir") == directory:
            entry["finished"] = True
    write_json_atomic(layout.state_file, state)


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


def extension_lines(outcome: SweepOutcome, extra: int | None) -> list[str]:
    """What `orchestrator sweep --extend` prints: the extension, then the whole sweep."""
    head = f"extended sweep {outcome.name} by {extra} trials" if extra else "resumed extension"
    return [head, *outcome.summary()]


def sweep_command_lines(
    space: SearchSpace,
    extend: int | None,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
) -> list[str]:
    """What `orchestrator sweep` prints for a plain sweep: a new or resumed sweep, an extension
    (`--extend N`), or with `--resume` the sweep's last extension when that did not finish."""
    if extend is not None or (resume and pending_extension(results_dir, space.name)):
        outcome = extend_sweep(
            space, extend, data_dir=data_dir, results_dir=results_dir, address=address
        )
        return extension_lines(outcome, extend)
    return run_sweep(
        space, data_dir=data_dir, results_dir=results_dir, address=address, resume=resume
    ).summary()
