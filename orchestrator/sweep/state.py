"""A sweep's `sweep.json`: read as one JSON object, and changed read-modify-write under an
exclusive lock (`sweep.json.lock`), so two drivers of one sweep (an extension starting while
another ends) never write over each other's change. Each write goes to a temp file renamed into
place, so a driver killed mid-write leaves the old file whole.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from model.checkpoint import write_json_atomic
from model.config import ConfigError
from orchestrator.contract import SweepLayout

T = TypeVar("T")


class SweepStateError(ConfigError):
    """The results directory does not match the request (exists without --resume, or missing)."""


def read_state(layout: SweepLayout) -> dict[str, Any]:
    """A sweep's `sweep.json`; a missing file or one that is not a JSON object is a one-line
    error naming it."""
    try:
        state = json.loads(layout.state_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SweepStateError(f"{layout.state_file}: unreadable ({err})") from None
    if not isinstance(state, dict):
        raise SweepStateError(f"{layout.state_file}: expected a JSON object")
    return state


@contextmanager
def state_lock(layout: SweepLayout) -> Iterator[None]:
    """Hold the sweep's lock (released when the block ends, or when its process dies)."""
    with open(layout.state_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_state(layout: SweepLayout, change: Callable[[dict[str, Any]], T]) -> T:
    """Apply `change` to the sweep's `sweep.json` (it edits the dict in place) under the lock,
    write the result, and return what `change` returned."""
    with state_lock(layout):
        state = read_state(layout)
        result = change(state)
        write_json_atomic(layout.state_file, state)
    return result
