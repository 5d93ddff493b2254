"""Warnings as one `warning: <message>` line each, for the CLI and every Ray trial process.

Python's default format is `/path/to/module.py:57: UserWarning: <message>` with the source line
under it: noise for a user, who needs only the message. Standard library only, so a command can
install it before importing torch.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO


def show_warnings_as_lines() -> None:
    """Print every warning of this process as one `warning: <message>` line on stderr, without
    Python's `file:line: Category:` prefix and source line (CLI, and each Ray trial process)."""
    warnings.showwarning = _warning_line


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    stream: Any = file if file is not None else sys.stderr
    if stream is None:  # no stderr at all (pythonw, a closed descriptor): nowhere to say it
        return
    try:
        stream.write(f"warning: {text}\n")
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stream, as Python's own showwarning
        pass
