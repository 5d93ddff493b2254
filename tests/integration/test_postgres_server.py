"""The PostgreSQL test server itself: where its binaries are missing the reason says which one and
how to install it; where they are present it runs unprivileged and leaves no process behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.integration import postgres_server
from tests.integration.cluster_harness import process_tree, wait_gone
from tests.integration.postgres_server import PostgresServer, PostgresUnavailable


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_missing_binary_is_named_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_server, "DEBIAN_BIN_DIRS", f"{tmp_path}/lib/*/bin")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PostgresUnavailable) as nothing:
        postgres_server.find_bin_dir()
    assert str(nothing.value) == (
        f"PostgreSQL's `initdb` not found (looked in {tmp_path}/lib/*/bin and on PATH): "
        "install it with `apt-get install postgresql`"
    )
    # initdb of version 16 alone: the server binary is the one named.
    _executable(tmp_path / "lib" / "16" / "bin" / "initdb")
    with pytest.raises(PostgresUnavailable, match=r"^PostgreSQL's `postgres` not found"):
        postgres_server.find_bin_dir()
    # Both in version 15, initdb alone in 16: one version's pair, never a mix.
    for name in ("initdb", "postgres"):
        _executable(tmp_path / "lib" / "15" / "bin" / name)
    assert postgres_server.find_bin_dir() == tmp_path / "lib" / "15" / "bin"


def test_root_runs_the_server_as_an_unprivileged_account() -> None:
    account = postgres_server.server_account()
    if os.geteuid() == 0:
        assert account.switch and account.uid != 0 and account.gid != 0
        assert account.popen_kwargs()["extra_groups"] == []  # root's groups dropped too
    else:
        assert not account.switch and account.popen_kwargs() == {}


@pytest.mark.integration
def test_a_server_takes_a_database_and_stops_with_no_process_left(tmp_path: Path) -> None:
    try:
        server = PostgresServer.start(tmp_path)
    except PostgresUnavailable as err:
        pytest.skip(str(err))
    try:
        url = server.create_database("runs_db")
        assert url == f"postgresql://mlflow@127.0.0.1:{server.port}/runs_db"
        assert server.query("runs_db", "SELECT current_database(), current_user") == [
            ("runs_db", "mlflow")
        ]
        tree = process_tree(server.process.pid)
        assert len(tree) > 1  # the postmaster and its background workers
        owners = {Path(f"/proc/{pid}").stat().st_uid for pid in tree}
        assert owners == {postgres_server.server_account().uid}
    finally:
        server.stop()
    assert server.process.returncode == 0  # a clean fast shutdown, not a kill
    assert wait_gone(tree, 0.1) and not server.root.exists()
