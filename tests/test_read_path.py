"""The read path's fast paths give exactly what the plain ones give: binary-search trimming
vs the boolean filter, the in-memory ``_meta`` memo vs a fresh read, gap detection, the codec
chosen by size, and column selection in the direct Parquet decoder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import marketlake
from marketlake.errors import CorruptObjectError
from marketlake.storage import reader as reader_mod
from marketlake.storage.meta import PartitionMeta
from marketlake.storage.parquet import SMALL_TABLE_ROWS, decode_table, encode_table
from marketlake.storage.reader import _gaps, date_mask, trim_sorted
from tests.conftest import price_table, weekdays

D = dt.date
BASE = D(2024, 1, 1)

day_offsets = st.lists(st.integers(0, 400), max_size=60)
bounds = st.tuples(st.integers(-10, 410), st.integers(-10, 410))


@settings(max_examples=200, deadline=None)
@given(day_offsets, bounds, st.booleans())
def test_trim_sorted_equals_the_filter_on_dates(
    offsets: list[int], lohi: tuple[int, int], sort: bool
) -> None:
    days = [BASE + dt.timedelta(days=o) for o in (sorted(offsets) if sort else offsets)]
    table = pa.table({"date": pa.array(days, pa.date32()), "x": list(range(len(days)))})
    lo, hi = (BASE + dt.timedelta(days=v) for v in lohi)
    want = table.filter(date_mask(table.column("date"), lo, hi))
    assert trim_sorted(table, "date", lo, hi).equals(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10 * 86_400 * 10**6), max_size=40), bounds)
def test_trim_sorted_equals_the_filter_on_utc_timestamps(
    micros: list[int], lohi: tuple[int, int]
) -> None:
    typ = pa.timestamp("us", tz="UTC")
    table = pa.table({"ts": pa.array(sorted(micros), typ)})
    lo, hi = (D(1970, 1, 1) + dt.timedelta(days=v // 40) for v in lohi)  # days 0..10
    want = table.filter(date_mask(table.column("ts"), lo, hi))
    assert trim_sorted(table, "ts", lo, hi).equals(want)


def test_trim_sorted_with_nulls_falls_back_to_the_filter() -> None:
    table = pa.table({"date": pa.array([D(2024, 1, 2), None, D(2024, 1, 4)], pa.date32())})
    got = trim_sorted(table, "date", D(2024, 1, 3), D(2024, 1, 5))
    assert got.column("date").to_pylist() == [D(2024, 1, 4)]


def _naive_gaps(parts: list[PartitionMeta], lo: dt.date, hi: dt.date) -> list[str]:
    first_day = min(p.min_date for p in parts)
    last_day = max(p.max_date for p in parts)
    a, b = max(lo, first_day), min(hi, last_day)
    out = []
    day = D(a.year, a.month, 1)
    while day <= b:
        label = f"{day:%Y-%m}"
        if not any(
            (p.min_date.year, p.min_date.month)
            <= (day.year, day.month)
            <= (p.max_date.year, p.max_date.month)
            for p in parts
        ):
            out.append(label)
        day = D(day.year + day.month // 12, day.month % 12 + 1, 1)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 14)), min_size=1, max_size=8),
    bounds,
)
def test_gap_detection_fast_path_matches_the_month_by_month_walk(
    spans: list[tuple[int, int]], lohi: tuple[int, int]
) -> None:
    def month(i: int) -> dt.date:
        return D(2020 + i // 12, i % 12 + 1, 1)

    parts = []
    for n, (start, length) in enumerate(spans):
        end = month(start + length)
        parts.append(
            PartitionMeta(
                period=f"p{n}",
                key=f"k{n}",
                rows=1,
                min_date=month(start) + dt.timedelta(days=3),
                max_date=end + dt.timedelta(days=20),
                bytes=1,
                sha256="",
                etag=None,
                updated_at="",
                source=None,
            )
        )
    parts.sort(key=lambda p: (p.min_date, p.period))
    lo, hi = (D(2020, 1, 1) + dt.timedelta(days=5 * v) for v in lohi)
    first_day = min(p.min_date for p in parts)
    last_day = max(p.max_date for p in parts)
    assert _gaps(parts, lo, hi, first_day, last_day) == _naive_gaps(parts, lo, hi)


def test_meta_memo_sees_writes_from_another_lake(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    reader_lake = marketlake.open(root)
    writer_lake = marketlake.open(root)
    writer_lake.write("AAPL", "prices", price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31))))
    assert len(reader_lake.read("AAPL", "prices")) == 23
    assert len(reader_lake.reader._memo) == 1  # parsed once, kept
    writer_lake.write("AAPL", "prices", price_table(weekdays(D(2024, 2, 1), D(2024, 2, 29))))
    got = reader_lake.read("AAPL", "prices", output="arrow")
    assert got.num_rows == 23 + 21  # the ETag changed: the memo entry was replaced
    assert got.column("date")[-1].as_py() == D(2024, 2, 29)
    writer_lake.store.delete("_meta/v1/prices/AAPL.json")
    assert reader_lake.read("AAPL", "prices", output="arrow").num_rows == 0  # gone: not memoised


def test_meta_memo_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_mod, "MEMO_ENTRIES", 2)
    lake = marketlake.open(str(tmp_path / "lake"))
    table = price_table(weekdays(D(2024, 1, 1), D(2024, 1, 10)))
    for ticker in ("AAA", "BBB", "CCC"):
        lake.write(ticker, "prices", table)
        assert len(lake.read(ticker, "prices")) == len(table)
    assert len(lake.reader._memo) == 2


def _codec(data: bytes) -> str:
    return str(pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0).column(0).compression)


def test_codec_follows_the_size() -> None:
    month = price_table(weekdays(D(2024, 1, 1), D(2024, 1, 31)))
    assert _codec(encode_table(month)) == "LZ4"
    days = [D(1990, 1, 1) + dt.timedelta(days=i) for i in range(SMALL_TABLE_ROWS)]
    assert _codec(encode_table(price_table(days))) == "ZSTD"
    assert _codec(encode_table(month, compression="zstd")) == "ZSTD"
    assert encode_table(month) == encode_table(month)  # still deterministic


def test_written_months_and_history_objects_use_lz4(tmp_path: Path) -> None:
    lake = marketlake.open(str(tmp_path / "lake"))
    lake.write("AAPL", "prices", price_table(weekdays(D(2023, 1, 1), D(2024, 2, 29))))
    lake.compact(before="2024-02")
    meta = lake.meta("AAPL", "prices")
    assert meta is not None
    for p in meta.partitions.values():
        assert _codec(lake.store.get(p.key).data) == "LZ4", p.key


def test_decode_table_column_selection() -> None:
    data = encode_table(price_table(weekdays(D(2024, 1, 1), D(2024, 1, 5))))
    assert decode_table(data).column_names[:2] == ["date", "open"]
    assert decode_table(data, columns=["volume", "date"]).column_names == ["volume", "date"]
    assert decode_table(data, columns=["date", "nope"]).column_names == ["date"]
    with pytest.raises(CorruptObjectError, match=r"k\.parquet is not a readable Parquet"):
        decode_table(data[:-10], key="k.parquet")
