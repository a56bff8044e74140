"""The write path: merge rows into partitions with conditional writes, then update ``_meta``.

For one (dataset, ticker) and a batch of rows:

1. check the rows against the canonical schema (:func:`marketlake.schemas.conform.conform`);
   a bad batch raises before anything is read or written;
2. read ``_meta`` (remember its ETag);
3. for every partition the rows touch: read it (remember its ETag), merge (dedupe on the key,
   new wins, sort), encode deterministically; if the bytes equal what is stored, write nothing;
   otherwise write with a conditional PUT (create-if-absent / if-ETag-matches). A lost race
   (:class:`~marketlake.errors.ConflictError`) re-reads and re-merges, with backoff;
4. write ``_meta`` with a conditional PUT if anything in it changed (on a race: re-read it and
   re-check each of our partitions' current ETag).

Commit order is therefore data -> ``_meta``; the caller records the catalog afterwards. A crash
between steps leaves readable data and a stale ``_meta``, which the next write for that ticker
repairs (it rewrites ``_meta`` whenever an entry disagrees with the object).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketlake.catalog import utc_now_iso
from marketlake.errors import ConflictError, CorruptObjectError, DataValidationError
from marketlake.ingest.merge import merge_rows
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import Dataset
from marketlake.storage.layout import (
    SUB_VALUE,
    Layout,
    covered_month,
    is_history,
    newest_history,
    split_sub,
)
from marketlake.storage.meta import PartitionMeta, TickerMeta, meta_key
from marketlake.storage.parquet import (
    HISTORY_COMPRESSION,
    decode_table,
    encode_table,
    sha256_hex,
)
from marketlake.storage.store import GetResult, ObjectStore


@dataclass(frozen=True)
class WriteResult:
    """Outcome of one write for (dataset, ticker).

    ``rows_added`` are keys new to the lake, ``rows_updated`` existing keys whose values changed,
    ``row_count`` the ticker's total rows afterwards, ``objects_written`` how many data and meta
    objects were actually rewritten (0 on an idempotent re-run). ``touched_partitions`` are the
    ``_meta`` entries of every partition the rows fell in (what the catalog records, so a re-run
    also repairs a catalog that missed the previous commit).
    """

    dataset: str
    ticker: str
    rows_in: int
    rows_added: int
    rows_updated: int
    row_count: int
    objects_written: int
    meta: TickerMeta
    changed_partitions: list[PartitionMeta] = field(default_factory=list)
    touched_partitions: list[PartitionMeta] = field(default_factory=list)
    #: inclusive date range of the rows given to this write (UTC dates for timestamps)
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    #: the rows given, canonical schema (set by batches for cross-section companions)
    rows: pa.Table | None = None


def split_by_period(table: pa.Table, time_column: str, layout: Layout) -> dict[str, pa.Table]:
    """Group rows by partition period label (pure). With a sub-partition (``{exchange}``) in
    the layout, labels are ``"<value>:<period>"`` and each value gets its own objects."""
    sub = layout.sub_partition
    if sub is not None and table.num_rows:
        out: dict[str, pa.Table] = {}
        column = table.column(sub)
        for value in pc.unique(column).to_pylist():
            if not isinstance(value, str) or not SUB_VALUE.fullmatch(value):
                raise DataValidationError(
                    f"column {sub!r} value {value!r} cannot be part of an object key: use "
                    "lower-case letters, digits or _ (at most 32), e.g. 'binance'",
                    column=sub,
                )
            part = table.filter(pc.equal(column, value))
            for period, rows in _split_time(part, time_column, layout).items():
                out[f"{value}:{period}"] = rows
        return out
    return _split_time(table, time_column, layout)


def _split_time(table: pa.Table, time_column: str, layout: Layout) -> dict[str, pa.Table]:
    if layout.grain == "all" or table.num_rows == 0:
        return {"all": table} if table.num_rows else {}
    days = table.column(time_column).combine_chunks()
    if pa.types.is_timestamp(days.type):
        days = pc.cast(days, pa.date32())
    values = days.to_numpy(zero_copy_only=False).astype("datetime64[D]")
    unit = {"day": "D", "month": "M"}.get(layout.grain, "Y")
    buckets = values.astype(f"datetime64[{unit}]")
    uniq = np.unique(buckets)
    if len(uniq) == 1:
        return {layout.period_of(_to_date(uniq[0])): table}
    out: dict[str, pa.Table] = {}
    for b in uniq:
        idx = np.flatnonzero(buckets == b)
        out[layout.period_of(_to_date(b))] = table.take(pa.array(idx))
    return out


def _day(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    return value if isinstance(value, dt.date) else None


def _to_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


PREFETCH_THREADS = 32  # concurrent GETs of _meta + partitions on remote stores (shared by callers)


class _RerouteError(Exception):
    """A concurrent compaction changed where some of the rows belong: restart the write."""


def route_periods(groups: dict[str, pa.Table] | list[str], meta: TickerMeta) -> dict[str, str]:
    """Period -> compacted history label, for the periods (month/day labels) that ``meta``
    says were folded into a history object (pure). Periods that exist as their own partition,
    or lie after every history object, keep their own label."""
    newest = newest_history(meta.partitions)
    if not newest:
        return {}
    out: dict[str, str] = {}
    for label in groups:
        if label in meta.partitions or is_history(label):
            continue
        hit = newest.get(split_sub(label)[0])
        if hit is not None and covered_month(label) <= covered_month(hit):
            out[label] = hit
    return out


def _latest_compaction(parts: dict[str, PartitionMeta]) -> dict[str, PartitionMeta]:
    """Objects found by LIST after a crash may include an older history object or monthly
    objects already folded into the newest one: keep, per sub-partition, the newest history
    object and only the partitions after it (what the newest committed ``_meta`` listed)."""
    newest = newest_history(parts)
    if not newest:
        return parts
    out: dict[str, PartitionMeta] = {}
    for label, p in parts.items():
        keep = newest.get(split_sub(label)[0])
        if (
            keep is None
            or label == keep
            or (not is_history(label) and covered_month(label) > covered_month(keep))
        ):
            out[label] = p
    return out


class PartitionWriter:
    """Writes batches of rows for one lake store. Thread-safe (holds no mutable state).

    Parameters
    ----------
    store:
        The lake's object store.
    layouts:
        Dataset name -> validated layout.
    clock:
        Returns the current UTC time as ISO text (injectable for tests).
    max_conflicts:
        How many lost races to absorb per object before giving up with ConflictError.
    """

    def __init__(
        self,
        store: ObjectStore,
        layouts: dict[str, Layout],
        *,
        clock: Callable[[], str] = utc_now_iso,
        max_conflicts: int = 50,
    ) -> None:
        self.store = store
        self.layouts = layouts
        self.clock = clock
        self.max_conflicts = max_conflicts
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def write(
        self, dataset: Dataset, ticker: str, data: Any, *, source: str | None = None
    ) -> WriteResult:
        """Merge ``data`` (rows of one ticker) into the lake; see the module docstring.

        ``ticker`` must already be normalised. Raises SchemaError/DataValidationError before any
        I/O when ``data`` does not fit the dataset; storage errors propagate (nothing half-written:
        each object is replaced atomically).
        """
        table = conform(data, dataset, ticker)
        layout = self.layouts[dataset.name]
        mkey = meta_key(dataset.name, ticker)
        orphans: set[str] = set()
        for _ in range(self.max_conflicts + 1):
            try:
                result = self._write_once(dataset, ticker, table, layout, mkey, source, orphans)
            except _RerouteError:
                continue  # compaction moved our months into a history object: redo the merge
            for key in orphans - {p.key for p in result.meta.partitions.values()}:
                self.store.delete(key)  # written by a rerouted attempt, referenced by nothing
            return result
        raise ConflictError(
            f"{dataset.name} {ticker}: gave up after {self.max_conflicts} concurrent "
            "compactions; run the write again",
            key=mkey,
        )

    def _write_once(
        self,
        dataset: Dataset,
        ticker: str,
        table: pa.Table,
        layout: Layout,
        mkey: str,
        source: str | None,
        orphans: set[str],
    ) -> WriteResult:
        groups = split_by_period(table, dataset.time_column, layout)
        keys = {p: layout.key(dataset.name, dataset.version, ticker, p) for p in sorted(groups)}
        # GET _meta and every touched partition up front (concurrently on a remote store: one
        # round trip instead of 1 + partitions); a corrupt partition refuses the whole write
        # (CorruptObjectError naming the key) before anything is written
        meta_obj, firsts = self._read_all(dataset, mkey, keys)
        now = self.clock()
        meta, rebuilt = self._decode_meta(meta_obj, dataset, ticker, mkey, now)
        route = route_periods(groups, meta)
        if route:  # months folded into a compacted history object are merged into it
            groups, keys, firsts = self._reroute(dataset, ticker, layout, groups, firsts, route)
        added = updated = written = 0
        mine: dict[str, PartitionMeta] = {}
        for period, key in keys.items():
            pmeta, a, u, w = self._write_partition(
                dataset, key, period, groups[period], now, source, firsts[period]
            )
            if w:
                orphans.add(key)
            mine[period] = pmeta
            added, updated, written = added + a, updated + u, written + w
        changed = [p for p in mine.values() if not p.same_content(meta.partitions.get(p.period))]
        final_meta = meta
        if changed or meta_obj is None or rebuilt:
            final_meta, w = self._commit_meta(dataset, ticker, mkey, meta, meta_obj, mine, now)
            written += w
        return WriteResult(
            dataset=dataset.name,
            ticker=ticker,
            rows_in=table.num_rows,
            rows_added=added,
            rows_updated=updated,
            row_count=final_meta.row_count,
            objects_written=written,
            meta=final_meta,
            changed_partitions=changed,
            touched_partitions=[
                final_meta.partitions[p] for p in mine if p in final_meta.partitions
            ],
            first_day=_day(pc.min(table.column(dataset.time_column)).as_py()),
            last_day=_day(pc.max(table.column(dataset.time_column)).as_py()),
        )

    def _reroute(
        self,
        dataset: Dataset,
        ticker: str,
        layout: Layout,
        groups: dict[str, pa.Table],
        firsts: dict[str, tuple[GetResult | None, pa.Table | None]],
        route: dict[str, str],
    ) -> tuple[
        dict[str, pa.Table], dict[str, str], dict[str, tuple[GetResult | None, pa.Table | None]]
    ]:
        merged: dict[str, list[pa.Table]] = {}
        for period, rows in groups.items():
            merged.setdefault(route.get(period, period), []).append(rows)
        new_groups = {p: pa.concat_tables(ts) if len(ts) > 1 else ts[0] for p, ts in merged.items()}
        keys = {p: layout.key(dataset.name, dataset.version, ticker, p) for p in sorted(new_groups)}
        new_firsts = {
            p: firsts[p] if p in firsts else self._read_partition(dataset, keys[p])
            for p in new_groups
        }
        return new_groups, keys, new_firsts

    # -- partitions -------------------------------------------------------------------------

    def _write_partition(
        self,
        dataset: Dataset,
        key: str,
        period: str,
        rows: pa.Table,
        now: str,
        source: str | None,
        first: tuple[GetResult | None, pa.Table | None] | None = None,
    ) -> tuple[PartitionMeta, int, int, int]:
        for attempt in range(self.max_conflicts + 1):
            current, existing = (
                first if attempt == 0 and first else self._read_partition(dataset, key)
            )
            result = merge_rows(existing, rows, dataset.key)
            if current is not None and result.added == 0 and result.updated == 0:
                return (
                    self._pmeta(dataset, key, period, result.table, current, now, source),
                    0,
                    0,
                    0,
                )
            codec = HISTORY_COMPRESSION if is_history(period) else None
            data = encode_table(result.table, compression=codec)
            if current is not None and sha256_hex(data) == sha256_hex(current.data):
                return (
                    self._pmeta(dataset, key, period, result.table, current, now, source),
                    0,
                    0,
                    0,
                )
            try:
                etag = self.store.put_if_match(key, data, current.etag if current else None)
            except ConflictError:
                if attempt == self.max_conflicts:
                    raise
                time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.random())
                continue
            pmeta = self._pmeta(
                dataset, key, period, result.table, GetResult(data, etag), now, source
            )
            return pmeta, result.added, result.updated, 1
        raise AssertionError("unreachable")

    def _read_all(
        self, dataset: Dataset, mkey: str, keys: dict[str, str]
    ) -> tuple[GetResult | None, dict[str, tuple[GetResult | None, pa.Table | None]]]:
        """GET ``_meta`` and the partitions; remote stores fetch them all at once."""
        pool = self._prefetch_pool()
        if pool is None:
            meta_obj = self.store.get_or_none(mkey)
            return meta_obj, {p: self._read_partition(dataset, k) for p, k in keys.items()}
        meta_future = pool.submit(self.store.get_or_none, mkey)
        futures = {p: pool.submit(self.store.get_or_none, k) for p, k in keys.items()}
        firsts = {p: self._decoded(dataset, keys[p], f.result()) for p, f in futures.items()}
        return meta_future.result(), firsts

    def _prefetch_pool(self) -> ThreadPoolExecutor | None:
        """Threads for concurrent GETs; None for local and in-memory stores (microseconds)."""
        if self.store.is_local or self.store.url.startswith("memory://"):
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    PREFETCH_THREADS, thread_name_prefix="marketlake-prefetch"
                )
            return self._pool

    def close(self) -> None:
        """Stop the prefetch threads (remote stores)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _decoded(
        self, dataset: Dataset, key: str, current: GetResult | None
    ) -> tuple[GetResult | None, pa.Table | None]:
        if current is None:
            return None, None
        existing = decode_table(current.data, key=key)
        if existing.schema != dataset.schema:
            existing = conform(existing, dataset, key)
        return current, existing

    def _read_partition(
        self, dataset: Dataset, key: str
    ) -> tuple[GetResult | None, pa.Table | None]:
        """GET and decode one partition (CorruptObjectError when it cannot be decoded)."""
        return self._decoded(dataset, key, self.store.get_or_none(key))

    @staticmethod
    def _pmeta(
        dataset: Dataset,
        key: str,
        period: str,
        table: pa.Table,
        obj: GetResult,
        now: str,
        source: str | None,
    ) -> PartitionMeta:
        tcol = table.column(dataset.time_column)  # sorted: the key starts with the time column
        lo, hi = tcol[0].as_py(), tcol[-1].as_py()
        return PartitionMeta(
            period=period,
            key=key,
            rows=table.num_rows,
            min_date=lo.date() if isinstance(lo, dt.datetime) else lo,
            max_date=hi.date() if isinstance(hi, dt.datetime) else hi,
            bytes=len(obj.data),
            sha256=sha256_hex(obj.data),
            etag=obj.etag,
            updated_at=now,
            source=source,
        )

    # -- metadata ---------------------------------------------------------------------------

    def _decode_meta(
        self, obj: GetResult | None, dataset: Dataset, ticker: str, key: str, now: str
    ) -> tuple[TickerMeta, bool]:
        """Decode ``_meta``; a corrupt one is rebuilt from the data objects (the truth), and the
        flag tells the caller to write it back."""
        if obj is None:
            return TickerMeta(dataset.name, ticker, "", {}), False
        try:
            return TickerMeta.from_bytes(obj.data, key=key), False
        except CorruptObjectError:
            return self.rebuild_meta(dataset, ticker, now), True

    def rebuild_meta(self, dataset: Dataset, ticker: str, now: str | None = None) -> TickerMeta:
        """Describe every partition object of (dataset, ticker) found by LIST (maintenance: used
        when ``_meta`` is corrupt). Raises CorruptObjectError if a data object is corrupt too."""
        layout = self.layouts[dataset.name]
        now = now or self.clock()
        parts: dict[str, PartitionMeta] = {}
        for info in self.store.list(layout.list_prefix(dataset.name, dataset.version, ticker)):
            hit = layout.match(info.key)
            if hit is None or hit[0] != dataset.name or hit[2] != ticker:
                continue
            if hit[1] is not None and hit[1] != dataset.version:
                continue
            current, table = self._read_partition(dataset, info.key)
            if current is None or table is None or table.num_rows == 0:
                continue
            parts[hit[3]] = self._pmeta(dataset, info.key, hit[3], table, current, now, None)
        return TickerMeta(dataset.name, ticker, now, _latest_compaction(parts))

    def _commit_meta(
        self,
        dataset: Dataset,
        ticker: str,
        mkey: str,
        meta: TickerMeta,
        meta_obj: GetResult | None,
        mine: dict[str, PartitionMeta],
        now: str,
    ) -> tuple[TickerMeta, int]:
        for attempt in range(self.max_conflicts + 1):
            parts = dict(meta.partitions)
            for period, p in mine.items():
                old = parts.get(period)
                parts[period] = old if old is not None and p.same_content(old) else p
            new_meta = TickerMeta(dataset.name, ticker, now, parts)
            try:
                self.store.put_if_match(
                    mkey, new_meta.to_bytes(), meta_obj.etag if meta_obj else None
                )
                return new_meta, 1
            except ConflictError:
                if attempt == self.max_conflicts:
                    raise
                time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.random())
                meta_obj = self.store.get_or_none(mkey)
                meta, _ = self._decode_meta(meta_obj, dataset, ticker, mkey, now)
                gone = any(is_history(p) and p not in meta.partitions for p in mine)
                if gone or route_periods(list(mine), meta):
                    raise _RerouteError from None  # a compaction moved our months
                mine = self._refresh(dataset, mine)
        raise AssertionError("unreachable")

    def _refresh(
        self, dataset: Dataset, mine: dict[str, PartitionMeta]
    ) -> dict[str, PartitionMeta]:
        """After a lost ``_meta`` race: re-describe our partitions from what is stored now."""
        out = {}
        for period, p in mine.items():
            info = self.store.head(p.key)
            if info is not None and info.etag == p.etag:
                out[period] = p
                continue
            current = self.store.get_or_none(p.key)
            if current is None:
                continue
            table = decode_table(current.data, key=p.key)
            out[period] = self._pmeta(
                dataset, p.key, period, table, current, p.updated_at, p.source
            )
        return out
