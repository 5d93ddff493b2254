"""The ensemble manifest: written atomically with every member file's sha256, read back equal,
and a one-line error naming the member and file for a missing or changed member or an edited
manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from orchestrator.ensemble.manifest import (
    MANIFEST_FORMAT,
    EnsembleManifest,
    ManifestError,
    ManifestMember,
    checkpoint_digests,
    manifest_for_selection,
    read_manifest,
    write_ensemble_manifest,
    write_manifest,
)
from orchestrator.ensemble.request import Candidate, EnsembleRequest

DEV = {"dev/overall": 0.61, "dev/sst_acc": 0.4}


def fake_checkpoint(directory: Path, seed: int) -> Path:
    """A checkpoint-shaped directory (the manifest only hashes its files)."""
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(bytes([seed]) * 1000)
    (directory / "config.json").write_text(json.dumps({"seed": seed}))
    (directory / ".partial").write_text("hidden files are not members' files")
    return directory


@pytest.fixture
def members(tmp_path: Path) -> list[Candidate]:
    return [
        Candidate(
            f"run{i}abcdef",
            f"trial {i}",
            f"t{i}",
            "completed",
            0.5 + i / 10,
            fake_checkpoint(tmp_path / f"t{i}" / "best", i),
        )
        for i in range(3)
    ]


def test_digests_are_the_sha256_of_every_file(tmp_path: Path) -> None:
    checkpoint = fake_checkpoint(tmp_path / "c", 7)
    (checkpoint / "sub").mkdir()
    (checkpoint / "sub" / "x.txt").write_text("x")
    assert checkpoint_digests(checkpoint) == {
        "config.json": hashlib.sha256(b'{"seed": 7}').hexdigest(),
        "model.safetensors": hashlib.sha256(bytes([7]) * 1000).hexdigest(),
        "sub/x.txt": hashlib.sha256(b"x").hexdigest(),
    }


def test_greedy_repeats_become_weights_and_the_manifest_reads_back_equal(
    tmp_path: Path, members: list[Candidate]
) -> None:
    selected = [members[2], members[0], members[2], members[2]]  # greedy with replacement
    request = EnsembleRequest(top=4, method="mean", select="greedy")
    path = write_ensemble_manifest(tmp_path / "ens", "fake", request, "dev/overall", selected, DEV)
    assert path == tmp_path / "ens" / "manifest.json"
    manifest = read_manifest(tmp_path / "ens")
    assert [(m.trial_id, m.weight) for m in manifest.members] == [("t2", 3), ("t0", 1)]
    assert (manifest.sweep, manifest.method, manifest.select, manifest.metric) == (
        "fake",
        "mean",
        "greedy",
        "dev/overall",
    )
    assert manifest.dev == DEV and manifest.format_version == MANIFEST_FORMAT
    assert manifest.members[0].checkpoint == members[2].checkpoint
    assert set(manifest.members[0].files) == {"config.json", "model.safetensors"}
    assert manifest == manifest_for_selection(
        sweep="fake",
        method="mean",
        select="greedy",
        metric="dev/overall",
        selected=selected,
        dev=DEV,
    )
    assert not list((tmp_path / "ens").glob(".*tmp"))  # the temp file was renamed into place


def write_top3(tmp_path: Path, members: list[Candidate]) -> Path:
    request = EnsembleRequest(top=3)
    write_ensemble_manifest(tmp_path / "ens", "fake", request, "dev/overall", members, DEV)
    return tmp_path / "ens" / "manifest.json"


def test_a_changed_member_file_names_member_and_file(
    tmp_path: Path, members: list[Candidate]
) -> None:
    path = write_top3(tmp_path, members)
    weights = members[1].checkpoint / "model.safetensors"  # type: ignore[operator]
    weights.write_bytes(b"\x00" * 1000)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: member 2 (trial t1, run run1abcd): {weights} changed")
    assert "\n" not in message
    assert read_manifest(path, verify=False).members[1].trial_id == "t1"


def test_a_missing_member_file_or_checkpoint(tmp_path: Path, members: list[Candidate]) -> None:
    path = write_top3(tmp_path, members)
    config = members[0].checkpoint / "config.json"  # type: ignore[operator]
    config.unlink()
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value) == f"{path}: member 1 (trial t0, run run0abcd): {config} is missing"
    shutil.rmtree(members[0].checkpoint)  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match=r"member 1 \(trial t0, run run0abcd\): checkpoint"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["members"][0].update(weight=5), "was edited after"),
        (lambda raw: raw.update(method="max"), "was edited after"),
        (lambda raw: raw.update(format_version=99), "format_version 99 is not one"),
    ],
)
def test_an_edited_manifest_is_refused(
    tmp_path: Path, members: list[Candidate], edit, message: str
) -> None:
    path = write_top3(tmp_path, members)
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_an_unreadable_or_absent_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json: ensemble manifest not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"manifest\.json: unreadable ensemble manifest"):
        read_manifest(tmp_path)


def test_relative_checkpoints_resolve_against_the_manifest(
    tmp_path: Path, members: list[Candidate]
) -> None:
    manifest = read_manifest(write_top3(tmp_path, members))
    copy = tmp_path / "copy"
    for i, member in enumerate(manifest.members):
        shutil.copytree(member.checkpoint, copy / f"member{i}")
    write_manifest(copy, manifest.relocated([Path(f"member{i}") for i in range(3)]))
    moved = copy.with_name("moved")
    copy.rename(moved)  # the copy travels whole
    again = read_manifest(moved)
    assert [m.checkpoint for m in again.members] == [moved / f"member{i}" for i in range(3)]
    assert [m.files for m in again.members] == [m.files for m in manifest.members]


def test_a_manifest_needs_members_with_votes(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="at least one member"):
        EnsembleManifest("s", "vote", "top", "dev/overall", ())
    with pytest.raises(ManifestError, match="weight must be >= 1"):
        ManifestMember("r", "t0", tmp_path, 0, {"a": "b"})
    with pytest.raises(ManifestError, match="method must be one of vote, mean"):
        EnsembleManifest(
            "s", "max", "top", "dev/overall", (ManifestMember("r", "t", tmp_path, 1, {"a": "b"}),)
        )
