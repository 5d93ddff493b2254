"""`orchestrator report` and `orchestrator ui`: read a sweep's results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator.cli.base import user_errors


@click.command()
@click.argument("sweep_name", metavar="[SWEEP]", required=False)
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--no-mlflow", is_flag=True, help="Do not log the report to the sweep's parent run.")
@click.option(
    "--published",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A study only: YAML of published baseline and best rows per arm; writes published.md, "
    "each arm's published Δ beside ours (see docs/studies.md).",
)
@user_errors
def report(
    sweep_name: str | None, results_dir: str, no_mlflow: bool, published: str | None
) -> None:
    """Write results/SWEEP/: trials.parquet, ablation.md, importance.md and plots/ (default: the
    newest sweep), and log them to the sweep's parent MLflow run. For an ablation study:
    ablation.md/.parquet/.tex of its confirm runs, SST details and learning curves. After
    `orchestrator ensemble`: ensemble.md and plots/ensemble_k_curve.png, its k-curve.

    \b
    Example:
      orchestrator report smart
      orchestrator report seed_systems_cpu --published docs/seed_reports.yaml
    """
    from orchestrator.report.sweep_report import write_report

    written = write_report(sweep_name, results_dir=Path(results_dir), log_to_mlflow=not no_mlflow)
    click.echo(f"sweep {written.sweep}: {written.trials} trials")
    for note in written.notes:
        click.echo(f"note: {note}")
    for path in written.files:
        click.echo(f"  {path}")
    if published is not None:
        from orchestrator.report.published import write_published

        click.echo(f"  {write_published(Path(results_dir) / written.sweep, Path(published))}")


@click.command()
@click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
@click.option("--sweep", "sweep_name", default=None, help="Sweep to open (default: the newest).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@user_errors
def ui(results_dir: str, sweep_name: str | None, port: int) -> None:
    """Start the MLflow UI on 127.0.0.1 against the sweeps' tracking store; Ctrl-C stops it.
    The URL it prints opens the sweep's runs table (a study's: one averaged row per arm).

    \b
    Example:
      orchestrator ui --port 5001
    """
    from orchestrator.report.sweep_report import ui_target

    command, url = ui_target(Path(results_dir), sweep_name, port)
    click.echo(f"MLflow UI: {url}")
    sys.stdout.flush()
    # Become the server, so Ctrl-C and kill signals reach it directly.
    os.execv(command[0], command)
