"""Property tests for the pure merge: idempotent, order-independent for disjoint keys, dedupe."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake.ingest.merge import merge_rows
from marketlake.schemas.datasets import PRICES
from marketlake.storage.parquet import encode_table

KEY = PRICES.key
BASE = dt.date(2024, 1, 1)

rows = st.dictionaries(
    st.integers(0, 60),
    st.tuples(st.floats(1, 1000, allow_nan=False), st.integers(0, 10**9)),
    max_size=25,
)


def table(d: dict[int, tuple[float, int]]) -> pa.Table:
    days = sorted(d)
    return pa.Table.from_arrays(
        [
            pa.array([BASE + dt.timedelta(days=i) for i in days], pa.date32()),
            *[pa.array([d[i][0] for i in days], pa.float64()) for _ in range(4)],
            pa.array([None] * len(days), pa.float64()),
            pa.array([d[i][1] for i in days], pa.int64()),
        ],
        schema=PRICES.schema,
    )


@given(rows, rows)
def test_new_wins_and_result_is_sorted_and_unique(old: dict, new: dict) -> None:
    res = merge_rows(table(old), table(new), KEY)
    expected = {**old, **new}
    assert res.table.equals(table(expected))
    assert res.added == len(set(new) - set(old))
    overlap = set(new) & set(old)
    assert res.updated == sum(1 for k in overlap if old[k] != new[k])
    assert res.unchanged == len(overlap) - res.updated


@given(rows, rows)
def test_idempotent(old: dict, new: dict) -> None:
    once = merge_rows(table(old), table(new), KEY).table
    twice = merge_rows(once, table(new), KEY)
    assert twice.table.equals(once)
    assert (twice.added, twice.updated) == (0, 0)
    assert encode_table(twice.table) == encode_table(once)


@settings(max_examples=50)
@given(rows, rows, rows)
def test_order_independent_for_disjoint_keys(a: dict, b: dict, base: dict) -> None:
    b = {k: v for k, v in b.items() if k not in a}
    ab = merge_rows(merge_rows(table(base), table(a), KEY).table, table(b), KEY).table
    ba = merge_rows(merge_rows(table(base), table(b), KEY).table, table(a), KEY).table
    assert ab.equals(ba)
    assert encode_table(ab) == encode_table(ba)


def test_composite_key_merge() -> None:
    schema = pa.schema(
        [
            pa.field("period_end", pa.date32(), False),
            pa.field("filed", pa.date32(), False),
            pa.field("v", pa.float64()),
        ]
    )
    old = pa.table(
        {"period_end": [BASE, BASE], "filed": [BASE, BASE + dt.timedelta(1)], "v": [1.0, 2.0]},
        schema=schema,
    )
    new = pa.table(
        {"period_end": [BASE], "filed": [BASE + dt.timedelta(1)], "v": [3.0]}, schema=schema
    )
    res = merge_rows(old, new, ("period_end", "filed"))
    assert res.table.column("v").to_pylist() == [1.0, 3.0]
    assert (res.added, res.updated) == (0, 1)
