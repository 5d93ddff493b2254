"""The `orchestrator` command line (click): noun-verb commands, one-line errors, exit 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from model.checkpoint import CheckpointError
from model.config import ConfigError
from model.data import DataError, check_data_dir, default_data_dir
from model.weights import WeightsError

F = TypeVar("F", bound=Callable[..., Any])

# Errors caused by what the user gave us (a file, a flag, a config value): one line, exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, WeightsError, CheckpointError)


class UserInputError(click.ClickException):
    """A one-line error about the user's input; exits with status 2 like click's usage errors."""

    exit_code = 2


def user_errors(func: F) -> F:
    """Turn the project's input errors into one-line click errors with exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            raise UserInputError(str(err).splitlines()[0]) from err

    return wrapper  # type: ignore[return-value]


def resolve_data_dir(option: str | None) -> Path:
    """--data-dir, else $ORCHESTRATOR_DATA_DIR, else the default location; must exist."""
    path = Path(option) if option else default_data_dir()
    if not path.is_dir():
        raise DataError(
            f"{path}: data directory not found; pass --data-dir DIR or set ORCHESTRATOR_DATA_DIR"
        )
    return path


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="CS224N data directory (default: $ORCHESTRATOR_DATA_DIR, then ../shared/data/cs224n).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sweep orchestrator for multitask minBERT (SST-5, Quora, STS-B).

    \b
    Example:
      orchestrator train configs/quickstart.yaml --set optim.lr=3e-5
      orchestrator sweep search_spaces/quickstart.yaml
      orchestrator ensemble --top 5
    """


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set optim.lr=3e-5 (repeatable).",
)
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory.")
@user_errors
def train(config: str, overrides: tuple[str, ...], data_dir: str | None, out: str | None) -> None:
    """Train one multitask minBERT from CONFIG (YAML), without Ray.

    \b
    Example:
      orchestrator train configs/quickstart.yaml --set optim.epochs=1 --out results/try1
    """
    from model.train import fit
    from orchestrator.config import load_train_config

    cfg = load_train_config(Path(config), overrides)
    data_path = resolve_data_dir(data_dir or cfg.data.data_dir)
    out_dir = Path(out) if out else Path("results") / "train" / Path(config).stem
    result = fit(cfg, data_dir=data_path, out_dir=out_dir, progress=sys.stderr.isatty())
    click.echo(f"best epoch {int(result.best_metrics.get('epoch', 0))} of {result.epochs_run}")
    for key in ("dev/sst_acc", "dev/para_acc", "dev/sts_corr", "dev/overall"):
        click.echo(f"{key:14s} {result.best_metrics[key]:.4f}")
    if "partial" in cfg.data.para_train:
        click.echo("note: Quora trained on the first 5,000 training pairs only (partial file).")
    click.echo(f"metrics:     {out_dir / 'metrics.json'}")
    click.echo(f"checkpoint:  {result.best_checkpoint}")
    click.echo(f"predictions: {out_dir / 'predictions'}")


@main.group()
def data() -> None:
    """Inspect the CS224N data directory."""


@data.command("check")
@click.argument("directory", type=click.Path(file_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@user_errors
def data_check(directory: str | None, as_json: bool) -> None:
    """Validate a data directory: files present, row counts, labels, sha256 of known files.

    \b
    Example:
      orchestrator data check ../shared/data/cs224n
    """
    path = resolve_data_dir(directory)
    checks = check_data_dir(path)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2, default=str))
    else:
        _print_data_checks(path, checks)
    if any(c.problem and c.present for c in checks) or not any(c.present for c in checks):
        sys.exit(1)


def _print_data_checks(path: Path, checks: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data check: {path}")
    for column in ("file", "rows", "expected", "sha256", "labels", "problem"):
        table.add_column(column)

    def mark(value: bool | None) -> str:
        return {True: "ok", False: "MISMATCH", None: "-"}[value]

    for c in checks:
        table.add_row(
            c.name,
            "-" if c.rows is None else str(c.rows),
            "-" if c.expected_rows is None else str(c.expected_rows),
            mark(c.sha256_ok),
            mark(c.labels_ok),
            c.problem or "",
        )
    Console(width=int(os.environ.get("COLUMNS", 160))).print(table)


if __name__ == "__main__":
    main()
