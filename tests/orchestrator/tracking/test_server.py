"""The MLflow tracking-server launcher: argv, environment, warnings, and every argument checked
before anything is created."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.cluster import ClusterError
from orchestrator.tracking import server as launcher
from orchestrator.tracking.server import TrackingServer, redact_uri, start_tracking_server


def test_tracking_server_defaults_bind_loopback_and_serve_artifacts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    server = start_tracking_server()
    argv = server.argv
    assert argv[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5000"
    assert "--serve-artifacts" in argv
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "results/mlartifacts")
    assert "--backend-store-uri" not in argv
    assert server.env == {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/results/mlflow.db"}
    assert (tmp_path / "results" / "mlartifacts").is_dir()
    assert server.url == "http://127.0.0.1:5000" and server.warnings == []


def test_tracking_server_keeps_passwords_out_of_argv_and_warns_on_open_hosts() -> None:
    uri = "postgresql://mlflow:s3cret@db:5432/mlflow"
    server = start_tracking_server(
        host="0.0.0.0",
        backend_store_uri=uri,
        artifacts_destination="s3://bucket/artifacts",
        allowed_hosts="mlflow:5000",
    )
    assert not any("s3cret" in a for a in server.argv)
    # A bare postgresql:// gets the driver the project installs (SQLAlchemy 2.1's own default,
    # psycopg 3, is not installed: mlflow server would die on `import psycopg`).
    stored = server.env["MLFLOW_BACKEND_STORE_URI"]
    assert stored == "postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow"
    assert server.argv[server.argv.index("--artifacts-destination") + 1] == "s3://bucket/artifacts"
    assert server.argv[-2:] == ["--allowed-hosts", "mlflow:5000"]
    assert len(server.warnings) == 2
    assert "listens on 0.0.0.0" in server.warnings[0] and "PGPASSWORD" in server.warnings[1]
    assert not any("s3cret" in w for w in server.warnings)
    assert server.url == "http://127.0.0.1:5000"
    assert redact_uri(uri) == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact_uri("postgresql://mlflow@db/mlflow") == "postgresql://mlflow@db/mlflow"
    with pytest.raises(ClusterError, match="expected a database URI"):
        start_tracking_server(backend_store_uri="results/mlflow.db")


def test_cli_tracking_server_prints_the_url_and_execs_mlflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[TrackingServer] = []
    monkeypatch.setattr(launcher, "exec_tracking_server", started.append)
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://u:pw@db/mlflow")
    result = CliRunner().invoke(
        main,
        ["tracking-server", "--port", "5055", "--artifacts-destination", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5055" in result.output
    assert "pw" not in result.output.replace("PGPASSWORD", "")
    assert started[0].env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://u:pw@db/mlflow"

    bad = CliRunner().invoke(main, ["tracking-server", "--port", "0"])
    assert bad.exit_code == 2 and "--port 0: must be in 1-65535" in bad.output


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "bogus://x",
            "--backend-store-uri bogus://x: mlflow server cannot store runs in 'bogus://'",
        ),
        ("http://mlflow:5000", "cannot store runs in 'http://'; expected a database URI such as"),
        ("postgresql+a+b://db/m", "cannot store runs in 'postgresql+a+b://'"),
        ("mlflow.db", "--backend-store-uri mlflow.db: expected a database URI such as"),
        ("sqlite://", "--backend-store-uri sqlite://: expected sqlite:///PATH naming the"),
        ("sqlite:///", "--backend-store-uri sqlite:///: expected sqlite:///PATH naming the"),
    ],
)
def test_cli_tracking_server_refuses_a_bad_store_and_creates_nothing(
    uri: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launcher, "exec_tracking_server", lambda server: pytest.fail("started"))
    args = ["tracking-server", "--backend-store-uri", uri, "--artifacts-destination", "art"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_tracking_server_checks_every_argument_before_creating_directories(
    tmp_path: Path,
) -> None:
    (tmp_path / "afile").write_text("")
    store = f"sqlite:///{tmp_path}/new/dir/mlflow.db"
    with pytest.raises(ClusterError, match=r"afile is a file, not a directory"):
        start_tracking_server(
            backend_store_uri=store, artifacts_destination=str(tmp_path / "afile/a")
        )
    with pytest.raises(ClusterError, match=r"afile is a file, not a directory"):
        start_tracking_server(backend_store_uri=f"sqlite:///{tmp_path}/afile/x.db")
    with pytest.raises(ClusterError, match=r"is a directory, not a file"):
        start_tracking_server(backend_store_uri=f"sqlite:///{tmp_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    # Valid arguments: now the database's directory (a path the user named) is created.
    server = start_tracking_server(
        backend_store_uri=store, artifacts_destination=str(tmp_path / "art")
    )
    assert server.env["MLFLOW_BACKEND_STORE_URI"] == store
    assert (tmp_path / "new" / "dir").is_dir() and (tmp_path / "art").is_dir()
    accepted = ("postgresql+psycopg2://u@db/m", "postgresql+psycopg://u@db/m", "mysql://u@db/m",
                "file:///srv/mlruns")  # fmt: skip
    for uri in accepted:
        server = start_tracking_server(backend_store_uri=uri, artifacts_destination="s3://b/a")
        assert server.env["MLFLOW_BACKEND_STORE_URI"] == uri
