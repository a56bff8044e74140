"""A deterministic, offline synthetic market: prices, signals and fundamentals for any ticker.

Used by the demo, the tests and the benchmarks. Nothing is random at run time: every value is a
pure function of ``(seed, ticker)`` and the date, so a one-day incremental run produces exactly
the rows a multi-year backfill produces for that day, and reruns are byte-identical (for the same
NumPy version and platform).

Model
-----
* **Time axis.** NYSE sessions (:func:`marketlake.calendars.sessions_array`) from :data:`ORIGIN`
  (2000-01-03) to :data:`HORIZON` (2030-12-31); rows outside the axis are simply absent.
  Fundamentals start with the quarter ending :data:`FUNDAMENTALS_START`. Everything path
  dependent (closes, splits, dividends, adjustment factors, fundamentals) is generated over the
  whole fixed axis and cached per ticker; everything else (open/high/low/volume from
  counter-based draws, signals) is computed for the requested rows only, by procedures whose
  result for a row never depends on the range it is computed in.
* **Prices** (USD per share, raw as traded). A per-share "value" follows a mean-reverting log
  random walk around an exponential trend (per-ticker drift, daily volatility 1-3 %, fat-tailed
  logistic shocks, a market factor shared by all tickers of a seed). Companies split when their
  price gets high (3:2, 2:1, 3:1, 4:1) and reverse-split 1:10 when it falls under a dollar or
  two; raw open/high/low/close are divided by the cumulative split ratio, so the raw price jumps
  by the ratio on the ex-date while raw volume (shares) scales inversely. About half the tickers
  pay quarterly cash dividends (the price drops on the ex-date). Prices are rounded to cents
  (to 1/100 cent below one dollar).
* **adj_close** is the vendor-style split-and-dividend adjusted close, back-adjusted relative to
  the fixed horizon: ``adj_close[t] = close[t] * prod(f_e for events e with ex-date > t)`` with
  ``f = 1 / ratio`` for a split and ``f = 1 - dividend / previous close`` for a dividend. All
  events through :data:`HORIZON` are generated up front, so ``adj_close`` never depends on the
  run date.
* **signals_technical** come from the split-adjusted close over the whole history, expressed in
  the share basis of the row's own date (so ``sma_20`` is directly comparable with that day's raw
  ``close``, and a later split never changes an old row). EMAs (and Wilder's averages) are
  evaluated over the trailing inputs whose weight is at least 1e-16, i.e. equal to the
  textbook recursion from the first session to double precision.
* **fundamentals** are quarterly (calendar quarter ends), scaled to the company's market value,
  with a per-ticker fiscal year end (December for most). Amounts are USD rounded to thousands,
  shares are units, EPS is USD per share in the share basis of the period end.
* **signals_valuation** use the day's raw close and the last quarter whose period end is at least
  :data:`FILING_LAG_DAYS` days before the date (a simulated filing lag); share counts and EPS are
  converted to the day's share basis. ``EV = market cap + total liabilities - cash``;
  ``EBITDA = operating income + synthetic depreciation`` (not a fundamentals column).
"""

from __future__ import annotations

import datetime as dt
import fractions
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from marketlake import calendars
from marketlake.errors import SourceError
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.base import Source, SourceRequest

__all__ = [
    "FILING_LAG_DAYS",
    "FUNDAMENTALS_START",
    "HORIZON",
    "ORIGIN",
    "SyntheticActions",
    "SyntheticSource",
    "demo_universe",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Days = npt.NDArray[np.datetime64]
RawColumns = dict[str, npt.NDArray[Any]]

ORIGIN = dt.date(2000, 1, 3)
"""First session of every synthetic price history."""

HORIZON = dt.date(2030, 12, 31)
"""Last date generated: corporate actions run through it and adj_close is relative to it."""

FUNDAMENTALS_START = dt.date(1998, 3, 31)
"""Period end of the first synthetic fiscal quarter (early enough for TTM values in 2000)."""

FILING_LAG_DAYS = 45
"""Calendar days between a quarter's period end and the first day its figures are used."""

_CALENDAR = "XNYS"
_DAYS_PER_YEAR = 365.25
_MARKET_VOL = 0.01
_COOL_OFF_SESSIONS = 126  # no second split within ~6 months
_MAX_SPLITS = 48
_TINY = 2.0**-53
_LOGISTIC_SCALE = math.sqrt(3.0) / math.pi  # logistic(0, s) has unit variance
_BLOCK = 16  # block length of the matrix-based linear filter
_SCAN_BLOCK = 64  # block length of the split-trigger search
_CACHE_SIZE = 256  # per-ticker histories kept (~0.5 MB each)

_VALUATION_COLUMNS = (
    "pe_ttm",
    "pb",
    "ps_ttm",
    "ev_ebitda_ttm",
    "fcf_yield_ttm",
    "earnings_yield_ttm",
)
_FUNDAMENTAL_COLUMNS = (
    "fiscal_year",
    "fiscal_quarter",
    "revenue",
    "gross_profit",
    "operating_income",
    "net_income",
    "eps_diluted",
    "shares_diluted",
    "total_assets",
    "total_liabilities",
    "cash_and_equivalents",
    "operating_cash_flow",
    "capex",
    "free_cash_flow",
)


# --- fixed time axis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """The time axis shared by every ticker (sessions, quarters and the filing-lag mapping)."""

    days: Days  # sessions ORIGIN..HORIZON, datetime64[D]
    years: F64  # years since ORIGIN of each session
    q_end: Days  # quarter ends FUNDAMENTALS_START..HORIZON, datetime64[D]
    q_years: F64  # years since ORIGIN of each quarter end (negative before ORIGIN)
    q_session: I64  # index of the last session <= quarter end (-1 before ORIGIN)
    q_month: I64  # calendar month (1-12) of each quarter end
    q_year: I64  # calendar year of each quarter end
    known_quarter: I64  # per session: last quarter whose figures are public (end + lag <= day)


def _readonly(*arrays: npt.NDArray[Any]) -> None:
    for a in arrays:
        a.setflags(write=False)


@functools.lru_cache(maxsize=1)
def _grid() -> _Grid:
    days = np.array(calendars.sessions_array(ORIGIN, HORIZON, _CALENDAR), dtype="datetime64[D]")
    if days.size == 0 or days[0] != np.datetime64(ORIGIN, "D"):
        raise SourceError(f"the {_CALENDAR} calendar does not cover {ORIGIN}..{HORIZON}")
    origin = np.datetime64(ORIGIN, "D")
    years = (days - origin).astype(np.float64) / _DAYS_PER_YEAR
    months = np.arange(
        np.datetime64(FUNDAMENTALS_START, "M"),
        np.datetime64(HORIZON, "M") + 1,
        3,
        dtype="datetime64[M]",
    )
    q_end = (months + 1).astype("datetime64[D]") - 1
    q_years = (q_end - origin).astype(np.float64) / _DAYS_PER_YEAR
    q_session = np.searchsorted(days, q_end, side="right").astype(np.int64) - 1
    month0 = months.astype(np.int64)  # months since 1970-01
    q_month = month0 % 12 + 1
    q_year = month0 // 12 + 1970
    lagged = q_end + np.timedelta64(FILING_LAG_DAYS, "D")
    known = np.searchsorted(lagged, days, side="right").astype(np.int64) - 1
    _readonly(days, years, q_end, q_years, q_session, q_month, q_year, known)
    return _Grid(days, years, q_end, q_years, q_session, q_month, q_year, known)


# --- numerical helpers -------------------------------------------------------------------------
#
# Determinism across ranges: the price path is always generated over the whole fixed axis, so
# anything computed on full-length arrays is range-independent by construction. Signals are
# computed only for the requested rows, with algorithms whose result for one row depends on a
# fixed trailing window of inputs through a fixed sequence of floating-point operations
# (elementwise NumPy ops only), so a row gets the same bits whatever range it is computed in.


@functools.lru_cache(maxsize=64)
def _filter_kernel(b: float) -> tuple[F64, F64]:
    """Return ``(M, p)``: ``M[i, j] = b**(j - i)`` if ``j >= i`` (else 0), ``p[j] = b**(j + 1)``."""
    j = np.arange(_BLOCK)
    expo = j[None, :] - j[:, None]
    kernel = np.where(expo >= 0, b ** np.maximum(expo, 0).astype(np.float64), 0.0)
    powers = b ** (j + 1).astype(np.float64)
    _readonly(kernel, powers)
    return kernel, powers


def _linear_filter(u: F64, b: float, init: float) -> F64:
    """Solve ``y[t] = b * y[t-1] + u[t]`` with ``y[-1] = init`` (vectorised, ``0 <= b < 1``).

    Works in blocks of ``_BLOCK`` samples: the in-block response is one small matrix product and
    the carries between blocks are combined with a log-depth (Hillis-Steele) scan. Only used on
    fixed-length inputs (the whole axis), where it is exactly reproducible.
    """
    n = u.size
    if n == 0:
        return np.empty(0)
    kernel, powers = _filter_kernel(b)
    nb = -(-n // _BLOCK)
    padded = np.zeros(nb * _BLOCK)
    padded[:n] = u
    local = padded.reshape(nb, _BLOCK) @ kernel  # response to in-block inputs, zero start
    step = float(powers[-1])  # b ** _BLOCK
    carry = local[:, -1].copy()
    carry[0] += step * init
    shift, factor = 1, step
    while shift < nb and factor > 1e-30:
        carry[shift:] = carry[shift:] + factor * carry[:-shift]
        shift *= 2
        factor *= factor
    before = np.empty(nb)
    before[0] = init
    before[1:] = carry[:-1]
    out: F64 = (local + before[:, None] * powers[None, :]).reshape(-1)[:n]
    return out


def _scan_steps(b: float) -> int:
    """Doubling steps after which ``b ** (2 ** steps) < 1e-16`` (older inputs are negligible)."""
    return max(1, math.ceil(math.log2(math.log(1e-16) / math.log(b))))


def _scan(u: F64, decay: F64 | float, steps: int) -> F64:
    """Truncated solution of ``y[t] = decay * y[t-1] + u[t]`` along the last axis.

    Hillis-Steele doubling: after ``steps`` steps ``y[t] = sum(decay**d * u[t-d], d < 2**steps)``
    (older terms weigh less than 1e-16, below double precision, when
    ``steps >= _scan_steps(decay)``). A row at least ``2**steps - 1`` positions from the start
    of ``u`` always goes through the same operations on the same inputs, so slicing the input
    differently never changes it. ``decay`` may hold one decay per row of a 2-D ``u``.
    """
    y = np.array(u, dtype=np.float64)
    c = np.asarray(decay, dtype=np.float64)
    if c.ndim:
        c = c.reshape(-1, 1)
    shift = 1
    for _ in range(steps):
        if shift >= y.shape[-1]:
            break
        head = y[..., shift:]
        np.add(head, c * y[..., :-shift], out=head)  # right side is computed before writing
        shift *= 2
        c = c * c
    return y


def _window_sums(x: F64, windows: tuple[int, ...]) -> list[F64]:
    """Trailing sums along the last axis over each of ``windows`` samples (NaN until full).

    Built from shared power-of-two partial sums (a fixed tree per row), so a row's value depends
    only on its own window, in a fixed order, and keeps full relative precision.
    """
    m = x.shape[-1]
    partial: dict[int, F64] = {1: x}
    size = 1
    while size * 2 <= max(windows):
        prev = partial[size]
        nxt = np.full(x.shape, np.nan)
        nxt[..., size:] = prev[..., size:] + prev[..., :-size]
        size *= 2
        partial[size] = nxt
    sums = []
    for window in windows:
        total = np.full(x.shape, np.nan)
        offset = 0
        for bit in sorted(partial, reverse=True):
            if window - offset >= bit:
                if offset == 0:
                    total = partial[bit].copy()
                else:
                    if offset < m:
                        total[..., offset:] += partial[bit][..., : m - offset]
                    total[..., :offset] = np.nan
                offset += bit
        sums.append(total)
    return sums


def _safe_div(num: F64, den: F64) -> F64:
    """``num / den`` where ``den > 0`` and both are finite, else NaN (later written as null)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    out[~np.isfinite(out)] = np.nan
    return out


def _piecewise(n: int, at: I64, values: npt.NDArray[Any], before: float) -> F64:
    """Step function: ``before`` until ``at[0]``, then ``values[k]`` from ``at[k]`` (sorted)."""
    if at.size == 0:
        return np.full(n, before)
    counts = np.diff(np.concatenate(([0], at, [n])))
    return np.repeat(np.concatenate(([before], values)), counts)


def _round_prices(x: F64) -> F64:
    """Round to cents (to 1/100 cent below one dollar), never below 0.0001 (in place)."""
    small = x < 1.0
    has_small = bool(small.any())
    fine = np.round(x, 4) if has_small else None
    np.round(x, 2, out=x)
    if fine is not None:
        x[small] = fine[small]
        np.maximum(x, 0.0001, out=x)
    return x


def _digest(seed: int, ticker: str) -> bytes:
    """Stable 32-byte hash of ``(seed, ticker)`` (never Python's salted ``hash()``)."""
    return hashlib.blake2b(f"{seed}:{ticker}".encode(), digest_size=32).digest()


def _rng(digest: bytes) -> np.random.Generator:
    """Sequential generator seeded from the first half of ``digest``."""
    return np.random.Generator(np.random.SFC64(int.from_bytes(digest[:16], "little")))


@functools.lru_cache(maxsize=16)
def _market_shocks(seed: int) -> F64:
    """Daily market-factor shocks (log-return units) shared by every ticker of ``seed``."""
    n = _grid().days.size
    u = np.maximum(_rng(_digest(seed, "\x00market")).random(n), _TINY)
    shocks: F64 = (np.log(u) - np.log1p(-u)) * (_LOGISTIC_SCALE * _MARKET_VOL)
    _readonly(shocks)
    return shocks


def _first_crossing(
    level: F64, block_max: F64, block_min: F64, start: int, upper: float, lower: float
) -> int:
    """First index ``>= start`` with ``level > upper`` or ``level < lower``; -1 if none."""
    if start >= level.size:
        return -1
    block = start // _SCAN_BLOCK
    while True:
        hits = (block_max[block:] > upper) | (block_min[block:] < lower)
        rel = int(np.argmax(hits))
        if not hits[rel]:
            return -1
        block += rel
        lo = max(block * _SCAN_BLOCK, start)
        seg = level[lo : (block + 1) * _SCAN_BLOCK]
        inside = (seg > upper) | (seg < lower)
        j = int(np.argmax(inside))
        if inside[j]:
            return lo + j
        block += 1
        if block >= block_max.size:
            return -1


@functools.lru_cache(maxsize=4)
def _fiscal_calendar(fye_month: int) -> tuple[F64, F64]:
    """Fiscal year and quarter (as floats) of each grid quarter for a fiscal year ending in
    ``fye_month`` (the fiscal year is named after the calendar year it ends in)."""
    grid = _grid()
    fiscal_q = (((grid.q_month - fye_month - 1) % 12) // 3 + 1).astype(np.float64)
    fiscal_y = (grid.q_year + (grid.q_month > fye_month)).astype(np.float64)
    _readonly(fiscal_q, fiscal_y)
    return fiscal_y, fiscal_q


# --- per-ticker history ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticActions:
    """Corporate actions of one synthetic ticker, through :data:`HORIZON`.

    Attributes
    ----------
    split_dates : list of datetime.date
        Ex-dates of splits (exchange session dates, no time zone).
    split_ratios : list of float
        New shares per old share: 2.0 for a 2-for-1 split, 1.5 for 3-for-2, 0.1 for a 1-for-10
        reverse split. The raw price divides by the ratio on the ex-date.
    dividend_dates : list of datetime.date
        Ex-dates of cash dividends.
    dividend_amounts : list of float
        Cash per share (USD, in the share basis of the ex-date).
    """

    split_dates: list[dt.date]
    split_ratios: list[float]
    dividend_dates: list[dt.date]
    dividend_amounts: list[float]


_EMA_ALPHA = 2.0 / (np.array([12.0, 26.0, 20.0]) + 1.0)
_RSI_DECAY = 13.0 / 14.0
# rows of the combined scan: EMA(12), EMA(26), EMA(20), Wilder gain, Wilder loss
_SCAN_DECAY = np.concatenate((1.0 - _EMA_ALPHA, [_RSI_DECAY, _RSI_DECAY]))
_SCAN_STEPS = max(_scan_steps(float(b)) for b in _SCAN_DECAY)
_SIGNAL_DECAY = 1.0 - 2.0 / 10.0
_SIGNAL_STEPS = _scan_steps(_SIGNAL_DECAY)
_readonly(_EMA_ALPHA, _SCAN_DECAY)


class _History:
    """The generated history of one ``(seed, ticker)``.

    Prices, corporate actions and quarterly fundamentals are computed once over the whole axis;
    signals are computed per request for the requested rows only.
    """

    def __init__(self, seed: int, ticker: str) -> None:
        grid = _grid()
        n = grid.days.size
        digest = _digest(seed, ticker)
        rng = _rng(digest)
        # Fixed draw order: never reorder or resize these, values depend on it.
        p = rng.random(32)
        u = rng.random(n)
        split_draws = rng.random(_MAX_SPLITS)
        self._fund_noise = rng.standard_normal((10, grid.q_end.size))
        self._p = p
        # Intraday shocks (open gap, high/low extensions, volume noise) come from a counter-based
        # generator keyed per ticker, so any range of sessions can be drawn directly.
        self._bar_key = np.frombuffer(digest[16:], dtype="<u8").astype(np.uint64)

        self.p0 = float(np.exp(np.log(5.0) + p[0] * np.log(100.0)))  # 5..500 USD
        self.sigma = sigma = 0.01 + 0.02 * p[1]
        self.mu = mu = -0.03 + 0.19 * p[2]  # annual log drift of the total return
        # mean reversion of the log value (32 levels, so the filter kernels stay cached)
        phi = 1.0 - (1.0 / 1500.0 + (1.0 / 400.0 - 1.0 / 1500.0) * (int(p[3] * 32) / 31.0))
        beta = 0.6 + 0.8 * p[4]
        idio = math.sqrt(max(sigma**2 - (beta * _MARKET_VOL) ** 2, (0.4 * sigma) ** 2))
        self.log_p0 = log_p0 = math.log(self.p0)
        self.log_volume0 = math.log(3e5) + p[13] * math.log(2e7 / 3e5)  # shares on day one

        # Dividend schedule (ex-dates fixed in advance; the price drops on each).
        yield_q = 0.002 + 0.008 * p[6]  # quarterly yield 0.2-1 %
        div_idx = np.empty(0, dtype=np.int64)
        if p[5] < 0.5:
            first_year = 1998 if p[7] < 0.6 else 2000 + int(p[8] * 20)
            months = np.arange(
                np.datetime64(f"{first_year}-{1 + int(p[9] * 3):02d}", "M"),
                np.datetime64(HORIZON, "M") + 1,
                3,
                dtype="datetime64[M]",
            )
            candidates = months.astype("datetime64[D]") + int(p[10] * 20)
            # candidates are three months apart, so their sessions are distinct and sorted
            div_idx = np.searchsorted(grid.days, candidates, side="left").astype(np.int64)
            div_idx = div_idx[(div_idx >= 1) & (div_idx < n)]
        self.div_drop = div_drop = math.log1p(-yield_q)
        cum_div = _piecewise(n, div_idx, div_drop * np.arange(1.0, div_idx.size + 1.0), 0.0)

        # Log value per original (2000) share: trend + dividends + mean-reverting noise.
        np.maximum(u, _TINY, out=u)
        eps = np.log(u)
        eps -= np.log(1.0 - u)  # logistic; exact enough as u is never within 2**-53 of 0 or 1
        eps *= _LOGISTIC_SCALE * idio
        eps += beta * _market_shocks(seed)
        z = _linear_filter(eps, phi, 0.0)
        self.trend = trend = log_p0 + mu * grid.years + cum_div
        self.lv_close = lv_close = trend + z

        # Splits: decided on the previous close, in the raw (current-share) basis.
        log_hi = math.log(min(max(self.p0 * (1.6 + 1.4 * p[11]), 40.0), 1500.0))
        log_lo = math.log(0.8 + 1.2 * p[12])
        block_starts = np.arange(0, n, _SCAN_BLOCK)
        block_max = np.maximum.reduceat(lv_close, block_starts)
        block_min = np.minimum.reduceat(lv_close, block_starts)
        split_idx: list[int] = []
        split_ratio: list[float] = []
        log_basis = 0.0
        start = 0
        while len(split_idx) < _MAX_SPLITS:
            # previous close at index j -> ex-date j + 1
            j = _first_crossing(
                lv_close, block_max, block_min, start, log_hi + log_basis, log_lo + log_basis
            )
            if j < 0 or j + 1 >= n:
                break
            draw = split_draws[len(split_idx)]
            if lv_close[j] < log_lo + log_basis:
                ratio = 0.1
            elif draw < 0.15:
                ratio = 1.5
            elif draw < 0.75:
                ratio = 2.0
            elif draw < 0.93:
                ratio = 3.0
            else:
                ratio = 4.0
            split_idx.append(j + 1)
            split_ratio.append(ratio)
            log_basis += math.log(ratio)
            start = j + _COOL_OFF_SESSIONS
        s_at = np.asarray(split_idx, dtype=np.int64)
        s_ratio = np.asarray(split_ratio, dtype=np.float64)
        # shares per original share as of each session (cumulative split ratio)
        shares_mult = _piecewise(n, s_at, np.cumprod(s_ratio), 1.0)
        self.split_at = s_at
        self.split_ratio = s_ratio
        self.shares_mult = shares_mult

        # Raw close (as traded): value per original share / shares per original share.
        close = np.exp(lv_close)
        close /= shares_mult
        _round_prices(close)
        self.close = close

        # Dividends: amount fixed per calendar year per original share, converted to the
        # ex-date's share basis; vendor adjustment factor 1 - D / previous close.
        self.div_at = div_idx
        div_factor = np.empty(0)
        if div_idx.size:
            prev_close = close[div_idx - 1] * shares_mult[div_idx - 1] / shares_mult[div_idx]
            years = grid.days[div_idx].astype("datetime64[Y]")
            is_first = np.ones(div_idx.size, dtype=bool)
            is_first[1:] = years[1:] != years[:-1]
            first_of_year = np.flatnonzero(is_first)
            owner = np.cumsum(is_first) - 1
            per_orig = (yield_q * prev_close * shares_mult[div_idx])[first_of_year][owner]
            amounts = np.maximum(np.round(per_orig / shares_mult[div_idx], 4), 0.0001)
            div_factor = np.clip(1.0 - amounts / prev_close, 0.5, 1.0)
            self.div_amount = amounts
        else:
            self.div_amount = np.empty(0)

        events = np.concatenate((s_at, div_idx))
        factors = np.concatenate((1.0 / s_ratio, div_factor))
        order = np.argsort(events, kind="stable")
        events, factors = events[order], factors[order]
        # adj factor at t = product of factors of events with ex-date > t (horizon-relative).
        tail = np.cumprod(np.concatenate((factors, [1.0]))[::-1])[::-1]
        self.adj_close = close * np.repeat(tail, np.diff(np.concatenate(([0], events, [n]))))
        self.split_adjusted = close * shares_mult  # original-share basis, for the signals
        self.is_div_day = np.zeros(n, dtype=bool)
        self.is_div_day[div_idx] = True
        _readonly(
            close, self.adj_close, shares_mult, self.split_adjusted, trend, lv_close,
            self.is_div_day,
        )  # fmt: skip
        self._quarterly: dict[str, F64] | None = None
        self._fundamentals: RawColumns | None = None

    # -- prices ---------------------------------------------------------------------------------

    def prices(self, i0: int, i1: int) -> RawColumns:
        """Daily bars for sessions ``[i0, i1)``.

        Close and adj_close come from the full-history path; open, high, low and volume are
        elementwise functions of that path and per-session draws, rounded to cents / shares.
        """
        m = i1 - i0
        gen = np.random.Philox(key=self._bar_key, counter=i0)
        raw = gen.random_raw(4 * m).reshape(m, 4).T  # one counter block per session
        u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
        log_u = np.log(u)
        log_1mu = np.log(1.0 - u)
        sigma = self.sigma
        lv_close = self.lv_close[i0:i1]
        basis = self.shares_mult[i0:i1]
        lv_prev = np.empty(m)
        if m:
            lv_prev[0] = self.lv_close[i0 - 1] if i0 > 0 else self.log_p0
            lv_prev[1:] = lv_close[:-1]

        lv = np.empty((3, m))  # open, high, low (log, original-share basis)
        lv_open = lv[0]
        np.subtract(log_u[0], log_1mu[0], out=lv_open)
        lv_open *= _LOGISTIC_SCALE * 0.3 * sigma
        lv_open += lv_prev
        lv_open[self.is_div_day[i0:i1]] += self.div_drop
        np.maximum(lv_open, lv_close, out=lv[1])
        lv[1] -= (0.5 * sigma) * log_u[1]
        np.minimum(lv_open, lv_close, out=lv[2])
        lv[2] += (0.5 * sigma) * log_1mu[2]
        px = np.exp(lv)
        px /= basis
        _round_prices(px)
        open_, high, low = px[0], px[1], px[2]
        close = self.close[i0:i1]
        np.maximum(high, np.maximum(open_, close), out=high)
        np.minimum(low, np.minimum(open_, close), out=low)

        # Volume (shares): dollar volume grows with value, spikes on big moves.
        log_volume = log_u[3] - log_1mu[3]
        log_volume *= _LOGISTIC_SCALE * 0.35
        log_volume += 8.0 * np.abs(lv_close - lv_prev - self.mu / 252.0)
        log_volume -= 0.3 * (lv_close - self.log_p0)
        log_volume += self.log_volume0
        volume = np.rint(np.exp(log_volume) * basis).astype(np.int64)
        return {
            "date": _grid().days[i0:i1],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "adj_close": self.adj_close[i0:i1],
            "volume": volume,
        }

    # -- signals_technical ----------------------------------------------------------------------

    def technical(self, i0: int, i1: int) -> RawColumns:
        """Technical signals for sessions ``[i0, i1)`` in each row's own share basis."""
        x = self.split_adjusted
        m = i1 - i0

        # One scan for EMA(12), EMA(26), EMA(20) (seeded with the first close: ema[0] == x[0])
        # and Wilder's average gain / loss (seeded at session 14 with the mean of the first 14
        # changes). macd is needed from macd_from on, to warm up the signal line.
        macd_from = min(i0, max(25, i0 - (2**_SIGNAL_STEPS - 1)))
        s = max(0, macd_from - (2**_SCAN_STEPS - 1))
        width = i1 - s
        series = np.zeros((5, width))
        np.multiply(_EMA_ALPHA[:, None], x[s:i1], out=series[:3])
        if s == 0:
            series[:3, 0] = x[0]
        w0 = max(15, s)  # first session with a plain Wilder input
        if i1 > w0:
            moves = x[w0:i1] - x[w0 - 1 : i1 - 1]
            np.maximum(moves, 0.0, out=series[3, w0 - s :])
            np.maximum(-moves, 0.0, out=series[4, w0 - s :])
            series[3:, w0 - s :] /= 14.0
        if s <= 14 < i1:
            first = x[1:15] - x[:14]
            series[3, 14 - s] = np.maximum(first, 0.0).mean()
            series[4, 14 - s] = np.maximum(-first, 0.0).mean()
        scanned = _scan(series, _SCAN_DECAY, _SCAN_STEPS)

        rsi = np.full(m, np.nan)
        lo = max(i0, 14)
        if i1 > lo:
            gain, loss = scanned[3, lo - s :], scanned[4, lo - s :]
            rsi[lo - i0 :] = _safe_div(100.0 * gain, gain + loss)
        ema20 = scanned[2, i0 - s :].copy()
        ema20[: max(0, 19 - i0)] = np.nan  # warm-up: fewer than 20 sessions
        macd_all = scanned[0, macd_from - s :] - scanned[1, macd_from - s :]
        macd = macd_all[i0 - macd_from :].copy()
        macd[: max(0, 25 - i0)] = np.nan  # warm-up: fewer than 26 sessions

        # Signal: EMA(9) of macd seeded at session 25 (the first session macd is reported).
        signal = np.full(m, np.nan)
        sig_from = max(25, macd_from)
        lo = max(i0, 33)
        if i1 > lo:
            sig_in = (2.0 / 10.0) * macd_all[sig_from - macd_from :]
            if sig_from == 25:
                sig_in[0] = macd_all[25 - macd_from]
            sig = _scan(sig_in, _SIGNAL_DECAY, _SIGNAL_STEPS)
            signal[lo - i0 :] = sig[lo - sig_from :]

        # SMA(20), SMA(50), Bollinger bands (population std over 20 sessions).
        s = max(0, i0 - 49)
        window = x[s:i1]
        sum20, sum50 = _window_sums(np.stack((window, window * window)), (20, 50))
        sma20 = sum20[0, i0 - s :] / 20.0
        sma50 = sum50[0, i0 - s :] / 50.0
        std20 = np.sqrt(np.maximum(sum20[1, i0 - s :] / 20.0 - sma20 * sma20, 0.0))

        # price-like columns, from the original-share basis to the row's own share basis
        priced = np.stack(
            (sma20, sma50, ema20, macd, signal, sma20 + 2.0 * std20, sma20 - 2.0 * std20)
        )
        priced /= self.shares_mult[i0:i1]
        sma20, sma50, ema20, macd, signal, bb_upper, bb_lower = priced
        return {
            "date": _grid().days[i0:i1],
            "rsi_14": rsi,
            "sma_20": sma20,
            "sma_50": sma50,
            "ema_20": ema20,
            "macd": macd,
            "macd_signal": signal,
            "bb_upper": bb_upper,
            "bb_lower": bb_lower,
        }

    # -- fundamentals ---------------------------------------------------------------------------

    def quarterly(self) -> dict[str, F64]:
        """Quarterly figures (one entry per grid quarter), including non-schema helpers."""
        if self._quarterly is None:
            self._quarterly = self._compute_quarterly()
        return self._quarterly

    def _compute_quarterly(self) -> dict[str, F64]:
        grid = _grid()
        p = self._p
        noise = self._fund_noise
        nq = grid.q_end.size
        known = grid.q_session >= 0
        at = grid.q_session[known]

        # Market value trend and share basis (shares per original share) at each quarter end.
        log_value = np.log(self.p0) + self.mu * grid.q_years
        log_value[known] = self.trend[at]
        basis = np.ones(nq)
        basis[known] = self.shares_mult[at]
        shares0 = math.exp(math.log(5e7) + p[14] * math.log(100.0))
        shares_orig = shares0 * np.exp((-0.02 + 0.04 * p[23]) * grid.q_years + 0.005 * noise[0])
        ps_target = math.exp(math.log(0.8) + p[15] * math.log(10.0))
        fiscal_y, fiscal_q = _fiscal_calendar((12, 12, 12, 12, 12, 12, 9, 9, 6, 3)[int(p[24] * 10)])
        season = 0.05 * p[25] * np.cos(2.0 * np.pi * (fiscal_q / 4.0 + p[26]))
        rev_noise = 0.05 * np.convolve(noise[1], (1.0, 0.7, 0.49))[:nq]  # MA(2): persistent
        revenue = (np.exp(log_value + rev_noise + season) * shares_orig) / (4.0 * ps_target)

        gross_margin = np.clip(0.25 + 0.5 * p[16] + 0.02 * noise[2], 0.05, 0.95)
        if p[27] < 0.15:  # loss-making at first, turning profitable over ~8 years
            ramp = np.clip((grid.q_years - 30.0 * p[28]) / 8.0, 0.0, 1.0)
            op_margin = -0.12 + 0.25 * ramp + 0.03 * noise[3]
        else:
            op_margin = gross_margin * (0.2 + 0.45 * p[17]) + 0.03 * noise[3]
        dep_ratio = 0.02 + 0.06 * p[18]
        revenue, gross_profit, operating_income = np.round(
            revenue * np.stack((np.ones(nq), gross_margin, op_margin)), -3
        )
        pre_tax = operating_income + 0.01 * revenue * noise[4]
        net_income = np.round(np.where(pre_tax > 0, pre_tax * 0.79, pre_tax), -3)
        shares_diluted = np.round(shares_orig * basis)
        eps_diluted = np.round(net_income / shares_diluted, 2)

        total_assets = np.round(4.0 * revenue * (0.8 + 2.2 * p[19]) * np.exp(0.03 * noise[5]), -3)
        ratios = np.stack(
            (0.3 + 0.5 * p[20] + 0.02 * noise[6], 0.03 + 0.2 * p[21] + 0.02 * noise[7])
        )
        total_liabilities, cash = np.round(total_assets * np.clip(ratios, 0.01, 0.95), -3)
        depreciation = revenue * dep_ratio
        operating_cash_flow = np.round(net_income + depreciation + 0.03 * revenue * noise[8], -3)
        capex = np.maximum(
            np.round(revenue * (0.02 + 0.08 * p[22]) * np.exp(0.15 * noise[9]), -3), 1000.0
        )
        free_cash_flow = operating_cash_flow - capex

        # trailing twelve months (four quarters); NaN for the first three quarters
        flows = np.stack((revenue, operating_income + depreciation, free_cash_flow, eps_diluted))
        flows[3] *= basis  # EPS per original share, so quarters across splits add up
        ttm = flows[:, 3:] + flows[:, 2:-1] + flows[:, 1:-2] + flows[:, :-3]
        valuation_base = np.full((7, nq), np.nan)
        valuation_base[:, 3:] = (
            (shares_diluted / basis)[3:],  # shares per original share
            ttm[3],  # TTM EPS per original share
            (total_assets - total_liabilities)[3:],  # book equity
            ttm[0],  # TTM revenue
            (total_liabilities - cash)[3:],  # EV = market cap + liabilities - cash
            ttm[1],  # TTM EBITDA
            ttm[2],  # TTM free cash flow
        )
        valuation_base.setflags(write=False)

        return {
            "fiscal_year": fiscal_y,
            "fiscal_quarter": fiscal_q,
            "revenue": revenue,
            "gross_profit": gross_profit,
            "operating_income": operating_income,
            "net_income": net_income,
            "eps_diluted": eps_diluted,
            "shares_diluted": shares_diluted,
            "total_assets": total_assets,
            "total_liabilities": total_liabilities,
            "cash_and_equivalents": cash,
            "operating_cash_flow": operating_cash_flow,
            "capex": capex,
            "free_cash_flow": free_cash_flow,
            # for signals_valuation, one row per input, NaN until four quarters exist
            "valuation_base": valuation_base,
        }

    def fundamentals(self) -> RawColumns:
        """All quarters' fundamentals in schema column order (period_end first)."""
        if self._fundamentals is None:
            q = self.quarterly()
            q_end = _grid().q_end
            # filed 35 days after the quarter end (45 for Q4, reported in the 10-K)
            fiscal_q = q["fiscal_quarter"]
            lag = np.where(fiscal_q == 4, 45, 35).astype("timedelta64[D]")
            out: RawColumns = {"period_end": q_end, "filed": q_end + lag}
            for name in _FUNDAMENTAL_COLUMNS:
                col = q[name]
                if name in ("fiscal_year", "fiscal_quarter"):
                    col = col.astype(np.int32)
                col.setflags(write=False)
                out[name] = col
                if name == "fiscal_quarter":
                    out["fiscal_period"] = np.array([f"Q{int(v)}" for v in col], dtype=object)
                    out["form"] = np.where(col == 4, "10-K", "10-Q").astype(object)
                    out["accession"] = np.full(len(col), None, dtype=object)
            self._fundamentals = out
        return self._fundamentals

    # -- signals_valuation ----------------------------------------------------------------------

    def valuation(self, i0: int, i1: int) -> RawColumns:
        """Valuation ratios for sessions ``[i0, i1)`` (elementwise, so range-independent)."""
        grid = _grid()
        base = self.quarterly()["valuation_base"][:, np.maximum(grid.known_quarter[i0:i1], 0)]
        shares_per_basis, ttm_eps_orig, equity, ttm_revenue, net_debt, ttm_ebitda, ttm_fcf = base
        price = self.close[i0:i1]
        basis_now = self.shares_mult[i0:i1]
        market_cap = price * shares_per_basis * basis_now
        eps_now = ttm_eps_orig / basis_now  # TTM EPS in the day's share basis
        ratios = _safe_div(
            np.stack((price, market_cap, market_cap, market_cap + net_debt, ttm_fcf, eps_now)),
            np.stack((eps_now, equity, ttm_revenue, ttm_ebitda, market_cap, price)),
        )
        out: RawColumns = {"date": grid.days[i0:i1]}
        out.update(zip(_VALUATION_COLUMNS, ratios, strict=True))
        out["market_cap"] = market_cap
        out["ev"] = market_cap + net_debt
        return out

    def actions(self) -> SyntheticActions:
        """Splits and dividends through the horizon."""
        days = _grid().days
        return SyntheticActions(
            split_dates=days[self.split_at].tolist(),
            split_ratios=self.split_ratio.tolist(),
            dividend_dates=days[self.div_at].tolist(),
            dividend_amounts=self.div_amount.tolist(),
        )


def _actions_columns(actions: SyntheticActions, start: dt.date, end: dt.date) -> RawColumns:
    """``corporate_actions`` column arrays for ex dates in ``[start, end]``, by ex date (splits:
    value = new shares per old share, also as a small fraction; dividends in USD)."""
    n_split, n_div = len(actions.split_dates), len(actions.dividend_dates)
    fracs = [fractions.Fraction(r).limit_denominator(100) for r in actions.split_ratios]
    nan = [math.nan] * n_div
    cols: RawColumns = {
        "ex_date": np.array([*actions.split_dates, *actions.dividend_dates], "datetime64[D]"),
        "action": np.array(["split"] * n_split + ["dividend"] * n_div, dtype=object),
        "value": np.array([*actions.split_ratios, *actions.dividend_amounts], np.float64),
        "split_numerator": np.array([float(f.numerator) for f in fracs] + nan, np.float64),
        "split_denominator": np.array([float(f.denominator) for f in fracs] + nan, np.float64),
        "currency": np.array([None] * n_split + ["USD"] * n_div, dtype=object),
    }
    days = cols["ex_date"]
    order = np.lexsort((cols["action"].astype(str), days))
    keep = order[
        (days[order] >= np.datetime64(start, "D")) & (days[order] <= np.datetime64(end, "D"))
    ]
    return {k: v[keep] for k, v in cols.items()}


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _history(seed: int, ticker: str) -> _History:
    return _History(seed, ticker)


_F64 = pa.float64()


@functools.lru_cache(maxsize=32)
def _float_columns(dataset: str) -> tuple[str, ...]:
    """Names of the float64 columns of ``dataset``, in schema order."""
    return tuple(f.name for f in get_dataset(dataset).schema if f.type == _F64)


# --- the source --------------------------------------------------------------------------------


class SyntheticSource(Source):
    """Deterministic synthetic data for any ticker: no network, no credentials.

    Parameters
    ----------
    seed : int, default 7
        Selects the synthetic market. For a given ``(seed, ticker)`` every value on a given date
        is fixed, whatever range or other tickers are requested.

    Notes
    -----
    Data exists for NYSE sessions from :data:`ORIGIN` (2000-01-03) to :data:`HORIZON`
    (2030-12-31) and for fiscal quarters ending :data:`FUNDAMENTALS_START` (1998-03-31) to the
    horizon; requests outside are clipped (possibly to nothing). See the module docstring for
    the model, units and adjustment basis.
    """

    name: ClassVar[str] = "synthetic"
    datasets: ClassVar[tuple[str, ...]] = (
        "prices",
        "signals_valuation",
        "signals_technical",
        "fundamentals",
        "corporate_actions",
    )
    description: ClassVar[str] = (
        "Deterministic offline synthetic market (seeded random walks with splits and dividends, "
        "technical and valuation signals, quarterly fundamentals, the corporate actions) for "
        "demos, tests and benchmarks."
    )
    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 7) -> None:
        self.seed = int(seed)
        """Seed of the synthetic market; tickers are used verbatim (normalise them first)."""

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed})"

    def fetch(self, request: SourceRequest) -> dict[str, RawColumns]:
        """Generate the raw column arrays for ``request`` (the I/O stage's stand-in).

        Parameters
        ----------
        request : SourceRequest
            Ticker, datasets and inclusive range of exchange session dates (no time zone).

        Returns
        -------
        dict
            ``{dataset: {column: numpy array}}`` for each requested dataset with rows in the
            requested range (already limited to it; datasets without rows are left out). Dates
            are ``datetime64[D]``, missing values NaN. Some arrays are read-only views of the
            ticker's cached history: copy before modifying.

        Raises
        ------
        SourceError
            If a requested dataset is not one this source provides.
        """
        unknown = [d for d in request.datasets if d not in self.datasets]
        if unknown:
            raise SourceError(
                f"the synthetic source cannot provide {', '.join(map(repr, unknown))}; "
                f"it provides {', '.join(self.datasets)}",
                ticker=request.ticker,
                dataset=unknown[0],
            )
        history = _history(self.seed, request.ticker)
        grid = _grid()
        lo = np.datetime64(request.start, "D")
        hi = np.datetime64(request.end, "D")
        i0 = int(np.searchsorted(grid.days, lo, side="left"))
        i1 = int(np.searchsorted(grid.days, hi, side="right"))
        raw: dict[str, RawColumns] = {}
        for dataset in dict.fromkeys(request.datasets):
            if dataset == "corporate_actions":
                acts = _actions_columns(history.actions(), request.start, request.end)
                if acts["ex_date"].size:
                    raw[dataset] = acts
            elif dataset == "fundamentals":
                q0 = int(np.searchsorted(grid.q_end, lo, side="left"))
                q1 = int(np.searchsorted(grid.q_end, hi, side="right"))
                if q1 > q0:
                    raw[dataset] = {k: v[q0:q1] for k, v in history.fundamentals().items()}
            elif i1 <= i0:
                continue
            elif dataset == "prices":
                raw[dataset] = history.prices(i0, i1)
            elif dataset == "signals_technical":
                raw[dataset] = history.technical(i0, i1)
            else:
                raw[dataset] = history.valuation(i0, i1)
        return raw

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Turn the raw arrays into canonical Arrow tables (pure; no I/O, no caching).

        Parameters
        ----------
        request : SourceRequest
            The request ``raw`` was fetched for.
        raw : dict
            The output of :meth:`fetch`.

        Returns
        -------
        dict of str to pyarrow.Table
            One table per requested dataset that has rows in ``[request.start, request.end]``,
            with exactly the dataset's canonical schema (column order, types). NaN becomes null;
            a dataset without rows is left out.

        Raises
        ------
        SourceError
            If a non-nullable column holds a missing or non-finite value (a generator bug).
        """
        lo = np.datetime64(request.start, "D")
        hi = np.datetime64(request.end, "D")
        tables: dict[str, pa.Table] = {}
        for dataset_name in dict.fromkeys(request.datasets):
            columns = raw.get(dataset_name) if isinstance(raw, dict) else None
            if not columns:
                continue
            dataset = get_dataset(dataset_name)
            times = np.asarray(columns[dataset.time_column], dtype="datetime64[D]")
            if times.size == 0:
                continue
            keep = (times >= lo) & (times <= hi)
            rows = int(np.count_nonzero(keep))
            if rows == 0:
                continue
            everything = rows == times.size
            schema = dataset.schema
            # columns the generator does not produce (nullable additions) come back all null
            float_names = tuple(n for n in _float_columns(dataset_name) if n in columns)
            # All float columns at once: one copy, one finiteness check, one shared Arrow buffer.
            block = np.stack([np.asarray(columns[name], dtype=np.float64) for name in float_names])
            if not everything:
                block = np.ascontiguousarray(block[:, keep])
            finite = np.isfinite(block)
            complete = cast(list[bool], finite.all(axis=1).tolist())
            shared = pa.py_buffer(block.data)
            arrays: list[pa.Array[Any]] = []
            k = 0
            for field in schema:
                if field.nullable and field.name not in columns:
                    arrays.append(pa.nulls(rows, field.type))
                    continue
                if field.type != _F64:
                    values = np.asarray(columns[field.name])
                    arrays.append(pa.array(values if everything else values[keep], type=field.type))
                    continue
                if complete[k]:
                    arrays.append(pa.Array.from_buffers(_F64, rows, [None, shared], 0, k * rows))
                elif field.nullable:
                    arrays.append(pa.array(block[k], type=_F64, mask=~finite[k]))
                else:
                    raise SourceError(
                        f"synthetic {dataset_name}.{field.name} for {request.ticker} has "
                        "missing values in a non-nullable column",
                        ticker=request.ticker,
                        dataset=dataset_name,
                        column=field.name,
                    )
                k += 1
            tables[dataset_name] = pa.Table.from_arrays(arrays, schema=schema)
        return tables

    def corporate_actions(self, ticker: str) -> SyntheticActions:
        """Return the splits and dividends generated for ``ticker`` through :data:`HORIZON`.

        Parameters
        ----------
        ticker : str
            Symbol, used verbatim to seed the generator.

        Returns
        -------
        SyntheticActions
            Ex-dates are exchange session dates (no time zone); amounts are USD per share in the
            share basis of the ex-date; ratios are new shares per old share.
        """
        return _history(self.seed, ticker).actions()


# --- demo universe -----------------------------------------------------------------------------

_LARGE_CAPS = (
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "GOOG", "META", "BRK.B", "AVGO", "TSLA",
    "JPM", "LLY", "V", "UNH", "XOM", "MA", "JNJ", "PG", "HD", "COST",
    "ABBV", "WMT", "MRK", "NFLX", "KO", "BAC", "CVX", "PEP", "ADBE", "CRM",
    "TMO", "ORCL", "AMD", "LIN", "MCD", "ACN", "CSCO", "ABT", "WFC", "DIS",
    "INTU", "QCOM", "TXN", "DHR", "PM", "VZ", "CAT", "AMGN", "IBM", "GE",
    "NEE", "PFE", "UNP", "LOW", "HON", "SPGI", "RTX", "GS", "INTC", "BKNG",
)  # fmt: skip


def demo_universe(n: int) -> list[str]:
    """Return ``n`` distinct, valid, deterministic tickers for demos and benchmarks.

    The first 60 are real US large-cap symbols (``AAPL``, ``MSFT``, ``BRK.B`` ...); the rest
    are synthetic ``SYN0001``, ``SYN0002`` ... (more digits past 9999). The data generated for
    them is synthetic either way.

    Parameters
    ----------
    n : int
        Number of tickers, ``>= 0``.

    Returns
    -------
    list of str
        Normalised tickers (they pass :func:`marketlake.schemas.normalize_ticker` unchanged).
    """
    if n < 0:
        raise ValueError(f"demo_universe needs n >= 0, got {n}")
    head = list(_LARGE_CAPS[:n])
    return head + [f"SYN{i:04d}" for i in range(1, n - len(head) + 1)]
