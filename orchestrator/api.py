"""The orchestrator from Python (a notebook, a script): the functions `import orchestrator`
exposes. Each returns plain data (a dataclass or a pandas DataFrame) and prints nothing; the CLI
is these same drivers with flags.

    import orchestrator

    outcome = orchestrator.run_sweep("search_spaces/quickstart.yaml", data_dir="data")
    trials = orchestrator.load_trials("quickstart")
    ensemble = orchestrator.build_ensemble("quickstart", top=3)
    predictor = orchestrator.load_predictor(ensemble.out_dir)  # predict/predictor.py's
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.ensemble.run import EnsembleResult
    from orchestrator.space.schema import SearchSpace
    from orchestrator.sweep.outcome import SweepOutcome

Space = str | os.PathLike[str] | Mapping[str, Any]


def load_search_space(space: Space | SearchSpace, *, name: str | None = None) -> SearchSpace:
    """A validated search space from a YAML path or a mapping of the same keys (a mapping's
    `base:` path is read relative to the working directory); SpaceError names a bad key.

    >>> orchestrator.load_search_space({"base": "configs/tiny.yaml", "num_samples": 2})
    """
    from orchestrator.space.schema import SearchSpace, check_name, load_space, parse_space

    if isinstance(space, SearchSpace):
        parsed = space
    elif isinstance(space, Mapping):
        parsed = parse_space(dict(space), source="<dict>", base_dir=Path.cwd())
    else:
        parsed = load_space(Path(space))
    return parsed.replace(name=check_name(name)) if name is not None else parsed


def run_sweep(
    space: Space | SearchSpace,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] = "results",
    name: str | None = None,
    resume: bool = False,
    extend: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
) -> SweepOutcome:
    """Run a sweep (or, for a space with `arms:`, an ablation study: see `run_study`) to its end,
    as `orchestrator sweep` does; `extend=N` adds N configs to a finished sweep (N rounds to a
    racing study). Returns every
    trial's state, params and best value (`outcome.trials`; `outcome.best`).

    >>> outcome = orchestrator.run_sweep("search_spaces/quickstart.yaml", data_dir="data")
    >>> outcome.best.best_value
    """
    from orchestrator.space.schema import SpaceError

    parsed = load_search_space(space, name=name)
    where: dict[str, Any] = {
        "data_dir": _data_dir(data_dir, parsed),
        "results_dir": Path(results_dir),
        "address": address,
        "num_cpus": num_cpus,
        "live_table": False,
    }
    if parsed.study is not None:
        if extend is not None and parsed.study.race is None:
            raise SpaceError(
                f"{parsed.source}: arms: extend adds trials to a plain sweep, or rounds to a race"
            )
        if extend is not None and (extend < 1 or resume):
            raise ValueError("extend=N: N >= 1 more rounds, without resume=True")
        from orchestrator.ablation.study_run import run_ablation_study

        return run_ablation_study(parsed, resume=resume, extra_rounds=extend or 0, **where)
    from orchestrator.sweep.extend import extend_sweep, runs_an_extension

    if extend is not None and resume:
        raise ValueError("extend=N runs N new trials; resume=True alone finishes an extension")
    if runs_an_extension(Path(results_dir), parsed.name, extend=extend, resume=resume):
        return extend_sweep(parsed, extend, **where)
    from orchestrator.sweep.plain import run_plain_sweep

    return run_plain_sweep(parsed, resume=resume, **where)


def run_study(
    space: Space | SearchSpace,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] = "results",
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
) -> SweepOutcome:
    """Run an ablation study (a space with `arms:` and `seeds:`) to its end; every run of every
    phase is in the outcome, labelled with its arm and phase. SpaceError for a space without
    arms. Its table: `load_ablation_table(name)`.

    >>> orchestrator.run_study("search_spaces/ablation_quick.yaml", data_dir="data")
    >>> orchestrator.load_ablation_table("ablation_quick")
    """
    from orchestrator.space.schema import SpaceError

    parsed = load_search_space(space, name=name)
    if parsed.study is None:
        raise SpaceError(f"{parsed.source}: arms: not a study (run it with run_sweep)")
    return run_sweep(
        parsed, data_dir=data_dir, results_dir=results_dir, resume=resume, address=address,
        num_cpus=num_cpus,
    )  # fmt: skip


def load_trials(sweep: str | None = None, *, results_dir: str | os.PathLike[str] = "results"
                ) -> pd.DataFrame:  # fmt: skip
    """One row per trial of a sweep or study (default: the newest in the store): its state,
    params, best-epoch metrics and wall time, as `orchestrator report` writes trials.parquet.

    >>> trials = orchestrator.load_trials("quickstart")
    >>> trials.sort_values("best/dev/overall", ascending=False).head()
    """
    return _report(sweep, results_dir).frame


def load_ablation_table(
    study: str | None = None, *, results_dir: str | os.PathLike[str] = "results"
) -> pd.DataFrame:
    """A study's ablation table: one row per arm, each metric's mean ± CI over seeds, its
    paired difference to the baseline, the corrected tests and the verdict (the tables of
    ablation.md). ValueError for a plain sweep.

    >>> orchestrator.load_ablation_table("seeds")[["arm", "dev/overall"]]
    """
    report = _report(study, results_dir)
    if report.study is None:
        raise ValueError(f"sweep {study or '(newest)'} is not an ablation study (no arms)")
    return report.study.table


def build_ensemble(
    sweep: str | None = None,
    *,
    top: int = 5,
    results_dir: str | os.PathLike[str] = "results",
    data_dir: str | os.PathLike[str] | None = None,
    method: str | None = None,
    select: str = "top",
    splits: tuple[str, ...] = ("dev", "test"),
) -> EnsembleResult:
    """Combine the `top` best trials of a sweep, write results/SWEEP/ensemble/ and log it, as
    `orchestrator ensemble` does; returns its members, dev metrics and files.

    >>> ensemble = orchestrator.build_ensemble("quickstart", top=3, splits=("dev",))
    >>> ensemble.dev["dev/overall"]
    """
    from orchestrator.ensemble.request import DEFAULT_METHOD, EnsembleRequest
    from orchestrator.ensemble.run import run_ensemble

    request = EnsembleRequest(
        top=top,
        sweep=sweep,
        results_dir=Path(results_dir),
        data_dir=Path(data_dir) if data_dir is not None else None,
        method=method or DEFAULT_METHOD,
        select=select,
        splits=tuple(splits),
    )
    return run_ensemble(request)


def _report(sweep: str | None, results_dir: str | os.PathLike[str]) -> Any:
    """The report of a stored sweep, built in memory (nothing written, nothing logged)."""
    from orchestrator.contract import SweepLayout
    from orchestrator.report.sweep_report import build_report
    from orchestrator.tracking.store import find_sweep

    uri, stored = find_sweep(Path(results_dir), sweep)
    return build_report(uri, stored, SweepLayout(Path(results_dir) / stored.name))


def _data_dir(given: str | os.PathLike[str] | None, space: SearchSpace) -> Path:
    """`given`, else the base config's data dir, else $ORCHESTRATOR_DATA_DIR, else ./data."""
    from model.data_dir import default_data_dir

    if given is not None:
        return Path(given)
    configured = space.base.data.data_dir
    return Path(configured) if configured else default_data_dir()
