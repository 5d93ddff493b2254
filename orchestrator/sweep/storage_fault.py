"""A results directory that fills up or turns read-only while a sweep runs.

Every trial would fail in turn (and Ray retry each), so the first trial error that names a
storage errno (ENOSPC, EROFS, EDQUOT), or after which a probe write into the results directory
fails, stops the experiment as Ctrl-C does: the trials still running are saved unfinished, so
`--resume` continues them once there is space again. The sweep then ends with `StorageFault`,
which the CLI prints as one line (exit 1). No Ray here: `ray_tune.TrialEvents` calls `check`.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
# How these errors read once they crossed a process (Ray's error file) or a database driver.
SIGNS = (
    "[Errno 28]",
    "No space left on device",
    "[Errno 30]",
    "Read-only file system",
    "[Errno 122]",
    "Disk quota exceeded",
    "database or disk is full",
    "readonly database",
)
PROBE_BYTES = 1 << 20  # what the next checkpoint needs at the very least


class StorageFault(OSError):
    """The results directory cannot be written: the one line says where and how to go on."""


def is_storage_error(error: BaseException | str) -> bool:
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return True
    return any(sign in str(error) for sign in SIGNS)


def probe(directory: Path) -> OSError | None:
    """Write, sync and remove a small file in `directory`; the storage error it met, if any."""
    path = directory / f".storage-probe-{os.getpid()}"
    try:
        with path.open("wb") as out:
            out.write(b"\0" * PROBE_BYTES)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        return err if err.errno in STORAGE_ERRNOS else None
    finally:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    return None


class StorageWatch:
    """The storage fault this driver process met, if any (set from Tune's callbacks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None

    def record(self, reason: str) -> bool:
        """Keep the first fault; True when it is the first."""
        with self._lock:
            first = self.reason is None
            self.reason = self.reason or reason
            return first

    def clear(self) -> None:
        with self._lock:
            self.reason = None

    def raise_if_seen(self, results_dir: Path) -> None:
        if self.reason is not None:
            raise StorageFault(
                errno.ENOSPC,  # or read-only: the CLI prints the message, exit 1
                f"{results_dir}: {self.reason}; the sweep stopped with its trials saved: free "
                "space (or make it writable), then continue it with --resume",
            )


WATCH = StorageWatch()


def driver_storage_fault(error: BaseException, results_dir: Path) -> StorageFault | None:
    """The driver's error as a StorageFault when it is one (its text names a storage error, or
    a probe write into the results directory now fails), else None."""
    met = probe(results_dir)
    if met is None and not is_storage_error(error):
        return None
    reason = met.strerror if met is not None else str(error).strip().splitlines()[-1][:200]
    return StorageFault(
        errno.ENOSPC,
        f"{results_dir}: {reason}; the sweep stopped: free space (or make it writable), then "
        "continue it with --resume",
    )


def trial_storage_fault(error_text: str, directory: Path) -> str | None:
    """Why a trial's failure is a storage fault (its error names one, or a probe write into
    `directory` now fails), or None."""
    if is_storage_error(error_text):
        return error_text.strip().splitlines()[-1][:200] if error_text.strip() else "storage full"
    met = probe(directory)
    return f"{met.strerror or met}" if met is not None else None
