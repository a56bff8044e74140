"""The coverage report (quality/report.py, ``marketlake report coverage``) on the demo lake,
opened in headless Chromium (Debian's ``chromium``): it renders its plots with no console
errors; the page is self-contained and deterministic. Also ``marketlake status``."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console
from typer.testing import CliRunner

import marketlake
from marketlake import Lake, calendars
from marketlake.catalog import MonitoredAsset, RunItemRow, ViolationRow
from marketlake.cli.main import app
from marketlake.demo import run_demo
from marketlake.quality.report import write_coverage_report
from marketlake.schemas.datasets import CRYPTO_BARS
from tests.conftest import price_table

D = dt.date
UTC = dt.UTC
AS_OF = D(2024, 6, 14)  # a Friday
NOW = dt.datetime(2024, 6, 17, 12, 0, tzinfo=UTC)  # Monday 08:00 New York: Friday is expected
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
runner = CliRunner()


def _crypto(hours: list[int]) -> pa.Table:
    base = dt.datetime(2024, 6, 1, tzinfo=UTC)
    ts = [base + dt.timedelta(hours=h) for h in hours]
    n = len(ts)
    cols: dict[str, pa.Array] = {
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "exchange": pa.array(["binance"] * n),
    }
    for name in ("open", "high", "low", "close", "volume"):
        cols[name] = pa.array([1.0] * n)
    cols["quote_volume"] = pa.nulls(n, pa.float64())
    cols["trade_count"] = pa.nulls(n, pa.int64())
    return pa.Table.from_pydict(cols, schema=CRYPTO_BARS.schema)


def _violation(ticker: str, day: D, rule: str, severity: str) -> ViolationRow:
    return ViolationRow(
        ticker=ticker,
        dataset="prices",
        date=day,
        rule=rule,
        severity=severity,
        detail=f"{rule} on {day}",
    )


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo lake (4 tickers, one year) plus a ticker with holes, a stale monitored ticker,
    a crypto pair with missing hours, a failed run and two recorded checks."""
    path = tmp_path_factory.mktemp("demo") / "lake"
    run_demo(str(path), n_tickers=4, years=1, as_of=AS_OF, console=Console(quiet=True))
    with marketlake.open(path, fsync=False) as lk:
        days = calendars.sessions(D(2024, 1, 2), AS_OF)
        holes = {D(2024, 2, 6), D(2024, 2, 7)} | {d for d in days if d.month == 4}
        lk.write(
            "HOLE", "prices", price_table([d for d in days if d not in holes]), source="synthetic"
        )
        lk.write(
            "OLD", "prices", price_table([d for d in days if d <= D(2024, 5, 31)]), source="yahoo"
        )
        lk.write(
            "BTC-USD", "crypto_bars", _crypto([h for h in range(240) if h != 50]), source="binance"
        )
        lk.catalog.upsert_monitored(
            [MonitoredAsset(ticker="OLD", source="yahoo", datasets=("prices",))]
        )
        _failed_run(lk)
        lk.catalog.record_violations(
            "check-1",
            "2024-06-14T22:00:00.000000Z",
            [
                _violation("AAPL", D(2024, 6, 3), "prices.high_low", "error"),
                _violation("HOLE", D(2024, 2, 6), "prices.sessions", "warning"),
                _violation("HOLE", D(2024, 2, 7), "prices.sessions", "warning"),
            ],
        )
        lk.catalog.record_violations(
            "check-2",
            "2024-06-17T11:00:00.000000Z",
            [_violation("AAPL", D(2024, 6, 3), "prices.high_low", "error")],
            scope=[("prices", None, None)],
        )
    yield path


def _failed_run(lk: Lake) -> None:
    lk.catalog.create_run("run-failed", "daily", "yahoo", {}, [("OLD", "prices"), ("X", "prices")])
    lk.catalog.record_items(
        "run-failed",
        [
            RunItemRow(run_id="run-failed", ticker="OLD", dataset="prices", status="completed"),
            RunItemRow(
                run_id="run-failed",
                ticker="X",
                dataset="prices",
                status="failed",
                error="HTTP 500 from query1.finance.yahoo.com",
            ),
        ],
    )
    lk.catalog.finish_run("run-failed")


@pytest.fixture(scope="module")
def report(demo_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    with marketlake.open(demo_lake) as lk:
        write_coverage_report(lk, out, now=NOW)
    return out


def test_report_content(report: Path) -> None:
    page = (report / "coverage.html").read_text()
    md = (report / "coverage.md").read_text()
    for title in (
        "Coverage by dataset, source and year",
        "Coverage per ticker",
        "Largest holes",
        "Per-ticker gaps",
        "Freshness",
        "Data-quality violations",
        "Collection runs",
        "Storage",
        "Known gaps and limitations",
    ):
        assert f"<h2>{title}</h2>" in page and f"## {title}" in md
    # self-contained: no scripts, no external references of any kind
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert not re.search(r"\s(src|href)=\"(?!#)", page)
    assert "@import" not in page and "<link" not in page
    assert page.count("<svg ") == 3 and "<style>" in page
    # the ticker with holes: April (22 sessions) and two February sessions
    assert "| prices | HOLE | synthetic | 2024-04-01 | 2024-04-30 | 22 sessions | 30 |" in md
    assert "| prices | HOLE | synthetic | 2024-02-06 | 2024-02-07 | 2 sessions | 2 |" in md
    assert "| crypto_bars | BTC-USD @ binance | binance | 2024-06-03T02:00:00Z" in md
    # freshness: the stale monitored ticker; demo tickers are fresh
    assert "| prices | OLD | yahoo | 2024-05-31 | 2024-06-14 | 10 |" in md
    assert "prices: 1 series with holes: HOLE (24)." in md
    # violations over time and open ones (check-2 covered the warnings: only the error is open)
    assert "| 2024-06-14 | prices.sessions | warning | 2 |" in md
    assert "| 2024-06-17 | prices.high_low | error | 1 |" in md
    assert "| prices | prices.high_low | error | 1 |" in md
    assert "Open error violations: prices/prices.high_low (1)." in md
    assert "Failed runs among the latest: run-failed (1 failed items)." in md
    assert "EDGAR fundamentals only from the XBRL era" in md
    for name in ("coverage_heatmap", "coverage_tickers", "violations_over_time"):
        assert f"]({name}.svg)" in md and (report / f"{name}.svg").stat().st_size > 2000
    gaps = (report / "gaps.csv").read_text().splitlines()
    assert gaps[0].startswith('"dataset","ticker"') and len(gaps) == 1 + 3


def test_report_is_deterministic(demo_lake: Path, report: Path, tmp_path: Path) -> None:
    with marketlake.open(demo_lake) as lk:
        again = write_coverage_report(lk, tmp_path / "again", now=NOW)
        later = write_coverage_report(lk, tmp_path / "later", now=NOW + dt.timedelta(minutes=7))
    for path in again.files:
        assert path.read_bytes() == (report / path.name).read_bytes(), path.name
    for name in ("coverage.html", "coverage.md"):
        a = (report / name).read_text().splitlines()
        b = (tmp_path / "later" / name).read_text().splitlines()
        diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert all("2024-06-17 12:00 UTC" in x and "12:07 UTC" in y for x, y in diff), diff
        assert 1 <= len(diff) <= 2  # the header and the freshness "judged at" line
    assert later.html.exists()


def _chromium() -> str:
    """The browser. CI (``.ci/run`` sets ``MARKETLAKE_REQUIRE_BROWSER=1`` after installing it)
    fails without one; elsewhere -- a fresh machine running the README's test command -- the
    test is skipped with the install command."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        message = (
            "chromium is not installed: the report test needs Debian's chromium package "
            "(apt-get install -y --no-install-recommends chromium)"
        )
        if os.environ.get("MARKETLAKE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return exe


def _run_chromium(
    exe: str, profile: Path, url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _console_messages(stderr: str) -> list[str]:
    """Chromium logs every page console message (errors, failed loads) as ``...:CONSOLE...``."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    exe = _chromium()
    url = (report / "coverage.html").resolve().as_uri()
    dom = _run_chromium(exe, tmp_path / "profile-dom", url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    figures = re.findall(r'<figure id="fig-([a-z_]+)">(.*?)</figure>', dom.stdout, re.S)
    assert [name for name, _ in figures] == [
        "coverage_heatmap",
        "coverage_tickers",
        "violations_over_time",
    ]
    for name, body in figures:
        assert "<svg" in body and len(body) > 2000, name
        assert "<path" in body or "<image" in body, name
    # heatmaps carry their cells as an inline PNG; the bar chart as paths
    assert 'href="data:image/png;base64,' in figures[0][1]

    shot = ARTIFACTS / "coverage-report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    res = _run_chromium(
        exe,
        tmp_path / "profile-shot",
        url,
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        "--hide-scrollbars",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_messages(res.stderr) == []
    assert shot.exists() and shot.stat().st_size > 20_000
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1280, 4000)
        pixels = np.asarray(rgb.resize((320, 1000)), dtype=np.int32).reshape(-1, 3)
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    non_white = int(np.count_nonzero(pixels.min(axis=1) < 235))
    greens = int(np.count_nonzero((g > r + 40) & (g > b + 20)))  # heatmap cells
    assert non_white > 0.03 * len(pixels) and greens > 50
    assert len(np.unique(pixels, axis=0)) > 100  # text, tables and plots, not a blank page


def test_cli_report_coverage(demo_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "report",
            "coverage",
            "--lake",
            str(demo_lake),
            "-o",
            str(out),
            "--now",
            "2024-06-17T12:00",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "coverage.html" in res.output and (out / "coverage.html").exists()
    assert "generated 2024-06-17 12:00 UTC" in (out / "coverage.md").read_text()
    only = runner.invoke(
        app,
        [
            "report",
            "coverage",
            "--lake",
            str(demo_lake),
            "-o",
            str(tmp_path / "only"),
            "--datasets",
            "prices",
            "--tickers",
            "hole",
            "--exact",
        ],
    )
    assert only.exit_code == 0, only.output
    assert "| prices | HOLE |" in (tmp_path / "only" / "coverage.md").read_text()
    bad = runner.invoke(
        app, ["report", "coverage", "--lake", str(demo_lake), "-o", str(out), "--now", "soon"]
    )
    assert bad.exit_code == 2 and "is not an ISO 8601 time" in bad.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["report", "coverage", "--lake", str(demo_lake), "-o", str(blocker)])
    assert res.exit_code == 1
    assert "exists and is not a directory" in res.output and "Traceback" not in res.output
    for args in (["report"], ["report", "coverage"], ["alerts"], ["alerts", "check"]):
        assert runner.invoke(app, [*args, "--help"]).exit_code == 0


def test_status_shows_runs_freshness_and_violations(demo_lake: Path) -> None:
    res = runner.invoke(app, ["status", "--lake", str(demo_lake), "--runs", "6"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "open violations (latest check): 1 error, 0 warning, 0 info - prices.high_low 1" in text
    # OLD is monitored, its watermark is 2024-05-31: stale today
    assert re.search(r"freshness of active monitored series: 0 fresh, 0 due, 0 late, 1 stale", text)
    assert "run-failed" in text and "X/prices: HTTP 500" in text
    # the demo's backfill: a duration, every item completed, none failed, rows added
    [line] = [ln for ln in text.splitlines() if "│ backfill" in ln]
    cells = [c.strip() for c in line.strip()[1:-1].split("│")]
    _run_id, kind, _src, status, _started, took, items, failed, added, updated, _err = cells
    assert (kind, status, failed, updated) == ("backfill", "completed", "0", "0")
    assert re.fullmatch(r"\d+\.\d s", took) and len(set(items.split("/"))) == 1
    assert int(added.replace(",", "")) > 1000
