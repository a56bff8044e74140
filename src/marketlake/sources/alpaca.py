"""Alpaca market data API v2: one-minute stock bars -> ``bars_minute``.

``GET https://data.alpaca.markets/v2/stocks/bars?symbols=AAPL&timeframe=1Min&start=..&end=..
&adjustment=raw&feed=iex&limit=10000&sort=asc[&page_token=..]`` answers::

    {"bars": {"AAPL": [{"t": "2022-01-03T09:00:00Z", "o": 177.83, "h": 177.83, "l": 177.65,
                        "c": 177.65, "v": 1118, "n": 65, "vw": 178.235733}, ...]},
     "next_page_token": "QUFQTHxNfDIwMjItMDEtMDNUMDk6MDA6MDAuMDAwMDAwMDAwWg==" | null}

(the single-symbol endpoint ``/v2/stocks/{symbol}/bars`` answers ``{"bars": [...], "symbol":
"AAPL", "next_page_token": ...}``; :meth:`AlpacaSource.parse` reads both shapes). A symbol
with no bars in the window is absent from ``bars`` (or ``bars`` is ``{}``/``null``): no rows,
not an error.

* **Credentials:** the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers from the
  ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` environment variables (or the constructor). The
  HTTP client shows credential headers as ``***`` in every message and log line.
* **Feed:** ``ALPACA_FEED`` (default ``iex``, the free plan; ``sip`` = all US exchanges, paid).
* **Range:** ``start``/``end`` of a request are New York session dates; ``fetch`` asks from
  ``start`` 00:00 to ``end`` + 1 day 00:00 New York time, and ``parse`` keeps bars whose New York
  date is in ``[start, end]``. Alpaca's bars include pre- and post-market minutes (04:00-20:00
  New York); they are stored as served.
* **Values:** ``ts`` = ``t`` (bar start, UTC), raw prices (``adjustment=raw``), ``volume`` =
  ``v`` (shares), ``vwap`` = ``vw``, ``trade_count`` = ``n``.
* **Pagination:** at most 10 000 bars per page; ``fetch`` follows ``next_page_token`` until it
  is null (a token seen twice is an error, never a loop).
* **Rate limit:** 200 requests/minute on the free plan (``rate_limit`` to change it).

Symbols: Alpaca spells share classes with a dot like the lake (``BRK.B``), so lake tickers are
sent unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import ConfigError, MarketlakeError, NoDataError, SourceError
from marketlake.schemas.datasets import BARS_MINUTE
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import iter_documents, load_json

if TYPE_CHECKING:  # httpx is imported only when a client is needed
    from marketlake.sources.http import HttpClient

__all__ = [
    "BARS_URL",
    "DEFAULT_RATE_LIMIT",
    "FEEDS",
    "KEY_ID_ENV",
    "SECRET_KEY_ENV",
    "AlpacaSource",
]

BARS_URL = "https://data.alpaca.markets/v2/stocks/bars"
HOST = "data.alpaca.markets"
KEY_ID_ENV = "APCA_API_KEY_ID"
SECRET_KEY_ENV = "APCA_API_SECRET_KEY"
FEED_ENV = "ALPACA_FEED"
FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats")
"""Values Alpaca accepts for ``feed`` on stock bars."""
DEFAULT_RATE_LIMIT = 200 / 60
"""Requests per second: the free plan allows 200 requests per minute."""
PAGE_LIMIT = 10_000
MAX_PAGES = 10_000
"""Safety net: more pages than this for one request is a vendor bug, not data."""

_NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _credentials(key_id: str | None, secret_key: str | None) -> tuple[str, str]:
    key = (key_id or os.environ.get(KEY_ID_ENV) or "").strip()
    secret = (secret_key or os.environ.get(SECRET_KEY_ENV) or "").strip()
    missing = [n for n, v in ((KEY_ID_ENV, key), (SECRET_KEY_ENV, secret)) if not v]
    if missing:
        raise ConfigError(
            f"alpaca: {' and '.join(missing)} not set: the Alpaca market data API needs both "
            f"{KEY_ID_ENV} and {SECRET_KEY_ENV} (create free paper-trading keys at "
            "https://app.alpaca.markets -> API Keys)"
        )
    return key, secret


def _check_feed(feed: str | None) -> str:
    value = (feed or os.environ.get(FEED_ENV) or "iex").strip().lower()
    if value not in FEEDS:
        raise ConfigError(
            f"alpaca: feed {value!r} (from {FEED_ENV} or the feed option) is not one of "
            f"{', '.join(FEEDS)}; iex is free, sip needs a paid subscription"
        )
    return value


class AlpacaSource(Source):
    """Alpaca market data v2 stock bars -> ``bars_minute`` (see the module docstring).

    Parameters
    ----------
    client:
        The HTTP client (tests pass one on an ``httpx.MockTransport``); default: one created on
        first use, limited to ``rate_limit`` requests/second on ``data.alpaca.markets``.
    key_id, secret_key:
        Credentials; default ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (a
        :class:`ConfigError` naming both when missing, raised on the first fetch).
    feed:
        ``iex`` (default, free), ``sip``, ...; default ``ALPACA_FEED``.
    rate_limit:
        Requests per second for the default client (200/minute by default).
    """

    name: ClassVar[str] = "alpaca"
    datasets: ClassVar[tuple[str, ...]] = ("bars_minute",)
    description: ClassVar[str] = (
        "Alpaca market data v2: raw 1-minute US stock bars with VWAP and trade counts "
        "(feed iex or sip); needs APCA_API_KEY_ID and APCA_API_SECRET_KEY."
    )
    settings: ClassVar[tuple[str, ...]] = (KEY_ID_ENV, SECRET_KEY_ENV, FEED_ENV)
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        key_id: str | None = None,
        secret_key: str | None = None,
        feed: str | None = None,
        rate_limit: float = DEFAULT_RATE_LIMIT,
    ) -> None:
        self._client = client
        self._key_id = key_id
        self._secret_key = secret_key
        self.feed = _check_feed(feed)
        self._rate_limit = rate_limit
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the credentials
        return f"AlpacaSource(feed={self.feed!r})"

    def __getstate__(self) -> dict[str, Any]:  # worker processes build their own client
        return {
            "key_id": self._key_id,
            "secret_key": self._secret_key,
            "feed": self.feed,
            "rate_limit": self._rate_limit,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _make_client(self) -> HttpClient:
        from marketlake.sources.http import HttpClient

        return HttpClient(rate_limits={HOST: self._rate_limit})

    # --- fetch (the only I/O) ----------------------------------------------------------------

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download every page of 1-minute bars for ``request``.

        Returns ``{"symbol": symbol, "pages": [body, ...]}``.

        Raises
        ------
        ConfigError
            Credentials missing.
        SourceError
            401/403 (wrong keys, or ``sip`` without a subscription), malformed pages, a
            repeated page token.
        TransientSourceError
            Throttling or server errors after the client's retries.
        """
        key, secret = _credentials(self._key_id, self._secret_key)
        headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
        symbol = request.ticker
        lo = dt.datetime.combine(request.start, dt.time(), _NEW_YORK).astimezone(dt.UTC)
        hi = dt.datetime.combine(request.end + dt.timedelta(days=1), dt.time(), _NEW_YORK)
        params: dict[str, str | int | float] = {
            "symbols": symbol,
            "timeframe": "1Min",
            "start": lo.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": hi.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "adjustment": "raw",
            "feed": self.feed,
            "limit": PAGE_LIMIT,
            "sort": "asc",
        }
        pages: list[Any] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(MAX_PAGES):
            page_params = dict(params)
            if token is not None:
                page_params["page_token"] = token
            try:
                body = self.client.get_json(
                    BARS_URL,
                    params=page_params,
                    headers=headers,
                    auth_hint=f"{KEY_ID_ENV} / {SECRET_KEY_ENV} (and that feed={self.feed} "
                    "is in your Alpaca plan)",
                )
            except NoDataError as exc:
                raise NoDataError(
                    f"alpaca: no data for {symbol}: {exc}", ticker=symbol, source=self.name
                ) from None
            pages.append(body)
            token = body.get("next_page_token") if isinstance(body, Mapping) else None
            if not token:
                return {"symbol": symbol, "pages": pages}
            if not isinstance(token, str) or token in seen:
                raise SourceError(
                    f"alpaca {symbol}: next_page_token {token!r} repeats or is not a string; "
                    "stopping instead of looping",
                    ticker=symbol,
                )
            seen.add(token)
        raise SourceError(
            f"alpaca {symbol}: more than {MAX_PAGES} pages of bars; narrow the date range",
            ticker=symbol,
        )

    # --- parse (pure) --------------------------------------------------------------------------

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Turn bar pages into ``bars_minute`` rows (New York dates in ``[start, end]``).

        ``raw`` is what :meth:`fetch` returns or one bare page (multi- or single-symbol shape).
        """
        if "bars_minute" not in request.datasets:
            return {}
        symbol = request.ticker
        if isinstance(raw, Mapping) and "pages" in raw:
            pages = raw["pages"]
            symbol = str(raw.get("symbol") or symbol)
            if not isinstance(pages, list):
                raise SourceError(f"alpaca {symbol}: 'pages' must be a list", ticker=symbol)
        else:
            pages = [raw]
        rows: dict[int, tuple[float, float, float, float, int, float | None, int | None]] = {}
        for page in pages:
            for bar in _page_bars(page, symbol):
                ts, values = _bar(bar, symbol)
                day = dt.datetime.fromtimestamp(ts / 1e6, _NEW_YORK).date()
                if request.start <= day <= request.end:
                    rows[ts] = values
        if not rows:
            return {}
        stamps = sorted(rows)
        cols = list(zip(*(rows[t] for t in stamps), strict=True))
        table = pa.table(
            {
                "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
                "open": pa.array(cols[0], pa.float64()),
                "high": pa.array(cols[1], pa.float64()),
                "low": pa.array(cols[2], pa.float64()),
                "close": pa.array(cols[3], pa.float64()),
                "volume": pa.array(cols[4], pa.int64()),
                "vwap": pa.array(cols[5], pa.float64()),
                "trade_count": pa.array(cols[6], pa.int64()),
            },
            schema=BARS_MINUTE.schema,
        )
        return {"bars_minute": table}

    # --- files (``marketlake import``) --------------------------------------------------------

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Saved ``/v2/stocks/bars`` pages -> one payload per symbol (no network).

        Each file (``.json``, gzip-compressed, or a ``.zip`` member) is one page as Alpaca
        answered it: the multi-symbol shape ``{"bars": {"AAPL": [...], "MSFT": [...]}}`` gives a
        payload per symbol key, the single-symbol shape ``{"bars": [...], "symbol": "AAPL"}`` one
        for ``symbol`` (a saved :meth:`fetch` result ``{"symbol", "pages"}`` is read too). Several
        pages of a symbol in several files add up. A page with no bars at all is skipped (not an
        error); a file that is not a bars page, or a single-symbol page without ``symbol``,
        fails alone with a message naming it.
        """
        for doc in iter_documents(paths):
            if doc.data is None:
                yield FilePayload.failed(doc.origin, doc.error or "cannot read")
                continue
            try:
                body = load_json(doc.data, doc.origin)
                found = _file_symbols(body, doc.origin)
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            if not found:
                yield FilePayload.skipped(doc.origin, "an Alpaca bars page with no bars")
            for ticker, raw in found:
                request = SourceRequest(ticker, self.datasets, *FILE_RANGE)
                yield FilePayload(doc.origin, request, raw)


def _file_symbols(body: Any, origin: str) -> list[tuple[str, Any]]:
    """``(lake ticker, raw for parse)`` per symbol of one saved bars page (or fetch result)."""
    if isinstance(body, Mapping) and "pages" in body and "bars" not in body:
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise SourceError(f"{origin}: a saved Alpaca fetch result needs a 'symbol' string")
        ticker = normalize_ticker(symbol)
        return [(ticker, {**body, "symbol": ticker})]
    if not isinstance(body, Mapping) or "bars" not in body:
        keys = sorted(map(str, body))[:8] if isinstance(body, Mapping) else type(body).__name__
        raise SourceError(
            f"{origin}: not an Alpaca /v2/stocks/bars page (expected {{'bars': ...}}; got {keys})"
        )
    bars = body["bars"]
    if bars is None:
        return []
    if isinstance(bars, list):
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise SourceError(
                f"{origin}: a single-symbol Alpaca bars page ('bars' is a list) needs its "
                "'symbol' to tell the ticker"
            )
        ticker = normalize_ticker(symbol)
        return [(ticker, {"bars": {ticker: bars}})] if bars else []
    if not isinstance(bars, Mapping):
        raise SourceError(f"{origin}: Alpaca 'bars' must be a dict of symbols or a list")
    out: dict[str, list[Any]] = {}
    for symbol, rows in bars.items():
        if not isinstance(rows, list):
            raise SourceError(f"{origin}: Alpaca bars of {symbol!r} must be a list")
        if rows:
            out.setdefault(normalize_ticker(symbol), []).extend(rows)
    return [(t, {"bars": {t: rows}}) for t, rows in out.items()]


def _page_bars(page: Any, symbol: str) -> list[Any]:
    """The bar list of ``symbol`` in one page (multi-symbol dict or single-symbol list)."""
    if not isinstance(page, Mapping) or "bars" not in page:
        keys = sorted(map(str, page))[:8] if isinstance(page, Mapping) else type(page).__name__
        raise SourceError(
            f"alpaca {symbol}: not an Alpaca bars response (expected a 'bars' key; got {keys})",
            ticker=symbol,
        )
    bars = page["bars"]
    if bars is None:
        return []
    if isinstance(bars, Mapping):
        bars = bars.get(symbol) or []
    if not isinstance(bars, list):
        raise SourceError(f"alpaca {symbol}: 'bars' must be a list or a dict", ticker=symbol)
    return bars


def _number(value: Any, name: str, symbol: str, bar: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SourceError(
            f"alpaca {symbol}: bar field {name!r} must be a finite number, got {value!r} in "
            f"{bar!r}"[:300],
            ticker=symbol,
        )
    return float(value)


def _bar(
    bar: Any, symbol: str
) -> tuple[int, tuple[float, float, float, float, int, float | None, int | None]]:
    if not isinstance(bar, Mapping):
        raise SourceError(f"alpaca {symbol}: malformed bar {bar!r}"[:300], ticker=symbol)
    stamp = bar.get("t")
    try:
        when = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        when = None
    if not isinstance(stamp, str) or when is None or when.tzinfo is None:
        raise SourceError(
            f"alpaca {symbol}: bar time {stamp!r} is not an RFC 3339 UTC timestamp",
            ticker=symbol,
        )
    ts = int(when.timestamp()) * 1_000_000 + when.microsecond
    o, h, lo, c = (_number(bar.get(k), k, symbol, bar) for k in ("o", "h", "l", "c"))
    volume = _number(bar.get("v"), "v", symbol, bar)
    vwap = _number(bar["vw"], "vw", symbol, bar) if bar.get("vw") is not None else None
    count = int(_number(bar["n"], "n", symbol, bar)) if bar.get("n") is not None else None
    return ts, (o, h, lo, c, round(volume), vwap, count)
