"""Cross-sections (Lake.cross_section) and their date-partitioned companions (ingest/xsection.py).

A cross-section must always equal the ticker-first data: after a daily batch (companion written
from the batch's rows), after a later write to one ticker (companion stale for that ticker only),
after a backfill (companions built on first use), on every backend.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import marketlake
from marketlake import Lake
from marketlake.ingest.batch import run_batch
from marketlake.sources.synthetic import SyntheticSource, demo_universe
from tests.conftest import price_table

D = dt.date
DAY = D(2024, 3, 14)
TICKERS = demo_universe(12)


def expected(lake: Lake, day: dt.date, dataset: str = "prices") -> pa.Table:
    got = lake.read_batch(TICKERS, dataset, day, day, output="arrow").data
    return got.sort_by([("date", "ascending"), ("ticker", "ascending")])


def xs(lake: Lake, day: dt.date, dataset: str = "prices", end: dt.date | None = None) -> pa.Table:
    got: pa.Table = lake.cross_section(dataset, day, end, output="arrow")
    return got


def test_daily_batch_writes_companions_equal_to_ticker_first_data(lake: Lake) -> None:
    src = SyntheticSource()
    datasets = ["prices", "signals_technical"]
    run_batch(lake, src, TICKERS, datasets, D(2024, 2, 1), D(2024, 3, 13), kind="backfill")
    s = run_batch(lake, src, TICKERS, datasets, DAY, DAY)
    assert s.items_failed == 0
    entry = lake.catalog.cross_section("prices", DAY)
    assert entry is not None and entry.tickers == len(TICKERS)
    assert lake.store.exists(f"_xs/prices/v1/2024/03/{DAY.isoformat()}.parquet")
    for name in datasets:
        lake.reader.objects_read = 0
        got = xs(lake, DAY, name)
        assert lake.reader.objects_read == 0  # served from the companion, no ticker-first reads
        assert got.equals(expected(lake, DAY, name))
    # re-running the batch changes nothing and writes no object
    again = run_batch(lake, src, TICKERS, datasets, DAY, DAY)
    assert again.objects_written == 0


def test_a_later_write_refreshes_only_that_ticker(local_lake: Lake) -> None:
    lake = local_lake
    src = SyntheticSource()
    run_batch(lake, src, TICKERS, ["prices"], DAY, DAY)
    first = xs(lake, DAY)
    fix = price_table([DAY], base=999.0)
    lake.write(TICKERS[3], "prices", fix)  # a vendor correction outside any batch
    lake.reader.objects_read = 0
    got = xs(lake, DAY)
    assert lake.reader.objects_read == 1  # only the changed ticker re-read
    assert got.equals(expected(lake, DAY))
    row = got.filter(pc.equal(got.column("ticker"), TICKERS[3]))
    assert row.column("close")[0].as_py() == fix.column("close")[0].as_py()
    assert not got.equals(first)
    lake.reader.objects_read = 0
    assert xs(lake, DAY).equals(got) and lake.reader.objects_read == 0  # fresh again


def test_backfills_build_companions_on_first_use_and_ranges(local_lake: Lake) -> None:
    lake = local_lake
    run_batch(lake, SyntheticSource(), TICKERS, ["prices"], D(2023, 1, 3), DAY, kind="backfill")
    assert lake.catalog.cross_section("prices", D(2024, 1, 5)) is None  # long batch: lazily
    got = xs(lake, D(2024, 1, 2), end=D(2024, 1, 12))
    want = lake.read_batch(TICKERS, "prices", D(2024, 1, 2), D(2024, 1, 12), output="arrow").data
    assert got.equals(want.sort_by([("date", "ascending"), ("ticker", "ascending")]))
    assert lake.catalog.cross_section("prices", D(2024, 1, 5)) is not None
    lake.reader.objects_read = 0
    xs(lake, D(2024, 1, 5))
    assert lake.reader.objects_read == 0
    sub = lake.cross_section("prices", "2024-01-05", tickers=TICKERS[:2], columns=["close"])
    assert list(sub.columns) == ["ticker", "date", "close"] and len(sub) == 2


def test_cross_section_errors(local_lake: Lake) -> None:
    with pytest.raises(marketlake.MarketlakeError, match="daily datasets"):
        local_lake.cross_section("fundamentals", DAY)
    with pytest.raises(marketlake.MarketlakeError, match="needs a date"):
        local_lake.cross_section("prices")
    empty = local_lake.cross_section("prices", DAY, output="arrow")
    assert empty.num_rows == 0 and empty.column_names[0] == "ticker"


def test_companion_survives_catalog_rebuild_and_new_process(tmp_path: Path) -> None:
    url = tmp_path / "lake"
    with marketlake.open(url, fsync=False) as lk:
        run_batch(lk, SyntheticSource(), TICKERS, ["prices"], DAY, DAY)
        want = xs(lk, DAY)
    with marketlake.open(url) as lk:
        assert xs(lk, DAY).equals(want)


def test_read_only_credentials_still_get_the_cross_section(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from marketlake.errors import StoragePermissionError
    from marketlake.storage.faults import FaultPlan, FaultRule, FaultyStore
    from marketlake.storage.store import open_store

    url = str(tmp_path / "lake")
    with marketlake.open(url) as writer:
        run_batch(
            writer, SyntheticSource(), TICKERS, ["prices"], D(2024, 1, 2), DAY, kind="backfill"
        )  # over 31 days: the batch leaves the companions to the first read
    deny = FaultPlan([FaultRule("permission", ops=("put", "put_if_absent", "put_if_match"))])
    with marketlake.open(FaultyStore(open_store(url), deny)) as reader:
        with caplog.at_level("WARNING", logger="marketlake.xsection"):
            got = xs(reader, D(2024, 3, 5))  # no companion yet, and it cannot be stored
        assert got.equals(expected(reader, D(2024, 3, 5)))
        assert "not stored" in caplog.text and "permission" in caplog.text
        assert reader.catalog.cross_section("prices", D(2024, 3, 5)) is None
        with pytest.raises(StoragePermissionError):  # writes still fail loudly
            reader.write(TICKERS[0], "prices", price_table([D(2024, 3, 15)]))
