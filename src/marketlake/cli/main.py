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
    except typer.BadParameter as exc:  # raised inside a command (e.g. a bad date): one line
        err.print(f"[red]error:[/red] {exc.format_message()}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
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
    workers: Annotated[
        int | None,
        typer.Option(
            help="Items in flight (worker threads). Default: 16 for a local lake, 48 for an "
            "S3/R2 lake (each item waits on network round trips).",
            min=1,
        ),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Re-run only the unfinished items of RUN_ID.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every item.")] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Also write every log line to this file.")
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate",
            help="After a one-session batch, run the data-quality rules on what it wrote.",
        ),
    ] = True,
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
            if not resume and validate and kind == "daily":
                wanted = [d.strip() for d in datasets.split(",") if d.strip()]
                _validate_after(lk, names, wanted, summary.run_id, hi)
            if summary.items_failed:
                raise typer.Exit(3)

    _run(go)


@app.command()
def derive(
    lake: LakeOpt = DEFAULT_LAKE,
    tickers: Annotated[
        str | None,
        typer.Option("--tickers", "-t", help="Comma-separated tickers (default: all with prices)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Write rows from this session on (YYYY-MM-DD); tickers whose inputs changed "
            "earlier (a new split, a late filing) get their full history. Default: full history."
        ),
    ] = None,
    datasets: Annotated[
        str, typer.Option(help="Comma-separated derived datasets.")
    ] = "signals_technical,signals_valuation",
    full: Annotated[
        bool, typer.Option("--full", help="Rewrite the full history of every ticker.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Worker threads.", min=1)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every item.")] = False,
) -> None:
    """Recompute the derived signal datasets from the lake's prices, corporate actions and
    fundamentals: technical indicators on split-adjusted prices, valuation ratios point in time.

    Idempotent (a re-run writes nothing) and resumable ('marketlake ingest --resume RUN_ID').
    The daily batch already derives the signals it is asked for; use this after importing
    history, after a backfill, or to rebuild.
    """
    _setup_logging(verbose, None)

    def go() -> None:
        import marketlake
        from marketlake.ingest.derive import run_derive

        names = [t for t in (tickers or "").split(",") if t.strip()] or None
        with marketlake.open(lake, create=False) as lk:
            summary = run_derive(
                lk,
                names,
                [d.strip() for d in datasets.split(",") if d.strip()],
                _date(start, "--start"),
                full=full,
                workers=workers,
                progress=_progress(),
            )
            _print_summary(summary)
            if summary.items_failed:
                raise typer.Exit(3)

    _run(go)


@app.command()
def compact(
    lake: LakeOpt = DEFAULT_LAKE,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="Dataset to compact (repeatable; default: all monthly)."),
    ] = None,
    tickers: Annotated[
        str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers (default: all).")
    ] = None,
    before: Annotated[
        str | None,
        typer.Option(help="Fold months before this one (YYYY-MM); default: the current month."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be folded.")
    ] = False,
) -> None:
    """Fold each ticker's closed monthly partitions into one history object, so long reads
    fetch two objects instead of one per month. Invisible to readers (same rows); the current
    month keeps its monthly key; a re-run with nothing new writes nothing."""

    def go() -> None:
        import marketlake

        names = [t for t in (tickers or "").split(",") if t.strip()] or None
        with marketlake.open(lake, create=False) as lk:
            s = lk.compact(dataset or None, names, before=before, dry_run=dry_run)
        verb = "would fold" if s.dry_run else "folded"
        out.print(
            f"{verb} {s.partitions_folded} partition(s) of {s.tickers} ticker(s) before "
            f"{s.before}; {s.objects_written} object(s) written, {s.objects_deleted} deleted "
            f"in {s.seconds:.2f} s",
            highlight=False,
        )
        for what, exc in list(s.errors.items())[:20]:
            err.print(f"[red]failed[/red] {what}: {exc}", highlight=False, soft_wrap=True)
        if s.errors:
            raise typer.Exit(3)

    _run(go)


def _validate_after(
    lk: Any, tickers: list[str], datasets: list[str], run_id: str, day: Any
) -> None:
    """Run the data-quality rules on what a daily batch wrote (its tickers and datasets, the
    recent sessions) and print one line; violations are stored (see 'marketlake validate')."""
    from marketlake.quality.validate import validate_after_batch

    res = validate_after_batch(lk, tickers, datasets, run_id, as_of=day)
    sev = res.by_severity()
    n = max(res.tickers.values(), default=0)
    out.print(
        f"validated {n} ticker(s): {sev.get('error', 0)} error(s), "
        f"{sev.get('warning', 0)} warning(s) ('marketlake validate' or 'marketlake status' for "
        "details)",
        highlight=False,
    )


def _print_summary(summary: Any, retry: str | None = None) -> None:
    from rich.markup import escape

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
        err.print(
            f"[red]failed[/red] {item.dataset} {item.ticker}: {escape(str(item.error))}",
            highlight=False,
            soft_wrap=True,  # one line per failure, however long (greppable logs)
        )
    if summary.items_failed:
        err.print(
            f"{summary.items_failed} item(s) failed; "
            + (retry or f"retry them with: marketlake ingest --resume {summary.run_id}")
        )


@app.command("import")
def import_(
    source: Annotated[
        str,
        typer.Argument(
            help="Source whose saved files to read: yahoo, sec, alpaca, binance, kraken, "
            "coinbase or tiingo_crypto."
        ),
    ],
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files, directories (searched for .json, .json.gz and .zip) or zip archives; "
            "gzip is read transparently.",
            show_default=False,
        ),
    ],
    lake: LakeOpt = DEFAULT_LAKE,
    datasets: Annotated[
        str | None,
        typer.Option(help="Comma-separated datasets to keep (default: all the files hold)."),
    ] = None,
    tickers_file: Annotated[
        Path | None,
        typer.Option(
            help="sec: SEC's company_tickers.json (CIK -> ticker) for companyfacts files and "
            "the bulk companyfacts.zip / submissions.zip."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parse-and-write threads (default 2 local, 8 S3/R2).", min=1)
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every item.")] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Also write every log line to this file.")
    ] = None,
) -> None:
    """Import vendor files (saved API responses, bulk archives) into the lake, without network.

    yahoo: chart API JSON bodies or node-yahoo-finance2 recordings (ticker from meta.symbol).

    sec: companyfacts / submissions JSONs, SEC's nightly companyfacts.zip / submissions.zip.

    alpaca: /v2/stocks/bars pages (tickers from the symbol keys, or 'symbol').

    tiingo_crypto: /tiingo/crypto/prices bodies (pair from baseCurrency/quoteCurrency).

    tiingo: daily prices (JSON or CSV) / IEX answers named TICKER.json or TICKER_*.csv.

    kraken: OHLC bodies (pair from the result key, XXBTZUSD = BTC-USD).

    binance: klines arrays, coinbase: candles; they do not name their pair, so the file (or its
    directory) is named after it: BTCUSDT-1d.json or BTC-USDT.json, BTC-USD-1d.json.

    Rows equal what 'marketlake ingest' writes for the same payloads (same parser and writer).

    A bad file fails alone (exit 3); importing the same files again writes nothing.
    """
    _setup_logging(verbose, log_file)

    def go() -> None:
        import marketlake
        from marketlake.ingest.imports import import_files
        from marketlake.sources.registry import get_source

        src = get_source(source)
        files: list[Path] = list(paths)
        if tickers_file is not None:
            if src.name != "sec":
                raise typer.BadParameter(
                    "--tickers-file applies to the sec source only", param_hint="--tickers-file"
                )
            if not tickers_file.is_file():
                raise MarketlakeError(f"no such tickers file: {tickers_file}")
            files = [tickers_file, *files]
        wanted = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
        with marketlake.open(lake) as lk:
            summary = import_files(lk, src, files, wanted, progress=_progress(), workers=workers)
        _print_summary(
            summary, retry="fix or remove the files named above and run the same import again"
        )
        out.print(f"{summary.files} file(s) read, {summary.skipped} skipped", highlight=False)
        if summary.items_failed:
            raise typer.Exit(3)

    _run(go)


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
    adjust: Annotated[
        str, typer.Option(help="prices only: none (raw, default), splits or total.")
    ] = "none",
    knowledge_as_of: Annotated[
        str | None, typer.Option(help="Adjust with the actions known on this date only.")
    ] = None,
) -> None:
    """Read one ticker's rows (raw, unadjusted prices for 'prices' unless --adjust); dates
    inclusive."""
    if fmt not in ("table", "csv", "parquet"):
        raise typer.BadParameter("use table, csv or parquet", param_hint="--format")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("parquet output needs --output FILE", param_hint="--output")

    def go() -> None:
        import marketlake

        cols = [c.strip() for c in columns.split(",")] if columns else None
        with marketlake.open(lake, create=False) as lk:
            table = lk.read(
                ticker,
                dataset,
                _date(start, "--start"),
                _date(end, "--end"),
                columns=cols,
                output="arrow",
                adjust=adjust,  # type: ignore[arg-type]  # validated by Lake.read
                knowledge_as_of=_date(knowledge_as_of, "--knowledge-as-of"),
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

        with marketlake.open(lake, create=False) as lk:
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


@app.command()
def doctor(lake: LakeOpt = DEFAULT_LAKE) -> None:
    """Check the lake's storage: settings, endpoint, credentials, bucket, read, write,
    conditional writes and the lake marker. One line per check; exit 1 if any fails."""
    from rich.markup import escape

    from marketlake.doctor import run_checks

    checks = run_checks(lake)
    colours = {"ok": "green", "FAIL": "red", "skip": "yellow"}
    for c in checks:
        tag = colours[c.status]
        out.print(
            f"[{tag}]{c.status:<4}[/{tag}] {c.name}: {escape(c.detail)}",
            highlight=False,
            soft_wrap=True,
        )
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@catalog_app.command("rebuild")
def catalog_rebuild(lake: LakeOpt = DEFAULT_LAKE) -> None:
    """Rebuild the catalog's partitions and assets from the _meta objects in the store."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake, create=False) as lk:
            n = lk.rebuild_catalog()
        out.print(f"catalog rebuilt from the store: {n} partitions")

    _run(go)


@catalog_app.command("show")
def catalog_show(lake: LakeOpt = DEFAULT_LAKE) -> None:
    """Summarise what the catalog holds per dataset: tickers, partitions, rows, bytes."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake, create=False) as lk:
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


# --- backups ------------------------------------------------------------------------------------

backup_app = typer.Typer(
    help="Back up the lake to another store (incremental, content-addressed snapshots).",
    invoke_without_command=True,
)
app.add_typer(backup_app, name="backup")

ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="Backup target URL: a local path, file:///path or s3://bucket/prefix (r2:// too).",
    ),
]


@backup_app.callback()
def backup_cmd(
    ctx: typer.Context,
    lake: LakeOpt = DEFAULT_LAKE,
    to: ToOpt = None,
    full: Annotated[
        bool, typer.Option(help="Re-read and re-upload every object (repairs corruption).")
    ] = False,
    keep: Annotated[
        int | None, typer.Option(help="Keep only the newest N snapshots (prune the rest).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Concurrent object copies.")] = 16,
    break_lock: Annotated[
        bool, typer.Option(help="Remove a lock left by a backup that died.")
    ] = False,
) -> None:
    """Copy the lake's objects that changed since the last backup to --to, then write a
    snapshot manifest. Subcommands: verify, list, prune."""
    if ctx.invoked_subcommand is not None:
        return
    if to is None:
        raise typer.BadParameter("give the backup target: --to URL", param_hint="--to")

    def go() -> None:
        from marketlake.backup import backup

        s = backup(
            lake,
            to,
            full=full,
            keep=keep,
            workers=workers,
            break_lock=break_lock,
            progress=_progress(),
        )
        t = Table(title=f"backup {s.snapshot} -> {s.target}")
        for col in ("objects", "copied", "skipped", "MB copied", "MB total", "removed", "pruned"):
            t.add_column(col, justify="right")
        t.add_row(
            str(s.objects),
            str(s.copied),
            str(s.skipped),
            f"{s.bytes_copied / 1e6:.2f}",
            f"{s.bytes_total / 1e6:.2f}",
            str(s.removed),
            f"{s.pruned_snapshots} snapshots, {s.pruned_objects} objects",
        )
        out.print(t)

    _run(go)


@backup_app.command("verify")
def backup_verify(
    to: ToOpt = None,
    lake: Annotated[
        str | None,
        typer.Option("--lake", "-l", help="Also list what changed in this lake since the backup."),
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option(help="A dated snapshot (see 'backup list'); default latest.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Concurrent reads.")] = 16,
) -> None:
    """Read every object of a snapshot and check its size and sha256; exit 1 if any is missing
    or corrupt."""
    if to is None:
        raise typer.BadParameter("give the backup target: --to URL", param_hint="--to")

    def go() -> None:
        from marketlake.backup import iter_problems, verify_backup

        r = verify_backup(to, lake=lake, snapshot=snapshot, workers=workers, progress=_progress())
        for line in iter_problems(r):
            err.print(line, highlight=False)
        if lake is not None:
            out.print(
                f"since the snapshot: {len(r.changed_since)} changed, {len(r.new_since)} new, "
                f"{len(r.deleted_since)} deleted object(s) in {lake}"
            )
            for key in (r.changed_since + r.new_since + r.deleted_since)[:20]:
                out.print(f"  {key}", highlight=False)
        if not r.ok:
            err.print(
                f"[red]error:[/red] backup {r.target} snapshot {r.snapshot}: "
                f"{len(r.missing)} missing, {len(r.corrupt)} corrupt of {r.objects} objects; "
                "run 'marketlake backup --full' to re-copy them",
                highlight=False,
            )
            raise typer.Exit(1)
        out.print(
            f"backup {r.target} snapshot {r.snapshot}: {r.objects} objects OK "
            f"({r.bytes_checked / 1e6:.2f} MB read and hashed)"
        )

    _run(go)


@backup_app.command("list")
def backup_list(to: ToOpt = None) -> None:
    """List the snapshots at a backup target, oldest first."""
    if to is None:
        raise typer.BadParameter("give the backup target: --to URL", param_hint="--to")

    def go() -> None:
        from marketlake.backup import list_snapshots

        for name in list_snapshots(to):
            out.print(name)

    _run(go)


@backup_app.command("prune")
def backup_prune(
    to: ToOpt = None,
    keep: Annotated[int, typer.Option(help="Snapshots to keep (newest).")] = 30,
    break_lock: Annotated[
        bool, typer.Option(help="Remove a lock left by a backup that died.")
    ] = False,
) -> None:
    """Delete old snapshots and the objects no kept snapshot uses."""
    if to is None:
        raise typer.BadParameter("give the backup target: --to URL", param_hint="--to")

    def go() -> None:
        from marketlake.backup import prune_backup

        snaps, objs = prune_backup(to, keep, break_lock=break_lock)
        out.print(f"pruned {snaps} snapshot(s) and {objs} object(s) from {to}")

    _run(go)


@app.command()
def restore(
    from_: Annotated[str, typer.Option("--from", help="Backup target URL to restore from.")],
    lake: LakeOpt = DEFAULT_LAKE,
    snapshot: Annotated[
        str | None, typer.Option(help="A dated snapshot (see 'backup list'); default latest.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Restore over a non-empty lake (objects not in the backup are deleted)."),
    ] = False,
    workers: Annotated[int, typer.Option(help="Concurrent object copies.")] = 16,
) -> None:
    """Restore a backup into an empty lake (sha256 of every object checked), then rebuild the
    catalog from _meta."""

    def go() -> None:
        from marketlake.backup import restore as do_restore

        s = do_restore(
            from_, lake, snapshot=snapshot, force=force, workers=workers, progress=_progress()
        )
        out.print(
            f"restored snapshot {s.snapshot} into {s.destination}: {s.objects} objects, "
            f"{s.bytes / 1e6:.2f} MB, {s.deleted} stale object(s) deleted, catalog rebuilt with "
            f"{s.partitions} partitions"
        )

    _run(go)


# --- maintenance: relayout, repair-meta ---------------------------------------------------------


@app.command()
def relayout(
    dataset: Annotated[str, typer.Argument(help="Dataset to move, e.g. prices.")],
    lake: LakeOpt = DEFAULT_LAKE,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Template of a legacy tree to move into the lake, e.g. "
            "'{dataset}/{YYYY}/{MM}/{DD}/{ticker}_{YYYYMMDD}.parquet'.",
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="New lake layout template (default: the lake's current one)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; change nothing.")] = False,
) -> None:
    """Move a dataset between key layouts: copy into the target layout, verify rows and
    checksums, then delete the sources. Resumable: re-run after an interruption."""

    def go() -> None:
        import marketlake
        from marketlake.relayout import relayout as do_relayout

        with marketlake.open(lake, create=False) as lk:
            r = do_relayout(
                lk, dataset, source=from_, target=to, dry_run=dry_run, progress=_progress()
            )
        for line in r.plan.describe():
            out.print(line, highlight=False)
        if dry_run:
            out.print("dry run: nothing changed")
            return
        out.print(
            f"moved {r.rows_moved} rows of {r.tickers_done} ticker(s); deleted "
            f"{r.objects_deleted} verified source object(s)"
        )

    _run(go)


@app.command("repair-meta")
def repair_meta(
    ticker: Annotated[str, typer.Argument(help="Ticker whose _meta to rebuild.")],
    lake: LakeOpt = DEFAULT_LAKE,
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "prices",
) -> None:
    """Rebuild one ticker's _meta object from its data objects (after it was corrupted)."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake, create=False) as lk:
            meta = lk.repair_meta(ticker, dataset)
        out.print(
            f"rebuilt _meta for {dataset}/{meta.ticker}: {len(meta.partitions)} partitions, "
            f"{meta.row_count} rows"
        )

    _run(go)


# collection commands (assets, update, backfill, complete-months, status, schedule)
from marketlake.cli import collect as _collect  # noqa: E402, F401
from marketlake.cli import quality as _quality  # noqa: E402, F401
from marketlake.cli import quality_report as _quality_report  # noqa: E402, F401
from marketlake.cli import query as _query  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("POLARS_SKIP_CPU_CHECK", "1")
    app()


if __name__ == "__main__":
    # Under `python -m marketlake.cli.main` this file runs as __main__, while the command modules
    # (collect.py) register on the importable copy: run that one so every command is there.
    from marketlake.cli.main import main as _main

    _main()
