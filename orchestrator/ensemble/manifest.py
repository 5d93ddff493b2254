"""The ensemble as an artifact: `ensemble/manifest.json`, what `orchestrator predict --ensemble`
loads again.

It names the sweep, the combining method, how the members were selected and ranked, the dev
metrics the ensemble was chosen on, and each member: its run and trial, its checkpoint directory,
its weight (greedy selection repeats members) and the sha256 of every file in its checkpoint.
Reading verifies the manifest's own digest and every member file's sha256, so a missing or
changed member is a one-line error naming the member and the file. A relative checkpoint path is
relative to the manifest's directory (how a self-contained copy, e.g. an MLflow model's
artifacts, points at its member copies).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from model.checkpoint import write_json_atomic
from model.config import ConfigError
from orchestrator.contract import ENSEMBLE_MANIFEST_FILE
from orchestrator.ensemble.request import METHODS, Candidate, EnsembleRequest
from orchestrator.file_digest import file_sha256

MANIFEST_FORMAT = 1
_DIGEST_KEY = "digest"  # sha256 of the manifest's canonical JSON without this key


class ManifestError(ConfigError):
    """A manifest or one of its members is missing, malformed or changed; one line naming it."""


@dataclass(frozen=True)
class ManifestMember:
    """One member: which trial it is, where its checkpoint lives, how many votes it has, and the
    sha256 of every file of its checkpoint (relative name -> hex digest)."""

    run_id: str
    trial_id: str
    checkpoint: Path
    weight: int
    files: Mapping[str, str]
    run_name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.weight, int) or self.weight < 1:
            raise ManifestError(f"member {self.trial_id}: weight must be >= 1, got {self.weight}")
        if not self.files:
            raise ManifestError(f"member {self.trial_id}: no checkpoint files listed")

    def label(self, index: int) -> str:
        """How errors name the member: `member 2 (trial t1, run 0123abcd)`."""
        return f"member {index + 1} (trial {self.trial_id}, run {self.run_id[:8]})"


@dataclass(frozen=True)
class EnsembleManifest:
    """What an ensemble is: its members and how their predictions combine."""

    sweep: str
    method: str
    select: str
    metric: str
    members: tuple[ManifestMember, ...]
    dev: Mapping[str, float] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ManifestError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.members:
            raise ManifestError("an ensemble needs at least one member")

    def relocated(self, checkpoints: Sequence[Path]) -> EnsembleManifest:
        """The same manifest with each member's checkpoint at a new path (e.g. a copy)."""
        if len(checkpoints) != len(self.members):
            raise ValueError(f"{len(checkpoints)} paths for {len(self.members)} members")
        members = tuple(
            replace(m, checkpoint=Path(p)) for m, p in zip(self.members, checkpoints, strict=True)
        )
        return replace(self, members=members)


def checkpoint_digests(checkpoint: Path) -> dict[str, str]:
    """sha256 of every file under a checkpoint directory (hidden ones aside), by relative name."""
    checkpoint = Path(checkpoint)
    names = sorted(p.relative_to(checkpoint) for p in checkpoint.rglob("*") if p.is_file())
    shown = [name for name in names if not any(part.startswith(".") for part in name.parts)]
    return {name.as_posix(): file_sha256(checkpoint / name) for name in shown}


def manifest_for_selection(
    *,
    sweep: str,
    method: str,
    select: str,
    metric: str,
    selected: Sequence[Candidate],
    dev: Mapping[str, float],
) -> EnsembleManifest:
    """The manifest of an ensemble whose members are `selected` (in selection order, a member
    repeated once per vote): each distinct member once, with its count as its weight."""
    members: dict[str, ManifestMember] = {}
    for candidate in selected:
        if candidate.run_id in members:
            entry = members[candidate.run_id]
            members[candidate.run_id] = replace(entry, weight=entry.weight + 1)
            continue
        if candidate.checkpoint is None:
            raise ManifestError(f"member trial {candidate.trial_id} has no checkpoint")
        checkpoint = Path(candidate.checkpoint).resolve()
        members[candidate.run_id] = ManifestMember(
            candidate.run_id, candidate.trial_id, checkpoint, 1,
            checkpoint_digests(checkpoint), candidate.run_name,
        )  # fmt: skip
    return EnsembleManifest(sweep, method, select, metric, tuple(members.values()), dict(dev))


def write_manifest(directory: Path, manifest: EnsembleManifest) -> Path:
    """Write `directory/manifest.json` atomically, with its digest; returns its path."""
    body = manifest_to_dict(manifest)
    body[_DIGEST_KEY] = _digest(body)
    path = Path(directory) / ENSEMBLE_MANIFEST_FILE
    write_json_atomic(path, body)
    return path


def remove_manifest(directory: Path) -> None:
    """Delete `directory/manifest.json` if there is one (before rewriting what it vouches for)."""
    (Path(directory) / ENSEMBLE_MANIFEST_FILE).unlink(missing_ok=True)


def manifest_to_dict(manifest: EnsembleManifest) -> dict[str, Any]:
    raw = asdict(manifest)
    raw["members"] = [
        {**asdict(m), "checkpoint": str(m.checkpoint), "files": dict(m.files)}
        for m in manifest.members
    ]
    raw["dev"] = dict(manifest.dev)
    return raw


def write_ensemble_manifest(
    directory: Path,
    sweep: str,
    request: EnsembleRequest,
    metric: str,
    selected: Sequence[Candidate],
    dev: Mapping[str, float],
) -> Path:
    """The manifest of what `orchestrator ensemble` built, written into its directory."""
    manifest = manifest_for_selection(
        sweep=sweep, method=request.method, select=request.select, metric=metric,
        selected=selected, dev=dev,
    )  # fmt: skip
    return write_manifest(directory, manifest)


def read_manifest(source: Path, *, verify: bool = True) -> EnsembleManifest:
    """The manifest of an ensemble directory (or the manifest file itself), checked: its digest
    and, with `verify`, every member file's sha256. Relative checkpoint paths come back resolved
    against the manifest's directory."""
    source = Path(source)
    path = source / ENSEMBLE_MANIFEST_FILE if source.is_dir() else source
    if not path.is_file():
        raise ManifestError(f"{path}: ensemble manifest not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise ManifestError(f"{path}: unreadable ensemble manifest ({_first_line(err)})") from err
    manifest = _parse(raw, path)
    if verify:
        verify_members(manifest, path)
    return manifest


def _parse(raw: Any, path: Path) -> EnsembleManifest:
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("format_version")
    if version != MANIFEST_FORMAT:
        raise ManifestError(
            f"{path}: format_version {version!r} is not one this version reads ({MANIFEST_FORMAT})"
        )
    recorded = raw.pop(_DIGEST_KEY, None)
    if recorded != _digest(raw):
        raise ManifestError(
            f"{path}: the manifest was edited after `orchestrator ensemble` wrote it "
            f"(its {_DIGEST_KEY} does not match its content)"
        )
    try:
        members = tuple(_member(entry, path.parent) for entry in raw["members"])
        return EnsembleManifest(
            sweep=str(raw["sweep"]),
            method=str(raw["method"]),
            select=str(raw["select"]),
            metric=str(raw["metric"]),
            members=members,
            dev={str(k): float(v) for k, v in raw["dev"].items()},
            format_version=version,
        )
    except KeyError as err:
        raise ManifestError(f"{path}: no {err} entry") from err
    except (TypeError, ValueError, AttributeError) as err:  # ManifestError is a ValueError
        raise ManifestError(f"{path}: malformed manifest ({_first_line(err)})") from err


def _member(entry: Mapping[str, Any], base: Path) -> ManifestMember:
    checkpoint = Path(entry["checkpoint"])
    files = entry["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise TypeError("a member's files must map names to sha256 digests")
    return ManifestMember(
        run_id=str(entry["run_id"]),
        trial_id=str(entry["trial_id"]),
        checkpoint=checkpoint if checkpoint.is_absolute() else base / checkpoint,
        weight=entry["weight"],
        files=dict(files),
        run_name=str(entry.get("run_name", "")),
    )


def verify_members(manifest: EnsembleManifest, path: Path) -> None:
    """ManifestError naming the first member whose checkpoint or a listed file is missing, or
    whose file's sha256 differs from the manifest's."""
    for index, member in enumerate(manifest.members):
        where = f"{path}: {member.label(index)}"
        if not member.checkpoint.is_dir():
            raise ManifestError(f"{where}: checkpoint {member.checkpoint} not found")
        for name, expected in member.files.items():
            file = member.checkpoint / name
            if not file.is_file():
                raise ManifestError(f"{where}: {file} is missing")
            actual = file_sha256(file)
            if actual != expected:
                raise ManifestError(
                    f"{where}: {file} changed since the ensemble was written (sha256 "
                    f"{actual[:12]}..., manifest {expected[:12]}...)"
                )


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
