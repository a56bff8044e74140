"""Month completion: which months of a daily dataset hold every exchange session.

For each (dataset, ticker) of a *session dataset* (a ``date`` time column that is the whole key:
``prices``, ``signals_*``) the catalog's ``month_progress`` table holds one row per month from the
ticker's first held date to its last: sessions expected, sessions present, rows, bytes, the object
key, and ``complete``. A month is complete when its last exchange session is on or before
``as_of`` (the month has ended for collection purposes) and every session of the month from the
ticker's first held date on is present. Holidays are not sessions, so they are never expected.

Counting uses the catalog's partition rows (no data reads) when the dataset is laid out by month
(one object per month, one row per date); other layouts read the month's dates.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from marketlake import calendars
from marketlake.catalog import MonthProgressRow, PartitionRow, utc_now_iso
from marketlake.schemas.datasets import Dataset, get_dataset
from marketlake.storage.layout import covered_month, is_history

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "complete_months",
    "is_session_dataset",
    "month_bounds",
    "month_label",
    "months_between",
    "refresh_months",
]


def month_label(day: dt.date) -> str:
    """Return ``"YYYY-MM"`` for ``day``."""
    return f"{day.year:04d}-{day.month:02d}"


def month_bounds(label: str) -> tuple[dt.date, dt.date]:
    """Return the first and last calendar day of month ``"YYYY-MM"``."""
    year, month = int(label[:4]), int(label[5:7])
    return dt.date(year, month, 1), dt.date(year, month, _cal.monthrange(year, month)[1])


def months_between(start: dt.date, end: dt.date) -> list[str]:
    """Return the ``"YYYY-MM"`` labels of every month touching ``[start, end]`` (inclusive)."""
    out: list[str] = []
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def is_session_dataset(ds: Dataset) -> bool:
    """True for datasets with one row per session date (completion is tracked for them)."""
    field = ds.schema.field(ds.time_column)
    return pa.types.is_date(field.type) and tuple(ds.key) == (ds.time_column,)


def refresh_months(
    lake: Lake,
    dataset: str,
    ticker: str,
    *,
    source: str | None = None,
    months: Iterable[str] | None = None,
    as_of: dt.date,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> list[MonthProgressRow]:
    """Recompute and store the month progress of one (dataset, ticker).

    Parameters
    ----------
    lake:
        A :class:`marketlake.Lake` (its catalog, layouts and, for non-monthly layouts, reads).
    dataset, ticker:
        What to refresh; datasets that are not session datasets are ignored (returns ``[]``).
    source:
        Source recorded on the rows (default: the partition's source).
    months:
        ``"YYYY-MM"`` labels to refresh (default: every month from the first to the last held
        date). Months before the first held date are skipped.
    as_of:
        Last session whose data is expected to be collected (a month whose last session is
        later is not complete yet).
    calendar:
        Exchange calendar of the sessions.

    Returns
    -------
    list[MonthProgressRow]
        The rows written.
    """
    ds = get_dataset(dataset)
    if not is_session_dataset(ds):
        return []
    parts = lake.catalog.partitions(dataset=ds.name, ticker=ticker)
    held = [p for p in parts if p.min_date is not None and p.max_date is not None]
    if not held:
        return []
    first = min(p.min_date for p in held if p.min_date is not None)
    last = max(p.max_date for p in held if p.max_date is not None)
    labels = list(months) if months is not None else months_between(first, last)
    labels = sorted({m for m in labels if m >= month_label(first)})
    layout = lake.layouts[ds.name]
    by_period = {p.period: p for p in parts}
    now = utc_now_iso()
    rows: list[MonthProgressRow] = []
    for label in labels:
        lo, hi = month_bounds(label)
        expected = calendars.sessions(max(lo, first), hi, calendar)
        month_sessions = calendars.sessions(lo, hi, calendar)
        part = by_period.get(layout.period_of(lo)) or _history_holding(parts, label)
        present, last_date, row_count = _present(lake, ds, ticker, part, label, lo, hi, calendar)
        ended = bool(month_sessions) and month_sessions[-1] <= as_of
        complete = ended and present >= len(expected)
        rows.append(
            MonthProgressRow(
                dataset=ds.name,
                ticker=ticker,
                source=source or (part.source if part and part.source else "manual"),
                month=label,
                last_date=last_date,
                complete=complete,
                sessions_expected=len(expected),
                sessions_present=present,
                row_count=row_count,
                bytes=part.bytes if part else 0,
                object_key=part.object_key if part else None,
                updated_at=now,
            )
        )
    if rows:
        lake.catalog.upsert_month_progress(rows)
    return rows


def _history_holding(parts: Sequence[PartitionRow], month: str) -> PartitionRow | None:
    """The compacted history partition that holds ``month`` (``YYYY-MM``), if any."""
    for p in parts:
        if is_history(p.period) and month <= covered_month(p.period):
            return p
    return None


def _present(
    lake: Lake,
    ds: Dataset,
    ticker: str,
    part: PartitionRow | None,
    label: str,
    lo: dt.date,
    hi: dt.date,
    calendar: str,
) -> tuple[int, dt.date | None, int]:
    """(sessions present, last date held, rows) of one month."""
    if part is None or part.row_count == 0 or part.min_date is None or part.max_date is None:
        return 0, None, 0
    if part.period == label:  # monthly layout: one row per date, stats from the catalog
        return part.row_count, part.max_date, part.row_count
    table = lake.read(ticker, ds.name, lo, hi, columns=[ds.time_column], output="arrow")
    days: Sequence[dt.date] = table.column(ds.time_column).to_pylist()
    if not days:
        return 0, None, 0
    wanted = set(calendars.sessions(lo, hi, calendar))
    present = len({d for d in days if d in wanted})
    return present, max(days), len(days)


def complete_months(
    lake: Lake,
    *,
    as_of: dt.date,
    datasets: Sequence[str] | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> tuple[int, int]:
    """The monthly completion job: refresh every month not yet marked complete.

    Parameters
    ----------
    lake:
        The :class:`marketlake.Lake`.
    as_of:
        Last session expected to be collected.
    datasets:
        Only these datasets (default: every session dataset with partitions).
    calendar:
        Exchange calendar of the sessions.

    Returns
    -------
    tuple[int, int]
        (months refreshed, months complete after the refresh) over the refreshed months.
    """
    done = {
        (r.dataset, r.ticker, r.month)
        for r in lake.catalog.month_progress(complete=True)
        if datasets is None or r.dataset in datasets
    }
    pairs = sorted(
        {
            (p.dataset, p.ticker)
            for p in lake.catalog.partitions()
            if (datasets is None or p.dataset in datasets)
            and is_session_dataset(get_dataset(p.dataset))
        }
    )
    refreshed = complete = 0
    for dataset, ticker in pairs:
        parts = lake.catalog.partitions(dataset=dataset, ticker=ticker)
        lo = min((p.min_date for p in parts if p.min_date), default=None)
        hi = max((p.max_date for p in parts if p.max_date), default=None)
        if lo is None or hi is None:
            continue
        todo = [m for m in months_between(lo, hi) if (dataset, ticker, m) not in done]
        if not todo:
            continue
        rows = refresh_months(lake, dataset, ticker, months=todo, as_of=as_of, calendar=calendar)
        refreshed += len(rows)
        complete += sum(1 for r in rows if r.complete)
    return refreshed, complete
