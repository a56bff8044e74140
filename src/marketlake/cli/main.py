"""The ``marketlake`` command line (Typer). Thin: parses options, calls the library, prints.

Every :class:`~marketlake.errors.MarketlakeError` becomes one line ``error: ...`` on stderr and
exit code 1; bad usage is exit code 2 (Typer's).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from marketlake.errors import MarketlakeError

T = TypeVar("T")

app = typer.Typer(
    name="marketlake",
    help="A self-hosted market-data lake: ticker-first Parquet on object storage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Inspect and rebuild the catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


def _console(stderr: bool = False) -> Console:
    """A console; when output is not a terminal (pipes, logs, CI) tables get room, not '…'."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=200)


out = _console()
err = _console(stderr=True)

LakeOpt = Annotated[
    str,
    typer.Option(
        "--lake",
        "-l",
        envvar="MARKETLAKE_LAKE",
        help="Lake URL: a local path, file:///path, memory:// or s3://bucket/prefix.",
    ),
]
DEFAULT_LAKE = "./lake"


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except MarketlakeError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted; a rerun (or 'marketlake ingest --resume RUN_ID') finishes the work")
        raise typer.Exit(130) from None


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date; use YYYY-MM-DD", param_hint=name
        ) from None


def _setup_logging(verbose: bool, log_file: Path | None) -> None:
    root = logging.getLogger("marketlake")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
        root.addHandler(fh)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO)
    if not verbose:  # per-item lines go to --log-file only, unless --verbose
        console.addFilter(
            lambda r: r.name != "marketlake.ingest.items" or r.levelno >= logging.WARNING
        )
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)


def _progress() -> Any:
    from marketlake.ingest.progress import LogProgress, RichProgress

    return RichProgress(err) if err.is_terminal else LogProgress()


def _read_universe(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MarketlakeError(f"cannot read universe file {path}: {exc.strerror}") from None
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


# --- commands ----------------------------------------------------------------------------------


@app.command()
def demo(
    lake: LakeOpt = DEFAULT_LAKE,
    tickers: Annotated[int, typer.Option(help="How many tickers to backfill.")] = 50,
    years: Annotated[int, typer.Option(help="Years of history to backfill.")] = 2,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Last session to collect (YYYY-MM-DD); default: the last NYSE session "
            "before today."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker threads.")] = 16,
) -> None:
    """Build a demo lake from the synthetic source: backfill, two daily batches, an idempotent
    re-run, then a summary and a sample read. No network, no credentials."""
    from marketlake.demo import run_demo

    _run(
        lambda: run_demo(
            lake,
            n_tickers=tickers,
            years=years,
            as_of=_date(as_of, "--as-of"),
            workers=workers,
            console=out,
        )
    )


@app.command()
def ingest(
    lake: LakeOpt = DEFAULT_LAKE,
    date: Annotated[
        str | None, typer.Option("--date", "-d", help="One session to collect (YYYY-MM-DD).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First session of a range (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last session of a range (inclusive).")] = None,
    tickers: Annotated[
        str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers.")
    ] = None,
    universe: Annotated[
        Path | None, typer.Option(help="File with one ticker per line (# comments).")
    ] = None,
    source: Annotated[
        str, typer.Option(help="Source name (see 'marketlake sources').")
    ] = "synthetic",
    datasets: Annotated[
        str, typer.Option(help="Comma-separated datasets.")
    ] = "prices,signals_valuation,signals_technical",
    workers: Annotated[int, typer.Option(help="Worker threads.")] = 16,
    resume: Annotated[
        str | None, typer.Option(help="Re-run only the unfinished items of RUN_ID.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every item.")] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Also write every log line to this file.")
    ] = None,
) -> None:
    """Collect data for tickers x datasets into the lake (a daily batch or a backfill range).

    Dates are inclusive exchange session dates. Safe to re-run: an identical batch rewrites no
    object. A failed item does not stop the others; see 'marketlake runs RUN_ID' and resume with
    --resume RUN_ID.
    """
    _setup_logging(verbose, log_file)

    def go() -> None:
        import marketlake
        from marketlake.ingest.batch import resume_batch, run_batch
        from marketlake.sources.registry import get_source

        with marketlake.open(lake) as lk:
            if resume:
                summary = resume_batch(lk, resume, workers=workers, progress=_progress())
            else:
                day = _date(date, "--date")
                lo = _date(start, "--start") or day
                hi = _date(end, "--end") or day
                if lo is None or hi is None:
                    raise typer.BadParameter(
                        "give --date D, or --start and --end", param_hint="--date"
                    )
                names: list[str] = []
                if tickers:
                    names += [t for t in tickers.split(",") if t.strip()]
                if universe:
                    names += _read_universe(universe)
                if not names:
                    names = sorted({a.ticker for a in lk.catalog.assets(active_only=True)})
                if not names:
                    raise MarketlakeError(
                        "no tickers: pass --tickers AAPL,MSFT or --universe FILE (the lake has no "
                        "assets yet)"
                    )
                kind = "daily" if lo == hi else "backfill"
                summary = run_batch(
                    lk,
                    get_source(source),
                    names,
                    [d.strip() for d in datasets.split(",") if d.strip()],
                    lo,
                    hi,
                    kind=kind,
                    workers=workers,
                    progress=_progress(),
                )
            _print_summary(summary)
            if summary.items_failed:
                raise typer.Exit(3)

    _run(go)


def _print_summary(summary: Any) -> None:
    t = Table(title=f"run {summary.run_id}: {summary.status}", show_header=True)
    for col in (
        "items",
        "completed",
        "failed",
        "rows fetched",
        "added",
        "updated",
        "objects written",
        "seconds",
    ):
        t.add_column(col, justify="right")
    t.add_row(
        str(summary.items_total),
        str(summary.items_completed),
        str(summary.items_failed),
        str(summary.rows_fetched),
        str(summary.rows_added),
        str(summary.rows_updated),
        str(summary.objects_written),
        f"{summary.seconds:.2f}",
    )
    out.print(t)
    for item in summary.failures[:20]:
        err.print(f"[red]failed[/red] {item.dataset} {item.ticker}: {item.error}", highlight=False)
    if summary.items_failed:
        err.print(
            f"{summary.items_failed} item(s) failed; retry them with: "
            f"marketlake ingest --resume {summary.run_id}"
        )


@app.command()
def read(
    ticker: Annotated[str, typer.Argument(help="Ticker, e.g. AAPL.")],
    lake: LakeOpt = DEFAULT_LAKE,
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "prices",
    start: Annotated[str | None, typer.Option(help="First date, inclusive (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, inclusive (YYYY-MM-DD).")] = None,
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or parquet.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown by --format table (0 = all).")] = 20,
) -> None:
    """Read one ticker's rows (raw, unadjusted prices for 'prices'); dates inclusive."""
    if fmt not in ("table", "csv", "parquet"):
        raise typer.BadParameter("use table, csv or parquet", param_hint="--format")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("parquet output needs --output FILE", param_hint="--output")

    def go() -> None:
        import marketlake

        cols = [c.strip() for c in columns.split(",")] if columns else None
        with marketlake.open(lake) as lk:
            table = lk.read(
                ticker,
                dataset,
                _date(start, "--start"),
                _date(end, "--end"),
                columns=cols,
                output="arrow",
            )
        _emit_table(table, fmt, output, limit, title=f"{ticker.upper()} {dataset}")

    _run(go)


def _emit_table(table: Any, fmt: str, output: Path | None, limit: int, title: str) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        assert output is not None
        tmp = output.with_name(f".{output.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(output)
        err.print(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt == "csv":
        if output is None:
            sink = sys.stdout.buffer
            pacsv.write_csv(table, sink)
            sink.flush()
        else:
            tmp = output.with_name(f".{output.name}.tmp")
            pacsv.write_csv(table, tmp)
            tmp.replace(output)
            err.print(f"wrote {table.num_rows} rows to {output}")
        return
    shown = table if limit <= 0 else table.slice(max(0, table.num_rows - limit))
    t = Table(
        title=f"{title}: {table.num_rows} rows"
        + (f" (last {shown.num_rows})" if shown.num_rows < table.num_rows else "")
    )
    for name in shown.column_names:
        t.add_column(name, justify="right")
    for row in shown.to_pylist():
        t.add_row(*[_fmt(v) for v in row.values()])
    out.print(t)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@app.command()
def runs(
    run_id: Annotated[str | None, typer.Argument(help="Show this run's items.")] = None,
    lake: LakeOpt = DEFAULT_LAKE,
    limit: Annotated[int, typer.Option(help="How many runs to list.")] = 20,
) -> None:
    """List recent runs, or show one run's failed items."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake) as lk:
            if run_id is None:
                t = Table(title="runs (newest first)")
                for col in (
                    "run id",
                    "kind",
                    "source",
                    "status",
                    "items",
                    "completed",
                    "failed",
                    "started",
                    "finished",
                ):
                    t.add_column(col)
                for r in lk.catalog.list_runs(limit):
                    t.add_row(
                        r.run_id,
                        r.kind,
                        r.source,
                        r.status,
                        str(r.items_total),
                        str(r.items_completed),
                        str(r.items_failed),
                        r.started_at,
                        r.finished_at or "-",
                    )
                out.print(t)
                return
            r = lk.catalog.get_run(run_id)
            out.print(
                f"run {r.run_id} ({r.kind}, {r.source}): {r.status}, {r.items_completed}/"
                f"{r.items_total} completed, {r.items_failed} failed; params {r.params}"
            )
            failed = lk.catalog.run_items(run_id, status="failed")
            for item in failed[:50]:
                out.print(f"  failed {item.dataset} {item.ticker}: {item.error}", highlight=False)

    _run(go)


@app.command()
def datasets() -> None:
    """List the datasets, their key columns, layouts and columns."""
    from marketlake.schemas.datasets import list_datasets

    t = Table(title="datasets")
    for col in ("name", "key", "layout", "columns"):
        t.add_column(col)
    for d in list_datasets():
        t.add_row(d.name, ",".join(d.key), d.layout, ", ".join(d.schema.names))
    out.print(t)


@app.command()
def sources() -> None:
    """List the data sources, the datasets each fills and the settings each needs."""
    from marketlake.sources.registry import list_sources

    t = Table(title="sources")
    for col in ("name", "datasets", "settings", "description"):
        t.add_column(col)
    for s in list_sources():
        t.add_row(s.name, ", ".join(s.datasets), ", ".join(s.settings) or "(none)", s.description)
    out.print(t)


@catalog_app.command("rebuild")
def catalog_rebuild(lake: LakeOpt = DEFAULT_LAKE) -> None:
    """Rebuild the catalog's partitions and assets from the _meta objects in the store."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake) as lk:
            n = lk.rebuild_catalog()
        out.print(f"catalog rebuilt from the store: {n} partitions")

    _run(go)


@catalog_app.command("show")
def catalog_show(lake: LakeOpt = DEFAULT_LAKE) -> None:
    """Summarise what the catalog holds per dataset: tickers, partitions, rows, bytes."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake) as lk:
            agg: dict[str, list[Any]] = {}
            for p in lk.catalog.partitions():
                a = agg.setdefault(p.dataset, [set(), 0, 0, 0, None, None])
                a[0].add(p.ticker)
                a[1] += 1
                a[2] += p.row_count
                a[3] += p.bytes
                a[4] = min(filter(None, [a[4], p.min_date]), default=None)
                a[5] = max(filter(None, [a[5], p.max_date]), default=None)
            t = Table(title=f"catalog of {lk.url}")
            for col in ("dataset", "tickers", "partitions", "rows", "MB", "first", "last"):
                t.add_column(col, justify="right")
            for name, a in sorted(agg.items()):
                t.add_row(
                    name,
                    str(len(a[0])),
                    str(a[1]),
                    f"{a[2]:,}",
                    f"{a[3] / 1e6:.1f}",
                    str(a[4]),
                    str(a[5]),
                )
            out.print(t)

    _run(go)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("POLARS_SKIP_CPU_CHECK", "1")
    app()


if __name__ == "__main__":
    main()
