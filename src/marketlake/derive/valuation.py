"""Daily valuation signals from prices and point-in-time fundamentals (pure, no I/O).

:func:`compute_valuation` returns rows in the ``signals_valuation`` schema
(:data:`marketlake.schemas.datasets.SIGNALS_VALUATION`). On each price date D it uses only
fundamentals with ``filed <= D`` and splits with ``ex_date <= D`` (an as-of join on the
knowledge date), so a value filed after D can never reach D's row.

Rules (the data dictionary in ``SIGNALS_VALUATION.columns_doc`` states the same):

* the fundamentals known on D are :func:`~marketlake.derive.fundamentals.as_of` (D); TTM values
  are :func:`~marketlake.derive.fundamentals.ttm` of that view at its latest ``period_end``
  (null when that period has no four consecutive quarters; an FY-only year counts as its own TTM);
* shares = ``shares_diluted`` of the latest period (by ``period_end``) that reports it, in the
  view known on D;
* splits: ``close`` is the raw (unadjusted) close of D. Filings report shares and EPS on the
  share basis of their filing date, so each row's ``shares_diluted`` is multiplied, and its
  ``eps_diluted`` divided, by the product of the split ratios with ``filed < ex_date <= D``
  (before TTM summing). Without a ``splits`` table no adjustment is made (correct only when
  no split happened after the filings used);
* market_cap = close x shares (USD); ev = market_cap + total_liabilities - cash_and_equivalents
  (an approximation: total liabilities stand in for debt -- they include payables and other
  operating liabilities, so EV is overstated -- and preferred stock / minority interests are
  ignored); book equity = total_assets - total_liabilities;
* every ratio is null (never 0, never +-inf) when an input is missing or its denominator is
  <= 0: pe_ttm null when TTM EPS <= 0, pb when equity <= 0, ps_ttm when TTM revenue <= 0,
  yields when market cap or close <= 0; yields may be negative (negative earnings or FCF);
* ev_ebitda_ttm is always null for now: ``fundamentals`` carries no depreciation and
  amortisation, so EBITDA cannot be formed (operating income would be EBIT, a different ratio).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from marketlake.derive.fundamentals import FLOW_COLUMNS, STOCK_COLUMNS, ttm_frame
from marketlake.errors import SchemaError
from marketlake.schemas.datasets import SIGNALS_VALUATION

_EVENT = "__knowledge_date"


def _frame(table: pa.Table, what: str, needed: tuple[str, ...]) -> pl.DataFrame:
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise SchemaError(f"compute_valuation: {what} table lacks columns {missing}")
    df = pl.from_arrow(table.select(list(needed)))
    assert isinstance(df, pl.DataFrame)
    return df


def _split_ratios(splits: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    """Split ex dates (datetime64[D], ascending) and ratios (new shares per old share)."""
    empty = np.array([], dtype="datetime64[D]"), np.array([], dtype=np.float64)
    if splits is None or splits.num_rows == 0:
        return empty
    cols = ["ex_date", "value"] + (["action"] if "action" in splits.column_names else [])
    df = _frame(splits, "splits", tuple(cols))
    if "action" in df.columns:
        df = df.filter(pl.col("action") == "split")
    df = df.filter(pl.col("value").is_not_null() & (pl.col("value") > 0)).sort("ex_date")
    if df.height == 0:
        return empty
    days = df["ex_date"].to_numpy().astype("datetime64[D]")
    return days, df["value"].to_numpy().astype(np.float64)


def _cumulative(days: np.ndarray, ratios: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Product of the split ratios with ``ex_date <= at`` (1.0 before any split)."""
    cum = np.concatenate(([1.0], np.cumprod(ratios)))
    return cum[np.searchsorted(days, at, side="right")]


def _empty_output(dates: pl.Series) -> pa.Table:
    schema = SIGNALS_VALUATION.schema
    arrays = [dates.to_arrow().cast(pa.date32())]
    arrays += [pa.nulls(len(dates), f.type) for f in schema if f.name != "date"]
    return pa.Table.from_arrays(arrays, schema=schema)


def _known_states(fund: pl.DataFrame, split_days: np.ndarray, ratios: np.ndarray) -> pl.DataFrame:
    """One row per knowledge date (each filing date and split ex date): the TTM flows, stocks
    and shares as known on that date, per-share values on that date's share basis."""
    filed = fund["filed"].to_numpy().astype("datetime64[D]")
    events = np.unique(np.concatenate((filed, split_days)))
    ev = pl.DataFrame({_EVENT: events}).with_columns(pl.col(_EVENT).cast(pl.Date))
    view = (
        ev.join(fund, how="cross")
        .filter(pl.col("filed") <= pl.col(_EVENT))
        .sort([_EVENT, "period_end", "filed"])
        .unique(subset=[_EVENT, "period_end"], keep="last", maintain_order=True)
    )
    # per-share values onto the knowledge date's share basis: splits with filed < ex <= event
    cum_event = _cumulative(split_days, ratios, view[_EVENT].to_numpy().astype("datetime64[D]"))
    cum_filed = _cumulative(split_days, ratios, view["filed"].to_numpy().astype("datetime64[D]"))
    factor = pl.Series("__factor", cum_event / cum_filed)
    view = view.with_columns(
        (pl.col("shares_diluted") * factor).alias("shares_diluted"),
        (pl.col("eps_diluted") / factor).alias("eps_diluted"),
    )
    shares = (
        view.filter(pl.col("shares_diluted").is_not_null())
        .group_by(_EVENT)
        .agg(pl.col("shares_diluted").sort_by("period_end").last().alias("__shares"))
    )
    ttm = ttm_frame(view, [_EVENT])
    latest = ttm.group_by(_EVENT).agg(pl.all().exclude(_EVENT).sort_by("period_end").last())
    return latest.join(shares, on=_EVENT, how="left").sort(_EVENT)


def _positive(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr > 0).then(expr)


def compute_valuation(
    prices: pa.Table, fundamentals: pa.Table, splits: pa.Table | None = None
) -> pa.Table:
    """Daily valuation ratios, point in time.

    Parameters
    ----------
    prices:
        ``date`` (session date, no time zone) and ``close``: the **raw** (unadjusted) close in
        USD per share, as traded that day (e.g. the ``prices`` dataset read with no adjustment).
    fundamentals:
        Rows in the ``fundamentals`` schema (all filings, several rows per period allowed).
    splits:
        Optional split events: ``ex_date`` and ``value`` (new shares per old share, 4.0 for a
        4-for-1 split); rows whose ``action`` (when the column exists) is not ``"split"`` are
        ignored, so a ``corporate_actions`` table can be passed as is.

    Returns
    -------
    pa.Table
        One row per price date, ascending, in the ``signals_valuation`` schema (ratios, then
        ``market_cap`` and ``ev`` in USD); see the module docstring for the rules.

    Raises
    ------
    SchemaError
        A required column is missing.
    """
    px = _frame(prices, "prices", ("date", "close")).sort("date")
    px = px.with_columns(pl.col("date").cast(pl.Date), pl.col("close").cast(pl.Float64))
    px = px.with_columns(pl.col("close").fill_nan(None))
    needed = ("period_end", "filed", "fiscal_period", *FLOW_COLUMNS, *STOCK_COLUMNS)
    fund = _frame(fundamentals, "fundamentals", needed).with_columns(
        pl.col(c).cast(pl.Float64).fill_nan(None) for c in (*FLOW_COLUMNS, *STOCK_COLUMNS)
    )
    if px.height == 0 or fund.height == 0:
        return _empty_output(px["date"])
    split_days, ratios = _split_ratios(splits)
    states = _known_states(fund, split_days, ratios)
    joined = px.join_asof(states, left_on="date", right_on=_EVENT, strategy="backward")

    close = _positive(pl.col("close"))
    mcap = close * _positive(pl.col("__shares"))
    equity = _positive(pl.col("total_assets") - pl.col("total_liabilities"))
    eps = pl.col("eps_diluted")
    out = joined.with_columns(mcap.alias("market_cap")).select(
        "date",
        (close / _positive(eps)).alias("pe_ttm"),
        (pl.col("market_cap") / equity).alias("pb"),
        (pl.col("market_cap") / _positive(pl.col("revenue"))).alias("ps_ttm"),
        pl.lit(None, dtype=pl.Float64).alias("ev_ebitda_ttm"),
        (pl.col("free_cash_flow") / _positive(pl.col("market_cap"))).alias("fcf_yield_ttm"),
        (eps / close).alias("earnings_yield_ttm"),
        "market_cap",
        (pl.col("market_cap") + pl.col("total_liabilities") - pl.col("cash_and_equivalents")).alias(
            "ev"
        ),
    )
    # no inf/NaN can survive (denominators are > 0), but guard against overflow anyway
    out = out.with_columns(
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in out.columns if c != "date"
    )
    return out.to_arrow().cast(SIGNALS_VALUATION.schema)
