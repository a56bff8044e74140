"""Cross-section companions: one object per (dataset, session date) with every ticker's row.

Ticker-first keys make "all tickers on one date" 6,000 reads. Beside them (never instead: the
spec's ticker-first objects stay the truth and stay readable by key), the daily batch writes a
date-partitioned companion for each session it changed::

    _xs/prices/v1/2024/01/2024-01-16.parquet      columns: ticker, date, open, ..., volume

sorted by ticker, deterministic bytes. The catalog's ``cross_sections`` table records each one;
any later write that changes rows of that date marks it stale (:meth:`Lake.record`), and a
stale or missing companion is rebuilt from the ticker-first data on first use, so a
cross-section read always equals the ticker-first data.

A batch builds the companion of a day from the rows it just wrote, plus -- for tickers it did not
touch -- the fresh companion already stored for that day, or else those tickers' own objects.
Batches over more than :data:`MAX_BATCH_DAYS` days (backfills) leave companions to be built on
first use. Only daily session datasets have companions (:data:`XS_DATASETS`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketlake.catalog import CrossSectionRow, utc_now_iso
from marketlake.errors import StoragePermissionError
from marketlake.ingest.writer import WriteResult
from marketlake.schemas.datasets import Dataset, get_dataset
from marketlake.storage.parquet import decode_table, encode_table, sha256_hex

log = logging.getLogger("marketlake.xsection")

XS_PREFIX = "_xs"
XS_DATASETS: tuple[str, ...] = ("prices", "signals_technical", "signals_valuation")
MAX_BATCH_DAYS = 31


def xs_key(ds: Dataset, day: dt.date) -> str:
    """Key of the companion of ``ds`` on ``day``."""
    return f"{XS_PREFIX}/{ds.name}/v{ds.version}/{day:%Y}/{day:%m}/{day.isoformat()}.parquet"


def xs_schema(ds: Dataset) -> pa.Schema:
    """``ticker`` then the dataset's columns."""
    return pa.schema([pa.field("ticker", pa.string(), False), *ds.schema])


def _with_ticker(ds: Dataset, ticker: str, table: pa.Table) -> pa.Table:
    body = table.select(list(ds.schema.names)).cast(ds.schema)
    return body.add_column(
        0, pa.field("ticker", pa.string(), False), pa.array([ticker] * body.num_rows, pa.string())
    )


def by_day(table: pa.Table) -> dict[dt.date, pa.Table]:
    """Split a long table (``ticker``, ``date``, …) into one table per date, sorted by ticker."""
    if table.num_rows == 0:
        return {}
    table = table.sort_by([("date", "ascending"), ("ticker", "ascending")])
    days = table.column("date").combine_chunks().to_numpy(zero_copy_only=False)
    days = days.astype("datetime64[D]")
    cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
    starts = [0, *cuts.tolist()]
    ends = [*cuts.tolist(), len(days)]
    out = {}
    for a, b in zip(starts, ends, strict=True):
        day = dt.date.fromisoformat(str(days[a]))
        out[day] = table.slice(a, b - a)
    return out


def write_companion(
    lake: Any, ds: Dataset, day: dt.date, table: pa.Table, seq: int
) -> CrossSectionRow:
    """Write (if the bytes changed) the companion of ``day`` holding ``table`` (long, one row
    per ticker, sorted by ticker, companion schema) and return its catalog row (not yet
    recorded)."""
    data = encode_table(table)
    key = xs_key(ds, day)
    current = lake.store.get_or_none(key)
    if current is None or sha256_hex(current.data) != sha256_hex(data):
        lake.store.put(key, data)
    return CrossSectionRow(
        dataset=ds.name,
        day=day,
        object_key=key,
        tickers=table.num_rows,
        bytes=len(data),
        sha256=sha256_hex(data),
        built_at=utc_now_iso(),
        seq=seq,
    )


def read_companion(lake: Any, row: CrossSectionRow) -> pa.Table | None:
    """The companion's rows, or None when its object is missing or does not match the catalog."""
    got = lake.store.get_or_none(row.object_key)
    if got is None or sha256_hex(got.data) != row.sha256:
        return None
    return decode_table(got.data, key=row.object_key)


def refresh(
    lake: Any,
    ds: Dataset,
    day: dt.date,
    known: pa.Table | None = None,
    *,
    read_only_ok: bool = False,
) -> tuple[pa.Table, CrossSectionRow | None]:
    """The cross-section of ``day``, up to date: the stored companion when no write changed
    that day since it was built; else the companion with the changed tickers' rows replaced
    (``known`` rows of that day -- from a batch, long with a ``ticker`` column -- or read from
    their ticker-first objects), written back. Returns the rows sorted by ticker and the new
    catalog row (None when nothing had to be rewritten).

    ``read_only_ok``: when the write-back is refused (read-only credentials), log it and
    return the rows anyway (a read); else the error propagates (a batch)."""
    schema = xs_schema(ds)
    known_tickers = set(known.column("ticker").to_pylist()) if known is not None else set()
    entry = lake.catalog.cross_section(ds.name, day)
    base = read_companion(lake, entry) if entry is not None else None
    if base is None:
        _, top = lake.catalog.xs_changes_since(ds.name, day, 0)
        to_read = [t for t in lake.catalog.tickers(ds.name) if t not in known_tickers]
        replace: set[str] = set()
        base = schema.empty_table()
    else:
        changed, top = lake.catalog.xs_changes_since(ds.name, day, entry.seq if entry else 0)
        if not changed and not known_tickers:
            return base, None
        to_read = sorted(changed - known_tickers)
        replace = changed | known_tickers
    drop = pc.is_in(base.column("ticker"), pa.array(sorted(replace), pa.string()))
    parts = [base.filter(pc.invert(drop))]
    if to_read:
        parts.append(lake.read_batch(to_read, ds.name, day, day, output="arrow").data)
    if known is not None:
        parts.append(known)
    merged = pa.concat_tables([p.cast(schema) for p in parts]).sort_by([("ticker", "ascending")])
    try:
        return merged, write_companion(lake, ds, day, merged, top)
    except StoragePermissionError as exc:
        if not read_only_ok:
            raise
        log.warning(
            "cross-section of %s %s built from the ticker-first data but not stored (%s); "
            "the next read builds it again -- a writer with write access stores it",
            ds.name,
            day,
            exc,
        )
        return merged, None


def update_from_batch(lake: Any, writes: Iterable[WriteResult]) -> int:
    """Bring the companions of the days a batch changed up to date, from the rows it wrote
    (see the module docstring). Returns the number of companions written."""
    changed: dict[str, dict[str, pa.Table]] = {}
    for w in writes:
        if w.dataset not in XS_DATASETS or w.rows is None or w.rows.num_rows == 0:
            continue
        if w.rows_added == 0 and w.rows_updated == 0:
            continue
        changed.setdefault(w.dataset, {})[w.ticker] = w.rows
    done = 0
    for name, per_ticker in changed.items():
        ds = get_dataset(name)
        long = pa.concat_tables([_with_ticker(ds, t, rows) for t, rows in per_ticker.items()])
        fresh = by_day(long)
        if not fresh:
            continue
        if (max(fresh) - min(fresh)).days >= MAX_BATCH_DAYS:
            log.info(
                "%s: batch spans more than %d days; companions are built on first use",
                name,
                MAX_BATCH_DAYS,
            )
            continue
        rows: list[CrossSectionRow] = []
        for day, table in sorted(fresh.items()):
            _, row = refresh(lake, ds, day, table)
            if row is not None:
                rows.append(row)
        if rows:
            lake.catalog.upsert_cross_sections(rows)
        done += len(rows)
    return done


def changes_of(writes: Iterable[WriteResult]) -> list[tuple[str, str, dt.date, dt.date]]:
    """The ``xs_changes`` rows of writes that changed rows of a companion dataset."""
    return [
        (w.dataset, w.ticker, w.first_day, w.last_day)
        for w in writes
        if w.dataset in XS_DATASETS
        and (w.rows_added or w.rows_updated)
        and w.first_day is not None
        and w.last_day is not None
    ]
