"""Check incoming rows against a dataset's canonical schema and return a canonical Arrow table.

Pure: no I/O. Accepts a :class:`pyarrow.Table`, a pandas ``DataFrame`` (a ``DatetimeIndex`` or
index named like the time column is used as that column) or a Polars ``DataFrame``.

The contract is "frozen" (dlt terminology): unknown columns, missing key or non-nullable columns,
lossy casts (float -> integer volume), time-zone-aware timestamps for a session date, NaN or
infinity in any float column (use null for "missing"), negative values in non-negative columns,
duplicate keys within one batch and dates outside 1900-01-01..2100-12-31 raise
:class:`~marketlake.errors.SchemaError` or :class:`~marketlake.errors.DataValidationError`, whose
message names the dataset, ticker, column and the first offending key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketlake.errors import DataValidationError, SchemaError
from marketlake.schemas.datasets import Dataset

MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2100, 12, 31)


def to_arrow(data: Any, dataset: Dataset) -> pa.Table:
    """Convert a pandas/Polars DataFrame, RecordBatch or Table to an Arrow table (no checks)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        table: pa.Table = data.to_arrow()
        return table
    if module == "pandas":
        frame = data
        if dataset.time_column not in frame.columns and (
            frame.index.name == dataset.time_column or _is_datetime_index(frame.index)
        ):
            frame = frame.rename_axis(dataset.time_column).reset_index()
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(
                f"{dataset.name}: cannot convert the DataFrame to Arrow ({exc})",
                dataset=dataset.name,
            ) from exc
    raise SchemaError(
        f"{dataset.name}: expected a pyarrow Table, pandas or Polars DataFrame, "
        f"got {type(data).__name__}",
        dataset=dataset.name,
    )


def _is_datetime_index(index: Any) -> bool:
    return str(getattr(index, "dtype", "")).startswith("datetime64")


def conform(data: Any, dataset: Dataset, ticker: str = "?") -> pa.Table:
    """Return ``data`` as a table with exactly ``dataset.schema`` or raise a clear error.

    Parameters
    ----------
    data:
        Rows for one ticker of ``dataset`` (see module docstring for accepted types).
    dataset:
        The target dataset declaration.
    ticker:
        Used in error messages only.

    Raises
    ------
    SchemaError
        Unknown/missing columns or types that cannot be converted without loss.
    DataValidationError
        Nulls in non-nullable columns, NaN/inf, negative values, duplicate keys, dates out of range.
    """
    where = f"{dataset.name}/{ticker}"
    table = to_arrow(data, dataset)
    names = table.column_names
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SchemaError(f"{where}: duplicate column names {dupes}", dataset=dataset.name)
    unknown = [n for n in names if n not in dataset.schema.names]
    if unknown:
        raise SchemaError(
            f"{where}: unknown column(s) {unknown}; {dataset.name} has columns "
            f"{dataset.schema.names}",
            dataset=dataset.name,
            ticker=ticker,
            column=unknown[0],
        )
    columns = []
    for target in dataset.schema:
        if target.name not in names:
            if target.name in dataset.key or not target.nullable:
                kind = "key column" if target.name in dataset.key else "required column"
                raise SchemaError(
                    f"{where}: missing {kind} {target.name!r} ({target.type})",
                    dataset=dataset.name,
                    ticker=ticker,
                    column=target.name,
                )
            columns.append(pa.nulls(table.num_rows, target.type))
            continue
        columns.append(_cast(table.column(target.name), target, where, dataset, ticker))
    out = pa.Table.from_arrays(columns, schema=dataset.schema)
    _check_values(out, dataset, where, ticker)
    return out


def _cast(
    column: pa.ChunkedArray, target: pa.Field, where: str, dataset: Dataset, ticker: str
) -> pa.ChunkedArray:
    src = column.type
    ctx = {"dataset": dataset.name, "ticker": ticker, "column": target.name}
    if src == target.type:
        return column
    if pa.types.is_null(src):
        return pa.chunked_array([pa.nulls(len(column), target.type)])
    tt = target.type
    if pa.types.is_date32(tt):
        if pa.types.is_date(src):
            return column.cast(tt)
        if pa.types.is_timestamp(src):
            if src.tz is not None:
                raise SchemaError(
                    f"{where}: column {target.name!r} is a time-zone-aware timestamp ({src}); "
                    "it must be the exchange session date: convert with .dt.date (pandas) or "
                    ".dt.date() (Polars) in the exchange's time zone first",
                    **ctx,
                )
            midnight = pc.cast(column, pa.date32()).cast(src)
            if not pc.all(pc.equal(column, midnight)).as_py() and column.null_count < len(column):
                raise SchemaError(
                    f"{where}: column {target.name!r} holds timestamps with a time of day; "
                    "daily rows need a session date (no time)",
                    **ctx,
                )
            return column.cast(tt)
        if pa.types.is_string(src) or pa.types.is_large_string(src):
            try:
                return column.cast(tt)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{where}: column {target.name!r} has text that is not a YYYY-MM-DD date "
                    f"({exc})",
                    **ctx,
                ) from exc
    elif pa.types.is_timestamp(tt):
        if pa.types.is_timestamp(src):
            if src.tz is None:
                raise SchemaError(
                    f"{where}: column {target.name!r} holds time-zone-naive timestamps; bar times "
                    "are instants: localize them first (e.g. .dt.tz_localize('America/New_York') "
                    "in pandas, or 'UTC' if they already are UTC)",
                    **ctx,
                )
            try:
                return column.cast(tt)  # same instant in UTC; refuses to drop sub-unit precision
            except pa.ArrowInvalid as exc:
                raise SchemaError(
                    f"{where}: column {target.name!r} cannot be stored as {tt} without loss "
                    f"({exc})",
                    **ctx,
                ) from exc
    elif pa.types.is_string(tt):
        if pa.types.is_large_string(src) or pa.types.is_string_view(src):
            return column.cast(tt)  # pandas 3 / Polars text: same values, canonical type
    elif pa.types.is_floating(tt):
        if pa.types.is_floating(src) or pa.types.is_integer(src) or pa.types.is_decimal(src):
            return column.cast(tt)
    elif pa.types.is_integer(tt):
        if pa.types.is_integer(src):
            try:
                return column.cast(tt)  # safe cast: overflow raises
            except pa.ArrowInvalid as exc:
                raise DataValidationError(
                    f"{where}: column {target.name!r} has values that do not fit {tt} ({exc})",
                    **ctx,
                ) from exc
        if pa.types.is_floating(src):
            raise SchemaError(
                f"{where}: column {target.name!r} must be an integer ({tt}), got {src}; "
                "convert it explicitly (e.g. .round().astype('int64')) after checking for "
                "fractional values",
                **ctx,
            )
    raise SchemaError(f"{where}: column {target.name!r} has type {src}, expected {tt}", **ctx)


def _first_key(table: pa.Table, mask: pa.ChunkedArray | pa.Array, dataset: Dataset) -> str:
    idx = pc.index(mask, True).as_py()
    if idx is None or idx < 0:
        return "?"
    row = table.slice(idx, 1).to_pylist()[0]
    return ", ".join(f"{k}={row[k]}" for k in dataset.key)


def _null_free_values(col: pa.ChunkedArray) -> np.ndarray | None:
    """NumPy values of a null-free single-chunk column, else None (use the Arrow path)."""
    if col.null_count or col.num_chunks != 1:
        return None
    values: np.ndarray = col.chunk(0).to_numpy(zero_copy_only=False)
    return values


def _check_values(table: pa.Table, dataset: Dataset, where: str, ticker: str) -> None:
    # Fast checks first (NumPy on null-free columns, one Arrow kernel otherwise); the offending
    # key is located only on failure. The daily batch runs this on every item, so it is lean.
    for f in dataset.schema:
        col = table.column(f.name)
        ctx = {"dataset": dataset.name, "ticker": ticker, "column": f.name}
        if not f.nullable and col.null_count:
            mask = pc.is_null(col)
            raise DataValidationError(
                f"{where}: column {f.name!r} has {col.null_count} null value(s) but is required "
                f"(first at {_first_key(table, mask, dataset)})",
                **ctx,
            )
        if col.null_count == len(col):
            continue
        floating = pa.types.is_floating(f.type)
        non_negative = f.name in dataset.non_negative
        if not floating and not non_negative:
            continue
        values = _null_free_values(col)
        if floating:
            ok = bool(np.isfinite(values).all()) if values is not None else None
            if not ok and (ok is False or not pc.all(pc.is_finite(col)).as_py()):
                bad = pc.fill_null(pc.invert(pc.is_finite(col)), False)
                if pc.any(bad).as_py():
                    raise DataValidationError(
                        f"{where}: column {f.name!r} contains NaN or infinity "
                        f"(first at {_first_key(table, bad, dataset)}); use null for missing "
                        "values",
                        **ctx,
                    )
        if non_negative:
            smallest = values.min() if values is not None else pc.min(col).as_py()
            if smallest < 0:
                neg = pc.fill_null(pc.less(col, 0), False)
                raise DataValidationError(
                    f"{where}: column {f.name!r} has negative values "
                    f"(first at {_first_key(table, neg, dataset)}); it must be >= 0",
                    **ctx,
                )
    tcol = table.column(dataset.time_column)
    tvalues = _null_free_values(tcol)
    in_range = (
        tvalues is not None
        and tvalues.dtype.kind == "M"
        and len(tvalues) > 0
        and tvalues.min() >= np.datetime64(MIN_DATE)
        and tvalues.max() < np.datetime64(MAX_DATE + dt.timedelta(days=1))
    )
    if len(tcol) and not in_range:
        bounds = pc.min_max(tcol)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        lo_d = lo.date() if isinstance(lo, dt.datetime) else lo
        hi_d = hi.date() if isinstance(hi, dt.datetime) else hi
        if lo_d < MIN_DATE or hi_d > MAX_DATE:
            bad_date = lo_d if lo_d < MIN_DATE else hi_d
            raise DataValidationError(
                f"{where}: {dataset.time_column} {bad_date} is out of range "
                f"({MIN_DATE}..{MAX_DATE})",
                dataset=dataset.name,
                ticker=ticker,
                column=dataset.time_column,
            )
    if table.num_rows > 1:
        keys = table.select(list(dataset.key))
        if (
            len(dataset.key) == 1
            and tvalues is not None
            and in_range
            and bool((tvalues[1:] > tvalues[:-1]).all())
        ):
            distinct = table.num_rows  # strictly increasing (the usual case): no duplicates
        elif len(dataset.key) == 1:
            distinct = len(pc.unique(keys.column(0)))
        else:
            distinct = keys.group_by(list(dataset.key)).aggregate([]).num_rows
        if distinct != table.num_rows:
            counts = keys.group_by(list(dataset.key)).aggregate([([], "count_all")])
            dup = counts.filter(pc.greater(counts.column("count_all"), 1)).slice(0, 1).to_pylist()
            example = ", ".join(f"{k}={dup[0][k]}" for k in dataset.key) if dup else "?"
            raise DataValidationError(
                f"{where}: {table.num_rows - distinct} duplicate key(s) in one batch "
                f"(e.g. {example}); each {'/'.join(dataset.key)} may appear once",
                dataset=dataset.name,
                ticker=ticker,
            )
