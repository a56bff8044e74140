"""Streaming exports of a dataset to CSV or Parquet.

:func:`export` reads the tickers in chunks (:meth:`~marketlake.query.lake.Lake.read_batch`,
``chunk_tickers`` at a time, concurrently within a chunk) and appends each chunk to one pyarrow
CSV writer or Parquet writer, so a universe-wide export holds one chunk in memory, never the
whole dataset. The file is written under a temporary name in the target's directory and renamed
into place when complete: an interrupted or failed export leaves nothing behind (and an older
file at the target stays as it was).

The rows are the tidy long format of ``read_batch``: ``ticker`` first, then the dataset's columns,
sorted by ticker (in the order given) then time. ``prices`` are raw (unadjusted) unless
``adjust`` says otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from marketlake.errors import InvalidTickerError, MarketlakeError
from marketlake.schemas.tickers import normalize_ticker

if TYPE_CHECKING:
    from marketlake.derive.adjust import AdjustMode
    from marketlake.query.lake import Lake

ExportFormat = Literal["csv", "parquet"]
#: ``progress(tickers_done, tickers_total)`` after each chunk.
ProgressFn = Callable[[int, int], None]


@dataclass
class ExportResult:
    """What :func:`export` wrote.

    ``rows`` rows for ``tickers`` tickers (those with at least one row) to ``path``
    (``bytes`` long); ``missing`` lists tickers with no rows in the range; ``errors`` maps a
    ticker to the error that stopped it (invalid symbol, corrupt object: the export goes on
    without it)."""

    path: Path
    format: ExportFormat
    rows: int = 0
    tickers: int = 0
    missing: list[str] = field(default_factory=list)
    errors: dict[str, MarketlakeError] = field(default_factory=dict)
    bytes: int = 0
    chunks: int = 0


def export(
    lake: Lake,
    tickers: Iterable[str] | None,
    dataset: str,
    path: str | os.PathLike[str],
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    columns: Sequence[str] | None = None,
    format: ExportFormat = "csv",
    adjust: AdjustMode = "none",
    chunk_tickers: int = 100,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Export ``dataset`` rows of ``tickers`` between ``start`` and ``end`` (inclusive) to a
    local CSV or Parquet file, streaming chunk by chunk.

    Parameters
    ----------
    lake:
        An open lake (local or remote; the file is always local).
    tickers:
        Symbols (normalised; duplicates read once). None: every ticker the catalog lists for
        ``dataset``.
    dataset:
        Dataset name, e.g. ``"prices"``.
    path:
        Target file; its directory must exist. Replaced atomically when the export completes.
    start, end:
        Inclusive dates (``date`` or ``"YYYY-MM-DD"``); None: from the first / to the last row.
    columns:
        Columns to export (the time column always comes first); None: all.
    format:
        ``"csv"`` (header row; dates ``YYYY-MM-DD``, timestamps ISO 8601 in UTC, empty = null)
        or ``"parquet"`` (zstd; the lake's Arrow types).
    adjust:
        ``prices`` only: ``"none"`` (raw, the default), ``"splits"`` or ``"total"``; see
        :meth:`~marketlake.query.lake.Lake.read`.
    chunk_tickers:
        Tickers read per chunk: the memory bound (a chunk's rows are held at once).
    progress:
        Called as ``progress(done, total)`` after each chunk.

    Returns
    -------
    ExportResult
        Counts (rows, tickers, missing, errors) and the file's size.

    Raises
    ------
    MarketlakeError
        Unknown dataset, column or format, a bad ``adjust``, a target whose directory does not
        exist; nothing is written. Per-ticker read errors do not raise (see ``errors``).
    """
    if format not in ("csv", "parquet"):
        raise MarketlakeError(f"format={format!r} is not one of 'csv', 'parquet'")
    if chunk_tickers < 1:
        raise MarketlakeError(f"chunk_tickers={chunk_tickers} must be at least 1")
    target = Path(path)
    if target.is_dir():
        raise MarketlakeError(f"export target {target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise MarketlakeError(
            f"cannot export to {target}: directory {target.parent} does not exist"
        )
    # validates dataset, columns, dates and adjust before any file exists; gives the schema
    probe = lake.read_batch(
        [], dataset, start, end, columns=columns, output="arrow", adjust=adjust
    ).data
    schema: pa.Schema = probe.schema.remove_metadata()
    result = ExportResult(path=target, format=format)
    symbols = _symbols(lake, tickers, dataset, result)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    writer = _open_writer(format, tmp, schema)
    try:
        done = 0
        for i in range(0, len(symbols), chunk_tickers):
            chunk = symbols[i : i + chunk_tickers]
            res = lake.read_batch(
                chunk, dataset, start, end, columns=columns, output="arrow", adjust=adjust
            )
            table: pa.Table = res.data
            if table.num_rows:
                writer.write_table(_conform(table, schema))
                result.rows += table.num_rows
                result.tickers += len(chunk) - len(res.missing) - len(res.errors)
            result.missing.extend(res.missing)
            result.errors.update(res.errors)
            result.chunks += 1
            done += len(chunk)
            if progress is not None:
                progress(done, len(symbols))
        writer.close()
        _fsync(tmp)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    result.bytes = target.stat().st_size
    return result


def _symbols(
    lake: Lake, tickers: Iterable[str] | None, dataset: str, result: ExportResult
) -> list[str]:
    """Normalised, de-duplicated symbols in the given order (invalid ones go to errors)."""
    if tickers is None:
        return lake.tickers(dataset)
    if isinstance(tickers, str):
        tickers = [tickers]
    out: dict[str, None] = {}
    for raw in tickers:
        try:
            out.setdefault(normalize_ticker(raw), None)
        except InvalidTickerError as exc:
            result.errors[str(raw)] = exc
    return list(out)


def _open_writer(format: ExportFormat, tmp: Path, schema: pa.Schema) -> Any:
    try:
        if format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(tmp, schema, compression="zstd")
        import pyarrow.csv as pacsv

        return pacsv.CSVWriter(str(tmp), schema)
    except OSError as exc:
        raise MarketlakeError(f"cannot write {tmp.parent}: {exc.strerror or exc}") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The chunk with exactly the writer's schema (nullability and metadata may differ
    between chunks; names and types do not)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise MarketlakeError(f"cannot export a chunk: its columns do not fit: {exc}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
