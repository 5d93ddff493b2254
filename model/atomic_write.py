"""Files written whole or not at all: a temp file beside the target, renamed into place, so a
reader (or a crash) never sees half a file and no temp file is left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text (newlines as `\\n`) to `path` through a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: no stray temp file
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON (indented, keys sorted) through a temp file and rename."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))
