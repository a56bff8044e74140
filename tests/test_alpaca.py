"""Alpaca market data v2 source: parser, pagination, credentials and end-to-end ingest.

No real Alpaca ``/v2/stocks/bars`` payload is recorded as a data file (see
/work/shared/fixtures/alpaca/PROVENANCE.md), so the payloads here are built in code from the
documented shape: ``{"bars": {"AAPL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}]},
"next_page_token": null | "<base64>"}`` (single-symbol endpoint: ``{"bars": [...], "symbol":
...}``). The first bar reuses Alpaca's published example (AAPL 2022-01-03T09:00:00Z, v 1118,
n 65, vw 178.235733, next_page_token "QUFQTHxNfDIwMjItMDEtMDNUMDk6MDA6MDAuMDAwMDAwMDAwWg==").
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx
import pytest

import marketlake
from marketlake.errors import ConfigError, SourceError
from marketlake.ingest.batch import run_batch
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.alpaca import AlpacaSource
from marketlake.sources.base import SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source

TOKEN = "QUFQTHxNfDIwMjItMDEtMDNUMDk6MDA6MDAuMDAwMDAwMDAwWg=="
KEY, SECRET = "PKTESTKEYID0000", "s3cr3t-value-never-logged"
DAY = dt.date(2022, 1, 3)


def bar(
    t: str, o: float, v: int = 100, n: int | None = 5, vw: float | None = None
) -> dict[str, Any]:
    """One bar in Alpaca's documented shape (high/low/close derived from open)."""
    out: dict[str, Any] = {"t": t, "o": o, "h": o + 0.5, "l": o - 0.25, "c": o + 0.1, "v": v}
    if n is not None:
        out["n"] = n
    if vw is not None:
        out["vw"] = vw
    return out


FIRST = bar("2022-01-03T09:00:00Z", 177.83, v=1118, n=65, vw=178.235733)


def request(ticker: str = "AAPL", start: dt.date = DAY, end: dt.date = DAY) -> SourceRequest:
    return SourceRequest(ticker, ("bars_minute",), start, end)


def parse(raw: Any, req: SourceRequest | None = None) -> Any:
    req = req or request()
    out = AlpacaSource(key_id=KEY, secret_key=SECRET).parse(req, raw)
    for name, table in out.items():
        assert table.schema == get_dataset(name).schema
        assert conform(table, get_dataset(name), req.ticker).equals(table)
    return out


def test_parse_multi_symbol_page_keeps_new_york_dates_in_range() -> None:
    page = {
        "bars": {
            "AAPL": [
                bar("2022-01-03T04:59:00Z", 170.0),  # 23:59 New York on Jan 2: out
                FIRST,
                bar("2022-01-03T14:30:00Z", 177.5, v=250_000, n=1200, vw=177.61),
                bar("2022-01-04T00:59:00Z", 182.0),  # 19:59 New York, post-market on Jan 3
                bar("2022-01-04T05:00:00Z", 183.0),  # 00:00 New York on Jan 4: out
            ],
            "MSFT": [bar("2022-01-03T14:30:00Z", 335.0)],
        },
        "next_page_token": None,
    }
    table = parse(page)["bars_minute"]
    assert table.num_rows == 3
    ts = table.column("ts").to_pylist()
    assert ts[0] == dt.datetime(2022, 1, 3, 9, 0, tzinfo=dt.UTC)
    assert ts[-1] == dt.datetime(2022, 1, 4, 0, 59, tzinfo=dt.UTC)
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    first = table.slice(0, 1).to_pylist()[0]
    assert first["open"] == 177.83 and first["volume"] == 1118
    assert first["trade_count"] == 65 and first["vwap"] == 178.235733
    assert table.column("vwap").to_pylist()[-1] is None  # vw absent -> null


def test_parse_single_symbol_shape_empty_and_missing_symbol() -> None:
    single = {"bars": [FIRST], "symbol": "AAPL", "next_page_token": None}
    assert parse(single)["bars_minute"].num_rows == 1
    assert parse({"bars": None, "next_page_token": None}) == {}
    assert parse({"bars": {}, "next_page_token": None}) == {}
    assert parse({"bars": {"MSFT": [FIRST]}, "next_page_token": None}) == {}
    # duplicate timestamps across pages: the later page wins, one row
    raw = {
        "symbol": "AAPL",
        "pages": [{"bars": {"AAPL": [FIRST]}}, {"bars": [{**FIRST, "c": 1.0}]}],
    }
    table = parse(raw)["bars_minute"]
    assert table.num_rows == 1 and table.column("close").to_pylist() == [1.0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"message": "forbidden"}, "not an Alpaca bars response"),
        ({"bars": {"AAPL": [{**FIRST, "t": "yesterday"}]}}, "not an RFC 3339"),
        ({"bars": {"AAPL": [{**FIRST, "o": None}]}}, "'o' must be a finite number"),
        ({"bars": {"AAPL": [{**FIRST, "c": "1.0"}]}}, "'c' must be a finite number"),
        ({"bars": "AAPL"}, "'bars' must be a list or a dict"),
        ([1, 2], "not an Alpaca bars response"),
    ],
)
def test_parse_malformed_payloads_are_one_line_errors(raw: Any, message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        parse(raw)
    assert "\n" not in str(info.value)


class FakeAlpaca:
    """Serves pages of bars in the documented shape; records every request."""

    def __init__(self, pages: dict[str | None, dict[str, Any]] | None = None) -> None:
        self.pages = pages
        self.requests: list[httpx.Request] = []
        self.status: int = 200

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        if self.status != 200:
            return httpx.Response(self.status, json={"message": "forbidden."})
        symbol = req.url.params["symbols"]
        if self.pages is not None:
            return httpx.Response(200, json=self.pages[req.url.params.get("page_token")])
        if symbol == "NOPE":
            return httpx.Response(200, json={"bars": {}, "next_page_token": None})
        start = dt.datetime.fromisoformat(req.url.params["start"])
        # 10 bars a day from 14:30 UTC, two pages: 6 then 4 (page token = "p2")
        bars = [
            bar(
                (start + dt.timedelta(hours=9, minutes=30 + i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                100.0 + i,
            )
            for i in range(10)
        ]
        if req.url.params.get("page_token") == "p2":
            return httpx.Response(200, json={"bars": {symbol: bars[6:]}, "next_page_token": None})
        return httpx.Response(200, json={"bars": {symbol: bars[:6]}, "next_page_token": "p2"})


def client(handler: Any) -> HttpClient:
    return HttpClient(transport=httpx.MockTransport(handler), sleep=lambda _s: None, retries=0)


def test_fetch_follows_page_tokens_with_documented_parameters() -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {"bars": {"AAPL": [FIRST]}, "next_page_token": TOKEN},
        TOKEN: {"bars": {"AAPL": [bar("2022-01-03T09:01:00Z", 178.0)]}, "next_page_token": "t3"},
        "t3": {"bars": {"AAPL": [bar("2022-01-03T09:02:00Z", 179.0)]}, "next_page_token": None},
    }
    fake = FakeAlpaca(pages)
    src = AlpacaSource(client=client(fake), key_id=KEY, secret_key=SECRET, feed="sip")
    raw = src.fetch(request())
    assert len(raw["pages"]) == 3
    params = [dict(r.url.params) for r in fake.requests]
    assert [p.get("page_token") for p in params] == [None, TOKEN, "t3"]
    first = params[0]
    assert first["symbols"] == "AAPL" and first["timeframe"] == "1Min"
    assert first["adjustment"] == "raw" and first["feed"] == "sip" and first["limit"] == "10000"
    assert first["start"] == "2022-01-03T05:00:00Z" and first["end"] == "2022-01-04T05:00:00Z"
    assert fake.requests[0].url.host == "data.alpaca.markets"
    assert fake.requests[0].url.path == "/v2/stocks/bars"
    assert fake.requests[0].headers["APCA-API-KEY-ID"] == KEY
    assert fake.requests[0].headers["APCA-API-SECRET-KEY"] == SECRET
    table = src.parse(request(), raw)["bars_minute"]
    assert table.column("open").to_pylist() == [177.83, 178.0, 179.0]


def test_repeated_page_token_stops_with_an_error() -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {"bars": {"AAPL": [FIRST]}, "next_page_token": TOKEN},
        TOKEN: {"bars": {"AAPL": [FIRST]}, "next_page_token": TOKEN},
    }
    src = AlpacaSource(client=client(FakeAlpaca(pages)), key_id=KEY, secret_key=SECRET)
    with pytest.raises(SourceError, match="repeats"):
        src.fetch(request())


def test_missing_credentials_name_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    src = AlpacaSource(client=client(FakeAlpaca()))
    pattern = r"APCA_API_KEY_ID and APCA_API_SECRET_KEY not set.*app\.alpaca\.markets"
    with pytest.raises(ConfigError, match=pattern):
        src.fetch(request())
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    with pytest.raises(ConfigError, match=r"APCA_API_SECRET_KEY not set.*needs both"):
        src.fetch(request())
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    assert src.fetch(request())["pages"]


def test_feed_setting_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPACA_FEED", raising=False)
    assert AlpacaSource().feed == "iex"
    monkeypatch.setenv("ALPACA_FEED", "SIP")
    assert AlpacaSource().feed == "sip"
    monkeypatch.setenv("ALPACA_FEED", "nasdaq")
    with pytest.raises(ConfigError, match="ALPACA_FEED"):
        AlpacaSource()
    monkeypatch.delenv("ALPACA_FEED")
    src = get_source("alpaca", key_id=KEY, secret_key=SECRET)
    assert isinstance(src, AlpacaSource) and src.datasets == ("bars_minute",)
    assert src.client.rate_limits["data.alpaca.markets"] == pytest.approx(200 / 60)
    assert KEY not in repr(src) and SECRET not in repr(src)
    src.client.close()


def test_refused_credentials_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAlpaca()
    fake.status = 403
    src = AlpacaSource(client=client(fake), key_id=KEY, secret_key=SECRET, feed="sip")
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as info:
        src.fetch(request())
    text = str(info.value)
    assert "APCA_API_KEY_ID" in text and "feed=sip" in text
    assert KEY not in text and SECRET not in text
    assert SECRET not in caplog.text and KEY not in caplog.text


def test_end_to_end_ingest_into_memory_lake_and_rerun() -> None:
    fake = FakeAlpaca()
    src = AlpacaSource(client=client(fake), key_id=KEY, secret_key=SECRET)
    lake = marketlake.open("memory://")
    try:
        start, end = dt.date(2022, 1, 3), dt.date(2022, 1, 4)
        s = run_batch(lake, src, ["AAPL", "BRK.B", "NOPE"], ["bars_minute"], start, end, workers=2)
        assert s.items_failed == 0 and s.items_completed == 3
        aapl = lake.read("AAPL", "bars_minute", start, end, output="arrow")
        assert aapl.num_rows == 10  # one request for both days, 2 pages; bars on Jan 3 only
        assert aapl.column("ts").to_pylist()[0] == dt.datetime(2022, 1, 3, 14, 30, tzinfo=dt.UTC)
        assert aapl.column("open").to_pylist()[-1] == 109.0
        assert lake.read("BRK.B", "bars_minute", start, end, output="arrow").num_rows == 10
        assert lake.read("NOPE", "bars_minute", start, end, output="arrow").num_rows == 0
        assert {r.url.params["symbols"] for r in fake.requests} == {"AAPL", "BRK.B", "NOPE"}
        again = run_batch(lake, src, ["AAPL", "BRK.B"], ["bars_minute"], start, end, workers=2)
        assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    finally:
        lake.close()
