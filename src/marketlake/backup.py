"""Incremental, verifiable backups of a lake to any object store (local dir, memory, S3/R2).

A backup target holds content-addressed copies of the lake's objects plus manifests::

    _backup/objects/<sha256[:2]>/<sha256>     one object per distinct content (never overwritten)
    _backup/manifests/<UTC timestamp>.json    one snapshot per completed backup
    _backup/manifest.json                     the latest snapshot (same body)
    _backup/lock.json                         present while a backup or prune runs

A manifest maps every lake key (data partitions, ``_meta``, ``_marketlake.json``) to its size,
sha256 and the source ETag it was read at. Because objects are stored by content and never
overwritten, every dated manifest stays a complete, restorable snapshot; a backup that dies half
way leaves only unreferenced objects behind, and the previous manifest stays valid.

Incremental: an object whose source size and ETag equal the previous manifest's entry (and whose
content is present at the target) is not read at all; a changed ETag is read and hashed, and only
content the target does not hold yet is uploaded. The manifest is written last.

Snapshot consistency with concurrent writers: ``_meta`` objects are read before data objects, so
a ``_meta`` in the backup never refers to a partition version newer than the one backed up (the
write order of the lake is data -> ``_meta``; the opposite skew is the state a crashed writer
leaves, which the lake tolerates).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marketlake.errors import (
    ConflictError,
    CorruptObjectError,
    MarketlakeError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from marketlake.ingest.progress import NullProgress, Progress
from marketlake.storage.format import MARKER_KEY
from marketlake.storage.meta import META_PREFIX
from marketlake.storage.store import ObjectInfo, ObjectStore, open_store

T = TypeVar("T")

BACKUP_PREFIX = "_backup"
MANIFEST_KEY = f"{BACKUP_PREFIX}/manifest.json"
MANIFESTS_PREFIX = f"{BACKUP_PREFIX}/manifests"
OBJECTS_PREFIX = f"{BACKUP_PREFIX}/objects"
LOCK_KEY = f"{BACKUP_PREFIX}/lock.json"
MANIFEST_FORMAT = "marketlake-backup"
MANIFEST_VERSION = 1

# Local lake files that are not lake objects: the catalog (derived, rebuilt on restore) and
# SQLite's side files. Lock/staging directories are already hidden by ObjectStore.list.
_LOCAL_ONLY = ("_catalog.sqlite",)


class BackupError(MarketlakeError):
    """A backup, verify or restore cannot proceed (bad target, lock held, corrupt backup...)."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One lake object in a snapshot: its size, content hash and the source ETag read."""

    key: str
    size: int
    sha256: str
    etag: str | None


@dataclass
class Manifest:
    """A snapshot: every lake object's entry, when and from where it was taken."""

    created_at: str
    source: str
    entries: dict[str, ManifestEntry]
    snapshot: str = ""  # the dated manifest key

    def to_bytes(self) -> bytes:
        """Deterministic JSON (sorted keys)."""
        body = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "created_at": self.created_at,
            "source": self.source,
            "snapshot": self.snapshot,
            "objects": {
                k: {"size": e.size, "sha256": e.sha256, "etag": e.etag}
                for k, e in sorted(self.entries.items())
            },
            "total_objects": len(self.entries),
            "total_bytes": sum(e.size for e in self.entries.values()),
        }
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, *, key: str) -> Manifest:
        """Decode a manifest; :class:`CorruptObjectError` naming ``key`` when malformed."""
        try:
            obj: dict[str, Any] = json.loads(data)
            if obj.get("format") != MANIFEST_FORMAT:
                raise ValueError("not a marketlake backup manifest")
            if int(obj["version"]) > MANIFEST_VERSION:
                raise ValueError(f"manifest version {obj['version']} is newer than this code")
            entries = {
                str(k): ManifestEntry(
                    str(k),
                    int(v["size"]),
                    str(v["sha256"]),
                    None if v.get("etag") is None else str(v["etag"]),
                )
                for k, v in dict(obj["objects"]).items()
            }
            return cls(str(obj["created_at"]), str(obj["source"]), entries, str(obj["snapshot"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObjectError(
                f"backup manifest {key} is corrupt ({exc}); verify an older snapshot in "
                f"{MANIFESTS_PREFIX}/",
                key=key,
            ) from exc


@dataclass
class BackupSummary:
    """What a backup did."""

    target: str
    snapshot: str
    objects: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    bytes_total: int = 0
    removed: int = 0  # keys in the previous snapshot that are gone from the lake
    pruned_snapshots: int = 0
    pruned_objects: int = 0


@dataclass
class VerifyReport:
    """What :func:`verify_backup` found. ``ok`` is False when anything is missing or corrupt."""

    target: str
    snapshot: str
    objects: int = 0
    bytes_checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    # only with a live lake to compare against (informational, not failures):
    changed_since: list[str] = field(default_factory=list)
    new_since: list[str] = field(default_factory=list)
    deleted_since: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every object of the snapshot is present with its recorded size and hash."""
        return not self.missing and not self.corrupt


@dataclass
class RestoreSummary:
    """What a restore did."""

    destination: str
    snapshot: str
    objects: int = 0
    bytes: int = 0
    deleted: int = 0  # objects in the destination that were not in the backup (--force)
    partitions: int = 0  # catalog partitions rebuilt


# --- helpers ---------------------------------------------------------------------------------


def _as_store(where: ObjectStore | str | os.PathLike[str], *, fsync: bool = True) -> ObjectStore:
    if isinstance(where, ObjectStore):
        return where
    return open_store(where, fsync=fsync)


def object_key(sha256: str) -> str:
    """Where the content with hash ``sha256`` lives in a backup target."""
    return f"{OBJECTS_PREFIX}/{sha256[:2]}/{sha256}"


def _is_lake_object(key: str) -> bool:
    if key.startswith(BACKUP_PREFIX + "/"):
        return False
    if any(part.startswith(".") for part in key.split("/")):
        return False  # temporaries, lock and staging files
    name = key.rsplit("/", 1)[-1]
    return not (key == name and name.startswith(_LOCAL_ONLY))


def lake_objects(store: ObjectStore) -> list[ObjectInfo]:
    """Every object of the lake in ``store`` (no catalog, no lock/staging files, no backups)."""
    return sorted((i for i in store.list("") if _is_lake_object(i.key)), key=lambda i: i.key)


def _phase(key: str) -> int:
    """Read order: marker and ``_meta`` before data (see the module docstring)."""
    return 0 if key == MARKER_KEY or key.startswith(META_PREFIX + "/") else 1


def _same_or_nested(source: ObjectStore, target: ObjectStore) -> bool:
    """True when ``target`` is ``source`` or lives inside it (a backup would back itself up)."""
    if source is target:
        return True
    if source.local_root is not None and target.local_root is not None:
        return target.local_root == source.local_root or source.local_root in (
            target.local_root.parents
        )
    if source.url.startswith("s3://") and target.url.startswith("s3://"):
        src = source.url.rstrip("/") + "/"
        dst = target.url.rstrip("/") + "/"
        return dst.startswith(src)
    return False


def _now_stamp() -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), now.strftime("%Y%m%dT%H%M%S%fZ")


def _map(
    fn: Callable[[T], Any], items: Iterable[T], workers: int, progress: Progress | None = None
) -> list[Any]:
    """Run ``fn`` over ``items`` on a thread pool; the first error stops the rest and is raised."""
    items = list(items)
    if not items:
        return []
    stop = threading.Event()

    def one(item: T) -> Any:
        if stop.is_set():
            return None
        try:
            res = fn(item)
        except BaseException:
            stop.set()
            raise
        if progress is not None:
            progress.advance()
        return res

    if workers <= 1 or len(items) == 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max(1, min(workers, len(items))), "marketlake-backup") as pool:
        futures = [pool.submit(one, i) for i in items]
        results = []
        first: BaseException | None = None
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:  # keep the first error, let the others drain
                first = first or exc
        if first is not None:
            raise first
        return results


def read_manifest(target: ObjectStore, snapshot: str | None = None) -> tuple[Manifest, str | None]:
    """The latest manifest (or the dated ``snapshot``) at ``target`` and its ETag.

    ``snapshot`` is a manifest file name (``20250102T030405123456Z``, with or without ``.json``)
    or a key under ``_backup/manifests/``. Raises :class:`BackupError` when there is none.
    """
    if snapshot:
        name = snapshot.rsplit("/", 1)[-1]
        key = f"{MANIFESTS_PREFIX}/{name if name.endswith('.json') else name + '.json'}"
    else:
        key = MANIFEST_KEY
    got = target.get_or_none(key)
    if got is None:
        if snapshot:
            known = [i.key.rsplit("/", 1)[-1] for i in target.list(MANIFESTS_PREFIX)]
            raise BackupError(
                f"no snapshot {snapshot!r} in {target.url}; snapshots: "
                f"{', '.join(sorted(known)[-10:]) or 'none'}",
                key=key,
            )
        raise BackupError(
            f"no backup at {target.url}: {MANIFEST_KEY} does not exist (run "
            "'marketlake backup --to URL' first)",
            key=key,
        )
    return Manifest.from_bytes(got.data, key=key), got.etag


def _name(manifest: Manifest) -> str:
    """The snapshot name (timestamp) of a manifest."""
    return manifest.snapshot.rsplit("/", 1)[-1].removesuffix(".json")


def list_snapshots(target: ObjectStore | str | os.PathLike[str]) -> list[str]:
    """Names of the dated snapshots at ``target``, oldest first."""
    store = _as_store(target)
    return sorted(
        i.key.rsplit("/", 1)[-1].removesuffix(".json")
        for i in store.list(MANIFESTS_PREFIX)
        if i.key.endswith(".json")
    )


class _Lock:
    """``_backup/lock.json``, created if absent: one backup/prune per target at a time."""

    def __init__(self, target: ObjectStore, operation: str, break_lock: bool) -> None:
        self.target = target
        self.operation = operation
        self.break_lock = break_lock

    def __enter__(self) -> _Lock:
        body = json.dumps(
            {
                "operation": self.operation,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": _now_stamp()[0],
            }
        ).encode()
        if self.break_lock:
            self.target.delete(LOCK_KEY)
        try:
            self.target.put_if_absent(LOCK_KEY, body)
        except ConflictError:
            got = self.target.get_or_none(LOCK_KEY)
            holder = got.data.decode(errors="replace").strip() if got else "?"
            raise BackupError(
                f"another backup holds {LOCK_KEY} in {self.target.url} ({holder}); if it died, "
                "rerun with --break-lock",
                key=LOCK_KEY,
            ) from None
        except StorageError as exc:
            raise BackupError(
                f"backup target {self.target.url} is not reachable or not writable: {exc}"
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.target.delete(LOCK_KEY)
        except StorageError:
            if exc[0] is None:
                raise


# --- backup ----------------------------------------------------------------------------------


def backup(
    source: ObjectStore | str | os.PathLike[str],
    target: ObjectStore | str | os.PathLike[str],
    *,
    full: bool = False,
    keep: int | None = None,
    workers: int = 16,
    break_lock: bool = False,
    progress: Progress | None = None,
) -> BackupSummary:
    """Back up the lake at ``source`` to ``target`` incrementally and write a new snapshot.

    Parameters
    ----------
    source, target:
        Store URLs (local path, ``file://``, ``memory://``, ``s3://``/``r2://``) or open
        :class:`ObjectStore` objects. The target must not be the source or inside it.
    full:
        Re-read every source object and re-upload its content (repairs backup objects that
        verify reported corrupt) instead of trusting unchanged ETags and present objects.
    keep:
        After the backup, keep only the newest ``keep`` snapshots and delete objects that no
        kept snapshot refers to (None: keep everything).
    workers:
        Concurrent object copies.
    break_lock:
        Delete a lock left by a backup that died (only when no other backup is running).
    progress:
        Receives one ``advance`` per object examined.

    Returns
    -------
    BackupSummary
        Objects copied and skipped, bytes, the snapshot name.

    Raises
    ------
    BackupError
        The target is the source, unreachable, or locked by another backup.
    """
    src = _as_store(source)
    dst = _as_store(target)
    if _same_or_nested(src, dst):
        raise BackupError(
            f"backup target {dst.url} is the source lake or inside it; choose another "
            "bucket, prefix or directory"
        )
    progress = progress or NullProgress()
    with _Lock(dst, "backup", break_lock):
        try:
            previous, prev_etag = read_manifest(dst)
        except BackupError:
            if dst.exists(MANIFEST_KEY):  # corrupt manifest: do not silently start over
                raise
            previous, prev_etag = None, None
        present = (
            {} if full else {i.key.rsplit("/", 1)[-1]: i.size for i in dst.list(OBJECTS_PREFIX)}
        )
        infos = lake_objects(src)
        if not any(i.key == MARKER_KEY for i in infos):
            raise BackupError(f"{src.url} is not a marketlake lake (no {MARKER_KEY}); check --lake")
        created_at, stamp = _now_stamp()
        summary = BackupSummary(dst.url, stamp, objects=len(infos))
        prev_entries = previous.entries if previous else {}
        lock = threading.Lock()

        def copy(info: ObjectInfo) -> ManifestEntry:
            old = prev_entries.get(info.key)
            if (
                not full
                and old is not None
                and info.etag is not None
                and old.etag == info.etag
                and old.size == info.size
                and present.get(old.sha256) == old.size
            ):
                with lock:
                    summary.skipped += 1
                return old
            got = src.get(info.key)
            sha = hashlib.sha256(got.data).hexdigest()
            entry = ManifestEntry(info.key, len(got.data), sha, got.etag)
            if present.get(sha) == entry.size:
                with lock:
                    summary.skipped += 1
                return entry
            dst.put(object_key(sha), got.data)
            with lock:
                present[sha] = entry.size
                summary.copied += 1
                summary.bytes_copied += entry.size
            return entry

        progress.start(len(infos), f"backup to {dst.url}")
        try:
            entries: list[ManifestEntry] = []
            for phase in (0, 1):
                batch = [i for i in infos if _phase(i.key) == phase]
                entries += _map(copy, batch, workers, progress)
        finally:
            progress.finish()
        manifest = Manifest(
            created_at,
            src.url,
            {e.key: e for e in entries},
            f"{MANIFESTS_PREFIX}/{stamp}.json",
        )
        summary.bytes_total = sum(e.size for e in entries)
        summary.removed = len(set(prev_entries) - set(manifest.entries))
        body = manifest.to_bytes()
        dst.put_if_absent(manifest.snapshot, body)
        try:
            dst.put_if_match(MANIFEST_KEY, body, prev_etag)
        except ConflictError:
            raise BackupError(
                f"{MANIFEST_KEY} in {dst.url} changed during the backup (another backup ran "
                f"despite the lock?); the snapshot {manifest.snapshot} is complete; rerun "
                "'marketlake backup' to make it the latest",
                key=MANIFEST_KEY,
            ) from None
        if keep is not None:
            summary.pruned_snapshots, summary.pruned_objects = _prune(dst, keep, workers)
    return summary


def prune_backup(
    target: ObjectStore | str | os.PathLike[str],
    keep: int,
    *,
    workers: int = 16,
    break_lock: bool = False,
) -> tuple[int, int]:
    """Keep the newest ``keep`` snapshots; delete older ones and objects none of them uses.

    Returns (snapshots deleted, objects deleted).
    """
    dst = _as_store(target)
    with _Lock(dst, "prune", break_lock):
        return _prune(dst, keep, workers)


def _prune(dst: ObjectStore, keep: int, workers: int) -> tuple[int, int]:
    if keep < 1:
        raise BackupError(f"keep={keep}: at least the latest snapshot must be kept")
    names = list_snapshots(dst)
    old, kept = names[:-keep], names[-keep:]
    used: set[str] = set()
    latest, _ = read_manifest(dst)
    used.update(e.sha256 for e in latest.entries.values())
    for name in kept:
        used.update(e.sha256 for e in read_manifest(dst, name)[0].entries.values())
    # snapshots go first: a crash in between leaves unreferenced objects, never dangling ones
    _map(lambda n: dst.delete(f"{MANIFESTS_PREFIX}/{n}.json"), old, workers)
    garbage = [i.key for i in dst.list(OBJECTS_PREFIX) if i.key.rsplit("/", 1)[-1] not in used]
    _map(dst.delete, garbage, workers)
    return len(old), len(garbage)


# --- verify ----------------------------------------------------------------------------------


def verify_backup(
    target: ObjectStore | str | os.PathLike[str],
    *,
    lake: ObjectStore | str | os.PathLike[str] | None = None,
    snapshot: str | None = None,
    workers: int = 16,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check that every object of a snapshot exists at ``target`` with its size and sha256.

    Every object is read and hashed. With ``lake``, also list which lake objects changed, were
    added or were deleted since the snapshot (informational; :attr:`VerifyReport.ok` ignores it).
    """
    dst = _as_store(target)
    try:
        manifest, _ = read_manifest(dst, snapshot)
    except (TransientStorageError, StoragePermissionError) as exc:
        raise BackupError(f"backup target {dst.url} is not reachable: {exc}") from exc
    report = VerifyReport(dst.url, _name(manifest), objects=len(manifest.entries))
    by_sha: dict[str, ManifestEntry] = {}
    for e in manifest.entries.values():
        by_sha.setdefault(e.sha256, e)
    bad: dict[str, str] = {}  # sha -> "missing" | "corrupt"
    lock = threading.Lock()

    def check(entry: ManifestEntry) -> None:
        try:
            data = dst.get(object_key(entry.sha256)).data
        except ObjectNotFoundError:
            with lock:
                bad[entry.sha256] = "missing"
            return
        ok = len(data) == entry.size and hashlib.sha256(data).hexdigest() == entry.sha256
        with lock:
            report.bytes_checked += len(data)
            if not ok:
                bad[entry.sha256] = "corrupt"

    progress = progress or NullProgress()
    progress.start(len(by_sha), f"verify {dst.url}")
    try:
        _map(check, by_sha.values(), workers, progress)
    finally:
        progress.finish()
    for key, e in sorted(manifest.entries.items()):
        state = bad.get(e.sha256)
        if state == "missing":
            report.missing.append(key)
        elif state == "corrupt":
            report.corrupt.append(key)
    if lake is not None:
        live = {i.key: i for i in lake_objects(_as_store(lake))}
        for key, e in sorted(manifest.entries.items()):
            info = live.get(key)
            if info is None:
                report.deleted_since.append(key)
            elif info.size != e.size or info.etag != e.etag:
                report.changed_since.append(key)
        report.new_since = sorted(set(live) - set(manifest.entries))
    return report


# --- restore ---------------------------------------------------------------------------------


def restore(
    backup_url: ObjectStore | str | os.PathLike[str],
    lake: ObjectStore | str | os.PathLike[str],
    *,
    snapshot: str | None = None,
    force: bool = False,
    catalog: str | os.PathLike[str] | None = None,
    workers: int = 16,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Restore a snapshot into ``lake`` and rebuild its catalog from ``_meta``.

    Every object's sha256 is checked before it is written. Data objects are written first, then
    ``_meta``, then ``_marketlake.json``, so an interrupted restore is never mistaken for a
    complete lake; rerun with ``force=True`` to finish it.

    Parameters
    ----------
    backup_url:
        The backup target (URL or store).
    lake:
        Destination lake (URL or store). Must be empty unless ``force``; with ``force`` objects
        that are not in the snapshot are deleted, so the lake equals the snapshot.
    snapshot:
        A dated snapshot name (see :func:`list_snapshots`); default the latest.
    catalog:
        Catalog file for the destination (default: the lake's default location).

    Raises
    ------
    BackupError
        No backup, a missing or corrupt backup object, or a non-empty destination without force.
    """
    from marketlake.catalog import Catalog
    from marketlake.query.lake import Lake, default_catalog_path
    from marketlake.schemas.datasets import list_datasets
    from marketlake.storage.format import ensure_marker

    src = _as_store(backup_url)
    dst = _as_store(lake)
    if _same_or_nested(dst, src) or _same_or_nested(src, dst):
        raise BackupError(f"cannot restore {src.url} into itself ({dst.url})")
    manifest, _ = read_manifest(src, snapshot)
    existing = lake_objects(dst)
    if existing and not force:
        raise BackupError(
            f"lake {dst.url} is not empty ({len(existing)} objects, e.g. {existing[0].key}); "
            "restore into an empty lake, or pass --force to replace its contents with the backup",
        )
    present = {i.key.rsplit("/", 1)[-1]: i.size for i in src.list(OBJECTS_PREFIX)}
    missing = [k for k, e in sorted(manifest.entries.items()) if present.get(e.sha256) != e.size]
    if missing:
        raise BackupError(
            f"backup {src.url} snapshot {_name(manifest)} is incomplete: {len(missing)} "
            f"object(s) missing or truncated (e.g. {', '.join(missing[:3])}); run "
            "'marketlake backup verify' or restore an older --snapshot",
        )
    summary = RestoreSummary(dst.url, _name(manifest), objects=len(manifest.entries))
    lock = threading.Lock()

    def put(entry: ManifestEntry) -> None:
        data = src.get(object_key(entry.sha256)).data
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BackupError(
                f"backup object for {entry.key} ({object_key(entry.sha256)} in {src.url}) is "
                "corrupt (sha256 mismatch); nothing more was restored; restore an older "
                "--snapshot",
                key=entry.key,
            )
        dst.put(entry.key, data)
        with lock:
            summary.bytes += len(data)

    order = sorted(
        manifest.entries.values(),
        key=lambda e: 2 if e.key == MARKER_KEY else 1 if _phase(e.key) == 0 else 0,
    )
    progress = progress or NullProgress()
    progress.start(len(order), f"restore into {dst.url}")
    try:
        for rank in (0, 1, 2):
            batch = [
                e
                for e in order
                if (2 if e.key == MARKER_KEY else 1 if _phase(e.key) == 0 else 0) == rank
            ]
            _map(put, batch, workers, progress)
    finally:
        progress.finish()
    stale = [i.key for i in existing if i.key not in manifest.entries]
    _map(dst.delete, stale, workers)
    summary.deleted = len(stale)
    marker = ensure_marker(dst, {d.name: d.layout for d in list_datasets()})
    cat = Catalog.open(os.fspath(catalog) if catalog is not None else default_catalog_path(dst))
    restored = Lake(dst, cat, marker)
    try:
        summary.partitions = restored.rebuild_catalog()
    finally:
        restored.catalog.close()
    return summary


def iter_problems(report: VerifyReport) -> Iterator[str]:
    """One line per missing or corrupt object of a verify report."""
    for key in report.missing:
        yield f"missing: {key}"
    for key in report.corrupt:
        yield f"corrupt: {key}"
