"""`orchestrator sweep`: a search space (or an ablation study) on Ray Tune."""

from __future__ import annotations

import click

from orchestrator.cli.base import UserInputError, data_dir_option, resolve_data_dir, user_errors


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
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Run N more configs of a finished or stopped sweep (same study, results, experiment);"
    " with `repeats: R` in the space that is N x R trials.",
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
        _check_extend(space_file, space.study is not None, resume, dry_run, num_samples)
    if space.study is not None and dry_run:
        from orchestrator.ablation.phases import study_dry_run_lines  # no Ray for a plan

        lines: list[str] = study_dry_run_lines(space)
    elif space.study is not None:
        from orchestrator.ablation.study_run import study_command_lines

        lines = study_command_lines(space, data_path, local_results, address, resume)
    elif dry_run:
        from orchestrator.search.optuna_search import dry_run_lines  # Optuna only: a dry run starts no Ray
        from orchestrator.sweep.warm_start import NewSweep

        NewSweep.check(space, local_results, resume=resume)  # its warm start, as the run checks
        lines = list(dry_run_lines(space))
    else:
        from orchestrator.cli.sweep_command import sweep_command_lines

        lines = sweep_command_lines(space, extend, data_path, local_results, address, resume)
    for line in lines:
        click.echo(line)


def _check_extend(
    space_file: str, study: bool, resume: bool, dry_run: bool, num_samples: int | None
) -> None:
    """--extend N adds N trials to a plain sweep and runs them: no study, and no --num-samples,
    --dry-run or --resume beside it (a stopped extension goes on with --resume alone)."""
    if study:
        raise UserInputError(
            f"{space_file}: arms: --extend adds trials to a plain sweep, not a study"
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
