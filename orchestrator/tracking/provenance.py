"""What a run records so that it can be reproduced: the config's hash, checksums of the data
files it reads, and the git commit of the code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from model.config import TASKS, TrainConfig, config_to_dict

# A file changed less than this long before we hash it may change again without its timestamps
# moving (filesystems keep them in steps of up to 2 s), so its hash is not cached.
RACY_WINDOW_NS = 2 * 10**9

_FILE_HASHES: dict[tuple[str, int, int, int, int, int], str] = {}


def config_hash(config: TrainConfig) -> str:
    """First 16 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached while the file is unchanged so a sweep hashes each file once."""
    started_ns = time.time_ns()
    before = path.stat()
    key = _cache_key(path, before)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    digest = _read_sha256(path)
    # Cache only a file that had settled before we looked and did not change while we read it.
    settled = before.st_ctime_ns < started_ns - RACY_WINDOW_NS
    if settled and _cache_key(path, path.stat()) == key:
        _FILE_HASHES[key] = digest
    return digest


def _cache_key(path: Path, stat: os.stat_result) -> tuple[str, int, int, int, int, int]:
    # The ctime (unlike the mtime) moves on every write and cannot be set back, and a replaced
    # file has a new inode: so a settled file whose key is unchanged has unchanged content.
    resolved = str(path.resolve())
    return (resolved, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_sha256(config: TrainConfig, data_dir: Path) -> str:
    """One sha256 over the train/dev/test files a config reads (missing files count as absent)."""
    data = config.data
    names: list[str] = []
    for task in TASKS:
        names += [getattr(data, f"{task}_{split}") for split in ("train", "dev", "test")]
        names += list(getattr(data.extra_train, task))
    digest = hashlib.sha256()
    for name in names:
        path = Path(data_dir) / name
        digest.update(f"{name}:{file_sha256(path) if path.is_file() else 'absent'}\n".encode())
    return digest.hexdigest()


def git_sha(repo: Path | None = None) -> str:
    """HEAD of the project's git checkout (`-dirty` when tracked files changed), else `unknown`."""
    cwd = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=cwd, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty.returncode == 1 else "")
