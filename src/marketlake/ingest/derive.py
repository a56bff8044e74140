"""Derived datasets in the batch: ``signals_technical`` and ``signals_valuation`` from the lake.

The pure computations live in :mod:`marketlake.derive` (technical indicators, point-in-time
valuation); this module is their I/O stage. For one ticker it reads the inputs from the lake --
raw ``prices`` (full history), ``corporate_actions`` and, for valuation, ``fundamentals`` (all
filings) -- computes the full history and returns the rows to write:

* normally the rows dated on or after ``since`` (the batch's first session): a daily run writes
  one new row per dataset and never rewrites older ones (the computations are prefix-stable);
* **the whole history** when the inputs changed before ``since``: the stored row of the last
  session before ``since`` is compared with the recomputed one, and any difference (a new split
  changes every earlier split-adjusted value; a late or restated filing changes valuations
  from its filing date on; a corrected old price) triggers a full rewrite. ``full=True`` forces
  it. The writer merges (new wins) and rewrites only partitions whose bytes change, so a re-run
  writes nothing.

Technical signals are computed on **split-adjusted** prices (basis of the last row, splits only,
no dividends) from the raw stored prices and the ticker's splits; sessions with a missing
open/high/low/close/volume are left out of the indicator inputs. Valuation signals use the raw
close of each date and only fundamentals filed (and splits effective) on or before it. A ticker
with no fundamentals gets no valuation rows.

:class:`DeriveSource` wraps this as a source (``marketlake derive``); the daily batch calls
:func:`derive_tables` itself for derived datasets its source does not provide.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketlake.derive.adjust import apply_adjustment
from marketlake.derive.technical import compute_technical
from marketlake.derive.valuation import compute_valuation
from marketlake.errors import MarketlakeError
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import Source, SourceRequest
from marketlake.storage.layout import Layout
from marketlake.storage.reader import PartitionReader

log = logging.getLogger("marketlake.derive")

DERIVED_DATASETS: tuple[str, ...] = ("signals_technical", "signals_valuation")
"""Datasets marketlake computes from other datasets (when a source does not provide them)."""

_PRICE_COLUMNS = ["date", "open", "high", "low", "close", "volume"]


def _read(
    reader: PartitionReader, dataset: str, ticker: str, columns: list[str] | None = None
) -> pa.Table:
    ds = get_dataset(dataset)
    cols = list(ds.schema.names) if columns is None else columns
    return reader.read(ds, ticker, None, None, cols)


def compute_derived(
    dataset: str, prices: pa.Table, actions: pa.Table, fundamentals: pa.Table | None
) -> pa.Table | None:
    """Full-history rows of a derived ``dataset`` from its inputs (pure). None when the inputs
    cannot give any row (no prices; no fundamentals for valuation)."""
    if prices.num_rows == 0:
        return None
    if dataset == "signals_technical":
        mask = None
        for name in ("open", "high", "low", "close", "volume"):
            valid = pc.is_valid(prices.column(name))
            mask = valid if mask is None else pc.and_(mask, valid)
        clean = prices.filter(mask) if mask is not None else prices
        if clean.num_rows == 0:
            return None
        adjusted = apply_adjustment(clean, actions, "splits")

        def col(name: str) -> np.ndarray:
            return np.asarray(adjusted.column(name).to_numpy(zero_copy_only=False), np.float64)

        return compute_technical(
            adjusted.column("date").to_numpy(zero_copy_only=False),
            col("open"),
            col("high"),
            col("low"),
            col("close"),
            col("volume"),
        )
    if dataset == "signals_valuation":
        if fundamentals is None or fundamentals.num_rows == 0:
            return None
        return compute_valuation(prices.select(["date", "close"]), fundamentals, actions)
    raise MarketlakeError(
        f"{dataset} is not a derived dataset; derived: {list(DERIVED_DATASETS)}", dataset=dataset
    )


def _row_at(table: pa.Table, day: dt.date) -> pa.Table:
    return table.filter(pc.equal(table.column("date"), pa.scalar(day, pa.date32())))


def derive_tables(
    reader: PartitionReader,
    ticker: str,
    datasets: tuple[str, ...] | list[str],
    since: dt.date | None,
    *,
    full: bool = False,
) -> dict[str, pa.Table]:
    """Rows to write for each derived dataset of ``ticker`` (see the module docstring).

    ``since`` None (or ``full=True``) returns the whole recomputed history.
    """
    wanted = [d for d in datasets if d in DERIVED_DATASETS]
    if not wanted:
        return {}
    # one chunk per column: a monthly lake returns one chunk per partition (60 for five years),
    # and the filter / adjustment / to_numpy steps below pay per chunk (~1 ms per ticker)
    prices = _read(reader, "prices", ticker, _PRICE_COLUMNS).combine_chunks()
    if prices.num_rows == 0:
        return {}
    actions = _read(reader, "corporate_actions", ticker)
    fundamentals = _read(reader, "fundamentals", ticker) if "signals_valuation" in wanted else None
    out: dict[str, pa.Table] = {}
    for name in wanted:
        table = compute_derived(name, prices, actions, fundamentals)
        if table is None:
            continue
        out[name] = table if full or since is None else _since(reader, name, ticker, table, since)
    return out


def _since(
    reader: PartitionReader, dataset: str, ticker: str, table: pa.Table, since: dt.date
) -> pa.Table:
    """The rows on/after ``since``, or all of them when the stored row of the last session
    before ``since`` differs from the recomputed one (inputs changed in the past)."""
    dates = table.column("date")
    before = table.filter(pc.less(dates, pa.scalar(since, pa.date32())))
    if before.num_rows == 0:
        return table
    last = before.column("date")[-1].as_py()
    ds = get_dataset(dataset)
    stored = reader.read(ds, ticker, last, last, list(ds.schema.names))
    if not stored.equals(_row_at(table, last)):
        log.info(
            "%s %s: stored row of %s differs from the recomputed one (a new split, a late "
            "filing or a corrected price): rewriting the full history",
            dataset,
            ticker,
            last,
        )
        return table
    return table.filter(pc.greater_equal(dates, pa.scalar(since, pa.date32())))


class DeriveSource(Source):
    """A source that reads the lake itself and computes the derived datasets
    (``marketlake derive``). Each request's ``start`` is the ``since`` of :func:`derive_tables`.

    Parameters
    ----------
    store_url, layouts:
        The lake to read (how worker processes re-open it); :meth:`bind_lake` uses the lake's
        own reader instead in the calling process.
    full:
        Rewrite the full history of every ticker.
    """

    name: ClassVar[str] = "derived"
    datasets: ClassVar[tuple[str, ...]] = DERIVED_DATASETS
    description: ClassVar[str] = (
        "marketlake's own derivations: technical signals (split-adjusted) and point-in-time "
        "valuation signals, computed from the lake's prices, corporate actions and fundamentals."
    )

    def __init__(
        self, store_url: str | None = None, layouts: dict[str, str] | None = None, *, full: bool
    ) -> None:
        self.store_url = store_url
        self.layouts = dict(layouts or {})
        self.full = full
        self._reader: PartitionReader | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # worker processes open the store by URL
        return state

    def bind_lake(self, lake: Any) -> None:
        """Read through the lake's own reader (and cache) in this process."""
        self._reader = lake.reader

    def _get_reader(self) -> PartitionReader:
        if self._reader is None:
            if self.store_url is None:
                raise MarketlakeError("DeriveSource needs a lake: call bind_lake(lake) first")
            from marketlake.storage.store import open_store

            store = open_store(self.store_url, fsync=False)
            self._reader = PartitionReader(
                store, {k: Layout.parse(v) for k, v in self.layouts.items()}
            )
        return self._reader

    def fetch(self, request: SourceRequest) -> dict[str, pa.Table]:
        return derive_tables(
            self._get_reader(), request.ticker, request.datasets, request.start, full=self.full
        )

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return dict(raw)


def run_derive(
    lake: Any,
    tickers: list[str] | None = None,
    datasets: tuple[str, ...] | list[str] = DERIVED_DATASETS,
    since: dt.date | None = None,
    *,
    full: bool = False,
    workers: int | None = None,
    progress: Any = None,
    processes: int | None = None,
) -> Any:
    """Recompute derived datasets for ``tickers`` (default: every ticker with ``prices``) as one
    resumable run (kind ``derive``, source ``derived``) and return its ``RunSummary``.

    ``since`` (a session date) writes the rows from that date on -- plus the full history of
    any ticker whose inputs changed before it; None or ``full=True`` rewrites full histories.
    Idempotent: a second identical call writes nothing.
    """
    from marketlake.ingest.batch import run_batch

    names = tickers if tickers else lake.tickers("prices")
    if not names:
        raise MarketlakeError("no tickers: the lake has no prices yet (ingest them first)")
    start = since or dt.date(1900, 1, 1)
    end = max(start, dt.datetime.now(dt.UTC).date())
    source = DeriveSource(
        lake.store.open_url,
        {k: v.template for k, v in lake.layouts.items()},
        full=full or since is None,
    )
    return run_batch(
        lake,
        source,
        names,
        list(datasets),
        start,
        end,
        kind="derive",
        workers=workers,
        progress=progress,
        processes=processes,
    )
