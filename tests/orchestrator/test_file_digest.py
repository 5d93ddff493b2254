"""File digests: a settled, unchanged file is read once; any rewrite is seen again, so neither a
run's data checksum nor an ensemble manifest's member check can be served a stale digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from orchestrator import file_digest
from orchestrator.ensemble.manifest import (
    ManifestError,
    manifest_for_selection,
    read_manifest,
    write_manifest,
)
from orchestrator.ensemble.request import Candidate
from orchestrator.file_digest import file_sha256


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files file_sha256 really reads (not served from its cache), starting empty."""
    reads: list[Path] = []
    read = file_digest._read_sha256

    def counted(path: Path) -> str:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(file_digest, "_read_sha256", counted)
    monkeypatch.setattr(file_digest, "_FILE_HASHES", {})
    return reads


def test_file_sha256_reads_a_settled_unchanged_file_once(
    tmp_path: Path, counted_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"a" * 100)
    expected = hashlib.sha256(b"a" * 100).hexdigest()
    # Just written: it may change again within the same timestamp tick, so it is read each time.
    assert file_sha256(path) == file_sha256(path) == expected and len(counted_reads) == 2
    # Settled (as if written an hour ago): read once, then served from the cache.
    monkeypatch.setattr(file_digest, "RACY_WINDOW_NS", -3600 * 10**9)
    assert file_sha256(path) == file_sha256(path) == expected and len(counted_reads) == 3


def test_a_cached_member_file_rewritten_in_place_fails_the_manifest_check(
    tmp_path: Path, counted_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, mtime set back: the cache must not vouch for the changed weights."""
    from tests.orchestrator.sweep_store import save_untrained_checkpoint, tiny_config

    monkeypatch.setattr(file_digest, "RACY_WINDOW_NS", -3600 * 10**9)
    checkpoint = save_untrained_checkpoint(tmp_path / "t0" / "best", tiny_config(seed=0))
    member = Candidate("run0", "t0", "t0", "completed", 0.5, checkpoint)
    manifest = manifest_for_selection(
        sweep="s", method="mean", select="top", metric="dev/overall", selected=[member], dev={}
    )
    write_manifest(tmp_path / "ensemble", manifest)
    read_manifest(tmp_path / "ensemble")  # verified, every digest now cached
    weights = checkpoint / "model.safetensors"
    assert weights in counted_reads
    stat = weights.stat()
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-8] + bytes(8))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ManifestError, match=r"model\.safetensors changed since the ensemble"):
        read_manifest(tmp_path / "ensemble")
