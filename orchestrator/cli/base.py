"""What every command shares: one-line user errors (exit 2), one-line warnings, exit 130 on
Ctrl-C, and the common options."""

from __future__ import annotations

import functools
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from model.checkpoint import CheckpointError
from model.config import ConfigError
from model.data import DataError
from model.data_dir import FETCH_COMMAND, default_data_dir
from model.warning_format import show_warnings_as_lines
from model.weights import WeightsError
from orchestrator.sweep.storage_fault import STORAGE_ERRNOS

F = TypeVar("F", bound=Callable[..., Any])

# Errors caused by what the user gave us (a file, a flag, a config value): one line, exit 2.
# model.train.NonFiniteLossError (a diverging loss: change optim.lr, ...) is a ConfigError, so
# this module need not import model.train (and scipy, ~0.5 s) at startup to list it.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, WeightsError, CheckpointError)


class UserInputError(click.ClickException):
    """A one-line error about the user's input; exits with status 2 like click's usage errors."""

    exit_code = 2




def user_errors(func: F) -> F:
    """Turn the project's input errors into one-line click errors with exit status 2, and a
    full or read-only disk into one line with exit status 1 (nothing about the input is
    wrong; run the command again once it can write)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            raise UserInputError(str(err).splitlines()[0]) from err
        except OSError as err:
            if err.errno not in STORAGE_ERRNOS:
                raise
            where = f"{err.filename}: " if err.filename else ""
            line = f"{where}{err.strerror or err}".splitlines()[0]
            raise click.ClickException(line) from err

    return wrapper  # type: ignore[return-value]


INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
TERMINATED_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler cancelling the job): unwinds like Ctrl-C, so the same
    cleanup runs (temp files removed, a sweep's MLflow runs ended KILLED)."""


# Set by the SIGTERM handler: a command's code may catch the Terminated it raised (Ray Tune
# stops its experiment on any KeyboardInterrupt and the sweep re-raises a plain one), and the
# exit code must still say SIGTERM.
TERMINATION = threading.Event()


def _raise_terminated(signum: int, frame: Any) -> None:
    TERMINATION.set()
    raise Terminated


class CommandGroup(click.Group):
    """The `orchestrator` group: every warning prints as one `warning: ...` line, a value an
    option's type refuses is a one-line error (exit 2), and a command stopped by Ctrl-C
    (SIGTERM) exits 130 (143) once its own cleanup ran, where click would print `Aborted!` and
    exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        show_warnings_as_lines()
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        TERMINATION.clear()
        try:
            return super().invoke(ctx)
        except click.BadParameter as err:
            # A value click's own types refuse (`--extend 0`, a file where a directory goes):
            # the project's one line, not click's usage block above it. A missing argument
            # keeps the usage block, which shows what to type.
            if isinstance(err, click.MissingParameter):
                raise
            raise UserInputError(" ".join(err.format_message().split())) from err
        except KeyboardInterrupt as err:
            # The blank line on a terminal closes its `^C` echo; the reason, when one is given
            # (a sweep says how to resume), follows.
            start = "\n" if sys.stderr.isatty() else ""
            terminated = isinstance(err, Terminated) or TERMINATION.is_set()
            what = "terminated" if terminated else "interrupted"
            click.echo(f"{start}{what}{f': {err}' if str(err) else ''}", err=True)
            code = TERMINATED_EXIT if terminated else INTERRUPTED_EXIT
            raise click.exceptions.Exit(code) from None
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


def resolve_data_dir(option: str | None) -> Path:
    """--data-dir, else $ORCHESTRATOR_DATA_DIR, else ./data; must exist (a missing one is an
    error that says how to download it)."""
    path = Path(option) if option else default_data_dir()
    if not path.is_dir():
        where = f" {shlex.quote(str(path))}" if option else ""
        raise DataError(
            f"{path}: data directory not found; run `{FETCH_COMMAND}{where}` to download the "
            "CS224N files, or pass --data-dir DIR"
        )
    return path


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="CS224N data directory (default: $ORCHESTRATOR_DATA_DIR, then ./data).",
)


results_dir_option = click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
