"""`orchestrator tracking-server`: the `mlflow server --serve-artifacts` command for a cluster's
sweeps, so clients upload artifacts over HTTP and need no shared filesystem for them.

Every argument is checked before anything is created, and the backend store (which may hold a
database password) goes to mlflow by environment, never on the command line.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.cluster import ClusterError, check_creatable, is_uri

DEFAULT_TRACKING_STORE = "sqlite:///results/mlflow.db"
DEFAULT_ARTIFACTS = "results/mlartifacts"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Backend stores `mlflow server` can keep runs and its model registry in: SQLAlchemy engines
# (optionally `engine+driver://`, e.g. postgresql+psycopg2://) and a `file://` directory.
BACKEND_STORE_ENGINES = ("sqlite", "postgresql", "mysql", "mssql", "file")


@dataclass(frozen=True)
class TrackingServer:
    """How to start `mlflow server`: argv (no secrets in it) and the environment additions."""

    argv: list[str]
    env: dict[str, str]
    url: str
    warnings: list[str]


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
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
    if engine == "postgresql" and not driver:
        # SQLAlchemy 2.1 made psycopg 3 the driver of a bare postgresql://, but the project
        # installs psycopg2 (psycopg2-binary): without naming it, mlflow server dies on
        # `import psycopg`. An explicit postgresql+DRIVER:// is left as the user wrote it.
        return f"postgresql+psycopg2://{uri.split('://', 1)[1]}", None
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


def resolve_artifacts_destination(destination: str) -> tuple[str, Path | None]:
    """Check `--artifacts-destination`: an object-store URI as given, or a directory made
    absolute and returned as the directory to create."""
    if is_uri(destination):
        return destination, None
    directory = Path(destination).expanduser().resolve()
    check_creatable(directory, f"--artifacts-destination {destination}")
    return str(directory), directory


def start_tracking_server(
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
    destination, artifacts_dir = resolve_artifacts_destination(artifacts_destination)
    # Only now, with every argument checked, create the directories (a bad flag leaves none).
    _make_directories({"--backend-store-uri": store_dir, "--artifacts-destination": artifacts_dir})
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--serve-artifacts", "--artifacts-destination", destination,
    ]  # fmt: skip
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    shown_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown_host = "127.0.0.1"
    return TrackingServer(
        argv=argv,
        env={"MLFLOW_BACKEND_STORE_URI": store},
        url=f"http://{shown_host}:{port}",
        warnings=_warnings(host, store),
    )


def _make_directories(directories: dict[str, Path | None]) -> None:
    """Create each flag's directory (None: nothing to create), or say which flag's failed."""
    for flag, directory in directories.items():
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ClusterError(f"{flag}: cannot create {directory}: {err.strerror}") from err


def _warnings(host: str, store: str) -> list[str]:
    """What the user should know before starting this server: who can reach it, and secrets."""
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
    return warnings


def exec_tracking_server(server: TrackingServer) -> None:
    """Replace this process with the MLflow server (signals reach it directly; never returns)."""
    env = {**os.environ, **server.env}
    os.execve(server.argv[0], server.argv, env)
