"""`orchestrator register`: one checkpoint as a new version of a registered MLflow model."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.base import results_dir_option, user_errors


@click.command()
@click.argument("name")
@click.option(
    "--checkpoint", type=click.Path(file_okay=False), required=True,
    help="A trial's best checkpoint directory (model.safetensors, config.json, tokenizer).",
)  # fmt: skip
@results_dir_option
@user_errors
def register(name: str, checkpoint: str, results_dir: str) -> None:
    """Register one checkpoint as a new version of the MLflow model NAME (an ensemble registers
    with `orchestrator ensemble --register NAME`; `--top 1` for its best trial alone).

    \b
    Example:
      orchestrator register minbert-best --checkpoint results/smart/TRIAL/train/checkpoints/best
      mlflow models serve -m models:/minbert-best/1 --env-manager local
    """
    from orchestrator.registry.checkpoint import register_checkpoint
    from orchestrator.tracking.writer import tracking_uri

    uri = tracking_uri(Path(results_dir))
    registered = register_checkpoint(uri, Path(checkpoint), name)
    click.echo(f"registered:  {registered.uri}")
    click.echo(f"mlflow run:  {registered.run_id}")
