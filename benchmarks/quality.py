"""Data-quality benchmark: ``validate`` (every daily rule) and ``report coverage`` on a lake of
``--tickers`` tickers x ``--years`` years of daily prices (default 6,000 x 5). Target: both
together in under 2 minutes.

Run ``python benchmarks/quality.py --help`` for the options; see ``benchmarks/README.md``.

Setup (untimed, cached under ``<data-dir>/quality-n{tickers}-y{years}/``): raw daily prices from
the NumPy generator of ``daily_batch.py`` (log random walks, one seed), written through the real
write path (``run_batch`` with an in-memory source, monthly partitions), with defects planted so
the checks have something to find: dropped sessions, a missing month, late listings, high < low
bars and 100x unit errors. The catalog is saved after the build; every repeat starts from that
copy, so the violations one repeat stores do not slow the next.

Timed, ``--repeat`` times on a warm page cache: (1) ``validate(lake)`` -- every rule of every
dataset with data plus freshness, violations stored in the catalog; (2)
``write_coverage_report(lake, DIR)`` -- coverage, gaps, freshness, violations over time, plots,
HTML + Markdown + CSV. ``--layout`` times the lake as written (60 monthly objects per ticker),
a copy after ``marketlake compact`` (one history object per ticker, cached too), or both (the
default). The table shows medians; the planted gaps are checked against what the report found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import daily_batch  # noqa: E402  (the shared row generator)
import marketlake  # noqa: E402
from marketlake.ingest.batch import run_batch  # noqa: E402
from marketlake.schemas.datasets import get_dataset  # noqa: E402
from marketlake.sources.base import Source, SourceRequest  # noqa: E402
from marketlake.sources.synthetic import demo_universe  # noqa: E402

GENERATOR_VERSION = 1  # bump when the planted rows change (invalidates the cached setups)
SEED = 20240701
END = dt.date(2023, 12, 29)  # last session of the lake (fixed, so the cache stays valid)
NOW = dt.datetime(2024, 1, 2, 12, 0, tzinfo=dt.UTC)  # judging time: 2023-12-29 is expected
TARGET_SECONDS = 120.0
CHUNK = 500  # tickers generated at once (bounds memory)


# --- the lake -----------------------------------------------------------------------------------


def plant(tickers: list[str], days: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Choose the defects: per ticker the rows to drop, late listing, broken bars."""
    n = len(tickers)
    pick = rng.permutation(n)
    k = max(1, n // 100)
    drop_one, drop_month, late = pick[:k], pick[k : k + k // 2 + 1], pick[2 * k : 4 * k]
    high_low, unit = pick[4 * k : 4 * k + k // 2 + 1], pick[5 * k : 5 * k + k // 4 + 1]
    months = days.astype("datetime64[M]")
    plan: dict[str, Any] = {"drop": {}, "start": {}, "high_low": {}, "unit": {}}
    for i in drop_one:
        j = int(rng.integers(30, days.size - 30))
        plan["drop"][tickers[i]] = [j]
    for i in drop_month:
        m = months[int(rng.integers(30, days.size - 30))]
        plan["drop"].setdefault(tickers[i], []).extend(np.flatnonzero(months == m).tolist())
    for i in late:
        plan["start"][tickers[i]] = int(rng.integers(100, days.size - 100))
    for i in high_low:
        plan["high_low"][tickers[i]] = int(rng.integers(10, days.size - 10))
    for i in unit:
        plan["unit"][tickers[i]] = int(rng.integers(10, days.size - 10))
    return plan


def build_tables(tickers: list[str], days: np.ndarray) -> tuple[dict[str, pa.Table], dict]:
    """One prices table per ticker, defects planted; returns the tables and the plan."""
    rng = np.random.default_rng(SEED)
    plan = plant(tickers, days, rng)
    schema = get_dataset("prices").schema
    dates = pa.array(days, pa.date32())
    tables: dict[str, pa.Table] = {}
    for lo in range(0, len(tickers), CHUNK):
        chunk = tickers[lo : lo + CHUNK]
        cols = daily_batch.generate(len(chunk), days.size, SEED + lo)["prices"]
        for i, t in enumerate(chunk):
            row = {name: cols[name][i].copy() for name in cols}
            if t in plan["high_low"]:  # a bar with high < low
                j = plan["high_low"][t]
                row["high"][j], row["low"][j] = row["low"][j] * 0.99, row["high"][j] * 1.01
            if t in plan["unit"]:  # one day in cents instead of dollars
                j = plan["unit"][t]
                for name in ("open", "high", "low", "close"):
                    row[name][j] = row[name][j] * 100.0
            arrays = [dates] + [
                daily_batch._arrow_column(row[f.name], f.type) for f in list(schema)[1:]
            ]
            table = pa.Table.from_arrays(arrays, schema=schema)
            keep = np.ones(days.size, dtype=bool)
            keep[plan["drop"].get(t, [])] = False
            keep[: plan["start"].get(t, 0)] = False
            tables[t] = table.filter(pa.array(keep))
    return tables, plan


class PricesSource(Source):
    """Serves the pre-built per-ticker tables (only the lake's write work is measured)."""

    name: ClassVar[str] = "bench"
    datasets: ClassVar[tuple[str, ...]] = ("prices",)
    description: ClassVar[str] = "In-memory prices for the quality benchmark."

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.tables = tables

    def fetch(self, request: SourceRequest) -> dict[str, pa.Table]:
        return {"prices": self.tables[request.ticker]}

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return dict(raw)


def prices_source(tables: dict[str, pa.Table]) -> PricesSource:
    """A :class:`PricesSource` whose class spawned worker processes can import (see
    ``daily_batch.memory_source``)."""
    cls: type[PricesSource] = PricesSource
    if __name__ == "__main__":
        cls = importlib.import_module(Path(__file__).stem).PricesSource
    return cls(tables)


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tickers": args.tickers,
        "years": args.years,
        "seed": SEED,
        "generator": GENERATOR_VERSION,
        "daily_batch_generator": daily_batch.GENERATOR_VERSION,
        "marketlake": marketlake.__version__,
        "pyarrow": pa.__version__,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The cached setup: the lake, a saved copy of its catalog, and the planted defects."""
    ready = root / "ready.json"
    want = params(args)
    if ready.exists() and json.loads(ready.read_text()).get("params") == want:
        log(f"setup: reusing {root}")
        return dict(json.loads(ready.read_text()))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = dt.date(END.year - args.years + 1, 1, 1)
    days = daily_batch.session_days(start, END)
    tickers = demo_universe(args.tickers)
    t0 = time.perf_counter()
    log(f"setup: generating {len(tickers)} tickers x {days.size} sessions ({start}..{END})")
    tables, plan = build_tables(tickers, days)
    log(f"setup: generated in {time.perf_counter() - t0:.1f}s; writing the lake (run_batch)")
    t0 = time.perf_counter()
    with marketlake.open(root / "lake", fsync=False) as lake:
        summary = run_batch(
            lake,
            prices_source(tables),
            tickers,
            ["prices"],
            start,
            END,
            kind="backfill",
            workers=args.workers,
        )
    if summary.items_failed:
        raise SystemExit(f"setup batch failed: {summary.failures[:3]}")
    log(f"setup: lake written in {time.perf_counter() - t0:.1f}s")
    save_catalog(root / "lake" / "_catalog.sqlite", root / "catalog.pristine.sqlite")
    missing = {t: len(v) for t, v in plan["drop"].items()}
    info = {
        "params": want,
        "sessions": int(days.size),
        "rows": int(sum(t.num_rows for t in tables.values())),
        "planted": {
            "tickers_with_gaps": len(missing),
            "missing_sessions": int(sum(missing.values())),
            "late_listings": len(plan["start"]),
            "high_low_bars": len(plan["high_low"]),
            "unit_errors": len(plan["unit"]),
        },
    }
    ready.write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def save_catalog(src: Path, dst: Path) -> None:
    """A consistent single-file copy of a SQLite catalog (WAL included)."""
    dst.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def restore_catalog(pristine: Path, lake_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (lake_dir / f"_catalog.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, lake_dir / "_catalog.sqlite")


# --- timing ---------------------------------------------------------------------------------------


def compacted(root: Path, args: argparse.Namespace) -> None:
    """The same lake after ``marketlake compact`` (cached): each ticker's closed months folded
    into one history object, so a five-year read decodes 1 object instead of 60."""
    ready = root / "compacted.json"
    want = params(args)
    if ready.exists() and json.loads(ready.read_text()) == want:
        log(f"setup: reusing {root / 'lake-compacted'}")
        return
    target = root / "lake-compacted"
    shutil.rmtree(target, ignore_errors=True)
    # hard links: safe, marketlake never writes a file in place (temporary file + rename), and
    # compaction only adds objects, renames _meta over and unlinks folded objects in the copy
    daily_batch.restore_lake(root / "lake", target)
    restore_catalog(root / "catalog.pristine.sqlite", target)
    t0 = time.perf_counter()
    log("setup: compacting a copy of the lake (marketlake compact)")
    with marketlake.open(target, fsync=False) as lake:
        lake.compact(["prices"], before=f"{END.year + 1}-01")
    save_catalog(target / "_catalog.sqlite", root / "catalog-compacted.pristine.sqlite")
    log(f"setup: compacted in {time.perf_counter() - t0:.1f}s")
    ready.write_text(json.dumps(want, sort_keys=True))


def repeat_once(lake_dir: Path, catalog: Path, out: Path, exact: bool) -> dict[str, Any]:
    from marketlake.quality.report import write_coverage_report
    from marketlake.quality.validate import validate

    restore_catalog(catalog, lake_dir)
    os.sync()
    load = os.getloadavg()[0]
    with marketlake.open(lake_dir) as lake:
        t0 = time.perf_counter()
        result = validate(lake, now=NOW)
        t1 = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        files = write_coverage_report(lake, out, now=NOW, exact=exact)
        t2 = time.perf_counter()
    gaps = [r for r in _csv_rows(out / "gaps.csv")]
    return {
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "validate_s": t1 - t0,
        "report_s": t2 - t1,
        "violations": {f"{r}/{s}": n for (r, s), n in sorted(result.counts().items())},
        "report_files": len(files.files),
        "report_html_bytes": files.html.stat().st_size,
        "gaps_found": len(gaps),
        "missing_found": sum(int(g["missing"]) for g in gaps),
    }


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "marketlake": marketlake.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    p = result["params"]
    mode = "exact" if result["exact"] else "count screen"
    table = Table(
        title=f"data quality on {p['tickers']:,} tickers x {p['years']} years of daily prices "
        f"(median of {result['repeat']})"
    )
    for col in ("figure", "seconds", "target", "met?"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for layout, runs in result["layouts"].items():
        v = statistics.median(r["validate_s"] for r in runs)
        rep = statistics.median(r["report_s"] for r in runs)
        total = statistics.median(r["validate_s"] + r["report_s"] for r in runs)
        table.add_row(f"{layout}: validate (every rule + freshness, stored)", f"{v:.1f}", "", "")
        table.add_row(f"{layout}: report coverage ({mode})", f"{rep:.1f}", "", "")
        met = "yes" if total < TARGET_SECONDS else "NO"
        table.add_row(
            f"{layout}: validate + report", f"{total:.1f}", f"< {TARGET_SECONDS:.0f} s", met
        )
    console = Console(width=120)
    console.print(table)
    m = result["machine"]
    console.print(
        f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, marketlake {m['marketlake']}, "
        f"pyarrow {m['pyarrow']}"
    )
    for layout, runs in result["layouts"].items():
        console.print(
            f"{layout} runs (validate+report s, load average before/after): "
            + ", ".join(
                f"{r['validate_s']:.1f}+{r['report_s']:.1f} ({r['load_before']:.1f}/"
                f"{r['load_after']:.1f})"
                for r in runs
            )
        )
    planted = result["setup"]["planted"]
    console.print(
        f"lake: {result['setup']['rows']:,} rows; planted {planted['missing_sessions']:,} missing "
        f"sessions in {planted['tickers_with_gaps']:,} tickers, {planted['high_low_bars']} "
        f"high<low bars, {planted['unit_errors']} 100x unit errors, "
        f"{planted['late_listings']} late listings"
    )
    for layout, runs in result["layouts"].items():
        last = runs[-1]
        console.print(
            f"{layout}: report found {last['missing_found']:,} missing sessions in "
            f"{last['gaps_found']:,} gaps; validate stored: "
            + ", ".join(f"{k} {n:,}" for k, n in last["violations"].items())
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickers", type=int, default=6000, help="tickers in the lake")
    ap.add_argument("--years", type=int, default=5, help="years of daily prices per ticker")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats; medians are shown")
    ap.add_argument("--data-dir", type=Path, default=HERE / ".data", help="cache and results")
    ap.add_argument("--workers", type=int, default=16, help="run_batch workers for the setup")
    ap.add_argument("--exact", action="store_true", help="report with --exact (read all dates)")
    ap.add_argument(
        "--layout",
        choices=("monthly", "compacted", "both"),
        default="both",
        help="time the lake as written (monthly files), after 'marketlake compact', or both",
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached lake")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.data_dir / f"quality-n{args.tickers}-y{args.years}"
    if args.rebuild:
        shutil.rmtree(root, ignore_errors=True)
    setup = build(root, args)
    targets = {"monthly": (root / "lake", root / "catalog.pristine.sqlite")}
    if args.layout != "monthly":
        compacted(root, args)
        targets["compacted"] = (root / "lake-compacted", root / "catalog-compacted.pristine.sqlite")
        if args.layout == "compacted":
            del targets["monthly"]
    layouts: dict[str, list[dict[str, Any]]] = {}
    for layout, (lake_dir, catalog) in targets.items():
        runs = layouts.setdefault(layout, [])
        for i in range(args.repeat):
            run = repeat_once(lake_dir, catalog, root / f"report-{layout}", args.exact)
            log(
                f"{layout} repeat {i + 1}: validate {run['validate_s']:.1f}s, "
                f"report {run['report_s']:.1f}s (load {run['load_before']:.1f})"
            )
            runs.append(run)
    result = {
        "benchmark": "quality",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": params(args),
        "repeat": args.repeat,
        "exact": args.exact,
        "machine": machine(),
        "setup": setup,
        "layouts": layouts,
        "target_seconds": TARGET_SECONDS,
    }
    out = args.data_dir / "results-quality.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print_table(result)
    print(f"results written to {out}; the last reports are in {root}/report-*")
    found = {r["missing_found"] for runs in layouts.values() for r in runs}
    if len(found) != 1:
        print(f"warning: runs found different numbers of missing sessions: {sorted(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
