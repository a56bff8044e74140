"""Tiingo equities: daily end-of-day prices with dividends and splits, IEX intraday 1-minute bars.

Endpoints (all need ``TIINGO_API_KEY``, sent as an ``Authorization: Token ...`` header that never
appears in messages or logs):

* ``GET https://api.tiingo.com/tiingo/daily/{ticker}/prices?startDate&endDate&format=json``
  answers ``[{date, open, high, low, close, volume, adjOpen, adjHigh, adjLow, adjClose,
  adjVolume, divCash, splitFactor}, ...]`` oldest first (``endDate`` inclusive).
* ``GET https://api.tiingo.com/iex/{ticker}/prices?startDate&endDate&resampleFreq=1min
  &columns=open,high,low,close,volume`` answers ``[{date, open, high, low, close, volume}, ...]``.
* ``GET https://api.tiingo.com/tiingo/daily/{ticker}`` answers the ticker's metadata
  (:meth:`TiingoSource.metadata`; not a dataset).

What :meth:`TiingoSource.parse` makes of them (pure; tested on real recorded responses):

* **prices:** Tiingo's *raw* ``open/high/low/close/volume`` (as traded, never adjusted) and its
  ``adjClose`` as ``adj_close`` (null when the answer has no ``adjClose``, e.g. a reduced
  ``columns=`` answer). ``date`` is midnight UTC of the session date (``2018-01-05T00:00:00.000Z``,
  ``...+00:00`` or a bare ``2018-01-05`` in CSV answers) and becomes that session date. A row with a
  null open/high/low/close is left out (logged); a null volume is stored as ``0``.
* **corporate_actions:** ``divCash > 0`` -> ``dividend`` (value = cash per share as paid, currency
  ``USD``: Tiingo's EOD data is for US-listed shares priced in dollars); ``splitFactor != 1`` ->
  ``split`` (value = ``splitFactor``, new shares per old: 4.0 for 4-for-1, 0.05 for 1-for-20), with
  ``split_numerator``/``split_denominator`` when the factor is a clean ratio of integers up to 1000
  (``1.5`` -> 3/2), else null.
* **bars_minute:** ``ts`` = bar start in UTC, raw prices. Tiingo's intraday data comes from IEX
  only: ``volume`` is the shares traded **on IEX** in that minute (a small slice of consolidated
  volume), not the market total. ``volume`` is required in ``bars_minute``, so :meth:`fetch`
  always asks for it (``columns=...,volume``); a bar without a volume (an answer requested
  without ``columns``) is **left out** and a warning says how many -- never stored as a fake ``0``.
  Rows are kept when their New York session date is inside the request. A bare answer whose bars
  are spaced by more than a minute (a ``resampleFreq=30min`` answer) is refused.
* **errors:** HTTP 404 / "not found" -> :class:`NoDataError` naming the ticker; an error object
  (``{"detail": ...}``) or malformed rows -> :class:`SourceError`. An empty list is "no rows".

Symbols: lake tickers spell share classes with a dot (``BRK.B``), Tiingo with a dash (``BRK-B``).

Other Tiingo answers have plain-table parsers but are not stored as datasets yet:
:func:`parse_fundamentals_daily` (daily market cap / ratios: no lake dataset holds them) and
:func:`parse_fundamentals_statements` (quarterly statements: they carry no filing date, so they
cannot be stored point in time in ``fundamentals``, whose key is ``(period_end, filed)``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import logging
import math
import threading
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import MarketlakeError, NoDataError, SourceError
from marketlake.schemas.datasets import BARS_MINUTE, CORPORATE_ACTIONS, PRICES
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.crypto import TIINGO_KEY_ENV, _num, _tiingo_key
from marketlake.sources.files import iter_documents, load_json

if TYPE_CHECKING:  # httpx is imported only when a client is needed
    from marketlake.sources.http import HttpClient

__all__ = [
    "DAILY_URL",
    "IEX_URL",
    "IEX_WINDOW_DAYS",
    "METADATA_URL",
    "TiingoSource",
    "parse_daily_rows",
    "parse_fundamentals_daily",
    "parse_fundamentals_statements",
    "parse_iex_rows",
    "parse_metadata",
    "split_ratio",
    "to_tiingo_symbol",
]

log = logging.getLogger(__name__)

HOST = "api.tiingo.com"
DAILY_URL = "https://api.tiingo.com/tiingo/daily/{symbol}/prices"
IEX_URL = "https://api.tiingo.com/iex/{symbol}/prices"
METADATA_URL = "https://api.tiingo.com/tiingo/daily/{symbol}"
IEX_WINDOW_DAYS = 5
"""Days of 1-minute IEX bars asked per request (about 2 000 regular-session bars)."""
IEX_COLUMNS = "open,high,low,close,volume"
DIVIDEND_CURRENCY = "USD"
_NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
_MAX_SPLIT_TERM = 1000

_DAILY_FIELDS = ("open", "high", "low", "close", "volume", "adjClose", "divCash", "splitFactor")


def to_tiingo_symbol(ticker: str) -> str:
    """``BRK.B`` -> ``BRK-B`` (Tiingo spells share classes with a dash); others unchanged."""
    return ticker.replace(".", "-")


def split_ratio(factor: float) -> tuple[float, float] | None:
    """``(numerator, denominator)`` of a split factor that is a clean ratio, else ``None``.

    ``4.0`` -> ``(4, 1)``, ``0.05`` -> ``(1, 20)``, ``1.5`` -> ``(3, 2)``, ``0.3333333`` ->
    ``(1, 3)``; a factor that is no ratio of integers up to 1000 (within 1e-6) -> ``None``.
    """
    if not math.isfinite(factor) or factor <= 0:
        return None
    frac = Fraction(factor).limit_denominator(_MAX_SPLIT_TERM)
    if frac.numerator > _MAX_SPLIT_TERM or frac.numerator == 0:
        return None
    if abs(frac.numerator / frac.denominator - factor) > 1e-6 * factor:
        return None
    return float(frac.numerator), float(frac.denominator)


# --- plain parsers ----------------------------------------------------------------------------


def _when(value: Any, where: str) -> dt.datetime:
    """An aware UTC datetime from Tiingo's ISO date (``Z``, ``+00:00`` or a bare date)."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise SourceError(f"{where}: date {value!r} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _opt(value: Any, what: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    return _num(value, what, where)


def _check_error_object(body: Any, where: str) -> None:
    """Raise Tiingo's own error when ``body`` is an error object (``{"detail": ...}``)."""
    if isinstance(body, Mapping):
        detail = body.get("detail") or body.get("error") or body.get("message")
        if detail is not None:
            text = str(detail)
            if "not found" in text.lower():
                raise NoDataError(f"{where}: {text}"[:300])
            raise SourceError(f"{where}: Tiingo answered an error: {text}"[:300])


def _rows(body: Any, where: str) -> list[Mapping[str, Any]]:
    """The list of row objects of a Tiingo answer, or a clear error for an error object."""
    _check_error_object(body, where)
    if isinstance(body, Mapping):
        raise SourceError(
            f"{where}: expected a list of rows, got keys {sorted(map(str, body))[:8]}"
        )
    if not isinstance(body, list):
        raise SourceError(f"{where}: expected a list of rows, got {type(body).__name__}")
    for row in body:
        if not isinstance(row, Mapping):
            raise SourceError(f"{where}: malformed row {row!r}"[:300])
    return body


def parse_daily_rows(body: Any, where: str = "tiingo") -> pa.Table:
    """Tiingo EOD rows (JSON list or CSV ``DictReader`` rows) -> a plain table, all rows.

    Columns: ``date`` (session date), raw ``open/high/low/close/volume``, ``adj_close``,
    ``div_cash``, ``split_factor`` (nulls where the answer lacks a field), sorted by date.
    """
    by_day: dict[dt.date, tuple[float | None, ...]] = {}
    for row in _rows(body, where):
        day = _when(row.get("date"), where).date()
        by_day[day] = tuple(_opt(row.get(k), k, f"{where} {day}") for k in _DAILY_FIELDS)
    days = sorted(by_day)
    cols = list(zip(*(by_day[d] for d in days), strict=True)) if days else [()] * 8
    return pa.table(
        {
            "date": pa.array(days, pa.date32()),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "volume": pa.array([None if v is None else round(v) for v in cols[4]], pa.int64()),
            "adj_close": pa.array(cols[5], pa.float64()),
            "div_cash": pa.array(cols[6], pa.float64()),
            "split_factor": pa.array(cols[7], pa.float64()),
        }
    )


def parse_iex_rows(body: Any, where: str = "tiingo") -> pa.Table:
    """Tiingo IEX intraday rows -> a plain table ``ts`` (UTC), OHLC, ``volume`` (null if absent)."""
    by_ts: dict[dt.datetime, tuple[float | None, ...]] = {}
    for row in _rows(body, where):
        ts = _when(row.get("date"), where)
        by_ts[ts] = tuple(
            _opt(row.get(k), k, f"{where} {ts:%Y-%m-%dT%H:%M}Z")
            for k in ("open", "high", "low", "close", "volume")
        )
    stamps = sorted(by_ts)
    cols = list(zip(*(by_ts[t] for t in stamps), strict=True)) if stamps else [()] * 5
    return pa.table(
        {
            "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "volume": pa.array([None if v is None else round(v) for v in cols[4]], pa.int64()),
        }
    )


def parse_metadata(body: Any, where: str = "tiingo") -> dict[str, Any]:
    """``/tiingo/daily/{ticker}`` -> ``{ticker, name, exchange, start_date, end_date,
    description}`` (dates as :class:`datetime.date` or ``None``)."""
    if not isinstance(body, Mapping) or "ticker" not in body:
        _check_error_object(body, where)
        raise SourceError(f"{where}: not a Tiingo ticker metadata object (no 'ticker')")

    def day(key: str) -> dt.date | None:
        value = body.get(key)
        if not value:
            return None
        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError:
            raise SourceError(f"{where}: {key} {value!r} is not a date") from None

    return {
        "ticker": normalize_ticker(str(body["ticker"])),
        "name": body.get("name"),
        "exchange": body.get("exchangeCode"),
        "start_date": day("startDate"),
        "end_date": day("endDate"),
        "description": body.get("description"),
    }


def parse_fundamentals_daily(body: Any, where: str = "tiingo") -> pa.Table:
    """``/tiingo/fundamentals/{ticker}/daily`` -> plain table: ``date`` and one float column per
    metric Tiingo sent (``marketCap``, ``enterpriseVal``, ``peRatio``, ...), sorted by date.

    Not stored: no lake dataset holds daily market cap / ratios from a vendor yet.
    """
    rows = _rows(body, where)
    names = sorted({str(k) for r in rows for k in r if k != "date"})
    ordered = sorted(rows, key=lambda r: _when(r.get("date"), where))
    cols: dict[str, pa.Array] = {
        "date": pa.array([_when(r.get("date"), where).date() for r in ordered], pa.date32())
    }
    for name in names:
        cols[name] = pa.array([_opt(r.get(name), name, where) for r in ordered], pa.float64())
    return pa.table(cols)


def parse_fundamentals_statements(body: Any, where: str = "tiingo") -> pa.Table:
    """``/tiingo/fundamentals/{ticker}/statements`` -> a long plain table.

    Columns ``period_end`` (date), ``year``, ``quarter`` (0 = the annual statement),
    ``statement`` (``balanceSheet``, ``incomeStatement``, ``cashFlow``, ``overview``),
    ``data_code`` and ``value``. Not stored in ``fundamentals``: Tiingo gives no filing date,
    so the rows cannot be placed point in time (key ``(period_end, filed)``).
    """
    out: dict[str, list[Any]] = {
        k: [] for k in ("period_end", "year", "quarter", "statement", "data_code", "value")
    }
    for entry in _rows(body, where):
        period = _when(entry.get("date"), where).date()
        data = entry.get("statementData")
        if not isinstance(data, Mapping):
            raise SourceError(f"{where} {period}: statementData must be an object")
        for statement in sorted(data):
            items = data[statement]
            if not isinstance(items, list):
                raise SourceError(f"{where} {period}: {statement} must be a list")
            for item in items:
                if not isinstance(item, Mapping) or "dataCode" not in item:
                    raise SourceError(
                        f"{where} {period}: malformed {statement} item {item!r}"[:300]
                    )
                out["period_end"].append(period)
                out["year"].append(entry.get("year"))
                out["quarter"].append(entry.get("quarter"))
                out["statement"].append(str(statement))
                out["data_code"].append(str(item["dataCode"]))
                out["value"].append(_opt(item.get("value"), str(item["dataCode"]), where))
    return pa.table(
        {
            "period_end": pa.array(out["period_end"], pa.date32()),
            "year": pa.array(out["year"], pa.int32()),
            "quarter": pa.array(out["quarter"], pa.int32()),
            "statement": pa.array(out["statement"], pa.string()),
            "data_code": pa.array(out["data_code"], pa.string()),
            "value": pa.array(out["value"], pa.float64()),
        }
    )


# --- the source -------------------------------------------------------------------------------


class TiingoSource(Source):
    """Tiingo equities: ``prices`` (raw EOD + adjClose), ``corporate_actions``, ``bars_minute``.

    Parameters
    ----------
    client:
        The shared :class:`~marketlake.sources.http.HttpClient`; default: one created on first
        use, limited to ``rate_limit`` requests/s on api.tiingo.com.
    api_key:
        Tiingo token; default ``TIINGO_API_KEY`` from the environment (read at fetch time).
    rate_limit:
        Requests per second (default 1.0: Tiingo's free tier allows 50 per hour, 1 000 per day
        with bursts; paid tiers more).
    """

    name: ClassVar[str] = "tiingo"
    datasets: ClassVar[tuple[str, ...]] = ("prices", "corporate_actions", "bars_minute")
    description: ClassVar[str] = (
        "Tiingo equities: raw daily EOD OHLCV with Tiingo's adjusted close, dividends (divCash) "
        "and splits (splitFactor), IEX-only 1-minute bars; needs TIINGO_API_KEY."
    )
    settings: ClassVar[tuple[str, ...]] = (TIINGO_KEY_ENV,)
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        api_key: str | None = None,
        rate_limit: float = 1.0,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._rate_limit = rate_limit
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TiingoSource(rate_limit={self._rate_limit})"

    def __getstate__(self) -> dict[str, Any]:  # worker processes build their own client
        return {"api_key": self._api_key, "rate_limit": self._rate_limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _make_client(self) -> HttpClient:
        from marketlake.sources.http import HttpClient

        return HttpClient(rate_limits={HOST: self._rate_limit})

    # --- I/O ------------------------------------------------------------------------------------

    def _get(self, url: str, params: Mapping[str, str | int | float], ticker: str) -> Any:
        headers = {"Authorization": f"Token {_tiingo_key(self._api_key)}"}
        try:
            return self.client.get_json(
                url, params=params, headers=headers, auth_hint=TIINGO_KEY_ENV
            )
        except NoDataError as exc:
            raise NoDataError(
                f"tiingo: no data for {ticker}: {exc}", ticker=ticker, source=self.name
            ) from None

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download what ``request`` needs (all I/O).

        Returns ``{"symbol", "daily": body | None, "iex": [body, ...], "resample": "1min"}``: one
        EOD request for ``[start, end]`` when ``prices`` or ``corporate_actions`` are wanted, and
        IEX 1-minute requests in windows of :data:`IEX_WINDOW_DAYS` days for ``bars_minute``.

        Raises
        ------
        ConfigError
            ``TIINGO_API_KEY`` is not set (before any request).
        NoDataError
            Tiingo does not know the ticker (HTTP 404).
        TransientSourceError, SourceError
            From the HTTP client (throttling after retries, 401/403 naming TIINGO_API_KEY).
        """
        _tiingo_key(self._api_key)  # a missing key is a ConfigError before any I/O
        symbol = to_tiingo_symbol(request.ticker)
        raw: dict[str, Any] = {"symbol": symbol, "daily": None, "iex": [], "resample": "1min"}
        if {"prices", "corporate_actions"} & set(request.datasets):
            params: dict[str, str | int | float] = {
                "startDate": request.start.isoformat(),
                "endDate": request.end.isoformat(),
                "format": "json",
            }
            raw["daily"] = self._get(DAILY_URL.format(symbol=symbol), params, request.ticker)
        if "bars_minute" in request.datasets:
            day = request.start
            while day <= request.end:
                upto = min(day + dt.timedelta(days=IEX_WINDOW_DAYS - 1), request.end)
                params = {
                    "startDate": day.isoformat(),
                    "endDate": upto.isoformat(),
                    "resampleFreq": "1min",
                    "columns": IEX_COLUMNS,
                }
                raw["iex"].append(self._get(IEX_URL.format(symbol=symbol), params, request.ticker))
                day = upto + dt.timedelta(days=1)
        return raw

    def metadata(self, ticker: str) -> dict[str, Any]:
        """Tiingo's metadata of ``ticker`` (I/O): see :func:`parse_metadata`.

        Raises
        ------
        ConfigError, NoDataError, SourceError
            As :meth:`fetch`.
        """
        lake = normalize_ticker(ticker)
        body = self._get(METADATA_URL.format(symbol=to_tiingo_symbol(lake)), {}, lake)
        return parse_metadata(body, f"tiingo {lake}")

    # --- parse (pure) --------------------------------------------------------------------------

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Turn Tiingo answers into ``prices``, ``corporate_actions`` and ``bars_minute`` rows.

        ``raw`` is what :meth:`fetch` returns, or one bare answer (a list of rows, e.g. a saved
        file): rows at midnight UTC are EOD rows, others IEX bars.
        """
        where = f"tiingo {request.ticker}"
        daily, iex, checked = _unpack(raw, where)
        out: dict[str, pa.Table] = {}
        if daily is not None and {"prices", "corporate_actions"} & set(request.datasets):
            plain = parse_daily_rows(daily, where)
            if not checked:
                _check_daily_spacing(plain, where)
            plain = plain.filter(_between(plain.column("date"), request.start, request.end))
            if "prices" in request.datasets:
                prices = _prices(plain, where)
                if prices.num_rows:
                    out["prices"] = prices
            if "corporate_actions" in request.datasets:
                actions = _actions(plain)
                if actions.num_rows:
                    out["corporate_actions"] = actions
        if iex and "bars_minute" in request.datasets:
            bars = self._minute_bars(iex, request, where, checked)
            if bars.num_rows:
                out["bars_minute"] = bars
        return out

    @staticmethod
    def _minute_bars(
        bodies: list[Any], request: SourceRequest, where: str, checked: bool
    ) -> pa.Table:
        parts = [parse_iex_rows(b, where) for b in bodies]
        plain = pa.concat_tables(parts) if parts else parse_iex_rows([], where)
        stamps: list[dt.datetime] = plain.column("ts").to_pylist()
        if not checked:
            _check_minute_spacing(stamps, where)
        rows: dict[dt.datetime, tuple[float, float, float, float, int]] = {}
        no_volume = no_price = 0
        for i, ts in enumerate(stamps):
            if not request.start <= ts.astimezone(_NEW_YORK).date() <= request.end:
                continue
            o, h, lo, c, v = (plain.column(k)[i].as_py() for k in plain.column_names[1:])
            if o is None or h is None or lo is None or c is None:
                no_price += 1
                continue
            if v is None:
                no_volume += 1
                continue
            rows[ts] = (o, h, lo, c, v)
        if no_volume:
            log.warning(
                "%s: left out %d IEX bar(s) without a volume (bars_minute needs it; ask with "
                "columns=%s)",
                where,
                no_volume,
                IEX_COLUMNS,
            )
        if no_price:
            log.info("%s: left out %d IEX bar(s) with a null price", where, no_price)
        keys = sorted(rows)
        cols = list(zip(*(rows[k] for k in keys), strict=True)) if keys else [()] * 5
        n = len(keys)
        return pa.table(
            {
                "ts": pa.array(keys, pa.timestamp("us", tz="UTC")),
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

    # --- files (marketlake import) ---------------------------------------------------------------

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Saved Tiingo answers -> payloads for :meth:`parse` (no network).

        Each file (``.json``, ``.csv``, gzip-compressed, or a ``.zip`` member) is one answer of
        the daily prices endpoint (JSON or ``format=csv``) or of the IEX endpoint, or a saved
        :meth:`fetch` result. The ticker is the ``symbol``/``ticker`` field of a saved fetch
        result, else the file name up to its first ``_`` or extension: ``GOOGL.json``,
        ``brk-b_daily.csv`` (-> ``BRK.B``), ``AAPL_iex_2024-01.json``. EOD rows (dates at
        midnight UTC) fill ``prices`` and ``corporate_actions``, intraday rows ``bars_minute``.
        Directories are searched for ``.json``/``.gz``/``.zip`` only: give ``.csv`` files by name.
        """
        for doc in iter_documents(paths):
            if doc.data is None:
                yield FilePayload.failed(doc.origin, doc.error or "cannot read")
                continue
            try:
                body = _load(doc.data, doc.name, doc.origin)
                ticker = _file_ticker(body, doc.name, doc.origin)
                raw, datasets = _file_payload(body, doc.origin)
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            if raw is None:
                yield FilePayload.skipped(doc.origin, "a Tiingo answer with no rows")
                continue
            yield FilePayload(doc.origin, SourceRequest(ticker, datasets, *FILE_RANGE), raw)


# --- parsing helpers ---------------------------------------------------------------------------


def _unpack(raw: Any, where: str) -> tuple[Any, list[Any], bool]:
    """(daily body or None, IEX bodies, frequency known) from a fetch result or a bare answer."""
    if isinstance(raw, Mapping) and ("daily" in raw or "iex" in raw):
        iex = raw.get("iex") or []
        if not isinstance(iex, list):
            raise SourceError(f"{where}: 'iex' must be a list of answers")
        resample = raw.get("resample", "1min")
        if iex and resample != "1min":
            raise SourceError(f"{where}: bars_minute need resampleFreq=1min, got {resample!r}")
        return raw.get("daily"), iex, True
    rows = _rows(raw, where)
    if not rows:
        return None, [], False
    if _is_daily(rows, where):
        return rows, [], False
    return None, [rows], False


def _is_daily(rows: list[Mapping[str, Any]], where: str) -> bool:
    """EOD rows are stamped at midnight UTC; IEX bars at minute times."""
    return all(_when(r.get("date"), where).time() == dt.time(0) for r in rows)


def _check_daily_spacing(plain: pa.Table, where: str) -> None:
    """Refuse a bare answer of weekly/monthly bars (``resampleFreq=weekly``) as daily prices."""
    days: list[dt.date] = plain.column("date").to_pylist()
    gaps = [(b - a).days for a, b in itertools.pairwise(days)]
    if len(gaps) >= 2 and min(gaps) >= 5:
        raise SourceError(
            f"{where}: rows are {min(gaps)}+ days apart: these are not daily bars (an answer "
            "resampled weekly or monthly?); prices need daily rows"
        )


def _check_minute_spacing(stamps: list[dt.datetime], where: str) -> None:
    """Refuse a bare IEX answer resampled coarser than one minute."""
    gaps = [int((b - a).total_seconds()) for a, b in itertools.pairwise(stamps)]
    step = math.gcd(*gaps) if gaps else 60
    if len(gaps) >= 2 and step > 60:
        raise SourceError(
            f"{where}: bars are {step // 60} minutes apart: not 1-minute bars "
            "(bars_minute needs resampleFreq=1min)"
        )


def _between(column: pa.ChunkedArray, start: dt.date, end: dt.date) -> pa.Array:
    days = column.to_pylist()
    return pa.array([start <= d <= end for d in days], pa.bool_())


def _prices(plain: pa.Table, where: str) -> pa.Table:
    keep = [
        all(plain.column(k)[i].is_valid for k in ("open", "high", "low", "close"))
        for i in range(plain.num_rows)
    ]
    dropped = keep.count(False)
    if dropped:
        log.info("%s: left out %d EOD row(s) with a null price", where, dropped)
    rows = plain.filter(pa.array(keep, pa.bool_()))
    return pa.table(
        {
            "date": rows.column("date"),
            "open": rows.column("open"),
            "high": rows.column("high"),
            "low": rows.column("low"),
            "close": rows.column("close"),
            "adj_close": rows.column("adj_close"),
            "volume": rows.column("volume").fill_null(0),
        },
        schema=PRICES.schema,
    )


def _actions(plain: pa.Table) -> pa.Table:
    rows: list[tuple[dt.date, str, float, float | None, float | None, str | None]] = []
    days = plain.column("date").to_pylist()
    divs = plain.column("div_cash").to_pylist()
    splits = plain.column("split_factor").to_pylist()
    for day, div, factor in zip(days, divs, splits, strict=True):
        if div is not None and div > 0:
            rows.append((day, "dividend", div, None, None, DIVIDEND_CURRENCY))
        if factor is not None and factor != 1.0:
            ratio = split_ratio(factor)
            num, den = ratio if ratio is not None else (None, None)
            rows.append((day, "split", factor, num, den, None))
    rows.sort(key=lambda r: (r[0], r[1]))
    cols = list(zip(*rows, strict=True)) if rows else [()] * 6
    return pa.table(
        {
            "ex_date": pa.array(cols[0], pa.date32()),
            "action": pa.array(cols[1], pa.string()),
            "value": pa.array(cols[2], pa.float64()),
            "split_numerator": pa.array(cols[3], pa.float64()),
            "split_denominator": pa.array(cols[4], pa.float64()),
            "currency": pa.array(cols[5], pa.string()),
        },
        schema=CORPORATE_ACTIONS.schema,
    )


# --- file helpers ------------------------------------------------------------------------------


def _load(data: bytes, name: str, origin: str) -> Any:
    """A JSON answer, or a CSV answer as a list of row dicts (strings)."""
    if name.lower().endswith(".csv"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SourceError(f"{origin}: not a CSV file (not UTF-8 text)") from None
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "date" not in reader.fieldnames:
            raise SourceError(f"{origin}: a Tiingo CSV answer needs a 'date' column")
        return list(reader)
    return load_json(data, origin)


def _file_ticker(body: Any, name: str, origin: str) -> str:
    if isinstance(body, Mapping):
        for key in ("symbol", "ticker"):
            if isinstance(body.get(key), str) and body[key]:
                return normalize_ticker(body[key])
    stem = name
    for suffix in (".gz", ".json", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = stem.split("_", 1)[0]
    try:
        return normalize_ticker(stem)
    except MarketlakeError:
        raise SourceError(
            f"{origin}: cannot tell the ticker from the file name; name Tiingo files "
            "TICKER.json or TICKER_anything.json/csv"
        ) from None


def _file_payload(body: Any, origin: str) -> tuple[Any, tuple[str, ...]]:
    """(raw for parse or None when empty, datasets) of one saved answer."""
    if isinstance(body, Mapping) and ("daily" in body or "iex" in body):
        _unpack(body, origin)  # validates the shape
        datasets: tuple[str, ...] = ()
        if body.get("daily"):
            datasets += ("prices", "corporate_actions")
        if body.get("iex"):
            datasets += ("bars_minute",)
        return (body if datasets else None), datasets
    rows = _rows(body, origin)
    if not rows:
        return None, ()
    if _is_daily(rows, origin):
        return rows, ("prices", "corporate_actions")
    return rows, ("bars_minute",)
