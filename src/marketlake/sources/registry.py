"""Registry of data sources by name (lazy: a source module is imported only when used)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from marketlake.errors import UnknownSourceError
from marketlake.sources.base import Source


@dataclass(frozen=True)
class SourceInfo:
    """What ``marketlake sources`` shows: name, datasets, settings it needs, description."""

    name: str
    target: str  # "module:Class"
    datasets: tuple[str, ...]
    settings: tuple[str, ...]
    description: str


_SOURCES: dict[str, SourceInfo] = {
    "synthetic": SourceInfo(
        name="synthetic",
        target="marketlake.sources.synthetic:SyntheticSource",
        datasets=(
            "prices",
            "signals_valuation",
            "signals_technical",
            "fundamentals",
            "corporate_actions",
        ),
        settings=(),
        description="Deterministic seeded random walks on the NYSE calendar (demo, tests, "
        "benchmarks); no network, no credentials.",
    ),
    "sec": SourceInfo(
        name="sec",
        target="marketlake.sources.sec:SecEdgarSource",
        datasets=("fundamentals", "filings", "ticker_metadata"),
        settings=("SEC_USER_AGENT",),
        description="SEC EDGAR: point-in-time quarterly fundamentals (XBRL companyfacts, "
        "restatements as new rows), the filing index, and ticker <-> CIK intervals (ticker "
        "SEC); SEC_USER_AGENT='Name you@example.com'.",
    ),
    "yahoo": SourceInfo(
        name="yahoo",
        target="marketlake.sources.yahoo:YahooChartSource",
        datasets=("prices", "corporate_actions", "bars_minute"),
        settings=(),
        description="Yahoo Finance chart API v8: raw daily OHLCV (splits undone) with Yahoo's "
        "adjusted close, splits/dividends/capital gains, 1-minute bars (last 30 days); no key.",
    ),
    "alpaca": SourceInfo(
        name="alpaca",
        target="marketlake.sources.alpaca:AlpacaSource",
        datasets=("bars_minute",),
        settings=("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_FEED"),
        description="Alpaca market data v2: raw 1-minute US stock bars with VWAP and trade "
        "counts (ALPACA_FEED=iex free, sip paid); needs APCA_API_KEY_ID and APCA_API_SECRET_KEY.",
    ),
    "tiingo": SourceInfo(
        name="tiingo",
        target="marketlake.sources.tiingo:TiingoSource",
        datasets=("prices", "corporate_actions", "bars_minute"),
        settings=("TIINGO_API_KEY",),
        description="Tiingo equities: raw daily EOD OHLCV with Tiingo's adjusted close, "
        "dividends and splits, IEX-only 1-minute bars; needs TIINGO_API_KEY.",
    ),
    "binance": SourceInfo(
        name="binance",
        target="marketlake.sources.crypto:BinanceSource",
        datasets=("crypto_bars",),
        settings=(),
        description="Binance spot klines for pairs such as BTC-USDT (1d default, 1h, 1m): OHLC, "
        "base and quote volume, trade count; no key.",
    ),
    "kraken": SourceInfo(
        name="kraken",
        target="marketlake.sources.crypto:KrakenSource",
        datasets=("crypto_bars",),
        settings=(),
        description="Kraken spot OHLC for pairs such as BTC-USD (XBTUSD); only the most recent "
        "720 bars of an interval; OHLC, base volume, trade count; no key.",
    ),
    "coinbase": SourceInfo(
        name="coinbase",
        target="marketlake.sources.crypto:CoinbaseSource",
        datasets=("crypto_bars",),
        settings=(),
        description="Coinbase Exchange candles for pairs such as BTC-USD (1d default, 1h, 1m): "
        "OHLC and base volume; no key.",
    ),
    "tiingo_crypto": SourceInfo(
        name="tiingo_crypto",
        target="marketlake.sources.crypto:TiingoCryptoSource",
        datasets=("crypto_bars",),
        settings=("TIINGO_API_KEY",),
        description="Tiingo crypto prices per exchange (plus Tiingo's aggregate as exchange "
        "'tiingo'), with quote volume and trade counts; needs TIINGO_API_KEY.",
    ),
    "nasdaq_trader": SourceInfo(
        name="nasdaq_trader",
        target="marketlake.sources.nasdaq_trader:NasdaqTraderSource",
        datasets=("ticker_metadata", "ticker_history"),
        settings=(),
        description="NASDAQ Trader symbol directory: US listings (exchange, ETF, listing and "
        "delisting dates accumulated from daily snapshots) and derived renames; ticker US.",
    ),
    "sp500": SourceInfo(
        name="sp500",
        target="marketlake.sources.sp500:Sp500Source",
        datasets=("index_constituents",),
        settings=(),
        description="S&P 500 membership intervals from community CSVs (constituents, dated "
        "changes, historical start/end); ticker SP500; no key.",
    ),
}


def register_source(info: SourceInfo) -> None:
    """Add a source to the registry."""
    _SOURCES[info.name] = info


def list_sources() -> list[SourceInfo]:
    """Registered sources, sorted by name."""
    return [_SOURCES[n] for n in sorted(_SOURCES)]


def get_source(name: str, **options: Any) -> Source:
    """Instantiate the source ``name`` with ``options``.

    Raises
    ------
    UnknownSourceError
        With the list of known sources.
    """
    info = _SOURCES.get(name)
    if info is None:
        raise UnknownSourceError(
            f"unknown source {name!r}; known sources: {', '.join(sorted(_SOURCES))} "
            "(see 'marketlake sources')",
            source=name,
        )
    module, _, cls = info.target.partition(":")
    source_cls = getattr(importlib.import_module(module), cls)
    source: Source = source_cls(**options)
    return source
