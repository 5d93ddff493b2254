"""What every command shares: one-line user errors (exit 2) and the common options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from model.checkpoint import CheckpointError
from model.config import ConfigError
from model.data import DataError
from model.data_dir import default_data_dir
from model.weights import WeightsError

F = TypeVar("F", bound=Callable[..., Any])

# Errors caused by what the user gave us (a file, a flag, a config value): one line, exit 2.
# model.train.NonFiniteLossError (a diverging loss: change optim.lr, ...) is a ConfigError, so
# this module need not import model.train (and scipy, ~0.5 s) at startup to list it.
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


results_dir_option = click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True
)
