"""Backups: full and incremental copies, verify, restore round trip, crash safety, CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.backup import (
    MANIFEST_KEY,
    BackupError,
    Manifest,
    backup,
    lake_objects,
    list_snapshots,
    object_key,
    prune_backup,
    read_manifest,
    restore,
    verify_backup,
)
from marketlake.catalog import Catalog
from marketlake.cli.main import app
from marketlake.errors import CorruptObjectError
from marketlake.schemas.datasets import list_datasets
from marketlake.storage.format import ensure_marker
from marketlake.storage.store import ObjectStore, open_store
from tests.conftest import price_table, weekdays

TICKERS = ["AAA", "BBB", "CCC"]


def _fill(lake: Lake) -> None:
    days = weekdays(dt.date(2024, 1, 2), dt.date(2024, 3, 28))
    for i, t in enumerate(TICKERS):
        lake.write(t, "prices", price_table(days, base=100 + i))


def _lake_on(store: ObjectStore) -> Lake:
    marker = ensure_marker(store, {d.name: d.layout for d in list_datasets()})
    return Lake(store, Catalog.open(":memory:"), marker)


def _snapshot_bytes(store: ObjectStore) -> dict[str, bytes]:
    return {i.key: store.get(i.key).data for i in lake_objects(store)}


def _reads(lake: Lake) -> dict[str, pa.Table]:
    return {t: lake.read(t, "prices", output="arrow") for t in TICKERS}


@pytest.fixture(params=["memory", "local", "s3"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Lake, Callable[[], ObjectStore]]]:
    """A filled source lake and a factory of empty stores (backup targets / restore lakes)."""
    factory: Callable[[], ObjectStore]
    if request.param == "s3":  # SeaweedFS; targets are sibling prefixes in the same bucket
        url = request.getfixturevalue("s3_lake_url")
        src = marketlake.open(url, catalog=":memory:")
        base, _, query = url.partition("?")
        counter = iter(range(100))
        factory = lambda: open_store(f"{base}-t{next(counter)}?{query}")  # noqa: E731
    elif request.param == "memory":
        src = marketlake.open("memory://", fsync=False)
        factory = lambda: open_store("memory://")  # noqa: E731
    else:
        src = marketlake.open(tmp_path / "lake", fsync=False)
        counter = iter(range(100))
        factory = lambda: open_store(tmp_path / f"t{next(counter)}", fsync=False)  # noqa: E731
    _fill(src)
    yield src, factory
    src.close()


def test_full_backup_copies_every_lake_object(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    objs = lake_objects(src.store)
    keys = {i.key for i in objs}
    assert "_marketlake.json" in keys
    assert any(k.startswith("_meta/") for k in keys)
    assert not any("catalog" in k or k.startswith(".") for k in keys)
    s = backup(src.store, target, workers=4)
    assert s.objects == len(objs) and s.copied == len(objs) and s.skipped == 0
    manifest, _ = read_manifest(target)
    assert set(manifest.entries) == keys
    for key, data in _snapshot_bytes(src.store).items():
        e = manifest.entries[key]
        assert e.sha256 == hashlib.sha256(data).hexdigest() and e.size == len(data)
        assert target.get(object_key(e.sha256)).data == data
    assert list_snapshots(target) == [s.snapshot]
    assert target.get(f"_backup/manifests/{s.snapshot}.json").data == target.get(MANIFEST_KEY).data
    assert not target.exists("_backup/lock.json")
    assert verify_backup(target).ok


def test_incremental_backup_copies_only_changed_objects(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    first = backup(src.store, target)
    again = backup(src.store, target)
    assert again.copied == 0 and again.skipped == again.objects == first.objects
    # one new day for one ticker: its March partition and its _meta change, nothing else
    src.write("AAA", "prices", price_table([dt.date(2024, 3, 29)], base=100))
    third = backup(src.store, target)
    assert third.copied == 2, third
    assert third.skipped == third.objects - 2
    latest, _ = read_manifest(target)
    assert (
        latest.entries["prices/v1/AAA/2024/03/data.parquet"].sha256
        != read_manifest(target, first.snapshot)[0]
        .entries["prices/v1/AAA/2024/03/data.parquet"]
        .sha256
    )
    assert len(list_snapshots(target)) == 3
    # full mode re-reads and re-uploads every distinct content once
    full = backup(src.store, target, full=True)
    distinct = {e.sha256 for e in read_manifest(target)[0].entries.values()}
    assert full.copied == len(distinct) and full.skipped == full.objects - len(distinct)


def test_verify_detects_deleted_and_corrupted_backup_objects(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    backup(src.store, target)
    manifest, _ = read_manifest(target)
    gone = "prices/v1/AAA/2024/01/data.parquet"
    bad = "_meta/v1/prices/BBB.json"
    target.delete(object_key(manifest.entries[gone].sha256))
    blob = target.get(object_key(manifest.entries[bad].sha256)).data
    target.put(object_key(manifest.entries[bad].sha256), blob[:-3] + b"xyz")  # same size
    report = verify_backup(target)
    assert not report.ok
    assert report.missing == [gone]
    assert report.corrupt == [bad]
    # restore refuses a backup with a missing object, before writing anything
    dest = new_store()
    with pytest.raises(BackupError, match="incomplete"):
        restore(target, dest)
    assert lake_objects(dest) == []
    # the next backup heals the missing object (listed absent at the target) ...
    healed = backup(src.store, target)
    assert healed.copied == 1
    assert verify_backup(target).missing == []
    # ... and a full backup also rewrites the corrupted one
    backup(src.store, target, full=True)
    assert verify_backup(target).ok


def test_verify_compares_with_the_live_lake(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    backup(src.store, target)
    src.write("DDD", "prices", price_table([dt.date(2024, 1, 2)]))
    src.write("AAA", "prices", price_table([dt.date(2024, 3, 29)]))
    report = verify_backup(target, lake=src.store)
    assert report.ok
    assert "prices/v1/AAA/2024/03/data.parquet" in report.changed_since
    assert "prices/v1/DDD/2024/01/data.parquet" in report.new_since
    assert report.deleted_since == []


def test_restore_round_trip_equals_the_original(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    backup(src.store, target)
    dest = new_store()
    s = restore(target, dest, catalog=":memory:")
    assert s.objects == len(lake_objects(src.store)) and s.deleted == 0
    assert s.partitions == 9  # 3 tickers x 3 months
    assert _snapshot_bytes(dest) == _snapshot_bytes(src.store)
    restored = _lake_on(dest)
    restored.rebuild_catalog()
    original = _reads(src)
    got = _reads(restored)
    for t in TICKERS:
        assert got[t].num_rows > 0 and got[t].equals(original[t])
    assert restored.tickers() == sorted(TICKERS)
    # a non-empty lake is refused without force
    with pytest.raises(BackupError, match="not empty"):
        restore(target, dest)


def test_restore_force_rolls_back_to_an_older_snapshot(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    first = backup(src.store, target)
    before = _snapshot_bytes(src.store)
    src.write("DDD", "prices", price_table([dt.date(2024, 1, 2)]))
    src.write("AAA", "prices", price_table([dt.date(2024, 3, 29)]))
    backup(src.store, target)
    s = restore(target, src.store, snapshot=first.snapshot, force=True, catalog=":memory:")
    assert s.deleted == 2  # DDD's partition and _meta
    assert _snapshot_bytes(src.store) == before


def test_crash_mid_backup_keeps_the_previous_manifest_valid(
    stores: tuple[Lake, Callable[[], ObjectStore]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, new_store = stores
    target = new_store()
    first = backup(src.store, target)
    # change every ticker's March partition, then crash after two uploads
    for i, t in enumerate(TICKERS):
        src.write(t, "prices", price_table([dt.date(2024, 3, 29)], base=200 + i))
    real_put = target.put
    calls = {"n": 0}

    def flaky_put(key: str, data: bytes) -> str | None:
        if key.startswith("_backup/objects/"):
            calls["n"] += 1
            if calls["n"] > 2:
                raise RuntimeError("injected crash")
        return real_put(key, data)

    monkeypatch.setattr(target, "put", flaky_put)
    with pytest.raises(RuntimeError, match="injected crash"):
        backup(src.store, target, workers=1)
    monkeypatch.setattr(target, "put", real_put)
    assert list_snapshots(target) == [first.snapshot]
    latest, _ = read_manifest(target)
    assert latest.snapshot.endswith(first.snapshot + ".json")
    assert verify_backup(target).ok  # the old snapshot is intact
    assert not target.exists("_backup/lock.json")  # released on error
    rerun = backup(src.store, target)
    assert rerun.copied == 6 - 2  # 3 partitions + 3 _meta changed; 2 uploaded before the crash
    assert verify_backup(target).ok
    dest = new_store()
    restore(target, dest, catalog=":memory:")
    assert _snapshot_bytes(dest) == _snapshot_bytes(src.store)


def test_lock_target_is_source_and_prune(
    stores: tuple[Lake, Callable[[], ObjectStore]],
) -> None:
    src, new_store = stores
    target = new_store()
    with pytest.raises(BackupError, match="is the source"):
        backup(src.store, src.store)
    target.put("_backup/lock.json", json.dumps({"pid": 1}).encode())
    with pytest.raises(BackupError, match="break-lock"):
        backup(src.store, target)
    backup(src.store, target, break_lock=True)
    src.write("AAA", "prices", price_table([dt.date(2024, 3, 29)]))
    backup(src.store, target)
    assert len(list_snapshots(target)) == 2
    snaps, objs = prune_backup(target, keep=1)
    assert (snaps, objs) == (1, 2)  # the old March partition and old _meta of AAA
    assert verify_backup(target).ok
    with pytest.raises(BackupError, match="no snapshot"):
        read_manifest(target, "19990101T000000000000Z")


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    target = open_store(tmp_path / "t", fsync=False)
    target.put(MANIFEST_KEY, b"{not json")
    with pytest.raises(CorruptObjectError, match=r"manifest _backup/manifest\.json is corrupt"):
        verify_backup(target)
    with pytest.raises(CorruptObjectError, match="corrupt"):
        Manifest.from_bytes(b'{"format": "other"}', key="k")


# --- CLI -----------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_backup_verify_restore(tmp_path: Path) -> None:
    lake_dir, target_dir, dest_dir = tmp_path / "lake", tmp_path / "bk", tmp_path / "restored"
    with marketlake.open(lake_dir, fsync=False) as lk:
        _fill(lk)
        original = _reads(lk)
    r = _cli("backup", "--lake", str(lake_dir), "--to", str(target_dir))
    assert r.exit_code == 0, r.output
    assert "copied" in r.output
    r = _cli("backup", "verify", "--to", str(target_dir), "--lake", str(lake_dir))
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "0 changed" in r.output
    r = _cli("backup", "list", "--to", str(target_dir))
    assert r.exit_code == 0 and len(r.output.split()) == 1
    r = _cli("restore", "--from", str(target_dir), "--lake", str(dest_dir))
    assert r.exit_code == 0, r.output
    with marketlake.open(dest_dir) as lk:
        assert lk.tickers() == sorted(TICKERS)  # catalog rebuilt
        for t, table in _reads(lk).items():
            assert table.equals(original[t])
    r = _cli("restore", "--from", str(target_dir), "--lake", str(dest_dir))
    assert r.exit_code == 1 and "not empty" in r.output and "--force" in r.output
    r = _cli("backup", "--lake", str(lake_dir), "--to", str(lake_dir))
    assert r.exit_code == 1 and "is the source" in r.output
    # corrupt a backup object: verify exits 1 and names the key
    manifest, _ = read_manifest(open_store(target_dir))
    key = "prices/v1/BBB/2024/02/data.parquet"
    (target_dir / object_key(manifest.entries[key].sha256)).write_bytes(b"garbage")
    r = _cli("backup", "verify", "--to", str(target_dir))
    assert r.exit_code == 1
    assert f"corrupt: {key}" in r.output and "1 corrupt" in r.output
    r = _cli("backup", "verify", "--to", str(tmp_path / "nothing"))
    assert r.exit_code == 1 and "no backup at" in r.output
    r = _cli("backup", "--lake", str(lake_dir))
    assert r.exit_code == 2


def test_backup_of_a_directory_that_is_not_a_lake(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="not a marketlake lake"):
        backup(tmp_path / "empty", tmp_path / "bk")
    assert list_snapshots(tmp_path / "bk") == []
