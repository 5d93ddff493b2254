"""`orchestrator sweep`: a search space (or an ablation study) on Ray Tune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.base import UserInputError, data_dir_option, resolve_data_dir, user_errors

if TYPE_CHECKING:
    from orchestrator.ablation.racing import RaceStop
    from orchestrator.space.schema import SearchSpace
    from orchestrator.sweep.outcome import SweepOutcome


@click.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Configs to sample.")
@click.option("--name", default=None, help="Sweep name (default: the space's); results/NAME/.")
@click.option(
    "--address", default=None, help="Join a Ray cluster (auto, HOST:PORT); default: local Ray."
)
@data_dir_option
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--resume", is_flag=True, help="Continue a sweep whose driver died.")
@click.option(
    "--extend",
    type=int,
    default=None,
    metavar="N",
    help="Run N more configs of a finished or stopped sweep (same study, results, experiment);"
    " with `repeats: R` in the space that is N x R trials. A racing study: N more rounds for"
    " the arms still unresolved at its max seeds.",
)
@click.option("--dry-run", is_flag=True, help="Validate and print sampled configs; no training.")
@user_errors
def sweep(
    space_file: str,
    num_samples: int | None,
    name: str | None,
    address: str | None,
    data_dir: str | None,
    results_dir: str,
    resume: bool,
    extend: int | None,
    dry_run: bool,
) -> None:
    """Explore SPACE.yaml with Optuna on Ray Tune (ASHA), logging every trial to MLflow.

    \b
    Example:
      orchestrator sweep search_spaces/quickstart.yaml
      orchestrator sweep search_spaces/smart.yaml --dry-run --num-samples 4
      orchestrator sweep search_spaces/smart.yaml --resume
      orchestrator sweep search_spaces/smart.yaml --extend 8
    """
    from orchestrator.cluster import check_creatable, local_results_dir, parse_address
    from orchestrator.space.schema import check_name, load_space

    if extend is not None and extend < 1:
        raise UserInputError(f"--extend {extend}: expected N >= 1, the number of configs to add")
    address = parse_address(address)
    space = load_space(space_file)
    if num_samples is not None:
        space = space.replace(num_samples=num_samples)
    if name is not None:
        space = space.replace(name=check_name(name))
    # Checked before a dry run too, so "valid" means the real run would start.
    data_path = resolve_data_dir(data_dir or space.base.data.data_dir)
    # data.para_train: auto -> the Quora file, as the drivers do, so a dry run names it too.
    space = space.with_data_files(data_path)
    local_results = local_results_dir(results_dir)
    check_creatable(local_results, f"--results-dir {results_dir}")
    if extend is not None:
        fixed_study = space.study is not None and space.study.race is None
        _check_extend(space_file, fixed_study, resume, dry_run, num_samples)
    if dry_run:
        lines = dry_run_plan(space, local_results, resume=resume)
    elif space.study is not None:
        lines = study_lines(space, data_path, local_results, address, resume, extend)
    else:
        lines = plain_sweep_lines(space, extend, data_path, local_results, address, resume)
    for line in lines:
        click.echo(line)


# The branches below import their drivers when they run: `orchestrator --help` and a dry run
# never start Ray's import machinery.


def dry_run_plan(space: SearchSpace, results_dir: Path, *, resume: bool) -> list[str]:
    """What `--dry-run` prints: a study's plan, or a sweep's sampled configs (Optuna only)."""
    if space.study is not None:
        from orchestrator.ablation.phases import study_dry_run_lines

        return study_dry_run_lines(space)
    from orchestrator.search.optuna_search import dry_run_lines as sampled_lines
    from orchestrator.sweep.warm_start import NewSweep

    NewSweep.check(space, results_dir, resume=resume)  # its warm start, as the run checks
    return list(sampled_lines(space))


def plain_sweep_lines(
    space: SearchSpace,
    extend: int | None,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
) -> list[str]:
    """Run a plain sweep as the flags ask: new or resumed (`run_plain_sweep`), an extension
    (`--extend N`), or with `--resume` its last extension when that did not finish."""
    from orchestrator.sweep.extend import extend_sweep, runs_an_extension
    from orchestrator.sweep.plain import run_plain_sweep

    if runs_an_extension(results_dir, space.name, extend=extend, resume=resume):
        outcome = extend_sweep(
            space, extend, data_dir=data_dir, results_dir=results_dir, address=address
        )
        return extension_lines(outcome, space, extend)
    return run_plain_sweep(
        space, data_dir=data_dir, results_dir=results_dir, address=address, resume=resume
    ).summary()


def _check_extend(
    space_file: str, study: bool, resume: bool, dry_run: bool, num_samples: int | None
) -> None:
    """--extend N adds N trials to a plain sweep and runs them: no study, and no --num-samples,
    --dry-run or --resume beside it (a stopped extension goes on with --resume alone)."""
    if study:
        raise UserInputError(
            f"{space_file}: arms: --extend adds trials to a plain sweep, or rounds to a racing "
            "study (seeds: {min, max, step}); this study runs fixed seeds"
        )
    for flag, given in (
        ("--resume", resume),
        ("--dry-run", dry_run),
        ("--num-samples", num_samples),
    ):
        if given:
            raise UserInputError(
                f"--extend: cannot be combined with {flag} (--extend N runs N new trials; "
                "a stopped extension goes on with --resume alone)"
            )


ABLATION_MARKDOWN = "ablation.md"


def study_summary(space: SearchSpace, outcome: SweepOutcome) -> list[str]:
    """What `orchestrator sweep` prints when a study ends: its confirm runs per arm."""
    from model.data_dir import quora_runs_notes
    from orchestrator.contract import ARM_PARAM, CONFIRM_PHASE, PARA_TRAIN_PARAM, PHASE_PARAM

    study = space.study
    assert study is not None, "a study's space"
    confirm = [t for t in outcome.trials if t.labels.get(PHASE_PARAM) == CONFIRM_PHASE]
    lines = [f"study {space.name}: {len(outcome.trials)} runs in {outcome.wall_s:.0f} s"]
    stops = race_stops_now(space, outcome) if study.race else {}
    for arm in study.arms:
        runs = [t for t in confirm if t.labels.get(ARM_PARAM) == arm.name]
        values = [t.best_value for t in runs if t.best_value is not None]
        mean = f"{sum(values) / len(values):.4f}" if values else "-"
        planned = f"/{len(study.seeds)}" if study.race is None else ""
        race = f", race: {stops[arm.name].describe()}" if arm.name in stops else ""
        lines.append(
            f"  {arm.name:24s} {len(values)}{planned} confirm runs, "
            f"mean best {space.metric} {mean}{race}"
        )
    racing = any(stop.decision == "continue" for stop in stops.values())
    if (len(confirm) < study.runs and study.race is None) or racing:
        lines.append("stopped before the end: run the same command with --resume to go on")
    # An arm may train Quora on a file of its own (data.para_train among its overrides).
    files = [dict(arm.overrides).get(PARA_TRAIN_PARAM, outcome.quora_train) for arm in study.arms]
    lines += [f"note: {note}" for note in quora_runs_notes(files, noun="arm")]
    lines.append(f"results:    {outcome.experiment_dir}")
    lines.append(f"mlflow:     {outcome.tracking_uri} (experiment {space.name})")
    return lines


def race_stops_now(space: SearchSpace, outcome: SweepOutcome) -> dict[str, RaceStop]:
    """How each arm of a racing study stands after its confirm runs in `outcome`."""
    from orchestrator.ablation.race_run import extra_rounds, race_design, race_stops
    from orchestrator.ablation.verdicts import table_metric
    from orchestrator.contract import CONFIRM_PHASE, PHASE_PARAM, SweepLayout

    assert space.study is not None
    design = race_design(space.study, extra_rounds(SweepLayout(outcome.experiment_dir)))
    confirm = [t for t in outcome.trials if t.labels.get(PHASE_PARAM) == CONFIRM_PHASE]
    return race_stops(confirm, space.study, design, table_metric(space.metric))


def study_lines(
    space: SearchSpace,
    data_dir: Path,
    results_dir: Path,
    address: str | None,
    resume: bool,
    extend: int | None = None,
) -> list[str]:
    """What `orchestrator sweep` prints for a study: its runs' summary, then (when every run
    ended) where its report went: the ablation table is what a study is run for. `extend`: N
    more rounds of a racing study."""
    from orchestrator.ablation.study_run import run_ablation_study
    from orchestrator.report.sweep_report import ReportError, write_report

    outcome = run_ablation_study(
        space,
        data_dir=data_dir,
        results_dir=results_dir,
        address=address,
        resume=resume,
        extra_rounds=extend or 0,
    )
    lines = study_summary(space, outcome)
    try:
        written = write_report(space.name, results_dir=results_dir)
    except ReportError as err:
        return [*lines, f"no report: {err}"]
    table = next((p for p in written.files if p.name == ABLATION_MARKDOWN), None)
    lines += [f"note: {note}" for note in written.notes]
    return [*lines, f"table:      {table or written.files[0]}"]


def extension_lines(outcome: SweepOutcome, space: SearchSpace, extra: int | None) -> list[str]:
    """What `orchestrator sweep --extend` prints: the extension, then the whole sweep."""
    if not extra:
        return ["resumed extension", *outcome.summary()]
    added = f"{extra} configs ({extra * space.repeats} trials)" if space.repeats > 1 else ""
    return [f"extended sweep {outcome.name} by {added or f'{extra} trials'}", *outcome.summary()]
