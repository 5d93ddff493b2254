"""Cluster mode without a cluster: --address parsing, storage paths, the shared-storage verdict
and the CLI refusing bad cluster options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import cluster
from orchestrator.cli import main
from orchestrator.cluster import (
    PROBE_FILE_PREFIX,
    ClusterError,
    ClusterNode,
    NodeAnswer,
    NodeReplies,
    RunOnNodes,
    check_cluster_paths,
    filesystem_type,
    is_uri,
    local_results_dir,
    parse_address,
    ray_storage_path,
    storage_problems,
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


NODES = (
    ClusterNode("aaaa1111ffff", "10.0.0.1", {"CPU": 2.0}),
    ClusterNode("bbbb2222ffff", "10.0.0.2", {"CPU": 2.0}),
)


def local_nodes(storage: Path | None = None, *, blind: str = "", silent: str = "") -> RunOnNodes:
    """Runs each node's probe here, in turn. The node at IP `blind` sees `storage` as a node with
    its own local disk there would (without the token the driver wrote); `silent` never answers."""

    def run(function: Any, args: Any, nodes: Any, timeout_s: float) -> NodeReplies:
        answered, unanswered = [], []
        for node in nodes:
            if node.ip == silent:
                unanswered.append(node)
                continue
            tokens: list[Path] = []
            if storage is not None and node.ip == blind:
                tokens = list(storage.glob(f"{PROBE_FILE_PREFIX}*"))
            for token in tokens:
                token.rename(token.with_name(f"hidden{token.name}"))
            answered.append((node, function(*args)))
            for token in tokens:
                token.with_name(f"hidden{token.name}").rename(token)
        return NodeReplies(tuple(answered), tuple(unanswered))

    return run


def never_asked(*args: Any) -> NodeReplies:
    raise AssertionError("a single node needs no probe")


def test_check_cluster_paths_single_node_probes_nothing() -> None:
    report = check_cluster_paths("results", NODES[:1], never_asked)
    assert report.answers == () and Path(report.storage_path).is_absolute()


def test_check_cluster_paths_every_node_sees_the_storage_and_data(tmp_path: Path) -> None:
    storage, data = tmp_path / "results", tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x")
    report = check_cluster_paths(
        storage, NODES, local_nodes(storage), data_dir=data, data_files=["a.csv"]
    )
    assert [(a.ip, a.sees_storage, a.missing_data) for a in report.answers] == [
        ("10.0.0.1", True, ()),
        ("10.0.0.2", True, ()),
    ]
    assert list(storage.iterdir()) == []  # the token is removed again


@pytest.mark.parametrize(
    ("blind", "silent", "data_files", "message"),
    [
        ("10.0.0.2", "", [], r"results: this \S+ path is local .* 1 of 2 Ray nodes \(10.0.0.2"),
        ("", "10.0.0.2", [], r"node\(s\) 10.0.0.2 \(bbbb2222\) did not answer"),
        ("", "", ["b.csv"], r"data: missing on node\(s\) 10.0.0.1 .*, 10.0.0.2 .* \(b.csv\)"),
    ],
)
def test_check_cluster_paths_raises_what_a_node_lacks(
    tmp_path: Path, blind: str, silent: str, data_files: list[str], message: str
) -> None:
    storage, data = tmp_path / "results", tmp_path / "data"
    data.mkdir()
    nodes = local_nodes(storage, blind=blind, silent=silent)
    with pytest.raises(ClusterError, match=message) as raised:
        check_cluster_paths(storage, NODES, nodes, data_dir=data, data_files=data_files)
    assert "\n" not in str(raised.value)
    assert list(storage.iterdir()) == []


def test_check_cluster_paths_object_store_is_passed_on_and_not_probed_for_a_token() -> None:
    report = check_cluster_paths("s3://bucket/sweeps/", NODES, local_nodes())
    assert report.storage_path == "s3://bucket/sweeps"
    assert [a.sees_storage for a in report.answers] == [None, None]


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
