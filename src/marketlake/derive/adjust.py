"""Split and dividend adjustment of raw daily prices, computed at read time (pure, no I/O).

The lake stores ``prices`` raw, as traded (``open``/``high``/``low``/``close``/``volume``), and
``corporate_actions`` by ex date. Adjusted series are derived from the two whenever they are
read, so a new split or dividend never rewrites stored history; it only changes the factors.

Definitions (``d`` is a session date, ``E`` an ex date; an action applies to every date
strictly before its ex date, never on or after it):

``splits``
    price factor ``S(d) = prod(1 / ratio_E for every split with E > d)`` where ``ratio`` is the
    ``value`` column of a split (new shares per old share: 7.0 for 7:1, 0.1 for 1:10). Prices
    are multiplied by ``S(d)``, volume is divided by it (rounded to the nearest share, int64).
    The adjusted series is on the share basis of the latest known split.

``total`` (splits and cash distributions; the conventional CRSP / Yahoo multiplicative factor)
    for every ex date ``E`` with cash ``c_E`` (the sum of ``dividend`` and ``capital_gain``
    values on that ex date, per share on the share basis of ``E``)::

        m_E = 1 - c_E * S(E) / (P_prev * S(prev))

    where ``prev`` is the last session strictly before ``E`` that has a raw close and ``P_prev``
    is that **raw** close; the ``S`` terms put the dividend and the close on the same share
    basis (this matters only when a split and a dividend share an ex date; otherwise
    ``S(E) == S(prev)`` and ``m_E = 1 - c_E / P_prev``). The dividend factor is
    ``D(d) = prod(m_E for every E > d)``; prices are multiplied by ``S(d) * D(d)``. Volume is
    adjusted for splits only (as Yahoo and Quandl do). A distribution whose ex date has no
    earlier close is ignored (it applies to no stored session). ``m_E <= 0`` (a distribution at
    least as large as the previous close) is bad data and raises
    :class:`~marketlake.errors.DataValidationError`.

    ``dividend_basis="ex_close"`` selects Quandl WIKI's convention instead:
    ``m_E = P_E / (P_E + c_E)`` with ``P_E`` the raw close *on* the ex date (the cum-dividend
    price is taken to be the ex-date close plus the dividend). It differs from the conventional
    factor by ``~c * (P_E + c - P_prev) / P^2`` (typically 1e-5 relative) and exists so the
    vendor's adjusted columns can be reproduced exactly; reads use the conventional factor.

Knowledge date: ``corporate_actions`` has no announcement date, so an action is *known* on a
date ``K`` when ``ex_date <= K``. Adjusting "as of ``K``" uses only those actions: a backtest on
2020-06-01 does not see the 4:1 split of 2020-08-31. This is conservative (splits are announced
weeks before their ex date) and never leaks the future.

Units: prices in the trading currency per share; a cash amount is assumed to be in the trading
currency (the ``currency`` column is not converted). Dates are exchange session dates (no time
zone). The vendor's ``adj_close`` column is passed through unchanged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from marketlake.errors import DataValidationError

AdjustMode = Literal["none", "splits", "total"]
DividendBasis = Literal["prev_close", "ex_close"]

ADJUST_MODES: tuple[str, ...] = ("none", "splits", "total")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
CASH_ACTIONS: tuple[str, ...] = ("dividend", "capital_gain")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AdjustmentFactors:
    """Per-row multiplicative factors, aligned with the input dates.

    ``price`` multiplies raw open/high/low/close; ``volume`` multiplies raw volume (``1 / S``).
    """

    price: F64
    volume: F64


def check_mode(adjust: str) -> AdjustMode:
    """Validate an ``adjust=`` value; raise a one-line :class:`DataValidationError` if unknown."""
    if adjust not in ADJUST_MODES:
        raise DataValidationError(
            f"adjust={adjust!r} is not one of 'none' (raw, the default), 'splits', 'total'"
        )
    return adjust  # type: ignore[return-value]


def _days(column: pa.Array | pa.ChunkedArray) -> I64:
    """date32 column -> int64 days since 1970-01-01."""
    arr = column.cast(pa.date32()).cast(pa.int32())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def known_actions(actions: pa.Table, knowledge_as_of: dt.date | None) -> pa.Table:
    """The actions known on ``knowledge_as_of`` (rule: ``ex_date <= knowledge_as_of``); all of
    them when it is None."""
    if knowledge_as_of is None or actions.num_rows == 0:
        return actions
    mask = pc.less_equal(actions.column("ex_date"), pa.scalar(knowledge_as_of, pa.date32()))
    return actions.filter(mask)


def _suffix_factor(event_days: I64, event_mult: F64, days: I64) -> F64:
    """``prod(event_mult[e] for events with event_day > day)`` for every ``day`` (vectorised)."""
    if event_days.size == 0:
        return np.ones(days.shape, dtype=np.float64)
    order = np.argsort(event_days, kind="stable")
    ev, mult = event_days[order], event_mult[order]
    suffix = np.ones(ev.size + 1, dtype=np.float64)
    suffix[:-1] = np.cumprod(mult[::-1])[::-1]  # suffix[i] = prod(mult[i:])
    first_after = np.searchsorted(ev, days, side="right")  # first event with ev > day
    return np.asarray(suffix[first_after], dtype=np.float64)


def _actions_of(actions: pa.Table, kinds: tuple[str, ...]) -> tuple[I64, F64]:
    if actions.num_rows == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    mask = pc.is_in(actions.column("action"), value_set=pa.array(kinds, pa.string()))
    sel = actions.filter(mask)
    days = _days(sel.column("ex_date"))
    values = np.asarray(sel.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)
    return days, values


def _reference(prices: pa.Table, reference_closes: pa.Table | None) -> tuple[I64, F64]:
    """Sorted unique (day, raw close) from the rows read plus any extra closes."""
    parts: list[tuple[I64, F64]] = []
    for t in (prices, reference_closes):
        if t is not None and t.num_rows and "close" in t.column_names:
            closes = t.column("close").to_numpy(zero_copy_only=False)
            parts.append((_days(t.column("date")), np.asarray(closes, dtype=np.float64)))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    days = np.concatenate([p[0] for p in parts])
    closes = np.concatenate([p[1] for p in parts])
    uniq, idx = np.unique(days, return_index=True)
    return uniq, closes[idx]


def adjustment_factors(
    prices: pa.Table,
    actions: pa.Table,
    adjust: AdjustMode,
    *,
    knowledge_as_of: dt.date | None = None,
    reference_closes: pa.Table | None = None,
    dividend_basis: DividendBasis = "prev_close",
    ticker: str | None = None,
) -> AdjustmentFactors:
    """Factors for every row of ``prices`` (see the module docstring for the formulas).

    Parameters
    ----------
    prices:
        Raw ``prices`` rows: a ``date`` column (date32) and, for ``"total"``, ``close``.
    actions:
        ``corporate_actions`` rows of the same ticker (``ex_date``, ``action``, ``value``).
    adjust:
        ``"none"`` (all ones), ``"splits"`` or ``"total"``.
    knowledge_as_of:
        Use only actions with ``ex_date <= knowledge_as_of``; None uses all.
    reference_closes:
        Extra raw ``(date, close)`` rows (e.g. outside the range read) used only to find the
        close before (or on) an ex date; rows of ``prices`` take precedence on equal dates.
    dividend_basis:
        ``"prev_close"`` (conventional, default) or ``"ex_close"`` (Quandl WIKI).
    ticker:
        Only used in error messages.
    """
    check_mode(adjust)
    days = _days(prices.column("date"))
    ones = np.ones(days.shape, dtype=np.float64)
    if adjust == "none":
        return AdjustmentFactors(ones, ones.copy())
    acts = known_actions(actions, knowledge_as_of)
    split_days, ratios = _actions_of(acts, ("split",))
    if np.any(~np.isfinite(ratios) | (ratios <= 0)):
        bad = int(split_days[~np.isfinite(ratios) | (ratios <= 0)][0])
        raise DataValidationError(
            f"{ticker or 'ticker'}: split on {dt.date(1970, 1, 1) + dt.timedelta(bad)} has "
            "a non-positive ratio; fix corporate_actions",
            ticker=ticker,
            dataset="corporate_actions",
        )
    split_factor = _suffix_factor(split_days, 1.0 / ratios, days)
    if adjust == "splits":
        return AdjustmentFactors(split_factor, 1.0 / split_factor)

    cash_days, cash = _actions_of(acts, CASH_ACTIONS)
    if cash_days.size:
        cash_days, inverse = np.unique(cash_days, return_inverse=True)
        cash = np.bincount(inverse, weights=cash).astype(np.float64)  # sum per ex date
    ref_days, ref_close = _reference(prices, reference_closes)
    mult = np.ones(cash_days.shape, dtype=np.float64)
    if cash_days.size and ref_days.size:
        if dividend_basis == "prev_close":
            pos = np.searchsorted(ref_days, cash_days, side="left") - 1  # last session < E
            has = pos >= 0
            p = np.where(has, pos, 0)
            s_ex = _suffix_factor(split_days, 1.0 / ratios, cash_days)
            s_prev = _suffix_factor(split_days, 1.0 / ratios, ref_days[p])
            mult = np.where(has, 1.0 - cash * s_ex / (ref_close[p] * s_prev), 1.0)
        elif dividend_basis == "ex_close":
            pos = np.searchsorted(ref_days, cash_days, side="left")  # first session >= E
            has = pos < ref_days.size
            p = np.where(has, pos, 0)
            mult = np.where(has, ref_close[p] / (ref_close[p] + cash), 1.0)
        else:
            raise DataValidationError(
                f"dividend_basis={dividend_basis!r} is not 'prev_close' or 'ex_close'"
            )
    bad_mult = ~np.isfinite(mult) | (mult <= 0)
    if np.any(bad_mult):
        i = int(np.flatnonzero(bad_mult)[0])
        day = dt.date(1970, 1, 1) + dt.timedelta(int(cash_days[i]))
        raise DataValidationError(
            f"{ticker or 'ticker'}: cash distribution {cash[i]:g} on {day} is not smaller than "
            "the previous close; fix corporate_actions or prices",
            ticker=ticker,
            dataset="corporate_actions",
        )
    dividend_factor = _suffix_factor(cash_days, mult, days)
    return AdjustmentFactors(split_factor * dividend_factor, 1.0 / split_factor)


def apply_adjustment(
    prices: pa.Table,
    actions: pa.Table,
    adjust: AdjustMode,
    *,
    knowledge_as_of: dt.date | None = None,
    reference_closes: pa.Table | None = None,
    dividend_basis: DividendBasis = "prev_close",
    ticker: str | None = None,
) -> pa.Table:
    """Return ``prices`` with open/high/low/close multiplied by the price factor and volume by
    the volume factor (rounded to whole shares, int64); other columns (``date``, the vendor's
    ``adj_close``) and the schema are unchanged. ``adjust="none"`` returns the table as is.

    Parameters are those of :func:`adjustment_factors`; ``prices`` may hold any subset of the
    ``prices`` columns as long as ``date`` is there (and ``close`` for ``"total"``).
    """
    if check_mode(adjust) == "none" or prices.num_rows == 0:
        return prices
    if adjust == "total" and "close" not in prices.column_names:
        raise DataValidationError("adjust='total' needs the close column to compute factors")
    f = adjustment_factors(
        prices,
        actions,
        adjust,
        knowledge_as_of=knowledge_as_of,
        reference_closes=reference_closes,
        dividend_basis=dividend_basis,
        ticker=ticker,
    )
    out = prices
    for name in PRICE_COLUMNS:
        if name in out.column_names:
            i = out.column_names.index(name)
            raw = np.asarray(out.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            out = out.set_column(i, out.field(name), pa.array(raw * f.price, pa.float64()))
    if "volume" in out.column_names:
        i = out.column_names.index("volume")
        vol = np.asarray(out.column("volume").to_numpy(zero_copy_only=False), dtype=np.float64)
        adjusted = np.rint(vol * f.volume).astype(np.int64)
        out = out.set_column(i, out.field("volume"), pa.array(adjusted, pa.int64()))
    return out


def cash_ex_dates(actions: pa.Table, knowledge_as_of: dt.date | None = None) -> list[dt.date]:
    """Sorted distinct ex dates of the known cash distributions (dividends, capital gains)."""
    days, _ = _actions_of(known_actions(actions, knowledge_as_of), CASH_ACTIONS)
    return [dt.date(1970, 1, 1) + dt.timedelta(int(d)) for d in np.unique(days)]
