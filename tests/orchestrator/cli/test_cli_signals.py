"""SIGTERM and Ctrl-C end any command with the shell's codes (143, 130) and one line, even when
the command's own code catches the signal's exception and stops with a plain KeyboardInterrupt,
as a sweep does after Ray Tune stops its experiment."""

from __future__ import annotations

import os
import signal

import click
from click.testing import CliRunner

from orchestrator.cli.base import CommandGroup


def group_with(body) -> click.Group:
    @click.group(cls=CommandGroup)
    def cli() -> None:
        pass

    @cli.command()
    def run() -> None:
        body()

    return cli


def sigterm_caught_and_restopped() -> None:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt:  # e.g. Ray Tune stopping its experiment on the exception
        pass
    raise KeyboardInterrupt("sweep 'x' stopped; continue it with --resume")


def ctrl_c() -> None:
    raise KeyboardInterrupt("sweep 'x' stopped; continue it with --resume")


def test_sigterm_exits_143_even_when_the_command_caught_it():
    result = CliRunner().invoke(group_with(sigterm_caught_and_restopped), ["run"])
    assert result.exit_code == 143, result.output
    assert result.output.strip() == "terminated: sweep 'x' stopped; continue it with --resume"
    # The next command starts afresh: a plain Ctrl-C is an interruption again.
    again = CliRunner().invoke(group_with(ctrl_c), ["run"])
    assert again.exit_code == 130
    assert again.output.strip() == "interrupted: sweep 'x' stopped; continue it with --resume"
