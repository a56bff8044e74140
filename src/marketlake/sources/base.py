"""The source interface: plan requests -> fetch (all I/O) -> parse (pure).

Modelled on OpenBB's three-stage fetcher. ``fetch`` is the only method that may touch the network
(or any I/O); ``parse`` turns the raw payload into canonical Arrow tables and is a pure function,
so it is tested on recorded payloads. Sources never import :mod:`marketlake.storage`; the ingest
pipeline joins the two.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class SourceRequest:
    """One unit of fetching: a ticker, the datasets wanted from it, an inclusive date range.

    ``start`` and ``end`` are inclusive exchange session dates (no time zone).
    """

    ticker: str
    datasets: tuple[str, ...]
    start: dt.date
    end: dt.date


class Source(abc.ABC):
    """Base class for every data source.

    Subclasses set ``name``, ``datasets`` (the datasets they can fill), ``description`` and
    ``settings`` (environment variables they need, empty when none) and implement the three stages.
    """

    name: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    settings: ClassVar[tuple[str, ...]] = ()
    #: True when ``fetch`` waits on the network: the batch then keeps many threads per process
    #: to overlap latency. False (offline/CPU-bound sources): a couple of threads per core.
    network: ClassVar[bool] = False

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

    def get(self, request: SourceRequest) -> dict[str, pa.Table]:
        """Convenience: ``parse(request, fetch(request))``."""
        return self.parse(request, self.fetch(request))
