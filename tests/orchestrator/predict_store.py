"""Test helpers for `orchestrator predict`: a results/ with sweep `fake` of four untrained tiny
trials of different architectures (cross- and bi-encoded pairs, different eval batch sizes, so
several length buckets) on the first 40 rows of each data file, and the CLI run on it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from orchestrator.cli import main
from tests.orchestrator.sweep_store import (
    FakeTrial,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
    tiny_config,
)

# (task, split) -> (input file, --task when the columns cannot tell para from sts)
FILES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("sst", "dev"): ("ids-sst-dev.csv", None),
    ("para", "dev"): ("quora-dev.csv", None),
    ("sts", "dev"): ("sts-dev.csv", None),
    ("sst", "test"): ("ids-sst-test-student.csv", None),
    ("para", "test"): ("quora-test-student.csv", "para"),
    ("sts", "test"): ("sts-test-student.csv", "sts"),
}

MEMBER_CONFIGS: list[dict[str, dict[str, Any]]] = [
    {"data": {"eval_batch_size": 16}},
    {"data": {"eval_batch_size": 7}, "model": {"pair_encoding": "sbert", "pooling": "mean"}},
    {"data": {"eval_batch_size": 16}, "model": {"pair_encoding": "bi_concat"}},
    {"data": {"eval_batch_size": 32}},
]


def make_predict_store(root: Path, data_dir: Path) -> Path:
    """`root/data` (40 rows a file) and `root/results` with sweep `fake`: 4 finished trials."""
    make_tiny_data_dir(data_dir, root / "data", rows=40)
    results = root / "results"
    trials = []
    for i, (value, sections) in enumerate(zip([0.5, 0.7, 0.6, 0.4], MEMBER_CONFIGS, strict=True)):
        checkpoint = save_untrained_checkpoint(
            results / "fake" / f"t{i}" / "best", tiny_config(seed=i, **sections)
        )
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    fake_sweep(f"sqlite:///{results}/mlflow.db", "fake", trials, searched=("seed",))
    return root


def trial_checkpoint(store: Path, index: int) -> Path:
    return store / "results" / "fake" / f"t{index}" / "best"


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def build_ensemble(store: Path, *args: str) -> Path:
    """`orchestrator ensemble ARGS` on the store's sweep; its ensemble directory."""
    code, out, err = invoke(
        "ensemble", "--results-dir", str(store / "results"), "--data-dir", str(store / "data"),
        *args,
    )  # fmt: skip
    assert code == 0, out + err
    return store / "results" / "fake" / "ensemble"


def one_line_error(code: int, stdout: str, stderr: str) -> str:
    """The one `Error: ...` line of a command that exited 2."""
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def copied_ensemble(store: Path, tmp_path: Path) -> Path:
    """An ensemble of copied members (tests may break them); its manifest points at the copies."""
    from orchestrator.ensemble.manifest import read_manifest, write_manifest

    manifest = read_manifest(build_ensemble(store, "--top", "2"))
    copies = []
    for i, member in enumerate(manifest.members):
        copies.append(shutil.copytree(member.checkpoint, tmp_path / f"member{i}"))
    write_manifest(tmp_path / "ens", manifest.relocated(copies))
    return tmp_path / "ens"
