"""Data-quality rules (marketlake.quality.rules) on real recorded data and on broken copies.

Real data, parsed with the real source parsers where marketlake has one:

* prices: Quandl WIKI 2014 (AAPL 7:1 split, dividends; MSFT; BRK_A; ZEN listed mid-year) from
  tests/fixtures/daily_ohlcv; Yahoo chart bodies (TSLA 2010-2023 through both splits, NVDA 2021,
  MSFT 2021 dividends, AAPL 2020 split) from tests/fixtures/yahoo_chart; CALM 2022-2024 with ten
  dividends (yfinance CSV, tests/fixtures/daily_ohlcv/CALM-1d-no-bad-divs.csv.gz);
* bars_minute: EA 15-minute bars 2026-05-26..06-03 with extended hours (yfinance CSV,
  tests/fixtures/intraday_ohlcv) and GOOGL IEX 30-minute bars of 2018-01-02 (Tiingo);
* fundamentals: Murphy Oil (MUR) companyfacts through the SEC parser;
* crypto_bars: BTC-USD and FLDC-BTC per exchange on 2019-05-01/02 through the Tiingo crypto
  parser, and Yahoo's BTC-USD daily bars of 2020-01-01..03.

Each rule gives nothing on the clean data except the real quirks asserted by name (Bitfinex's
2019 premium, MUR's pre-XBRL periods and derived negative Q4 revenues, NVDA's dividends missing
from a split-events-only answer, EA's last session recorded mid-day). Each deliberately broken
copy (a dropped session, a high < low bar, a 100x unit error, a missing split or dividend, a
bad fundamentals row, a divergent venue, a stale asset) is flagged exactly where it was broken,
and nowhere else.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from marketlake.catalog import MonitoredAsset, ProgressRow
from marketlake.errors import MarketlakeError
from marketlake.quality.rules import (
    RULES,
    SEVERITIES,
    VIOLATION_SCHEMA,
    check,
    freshness_violations,
    get_rule,
    list_rules,
    rules_for,
)
from marketlake.schemas.datasets import BARS_MINUTE, CORPORATE_ACTIONS, CRYPTO_BARS, PRICES
from marketlake.sources.base import SourceRequest
from marketlake.sources.crypto import TiingoCryptoSource
from marketlake.sources.sec import parse_companyfacts
from marketlake.sources.tiingo import parse_iex_rows
from tests.test_adjust import quandl
from tests.test_yahoo import NODE, body, parse, split

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = Path(__file__).parent.parent / "docs" / "quality.md"
D = dt.date
UTC = dt.UTC
Found = set[tuple[str, str, str]]  # (rule, severity, date or ts)


def found(table: pa.Table) -> Found:
    """The violations as (rule, severity, when) triples; ``when`` is the ts or the date."""
    assert table.schema == VIOLATION_SCHEMA
    out: Found = set()
    for row in table.to_pylist():
        when = row["ts"].strftime("%Y-%m-%d %H:%M") if row["ts"] else str(row["date"])
        out.add((row["rule"], row["severity"], when))
    return out


def details(table: pa.Table) -> list[str]:
    return [str(d) for d in table.column("detail").to_pylist()]


def replace_row(table: pa.Table, day: Any, column: str, **values: Any) -> pa.Table:
    rows = table.to_pylist()
    hits = [i for i, r in enumerate(rows) if r[column] == day]
    assert len(hits) == 1, (day, hits)
    rows[hits[0]] = {**rows[hits[0]], **values}
    return pa.Table.from_pylist(rows, schema=table.schema)


def drop_rows(table: pa.Table, mask: Any) -> pa.Table:
    return table.filter(pc.invert(mask))


# --- real data loaders -----------------------------------------------------------------------


@cache
def yahoo(name: str, ticker: str, later: tuple[tuple[int, int, int, int], ...]) -> dict[str, Any]:
    out = parse(body(NODE / name), ticker, later=[split(*s) for s in later])
    out.setdefault("corporate_actions", CORPORATE_ACTIONS.schema.empty_table())
    return out


def tsla() -> dict[str, Any]:
    return yahoo(
        "historical-via-chart-dividends-TSLA-no-dividends.json.gz",
        "TSLA",
        ((2020, 8, 31, 5), (2022, 8, 25, 3)),
    )


def nvda() -> dict[str, Any]:
    return yahoo(
        "historical-via-chart-NVDA-split-2021-02-01-to-2022-01-31.csv.json",
        "NVDA",
        ((2024, 6, 10, 10),),
    )


def _gz_csv(path: Path, sha256: str) -> list[dict[str, str]]:
    raw = gzip.decompress(path.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == sha256  # the unedited original
    return list(csv.DictReader(io.StringIO(raw.decode())))


@cache
def calm() -> tuple[pa.Table, pa.Table]:
    """CALM daily prices and its dividends (yfinance CSV: raw OHLCV, Adj Close, Dividends)."""
    rows = _gz_csv(
        FIXTURES / "daily_ohlcv" / "CALM-1d-no-bad-divs.csv.gz",
        "901022e0014ca663cd6dd5b7aa176aac9b1ee54f182776beef2fcbb93ae4b74e",
    )
    days = [dt.datetime.fromisoformat(r["Datetime"]).date() for r in rows]
    prices = pa.Table.from_pylist(
        [
            {
                "date": day,
                **{k.lower(): float(r[k]) for k in ("Open", "High", "Low", "Close")},
                "adj_close": float(r["Adj Close"]),
                "volume": int(r["Volume"]),
            }
            for day, r in zip(days, rows, strict=True)
        ],
        schema=PRICES.schema,
    )
    actions = pa.Table.from_pylist(
        [
            {
                "ex_date": day,
                "action": "dividend",
                "value": float(r["Dividends"]),
                "currency": "USD",
            }
            for day, r in zip(days, rows, strict=True)
            if float(r["Dividends"])
        ],
        schema=CORPORATE_ACTIONS.schema,
    )
    return prices, actions


@cache
def ea() -> pa.Table:
    """EA 15-minute bars, extended hours included (yfinance CSV, New York times)."""
    rows = _gz_csv(
        FIXTURES / "intraday_ohlcv" / "EA-15m-no-bad-divs.csv.gz",
        "3b14c998368e770b90dd8e749f53550d1e7c06af26f117a9e46e5763c85119e3",
    )
    return pa.Table.from_pylist(
        [
            {
                "ts": dt.datetime.fromisoformat(r["Datetime"]).astimezone(UTC),
                **{k.lower(): float(r[k]) for k in ("Open", "High", "Low", "Close")},
                "volume": int(r["Volume"]),
            }
            for r in rows
        ],
        schema=BARS_MINUTE.schema,
    )


EA_RECORDED = dt.datetime(2026, 6, 3, 18, 30, tzinfo=UTC)  # 14:30 New York, after the last bar


def ea_daily(bars: pa.Table) -> pa.Table:
    """EA daily bars aggregated from the fixture's own regular-session bars (no real EA daily
    bar of these days is among the fixtures): open of the 09:30 bar, max high, min low, close
    of the 15:45 bar."""
    rows = [r for r in bars.to_pylist() if dt.time(13, 30) <= r["ts"].time() < dt.time(20, 0)]
    out: dict[dt.date, dict[str, Any]] = {}
    for r in rows:
        day = r["ts"].date()
        bar = out.setdefault(day, {"date": day, "open": r["open"], "high": r["high"]})
        bar.update(low=min(bar.get("low", r["low"]), r["low"]), close=r["close"], volume=0)
        bar["high"] = max(bar["high"], r["high"])
    return pa.Table.from_pylist(list(out.values()), schema=PRICES.schema)


@cache
def mur() -> pa.Table:
    doc = json.loads(
        gzip.decompress(
            (FIXTURES / "sec_edgar" / "companyfacts" / "CIK0000717423.json.gz").read_bytes()
        )
    )
    return parse_companyfacts(doc)


@cache
def mur_equity() -> pa.Table:
    """MUR fundamentals plus a total_equity column from the same payload (the stockholders'
    equity the filing reported for the period end, noncontrolling interests included)."""
    doc = json.loads(
        gzip.decompress(
            (FIXTURES / "sec_edgar" / "companyfacts" / "CIK0000717423.json.gz").read_bytes()
        )
    )
    facts = doc["facts"]["us-gaap"]
    equity: dict[tuple[dt.date, dt.date], float] = {}
    for tag in (
        "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest",
        "StockholdersEquity",
    ):
        for fact in facts[tag]["units"]["USD"]:
            key = (D.fromisoformat(fact["end"]), D.fromisoformat(fact["filed"]))
            equity.setdefault(key, float(fact["val"]))
    table = mur()
    values = [equity.get((r["period_end"], r["filed"])) for r in table.to_pylist()]
    return table.append_column("total_equity", pa.array(values, pa.float64()))


def tiingo_crypto(pair: str) -> pa.Table:
    raw = json.loads((FIXTURES / "tiingo_crypto" / "crypto_price_history.body.json").read_bytes())
    req = SourceRequest(pair, ("crypto_bars",), D(2019, 5, 1), D(2019, 5, 2))
    table: pa.Table = TiingoCryptoSource().parse(req, raw)["crypto_bars"]
    return table


def yahoo_btc() -> pa.Table:
    """Yahoo's BTC-USD daily bars 2020-01-01..03 as crypto_bars of a venue called yahoo."""
    out = parse(body(NODE / "chart-BTC-USD-2020-01-01-to-2020-01-03.json"), "BTC-USD", later=[])
    rows = out["prices"].to_pylist()
    return pa.Table.from_pylist(
        [
            {
                "ts": dt.datetime.combine(r["date"], dt.time(), UTC),
                "exchange": "yahoo",
                **{k: r[k] for k in ("open", "high", "low", "close")},
                "volume": float(r["volume"]),
            }
            for r in rows
        ],
        schema=CRYPTO_BARS.schema,
    )


# --- registry and docs -------------------------------------------------------------------------

ISSUE_RULES = {
    "prices.calendar",
    "prices.gaps",
    "prices.ohlc_missing",
    "prices.high_bound",
    "prices.low_bound",
    "prices.low_nonnegative",
    "prices.volume_nonnegative",
    "prices.adj_close_consistency",
    "prices.suspicious_jump",
    "bars_minute.session_rows",
    "bars_minute.high_bound",
    "bars_minute.low_bound",
    "bars_minute.ohlc_missing",
    "bars_minute.open_gap",
    "bars_minute.daily_mismatch",
    "fundamentals.required_fields",
    "fundamentals.balance_sheet",
    "fundamentals.filing_lag",
    "fundamentals.negative_values",
    "crypto_bars.gaps",
    "crypto_bars.cross_exchange",
    "freshness.stale",
}


def test_registry_has_the_issue_rules_and_docs_list_every_rule() -> None:
    names = {r.name for r in list_rules()}
    assert names >= ISSUE_RULES
    doc = DOCS.read_text()
    for rule in list_rules():
        assert rule.severity in SEVERITIES and rule.description and rule.datasets
        assert f"`{rule.name}`" in doc, f"docs/quality.md does not describe {rule.name}"
    assert get_rule("prices.gaps") is RULES["prices.gaps"]
    with pytest.raises(MarketlakeError, match=r"unknown rule 'prices\.nope'; known rules: "):
        get_rule("prices.nope")
    assert {r.name for r in rules_for("fundamentals")} == {
        "fundamentals.required_fields",
        "fundamentals.balance_sheet",
        "fundamentals.filing_lag",
        "fundamentals.negative_values",
        "read_error",
    }
    with pytest.raises(MarketlakeError, match="has no parameter"):
        check("prices", quandl("MSFT")[0], ticker="MSFT", params={"prices.gaps": {"x": 1}})


# --- daily bars: clean real data ---------------------------------------------------------------


@pytest.mark.parametrize("ticker", ["AAPL", "MSFT", "BRK_A", "ZEN"])
def test_quandl_2014_is_clean(ticker: str) -> None:
    prices, actions, _ = quandl(ticker)
    assert check("prices", prices, ticker=ticker, actions=actions).num_rows == 0


@pytest.mark.parametrize(
    ("name", "ticker", "later"),
    [
        (
            "historical-via-chart-dividends-TSLA-no-dividends.json.gz",
            "TSLA",
            ((2020, 8, 31, 5), (2022, 8, 25, 3)),
        ),
        (
            "historical-via-chart-NVDA-split-2021-02-01-to-2022-01-31.csv.json",
            "NVDA",
            ((2024, 6, 10, 10),),
        ),
        ("historical-via-chart-MSFT-dividends-2021-02-01-to-2022-01-31.csv.json", "MSFT", ()),
        ("chart-AAPL-2020-08-31-to-2020-11-07.json", "AAPL", ()),
    ],
)
def test_yahoo_histories_are_clean(name: str, ticker: str, later: tuple[Any, ...]) -> None:
    out = yahoo(name, ticker, later)
    assert (
        check("prices", out["prices"], ticker=ticker, actions=out["corporate_actions"]).num_rows
        == 0
    )


def test_calm_with_its_dividends_is_clean() -> None:
    prices, actions = calm()
    assert actions.num_rows == 10
    assert check("prices", prices, ticker="CALM", actions=actions).num_rows == 0


# --- daily bars: real quirks and missing corporate actions -----------------------------------


def test_nvda_dividends_missing_from_a_split_events_answer() -> None:
    """The NVDA body was requested with split events only: its $0.16 and $0.04 dividends
    (0.02-0.03% of the price) are not in the lake but are in Yahoo's adjclose. Below the default
    0.1% resolution; a finer tolerance finds exactly NVDA's four 2021 ex-dividend dates."""
    out = nvda()
    prices, actions = out["prices"], out["corporate_actions"]
    assert check("prices", prices, ticker="NVDA", actions=actions).num_rows == 0
    fine = check(
        "prices",
        prices,
        ticker="NVDA",
        actions=actions,
        params={"prices.adj_close_consistency": {"tolerance": 1e-4}},
    )
    rule = "prices.adj_close_consistency"
    assert found(fine) == {
        (rule, "warning", "2021-03-09"),
        (rule, "warning", "2021-06-09"),
        (rule, "warning", "2021-08-31"),
        (rule, "warning", "2021-12-01"),
    }


def test_calm_without_its_dividends_flags_each_dividend_date() -> None:
    prices, actions = calm()
    got = check("prices", prices, ticker="CALM")
    dividends = {str(d) for d in actions.column("ex_date").to_pylist()}
    # the 0.006 dividend of 2023-10-31 (0.013% of the price) is below the 0.1% resolution
    assert found(got) == {
        ("prices.adj_close_consistency", "warning", day) for day in dividends - {"2023-10-31"}
    }
    assert all("no corporate actions stored" in d for d in details(got))
    # one dividend missing from otherwise complete actions: that date only
    fewer = actions.filter(pc.not_equal(actions.column("ex_date"), pa.scalar(D(2023, 4, 25))))
    got = check("prices", prices, ticker="CALM", actions=fewer)
    assert found(got) == {("prices.adj_close_consistency", "warning", "2023-04-25")}
    assert "adjustment factor of 0.959533 from 2023-04-24 to 2023-04-25" in details(got)[0]


def test_missing_split_is_flagged_on_its_ex_date_only() -> None:
    prices, actions, _ = quandl("AAPL")
    no_split = actions.filter(pc.not_equal(actions.column("action"), "split"))
    got = check("prices", prices, ticker="AAPL", actions=no_split)
    assert found(got) == {
        ("prices.adj_close_consistency", "error", "2014-06-09"),
        ("prices.suspicious_jump", "warning", "2014-06-09"),
    }
    text = " ".join(details(got))
    assert "adjustment factor of 0.142857 from 2014-06-06 to 2014-06-09" in text
    assert "close moved -85.49% from 645.57 (2014-06-06) to 93.7" in text
    # TSLA stored without its two splits
    got = check("prices", tsla()["prices"], ticker="TSLA")
    assert found(got) == {
        ("prices.adj_close_consistency", "error", "2020-08-31"),
        ("prices.suspicious_jump", "warning", "2020-08-31"),
        ("prices.adj_close_consistency", "error", "2022-08-25"),
        ("prices.suspicious_jump", "warning", "2022-08-25"),
    }


# --- daily bars: broken copies ---------------------------------------------------------------

DAY = D(2014, 5, 28)  # an ordinary AAPL session (Wednesday)


def test_dropped_sessions() -> None:
    prices, actions, _ = quandl("AAPL")
    one = drop_rows(prices, pc.equal(prices.column("date"), pa.scalar(DAY)))
    got = check("prices", one, ticker="AAPL", actions=actions)
    assert found(got) == {("prices.gaps", "error", "2014-05-28")}
    assert details(got) == ["session 2014-05-28 missing"]
    # three sessions in a row around the Independence Day holiday: one violation
    days = [D(2014, 7, 2), D(2014, 7, 3), D(2014, 7, 7)]
    three = drop_rows(prices, pc.is_in(prices.column("date"), pa.array(days)))
    got = check("prices", three, ticker="AAPL", actions=actions)
    assert found(got) == {("prices.gaps", "error", "2014-07-02")}
    assert details(got) == ["3 sessions missing: 2014-07-02 .. 2014-07-07"]


def test_row_on_a_holiday_or_weekend() -> None:
    prices, actions, _ = quandl("MSFT")
    rows = prices.to_pylist()
    base = next(r for r in rows if r["date"] == D(2014, 7, 3))
    rows += [{**base, "date": D(2014, 7, 4)}, {**base, "date": D(2014, 7, 5)}]
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["date"]), schema=PRICES.schema)
    got = check("prices", table, ticker="MSFT", actions=actions)
    assert found(got) == {
        ("prices.calendar", "error", "2014-07-04"),
        ("prices.calendar", "error", "2014-07-05"),
    }
    assert details(got)[0] == (
        "a row dated 2014-07-04 (Fri), which is not a XNYS session (weekend or holiday)"
    )


def test_high_below_low_bar() -> None:
    prices, actions, _ = quandl("AAPL")
    row = next(r for r in prices.to_pylist() if r["date"] == DAY)
    broken = replace_row(prices, DAY, "date", high=row["low"], low=row["high"])
    got = check("prices", broken, ticker="AAPL", actions=actions)
    assert found(got) == {
        ("prices.high_bound", "error", "2014-05-28"),
        ("prices.low_bound", "error", "2014-05-28"),
    }


def test_hundredfold_unit_error() -> None:
    prices, actions, _ = quandl("AAPL")
    row = next(r for r in prices.to_pylist() if r["date"] == DAY)
    scaled = {k: row[k] * 100 for k in ("open", "high", "low", "close", "adj_close")}
    got = check(
        "prices", replace_row(prices, DAY, "date", **scaled), ticker="AAPL", actions=actions
    )
    # the bar jumps 100x and the next session comes straight back: one violation, on the bar
    assert found(got) == {("prices.suspicious_jump", "warning", "2014-05-28")}
    assert "an isolated bad bar" in details(got)[0]
    # only the close in cents: the bar is inconsistent too, still only that date
    got = check(
        "prices",
        replace_row(prices, DAY, "date", close=row["close"] * 100),
        ticker="AAPL",
        actions=actions,
    )
    assert found(got) == {
        ("prices.high_bound", "error", "2014-05-28"),
        ("prices.suspicious_jump", "warning", "2014-05-28"),
        ("prices.adj_close_consistency", "error", "2014-05-28"),
    }


def test_missing_and_negative_values() -> None:
    prices, actions, _ = quandl("MSFT")
    broken = replace_row(prices, DAY, "date", close=float("nan"))
    broken = replace_row(broken, D(2014, 6, 2), "date", volume=-5)
    broken = replace_row(broken, D(2014, 6, 3), "date", low=-1.0)
    got = check("prices", broken, ticker="MSFT", actions=actions)
    assert found(got) == {
        ("prices.ohlc_missing", "error", "2014-05-28"),
        ("prices.volume_nonnegative", "error", "2014-06-02"),
        ("prices.low_nonnegative", "error", "2014-06-03"),
    }
    assert "missing close (null or NaN)" in details(got)


def test_many_tickers_at_once_equal_one_by_one() -> None:
    """The rules run vectorised over a long table: neighbouring tickers never mix (AAPL's last
    close next to BRK_A's first would be a 170000% 'jump'), and ZEN's listing on 2014-05-15 is
    no gap."""
    tables, acts, single = [], [], []
    for ticker in ("AAPL", "BRK_A", "ZEN", "MSFT"):
        prices, actions, _ = quandl(ticker)
        if ticker == "AAPL":  # broken: the split is missing
            actions = actions.filter(pc.not_equal(actions.column("action"), "split"))
        if ticker == "MSFT":  # broken: a dropped session
            prices = drop_rows(prices, pc.equal(prices.column("date"), pa.scalar(DAY)))
        name = "BRK.A" if ticker == "BRK_A" else ticker
        tick = pa.array([name] * prices.num_rows)
        tables.append(prices.add_column(0, "ticker", tick))
        acts.append(
            actions.add_column(0, "ticker", pa.array([name] * actions.num_rows, pa.string()))
        )
        single.append(check("prices", prices, ticker=name, actions=actions))
    long = check("prices", pa.concat_tables(tables[::-1]), actions=pa.concat_tables(acts))
    assert long.equals(pa.concat_tables(single))
    assert sorted(set(long.column("ticker").to_pylist())) == ["AAPL", "MSFT"]


def test_since_and_first_dates() -> None:
    prices, actions, _ = quandl("ZEN")  # listed 2014-05-15
    window = prices.filter(pc.greater_equal(prices.column("date"), pa.scalar(D(2014, 6, 2))))
    # rows read from a look-back window: the earlier sessions are not expected...
    assert check("prices", window, ticker="ZEN", actions=actions).num_rows == 0
    # ...unless the catalog says the ticker started earlier: then they are missing
    got = check("prices", window, ticker="ZEN", first_dates={"ZEN": D(2014, 5, 15)})
    assert found(got) == {("prices.gaps", "error", "2014-05-15")}
    assert details(got) == ["11 sessions missing: 2014-05-15 .. 2014-05-30"]
    # since: the expected sessions and the report start there
    got = check(
        "prices", window, ticker="ZEN", first_dates={"ZEN": D(2014, 5, 15)}, since=D(2014, 5, 28)
    )
    assert details(got) == ["3 sessions missing: 2014-05-28 .. 2014-05-30"]
    broken = drop_rows(prices, pc.equal(prices.column("date"), pa.scalar(D(2014, 6, 10))))
    assert check("prices", broken, ticker="ZEN", since=D(2014, 7, 1)).num_rows == 0
    assert check("prices", broken, ticker="ZEN", since=D(2014, 6, 10)).num_rows == 1


# --- minute bars -------------------------------------------------------------------------------


def test_ea_15_minute_bars_are_clean_until_the_recording_time() -> None:
    bars = ea()
    assert bars.num_rows == 319
    assert check("bars_minute", bars, ticker="EA", now=EA_RECORDED).num_rows == 0
    # checked later, the last session (recorded at 14:15 New York) is incomplete: a real quirk
    got = check("bars_minute", bars, ticker="EA", now=dt.datetime(2026, 11, 1, tzinfo=UTC))
    assert found(got) == {("bars_minute.session_rows", "warning", "2026-06-03")}
    assert details(got) == [
        "20 regular-session bars, expected 26 (15-minute bars, 13:30 to 20:00 UTC)"
    ]


def test_ea_against_its_daily_bars() -> None:
    bars = ea()
    daily = ea_daily(bars)
    got = check("bars_minute", bars, ticker="EA", daily=daily, now=EA_RECORDED)
    assert got.num_rows == 0
    # a 100x unit error inside a session: its aggregate no longer matches the daily bar
    ts = dt.datetime(2026, 5, 28, 16, 0, tzinfo=UTC)
    row = next(r for r in bars.to_pylist() if r["ts"] == ts)
    scaled = {k: row[k] * 100 for k in ("open", "high", "low", "close")}
    broken = replace_row(bars, ts, "ts", **scaled)
    got = check("bars_minute", broken, ticker="EA", daily=daily, now=EA_RECORDED)
    assert found(got) == {("bars_minute.daily_mismatch", "warning", "2026-05-28")}
    assert details(got)[0].startswith("minute bars aggregate to high ")
    # the same error on a session's first bar also breaks the open gap
    first = dt.datetime(2026, 5, 29, 13, 30, tzinfo=UTC)
    row = next(r for r in bars.to_pylist() if r["ts"] == first)
    broken = replace_row(
        bars, first, "ts", **{k: row[k] * 100 for k in ("open", "high", "low", "close")}
    )
    got = check("bars_minute", broken, ticker="EA", daily=daily, now=EA_RECORDED)
    assert found(got) == {
        ("bars_minute.daily_mismatch", "warning", "2026-05-29"),
        ("bars_minute.open_gap", "warning", "2026-05-29 13:30"),
    }


def test_ea_dropped_session_dropped_bar_and_bad_bar() -> None:
    bars = ea()
    day = pa.array([ts.date() == D(2026, 5, 28) for ts in bars.column("ts").to_pylist()])
    got = check("bars_minute", drop_rows(bars, day), ticker="EA", now=EA_RECORDED)
    assert found(got) == {("bars_minute.session_rows", "warning", "2026-05-28")}
    assert details(got) == ["session missing: no regular-session bar (expected 26 15-minute bars)"]
    gone = dt.datetime(2026, 5, 27, 17, 0, tzinfo=UTC)
    one = pa.array([ts == gone for ts in bars.column("ts").to_pylist()])
    got = check("bars_minute", drop_rows(bars, one), ticker="EA", now=EA_RECORDED)
    assert found(got) == {("bars_minute.session_rows", "warning", "2026-05-27")}
    assert details(got)[0].startswith("25 regular-session bars, expected 26")
    ts = dt.datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    row = next(r for r in bars.to_pylist() if r["ts"] == ts)
    got = check(
        "bars_minute",
        replace_row(bars, ts, "ts", high=row["low"], low=row["high"]),
        ticker="EA",
        now=EA_RECORDED,
    )
    assert found(got) == {
        ("bars_minute.high_bound", "error", "2026-06-01 15:00"),
        ("bars_minute.low_bound", "error", "2026-06-01 15:00"),
    }


def test_iex_30_minute_session_and_half_days() -> None:
    raw = json.loads((FIXTURES / "tiingo" / "intraday_price.body.json").read_bytes())
    iex = parse_iex_rows(raw)  # GOOGL 2018-01-02, 13 bars of 30 minutes, no volume
    rules = ["bars_minute.session_rows", "bars_minute.high_bound", "bars_minute.low_bound"]
    assert check("bars_minute", iex, ticker="GOOGL", rules=rules).num_rows == 0
    got = check("bars_minute", iex.slice(0, 12), ticker="GOOGL", rules=rules)
    assert details(got) == [
        "12 regular-session bars, expected 13 (30-minute bars, 14:30 to 21:00 UTC)"
    ]

    # one-minute bars: 390 on a full session, 210 on the 2024-11-29 half day (close 13:00 NY)
    def minutes(day: dt.date, start: dt.time, n: int) -> list[dict[str, Any]]:
        t0 = dt.datetime.combine(day, start, UTC)
        return [
            {
                "ts": t0 + dt.timedelta(minutes=i),
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1,
            }
            for i in range(n)
        ]

    full = minutes(D(2024, 11, 27), dt.time(14, 30), 390)
    half = minutes(D(2024, 11, 29), dt.time(14, 30), 240)  # 30 minutes past the early close
    table = pa.Table.from_pylist(full + half, schema=BARS_MINUTE.schema)
    assert check("bars_minute", table, ticker="X", rules=rules).num_rows == 0
    short = pa.Table.from_pylist(full + half[:200], schema=BARS_MINUTE.schema)
    got = check("bars_minute", short, ticker="X", rules=rules)
    assert details(got) == [
        "200 regular-session bars, expected 210 (1-minute bars, 14:30 to 18:00 UTC)"
    ]


# --- crypto --------------------------------------------------------------------------------------


def test_tiingo_crypto_bitfinex_premium_is_the_only_divergence() -> None:
    btc = tiingo_crypto("BTC-USD")
    got = check("crypto_bars", btc, ticker="BTC-USD")
    # Bitfinex traded ~4.5% above the other venues in May 2019 (a real, well-known premium)
    assert found(got) == {
        ("crypto_bars.cross_exchange", "warning", "2019-05-01 00:00"),
        ("crypto_bars.cross_exchange", "warning", "2019-05-02 00:00"),
    }
    assert (
        details(got)[0] == "bitfinex close 5629.5 is +4.58% from the median 5383.2 of 5 exchanges"
    )
    assert check("crypto_bars", tiingo_crypto("FLDC-BTC"), ticker="FLDC-BTC").num_rows == 0
    # two venues only: both are flagged against each other
    two = btc.filter(pc.is_in(btc.column("exchange"), pa.array(["binance", "bitfinex"])))
    got = check("crypto_bars", two, ticker="BTC-USD")
    assert len(found(got)) == 2 and got.num_rows == 4
    assert "binance close 5383.2 is -4.38% from bitfinex's 5629.5" in details(got)


def test_crypto_divergent_venue_and_missing_bar() -> None:
    btc = pa.concat_tables([tiingo_crypto("BTC-USD"), yahoo_btc()])
    clean = check("crypto_bars", btc, ticker="BTC-USD", rules=["crypto_bars.gaps"])
    assert clean.num_rows == 0
    # a dropped day on one venue
    jan2 = dt.datetime(2020, 1, 2, tzinfo=UTC)
    day = pa.array([r["exchange"] == "yahoo" and r["ts"] == jan2 for r in btc.to_pylist()])
    got = check("crypto_bars", drop_rows(btc, day), ticker="BTC-USD", rules=["crypto_bars.gaps"])
    assert found(got) == {("crypto_bars.gaps", "warning", "2020-01-02 00:00")}
    assert details(got) == [
        "1 1d bar(s) missing on yahoo: 2020-01-02 00:00 .. 2020-01-02 00:00 UTC"
    ]
    # gdax 6% off on one day: flagged on that bar, Bitfinex's premium as before
    rows = tiingo_crypto("BTC-USD").to_pylist()
    for r in rows:
        if r["exchange"] == "gdax" and r["ts"].day == 2:
            r["close"] *= 0.94
            r["low"] = min(r["low"], r["close"])
    got = check(
        "crypto_bars", pa.Table.from_pylist(rows, schema=CRYPTO_BARS.schema), ticker="BTC-USD"
    )
    assert sum("gdax close" in d for d in details(got)) == 1
    assert got.num_rows == 3


# --- fundamentals --------------------------------------------------------------------------------

MUR_LATE = {"2009-08-07", "2009-11-06", "2010-05-07"}  # first XBRL filings (comparatives)


def test_mur_fundamentals_real_quirks() -> None:
    got = check("fundamentals", mur(), ticker="MUR")
    lag = [d for d in details(got) if "first filed" in d]
    # periods before MUR's first XBRL filing (2009-08-07) are known only from later filings
    assert sorted(d.split(" first")[0] for d in lag) == [
        "period 2007-12-31",
        "period 2008-06-30",
        "period 2008-09-30",
        "period 2008-12-31",
        "period 2009-03-31",
    ]
    # Q4 derived as FY - 9M turns negative where the 10-K restated the year for the 2013 spin-off
    # of Murphy USA (discontinued operations) but the 10-Q year-to-date values were not
    negative = [d for d in details(got) if d.startswith("negative revenue")]
    assert [d.split(": ")[1] for d in negative] == [
        "period 2011-12-31 Q4 (10-K filed 2014-02-28)",
        "period 2013-12-31 Q4 (10-K filed 2014-02-28)",
        "period 2012-12-31 Q4 (10-K filed 2014-02-28)",
        "period 2017-12-31 Q4 (10-K filed 2020-02-27)",
    ]
    assert {(r, s) for r, s, _ in found(got)} == {
        ("fundamentals.filing_lag", "warning"),
        ("fundamentals.negative_values", "error"),
    }
    assert got.num_rows == 9


def test_mur_broken_rows() -> None:
    table = mur()
    baseline = found(check("fundamentals", table, ticker="MUR"))
    rows = table.to_pylist()
    i = next(i for i, r in enumerate(rows) if r["period_end"] == D(2015, 6, 30))
    j = next(i for i, r in enumerate(rows) if r["period_end"] == D(2016, 9, 30))
    rows[i] = {**rows[i], "total_assets": -rows[i]["total_assets"]}
    rows[j] = {**rows[j], "form": None}
    broken = pa.Table.from_pylist(rows, schema=table.schema)
    got = found(check("fundamentals", broken, ticker="MUR")) - baseline
    assert got == {
        ("fundamentals.negative_values", "error", str(rows[i]["filed"])),
        ("fundamentals.required_fields", "error", str(rows[j]["filed"])),
    }
    # a period first reported 120 days late
    firsts = [r for r in rows if r["period_end"] == D(2019, 3, 31)]
    late = D(2019, 3, 31) + dt.timedelta(days=120)
    keep = [r for r in rows if r["period_end"] != D(2019, 3, 31)]
    moved = [{**firsts[0], "filed": late}, *[r for r in firsts[1:] if r["filed"] > late]]
    got = found(
        check("fundamentals", pa.Table.from_pylist(keep + moved, schema=table.schema), ticker="MUR")
    )
    assert got - found(
        check("fundamentals", pa.Table.from_pylist(rows, schema=table.schema), ticker="MUR")
    ) == {("fundamentals.filing_lag", "warning", str(late))}


def test_balance_sheet_needs_equity_and_holds_for_mur() -> None:
    rule = ["fundamentals.balance_sheet"]
    assert check("fundamentals", mur(), ticker="MUR", rules=rule).num_rows == 0  # no equity column
    table = mur_equity()
    assert pc.count(table.column("total_equity")).as_py() == 118
    assert check("fundamentals", table, ticker="MUR", rules=rule).num_rows == 0
    rows = table.to_pylist()
    i = next(
        i
        for i, r in enumerate(rows)
        if r["total_equity"] is not None and r["period_end"] == D(2020, 12, 31)
    )
    rows[i] = {**rows[i], "total_liabilities": rows[i]["total_liabilities"] * 1.1}
    got = check(
        "fundamentals", pa.Table.from_pylist(rows, schema=table.schema), ticker="MUR", rules=rule
    )
    assert found(got) == {("fundamentals.balance_sheet", "warning", str(rows[i]["filed"]))}


# --- freshness -----------------------------------------------------------------------------------

NOW = dt.datetime(2024, 12, 4, 12, 0, tzinfo=UTC)  # Wednesday; Tuesday's session closed 21:00


def asset(ticker: str, datasets: tuple[str, ...] = ("prices",), **kw: Any) -> MonitoredAsset:
    return MonitoredAsset(
        ticker=ticker,
        source="yahoo",
        datasets=datasets,
        added_at="2024-01-02T00:00:00.000000Z",
        **kw,
    )


def mark(ticker: str, last: dt.date | None, dataset: str = "prices") -> ProgressRow:
    return ProgressRow(dataset=dataset, ticker=ticker, source="yahoo", last_date=last)


def test_freshness() -> None:
    monitored = [
        asset("FRESH"),  # has Tuesday 2024-12-03; Wednesday's session has not closed
        asset("LATE1"),  # has Monday; Tuesday closed 21:00 UTC, 15 h ago: in time
        asset("WARN"),  # has Friday 11-29; Monday 12-02 closed 39 h ago: warning
        asset("STALE"),  # has 11-26; 11-27 closed 159 h ago: error
        asset("OFF", active=False),  # paused: not checked
        asset("WEEKLY", frequency="weekly"),  # has 11-26: the session of 12-03 is due next
        asset("NEVER", ("prices", "fundamentals")),  # never collected; fundamentals: no cadence
        asset("BTC-USD", ("crypto_bars",)),  # has 12-01; the UTC day 12-02 was due 12-03 00:00
    ]
    progress = [
        mark("FRESH", D(2024, 12, 3)),
        mark("LATE1", D(2024, 12, 2)),
        mark("WARN", D(2024, 11, 29)),
        mark("STALE", D(2024, 11, 26)),
        mark("OFF", D(2020, 1, 2)),
        mark("WEEKLY", D(2024, 11, 26)),
        mark("BTC-USD", D(2024, 12, 1), "crypto_bars"),
    ]
    got = freshness_violations(monitored, progress, NOW)
    assert [(r["ticker"], r["dataset"], r["severity"]) for r in got.to_pylist()] == [
        ("WARN", "prices", "warning"),
        ("STALE", "prices", "error"),
        ("NEVER", "prices", "error"),
        ("BTC-USD", "crypto_bars", "warning"),
    ]
    rows = {r["ticker"]: r for r in got.to_pylist()}
    assert rows["WARN"]["date"] == D(2024, 11, 29)
    assert rows["WARN"]["ts"] == dt.datetime(2024, 12, 2, 21, 0, tzinfo=UTC)
    assert rows["WARN"]["detail"] == (
        "yahoo: last session 2024-11-29; the session of 2024-12-02 was due at its close "
        "(2024-12-02 21:00 UTC)"
    )
    assert "never collected since it was added on 2024-01-02" in rows["NEVER"]["detail"]
    assert rows["BTC-USD"]["detail"] == (
        "yahoo: last bar 2024-12-01; the UTC day 2024-12-02 was due (2024-12-03 00:00 UTC)"
    )
    later = freshness_violations(monitored, progress, NOW + dt.timedelta(days=1))
    assert {(r["ticker"], r["severity"]) for r in later.to_pylist()} == {
        ("LATE1", "warning"),
        ("WARN", "error"),
        ("STALE", "error"),
        ("WEEKLY", "warning"),
        ("NEVER", "error"),
        ("BTC-USD", "error"),
    }
    # a half day's data is due at its early close: 2024-11-29 closes 18:00 UTC
    at = dt.datetime(2024, 11, 30, 18, 30, tzinfo=UTC)
    half = freshness_violations([asset("H")], [mark("H", D(2024, 11, 27))], at)
    assert half.column("ts").to_pylist() == [dt.datetime(2024, 11, 29, 18, 0, tzinfo=UTC)]
    assert half.column("severity").to_pylist() == ["warning"]
    with pytest.raises(MarketlakeError, match="no time zone"):
        freshness_violations(monitored, progress, dt.datetime(2024, 12, 4))


def test_stale_asset_is_the_only_freshness_violation() -> None:
    monitored = [asset(t) for t in ("AAA", "BBB", "CCC")]
    progress = [
        mark("AAA", D(2024, 12, 3)),
        mark("BBB", D(2024, 12, 3)),
        mark("CCC", D(2024, 11, 27)),
    ]
    got = freshness_violations(monitored, progress, NOW)
    assert [(r["ticker"], r["rule"], r["severity"]) for r in got.to_pylist()] == [
        ("CCC", "freshness.stale", "error")
    ]


def test_violation_tables_are_tidy() -> None:
    prices, _, _ = quandl("AAPL")
    got = check("prices", prices, ticker="AAPL")  # no actions: the split and dividends flagged
    assert got.schema == VIOLATION_SCHEMA
    assert {str(d) for d in got.column("date").to_pylist()} == {
        "2014-02-06",
        "2014-05-08",
        "2014-06-09",
        "2014-08-07",
        "2014-11-06",
    }
    row = got.to_pylist()[0]
    assert set(row) == {"ticker", "dataset", "date", "ts", "rule", "severity", "detail"}
    assert row["ticker"] == "AAPL" and row["dataset"] == "prices" and row["ts"] is None
    assert np.all(np.isin(got.column("severity").to_numpy(zero_copy_only=False), SEVERITIES))
    with pytest.raises(MarketlakeError, match="pass ticker="):
        check("prices", prices)
