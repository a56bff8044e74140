"""Coverage (quality/coverage.py): sessions against the NYSE calendar within each ticker's life,
gaps, exact vs count screening, minute bars by New York session, crypto on a 24/7 grid, storage
figures and freshness (fresh / due / late / stale) around the 18:00 New York settle time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import marketlake
from marketlake import Lake, calendars
from marketlake.catalog import MonitoredAsset
from marketlake.quality.coverage import (
    CALENDAR_24_7,
    FreshnessInput,
    assess_freshness,
    compute_coverage,
    freshness_inputs_from_progress,
)
from marketlake.schemas.datasets import BARS_MINUTE, CRYPTO_BARS
from tests.conftest import price_table

D = dt.date
UTC = dt.UTC
NOW = dt.datetime(2024, 7, 3, 12, 0, tzinfo=UTC)  # expected session: Tue 2024-07-02


@pytest.fixture
def lk(tmp_path: Path) -> Iterator[Lake]:
    lake = marketlake.open(tmp_path / "lake", fsync=False)
    yield lake
    lake.close()


def _sessions(lo: D, hi: D) -> list[D]:
    return calendars.sessions(lo, hi)


def _rows(table: pa.Table, **match: object) -> list[dict[str, object]]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in match.items())]


def test_sessions_gaps_and_life(lk: Lake) -> None:
    days = _sessions(D(2023, 1, 1), D(2024, 6, 28))
    dropped = {D(2023, 1, 18), D(2023, 1, 19), D(2023, 1, 20), D(2023, 11, 24)}  # 11-24: half day
    may = {d for d in days if (d.year, d.month) == (2023, 5)}  # a whole month missing
    lk.write("AAA", "prices", price_table([d for d in days if d not in dropped | may]), source="s1")
    late = [d for d in days if d >= D(2023, 9, 1)]  # listed later: Jan..Aug 2023 are not gaps
    lk.write("BBB", "prices", price_table(late), source="s2")

    cov = compute_coverage(lk, now=NOW)
    [a] = _rows(cov.by_ticker, ticker="AAA")
    assert (a["first"], a["last"]) == ("2023-01-03", "2024-06-28")
    assert a["expected"] == len(days) == 374
    assert a["missing"] == 4 + len(may) == 26 and a["present"] == 374 - 26
    assert (a["gaps"], a["largest_gap"], a["off_calendar"]) == (3, len(may), 0)
    [b] = _rows(cov.by_ticker, ticker="BBB")
    assert (b["expected"], b["missing"], b["pct"]) == (len(late), 0, 100.0)

    by_year = {(r["source"], r["year"]): r for r in cov.by_year.to_pylist()}
    assert by_year[("s1", 2023)]["expected"] == 250
    assert by_year[("s1", 2023)]["present"] == 250 - 26
    assert by_year[("s1", 2024)]["missing"] == 0
    assert by_year[("s2", 2023)]["expected"] == len([d for d in late if d.year == 2023])
    assert {r["unit"] for r in cov.by_year.to_pylist()} == {"sessions"}

    gaps = [(g["start"], g["end"], g["missing"], g["days"]) for g in cov.gaps.to_pylist()]
    # largest first (by calendar days spanned)
    assert gaps == [
        ("2023-05-01", "2023-05-31", len(may), 31),
        ("2023-01-18", "2023-01-20", 3, 3),
        ("2023-11-24", "2023-11-24", 1, 1),
    ]
    cells = {(r["ticker"], r["year"]): r["pct"] for r in cov.ticker_year.to_pylist()}
    assert cells[("BBB", 2024)] == 100.0 and cells[("AAA", 2023)] == round(100 * 224 / 250, 4)
    # the count screen (only short months read) and reading every date agree
    exact = compute_coverage(lk, now=NOW, exact=True)
    assert exact.by_ticker.equals(cov.by_ticker) and exact.gaps.equals(cov.gaps)
    assert exact.by_year.equals(cov.by_year)


def test_count_screen_vs_exact_on_an_off_calendar_row(lk: Lake) -> None:
    days = _sessions(D(2024, 3, 1), D(2024, 4, 30))
    march = [d for d in days if d.month == 3]
    # March: one session missing and a Saturday row instead -> the row count looks complete
    rows = [d for d in days if d != D(2024, 3, 12)] + [D(2024, 3, 16)]
    lk.write("ODD", "prices", price_table(sorted(rows)), source="s")
    screened = compute_coverage(lk, now=NOW)
    [s] = _rows(screened.by_ticker, ticker="ODD")
    assert s["missing"] == 0  # the documented limit of the count screen
    exact = compute_coverage(lk, now=NOW, exact=True)
    [e] = _rows(exact.by_ticker, ticker="ODD")
    assert (e["missing"], e["off_calendar"], e["expected"]) == (1, 1, len(days))
    assert [g["start"] for g in exact.gaps.to_pylist()] == ["2024-03-12"]
    # a month short of rows is read even by the screen: exactly the missing session is found
    lk.write("SHORT", "prices", price_table([d for d in march if d != D(2024, 3, 20)]), source="s")
    [g] = compute_coverage(lk, now=NOW, tickers=["short"]).gaps.to_pylist()
    assert (g["ticker"], g["start"], g["missing"]) == ("SHORT", "2024-03-20", 1)


def _minute_bars(days: list[D]) -> pa.Table:
    ts: list[dt.datetime] = []
    for d in days:  # 09:30 New York = 13:30 UTC in summer; the last bar crosses no UTC midnight
        start = dt.datetime(d.year, d.month, d.day, 13, 30, tzinfo=UTC)
        ts += [start + dt.timedelta(minutes=m) for m in range(0, 390, 30)]
    n = len(ts)
    cols: dict[str, pa.Array] = {"ts": pa.array(ts, pa.timestamp("us", tz="UTC"))}
    for name in ("open", "high", "low", "close"):
        cols[name] = pa.array([10.0] * n)
    cols["volume"] = pa.array([100] * n, pa.int64())
    cols["vwap"] = pa.nulls(n, pa.float64())
    cols["trade_count"] = pa.nulls(n, pa.int64())
    return pa.Table.from_pydict(cols, schema=BARS_MINUTE.schema)


def test_minute_bars_by_new_york_session(lk: Lake) -> None:
    days = _sessions(D(2024, 6, 24), D(2024, 7, 2))  # 2024-06-19 etc. not in range; no holiday
    held = [d for d in days if d != D(2024, 6, 27)]
    lk.write("MIN", "bars_minute", _minute_bars(held), source="alpaca")
    cov = compute_coverage(lk, now=NOW)
    [m] = _rows(cov.by_ticker, dataset="bars_minute")
    assert (m["expected"], m["present"], m["missing"]) == (len(days), len(days) - 1, 1)
    assert [g["start"] for g in cov.gaps.to_pylist()] == ["2024-06-27"]
    [f] = _rows(cov.freshness, dataset="bars_minute")
    assert f["last"] == D(2024, 7, 2) and f["status"] == "fresh"


def _crypto(exchange: str, hours: list[int], base: dt.datetime) -> pa.Table:
    ts = [base + dt.timedelta(hours=h) for h in hours]
    n = len(ts)
    cols: dict[str, pa.Array] = {
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "exchange": pa.array([exchange] * n),
    }
    for name in ("open", "high", "low", "close", "volume"):
        cols[name] = pa.array([1.0] * n)
    cols["quote_volume"] = pa.nulls(n, pa.float64())
    cols["trade_count"] = pa.nulls(n, pa.int64())
    return pa.Table.from_pydict(cols, schema=CRYPTO_BARS.schema)


def test_crypto_on_a_24_7_grid_per_exchange(lk: Lake) -> None:
    base = dt.datetime(2023, 12, 31, 0, tzinfo=UTC)  # crosses a year end and a weekend
    hours = [h for h in range(72) if not 30 <= h < 34]  # 4 hourly bars missing on Jan 1
    lk.write("BTC-USD", "crypto_bars", _crypto("binance", hours, base), source="binance")
    lk.write("BTC-USD", "crypto_bars", _crypto("kraken", list(range(72)), base), source="kraken")
    cov = compute_coverage(lk, now=dt.datetime(2024, 1, 3, 6, tzinfo=UTC))
    bn, kr = _rows(cov.by_ticker, exchange="binance"), _rows(cov.by_ticker, exchange="kraken")
    assert (bn[0]["expected"], bn[0]["missing"], bn[0]["interval_s"]) == (72, 4, 3600)
    assert (kr[0]["missing"], kr[0]["unit"], kr[0]["source"]) == (0, "bars", "kraken")
    [g] = cov.gaps.to_pylist()
    assert (g["exchange"], g["start"], g["end"], g["missing"]) == (
        "binance",
        "2024-01-01T06:00:00Z",
        "2024-01-01T09:00:00Z",
        4,
    )
    years = {
        (r["source"], r["year"]): (r["expected"], r["present"]) for r in cov.by_year.to_pylist()
    }
    assert years == {
        ("binance", 2023): (24, 24),
        ("binance", 2024): (48, 44),
        ("kraken", 2023): (24, 24),
        ("kraken", 2024): (48, 48),
    }
    # last bar 2024-01-02 23:00 UTC: the last complete UTC day at 2024-01-03 06:00 -> fresh
    assert {r["status"] for r in cov.freshness.to_pylist()} == {"fresh"}
    later = compute_coverage(lk, now=dt.datetime(2024, 1, 6, 1, tzinfo=UTC))
    assert {r["status"] for r in later.freshness.to_pylist()} == {"stale"}


def test_storage_empty_datasets_unknown_source_and_monitored(lk: Lake) -> None:
    days = _sessions(D(2024, 1, 1), D(2024, 2, 29))
    lk.write("AAA", "prices", price_table(days), source="yahoo")
    lk.write("MAN", "prices", price_table(days[:5]))  # no source: "manual"
    lk.catalog.upsert_monitored(
        [MonitoredAsset(ticker="NEW", source="yahoo", datasets=("prices",))]
    )
    cov = compute_coverage(lk, now=NOW)
    storage = {(r["dataset"], r["source"]): r for r in cov.storage.to_pylist()}
    parts = lk.catalog.partitions(dataset="prices")
    assert (
        storage[("prices", "yahoo")]["objects"] == 2
        and storage[("prices", "manual")]["objects"] == 1
    )
    assert sum(r["bytes"] for r in storage.values()) == sum(p.bytes for p in parts)
    assert sum(r["rows"] for r in storage.values()) == len(days) + 5
    assert storage[("prices", "yahoo")]["meta_objects"] == 1
    assert "crypto_bars" in cov.empty_datasets and "prices" not in cov.empty_datasets
    assert cov.unknown_source == {"prices": 1}
    assert cov.monitored_missing == (("NEW", "prices"),)
    only = compute_coverage(lk, now=NOW, datasets=["prices"], tickers=["aaa"])
    assert only.by_ticker.column("ticker").to_pylist() == ["AAA"]
    assert only.empty_datasets == ()


def test_freshness_thresholds_and_holidays() -> None:
    def one(last: D, now: dt.datetime, cal: str = "XNYS") -> dict[str, object]:
        item = FreshnessInput(dataset="prices", ticker="T", source="s", last=last, calendar=cal)
        [row] = assess_freshness([item], now).to_pylist()
        return row

    # Tue 2024-07-02 settles at 18:00 New York = 22:00 UTC
    assert one(D(2024, 7, 2), dt.datetime(2024, 7, 3, 12, tzinfo=UTC))["status"] == "fresh"
    r = one(D(2024, 7, 1), dt.datetime(2024, 7, 2, 23, tzinfo=UTC))
    assert (r["status"], r["behind"]) == ("due", 1)
    assert r["due_at"] == dt.datetime(2024, 7, 2, 22, tzinfo=UTC)
    assert one(D(2024, 7, 1), dt.datetime(2024, 7, 3, 22, 1, tzinfo=UTC))["status"] == "late"
    assert one(D(2024, 7, 1), dt.datetime(2024, 7, 4, 22, 1, tzinfo=UTC))["status"] == "stale"
    # Independence Day is no session: Wednesday's data is not late on Friday morning
    assert one(D(2024, 7, 3), dt.datetime(2024, 7, 5, 12, tzinfo=UTC))["status"] == "fresh"
    # a weekend: Friday's data on Monday noon is up to date
    assert one(D(2024, 6, 28), dt.datetime(2024, 7, 1, 12, tzinfo=UTC))["status"] == "fresh"
    # 24/7: day D is complete at D+1 00:00 UTC; due for D+1 at D+2 00:00
    r = one(D(2024, 1, 1), dt.datetime(2024, 1, 3, 1, tzinfo=UTC), CALENDAR_24_7)
    assert (r["status"], r["behind"], r["expected"]) == ("due", 1, D(2024, 1, 2))
    assert one(D(2024, 1, 1), dt.datetime(2024, 1, 5, 1, tzinfo=UTC), CALENDAR_24_7)["status"] == (
        "stale"
    )
    with pytest.raises(marketlake.MarketlakeError, match="time zone"):
        assess_freshness([], dt.datetime(2024, 1, 1))


def test_freshness_inputs_from_watermarks(lk: Lake) -> None:
    days = _sessions(D(2024, 6, 3), D(2024, 6, 28))
    lk.write("AAA", "prices", price_table(days), source="yahoo")
    lk.write("ZZZ", "prices", price_table(days), source="yahoo")  # not monitored
    lk.catalog.upsert_monitored(
        [
            MonitoredAsset(ticker="AAA", source="yahoo", datasets=("prices", "corporate_actions")),
            MonitoredAsset(ticker="NEW", source="yahoo", datasets=("prices",)),
        ]
    )
    items, never = freshness_inputs_from_progress(lk)
    assert [(i.ticker, i.dataset, i.last, i.monitored) for i in items] == [
        ("AAA", "prices", D(2024, 6, 28), True)
    ]
    assert [a.ticker for a in never] == ["NEW"]
    status = assess_freshness(items, NOW).column("status").to_pylist()
    assert status == ["late"]  # 2024-07-01 settled 2024-07-01 22:00 UTC, 38 h before NOW


def test_compacted_history_is_read_not_trusted(lk: Lake) -> None:
    days = _sessions(D(2024, 1, 1), D(2024, 6, 28))
    lk.write("CMP", "prices", price_table([d for d in days if d != D(2024, 2, 14)]), source="s")
    before = compute_coverage(lk, now=NOW)
    lk.compact(["prices"], before="2024-06")  # Jan..May folded into one history object
    periods = {p.period for p in lk.catalog.partitions(dataset="prices")}
    assert periods == {"upto-2024-05", "2024-06"}
    after = compute_coverage(lk, now=NOW)
    assert after.by_ticker.equals(before.by_ticker) and after.gaps.equals(before.gaps)
    [g] = after.gaps.to_pylist()
    assert (g["start"], g["missing"]) == ("2024-02-14", 1)
