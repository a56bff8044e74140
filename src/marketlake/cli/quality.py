"""``marketlake validate``: run the data-quality rules, store and print the violations.

Registered on the main app by :mod:`marketlake.cli.main`. Exit codes: 0 when no violation at or
above ``--fail-on`` exists, 1 when one does (or on any marketlake error), 2 on bad usage.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from marketlake.cli.main import DEFAULT_LAKE, LakeOpt, _date, _run, app, err, out

FORMATS = ("table", "csv", "json")
FAIL_ON = ("error", "warning", "info", "never")
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


@app.command()
def validate(
    lake: LakeOpt = DEFAULT_LAKE,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset to check (repeat or comma-separate): prices, bars_minute, crypto_bars, "
            "fundamentals, or freshness. Default: all of them.",
        ),
    ] = None,
    tickers: Annotated[
        str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers (default: all).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only report violations dated on or after this day (YYYY-MM-DD)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table (summary), csv or json (every violation).")
    ] = "table",
    fail_on: Annotated[
        str,
        typer.Option(
            help="Exit 1 when a violation of this severity or worse exists: error, "
            "warning, info or never."
        ),
    ] = "error",
    limit: Annotated[
        int, typer.Option(help="Violations listed by --format table (0 = all).", min=0)
    ] = 20,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Record the violations in the catalog.")
    ] = True,
) -> None:
    """Check the lake's data against the quality rules (docs/quality.md) and store what is wrong.

    Nothing is repaired. Prints counts by rule and severity and the first violations; exits 1
    when a violation at or above --fail-on exists.
    """
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    if fail_on not in FAIL_ON:
        raise typer.BadParameter(f"use one of {', '.join(FAIL_ON)}", param_hint="--fail-on")

    def go() -> bool:
        import marketlake
        from marketlake.quality.validate import validate as run_validate

        names = _split(dataset) or None
        symbols = _split([tickers]) if tickers else None
        day = _date(since, "--since")
        with marketlake.open(lake, create=False) as lk:
            result = run_validate(lk, names, symbols, day, store=store)
        if fmt == "csv":
            _write_csv(result.violations)
            _print_summary(result, listing=False, console=err)
        elif fmt == "json":
            sys.stdout.write(_as_json(result) + "\n")
            sys.stdout.flush()
        else:
            _print_summary(result, listing=True, limit=limit, console=out)
        return result.fails(fail_on)

    if _run(go):
        raise typer.Exit(1)


def _write_csv(table: Any) -> None:
    import pyarrow.csv as pacsv

    sink = sys.stdout.buffer
    pacsv.write_csv(table, sink)
    sink.flush()


def _as_json(result: Any) -> str:
    rows = result.violations.to_pylist()
    for row in rows:
        row["date"] = row["date"].isoformat() if row["date"] is not None else None
        row["ts"] = row["ts"].isoformat() if row["ts"] is not None else None
    doc = {
        "check_id": result.check_id,
        "checked_at": result.checked_at,
        "datasets": list(result.datasets),
        "tickers": result.tickers,
        "rows": result.rows,
        "by_severity": result.by_severity(),
        "counts": [
            {"rule": rule, "severity": severity, "violations": n}
            for (rule, severity), n in result.counts().items()
        ],
        "violations": rows,
    }
    return json.dumps(doc, indent=1, sort_keys=False)


def _print_summary(result: Any, *, listing: bool, console: Any, limit: int = 20) -> None:
    table = result.violations
    checked = ", ".join(
        f"{name} ({result.tickers[name]} tickers, {result.rows[name]:,} rows)"
        if name in result.tickers
        else name
        for name in result.datasets
    )
    console.print(f"checked {checked} in {result.seconds:.1f} s", highlight=False)
    if table.num_rows == 0:
        console.print("[green]no violations[/green]")
        return
    tickers_per_rule: dict[tuple[str, str], set[str]] = {}
    for rule, severity, ticker in zip(
        table.column("rule").to_pylist(),
        table.column("severity").to_pylist(),
        table.column("ticker").to_pylist(),
        strict=True,
    ):
        tickers_per_rule.setdefault((rule, severity), set()).add(ticker)
    summary = Table(title=f"violations by rule ({result.check_id})")
    summary.add_column("rule")
    summary.add_column("severity")
    summary.add_column("violations", justify="right")
    summary.add_column("tickers", justify="right")
    for (rule, severity), n in result.counts().items():
        style = SEVERITY_STYLE.get(severity, "")
        summary.add_row(
            rule,
            f"[{style}]{severity}[/{style}]" if style else severity,
            f"{n:,}",
            f"{len(tickers_per_rule[(rule, severity)]):,}",
        )
    console.print(summary)
    if listing:
        shown = table if limit == 0 else table.slice(0, limit)
        first = Table(
            title=f"first {shown.num_rows} of {table.num_rows:,} violations"
            if shown.num_rows < table.num_rows
            else f"{table.num_rows:,} violations"
        )
        for name in ("ticker", "dataset", "date", "rule", "severity", "detail"):
            first.add_column(name, overflow="fold")
        for row in shown.to_pylist():
            when = row["ts"].strftime("%Y-%m-%d %H:%M") if row["ts"] else row["date"]
            first.add_row(
                row["ticker"],
                row["dataset"],
                str(when or "-"),
                row["rule"],
                row["severity"],
                escape(row["detail"]),
            )
        console.print(first)
    counts = result.by_severity()
    stored = f"; {result.stored:,} stored in the catalog" if result.stored else ""
    console.print(
        f"{_n(table.num_rows, 'violation')}: {_n(counts['error'], 'error')}, "
        f"{_n(counts['warning'], 'warning')}, {counts['info']:,} info{stored}",
        highlight=False,
    )


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"
