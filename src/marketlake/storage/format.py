"""The ``_marketlake.json`` marker at the lake root: storage format version and layouts.

Written once when a lake is created (create-if-absent, so two processes creating the same lake
agree). Opening a lake whose format version is newer than this code raises
:class:`~marketlake.errors.FormatVersionError`. The marker is the source of truth for each
dataset's key layout: a lake written with yearly files keeps being read with yearly files.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from marketlake.errors import ConflictError, CorruptObjectError, FormatVersionError
from marketlake.storage.layout import Layout
from marketlake.storage.store import ObjectStore

MARKER_KEY = "_marketlake.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LakeMarker:
    """Decoded marker: format version, creation time and per-dataset layout templates."""

    format_version: int
    created_at: str
    layouts: dict[str, str]

    def to_bytes(self) -> bytes:
        body = {
            "format": "marketlake",
            "format_version": self.format_version,
            "created_at": self.created_at,
            "layouts": dict(sorted(self.layouts.items())),
        }
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> LakeMarker:
        try:
            obj: dict[str, Any] = json.loads(data)
            if obj.get("format") != "marketlake":
                raise ValueError("not a marketlake marker")
            return cls(
                format_version=int(obj["format_version"]),
                created_at=str(obj["created_at"]),
                layouts={str(k): str(v) for k, v in dict(obj.get("layouts", {})).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObjectError(
                f"{MARKER_KEY} is corrupt ({exc}); it should be a JSON object with "
                "'format': 'marketlake' and a 'format_version'",
                key=MARKER_KEY,
            ) from exc


def ensure_marker(store: ObjectStore, default_layouts: dict[str, str]) -> LakeMarker:
    """Read the marker, creating it with ``default_layouts`` for a new lake.

    Layouts present in the marker win; datasets registered since the lake was created get their
    default layout added to the marker. Every template is validated.
    """
    for template in default_layouts.values():
        Layout.parse(template)
    got = store.get_or_none(MARKER_KEY)
    if got is None:
        marker = LakeMarker(
            FORMAT_VERSION,
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            dict(default_layouts),
        )
        try:
            store.put_if_absent(MARKER_KEY, marker.to_bytes())
            return marker
        except ConflictError:
            got = store.get(MARKER_KEY)
    marker = LakeMarker.from_bytes(got.data)
    if marker.format_version > FORMAT_VERSION:
        raise FormatVersionError(
            f"lake {store.url} uses storage format {marker.format_version}, but this marketlake "
            f"understands up to {FORMAT_VERSION}: upgrade marketlake (pip install -U marketlake)",
            url=store.url,
        )
    for template in marker.layouts.values():
        Layout.parse(template)
    missing = {k: v for k, v in default_layouts.items() if k not in marker.layouts}
    if missing:
        marker = LakeMarker(marker.format_version, marker.created_at, {**marker.layouts, **missing})
        try:
            store.put_if_match(MARKER_KEY, marker.to_bytes(), got.etag)
        except ConflictError:
            return ensure_marker(store, default_layouts)
    return marker
