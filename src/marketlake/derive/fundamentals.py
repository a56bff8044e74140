"""Point-in-time fundamentals: the view as known on a date, and trailing-twelve-month aggregates.

Pure functions over Arrow tables in the ``fundamentals`` schema (see
:data:`marketlake.schemas.datasets.FUNDAMENTALS`): one row per ``(period_end, filed)``, USD,
shares in units, dates without time zone. No I/O.

* :func:`as_of` -- "as known on D": for each ``period_end`` the row with the latest
  ``filed <= D`` (a restatement filed after D is invisible on D).
* :func:`ttm` -- trailing twelve months per period: flows (:data:`FLOW_COLUMNS`) are the sum of the
  last four consecutive quarters; stocks (:data:`STOCK_COLUMNS`) are the latest quarter's value.

TTM rules (also in :func:`ttm`'s docstring):

* four quarters are *consecutive* when each of the three gaps between their period ends is
  70..110 days (covers 52/53-week fiscal years); otherwise the TTM flows are null (never a sum of
  fewer quarters). A null flow in any of the four quarters makes that TTM flow null.
* an ``FY`` row (a year reported only annually: ``fiscal_period == "FY"``) already covers twelve
  months: its TTM flows are its own values (``quarters`` = 4). An FY row never joins a quarterly
  window, so the first three quarters after an FY-only year have null TTM flows.
* stocks (total_assets, total_liabilities, cash_and_equivalents) are the period's own values;
  ``shares_diluted`` (a quarterly weighted average that derived Q4 rows lack) is the latest
  non-null value among the rows of the window (the FY row itself for an FY row).
* ``eps_diluted`` TTM is the sum of the four quarterly diluted EPS (an approximation: share
  counts differ between quarters).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa

from marketlake.errors import SchemaError

FLOW_COLUMNS: tuple[str, ...] = (
    "revenue",
    "gross_profit",
    "operating_income",
    "net_income",
    "eps_diluted",
    "operating_cash_flow",
    "capex",
    "free_cash_flow",
)
"""Flow columns: amounts over a period; TTM = sum of the last four quarters."""

STOCK_COLUMNS: tuple[str, ...] = (
    "total_assets",
    "total_liabilities",
    "cash_and_equivalents",
    "shares_diluted",
)
"""Stock columns: values at a point in time; TTM = the latest quarter's value."""

MIN_QUARTER_GAP_DAYS = 70
MAX_QUARTER_GAP_DAYS = 110

_REQUIRED = ("period_end", "filed", "fiscal_period", *FLOW_COLUMNS, *STOCK_COLUMNS)


def _check(table: pa.Table, what: str) -> None:
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise SchemaError(f"{what}: fundamentals table lacks columns {missing}")


def as_of(fundamentals: pa.Table, knowledge_as_of: dt.date) -> pa.Table:
    """The fundamentals as known on ``knowledge_as_of``.

    Parameters
    ----------
    fundamentals:
        Rows in the ``fundamentals`` schema (any order; several rows per ``period_end`` when a
        period was restated or re-reported).
    knowledge_as_of:
        Knowledge date D (a calendar date, no time zone): a filing counts when ``filed <= D``.

    Returns
    -------
    pa.Table
        Same schema and columns, one row per ``period_end`` that had at least one filing on or
        before D: the row with the latest such ``filed``; sorted by ``period_end``.
    """
    if "period_end" not in fundamentals.column_names or "filed" not in fundamentals.column_names:
        raise SchemaError("as_of: fundamentals table needs period_end and filed columns")
    df = pl.from_arrow(fundamentals)
    assert isinstance(df, pl.DataFrame)
    out = (
        df.filter(pl.col("filed") <= knowledge_as_of)
        .sort(["period_end", "filed"])
        .unique(subset=["period_end"], keep="last", maintain_order=True)
    )
    return out.to_arrow().cast(fundamentals.schema)


def _latest_per_period(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return df.sort([*by, "period_end", "filed"]).unique(
        subset=[*by, "period_end"], keep="last", maintain_order=True
    )


def ttm_frame(df: pl.DataFrame, by: list[str] | None = None) -> pl.DataFrame:
    """TTM aggregates on a Polars frame with one row per ``(*by, period_end)``.

    ``by`` names extra grouping columns (e.g. a knowledge-date column when many as-of views are
    stacked); windows never cross groups. Returns ``*by``, ``period_end``, ``filed`` (the latest
    ``filed`` among the rows used: when the TTM value became known), ``fiscal_year``,
    ``fiscal_quarter``, ``fiscal_period``, ``quarters`` (consecutive quarterly rows ending here,
    capped at 4; 4 for an FY row) and the flow and stock columns (see the module docstring).
    """
    keys = list(by or [])
    df = df.sort([*keys, "period_end"])
    is_fy = (pl.col("fiscal_period") == "FY").fill_null(False)
    quarterly = ~is_fy
    # link k: the rows k and k+1 back are consecutive quarters of the same group (plain shifts
    # over the sorted frame; cross-group pairs are rejected by comparing the keys)
    links = []
    for k in range(3):
        gap = (pl.col("period_end").shift(k) - pl.col("period_end").shift(k + 1)).dt.total_days()
        ok = (
            gap.is_between(MIN_QUARTER_GAP_DAYS, MAX_QUARTER_GAP_DAYS)
            & quarterly.shift(k)
            & quarterly.shift(k + 1)
        )
        for key in keys:
            ok = ok & (pl.col(key).shift(k) == pl.col(key).shift(k + 1))
        links.append(ok.fill_null(False).alias(f"__link{k}"))
    df = df.with_columns(links)
    l0, l1, l2 = (pl.col(f"__link{k}") for k in range(3))
    full = l0 & l1 & l2
    quarters = (
        pl.when(is_fy | full)
        .then(4)
        .when(l0 & l1)
        .then(3)
        .when(l0)
        .then(2)
        .otherwise(1)
        .cast(pl.Int32)
    )
    exprs: list[pl.Expr] = [quarters.alias("quarters")]
    for c in FLOW_COLUMNS:
        col = pl.col(c)
        four = col + col.shift(1) + col.shift(2) + col.shift(3)
        exprs.append(
            pl.when(is_fy).then(col).when(full).then(four).otherwise(None).cast(pl.Float64).alias(c)
        )
    filed = pl.col("filed")
    filed_max = pl.max_horizontal(filed, filed.shift(1), filed.shift(2), filed.shift(3))
    exprs.append(pl.when(full & quarterly).then(filed_max).otherwise(filed).alias("filed"))
    # shares: latest non-null within the window (quarters actually linked), else null
    shares = pl.col("shares_diluted")
    for n, cond in ((1, l0), (2, l0 & l1), (3, full)):
        shares = shares.fill_null(pl.when(cond).then(pl.col("shares_diluted").shift(n)))
    exprs.append(shares.alias("shares_diluted"))
    out = df.with_columns(exprs)
    cols = [
        *keys,
        "period_end",
        "filed",
        *(c for c in ("fiscal_year", "fiscal_quarter", "fiscal_period") if c in df.columns),
        "quarters",
        *FLOW_COLUMNS,
        *STOCK_COLUMNS,
    ]
    return out.select(cols)


def ttm(table: pa.Table) -> pa.Table:
    """Trailing-twelve-month aggregates per period.

    Parameters
    ----------
    table:
        Fundamentals (``fundamentals`` schema), normally one row per ``period_end`` (the output
        of :func:`as_of`). When a period has several rows the latest ``filed`` is used, i.e. the
        result is the TTM as known today.

    Returns
    -------
    pa.Table
        One row per ``period_end`` (ascending): ``period_end``; ``filed`` = the latest filing
        date among the rows used (when this TTM value became known); ``fiscal_year``,
        ``fiscal_quarter``, ``fiscal_period``; ``quarters`` (int32: consecutive quarterly rows
        ending at this period, capped at 4; 4 on an FY row); flows (USD, EPS in USD/share) =
        sum of the four consecutive quarters ending at ``period_end``, null unless all four
        exist (gaps of 70..110 days) and are non-null; an FY row's flows are its own annual
        values; stocks = this period's values, ``shares_diluted`` = latest non-null in the
        window.
    """
    _check(table, "ttm")
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return ttm_frame(_latest_per_period(df, []), []).to_arrow()
