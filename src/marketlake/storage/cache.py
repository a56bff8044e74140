"""A local read-through cache for remote lakes: content-addressed files with a size bound.

Entries are keyed by what identifies their content -- a data object's SHA-256 (recorded in
``_meta``) or a ``_meta`` object's key + ETag -- so a changed object is a new entry and a stale
one can never be served: invalidation is by construction. Files are written atomically (temp +
rename); when the total exceeds ``max_bytes`` the least recently used entries (by access time,
refreshed on every hit) are removed. Safe for several threads and processes sharing one directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path

DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB


def default_cache_dir() -> Path:
    """``<user cache dir>/marketlake/objects`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("marketlake")) / "objects"


class ReadCache:
    """Content-addressed local cache.

    Parameters
    ----------
    directory:
        Where entries live (created if needed).
    max_bytes:
        Size bound in bytes; eviction (LRU by access time) runs when a put crosses it.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._size: int | None = None

    def _path(self, name: str) -> Path:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return self.directory / digest[:2] / digest

    def get(self, name: str) -> bytes | None:
        """The cached bytes for ``name`` or None."""
        path = self._path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit refreshes the entry
        with self._lock:
            self.hits += 1
        return data

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` (atomic); evicts old entries past the size bound."""
        if len(data) > self.max_bytes:
            return
        path = self._path(name)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            if self._size is None:
                self._size = self.size_bytes()
            else:
                self._size += len(data)
            over = self._size > self.max_bytes
        if over:
            self.evict()

    def size_bytes(self) -> int:
        """Total bytes of the cached entries (walks the directory)."""
        return sum(p.stat().st_size for p in self.directory.glob("*/*") if p.is_file())

    def evict(self, target: float = 0.8) -> int:
        """Remove least recently used entries until the cache is under ``target`` x the bound;
        returns the number removed."""
        entries = []
        for p in self.directory.glob("*/*"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_atime, st.st_mtime, st.st_size, p))
        entries.sort(key=lambda e: max(e[0], e[1]))
        total = sum(e[2] for e in entries)
        removed = 0
        for _, _, size, p in entries:
            if total <= self.max_bytes * target:
                break
            p.unlink(missing_ok=True)
            total -= size
            removed += 1
        with self._lock:
            self._size = total
        return removed

    def clear(self) -> None:
        """Remove every entry."""
        for p in self.directory.glob("*/*"):
            p.unlink(missing_ok=True)
        with self._lock:
            self._size = 0
