"""Running on a Ray cluster: `--address`, the shared-storage check, the MLflow server launcher.

On a multi-node cluster a trial writes its checkpoints to the sweep's storage path from the node
it runs on, and a retried trial reads them back on another node; so that path must be the
same storage on every node: a network filesystem (NFS) mounted at the same path everywhere, or an
object-store URI (s3://, gs://, ...) that Ray's storage layer writes to directly. A path local to
each node would scatter checkpoints across machines, so `check_cluster_paths` proves the path is
shared before anything starts: it writes a random token there and asks a task pinned to every node
to read it back. The MLflow server is `mlflow server --serve-artifacts`, so clients upload
artifacts over HTTP and need no shared filesystem for them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
DEFAULT_TRACKING_STORE = "sqlite:///results/mlflow.db"
DEFAULT_ARTIFACTS = "results/mlartifacts"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Backend stores `mlflow server` can keep runs and its model registry in: SQLAlchemy engines
# (optionally `engine+driver://`, e.g. postgresql+psycopg2://) and a `file://` directory.
BACKEND_STORE_ENGINES = ("sqlite", "postgresql", "mysql", "mssql", "file")

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


def alive_nodes() -> list[dict[str, Any]]:
    """The connected Ray cluster's alive nodes (`ray.nodes()` entries)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def probe_nodes(
    storage_path: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    data_files: Iterable[str] = (),
    timeout_s: float = 120.0,
) -> ClusterReport:
    """Ask every alive node of the connected Ray cluster whether it sees a random token written to
    `storage_path` (skipped for object-store URIs) and the `data_files` under `data_dir`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    token_file: Path | None = None
    if not is_uri(storage_path):
        Path(storage_path).mkdir(parents=True, exist_ok=True)
        token_file = Path(storage_path) / f"{PROBE_FILE_PREFIX}{token[:8]}"
        token_file.write_text(token + "\n")
    probe = ray.remote(num_cpus=0, max_retries=0)(_make_probe())
    nodes = alive_nodes()
    try:
        pending = {
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(
                str(token_file) if token_file else None,
                token,
                str(data_dir) if data_dir is not None else None,
                list(data_files),
            ): n
            for n in nodes
        }
        ready, not_ready = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        answers = []
        for ref in ready:
            node = pending[ref]
            try:
                seen = ray.get(ref)
            except Exception:  # the node died meanwhile: report it as not answering
                not_ready.append(ref)
                continue
            answers.append(
                NodeAnswer(
                    node_id=node["NodeID"],
                    ip=node["NodeManagerAddress"],
                    hostname=seen["hostname"],
                    sees_storage=seen["sees_storage"],
                    missing_data=tuple(seen["missing"]),
                )
            )
        for ref in not_ready:
            ray.cancel(ref, force=True)
    finally:
        if token_file is not None:
            token_file.unlink(missing_ok=True)
    unanswered = tuple(
        f"{pending[r]['NodeManagerAddress']} ({pending[r]['NodeID'][:8]})" for r in not_ready
    )
    return ClusterReport(storage_path, tuple(answers), unanswered)


def check_cluster_paths(
    storage_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    data_files: Iterable[str] = (),
    timeout_s: float = 120.0,
) -> ClusterReport:
    """Raise ClusterError (naming the path, the nodes and the fix) when a Ray cluster of several
    nodes was given storage or data its nodes cannot all see. Call after `ray.init`."""
    storage = ray_storage_path(storage_path)
    nodes = alive_nodes()
    if len(nodes) <= 1:
        return ClusterReport(storage, ())
    report = probe_nodes(storage, data_dir=data_dir, data_files=data_files, timeout_s=timeout_s)
    problems = storage_problems(
        storage, report.answers, report.unanswered, data_dir=str(data_dir) if data_dir else None
    )
    if problems:
        raise ClusterError(problems[0])
    return report


# ----------------------------------------------------------------------------- tracking server


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_uri(uri: str) -> str:
    """`uri` with any password replaced by `***`, for messages and logs."""
    if not is_uri(uri):
        return uri
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolve_backend_store(uri: str) -> tuple[str, Path | None]:
    """Check `--backend-store-uri` and return it (a relative `sqlite:///path` made absolute) with
    the directory its SQLite file needs, if any. Creates nothing: the caller does, once every
    argument has been checked."""
    scheme = uri.split("://", 1)[0].lower() if is_uri(uri) else ""
    engine, _, driver = scheme.partition("+")
    drivers_ok = not driver or (engine != "file" and driver.replace("_", "").isalnum())
    if engine not in BACKEND_STORE_ENGINES or not drivers_ok or scheme.endswith("+"):
        if not is_uri(uri):
            problem = "expected a database URI"
        else:
            problem = f"mlflow server cannot store runs in '{scheme}://'; expected a database URI"
        raise ClusterError(
            f"--backend-store-uri {redact_uri(uri)}: {problem} such as "
            "sqlite:///results/mlflow.db, postgresql://USER@HOST:5432/DB, mysql://USER@HOST/DB "
            "or file:///DIR"
        )
    if engine != "sqlite":
        return uri, None
    # sqlite:///relative/path or sqlite:////absolute/path (SQLAlchemy's spelling), then ?options.
    rest = uri.split("://", 1)[1]
    name, sep, query = rest.removeprefix("/").partition("?")
    if not rest.startswith("/") or not name:
        raise ClusterError(
            f"--backend-store-uri {uri}: expected sqlite:///PATH naming the database file, "
            "e.g. sqlite:///results/mlflow.db"
        )
    path = Path(name).expanduser()
    path = path if path.is_absolute() else path.resolve()
    if path.is_dir():
        raise ClusterError(f"--backend-store-uri {uri}: {path} is a directory, not a file")
    check_creatable(path.parent, f"--backend-store-uri {uri}")
    return f"{scheme}:///{path}{sep}{query}", path.parent


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


@dataclass(frozen=True)
class TrackingServer:
    """How to start `mlflow server`: argv (no secrets in it) and the environment additions."""

    argv: list[str]
    env: dict[str, str]
    url: str
    warnings: list[str]


def tracking_server(
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_store_uri: str = DEFAULT_TRACKING_STORE,
    artifacts_destination: str = DEFAULT_ARTIFACTS,
    workers: int = 2,
    allowed_hosts: str | None = None,
) -> TrackingServer:
    """The `mlflow server --serve-artifacts` command for these settings. The backend store goes
    through $MLFLOW_BACKEND_STORE_URI, not argv, so a database password never shows in `ps`."""
    if not 1 <= port <= 65535:
        raise ClusterError(f"--port {port}: must be in 1-65535")
    store, store_dir = resolve_backend_store(backend_store_uri)
    if is_uri(artifacts_destination):
        destination, artifacts_dir = artifacts_destination, None
    else:
        artifacts_dir = Path(artifacts_destination).expanduser().resolve()
        check_creatable(artifacts_dir, f"--artifacts-destination {artifacts_destination}")
        destination = str(artifacts_dir)
    # Only now, with every argument checked, create the directories (a bad flag leaves none).
    made = {"--backend-store-uri": store_dir, "--artifacts-destination": artifacts_dir}
    for flag, directory in made.items():
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ClusterError(f"{flag}: cannot create {directory}: {err.strerror}") from err
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--serve-artifacts", "--artifacts-destination", destination,
    ]  # fmt: skip
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    warnings = []
    if not is_loopback(host):
        warnings.append(
            f"warning: the MLflow server listens on {host}, reachable from the network without "
            "authentication; keep it behind a firewall (or on a private network, as in "
            "docker/compose.yaml)"
        )
    if urlsplit(store).password:
        warnings.append(
            "warning: --backend-store-uri holds a password; prefer PGPASSWORD or ~/.pgpass "
            "(it is passed to mlflow by environment, never on the command line)"
        )
    shown_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown_host = "127.0.0.1"
    return TrackingServer(
        argv=argv,
        env={"MLFLOW_BACKEND_STORE_URI": store},
        url=f"http://{shown_host}:{port}",
        warnings=warnings,
    )


def exec_tracking_server(server: TrackingServer) -> None:
    """Replace this process with the MLflow server (signals reach it directly; never returns)."""
    env = {**os.environ, **server.env}
    os.execve(server.argv[0], server.argv, env)
