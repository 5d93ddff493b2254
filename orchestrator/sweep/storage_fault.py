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
from collections.abc import Iterator
from pathlib import Path

STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
# How these errors read once they crossed a process (Ray's error file) or a database driver.
SIGNS = (
    "[Errno 28]",
    "os error 28",  # Rust's I/O errors (safetensors)
    "No space left on device",
    "[Errno 30]",
    "Read-only file system",
    "[Errno 122]",
    "Disk quota exceeded",
    "database or disk is full",
    "readonly database",
    # torch.save's own words for a write the disk cut short
    "unexpected pos",
    "PytorchStreamWriter failed writing",
)
# Exceptions that wrap an I/O failure without an errno (SQLite through SQLAlchemy and MLflow).
IO_ERRORS = ("OperationalError", "MlflowException")
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
            raise fault(results_dir, self.reason)


WATCH = StorageWatch()


def driver_storage_fault(error: BaseException, results_dir: Path) -> StorageFault | None:
    """The driver's error as a StorageFault when it is one: an error in its chain names a
    storage errno, or it is an I/O error (OSError, a database's OperationalError, MLflow's
    error around one) and a probe write into the results directory now fails. Anything else
    (a bug, bad input) is None and surfaces as itself."""
    chain = list(_chain(error))
    named = next((e for e in chain if is_storage_error(e)), None)
    io_like = any(isinstance(e, OSError) or type(e).__name__ in IO_ERRORS for e in chain)
    met = probe(results_dir) if named is None and io_like else None
    if named is None and met is None:
        return None
    cause = named if named is not None else error
    reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:200]}"
    return fault(results_dir, reason if met is None else f"{met.strerror} ({reason})", met)


def fault(results_dir: Path, reason: str, met: OSError | None = None) -> StorageFault:
    number = met.errno if met is not None and met.errno in STORAGE_ERRNOS else errno.ENOSPC
    return StorageFault(
        number,
        f"{results_dir}: {reason}; the sweep stopped with its trials saved: free space (or "
        "make it writable), then continue it with --resume",
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def last_failure(error_text: str) -> str:
    """The newest failure of a trial's error file: Ray appends each failure (`Failure # N`) to
    it and keeps the file when the trial is resumed, so older ones may be another story."""
    return error_text.rsplit("Failure # ", 1)[-1]


def trial_storage_fault(error_text: str, directory: Path) -> str | None:
    """Why a trial's newest failure is a storage fault (its error names one, or there is no
    error text, as when Ray could not write it, and a probe write into `directory` now
    fails), or None."""
    newest = last_failure(error_text).strip()
    if is_storage_error(newest):
        return newest.splitlines()[-1][:200]
    met = probe(directory)
    return f"{met.strerror or met}" if met is not None else None


def failed_on_storage_text(error_text: str) -> bool:
    """Read back on `--resume`: a trial failed on storage when its newest failure names it, or
    when Ray could not even write its error file (the disk was full)."""
    newest = last_failure(error_text).strip()
    return not newest or is_storage_error(newest)


def trial_failed_on_storage(error_file: Path | None, directory: Path) -> str | None:
    """`trial_storage_fault` of a trial's error file (missing: no text)."""
    has_text = error_file is not None and error_file.is_file()
    text = error_file.read_text(errors="replace") if has_text and error_file else ""
    return trial_storage_fault(text, directory)
