"""Trading-calendar helpers over :mod:`exchange_calendars`.

Every date handled here is an **exchange session date**: a plain calendar date with no time zone,
naming the trading day in the exchange's own local calendar (``2024-11-29`` is the NYSE session
of 29 November 2024, whatever the clock says in UTC). Ranges are **inclusive** at both ends.

``exchange_calendars`` imports pandas and takes a few hundred milliseconds to load, so it is
imported lazily, on the first call that needs a calendar; ``import marketlake`` stays fast.

Coverage
--------
A calendar is built once per process and cached. It covers :data:`CALENDAR_START`
(1990-01-01, or the calendar's own first supported date if later) through the later of
31 December of *today's year + 2* and the latest date asked for so far; a request beyond the
current coverage rebuilds the calendar with a later end (never past :data:`MAX_CALENDAR_END`
nor the calendar's own last supported date). Outside the coverage nothing is known:

* range functions (:func:`sessions`, :func:`sessions_array`) **clip** silently, returning only the
  sessions inside the coverage (possibly none);
* :func:`is_session` answers ``False``;
* :func:`previous_session` and :func:`last_session_on_or_before` raise
  :class:`CalendarRangeError` when the answer would lie outside the coverage.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from marketlake.errors import ConfigError, MarketlakeError

__all__ = [
    "CALENDAR_START",
    "DEFAULT_CALENDAR",
    "MAX_CALENDAR_END",
    "CalendarRangeError",
    "is_session",
    "last_session_on_or_before",
    "previous_session",
    "sessions",
    "sessions_array",
]

DEFAULT_CALENDAR = "XNYS"
"""Calendar used when none is named: the New York Stock Exchange (ISO 10383 MIC)."""

CALENDAR_START = dt.date(1990, 1, 1)
"""First date a calendar covers (later when the calendar itself starts later)."""

MAX_CALENDAR_END = dt.date(2100, 12, 31)
"""Hard upper bound of the coverage: later dates are clipped (ranges) or refused (lookups)."""

_HORIZON_YEARS = 2

DateArray = npt.NDArray[np.datetime64]


class CalendarRangeError(MarketlakeError, ValueError):
    """A calendar lookup asked about a date outside the calendar's coverage.

    Raised by :func:`previous_session` and :func:`last_session_on_or_before` when the answer is
    not known (for example the session before the first covered session).
    """


@dataclass(frozen=True)
class _Coverage:
    """One built calendar: its coverage and its sessions as a read-only ``datetime64[D]`` array."""

    calendar: Any  # exchange_calendars.ExchangeCalendar (untyped library)
    first: dt.date  # first covered date (inclusive)
    last: dt.date  # last covered date (inclusive)
    ceiling: dt.date  # latest end this calendar may ever be rebuilt with
    days: DateArray


_lock = threading.Lock()
_current: dict[str, _Coverage] = {}


def _as_date(value: dt.date) -> dt.date:
    """Coerce a ``datetime`` (or ``pandas.Timestamp``) to its date; pass dates through."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a datetime.date, got {type(value).__name__} {value!r}")


def _to_date(value: Any) -> dt.date | None:
    """Convert a pandas ``Timestamp`` / ``None`` bound to a plain date."""
    if value is None:
        return None
    return cast(dt.date, value.date())


def _calendar_bounds(name: str) -> tuple[str, dt.date | None, dt.date | None]:
    """Resolve ``name`` and return ``(canonical_name, bound_min, bound_max)`` of its calendar."""
    import exchange_calendars as xc

    try:
        canonical = cast(str, xc.resolve_alias(name))
    except xc.errors.InvalidCalendarName:
        canonical = ""
    if canonical not in xc.get_calendar_names():
        raise ConfigError(
            f"unknown trading calendar {name!r}; use an exchange MIC such as 'XNYS' (NYSE) or "
            "'XLON' (see exchange_calendars.get_calendar_names() for the full list)",
            calendar=name,
        )
    # The calendar class exposes its supported range without building an instance. The dispatcher
    # has no public accessor for the class, so fall back to "unbounded" if its internals change.
    dispatcher = getattr(xc.calendar_utils, "global_calendar_dispatcher", None)
    factories = getattr(dispatcher, "_calendar_factories", {})
    factory = factories.get(canonical) if isinstance(factories, dict) else None
    if factory is None or not hasattr(factory, "bound_min"):
        return canonical, None, None
    return canonical, _to_date(factory.bound_min()), _to_date(factory.bound_max())


@functools.lru_cache(maxsize=32)
def _build(canonical: str, start: dt.date, end: dt.date, ceiling: dt.date) -> _Coverage:
    """Build (once per argument tuple) the calendar ``canonical`` over ``[start, end]``."""
    import exchange_calendars as xc

    calendar = xc.get_calendar(canonical, start=start.isoformat(), end=end.isoformat())
    days = np.asarray(calendar.sessions.values.astype("datetime64[D]"), dtype="datetime64[D]")
    days.setflags(write=False)
    return _Coverage(calendar=calendar, first=start, last=end, ceiling=ceiling, days=days)


def _coverage(name: str, need: dt.date) -> _Coverage:
    """Return a calendar covering ``need`` if possible (rebuilding with a later end if needed)."""
    cov = _current.get(name)
    if cov is not None and (need <= cov.last or cov.last >= cov.ceiling):
        return cov
    with _lock:
        cov = _current.get(name)
        if cov is not None and (need <= cov.last or cov.last >= cov.ceiling):
            return cov
        canonical, bound_min, bound_max = _calendar_bounds(name)
        ceiling = MAX_CALENDAR_END if bound_max is None else min(MAX_CALENDAR_END, bound_max)
        start = CALENDAR_START if bound_min is None else max(CALENDAR_START, bound_min)
        today = dt.date.today()
        end = max(dt.date(today.year + _HORIZON_YEARS, 12, 31), dt.date(need.year, 12, 31))
        if cov is not None:
            end = max(end, cov.last)
        end = max(min(end, ceiling), start)
        cov = _build(canonical, start, end, ceiling)
        _current[name] = cov
        return cov


def sessions_array(
    start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR
) -> npt.NDArray[np.datetime64]:
    """Return the sessions in ``[start, end]`` as a ``datetime64[D]`` NumPy array.

    This is the fast path (a binary search in a cached array); use it in hot loops.

    Parameters
    ----------
    start, end : datetime.date
        Inclusive bounds, as exchange session dates (no time zone). ``datetime`` values are
        truncated to their date. ``end < start`` gives an empty array.
    calendar : str, default "XNYS"
        ``exchange_calendars`` name or alias of the exchange (an ISO 10383 MIC such as "XNYS").

    Returns
    -------
    numpy.ndarray
        Sorted, read-only ``datetime64[D]`` array (a view of the cached calendar; copy it before
        modifying). Dates outside the calendar's coverage (see the module docstring) are clipped
        away, so the result may be empty.

    Raises
    ------
    ConfigError
        If ``calendar`` is not a known calendar name.
    """
    lo_day, hi_day = _as_date(start), _as_date(end)
    cov = _coverage(calendar, hi_day)
    if hi_day < lo_day:
        return cov.days[:0]
    days = cov.days
    lo = int(np.searchsorted(days, np.datetime64(lo_day, "D"), side="left"))
    hi = int(np.searchsorted(days, np.datetime64(hi_day, "D"), side="right"))
    return days[lo:hi]


def sessions(start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """Return the sessions in ``[start, end]`` as a list of :class:`datetime.date`.

    Parameters
    ----------
    start, end : datetime.date
        Inclusive bounds, as exchange session dates (no time zone). ``end < start`` gives ``[]``.
    calendar : str, default "XNYS"
        ``exchange_calendars`` name or alias of the exchange.

    Returns
    -------
    list of datetime.date
        Sessions in ascending order. Half days (early closes) are sessions. Dates outside the
        calendar's coverage are clipped away (see the module docstring).

    Raises
    ------
    ConfigError
        If ``calendar`` is not a known calendar name.

    Examples
    --------
    >>> import datetime as dt
    >>> sessions(dt.date(2024, 7, 3), dt.date(2024, 7, 5))
    [datetime.date(2024, 7, 3), datetime.date(2024, 7, 5)]
    """
    return cast(list[dt.date], sessions_array(start, end, calendar).tolist())


def is_session(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> bool:
    """Return True when ``day`` is a trading session of ``calendar``.

    Parameters
    ----------
    day : datetime.date
        Exchange session date (no time zone). Half days count as sessions.
    calendar : str, default "XNYS"
        ``exchange_calendars`` name or alias of the exchange.

    Returns
    -------
    bool
        False for weekends, holidays and any date outside the calendar's coverage.
    """
    d = _as_date(day)
    cov = _coverage(calendar, d)
    if d < cov.first or d > cov.last:
        return False
    target = np.datetime64(d, "D")
    i = int(np.searchsorted(cov.days, target, side="left"))
    return i < cov.days.size and bool(cov.days[i] == target)


def _lookup(day: dt.date, calendar: str, *, inclusive: bool) -> dt.date:
    d = _as_date(day)
    cov = _coverage(calendar, d)
    if d > cov.last:
        raise CalendarRangeError(
            f"{d.isoformat()} is after the end of the {calendar} calendar "
            f"({cov.last.isoformat()}); sessions that far ahead are not known",
            calendar=calendar,
            day=d.isoformat(),
        )
    side: Literal["left", "right"] = "right" if inclusive else "left"
    i = int(np.searchsorted(cov.days, np.datetime64(d, "D"), side=side)) - 1
    if i < 0:
        what = "on or before" if inclusive else "before"
        first = cov.days[0].item().isoformat() if cov.days.size else cov.first.isoformat()
        raise CalendarRangeError(
            f"no {calendar} session {what} {d.isoformat()} is known: the calendar starts at "
            f"{first}",
            calendar=calendar,
            day=d.isoformat(),
        )
    return cast(dt.date, cov.days[i].item())


def previous_session(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """Return the last session strictly before ``day``.

    Parameters
    ----------
    day : datetime.date
        Exchange session date (no time zone); it need not be a session itself.
    calendar : str, default "XNYS"
        ``exchange_calendars`` name or alias of the exchange.

    Returns
    -------
    datetime.date
        The latest session ``< day``.

    Raises
    ------
    CalendarRangeError
        If no covered session lies before ``day`` or ``day`` is beyond the coverage.
    ConfigError
        If ``calendar`` is not a known calendar name.
    """
    return _lookup(day, calendar, inclusive=False)


def last_session_on_or_before(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """Return ``day`` if it is a session, else the last session before it.

    Parameters
    ----------
    day : datetime.date
        Exchange session date (no time zone).
    calendar : str, default "XNYS"
        ``exchange_calendars`` name or alias of the exchange.

    Returns
    -------
    datetime.date
        The latest session ``<= day``.

    Raises
    ------
    CalendarRangeError
        If no covered session lies on or before ``day`` or ``day`` is beyond the coverage.
    ConfigError
        If ``calendar`` is not a known calendar name.
    """
    return _lookup(day, calendar, inclusive=True)
