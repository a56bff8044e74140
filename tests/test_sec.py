"""SEC EDGAR source: parsers on the real recorded payloads, fetch through a mock transport,
end-to-end ingest into a lake (tests/fixtures/sec_edgar, see its PROVENANCE.md)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import socket
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import marketlake
from marketlake import Lake
from marketlake.errors import ConfigError, NoDataError, SourceError
from marketlake.ingest.batch import run_batch
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import FUNDAMENTALS, get_dataset
from marketlake.sources.base import SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source, list_sources
from marketlake.sources.sec import (
    SecEdgarSource,
    companyfacts_url,
    format_cik,
    parse_cik,
    parse_company_tickers,
    parse_companyfacts,
    parse_submissions,
    submissions_url,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sec_edgar"
MUR_CIK = 717423
LPA_CIK = 1997711
TSLA_CIK = 1318605
ALL = (dt.date(1990, 1, 1), dt.date(2030, 12, 31))
# MUR's older submissions page (filings up to 2013-08-12) is not recorded: ranges that need
# submissions start after it
RECENT = (dt.date(2014, 1, 1), dt.date(2030, 12, 31))


@cache
def _bytes(name: str) -> bytes:
    return gzip.decompress((FIXTURES / f"{name}.gz").read_bytes())


def load(name: str) -> Any:
    return json.loads(_bytes(name))


@cache
def mur_table() -> pa.Table:
    return parse_companyfacts(load("companyfacts/CIK0000717423.json"))


def mur_filings_since(day: dt.date) -> int:
    """Counted straight from the raw JSON strings (independent of the parser)."""
    dates = load("submissions/CIK0000717423.json")["filings"]["recent"]["filingDate"]
    return sum(1 for d in dates if d >= day.isoformat())


def rows_for(table: pa.Table, period_end: str) -> list[dict[str, Any]]:
    day = dt.date.fromisoformat(period_end)
    return [r for r in table.to_pylist() if r["period_end"] == day]


# --- CIKs and tickers ------------------------------------------------------------------------


def test_cik_int_and_padded_strings() -> None:
    assert parse_cik(MUR_CIK) == parse_cik("717423") == parse_cik("0000717423") == MUR_CIK
    assert parse_cik("CIK0000717423") == MUR_CIK
    assert format_cik(MUR_CIK) == format_cik("717423") == "0000717423"
    assert companyfacts_url("717423").endswith("/api/xbrl/companyfacts/CIK0000717423.json")
    assert submissions_url(MUR_CIK).endswith("/submissions/CIK0000717423.json")
    for bad in ("", "MUR", "12345678901", 0, -5, True, 1.5):
        with pytest.raises(SourceError, match="not a CIK"):
            parse_cik(bad)


def test_company_tickers() -> None:
    payload = load("company_tickers.json")
    table = parse_company_tickers(payload)
    assert table.schema.names == ["ticker", "cik", "title"]
    assert len(payload) == 9610
    assert 9500 < table.num_rows <= 9610  # duplicates and unstorable tickers dropped
    assert len(set(table["ticker"].to_pylist())) == table.num_rows
    by_ticker = dict(zip(table["ticker"].to_pylist(), table["cik"].to_pylist(), strict=True))
    assert by_ticker["MUR"] == MUR_CIK
    assert by_ticker["TSLA"] == TSLA_CIK
    assert by_ticker["MSFT"] == 789019
    assert by_ticker["BRK.B"] == 1067983  # SEC spells it BRK-B
    assert "BRK-B" not in by_ticker


# --- companyfacts -> fundamentals ------------------------------------------------------------


def test_mur_fundamentals_counts_and_schema() -> None:
    table = mur_table()
    assert table.schema == FUNDAMENTALS.schema
    conform(table, FUNDAMENTALS, "MUR")  # schema exact, keys unique, non-negatives hold
    assert table.num_rows == 198
    keys = list(zip(table["period_end"].to_pylist(), table["filed"].to_pylist(), strict=True))
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    assert keys[0] == (dt.date(2007, 12, 31), dt.date(2009, 8, 7))
    assert keys[-1] == (dt.date(2022, 6, 30), dt.date(2022, 8, 4))
    periods = set(table["fiscal_period"].to_pylist())
    assert periods == {"Q1", "Q2", "Q3", "Q4", "FY"}
    assert set(table["form"].to_pylist()) == {"10-Q", "10-K", "10-K/A"}
    # every filed date is a real filing date of the company and never before the period end
    assert all(f > p for p, f in keys)


def test_mur_known_quarter_as_first_reported() -> None:
    first = rows_for(mur_table(), "2021-09-30")[0]
    assert first["filed"] == dt.date(2021, 11, 4)
    assert first["form"] == "10-Q"
    assert first["accession"] == "0000717423-21-000046"
    assert (first["fiscal_year"], first["fiscal_quarter"], first["fiscal_period"]) == (
        2021,
        3,
        "Q3",
    )
    assert first["revenue"] == 630_700_000  # us-gaap:Revenues, 2021-07-01..2021-09-30
    assert first["net_income"] == 108_456_000
    assert first["eps_diluted"] == 0.70
    assert first["shares_diluted"] == 155_932_262
    assert first["total_assets"] == 10_330_856_000
    # 10-Q cash flows are year-to-date: Q3 = 9M - 6M (6M from the Q2 10-Q filed 2021-08-05)
    assert first["operating_cash_flow"] == 1_091_283_000 - 686_282_000
    assert first["capex"] is None  # MUR's capex tag changed in 2020: none of ours -> null, not 0
    assert first["free_cash_flow"] is None


def test_mur_q4_derived_from_the_10k() -> None:
    (q4,) = rows_for(mur_table(), "2021-12-31")
    assert q4["filed"] == dt.date(2022, 2, 25)  # the 10-K's filing date
    assert q4["form"] == "10-K" and q4["accession"] == "0000717423-22-000019"
    assert (q4["fiscal_year"], q4["fiscal_quarter"], q4["fiscal_period"]) == (2021, 4, "Q4")
    # by hand from the facts: FY (10-K) - 9M YTD (Q3 10-Q)
    assert q4["revenue"] == 2_299_281_000 - 1_560_328_000
    assert q4["operating_cash_flow"] == 1_422_163_000 - 1_091_283_000
    assert q4["net_income"] == 168_400_000  # also = -73_664_000 - (-242_064_000)
    assert q4["eps_diluted"] == 1.09  # reported for the quarter in the 10-K
    assert q4["shares_diluted"] is None  # weighted averages are never differenced


def test_mur_capex_and_free_cash_flow() -> None:
    (q1,) = [r for r in rows_for(mur_table(), "2019-03-31") if r["filed"] == dt.date(2019, 5, 2)]
    assert q1["capex"] == 270_338_000  # PaymentsToAcquireProductiveAssets, positive outflow
    assert q1["free_cash_flow"] == q1["operating_cash_flow"] - q1["capex"]


def test_mur_restatement_is_a_new_row() -> None:
    rows = rows_for(mur_table(), "2012-03-31")
    assert [r["filed"] for r in rows] == [
        dt.date(2012, 5, 7),
        dt.date(2013, 2, 28),
        dt.date(2013, 5, 7),
        dt.date(2014, 2, 28),
    ]
    assert rows[0]["revenue"] == 6_994_519_000  # as first reported (10-Q 2012)
    assert rows[2]["revenue"] == 6_956_936_000  # restated in the 2013 10-Q comparative
    assert rows[0]["form"] == "10-Q" and rows[1]["form"] == "10-K"


def test_mur_annual_only_year_is_an_fy_row() -> None:
    fy = rows_for(mur_table(), "2007-12-31")[-1]
    assert fy["fiscal_period"] == "FY" and fy["fiscal_quarter"] is None
    assert fy["revenue"] == 18_312_964_000  # 2007 appears only as a 10-K comparative


def test_ifrs_filer_with_padded_string_cik() -> None:
    payload = load("lpa_facts.json")
    assert payload["cik"] == "0001997711" and "us-gaap" not in payload["facts"]
    table = parse_companyfacts(payload)
    conform(table, FUNDAMENTALS, "LPA")
    assert table.num_rows == 6
    assert set(table["form"].to_pylist()) == {"20-F"}
    assert set(table["fiscal_period"].to_pylist()) == {"FY"}
    rows = rows_for(table, "2023-12-31")
    assert [r["filed"] for r in rows] == [dt.date(2024, 4, 26), dt.date(2025, 4, 2)]
    assert rows[0]["revenue"] == 39_436_343  # ifrs-full:Revenue
    assert rows[0]["total_assets"] == 590_825_310
    assert rows[0]["cash_and_equivalents"] == 35_242_363
    assert rows[0]["eps_diluted"] == 0.019
    assert rows[1]["eps_diluted"] == 0.11  # restated in the next 20-F: a second row
    assert rows[0]["gross_profit"] is None  # not reported: null, never 0


def test_same_payload_with_int_or_padded_cik_parses_identically() -> None:
    payload = load("lpa_facts.json")
    as_int = dict(payload, cik=LPA_CIK)
    assert parse_companyfacts(as_int).equals(parse_companyfacts(payload))


def test_companyfacts_range_and_errors() -> None:
    table = parse_companyfacts(
        load("companyfacts/CIK0000717423.json"),
        start=dt.date(2021, 1, 1),
        end=dt.date(2021, 12, 31),
    )
    assert {r.year for r in table["period_end"].to_pylist()} == {2021}
    # the derived Q4 inside the range still uses Q1..Q3
    assert rows_for(table, "2021-12-31")[0]["revenue"] == 2_299_281_000 - 1_560_328_000
    with pytest.raises(SourceError, match="companyfacts"):
        parse_companyfacts({"cik": 1})
    with pytest.raises(SourceError, match="not a number"):
        bad = {"cik": 1, "facts": {"us-gaap": {"Assets": {"units": {"USD": [
            {"end": "2020-12-31", "val": "x", "accn": "a", "filed": "2021-02-01"}
        ]}}}}}  # fmt: skip
        parse_companyfacts(bad)
    assert parse_companyfacts({"cik": 1, "facts": {}}).num_rows == 0


# --- submissions -> filings ------------------------------------------------------------------


def test_submissions_mur_and_tsla() -> None:
    filings = get_dataset("filings")
    mur = parse_submissions([load("submissions/CIK0000717423.json")])
    conform(mur, filings, "MUR")
    assert mur.num_rows == 1005
    last = mur.to_pylist()[-1]
    assert last["filed"] == dt.date(2022, 8, 22)
    forms = mur["form"].to_pylist()
    assert forms.count("10-K") >= 5 and forms.count("10-Q") >= 15
    tsla = parse_submissions([load("company_submission_TSLA.json")])
    conform(tsla, filings, "TSLA")
    assert tsla.num_rows == 1001
    assert tsla.to_pylist()[-1]["filed"] == dt.date(2022, 11, 30)
    xbrl = [r for r in tsla.to_pylist() if r["form"] == "10-K"]
    assert xbrl and all(r["is_xbrl"] and r["report_date"] for r in xbrl)


def test_submissions_older_page_merges_and_range() -> None:
    main = load("submissions/CIK0000717423.json")
    recent = main["filings"]["recent"]
    # split the real list: the older half becomes a page in SEC's page format
    half = len(recent["accessionNumber"]) // 2
    newer = {k: v[:half] if isinstance(v, list) else v for k, v in recent.items()}
    older = {k: v[half:] if isinstance(v, list) else v for k, v in recent.items()}
    split = dict(main, filings={"recent": newer, "files": []})
    both = parse_submissions([split, older, older])  # duplicates collapse
    assert both.equals(parse_submissions([main]))
    ranged = parse_submissions([main], start=dt.date(2022, 1, 1), end=dt.date(2022, 3, 31))
    assert ranged.num_rows and all(
        dt.date(2022, 1, 1) <= d <= dt.date(2022, 3, 31) for d in ranged["filed"].to_pylist()
    )
    with pytest.raises(SourceError, match="no filing columns"):
        parse_submissions([{"cik": "1"}])


# --- the source: settings, fetch, contract ---------------------------------------------------


def test_missing_user_agent_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEC_USER_AGENT", raising=False)
    source = SecEdgarSource()  # constructing needs no setting
    request = SourceRequest("MUR", ("fundamentals",), *ALL)
    with pytest.raises(ConfigError, match=r"SEC_USER_AGENT is not set.*admin@example\.com"):
        source.fetch(request)
    monkeypatch.setenv("SEC_USER_AGENT", "marketlake")
    with pytest.raises(ConfigError, match=r"does not look like 'Company Name admin@example\.com'"):
        SecEdgarSource().fetch(request)
    monkeypatch.setenv("SEC_USER_AGENT", "Example Corp admin@example.com")
    assert SecEdgarSource().client.user_agent == "Example Corp admin@example.com"


Handler = Callable[[httpx.Request], httpx.Response]


def sec_handler(calls: list[str], *, malformed: bool = False) -> Handler:
    files = {
        "/files/company_tickers.json": "company_tickers.json",
        "/api/xbrl/companyfacts/CIK0000717423.json": "companyfacts/CIK0000717423.json",
        "/submissions/CIK0000717423.json": "submissions/CIK0000717423.json",
        "/api/xbrl/companyfacts/CIK0001997711.json": "lpa_facts.json",
        "/submissions/CIK0001318605.json": "company_submission_TSLA.json",
    }

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.url.host}{request.url.path}")
        assert request.headers["User-Agent"] == "Test Co test@example.com"
        name = files.get(request.url.path)
        if name is None:
            return httpx.Response(404, text="Not Found")
        if malformed and "companyfacts" in name:
            return httpx.Response(200, content=b'{"cik": 717423, "facts": {"us-gaap": ')
        return httpx.Response(200, content=_bytes(name))

    return handle


def make_source(handler: Handler) -> SecEdgarSource:
    client = HttpClient(
        user_agent="Test Co test@example.com",
        transport=httpx.MockTransport(handler),
        retries=0,
        sleep=lambda _s: None,
        rate_limits={"data.sec.gov": 0, "www.sec.gov": 0},
    )
    return SecEdgarSource(client=client)


def test_fetch_resolves_tickers_once_and_by_cik() -> None:
    calls: list[str] = []
    source = make_source(sec_handler(calls))
    raw = source.fetch(SourceRequest("MUR", ("fundamentals", "filings"), *RECENT))
    assert raw["cik"] == MUR_CIK
    assert calls == [
        "www.sec.gov/files/company_tickers.json",
        "data.sec.gov/api/xbrl/companyfacts/CIK0000717423.json",
        "data.sec.gov/submissions/CIK0000717423.json",
    ]
    calls.clear()
    assert source.cik("BRK-B") == source.cik("BRK.B") == 1067983
    assert source.cik("0001997711") == source.cik(LPA_CIK) == LPA_CIK
    assert calls == []  # the ticker table is cached; CIKs need no lookup
    with pytest.raises(NoDataError, match="does not list ticker 'ZZZZQ'"):
        source.cik("ZZZZQ")
    # the older submissions page is requested only when the range reaches it
    source.fetch(SourceRequest("TSLA", ("filings",), dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
    assert calls == ["data.sec.gov/submissions/CIK0001318605.json"]
    calls.clear()
    with pytest.raises(NoDataError, match=r"CIK0001318605-submissions-001\.json"):
        source.fetch(SourceRequest("TSLA", ("filings",), *ALL))


def test_parse_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sec_handler([]))
    request = SourceRequest("MUR", ("fundamentals", "filings"), *RECENT)
    raw = source.fetch(request)

    def no_network(*_a: Any, **_k: Any) -> None:
        raise AssertionError("parse touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(httpx.Client, "send", no_network)
    monkeypatch.setattr(source, "_client", None)  # a client would need SEC_USER_AGENT
    tables = source.parse(request, raw)
    assert set(tables) == set(request.datasets)
    for name, table in tables.items():
        dataset = get_dataset(name)
        assert table.schema == dataset.schema
        assert conform(table, dataset, "MUR").equals(table)
    expected = mur_table().filter(pc.greater_equal(mur_table()["period_end"], RECENT[0]))
    assert tables["fundamentals"].equals(expected)
    assert tables["filings"].num_rows == mur_filings_since(RECENT[0])
    empty = source.parse(SourceRequest("MUR", ("fundamentals",), dt.date(1990, 1, 1),
                                       dt.date(1990, 12, 31)), raw)  # fmt: skip
    assert empty == {}  # no rows in range: no table


def test_registry_lists_sec() -> None:
    info = {s.name: s for s in list_sources()}["sec"]
    assert info.datasets == ("fundamentals", "filings", "ticker_metadata")
    assert info.settings == ("SEC_USER_AGENT",)
    assert isinstance(get_source("sec"), SecEdgarSource)


# --- end to end: mock transport -> run_batch -> lake -------------------------------------------


@pytest.fixture
def local_lake(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(str(tmp_path / "lake"), fsync=False)
    yield lk
    lk.close()


def test_end_to_end_ingest_and_idempotent_rerun(local_lake: Lake) -> None:
    calls: list[str] = []
    source = make_source(sec_handler(calls))
    datasets = ["fundamentals", "filings"]
    first = run_batch(local_lake, source, ["MUR", "TSLA"], ["filings"], *RECENT, workers=2)
    assert first.status == "completed" and first.items_completed == 2
    assert local_lake.read("MUR", "filings", output="arrow").num_rows == mur_filings_since(
        RECENT[0]
    )
    # 1001 recent filings, 5 of them filed in December 2013 (before the range)
    assert local_lake.read("TSLA", "filings", output="arrow").num_rows == 996
    second = run_batch(local_lake, source, ["mur"], datasets, *RECENT, workers=2)
    assert second.status == "completed" and second.items_completed == 2
    fundamentals = local_lake.read("MUR", "fundamentals", output="arrow")
    assert fundamentals.num_rows == sum(
        1 for d in mur_table()["period_end"].to_pylist() if d >= RECENT[0]
    )
    assert set(fundamentals.column_names) == set(FUNDAMENTALS.schema.names)
    # an IFRS filer addressed by its padded CIK
    lpa = run_batch(local_lake, source, ["0001997711"], ["fundamentals"], *ALL)
    assert lpa.status == "completed"
    assert local_lake.read("0001997711", "fundamentals", output="arrow").num_rows == 6
    # an unknown ticker fails alone, with the reason, and writes nothing
    unknown = run_batch(local_lake, source, ["ZZZZQ"], datasets, *RECENT, fetch_retries=1)
    assert unknown.items_failed == 2
    assert "does not list ticker 'ZZZZQ'" in str(unknown.failures[0].error)
    assert local_lake.read("ZZZZQ", "fundamentals").empty
    # the ticker table was fetched once for the whole source instance
    assert calls.count("www.sec.gov/files/company_tickers.json") == 1
    # rerunning the same batches rewrites nothing
    again = [
        run_batch(local_lake, source, ["MUR", "TSLA"], ["filings"], *RECENT, workers=2),
        run_batch(local_lake, source, ["MUR"], datasets, *RECENT, workers=2),
        run_batch(local_lake, source, ["0001997711"], ["fundamentals"], *ALL),
    ]
    assert [s.status for s in again] == ["completed"] * 3
    assert [s.objects_written for s in again] == [0, 0, 0]


def test_end_to_end_malformed_payload_writes_nothing() -> None:
    lake = marketlake.open("memory://")
    try:
        source = make_source(sec_handler([], malformed=True))
        summary = run_batch(lake, source, ["MUR"], ["fundamentals"], *ALL, fetch_retries=1)
        assert summary.items_failed == 1
        assert "not JSON" in str(summary.failures[0].error) or "JSON" in str(
            summary.failures[0].error
        )
        assert lake.read("MUR", "fundamentals").empty
    finally:
        lake.close()
