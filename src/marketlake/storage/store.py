"""Object store access on ``obstore``: one small interface for local disk, memory and S3/R2/MinIO.

:class:`ObjectStore` offers ``get``, ``head``, ``put``, ``put_if_absent``, ``put_if_match``,
``delete`` and ``list``. Every backend supports the two conditional writes:

* S3-compatible and memory stores use the backend's own conditional PUT (``If-None-Match: *`` /
  ``If-Match: <etag>``);
* the local store uses obstore for create-if-absent and implements compare-and-swap itself with an
  inter-process ``fcntl`` lock per key (obstore's ``LocalStore`` lacks ``PutMode::Update``).
  Local writes are atomic (temporary file + rename) and, by default, fsynced.

obstore exceptions are mapped onto :mod:`marketlake.errors`; transient failures are retried with
jittered exponential backoff (``retries`` attempts).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import obstore
import obstore.exceptions as oe
from obstore.store import LocalStore, MemoryStore, S3Store

from marketlake.errors import (
    ConfigError,
    ConflictError,
    LayoutError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    is_retryable,
)

T = TypeVar("T")

_LOCK_DIR = ".marketlake-locks"
# Local writes go to a temporary file in this one directory, then are renamed into place (same
# filesystem, atomic). Creating files in one hot directory is several times cheaper on ext4 than
# creating them next to the target in thousands of per-ticker directories.
_STAGE_DIR = ".marketlake-tmp"
_ORPHAN_AGE_S = 60.0  # a staged temporary of a dead process older than this is deleted at open
_LOCK_STRIPES = 256  # local CAS: keys hash onto this many lock files (opened once, kept open)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD returns: key, size in bytes, ETag (opaque, backend-specific)."""

    key: str
    size: int
    etag: str | None


@dataclass(frozen=True, slots=True)
class GetResult:
    """An object's bytes and the ETag they were read at (for a later conditional put)."""

    data: bytes
    etag: str | None


@dataclass(frozen=True)
class S3Settings:
    """Connection settings for an S3-compatible store (AWS S3, Cloudflare R2, MinIO, SeaweedFS).

    Resolved from, in order: explicit arguments, URL query parameters
    (``s3://bucket/prefix?endpoint=http://host:9000&region=auto``), then environment variables
    ``R2_ACCESS_KEY_ID`` / ``R2_SECRET_ACCESS_KEY`` / ``R2_ENDPOINT`` / ``R2_BUCKET`` and the AWS
    names ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` /
    ``AWS_REGION``. ``region`` defaults to ``auto`` (what R2 expects); path-style addressing is on
    whenever a custom endpoint is given.
    """

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = "auto"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return (
            f"S3Settings(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint={self.endpoint!r}, region={self.region!r}, "
            f"access_key_id={'***' if self.access_key_id else None})"
        )

    @classmethod
    def from_url(cls, url: str, env: dict[str, str] | None = None) -> S3Settings:
        """Build settings from ``s3://bucket/prefix`` (or ``r2://``) plus query and environment."""
        env = dict(os.environ) if env is None else env
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        bucket = parsed.netloc or env.get("R2_BUCKET", "")
        if not bucket:
            raise ConfigError(
                f"no bucket in {url!r}: use s3://BUCKET/prefix or set R2_BUCKET", url=url
            )
        endpoint = (
            query.get("endpoint")
            or env.get("R2_ENDPOINT")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
        return cls(
            bucket=bucket,
            prefix=parsed.path.strip("/"),
            endpoint=endpoint,
            region=query.get("region")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or "auto",
            access_key_id=env.get("R2_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("R2_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
        )


class ObjectStore:
    """A lake's object store. Keys are ``/``-separated and relative to the lake root.

    Build one with :func:`open_store`. All methods are thread-safe.

    Parameters
    ----------
    store:
        The underlying obstore store.
    url:
        The URL the store was opened from (for messages; never contains secrets).
    local_root:
        Filesystem root for local stores (enables locking and fsync), else None.
    retries:
        Attempts for transient failures (exponential backoff from ``backoff`` seconds, jittered).
    fsync:
        Local stores only: fsync each written file before it becomes visible.
    """

    def __init__(
        self,
        store: Any,
        url: str,
        *,
        local_root: Path | None = None,
        retries: int = 5,
        backoff: float = 0.05,
        fsync: bool = True,
        open_url: str | None = None,
    ) -> None:
        self._store = store
        self.url = url
        self.open_url = open_url or url  # what open_store() was given (never holds secrets)
        self.local_root = local_root
        self.retries = max(1, retries)
        self.backoff = backoff
        self.fsync = fsync
        self._guard = threading.Lock()
        self._stripe_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._stripe_fds: dict[int, int] = {}
        self._dirs: set[str] = set()
        self._root_str = str(local_root) if local_root is not None else ""
        self._stage = f"{self._root_str}/{_STAGE_DIR}"
        self._stage_ok: bool | None = None  # None: not prepared yet; False: stage next to target
        self._tmp_counter = itertools.count()

    @property
    def is_local(self) -> bool:
        """True for a store on the local filesystem."""
        return self.local_root is not None

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> GetResult:
        """Return the object's bytes and ETag. Raises :class:`ObjectNotFoundError` if absent."""
        _check_key(key)
        if self.local_root is not None:
            return self._retry(lambda: self._local_get(key), key)

        def op() -> GetResult:
            res = obstore.get(self._store, key)
            return GetResult(bytes(res.bytes()), _etag(res.meta))

        return self._retry(op, key)

    def get_or_none(self, key: str) -> GetResult | None:
        """Like :meth:`get` but returns None when the object does not exist."""
        try:
            return self.get(key)
        except ObjectNotFoundError:
            return None

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of ``key``, or None when it does not exist."""
        _check_key(key)
        if self.local_root is not None:
            try:
                st = os.stat(self._local_path(key))
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                return None
            return ObjectInfo(key, st.st_size, _local_etag(st))

        def op() -> ObjectInfo | None:
            try:
                meta = obstore.head(self._store, key)
            except FileNotFoundError:
                return None
            return ObjectInfo(key, int(meta["size"]), _etag(meta))

        return self._retry(op, key)

    def exists(self, key: str) -> bool:
        """True when ``key`` exists."""
        return self.head(key) is not None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object under ``prefix`` (a LIST: for rebuild/maintenance, never reads).

        An empty ``prefix`` lists the whole store (lock and staging files excluded).
        """
        where = prefix.rstrip("/") + "/" if prefix.strip("/") else None
        if where is not None:
            _check_key(where[:-1])
        chunks = iter(obstore.list(self._store, prefix=where))
        while True:
            try:
                chunk = next(chunks, None)
            except Exception as exc:
                raise _map_error(exc, where or "", self.url) from exc
            if chunk is None:
                return
            for meta in chunk:
                path = str(meta["path"])
                if path.startswith((_LOCK_DIR + "/", _STAGE_DIR + "/")) or "/.tmp-" in path:
                    continue
                yield ObjectInfo(path, int(meta["size"]), _etag(meta))

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str | None:
        """Write ``data`` at ``key`` unconditionally (atomic). Returns the new ETag."""
        _check_key(key)
        if self.local_root is not None:
            return self._retry(lambda: self._local_put(key, data), key)
        return self._retry(lambda: _etag(obstore.put(self._store, key, data)), key)

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Create ``key`` only if it does not exist; :class:`ConflictError` otherwise."""
        _check_key(key)
        if self.local_root is not None:
            with self._key_lock(key):
                if os.path.exists(self._local_path(key)):
                    raise ConflictError(
                        f"{key} already exists (another writer created it)", key=key
                    )
                return self._retry(lambda: self._local_put(key, data), key)
        return self._retry(lambda: _etag(obstore.put(self._store, key, data, mode="create")), key)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str | None:
        """Write ``key`` only if its current ETag is ``etag`` (None: only if it is absent).

        Raises :class:`ConflictError` when the object changed since it was read, including when
        it was deleted (S3 answers 404, SeaweedFS 412: both are a lost race here). ETags compare
        with or without their surrounding quotes.
        """
        if etag is None:
            return self.put_if_absent(key, data)
        _check_key(key)
        if self.local_root is not None:
            with self._key_lock(key):
                info = self.head(key)
                if info is None or _bare(info.etag) != _bare(etag):
                    raise ConflictError(
                        f"{key} changed since it was read (another writer updated it)", key=key
                    )
                return self._retry(lambda: self._local_put(key, data), key)

        quoted = f'"{_bare(etag)}"'  # S3 and obstore's memory store compare the quoted form

        def op() -> str | None:
            try:
                return _etag(obstore.put(self._store, key, data, mode={"e_tag": quoted}))
            except (FileNotFoundError, oe.NotFoundError) as exc:
                if _s3_code(exc) == "NoSuchBucket":
                    raise
                raise ConflictError(
                    f"{key} in {self.url} was deleted since it was read (another writer)", key=key
                ) from exc

        return self._retry(op, key)

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        _check_key(key)

        def op() -> None:
            with contextlib.suppress(FileNotFoundError):
                obstore.delete(self._store, key)

        self._retry(op, key)

    # -- local helpers ----------------------------------------------------------------------

    def _local_path(self, key: str) -> str:
        # Plain strings and os calls: pathlib costs microseconds per object on the write path.
        return f"{self._root_str}/{key}"

    def _local_get(self, key: str) -> GetResult:
        # Plain file read: ~10x cheaper than a round trip through obstore for small local files.
        # The ETag comes from the same open file, in obstore's LocalStore format.
        try:
            fd = os.open(self._local_path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{key} in {self.url} does not exist", key=key) from None
        try:
            st = os.fstat(fd)
            chunks = []
            while chunk := os.read(fd, max(st.st_size, 1 << 16)):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return GetResult(b"".join(chunks), _local_etag(st))

    def _local_put(self, key: str, data: bytes) -> str | None:
        path = self._local_path(key)
        parent, name = path.rsplit("/", 1)
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        if self._stage_ok is None:
            self._prepare_stage()
        unique = f"{os.getpid()}.{threading.get_ident()}.{next(self._tmp_counter)}"
        tmp = f"{self._stage}/{unique}" if self._stage_ok else f"{parent}/.tmp-{name}.{unique}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
                etag = _local_etag(os.fstat(fd))  # rename keeps inode, mtime and size
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self.fsync:  # make the new directory entry durable too
                dfd = os.open(parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # never leave a partial temporary object behind
            raise
        return etag

    def _prepare_stage(self) -> None:
        """Create the staging directory and delete temporaries left by dead processes."""
        with self._guard:
            if self._stage_ok is not None:
                return
            try:
                os.makedirs(self._stage, exist_ok=True)
                same_fs = os.stat(self._stage).st_dev == os.stat(self._root_str).st_dev
            except OSError:
                same_fs = False
            if same_fs:
                _remove_orphans(self._stage)
            self._stage_ok = same_fs

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Exclusive lock on ``key`` across threads and processes (local store only).

        Keys hash onto a fixed set of lock stripes: a thread lock (flock does not exclude threads
        sharing one open file) plus an ``fcntl.flock`` on the stripe's lock file, opened once.
        """
        assert self.local_root is not None
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % (
            _LOCK_STRIPES
        )
        with self._stripe_locks[stripe]:
            fd = self._stripe_fd(stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _stripe_fd(self, stripe: int) -> int:
        fd = self._stripe_fds.get(stripe)
        if fd is None:
            assert self.local_root is not None
            lock_dir = self.local_root / _LOCK_DIR
            lock_dir.mkdir(parents=True, exist_ok=True)
            with self._guard:
                fd = self._stripe_fds.get(stripe)
                if fd is None:
                    fd = os.open(lock_dir / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                    self._stripe_fds[stripe] = fd
        return fd

    def with_fsync(self, fsync: bool) -> ObjectStore:
        """A view of this store that shares its connection and locks but fsyncs differently."""
        view = copy.copy(self)
        view.fsync = fsync
        return view

    def sync(self) -> None:
        """Make every write so far durable (local stores: ``syncfs``; remote: no-op).

        With ``fsync=True`` each object is already fsynced before its rename; this group commit
        is what makes ``fsync=False`` batches durable before the catalog records them.
        """
        if self.local_root is None or self.fsync:
            return
        _syncfs(self.local_root)

    def close(self) -> None:
        """Close cached lock files (local stores)."""
        with self._guard:
            for fd in self._stripe_fds.values():
                os.close(fd)
            self._stripe_fds.clear()

    # -- retries ----------------------------------------------------------------------------

    def _retry(self, op: Callable[[], T], key: str) -> T:
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                return op()
            except Exception as exc:
                error = _map_error(exc, key, self.url)
                if isinstance(error, ConflictError) or not is_retryable(error):
                    raise error from exc
                if attempt == self.retries:
                    raise error from exc
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")


def _remove_orphans(stage: str) -> None:
    """Delete staged temporaries of writer processes that no longer exist (crash leftovers).

    Only files older than a minute are removed, so a reused pid or another host's writer on a
    shared filesystem is never raced.
    """
    try:
        names = os.listdir(stage)
    except OSError:
        return
    for name in names:
        pid_text = name.split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running (or not ours to judge): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        path = f"{stage}/{name}"
        with contextlib.suppress(OSError):
            if time.time() - os.stat(path).st_mtime > _ORPHAN_AGE_S:  # pids can be reused
                os.unlink(path)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (Linux ``syncfs``; elsewhere ``os.sync``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _local_etag(st: os.stat_result) -> str:
    """The ETag obstore's LocalStore reports for a file: inode, mtime (µs) and size, in hex."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns // 1000:x}-{st.st_size:x}"'


def _etag(meta: Any) -> str | None:
    value = meta.get("e_tag") if isinstance(meta, dict) else None
    return str(value) if value is not None else None


_STATUS = re.compile(r"status code: (\d{3})")
_S3_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
_PERMISSION_HINTS = {
    "SignatureDoesNotMatch": "the secret key is wrong (R2_SECRET_ACCESS_KEY/AWS_SECRET_ACCESS_KEY)",
    "InvalidAccessKeyId": "the access key id is unknown (R2_ACCESS_KEY_ID/AWS_ACCESS_KEY_ID)",
    "InvalidToken": "the session token is invalid or expired (AWS_SESSION_TOKEN)",
    "ExpiredToken": "the session token has expired (AWS_SESSION_TOKEN)",
    "RequestTimeTooSkewed": "this machine's clock is too far off: sync it (NTP)",
}


def _check_key(key: str) -> None:
    """Reject keys that could escape the lake root or that S3 servers treat inconsistently.

    Keys are printable ASCII, ``/``-separated, relative, without empty, ``.`` or ``..``
    segments, a trailing ``/`` or backslashes. Every key the lake builds passes.

    Raises
    ------
    LayoutError
        Naming the key and the rule it breaks.
    """
    problem = None
    if not key:
        problem = "it is empty"
    elif not (key.isascii() and key.isprintable()):
        problem = "it contains control or non-ASCII characters"
    elif key[0] == "/":
        problem = "it starts with '/'"
    elif key[-1] == "/":
        problem = "it ends with '/'"
    elif "//" in key:
        problem = "it contains '//'"
    elif "\\" in key:
        problem = "it contains a backslash"
    elif "." in key and any(seg in (".", "..") for seg in key.split("/")):
        problem = "it has a '.' or '..' segment"
    if problem is not None:
        raise LayoutError(
            f"invalid object key {key!r}: {problem}; keys are relative printable-ASCII paths "
            "like 'prices/v1/AAPL/2024/01/data.parquet'",
            key=key,
        )


def _bare(etag: str | None) -> str | None:
    """An ETag without surrounding quotes or a weak ``W/`` prefix (servers differ)."""
    if etag is None:
        return None
    text = etag.removeprefix("W/")
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _status(exc: BaseException) -> int | None:
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def _s3_code(exc: BaseException) -> str | None:
    match = _S3_CODE.search(str(exc))
    return match.group(1) if match else None


def _map_error(exc: Exception, key: str, url: str) -> Exception:
    """Turn an obstore/OS exception into the matching :mod:`marketlake.errors` class.

    obstore names some failures by class (NotFound, Precondition, PermissionDenied); others
    arrive as a generic error whose text carries the HTTP status and the S3 error code, which
    decide: 404 NoSuchBucket is final, 401/403 are permission problems, 412 a lost race,
    408/429/5xx and connection failures or timeouts (no status) are transient.
    """
    if isinstance(exc, StorageError | LayoutError):
        return exc
    where = f"{key} in {url}"
    status = _status(exc)
    code = _s3_code(exc)
    if code == "NoSuchBucket":
        return StorageError(
            f"bucket of {url} does not exist: create it, or fix the bucket in the URL / R2_BUCKET",
            key=key,
        )
    if isinstance(exc, FileNotFoundError | oe.NotFoundError) or (
        status == 404 and isinstance(exc, oe.GenericError)
    ):
        return ObjectNotFoundError(f"{where} does not exist", key=key)
    if isinstance(exc, oe.AlreadyExistsError | oe.PreconditionError) or status == 412:
        return ConflictError(f"{where} changed since it was read (another writer)", key=key)
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError | PermissionError) or (
        status in (401, 403)
    ):
        hint = _PERMISSION_HINTS.get(code or "")
        detail = (
            hint
            if hint
            else "check the credentials (R2_ACCESS_KEY_ID/AWS_ACCESS_KEY_ID and secret) and "
            "that they may read and write this bucket"
        )
        return StoragePermissionError(
            f"permission denied for {where}{f' ({code})' if code else ''}: {detail}", key=key
        )
    if isinstance(exc, oe.NotSupportedError | NotImplementedError):
        return StorageError(f"operation not supported by {url}: {exc}", key=key)
    if isinstance(exc, oe.InvalidPathError | ValueError):
        return StorageError(f"invalid object key {key!r}: {_first_line(exc)}", key=key)
    if status is not None and status not in (408, 429) and status < 500:
        return StorageError(f"{where} failed (HTTP {status} {code or ''}): {_first_line(exc)}")
    if isinstance(exc, oe.BaseError | OSError | TimeoutError | ConnectionError):
        return TransientStorageError(f"transient error on {where}: {_first_line(exc)}", key=key)
    return StorageError(f"unexpected error on {where}: {_first_line(exc)}", key=key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(url: str | os.PathLike[str], *, fsync: bool = True, retries: int = 5) -> ObjectStore:
    """Open the object store for a lake URL.

    Accepted forms: a local path (``./lake``, ``/data/lake``), ``file:///abs/path``,
    ``memory://`` (a fresh in-process store), ``s3://bucket/prefix`` and ``r2://bucket/prefix``
    (see :class:`S3Settings` for where endpoint and credentials come from).

    Raises
    ------
    ConfigError
        For an unsupported scheme or missing S3 settings.
    """
    text = os.fspath(url)
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        path = Path(parsed.path if scheme == "file" else text).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        store = LocalStore(str(path), mkdir=True)
        return ObjectStore(store, str(path), local_root=path, fsync=fsync, retries=retries)
    if scheme == "memory":
        return ObjectStore(MemoryStore(), "memory://", retries=retries)
    if scheme in ("s3", "r2"):
        cfg = S3Settings.from_url(text)
        return ObjectStore(
            s3_store(cfg), f"s3://{cfg.bucket}/{cfg.prefix}", retries=retries, open_url=text
        )
    raise ConfigError(
        f"unsupported lake URL {text!r}: use a local path, file:///path, memory:// or "
        "s3://bucket/prefix",
        url=text,
    )


def s3_store(
    cfg: S3Settings,
    *,
    connect_timeout: float | None = None,
    timeout: float | None = None,
    max_retries: int = 3,
) -> Any:
    """Build an obstore ``S3Store`` from :class:`S3Settings` (path-style with an endpoint).

    ``connect_timeout`` / ``timeout`` (seconds) override the HTTP client's defaults (5 s / 30 s);
    ``max_retries`` is obstore's own retry count for 5xx and connection errors (``marketlake
    doctor`` uses 0 and short timeouts to fail fast).
    """
    config: dict[str, Any] = {"region": cfg.region}
    if cfg.endpoint:
        config["endpoint"] = cfg.endpoint
        config["virtual_hosted_style_request"] = False
        if cfg.endpoint.startswith("http://"):
            config["allow_http"] = True
    if cfg.access_key_id:
        config["access_key_id"] = cfg.access_key_id
    if cfg.secret_access_key:
        config["secret_access_key"] = cfg.secret_access_key
    if cfg.session_token:
        config["session_token"] = cfg.session_token
    client: dict[str, Any] = {}
    if cfg.endpoint and cfg.endpoint.startswith("http://"):
        client["allow_http"] = True
    if connect_timeout is not None:
        client["connect_timeout"] = f"{max(1, round(connect_timeout * 1000))}ms"
    if timeout is not None:
        client["timeout"] = f"{max(1, round(timeout * 1000))}ms"
    retry: dict[str, Any] = {
        "max_retries": max_retries,
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=5),
            "base": 2.0,
        },
        "retry_timeout": timedelta(seconds=timeout * (max_retries + 1) if timeout else 180),
    }
    try:
        return S3Store(
            cfg.bucket,
            prefix=cfg.prefix or None,
            config=config,
            client_options=client or None,
            retry_config=retry,
        )
    except Exception as exc:
        raise ConfigError(f"cannot configure S3 store for {cfg!r}: {_first_line(exc)}") from exc
