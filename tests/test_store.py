"""Object-store conformance on memory and local backends (issue 3 adds a real S3 server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketlake.errors import ConfigError, ConflictError, MarketlakeError, ObjectNotFoundError
from marketlake.storage.store import ObjectStore, S3Settings, open_store


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield open_store("memory://" if request.param == "memory" else str(tmp_path / "s"))


def test_put_get_head_delete(store: ObjectStore) -> None:
    assert store.head("a/b.bin") is None
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        store.get("a/b.bin")
    etag = store.put("a/b.bin", b"hello")
    got = store.get("a/b.bin")
    assert got.data == b"hello" and got.etag == etag
    info = store.head("a/b.bin")
    assert info is not None and info.size == 5 and info.etag == etag
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # idempotent
    assert store.get_or_none("a/b.bin") is None


def test_put_if_absent(store: ObjectStore) -> None:
    store.put_if_absent("k", b"1")
    with pytest.raises(ConflictError):
        store.put_if_absent("k", b"2")
    assert store.get("k").data == b"1"


def test_put_if_match(store: ObjectStore) -> None:
    e1 = store.put("k", b"1")
    e2 = store.put_if_match("k", b"2", e1)
    assert e2 != e1
    with pytest.raises(ConflictError):
        store.put_if_match("k", b"3", e1)  # stale etag
    assert store.get("k").data == b"2"
    with pytest.raises(ConflictError):
        store.put_if_match("missing", b"x", e2)
    store.put_if_match("new", b"x", None)  # None = create only if absent
    with pytest.raises(ConflictError):
        store.put_if_match("new", b"y", None)


def test_large_object_and_list(store: ObjectStore) -> None:
    blob = bytes(range(256)) * 40_000  # ~10 MB
    store.put("big/x.bin", blob)
    assert store.get("big/x.bin").data == blob
    store.put("big/y.bin", b"y")
    assert sorted(i.key for i in store.list("big")) == ["big/x.bin", "big/y.bin"]


def test_cas_race_has_one_winner(store: ObjectStore) -> None:
    etag = store.put("race", b"0")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            store.put_if_match("race", str(i).encode(), etag)
            wins.append(i)
        except ConflictError:
            pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("race").data == str(wins[0]).encode()


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    s = open_store(tmp_path / "s")
    for i in range(5):
        s.put("p/data.parquet", str(i).encode())
    names = sorted(p.name for p in (tmp_path / "s" / "p").iterdir())
    assert names == ["data.parquet"]
    assert list((tmp_path / "s" / ".marketlake-tmp").iterdir()) == []
    assert [o.key for o in s.list("p")] == ["p/data.parquet"]


def test_failed_local_write_leaves_no_temp_file(tmp_path: Path) -> None:
    s = open_store(tmp_path / "s")
    s.put("p/data.parquet", b"old")
    (tmp_path / "s" / "p" / "data.parquet").unlink()
    (tmp_path / "s" / "p" / "data.parquet").mkdir()  # rename onto a directory fails
    with pytest.raises(MarketlakeError):
        s.put("p/data.parquet", b"new")
    assert list((tmp_path / "s" / ".marketlake-tmp").iterdir()) == []


def test_orphaned_temporaries_of_dead_writers_are_removed_at_open(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    open_store(tmp_path / "s").put("k", b"v")
    stage = tmp_path / "s" / ".marketlake-tmp"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    old, fresh, alive = stage / f"{dead}.1.0", stage / f"{dead}.1.1", stage / f"{os.getpid()}.1.0"
    for f in (old, fresh, alive):
        f.write_bytes(b"partial")
    os.utime(old, (1, 1))
    os.utime(alive, (1, 1))
    open_store(tmp_path / "s").put("k", b"v2")  # the first write of a process cleans up
    assert not old.exists()  # dead writer, old: removed
    assert fresh.exists() and alive.exists()  # too recent / live process: kept


def test_urls(tmp_path: Path) -> None:
    assert open_store(f"file://{tmp_path}/x").local_root == (tmp_path / "x").resolve()
    with pytest.raises(ConfigError, match="unsupported lake URL"):
        open_store("ftp://host/x")


def test_s3_settings_from_env_and_url() -> None:
    env = {
        "R2_ACCESS_KEY_ID": "AKID",
        "R2_SECRET_ACCESS_KEY": "SECRET",
        "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
        "R2_BUCKET": "lakebucket",
    }
    cfg = S3Settings.from_url("s3:///prefix/x", env)
    assert (cfg.bucket, cfg.prefix, cfg.region) == ("lakebucket", "prefix/x", "auto")
    assert cfg.endpoint == "https://acct.r2.cloudflarestorage.com"
    assert "SECRET" not in repr(cfg) and "AKID" not in repr(cfg)
    aws = S3Settings.from_url(
        "s3://b/p?endpoint=http://127.0.0.1:9000",
        {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"},
    )
    assert (aws.bucket, aws.endpoint, aws.region, aws.access_key_id) == (
        "b",
        "http://127.0.0.1:9000",
        "eu-west-1",
        "a",
    )
    with pytest.raises(ConfigError, match="R2_BUCKET"):
        S3Settings.from_url("s3:///p", {})
