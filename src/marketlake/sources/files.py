"""Reading vendor files for ``marketlake import``: JSON, gzip-compressed JSON, zip archives.

Everything here is local file I/O used by the :meth:`~marketlake.sources.base.Source.read_files`
hooks; there is no network. Gzip is recognised by its magic bytes (whatever the file is called),
zip archives by their directory, and zip members are read one at a time, so a multi-gigabyte
bulk archive (SEC's nightly ``companyfacts.zip``) never sits in memory whole.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketlake.errors import SourceError

__all__ = [
    "Document",
    "count_documents",
    "expand_paths",
    "iter_documents",
    "load_json",
    "read_file",
    "read_member",
]

_GZIP_MAGIC = b"\x1f\x8b"
_SUFFIXES = (".json", ".json.gz", ".gz", ".zip", ".csv", ".txt")


@dataclass(frozen=True)
class Document:
    """One file (or zip member) read into memory, or the reason it could not be read.

    ``origin`` is the path, or ``archive.zip:member``; ``name`` is the base file name without a
    ``.gz`` suffix (``CIK0000717423.json``); ``archive``/``member`` locate a zip member so it can
    be read again with :func:`read_member`.
    """

    origin: str
    name: str
    data: bytes | None
    error: str | None = None
    archive: Path | None = None
    member: str | None = None


def expand_paths(paths: Sequence[Path | str]) -> list[Path]:
    """Check that every path exists and expand directories (their ``*.json``, ``*.json.gz``,
    ``*.gz``, ``*.zip``, ``*.csv`` and ``*.txt`` files — vendor JSON, constituent CSVs, NASDAQ
    Trader symbol files — recursively, sorted; hidden files skipped).

    Raises
    ------
    SourceError
        A path does not exist, or nothing was given.
    """
    if not paths:
        raise SourceError("no files to import: give one or more files, directories or zips")
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise SourceError(f"no such file or directory: {path}")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.name.lower().endswith(_SUFFIXES)
            )
            if not found:
                raise SourceError(
                    f"directory {path} holds no .json, .json.gz, .zip, .csv or .txt files"
                )
            out.extend(found)
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def _gunzip(data: bytes, origin: str) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{origin}: corrupt gzip data ({exc})") from None


def _plain_name(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base[:-3] if base.lower().endswith(".gz") else base


def read_file(path: Path) -> bytes:
    """The (gunzipped) bytes of one file.

    Raises
    ------
    SourceError
        The file cannot be read or its gzip data is corrupt.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    return _gunzip(data, str(path))


def read_member(archive: Path, member: str) -> bytes:
    """The (gunzipped) bytes of one zip member.

    Raises
    ------
    SourceError
        The archive or member cannot be read.
    """
    origin = f"{archive}:{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    except (OSError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise SourceError(f"{origin}: cannot read the zip member ({exc})") from None
    return _gunzip(data, origin)


def iter_documents(paths: Sequence[Path]) -> Iterator[Document]:
    """Yield the files of ``paths`` one by one (zip members lazily, gzip transparently).

    Never raises for one unreadable file: its :class:`Document` carries the error instead.
    """
    for path in paths:
        origin = str(path)
        try:
            is_zip = zipfile.is_zipfile(path)
        except OSError as exc:
            yield Document(origin, path.name, None, f"{origin}: cannot read ({exc.strerror})")
            continue
        if is_zip:
            yield from _zip_documents(path)
            continue
        try:
            data = read_file(path)
        except SourceError as exc:
            yield Document(origin, path.name, None, str(exc))
            continue
        yield Document(origin, _plain_name(path.name), data)


def _zip_documents(path: Path) -> Iterator[Document]:
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        yield Document(str(path), path.name, None, f"{path}: not a readable zip archive ({exc})")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.rsplit("/", 1)[-1].startswith("."):
                continue
            origin = f"{path}:{info.filename}"
            name = _plain_name(info.filename)
            try:
                data = _gunzip(zf.read(info), origin)
            except SourceError as exc:
                yield Document(origin, name, None, str(exc), path, info.filename)
                continue
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                yield Document(
                    origin, name, None, f"{origin}: corrupt zip member ({exc})", path, info.filename
                )
                continue
            yield Document(origin, name, data, None, path, info.filename)


def load_json(data: bytes, origin: str) -> Any:
    """Decode a JSON document.

    Raises
    ------
    SourceError
        Naming ``origin``, with the position of the first error.
    """
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise SourceError(f"{origin}: not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def count_documents(paths: Sequence[Path]) -> int:
    """How many documents :func:`iter_documents` will yield (zip directories read, not members)."""
    n = 0
    for path in paths:
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zf:
                    n += sum(
                        1
                        for i in zf.infolist()
                        if not i.is_dir() and not i.filename.rsplit("/", 1)[-1].startswith(".")
                    )
                continue
        except (OSError, zipfile.BadZipFile):
            pass
        n += 1
    return n
