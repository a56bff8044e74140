"""``marketlake doctor``: check that a lake's object store is usable, one line per check.

:func:`run_checks` opens the store the way the lake would (but with short timeouts and no
retries, so a dead endpoint is reported in seconds) and checks, in order: settings present,
endpoint reachable, credentials accepted, bucket accessible, read permission, write permission
(put/get/delete of a probe object under ``_doctor/``), conditional writes (create-if-absent and
If-Match, which concurrent writers rely on) and the lake marker. Once a check fails, the checks
that depend on it are reported as skipped, never as a confusing second failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from marketlake.errors import (
    ConflictError,
    MarketlakeError,
    ObjectNotFoundError,
    StoragePermissionError,
)
from marketlake.storage.format import FORMAT_VERSION, MARKER_KEY, LakeMarker
from marketlake.storage.store import ObjectStore, S3Settings, open_store, s3_store

Status = Literal["ok", "FAIL", "skip"]

PROBE_PREFIX = "_doctor"
CONNECT_TIMEOUT = 3.0  # seconds: doctor fails fast instead of retrying for minutes
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``name``, ``status`` (ok / FAIL / skip) and a one-line
    ``detail`` that, on failure, says what is wrong and how to fix it."""

    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        """True unless the check failed (a skipped check is not a failure of its own)."""
        return self.status != "FAIL"

    def line(self) -> str:
        """``ok   name: detail`` — how the CLI prints it."""
        return f"{self.status:<4} {self.name}: {self.detail}"


def run_checks(url: str, env: Mapping[str, str] | None = None) -> list[Check]:
    """Run every check against the lake at ``url``; never raises for a storage problem.

    Parameters
    ----------
    url:
        Lake URL (local path, ``file://``, ``memory://``, ``s3://`` / ``r2://``).
    env:
        Environment to read ``R2_*`` / ``AWS_*`` settings from (default ``os.environ``).

    Returns
    -------
    list[Check]
        One entry per check, in order. All pass (``all(c.ok for c in checks)``) when the lake
        can be read and written safely by concurrent writers.
    """
    environ = dict(os.environ if env is None else env)
    checks: list[Check] = []
    scheme = urlparse(url).scheme.lower()
    remote = scheme in ("s3", "r2")
    if remote:
        store = _open_s3(url, environ, checks)
    else:
        try:
            store = open_store(url, retries=1)
            checks.append(Check("settings", "ok", f"{store.url}"))
        except MarketlakeError as exc:
            checks.append(Check("settings", "FAIL", str(exc)))
            store = None
    if store is None:
        return _skip_rest(checks, remote)
    try:
        _store_checks(store, checks, remote=remote)
    finally:
        store.close()
    return checks


_ORDER = (
    "settings",
    "endpoint",
    "credentials",
    "bucket",
    "read",
    "write",
    "conditional writes",
    "lake marker",
)


def _skip_rest(checks: list[Check], remote: bool = True) -> list[Check]:
    done = {c.name for c in checks}
    order = _ORDER if remote else [n for n in _ORDER if n not in ("endpoint", "credentials")]
    failed = next((c.name for c in checks if not c.ok), "a previous check")
    checks.extend(
        Check(name, "skip", f"not checked: {failed} failed") for name in order if name not in done
    )
    return checks


def _open_s3(url: str, env: dict[str, str], checks: list[Check]) -> ObjectStore | None:
    try:
        cfg = S3Settings.from_url(url, env)
    except MarketlakeError as exc:
        checks.append(Check("settings", "FAIL", str(exc)))
        return None
    missing = []
    if not cfg.access_key_id:
        missing.append("R2_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID)")
    if not cfg.secret_access_key:
        missing.append("R2_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)")
    if not cfg.endpoint and url.lower().startswith("r2:"):
        missing.append("R2_ENDPOINT (https://<account>.r2.cloudflarestorage.com)")
    if missing:
        checks.append(Check("settings", "FAIL", f"not set: {', '.join(missing)}"))
        return None
    endpoint = cfg.endpoint or f"https://s3.{cfg.region}.amazonaws.com"
    checks.append(
        Check(
            "settings",
            "ok",
            f"bucket {cfg.bucket!r}, prefix {cfg.prefix!r}, endpoint {endpoint}, "
            f"region {cfg.region}",
        )
    )
    parsed = urlparse(endpoint)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
        checks.append(Check("endpoint", "ok", f"{host}:{port} accepts connections"))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {CONNECT_TIMEOUT:.0f}s"
        checks.append(
            Check(
                "endpoint",
                "FAIL",
                f"cannot connect to {host}:{port} ({reason}): check R2_ENDPOINT / the "
                "?endpoint= in the URL, that the server runs, and the network/firewall",
            )
        )
        return None
    try:
        store = s3_store(
            cfg, connect_timeout=CONNECT_TIMEOUT, timeout=REQUEST_TIMEOUT, max_retries=0
        )
    except MarketlakeError as exc:
        checks.append(Check("endpoint", "FAIL", str(exc)))
        return None
    return ObjectStore(store, f"s3://{cfg.bucket}/{cfg.prefix}", retries=1, open_url=url)


def _store_checks(store: ObjectStore, checks: list[Check], *, remote: bool) -> None:
    # credentials + bucket: one LIST under the probe prefix
    try:
        next(iter(store.list(PROBE_PREFIX)), None)
        if remote:
            checks.append(Check("credentials", "ok", "the server accepted the signed request"))
        checks.append(Check("bucket", "ok", f"{store.url} exists and may be listed"))
    except StoragePermissionError as exc:
        text = str(exc)
        if "(AccessDenied)" in text or "(AllAccessDisabled)" in text:
            checks.append(Check("credentials", "ok", "the server accepted the signed request"))
            checks.append(
                Check(
                    "bucket",
                    "FAIL",
                    f"the keys may not list {store.url}: grant them List/Read/Write on the "
                    "bucket (for R2: an API token with Object Read & Write on it)",
                )
            )
        else:
            checks.append(Check("credentials", "FAIL", _one_line(exc)))
        _skip_rest(checks, remote)
        return
    except MarketlakeError as exc:
        text = _one_line(exc)
        if "bucket" in text and "does not exist" in text:
            if remote:
                checks.append(Check("credentials", "ok", "the server accepted the signed request"))
            checks.append(Check("bucket", "FAIL", text))
        else:
            checks.append(
                Check("credentials" if remote else "bucket", "FAIL", f"cannot list: {text}")
            )
        _skip_rest(checks, remote)
        return

    token = uuid.uuid4().hex[:12]
    missing_key = f"{PROBE_PREFIX}/missing-{token}"
    probe = f"{PROBE_PREFIX}/probe-{token}"
    cas = f"{PROBE_PREFIX}/cas-{token}"

    def attempt(name: str, fn: Callable[[], str], fix: str) -> bool:
        try:
            checks.append(Check(name, "ok", fn()))
            return True
        except MarketlakeError as exc:
            checks.append(Check(name, "FAIL", f"{_one_line(exc)} — {fix}"))
            return False

    def read() -> str:
        try:
            store.get(missing_key)
        except ObjectNotFoundError:
            return "GET is permitted (a missing object reads as not found)"
        raise MarketlakeError(f"{missing_key} unexpectedly exists")

    def write() -> str:
        payload = f"marketlake doctor probe {token}\n".encode()
        store.put(probe, payload)
        try:
            if store.get(probe).data != payload:
                raise MarketlakeError(f"{probe} read back different bytes than were written")
        finally:
            store.delete(probe)
        if store.head(probe) is not None:
            raise MarketlakeError(f"{probe} is still there after DELETE")
        return f"put, read back and deleted {probe}"

    def conditional() -> str:
        try:
            etag = store.put_if_absent(cas, b"1")
            try:
                store.put_if_absent(cas, b"2")
                raise MarketlakeError("create-if-absent overwrote an existing object")
            except ConflictError:
                pass
            etag2 = store.put_if_match(cas, b"3", etag)
            try:
                store.put_if_match(cas, b"4", etag)
                raise MarketlakeError("If-Match accepted a stale ETag")
            except ConflictError:
                pass
            if store.get(cas).data != b"3" or etag2 == etag:
                raise MarketlakeError("If-Match did not replace the object as asked")
        finally:
            store.delete(cas)
        return "If-None-Match: * and If-Match are enforced (safe concurrent writers)"

    def marker() -> str:
        got = store.get_or_none(MARKER_KEY)
        if got is None:
            return f"no {MARKER_KEY} yet: a new lake (created on first open)"
        m = LakeMarker.from_bytes(got.data)
        if m.format_version > FORMAT_VERSION:
            raise MarketlakeError(
                f"format version {m.format_version} is newer than this marketlake "
                f"({FORMAT_VERSION}): upgrade marketlake"
            )
        return f"format version {m.format_version}, created {m.created_at}"

    if not attempt("read", read, "the keys need read (GetObject) permission"):
        _skip_rest(checks, remote)
        return
    if not attempt("write", write, "the keys need write and delete permission on the bucket"):
        _skip_rest(checks, remote)
        return
    attempt(
        "conditional writes",
        conditional,
        "the server must support conditional PUT (If-None-Match / If-Match), as S3, R2 and "
        "recent MinIO/SeaweedFS do",
    )
    attempt("lake marker", marker, f"fix or restore {MARKER_KEY} from a backup")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
