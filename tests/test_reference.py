"""Reference data: NASDAQ Trader listings and S&P 500 membership, on the real recorded files
(tests/fixtures/nasdaq_trader and tests/fixtures/sp500, see their PROVENANCE.md)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import marketlake
from marketlake.errors import SourceError
from marketlake.ingest.batch import run_batch
from marketlake.ingest.imports import import_files
from marketlake.reference import members, stored_table, update_index, update_listings
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import INDEX_CONSTITUENTS, TICKER_HISTORY, TICKER_METADATA
from marketlake.sources.base import FILE_RANGE, SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.nasdaq_trader import (
    NASDAQLISTED_URL,
    OTHERLISTED_URL,
    NasdaqTraderSource,
    accumulate_listings,
    apply_snapshots,
    derive_renames,
    parse_snapshot,
)
from marketlake.sources.sp500 import (
    CHANGES_URL,
    CONSTITUENTS_URL,
    INTERVALS_URL,
    Sp500Source,
    build_intervals,
)

FIX = Path(__file__).parent / "fixtures"
NASDAQ = FIX / "nasdaq_trader" / "nasdaqlisted.txt"
OTHER = FIX / "nasdaq_trader" / "otherlisted.txt"
SP = FIX / "sp500"
DAY0 = dt.date(2025, 7, 21)


@cache
def texts() -> tuple[str, str]:
    return NASDAQ.read_text(), OTHER.read_text()


def with_day(text: str, day: dt.date) -> str:
    """The same file with its trailer re-dated (a later day's snapshot)."""
    head, _, trailer = text.rstrip("\n").rpartition("\n")
    stamp = f"{day:%m%d%Y}21:31"
    return f"{head}\n{trailer.replace('0721202521:31', stamp)}\n"


def drop(text: str, symbol: str) -> str:
    return "\n".join(ln for ln in text.split("\n") if not ln.startswith(f"{symbol}|"))


def rename(text: str, old: str, new: str) -> str:
    return "\n".join(
        new + ln[len(old) :] if ln.startswith(f"{old}|") else ln for ln in text.split("\n")
    )


def rows_of(table: pa.Table, symbol: str) -> list[dict[str, Any]]:
    return [r for r in table.to_pylist() if r["symbol"] == symbol]


# --- NASDAQ Trader: one snapshot ---------------------------------------------------------------


def test_parse_snapshot_counts_flags_and_trailer() -> None:
    nasdaq, other = texts()
    snap = parse_snapshot(nasdaq, other)
    day, table = snap  # unpacks as (snapshot_date, table)
    assert day == DAY0 and snap.created == dt.datetime(2025, 7, 21, 21, 31)
    # independent counts from the raw lines: data rows minus test issues
    n_rows = [ln.split("|") for ln in nasdaq.splitlines()[1:-1]]
    o_rows = [ln.split("|") for ln in other.splitlines()[1:-1]]
    n_test = sum(1 for r in n_rows if r[3] == "Y")
    o_test = sum(1 for r in o_rows if r[6] == "Y")
    assert (len(n_rows), n_test, len(o_rows), o_test) == (4973, 8, 6606, 25)
    assert len(snap.rejected) == 3  # ETI$, HWM$, TY$: preferreds without a series letter
    assert table.num_rows == len(n_rows) - n_test + len(o_rows) - o_test - 3
    symbols = table.column("symbol").to_pylist()
    assert len(set(symbols)) == len(symbols) and "ZXIET" not in symbols and "ZXYZ.A" not in symbols
    etfs = sum(1 for r in n_rows if r[3] != "Y" and r[6] == "Y") + sum(
        1 for r in o_rows if r[6] != "Y" and r[4] == "Y"
    )
    assert pc.sum(table.column("is_etf")).as_py() == etfs
    by = {r["symbol"]: r for r in table.to_pylist()}
    assert by["ZZZ"]["is_etf"] is True and by["ZZZ"]["exchange"] == "Nasdaq Global Market"
    assert by["ZYXI"]["exchange"] == "Nasdaq Global Select" and by["ZYXI"]["is_etf"] is False
    assert by["AACG"]["financial_status"] == "D"
    assert by["BRK.B"]["exchange"] == "NYSE" and by["AAA"]["exchange"] == "NYSE Arca"
    assert by["AAAA"]["exchange"] == "Cboe BZX"
    assert by["ABR-PD"]["name"].startswith("Arbor Realty Trust 6.375% Series D")
    assert by["BF.B"]["round_lot"] == 100
    assert {by[s]["exchange"] for s in by} >= {"NYSE American", "Nasdaq Capital Market"}


def test_parse_snapshot_refuses_truncated_and_mismatched_files() -> None:
    nasdaq, other = texts()
    truncated = "\n".join(other.splitlines()[:100])
    with pytest.raises(SourceError, match=r"otherlisted\.txt: no 'File Creation Time' trailer"):
        parse_snapshot(nasdaq, truncated)
    with pytest.raises(SourceError, match="same day"):
        parse_snapshot(nasdaq, with_day(other, DAY0 + dt.timedelta(days=1)))
    with pytest.raises(SourceError, match="not a NASDAQ Trader nasdaqlisted"):
        parse_snapshot(other, nasdaq)
    crlf = parse_snapshot(nasdaq.replace("\n", "\r\n"), other.replace("\n", "\r\n"))
    assert crlf.table.equals(parse_snapshot(nasdaq, other).table)


# --- NASDAQ Trader: accumulating snapshots -----------------------------------------------------


def test_accumulate_three_snapshots_drop_rename_relist() -> None:
    nasdaq, other = texts()
    d1, d2, d3 = DAY0, DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2)
    s1 = parse_snapshot(nasdaq, other)
    # day 2: ZWS (NYSE) is gone, ZYXI renamed to ZYXX (same security name)
    s2 = parse_snapshot(
        with_day(rename(nasdaq, "ZYXI", "ZYXX"), d2), with_day(drop(other, "ZWS"), d2)
    )
    # day 3: ZWS listed again
    s3 = parse_snapshot(with_day(rename(nasdaq, "ZYXI", "ZYXX"), d3), with_day(other, d3))

    first = accumulate_listings(None, s1.table, d1)
    assert first.num_rows == s1.table.num_rows
    conform(first, TICKER_METADATA, "US")
    assert set(first.column("first_seen").to_pylist()) == {d1}
    assert first.filter(pc.is_valid(first.column("delisted"))).num_rows == 0

    second = accumulate_listings(first, s2.table, d2)
    # every listed symbol moves its last_seen, two are delisted, one is new
    assert second.num_rows == s1.table.num_rows + 1
    assert rows_of(second, "ZWS") == [{**rows_of(first, "ZWS")[0], "delisted": d2}]
    assert rows_of(second, "ZYXI")[0]["delisted"] == d2
    assert rows_of(second, "ZYXX")[0]["first_seen"] == d2
    assert rows_of(second, "AAPL")[0]["last_seen"] == d2
    renames = derive_renames(second, d2)
    conform(renames, TICKER_HISTORY, "US")
    assert renames.to_pylist() == [
        {
            "date": d2,
            "old_symbol": "ZYXI",
            "new_symbol": "ZYXX",
            "name": "Zynex, Inc. - Common Stock",
            "source": "nasdaq_trader",
        }
    ]

    metadata, history = apply_snapshots(None, [s3, s1, s2])  # applied in date order
    assert history.equals(renames)
    zws = rows_of(metadata, "ZWS")
    assert [(r["first_seen"], r["last_seen"], r["delisted"]) for r in zws] == [
        (d1, d1, d2),
        (d3, d3, None),  # re-listed: a new interval row
    ]
    assert rows_of(metadata, "ZYXX")[0]["last_seen"] == d3
    conform(metadata, TICKER_METADATA, "US")
    # the same snapshots again: nothing to write; an older one: stale, ignored
    again, renames_again = apply_snapshots(metadata, [s3])
    assert again.num_rows == 0 and renames_again.num_rows == 0
    assert accumulate_listings(metadata, s1.table, d1).num_rows == 0


def test_accumulate_refuses_a_snapshot_missing_most_symbols() -> None:
    nasdaq, other = texts()
    s1 = parse_snapshot(nasdaq, other)
    table = accumulate_listings(None, s1.table, DAY0)
    only_nasdaq = s1.table.filter(pc.is_in(s1.table["exchange"], pa.array(["NYSE"])))
    with pytest.raises(SourceError, match="refusing to delist"):
        accumulate_listings(table, only_nasdaq, DAY0 + dt.timedelta(days=1))


# --- S&P 500 -----------------------------------------------------------------------------------


@cache
def sp_texts() -> dict[str, str]:
    return {
        "constituents": (SP / "constituents.csv").read_text(),
        "changes": (SP / "sp500_changes_since_2019.csv").read_text(),
        "intervals": (SP / "sp500_ticker_start_end.csv").read_text(),
    }


def test_sp500_intervals() -> None:
    t = sp_texts()
    result = build_intervals(t["constituents"], t["changes"], t["intervals"])
    table = result.table
    conform(table, INDEX_CONSTITUENTS, "SP500")
    current = table.filter(pc.is_null(table.column("end")))
    assert current.num_rows == 503  # exactly the constituents file
    assert sorted(current.column("symbol").to_pylist()) == sorted(
        ln.split(",")[0] for ln in t["constituents"].splitlines()[1:]
    )
    aapl = rows_of(table, "AAPL")
    assert len(aapl) == 1 and aapl[0]["end"] is None and aapl[0]["cik"] == 320193
    assert aapl[0]["sector"] == "Information Technology"
    aal = [(r["start"], r["end"]) for r in rows_of(table, "AAL")]
    assert aal == [
        (dt.date(1996, 1, 2), dt.date(1997, 1, 15)),
        (dt.date(2015, 3, 23), dt.date(2024, 9, 23)),
    ]
    # a change after the interval file ends: FI removed, FISV (re)added on 2025-11-11
    assert [(r["start"], r["end"]) for r in rows_of(table, "FI")] == [
        (dt.date(2023, 6, 7), dt.date(2025, 11, 11))
    ]
    assert rows_of(table, "FISV")[-1]["start"] == dt.date(2025, 11, 11)
    assert rows_of(table, "MMM")[0]["start"] == dt.date(1957, 3, 4)  # before 1996 coverage
    assert rows_of(table, "ZTS")[0]["start"] == dt.date(2013, 6, 24)  # effective date wins
    # constituents alone: the current members from their date added
    alone = build_intervals(t["constituents"]).table
    assert alone.num_rows == 503 and rows_of(alone, "ZTS")[0]["start"] == dt.date(2013, 6, 21)


def test_sp500_source_rejects_other_tickers_and_bad_files() -> None:
    src = Sp500Source()
    with pytest.raises(SourceError, match="SP500"):
        src.parse(SourceRequest("AAPL", src.datasets, *FILE_RANGE), {})
    with pytest.raises(SourceError, match="unexpected header"):
        src.parse(
            SourceRequest("SP500", src.datasets, *FILE_RANGE),
            {"constituents": sp_texts()["changes"]},
        )


# --- end to end --------------------------------------------------------------------------------


def _transport(files: dict[str, bytes]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        return httpx.Response(200, content=files[url]) if url in files else httpx.Response(404)

    return httpx.MockTransport(handler)


def test_end_to_end_listings_and_index_into_a_memory_lake() -> None:
    lake = marketlake.open("memory://")
    nasdaq, other = texts()
    served = {NASDAQLISTED_URL: nasdaq.encode(), OTHERLISTED_URL: other.encode()}
    client = HttpClient(transport=_transport(served), sleep=lambda _s: None)
    src = NasdaqTraderSource(client=client)
    first = update_listings(lake, src)
    assert first.status == "completed" and first.items_completed == 2
    stored = stored_table(lake, "US", "ticker_metadata")
    assert stored is not None and stored.num_rows == parse_snapshot(nasdaq, other).table.num_rows
    assert lake.meta("US", "ticker_metadata") is not None
    again = update_listings(lake, src)
    assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    # the next day: a symbol renamed and one dropped
    d2 = DAY0 + dt.timedelta(days=1)
    served[NASDAQLISTED_URL] = with_day(rename(nasdaq, "ZYXI", "ZYXX"), d2).encode()
    served[OTHERLISTED_URL] = with_day(drop(other, "ZWS"), d2).encode()
    day2 = update_listings(lake, src)
    assert day2.items_completed == 2 and day2.rows_added == 2  # ZYXX + the rename row
    history = stored_table(lake, "US", "ticker_history")
    assert history is not None and history.column("new_symbol").to_pylist() == ["ZYXX"]
    stored = stored_table(lake, "US", "ticker_metadata")
    assert stored is not None and rows_of(stored, "ZWS")[0]["delisted"] == d2

    # S&P 500: fetched CSVs -> SP500 intervals; members on dates
    sp = {
        CONSTITUENTS_URL: (SP / "constituents.csv").read_bytes(),
        CHANGES_URL: (SP / "sp500_changes_since_2019.csv").read_bytes(),
        INTERVALS_URL: (SP / "sp500_ticker_start_end.csv").read_bytes(),
    }
    sp_src = Sp500Source(
        client=HttpClient(transport=_transport(sp), sleep=lambda _s: None),
        today=lambda: dt.date(2026, 8, 8),
    )
    run = update_index(lake, sp_src)
    assert run.status == "completed" and run.rows_added > 1200
    assert update_index(lake, sp_src).objects_written == 0
    today = members(lake, "SP500", "2026-08-08")
    assert len(today) == 503 and "AAPL" in today and "BRK.B" in today
    past = members(lake, "SP500", dt.date(2020, 1, 2))
    assert "AAL" in past and "FI" not in past and 495 <= len(past) <= 510
    assert "AAL" not in members(lake, "SP500", dt.date(2024, 9, 23))  # end is exclusive
    assert "AAL" in members(lake, "SP500", dt.date(2024, 9, 20))


def test_import_files_and_unbound_source(tmp_path: Path) -> None:
    lake = marketlake.open("memory://")
    nasdaq, other = texts()
    day2 = tmp_path / "day2"
    day2.mkdir()
    d2 = DAY0 + dt.timedelta(days=1)
    (day2 / "nasdaqlisted.txt").write_text(with_day(nasdaq, d2))
    (day2 / "otherlisted.txt").write_text(with_day(drop(other, "ZWS"), d2))
    paths = [NASDAQ, OTHER, day2 / "nasdaqlisted.txt", day2 / "otherlisted.txt"]
    summary = import_files(lake, NasdaqTraderSource(), paths)
    assert summary.status == "completed", summary.failures
    stored = stored_table(lake, "US", "ticker_metadata")
    assert stored is not None and rows_of(stored, "ZWS")[0]["delisted"] == d2
    assert import_files(lake, NasdaqTraderSource(), paths).objects_written == 0
    # an unpaired file fails alone, naming the file
    lone = import_files(lake, NasdaqTraderSource(), [NASDAQ])
    assert lone.items_failed == 1 and "needs both" in (lone.failures[0].error or "")
    # the S&P 500 CSVs through the same import path
    sp = import_files(
        lake, Sp500Source(), [SP / "constituents.csv", SP / "sp500_changes_since_2019.csv"]
    )
    assert sp.status == "completed" and "AAPL" in members(lake, "SP500", "2025-01-02")
    # without a lake, the listings source refuses instead of ignoring history
    src = NasdaqTraderSource()
    with pytest.raises(SourceError, match="no lake"):
        src.fetch(SourceRequest("US", src.datasets, DAY0, DAY0))
    bad = run_batch(lake, src, ["AAPL"], ["ticker_metadata"], DAY0, DAY0, fetch_retries=1)
    assert bad.items_failed == 1 and "ticker 'US'" in (bad.failures[0].error or "")


def nasdaq_contract_payload(_src: Any = None) -> dict[str, Any]:
    """A payload filling both datasets (for the source contract test): stored day-1 listings
    and a day-2 snapshot with a rename."""
    nasdaq, other = texts()
    existing = accumulate_listings(None, parse_snapshot(nasdaq, other).table, DAY0)
    d2 = DAY0 + dt.timedelta(days=1)
    return {
        "snapshots": [(with_day(rename(nasdaq, "ZYXI", "ZYXX"), d2), with_day(other, d2))],
        "existing": existing,
    }


def sp500_contract_payload(_src: Any = None) -> dict[str, Any]:
    """A payload for the source contract test: the three recorded CSVs."""
    return {**sp_texts(), "as_of": "2026-08-08"}


def test_contract_payloads_fill_every_dataset() -> None:
    src = NasdaqTraderSource()
    out = src.parse(SourceRequest("US", src.datasets, *FILE_RANGE), nasdaq_contract_payload())
    assert set(out) == {"ticker_metadata", "ticker_history"}
    for name, table in out.items():
        assert conform(
            table, TICKER_METADATA if name == "ticker_metadata" else TICKER_HISTORY, "US"
        ).equals(table)
    sp = Sp500Source().parse(
        SourceRequest("SP500", ("index_constituents",), *FILE_RANGE), sp500_contract_payload()
    )
    assert sp["index_constituents"].schema == INDEX_CONSTITUENTS.schema
