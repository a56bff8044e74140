"""Compaction (ingest/compact.py, Lake.compact, `marketlake compact`) and _meta-driven reads.

Compaction must be invisible to readers (same rows, any range, any backend), idempotent (a
re-run writes nothing), safe with concurrent writers (rows of folded months are routed into the
history object; nothing is lost) and recoverable (rebuild_meta / catalog rebuild agree).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.cli.main import app
from marketlake.storage.consistency import check_lake_consistency
from tests.conftest import price_table, weekdays

D = dt.date
START, END = D(2021, 1, 1), D(2024, 3, 15)


def snapshot(lake: Lake) -> dict[str, bytes]:
    return {
        i.key: lake.store.get(i.key).data
        for i in lake.store.list("")
        if not i.key.startswith(("_marketlake", "_catalog"))
    }


def fill(lake: Lake, tickers: tuple[str, ...] = ("AAPL", "MSFT")) -> None:
    for i, t in enumerate(tickers):
        lake.write(t, "prices", price_table(weekdays(START, END), base=100 + i))


RANGES = [
    (None, None),
    (START, END),
    (D(2022, 3, 1), D(2022, 3, 31)),
    (D(2023, 12, 20), D(2024, 1, 10)),
    (D(2024, 2, 1), D(2024, 3, 15)),
    (D(2019, 1, 1), D(2019, 12, 31)),
]


def test_compaction_is_invisible_to_readers(lake: Lake) -> None:
    fill(lake)
    before = {
        r: lake.read_batch(["AAPL", "MSFT"], "prices", *r, output="arrow").data for r in RANGES
    }
    s = lake.compact(before="2024-03")
    assert s.tickers == 2 and s.partitions_folded == 2 * 38  # 2021-01 .. 2024-02
    assert not s.errors
    for r, table in before.items():
        assert lake.read_batch(["AAPL", "MSFT"], "prices", *r, output="arrow").data.equals(table)
    meta = lake.meta("AAPL", "prices")
    assert meta is not None
    assert sorted(meta.partitions) == ["2024-03", "upto-2024-02"]
    keys = {p.key for p in meta.partitions.values()}
    assert keys == {
        "prices/v1/AAPL/history-upto-2024-02/data.parquet",
        "prices/v1/AAPL/2024/03/data.parquet",  # the current month keeps its spec key
    }
    assert not lake.store.exists("prices/v1/AAPL/2023/06/data.parquet")
    # the catalog follows, and a rebuild from the store agrees
    rows = {(r.ticker, r.period) for r in lake.catalog.partitions(dataset="prices")}
    assert rows == {(t, p) for t in ("AAPL", "MSFT") for p in ("2024-03", "upto-2024-02")}
    live = sorted((r.ticker, r.period, r.sha256) for r in lake.catalog.partitions())
    lake.rebuild_catalog()
    assert sorted((r.ticker, r.period, r.sha256) for r in lake.catalog.partitions()) == live
    assert check_lake_consistency(lake).ok


def test_rerun_writes_nothing_and_next_round_folds_new_months(local_lake: Lake) -> None:
    lake = local_lake
    fill(lake)
    lake.compact(before="2024-02")
    snap = snapshot(lake)
    again = lake.compact(before="2024-02")
    assert again.tickers == 0 and again.objects_written == 0
    assert snapshot(lake) == snap  # byte-identical
    full = lake.read("AAPL", "prices", output="arrow")
    nxt = lake.compact(before="2024-04")  # February and March close
    assert nxt.partitions_folded == 4
    meta = lake.meta("AAPL", "prices")
    assert meta is not None and list(meta.partitions) == ["upto-2024-03"]
    assert not lake.store.exists("prices/v1/AAPL/history-upto-2024-01/data.parquet")
    assert lake.read("AAPL", "prices", output="arrow").equals(full)
    # compacting a lake compacted from the same data gives the same bytes (deterministic)
    other = marketlake.open(Path(str(lake.store.local_root)) / "../other", fsync=False)
    fill(other)
    other.compact(before="2024-04")
    a = lake.store.get("prices/v1/AAPL/history-upto-2024-03/data.parquet").data
    assert other.store.get("prices/v1/AAPL/history-upto-2024-03/data.parquet").data == a
    other.close()


def test_writes_into_folded_months_go_to_the_history_object(lake: Lake) -> None:
    fill(lake, ("AAPL",))
    lake.compact(before="2024-03")
    old = price_table([D(2022, 6, 1), D(2022, 6, 2)], base=500.0)  # a vendor correction
    new = price_table([D(2024, 3, 18)], base=600.0)  # the current month
    res = lake.write("AAPL", "prices", pa.concat_tables([old, new]))
    assert res.rows_updated == 2 and res.rows_added == 1
    assert not lake.store.exists("prices/v1/AAPL/2022/06/data.parquet")  # no monthly key again
    meta = lake.meta("AAPL", "prices")
    assert meta is not None and sorted(meta.partitions) == ["2024-03", "upto-2024-02"]
    got = lake.read("AAPL", "prices", "2022-06-01", "2022-06-02", output="arrow")
    assert got.column("close").to_pylist() == old.column("close").to_pylist()
    assert lake.read("AAPL", "prices", "2024-03-18", "2024-03-18", output="arrow").num_rows == 1
    assert lake.repair_meta("AAPL", "prices").partitions.keys() == meta.partitions.keys()


def test_long_read_touches_two_objects_after_compaction(local_lake: Lake) -> None:
    lake = local_lake
    fill(lake, ("AAPL",))
    lake.reader.objects_read = 0
    lake.read("AAPL", "prices", START, END)
    assert lake.reader.objects_read == 39  # one per month
    lake.compact(before="2024-03")
    lake.reader.objects_read = 0
    lake.read("AAPL", "prices", START, END)
    assert lake.reader.objects_read == 2
    lake.reader.objects_read = 0
    lake.read("AAPL", "prices", "2024-03-01", "2024-03-15")
    assert lake.reader.objects_read == 1  # the current month only


def test_concurrent_writes_during_compaction_lose_nothing(local_lake: Lake) -> None:
    lake = local_lake
    days = weekdays(START, END)
    lake.write("AAPL", "prices", price_table(days))
    updates = [price_table([d], base=900.0 + i) for i, d in enumerate(days[::7])]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for t in updates:
                lake.write("AAPL", "prices", t)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    for month in ("2022-01", "2023-01", "2023-06", "2024-01", "2024-03"):
        lake.compact(before=month)
    th.join()
    assert not errors
    lake.compact(before="2024-03")
    got = lake.read("AAPL", "prices", output="arrow")
    assert got.num_rows == len(days)
    closes = dict(zip(got.column("date").to_pylist(), got.column("close").to_pylist(), strict=True))
    for t in updates:
        assert closes[t.column("date")[0].as_py()] == t.column("close")[0].as_py()
    assert check_lake_consistency(lake).ok


def test_exchange_sub_partitions_compact_per_exchange(local_lake: Lake) -> None:
    lake = local_lake
    ts = [dt.datetime(2024, m, 1 + d, tzinfo=dt.UTC) for m in (1, 2, 3) for d in range(3)]
    rows = []
    for ex in ("binance", "kraken"):
        for t in ts:
            rows.append(
                {
                    "ts": t,
                    "exchange": ex,
                    "open": 1.0,
                    "high": 2.0,
                    "low": 0.5,
                    "close": 1.5,
                    "volume": 10.0,
                }
            )
    lake.write("BTC-USD", "crypto_bars", pa.Table.from_pylist(rows))
    before = lake.read("BTC-USD", "crypto_bars", output="arrow")
    lake.compact(["crypto_bars"], before="2024-03")
    meta = lake.meta("BTC-USD", "crypto_bars")
    assert meta is not None
    assert sorted(meta.partitions) == [
        "binance:2024-03",
        "binance:upto-2024-02",
        "kraken:2024-03",
        "kraken:upto-2024-02",
    ]
    assert lake.read("BTC-USD", "crypto_bars", output="arrow").equals(before)
    assert lake.store.exists("crypto_bars/v1/BTC-USD/kraken/history-upto-2024-02/data.parquet")


def test_cli_compact_and_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "lake")
    with marketlake.open(url, fsync=False) as lk:
        fill(lk, ("AAPL",))
    runner = CliRunner()
    dry = runner.invoke(app, ["compact", "--lake", url, "--before", "2024-01", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would fold 36 partition(s) of 1 ticker(s)" in dry.output
    res = runner.invoke(app, ["compact", "--lake", url, "--before", "2024-01"])
    assert res.exit_code == 0 and "folded 36 partition(s)" in res.output
    bad = runner.invoke(app, ["compact", "--lake", url, "--before", "January"])
    assert bad.exit_code == 1 and "YYYY-MM" in bad.output
    flat = runner.invoke(app, ["compact", "--lake", url, "--dataset", "fundamentals"])
    assert flat.exit_code == 1 and "no monthly or daily folders" in flat.output


def test_ranges_match_after_partial_compaction_property(local_lake: Lake) -> None:
    lake = local_lake
    fill(lake, ("AAPL",))
    full = lake.read("AAPL", "prices", output="arrow")
    lake.compact(before="2022-07")
    rng = __import__("random").Random(5)
    dates = full.column("date").to_pylist()
    for _ in range(40):
        a, b = sorted(rng.sample(range(len(dates)), 2))
        got = lake.read("AAPL", "prices", dates[a], dates[b], output="arrow")
        assert got.equals(full.slice(a, b - a + 1))


@pytest.mark.parametrize("columns", [["close"], ["volume", "open"]])
def test_column_projection_after_compaction(local_lake: Lake, columns: list[str]) -> None:
    lake = local_lake
    fill(lake, ("AAPL",))
    want = lake.read("AAPL", "prices", "2022-01-01", "2024-03-15", columns=columns, output="arrow")
    lake.compact(before="2024-03")
    got = lake.read("AAPL", "prices", "2022-01-01", "2024-03-15", columns=columns, output="arrow")
    assert got.equals(want) and got.column_names == ["date", *columns]


def test_month_completion_sees_compacted_months(local_lake: Lake) -> None:
    from marketlake import calendars
    from marketlake.ingest.completion import refresh_months

    lake = local_lake
    lake.write("AAPL", "prices", price_table(list(calendars.sessions(START, END))))
    before = {
        (r.month, r.sessions_present) for r in refresh_months(lake, "prices", "AAPL", as_of=END)
    }
    lake.compact(before="2024-03")
    after = {
        (r.month, r.sessions_present) for r in refresh_months(lake, "prices", "AAPL", as_of=END)
    }
    assert after == before and len(after) == 39
