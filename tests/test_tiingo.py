"""Tiingo equities -> prices, corporate_actions, bars_minute: every recorded Tiingo answer parsed.

Fixtures: tests/fixtures/tiingo (real answers recorded by tiingo-python, MIT; see PROVENANCE.md).
None of the recorded daily windows holds a dividend or a split, and the recorded IEX answer is
30-minute bars without volume: the event tests edit an in-memory copy of a recorded daily answer,
and the 1-minute IEX body is built in code in the documented shape ``[{date, open, high, low,
close, volume}]`` (what ``columns=open,high,low,close,volume`` answers).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

import marketlake
from marketlake.errors import ConfigError, NoDataError, SourceError
from marketlake.ingest.batch import run_batch
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import Source, SourceRequest
from marketlake.sources.crypto import TiingoCryptoSource
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source
from marketlake.sources.tiingo import (
    TiingoSource,
    parse_daily_rows,
    parse_fundamentals_daily,
    parse_fundamentals_statements,
    parse_iex_rows,
    parse_metadata,
    split_ratio,
)

FIX = Path(__file__).parent / "fixtures" / "tiingo"
DAILY = FIX / "ticker_price_pandas_daily_equivalent_requesting_json_or_csv.0.body.json"
DAILY_CSV = FIX / "ticker_price_pandas_daily_equivalent_requesting_json_or_csv.1.body.csv"
KEY = "tiingo-equities-secret-456"
JAN2, JAN5, JAN19 = dt.date(2018, 1, 2), dt.date(2018, 1, 5), dt.date(2018, 1, 19)
DAILY_SETS = ("prices", "corporate_actions")
ALL = ("prices", "corporate_actions", "bars_minute")


def load(name: str) -> Any:
    return json.loads((FIX / name).read_bytes())


def req(datasets: tuple[str, ...] = DAILY_SETS, start: dt.date = JAN2, end: dt.date = JAN19) -> Any:
    return SourceRequest("GOOGL", datasets, start, end)


def check(out: dict[str, pa.Table], dataset: str) -> pa.Table:
    """``out[dataset]``, proven canonical."""
    table = out[dataset]
    ds = get_dataset(dataset)
    assert table.schema == ds.schema
    assert conform(table, ds, "GOOGL").equals(table)
    return table


def events_body() -> list[dict[str, Any]]:
    """The recorded GOOGL 2018-01-05..19 answer with events edited in (a copy; file unchanged)."""
    body: list[dict[str, Any]] = copy.deepcopy(json.loads(DAILY.read_bytes()))
    by_day = {row["date"][:10]: row for row in body}
    by_day["2018-01-10"]["divCash"] = 0.61
    by_day["2018-01-16"]["splitFactor"] = 4.0
    by_day["2018-01-17"]["splitFactor"] = 0.05
    by_day["2018-01-18"]["splitFactor"] = 1.4999
    by_day["2018-01-18"]["divCash"] = 0.25
    return body


def minute_body() -> list[dict[str, Any]]:
    """Four 1-minute IEX bars on 2018-01-02 (the last after hours: 00:30 UTC = 19:30 New York)."""
    return [
        {"date": "2018-01-02T14:30:00.000Z", "open": 1057.47, "high": 1058.0, "low": 1057.0,
         "close": 1057.9, "volume": 1200},
        {"date": "2018-01-02T14:31:00.000Z", "open": 1057.9, "high": 1059.1, "low": 1057.5,
         "close": 1058.8, "volume": 800},
        {"date": "2018-01-02T14:33:00.000Z", "open": 1058.8, "high": 1058.8, "low": 1056.2,
         "close": 1056.5, "volume": 0},
        {"date": "2018-01-03T00:30:00.000Z", "open": 1061.0, "high": 1061.0, "low": 1061.0,
         "close": 1061.0, "volume": 100},
    ]  # fmt: skip


def contract_payload(_src: Source) -> Any:
    """A fetch-shaped payload filling every dataset (for tests/test_sources_contract.py)."""
    return {"symbol": "GOOGL", "daily": events_body(), "iex": [minute_body()], "resample": "1min"}


def client(handler: Any) -> HttpClient:
    return HttpClient(transport=httpx.MockTransport(handler), sleep=lambda _s: None, retries=0)


# --- daily EOD answers (every recorded daily file) --------------------------------------------


def test_daily_json_gives_raw_prices_and_no_events() -> None:
    out = TiingoSource().parse(req(), load(DAILY.name))
    assert set(out) == {"prices"}  # divCash 0.0 and splitFactor 1.0 everywhere: no actions
    rows = check(out, "prices").to_pylist()
    assert len(rows) == 10
    assert rows[0] == {
        "date": JAN5, "open": 1103.45, "high": 1113.58, "low": 1101.8, "close": 1110.29,
        "adj_close": 1110.29, "volume": 1493389,
    }  # fmt: skip
    assert rows[-1]["date"] == JAN19 and rows[-1]["close"] == 1143.5
    assert rows[-1]["volume"] == 1418376
    # date range filter: inclusive ends
    one = TiingoSource().parse(req(("prices",), JAN19, JAN19), load(DAILY.name))
    assert check(one, "prices").column("date").to_pylist() == [JAN19]


def test_daily_with_date_json_and_csv_agree(tmp_path: Path) -> None:
    src = TiingoSource()
    js = check(src.parse(req(start=dt.date(2015, 1, 1)), load("ticker_price_with_date.body.json")),
               "prices")  # fmt: skip
    assert js.column("date").to_pylist() == [dt.date(2015, 1, 2), dt.date(2015, 1, 5)]
    assert js.column("high").to_pylist() == [535.8, 527.9899]
    assert js.column("volume").to_pylist() == [1327870, 2059119]
    for csv_name, json_name in (
        ("ticker_price_with_date_csv.body.csv", "ticker_price_with_date.body.json"),
        (DAILY_CSV.name, DAILY.name),
    ):
        shutil.copy(FIX / csv_name, tmp_path / "GOOGL_daily.csv")
        [payload] = list(src.read_files([tmp_path / "GOOGL_daily.csv"]))
        assert payload.request is not None and payload.request.ticker == "GOOGL"
        assert payload.request.datasets == DAILY_SETS
        from_csv = src.parse(payload.request, payload.raw)
        from_json = src.parse(payload.request, load(json_name))
        assert check(from_csv, "prices").equals(from_json["prices"])


def test_latest_row_and_reduced_columns() -> None:
    src = TiingoSource()
    wide = (dt.date(2018, 1, 1), dt.date(2030, 1, 1))
    latest = check(src.parse(req(DAILY_SETS, *wide), load("ticker_price.body.json")), "prices")
    assert latest.to_pylist() == [
        {"date": dt.date(2018, 4, 12), "open": 1031.47, "high": 1044.65, "low": 1026.05,
         "close": 1037.29, "adj_close": 1037.29, "volume": 1644794}
    ]  # fmt: skip
    # columns=open,high,low,close,volume: "+00:00" date form, no adjClose -> adj_close null
    few = src.parse(req(DAILY_SETS, *wide), load("ticker_price_with_multiple_columns.body.json"))
    assert set(few) == {"prices"}
    assert check(few, "prices").to_pylist() == [
        {"date": dt.date(2024, 10, 22), "open": 162.98, "high": 165.77, "low": 162.98,
         "close": 165.14, "adj_close": None, "volume": 16568121}
    ]  # fmt: skip


def test_weekly_answers_raw_vs_adjusted_and_refused_as_daily() -> None:
    googl = parse_daily_rows(load("ticker_price_pandas_weekly_multiple_tickers.0.body.json"))
    aapl = parse_daily_rows(load("ticker_price_pandas_weekly_multiple_tickers.1.body.json"))
    assert googl.column("close").to_pylist() == [1110.29, 1130.65, 1135.97]
    assert aapl.column("date").to_pylist() == [JAN5, dt.date(2018, 1, 12), JAN19]
    first = aapl.to_pylist()[0]
    # Tiingo's raw close and its dividend-adjusted close differ (AAPL paid dividends later)
    assert first["close"] == 175.0 and first["adj_close"] == 173.6258731716
    assert first["open"] == 170.16 and first["volume"] == 99095223
    # the field mapping into prices: raw OHLCV, adjClose -> adj_close (fetch result: trusted)
    prices = check(
        TiingoSource().parse(req(), {"daily": load(DAILY.name)[:1], "iex": []}), "prices"
    )
    assert prices.column("adj_close").to_pylist() == [1110.29]
    aapl_prices = TiingoSource().parse(
        SourceRequest("AAPL", ("prices",), JAN2, JAN19),
        {"daily": load("ticker_price_pandas_weekly_multiple_tickers.1.body.json")[:1]},
    )["prices"]
    assert aapl_prices.column("close").to_pylist() == [175.0]
    assert aapl_prices.column("adj_close").to_pylist() == [173.6258731716]
    # a bare weekly answer is not daily prices: refused with a clear message
    for name in (
        "ticker_price_pandas_weekly_multiple_tickers.0.body.json",
        "ticker_price_pandas_weekly_multiple_tickers.1.body.json",
    ):
        with pytest.raises(SourceError, match="not daily bars"):
            TiingoSource().parse(req(), load(name))


def test_div_cash_and_split_factor_become_corporate_actions() -> None:
    out = TiingoSource().parse(req(), events_body())
    actions = check(out, "corporate_actions").to_pylist()
    assert actions == [
        {"ex_date": dt.date(2018, 1, 10), "action": "dividend", "value": 0.61,
         "split_numerator": None, "split_denominator": None, "currency": "USD"},
        {"ex_date": dt.date(2018, 1, 16), "action": "split", "value": 4.0,
         "split_numerator": 4.0, "split_denominator": 1.0, "currency": None},
        {"ex_date": dt.date(2018, 1, 17), "action": "split", "value": 0.05,
         "split_numerator": 1.0, "split_denominator": 20.0, "currency": None},
        {"ex_date": dt.date(2018, 1, 18), "action": "dividend", "value": 0.25,
         "split_numerator": None, "split_denominator": None, "currency": "USD"},
        {"ex_date": dt.date(2018, 1, 18), "action": "split", "value": 1.4999,
         "split_numerator": None, "split_denominator": None, "currency": None},
    ]  # fmt: skip
    # prices stay raw: the events do not change the stored OHLC
    assert check(out, "prices").column("close").to_pylist()[-1] == 1143.5
    assert split_ratio(1.5) == (3.0, 2.0) and split_ratio(0.3333333) == (1.0, 3.0)
    assert split_ratio(1.4999) is None and split_ratio(0.0) is None


# --- IEX intraday ---------------------------------------------------------------------------


def test_recorded_iex_answer_is_30_minute_bars_without_volume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = load("intraday_price.body.json")
    plain = parse_iex_rows(body)
    assert plain.num_rows == 13
    first, last = plain.to_pylist()[0], plain.to_pylist()[-1]
    assert first["ts"] == dt.datetime(2018, 1, 2, 14, 30, tzinfo=dt.UTC)
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        1057.47, 1061.91, 1054.17, 1061.91,
    )  # fmt: skip
    assert last["ts"] == dt.datetime(2018, 1, 2, 20, 30, tzinfo=dt.UTC)
    assert last["close"] == 1073.315
    assert plain.column("volume").null_count == 13  # asked without columns=...volume
    bars = ("bars_minute",)
    # bare: 30-minute spacing is refused for bars_minute
    with pytest.raises(SourceError, match="30 minutes apart"):
        TiingoSource().parse(req(bars), body)
    # even where the frequency is trusted, volume-less bars are left out with a warning
    with caplog.at_level(logging.WARNING, logger="marketlake.sources.tiingo"):
        assert TiingoSource().parse(req(bars), {"daily": None, "iex": [body]}) == {}
    assert "left out 13 IEX bar(s) without a volume" in caplog.text


def test_minute_bars_from_iex_answer() -> None:
    out = TiingoSource().parse(req(("bars_minute",), JAN2, JAN2), minute_body())
    rows = check(out, "bars_minute").to_pylist()
    assert [r["ts"].strftime("%H:%M") for r in rows] == ["14:30", "14:31", "14:33", "00:30"]
    assert rows[0]["open"] == 1057.47 and rows[0]["volume"] == 1200
    assert rows[2]["volume"] == 0 and rows[0]["vwap"] is None and rows[0]["trade_count"] is None
    # the 00:30 UTC bar belongs to the New York session of Jan 2, not to Jan 3
    later = TiingoSource().parse(req(("bars_minute",), dt.date(2018, 1, 3), JAN19), minute_body())
    assert later == {}


# --- other recorded answers: metadata, fundamentals, crypto ----------------------------------


def test_ticker_metadata() -> None:
    meta = parse_metadata(load("ticker_metadata.body.json"))
    assert meta["ticker"] == "GOOGL" and meta["exchange"] == "NASDAQ"
    assert meta["name"] == 'Alphabet Inc.("Google") - Class A'
    assert (meta["start_date"], meta["end_date"]) == (dt.date(2004, 8, 19), dt.date(2017, 10, 6))
    assert meta["description"].startswith("Google Inc. (Google) is a global technology company.")
    with pytest.raises(SourceError, match="not a Tiingo ticker metadata"):
        parse_metadata({"foo": 1})


def test_fundamentals_are_parsed_to_plain_tables_not_stored() -> None:
    """Daily metrics have no lake dataset; statements carry no filing date, so they cannot be
    stored point in time in ``fundamentals`` (key period_end + filed): plain tables only."""
    daily = parse_fundamentals_daily(load("fundamentals_daily.body.json"))
    assert daily.num_rows == 64
    assert daily.column_names == [
        "date", "enterpriseVal", "marketCap", "pbRatio", "peRatio", "trailingPEG1Y",
    ]  # fmt: skip
    assert daily.to_pylist()[0]["date"] == dt.date(2019, 12, 31)
    assert daily.to_pylist()[0]["marketCap"] == 923760472316.1099853516
    assert daily.to_pylist()[-1]["date"] == dt.date(2020, 4, 1)
    assert daily.to_pylist()[-1]["peRatio"] == 22.0596477182
    st = parse_fundamentals_statements(load("fundamentals_statements.body.json"))
    assert st.num_rows == 2 * (14 + 21 + 12 + 26) + (14 + 21 + 26)
    rows = st.to_pylist()
    q1 = {(r["statement"], r["data_code"]): r["value"] for r in rows if r["quarter"] == 1}
    assert q1[("incomeStatement", "revenue")] == 41159000000.0
    assert q1[("cashFlow", "freeCashFlow")] == 5446000000.0
    annual = [r for r in rows if r["quarter"] == 0]
    assert {r["period_end"] for r in annual} == {dt.date(2019, 12, 31)}
    assert {r["year"] for r in annual} == {2019}
    assert "overview" not in {r["statement"] for r in annual}


def test_crypto_metadata_and_top_of_book_are_not_equity_answers() -> None:
    """Crypto answers belong to ``tiingo_crypto`` (tests/test_crypto.py parses its price
    history). Pair metadata is reference data about pairs and top of book a live quote
    snapshot: no lake dataset holds either, and neither is mistaken for bars."""
    meta = load("crypto_metadata.body.json")
    tob = load("crypto_top_of_book.body.json")
    assert [m["ticker"] for m in meta] == ["btcusd", "fldcbtc"]
    assert meta[0]["baseCurrency"] == "btc" and meta[0]["quoteCurrency"] == "usd"
    assert tob[0]["topOfBookData"][0]["lastExchange"] == "BINANCE"
    assert tob[0]["topOfBookData"][0]["lastPrice"] == 8220.83
    for body in (meta, tob):  # rows without a date: refused, never stored
        with pytest.raises(SourceError, match="date None is not ISO 8601"):
            TiingoSource().parse(req(ALL), body)
    crypto = TiingoCryptoSource()
    btc = SourceRequest("BTC-USD", ("crypto_bars",), dt.date(2019, 1, 1), dt.date(2019, 12, 31))
    assert crypto.parse(btc, meta) == {}  # no priceData: no bars
    with pytest.raises(SourceError, match="not ISO 8601"):
        crypto.parse(btc, tob)  # quotes are not bars


# --- fetch, errors, end to end ----------------------------------------------------------------


def test_missing_key_is_a_config_error_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIINGO_API_KEY", raising=False)

    def handler(_r: httpx.Request) -> httpx.Response:
        raise AssertionError("no request without a key")

    src = TiingoSource(client=client(handler))
    with pytest.raises(ConfigError, match="TIINGO_API_KEY"):
        src.fetch(req(ALL))
    with pytest.raises(ConfigError, match="TIINGO_API_KEY"):
        src.metadata("GOOGL")


def test_fetch_requests_header_windows_and_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIINGO_API_KEY", KEY)
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        path = r.url.path
        if "ZZZZ" in path:
            return httpx.Response(404, json={"detail": "Error: Ticker 'ZZZZ' not found"})
        if "MSFT" in path:
            return httpx.Response(401, json={"detail": "Invalid token."})
        if path == "/tiingo/daily/GOOGL":
            return httpx.Response(200, content=(FIX / "ticker_metadata.body.json").read_bytes())
        if path.startswith("/iex/"):
            first = r.url.params["startDate"] == "2018-01-02"
            return httpx.Response(200, json=minute_body() if first else [])
        return httpx.Response(200, content=DAILY.read_bytes())

    src = TiingoSource(client=client(handler))
    raw = src.fetch(req(ALL, JAN2, dt.date(2018, 1, 13)))
    assert all(r.headers["Authorization"] == f"Token {KEY}" for r in seen)
    assert seen[0].url.path == "/tiingo/daily/GOOGL/prices"
    assert dict(seen[0].url.params) == {
        "startDate": "2018-01-02", "endDate": "2018-01-13", "format": "json",
    }  # fmt: skip
    iex = [dict(r.url.params) for r in seen[1:]]
    assert [(p["startDate"], p["endDate"]) for p in iex] == [
        ("2018-01-02", "2018-01-06"), ("2018-01-07", "2018-01-11"), ("2018-01-12", "2018-01-13"),
    ]  # fmt: skip
    assert {(p["resampleFreq"], p["columns"]) for p in iex} == {
        ("1min", "open,high,low,close,volume")
    }
    out = src.parse(req(ALL, JAN2, dt.date(2018, 1, 13)), raw)
    assert set(out) == {"prices", "bars_minute"}
    assert check(out, "bars_minute").num_rows == 4
    seen.clear()
    src.fetch(SourceRequest("BRK.B", ("prices",), JAN2, JAN5))
    assert seen[0].url.path == "/tiingo/daily/BRK-B/prices"
    assert src.metadata("googl")["exchange"] == "NASDAQ"
    with pytest.raises(NoDataError, match="ZZZZ"):
        src.fetch(SourceRequest("ZZZZ", ("prices",), JAN2, JAN5))
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="TIINGO_API_KEY") as e:
        src.fetch(SourceRequest("MSFT", ("prices",), JAN2, JAN5))
    assert KEY not in str(e.value) and KEY not in caplog.text
    with pytest.raises(SourceError, match="Tiingo answered an error: Error: resampleFreq"):
        src.parse(req(), {"detail": "Error: resampleFreq must be ..."})


def test_end_to_end_run_batch_and_rerun_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIINGO_API_KEY", KEY)
    body = json.dumps(events_body()).encode()

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path.startswith("/iex/"):
            return httpx.Response(
                200, json=minute_body() if r.url.params["startDate"] == "2018-01-02" else []
            )
        return httpx.Response(200, content=body)

    src = get_source("tiingo", client=client(handler))
    assert isinstance(src, TiingoSource) and src.network
    lake = marketlake.open("memory://")
    try:
        s = run_batch(lake, src, ["GOOGL"], list(ALL), JAN2, JAN19, workers=1)
        # one item per (ticker, dataset); 10 prices + 5 actions + 4 bars
        assert s.items_completed == 3 and s.items_failed == 0 and s.rows_added == 19
        prices = lake.read("GOOGL", "prices", JAN2, JAN19, output="arrow")
        assert prices.num_rows == 10 and prices.column("close").to_pylist()[0] == 1110.29
        actions = lake.read("GOOGL", "corporate_actions", JAN2, JAN19, output="arrow")
        assert actions.num_rows == 5
        # the lake reads ts by UTC date: the after-hours bar of Jan 2 is at 00:30 UTC on Jan 3
        bars = lake.read("GOOGL", "bars_minute", JAN2, dt.date(2018, 1, 3), output="arrow")
        assert bars.num_rows == 4
        again = run_batch(lake, src, ["GOOGL"], list(ALL), JAN2, JAN19, workers=1)
        assert again.items_failed == 0
        assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    finally:
        lake.close()


def test_read_files_names_tickers_and_refuses_bad_files(tmp_path: Path) -> None:
    src = TiingoSource()
    shutil.copy(DAILY, tmp_path / "GOOGL.json")
    shutil.copy(DAILY, tmp_path / "brk-b_daily.json")
    (tmp_path / "AAPL_iex.json").write_text(json.dumps(minute_body()))
    (tmp_path / "MSFT_empty.json").write_text("[]")
    shutil.copy(FIX / "ticker_metadata.body.json", tmp_path / "GOOGL_meta.json")
    (tmp_path / "bad!name.json").write_text(json.dumps(load(DAILY.name)))
    (tmp_path / "saved.json").write_text(json.dumps(contract_payload(src)))
    names = ["GOOGL.json", "brk-b_daily.json", "AAPL_iex.json", "MSFT_empty.json",
             "GOOGL_meta.json", "bad!name.json", "saved.json"]  # fmt: skip
    payloads = list(src.read_files([tmp_path / n for n in names]))
    got = [(p.request.ticker, p.request.datasets) if p.request else None for p in payloads]
    assert got[:3] == [("GOOGL", DAILY_SETS), ("BRK.B", DAILY_SETS), ("AAPL", ("bars_minute",))]
    assert got[3] is None and payloads[3].note and payloads[3].error is None
    assert got[4] is None and "expected a list of rows" in (payloads[4].error or "")
    assert got[5] is None and "cannot tell the ticker" in (payloads[5].error or "")
    assert got[6] == ("GOOGL", ALL)
    for p, expected in (
        (payloads[0], {"prices"}),
        (payloads[2], {"bars_minute"}),
        (payloads[6], set(ALL)),
    ):
        assert p.request is not None
        assert set(src.parse(p.request, p.raw)) == expected  # GOOGL.json holds no events
