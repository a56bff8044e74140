"""Daily-batch and read benchmark: marketlake against ArcticDB (LMDB) in the same run.

Run ``python benchmarks/daily_batch.py --help`` for the options and see ``benchmarks/README.md``
for what each figure means. In short:

1. **Daily batch.** ``--tickers`` tickers x the three daily datasets (prices, signals_valuation,
   signals_technical). An untimed, cached setup holds 10 NYSE sessions of June 2024 per ticker and
   dataset, both in a local marketlake lake (written through ``run_batch``) and in ArcticDB (one
   LMDB library per dataset, one symbol per ticker). Timed, on a fresh copy of that setup each
   repeat: (a) marketlake ``run_batch`` adding the next session (one row per ticker and dataset);
   (b) the same batch again, which must change zero bytes; (c) ArcticDB ``append_batch`` of the
   same rows into the three libraries.
2. **Reads.** ``--read-tickers`` tickers with five years of daily prices (2019-2023) in a lake
   and in an ArcticDB library: one ticker x 5 years, one ticker x 1 month, 100 tickers x 1 year.

Rows are generated with NumPy (vectorised across tickers, fixed seed), not with the synthetic
source, which is far too slow for 6,000 tickers. Results are printed as a table and written to
``<data-dir>/results-daily_batch.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import gc
import hashlib
import importlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

import marketlake
from marketlake.ingest.batch import run_batch
from marketlake.schemas.datasets import DAILY_DATASETS, get_dataset
from marketlake.sources.base import Source, SourceRequest
from marketlake.sources.synthetic import demo_universe

GENERATOR_VERSION = 2  # bump when the generated rows change (invalidates the cached setups)
SEED = 20240601
SETUP_MONTH = (2024, 6)  # the "current month" of the batch setup (fixed so the cache stays valid)
SETUP_SESSIONS = 10  # sessions already in the lake; the timed batch adds session 11
READ_START = dt.date(2019, 1, 1)
READ_END = dt.date(2023, 12, 31)
ONE_MONTH = (dt.date(2023, 6, 1), dt.date(2023, 6, 30))
ONE_YEAR = (dt.date(2023, 1, 1), dt.date(2023, 12, 31))
BATCH_READ_TICKERS = 100
SINGLE_READ_SAMPLE = 25  # tickers looped per repeat for the single-ticker reads (per-op median)
BATCH_READ_LOOPS = 3  # read_batch calls per repeat (per-op median)
ARCTIC_MAP_SIZE = "50GB"
EXCLUDED_FROM_HASH = ("_catalog.sqlite", ".marketlake-locks")

BATCH_TARGET_RATIO = 0.5
BATCH_TARGET_SECONDS = 30.0
RERUN_TARGET_SECONDS = 30.0
READ_TARGET_RATIO = 3.0

Frames = dict[str, dict[str, pd.DataFrame]]  # dataset -> ticker -> rows (ArcticDB input)


# --- row generation (NumPy, vectorised across tickers) -----------------------------------------


def session_days(start: dt.date, end: dt.date) -> np.ndarray:
    """NYSE sessions in ``[start, end]`` as ``datetime64[D]`` (business days as a fallback)."""
    try:
        from marketlake import calendars

        days = np.array(calendars.sessions_array(start, end), dtype="datetime64[D]")
        if days.size:
            return days
    except Exception:  # calendar unavailable: plain weekdays are close enough for a benchmark
        pass
    return np.array(pd.bdate_range(start, end).values.astype("datetime64[D]"))


def setup_days() -> tuple[np.ndarray, np.ndarray]:
    """The setup sessions (first 10 of the setup month) and the next session (the timed one)."""
    year, month = SETUP_MONTH
    first = dt.date(year, month, 1)
    days = session_days(first, first + dt.timedelta(days=40))
    if days.size < SETUP_SESSIONS + 1:
        raise SystemExit(f"calendar has fewer than {SETUP_SESSIONS + 1} sessions after {first}")
    return days[:SETUP_SESSIONS], days[SETUP_SESSIONS : SETUP_SESSIONS + 1]


def _round_price(x: np.ndarray) -> np.ndarray:
    """Cents (1/100 cent below one dollar); monotone, so price orderings survive rounding."""
    return np.where(x < 1.0, np.round(x, 4), np.round(x, 2))


def generate(n_tickers: int, n_days: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Column arrays of shape ``(n_tickers, n_days)`` for the three daily datasets.

    NaN marks a missing value (written as null). Prices: a log random walk per ticker with
    ``low <= min(open, close) <= max(open, close) <= high``; int64 volume.
    """
    rng = np.random.default_rng(seed)
    shape = (n_tickers, n_days)
    start = np.exp(rng.uniform(np.log(5.0), np.log(500.0), n_tickers))[:, None]
    vol = rng.uniform(0.01, 0.03, n_tickers)[:, None]
    drift = rng.normal(0.0003, 0.0005, n_tickers)[:, None]
    close = start * np.exp(np.cumsum(drift + vol * rng.standard_normal(shape), axis=1))
    prev = np.concatenate([start, close[:, :-1]], axis=1)
    open_ = prev * np.exp(0.3 * vol * rng.standard_normal(shape))
    high = np.maximum(open_, close) * (1.0 + 0.5 * vol * np.abs(rng.standard_normal(shape)))
    low = np.minimum(open_, close) * np.exp(-0.5 * vol * np.abs(rng.standard_normal(shape)))
    open_, high, low, close = (_round_price(a) for a in (open_, high, low, close))
    adj = np.round(close * rng.uniform(0.85, 1.0, n_tickers)[:, None], 4)
    adj[np.arange(n_tickers) % 20 == 0, :] = np.nan  # some vendors give no adjusted close
    volume = rng.lognormal(13.0, 1.2, shape).astype(np.int64)
    prices = {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "adj_close": adj,
        "volume": volume,
    }

    eps = rng.normal(3.0, 2.5, n_tickers)[:, None]
    shares = np.exp(rng.uniform(np.log(2e7), np.log(5e9), n_tickers))[:, None]
    mcap = close * shares
    book = mcap / rng.uniform(0.5, 12.0, n_tickers)[:, None]
    revenue = mcap / rng.uniform(0.3, 15.0, n_tickers)[:, None]
    ebitda = revenue * rng.normal(0.2, 0.15, n_tickers)[:, None]
    fcf = revenue * rng.normal(0.08, 0.08, n_tickers)[:, None]
    net_debt = mcap * rng.uniform(-0.1, 0.6, n_tickers)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        valuation = {
            "pe_ttm": np.where(eps > 0, close / eps, np.nan),
            "pb": np.where(book > 0, mcap / book, np.nan),
            "ps_ttm": mcap / revenue,
            "ev_ebitda_ttm": np.where(ebitda > 0, (mcap + net_debt) / ebitda, np.nan),
            "fcf_yield_ttm": fcf / mcap,
            "earnings_yield_ttm": eps / close,
            "market_cap": mcap,
            "ev": mcap + net_debt,
        }

    def near(scale: float) -> np.ndarray:
        return close * (1.0 + scale * rng.standard_normal(shape))

    sma20 = near(0.02)
    band = close * vol * 4.0
    macd = close * 0.01 * rng.standard_normal(shape)
    technical = {
        "rsi_14": np.clip(rng.normal(50.0, 15.0, shape), 0.0, 100.0),
        "sma_20": sma20,
        "sma_50": near(0.05),
        "ema_20": near(0.02),
        "macd": macd,
        "macd_signal": macd + close * 0.003 * rng.standard_normal(shape),
        "bb_upper": sma20 + band,
        "bb_lower": sma20 - band,
    }
    # technical columns this generator does not model (issue 5's nullable additions) are null
    for name in get_dataset("signals_technical").value_columns:
        technical.setdefault(name, np.full(shape, np.nan))
    return {"prices": prices, "signals_valuation": valuation, "signals_technical": technical}


def _arrow_column(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        return pa.array(values, typ, mask=missing if missing.any() else None)
    return pa.array(values, typ)


def dataset_tables(
    n_tickers: int, days: np.ndarray, columns: dict[str, dict[str, np.ndarray]]
) -> dict[str, pa.Table]:
    """One Arrow table per dataset, ticker-major: ticker ``i`` owns rows ``i*d .. i*d+d-1``."""
    out: dict[str, pa.Table] = {}
    for name, cols in columns.items():
        schema = get_dataset(name).schema
        arrays = [pa.array(np.tile(days, n_tickers), pa.date32())]
        arrays += [_arrow_column(cols[f.name].reshape(-1), f.type) for f in list(schema)[1:]]
        out[name] = pa.Table.from_arrays(arrays, schema=schema)
    return out


def split_frames(
    tickers: Sequence[str], days: np.ndarray, columns: dict[str, dict[str, np.ndarray]]
) -> Frames:
    """Per-ticker pandas frames with a ``DatetimeIndex`` named ``date`` (ArcticDB's input)."""
    index = pd.DatetimeIndex(days.astype("datetime64[ns]"), name="date")
    out: Frames = {}
    for name, cols in columns.items():
        names = [f.name for f in list(get_dataset(name).schema)[1:]]
        out[name] = {
            t: pd.DataFrame({c: cols[c][i] for c in names}, index=index)
            for i, t in enumerate(tickers)
        }
    return out


def column_slice(
    columns: dict[str, dict[str, np.ndarray]], cols: slice
) -> dict[str, dict[str, np.ndarray]]:
    return {
        ds: {c: np.ascontiguousarray(a[:, cols]) for c, a in v.items()} for ds, v in columns.items()
    }


class MemorySource(Source):
    """Serves pre-built rows from memory so that only the lake's work is timed.

    Holds one table per dataset (ticker-major, ``rows_per_ticker`` rows each) and slices it per
    request (zero-copy). Small to pickle, so ``run_batch`` may ship it to worker processes.
    """

    name: ClassVar[str] = "bench"
    datasets: ClassVar[tuple[str, ...]] = DAILY_DATASETS
    description: ClassVar[str] = "In-memory rows for the daily-batch benchmark."

    def __init__(
        self, tickers: Sequence[str], tables: dict[str, pa.Table], rows_per_ticker: int
    ) -> None:
        self.offsets = {t: i * rows_per_ticker for i, t in enumerate(tickers)}
        self.tables = tables
        self.rows = rows_per_ticker

    def fetch(self, request: SourceRequest) -> dict[str, pa.Table]:
        at = self.offsets[request.ticker]
        return {d: self.tables[d].slice(at, self.rows) for d in request.datasets}

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        return dict(raw)


def memory_source(
    tickers: Sequence[str], tables: dict[str, pa.Table], rows_per_ticker: int
) -> MemorySource:
    """A :class:`MemorySource` whose class worker processes can import.

    ``run_batch`` only uses worker processes for sources whose class is importable (not defined
    in ``__main__``). Run as a script, this file is ``__main__``; the same class imported from
    the module ``daily_batch`` (this file, on ``sys.path`` as the script's directory) is
    importable by spawned workers, so the benchmark gets the process/thread choice users get.
    """
    cls: type[MemorySource] = MemorySource
    if __name__ == "__main__":
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        cls = importlib.import_module(Path(__file__).stem).MemorySource
    return cls(tickers, tables, rows_per_ticker)


# --- file-system helpers ----------------------------------------------------------------------


def rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _copy_or_link(src: str, dst: str) -> None:
    if Path(src).name.startswith(EXCLUDED_FROM_HASH) or f"/{EXCLUDED_FROM_HASH[1]}/" in src:
        shutil.copy2(src, dst)  # SQLite and lock files are written in place: real copies
    else:
        os.link(src, dst)


def restore_lake(pristine: Path, work: Path) -> None:
    """Fresh working copy of a lake: hard links for objects, real copies for the catalog.

    Hard links are safe for objects because marketlake never writes a file in place (it writes a
    temporary file and renames it over the key). The SQLite catalog *is* modified in place, so it
    (and the lock directory) are copied.
    """
    rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    linked = False
    if shutil.which("cp") and sys.platform.startswith("linux"):
        linked = (
            subprocess.run(["cp", "-al", str(pristine), str(work)], check=False).returncode == 0
        )
    if not linked:
        rmtree(work)
        shutil.copytree(pristine, work, copy_function=_copy_or_link)
        return
    for entry in pristine.iterdir():
        if entry.name.startswith(EXCLUDED_FROM_HASH):
            target = work / entry.name
            if entry.is_dir():
                rmtree(target)
                shutil.copytree(entry, target)
            else:
                target.unlink()
                shutil.copy2(entry, target)


def _lake_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if not d.startswith(EXCLUDED_FROM_HASH)]
        for name in filenames:
            if not name.startswith(EXCLUDED_FROM_HASH):
                yield Path(dirpath) / name


@dataclass
class FileState:
    digest: str
    size: int
    stamp: tuple[int, int]  # (inode, mtime_ns): changes whenever a file is rewritten


def snapshot(root: Path) -> dict[str, FileState]:
    """Content hash, size and (inode, mtime) of every lake file except the catalog and locks."""

    def one(path: Path) -> tuple[str, FileState]:
        data = path.read_bytes()
        st = path.stat()
        state = FileState(hashlib.sha256(data).hexdigest(), len(data), (st.st_ino, st.st_mtime_ns))
        return str(path.relative_to(root)), state

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, _lake_files(root)))


def diff_snapshots(
    before: dict[str, FileState], after: dict[str, FileState]
) -> tuple[int, int, int]:
    """(bytes changed, files with different content or presence, files rewritten in place)."""
    changed_bytes = changed_files = touched = 0
    for key in before.keys() | after.keys():
        b, a = before.get(key), after.get(key)
        if b is None or a is None or b.digest != a.digest:
            changed_files += 1
            changed_bytes += max(b.size if b else 0, a.size if a else 0)
        elif b.stamp != a.stamp:
            touched += 1
    return changed_bytes, changed_files, touched


def read_ready(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "ready.json").read_text())
    except (OSError, ValueError):
        return None


def write_ready(path: Path, params: dict[str, Any]) -> None:
    (path / "ready.json").write_text(json.dumps(params, indent=2, sort_keys=True))


def cache_params(kind: str, n: int) -> dict[str, Any]:
    import arcticdb

    return {
        "kind": kind,
        "tickers": n,
        "seed": SEED,
        "generator": GENERATOR_VERSION,
        "marketlake": marketlake.__version__,
        "pyarrow": pa.__version__,
        "arcticdb": arcticdb.__version__,
    }


def arctic_uri(path: Path) -> str:
    return f"lmdb://{path}?map_size={ARCTIC_MAP_SIZE}"


def release_arctic() -> None:
    """Let ArcticDB close its LMDB environments (they close when the objects are collected)."""
    gc.collect()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- part 1: daily batch ----------------------------------------------------------------------


@dataclass
class BatchData:
    tickers: list[str]
    setup_days: np.ndarray
    new_day: dt.date
    setup_tables: dict[str, pa.Table]  # dataset -> ticker-major table, SETUP_SESSIONS per ticker
    new_tables: dict[str, pa.Table]  # dataset -> one row per ticker (the timed session)
    new_frames: Frames
    setup_columns: dict[str, dict[str, np.ndarray]]


def batch_data(n: int) -> BatchData:
    tickers = demo_universe(n)
    before, new = setup_days()
    everything = generate(n, SETUP_SESSIONS + 1, SEED)
    setup_cols = column_slice(everything, slice(0, SETUP_SESSIONS))
    new_cols = column_slice(everything, slice(SETUP_SESSIONS, SETUP_SESSIONS + 1))
    return BatchData(
        tickers=tickers,
        setup_days=before,
        new_day=new[0].item(),
        setup_tables=dataset_tables(n, before, setup_cols),
        new_tables=dataset_tables(n, new, new_cols),
        new_frames=split_frames(tickers, new, new_cols),
        setup_columns=setup_cols,
    )


def build_batch_setup(root: Path, data: BatchData, args: argparse.Namespace) -> None:
    """Untimed setup: the pristine lake (via run_batch) and the same rows in ArcticDB."""
    import arcticdb
    from arcticdb.version_store.library import WritePayload

    params = cache_params("batch", len(data.tickers))
    if read_ready(root) == params:
        log(f"batch setup: reusing {root}")
        return
    rmtree(root)
    pristine = root / "pristine"
    t0 = time.perf_counter()
    first, last = data.setup_days[0].item(), data.setup_days[-1].item()
    log(f"batch setup: marketlake lake, {len(data.tickers)} tickers x 3 datasets, {first}..{last}")
    source = memory_source(data.tickers, data.setup_tables, SETUP_SESSIONS)
    with marketlake.open(pristine / "lake", fsync=False) as lake:
        summary = run_batch(
            lake,
            source,
            data.tickers,
            DAILY_DATASETS,
            first,
            last,
            workers=args.workers,
            processes=args.processes,
        )
    if summary.items_failed:
        raise SystemExit(f"setup batch failed: {summary.failures[:3]}")
    log(f"batch setup: lake done in {time.perf_counter() - t0:.1f}s; ArcticDB libraries")
    t0 = time.perf_counter()
    frames = split_frames(data.tickers, data.setup_days, data.setup_columns)
    ac = arcticdb.Arctic(arctic_uri(pristine / "arctic"))
    for name in DAILY_DATASETS:
        lib = ac.get_library(name, create_if_missing=True)
        payloads = [WritePayload(t, frames[name][t]) for t in data.tickers]
        check_arctic(lib.write_batch(payloads), f"setup write_batch {name}")
        del lib
    del ac, frames
    release_arctic()
    log(f"batch setup: ArcticDB done in {time.perf_counter() - t0:.1f}s")
    write_ready(root, params)


def check_arctic(results: Sequence[Any], what: str) -> None:
    errors = [r for r in results if not hasattr(r, "version")]
    if errors:
        raise SystemExit(f"ArcticDB {what}: {len(errors)} errors, first: {errors[0]}")


def quiesce() -> None:
    """Flush dirty pages left by the untimed steps (copies, deletes) before a timed step.

    Both systems sync to disk while timed (marketlake's ``syncfs``/``fsync``, LMDB's
    ``fdatasync``); without this they would also pay for writing out the benchmark's own copies.
    """
    os.sync()


@dataclass
class BatchRepeat:
    seconds: float
    objects_written: int
    rerun_seconds: float
    rerun_objects_written: int
    rerun_bytes_changed: int
    rerun_files_changed: int
    rerun_files_rewritten: int
    arctic_seconds: float
    arctic_per_library: dict[str, float] = field(default_factory=dict)


def run_batch_repeat(
    root: Path, data: BatchData, args: argparse.Namespace, index: int
) -> BatchRepeat:
    import arcticdb
    from arcticdb.version_store.library import WritePayload

    work = root / "work"
    rmtree(work)
    restore_lake(root / "pristine" / "lake", work / "lake")
    day = data.new_day
    source = memory_source(data.tickers, data.new_tables, 1)

    def batch(lake: marketlake.Lake) -> tuple[Any, float]:
        quiesce()
        t0 = time.perf_counter()
        summary = run_batch(
            lake,
            source,
            data.tickers,
            DAILY_DATASETS,
            day,
            day,
            workers=args.workers,
            processes=args.processes,
        )
        seconds = time.perf_counter() - t0
        if summary.items_failed:
            raise SystemExit(f"timed batch failed: {summary.failures[:3]}")
        return summary, seconds

    with marketlake.open(work / "lake", fsync=True) as lake:
        first, seconds = batch(lake)
    with marketlake.open(work / "lake", fsync=True) as lake:
        before = snapshot(work / "lake")
        again, rerun_seconds = batch(lake)
        after = snapshot(work / "lake")
        if index == 0:
            verify_same_rows(lake, data)
    changed_bytes, changed_files, rewritten = diff_snapshots(before, after)

    arctic_dir = work / f"arctic-{index}"
    shutil.copytree(root / "pristine" / "arctic", arctic_dir)
    ac = arcticdb.Arctic(arctic_uri(arctic_dir))
    libs = {name: ac.get_library(name) for name in DAILY_DATASETS}
    payloads = {
        name: [WritePayload(t, data.new_frames[name][t]) for t in data.tickers]
        for name in DAILY_DATASETS
    }
    per_lib: dict[str, float] = {}
    quiesce()
    for name in DAILY_DATASETS:
        t0 = time.perf_counter()
        results = libs[name].append_batch(payloads[name])
        per_lib[name] = time.perf_counter() - t0
        check_arctic(results, f"append_batch {name}")
    rows = len(libs["prices"].read(data.tickers[-1]).data)
    if rows != SETUP_SESSIONS + 1:
        raise SystemExit(f"ArcticDB append check: {rows} rows, expected {SETUP_SESSIONS + 1}")
    del ac, libs
    release_arctic()
    rmtree(work)
    return BatchRepeat(
        seconds=seconds,
        objects_written=first.objects_written,
        rerun_seconds=rerun_seconds,
        rerun_objects_written=again.objects_written,
        rerun_bytes_changed=changed_bytes,
        rerun_files_changed=changed_files,
        rerun_files_rewritten=rewritten,
        arctic_seconds=sum(per_lib.values()),
        arctic_per_library=per_lib,
    )


def verify_same_rows(lake: marketlake.Lake, data: BatchData) -> None:
    """Untimed sanity check: the lake holds exactly the generated setup + new rows."""
    step = max(1, len(data.tickers) // 5)
    lo, hi = data.setup_days[0].item(), data.new_day
    for i in range(0, len(data.tickers), step)[:5]:
        t = data.tickers[i]
        for name in DAILY_DATASETS:
            got = lake.read(t, name, lo, hi, output="arrow")
            want = pa.concat_tables(
                [
                    data.setup_tables[name].slice(i * SETUP_SESSIONS, SETUP_SESSIONS),
                    data.new_tables[name].slice(i, 1),
                ]
            )
            if not got.equals(want):
                raise SystemExit(f"lake rows differ from the generated rows for {t} {name}")


def batch_mode(args: argparse.Namespace, n_items: int, lake_dir: Path) -> str:
    """How run_batch will execute here (worker processes or threads), for the report."""
    from marketlake.ingest import batch as batch_module

    try:  # private helper: describe the mode without opening (and touching) the lake
        lake = SimpleNamespace(writer=SimpleNamespace(store=SimpleNamespace(url=str(lake_dir))))
        source = memory_source([], {}, 1)
        nproc = int(batch_module._choose_processes(lake, source, n_items, args.processes))
    except Exception:
        return f"workers={args.workers}, processes={args.processes or 'auto'}"
    threads = batch_module._threads_per_process(True, source, args.workers, nproc)
    if nproc > 1:
        return f"{nproc} worker processes x {threads} threads"
    return f"1 process x {threads} threads"


def bench_batch(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    root = data_dir / f"batch-n{args.tickers}"
    t0 = time.perf_counter()
    data = batch_data(args.tickers)
    log(f"batch: generated rows for {args.tickers} tickers in {time.perf_counter() - t0:.1f}s")
    build_batch_setup(root, data, args)
    mode = batch_mode(args, args.tickers * len(DAILY_DATASETS), root / "pristine" / "lake")
    log(f"batch: run_batch mode: {mode}")
    repeats: list[BatchRepeat] = []
    for i in range(args.repeat):
        r = run_batch_repeat(root, data, args, i)
        log(
            f"batch repeat {i + 1}/{args.repeat}: marketlake {r.seconds:.2f}s "
            f"({r.objects_written} objects), re-run {r.rerun_seconds:.2f}s "
            f"({r.rerun_objects_written} objects, {r.rerun_bytes_changed} bytes changed), "
            f"ArcticDB append_batch {r.arctic_seconds:.2f}s"
        )
        repeats.append(r)
    return {
        "tickers": args.tickers,
        "mode": mode,
        "new_session": data.new_day.isoformat(),
        "setup_sessions": [d.item().isoformat() for d in data.setup_days],
        "repeats": [r.__dict__ for r in repeats],
    }


# --- part 2: reads ----------------------------------------------------------------------------


def build_read_setup(root: Path, n: int, workers: int) -> list[str]:
    import arcticdb
    from arcticdb.version_store.library import WritePayload

    tickers = demo_universe(n)
    params = cache_params("reads", n)
    if read_ready(root) == params:
        log(f"read setup: reusing {root}")
        return tickers
    rmtree(root)
    days = session_days(READ_START, READ_END)
    t0 = time.perf_counter()
    cols = {"prices": generate(n, days.size, SEED + 1)["prices"]}
    tables = dataset_tables(n, days, cols)["prices"]
    log(f"read setup: {n} tickers x {days.size} sessions of prices into a lake (fsync=False)")
    with (
        marketlake.open(root / "lake", fsync=False) as lake,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        d = days.size
        list(pool.map(lambda i: lake.write(tickers[i], "prices", tables.slice(i * d, d)), range(n)))
    log(f"read setup: lake done in {time.perf_counter() - t0:.1f}s; ArcticDB library prices5y")
    t0 = time.perf_counter()
    frames = split_frames(tickers, days, cols)["prices"]
    ac = arcticdb.Arctic(arctic_uri(root / "arctic"))
    lib = ac.get_library("prices5y", create_if_missing=True)
    check_arctic(lib.write_batch([WritePayload(t, frames[t]) for t in tickers]), "write_batch")
    del ac, lib, frames
    release_arctic()
    log(f"read setup: ArcticDB done in {time.perf_counter() - t0:.1f}s")
    write_ready(root, params)
    return tickers


def _median_time(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_reads(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import arcticdb
    from arcticdb.version_store.library import ReadRequest

    root = data_dir / f"reads-n{args.read_tickers}"
    tickers = build_read_setup(root, args.read_tickers, args.workers)
    sample = tickers[: min(SINGLE_READ_SAMPLE, len(tickers))]
    batch = tickers[: min(BATCH_READ_TICKERS, len(tickers))]
    s5, e5 = READ_START.isoformat(), READ_END.isoformat()
    m_lo, m_hi = ONE_MONTH
    y_lo, y_hi = ONE_YEAR
    m_range = (pd.Timestamp(m_lo), pd.Timestamp(m_hi))
    y_range = (pd.Timestamp(y_lo), pd.Timestamp(y_hi))

    lake = marketlake.open(root / "lake")
    ac = arcticdb.Arctic(arctic_uri(root / "arctic"))
    lib = ac.get_library("prices5y")

    def ml_5y(t: str) -> Any:
        return lake.read(t, "prices", s5, e5, output="pandas")

    def ac_5y(t: str) -> Any:
        return lib.read(t).data

    def ml_1m(t: str) -> Any:
        return lake.read(t, "prices", m_lo, m_hi, output="pandas")

    def ac_1m(t: str) -> Any:
        return lib.read(t, date_range=m_range).data

    def ml_batch(_: int) -> Any:
        res = lake.read_batch(batch, "prices", y_lo, y_hi, output="pandas")
        if res.errors or res.missing:
            raise SystemExit(f"read_batch: errors {res.errors} missing {res.missing}")
        return res.data

    def ac_batch(_: int) -> Any:
        items = lib.read_batch([ReadRequest(t, date_range=y_range) for t in batch])
        check_arctic(items, "read_batch")
        return [item.data for item in items]

    # Same rows on both sides (untimed).
    a, b = ml_5y(sample[0]).set_index("date"), ac_5y(sample[0])
    pd.testing.assert_frame_equal(a, b, check_names=False, check_freq=False)
    if len(ml_1m(sample[0])) != len(ac_1m(sample[0])):
        raise SystemExit("one-month reads differ between marketlake and ArcticDB")

    ops = {
        "read_5y": (ml_5y, ac_5y, sample),
        "read_1m": (ml_1m, ac_1m, sample),
        "read_batch": (ml_batch, ac_batch, list(range(BATCH_READ_LOOPS))),
    }
    out: dict[str, Any] = {
        "tickers": args.read_tickers,
        "single_sample": len(sample),
        "batch_tickers": len(batch),
    }
    for name, (ml_fn, ac_fn, items) in ops.items():
        ml_fn(items[0])  # warm-up: thread pools, imports, page cache
        ac_fn(items[0])
        ml_runs, ac_runs = [], []
        for _ in range(args.repeat):
            ml_runs.append(_median_time(ml_fn, items))
            ac_runs.append(_median_time(ac_fn, items))
        out[name] = {"marketlake": ml_runs, "arcticdb": ac_runs}
        log(
            f"{name}: marketlake {statistics.median(ml_runs) * 1e3:.2f} ms, "
            f"ArcticDB {statistics.median(ac_runs) * 1e3:.2f} ms"
        )
    lake.close()
    return out


# --- report -----------------------------------------------------------------------------------


def machine_info(data_dir: Path) -> dict[str, Any]:
    import arcticdb

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fs = "?"
    try:
        target = str(data_dir.resolve())
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and target.startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], parts[2]
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "marketlake": marketlake.__version__,
        "pyarrow": pa.__version__,
        "arcticdb": arcticdb.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "filesystem": fs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_rows(batch: dict[str, Any] | None, reads: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if batch is not None:
        reps = batch["repeats"]
        n = batch["tickers"]
        ml = statistics.median(r["seconds"] for r in reps)
        ac = statistics.median(r["arctic_seconds"] for r in reps)
        ratio = _ratio(ml, ac)
        objects = sorted({r["objects_written"] for r in reps})
        rows.append(
            {
                "figure": f"daily batch: {n:,} tickers x 3 datasets, +1 session",
                "unit": "s",
                "marketlake": ml,
                "arcticdb": ac,
                "ratio": ratio,
                "target": f"<= {BATCH_TARGET_RATIO}x and <= {BATCH_TARGET_SECONDS:.0f} s",
                "met": ratio is not None
                and ratio <= BATCH_TARGET_RATIO
                and ml <= BATCH_TARGET_SECONDS,
                "note": f"objects_written={'/'.join(map(str, objects))} "
                f"(expected {n * 3 * 2}: partition + _meta per item)",
            }
        )
        rerun = statistics.median(r["rerun_seconds"] for r in reps)
        changed = max(r["rerun_bytes_changed"] for r in reps)
        written = max(r["rerun_objects_written"] for r in reps)
        rewritten = max(r["rerun_files_rewritten"] for r in reps)
        rows.append(
            {
                "figure": "re-run of the same batch (idempotent)",
                "unit": "s",
                "marketlake": rerun,
                "arcticdb": None,
                "ratio": None,
                "target": f"<= {RERUN_TARGET_SECONDS:.0f} s, 0 bytes changed",
                "met": rerun <= RERUN_TARGET_SECONDS and changed == 0 and written == 0,
                "note": f"bytes changed={changed}, objects_written={written}, "
                f"files rewritten with same bytes={rewritten}",
            }
        )
    if reads is not None:
        labels = {
            "read_5y": "read 1 ticker x 5 years (pandas)",
            "read_1m": "read 1 ticker x 1 month (pandas)",
            "read_batch": f"read {reads['batch_tickers']} tickers x 1 year (pandas)",
        }
        for key, label in labels.items():
            ml = statistics.median(reads[key]["marketlake"])
            ac = statistics.median(reads[key]["arcticdb"])
            ratio = _ratio(ml, ac)
            rows.append(
                {
                    "figure": label,
                    "unit": "ms",
                    "marketlake": ml,
                    "arcticdb": ac,
                    "ratio": ratio,
                    "target": f"<= {READ_TARGET_RATIO:.0f}x",
                    "met": ratio is not None and ratio <= READ_TARGET_RATIO,
                    "note": "",
                }
            )
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1e3:.2f} ms" if unit == "ms" else f"{value:.2f} s"


def print_report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    header = ["figure", "marketlake", "ArcticDB", "ratio", "target", "met?"]
    body = [
        [
            r["figure"],
            _fmt(r["marketlake"], r["unit"]),
            _fmt(r["arcticdb"], r["unit"]),
            "—" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            r["target"],
            "yes" if r["met"] else "NO",
        ]
        for r in rows
    ]
    m = result["machine"]
    info = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['platform']}, fs {m['filesystem']}",
        f"versions: python {m['python']}, marketlake {m['marketlake']}, pyarrow {m['pyarrow']}, "
        f"arcticdb {m['arcticdb']}, pandas {m['pandas']}, numpy {m['numpy']}",
        f"durability: {result['durability']['marketlake']}; {result['durability']['arcticdb']}",
        f"medians over {result['params']['repeat']} repeats; run_batch: "
        f"{(result.get('batch') or {}).get('mode', 'not run')}",
    ]
    info += [f"note: {r['figure']}: {r['note']}" for r in rows if r["note"]]
    if result.get("reads"):
        info.append(
            "note: read cost does not depend on the universe size: object keys are computed from "
            f"ticker and dates, never listed, so {result['reads']['tickers']} tickers stand in "
            "for any universe"
        )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        for line in [header, *body]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
        print("\n".join(info))
        return
    table = Table(title="marketlake vs ArcticDB (LMDB): daily batch and reads")
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if 0 < i < 4 else "left")
    for line, r in zip(body, rows, strict=True):
        style = None if r["met"] else "red"
        table.add_row(*line, style=style)
    console = Console(width=max(140, Console().width))
    console.print(table)
    for line in info:
        console.print(line, highlight=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark marketlake's daily batch (N tickers x prices, signals_valuation, "
            "signals_technical) and reads against ArcticDB (LMDB) on the same rows, in the same "
            "run. Setups are cached under --data-dir."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tickers", type=int, default=6000, help="tickers in the daily batch")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (medians reported)")
    parser.add_argument(
        "--read-tickers", type=int, default=200, help="tickers in the 5-year read lake"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).resolve().parent / ".data",
        help="where setups, working copies and results-daily_batch.json live",
    )
    parser.add_argument(
        "--workers", type=int, default=16, help="run_batch worker threads (split across processes)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="run_batch worker processes (default: marketlake's own choice, as users get it)",
    )
    parser.add_argument("--skip-batch", action="store_true", help="only run the read benchmark")
    parser.add_argument("--skip-reads", action="store_true", help="only run the batch benchmark")
    parser.add_argument(
        "--rebuild", action="store_true", help="discard the cached setups and build them again"
    )
    args = parser.parse_args(argv)
    if min(args.tickers, args.read_tickers, args.repeat, args.workers, args.processes or 1) < 1:
        parser.error("--tickers, --read-tickers, --repeat, --workers and --processes must be >= 1")
    return args


def durability() -> dict[str, str]:
    from marketlake.storage.store import ObjectStore

    if hasattr(ObjectStore, "sync"):
        ml = (
            "marketlake.open(fsync=True); run_batch group commit: objects written without "
            "per-object fsync, syncfs of the filesystem before each catalog flush"
        )
    else:
        ml = "marketlake.open(fsync=True): each object fsynced before its rename"
    return {
        "marketlake": ml,
        "arcticdb": "ArcticDB LMDB defaults: fdatasync at every LMDB transaction commit",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.enable()
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` dumps every thread's stack
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        rmtree(data_dir / f"batch-n{args.tickers}")
        rmtree(data_dir / f"reads-n{args.read_tickers}")
    started = time.perf_counter()
    batch = None if args.skip_batch else bench_batch(args, data_dir)
    reads = None if args.skip_reads else bench_reads(args, data_dir)
    result = {
        "benchmark": "daily_batch",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": {
            "tickers": args.tickers,
            "repeat": args.repeat,
            "read_tickers": args.read_tickers,
            "workers": args.workers,
            "processes": args.processes,
            "seed": SEED,
        },
        "machine": machine_info(data_dir),
        "durability": durability(),
        "rows": build_rows(batch, reads),
        "batch": batch,
        "reads": reads,
        "total_seconds": time.perf_counter() - started,
    }
    out = data_dir / "results-daily_batch.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print_report(result)
    print(f"results written to {out} (total {result['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
