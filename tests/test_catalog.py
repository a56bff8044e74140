"""Tests of the SQLite catalog: migrations, upserts, watermarks, runs, threads."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake.catalog import (
    CATALOG_SCHEMA_VERSION,
    MIGRATIONS,
    AssetRow,
    Catalog,
    Migration,
    PartitionRow,
    ProgressRow,
    RunItemRow,
    utc_now_iso,
)
from marketlake.catalog import sqlite as catalog_sqlite
from marketlake.errors import CatalogError, RunNotFoundError

D = dt.date


@pytest.fixture(params=["memory", "file"])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    path = None if request.param == "memory" else tmp_path / "cat.sqlite"
    with Catalog.open(path) as c:
        yield c


def part(
    ticker: str = "AAPL",
    period: str = "2024-01",
    dataset: str = "prices",
    rows: int = 20,
    **kw: object,
) -> PartitionRow:
    fields: dict[str, object] = {
        "dataset": dataset,
        "ticker": ticker,
        "period": period,
        "object_key": f"{dataset}/v1/{ticker}/{period.replace('-', '/')}/data.parquet",
        "source": "yfinance",
        "row_count": rows,
        "min_date": D(2024, 1, 2),
        "max_date": D(2024, 1, 31),
        "bytes": 1234,
        "sha256": "ab" * 32,
        "etag": '"e1"',
        "updated_at": "2024-02-01T00:00:00.000000Z",
    }
    fields.update(kw)
    return PartitionRow(**fields)  # type: ignore[arg-type]


# --- opening and migrations ----------------------------------------------------------------------


def test_fresh_catalog_gets_current_version(cat: Catalog) -> None:
    assert cat.schema_version == CATALOG_SCHEMA_VERSION == MIGRATIONS[-1].version
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_file_catalog_creates_parents_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "catalog.sqlite"
    with Catalog.open(path) as c:
        assert c.path == str(path)
        assert path.exists()
        assert c.schema_version == CATALOG_SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_memory_catalog(tmp_path: Path) -> None:
    for arg in (None, ":memory:"):
        with Catalog.open(arg) as c:
            assert c.path == ":memory:"
            c.upsert_partitions([part()])
            assert len(c.partitions()) == 1
    assert not list(tmp_path.iterdir())


def test_reopen_is_a_noop_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    with Catalog.open(path) as c:
        c.upsert_partitions([part()])
    conn = sqlite3.connect(path)
    before = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    conn.close()
    with Catalog.open(path) as c:
        assert c.schema_version == CATALOG_SCHEMA_VERSION
        assert c.partitions() == [part()]
    conn = sqlite3.connect(path)
    after = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    conn.close()
    assert before == after
    assert len(after) == len(MIGRATIONS)


def test_newer_schema_version_raises(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    Catalog.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
        (CATALOG_SCHEMA_VERSION + 1, utc_now_iso()),
    )
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError, match="upgrade marketlake") as info:
        Catalog.open(path)
    assert str(CATALOG_SCHEMA_VERSION + 1) in str(info.value)


def test_missing_migrations_are_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cat.sqlite"
    with Catalog.open(path) as c:
        c.upsert_partitions([part()])
    extra = Migration(
        version=CATALOG_SCHEMA_VERSION + 1,
        name="test table",
        statements=("CREATE TABLE extra_test (x INTEGER NOT NULL)",),
    )
    monkeypatch.setattr(catalog_sqlite, "MIGRATIONS", (*MIGRATIONS, extra))
    with Catalog.open(path) as c:
        assert c.schema_version == CATALOG_SCHEMA_VERSION + 1
        assert c.partitions() == [part()]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM extra_test").fetchone() == (0,)
    conn.close()


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cat.sqlite"
    Catalog.open(path).close()
    broken = Migration(
        version=CATALOG_SCHEMA_VERSION + 1,
        name="broken",
        statements=("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"),
    )
    monkeypatch.setattr(catalog_sqlite, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(CatalogError):
        Catalog.open(path)
    monkeypatch.setattr(catalog_sqlite, "MIGRATIONS", MIGRATIONS)
    with Catalog.open(path) as c:
        assert c.schema_version == CATALOG_SCHEMA_VERSION
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "half_done" not in tables


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CatalogError, match="not a marketlake catalog"):
        Catalog.open(path)


def test_directory_path_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        Catalog.open(tmp_path)


def test_closed_catalog_raises() -> None:
    c = Catalog.open(None)
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(CatalogError, match="closed"):
        c.partitions()


# --- assets --------------------------------------------------------------------------------------


def test_upsert_assets_keeps_first_seen(cat: Catalog) -> None:
    t0, t1 = "2024-01-01T00:00:00.000000Z", "2024-06-01T00:00:00.000000Z"
    cat.upsert_assets(
        [
            AssetRow(ticker="MSFT", source="yfinance", first_seen=t0, last_seen=t0),
            AssetRow(ticker="AAPL", source="yfinance", first_seen=t0, last_seen=t0),
        ]
    )
    cat.upsert_assets(
        [
            AssetRow(
                ticker="MSFT",
                source="yfinance",
                exchange="XNAS",
                active=False,
                frequency="1m",
                first_seen=t1,
                last_seen=t1,
            )
        ]
    )
    assets = cat.assets()
    assert [(a.ticker, a.source) for a in assets] == [("AAPL", "yfinance"), ("MSFT", "yfinance")]
    msft = assets[1]
    assert msft == AssetRow(
        ticker="MSFT",
        source="yfinance",
        exchange="XNAS",
        active=False,
        frequency="1m",
        first_seen=t0,
        last_seen=t1,
    )
    assert [a.ticker for a in cat.assets(active_only=True)] == ["AAPL"]


# --- partitions ----------------------------------------------------------------------------------


def test_upsert_partitions_roundtrip_and_order(cat: Catalog) -> None:
    rows = [
        part("MSFT", "2024-02"),
        part("AAPL", "2024-02"),
        part("AAPL", "2024-01"),
        part("AAPL", "all", dataset="fundamentals", min_date=None, max_date=None, etag=None),
    ]
    cat.upsert_partitions(rows)
    got = cat.partitions()
    assert [(p.dataset, p.ticker, p.period) for p in got] == [
        ("fundamentals", "AAPL", "all"),
        ("prices", "AAPL", "2024-01"),
        ("prices", "AAPL", "2024-02"),
        ("prices", "MSFT", "2024-02"),
    ]
    assert got[1] == part("AAPL", "2024-01")
    assert got[0].min_date is None and got[0].etag is None
    assert isinstance(got[1].min_date, dt.date)
    assert [p.period for p in cat.partitions(dataset="prices", ticker="AAPL")] == [
        "2024-01",
        "2024-02",
    ]
    assert [p.ticker for p in cat.partitions(ticker="MSFT")] == ["MSFT"]
    assert cat.partitions(dataset="nope") == []

    updated = part("AAPL", "2024-01", rows=21, max_date=D(2024, 2, 1), etag='"e2"')
    cat.upsert_partitions([updated])
    assert cat.partitions(dataset="prices", ticker="AAPL")[0] == updated
    assert len(cat.partitions()) == 4


def test_partition_datetime_is_reduced_to_date(cat: Catalog) -> None:
    cat.upsert_partitions([part(min_date=dt.datetime(2024, 1, 2, 15, 30))])
    assert cat.partitions()[0].min_date == D(2024, 1, 2)


def test_replace_partitions(cat: Catalog) -> None:
    cat.upsert_partitions([part("AAPL"), part("MSFT"), part("GOOG")])
    cat.replace_partitions([part("TSLA"), part("AAPL", rows=5)])
    assert [(p.ticker, p.row_count) for p in cat.partitions()] == [("AAPL", 5), ("TSLA", 20)]


def test_replace_partitions_is_atomic(cat: Catalog) -> None:
    cat.upsert_partitions([part("AAPL"), part("MSFT")])
    before = cat.snapshot()
    bad = part("ZZZ", object_key=None)  # violates NOT NULL inside the transaction
    with pytest.raises(CatalogError):
        cat.replace_partitions([part("TSLA"), bad])
    assert cat.snapshot() == before


def test_snapshot(cat: Catalog) -> None:
    cat.upsert_assets([AssetRow(ticker="B", source="s"), AssetRow(ticker="A", source="s")])
    cat.upsert_partitions([part("MSFT"), part("AAPL")])
    snap = cat.snapshot()
    assert set(snap) == {"assets", "partitions"}
    assert [r[0] for r in snap["assets"]] == ["A", "B"]
    assert snap["partitions"] == sorted(snap["partitions"])
    assert snap["partitions"][0][:3] == ("prices", "AAPL", "2024-01")
    assert snap["partitions"][0][6] == "2024-01-02"
    bare = cat.snapshot(include_timestamps=False)
    assert len(bare["assets"][0]) == 5
    assert len(bare["partitions"][0]) == 11
    assert [r[:-1] for r in snap["partitions"]] == bare["partitions"]


def test_rebuilt_catalog_equals_live_one(tmp_path: Path) -> None:
    rows = [part(t, p) for t in ("AAPL", "MSFT") for p in ("2024-01", "2024-02")]
    with Catalog.open(tmp_path / "live.sqlite") as live, Catalog.open(None) as rebuilt:
        for r in rows:  # the live catalog grows row by row, with overwrites
            live.upsert_partitions([part(r.ticker, r.period, rows=1), r])
        rebuilt.replace_partitions(reversed(rows))
        assert live.snapshot() == rebuilt.snapshot()


# --- collection progress -------------------------------------------------------------------------


def prog(last: dt.date | None, ticker: str = "AAPL", at: str | None = None) -> ProgressRow:
    return ProgressRow(
        dataset="prices",
        ticker=ticker,
        source="yfinance",
        last_date=last,
        updated_at=at or utc_now_iso(),
    )


def test_progress_never_moves_backwards(cat: Catalog) -> None:
    cat.advance_progress([prog(D(2024, 5, 10), at="2024-05-10T22:00:00.000000Z")])
    cat.advance_progress([prog(D(2024, 5, 3), at="2024-05-11T22:00:00.000000Z")])  # a backfill
    cat.advance_progress([prog(None, at="2024-05-12T22:00:00.000000Z")])
    cat.advance_progress([prog(D(2024, 5, 10), at="2024-05-13T22:00:00.000000Z")])
    (row,) = cat.progress()
    assert row.last_date == D(2024, 5, 10)
    assert row.updated_at == "2024-05-10T22:00:00.000000Z"  # untouched by non-advances
    cat.advance_progress([prog(D(2024, 5, 13), at="2024-05-14T22:00:00.000000Z")])
    (row,) = cat.progress()
    assert row.last_date == D(2024, 5, 13)
    assert row.updated_at == "2024-05-14T22:00:00.000000Z"


def test_progress_from_nothing_and_filters(cat: Catalog) -> None:
    cat.advance_progress([prog(None, "MSFT"), prog(D(2024, 1, 2), "AAPL")])
    assert [(p.ticker, p.last_date) for p in cat.progress()] == [
        ("AAPL", D(2024, 1, 2)),
        ("MSFT", None),
    ]
    cat.advance_progress([prog(D(2024, 1, 3), "MSFT")])
    assert cat.progress(ticker="MSFT")[0].last_date == D(2024, 1, 3)
    assert cat.progress(dataset="prices", source="other") == []
    # Several rows for one key in one batch: the latest date wins whatever the order.
    cat.advance_progress([prog(D(2024, 3, 1), "AAPL"), prog(D(2024, 2, 1), "AAPL")])
    assert cat.progress(ticker="AAPL")[0].last_date == D(2024, 3, 1)


@settings(max_examples=50, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.one_of(st.none(), st.dates(D(1990, 1, 1), D(2100, 12, 31))), max_size=4),
        max_size=6,
    )
)
def test_progress_is_the_running_maximum(batches: list[list[dt.date | None]]) -> None:
    with Catalog.open(None) as c:
        for batch in batches:
            c.advance_progress([prog(d) for d in batch])
        dates = [d for batch in batches for d in batch if d is not None]
        rows = c.progress()
        if not any(batch for batch in batches):
            assert rows == []
        else:
            assert rows[0].last_date == (max(dates) if dates else None)


# --- runs ----------------------------------------------------------------------------------------


ITEMS = [("AAPL", "prices"), ("MSFT", "prices"), ("AAPL", "fundamentals"), ("GOOG", "prices")]


def test_run_lifecycle(cat: Catalog) -> None:
    cat.create_run("r1", "daily", "yfinance", {"start": D(2024, 1, 2), "tickers": ("AAPL",)}, ITEMS)
    run = cat.get_run("r1")
    assert run.status == "running"
    assert run.params == {"start": "2024-01-02", "tickers": ["AAPL"]}
    assert (run.items_total, run.items_completed, run.items_failed) == (4, 0, 0)
    assert run.finished_at is None
    assert run.started_at.endswith("Z")
    assert {(i.ticker, i.dataset, i.status) for i in cat.run_items("r1")} == {
        (t, d, "pending") for t, d in ITEMS
    }

    cat.record_items(
        "r1",
        [
            RunItemRow(
                run_id="r1",
                ticker="AAPL",
                dataset="prices",
                status="completed",
                rows_fetched=22,
                rows_added=21,
                rows_updated=1,
                row_count=500,
                started_at="2024-01-02T22:00:00.000000Z",
            ),
            RunItemRow(
                run_id="r1", ticker="MSFT", dataset="prices", status="failed", error="HTTP 404"
            ),
            RunItemRow(run_id="r1", ticker="GOOG", dataset="prices", status="running"),
        ],
    )
    live = cat.get_run("r1")  # counts are live while the run is unfinished
    assert (live.items_total, live.items_completed, live.items_failed) == (4, 1, 1)
    (aapl,) = cat.run_items("r1", status="completed")
    assert (aapl.rows_fetched, aapl.rows_added, aapl.rows_updated, aapl.row_count) == (
        22,
        21,
        1,
        500,
    )
    assert aapl.started_at == "2024-01-02T22:00:00.000000Z"
    assert aapl.finished_at is not None
    (msft,) = cat.run_items("r1", status="failed")
    assert msft.error == "HTTP 404"
    assert cat.unfinished_items("r1") == [
        ("AAPL", "fundamentals"),
        ("GOOG", "prices"),
        ("MSFT", "prices"),
    ]

    done = cat.finish_run("r1", "failed", error="1 item failed")
    assert done == cat.get_run("r1")
    assert done.status == "failed"
    assert done.error == "1 item failed"
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert (done.items_total, done.items_completed, done.items_failed) == (4, 1, 1)

    # Resume: reset what is unfinished, do it, finish with a derived status.
    todo = cat.unfinished_items("r1")
    cat.reset_items("r1", todo)
    resumed = cat.get_run("r1")
    assert resumed.status == "running" and resumed.finished_at is None and resumed.error is None
    msft = next(i for i in cat.run_items("r1") if i.ticker == "MSFT")
    assert (msft.status, msft.error, msft.finished_at) == ("pending", None, None)
    cat.record_items(
        "r1",
        [
            RunItemRow(run_id="r1", ticker=t, dataset=d, status="completed", rows_added=1)
            for t, d in todo
        ],
    )
    assert cat.unfinished_items("r1") == []
    final = cat.finish_run("r1")
    assert final.status == "completed"
    assert (final.items_total, final.items_completed, final.items_failed) == (4, 4, 0)
    # The first completed item kept its numbers through the resume.
    aapl = next(i for i in cat.run_items("r1") if (i.ticker, i.dataset) == ("AAPL", "prices"))
    assert aapl.rows_fetched == 22


def test_finish_run_derives_failed_when_items_left(cat: Catalog) -> None:
    cat.create_run("r", "backfill", "yfinance", {}, ITEMS[:2])
    cat.record_items(
        "r", [RunItemRow(run_id="r", ticker="AAPL", dataset="prices", status="completed")]
    )
    run = cat.finish_run("r")
    assert run.status == "failed"
    assert (run.items_total, run.items_completed, run.items_failed) == (2, 1, 0)


def test_create_run_dedupes_items_and_rejects_duplicates(cat: Catalog) -> None:
    cat.create_run("r", "daily", "yfinance", {}, [*ITEMS, ITEMS[0]])
    assert cat.get_run("r").items_total == len(ITEMS)
    with pytest.raises(CatalogError, match="already exists"):
        cat.create_run("r", "daily", "yfinance", {}, ITEMS)
    with pytest.raises(CatalogError, match="JSON"):
        cat.create_run("r2", "daily", "yfinance", {"x": object()}, ITEMS)
    with pytest.raises(RunNotFoundError):
        cat.get_run("r2")  # nothing half-created


def test_bad_item_writes(cat: Catalog) -> None:
    cat.create_run("r", "daily", "yfinance", {}, ITEMS)
    with pytest.raises(CatalogError, match="status"):
        cat.record_items(
            "r", [RunItemRow(run_id="r", ticker="AAPL", dataset="prices", status="done")]
        )
    with pytest.raises(CatalogError, match="other"):
        cat.record_items(
            "r", [RunItemRow(run_id="other", ticker="AAPL", dataset="prices", status="failed")]
        )
    with pytest.raises(CatalogError, match="status"):
        cat.finish_run("r", "running")
    assert cat.unfinished_items("r") == sorted(ITEMS)


def test_unknown_run_errors(cat: Catalog) -> None:
    with pytest.raises(RunNotFoundError) as info:
        cat.get_run("nope")
    err = info.value
    assert isinstance(err, CatalogError)
    assert isinstance(info.value, KeyError)
    assert "'nope'" in str(err)
    assert "marketlake runs" in str(err)
    assert err.context["run_id"] == "nope"
    item = RunItemRow(run_id="nope", ticker="AAPL", dataset="prices", status="completed")
    calls: list[Callable[[], object]] = [
        lambda: cat.record_items("nope", [item]),
        lambda: cat.reset_items("nope", ITEMS),
        lambda: cat.finish_run("nope", "completed"),
        lambda: cat.run_items("nope"),
        lambda: cat.unfinished_items("nope"),
    ]
    for call in calls:
        with pytest.raises(RunNotFoundError, match="marketlake runs"):
            call()


def test_list_runs_newest_first(cat: Catalog) -> None:
    for i in range(5):
        cat.create_run(f"run-{i}", "daily", "yfinance", {"i": i}, ITEMS[:1])
        time.sleep(0.002)
    cat.finish_run("run-1", "completed")
    assert [r.run_id for r in cat.list_runs()] == [f"run-{i}" for i in reversed(range(5))]
    assert [r.run_id for r in cat.list_runs(limit=2)] == ["run-4", "run-3"]
    assert cat.list_runs()[3].status == "completed"
    with pytest.raises(CatalogError):
        cat.list_runs(limit=0)


# --- concurrency and speed -----------------------------------------------------------------------


def test_threads_record_items_concurrently(tmp_path: Path) -> None:
    n_threads, per_thread = 16, 60
    items = [(f"T{t:02d}_{i:03d}", "prices") for t in range(n_threads) for i in range(per_thread)]
    with Catalog.open(tmp_path / "cat.sqlite") as c:
        c.create_run("r", "daily", "yfinance", {}, items)
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads + 1)

        def work(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    ticker = f"T{t:02d}_{i:03d}"
                    status = "failed" if i % 10 == 0 else "completed"
                    c.record_items(
                        "r",
                        [
                            RunItemRow(
                                run_id="r",
                                ticker=ticker,
                                dataset="prices",
                                status=status,
                                rows_added=i,
                            )
                        ],
                    )
                    c.advance_progress([prog(D(2024, 1, 1) + dt.timedelta(days=i), ticker)])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def read() -> None:
            try:
                barrier.wait()
                for _ in range(50):
                    c.get_run("r")
                    c.unfinished_items("r")
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        threads.append(threading.Thread(target=read))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        run = c.finish_run("r")
        failed = n_threads * len(range(0, per_thread, 10))
        assert (run.items_total, run.items_failed) == (len(items), failed)
        assert run.items_completed == len(items) - failed
        assert run.status == "failed"
        assert len(c.progress()) == len(items)


def test_two_connections_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    with Catalog.open(path) as a, Catalog.open(path) as b:
        errors: list[BaseException] = []

        def write(c: Catalog, prefix: str) -> None:
            try:
                for i in range(100):
                    c.upsert_partitions([part(f"{prefix}{i:03d}")])
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [
            threading.Thread(target=write, args=(a, "A")),
            threading.Thread(target=write, args=(b, "B")),
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert len(a.partitions()) == len(b.partitions()) == 200


def test_bulk_writes_in_one_transaction(tmp_path: Path) -> None:
    n = 20_000
    rows = [part(f"T{i:05d}", "2024-01") for i in range(n)]
    items = [(f"T{i:05d}", "prices") for i in range(n)]
    results = [
        RunItemRow(run_id="r", ticker=t, dataset=d, status="completed", rows_added=1)
        for t, d in items
    ]
    with Catalog.open(tmp_path / "cat.sqlite") as c:
        c.create_run("r", "daily", "yfinance", {}, items)
        c.upsert_partitions(rows)
        c.record_items("r", results)
        assert len(c.partitions()) == n
        assert c.finish_run("r").items_completed == n
