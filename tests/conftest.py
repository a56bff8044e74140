"""Shared fixtures: lakes on every local backend, small price tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import marketlake
from marketlake import Lake
from marketlake.schemas.datasets import PRICES


def price_table(days: list[dt.date], base: float = 100.0, volume: int = 1000) -> pa.Table:
    """A valid ``prices`` table with one row per day (values derived from the day)."""
    n = len(days)
    close = [base + d.toordinal() % 17 for d in days]
    return pa.table(
        {
            "date": pa.array(days, pa.date32()),
            "open": pa.array([c - 0.5 for c in close], pa.float64()),
            "high": pa.array([c + 1.0 for c in close], pa.float64()),
            "low": pa.array([c - 1.0 for c in close], pa.float64()),
            "close": pa.array(close, pa.float64()),
            "adj_close": pa.array([c * 0.99 for c in close], pa.float64()),
            "volume": pa.array([volume + i for i in range(n)], pa.int64()),
        },
        schema=PRICES.schema,
    )


def weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    out = []
    d = start
    while d <= end:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


@pytest.fixture(params=["memory", "local"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    """A fresh lake on each local backend (S3 is covered by the storage suite of issue 3)."""
    url = "memory://" if request.param == "memory" else str(tmp_path / "lake")
    lk = marketlake.open(url, fsync=False)
    yield lk
    lk.close()


@pytest.fixture
def local_lake(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(tmp_path / "lake", fsync=False)
    yield lk
    lk.close()
