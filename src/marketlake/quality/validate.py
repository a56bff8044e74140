"""Run the data-quality rules over a lake and store what they find.

:func:`validate` reads each dataset's rows ticker by ticker (``Lake.read_batch`` over chunks of
tickers, concurrently), runs the rules of :mod:`marketlake.quality.rules` on each chunk, adds
the freshness check over the catalog, stores every violation in the catalog
(:meth:`~marketlake.catalog.Catalog.record_violations`) and returns a
:class:`ValidationResult`. Nothing is repaired: validation only reads.

:func:`validate_after_batch` is the hook for the daily batch: the tickers and datasets a batch
wrote, over a recent window (10 sessions back).

Concurrency: chunks of tickers run on a thread pool; on a local lake with many tickers (at
least :data:`PROCESS_MIN_TICKERS`) they run in spawned worker processes, one per core, since
Parquet decoding and the rules hold the interpreter lock (the same reason the ingest batch uses
processes). Worker processes open the lake by URL with a private in-memory catalog and return
their violations; only the parent writes the catalog.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from marketlake import calendars
from marketlake.catalog import VIOLATION_SEVERITIES, utc_now_iso
from marketlake.errors import MarketlakeError
from marketlake.quality.rules import (
    CONTINUOUS_CADENCE,
    DAILY_CADENCE,
    VIOLATION_SCHEMA,
    RuleContext,
    empty_violations,
    freshness_violations,
    get_rule,
    rules_for,
    run_rules,
    sort_violations,
)
from marketlake.schemas.datasets import get_dataset
from marketlake.schemas.tickers import normalize_ticker

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "CHECKED_DATASETS",
    "FRESHNESS",
    "ValidationResult",
    "check_freshness",
    "validate",
    "validate_after_batch",
]

CHECKED_DATASETS: tuple[str, ...] = ("prices", "bars_minute", "crypto_bars", "fundamentals")
"""Datasets that have row rules, in the order they are checked."""

FRESHNESS = "freshness"
"""Pseudo dataset name selecting the freshness check (``--dataset freshness``)."""

LOOKBACK_DAYS: dict[str, int | None] = {
    "prices": 14,  # the previous close of the first session checked (a jump, an adj step)
    "bars_minute": 7,  # the previous session's last bar (the open gap)
    "crypto_bars": 7,  # the previous bar (a gap)
    "fundamentals": None,  # one small object per ticker: always read whole
}
"""Calendar days read before ``since`` so that rules comparing a row with the one before work
on the first rows of the window; violations before ``since`` are not reported."""

FRESHNESS_DATASETS: tuple[str, ...] = (*DAILY_CADENCE, *CONTINUOUS_CADENCE)

CHUNK_TICKERS = 200
PROCESS_MIN_TICKERS = 1000
AFTER_BATCH_SESSIONS = 10


@dataclass
class ValidationResult:
    """What one check found.

    Attributes
    ----------
    check_id, checked_at:
        The check's id and start time (UTC ISO text); the stored violations carry both.
    run_id:
        The ingest run the check followed, if any.
    violations:
        Every violation found (:data:`~marketlake.quality.rules.VIOLATION_SCHEMA`), sorted by
        ticker, dataset, date, ts, rule.
    datasets:
        Datasets checked (``freshness`` when the freshness check ran).
    tickers, rows:
        Tickers and rows checked per dataset.
    stored:
        Violations written to the catalog (0 with ``store=False``).
    seconds:
        Wall time of the check.
    """

    check_id: str
    checked_at: str
    run_id: str | None
    violations: pa.Table
    datasets: tuple[str, ...]
    tickers: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    stored: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Number of violations."""
        return int(self.violations.num_rows)

    def counts(self) -> dict[tuple[str, str], int]:
        """Violations per ``(rule, severity)``, most frequent first."""
        pairs = zip(
            self.violations.column("rule").to_pylist(),
            self.violations.column("severity").to_pylist(),
            strict=True,
        )
        return dict(Counter(pairs).most_common())

    def by_severity(self) -> dict[str, int]:
        """Violations per severity (every severity present, zero when none)."""
        found = Counter(self.violations.column("severity").to_pylist())
        return {s: int(found.get(s, 0)) for s in VIOLATION_SEVERITIES}

    def fails(self, fail_on: str) -> bool:
        """True when a violation at or above ``fail_on`` (``error``, ``warning``, ``info`` or
        ``never``) exists."""
        if fail_on == "never":
            return False
        if fail_on not in VIOLATION_SEVERITIES:
            raise MarketlakeError(
                f"fail_on={fail_on!r} is not one of {[*VIOLATION_SEVERITIES, 'never']}"
            )
        worst = VIOLATION_SEVERITIES[: VIOLATION_SEVERITIES.index(fail_on) + 1]
        counts = self.by_severity()
        return any(counts[s] for s in worst)


def _new_check_id(checked_at: str) -> str:
    stamp = checked_at[:19].replace("-", "").replace(":", "")
    return f"check-{stamp}Z-{uuid.uuid4().hex[:8]}"


def _as_date(value: dt.date | str | None, name: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise MarketlakeError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None


def _datasets(datasets: Iterable[str] | None, freshness: bool | None) -> tuple[list[str], bool]:
    if datasets is None:
        return list(CHECKED_DATASETS), freshness is not False
    names: list[str] = []
    run_freshness = bool(freshness)
    for raw in datasets:
        name = str(raw).strip()
        if name == FRESHNESS:
            run_freshness = freshness is not False
            continue
        ds = get_dataset(name)  # UnknownDatasetError names the known datasets
        if ds.name not in CHECKED_DATASETS:
            raise MarketlakeError(
                f"no validation rules for dataset {ds.name!r}; datasets with rules: "
                f"{', '.join(CHECKED_DATASETS)} (and {FRESHNESS!r} for the freshness check)",
                dataset=ds.name,
            )
        if ds.name not in names:
            names.append(ds.name)
    return names, run_freshness


def _read_errors(dataset: str, errors: Mapping[str, Exception], what: str = "") -> pa.Table:
    """read_error violations (under the dataset being checked; ``what`` names another dataset
    that was read for it)."""
    if not errors:
        return empty_violations()
    prefix = f"its {what} could not be read, " if what else ""
    rows = [
        {
            "ticker": str(ticker),
            "dataset": dataset,
            "date": None,
            "ts": None,
            "rule": "read_error",
            "severity": "error",
            "detail": f"not checked: {prefix}{exc}",
        }
        for ticker, exc in sorted(errors.items())
    ]
    return pa.Table.from_pylist(rows, schema=VIOLATION_SCHEMA)


@dataclass(frozen=True)
class _Chunk:
    """One chunk of tickers of one dataset to check, with what its rules need (picklable: it is
    sent to worker processes)."""

    dataset: str
    tickers: Sequence[str]
    since: dt.date | None
    first_dates: Mapping[str, dt.date]
    now: dt.datetime
    calendar: str
    params: Mapping[str, Mapping[str, Any]] | None


def _check_chunk(lake: Lake, chunk: _Chunk) -> tuple[pa.Table, int]:
    """Read one chunk of tickers and run its dataset's rules: (violations, rows read)."""
    dataset, since = chunk.dataset, chunk.since
    lookback = LOOKBACK_DAYS.get(dataset)
    start = since - dt.timedelta(days=lookback) if since is not None and lookback else None
    # reads are driven by each ticker's _meta (the objects overlapping the range, no LIST)
    got = lake.read_batch(list(chunk.tickers), dataset, start=start, output="arrow")
    data: pa.Table = got.data
    found = [_read_errors(dataset, got.errors)]
    if data.num_rows == 0:
        return pa.concat_tables(found), 0
    present = sorted(pc.unique(data.column("ticker")).to_pylist())
    rules = rules_for(dataset)
    needs = set().union(*(r.needs for r in rules))
    actions = daily = None
    if "actions" in needs:
        acts = lake.read_batch(present, "corporate_actions", output="arrow")
        actions = acts.data
        found.append(_read_errors(dataset, acts.errors, "corporate_actions"))
    if "daily" in needs:
        days = pc.min_max(data.column("ts"))
        lo, hi = days["min"].as_py(), days["max"].as_py()
        prices = lake.read_batch(
            present, "prices", start=lo.date() - dt.timedelta(days=1), end=hi.date(), output="arrow"
        )
        daily = prices.data
        found.append(_read_errors(dataset, prices.errors, "prices"))
    ctx = RuleContext(
        dataset=dataset,
        data=data,
        actions=actions,
        daily=daily,
        since=since,
        first_dates={t: chunk.first_dates[t] for t in present if t in chunk.first_dates},
        calendar=chunk.calendar,
        now=chunk.now,
    )
    found.append(run_rules(ctx, rules, chunk.params))
    return pa.concat_tables(found), int(data.num_rows)


# --- worker processes ----------------------------------------------------------------------------

_WORKER_LAKE: Lake | None = None


def _worker_init(url: str) -> None:
    global _WORKER_LAKE
    from marketlake.query.lake import open_lake

    _WORKER_LAKE = open_lake(url, catalog=":memory:")


def _worker_chunk(chunk: _Chunk) -> tuple[pa.Table, int]:
    assert _WORKER_LAKE is not None, "worker process not initialised"
    return _check_chunk(_WORKER_LAKE, chunk)


def _use_processes(lake: Lake, n_tickers: int, processes: int | None) -> int:
    if processes is not None:
        return max(0, processes) if processes > 1 else 0
    store = lake.store
    if not store.is_local or store.url.startswith("memory://"):
        return 0
    cores = os.cpu_count() or 1
    if cores < 2 or n_tickers < PROCESS_MIN_TICKERS:
        return 0
    return cores


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# --- the check -----------------------------------------------------------------------------------


def check_freshness(
    lake: Lake,
    *,
    now: dt.datetime | None = None,
    tickers: Iterable[str] | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    params: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The freshness rule over the lake's catalog (monitored assets and watermarks).

    A thin I/O wrapper around :func:`marketlake.quality.rules.freshness_violations`.

    Parameters
    ----------
    lake:
        The lake whose catalog is read.
    now:
        Time of the check (aware; default: now).
    tickers:
        Only these tickers.
    calendar:
        Exchange calendar.
    params:
        ``warn_hours`` / ``error_hours`` overrides.

    Returns
    -------
    pyarrow.Table
        ``freshness.stale`` violations.
    """
    instant = now or dt.datetime.now(dt.UTC)
    monitored = lake.catalog.monitored(active_only=True)
    if tickers is not None:
        wanted = {normalize_ticker(t) for t in tickers}
        monitored = [m for m in monitored if m.ticker in wanted]
    return freshness_violations(
        monitored, lake.catalog.progress(), instant, calendar, **dict(params or {})
    )


def validate(
    lake: Lake,
    datasets: Iterable[str] | None = None,
    tickers: Iterable[str] | None = None,
    since: dt.date | str | None = None,
    *,
    run_id: str | None = None,
    now: dt.datetime | None = None,
    freshness: bool | None = None,
    store: bool = True,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    workers: int | None = None,
    processes: int | None = None,
    chunk_size: int = CHUNK_TICKERS,
) -> ValidationResult:
    """Check the lake's data against the rules and store the violations in the catalog.

    Parameters
    ----------
    lake:
        The lake.
    datasets:
        Datasets to check (default: every dataset with rules, :data:`CHECKED_DATASETS`, plus
        the freshness check); ``"freshness"`` selects the freshness check.
    tickers:
        Only these tickers (default: every ticker the catalog knows for each dataset).
    since:
        Only report violations dated on or after this day (``date`` or ``YYYY-MM-DD``); a few
        days before it are read as look-back. Default: the whole history.
    run_id:
        The ingest run this check follows (stored with the violations).
    now:
        Time of the check (aware; default: now): freshness and unfinished minute sessions.
    freshness:
        Run the freshness check: default when ``datasets`` is None or names ``freshness``.
    store:
        Record the violations and the check's scope in the catalog (default True).
    params:
        Rule parameter overrides by rule name, e.g. ``{"prices.suspicious_jump":
        {"threshold": 0.3}}``.
    calendar:
        Exchange calendar of the session rules (default NYSE).
    workers:
        Threads checking chunks concurrently (default: the CPU count, at least 2).
    processes:
        Worker processes: None chooses (one per core on a local lake with at least
        :data:`PROCESS_MIN_TICKERS` tickers), 0 or 1 forces threads.
    chunk_size:
        Tickers per chunk.

    Returns
    -------
    ValidationResult
        The violations and counts.

    Raises
    ------
    MarketlakeError
        An unknown dataset, one without rules, or a bad date.
    """
    started = time.perf_counter()
    names, run_freshness = _datasets(datasets, freshness)
    for rule_name in params or {}:
        get_rule(rule_name)  # a misspelt rule name is an error, not a silent no-op
    day = _as_date(since, "since")
    instant = now or dt.datetime.now(dt.UTC)
    if instant.tzinfo is None:
        raise MarketlakeError(f"now={instant.isoformat()} has no time zone; pass an aware time")
    wanted = None if tickers is None else sorted({normalize_ticker(t) for t in tickers})
    checked_at = utc_now_iso()
    check_id = _new_check_id(checked_at)
    ranges: dict[str, dict[str, tuple[dt.date | None, dt.date | None]]] = {}
    for ds_name, ticker, lo, hi, _rows in lake.catalog.ticker_ranges():
        ranges.setdefault(ds_name, {})[ticker] = (lo, hi)

    plan: list[tuple[str, list[str]]] = []
    for name in names:
        known = ranges.get(name, {})
        chosen = list(wanted) if wanted is not None else sorted(known)
        if day is not None and wanted is None:
            margin = dt.timedelta(days=LOOKBACK_DAYS.get(name) or 0)
            chosen = [t for t in chosen if (known[t][1] or dt.date.max) >= day - margin]
        plan.append((name, chosen))

    total = sum(len(t) for _, t in plan)
    nproc = _use_processes(lake, total, processes)
    tables: list[pa.Table] = [empty_violations()]
    counts_t: dict[str, int] = {}
    counts_r: dict[str, int] = {}
    pool: Executor
    if nproc:
        import multiprocessing

        pool = ProcessPoolExecutor(
            nproc,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(lake.store.open_url,),
        )
    else:
        pool = ThreadPoolExecutor(
            workers or max(2, os.cpu_count() or 1), thread_name_prefix="marketlake-validate"
        )
    with pool:
        futures = []
        for name, chosen in plan:
            counts_t[name] = len(chosen)
            counts_r[name] = 0
            known = ranges.get(name, {})
            for part in _chunks(chosen, max(1, chunk_size)):
                firsts = {t: lo for t in part for lo in [known.get(t, (None, None))[0]] if lo}
                job = _Chunk(name, part, day, firsts, instant, calendar, params)
                if nproc:
                    futures.append((name, pool.submit(_worker_chunk, job)))
                else:
                    futures.append((name, pool.submit(_check_chunk, lake, job)))
        for name, fut in futures:
            found, rows = fut.result()
            tables.append(found)
            counts_r[name] += rows

    checked = list(names)
    if run_freshness:
        fresh_params = (params or {}).get("freshness.stale")
        tables.append(
            check_freshness(
                lake, now=instant, tickers=wanted, calendar=calendar, params=fresh_params
            )
        )
        checked.append(FRESHNESS)
    violations = sort_violations(pa.concat_tables(tables))

    stored = 0
    if store:
        scope: list[tuple[str, str | None, dt.date | None, str | None]] = []
        targets: list[str | None] = [None] if wanted is None else list(wanted)
        for name in names:  # the datasets' row rules, from `since` on
            scope.extend((name, t, day, None) for t in targets)
        if run_freshness:  # the freshness rule, for every dataset it watches
            scope.extend(
                (n, t, None, "freshness.stale") for n in FRESHNESS_DATASETS for t in targets
            )
        stored = lake.catalog.record_violations(
            check_id, checked_at, violations, run_id=run_id, scope=scope
        )
    return ValidationResult(
        check_id=check_id,
        checked_at=checked_at,
        run_id=run_id,
        violations=violations,
        datasets=tuple(checked),
        tickers=counts_t,
        rows=counts_r,
        stored=stored,
        seconds=time.perf_counter() - started,
    )


def validate_after_batch(
    lake: Lake,
    tickers: Iterable[str],
    datasets: Iterable[str],
    run_id: str | None,
    *,
    as_of: dt.date | None = None,
    sessions_back: int = AFTER_BATCH_SESSIONS,
    store: bool = True,
    calendar: str = calendars.DEFAULT_CALENDAR,
) -> ValidationResult:
    """Validate what a daily batch wrote: its tickers and datasets over the recent window.

    The window starts ``sessions_back`` sessions before the batch date (``as_of``, default
    today, UTC), so the new rows are compared with the ones before them. A batch that wrote
    ``corporate_actions`` also re-checks ``prices`` (the adjustment cross-check depends on
    them). Datasets without rules are skipped. Freshness is re-checked for the batch's tickers,
    so a stale-data violation the batch fixed is closed.

    Parameters
    ----------
    lake:
        The lake.
    tickers, datasets:
        What the batch wrote.
    run_id:
        The batch's run id (stored with the violations).
    as_of:
        The batch date (default: today, UTC).
    sessions_back:
        Sessions before ``as_of`` to check.
    store:
        Record the violations in the catalog.
    calendar:
        Exchange calendar.

    Returns
    -------
    ValidationResult
        The violations found (an empty result when nothing the batch wrote has rules).
    """
    wrote = set(datasets)
    if "corporate_actions" in wrote:
        wrote.add("prices")
    names = [d for d in CHECKED_DATASETS if d in wrote]
    symbols = list(tickers)
    end = as_of or dt.datetime.now(dt.UTC).date()
    days = calendars.sessions_array(end - dt.timedelta(days=3 * sessions_back + 15), end, calendar)
    since = days[-sessions_back - 1].item() if days.size > sessions_back else end
    if not names or not symbols:
        checked_at = utc_now_iso()
        return ValidationResult(
            check_id=_new_check_id(checked_at),
            checked_at=checked_at,
            run_id=run_id,
            violations=empty_violations(),
            datasets=(),
        )
    return validate(
        lake,
        names,
        symbols,
        since,
        run_id=run_id,
        freshness=True,
        store=store,
        calendar=calendar,
        processes=0,
    )
