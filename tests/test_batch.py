"""Batch ingest: per-item results, failures isolated, resume, idempotent re-runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from marketlake import Lake
from marketlake.errors import MarketlakeError, SourceError, TransientSourceError
from marketlake.ingest.batch import resume_batch, run_batch
from marketlake.sources.base import Source, SourceRequest
from tests.conftest import price_table, weekdays


class FakeSource(Source):
    """Deterministic prices; fails for chosen tickers; transient failures N times."""

    name = "fake"
    datasets = ("prices",)

    def __init__(
        self,
        failing: set[str] | None = None,
        flaky: dict[str, int] | None = None,
        bad_rows: set[str] | None = None,
    ) -> None:
        self.failing = failing or set()
        self.flaky = dict(flaky or {})
        self.bad_rows = bad_rows or set()
        self.calls: list[str] = []

    def fetch(self, request: SourceRequest) -> Any:
        self.calls.append(request.ticker)
        if request.ticker in self.failing:
            raise SourceError(f"{request.ticker}: symbol not found", ticker=request.ticker)
        if self.flaky.get(request.ticker, 0) > 0:
            self.flaky[request.ticker] -= 1
            raise TransientSourceError("rate limited", ticker=request.ticker)
        return weekdays(request.start, request.end)

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        if not raw:
            return {}
        table = price_table(raw, base=50.0 + len(request.ticker))
        if request.ticker in self.bad_rows:
            table = table.set_column(6, "volume", pa.array([-1] * table.num_rows, pa.int64()))
        return {"prices": table}


D1, D2 = dt.date(2024, 1, 2), dt.date(2024, 2, 28)


def test_batch_writes_and_records_items(lake: Lake) -> None:
    s = run_batch(lake, FakeSource(), ["aapl", "MSFT", "IBM"], ["prices"], D1, D2, workers=4)
    n = len(weekdays(D1, D2))
    assert (s.status, s.items_total, s.items_completed, s.items_failed) == ("completed", 3, 3, 0)
    assert s.rows_fetched == s.rows_added == 3 * n and s.objects_written == 3 * 3
    run = lake.catalog.get_run(s.run_id)
    assert run.status == "completed" and run.params["start"] == "2024-01-02"
    items = lake.catalog.run_items(s.run_id)
    assert {(i.ticker, i.status, i.rows_added, i.row_count) for i in items} == {
        (t, "completed", n, n) for t in ("AAPL", "MSFT", "IBM")
    }
    assert len(lake.catalog.partitions(dataset="prices")) == 6
    assert {p.last_date for p in lake.catalog.progress()} == {D2}


def test_rerun_changes_nothing(lake: Lake) -> None:
    run_batch(lake, FakeSource(), ["AAPL", "MSFT"], ["prices"], D1, D2)
    parts = lake.catalog.partitions()
    again = run_batch(lake, FakeSource(), ["AAPL", "MSFT"], ["prices"], D1, D2)
    assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    assert lake.catalog.partitions() == parts


def test_failures_are_isolated_and_resume_redoes_only_them(lake: Lake) -> None:
    src = FakeSource(failing={"BAD"}, bad_rows={"NEG"})
    s = run_batch(lake, src, ["AAPL", "BAD", "NEG", "MSFT"], ["prices"], D1, D2, workers=2)
    assert (s.status, s.items_completed, s.items_failed) == ("failed", 2, 2)
    errors = {f.ticker: f.error for f in s.failures}
    assert "symbol not found" in errors["BAD"] and "negative" in errors["NEG"]
    assert lake.read("NEG", "prices").empty  # nothing half-written
    assert sorted(lake.catalog.unfinished_items(s.run_id)) == [("BAD", "prices"), ("NEG", "prices")]
    fixed = FakeSource()
    r = resume_batch(lake, s.run_id, source=fixed)
    assert sorted(fixed.calls) == ["BAD", "NEG"]
    assert (r.run_id, r.status, r.items_total, r.items_failed) == (s.run_id, "completed", 2, 0)
    assert lake.catalog.get_run(s.run_id).status == "completed"
    assert lake.catalog.unfinished_items(s.run_id) == []


def test_transient_source_errors_are_retried(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("marketlake.ingest.batch.RETRY_BACKOFF", 0.001)
    src = FakeSource(flaky={"AAPL": 2})
    s = run_batch(lake, src, ["AAPL"], ["prices"], D1, D1, fetch_retries=3)
    assert s.items_failed == 0 and src.calls == ["AAPL"] * 3
    src = FakeSource(flaky={"AAPL": 5})
    s = run_batch(lake, src, ["AAPL"], ["prices"], D2, D2, fetch_retries=2)
    assert s.items_failed == 1 and "rate limited" in (s.failures[0].error or "")


def test_no_data_writes_no_partition(lake: Lake) -> None:
    saturday = dt.date(2024, 1, 6)
    s = run_batch(lake, FakeSource(), ["AAPL"], ["prices"], saturday, saturday)
    assert s.items_completed == 1 and s.objects_written == 0
    assert (
        lake.catalog.partitions() == []
        and lake.store.head("prices/v1/AAPL/2024/01/data.parquet") is None
    )


def test_bad_batch_arguments(lake: Lake) -> None:
    with pytest.raises(MarketlakeError, match="does not provide"):
        run_batch(lake, FakeSource(), ["AAPL"], ["fundamentals"], D1, D2)
    with pytest.raises(MarketlakeError, match="before start"):
        run_batch(lake, FakeSource(), ["AAPL"], ["prices"], D2, D1)
    with pytest.raises(MarketlakeError, match="marketlake runs"):
        resume_batch(lake, "no-such-run")


def test_worker_processes_give_the_same_lake_as_threads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import marketlake
    from marketlake.sources.synthetic import SyntheticSource

    tickers = ["AAPL", "MSFT", "IBM", "KO", "XOM", "JPM"]
    datasets = ["prices", "signals_technical"]
    blobs = []
    for name, procs in (("threads", 1), ("procs", 2)):
        with marketlake.open(tmp_path / name, fsync=False) as lk:
            s = run_batch(lk, SyntheticSource(), tickers, datasets, D1, D2, processes=procs)
            assert s.items_completed == 12 and s.items_failed == 0
            assert len(lk.catalog.partitions()) == 6 * 2 * 2
            blobs.append(
                {
                    str(p.relative_to(tmp_path / name)): p.read_bytes()
                    for p in sorted((tmp_path / name).rglob("*.parquet"))
                }
            )
    assert blobs[0] == blobs[1] and len(blobs[0]) == 24


def test_process_choice_keeps_network_sources_and_memory_lakes_in_one_process(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from marketlake.ingest.batch import _choose_processes
    from marketlake.sources.synthetic import SyntheticSource

    class NetSource(SyntheticSource):
        network = True

    def target(url: str) -> Any:
        return SimpleNamespace(writer=SimpleNamespace(store=SimpleNamespace(url=url)))

    big = 10**6
    assert _choose_processes(target(str(tmp_path)), SyntheticSource(), big, None) >= 1
    assert _choose_processes(target(str(tmp_path)), NetSource(), big, None) == 1  # rate limits
    assert _choose_processes(target("memory://"), SyntheticSource(), big, 4) == 1
