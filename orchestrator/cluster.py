"""Running on a Ray cluster: `--address`, the shared-storage check, writable directories.

On a multi-node cluster a trial writes its checkpoints to the sweep's storage path from the node
it runs on, and a retried trial reads them back on another node; so that path must be the
same storage on every node: a network filesystem (NFS) mounted at the same path everywhere, or an
object-store URI (s3://, gs://, ...) that Ray's storage layer writes to directly. A path local to
each node would scatter checkpoints across machines, so `check_cluster_paths` proves the path is
shared before anything starts: it writes a random token there and asks a task pinned to every node
to read it back. No Ray here: the sweep's Ray adapter (`ray_tune.py`) lists the nodes and runs the
probe on each; this module decides what their answers mean. The MLflow server that a cluster's
sweeps log to is launched by `orchestrator.tracking.server`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from model.config import ConfigError

# URI schemes Ray Tune's storage_path accepts through pyarrow.fs (the cloud ones need pyarrow built
# with that filesystem and credentials on every node, e.g. AWS_* / GOOGLE_APPLICATION_CREDENTIALS).
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
# Filesystem types (from /proc/mounts) that can be shared between machines; named in messages only,
# the probe decides.
NETWORK_FILESYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "9p",
    "virtiofs", "fuse.gcsfuse", "fuse.s3fs", "fuse.juicefs", "fuse.sshfs", "efs",
)  # fmt: skip
DEFAULT_RAY_PORT = 6379
PROBE_FILE_PREFIX = ".orchestrator-storage-probe-"

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$")


class ClusterError(ConfigError):
    """A cluster address, storage path or data directory that cannot work; the message says why."""


# --------------------------------------------------------------------------------------- address


def parse_address(address: str | None) -> str | None:
    """Validate `--address`: None or `local` (start Ray here), `auto` (the cluster `ray start`
    made on this machine, or $RAY_ADDRESS) or the head's GCS `HOST:PORT`, for `ray.init`."""
    if address is None:
        return None
    text = address.strip()
    if text in ("", "local"):
        return None
    if text == "auto":
        return "auto"
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "ray":
            raise ClusterError(
                f"--address {address}: Ray Client (ray://) is not supported; run the sweep on a "
                f"node of the cluster with --address HEAD_HOST:{DEFAULT_RAY_PORT}"
            )
        raise ClusterError(
            f"--address {address}: give the head node's GCS address HOST:PORT (port "
            f"{DEFAULT_RAY_PORT} by default), not a {scheme}:// URL (8265 is the dashboard)"
        )
    host, port = _split_host_port(address, text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(address: str, text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
        if not host:
            host, port_text = text, ""
    if not port_text:
        raise ClusterError(
            f"--address {address}: missing port; the head listens on {DEFAULT_RAY_PORT} "
            f"unless `ray start --head --port` said otherwise, e.g. --address {host}:"
            f"{DEFAULT_RAY_PORT}"
        )
    if not port_text.isdigit() or not 1024 <= int(port_text) <= 65535:
        raise ClusterError(f"--address {address}: port must be a number in 1024-65535")
    if not _valid_host(host):
        raise ClusterError(f"--address {address}: '{host}' is not a host name or IP address")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


# --------------------------------------------------------------------------------------- storage


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for `scheme://...` locations (s3://, gs://, file://), False for filesystem paths."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(path)))


def ray_storage_path(location: str | os.PathLike[str]) -> str:
    """What to pass as Ray's `storage_path`: an object-store URI unchanged (no trailing slash), a
    `file://` URI or a path made absolute. Unsupported schemes raise ClusterError."""
    text = str(location)
    if not is_uri(text):
        return str(Path(text).expanduser().resolve())
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return str(Path(urlsplit(text).path).resolve())
    if scheme not in OBJECT_STORE_SCHEMES:
        raise ClusterError(
            f"{text}: storage scheme '{scheme}://' is not supported; use a path (an NFS mount "
            f"on a cluster) or one of {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)}"
        )
    if not urlsplit(text).netloc:
        raise ClusterError(f"{text}: the URI names no bucket, e.g. {scheme}://my-bucket/sweeps")
    return text.rstrip("/")


def local_results_dir(results_dir: str | os.PathLike[str]) -> Path:
    """`--results-dir` as an absolute path. Object-store URIs are refused: the sweep keeps its
    Optuna study (SQLite), `sweep.json` and the trials' best checkpoints there as files."""
    if is_uri(results_dir) and not str(results_dir).lower().startswith("file://"):
        raise ClusterError(
            f"--results-dir {results_dir}: must be a filesystem path (the Optuna study, "
            "sweep.json and best checkpoints are files); on a multi-node cluster use a network "
            "filesystem mounted at the same path on every node, e.g. /mnt/sweeps"
        )
    return Path(ray_storage_path(results_dir))


def filesystem_type(path: str | os.PathLike[str], mounts: str | None = None) -> str:
    """The filesystem type of the mount holding `path` (e.g. `ext4`, `nfs4`), from /proc/mounts."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target = Path(path).expanduser().absolute()
    best, best_type = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces in mount points as \040.
        mount_point = fields[1].replace("\\040", " ")
        inside = target == Path(mount_point) or Path(mount_point) in target.parents
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def is_network_filesystem(fs_type: str) -> bool:
    return fs_type in NETWORK_FILESYSTEMS or fs_type.startswith(("nfs", "fuse."))


@dataclass(frozen=True)
class NodeAnswer:
    """What one Ray node saw when asked about the sweep's paths."""

    node_id: str
    ip: str
    hostname: str
    sees_storage: bool | None  # None: not asked (object store, or no path to check)
    missing_data: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterReport:
    """What the nodes of a cluster saw when asked about the sweep's paths."""

    storage_path: str
    answers: tuple[NodeAnswer, ...]
    unanswered: tuple[str, ...] = ()  # "ip (node id)" of nodes whose probe task never returned


def storage_problems(
    storage_path: str,
    answers: Sequence[NodeAnswer],
    unanswered: Sequence[str] = (),
    *,
    data_dir: str | None = None,
) -> list[str]:
    """One-line problems, each naming the path, the nodes and the fix (empty: all is well)."""
    problems: list[str] = []
    if unanswered:
        problems.append(
            f"{storage_path}: node(s) {', '.join(unanswered)} did not answer the storage check; "
            "see `ray status` and the node's logs"
        )
    blind = [a for a in answers if a.sees_storage is False]
    if blind and len(answers) + len(unanswered) > 1:
        where = ", ".join(f"{a.ip} ({a.hostname})" for a in blind)
        fs = filesystem_type(storage_path)
        problems.append(
            f"{storage_path}: this {fs} path is local to the driver's machine, but "
            f"{len(blind)} of {len(answers)} Ray nodes ({where}) cannot see it, so checkpoints "
            "would be scattered across nodes; pass --results-dir on shared storage: a network "
            "filesystem (NFS) mounted at the same path on every node, e.g. /mnt/sweeps"
        )
    lacking = [a for a in answers if a.missing_data]
    if lacking:
        first = lacking[0]
        shown = ", ".join(first.missing_data[:3]) + (" ..." if len(first.missing_data) > 3 else "")
        problems.append(
            f"{data_dir or 'data directory'}: missing on node(s) "
            f"{', '.join(f'{a.ip} ({a.hostname})' for a in lacking)} ({shown}); trials read data "
            "on the node that trains them: mount or copy it to the same path on every node, or "
            "pass --data-dir with a path every node has"
        )
    return problems


def _make_probe() -> Callable[..., dict[str, Any]]:
    # Defined inside a function so Ray pickles it by value: worker nodes need not import this
    # package to run it (only the standard library).
    def probe(token_file: str | None, token: str, data_dir: str | None, data_files: list[str]):
        import os
        import socket

        sees = None
        if token_file is not None:
            try:
                with open(token_file) as handle:
                    sees = handle.read().strip() == token
            except OSError:
                sees = False
        missing = []
        if data_dir is not None:
            wanted = data_files or ["."]
            missing = [f for f in wanted if not os.path.exists(os.path.join(data_dir, f))]
        return {"hostname": socket.gethostname(), "sees_storage": sees, "missing": missing}

    return probe


@dataclass(frozen=True)
class ClusterNode:
    """An alive node of the connected Ray cluster (from the sweep's Ray adapter)."""

    node_id: str
    ip: str
    resources: Mapping[str, float]  # Ray's totals: {"CPU": 8.0, "GPU": 1.0, "memory": ...}


@dataclass(frozen=True)
class NodeReplies:
    """What a function run once on each node returned, and the nodes that never answered."""

    answered: tuple[tuple[ClusterNode, Any], ...]
    unanswered: tuple[ClusterNode, ...] = ()


# Runs `function(*args)` once on each node (pinned there), waiting at most `timeout_s`.
RunOnNodes = Callable[
    [Callable[..., Any], Sequence[Any], Sequence[ClusterNode], float], NodeReplies
]


def probe_nodes(
    storage_path: str,
    nodes: Sequence[ClusterNode],
    run_on_nodes: RunOnNodes,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    data_files: Iterable[str] = (),
    timeout_s: float = 120.0,
) -> ClusterReport:
    """Ask each of `nodes` whether it sees a random token written to `storage_path` (skipped for
    object-store URIs) and the `data_files` under `data_dir`."""
    token = secrets.token_hex(16)
    token_file: Path | None = None
    if not is_uri(storage_path):
        Path(storage_path).mkdir(parents=True, exist_ok=True)
        token_file = Path(storage_path) / f"{PROBE_FILE_PREFIX}{token[:8]}"
        token_file.write_text(token + "\n")
    args = (
        str(token_file) if token_file else None,
        token,
        str(data_dir) if data_dir is not None else None,
        list(data_files),
    )
    try:
        replies = run_on_nodes(_make_probe(), args, nodes, timeout_s)
    finally:
        if token_file is not None:
            token_file.unlink(missing_ok=True)
    answers = tuple(
        NodeAnswer(
            node_id=node.node_id,
            ip=node.ip,
            hostname=seen["hostname"],
            sees_storage=seen["sees_storage"],
            missing_data=tuple(seen["missing"]),
        )
        for node, seen in replies.answered
    )
    unanswered = tuple(f"{node.ip} ({node.node_id[:8]})" for node in replies.unanswered)
    return ClusterReport(storage_path, answers, unanswered)


def check_cluster_paths(
    storage_path: str | os.PathLike[str],
    nodes: Sequence[ClusterNode],
    run_on_nodes: RunOnNodes,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    data_files: Iterable[str] = (),
    timeout_s: float = 120.0,
) -> ClusterReport:
    """Raise ClusterError (naming the path, the nodes and the fix) when a cluster of several
    `nodes` was given storage or data its nodes cannot all see; one node has nothing to ask."""
    storage = ray_storage_path(storage_path)
    if len(nodes) <= 1:
        return ClusterReport(storage, ())
    report = probe_nodes(
        storage, nodes, run_on_nodes, data_dir=data_dir, data_files=data_files, timeout_s=timeout_s
    )
    problems = storage_problems(
        storage, report.answers, report.unanswered, data_dir=str(data_dir) if data_dir else None
    )
    if problems:
        raise ClusterError(problems[0])
    return report


# ------------------------------------------------------------------------------ writable paths


def check_creatable(directory: Path, what: str) -> None:
    """Raise ClusterError (naming `what`) if `directory` cannot be, or become, a directory we can
    write into: a file in the way, or an unwritable ancestor. Checked before work that would
    otherwise fail only at its first write (a checkpoint after an epoch, a server's first run)."""
    for existing in (directory, *directory.absolute().parents):
        if existing.exists():
            if not existing.is_dir():
                raise ClusterError(f"{what}: {existing} is a file, not a directory")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ClusterError(f"{what}: {existing} is not writable")
            return
