"""Incremental collection: ``update`` from the watermarks, ``backfill`` history, gap repair.

* :func:`update` collects, per monitored (or given) ticker x dataset, only what is missing: from
  the daily watermark (last session collected, ``collection_progress``) minus a short re-fetch
  window (vendor corrections) to the last completed exchange session. Tickers with the same start
  share one :func:`~marketlake.ingest.batch.run_batch` call. Watermarks only move forward; a failed
  fetch writes nothing, so its watermark stays and the next update retries it.
* :func:`backfill` fills a history range without moving the daily watermark.
* :func:`gap_backfill` (the weekly job) finds sessions missing in the last weeks up to the
  watermark and backfills them.

After every run the month progress of the touched months is refreshed
(:mod:`marketlake.ingest.completion`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from marketlake import calendars
from marketlake.catalog import MonitoredAsset
from marketlake.errors import MarketlakeError
from marketlake.ingest.batch import RunSummary, run_batch
from marketlake.ingest.completion import is_session_dataset, months_between, refresh_months
from marketlake.ingest.progress import Progress
from marketlake.schemas.datasets import get_dataset
from marketlake.schemas.tickers import normalize_tickers
from marketlake.sources.base import Source
from marketlake.sources.registry import get_source

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "DEFAULT_HISTORY_DAYS",
    "DEFAULT_REFETCH",
    "FetchPlan",
    "UpdateSummary",
    "backfill",
    "gap_backfill",
    "last_completed_session",
    "plan_update",
    "update",
]

log = logging.getLogger("marketlake.ingest.update")

DEFAULT_REFETCH = 5
"""Sessions re-fetched before the watermark on every update (vendor corrections)."""

DEFAULT_HISTORY_DAYS = 365
"""History (calendar days before the end) an update collects for a ticker never collected."""

SETTLE_TIME = dt.time(18, 0)
"""New York time after which the day's session counts as completed (close + vendor delay)."""

_NEW_YORK = ZoneInfo("America/New_York")


def last_completed_session(
    now: dt.datetime | None = None, calendar: str = calendars.DEFAULT_CALENDAR
) -> dt.date:
    """Return the last exchange session whose data should be final at ``now``.

    Parameters
    ----------
    now:
        A time-zone aware instant (default: the current time).
    calendar:
        Exchange calendar (default NYSE).

    Returns
    -------
    datetime.date
        Today's New York session once it is past :data:`SETTLE_TIME` New York time, else the
        previous session (at 02:00 UTC on a Tuesday: Monday).
    """
    instant = now or dt.datetime.now(dt.UTC)
    if instant.tzinfo is None:
        raise MarketlakeError(f"now={instant.isoformat()} has no time zone; pass an aware time")
    local = instant.astimezone(_NEW_YORK)
    day = local.date()
    if local.time() >= SETTLE_TIME and calendars.is_session(day, calendar):
        return day
    return calendars.previous_session(day, calendar)


@dataclass(frozen=True)
class FetchPlan:
    """One batch of an update: these tickers x datasets from ``start`` to ``end``."""

    source: str
    tickers: tuple[str, ...]
    datasets: tuple[str, ...]
    start: dt.date
    end: dt.date


@dataclass
class UpdateSummary:
    """What :func:`update` did for one source."""

    source: str
    end: dt.date
    plans: list[FetchPlan] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    up_to_date: list[tuple[str, str]] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)

    @property
    def items_failed(self) -> int:
        """Failed items over all runs."""
        return sum(r.items_failed for r in self.runs)


def _refetch_start(last: dt.date, refetch: int, calendar: str) -> dt.date:
    """First session to fetch after watermark ``last``: its ``refetch`` last sessions again."""
    if refetch <= 0:
        return last + dt.timedelta(days=1)
    back = calendars.sessions(last - dt.timedelta(days=refetch * 2 + 14), last, calendar)
    return back[-refetch] if len(back) >= refetch else (back[0] if back else last)


def plan_update(
    lake: Lake,
    source: str,
    targets: Sequence[MonitoredAsset],
    end: dt.date,
    *,
    refetch: int = DEFAULT_REFETCH,
    since: dt.date | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> tuple[list[FetchPlan], list[tuple[str, str]], list[str]]:
    """Plan an update of ``targets`` (all of ``source``) through session ``end``.

    Parameters
    ----------
    lake:
        The lake (its catalog's watermarks are read).
    source:
        Source name; watermarks are kept per source.
    targets:
        What to collect (ticker, datasets, frequency).
    end:
        Last session to collect.
    refetch:
        Sessions before each watermark fetched again (0: only new sessions).
    since:
        Start for a (dataset, ticker) never collected (default: :data:`DEFAULT_HISTORY_DAYS`
        before ``end``).
    calendar:
        Exchange calendar of the sessions.

    Returns
    -------
    tuple
        ``(plans, up_to_date, not_due)``: batches grouped by (start, datasets); the
        ``(ticker, dataset)`` pairs already collected through ``end``; weekly tickers whose
        watermark is less than a week old.
    """
    if refetch < 0:
        raise MarketlakeError(f"--refetch must be 0 or more sessions, got {refetch}")
    first = since or end - dt.timedelta(days=DEFAULT_HISTORY_DAYS)
    marks = {(p.dataset, p.ticker): p.last_date for p in lake.catalog.progress(source=source)}
    groups: dict[tuple[dt.date, tuple[str, ...]], list[str]] = {}
    up_to_date: list[tuple[str, str]] = []
    not_due: list[str] = []
    for asset in targets:
        ticker_marks = [marks.get((d, asset.ticker)) for d in asset.datasets]
        if asset.frequency == "weekly":
            known = [m for m in ticker_marks if m is not None]
            if len(known) == len(ticker_marks) and (end - min(known)).days < 7:
                not_due.append(asset.ticker)
                continue
        starts: dict[dt.date, list[str]] = {}
        for dataset, last in zip(asset.datasets, ticker_marks, strict=True):
            if last is not None and last >= end:
                up_to_date.append((asset.ticker, dataset))
                continue
            start = first if last is None else _refetch_start(last, refetch, calendar)
            if start > end:
                up_to_date.append((asset.ticker, dataset))
                continue
            starts.setdefault(start, []).append(dataset)
        for start, datasets in starts.items():
            groups.setdefault((start, tuple(sorted(datasets))), []).append(asset.ticker)
    plans = [
        FetchPlan(source, tuple(tickers), datasets, start, end)
        for (start, datasets), tickers in sorted(groups.items())
    ]
    return plans, up_to_date, not_due


def _default_datasets(src: Source) -> tuple[str, ...]:
    return ("prices",) if "prices" in src.datasets else tuple(src.datasets)


def _targets(
    lake: Lake,
    src: Source,
    tickers: Sequence[str] | None,
    datasets: Sequence[str] | None,
) -> list[MonitoredAsset]:
    monitored = {a.ticker: a for a in lake.catalog.monitored(src.name)}
    wanted = tuple(get_dataset(d).name for d in datasets) if datasets else None
    if tickers:
        out = []
        for ticker in normalize_tickers(list(tickers)):
            known = monitored.get(ticker)
            ds = wanted or (known.datasets if known else _default_datasets(src))
            out.append(MonitoredAsset(ticker=ticker, source=src.name, datasets=ds))
        return out
    out = []
    for a in monitored.values():
        if not a.active:
            continue
        ds = tuple(d for d in a.datasets if wanted is None or d in wanted)
        if ds:
            out.append(
                MonitoredAsset(ticker=a.ticker, source=a.source, datasets=ds, frequency=a.frequency)
            )
    return out


SourceLike = str | Source


def _resolve(source: SourceLike, make: Callable[[str], Source]) -> Source:
    return source if isinstance(source, Source) else make(source)


def update(
    lake: Lake,
    *,
    source: SourceLike | None = None,
    tickers: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    end: dt.date | None = None,
    refetch: int = DEFAULT_REFETCH,
    since: dt.date | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    make_source: Callable[[str], Source] = get_source,
) -> list[UpdateSummary]:
    """Collect what is missing since each watermark (plus the re-fetch window) through ``end``.

    Parameters
    ----------
    lake:
        Target lake.
    source:
        A source name or instance. None: every source with active monitored assets.
    tickers:
        Collect these (monitored or not) instead of the monitored assets; needs ``source`` when
        they are not monitored by exactly one source.
    datasets:
        Only these datasets (default: each asset's monitored datasets; for an unmonitored ticker
        ``prices`` when the source has it, else all of the source's datasets).
    end:
        Last session to collect (default: :func:`last_completed_session`).
    refetch:
        Sessions before the watermark fetched again (default :data:`DEFAULT_REFETCH`).
    since:
        Start for a ticker never collected (default: a year before ``end``).
    workers, progress:
        Passed to :func:`~marketlake.ingest.batch.run_batch`.
    calendar:
        Exchange calendar of the sessions.
    make_source:
        Turns a source name into a source (default: the registry).

    Returns
    -------
    list[UpdateSummary]
        One per source.

    Raises
    ------
    MarketlakeError
        Nothing to update (no monitored assets and no tickers), a bad option, an unknown source.
    """
    last = end or last_completed_session(calendar=calendar)
    if since is not None and since > last:
        raise MarketlakeError(f"--since {since} is after the last session to collect {last}")
    if source is not None:
        names: Sequence[SourceLike] = [source]
    elif tickers:
        owners = {a.source for a in lake.catalog.monitored() if a.ticker in set(tickers)}
        names = sorted(owners) or ["synthetic"]
    else:
        names = sorted({a.source for a in lake.catalog.monitored(active_only=True)})
        if not names:
            raise MarketlakeError(
                "nothing to update: no monitored assets; add some with "
                "'marketlake assets add AAPL,MSFT --source yahoo' or pass --tickers"
            )
    summaries: list[UpdateSummary] = []
    for name in names:
        src = _resolve(name, make_source)
        targets = _targets(lake, src, tickers, datasets)
        plans, fresh, not_due = plan_update(
            lake, src.name, targets, last, refetch=refetch, since=since, calendar=calendar
        )
        summary = UpdateSummary(src.name, last, plans, up_to_date=fresh, not_due=not_due)
        for plan in plans:
            log.info(
                "update %s: %d ticker(s) x %s from %s to %s",
                src.name,
                len(plan.tickers),
                ",".join(plan.datasets),
                plan.start,
                plan.end,
            )
            run = run_batch(
                lake,
                src,
                list(plan.tickers),
                list(plan.datasets),
                plan.start,
                plan.end,
                kind="daily",
                workers=workers,
                progress=progress,
            )
            summary.runs.append(run)
            _refresh_after(lake, run, src.name, plan.start, plan.end, last, calendar)
        summaries.append(summary)
    return summaries


def backfill(
    lake: Lake,
    source: SourceLike,
    tickers: Sequence[str],
    datasets: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    as_of: dt.date | None = None,
    make_source: Callable[[str], Source] = get_source,
) -> RunSummary:
    """Fill ``[start, end]`` for tickers x datasets without moving the daily watermark.

    Parameters
    ----------
    lake, source, tickers, datasets:
        What to collect, from where, into which lake.
    start, end:
        Inclusive session range.
    workers, progress:
        Passed to :func:`~marketlake.ingest.batch.run_batch`.
    calendar:
        Exchange calendar (month completion).
    as_of:
        Last session expected to be collected, for month completion (default:
        :func:`last_completed_session`).
    make_source:
        Turns a source name into a source.

    Returns
    -------
    RunSummary
        The run (kind ``"backfill"``).
    """
    src = _resolve(source, make_source)
    run = run_batch(
        lake,
        src,
        list(tickers),
        list(datasets),
        start,
        end,
        kind="backfill",
        workers=workers,
        progress=progress,
        advance_watermark=False,
    )
    done = as_of or last_completed_session(calendar=calendar)
    _refresh_after(lake, run, src.name, start, end, done, calendar)
    return run


def gap_backfill(
    lake: Lake,
    *,
    weeks: int = 4,
    source: SourceLike | None = None,
    end: dt.date | None = None,
    workers: int | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    make_source: Callable[[str], Source] = get_source,
) -> list[RunSummary]:
    """The weekly job: backfill sessions missing in the last ``weeks`` weeks up to each watermark.

    Only session datasets of active monitored assets are checked (one read of the window per
    ticker x dataset); sessions after the watermark are left to :func:`update`.

    Returns
    -------
    list[RunSummary]
        One backfill run per (source, missing range, datasets) group.
    """
    if weeks < 1:
        raise MarketlakeError(f"--weeks must be at least 1, got {weeks}")
    last = end or last_completed_session(calendar=calendar)
    window_start = last - dt.timedelta(weeks=weeks)
    wanted = {source if isinstance(source, str) else source.name} if source else None
    runs: list[RunSummary] = []
    assets = [
        a for a in lake.catalog.monitored(active_only=True) if wanted is None or a.source in wanted
    ]
    by_source: dict[str, list[MonitoredAsset]] = {}
    for a in assets:
        by_source.setdefault(a.source, []).append(a)
    for name, group in sorted(by_source.items()):
        marks = {(p.dataset, p.ticker): p.last_date for p in lake.catalog.progress(source=name)}
        ranges: dict[tuple[dt.date, dt.date, str], list[str]] = {}
        for a in group:
            for dataset in a.datasets:
                ds = get_dataset(dataset)
                mark = marks.get((ds.name, a.ticker))
                if mark is None or not is_session_dataset(ds):
                    continue
                expected = calendars.sessions(window_start, min(mark, last), calendar)
                if not expected:
                    continue
                table = lake.read(
                    a.ticker, ds.name, expected[0], expected[-1], [ds.time_column], "arrow"
                )
                have = set(table.column(ds.time_column).to_pylist())
                missing = [d for d in expected if d not in have]
                if missing:
                    ranges.setdefault((missing[0], missing[-1], ds.name), []).append(a.ticker)
        src = _resolve(source if isinstance(source, Source) else name, make_source)
        for (lo, hi, dataset), tickers in sorted(ranges.items()):
            runs.append(
                backfill(
                    lake,
                    src,
                    tickers,
                    [dataset],
                    lo,
                    hi,
                    workers=workers,
                    calendar=calendar,
                    as_of=last,
                )
            )
    return runs


def _refresh_after(
    lake: Lake,
    run: RunSummary,
    source: str,
    start: dt.date,
    end: dt.date,
    as_of: dt.date,
    calendar: str,
) -> None:
    """Refresh the month progress of the months a run touched, for its completed items."""
    months = months_between(start, end)
    for item in lake.catalog.run_items(run.run_id, status="completed"):
        if item.rows_added or item.rows_updated or item.rows_fetched:
            refresh_months(
                lake,
                item.dataset,
                item.ticker,
                source=source,
                months=months,
                as_of=as_of,
                calendar=calendar,
            )
