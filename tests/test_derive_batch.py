"""Derived signals in the batch and ``marketlake derive`` (ingest/derive.py).

Real data: the Quandl WIKI AAPL 2014 sample (raw prices and its 7:1 split on 2014-06-09) and
Murphy Oil's SEC companyfacts (a restatement). A small in-test source serves those tables the way
a vendor would (rows of the requested range only), so the batch runs exactly as in production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.cli.main import app
from marketlake.ingest.batch import run_batch
from marketlake.ingest.derive import compute_derived, run_derive
from marketlake.sources.base import Source, SourceRequest
from tests.test_adjust import SPLIT_DAY, quandl
from tests.test_sec import mur_table

D = dt.date
TECH = "signals_technical"
VAL = "signals_valuation"


class TableSource(Source):
    """Serves fixed tables, cut to each request's range (like a vendor API)."""

    name: ClassVar[str] = "tables"
    datasets: ClassVar[tuple[str, ...]] = ("prices", "corporate_actions", "fundamentals")

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.tables = tables

    def fetch(self, request: SourceRequest) -> dict[str, pa.Table]:
        out = {}
        for name in request.datasets:
            t = self.tables.get(name)
            if t is None:
                continue
            col = {"prices": "date", "corporate_actions": "ex_date", "fundamentals": "filed"}[name]
            keep = pc.and_(
                pc.greater_equal(t.column(col), pa.scalar(request.start, pa.date32())),
                pc.less_equal(t.column(col), pa.scalar(request.end, pa.date32())),
            )
            if (part := t.filter(keep)).num_rows:
                out[name] = part
        return out

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return dict(raw)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(tmp_path / "lake", fsync=False)
    yield lk
    lk.close()


def sessions(prices: pa.Table) -> list[dt.date]:
    return list(prices.column("date").to_pylist())


def stored(lake: Lake, dataset: str, ticker: str = "AAPL") -> pa.Table:
    return lake.read(ticker, dataset, output="arrow")


def full_recompute(lake: Lake, dataset: str, ticker: str = "AAPL") -> pa.Table:
    prices = lake.read(ticker, "prices", output="arrow")
    actions = lake.read(ticker, "corporate_actions", output="arrow")
    fund = lake.read(ticker, "fundamentals", output="arrow")
    out = compute_derived(dataset, prices, actions, fund)
    assert out is not None
    return out


def test_daily_batches_derive_exactly_the_full_recompute(lake: Lake) -> None:
    prices, actions, _ = quandl("AAPL")
    days = sessions(prices)
    src = TableSource({"prices": prices, "corporate_actions": actions})
    wanted = ["prices", "corporate_actions", TECH]
    first = run_batch(lake, src, ["AAPL"], wanted, days[0], days[199], kind="backfill")
    assert first.items_failed == 0
    for day in days[200:206]:  # six daily runs, one session each
        s = run_batch(lake, src, ["AAPL"], wanted, day, day)
        assert s.items_failed == 0
    got = stored(lake, TECH)
    assert got.num_rows == 206
    assert got.equals(full_recompute(lake, TECH).slice(0, 206))  # bit for bit
    # the signals are split-adjusted: no jump at the 7:1 split
    sma = dict(zip(got.column("date").to_pylist(), got.column("sma_20").to_pylist(), strict=True))
    assert sma[D(2014, 6, 6)] == pytest.approx(sma[D(2014, 6, 9)], rel=0.02)
    # a re-run of the last day rewrites nothing
    again = run_batch(lake, src, ["AAPL"], wanted, days[205], days[205])
    assert again.objects_written == 0
    items = {i.dataset: i for i in lake.catalog.run_items(again.run_id)}
    assert items[TECH].status == "completed"


def test_a_late_split_recomputes_the_full_history(lake: Lake) -> None:
    prices, actions, _ = quandl("AAPL")
    days = sessions(prices)
    july = days.index(D(2014, 7, 1))
    no_split = TableSource({"prices": prices})  # the split is not known yet
    run_batch(lake, no_split, ["AAPL"], ["prices", TECH], days[0], days[july - 1])
    before = stored(lake, TECH)
    # unadjusted: the 20-day mean falls through the split (the 7:1 price drop)
    drop = before.filter(pc.equal(before.column("date"), pa.scalar(D(2014, 6, 30), pa.date32())))
    assert drop.column("sma_20")[0].as_py() < 300
    lake.write("AAPL", "corporate_actions", actions)  # the split arrives (another source)
    s = run_batch(lake, no_split, ["AAPL"], ["prices", TECH], days[july], days[july])
    assert s.items_failed == 0
    after = stored(lake, TECH)
    assert after.equals(full_recompute(lake, TECH))  # every earlier row rewritten
    old = after.filter(pc.less(after.column("date"), pa.scalar(SPLIT_DAY, pa.date32())))
    assert old.column("sma_20")[-1].as_py() == pytest.approx(
        before.filter(pc.less(before.column("date"), pa.scalar(SPLIT_DAY, pa.date32())))
        .column("sma_20")[-1]
        .as_py()
        / 7,
        rel=1e-9,
    )


def test_valuation_late_filing_and_point_in_time(lake: Lake) -> None:
    fund = mur_table()
    # Murphy Oil filings with a price series over 2013 (synthetic closes, real filings)
    days = [D(2013, 1, 2) + dt.timedelta(days=i) for i in range(200)]
    days = [d for d in days if d.weekday() < 5]
    n = len(days)
    prices = pa.table(
        {
            "date": pa.array(days, pa.date32()),
            "open": [50.0 + i % 7 for i in range(n)],
            "high": [52.0 + i % 7 for i in range(n)],
            "low": [49.0 + i % 7 for i in range(n)],
            "close": [51.0 + i % 7 for i in range(n)],
            "adj_close": [51.0 + i % 7 for i in range(n)],
            "volume": pa.array([1_000_000 + i for i in range(n)], pa.int64()),
        }
    )
    known = fund.filter(pc.less(fund.column("filed"), pa.scalar(D(2013, 5, 7), pa.date32())))
    src = TableSource({"prices": prices, "fundamentals": known})
    cut = days.index(D(2013, 6, 3))
    run_batch(lake, src, ["MUR"], ["prices", "fundamentals", VAL], days[0], days[cut - 1])
    # the Q1 10-Q (filed 2013-05-07) lands late, together with June's prices
    src2 = TableSource({"prices": prices, "fundamentals": fund})
    run_batch(lake, src2, ["MUR"], ["fundamentals"], D(2013, 5, 7), D(2013, 5, 7))
    s = run_batch(lake, src2, ["MUR"], ["prices", VAL], days[cut], days[-1])
    assert s.items_failed == 0
    got = stored(lake, VAL, "MUR")
    assert got.equals(full_recompute(lake, VAL, "MUR"))
    mcap = dict(
        zip(got.column("date").to_pylist(), got.column("market_cap").to_pylist(), strict=True)
    )
    close = dict(zip(days, prices.column("close").to_pylist(), strict=True))
    # before the 10-Q: Q3 2012 shares; from its filing date: the Q1 2013 count
    assert mcap[D(2013, 5, 6)] == close[D(2013, 5, 6)] * 195_057_952
    assert mcap[D(2013, 5, 7)] == close[D(2013, 5, 7)] * 191_765_395


def test_derive_command_and_api_are_idempotent(lake: Lake, tmp_path: Path) -> None:
    prices, actions, _ = quandl("AAPL")
    run_batch(
        lake,
        TableSource({"prices": prices, "corporate_actions": actions}),
        ["AAPL"],
        ["prices", "corporate_actions"],
        prices.column("date")[0].as_py(),
        prices.column("date")[-1].as_py(),
    )
    s = run_derive(lake, ["AAPL"], [TECH])
    assert s.items_failed == 0 and s.objects_written > 0
    assert stored(lake, TECH).equals(full_recompute(lake, TECH))
    assert run_derive(lake, ["AAPL"], [TECH]).objects_written == 0
    lake.close()
    runner = CliRunner()
    url = str(tmp_path / "lake")
    args = ["derive", "--lake", url, "--tickers", "AAPL", "--start", "2014-12-01"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "objects written" in res.output
    with marketlake.open(url) as lk:
        run = lk.catalog.list_runs(1)[0]
        assert run.kind == "derive" and run.source == "derived"
        assert sum(i.rows_added + i.rows_updated for i in lk.catalog.run_items(run.run_id)) == 0
    bad = runner.invoke(app, ["derive", "--lake", url, "--datasets", "prices"])
    assert bad.exit_code == 1
    assert "does not provide ['prices']" in bad.output


def test_ticker_without_prices_completes_with_nothing(lake: Lake) -> None:
    prices, _, _ = quandl("AAPL")
    lake.write("AAPL", "prices", prices.slice(0, 10))
    s = run_derive(lake, ["AAPL", "NOPE"], [TECH, VAL])
    assert s.items_failed == 0
    assert stored(lake, TECH).num_rows == 10  # warm-up rows are null but present
    assert stored(lake, VAL).num_rows == 0  # no fundamentals: no valuation rows
