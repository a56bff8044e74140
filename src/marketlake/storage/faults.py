"""Fault injection for object stores: a seeded plan of failures for tests and chaos drills.

:class:`FaultyStore` is an :class:`~marketlake.storage.store.ObjectStore` (so a
:class:`~marketlake.Lake`, :class:`~marketlake.ingest.writer.PartitionWriter` and
:func:`~marketlake.ingest.batch.run_batch` accept it) that shares the connection, locks and
staging directory of the store it wraps and injects faults chosen by a :class:`FaultPlan`.

Faults are injected *inside* the store's retry loop, exactly where a real backend error would
surface, so they exercise the production error mapping and retry policy:

``transient``
    The request fails before reaching the store (connection reset): retried.
``timeout``
    The request times out (after ``delay`` seconds) before reaching the store: retried.
``permission``
    Access denied: a final :class:`~marketlake.errors.StoragePermissionError`, never retried.
``abort``
    The client dies mid-upload: a random fraction of the body was sent, then the connection
    broke. Nothing is stored (uploads are atomic on every backend); retried.
``lost_response``
    The store applied the request but the response was lost: the client sees a transient error
    although the object changed. A retried conditional put then meets a
    :class:`~marketlake.errors.ConflictError` (its precondition no longer holds), which the writer
    resolves by re-reading.
``delay``
    The request succeeds after ``delay`` seconds (slow store).

Which fault hits which call is decided per rule by operation (``get``, ``head``, ``put``,
``put_if_absent``, ``put_if_match``, ``delete``, ``list``, or the groups ``read``/``write``/``*``)
and key pattern (:func:`fnmatch.fnmatchcase`), with a probability drawn from a hash of
(seed, rule, operation, key, occurrence): the same plan hits the same calls whatever the thread
interleaving. :class:`FaultPlan` counts calls and injected faults.

>>> plan = FaultPlan([FaultRule("transient", ops=("put_if_match",), probability=0.3)], seed=1)
>>> store = FaultyStore(open_store("memory://"), plan)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from marketlake.errors import ConfigError
from marketlake.storage.store import GetResult, ObjectInfo, ObjectStore, _map_error

T = TypeVar("T")

FaultKind = Literal["transient", "timeout", "permission", "abort", "lost_response", "delay"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
READ_OPS = ("get", "head", "list")
WRITE_OPS = ("put", "put_if_absent", "put_if_match", "delete")
OP_GROUPS: dict[str, tuple[str, ...]] = {
    "read": READ_OPS,
    "write": WRITE_OPS,
    "*": READ_OPS + WRITE_OPS,
}


@dataclass(frozen=True)
class FaultRule:
    """One kind of fault, for some operations and keys.

    Parameters
    ----------
    fault:
        One of :data:`FAULT_KINDS` (see the module docstring).
    ops:
        Operation names or groups (``read``, ``write``, ``*``).
    pattern:
        Keys this rule applies to (shell-style pattern, case-sensitive; ``*`` matches ``/``).
    probability:
        Chance that a matching call is hit (0..1).
    skip:
        Let the first ``skip`` matching calls through untouched.
    limit:
        Inject at most this many faults with this rule (None: no limit).
    delay:
        Seconds: how long a ``delay`` slows a call, a ``timeout`` waits before failing, or an
        ``abort`` spends sending (scaled by the fraction sent).
    """

    fault: FaultKind
    ops: tuple[str, ...] = ("*",)
    pattern: str = "*"
    probability: float = 1.0
    skip: int = 0
    limit: int | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.fault not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {self.fault!r}; use one of {list(FAULT_KINDS)}")
        unknown = [op for op in self.ops if op not in OP_GROUPS and op not in OP_GROUPS["*"]]
        if unknown:
            raise ConfigError(
                f"unknown operation(s) {unknown} in fault rule; use {list(OP_GROUPS['*'])} "
                "or read/write/*"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"fault probability {self.probability} is not within 0..1")
        if self.skip < 0 or (self.limit is not None and self.limit < 0) or self.delay < 0:
            raise ConfigError("fault rule skip, limit and delay must not be negative")

    def applies(self, op: str, key: str) -> bool:
        """True when this rule covers operation ``op`` on ``key``."""
        ops = {o for name in self.ops for o in OP_GROUPS.get(name, (name,))}
        return op in ops and fnmatch.fnmatchcase(key, self.pattern)


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault: operation, key and fault kind."""

    op: str
    key: str
    fault: str


class FaultPlan:
    """A seeded list of :class:`FaultRule` (first matching rule that fires wins) with counters.

    Thread-safe. ``enabled`` switches injection off and on (e.g. around a lake's opening).
    """

    def __init__(self, rules: Sequence[FaultRule] = (), *, seed: int = 0) -> None:
        self.rules = list(rules)
        self.seed = seed
        self.enabled = True
        self.calls: Counter[str] = Counter()
        self.bytes_sent_before_abort = 0
        self.events: list[FaultEvent] = []
        self._seen = [0] * len(self.rules)
        self._fired = [0] * len(self.rules)
        self._occurrence: Counter[tuple[int, str, str]] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultPlan({len(self.rules)} rules, seed={self.seed}, injected={len(self.events)})"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inject nothing inside this block."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def injected(self, fault: str | None = None, op: str | None = None) -> int:
        """How many faults were injected (optionally only of kind ``fault`` / on ``op``)."""
        with self._lock:
            return sum(
                1
                for e in self.events
                if (fault is None or e.fault == fault) and (op is None or e.op == op)
            )

    def counts(self) -> Counter[str]:
        """Injected faults by ``"fault:op"``."""
        with self._lock:
            return Counter(f"{e.fault}:{e.op}" for e in self.events)

    def decide(self, op: str, key: str) -> FaultRule | None:
        """Count a call and return the rule whose fault hits it, or None."""
        with self._lock:
            self.calls[op] += 1
            if not self.enabled:
                return None
            for i, rule in enumerate(self.rules):
                if not rule.applies(op, key):
                    continue
                seen = self._seen[i]
                self._seen[i] += 1
                if seen < rule.skip:
                    continue
                if rule.limit is not None and self._fired[i] >= rule.limit:
                    continue
                if rule.probability < 1.0 and self._draw(i, op, key) >= rule.probability:
                    continue
                self._fired[i] += 1
                self.events.append(FaultEvent(op, key, rule.fault))
                return rule
            return None

    def fraction(self, op: str, key: str) -> float:
        """A reproducible fraction in [0, 1) for how much of an aborted upload was sent."""
        with self._lock:
            return self._uniform(-1, op, key, len(self.events))

    def _draw(self, rule: int, op: str, key: str) -> float:
        n = self._occurrence[(rule, op, key)]
        self._occurrence[(rule, op, key)] += 1
        return self._uniform(rule, op, key, n)

    def _uniform(self, rule: int, op: str, key: str, n: int) -> float:
        text = f"{self.seed}|{rule}|{op}|{key}|{n}".encode()
        digest = hashlib.blake2b(text, digest_size=8).digest()
        return int.from_bytes(digest) / 2.0**64


class _Call(threading.local):
    """The public operation the current thread is in (the outermost one)."""

    op: str | None = None
    size: int = 0


class FaultyStore(ObjectStore):
    """An :class:`ObjectStore` that injects the faults of ``plan`` into ``inner``'s operations.

    It shares ``inner``'s connection, locks and staging directory (like
    :meth:`ObjectStore.with_fsync`); use it in place of ``inner``, e.g.
    ``marketlake.open(FaultyStore(open_store(url), plan))``.
    """

    def __init__(self, inner: ObjectStore, plan: FaultPlan) -> None:
        # no super().__init__: this is a view of ``inner``'s state, not a second store
        self.__dict__.update(inner.__dict__)
        self.plan = plan
        self._call = _Call()

    def __repr__(self) -> str:
        return f"FaultyStore({self.url!r}, {self.plan!r})"

    # -- public operations: remember which one runs, then defer to ObjectStore ----------------

    def get(self, key: str) -> GetResult:
        """See :meth:`ObjectStore.get` (faults on ``get``)."""
        return self._op("get", key, 0, lambda: ObjectStore.get(self, key))

    def head(self, key: str) -> ObjectInfo | None:
        """See :meth:`ObjectStore.head` (faults on ``head``)."""
        if self.is_local and self._call.op is None:
            self._direct("head", key)  # ObjectStore does not retry a local stat: inject unretried
        return self._op("head", key, 0, lambda: ObjectStore.head(self, key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """See :meth:`ObjectStore.list` (faults on ``list``, raised when iteration starts)."""
        self._direct("list", prefix)
        yield from ObjectStore.list(self, prefix)

    def put(self, key: str, data: bytes) -> str | None:
        """See :meth:`ObjectStore.put` (faults on ``put``)."""
        return self._op("put", key, len(data), lambda: ObjectStore.put(self, key, data))

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """See :meth:`ObjectStore.put_if_absent` (faults on ``put_if_absent``)."""
        return self._op(
            "put_if_absent", key, len(data), lambda: ObjectStore.put_if_absent(self, key, data)
        )

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str | None:
        """See :meth:`ObjectStore.put_if_match` (faults on ``put_if_match``)."""
        return self._op(
            "put_if_match",
            key,
            len(data),
            lambda: ObjectStore.put_if_match(self, key, data, etag),
        )

    def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete` (faults on ``delete``)."""
        self._op("delete", key, 0, lambda: ObjectStore.delete(self, key))

    # -- injection ----------------------------------------------------------------------------

    def _op(self, op: str, key: str, size: int, fn: Callable[[], T]) -> T:
        call = self._call
        if call.op is not None:  # nested (put_if_match(etag=None) -> put_if_absent): outer counts
            return fn()
        call.op, call.size = op, size
        try:
            return fn()
        finally:
            call.op, call.size = None, 0

    def _retry(self, op: Callable[[], T], key: str) -> T:
        kind, size = self._call.op, self._call.size
        if kind is None:
            return super()._retry(op, key)

        def faulty() -> T:
            rule = self.plan.decide(kind, key)
            return op() if rule is None else self._apply(rule, kind, key, size, op)

        return super()._retry(faulty, key)

    def _direct(self, op: str, key: str) -> None:
        """Inject for an operation ObjectStore does not retry (raise the mapped error)."""
        rule = self.plan.decide(op, key)
        if rule is None:
            return
        try:
            self._apply(rule, op, key, 0, lambda: None)
        except Exception as exc:
            raise _map_error(exc, key, self.url) from exc

    def _apply(self, rule: FaultRule, op: str, key: str, size: int, fn: Callable[[], T]) -> T:
        fault = rule.fault
        if fault == "delay":
            time.sleep(rule.delay)
            return fn()
        if fault == "timeout":
            time.sleep(rule.delay)
            raise TimeoutError(f"injected fault: {op} timed out")
        if fault == "permission":
            raise PermissionError(f"injected fault: access denied for {op}")
        if fault == "abort":
            if op in WRITE_OPS and size:
                frac = self.plan.fraction(op, key)
                sent = int(size * frac)
                with self.plan._lock:
                    self.plan.bytes_sent_before_abort += sent
                time.sleep(rule.delay * frac)
                raise ConnectionResetError(
                    f"injected fault: connection lost after sending {sent} of {size} bytes"
                )
            raise ConnectionResetError(f"injected fault: connection lost during {op}")
        if fault == "lost_response":
            fn()
            raise ConnectionResetError(
                f"injected fault: {op} was applied but the response was lost"
            )
        raise ConnectionResetError(f"injected fault: connection reset during {op}")  # transient
