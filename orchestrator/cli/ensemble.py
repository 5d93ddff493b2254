"""`orchestrator ensemble`: combine a sweep's best trials."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.base import data_dir_option, resolve_data_dir, user_errors
from orchestrator.ensemble.request import DEFAULT_METHOD, METHODS


@click.command()
@click.option("--top", "top", type=int, required=True, help="Members: the K best finished trials.")
@click.option("--sweep", "sweep_name", default=None, help="Sweep name (default: the newest).")
@click.option(
    "--metric", default=None,
    help="Metric ranking the trials [default: selection/overall when they logged it, else "
    "dev/overall]; greedy steps score its dev namesake.",
)  # fmt: skip
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@data_dir_option
@click.option("--splits", default="dev,test", show_default=True, help="Splits to predict.")
@click.option(
    "--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
    help="mean: average of probabilities and STS scores (measured at least as good as vote at "
    "most k); vote: mode of labels (ties by mean probability), median of STS scores.",
)  # fmt: skip
@click.option(
    "--select", type=click.Choice(["top", "greedy", "pareto"]), default="top", show_default=True,
    help="greedy: forward selection with replacement on dev (Caruana et al. 2004), K steps; "
    "pareto: the K best-ranked trials of a multi-objective sweep's Pareto front.",
)  # fmt: skip
@click.option(
    "--dev", "dev_examples", type=click.Choice(["full", "sweep"]), default="full",
    show_default=True,
    help="Score on the full dev files, or on the trials' fixed dev subsets (faster on CPU).",
)  # fmt: skip
@click.option(
    "--register", "register_name", default=None, metavar="NAME",
    help="Also log the ensemble as an MLflow pyfunc model on its run and register it as a new "
    "version of NAME (served by `mlflow models serve -m models:/NAME/VERSION`).",
)  # fmt: skip
@user_errors
def ensemble(
    top: int,
    sweep_name: str | None,
    metric: str | None,
    results_dir: str,
    data_dir: str | None,
    splits: str,
    method: str,
    select: str,
    dev_examples: str,
    register_name: str | None,
) -> None:
    """Combine the K best trials of a sweep into leaderboard predictions (results/SWEEP/ensemble/).

    \b
    Example:
      orchestrator ensemble --top 5
      orchestrator ensemble --top 3 --sweep smart --select greedy --method vote
      orchestrator ensemble --top 3 --register minbert-smart
    """
    from orchestrator.ensemble.request import EnsembleRequest
    from orchestrator.ensemble.run import run_ensemble, summary_lines

    if register_name is not None:  # a bad name fails before any member is loaded
        from orchestrator.registry.models import check_model_name

        check_model_name(register_name)

    request = EnsembleRequest(
        top=top,
        sweep=sweep_name,
        results_dir=Path(results_dir),
        data_dir=Path(data_dir) if data_dir else None,
        metric=metric,
        method=method,
        select=select,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
        dev_subset=dev_examples == "sweep",
    )
    # Progress goes to stderr, the summary to stdout.
    result = run_ensemble(
        request,
        resolve_data=resolve_data_dir,
        echo=lambda line: click.echo(line, err=True),
    )
    if register_name is not None and result.run_id:
        from orchestrator.registry.models import register_model  # mlflow.pyfunc: only if asked

        model = register_model(result.tracking_uri, result.run_id, result.out_dir, register_name)
        result.registered = model.uri
    for line in summary_lines(request, result):
        click.echo(line)
