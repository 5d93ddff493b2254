"""A throwaway PostgreSQL server for the tests: `initdb` into a temp dir, `postgres` on 127.0.0.1
at a free port (its unix socket inside that dir), stopped by its process id.

PostgreSQL refuses to run as root, and the tests run as root in CI. So as root the server runs as
an unprivileged account (`nobody`, else `postgres`) that owns the temp dir. The switch is done by
`subprocess.Popen(user=, group=, extra_groups=[])`: the child drops root's groups, gid and uid
between fork and exec, so the pid we hold *is* the postmaster and our signals reach it directly.
`runuser`/`su` would stay in between as a PAM-session parent that has to forward them (and leave
the server behind if killed), and `setpriv` is one more binary that a system may lack.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.cluster_harness import free_port, process_tree, signal_processes, wait_gone

# Debian and Ubuntu keep each major version's server binaries here, off PATH.
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
BINARIES = ("initdb", "postgres")
INSTALL_HINT = "install it with `apt-get install postgresql`"
# Accounts to run the server as when we are root; `nobody` owns no files, so the test server can
# touch nothing of a real PostgreSQL installation.
UNPRIVILEGED_ACCOUNTS = ("nobody", "postgres")
SUPERUSER = "mlflow"


class PostgresUnavailable(Exception):
    """This machine cannot run a PostgreSQL server; the message is a one-line skip reason."""


def _version_key(directory: Path) -> tuple[int, ...]:
    """(15,) for /usr/lib/postgresql/15/bin: the newest major version sorts last."""
    return tuple(int(n) for n in re.findall(r"\d+", directory.parent.name))


def find_bin_dir() -> Path:
    """The directory holding both `initdb` and `postgres` of one PostgreSQL version (mixing
    versions fails in initdb): Debian's newest, else wherever PATH's `initdb` points."""
    candidates = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=_version_key)[::-1]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in BINARIES):
            return directory
    missing = [name for name in BINARIES if not any((d / name).is_file() for d in candidates)]
    raise PostgresUnavailable(
        f"PostgreSQL's `{(missing or ['initdb'])[0]}` not found (looked in {DEBIAN_BIN_DIRS} and "
        f"on PATH): {INSTALL_HINT}"
    )


@dataclass(frozen=True)
class Account:
    """Who the server's processes run as: this process's own user, or one we switch to."""

    uid: int
    gid: int
    switch: bool

    def popen_kwargs(self) -> dict[str, Any]:
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_account() -> Account:
    """Ourselves unless we are root; then the first unprivileged account this system has."""
    if os.geteuid() != 0:
        return Account(os.geteuid(), os.getegid(), switch=False)
    for name in UNPRIVILEGED_ACCOUNTS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(entry.pw_uid, entry.pw_gid, switch=True)
    raise PostgresUnavailable(
        "running as root, and PostgreSQL refuses root, but no unprivileged account "
        f"({', '.join(UNPRIVILEGED_ACCOUNTS)}) exists to run it as"
    )


@dataclass
class PostgresServer:
    """One `postgres` process on 127.0.0.1:`port` with a `mlflow` superuser (trust auth:
    it listens on loopback only, and its socket is in a directory only its account can enter)."""

    root: Path
    port: int
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, log_dir: Path, *, timeout: float = 60.0) -> PostgresServer:
        """initdb and start a server; PostgresUnavailable if this machine cannot run one."""
        bin_dir, account = find_bin_dir(), server_account()
        # Not pytest's tmp_path: as root that sits in a 0700 directory the server's account
        # cannot enter. Short, too: the socket path must stay under ~100 characters.
        root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        os.chown(root, account.uid, account.gid)
        log = log_dir / "postgres.log"
        try:
            _check_runs(bin_dir, account, root)
            _initdb(bin_dir, account, root, log_dir / "initdb.log")
            port = free_port()
            server = cls(root, port, _launch(bin_dir, account, root, port, log), log)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, connect_timeout=5
        )

    def wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited {self.process.returncode}:\n{self.tail()}")
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.2)
        raise RuntimeError(f"postgres not accepting connections after {timeout:.0f} s:\n"
                           f"{self.tail()}")  # fmt: skip

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its URL."""
        from psycopg2 import sql

        connection = self.connect()
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            connection.close()
        return self.url(name)

    def query(self, database: str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, args)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""

    def stop(self, grace_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open sessions are rolled back and disconnected; SIGTERM's
        smart shutdown would wait for every client to leave), SIGKILL to what is left after
        `grace_s`; then the data directory goes."""
        tree = process_tree(self.process.pid)
        if self.process.poll() is None:
            signal_processes({self.process.pid: tree[self.process.pid]}, signal.SIGINT)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                tree.update(process_tree(self.process.pid))
                signal_processes(tree, signal.SIGKILL)
                self.process.wait(timeout=grace_s)
        # Backends exit when they see the postmaster gone; a SIGKILLed one may leave them a moment.
        if not wait_gone(tree, grace_s):
            signal_processes(tree, signal.SIGKILL)
            wait_gone(tree, grace_s)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as(account: Account, root: Path) -> dict[str, Any]:
    """Popen arguments for a server-side process: its account, a cwd it may enter, a C locale."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(root)}
    return {"cwd": root, "env": env, "stdin": subprocess.DEVNULL, **account.popen_kwargs()}


def _check_runs(bin_dir: Path, account: Account, root: Path) -> None:
    """`postgres --version` as the server's account: binaries there that cannot run skip."""
    try:
        done = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                              text=True, timeout=30, **_run_as(account, root))  # fmt: skip
    except OSError as err:
        raise PostgresUnavailable(f"{bin_dir / 'postgres'} cannot run: {err}") from err
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PostgresUnavailable(f"{bin_dir / 'postgres'} --version failed: {reason[0]}")


def _initdb(bin_dir: Path, account: Account, root: Path, log: Path) -> None:
    command = [
        str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust",
        "--no-locale", "--encoding=UTF8", "--no-sync",
    ]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=120,
                              **_run_as(account, root))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"initdb exited {done.returncode}:\n{log.read_text()[-3000:]}")


def _launch(
    bin_dir: Path, account: Account, root: Path, port: int, log: Path
) -> subprocess.Popen:
    # Durability off: the database lives for one test module and speed matters on 2 cores.
    command = [
        str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    ]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **_run_as(account, root))  # fmt: skip
