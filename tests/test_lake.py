"""Write path and read API: merge, determinism, _meta, catalog, ranges across months/years."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import marketlake
from marketlake import Lake
from marketlake.errors import DataValidationError, InvalidTickerError, UnknownDatasetError
from marketlake.storage.meta import meta_key
from tests.conftest import price_table, weekdays

D = dt.date


def test_write_then_read_roundtrip(lake: Lake) -> None:
    days = weekdays(D(2023, 11, 20), D(2024, 2, 10))
    res = lake.write("aapl", "prices", price_table(days))
    assert (res.rows_in, res.rows_added, res.rows_updated, res.row_count) == (
        len(days),
        len(days),
        0,
        len(days),
    )
    assert res.objects_written == 4 + 1  # 2023-11, 2023-12, 2024-01, 2024-02 + _meta
    df = lake.read("AAPL", "prices", "2023-12-29", "2024-01-02")  # crosses a year boundary
    assert isinstance(df, pd.DataFrame)
    assert list(df["date"].dt.date) == [D(2023, 12, 29), D(2024, 1, 1), D(2024, 1, 2)]
    assert str(df["date"].dtype) == "datetime64[ns]"
    full = lake.read("AAPL", output="arrow")
    assert full.equals(price_table(days))
    pl_df = lake.read(
        "AAPL", "prices", D(2024, 1, 1), D(2024, 1, 31), columns=["close"], output="polars"
    )
    assert isinstance(pl_df, pl.DataFrame) and pl_df.columns == ["date", "close"]
    assert pl_df.height == len(weekdays(D(2024, 1, 1), D(2024, 1, 31)))


def test_read_skips_missing_months_and_empty_results(lake: Lake) -> None:
    lake.write("MSFT", "prices", price_table([D(2024, 1, 5), D(2024, 3, 5)]))
    out = lake.read("MSFT", "prices", D(2023, 6, 1), D(2024, 12, 31), output="arrow")
    assert out.column("date").to_pylist() == [D(2024, 1, 5), D(2024, 3, 5)]
    empty = lake.read("NOPE", "prices", D(2024, 1, 1), D(2024, 2, 1), output="arrow")
    assert empty.num_rows == 0 and empty.column_names == lake.dataset("prices").schema.names
    assert lake.read("NOPE", "prices").empty
    assert lake.read("MSFT", "prices", D(2024, 2, 1), D(2024, 1, 1)).empty


def test_merge_new_wins_and_counts(lake: Lake) -> None:
    days = weekdays(D(2024, 1, 1), D(2024, 1, 12))
    lake.write("AAPL", "prices", price_table(days))
    newer = price_table([*days[-2:], D(2024, 1, 15)], base=500.0)
    res = lake.write("AAPL", "prices", newer)
    assert (res.rows_added, res.rows_updated, res.row_count) == (1, 2, len(days) + 1)
    got = lake.read("AAPL", output="arrow")
    assert got.column("close").to_pylist()[-3:] == newer.column("close").to_pylist()


def test_rewrite_is_byte_identical_and_writes_nothing(local_lake: Lake) -> None:
    days = weekdays(D(2024, 1, 1), D(2024, 3, 29))
    local_lake.write("AAPL", "prices", price_table(days))
    root = local_lake.store.local_root
    assert root is not None
    before = {
        p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "_catalog" not in p.name
    }
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    res = local_lake.write("AAPL", "prices", price_table(days).slice(10, 30))
    assert res.objects_written == 0 and (res.rows_added, res.rows_updated) == (0, 0)
    after = {p: p.read_bytes() for p in before}
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in before} == mtimes


def test_same_rows_give_same_bytes_in_another_lake(tmp_path: Path) -> None:
    days = weekdays(D(2024, 1, 1), D(2024, 2, 29))
    blobs = []
    full = price_table(days)
    for name, chunks in (("a", [full]), ("b", [full.slice(20), full.slice(0, 20)])):
        with marketlake.open(tmp_path / name, fsync=False) as lk:
            for c in chunks:
                lk.write("AAPL", "prices", c)
            blobs.append((tmp_path / name / "prices/v1/AAPL/2024/02/data.parquet").read_bytes())
    assert blobs[0] == blobs[1]


def test_meta_object(lake: Lake) -> None:
    lake.write("AAPL", "prices", price_table(weekdays(D(2023, 12, 28), D(2024, 1, 3))))
    raw = json.loads(lake.store.get(meta_key("prices", "AAPL")).data)
    assert raw["min_date"] == "2023-12-28" and raw["max_date"] == "2024-01-03"
    assert raw["row_count"] == 5 and raw["months_present"] == ["2023-12", "2024-01"]
    p = raw["partitions"]["2024-01"]
    assert p["key"] == "prices/v1/AAPL/2024/01/data.parquet" and p["rows"] == 3
    assert len(p["sha256"]) == 64 and p["bytes"] > 0 and raw["last_updated_at"].endswith("Z")
    meta = lake.meta("aapl", "prices")
    assert meta is not None and meta.row_count == 5


def test_catalog_records_partitions_and_rebuild_matches(local_lake: Lake) -> None:
    for t in ("AAPL", "MSFT", "BRK.B"):
        local_lake.write(
            t, "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 3, 10))), source="unit"
        )
    local_lake.write(
        "AAPL",
        "fundamentals",
        pa.table(
            {
                "period_end": pa.array([D(2023, 12, 31), D(2024, 3, 31)], pa.date32()),
                "filed": pa.array([D(2024, 2, 2), D(2024, 5, 3)], pa.date32()),
                "revenue": [1e9, 1.1e9],
            }
        ),
        source="unit",
    )
    live = local_lake.catalog.snapshot(include_timestamps=False)
    assert len(local_lake.catalog.partitions(dataset="prices")) == 9
    assert local_lake.tickers("prices") == ["AAPL", "BRK.B", "MSFT"]
    # wipe the catalog and rebuild from _meta
    local_lake.catalog.replace_partitions([])
    assert local_lake.catalog.partitions() == []
    assert local_lake.rebuild_catalog() == 10
    assert local_lake.catalog.snapshot(include_timestamps=False)["partitions"] == live["partitions"]


def test_rebuild_into_a_fresh_catalog_file(tmp_path: Path) -> None:
    with marketlake.open(tmp_path / "lake", fsync=False) as lk:
        lk.write("AAPL", "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 2, 10))), source="s")
        live = lk.catalog.partitions()
    (tmp_path / "lake" / "_catalog.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / "lake" / f"_catalog.sqlite{extra}").unlink(missing_ok=True)
    with marketlake.open(tmp_path / "lake", fsync=False) as lk:
        assert lk.catalog.partitions() == []
        lk.rebuild_catalog()
        assert lk.catalog.partitions() == live


def test_bad_write_leaves_data_untouched(lake: Lake) -> None:
    good = price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31)))
    lake.write("AAPL", "prices", good)
    before = lake.read("AAPL", output="arrow")
    bad = price_table([D(2024, 1, 31)]).set_column(6, "volume", pa.array([-5], pa.int64()))
    with pytest.raises(DataValidationError, match="volume"):
        lake.write("AAPL", "prices", bad)
    with pytest.raises(InvalidTickerError):
        lake.write("../etc", "prices", good)
    with pytest.raises(UnknownDatasetError, match="known datasets"):
        lake.write("AAPL", "nope", good)
    assert lake.read("AAPL", output="arrow").equals(before)


def test_read_batch_returns_per_ticker_errors(lake: Lake) -> None:
    for t in ("AAPL", "MSFT"):
        lake.write(t, "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31))))
    res = lake.read_batch(["msft", "AAPL", "../x", "ZZZZ"], "prices", "2024-01-10", "2024-01-12")
    assert set(res.errors) == {"../x"} and isinstance(res.errors["../x"], InvalidTickerError)
    assert res.missing == ["ZZZZ"]
    assert list(res.data.columns[:2]) == ["ticker", "date"]
    assert res.data.groupby("ticker").size().to_dict() == {"AAPL": 3, "MSFT": 3}


def test_corrupt_object_gives_clear_error_and_batch_survives(lake: Lake) -> None:
    lake.write("AAPL", "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31))))
    lake.write("MSFT", "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31))))
    lake.store.put("prices/v1/AAPL/2024/01/data.parquet", b"PAR1 not really")
    with pytest.raises(marketlake.StorageError, match="not a readable Parquet"):
        lake.read("AAPL", "prices", "2024-01-01", "2024-01-31")
    res = lake.read_batch(["AAPL", "MSFT"], "prices", "2024-01-01", "2024-01-31")
    assert list(res.errors) == ["AAPL"] and len(res.data) == 23
    # a write to the corrupt partition refuses rather than silently dropping rows
    with pytest.raises(marketlake.StorageError, match="not a readable Parquet"):
        lake.write("AAPL", "prices", price_table([D(2024, 1, 31)]))


def test_corrupt_meta_is_reported(lake: Lake) -> None:
    lake.write("AAPL", "prices", price_table([D(2024, 1, 2)]))
    lake.store.put(meta_key("prices", "AAPL"), b"{not json")
    with pytest.raises(marketlake.StorageError, match=r"_meta/v1/prices/AAPL\.json is corrupt"):
        lake.read("AAPL", "prices")
    # explicit ranges do not need _meta
    assert len(lake.read("AAPL", "prices", "2024-01-01", "2024-01-31")) == 1


def test_bad_read_arguments(lake: Lake) -> None:
    with pytest.raises(marketlake.MarketlakeError, match="unknown column"):
        lake.read("AAPL", "prices", "2024-01-01", "2024-01-02", columns=["nope"])
    with pytest.raises(marketlake.MarketlakeError, match="YYYY-MM-DD"):
        lake.read("AAPL", "prices", "yesterday", "2024-01-02")
    with pytest.raises(marketlake.MarketlakeError, match="output"):
        lake.read("AAPL", "prices", "2024-01-01", "2024-01-02", output="excel")  # type: ignore[arg-type]


def test_format_marker(tmp_path: Path) -> None:
    with marketlake.open(tmp_path / "lake", fsync=False):
        pass
    marker = json.loads((tmp_path / "lake" / "_marketlake.json").read_text())
    assert marker["format_version"] == 1
    assert marker["layouts"]["prices"] == "{dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet"
    marker["format_version"] = 99
    (tmp_path / "lake" / "_marketlake.json").write_text(
        json.dumps(marker | {"format": "marketlake"})
    )
    with pytest.raises(marketlake.StorageError, match="upgrade marketlake"):
        marketlake.open(tmp_path / "lake")


def test_lake_marker_layout_wins(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    root.mkdir()
    yearly = "{dataset}/v{version}/{TICKER}/{YYYY}/data.parquet"
    (root / "_marketlake.json").write_text(
        json.dumps(
            {
                "format": "marketlake",
                "format_version": 1,
                "created_at": "2024-01-01T00:00:00Z",
                "layouts": {"prices": yearly},
            }
        )
    )
    with marketlake.open(root, fsync=False) as lk:
        lk.write("AAPL", "prices", price_table(weekdays(D(2023, 12, 1), D(2024, 1, 31))))
        assert (root / "prices/v1/AAPL/2023/data.parquet").exists()
        assert (root / "prices/v1/AAPL/2024/data.parquet").exists()
        assert len(lk.read("AAPL", "prices", "2023-12-29", "2024-01-02")) == 3


def test_read_batch_of_many_multi_month_tickers_does_not_starve_the_pool(tmp_path: Path) -> None:
    with marketlake.open(tmp_path / "lake", fsync=False, max_workers=2) as lk:
        table = price_table(weekdays(D(2024, 1, 1), D(2024, 6, 30)))
        for i in range(6):
            lk.write(f"T{i}", "prices", table)
        res = lk.read_batch([f"T{i}" for i in range(6)], "prices", "2024-01-01", "2024-06-30")
        assert not res.errors and len(res.data) == 6 * table.num_rows


def test_minute_bars_round_trip_with_utc_date_ranges() -> None:
    lake = marketlake.open("memory://")
    ts = pd.date_range("2024-03-28 09:30", periods=5, freq="D", tz="America/New_York")
    bars = pd.DataFrame(
        {"ts": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": [1, 2, 3, 4, 5]}
    )
    res = lake.write("AAPL", "bars_minute", bars)
    assert sorted(res.meta.partitions) == ["2024-03", "2024-04"]
    got = lake.read("AAPL", "bars_minute", "2024-03-29", "2024-04-01", output="arrow")
    assert got.column("volume").to_pylist() == [2, 3, 4, 5]  # UTC dates, both ends inclusive
    assert str(got.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert lake.read("AAPL", "bars_minute", output="arrow").num_rows == 5


def test_results_carry_provenance_and_warnings(local_lake: Lake) -> None:
    import json

    lake = local_lake
    days = weekdays(D(2024, 1, 1), D(2024, 1, 31)) + weekdays(D(2024, 3, 1), D(2024, 3, 29))
    lake.write("AAPL", "prices", price_table(days), source="yahoo")
    df = lake.read("AAPL", "prices", "2024-01-01", "2024-03-31")
    prov = df.attrs["marketlake"]
    assert prov["sources"] == ["yahoo"] and prov["adjust"] == "none"
    assert prov["warnings"] == ["AAPL: no prices rows in 2024-02"]  # the gap inside the span
    table = lake.read("AAPL", "prices", "2024-01-01", "2024-01-31", output="arrow")
    assert json.loads(table.schema.metadata[b"marketlake"])["warnings"] == []
    res = lake.read_batch(["AAPL", "NOPE", "bad/x"], "prices", "2024-01-01", "2024-01-31")
    assert res.provenance["tickers"] == ["AAPL", "NOPE", "bad/x"]
    assert "no prices rows in the range for: NOPE" in res.warnings
    assert any(w.startswith("failed tickers") for w in res.warnings)


def test_open_without_create_refuses_a_missing_lake(tmp_path: Path, s3_lake_url: str) -> None:
    missing = tmp_path / "typo" / "lake"
    with pytest.raises(marketlake.LakeNotFoundError, match=r"no marketlake lake at .*typo"):
        marketlake.open(missing, create=False)
    assert not (tmp_path / "typo").exists()  # no directory, marker or catalog left behind
    with pytest.raises(marketlake.LakeNotFoundError, match="marketlake ingest"):
        marketlake.open(s3_lake_url, catalog=tmp_path / "c.sqlite", create=False)
    assert not (tmp_path / "c.sqlite").exists()
    for url in (str(tmp_path / "lake"), s3_lake_url):
        marketlake.open(url, catalog=tmp_path / "c2.sqlite").close()  # create it
        with marketlake.open(url, catalog=tmp_path / "c2.sqlite", create=False) as lk:
            assert lk.tickers() == []
