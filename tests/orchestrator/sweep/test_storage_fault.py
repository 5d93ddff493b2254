"""A full or read-only results directory: how a trial's or the driver's error is recognised as
one, the probe write, the one line the CLI prints (exit 1), and the fault a sweep raises."""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.base import CommandGroup, user_errors
from orchestrator.sweep.storage_fault import (
    StorageFault,
    StorageWatch,
    driver_storage_fault,
    failed_on_storage_text,
    is_storage_error,
    probe,
    trial_storage_fault,
)

RAY_ERROR = (
    "ray::ImplicitFunc.train() (pid=7400, ip=192.0.2.2)\n"
    '  File "pyarrow/error.pxi", line 92, in pyarrow.lib.check_status\n'
    "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device\n"
)


def test_storage_errors_are_told_from_others():
    assert is_storage_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_error(OSError(errno.EROFS, "Read-only file system"))
    assert is_storage_error(RAY_ERROR)
    assert is_storage_error("(sqlite3.OperationalError) database or disk is full")
    assert not is_storage_error(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_storage_error("ValueError: loss is nan at step 12")


def test_the_probe_writes_and_removes_its_file(tmp_path: Path, monkeypatch):
    assert probe(tmp_path) is None and list(tmp_path.iterdir()) == []
    assert probe(tmp_path / "missing") is None  # not a storage errno: not a storage fault

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    met = probe(tmp_path)
    assert met is not None and met.errno == errno.ENOSPC


def test_a_trial_error_naming_a_full_disk_is_a_fault_without_probing(tmp_path: Path):
    assert trial_storage_fault(RAY_ERROR, tmp_path) == RAY_ERROR.strip().splitlines()[-1]
    assert trial_storage_fault("ValueError: loss is nan", tmp_path) is None


def test_the_watch_keeps_the_first_fault_and_raises_it_once_asked(tmp_path: Path):
    watch = StorageWatch()
    watch.raise_if_seen(tmp_path)  # nothing seen: nothing raised
    assert watch.record("No space left on device") and not watch.record("later")
    with pytest.raises(StorageFault) as err:
        watch.raise_if_seen(tmp_path)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value.strerror).startswith(f"{tmp_path}: No space left on device; ")
    assert str(err.value.strerror).endswith("continue it with --resume")
    watch.clear()
    watch.raise_if_seen(tmp_path)


def test_a_driver_error_is_a_fault_only_when_storage_is_to_blame(tmp_path: Path, monkeypatch):
    assert driver_storage_fault(RuntimeError("a bug"), tmp_path) is None
    fault = driver_storage_fault(RuntimeError("database or disk is full"), tmp_path)
    assert fault is not None
    assert "RuntimeError: database or disk is full; the sweep stopped" in str(fault)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "open", read_only)  # the probe write now fails
    # An I/O error that does not say why (SQLite's "unable to open database file") is a fault
    # when the probe fails; a bug or bad input never is, whatever the disk.
    try:
        raise RuntimeError("wrapped") from OSError("unable to open database file")
    except RuntimeError as err:
        io_fault = driver_storage_fault(err, tmp_path)
    assert io_fault is not None and io_fault.errno == errno.EROFS
    assert "Read-only file system (RuntimeError: wrapped)" in str(io_fault)
    assert driver_storage_fault(ValueError("seeds: expected 2 <= min"), tmp_path) is None


def test_only_a_trials_newest_failure_counts():
    older = "Failure # 1 (occurred at 2026-12-07)\n" + RAY_ERROR
    newer = older + "Failure # 2 (occurred at 2026-12-08)\nRuntimeError: CUDA out of memory\n"
    assert failed_on_storage_text(older) and not failed_on_storage_text(newer)
    assert failed_on_storage_text("")  # Ray could not write the error file: the disk was full
    torch_cut = "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 10880"
    assert failed_on_storage_text(torch_cut)
    assert failed_on_storage_text("I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/r/x.csv"),
         "Error: /r/x.csv: No space left on device"),
        (StorageFault(errno.ENOSPC, "/r: full; continue it with --resume"),
         "Error: /r: full; continue it with --resume"),
    ],
)  # fmt: skip
def test_the_cli_says_a_storage_fault_in_one_line_with_exit_1(error: OSError, line: str):
    @click.group(cls=CommandGroup)
    def cli() -> None:
        pass

    @cli.command()
    @user_errors
    def run() -> None:
        raise error

    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 1
    assert result.output.strip() == line
