"""Cluster mode without a cluster: --address parsing, storage paths, the shared-storage verdict,
and the MLflow server command (argv, environment, warnings)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import cluster
from orchestrator.cli import main
from orchestrator.cluster import (
    ClusterError,
    NodeAnswer,
    check_cluster_paths,
    filesystem_type,
    is_uri,
    local_results_dir,
    parse_address,
    ray_storage_path,
    redact_uri,
    storage_problems,
    tracking_server,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("local", None),
        ("  ", None),
        ("auto", "auto"),
        ("10.0.0.5:6379", "10.0.0.5:6379"),
        ("ray-head:6379", "ray-head:6379"),
        ("head.cluster.internal:16379", "head.cluster.internal:16379"),
        ("[::1]:6379", "[::1]:6379"),
    ],
)
def test_parse_address_accepts_what_ray_init_takes(
    given: str | None, expected: str | None
) -> None:
    assert parse_address(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ray://head:10001", "Ray Client (ray://) is not supported"),
        ("http://head:8265", "not a http:// URL (8265 is the dashboard)"),
        ("ray-head", "missing port; the head listens on 6379"),
        ("ray-head", "--address ray-head:6379"),
        ("head:80", "port must be a number in 1024-65535"),
        ("head:65536", "port must be a number in 1024-65535"),
        ("head:abc", "port must be a number"),
        ("bad host!:6379", "'bad host!' is not a host name or IP address"),
    ],
)
def test_parse_address_rejects_with_the_fix(given: str, message: str) -> None:
    with pytest.raises(ClusterError, match=None) as err:
        parse_address(given)
    assert message in str(err.value)
    assert str(err.value).startswith(f"--address {given}")
    assert "\n" not in str(err.value)


def test_storage_paths_uris_pass_through_and_paths_become_absolute(tmp_path: Path) -> None:
    assert is_uri("s3://bucket/x") and is_uri("file:///tmp") and not is_uri("/mnt/nfs/results")
    assert not is_uri("results") and not is_uri("C:results")
    assert ray_storage_path("s3://bucket/sweeps/") == "s3://bucket/sweeps"
    assert ray_storage_path("gs://bucket") == "gs://bucket"
    assert ray_storage_path(f"file://{tmp_path}/r") == str(tmp_path / "r")
    assert ray_storage_path(tmp_path / "a" / ".." / "b") == str(tmp_path / "b")
    assert Path(ray_storage_path("results")).is_absolute()


def test_results_dir_is_a_path_never_an_object_store(tmp_path: Path) -> None:
    assert local_results_dir(tmp_path / "r") == tmp_path / "r"
    assert local_results_dir(f"file://{tmp_path}/r") == tmp_path / "r"
    with pytest.raises(ClusterError) as err:
        local_results_dir("s3://bucket/sweeps")
    assert str(err.value).startswith("--results-dir s3://bucket/sweeps: must be a filesystem path")
    assert "/mnt/sweeps" in str(err.value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("http://host/results", "storage scheme 'http://' is not supported"),
        ("ftp://host/results", "s3://, gs://"),
        ("s3://", "names no bucket, e.g. s3://my-bucket/sweeps"),
    ],
)
def test_storage_paths_bad_uris_are_errors(given: str, message: str) -> None:
    with pytest.raises(ClusterError) as err:
        ray_storage_path(given)
    assert message in str(err.value) and str(err.value).startswith(given)


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
fileserver:/export/sweeps /mnt/nfs nfs4 rw,vers=4.2 0 0
/dev/vdb /mnt/nfs/local\\040disk xfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "fs"),
    [
        ("/mnt/nfs/results/sweep1", "nfs4"),
        ("/mnt/nfs", "nfs4"),
        ("/mnt/nfsother/x", "ext4"),  # a prefix of the string is not a parent directory
        ("/mnt/nfs/local disk/x", "xfs"),  # the longest mount point wins; \040 is a space
        ("/home/user/results", "ext4"),
    ],
)
def test_filesystem_type_from_mount_table(path: str, fs: str) -> None:
    assert filesystem_type(path, MOUNTS) == fs
    assert cluster.is_network_filesystem("nfs4") and cluster.is_network_filesystem("fuse.s3fs")
    assert not cluster.is_network_filesystem("ext4")


def answer(ip: str, sees: bool | None, missing: tuple[str, ...] = ()) -> NodeAnswer:
    return NodeAnswer(
        node_id=ip * 2, ip=ip, hostname=f"host-{ip}", sees_storage=sees, missing_data=missing
    )


def test_storage_problems_all_nodes_see_it_is_fine() -> None:
    answers = [answer("10.0.0.1", True), answer("10.0.0.2", True), answer("10.0.0.3", None)]
    assert storage_problems("/mnt/nfs/results", answers) == []


def test_storage_problems_node_local_path_on_a_multi_node_cluster() -> None:
    answers = [answer("10.0.0.1", True), answer("10.0.0.2", False), answer("10.0.0.3", False)]
    problems = storage_problems("/home/me/results", answers)
    assert len(problems) == 1
    text = problems[0]
    assert text.startswith("/home/me/results: this ")
    assert "2 of 3 Ray nodes (10.0.0.2 (host-10.0.0.2), 10.0.0.3 (host-10.0.0.3))" in text
    assert "pass --results-dir on shared storage" in text
    assert "(NFS) mounted at the same path on every node, e.g. /mnt/sweeps" in text
    # One node alone cannot disagree with itself.
    assert storage_problems("/home/me/results", [answer("10.0.0.1", False)]) == []


def test_storage_problems_unanswered_nodes_and_missing_data() -> None:
    problems = storage_problems(
        "/mnt/nfs/results",
        [answer("10.0.0.1", True), answer("10.0.0.2", True, ("ids-sst-train.csv",))],
        ["10.0.0.9 (abcd1234)"],
        data_dir="/data/cs224n",
    )
    assert len(problems) == 2
    assert "node(s) 10.0.0.9 (abcd1234) did not answer the storage check" in problems[0]
    assert problems[1].startswith("/data/cs224n: missing on node(s) 10.0.0.2 (host-10.0.0.2)")
    assert "(ids-sst-train.csv)" in problems[1] and "same path on every node" in problems[1]


def test_probe_reads_the_token_back_and_lists_missing_data(tmp_path: Path) -> None:
    probe = cluster._make_probe()
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x")
    seen = probe(str(token_file), "abc", str(tmp_path / "data"), ["a.csv", "b.csv"])
    assert seen["sees_storage"] is True and seen["missing"] == ["b.csv"]
    assert probe(str(token_file), "other", None, [])["sees_storage"] is False
    assert probe(str(tmp_path / "absent"), "abc", None, [])["sees_storage"] is False
    assert probe(None, "abc", str(tmp_path / "nodata"), [])["missing"] == ["."]
    assert probe(None, "abc", None, [])["sees_storage"] is None


def test_check_cluster_paths_single_node_probes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "alive_nodes", lambda: [{"NodeID": "n1"}])

    def no_probe(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a single node needs no probe")

    monkeypatch.setattr(cluster, "probe_nodes", no_probe)
    report = check_cluster_paths("results")
    assert report.answers == () and Path(report.storage_path).is_absolute()


def test_check_cluster_paths_raises_the_first_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cluster, "alive_nodes", lambda: [{"NodeID": "n1"}, {"NodeID": "n2"}])
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_probe(storage: str, **kwargs: Any) -> cluster.ClusterReport:
        calls.append((storage, kwargs))
        return cluster.ClusterReport(
            storage, (answer("10.0.0.1", True), answer("10.0.0.2", False))
        )

    monkeypatch.setattr(cluster, "probe_nodes", fake_probe)
    with pytest.raises(ClusterError, match=r"1 of 2 Ray nodes \(10.0.0.2"):
        check_cluster_paths(tmp_path / "results", data_dir=tmp_path, data_files=["a.csv"])
    assert calls == [
        (
            str(tmp_path / "results"),
            {"data_dir": tmp_path, "data_files": ["a.csv"], "timeout_s": 120.0},
        )
    ]
    # Object-store storage is passed on unchanged (nodes do not look for a token there).
    monkeypatch.setattr(
        cluster, "probe_nodes", lambda s, **k: cluster.ClusterReport(s, (answer("a", None),) * 2)
    )
    assert check_cluster_paths("s3://bucket/sweeps/").storage_path == "s3://bucket/sweeps"


def test_tracking_server_defaults_bind_loopback_and_serve_artifacts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    server = tracking_server()
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
    server = tracking_server(
        host="0.0.0.0",
        backend_store_uri=uri,
        artifacts_destination="s3://bucket/artifacts",
        allowed_hosts="mlflow:5000",
    )
    assert not any("s3cret" in a for a in server.argv)
    assert server.env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert server.argv[server.argv.index("--artifacts-destination") + 1] == "s3://bucket/artifacts"
    assert server.argv[-2:] == ["--allowed-hosts", "mlflow:5000"]
    assert len(server.warnings) == 2
    assert "listens on 0.0.0.0" in server.warnings[0] and "PGPASSWORD" in server.warnings[1]
    assert not any("s3cret" in w for w in server.warnings)
    assert server.url == "http://127.0.0.1:5000"
    assert redact_uri(uri) == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact_uri("postgresql://mlflow@db/mlflow") == "postgresql://mlflow@db/mlflow"
    with pytest.raises(ClusterError, match="expected a database URI"):
        tracking_server(backend_store_uri="results/mlflow.db")


def test_cli_tracking_server_prints_the_url_and_execs_mlflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[cluster.TrackingServer] = []
    monkeypatch.setattr(cluster, "exec_tracking_server", started.append)
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://u:pw@db/mlflow")
    result = CliRunner().invoke(
        main,
        ["tracking-server", "--port", "5055", "--artifacts-destination", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5055" in result.output
    assert "pw" not in result.output.replace("PGPASSWORD", "")
    assert started[0].env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://u:pw@db/mlflow"

    bad = CliRunner().invoke(main, ["tracking-server", "--port", "0"])
    assert bad.exit_code == 2 and "--port 0: must be in 1-65535" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "ray://head:10001"], "Error: --address ray://head:10001: Ray Client"),
        (["--address", "head"], "Error: --address head: missing port"),
        (["--results-dir", "s3://bucket/x"], "Error: --results-dir s3://bucket/x: must be a"),
    ],
)
def test_cli_sweep_refuses_bad_cluster_options_before_starting(
    args: list[str], message: str, tmp_path: Path
) -> None:
    space = str(Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml")
    result = CliRunner().invoke(main, ["sweep", space, "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()


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
    monkeypatch.setattr(cluster, "exec_tracking_server", lambda server: pytest.fail("started"))
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
        tracking_server(backend_store_uri=store, artifacts_destination=str(tmp_path / "afile/a"))
    with pytest.raises(ClusterError, match=r"afile is a file, not a directory"):
        tracking_server(backend_store_uri=f"sqlite:///{tmp_path}/afile/x.db")
    with pytest.raises(ClusterError, match=r"is a directory, not a file"):
        tracking_server(backend_store_uri=f"sqlite:///{tmp_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    # Valid arguments: now the database's directory (a path the user named) is created.
    server = tracking_server(backend_store_uri=store, artifacts_destination=str(tmp_path / "art"))
    assert server.env["MLFLOW_BACKEND_STORE_URI"] == store
    assert (tmp_path / "new" / "dir").is_dir() and (tmp_path / "art").is_dir()
    for accepted in ("postgresql+psycopg2://u@db/m", "mysql://u@db/m", "file:///srv/mlruns"):
        server = tracking_server(backend_store_uri=accepted, artifacts_destination="s3://b/a")
        assert server.env["MLFLOW_BACKEND_STORE_URI"] == accepted
