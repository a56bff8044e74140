"""Collection commands: ``assets``, ``update``, ``backfill``, ``complete-months``, ``status``,
``schedule``. Registered on the main app by :mod:`marketlake.cli.main`."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from marketlake.cli.main import (
    DEFAULT_LAKE,
    LakeOpt,
    _date,
    _print_summary,
    _progress,
    _run,
    _setup_logging,
    app,
    err,
    out,
)
from marketlake.errors import MarketlakeError

assets_app = typer.Typer(
    help="Manage the monitored assets that 'marketlake update' collects.", no_args_is_help=True
)
app.add_typer(assets_app, name="assets")

TickersOpt = Annotated[str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log every item.")]
LogFileOpt = Annotated[Path | None, typer.Option(help="Also write every log line to this file.")]


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@assets_app.command("add")
def assets_add(
    tickers: Annotated[str, typer.Argument(help="Comma-separated tickers, e.g. AAPL,MSFT.")],
    lake: LakeOpt = DEFAULT_LAKE,
    source: Annotated[str, typer.Option(help="Source name (see 'marketlake sources').")] = (
        "synthetic"
    ),
    datasets: Annotated[
        str | None,
        typer.Option(help="Comma-separated datasets (default: prices, or all the source has)."),
    ] = None,
    frequency: Annotated[str, typer.Option(help="daily or weekly.")] = "daily",
    exchange: Annotated[str | None, typer.Option(help="Listing exchange, if known.")] = None,
    inactive: Annotated[bool, typer.Option(help="Add paused (not collected).")] = False,
) -> None:
    """Monitor tickers: 'marketlake update' collects them every run (or weekly)."""

    def go() -> None:
        import marketlake
        from marketlake.catalog import MonitoredAsset
        from marketlake.schemas.datasets import get_dataset
        from marketlake.schemas.tickers import normalize_tickers
        from marketlake.sources.registry import get_source

        src = get_source(source)
        names = [get_dataset(d).name for d in _split(datasets)]
        if not names:
            names = ["prices"] if "prices" in src.datasets else list(src.datasets)
        unsupported = [d for d in names if d not in src.datasets]
        if unsupported:
            raise MarketlakeError(
                f"source {source!r} does not provide {unsupported}; it provides "
                f"{list(src.datasets)}"
            )
        symbols = normalize_tickers(_split(tickers))
        if not symbols:
            raise typer.BadParameter("name at least one ticker", param_hint="TICKERS")
        with marketlake.open(lake) as lk:
            lk.catalog.upsert_monitored(
                MonitoredAsset(
                    ticker=t,
                    source=src.name,
                    datasets=tuple(names),
                    exchange=exchange,
                    active=not inactive,
                    frequency=frequency,
                )
                for t in symbols
            )
        out.print(
            f"monitoring {len(symbols)} ticker(s) from {src.name}: {', '.join(names)} "
            f"({frequency}{', paused' if inactive else ''})"
        )

    _run(go)


@assets_app.command("remove")
def assets_remove(
    tickers: Annotated[str, typer.Argument(help="Comma-separated tickers.")],
    lake: LakeOpt = DEFAULT_LAKE,
    source: Annotated[str | None, typer.Option(help="Only this source's entry.")] = None,
) -> None:
    """Stop monitoring tickers (their data stays in the lake)."""

    def go() -> None:
        import marketlake
        from marketlake.schemas.tickers import normalize_tickers

        with marketlake.open(lake, create=False) as lk:
            n = lk.catalog.remove_monitored(normalize_tickers(_split(tickers)), source)
        out.print(f"removed {n} monitored asset(s)")

    _run(go)


@assets_app.command("list")
def assets_list(
    lake: LakeOpt = DEFAULT_LAKE,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
) -> None:
    """List the monitored assets with their watermark (last session collected)."""

    def go() -> None:
        import marketlake

        with marketlake.open(lake, create=False) as lk:
            marks: dict[tuple[str, str], dt.date | None] = {}
            for p in lk.catalog.progress(source=source):
                marks[(p.source, p.ticker)] = min(
                    filter(None, [marks.get((p.source, p.ticker)), p.last_date]), default=None
                )
            t = Table(title="monitored assets")
            for col in ("ticker", "source", "datasets", "frequency", "active", "collected to"):
                t.add_column(col)
            for a in lk.catalog.monitored(source):
                t.add_row(
                    a.ticker,
                    a.source,
                    ",".join(a.datasets),
                    a.frequency,
                    "yes" if a.active else "paused",
                    str(marks.get((a.source, a.ticker)) or "-"),
                )
            out.print(t)

    _run(go)


def _print_update(summaries: list[Any]) -> int:
    failed = 0
    for s in summaries:
        out.print(
            f"{s.source}: through {s.end}; {len(s.plans)} batch(es), {len(s.up_to_date)} item(s) "
            f"already up to date, {len(s.not_due)} weekly ticker(s) not due",
            highlight=False,
        )
        for plan, run in zip(s.plans, s.runs, strict=False):
            out.print(
                f"  {len(plan.tickers)} ticker(s) x {','.join(plan.datasets)} from {plan.start}",
                highlight=False,
            )
            _print_summary(run)
        failed += s.items_failed
    return failed


@app.command()
def update(
    lake: LakeOpt = DEFAULT_LAKE,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    tickers: TickersOpt = None,
    datasets: Annotated[str | None, typer.Option(help="Only these datasets.")] = None,
    date: Annotated[
        str | None,
        typer.Option("--date", "-d", help="Last session to collect (default: last completed)."),
    ] = None,
    refetch: Annotated[
        int, typer.Option(help="Sessions before the watermark fetched again.", min=0)
    ] = 5,
    since: Annotated[
        str | None, typer.Option(help="Start for tickers never collected (default: a year).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Items in flight.", min=1)] = None,
    verbose: VerboseOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Collect only what is missing: from each watermark (minus --refetch sessions) to the last
    completed NYSE session. Failed items keep their watermark and are retried next time."""
    _setup_logging(verbose, log_file)

    def go() -> None:
        import marketlake
        from marketlake.ingest.update import update as do_update

        with marketlake.open(lake) as lk:
            summaries = do_update(
                lk,
                source=source,
                tickers=_split(tickers) or None,
                datasets=_split(datasets) or None,
                end=_date(date, "--date"),
                refetch=refetch,
                since=_date(since, "--since"),
                workers=workers,
                progress=_progress(),
            )
        if _print_update(summaries):
            raise typer.Exit(3)

    _run(go)


@app.command()
def backfill(
    lake: LakeOpt = DEFAULT_LAKE,
    start: Annotated[str | None, typer.Option(help="First session (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last session (inclusive).")] = None,
    tickers: TickersOpt = None,
    source: Annotated[str | None, typer.Option(help="Source name.")] = None,
    datasets: Annotated[str | None, typer.Option(help="Comma-separated datasets.")] = None,
    gaps: Annotated[
        bool, typer.Option(help="Backfill missing sessions of the last --weeks instead.")
    ] = False,
    weeks: Annotated[int, typer.Option(help="Weeks checked by --gaps.", min=1)] = 4,
    workers: Annotated[int | None, typer.Option(help="Items in flight.", min=1)] = None,
    verbose: VerboseOpt = False,
    log_file: LogFileOpt = None,
) -> None:
    """Fill history for --start..--end without moving the daily watermark (default tickers: the
    monitored ones), or with --gaps the sessions missing in the last --weeks weeks."""
    _setup_logging(verbose, log_file)

    def go() -> None:
        import marketlake
        from marketlake.ingest.update import backfill as do_backfill
        from marketlake.ingest.update import gap_backfill

        with marketlake.open(lake) as lk:
            if gaps:
                runs = gap_backfill(lk, weeks=weeks, source=source, workers=workers)
                out.print(f"gap backfill: {len(runs)} run(s)")
                for r in runs:
                    _print_summary(r)
                if any(r.items_failed for r in runs):
                    raise typer.Exit(3)
                return
            lo, hi = _date(start, "--start"), _date(end, "--end")
            if lo is None or hi is None:
                raise typer.BadParameter("give --start and --end (or --gaps)", param_hint="--start")
            monitored = [a for a in lk.catalog.monitored(source, active_only=True)]
            names = _split(tickers) or sorted({a.ticker for a in monitored})
            if not names:
                raise MarketlakeError(
                    "no tickers: pass --tickers AAPL,MSFT or monitor some with 'marketlake "
                    "assets add'"
                )
            src = source or (monitored[0].source if monitored else "synthetic")
            wanted = (
                _split(datasets)
                or sorted({d for a in monitored if a.ticker in names for d in a.datasets})
                or ["prices"]
            )
            run = do_backfill(lk, src, names, wanted, lo, hi, workers=workers, progress=_progress())
        _print_summary(run)
        if run.items_failed:
            raise typer.Exit(3)

    _run(go)


@app.command("complete-months")
def complete_months_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    date: Annotated[
        str | None,
        typer.Option("--date", "-d", help="Last collected session (default: last completed)."),
    ] = None,
) -> None:
    """The monthly completion job: mark months whose sessions are all present as complete."""

    def go() -> None:
        import marketlake
        from marketlake.ingest.completion import complete_months
        from marketlake.ingest.update import last_completed_session

        with marketlake.open(lake, create=False) as lk:
            as_of = _date(date, "--date") or last_completed_session()
            n, done = complete_months(lk, as_of=as_of)
        out.print(f"refreshed {n} month(s); {done} of them complete (as of {as_of})")

    _run(go)


@app.command()
def status(
    lake: LakeOpt = DEFAULT_LAKE,
    runs_shown: Annotated[int, typer.Option("--runs", help="Last runs shown.", min=1)] = 5,
) -> None:
    """Collection status: monitored assets, watermarks, complete/incomplete months, freshness
    of the monitored assets, open data-quality violations, and the last runs (duration, rows,
    failures)."""

    def go() -> None:
        import marketlake
        from marketlake.quality.coverage import assess_freshness, freshness_inputs_from_progress
        from marketlake.quality.report import describe_runs

        now = dt.datetime.now(dt.UTC)
        with marketlake.open(lake, create=False) as lk:
            monitored = lk.catalog.monitored()
            marks = [p.last_date for p in lk.catalog.progress() if p.last_date]
            counts = lk.catalog.month_counts()
            runs = describe_runs(lk, runs_shown)
            items, never = freshness_inputs_from_progress(lk)
            fresh = assess_freshness(items, now).column("status").to_pylist()
            violations = lk.catalog.violations(latest_only=True)
        active = sum(1 for a in monitored if a.active)
        out.print(f"monitored assets: {len(monitored)} ({active} active)")
        if marks:
            out.print(f"watermarks: {len(marks)}, oldest {min(marks)}, newest {max(marks)}")
        t = Table(title="months")
        for col in ("dataset", "complete", "incomplete"):
            t.add_column(col, justify="right")
        for name, (done, todo) in counts.items():
            t.add_row(name, str(done), str(todo))
        out.print(t)
        incomplete = sum(todo for _, todo in counts.values())
        out.print(f"incomplete months: {incomplete}")
        by_status = {s: fresh.count(s) for s in ("fresh", "due", "late", "stale")}
        out.print(
            "freshness of active monitored series: "
            + ", ".join(f"{n} {s}" for s, n in by_status.items())
            + (f"; {len(never)} asset(s) never collected" if never else "")
            + " (late: > 24 h after the expected session, stale: > 48 h)",
            highlight=False,
        )
        severities = {s: 0 for s in ("error", "warning", "info")}
        rules: dict[str, int] = {}
        for v in violations:
            severities[v.severity] = severities.get(v.severity, 0) + 1
            rules[v.rule] = rules.get(v.rule, 0) + 1
        top = sorted(rules.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        out.print(
            "open violations (latest check): "
            + ", ".join(f"{n} {s}" for s, n in severities.items())
            + (" - " + ", ".join(f"{r} {n}" for r, n in top) if top else ""),
            highlight=False,
        )
        if runs:
            rt = Table(title=f"last {len(runs)} run(s)")
            for col in ("run", "kind", "source", "status", "started (UTC)", "took", "items"):
                rt.add_column(col)
            for col in ("failed", "rows added", "rows updated"):
                rt.add_column(col, justify="right")
            rt.add_column("first error")
            for info in runs:
                r = info.run
                took = "running" if info.seconds is None else f"{info.seconds:.1f} s"
                rt.add_row(
                    r.run_id,
                    r.kind,
                    r.source,
                    r.status,
                    r.started_at[:19].replace("T", " "),
                    took,
                    f"{r.items_completed}/{r.items_total}",
                    str(r.items_failed),
                    f"{info.rows_added:,}",
                    f"{info.rows_updated:,}",
                    info.errors[0] if info.errors else "",
                )
            out.print(rt)

    _run(go)


@app.command()
def schedule(
    lake: LakeOpt = DEFAULT_LAKE,
    at: Annotated[str, typer.Option(help="Daily update time, HH:MM UTC.")] = "02:00",
    weekday: Annotated[
        str, typer.Option(help="Day of the weekly gap backfill (mon..sun).")
    ] = "sun",
    monthday: Annotated[
        int, typer.Option(help="Day of month of the completion job.", min=1, max=28)
    ] = 1,
    gap_weeks: Annotated[int, typer.Option(help="Weeks the gap backfill checks.", min=1)] = 4,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    print_cron: Annotated[
        bool, typer.Option("--print-cron", help="Print crontab lines instead of running.")
    ] = False,
    log_file: LogFileOpt = None,
) -> None:
    """Run the daily update (02:00 UTC), the weekly gap backfill and the monthly completion job
    (which then compacts the closed month) in this process, or print the equivalent crontab
    lines with --print-cron."""
    from marketlake.schedule import WEEKDAYS, ScheduleConfig, cron_lines, parse_at, run_schedule

    def go() -> None:
        day = weekday.strip().lower()[:3]
        if day not in WEEKDAYS:
            raise typer.BadParameter(
                f"{weekday!r} is not a weekday (mon..sun)", param_hint="--weekday"
            )
        cfg = ScheduleConfig(at=parse_at(at), weekday=WEEKDAYS.index(day), monthday=monthday)
        if print_cron:
            exe = shutil.which("marketlake") or "marketlake"
            extra = f"--source {source}" if source else ""
            for line in cron_lines(cfg, command=exe, lake=lake, gap_weeks=gap_weeks, extra=extra):
                print(line)
            return
        _setup_logging(False, log_file)
        import marketlake
        from marketlake.ingest.completion import complete_months
        from marketlake.ingest.update import gap_backfill, last_completed_session
        from marketlake.ingest.update import update as do_update

        def job_update() -> None:
            with marketlake.open(lake) as lk:
                do_update(lk, source=source)

        def job_gaps() -> None:
            with marketlake.open(lake) as lk:
                gap_backfill(lk, weeks=gap_weeks, source=source)

        def job_complete() -> None:
            with marketlake.open(lake) as lk:
                complete_months(lk, as_of=last_completed_session())
                lk.compact()  # fold the month that just closed into the history objects

        err.print(f"scheduling on {lake}: update daily at {at} UTC (Ctrl-C to stop)")
        run_schedule({"update": job_update, "gaps": job_gaps, "complete": job_complete}, cfg)

    _run(go)
