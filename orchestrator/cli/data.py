"""`orchestrator data ...`: the CS224N data directory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from model.data_dir import check_data_dir, data_check_table, default_data_dir
from orchestrator.cli.base import UserInputError, resolve_data_dir, user_errors


@click.group()
def data() -> None:
    """Download (fetch) and inspect (check) the CS224N data directory."""


@data.command("check")
@click.argument("directory", type=click.Path(file_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@user_errors
def data_check(directory: str | None, as_json: bool) -> None:
    """Validate a data directory: files present, row counts, labels, sha256 of known files.

    \b
    Example:
      orchestrator data check data
    """
    show_check(resolve_data_dir(directory), as_json)


@data.command("fetch")
@click.argument("directory", type=click.Path(), required=False)
@click.option(
    "--url",
    "base_url",
    default=None,
    metavar="BASE",
    help="A mirror holding the files as BASE/<file> (default: the course's handout repository "
    "at its pinned commit).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds without data before a download counts as stalled.",
)
@user_errors
def data_fetch(directory: str | None, base_url: str | None, timeout: float) -> None:
    """Download the CS224N default-project CSVs into DIRECTORY, verified, then check them.

    DIRECTORY defaults to $ORCHESTRATOR_DATA_DIR, then ./data. Each file is checked against its
    known checksum and written whole (temp file + rename); files already present and correct are
    kept. The partial Quora file is not in the handout: the full quora-train.csv replaces it.

    \b
    Example:
      orchestrator data fetch
      orchestrator data fetch /scratch/cs224n --url https://mirror.example.org/cs224n/data
    """
    from orchestrator.data_fetch import (
        DEFAULT_BASE_URL,
        BarProgress,
        LineProgress,
        check_destination,
        fetch_data,
    )

    if base_url is not None and not base_url.startswith(("http://", "https://", "file:")):
        raise UserInputError(f"--url {base_url}: expected an http://, https:// or file: URL")
    path = Path(directory) if directory else default_data_dir()
    check_destination(path)  # a file there: one line before anything is printed or fetched
    url = base_url or DEFAULT_BASE_URL
    click.echo(f"fetching the CS224N data into {path} from {url}")
    if sys.stderr.isatty():
        with BarProgress() as bar:
            fetch_data(path, base_url=url, timeout=timeout, progress=bar)
    else:
        fetch_data(path, base_url=url, timeout=timeout, progress=LineProgress(click.echo))
    show_check(path, as_json=False)


def show_check(path: Path, as_json: bool) -> None:
    """Print `data check`'s table (or JSON) for `path`; a one-line error when a file is wrong."""
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
