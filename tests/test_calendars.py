"""Behavioural tests for marketlake.calendars (offline: exchange_calendars ships its rules)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketlake import calendars
from marketlake.calendars import (
    CalendarRangeError,
    is_session,
    last_session_on_or_before,
    previous_session,
    sessions,
    sessions_array,
)
from marketlake.errors import ConfigError, MarketlakeError

D = dt.date


# --- holidays and half days --------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        D(2024, 1, 1),  # New Year's Day
        D(2024, 1, 15),  # Martin Luther King Jr. Day
        D(2024, 3, 29),  # Good Friday
        D(2024, 7, 4),  # Independence Day
        D(2024, 11, 28),  # Thanksgiving
        D(2024, 12, 25),  # Christmas
        D(2025, 1, 9),  # national day of mourning (President Carter)
        D(2001, 9, 11),  # markets closed after the attacks
        D(2024, 7, 6),  # Saturday
        D(2024, 7, 7),  # Sunday
    ],
)
def test_holidays_and_weekends_are_not_sessions(day: dt.date) -> None:
    assert not is_session(day)
    assert day not in sessions(day - dt.timedelta(days=3), day + dt.timedelta(days=3))


@pytest.mark.parametrize(
    "day",
    [
        D(2024, 11, 29),  # day after Thanksgiving: early close at 13:00, still a session
        D(2024, 7, 3),  # early close before Independence Day
        D(2024, 12, 24),  # Christmas Eve early close
        D(2024, 7, 5),
        D(2000, 1, 3),
    ],
)
def test_half_days_and_ordinary_days_are_sessions(day: dt.date) -> None:
    assert is_session(day)
    assert sessions(day, day) == [day]


def test_year_2024_has_252_sessions() -> None:
    assert len(sessions(D(2024, 1, 1), D(2024, 12, 31))) == 252


# --- ranges ------------------------------------------------------------------------------------


def test_range_is_inclusive_at_both_ends() -> None:
    assert sessions(D(2024, 7, 3), D(2024, 7, 5)) == [D(2024, 7, 3), D(2024, 7, 5)]
    assert sessions(D(2024, 7, 1), D(2024, 7, 8)) == [
        D(2024, 7, 1),
        D(2024, 7, 2),
        D(2024, 7, 3),
        D(2024, 7, 5),
        D(2024, 7, 8),
    ]


def test_empty_ranges() -> None:
    assert sessions(D(2024, 7, 5), D(2024, 7, 3)) == []  # end before start
    assert sessions(D(2024, 7, 6), D(2024, 7, 7)) == []  # weekend only
    assert sessions(D(2024, 12, 25), D(2024, 12, 25)) == []  # holiday only
    assert sessions_array(D(2024, 7, 6), D(2024, 7, 7)).size == 0


def test_sessions_array_matches_list_and_is_read_only() -> None:
    arr = sessions_array(D(2023, 1, 1), D(2024, 12, 31))
    assert arr.dtype == np.dtype("datetime64[D]")
    assert arr.tolist() == sessions(D(2023, 1, 1), D(2024, 12, 31))
    assert np.all(np.diff(arr).astype(int) > 0)
    with pytest.raises(ValueError):
        arr[0] = np.datetime64("1999-01-01")


def test_datetime_inputs_are_truncated_to_dates() -> None:
    start = dt.datetime(2024, 7, 3, 23, 59, tzinfo=dt.UTC)
    assert sessions(start, dt.datetime(2024, 7, 5, 0, 1)) == [D(2024, 7, 3), D(2024, 7, 5)]
    assert is_session(dt.datetime(2024, 7, 5, 12, 0))


def test_ranges_outside_coverage_are_clipped_not_errors() -> None:
    early = sessions(D(1980, 1, 1), D(1990, 1, 5))
    assert early[0] == D(1990, 1, 2)  # coverage starts 1990-01-01; 1 Jan is a holiday
    assert early[-1] == D(1990, 1, 5)
    assert sessions(D(1970, 1, 1), D(1975, 12, 31)) == []
    assert not is_session(D(1985, 1, 2))
    late = sessions(D(2100, 12, 27), D(2200, 1, 1))
    assert late and late[-1] <= calendars.MAX_CALENDAR_END
    assert sessions(D(2150, 1, 1), D(2160, 1, 1)) == []


def test_requests_beyond_default_end_extend_the_calendar() -> None:
    far = sessions(D(2040, 7, 1), D(2040, 7, 6))
    assert far == [D(2040, 7, 2), D(2040, 7, 3), D(2040, 7, 5), D(2040, 7, 6)]
    assert not is_session(D(2040, 7, 4))
    # earlier answers are unchanged by the rebuild
    assert sessions(D(2024, 7, 3), D(2024, 7, 5)) == [D(2024, 7, 3), D(2024, 7, 5)]


# --- point lookups -----------------------------------------------------------------------------


def test_previous_session() -> None:
    assert previous_session(D(2024, 7, 5)) == D(2024, 7, 3)  # skips the holiday
    assert previous_session(D(2024, 7, 8)) == D(2024, 7, 5)  # Monday -> Friday
    assert previous_session(D(2024, 7, 7)) == D(2024, 7, 5)  # from a Sunday
    assert previous_session(D(2024, 1, 2)) == D(2023, 12, 29)  # across New Year


def test_last_session_on_or_before() -> None:
    assert last_session_on_or_before(D(2024, 7, 5)) == D(2024, 7, 5)
    assert last_session_on_or_before(D(2024, 7, 4)) == D(2024, 7, 3)
    assert last_session_on_or_before(D(2024, 7, 7)) == D(2024, 7, 5)


def test_lookups_outside_coverage_raise_a_clear_error() -> None:
    with pytest.raises(CalendarRangeError, match="1990-01-02"):
        previous_session(D(1990, 1, 2))
    with pytest.raises(CalendarRangeError):
        last_session_on_or_before(D(1989, 12, 31))
    with pytest.raises(CalendarRangeError, match="after the end"):
        previous_session(D(2300, 1, 1))
    with pytest.raises(CalendarRangeError) as info:
        previous_session(D(1980, 1, 1))
    assert isinstance(info.value, MarketlakeError) and isinstance(info.value, ValueError)


# --- other calendars and names -----------------------------------------------------------------


def test_other_calendars_and_aliases() -> None:
    assert not is_session(D(2024, 12, 26), "XLON")  # Boxing Day
    assert is_session(D(2024, 12, 26))  # but NYSE trades
    assert sessions(D(2024, 7, 1), D(2024, 7, 8), "NYSE") == sessions(D(2024, 7, 1), D(2024, 7, 8))


def test_unknown_calendar_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown trading calendar 'NOPE'"):
        sessions(D(2024, 1, 1), D(2024, 1, 31), "NOPE")
    with pytest.raises(ConfigError):
        is_session(D(2024, 1, 2), "xnys-typo")


def test_import_does_not_load_exchange_calendars() -> None:
    code = (
        "import sys, marketlake.calendars; "
        "assert 'exchange_calendars' not in sys.modules, 'imported eagerly'"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- properties --------------------------------------------------------------------------------

days_2000s = st.dates(min_value=D(1995, 1, 1), max_value=D(2035, 12, 31))


@settings(max_examples=200, deadline=None)
@given(a=days_2000s, b=days_2000s)
def test_sessions_are_the_session_days_in_the_range(a: dt.date, b: dt.date) -> None:
    start, end = min(a, b), max(a, b)
    if (end - start).days > 40:
        end = start + dt.timedelta(days=40)
    got = sessions(start, end)
    every_day = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    assert got == [d for d in every_day if is_session(d)]
    assert all(d.weekday() < 5 for d in got)


@settings(max_examples=200, deadline=None)
@given(day=st.dates(min_value=D(1991, 1, 1), max_value=D(2035, 12, 31)))
def test_previous_session_is_the_nearest_earlier_session(day: dt.date) -> None:
    prev = previous_session(day)
    assert prev < day and is_session(prev)
    assert sessions(prev + dt.timedelta(days=1), day - dt.timedelta(days=1)) == []
    on_or_before = last_session_on_or_before(day)
    assert on_or_before == (day if is_session(day) else prev)
