"""``marketlake import`` for Alpaca and the crypto venues (Binance, Kraken, Coinbase, Tiingo).

Fixture: tests/fixtures/tiingo_crypto (real, MIT; see its PROVENANCE.md). No Alpaca, Binance,
Kraken or Coinbase payload may be copied (see that PROVENANCE.md), so their bodies are built here
in the venues' documented shapes, as tests/test_alpaca.py and tests/test_crypto.py do, and
written to tmp files. Each import is compared with the API path (``run_batch`` on an
``httpx.MockTransport`` serving the same body): same rows; a second import writes nothing; a bad
file fails alone, as an item naming it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.cli.main import app
from marketlake.errors import SourceError
from marketlake.ingest.batch import run_batch
from marketlake.ingest.imports import FILE_ITEM, import_files
from marketlake.sources.alpaca import AlpacaSource
from marketlake.sources.base import Source
from marketlake.sources.crypto import (
    BinanceSource,
    CoinbaseSource,
    KrakenSource,
    Pair,
    TiingoCryptoSource,
    kraken_pair,
)
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source

TIINGO = Path(__file__).parent / "fixtures" / "tiingo_crypto" / "crypto_price_history.body.json"
DAY0 = int(dt.datetime(2024, 4, 1, tzinfo=dt.UTC).timestamp())
START, END = dt.date(2024, 4, 1), dt.date(2024, 4, 5)
NOW = DAY0 + 30 * 86_400.0  # long after every bar: none is still open
BARS = "bars_minute"
CRYPTO = "crypto_bars"
runner = CliRunner()


@pytest.fixture
def lake() -> Iterator[Lake]:
    lk = marketlake.open("memory://")
    yield lk
    lk.close()


@pytest.fixture
def api_lake() -> Iterator[Lake]:
    lk = marketlake.open("memory://")
    yield lk
    lk.close()


def client(handler: Callable[[httpx.Request], httpx.Response]) -> HttpClient:
    return HttpClient(transport=httpx.MockTransport(handler), retries=0, sleep=lambda _s: None)


def write(path: Path, body: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(body).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def same_rows(lake: Lake, api_lake: Lake, ticker: str, dataset: str) -> int:
    got = lake.read(ticker, dataset, output="arrow")
    want = api_lake.read(ticker, dataset, output="arrow")
    assert got.num_rows > 0 and got.equals(want), (ticker, dataset)
    return int(got.num_rows)


def rerun_writes_nothing(lake: Lake, source: Source, paths: list[Path]) -> None:
    again = import_files(lake, source, paths)
    assert again.status == "completed", again.failures
    assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0


# --- payloads in the venues' documented shapes ------------------------------------------------


def alpaca_bar(t: str, o: float, v: int = 100, n: int = 5, vw: float = 1.0) -> dict[str, Any]:
    return {"t": t, "o": o, "h": o + 0.5, "l": o - 0.25, "c": o + 0.1, "v": v, "n": n, "vw": vw}


ALPACA = {
    "AAPL": [
        alpaca_bar("2024-04-01T13:30:00Z", 171.19, 250_000, 1200, 171.3),
        alpaca_bar("2024-04-01T13:31:00Z", 171.4),
        alpaca_bar("2024-04-02T13:30:00Z", 169.08),
    ],
    "MSFT": [alpaca_bar("2024-04-01T13:30:00Z", 424.57, 90_000, 800, 424.6)],
    "BRK.B": [alpaca_bar("2024-04-03T14:00:00Z", 418.0)],
}


def klines(n: int) -> list[list[Any]]:
    """Binance klines: [openTime ms, "o", "h", "l", "c", "vol", closeTime, "quoteVol", n, ...]."""
    return [
        [(DAY0 + i * 86_400) * 1000, f"{69000 + i}.5", f"{69500 + i}.0", f"{68500 + i}.0",
         f"{69100 + i}.25", "1234.5678", (DAY0 + (i + 1) * 86_400) * 1000 - 1, "85000000.1",
         100_000 + i, "600.1", "41000000.2", "0"]
        for i in range(n)
    ]  # fmt: skip


def kraken_body(n: int, key: str = "XXBTZUSD") -> dict[str, Any]:
    """Kraken OHLC: the last row (after ``last``) is the bar still being built."""
    rows = [
        [DAY0 + i * 86_400, "67000.0", "67100.5", "66900.1", f"{67050 + i}.0", "67020.3",
         "12.34500000", 250 + i]
        for i in range(n)
    ]  # fmt: skip
    return {"error": [], "result": {key: rows, "last": DAY0 + (n - 2) * 86_400}}


def coinbase_candles(n: int) -> list[list[Any]]:
    """Coinbase Exchange candles [time, low, high, open, close, volume], newest first."""
    rows = [[DAY0 + i * 86_400, 3000.5 + i, 3100.0, 3050.0, 3075.25 + i, 3.5] for i in range(n)]
    return rows[::-1]


# --- Alpaca -----------------------------------------------------------------------------------


def test_alpaca_pages_equal_the_api_path_and_rerun_writes_nothing(
    lake: Lake, api_lake: Lake, tmp_path: Path
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        symbol = request.url.params["symbols"]
        return httpx.Response(200, json={"bars": {symbol: ALPACA[symbol]}, "next_page_token": None})

    api = AlpacaSource(client=client(handle), key_id="k", secret_key="s")
    done = run_batch(api_lake, api, list(ALPACA), [BARS], START, END, workers=1)
    assert done.items_completed == 3

    multi = write(
        tmp_path / "p1.json",
        {"bars": {"AAPL": ALPACA["AAPL"][:2], "MSFT": ALPACA["MSFT"]}, "next_page_token": "x"},
    )
    page2 = write(tmp_path / "p2.json.gz", {"bars": {"AAPL": ALPACA["AAPL"][2:]}})
    single = write(tmp_path / "brk.json", {"bars": ALPACA["BRK.B"], "symbol": "BRK.B"})
    empty = write(tmp_path / "empty.json", {"bars": {}, "next_page_token": None})
    files = [multi, page2, single, empty]
    s = import_files(lake, get_source("alpaca"), files)
    assert (s.status, s.files, s.skipped, s.items_total) == ("completed", 4, 1, 3)
    assert s.rows_added == done.rows_added == 5
    for ticker in ALPACA:
        same_rows(lake, api_lake, ticker, BARS)
    rerun_writes_nothing(lake, AlpacaSource(), files)


def test_alpaca_bad_files_fail_alone(lake: Lake, tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", {"bars": {"AAPL": ALPACA["AAPL"]}})
    no_symbol = write(tmp_path / "nosym.json", {"bars": ALPACA["MSFT"]})
    other = write(tmp_path / "other.json", {"chart": {}})
    broken = write(tmp_path / "bad-bar.json", {"bars": {"MSFT": [{"t": "yesterday", "o": 1}]}})
    s = import_files(lake, AlpacaSource(), [good, no_symbol, other, broken])
    assert s.status == "failed" and s.items_completed == 1
    failures = {(f.ticker, f.dataset): f.error or "" for f in s.failures}
    assert set(failures) == {(str(no_symbol), FILE_ITEM), (str(other), FILE_ITEM), ("MSFT", BARS)}
    assert failures[(str(no_symbol), FILE_ITEM)].startswith(f"{no_symbol}: a single-symbol")
    assert "not an Alpaca /v2/stocks/bars page" in failures[(str(other), FILE_ITEM)]
    assert (
        failures[("MSFT", BARS)].startswith(str(broken)) and "RFC 3339" in failures[("MSFT", BARS)]
    )
    assert lake.read("AAPL", BARS, output="arrow").num_rows == 3


# --- crypto: rows equal the API path ----------------------------------------------------------


def _binance() -> tuple[Source, list[tuple[str, str, Any]]]:
    body = klines(5)
    src = BinanceSource(client=client(lambda r: httpx.Response(200, json=body)), now=lambda: NOW)
    return src, [("BTC-USDT", "BTCUSDT-1d-2024-04.json", body)]


def _kraken() -> tuple[Source, list[tuple[str, str, Any]]]:
    body = kraken_body(6)
    src = KrakenSource(client=client(lambda r: httpx.Response(200, json=body)), now=lambda: NOW)
    return src, [("BTC-USD", "saved.json", body)]


def _coinbase() -> tuple[Source, list[tuple[str, str, Any]]]:
    body = coinbase_candles(5)
    src = CoinbaseSource(client=client(lambda r: httpx.Response(200, json=body)), now=lambda: NOW)
    return src, [("ETH-USD", "ETH-USD-1d.json.gz", body)]


@pytest.mark.parametrize(
    "make", [_binance, _kraken, _coinbase], ids=["binance", "kraken", "coinbase"]
)
def test_crypto_files_equal_the_api_path_and_rerun_writes_nothing(
    make: Callable[[], tuple[Source, list[tuple[str, str, Any]]]],
    lake: Lake,
    api_lake: Lake,
    tmp_path: Path,
) -> None:
    api, cases = make()
    files = []
    for ticker, name, body in cases:
        done = run_batch(api_lake, api, [ticker], [CRYPTO], START, END, workers=1)
        assert done.items_completed == 1, done.failures
        files.append(write(tmp_path / name, body))
    s = import_files(lake, get_source(api.name), files)
    assert (s.status, s.items_completed) == ("completed", len(cases)), s.failures
    for ticker, _name, _body in cases:
        assert same_rows(lake, api_lake, ticker, CRYPTO) == 5
    rerun_writes_nothing(lake, get_source(api.name), files)


def test_tiingo_file_equals_the_api_path_per_pair(
    lake: Lake, api_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIINGO_API_KEY", "token-never-shown")
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    api = TiingoCryptoSource(
        client=client(lambda r: httpx.Response(200, content=TIINGO.read_bytes())), now=lambda: now
    )
    may1, may2 = dt.date(2019, 5, 1), dt.date(2019, 5, 2)
    done = run_batch(api_lake, api, ["BTC-USD", "FLDC-BTC"], [CRYPTO], may1, may2, workers=1)
    assert done.items_completed == 2
    s = import_files(lake, get_source("tiingo_crypto"), [TIINGO])
    assert (s.status, s.files, s.items_completed) == ("completed", 2, 2)
    assert same_rows(lake, api_lake, "BTC-USD", CRYPTO) == 10  # 4 exchanges + the aggregate
    assert same_rows(lake, api_lake, "FLDC-BTC", CRYPTO) == 4
    rerun_writes_nothing(lake, TiingoCryptoSource(), [TIINGO])


# --- crypto: pairs from names, archives, saved fetch results ------------------------------------


def test_pairs_from_file_directory_and_archive_names(lake: Lake, tmp_path: Path) -> None:
    bundle = tmp_path / "ETHBTC-1d.zip"  # the archive names the pair of its unnamed members
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("2024-04.json", json.dumps(klines(2)))
        zf.writestr("SOLUSDC/2024-04.json", json.dumps(klines(3)))  # a member directory wins
    files = [
        write(tmp_path / "BNBFDUSD.json", klines(1)),
        write(tmp_path / "doge-try-2024.json.gz", klines(1)),  # the pair, any case
        write(tmp_path / "XRPEUR" / "april.json", klines(1)),  # the directory
        bundle,
    ]
    s = import_files(lake, BinanceSource(), files)
    assert s.status == "completed", s.failures
    assert {i.ticker for i in lake.catalog.run_items(s.run_id)} == {
        "BNB-FDUSD",
        "DOGE-TRY",
        "XRP-EUR",
        "ETH-BTC",
        "SOL-USDC",
    }
    assert lake.read("SOL-USDC", CRYPTO, output="arrow").num_rows == 3
    # Coinbase: the product id from the name or directory; the Advanced Trade shape too
    adv = {
        "candles": [
            {
                "start": str(DAY0),
                "low": "1",
                "high": "3",
                "open": "2",
                "close": "2.5",
                "volume": "9",
            }
        ]
    }
    cb = [write(tmp_path / "BTC-USD" / "candles.json", adv), write(tmp_path / "sol-eur.json", [])]
    s = import_files(lake, CoinbaseSource(), cb)
    assert s.status == "completed" and s.items_total == 2, s.failures
    assert lake.read("BTC-USD", CRYPTO, output="arrow").column("volume").to_pylist() == [9.0]
    # a saved fetch result names its pair (and its fetch time keeps out the bar then open)
    saved = {
        "pair": "ADA-USD",
        "symbol": "ADAUSD",
        "interval": "1d",
        "pages": [coinbase_candles(3)],
        "fetched_at": DAY0 + 2 * 86_400 + 60,
    }
    s = import_files(lake, CoinbaseSource(), [write(tmp_path / "fetched.json", saved)])
    assert s.status == "completed" and lake.read("ADA-USD", CRYPTO, output="arrow").num_rows == 2


def test_kraken_pair_names() -> None:
    cases = {
        "XXBTZUSD": "BTC-USD",
        "XETHZEUR": "ETH-EUR",
        "XETHXXBT": "ETH-BTC",
        "XBTUSDT": "BTC-USDT",
        "XDGUSD": "DOGE-USD",
        "SOLUSD": "SOL-USD",
        "USDTZUSD": "USDT-USD",
        "ETHUSDC": "ETH-USDC",
    }
    assert {k: str(kraken_pair(k)) for k in cases} == cases
    assert kraken_pair("DOTEUR") == Pair("DOT", "EUR")
    with pytest.raises(SourceError, match="no known quote asset"):
        kraken_pair("FOOBAR")


def test_crypto_bad_files_fail_alone(lake: Lake, tmp_path: Path) -> None:
    good = write(tmp_path / "BTCUSDT.json", klines(3))
    unnamed = write(tmp_path / "klines.json", klines(2))
    history = write(tmp_path / "history.json", klines(2))  # lower case: not read as HIS-TRY
    dict_body = write(tmp_path / "ETHUSDT.json", {"code": -1121, "msg": "Invalid symbol."})
    bad_row = write(tmp_path / "SOLUSDT.json", [["x"]])
    not_json = tmp_path / "BNBUSDT.json"
    not_json.write_text("[[1, ")
    s = import_files(lake, BinanceSource(), [good, unnamed, history, dict_body, bad_row, not_json])
    assert s.status == "failed" and s.items_completed == 1 and s.items_failed == 5
    failures = {f.ticker: f.error or "" for f in s.failures}
    assert set(failures) == {
        str(unnamed),
        str(history),
        str(dict_body),
        "SOL-USDT",
        str(not_json),
    }
    for path in (unnamed, history):
        assert failures[str(path)].startswith(f"{path}: the body does not say its pair")
        assert "BTCUSDT-1d.json" in failures[str(path)]
    assert "not a Binance klines array" in failures[str(dict_body)]
    assert (
        failures["SOL-USDT"].startswith(str(bad_row)) and "malformed kline" in failures["SOL-USDT"]
    )
    assert "not valid JSON" in failures[str(not_json)]
    assert lake.read("BTC-USDT", CRYPTO, output="arrow").num_rows == 3

    kraken = [
        write(tmp_path / "k-ok.json", kraken_body(3, "XETHZUSD")),
        write(tmp_path / "k-err.json", {"error": ["EQuery:Unknown asset pair"]}),
        write(tmp_path / "k-odd.json", {"error": [], "result": {"FOOBAR": [], "last": 1}}),
    ]
    s = import_files(lake, KrakenSource(), kraken)
    assert s.items_completed == 1 and s.items_failed == 2
    errors = {f.ticker: f.error or "" for f in s.failures}
    assert "Unknown asset pair" in errors[str(kraken[1])]
    assert "FOOBAR" in errors[str(kraken[2])]
    assert lake.read("ETH-USD", CRYPTO, output="arrow").num_rows == 2  # 3rd bar uncommitted

    tiingo = [
        write(tmp_path / "t-err.json", {"detail": "Invalid token."}),
        write(tmp_path / "t-entry.json", [{"ticker": "btcusd", "priceData": []}]),
        write(
            tmp_path / "t-mix.json",
            [{"ticker": "ethusd", "baseCurrency": "btc", "quoteCurrency": "usd"}],
        ),
    ]
    s = import_files(lake, TiingoCryptoSource(), tiingo)
    assert s.items_failed == 3 and s.items_completed == 0
    errors = {f.ticker: f.error or "" for f in s.failures}
    assert "Tiingo answered 'Invalid token.'" in errors[str(tiingo[0])]
    assert "entry 0 has no baseCurrency/quoteCurrency" in errors[str(tiingo[1])]
    assert "does not match" in errors[str(tiingo[2])]

    s = import_files(lake, CoinbaseSource(), [write(tmp_path / "x.json", {"message": "NotFound"})])
    assert "not a Coinbase candles response (NotFound)" in str(s.failures[0].error)
    s = import_files(lake, CoinbaseSource(), [write(tmp_path / "candles.json", [])])
    assert "name the file (or its directory) after the product id" in str(s.failures[0].error)


def test_cli_import_crypto_and_help(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    path = write(tmp_path / "BTCUSDT-1d.json", klines(4))
    res = runner.invoke(app, ["import", "binance", str(path), "--lake", lake])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["import", "binance", str(path), "--lake", lake])
    assert res.exit_code == 0, res.output
    with marketlake.open(lake) as lk:
        assert lk.read("BTC-USDT", CRYPTO, output="arrow").num_rows == 4
    bad = write(tmp_path / "data.json", klines(1))
    res = runner.invoke(app, ["import", "binance", str(bad), "--lake", lake])
    assert res.exit_code == 3 and "does not say its pair" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["import", "--help"])
    assert res.exit_code == 0
    for name in ("alpaca", "binance", "kraken", "coinbase", "tiingo_crypto"):
        assert name in res.output
