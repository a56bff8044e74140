"""Yahoo Finance chart API v8 (the endpoint yfinance uses): daily bars, corporate actions, 1m bars.

``GET https://query2.finance.yahoo.com/v8/finance/chart/{symbol}?period1=..&period2=..&interval=..``
answers one JSON document per symbol::

    {"chart": {"result": [{"meta": {...}, "timestamp": [...], "events": {...},
                           "indicators": {"quote": [{open, high, low, close, volume}],
                                          "adjclose": [{"adjclose": [...]}]}}],
               "error": null}}

What :meth:`YahooChartSource.parse` makes of it (pure; tested on real recorded responses):

* **prices, raw.** Yahoo's daily OHLC *and volume* are adjusted for every split up to the
  moment the response was produced. Each bar is un-adjusted with the splits listed in
  ``events.splits`` whose ex date is after the bar: prices are multiplied, volume divided by
  the cumulative ratio. ``events.splits`` only lists splits inside the requested window, so
  :meth:`~YahooChartSource.fetch` always asks for bars from the start date **through today**
  (one request; rows after ``end`` are dropped by ``parse``). A response whose bars stop well
  before its retrieval time (``meta.regularMarketTime``), e.g. an old recording, cannot be
  un-adjusted safely: ``parse`` refuses it (:class:`SourceError`) unless the caller lists the
  splits after the window under ``later_splits`` (see :meth:`~YahooChartSource.parse`).
  ``adj_close`` is Yahoo's ``adjclose`` unchanged (split- and dividend-adjusted, a cross-check).
* **dates** are session dates in the exchange time zone (``meta.exchangeTimezoneName``, else the
  fixed ``gmtoffset``), never the UTC date: an XETRA bar at 23:00 UTC belongs to the next day.
* **dropped rows:** bars whose open, high, low or close is null (Yahoo sends nulls for halted
  sessions and half-built rows); a null volume with prices present (indices, mutual funds) is
  stored as ``0``. While the market is open (``meta.regularMarketTime`` inside
  ``meta.currentTradingPeriod.regular``), the bar of the current session is an intraday
  snapshot and is skipped; the next run stores it once the session has closed.
* **corporate_actions:** ``events.splits`` -> ``split`` (value = numerator / denominator),
  ``events.dividends`` -> ``dividend`` and ``events.capitalGains`` -> ``capital_gain`` (value
  = cash per share in ``meta.currency``). Yahoo reports cash amounts in the share basis of the
  retrieval date, so they are un-adjusted with the same split factors as prices.
* **bars_minute:** ``interval=1m`` responses, ``ts`` = bar start in UTC, raw. An empty intraday
  answer (weekend, holiday, no trades: ``meta`` but no ``timestamp``) gives no rows, not an
  error. Yahoo serves 1m bars for about the last 30 days, at most 7 days per request: ``fetch``
  asks in 7-day windows and clamps the range to the last 30 days, logging what it skipped.
* **errors:** ``chart.error`` "No data found, symbol may be delisted" / "Not Found" or an empty
  result -> :class:`NoDataError` naming the symbol; anything else malformed -> :class:`SourceError`.

Symbols: lake tickers spell share classes with a dot (``BRK.B``), Yahoo with a dash (``BRK-B``);
exchange suffixes (``VOD.L``, ``GS2C.DE``, ``7203.T``) are kept as given (see
:func:`to_yahoo_symbol`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import MarketlakeError, NoDataError, SourceError
from marketlake.schemas.datasets import BARS_MINUTE, CORPORATE_ACTIONS, PRICES
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import iter_documents, load_json

if TYPE_CHECKING:  # httpx is imported only when a client is needed
    from marketlake.sources.http import HttpClient

__all__ = [
    "CHART_URL",
    "MINUTE_HISTORY_DAYS",
    "MINUTE_WINDOW_DAYS",
    "YahooChartSource",
    "to_yahoo_symbol",
]

log = logging.getLogger(__name__)

CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/{symbol}"
MINUTE_WINDOW_DAYS = 7
"""Yahoo serves at most this many days of 1m bars per request."""
MINUTE_HISTORY_DAYS = 30
"""Yahoo serves 1m bars only this many days back from today."""

# Yahoo exchange suffixes that are a single letter (longer ones such as .DE or .TO are never
# share classes). Any other ``X.Y`` with a one-letter ``Y`` is a US share class -> ``X-Y``.
_ONE_LETTER_EXCHANGE_SUFFIXES = frozenset({"L", "T", "V", "F"})

# Longest gap (seconds) between the last bar's timestamp and meta.regularMarketTime for a
# response that reaches its retrieval date, by granularity (a bar's timestamp is its start).
_GRANULARITY_SLACK = {
    "1d": 7 * 86400,
    "5d": 12 * 86400,
    "1wk": 14 * 86400,
    "1mo": 40 * 86400,
    "3mo": 100 * 86400,
}
_DEFAULT_SLACK = 7 * 86400
_INTRADAY = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h")


def to_yahoo_symbol(ticker: str) -> str:
    """Map a lake ticker to Yahoo's spelling.

    ``BRK.B`` -> ``BRK-B`` (share class), exchange suffixes kept: ``VOD.L``, ``GS2C.DE``,
    ``7203.T``; ``BTC-USD`` and ``^GSPC`` unchanged.
    """
    head, dot, tail = ticker.rpartition(".")
    one_letter = bool(dot and head and len(tail) == 1 and tail.isalpha())
    if one_letter and tail.upper() not in _ONE_LETTER_EXCHANGE_SUFFIXES:
        return f"{head}-{tail}"
    return ticker


@dataclass(frozen=True)
class _Split:
    ex_date: dt.date
    numerator: float
    denominator: float

    @property
    def ratio(self) -> float:
        return self.numerator / self.denominator


@dataclass(frozen=True)
class _Chart:
    """One validated ``chart.result[0]``."""

    symbol: str
    meta: Mapping[str, Any]
    timestamps: list[int]
    quote: Mapping[str, list[Any]]
    adjclose: list[Any] | None
    events: Mapping[str, Any]
    tz: dt.tzinfo
    granularity: str


class YahooChartSource(Source):
    """Yahoo Finance chart API v8: ``prices`` (raw), ``corporate_actions``, ``bars_minute``.

    Parameters
    ----------
    client:
        The shared :class:`~marketlake.sources.http.HttpClient`; default: one created on first
        use (Yahoo is limited to 2 requests/s per host).
    now:
        Wall clock (UTC, aware) used to plan requests; tests inject a fixed time.
    user_agent:
        ``User-Agent`` of the default client (Yahoo throttles some non-browser agents).
    """

    name: ClassVar[str] = "yahoo"
    datasets: ClassVar[tuple[str, ...]] = ("prices", "corporate_actions", "bars_minute")
    description: ClassVar[str] = (
        "Yahoo Finance chart API v8: raw daily OHLCV (splits undone) with Yahoo's adjusted "
        "close, splits/dividends/capital gains, 1-minute bars (last 30 days); no key needed."
    )
    settings: ClassVar[tuple[str, ...]] = ()
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        now: Callable[[], dt.datetime] | None = None,
        user_agent: str | None = None,
    ) -> None:
        self._client = client
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._user_agent = user_agent

    def _make_client(self) -> HttpClient:
        from marketlake.sources.http import HttpClient

        return HttpClient(
            user_agent=self._user_agent
            or "Mozilla/5.0 (X11; Linux x86_64) marketlake (+https://github.com/marketlake)"
        )

    # --- fetch (the only I/O) ----------------------------------------------------------------

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download the chart responses ``request`` needs.

        Returns ``{"symbol": yahoo_symbol, "daily": body | None, "minute": [body, ...]}``:
        one daily request from the day before ``start`` through now (so that every later split
        is listed) when ``prices`` or ``corporate_actions`` are wanted, and 7-day 1m windows
        (clamped to the last 30 days) when ``bars_minute`` is wanted.

        Raises
        ------
        NoDataError
            Yahoo does not know the symbol (HTTP 404 or a "No data found" error body).
        TransientSourceError, SourceError
            From the HTTP client (throttling after retries, other HTTP errors).
        """
        symbol = to_yahoo_symbol(request.ticker)
        url = CHART_URL.format(symbol=symbol)
        now = self._now()
        raw: dict[str, Any] = {"symbol": symbol, "daily": None, "minute": []}
        if {"prices", "corporate_actions"} & set(request.datasets):
            period1 = _epoch(request.start - dt.timedelta(days=1))
            period2 = max(_epoch(request.end + dt.timedelta(days=2)), int(now.timestamp()))
            params: dict[str, str | int | float] = {
                "period1": period1,
                "period2": period2,
                "interval": "1d",
                "events": "div,splits,capitalGains",
                "includeAdjustedClose": "true",
                "includePrePost": "false",
            }
            raw["daily"] = self._get(url, params, request.ticker)
        if "bars_minute" in request.datasets:
            for lo, hi in minute_windows(request.start, request.end, now, request.ticker):
                params = {
                    "period1": lo,
                    "period2": hi,
                    "interval": "1m",
                    "includePrePost": "false",
                    "events": "div,splits",
                }
                raw["minute"].append(self._get(url, params, request.ticker))
        return raw

    def _get(self, url: str, params: Mapping[str, str | int | float], ticker: str) -> Any:
        try:
            return self.client.get_json(url, params=params)
        except NoDataError as exc:
            raise NoDataError(
                f"yahoo: no data for {ticker}: {exc}", ticker=ticker, source=self.name
            ) from None

    # --- parse (pure) --------------------------------------------------------------------------

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Turn chart responses into ``prices``, ``corporate_actions`` and ``bars_minute`` rows.

        ``raw`` is what :meth:`fetch` returns, or a bare chart body ``{"chart": ...}`` (a
        response saved to a file; 1m bodies fill ``bars_minute``, others the daily datasets).
        Either form may carry ``"later_splits": [{"date": epoch, "numerator": n,
        "denominator": d}, ...]``: splits after the body's last bar that Yahoo had already
        applied when the body was recorded (``[]`` asserts there were none). Without it, a body
        whose bars end long before its retrieval time is refused for daily datasets.
        """
        daily, minute, later = _unpack(raw, request.ticker)
        out: dict[str, pa.Table] = {}
        wants_daily = {"prices", "corporate_actions"} & set(request.datasets)
        if daily is not None and wants_daily:
            chart = _chart(daily, request.ticker)
            if later is None:
                _check_reaches_retrieval(chart, request.ticker)
            extra = [_split_from(e, chart, request.ticker) for e in later or []]
            # a split listed both in the body and in later_splits counts once
            splits = list({s.ex_date: s for s in _splits(chart) + extra}.values())
            if "prices" in request.datasets:
                prices = _prices(chart, splits, request)
                if prices.num_rows:
                    out["prices"] = prices
            if "corporate_actions" in request.datasets:
                actions = _actions(chart, splits, request)
                if actions.num_rows:
                    out["corporate_actions"] = actions
        if "bars_minute" in request.datasets:
            charts = [_chart(body, request.ticker) for body in minute]
            parts = [_minute_bars(c, request) for c in charts]
            parts = [p for p in parts if p.num_rows]
            if parts:
                bars = _dedupe_sorted(pa.concat_tables(parts), "ts")
                out["bars_minute"] = bars
        return out

    # --- files (marketlake import) ---------------------------------------------------------------

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Chart responses saved as files -> payloads for :meth:`parse` (no network).

        Each file (``.json``, gzip-compressed, or a member of a ``.zip``) is one chart body as
        the API answered it, or a node-yahoo-finance2 recording (the body under
        ``response.bodyJson``). The ticker is the body's ``meta.symbol`` (``BRK-B`` -> ``BRK.B``);
        a daily body fills ``prices`` and ``corporate_actions``, a 1m body ``bars_minute``.
        A body whose bars end long before Yahoo produced it (an old recording) is refused for
        the daily datasets unless the saved JSON carries ``"later_splits"`` next to ``"chart"``
        (see :meth:`parse`).
        """
        for doc in iter_documents(paths):
            if doc.data is None:
                yield FilePayload.failed(doc.origin, doc.error or "cannot read")
                continue
            try:
                body = _unwrap_recording(load_json(doc.data, doc.origin), doc.origin)
                meta = _result_meta(body)
                symbol = meta.get("symbol")
                if not isinstance(symbol, str) or not symbol:
                    _chart(body, doc.origin)  # raises Yahoo's own error (or a malformed body)
                    raise SourceError(
                        f"{doc.origin}: the chart response has no meta.symbol; cannot tell its "
                        "ticker"
                    )
                ticker = normalize_ticker(symbol)
                granularity = str(meta.get("dataGranularity") or "1d")
                datasets = (
                    ("bars_minute",)
                    if granularity in _INTRADAY
                    else ("prices", "corporate_actions")
                )
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            yield FilePayload(doc.origin, SourceRequest(ticker, datasets, *FILE_RANGE), body)


def _unwrap_recording(doc: Any, origin: str) -> Any:
    """The Yahoo body of a saved response: itself, or ``response.bodyJson`` of a recording."""
    if isinstance(doc, Mapping) and "chart" not in doc and isinstance(doc.get("response"), Mapping):
        response = doc["response"]
        inner = response.get("bodyJson")
        if inner is None and isinstance(response.get("body"), str):
            inner = load_json(response["body"].encode(), f"{origin} (response.body)")
        if isinstance(inner, Mapping):
            return inner
    if not isinstance(doc, Mapping) or "chart" not in doc:
        keys = sorted(map(str, doc))[:8] if isinstance(doc, Mapping) else type(doc).__name__
        raise SourceError(
            f"{origin}: not a Yahoo chart response (expected {{'chart': ...}} or a recording "
            f"with response.bodyJson; got {keys})"
        )
    return doc


# --- planning helpers ------------------------------------------------------------------------


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def minute_windows(
    start: dt.date, end: dt.date, now: dt.datetime, ticker: str = "?"
) -> list[tuple[int, int]]:
    """``(period1, period2)`` epoch windows of at most 7 days covering ``[start, end]``.

    The range is widened by a day on each side (exchange time zones) and clamped to
    ``[now - 30 days, now]``; what the clamp drops is logged. An empty list when nothing of the
    range is still served.
    """
    lo = _epoch(start - dt.timedelta(days=1))
    hi = _epoch(end + dt.timedelta(days=2))
    now_s = int(now.timestamp())
    oldest = now_s - MINUTE_HISTORY_DAYS * 86400 + 3600  # an hour of margin inside the limit
    if lo < oldest:
        log.warning(
            "yahoo %s: 1m bars are served for the last %d days only; skipping %s..%s",
            ticker,
            MINUTE_HISTORY_DAYS,
            start,
            min(end, dt.datetime.fromtimestamp(oldest, dt.UTC).date()),
        )
        lo = oldest
    hi = min(hi, now_s)
    windows = []
    step = MINUTE_WINDOW_DAYS * 86400
    while lo < hi:
        windows.append((lo, min(lo + step, hi)))
        lo += step
    return windows


# --- parsing helpers -------------------------------------------------------------------------


def _unpack(raw: Any, ticker: str) -> tuple[Any, list[Any], list[Any] | None]:
    """(daily body or None, minute bodies, later_splits or None) from either raw form."""
    if not isinstance(raw, Mapping):
        raise SourceError(
            f"yahoo {ticker}: expected a chart JSON object, got {type(raw).__name__}",
            ticker=ticker,
        )
    later = raw.get("later_splits")
    if later is not None and not isinstance(later, list):
        raise SourceError(f"yahoo {ticker}: later_splits must be a list", ticker=ticker)
    if "chart" in raw:
        meta = _result_meta(raw)
        if str(meta.get("dataGranularity", "")) in _INTRADAY:
            return None, [raw], later
        return raw, [], later
    if "daily" in raw or "minute" in raw:
        minute = raw.get("minute") or []
        if not isinstance(minute, list):
            raise SourceError(f"yahoo {ticker}: 'minute' must be a list of bodies", ticker=ticker)
        return raw.get("daily"), minute, later
    raise SourceError(
        f"yahoo {ticker}: not a Yahoo chart response (no 'chart' key; keys: "
        f"{sorted(map(str, raw))[:8]})",
        ticker=ticker,
    )


def _result_meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    chart = body.get("chart")
    if isinstance(chart, Mapping):
        result = chart.get("result")
        if isinstance(result, list) and result and isinstance(result[0], Mapping):
            meta = result[0].get("meta")
            if isinstance(meta, Mapping):
                return meta
    return {}


def _chart(body: Any, ticker: str) -> _Chart:
    """Validate one body (an empty intraday answer has no timestamps and no rows)."""
    where = f"yahoo {ticker}"
    if not isinstance(body, Mapping) or not isinstance(body.get("chart"), Mapping):
        raise SourceError(f"{where}: malformed chart response (no 'chart' object)", ticker=ticker)
    chart = body["chart"]
    error = chart.get("error")
    if error:
        code = str(error.get("code", "")) if isinstance(error, Mapping) else ""
        desc = str(error.get("description", error)) if isinstance(error, Mapping) else str(error)
        if code.lower() == "not found" or "no data" in desc.lower() or "delisted" in desc.lower():
            raise NoDataError(f"{where}: no data ({desc})", ticker=ticker, source="yahoo")
        raise SourceError(f"{where}: Yahoo answered an error: {code} {desc}".strip(), ticker=ticker)
    result = chart.get("result")
    if result is None or result == []:
        raise NoDataError(f"{where}: no data (empty chart result)", ticker=ticker, source="yahoo")
    if not isinstance(result, list) or not isinstance(result[0], Mapping):
        raise SourceError(
            f"{where}: malformed chart response ('result' is not a list)", ticker=ticker
        )
    res = result[0]
    meta = res.get("meta")
    if not isinstance(meta, Mapping):
        raise SourceError(f"{where}: malformed chart response (no 'meta')", ticker=ticker)
    symbol = str(meta.get("symbol") or ticker)
    granularity = str(meta.get("dataGranularity") or "1d")
    timestamps = res.get("timestamp") or []
    if not isinstance(timestamps, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in timestamps
    ):
        raise SourceError(
            f"{where}: malformed chart response (timestamps are not integers)", ticker=ticker
        )
    tz = _timezone(meta, ticker)
    indicators = res.get("indicators")
    if not isinstance(indicators, Mapping):
        raise SourceError(f"{where}: malformed chart response (no 'indicators')", ticker=ticker)
    quotes = indicators.get("quote")
    if not isinstance(quotes, list) or not quotes or not isinstance(quotes[0], Mapping):
        raise SourceError(f"{where}: malformed chart response (no 'quote')", ticker=ticker)
    quote: dict[str, list[Any]] = {}
    n = len(timestamps)
    for name in ("open", "high", "low", "close", "volume"):
        column = quotes[0].get(name, [] if n == 0 else None)
        if not isinstance(column, list) or len(column) != n:
            raise SourceError(
                f"{where}: malformed chart response (quote.{name} has "
                f"{len(column) if isinstance(column, list) else 'no'} values for {n} timestamps)",
                ticker=ticker,
            )
        quote[name] = column
    adjclose: list[Any] | None = None
    adj = indicators.get("adjclose")
    if isinstance(adj, list) and adj and isinstance(adj[0], Mapping):
        values = adj[0].get("adjclose")
        if isinstance(values, list) and len(values) == n:
            adjclose = values
    events = res.get("events") or {}
    if not isinstance(events, Mapping):
        raise SourceError(
            f"{where}: malformed chart response ('events' is not an object)", ticker=ticker
        )
    return _Chart(symbol, meta, timestamps, quote, adjclose, events, tz, granularity)


def _timezone(meta: Mapping[str, Any], ticker: str) -> dt.tzinfo:
    name = meta.get("exchangeTimezoneName")
    if isinstance(name, str) and name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            log.warning("yahoo %s: unknown time zone %r, using gmtoffset", ticker, name)
    offset = meta.get("gmtoffset")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        return dt.timezone(dt.timedelta(seconds=int(offset)))
    raise SourceError(
        f"yahoo {ticker}: chart meta has neither exchangeTimezoneName nor gmtoffset; cannot "
        "tell session dates",
        ticker=ticker,
    )


def _local_date(ts: int, tz: dt.tzinfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts, tz).date()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _split_from(event: Any, chart: _Chart, ticker: str) -> _Split:
    if not isinstance(event, Mapping):
        raise SourceError(f"yahoo {ticker}: malformed split event {event!r}", ticker=ticker)
    when = event.get("date")
    num = _number(event.get("numerator"))
    den = _number(event.get("denominator"))
    if not isinstance(when, int) or num is None or den is None or num <= 0 or den <= 0:
        raise SourceError(
            f"yahoo {ticker}: malformed split event {dict(event)!r} (needs date, numerator > 0, "
            "denominator > 0)",
            ticker=ticker,
        )
    return _Split(_local_date(when, chart.tz), num, den)


def _splits(chart: _Chart) -> list[_Split]:
    block = chart.events.get("splits") or {}
    if not isinstance(block, Mapping):
        raise SourceError(f"yahoo {chart.symbol}: malformed events.splits", ticker=chart.symbol)
    return [_split_from(e, chart, chart.symbol) for e in block.values()]


def _factor(day: dt.date, splits: Iterable[_Split]) -> float:
    """Cumulative ratio of the splits after ``day`` (Yahoo value x factor = raw price)."""
    f = 1.0
    for s in splits:
        if s.ex_date > day:
            f *= s.ratio
    return f


def _check_reaches_retrieval(chart: _Chart, ticker: str) -> None:
    """Refuse a body whose bars end long before Yahoo produced it (later splits unknown)."""
    retrieved = chart.meta.get("regularMarketTime")
    if not chart.timestamps or not isinstance(retrieved, int):
        return
    gap = retrieved - chart.timestamps[-1]
    if gap > _GRANULARITY_SLACK.get(chart.granularity, _DEFAULT_SLACK):
        last = _local_date(chart.timestamps[-1], chart.tz)
        when = _local_date(retrieved, chart.tz)
        raise SourceError(
            f"yahoo {ticker}: the response's bars end {last} but Yahoo adjusted them for splits "
            f"up to {when}, and splits after the window are not listed; raw prices cannot be "
            "recovered: fetch through today, or pass the later splits as 'later_splits'",
            ticker=ticker,
        )


def _market_open(meta: Mapping[str, Any]) -> int | None:
    """regularMarketTime when the regular session is in progress, else None."""
    rmt = meta.get("regularMarketTime")
    period = meta.get("currentTradingPeriod")
    regular = period.get("regular") if isinstance(period, Mapping) else None
    if not isinstance(rmt, int) or not isinstance(regular, Mapping):
        return None
    lo, hi = regular.get("start"), regular.get("end")
    if isinstance(lo, int) and isinstance(hi, int) and lo <= rmt < hi:
        return rmt
    return None


def _decimals(meta: Mapping[str, Any]) -> int:
    """Decimals kept: Yahoo's prices are float32 artefacts (209.300003 for 209.30); two digits
    beyond ``meta.priceHint`` (2 for most stocks, 4 under a dollar) keep every real digit."""
    hint = meta.get("priceHint")
    return (hint if isinstance(hint, int) and 0 <= hint <= 8 else 2) + 2


def _prices(chart: _Chart, splits: list[_Split], request: SourceRequest) -> pa.Table:
    if chart.granularity != "1d":
        raise SourceError(
            f"yahoo {request.ticker}: prices need daily bars (interval=1d); this response has "
            f"{chart.granularity} bars",
            ticker=request.ticker,
        )
    live = _market_open(chart.meta)
    live_day = _local_date(live, chart.tz) if live is not None else None
    digits = _decimals(chart.meta)
    q = chart.quote
    rows: dict[dt.date, tuple[float, float, float, float, float | None, int]] = {}
    dropped = 0
    for i, ts in enumerate(chart.timestamps):
        day = _local_date(ts, chart.tz)
        if day < request.start or day > request.end:
            continue
        if day == live_day:
            log.info("yahoo %s: skipping %s, the session is still open", request.ticker, day)
            continue
        o, h, lo, c = (_number(q[k][i]) for k in ("open", "high", "low", "close"))
        if o is None or h is None or lo is None or c is None:
            dropped += 1
            continue
        f = _factor(day, splits)
        vol = _number(q["volume"][i]) or 0.0
        adj = _number(chart.adjclose[i]) if chart.adjclose is not None else None
        rows[day] = (
            round(o * f, digits),
            round(h * f, digits),
            round(lo * f, digits),
            round(c * f, digits),
            adj,
            round(vol / f),
        )
    if dropped:
        log.info("yahoo %s: dropped %d bar(s) with null prices", request.ticker, dropped)
    days = sorted(rows)
    cols: list[tuple[Any, ...]] = (
        list(zip(*(rows[d] for d in days), strict=True)) if days else [()] * 6
    )
    return pa.table(
        {
            "date": pa.array(days, pa.date32()),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "adj_close": pa.array(cols[4], pa.float64()),
            "volume": pa.array(cols[5], pa.int64()),
        },
        schema=PRICES.schema,
    )


def _actions(chart: _Chart, splits: list[_Split], request: SourceRequest) -> pa.Table:
    currency = chart.meta.get("currency")
    currency = currency.upper() if isinstance(currency, str) and currency else None
    rows: dict[tuple[dt.date, str], tuple[float, float | None, float | None, str | None]] = {}
    for s in splits:
        if request.start <= s.ex_date <= request.end:
            rows[(s.ex_date, "split")] = (s.ratio, s.numerator, s.denominator, None)
    for block, action in (("dividends", "dividend"), ("capitalGains", "capital_gain")):
        events = chart.events.get(block) or {}
        if not isinstance(events, Mapping):
            raise SourceError(
                f"yahoo {request.ticker}: malformed events.{block}", ticker=request.ticker
            )
        for event in events.values():
            when = event.get("date") if isinstance(event, Mapping) else None
            amount = _number(event.get("amount")) if isinstance(event, Mapping) else None
            if not isinstance(when, int) or amount is None:
                raise SourceError(
                    f"yahoo {request.ticker}: malformed {block} event {event!r}",
                    ticker=request.ticker,
                )
            day = _local_date(when, chart.tz)
            if request.start <= day <= request.end:
                raw_amount = round(amount * _factor(day, splits), 10)
                rows[(day, action)] = (raw_amount, None, None, currency)
    keys = sorted(rows)
    return pa.table(
        {
            "ex_date": pa.array([k[0] for k in keys], pa.date32()),
            "action": pa.array([k[1] for k in keys], pa.string()),
            "value": pa.array([rows[k][0] for k in keys], pa.float64()),
            "split_numerator": pa.array([rows[k][1] for k in keys], pa.float64()),
            "split_denominator": pa.array([rows[k][2] for k in keys], pa.float64()),
            "currency": pa.array([rows[k][3] for k in keys], pa.string()),
        },
        schema=CORPORATE_ACTIONS.schema,
    )


def _minute_bars(chart: _Chart, request: SourceRequest) -> pa.Table:
    if chart.timestamps and chart.granularity != "1m":
        raise SourceError(
            f"yahoo {request.ticker}: bars_minute need 1m bars; this response has "
            f"{chart.granularity} bars",
            ticker=request.ticker,
        )
    live = _market_open(chart.meta)
    splits = _splits(chart)
    digits = _decimals(chart.meta)
    q = chart.quote
    rows: dict[int, tuple[float, float, float, float, int]] = {}
    for i, ts in enumerate(chart.timestamps):
        day = _local_date(ts, chart.tz)
        if day < request.start or day > request.end:
            continue
        if live is not None and ts <= live < ts + 60:
            continue  # the minute still being built
        o, h, lo, c = (_number(q[k][i]) for k in ("open", "high", "low", "close"))
        if o is None or h is None or lo is None or c is None:
            continue
        f = _factor(day, splits)
        vol = _number(q["volume"][i]) or 0.0
        rows[ts] = (
            round(o * f, digits),
            round(h * f, digits),
            round(lo * f, digits),
            round(c * f, digits),
            round(vol / f),
        )
    stamps = sorted(rows)
    cols: list[tuple[Any, ...]] = (
        list(zip(*(rows[t] for t in stamps), strict=True)) if stamps else [()] * 5
    )
    n = len(stamps)
    return pa.table(
        {
            "ts": pa.array([t * 1_000_000 for t in stamps], pa.timestamp("us", tz="UTC")),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "volume": pa.array(cols[4], pa.int64()),
            "vwap": pa.nulls(n, pa.float64()),
            "trade_count": pa.nulls(n, pa.int64()),
        },
        schema=BARS_MINUTE.schema,
    )


def _dedupe_sorted(table: pa.Table, key: str) -> pa.Table:
    """Sort by ``key`` and keep the last row of each key (overlapping windows)."""
    rows: dict[Any, int] = {}
    for i, value in enumerate(table.column(key).to_pylist()):
        rows[value] = i
    order = sorted(rows)
    return table.take([rows[k] for k in order])
