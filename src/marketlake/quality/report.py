"""The coverage report: ``marketlake report coverage --output DIR``.

Writes ``DIR/coverage.html`` (self-contained: inline CSS, plots as inline SVG, no external URL,
no JavaScript), ``DIR/coverage.md`` (the same sections; plots as the ``*.svg`` files beside it)
and CSV files with the full tables the pages only summarise. Sections: summary, coverage by
dataset x source x year (expected vs present sessions, %), coverage per ticker, the largest
holes, per-ticker gaps, freshness, data-quality violations by rule over time (from the catalog),
collection runs, storage (size and objects), known gaps and limitations.

Output is deterministic: the same lake, options and ``now`` give the same bytes; between two
runs only the generation time (and freshness, which depends on it) can change. Plots are drawn
with matplotlib's object API (no pyplot, no GUI backend), imported only when a report is made.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from marketlake.catalog import RunRow
from marketlake.errors import MarketlakeError
from marketlake.quality.coverage import FRESHNESS_STATUSES, Coverage, compute_coverage

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "STATIC_LIMITATIONS",
    "ReportData",
    "ReportFiles",
    "RunInfo",
    "collect_report",
    "describe_runs",
    "render_html",
    "render_markdown",
    "write_coverage_report",
]

TABLE_ROWS = 50
"""Rows shown per table in the pages; the CSV files hold every row."""

HEATMAP_TICKERS = 40
"""Tickers in the per-ticker heatmap (lowest coverage first)."""

TREND_PERIODS = 30
"""Most recent periods of violation counts shown."""

STATIC_LIMITATIONS: tuple[tuple[str, str], ...] = (
    (
        "Synthetic demo data",
        "Rows from the `synthetic` source (the demo, tests and benchmarks) are seeded random "
        "walks on the NYSE calendar, not market data.",
    ),
    (
        "Corporate actions have no announcement dates",
        "Vendors give ex dates only: adjusted and point-in-time reads count an action as known "
        "from its ex date (`knowledge_as_of`), not from when it was announced.",
    ),
    (
        "EDGAR fundamentals only from the XBRL era",
        "SEC companyfacts holds XBRL-tagged filings (from 2009 for large filers, 2011 for all): "
        "earlier quarters are absent, not missing. USD values only.",
    ),
    (
        "Fundamentals, filings, corporate actions and reference tables have no calendar",
        "Fiscal periods vary (52/53-week years, annual-only 20-F filers) and events are "
        "irregular: their completeness is not measured here; the storage table gives their rows "
        "and date ranges.",
    ),
    (
        "Short vendor histories",
        "Yahoo serves 1-minute bars for the last 30 days only and Kraken the most recent 720 "
        "bars of an interval: older minute and crypto history cannot be backfilled from them.",
    ),
    (
        "One crypto bar interval per lake",
        "`crypto_bars` has no interval column; coverage infers the interval per pair and "
        "exchange (the most common step between bars) and expects every slot, 24/7.",
    ),
    (
        "Coverage from counts",
        "Unless `--exact` is given, a partition (a month, or a compacted history object) whose "
        "row count equals its expected sessions is taken as complete without reading it (as "
        "month completion does); the validation rules read every date.",
    ),
    (
        "Storage from the catalog",
        "Sizes and object counts come from the catalog's partition rows, not from listing the "
        "store; `marketlake catalog rebuild` resynchronises the catalog with the store.",
    ),
    (
        "Calendar range",
        "NYSE sessions are known from 1990 to two years ahead (exchange-calendars); earlier "
        "rows are not counted against a calendar.",
    ),
)
"""Documented limitations printed in every report (title, explanation)."""


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """A run with what ``marketlake status`` and the report show about it."""

    run: RunRow
    seconds: float | None
    rows_added: int
    rows_updated: int
    errors: tuple[str, ...]


@dataclass(frozen=True)
class ReportData:
    """Everything a coverage report shows (see :func:`collect_report`)."""

    lake_url: str
    coverage: Coverage
    trend: tuple[tuple[str, str, str, int], ...]
    """Violation counts over time: (period, rule, severity, count), oldest first."""
    open_violations: tuple[tuple[str, str, str, int], ...]
    """Open violations (latest check per dataset): (dataset, rule, severity, count)."""
    runs: tuple[RunInfo, ...]
    options: dict[str, str] = field(default_factory=dict)

    @property
    def generated_at(self) -> dt.datetime:
        """The report's instant (the ``now`` coverage and freshness were judged at)."""
        return self.coverage.now


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_coverage_report`."""

    html: Path
    markdown: Path
    files: tuple[Path, ...]


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def describe_runs(lake: Lake, limit: int = 10) -> list[RunInfo]:
    """The most recent runs (newest first) with duration, rows written and first errors.

    Parameters
    ----------
    lake:
        The lake (its catalog).
    limit:
        How many runs.

    Returns
    -------
    list[RunInfo]
        One entry per run; ``seconds`` is None while a run is unfinished.
    """
    infos: list[RunInfo] = []
    for run in lake.catalog.list_runs(limit):
        start, end = _parse_time(run.started_at), _parse_time(run.finished_at)
        seconds = (end - start).total_seconds() if start and end else None
        added = updated = 0
        errors: list[str] = []
        for item in lake.catalog.run_items(run.run_id):
            added += item.rows_added
            updated += item.rows_updated
            if item.status == "failed" and len(errors) < 3:
                errors.append(f"{item.ticker}/{item.dataset}: {item.error or 'failed'}")
        if run.error and len(errors) < 3:
            errors.insert(0, run.error)
        infos.append(RunInfo(run, seconds, added, updated, tuple(errors)))
    return infos


def _violation_tables(
    lake: Lake,
) -> tuple[tuple[tuple[str, str, str, int], ...], tuple[tuple[str, str, str, int], ...]]:
    """(counts over time, open violations) from the catalog's violations table."""
    trend: list[tuple[str, str, str, int]] = []
    for row in lake.catalog.violation_counts(by=("rule", "severity"), period="day"):
        period, rule, severity, count = row[0], row[1], row[2], row[-1]
        trend.append((str(period), str(rule), str(severity), int(count)))
    trend.sort()
    open_counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for v in lake.catalog.violations(latest_only=True):
        open_counts[(v.dataset, v.rule, v.severity)] += 1
    opened = tuple(sorted((d, r, s, n) for (d, r, s), n in open_counts.items()))
    return tuple(trend), opened


def collect_report(
    lake: Lake,
    *,
    now: dt.datetime | None = None,
    datasets: Sequence[str] | None = None,
    tickers: Sequence[str] | None = None,
    exact: bool = False,
    runs: int = 10,
) -> ReportData:
    """Gather the report's data: coverage, violations from the catalog and recent runs.

    Parameters
    ----------
    lake:
        The lake.
    now:
        Aware instant of the report (default: the current time); freshness is judged at it.
    datasets, tickers:
        Only these (default: everything).
    exact:
        Read every session date (see :func:`~marketlake.quality.coverage.compute_coverage`).
    runs:
        How many recent runs to list.

    Returns
    -------
    ReportData
        The report's content.
    """
    cov = compute_coverage(lake, now=now, datasets=datasets, tickers=tickers, exact=exact)
    trend, opened = _violation_tables(lake)
    options = {
        "datasets": ",".join(datasets) if datasets else "all",
        "tickers": ",".join(tickers) if tickers else "all",
        "mode": "exact (every date read)" if exact else "counts (complete partitions not read)",
    }
    return ReportData(
        lake_url=lake.url,
        coverage=cov,
        trend=trend,
        open_violations=opened,
        runs=tuple(describe_runs(lake, runs)),
        options=options,
    )


# --- formatting -----------------------------------------------------------------------------------


def _int(n: Any) -> str:
    return "-" if n is None else f"{int(n):,}"


def _pct(p: Any) -> str:
    return "-" if p is None else f"{float(p):.2f}%"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _seconds(s: float | None) -> str:
    if s is None:
        return "running"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"


@dataclass
class _Table:
    """A table for both renderers: header, rows of text, right-aligned columns, a note."""

    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    note: str = ""


@dataclass
class _Section:
    anchor: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    blocks: list[_Table | str] = field(default_factory=list)  # str: a plot name
    items: list[str] = field(default_factory=list)


def _limited(rows: list[list[str]], total: int, csv: str | None) -> str:
    if total <= len(rows):
        return ""
    where = f" (every row in `{csv}`)" if csv else ""
    return f"Showing {len(rows):,} of {total:,} rows{where}."


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


# --- sections ------------------------------------------------------------------------------------


def _summary(data: ReportData) -> _Section:
    cov = data.coverage
    sec = _Section("summary", "Summary")
    storage = _rows(cov.storage)
    datasets = sorted({r["dataset"] for r in storage})
    objects = sum(r["objects"] for r in storage)
    size = sum(r["bytes"] for r in storage)
    sec.items.append(
        f"{len(datasets)} dataset(s) with data ({', '.join(datasets) or 'none'}): "
        f"{objects:,} data objects, {_bytes(size)}."
    )
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in _rows(cov.by_ticker):
        cell = totals[(r["dataset"], r["unit"])]
        cell[0] += r["expected"]
        cell[1] += r["present"]
        cell[2] += 1
    for (dataset, unit), (exp, pres, n) in sorted(totals.items()):
        share = 100.0 * pres / exp if exp else 100.0
        sec.items.append(
            f"{dataset}: {pres:,} of {exp:,} expected {unit} present ({share:.2f}%) over "
            f"{n:,} series."
        )
    gaps = cov.gaps.num_rows
    with_gaps = len({(r["dataset"], r["ticker"], r["exchange"]) for r in _rows(cov.gaps)})
    sec.items.append(f"{gaps:,} gap(s) in {with_gaps:,} series.")
    counts = cov.status_counts()
    sec.items.append(
        "Freshness: " + ", ".join(f"{counts[s]:,} {s}" for s in FRESHNESS_STATUSES) + "."
    )
    by_sev: dict[str, int] = defaultdict(int)
    for _d, _r, severity, n in data.open_violations:
        by_sev[severity] += n
    if by_sev:
        sec.items.append(
            "Open violations (latest check): "
            + ", ".join(f"{by_sev[s]:,} {s}" for s in sorted(by_sev))
            + "."
        )
    else:
        sec.items.append("Open violations: none recorded (run `marketlake validate`).")
    return sec


def _by_year(data: ReportData) -> _Section:
    sec = _Section("coverage", "Coverage by dataset, source and year")
    sec.paragraphs.append(
        "Expected: NYSE sessions (holidays excluded, half days included) within each ticker's "
        "life in the lake (first to last row), or for crypto every bar slot of the pair's "
        "interval, 24/7. Present: those held."
    )
    rows = [
        [
            r["dataset"],
            r["source"],
            str(r["year"]),
            r["unit"],
            _int(r["tickers"]),
            _int(r["expected"]),
            _int(r["present"]),
            _int(r["missing"]),
            _pct(r["pct"]),
        ]
        for r in _rows(data.coverage.by_year)
    ]
    header = ["dataset", "source", "year", "unit", "series", "expected", "present", "missing", "%"]
    sec.blocks.append(_Table(header, rows, {4, 5, 6, 7, 8}))
    sec.blocks.append("coverage_heatmap")
    return sec


def _per_ticker(data: ReportData) -> _Section:
    sec = _Section("tickers", "Coverage per ticker")
    table = data.coverage.by_ticker
    incomplete = [r for r in _rows(table) if r["missing"] or r["off_calendar"]]
    incomplete.sort(key=lambda r: (r["pct"], r["dataset"], r["ticker"], r["exchange"] or ""))
    sec.paragraphs.append(
        f"{table.num_rows:,} series; {len(incomplete):,} with missing sessions or bars, or "
        "rows off the calendar (lowest coverage first)."
    )
    sec.blocks.append("coverage_tickers")
    shown = incomplete[:TABLE_ROWS]
    rows = [
        [
            r["dataset"],
            r["ticker"] + (f" @ {r['exchange']}" if r["exchange"] else ""),
            r["source"],
            f"{r['first']} .. {r['last']}",
            _int(r["expected"]),
            _int(r["present"]),
            _int(r["missing"]),
            _pct(r["pct"]),
            _int(r["gaps"]),
            _int(r["largest_gap"]),
            _int(r["off_calendar"]),
        ]
        for r in shown
    ]
    header = [
        "dataset",
        "ticker",
        "source",
        "life",
        "expected",
        "present",
        "missing",
        "%",
        "gaps",
        "largest",
        "off calendar",
    ]
    if rows:
        sec.blocks.append(
            _Table(
                header,
                rows,
                {4, 5, 6, 7, 8, 9, 10},
                _limited(rows, len(incomplete), "coverage_by_ticker.csv"),
            )
        )
    return sec


def _gap_rows(rows: Iterable[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            r["dataset"],
            r["ticker"] + (f" @ {r['exchange']}" if r["exchange"] else ""),
            r["source"],
            r["start"],
            r["end"],
            f"{r['missing']:,} {r['unit'] if r['missing'] != 1 else r['unit'][:-1]}",
            _int(r["days"]),
        ]
        for r in rows
    ]


_GAP_HEADER = ["dataset", "ticker", "source", "first missing", "last missing", "missing", "days"]


def _holes(data: ReportData) -> _Section:
    sec = _Section("holes", "Largest holes")
    gaps = _rows(data.coverage.gaps)
    if not gaps:
        sec.paragraphs.append("No holes: every expected session and bar is present.")
        return sec
    sec.paragraphs.append("The longest missing ranges, by calendar days spanned.")
    sec.blocks.append(_Table(_GAP_HEADER, _gap_rows(gaps[:20]), {6}))
    return sec


def _gaps(data: ReportData) -> _Section:
    sec = _Section("gaps", "Per-ticker gaps")
    gaps = sorted(
        _rows(data.coverage.gaps),
        key=lambda r: (r["dataset"], r["ticker"], r["exchange"] or "", r["start"]),
    )
    if not gaps:
        sec.paragraphs.append("No gaps.")
        return sec
    shown = _gap_rows(gaps[:TABLE_ROWS])
    sec.blocks.append(_Table(_GAP_HEADER, shown, {6}, _limited(shown, len(gaps), "gaps.csv")))
    return sec


def _freshness(data: ReportData) -> _Section:
    sec = _Section("freshness", "Freshness")
    cov = data.coverage
    sec.paragraphs.append(
        f"Judged at {_text(cov.now)}. Expected: the last NYSE session whose data should be final "
        "(18:00 New York), or for crypto the last complete UTC day. `due`: behind, first "
        "missing session became due at most 24 h ago; `late`: 24-48 h (warning); `stale`: "
        "more than 48 h (alert for monitored assets)."
    )
    all_counts, mon_counts = cov.status_counts(), cov.status_counts(monitored_only=True)
    rows = [[s, _int(all_counts[s]), _int(mon_counts[s])] for s in FRESHNESS_STATUSES]
    sec.blocks.append(_Table(["status", "series", "monitored"], rows, {1, 2}))
    behind = [r for r in _rows(cov.freshness) if r["status"] != "fresh"]
    if behind:
        shown = [
            [
                r["dataset"],
                r["ticker"] + (f" @ {r['exchange']}" if r["exchange"] else ""),
                r["source"],
                _text(r["last"]),
                _text(r["expected"]),
                _int(r["behind"]),
                _text(r["due_at"]),
                r["status"],
                _text(r["monitored"]),
            ]
            for r in behind[:TABLE_ROWS]
        ]
        header = [
            "dataset",
            "ticker",
            "source",
            "last",
            "expected",
            "behind",
            "due since",
            "status",
            "monitored",
        ]
        sec.blocks.append(_Table(header, shown, {5}, _limited(shown, len(behind), "freshness.csv")))
    return sec


def _violations(data: ReportData) -> _Section:
    sec = _Section("violations", "Data-quality violations")
    sec.paragraphs.append(
        "From the catalog's violations table (`marketlake validate` and the check after each "
        "daily batch). Rules are described in docs/quality.md."
    )
    if data.open_violations:
        rows = [[d, r, s, _int(n)] for d, r, s, n in data.open_violations]
        sec.blocks.append(
            _Table(
                ["dataset", "rule", "severity", "open"],
                rows,
                {3},
                "Open: violations of the latest check of each dataset.",
            )
        )
    if not data.trend:
        sec.paragraphs.append("No violations recorded.")
        return sec
    periods = sorted({p for p, _r, _s, _n in data.trend})[-TREND_PERIODS:]
    keep = set(periods)
    rows = [[p, r, s, _int(n)] for p, r, s, n in data.trend if p in keep]
    sec.blocks.append("violations_over_time")
    sec.blocks.append(
        _Table(
            ["day", "rule", "severity", "violations"],
            rows,
            {3},
            f"Counts by rule per day, last {len(periods)} day(s) with checks.",
        )
    )
    return sec


def _runs(data: ReportData) -> _Section:
    sec = _Section("runs", "Collection runs")
    if not data.runs:
        sec.paragraphs.append("No runs recorded.")
        return sec
    rows = [
        [
            i.run.run_id,
            i.run.kind,
            i.run.source,
            i.run.started_at[:19].replace("T", " "),
            _seconds(i.seconds),
            i.run.status,
            f"{i.run.items_completed:,}/{i.run.items_total:,}",
            _int(i.run.items_failed),
            _int(i.rows_added),
            _int(i.rows_updated),
            "; ".join(i.errors) or "-",
        ]
        for i in data.runs
    ]
    header = [
        "run",
        "kind",
        "source",
        "started (UTC)",
        "took",
        "status",
        "items",
        "failed",
        "rows added",
        "rows updated",
        "first errors",
    ]
    sec.blocks.append(_Table(header, rows, {7, 8, 9}))
    return sec


def _storage(data: ReportData) -> _Section:
    sec = _Section("storage", "Storage")
    storage = _rows(data.coverage.storage)
    rows = [
        [
            r["dataset"],
            r["source"],
            _int(r["tickers"]),
            _int(r["objects"]),
            _int(r["meta_objects"]),
            _int(r["rows"]),
            _bytes(r["bytes"]),
            f"{_text(r['first'])} .. {_text(r['last'])}",
        ]
        for r in storage
    ]
    if rows:
        total = sum(r["bytes"] for r in storage)
        rows.append(
            [
                "total",
                "",
                "",
                _int(sum(r["objects"] for r in storage)),
                _int(sum(r["meta_objects"] for r in storage)),
                _int(sum(r["rows"] for r in storage)),
                _bytes(total),
                "",
            ]
        )
    header = ["dataset", "source", "tickers", "objects", "_meta", "rows", "size", "dates"]
    sec.blocks.append(_Table(header, rows, {2, 3, 4, 5, 6}, "From the catalog's partitions."))
    return sec


def _known(data: ReportData) -> _Section:
    sec = _Section("limitations", "Known gaps and limitations")
    cov = data.coverage
    found: list[str] = []
    holes: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in _rows(cov.by_ticker):
        if r["missing"]:
            name = r["ticker"] + (f" @ {r['exchange']}" if r["exchange"] else "")
            holes[r["dataset"]].append((-r["missing"], name))
    for dataset, entries in sorted(holes.items()):
        entries.sort()
        top = ", ".join(f"{name} ({-neg:,})" for neg, name in entries[:10])
        more = f" and {len(entries) - 10:,} more" if len(entries) > 10 else ""
        found.append(f"{dataset}: {len(entries):,} series with holes: {top}{more}.")
    off = [r for r in _rows(cov.by_ticker) if r["off_calendar"]]
    if off:
        names = ", ".join(f"{r['dataset']}/{r['ticker']}" for r in off[:10])
        found.append(
            f"{len(off):,} series hold rows off the calendar (weekends, holidays or "
            f"off the bar grid): {names}."
        )
    stale = [r for r in _rows(cov.freshness) if r["status"] == "stale"]
    if stale:
        mon = sum(1 for r in stale if r["monitored"])
        names = ", ".join(f"{r['dataset']}/{r['ticker']}" for r in stale[:10])
        found.append(
            f"{len(stale):,} stale series ({mon:,} monitored; the others may simply be "
            f"delisted or no longer collected): {names}"
            + (f" and {len(stale) - 10:,} more." if len(stale) > 10 else ".")
        )
    if cov.monitored_missing:
        names = ", ".join(f"{t}/{d}" for t, d in cov.monitored_missing[:10])
        found.append(f"Monitored but never collected: {names}.")
    if cov.empty_datasets:
        found.append("Datasets with no data in this lake: " + ", ".join(cov.empty_datasets) + ".")
    if cov.unknown_source:
        found.append(
            "Objects whose rows have no source (written by hand, `manual`): "
            + ", ".join(f"{d} ({n:,})" for d, n in cov.unknown_source.items())
            + "."
        )
    errors = [(d, r, n) for d, r, s, n in data.open_violations if s == "error"]
    if errors:
        found.append(
            "Open error violations: " + ", ".join(f"{d}/{r} ({n:,})" for d, r, n in errors) + "."
        )
    failed = [i.run for i in data.runs if i.run.status == "failed"]
    if failed:
        found.append(
            "Failed runs among the latest: "
            + ", ".join(f"{r.run_id} ({r.items_failed:,} failed items)" for r in failed)
            + "."
        )
    sec.paragraphs.append("Found in this lake:")
    sec.items.extend(found or ["Nothing: no holes, stale series or empty sources found."])
    sec.blocks.append(
        _Table(["limitation", "explanation"], [[t, e] for t, e in STATIC_LIMITATIONS])
    )
    return sec


def _sections(data: ReportData) -> list[_Section]:
    return [
        _summary(data),
        _by_year(data),
        _per_ticker(data),
        _holes(data),
        _gaps(data),
        _freshness(data),
        _violations(data),
        _runs(data),
        _storage(data),
        _known(data),
    ]


# --- plots ----------------------------------------------------------------------------------------


def _plots(data: ReportData) -> dict[str, str]:
    """Plot name -> SVG text (matplotlib imported here only)."""
    import matplotlib
    from matplotlib.figure import Figure

    out: dict[str, str] = {}
    with matplotlib.rc_context(
        {
            "svg.hashsalt": "marketlake",  # stable element ids: deterministic output
            "svg.fonttype": "none",  # text as text: small and selectable
            "font.size": 9,
            "font.family": "DejaVu Sans",
        }
    ):
        cov = data.coverage
        cells: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for r in _rows(cov.by_year):
            cell = cells[f"{r['dataset']} / {r['source']}"][r["year"]]
            cell[0] += r["expected"]
            cell[1] += r["present"]
        if cells:
            labels = sorted(cells)
            years = sorted({y for v in cells.values() for y in v})
            grid = [
                [
                    100.0 * cells[lab][y][1] / cells[lab][y][0] if cells[lab][y][0] else None
                    for y in years
                ]
                for lab in labels
            ]
            fig = _heatmap(Figure, grid, labels, years, "Coverage by dataset / source and year (%)")
            out["coverage_heatmap"] = _svg(fig)
        main = _main_dataset(cov)
        if main is not None:
            from marketlake.quality.coverage import worst_tickers

            names = worst_tickers(cov, main, HEATMAP_TICKERS)
            pick = set(names)
            tcells: dict[str, dict[int, list[int]]] = defaultdict(
                lambda: defaultdict(lambda: [0, 0])
            )
            for r in _rows(cov.ticker_year):
                if r["dataset"] == main and r["ticker"] in pick:
                    cell = tcells[r["ticker"]][r["year"]]
                    cell[0] += r["expected"]
                    cell[1] += r["present"]
            years = sorted({y for v in tcells.values() for y in v})
            grid = [
                [
                    100.0 * tcells[t][y][1] / tcells[t][y][0] if tcells[t][y][0] else None
                    for y in years
                ]
                for t in names
            ]
            title = f"{main}: coverage per ticker and year (%), lowest {len(names)}"
            out["coverage_tickers"] = _svg(_heatmap(Figure, grid, names, years, title))
        if data.trend:
            out["violations_over_time"] = _svg(_trend_plot(Figure, data.trend))
    return out


def _main_dataset(cov: Coverage) -> str | None:
    datasets = sorted(set(cov.by_ticker.column("dataset").to_pylist()))
    if not datasets:
        return None
    return "prices" if "prices" in datasets else datasets[0]


def _heatmap(
    figure: Any, grid: list[list[float | None]], labels: list[str], years: list[int], title: str
) -> Any:
    import numpy as np
    from matplotlib import colormaps

    values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    height = max(2.4, 1.0 + 0.3 * len(labels))
    width = max(6.5, min(12.0, 3.5 + 0.8 * len(years)))
    fig = figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=0,
        vmax=100,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(len(years)), [str(y) for y in years])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title)
    if len(labels) * len(years) <= 400:
        for i in range(len(labels)):
            for j in range(len(years)):
                v = values[i, j]
                if not np.isnan(v):
                    ink = "white" if v >= 85 or v <= 15 else "black"  # dark ends of RdYlGn
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color=ink)
    fig.colorbar(image, ax=ax, label="% present", shrink=0.9)
    return fig


def _trend_plot(figure: Any, trend: Sequence[tuple[str, str, str, int]]) -> Any:
    periods = sorted({p for p, _r, _s, _n in trend})[-TREND_PERIODS:]
    keep = set(periods)
    by_rule: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for p, rule, _s, n in trend:
        if p in keep:
            by_rule[rule][p] += n
            totals[rule] += n
    ranked = sorted(totals, key=lambda r: (-totals[r], r))
    shown = sorted(ranked[:8])
    if len(ranked) > 8:
        other: dict[str, int] = defaultdict(int)
        for rule in ranked[8:]:
            for p, n in by_rule[rule].items():
                other[p] += n
        by_rule["(other rules)"] = other
        shown.append("(other rules)")
    fig = figure(figsize=(8.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = list(range(len(periods)))
    bottom = [0] * len(periods)
    for rule in shown:
        heights = [by_rule[rule].get(p, 0) for p in periods]
        ax.bar(x, heights, bottom=bottom, label=rule, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(x, periods, rotation=45 if len(periods) > 4 else 0, ha="right")
    ax.set_ylabel("violations")
    ax.set_title("Violations by rule over time (per day with a check)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(
        buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
    )
    return buf.getvalue()


_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)


def _inline_svg(svg: str, prefix: str, label: str) -> str:
    """An SVG document as an element for HTML: no prologue, no namespace URIs, ids prefixed
    (several plots on one page must not share ids)."""
    body = _PROLOGUE.sub("", svg, count=1)
    body = body.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    body = body.replace(' xmlns="http://www.w3.org/2000/svg"', "")
    body = body.replace(' id="', f' id="{prefix}-').replace('href="#', f'href="#{prefix}-')
    body = body.replace("url(#", f"url(#{prefix}-")
    return body.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


# --- renderers ------------------------------------------------------------------------------------

_PLOT_TITLES = {
    "coverage_heatmap": "Coverage heatmap: dataset / source x year",
    "coverage_tickers": "Coverage heatmap: ticker x year",
    "violations_over_time": "Violations by rule over time",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;
color:#1f2328;background:#fff;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.7em;margin:0 0 4px}h2{font-size:1.3em;margin:32px 0 8px;
border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#59636e;margin:0 0 16px}
nav ol{columns:2;margin:8px 0 0;padding-left:20px}
table{border-collapse:collapse;margin:8px 0;font-size:0.86em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fbfcfd}
figure{margin:12px 0}figure svg{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:0.85em}
.note{color:#59636e;font-size:0.85em;margin:2px 0 12px}
code{background:#f6f8fa;padding:0 3px;border-radius:3px}
"""


def _inline_md(text: str) -> str:
    """Escape HTML, then turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(data: ReportData, plots: dict[str, str]) -> str:
    """The self-contained HTML page (inline CSS and SVG; no scripts, no external URLs)."""
    sections = _sections(data)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>marketlake coverage report</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<h1>marketlake coverage report</h1>",
        f'<p class="meta">Lake <code>{html.escape(data.lake_url)}</code> &middot; generated '
        f"{html.escape(_text(data.generated_at))} &middot; "
        + " &middot; ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in data.options.items())
        + "</p>",
        "<nav><strong>Contents</strong><ol>",
    ]
    out += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections]
    out.append("</ol></nav>")
    for sec in sections:
        out.append(f'<section id="{sec.anchor}">')
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        out += [f"<p>{_inline_md(p)}</p>" for p in sec.paragraphs]
        if sec.items:
            out.append("<ul>")
            out += [f"<li>{_inline_md(i)}</li>" for i in sec.items]
            out.append("</ul>")
        for block in sec.blocks:
            if isinstance(block, str):
                if block in plots:
                    title = _PLOT_TITLES.get(block, block)
                    out.append(f'<figure id="fig-{block}">')
                    out.append(_inline_svg(plots[block], block, title))
                    out.append(f"<figcaption>{html.escape(title)}</figcaption></figure>")
                continue
            if not block.rows:
                out.append('<p class="note">No rows.</p>')
                continue
            out.append("<table><thead><tr>")
            out += [f"<th>{html.escape(h)}</th>" for h in block.header]
            out.append("</tr></thead><tbody>")
            for row in block.rows:
                cells = [
                    f'<td class="n">{_inline_md(c)}</td>'
                    if i in block.numeric
                    else f"<td>{_inline_md(c)}</td>"
                    for i, c in enumerate(row)
                ]
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
            if block.note:
                out.append(f'<p class="note">{_inline_md(block.note)}</p>')
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(data: ReportData, plots: dict[str, str]) -> str:
    """The Markdown page; plots are referenced as ``NAME.svg`` files beside it."""
    out: list[str] = [
        "# marketlake coverage report",
        "",
        f"Lake `{data.lake_url}` · generated {_text(data.generated_at)} · "
        + " · ".join(f"{k}: {v}" for k, v in data.options.items()),
        "",
    ]
    for sec in _sections(data):
        out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        if sec.items:
            out += [f"- {i}" for i in sec.items]
            out.append("")
        for block in sec.blocks:
            if isinstance(block, str):
                if block in plots:
                    out += [f"![{_PLOT_TITLES.get(block, block)}]({block}.svg)", ""]
                continue
            if not block.rows:
                out += ["No rows.", ""]
                continue
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append(
                "|"
                + "|".join(
                    "---:" if i in block.numeric else "---" for i in range(len(block.header))
                )
                + "|"
            )
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
            if block.note:
                out += [block.note, ""]
    return "\n".join(out)


def _write_csv(table: pa.Table, path: Path) -> None:
    import pyarrow.csv as pacsv

    columns = []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
        columns.append(col)
    pacsv.write_csv(pa.Table.from_arrays(columns, names=table.column_names), path)


def write_coverage_report(
    lake: Lake,
    output: str | Path,
    *,
    now: dt.datetime | None = None,
    datasets: Sequence[str] | None = None,
    tickers: Sequence[str] | None = None,
    exact: bool = False,
) -> ReportFiles:
    """Write the coverage report into directory ``output`` (created if needed).

    Parameters
    ----------
    lake:
        The lake.
    output:
        Directory; ``coverage.html``, ``coverage.md``, the plots (``*.svg``, for the Markdown
        page; the HTML page embeds them) and CSV files with every row are written there.
    now:
        Aware instant of the report (default: the current time).
    datasets, tickers:
        Only these (default: everything).
    exact:
        Read every session date instead of trusting complete month counts.

    Returns
    -------
    ReportFiles
        The paths written.

    Raises
    ------
    MarketlakeError
        ``output`` exists and is not a directory, or cannot be written.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise MarketlakeError(f"report output {out} exists and is not a directory; pick another")
    data = collect_report(lake, now=now, datasets=datasets, tickers=tickers, exact=exact)
    plots = _plots(data)
    files: dict[str, str | pa.Table] = {
        "coverage.html": render_html(data, plots),
        "coverage.md": render_markdown(data, plots),
    }
    files.update({f"{name}.svg": svg for name, svg in plots.items()})
    cov = data.coverage
    files.update(
        {
            "coverage_by_year.csv": cov.by_year,
            "coverage_by_ticker.csv": cov.by_ticker,
            "gaps.csv": cov.gaps,
            "freshness.csv": cov.freshness,
            "storage.csv": cov.storage,
        }
    )
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in _PLOT_TITLES:  # a plot of an earlier report that has no data now
            if name not in plots:
                (out / f"{name}.svg").unlink(missing_ok=True)
        for name, content in sorted(files.items()):
            path = out / name
            tmp = out / f".{name}.tmp"
            if isinstance(content, str):
                tmp.write_text(content, encoding="utf-8")
            else:
                _write_csv(content, tmp)
            tmp.replace(path)  # never a half-written page
            written.append(path)
    except OSError as exc:
        raise MarketlakeError(
            f"cannot write the report into {out}: {exc.strerror or exc}"
        ) from None
    return ReportFiles(
        html=out / "coverage.html", markdown=out / "coverage.md", files=tuple(written)
    )
