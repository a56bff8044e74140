"""Coverage of the lake against calendars: what should be there, what is, and how fresh it is.

Pure computation over the catalog (partition rows: row counts and date ranges per object) plus,
where counts cannot settle the question, the time column of the data itself. Nothing is written.

What is measured
----------------
* **Session datasets** (``prices``, ``signals_valuation``, ``signals_technical``: one row per
  session date) against the NYSE calendar (``exchange-calendars``: holidays and half days), only
  within each ticker's life in the lake (first to last row), so a listing in 2021 is not a gap
  in 2020. A partition (a month, a year, a compacted history object) whose row count equals
  the sessions of its period within the ticker's life is taken as complete from the catalog
  alone (as ``month_progress`` does); only the other partitions' dates are read.
  ``exact=True`` reads every date (slower: one decode per object).
* **Minute bars** (``bars_minute``): sessions with at least one bar, by New York session date
  (bars are keyed in UTC), against the NYSE calendar. The bar count per session is a rule of
  :mod:`marketlake.quality.rules`, not coverage.
* **Crypto bars** (``crypto_bars``) per pair and exchange on a 24/7 calendar: the bar interval is
  inferred (the most common step between bars) and every interval slot between the first and
  the last bar is expected.
* Other datasets (fundamentals, corporate actions, filings, reference tables) have no calendar:
  they appear in :attr:`Coverage.storage` (rows, objects, bytes, date range) only.

A ticker's sessions count under the source that supplied most of its rows. Freshness compares
each asset's last date with the last session whose data should be final (18:00 New York, see
:func:`marketlake.ingest.update.last_completed_session`; for crypto, the last complete UTC day):
``fresh`` (up to date), ``due`` (behind, first missing session settled at most 24 h ago),
``late`` (24-48 h: a warning), ``stale`` (more than 48 h: an alert).
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from marketlake import calendars
from marketlake.catalog import MonitoredAsset, PartitionRow
from marketlake.errors import MarketlakeError
from marketlake.ingest.completion import is_session_dataset
from marketlake.schemas.datasets import get_dataset, list_datasets
from marketlake.storage.layout import is_history, period_bounds, split_sub

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "BY_TICKER_SCHEMA",
    "BY_YEAR_SCHEMA",
    "CALENDAR_24_7",
    "FRESHNESS_SCHEMA",
    "GAPS_SCHEMA",
    "LATE_HOURS",
    "STALE_HOURS",
    "STORAGE_SCHEMA",
    "TICKER_YEAR_SCHEMA",
    "Coverage",
    "FreshnessInput",
    "assess_freshness",
    "compute_coverage",
    "freshness_inputs_from_progress",
    "worst_tickers",
]

CALENDAR_24_7 = "24/7"
"""Calendar name used for crypto bars: every interval of every day is expected."""

MINUTE_DATASET = "bars_minute"
CRYPTO_DATASET = "crypto_bars"

LATE_HOURS = 24.0
"""A missing session settled more than this many hours ago makes an asset ``late`` (warning)."""

STALE_HOURS = 48.0
"""A missing session settled more than this many hours ago makes an asset ``stale`` (alert)."""

FRESHNESS_STATUSES = ("fresh", "due", "late", "stale")
"""Freshness statuses from best to worst."""

_NEW_YORK = ZoneInfo("America/New_York")
_US_PER_DAY = 86_400_000_000
_EPOCH = dt.date(1970, 1, 1)
_FIRST_KNOWN = (calendars.CALENDAR_START - _EPOCH).days

BY_YEAR_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("source", pa.string(), False),
        pa.field("year", pa.int32(), False),
        pa.field("unit", pa.string(), False),
        pa.field("tickers", pa.int64(), False),
        pa.field("expected", pa.int64(), False),
        pa.field("present", pa.int64(), False),
        pa.field("missing", pa.int64(), False),
        pa.field("pct", pa.float64(), False),
    ]
)
"""Coverage by dataset x source x year: expected and present sessions (or bars), percent."""

BY_TICKER_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("ticker", pa.string(), False),
        pa.field("exchange", pa.string()),
        pa.field("source", pa.string(), False),
        pa.field("unit", pa.string(), False),
        pa.field("first", pa.string(), False),
        pa.field("last", pa.string(), False),
        pa.field("expected", pa.int64(), False),
        pa.field("present", pa.int64(), False),
        pa.field("missing", pa.int64(), False),
        pa.field("pct", pa.float64(), False),
        pa.field("gaps", pa.int64(), False),
        pa.field("largest_gap", pa.int64(), False),
        pa.field("off_calendar", pa.int64(), False),
        pa.field("interval_s", pa.int64()),
    ]
)
"""Coverage per (dataset, ticker[, exchange]) over its life in the lake."""

TICKER_YEAR_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("ticker", pa.string(), False),
        pa.field("exchange", pa.string()),
        pa.field("year", pa.int32(), False),
        pa.field("expected", pa.int64(), False),
        pa.field("present", pa.int64(), False),
        pa.field("pct", pa.float64(), False),
    ]
)
"""Coverage per (dataset, ticker[, exchange], year): the heatmap's cells."""

GAPS_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("ticker", pa.string(), False),
        pa.field("exchange", pa.string()),
        pa.field("source", pa.string(), False),
        pa.field("unit", pa.string(), False),
        pa.field("start", pa.string(), False),
        pa.field("end", pa.string(), False),
        pa.field("missing", pa.int64(), False),
        pa.field("days", pa.int64(), False),
    ]
)
"""Missing ranges: first and last missing session (or bar start, UTC), how many, days spanned."""

FRESHNESS_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("ticker", pa.string(), False),
        pa.field("exchange", pa.string()),
        pa.field("source", pa.string(), False),
        pa.field("calendar", pa.string(), False),
        pa.field("last", pa.date32(), False),
        pa.field("expected", pa.date32(), False),
        pa.field("behind", pa.int64(), False),
        pa.field("due_at", pa.timestamp("us", tz="UTC")),
        pa.field("status", pa.string(), False),
        pa.field("monitored", pa.bool_(), False),
    ]
)
"""Freshness per asset: last date held, the last date expected, sessions (days) behind, when the
first missing one became due, status (fresh, due, late, stale) and whether it is monitored."""

STORAGE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), False),
        pa.field("source", pa.string(), False),
        pa.field("tickers", pa.int64(), False),
        pa.field("objects", pa.int64(), False),
        pa.field("meta_objects", pa.int64(), False),
        pa.field("rows", pa.int64(), False),
        pa.field("bytes", pa.int64(), False),
        pa.field("first", pa.date32()),
        pa.field("last", pa.date32()),
    ]
)
"""Storage per dataset x source from the catalog: tickers, data objects, ``_meta`` objects
(one per dataset and ticker, counted under the ticker's main source), rows, bytes, dates."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Coverage:
    """Everything :func:`compute_coverage` found, as Arrow tables (sorted, deterministic).

    Attributes
    ----------
    now:
        The instant freshness was judged at (UTC).
    by_year, by_ticker, ticker_year, gaps, freshness, storage:
        Tables with :data:`BY_YEAR_SCHEMA`, :data:`BY_TICKER_SCHEMA`,
        :data:`TICKER_YEAR_SCHEMA`, :data:`GAPS_SCHEMA` (largest first), :data:`FRESHNESS_SCHEMA`
        and :data:`STORAGE_SCHEMA`.
    empty_datasets:
        Registered datasets the lake holds no rows of.
    unknown_source:
        ``{dataset: objects}`` whose rows carry no source name (written by hand: ``manual``).
    monitored_missing:
        ``(ticker, dataset)`` pairs monitored by ``marketlake update`` with no rows yet.
    exact:
        Whether every date was read (``exact=True``) or complete partitions were taken from
        the catalog's row counts.
    """

    now: dt.datetime
    by_year: pa.Table
    by_ticker: pa.Table
    ticker_year: pa.Table
    gaps: pa.Table
    freshness: pa.Table
    storage: pa.Table
    empty_datasets: tuple[str, ...] = ()
    unknown_source: dict[str, int] = field(default_factory=dict)
    monitored_missing: tuple[tuple[str, str], ...] = ()
    exact: bool = False

    def status_counts(self, *, monitored_only: bool = False) -> dict[str, int]:
        """Assets per freshness status (every status present, zero when none)."""
        return _status_counts(self.freshness, monitored_only=monitored_only)


# --- freshness (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FreshnessInput:
    """One asset to judge: its last date held and the calendar it trades on.

    ``calendar`` is an exchange calendar name (``"XNYS"``) or :data:`CALENDAR_24_7`.
    """

    dataset: str
    ticker: str
    source: str
    last: dt.date
    calendar: str = calendars.DEFAULT_CALENDAR
    exchange: str | None = None
    monitored: bool = False


def _utc(now: dt.datetime | None) -> dt.datetime:
    instant = now or dt.datetime.now(dt.UTC)
    if instant.tzinfo is None:
        raise MarketlakeError(f"now={instant.isoformat()} has no time zone; pass an aware time")
    return instant.astimezone(dt.UTC)


def _status(overdue_hours: float) -> str:
    if overdue_hours > STALE_HOURS:
        return "stale"
    if overdue_hours > LATE_HOURS:
        return "late"
    return "due"


def assess_freshness(items: Iterable[FreshnessInput], now: dt.datetime | None = None) -> pa.Table:
    """Judge the freshness of assets at ``now`` (pure; the calendar is the only lookup).

    Parameters
    ----------
    items:
        Assets with their last date held.
    now:
        Aware instant (default: the current time).

    Returns
    -------
    pyarrow.Table
        :data:`FRESHNESS_SCHEMA`, sorted worst first (stale, late, due, fresh), then by
        ``due_at``, dataset, ticker, exchange.
    """
    from marketlake.ingest.update import SETTLE_TIME, last_completed_session

    instant = _utc(now)
    session_expected: dict[str, dt.date] = {}
    day_expected = instant.date() - dt.timedelta(days=1)  # last complete UTC day
    rows: list[tuple[Any, ...]] = []
    for it in items:
        due_at: dt.datetime | None = None
        if it.calendar == CALENDAR_24_7:
            expected = day_expected
            behind = max(0, (expected - it.last).days)
            if behind:
                due_at = dt.datetime.combine(it.last + dt.timedelta(days=2), dt.time(), dt.UTC)
        else:
            if it.calendar not in session_expected:
                session_expected[it.calendar] = last_completed_session(instant, it.calendar)
            expected = session_expected[it.calendar]
            missing = calendars.sessions_array(
                it.last + dt.timedelta(days=1), expected, it.calendar
            )
            behind = int(missing.size)
            if behind:
                first_missing = missing[0].item()
                due_at = dt.datetime.combine(first_missing, SETTLE_TIME, _NEW_YORK).astimezone(
                    dt.UTC
                )
        overdue = None if due_at is None else (instant - due_at).total_seconds() / 3600.0
        status = "fresh" if overdue is None else _status(overdue)
        rows.append(
            (
                it.dataset,
                it.ticker,
                it.exchange,
                it.source,
                it.calendar,
                it.last,
                expected,
                behind,
                due_at,
                status,
                it.monitored,
            )
        )
    rank = {s: i for i, s in enumerate(reversed(FRESHNESS_STATUSES))}
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    rows.sort(key=lambda r: (rank[r[9]], r[8] or far, r[0], r[1], r[2] or ""))
    return _table(rows, FRESHNESS_SCHEMA)


def freshness_inputs_from_progress(
    lake: Lake, *, monitored_only: bool = True, active_only: bool = True
) -> tuple[list[FreshnessInput], list[MonitoredAsset]]:
    """Freshness inputs from the catalog's watermarks (cheap: no partition scan, no data read).

    Parameters
    ----------
    lake:
        The lake (its catalog).
    monitored_only:
        Only (ticker, dataset) pairs of monitored assets (``marketlake assets``).
    active_only:
        Only active monitored assets.

    Returns
    -------
    tuple
        The inputs (datasets with a calendar only) and the monitored assets that have no
        watermark for some dataset yet (never collected).
    """
    monitored = lake.catalog.monitored(active_only=active_only)
    wanted = {(a.ticker, d) for a in monitored for d in a.datasets}
    marks: dict[tuple[str, str], tuple[dt.date, str]] = {}
    for p in lake.catalog.progress():
        if p.last_date is None or (monitored_only and (p.ticker, p.dataset) not in wanted):
            continue
        held = marks.get((p.dataset, p.ticker))
        if held is None or p.last_date > held[0]:
            marks[(p.dataset, p.ticker)] = (p.last_date, p.source)
    items: list[FreshnessInput] = []
    for (dataset, ticker), (last, source) in sorted(marks.items()):
        cal = _calendar_of(dataset)
        if cal is not None:
            items.append(
                FreshnessInput(
                    dataset=dataset,
                    ticker=ticker,
                    source=source,
                    last=last,
                    calendar=cal,
                    monitored=(ticker, dataset) in wanted,
                )
            )
    never = [
        a
        for a in monitored
        if any((d, a.ticker) not in marks and _calendar_of(d) is not None for d in a.datasets)
    ]
    return items, never


def _calendar_of(dataset: str) -> str | None:
    """The calendar a dataset's freshness is judged on, or None (no calendar)."""
    if dataset == CRYPTO_DATASET:
        return CALENDAR_24_7
    if dataset == MINUTE_DATASET:
        return calendars.DEFAULT_CALENDAR
    try:
        ds = get_dataset(dataset)
    except MarketlakeError:
        return None
    return calendars.DEFAULT_CALENDAR if is_session_dataset(ds) else None


def _status_counts(table: pa.Table, *, monitored_only: bool = False) -> dict[str, int]:
    counts = dict.fromkeys(FRESHNESS_STATUSES, 0)
    if monitored_only:
        table = table.filter(table.column("monitored"))
    for status in table.column("status").to_pylist():
        counts[status] = counts.get(status, 0) + 1
    return counts


# --- helpers ------------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(list(col), f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _days(values: Any) -> IntArray:
    """date32 column or datetime64[D] values -> int64 days since 1970-01-01."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype="datetime64[D]").astype(np.int64)


def _day_text(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=int(day))).isoformat()


def _ts_text(us: int) -> str:
    stamp = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pct(present: int, expected: int) -> float:
    return round(100.0 * present / expected, 4) if expected else 100.0


def _runs(indices: IntArray) -> tuple[IntArray, IntArray]:
    """Start and end positions (inclusive) of runs of consecutive integers in sorted ``indices``."""
    if indices.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [indices.size - 1]])
    return indices[starts], indices[ends]


def _main_source(parts: Sequence[PartitionRow]) -> str:
    """The source of most rows (ties: the alphabetically first), ``manual`` when none."""
    rows: Counter[str] = Counter()
    for p in parts:
        rows[p.source or "manual"] += p.row_count
    return min(rows.items(), key=lambda kv: (-kv[1], kv[0]))[0] if rows else "manual"


# --- session datasets --------------------------------------------------------------------------


@dataclass
class _Sessions:
    """The NYSE sessions covering the lake (day numbers) with their year."""

    days: IntArray
    years: IntArray

    @classmethod
    def between(cls, lo: dt.date, hi: dt.date, calendar: str) -> _Sessions:
        arr = calendars.sessions_array(lo, hi, calendar)
        days = arr.astype("datetime64[D]").astype(np.int64)
        years = arr.astype("datetime64[Y]").astype(np.int64) + 1970
        return cls(days, years)


@dataclass
class _Result:
    """Per-ticker output rows, accumulated."""

    by_ticker: list[tuple[Any, ...]] = field(default_factory=list)
    ticker_year: list[tuple[Any, ...]] = field(default_factory=list)
    year_cells: dict[tuple[str, str, int, str], list[int]] = field(default_factory=dict)
    year_tickers: dict[tuple[str, str, int, str], set[tuple[str, str | None]]] = field(
        default_factory=dict
    )
    gaps: list[tuple[Any, ...]] = field(default_factory=list)
    lives: list[FreshnessInput] = field(default_factory=list)

    def add_years(
        self,
        dataset: str,
        ticker: str,
        exchange: str | None,
        source: str,
        unit: str,
        years: IntArray,
        expected: IntArray,
        present: IntArray,
    ) -> None:
        for year, e, p in zip(years.tolist(), expected.tolist(), present.tolist(), strict=True):
            if e == 0 and p == 0:
                continue
            key = (dataset, source, int(year), unit)
            cell = self.year_cells.setdefault(key, [0, 0])
            cell[0] += int(e)
            cell[1] += int(p)
            self.year_tickers.setdefault(key, set()).add((ticker, exchange))
            self.ticker_year.append((dataset, ticker, exchange, int(year), e, p, _pct(p, e)))


def _cover_sessions(
    res: _Result,
    sess: _Sessions,
    dataset: str,
    ticker: str,
    source: str,
    first: int,
    last: int,
    trusted: Sequence[tuple[int, int]],
    dates: IntArray | None,
    calendar: str,
    monitored: bool,
) -> None:
    """Coverage of one ticker's session dates over its life ``[first, last]`` (day numbers).

    ``trusted`` are session index ranges ``[lo, hi)`` (into ``sess``) known complete from the
    catalog's counts; ``dates`` are the (sorted, unique) dates read from the data elsewhere.
    """
    i0 = int(np.searchsorted(sess.days, first, side="left"))
    i1 = int(np.searchsorted(sess.days, last, side="right"))
    days = sess.days[i0:i1]
    present = np.zeros(days.size, dtype=bool)
    for lo, hi in trusted:
        present[max(lo, i0) - i0 : max(min(hi, i1), i0) - i0] = True
    off = 0
    if dates is not None and dates.size:
        in_calendar = np.isin(dates, days)
        known = dates >= _FIRST_KNOWN  # before the calendar's coverage nothing is off it
        off = int(np.count_nonzero(known & ~in_calendar))
        present |= np.isin(days, dates[in_calendar])
    years = sess.years[i0:i1]
    if days.size:
        y0 = int(years[0])
        exp_y = np.bincount(years - y0)
        pres_y = np.bincount(years - y0, weights=present).astype(np.int64)
        year_list = np.arange(y0, y0 + exp_y.size, dtype=np.int64)
        res.add_years(dataset, ticker, None, source, "sessions", year_list, exp_y, pres_y)
    missing_pos = np.flatnonzero(~present)
    starts, ends = _runs(missing_pos)
    sizes = ends - starts + 1
    for s, e, n in zip(starts.tolist(), ends.tolist(), sizes.tolist(), strict=True):
        d0, d1 = int(days[s]), int(days[e])
        res.gaps.append(
            (
                dataset,
                ticker,
                None,
                source,
                "sessions",
                _day_text(d0),
                _day_text(d1),
                n,
                d1 - d0 + 1,
            )
        )
    n_present = int(np.count_nonzero(present))
    res.by_ticker.append(
        (
            dataset,
            ticker,
            None,
            source,
            "sessions",
            _day_text(first),
            _day_text(last),
            int(days.size),
            n_present,
            int(days.size) - n_present,
            _pct(n_present, int(days.size)),
            int(starts.size),
            int(sizes.max()) if sizes.size else 0,
            off,
            None,
        )
    )
    res.lives.append(
        FreshnessInput(
            dataset=dataset,
            ticker=ticker,
            source=source,
            last=_EPOCH + dt.timedelta(days=last),
            calendar=calendar,
            monitored=monitored,
        )
    )


# --- crypto bars (24/7) ---------------------------------------------------------------------------


def _interval(ts: IntArray) -> int:
    """The most common positive step between sorted unique bar starts (µs); one day if unknown."""
    if ts.size < 2:
        return _US_PER_DAY
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    return int(steps[int(np.argmax(counts))])  # ties: the smallest step (np.unique sorts)


def _year_start_us(year: int) -> int:
    return (dt.date(year, 1, 1) - _EPOCH).days * _US_PER_DAY


def _cover_bars(
    res: _Result,
    ticker: str,
    exchange: str,
    source: str,
    ts: IntArray,
    monitored: bool,
) -> None:
    """Coverage of one (pair, exchange) on a 24/7 grid of its inferred bar interval."""
    ts = np.unique(ts)
    if ts.size == 0:
        return
    iv = _interval(ts)
    t0 = int(ts[0])
    offsets = ts - t0
    on_grid = offsets % iv == 0
    slots = np.unique(offsets[on_grid] // iv)
    expected = int(slots[-1]) + 1
    n_present = int(slots.size)
    # per year: slots whose start falls in the year
    first_year = int(ts[0].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64)) + 1970
    last_year = int(ts[-1].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64)) + 1970
    years = np.arange(first_year, last_year + 1, dtype=np.int64)
    exp_y: list[int] = []
    for y in years.tolist():
        lo = max(0, -((t0 - _year_start_us(y)) // iv))  # ceil((start - t0) / iv)
        hi = min(expected, -((t0 - _year_start_us(y + 1)) // iv))
        exp_y.append(max(0, hi - lo))
    slot_years = (t0 + slots * iv).astype("datetime64[us]").astype("datetime64[Y]").astype(
        np.int64
    ) + 1970
    pres_y = np.bincount(slot_years - first_year, minlength=years.size).astype(np.int64)
    res.add_years(
        CRYPTO_DATASET,
        ticker,
        exchange,
        source,
        "bars",
        years,
        np.asarray(exp_y, np.int64),
        pres_y,
    )
    steps = np.diff(slots)
    holes = np.flatnonzero(steps > 1)
    largest = 0
    for j in holes.tolist():
        a, b = int(slots[j]) + 1, int(slots[j + 1]) - 1
        n = b - a + 1
        largest = max(largest, n)
        start, end = t0 + a * iv, t0 + b * iv
        span_days = -(-(end + iv - start) // _US_PER_DAY)
        res.gaps.append(
            (
                CRYPTO_DATASET,
                ticker,
                exchange,
                source,
                "bars",
                _ts_text(start),
                _ts_text(end),
                n,
                int(span_days),
            )
        )
    res.by_ticker.append(
        (
            CRYPTO_DATASET,
            ticker,
            exchange,
            source,
            "bars",
            _ts_text(t0),
            _ts_text(int(ts[-1])),
            expected,
            n_present,
            expected - n_present,
            _pct(n_present, expected),
            int(holes.size),
            largest,
            int(ts.size - np.count_nonzero(on_grid)),
            iv // 1_000_000,
        )
    )
    last_day = dt.date.fromisoformat(_ts_text(int(ts[-1]))[:10])
    res.lives.append(
        FreshnessInput(
            dataset=CRYPTO_DATASET,
            ticker=ticker,
            source=source,
            last=last_day,
            calendar=CALENDAR_24_7,
            exchange=exchange,
            monitored=monitored,
        )
    )


# --- storage --------------------------------------------------------------------------------------


def _storage(groups: dict[tuple[str, str], list[PartitionRow]]) -> pa.Table:
    acc: dict[tuple[str, str], list[Any]] = {}
    for (dataset, _ticker), parts in groups.items():
        main = _main_source(parts)
        for p in parts:
            src = p.source or "manual"
            cell = acc.setdefault((dataset, src), [set(), 0, 0, 0, 0, None, None])
            cell[0].add(p.ticker)
            cell[1] += 1
            cell[3] += p.row_count
            cell[4] += p.bytes
            if p.min_date is not None:
                cell[5] = p.min_date if cell[5] is None else min(cell[5], p.min_date)
            if p.max_date is not None:
                cell[6] = p.max_date if cell[6] is None else max(cell[6], p.max_date)
        acc.setdefault((dataset, main), [set(), 0, 0, 0, 0, None, None])[2] += 1
    rows = [
        (d, s, len(c[0]), c[1], c[2], c[3], c[4], c[5], c[6]) for (d, s), c in sorted(acc.items())
    ]
    return _table(rows, STORAGE_SCHEMA)


# --- the whole lake -----------------------------------------------------------------------------


def compute_coverage(
    lake: Lake,
    *,
    now: dt.datetime | None = None,
    datasets: Sequence[str] | None = None,
    tickers: Sequence[str] | None = None,
    exact: bool = False,
    workers: int | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> Coverage:
    """Compute the lake's coverage, gaps, freshness and storage figures.

    Parameters
    ----------
    lake:
        The lake; its catalog lists the partitions (rebuild it first if in doubt:
        ``marketlake catalog rebuild``).
    now:
        Aware instant freshness is judged at (default: the current time).
    datasets, tickers:
        Only these (default: everything in the catalog).
    exact:
        Read every session date instead of trusting partitions whose row count equals their
        expected sessions.
    workers:
        Threads reading data (default: the CPU count, at most 8).
    calendar:
        Exchange calendar of the equity datasets (default NYSE).

    Returns
    -------
    Coverage
        Deterministic tables (same lake and ``now`` -> same tables).
    """
    from marketlake.schemas.tickers import normalize_ticker

    instant = _utc(now)
    names = [get_dataset(d).name for d in datasets] if datasets else None
    symbols = {normalize_ticker(t) for t in tickers} if tickers else None
    parts: list[PartitionRow] = []
    if names is None:
        parts = lake.catalog.partitions()
    else:
        for name in sorted(set(names)):
            parts.extend(lake.catalog.partitions(dataset=name))
    if symbols is not None:
        parts = [p for p in parts if p.ticker in symbols]
    groups: dict[tuple[str, str], list[PartitionRow]] = defaultdict(list)
    for p in parts:
        groups[(p.dataset, p.ticker)].append(p)
    monitored = lake.catalog.monitored()
    watched = {(a.ticker, d) for a in monitored for d in a.datasets}

    session_keys: list[tuple[str, str]] = []
    minute_keys: list[tuple[str, str]] = []
    crypto_keys: list[tuple[str, str]] = []
    for key in sorted(groups):
        dataset = key[0]
        if dataset == CRYPTO_DATASET:
            crypto_keys.append(key)
        elif dataset == MINUTE_DATASET:
            minute_keys.append(key)
        elif _is_session(dataset):
            session_keys.append(key)

    # plan the reads: (dataset, ticker, lo, hi, columns)
    reads: list[tuple[str, str, dt.date, dt.date, tuple[str, ...]]] = []
    trusted: dict[tuple[str, str], list[tuple[int, int]]] = {}
    lo_all = hi_all = None
    for key in session_keys:
        held = [p for p in groups[key] if p.min_date is not None and p.max_date is not None]
        if not held:
            continue
        first = min(p.min_date for p in held if p.min_date is not None)
        last = max(p.max_date for p in held if p.max_date is not None)
        lo_all = first if lo_all is None else min(lo_all, first)
        hi_all = last if hi_all is None else max(hi_all, last)
    sess = _Sessions.between(lo_all, hi_all, calendar) if lo_all and hi_all else None
    for key in session_keys:
        dataset, ticker = key
        held = [p for p in groups[key] if p.min_date is not None and p.max_date is not None]
        if not held or sess is None:
            continue
        if exact:
            first = min(p.min_date for p in held if p.min_date is not None)
            last = max(p.max_date for p in held if p.max_date is not None)
            reads.append((dataset, ticker, first, last, (get_dataset(dataset).time_column,)))
            trusted[key] = []
            continue
        ok, suspect = _screen(sess, held)
        trusted[key] = ok
        for lo, hi in suspect:
            reads.append((dataset, ticker, lo, hi, (get_dataset(dataset).time_column,)))
    for key in minute_keys:
        held = [p for p in groups[key] if p.min_date is not None and p.max_date is not None]
        if held:
            first = min(p.min_date for p in held if p.min_date is not None)
            last = max(p.max_date for p in held if p.max_date is not None)
            reads.append((key[0], key[1], first, last, ("ts",)))
    for key in crypto_keys:
        held = [p for p in groups[key] if p.min_date is not None and p.max_date is not None]
        if held:
            first = min(p.min_date for p in held if p.min_date is not None)
            last = max(p.max_date for p in held if p.max_date is not None)
            reads.append((key[0], key[1], first, last, ("ts", "exchange")))

    tables = _read_all(lake, reads, workers)

    res = _Result()
    if sess is not None:
        read_dates: dict[tuple[str, str], list[IntArray]] = defaultdict(list)
        for (dataset, ticker, _lo, _hi, cols), table in zip(reads, tables, strict=True):
            if dataset not in (MINUTE_DATASET, CRYPTO_DATASET):
                read_dates[(dataset, ticker)].append(_days(table.column(cols[0])))
        for key in session_keys:
            held = [p for p in groups[key] if p.min_date is not None and p.max_date is not None]
            if not held:
                continue
            chunks = read_dates.get(key)
            dates = np.unique(np.concatenate(chunks)) if chunks else None
            first = min(p.min_date for p in held if p.min_date is not None)
            last = max(p.max_date for p in held if p.max_date is not None)
            _cover_sessions(
                res,
                sess,
                key[0],
                key[1],
                _main_source(groups[key]),
                (first - _EPOCH).days,
                (last - _EPOCH).days,
                trusted.get(key, []),
                dates,
                calendar,
                (key[1], key[0]) in watched,
            )
    for (dataset, ticker, _lo, _hi, _cols), table in zip(reads, tables, strict=True):
        key = (dataset, ticker)
        if dataset == MINUTE_DATASET and table.num_rows:
            local = pc.cast(pc.local_timestamp(_as_ny(table.column("ts"))), pa.date32())
            dates = np.unique(_days(local))
            msess = _Sessions.between(
                _EPOCH + dt.timedelta(days=int(dates[0])),
                _EPOCH + dt.timedelta(days=int(dates[-1])),
                calendar,
            )
            _cover_sessions(
                res,
                msess,
                dataset,
                ticker,
                _main_source(groups[key]),
                int(dates[0]),
                int(dates[-1]),
                [],
                dates,
                calendar,
                (ticker, dataset) in watched,
            )
        elif dataset == CRYPTO_DATASET and table.num_rows:
            ts = table.column("ts").cast(pa.int64()).to_numpy()
            exch = table.column("exchange").to_numpy(zero_copy_only=False)
            for name in sorted(set(exch.tolist())):
                src = _main_source([p for p in groups[key] if split_sub(p.period)[0] == name])
                _cover_bars(
                    res, ticker, str(name), src, ts[exch == name], (ticker, dataset) in watched
                )

    by_year_rows = [
        (d, s, y, u, len(res.year_tickers[(d, s, y, u)]), e, p, e - p, _pct(p, e))
        for (d, s, y, u), (e, p) in sorted(res.year_cells.items())
    ]
    gap_rows = sorted(res.gaps, key=lambda g: (-g[8], -g[7], g[0], g[1], g[2] or "", g[5]))
    held_datasets = {p.dataset for p in parts}
    scope = names or [d.name for d in list_datasets()]
    unknown: Counter[str] = Counter(p.dataset for p in parts if (p.source or "manual") == "manual")
    monitored_missing = sorted(
        (a.ticker, d)
        for a in monitored
        for d in a.datasets
        if (d, a.ticker) not in groups
        and (names is None or d in names)
        and (symbols is None or a.ticker in symbols)
    )
    return Coverage(
        now=instant,
        by_year=_table(by_year_rows, BY_YEAR_SCHEMA),
        by_ticker=_table(sorted(res.by_ticker, key=_ticker_key), BY_TICKER_SCHEMA),
        ticker_year=_table(
            sorted(res.ticker_year, key=lambda r: (r[0], r[1], r[2] or "", r[3])),
            TICKER_YEAR_SCHEMA,
        ),
        gaps=_table(gap_rows, GAPS_SCHEMA),
        freshness=assess_freshness(res.lives, instant),
        storage=_storage(groups),
        empty_datasets=tuple(sorted(d for d in scope if d not in held_datasets)),
        unknown_source=dict(sorted(unknown.items())),
        monitored_missing=tuple(dict.fromkeys(monitored_missing)),
        exact=exact,
    )


def _ticker_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return (row[0], row[1], row[2] or "")


def _is_session(dataset: str) -> bool:
    try:
        return is_session_dataset(get_dataset(dataset))
    except MarketlakeError:
        return False


def _as_ny(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    return ts.cast(pa.timestamp("us", tz="America/New_York"))


def _period_span(label: str) -> tuple[dt.date, dt.date]:
    """Inclusive calendar bounds of a partition label: ``YYYY-MM-DD``, ``YYYY-MM``, ``YYYY``,
    ``upto-YYYY-MM`` (a compacted history object: everything through that month) or ``all``."""
    bounds = period_bounds(label)
    if bounds is None:
        return dt.date.min, dt.date.max
    return (dt.date.min if is_history(label) else bounds[0]), bounds[1]


def _screen(
    sess: _Sessions, held: Sequence[PartitionRow]
) -> tuple[list[tuple[int, int]], list[tuple[dt.date, dt.date]]]:
    """Split a ticker's partitions into those complete by count and date ranges to read.

    A partition is complete by count when it holds exactly as many rows as its period (a month,
    a year, a compacted history object's months, the whole file) has sessions within the
    ticker's life: its rows are unique dates, so that means every session. Returns the complete
    partitions as session index ranges ``[lo, hi)`` into ``sess`` and the ranges to read.
    """
    first = min(p.min_date for p in held if p.min_date is not None)
    last = max(p.max_date for p in held if p.max_date is not None)
    ok: list[tuple[int, int]] = []
    suspect: list[tuple[dt.date, dt.date]] = []
    for p in held:
        if p.min_date is None or p.max_date is None:
            continue
        try:
            span_lo, span_hi = _period_span(p.period)
        except ValueError:  # a label this code does not know: read it
            span_lo, span_hi = p.min_date, p.max_date
        lo = (max(span_lo, first) - _EPOCH).days
        hi = (min(span_hi, last) - _EPOCH).days
        i_lo = int(np.searchsorted(sess.days, lo, side="left"))
        i_hi = int(np.searchsorted(sess.days, hi, side="right"))
        if i_hi > i_lo and p.row_count == i_hi - i_lo:
            ok.append((i_lo, i_hi))
        elif suspect and (p.min_date - suspect[-1][1]).days <= 31:  # near: one read
            suspect[-1] = (min(suspect[-1][0], p.min_date), max(suspect[-1][1], p.max_date))
        else:
            suspect.append((p.min_date, p.max_date))
    return ok, suspect


def _read_all(
    lake: Lake,
    reads: Sequence[tuple[str, str, dt.date, dt.date, tuple[str, ...]]],
    workers: int | None,
) -> list[pa.Table]:
    """Read the planned (dataset, ticker, range, columns) slices concurrently, in order."""
    if not reads:
        return []
    n = workers or min(8, os.cpu_count() or 1)

    def one(item: tuple[str, str, dt.date, dt.date, tuple[str, ...]]) -> pa.Table:
        dataset, ticker, lo, hi, cols = item
        table: pa.Table = lake.read(ticker, dataset, lo, hi, columns=list(cols), output="arrow")
        return table

    if n <= 1 or len(reads) == 1:
        return [one(r) for r in reads]
    with ThreadPoolExecutor(n, thread_name_prefix="marketlake-coverage") as pool:
        return list(pool.map(one, reads))


def worst_tickers(coverage: Coverage, dataset: str, limit: int) -> list[str]:
    """Tickers of ``dataset`` ordered by coverage (lowest first, then name), at most ``limit``."""
    table = coverage.by_ticker.filter(pc.equal(coverage.by_ticker.column("dataset"), dataset))
    rows = sorted(
        zip(table.column("pct").to_pylist(), table.column("ticker").to_pylist(), strict=True)
    )
    return list(dict.fromkeys(t for _, t in rows))[:limit]
