"""``marketlake doctor`` on local disk and a real S3 server (SeaweedFS): green when all is well,
one clear line for wrong keys, a missing bucket, an unreachable endpoint or missing settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import marketlake
from marketlake.cli.main import app
from marketlake.doctor import Check, run_checks
from marketlake.testing import SeaweedFS, free_ports

NAMES = [
    "settings",
    "endpoint",
    "credentials",
    "bucket",
    "read",
    "write",
    "conditional writes",
    "lake marker",
]


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_doctor_green_on_local(tmp_path: Path) -> None:
    with marketlake.open(tmp_path / "lake", fsync=False):
        pass  # writes the marker
    checks = run_checks(str(tmp_path / "lake"))
    assert all(c.status == "ok" for c in checks), [c.line() for c in checks]
    assert [c.name for c in checks] == [n for n in NAMES if n not in ("endpoint", "credentials")]
    assert "format version 1" in _by_name(checks)["lake marker"].detail
    assert not list((tmp_path / "lake" / "_doctor").glob("*"))  # probes cleaned up


def test_doctor_green_on_seaweedfs(s3_server: SeaweedFS, s3_lake_url: str, tmp_path: Path) -> None:
    checks = run_checks(s3_lake_url)
    assert all(c.status == "ok" for c in checks), [c.line() for c in checks]
    assert [c.name for c in checks] == NAMES
    assert "new lake" in _by_name(checks)["lake marker"].detail
    with marketlake.open(s3_lake_url, catalog=tmp_path / "c.sqlite") as lk:
        assert [o.key for o in lk.store.list("_doctor")] == []  # probes deleted
    result = CliRunner().invoke(app, ["doctor", "--lake", s3_lake_url])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(NAMES) and all(ln.startswith("ok ") for ln in lines)
    assert "format version 1" in lines[-1]
    assert s3_server.secret_access_key not in result.output


def test_doctor_wrong_secret(s3_server: SeaweedFS, s3_lake_url: str) -> None:
    env = {**s3_server.env(), "R2_SECRET_ACCESS_KEY": "wrong-secret"}
    checks = _by_name(run_checks(s3_lake_url, env))
    assert checks["endpoint"].status == "ok"
    assert checks["credentials"].status == "FAIL"
    assert "secret key is wrong" in checks["credentials"].detail
    assert "R2_SECRET_ACCESS_KEY" in checks["credentials"].detail
    assert {checks[n].status for n in NAMES[3:]} == {"skip"}


def test_doctor_wrong_secret_cli_exit_1(s3_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R2_SECRET_ACCESS_KEY", "wrong-secret")
    result = CliRunner().invoke(app, ["doctor", "--lake", s3_lake_url])
    assert result.exit_code == 1
    fail = [ln for ln in result.output.splitlines() if ln.startswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith("FAIL credentials:")
    assert "Traceback" not in result.output


def test_doctor_missing_bucket(s3_server: SeaweedFS) -> None:
    url = s3_server.lake_url("x", bucket="no-such-bucket")
    checks = _by_name(run_checks(url, s3_server.env()))
    assert checks["credentials"].status == "ok"
    assert checks["bucket"].status == "FAIL"
    assert "does not exist" in checks["bucket"].detail and "R2_BUCKET" in checks["bucket"].detail


def test_doctor_unreachable_endpoint_is_quick() -> None:
    (port,) = free_ports(1)
    env = {"R2_ACCESS_KEY_ID": "a", "R2_SECRET_ACCESS_KEY": "s"}
    t0 = time.monotonic()
    checks = _by_name(run_checks(f"s3://b/p?endpoint=http://127.0.0.1:{port}", env))
    assert time.monotonic() - t0 < 10
    assert checks["settings"].status == "ok"
    assert checks["endpoint"].status == "FAIL"
    assert f"127.0.0.1:{port}" in checks["endpoint"].detail
    assert "R2_ENDPOINT" in checks["endpoint"].detail


@pytest.mark.parametrize(
    ("url", "env", "named"),
    [
        ("s3://b/p", {}, ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"]),
        ("s3://b/p", {"AWS_ACCESS_KEY_ID": "a"}, ["R2_SECRET_ACCESS_KEY"]),
        ("s3:///p", {"R2_ACCESS_KEY_ID": "a", "R2_SECRET_ACCESS_KEY": "s"}, ["R2_BUCKET"]),
        ("r2://b/p", {"R2_ACCESS_KEY_ID": "a", "R2_SECRET_ACCESS_KEY": "s"}, ["R2_ENDPOINT"]),
    ],
)
def test_doctor_names_the_missing_setting(url: str, env: dict[str, str], named: list[str]) -> None:
    checks = run_checks(url, env)
    assert checks[0].name == "settings" and checks[0].status == "FAIL"
    for name in named:
        assert name in checks[0].detail
    assert all(c.status == "skip" for c in checks[1:])
    assert [c.name for c in checks] == NAMES
