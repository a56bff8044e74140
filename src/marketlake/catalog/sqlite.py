"""The catalog: what the lake holds and what collection has done, in one SQLite file.

The catalog records

* ``assets`` – the tickers seen per source (exchange, active flag, frequency), kept by writes;
* ``monitored_assets`` – what ``marketlake update`` collects: ticker, source, datasets, active
  flag and frequency (``daily`` or ``weekly``), managed with ``marketlake assets``;
* ``partitions`` – one row per partition object (dataset, ticker, period label such as
  ``2024-01``, ``2024`` or ``all``) with its key, row count, date range, size, SHA-256 and ETag;
* ``collection_progress`` – the daily watermark: the last session date collected per
  (dataset, ticker, source). It only ever moves forward;
* ``month_progress`` – per (dataset, ticker, source, month): last date held, sessions expected
  and present, rows, bytes, object key, and whether the month is complete (ended, every exchange
  session present);
* ``runs`` and ``run_items`` – every ingest run and the state of each (ticker, dataset) item in it,
  so an interrupted or partly failed run can be resumed by doing only what is not ``completed``.
* ``violations`` and ``violation_scopes`` – what each data-quality check
  (:mod:`marketlake.quality.validate`) found, and which datasets, tickers and dates it looked
  at, so open violations and their trend over time can be reported.

The object store is the source of truth: ``partitions`` (and ``assets``) can be rebuilt from the
``_meta`` objects with :meth:`Catalog.replace_partitions`.

Portability
-----------
The schema and every statement are plain SQL that runs unchanged on PostgreSQL (for several
workers): only ``TEXT``, ``INTEGER`` and ``REAL`` columns; ISO 8601 text for dates
(``YYYY-MM-DD``) and timestamps (UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: fixed width, so text order
is time order); ``INSERT … ON CONFLICT (…) DO UPDATE SET … = excluded.…`` upserts; ``CASE``
instead of two-argument ``MAX()``. Only the connection set-up (``PRAGMA``) and the
``BEGIN IMMEDIATE`` transaction start are SQLite-specific, and a PostgreSQL backend would replace
the ``?`` placeholders with its driver's. :data:`MIGRATIONS` holds the schema as data so another
backend can apply the same statements.

Concurrency
-----------
One connection (``check_same_thread=False``) is shared by all threads of a process; every public
method holds a re-entrant lock, and every write is one transaction (multi-row writes use
``executemany``). Several processes may open the same file: WAL journal mode lets readers proceed
while one writer holds the lock, and writers wait up to 30 s (``busy_timeout``) for each other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from marketlake.errors import CatalogError, RunNotFoundError

__all__ = [
    "CATALOG_SCHEMA_VERSION",
    "ITEM_STATUSES",
    "MIGRATIONS",
    "MONITOR_FREQUENCIES",
    "RUN_STATUSES",
    "VIOLATION_SEVERITIES",
    "AssetRow",
    "Catalog",
    "Migration",
    "MonitoredAsset",
    "MonthProgressRow",
    "PartitionRow",
    "ProgressRow",
    "RunItemRow",
    "RunRow",
    "ViolationRow",
    "utc_now_iso",
]

MEMORY = ":memory:"
BUSY_TIMEOUT_S = 30.0

RUN_STATUSES = frozenset({"pending", "running", "completed", "failed"})
"""Statuses of a run: ``completed`` when every item completed, ``failed`` when any did not."""

ITEM_STATUSES = frozenset({"pending", "running", "completed", "failed"})
"""Statuses of a run item."""

_FINAL_RUN_STATUSES = frozenset({"completed", "failed"})

VIOLATION_SEVERITIES = ("error", "warning", "info")
"""Severities of a data-quality violation, most severe first."""


def utc_now_iso() -> str:
    """Return the current UTC time as fixed-width ISO 8601 text with a ``Z`` suffix.

    Returns
    -------
    str
        For example ``"2024-05-01T21:30:00.123456Z"``. The width never varies, so comparing the
        text compares the instants.
    """
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- schema ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the catalog schema, applied in a transaction when a catalog is opened.

    Parameters
    ----------
    version:
        Schema version reached after this step (1, 2, 3 … without gaps).
    name:
        Short description, for humans.
    statements:
        Portable SQL statements (one per item, no trailing ``;``), executed in order.
    """

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="assets, partitions, collection progress, runs and run items",
        statements=(
            """CREATE TABLE assets (
                ticker TEXT NOT NULL,
                source TEXT NOT NULL,
                exchange TEXT,
                active INTEGER NOT NULL DEFAULT 1,
                frequency TEXT NOT NULL,
                first_seen TEXT NOT NULL,
                last_seen TEXT NOT NULL,
                PRIMARY KEY (ticker, source)
            )""",
            """CREATE TABLE partitions (
                dataset TEXT NOT NULL,
                ticker TEXT NOT NULL,
                period TEXT NOT NULL,
                object_key TEXT NOT NULL,
                source TEXT,
                row_count INTEGER NOT NULL,
                min_date TEXT,
                max_date TEXT,
                bytes INTEGER NOT NULL,
                sha256 TEXT,
                etag TEXT,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (dataset, ticker, period)
            )""",
            "CREATE INDEX ix_partitions_ticker ON partitions (ticker, dataset)",
            """CREATE TABLE collection_progress (
                dataset TEXT NOT NULL,
                ticker TEXT NOT NULL,
                source TEXT NOT NULL,
                last_date TEXT,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (dataset, ticker, source)
            )""",
            "CREATE INDEX ix_collection_progress_ticker ON collection_progress (ticker, dataset)",
            """CREATE TABLE runs (
                run_id TEXT NOT NULL PRIMARY KEY,
                kind TEXT NOT NULL,
                source TEXT NOT NULL,
                params TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                items_total INTEGER NOT NULL DEFAULT 0,
                items_completed INTEGER NOT NULL DEFAULT 0,
                items_failed INTEGER NOT NULL DEFAULT 0,
                error TEXT
            )""",
            "CREATE INDEX ix_runs_started_at ON runs (started_at)",
            """CREATE TABLE run_items (
                run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
                ticker TEXT NOT NULL,
                dataset TEXT NOT NULL,
                status TEXT NOT NULL,
                rows_fetched INTEGER NOT NULL DEFAULT 0,
                rows_added INTEGER NOT NULL DEFAULT 0,
                rows_updated INTEGER NOT NULL DEFAULT 0,
                row_count INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                started_at TEXT,
                finished_at TEXT,
                PRIMARY KEY (run_id, ticker, dataset)
            )""",
            "CREATE INDEX ix_run_items_run_status ON run_items (run_id, status)",
        ),
    ),
    Migration(
        version=2,
        name="monitored assets and per-month collection progress",
        statements=(
            """CREATE TABLE monitored_assets (
                ticker TEXT NOT NULL,
                source TEXT NOT NULL,
                datasets TEXT NOT NULL,
                exchange TEXT,
                active INTEGER NOT NULL DEFAULT 1,
                frequency TEXT NOT NULL,
                added_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (ticker, source)
            )""",
            """CREATE TABLE month_progress (
                dataset TEXT NOT NULL,
                ticker TEXT NOT NULL,
                source TEXT NOT NULL,
                month TEXT NOT NULL,
                last_date TEXT,
                complete INTEGER NOT NULL DEFAULT 0,
                sessions_expected INTEGER NOT NULL DEFAULT 0,
                sessions_present INTEGER NOT NULL DEFAULT 0,
                row_count INTEGER NOT NULL DEFAULT 0,
                bytes INTEGER NOT NULL DEFAULT 0,
                object_key TEXT,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (dataset, ticker, source, month)
            )""",
            "CREATE INDEX ix_month_progress_complete ON month_progress (complete, dataset)",
        ),
    ),
    Migration(
        version=3,
        name="data-quality violations and the scope of each check",
        statements=(
            # one row per violation found by a check (marketlake.quality.validate)
            """CREATE TABLE violations (
                check_id TEXT NOT NULL,
                run_id TEXT,
                checked_at TEXT NOT NULL,
                ticker TEXT NOT NULL,
                dataset TEXT NOT NULL,
                date TEXT,
                ts TEXT,
                rule TEXT NOT NULL,
                severity TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX ix_violations_dataset_rule ON violations (dataset, rule)",
            "CREATE INDEX ix_violations_checked_at ON violations (checked_at)",
            "CREATE INDEX ix_violations_check ON violations (check_id)",
            # what each check looked at: ticker '*' = every ticker, since NULL = all dates,
            # rule '*' = the dataset's row rules (named '<dataset>.*', and read_error) or one
            # rule's name; a violation is open until a later check covers it
            """CREATE TABLE violation_scopes (
                check_id TEXT NOT NULL,
                checked_at TEXT NOT NULL,
                dataset TEXT NOT NULL,
                ticker TEXT NOT NULL,
                rule TEXT NOT NULL,
                since TEXT,
                PRIMARY KEY (check_id, dataset, ticker, rule)
            )""",
            "CREATE INDEX ix_violation_scopes_cover "
            "ON violation_scopes (dataset, ticker, checked_at)",
        ),
    ),
    Migration(
        version=4,
        name="date-partitioned cross-section companions and the changes since each",
        statements=(
            # one companion object per (dataset, session date): every ticker's row of that day,
            # built from everything up to change number seq
            """CREATE TABLE cross_sections (
                dataset TEXT NOT NULL,
                day TEXT NOT NULL,
                object_key TEXT NOT NULL,
                tickers INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                built_at TEXT NOT NULL,
                seq INTEGER NOT NULL,
                PRIMARY KEY (dataset, day)
            )""",
            # every write that changed rows: which ticker, which days (a companion is stale for
            # the tickers with a change numbered after its seq)
            """CREATE TABLE xs_changes (
                id INTEGER PRIMARY KEY,
                dataset TEXT NOT NULL,
                ticker TEXT NOT NULL,
                first_day TEXT NOT NULL,
                last_day TEXT NOT NULL
            )""",
            "CREATE INDEX ix_xs_changes_days ON xs_changes (dataset, first_day, last_day)",
        ),
    ),
)
"""The ordered schema migrations. Append new steps; never edit a released one."""

CATALOG_SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code writes and understands."""

_SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)"
)

# --- statements ----------------------------------------------------------------------------------

_ASSET_COLUMNS = "ticker, source, exchange, active, frequency, first_seen, last_seen"
_UPSERT_ASSET = f"""
INSERT INTO assets ({_ASSET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (ticker, source) DO UPDATE SET
    exchange = excluded.exchange,
    active = excluded.active,
    frequency = excluded.frequency,
    last_seen = excluded.last_seen
"""

_PARTITION_COLUMNS = (
    "dataset, ticker, period, object_key, source, row_count, min_date, max_date, bytes, sha256, "
    "etag, updated_at"
)
_UPSERT_PARTITION = f"""
INSERT INTO partitions ({_PARTITION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dataset, ticker, period) DO UPDATE SET
    object_key = excluded.object_key,
    source = excluded.source,
    row_count = excluded.row_count,
    min_date = excluded.min_date,
    max_date = excluded.max_date,
    bytes = excluded.bytes,
    sha256 = excluded.sha256,
    etag = excluded.etag,
    updated_at = excluded.updated_at
"""

_PROGRESS_COLUMNS = "dataset, ticker, source, last_date, updated_at"
# Forward only: a NULL or older last_date leaves the row (including updated_at) untouched.
_ADVANCE_PROGRESS = f"""
INSERT INTO collection_progress ({_PROGRESS_COLUMNS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (dataset, ticker, source) DO UPDATE SET
    last_date = CASE
        WHEN collection_progress.last_date IS NULL
            OR excluded.last_date > collection_progress.last_date
        THEN excluded.last_date ELSE collection_progress.last_date END,
    updated_at = CASE
        WHEN collection_progress.last_date IS NULL
            OR excluded.last_date > collection_progress.last_date
        THEN excluded.updated_at ELSE collection_progress.updated_at END
"""

_MONITORED_COLUMNS = "ticker, source, datasets, exchange, active, frequency, added_at, updated_at"
_UPSERT_MONITORED = f"""
INSERT INTO monitored_assets ({_MONITORED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (ticker, source) DO UPDATE SET
    datasets = excluded.datasets,
    exchange = excluded.exchange,
    active = excluded.active,
    frequency = excluded.frequency,
    updated_at = excluded.updated_at
"""

_MONTH_COLUMNS = (
    "dataset, ticker, source, month, last_date, complete, sessions_expected, sessions_present, "
    "row_count, bytes, object_key, updated_at"
)
_UPSERT_MONTH = f"""
INSERT INTO month_progress ({_MONTH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dataset, ticker, source, month) DO UPDATE SET
    last_date = excluded.last_date,
    complete = excluded.complete,
    sessions_expected = excluded.sessions_expected,
    sessions_present = excluded.sessions_present,
    row_count = excluded.row_count,
    bytes = excluded.bytes,
    object_key = excluded.object_key,
    updated_at = excluded.updated_at
"""

_RUN_COLUMNS = (
    "run_id, kind, source, params, status, started_at, finished_at, items_total, "
    "items_completed, items_failed, error"
)
# Counts of unfinished runs are live (from run_items); finish_run stores them for finished runs.
_SELECT_RUNS = """
SELECT r.run_id, r.kind, r.source, r.params, r.status, r.started_at, r.finished_at,
    CASE WHEN r.status IN ('pending', 'running')
        THEN (SELECT COUNT(*) FROM run_items i WHERE i.run_id = r.run_id)
        ELSE r.items_total END,
    CASE WHEN r.status IN ('pending', 'running')
        THEN (SELECT COUNT(*) FROM run_items i
              WHERE i.run_id = r.run_id AND i.status = 'completed')
        ELSE r.items_completed END,
    CASE WHEN r.status IN ('pending', 'running')
        THEN (SELECT COUNT(*) FROM run_items i
              WHERE i.run_id = r.run_id AND i.status = 'failed')
        ELSE r.items_failed END,
    r.error
FROM runs r
"""

_RUN_ITEM_COLUMNS = (
    "run_id, ticker, dataset, status, rows_fetched, rows_added, rows_updated, row_count, error, "
    "started_at, finished_at"
)
_UPSERT_RUN_ITEM = f"""
INSERT INTO run_items ({_RUN_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, ticker, dataset) DO UPDATE SET
    status = excluded.status,
    rows_fetched = excluded.rows_fetched,
    rows_added = excluded.rows_added,
    rows_updated = excluded.rows_updated,
    row_count = excluded.row_count,
    error = excluded.error,
    started_at = COALESCE(excluded.started_at, run_items.started_at),
    finished_at = excluded.finished_at
"""
_RESET_RUN_ITEM = f"""
INSERT INTO run_items ({_RUN_ITEM_COLUMNS})
VALUES (?, ?, ?, 'pending', 0, 0, 0, 0, NULL, NULL, NULL)
ON CONFLICT (run_id, ticker, dataset) DO UPDATE SET
    status = 'pending',
    rows_fetched = 0,
    rows_added = 0,
    rows_updated = 0,
    row_count = 0,
    error = NULL,
    started_at = NULL,
    finished_at = NULL
"""


_VIOLATION_COLUMNS = (
    "check_id, run_id, checked_at, ticker, dataset, date, ts, rule, severity, detail"
)
_VIOLATION_SELECT = ", ".join(f"v.{c.strip()}" for c in _VIOLATION_COLUMNS.split(","))
# A stored violation is open while no later check covered its dataset, ticker and date.
_OPEN_VIOLATION = """NOT EXISTS (
    SELECT 1 FROM violation_scopes s
    WHERE s.dataset = v.dataset
        AND (s.ticker = v.ticker OR s.ticker = '*')
        AND (s.rule = v.rule OR (s.rule = '*' AND (v.rule = 'read_error'
             OR substr(v.rule, 1, length(s.dataset) + 1) = s.dataset || '.')))
        AND (s.checked_at > v.checked_at
             OR (s.checked_at = v.checked_at AND s.check_id > v.check_id))
        AND (s.since IS NULL OR (v.date IS NOT NULL AND v.date >= s.since))
)"""


# --- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AssetRow:
    """A monitored asset: one ticker as offered by one source.

    Parameters
    ----------
    ticker, source:
        The key.
    exchange:
        Listing exchange (or crypto venue), when known.
    active:
        Whether the daily collection includes it.
    frequency:
        Collection frequency, e.g. ``"daily"`` or ``"1m"``.
    first_seen, last_seen:
        UTC ISO timestamps. An upsert keeps the stored ``first_seen``.
    """

    ticker: str
    source: str
    exchange: str | None = None
    active: bool = True
    frequency: str = "daily"
    first_seen: str = field(default_factory=utc_now_iso)
    last_seen: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True, slots=True)
class CrossSectionRow:
    """A date-partitioned companion object: every ticker's row of ``dataset`` on ``day``
    (a session date), built from the changes numbered up to ``seq`` (``xs_changes``)."""

    dataset: str
    day: dt.date
    object_key: str
    tickers: int
    bytes: int
    sha256: str
    built_at: str
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionRow:
    """One partition object of the lake.

    Parameters
    ----------
    dataset, ticker, period:
        The key; ``period`` is the partition label (``"2024-01"``, ``"2024"`` or ``"all"``).
    object_key:
        The object's key in the store.
    source:
        The source the rows came from, when one.
    row_count:
        Rows in the object.
    min_date, max_date:
        Inclusive date range of the rows (None for an object without a date column).
    bytes:
        Object size.
    sha256, etag:
        Content hash and the store's ETag, when known.
    updated_at:
        UTC ISO timestamp of the last content change.
    """

    dataset: str
    ticker: str
    period: str
    object_key: str
    source: str | None = None
    row_count: int
    min_date: dt.date | None
    max_date: dt.date | None
    bytes: int
    sha256: str | None = None
    etag: str | None = None
    updated_at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressRow:
    """The daily watermark of one (dataset, ticker, source).

    Parameters
    ----------
    dataset, ticker, source:
        The key.
    last_date:
        Last session date collected (None: nothing yet).
    updated_at:
        UTC ISO timestamp of the last advance.
    """

    dataset: str
    ticker: str
    source: str
    last_date: dt.date | None
    updated_at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """One ingest run.

    Parameters
    ----------
    run_id:
        Unique id.
    kind:
        What the run does, e.g. ``"daily"`` or ``"backfill"``.
    source:
        Source name.
    params:
        The run's parameters (stored as JSON).
    status:
        One of :data:`RUN_STATUSES`.
    started_at, finished_at:
        UTC ISO timestamps (``finished_at`` is None until :meth:`Catalog.finish_run`).
    items_total, items_completed, items_failed:
        Item counts; live while the run is unfinished, stored when it finishes.
    error:
        Run-level error text, when one.
    """

    run_id: str
    kind: str
    source: str
    params: dict[str, Any]
    status: str
    started_at: str
    finished_at: str | None = None
    items_total: int = 0
    items_completed: int = 0
    items_failed: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunItemRow:
    """The state of one (ticker, dataset) item of a run.

    Parameters
    ----------
    run_id, ticker, dataset:
        The key.
    status:
        One of :data:`ITEM_STATUSES`.
    rows_fetched, rows_added, rows_updated:
        Rows received from the source, new rows written, existing rows changed.
    row_count:
        Rows held for (dataset, ticker) after the item.
    error:
        Error text of a failed item.
    started_at, finished_at:
        UTC ISO timestamps. :meth:`Catalog.record_items` fills ``finished_at`` for a
        ``completed``/``failed`` item that has none.
    """

    run_id: str
    ticker: str
    dataset: str
    status: str
    rows_fetched: int = 0
    rows_added: int = 0
    rows_updated: int = 0
    row_count: int = 0
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


MONITOR_FREQUENCIES = ("daily", "weekly")
"""How often ``marketlake update`` collects a monitored asset."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitoredAsset:
    """An asset ``marketlake update`` collects: one ticker from one source.

    Parameters
    ----------
    ticker, source:
        The key.
    datasets:
        The datasets collected for it (non-empty).
    exchange:
        Listing exchange (or crypto venue), when known.
    active:
        False pauses collection without forgetting the asset.
    frequency:
        ``"daily"`` (every update) or ``"weekly"`` (when the watermark is a week old).
    added_at, updated_at:
        UTC ISO timestamps. An upsert keeps the stored ``added_at``.
    """

    ticker: str
    source: str
    datasets: tuple[str, ...]
    exchange: str | None = None
    active: bool = True
    frequency: str = "daily"
    added_at: str = field(default_factory=utc_now_iso)
    updated_at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True, slots=True, kw_only=True)
class MonthProgressRow:
    """Collection progress of one month of one (dataset, ticker, source).

    Parameters
    ----------
    dataset, ticker, source, month:
        The key; ``month`` is ``"YYYY-MM"``.
    last_date:
        Last date held in the month (None: nothing).
    complete:
        True when the month has ended and every exchange session of it (from the ticker's first
        held date on) is present.
    sessions_expected, sessions_present:
        Exchange sessions of the month that should be held, and how many are.
    row_count, bytes:
        Rows held in the month, and the size of the object(s) holding it.
    object_key:
        The object holding the month (its partition's key).
    updated_at:
        UTC ISO timestamp of the last refresh.
    """

    dataset: str
    ticker: str
    source: str
    month: str
    last_date: dt.date | None
    complete: bool = False
    sessions_expected: int = 0
    sessions_present: int = 0
    row_count: int = 0
    bytes: int = 0
    object_key: str | None = None
    updated_at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True, slots=True, kw_only=True)
class ViolationRow:
    """One data-quality violation found by a check (see :mod:`marketlake.quality.rules`).

    Parameters
    ----------
    ticker, dataset:
        Where: the lake ticker and dataset of the offending rows.
    date:
        Session (or period / filing) date of the offending row, when it has one.
    ts:
        UTC instant of the offending bar (minute and crypto bars), when it has one.
    rule:
        Rule name, e.g. ``"prices.gaps"``.
    severity:
        One of :data:`VIOLATION_SEVERITIES`.
    detail:
        What exactly is wrong, for humans.
    check_id, checked_at:
        The check that found it and when (UTC ISO text); :meth:`Catalog.record_violations`
        fills both from its arguments.
    run_id:
        The ingest run the check followed, when one.
    """

    ticker: str
    dataset: str
    date: dt.date | None = None
    ts: dt.datetime | None = None
    rule: str
    severity: str
    detail: str
    check_id: str = ""
    checked_at: str = ""
    run_id: str | None = None


# --- conversions ---------------------------------------------------------------------------------


def _date_text(value: dt.date | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise CatalogError(f"{what} must be a datetime.date or None, got {type(value).__name__}")


def _text_date(value: Any) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(str(value))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_status(status: str, allowed: frozenset[str], what: str) -> None:
    if status not in allowed:
        raise CatalogError(f"{what} status {status!r} is not one of {sorted(allowed)}")


def _asset_params(r: AssetRow) -> tuple[Any, ...]:
    return (
        r.ticker,
        r.source,
        r.exchange,
        1 if r.active else 0,
        r.frequency,
        r.first_seen,
        r.last_seen,
    )


def _asset_row(t: Sequence[Any]) -> AssetRow:
    return AssetRow(
        ticker=str(t[0]),
        source=str(t[1]),
        exchange=_opt_str(t[2]),
        active=bool(t[3]),
        frequency=str(t[4]),
        first_seen=str(t[5]),
        last_seen=str(t[6]),
    )


def _partition_params(r: PartitionRow) -> tuple[Any, ...]:
    return (
        r.dataset,
        r.ticker,
        r.period,
        r.object_key,
        r.source,
        int(r.row_count),
        _date_text(r.min_date, "PartitionRow.min_date"),
        _date_text(r.max_date, "PartitionRow.max_date"),
        int(r.bytes),
        r.sha256,
        r.etag,
        r.updated_at,
    )


def _partition_row(t: Sequence[Any]) -> PartitionRow:
    return PartitionRow(
        dataset=str(t[0]),
        ticker=str(t[1]),
        period=str(t[2]),
        object_key=str(t[3]),
        source=_opt_str(t[4]),
        row_count=int(t[5]),
        min_date=_text_date(t[6]),
        max_date=_text_date(t[7]),
        bytes=int(t[8]),
        sha256=_opt_str(t[9]),
        etag=_opt_str(t[10]),
        updated_at=str(t[11]),
    )


def _progress_params(r: ProgressRow) -> tuple[Any, ...]:
    return (
        r.dataset,
        r.ticker,
        r.source,
        _date_text(r.last_date, "ProgressRow.last_date"),
        r.updated_at,
    )


def _progress_row(t: Sequence[Any]) -> ProgressRow:
    return ProgressRow(
        dataset=str(t[0]),
        ticker=str(t[1]),
        source=str(t[2]),
        last_date=_text_date(t[3]),
        updated_at=str(t[4]),
    )


def _run_row(t: Sequence[Any]) -> RunRow:
    params = json.loads(t[3]) if t[3] else {}
    return RunRow(
        run_id=str(t[0]),
        kind=str(t[1]),
        source=str(t[2]),
        params=params if isinstance(params, dict) else {"value": params},
        status=str(t[4]),
        started_at=str(t[5]),
        finished_at=_opt_str(t[6]),
        items_total=int(t[7]),
        items_completed=int(t[8]),
        items_failed=int(t[9]),
        error=_opt_str(t[10]),
    )


def _run_item_row(t: Sequence[Any]) -> RunItemRow:
    return RunItemRow(
        run_id=str(t[0]),
        ticker=str(t[1]),
        dataset=str(t[2]),
        status=str(t[3]),
        rows_fetched=int(t[4]),
        rows_added=int(t[5]),
        rows_updated=int(t[6]),
        row_count=int(t[7]),
        error=_opt_str(t[8]),
        started_at=_opt_str(t[9]),
        finished_at=_opt_str(t[10]),
    )


def _monitored_params(r: MonitoredAsset) -> tuple[Any, ...]:
    return (
        r.ticker,
        r.source,
        ",".join(r.datasets),
        r.exchange,
        1 if r.active else 0,
        r.frequency,
        r.added_at,
        r.updated_at,
    )


def _monitored_row(t: Sequence[Any]) -> MonitoredAsset:
    return MonitoredAsset(
        ticker=str(t[0]),
        source=str(t[1]),
        datasets=tuple(d for d in str(t[2]).split(",") if d),
        exchange=_opt_str(t[3]),
        active=bool(t[4]),
        frequency=str(t[5]),
        added_at=str(t[6]),
        updated_at=str(t[7]),
    )


def _month_params(r: MonthProgressRow) -> tuple[Any, ...]:
    return (
        r.dataset,
        r.ticker,
        r.source,
        r.month,
        _date_text(r.last_date, "MonthProgressRow.last_date"),
        1 if r.complete else 0,
        int(r.sessions_expected),
        int(r.sessions_present),
        int(r.row_count),
        int(r.bytes),
        r.object_key,
        r.updated_at,
    )


def _month_row(t: Sequence[Any]) -> MonthProgressRow:
    return MonthProgressRow(
        dataset=str(t[0]),
        ticker=str(t[1]),
        source=str(t[2]),
        month=str(t[3]),
        last_date=_text_date(t[4]),
        complete=bool(t[5]),
        sessions_expected=int(t[6]),
        sessions_present=int(t[7]),
        row_count=int(t[8]),
        bytes=int(t[9]),
        object_key=_opt_str(t[10]),
        updated_at=str(t[11]),
    )


def _ts_text(value: dt.datetime | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise CatalogError(f"{what} must be a time-zone aware datetime or None, got {value!r}")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text_ts(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _check_severity(severity: str, ticker: str, rule: str) -> str:
    if severity not in VIOLATION_SEVERITIES:
        raise CatalogError(
            f"violation {rule} of {ticker}: severity {severity!r} is not one of "
            f"{list(VIOLATION_SEVERITIES)}; nothing was stored",
            ticker=ticker,
            rule=rule,
        )
    return severity


def _violation_params(
    r: ViolationRow, check_id: str, checked_at: str, run_id: str | None
) -> tuple[Any, ...]:
    return (
        check_id,
        run_id,
        checked_at,
        r.ticker,
        r.dataset,
        _date_text(r.date, "ViolationRow.date"),
        _ts_text(r.ts, "ViolationRow.ts"),
        r.rule,
        _check_severity(r.severity, r.ticker, r.rule),
        r.detail,
    )


def _violation_params_from_table(
    table: Any, check_id: str, checked_at: str, run_id: str | None
) -> list[tuple[Any, ...]]:
    """Rows of a violations Arrow table as statement parameters (``date``/``ts`` optional)."""
    names = set(table.column_names)
    n = int(table.num_rows)
    missing = [c for c in ("ticker", "dataset", "rule", "severity", "detail") if c not in names]
    if missing:
        raise CatalogError(f"violations table lacks column(s) {missing}; nothing was stored")

    def col(name: str) -> list[Any]:
        return table.column(name).to_pylist() if name in names else [None] * n

    out: list[tuple[Any, ...]] = []
    tickers, datasets, dates, stamps = col("ticker"), col("dataset"), col("date"), col("ts")
    rules, severities, details = col("rule"), col("severity"), col("detail")
    for i in range(n):
        out.append(
            (
                check_id,
                run_id,
                checked_at,
                str(tickers[i]),
                str(datasets[i]),
                _date_text(dates[i], "violation date"),
                _ts_text(stamps[i], "violation ts"),
                str(rules[i]),
                _check_severity(str(severities[i]), str(tickers[i]), str(rules[i])),
                str(details[i] or ""),
            )
        )
    return out


def _violation_row(t: Sequence[Any]) -> ViolationRow:
    return ViolationRow(
        check_id=str(t[0]),
        run_id=_opt_str(t[1]),
        checked_at=str(t[2]),
        ticker=str(t[3]),
        dataset=str(t[4]),
        date=_text_date(t[5]),
        ts=_text_ts(t[6]),
        rule=str(t[7]),
        severity=str(t[8]),
        detail=str(t[9]),
    )


def _where(filters: Sequence[tuple[str, Any]]) -> tuple[str, tuple[Any, ...]]:
    """Build ``WHERE a = ? AND b = ?`` from (column, value) pairs, skipping None values."""
    used = [(column, value) for column, value in filters if value is not None]
    if not used:
        return "", ()
    clause = " WHERE " + " AND ".join(f"{column} = ?" for column, _ in used)
    return clause, tuple(value for _, value in used)


# --- the catalog ---------------------------------------------------------------------------------


class Catalog:
    """The lake's catalog on a SQLite file (or in memory).

    Open with :meth:`open` (or the constructor); use as a context manager or call :meth:`close`.
    Every method is thread-safe.

    Parameters
    ----------
    path:
        Database file; parent directories are created. ``None`` or ``":memory:"`` opens a private
        in-memory catalog.

    Attributes
    ----------
    path:
        The database file path as text, or ``":memory:"``.

    Raises
    ------
    CatalogError
        The file cannot be opened, is not a SQLite database, is locked for more than 30 s, or has
        a schema version newer than this marketlake knows.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.RLock()
        in_memory = path is None or path == MEMORY
        self.path: str
        if path is None or path == MEMORY:
            self.path = MEMORY
        else:
            file = Path(path).expanduser()
            self.path = os.fspath(file)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(
                    f"cannot create the directory for catalog {self.path}: {exc}; "
                    "choose a writable location",
                    path=self.path,
                ) from exc
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are explicit (BEGIN … COMMIT)
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._wrap(exc, "open") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not in_memory:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._wrap(exc, "open") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Catalog:
        """Open (creating and migrating as needed) the catalog at ``path``.

        Parameters
        ----------
        path:
            Database file, or ``None`` / ``":memory:"`` for an in-memory catalog.

        Returns
        -------
        Catalog
            The open catalog.
        """
        return cls(path)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Idempotent; later calls on the catalog raise CatalogError."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._conn is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Catalog({self.path!r}, {state})"

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._reading("read the schema version") as conn:
            (version,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(version or 0)

    # -- internals ---------------------------------------------------------------------------

    def _wrap(self, exc: sqlite3.Error, action: str) -> CatalogError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CatalogError(
                f"catalog {self.path} is locked by another writer (waited {BUSY_TIMEOUT_S:g} s) "
                f"while trying to {action}; retry when the other marketlake process is done",
                path=self.path,
            )
        if "not a database" in text:
            return CatalogError(
                f"{self.path} is not a marketlake catalog (not a SQLite database); point the "
                "catalog setting at another file, or move this one away and rebuild the catalog "
                "from the store",
                path=self.path,
            )
        if "unable to open" in text:
            return CatalogError(
                f"cannot open catalog {self.path} ({text}); check that the path is a writable "
                "file, not a directory",
                path=self.path,
            )
        return CatalogError(f"catalog {self.path}: cannot {action}: {text}", path=self.path)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        known = MIGRATIONS[-1].version
        try:
            (current,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError:  # no such table: a new catalog
            current = None
        if current is not None and int(current) == known:
            return
        self._check_not_newer(int(current or 0), known)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SCHEMA_MIGRATIONS_DDL)
            # Re-read under the write lock: another process may have migrated meanwhile.
            (current,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            current = int(current or 0)
            self._check_not_newer(current, known)
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (migration.version, utc_now_iso()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_not_newer(self, current: int, known: int) -> None:
        if current > known:
            raise CatalogError(
                f"catalog {self.path} has schema version {current}, newer than the version "
                f"{known} this marketlake understands; upgrade marketlake "
                "(pip install -U marketlake) to use it",
                path=self.path,
                version=current,
            )

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise CatalogError(
                    f"catalog {self.path} is closed; open it again with Catalog.open()",
                    path=self.path,
                )
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._wrap(exc, action) from exc

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        with self._reading(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # The original error matters more than a failed rollback.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._run_not_found(run_id)
        return str(row[0])

    def _run_not_found(self, run_id: str) -> RunNotFoundError:
        return RunNotFoundError(
            f"run {run_id!r} is not in the catalog {self.path}; "
            "list the known runs with `marketlake runs`",
            run_id=run_id,
        )

    # -- assets ------------------------------------------------------------------------------

    def upsert_assets(self, rows: Iterable[AssetRow]) -> None:
        """Insert or update assets in one transaction.

        An existing asset keeps its ``first_seen``; ``exchange``, ``active``, ``frequency`` and
        ``last_seen`` take the new values.

        Parameters
        ----------
        rows:
            Assets to write.
        """
        params = [_asset_params(r) for r in rows]
        with self._writing("upsert assets") as conn:
            conn.executemany(_UPSERT_ASSET, params)

    def assets(self, active_only: bool = False) -> list[AssetRow]:
        """Return the monitored assets ordered by ticker, source.

        Parameters
        ----------
        active_only:
            Only the active ones.

        Returns
        -------
        list[AssetRow]
            The assets.
        """
        sql = f"SELECT {_ASSET_COLUMNS} FROM assets"
        if active_only:
            sql += " WHERE active = 1"
        sql += " ORDER BY ticker, source"
        with self._reading("read assets") as conn:
            return [_asset_row(t) for t in conn.execute(sql)]

    # -- monitored assets --------------------------------------------------------------------

    def upsert_monitored(self, rows: Iterable[MonitoredAsset]) -> None:
        """Add or change monitored assets in one transaction (``added_at`` is kept).

        Parameters
        ----------
        rows:
            Assets to monitor.

        Raises
        ------
        CatalogError
            A row has no datasets or an unknown frequency; nothing is written.
        """
        params: list[tuple[Any, ...]] = []
        for r in rows:
            if not r.datasets:
                raise CatalogError(
                    f"monitored asset {r.ticker} ({r.source}) has no datasets; name at least one",
                    ticker=r.ticker,
                    source=r.source,
                )
            if r.frequency not in MONITOR_FREQUENCIES:
                raise CatalogError(
                    f"monitored asset {r.ticker} ({r.source}): frequency {r.frequency!r} is not "
                    f"one of {list(MONITOR_FREQUENCIES)}",
                    ticker=r.ticker,
                    source=r.source,
                )
            params.append(_monitored_params(r))
        with self._writing("upsert monitored assets") as conn:
            conn.executemany(_UPSERT_MONITORED, params)

    def remove_monitored(self, tickers: Iterable[str], source: str | None = None) -> int:
        """Stop monitoring ``tickers`` (all sources, or only ``source``); data is kept.

        Parameters
        ----------
        tickers:
            Tickers to remove.
        source:
            Only this source's entries (None: every source).

        Returns
        -------
        int
            Entries removed.
        """
        removed = 0
        with self._writing("remove monitored assets") as conn:
            for ticker in tickers:
                if source is None:
                    cur = conn.execute("DELETE FROM monitored_assets WHERE ticker = ?", (ticker,))
                else:
                    cur = conn.execute(
                        "DELETE FROM monitored_assets WHERE ticker = ? AND source = ?",
                        (ticker, source),
                    )
                removed += max(0, cur.rowcount)
        return removed

    def monitored(
        self, source: str | None = None, *, active_only: bool = False
    ) -> list[MonitoredAsset]:
        """Return the monitored assets ordered by source, ticker.

        Parameters
        ----------
        source:
            Only this source's assets.
        active_only:
            Only the active ones.

        Returns
        -------
        list[MonitoredAsset]
            The assets.
        """
        where, args = _where([("source", source), ("active", 1 if active_only else None)])
        sql = f"SELECT {_MONITORED_COLUMNS} FROM monitored_assets{where} ORDER BY source, ticker"
        with self._reading("read monitored assets") as conn:
            return [_monitored_row(t) for t in conn.execute(sql, args)]

    # -- month progress ----------------------------------------------------------------------

    def upsert_month_progress(self, rows: Iterable[MonthProgressRow]) -> None:
        """Insert or replace per-month progress rows in one transaction.

        Parameters
        ----------
        rows:
            Month states (a later row for the same key wins).
        """
        params = [_month_params(r) for r in rows]
        with self._writing("upsert month progress") as conn:
            conn.executemany(_UPSERT_MONTH, params)

    def month_progress(
        self,
        dataset: str | None = None,
        ticker: str | None = None,
        source: str | None = None,
        *,
        complete: bool | None = None,
    ) -> list[MonthProgressRow]:
        """Return per-month progress ordered by dataset, ticker, source, month.

        Parameters
        ----------
        dataset, ticker, source:
            Optional filters.
        complete:
            Only complete (True) or incomplete (False) months.

        Returns
        -------
        list[MonthProgressRow]
            The matching months.
        """
        flag = None if complete is None else (1 if complete else 0)
        where, args = _where(
            [("dataset", dataset), ("ticker", ticker), ("source", source), ("complete", flag)]
        )
        sql = (
            f"SELECT {_MONTH_COLUMNS} FROM month_progress{where} "
            "ORDER BY dataset, ticker, source, month"
        )
        with self._reading("read month progress") as conn:
            return [_month_row(t) for t in conn.execute(sql, args)]

    def month_counts(self) -> dict[str, tuple[int, int]]:
        """Return ``{dataset: (complete months, incomplete months)}`` over all tickers.

        Returns
        -------
        dict[str, tuple[int, int]]
            Counts per dataset (datasets without month rows are absent).
        """
        sql = (
            "SELECT dataset, COALESCE(SUM(complete), 0), COUNT(*) - COALESCE(SUM(complete), 0) "
            "FROM month_progress GROUP BY dataset ORDER BY dataset"
        )
        with self._reading("count month progress") as conn:
            return {str(d): (int(c), int(i)) for d, c, i in conn.execute(sql)}

    # -- partitions --------------------------------------------------------------------------

    def upsert_partitions(self, rows: Iterable[PartitionRow]) -> None:
        """Insert or replace partition rows (by dataset, ticker, period) in one transaction.

        Parameters
        ----------
        rows:
            Partitions to write; a later row for the same key wins.
        """
        params = [_partition_params(r) for r in rows]
        with self._writing("upsert partitions") as conn:
            conn.executemany(_UPSERT_PARTITION, params)

    def delete_partitions(self, keys: Iterable[tuple[str, str, str]]) -> int:
        """Forget partitions by ``(dataset, ticker, period)`` (after compaction folded them into
        a history object). Returns the number of rows deleted."""
        params = list(keys)
        with self._writing("delete partitions") as conn:
            before = conn.total_changes
            conn.executemany(
                "DELETE FROM partitions WHERE dataset = ? AND ticker = ? AND period = ?", params
            )
            return int(conn.total_changes - before)

    def upsert_cross_sections(self, rows: Iterable[CrossSectionRow]) -> None:
        """Record built cross-section companions."""
        params = [
            (
                r.dataset,
                r.day.isoformat(),
                r.object_key,
                r.tickers,
                r.bytes,
                r.sha256,
                r.built_at,
                r.seq,
            )
            for r in rows
        ]
        with self._writing("record cross-sections") as conn:
            conn.executemany(
                "INSERT INTO cross_sections "
                "(dataset, day, object_key, tickers, bytes, sha256, built_at, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dataset, day) DO UPDATE SET "
                "object_key = excluded.object_key, tickers = excluded.tickers, "
                "bytes = excluded.bytes, sha256 = excluded.sha256, "
                "built_at = excluded.built_at, seq = excluded.seq",
                params,
            )

    def cross_section(self, dataset: str, day: dt.date) -> CrossSectionRow | None:
        """The companion of (dataset, day), or None."""
        with self._reading("read cross-sections") as conn:
            row = conn.execute(
                "SELECT dataset, day, object_key, tickers, bytes, sha256, built_at, seq "
                "FROM cross_sections WHERE dataset = ? AND day = ?",
                (dataset, day.isoformat()),
            ).fetchone()
        if row is None:
            return None
        return CrossSectionRow(
            dataset=row[0],
            day=dt.date.fromisoformat(row[1]),
            object_key=row[2],
            tickers=int(row[3]),
            bytes=int(row[4]),
            sha256=row[5],
            built_at=row[6],
            seq=int(row[7]),
        )

    def record_xs_changes(self, changes: Iterable[tuple[str, str, dt.date, dt.date]]) -> None:
        """Record writes that changed rows: ``(dataset, ticker, first day, last day)``."""
        params = [(d, t, lo.isoformat(), hi.isoformat()) for d, t, lo, hi in changes]
        if not params:
            return
        with self._writing("record changes") as conn:
            conn.executemany(
                "INSERT INTO xs_changes (dataset, ticker, first_day, last_day) VALUES (?, ?, ?, ?)",
                params,
            )

    def xs_changes_since(self, dataset: str, day: dt.date, seq: int) -> tuple[set[str], int]:
        """Tickers of ``dataset`` with a change covering ``day`` numbered after ``seq``, and
        the newest change number of all (the ``seq`` of a companion built now)."""
        d = day.isoformat()
        with self._reading("read changes") as conn:
            tickers = {
                str(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT ticker FROM xs_changes WHERE dataset = ? AND first_day <= ? "
                    "AND last_day >= ? AND id > ?",
                    (dataset, d, d, seq),
                )
            }
            top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM xs_changes").fetchone()[0]
        return tickers, int(top)

    def replace_partitions(self, rows: Iterable[PartitionRow]) -> None:
        """Replace the whole partitions table with ``rows`` in one transaction.

        Used to rebuild the catalog from the store's ``_meta`` objects; readers never see a
        half-rebuilt table.

        Parameters
        ----------
        rows:
            Every partition of the lake.
        """
        params = [_partition_params(r) for r in rows]
        with self._writing("replace partitions") as conn:
            conn.execute("DELETE FROM partitions")
            conn.executemany(_UPSERT_PARTITION, params)

    def partitions(
        self, dataset: str | None = None, ticker: str | None = None
    ) -> list[PartitionRow]:
        """Return partitions ordered by dataset, ticker, period.

        Parameters
        ----------
        dataset, ticker:
            Optional filters.

        Returns
        -------
        list[PartitionRow]
            The matching partitions.
        """
        where, args = _where([("dataset", dataset), ("ticker", ticker)])
        sql = f"SELECT {_PARTITION_COLUMNS} FROM partitions{where} ORDER BY dataset, ticker, period"
        with self._reading("read partitions") as conn:
            return [_partition_row(t) for t in conn.execute(sql, args)]

    def scan_extent(
        self,
        dataset: str,
        tickers: Collection[str] | None,
        lo: dt.date | None,
        hi: dt.date | None,
    ) -> tuple[int, list[str]]:
        """How much of ``dataset`` a read of ``tickers`` (None: every ticker) over the
        inclusive dates ``[lo, hi]`` (None: open) touches: the number of distinct objects
        overlapping the range, and the sorted tickers that hold any partition.

        One query per 500 tickers (a per-ticker :meth:`partitions` costs ~50 us each)."""
        first_day = lo.isoformat() if lo is not None else None
        last_day = hi.isoformat() if hi is not None else None
        names = sorted(set(tickers)) if tickers is not None else None
        groups: list[list[str] | None] = (
            [None] if names is None else [names[i : i + 500] for i in range(0, len(names), 500)]
        )
        objects: set[str] = set()
        held: set[str] = set()
        with self._reading("read partitions") as conn:
            for group in groups:
                where, args = "dataset = ?", [dataset]
                if group is not None:
                    where += f" AND ticker IN ({','.join('?' * len(group))})"
                    args += group
                sql = f"SELECT ticker, object_key, min_date, max_date FROM partitions WHERE {where}"
                for ticker, key, first, last in conn.execute(sql, args):
                    held.add(str(ticker))
                    if (first_day is None or last is None or last >= first_day) and (
                        last_day is None or first is None or first <= last_day
                    ):
                        objects.add(str(key))
        return len(objects), sorted(held)

    def tickers(self, dataset: str | None = None) -> list[str]:
        """Distinct tickers with at least one partition (of ``dataset``), sorted."""
        where, args = _where([("dataset", dataset)])
        sql = f"SELECT DISTINCT ticker FROM partitions{where} ORDER BY ticker"
        with self._reading("read tickers") as conn:
            return [str(t[0]) for t in conn.execute(sql, args)]

    # -- collection progress -----------------------------------------------------------------

    def advance_progress(self, rows: Iterable[ProgressRow]) -> None:
        """Move daily watermarks forward in one transaction; never backwards.

        A row whose ``last_date`` is None or not after the stored one changes nothing (not even
        ``updated_at``), so backfills and re-runs cannot move a watermark back.

        Parameters
        ----------
        rows:
            New watermarks.
        """
        params = [_progress_params(r) for r in rows]
        with self._writing("advance collection progress") as conn:
            conn.executemany(_ADVANCE_PROGRESS, params)

    def progress(
        self,
        dataset: str | None = None,
        ticker: str | None = None,
        source: str | None = None,
    ) -> list[ProgressRow]:
        """Return watermarks ordered by dataset, ticker, source.

        Parameters
        ----------
        dataset, ticker, source:
            Optional filters.

        Returns
        -------
        list[ProgressRow]
            The matching watermarks.
        """
        where, args = _where([("dataset", dataset), ("ticker", ticker), ("source", source)])
        sql = (
            f"SELECT {_PROGRESS_COLUMNS} FROM collection_progress{where} "
            "ORDER BY dataset, ticker, source"
        )
        with self._reading("read collection progress") as conn:
            return [_progress_row(t) for t in conn.execute(sql, args)]

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        kind: str,
        source: str,
        params: Mapping[str, Any],
        items: Sequence[tuple[str, str]],
    ) -> None:
        """Record a new run as ``running`` with all its items ``pending``, in one transaction.

        Parameters
        ----------
        run_id:
            Unique id of the run.
        kind:
            What the run does (``"daily"``, ``"backfill"`` …).
        source:
            Source name.
        params:
            The run's parameters; must be JSON-serialisable (dates, paths, sets and tuples are
            converted).
        items:
            ``(ticker, dataset)`` pairs; duplicates are recorded once.

        Raises
        ------
        CatalogError
            ``run_id`` already exists, or ``params`` cannot be stored as JSON.
        """
        try:
            params_json = json.dumps(
                dict(params), sort_keys=True, separators=(",", ":"), default=_json_default
            )
        except (TypeError, ValueError) as exc:
            raise CatalogError(
                f"run {run_id!r}: params cannot be stored as JSON ({exc}); pass plain values",
                run_id=run_id,
            ) from exc
        unique = list(dict.fromkeys((str(t), str(d)) for t, d in items))
        with self._writing("create a run") as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise CatalogError(
                    f"run {run_id!r} already exists in catalog {self.path}; resume it "
                    "(--resume) or use another run id",
                    run_id=run_id,
                )
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, 'running', ?, NULL, ?, 0, 0, NULL)",
                (run_id, kind, source, params_json, utc_now_iso(), len(unique)),
            )
            conn.executemany(
                f"INSERT INTO run_items ({_RUN_ITEM_COLUMNS}) "
                "VALUES (?, ?, ?, 'pending', 0, 0, 0, 0, NULL, NULL, NULL)",
                [(run_id, ticker, dataset) for ticker, dataset in unique],
            )

    def record_items(self, run_id: str, results: Iterable[RunItemRow]) -> None:
        """Insert or update item states of a run in one transaction.

        A ``completed``/``failed`` item without ``finished_at`` gets the current time; an item
        without ``started_at`` keeps the stored one.

        Parameters
        ----------
        run_id:
            The run; every row's ``run_id`` must equal it.
        results:
            Item states.

        Raises
        ------
        RunNotFoundError
            The run does not exist.
        CatalogError
            A row belongs to another run or has an unknown status.
        """
        now = utc_now_iso()
        params: list[tuple[Any, ...]] = []
        for r in results:
            if r.run_id != run_id:
                raise CatalogError(
                    f"record_items({run_id!r}) got an item of run {r.run_id!r} "
                    f"({r.ticker}/{r.dataset})",
                    run_id=run_id,
                    ticker=r.ticker,
                    dataset=r.dataset,
                )
            _check_status(r.status, ITEM_STATUSES, "run item")
            finished = r.finished_at
            if finished is None and r.status in _FINAL_RUN_STATUSES:
                finished = now
            params.append(
                (
                    run_id,
                    r.ticker,
                    r.dataset,
                    r.status,
                    int(r.rows_fetched),
                    int(r.rows_added),
                    int(r.rows_updated),
                    int(r.row_count),
                    r.error,
                    r.started_at,
                    finished,
                )
            )
        with self._writing("record run items") as conn:
            self._require_run(conn, run_id)
            conn.executemany(_UPSERT_RUN_ITEM, params)

    def reset_items(self, run_id: str, items: Iterable[tuple[str, str]]) -> None:
        """Set items back to ``pending`` (counts, error and times cleared) to resume a run.

        Items not yet in the run are added. The run itself goes back to ``running`` (its
        ``finished_at`` and ``error`` are cleared) until :meth:`finish_run` is called again.

        Parameters
        ----------
        run_id:
            The run.
        items:
            ``(ticker, dataset)`` pairs.

        Raises
        ------
        RunNotFoundError
            The run does not exist.
        """
        params = [(run_id, str(t), str(d)) for t, d in items]
        with self._writing("reset run items") as conn:
            self._require_run(conn, run_id)
            conn.executemany(_RESET_RUN_ITEM, params)
            conn.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL "
                "WHERE run_id = ?",
                (run_id,),
            )

    def finish_run(
        self, run_id: str, status: str | None = None, error: str | None = None
    ) -> RunRow:
        """Mark a run finished, storing its item counts and ``finished_at``.

        Parameters
        ----------
        run_id:
            The run.
        status:
            ``"completed"`` or ``"failed"``. None derives it: ``completed`` when every item
            completed, ``failed`` otherwise (an item failed or never ran).
        error:
            Run-level error text, if any.

        Returns
        -------
        RunRow
            The finished run.

        Raises
        ------
        RunNotFoundError
            The run does not exist.
        CatalogError
            ``status`` is not a final status.
        """
        if status is not None:
            _check_status(status, _FINAL_RUN_STATUSES, "final run")
        with self._writing("finish a run") as conn:
            self._require_run(conn, run_id)
            total, completed, failed = conn.execute(
                "SELECT COUNT(*),"
                " COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0)"
                " FROM run_items WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if status is None:
                status = "completed" if int(completed) == int(total) else "failed"
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ?, items_total = ?,"
                " items_completed = ?, items_failed = ? WHERE run_id = ?",
                (status, utc_now_iso(), error, int(total), int(completed), int(failed), run_id),
            )
            row = conn.execute(_SELECT_RUNS + " WHERE r.run_id = ?", (run_id,)).fetchone()
            return _run_row(row)

    def get_run(self, run_id: str) -> RunRow:
        """Return one run.

        Parameters
        ----------
        run_id:
            The run.

        Returns
        -------
        RunRow
            The run (item counts are live while it is unfinished).

        Raises
        ------
        RunNotFoundError
            No run has this id; the message suggests ``marketlake runs``.
        """
        with self._reading("read a run") as conn:
            row = conn.execute(_SELECT_RUNS + " WHERE r.run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise self._run_not_found(run_id)
            return _run_row(row)

    def list_runs(self, limit: int = 20) -> list[RunRow]:
        """Return the most recent runs, newest first.

        Parameters
        ----------
        limit:
            Maximum number of runs (at least 1).

        Returns
        -------
        list[RunRow]
            Runs ordered by ``started_at`` descending (ties by run id descending).
        """
        if limit < 1:
            raise CatalogError(f"list_runs limit must be at least 1, got {limit}")
        sql = _SELECT_RUNS + " ORDER BY r.started_at DESC, r.run_id DESC LIMIT ?"
        with self._reading("list runs") as conn:
            return [_run_row(t) for t in conn.execute(sql, (int(limit),))]

    def run_items(self, run_id: str, status: str | None = None) -> list[RunItemRow]:
        """Return the items of a run ordered by ticker, dataset.

        Parameters
        ----------
        run_id:
            The run.
        status:
            Only items in this status.

        Returns
        -------
        list[RunItemRow]
            The items.

        Raises
        ------
        RunNotFoundError
            The run does not exist.
        """
        if status is not None:
            _check_status(status, ITEM_STATUSES, "run item")
        where, args = _where([("run_id", run_id), ("status", status)])
        sql = f"SELECT {_RUN_ITEM_COLUMNS} FROM run_items{where} ORDER BY ticker, dataset"
        with self._reading("read run items") as conn:
            self._require_run(conn, run_id)
            return [_run_item_row(t) for t in conn.execute(sql, args)]

    def unfinished_items(self, run_id: str) -> list[tuple[str, str]]:
        """Return the ``(ticker, dataset)`` items of a run that are not ``completed``.

        Parameters
        ----------
        run_id:
            The run.

        Returns
        -------
        list[tuple[str, str]]
            Items ordered by ticker, dataset: what a resume has to do.

        Raises
        ------
        RunNotFoundError
            The run does not exist.
        """
        sql = (
            "SELECT ticker, dataset FROM run_items WHERE run_id = ? AND status <> 'completed' "
            "ORDER BY ticker, dataset"
        )
        with self._reading("read unfinished run items") as conn:
            self._require_run(conn, run_id)
            return [(str(t), str(d)) for t, d in conn.execute(sql, (run_id,))]

    # -- comparison --------------------------------------------------------------------------

    def snapshot(self, *, include_timestamps: bool = True) -> dict[str, list[tuple[Any, ...]]]:
        """Return the assets and partitions tables as tuples sorted by primary key.

        Values are as stored (dates and timestamps as ISO text, ``active`` as 0/1), in column
        order. Meant for comparing a catalog rebuilt from the store with the live one.

        Parameters
        ----------
        include_timestamps:
            False drops ``first_seen``/``last_seen`` (assets) and ``updated_at`` (partitions).

        Returns
        -------
        dict[str, list[tuple]]
            ``{"assets": [...], "partitions": [...]}``.
        """
        asset_cols = _ASSET_COLUMNS
        partition_cols = _PARTITION_COLUMNS
        if not include_timestamps:
            asset_cols = asset_cols.removesuffix(", first_seen, last_seen")
            partition_cols = partition_cols.removesuffix(", updated_at")
        with self._reading("snapshot the catalog") as conn:
            assets = conn.execute(f"SELECT {asset_cols} FROM assets ORDER BY ticker, source")
            asset_rows = [tuple(t) for t in assets]
            partitions = conn.execute(
                f"SELECT {partition_cols} FROM partitions ORDER BY dataset, ticker, period"
            )
            partition_rows = [tuple(t) for t in partitions]
        return {"assets": asset_rows, "partitions": partition_rows}

    # -- data-quality violations -------------------------------------------------------------

    def record_violations(
        self,
        check_id: str,
        checked_at: str,
        rows: Any,
        *,
        run_id: str | None = None,
        scope: Iterable[tuple[Any, ...]] | None = None,
    ) -> int:
        """Store the violations one check found, and what the check covered, in one transaction.

        Parameters
        ----------
        check_id:
            Unique id of the check (``marketlake.quality.validate`` makes one per call).
        checked_at:
            When the check ran: UTC ISO text as :func:`utc_now_iso` gives it.
        rows:
            A ``pyarrow.Table`` with the violation columns (``ticker``, ``dataset``, ``date``,
            ``ts``, ``rule``, ``severity``, ``detail``; ``date``/``ts`` may be absent) or an
            iterable of :class:`ViolationRow` (their ``check_id``/``checked_at`` are replaced
            by the arguments; their ``run_id`` is kept when ``run_id`` is None).
        run_id:
            The ingest run the check followed, if any.
        scope:
            What the check looked at, as ``(dataset, ticker, since)`` or ``(dataset, ticker,
            since, rule)`` tuples: ``ticker`` None means every ticker, ``since`` None every
            date, ``rule`` None (or absent) the dataset's row rules (those named
            ``<dataset>.…`` and ``read_error``), else one rule's name (``freshness.stale``). A
            stored violation stays *open* (see :meth:`violations` with ``latest_only``) until a
            later check's scope covers its dataset, ticker, date and rule. Default: the
            ``(dataset, ticker, rule)`` triples of ``rows``, all dates.

        Returns
        -------
        int
            Violations stored.

        Raises
        ------
        CatalogError
            A row has an unknown severity or a naive ``ts``; nothing is stored.
        """
        if isinstance(rows, Iterable) and not hasattr(rows, "column_names"):
            params = [
                _violation_params(r, check_id, checked_at, run_id if run_id else r.run_id)
                for r in rows
            ]
        else:
            params = _violation_params_from_table(rows, check_id, checked_at, run_id)
        scope_params: list[tuple[str, str, str, str, str, str | None]] = []
        if scope is None:
            for d, t, r in dict.fromkeys((p[4], p[3], p[7]) for p in params):
                scope_params.append((check_id, checked_at, d, t, r, None))
        else:
            for item in scope:
                d, t, s = item[0], item[1], item[2]
                r = item[3] if len(item) > 3 else None
                since = _date_text(s, "violation scope since")
                scope_params.append((check_id, checked_at, str(d), t or "*", r or "*", since))
        with self._writing("record violations") as conn:
            conn.executemany(
                f"INSERT INTO violations ({_VIOLATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            conn.executemany(
                "INSERT INTO violation_scopes (check_id, checked_at, dataset, ticker, rule, since)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (check_id, dataset, ticker, rule) DO UPDATE"
                " SET since = excluded.since",
                list({p[2:5]: p for p in scope_params}.values()),
            )
        return len(params)

    def violations(
        self,
        *,
        dataset: str | None = None,
        ticker: str | None = None,
        rule: str | None = None,
        severity: str | None = None,
        since: str | None = None,
        latest_only: bool = False,
        check_id: str | None = None,
        limit: int | None = None,
    ) -> list[ViolationRow]:
        """Return stored violations ordered by check time, dataset, ticker, date, ts, rule.

        Parameters
        ----------
        dataset, ticker, rule, severity, check_id:
            Optional filters.
        since:
            Only violations found by checks at or after this UTC ISO time (a date
            ``"YYYY-MM-DD"`` works: ISO text order is time order).
        latest_only:
            Only *open* violations: those no later check covered. A check covers a stored
            violation when its scope holds the violation's dataset, its ticker (or every
            ticker), its rule (or the dataset's row rules) and its date (no ``since``, or a
            dated violation on or after it). After a full check this is exactly that check's
            findings; a partial check (some tickers, a recent window) replaces only what it
            looked at.
        limit:
            At most this many rows.

        Returns
        -------
        list[ViolationRow]
            The matching violations.
        """
        if severity is not None and severity not in VIOLATION_SEVERITIES:
            raise CatalogError(
                f"violation severity {severity!r} is not one of {list(VIOLATION_SEVERITIES)}"
            )
        where, args = _where(
            [
                ("v.dataset", dataset),
                ("v.ticker", ticker),
                ("v.rule", rule),
                ("v.severity", severity),
                ("v.check_id", check_id),
            ]
        )
        clauses = [where.removeprefix(" WHERE ")] if where else []
        params: list[Any] = list(args)
        if since is not None:
            clauses.append("v.checked_at >= ?")
            params.append(since)
        if latest_only:
            clauses.append(_OPEN_VIOLATION)
        sql = f"SELECT {_VIOLATION_SELECT} FROM violations v"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY v.checked_at, v.dataset, v.ticker, v.date, v.ts, v.rule"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        with self._reading("read violations") as conn:
            return [_violation_row(t) for t in conn.execute(sql, params)]

    def violation_counts(
        self,
        by: Sequence[str] = ("rule", "severity"),
        period: str | None = "day",
        *,
        since: str | None = None,
        latest_only: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Count violations per period and group, for trends over time.

        A violation (same ticker, dataset, date, ts, rule and detail) found again by several
        checks in the same period counts once per period.

        Parameters
        ----------
        by:
            Grouping columns, any of ``rule``, ``severity``, ``dataset``, ``ticker``.
        period:
            ``"day"`` (``YYYY-MM-DD`` of the check time, UTC), ``"month"`` (``YYYY-MM``),
            ``"check"`` (each check's ``checked_at``) or None (no period column).
        since:
            Only checks at or after this UTC ISO time.
        latest_only:
            Only open violations (see :meth:`violations`).

        Returns
        -------
        list[tuple]
            ``(period, *by, count)`` rows (no period when ``period`` is None) ordered by period
            then the grouping columns.
        """
        allowed = ("rule", "severity", "dataset", "ticker")
        cols = list(dict.fromkeys(by))
        bad = [c for c in cols if c not in allowed]
        if bad:
            raise CatalogError(f"violation_counts by={bad} is not a subset of {list(allowed)}")
        periods = {
            "day": "substr(v.checked_at, 1, 10)",
            "month": "substr(v.checked_at, 1, 7)",
            "check": "v.checked_at",
        }
        if period is not None and period not in periods:
            raise CatalogError(f"violation_counts period={period!r} is not one of {list(periods)}")
        keys = list(dict.fromkeys([*cols, "ticker", "dataset", "date", "ts", "rule", "detail"]))
        inner = [f"v.{k} AS {k}" for k in keys]
        outer = list(cols)
        if period is not None:
            inner.insert(0, f"{periods[period]} AS period")
            outer.insert(0, "period")
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("v.checked_at >= ?")
            params.append(since)
        if latest_only:
            clauses.append(_OPEN_VIOLATION)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        group = ", ".join(outer)
        sql = (
            f"SELECT {group + ', ' if group else ''}COUNT(*) FROM "
            f"(SELECT DISTINCT {', '.join(inner)} FROM violations v{where}) sub"
        )
        if group:
            sql += f" GROUP BY {group} ORDER BY {group}"
        with self._reading("count violations") as conn:
            return [tuple(t) for t in conn.execute(sql, params)]

    def violation_checks(self, limit: int = 20) -> list[tuple[str, str, int]]:
        """Return the most recent checks, newest first.

        Parameters
        ----------
        limit:
            Maximum number of checks.

        Returns
        -------
        list[tuple[str, str, int]]
            ``(check_id, checked_at, violations found)``.
        """
        sql = (
            "SELECT s.check_id, s.checked_at, "
            "(SELECT COUNT(*) FROM violations v WHERE v.check_id = s.check_id) "
            "FROM (SELECT DISTINCT check_id, checked_at FROM violation_scopes) s "
            "ORDER BY s.checked_at DESC, s.check_id DESC LIMIT ?"
        )
        with self._reading("list violation checks") as conn:
            return [(str(c), str(a), int(n)) for c, a, n in conn.execute(sql, (int(limit),))]

    def prune_violations(self, before: str) -> int:
        """Delete violations and check scopes recorded before ``before`` (UTC ISO text).

        Parameters
        ----------
        before:
            Checks strictly older than this are forgotten.

        Returns
        -------
        int
            Violations deleted.
        """
        with self._writing("prune violations") as conn:
            cur = conn.execute("DELETE FROM violations WHERE checked_at < ?", (before,))
            conn.execute("DELETE FROM violation_scopes WHERE checked_at < ?", (before,))
            return max(0, cur.rowcount)

    def ticker_ranges(
        self, dataset: str | None = None
    ) -> list[tuple[str, str, dt.date | None, dt.date | None, int]]:
        """Return each (dataset, ticker)'s first date, last date and rows, from ``partitions``.

        Parameters
        ----------
        dataset:
            Only this dataset.

        Returns
        -------
        list[tuple[str, str, date | None, date | None, int]]
            ``(dataset, ticker, min_date, max_date, rows)`` ordered by dataset, ticker.
        """
        where, args = _where([("dataset", dataset)])
        sql = (
            "SELECT dataset, ticker, MIN(min_date), MAX(max_date), SUM(row_count) "
            f"FROM partitions{where} GROUP BY dataset, ticker ORDER BY dataset, ticker"
        )
        with self._reading("read ticker ranges") as conn:
            return [
                (str(d), str(t), _text_date(lo), _text_date(hi), int(n or 0))
                for d, t, lo, hi, n in conn.execute(sql, args)
            ]
