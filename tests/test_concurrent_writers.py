"""Concurrent writers lose nothing: 4 processes x 200 tickers run daily batches into the SAME
monthly partitions (same ticker and month, different dates per process), on local disk and on a
real S3 server. Conditional writes detect every race; the loser re-reads, re-merges and retries.
Afterwards every row is present exactly once and each ``_meta`` agrees with the data."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest

import marketlake
from marketlake.errors import ConflictError
from marketlake.ingest.batch import run_batch
from marketlake.sources.synthetic import SyntheticSource

PROCESSES = 4
TICKERS = [f"C{i:03d}" for i in range(200)]
# the first eight NYSE sessions of 2024: all in one monthly partition per ticker
SESSIONS = [
    dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11)
]  # process i collects sessions i and i + 4, one daily batch each


def _writer(
    url: str, catalog: str, index: int, env: dict[str, str], barrier: Any
) -> None:  # runs in a spawned process
    os.environ.update(env)
    lake = marketlake.open(url, catalog=catalog, fsync=False)
    store = lake.writer.store
    plain_put_if_match = store.put_if_match
    conflicts = 0

    def counting_put_if_match(key: str, data: bytes, etag: str | None) -> str | None:
        nonlocal conflicts
        try:
            return plain_put_if_match(key, data, etag)
        except ConflictError:
            conflicts += 1
            raise

    # an instance attribute survives the writer's copy of the store (with_fsync)
    store.put_if_match = counting_put_if_match  # type: ignore[method-assign]
    try:
        barrier.wait(timeout=120)  # start the batches together: maximum contention
        for day in SESSIONS[index::PROCESSES]:
            summary = run_batch(
                lake, SyntheticSource(seed=7), TICKERS, ["prices"], day, day, workers=8, processes=1
            )
            if summary.status != "completed":
                raise SystemExit(f"batch {day} failed: {[f.error for f in summary.failures][:3]}")
        Path(catalog + ".conflicts").write_text(str(conflicts))
    finally:
        lake.close()


def _run_writers(url: str, tmp_path: Path, env: dict[str, str]) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [
        ctx.Process(target=_writer, args=(url, str(tmp_path / f"cat{i}.sqlite"), i, env, barrier))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0] * PROCESSES, f"writer exit codes {codes}"
    lost = sum(int((tmp_path / f"cat{i}.sqlite.conflicts").read_text()) for i in range(PROCESSES))
    print(f"{lost} conditional writes lost a race and were retried")  # shown with pytest -s


def _check_lake(url: str, tmp_path: Path) -> None:
    # the reference: one writer, all sessions at once
    with marketlake.open("memory://") as ref:
        run_batch(ref, SyntheticSource(seed=7), TICKERS, ["prices"], SESSIONS[0], SESSIONS[-1])
        expected = {
            t: ref.read(t, "prices", SESSIONS[0], SESSIONS[-1], output="arrow") for t in TICKERS
        }
    with marketlake.open(url, catalog=tmp_path / "check.sqlite", fsync=False) as lake:
        batch = lake.read_batch(TICKERS, "prices", SESSIONS[0], SESSIONS[-1], output="arrow")
        assert not batch.errors and not batch.missing
        assert batch.data.num_rows == len(TICKERS) * len(SESSIONS)  # every row exactly once
        for t in TICKERS:
            got = lake.read(t, "prices", SESSIONS[0], SESSIONS[-1], output="arrow")
            assert got.column("date").to_pylist() == SESSIONS, t
            assert got.equals(expected[t]), t
            meta = lake.meta(t, "prices")
            assert meta is not None and meta.row_count == len(SESSIONS), t
            assert (meta.min_date, meta.max_date) == (SESSIONS[0], SESSIONS[-1])
            (part,) = meta.partitions.values()
            assert part.rows == len(SESSIONS)
            head = lake.store.head(part.key)
            assert head is not None and head.size == part.bytes
        # a catalog rebuilt from _meta sees every ticker with the full row count
        assert lake.rebuild_catalog() == len(TICKERS)
        rows = lake.catalog.partitions(dataset="prices")
        assert len(rows) == len(TICKERS) and {r.row_count for r in rows} == {len(SESSIONS)}


@pytest.mark.slow
def test_concurrent_writers_local(tmp_path: Path) -> None:
    url = str(tmp_path / "lake")
    _run_writers(url, tmp_path, {})
    _check_lake(url, tmp_path)


@pytest.mark.slow
def test_concurrent_writers_s3(s3_lake_url: str, s3_server: Any, tmp_path: Path) -> None:
    _run_writers(s3_lake_url, tmp_path, s3_server.env())
    _check_lake(s3_lake_url, tmp_path)
