"""``marketlake demo``: a local lake filled from the synthetic source, end to end.

Backfills ``n_tickers`` x ``years`` of the three daily datasets plus fundamentals and corporate
actions, runs two daily
batches, re-runs the last one to show that nothing changes, then prints a summary and a sample
read. Offline and deterministic (for a given ``as_of``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from marketlake.calendars import previous_session
from marketlake.ingest.batch import RunSummary, run_batch
from marketlake.ingest.progress import LogProgress, NullProgress, Progress, RichProgress
from marketlake.query.lake import open_lake
from marketlake.schemas.datasets import DAILY_DATASETS
from marketlake.sources.synthetic import SyntheticSource, demo_universe


def run_demo(
    lake_url: str = "./lake",
    *,
    n_tickers: int = 50,
    years: int = 2,
    as_of: dt.date | None = None,
    workers: int = 16,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo and return its figures (also printed to ``console``).

    ``as_of`` is the last session collected (default: the last NYSE session before today).
    """
    con = console or Console()
    last = as_of or previous_session(dt.date.today())
    day2 = last
    day1 = previous_session(day2)
    backfill_end = previous_session(day1)
    backfill_start = dt.date(backfill_end.year - years, backfill_end.month, 1)
    tickers = demo_universe(n_tickers)
    source = SyntheticSource()
    t0 = time.perf_counter()
    steps: list[tuple[str, RunSummary]] = []

    def progress() -> Progress:
        if con.is_terminal:
            return RichProgress(Console(stderr=True))
        return NullProgress() if con.quiet else LogProgress()

    con.print(
        f"[bold]marketlake demo[/bold]: lake {lake_url}, {len(tickers)} tickers, "
        f"backfill {backfill_start}..{backfill_end}, daily {day1} and {day2}"
    )
    with open_lake(lake_url) as lake:
        steps.append(
            (
                "backfill",
                run_batch(
                    lake,
                    source,
                    tickers,
                    [*DAILY_DATASETS, "fundamentals", "corporate_actions"],
                    backfill_start,
                    backfill_end,
                    kind="backfill",
                    workers=workers,
                    progress=progress(),
                ),
            )
        )
        for label, day in (("daily 1", day1), ("daily 2", day2), ("daily 2 again", day2)):
            steps.append(
                (
                    label,
                    run_batch(
                        lake,
                        source,
                        tickers,
                        [*DAILY_DATASETS, "corporate_actions"],
                        day,
                        day,
                        kind="daily",
                        workers=workers,
                        progress=progress(),
                    ),
                )
            )
        table = Table(title="runs")
        for col in (
            "step",
            "run id",
            "items",
            "failed",
            "rows added",
            "rows updated",
            "objects written",
            "seconds",
        ):
            table.add_column(col, justify="right")
        for label, s in steps:
            table.add_row(
                label,
                s.run_id,
                str(s.items_total),
                str(s.items_failed),
                f"{s.rows_added:,}",
                f"{s.rows_updated:,}",
                f"{s.objects_written:,}",
                f"{s.seconds:.2f}",
            )
        con.print(table)
        rerun = steps[-1][1]
        verdict = (
            "idempotent: 0 objects rewritten"
            if rerun.objects_written == 0
            else (f"NOT idempotent: {rerun.objects_written} objects rewritten")
        )
        con.print(f"re-run of {day2}: {verdict}")
        sample_ticker = tickers[0]
        sample = lake.read(
            sample_ticker, "prices", day2 - dt.timedelta(days=10), day2, output="arrow"
        )
        st = Table(
            title=f"lake.read({sample_ticker!r}, 'prices', "
            f"'{day2 - dt.timedelta(days=10)}', '{day2}')  (raw, unadjusted)"
        )
        for name in sample.column_names:
            st.add_column(name, justify="right")
        for row in sample.to_pylist():
            st.add_row(
                *[
                    f"{v:,.2f}"
                    if isinstance(v, float)
                    else f"{v:,}"
                    if isinstance(v, int)
                    else str(v)
                    for v in row.values()
                ]
            )
        con.print(st)
        parts = lake.catalog.partitions()
        n_bytes = sum(p.bytes for p in parts)
        con.print(
            f"{len(parts):,} partitions, {sum(p.row_count for p in parts):,} rows, "
            f"{n_bytes / 1e6:.1f} MB in {lake.url}; took {time.perf_counter() - t0:.1f} s"
        )
        con.print(
            f"next: marketlake read {sample_ticker} --lake {lake_url} --start "
            f"{day2 - dt.timedelta(days=30)}"
        )
        return {
            "steps": {label: s for label, s in steps},
            "partitions": len(parts),
            "bytes": n_bytes,
            "seconds": time.perf_counter() - t0,
            "idempotent": rerun.objects_written == 0,
        }
