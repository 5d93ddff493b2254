"""The CS224N data directory: where it is, and whether its files are the ones MANIFEST.md lists.

`orchestrator data check` prints `check_data_dir`; the trainer finds the data with
`default_data_dir` when the config names none.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.data import (
    SENTENCE_COLUMNS,
    DataError,
    _parse_labels,
    _read_table,
    _require_columns,
)


@dataclass(frozen=True)
class KnownFile:
    """One CS224N file as listed in the data MANIFEST.md."""

    name: str  # relative to the data dir
    task: str  # sst / para / sts, or cfimdb (same format as sst, labels 0/1)
    rows: int | None  # excluding the header; None = unknown
    sha256: str | None
    label_column: str | None  # None for test-student files
    optional: bool = False  # absent here; a stand-in file is used instead
    git_blob: str | None = None  # `git hash-object`, checked when no sha256 is known
    invalid_labels: int = 0  # known malformed upstream rows


# fmt: off
KNOWN_FILES: tuple[KnownFile, ...] = (
    KnownFile("ids-sst-train.csv", "sst", 8544,
              "03b2b625c090f94a6afd59f114cde5282e2053aab0b101e87ed695d8a0c5b1df", "sentiment"),
    KnownFile("ids-sst-dev.csv", "sst", 1101,
              "a186ce94577635fbe10beaaddd50f16cccf6c30973221cefdf90deed2a584bfe", "sentiment"),
    KnownFile("ids-sst-test-student.csv", "sst", 2210,
              "bdd5a767faa0c26782117e37767ece154c30d5d04fb8727d09c71e3850a55c7b", None),
    KnownFile("quora-train.csv", "para", 141506, None, "is_duplicate", optional=True,
              git_blob="a3b5546f6a0e65b60a328a5d294d1038f5bed1da"),
    KnownFile("partial/quora-train-head5000.csv", "para", 5000,
              "e9ba85c230f966c64a3ce0abb575ab053eecdf8f8f5d1f08e3ada12b1b0e8f00", "is_duplicate"),
    KnownFile("quora-dev.csv", "para", 20214,
              "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad", "is_duplicate",
              invalid_labels=2),
    KnownFile("quora-test-student.csv", "para", None, None, None, optional=True,
              git_blob="f257ef00558555afb50819578a58205732b16354"),
    KnownFile("sts-train.csv", "sts", 6040,
              "15d12efc2d656fffb1d61ac1f08ec4227f43925fd16f420c037cbd063699c21b", "similarity"),
    KnownFile("sts-dev.csv", "sts", 863,
              "ce3cad6f16062586ac7ba462c28b010a9be10c530fd5074165860d7b7ab4e93d", "similarity"),
    KnownFile("sts-test-student.csv", "sts", 1725,
              "dee455745b72e9ca3ff74e7c056bd73e34bad5b8d5641045a2c1e7e131866f47", None),
    KnownFile("ids-cfimdb-train.csv", "cfimdb", 1707,
              "140fc513045a966109faed46a5c7a898767b96714d71bcb9c15f659129fadcea", "sentiment"),
    KnownFile("ids-cfimdb-dev.csv", "cfimdb", 245,
              "3087f571b66860fe5d035b5a018d08202ad3fd3720e4821c04b2acf6c7ded559", "sentiment"),
    KnownFile("ids-cfimdb-test-student.csv", "cfimdb", 488,
              "7ae611548c9eac879e9ebb406cc9f8ae68ff12f78090e4965af5cbdfa06240f4", None),
)
# fmt: on


@dataclass
class FileCheck:
    """The state of one known file in a data directory; `problem` is None when all is well."""

    name: str
    present: bool
    rows: int | None
    expected_rows: int | None
    sha256_ok: bool | None  # the sha256 (or git blob id when no sha256 is known) matches
    labels_ok: bool | None
    problem: str | None
    optional: bool = False

    @property
    def ok(self) -> bool:
        """Usable as is: present without problems, or an optional file that is absent."""
        return self.problem is None or (self.optional and not self.present)


def _checksum_ok(path: Path, known: KnownFile) -> bool | None:
    data = path.read_bytes()
    if known.sha256 is not None:
        return hashlib.sha256(data).hexdigest() == known.sha256
    if known.git_blob is not None:
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False)
        return blob.hexdigest() == known.git_blob
    return None


def _check_file(data_dir: Path, known: KnownFile) -> FileCheck:
    path = data_dir / known.name
    if not path.is_file():
        why = "missing"
        if known.optional:
            why = "missing (optional; not available offline, a stand-in is used)"
        return FileCheck(known.name, False, None, known.rows, None, None, why, known.optional)
    problems: list[str] = []
    sha_ok = _checksum_ok(path, known)
    if sha_ok is False:
        problems.append("checksum mismatch")
    rows: int | None = None
    labels_ok: bool | None = None
    try:
        frame = _read_table(path)
        rows = len(frame)
        # cfimdb has SST's layout; every file is read by these column names.
        _require_columns(path, frame, ("id", *SENTENCE_COLUMNS.get(known.task, ("sentence",))))
        if known.label_column is not None:
            _require_columns(path, frame, (known.label_column,))
            _, valid = _parse_labels(known.task, frame[known.label_column])
            invalid = int((~valid).sum())
            labels_ok = invalid == known.invalid_labels
            if not labels_ok:
                problems.append(
                    f"{invalid} invalid '{known.label_column}' labels "
                    f"(expected {known.invalid_labels})"
                )
    except DataError as err:
        problems.append(str(err))
    if known.rows is not None and rows is not None and rows != known.rows:
        problems.append(f"{rows} rows, expected {known.rows}")
    problem = "; ".join(problems) or None
    return FileCheck(
        known.name, True, rows, known.rows, sha_ok, labels_ok, problem, known.optional
    )


def check_data_dir(data_dir: Path) -> list[FileCheck]:
    """Check every KNOWN_FILES entry in `data_dir`: presence, rows, checksum and label ranges."""
    return [_check_file(Path(data_dir), known) for known in KNOWN_FILES]


def default_data_dir() -> Path:
    """$ORCHESTRATOR_DATA_DIR, else ./data/cs224n or ../shared/data/cs224n, else by the repo."""
    from_env = os.environ.get("ORCHESTRATOR_DATA_DIR")
    if from_env:
        return Path(from_env)
    for candidate in (Path("data/cs224n"), Path("../shared/data/cs224n")):
        if candidate.is_dir():
            return candidate.resolve()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cs224n"


def data_check_table(path: Path, checks: list[FileCheck]) -> Any:
    """The checks as a rich Table (file, rows, expected rows, sha256, labels, problem)."""
    from rich.table import Table

    table = Table(title=f"data check: {path}")
    for column in ("file", "rows", "expected", "sha256", "labels", "problem"):
        table.add_column(column)

    def mark(value: bool | None) -> str:
        return {True: "ok", False: "MISMATCH", None: "-"}[value]

    for c in checks:
        table.add_row(
            c.name,
            "-" if c.rows is None else str(c.rows),
            "-" if c.expected_rows is None else str(c.expected_rows),
            mark(c.sha256_ok),
            mark(c.labels_ok),
            c.problem or "",
        )
    return table
