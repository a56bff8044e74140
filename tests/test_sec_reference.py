"""SEC's ticker <-> CIK reference: company_tickers.json stored as ``ticker_metadata`` intervals
under ticker ``SEC`` (ingest through a mock transport, import of saved files) and the
``cik_for`` / ``ticker_for_cik`` lookups (recorded file: tests/fixtures/sec_edgar)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
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
from marketlake.ingest.imports import import_files
from marketlake.reference import cik_for, stored_table, ticker_for_cik
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import REFERENCE_TICKER_SEC, TICKER_METADATA
from marketlake.sources.base import FILE_RANGE, SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.sec import SecEdgarSource, parse_company_tickers, parse_ticker_snapshots
from tests.test_sec import FIXTURES, load

DAY1 = dt.date(2024, 5, 14)  # the recorded file's date
DAY2 = dt.date(2024, 5, 20)
AAPL_CIK, MSFT_CIK, BRK_CIK, GOOG_CIK = 320193, 789019, 1067983, 1652044


def first_snapshot() -> dict[str, Any]:
    return load("company_tickers.json")  # type: ignore[no-any-return]


def second_snapshot() -> dict[str, Any]:
    """AAPL renamed to AAPX (same CIK); MSFT reused by another company (new CIK)."""
    body: dict[str, Any] = json.loads(json.dumps(first_snapshot()))
    for entry in body.values():
        if entry["ticker"] == "AAPL":
            entry["ticker"] = "AAPX"
        elif entry["ticker"] == "MSFT":
            entry["cik_str"], entry["title"] = 999999, "MSFT REUSED CORP"
    return body


def http_date(day: dt.date) -> str:
    return f"{day:%a, %d %b %Y} 21:30:00 GMT"


def make_source(bodies: list[tuple[dict[str, Any], str | None]]) -> SecEdgarSource:
    """A source whose n-th download of company_tickers.json answers ``bodies[n]``."""
    served = iter(bodies)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/files/company_tickers.json"
        body, modified = next(served)
        headers = {"Last-Modified": modified} if modified else {}
        return httpx.Response(200, content=json.dumps(body).encode(), headers=headers)

    client = HttpClient(
        user_agent="Test Co test@example.com",
        transport=httpx.MockTransport(handle),
        retries=0,
        sleep=lambda _s: None,
        rate_limits={"www.sec.gov": 0},
    )
    return SecEdgarSource(client=client)


@pytest.fixture
def local_lake(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(str(tmp_path / "lake"), fsync=False)
    yield lk
    lk.close()


def stored(lake: Lake) -> list[dict[str, Any]]:
    table = stored_table(lake, REFERENCE_TICKER_SEC, "ticker_metadata")
    assert table is not None
    assert conform(table, TICKER_METADATA, REFERENCE_TICKER_SEC).equals(table)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def ingest(lake: Lake, source: SecEdgarSource) -> Any:
    today = dt.datetime.now(dt.UTC).date()
    return run_batch(lake, source, ["SEC"], ["ticker_metadata"], today, today, workers=1)


def test_ingest_stores_the_snapshot_and_accumulates_a_second(local_lake: Lake) -> None:
    n = parse_company_tickers(first_snapshot()).num_rows
    source = make_source(
        [
            (first_snapshot(), http_date(DAY1)),
            (first_snapshot(), http_date(DAY1)),  # rerun: same snapshot
            (second_snapshot(), http_date(DAY2)),
            (second_snapshot(), http_date(DAY2)),
        ]
    )
    s = ingest(local_lake, source)
    assert (s.status, s.items_completed, s.rows_added) == ("completed", 1, n)
    rows = stored(local_lake)
    assert len(rows) == n > 9000
    by_symbol = {r["symbol"]: r for r in rows}
    assert by_symbol["AAPL"] == {
        "first_seen": DAY1,
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "exchange": None,
        "is_etf": None,
        "round_lot": None,
        "financial_status": None,
        "last_seen": DAY1,
        "delisted": None,
        "source": "sec",
        "cik": AAPL_CIK,
    }
    assert by_symbol["BRK.B"]["cik"] == BRK_CIK  # SEC's BRK-B in the lake's spelling
    assert ingest(local_lake, source).objects_written == 0  # same snapshot again

    s = ingest(local_lake, source)
    # new: AAPX and MSFT's second interval; updated: every stored row (last_seen or delisted)
    assert (s.status, s.rows_added, s.rows_updated) == ("completed", 2, n)
    rows = stored(local_lake)
    assert len(rows) == n + 2
    aapl = [r for r in rows if r["symbol"] == "AAPL"]
    assert [(r["first_seen"], r["last_seen"], r["delisted"]) for r in aapl] == [(DAY1, DAY1, DAY2)]
    aapx = [r for r in rows if r["symbol"] == "AAPX"]
    assert [(r["first_seen"], r["delisted"], r["cik"]) for r in aapx] == [(DAY2, None, AAPL_CIK)]
    msft = sorted((r for r in rows if r["symbol"] == "MSFT"), key=lambda r: r["first_seen"])
    assert [(r["first_seen"], r["delisted"], r["cik"], r["name"]) for r in msft] == [
        (DAY1, DAY2, MSFT_CIK, "MICROSOFT CORP"),
        (DAY2, None, 999999, "MSFT REUSED CORP"),
    ]
    nvda = next(r for r in rows if r["symbol"] == "NVDA")
    assert (nvda["first_seen"], nvda["last_seen"], nvda["delisted"]) == (DAY1, DAY2, None)
    assert ingest(local_lake, source).objects_written == 0  # rerun of the second snapshot

    # lookups as of dates
    assert cik_for(local_lake, "AAPL", DAY1) == cik_for(local_lake, "aapl", "2024-05-19")
    assert cik_for(local_lake, "AAPL", DAY1) == AAPL_CIK
    assert cik_for(local_lake, "AAPL") is None and cik_for(local_lake, "AAPL", DAY2) is None
    assert cik_for(local_lake, "AAPL", dt.date(2024, 5, 13)) is None  # before any snapshot
    assert cik_for(local_lake, "AAPX") == AAPL_CIK
    assert cik_for(local_lake, "MSFT", DAY1) == MSFT_CIK and cik_for(local_lake, "MSFT") == 999999
    assert cik_for(local_lake, "BRK-B") == BRK_CIK
    assert ticker_for_cik(local_lake, AAPL_CIK, DAY1) == "AAPL"
    assert ticker_for_cik(local_lake, "0000320193") == "AAPX"
    assert ticker_for_cik(local_lake, MSFT_CIK) is None
    assert ticker_for_cik(local_lake, MSFT_CIK, "2024-05-19") == "MSFT"
    assert ticker_for_cik(local_lake, BRK_CIK) == "BRK.A"  # several tickers: documented order
    assert ticker_for_cik(local_lake, GOOG_CIK) == "GOOG"
    assert ticker_for_cik(local_lake, 1) is None


def test_snapshot_date_from_last_modified_or_today() -> None:
    source = make_source([(first_snapshot(), None), (first_snapshot(), "not a date")])
    source.bind_lake(marketlake.open("memory://"))
    request = SourceRequest("SEC", ("ticker_metadata",), *FILE_RANGE)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    for _ in range(2):
        raw = source.fetch(request)
        assert raw["existing"] is None and [d for d, _ in raw["tickers"]] == [today]
    raw = {"tickers": [(DAY2.isoformat(), second_snapshot())], "existing": None}
    table = source.parse(request, raw)["ticker_metadata"]
    assert set(table["first_seen"].to_pylist()) == {DAY2}


def test_stale_snapshot_is_ignored() -> None:
    first = parse_ticker_snapshots([(DAY2, first_snapshot())], None)
    assert parse_ticker_snapshots([(DAY1, second_snapshot())], first).num_rows == 0
    # two snapshots in one payload apply in date order
    both = parse_ticker_snapshots([(DAY2, second_snapshot()), (DAY1, first_snapshot())], None)
    assert {r["symbol"]: r["delisted"] for r in both.to_pylist()}["AAPL"] == DAY2


def test_requests_and_payloads_are_checked() -> None:
    source = make_source([])
    with pytest.raises(SourceError, match="only dataset 'ticker_metadata'"):
        source.fetch(SourceRequest("SEC", ("ticker_metadata", "fundamentals"), *FILE_RANGE))
    with pytest.raises(SourceError, match="stored under ticker 'SEC', not 'AAPL'"):
        source.fetch(SourceRequest("AAPL", ("ticker_metadata",), *FILE_RANGE))
    with pytest.raises(SourceError, match="no lake to read them from"):
        source.fetch(SourceRequest("SEC", ("ticker_metadata",), *FILE_RANGE))
    with pytest.raises(SourceError, match="company tickers: expected a JSON object"):
        source.parse(SourceRequest("SEC", ("ticker_metadata",), *FILE_RANGE), {"tickers": [
            ("2024-05-14", [1, 2])
        ]})  # fmt: skip


def test_import_company_tickers_files(local_lake: Lake, tmp_path: Path) -> None:
    one = tmp_path / "company_tickers_2024-05-14.json"
    one.write_bytes(json.dumps(first_snapshot()).encode())
    two = tmp_path / "files" / "company_tickers_20240520.json.gz"
    two.parent.mkdir()
    two.write_bytes(gzip.compress(json.dumps(second_snapshot()).encode()))
    s = import_files(local_lake, SecEdgarSource(), [two, one])
    assert (s.items_completed, s.items_failed) == (1, 0)
    rows = stored(local_lake)
    assert len(rows) == parse_company_tickers(first_snapshot()).num_rows + 2
    assert cik_for(local_lake, "AAPL", DAY1) == AAPL_CIK and cik_for(local_lake, "AAPL") is None
    assert ticker_for_cik(local_lake, AAPL_CIK) == "AAPX"
    again = import_files(local_lake, SecEdgarSource(), [one, two])
    assert again.objects_written == 0 and again.items_completed == 1


def test_cli_ingest_and_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    lake = str(tmp_path / "lake")
    saved = tmp_path / "company_tickers.json"
    saved.write_bytes(gzip.decompress((FIXTURES / "company_tickers.json.gz").read_bytes()))
    res = runner.invoke(app, ["import", "sec", str(saved), "--lake", lake])
    assert res.exit_code == 0, res.output
    with marketlake.open(lake) as lk:
        assert cik_for(lk, "AAPL") == AAPL_CIK
        first_seen = {r["first_seen"] for r in stored(lk)}
    mtime = dt.datetime.fromtimestamp(saved.stat().st_mtime, dt.UTC).date()
    assert first_seen == {mtime}  # no date in the name: the file's modification date

    # ingest through the CLI: the source's client is served by a mock transport
    source = make_source([(second_snapshot(), http_date(mtime + dt.timedelta(days=1)))])
    monkeypatch.setattr("marketlake.sources.registry.get_source", lambda _name: source)
    res = runner.invoke(
        app,
        ["ingest", "--source", "sec", "--tickers", "SEC", "--datasets", "ticker_metadata",
         "--date", "2024-05-20", "--lake", lake],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with marketlake.open(lake) as lk:
        assert cik_for(lk, "AAPX") == AAPL_CIK and cik_for(lk, "AAPL", mtime) == AAPL_CIK
