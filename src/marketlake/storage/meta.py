"""Per-(dataset, ticker) metadata objects: ``_meta/v1/{dataset}/{TICKER}.json``.

Written after the data objects they describe (commit order: data -> ``_meta`` -> catalog). They
list every partition with its row count, date range, size, SHA-256 and ETag, so readers know
which keys exist without LIST and the catalog can be rebuilt from the store alone. Serialisation
is deterministic (sorted keys, fixed separators): unchanged metadata is never rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from marketlake.errors import CorruptObjectError, FormatVersionError

META_VERSION = 1
META_PREFIX = "_meta/v1"


def meta_key(dataset: str, ticker: str) -> str:
    """Key of the metadata object for ``dataset``/``ticker`` (ticker already normalised)."""
    return f"{META_PREFIX}/{dataset}/{ticker}.json"


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    """One partition object: its period label, key, rows, inclusive date range, size and hashes.

    ``updated_at`` is the UTC time (ISO 8601, ``Z``) the partition's content last changed.
    """

    period: str
    key: str
    rows: int
    min_date: dt.date
    max_date: dt.date
    bytes: int
    sha256: str
    etag: str | None
    updated_at: str
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": self.rows,
            "min_date": self.min_date.isoformat(),
            "max_date": self.max_date.isoformat(),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "etag": self.etag,
            "updated_at": self.updated_at,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, period: str, obj: dict[str, Any]) -> PartitionMeta:
        return cls(
            period=period,
            key=str(obj["key"]),
            rows=int(obj["rows"]),
            min_date=dt.date.fromisoformat(obj["min_date"]),
            max_date=dt.date.fromisoformat(obj["max_date"]),
            bytes=int(obj["bytes"]),
            sha256=str(obj["sha256"]),
            etag=obj.get("etag"),
            updated_at=str(obj["updated_at"]),
            source=obj.get("source"),
        )

    def same_content(self, other: PartitionMeta | None) -> bool:
        """True when ``other`` describes the same bytes at the same key."""
        return other is not None and (self.key, self.sha256, self.rows) == (
            other.key,
            other.sha256,
            other.rows,
        )


@dataclass(frozen=True)
class TickerMeta:
    """Everything the lake knows about one (dataset, ticker) without reading its data."""

    dataset: str
    ticker: str
    last_updated_at: str
    partitions: dict[str, PartitionMeta] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        """Total rows over all partitions."""
        return sum(p.rows for p in self.partitions.values())

    @property
    def min_date(self) -> dt.date | None:
        """Earliest date held (inclusive), or None when empty."""
        return min((p.min_date for p in self.partitions.values()), default=None)

    @property
    def max_date(self) -> dt.date | None:
        """Latest date held (inclusive), or None when empty."""
        return max((p.max_date for p in self.partitions.values()), default=None)

    @property
    def months_present(self) -> list[str]:
        """``YYYY-MM`` labels of months that hold at least one row (from partition ranges)."""
        months: set[str] = set()
        for p in self.partitions.values():
            y, m = p.min_date.year, p.min_date.month
            while (y, m) <= (p.max_date.year, p.max_date.month):
                months.add(f"{y:04d}-{m:02d}")
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return sorted(months)

    def to_bytes(self) -> bytes:
        """Deterministic JSON encoding."""
        body = {
            "meta_version": META_VERSION,
            "dataset": self.dataset,
            "ticker": self.ticker,
            "last_updated_at": self.last_updated_at,
            "min_date": self.min_date.isoformat() if self.min_date else None,
            "max_date": self.max_date.isoformat() if self.max_date else None,
            "row_count": self.row_count,
            "months_present": self.months_present,
            "partitions": {k: self.partitions[k].to_json() for k in sorted(self.partitions)},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, *, key: str = "?") -> TickerMeta:
        """Decode; raises :class:`CorruptObjectError` naming the key on any problem."""
        try:
            obj = json.loads(data)
            if int(obj.get("meta_version", 0)) > META_VERSION:  # never "repaired" by an old writer
                raise FormatVersionError(
                    f"metadata object {key} has meta_version {obj['meta_version']}, newer than "
                    f"this marketlake understands ({META_VERSION}): upgrade marketlake",
                    key=key,
                )
            parts = {
                period: PartitionMeta.from_json(period, p)
                for period, p in dict(obj["partitions"]).items()
            }
            return cls(
                dataset=str(obj["dataset"]),
                ticker=str(obj["ticker"]),
                last_updated_at=str(obj["last_updated_at"]),
                partitions=parts,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptObjectError(
                f"metadata object {key} is corrupt ({exc}); the data objects are intact: "
                "'marketlake repair-meta TICKER --dataset NAME' (or any new write for that "
                "ticker) rebuilds it from them",
                key=key,
            ) from exc
