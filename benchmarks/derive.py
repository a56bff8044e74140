"""Derive benchmark: ``signals_technical`` and ``signals_valuation`` from the lake, beside TA-Lib.

Run ``python benchmarks/derive.py --help`` for the options and see ``benchmarks/README.md`` for
what each figure means. In short:

1. **Incremental daily derive.** A cached lake holds, for ``--tickers`` tickers of the synthetic
   source, five years of raw daily prices (through 2024-06-17, the 11th session of June 2024),
   quarterly fundamentals (filed by then), splits and dividends (``corporate_actions``) and both
   signal datasets derived through the session before. Timed: ``run_derive(lake, tickers,
   since=2024-06-17)``, which writes one row per ticker and dataset, plus a serial breakdown
   (read inputs / compute / incremental check / write) and the technical indicators' compute
   over every ticker's full history beside TA-Lib's, on the same float64 arrays.
2. **One ticker, five years.** ``compute_derived`` for both datasets (pure compute, beside TA-Lib
   for the technical one), ``derive_tables(full=True)`` (read + compute) and ``run_derive([T],
   since=None)`` (read + compute + write the full history) on a one-ticker lake.

When ``marketlake.ingest.compact`` exists, the I/O figures are measured twice: on monthly price
files and on a copy whose prices were compacted (``--no-compact`` skips that). Results are
printed as a table and written to ``<data-dir>/results-derive.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import importlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import marketlake
from daily_batch import log, read_ready, restore_lake, rmtree, session_days, write_ready
from marketlake.derive.adjust import apply_adjustment
from marketlake.derive.technical import FIRST_VALID, compute_technical
from marketlake.ingest import batch as batch_module
from marketlake.ingest.batch import run_batch
from marketlake.ingest.derive import (
    DERIVED_DATASETS,
    DeriveSource,
    _since,
    compute_derived,
    derive_tables,
    run_derive,
)
from marketlake.ingest.writer import PartitionWriter
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import Source, SourceRequest
from marketlake.sources.synthetic import SyntheticSource, demo_universe
from marketlake.storage.meta import meta_key
from marketlake.testing.talib_reference import talib_reference

SETUP_VERSION = 1  # bump when the setup lake's contents change (invalidates the cached setups)
SEED = 7  # SyntheticSource seed
NEW_DAY = dt.date(2024, 6, 17)  # the timed session: the 11th of June 2024 (month file exists)
HISTORY_YEARS = 5
KNOWLEDGE_LOOKBACK = dt.timedelta(days=400)  # fundamentals/actions from before the first price
INPUT_DATASETS = ("prices", "fundamentals", "corporate_actions")
PRICE_COLUMNS = ["date", "open", "high", "low", "close", "volume"]
OHLCV = ("open", "high", "low", "close", "volume")
TECH, VAL = "signals_technical", "signals_valuation"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# --- dates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The price history: ``start`` .. ``prev_day`` derived already, ``new_day`` the timed one."""

    start: dt.date
    prev_day: dt.date
    new_day: dt.date
    knowledge_from: dt.date  # first period end / ex date of fundamentals and actions kept


def window() -> Window:
    first = NEW_DAY.replace(year=NEW_DAY.year - HISTORY_YEARS)
    days = session_days(first, NEW_DAY)
    if days.size < 2 or days[-1].item() != NEW_DAY:
        raise SystemExit(f"calendar: {NEW_DAY} is not a session")
    start = days[0].item()
    return Window(start, days[-2].item(), NEW_DAY, start - KNOWLEDGE_LOOKBACK)


# --- the setup source (synthetic prices, fundamentals and corporate actions) -------------------


def actions_table(source: SyntheticSource, ticker: str, lo: dt.date, hi: dt.date) -> pa.Table:
    """The synthetic ticker's splits and dividends with ex date in ``[lo, hi]``."""
    acts = source.corporate_actions(ticker)
    rows: list[tuple[dt.date, str, float, float | None, float | None, str | None]] = []
    for day, ratio in zip(acts.split_dates, acts.split_ratios, strict=True):
        frac = Fraction(ratio).limit_denominator(100)
        rows.append((day, "split", ratio, float(frac.numerator), float(frac.denominator), None))
    for day, amount in zip(acts.dividend_dates, acts.dividend_amounts, strict=True):
        rows.append((day, "dividend", amount, None, None, "USD"))
    rows = sorted(r for r in rows if lo <= r[0] <= hi)
    schema = get_dataset("corporate_actions").schema
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema)


class SetupSource(Source):
    """Serves the synthetic source's prices (request range), fundamentals filed by
    ``knowledge_to`` and its splits and dividends (as ``corporate_actions``), both from
    ``knowledge_from`` on, so the first price date already has four quarters of fundamentals."""

    name: ClassVar[str] = "synthetic"
    datasets: ClassVar[tuple[str, ...]] = INPUT_DATASETS
    description: ClassVar[str] = "Synthetic inputs of the derive benchmark."

    def __init__(self, seed: int, knowledge_from: dt.date, knowledge_to: dt.date) -> None:
        self.seed = seed
        self.knowledge_from = knowledge_from
        self.knowledge_to = knowledge_to

    def fetch(self, request: SourceRequest) -> dict[str, pa.Table]:
        syn = SyntheticSource(self.seed)
        out: dict[str, pa.Table] = {}
        t = request.ticker
        if "prices" in request.datasets:
            r = SourceRequest(t, ("prices",), request.start, request.end)
            out.update(syn.parse(r, syn.fetch(r)))
        if "fundamentals" in request.datasets:
            r = SourceRequest(t, ("fundamentals",), self.knowledge_from, self.knowledge_to)
            fund = syn.parse(r, syn.fetch(r)).get("fundamentals")
            if fund is not None:
                known = pc.less_equal(fund.column("filed"), pa.scalar(self.knowledge_to))
                out["fundamentals"] = fund.filter(known)
        if "corporate_actions" in request.datasets:
            out["corporate_actions"] = actions_table(syn, t, self.knowledge_from, self.knowledge_to)
        return out

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return dict(raw)


def setup_source(win: Window) -> SetupSource:
    """A :class:`SetupSource` whose class spawned worker processes can import (see
    ``daily_batch.memory_source``: run as a script, this file is ``__main__``)."""
    cls: type[SetupSource] = SetupSource
    if __name__ == "__main__":
        cls = importlib.import_module(Path(__file__).stem).SetupSource
    return cls(SEED, win.knowledge_from, win.new_day)


# --- setup (cached) ----------------------------------------------------------------------------


def cache_params(kind: str, n: int, **extra: Any) -> dict[str, Any]:
    import polars

    return {
        "kind": kind,
        "tickers": n,
        "seed": SEED,
        "setup": SETUP_VERSION,
        "new_day": NEW_DAY.isoformat(),
        "marketlake": marketlake.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "polars": polars.__version__,
        **extra,
    }


def _check(summary: Any, what: str) -> None:
    if summary.items_failed:
        first = summary.failures[0]
        raise SystemExit(f"{what}: {summary.items_failed} items failed, first: {first}")


def build_universe(root: Path, tickers: list[str], win: Window, args: argparse.Namespace) -> Any:
    """Untimed, cached: inputs through the session before ``new_day``, both signal datasets
    derived over them (``run_derive(since=None)``), then the new session's prices."""
    params = cache_params("derive-universe", len(tickers))
    ready = read_ready(root)
    if ready and ready.get("params") == params:
        log(f"setup: reusing {root}")
        return ready
    rmtree(root)
    lake_dir = root / "pristine" / "lake"
    source = setup_source(win)
    stats: dict[str, Any] = {}
    log(
        f"setup: {len(tickers)} tickers, prices {win.start}..{win.prev_day}, fundamentals and "
        f"corporate actions from {win.knowledge_from} (run_batch)"
    )
    with marketlake.open(lake_dir, fsync=False) as lake:
        t0 = time.perf_counter()
        kw = {"workers": args.workers, "processes": args.processes}
        s = run_batch(
            lake, source, tickers, INPUT_DATASETS, win.start, win.prev_day, kind="backfill", **kw
        )
        _check(s, "setup inputs")
        stats["inputs_seconds"] = time.perf_counter() - t0
        log(f"setup: inputs written in {stats['inputs_seconds']:.0f}s; full derive (since=None)")
        t0 = time.perf_counter()
        s = run_derive(lake, tickers, DERIVED_DATASETS, None, **kw)
        _check(s, "setup derive")
        stats["full_derive_seconds"] = time.perf_counter() - t0
        stats["full_derive_objects"] = s.objects_written
        log(f"setup: full derive in {stats['full_derive_seconds']:.0f}s; prices of {win.new_day}")
        s = run_batch(lake, source, tickers, ["prices"], win.new_day, win.new_day, **kw)
        _check(s, "setup new session")
        for t in tickers[:3]:
            pm, tm = lake.meta(t, "prices"), lake.meta(t, TECH)
            if (
                pm is None
                or tm is None
                or (pm.max_date, tm.max_date) != (win.new_day, win.prev_day)
            ):
                raise SystemExit(f"setup check failed for {t}: prices {pm}, signals {tm}")
    info = {"params": params, "stats": stats}
    write_ready(root, info)
    return info


def compact_function() -> Callable[..., Any] | None:
    """A ``compact(lake, datasets, tickers)``: ``Lake.compact`` when this marketlake has it, else
    ``marketlake.ingest.compact.compact_lake``, else a loop over ``compact_ticker`` (which
    records nothing in the catalog), else None."""
    if callable(getattr(marketlake.Lake, "compact", None)):

        def lake_compact(
            lake: Any, datasets: list[str] | None = None, tickers: list[str] | None = None
        ) -> Any:
            return lake.compact(datasets=datasets, tickers=tickers)

        return lake_compact
    try:
        module = importlib.import_module("marketlake.ingest.compact")
    except ImportError:
        return None
    fn = getattr(module, "compact_lake", None)
    if callable(fn):
        return fn
    per_ticker = getattr(module, "compact_ticker", None)
    if not callable(per_ticker):
        return None

    def compact_lake(
        lake: Any, datasets: list[str] | None = None, tickers: list[str] | None = None
    ) -> str:
        before = module.month_label(dt.datetime.now(dt.UTC).date())
        written = deleted = count = 0
        for name in datasets or ["prices"]:
            ds = get_dataset(name)
            for t in tickers or lake.tickers(name):
                r = per_ticker(lake.writer.store, lake.layouts[name], ds, t, before=before)
                written += r.objects_written
                deleted += r.objects_deleted
                count += 1
        return (
            f"compact_ticker over {count} (dataset, ticker) pairs (no compact_lake yet), "
            f"months before {before}: {written} objects written, {deleted} deleted"
        )

    return compact_lake


def build_compacted(
    src: Path, target: Path, params: dict[str, Any], tickers: list[str] | None
) -> Any:
    """Untimed, cached: a hard-linked copy of the lake at ``src`` with its prices compacted."""
    compact = compact_function()
    assert compact is not None
    params = {**params, "compacted": True}
    ready = read_ready(target)
    if ready and ready.get("params") == params:
        log(f"setup: reusing {target}")
        return ready
    rmtree(target)
    restore_lake(src, target / "lake")
    t0 = time.perf_counter()
    with marketlake.open(target / "lake", fsync=False) as lake:
        summary = compact(lake, datasets=["prices"], tickers=tickers)
    seconds = time.perf_counter() - t0
    log(f"setup: compacted the prices of {target} in {seconds:.0f}s: {summary}")
    info = {"params": params, "stats": {"compact_seconds": seconds, "summary": str(summary)}}
    write_ready(target, info)
    return info


def price_objects(lake_dir: Path, ticker: str) -> int:
    with marketlake.open(lake_dir, fsync=False) as lake:
        meta = lake.meta(ticker, "prices")
        return len(meta.partitions) if meta else 0


# --- undo a derive run (the timed runs happen on the cached lake, then are undone) -------------
#
# marketlake never writes an object in place (temporary file + rename), so a hard link keeps the
# old bytes of every object a run replaces. The incremental derive replaces exactly the June 2024
# partition and the _meta of each (ticker, signal dataset); those are linked aside before the run
# and put back after it, and the SQLite catalog (written in place) is copied. A manifest written
# last marks a complete backup: a crash between run and restore is repaired on the next start.

BACKUP = "derive-undo"


def backup_lake(lake_dir: Path, tickers: Sequence[str], day: dt.date) -> Path:
    backup = lake_dir.parent / BACKUP
    rmtree(backup)
    backup.mkdir(parents=True)
    entries: list[tuple[str, bool]] = []
    with marketlake.open(lake_dir, fsync=False) as lake:
        keys = [
            key
            for t in tickers
            for ds in DERIVED_DATASETS
            for key in (lake.key(t, ds, day), meta_key(ds, t))
        ]
    for i, key in enumerate(keys):
        path = lake_dir / key
        existed = path.exists()
        if existed:
            os.link(path, backup / str(i))
        entries.append((key, existed))
    catalog = sorted(p.name for p in lake_dir.glob("_catalog.sqlite*"))
    for name in catalog:
        shutil.copy2(lake_dir / name, backup / name)
    manifest = {"lake": str(lake_dir), "entries": entries, "catalog": catalog}
    (backup / "manifest.json").write_text(json.dumps(manifest))
    return backup


def undo(lake_dir: Path) -> bool:
    """Put back what :func:`backup_lake` saved; False when there was no complete backup."""
    backup = lake_dir.parent / BACKUP
    manifest_path = backup / "manifest.json"
    if not manifest_path.exists():
        rmtree(backup)
        return False
    manifest = json.loads(manifest_path.read_text())
    for i, (key, existed) in enumerate(manifest["entries"]):
        path = lake_dir / key
        if existed:
            (backup / str(i)).replace(path)
        else:
            path.unlink(missing_ok=True)
    for path in lake_dir.glob("_catalog.sqlite*"):
        path.unlink()
    for name in manifest["catalog"]:
        (backup / name).replace(lake_dir / name)
    rmtree(backup)
    return True


# --- the computations --------------------------------------------------------------------------


def read_inputs(reader: Any, ticker: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """What ``derive_tables`` reads: prices (OHLCV), corporate actions, fundamentals."""

    def read(name: str, columns: list[str] | None = None) -> pa.Table:
        ds = get_dataset(name)
        return reader.read(ds, ticker, None, None, columns or list(ds.schema.names))

    prices = read("prices", PRICE_COLUMNS).combine_chunks()  # as derive_tables does
    return prices, read("corporate_actions"), read("fundamentals")


def technical_arrays(prices: pa.Table, actions: pa.Table) -> Arrays:
    """The float64 arrays ``compute_derived`` hands to ``compute_technical``: complete OHLCV
    sessions, split-adjusted."""
    mask = None
    for name in OHLCV:
        valid = pc.is_valid(prices.column(name))
        mask = valid if mask is None else pc.and_(mask, valid)
    adjusted = apply_adjustment(prices.filter(mask), actions, "splits")

    def col(name: str) -> np.ndarray:
        return np.ascontiguousarray(
            np.asarray(adjusted.column(name).to_numpy(zero_copy_only=False), np.float64)
        )

    dates = adjusted.column("date").to_numpy(zero_copy_only=False)
    return (dates, col("open"), col("high"), col("low"), col("close"), col("volume"))


def talib_module() -> Any:
    try:
        return importlib.import_module("talib")
    except ImportError:
        return None


def talib_all(talib: Any, arrays: Arrays) -> dict[str, np.ndarray]:
    """TA-Lib's 15 functions behind the 20 ``signals_technical`` columns."""
    _, _, h, lo, c, v = arrays
    return talib_reference(talib, h, lo, c, v)


def max_relative_difference(talib: Any, arrays: Arrays) -> float:
    """Largest relative difference between marketlake and TA-Lib over the 20 columns (after
    both have values), as a check that both compute the same indicators."""
    ours = compute_technical(*arrays)
    worst = 0.0
    for name, ref in talib_all(talib, arrays).items():
        got = ours.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        first = max(FIRST_VALID[name], int(np.argmax(~np.isnan(ref))))
        a, b = got[first:], ref[first:]
        scale = np.maximum(np.abs(b), 1e-12 * float(np.abs(arrays[4]).max()))
        worst = max(worst, float(np.max(np.abs(a - b) / scale)) if a.size else 0.0)
    return worst


def median_ms(fn: Callable[[], Any], loops: int) -> float:
    times = []
    for _ in range(loops):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- part 1: incremental derive of the universe ----------------------------------------------


def run_mode(lake: Any, n_items: int, args: argparse.Namespace) -> str:
    """How run_derive's run_batch executes here (worker processes or threads)."""
    try:  # private helpers: describe the mode the way run_batch chooses it
        source = DeriveSource(lake.store.open_url, {}, full=False)
        nproc = int(batch_module._choose_processes(lake, source, n_items, args.processes))
        workers = args.workers or batch_module.DEFAULT_WORKERS
        threads = batch_module._threads_per_process(True, source, workers, nproc)
    except Exception:
        return f"processes={args.processes or 'auto'}"
    return f"{nproc} worker process{'es' if nproc > 1 else ''} x {threads} threads"


def timed_incremental(
    lake_dir: Path, tickers: list[str], win: Window, args: argparse.Namespace, check: bool
) -> dict[str, Any]:
    """One timed ``run_derive(since=new_day)`` on ``lake_dir``, then undone."""
    backup_lake(lake_dir, tickers, win.new_day)
    try:
        os.sync()  # flush the backup's dirty pages before the timed run
        with marketlake.open(lake_dir, fsync=True) as lake:
            mode = run_mode(lake, len(tickers) * len(DERIVED_DATASETS), args)
            load_before = os.getloadavg()[0]  # other work on the machine skews the timings
            t0 = time.perf_counter()
            summary = run_derive(
                lake,
                tickers,
                DERIVED_DATASETS,
                win.new_day,
                workers=args.workers,
                processes=args.processes,
            )
            seconds = time.perf_counter() - t0
            _check(summary, "timed run_derive")
            if check:
                verify_incremental(lake, tickers[0], win)
    finally:
        if not undo(lake_dir):
            raise SystemExit(f"could not undo the derive run on {lake_dir}: delete it (--rebuild)")
    expected = len(tickers) * len(DERIVED_DATASETS) * 2
    if summary.objects_written != expected:
        raise SystemExit(
            f"run_derive wrote {summary.objects_written} objects, expected {expected} "
            "(one partition + _meta per ticker and dataset): the run was not incremental"
        )
    return {
        "seconds": seconds,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "objects_written": summary.objects_written,
        "rows_added": summary.rows_added,
        "mode": mode,
    }


def verify_incremental(lake: Any, ticker: str, win: Window) -> None:
    """Untimed: the stored signals now end on the new day and equal a full recompute."""
    full = derive_tables(lake.reader, ticker, DERIVED_DATASETS, None, full=True)
    for name in DERIVED_DATASETS:
        stored = lake.read(ticker, name, output="arrow")
        if stored.column("date")[-1].as_py() != win.new_day or not stored.equals(full[name]):
            raise SystemExit(f"{name} {ticker}: incremental rows differ from a full recompute")


@dataclass
class Breakdown:
    read: float = 0.0
    technical: float = 0.0
    valuation: float = 0.0
    check: float = 0.0
    write: float = 0.0
    rows: int = 0

    @property
    def total(self) -> float:
        return self.read + self.technical + self.valuation + self.check + self.write


def serial_breakdown(
    lake_dir: Path, tickers: list[str], win: Window, keep_arrays: bool
) -> tuple[Breakdown, list[Arrays]]:
    """What each ticker of the incremental run costs, step by step, in one thread (the steps of
    ``derive_tables`` and the batch's write, without the catalog); undone afterwards."""
    out = Breakdown()
    arrays: list[Arrays] = []
    backup_lake(lake_dir, tickers, win.new_day)
    try:
        os.sync()
        with marketlake.open(lake_dir, fsync=True) as lake:
            reader = lake.reader
            writer = PartitionWriter(lake.writer.store.with_fsync(False), lake.writer.layouts)
            datasets = {name: get_dataset(name) for name in DERIVED_DATASETS}
            for t in tickers:
                t0 = time.perf_counter()
                prices, actions, fund = read_inputs(reader, t)
                t1 = time.perf_counter()
                tech = compute_derived(TECH, prices, actions, fund)
                t2 = time.perf_counter()
                val = compute_derived(VAL, prices, actions, fund)
                t3 = time.perf_counter()
                assert tech is not None and val is not None, t
                rows = {
                    TECH: _since(reader, TECH, t, tech, win.new_day),
                    VAL: _since(reader, VAL, t, val, win.new_day),
                }
                t4 = time.perf_counter()
                for name, table in rows.items():
                    writer.write(datasets[name], t, table, source="derived")
                    out.rows += table.num_rows
                t5 = time.perf_counter()
                out.read += t1 - t0
                out.technical += t2 - t1
                out.valuation += t3 - t2
                out.check += t4 - t3
                out.write += t5 - t4
                if keep_arrays:
                    arrays.append(technical_arrays(prices, actions))
            t0 = time.perf_counter()
            writer.store.sync()
            out.write += time.perf_counter() - t0
            writer.close()
    finally:
        undo(lake_dir)
    if out.rows != len(tickers) * len(DERIVED_DATASETS):
        raise SystemExit(f"breakdown: {out.rows} rows to write, expected one per ticker/dataset")
    return out, arrays


def compute_over_universe(
    arrays: list[Arrays], talib: Any, repeat: int
) -> tuple[list[float], list[float]]:
    """Seconds for all tickers' technical indicators: marketlake vs TA-Lib, per repeat."""
    ml, ta = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for a in arrays:
            compute_technical(*a)
        ml.append(time.perf_counter() - t0)
        if talib is not None:
            t0 = time.perf_counter()
            for a in arrays:
                talib_all(talib, a)
            ta.append(time.perf_counter() - t0)
    return ml, ta


def bench_universe(
    args: argparse.Namespace, data_dir: Path, win: Window, talib: Any
) -> dict[str, Any]:
    tickers = demo_universe(args.tickers)
    root = data_dir / f"derive-n{args.tickers}"
    for lake_dir in (root / "pristine" / "lake", root / "compacted" / "lake"):
        if lake_dir.exists() and undo(lake_dir):
            log(f"restored {lake_dir} after an interrupted run")
    info = build_universe(root, tickers, win, args)
    variants = {"monthly": root / "pristine" / "lake"}
    compact_info = None
    if args.compact:
        compact_info = build_compacted(
            variants["monthly"], root / "compacted", info["params"], tickers
        )
        variants["compacted"] = root / "compacted" / "lake"
    result: dict[str, Any] = {
        "tickers": len(tickers),
        "setup": info["stats"],
        "compact": compact_info["stats"] if compact_info else None,
        "variants": {},
    }
    arrays: list[Arrays] = []
    for vi, (variant, lake_dir) in enumerate(variants.items()):
        objects = price_objects(lake_dir, tickers[0])
        runs = []
        for i in range(args.repeat):
            r = timed_incremental(lake_dir, tickers, win, args, check=i == 0)
            log(
                f"{variant} repeat {i + 1}/{args.repeat}: run_derive {r['seconds']:.2f}s "
                f"({r['objects_written']} objects, {r['mode']}; load average "
                f"{r['load_before']:.1f} -> {r['load_after']:.1f})"
            )
            runs.append(r)
        entry: dict[str, Any] = {"price_objects_per_ticker": objects, "runs": runs}
        if not args.skip_breakdown:
            log(f"{variant}: serial breakdown over {len(tickers)} tickers (one thread)")
            bd, got = serial_breakdown(lake_dir, tickers, win, keep_arrays=vi == 0)
            arrays = got or arrays
            entry["breakdown"] = bd.__dict__ | {"total": bd.total}
            log(
                f"{variant} breakdown: read {bd.read:.1f}s, technical {bd.technical:.1f}s, "
                f"valuation {bd.valuation:.1f}s, check {bd.check:.1f}s, write {bd.write:.1f}s"
            )
        result["variants"][variant] = entry
    if arrays:
        log(f"technical indicators over {len(arrays)} full histories: marketlake vs TA-Lib")
        ml, ta = compute_over_universe(arrays, talib, args.repeat)
        result["compute"] = {
            "marketlake": ml,
            "talib": ta or None,
            "sessions": int(sum(a[0].size for a in arrays)),
        }
        log(
            f"compute: marketlake {statistics.median(ml):.2f}s, "
            f"TA-Lib {statistics.median(ta) if ta else float('nan'):.2f}s"
        )
    return result


# --- part 2: one ticker, five years ------------------------------------------------------------


def pick_ticker(candidates: Sequence[str], win: Window) -> str:
    """The first candidate with a split inside the price window (so the adjustment does work)."""
    syn = SyntheticSource(SEED)
    for t in candidates:
        if any(win.start < d <= win.new_day for d in syn.corporate_actions(t).split_dates):
            return t
    return candidates[0]


def build_one(root: Path, ticker: str, win: Window) -> dict[str, Any]:
    params = cache_params("derive-one", 1, ticker=ticker)
    ready = read_ready(root)
    if ready and ready.get("params") == params:
        return dict(ready)
    rmtree(root)
    source = SetupSource(SEED, win.knowledge_from, win.new_day)
    request = SourceRequest(ticker, INPUT_DATASETS, win.start, win.new_day)
    tables = source.parse(request, source.fetch(request))
    with marketlake.open(root / "pristine" / "lake", fsync=False) as lake:
        for name in INPUT_DATASETS:
            lake.write(ticker, name, tables[name], source=source.name)
    info = {"params": params}
    write_ready(root, info)
    return info


def bench_one(args: argparse.Namespace, data_dir: Path, win: Window, talib: Any) -> dict[str, Any]:
    ticker = args.one_ticker or pick_ticker(demo_universe(60), win)
    root = data_dir / f"derive-one-{ticker}"
    info = build_one(root, ticker, win)
    variants = {"monthly": root / "pristine" / "lake"}
    if args.compact:
        build_compacted(variants["monthly"], root / "compacted", info["params"], [ticker])
        variants["compacted"] = root / "compacted" / "lake"
    with marketlake.open(variants["monthly"], fsync=False) as lake:
        prices, actions, fund = read_inputs(lake.reader, ticker)
    arrays = technical_arrays(prices, actions)
    splits = pc.sum(pc.equal(actions.column("action"), "split")).as_py() or 0
    out: dict[str, Any] = {
        "ticker": ticker,
        "sessions": prices.num_rows,
        "splits": splits,
        "filings": fund.num_rows,
        "talib_max_rel_diff": max_relative_difference(talib, arrays) if talib else None,
    }
    tech = compute_derived(TECH, prices, actions, fund)
    if tech is None or not tech.equals(compute_technical(*arrays)):
        raise SystemExit("technical_arrays does not reproduce compute_derived's inputs")
    loops = args.one_loops
    ops: dict[str, Callable[[], Any]] = {
        "compute_derived_technical": lambda: compute_derived(TECH, prices, actions, fund),
        "compute_technical_arrays": lambda: compute_technical(*arrays),
        "compute_derived_valuation": lambda: compute_derived(VAL, prices, actions, fund),
    }
    if talib is not None:
        ops["talib"] = lambda: talib_all(talib, arrays)
    for fn in ops.values():
        fn()  # warm-up
    timings: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(args.repeat):
        for k, fn in ops.items():
            timings[k].append(median_ms(fn, loops))
    out["compute"] = timings
    out["io"] = {}
    for variant, lake_dir in variants.items():
        io: dict[str, Any] = {
            "price_objects": price_objects(lake_dir, ticker),
            "derive_tables": [],
            "run_derive": [],
        }
        with marketlake.open(lake_dir, fsync=False) as lake:
            reader = lake.reader
            derive_tables(reader, ticker, DERIVED_DATASETS, None, full=True)  # warm-up
            for _ in range(args.repeat):
                io["derive_tables"].append(
                    median_ms(
                        lambda r=reader: derive_tables(
                            r, ticker, DERIVED_DATASETS, None, full=True
                        ),
                        max(3, loops // 5),
                    )
                )
        work = root / "work"
        for _ in range(args.repeat):
            rmtree(work)
            shutil.copytree(lake_dir, work / "lake")
            os.sync()
            with marketlake.open(work / "lake", fsync=True) as lake:
                t0 = time.perf_counter()
                s = run_derive(lake, [ticker], DERIVED_DATASETS, None)
                io["run_derive"].append(time.perf_counter() - t0)
                _check(s, "one-ticker run_derive")
                io["objects_written"] = s.objects_written
        rmtree(work)
        out["io"][variant] = io
        log(
            f"one ticker {ticker} ({variant}): derive_tables "
            f"{statistics.median(io['derive_tables']) * 1e3:.1f} ms, run_derive "
            f"{statistics.median(io['run_derive']) * 1e3:.1f} ms ({io['objects_written']} objects)"
        )
    return out


# --- report ------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    unit: str  # "s" or "ms"
    marketlake: float | None
    talib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.marketlake / self.talib if self.marketlake and self.talib else None


def _med(values: Sequence[float] | None) -> float | None:
    return statistics.median(values) if values else None


def build_rows(universe: dict[str, Any] | None, one: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    if universe is not None:
        n = universe["tickers"]
        for variant, v in universe["variants"].items():
            tag = f"[{variant}, {v['price_objects_per_ticker']} price objects/ticker]"
            sec = statistics.median(r["seconds"] for r in v["runs"])
            objects = sorted({r["objects_written"] for r in v["runs"]})
            rows.append(
                Row(
                    f"{tag} run_derive({n:,} tickers, both datasets, since=new session)",
                    "s",
                    sec,
                    note=f"{n / sec:,.0f} tickers/s; objects_written="
                    f"{'/'.join(map(str, objects))} (expected {n * 4}); {v['runs'][0]['mode']}",
                )
            )
            bd = v.get("breakdown")
            if bd:
                parts = [
                    ("read inputs (prices, actions, fundamentals)", "read"),
                    ("compute signals_technical (compute_derived)", "technical"),
                    ("compute signals_valuation (compute_derived)", "valuation"),
                    ("incremental check (stored row before since)", "check"),
                    ("write 2 rows (merge month file + _meta)", "write"),
                    ("total, serial", "total"),
                ]
                for label, key in parts:
                    share = f"{100 * bd[key] / bd['total']:.0f} % of the serial total"
                    per = f"{bd[key] / n * 1e3:.2f} ms/ticker"
                    rows.append(
                        Row(f"  {tag} serial: {label}", "s", bd[key], note=f"{per}; {share}")
                    )
        comp = universe.get("compute")
        if comp:
            rows.append(
                Row(
                    f"technical indicators, {n:,} tickers' full histories, arrays in memory",
                    "s",
                    _med(comp["marketlake"]),
                    _med(comp["talib"]),
                    note=f"{comp['sessions']:,} sessions; compute_technical (incl. the Arrow "
                    "table) vs TA-Lib's 15 functions; one thread each",
                )
            )
    if one is not None:
        t = one["ticker"]
        c = one["compute"]
        head = f"1 ticker ({t}, {one['sessions']} sessions)"
        ta = _med(c.get("talib"))
        rows += [
            Row(
                f"{head}: compute_derived signals_technical",
                "ms",
                _med(c["compute_derived_technical"]),
                ta,
                note=f"incl. split adjustment ({one['splits']} splits) and Arrow in/out",
            ),
            Row(
                f"{head}: compute_technical on float64 arrays",
                "ms",
                _med(c["compute_technical_arrays"]),
                ta,
                note="same arrays as TA-Lib; max relative difference "
                + (
                    f"{one['talib_max_rel_diff']:.1e}"
                    if one["talib_max_rel_diff"] is not None
                    else "n/a"
                ),
            ),
            Row(
                f"{head}: compute_derived signals_valuation",
                "ms",
                _med(c["compute_derived_valuation"]),
                note=f"{one['filings']} filings; TA-Lib has no valuation",
            ),
        ]
        for variant, io in one["io"].items():
            tag = f"[{variant}, {io['price_objects']} price objects]"
            rows.append(
                Row(
                    f"{head} {tag}: derive_tables(full=True): read + compute both",
                    "ms",
                    _med(io["derive_tables"]),
                )
            )
            rows.append(
                Row(
                    f"{head} {tag}: run_derive([T], since=None): read + compute + write",
                    "ms",
                    _med(io["run_derive"]),
                    note=f"objects_written={io['objects_written']} (fsync=True lake)",
                )
            )
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1e3:.2f} ms" if unit == "ms" else f"{value:.2f} s"


def machine_info() -> dict[str, Any]:
    import polars

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    talib = talib_module()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "marketlake": marketlake.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "polars": polars.__version__,
        "talib": getattr(talib, "__version__", None) if talib else None,
    }


def print_report(result: dict[str, Any], rows: list[Row]) -> None:
    header = ["figure", "marketlake", "TA-Lib", "ratio", "note"]
    body = [
        [
            r.figure,
            _fmt(r.marketlake, r.unit),
            "—" if r.talib is None else _fmt(r.talib, r.unit),
            "—" if r.ratio is None else f"{r.ratio:.2f}x",
            r.note,
        ]
        for r in rows
    ]
    m = result["machine"]
    info = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['platform']}",
        f"versions: python {m['python']}, marketlake {m['marketlake']}, numpy {m['numpy']}, "
        f"pyarrow {m['pyarrow']}, polars {m['polars']}, TA-Lib {m['talib']}",
        f"medians over {result['params']['repeat']} repeats (one-ticker compute: median of "
        f"{result['params']['one_loops']} calls per repeat); ratio = marketlake / TA-Lib; "
        "serial breakdown: one pass, one thread",
    ]
    universe = result.get("universe")
    if universe:
        s = universe["setup"]
        info.append(
            f"setup (cached, untimed): full-history derive of {universe['tickers']:,} tickers "
            f"(run_derive since=None) took {s['full_derive_seconds']:.0f} s "
            f"({s['full_derive_objects']:,} objects)"
        )
        loads = [
            f"{variant} {r['load_before']:.1f}->{r['load_after']:.1f}"
            for variant, v in universe["variants"].items()
            for r in v["runs"]
            if "load_before" in r
        ]
        if loads:
            info.append(
                "1-minute load average before->after each timed run_derive (2 cores; other work "
                f"skews the timings): {', '.join(loads)}"
            )
        if universe.get("compact"):
            info.append(f"compaction of the prices: {universe['compact']['summary']}")
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        for line in [header, *body]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
        print("\n".join(info))
        return
    table = Table(title="marketlake derive: incremental universe and one ticker, beside TA-Lib")
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if 0 < i < 4 else "left")
    for line in body:
        table.add_row(*(Text(cell) for cell in line))  # plain text: "[monthly, ...]" is no markup
    console = Console(width=max(160, Console().width))
    console.print(table)
    for line in info:
        console.print(line, highlight=False)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark marketlake's derived datasets (signals_technical, signals_valuation): "
            "the incremental daily derive of N tickers and one ticker's five years, beside "
            "TA-Lib. Setups are cached under --data-dir."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tickers", type=int, default=6000, help="tickers in the lake")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (medians reported)")
    parser.add_argument(
        "--one-loops", type=int, default=30, help="calls per repeat for the one-ticker compute"
    )
    parser.add_argument(
        "--one-ticker", default=None, help="ticker of part 2 (default: first with a split)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).resolve().parent / ".data",
        help="where setups and results-derive.json live",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="run_batch workers (default: marketlake's)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="run_batch worker processes (default: marketlake's own choice, as users get it)",
    )
    parser.add_argument(
        "--compact",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure on compacted prices (default: when marketlake.ingest.compact exists)",
    )
    parser.add_argument("--skip-universe", action="store_true", help="only run part 2")
    parser.add_argument("--skip-one", action="store_true", help="only run part 1")
    parser.add_argument(
        "--skip-breakdown", action="store_true", help="no serial breakdown (and no compute rows)"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="discard the cached setups and build them again"
    )
    args = parser.parse_args(argv)
    if min(args.tickers, args.repeat, args.one_loops, args.workers or 1, args.processes or 1) < 1:
        parser.error("--tickers, --repeat, --one-loops, --workers and --processes must be >= 1")
    if args.compact is None:
        args.compact = compact_function() is not None
    elif args.compact and compact_function() is None:
        parser.error("--compact: this marketlake has no marketlake.ingest.compact")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.enable()
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` dumps every thread's stack
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    win = window()
    if args.rebuild:
        rmtree(data_dir / f"derive-n{args.tickers}")
        for path in data_dir.glob("derive-one-*"):
            rmtree(path)
    talib = talib_module()
    if talib is None:
        log("TA-Lib is not installed (pip install -e '.[test]'): its columns will be n/a")
    started = time.perf_counter()
    universe = None if args.skip_universe else bench_universe(args, data_dir, win, talib)
    one = None if args.skip_one else bench_one(args, data_dir, win, talib)
    result: dict[str, Any] = {
        "benchmark": "derive",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": {
            "tickers": args.tickers,
            "repeat": args.repeat,
            "one_loops": args.one_loops,
            "workers": args.workers,
            "processes": args.processes,
            "compact": args.compact,
            "seed": SEED,
            "window": {k: str(v) for k, v in win.__dict__.items()},
        },
        "machine": machine_info(),
        "universe": universe,
        "one": one,
    }
    rows = build_rows(universe, one)
    result["rows"] = [r.__dict__ | {"ratio": r.ratio} for r in rows]
    result["total_seconds"] = time.perf_counter() - started
    out = data_dir / "results-derive.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print_report(result, rows)
    print(f"results written to {out} (total {result['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
