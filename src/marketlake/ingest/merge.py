"""Pure merge of new rows into a partition: dedupe on the key (new wins), sort ascending.

No I/O. Both inputs must already have the dataset's canonical schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged table and what the merge did: rows new to the partition, rows whose values
    changed (same key, different values) and rows that were identical to what was stored."""

    table: pa.Table
    added: int
    updated: int
    unchanged: int


def _key_array(table: pa.Table, key: tuple[str, ...]) -> pa.Array:
    if len(key) == 1:
        return table.column(key[0]).combine_chunks()
    # composite keys: one string per row ("is_in" has no kernel for structs)
    parts = [pc.cast(table.column(k), pa.string()).combine_chunks() for k in key]
    joined: pa.Array = pc.binary_join_element_wise(*parts, "\x1f")
    return joined


def sort_by_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Sort ascending by the key columns (stable)."""
    if table.num_rows <= 1:
        return table
    return table.take(pc.sort_indices(table, [(k, "ascending") for k in key]))


def merge_rows(existing: pa.Table | None, new: pa.Table, key: tuple[str, ...]) -> MergeResult:
    """Merge ``new`` into ``existing`` (which must be sorted by ``key``, as stored partitions are).

    Rows of ``existing`` whose key appears in ``new`` are replaced by the new row; the result is
    sorted ascending by ``key``. ``new`` must not contain duplicate keys (checked upstream).
    """
    if existing is None or existing.num_rows == 0:
        return MergeResult(sort_by_key(new, key), new.num_rows, 0, 0)
    if new.num_rows == 0:
        return MergeResult(existing, 0, 0, 0)
    if len(key) == 1:
        old_max = existing.column(key[0])[-1]  # existing partitions are stored sorted
        new_min = pc.min(new.column(key[0]))
        if old_max.as_py() < new_min.as_py():  # pure append: the daily case
            return MergeResult(
                pa.concat_tables([existing, sort_by_key(new, key)]), new.num_rows, 0, 0
            )
    old_keys = _key_array(existing, key)
    new_keys = _key_array(new, key)
    overlap_old = pc.is_in(old_keys, value_set=new_keys)
    n_overlap = int(pc.sum(overlap_old).as_py() or 0)
    if n_overlap == new.num_rows and existing.filter(overlap_old).equals(sort_by_key(new, key)):
        return MergeResult(existing, 0, 0, n_overlap)  # a re-run: every new row is already stored
    kept = existing.filter(pc.invert(overlap_old)) if n_overlap else existing
    merged = sort_by_key(pa.concat_tables([kept, new]), key)
    if n_overlap == 0:
        return MergeResult(merged, new.num_rows, 0, 0)
    old_rows = sort_by_key(existing.filter(overlap_old), key)
    new_rows = sort_by_key(new.filter(pc.is_in(new_keys, value_set=old_keys)), key)
    changed = _changed_mask(old_rows, new_rows)
    updated = int(pc.sum(changed).as_py() or 0)
    return MergeResult(merged, new.num_rows - n_overlap, updated, n_overlap - updated)


def _changed_mask(a: pa.Table, b: pa.Table) -> pa.Array:
    """Row-wise "differs" between two aligned tables; nulls equal nulls."""
    mask = pa.array([False] * a.num_rows)
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        eq = pc.fill_null(pc.equal(x, y), False)
        both_null = pc.and_(pc.is_null(x), pc.is_null(y))
        mask = pc.or_(mask, pc.invert(pc.or_(eq, both_null)))
    return mask
