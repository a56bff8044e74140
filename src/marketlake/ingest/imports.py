"""Import vendor files (saved API responses, bulk archives) through the normal parse and write path.

``import_files(lake, source, paths)`` asks the source to turn files into payloads
(:meth:`~marketlake.sources.base.Source.read_files`, no network), parses each payload with the
source's own pure :meth:`~marketlake.sources.base.Source.parse` and writes the tables with the
same :class:`~marketlake.ingest.writer.PartitionWriter` a batch uses, so the rows equal what the
API path writes for the same payload. The import is recorded in the catalog as a run of kind
``import`` with one item per (ticker, dataset) (several files of a ticker make one item); a file
that cannot be read or parsed fails alone, as an item naming the file. A second import of the
same files rewrites no object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from marketlake.catalog import RunItemRow, utc_now_iso
from marketlake.errors import MarketlakeError
from marketlake.ingest.batch import (
    FLUSH_EVERY,
    FLUSH_SECONDS,
    IngestTarget,
    RunSummary,
    _bind_lake,
    _describe,
    _in_process_io,
    _item,
    _new_run_id,
    _Target,
    _write_tables,
)
from marketlake.ingest.progress import NullProgress, Progress
from marketlake.ingest.writer import PartitionWriter, WriteResult
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import FilePayload, Source
from marketlake.sources.files import count_documents, expand_paths

__all__ = ["FILE_ITEM", "ImportSummary", "import_files"]

log = logging.getLogger("marketlake.ingest.items")

FILE_ITEM = "file"
"""``dataset`` of the run item of a file that could not be read (its ``ticker`` is the file)."""
LOCAL_WORKERS = 2  # parsing is CPU-bound: more threads only contend for the interpreter lock
REMOTE_WORKERS = 8  # S3/R2: overlap the round trips, but keep few parsed payloads in memory
MAX_ERRORS_PER_ITEM = 3


@dataclass
class ImportSummary(RunSummary):
    """A :class:`RunSummary` plus what was read: ``files`` payloads and ``skipped`` files."""

    files: int = 0
    skipped: int = 0


@dataclass
class _Result:
    items: list[RunItemRow]
    writes: list[WriteResult]


def import_files(
    lake: IngestTarget,
    source: Source,
    paths: Sequence[Path | str],
    datasets: Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
    run_id: str | None = None,
) -> ImportSummary:
    """Import vendor files of ``source`` into ``lake``.

    Parameters
    ----------
    lake:
        Target lake.
    source:
        The source whose file format to read (it must implement ``read_files``).
    paths:
        Files, directories (their ``.json``, ``.json.gz`` and ``.zip`` files, recursively) or zip
        archives; gzip-compressed files are read transparently.
    datasets:
        Only these datasets (default: every dataset the files hold).
    progress:
        Progress reporter (default: none).
    workers:
        Parse-and-write threads (default: 2 for a local lake, 8 for S3/R2).
    run_id:
        Use this id instead of a fresh one.

    Returns
    -------
    ImportSummary
        ``items_*`` count (ticker, dataset) items plus one item per unreadable file.

    Raises
    ------
    MarketlakeError
        Before anything is written: a path does not exist, the source cannot import files, or a
        dataset is unknown or not provided by the source.
    """
    t0 = time.perf_counter()
    wanted: tuple[str, ...] | None = None
    if datasets is not None:
        wanted = tuple(get_dataset(d).name for d in dict.fromkeys(datasets))
        unsupported = [d for d in wanted if d not in source.datasets]
        if unsupported:
            raise MarketlakeError(
                f"source {source.name!r} does not provide {unsupported}; it provides "
                f"{list(source.datasets)}",
                source=source.name,
            )
    files = expand_paths(paths)
    _bind_lake(source, lake)
    payloads = source.read_files(files)  # the default hook raises here: cannot import files
    run_id = run_id or _new_run_id()
    params = {
        "source": source.name,
        "kind": "import",
        "paths": [str(p) for p in paths],
        "datasets": list(wanted) if wanted is not None else None,
    }
    lake.catalog.create_run(run_id, "import", source.name, params, [])
    if workers is None:
        workers = LOCAL_WORKERS if _in_process_io(lake.writer.store) else REMOTE_WORKERS
    workers = max(1, workers)
    reporter = progress or NullProgress()
    reporter.start(count_documents(files), f"import {source.name}")
    summary = ImportSummary(run_id, "running", 0, 0, 0, 0, 0, 0, 0, 0.0)
    merged: dict[tuple[str, str], RunItemRow] = {}
    errors: dict[tuple[str, str], list[str]] = {}
    dirty: set[tuple[str, str]] = set()
    pending_writes: list[WriteResult] = []
    last_flush = time.monotonic()
    target = _Target(PartitionWriter(lake.writer.store.with_fsync(False), lake.writer.layouts))

    def flush() -> None:
        # commit order: data and _meta of these items are written; one sync makes them durable
        nonlocal last_flush
        if pending_writes:
            target.writer.store.sync()
            lake.record(pending_writes, source=source.name)
        if dirty:
            lake.catalog.record_items(run_id, [merged[k] for k in sorted(dirty)])
        pending_writes.clear()
        dirty.clear()
        last_flush = time.monotonic()

    def take(result: _Result) -> None:
        for item in result.items:
            key = (item.ticker, item.dataset)
            merged[key] = _merge(merged.get(key), item, errors.setdefault(key, []))
            dirty.add(key)
        pending_writes.extend(result.writes)
        summary.objects_written += sum(w.objects_written for w in result.writes)
        failed = any(i.status == "failed" for i in result.items)
        reporter.advance(1, failed=int(failed))

    try:
        for result in _run(target, source, payloads, wanted, run_id, workers, summary):
            take(result)
            if len(dirty) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                flush()
    finally:
        try:
            flush()
        finally:
            reporter.finish()
            target.writer.close()
    for item in merged.values():
        summary.items_total += 1
        if item.status == "completed":
            summary.items_completed += 1
        else:
            summary.items_failed += 1
            summary.failures.append(item)
        summary.rows_fetched += item.rows_fetched
        summary.rows_added += item.rows_added
        summary.rows_updated += item.rows_updated
    summary.failures.sort(key=lambda i: (i.ticker, i.dataset))
    if summary.skipped:
        log.warning("%s import: %d file(s) skipped (see the log)", source.name, summary.skipped)
    status = "failed" if summary.items_failed else "completed"
    lake.catalog.finish_run(run_id, status)
    summary.status = status
    summary.seconds = time.perf_counter() - t0
    return summary


def _run(
    target: _Target,
    source: Source,
    payloads: Iterator[FilePayload],
    wanted: tuple[str, ...] | None,
    run_id: str,
    workers: int,
    summary: ImportSummary,
) -> Iterator[_Result]:
    """Read payloads in this thread (lazily) and parse + write them on ``workers`` threads."""
    with ThreadPoolExecutor(workers, thread_name_prefix="marketlake-import") as pool:
        futures: set[Future[_Result]] = set()
        for payload in payloads:
            if payload.request is None and payload.error is None:
                summary.skipped += 1
                log.info("%s: skipped: %s", payload.origin, payload.note or "")
                yield _Result([], [])  # counts as read for the progress bar
                continue
            summary.files += 1
            if payload.request is not None and wanted is not None:
                keep = tuple(d for d in payload.request.datasets if d in wanted)
                if not keep:
                    yield _Result([], [])
                    continue
                payload = replace(payload, request=replace(payload.request, datasets=keep))
            futures.add(pool.submit(_import_one, target, source, payload, run_id))
            if len(futures) >= workers + 2:  # bounded: parsed payloads can be large
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


def _import_one(target: _Target, source: Source, payload: FilePayload, run_id: str) -> _Result:
    """Parse one payload and write its tables; never raises (failures become items)."""
    started = utc_now_iso()
    req = payload.request
    if req is None:
        message = payload.error or f"{payload.origin}: cannot import"
        log.warning("%s", message)
        return _Result(
            [_item(run_id, payload.origin, FILE_ITEM, "failed", 0, 0, 0, 0, message, started)], []
        )
    try:
        tables = source.parse(req, payload.raw)
    except Exception as exc:  # one file's failure must not stop the import
        message = f"{payload.origin}: {_describe(exc)}"
        log.warning("%s: parse failed: %s", req.ticker, message)
        return _Result(
            [
                _item(run_id, req.ticker, d, "failed", 0, 0, 0, 0, message, started)
                for d in req.datasets
            ],
            [],
        )
    items, writes = _write_tables(
        target,
        source.name,
        run_id,
        req.ticker,
        req.datasets,
        tables,
        started,
        where=f"in {payload.origin}",
        error_prefix=f"{payload.origin}: ",
    )
    return _Result(items, writes)


def _merge(old: RunItemRow | None, new: RunItemRow, errors: list[str]) -> RunItemRow:
    """One item from several files of the same (ticker, dataset): failed if any file failed."""
    if new.error:
        errors.append(new.error)
    if old is None:
        return new
    failed = "failed" if "failed" in (old.status, new.status) else "completed"
    error = None
    if errors:
        error = "; ".join(errors[:MAX_ERRORS_PER_ITEM])
        if len(errors) > MAX_ERRORS_PER_ITEM:
            error += f" (and {len(errors) - MAX_ERRORS_PER_ITEM} more)"
    return replace(
        new,
        status=failed,
        rows_fetched=old.rows_fetched + new.rows_fetched,
        rows_added=old.rows_added + new.rows_added,
        rows_updated=old.rows_updated + new.rows_updated,
        row_count=max(old.row_count, new.row_count),
        error=error,
        started_at=min(filter(None, (old.started_at, new.started_at)), default=None),
    )
