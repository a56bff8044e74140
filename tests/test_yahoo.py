"""Yahoo chart API v8 source: parser tests on real recorded responses, fetch and end-to-end
ingest through a fake transport (no network).

Fixtures: tests/fixtures/yahoo_chart (see its PROVENANCE.md) and the Quandl WIKI sample in
tests/fixtures/daily_ohlcv (raw + adjusted prices, an independent check of the split undo).
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import gzip
import hashlib
import io
import itertools
import json
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

import marketlake
from marketlake import Lake
from marketlake.errors import NoDataError, SourceError
from marketlake.ingest.batch import run_batch
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source
from marketlake.sources.yahoo import YahooChartSource, minute_windows, to_yahoo_symbol

FIXTURES = Path(__file__).parent / "fixtures"
YF = FIXTURES / "yahoo_chart" / "yfinance-rs"
NODE = FIXTURES / "yahoo_chart" / "node-yahoo-finance2"
ALL = ("prices", "corporate_actions", "bars_minute")
WIDE = (dt.date(1900, 1, 1), dt.date(2100, 12, 31))


def body(path: Path) -> dict[str, Any]:
    """The Yahoo body of a fixture (node-yahoo-finance2 recordings wrap it in an envelope)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    doc: dict[str, Any] = json.loads(data)
    if "response" in doc:  # recording envelope
        inner: dict[str, Any] = doc["response"]["bodyJson"]
        return inner
    return doc


def utc(y: int, m: int, d: int, hh: int = 13, mm: int = 30) -> int:
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=dt.UTC).timestamp())


def split(y: int, m: int, d: int, num: int, den: int = 1) -> dict[str, int]:
    """A split event in Yahoo's shape (date = the session's open, 09:30 New York)."""
    return {"date": utc(y, m, d), "numerator": num, "denominator": den}


def parse(
    raw: dict[str, Any],
    ticker: str,
    datasets: tuple[str, ...] = ("prices", "corporate_actions"),
    later: list[dict[str, int]] | None = None,
    start: dt.date = WIDE[0],
    end: dt.date = WIDE[1],
) -> dict[str, pa.Table]:
    if later is not None:
        raw = {**raw, "later_splits": later}
    out = YahooChartSource().parse(SourceRequest(ticker, datasets, start, end), raw)
    for name, table in out.items():  # every table is exactly canonical
        assert table.schema == get_dataset(name).schema
        assert conform(table, get_dataset(name), ticker).equals(table)
    return out


def rows(table: pa.Table) -> dict[dt.date, dict[str, Any]]:
    return {r["date"]: r for r in table.to_pylist()}


def actions(table: pa.Table) -> list[tuple[dt.date, str, float]]:
    return [(r["ex_date"], r["action"], r["value"]) for r in table.to_pylist()]


# --- symbols and planning ----------------------------------------------------------------------


def test_symbol_mapping() -> None:
    assert to_yahoo_symbol("BRK.B") == "BRK-B"
    assert to_yahoo_symbol("BF.B") == "BF-B"
    for kept in ("AAPL", "VOD.L", "GS2C.DE", "7203.T", "SHOP.TO", "BTC-USD", "^GSPC", "ABC.V"):
        assert to_yahoo_symbol(kept) == kept


def test_minute_windows_are_7_days_and_clamped_to_30_days() -> None:
    now = dt.datetime(2025, 3, 3, 12, tzinfo=dt.UTC)
    wins = minute_windows(dt.date(2025, 1, 1), dt.date(2025, 3, 3), now)
    assert wins[0][0] >= now.timestamp() - 30 * 86400 and wins[-1][1] == now.timestamp()
    assert all(0 < hi - lo <= 7 * 86400 for lo, hi in wins)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(wins))  # contiguous
    assert len(wins) == 5
    assert minute_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 31), now) == []  # too old


# --- daily bars ----------------------------------------------------------------------------------


def test_aapl_6mo_daily_bars_and_dividends() -> None:
    out = parse(body(YF / "history_chart_AAPL.json"), "AAPL")
    prices = rows(out["prices"])
    assert len(prices) == 127
    first, last = prices[dt.date(2025, 4, 30)], prices[dt.date(2025, 10, 29)]
    assert (first["open"], first["close"], first["volume"]) == (209.3, 212.5, 52286500)
    assert first["adj_close"] == pytest.approx(211.981125, abs=1e-5)
    # the last bar is stamped 20:00:01 UTC (after the close: regularMarketTime is past the
    # session end), so it is a finished session and is kept
    assert (last["close"], last["volume"]) == (269.7, 43332154)
    assert actions(out["corporate_actions"]) == [
        (dt.date(2025, 5, 12), "dividend", 0.26),
        (dt.date(2025, 8, 11), "dividend", 0.26),
    ]
    assert out["corporate_actions"].column("currency").to_pylist() == ["USD", "USD"]


def test_msft_6mo_daily_bars() -> None:
    out = parse(body(YF / "history_chart_MSFT.json"), "MSFT")
    assert out["prices"].num_rows == 127
    assert [a[1] for a in actions(out["corporate_actions"])] == ["dividend", "dividend"]
    dates = out["prices"].column("date").to_pylist()
    assert dates[0] == dt.date(2025, 4, 30) and dates[-1] == dt.date(2025, 10, 29)
    assert dates == sorted(set(dates))


def test_partial_last_bar_is_skipped_while_the_market_is_open() -> None:
    raw = body(YF / "history_chart_AAPL.json")
    live = copy.deepcopy(raw)
    meta = live["chart"]["result"][0]["meta"]
    last_ts = live["chart"]["result"][0]["timestamp"][-1]
    meta["regularMarketTime"] = last_ts - 3 * 3600  # 12:00 New York, mid-session
    live["chart"]["result"][0]["timestamp"][-1] = last_ts - 3 * 3600
    out = parse(live, "AAPL", ("prices",))
    assert out["prices"].num_rows == 126
    assert out["prices"].column("date").to_pylist()[-1] == dt.date(2025, 10, 28)


def test_bars_with_null_prices_are_dropped() -> None:
    raw = copy.deepcopy(body(YF / "history_chart_AAPL.json"))
    quote = raw["chart"]["result"][0]["indicators"]["quote"][0]
    quote["close"][3] = None
    quote["volume"][4] = None  # volume alone missing: the bar is kept with volume 0
    out = rows(parse(raw, "AAPL", ("prices",))["prices"])
    assert len(out) == 126 and dt.date(2025, 5, 5) not in out
    assert out[dt.date(2025, 5, 6)]["volume"] == 0


def test_non_us_exchange_session_dates() -> None:
    out = parse(body(YF / "history_chart_GS2C.DE.json"), "GS2C.DE")
    assert "corporate_actions" not in out  # no events: no empty table
    prices = out["prices"]
    assert prices.column("date").to_pylist() == [dt.date(2025, 10, d) for d in (23, 24, 27, 28, 29)]
    assert prices.column("close").to_pylist()[-1] == 19.948
    # a bar at 14:30 UTC is already the next day in Auckland (UTC+13 in January)
    raw = copy.deepcopy(body(NODE / "chart-AAPL-2020-01-01-to-2020-01-03.json"))
    meta = raw["chart"]["result"][0]["meta"]
    meta["exchangeTimezoneName"] = "Pacific/Auckland"
    got = parse(raw, "X", ("prices",), later=[])["prices"]
    assert got.column("date").to_pylist() == [dt.date(2020, 1, 3)]
    del meta["exchangeTimezoneName"]
    meta["gmtoffset"] = 13 * 3600  # fallback: the fixed offset
    got = parse(raw, "X", ("prices",), later=[])["prices"]
    assert got.column("date").to_pylist() == [dt.date(2020, 1, 3)]


def test_crypto_trades_every_day() -> None:
    out = parse(body(NODE / "chart-BTC-USD-2020-01-01-to-2020-01-03.json"), "BTC-USD", later=[])
    prices = rows(out["prices"])
    assert sorted(prices) == [dt.date(2020, 1, d) for d in (1, 2, 3)]  # 1 January included
    assert prices[dt.date(2020, 1, 1)]["close"] == pytest.approx(7200.1743)
    assert prices[dt.date(2020, 1, 3)]["volume"] == 28111481032


def test_range_filter() -> None:
    out = parse(
        body(YF / "history_chart_AAPL.json"),
        "AAPL",
        start=dt.date(2025, 5, 12),
        end=dt.date(2025, 5, 16),
    )
    assert out["prices"].num_rows == 5
    assert actions(out["corporate_actions"]) == [(dt.date(2025, 5, 12), "dividend", 0.26)]


# --- splits: the raw prices are recovered --------------------------------------------------------


def test_aapl_2020_split_event_and_previous_close() -> None:
    raw = body(NODE / "chart-AAPL-2020-08-31-to-2020-11-07.json")
    out = parse(raw, "AAPL", later=[])  # AAPL has not split since 2020-08-31
    assert actions(out["corporate_actions"]) == [
        (dt.date(2020, 8, 31), "split", 4.0),
        (dt.date(2020, 11, 6), "dividend", 0.205),
    ]
    ca = out["corporate_actions"].to_pylist()[0]
    assert (ca["split_numerator"], ca["split_denominator"], ca["currency"]) == (4.0, 1.0, None)
    prices = rows(out["prices"])
    assert len(prices) == 49
    # the ex date trades in the new share basis: no undo; Yahoo's close of the day before (in
    # chartPreviousClose) x 4 is AAPL's raw close on 2020-08-28, $499.23
    assert prices[dt.date(2020, 8, 31)]["close"] == 129.04
    prev = raw["chart"]["result"][0]["meta"]["chartPreviousClose"]
    assert prev * 4 == pytest.approx(499.23, abs=0.01)
    assert prices[dt.date(2020, 11, 6)]["close"] == 118.69


def test_aapl_2020_single_bar_undoes_the_later_split() -> None:
    raw = body(NODE / "chart-AAPL-2020-01-01-to-2020-01-03.json")
    with pytest.raises(SourceError, match="later_splits"):
        parse(raw, "AAPL")  # recorded 2025 with a 2020 window: the 4:1 of 2020-08-31 is unlisted
    out = parse(raw, "AAPL", later=[split(2020, 8, 31, 4)])
    bar = out["prices"].to_pylist()[0]
    assert bar["date"] == dt.date(2020, 1, 2)
    assert bar["close"] == pytest.approx(300.35, abs=0.01)  # AAPL's raw close that day
    assert bar["volume"] == pytest.approx(33_870_100, rel=1e-6)  # raw shares (135 480 400 / 4)


def test_nvda_2021_split_undo() -> None:
    raw = body(NODE / "historical-via-chart-NVDA-split-2021-02-01-to-2022-01-31.csv.json")
    with pytest.raises(SourceError, match=r"2022-01-28.*2025-02-21"):
        parse(raw, "NVDA")
    out = parse(raw, "NVDA", later=[split(2024, 6, 10, 10)])  # the 10:1 of 2024 (after window)
    prices = rows(out["prices"])
    assert len(prices) == 252
    before, on = prices[dt.date(2021, 7, 19)], prices[dt.date(2021, 7, 20)]
    yahoo = raw["chart"]["result"][0]
    i = yahoo["timestamp"].index(utc(2021, 7, 19))
    adjusted_close = yahoo["indicators"]["quote"][0]["close"][i]
    assert adjusted_close == pytest.approx(18.78, abs=0.01)
    # raw close the day before the 4:1 split = Yahoo's (split-adjusted) close x 4 x 10
    assert before["close"] == pytest.approx(adjusted_close * 40, rel=1e-6)
    assert before["close"] == pytest.approx(751.2, abs=0.1)
    assert on["close"] == pytest.approx(yahoo["indicators"]["quote"][0]["close"][i + 1] * 10)
    assert 3.5 < before["close"] / on["close"] < 4.5  # the raw price drops by ~the ratio
    assert before["volume"] == round(yahoo["indicators"]["quote"][0]["volume"][i] / 40)
    assert [(a, v) for _, a, v in actions(out["corporate_actions"])] == [
        ("split", 4.0),
        ("split", 10.0),
    ]
    assert before["adj_close"] == pytest.approx(yahoo["indicators"]["adjclose"][0]["adjclose"][i])


def test_tsla_full_history_both_splits() -> None:
    path = NODE / "historical-via-chart-dividends-TSLA-no-dividends.json.gz"
    original = gzip.decompress(path.read_bytes())
    assert hashlib.sha256(original).hexdigest().startswith("c39b6b2fd61cbb41")  # unedited
    raw = body(path)  # requested with events=div: the splits are not in the body
    later = [split(2020, 8, 31, 5), split(2022, 8, 25, 3)]
    prices = rows(parse(raw, "TSLA", ("prices",), later=later)["prices"])
    assert len(prices) == 3303
    assert min(prices) == dt.date(2010, 6, 29) and max(prices) == dt.date(2023, 8, 11)
    assert prices[dt.date(2010, 6, 29)]["close"] == pytest.approx(23.89, abs=0.01)  # IPO day
    assert prices[dt.date(2020, 8, 28)]["close"] == pytest.approx(2213.40, abs=0.05)
    assert prices[dt.date(2020, 8, 31)]["close"] == pytest.approx(498.32, abs=0.05)
    assert prices[dt.date(2022, 8, 24)]["close"] == pytest.approx(891.29, abs=0.05)
    assert prices[dt.date(2022, 8, 25)]["close"] == pytest.approx(296.07, abs=0.05)


def test_msft_2021_dividends() -> None:
    raw = body(NODE / "historical-via-chart-MSFT-dividends-2021-02-01-to-2022-01-31.csv.json")
    out = parse(raw, "MSFT", later=[])  # no MSFT split since 2003
    assert out["prices"].num_rows == 252
    assert actions(out["corporate_actions"]) == [
        (dt.date(2021, 2, 17), "dividend", 0.56),
        (dt.date(2021, 5, 19), "dividend", 0.56),
        (dt.date(2021, 8, 18), "dividend", 0.56),
        (dt.date(2021, 11, 17), "dividend", 0.62),
    ]


def test_split_undo_against_quandl_raw_prices() -> None:
    """Quandl WIKI's raw AAPL 2014 (7:1 split on 2014-06-09), split-adjusted the way Yahoo
    serves it, must come back as Quandl's raw prices, volumes and dividends."""
    with zipfile.ZipFile(FIXTURES / "daily_ohlcv" / "QUANDL_ARCHIVE.zip") as zf:
        text = zf.read(zf.namelist()[0]).decode()
    quandl = [r for r in csv.DictReader(io.StringIO(text)) if r["ticker"] == "AAPL"]
    assert len(quandl) == 252
    split_day = dt.date(2014, 6, 9)
    ts, quote = [], {k: [] for k in ("open", "high", "low", "close", "volume")}  # type: ignore[var-annotated]
    dividends = {}
    for r in quandl:
        day = dt.date.fromisoformat(r["date"])
        f = 7.0 if day < split_day else 1.0
        t = utc(day.year, day.month, day.day)
        ts.append(t)
        for k in ("open", "high", "low", "close"):
            quote[k].append(float(r[k]) / f)
        quote["volume"].append(round(float(r["volume"]) * f))
        if float(r["ex-dividend"]):
            dividends[str(t)] = {"date": t, "amount": float(r["ex-dividend"]) / f}
    yahoo_like = {
        "chart": {
            "result": [
                {
                    "meta": {
                        "currency": "USD",
                        "symbol": "AAPL",
                        "exchangeTimezoneName": "America/New_York",
                        "regularMarketTime": ts[-1] + 9 * 3600,
                        "dataGranularity": "1d",
                        "priceHint": 2,
                    },
                    "timestamp": ts,
                    "events": {
                        "splits": {str(utc(2014, 6, 9)): split(2014, 6, 9, 7)},
                        "dividends": dividends,
                    },
                    "indicators": {"quote": [quote]},
                }
            ],
            "error": None,
        }
    }
    out = parse(yahoo_like, "AAPL")
    got = rows(out["prices"])
    for r in quandl:
        bar = got[dt.date.fromisoformat(r["date"])]
        for k in ("open", "high", "low", "close"):
            assert bar[k] == pytest.approx(float(r[k]), abs=1e-3), (r["date"], k)
        assert bar["volume"] == round(float(r["volume"]))
        assert bar["adj_close"] is None  # no adjclose in this body
    assert actions(out["corporate_actions"]) == [
        (dt.date(2014, 2, 6), "dividend", 3.05),
        (dt.date(2014, 5, 8), "dividend", 3.29),
        (dt.date(2014, 6, 9), "split", 7.0),
        (dt.date(2014, 8, 7), "dividend", 0.47),
        (dt.date(2014, 11, 6), "dividend", 0.47),
    ]


# --- capital gains, intraday, errors -------------------------------------------------------------


def test_vfinx_capital_gains_and_dividends() -> None:
    raw = body(YF / "history_chart_VFINX.json")
    out = parse(raw, "VFINX", ("corporate_actions",))
    table = out["corporate_actions"]
    kinds = table.column("action").to_pylist()
    assert kinds.count("dividend") == 164 and kinds.count("capital_gain") == 21
    assert table.num_rows == 185
    gains = [(d, v) for d, a, v in actions(table) if a == "capital_gain"]
    assert all(v > 0 for _, v in gains)
    assert min(d for d, _ in gains).year >= 1980
    with pytest.raises(SourceError, match="3mo"):  # quarterly bars are not daily prices
        parse(raw, "VFINX", ("prices",))


def test_empty_intraday_answer_gives_no_rows() -> None:
    raw = body(NODE / "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json")
    assert parse(raw, "AAPL", ("bars_minute",)) == {}
    assert parse({"symbol": "AAPL", "daily": None, "minute": [raw, raw]}, "AAPL", ALL) == {}


def _minute_body() -> dict[str, Any]:
    """A 1m body: the real empty answer's meta with three bars filled in (one null)."""
    raw = copy.deepcopy(
        body(NODE / "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json")
    )
    res = raw["chart"]["result"][0]
    t0 = utc(2025, 1, 31, 14, 30)
    res["timestamp"] = [t0, t0 + 60, t0 + 120]
    res["indicators"]["quote"] = [
        {
            "open": [236.0, 236.5, None],
            "high": [236.9, 237.0, None],
            "low": [235.8, 236.1, None],
            "close": [236.5, 236.7, None],
            "volume": [120000, 80000, None],
        }
    ]
    return raw


def test_minute_bars() -> None:
    out = parse(_minute_body(), "AAPL", ("bars_minute",))
    bars = out["bars_minute"].to_pylist()
    assert [b["ts"] for b in bars] == [
        dt.datetime(2025, 1, 31, 14, 30, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 31, 14, 31, tzinfo=dt.UTC),
    ]
    assert bars[0]["close"] == 236.5 and bars[1]["volume"] == 80000
    assert bars[0]["vwap"] is None and bars[0]["trade_count"] is None


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (
            {
                "chart": {
                    "result": None,
                    "error": {
                        "code": "Not Found",
                        "description": "No data found, symbol may be delisted",
                    },
                }
            },
            NoDataError,
            "ZZZZ.*delisted",
        ),
        ({"chart": {"result": [], "error": None}}, NoDataError, "ZZZZ"),
        (
            {"chart": {"result": None, "error": {"code": "Bad Request", "description": "x"}}},
            SourceError,
            "Bad Request",
        ),
        ({"finance": {"error": "?"}}, SourceError, "not a Yahoo chart response"),
        ([1, 2], SourceError, "expected a chart JSON object"),
        (
            {
                "chart": {
                    "result": [
                        {
                            "meta": {"exchangeTimezoneName": "UTC"},
                            "timestamp": [1, 2],
                            "indicators": {"quote": [{"open": [1.0]}]},
                        }
                    ]
                }
            },
            SourceError,
            "quote.open has 1 values for 2 timestamps",
        ),
        (
            {"chart": {"result": [{"meta": {}, "timestamp": [1], "indicators": {}}]}},
            SourceError,
            "ZZZZ",
        ),
    ],
)
def test_error_payloads(payload: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        YahooChartSource().parse(SourceRequest("ZZZZ", ALL, *WIDE), payload)


# --- contract ------------------------------------------------------------------------------------


def test_contract_registry_datasets_and_no_io_in_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    src = get_source("yahoo")
    assert isinstance(src, YahooChartSource) and src.network and src.settings == ()
    for name in src.datasets:
        get_dataset(name)  # declared datasets exist
    assert set(src.datasets) == {"prices", "corporate_actions", "bars_minute"}

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("parse touched the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(httpx.Client, "send", no_network)
    raw = {
        "symbol": "AAPL",
        "daily": body(YF / "history_chart_AAPL.json"),
        "minute": [_minute_body()],
    }
    out = parse(raw, "AAPL", ALL)
    assert set(out) == set(ALL)
    for name, table in out.items():
        assert table.column_names == get_dataset(name).schema.names


# --- fetch and end to end ------------------------------------------------------------------------

NOW = dt.datetime(2025, 10, 29, 20, 30, tzinfo=dt.UTC)  # just after the AAPL/MSFT recordings
SERVED = {
    "AAPL": YF / "history_chart_AAPL.json",
    "MSFT": YF / "history_chart_MSFT.json",
    "GS2C.DE": YF / "history_chart_GS2C.DE.json",
}
EMPTY_1M = NODE / "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json"
NOT_FOUND = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}


class FakeYahoo:
    """Serves the fixtures by symbol and interval; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.malformed: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == "query2.finance.yahoo.com"
        symbol = request.url.path.rsplit("/", 1)[-1]
        if symbol in self.malformed:
            return httpx.Response(200, content=b'{"chart": {"result": [')
        if request.url.params["interval"] == "1m":
            return httpx.Response(200, content=EMPTY_1M.read_bytes())  # envelope -> unwrap below
        path = SERVED.get(symbol)
        if path is None:
            return httpx.Response(404, json=NOT_FOUND)
        return httpx.Response(200, content=path.read_bytes())


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def unwrap_envelopes(handler: FakeYahoo) -> Any:
    def serve(request: httpx.Request) -> httpx.Response:
        response = handler(request)
        if response.status_code == 200 and response.content.startswith(b'{\n  "request"'):
            doc = json.loads(response.content)
            return httpx.Response(200, json=doc["response"]["bodyJson"])
        return response

    return serve


@pytest.fixture
def fake() -> Iterator[tuple[FakeYahoo, FakeClock, YahooChartSource]]:
    handler, clock = FakeYahoo(), FakeClock()
    client = HttpClient(
        transport=httpx.MockTransport(unwrap_envelopes(handler)),
        sleep=clock.sleep,
        clock=clock.clock,
        retries=0,
    )
    with client:
        yield handler, clock, YahooChartSource(client=client, now=lambda: NOW)


def test_fetch_requests(fake: tuple[FakeYahoo, FakeClock, YahooChartSource]) -> None:
    handler, clock, src = fake
    req = SourceRequest("AAPL", ALL, dt.date(2025, 5, 1), dt.date(2025, 10, 29))
    raw = src.fetch(req)
    assert (
        raw["symbol"] == "AAPL" and raw["daily"]["chart"]["result"][0]["meta"]["symbol"] == "AAPL"
    )
    daily, *minute = handler.requests
    p = daily.url.params
    assert daily.url.path == "/v8/finance/chart/AAPL"
    assert p["interval"] == "1d" and p["includeAdjustedClose"] == "true"
    assert set(p["events"].split(",")) == {"div", "splits", "capitalGains"}
    assert int(p["period1"]) == utc(2025, 4, 30, 0, 0)
    assert int(p["period2"]) >= int(NOW.timestamp())  # through now: every later split listed
    assert len(minute) == 5 and all(r.url.params["interval"] == "1m" for r in minute)
    assert int(minute[0].url.params["period1"]) >= NOW.timestamp() - 30 * 86400
    # 6 requests on a 2 req/s host: 5 waits of 0.5 s on the fake clock
    assert clock.sleeps == pytest.approx([0.5] * 5)
    out = src.parse(req, raw)
    assert out["prices"].num_rows == 126 and "bars_minute" not in out  # from 2025-05-01

    with pytest.raises(NoDataError, match=r"BRK\.B"):
        src.fetch(SourceRequest("BRK.B", ("prices",), dt.date(2025, 5, 1), dt.date(2025, 5, 2)))
    assert handler.requests[-1].url.path == "/v8/finance/chart/BRK-B"


def _local_lake(tmp_path: Path) -> Lake:
    return marketlake.open(tmp_path / "lake", fsync=False)


@pytest.mark.parametrize("where", ["memory", "local"])
def test_end_to_end_ingest_and_rerun(
    fake: tuple[FakeYahoo, FakeClock, YahooChartSource], tmp_path: Path, where: str
) -> None:
    handler, _clock, src = fake
    handler.malformed.add("GS2C.DE")
    lake = marketlake.open("memory://") if where == "memory" else _local_lake(tmp_path)
    try:
        start, end = dt.date(2025, 5, 1), dt.date(2025, 10, 29)
        tickers = ["AAPL", "MSFT", "BRK.B", "GS2C.DE"]
        datasets = ["prices", "corporate_actions", "bars_minute"]
        s = run_batch(lake, src, tickers, datasets, start, end, workers=2, fetch_retries=1)
        assert s.items_total == 12 and s.items_completed == 6 and s.items_failed == 6
        errors = {(f.ticker, f.dataset): f.error or "" for f in s.failures}
        assert "BRK.B" in errors[("BRK.B", "prices")] and "no data" in errors[("BRK.B", "prices")]
        assert "malformed JSON" in errors[("GS2C.DE", "prices")]
        aapl = lake.read("AAPL", "prices", start, end, output="arrow")
        assert aapl.num_rows == 126  # 2025-04-30 is before start
        assert aapl.column("close").to_pylist()[-1] == 269.7
        ca = lake.read("MSFT", "corporate_actions", start, end, output="arrow")
        assert ca.column("action").to_pylist() == ["dividend", "dividend"]
        assert lake.read("GS2C.DE", "prices", start, end, output="arrow").num_rows == 0
        assert lake.read("AAPL", "bars_minute", start, end, output="arrow").num_rows == 0

        again = run_batch(lake, src, tickers, datasets, start, end, workers=2, fetch_retries=1)
        assert again.objects_written == 0
        assert again.rows_added == again.rows_updated == 0
        assert again.items_completed == 6
    finally:
        lake.close()
