"""The CS224N data directory: where it is, whether its files are the ones MANIFEST.md lists, and
which Quora training file `data.para_train: auto` means in it.

`orchestrator data check` prints `check_data_dir`, `orchestrator data fetch` downloads the
`in_handout` files; commands find the data with `default_data_dir` when nothing names it.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.config import TrainConfig
from model.data import (
    SENTENCE_COLUMNS,
    DataError,
    _parse_labels,
    _require_columns,
)
from model.tsv_reader import read_table


@dataclass(frozen=True)
class KnownFile:
    """One CS224N file as listed in the data MANIFEST.md."""

    name: str  # relative to the data dir
    task: str  # sst / para / sts, or cfimdb (same format as sst, labels 0/1)
    rows: int | None  # excluding the header; None = unknown
    sha256: str | None
    label_column: str | None  # None for test-student files
    optional: bool = False  # training works without it (see `absent_note`)
    git_blob: str | None = None  # `git hash-object`, checked when no sha256 is known
    invalid_labels: int = 0  # known malformed upstream rows
    in_handout: bool = True  # in the course's handout repository: `data fetch` downloads it
    absent_note: str = ""  # why an optional file may be missing


# `data.para_train: auto` (the default) trains Quora on the full file when the data directory has
# it, else on the 5,000-pair stand-in; every run records which one (see `resolve_data_files`).
PARA_TRAIN_AUTO = "auto"
FULL_QUORA_TRAIN = "quora-train.csv"
PARTIAL_QUORA_TRAIN = "partial/quora-train-head5000.csv"
FETCH_COMMAND = "orchestrator data fetch"
DEFAULT_DATA_DIR = "data"  # under the working directory


# fmt: off
KNOWN_FILES: tuple[KnownFile, ...] = (
    KnownFile("ids-sst-train.csv", "sst", 8544,
              "03b2b625c090f94a6afd59f114cde5282e2053aab0b101e87ed695d8a0c5b1df", "sentiment"),
    KnownFile("ids-sst-dev.csv", "sst", 1101,
              "a186ce94577635fbe10beaaddd50f16cccf6c30973221cefdf90deed2a584bfe", "sentiment"),
    KnownFile("ids-sst-test-student.csv", "sst", 2210,
              "bdd5a767faa0c26782117e37767ece154c30d5d04fb8727d09c71e3850a55c7b", None),
    KnownFile(FULL_QUORA_TRAIN, "para", 141506, None, "is_duplicate", optional=True,
              git_blob="a3b5546f6a0e65b60a328a5d294d1038f5bed1da",
              absent_note=f"{PARTIAL_QUORA_TRAIN} stands in; `{FETCH_COMMAND}` downloads it"),
    KnownFile(PARTIAL_QUORA_TRAIN, "para", 5000,
              "e9ba85c230f966c64a3ce0abb575ab053eecdf8f8f5d1f08e3ada12b1b0e8f00", "is_duplicate",
              optional=True, in_handout=False, absent_note=f"{FULL_QUORA_TRAIN} is used"),
    KnownFile("quora-dev.csv", "para", 20214,
              "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad", "is_duplicate",
              invalid_labels=2),
    KnownFile("quora-test-student.csv", "para", None, None, None, optional=True,
              git_blob="f257ef00558555afb50819578a58205732b16354",
              absent_note=f"no Quora test predictions; `{FETCH_COMMAND}` downloads it"),
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


def checksum_of(path: Path, known: KnownFile) -> tuple[str, str, str] | None:
    """(kind, actual, expected) of the file's checksum: its sha256 when `known` lists one, else
    its git blob id (`git hash-object`); None when neither is known."""
    data = path.read_bytes()
    if known.sha256 is not None:
        return "sha256", hashlib.sha256(data).hexdigest(), known.sha256
    if known.git_blob is not None:
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False)
        return "git blob", blob.hexdigest(), known.git_blob
    return None


def _checksum_ok(path: Path, known: KnownFile) -> bool | None:
    checksum = checksum_of(path, known)
    return None if checksum is None else checksum[1] == checksum[2]


def _check_file(data_dir: Path, known: KnownFile) -> FileCheck:
    path = data_dir / known.name
    if not path.is_file():
        why = f"missing (optional: {known.absent_note})" if known.optional else "missing"
        return FileCheck(known.name, False, None, known.rows, None, None, why, known.optional)
    problems: list[str] = []
    sha_ok = _checksum_ok(path, known)
    if sha_ok is False:
        problems.append("checksum mismatch")
    rows: int | None = None
    labels_ok: bool | None = None
    try:
        frame = read_table(path)
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
    """Check every KNOWN_FILES entry in `data_dir`: presence, rows, checksum and label ranges.
    Either Quora training file may be absent, not both."""
    checks = [_check_file(Path(data_dir), known) for known in KNOWN_FILES]
    quora_train = [c for c in checks if c.name in (FULL_QUORA_TRAIN, PARTIAL_QUORA_TRAIN)]
    if quora_train and not any(c.present for c in quora_train):
        full = quora_train[0]
        full.optional = False
        full.problem = f"missing, and no {PARTIAL_QUORA_TRAIN} either; run `{FETCH_COMMAND}`"
    return checks


def default_data_dir() -> Path:
    """$ORCHESTRATOR_DATA_DIR, else `data/` under the working directory (`data fetch` fills it)."""
    from_env = os.environ.get("ORCHESTRATOR_DATA_DIR")
    return Path(from_env) if from_env else Path.cwd() / DEFAULT_DATA_DIR


def resolve_para_train(name: str, data_dir: Path) -> str:
    """`data.para_train` as a file: `auto` is the full quora-train.csv when `data_dir` has it,
    else the 5,000-pair partial file; any other name is used as given."""
    if name != PARA_TRAIN_AUTO:
        return name
    for candidate in (FULL_QUORA_TRAIN, PARTIAL_QUORA_TRAIN):
        if (Path(data_dir) / candidate).is_file():
            return candidate
    raise DataError(
        f"{data_dir}: data.para_train: auto: neither {FULL_QUORA_TRAIN} nor "
        f"{PARTIAL_QUORA_TRAIN} found; run `{FETCH_COMMAND} {data_dir}`"
    )


def resolve_data_files(cfg: TrainConfig, data_dir: Path, *, strict: bool = True) -> TrainConfig:
    """`cfg` with `data.para_train: auto` replaced by the file it means in `data_dir`, so saved
    configs, MLflow params and data checksums name the file a run really read. With neither
    Quora file there: DataError, or with `strict` off `cfg` as is (its data loading says so)."""
    try:
        para_train = resolve_para_train(cfg.data.para_train, data_dir)
    except DataError:
        if strict:
            raise
        return cfg
    if para_train == cfg.data.para_train:
        return cfg
    return replace(cfg, data=replace(cfg.data, para_train=para_train))


def quora_train_source(para_train: str) -> str:
    """How notes name a Quora training file: the full file, the partial stand-in, or its path."""
    if para_train == FULL_QUORA_TRAIN:
        return f"the full {FULL_QUORA_TRAIN}"
    if Path(para_train).name == Path(PARTIAL_QUORA_TRAIN).name:
        return f"the 5,000-pair partial file {para_train}"
    return para_train


def quora_train_note(para_train: str, pairs: int | None = None) -> str:
    """The line that says which Quora training file a run's Quora figures come from and, when
    known, how many of its pairs the run trained on (data.max_examples.para may cap them)."""
    if pairs is None:
        return f"note: Quora trained on pairs drawn from {quora_train_source(para_train)}."
    return f"note: Quora trained on {pairs:,} pairs drawn from {quora_train_source(para_train)}."


def quora_runs_notes(para_trains: Iterable[str | None], noun: str = "run") -> list[str]:
    """The note on which Quora training file a sweep's runs (`data.para_train` of each, None
    when unknown) trained on: one file, or each file with its count; no note when none is known
    (`auto` unresolved means neither file was there, and such runs failed to load their data)."""
    counts = Counter(name for name in para_trains if name and name != PARA_TRAIN_AUTO)
    if len(counts) == 1:
        return [f"Quora trained on pairs drawn from {quora_train_source(next(iter(counts)))}"]
    files = ", ".join(
        f"{quora_train_source(name)} ({count} {noun}{'s' if count > 1 else ''})"
        for name, count in counts.items()
    )
    return [f"Quora trained on pairs drawn from several files: {files}"] if counts else []


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
