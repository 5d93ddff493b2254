"""`orchestrator train`: one training run, without Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.base import data_dir_option, resolve_data_dir, user_errors


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set optim.lr=3e-5 (repeatable).",
)
@data_dir_option
@click.option("--out", type=click.Path(), default=None, help="Output directory.")
@user_errors
def train(config: str, overrides: tuple[str, ...], data_dir: str | None, out: str | None) -> None:
    """Train one multitask minBERT from CONFIG (YAML), without Ray.

    \b
    Example:
      orchestrator train configs/quickstart.yaml --set optim.epochs=1 --out results/try1
    """
    from model.checkpoint import RunLayout
    from model.config_guards import check_inert_settings
    from model.data_dir import quora_train_note, resolve_data_files
    from model.progress import best_epoch_summary
    from model.train import fit
    from orchestrator.cluster import check_creatable
    from orchestrator.config import load_train_config

    cfg = load_train_config(Path(config), overrides)
    # A knob that the rest of the config switches off is refused, not trained without a word.
    check_inert_settings(cfg, f"{config}{' with --set' if overrides else ''}: ")
    data_path = resolve_data_dir(data_dir or cfg.data.data_dir)
    cfg = resolve_data_files(cfg, data_path)  # para_train: auto -> the Quora file it reads
    out_dir = Path(out) if out else Path("results") / "train" / Path(config).stem
    check_creatable(out_dir, f"--out {out_dir}")
    if cfg.data.cache_dir:
        check_creatable(Path(cfg.data.cache_dir), f"data.cache_dir {cfg.data.cache_dir}")
    result = fit(cfg, data_dir=data_path, out_dir=out_dir, progress=sys.stderr.isatty())
    layout = RunLayout(out_dir)
    click.echo(best_epoch_summary(result.best_metrics, result.epochs_run, result.selected_by))
    click.echo(quora_train_note(cfg.data.para_train, result.train_examples.get("para")))
    click.echo(f"metrics:     {layout.metrics}")
    click.echo(f"checkpoint:  {result.best_checkpoint}")
    click.echo(f"predictions: {layout.predictions}")
