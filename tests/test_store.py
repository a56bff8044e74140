"""Local-store specifics (staging, orphans, URLs) and S3 settings; the shared contract is in
test_conformance.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketlake.errors import ConfigError, MarketlakeError
from marketlake.storage.store import S3Settings, open_store

# The generic store contract (put/get/head/delete, CAS, races, large objects, listing, hostile
# keys) runs over memory, local and S3 in test_conformance.py; this file keeps what is specific
# to the local store and to S3 settings.


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
