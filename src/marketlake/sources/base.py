"""The source interface: plan requests -> fetch (all I/O) -> parse (pure).

Modelled on OpenBB's three-stage fetcher. ``fetch`` is the only method that may touch the network
(or any I/O); ``parse`` turns the raw payload into canonical Arrow tables and is a pure function,
so it is tested on recorded payloads. Sources never import :mod:`marketlake.storage`; the ingest
pipeline joins the two.
"""

from __future__ import annotations

import abc
import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import SourceError

if TYPE_CHECKING:
    from marketlake.sources.http import HttpClient

_CLIENT_LOCK = threading.Lock()  # guards the rare first construction of a source's client

#: The inclusive range of a request made from a file: everything the file holds is kept.
FILE_RANGE = (dt.date(1800, 1, 1), dt.date(2999, 12, 31))


@dataclass(frozen=True)
class SourceRequest:
    """One unit of fetching: a ticker, the datasets wanted from it, an inclusive date range.

    ``start`` and ``end`` are inclusive exchange session dates (no time zone).
    """

    ticker: str
    datasets: tuple[str, ...]
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class FilePayload:
    """One payload read from a vendor file by :meth:`Source.read_files` (no network).

    ``origin`` names where it came from (a path, or ``archive.zip:member``). A readable payload
    has a ``request`` (ticker, datasets, :data:`FILE_RANGE`) and the ``raw`` value that
    :meth:`Source.parse` takes; a file that cannot be read or identified has ``request=None``
    and an ``error`` naming the file; a file deliberately passed over (e.g. a bulk-archive
    member whose company has no ticker) has ``request=None``, ``error=None`` and a ``note``.
    """

    origin: str
    request: SourceRequest | None
    raw: Any = None
    error: str | None = None
    note: str | None = None

    @classmethod
    def failed(cls, origin: str, error: str) -> FilePayload:
        """A file that cannot be imported; ``error`` is prefixed with ``origin`` if needed."""
        text = error if error.startswith(origin) else f"{origin}: {error}"
        return cls(origin, None, error=text)

    @classmethod
    def skipped(cls, origin: str, note: str) -> FilePayload:
        """A file passed over on purpose (not an error)."""
        return cls(origin, None, note=note)


class Source(abc.ABC):
    """Base class for every data source.

    Subclasses set ``name``, ``datasets`` (the datasets they can fill), ``description`` and
    ``settings`` (environment variables they need, empty when none) and implement the three stages.
    """

    name: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    settings: ClassVar[tuple[str, ...]] = ()
    #: the HTTP client of a network source; passed to its constructor or built on first use
    _client: HttpClient | None = None
    #: True when ``fetch`` waits on the network: the batch then keeps many threads per process
    #: to overlap latency. False (offline/CPU-bound sources): a couple of threads per core.
    network: ClassVar[bool] = False

    @property
    def client(self) -> HttpClient:
        """The HTTP client (network sources): the one given, else built once by
        :meth:`_make_client` on first use (thread-safe)."""
        if self._client is None:
            with _CLIENT_LOCK:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> HttpClient:
        """Build this source's client (override to set rate limits or a user agent)."""
        from marketlake.sources.http import HttpClient

        return HttpClient()

    def plan(
        self, tickers: list[str], datasets: list[str], start: dt.date, end: dt.date
    ) -> list[SourceRequest]:
        """Split the work into requests. Default: one request per ticker for all datasets."""
        wanted = tuple(d for d in datasets if d in self.datasets)
        return [SourceRequest(t, wanted, start, end) for t in tickers] if wanted else []

    @abc.abstractmethod
    def fetch(self, request: SourceRequest) -> Any:
        """Do the I/O for ``request`` and return the raw payload (bytes, JSON, arrays...)."""

    @abc.abstractmethod
    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Pure: turn ``raw`` into one canonical Arrow table per dataset of ``request``.

        Tables carry exactly the dataset's canonical columns; rows outside
        ``[request.start, request.end]`` are dropped. A dataset with no rows is left out of
        the result (never an empty table written as data).
        """

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Optional hook: turn vendor files into payloads for :meth:`parse`, without network.

        ``paths`` are existing files (plain, gzip-compressed, or zip archives; directories are
        expanded by the caller). Implementations yield one :class:`FilePayload` per payload,
        lazily, and never raise for one bad file: they yield :meth:`FilePayload.failed`.

        Raises
        ------
        SourceError
            Always, in this default: the source cannot import files.
        """
        raise SourceError(
            f"source {self.name!r} cannot import files (it has no file reader; see "
            "'marketlake import --help' for the sources that do)",
            source=self.name,
        )

    def get(self, request: SourceRequest) -> dict[str, pa.Table]:
        """Convenience: ``parse(request, fetch(request))``."""
        return self.parse(request, self.fetch(request))
