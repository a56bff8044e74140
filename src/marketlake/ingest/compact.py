"""Compaction: fold a ticker's closed monthly (or daily) partitions into one history object.

A long read of monthly files pays a fixed decode cost per file (footer, schema, per-column
codecs: ~0.2 ms each with pyarrow, whatever the row count), so five years of daily bars cost 60
files. ``compact`` folds every partition of a month before ``before`` (default: the current UTC
month, so the spec's monthly key of the current period stays where it is) into one object per
(dataset, ticker[, exchange]):

    prices/v1/AAPL/history-upto-2026-10/data.parquet      label "upto-2026-10"

and afterwards a five-year read is ``_meta`` + history + the current month. Readers choose objects
from ``_meta`` (which lists each partition's date range), never from key guesses, so compaction
is invisible to them: same rows before and after. Each round writes a *new* history key (the
label carries the last month covered), so a reader holding the previous ``_meta`` still finds
the objects it lists until the round commits.

Commit order per ticker: (1) write the new history object; (2) replace the folded partitions
by it in ``_meta`` with a conditional PUT -- a concurrent write makes it fail, and the ticker is
retried from the start; (3) delete the folded monthly objects and the previous history object.
A crash after (1) leaves an unreferenced object that the next round overwrites; after (2),
leftover monthly objects that ``_meta`` no longer lists (``rebuild_meta`` keeps the newest
history round). Writers route rows of folded months into the history object
(:func:`marketlake.ingest.writer.route_periods`) and restart when a compaction commits under
them, so no write is lost. A second run with nothing new to fold writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from marketlake.catalog import utc_now_iso
from marketlake.errors import ConflictError, MarketlakeError
from marketlake.ingest.merge import merge_rows
from marketlake.ingest.writer import PartitionWriter
from marketlake.schemas.datasets import Dataset
from marketlake.storage.layout import (
    Layout,
    covered_month,
    history_label,
    is_history,
    split_sub,
)
from marketlake.storage.meta import PartitionMeta, TickerMeta, meta_key
from marketlake.storage.parquet import HISTORY_COMPRESSION, decode_table, encode_table
from marketlake.storage.store import GetResult, ObjectStore

log = logging.getLogger("marketlake.compact")

MAX_ATTEMPTS = 20


@dataclass
class CompactResult:
    """What compacting one (dataset, ticker) did. ``removed`` are the ``_meta`` entries folded
    away (monthly partitions and the previous history object), ``added`` the new history
    partitions; both empty when there was nothing to fold."""

    dataset: str
    ticker: str
    removed: list[PartitionMeta] = field(default_factory=list)
    added: list[PartitionMeta] = field(default_factory=list)
    meta: TickerMeta | None = None
    objects_written: int = 0
    objects_deleted: int = 0


def month_label(day: dt.date) -> str:
    """``YYYY-MM`` of ``day``."""
    return f"{day.year:04d}-{day.month:02d}"


def _plan(meta: TickerMeta, before: str) -> dict[str | None, list[PartitionMeta]]:
    """Per sub-partition: the partitions to fold (closed months + the current history)."""
    groups: dict[str | None, list[PartitionMeta]] = {}
    for label, p in meta.partitions.items():
        sub, period = split_sub(label)
        if not is_history(label) and period[:7] < before:
            groups.setdefault(sub, []).append(p)
    for label, p in meta.partitions.items():  # the previous round's history joins its group
        sub, _ = split_sub(label)
        if is_history(label) and sub in groups:
            groups[sub].append(p)
    return groups


def compact_ticker(
    store: ObjectStore,
    layout: Layout,
    ds: Dataset,
    ticker: str,
    *,
    before: str,
    clock: Callable[[], str] = utc_now_iso,
    dry_run: bool = False,
) -> CompactResult:
    """Fold the closed partitions of (ds, ticker) -- months before ``before`` (``YYYY-MM``) --
    into one history object per sub-partition (see the module docstring)."""
    mkey = meta_key(ds.name, ticker)
    if not layout.compactable:
        raise MarketlakeError(
            f"dataset {ds.name}: layout {layout.template!r} has no monthly or daily folders to "
            "compact",
            dataset=ds.name,
        )
    for attempt in range(MAX_ATTEMPTS):
        try:
            done = _attempt(store, layout, ds, ticker, mkey, before, clock, dry_run)
        except ConflictError:  # a write or another compaction committed first: start over
            time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.random())
            continue
        return done
    raise ConflictError(
        f"compact {ds.name} {ticker}: _meta kept changing ({MAX_ATTEMPTS} attempts); run "
        "'marketlake compact' again when the writes settle",
        key=mkey,
    )


def _attempt(
    store: ObjectStore,
    layout: Layout,
    ds: Dataset,
    ticker: str,
    mkey: str,
    before: str,
    clock: Callable[[], str],
    dry_run: bool,
) -> CompactResult:
    result = CompactResult(ds.name, ticker)
    meta_obj = store.get_or_none(mkey)
    if meta_obj is None:
        return result
    meta = TickerMeta.from_bytes(meta_obj.data, key=mkey)
    groups = _plan(meta, before)
    groups = {s: ps for s, ps in groups.items() if any(not is_history(p.period) for p in ps)}
    if not groups:
        result.meta = meta
        return result
    now = clock()
    parts = dict(meta.partitions)
    new_keys: list[str] = []
    removed: list[PartitionMeta] = []
    added: list[PartitionMeta] = []
    for sub, folded in sorted(groups.items(), key=lambda kv: kv[0] or ""):
        upto = max(covered_month(p.period) for p in folded)
        label = history_label(upto, sub)
        key = layout.key(ds.name, ds.version, ticker, label)
        if dry_run:
            removed += folded
            continue
        table = _fold(store, ds, folded)
        data = encode_table(table, compression=HISTORY_COMPRESSION)
        etag = _put(store, key, data, previous=[p for p in folded if p.key == key])
        new_keys.append(key)
        source = max(folded, key=lambda p: p.updated_at).source
        pmeta = PartitionWriter._pmeta(ds, key, label, table, GetResult(data, etag), now, source)
        for p in folded:
            parts.pop(p.period, None)
        parts[label] = pmeta
        removed += [p for p in folded if p.key != key or p.period != label]
        added.append(pmeta)
    if dry_run:
        result.removed = removed
        result.meta = meta
        return result
    new_meta = TickerMeta(ds.name, ticker, now, parts)
    store.put_if_match(mkey, new_meta.to_bytes(), meta_obj.etag)
    deleted = 0
    for p in removed:
        if p.key not in new_keys:
            store.delete(p.key)
            deleted += 1
    result.removed, result.added, result.meta = removed, added, new_meta
    result.objects_written = len(new_keys) + 1
    result.objects_deleted = deleted
    return result


def _fold(store: ObjectStore, ds: Dataset, folded: list[PartitionMeta]) -> pa.Table:
    """The rows of the partitions to fold, in time order, deduplicated on the key (a later
    partition's row wins; partitions do not overlap unless a crash left a duplicate)."""
    merged: pa.Table | None = None
    for p in sorted(folded, key=lambda p: (p.min_date, p.updated_at)):
        got = store.get_or_none(p.key)
        if got is None:
            raise ConflictError(
                f"compact: {p.key} listed in _meta is gone (a concurrent compaction?)", key=p.key
            )
        table = decode_table(got.data, key=p.key)  # CorruptObjectError names the key
        if table.schema != ds.schema:
            from marketlake.schemas.conform import conform

            table = conform(table, ds, p.key)
        merged = table if merged is None else merge_rows(merged, table, ds.key).table
    assert merged is not None
    return merged


def _put(store: ObjectStore, key: str, data: bytes, previous: list[PartitionMeta]) -> str | None:
    """Write the history object: in place when this round's key is the previous one (nothing
    folded but late rows), else create it -- replacing an unreferenced leftover of a crash."""
    if previous:
        return store.put_if_match(key, data, previous[0].etag)
    try:
        return store.put_if_match(key, data, None)
    except ConflictError:
        current = store.get_or_none(key)  # an orphan from a crashed round: nobody reads it
        return store.put_if_match(key, data, current.etag if current else None)
