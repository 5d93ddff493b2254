"""sha256 of files: what a run's provenance records of its data files, and what an ensemble
manifest records (and verifies) of its members' checkpoint files. A digest is cached while its
file is unchanged, so a sweep hashes each data file once."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

# A file changed less than this long before we hash it may change again without its timestamps
# moving (filesystems keep them in steps of up to 2 s), so its hash is not cached.
RACY_WINDOW_NS = 2 * 10**9
_HASH_CHUNK = 1 << 20

_FILE_HASHES: dict[tuple[str, int, int, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file (hex), served from the cache while the file is unchanged."""
    path = Path(path)
    started_ns = time.time_ns()
    before = path.stat()
    key = _cache_key(path, before)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    digest = _read_sha256(path)
    # Cache only a file that had settled before we looked and did not change while we read it.
    settled = before.st_ctime_ns < started_ns - RACY_WINDOW_NS
    if settled and _cache_key(path, path.stat()) == key:
        _FILE_HASHES[key] = digest
    return digest


def _cache_key(path: Path, stat: os.stat_result) -> tuple[str, int, int, int, int, int]:
    # The ctime (unlike the mtime) moves on every write and cannot be set back, and a replaced
    # file has a new inode: so a settled file whose key is unchanged has unchanged content.
    resolved = str(path.resolve())
    return (resolved, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
