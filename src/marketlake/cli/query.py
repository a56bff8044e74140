"""Query commands: ``sql`` (DuckDB over the lake's datasets) and ``export`` (streaming CSV /
Parquet). Registered on the main app by :mod:`marketlake.cli.main`."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.table import Table

from marketlake.cli.main import (
    DEFAULT_LAKE,
    LakeOpt,
    _date,
    _fmt,
    _read_universe,
    _run,
    app,
    err,
    out,
)
from marketlake.errors import MarketlakeError

SQL_FORMATS = ("table", "csv", "parquet", "json")


@app.command("sql")
def sql_command(
    query: Annotated[
        str, typer.Argument(help='One SELECT statement, e.g. "SELECT * FROM prices WHERE ...".')
    ],
    lake: LakeOpt = DEFAULT_LAKE,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, parquet or json (JSON Lines).")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown by --format table (0 = all).")] = 50,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show what would be read (tickers, dates, files).")
    ] = False,
    max_tickers: Annotated[
        int | None,
        typer.Option(help="Refuse a query that reads more tickers than this from one table."),
    ] = None,
) -> None:
    """Run SQL over the lake: one table per dataset (prices, signals_technical, ...) with a
    ticker column. Filter on ticker and date so that only those files are read."""
    if fmt not in SQL_FORMATS:
        raise typer.BadParameter("use table, csv, parquet or json", param_hint="--format")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("parquet output needs --output FILE", param_hint="--output")

    def go() -> None:
        import marketlake
        from marketlake.query.sql import describe_scan, plan_sql, run_sql

        with marketlake.open(lake, create=False) as lk:
            if explain:
                plan = plan_sql(lk, query)
                for scan in plan.scans:
                    out.print(describe_scan(scan), highlight=False, soft_wrap=True)
                out.print(f"{plan.objects_read} partition(s) in all", highlight=False)
                _warn(plan.warnings)
                return
            res = run_sql(lk, query, output="arrow", tickers_limit=max_tickers)
        _warn(res.warnings)
        _emit(res.data, fmt, output, limit)

    _run(go)


def _warn(warnings: list[str]) -> None:
    for text in warnings:
        err.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def _emit(table: Any, fmt: str, output: Path | None, limit: int) -> None:
    """Print or write an Arrow table: a Rich table (first ``limit`` rows), CSV, Parquet or JSON
    Lines. Files are written under a temporary name and renamed into place."""
    if fmt == "table":
        shown = table if limit <= 0 else table.slice(0, limit)
        note = f" (first {shown.num_rows}; --limit 0 or --format csv for all)"
        t = Table(
            title=f"{table.num_rows} row(s)" + (note if shown.num_rows < table.num_rows else "")
        )
        for name in shown.column_names:
            t.add_column(name, justify="right")
        for row in shown.to_pylist():
            t.add_row(*[_fmt(v) for v in row.values()])
        out.print(t)
        return
    if output is None:
        sink = sys.stdout.buffer
        _write(table, fmt, sink)
        sink.flush()
        return
    if output.is_dir() or not output.parent.is_dir():
        raise MarketlakeError(f"cannot write {output}: not a file in an existing directory")
    tmp = output.with_name(f".{output.name}.part")
    try:
        with tmp.open("wb") as fh:
            _write(table, fmt, fh)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    err.print(f"wrote {table.num_rows} row(s) to {output}", highlight=False)


def _write(table: Any, fmt: str, sink: IO[bytes]) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, sink, compression="zstd")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sink)
    else:
        for batch in table.to_batches(max_chunksize=10_000):
            for row in batch.to_pylist():
                line = json.dumps({k: _json_value(v) for k, v in row.items()}, allow_nan=False)
                sink.write(line.encode() + b"\n")


def _json_value(value: Any) -> Any:
    """A JSON-safe value: dates and times in ISO 8601, NaN/inf as null, decimals as numbers."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return float(value) if value.as_tuple().exponent else int(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


@app.command("export")
def export_command(
    dataset: Annotated[str, typer.Argument(help="Dataset to export, e.g. prices.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Target file (replaced).")],
    lake: LakeOpt = DEFAULT_LAKE,
    tickers: Annotated[
        str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers.")
    ] = None,
    universe: Annotated[
        Path | None, typer.Option(help="File with one ticker per line ('#' comments).")
    ] = None,
    all_tickers: Annotated[
        bool, typer.Option("--all", help="Every ticker the catalog lists for the dataset.")
    ] = False,
    start: Annotated[str | None, typer.Option(help="First date, inclusive (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, inclusive (YYYY-MM-DD).")] = None,
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="csv or parquet (default: from the file suffix)."),
    ] = None,
    adjust: Annotated[
        str, typer.Option(help="prices only: none (raw, default), splits or total.")
    ] = "none",
    chunk: Annotated[int, typer.Option(help="Tickers read per chunk (the memory bound).")] = 100,
) -> None:
    """Export a dataset to CSV or Parquet, streaming ticker chunks (a universe-wide export
    never holds everything in memory). The file appears only when complete."""
    chosen = sum(x for x in (tickers is not None, universe is not None, all_tickers))
    if chosen != 1:
        raise typer.BadParameter(
            "give exactly one of --tickers A,B, --universe FILE or --all", param_hint="--tickers"
        )
    kind = fmt or ("parquet" if output.suffix.lower() in (".parquet", ".pq") else "csv")
    if kind not in ("csv", "parquet"):
        raise typer.BadParameter("use csv or parquet", param_hint="--format")
    if chunk < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--chunk")

    def go() -> None:
        import marketlake
        from marketlake.query.export import export

        names: list[str] | None = None
        if tickers is not None:
            names = [t.strip() for t in tickers.split(",") if t.strip()]
        elif universe is not None:
            names = _read_universe(universe)
        cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        first, last = _date(start, "--start"), _date(end, "--end")
        with marketlake.open(lake, create=False) as lk, _Bar() as bar:
            res = export(
                lk,
                names,
                dataset,
                output,
                start=first,
                end=last,
                columns=cols,
                format=kind,  # type: ignore[arg-type]  # checked above
                adjust=adjust,  # type: ignore[arg-type]  # validated by read_batch
                chunk_tickers=chunk,
                progress=bar.update,
            )
        err.print(
            f"wrote {res.rows:,} row(s) of {res.tickers} ticker(s) to {res.path} "
            f"({res.bytes:,} bytes); {len(res.missing)} without rows, {len(res.errors)} failed",
            highlight=False,
        )
        for ticker, exc in list(res.errors.items())[:10]:
            err.print(f"[red]failed:[/red] {ticker}: {exc}", highlight=False, soft_wrap=True)
        if res.errors:
            raise typer.Exit(3)

    _run(go)


class _Bar:
    """A Rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, done: int, total: int) -> None:
        """Progress callback of :func:`~marketlake.query.export.export`."""
        if self.task is None:
            self.task = self.progress.add_task("exporting tickers", total=total)
        self.progress.update(self.task, completed=done, total=total)
