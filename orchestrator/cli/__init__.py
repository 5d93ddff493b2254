"""The `orchestrator` command line (click), one module per command; `main` is the entry point.

Modules:
- `app`: the command group (`main`) and its commands.
- `base`: what every command shares: one-line user errors (exit 2), warnings, exit 130 on Ctrl-C,
  the data directory option.
- `train`, `data`, `sweep` (every branch of `sweep`: dry run, plain, `--extend`, study),
  `ensemble`, `predict`, `register`, `report` (and `ui`), `servers` (`tracking-server`).
- `__main__`: `python -m orchestrator.cli`.

    orchestrator sweep search_spaces/quickstart.yaml
"""

from orchestrator.cli.app import main

__all__ = ["main"]
