"""The `orchestrator` command group: noun-verb commands, one-line errors, exit 2.

Each command lives in its own module of this package; this one only assembles them.
"""

from __future__ import annotations

import click

from orchestrator.cli.base import CommandGroup
from orchestrator.cli.data import data
from orchestrator.cli.ensemble import ensemble
from orchestrator.cli.predict import predict
from orchestrator.cli.register import register
from orchestrator.cli.report import report, ui
from orchestrator.cli.servers import tracking_server_command
from orchestrator.cli.sweep import sweep
from orchestrator.cli.train import train


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sweep orchestrator for multitask minBERT (SST-5, Quora, STS-B).

    \b
    Example:
      orchestrator data fetch
      orchestrator train configs/quickstart.yaml --set optim.lr=3e-5
      orchestrator sweep search_spaces/quickstart.yaml
      orchestrator ensemble --top 5
    """


for command in (train, data, sweep, ensemble, report, ui, tracking_server_command):
    main.add_command(command)
main.add_command(predict)
main.add_command(register)
