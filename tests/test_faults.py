"""Faults injected into the object store: batches retry transient faults, surface final ones per
item, never leave a partial object or a dangling ``_meta``, and a fault-free rerun converges to
the bytes of a fault-free run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import marketlake
from marketlake import Lake
from marketlake.errors import ConfigError, StoragePermissionError, TransientStorageError
from marketlake.ingest.batch import RunSummary, resume_batch, run_batch
from marketlake.sources.synthetic import SyntheticSource
from marketlake.storage.consistency import ConsistencyReport, check_lake_consistency
from marketlake.storage.faults import FaultPlan, FaultRule, FaultyStore
from marketlake.storage.meta import META_PREFIX
from marketlake.storage.store import open_store
from tests.test_crash import _same_but_meta_time, no_etag

TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
DATASETS = ["prices", "signals_valuation", "signals_technical"]
# two overlapping batches: the second rewrites February (put_if_match) and creates March
BATCHES = [
    (dt.date(2024, 1, 2), dt.date(2024, 2, 15)),
    (dt.date(2024, 2, 12), dt.date(2024, 3, 28)),
]


_CATALOGS: dict[str, Path] = {}


@pytest.fixture(params=["memory", "local", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh lake URL per backend (memory:// gives a new store at every open; s3 is a fresh
    prefix on the session's SeaweedFS server)."""
    if request.param == "s3":
        url = str(request.getfixturevalue("s3_lake_url"))
        _CATALOGS[url] = tmp_path / "catalog.sqlite"
        return url
    return "memory://" if request.param == "memory" else str(tmp_path / "lake")


def faulty_lake(url: str, plan: FaultPlan, retries: int = 8) -> Lake:
    """A lake whose store injects ``plan``'s faults (none while opening)."""
    inner = open_store(url, fsync=False, retries=retries)
    inner.backoff = 0.0005  # keep retries fast; the policy (attempts, doubling) is unchanged
    with plan.paused():
        return marketlake.open(FaultyStore(inner, plan), catalog=_CATALOGS.get(url))


def run(lake: Lake, start: dt.date, end: dt.date) -> RunSummary:
    return run_batch(lake, SyntheticSource(), TICKERS, DATASETS, start, end, workers=4, processes=1)


def objects(lake: Lake) -> dict[str, bytes]:
    """Every object of the lake (marker, _meta, data) by key, fault-free."""
    store = lake.store
    plan = store.plan if isinstance(store, FaultyStore) else FaultPlan()
    with plan.paused():
        out = {
            i.key: store.get(i.key).data for p in [META_PREFIX, *DATASETS] for i in store.list(p)
        }
        marker = store.get_or_none("_marketlake.json")
    if marker is not None:
        out["_marketlake.json"] = marker.data
    return out


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, bytes], list[Any]]]:
    """Objects and catalog partitions of the two batches run without faults."""
    with marketlake.open(tmp_path_factory.mktemp("ref") / "lake", fsync=False) as lk:
        for start, end in BATCHES:
            assert run(lk, start, end).items_failed == 0
        yield objects(lk), no_etag(lk.catalog.snapshot(include_timestamps=False)["partitions"])


def consistent(lake: Lake, failed: set[tuple[str, str]] | None = None) -> ConsistencyReport:
    """Check the lake; stale entries are allowed only for the (dataset, ticker) items in
    ``failed`` (an interrupted write), problems never."""
    store = lake.store
    plan = store.plan if isinstance(store, FaultyStore) else FaultPlan()
    with plan.paused():
        report = check_lake_consistency(lake, DATASETS)
    assert not report.problems, str(report)
    assert set(report.stale) <= (failed or set()), str(report)
    return report


def assert_converged(lake: Lake, reference: tuple[dict[str, bytes], list[Any]]) -> None:
    ref_objects, ref_parts = reference
    got = objects(lake)
    assert sorted(got) == sorted(ref_objects)
    assert _same_but_meta_time(got, ref_objects)
    assert no_etag(lake.catalog.snapshot(include_timestamps=False)["partitions"]) == ref_parts
    assert consistent(lake).ok


def no_staged_leftovers(url: str) -> None:
    """A local lake's staging directory holds no temporary of a finished write."""
    if url.startswith("memory://"):
        return
    stage = Path(url) / ".marketlake-tmp"
    assert not stage.exists() or list(stage.iterdir()) == []


# --- the plan ---------------------------------------------------------------------------------


def test_rules_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown fault"):
        FaultRule("explode")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown operation"):
        FaultRule("transient", ops=("upload",))
    with pytest.raises(ConfigError, match="probability"):
        FaultRule("transient", probability=1.5)


def test_plan_is_seeded_and_independent_of_call_order() -> None:
    keys = [f"prices/v1/T{i}/2024/01/data.parquet" for i in range(200)]

    def hits(order: list[str], seed: int) -> set[str]:
        plan = FaultPlan([FaultRule("transient", ops=("write",), probability=0.3)], seed=seed)
        return {k for k in order if plan.decide("put_if_match", k) is not None}

    first = hits(keys, 1)
    assert first == hits(list(reversed(keys)), 1)  # same calls hit, whatever the order
    assert first != hits(keys, 2)
    assert 30 < len(first) < 90
    plan = FaultPlan(
        [FaultRule("permission", ops=("get",), pattern="prices/*", skip=1, limit=2)], seed=0
    )
    got = [plan.decide(op, k) is not None for op, k in [("put", keys[0])] + [("get", keys[0])] * 4]
    assert got == [False, False, True, True, False]  # other op; skipped; hit; hit; limit reached
    assert plan.counts() == {"permission:get": 2} and plan.calls["get"] == 4


# --- batches under faults ---------------------------------------------------------------------


def test_transient_faults_are_retried_and_the_batch_converges(
    url: str, reference: tuple[dict[str, bytes], list[Any]]
) -> None:
    plan = FaultPlan(
        [
            FaultRule("timeout", ops=("read",), probability=0.1),
            FaultRule("transient", probability=0.15),
            FaultRule("abort", ops=("write",), probability=0.15),
            FaultRule("lost_response", ops=("write",), probability=0.15),
            FaultRule("delay", ops=("get",), probability=0.05, delay=0.002),
        ],
        seed=11,
    )
    with faulty_lake(url, plan, retries=10) as lk:
        for start, end in BATCHES:
            summary = run(lk, start, end)
            assert summary.failures == [] and summary.status == "completed"
        for fault in ("timeout", "transient", "abort", "lost_response", "delay"):
            assert plan.injected(fault) > 0, plan.counts()
        assert plan.injected("lost_response", "put_if_match") > 0
        assert plan.bytes_sent_before_abort > 0
        assert_converged(lk, reference)
        no_staged_leftovers(url)


def test_final_faults_fail_only_their_items_and_resume_converges(
    url: str, reference: tuple[dict[str, bytes], list[Any]]
) -> None:
    plan = FaultPlan(
        [
            FaultRule("transient", probability=0.1),
            # BBB's prices cannot be written; CCC's signals_technical _meta cannot be written
            FaultRule("permission", ops=("write",), pattern="prices/v1/BBB/*"),
            FaultRule("permission", ops=("write",), pattern="_meta/v1/signals_technical/CCC.*"),
        ],
        seed=3,
    )
    denied = {("prices", "BBB"), ("signals_technical", "CCC")}
    with faulty_lake(url, plan) as lk:
        summary = run(lk, *BATCHES[0])
        assert summary.status == "failed"
        assert {(f.dataset, f.ticker) for f in summary.failures} == denied
        assert summary.items_completed == len(TICKERS) * len(DATASETS) - 2
        failed = lk.catalog.run_items(summary.run_id, "failed")
        assert {(i.dataset, i.ticker) for i in failed} == denied
        for item in failed:
            assert item.error and "permission denied" in item.error, item.error
            assert "\n" not in item.error
        # final faults are not retried: one attempt per denied item
        assert plan.injected("permission") == 2
        # CCC's signals_technical data landed without its _meta: stale, never dangling
        report = consistent(lk, denied)
        assert ("signals_technical", "CCC") in report.stale
        assert lk.meta("CCC", "signals_technical") is None
        assert lk.meta("BBB", "prices") is None
        # the same run, resumed without faults, finishes; the second batch runs clean
        plan.enabled = False
        resumed = resume_batch(lk, summary.run_id, source=SyntheticSource(), processes=1)
        assert resumed.status == "completed" and resumed.items_total == 2
        assert lk.catalog.get_run(summary.run_id).status == "completed"
        assert run(lk, *BATCHES[1]).status == "completed"
        assert_converged(lk, reference)


def test_dying_mid_upload_stores_nothing(
    url: str, reference: tuple[dict[str, bytes], list[Any]]
) -> None:
    plan = FaultPlan([FaultRule("abort", ops=("write",), pattern="prices/*", delay=0.001)])
    with faulty_lake(url, plan, retries=3) as lk:
        summary = run(lk, *BATCHES[0])
        prices_failed = {(f.dataset, f.ticker) for f in summary.failures}
        assert prices_failed == {("prices", t) for t in TICKERS}
        assert all("connection lost after sending" in (f.error or "") for f in summary.failures)
        assert plan.injected("abort") == 3 * len(TICKERS)  # every attempt of the first partition
        # nothing of prices is visible: no partial object, no _meta, no staged temporary
        assert not [k for k in objects(lk) if k.startswith(("prices/", "_meta/v1/prices/"))]
        consistent(lk)
        no_staged_leftovers(url)
        plan.enabled = False
        assert resume_batch(lk, summary.run_id, source=SyntheticSource()).status == "completed"
        assert run(lk, *BATCHES[1]).status == "completed"
        assert_converged(lk, reference)


def test_lost_responses_are_resolved_or_surfaced(
    url: str, reference: tuple[dict[str, bytes], list[Any]]
) -> None:
    """Every partition write is applied but its response lost. A conditional put retried by the
    store then meets its own write (412 -> ConflictError) and the writer re-reads and converges;
    a local CAS re-applies the same bytes under its lock until retries run out."""
    plan = FaultPlan([FaultRule("lost_response", ops=("write",), pattern="prices/*")])
    with faulty_lake(url, plan, retries=3) as lk:
        summary = run(lk, *BATCHES[0])
        failed = {(f.dataset, f.ticker) for f in summary.failures}
        if not lk.store.is_local:  # memory and S3: the retried conditional put gets a 412
            assert failed == set()  # the writer noticed its own write and went on
        else:
            assert failed == {("prices", t) for t in TICKERS}
            assert all("response was lost" in (f.error or "") for f in summary.failures)
        # the first partition of every ticker changed though the client saw an error: stale
        # (the object is not in _meta yet) but never dangling or partial
        consistent(lk, failed)
        plan.enabled = False
        assert resume_batch(lk, summary.run_id, source=SyntheticSource()).status == "completed"
        assert run(lk, *BATCHES[1]).status == "completed"
        assert_converged(lk, reference)


def test_single_write_surfaces_typed_errors(tmp_path: Path) -> None:
    from tests.conftest import price_table, weekdays

    table = price_table(weekdays(dt.date(2024, 1, 1), dt.date(2024, 1, 31)))
    plan = FaultPlan([FaultRule("permission", ops=("put_if_match",), pattern="_meta/*")])
    with faulty_lake(str(tmp_path / "lake"), plan) as lk:
        with pytest.raises(StoragePermissionError, match="permission denied"):
            lk.write("AAPL", "prices", table)
        assert isinstance(lk.store, FaultyStore)
        plan.enabled = False
        lk.write("AAPL", "prices", table)
        lk.store.plan = plan = FaultPlan([FaultRule("timeout", ops=("get",))])
        with pytest.raises(TransientStorageError, match="timed out"):
            lk.read("AAPL", "prices", "2024-01-01", "2024-01-31")
        assert plan.calls["get"] == 8  # every attempt went through the store's retry loop
        plan.enabled = False
        assert lk.read("AAPL", "prices", output="arrow").num_rows == table.num_rows
        assert consistent(lk).ok


def test_s3_through_a_lossy_slow_network_converges(
    s3_lake_url: str, tmp_path: Path, reference: tuple[dict[str, bytes], list[Any]]
) -> None:
    """The real S3 server behind the TCP proxy: 2 ms each way, 30% of new connections reset.
    Retries absorb it; the lake converges."""
    from marketlake.testing.proxy import TcpProxy

    endpoint = s3_lake_url.split("?endpoint=", 1)[1]
    with TcpProxy.for_url(
        endpoint, latency_up=0.002, latency_down=0.002, reset_probability=0.3, seed=1
    ) as proxy:
        url = s3_lake_url.replace(endpoint, proxy.url)
        inner = open_store(url, retries=8)
        inner.backoff = 0.001
        with marketlake.open(inner, catalog=tmp_path / "catalog.sqlite") as lk:
            summary = run(lk, *BATCHES[0])
            assert summary.failures == []
            summary = run(lk, *BATCHES[1])
            failed = {(f.dataset, f.ticker) for f in summary.failures}
            consistent(lk, failed)
            if failed:
                assert resume_batch(lk, summary.run_id, source=SyntheticSource()).failures == []
            assert_converged(lk, reference)
        assert proxy.stats.resets > 0
