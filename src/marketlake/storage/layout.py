"""Key layout templates: how (dataset, ticker, period) becomes an object key.

A template is a ``/``-separated string with placeholders in braces::

    {dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet   # monthly files (the default)
    {dataset}/v{version}/{TICKER}/{YYYY}/data.parquet        # yearly files
    {dataset}/v{version}/{TICKER}/data.parquet               # one file per ticker

The placeholders present decide the partition *grain*: ``{MM}`` (with ``{YYYY}``) means one object
per month, ``{YYYY}`` alone one per year, neither one per ticker. Every key can be computed from the
ticker and a date, so readers never need LIST. Templates are validated when a lake opens
(:class:`~marketlake.errors.LayoutError` names the bad placeholder), in the spirit of dlt's
``check_layout``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from marketlake.errors import LayoutError

Grain = Literal["month", "year", "all"]

PLACEHOLDERS = frozenset({"dataset", "version", "TICKER", "YYYY", "MM"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ALL_PERIOD = "all"


@dataclass(frozen=True)
class Layout:
    """A validated key template. Build with :meth:`parse`."""

    template: str
    grain: Grain

    @classmethod
    def parse(cls, template: str) -> Layout:
        """Validate ``template`` and return a :class:`Layout`.

        Raises
        ------
        LayoutError
            Unknown or missing placeholders, ``{MM}`` without ``{YYYY}``, empty segments,
            ``..``, a leading or trailing ``/``.
        """
        found = _PLACEHOLDER.findall(template)
        unknown = sorted(set(found) - PLACEHOLDERS)
        if unknown:
            raise LayoutError(
                f"layout {template!r} has unknown placeholder(s) {unknown}; "
                f"allowed: {sorted(PLACEHOLDERS)}",
                layout=template,
            )
        stripped = _PLACEHOLDER.sub("x", template)
        if "{" in stripped or "}" in stripped:
            raise LayoutError(f"layout {template!r} has an unbalanced brace", layout=template)
        for required in ("dataset", "TICKER"):
            if required not in found:
                raise LayoutError(
                    f"layout {template!r} must contain {{{required}}} so that keys are unique",
                    layout=template,
                )
        if "MM" in found and "YYYY" not in found:
            raise LayoutError(f"layout {template!r} has {{MM}} without {{YYYY}}", layout=template)
        if template.startswith("/") or template.endswith("/") or "//" in template:
            raise LayoutError(
                f"layout {template!r} must not start or end with '/' or contain '//'",
                layout=template,
            )
        if ".." in template.split("/"):
            raise LayoutError(f"layout {template!r} must not contain '..'", layout=template)
        if found.index("TICKER") > min(
            (found.index(p) for p in ("YYYY", "MM") if p in found), default=len(found)
        ):
            raise LayoutError(
                f"layout {template!r} must put {{TICKER}} before the date parts (ticker-first)",
                layout=template,
            )
        grain: Grain = "month" if "MM" in found else "year" if "YYYY" in found else "all"
        return cls(template=template, grain=grain)

    def period_of(self, day: dt.date) -> str:
        """Partition label for a date: ``'2024-01'`` (month), ``'2024'`` (year) or ``'all'``."""
        if self.grain == "month":
            return f"{day.year:04d}-{day.month:02d}"
        if self.grain == "year":
            return f"{day.year:04d}"
        return ALL_PERIOD

    def key(self, dataset: str, version: int, ticker: str, period: str) -> str:
        """Object key for a partition. ``ticker`` must already be normalised and validated."""
        year, month = _split_period(period, self.grain)
        return (
            self.template.replace("{dataset}", dataset)
            .replace("{version}", str(version))
            .replace("{TICKER}", ticker)
            .replace("{YYYY}", year)
            .replace("{MM}", month)
        )

    def periods_between(self, start: dt.date, end: dt.date) -> list[str]:
        """Every period label touching the inclusive range ``[start, end]``, ascending."""
        if end < start:
            return []
        if self.grain == "all":
            return [ALL_PERIOD]
        if self.grain == "year":
            return [f"{y:04d}" for y in range(start.year, end.year + 1)]
        out = []
        y, m = start.year, start.month
        while (y, m) <= (end.year, end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def period_bounds(period: str) -> tuple[dt.date, dt.date] | None:
    """Inclusive first and last day of a period label, or None for ``'all'``."""
    if period == ALL_PERIOD:
        return None
    if len(period) == 4:
        y = int(period)
        return dt.date(y, 1, 1), dt.date(y, 12, 31)
    y, m = int(period[:4]), int(period[5:7])
    nxt = dt.date(y + 1, 1, 1) if m == 12 else dt.date(y, m + 1, 1)
    return dt.date(y, m, 1), nxt - dt.timedelta(days=1)


def _split_period(period: str, grain: Grain) -> tuple[str, str]:
    if grain == "all":
        return "", ""
    if grain == "year":
        return period[:4], ""
    return period[:4], period[5:7]
