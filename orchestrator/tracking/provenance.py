"""What a run records so that it can be reproduced: the config's hash, checksums of the data
files it reads, and the git commit of the code."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from model.config import TASKS, TrainConfig, config_to_dict
from model.data_dir import resolve_data_files
from orchestrator.file_digest import file_sha256


def config_hash(config: TrainConfig) -> str:
    """First 16 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_sha256(config: TrainConfig, data_dir: Path) -> str:
    """One sha256 over the train/dev/test files a config reads (missing files count as absent;
    `data.para_train: auto` is the Quora file it means in `data_dir`)."""
    data = resolve_data_files(config, Path(data_dir), strict=False).data
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
