"""Bad input gets a clear error naming dataset, ticker and column."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from marketlake.errors import DataValidationError, SchemaError
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import FUNDAMENTALS, PRICES
from tests.conftest import price_table

DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]


def test_accepts_arrow_pandas_polars() -> None:
    t = price_table(DAYS)
    assert conform(t, PRICES).equals(t)
    df = t.to_pandas()
    df["date"] = pd.to_datetime(df["date"])  # datetime64 midnight -> date
    assert conform(df, PRICES, "AAPL").equals(t)
    assert conform(df.set_index("date"), PRICES).equals(t)
    assert conform(pl.from_arrow(t), PRICES).equals(t)


def test_fills_missing_nullable_and_casts_safely() -> None:
    t = price_table(DAYS).drop_columns(["adj_close"])
    t = t.set_column(
        t.schema.get_field_index("volume"), "volume", t.column("volume").cast(pa.int32())
    )
    out = conform(t, PRICES)
    assert out.schema == PRICES.schema
    assert out.column("adj_close").null_count == 2


def bad(table: pa.Table, column: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, type=table.schema.field(column).type))


@pytest.mark.parametrize(
    ("mutate", "error", "fragments"),
    [
        (
            lambda t: t.append_column("foo", pa.array([1, 2])),
            SchemaError,
            ["unknown column", "foo"],
        ),
        (lambda t: t.drop_columns(["date"]), SchemaError, ["missing key column 'date'"]),
        (lambda t: t.drop_columns(["close"]), SchemaError, ["missing required column 'close'"]),
        (
            lambda t: t.set_column(6, "volume", pa.array([1.5, 2.0])),
            SchemaError,
            ["'volume' must be an integer"],
        ),
        (
            lambda t: t.set_column(1, "open", pa.array(["a", "b"])),
            SchemaError,
            ["'open' has type string"],
        ),
        (
            lambda t: bad(t, "close", [1.0, float("nan")]),
            DataValidationError,
            ["NaN", "2024-01-03"],
        ),
        (
            lambda t: bad(t, "high", [float("inf"), 1.0]),
            DataValidationError,
            ["'high'", "infinity"],
        ),
        (lambda t: bad(t, "volume", [5, -1]), DataValidationError, ["'volume' has negative"]),
        (lambda t: bad(t, "close", [None, 1.0]), DataValidationError, ["null", "required"]),
        (
            lambda t: bad(t, "date", [dt.date(2024, 1, 2), dt.date(2024, 1, 2)]),
            DataValidationError,
            ["duplicate key", "date=2024-01-02"],
        ),
        (
            lambda t: bad(t, "date", [dt.date(1850, 1, 2), dt.date(2024, 1, 2)]),
            DataValidationError,
            ["out of range"],
        ),
        (
            lambda t: t.set_column(
                0, "date", pa.array([dt.datetime(2024, 1, 2, 15, 30)] * 2, pa.timestamp("us"))
            ),
            SchemaError,
            ["time of day"],
        ),
        (
            lambda t: t.set_column(
                0,
                "date",
                pa.array(
                    [dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 3)], pa.timestamp("us", tz="UTC")
                ),
            ),
            SchemaError,
            ["time-zone-aware"],
        ),
        (
            lambda t: t.set_column(0, "date", pa.array(["2024-01-02", "Jan 3"])),
            SchemaError,
            ["not a YYYY-MM-DD"],
        ),
    ],
)
def test_bad_input(mutate, error, fragments) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        conform(mutate(price_table(DAYS)), PRICES, "AAPL")
    msg = str(info.value)
    assert "prices/AAPL" in msg
    for f in fragments:
        assert f in msg


def test_rejects_unknown_container() -> None:
    with pytest.raises(SchemaError, match="expected a pyarrow Table"):
        conform([1, 2, 3], PRICES)


def test_string_dates_and_fundamentals_ints() -> None:
    t = pa.table(
        {
            "period_end": ["2024-03-31"],
            "filed": ["2024-05-02"],
            "fiscal_year": np.array([2024], np.int64),
            "revenue": [1e9],
        }
    )
    out = conform(t, FUNDAMENTALS, "AAPL")
    assert out.column("period_end").to_pylist() == [dt.date(2024, 3, 31)]
    assert out.schema.field("fiscal_year").type == pa.int32()


def test_minute_bars_timestamps_become_utc_and_naive_ones_are_refused() -> None:
    from marketlake.schemas.datasets import get_dataset

    ds = get_dataset("bars_minute")
    ts = pd.date_range("2024-03-01 09:30", periods=3, freq="min", tz="America/New_York")
    frame = pd.DataFrame(
        {"ts": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": [1, 2, 3]}
    )
    out = conform(frame, ds, "AAPL")
    assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert out.column("ts")[0].as_py() == dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.UTC)
    with pytest.raises(SchemaError, match="naive"):
        conform(frame.assign(ts=ts.tz_localize(None)), ds, "AAPL")


@pytest.mark.parametrize("text_type", [pa.large_string(), pa.string_view()])
def test_large_and_view_strings_become_the_canonical_string(text_type: pa.DataType) -> None:
    from marketlake.schemas.datasets import get_dataset

    ds = get_dataset("corporate_actions")
    table = pa.table(
        {
            "ex_date": pa.array([dt.date(2024, 1, 2)], pa.date32()),
            "action": pa.array(["dividend"], text_type),
            "value": [0.24],
        }
    )
    out = conform(table, ds, "AAPL")
    assert out.schema.field("action").type == pa.string()
