"""Download the CS224N default-project CSVs from the course's handout repository, verified.

Each file comes from `<base URL>/<name>` (the handout's `data/` folder at a pinned commit, or a
mirror), streams into a temp file beside its destination, is checked against the checksum
model/data_dir.py knows for it (sha256, else git blob id) and only then renamed into place: an
interrupted or corrupted download leaves no file, and a fetch that fails before its first file
leaves no directory it created. Files downloaded and verified before a failure are kept (a
second fetch skips them). A file already present and correct is skipped.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import model.data_dir as data_dir_table
from model.data import DataError
from model.data_dir import KnownFile, checksum_of

HANDOUT_REPO = "gpoesia/minbert-default-final-project"
HANDOUT_COMMIT = "7ac8260577fc12a86c7aaf38918056c30054ef39"  # the commit MANIFEST.md names
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{HANDOUT_REPO}/{HANDOUT_COMMIT}/data"
DEFAULT_TIMEOUT_S = 60.0  # seconds without a byte before a download counts as stalled
CHUNK_BYTES = 1 << 16


class FetchError(DataError):
    """A download that failed (unreachable, stalled, incomplete) or brought the wrong bytes."""


@dataclass(frozen=True)
class Fetched:
    """What `fetch_data` did with one file."""

    name: str
    action: Literal["downloaded", "present"]
    size: int
    seconds: float
    checksum: str  # "sha256 ok", "git blob ok" or "no checksum known"

    def line(self) -> str:
        """`downloaded quora-dev.csv  3.2 MB in 1.4 s (sha256 ok)`, one line per file."""
        if self.action == "present":
            return f"present    {self.name}  {_megabytes(self.size)} ({self.checksum}, kept)"
        return (
            f"downloaded {self.name}  {_megabytes(self.size)} in {self.seconds:.1f} s "
            f"({self.checksum})"
        )


class FetchProgress(Protocol):
    """Where download progress goes: a bar on a terminal, a line per file otherwise."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, size: int) -> None: ...

    def finish(self, fetched: Fetched) -> None: ...


class LineProgress:
    """One line per file, for logs and pipes (where a bar would be noise)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def start(self, name: str, total: int | None) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def finish(self, fetched: Fetched) -> None:
        self.echo(fetched.line())


class BarProgress:
    """A rich download bar per file on stderr, and the file's line once it is done."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self.task: Any = None

    def start(self, name: str, total: int | None) -> None:
        self.task = self.bar.add_task(name, total=total)

    def advance(self, size: int) -> None:
        self.bar.update(self.task, advance=size)

    def finish(self, fetched: Fetched) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        self.bar.console.print(fetched.line(), highlight=False)

    def __enter__(self) -> BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def handout_files() -> tuple[KnownFile, ...]:
    """The known files the handout repository holds (all but the partial Quora stand-in), the
    ones training needs first: a mirror without the optional ones still yields a usable dir."""
    handout = [known for known in data_dir_table.KNOWN_FILES if known.in_handout]
    return tuple(sorted(handout, key=lambda known: known.optional))


def file_url(base_url: str, name: str) -> str:
    return f"{base_url.rstrip('/')}/{urllib.request.pathname2url(name).lstrip('/')}"


def fetch_data(
    dest: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: FetchProgress | None = None,
) -> list[Fetched]:
    """Download every handout file missing or wrong in `dest` (created if needed); a file
    present with the right checksum is kept. Raises FetchError on the first file that fails,
    leaving no directory it created empty."""
    dest = Path(dest)
    check_destination(dest)
    created = [d for d in (dest, *dest.absolute().parents) if not d.exists()]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FetchError(f"{dest}: cannot create the data directory ({err.strerror})") from None
    try:
        return _fetch_all(dest, base_url, timeout, progress or LineProgress(lambda line: None))
    except BaseException:  # a failed download, Ctrl-C, SIGTERM: no empty directory stays
        for directory in created:  # the deepest first; rmdir removes only an empty one
            try:
                directory.rmdir()
            except OSError:
                break
        raise


def check_destination(dest: Path) -> None:
    """FetchError when `dest` is a file (or under one), before anything is fetched."""
    for existing in (dest, *dest.absolute().parents):
        if existing.exists():
            if not existing.is_dir():
                raise FetchError(
                    f"{dest}: {existing} is a file, not a directory; name a directory to fetch "
                    "the CS224N files into"
                )
            return


def _fetch_all(dest: Path, base_url: str, timeout: float, shown: FetchProgress) -> list[Fetched]:
    done: list[Fetched] = []
    for known in handout_files():
        target = dest / known.name
        checksum = checksum_of(target, known) if target.is_file() else None
        if checksum is not None and checksum[1] == checksum[2]:
            fetched = Fetched(
                known.name, "present", target.stat().st_size, 0.0, f"{checksum[0]} ok"
            )
        else:
            fetched = _download(file_url(base_url, known.name), target, known, timeout, shown)
        shown.finish(fetched)
        done.append(fetched)
    return done


def _download(
    url: str, target: Path, known: KnownFile, timeout: float, progress: FetchProgress
) -> Fetched:
    """Stream `url` into a temp file beside `target`, verify it, then rename it into place."""
    started = time.monotonic()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as err:
        raise FetchError(f"{target.parent}: cannot write {known.name} ({err.strerror})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _opened(url, timeout) as response:
            total = _content_length(response)
            progress.start(known.name, total)
            size = _copy(response, out, url, timeout, progress)
        if total is not None and size != total:
            raise FetchError(f"{url}: connection closed after {size} of {total} bytes; try again")
        checksum = checksum_of(tmp, known)
        if checksum is not None and checksum[1] != checksum[2]:
            kind, actual, expected = checksum
            raise FetchError(
                f"{known.name}: checksum mismatch for {url} ({kind} {actual}, expected "
                f"{expected}); not written"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; data files are shared like any other
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    verified = "no checksum known" if checksum is None else f"{checksum[0]} ok"
    return Fetched(known.name, "downloaded", size, time.monotonic() - started, verified)


@contextmanager
def _opened(url: str, timeout: float) -> Iterator[BinaryIO]:
    """The response to GET `url`, with every failure as a one-line FetchError naming it."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise _stalled(url, timeout) from None
        raise FetchError(f"{url}: {err.reason}") from None
    except TimeoutError:
        raise _stalled(url, timeout) from None
    except http.client.HTTPException as err:  # e.g. BadStatusLine: the server speaks no HTTP
        answer = " ".join(repr(str(err))[:80].split())
        raise FetchError(
            f"{url}: the server's answer is not HTTP ({type(err).__name__}: {answer}); check --url"
        ) from None
    except (OSError, ValueError) as err:
        raise FetchError(f"{url}: {err}") from None
    with response:
        yield response


def _copy(
    response: BinaryIO, out: BinaryIO, url: str, timeout: float, progress: FetchProgress
) -> int:
    size = 0
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except TimeoutError:
            raise _stalled(url, timeout) from None
        except http.client.IncompleteRead as err:
            # The bytes of this read that did arrive are in `partial`, not yet counted in `size`
            # (a chunked answer broken off inside the first read would say "after 0 bytes").
            size += len(err.partial)
            raise FetchError(f"{url}: download broke off after {size} bytes ({err!r})") from None
        except (OSError, http.client.HTTPException) as err:
            raise FetchError(f"{url}: download broke off after {size} bytes ({err!r})") from None
        if not chunk:
            return size
        out.write(chunk)
        size += len(chunk)
        progress.advance(len(chunk))


def _content_length(response: Any) -> int | None:
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return int(length) if length and length.isdigit() else None


def _stalled(url: str, timeout: float) -> FetchError:
    return FetchError(
        f"{url}: download stalled (no data for {timeout:g} s); try again, or pass --url MIRROR"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
