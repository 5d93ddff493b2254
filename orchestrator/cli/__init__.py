"""The `orchestrator` command line (click); `main` is the entry point."""

from orchestrator.cli.app import main

__all__ = ["main"]
