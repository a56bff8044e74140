"""A TCP proxy on loopback that adds latency and injects connection faults (tests, benchmarks).

:class:`TcpProxy` listens on a free ``127.0.0.1`` port in background threads and forwards every
connection to ``target_host:target_port``. Each chunk is forwarded no earlier than
``latency_up`` (client -> target) or ``latency_down`` (target -> client) seconds after it was
received, without limiting throughput: 10 ms each way is a 20 ms round trip, as to a nearby S3
region. Faults, changeable while the proxy runs:

``drop_after_bytes``
    Close a connection (both sides) once this many request bytes went through it: an upload
    that dies mid-body.
``reset_probability``
    Reset a new connection (TCP RST) with this probability (seeded).

:attr:`TcpProxy.stats` counts connections, bytes each way, resets and drops.

>>> with TcpProxy("127.0.0.1", 8333, latency_up=0.01, latency_down=0.01) as proxy:  # doctest: +SKIP
...     endpoint = proxy.url  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import heapq
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from marketlake.errors import ConfigError

_CHUNK = 1 << 16


@dataclass
class ProxyStats:
    """Counters of a :class:`TcpProxy` (read them after the traffic has settled)."""

    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    drops: int = 0


class _DelayedPipe:
    """One direction of a connection: a reader thread stamps chunks, a writer thread sends each
    at ``stamp + latency`` (order kept)."""

    def __init__(
        self, proxy: TcpProxy, src: socket.socket, dst: socket.socket, up: bool, done: _Done
    ) -> None:
        self.proxy, self.src, self.dst, self.up, self.done = proxy, src, dst, up, done
        self._queue: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._eof = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True, name="proxy-read").start()
        threading.Thread(target=self._write, daemon=True, name="proxy-write").start()

    def _latency(self) -> float:
        return self.proxy.latency_up if self.up else self.proxy.latency_down

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(_CHUNK)
                if not data:
                    break
                with self._cond:
                    heapq.heappush(
                        self._queue, (time.monotonic() + self._latency(), self._seq, data)
                    )
                    self._seq += 1
                    self._cond.notify()
        except OSError:
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify()

    def _write(self) -> None:
        sent = 0
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._eof:
                        self._cond.wait()
                    if not self._queue:
                        break
                    due, _, data = heapq.heappop(self._queue)
                while (left := due - time.monotonic()) > 0:
                    time.sleep(left)
                limit = self.proxy.drop_after_bytes if self.up else None
                if limit is not None and sent + len(data) > limit:
                    self.dst.sendall(data[: max(0, limit - sent)])
                    self.proxy._count(drops=1)
                    self.proxy._abort(self.src, self.dst)
                    return
                self.dst.sendall(data)
                sent += len(data)
                self.proxy._count(**{"bytes_up" if self.up else "bytes_down": len(data)})
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)  # pass the half-close on
        except OSError:
            self.proxy._abort(self.src, self.dst)
        finally:
            self.done()


class _Done:
    """Closes a connection's two sockets once both directions have finished."""

    def __init__(self, proxy: TcpProxy, *sockets: socket.socket) -> None:
        self.proxy, self.sockets, self.left = proxy, sockets, 2
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.left -= 1
            last = self.left == 0
        if last:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.close()
                with self.proxy._lock:
                    self.proxy._sockets.discard(s)


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with latency and faults.

    Parameters
    ----------
    target_host, target_port:
        Where to forward.
    latency_up, latency_down:
        Seconds added to each chunk client -> target and target -> client.
    drop_after_bytes:
        Close each connection after this many client -> target bytes (None: never).
    reset_probability:
        Chance (0..1) that a new connection is reset at once.
    seed:
        Seeds the reset draws.
    port:
        Port to listen on (0: a free one).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        latency_up: float = 0.0,
        latency_down: float = 0.0,
        drop_after_bytes: int | None = None,
        reset_probability: float = 0.0,
        seed: int = 0,
        port: int = 0,
    ) -> None:
        if min(latency_up, latency_down) < 0 or not 0.0 <= reset_probability <= 1.0:
            raise ConfigError("proxy latency must be >= 0 and reset_probability within 0..1")
        self.target = (target_host, int(target_port))
        self.latency_up = latency_up
        self.latency_down = latency_down
        self.drop_after_bytes = drop_after_bytes
        self.reset_probability = reset_probability
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def for_url(cls, url: str, **options: float | int | None) -> TcpProxy:
        """A proxy in front of ``http://host:port`` (options as in the constructor)."""
        parsed = urlparse(url)
        if not parsed.hostname or not parsed.port:
            raise ConfigError(f"proxy target {url!r} needs a host and a port")
        return cls(parsed.hostname, parsed.port, **options)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"TcpProxy(:{self.port} -> {self.target[0]}:{self.target[1]}, {self.stats})"

    def start(self) -> TcpProxy:
        """Accept connections in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close every open connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        self._abort(*sockets)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._count(connections=1)
            with self._lock:
                reset = self._rng.random() < self.reset_probability
            if reset:
                self._count(resets=1)
                self._abort(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                self._abort(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            done = _Done(self, client, upstream)
            _DelayedPipe(self, client, upstream, up=True, done=done).start()
            _DelayedPipe(self, upstream, client, up=False, done=done).start()

    def _abort(self, *sockets: socket.socket) -> None:
        """Close with RST (SO_LINGER 0): the peer sees a reset, not a clean end."""
        for s in sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wake threads blocked on it (close alone does not)
            with contextlib.suppress(OSError):
                s.close()
            with self._lock:
                self._sockets.discard(s)
