"""Behavioural tests for the synthetic source (offline, deterministic)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake import calendars
from marketlake.errors import SourceError
from marketlake.schemas import get_dataset, normalize_ticker
from marketlake.sources import Source, SourceRequest, synthetic
from marketlake.sources.synthetic import (
    FILING_LAG_DAYS,
    HORIZON,
    ORIGIN,
    SyntheticSource,
    demo_universe,
)

D = dt.date
ALL = ("prices", "signals_valuation", "signals_technical", "fundamentals")
DAILY = ("prices", "signals_valuation", "signals_technical")
TWO_YEARS = (D(2023, 1, 1), D(2024, 12, 31))


def get(
    ticker: str,
    start: dt.date,
    end: dt.date,
    datasets: tuple[str, ...] = ALL,
    seed: int = 7,
) -> dict[str, pa.Table]:
    source = SyntheticSource(seed)
    request = SourceRequest(ticker, datasets, start, end)
    return source.parse(request, source.fetch(request))


@lru_cache(maxsize=8)
def full_history(ticker: str, seed: int = 7) -> dict[str, pa.Table]:
    return get(ticker, D(1990, 1, 1), D(2040, 12, 31), seed=seed)


def frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def first_ticker_with(
    predicate: Callable[[synthetic.SyntheticActions], bool], limit: int = 300
) -> str:
    source = SyntheticSource()
    for ticker in demo_universe(limit):
        if predicate(source.corporate_actions(ticker)):
            return ticker
    raise AssertionError("no ticker in the demo universe matches")


# --- the source contract -----------------------------------------------------------------------


def test_source_declaration() -> None:
    source = SyntheticSource()
    assert isinstance(source, Source)
    assert source.name == "synthetic"
    assert source.datasets == (*ALL, "corporate_actions")
    assert source.settings == ()
    assert source.description
    assert source.seed == 7
    reqs = source.plan(["AAPL", "MSFT"], ["prices", "bars_minute"], *TWO_YEARS)
    assert [r.ticker for r in reqs] == ["AAPL", "MSFT"]
    assert reqs[0].datasets == ("prices",)


def test_corporate_actions_are_the_generated_splits_and_dividends() -> None:
    source = SyntheticSource()
    req = SourceRequest("NVDA", ("corporate_actions",), dt.date(2000, 1, 1), dt.date(2030, 12, 31))
    table = source.get(req)["corporate_actions"]
    acts = source.corporate_actions("NVDA")
    splits = table.filter(pc.equal(table.column("action"), "split"))
    assert splits.column("ex_date").to_pylist() == acts.split_dates
    assert splits.column("value").to_pylist() == acts.split_ratios
    divs = table.filter(pc.equal(table.column("action"), "dividend"))
    assert divs.num_rows == len(acts.dividend_dates)


def test_schemas_match_the_registry_exactly() -> None:
    tables = get("AAPL", *TWO_YEARS)
    assert set(tables) == set(ALL)
    for name, table in tables.items():
        schema = get_dataset(name).schema
        assert table.schema.equals(schema), name
        assert table.column_names == schema.names
        for field in schema:
            if not field.nullable:
                assert table.column(field.name).null_count == 0, (name, field.name)


def test_fetch_returns_plain_numpy_arrays_and_parse_is_pure() -> None:
    source = SyntheticSource()
    request = SourceRequest("MSFT", ALL, *TWO_YEARS)
    raw = source.fetch(request)
    assert set(raw) == set(ALL)
    for columns in raw.values():
        assert all(isinstance(v, np.ndarray) for v in columns.values())
    first = source.parse(request, raw)
    second = source.parse(request, raw)
    assert all(first[k].equals(second[k]) for k in first)


def test_parse_drops_rows_outside_the_request() -> None:
    source = SyntheticSource()
    wide = SourceRequest("MSFT", ALL, *TWO_YEARS)
    narrow = SourceRequest("MSFT", ALL, D(2024, 3, 1), D(2024, 4, 30))
    tables = source.parse(narrow, source.fetch(wide))
    for name, table in tables.items():
        column = get_dataset(name).time_column
        dates = table.column(column).to_pylist()
        assert min(dates) >= narrow.start and max(dates) <= narrow.end
    assert tables["fundamentals"].column("period_end").to_pylist() == [D(2024, 3, 31)]
    assert tables["prices"].equals(source.get(narrow)["prices"])


def test_only_requested_datasets_are_returned() -> None:
    assert set(get("AAPL", *TWO_YEARS, datasets=("prices",))) == {"prices"}
    assert set(get("AAPL", *TWO_YEARS, datasets=("fundamentals", "signals_technical"))) == {
        "fundamentals",
        "signals_technical",
    }


def test_unknown_dataset_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="bars_minute"):
        get("AAPL", *TWO_YEARS, datasets=("prices", "bars_minute"))


# --- empty results -----------------------------------------------------------------------------


def test_empty_range_omits_every_dataset() -> None:
    assert get("AAPL", D(2024, 7, 5), D(2024, 7, 3)) == {}


def test_weekend_only_range_omits_daily_datasets() -> None:
    assert get("AAPL", D(2024, 7, 6), D(2024, 7, 7)) == {}
    # 2024-03-30/31 is a weekend that contains a quarter end: only fundamentals have a row
    tables = get("AAPL", D(2024, 3, 30), D(2024, 3, 31))
    assert set(tables) == {"fundamentals"}
    assert tables["fundamentals"].num_rows == 1


def test_holiday_and_out_of_axis_ranges_are_empty() -> None:
    assert get("AAPL", D(2024, 12, 25), D(2024, 12, 25), DAILY) == {}
    assert get("AAPL", D(1990, 1, 1), D(1997, 12, 31)) == {}
    assert get("AAPL", D(2031, 1, 1), D(2031, 12, 31)) == {}


def test_history_spans_the_fixed_axis() -> None:
    tables = full_history("AAPL")
    dates = tables["prices"].column("date").to_pylist()
    assert dates[0] == ORIGIN and dates[-1] == HORIZON
    assert dates == calendars.sessions(ORIGIN, HORIZON)
    assert tables["signals_technical"].column("date").to_pylist() == dates
    assert tables["signals_valuation"].column("date").to_pylist() == dates


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("ticker", ["AAPL", "BRK.B", "SYN0042"])
def test_one_day_equals_the_same_day_of_a_two_year_range(ticker: str) -> None:
    wide = get(ticker, *TWO_YEARS, DAILY)
    for day in (D(2023, 1, 3), D(2023, 6, 30), D(2024, 2, 29), D(2024, 12, 31)):
        narrow = get(ticker, day, day, DAILY)
        for name in DAILY:
            row = wide[name].filter(pc.equal(wide[name].column("date"), pa.scalar(day)))
            assert narrow[name].equals(row), (ticker, name, day)


def test_values_do_not_depend_on_other_tickers_or_cache_state() -> None:
    alone = get("AAPL", *TWO_YEARS)
    synthetic._history.cache_clear()
    for other in demo_universe(30):
        get(other, *TWO_YEARS)
    with_others = get("AAPL", *TWO_YEARS)
    assert all(alone[k].equals(with_others[k]) for k in ALL)


def test_reruns_are_byte_identical() -> None:
    def ipc_bytes(tables: dict[str, pa.Table]) -> dict[str, bytes]:
        out = {}
        for name, table in tables.items():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            out[name] = sink.getvalue().to_pybytes()
        return out

    first = ipc_bytes(get("NVDA", *TWO_YEARS))
    synthetic._history.cache_clear()
    assert ipc_bytes(get("NVDA", *TWO_YEARS)) == first


def test_same_seed_same_data_different_seed_different_data() -> None:
    a = get("AAPL", *TWO_YEARS, seed=11)
    b = SyntheticSource(11).get(SourceRequest("AAPL", ALL, *TWO_YEARS))
    c = get("AAPL", *TWO_YEARS, seed=12)
    assert all(a[k].equals(b[k]) for k in ALL)
    assert not a["prices"].equals(c["prices"])
    assert not a["fundamentals"].equals(c["fundamentals"])
    assert not get("MSFT", *TWO_YEARS)["prices"].equals(get("AAPL", *TWO_YEARS)["prices"])


@settings(max_examples=40, deadline=None)
@given(
    ticker=st.sampled_from(["AAPL", "KO", "SYN0007", "SYN0123"]),
    offset=st.integers(0, 729),
    length=st.integers(0, 200),
)
def test_random_sub_ranges_match_the_full_range(ticker: str, offset: int, length: int) -> None:
    start = TWO_YEARS[0] + dt.timedelta(days=offset)
    end = min(start + dt.timedelta(days=length), TWO_YEARS[1])
    full = get(ticker, *TWO_YEARS)
    part = get(ticker, start, end)
    for name in ALL:
        column = get_dataset(name).time_column
        dates = full[name].column(column)
        mask = pc.and_(
            pc.greater_equal(dates, pa.scalar(start)), pc.less_equal(dates, pa.scalar(end))
        )
        expected = full[name].filter(mask)
        if expected.num_rows == 0:
            assert name not in part
        else:
            assert part[name].equals(expected), (name, start, end)


# --- prices ------------------------------------------------------------------------------------


def test_no_nan_or_inf_anywhere() -> None:
    for ticker in ("AAPL", "SYN0001", "SYN0002"):
        for name, table in full_history(ticker).items():
            for column_name, column in zip(table.column_names, table.columns, strict=True):
                if pa.types.is_floating(column.type):
                    values = column.drop_null().to_numpy()
                    assert np.isfinite(values).all(), (ticker, name, column_name)


@pytest.mark.parametrize("ticker", demo_universe(12))
def test_ohlc_consistency_and_volume(ticker: str) -> None:
    df = frame(full_history(ticker)["prices"])
    assert (df[["open", "high", "low", "close", "adj_close"]] > 0).all().all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert df["volume"].dtype == np.int64 and (df["volume"] >= 0).all()
    assert 1e4 < df["volume"].median() < 1e9
    assert (df["close"] == df["close"].round(4)).all()  # quoted in cents (1/100 cent below $1)


@pytest.mark.parametrize("ticker", demo_universe(40))
def test_prices_are_realistic(ticker: str) -> None:
    df = frame(full_history(ticker)["prices"])
    assert 4.0 < df["close"].iloc[0] < 600.0  # starting prices 5-500
    assert df["close"].min() > 0.01 and df["close"].max() < 5000.0
    # daily volatility of total returns (adj_close is continuous across splits and dividends)
    vol = np.diff(np.log(df["adj_close"].to_numpy())).std()
    assert 0.007 < vol < 0.04


def test_splits_jump_raw_prices_but_not_adj_close() -> None:
    source = SyntheticSource()
    ticker = first_ticker_with(lambda a: any(r >= 2 for r in a.split_ratios))
    actions = source.corporate_actions(ticker)
    df = frame(full_history(ticker)["prices"]).set_index("date")
    for ex_date, ratio in zip(actions.split_dates, actions.split_ratios, strict=True):
        i = df.index.get_loc(ex_date)
        before, on = df.iloc[i - 1], df.iloc[i]
        raw_jump = math.log(before["close"] / on["close"])
        assert abs(raw_jump - math.log(ratio)) < 0.25, (ex_date, ratio, raw_jump)
        assert abs(math.log(on["adj_close"] / before["adj_close"])) < 0.25
        # the adjustment factor steps by exactly the split ratio (times any same-day dividend)
        factor_before = before["adj_close"] / before["close"]
        factor_on = on["adj_close"] / on["close"]
        dividend = ex_date in actions.dividend_dates
        if not dividend:
            assert factor_on / factor_before == pytest.approx(ratio, rel=1e-9)
    # raw volume scales inversely: average volume is higher after a forward split
    first = next(
        d for d, r in zip(actions.split_dates, actions.split_ratios, strict=True) if r >= 2
    )
    i = df.index.get_loc(first)
    assert df["volume"].iloc[i : i + 20].mean() > df["volume"].iloc[i - 20 : i].mean()


def test_reverse_split_exists_and_multiplies_the_price() -> None:
    ticker = first_ticker_with(lambda a: any(r < 1 for r in a.split_ratios), limit=600)
    actions = SyntheticSource().corporate_actions(ticker)
    df = frame(full_history(ticker)["prices"]).set_index("date")
    ex_date = actions.split_dates[[r < 1 for r in actions.split_ratios].index(True)]
    i = df.index.get_loc(ex_date)
    assert df["close"].iloc[i] / df["close"].iloc[i - 1] == pytest.approx(10.0, rel=0.25)


def test_dividends_adjust_adj_close_vendor_style() -> None:
    ticker = first_ticker_with(lambda a: len(a.dividend_dates) > 20 and not a.split_dates)
    actions = SyntheticSource().corporate_actions(ticker)
    df = frame(full_history(ticker)["prices"]).set_index("date")
    factor = df["adj_close"] / df["close"]
    for ex_date, amount in zip(actions.dividend_dates, actions.dividend_amounts, strict=True):
        i = df.index.get_loc(ex_date)
        expected = 1.0 - amount / df["close"].iloc[i - 1]
        assert factor.iloc[i - 1] / factor.iloc[i] == pytest.approx(expected, rel=1e-9)
        assert 0 < amount < 0.1 * df["close"].iloc[i - 1]  # fixed per year: yield drifts
    # between events the factor is constant, and it is 1 at the horizon
    events = set(actions.dividend_dates)
    changes = factor.index[1:][
        ~np.isclose(factor.to_numpy()[1:], factor.to_numpy()[:-1], rtol=1e-12)
    ]
    assert set(changes) <= events
    assert df["adj_close"].iloc[-1] == df["close"].iloc[-1]


def test_about_half_the_tickers_pay_dividends() -> None:
    source = SyntheticSource()
    payers = sum(bool(source.corporate_actions(t).dividend_dates) for t in demo_universe(200))
    assert 60 < payers < 140


def test_adj_close_is_relative_to_the_fixed_horizon() -> None:
    # Every split and dividend through 2030 is known up front: adj_close over 2023-2024 equals
    # close times the product of the factors of all events after each date, through HORIZON.
    ticker = first_ticker_with(lambda a: any(d.year > 2025 for d in a.split_dates))
    actions = SyntheticSource().corporate_actions(ticker)
    prices = frame(full_history(ticker)["prices"]).set_index("date")
    df = frame(get(ticker, *TWO_YEARS, ("prices",))["prices"]).set_index("date")
    for day in (df.index[0], df.index[-1]):
        factor = 1.0
        for ex_date, ratio in zip(actions.split_dates, actions.split_ratios, strict=True):
            if ex_date > day:
                factor /= ratio
        for ex_date, amount in zip(actions.dividend_dates, actions.dividend_amounts, strict=True):
            if ex_date > day:
                i = prices.index.get_loc(ex_date)
                prev = prices["close"].iloc[i - 1]
                ratio = dict(zip(actions.split_dates, actions.split_ratios, strict=True)).get(
                    ex_date, 1.0
                )
                factor *= 1.0 - amount / (prev / ratio)
        assert df.loc[day, "adj_close"] == pytest.approx(df.loc[day, "close"] * factor, rel=1e-9)


# --- signals_technical -------------------------------------------------------------------------


def split_adjusted_closes(ticker: str) -> pd.Series:
    """Closes over the whole axis in the share basis of the last session."""
    actions = SyntheticSource().corporate_actions(ticker)
    df = frame(full_history(ticker)["prices"]).set_index("date")
    basis = pd.Series(1.0, index=df.index)
    for ex_date, ratio in zip(actions.split_dates, actions.split_ratios, strict=True):
        basis[basis.index < ex_date] /= ratio
    return df["close"] * basis


def test_technical_signals_match_textbook_definitions() -> None:
    # splits before 2029, so the last 300 rows share the basis of the last session
    ticker = first_ticker_with(
        lambda a: len(a.split_dates) >= 2 and max(a.split_dates) < D(2029, 1, 1)
    )
    x = split_adjusted_closes(ticker)
    tech = frame(full_history(ticker)["signals_technical"]).set_index("date")
    tail = tech.index[-300:]

    def close(a: pd.Series, b: pd.Series, rel: float = 1e-9) -> None:
        expected = b.loc[tail].to_numpy()
        np.testing.assert_allclose(a.loc[tail].to_numpy(), expected, rtol=rel, atol=1e-9)

    close(tech["sma_20"], x.rolling(20).mean())
    close(tech["sma_50"], x.rolling(50).mean())
    close(tech["ema_20"], x.ewm(span=20, adjust=False).mean())
    macd = x.ewm(span=12, adjust=False).mean() - x.ewm(span=26, adjust=False).mean()
    close(tech["macd"], macd, rel=1e-7)
    signal = macd.iloc[25:].ewm(span=9, adjust=False).mean()
    close(tech["macd_signal"], signal, rel=1e-7)
    std = x.rolling(20).std(ddof=0)
    close(tech["bb_upper"], x.rolling(20).mean() + 2 * std, rel=1e-8)
    close(tech["bb_lower"], x.rolling(20).mean() - 2 * std, rel=1e-8)
    # Wilder RSI: seeded with the simple mean of the first 14 changes
    delta = x.diff().to_numpy()
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    avg_gain, avg_loss = gain[1:15].mean(), loss[1:15].mean()
    for t in range(15, len(x)):
        avg_gain = (avg_gain * 13 + gain[t]) / 14
        avg_loss = (avg_loss * 13 + loss[t]) / 14
    assert tech["rsi_14"].iloc[-1] == pytest.approx(100 - 100 / (1 + avg_gain / avg_loss), rel=1e-9)


def test_technical_signals_are_in_the_rows_own_share_basis() -> None:
    ticker = first_ticker_with(lambda a: bool(a.split_dates) and a.split_dates[0] < D(2030, 1, 1))
    actions = SyntheticSource().corporate_actions(ticker)
    ex_date = actions.split_dates[0]
    tech = frame(full_history(ticker)["signals_technical"]).set_index("date")
    prices = frame(full_history(ticker)["prices"]).set_index("date")
    i = tech.index.get_loc(ex_date)
    # sma_20 tracks that day's raw close on both sides of the split
    for j in (i - 1, i, i + 1):
        assert 0.6 < tech["sma_20"].iloc[j] / prices["close"].iloc[j] < 1.6
    # and a window without splits is the plain mean of raw closes
    j = i + 30
    assert tech["sma_20"].iloc[j] == pytest.approx(prices["close"].iloc[j - 19 : j + 1].mean())


def test_warm_up_values_are_null_never_nan() -> None:
    tech = full_history("AAPL")["signals_technical"]
    first_valid = {
        "rsi_14": 14,
        "sma_20": 19,
        "sma_50": 49,
        "ema_20": 19,
        "macd": 25,
        "macd_signal": 33,
        "bb_upper": 19,
        "bb_lower": 19,
    }
    for name, first in first_valid.items():
        column = tech.column(name)
        assert column.null_count == first, name
        assert column.slice(0, first).null_count == first
        assert pc.all(pc.is_finite(column.slice(first))).as_py()
    rsi = tech.column("rsi_14").drop_null().to_numpy()
    assert ((rsi >= 0) & (rsi <= 100)).all()
    df = frame(tech).dropna()
    assert np.allclose(df["bb_upper"] - df["sma_20"], df["sma_20"] - df["bb_lower"])


# --- fundamentals ------------------------------------------------------------------------------


@pytest.mark.parametrize("ticker", ["AAPL", "SYN0001", "SYN0002", "JPM"])
def test_fundamentals_are_quarterly_and_consistent(ticker: str) -> None:
    table = full_history(ticker)["fundamentals"]
    assert table.schema.field("fiscal_year").type == pa.int32()
    assert table.schema.field("fiscal_quarter").type == pa.int32()
    df = frame(table)
    ends = pd.to_datetime(df["period_end"])
    assert (ends.dt.is_quarter_end).all()
    assert ends.diff().dropna().dt.days.between(89, 92).all()  # consecutive quarters
    assert df["fiscal_quarter"].between(1, 4).all()
    assert (df["fiscal_quarter"].diff().dropna() % 4 == 1).all()
    assert (df["free_cash_flow"] == df["operating_cash_flow"] - df["capex"]).all()
    assert (df["capex"] > 0).all()
    assert (df["revenue"] > 0).all() and (df["gross_profit"] <= df["revenue"]).all()
    assert (df["total_assets"] > df["total_liabilities"]).all()
    assert (df["shares_diluted"] > 0).all() and (df["cash_and_equivalents"] >= 0).all()
    assert (df["cash_and_equivalents"] < df["total_assets"]).all()
    eps = df["net_income"] / df["shares_diluted"]
    assert np.allclose(df["eps_diluted"], eps, atol=0.005 + 1e-9)
    yearly = df.groupby(ends.dt.year)["revenue"].sum()
    assert 1e6 < yearly.median() < 1e13  # USD, plausible company sizes


def test_fundamentals_are_deterministic_per_quarter() -> None:
    full = frame(full_history("AAPL")["fundamentals"]).set_index("period_end")
    one = frame(get("AAPL", D(2024, 6, 30), D(2024, 6, 30))["fundamentals"]).set_index("period_end")
    pd.testing.assert_frame_equal(one, full.loc[[D(2024, 6, 30)]])


def test_fiscal_year_follows_the_fiscal_year_end() -> None:
    years = set()
    for ticker in demo_universe(60):
        df = frame(get(ticker, ORIGIN, HORIZON, ("fundamentals",))["fundamentals"])
        q4 = df[df["fiscal_quarter"] == 4]
        months = {d.month for d in q4["period_end"]}
        assert len(months) == 1  # one fiscal year end per ticker
        assert all(q4["fiscal_year"] == [d.year for d in q4["period_end"]])
        years |= months
    assert 12 in years and len(years) > 1  # most December, some not


# --- signals_valuation -------------------------------------------------------------------------


def test_valuation_uses_fundamentals_after_the_filing_lag() -> None:
    ticker = "AAPL"
    actions = SyntheticSource().corporate_actions(ticker)
    fund = frame(full_history(ticker)["fundamentals"]).set_index("period_end")
    val = frame(full_history(ticker)["signals_valuation"]).set_index("date")
    prices = frame(full_history(ticker)["prices"]).set_index("date")
    checked = 0
    for day in val.index[val.index >= D(2021, 1, 1)][::7]:
        if any(day - dt.timedelta(days=600) < d <= day for d in actions.split_dates):
            continue  # keep share bases equal across the TTM window
        known = fund[[pe + dt.timedelta(days=FILING_LAG_DAYS) <= day for pe in fund.index]]
        ttm_eps = known["eps_diluted"].iloc[-4:].sum()
        earnings_yield = val.loc[day, "earnings_yield_ttm"]
        assert earnings_yield == pytest.approx(ttm_eps / prices.loc[day, "close"], rel=1e-9)
        if ttm_eps > 0:
            assert val.loc[day, "pe_ttm"] == pytest.approx(prices.loc[day, "close"] / ttm_eps)
        checked += 1
    assert checked > 50


def test_valuation_ratios_are_null_when_the_denominator_is_not_positive() -> None:
    found_negative = False
    for ticker in demo_universe(120):
        df = frame(get(ticker, ORIGIN, HORIZON, ("signals_valuation",))["signals_valuation"])
        pe, ey = df["pe_ttm"], df["earnings_yield_ttm"]
        assert ey.notna().all()  # the price is always positive
        assert (pe.isna() == (ey <= 0)).all()
        both = pe.notna()
        assert np.allclose(pe[both] * ey[both], 1.0)
        assert (pe[both] > 0).all() and (df["ps_ttm"].dropna() > 0).all()
        found_negative |= bool((ey <= 0).any())
    assert found_negative, "expected some loss-making quarters in the universe"


def test_valuation_magnitudes_are_plausible() -> None:
    medians = []
    for ticker in demo_universe(30):
        df = frame(get(ticker, *TWO_YEARS, ("signals_valuation",))["signals_valuation"])
        medians.append(df.drop(columns="date").median())
    med = pd.DataFrame(medians).median()
    assert 5 < med["pe_ttm"] < 60
    assert 0.5 < med["ps_ttm"] < 15
    assert 3 < med["ev_ebitda_ttm"] < 40
    assert -0.05 < med["fcf_yield_ttm"] < 0.2


# --- demo universe -----------------------------------------------------------------------------


def test_demo_universe() -> None:
    assert demo_universe(0) == []
    tickers = demo_universe(150)
    assert len(tickers) == len(set(tickers)) == 150
    assert tickers[:3] == ["AAPL", "MSFT", "NVDA"] and "BRK.B" in tickers
    assert tickers[-1] == f"SYN{150 - 60:04d}"
    assert demo_universe(150) == tickers and demo_universe(10) == tickers[:10]
    assert all(normalize_ticker(t) == t for t in tickers)
    assert len(set(demo_universe(12_000))) == 12_000
    with pytest.raises(ValueError):
        demo_universe(-1)
