"""The command line: every command has --help; demo, ingest, read, runs, catalog, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["demo"],
        ["ingest"],
        ["read"],
        ["runs"],
        ["datasets"],
        ["sources"],
        ["catalog"],
        ["catalog", "rebuild"],
        ["catalog", "show"],
    ],
)
def test_help(args: list[str]) -> None:
    res = runner.invoke(app, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_demo_builds_an_idempotent_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    res = runner.invoke(
        app,
        ["demo", "--lake", str(lake), "--tickers", "5", "--years", "1", "--as-of", "2024-06-14"],
    )
    assert res.exit_code == 0, res.output
    assert "idempotent: 0 objects rewritten" in res.output
    assert (lake / "prices/v1/AAPL/2024/06/data.parquet").exists()
    assert (lake / "fundamentals/v1/AAPL/data.parquet").exists()
    meta = json.loads((lake / "_meta/v1/prices/AAPL.json").read_text())
    assert meta["max_date"] == "2024-06-14" and meta["min_date"].startswith("2023-06")
    # reading back through the CLI
    out = runner.invoke(
        app,
        [
            "read",
            "aapl",
            "--lake",
            str(lake),
            "--start",
            "2024-06-10",
            "--end",
            "2024-06-14",
            "--format",
            "csv",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert lines[0].replace('"', "") == "date,open,high,low,close,adj_close,volume"
    assert len(lines) == 6
    pq_file = tmp_path / "x.parquet"
    out = runner.invoke(
        app,
        [
            "read",
            "MSFT",
            "--lake",
            str(lake),
            "--format",
            "parquet",
            "--output",
            str(pq_file),
            "--columns",
            "close",
        ],
    )
    assert out.exit_code == 0, out.output
    assert pq.read_table(pq_file).column_names == ["date", "close"]
    table = runner.invoke(app, ["read", "MSFT", "--lake", str(lake), "--limit", "3"])
    assert table.exit_code == 0 and "MSFT prices" in table.stdout
    runs = runner.invoke(app, ["runs", "--lake", str(lake)])
    assert runs.exit_code == 0 and runs.stdout.count("completed") >= 4
    show = runner.invoke(app, ["catalog", "show", "--lake", str(lake)])
    assert show.exit_code == 0 and "signals_technical" in show.stdout
    rebuilt = runner.invoke(app, ["catalog", "rebuild", "--lake", str(lake)])
    assert rebuilt.exit_code == 0 and "partitions" in rebuilt.stdout


def test_ingest_and_resume(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    universe = tmp_path / "u.txt"
    universe.write_text("# my universe\naapl\nmsft  # comment\n\n")
    res = runner.invoke(
        app,
        [
            "ingest",
            "--lake",
            lake,
            "--universe",
            str(universe),
            "--tickers",
            "IBM",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-31",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "completed" in res.stdout
    again = runner.invoke(
        app, ["ingest", "--lake", lake, "--start", "2024-01-02", "--end", "2024-01-31"]
    )  # tickers from the catalog's assets
    assert again.exit_code == 0, again.output
    assert " 0 " in again.stdout.splitlines()[-2]  # objects written column is 0
    run_id = again.stdout.split("run ")[1].split(":")[0]
    resumed = runner.invoke(app, ["ingest", "--lake", lake, "--resume", run_id])
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["read", "../etc", "--start", "2024-01-01", "--end", "2024-01-02"], 1, "path separator"),
        (["read", "AAPL", "--dataset", "nope"], 1, "unknown dataset"),
        (["read", "AAPL", "--start", "yesterday"], 2, "YYYY-MM-DD"),
        (["read", "AAPL", "--format", "xlsx"], 2, "table, csv or parquet"),
        (["ingest", "--date", "2024-01-02"], 1, "no tickers"),
        (["ingest", "--tickers", "AAPL"], 2, "--date"),
        (
            ["ingest", "--tickers", "AAPL", "--date", "2024-01-02", "--source", "nope"],
            1,
            "unknown source",
        ),
        (["ingest", "--resume", "nope"], 1, "marketlake runs"),
        (["runs", "nope"], 1, "marketlake runs"),
    ],
)
def test_errors_are_one_clear_line(
    tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    marketlake.open(str(tmp_path / "lake")).close()
    res = runner.invoke(app, [*args, "--lake", str(tmp_path / "lake")])
    assert res.exit_code == code, res.output
    assert fragment in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["read", "AAPL"],
        ["sql", "SELECT count(*) FROM prices"],
        ["export", "prices", "--tickers", "AAPL", "--output", "out.csv"],
        ["status"],
        ["runs"],
        ["validate"],
        ["compact"],
        ["report", "coverage", "--output", "report-dir"],
    ],
)
def test_read_only_commands_refuse_a_missing_lake_and_create_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "typo"
    args = [str(tmp_path / a) if a in ("out.csv", "report-dir") else a for a in args]
    res = runner.invoke(app, [*args, "--lake", str(missing)])
    assert res.exit_code == 1, res.output
    assert f"no marketlake lake at {missing}" in res.output
    assert "marketlake ingest" in res.output  # how to create one
    assert "Traceback" not in res.output
    assert not missing.exists()


def test_failed_items_exit_3_and_name_resume(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    res = runner.invoke(
        app,
        [
            "ingest",
            "--lake",
            lake,
            "--tickers",
            "AAPL",
            "--date",
            "2024-01-02",
            "--datasets",
            "prices,nope",
        ],
    )
    assert res.exit_code == 1 and "unknown dataset 'nope'" in res.output


def test_datasets_and_sources() -> None:
    res = runner.invoke(app, ["datasets"])
    assert res.exit_code == 0 and "period_end" in res.stdout and "signals_valuation" in res.stdout
    res = runner.invoke(app, ["sources"])
    assert res.exit_code == 0 and "synthetic" in res.stdout


def test_daily_ingest_validates_what_it_wrote(tmp_path: Path) -> None:
    import marketlake

    url = str(tmp_path / "lake")
    args = ["ingest", "--lake", url, "--tickers", "AAPL,MSFT", "--datasets", "prices"]
    res = runner.invoke(app, [*args, "--date", "2024-06-14"])
    assert res.exit_code == 0, res.output
    assert "validated 2 ticker(s): 0 error(s)" in res.output
    with marketlake.open(url) as lk:
        assert lk.catalog.violation_checks()  # the check is recorded
    quiet = runner.invoke(app, [*args, "--date", "2024-06-17", "--no-validate"])
    assert quiet.exit_code == 0 and "validated" not in quiet.output
