"""Key layout templates: how (dataset, ticker, period) becomes an object key.

A template is a ``/``-separated string with placeholders in braces::

    {dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet   # monthly files (the default)
    {dataset}/v{version}/{TICKER}/{YYYY}/data.parquet        # yearly files
    {dataset}/v{version}/{TICKER}/data.parquet               # one file per ticker
    {dataset}/{YYYY}/{MM}/{DD}/{ticker}_{YYYYMMDD}.parquet   # the seed's daily files (legacy)

The placeholders present decide the partition *grain*: ``{DD}`` or ``{YYYYMMDD}`` means one object
per day, ``{MM}`` (with ``{YYYY}``) one per month, ``{YYYY}`` alone one per year, none one per
ticker. ``{ticker}`` is an alias of ``{TICKER}`` (the normalised symbol); when keys are parsed back
(:meth:`Layout.match`, used by ``marketlake relayout``) either case is accepted. Lake layouts must
be ticker-first; a date-first template (such as the legacy daily files) is accepted only with
``ticker_first=False``, for reading a tree that is being migrated. Every key can be computed
from the ticker and a date, so readers never need LIST. Templates are validated when a lake opens
(:class:`~marketlake.errors.LayoutError` names the bad placeholder), in the spirit of dlt's
``check_layout``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from marketlake.errors import LayoutError

Grain = Literal["day", "month", "year", "all"]

PLACEHOLDERS = frozenset(
    {"dataset", "version", "TICKER", "ticker", "exchange", "YYYY", "MM", "DD", "YYYYMMDD"}
)
#: Placeholders filled from a column of the rows (a sub-partition of one ticker's data); the
#: period label then reads ``"<value>:<period>"``, e.g. ``"binance:2024-01"``.
SUB_PARTITIONS = ("exchange",)
SUB_VALUE = re.compile(r"[a-z0-9_]{1,32}")
_DATE_PARTS = ("YYYY", "MM", "DD", "YYYYMMDD")
_PATTERNS = {
    "dataset": r"[a-z0-9_]+",
    "version": r"[0-9]+",
    "exchange": SUB_VALUE.pattern,
    "TICKER": r"[A-Za-z0-9^][A-Za-z0-9.\-^=_]*",
    "ticker": r"[A-Za-z0-9^][A-Za-z0-9.\-^=_]*",
    "YYYY": r"[0-9]{4}",
    "MM": r"[0-9]{2}",
    "DD": r"[0-9]{2}",
    "YYYYMMDD": r"[0-9]{8}",
    "UPTO": r"[0-9]{4}-[0-9]{2}",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ALL_PERIOD = "all"
#: Label prefix of a compacted history partition: ``"upto-2024-06"`` holds the ticker's rows of
#: every month up to and including June 2024 (``marketlake compact``); its key replaces the date
#: folders by ``history-upto-2024-06``.
HISTORY_PREFIX = "upto-"
_HISTORY_LABEL = re.compile(r"upto-([0-9]{4})-([0-9]{2})")


def is_history(label: str) -> bool:
    """True for a compacted history partition label (``"upto-2024-06"``, ``"binance:upto-…"``)."""
    return split_sub(label)[1].startswith(HISTORY_PREFIX)


def covered_month(label: str) -> str:
    """The last ``YYYY-MM`` a partition label covers: its month for day and month labels, the
    month it runs up to for a history label (``"binance:upto-2024-06"`` -> ``"2024-06"``)."""
    period = split_sub(label)[1]
    return period[len(HISTORY_PREFIX) :] if period.startswith(HISTORY_PREFIX) else period[:7]


def newest_history(labels: Iterable[str]) -> dict[str | None, str]:
    """Per sub-partition (None without one), the history label covering the latest month."""
    newest: dict[str | None, str] = {}
    for label in labels:
        if is_history(label):
            sub = split_sub(label)[0]
            if sub not in newest or covered_month(label) > covered_month(newest[sub]):
                newest[sub] = label
    return newest


def history_label(month: str, sub: str | None = None) -> str:
    """The label of a history partition covering every month up to ``month`` (``YYYY-MM``)."""
    label = f"{HISTORY_PREFIX}{month}"
    return f"{sub}:{label}" if sub else label


@dataclass(frozen=True)
class Layout:
    """A validated key template. Build with :meth:`parse`."""

    template: str
    grain: Grain

    @property
    def sub_partition(self) -> str | None:
        """The row column that selects a sub-partition (``"exchange"``), or None."""
        for name in SUB_PARTITIONS:
            if "{" + name + "}" in self.template:
                return name
        return None

    @classmethod
    def parse(cls, template: str, *, ticker_first: bool = True) -> Layout:
        """Validate ``template`` and return a :class:`Layout`.

        ``ticker_first=False`` accepts date parts before the ticker (legacy trees being
        migrated); lake layouts are always ticker-first.

        Raises
        ------
        LayoutError
            Unknown or missing placeholders, ``{MM}`` without ``{YYYY}``, ``{DD}`` without
            ``{MM}``, empty segments, ``..``, a leading or trailing ``/``.
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
            if required not in found and not (required == "TICKER" and "ticker" in found):
                raise LayoutError(
                    f"layout {template!r} must contain {{{required}}} so that keys are unique",
                    layout=template,
                )
        if "MM" in found and "YYYY" not in found and "YYYYMMDD" not in found:
            raise LayoutError(f"layout {template!r} has {{MM}} without {{YYYY}}", layout=template)
        if "DD" in found and "MM" not in found and "YYYYMMDD" not in found:
            raise LayoutError(f"layout {template!r} has {{DD}} without {{MM}}", layout=template)
        if template.startswith("/") or template.endswith("/") or "//" in template:
            raise LayoutError(
                f"layout {template!r} must not start or end with '/' or contain '//'",
                layout=template,
            )
        if ".." in template.split("/"):
            raise LayoutError(f"layout {template!r} must not contain '..'", layout=template)
        tpos = min(found.index(t) for t in ("TICKER", "ticker") if t in found)
        if ticker_first and tpos > min(
            (found.index(p) for p in _DATE_PARTS if p in found), default=len(found)
        ):
            raise LayoutError(
                f"layout {template!r} must put {{TICKER}} before the date parts (ticker-first)",
                layout=template,
            )
        grain: Grain = (
            "day"
            if "DD" in found or "YYYYMMDD" in found
            else "month"
            if "MM" in found
            else "year"
            if "YYYY" in found
            else "all"
        )
        return cls(template=template, grain=grain)

    @property
    def compactable(self) -> bool:
        """True when closed periods can be folded into history objects: day or month grain with
        every date placeholder a whole folder (``{YYYY}/{MM}/…``)."""
        if self.grain not in ("day", "month"):
            return False
        segs = self.template.split("/")[:-1]
        dated = [s for s in segs if any("{" + p + "}" in s for p in _DATE_PARTS)]
        return bool(dated) and all(s in ("{YYYY}", "{MM}", "{DD}") for s in dated)

    def history_template(self) -> str:
        """The key template of compacted history objects: the date folders replaced by one
        ``history-upto-{UPTO}`` folder (``{UPTO}`` = ``YYYY-MM``)."""
        if not self.compactable:
            raise LayoutError(
                f"layout {self.template!r} cannot be compacted: only monthly or daily layouts "
                "whose date parts are whole folders ({YYYY}/{MM}/...) can",
                layout=self.template,
            )
        segs = self.template.split("/")
        out: list[str] = []
        for seg in segs[:-1]:
            if seg in ("{YYYY}", "{MM}", "{DD}"):
                if "history-upto-{UPTO}" not in out:
                    out.append("history-upto-{UPTO}")
                continue
            out.append(seg)
        return "/".join([*out, segs[-1]])

    def match(self, key: str) -> tuple[str, int | None, str, str] | None:
        """Parse ``key`` back into ``(dataset, version, ticker, period)``, or None when ``key``
        does not fit the template (placeholders that repeat must agree; dates must be real).
        Compacted history keys give a ``"upto-YYYY-MM"`` period. The ticker is returned as
        spelled in the key (normalise it before use)."""
        hit = self._match(self.template, key)
        if hit is None and self.compactable:
            return self._match(self.history_template(), key)
        return hit

    def _match(self, template: str, key: str) -> tuple[str, int | None, str, str] | None:
        values: dict[str, str] = {}
        pattern = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(template):
            pattern += re.escape(template[pos : m.start()])
            name = m.group(1)
            group = f"p{len(values)}_{name}"
            values[group] = name
            pattern += f"(?P<{group}>{_PATTERNS[name]})"
            pos = m.end()
        pattern += re.escape(template[pos:])
        hit = re.fullmatch(pattern, key)
        if hit is None:
            return None
        got: dict[str, str] = {}
        for group, name in values.items():
            value = hit.group(group)
            if name == "YYYYMMDD":
                for part, text in (("YYYY", value[:4]), ("MM", value[4:6]), ("DD", value[6:])):
                    if got.setdefault(part, text) != text:
                        return None
                continue
            canonical = "TICKER" if name == "ticker" else name
            prev = got.setdefault(canonical, value)
            if prev != value and not (canonical == "TICKER" and prev.upper() == value.upper()):
                return None
        try:
            if "UPTO" in got:
                dt.date(int(got["UPTO"][:4]), int(got["UPTO"][5:7]), 1)
                period = HISTORY_PREFIX + got["UPTO"]
            elif self.grain == "day":
                period = dt.date(int(got["YYYY"]), int(got["MM"]), int(got["DD"])).isoformat()
            elif self.grain == "month":
                period = f"{dt.date(int(got['YYYY']), int(got['MM']), 1):%Y-%m}"
            elif self.grain == "year":
                period = got["YYYY"]
            else:
                period = ALL_PERIOD
        except ValueError:
            return None
        version = int(got["version"]) if "version" in got else None
        sub = self.sub_partition
        if sub is not None:
            period = f"{got[sub]}:{period}"
        return got["dataset"], version, got["TICKER"], period

    def list_prefix(self, dataset: str, version: int, ticker: str | None = None) -> str:
        """The longest folder prefix shared by every key of ``dataset`` (and ``ticker``, when
        given): what to LIST to find those keys (then filter with :meth:`match`). Maintenance
        only; reads never LIST."""
        known = {"dataset": dataset, "version": str(version)}
        if ticker is not None:
            known.update(TICKER=ticker, ticker=ticker)
        text = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(self.template):
            text += self.template[pos : m.start()]
            if m.group(1) not in known:
                break
            text += known[m.group(1)]
            pos = m.end()
        else:
            text += self.template[pos:]
        return text.rsplit("/", 1)[0] if "/" in text else ""

    def period_of(self, day: dt.date) -> str:
        """Partition label for a date: ``'2024-01-31'`` (day), ``'2024-01'`` (month), ``'2024'``
        (year) or ``'all'``."""
        if self.grain == "day":
            return day.isoformat()
        if self.grain == "month":
            return f"{day.year:04d}-{day.month:02d}"
        if self.grain == "year":
            return f"{day.year:04d}"
        return ALL_PERIOD

    def key(self, dataset: str, version: int, ticker: str, period: str) -> str:
        """Object key for a partition. ``ticker`` must already be normalised and validated;
        with a sub-partition the period label is ``"<value>:<period>"``."""
        sub_value, period = split_sub(period)
        text = self.template
        if period.startswith(HISTORY_PREFIX):
            text = self.history_template().replace("{UPTO}", period[len(HISTORY_PREFIX) :])
        sub = self.sub_partition
        if sub is not None:
            if sub_value is None or not SUB_VALUE.fullmatch(sub_value):
                raise LayoutError(
                    f"layout {self.template!r} needs a valid {{{sub}}} in the period label "
                    f"(got {period!r}); values are lower-case letters, digits or _",
                    layout=self.template,
                )
            text = text.replace("{" + sub + "}", sub_value)
        year, month, day = _split_period(period, self.grain)
        return (
            text.replace("{dataset}", dataset)
            .replace("{version}", str(version))
            .replace("{TICKER}", ticker)
            .replace("{ticker}", ticker)
            .replace("{YYYYMMDD}", f"{year}{month}{day}")
            .replace("{YYYY}", year)
            .replace("{MM}", month)
            .replace("{DD}", day)
        )

    def periods_between(self, start: dt.date, end: dt.date) -> list[str]:
        """Every period label touching the inclusive range ``[start, end]``, ascending."""
        if end < start:
            return []
        if self.grain == "all":
            return [ALL_PERIOD]
        if self.grain == "year":
            return [f"{y:04d}" for y in range(start.year, end.year + 1)]
        if self.grain == "day":
            n = (end - start).days + 1
            return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]
        out = []
        y, m = start.year, start.month
        while (y, m) <= (end.year, end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def split_sub(label: str) -> tuple[str | None, str]:
    """``"binance:2024-01"`` -> ``("binance", "2024-01")``; ``"2024-01"`` -> ``(None, ...)``."""
    if ":" in label:
        sub, period = label.split(":", 1)
        return sub, period
    return None, label


def period_bounds(period: str) -> tuple[dt.date, dt.date] | None:
    """Inclusive first and last day of a period label, or None for ``'all'``."""
    period = split_sub(period)[1]
    if period == ALL_PERIOD:
        return None
    if (h := _HISTORY_LABEL.fullmatch(period)) is not None:
        y, m = int(h.group(1)), int(h.group(2))
        nxt = dt.date(y + 1, 1, 1) if m == 12 else dt.date(y, m + 1, 1)
        return dt.date(1900, 1, 1), nxt - dt.timedelta(days=1)
    if len(period) == 4:
        y = int(period)
        return dt.date(y, 1, 1), dt.date(y, 12, 31)
    if len(period) == 10:
        day = dt.date.fromisoformat(period)
        return day, day
    y, m = int(period[:4]), int(period[5:7])
    nxt = dt.date(y + 1, 1, 1) if m == 12 else dt.date(y, m + 1, 1)
    return dt.date(y, m, 1), nxt - dt.timedelta(days=1)


def _split_period(period: str, grain: Grain) -> tuple[str, str, str]:
    if grain == "all":
        return "", "", ""
    if grain == "year":
        return period[:4], "", ""
    if grain == "day":
        return period[:4], period[5:7], period[8:10]
    return period[:4], period[5:7], ""
