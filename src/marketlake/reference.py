"""Reference data: US listings (NASDAQ Trader), ticker <-> CIK (SEC), index membership (S&P 500).

Reference tables reuse the per-ticker machinery: they are written under a universe or index
name in the ticker slot (``ticker_metadata``/``ticker_history`` under ``US``,
``index_constituents`` under ``SP500``), by the ordinary sources
(:mod:`marketlake.sources.nasdaq_trader`, :mod:`marketlake.sources.sp500`), so ``ingest``,
``update``, ``import`` and the catalog work on them unchanged.

Listing intervals accumulate over the stored rows, so the NASDAQ Trader source reads them in
its I/O stage: the batch and import paths call its ``bind_lake`` hook (see the source's module
docstring). This module holds the helpers: :func:`update_listings` (fetch today's snapshot and
apply it), :func:`update_index` and :func:`members` (who was in an index on a date), and
:func:`cik_for` / :func:`ticker_for_cik` (SEC's ticker <-> CIK intervals stored under ``SEC`` by
the ``sec`` source: ``marketlake ingest --source sec --tickers SEC --datasets ticker_metadata``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from marketlake.schemas.datasets import REFERENCE_TICKER_SEC, REFERENCE_TICKER_US, get_dataset
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE
from marketlake.storage.meta import meta_key
from marketlake.storage.parquet import decode_table

if TYPE_CHECKING:
    from marketlake.ingest.batch import RunSummary
    from marketlake.query.lake import Lake
    from marketlake.sources.nasdaq_trader import NasdaqTraderSource
    from marketlake.sources.sp500 import Sp500Source

__all__ = [
    "cik_for",
    "members",
    "stored_table",
    "ticker_for_cik",
    "update_index",
    "update_listings",
]


def stored_table(lake: Any, ticker: str, dataset: str) -> pa.Table | None:
    """Every stored row of (``dataset``, ``ticker``), or None when nothing is stored.

    ``lake`` is a :class:`~marketlake.Lake` or a batch target: anything with a ``writer`` whose
    ``store`` holds the objects (``_meta`` names the partitions).
    """
    from marketlake.schemas.conform import conform
    from marketlake.storage.meta import TickerMeta

    ds = get_dataset(dataset)
    store = lake.writer.store
    key = meta_key(ds.name, ticker)
    got = store.get_or_none(key)
    if got is None:
        return None
    meta = TickerMeta.from_bytes(got.data, key=key)
    tables = []
    for part in sorted(meta.partitions.values(), key=lambda p: p.period):
        obj = store.get_or_none(part.key)
        if obj is None:
            continue
        table = decode_table(obj.data, key=part.key)
        tables.append(table if table.schema == ds.schema else conform(table, ds, part.key))
    if not tables:
        return None
    return pa.concat_tables(tables)


def update_listings(
    lake: Lake, source: NasdaqTraderSource | None = None, *, workers: int | None = None
) -> RunSummary:
    """Fetch today's NASDAQ Trader snapshot and apply it to the ``US`` listings of ``lake``.

    One batch item per dataset (``ticker_metadata``, ``ticker_history``) for ticker ``US``;
    a re-run on the same snapshot writes nothing.
    """
    from marketlake.ingest.batch import run_batch
    from marketlake.sources.nasdaq_trader import NasdaqTraderSource

    src = source or NasdaqTraderSource()
    day = dt.datetime.now(dt.UTC).date()
    return run_batch(
        lake, src, [REFERENCE_TICKER_US], list(src.datasets), day, day, workers=workers
    )


def update_index(
    lake: Lake, source: Sp500Source | None = None, *, workers: int | None = None
) -> RunSummary:
    """Fetch the S&P 500 files and write the ``SP500`` membership intervals of ``lake``."""
    from marketlake.ingest.batch import run_batch
    from marketlake.sources.sp500 import INDEX_TICKER, Sp500Source

    src = source or Sp500Source()
    return run_batch(
        lake, src, [INDEX_TICKER], ["index_constituents"], *FILE_RANGE, workers=workers
    )


def members(lake: Lake, index: str, day: dt.date | str) -> list[str]:
    """Symbols that were members of ``index`` (e.g. ``"SP500"``) on ``day``, sorted.

    A symbol is a member when ``start <= day`` and (``end`` is null or ``day < end``).
    """
    when = dt.date.fromisoformat(day) if isinstance(day, str) else day
    table = stored_table(lake, normalize_ticker(index), "index_constituents")
    if table is None:
        return []
    start, end = table.column("start"), table.column("end")
    when_scalar = pa.scalar(when, pa.date32())
    mask = pc.and_kleene(
        pc.less_equal(start, when_scalar),
        pc.or_kleene(pc.is_null(end), pc.greater(end, when_scalar)),
    )
    return sorted(set(table.filter(mask).column("symbol").to_pylist()))


def _sec_intervals(lake: Any, day: dt.date | str | None) -> list[dict[str, Any]]:
    """SEC ticker intervals (with a CIK) valid on ``day``, or open now when ``day`` is None."""
    table = stored_table(lake, REFERENCE_TICKER_SEC, "ticker_metadata")
    if table is None:
        return []
    rows = [r for r in table.to_pylist() if r["cik"] is not None]
    if day is None:
        return [r for r in rows if r["delisted"] is None]
    when = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return [
        r
        for r in rows
        if r["first_seen"] <= when and (r["delisted"] is None or when < r["delisted"])
    ]


def cik_for(lake: Any, ticker: str, day: dt.date | str | None = None) -> int | None:
    """SEC CIK of ``ticker`` from the stored ``SEC`` intervals, or None when unknown.

    With ``day``, the interval holding it (``first_seen <= day`` and ``day < delisted`` or not
    delisted); without, the ticker's open interval (listed in the latest snapshot). Days before
    the first stored snapshot are unknown (None).
    """
    symbol = normalize_ticker(ticker)
    hits = [r for r in _sec_intervals(lake, day) if r["symbol"] == symbol]
    if not hits:
        return None
    cik: int = max(hits, key=lambda r: r["first_seen"])["cik"]
    return cik


def ticker_for_cik(lake: Any, cik: int | str, day: dt.date | str | None = None) -> str | None:
    """Ticker of SEC ``cik`` from the stored ``SEC`` intervals, or None when it has none.

    ``day`` as in :func:`cik_for`. A company with several tickers (share classes, units,
    warrants, preferreds) gets a plain symbol (no ``.``/``-``) before a suffixed one, then
    the alphabetically first (``GOOG`` before ``GOOGL``, ``BRK.A`` before ``BRK.B``).
    """
    from marketlake.sources.sec import parse_cik

    number = parse_cik(cik)
    symbols: list[str] = [r["symbol"] for r in _sec_intervals(lake, day) if r["cik"] == number]
    if not symbols:
        return None
    return min(symbols, key=lambda s: ("." in s or "-" in s, s))
