"""Daily technical indicators: pure, vectorised NumPy over one ticker's session history.

Inputs are one ticker's daily bars, oldest first, one row per exchange session (``dates`` are
session dates, no time zone). Prices must be **split-adjusted** (every row in the share basis of
the last row) and ``volume`` in shares of that same basis, so that a split never looks like a
price move; dividends are *not* adjusted for. Price-like outputs (moving averages, MACD, bands,
ATR) are in the trading currency per (split-adjusted) share; ``obv`` is in (split-adjusted)
shares; oscillators (RSI, stochastics, ADX, Williams %R, MFI) are unit-less on their usual
scales; ``roc_10`` is in percent.

Conventions follow TA-Lib 0.6+ (C library 0.6/0.8, default "compatibility" mode) so that the
values can be checked against it (``tests/test_technical.py`` does, to 1e-9 relative):

* EMAs are seeded with the simple mean of their first ``n`` inputs (``ema_20`` at session 19).
* ``macd`` = EMA(12) - EMA(26), where — as in TA-Lib — *both* EMAs are seeded at session 25:
  EMA(26) with the mean of closes 0..25 and EMA(12) with the mean of closes 14..25 (so the
  MACD's EMA(12) is not the stand-alone EMA(12) of the first 12 closes). ``macd_signal`` is the
  EMA(9) of ``macd`` seeded with the mean of its first 9 values (first value at session 33).
* Wilder smoothing (``rsi_14``, ``atr_14``, ``adx_14``) uses ``s = (13 s + x) / 14`` seeded with
  the mean of the first 14 inputs; ADX follows TA-Lib's seeding (directional sums over 13
  moves, first DX at session 14, first ADX at session 27).
* Bollinger bands use the population standard deviation (divide by 20).
* Stochastics are TA-Lib's "slow" STOCH(14, 3, 3) with simple averages.
* Divisions by zero (a flat window) give TA-Lib's value 0 rather than NaN.

Warm-up rows (fewer sessions than an indicator needs) are **null**, never NaN.

Incremental updates. Moving-window columns depend only on the last :data:`WINDOW_LOOKBACK` + 1
sessions. The recursive columns (:data:`RECURSIVE_COLUMNS`: EMAs, MACD, Wilder averages, OBV)
depend on *every* earlier session, so no finite look-back reproduces them exactly. The exact
incremental path is therefore defined as: recompute over the full stored history (the closes are
in the lake anyway; the cost is O(n log n) per ticker) and keep the new rows. :data:`LOOKBACK` is
``None`` to say so. The computation is *prefix-stable*: a row's value is bit-for-bit the same
whatever rows come after it, so rows written earlier never change and never need rewriting
(``tests/test_technical.py`` asserts both properties with ``==``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from marketlake.errors import DataValidationError
from marketlake.schemas.datasets import SIGNALS_TECHNICAL

F64 = NDArray[np.float64]

#: Prior sessions a moving-window column needs (``sma_200``: 199 before the current one).
#: Computing the last ``K`` rows from ``WINDOW_LOOKBACK + K`` rows gives exactly the full values
#: for every column not in :data:`RECURSIVE_COLUMNS`.
WINDOW_LOOKBACK: Final[int] = 199

#: Columns whose value depends on the whole history (exponential / Wilder recursions, OBV).
RECURSIVE_COLUMNS: Final[frozenset[str]] = frozenset(
    {"rsi_14", "ema_20", "macd", "macd_signal", "macd_hist", "atr_14", "obv", "adx_14"}
)

#: Prior sessions needed for an exact recompute of the last ``K`` rows of *every* column:
#: ``None`` = the full stored history (see the module docstring).
LOOKBACK: Final[int | None] = None

#: First session index (0-based) with a non-null value, per column; equals TA-Lib's look-back.
FIRST_VALID: Final[dict[str, int]] = {
    "rsi_14": 14,
    "sma_20": 19,
    "sma_50": 49,
    "ema_20": 19,
    "macd": 25,
    "macd_signal": 33,
    "bb_upper": 19,
    "bb_lower": 19,
    "sma_200": 199,
    "macd_hist": 33,
    "bb_middle": 19,
    "atr_14": 14,
    "obv": 0,
    "stoch_k": 17,
    "stoch_d": 17,
    "adx_14": 27,
    "roc_10": 10,
    "williams_r_14": 13,
    "cci_20": 19,
    "mfi_14": 14,
}


# --- building blocks -------------------------------------------------------------------------


def _linear_scan(decay: float, drive: F64) -> F64:
    """``y[i] = decay * y[i-1] + drive[i]`` with ``y[-1] = 0``, as a Hillis-Steele scan.

    Step ``k`` adds ``decay**(2**k) * y[i - 2**k]`` to every ``i >= 2**k``; an element only ever
    combines with earlier elements and the steps it takes do not depend on the array length, so
    the result is prefix-stable bit for bit. O(n log n), numerically stable for ``decay < 1``.
    """
    y = drive.copy()
    power = decay
    shift = 1
    while shift < y.size:
        y[shift:] = y[shift:] + power * y[:-shift]
        power *= power
        shift *= 2
    return y


def _seeded_recursion(decay: float, gain: float, x: F64, seed_at: int, seed: float) -> F64:
    """``y[seed_at] = seed``; ``y[i] = decay * y[i-1] + gain * x[i]`` after it (0 before)."""
    drive = np.zeros(x.size)
    if seed_at < x.size:
        drive[seed_at] = seed
        drive[seed_at + 1 :] = gain * x[seed_at + 1 :]
    return _linear_scan(decay, drive)


def _ema(x: F64, n: int, seed_at: int) -> F64:
    """EMA (alpha ``2/(n+1)``) seeded at ``seed_at`` with the mean of the ``n`` inputs ending
    there."""
    alpha = 2.0 / (n + 1)
    seed = float(x[seed_at - n + 1 : seed_at + 1].mean()) if seed_at < x.size else 0.0
    return _seeded_recursion(1.0 - alpha, alpha, x, seed_at, seed)


def _wilder_mean(x: F64, n: int, seed_at: int) -> F64:
    """Wilder average ``(prev * (n-1) + x) / n`` seeded with the mean of the ``n`` inputs ending
    at ``seed_at``."""
    seed = float(x[seed_at - n + 1 : seed_at + 1].mean()) if seed_at < x.size else 0.0
    return _seeded_recursion((n - 1) / n, 1.0 / n, x, seed_at, seed)


def _rolling(x: F64, w: int, how: str) -> F64:
    """Trailing ``w``-session mean / max / min ending at each session (NaN before ``w - 1``).

    Each window is reduced on its own (no running sums), so a value depends only on its window's
    inputs — exact for any start of the input.
    """
    out = np.full(x.size, np.nan)
    if x.size >= w:
        view = sliding_window_view(x, w)
        if how == "mean":
            out[w - 1 :] = view.sum(axis=1) / w
        elif how == "max":
            out[w - 1 :] = view.max(axis=1)
        else:
            out[w - 1 :] = view.min(axis=1)
    return out


def _rolling_pstd(x: F64, w: int, mean: F64) -> F64:
    """Population standard deviation of the trailing ``w`` sessions (two-pass per window)."""
    out = np.full(x.size, np.nan)
    if x.size >= w:
        dev = sliding_window_view(x, w) - mean[w - 1 :, None]
        out[w - 1 :] = np.sqrt((dev * dev).sum(axis=1) / w)
    return out


def _rolling_mad(x: F64, w: int, mean: F64) -> F64:
    """Mean absolute deviation from ``mean`` over the trailing ``w`` sessions."""
    out = np.full(x.size, np.nan)
    if x.size >= w:
        out[w - 1 :] = np.abs(sliding_window_view(x, w) - mean[w - 1 :, None]).sum(axis=1) / w
    return out


def _ratio(num: F64, den: F64, scale: float = 1.0) -> F64:
    """``scale * num / den``, with TA-Lib's 0 where ``den`` is 0."""
    out = np.zeros(num.size)
    np.divide(num, den, out=out, where=den != 0)
    return scale * out


def _true_range(high: F64, low: F64, close: F64) -> F64:
    """Wilder's true range; session 0 (no previous close) gets ``high - low``."""
    tr = high - low
    prev = close[:-1]
    tr[1:] = np.maximum(high[1:], prev) - np.minimum(low[1:], prev)
    return tr


# --- indicators ------------------------------------------------------------------------------


def rsi(close: F64, n: int = 14) -> F64:
    """Wilder RSI (0-100); first value at session ``n``. Flat start (no moves) gives 0."""
    move = np.zeros(close.size)
    move[1:] = np.diff(close)
    gain = _wilder_mean(np.maximum(move, 0.0), n, n)
    loss = _wilder_mean(np.maximum(-move, 0.0), n, n)
    return _ratio(gain, gain + loss, 100.0)


def macd(close: F64, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[F64, F64, F64]:
    """TA-Lib MACD: ``(macd, signal, hist)``; macd from session ``slow-1``, signal and hist from
    ``slow + signal - 2`` (both EMAs seeded at session ``slow - 1``, see the module docstring)."""
    start = slow - 1
    line = _ema(close, fast, start) - _ema(close, slow, start)
    sig = _ema(line, signal, start + signal - 1)
    return line, sig, line - sig


def adx(high: F64, low: F64, close: F64, n: int = 14) -> F64:
    """TA-Lib ADX(n) (0-100); first value at session ``2n - 1``."""
    size = close.size
    up = np.zeros(size)
    down = np.zeros(size)
    up[1:] = high[1:] - high[:-1]
    down[1:] = low[:-1] - low[1:]
    minus_dm = np.where((down > 0) & (up < down), down, 0.0)
    plus_dm = np.where((up > 0) & (up > down) & ~((down > 0) & (up < down)), up, 0.0)
    tr = _true_range(high, low, close)
    tr[:1] = 0.0
    decay = (n - 1) / n

    def wilder_sum(x: F64) -> F64:
        seed = float(x[1:n].sum()) if n - 1 < size else 0.0
        return _seeded_recursion(decay, 1.0, x, n - 1, seed)

    s_tr = wilder_sum(tr)
    plus_di = _ratio(wilder_sum(plus_dm), s_tr, 100.0)
    minus_di = _ratio(wilder_sum(minus_dm), s_tr, 100.0)
    dx = _ratio(np.abs(plus_di - minus_di), plus_di + minus_di, 100.0)
    return _wilder_mean(dx, n, 2 * n - 1)


def stochastic(
    high: F64, low: F64, close: F64, n: int = 14, k_smooth: int = 3, d_smooth: int = 3
) -> tuple[F64, F64]:
    """Slow stochastic ``(%K, %D)`` (0-100): SMA(3) of fast %K, and SMA(3) of that."""
    hh = _rolling(high, n, "max")
    ll = _rolling(low, n, "min")
    fast_k = np.full(close.size, np.nan)
    fast_k[n - 1 :] = _ratio(close[n - 1 :] - ll[n - 1 :], hh[n - 1 :] - ll[n - 1 :], 100.0)
    slow_k = np.full(close.size, np.nan)
    slow_k[n - 1 :] = _rolling(fast_k[n - 1 :], k_smooth, "mean")
    slow_d = np.full(close.size, np.nan)
    start = n + k_smooth - 2
    slow_d[start:] = _rolling(slow_k[start:], d_smooth, "mean")
    return slow_k, slow_d


def mfi(high: F64, low: F64, close: F64, volume: F64, n: int = 14) -> F64:
    """Money flow index (0-100); first value at session ``n``. Total flow < 1 gives 0."""
    tp = (high + low + close) / 3.0
    flow = tp * volume
    pos = np.zeros(close.size)
    neg = np.zeros(close.size)
    pos[1:] = np.where(tp[1:] > tp[:-1], flow[1:], 0.0)
    neg[1:] = np.where(tp[1:] < tp[:-1], flow[1:], 0.0)
    out = np.full(close.size, np.nan)
    if close.size > n:
        p = sliding_window_view(pos[1:], n).sum(axis=1)
        q = sliding_window_view(neg[1:], n).sum(axis=1)
        total = p + q
        out[n:] = np.where(total < 1.0, 0.0, _ratio(p, total, 100.0))
    return out


# --- the table ----------------------------------------------------------------------------------


def _as_f64(name: str, values: ArrayLike, size: int | None) -> F64:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataValidationError(f"compute_technical: {name} must be one-dimensional")
    if size is not None and arr.size != size:
        raise DataValidationError(
            f"compute_technical: {name} has {arr.size} values, expected {size} (one per date)"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataValidationError(
            f"compute_technical: {name} is not finite at row {int(bad[0])} ({arr[bad[0]]})"
        )
    return arr


def compute_technical(
    dates: Sequence[dt.date] | ArrayLike,
    open: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    volume: ArrayLike,
) -> pa.Table:
    """Compute every ``signals_technical`` column for one ticker's full history.

    Parameters
    ----------
    dates : sequence of datetime.date or array-like of datetime64[D]
        Exchange session dates, strictly increasing (no time zone).
    open, high, low, close : array-like of float
        Split-adjusted prices (trading currency per share, basis of the last row). ``open`` is
        accepted for a uniform OHLCV call but no current indicator uses it.
    volume : array-like of float
        Split-adjusted volume in shares.

    Returns
    -------
    pyarrow.Table
        Exactly :data:`marketlake.schemas.datasets.SIGNALS_TECHNICAL`'s schema, one row per
        session; warm-up rows (see :data:`FIRST_VALID`) are null.

    Raises
    ------
    DataValidationError
        Mismatched lengths, non-finite inputs or dates that are not strictly increasing.
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    if days.ndim != 1:
        raise DataValidationError("compute_technical: dates must be one-dimensional")
    size = days.size
    if size > 1:
        bad = np.flatnonzero(days[1:] <= days[:-1])
        if bad.size:
            i = int(bad[0]) + 1
            raise DataValidationError(
                f"compute_technical: dates are not strictly increasing at row {i} ({days[i]})"
            )
    _as_f64("open", open, size)
    h = _as_f64("high", high, size)
    lo = _as_f64("low", low, size)
    c = _as_f64("close", close, size)
    v = _as_f64("volume", volume, size)

    sma20 = _rolling(c, 20, "mean")
    std20 = _rolling_pstd(c, 20, sma20)
    line, signal, hist = macd(c)
    stoch_k, stoch_d = stochastic(h, lo, c)
    roc = np.full(size, np.nan)
    roc[10:] = _ratio(c[10:] - c[:-10], c[:-10], 100.0)
    hh14 = _rolling(h, 14, "max")
    ll14 = _rolling(lo, 14, "min")
    tp = (h + lo + c) / 3.0
    tp_sma = _rolling(tp, 20, "mean")
    direction = np.zeros(size)
    direction[1:] = np.sign(np.diff(c))
    obv = np.cumsum(direction * v)
    if size:
        obv += v[0]  # TA-Lib starts OBV at the first session's volume

    columns: dict[str, F64] = {
        "rsi_14": rsi(c),
        "sma_20": sma20,
        "sma_50": _rolling(c, 50, "mean"),
        "ema_20": _ema(c, 20, 19),
        "macd": line,
        "macd_signal": signal,
        "bb_upper": sma20 + 2.0 * std20,
        "bb_lower": sma20 - 2.0 * std20,
        "sma_200": _rolling(c, 200, "mean"),
        "macd_hist": hist,
        "bb_middle": sma20,
        "atr_14": _wilder_mean(_true_range(h, lo, c), 14, 14),
        "obv": obv,
        "stoch_k": stoch_k,
        "stoch_d": stoch_d,
        "adx_14": adx(h, lo, c),
        "roc_10": roc,
        "williams_r_14": _ratio(hh14 - c, hh14 - ll14, -100.0),
        "cci_20": _ratio(tp - tp_sma, 0.015 * _rolling_mad(tp, 20, tp_sma)),
        "mfi_14": mfi(h, lo, c, v),
    }
    index = np.arange(size)
    arrays: list[pa.Array] = [pa.array(days, type=pa.date32())]
    for field in SIGNALS_TECHNICAL.schema:
        if field.name == "date":
            continue
        values = columns[field.name]
        arrays.append(pa.array(values, type=pa.float64(), mask=index < FIRST_VALID[field.name]))
    return pa.Table.from_arrays(arrays, schema=SIGNALS_TECHNICAL.schema)
