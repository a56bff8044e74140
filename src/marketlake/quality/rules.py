"""Data-quality rules: small pure functions that return a tidy table of violations.

Every rule takes a :class:`RuleContext` (the rows of one dataset for one or many tickers, as a
*long* Arrow table with a leading ``ticker`` column, plus what the rule needs besides: the
tickers' corporate actions, their daily bars, the trading calendar, the time of the check) and
returns a ``pyarrow.Table`` with :data:`VIOLATION_SCHEMA`::

    ticker: string, dataset: string, date: date32 (nullable), ts: timestamp[us, UTC] (nullable),
    rule: string, severity: string ("error" | "warning" | "info"), detail: string

one row per violation, empty when the data is clean. Rules do no I/O and never change data:
nothing is repaired, silently or otherwise. :mod:`marketlake.quality.validate` reads the lake,
runs the rules and stores what they find; :func:`check` runs them on tables you already hold.

The rules, their thresholds and exactly what each flags are listed in ``docs/quality.md`` (a
test checks that every rule of :data:`RULES` is there); :func:`list_rules` gives each rule's
name, datasets, severity, threshold and description at run time. Rules are vectorised over all
tickers at once (Polars and NumPy; the only Python loop is over tickers that have corporate
actions, to compute their adjustment factors).

Conventions
-----------
* ``date`` of a violation: the session date of the offending daily row or bar (for minute and
  crypto bars of row-level rules, the UTC date of ``ts``); for ``fundamentals`` the ``filed``
  date of the offending row (the knowledge date, so a check of "rows since D" sees new filings),
  with the period named in ``detail``; for freshness the last date collected.
* ``since`` in the context limits the *reported* violations to ``date >= since``; rows before it
  may be passed as look-back (a jump needs the previous close).
* Each rule has a default :attr:`Rule.severity`; a few emit two severities (documented on the
  rule): ``prices.adj_close_consistency`` (error for a split-sized step, warning below) and
  ``freshness.stale`` (warning after 24 h, error after 48 h).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from marketlake import calendars
from marketlake.catalog import VIOLATION_SEVERITIES, MonitoredAsset, ProgressRow
from marketlake.errors import DataValidationError, MarketlakeError
from marketlake.schemas.datasets import FUNDAMENTALS

__all__ = [
    "RULES",
    "SEVERITIES",
    "VIOLATION_SCHEMA",
    "Rule",
    "RuleContext",
    "check",
    "empty_violations",
    "freshness_violations",
    "get_rule",
    "list_rules",
    "rules_for",
    "run_rules",
    "session_hours",
    "sort_violations",
]

VIOLATION_SCHEMA: Final = pa.schema(
    [
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("date", pa.date32()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)
"""The tidy violations table every rule returns."""

SEVERITIES: Final = VIOLATION_SEVERITIES
"""``("error", "warning", "info")``, most severe first."""

PRICE_COLUMNS: Final = ("open", "high", "low", "close")
EPOCH: Final = dt.date(1970, 1, 1)
US_PER_DAY: Final = 86_400_000_000
US_PER_MINUTE: Final = 60_000_000

I64 = npt.NDArray[np.int64]


def empty_violations() -> pa.Table:
    """An empty violations table (:data:`VIOLATION_SCHEMA`)."""
    return VIOLATION_SCHEMA.empty_table()


# --- context and registry ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RuleContext:
    """What a rule looks at. Everything is data: rules do no I/O.

    Parameters
    ----------
    dataset:
        The dataset of ``data``.
    data:
        The rows to check: a long table with a ``ticker`` column and the dataset's columns
        (any row order; rules sort what they need).
    actions:
        ``corporate_actions`` rows of the same tickers (long, with ``ticker``), when known. Rules
        that use them treat None or a ticker without rows as "no corporate actions stored".
    daily:
        ``prices`` rows of the same tickers (long, with ``ticker``) for the minute-vs-daily rule.
    since:
        Report only violations dated on or after this day (``data`` may hold earlier look-back
        rows). For the gap rules it is also where expected sessions start.
    first_dates:
        Each ticker's first stored date, when known (from the catalog): expected sessions start
        there (or at ``since``), so a ticker listed after the data's start has no gap before its
        listing. Without it, the first row passed counts as the first.
    calendar:
        Exchange calendar for session rules (default NYSE, ``"XNYS"``).
    now:
        Time of the check (UTC, aware). Minute-bar sessions that have not closed by then are
        not counted; freshness is measured against it. None: the current time.
    monitored, progress:
        Catalog rows for the freshness rule: monitored assets and collection watermarks.
    """

    dataset: str
    data: pa.Table = field(default_factory=lambda: pa.table({}))
    actions: pa.Table | None = None
    daily: pa.Table | None = None
    since: dt.date | None = None
    first_dates: Mapping[str, dt.date] | None = None
    calendar: str = calendars.DEFAULT_CALENDAR
    now: dt.datetime | None = None
    monitored: Sequence[MonitoredAsset] = ()
    progress: Sequence[ProgressRow] = ()

    @cached_property
    def frame(self) -> pl.DataFrame:
        """``data`` as a Polars frame sorted by ticker and the dataset's key (computed once)."""
        return _sorted_frame(self.data, self.dataset)

    @cached_property
    def now_utc(self) -> dt.datetime:
        """``now`` (aware, UTC), or the current time."""
        now = self.now or dt.datetime.now(dt.UTC)
        if now.tzinfo is None:
            raise MarketlakeError(f"now={now.isoformat()} has no time zone; pass an aware time")
        return now.astimezone(dt.UTC)

    @cached_property
    def price_factors(self) -> tuple[npt.NDArray[np.float64], pa.Table, frozenset[str]]:
        """Per-row total-return adjustment factors of ``frame`` from ``actions`` (computed
        once; see _price_factors)."""
        return _price_factors(self)

    @cached_property
    def minute_sessions(self) -> pl.DataFrame:
        """Per (ticker, regular session) aggregates of ``bars_minute`` (see _minute_sessions)."""
        return _minute_sessions(self)


RuleFunction = Callable[..., pa.Table]


@dataclass(frozen=True)
class Rule:
    """One registered rule.

    Attributes
    ----------
    name:
        ``<dataset>.<check>``, e.g. ``prices.gaps``.
    datasets:
        Datasets it applies to.
    severity:
        Severity of its violations (the higher one for rules that emit two; see ``description``).
    description:
        Exactly what it flags.
    function:
        ``function(ctx, **params) -> pa.Table`` with :data:`VIOLATION_SCHEMA`.
    threshold:
        The threshold in words, for the documentation (empty when none).
    params:
        Tunable parameters and their defaults (override per call with ``params=``).
    needs:
        Extra inputs: ``"actions"`` (corporate actions), ``"daily"`` (daily prices),
        ``"catalog"`` (monitored assets and watermarks instead of rows).
    """

    name: str
    datasets: tuple[str, ...]
    severity: str
    description: str
    function: RuleFunction
    threshold: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()

    def run(self, ctx: RuleContext, **params: Any) -> pa.Table:
        """Run the rule on ``ctx`` with its default parameters updated by ``params``."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise MarketlakeError(
                f"rule {self.name} has no parameter(s) {unknown}; it takes {sorted(self.params)}"
            )
        if "catalog" not in self.needs and (
            ctx.data.num_rows == 0 or ctx.dataset not in self.datasets
        ):
            return empty_violations()
        return self.function(ctx, **{**self.params, **params})


RULES: dict[str, Rule] = {}
"""Every registered rule by name."""


def _register(rule: Rule) -> Rule:
    if rule.severity not in SEVERITIES:
        raise ValueError(f"rule {rule.name}: severity {rule.severity!r} is unknown")
    RULES[rule.name] = rule
    return rule


def get_rule(name: str) -> Rule:
    """Return the rule called ``name``; raise :class:`MarketlakeError` naming the known ones."""
    try:
        return RULES[name]
    except KeyError:
        raise MarketlakeError(
            f"unknown rule {name!r}; known rules: {', '.join(sorted(RULES))}", rule=name
        ) from None


def list_rules(dataset: str | None = None) -> list[Rule]:
    """Every registered rule (or those applying to ``dataset``), sorted by name."""
    return [r for n, r in sorted(RULES.items()) if dataset is None or dataset in r.datasets]


def rules_for(dataset: str) -> list[Rule]:
    """The rules that check rows of ``dataset`` (catalog-level rules excluded), by name."""
    return [r for r in list_rules(dataset) if "catalog" not in r.needs]


# --- helpers -------------------------------------------------------------------------------------


_SORT_KEYS: Final = {
    "prices": ("ticker", "date"),
    "bars_minute": ("ticker", "ts"),
    "crypto_bars": ("ticker", "exchange", "ts"),
    "fundamentals": ("ticker", "period_end", "filed"),
}


def _sorted_frame(table: pa.Table, dataset: str) -> pl.DataFrame:
    if table.num_rows and "ticker" not in table.column_names:
        raise MarketlakeError(f"rules need a ticker column in the {dataset} rows they check")
    frame = _polars(table)
    keys = [k for k in _SORT_KEYS.get(dataset, ("ticker",)) if k in frame.columns]
    return frame.sort(keys) if frame.height and keys else frame


def _polars(table: pa.Table) -> pl.DataFrame:
    """An Arrow table as a Polars frame (one chunk first: converting thousands of small chunks,
    one per object read, costs far more than copying them into one)."""
    frame = pl.from_arrow(table.combine_chunks() if table.num_rows else table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _to_violations(frame: pl.DataFrame) -> pa.Table:
    """A Polars frame with the violation columns -> an Arrow table with VIOLATION_SCHEMA."""
    if frame.height == 0:
        return empty_violations()
    table = frame.select(VIOLATION_SCHEMA.names).to_arrow()
    columns = [table.column(f.name).cast(f.type).combine_chunks() for f in VIOLATION_SCHEMA]
    return pa.Table.from_arrays(columns, schema=VIOLATION_SCHEMA)


def _emit(
    ctx: RuleContext,
    frame: pl.DataFrame,
    rule: str,
    severity: str | pl.Expr,
    detail: pl.Expr,
    *,
    date: pl.Expr | None = None,
    ts: pl.Expr | None = None,
) -> pa.Table:
    """Build violations of ``ctx.dataset`` from the rows of ``frame`` (one violation per row).

    ``date`` defaults to the UTC date of ``ts``; without either both are null."""
    if frame.height == 0:
        return empty_violations()
    if date is None and ts is not None:
        date = ts.dt.date()
    out = frame.select(
        pl.col("ticker").cast(pl.String),
        pl.lit(ctx.dataset).alias("dataset"),
        (date if date is not None else pl.lit(None, pl.Date)).cast(pl.Date).alias("date"),
        (ts if ts is not None else pl.lit(None, pl.Datetime("us", "UTC")))
        .cast(pl.Datetime("us", "UTC"))
        .alias("ts"),
        pl.lit(rule).alias("rule"),
        (severity if isinstance(severity, pl.Expr) else pl.lit(severity)).alias("severity"),
        detail.fill_null("").alias("detail"),
    )
    return _to_violations(out)


def _row_time(ctx: RuleContext) -> tuple[pl.Expr | None, pl.Expr | None]:
    """(date, ts) of a violation on one row of ``ctx.frame`` (see Conventions): the session
    date of a daily bar, the time of a minute or crypto bar (dated on its UTC date), the
    ``filed`` date of a fundamentals row."""
    if ctx.dataset == "fundamentals":
        return pl.col("filed"), None
    if "date" in ctx.frame.columns:
        return pl.col("date"), None
    return None, pl.col("ts")


def _row_rule(
    ctx: RuleContext,
    hit: pl.Expr | pl.Series,
    check: str,
    severity: str,
    template: str,
    *args: pl.Expr,
) -> pa.Table:
    """Violations of rule ``<dataset>.<check>``, one per row of ``ctx.frame`` where ``hit``
    holds, dated as the row (:func:`_row_time`), with detail ``pl.format(template, *args)``."""
    date, ts = _row_time(ctx)
    return _emit(
        ctx,
        ctx.frame.filter(hit),
        f"{ctx.dataset}.{check}",
        severity,
        pl.format(template, *args),
        date=date,
        ts=ts,
    )


def _num(expr: pl.Expr, digits: int = 4) -> pl.Expr:
    """A number for a detail text, rounded."""
    return expr.round(digits)


def _nums(*columns: str) -> list[pl.Expr]:
    """The columns as rounded numbers for a detail text."""
    return [_num(pl.col(c)) for c in columns]


def _pct(expr: pl.Expr) -> pl.Expr:
    """A fraction as a signed percentage text with two decimals, e.g. ``+12.34%``."""
    value = (expr * 100).round(2)
    return pl.concat_str(
        [
            pl.when(value >= 0).then(pl.lit("+")).otherwise(pl.lit("")),
            value.cast(pl.String),
            pl.lit("%"),
        ]
    )


def _days(values: Any) -> I64:
    """date32 values (Arrow, Polars or NumPy) -> int64 days since 1970-01-01."""
    if isinstance(values, pl.Series):
        return np.asarray(values.to_physical().to_numpy(), dtype=np.int64)
    return np.asarray(np.asarray(values, dtype="datetime64[D]").astype(np.int64), dtype=np.int64)


def _day(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def _sessions(lo: int, hi: int, calendar: str) -> I64:
    """Sessions of ``calendar`` in ``[lo, hi]`` (days since the epoch) as int64 days."""
    if hi < lo:
        return np.empty(0, np.int64)
    days = calendars.sessions_array(_day(lo), _day(hi), calendar)
    return np.asarray(days.astype(np.int64), dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _session_hours_cached(calendar: str, last: dt.date) -> tuple[I64, I64, I64]:
    # the calendar module builds and caches one exchange_calendars object per calendar; its
    # opens/closes line up with its sessions
    cov = calendars._coverage(calendar, last)
    cal = cov.calendar
    opens = np.asarray(cal.opens.values.astype("datetime64[us]").astype(np.int64), np.int64)
    closes = np.asarray(cal.closes.values.astype("datetime64[us]").astype(np.int64), np.int64)
    days = np.asarray(cov.days.astype(np.int64), np.int64)
    return days, opens, closes


def session_hours(calendar: str, last: dt.date) -> tuple[I64, I64, I64]:
    """All sessions of ``calendar`` known up to at least ``last``: (days since the epoch, open,
    close as UTC microseconds). Early closes (half days) have their real close."""
    cov = calendars._coverage(calendar, last)
    return _session_hours_cached(calendar, cov.last)


def _actions_frame(ctx: RuleContext) -> pl.DataFrame:
    if ctx.actions is None or ctx.actions.num_rows == 0:
        return pl.DataFrame(
            schema={
                "ticker": pl.String,
                "ex_date": pl.Date,
                "action": pl.String,
                "value": pl.Float64,
            }
        )
    return _polars(ctx.actions).select("ticker", "ex_date", "action", "value")


# --- OHLC sanity (prices, bars_minute, crypto_bars) ----------------------------------------------


def _ohlc_missing(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame
    cols = [c for c in (*PRICE_COLUMNS, "volume") if c in frame.columns]
    bad = [
        pl.col(c).is_null() | (pl.col(c).is_nan() if frame.schema[c].is_float() else pl.lit(False))
        for c in cols
    ]
    names = pl.concat_str(
        [pl.when(b).then(pl.lit(c)) for b, c in zip(bad, cols, strict=True)],
        separator=", ",
        ignore_nulls=True,
    )
    return _row_rule(
        ctx, pl.any_horizontal(bad), "ohlc_missing", "error", "missing {} (null or NaN)", names
    )


def _high_bound(ctx: RuleContext, *, rel_tol: float) -> pa.Table:
    top = pl.max_horizontal("open", "close")
    template = "high {} is below max(open {}, close {}) (low {})"
    hit = pl.col("high") < top * (1 - rel_tol)
    return _row_rule(
        ctx, hit, "high_bound", "error", template, *_nums("high", "open", "close", "low")
    )


def _low_bound(ctx: RuleContext, *, rel_tol: float) -> pa.Table:
    bottom = pl.min_horizontal("open", "close")
    template = "low {} is above min(open {}, close {}) (high {})"
    hit = pl.col("low") > bottom * (1 + rel_tol)
    return _row_rule(
        ctx, hit, "low_bound", "error", template, *_nums("low", "open", "close", "high")
    )


def _low_nonnegative(ctx: RuleContext) -> pa.Table:
    low = pl.col("low")
    return _row_rule(ctx, low < 0, "low_nonnegative", "error", "low {} is negative", _num(low))


def _volume_nonnegative(ctx: RuleContext) -> pa.Table:
    volume = pl.col("volume")
    return _row_rule(
        ctx, volume < 0, "volume_nonnegative", "error", "volume {} is negative", volume
    )


_BAR_DATASETS = ("prices", "bars_minute", "crypto_bars")
_ROW_WORDS = {"prices": "daily bar", "bars_minute": "minute bar", "crypto_bars": "crypto bar"}
_BAR_RULES: Final[tuple[tuple[str, RuleFunction, str], ...]] = (
    ("ohlc_missing", _ohlc_missing, "with open, high, low or close (or volume) null or NaN."),
    (
        "high_bound",
        _high_bound,
        "whose high is below its open or its close (high < max(open, close)); "
        "a bar with high < low always fails this rule or low_bound.",
    ),
    (
        "low_bound",
        _low_bound,
        "whose low is above its open or its close (low > min(open, close)).",
    ),
    ("low_nonnegative", _low_nonnegative, "with a negative low."),
    ("volume_nonnegative", _volume_nonnegative, "with a negative volume."),
)
"""The OHLC sanity rules of every bar dataset: (check, function, description after "A <bar>")."""

for _ds in _BAR_DATASETS:
    for _check, _function, _text in _BAR_RULES:
        _bounded = _check in ("high_bound", "low_bound")  # float rounding tolerated
        _register(
            Rule(
                f"{_ds}.{_check}",
                (_ds,),
                "error",
                f"A {_ROW_WORDS[_ds]} {_text}",
                _function,
                threshold="relative tolerance 1e-6 (float rounding)" if _bounded else "",
                params={"rel_tol": 1e-6} if _bounded else {},
            )
        )


# --- daily bars: calendar and gaps ---------------------------------------------------------------


def _calendar(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame
    days = _days(frame.get_column("date"))
    sessions = _sessions(int(days.min()), int(days.max()), ctx.calendar)
    off = ~np.isin(days, sessions)
    if not off.any():
        return empty_violations()
    return _row_rule(
        ctx,
        pl.Series(off),
        "calendar",
        "error",
        "a row dated {} ({}), which is not a {} session (weekend or holiday)",
        pl.col("date"),
        pl.col("date").dt.strftime("%a"),
        pl.lit(ctx.calendar),
    )


def _group_ids(frame: pl.DataFrame) -> I64:
    """Run ids of the (sorted) ticker column: 0, 0, 1, 1, 1, 2 ..."""
    return np.asarray(frame.get_column("ticker").rle_id().to_numpy(), dtype=np.int64)


def _first_rows(ids: I64) -> npt.NDArray[np.bool_]:
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return first


def _window_starts(ctx: RuleContext, tickers: list[str], first_row: I64) -> I64:
    """Per ticker: the first day sessions are expected (first stored date, or since)."""
    starts = first_row.copy()
    if ctx.first_dates:
        known = np.array(
            [
                (ctx.first_dates[t] - EPOCH).days if t in ctx.first_dates else first_row[i]
                for i, t in enumerate(tickers)
            ],
            dtype=np.int64,
        )
        starts = np.minimum(starts, known)
    if ctx.since is not None:
        starts = np.maximum(starts, (ctx.since - EPOCH).days)
    return starts


def _gaps(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame
    days = _days(frame.get_column("date"))
    ids = _group_ids(frame)
    first = _first_rows(ids)
    tickers = frame.get_column("ticker").filter(pl.Series(first)).to_list()
    starts = _window_starts(ctx, tickers, days[first])
    sessions = _sessions(int(min(starts.min(), days.min())), int(days.max()), ctx.calendar)
    if sessions.size == 0:
        return empty_violations()
    pos = np.searchsorted(sessions, days)
    on = (pos < sessions.size) & (sessions[np.minimum(pos, sessions.size - 1)] == days)
    start_pos = np.searchsorted(sessions, starts)  # first expected session per ticker
    keep = on & (pos >= start_pos[ids])
    p, g = pos[keep], ids[keep]
    if p.size == 0:
        return empty_violations()
    prev = np.empty_like(p)
    prev[1:] = p[:-1]
    lead = _first_rows(g)
    prev[lead] = start_pos[g[lead]] - 1
    missing = p - prev - 1
    hit = np.flatnonzero(missing > 0)
    if hit.size == 0:
        return empty_violations()
    a = prev[hit] + 1
    b = p[hit] - 1
    n = missing[hit]
    out = pl.DataFrame(
        {
            "ticker": [tickers[int(i)] for i in g[hit]],
            "first": (sessions[a]).astype("datetime64[D]"),
            "last": (sessions[b]).astype("datetime64[D]"),
            "n": n,
        }
    )
    detail = (
        pl.when(pl.col("n") == 1)
        .then(pl.format("session {} missing", pl.col("first")))
        .otherwise(
            pl.format("{} sessions missing: {} .. {}", pl.col("n"), pl.col("first"), pl.col("last"))
        )
    )
    return _emit(ctx, out, "prices.gaps", "error", detail, date=pl.col("first"))


_register(
    Rule(
        "prices.calendar",
        ("prices",),
        "error",
        "A daily bar dated on a day that is not a session of the exchange calendar (NYSE by "
        "default, from exchange-calendars): a weekend or an exchange holiday. Half days are "
        "sessions.",
        _calendar,
    )
)
_register(
    Rule(
        "prices.gaps",
        ("prices",),
        "error",
        "Sessions with no daily bar between a ticker's first stored date (its listing in the "
        "lake, or --since when later) and its last row; one violation per run of consecutive "
        "missing sessions, dated on the first missing one. Sessions after the last row are the "
        "freshness rule's concern.",
        _gaps,
    )
)


# --- daily bars: adjustment cross-check and jumps ------------------------------------------------


def _price_factors(
    ctx: RuleContext,
) -> tuple[npt.NDArray[np.float64], pa.Table, frozenset[str]]:
    """Per-row total-return adjustment factors from the lake's corporate actions (1 for
    tickers without actions), violations for actions the adjustment refuses, and the tickers
    that have actions."""
    from marketlake.derive.adjust import adjustment_factors

    frame = ctx.frame
    ids = _group_ids(frame)
    factor = np.ones(frame.height, dtype=np.float64)
    actions = _actions_frame(ctx)
    with_actions = frozenset(actions.get_column("ticker").unique().to_list())
    if not with_actions:
        return factor, empty_violations(), with_actions
    first = np.flatnonzero(_first_rows(ids))
    bounds = np.append(first, frame.height)
    tickers = frame.get_column("ticker").gather(first).to_list()
    by_ticker = actions.partition_by("ticker", as_dict=True)
    problems: list[pa.Table] = []
    for i, ticker in enumerate(tickers):
        acts = by_ticker.get((ticker,))
        if acts is None:
            continue
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        rows = frame.slice(lo, hi - lo).select("date", "close").to_arrow()
        try:
            f = adjustment_factors(
                rows, acts.drop("ticker").to_arrow(), "total", ticker=ticker
            ).price
        except DataValidationError as exc:
            problems.append(
                _emit(
                    ctx,
                    pl.DataFrame({"ticker": [ticker]}),
                    "prices.adj_close_consistency",
                    "error",
                    pl.lit(f"corporate actions cannot be applied: {exc}"),
                )
            )
            continue
        factor[lo:hi] = f
    return factor, pa.concat_tables([empty_violations(), *problems]), with_actions


def _isolated(
    flag: npt.NDArray[np.bool_], same_next: npt.NDArray[np.bool_], back: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(spike rows, rows to suppress): a flagged row whose successor (same ticker) is flagged
    too and undoes it (``back``) is one bad row, reported once."""
    nxt = np.zeros_like(flag)
    nxt[:-1] = flag[1:] & same_next[:-1]
    spike = flag & nxt & back
    suppress = np.zeros_like(flag)
    suppress[1:] = spike[:-1]
    return spike & ~suppress, suppress


def _adj_close_consistency(ctx: RuleContext, *, tolerance: float, split_size: float) -> pa.Table:
    frame = ctx.frame
    if "adj_close" not in frame.columns:
        return empty_violations()
    ids = _group_ids(frame)
    factor, problems, with_actions = ctx.price_factors
    close = frame.get_column("close").to_numpy().astype(np.float64)
    adj = frame.get_column("adj_close").fill_null(np.nan).to_numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.log(adj / close) - np.log(factor)  # constant while vendor and lake agree
    valid = np.isfinite(q) & (adj > 0) & (close > 0)
    # previous valid row of the same ticker
    idx = np.where(valid, np.arange(q.size), -1)
    last_valid = np.maximum.accumulate(idx)
    prev = np.empty_like(last_valid)
    prev[0] = -1
    prev[1:] = last_valid[:-1]
    has_prev = valid & (prev >= 0)
    has_prev[has_prev] &= ids[prev[has_prev]] == ids[has_prev]
    step = np.zeros(q.size)
    step[has_prev] = q[has_prev] - q[prev[has_prev]]
    flag = has_prev & (np.abs(step) > tolerance)
    if not flag.any():
        return problems
    same_next = np.zeros(q.size, dtype=bool)
    same_next[:-1] = ids[1:] == ids[:-1]
    nstep = np.zeros(q.size)
    nstep[:-1] = step[1:]
    spike, suppress = _isolated(flag, same_next, np.abs(step + nstep) <= tolerance)
    report = flag & ~suppress
    rows = np.flatnonzero(report)
    p = prev[rows]
    vendor = (adj[p] / close[p]) / (adj[rows] / close[rows])  # factor across the row, vendor
    lake = factor[p] / factor[rows]  # the same from the lake's actions
    dates = frame.get_column("date").gather(rows)
    prev_dates = frame.get_column("date").gather(p)
    tick = frame.get_column("ticker").gather(rows)
    out = pl.DataFrame(
        {
            "ticker": tick,
            "date": dates,
            "prev_date": prev_dates,
            "vendor": vendor,
            "lake": lake,
            "spike": spike[rows],
            "none": ~tick.is_in(list(with_actions)).to_numpy(),
            "big": np.abs(np.expm1(step[rows])) >= split_size,
        }
    )
    stored = (
        pl.when(pl.col("none")).then(pl.lit(" (no corporate actions stored)")).otherwise(pl.lit(""))
    )
    detail = (
        pl.when(pl.col("spike"))
        .then(
            pl.format(
                "adj_close/close on this row alone is off by {} from its neighbours (the next "
                "session agrees with the previous one again)",
                _pct(1 / pl.col("vendor") - 1),
            )
        )
        .otherwise(
            pl.format(
                "vendor adj_close implies an adjustment factor of {} from {} to {}; the lake's "
                "corporate actions give {}{}",
                _num(pl.col("vendor"), 6),
                pl.col("prev_date"),
                pl.col("date"),
                _num(pl.col("lake"), 6),
                stored,
            )
        )
    )
    severity = pl.when(pl.col("big")).then(pl.lit("error")).otherwise(pl.lit("warning"))
    found = _emit(ctx, out, "prices.adj_close_consistency", severity, detail, date=pl.col("date"))
    return pa.concat_tables([problems, found])


def _suspicious_jump(ctx: RuleContext, *, threshold: float) -> pa.Table:
    frame = ctx.frame
    ids = _group_ids(frame)
    factor, _, _ = ctx.price_factors
    close = frame.get_column("close").fill_null(np.nan).to_numpy().astype(np.float64)
    adjusted = close * factor
    same_prev = np.zeros(close.size, dtype=bool)
    same_prev[1:] = ids[1:] == ids[:-1]
    prev = np.full(close.size, np.nan)
    prev[1:] = adjusted[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        move = adjusted / prev - 1
    flag = same_prev & np.isfinite(move) & (np.abs(move) > threshold)
    if not flag.any():
        return empty_violations()
    nxt = np.full(close.size, np.nan)
    nxt[:-1] = adjusted[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        back = np.abs(nxt / prev - 1) <= threshold  # the next session returns to the old level
    same_next = np.zeros(close.size, dtype=bool)
    same_next[:-1] = same_prev[1:]
    spike, suppress = _isolated(flag, same_next, back)
    rows = np.flatnonzero(flag & ~suppress)
    raw_prev = np.full(close.size, np.nan)
    raw_prev[1:] = close[:-1]
    raw_next = np.full(close.size, np.nan)
    raw_next[:-1] = close[1:]
    dates = frame.get_column("date")
    out = pl.DataFrame(
        {
            "ticker": frame.get_column("ticker").gather(rows),
            "date": dates.gather(rows),
            "prev_date": dates.gather(np.maximum(rows - 1, 0)),
            "close": close[rows],
            "prev": raw_prev[rows],
            "next": raw_next[rows],
            "move": move[rows],
            "spike": spike[rows],
        }
    )
    detail = (
        pl.when(pl.col("spike"))
        .then(
            pl.format(
                "close {} is {} from the previous session's {} and the next session returns to "
                "{}: an isolated bad bar (unit error?)",
                _num(pl.col("close")),
                _pct(pl.col("move")),
                _num(pl.col("prev")),
                _num(pl.col("next")),
            )
        )
        .otherwise(
            pl.format(
                "close moved {} from {} ({}) to {}, adjusted for the lake's corporate actions: no "
                "split or dividend explains it",
                _pct(pl.col("move")),
                _num(pl.col("prev")),
                pl.col("prev_date"),
                _num(pl.col("close")),
            )
        )
    )
    return _emit(ctx, out, "prices.suspicious_jump", "warning", detail, date=pl.col("date"))


_register(
    Rule(
        "prices.adj_close_consistency",
        ("prices",),
        "error",
        "The vendor's adj_close disagrees with the lake's corporate actions: between two "
        "consecutive rows the ratio adj_close/close changes by a factor the lake's splits and "
        "dividends (the read-time total-return factor of marketlake.derive.adjust) do not "
        "give, e.g. a split or dividend the lake is missing or one the vendor does not know. "
        "Severity error when the unexplained step is split-sized (20% or more), else warning. "
        "A single row whose ratio is off while its neighbours agree is reported once. Rows "
        "without adj_close are skipped.",
        _adj_close_consistency,
        threshold="unexplained step > 0.1% (log ratio 1e-3); error from 20%",
        params={"tolerance": 1e-3, "split_size": 0.2},
        needs=frozenset({"actions"}),
    )
)
_register(
    Rule(
        "prices.suspicious_jump",
        ("prices",),
        "warning",
        "A close more than 50% above or below the previous session's close once both are "
        "adjusted with the lake's corporate actions (so a recorded split or dividend explains "
        "its own move, a missing one does not). A bar that jumps and comes straight back the "
        "next session (an isolated bad bar, e.g. a 100x unit error) is reported once, on its "
        "own date.",
        _suspicious_jump,
        threshold="|close / previous close - 1| > 0.5",
        params={"threshold": 0.5},
        needs=frozenset({"actions"}),
    )
)


# --- minute bars ---------------------------------------------------------------------------------


def _minute_sessions(ctx: RuleContext) -> pl.DataFrame:
    """Regular-session aggregates of minute bars per (ticker, session).

    Columns: ticker, k (session index), day, open_us, close_us (the session's hours), bars,
    first_ts, last_ts, open, high, low, close, interval_us (the ticker's bar interval: the most
    common spacing of consecutive bars within a session, at least one minute).
    """
    frame = ctx.frame
    ts = np.asarray(frame.get_column("ts").dt.epoch("us").to_numpy(), dtype=np.int64)
    last = _day(int(ts.max() // US_PER_DAY) + 1)
    days, opens, closes = session_hours(ctx.calendar, last)
    k = np.searchsorted(opens, ts, side="right") - 1
    regular = (k >= 0) & (ts < closes[np.maximum(k, 0)])
    bars = frame.with_columns(pl.Series("k", k), pl.Series("_us", ts)).filter(pl.Series(regular))
    if bars.height == 0:
        return pl.DataFrame()
    spacing = (
        bars.with_columns(pl.col("_us").diff().over("ticker", "k").alias("_d"))
        .filter(pl.col("_d") > 0)
        .group_by("ticker")
        .agg(pl.col("_d").mode().min().alias("interval_us"))
    )
    per = bars.group_by("ticker", "k").agg(
        pl.len().alias("bars"),
        pl.col("ts").first().alias("first_ts"),
        pl.col("ts").last().alias("last_ts"),
        pl.col("open").first().alias("open"),
        pl.col("high").max().alias("high"),
        pl.col("low").min().alias("low"),
        pl.col("close").last().alias("close"),
    )
    per = per.join(spacing, on="ticker", how="left").with_columns(
        pl.col("interval_us").fill_null(US_PER_MINUTE).clip(lower_bound=US_PER_MINUTE)
    )
    kk = per.get_column("k").to_numpy()
    return per.with_columns(
        pl.Series("day", days[kk].astype("datetime64[D]")),
        pl.Series("open_us", opens[kk]),
        pl.Series("close_us", closes[kk]),
    ).sort("ticker", "k")


def _session_rows(ctx: RuleContext) -> pa.Table:
    per = ctx.minute_sessions
    if per.height == 0:
        return empty_violations()
    last_day = per.get_column("day").max()
    assert isinstance(last_day, dt.date)
    days, opens, closes = session_hours(ctx.calendar, last_day)
    now_us = int(ctx.now_utc.timestamp() * 1_000_000)
    since_k = None
    if ctx.since is not None:
        since_k = int(np.searchsorted(days, (ctx.since - EPOCH).days))
    span = per.group_by("ticker").agg(
        pl.col("k").min().alias("k0"), pl.col("k").max().alias("k1"), pl.col("interval_us").first()
    )
    if since_k is not None:
        span = span.with_columns(pl.max_horizontal(pl.col("k0"), pl.lit(since_k)).alias("k0"))
    grid = span.with_columns(pl.int_ranges(pl.col("k0"), pl.col("k1") + 1).alias("k")).explode("k")
    grid = grid.filter(pl.col("k").is_not_null()).with_columns(pl.col("k").cast(pl.Int64))
    found = grid.join(
        per.select("ticker", pl.col("k").cast(pl.Int64), "bars"), on=["ticker", "k"], how="left"
    )
    kk = found.get_column("k").to_numpy()
    found = found.with_columns(
        pl.col("bars").fill_null(0),
        pl.Series("day", days[kk].astype("datetime64[D]")),
        pl.Series("open_us", opens[kk]),
        pl.Series("close_us", closes[kk]),
    ).with_columns(
        ((pl.col("close_us") - pl.col("open_us")) // pl.col("interval_us")).alias("expected")
    )
    hit = found.filter((pl.col("close_us") <= now_us) & (pl.col("bars") != pl.col("expected")))
    minutes = (pl.col("interval_us") // US_PER_MINUTE).cast(pl.String)
    detail = (
        pl.when(pl.col("bars") == 0)
        .then(
            pl.format(
                "session missing: no regular-session bar (expected {} {}-minute bars)",
                pl.col("expected"),
                minutes,
            )
        )
        .otherwise(
            pl.format(
                "{} regular-session bars, expected {} ({}-minute bars, {} to {} UTC)",
                pl.col("bars"),
                pl.col("expected"),
                minutes,
                pl.from_epoch("open_us", time_unit="us").dt.strftime("%H:%M"),
                pl.from_epoch("close_us", time_unit="us").dt.strftime("%H:%M"),
            )
        )
    )
    return _emit(ctx, hit, "bars_minute.session_rows", "warning", detail, date=pl.col("day"))


def _open_gap(ctx: RuleContext, *, threshold: float) -> pa.Table:
    per = ctx.minute_sessions
    if per.height == 0:
        return empty_violations()
    per = per.with_columns(
        pl.col("close").shift(1).over("ticker").alias("prev_close"),
        pl.col("k").shift(1).over("ticker").alias("prev_k"),
        pl.col("day").shift(1).over("ticker").alias("prev_day"),
    ).filter(pl.col("prev_k") == pl.col("k") - 1)
    splits = _actions_frame(ctx).filter(pl.col("action") == "split")
    per = per.join(
        splits.select("ticker", pl.col("ex_date").alias("day"), pl.col("value").alias("ratio")),
        on=["ticker", "day"],
        how="left",
    ).with_columns((pl.col("prev_close") / pl.col("ratio").fill_null(1.0)).alias("prev_adj"))
    per = per.with_columns((pl.col("open") / pl.col("prev_adj") - 1).alias("gap"))
    hit = per.filter(pl.col("gap").abs() > threshold)
    detail = pl.format(
        "session opens at {}, {} from the previous session's last close {} ({}){}",
        _num(pl.col("open")),
        _pct(pl.col("gap")),
        _num(pl.col("prev_close")),
        pl.col("prev_day"),
        pl.when(pl.col("ratio").is_not_null())
        .then(pl.format(" after the {}:1 split", pl.col("ratio")))
        .otherwise(pl.lit("")),
    )
    return _emit(
        ctx,
        hit,
        "bars_minute.open_gap",
        "warning",
        detail,
        date=pl.col("day"),
        ts=pl.col("first_ts"),
    )


def _daily_mismatch(ctx: RuleContext, *, tolerance: float) -> pa.Table:
    per = ctx.minute_sessions
    if per.height == 0 or ctx.daily is None or ctx.daily.num_rows == 0:
        return empty_violations()
    daily = _polars(ctx.daily).select(
        "ticker",
        pl.col("date").alias("day"),
        *[pl.col(c).alias(f"d_{c}") for c in PRICE_COLUMNS],
    )
    complete = per.filter(
        pl.col("bars") == (pl.col("close_us") - pl.col("open_us")) // pl.col("interval_us")
    ).join(daily, on=["ticker", "day"], how="inner")
    if complete.height == 0:
        return empty_violations()
    dev = {c: pl.col(c) / pl.col(f"d_{c}") - 1 for c in PRICE_COLUMNS}
    bad = {c: dev[c].abs() > tolerance for c in PRICE_COLUMNS}
    hit = complete.filter(pl.any_horizontal(list(bad.values())))
    parts = [
        pl.when(bad[c]).then(
            pl.format(
                "{} {} vs daily {} ({})",
                pl.lit(c),
                _num(pl.col(c)),
                _num(pl.col(f"d_{c}")),
                _pct(dev[c]),
            )
        )
        for c in PRICE_COLUMNS
    ]
    detail = pl.format(
        "minute bars aggregate to {}", pl.concat_str(parts, separator="; ", ignore_nulls=True)
    )
    return _emit(ctx, hit, "bars_minute.daily_mismatch", "warning", detail, date=pl.col("day"))


_register(
    Rule(
        "bars_minute.session_rows",
        ("bars_minute",),
        "warning",
        "A regular session (exchange open to close; bars outside it are extended hours and not "
        "counted) between a ticker's first and last session with bars whose bar count is not "
        "the session length divided by the bar interval: 390 one-minute bars on a full NYSE "
        "session, 210 on a 13:00 half day (the interval is inferred per ticker, so 15-minute "
        "bars expect 26). A session with no bar at all is reported as missing. Sessions that "
        "have not closed at the time of the check are not counted.",
        _session_rows,
        threshold="bars == (close - open) / interval exactly (390 one-minute bars)",
    )
)
_register(
    Rule(
        "bars_minute.open_gap",
        ("bars_minute",),
        "warning",
        "The first regular-session bar's open is more than 5% away from the previous "
        "session's last regular-session close (consecutive sessions only; a split with that "
        "ex date in the lake's corporate actions divides the previous close by its ratio).",
        _open_gap,
        threshold="|open / previous close - 1| > 0.05",
        params={"threshold": 0.05},
        needs=frozenset({"actions"}),
    )
)
_register(
    Rule(
        "bars_minute.daily_mismatch",
        ("bars_minute",),
        "warning",
        "A complete regular session of minute bars (all expected bars present) whose aggregate "
        "open (first bar), high (max), low (min) or close (last bar) differs from the ticker's "
        "daily bar in prices by more than 1%. Volume is not compared: a consolidated daily "
        "volume includes auction and off-hours prints that minute feeds (e.g. IEX) do not.",
        _daily_mismatch,
        threshold="|minute aggregate / daily - 1| > 0.01 for open, high, low, close",
        params={"tolerance": 0.01},
        needs=frozenset({"daily"}),
    )
)


# --- crypto bars ---------------------------------------------------------------------------------


def _crypto_gaps(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame.with_columns(pl.col("ts").dt.epoch("us").alias("_us"))
    frame = frame.with_columns(pl.col("_us").diff().over("ticker", "exchange").alias("_d"))
    # one bar interval per pair (a lake holds one interval per pair): the most common spacing
    # of consecutive bars over all its exchanges, so a venue with few bars is still checked
    interval = (
        frame.filter(pl.col("_d") > 0)
        .group_by("ticker")
        .agg(pl.col("_d").mode().min().alias("interval_us"))
    )
    frame = frame.join(interval, on="ticker", how="inner")
    frame = frame.with_columns(
        ((pl.col("_d") / pl.col("interval_us")).round(0).cast(pl.Int64) - 1).alias("n")
    )
    hit = frame.filter(pl.col("n") > 0).with_columns(
        pl.from_epoch(pl.col("_us") - pl.col("_d") + pl.col("interval_us"), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("first"),
        pl.from_epoch(pl.col("_us") - pl.col("interval_us"), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("last"),
    )
    detail = pl.format(
        "{} {} bar(s) missing on {}: {} .. {} UTC",
        pl.col("n"),
        _interval_label(pl.col("interval_us")),
        pl.col("exchange"),
        pl.col("first").dt.strftime("%Y-%m-%d %H:%M"),
        pl.col("last").dt.strftime("%Y-%m-%d %H:%M"),
    )
    return _emit(ctx, hit, "crypto_bars.gaps", "warning", detail, ts=pl.col("first"))


def _interval_label(us: pl.Expr) -> pl.Expr:
    return (
        pl.when(us % US_PER_DAY == 0)
        .then(pl.format("{}d", us // US_PER_DAY))
        .when(us % 3_600_000_000 == 0)
        .then(pl.format("{}h", us // 3_600_000_000))
        .when(us % US_PER_MINUTE == 0)
        .then(pl.format("{}m", us // US_PER_MINUTE))
        .otherwise(pl.format("{}s", us // 1_000_000))
    )


def _cross_exchange(ctx: RuleContext, *, threshold: float) -> pa.Table:
    frame = ctx.frame
    grouped = frame.with_columns(
        pl.len().over("ticker", "ts").alias("n"),
        pl.col("close").median().over("ticker", "ts").alias("median"),
        pl.col("close").sum().over("ticker", "ts").alias("_sum"),
        pl.col("exchange").sort().first().over("ticker", "ts").alias("_ex0"),
        pl.col("exchange").sort().last().over("ticker", "ts").alias("_ex1"),
    ).filter(pl.col("n") >= 2)
    grouped = grouped.with_columns(
        pl.when(pl.col("n") == 2)
        .then(pl.col("_sum") - pl.col("close"))
        .otherwise(pl.col("median"))
        .alias("ref"),
        pl.when(pl.col("exchange") == pl.col("_ex0"))
        .then(pl.col("_ex1"))
        .otherwise(pl.col("_ex0"))
        .alias("other"),
    ).with_columns((pl.col("close") / pl.col("ref") - 1).alias("dev"))
    hit = grouped.filter(pl.col("dev").abs() > threshold)
    reference = (
        pl.when(pl.col("n") == 2)
        .then(pl.format("{}'s {}", pl.col("other"), _num(pl.col("ref"))))
        .otherwise(pl.format("the median {} of {} exchanges", _num(pl.col("ref")), pl.col("n")))
    )
    detail = pl.format(
        "{} close {} is {} from {}",
        pl.col("exchange"),
        _num(pl.col("close")),
        _pct(pl.col("dev")),
        reference,
    )
    return _emit(ctx, hit, "crypto_bars.cross_exchange", "warning", detail, ts=pl.col("ts"))


_register(
    Rule(
        "crypto_bars.gaps",
        ("crypto_bars",),
        "warning",
        "Missing bars per pair and exchange on a 24/7 calendar: the bar interval is inferred "
        "per pair as the most common spacing of consecutive bars over all its exchanges (a lake "
        "holds one interval per pair), and a longer spacing on an exchange is a run of missing "
        "bars (one violation per run, dated at its first missing bar). Some venues omit bars "
        "with no trades (Coinbase), so this is a warning.",
        _crypto_gaps,
        threshold="spacing > 1.5 x the inferred interval",
    )
)
_register(
    Rule(
        "crypto_bars.cross_exchange",
        ("crypto_bars",),
        "warning",
        "A pair's close on one exchange more than 2% away from the other exchanges at the same "
        "bar time: from the median close of all exchanges when three or more trade it (so only "
        "the outlier is flagged), from the other exchange when two do (both are flagged).",
        _cross_exchange,
        threshold="|close / reference - 1| > 0.02",
        params={"threshold": 0.02},
    )
)


# --- fundamentals --------------------------------------------------------------------------------

FUNDAMENTAL_VALUES: Final = tuple(
    FUNDAMENTALS.schema.names[FUNDAMENTALS.schema.get_field_index("revenue") :]
)
"""The reported values of a fundamentals row: every column of its schema from ``revenue`` on."""
REQUIRED_FUNDAMENTALS: Final = ("fiscal_year", "fiscal_period", "form")
NON_NEGATIVE_FUNDAMENTALS: Final = (
    "revenue",
    "total_assets",
    "total_liabilities",
    "cash_and_equivalents",
    "shares_diluted",
    "capex",
)


def _period_words() -> pl.Expr:
    return pl.format(
        "period {} {} ({} filed {})",
        pl.col("period_end"),
        pl.col("fiscal_period").fill_null("?"),
        pl.col("form").fill_null("?"),
        pl.col("filed"),
    )


def _required_fields(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame
    required = [c for c in REQUIRED_FUNDAMENTALS if c in frame.columns]
    values = [c for c in FUNDAMENTAL_VALUES if c in frame.columns]
    parts = [pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in required]
    no_value = pl.all_horizontal([pl.col(c).is_null() for c in values]) if values else pl.lit(False)
    parts.append(pl.when(no_value).then(pl.lit("every value column")))
    missing = pl.concat_str(parts, separator=", ", ignore_nulls=True)
    return _row_rule(
        ctx, missing != "", "required_fields", "error", "missing {}: {}", missing, _period_words()
    )


def _balance_sheet(ctx: RuleContext, *, tolerance: float) -> pa.Table:
    frame = ctx.frame
    if "total_equity" not in frame.columns:
        return empty_violations()
    total = pl.col("total_liabilities") + pl.col("total_equity")
    diff = (pl.col("total_assets") - total) / pl.col("total_assets").abs()
    return _row_rule(
        ctx,
        diff.abs() > tolerance,
        "balance_sheet",
        "warning",
        "total_assets {} vs total_liabilities + total_equity {} ({} apart): {}",
        pl.col("total_assets"),
        total,
        _pct(diff),
        _period_words(),
    )


def _filing_lag(ctx: RuleContext, *, max_days: int) -> pa.Table:
    first = ctx.frame.group_by("ticker", "period_end").agg(
        pl.col("filed").min(), pl.col("form").sort_by("filed").first()
    )
    first = first.with_columns(
        (pl.col("filed") - pl.col("period_end")).dt.total_days().alias("lag")
    )
    hit = first.filter(pl.col("lag") > max_days).sort("ticker", "period_end")
    detail = pl.format(
        "period {} first filed {} ({}), {} days after the period end (more than {})",
        pl.col("period_end"),
        pl.col("filed"),
        pl.col("form").fill_null("?"),
        pl.col("lag"),
        pl.lit(max_days),
    )
    return _emit(ctx, hit, "fundamentals.filing_lag", "warning", detail, date=pl.col("filed"))


def _negative_values(ctx: RuleContext) -> pa.Table:
    frame = ctx.frame
    cols = [c for c in NON_NEGATIVE_FUNDAMENTALS if c in frame.columns]
    parts = [pl.when(pl.col(c) < 0).then(pl.format("{} {}", pl.lit(c), pl.col(c))) for c in cols]
    return _row_rule(
        ctx,
        pl.any_horizontal([pl.col(c) < 0 for c in cols]),
        "negative_values",
        "error",
        "negative {}: {}",
        pl.concat_str(parts, separator=", ", ignore_nulls=True),
        _period_words(),
    )


_register(
    Rule(
        "fundamentals.required_fields",
        ("fundamentals",),
        "error",
        "A fundamentals row without fiscal_year, fiscal_period or form, or with every value "
        "column (revenue ... free_cash_flow) null.",
        _required_fields,
    )
)
_register(
    Rule(
        "fundamentals.balance_sheet",
        ("fundamentals",),
        "warning",
        "total_assets differs from total_liabilities + total_equity by more than 1% of "
        "total_assets. Needs a total_equity column: the lake's fundamentals schema has none "
        "yet, so on lake data this rule finds nothing (it runs on tables that carry one).",
        _balance_sheet,
        threshold="|assets - (liabilities + equity)| > 1% of |assets|",
        params={"tolerance": 0.01},
    )
)
_register(
    Rule(
        "fundamentals.filing_lag",
        ("fundamentals",),
        "warning",
        "A fiscal period first reported more than 90 days after its end (the first filing of "
        "each period_end; later restatements and comparatives are expected to be late).",
        _filing_lag,
        threshold="first filed - period_end > 90 days",
        params={"max_days": 90},
    )
)
_register(
    Rule(
        "fundamentals.negative_values",
        ("fundamentals",),
        "error",
        "A negative value in a column that cannot be negative: revenue, total_assets, "
        "total_liabilities, cash_and_equivalents, shares_diluted, capex (reported as a positive "
        "outflow). Income, EPS and cash-flow columns may be negative and are not checked.",
        _negative_values,
    )
)


# --- freshness -----------------------------------------------------------------------------------

DAILY_CADENCE: Final = ("prices", "signals_valuation", "signals_technical", "bars_minute")
"""Datasets expected every exchange session."""

CONTINUOUS_CADENCE: Final = ("crypto_bars",)
"""Datasets expected every UTC day (24/7 markets)."""


def freshness_violations(
    monitored: Iterable[MonitoredAsset],
    progress: Iterable[ProgressRow],
    now: dt.datetime,
    calendar: str = calendars.DEFAULT_CALENDAR,
    *,
    warn_hours: float = 24.0,
    error_hours: float = 48.0,
) -> pa.Table:
    """Active monitored assets whose data is late (pure: catalog rows in, violations out).

    For each active monitored asset and each of its datasets with a cadence (daily datasets
    and minute bars: every ``calendar`` session; ``crypto_bars``: every UTC day), the *expected
    session* is the first one after the last date collected (the watermark of the asset's
    source), one week later for ``weekly`` assets. Its data is due at that session's close
    (the calendar's close, early on half days; the end of the UTC day for crypto). Late by more
    than ``warn_hours`` is a warning, by more than ``error_hours`` an error. An asset never
    collected is late from when it was added. Datasets without a cadence (fundamentals,
    corporate actions, filings, reference tables) are not checked.

    Parameters
    ----------
    monitored:
        Monitored assets (inactive ones are skipped).
    progress:
        Collection watermarks.
    now:
        Time of the check (aware).
    calendar:
        Exchange calendar of the daily datasets.
    warn_hours, error_hours:
        Lateness thresholds.

    Returns
    -------
    pyarrow.Table
        Violations of rule ``freshness.stale`` (:data:`VIOLATION_SCHEMA`): ``date`` is the last
        date collected, ``ts`` when the data was due.
    """
    if now.tzinfo is None:
        raise MarketlakeError(f"now={now.isoformat()} has no time zone; pass an aware time")
    now_us = int(now.timestamp() * 1_000_000)
    marks = {(p.dataset, p.ticker, p.source): p.last_date for p in progress}
    rows: list[dict[str, Any]] = []
    days, _opens, closes = session_hours(calendar, now.date() + dt.timedelta(days=14))
    for asset in monitored:
        if not asset.active:
            continue
        for dataset in asset.datasets:
            if dataset not in DAILY_CADENCE and dataset not in CONTINUOUS_CADENCE:
                continue
            last = marks.get((dataset, asset.ticker, asset.source))
            step = 7 if asset.frequency == "weekly" else 1
            if last is None:
                added = dt.datetime.fromisoformat(asset.added_at.replace("Z", "+00:00"))
                due_us = int(added.timestamp() * 1_000_000)
                what = f"never collected since it was added on {asset.added_at[:10]}"
            elif dataset in CONTINUOUS_CADENCE:
                expected = last + dt.timedelta(days=step)
                due_us = ((expected - EPOCH).days + 1) * US_PER_DAY
                what = f"last bar {last.isoformat()}; the UTC day {expected.isoformat()} was due"
            else:
                target = (last - EPOCH).days + step
                i = int(np.searchsorted(days, target))
                if i >= days.size:
                    continue
                due_us = int(closes[i])
                due_day = _day(int(days[i])).isoformat()
                what = f"last session {last}; the session of {due_day} was due at its close"
            late_h = (now_us - due_us) / 3.6e9
            if late_h <= warn_hours:
                continue
            due = dt.datetime.fromtimestamp(due_us / 1e6, dt.UTC)
            due_text = due.strftime("%Y-%m-%d %H:%M")
            rows.append(
                {
                    "ticker": asset.ticker,
                    "dataset": dataset,
                    "date": last,
                    "ts": due,
                    "rule": "freshness.stale",
                    "severity": "error" if late_h > error_hours else "warning",
                    "detail": f"{asset.source}: {what} ({due_text} UTC)",
                }
            )
    if not rows:
        return empty_violations()
    return pa.Table.from_pylist(rows, schema=VIOLATION_SCHEMA)


def _freshness(ctx: RuleContext, *, warn_hours: float, error_hours: float) -> pa.Table:
    return freshness_violations(
        ctx.monitored,
        ctx.progress,
        ctx.now_utc,
        ctx.calendar,
        warn_hours=warn_hours,
        error_hours=error_hours,
    )


_register(
    Rule(
        "freshness.stale",
        (*DAILY_CADENCE, *CONTINUOUS_CADENCE),
        "error",
        "An active monitored asset (marketlake assets) whose dataset has not been collected "
        "for its expected session: the first session after its watermark (a week later for "
        "weekly assets; every UTC day for crypto) was due at that session's close. Warning "
        "when more than 24 h late, error when more than 48 h late; an asset never collected "
        "counts from when it was added.",
        _freshness,
        threshold="late > 24 h: warning; > 48 h: error",
        params={"warn_hours": 24.0, "error_hours": 48.0},
        needs=frozenset({"catalog"}),
    )
)

_register(
    Rule(
        "read_error",
        ("prices", "bars_minute", "crypto_bars", "fundamentals"),
        "error",
        "A ticker's objects could not be read (corrupt or unreadable Parquet, a bad _meta): "
        "its rows were not checked. The detail carries the read error and its repair.",
        lambda ctx, **_: empty_violations(),  # produced by marketlake.quality.validate
    )
)


# --- running -------------------------------------------------------------------------------------


def run_rules(
    ctx: RuleContext,
    rules: Iterable[Rule] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pa.Table:
    """Run ``rules`` (default: every row rule of ``ctx.dataset``) and return their violations,
    only those dated on or after ``ctx.since`` (undated ones kept), sorted by ticker, date, ts,
    rule.

    Parameters
    ----------
    ctx:
        The data and its context.
    rules:
        Rules to run.
    params:
        Parameter overrides by rule name, e.g. ``{"prices.suspicious_jump": {"threshold": 0.3}}``.
    """
    chosen = list(rules) if rules is not None else rules_for(ctx.dataset)
    tables = [empty_violations()]
    for rule in chosen:
        tables.append(rule.run(ctx, **dict((params or {}).get(rule.name, {}))))
    out = pa.concat_tables(tables)
    if ctx.since is not None and out.num_rows:
        import pyarrow.compute as pc

        keep = pc.or_kleene(
            pc.is_null(out.column("date")),
            pc.greater_equal(out.column("date"), pa.scalar(ctx.since, pa.date32())),
        )
        out = out.filter(keep)
    return sort_violations(out)


def sort_violations(table: pa.Table) -> pa.Table:
    """Sort violations by ticker, dataset, date, ts, rule (nulls last)."""
    if table.num_rows < 2:
        return table
    keys = [(k, "ascending") for k in ("ticker", "dataset", "date", "ts", "rule", "detail")]
    return table.sort_by(keys)


def _with_ticker(table: pa.Table | None, ticker: str | None, what: str) -> pa.Table | None:
    if table is None or "ticker" in table.column_names:
        return table
    if ticker is None:
        raise MarketlakeError(f"{what} has no ticker column: pass ticker=")
    return table.add_column(0, "ticker", pa.array([ticker] * table.num_rows, pa.string()))


def check(
    dataset: str,
    data: pa.Table,
    *,
    ticker: str | None = None,
    actions: pa.Table | None = None,
    daily: pa.Table | None = None,
    since: dt.date | None = None,
    first_dates: Mapping[str, dt.date] | None = None,
    now: dt.datetime | None = None,
    calendar: str = calendars.DEFAULT_CALENDAR,
    rules: Iterable[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pa.Table:
    """Run the rules of ``dataset`` on tables you hold (no lake needed).

    Parameters
    ----------
    dataset:
        Dataset of ``data`` (``prices``, ``bars_minute``, ``crypto_bars``, ``fundamentals``).
    data:
        Rows of one ticker (pass ``ticker``) or a long table with a ``ticker`` column.
    ticker:
        The ticker of single-ticker tables (``data``, ``actions``, ``daily`` without a
        ``ticker`` column get it).
    actions, daily, since, first_dates, now, calendar:
        See :class:`RuleContext`.
    rules:
        Rule names to run (default: every row rule of the dataset).
    params:
        Parameter overrides by rule name.

    Returns
    -------
    pyarrow.Table
        Violations (:data:`VIOLATION_SCHEMA`), sorted.
    """
    table = _with_ticker(data, ticker, dataset)
    assert table is not None
    ctx = RuleContext(
        dataset=dataset,
        data=table,
        actions=_with_ticker(actions, ticker, "corporate_actions"),
        daily=_with_ticker(daily, ticker, "daily prices"),
        since=since,
        first_dates=first_dates,
        now=now,
        calendar=calendar,
    )
    chosen = [get_rule(n) for n in rules] if rules is not None else None
    return run_rules(ctx, chosen, params)
