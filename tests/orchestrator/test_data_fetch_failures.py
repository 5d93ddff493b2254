"""`data fetch` against servers that fail: one that answers bytes that are no HTTP, a 404, wrong
bytes, a chunked answer broken off, a stalled one, and no server at all. Each is one FetchError
line naming the URL (exit 2 on the command line, no traceback), and leaves no directory behind
that the fetch created. A raw socket server on 127.0.0.1 in a thread plays each part."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.data_fetch import FetchError, fetch_data, handout_files

BODY = b"\tid\tsentence\tsentiment\n" + b"0\tx\tnot the SST file .\t3\n" * 60  # 1,440 bytes
ANSWERS = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "wrong-bytes": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    # One chunk of 1,000 bytes, then the connection drops before the next chunk's size line.
    "broken-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"
    + BODY[:1000]
    + b"\r\n",
    # Headers and 1,000 of 1,440 bytes, then silence (until the test ends).
    "stalled": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY[:1000]),
}


@dataclass
class RawServer:
    """Answers every request with ANSWERS[mode] and closes (or, `stalled`, waits)."""

    url: str
    mode: str = "not-http"
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[RawServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    state = RawServer(f"http://127.0.0.1:{listener.getsockname()[1]}")

    def answer(conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            state.requests.append(request.split(b"\r\n", 1)[0])
            conn.sendall(ANSWERS[state.mode])
            if state.mode == "stalled":
                stop.wait(30)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def refused_url() -> str:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


FIRST = handout_files()[0].name


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("not-http", "{url}/{first}: the server's answer is not HTTP (BadStatusLine: "
                     "'SSH-2.0-OpenSSH_9.6\\r\\n'); check --url"),
        ("404", "{url}/{first}: HTTP 404 Not Found"),
        ("wrong-bytes", "{first}: checksum mismatch for {url}/{first} (sha256 "),
        ("broken-chunked", "{url}/{first}: download broke off after 1000 bytes (IncompleteRead("),
        ("stalled", "{url}/{first}: download stalled (no data for 0.5 s); try again, or pass "
                    "--url MIRROR"),
        ("refused", "{url}/{first}: [Errno 111] Connection refused"),
    ],
)  # fmt: skip
def test_a_failed_fetch_is_one_line_and_leaves_no_directory_it_created(
    tmp_path: Path, server: RawServer, mode: str, message: str
) -> None:
    server.mode = mode
    url = refused_url() if mode == "refused" else server.url
    dest = tmp_path / "new" / "data"
    with pytest.raises(FetchError) as caught:
        fetch_data(dest, base_url=url, timeout=0.5)
    text = str(caught.value)
    assert text.startswith(message.format(url=url, first=FIRST)) and "\n" not in text
    assert list(tmp_path.iterdir()) == []  # neither data/ nor new/ stays
    if mode != "refused":
        assert server.requests == [f"GET /{FIRST} HTTP/1.1".encode()]


def test_a_directory_that_was_there_stays(tmp_path: Path, server: RawServer) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(FetchError):
        fetch_data(dest, base_url=server.url, timeout=5)
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_the_command_says_it_in_one_line_and_exits_2(tmp_path: Path, server: RawServer) -> None:
    """Before: a 68-line traceback ending in http.client.BadStatusLine, exit 1."""
    dest = tmp_path / "data"
    result = CliRunner().invoke(main, ["data", "fetch", str(dest), "--url", server.url])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"fetching the CS224N data into {dest} from {server.url}",
        f"Error: {server.url}/{FIRST}: the server's answer is not HTTP (BadStatusLine: "
        "'SSH-2.0-OpenSSH_9.6\\r\\n'); check --url",
    ]
    assert not dest.exists()
