"""The dataset registry: canonical Arrow schemas, keys and default layouts.

Each :class:`Dataset` declares, dlt-style, everything the write path needs to know:

* ``schema`` – the canonical Arrow schema (column order, types, nullability). Writes are checked
  against it ("frozen" contract: an unknown column or a lossy type is an error);
* ``key`` – the column(s) that identify a row within one ticker. Merges dedupe on it (new wins);
  it may be composite (point-in-time fundamentals will key on ``period_end`` + ``filed``);
* ``time_column`` – the date column that places a row in a partition and that ranges filter on;
* ``layout`` – the default key template (see :mod:`marketlake.storage.layout`);
* ``non_negative`` – numeric columns that must be ``>= 0``.

Units and conventions: prices are in the instrument's trading currency per share; ``volume`` is
shares; dates are exchange session dates (no time zone). In ``prices``, ``open``/``high``/``low``/
``close``/``volume`` are **raw, unadjusted** values as traded; ``adj_close`` is the vendor's
split-and-dividend adjusted close where the vendor provides one (a cross-check, never the truth;
adjustment is computed at read time from corporate actions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from marketlake.errors import UnknownDatasetError

MONTHLY_LAYOUT = "{dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet"
SINGLE_FILE_LAYOUT = "{dataset}/v{version}/{TICKER}/data.parquet"


@dataclass(frozen=True)
class Dataset:
    """Declaration of one dataset. See the module docstring for the meaning of each field."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    time_column: str
    layout: str
    description: str
    version: int = 1
    non_negative: tuple[str, ...] = ()
    columns_doc: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = set(self.schema.names)
        missing = [c for c in (*self.key, self.time_column, *self.non_negative) if c not in names]
        if missing:
            raise ValueError(f"dataset {self.name}: columns {missing} are not in its schema")
        if self.key[0] != self.time_column:
            raise ValueError(f"dataset {self.name}: the key must start with the time column")
        for k in self.key:
            if self.schema.field(k).nullable:
                raise ValueError(f"dataset {self.name}: key column {k} must be non-nullable")

    @property
    def value_columns(self) -> list[str]:
        """Columns that are not part of the key."""
        return [n for n in self.schema.names if n not in self.key]


def _f64(name: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, pa.float64(), nullable=nullable)


PRICES = Dataset(
    name="prices",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            _f64("open", False),
            _f64("high", False),
            _f64("low", False),
            _f64("close", False),
            _f64("adj_close"),
            pa.field("volume", pa.int64(), nullable=False),
        ]
    ),
    key=("date",),
    time_column="date",
    layout=MONTHLY_LAYOUT,
    description=(
        "Daily OHLCV bars: raw unadjusted prices as traded, plus the vendor's adjusted close."
    ),
    non_negative=("open", "high", "low", "close", "adj_close", "volume"),
    columns_doc={
        "date": "exchange session date (no time zone)",
        "open": "raw (unadjusted) opening price, trading currency per share",
        "high": "raw (unadjusted) high price",
        "low": "raw (unadjusted) low price",
        "close": "raw (unadjusted) closing price",
        "adj_close": "vendor's split-and-dividend adjusted close (null when not provided)",
        "volume": "raw (unadjusted) shares traded",
    },
)

SIGNALS_VALUATION = Dataset(
    name="signals_valuation",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            _f64("pe_ttm"),
            _f64("pb"),
            _f64("ps_ttm"),
            _f64("ev_ebitda_ttm"),
            _f64("fcf_yield_ttm"),
            _f64("earnings_yield_ttm"),
            _f64("market_cap"),
            _f64("ev"),
        ]
    ),
    key=("date",),
    time_column="date",
    layout=MONTHLY_LAYOUT,
    description="Daily valuation ratios from that day's close and fundamentals filed by that day.",
    columns_doc={
        "date": (
            "session date; uses only fundamentals filed on or before it and splits with ex "
            "date on or before it (TTM = last four consecutive quarters as known that day)"
        ),
        "pe_ttm": (
            "raw close / TTM diluted EPS (EPS on the day's share basis); null if EPS <= 0 or "
            "missing"
        ),
        "pb": (
            "market cap / book equity (total_assets - total_liabilities); null if equity <= 0 "
            "or missing"
        ),
        "ps_ttm": "market cap / TTM revenue; null if revenue <= 0 or missing",
        "ev_ebitda_ttm": (
            "enterprise value / TTM EBITDA (null if EBITDA <= 0); currently always null: "
            "fundamentals carry no depreciation and amortisation to form EBITDA"
        ),
        "fcf_yield_ttm": (
            "TTM free cash flow / market cap (fraction, 0.05 = 5%; may be negative); null if "
            "market cap <= 0 or an input is missing"
        ),
        "earnings_yield_ttm": (
            "TTM diluted EPS / raw close (fraction; may be negative); null if an input is missing"
        ),
        "market_cap": (
            "raw close x diluted shares of the latest period reporting them, adjusted for "
            "splits between that filing and the day; USD; null if shares or close missing"
        ),
        "ev": (
            "approximate enterprise value: market_cap + total_liabilities - "
            "cash_and_equivalents (total liabilities stand in for debt, so EV is overstated; "
            "preferred stock and minority interests ignored); USD"
        ),
    },
)

SIGNALS_TECHNICAL = Dataset(
    name="signals_technical",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            _f64("rsi_14"),
            _f64("sma_20"),
            _f64("sma_50"),
            _f64("ema_20"),
            _f64("macd"),
            _f64("macd_signal"),
            _f64("bb_upper"),
            _f64("bb_lower"),
            _f64("sma_200"),
            _f64("macd_hist"),
            _f64("bb_middle"),
            _f64("atr_14"),
            _f64("obv"),
            _f64("stoch_k"),
            _f64("stoch_d"),
            _f64("adx_14"),
            _f64("roc_10"),
            _f64("williams_r_14"),
            _f64("cci_20"),
            _f64("mfi_14"),
        ]
    ),
    key=("date",),
    time_column="date",
    layout=MONTHLY_LAYOUT,
    description="Daily technical indicators computed from split-adjusted closes.",
    columns_doc={
        "rsi_14": "14-session relative strength index, 0-100 (Wilder smoothing)",
        "sma_20": "20-session simple moving average of the split-adjusted close",
        "sma_50": "50-session simple moving average of the split-adjusted close",
        "ema_20": "20-session exponential moving average (alpha = 2/21)",
        "macd": "EMA(12) - EMA(26) of the split-adjusted close",
        "macd_signal": "9-session EMA of macd",
        "bb_upper": "sma_20 + 2 population standard deviations (20 sessions)",
        "bb_lower": "sma_20 - 2 population standard deviations (20 sessions)",
        "sma_200": "200-session simple moving average of the split-adjusted close",
        "macd_hist": "macd - macd_signal",
        "bb_middle": "Bollinger middle band (= sma_20)",
        "atr_14": "14-session average true range, Wilder smoothing (currency per share)",
        "obv": "on-balance volume: running +/- split-adjusted volume by close direction (shares)",
        "stoch_k": "slow stochastic %K (14, 3): 3-session mean of the fast %K, 0-100",
        "stoch_d": "slow stochastic %D: 3-session mean of stoch_k, 0-100",
        "adx_14": "14-session average directional index (Wilder), 0-100",
        "roc_10": "10-session rate of change of the close, percent",
        "williams_r_14": "14-session Williams %R, -100 to 0",
        "cci_20": "20-session commodity channel index of the typical price (constant 0.015)",
        "mfi_14": "14-session money flow index (typical price x volume), 0-100",
    },
)

FUNDAMENTALS = Dataset(
    name="fundamentals",
    schema=pa.schema(
        [
            pa.field("period_end", pa.date32(), nullable=False),
            pa.field("filed", pa.date32(), nullable=False),
            pa.field("fiscal_year", pa.int32()),
            pa.field("fiscal_quarter", pa.int32()),
            pa.field("fiscal_period", pa.string()),
            pa.field("form", pa.string()),
            pa.field("accession", pa.string()),
            _f64("revenue"),
            _f64("gross_profit"),
            _f64("operating_income"),
            _f64("net_income"),
            _f64("eps_diluted"),
            _f64("shares_diluted"),
            _f64("total_assets"),
            _f64("total_liabilities"),
            _f64("cash_and_equivalents"),
            _f64("operating_cash_flow"),
            _f64("capex"),
            _f64("free_cash_flow"),
        ]
    ),
    key=("period_end", "filed"),
    time_column="period_end",
    layout=SINGLE_FILE_LAYOUT,
    description=(
        "Quarterly fundamentals, point in time: one row per fiscal quarter per filing that "
        "reported it (restatements are new rows), USD; shares in units."
    ),
    non_negative=("total_assets", "shares_diluted", "cash_and_equivalents"),
    columns_doc={
        "period_end": "last day of the fiscal quarter",
        "filed": "date the filing that reported these values was filed (knowledge date)",
        "fiscal_quarter": "1-4 (null on an FY row)",
        "fiscal_period": (
            "fiscal period label: Q1..Q4 (a derived Q4 = FY - Q1..Q3); FY for a fiscal year "
            "reported only annually (e.g. a 20-F filer): its flows then cover the whole year"
        ),
        "form": "filing form, e.g. 10-Q, 10-K, 10-K/A, 20-F",
        "accession": "SEC accession number of the filing, e.g. 0000320193-24-000123",
        "revenue": "quarterly revenue, USD",
        "capex": "capital expenditure for the quarter, USD, reported as a positive outflow",
        "free_cash_flow": "operating_cash_flow - capex, USD",
    },
)

CORPORATE_ACTIONS = Dataset(
    name="corporate_actions",
    schema=pa.schema(
        [
            pa.field("ex_date", pa.date32(), nullable=False),
            pa.field("action", pa.string(), nullable=False),
            _f64("value", False),
            _f64("split_numerator"),
            _f64("split_denominator"),
            pa.field("currency", pa.string()),
        ]
    ),
    key=("ex_date", "action"),
    time_column="ex_date",
    layout=SINGLE_FILE_LAYOUT,
    description="Splits, cash dividends and capital gains by ex date, as the vendor reports them.",
    non_negative=("value",),
    columns_doc={
        "ex_date": "ex date: the first session the price trades without the action",
        "action": "'split', 'dividend' or 'capital_gain'",
        "value": (
            "dividend / capital gain: cash per share in `currency`; split: new shares per old "
            "share (4.0 for a 4-for-1 split, 0.1 for a 1-for-10 reverse split)"
        ),
        "split_numerator": "split: new shares (4 in 4:1); null otherwise",
        "split_denominator": "split: old shares (1 in 4:1); null otherwise",
        "currency": "currency of a cash amount (ISO 4217); null for splits or when not given",
    },
)

BARS_MINUTE = Dataset(
    name="bars_minute",
    schema=pa.schema(
        [
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            _f64("open", False),
            _f64("high", False),
            _f64("low", False),
            _f64("close", False),
            pa.field("volume", pa.int64(), nullable=False),
            _f64("vwap"),
            pa.field("trade_count", pa.int64()),
        ]
    ),
    key=("ts",),
    time_column="ts",
    layout=MONTHLY_LAYOUT,
    description="One-minute bars, raw (unadjusted), keyed by the bar's start time in UTC.",
    non_negative=("open", "high", "low", "close", "volume", "vwap", "trade_count"),
    columns_doc={
        "ts": "bar start, UTC (microseconds); the exchange time zone is in reference data",
        "open": "raw (unadjusted) first trade price in the minute",
        "volume": "raw shares traded in the minute",
        "vwap": "volume-weighted average price, when the vendor gives it",
        "trade_count": "number of trades, when the vendor gives it",
    },
)

FILINGS = Dataset(
    name="filings",
    schema=pa.schema(
        [
            pa.field("filed", pa.date32(), nullable=False),
            pa.field("accession", pa.string(), nullable=False),
            pa.field("form", pa.string()),
            pa.field("report_date", pa.date32()),
            pa.field("primary_document", pa.string()),
            pa.field("is_xbrl", pa.bool_()),
        ]
    ),
    key=("filed", "accession"),
    time_column="filed",
    layout=SINGLE_FILE_LAYOUT,
    description="SEC EDGAR filing index per company: every filing by filing date (submissions).",
    columns_doc={
        "filed": "date the filing was filed with the SEC",
        "accession": "SEC accession number, e.g. 0000320193-24-000123",
        "form": "filing form, e.g. 10-K, 10-Q, 8-K, 4, 20-F",
        "report_date": "end of the period the filing reports on (null when it has none)",
        "primary_document": "file name of the filing's primary document",
        "is_xbrl": "true when the filing carries XBRL financial data",
    },
)

CRYPTO_LAYOUT = "{dataset}/v{version}/{TICKER}/{exchange}/{YYYY}/{MM}/data.parquet"

CRYPTO_BARS = Dataset(
    name="crypto_bars",
    schema=pa.schema(
        [
            pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("exchange", pa.string(), nullable=False),
            _f64("open", False),
            _f64("high", False),
            _f64("low", False),
            _f64("close", False),
            _f64("volume", False),
            _f64("quote_volume"),
            pa.field("trade_count", pa.int64()),
        ]
    ),
    key=("ts", "exchange"),
    time_column="ts",
    layout=CRYPTO_LAYOUT,
    description=(
        "Crypto OHLCV per pair and exchange (one market trades on several venues): the pair is "
        "the lake ticker (BASE-QUOTE, e.g. BTC-USD), the exchange a level of the key."
    ),
    non_negative=("open", "high", "low", "close", "volume", "quote_volume", "trade_count"),
    columns_doc={
        "ts": "bar start, UTC (microseconds); bars run 24/7",
        "exchange": "venue id, lower case: binance, kraken, coinbase, ... (part of the key)",
        "volume": "traded amount in the base asset (fractional)",
        "quote_volume": "traded amount in the quote asset, when the venue gives it",
        "trade_count": "number of trades, when the venue gives it",
    },
)

REFERENCE_TICKER_US = "US"
"""Lake ticker under which US-wide reference tables (NASDAQ Trader universe) are stored."""

REFERENCE_TICKER_SEC = "SEC"
"""Lake ticker under which SEC's ticker <-> CIK intervals (``company_tickers.json``) are stored."""

TICKER_METADATA = Dataset(
    name="ticker_metadata",
    schema=pa.schema(
        [
            pa.field("first_seen", pa.date32(), nullable=False),
            pa.field("symbol", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("exchange", pa.string()),
            pa.field("is_etf", pa.bool_()),
            pa.field("round_lot", pa.int64()),
            pa.field("financial_status", pa.string()),
            pa.field("last_seen", pa.date32(), nullable=False),
            pa.field("delisted", pa.date32()),
            pa.field("source", pa.string()),
            pa.field("cik", pa.int64()),
        ]
    ),
    key=("first_seen", "symbol"),
    time_column="first_seen",
    layout=SINGLE_FILE_LAYOUT,
    description=(
        "Listing intervals of a universe's symbols accumulated from daily symbol-directory "
        "snapshots (stored under the universe as ticker: US for NASDAQ Trader, SEC for SEC's "
        "ticker <-> CIK file); one row per listing interval."
    ),
    non_negative=("round_lot",),
    columns_doc={
        "first_seen": "date of the first snapshot listing the symbol (start of the interval)",
        "symbol": "lake ticker (normalised: class shares with a dot, preferreds as X-PA)",
        "exchange": "listing market, e.g. NYSE, NYSE Arca, Nasdaq Global Select",
        "financial_status": "NASDAQ financial status code (N normal, D deficient, ...)",
        "last_seen": "date of the latest snapshot listing the symbol in this interval",
        "delisted": "first snapshot date on which the symbol was missing (null while listed)",
        "cik": "SEC Central Index Key of the company (rows under SEC; null in NASDAQ rows)",
    },
)

TICKER_HISTORY = Dataset(
    name="ticker_history",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            pa.field("old_symbol", pa.string(), nullable=False),
            pa.field("new_symbol", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("source", pa.string()),
        ]
    ),
    key=("date", "old_symbol"),
    time_column="date",
    layout=SINGLE_FILE_LAYOUT,
    description=(
        "Symbol changes (renames) of a universe, derived from consecutive snapshots: a symbol "
        "that disappears while a new one with the same security name appears."
    ),
    columns_doc={
        "date": "snapshot date on which the new symbol replaced the old one",
        "name": "security name shared by the old and the new symbol",
    },
)

INDEX_CONSTITUENTS = Dataset(
    name="index_constituents",
    schema=pa.schema(
        [
            pa.field("start", pa.date32(), nullable=False),
            pa.field("symbol", pa.string(), nullable=False),
            pa.field("end", pa.date32()),
            pa.field("name", pa.string()),
            pa.field("sector", pa.string()),
            pa.field("cik", pa.int64()),
        ]
    ),
    key=("start", "symbol"),
    time_column="start",
    layout=SINGLE_FILE_LAYOUT,
    description=(
        "Index membership intervals, stored under the index as ticker (e.g. SP500): a symbol "
        "is a member on day d when start <= d and (end is null or d < end)."
    ),
    columns_doc={
        "start": "first session of membership (effective date of the addition)",
        "end": "first session no longer a member (effective removal date); null = member",
        "name": "company name (current members only)",
        "sector": "GICS sector (current members only)",
        "cik": "SEC central index key (current members only)",
    },
)

_REGISTRY: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    """Add a dataset to the registry (later issues add corporate actions, minute bars…)."""
    if dataset.name in _REGISTRY and _REGISTRY[dataset.name] != dataset:
        raise ValueError(f"dataset {dataset.name!r} is already registered differently")
    _REGISTRY[dataset.name] = dataset
    return dataset


for _ds in (
    PRICES,
    SIGNALS_VALUATION,
    SIGNALS_TECHNICAL,
    FUNDAMENTALS,
    CORPORATE_ACTIONS,
    BARS_MINUTE,
    FILINGS,
    CRYPTO_BARS,
    TICKER_METADATA,
    TICKER_HISTORY,
    INDEX_CONSTITUENTS,
):
    register_dataset(_ds)

DAILY_DATASETS: tuple[str, ...] = ("prices", "signals_valuation", "signals_technical")


def get_dataset(name: str) -> Dataset:
    """Return the dataset called ``name`` or raise :class:`UnknownDatasetError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_REGISTRY))}",
            dataset=name,
        ) from None


def list_datasets() -> list[Dataset]:
    """All registered datasets, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
