"""TA-Lib reference values for every ``signals_technical`` column (tests and benchmarks).

TA-Lib is a test-only dependency: the caller passes the imported ``talib`` module, so importing
this file never needs it. Parameters are the conventional ones marketlake follows (see
:mod:`marketlake.derive.technical`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def talib_reference(talib: Any, high: F64, low: F64, close: F64, volume: F64) -> dict[str, F64]:
    """TA-Lib's values for the 20 ``signals_technical`` columns (15 TA-Lib functions), over
    split-adjusted float64 arrays, oldest first; NaN during TA-Lib's warm-up."""
    h, lo, c, v = high, low, close, volume
    m, sig, hist = talib.MACD(c, 12, 26, 9)
    up, mid, bottom = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    k, d = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    return {
        "rsi_14": talib.RSI(c, 14),
        "sma_20": talib.SMA(c, 20),
        "sma_50": talib.SMA(c, 50),
        "sma_200": talib.SMA(c, 200),
        "ema_20": talib.EMA(c, 20),
        "macd": m,
        "macd_signal": sig,
        "macd_hist": hist,
        "bb_upper": up,
        "bb_middle": mid,
        "bb_lower": bottom,
        "atr_14": talib.ATR(h, lo, c, 14),
        "obv": talib.OBV(c, v),
        "stoch_k": k,
        "stoch_d": d,
        "adx_14": talib.ADX(h, lo, c, 14),
        "roc_10": talib.ROC(c, 10),
        "williams_r_14": talib.WILLR(h, lo, c, 14),
        "cci_20": talib.CCI(h, lo, c, 20),
        "mfi_14": talib.MFI(h, lo, c, v, 14),
    }
