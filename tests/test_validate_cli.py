"""``validate`` over a lake: violations stored in the catalog, open violations (latest_only)
across full and partial checks, trends, read errors, the after-batch hook, worker processes and
the ``marketlake validate`` command's output and exit codes.

The lake holds real fixture data (see tests/test_quality_rules.py): Quandl AAPL 2014 with its
7:1 split left out of corporate_actions (a missing split), Quandl MSFT 2014 (clean), MUR
fundamentals (known real quirks), Tiingo BTC-USD per exchange (Bitfinex's premium) and EA
15-minute bars (its last session recorded mid-day).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.catalog import Catalog, ViolationRow
from marketlake.cli.main import app
from marketlake.errors import CatalogError, MarketlakeError
from marketlake.quality.validate import validate, validate_after_batch
from tests.test_adjust import quandl
from tests.test_quality_rules import ea, mur, tiingo_crypto

D = dt.date
UTC = dt.UTC
NOW = dt.datetime(2026, 11, 1, tzinfo=UTC)
runner = CliRunner()

EXPECTED = {
    ("AAPL", "prices", "prices.adj_close_consistency", "error", "2014-06-09"),
    ("AAPL", "prices", "prices.suspicious_jump", "warning", "2014-06-09"),
    ("EA", "bars_minute", "bars_minute.session_rows", "warning", "2026-06-03"),
    ("BTC-USD", "crypto_bars", "crypto_bars.cross_exchange", "warning", "2019-05-01"),
    ("BTC-USD", "crypto_bars", "crypto_bars.cross_exchange", "warning", "2019-05-02"),
    *{
        ("MUR", "fundamentals", "fundamentals.filing_lag", "warning", d)
        for d in ("2009-08-07", "2009-11-06", "2010-05-07")
    },
    ("MUR", "fundamentals", "fundamentals.negative_values", "error", "2014-02-28"),
    ("MUR", "fundamentals", "fundamentals.negative_values", "error", "2020-02-27"),
}


def keys(rows: object) -> set[tuple[str, str, str, str, str]]:
    """(ticker, dataset, rule, severity, date) of violations (a table or ViolationRows)."""
    if isinstance(rows, pa.Table):
        items = rows.to_pylist()
        return {
            (r["ticker"], r["dataset"], r["rule"], r["severity"], str(r["date"])) for r in items
        }
    return {(r.ticker, r.dataset, r.rule, r.severity, str(r.date)) for r in rows}  # type: ignore[attr-defined]


def fill(lk: Lake) -> None:
    aapl, aapl_actions, _ = quandl("AAPL")
    lk.write("AAPL", "prices", aapl, source="quandl")
    no_split = aapl_actions.filter(pc.not_equal(aapl_actions.column("action"), "split"))
    lk.write("AAPL", "corporate_actions", no_split, source="quandl")
    msft, msft_actions, _ = quandl("MSFT")
    lk.write("MSFT", "prices", msft, source="quandl")
    lk.write("MSFT", "corporate_actions", msft_actions, source="quandl")
    lk.write("MUR", "fundamentals", mur(), source="sec")
    lk.write("BTC-USD", "crypto_bars", tiingo_crypto("BTC-USD"), source="tiingo_crypto")
    lk.write("EA", "bars_minute", ea(), source="yahoo")


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Lake]:
    lk = marketlake.open(str(tmp_path / "lake"), fsync=False)
    fill(lk)
    yield lk
    lk.close()


def test_validate_finds_and_stores_exactly_the_known_violations(local: Lake) -> None:
    result = validate(local, now=NOW)
    assert keys(result.violations) == EXPECTED
    assert result.datasets == ("prices", "bars_minute", "crypto_bars", "fundamentals", "freshness")
    assert result.tickers == {"prices": 2, "bars_minute": 1, "crypto_bars": 1, "fundamentals": 1}
    assert result.rows["prices"] == 504 and result.rows["bars_minute"] == 319
    assert result.by_severity() == {"error": 5, "warning": 9, "info": 0}
    assert result.counts()[("fundamentals.filing_lag", "warning")] == 5
    assert result.fails("error") and result.fails("warning") and not result.fails("never")
    assert result.stored == result.total == 14
    stored = local.catalog.violations()
    assert len(stored) == 14 and {v.check_id for v in stored} == {result.check_id}
    assert keys(stored) == EXPECTED
    bar = next(v for v in stored if v.dataset == "crypto_bars")
    assert bar.ts == dt.datetime(2019, 5, 1, tzinfo=UTC) and bar.checked_at == result.checked_at
    assert keys(local.catalog.violations(latest_only=True)) == EXPECTED
    assert len(local.catalog.violations(severity="error", dataset="fundamentals")) == 4
    # data is never changed by validation
    assert local.read("AAPL", "corporate_actions", output="arrow").num_rows == 4


def test_open_violations_across_full_and_partial_checks(tmp_path: Path) -> None:
    with marketlake.open("memory://") as lk:
        fill(lk)
        first = validate(lk, now=NOW)
        cat = lk.catalog
        assert keys(cat.violations(latest_only=True)) == EXPECTED
        # the split is restored; a check of MSFT only leaves AAPL's violations open
        _, actions, _ = quandl("AAPL")
        lk.write("AAPL", "corporate_actions", actions, source="quandl")
        validate(lk, ["prices"], ["MSFT"], now=NOW)
        assert keys(cat.violations(latest_only=True)) == EXPECTED
        # a recent-window check of AAPL does not cover 2014-06-09 either
        validate(lk, ["prices"], ["AAPL"], D(2014, 7, 1), now=NOW)
        assert keys(cat.violations(latest_only=True)) == EXPECTED
        # a check that covers it closes both: the split is there now
        fixed = validate(lk, ["prices"], ["AAPL"], D(2014, 6, 1), now=NOW)
        assert fixed.total == 0
        still = {k for k in EXPECTED if k[0] != "AAPL"}
        assert keys(cat.violations(latest_only=True)) == still
        # history is kept: every check's rows
        assert len(cat.violations()) == 14 and len(cat.violations(check_id=first.check_id)) == 14
        assert [c[2] for c in cat.violation_checks()] == [0, 0, 0, 14]
        # a full check of one dataset replaces that dataset's open violations
        lk.write(
            "BTC-USD",
            "crypto_bars",
            tiingo_crypto("BTC-USD").filter(
                pc.not_equal(tiingo_crypto("BTC-USD").column("exchange"), "bitfinex")
            ),
            source="tiingo_crypto",
        )
        assert validate(lk, ["crypto_bars"], now=NOW).total == 2  # bitfinex rows remain stored
        # trends: distinct violations per day, rule and severity
        counts = cat.violation_counts(by=("rule", "severity"), period="day")
        today = first.checked_at[:10]
        assert (today, "prices.suspicious_jump", "warning", 1) in counts
        assert (today, "crypto_bars.cross_exchange", "warning", 2) in counts
        assert sum(c[-1] for c in counts) == 14
        assert cat.violation_counts(by=("dataset",), period=None, latest_only=True) == [
            ("bars_minute", 1),
            ("crypto_bars", 2),
            ("fundamentals", 9),
        ]
        with pytest.raises(CatalogError, match="not a subset"):
            cat.violation_counts(by=("detail",))


def test_record_violations_api_and_rule_scopes() -> None:
    with Catalog(":memory:") as cat:
        rows = [
            ViolationRow(
                ticker="A",
                dataset="prices",
                date=D(2024, 1, 2),
                rule="prices.gaps",
                severity="error",
                detail="session 2024-01-02 missing",
            ),
            ViolationRow(
                ticker="A",
                dataset="prices",
                date=D(2023, 12, 29),
                rule="freshness.stale",
                severity="warning",
                detail="late",
                run_id="run-1",
            ),
        ]
        assert cat.record_violations("c1", "2024-01-05T00:00:00.000000Z", rows) == 2
        stored = cat.violations()
        assert [v.check_id for v in stored] == ["c1", "c1"]
        assert {v.rule: v.run_id for v in stored} == {
            "freshness.stale": "run-1",
            "prices.gaps": None,
        }
        # a later data check of prices (row rules) does not close the freshness violation...
        cat.record_violations(
            "c2", "2024-01-06T00:00:00.000000Z", [], scope=[("prices", None, None)]
        )
        assert [v.rule for v in cat.violations(latest_only=True)] == ["freshness.stale"]
        # ...a freshness check of the ticker does
        cat.record_violations(
            "c3",
            "2024-01-07T00:00:00.000000Z",
            [],
            scope=[("prices", "A", None, "freshness.stale")],
        )
        assert cat.violations(latest_only=True) == []
        bad = [ViolationRow(ticker="B", dataset="prices", rule="x", severity="fatal", detail="")]
        with pytest.raises(CatalogError, match="severity 'fatal' is not one of"):
            cat.record_violations("c4", "2024-01-08T00:00:00.000000Z", bad)
        naive = [
            ViolationRow(
                ticker="B",
                dataset="bars_minute",
                ts=dt.datetime(2024, 1, 2),
                rule="x",
                severity="info",
                detail="",
            )
        ]
        with pytest.raises(CatalogError, match="time-zone aware"):
            cat.record_violations("c5", "2024-01-08T00:00:00.000000Z", naive)
        assert len(cat.violations()) == 2  # nothing of c4/c5 stored
        assert cat.prune_violations("2024-01-06T00:00:00.000000Z") == 2
        assert cat.violations() == [] and [c[0] for c in cat.violation_checks()] == ["c3", "c2"]


def test_unreadable_object_is_a_read_error_and_the_rest_is_checked(
    local: Lake, tmp_path: Path
) -> None:
    part = tmp_path / "lake" / "prices" / "v1" / "MSFT" / "2014" / "03" / "data.parquet"
    part.write_bytes(b"not parquet at all")
    result = validate(local, ["prices"], now=NOW)
    errors = [r for r in result.violations.to_pylist() if r["rule"] == "read_error"]
    assert [(r["ticker"], r["dataset"], r["severity"]) for r in errors] == [
        ("MSFT", "prices", "error")
    ]
    assert (
        "prices/v1/MSFT/2014/03/data.parquet is not a readable Parquet file" in errors[0]["detail"]
    )
    assert {k for k in keys(result.violations) if k[2] != "read_error"} == {
        k for k in EXPECTED if k[1] == "prices"
    }


def test_validate_after_batch(local: Lake) -> None:
    result = validate_after_batch(
        local, ["AAPL", "MSFT"], ["prices", "corporate_actions"], "run-7", as_of=D(2014, 6, 12)
    )
    assert result.datasets == ("prices", "freshness")
    assert keys(result.violations) == {k for k in EXPECTED if k[0] == "AAPL"}
    assert {v.run_id for v in local.catalog.violations()} == {"run-7"}
    # ten sessions back from 2014-06-12: the window starts 2014-05-29
    late = validate_after_batch(
        local, ["AAPL"], ["corporate_actions"], "run-8", as_of=D(2014, 6, 24)
    )
    assert late.total == 0  # 2014-06-09 is before the window
    nothing = validate_after_batch(local, ["AAPL"], ["signals_technical"], "run-9")
    assert nothing.datasets == () and nothing.total == 0 and nothing.stored == 0


def test_worker_processes_find_the_same(local: Lake) -> None:
    threads = validate(local, ["prices", "fundamentals"], now=NOW, store=False, processes=0)
    procs = validate(local, ["prices", "fundamentals"], now=NOW, store=False, processes=2)
    assert procs.violations.equals(threads.violations)
    assert procs.rows == threads.rows and procs.total == 11


def test_bad_arguments() -> None:
    with marketlake.open("memory://") as lk:
        with pytest.raises(MarketlakeError, match="no validation rules for dataset 'filings'"):
            validate(lk, ["filings"])
        with pytest.raises(MarketlakeError, match="unknown dataset 'nope'"):
            validate(lk, ["nope"])
        with pytest.raises(MarketlakeError, match=r"unknown rule 'prices\.jump'"):
            validate(lk, params={"prices.jump": {"threshold": 0.3}})
        with pytest.raises(MarketlakeError, match="since='2024-02-30' is not a date"):
            validate(lk, since="2024-02-30")
        empty = validate(lk, now=NOW)
        assert empty.total == 0 and not empty.fails("info")


# --- the command -----------------------------------------------------------------------------


def test_cli_exit_codes_and_formats(local: Lake, tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    local.close()
    res = runner.invoke(app, ["validate", "--lake", lake])
    assert res.exit_code == 1, res.output
    assert (
        "prices.adj_close_consistency" in res.output
        and "14 violations: 5 errors, 9 warnings" in res.output
    )
    res = runner.invoke(app, ["validate", "--lake", lake, "--fail-on", "never", "--limit", "3"])
    assert res.exit_code == 0 and "first 3 of 14 violations" in res.output
    # warnings only: passes unless --fail-on warning
    res = runner.invoke(app, ["validate", "--lake", lake, "--dataset", "crypto_bars"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["validate", "-l", lake, "-d", "crypto_bars,bars_minute", "--fail-on", "warning"]
    )
    assert res.exit_code == 1 and "3 violations: 0 errors, 3 warnings" in res.output
    res = runner.invoke(app, ["validate", "-l", lake, "-d", "prices", "-t", "MSFT"])
    assert res.exit_code == 0 and "no violations" in res.output
    # machine-readable output
    res = runner.invoke(
        app, ["validate", "-l", lake, "-d", "fundamentals", "--format", "csv", "--no-store"]
    )
    assert res.exit_code == 1
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 9 and {r["ticker"] for r in table} == {"MUR"}
    assert set(table[0]) == {"ticker", "dataset", "date", "ts", "rule", "severity", "detail"}
    res = runner.invoke(app, ["validate", "-l", lake, "-d", "crypto_bars", "--format", "json"])
    doc = json.loads(res.stdout)
    assert doc["by_severity"] == {"error": 0, "warning": 2, "info": 0}
    assert doc["violations"][0]["ts"] == "2019-05-01T00:00:00+00:00"
    # errors: one line, exit 1; bad usage: exit 2
    res = runner.invoke(app, ["validate", "-l", lake, "-d", "filings"])
    assert (
        res.exit_code == 1 and res.output.count("\n") == 1 and "no validation rules" in res.output
    )
    assert runner.invoke(app, ["validate", "-l", lake, "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["validate", "-l", lake, "--fail-on", "fatal"]).exit_code == 2
    assert runner.invoke(app, ["validate", "-l", lake, "--since", "2024-13-01"]).exit_code == 2
    with marketlake.open(lake) as lk:  # the --no-store run left no trace
        checks = lk.catalog.violation_checks(limit=100)
        assert len(checks) == 6
