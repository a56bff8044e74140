"""The contract every registered source passes (issue 4, "Show"): one parametrised test per source.

* the registry entry agrees with the class (datasets, settings) and every declared dataset is a
  registered dataset;
* ``parse`` of a representative payload (the real recordings in tests/fixtures, or the documented
  shapes the per-source tests build) gives one table per declared dataset whose schema *is* the
  dataset's schema and which ``conform`` leaves unchanged — with the network patched to fail;
* ``fetch`` without the credentials a source needs raises :class:`ConfigError` naming each
  environment variable, before any network I/O;
* ``marketlake sources`` lists every source with its datasets and settings.

Payloads are reused from the per-source test modules (no second copy of a fixture).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from marketlake.cli.main import app
from marketlake.errors import ConfigError
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import FILE_RANGE, Source, SourceRequest
from marketlake.sources.registry import get_source, list_sources
from tests import test_alpaca, test_crypto, test_reference, test_sec, test_tiingo, test_yahoo


@dataclass(frozen=True)
class Case:
    """How to exercise one source: its request, a payload builder and required credentials."""

    request: SourceRequest
    payload: Callable[[Source], Any]
    options: dict[str, Any] = field(default_factory=dict)
    credentials: tuple[str, ...] = ()
    # further (request, payload) pairs when one request cannot fill every dataset (sec: the
    # ticker <-> CIK reference lives under ticker SEC, fundamentals under company tickers)
    more: tuple[tuple[SourceRequest, Callable[[Source], Any]], ...] = ()


def _yahoo_payload(_src: Source) -> Any:
    return {
        "symbol": "AAPL",
        "daily": test_yahoo.body(test_yahoo.YF / "history_chart_AAPL.json"),
        "minute": [test_yahoo._minute_body()],
    }


def _sec_payload(_src: Source) -> Any:
    return {
        "cik": test_sec.MUR_CIK,
        "companyfacts": test_sec.load("companyfacts/CIK0000717423.json"),
        "submissions": [test_sec.load("submissions/CIK0000717423.json")],
    }


def _alpaca_payload(_src: Source) -> Any:
    bars = [test_alpaca.FIRST, test_alpaca.bar("2022-01-03T14:30:00Z", 177.5, v=250_000)]
    return {"bars": {"AAPL": bars, "MSFT": bars[:1]}, "next_page_token": None}


def _binance_payload(_src: Source) -> Any:
    day0 = test_crypto.DAY0 * 1000
    return [
        [day0 + i * 86_400_000, "65000.5", "65100", "64900", "65050.25", "1.5",
         day0 + (i + 1) * 86_400_000 - 1, "97500.1", 1200 + i, "0.7", "45000", "0"]
        for i in range(3)
    ]  # fmt: skip


def _synthetic_payload(src: Source) -> Any:
    return src.fetch(CASES["synthetic"].request)  # offline generator: no I/O to block


_DAYS = (test_crypto.DAY, test_crypto.DAY + dt.timedelta(days=2))
CASES: dict[str, Case] = {
    "synthetic": Case(
        SourceRequest(
            "AAPL",
            (
                "prices",
                "signals_valuation",
                "signals_technical",
                "fundamentals",
                "corporate_actions",
            ),
            dt.date(2023, 1, 1),
            dt.date(2023, 12, 31),
        ),
        _synthetic_payload,
    ),
    "yahoo": Case(
        SourceRequest("AAPL", test_yahoo.ALL, *test_yahoo.WIDE),
        _yahoo_payload,
    ),
    "sec": Case(
        SourceRequest("MUR", ("fundamentals", "filings"), *test_sec.RECENT),
        _sec_payload,
        credentials=("SEC_USER_AGENT",),
        more=(
            (
                SourceRequest("SEC", ("ticker_metadata",), *FILE_RANGE),
                lambda _s: {"tickers": [("2026-11-20", test_sec.load("company_tickers.json"))]},
            ),
        ),
    ),
    "alpaca": Case(
        test_alpaca.request(),
        _alpaca_payload,
        options={"key_id": test_alpaca.KEY, "secret_key": test_alpaca.SECRET},
        credentials=("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"),
    ),
    "binance": Case(test_crypto.req("BTC-USDT", *_DAYS), _binance_payload),
    "kraken": Case(
        test_crypto.req("BTC-USD", dt.date(2024, 3, 1), test_crypto.DAY),
        lambda _s: test_crypto.kraken_body(test_crypto.DAY0 - 5 * 86_400, 8, 86_400),
    ),
    "coinbase": Case(
        test_crypto.req("BTC-USD", *_DAYS),
        lambda _s: [
            [test_crypto.DAY0 + i * 86_400, 66000.5, 66100.0, 66050.0, 66075.25, 3.5]
            for i in (2, 1, 0)  # newest first, as Coinbase answers
        ],
    ),
    "tiingo": Case(
        test_tiingo.req(test_tiingo.ALL),
        test_tiingo.contract_payload,
        credentials=("TIINGO_API_KEY",),
    ),
    "tiingo_crypto": Case(
        test_crypto.req("BTC-USD", test_crypto.MAY1, test_crypto.MAY2),
        lambda _s: test_crypto.tiingo_body(),
        credentials=("TIINGO_API_KEY",),
    ),
    "nasdaq_trader": Case(
        SourceRequest("US", ("ticker_metadata", "ticker_history"), *FILE_RANGE),
        test_reference.nasdaq_contract_payload,
    ),
    "sp500": Case(
        SourceRequest("SP500", ("index_constituents",), *FILE_RANGE),
        test_reference.sp500_contract_payload,
    ),
}

# Environment variables that configure a source but are not credentials (defaults apply).
OPTIONAL_SETTINGS = {"ALPACA_FEED"}
NAMES = [info.name for info in list_sources()]


def test_every_contract_case_is_a_registered_source() -> None:
    # a registered source without a Case still gets the registry/dataset checks below and
    # skips (with a reason) the payload checks until a Case is added here
    assert set(CASES) == set(NAMES)


def _no_network(*_a: Any, **_k: Any) -> Any:
    raise AssertionError("network I/O outside fetch")


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(httpx.Client, "send", _no_network)


@pytest.mark.parametrize("name", NAMES)
def test_source_contract(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES.get(name)
    info = {i.name: i for i in list_sources()}[name]
    src = get_source(name, **(case.options if case else {}))
    # the registry entry and the class agree; declared datasets are registered datasets
    assert src.name == name
    assert tuple(src.datasets) == info.datasets and tuple(src.settings) == info.settings
    assert src.datasets and len(set(src.datasets)) == len(src.datasets)
    for dataset in src.datasets:
        assert get_dataset(dataset).name == dataset
    assert src.description and info.description
    if case is None:
        pytest.skip(f"no contract payload for source {name!r} yet: add a Case to CASES")
    assert set(case.credentials) <= set(src.settings)
    assert set(src.settings) - set(case.credentials) <= OPTIONAL_SETTINGS
    pairs = [(case.request, case.payload), *case.more]
    assert all(r.ticker for r, _ in pairs)
    assert set().union(*(r.datasets for r, _ in pairs)) == set(src.datasets)

    filled: set[str] = set()
    for request, payload in pairs:
        raw = payload(src)
        with monkeypatch.context() as mp:
            _block_network(mp)
            tables = src.parse(request, raw)
            again = src.parse(request, raw)
        assert set(tables) == set(request.datasets)
        filled |= set(tables)
        for dataset, table in tables.items():
            ds = get_dataset(dataset)
            assert isinstance(table, pa.Table) and table.num_rows > 0
            assert table.schema == ds.schema, f"{name} {dataset}: schema differs"
            assert conform(table, ds, request.ticker).equals(table)
        # parse is deterministic (pure): the same payload gives the same tables
        assert all(again[d].equals(t) for d, t in tables.items())
    # the representative payloads fill every declared dataset, each exactly canonical
    assert filled == set(src.datasets)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.credentials])
def test_fetch_without_credentials_names_the_variables(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    for var in get_source(name).settings:
        monkeypatch.delenv(var, raising=False)
    src = get_source(name)  # constructing needs no credential
    _block_network(monkeypatch)  # the missing setting is reported before any request
    with pytest.raises(ConfigError) as info:
        src.fetch(case.request)
    message = str(info.value)
    assert "\n" not in message
    for var in case.credentials:
        assert var in message, f"{name}: {message!r} does not name {var}"


def test_cli_sources_lists_every_source_with_datasets_and_settings() -> None:
    result = CliRunner().invoke(app, ["sources"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for info in list_sources():
        assert info.name in text
        for token in (*info.datasets, *info.settings):
            assert token in text, f"{info.name}: {token} missing from 'marketlake sources'"
    assert text.count("(none)") == sum(1 for i in list_sources() if not i.settings)


def test_recorded_payloads_are_the_shared_fixtures() -> None:
    """The payloads above come from the recorded files, not from hand-edited copies."""
    aapl = test_yahoo.YF / "history_chart_AAPL.json"
    assert json.loads(aapl.read_bytes())["chart"]["result"][0]["meta"]["symbol"] == "AAPL"
    facts = test_sec.FIXTURES / "companyfacts" / "CIK0000717423.json.gz"
    assert json.loads(gzip.decompress(facts.read_bytes()))["cik"] == test_sec.MUR_CIK
