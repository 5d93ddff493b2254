"""`orchestrator data fetch` against a real HTTP server on 127.0.0.1 serving a mirror of the data.

The mirror holds copies of the shared CS224N files. The two files the shared copy lacks
(`quora-train.csv`, `quora-test-student.csv`) are small stand-ins made from real rows; their git
blob ids and row counts replace the real ones in `model.data_dir.KNOWN_FILES` (the test hook), so
fetch verifies them, and `data check` accepts them, by the same code path as the real files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import model.data_dir as data_dir_table
from model.data_dir import FULL_QUORA_TRAIN, PARTIAL_QUORA_TRAIN, check_data_dir
from orchestrator.cli import main
from orchestrator.data_fetch import FetchError, fetch_data, handout_files

REPO = Path(__file__).resolve().parents[2]
STALL = "/stall/"  # a path prefix the server answers with headers, 1,000 bytes, then silence
SHORT = "/short/"  # ... with headers, 1,000 bytes, then a closed connection


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Mirror:
    root: Path
    base_url: str
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def stand_ins(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Small files in the format of the two missing ones, from real rows: name -> (bytes, rows)."""
    train_lines = (data_dir / PARTIAL_QUORA_TRAIN).read_bytes().split(b"\n")[:121]
    dev_lines = (data_dir / "quora-dev.csv").read_bytes().split(b"\n")[:81]
    # quora-test-student.csv: the dev layout without the label column (ids and pairs only).
    test_lines = [b"\t".join(line.split(b"\t")[:4]) for line in dev_lines]
    return {
        FULL_QUORA_TRAIN: (b"\n".join(train_lines) + b"\n", 120),
        "quora-test-student.csv": (b"\n".join(test_lines) + b"\n", 80),
    }


@pytest.fixture
def mirror(tmp_path, data_dir, monkeypatch) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    root.mkdir()
    fakes = stand_ins(data_dir)
    patched = []
    for known in data_dir_table.KNOWN_FILES:
        if known.name in fakes:
            content, rows = fakes[known.name]
            (root / known.name).write_bytes(content)
            known = dataclasses.replace(known, git_blob=git_blob(content), rows=rows)
        elif known.in_handout:
            shutil.copyfile(data_dir / known.name, root / known.name)
        patched.append(known)
    monkeypatch.setattr(data_dir_table, "KNOWN_FILES", tuple(patched))

    server_box: dict[str, Mirror] = {}

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            state = server_box["mirror"]
            state.requests.append(self.path)
            prefix = next((p for p in (STALL, SHORT) if self.path.startswith(p)), None)
            if prefix is None:
                super().do_GET()
                return
            body = (root / self.path[len(prefix) :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:1000])
            self.wfile.flush()
            self.close_connection = True
            if prefix == STALL:
                state.release.wait(30)  # silence until the test ends

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state = Mirror(root, f"http://127.0.0.1:{server.server_address[1]}")
    server_box["mirror"] = state
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob(".*.part"))


def test_fetch_downloads_verifies_and_then_keeps_correct_files(tmp_path, mirror):
    dest = tmp_path / "fresh" / "data"
    fetched = fetch_data(dest, base_url=mirror.base_url, timeout=5)
    names = [known.name for known in handout_files()]
    assert len(names) == 12 and PARTIAL_QUORA_TRAIN not in names
    assert [f.name for f in fetched] == names
    assert {f.action for f in fetched} == {"downloaded"}
    for name in names:
        assert (dest / name).read_bytes() == (mirror.root / name).read_bytes(), name
    by_name = {f.name: f for f in fetched}
    assert by_name["sts-dev.csv"].checksum == "sha256 ok"
    assert by_name[FULL_QUORA_TRAIN].checksum == "git blob ok"  # no sha256 known for it
    assert by_name["sts-dev.csv"].size == 132265
    checks = {c.name: c for c in check_data_dir(dest)}
    assert all(c.ok for c in checks.values())
    assert checks[FULL_QUORA_TRAIN].rows == 120 and checks[FULL_QUORA_TRAIN].sha256_ok is True
    assert not checks[PARTIAL_QUORA_TRAIN].present and checks[PARTIAL_QUORA_TRAIN].optional
    assert leftovers(dest) == []
    assert len(mirror.requests) == 12

    # Again, with one file damaged: only that one is downloaded.
    mirror.requests.clear()
    (dest / "ids-sst-dev.csv").write_bytes(b"damaged")
    again = fetch_data(dest, base_url=mirror.base_url, timeout=5)
    assert mirror.requests == ["/ids-sst-dev.csv"]
    assert [f.name for f in again if f.action == "downloaded"] == ["ids-sst-dev.csv"]
    assert (dest / "ids-sst-dev.csv").stat().st_size == 151384


def test_a_corrupted_file_is_an_error_naming_it_and_leaves_no_file(tmp_path, mirror):
    served = mirror.root / "sts-dev.csv"
    content = bytearray(served.read_bytes())
    content[500] ^= 0x01  # one flipped bit: same size, same row count
    served.write_bytes(bytes(content))
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as caught:
        fetch_data(dest, base_url=mirror.base_url, timeout=5)
    message = str(caught.value)
    assert message.startswith("sts-dev.csv: checksum mismatch for ")
    assert f"{mirror.base_url}/sts-dev.csv" in message and "\n" not in message
    expected = "ce3cad6f16062586ac7ba462c28b010a9be10c530fd5074165860d7b7ab4e93d"
    assert f"sha256 {hashlib.sha256(content).hexdigest()}, expected {expected}" in message
    assert not (dest / "sts-dev.csv").exists() and leftovers(dest) == []
    assert (dest / "sts-train.csv").is_file()  # files before it are complete and kept


def test_a_stalled_download_times_out_naming_the_url(tmp_path, mirror):
    dest = tmp_path / "data"
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_data(dest, base_url=f"{mirror.base_url}/stall", timeout=0.5)
    assert time.monotonic() - started < 10
    first = handout_files()[0].name
    assert str(caught.value) == (
        f"{mirror.base_url}/stall/{first}: download stalled (no data for 0.5 s); try again, "
        "or pass --url MIRROR"
    )
    assert not (dest / first).exists() and leftovers(dest) == []


def test_a_connection_closed_early_is_an_error_and_leaves_no_file(tmp_path, mirror):
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as caught:
        fetch_data(dest, base_url=f"{mirror.base_url}/short", timeout=5)
    first = handout_files()[0].name
    assert str(caught.value) == (
        f"{mirror.base_url}/short/{first}: connection closed after 1000 of 1175139 bytes; "
        "try again"
    )
    assert not (dest / first).exists() and leftovers(dest) == []


def test_a_missing_file_on_the_mirror_is_a_one_line_http_error(tmp_path, mirror):
    (mirror.root / "sts-test-student.csv").unlink()
    with pytest.raises(FetchError, match=r"/sts-test-student.csv: HTTP 404 File not found$"):
        fetch_data(tmp_path / "data", base_url=mirror.base_url, timeout=5)
    refused = r"^http://127.0.0.1:1/ids-sst-train.csv: \[Errno 111\] Connection refused$"
    with pytest.raises(FetchError, match=refused):  # nothing listens on port 1
        fetch_data(tmp_path / "other", base_url="http://127.0.0.1:1", timeout=5)


def test_a_directory_that_cannot_be_created_is_a_one_line_error(tmp_path, mirror):
    (tmp_path / "a-file").write_text("")
    dest = tmp_path / "a-file" / "data"
    with pytest.raises(FetchError) as caught:
        fetch_data(dest, base_url=mirror.base_url)
    assert str(caught.value) == (
        f"{dest}: {tmp_path / 'a-file'} is a file, not a directory; name a directory to fetch "
        "the CS224N files into"
    )
    assert mirror.requests == []


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_new_user_without_data_fetches_it_and_trains(tmp_path, mirror, monkeypatch):
    """From a fresh clone: the one-line error, `data fetch` into ./data, then `train` uses the
    full Quora file there and says so."""
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.chdir(clone)
    monkeypatch.delenv("ORCHESTRATOR_DATA_DIR", raising=False)
    config = str(REPO / "configs" / "tiny.yaml")

    missing = run("train", config, "--out", "out")
    assert missing.exit_code == 2
    assert missing.output == (
        f"Error: {clone / 'data'}: data directory not found; run `orchestrator data fetch` to "
        "download the CS224N files, or pass --data-dir DIR\n"
    )

    fetched = run("data", "fetch", "--url", mirror.base_url, "--timeout", "5")
    assert fetched.exit_code == 0, fetched.output
    lines = fetched.output.splitlines()
    assert lines[0] == f"fetching the CS224N data into {clone / 'data'} from {mirror.base_url}"
    assert sum(line.startswith("downloaded ") for line in lines) == 12  # a line per file
    assert "downloaded sts-dev.csv  0.1 MB in " in fetched.output
    assert "data check: " in fetched.output  # ends with `data check`'s table

    kept = run("data", "fetch", "--url", mirror.base_url)
    assert kept.exit_code == 0 and kept.output.count("present    ") == 12

    trained = run("train", config, "--out", "out")
    assert trained.exit_code == 0, trained.output
    # tiny.yaml caps Quora at 64 pairs (data.max_examples.para): the note says so.
    assert "note: Quora trained on 64 pairs drawn from the full quora-train.csv." in trained.output
    saved = json.loads((clone / "out" / "checkpoints" / "best" / "config.json").read_text())
    assert saved["train_config"]["data"]["para_train"] == FULL_QUORA_TRAIN


def test_cli_fetch_errors_are_one_line_exit_2(tmp_path, mirror):
    (mirror.root / "quora-dev.csv").write_bytes(b"not the dev set\n")
    dest = tmp_path / "data"
    result = run("data", "fetch", str(dest), "--url", mirror.base_url)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("Error: quora-dev.csv: checksum mismatch")
    assert not (dest / "quora-dev.csv").exists()

    bad_url = run("data", "fetch", str(dest), "--url", "ftp://example.org/data")
    assert bad_url.exit_code == 2
    assert bad_url.output.splitlines() == [
        "Error: --url ftp://example.org/data: expected an http://, https:// or file: URL"
    ]


def test_a_sweep_names_the_quora_file_its_trials_read(tmp_path, data_dir, monkeypatch):
    """`sweep` resolves `data.para_train: auto` before the driver starts, so the base config its
    MLflow params and data checksum come from names the real file (the driver itself is ours,
    stubbed here to catch what it is given; tests/integration run it for real)."""
    import orchestrator.cli.sweep as sweep_driver

    given = {}

    def plain_sweep_lines(space, *args):
        given["base"] = space.base
        return ["stub"]

    monkeypatch.setattr(sweep_driver, "plain_sweep_lines", plain_sweep_lines)
    space = REPO / "search_spaces" / "quickstart.yaml"
    args = ["sweep", str(space), "--results-dir", str(tmp_path / "results")]
    result = run(*args, "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    has_full = (data_dir / FULL_QUORA_TRAIN).is_file()  # the shared copy has only the partial
    assert given["base"].data.para_train == (FULL_QUORA_TRAIN if has_full else PARTIAL_QUORA_TRAIN)

    with_full = tmp_path / "with_full"
    shutil.copytree(data_dir, with_full)
    shutil.copyfile(with_full / PARTIAL_QUORA_TRAIN, with_full / FULL_QUORA_TRAIN)
    assert run(*args, "--data-dir", str(with_full)).exit_code == 0
    assert given["base"].data.para_train == FULL_QUORA_TRAIN
