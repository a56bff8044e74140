"""The :class:`Lake`: open a lake by URL, read and write per-ticker datasets.

Reads compute object keys from the ticker and the date range (no LIST), fetch them concurrently,
skip periods that do not exist, filter to the inclusive range and sort. Writes go through
:class:`~marketlake.ingest.writer.PartitionWriter` (data -> ``_meta``) and then the catalog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from marketlake.catalog import AssetRow, Catalog, PartitionRow, ProgressRow, utc_now_iso
from marketlake.derive.adjust import AdjustMode, apply_adjustment, cash_ex_dates, check_mode
from marketlake.errors import ConfigError, LakeNotFoundError, MarketlakeError
from marketlake.ingest.writer import PartitionWriter, WriteResult
from marketlake.ingest.xsection import XS_DATASETS, changes_of, refresh
from marketlake.schemas.datasets import Dataset, get_dataset, list_datasets
from marketlake.schemas.tickers import normalize_ticker
from marketlake.storage.cache import DEFAULT_MAX_BYTES, ReadCache, default_cache_dir
from marketlake.storage.format import MARKER_KEY, LakeMarker, ensure_marker
from marketlake.storage.layout import Layout, is_history, split_sub
from marketlake.storage.meta import META_PREFIX, TickerMeta, meta_key
from marketlake.storage.reader import PartitionReader, ReadInfo
from marketlake.storage.store import ObjectStore, open_store

Output = Literal["pandas", "polars", "arrow"]
DateLike = dt.date | str | None

CATALOG_FILE = "_catalog.sqlite"
REMOTE_READ_WORKERS = 64  # concurrent GETs for S3/R2 reads (see open_lake)


def _as_date(value: DateLike, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise MarketlakeError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None


def convert(table: pa.Table, output: Output) -> Any:
    """Convert an Arrow table to the requested output type.

    pandas output turns ``date32`` columns into ``datetime64[ns]`` (naive, session dates).
    """
    if output == "arrow":
        return table
    if output == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if output == "pandas":
        if table.num_columns and table.column(0).num_chunks > 8:
            table = table.combine_chunks()  # one copy in Arrow beats per-chunk conversion
        # split_blocks: one block per column, no consolidation copy (2-3x faster here)
        return table.to_pandas(
            date_as_object=False, coerce_temporal_nanoseconds=True, split_blocks=True
        )
    raise MarketlakeError(f"output={output!r} is not one of 'pandas', 'polars', 'arrow'")


@dataclass
class CompactSummary:
    """What :meth:`Lake.compact` did: tickers compacted, monthly partitions folded, objects
    written (history + ``_meta``) and deleted, per-ticker errors (the others went on)."""

    before: str
    dry_run: bool = False
    tickers: int = 0
    partitions_folded: int = 0
    objects_written: int = 0
    objects_deleted: int = 0
    seconds: float = 0.0
    errors: dict[str, MarketlakeError] = field(default_factory=dict)


@dataclass
class BatchReadResult:
    """Result of :meth:`Lake.read_batch`: tidy data for the tickers that worked, errors for the
    others. ``data`` has a leading ``ticker`` column (long format); ``errors`` maps a ticker to the
    exception that stopped it; ``missing`` lists tickers with no rows in the range."""

    data: Any
    errors: dict[str, MarketlakeError] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: dataset, tickers, range, adjustment basis, knowledge date, sources of the rows
    provenance: dict[str, Any] = field(default_factory=dict)
    #: gaps (months without rows inside a ticker's stored span), missing and failed tickers
    warnings: list[str] = field(default_factory=list)


class Lake:
    """A market-data lake: an object store, its layouts and a catalog.

    Open with :func:`marketlake.open`. Thread-safe for concurrent reads and writes.
    """

    def __init__(
        self,
        store: ObjectStore,
        catalog: Catalog,
        marker: LakeMarker,
        *,
        max_workers: int = 16,
        cache: ReadCache | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.marker = marker
        self.layouts = {name: Layout.parse(t) for name, t in marker.layouts.items()}
        self.writer = PartitionWriter(store, self.layouts)
        self.reader = PartitionReader(store, self.layouts, cache=cache)
        self._tls = threading.local()  # the ReadInfo of the read running on this thread
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the lake lives (no credentials)."""
        return self.store.url

    def close(self) -> None:
        """Release the catalog connection and worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.writer.close()
        self.catalog.close()
        self.store.close()

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self._read_threads(), thread_name_prefix="marketlake-io"
            )
        return self._pool

    def _read_threads(self) -> int:
        """Reader threads: ``max_workers`` for remote stores (latency-bound); for local stores
        no more than the CPU count, since decoding holds the GIL and more threads only contend."""
        if self.store.is_local:
            return max(1, min(self.max_workers, os.cpu_count() or 1))
        return self.max_workers

    def dataset(self, name: str) -> Dataset:
        """The registered dataset ``name`` (raises UnknownDatasetError with the known names)."""
        return get_dataset(name)

    def layout(self, name: str) -> Layout:
        """The key layout this lake uses for dataset ``name``."""
        get_dataset(name)
        return self.layouts[name]

    def key(self, ticker: str, dataset: str, day: dt.date, *, exchange: str | None = None) -> str:
        """Object key of the partition holding ``day`` for ``ticker`` (no I/O). Datasets with
        an exchange level in their layout (``crypto_bars``) need ``exchange``."""
        ds = get_dataset(dataset)
        layout = self.layouts[dataset]
        period = layout.period_of(day)
        if layout.sub_partition is not None:
            if exchange is None:
                raise ConfigError(
                    f"dataset {dataset} keeps one set of objects per {layout.sub_partition}: "
                    f"pass {layout.sub_partition}=..., e.g. 'binance'"
                )
            period = f"{exchange}:{period}"
        return layout.key(ds.name, ds.version, normalize_ticker(ticker), period)

    # -- writes -----------------------------------------------------------------------------

    def write(
        self, ticker: str, dataset: str, data: Any, *, source: str | None = None
    ) -> WriteResult:
        """Merge rows for one ticker into ``dataset`` (upsert on the dataset's key, new wins).

        Parameters
        ----------
        ticker:
            Symbol; normalised (upper case, class shares with a dot).
        dataset:
            Dataset name, e.g. ``"prices"``.
        data:
            pyarrow Table or pandas/Polars DataFrame with the dataset's columns. For ``prices``:
            raw (unadjusted) OHLCV with session dates (no time zone) and the vendor's adjusted
            close in ``adj_close`` (may be null).
        source:
            Name recorded in the catalog for these rows.

        Returns
        -------
        WriteResult
            Rows added/updated, the ticker's row count and how many objects were rewritten.

        Raises
        ------
        SchemaError, DataValidationError
            The rows do not fit the dataset; nothing is written.
        """
        ds = get_dataset(dataset)
        symbol = normalize_ticker(ticker)
        result = self.writer.write(ds, symbol, data, source=source)
        self.record([result], source=source)
        return result

    def record(
        self,
        results: Sequence[WriteResult],
        *,
        source: str | None = None,
        advance_progress: bool = True,
    ) -> None:
        """Record write results in the catalog (the last step of the commit order).

        ``advance_progress=False`` (backfills) records partitions and assets but leaves the daily
        watermark (``collection_progress``) where it is.
        """
        parts: list[PartitionRow] = []
        progress: list[ProgressRow] = []
        assets: dict[tuple[str, str], AssetRow] = {}
        now = utc_now_iso()
        src = source or "manual"
        for r in results:
            for p in r.touched_partitions:
                parts.append(_partition_row(r.dataset, r.ticker, p, p.source or src))
            if advance_progress and r.meta.max_date is not None:
                progress.append(
                    ProgressRow(
                        dataset=r.dataset,
                        ticker=r.ticker,
                        source=src,
                        last_date=r.meta.max_date,
                        updated_at=now,
                    )
                )
            assets[(r.ticker, src)] = AssetRow(
                ticker=r.ticker, source=src, first_seen=now, last_seen=now
            )
        if parts:
            self.catalog.upsert_partitions(parts)
        self.catalog.record_xs_changes(changes_of(results))  # stale cross-section companions
        if progress:
            self.catalog.advance_progress(progress)
        if assets:
            self.catalog.upsert_assets(assets.values())

    def repair_meta(self, ticker: str, dataset: str) -> TickerMeta:
        """Rebuild the ``_meta`` object of (dataset, ticker) from its data objects (LIST + GET
        of each partition; the data objects are the truth) and record it in the catalog.

        Raises CorruptObjectError when a data object itself is corrupt (it names the key).
        """
        ds = get_dataset(dataset)
        symbol = normalize_ticker(ticker)
        key = meta_key(ds.name, symbol)
        meta = self.writer.rebuild_meta(ds, symbol)
        current = self.store.get_or_none(key)
        self.store.put_if_match(key, meta.to_bytes(), current.etag if current else None)
        parts = [_partition_row(ds.name, symbol, p, "manual") for p in meta.partitions.values()]
        if parts:
            self.catalog.upsert_partitions(parts)
        return meta

    # -- reads ------------------------------------------------------------------------------

    def meta(self, ticker: str, dataset: str) -> TickerMeta | None:
        """The ``_meta`` object for (dataset, ticker): partitions, date range, row count."""
        ds = get_dataset(dataset)
        return self.reader.meta(ds.name, normalize_ticker(ticker))

    def read(
        self,
        ticker: str,
        dataset: str = "prices",
        start: DateLike = None,
        end: DateLike = None,
        columns: Sequence[str] | None = None,
        output: Output = "pandas",
        *,
        adjust: AdjustMode = "none",
        knowledge_as_of: DateLike = None,
    ) -> Any:
        """Read one ticker's rows of ``dataset`` between ``start`` and ``end``, both inclusive.

        Parameters
        ----------
        ticker:
            Symbol, e.g. ``"AAPL"`` (normalised).
        dataset:
            Dataset name (default ``"prices"``: raw, unadjusted OHLCV plus vendor ``adj_close``).
        start, end:
            Inclusive session dates (``date`` or ``"YYYY-MM-DD"``); None means from the first /
            to the last stored row (read from ``_meta``, one extra small GET).
        columns:
            Columns to return; the time column is always included first.
        output:
            ``"pandas"`` (default; dates as ``datetime64[ns]``), ``"polars"`` or ``"arrow"``.
        adjust:
            ``prices`` only. ``"none"`` (the default, and it stays the default): raw prices as
            stored. ``"splits"``: open/high/low/close multiplied, volume divided, by the split
            factor. ``"total"``: splits plus the conventional (CRSP/Yahoo) dividend factor
            ``1 - dividend / previous raw close`` for every earlier ex date. Factors come from
            the ticker's ``corporate_actions`` (one more GET; for ``"total"`` also the
            partitions holding the close before each later ex date); see
            :mod:`marketlake.derive.adjust` for the exact formulas. ``adj_close`` stays the
            vendor's. Adjustment never rewrites stored data.
        knowledge_as_of:
            Adjust with only the actions known on this date (rule: ``ex_date <=
            knowledge_as_of``; the lake has no announcement dates); None uses every action.
            For ``fundamentals``: per ``period_end``, the row with the latest ``filed <=
            knowledge_as_of`` (values as known that day; later restatements invisible); None
            returns every filing's row.

        Returns
        -------
        DataFrame or Table sorted ascending by date; empty (with the right columns) when no rows.
        Its provenance -- dataset, range, adjustment basis, knowledge date, sources, warnings
        (months without rows inside the ticker's stored span, no rows at all) -- is in
        ``df.attrs["marketlake"]`` (pandas) or the schema metadata ``marketlake`` (Arrow, JSON).

        Examples
        --------
        >>> lake.read("AAPL", "prices", "2024-01-01", "2024-03-31")  # doctest: +SKIP
        """
        ds = get_dataset(dataset)
        symbol = normalize_ticker(ticker)
        mode, known = _adjust_args(ds, adjust, knowledge_as_of)
        info = self._tls.info = ReadInfo()
        try:
            table = self._read_one(ds, symbol, start, end, columns, mode, known)
        finally:
            self._tls.info = None
        warnings = [f"{symbol}: no {ds.name} rows in {m}" for m in dict.fromkeys(info.gaps)]
        if table.num_rows == 0:
            warnings.append(f"{symbol}: no {ds.name} rows in the range")
        prov = _provenance(ds, [symbol], start, end, mode, known, info.sources, warnings)
        return _attach(convert(table, output), prov)

    def _read_one(
        self,
        ds: Dataset,
        symbol: str,
        start: DateLike,
        end: DateLike,
        columns: Sequence[str] | None,
        mode: AdjustMode,
        known: dt.date | None,
        *,
        parallel: bool = True,
    ) -> pa.Table:
        if ds.name == "fundamentals" and known is not None:
            return self._read_known(ds, symbol, start, end, columns, known, parallel=parallel)
        if mode == "none":
            return self._read_arrow(ds, symbol, start, end, columns, parallel=parallel)
        return self._read_adjusted(ds, symbol, start, end, columns, mode, known, parallel=parallel)

    def _read_known(
        self,
        ds: Dataset,
        ticker: str,
        start: DateLike,
        end: DateLike,
        columns: Sequence[str] | None,
        knowledge_as_of: dt.date,
        *,
        parallel: bool = True,
    ) -> pa.Table:
        """``fundamentals`` as known on ``knowledge_as_of``: per ``period_end`` in the range,
        the row with the latest ``filed <= knowledge_as_of`` (see
        :func:`marketlake.derive.fundamentals.as_of`)."""
        from marketlake.derive.fundamentals import as_of

        cols = _columns(ds, columns)
        fetch = cols if "filed" in cols else [*cols, "filed"]
        table = self._read_arrow(ds, ticker, start, end, fetch, parallel=parallel)
        return as_of(table, knowledge_as_of).select(cols)

    def _read_adjusted(
        self,
        ds: Dataset,
        ticker: str,
        start: DateLike,
        end: DateLike,
        columns: Sequence[str] | None,
        adjust: AdjustMode,
        knowledge_as_of: dt.date | None,
        *,
        parallel: bool = True,
    ) -> pa.Table:
        """Read raw ``prices`` rows and adjust them (see :meth:`read`)."""
        cols = _columns(ds, columns)
        fetch = cols if "close" in cols or adjust != "total" else [*cols, "close"]
        table = self._read_arrow(ds, ticker, start, end, fetch, parallel=parallel)
        if table.num_rows == 0:
            return table.select(cols)
        actions = self._read_arrow(
            get_dataset("corporate_actions"), ticker, None, None, None, parallel=parallel
        )
        reference = None
        if adjust == "total":
            reference = self._closes_before(
                ds, ticker, table, cash_ex_dates(actions, knowledge_as_of), parallel=parallel
            )
        adjusted = apply_adjustment(
            table,
            actions,
            adjust,
            knowledge_as_of=knowledge_as_of,
            reference_closes=reference,
            ticker=ticker,
        )
        return adjusted.select(cols)

    def _closes_before(
        self,
        ds: Dataset,
        ticker: str,
        table: pa.Table,
        ex_dates: list[dt.date],
        *,
        parallel: bool = True,
    ) -> pa.Table | None:
        """Raw closes of the sessions just before the ex dates after the rows read (their
        previous close is not in ``table``): only the partitions holding a 10-day window before
        each such ex date, widened to a year when a window has no session (a long halt).
        Ex dates on or before the first row affect no row read."""
        last = table.column("date")[-1].as_py()
        need = [e for e in ex_dates if e > last]  # else the previous session is in the table
        if not need:
            return None
        windows = [(e - dt.timedelta(days=10), e - dt.timedelta(1)) for e in need]
        tables = [
            self.reader.read_windows(
                ds, ticker, windows, ["date", "close"], map_fn=self._map_fn(parallel)
            )
        ]
        got = {d for t in tables for d in t.column("date").to_pylist()}
        for e in need:  # a long halt: look further back for the previous session
            if not any(e - dt.timedelta(days=10) <= d < e for d in got):
                lo, hi = e - dt.timedelta(days=366), e - dt.timedelta(1)
                wide = self._read_arrow(ds, ticker, lo, hi, ["date", "close"], parallel=parallel)
                if wide.num_rows:
                    tables.append(wide)
        return pa.concat_tables(tables) if tables else None

    def _read_arrow(
        self,
        ds: Dataset,
        ticker: str,
        start: DateLike,
        end: DateLike,
        columns: Sequence[str] | None,
        *,
        parallel: bool = True,
    ) -> pa.Table:
        lo, hi = _as_date(start, "start"), _as_date(end, "end")
        cols = _columns(ds, columns)
        info = getattr(self._tls, "info", None)
        return self.reader.read(ds, ticker, lo, hi, cols, map_fn=self._map_fn(parallel), info=info)

    def _map_fn(self, parallel: bool) -> Any:
        """How to fetch several objects: a pool for remote stores; serially for local files
        (reading is microseconds and decoding holds the GIL, so a pool only adds overhead) and
        inside a pool task (nested pool.map can starve the pool)."""
        if not parallel or self.store.is_local:
            return None
        return self._executor().map

    def read_batch(
        self,
        tickers: Iterable[str],
        dataset: str = "prices",
        start: DateLike = None,
        end: DateLike = None,
        columns: Sequence[str] | None = None,
        output: Output = "pandas",
        *,
        adjust: AdjustMode = "none",
        knowledge_as_of: DateLike = None,
    ) -> BatchReadResult:
        """Read many tickers concurrently; one bad ticker never fails the call.

        Same parameters as :meth:`read` (``adjust`` default ``"none"``: raw prices). Returns a
        :class:`BatchReadResult` whose ``data`` is a long (tidy) table with a ``ticker`` column
        first, rows sorted by ticker then date;
        ``errors`` holds per-ticker exceptions (invalid symbol, corrupt object...).
        """
        ds = get_dataset(dataset)
        cols = _columns(ds, columns)
        mode, known = _adjust_args(ds, adjust, knowledge_as_of)
        requested = list(tickers)

        def one(raw: str) -> tuple[str, pa.Table | MarketlakeError, ReadInfo]:
            info = self._tls.info = ReadInfo()
            try:
                symbol = normalize_ticker(raw)
                # per-ticker work already runs on the pool: fetch this ticker's keys serially
                # (nested pool.map from inside a pool task can starve the pool and deadlock)
                table = self._read_one(ds, symbol, start, end, cols, mode, known, parallel=False)
                return symbol, table, info
            except MarketlakeError as exc:
                return str(raw), exc, info
            finally:
                self._tls.info = None

        if self.store.is_local:  # measured: a pool only adds hand-offs and GIL contention
            results = [one(raw) for raw in requested]
        else:
            results = list(self._executor().map(one, requested))
        errors: dict[str, MarketlakeError] = {}
        missing: list[str] = []
        parts: list[pa.Table] = []
        sources: set[str] = set()
        warnings: list[str] = []
        for symbol, res, info in results:
            sources |= info.sources
            warnings += [f"{symbol}: no {ds.name} rows in {m}" for m in dict.fromkeys(info.gaps)]
            if isinstance(res, MarketlakeError):
                errors[symbol] = res
            elif res.num_rows == 0:
                missing.append(symbol)
            else:
                tick = pa.array([symbol] * res.num_rows, pa.string())
                parts.append(res.add_column(0, pa.field("ticker", pa.string(), False), tick))
        if parts:
            table = pa.concat_tables(parts)
        else:
            empty = ds.schema.empty_table().select(cols)
            table = empty.add_column(
                0, pa.field("ticker", pa.string(), False), pa.array([], pa.string())
            )
        if missing:
            warnings.append(f"no {ds.name} rows in the range for: {', '.join(missing)}")
        if errors:
            warnings.append(f"failed tickers (see .errors): {', '.join(errors)}")
        prov = _provenance(ds, requested, start, end, mode, known, sources, warnings)
        return BatchReadResult(convert(table, output), errors, missing, prov, warnings)

    def cross_section(
        self,
        dataset: str = "prices",
        start: DateLike = None,
        end: DateLike = None,
        columns: Sequence[str] | None = None,
        output: Output = "pandas",
        *,
        tickers: Iterable[str] | None = None,
    ) -> Any:
        """Every ticker's rows of ``dataset`` on the session ``start`` (or each session from
        ``start`` to ``end``, inclusive): a long table ``ticker, date, …`` sorted by date then
        ticker. Served from the date-partitioned companion objects the daily batch writes
        (``_xs/…``: one GET per date); a companion that is missing, or older than a write that
        changed that date, is brought up to date from the ticker-first data first (and written
        back), so the result always equals the ticker-first data.

        Datasets: ``prices`` (raw, unadjusted), ``signals_technical``, ``signals_valuation``.
        ``tickers`` filters the result (the companion is still one object per date).
        """
        from marketlake import calendars

        ds = get_dataset(dataset)
        if ds.name not in XS_DATASETS:
            raise MarketlakeError(
                f"cross-sections cover the daily datasets {list(XS_DATASETS)}, not {ds.name}; "
                "use read_batch",
                dataset=ds.name,
            )
        lo = _as_date(start, "start")
        if lo is None:
            raise MarketlakeError(
                "cross_section needs a date: cross_section('prices', 'YYYY-MM-DD')"
            )
        hi = _as_date(end, "end") or lo
        days = [lo] if hi == lo else list(calendars.sessions(lo, hi))
        cols = _columns(ds, columns)
        parts = []
        for day in days:
            table, row = refresh(self, ds, day, read_only_ok=True)
            if row is not None:
                self.catalog.upsert_cross_sections([row])
            parts.append(table.select(["ticker", *cols]))
        table = pa.concat_tables(parts) if parts else None
        if table is None:
            table = pa.schema([pa.field("ticker", pa.string(), False), *ds.schema]).empty_table()
            table = table.select(["ticker", *cols])
        if tickers is not None:
            wanted = pa.array(sorted({normalize_ticker(t) for t in tickers}), pa.string())
            table = table.filter(pc.is_in(table.column("ticker"), wanted))
        return convert(table, output)

    def sql(self, query: str, output: Output = "pandas") -> Any:
        """Run a read-only SQL query (DuckDB dialect) over the lake's datasets, one table per
        dataset with a leading ``ticker`` column (``exchange`` where the dataset has one).

        Literal filters on ``ticker`` and on the time column (top-level ``AND`` terms of the
        ``WHERE``, and inner-join keys) are pushed down: only those tickers' partitions for
        those dates are read; DuckDB then runs the query as written, so push-down never changes
        the answer. Prices are raw (unadjusted); dates are session dates, timestamps UTC.
        See :func:`marketlake.query.sql.run_sql` for statistics (objects read, warnings).

        Examples
        --------
        >>> lake.sql("SELECT ticker, avg(close) FROM prices WHERE ticker IN ('AAPL','MSFT') "
        ...          "AND date >= '2024-01-01' GROUP BY ticker")  # doctest: +SKIP
        """
        from marketlake.query.sql import sql

        return sql(self, query, output)

    def export(self, tickers: Iterable[str] | None, dataset: str, path: Any, **kwargs: Any) -> Any:
        """Stream ``dataset`` rows of ``tickers`` (None: every ticker in the catalog) to a CSV
        or Parquet file, ``chunk_tickers`` tickers at a time (never the whole universe in
        memory); atomic (temp file + rename). Keyword arguments: ``start``, ``end`` (inclusive
        dates), ``columns``, ``format`` ("csv" | "parquet"), ``adjust``, ``chunk_tickers``.
        See :func:`marketlake.query.export.export`."""
        from marketlake.query.export import export

        return export(self, tickers, dataset, path, **kwargs)

    def tickers(self, dataset: str | None = None) -> list[str]:
        """Tickers that have data (from the catalog), optionally for one dataset."""
        return self.catalog.tickers(dataset)

    # -- compaction ---------------------------------------------------------------------------

    def compact(
        self,
        datasets: Sequence[str] | None = None,
        tickers: Iterable[str] | None = None,
        *,
        before: str | None = None,
        dry_run: bool = False,
        workers: int | None = None,
        on_ticker: Any = None,
    ) -> CompactSummary:
        """Fold closed monthly partitions into one history object per ticker (see
        :mod:`marketlake.ingest.compact`); reads return the same rows before and after.

        Parameters
        ----------
        datasets:
            Datasets to compact (default: every dataset whose layout has monthly or daily
            folders).
        tickers:
            Tickers (default: every ticker with a partition to fold, from the catalog).
        before:
            ``YYYY-MM``: fold months strictly before it (default: the current UTC month, which
            keeps its spec monthly key).
        dry_run:
            Only report what would be folded.
        workers:
            Threads (default: 2 for local lakes -- CPU-bound --, 32 for remote ones).
        on_ticker:
            Optional callback ``f(CompactResult)`` after each ticker (progress).
        """
        from marketlake.ingest.compact import compact_ticker

        cutoff = before or f"{dt.datetime.now(dt.UTC):%Y-%m}"
        if len(cutoff) != 7 or cutoff[4] != "-" or not (cutoff[:4] + cutoff[5:]).isdigit():
            raise MarketlakeError(f"before={before!r} is not a month; use YYYY-MM")
        names = (
            [get_dataset(d).name for d in datasets]
            if datasets
            else [n for n in self.layouts if self.layouts[n].compactable]
        )
        wanted = {normalize_ticker(t) for t in tickers} if tickers is not None else None
        jobs: list[tuple[str, str]] = []
        for name in names:
            layout = self.layout(name)
            if not layout.compactable:
                raise MarketlakeError(
                    f"dataset {name}: its layout {layout.template!r} has no monthly or daily "
                    "folders to compact",
                    dataset=name,
                )
            todo = {
                r.ticker
                for r in self.catalog.partitions(dataset=name)
                if not is_history(r.period) and split_sub(r.period)[1][:7] < cutoff
            }
            jobs += [(name, t) for t in sorted(todo) if wanted is None or t in wanted]
        summary = CompactSummary(before=cutoff, dry_run=dry_run)
        t0 = time.perf_counter()

        def one(job: tuple[str, str]) -> Any:
            ds = get_dataset(job[0])
            try:
                return compact_ticker(
                    self.store, self.layouts[ds.name], ds, job[1], before=cutoff, dry_run=dry_run
                )
            except MarketlakeError as exc:
                return (job, exc)

        threads = workers or (2 if self.store.is_local else 32)
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="marketlake-compact") as pool:
            for res in pool.map(one, jobs):
                if isinstance(res, tuple):
                    (name, ticker), exc = res
                    summary.errors[f"{name}/{ticker}"] = exc
                    continue
                if on_ticker is not None:
                    on_ticker(res)
                if not res.removed:
                    continue
                summary.tickers += 1
                summary.partitions_folded += sum(1 for p in res.removed if not is_history(p.period))
                summary.objects_written += res.objects_written
                summary.objects_deleted += res.objects_deleted
                if dry_run:
                    continue
                self.catalog.delete_partitions(
                    (res.dataset, res.ticker, p.period) for p in res.removed
                )
                self.catalog.upsert_partitions(
                    _partition_row(res.dataset, res.ticker, p, p.source or "compact")
                    for p in res.added
                )
        summary.seconds = time.perf_counter() - t0
        return summary

    # -- catalog maintenance ----------------------------------------------------------------

    def iter_meta(self, dataset: str | None = None) -> Iterable[TickerMeta]:
        """Every ``_meta`` object in the store (uses LIST; maintenance only)."""
        names = [dataset] if dataset else [d.name for d in list_datasets()]
        for name in names:
            for info in self.store.list(f"{META_PREFIX}/{name}"):
                if info.key.endswith(".json"):
                    yield TickerMeta.from_bytes(self.store.get(info.key).data, key=info.key)

    def rebuild_catalog(self) -> int:
        """Rebuild the catalog's partitions and assets from ``_meta`` in the store.

        The store is the source of truth. Run history is kept (it cannot be derived).
        Returns the number of partitions recorded.
        """
        parts: list[PartitionRow] = []
        assets: dict[tuple[str, str], AssetRow] = {}
        progress: list[ProgressRow] = []
        for meta in self.iter_meta():
            for p in meta.partitions.values():
                parts.append(_partition_row(meta.dataset, meta.ticker, p, p.source or "manual"))
            src = _latest_source(meta)
            if meta.max_date is not None:
                progress.append(
                    ProgressRow(
                        dataset=meta.dataset,
                        ticker=meta.ticker,
                        source=src,
                        last_date=meta.max_date,
                        updated_at=meta.last_updated_at,
                    )
                )
            first = min(
                (p.updated_at for p in meta.partitions.values()), default=meta.last_updated_at
            )
            assets[(meta.ticker, src)] = AssetRow(
                ticker=meta.ticker, source=src, first_seen=first, last_seen=first
            )
        self.catalog.replace_partitions(parts)
        self.catalog.upsert_assets(assets.values())
        self.catalog.advance_progress(progress)
        return len(parts)


def _provenance(
    ds: Dataset,
    tickers: Sequence[str],
    start: DateLike,
    end: DateLike,
    mode: AdjustMode,
    known: dt.date | None,
    sources: set[str],
    warnings: list[str],
) -> dict[str, Any]:
    """What a read returned: dataset, tickers, inclusive range as asked, adjustment basis
    (``none`` = raw as stored), the knowledge date, the sources of the rows, warnings."""
    return {
        "dataset": ds.name,
        "tickers": list(tickers),
        "start": str(start) if start is not None else None,
        "end": str(end) if end is not None else None,
        "adjust": mode,
        "knowledge_as_of": known.isoformat() if known else None,
        "sources": sorted(sources),
        "warnings": list(warnings),
    }


def _attach(data: Any, prov: dict[str, Any]) -> Any:
    """Carry the provenance on the result: ``df.attrs["marketlake"]`` for pandas, schema
    metadata ``marketlake`` (JSON) for Arrow; Polars frames have no place for it."""
    if isinstance(data, pa.Table):
        return data.replace_schema_metadata({b"marketlake": json.dumps(prov).encode()})
    attrs = getattr(data, "attrs", None)
    if isinstance(attrs, dict):
        attrs["marketlake"] = prov
    return data


def _latest_source(meta: TickerMeta) -> str:
    latest = max(meta.partitions.values(), key=lambda p: p.updated_at, default=None)
    return (latest.source if latest else None) or "manual"


def _partition_row(dataset: str, ticker: str, p: Any, source: str) -> PartitionRow:
    return PartitionRow(
        dataset=dataset,
        ticker=ticker,
        period=p.period,
        object_key=p.key,
        source=source,
        row_count=p.rows,
        min_date=p.min_date,
        max_date=p.max_date,
        bytes=p.bytes,
        sha256=p.sha256,
        etag=p.etag,
        updated_at=p.updated_at,
    )


def _adjust_args(
    ds: Dataset, adjust: str, knowledge_as_of: DateLike
) -> tuple[AdjustMode, dt.date | None]:
    """Validate ``adjust=`` / ``knowledge_as_of=``: adjustment applies to ``prices`` only."""
    mode = check_mode(adjust)
    known = _as_date(knowledge_as_of, "knowledge_as_of")
    if mode != "none" and ds.name != "prices":
        raise MarketlakeError(
            f"adjust={adjust!r} applies to the prices dataset only, not {ds.name}",
            dataset=ds.name,
        )
    if known is not None and ds.name not in ("prices", "fundamentals"):
        raise MarketlakeError(
            f"knowledge_as_of applies to prices (which corporate actions are known) and "
            f"fundamentals (which filings are known), not {ds.name}",
            dataset=ds.name,
        )
    return mode, known


def _columns(ds: Dataset, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(ds.schema.names)
    unknown = [c for c in columns if c not in ds.schema.names]
    if unknown:
        raise MarketlakeError(
            f"unknown column(s) {unknown} for dataset {ds.name}; columns: {ds.schema.names}",
            dataset=ds.name,
        )
    rest = [c for c in columns if c != ds.time_column]
    return [ds.time_column, *dict.fromkeys(rest)]


def default_catalog_path(store: ObjectStore) -> str:
    """Where the catalog lives: beside a local lake, under the user data dir for a remote one."""
    if store.local_root is not None:
        return str(store.local_root / CATALOG_FILE)
    if store.url.startswith("memory://"):
        return ":memory:"
    import platformdirs

    digest = hashlib.sha256(store.url.encode()).hexdigest()[:16]
    return str(Path(platformdirs.user_data_dir("marketlake")) / "catalogs" / f"{digest}.sqlite")


def open_lake(
    url: str | os.PathLike[str] | ObjectStore = "./lake",
    *,
    catalog: str | os.PathLike[str] | None = None,
    max_workers: int | None = None,
    fsync: bool = True,
    cache: bool | str | os.PathLike[str] | None = None,
    cache_max_bytes: int | None = None,
    create: bool = True,
) -> Lake:
    """Open (creating if needed) the lake at ``url``.

    Parameters
    ----------
    url:
        ``./lake`` or any local path, ``file:///path``, ``memory://``, ``s3://bucket/prefix`` or
        ``r2://bucket/prefix`` (endpoint and keys from ``R2_*`` / ``AWS_*`` environment), or an
        already opened :class:`~marketlake.storage.store.ObjectStore` (e.g. a fault-injecting
        :class:`~marketlake.storage.faults.FaultyStore`; ``fsync`` is then the store's own).
    catalog:
        SQLite file for the catalog; default ``<lake>/_catalog.sqlite`` for a local lake, an
        in-memory database for ``memory://``, else a file under the user data directory.
    max_workers:
        Threads for concurrent object reads; default 16 for local and memory lakes (reads
        there are CPU-bound: at most one per core is used), 64 for S3/R2 (latency-bound: a
        100-ticker read through 20 ms of round trip took 245 ms with 64 vs 373 ms with 16).
    fsync:
        Local lakes: fsync every object before it becomes visible (default True).
    cache:
        Local read-through cache of remote objects: None (default) = on for S3/R2 lakes, off
        for local and memory lakes; True/False to force; or a directory. Entries are keyed by
        content hash / ETag, so a changed object is never served stale; a repeated read costs
        one HEAD of ``_meta`` per ticker and no data GETs. Default directory: the platformdirs
        user cache dir (``marketlake/objects``); ``MARKETLAKE_CACHE_DIR`` overrides it.
    cache_max_bytes:
        Size bound of the cache (default 2 GiB; ``MARKETLAKE_CACHE_MAX_BYTES`` overrides it);
        least recently used entries are evicted.
    create:
        True (default): a URL without a lake gets a new, empty one. False: raise
        :class:`~marketlake.errors.LakeNotFoundError` instead and create nothing (no directory,
        marker or catalog) -- what the read-only CLI commands use, so a mistyped ``--lake``
        is an error rather than an empty result. ``memory://`` is always a new lake.

    Raises
    ------
    ConfigError, FormatVersionError, LayoutError, LakeNotFoundError
        Bad URL or settings, a lake from a newer marketlake, an invalid layout, no lake at
        ``url`` with ``create=False``.
    """
    if not create and not isinstance(url, ObjectStore):
        _require_lake(url)
    store = url if isinstance(url, ObjectStore) else open_store(url, fsync=fsync)
    if not create and not store.url.startswith("memory://") and not store.exists(MARKER_KEY):
        raise LakeNotFoundError(_no_lake_message(store.url), url=store.url)
    marker = ensure_marker(store, {d.name: d.layout for d in list_datasets()})
    cat = Catalog.open(os.fspath(catalog) if catalog is not None else default_catalog_path(store))
    if max_workers is None:
        remote = not (store.is_local or store.url.startswith("memory://"))
        max_workers = REMOTE_READ_WORKERS if remote else 16
    read_cache = _open_cache(store, cache, cache_max_bytes)
    return Lake(store, cat, marker, max_workers=max_workers, cache=read_cache)


def _no_lake_message(url: str) -> str:
    return (
        f"no marketlake lake at {url} (no {MARKER_KEY}): check --lake / MARKETLAKE_LAKE, or "
        "create it with 'marketlake ingest' ('marketlake demo' for a sample); a lake whose "
        "marker was lost gets it back from any write"
    )


def _require_lake(url: str | os.PathLike[str]) -> None:
    """For a local path: refuse before :func:`open_store` creates the directory."""
    text = os.fspath(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in ("", "file"):
        return  # remote: checked on the store (no directory to create)
    path = Path(text[len("file://") :] if scheme == "file" else text).expanduser().resolve()
    if not (path / MARKER_KEY).is_file():
        raise LakeNotFoundError(_no_lake_message(str(path)), url=str(path))


def _open_cache(
    store: ObjectStore, cache: bool | str | os.PathLike[str] | None, max_bytes: int | None
) -> ReadCache | None:
    remote = not (store.is_local or store.url.startswith("memory://"))
    if cache is None:
        cache = remote
    if cache is False:
        return None
    if cache is True:
        env = os.environ.get("MARKETLAKE_CACHE_DIR")
        directory = Path(env) if env else default_cache_dir()
    else:
        directory = Path(cache)
    if max_bytes is None:
        env_max = os.environ.get("MARKETLAKE_CACHE_MAX_BYTES")
        try:
            max_bytes = int(env_max) if env_max else DEFAULT_MAX_BYTES
        except ValueError:
            raise ConfigError(
                f"MARKETLAKE_CACHE_MAX_BYTES={env_max!r} is not a whole number of bytes"
            ) from None
    return ReadCache(directory, max_bytes)
