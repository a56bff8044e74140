"""SIGKILL the ingest process at random points (also during ``--resume``), rerun it to
completion, and the lake equals a clean run's lake byte for byte, with a consistent ``_meta``."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import marketlake
from marketlake.catalog import Catalog
from marketlake.ingest.batch import run_batch
from marketlake.sources.synthetic import SyntheticSource
from marketlake.storage.consistency import check_lake_consistency
from tests.test_crash import _same_but_meta_time, no_etag

TICKERS = [f"K{i:02d}" for i in range(8)]
DATASETS = ["prices", "signals_valuation", "signals_technical"]
START, END = dt.date(2024, 1, 2), dt.date(2024, 2, 28)
ITEMS = len(TICKERS) * len(DATASETS)
ITERATIONS = 18
SKIP_DIRS = (".marketlake-locks", ".marketlake-tmp")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every object file of a local lake (no catalog, lock files or staged temporaries)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not rel.parts[0].startswith(("_catalog", *SKIP_DIRS)):
            out[str(rel)] = p.read_bytes()
    return out


def ingest(lake: Path, log: Path, resume: str | None = None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "marketlake.cli.main", "ingest", "--lake", str(lake)]
    args += ["--workers", "4", "--log-file", str(log)]
    if resume:
        args += ["--resume", resume]
    else:
        args += ["--start", START.isoformat(), "--end", END.isoformat()]
        args += ["--tickers", ",".join(TICKERS), "--datasets", ",".join(DATASETS)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def lines(log: Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_at(proc: subprocess.Popen[bytes], log: Path, rng: random.Random) -> str:
    """SIGKILL ``proc`` at a seeded random point: after the k-th logged item (mid-batch, the
    other workers mid-write), or after a random delay (start-up, catalog, first writes)."""
    before = lines(log)
    if rng.random() < 0.25:
        time.sleep(rng.uniform(0.0, 1.2))
        point = "time"
    else:
        k = rng.randint(1, ITEMS - 1)
        while lines(log) - before < k and proc.poll() is None:
            time.sleep(0.002)
        point = f"item {k}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return point


def last_run(lake: Path) -> str | None:
    if not (lake / "_catalog.sqlite").exists():
        return None
    cat = Catalog.open(str(lake / "_catalog.sqlite"))
    try:
        runs = cat.list_runs(limit=1)
        return runs[0].run_id if runs else None
    finally:
        cat.close()


def finish(lake: Path, log: Path, run_id: str | None) -> None:
    proc = ingest(lake, log, resume=run_id)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output.decode()


def one_iteration(base: Path, i: int) -> list[str]:
    """Kill, maybe kill again during --resume, then run to completion. Returns what happened."""
    rng = random.Random(1000 + i)
    lake, log = base / f"lake{i}", base / f"log{i}.txt"
    story = [f"killed fresh run at {kill_at(ingest(lake, log), log, rng)}"]
    run_id = last_run(lake)
    if run_id is not None and rng.random() < 0.5:
        story.append(f"killed --resume at {kill_at(ingest(lake, log, run_id), log, rng)}")
    finish(lake, log, run_id)
    story.append("resumed" if run_id else "reran")
    return story


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[object]]:
    root = tmp_path_factory.mktemp("clean") / "lake"
    with marketlake.open(root, fsync=False) as lk:
        summary = run_batch(lk, SyntheticSource(), TICKERS, DATASETS, START, END, processes=1)
        assert summary.status == "completed"
        parts = no_etag(lk.catalog.snapshot(include_timestamps=False)["partitions"])
    return snapshot(root), parts


def test_sigkill_then_rerun_converges_byte_for_byte(
    tmp_path: Path, clean: tuple[dict[str, bytes], list[object]]
) -> None:
    ref, ref_parts = clean
    with ThreadPoolExecutor(2) as pool:  # two lanes: each iteration waits on its processes
        stories = list(pool.map(lambda i: one_iteration(tmp_path, i), range(ITERATIONS)))
    assert sum("item" in s[0] for s in stories) >= ITERATIONS // 2  # most kills hit mid-batch
    assert any(len(s) == 3 for s in stories)  # some kills hit a --resume
    for i, story in enumerate(stories):
        lake = tmp_path / f"lake{i}"
        got = snapshot(lake)
        data = sorted(k for k in ref if not k.startswith(("_meta/", "_marketlake")))
        assert [k for k in got if k in data] == data, story
        assert all(got[k] == ref[k] for k in data), story  # data objects: byte for byte
        assert _same_but_meta_time(got, ref), story  # _meta: same but for times and ETags
        with marketlake.open(lake, fsync=False) as lk:
            report = check_lake_consistency(lk)
            assert report.ok, f"{story}\n{report}"
            run = lk.catalog.list_runs(limit=1)[0]
            assert run.status == "completed", story
            parts = no_etag(lk.catalog.snapshot(include_timestamps=False)["partitions"])
            assert parts == ref_parts, story
            visible = {o.key for p in DATASETS for o in lk.store.list(p)}
            assert not [k for k in visible if ".marketlake-tmp" in k or "/.tmp-" in k]
