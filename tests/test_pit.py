"""Point-in-time fundamentals (as_of, TTM), valuation signals and lake.read(knowledge_as_of=).

Real data: Murphy Oil's recorded SEC companyfacts (tests/fixtures/sec_edgar, parsed through the
helpers of test_sec). Synthetic tables for the null rules, splits and the no-look-ahead property.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import marketlake
from marketlake import Lake
from marketlake.derive.fundamentals import FLOW_COLUMNS, STOCK_COLUMNS, as_of, ttm
from marketlake.derive.valuation import compute_valuation
from marketlake.errors import SchemaError
from marketlake.schemas.datasets import FUNDAMENTALS, SIGNALS_VALUATION
from tests.test_sec import mur_table, rows_for

D = dt.date


def by_period(table: pa.Table) -> dict[dt.date, dict[str, Any]]:
    return {r["period_end"]: r for r in table.to_pylist()}


# --- as_of on the real restatement -------------------------------------------------------------


def test_restatement_old_value_before_second_filing_new_after() -> None:
    table = mur_table()
    q1 = D(2012, 3, 31)
    assert q1 not in by_period(as_of(table, D(2012, 5, 6)))  # not filed yet
    first = by_period(as_of(table, D(2012, 5, 7)))[q1]  # the 10-Q's filing day counts
    assert first["revenue"] == 6_994_519_000 and first["filed"] == D(2012, 5, 7)
    # repeated unchanged by the 10-K of 2013-02-28: still old the day before the restatement
    before = by_period(as_of(table, D(2013, 5, 6)))[q1]
    assert before["revenue"] == 6_994_519_000 and before["filed"] == D(2013, 2, 28)
    after = by_period(as_of(table, D(2013, 5, 7)))[q1]
    assert after["revenue"] == 6_956_936_000 and after["filed"] == D(2013, 5, 7)
    assert by_period(as_of(table, D(2030, 1, 1)))[q1]["revenue"] == 6_956_936_000


def test_as_of_one_row_per_period_latest_filed() -> None:
    table = mur_table()
    for day in (D(2009, 8, 7), D(2012, 12, 31), D(2016, 6, 1), D(2022, 8, 4)):
        view = as_of(table, day)
        assert view.schema == FUNDAMENTALS.schema
        periods = view["period_end"].to_pylist()
        assert periods == sorted(set(periods))
        every = table.to_pylist()
        for row in view.to_pylist():
            candidates = [r["filed"] for r in every if r["period_end"] == row["period_end"]]
            assert row["filed"] == max(f for f in candidates if f <= day)
        # every period with a filing on or before the day is present
        assert set(periods) == {r["period_end"] for r in every if r["filed"] <= day}
    assert as_of(table, D(2009, 8, 6)).num_rows == 0


# --- TTM on known quarters ---------------------------------------------------------------------


def test_ttm_fiscal_q4_equals_the_full_year() -> None:
    view = as_of(mur_table(), D(2022, 2, 25))
    row = by_period(ttm(view))[D(2021, 12, 31)]
    assert row["quarters"] == 4
    # the four quarters of 2021 add up exactly to the 10-K's full-year figures
    assert row["revenue"] == 2_299_281_000
    ends = [D(2021, 3, 31), D(2021, 6, 30), D(2021, 9, 30), D(2021, 12, 31)]
    quarters = by_period(view)
    assert row["net_income"] == sum(quarters[e]["net_income"] for e in ends)
    assert row["operating_cash_flow"] == 1_422_163_000
    assert row["eps_diluted"] == pytest.approx(-1.87 - 0.41 + 0.70 + 1.09)
    # stocks: the period's own values; shares (null on a derived Q4) from Q3
    q4 = by_period(view)[D(2021, 12, 31)]
    assert row["total_assets"] == q4["total_assets"]
    assert row["shares_diluted"] == 155_932_262
    assert row["capex"] is None and row["free_cash_flow"] is None  # a null quarter -> null TTM
    assert row["filed"] == D(2022, 2, 25)


def test_ttm_sums_the_four_quarters_as_known() -> None:
    view = as_of(mur_table(), D(2013, 3, 1))
    quarters = by_period(view)
    row = by_period(ttm(view))[D(2012, 12, 31)]
    ends = [D(2012, 3, 31), D(2012, 6, 30), D(2012, 9, 30), D(2012, 12, 31)]
    assert row["revenue"] == sum(quarters[e]["revenue"] for e in ends)
    assert row["revenue"] == 6_994_519_000 + 7_190_339_000 + 7_122_277_000 + 7_389_228_000
    # one day after the restatement the TTM moves with it
    later = by_period(ttm(as_of(mur_table(), D(2013, 5, 7))))[D(2012, 12, 31)]
    assert later["revenue"] == row["revenue"] - 6_994_519_000 + 6_956_936_000
    assert later["filed"] == D(2013, 5, 7)  # when this TTM value became known


def test_ttm_fy_row_and_incomplete_windows() -> None:
    view = as_of(mur_table(), D(2010, 3, 1))
    rows = by_period(ttm(view))
    fy = rows[D(2007, 12, 31)]
    assert fy["fiscal_period"] == "FY" and fy["quarters"] == 4
    assert fy["revenue"] == 18_312_964_000  # an annual-only year is its own TTM
    # 2008-06-30 follows the FY row (no Q1 2008): null, never a sum of fewer quarters
    assert rows[D(2008, 6, 30)]["revenue"] is None
    assert rows[D(2008, 6, 30)]["quarters"] == 1
    # 2009-06-30: Q1 2009 not filed until 2010-05-07, so the window is broken
    assert rows[D(2009, 6, 30)]["revenue"] is None


def fund_rows(rows: list[dict[str, Any]]) -> pa.Table:
    """A fundamentals table from partial rows (missing columns null)."""
    full = [{name: r.get(name) for name in FUNDAMENTALS.schema.names} for r in rows]
    return pa.Table.from_pylist(full, schema=FUNDAMENTALS.schema)


def quarter(end: dt.date, filed: dt.date, **values: Any) -> dict[str, Any]:
    q = (end.month - 1) // 3 + 1
    return {
        "period_end": end,
        "filed": filed,
        "fiscal_year": end.year,
        "fiscal_quarter": q,
        "fiscal_period": f"Q{q}",
        **values,
    }


QEND = [D(2020, 3, 31), D(2020, 6, 30), D(2020, 9, 30), D(2020, 12, 31), D(2021, 3, 31)]


def test_ttm_gap_breaks_the_window() -> None:
    ends = [D(2019, 9, 30), D(2020, 3, 31), D(2020, 6, 30), D(2020, 9, 30), D(2020, 12, 31)]
    table = fund_rows([quarter(e, e + dt.timedelta(40), revenue=10.0) for e in ends])
    out = ttm(table)
    assert out["revenue"].to_pylist() == [None, None, None, None, 40.0]
    assert out["quarters"].to_pylist() == [1, 1, 2, 3, 4]
    # several rows for one period: ttm() uses the latest filed
    again = fund_rows(
        [quarter(e, e + dt.timedelta(40), revenue=10.0) for e in QEND[:4]]
        + [quarter(QEND[0], D(2021, 6, 1), revenue=20.0)]
    )
    assert ttm(again)["revenue"].to_pylist()[-1] == 50.0
    with pytest.raises(SchemaError, match="lacks columns"):
        ttm(table.drop_columns(["revenue"]))


# --- valuation: rules ------------------------------------------------------------------------


def prices(days: list[dt.date], close: float | list[float]) -> pa.Table:
    closes = close if isinstance(close, list) else [close] * len(days)
    return pa.table({"date": pa.array(days, pa.date32()), "close": pa.array(closes, pa.float64())})


def base_quarters(filed_lag: int = 30, **override: Any) -> list[dict[str, Any]]:
    values = {
        "revenue": 100.0,
        "net_income": 10.0,
        "eps_diluted": 0.5,
        "operating_cash_flow": 20.0,
        "capex": 5.0,
        "free_cash_flow": 15.0,
        "operating_income": 12.0,
        "shares_diluted": 20.0,
        "total_assets": 1000.0,
        "total_liabilities": 600.0,
        "cash_and_equivalents": 50.0,
    }
    values.update(override)
    return [quarter(e, e + dt.timedelta(filed_lag), **values) for e in QEND[:4]]


def val_at(table: pa.Table, day: dt.date) -> dict[str, Any]:
    (row,) = [r for r in table.to_pylist() if r["date"] == day]
    return row


def test_valuation_values_and_schema() -> None:
    fund = fund_rows(base_quarters())
    days = [D(2020, 4, 29), D(2021, 1, 29), D(2021, 1, 30), D(2021, 6, 1)]
    out = compute_valuation(prices(days, 40.0), fund)
    assert out.schema == SIGNALS_VALUATION.schema
    assert SIGNALS_VALUATION.schema.names[:7] == [
        "date",
        "pe_ttm",
        "pb",
        "ps_ttm",
        "ev_ebitda_ttm",
        "fcf_yield_ttm",
        "earnings_yield_ttm",
    ]
    assert out["date"].to_pylist() == days
    # Q4 is filed 2021-01-30: on 2021-01-29 only three quarters are known -> TTM null
    early = val_at(out, D(2021, 1, 29))
    assert early["pe_ttm"] is None and early["ps_ttm"] is None
    assert early["market_cap"] == 40.0 * 20.0  # shares of the latest known quarter
    assert early["pb"] == pytest.approx(800.0 / 400.0)
    assert early["ev"] == 800.0 + 600.0 - 50.0
    row = val_at(out, D(2021, 1, 30))
    assert row["pe_ttm"] == pytest.approx(40.0 / 2.0)
    assert row["earnings_yield_ttm"] == pytest.approx(2.0 / 40.0)
    assert row["ps_ttm"] == pytest.approx(800.0 / 400.0)
    assert row["fcf_yield_ttm"] == pytest.approx(60.0 / 800.0)
    assert row["ev_ebitda_ttm"] is None  # no D&A in fundamentals: documented as always null
    assert val_at(out, D(2021, 6, 1)) == {**row, "date": D(2021, 6, 1)}
    assert all(v is None for k, v in val_at(out, D(2020, 4, 29)).items() if k != "date")


@pytest.mark.parametrize(
    ("override", "close", "nulls", "present"),
    [
        ({"eps_diluted": -0.5}, 40.0, {"pe_ttm"}, {"earnings_yield_ttm", "pb", "market_cap"}),
        ({"eps_diluted": 0.0}, 40.0, {"pe_ttm"}, {"earnings_yield_ttm"}),
        ({"total_liabilities": 1000.0}, 40.0, {"pb"}, {"ps_ttm", "ev"}),
        ({"total_liabilities": 1500.0}, 40.0, {"pb"}, {"ps_ttm"}),
        ({"revenue": 0.0}, 40.0, {"ps_ttm"}, {"pe_ttm", "pb"}),
        ({"revenue": None}, 40.0, {"ps_ttm"}, {"pe_ttm"}),
        (
            {"shares_diluted": None},
            40.0,
            {"market_cap", "ev", "pb", "ps_ttm", "fcf_yield_ttm"},
            {"pe_ttm", "earnings_yield_ttm"},
        ),
        ({"shares_diluted": 0.0}, 40.0, {"market_cap", "pb", "fcf_yield_ttm"}, {"pe_ttm"}),
        ({"cash_and_equivalents": None}, 40.0, {"ev"}, {"market_cap"}),
        ({"free_cash_flow": None}, 40.0, {"fcf_yield_ttm"}, {"pe_ttm"}),
        (
            {},
            0.0,
            {"pe_ttm", "pb", "ps_ttm", "market_cap", "ev", "earnings_yield_ttm"},
            set(),
        ),
        ({}, float("nan"), {"pe_ttm", "market_cap", "earnings_yield_ttm"}, set()),
        ({"free_cash_flow": -30.0}, 40.0, set(), {"fcf_yield_ttm"}),
    ],
)
def test_valuation_null_rules(
    override: dict[str, Any], close: float, nulls: set[str], present: set[str]
) -> None:
    out = compute_valuation(prices([D(2021, 6, 1)], close), fund_rows(base_quarters(**override)))
    row = val_at(out, D(2021, 6, 1))
    for name in nulls:
        assert row[name] is None, name
    for name in present:
        assert row[name] is not None and math.isfinite(row[name]), name
    for value in row.values():  # never an infinity or NaN, never a fake 0 for a null rule
        assert not isinstance(value, float) or math.isfinite(value)
    if "fcf_yield_ttm" in present and override.get("free_cash_flow") == -30.0:
        assert row["fcf_yield_ttm"] < 0


def test_valuation_split_after_filing_adjusts_shares_and_eps() -> None:
    fund = fund_rows(base_quarters())  # Q4 filed 2021-01-30, 20 shares, EPS 0.5 a quarter
    days = [D(2021, 3, 1), D(2021, 3, 2)]
    splits = pa.table(
        {
            "ex_date": pa.array([D(2021, 3, 2), D(2021, 3, 2)], pa.date32()),
            "action": ["split", "dividend"],
            "value": [4.0, 9.0],  # a 4-for-1 split; the dividend row is ignored
        }
    )
    out = compute_valuation(prices(days, [80.0, 20.0]), fund, splits)
    before, after = val_at(out, days[0]), val_at(out, days[1])
    assert before["market_cap"] == after["market_cap"] == 1600.0
    assert before["pe_ttm"] == pytest.approx(after["pe_ttm"]) == pytest.approx(40.0)
    # a split before the filing is already in the filed numbers: no adjustment
    early = pa.table({"ex_date": pa.array([D(2021, 1, 1)], pa.date32()), "value": [4.0]})
    out2 = compute_valuation(prices(days, [80.0, 20.0]), fund, early)
    assert val_at(out2, days[0])["market_cap"] == 1600.0


def test_valuation_on_mur_never_sees_the_restatement_early() -> None:
    days = [D(2013, 5, 6), D(2013, 5, 7)]
    out = compute_valuation(prices(days, 50.0), mur_table())
    before, after = val_at(out, days[0]), val_at(out, days[1])
    view_before = by_period(ttm(as_of(mur_table(), days[0])))
    view_after = by_period(ttm(as_of(mur_table(), days[1])))
    # latest period known on 2013-05-06 is 2012-12-31; the 2013-Q1 10-Q arrives on 2013-05-07
    assert max(view_before) == D(2012, 12, 31) and max(view_after) == D(2013, 3, 31)
    mcap = before["market_cap"]
    assert mcap == 50.0 * 195_057_952  # Q4 2012 has no shares: Q3's
    assert before["ps_ttm"] == pytest.approx(mcap / view_before[D(2012, 12, 31)]["revenue"])
    assert after["market_cap"] == 50.0 * 191_765_395
    assert after["ps_ttm"] == pytest.approx(
        after["market_cap"] / view_after[D(2013, 3, 31)]["revenue"]
    )


# --- valuation: no look-ahead (property) ---------------------------------------------------------

_FIELDS = ("revenue", "eps_diluted", "free_cash_flow", "shares_diluted", "total_liabilities")


@st.composite
def filings(draw: st.DrawFn) -> pa.Table:
    """Random quarterly fundamentals with restatements filed at random later dates."""
    n = draw(st.integers(1, 8))
    start_year = 2018
    rows = []
    for i in range(n):
        month = 3 * (i % 4) + 3
        year = start_year + i // 4
        end = D(year, month, 30 if month in (6, 9) else 31)
        versions = draw(st.integers(1, 3))
        lags = sorted(draw(st.sets(st.integers(1, 400), min_size=versions, max_size=versions)))
        for lag in lags:
            values = {
                f: draw(st.one_of(st.none(), st.floats(-50, 500, allow_nan=False))) for f in _FIELDS
            }
            values["total_assets"] = draw(st.floats(0, 2000))
            values["cash_and_equivalents"] = draw(st.floats(0, 100))
            if values["shares_diluted"] is not None:
                values["shares_diluted"] = abs(values["shares_diluted"])
            rows.append(quarter(end, end + dt.timedelta(lag), **values))
    return fund_rows(rows)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fund=filings(),
    offsets=st.lists(st.integers(0, 1500), min_size=1, max_size=4),
    split_offsets=st.lists(st.integers(0, 1500), max_size=3),
    data=st.data(),
)
def test_valuation_uses_only_what_was_filed_by_the_date(
    fund: pa.Table, offsets: list[int], split_offsets: list[int], data: st.DataObject
) -> None:
    origin = D(2018, 1, 1)
    # random days, plus some days before / of a filing (where look-ahead would show)
    filed = sorted(set(fund["filed"].to_pylist()))
    near = data.draw(st.lists(st.sampled_from(filed), min_size=1, max_size=4))
    days = sorted(
        {origin + dt.timedelta(o) for o in offsets}
        | {f - dt.timedelta(1) for f in near}
        | set(near[:1])
    )
    split_days = sorted({origin + dt.timedelta(o) for o in split_offsets})
    splits = pa.table(
        {"ex_date": pa.array(split_days, pa.date32()), "value": [2.0] * len(split_days)}
    )
    px = prices(days, [10.0 + i for i in range(len(days))])
    full = compute_valuation(px, fund, splits)
    assert full["date"].to_pylist() == days
    for i, day in enumerate(days):
        known = fund.filter(pa.compute.less_equal(fund["filed"], pa.scalar(day, pa.date32())))
        # the future rewritten with garbage must not move the day's row
        future = fund.filter(pa.compute.greater(fund["filed"], pa.scalar(day, pa.date32())))
        garbage = pa.table(
            {
                name: (
                    pa.array([1e6] * future.num_rows, pa.float64())
                    if name in (*FLOW_COLUMNS, *STOCK_COLUMNS)
                    else future[name]
                )
                for name in FUNDAMENTALS.schema.names
            },
            schema=FUNDAMENTALS.schema,
        )
        past_splits = splits.filter(
            pa.compute.less_equal(splits["ex_date"], pa.scalar(day, pa.date32()))
        )
        expected = full.slice(i, 1).to_pylist()
        assert compute_valuation(px.slice(i, 1), known, past_splits).to_pylist() == expected
        mixed = pa.concat_tables([known, garbage])
        assert compute_valuation(px.slice(i, 1), mixed, splits).to_pylist() == expected
        for value in expected[0].values():
            assert not isinstance(value, float) or math.isfinite(value)


# --- lake.read(knowledge_as_of=) -----------------------------------------------------------------


@pytest.fixture
def mem_lake() -> Iterator[Lake]:
    lk = marketlake.open("memory://", fsync=False)
    yield lk
    lk.close()


def test_lake_read_fundamentals_knowledge_as_of(mem_lake: Lake) -> None:
    mem_lake.write("MUR", "fundamentals", mur_table(), source="sec")
    everything = mem_lake.read("MUR", "fundamentals", output="arrow")
    assert everything.num_rows == 198
    q1 = D(2012, 3, 31)
    old = mem_lake.read("MUR", "fundamentals", knowledge_as_of="2013-05-06", output="arrow")
    new = mem_lake.read("MUR", "fundamentals", knowledge_as_of=D(2013, 5, 7), output="arrow")
    assert by_period(old)[q1]["revenue"] == 6_994_519_000
    assert by_period(new)[q1]["revenue"] == 6_956_936_000
    assert old.to_pylist() == as_of(mur_table(), D(2013, 5, 6)).to_pylist()
    # a range and a column selection without `filed` still work
    part = mem_lake.read(
        "MUR",
        "fundamentals",
        start="2012-01-01",
        end="2012-12-31",
        columns=["revenue"],
        knowledge_as_of="2013-05-07",
        output="arrow",
    )
    assert part.column_names == ["period_end", "revenue"]
    assert part.to_pylist()[0] == {"period_end": q1, "revenue": 6_956_936_000}
    assert part.num_rows == 4
    batch = mem_lake.read_batch(
        ["MUR"], "fundamentals", knowledge_as_of="2013-05-06", output="arrow"
    )
    assert batch.data.num_rows == old.num_rows
    assert len(rows_for(everything, "2012-03-31")) == 4  # stored history is untouched
