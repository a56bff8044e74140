"""Incremental update, backfill, monitored assets, month completion and scheduling (offline)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake, calendars
from marketlake.catalog import MonitoredAsset
from marketlake.cli.main import app
from marketlake.errors import CatalogError, ConfigError, SourceError
from marketlake.ingest.completion import complete_months, refresh_months
from marketlake.ingest.update import backfill, gap_backfill, last_completed_session, update
from marketlake.schedule import ScheduleConfig, cron_lines, next_run, run_schedule
from marketlake.sources.base import Source, SourceRequest
from marketlake.sources.synthetic import SyntheticSource
from tests.conftest import price_table

D = dt.date
runner = CliRunner()


class RecordingSource(Source):
    """The synthetic source, recording every request; tickers in ``fail`` fail (final error)."""

    name: ClassVar[str] = "synthetic"
    datasets: ClassVar[tuple[str, ...]] = SyntheticSource.datasets

    def __init__(self) -> None:
        self.inner = SyntheticSource()
        self.requests: list[SourceRequest] = []
        self.fail: set[str] = set()
        self.lock = threading.Lock()

    def fetch(self, request: SourceRequest) -> Any:
        with self.lock:
            self.requests.append(request)
        if request.ticker in self.fail:
            raise SourceError(f"{request.ticker}: vendor down")
        return self.inner.fetch(request)

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return self.inner.parse(request, raw)

    def spans(self) -> set[tuple[str, dt.date, dt.date]]:
        out = {(r.ticker, r.start, r.end) for r in self.requests}
        self.requests.clear()
        return out


@pytest.fixture
def lk(tmp_path: Path) -> Iterator[Lake]:
    lake = marketlake.open(tmp_path / "lake", fsync=False)
    yield lake
    lake.close()


def monitor(lake: Lake, *tickers: str, frequency: str = "daily") -> None:
    lake.catalog.upsert_monitored(
        MonitoredAsset(ticker=t, source="synthetic", datasets=("prices",), frequency=frequency)
        for t in tickers
    )


def mark(lake: Lake, ticker: str, dataset: str = "prices") -> dt.date | None:
    rows = lake.catalog.progress(dataset=dataset, ticker=ticker, source="synthetic")
    return rows[0].last_date if rows else None


def test_update_fetches_only_the_missing_range_with_refetch_window(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA", "BBB")
    [s] = update(lk, source=src, end=D(2024, 3, 1), since=D(2024, 1, 2))
    assert src.spans() == {
        ("AAA", D(2024, 1, 2), D(2024, 3, 1)),
        ("BBB", D(2024, 1, 2), D(2024, 3, 1)),
    }
    assert len(s.runs) == 1  # same start: one batch
    assert mark(lk, "AAA") == mark(lk, "BBB") == D(2024, 3, 1)

    # default window: the 5 last collected sessions again (Feb 26..Mar 1), then the new ones
    [s] = update(lk, source=src, end=D(2024, 3, 8))
    assert src.spans() == {
        ("AAA", D(2024, 2, 26), D(2024, 3, 8)),
        ("BBB", D(2024, 2, 26), D(2024, 3, 8)),
    }
    assert s.runs[0].rows_added == 2 * 5  # Mar 4..8 new; the re-fetched rows are unchanged
    assert mark(lk, "AAA") == D(2024, 3, 8)

    # no window: strictly after the watermark
    update(lk, source=src, end=D(2024, 3, 15), refetch=0)
    assert src.spans() == {
        ("AAA", D(2024, 3, 9), D(2024, 3, 15)),
        ("BBB", D(2024, 3, 9), D(2024, 3, 15)),
    }

    # already collected through the end: nothing fetched
    [s] = update(lk, source=src, end=D(2024, 3, 15))
    assert src.spans() == set() and not s.runs
    assert sorted(s.up_to_date) == [("AAA", "prices"), ("BBB", "prices")]


def test_update_groups_tickers_by_start_and_new_tickers_get_history(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA")
    update(lk, source=src, end=D(2024, 3, 1), since=D(2024, 2, 1))
    src.spans()
    monitor(lk, "BBB", "CCC")
    [s] = update(lk, source=src, end=D(2024, 3, 8), since=D(2024, 2, 15), refetch=2)
    assert src.spans() == {
        ("AAA", D(2024, 2, 29), D(2024, 3, 8)),
        ("BBB", D(2024, 2, 15), D(2024, 3, 8)),
        ("CCC", D(2024, 2, 15), D(2024, 3, 8)),
    }
    assert sorted(p.tickers for p in s.plans) == [("AAA",), ("BBB", "CCC")]
    assert len(s.runs) == 2


def test_watermark_never_moves_backwards(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA")
    update(lk, source=src, end=D(2024, 3, 8), since=D(2024, 3, 1))
    assert mark(lk, "AAA") == D(2024, 3, 8)
    [s] = update(lk, source=src, end=D(2024, 3, 4))  # an older --date
    assert not s.runs and mark(lk, "AAA") == D(2024, 3, 8)
    update(lk, source=src, tickers=["AAA"], end=D(2024, 3, 15), refetch=50)  # long window
    assert mark(lk, "AAA") == D(2024, 3, 15)


def test_failed_fetch_writes_nothing_keeps_watermark_and_is_retried(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA", "BBB")
    update(lk, source=src, end=D(2024, 3, 1), since=D(2024, 2, 1))
    src.spans()
    rows_before = lk.meta("BBB", "prices")
    assert rows_before is not None
    src.fail = {"BBB"}
    [s] = update(lk, source=src, end=D(2024, 3, 8))
    assert s.items_failed == 1
    assert mark(lk, "AAA") == D(2024, 3, 8)
    assert mark(lk, "BBB") == D(2024, 3, 1)  # did not move
    assert lk.meta("BBB", "prices") == rows_before  # nothing written
    src.spans()
    src.fail = set()
    [s] = update(lk, source=src, end=D(2024, 3, 8))
    assert src.spans() == {("BBB", D(2024, 2, 26), D(2024, 3, 8))}  # retried from its watermark
    assert s.items_failed == 0 and mark(lk, "BBB") == D(2024, 3, 8)


def test_backfill_does_not_move_the_watermark(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA", "BBB")
    update(lk, source=src, end=D(2024, 3, 1), since=D(2024, 2, 1))
    run = backfill(
        lk, src, ["AAA", "BBB"], ["prices"], D(2023, 1, 3), D(2023, 12, 29), as_of=D(2024, 3, 1)
    )
    assert run.status == "completed" and run.rows_added == 2 * 250
    assert lk.catalog.get_run(run.run_id).kind == "backfill"
    assert mark(lk, "AAA") == D(2024, 3, 1)
    # a backfill of a never-collected ticker, even up to recent dates, sets no watermark
    backfill(lk, src, ["ZZZ"], ["prices"], D(2024, 1, 2), D(2024, 3, 8), as_of=D(2024, 3, 8))
    assert mark(lk, "ZZZ") is None
    assert lk.meta("ZZZ", "prices").max_date == D(2024, 3, 8)  # type: ignore[union-attr]
    # nor beyond an existing watermark
    backfill(lk, src, ["AAA"], ["prices"], D(2024, 3, 4), D(2024, 3, 8), as_of=D(2024, 3, 8))
    assert mark(lk, "AAA") == D(2024, 3, 1)


def test_gap_backfill_fills_missing_sessions_below_the_watermark(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA")
    days = calendars.sessions(D(2024, 2, 1), D(2024, 3, 8))
    holes = {D(2024, 2, 27), D(2024, 3, 5)}
    lk.write(
        "AAA",
        "prices",
        src.inner.get(SourceRequest("AAA", ("prices",), days[0], days[-1]))["prices"].filter(
            pa.array([d not in holes for d in days])
        ),
        source="synthetic",
    )
    assert mark(lk, "AAA") == D(2024, 3, 8)
    runs = gap_backfill(lk, weeks=4, source=src, end=D(2024, 3, 8))
    assert src.spans() == {("AAA", D(2024, 2, 27), D(2024, 3, 5))}
    assert [r.rows_added for r in runs] == [2]
    assert gap_backfill(lk, weeks=4, source=src, end=D(2024, 3, 8)) == []


def test_weekly_assets_are_collected_when_a_week_old(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "WWW", frequency="weekly")
    update(lk, source=src, end=D(2024, 3, 1), since=D(2024, 2, 1))
    [s] = update(lk, source=src, end=D(2024, 3, 5))
    assert s.not_due == ["WWW"] and not s.runs
    [s] = update(lk, source=src, end=D(2024, 3, 8))
    assert len(s.runs) == 1 and mark(lk, "WWW") == D(2024, 3, 8)


def _write_sessions(lake: Lake, ticker: str, days: list[dt.date]) -> None:
    lake.write(ticker, "prices", price_table(days), source="synthetic")


def test_month_completion_with_holidays(lk: Lake) -> None:
    jan = calendars.sessions(D(2024, 1, 1), D(2024, 1, 31))
    assert len(jan) == 21 and D(2024, 1, 1) not in jan and D(2024, 1, 15) not in jan  # holidays
    feb = calendars.sessions(D(2024, 2, 1), D(2024, 2, 15))
    _write_sessions(lk, "FULL", jan + feb)
    _write_sessions(lk, "HOLE", [d for d in jan if d != D(2024, 1, 17)])
    _write_sessions(lk, "LATE", [d for d in jan if d >= D(2024, 1, 22)])  # first held mid-month
    as_of = D(2024, 2, 15)
    rows = {r.month: r for r in refresh_months(lk, "prices", "FULL", as_of=as_of)}
    assert rows["2024-01"].complete and rows["2024-01"].sessions_expected == 21
    assert rows["2024-01"].sessions_present == 21 and rows["2024-01"].last_date == D(2024, 1, 31)
    assert rows["2024-01"].object_key and rows["2024-01"].bytes > 0
    assert not rows["2024-02"].complete  # February has not ended
    [hole] = refresh_months(lk, "prices", "HOLE", as_of=as_of)
    assert not hole.complete and (hole.sessions_expected, hole.sessions_present) == (21, 20)
    [late] = refresh_months(lk, "prices", "LATE", as_of=as_of)
    assert late.complete and late.sessions_expected == 8
    assert refresh_months(lk, "fundamentals", "FULL", as_of=as_of) == []  # not a session dataset

    # the monthly job: February completes once its last session is collected
    _write_sessions(lk, "FULL", calendars.sessions(D(2024, 2, 16), D(2024, 2, 29)))
    refreshed, done = complete_months(lk, as_of=D(2024, 3, 1))
    assert (refreshed, done) == (2, 1)  # HOLE's January and FULL's February; only February done
    assert lk.catalog.month_counts() == {"prices": (3, 1)}
    res = runner.invoke(app, ["status", "--lake", lk.url])
    assert res.exit_code == 0, res.output
    assert "incomplete months: 1" in res.output


def test_update_maintains_month_progress(lk: Lake) -> None:
    src = RecordingSource()
    monitor(lk, "AAA")
    update(lk, source=src, end=D(2024, 3, 5), since=D(2024, 1, 2))
    months = {r.month: r.complete for r in lk.catalog.month_progress(ticker="AAA")}
    assert months == {"2024-01": True, "2024-02": True, "2024-03": False}


def test_last_completed_session() -> None:
    utc = dt.UTC
    assert last_completed_session(dt.datetime(2024, 3, 5, 2, 0, tzinfo=utc)) == D(2024, 3, 4)
    assert last_completed_session(dt.datetime(2024, 3, 5, 23, 30, tzinfo=utc)) == D(2024, 3, 5)
    assert last_completed_session(dt.datetime(2024, 4, 1, 2, 0, tzinfo=utc)) == D(2024, 3, 28)


def test_next_run_is_a_pure_function() -> None:
    utc = dt.UTC
    at = dt.datetime
    assert next_run(at(2024, 5, 6, 1, 0, tzinfo=utc)) == (
        at(2024, 5, 6, 2, 0, tzinfo=utc),
        ("update",),
    )
    assert next_run(at(2024, 5, 6, 2, 0, tzinfo=utc)) == (
        at(2024, 5, 7, 2, 0, tzinfo=utc),
        ("update",),
    )
    # Sunday: the weekly gap backfill an hour after the update
    assert next_run(at(2024, 5, 5, 2, 30, tzinfo=utc)) == (
        at(2024, 5, 5, 3, 0, tzinfo=utc),
        ("gaps",),
    )
    # the 1st (a Saturday): completion two hours after the update
    assert next_run(at(2024, 6, 1, 2, 0, tzinfo=utc)) == (
        at(2024, 6, 1, 4, 0, tzinfo=utc),
        ("complete",),
    )
    cfg = ScheduleConfig(at=dt.time(4, 0), weekday=0, monthday=6)
    assert next_run(at(2024, 5, 6, 4, 30, tzinfo=utc), cfg) == (
        at(2024, 5, 6, 5, 0, tzinfo=utc),
        ("gaps",),
    )
    assert next_run(at(2024, 5, 6, 5, 0, tzinfo=utc), cfg) == (
        at(2024, 5, 6, 6, 0, tzinfo=utc),
        ("complete",),
    )
    # jobs due at the same instant are returned together, in order
    same = ScheduleConfig(at=dt.time(23, 0), weekday=6)
    with pytest.raises(ConfigError):
        ScheduleConfig(monthday=31)
    when, jobs = next_run(at(2024, 5, 5, 23, 30, tzinfo=utc), same)  # Sunday 23:30
    assert (when, jobs) == (at(2024, 5, 6, 0, 0, tzinfo=utc), ("gaps",))
    # a non-UTC instant is converted
    ny = dt.timezone(dt.timedelta(hours=-4))
    assert next_run(at(2024, 5, 5, 21, 30, tzinfo=ny))[0] == at(2024, 5, 6, 2, 0, tzinfo=utc)


def test_run_schedule_runs_due_jobs_and_survives_a_failing_job() -> None:
    now = [dt.datetime(2024, 5, 5, 1, 0, tzinfo=dt.UTC)]  # Sunday
    calls: list[tuple[str, dt.datetime]] = []

    def sleep(seconds: float) -> None:
        now[0] += dt.timedelta(seconds=seconds)

    def job(name: str) -> Any:
        def run() -> None:
            calls.append((name, now[0]))
            if name == "update":
                raise RuntimeError("boom")

        return run

    rounds = run_schedule(
        {n: job(n) for n in ("update", "gaps", "complete")},
        clock=lambda: now[0],
        sleep=sleep,
        max_rounds=3,
    )
    assert rounds == 3
    assert [c[0] for c in calls] == ["update", "gaps", "update"]
    assert calls[1][1] == dt.datetime(2024, 5, 5, 3, 0, tzinfo=dt.UTC)
    assert calls[2][1] == dt.datetime(2024, 5, 6, 2, 0, tzinfo=dt.UTC)


def test_print_cron() -> None:
    res = runner.invoke(app, ["schedule", "--print-cron", "--at", "03:15", "--lake", "/data/lake"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "CRON_TZ=UTC"
    assert lines[1].startswith("15 3 * * * ") and lines[1].endswith("update --lake /data/lake")
    assert lines[2].startswith("15 4 * * 0 ") and "backfill --gaps --weeks 4" in lines[2]
    assert lines[3].startswith("15 5 1 * * ") and "complete-months --lake /data/lake" in lines[3]
    assert cron_lines(ScheduleConfig(weekday=0))[3].startswith("0 3 * * 1 ")
    bad = runner.invoke(app, ["schedule", "--print-cron", "--at", "2am"])
    assert bad.exit_code == 1 and "HH:MM" in bad.output


@pytest.mark.parametrize(
    "args",
    [
        ["update"],
        ["backfill"],
        ["assets"],
        ["assets", "add"],
        ["schedule"],
        ["status"],
        ["complete-months"],
    ],
)
def test_help(args: list[str]) -> None:
    res = runner.invoke(app, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_cli_assets_update_backfill(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    res = runner.invoke(app, ["assets", "add", "AAA,bbb", "--lake", lake])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["assets", "add", "CCC", "--lake", lake, "--frequency", "hourly"])
    assert res.exit_code == 1 and "frequency 'hourly'" in res.output
    res = runner.invoke(app, ["assets", "add", "CCC", "--lake", lake, "--datasets", "bars_minute"])
    assert res.exit_code == 1 and "does not provide" in res.output
    res = runner.invoke(
        app, ["update", "--lake", lake, "--date", "2024-03-08", "--since", "2024-03-01"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["assets", "list", "--lake", lake])
    assert res.exit_code == 0 and "BBB" in res.output and "2024-03-08" in res.output
    res = runner.invoke(
        app, ["backfill", "--lake", lake, "--start", "2024-02-01", "--end", "2024-02-29"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["backfill", "--lake", lake, "--start", "2024-02-01"])
    assert res.exit_code == 2 and "--end" in res.output
    res = runner.invoke(app, ["assets", "remove", "AAA", "--lake", lake])
    assert res.exit_code == 0 and "removed 1" in res.output
    with marketlake.open(lake) as lk:
        assert [a.ticker for a in lk.catalog.monitored()] == ["BBB"]
        assert mark(lk, "BBB") == D(2024, 3, 8)
        assert lk.meta("BBB", "prices").min_date == D(2024, 2, 1)  # type: ignore[union-attr]


def test_update_without_monitored_assets_is_a_clear_error(lk: Lake) -> None:
    with pytest.raises(Exception, match="no monitored assets"):
        update(lk, end=D(2024, 3, 8))
    with pytest.raises(CatalogError, match="no datasets"):
        lk.catalog.upsert_monitored([MonitoredAsset(ticker="A", source="s", datasets=())])
