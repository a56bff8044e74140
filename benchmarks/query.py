"""Query benchmark: marketlake reads against ArcticDB, locally (LMDB) and on S3 (SeaweedFS).

Run ``python benchmarks/query.py --help`` for the options and see ``benchmarks/README.md`` for
what each figure means. In short, on ``--tickers`` tickers x five years of daily prices (NYSE
sessions up to the current month of the data, 1,258 per ticker), the same rows in a marketlake
lake and in an ArcticDB library, both returning pandas:

a) one ticker x 5 years; b) one ticker x 1 (closed) month; c) 100 tickers x 1 year
(``read_batch``); d) a cross-section of every ticker on one date; e) a DuckDB aggregate over 500
tickers x 1 year (``run_sql`` against ArcticDB ``read_batch`` + a pandas groupby).

marketlake is read from the *compacted* lake (``Lake.compact`` once after building, the last
month of the data left monthly, as in production); the uncompacted (monthly) lake gives extra
rows for a-c. Then the same suite on S3: SeaweedFS behind a TCP proxy that adds ``--latency-ms``
of round trip, marketlake cold (``cache=False``) and warm (read-through cache, second pass)
against ArcticDB's S3 backend (``VersionStore.NumIOThreads`` = 16) through the same proxy.

Rows are generated with NumPy (``daily_batch.generate``, fixed seeds per chunk of tickers) and
written through ``run_batch`` (the real write path). Setups are cached under ``--data-dir``.
Results are printed as tables and written to ``<data-dir>/results-query.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import faulthandler
import gc
import importlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import marketlake  # noqa: E402
from marketlake.ingest.batch import run_batch  # noqa: E402
from marketlake.query.sql import run_sql  # noqa: E402
from marketlake.sources.synthetic import demo_universe  # noqa: E402

db = importlib.import_module("daily_batch")  # row generator, memory source, report helpers
s3b = importlib.import_module("s3_batch")  # the latency proxy in its own process

SETUP_VERSION = 2  # bump when the setup changes (invalidates the cached lakes)
SEED = 20261120
END = dt.date(2026, 11, 20)  # last session of the data
START = dt.date(END.year - 5, END.month, END.day) + dt.timedelta(days=1)
CURRENT_MONTH = f"{END:%Y-%m}"  # compaction folds the months before it (it stays monthly)
FIVE_YEARS = (START, END)
ONE_MONTH = (dt.date(2026, 6, 1), dt.date(2026, 6, 30))  # closed: in the compacted history
ONE_YEAR = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
CROSS_SECTION_DATE = dt.date(2026, 6, 15)
GEN_CHUNK = 500  # tickers per generator call (seed SEED + chunk index)
BUILD_CHUNK = 1000  # tickers per run_batch call during the setup
SINGLE_SAMPLE = 25  # tickers looped per repeat for the single-ticker reads (per-op median)
BATCH_TICKERS = 100
AGG_TICKERS = 500

TARGETS = {"read_5y": 1.0, "read_1m": 1.0, "batch_1y": 1.0, "cross_section": 0.1}
S3_TARGET = 1.0  # marketlake must beat ArcticDB on S3 on every read


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def spread(tickers: Sequence[str], n: int) -> list[str]:
    """``n`` tickers spread evenly over the universe (so they come from every chunk)."""
    if n >= len(tickers):
        return list(tickers)
    step = len(tickers) / n
    return [tickers[int(i * step)] for i in range(n)]


def agg_query(tickers: Sequence[str], lo: dt.date, hi: dt.date) -> str:
    names = ", ".join(f"'{t}'" for t in tickers)
    return (
        "SELECT ticker, avg(close) AS avg_close, max(high) AS max_high FROM prices "
        f"WHERE ticker IN ({names}) AND date BETWEEN '{lo}' AND '{hi}' "
        "GROUP BY ticker ORDER BY ticker"
    )


# --- setup -------------------------------------------------------------------------------------


def chunk_rows(tickers: Sequence[str], chunk: int, days: np.ndarray) -> dict[str, np.ndarray]:
    """Price columns ``(tickers in chunk, sessions)`` of generator chunk ``chunk``."""
    lo = chunk * GEN_CHUNK
    n = min(GEN_CHUNK, len(tickers) - lo)
    cols: dict[str, np.ndarray] = db.generate(n, days.size, SEED + chunk)["prices"]
    return cols


@dataclass
class Setup:
    root: Path
    tickers: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def monthly(self) -> Path:
        return self.root / "monthly" / "lake"

    @property
    def compacted(self) -> Path:
        return self.root / "compacted" / "lake"

    @property
    def arctic(self) -> Path:
        return self.root / "arctic"


def build_setup(root: Path, n: int, args: argparse.Namespace) -> Setup:
    """The monthly lake (run_batch), its compacted copy and the ArcticDB library, cached."""
    import arcticdb
    from arcticdb.version_store.library import WritePayload

    tickers = demo_universe(n)
    setup = Setup(root, tickers)
    params = {
        **db.cache_params("query", n),
        "setup": SETUP_VERSION,
        "query_seed": SEED,
        "end": END.isoformat(),
    }
    if db.read_ready(root) == params:
        log(f"setup: reusing {root}")
        with contextlib.suppress(OSError, ValueError):
            setup.info = json.loads((root / "setup.json").read_text())
        return setup
    db.rmtree(root)
    root.mkdir(parents=True)
    days = db.session_days(START, END)
    log(
        f"setup: {n} tickers x {days.size} sessions ({days[0]}..{days[-1]}) of prices: "
        "monthly lake via run_batch (fsync=False) and ArcticDB LMDB library 'prices'"
    )
    ac = arcticdb.Arctic(db.arctic_uri(setup.arctic))
    lib = ac.get_library("prices", create_if_missing=True)
    t_lake = t_arctic = 0.0
    with marketlake.open(setup.monthly, fsync=False) as lake:
        for lo in range(0, n, BUILD_CHUNK):
            names = tickers[lo : lo + BUILD_CHUNK]
            parts = [
                chunk_rows(tickers, c, days)
                for c in range(lo // GEN_CHUNK, (lo + len(names) - 1) // GEN_CHUNK + 1)
            ]
            cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            table = db.dataset_tables(len(names), days, {"prices": cols})["prices"]
            source = db.memory_source(names, {"prices": table}, days.size)
            t0 = time.perf_counter()
            summary = run_batch(
                lake,
                source,
                names,
                ["prices"],
                days[0].item(),
                days[-1].item(),
                kind="backfill",
                workers=args.workers,
                processes=args.processes,
            )
            t_lake += time.perf_counter() - t0
            if summary.items_failed:
                raise SystemExit(f"setup run_batch failed: {summary.failures[:3]}")
            t0 = time.perf_counter()
            frames = db.split_frames(names, days, {"prices": cols})["prices"]
            db.check_arctic(
                lib.write_batch([WritePayload(t, frames[t]) for t in names]), "write_batch"
            )
            t_arctic += time.perf_counter() - t0
            log(
                f"setup: {lo + len(names)}/{n} tickers (lake {t_lake:.0f}s, ArcticDB "
                f"{t_arctic:.0f}s)"
            )
    del ac, lib
    db.release_arctic()
    log(f"setup: compacted copy (hard links) and Lake.compact(before={CURRENT_MONTH})")
    db.restore_lake(setup.monthly, setup.compacted)
    with marketlake.open(setup.compacted, fsync=False) as lake:
        t0 = time.perf_counter()
        compacted = lake.compact(datasets=["prices"], before=CURRENT_MONTH)
        t_compact = time.perf_counter() - t0
        # the daily batch writes the cross-section companion of each session it changes; a
        # backfill leaves it to the first read, which builds and stores it (timed here, once)
        t0 = time.perf_counter()
        xs_rows = len(lake.cross_section("prices", CROSS_SECTION_DATE, output="arrow"))
        t_xs = time.perf_counter() - t0
    if compacted.errors:
        raise SystemExit(f"compaction failed: {list(compacted.errors.items())[:3]}")
    if xs_rows != n:
        raise SystemExit(f"cross-section of {CROSS_SECTION_DATE}: {xs_rows} rows, expected {n}")
    setup.info = {
        "sessions": int(days.size),
        "first": str(days[0]),
        "last": str(days[-1]),
        "build_lake_seconds": t_lake,
        "build_arctic_seconds": t_arctic,
        "compact_seconds": t_compact,
        "partitions_folded": compacted.partitions_folded,
        "compact_objects_written": compacted.objects_written,
        "compact_objects_deleted": compacted.objects_deleted,
        "cross_section_first_build_seconds": t_xs,
    }
    log(
        f"setup: compacted {compacted.tickers} tickers, {compacted.partitions_folded} partitions "
        f"folded in {t_compact:.0f}s"
    )
    (root / "setup.json").write_text(json.dumps(setup.info, indent=2))
    db.write_ready(root, params)
    return setup


def verify(setup: Setup, lakes: dict[str, Any], lib: Any) -> None:
    """Untimed: generated rows == monthly lake == compacted lake == ArcticDB for a sample."""
    days = db.session_days(START, END)
    gen = chunk_rows(setup.tickers, 0, days)
    for i in sorted({0, min(7, len(setup.tickers) - 1)}):
        t = setup.tickers[i]
        want = pd.DataFrame({c: gen[c][i] for c in gen}, index=pd.DatetimeIndex(days, name="date"))
        want.index = want.index.astype("datetime64[ns]")
        for name, lake in lakes.items():
            got = lake.read(t, "prices", *FIVE_YEARS).set_index("date")
            pd.testing.assert_frame_equal(
                got, want, check_dtype=False, check_freq=False, obj=f"{name} {t}"
            )
        pd.testing.assert_frame_equal(
            lib.read(t).data, want, check_dtype=False, check_freq=False, obj=f"ArcticDB {t}"
        )


# --- the queries -------------------------------------------------------------------------------


@dataclass
class Op:
    key: str
    label: str
    ml: Callable[[Any], Any]
    ac: Callable[[Any], Any]
    items: list[Any]
    target: float | None
    note: str = ""


def ml_cross_section(lake: Any, tickers: Sequence[str], day: dt.date) -> tuple[Any, str]:
    """marketlake's cross-section: ``Lake.cross_section`` when this marketlake has it, else
    ``read_batch`` over every ticker for that date (and a note saying so)."""
    xs = getattr(lake, "cross_section", None)
    if xs is not None:
        return (lambda _: xs("prices", day)), "Lake.cross_section('prices', date)"

    def batch(_: Any) -> Any:
        return lake.read_batch(tickers, "prices", day, day).data

    return batch, "Lake.cross_section not available: read_batch over every ticker for the date"


def build_ops(
    lake: Any, lib: Any, tickers: Sequence[str], *, s3: bool, loops: int, suffix: str = ""
) -> list[Op]:
    """The five queries on one marketlake lake and one ArcticDB library (same rows)."""
    from arcticdb.version_store.library import ReadRequest

    sample = spread(tickers, SINGLE_SAMPLE)
    batch = spread(tickers, BATCH_TICKERS)
    agg = spread(tickers, AGG_TICKERS)
    m_range = tuple(pd.Timestamp(d) for d in ONE_MONTH)
    y_range = tuple(pd.Timestamp(d) for d in ONE_YEAR)
    x_range = (pd.Timestamp(CROSS_SECTION_DATE),) * 2
    query = agg_query(agg, *ONE_YEAR)
    loop_items = list(range(loops))

    def ml_batch(_: Any) -> Any:
        res = lake.read_batch(batch, "prices", *ONE_YEAR)
        if res.errors or res.missing:
            raise SystemExit(f"read_batch: errors {res.errors} missing {res.missing}")
        return res.data

    def ac_batch(_: Any) -> Any:
        items = lib.read_batch([ReadRequest(t, date_range=y_range) for t in batch])
        db.check_arctic(items, "read_batch")
        return [i.data for i in items]

    def ac_xs(_: Any) -> Any:
        items = lib.read_batch([ReadRequest(t, date_range=x_range) for t in tickers])
        db.check_arctic(items, "read_batch (cross-section)")
        return [i.data for i in items]

    def ml_agg(_: Any) -> Any:
        return run_sql(lake, query).data

    def ac_agg(_: Any) -> Any:
        reqs = [ReadRequest(t, date_range=y_range, columns=["close", "high"]) for t in agg]
        items = lib.read_batch(reqs)
        db.check_arctic(items, "read_batch (aggregate)")
        frame = pd.concat([i.data for i in items], keys=agg, names=["ticker", "date"])
        return (
            frame.groupby(level="ticker", sort=True)
            .agg(avg_close=("close", "mean"), max_high=("high", "max"))
            .reset_index()
        )

    ml_xs, xs_note = ml_cross_section(lake, tickers, CROSS_SECTION_DATE)
    n = len(tickers)
    return [
        Op(
            "read_5y",
            f"a) 1 ticker x 5 years{suffix}",
            lambda t: lake.read(t, "prices", *FIVE_YEARS),
            lambda t: lib.read(t).data,
            sample,
            TARGETS["read_5y"],
        ),
        Op(
            "read_1m",
            f"b) 1 ticker x 1 month{suffix}",
            lambda t: lake.read(t, "prices", *ONE_MONTH),
            lambda t: lib.read(t, date_range=m_range).data,
            sample,
            TARGETS["read_1m"],
        ),
        Op(
            "batch_1y",
            f"c) {len(batch)} tickers x 1 year{suffix}",
            ml_batch,
            ac_batch,
            loop_items,
            TARGETS["batch_1y"],
            "marketlake: one long frame with a ticker column; ArcticDB: one frame per symbol "
            "(not concatenated)",
        ),
        Op(
            "cross_section",
            f"d) cross-section, {n:,} tickers x 1 date{suffix}",
            ml_xs,
            ac_xs,
            [0] if s3 else loop_items,
            TARGETS["cross_section"],
            f"marketlake: {xs_note}; ArcticDB: read_batch with date_range, one frame per "
            "symbol (not concatenated)",
        ),
        Op(
            "aggregate",
            f"e) SQL aggregate, {len(agg)} tickers x 1 year{suffix}",
            ml_agg,
            ac_agg,
            [0] if s3 else loop_items,
            None,
            "marketlake: run_sql (DuckDB, ticker/date push-down, only close+high decoded); "
            "ArcticDB: read_batch of close+high, pd.concat, groupby",
        ),
    ]


def check_same(ops: list[Op]) -> None:
    """Untimed: both sides return the same rows for each query."""
    for op in ops:
        item = op.items[0]
        a, b = op.ml(item), op.ac(item)
        if op.key in ("read_5y", "read_1m"):
            pd.testing.assert_frame_equal(
                a.set_index("date"), b, check_names=False, check_freq=False
            )
        elif op.key in ("batch_1y", "cross_section"):
            rows = sum(len(f) for f in b)
            if len(a) != rows:
                raise SystemExit(f"{op.label}: marketlake {len(a)} rows, ArcticDB {rows}")
        elif op.key == "aggregate":
            np.testing.assert_array_equal(a["ticker"].to_numpy(), b["ticker"].to_numpy())
            for col in ("avg_close", "max_high"):
                np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-12)


def _median_time(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """Median seconds per call over ``items``. The garbage collector runs (untimed) before each
    multi-ticker call and before each pass of single-ticker calls, so neither side pays for
    collecting the other's garbage (thousands of frames after a batch read)."""
    times = []
    gc.collect()
    for item in items:
        if len(items) <= 3:
            gc.collect()
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(op: Op, repeat: int, *, run_ac: bool = True) -> dict[str, list[float]]:
    """One untimed warm-up pass over every item, then ``repeat`` repeats (each the median per
    op over the items), marketlake and ArcticDB interleaved."""
    for item in op.items:
        op.ml(item)
        if run_ac:
            op.ac(item)
    ml_runs: list[float] = []
    ac_runs: list[float] = []
    for _ in range(repeat):
        ml_runs.append(_median_time(op.ml, op.items))
        if run_ac:
            ac_runs.append(_median_time(op.ac, op.items))
    return {"marketlake": ml_runs, "arcticdb": ac_runs}


def run_ops(
    ops: list[Op], repeat: int, *, tag: str, arctic_cache: dict[str, list[float]] | None = None
) -> list[dict[str, Any]]:
    """Time every op; with ``arctic_cache`` the ArcticDB timings of an op key already measured
    (same query, same library) are reused instead of measured again."""
    out = []
    for op in ops:
        reuse = arctic_cache is not None and op.key in arctic_cache
        runs = measure(op, repeat, run_ac=not reuse)
        if reuse:
            assert arctic_cache is not None
            runs["arcticdb"] = arctic_cache[op.key]
        elif arctic_cache is not None:
            arctic_cache[op.key] = runs["arcticdb"]
        ml, ac = statistics.median(runs["marketlake"]), statistics.median(runs["arcticdb"])
        log(f"{tag} {op.label}: marketlake {ml * 1e3:.2f} ms, ArcticDB {ac * 1e3:.2f} ms")
        out.append(
            {
                "key": op.key,
                "label": op.label,
                "target": op.target,
                "note": op.note,
                "arcticdb_reused": reuse,
                **runs,
            }
        )
    return out


# --- local -------------------------------------------------------------------------------------


def bench_local(args: argparse.Namespace, setup: Setup) -> list[dict[str, Any]]:
    import arcticdb

    ac = arcticdb.Arctic(db.arctic_uri(setup.arctic))
    lib = ac.get_library("prices")
    compacted = marketlake.open(setup.compacted)
    monthly = marketlake.open(setup.monthly)
    verify(setup, {"compacted": compacted, "monthly": monthly}, lib)
    ops = build_ops(compacted, lib, setup.tickers, s3=False, loops=args.loops)
    check_same(ops)
    cache: dict[str, list[float]] = {}
    rows = run_ops(ops, args.repeat, tag="local", arctic_cache=cache)
    extra = build_ops(
        monthly, lib, setup.tickers, s3=False, loops=args.loops, suffix=" (uncompacted)"
    )
    extra = [o for o in extra if o.key in ("read_5y", "read_1m", "batch_1y")]
    for o in extra:
        o.target = None
    rows += run_ops(extra, args.repeat, tag="local", arctic_cache=cache)
    compacted.close()
    monthly.close()
    del ac, lib
    db.release_arctic()
    return rows


# --- S3 ----------------------------------------------------------------------------------------


def copy_objects(src: Any, dst: Any, keys: Sequence[str], threads: int) -> int:
    """GET each key from ``src`` and PUT it to ``dst`` with many threads; returns bytes."""

    def one(key: str) -> int:
        data = src.get(key).data
        dst.put(key, data)
        return len(data)

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, keys))


def lake_keys(lake: Any, tickers: Sequence[str] | None) -> list[str]:
    """Every object of a local lake (catalog excluded) or, for ``tickers``, their prices
    objects, their ``_meta`` and the marker."""
    from marketlake.storage.format import MARKER_KEY
    from marketlake.storage.meta import meta_key

    if tickers is None:
        return [
            info.key
            for info in lake.store.list("")
            if not info.key.startswith(db.EXCLUDED_FROM_HASH)
        ]
    keys = [MARKER_KEY]
    for t in tickers:
        meta = lake.meta(t, "prices")
        keys += [p.key for p in meta.partitions.values()] + [meta_key("prices", t)]
    return keys


def bench_s3(args: argparse.Namespace, setup: Setup, data_dir: Path) -> dict[str, Any]:
    import arcticdb
    import arcticdb_ext.cpp_async as ac_async
    from arcticdb.config import set_config_int
    from arcticdb.version_store.library import WritePayload

    from marketlake.storage.store import open_store
    from marketlake.testing.seaweedfs import SeaweedFS

    server_dir = data_dir / f"s3-server-query-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="query-s3-", dir=data_dir))
    server = SeaweedFS("query", data_dir=server_dir)
    info: dict[str, Any] = {"latency_ms": args.latency_ms, "io_threads": args.arctic_io_threads}
    try:
        with server:
            os.environ.update(server.env())
            # -- populate, directly (no proxy), many threads: untimed --
            t0 = time.perf_counter()
            subset = spread(setup.tickers, SINGLE_SAMPLE) + spread(setup.tickers, BATCH_TICKERS)
            copies = [
                ("ml", setup.compacted, None),
                ("ml-monthly", setup.monthly, sorted(set(subset))),
            ]
            for prefix, path, tickers in copies:
                with marketlake.open(path) as local:
                    keys = lake_keys(local, tickers)
                    dst = open_store(server.lake_url(prefix))
                    moved = copy_objects(local.store, dst, keys, args.copy_threads)
                    dst.close()
                shutil.copy2(path / "_catalog.sqlite", work / f"{prefix}.sqlite")
                info[f"objects_{prefix}"] = len(keys)
                info[f"bytes_{prefix}"] = moved
                log(f"s3: copied {len(keys):,} objects ({moved / 1e6:.0f} MB) to {prefix}/")
            info["populate_lake_seconds"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            set_config_int("VersionStore.NumIOThreads", args.arctic_io_threads)
            ac_async.reinit_task_scheduler()
            base = (
                f"s3://127.0.0.1:{server.bucket}?access={server.access_key_id}"
                f"&secret={server.secret_access_key}&path_prefix=ac"
            )
            local_ac = arcticdb.Arctic(db.arctic_uri(setup.arctic))
            local_lib = local_ac.get_library("prices")
            direct = arcticdb.Arctic(f"{base}&port={server.port}")
            dlib = direct.get_library("prices", create_if_missing=True)
            for lo in range(0, len(setup.tickers), GEN_CHUNK):
                names = setup.tickers[lo : lo + GEN_CHUNK]
                frames = local_lib.read_batch(names)
                db.check_arctic(frames, "read_batch (copy)")
                payloads = [WritePayload(t, f.data) for t, f in zip(names, frames, strict=True)]
                db.check_arctic(dlib.write_batch(payloads), "write_batch (S3)")
            del direct, dlib, local_ac, local_lib
            db.release_arctic()
            info["populate_arctic_seconds"] = time.perf_counter() - t0
            log(f"s3: ArcticDB library written in {info['populate_arctic_seconds']:.0f}s")

            with s3b.ProxyProcess("127.0.0.1", server.port, args.latency_ms / 1000.0) as proxy:
                url = f"s3://{server.bucket}/ml?endpoint=http://127.0.0.1:{proxy.port}"
                murl = f"s3://{server.bucket}/ml-monthly?endpoint=http://127.0.0.1:{proxy.port}"
                cold = marketlake.open(url, cache=False, catalog=work / "ml.sqlite")
                warm = marketlake.open(
                    url, cache=work / "cache", catalog=work / "ml.sqlite"
                )  # the default read-through cache, in a scratch directory
                mcold = marketlake.open(murl, cache=False, catalog=work / "ml-monthly.sqlite")
                mwarm = marketlake.open(
                    murl, cache=work / "cache-monthly", catalog=work / "ml-monthly.sqlite"
                )
                proxied = arcticdb.Arctic(f"{base}&port={proxy.port}")
                lib = proxied.get_library("prices")
                info["arctic_io_threads_in_effect"] = ac_async.io_thread_count()
                kw = {"s3": True, "loops": args.loops}
                ops_cold = build_ops(cold, lib, setup.tickers, suffix=" (cold)", **kw)
                check_same(ops_cold)
                cache: dict[str, list[float]] = {}
                rows = run_ops(ops_cold, args.repeat, tag="s3", arctic_cache=cache)
                ops_warm = build_ops(warm, lib, setup.tickers, suffix=" (warm cache)", **kw)
                rows += run_ops(ops_warm, args.repeat, tag="s3", arctic_cache=cache)
                for lake, tag in ((mcold, "cold"), (mwarm, "warm cache")):
                    # a) and c) read only the tickers in ``subset`` (the ones copied)
                    extra = build_ops(
                        lake, lib, setup.tickers, suffix=f" (uncompacted, {tag})", **kw
                    )
                    extra = [o for o in extra if o.key in ("read_5y", "batch_1y")]
                    for o in extra:
                        o.target = None
                    rows += run_ops(extra, args.repeat, tag="s3", arctic_cache=cache)
                info["cache_hits"] = warm.reader.cache.hits if warm.reader.cache else None
                for lake in (cold, warm, mcold, mwarm):
                    lake.close()
                del proxied, lib
                db.release_arctic()
    finally:
        shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return {"info": info, "rows": rows}


# --- report ------------------------------------------------------------------------------------


def table_rows(rows: list[dict[str, Any]], *, s3: bool) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        ml, ac = statistics.median(r["marketlake"]), statistics.median(r["arcticdb"])
        ratio = ml / ac if ac else None
        target = S3_TARGET if s3 and r["target"] is not None else r["target"]
        if s3 and r["key"] == "aggregate":
            target = S3_TARGET
        if target is None:
            tgt, met = "(info)", "—"
        elif s3:
            tgt, met = f"< {target:g}x", "yes" if ratio is not None and ratio < target else "NO"
        else:
            tgt, met = f"<= {target:g}x", "yes" if ratio is not None and ratio <= target else "NO"
        out.append({**r, "ml_median": ml, "ac_median": ac, "ratio": ratio, "tgt": tgt, "met": met})
    return out


def print_table(title: str, rows: list[dict[str, Any]], notes: list[str]) -> None:
    header = ["query", "marketlake", "ArcticDB", "ratio", "target", "met?"]
    body = [
        [
            r["label"],
            f"{r['ml_median'] * 1e3:.2f} ms",
            f"{r['ac_median'] * 1e3:.2f} ms",
            "—" if r["ratio"] is None else f"{r['ratio']:.3f}x",
            r["tgt"],
            r["met"],
        ]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        for line in [header, *body]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
        print("\n".join(notes))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if 0 < i < 4 else "left")
    for line, r in zip(body, rows, strict=True):
        table.add_row(*line, style="red" if r["met"] == "NO" else None)
    console = Console(width=max(150, Console().width))
    console.print(table)
    for text in notes:
        console.print(text, highlight=False)


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    p = result["params"]
    common = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['platform']}, fs {m['filesystem']}",
        f"versions: python {m['python']}, marketlake {m['marketlake']}, pyarrow {m['pyarrow']}, "
        f"arcticdb {m['arcticdb']}, pandas {m['pandas']}, numpy {m['numpy']}",
        f"data: {p['tickers']:,} tickers x {result['setup'].get('sessions', '?')} sessions "
        f"({result['setup'].get('first', START)}..{END}); compacted with "
        f"before={CURRENT_MONTH} (that month stays monthly); "
        f"medians over {p['repeat']} repeats after one warm-up pass; single-ticker figures are "
        f"the median over {SINGLE_SAMPLE} tickers per repeat; both sides return pandas",
        f"1-minute load average (other work on the machine skews both sides): "
        f"{result['load_average_1m']}",
    ]
    if result.get("local"):
        notes = [
            *common,
            "reads are warm page cache (the OS caches cannot be dropped here); ArcticDB LMDB "
            "with its default thread counts",
        ]
        notes += sorted({f"note: {r['key']}: {r['note']}" for r in result["local"] if r["note"]})
        print_table(
            "local: marketlake (compacted lake) vs ArcticDB (LMDB), medians",
            table_rows(result["local"], s3=False),
            notes,
        )
    if result.get("s3"):
        info = result["s3"]["info"]
        notes = [
            *common,
            f"S3: SeaweedFS on loopback behind a TCP proxy adding {info['latency_ms']:g} ms per "
            "round trip (its own process); marketlake cold = open(url, cache=False), warm = the "
            "read-through cache after the warm-up pass; ArcticDB S3 backend with "
            f"VersionStore.NumIOThreads={info.get('arctic_io_threads_in_effect')}; ArcticDB "
            "figures are measured once per query and shown on both the cold and warm rows",
            f"S3 objects: marketlake {info.get('objects_ml', 0):,} (compacted lake), "
            f"uncompacted rows use only the {info.get('objects_ml-monthly', 0):,} objects of the "
            "tickers they read",
        ]
        notes += sorted(
            {f"note: {r['key']}: {r['note']}" for r in result["s3"]["rows"] if r["note"]}
        )
        print_table(
            f"S3 (+{info['latency_ms']:g} ms RTT): marketlake vs ArcticDB S3 backend, medians",
            table_rows(result["s3"]["rows"], s3=True),
            notes,
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Benchmark marketlake's reads (single ticker, batch, cross-section, SQL aggregate) "
            "against ArcticDB on the same rows: locally (LMDB) and on S3 (SeaweedFS behind a "
            "latency proxy). Setups are cached under --data-dir."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--tickers", type=int, default=6000, help="tickers in the lake (5 years each)")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats (medians reported)")
    p.add_argument("--loops", type=int, default=3, help="calls per repeat for the multi-ticker ops")
    p.add_argument(
        "--data-dir", type=Path, default=HERE / ".data", help="cached setups and results JSON"
    )
    p.add_argument("--workers", type=int, default=16, help="run_batch workers for the setup")
    p.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="run_batch processes (setup)"
    )
    p.add_argument("--latency-ms", type=float, default=20.0, help="added round trip on S3")
    p.add_argument(
        "--arctic-io-threads", type=int, default=16, help="ArcticDB VersionStore.NumIOThreads (S3)"
    )
    p.add_argument("--copy-threads", type=int, default=64, help="threads populating the bucket")
    p.add_argument("--skip-local", action="store_true", help="only run the S3 suite")
    p.add_argument("--skip-s3", action="store_true", help="only run the local suite")
    p.add_argument("--rebuild", action="store_true", help="discard the cached setup")
    args = p.parse_args(argv)
    if min(args.tickers, args.repeat, args.loops, args.workers, args.processes) < 1:
        p.error("--tickers, --repeat, --loops, --workers and --processes must be >= 1")
    return args


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.enable()
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` dumps every thread's stack
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    data_dir: Path = args.data_dir.resolve()  # SeaweedFS needs absolute paths
    data_dir.mkdir(parents=True, exist_ok=True)
    root = data_dir / f"query-n{args.tickers}"
    if args.rebuild:
        db.rmtree(root)
    started = time.perf_counter()
    setup = build_setup(root, args.tickers, args)
    load = {"before": _loadavg()}
    local = s3 = None
    if not args.skip_local:
        local = bench_local(args, setup)
        load["after_local"] = _loadavg()
    if not args.skip_s3:
        s3 = bench_s3(args, setup, data_dir)
        load["after_s3"] = _loadavg()
    result = {
        "benchmark": "query",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": db.machine_info(data_dir),
        "setup": setup.info,
        "load_average_1m": load,
        "local": local,
        "s3": s3,
        "total_seconds": time.perf_counter() - started,
    }
    out = data_dir / "results-query.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    report(result)
    print(f"results written to {out} (total {result['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
