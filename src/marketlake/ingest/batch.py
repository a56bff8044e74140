"""Batch ingest: tickers x datasets from a source into the lake, resumable and idempotent.

One *item* is a (ticker, dataset) pair. Per ticker a worker fetches once from the source (the only
I/O stage of the source), parses, and writes each dataset (data -> ``_meta``); the main thread
records results in the catalog in chunks (commit order data -> ``_meta`` -> catalog). A failed
item never stops the others; ``resume_batch`` re-runs only the items of a run that are not
completed. A second run of the same batch rewrites no object.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from marketlake.catalog import Catalog, RunItemRow, utc_now_iso
from marketlake.errors import MarketlakeError, is_retryable
from marketlake.ingest.derive import DERIVED_DATASETS, DeriveSource, derive_tables
from marketlake.ingest.progress import NullProgress, Progress
from marketlake.ingest.writer import PartitionWriter, WriteResult
from marketlake.ingest.xsection import MAX_BATCH_DAYS, XS_DATASETS, update_from_batch
from marketlake.schemas.datasets import get_dataset
from marketlake.schemas.tickers import normalize_tickers
from marketlake.sources.base import Source, SourceRequest
from marketlake.sources.registry import get_source
from marketlake.storage.meta import TickerMeta
from marketlake.storage.reader import PartitionReader

log = logging.getLogger("marketlake.ingest.items")

DEFAULT_WORKERS = 16  # local and memory stores
REMOTE_WORKERS = 48  # S3/R2: each item waits on ~3 round trips, so more items are kept in flight
FLUSH_EVERY = 1000
FLUSH_SECONDS = 1.0


class IngestTarget(Protocol):
    """What a batch needs from a lake (:class:`marketlake.Lake` provides it)."""

    writer: PartitionWriter
    catalog: Catalog

    def record(
        self,
        results: Sequence[WriteResult],
        *,
        source: str | None = None,
        advance_progress: bool = True,
    ) -> None: ...

    def meta(self, ticker: str, dataset: str) -> TickerMeta | None: ...


@dataclass
class RunSummary:
    """What a batch did. ``objects_written`` is 0 for an idempotent re-run."""

    run_id: str
    status: str
    items_total: int
    items_completed: int
    items_failed: int
    rows_fetched: int
    rows_added: int
    rows_updated: int
    objects_written: int
    seconds: float
    failures: list[RunItemRow] = field(default_factory=list)


@dataclass
class _Outcome:
    items: list[RunItemRow]
    writes: list[WriteResult]


def run_batch(
    lake: IngestTarget,
    source: Source,
    tickers: Sequence[str],
    datasets: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    kind: str = "daily",
    workers: int | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    fetch_retries: int = 3,
    processes: int | None = None,
    advance_watermark: bool = True,
) -> RunSummary:
    """Ingest ``tickers`` x ``datasets`` for the inclusive session range ``[start, end]``.

    Parameters
    ----------
    lake:
        Target lake.
    source:
        Data source (see :mod:`marketlake.sources`).
    tickers, datasets:
        What to collect; tickers are normalised, datasets validated against the registry and the
        source's capabilities.
    start, end:
        Inclusive exchange session dates (no time zone).
    kind:
        ``"daily"`` or ``"backfill"`` (recorded with the run).
    workers:
        Size of the worker pool (threads; split across processes when there are several).
        Default (None): ``DEFAULT_WORKERS`` (16) for local and memory lakes, ``REMOTE_WORKERS``
        (48) for S3/R2 lakes, where every item waits on network round trips.
    processes:
        Worker processes. Default: one per core when the batch has at least
        ``MIN_ITEMS_PER_PROCESS`` items per process and the store is not ``memory://``, else 1
        (threads only).
    progress:
        Progress reporter (default: none).
    run_id:
        Use this id instead of a fresh one.
    fetch_retries:
        Attempts for retryable source errors (jittered exponential backoff).
    advance_watermark:
        False (``marketlake backfill``) leaves the daily watermark (collection progress) where
        it is; stored with the run so a resume does the same.

    Returns
    -------
    RunSummary
    """
    symbols = normalize_tickers(list(tickers))
    names = [get_dataset(d).name for d in dict.fromkeys(datasets)]
    unsupported = [d for d in names if d not in source.datasets and d not in DERIVED_DATASETS]
    if unsupported:
        raise MarketlakeError(
            f"source {source.name!r} does not provide {unsupported}; it provides "
            f"{list(source.datasets)} (and marketlake derives {list(DERIVED_DATASETS)})",
            source=source.name,
        )
    if end < start:
        raise MarketlakeError(f"end {end} is before start {start}")
    run_id = run_id or _new_run_id()
    items = [(t, d) for t in symbols for d in names]
    params = {
        "source": source.name,
        "datasets": names,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "kind": kind,
        "advance_watermark": advance_watermark,
        "full": bool(getattr(source, "full", False)),
    }
    lake.catalog.create_run(run_id, kind, source.name, params, items)
    return _execute(
        lake,
        source,
        run_id,
        items,
        start,
        end,
        workers,
        progress,
        fetch_retries,
        processes,
        advance_watermark=advance_watermark,
    )


def resume_batch(
    lake: IngestTarget,
    run_id: str,
    *,
    source: Source | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    fetch_retries: int = 3,
    processes: int | None = None,
) -> RunSummary:
    """Re-run only the items of ``run_id`` that did not complete (failed, pending, running)."""
    run = lake.catalog.get_run(run_id)
    params = run.params
    if run.kind == "import":
        raise MarketlakeError(
            f"run {run_id} imported files and cannot be resumed; run the same 'marketlake import' "
            "again (an import is idempotent: files already written change nothing)"
        )
    if source is not None:
        src = source
    elif params["source"] == DeriveSource.name:
        src = DeriveSource(
            lake.writer.store.open_url,
            {k: v.template for k, v in lake.writer.layouts.items()},
            full=bool(params.get("full", False)),
        )
    else:
        src = get_source(str(params["source"]))
    start = dt.date.fromisoformat(str(params["start"]))
    end = dt.date.fromisoformat(str(params["end"]))
    items = lake.catalog.unfinished_items(run_id)
    lake.catalog.reset_items(run_id, items)
    return _execute(
        lake,
        src,
        run_id,
        items,
        start,
        end,
        workers,
        progress,
        fetch_retries,
        processes,
        advance_watermark=bool(params.get("advance_watermark", True)),
    )


def _new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def _execute(
    lake: IngestTarget,
    source: Source,
    run_id: str,
    items: list[tuple[str, str]],
    start: dt.date,
    end: dt.date,
    workers: int | None,
    progress: Progress | None,
    fetch_retries: int,
    processes: int | None = None,
    *,
    advance_watermark: bool = True,
) -> RunSummary:
    t0 = time.perf_counter()
    _bind_lake(source, lake)
    if workers is None:
        workers = DEFAULT_WORKERS if _in_process_io(lake.writer.store) else REMOTE_WORKERS
    reporter = progress or NullProgress()
    by_ticker: dict[str, list[str]] = {}
    for ticker, dataset in items:
        by_ticker.setdefault(ticker, []).append(dataset)
    requests = [SourceRequest(t, tuple(ds), start, end) for t, ds in by_ticker.items()]
    reporter.start(len(items), f"{source.name} {start}..{end}")
    summary = RunSummary(run_id, "running", len(items), 0, 0, 0, 0, 0, 0, 0.0)
    pending_items: list[RunItemRow] = []
    pending_writes: list[WriteResult] = []
    xs_writes: list[WriteResult] = []  # rows for the cross-section companions (short batches)
    last_flush = time.monotonic()

    def flush() -> None:
        # commit order: the objects and _meta of these items are already written
        nonlocal last_flush
        if pending_writes:
            xs_writes.extend(w for w in pending_writes if w.rows is not None)
            target.writer.store.sync()
            lake.record(pending_writes, source=source.name, advance_progress=advance_watermark)
        if pending_items:
            lake.catalog.record_items(run_id, pending_items)
        pending_items.clear()
        pending_writes.clear()
        last_flush = time.monotonic()

    # Objects are written without a per-object fsync; one syncfs before each catalog flush
    # makes them durable first (group commit), so the commit order data -> _meta -> catalog holds.
    writer = PartitionWriter(lake.writer.store.with_fsync(False), lake.writer.layouts)
    cache = getattr(getattr(lake, "reader", None), "cache", None)
    target = _Target(writer, PartitionReader(writer.store, writer.layouts, cache=cache))
    nproc = _choose_processes(lake, source, len(items), processes)
    if nproc > 1:
        outcomes = _run_processes(lake, source, requests, fetch_retries, run_id, nproc, workers)
    else:
        store = lake.writer.store
        threads = _threads_per_process(_in_process_io(store), source, workers, 1)
        outcomes = _run_threads(target, source, requests, fetch_retries, run_id, threads)
    try:
        for outcome in outcomes:
            _tally(summary, outcome)
            pending_items.extend(outcome.items)
            pending_writes.extend(outcome.writes)
            failed = sum(1 for i in outcome.items if i.status == "failed")
            reporter.advance(len(outcome.items), failed=failed)
            if len(pending_items) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                flush()
    finally:
        try:
            flush()
        finally:
            reporter.finish()
            target.writer.close()
    if xs_writes and hasattr(lake, "cross_section"):
        try:
            update_from_batch(lake, xs_writes)
        except MarketlakeError as exc:  # the data is committed; companions rebuild on first use
            log.warning("cross-section companions not updated: %s", exc)
    status = "failed" if summary.items_failed else "completed"
    lake.catalog.finish_run(run_id, status)
    summary.status = status
    summary.seconds = time.perf_counter() - t0
    return summary


def _bind_lake(source: Source, lake: Any) -> None:
    """Optional source hook: a source whose rows accumulate over stored ones (reference
    listings) reads them from the lake in its fetch stage."""
    bind = getattr(source, "bind_lake", None)
    if callable(bind):
        bind(lake)


MIN_ITEMS_PER_PROCESS = 3000  # below this, spawning worker processes costs more than it saves
CHUNK_TICKERS = 100


def _choose_processes(
    lake: IngestTarget, source: Source, n_items: int, processes: int | None
) -> int:
    """Worker processes for a batch: one per core for large batches on a shareable store."""
    if lake.writer.store.url.startswith("memory://"):
        return 1  # an in-process store cannot be shared with other processes
    if type(source).__module__ == "__main__":
        return 1  # a spawned process cannot import a source class defined in a script/notebook
    if getattr(source, "network", False):
        return 1  # network sources wait on rate limits held per client: one process keeps them
    if processes is not None:
        return max(1, processes)
    cores = os.cpu_count() or 1
    return max(1, min(cores, n_items // MIN_ITEMS_PER_PROCESS))


LOCAL_CPU_THREADS = 2  # per process, local store + offline source: more threads only contend


def _in_process_io(store: Any) -> bool:
    """True for stores whose I/O is a cheap syscall or memory copy (local disk, memory://)."""
    return bool(store.is_local or store.url.startswith("memory://"))


def _threads_per_process(local_store: bool, source: Source, workers: int, nproc: int) -> int:
    """Threads in each worker process: I/O-bound work (network source or remote store) gets its
    share of ``workers``; CPU-bound work (local store, offline source) gets two, since extra
    threads only fight over the interpreter lock (measured: 2 per process is fastest here)."""
    share = max(1, workers // nproc)
    if local_store and not getattr(source, "network", False):
        return min(share, LOCAL_CPU_THREADS)
    return share


def _run_threads(
    lake: _Target,
    source: Source,
    requests: list[SourceRequest],
    retries: int,
    run_id: str,
    workers: int,
) -> Iterator[_Outcome]:
    workers = max(1, workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="marketlake-ingest") as pool:
        futures: set[Future[_Outcome]] = set()
        queue = iter(requests)
        exhausted = False
        while True:
            while not exhausted and len(futures) < workers * 4:
                req = next(queue, None)
                if req is None:
                    exhausted = True
                    break
                futures.add(pool.submit(_process, lake, source, req, retries, run_id))
            if not futures:
                return
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


# --- worker processes ------------------------------------------------------------------------
# Python threads share one interpreter lock, so on a multi-core machine a large batch runs in
# worker processes (spawned: no inherited locks or runtimes). Each opens the store by URL, writes
# data and _meta exactly as the threaded path does, and returns per-item results; the parent alone
# writes the catalog.


class _Target:
    """What a worker needs: a writer (fsync deferred to a group commit) and _meta reads."""

    def __init__(self, writer: PartitionWriter, reader: PartitionReader | None = None) -> None:
        self.writer = writer
        self.reader = reader or PartitionReader(writer.store, writer.layouts)

    @classmethod
    def open(cls, url: str, layouts: dict[str, str]) -> _Target:
        from marketlake.storage.layout import Layout
        from marketlake.storage.store import open_store

        return cls(
            PartitionWriter(
                open_store(url, fsync=False), {k: Layout.parse(v) for k, v in layouts.items()}
            )
        )

    def meta(self, ticker: str, dataset: str) -> TickerMeta | None:
        from marketlake.storage.meta import meta_key

        key = meta_key(dataset, ticker)
        got = self.writer.store.get_or_none(key)
        return TickerMeta.from_bytes(got.data, key=key) if got else None


_WORKER: tuple[_Target, Source] | None = None


def _worker_init(url: str, layouts: dict[str, str], source: Source) -> None:
    global _WORKER
    _WORKER = (_Target.open(url, layouts), source)


def _worker_chunk(
    requests: list[SourceRequest], retries: int, run_id: str, threads: int
) -> list[_Outcome]:
    assert _WORKER is not None, "worker process not initialised"
    target, source = _WORKER
    out = list(_run_threads(target, source, requests, retries, run_id, threads))
    target.writer.store.sync()
    return out


def _run_processes(
    lake: IngestTarget,
    source: Source,
    requests: list[SourceRequest],
    retries: int,
    run_id: str,
    nproc: int,
    workers: int,
) -> Iterator[_Outcome]:
    import multiprocessing

    store = lake.writer.store
    layouts = {k: v.template for k, v in lake.writer.layouts.items()}
    threads = _threads_per_process(_in_process_io(store), source, workers, nproc)
    chunks = [requests[i : i + CHUNK_TICKERS] for i in range(0, len(requests), CHUNK_TICKERS)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        nproc,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(store.open_url, layouts, source),
    ) as pool:
        futures = {pool.submit(_worker_chunk, c, retries, run_id, threads): c for c in chunks}
        for fut in as_completed(futures):
            try:
                yield from fut.result()
            except Exception as exc:  # a crashed worker: its items fail, the others go on
                message = f"worker process failed: {_describe(exc)}"
                for req in futures[fut]:
                    yield _Outcome(
                        [
                            _item(
                                run_id, req.ticker, d, "failed", 0, 0, 0, 0, message, utc_now_iso()
                            )
                            for d in req.datasets
                        ],
                        [],
                    )


def _tally(summary: RunSummary, outcome: _Outcome) -> None:
    for item in outcome.items:
        if item.status == "completed":
            summary.items_completed += 1
        else:
            summary.items_failed += 1
            summary.failures.append(item)
        summary.rows_fetched += item.rows_fetched
        summary.rows_added += item.rows_added
        summary.rows_updated += item.rows_updated
    summary.objects_written += sum(w.objects_written for w in outcome.writes)


RETRY_BACKOFF = 0.5  # seconds before the first fetch retry; doubles each time, jittered


def _fetch(source: Source, req: SourceRequest, retries: int) -> dict[str, pa.Table]:
    delay = RETRY_BACKOFF
    for attempt in range(1, retries + 1):
        try:
            return source.parse(req, source.fetch(req))
        except MarketlakeError as exc:
            if not is_retryable(exc) or attempt == retries:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay *= 2
    raise AssertionError("unreachable")


def _process(
    lake: _Target, source: Source, req: SourceRequest, retries: int, run_id: str
) -> _Outcome:
    started = utc_now_iso()
    items: list[RunItemRow] = []
    writes: list[WriteResult] = []
    own = tuple(d for d in req.datasets if d in source.datasets)
    derived = tuple(d for d in req.datasets if d not in source.datasets)
    try:
        tables = _fetch(source, dataclasses.replace(req, datasets=own), retries) if own else {}
    except Exception as exc:  # one ticker's failure must not stop the batch
        message = _describe(exc)
        log.warning("%s: fetch failed: %s", req.ticker, message)
        finished = utc_now_iso()
        for d in req.datasets:
            items.append(
                RunItemRow(
                    run_id=run_id,
                    ticker=req.ticker,
                    dataset=d,
                    status="failed",
                    rows_fetched=0,
                    rows_added=0,
                    rows_updated=0,
                    row_count=0,
                    error=message,
                    started_at=started,
                    finished_at=finished,
                )
            )
        return _Outcome(items, writes)
    items, writes = _write_tables(
        lake,
        source.name,
        run_id,
        req.ticker,
        own,
        tables,
        started,
        where=f"from {source.name} for {req.start}..{req.end}",
        keep_rows=(req.end - req.start).days < MAX_BATCH_DAYS,
    )
    if derived:  # after the inputs landed: signals from the lake's prices/actions/fundamentals
        d_items, d_writes = _derive_items(lake, run_id, req, derived, items, started)
        items += d_items
        writes += d_writes
    return _Outcome(items, writes)


def _derive_items(
    lake: _Target,
    run_id: str,
    req: SourceRequest,
    derived: tuple[str, ...],
    source_items: list[RunItemRow],
    started: str,
) -> tuple[list[RunItemRow], list[WriteResult]]:
    """Derive ``derived`` for ``req.ticker`` from what is in the lake now (rows from
    ``req.start`` on; the full history when older inputs changed)."""
    bad = [i for i in source_items if i.status == "failed" and i.dataset == "prices"]
    if bad:
        message = f"not derived: its prices failed ({bad[0].error})"
        return [
            _item(run_id, req.ticker, d, "failed", 0, 0, 0, 0, message, started) for d in derived
        ], []
    try:
        tables = derive_tables(lake.reader, req.ticker, derived, req.start)
    except Exception as exc:
        message = f"derive failed: {_describe(exc)}"
        log.warning("%s: %s", req.ticker, message)
        return [
            _item(run_id, req.ticker, d, "failed", 0, 0, 0, 0, message, started) for d in derived
        ], []
    return _write_tables(
        lake,
        DeriveSource.name,
        run_id,
        req.ticker,
        derived,
        tables,
        started,
        where=f"derived from {req.start}",
        keep_rows=(req.end - req.start).days < MAX_BATCH_DAYS,
    )


def _write_tables(
    target: Any,
    source_name: str,
    run_id: str,
    ticker: str,
    datasets: Sequence[str],
    tables: dict[str, pa.Table],
    started: str,
    *,
    where: str,
    error_prefix: str = "",
    keep_rows: bool = False,
) -> tuple[list[RunItemRow], list[WriteResult]]:
    """Write one ticker's parsed tables, one catalog item per dataset (shared by batches and
    imports). A dataset without rows completes with the stored row count and writes nothing;
    a failed write fails only its own item. ``where`` says where the rows came from (logs)."""
    items: list[RunItemRow] = []
    writes: list[WriteResult] = []
    for d in datasets:
        table = tables.get(d)
        fetched = table.num_rows if table is not None else 0
        try:
            if table is None or fetched == 0:
                log.info("%s %s: no rows %s", d, ticker, where)
                meta = target.meta(ticker, d)
                count = meta.row_count if meta else 0
                items.append(_item(run_id, ticker, d, "completed", 0, 0, 0, count, None, started))
                continue
            result = target.writer.write(get_dataset(d), ticker, table, source=source_name)
            if keep_rows and d in XS_DATASETS and (result.rows_added or result.rows_updated):
                result = dataclasses.replace(result, rows=table)
            writes.append(result)
            log.info(
                "%s %s: %d rows %s, %d added, %d updated, %d rows total",
                d,
                ticker,
                fetched,
                where,
                result.rows_added,
                result.rows_updated,
                result.row_count,
            )
            items.append(
                _item(
                    run_id,
                    ticker,
                    d,
                    "completed",
                    fetched,
                    result.rows_added,
                    result.rows_updated,
                    result.row_count,
                    None,
                    started,
                )
            )
        except Exception as exc:
            message = f"{error_prefix}{_describe(exc)}"
            log.warning("%s %s: failed: %s", d, ticker, message)
            items.append(_item(run_id, ticker, d, "failed", fetched, 0, 0, 0, message, started))
    return items, writes


def _item(
    run_id: str,
    ticker: str,
    dataset: str,
    status: str,
    fetched: int,
    added: int,
    updated: int,
    count: int,
    error: str | None,
    started: str,
) -> RunItemRow:
    return RunItemRow(
        run_id=run_id,
        ticker=ticker,
        dataset=dataset,
        status=status,
        rows_fetched=fetched,
        rows_added=added,
        rows_updated=updated,
        row_count=count,
        error=error,
        started_at=started,
        finished_at=utc_now_iso(),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MarketlakeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
