"""`orchestrator data ...`: the CS224N data directory."""

from __future__ import annotations

import json
import os

import click

from model.data_dir import check_data_dir, data_check_table
from orchestrator.cli.base import UserInputError, resolve_data_dir, user_errors


@click.group()
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
        from rich.console import Console

        Console(width=int(os.environ.get("COLUMNS", 160))).print(data_check_table(path, checks))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise UserInputError(
            f"{path}: {len(failed)} file(s) missing or wrong: {', '.join(failed)}"
        )
