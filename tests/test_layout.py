from __future__ import annotations

import datetime as dt

import pytest

import marketlake
from marketlake.errors import LayoutError
from marketlake.schemas.datasets import list_datasets
from marketlake.storage.layout import Layout, period_bounds


def test_spec_default_keys(lake: marketlake.Lake) -> None:
    day = dt.date(2024, 1, 15)
    assert lake.key("aapl", "prices", day) == "prices/v1/AAPL/2024/01/data.parquet"
    assert lake.key("AAPL", "signals_valuation", day) == (
        "signals_valuation/v1/AAPL/2024/01/data.parquet"
    )
    assert lake.key("AAPL", "signals_technical", dt.date(2023, 12, 31)) == (
        "signals_technical/v1/AAPL/2023/12/data.parquet"
    )
    assert lake.key("BRK-B", "fundamentals", day) == "fundamentals/v1/BRK.B/data.parquet"


def test_grains_and_periods() -> None:
    monthly = Layout.parse("{dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet")
    yearly = Layout.parse("{dataset}/v{version}/{TICKER}/{YYYY}/data.parquet")
    single = Layout.parse("{dataset}/v{version}/{TICKER}/data.parquet")
    assert (monthly.grain, yearly.grain, single.grain) == ("month", "year", "all")
    assert monthly.periods_between(dt.date(2023, 11, 30), dt.date(2024, 2, 1)) == [
        "2023-11",
        "2023-12",
        "2024-01",
        "2024-02",
    ]
    assert yearly.periods_between(dt.date(2022, 5, 1), dt.date(2024, 1, 1)) == [
        "2022",
        "2023",
        "2024",
    ]
    assert single.periods_between(dt.date(2022, 5, 1), dt.date(2024, 1, 1)) == ["all"]
    assert monthly.periods_between(dt.date(2024, 2, 1), dt.date(2024, 1, 1)) == []
    assert yearly.key("prices", 1, "AAPL", "2024") == "prices/v1/AAPL/2024/data.parquet"
    assert period_bounds("2024-02") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert period_bounds("2023") == (dt.date(2023, 1, 1), dt.date(2023, 12, 31))
    assert period_bounds("all") is None


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{dataset}/{TICKER}/{YYYY}/{month}/data.parquet", "unknown placeholder"),
        ("{dataset}/{YYYY}/{MM}/data.parquet", "must contain {TICKER}"),
        ("{TICKER}/{YYYY}/data.parquet", "must contain {dataset}"),
        ("{dataset}/{TICKER}/{MM}/data.parquet", "{MM} without {YYYY}"),
        ("/{dataset}/{TICKER}/data.parquet", "must not start"),
        ("{dataset}//{TICKER}/data.parquet", "'//'"),
        ("{dataset}/../{TICKER}/data.parquet", "'..'"),
        ("{dataset}/{YYYY}/{TICKER}/data.parquet", "ticker-first"),
        ("{dataset}/{TICKER/data.parquet", "unbalanced"),
    ],
)
def test_bad_templates_are_rejected(template: str, fragment: str) -> None:
    with pytest.raises(LayoutError) as info:
        Layout.parse(template)
    assert fragment in str(info.value)


def test_registry_layouts_are_valid() -> None:
    for ds in list_datasets():
        Layout.parse(ds.layout)
