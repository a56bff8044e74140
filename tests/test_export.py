"""Streaming exports (query/export.py, ``marketlake export``): CSV and Parquet round-trip to
read_batch's data with the right types, chunked reads, atomic files (nothing left on error),
per-ticker errors, the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake, MarketlakeError
from marketlake.cli.main import app
from marketlake.ingest.batch import run_batch
from marketlake.query.export import export
from marketlake.sources.synthetic import SyntheticSource

D = dt.date
TICKERS = [f"X{i:02d}" for i in range(30)]
runner = CliRunner()


@pytest.fixture(scope="module")
def lake_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("export") / "lake"
    with marketlake.open(path, fsync=False) as lake:
        run_batch(
            lake,
            SyntheticSource(),
            TICKERS,
            ["prices", "fundamentals"],
            D(2023, 7, 3),
            D(2024, 6, 28),
            workers=4,
        )
    return str(path)


@pytest.fixture
def lake(lake_path: str) -> Iterator[Lake]:
    with marketlake.open(lake_path) as lk:
        yield lk


def _csv(path: Path, schema: pa.Schema) -> pa.Table:
    types = {f.name: f.type for f in schema}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))


def test_csv_and_parquet_round_trip(lake: Lake, tmp_path: Path) -> None:
    tickers = ["X03", "x04", "X05"]  # normalised like read_batch
    want = lake.read_batch(tickers, "prices", "2024-01-01", "2024-03-31", output="arrow").data
    res = export(lake, tickers, "prices", tmp_path / "p.csv", start="2024-01-01", end="2024-03-31")
    assert (res.rows, res.tickers, res.missing, res.errors) == (want.num_rows, 3, [], {})
    assert res.bytes == (tmp_path / "p.csv").stat().st_size > 0
    got = _csv(tmp_path / "p.csv", want.schema)
    assert got.column_names == [
        "ticker",
        "date",
        "open",
        "high",
        "low",
        "close",
        "adj_close",
        "volume",
    ]
    assert got.cast(want.schema).equals(want)

    res = export(
        lake,
        tickers,
        "prices",
        tmp_path / "p.parquet",
        start=D(2024, 1, 1),
        end=D(2024, 3, 31),
        format="parquet",
    )
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.schema.equals(want.schema, check_metadata=False)  # date32, float64, int64
    assert back.equals(want) and res.rows == want.num_rows
    # pandas sees the same dtypes as read_batch's pandas output
    pdf = lake.read_batch(tickers, "prices", "2024-01-01", "2024-03-31").data
    frame = back.to_pandas(date_as_object=False, coerce_temporal_nanoseconds=True)
    assert dict(frame.dtypes) == dict(pdf.dtypes)


def test_columns_and_other_datasets(lake: Lake, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    res = export(
        lake,
        ["X01", "X02"],
        "fundamentals",
        out,
        columns=["revenue", "net_income"],
        format="parquet",
    )
    want = lake.read_batch(
        ["X01", "X02"], "fundamentals", columns=["revenue", "net_income"], output="arrow"
    ).data
    assert pq.read_table(out).equals(want) and res.rows == want.num_rows > 0
    assert want.column_names == ["ticker", "period_end", "revenue", "net_income"]


def test_streams_in_chunks_all_tickers(lake: Lake, tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[int] = []
    real = lake.read_batch

    def spy(tickers: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(tickers))
        return real(tickers, *args, **kwargs)

    monkeypatch.setattr(lake, "read_batch", spy)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "all.parquet"
    res = export(
        lake,
        None,
        "prices",
        out,
        start="2024-06-01",
        format="parquet",
        chunk_tickers=7,
        progress=lambda done, total: seen.append((done, total)),
    )
    # the schema probe reads nothing, then 5 chunks of at most 7 tickers
    assert calls == [0, 7, 7, 7, 7, 2] and res.chunks == 5
    assert seen == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 5 and meta.num_rows == res.rows
    assert res.tickers == 30
    monkeypatch.undo()
    want = lake.read_batch(TICKERS, "prices", "2024-06-01", output="arrow").data
    assert pq.read_table(out).equals(want)


def test_atomic_on_error_mid_export(lake: Lake, tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "x.csv"
    out.write_text("previous export\n")
    real = lake.read_batch
    chunks = [0]

    def failing(tickers: list[str], *args: Any, **kwargs: Any) -> Any:
        if tickers:
            chunks[0] += 1
            if chunks[0] == 3:
                raise OSError("disk full (injected)")
        return real(tickers, *args, **kwargs)

    monkeypatch.setattr(lake, "read_batch", failing)
    for fmt in ("csv", "parquet"):
        with pytest.raises(OSError, match="injected"):
            export(lake, TICKERS, "prices", out, format=fmt, chunk_tickers=5)  # type: ignore[arg-type]
        chunks[0] = 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]  # no temporary left
        assert out.read_text() == "previous export\n"  # the old file is untouched


def test_missing_invalid_and_bad_arguments(lake: Lake, tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    res = export(
        lake, ["X01", "NOPE", "a/b", "X01"], "prices", out, start="2024-06-03", end="2024-06-07"
    )
    assert res.tickers == 1 and res.missing == ["NOPE"] and list(res.errors) == ["a/b"]
    assert res.rows == 5
    for kwargs, message in [
        ({"dataset": "nope"}, "nope"),
        ({"columns": ["bogus"]}, "unknown column"),
        ({"format": "xlsx"}, "format='xlsx'"),
        ({"adjust": "splits", "dataset": "fundamentals"}, "prices dataset only"),
        ({"path": tmp_path / "no" / "such.csv"}, "does not exist"),
        ({"path": tmp_path}, "is a directory"),
    ]:
        args: dict[str, Any] = {"dataset": "prices", "path": tmp_path / "bad.csv", **kwargs}
        with pytest.raises(MarketlakeError, match=message):
            export(lake, ["X01"], args.pop("dataset"), args.pop("path"), **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_adjusted_export_equals_adjusted_read(lake: Lake, tmp_path: Path) -> None:
    out = tmp_path / "adj.parquet"
    export(lake, TICKERS[:6], "prices", out, format="parquet", adjust="total", chunk_tickers=4)
    want = lake.read_batch(TICKERS[:6], "prices", adjust="total", output="arrow").data
    assert pq.read_table(out).equals(want)


def test_empty_export_still_has_a_header(lake: Lake, tmp_path: Path) -> None:
    res = export(lake, ["NOPE"], "prices", tmp_path / "e.csv")
    assert res.rows == 0 and res.missing == ["NOPE"]
    assert (tmp_path / "e.csv").read_text().strip().startswith('"ticker","date","open"')


def test_cli_export(lake_path: str, tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    res = runner.invoke(
        app,
        [
            "export",
            "prices",
            "--lake",
            lake_path,
            "--tickers",
            "X01,X02",
            "--start",
            "2024-05-01",
            "--end",
            "2024-05-31",
            "--output",
            str(out),
        ],
    )  # format from the suffix
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stderr and "of 2 ticker(s)" in res.stderr
    with marketlake.open(lake_path) as lk:
        want = lk.read_batch(["X01", "X02"], "prices", "2024-05-01", "2024-05-31", output="arrow")
        assert pq.read_table(out).equals(want.data)
    csv_out = tmp_path / "all.csv"
    res = runner.invoke(
        app,
        [
            "export",
            "prices",
            "-l",
            lake_path,
            "--all",
            "--start",
            "2024-06-28",
            "-f",
            "csv",
            "-o",
            str(csv_out),
            "--chunk",
            "8",
            "--columns",
            "close",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = csv_out.read_text().strip().splitlines()
    assert lines[0] == '"ticker","date","close"' and len(lines) == 31
    # usage errors (exit 2) and a failed ticker (exit 3, the file is written)
    res = runner.invoke(app, ["export", "prices", "-l", lake_path, "-o", str(csv_out)])
    assert res.exit_code == 2 and "exactly one of" in res.output
    res = runner.invoke(
        app, ["export", "prices", "-l", lake_path, "-t", "X01,a/b", "-o", str(csv_out)]
    )
    assert res.exit_code == 3 and "failed: a/b" in res.stderr
    res = runner.invoke(app, ["export", "nope", "-l", lake_path, "--all", "-o", str(csv_out)])
    assert res.exit_code == 1 and res.stderr.startswith("error:")
