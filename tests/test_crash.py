"""Crash safety: a write interrupted at each step of the commit order (data -> _meta -> catalog)
leaves readable data, and a re-run repairs everything to the state of an uninterrupted run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import marketlake
from marketlake.query.lake import Lake
from marketlake.storage.store import ObjectStore
from tests.conftest import price_table, weekdays


class CrashError(Exception):
    """Simulated process death."""


class CrashingStore(ObjectStore):
    """Dies on the N-th write (0-based), before or after it lands."""

    def __init__(self, inner: ObjectStore, crash_at: int, after: bool) -> None:
        super().__init__(inner._store, inner.url, local_root=inner.local_root, fsync=False)
        self.crash_at, self.after, self.writes = crash_at, after, 0

    def _tick(self, fn: Any) -> Any:
        n = self.writes
        self.writes += 1
        if n == self.crash_at and not self.after:
            raise CrashError(f"before write {n}")
        out = fn()
        if n == self.crash_at and self.after:
            raise CrashError(f"after write {n}")
        return out

    def put(self, key: str, data: bytes) -> str | None:
        return self._tick(lambda: super(CrashingStore, self).put(key, data))

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str | None:
        return self._tick(lambda: super(CrashingStore, self).put_if_match(key, data, etag))


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("_catalog") and ".marketlake-locks" not in str(p)
    }


DAYS = weekdays(dt.date(2024, 1, 1), dt.date(2024, 3, 15))
BATCH1 = price_table(DAYS[:30])
BATCH2 = price_table(DAYS).slice(25)  # touches Feb and Mar, overlaps Feb


def reference(tmp_path: Path) -> tuple[dict[str, bytes], list[Any]]:
    with marketlake.open(tmp_path / "ref", fsync=False) as lk:
        lk.write("AAPL", "prices", BATCH1)
        lk.write("AAPL", "prices", BATCH2)
        snap = snapshot(tmp_path / "ref")
        parts = lk.catalog.snapshot(include_timestamps=False)["partitions"]
    return snap, parts


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize("crash_at", [0, 1, 2, 3])  # 3 writes: Feb, Mar, _meta (+1 = catalog)
def test_interrupted_write_is_readable_and_rerun_repairs(
    tmp_path: Path, crash_at: int, after: bool
) -> None:
    ref_snap, ref_parts = reference(tmp_path)
    root = tmp_path / "lake"
    with marketlake.open(root, fsync=False) as lk:
        lk.write("AAPL", "prices", BATCH1)
        crashing = Lake(CrashingStore(lk.store, crash_at, after), lk.catalog, lk.marker)
        if crash_at < 3:
            with pytest.raises(CrashError):
                crashing.write("AAPL", "prices", BATCH2)
        else:  # data and _meta landed, the catalog step "crashes"
            result = crashing.writer.write(lk.dataset("prices"), "AAPL", BATCH2)
            assert result.objects_written == 3
        # readable at every point: each object is either the old or the new version
        got = lk.read("AAPL", "prices", "2024-01-01", "2024-03-31", output="arrow")
        dates = got.column("date").to_pylist()
        assert dates == sorted(set(dates)) and set(BATCH1.column("date").to_pylist()) <= set(dates)
        # re-run the same batch: converges to the uninterrupted result, byte for byte
        lk.write("AAPL", "prices", BATCH2)
        assert _same_but_meta_time(snapshot(root), ref_snap)
        assert lk.read("AAPL", output="arrow").equals(
            marketlake.open(tmp_path / "ref", fsync=False).read("AAPL", output="arrow")
        )
        assert no_etag(lk.catalog.snapshot(include_timestamps=False)["partitions"]) == no_etag(
            ref_parts
        )


def no_etag(parts: list[Any]) -> list[Any]:
    """Catalog partition rows without the ETag (local ETags are inode-based, not content)."""
    return [p[:10] for p in parts]


def _same_but_meta_time(a: dict[str, bytes], b: dict[str, bytes]) -> bool:
    """Data objects identical; _meta may differ only in timestamps/etags."""
    import json

    if a.keys() != b.keys():
        return False
    for k in a:
        if k.startswith("_meta/") or k == "_marketlake.json":
            ja, jb = json.loads(a[k]), json.loads(b[k])
            for j in (ja, jb):
                j.pop("last_updated_at", None)
                j.pop("created_at", None)
                for p in j.get("partitions", {}).values():
                    p.pop("etag", None)
                    p.pop("updated_at", None)
            if ja != jb:
                return False
        elif a[k] != b[k]:
            return False
    return True
