"""The exchange level in keys: crypto_bars objects per pair, exchange and month."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import marketlake
from marketlake.errors import DataValidationError, LayoutError
from marketlake.storage.layout import Layout, period_bounds

LAYOUT = Layout.parse("{dataset}/v{version}/{TICKER}/{exchange}/{YYYY}/{MM}/data.parquet")


def bars(exchange: str, start: str = "2024-01-31 23:58", n: int = 4) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="min", tz="UTC")
    return pd.DataFrame(
        {
            "ts": ts,
            "exchange": exchange,
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": [1.0 + i for i in range(n)],
            "volume": 0.25,
        }
    )


def test_layout_key_and_match_carry_the_exchange() -> None:
    assert LAYOUT.sub_partition == "exchange"
    key = LAYOUT.key("crypto_bars", 1, "BTC-USD", "kraken:2024-02")
    assert key == "crypto_bars/v1/BTC-USD/kraken/2024/02/data.parquet"
    assert LAYOUT.match(key) == ("crypto_bars", 1, "BTC-USD", "kraken:2024-02")
    assert period_bounds("kraken:2024-02") == (
        pd.Timestamp("2024-02-01").date(),
        pd.Timestamp("2024-02-29").date(),
    )
    with pytest.raises(LayoutError, match="exchange"):
        LAYOUT.key("crypto_bars", 1, "BTC-USD", "2024-02")  # no exchange in the label
    with pytest.raises(LayoutError):
        LAYOUT.key("crypto_bars", 1, "BTC-USD", "../x:2024-02")


@pytest.mark.parametrize("where", ["memory", "local"])
def test_write_read_per_exchange(where: str, tmp_path: Path) -> None:
    lake = marketlake.open("memory://" if where == "memory" else tmp_path / "lake")
    data = pd.concat([bars("binance"), bars("kraken")])
    res = lake.write("BTC-USD", "crypto_bars", data)
    assert sorted(res.meta.partitions) == [
        "binance:2024-01",
        "binance:2024-02",
        "kraken:2024-01",
        "kraken:2024-02",
    ]
    out = lake.read("BTC-USD", "crypto_bars", "2024-01-31", "2024-02-01")
    assert len(out) == 8
    assert list(out["exchange"][:2]) == ["binance", "kraken"]  # interleaved by time
    assert out["ts"].is_monotonic_increasing
    one_day = lake.read("BTC-USD", "crypto_bars", "2024-02-01", "2024-02-01", columns=["close"])
    assert list(one_day.columns) == ["ts", "close"] and len(one_day) == 4
    assert lake.write("BTC-USD", "crypto_bars", data).objects_written == 0  # idempotent
    before = lake.catalog.snapshot(include_timestamps=False)
    lake.rebuild_catalog()
    assert lake.catalog.snapshot(include_timestamps=False) == before


def test_an_exchange_that_cannot_be_a_key_is_refused_and_nothing_is_written() -> None:
    lake = marketlake.open("memory://")
    lake.write("BTC-USD", "crypto_bars", bars("binance"))
    with pytest.raises(DataValidationError, match="lower-case"):
        lake.write("BTC-USD", "crypto_bars", bars("Bin/ance", start="2024-03-01"))
    assert sorted(lake.meta("BTC-USD", "crypto_bars").partitions) == [  # type: ignore[union-attr]
        "binance:2024-01",
        "binance:2024-02",
    ]
