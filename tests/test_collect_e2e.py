"""End-to-end collection over a fake HTTP transport (issue 4, "Show").

A fake Yahoo (:class:`httpx.MockTransport`) serves the recorded chart responses in
tests/fixtures/yahoo_chart and injects faults on demand; the real :class:`YahooChartSource` and
:class:`HttpClient` (rate limiter, retries, typed errors) fetch from it, and the library's
``run_batch`` / ``resume_batch`` / ``update`` / ``backfill`` — and the ``marketlake ingest /
update / backfill --source yahoo`` commands — write a local tmp lake. Covered: pagination
(Alpaca ``next_page_token``), rate limiting measured on the client's injected clock and as a
real-time lower bound, 429 + ``Retry-After``, 500 then success, timeouts, malformed JSON, a
crash mid-run then resume, a rerun that writes nothing, and ``update`` asking only for what
follows the watermark.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.cli.main import app
from marketlake.ingest.batch import resume_batch, run_batch
from marketlake.ingest.update import backfill, update
from marketlake.sources import registry
from marketlake.sources.alpaca import AlpacaSource
from marketlake.sources.http import HttpClient
from marketlake.sources.yahoo import YahooChartSource
from tests import test_alpaca
from tests.test_yahoo import NOT_FOUND, NOW, SERVED

DAILY = ["prices", "corporate_actions"]
START, END = dt.date(2025, 5, 1), dt.date(2025, 10, 29)
HOST = "query2.finance.yahoo.com"


class Crash(BaseException):
    """Stands in for the process dying mid-run (not an Exception: nothing catches it)."""


@dataclasses.dataclass
class Seen:
    symbol: str
    interval: str
    period1: int
    period2: int
    at: float  # the fake (or real) clock when the request reached the server


class FakeClock:
    """The HTTP client's injected clock: ``sleep`` advances time instantly (one worker)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class FakeYahoo:
    """Serves the recorded chart bodies by symbol, with scripted faults; records every request.

    ``faults[symbol]`` is a queue of ``"429"``, ``"500"``, ``"timeout"`` answers served before
    the body; ``always_timeout`` symbols never answer; ``malformed`` symbols get broken JSON;
    after ``crash_after`` requests every request raises :class:`Crash`.
    """

    def __init__(self, now: Any = time.monotonic) -> None:
        self.now = now
        self.seen: list[Seen] = []
        self.faults: dict[str, list[str]] = {}
        self.always_timeout: set[str] = set()
        self.malformed: set[str] = set()
        self.crash_after: int | None = None
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == HOST
        p = request.url.params
        symbol = request.url.path.rsplit("/", 1)[-1]
        with self._lock:
            self.seen.append(
                Seen(symbol, p["interval"], int(p["period1"]), int(p["period2"]), self.now())
            )
            if self.crash_after is not None and len(self.seen) > self.crash_after:
                raise Crash(f"process died at request {len(self.seen)}")
            queue = self.faults.get(symbol) or []
            fault = queue.pop(0) if queue else None
        if fault == "429":
            return httpx.Response(429, headers={"Retry-After": "3"}, text="Too Many Requests")
        if fault == "500":
            return httpx.Response(500, text="Internal Server Error")
        if fault == "timeout" or symbol in self.always_timeout:
            raise httpx.ReadTimeout("read timed out", request=request)
        if symbol in self.malformed:
            return httpx.Response(200, content=b'{"chart": {"result": [{"meta": ')
        path = SERVED.get(symbol)
        if path is None:
            return httpx.Response(404, json=NOT_FOUND)
        return httpx.Response(200, content=path.read_bytes())

    def symbols(self) -> list[str]:
        return [s.symbol for s in self.seen]


def yahoo(
    vendor: FakeYahoo, clock: FakeClock | None = None, *, retries: int = 3, rate: float = 2.0
) -> YahooChartSource:
    """The real Yahoo source on the real client, over the fake transport."""
    clock = clock or FakeClock()
    client = HttpClient(
        transport=httpx.MockTransport(vendor),
        rate_limits={HOST: rate},
        retries=retries,
        sleep=clock.sleep,
        clock=clock.clock,
        rng=random.Random(7),
    )
    return YahooChartSource(client=client, now=lambda: NOW)


def open_lake(path: Path) -> Lake:
    return marketlake.open(str(path), fsync=False)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lk = open_lake(tmp_path / "lake")
    yield lk
    lk.close()


def data_objects(lk: Lake) -> dict[str, str | None]:
    """Every data and _meta object of the lake (catalog files excluded) -> ETag."""
    return {o.key: o.etag for o in lk.writer.store.list("") if not o.key.startswith("_catalog")}


def read(lk: Lake, ticker: str, dataset: str) -> pa.Table:
    return lk.read(ticker, dataset, START, END, output="arrow")


def epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


# --- rate limiting, retries, errors ---------------------------------------------------------


def test_rate_limit_spacing_on_the_injected_clock(lake: Lake) -> None:
    clock = FakeClock()
    vendor = FakeYahoo(now=clock.clock)
    src = yahoo(vendor, clock)
    s = run_batch(lake, src, ["AAPL", "MSFT", "GS2C.DE", "ZZZZ"], DAILY, START, END, workers=1)
    assert s.items_completed == 6 and s.items_failed == 2  # ZZZZ: 404, no data
    times = [r.at for r in vendor.seen]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.5 - 1e-9 for g in gaps), gaps  # 2 req/s on query2.finance.yahoo.com
    assert clock.sleeps == pytest.approx([0.5, 0.5, 0.5])


def test_rate_limit_holds_across_threads_in_real_time(lake: Lake) -> None:
    vendor = FakeYahoo()  # real monotonic time
    client = HttpClient(transport=httpx.MockTransport(vendor), rate_limits={HOST: 20.0})
    src = YahooChartSource(client=client, now=lambda: NOW)
    tickers = ["AAPL", "MSFT", "GS2C.DE", "NOPE1", "NOPE2", "NOPE3", "NOPE4", "NOPE5"]
    t0 = time.monotonic()
    s = run_batch(lake, src, tickers, ["prices"], START, END, workers=4, fetch_retries=1)
    assert s.items_completed == 3 and s.items_failed == 5
    # 8 requests from 4 threads on a 20 req/s host: the last starts >= 7 x 50 ms after the run
    assert len(vendor.seen) == 8
    assert max(r.at for r in vendor.seen) - t0 >= 7 * 0.05 - 1e-6


def test_429_with_retry_after_then_success(lake: Lake) -> None:
    clock = FakeClock()
    vendor = FakeYahoo(now=clock.clock)
    vendor.faults["AAPL"] = ["429"]
    s = run_batch(lake, yahoo(vendor, clock), ["AAPL"], DAILY, START, END, workers=1)
    assert s.status == "completed" and s.items_completed == 2
    first, second = vendor.seen
    assert second.at - first.at == pytest.approx(3.0)  # waited what Retry-After asked
    assert 3.0 in clock.sleeps
    assert read(lake, "AAPL", "prices").num_rows == 126


def test_500_then_success_and_timeouts_then_success(lake: Lake) -> None:
    clock = FakeClock()
    vendor = FakeYahoo(now=clock.clock)
    vendor.faults["AAPL"] = ["500", "500"]
    vendor.faults["MSFT"] = ["timeout", "timeout"]
    src = yahoo(vendor, clock)
    s = run_batch(lake, src, ["AAPL", "MSFT"], DAILY, START, END, workers=1)
    assert s.status == "completed" and s.items_failed == 0
    assert vendor.symbols() == ["AAPL"] * 3 + ["MSFT"] * 3
    # jittered exponential backoff: attempt n waits within [0.25, 0.5] x 2^(n-1) s
    gaps = [b.at - a.at for a, b in itertools.pairwise(vendor.seen)]
    assert 0.5 <= gaps[1] <= 1.0 + 1e-9  # second retry of AAPL
    assert read(lake, "AAPL", "prices").num_rows == 126
    assert read(lake, "MSFT", "prices").num_rows > 100


def test_timeouts_exhausting_retries_fail_alone_and_write_nothing(lake: Lake) -> None:
    vendor = FakeYahoo()
    vendor.always_timeout.add("MSFT")
    s = run_batch(lake, yahoo(vendor, retries=2), ["AAPL", "MSFT"], DAILY, START, END,
                  workers=2, fetch_retries=1)  # fmt: skip
    assert s.items_completed == 2 and s.items_failed == 2
    assert vendor.symbols().count("MSFT") == 3
    errors = {(f.ticker, f.dataset): f.error or "" for f in s.failures}
    assert "failed after 3 attempts: timed out" in errors[("MSFT", "prices")]
    assert not [k for k in data_objects(lake) if "MSFT" in k]
    assert read(lake, "AAPL", "prices").num_rows == 126


def test_malformed_json_names_the_ticker_and_writes_nothing_for_it(lake: Lake) -> None:
    vendor = FakeYahoo()
    vendor.malformed.add("GS2C.DE")
    s = run_batch(lake, yahoo(vendor), ["AAPL", "GS2C.DE", "MSFT"], DAILY, START, END,
                  workers=2, fetch_retries=1)  # fmt: skip
    assert s.status == "failed" and s.items_completed == 4 and s.items_failed == 2
    for f in s.failures:
        assert f.ticker == "GS2C.DE"
        assert "GS2C.DE" in (f.error or "") and "malformed JSON" in (f.error or "")
        assert "\n" not in (f.error or "")
    assert vendor.symbols().count("GS2C.DE") == 1  # a malformed body is final: no retry
    assert not [k for k in data_objects(lake) if "GS2C.DE" in k]
    assert read(lake, "GS2C.DE", "prices").num_rows == 0
    assert read(lake, "AAPL", "prices").num_rows == 126
    assert read(lake, "MSFT", "corporate_actions").num_rows == 2


# --- idempotence, crash and resume ---------------------------------------------------------

TICKERS = ["AAPL", "GS2C.DE", "MSFT"]


def test_rerun_changes_nothing(lake: Lake) -> None:
    vendor = FakeYahoo()
    src = yahoo(vendor)
    first = run_batch(lake, src, TICKERS, DAILY, START, END, workers=2)
    assert first.status == "completed" and first.objects_written > 0
    before = data_objects(lake)
    again = run_batch(lake, src, TICKERS, DAILY, START, END, workers=2)
    assert again.status == "completed" and again.items_completed == 6
    assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    assert data_objects(lake) == before  # same keys, same ETags: nothing rewritten


def test_crash_mid_run_then_resume_equals_a_clean_run(tmp_path: Path) -> None:
    with open_lake(tmp_path / "clean") as clean:
        run_batch(clean, yahoo(FakeYahoo()), TICKERS, DAILY, START, END, workers=1)
        expected = {(t, d): read(clean, t, d) for t in TICKERS for d in DAILY}
        clean_keys = set(data_objects(clean))

    vendor = FakeYahoo()
    vendor.crash_after = 1  # the first ticker's request is answered, then the process "dies"
    src = yahoo(vendor)
    with open_lake(tmp_path / "crashed") as lk:
        with pytest.raises(Crash):
            run_batch(lk, src, TICKERS, DAILY, START, END, workers=1, run_id="crash-1")
        assert lk.catalog.get_run("crash-1").status == "running"  # never finished
        unfinished = {t for t, _d in lk.catalog.unfinished_items("crash-1")}
        # AAPL was being written by the other worker thread when the process died: whether its
        # items reached the catalog is a race, like in a real crash; the others never did
        assert {"GS2C.DE", "MSFT"} <= unfinished
        assert read(lk, "MSFT", "prices").num_rows == 0

        vendor.crash_after = None
        served = len(vendor.seen)
        resumed = resume_batch(lk, "crash-1", source=src, workers=1)
        assert resumed.status == "completed" and resumed.items_completed == 2 * len(unfinished)
        assert sorted(vendor.symbols()[served:]) == sorted(unfinished)  # only what was unfinished
        assert lk.catalog.get_run("crash-1").status == "completed"
        assert not lk.catalog.unfinished_items("crash-1")
        for (ticker, dataset), table in expected.items():
            assert read(lk, ticker, dataset).equals(table), (ticker, dataset)
        assert set(data_objects(lk)) == clean_keys


# --- pagination --------------------------------------------------------------------------------


def test_pagination_alpaca_next_page_token_into_a_local_lake(lake: Lake) -> None:
    fake = test_alpaca.FakeAlpaca()  # every request answers 6 bars, then 4 on page "p2"
    src = AlpacaSource(client=test_alpaca.client(fake), key_id=test_alpaca.KEY,
                       secret_key=test_alpaca.SECRET)  # fmt: skip
    day = dt.date(2022, 1, 3)
    run = backfill(lake, src, ["AAPL", "MSFT"], ["bars_minute"], day, day, as_of=day)
    assert run.status == "completed" and run.rows_added == 20
    tokens = sorted((r.url.params["symbols"], r.url.params.get("page_token", "")) for r in
                    fake.requests)  # fmt: skip
    assert tokens == [("AAPL", ""), ("AAPL", "p2"), ("MSFT", ""), ("MSFT", "p2")]
    bars = lake.read("AAPL", "bars_minute", day, day, output="arrow")
    assert bars.num_rows == 10 and bars.column("open").to_pylist() == [100.0 + i for i in range(10)]


# --- update from the watermark, backfill ------------------------------------------------------


def test_update_fetches_only_since_the_watermark_and_backfill_keeps_it(lake: Lake) -> None:
    vendor = FakeYahoo()
    src = yahoo(vendor)
    # never collected: from --since
    first = update(lake, source=src, tickers=["AAPL"], datasets=["prices"],
                   end=dt.date(2025, 10, 15), since=dt.date(2025, 9, 2), refetch=2)  # fmt: skip
    assert first[0].items_failed == 0
    assert vendor.seen[-1].period1 == epoch(dt.date(2025, 9, 1))
    mark = {p.ticker: p.last_date for p in lake.catalog.progress(source="yahoo")}
    assert mark["AAPL"] == dt.date(2025, 10, 15)

    # the next update asks from 2 sessions before the watermark (minus a day for time zones)
    second = update(lake, source=src, tickers=["AAPL"], datasets=["prices"],
                    end=dt.date(2025, 10, 29), refetch=2)  # fmt: skip
    plan = second[0].plans[0]
    assert plan.start == dt.date(2025, 10, 14)
    got = vendor.seen[-1]
    assert got.period1 == epoch(dt.date(2025, 10, 13))
    assert got.period2 == epoch(dt.date(2025, 10, 31))  # end + 2 days (after NOW): every split
    run = second[0].runs[0]
    assert run.rows_added == 10 and run.rows_updated == 0  # Oct 16..29; Oct 14-15 unchanged
    marks = {p.ticker: p.last_date for p in lake.catalog.progress(source="yahoo")}
    assert marks["AAPL"] == dt.date(2025, 10, 29)

    # up to date: no request at all
    n = len(vendor.seen)
    third = update(lake, source=src, tickers=["AAPL"], datasets=["prices"],
                   end=dt.date(2025, 10, 29))  # fmt: skip
    assert third[0].plans == [] and third[0].up_to_date == [("AAPL", "prices")]
    assert len(vendor.seen) == n

    # backfill history: fetched from its start, the watermark does not move
    bf = backfill(lake, src, ["AAPL"], ["prices"], START, dt.date(2025, 8, 29),
                  as_of=dt.date(2025, 10, 29))  # fmt: skip
    assert bf.status == "completed" and bf.rows_added > 80
    assert vendor.seen[-1].period1 == epoch(dt.date(2025, 4, 30))
    marks = {p.ticker: p.last_date for p in lake.catalog.progress(source="yahoo")}
    assert marks["AAPL"] == dt.date(2025, 10, 29)
    assert read(lake, "AAPL", "prices").num_rows == 126  # May 1 .. Oct 29: every session


# --- the CLI: marketlake ingest / update / backfill --source yahoo ----------------------------

_CLI_VENDOR: FakeYahoo | None = None


class CliYahoo(YahooChartSource):
    """What ``get_source("yahoo")`` builds during the CLI test: the fake-transport Yahoo."""

    def __init__(self, **_options: Any) -> None:
        assert _CLI_VENDOR is not None
        built = yahoo(_CLI_VENDOR)
        super().__init__(client=built.client, now=lambda: NOW)


@pytest.fixture
def cli_vendor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeYahoo]:
    global _CLI_VENDOR
    _CLI_VENDOR = FakeYahoo()
    info = dataclasses.replace(registry._SOURCES["yahoo"], target=f"{__name__}:CliYahoo")
    monkeypatch.setitem(registry._SOURCES, "yahoo", info)
    yield _CLI_VENDOR
    _CLI_VENDOR = None


INGEST = ("ingest", "--source", "yahoo", "--tickers", "AAPL,MSFT", "--datasets",
          "prices,corporate_actions", "--start", "2025-09-02", "--end", "2025-10-15")  # fmt: skip


def test_cli_ingest_update_backfill_and_resume(cli_vendor: FakeYahoo, tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(tmp_path / "lake")

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, "--lake", path])

    cli_vendor.malformed.add("MSFT")
    r = cli(*INGEST)
    assert r.exit_code == 3, r.output  # MSFT failed: exit 3, one line per failed item
    assert re.search(r"failed prices MSFT: \S+/MSFT\S* answered malformed JSON", r.output)
    run_id = re.search(r"run (\S+): failed", r.output)
    assert run_id is not None

    cli_vendor.malformed.clear()
    r = cli("ingest", "--resume", run_id.group(1))
    assert r.exit_code == 0, r.output
    assert cli_vendor.symbols()[-1] == "MSFT" and cli_vendor.symbols().count("AAPL") == 1

    r = cli("update", "--source", "yahoo", "--tickers", "AAPL,MSFT", "--datasets", "prices",
            "--date", "2025-10-29", "--refetch", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert {s.period1 for s in cli_vendor.seen[-2:]} == {epoch(dt.date(2025, 10, 15))}

    r = cli("backfill", "--source", "yahoo", "--tickers", "AAPL", "--datasets", "prices",
            "--start", "2025-05-01", "--end", "2025-08-29")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert cli_vendor.seen[-1].period1 == epoch(dt.date(2025, 4, 30))

    with open_lake(Path(path)) as lk:
        assert read(lk, "AAPL", "prices").num_rows == 126  # backfill + ingest + update: all
        msft = read(lk, "MSFT", "prices").column("date").to_pylist()
        assert (msft[0], msft[-1], len(msft)) == (dt.date(2025, 9, 2), END, 42)
        marks = {(p.ticker, p.dataset): p.last_date for p in lk.catalog.progress(source="yahoo")}
        assert marks[("AAPL", "prices")] == marks[("MSFT", "prices")] == END

    # the same ingest again writes nothing
    r = cli(*INGEST)
    assert r.exit_code == 0, r.output
    assert re.search(r"│\s+4\s+│\s+4\s+│\s+0\s+│(\s+\d+\s+│){3}\s+0\s+│", r.output), r.output
