"""Crypto OHLCV per exchange -> ``crypto_bars``: Binance, Kraken, Coinbase and Tiingo crypto.

One market trades on several venues, so ``crypto_bars`` is keyed by ``(ts, exchange)`` within a
pair, and the pair is the lake ticker ``BASE-QUOTE`` in upper case (``BTC-USD``, ``ETH-USDT``).
``USD`` and ``USDT`` are different quote assets, hence different pairs: nothing converts one into
the other. ``exchange`` is the lower-case venue id (``binance``, ``kraken``, ``coinbase``; Tiingo's
exchange codes lower-cased, e.g. ``gdax``, ``bitfinex``, plus ``tiingo`` for Tiingo's own
cross-exchange aggregate).

Pair spelling per venue (:func:`venue_symbol`):

============  ===========  ==============================================================
lake          venue        rule
============  ===========  ==============================================================
``BTC-USDT``  Binance      ``BTCUSDT`` (base + quote). Binance.com lists no ``BTCUSD``: ask for
                           ``BTC-USDT`` (a request for ``BTC-USD`` is "no data").
``BTC-USD``   Kraken       ``XBTUSD`` in requests (BTC -> XBT, DOGE -> XDG); answers key the
                           rows by Kraken's internal name (``XXBTZUSD``), read whatever it is.
``BTC-USD``   Coinbase     ``BTC-USD`` (the product id is the lake pair).
``BTC-USD``   Tiingo       ``btcusd`` (lower case, no separator).
============  ===========  ==============================================================

Bars: ``ts`` is the bar start in UTC; ``open/high/low/close`` in the quote asset, ``volume`` in the
base asset (fractional), ``quote_volume`` in the quote asset and ``trade_count`` when the venue
gives them (Binance: both; Kraken: trade count; Coinbase: neither; Tiingo: both). Request dates are
UTC dates: ``parse`` keeps bars whose UTC date is in ``[start, end]``. A bar that had not closed
when it was fetched (``fetch`` records ``fetched_at``; Kraken marks it by its ``last`` cursor) is
left out, so the next run stores it once complete.

Interval: each source collects one bar interval (``interval="1d"`` by default, ``"1h"`` or
``"1m"``). ``crypto_bars`` has no interval column, so one lake should hold one interval.

Each source's ``fetch`` is its only I/O (paginating as the venue requires) and returns
``{"pair", "symbol", "interval", "fetched_at", "pages": [body, ...]}``; ``parse`` is pure and also
reads one bare venue body (a response saved to a file). ``read_files`` (``marketlake import``)
tells the pair of a saved body: Tiingo's ``baseCurrency``/``quoteCurrency``, Kraken's ``result``
key; Binance klines and Coinbase candles do not carry it, so the file (or its directory, or its
zip archive) is named after it (``BTCUSDT-1d.json``, ``BTC-USD.json``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import (
    ConfigError,
    InvalidTickerError,
    MarketlakeError,
    NoDataError,
    SourceError,
    TransientSourceError,
)
from marketlake.schemas.datasets import CRYPTO_BARS
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import Document, iter_documents, load_json

if TYPE_CHECKING:  # httpx is imported only when a client is needed
    from marketlake.sources.http import HttpClient

__all__ = [
    "INTERVALS",
    "BinanceSource",
    "CoinbaseSource",
    "KrakenSource",
    "Pair",
    "TiingoCryptoSource",
    "kraken_pair",
    "parse_pair",
    "venue_symbol",
]

log = logging.getLogger(__name__)

INTERVALS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}
"""Supported bar intervals and their length in seconds."""
MAX_PAGES = 100_000
"""Safety net against a venue cursor that never advances."""

_KRAKEN_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}
_PAIR_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

# one bar: open, high, low, close, volume, quote_volume, trade_count
_Row = tuple[float, float, float, float, float, float | None, int | None]


@dataclass(frozen=True)
class Pair:
    """A crypto pair: ``base`` traded against ``quote`` (upper case)."""

    base: str
    quote: str

    def __str__(self) -> str:
        return f"{self.base}-{self.quote}"


def parse_pair(ticker: str) -> Pair:
    """``"btc-usd"`` -> ``Pair("BTC", "USD")``.

    Raises
    ------
    InvalidTickerError
        When ``ticker`` is not ``BASE-QUOTE`` with letters and digits on each side.
    """
    parts = ticker.strip().upper().split("-")
    if len(parts) != 2 or not all(p and set(p) <= _PAIR_PART for p in parts):
        raise InvalidTickerError(
            f"crypto pair {ticker!r} must be BASE-QUOTE, e.g. BTC-USD or ETH-USDT "
            "(USD and USDT are different pairs)",
            ticker=ticker,
        )
    return Pair(parts[0], parts[1])


def venue_symbol(exchange: str, pair: Pair | str) -> str:
    """The venue's spelling of a lake pair (see the module docstring's table)."""
    p = parse_pair(pair) if isinstance(pair, str) else pair
    if exchange == "binance":
        return f"{p.base}{p.quote}"
    if exchange == "kraken":
        return f"{_KRAKEN_ASSETS.get(p.base, p.base)}{_KRAKEN_ASSETS.get(p.quote, p.quote)}"
    if exchange == "coinbase":
        return f"{p.base}-{p.quote}"
    if exchange == "tiingo":
        return f"{p.base}{p.quote}".lower()
    raise ValueError(f"unknown exchange {exchange!r}")


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: Any, what: str, where: str) -> float:
    """A finite float from a JSON number or numeric string (venues send prices as strings)."""
    if isinstance(value, bool):
        f = math.nan
    elif isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            f = math.nan
    else:
        f = math.nan
    if not math.isfinite(f):
        raise SourceError(f"{where}: {what} must be a finite number, got {value!r}")
    return f


def _opt_num(value: Any, what: str, where: str) -> float | None:
    return None if value is None else _num(value, what, where)


def _opt_int(value: Any, what: str, where: str) -> int | None:
    return None if value is None else round(_num(value, what, where))


# --- pairs of saved files (``marketlake import``) ----------------------------------------------

_BINANCE_QUOTES = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "USD", "BTC", "ETH", "BNB", "XRP",
    "TRX", "DOGE", "EUR", "GBP", "TRY", "BRL", "JPY", "AUD", "RUB", "UAH", "ZAR", "PLN", "RON",
    "ARS", "MXN", "COP", "CZK", "IDR", "NGN",
)  # fmt: skip
_KRAKEN_QUOTES = (
    "ZUSD", "ZEUR", "ZGBP", "ZJPY", "ZCAD", "ZAUD", "ZCHF", "XXBT", "XETH", "PYUSD", "USDT",
    "USDC", "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "AED", "XBT", "ETH", "DAI", "DOT",
)  # fmt: skip
_FROM_KRAKEN = {v: k for k, v in _KRAKEN_ASSETS.items()}
_COINBASE_QUOTES = (
    "USD", "USDC", "USDT", "EUR", "GBP", "BTC", "ETH", "DAI", "SOL", "PYUSD", "DOGE",
)  # fmt: skip
_NAME_TOKENS = re.compile(r"[-_ ]+")
_DASHED = re.compile(r"^([A-Z0-9]+)-([A-Z0-9]+)(?:$|[-_ ])")


def _split_symbol(symbol: str, quotes: Sequence[str]) -> tuple[str, str] | None:
    """``"BTCUSDT"`` -> ``("BTC", "USDT")`` by the longest known quote-asset suffix."""
    for quote in sorted(quotes, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return None


def _name_stems(doc: Document) -> list[str]:
    """Names that may carry a pair, nearest first: the file (or zip member), its directory,
    the zip archive; each without its extensions (``BTC-USD-1d.json.gz`` -> ``BTC-USD-1d``)."""
    names = [doc.name]
    if doc.member is not None:
        parent = PurePosixPath(doc.member).parent.name
        if parent:
            names.append(parent)
        if doc.archive is not None:
            names.append(doc.archive.name)
    else:
        names.append(Path(doc.origin).parent.name)
    return [n.split(".", 1)[0] for n in names if n and n.split(".", 1)[0]]


def _dashed_pair(stem: str, quotes: Sequence[str]) -> Pair | None:
    """The pair at the start of a name, ``BTC-USD`` / ``btc-usd-1d-2024`` (any case; the quote
    must be one of ``quotes``, the base must hold a letter)."""
    match = _DASHED.match(stem.upper())
    if match is None or match.group(2) not in quotes or match.group(1).isdigit():
        return None
    return Pair(match.group(1), match.group(2))


def _binance_name_pair(stem: str) -> Pair | None:
    """``BTCUSDT...`` (upper case, as Binance spells it) or ``BTC-USDT...`` -> the pair."""
    dashed = _dashed_pair(stem, _BINANCE_QUOTES)
    if dashed is not None:
        return dashed
    head = _NAME_TOKENS.split(stem)[0]
    if not head.isalnum() or head != head.upper():
        return None
    split = _split_symbol(head, _BINANCE_QUOTES)
    return Pair(*split) if split else None


def _coinbase_name_pair(stem: str) -> Pair | None:
    """``BTC-USD...`` (a Coinbase product id, any case) -> the pair."""
    return _dashed_pair(stem, _COINBASE_QUOTES)


def _pair_from_names(doc: Document, read: Callable[[str], Pair | None], rule: str) -> Pair:
    """The first pair ``read`` finds in the names of ``doc`` (see :func:`_name_stems`)."""
    for stem in _name_stems(doc):
        pair = read(stem)
        if pair is not None:
            return pair
    raise SourceError(f"{doc.origin}: the body does not say its pair, so {rule}")


def kraken_pair(key: str) -> Pair:
    """Kraken's pair name (as keyed in OHLC results) -> the lake pair.

    ``XXBTZUSD`` -> ``BTC-USD``, ``XETHXXBT`` -> ``ETH-BTC``, ``XBTUSDT`` -> ``BTC-USDT``,
    ``XDGUSD`` -> ``DOGE-USD``, ``SOLUSD`` -> ``SOL-USD``, ``USDTZUSD`` -> ``USDT-USD``.

    Raises
    ------
    SourceError
        No known quote asset ends the name.
    """
    k = key.strip().upper()
    if len(k) == 8 and k[0] in "XZ" and k[4] in "XZ" and k.isalpha():
        base, quote = k[1:4], k[5:]  # legacy names: X + 3-letter asset, X/Z + 3-letter asset
    else:
        split = _split_symbol(k, _KRAKEN_QUOTES) if k.isalnum() else None
        if split is None:
            raise SourceError(f"cannot tell the pair of Kraken's {key!r} (no known quote asset)")
        base, quote = split
        if len(quote) == 4 and quote[0] in "XZ" and quote != "USDT" and quote != "USDC":
            quote = quote[1:]
    return parse_pair(f"{_FROM_KRAKEN.get(base, base)}-{_FROM_KRAKEN.get(quote, quote)}")


class _Rows:
    """Collects bars keyed by (ts seconds, exchange), keeping those inside the request."""

    def __init__(self, request: SourceRequest, interval_s: int, fetched_at: float | None) -> None:
        self.lo = _epoch(request.start)
        self.hi = _epoch(request.end + dt.timedelta(days=1))
        self.interval_s = interval_s
        self.fetched_at = fetched_at
        self.rows: dict[tuple[int, str], _Row] = {}
        self.open_bars = 0

    def add(self, ts: int, exchange: str, row: _Row) -> None:
        if not self.lo <= ts < self.hi:
            return
        if self.fetched_at is not None and ts + self.interval_s > self.fetched_at:
            self.open_bars += 1  # still being built when fetched
            return
        self.rows[(ts, exchange)] = row

    def result(self, name: str, ticker: str) -> dict[str, pa.Table]:
        if self.open_bars:
            log.info("%s %s: left out %d bar(s) still open", name, ticker, self.open_bars)
        if not self.rows:
            return {}
        keys = sorted(self.rows)
        cols = list(zip(*(self.rows[k] for k in keys), strict=True))
        table = pa.table(
            {
                "ts": pa.array([k[0] * 1_000_000 for k in keys], pa.timestamp("us", tz="UTC")),
                "exchange": pa.array([k[1] for k in keys], pa.string()),
                "open": pa.array(cols[0], pa.float64()),
                "high": pa.array(cols[1], pa.float64()),
                "low": pa.array(cols[2], pa.float64()),
                "close": pa.array(cols[3], pa.float64()),
                "volume": pa.array(cols[4], pa.float64()),
                "quote_volume": pa.array(cols[5], pa.float64()),
                "trade_count": pa.array(cols[6], pa.int64()),
            },
            schema=CRYPTO_BARS.schema,
        )
        return {"crypto_bars": table}


class _CryptoSource(Source):
    """Shared plumbing: interval, lazily created rate-limited client, picklable state."""

    datasets: ClassVar[tuple[str, ...]] = ("crypto_bars",)
    network: ClassVar[bool] = True
    exchange: ClassVar[str]
    host: ClassVar[str]
    default_rate_limit: ClassVar[float]

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        interval: str = "1d",
        rate_limit: float | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        if interval not in INTERVALS:
            raise ConfigError(
                f"{self.name}: interval {interval!r} is not one of {', '.join(INTERVALS)}"
            )
        self._client = client
        self.interval = interval
        self._rate_limit = self.default_rate_limit if rate_limit is None else rate_limit
        self._now = now or time.time
        self._lock = threading.Lock()

    @property
    def interval_s(self) -> int:
        """The bar length in seconds."""
        return INTERVALS[self.interval]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(interval={self.interval!r})"

    def _state(self) -> dict[str, Any]:
        return {"interval": self.interval, "rate_limit": self._rate_limit}

    def __getstate__(self) -> dict[str, Any]:  # worker processes build their own client
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _make_client(self) -> HttpClient:
        """Limited to the venue's public rate."""
        from marketlake.sources.http import HttpClient

        return HttpClient(rate_limits={self.host: self._rate_limit})

    def _raw(self, pair: Pair, symbol: str, pages: list[Any], fetched_at: float) -> dict[str, Any]:
        return {
            "pair": str(pair),
            "symbol": symbol,
            "interval": self.interval,
            "fetched_at": fetched_at,
            "pages": pages,
        }

    # --- files (``marketlake import``) ---------------------------------------------------------

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Saved venue responses -> one payload per pair (no network; see each source).

        Every file (``.json``, gzip-compressed, or a ``.zip`` member) is one bare venue body, or
        a saved :meth:`fetch` result (``{"pair", "pages", "fetched_at", ...}``: the pair is its
        ``pair``). A file whose pair cannot be told, or that is not the venue's shape, fails
        alone with a message naming it. A bare body carries no fetch time, so a bar that was
        still open when the body was saved is kept (Kraken excepted: its ``last`` marks it).
        """
        for doc in iter_documents(paths):
            if doc.data is None:
                yield FilePayload.failed(doc.origin, doc.error or "cannot read")
                continue
            try:
                body = load_json(doc.data, doc.origin)
                if isinstance(body, Mapping) and {"pair", "pages", "fetched_at"} <= set(body):
                    found = [(parse_pair(str(body["pair"])), body)]
                else:
                    found = self._file_pairs(doc, body)
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            for pair, raw in found:
                request = SourceRequest(str(pair), self.datasets, *FILE_RANGE)
                yield FilePayload(doc.origin, request, raw)

    def _file_pairs(self, doc: Document, body: Any) -> list[tuple[Pair, Any]]:
        """``(pair, raw for parse)`` per pair of one saved bare body.

        Raises
        ------
        MarketlakeError
            The body is not the venue's shape, or its pair cannot be told.
        """
        raise SourceError(f"{doc.origin}: {self.name} cannot read saved responses")

    def _unpack(self, request: SourceRequest, raw: Any) -> tuple[list[Any], int, float | None]:
        """(pages, interval seconds, fetched_at) from :meth:`fetch`'s dict or one bare body."""
        if isinstance(raw, Mapping) and "pages" in raw and "fetched_at" in raw:
            pages = raw["pages"]
            interval = raw.get("interval", self.interval)
            fetched = raw.get("fetched_at")
            if not isinstance(pages, list) or interval not in INTERVALS:
                raise SourceError(
                    f"{self.name} {request.ticker}: malformed fetch result (pages must be a "
                    f"list, interval one of {', '.join(INTERVALS)})",
                    ticker=request.ticker,
                )
            at = float(fetched) if isinstance(fetched, (int, float)) else None
            return pages, INTERVALS[interval], at
        return [raw], self.interval_s, None

    def _window(self, request: SourceRequest) -> tuple[int, int, float]:
        """(first bar start, end exclusive, now) in epoch seconds; the end is capped at now."""
        now = self._now()
        lo = _epoch(request.start)
        hi = min(_epoch(request.end + dt.timedelta(days=1)), int(now))
        return lo, hi, now


# --- Binance ---------------------------------------------------------------------------------

BINANCE_URL = "https://api.binance.com/api/v3/klines"
BINANCE_LIMIT = 1000


class BinanceSource(_CryptoSource):
    """Binance spot klines -> ``crypto_bars`` (exchange ``binance``).

    ``GET /api/v3/klines?symbol=BTCUSDT&interval=1d&startTime=ms&endTime=ms&limit=1000`` answers
    up to 1 000 klines ``[openTime ms, open, high, low, close, volume, closeTime ms,
    quoteAssetVolume, numberOfTrades, takerBuyBase, takerBuyQuote, ignore]`` (numbers as strings),
    oldest first; ``fetch`` pages forward from the last open time. No key needed.
    """

    name: ClassVar[str] = "binance"
    exchange: ClassVar[str] = "binance"
    host: ClassVar[str] = "api.binance.com"
    default_rate_limit: ClassVar[float] = 5.0
    description: ClassVar[str] = (
        "Binance spot klines (1d/1h/1m) for pairs such as BTC-USDT: OHLC, base and quote "
        "volume, trade count; no key needed."
    )

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Page through the klines of ``request`` (all I/O).

        Raises
        ------
        NoDataError
            Binance does not list the symbol (HTTP 400 code -1121).
        """
        pair = parse_pair(request.ticker)
        symbol = venue_symbol("binance", pair)
        lo, hi, now = self._window(request)
        step_ms = self.interval_s * 1000
        cursor, end_ms = lo * 1000, hi * 1000 - 1
        pages: list[Any] = []
        for _ in range(MAX_PAGES):
            if cursor > end_ms:
                break
            params: dict[str, str | int | float] = {
                "symbol": symbol,
                "interval": self.interval,
                "startTime": cursor,
                "endTime": end_ms,
                "limit": BINANCE_LIMIT,
            }
            try:
                body = self.client.get_json(BINANCE_URL, params=params)
            except NoDataError as exc:
                raise NoDataError(
                    f"binance: no data for {symbol}: {exc}", ticker=str(pair)
                ) from None
            except SourceError as exc:
                if "-1121" in str(exc) or "Invalid symbol" in str(exc):
                    hint = (
                        " (Binance quotes BTC in USDT: try BTC-USDT)" if pair.quote == "USD" else ""
                    )
                    raise NoDataError(
                        f"binance has no market {symbol} for {pair}{hint}", ticker=str(pair)
                    ) from None
                raise
            if not isinstance(body, list):
                raise SourceError(
                    f"binance {symbol}: expected a list of klines, got {type(body).__name__}",
                    ticker=str(pair),
                )
            if not body:
                break
            pages.append(body)
            last_open = body[-1][0] if isinstance(body[-1], list) and body[-1] else None
            if len(body) < BINANCE_LIMIT or not isinstance(last_open, int):
                break
            if last_open + step_ms <= cursor:
                raise SourceError(
                    f"binance {symbol}: the kline cursor did not advance", ticker=str(pair)
                )
            cursor = last_open + step_ms
        return self._raw(pair, symbol, pages, now)

    def _file_pairs(self, doc: Document, body: Any) -> list[tuple[Pair, Any]]:
        """A saved klines array: its pair comes from the file name (klines do not carry it).

        The name (else its directory's, else the zip archive's) starts with the Binance symbol
        in upper case, ``BTCUSDT`` / ``BTCUSDT-1d-2024-04`` (split at the longest known quote
        asset: USDT, USDC, FDUSD, BTC, ETH, BNB, EUR, TRY, ...), or with the lake pair,
        ``BTC-USDT...`` (any case).
        """
        if not isinstance(body, list):
            kind = sorted(map(str, body))[:8] if isinstance(body, Mapping) else type(body).__name__
            raise SourceError(
                f"{doc.origin}: not a Binance klines array (expected [[openTime, open, ...], "
                f"...]; got {kind})"
            )
        rule = (
            "name the file (or its directory) after the Binance symbol or the pair: "
            "BTCUSDT-1d.json, BTCUSDT/2024.json or BTC-USDT.json"
        )
        return [(_pair_from_names(doc, _binance_name_pair, rule), body)]

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Klines -> ``crypto_bars`` rows (``quote_volume`` and ``trade_count`` filled)."""
        pages, interval_s, fetched_at = self._unpack(request, raw)
        rows = _Rows(request, interval_s, fetched_at)
        where = f"binance {request.ticker}"
        for page in pages:
            if not isinstance(page, list):
                raise SourceError(f"{where}: expected a list of klines", ticker=request.ticker)
            for k in page:
                if not isinstance(k, list) or len(k) < 9 or not isinstance(k[0], int):
                    raise SourceError(
                        f"{where}: malformed kline {k!r}"[:300], ticker=request.ticker
                    )
                rows.add(
                    k[0] // 1000,
                    self.exchange,
                    (
                        _num(k[1], "open", where),
                        _num(k[2], "high", where),
                        _num(k[3], "low", where),
                        _num(k[4], "close", where),
                        _num(k[5], "volume", where),
                        _opt_num(k[7], "quote volume", where),
                        _opt_int(k[8], "trade count", where),
                    ),
                )
        return rows.result(self.name, request.ticker)


# --- Kraken ----------------------------------------------------------------------------------

KRAKEN_URL = "https://api.kraken.com/0/public/OHLC"
_KRAKEN_TRANSIENT = ("EAPI:Rate limit", "EGeneral:Too many requests", "EService:", "EGeneral:Temp")


def _kraken_result(body: Any, where: str, ticker: str) -> tuple[list[Any], int | None]:
    """(rows, last) of a Kraken OHLC body, raising typed errors for its ``error`` list."""
    if not isinstance(body, Mapping) or ("result" not in body and "error" not in body):
        raise SourceError(f"{where}: not a Kraken OHLC response", ticker=ticker)
    errors = [str(e) for e in body.get("error") or []]
    if errors:
        text = "; ".join(errors)
        if any("Unknown asset pair" in e for e in errors):
            raise NoDataError(f"{where}: Kraken does not list this pair ({text})", ticker=ticker)
        if any(e.startswith(_KRAKEN_TRANSIENT) for e in errors):
            raise TransientSourceError(f"{where}: Kraken is busy ({text})", ticker=ticker)
        raise SourceError(f"{where}: Kraken answered an error: {text}", ticker=ticker)
    result = body.get("result")
    if not isinstance(result, Mapping):
        raise SourceError(f"{where}: Kraken OHLC response has no result object", ticker=ticker)
    series = [v for k, v in result.items() if k != "last"]
    if len(series) != 1 or not isinstance(series[0], list):
        raise SourceError(
            f"{where}: expected one pair's OHLC list in result, got keys {sorted(result)}",
            ticker=ticker,
        )
    last = result.get("last")
    return series[0], last if isinstance(last, int) else None


class KrakenSource(_CryptoSource):
    """Kraken spot OHLC -> ``crypto_bars`` (exchange ``kraken``).

    ``GET /0/public/OHLC?pair=XBTUSD&interval=1440&since=epoch`` answers
    ``{"error": [], "result": {"XXBTZUSD": [[time s, open, high, low, close, vwap, volume,
    count], ...], "last": epoch}}``. ``last`` is the start of the last *committed* bar: the row
    after it is the bar still being built and is left out. Kraken serves only the most recent 720
    bars of an interval, whatever ``since`` says: older history is not available (logged). No key.
    ``quote_volume`` is left null (Kraken gives a VWAP rounded to the price's decimals, not a
    quote volume).
    """

    name: ClassVar[str] = "kraken"
    exchange: ClassVar[str] = "kraken"
    host: ClassVar[str] = "api.kraken.com"
    default_rate_limit: ClassVar[float] = 1.0
    description: ClassVar[str] = (
        "Kraken spot OHLC (1d/1h/1m; the most recent 720 bars) for pairs such as BTC-USD "
        "(XBTUSD): OHLC, base volume, trade count; no key needed."
    )

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Fetch OHLC pages from ``start`` following the ``last`` cursor (all I/O)."""
        pair = parse_pair(request.ticker)
        symbol = venue_symbol("kraken", pair)
        lo, hi, now = self._window(request)
        where = f"kraken {symbol}"
        since = lo - 1
        pages: list[Any] = []
        for _ in range(MAX_PAGES):
            params: dict[str, str | int | float] = {
                "pair": symbol,
                "interval": self.interval_s // 60,
                "since": since,
            }
            try:
                body = self.client.get_json(KRAKEN_URL, params=params)
            except NoDataError as exc:
                raise NoDataError(
                    f"kraken: no data for {symbol}: {exc}", ticker=str(pair)
                ) from None
            bars, last = _kraken_result(body, where, str(pair))
            pages.append(body)
            if len(pages) == 1 and bars and isinstance(bars[0], list) and bars[0]:
                first = bars[0][0]
                if isinstance(first, int) and first > lo + self.interval_s:
                    log.warning(
                        "kraken %s: Kraken serves only its most recent 720 %s bars; nothing "
                        "before %s is available",
                        pair,
                        self.interval,
                        _iso(first),
                    )
            if last is None or last <= since or last + self.interval_s >= hi or not bars:
                break
            since = last
        return self._raw(pair, symbol, pages, now)

    def _file_pairs(self, doc: Document, body: Any) -> list[tuple[Pair, Any]]:
        """A saved OHLC body: the pair is its ``result`` key (``XXBTZUSD`` -> ``BTC-USD``, see
        :func:`kraken_pair`); a body holding Kraken's ``error`` list fails with it."""
        _kraken_result(body, doc.origin, doc.origin)  # Kraken's own error, or a malformed body
        keys = [str(k) for k in body["result"] if k != "last"]
        try:
            return [(kraken_pair(keys[0]), body)]
        except MarketlakeError as exc:
            raise SourceError(f"{doc.origin}: {exc}") from None

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """OHLC rows -> ``crypto_bars`` (uncommitted bar dropped, ``trade_count`` filled)."""
        pages, interval_s, fetched_at = self._unpack(request, raw)
        rows = _Rows(request, interval_s, fetched_at)
        where = f"kraken {request.ticker}"
        for page in pages:
            bars, last = _kraken_result(page, where, request.ticker)
            for b in bars:
                if not isinstance(b, list) or len(b) < 8 or not isinstance(b[0], int):
                    raise SourceError(
                        f"{where}: malformed OHLC row {b!r}"[:300], ticker=request.ticker
                    )
                if last is not None and b[0] > last:
                    continue  # the bar still being built
                rows.add(
                    b[0],
                    self.exchange,
                    (
                        _num(b[1], "open", where),
                        _num(b[2], "high", where),
                        _num(b[3], "low", where),
                        _num(b[4], "close", where),
                        _num(b[6], "volume", where),
                        None,
                        _opt_int(b[7], "trade count", where),
                    ),
                )
        return rows.result(self.name, request.ticker)


# --- Coinbase --------------------------------------------------------------------------------

COINBASE_URL = "https://api.exchange.coinbase.com/products/{product}/candles"
COINBASE_MAX_CANDLES = 300


class CoinbaseSource(_CryptoSource):
    """Coinbase Exchange candles -> ``crypto_bars`` (exchange ``coinbase``).

    ``GET /products/BTC-USD/candles?granularity=86400&start=ISO&end=ISO`` answers at most 300
    candles ``[time s, low, high, open, close, volume]``, **newest first**; ``fetch`` asks in
    300-candle windows. ``parse`` also reads the Advanced Trade shape ``{"candles": [{"start",
    "low", "high", "open", "close", "volume"}, ...]}`` (strings). No quote volume or trade
    count. No key.
    """

    name: ClassVar[str] = "coinbase"
    exchange: ClassVar[str] = "coinbase"
    host: ClassVar[str] = "api.exchange.coinbase.com"
    default_rate_limit: ClassVar[float] = 5.0
    description: ClassVar[str] = (
        "Coinbase Exchange candles (1d/1h/1m) for pairs such as BTC-USD: OHLC and base "
        "volume; no key needed."
    )

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Fetch ``request`` in windows of 300 candles (all I/O)."""
        pair = parse_pair(request.ticker)
        product = venue_symbol("coinbase", pair)
        lo, hi, now = self._window(request)
        g = self.interval_s
        url = COINBASE_URL.format(product=product)
        pages: list[Any] = []
        while lo < hi:
            upper = min(lo + COINBASE_MAX_CANDLES * g, hi)
            params: dict[str, str | int | float] = {
                "granularity": g,
                "start": _iso(lo),
                "end": _iso(upper - g),
            }
            try:
                body = self.client.get_json(url, params=params)
            except NoDataError as exc:
                raise NoDataError(
                    f"coinbase has no product {product}: {exc}", ticker=str(pair)
                ) from None
            if not isinstance(body, (list, Mapping)):
                raise SourceError(
                    f"coinbase {product}: expected a list of candles", ticker=str(pair)
                )
            pages.append(body)
            lo = upper
        return self._raw(pair, product, pages, now)

    def _file_pairs(self, doc: Document, body: Any) -> list[tuple[Pair, Any]]:
        """Saved candles (Exchange ``[[time, low, high, open, close, volume], ...]`` or Advanced
        Trade ``{"candles": [...]}``): neither names its product, so the file name (else its
        directory's, else the zip archive's) starts with the product id, ``BTC-USD...`` (quote
        USD, USDC, USDT, EUR, GBP, BTC, ETH, DAI, ...)."""
        if isinstance(body, Mapping) and "candles" not in body:
            message = body.get("message") or body.get("error") or sorted(map(str, body))[:8]
            raise SourceError(f"{doc.origin}: not a Coinbase candles response ({message})")
        if not isinstance(body, (list, Mapping)):
            raise SourceError(
                f"{doc.origin}: not a Coinbase candles response (got {type(body).__name__})"
            )
        rule = (
            "name the file (or its directory) after the product id: BTC-USD.json, "
            "BTC-USD-1d-2024.json or BTC-USD/2024.json"
        )
        return [(_pair_from_names(doc, _coinbase_name_pair, rule), body)]

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Candles -> ``crypto_bars`` rows (any order in; sorted by time out)."""
        pages, interval_s, fetched_at = self._unpack(request, raw)
        rows = _Rows(request, interval_s, fetched_at)
        where = f"coinbase {request.ticker}"
        for page in pages:
            if isinstance(page, Mapping):
                if "candles" not in page:
                    message = page.get("message") or page.get("error") or sorted(page)[:8]
                    raise SourceError(
                        f"{where}: not a candles response ({message})", ticker=request.ticker
                    )
                candles = [
                    [c.get(k) for k in ("start", "low", "high", "open", "close", "volume")]
                    if isinstance(c, Mapping)
                    else c
                    for c in page["candles"] or []
                ]
            elif isinstance(page, list):
                candles = page
            else:
                raise SourceError(f"{where}: expected a list of candles", ticker=request.ticker)
            for c in candles:
                if not isinstance(c, list) or len(c) < 6:
                    raise SourceError(
                        f"{where}: malformed candle {c!r}"[:300], ticker=request.ticker
                    )
                rows.add(
                    int(_num(c[0], "time", where)),
                    self.exchange,
                    (
                        _num(c[3], "open", where),
                        _num(c[2], "high", where),
                        _num(c[1], "low", where),
                        _num(c[4], "close", where),
                        _num(c[5], "volume", where),
                        None,
                        None,
                    ),
                )
        return rows.result(self.name, request.ticker)


# --- Tiingo crypto ---------------------------------------------------------------------------

TIINGO_CRYPTO_URL = "https://api.tiingo.com/tiingo/crypto/prices"
TIINGO_KEY_ENV = "TIINGO_API_KEY"
_TIINGO_FREQ = {"1m": "1min", "1h": "1hour", "1d": "1day"}
_TIINGO_WINDOW_DAYS = {"1m": 1, "1h": 30, "1d": 3650}
TIINGO_AGGREGATE = "tiingo"
"""``exchange`` value of Tiingo's cross-exchange aggregate (``priceData``)."""


def _tiingo_key(key: str | None) -> str:
    value = (key or os.environ.get(TIINGO_KEY_ENV) or "").strip()
    if not value:
        raise ConfigError(
            f"tiingo: {TIINGO_KEY_ENV} is not set: the Tiingo API needs a token (free at "
            "https://www.tiingo.com/account/api/token); export TIINGO_API_KEY=..."
        )
    return value


class TiingoCryptoSource(_CryptoSource):
    """Tiingo crypto prices per exchange -> ``crypto_bars``.

    ``GET /tiingo/crypto/prices?tickers=btcusd&startDate&endDate&resampleFreq=1day
    &includeRawExchangeData=true[&exchanges=GDAX,BINANCE]`` answers ``[{"ticker": "btcusd",
    "priceData": [...], "exchangeData": {"GDAX": [...], ...}}]`` with rows ``{date, open,
    high, low, close, volume, volumeNotional, tradesDone}``. Each exchange's rows become
    ``exchange`` = its code lower-cased (``gdax`` is Coinbase's former name, kept as Tiingo
    spells it); ``priceData``, Tiingo's aggregate over exchanges, becomes ``exchange="tiingo"``
    (``include_aggregate=False`` leaves it out). Rows without a volume (some venues) are left
    out: ``volume`` is required. Needs ``TIINGO_API_KEY`` (sent as an ``Authorization`` header,
    never shown).
    """

    name: ClassVar[str] = "tiingo_crypto"
    exchange: ClassVar[str] = "tiingo"
    host: ClassVar[str] = "api.tiingo.com"
    default_rate_limit: ClassVar[float] = 1.0
    description: ClassVar[str] = (
        "Tiingo crypto prices per exchange (and Tiingo's aggregate as exchange 'tiingo'), "
        "1d/1h/1m, with quote volume and trade counts; needs TIINGO_API_KEY."
    )
    settings: ClassVar[tuple[str, ...]] = (TIINGO_KEY_ENV,)

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        interval: str = "1d",
        rate_limit: float | None = None,
        now: Callable[[], float] | None = None,
        api_key: str | None = None,
        exchanges: Sequence[str] | None = None,
        include_aggregate: bool = True,
    ) -> None:
        super().__init__(client=client, interval=interval, rate_limit=rate_limit, now=now)
        self._api_key = api_key
        self.exchanges = tuple(e.strip().upper() for e in exchanges or () if e.strip())
        self.include_aggregate = include_aggregate

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "api_key": self._api_key,
            "exchanges": self.exchanges,
            "include_aggregate": self.include_aggregate,
        }

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Fetch ``request`` in date windows (one day of 1m bars, 30 of 1h, 10 years of 1d).

        Raises
        ------
        ConfigError
            ``TIINGO_API_KEY`` missing.
        NoDataError
            Tiingo does not know the ticker (empty answer).
        """
        key = _tiingo_key(self._api_key)
        pair = parse_pair(request.ticker)
        symbol = venue_symbol("tiingo", pair)
        now = self._now()
        headers = {"Authorization": f"Token {key}"}
        step = dt.timedelta(days=_TIINGO_WINDOW_DAYS[self.interval])
        last_day = min(request.end, dt.datetime.fromtimestamp(now, dt.UTC).date())
        pages: list[Any] = []
        asked = False
        day = request.start
        while day <= last_day:
            upto = min(day + step - dt.timedelta(days=1), last_day)
            params: dict[str, str | int | float] = {
                "tickers": symbol,
                "startDate": day.isoformat(),
                "endDate": (upto + dt.timedelta(days=1)).isoformat(),
                "resampleFreq": _TIINGO_FREQ[self.interval],
                "includeRawExchangeData": "true",
            }
            if self.exchanges:
                params["exchanges"] = ",".join(self.exchanges)
            body = self.client.get_json(
                TIINGO_CRYPTO_URL, params=params, headers=headers, auth_hint=TIINGO_KEY_ENV
            )
            if body != []:
                pages.append(body)
            asked = True
            day = upto + dt.timedelta(days=1)
        if asked and not pages:
            raise NoDataError(
                f"tiingo: no crypto data for {symbol} ({pair}) from {request.start} to "
                f"{request.end}; unknown ticker or no trading",
                ticker=str(pair),
            )
        return self._raw(pair, symbol, pages, now)

    def _file_pairs(self, doc: Document, body: Any) -> list[tuple[Pair, Any]]:
        """A saved ``/tiingo/crypto/prices`` body: one payload per entry, its pair from the
        entry's ``baseCurrency`` / ``quoteCurrency`` (``btc``/``usd`` -> ``BTC-USD``)."""
        if not isinstance(body, list):
            detail = body.get("detail") if isinstance(body, Mapping) else None
            got = f"Tiingo answered {detail!r}" if detail else f"got {type(body).__name__}"
            raise SourceError(
                f"{doc.origin}: not a Tiingo crypto prices response (expected a list of "
                f"{{ticker, baseCurrency, quoteCurrency, priceData, ...}}; {got})"
            )
        out: list[tuple[Pair, Any]] = []
        for i, entry in enumerate(body):
            base = entry.get("baseCurrency") if isinstance(entry, Mapping) else None
            quote = entry.get("quoteCurrency") if isinstance(entry, Mapping) else None
            if not isinstance(entry, Mapping) or not isinstance(base, str) or not quote:
                raise SourceError(
                    f"{doc.origin}: Tiingo entry {i} has no baseCurrency/quoteCurrency to tell "
                    "its pair"
                )
            pair = parse_pair(f"{base}-{quote}")
            symbol = venue_symbol("tiingo", pair)
            ticker = entry.get("ticker", symbol)
            if str(ticker).lower() != symbol:
                raise SourceError(
                    f"{doc.origin}: Tiingo entry {i}: ticker {ticker!r} does not match "
                    f"baseCurrency {base!r} + quoteCurrency {quote!r}"
                )
            out.append((pair, [{**entry, "ticker": symbol}]))
        return out

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Per-exchange rows (and the aggregate) -> ``crypto_bars``."""
        pages, interval_s, fetched_at = self._unpack(request, raw)
        rows = _Rows(request, interval_s, fetched_at)
        symbol = venue_symbol("tiingo", parse_pair(request.ticker))
        where = f"tiingo {request.ticker}"
        wanted = set(self.exchanges)
        no_volume = 0
        for page in pages:
            if not isinstance(page, list):
                raise SourceError(
                    f"{where}: expected a list of tickers (Tiingo crypto prices)",
                    ticker=request.ticker,
                )
            for entry in page:
                if not isinstance(entry, Mapping) or str(entry.get("ticker", "")).lower() != symbol:
                    continue
                series: list[tuple[str, Any]] = []
                if self.include_aggregate:
                    series.append((TIINGO_AGGREGATE, entry.get("priceData") or []))
                exchange_data = entry.get("exchangeData") or {}
                if not isinstance(exchange_data, Mapping):
                    raise SourceError(
                        f"{where}: exchangeData must be an object", ticker=request.ticker
                    )
                for code, bars in exchange_data.items():
                    if not wanted or str(code).upper() in wanted:
                        series.append((str(code).lower(), bars))
                for exchange, bars in series:
                    if not isinstance(bars, list):
                        raise SourceError(
                            f"{where}: {exchange} rows must be a list", ticker=request.ticker
                        )
                    for bar in bars:
                        no_volume += self._add(rows, exchange, bar, where)
        if no_volume:
            log.info("%s: left out %d row(s) without a volume", where, no_volume)
        return rows.result(self.name, request.ticker)

    @staticmethod
    def _add(rows: _Rows, exchange: str, bar: Any, where: str) -> int:
        """Add one Tiingo row; 1 when it was left out for lack of a volume, else 0."""
        if not isinstance(bar, Mapping):
            raise SourceError(f"{where}: malformed row {bar!r}"[:300])
        try:
            when = dt.datetime.fromisoformat(str(bar.get("date")))
        except ValueError:
            raise SourceError(f"{where}: row date {bar.get('date')!r} is not ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if bar.get("volume") is None:
            return 1
        rows.add(
            int(when.timestamp()),
            exchange,
            (
                _num(bar.get("open"), "open", where),
                _num(bar.get("high"), "high", where),
                _num(bar.get("low"), "low", where),
                _num(bar.get("close"), "close", where),
                _num(bar.get("volume"), "volume", where),
                _opt_num(bar.get("volumeNotional"), "volumeNotional", where),
                _opt_int(bar.get("tradesDone"), "tradesDone", where),
            ),
        )
        return 0
