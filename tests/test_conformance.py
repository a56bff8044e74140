"""One storage conformance suite for every backend: memory, local disk and S3 (SeaweedFS).

The same assertions run against each store; the S3 run talks to a real server started by the
session (``s3_server`` in conftest), so error mapping, ETags and conditional writes are the
server's, not a mock's.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import marketlake
from marketlake.errors import (
    ConflictError,
    LayoutError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from marketlake.ingest.batch import run_batch
from marketlake.schemas.datasets import list_datasets
from marketlake.sources.synthetic import SyntheticSource
from marketlake.storage.format import MARKER_KEY
from marketlake.storage.meta import meta_key
from marketlake.storage.store import ObjectStore, S3Settings, open_store, s3_store
from marketlake.testing import SeaweedFS, free_ports
from tests.conftest import price_table, weekdays

BACKENDS = ["memory", "local", "s3"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "s3":
        st = open_store(request.getfixturevalue("s3_lake_url"))
    else:
        st = open_store("memory://" if request.param == "memory" else str(tmp_path / "s"))
    yield st
    st.close()


def _all_keys(store: ObjectStore) -> list[str]:
    return sorted(o.key for o in store.list(""))


# -- basic operations -----------------------------------------------------------------------


def test_put_get_head_delete(store: ObjectStore) -> None:
    assert store.head("a/b.bin") is None
    etag = store.put("a/b.bin", b"hello")
    assert etag
    got = store.get("a/b.bin")
    assert (got.data, got.etag) == (b"hello", etag)
    info = store.head("a/b.bin")
    assert info is not None and (info.key, info.size, info.etag) == ("a/b.bin", 5, etag)
    etag2 = store.put("a/b.bin", b"hello again")  # overwrite
    assert etag2 != etag and store.get("a/b.bin").data == b"hello again"
    store.delete("a/b.bin")
    assert store.head("a/b.bin") is None
    store.delete("a/b.bin")  # deleting a missing key is not an error


def test_missing_keys(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"nope/x\.bin .*does not exist"):
        store.get("nope/x.bin")
    assert store.get_or_none("nope/x.bin") is None
    assert store.head("nope/x.bin") is None
    assert not store.exists("nope/x.bin")
    assert list(store.list("nope")) == []


def test_empty_object(store: ObjectStore) -> None:
    store.put("e/empty", b"")
    assert store.get("e/empty").data == b""
    info = store.head("e/empty")
    assert info is not None and info.size == 0


# -- conditional writes -----------------------------------------------------------------------


def test_put_if_absent(store: ObjectStore) -> None:
    etag = store.put_if_absent("c/k", b"1")
    assert etag and store.get("c/k").etag == etag
    with pytest.raises(ConflictError, match="c/k"):
        store.put_if_absent("c/k", b"2")
    assert store.get("c/k").data == b"1"


def test_put_if_match(store: ObjectStore) -> None:
    e1 = store.put("c/k", b"1")
    e2 = store.put_if_match("c/k", b"2", e1)
    assert e2 and e2 != e1 and store.get("c/k") == store.get("c/k")
    assert store.get("c/k").data == b"2"
    with pytest.raises(ConflictError):
        store.put_if_match("c/k", b"3", e1)  # stale ETag
    assert store.get("c/k").data == b"2"
    # None means "create only if absent"
    store.put_if_match("c/new", b"x", None)
    with pytest.raises(ConflictError):
        store.put_if_match("c/new", b"y", None)
    assert store.get("c/new").data == b"x"


def test_put_if_match_on_a_missing_key_is_a_conflict(store: ObjectStore) -> None:
    """S3 answers 404 here and SeaweedFS 412: either way the writer lost a race (the object it
    read was deleted), so every backend raises ConflictError and writes nothing."""
    etag = store.put("c/gone", b"1")
    store.delete("c/gone")
    with pytest.raises(ConflictError):
        store.put_if_match("c/gone", b"2", etag)
    with pytest.raises(ConflictError):
        store.put_if_match("c/never", b"2", '"0123456789abcdef"')
    assert store.head("c/gone") is None and store.head("c/never") is None


def test_etag_quoting_is_tolerated(store: ObjectStore) -> None:
    etag = store.put("q/k", b"1")
    assert etag is not None
    bare = etag.strip('"')
    store.put_if_match("q/k", b"2", bare)  # same ETag without quotes
    assert store.get("q/k").data == b"2"


def test_cas_race_has_exactly_one_winner(store: ObjectStore) -> None:
    etag = store.put("race/k", b"0")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            store.put_if_match("race/k", str(i).encode(), etag)
            wins.append(i)
        except ConflictError:
            pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("race/k").data == str(wins[0]).encode()


# -- large objects and listing ----------------------------------------------------------------


def test_large_objects(store: ObjectStore) -> None:
    blob = bytes(range(256)) * 80_000  # 20 MB: above S3 multipart thresholds
    etag = store.put("big/x.bin", blob)
    got = store.get("big/x.bin")
    assert got.data == blob and got.etag == etag
    info = store.head("big/x.bin")
    assert info is not None and info.size == len(blob)
    # conditional writes of large objects are single requests and still conditional
    new = blob[::-1]
    store.put_if_absent("big/y.bin", new)
    e2 = store.put_if_match("big/x.bin", new, etag)
    with pytest.raises(ConflictError):
        store.put_if_match("big/x.bin", blob, etag)
    got2 = store.get("big/x.bin")
    assert got2.data == new and got2.etag == e2
    assert store.get("big/y.bin").data == new


def test_list_under_a_prefix(store: ObjectStore) -> None:
    for key in ("p/a/1", "p/a/2", "p/a/sub/3", "p/ab/4", "q/5"):
        store.put(key, key.encode())
    listed = {o.key: o for o in store.list("p/a")}
    assert sorted(listed) == ["p/a/1", "p/a/2", "p/a/sub/3"]  # not p/ab: a prefix is a folder
    assert listed["p/a/1"].size == 5 and listed["p/a/1"].etag == store.head("p/a/1").etag  # type: ignore[union-attr]
    assert sorted(o.key for o in store.list("p/a/")) == sorted(listed)
    assert _all_keys(store) == ["p/a/1", "p/a/2", "p/a/sub/3", "p/ab/4", "q/5"]


# -- hostile keys -------------------------------------------------------------------------------

HOSTILE = [
    "",
    "/etc/passwd",
    "a//b",
    "a/../../b",
    "../outside",
    "a/./b",
    "trailing/",
    "back\\slash",
    "nul\x00byte",
    "new\nline",
    "tab\there",
    "del\x7f",
    "prices/v1/ÄPFEL/2024/01/data.parquet",
    "emoji/📈",
]


@pytest.mark.parametrize("key", HOSTILE, ids=repr)
def test_hostile_keys_are_rejected_before_the_store(store: ObjectStore, key: str) -> None:
    ops = [
        lambda: store.get(key),
        lambda: store.get_or_none(key),
        lambda: store.head(key),
        lambda: store.put(key, b"x"),
        lambda: store.put_if_absent(key, b"x"),
        lambda: store.put_if_match(key, b"x", '"e"'),
        lambda: store.put_if_match(key, b"x", None),
        lambda: store.delete(key),
    ]
    for op in ops:
        with pytest.raises(LayoutError, match="invalid object key"):
            op()
    assert _all_keys(store) == []  # nothing reached the store


def test_every_key_the_lake_builds_is_valid(tmp_path: Path) -> None:
    tickers = ["AAPL", "BRK.B", "^GSPC", "ES=F", "BF-B", "A", "X" * 20]
    day = dt.date(2024, 2, 29)
    with marketlake.open("memory://") as lk:
        for ds in list_datasets():
            for ticker in tickers:
                exchange = "binance" if ds.name == "crypto_bars" else None
                key = lk.key(ticker, ds.name, day, exchange=exchange)
                lk.store.put(key, b"ok")  # would raise LayoutError if the key were rejected
                lk.store.put(meta_key(ds.name, ticker), b"{}")
        assert lk.store.get(MARKER_KEY).data


# -- S3 error mapping (real server) -------------------------------------------------------------


def _fast_store(cfg: S3Settings) -> ObjectStore:
    return ObjectStore(
        s3_store(cfg, connect_timeout=1, timeout=3, max_retries=0), f"s3://{cfg.bucket}", retries=1
    )


def test_s3_wrong_secret_is_a_permission_error(s3_server: SeaweedFS) -> None:
    cfg = S3Settings(
        bucket=s3_server.bucket,
        endpoint=s3_server.endpoint,
        access_key_id=s3_server.access_key_id,
        secret_access_key="not-the-secret",
    )
    st = _fast_store(cfg)
    for op in (lambda: st.get("k"), lambda: st.put("k", b"x"), lambda: list(st.list("p"))):
        with pytest.raises(StoragePermissionError, match="secret key is wrong"):
            op()
    unknown = _fast_store(
        S3Settings(
            bucket=s3_server.bucket,
            endpoint=s3_server.endpoint,
            access_key_id="NOSUCHKEY",
            secret_access_key="x",
        )
    )
    with pytest.raises(StoragePermissionError, match="access key id"):
        unknown.get("k")


def test_s3_missing_bucket_is_a_final_error(s3_server: SeaweedFS) -> None:
    cfg = S3Settings(
        bucket="no-such-bucket-here",
        endpoint=s3_server.endpoint,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    st = _fast_store(cfg)
    with pytest.raises(StorageError, match=r"bucket .* does not exist") as info:
        list(st.list("p"))
    assert not isinstance(info.value, ObjectNotFoundError | TransientStorageError)
    with pytest.raises(StorageError, match=r"bucket .* does not exist"):
        st.get("k")


def test_s3_unreachable_endpoint_is_transient_and_fast() -> None:
    (port,) = free_ports(1)  # nothing listens here
    cfg = S3Settings(
        bucket="b", endpoint=f"http://127.0.0.1:{port}", access_key_id="a", secret_access_key="s"
    )
    st = _fast_store(cfg)
    t0 = time.monotonic()
    with pytest.raises(TransientStorageError, match="transient error"):
        st.get("k")
    assert time.monotonic() - t0 < 10  # no minutes of hidden retries


# -- the Lake end to end on S3 ----------------------------------------------------------------

D = dt.date


def test_lake_end_to_end_on_s3(s3_lake_url: str, tmp_path: Path) -> None:
    days = weekdays(D(2024, 1, 2), D(2024, 3, 29))
    with marketlake.open(s3_lake_url, catalog=tmp_path / "cat.sqlite") as lk:
        assert lk.url.startswith("s3://")
        res = lk.write("AAPL", "prices", price_table(days), source="unit")
        assert res.rows_added == len(days)
        got = lk.read("AAPL", "prices", "2024-01-01", "2024-12-31", output="arrow")
        assert got.equals(price_table(days))
        part = lk.read("AAPL", "prices", "2024-02-01", "2024-02-29", output="arrow")
        assert part.num_rows == len([d for d in days if d.month == 2])

        tickers = [f"T{i:02d}" for i in range(12)]
        src = SyntheticSource(seed=7)
        first = run_batch(
            lk, src, tickers, ["prices", "signals_technical"], D(2024, 1, 2), D(2024, 2, 29)
        )
        assert first.status == "completed" and first.items_completed == 24
        assert first.objects_written > 0
        objects = {o.key: o.etag for o in lk.store.list("")}
        again = run_batch(
            lk, src, tickers, ["prices", "signals_technical"], D(2024, 1, 2), D(2024, 2, 29)
        )
        assert again.status == "completed"
        assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
        assert {o.key: o.etag for o in lk.store.list("")} == objects  # not one byte rewritten

        batch = lk.read_batch([*tickers, "NOPE"], "prices", "2024-01-01", "2024-02-29")
        assert not batch.errors and batch.missing == ["NOPE"]
        assert sorted(set(batch.data["ticker"])) == tickers
        single = lk.read("T03", "prices", "2024-01-01", "2024-02-29", output="arrow")
        assert (batch.data["ticker"] == "T03").sum() == single.num_rows > 30

        live = lk.catalog.snapshot(include_timestamps=False)
    # a fresh catalog rebuilt from _meta in the bucket equals the live one
    with marketlake.open(s3_lake_url, catalog=tmp_path / "rebuilt.sqlite") as lk2:
        assert lk2.catalog.partitions() == []
        assert lk2.rebuild_catalog() > 0
        rebuilt = lk2.catalog.snapshot(include_timestamps=False)
        assert rebuilt["partitions"] == live["partitions"]
        assert lk2.read("T03", "prices", "2024-01-01", "2024-02-29", output="arrow").equals(single)


def test_two_lake_handles_on_one_s3_prefix_merge_their_rows(
    s3_lake_url: str, tmp_path: Path
) -> None:
    """Two Lake handles (two catalogs) on one bucket prefix: the second writer reads the first's
    partition and merges into it, so both writers' rows end up there, once."""
    jan = weekdays(D(2024, 1, 1), D(2024, 1, 31))
    a = marketlake.open(s3_lake_url, catalog=tmp_path / "a.sqlite")
    b = marketlake.open(s3_lake_url, catalog=tmp_path / "b.sqlite")
    try:
        a.write("MSFT", "prices", price_table(jan[:10]))
        b.write("MSFT", "prices", price_table(jan[10:]))
        got = a.read("MSFT", "prices", "2024-01-01", "2024-01-31", output="arrow")
        assert got.column("date").to_pylist() == jan
        meta = b.meta("MSFT", "prices")
        assert meta is not None and meta.row_count == len(jan)
    finally:
        a.close()
        b.close()
    assert isinstance(got, pa.Table)
