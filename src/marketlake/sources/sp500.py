"""S&P 500 membership -> ``index_constituents`` intervals, stored under the index ticker ``SP500``.

Three community-maintained CSV files (public GitHub repositories; URLs configurable):

* ``constituents.csv`` (datasets/s-and-p-500-companies, from Wikipedia's list): the current
  members with ``Symbol, Security, GICS Sector, ..., Date added, CIK``;
* ``sp500_changes_since_2019.csv`` (fja05680/sp500): ``date, add, remove`` events, several
  tickers comma-separated in one cell;
* ``sp500_ticker_start_end.csv`` (fja05680/sp500): ``ticker, start_date, end_date`` historical
  intervals (empty end = still a member).

Any subset may be given (constituents alone gives the current members from their date added).

How intervals are built (pure, :func:`build_intervals`)
-------------------------------------------------------
Semantics: a symbol is a member on day d when ``start <= d`` and (``end`` is null or
``d < end``); ``start``/``end`` are effective dates (the first session in / out).

1. The historical intervals are the base.
2. Changes are applied in date order: an *add* on d opens ``[d, ...)`` unless an interval of
   the symbol already covers d (then it is a no-op, e.g. an event the interval file already
   holds); a *remove* on d closes the symbol's open interval that started before d; a remove
   with no open interval is ignored (logged).
3. The current members: each gets name, sector and CIK on its open interval. A current member
   without an open interval starts one at its ``Date added`` (or, when that date is not after
   its last interval's end, at the constituents' ``as_of`` date). The interval file starts its
   history at its first date (1996-01-02): an open interval starting on that date is extended
   back to an earlier ``Date added`` (MMM: 1957-03-04). Otherwise the effective dates of the
   interval and change files win over ``Date added`` (Wikipedia's date is sometimes the
   announcement day).
4. Symbols whose interval is still open but that are not current members left the index after
   the change files end: their interval is closed at ``as_of`` (the date of the constituents
   snapshot: the fetch date, or for files the latest date they mention) -- an upper bound of
   the true removal date, logged.

Tickers are normalised (``BRK.B``); a ticker the rules refuse is skipped and counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import InvalidTickerError, SourceError
from marketlake.schemas.datasets import INDEX_CONSTITUENTS
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import iter_documents

if TYPE_CHECKING:
    from marketlake.sources.http import HttpClient

__all__ = [
    "CHANGES_URL",
    "CONSTITUENTS_URL",
    "INDEX_TICKER",
    "INTERVALS_URL",
    "Intervals",
    "Sp500Source",
    "build_intervals",
    "csv_kind",
]

log = logging.getLogger(__name__)

INDEX_TICKER = "SP500"
CONSTITUENTS_URL = (
    "https://raw.githubusercontent.com/datasets/s-and-p-500-companies/main/data/constituents.csv"
)
CHANGES_URL = "https://raw.githubusercontent.com/fja05680/sp500/master/sp500_changes_since_2019.csv"
INTERVALS_URL = "https://raw.githubusercontent.com/fja05680/sp500/master/sp500_ticker_start_end.csv"

_KINDS = {
    "constituents": ("symbol", "date added"),
    "changes": ("date", "add", "remove"),
    "intervals": ("ticker", "start_date", "end_date"),
}


@dataclass
class Intervals:
    """The result of :func:`build_intervals`: the table and what was skipped or guessed."""

    table: pa.Table
    rejected: list[str] = field(default_factory=list)
    closed_at_as_of: list[str] = field(default_factory=list)


def csv_kind(text: str) -> str | None:
    """Which of the three files ``text`` is (by its header), or None."""
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    header = {h.strip().strip('"').lower() for h in first.split(",")}
    for kind, needed in _KINDS.items():
        if all(n in header for n in needed):
            return kind
    return None


def _reader(text: str, what: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in rows]


def _day(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise SourceError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def _opt_day(value: str, what: str) -> dt.date | None:
    return _day(value, what) if value.strip() else None


def build_intervals(
    constituents: str | None = None,
    changes: str | None = None,
    intervals: str | None = None,
    *,
    as_of: dt.date | None = None,
) -> Intervals:
    """Build membership intervals from the CSV texts (any subset); see the module docstring.

    Pure. ``as_of`` dates the constituents file (default: the latest date in the inputs).

    Raises
    ------
    SourceError
        A file lacks its columns or holds a malformed date (naming the file and row).
    """
    rejected: list[str] = []

    def sym(raw: str, what: str) -> str | None:
        try:
            return normalize_ticker(raw.strip().strip('"'))
        except InvalidTickerError as exc:
            rejected.append(f"{what}: {exc}")
            return None

    spans: dict[str, list[dict[str, Any]]] = {}
    coverage_start: dt.date | None = None
    known_days: list[dt.date] = []
    if intervals is not None:
        for i, r in enumerate(_reader(intervals, "intervals"), start=2):
            where = f"sp500_ticker_start_end.csv line {i}"
            s = sym(r.get("ticker", ""), where)
            if s is None:
                continue
            start = _day(r.get("start_date", ""), where)
            end = _opt_day(r.get("end_date", ""), where)
            spans.setdefault(s, []).append({"start": start, "end": end})
            known_days.extend(d for d in (start, end) if d)
        starts = [sp["start"] for v in spans.values() for sp in v]
        coverage_start = min(starts) if starts else None
    if changes is not None:
        events: list[tuple[dt.date, int, str]] = []
        for i, r in enumerate(_reader(changes, "changes"), start=2):
            where = f"sp500_changes line {i}"
            day = _day(r.get("date", ""), where)
            known_days.append(day)
            for order, column in ((0, "remove"), (1, "add")):
                for raw in r.get(column, "").split(","):
                    if raw.strip():
                        s = sym(raw, where)
                        if s is not None:
                            events.append((day, order, s))
        for day, order, s in sorted(events):
            mine = spans.setdefault(s, [])
            if order == 1:
                if any(
                    sp["start"] <= day and (sp["end"] is None or day < sp["end"]) for sp in mine
                ):
                    continue
                later = [sp["start"] for sp in mine if sp["start"] > day]
                mine.append({"start": day, "end": min(later) if later else None})
            else:
                open_ = [sp for sp in mine if sp["end"] is None and sp["start"] < day]
                if open_:
                    open_[-1]["end"] = day
                elif not any(sp["end"] == day for sp in mine):
                    log.info("sp500: remove of %s on %s: not a member then; ignored", s, day)
    members: dict[str, dict[str, str]] = {}
    if constituents is not None:
        for i, r in enumerate(_reader(constituents, "constituents"), start=2):
            where = f"constituents.csv line {i}"
            s = sym(r.get("symbol", ""), where)
            if s is None:
                continue
            members[s] = r
            added = _opt_day(r.get("date added", ""), where)
            if added:
                known_days.append(added)
    day_of = as_of or (max(known_days) if known_days else dt.date.today())
    closed: list[str] = []
    if constituents is not None:
        for s, spans_of in spans.items():
            if s in members:
                continue
            for sp in spans_of:
                if sp["end"] is None:
                    sp["end"] = max(day_of, sp["start"] + dt.timedelta(days=1))
                    closed.append(s)
        for s, r in members.items():
            where = f"constituents.csv {s}"
            added = _opt_day(r.get("date added", ""), where)
            mine = spans.setdefault(s, [])
            open_ = [sp for sp in mine if sp["end"] is None]
            if open_:
                sp = open_[-1]
                if (
                    added
                    and coverage_start
                    and sp["start"] == coverage_start
                    and added < sp["start"]
                ):
                    sp["start"] = added
            else:
                last_end = max((sp["end"] for sp in mine), default=None)
                start = added if added and (last_end is None or added >= last_end) else day_of
                sp = {"start": start, "end": None}
                mine.append(sp)
            sp["name"] = r.get("security") or None
            sp["sector"] = r.get("gics sector") or None
            cik = r.get("cik", "")
            sp["cik"] = int(cik) if cik.isdigit() else None
    if closed:
        log.info(
            "sp500: %d symbol(s) no longer in the constituents: interval closed at %s",
            len(closed),
            day_of,
        )
    rows = []
    for s, spans_of in spans.items():
        seen: set[dt.date] = set()
        for sp in sorted(spans_of, key=lambda x: x["start"]):
            if sp["start"] in seen:
                continue
            seen.add(sp["start"])
            rows.append(
                {
                    "start": sp["start"],
                    "symbol": s,
                    "end": sp["end"],
                    "name": sp.get("name"),
                    "sector": sp.get("sector"),
                    "cik": sp.get("cik"),
                }
            )
    rows.sort(key=lambda r: (r["start"], r["symbol"]))
    table = pa.Table.from_pylist(rows, schema=INDEX_CONSTITUENTS.schema)
    return Intervals(table, rejected, sorted(set(closed)))


class Sp500Source(Source):
    """S&P 500 membership intervals (``index_constituents``) under ticker ``SP500``.

    Parameters
    ----------
    client:
        HTTP client (default: one created on first use).
    constituents_url, changes_url, intervals_url:
        Where to download the three files; ``None`` skips a file.
    today:
        Date of a fetched constituents file (injectable for tests; default: today, UTC).
    """

    name: ClassVar[str] = "sp500"
    datasets: ClassVar[tuple[str, ...]] = ("index_constituents",)
    description: ClassVar[str] = (
        "S&P 500 membership intervals from community CSVs (current constituents, dated "
        "changes, historical start/end); ticker SP500; no key."
    )
    settings: ClassVar[tuple[str, ...]] = ()
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        constituents_url: str | None = CONSTITUENTS_URL,
        changes_url: str | None = CHANGES_URL,
        intervals_url: str | None = INTERVALS_URL,
        today: Callable[[], dt.date] | None = None,
    ) -> None:
        self._client = client
        self.urls = {
            "constituents": constituents_url,
            "changes": changes_url,
            "intervals": intervals_url,
        }
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())

    @staticmethod
    def _check(request: SourceRequest) -> None:
        if request.ticker != INDEX_TICKER:
            raise SourceError(
                f"sp500 stores the index under ticker {INDEX_TICKER!r}, not {request.ticker!r}",
                ticker=request.ticker,
                source="sp500",
            )

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download the configured CSVs: ``{kind: bytes, ..., "as_of": "YYYY-MM-DD"}``."""
        self._check(request)
        raw: dict[str, Any] = {"as_of": self._today().isoformat()}
        for kind, url in self.urls.items():
            if url:
                raw[kind] = self.client.get_bytes(url)
        return raw

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Build the intervals from ``raw`` (``constituents``/``changes``/``intervals`` texts or
        bytes, optional ``as_of``). Pure; the request's date range does not filter (a
        membership interval is one row whatever its start)."""
        self._check(request)
        if not isinstance(raw, Mapping) or not any(k in raw for k in _KINDS):
            raise SourceError("sp500: payload holds none of constituents, changes, intervals")
        texts = {k: _decode(raw[k], k) for k in _KINDS if raw.get(k) is not None}
        for kind, text in texts.items():
            found = csv_kind(text)
            if found != kind:
                raise SourceError(f"sp500: the {kind} file has an unexpected header")
        as_of = raw.get("as_of")
        result = build_intervals(
            texts.get("constituents"),
            texts.get("changes"),
            texts.get("intervals"),
            as_of=dt.date.fromisoformat(as_of) if as_of else None,
        )
        if result.rejected:
            log.info("sp500: %d ticker(s) skipped: %s", len(result.rejected), result.rejected[:3])
        return {"index_constituents": result.table} if result.table.num_rows else {}

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Recognise the three CSVs by header and yield one payload holding all of them."""
        raw: dict[str, Any] = {}
        origins: list[str] = []
        for doc in iter_documents(paths):
            if doc.data is None:
                yield FilePayload.failed(doc.origin, doc.error or "cannot read")
                continue
            text = _decode(doc.data, doc.origin)
            kind = csv_kind(text)
            if kind is None:
                yield FilePayload.failed(
                    doc.origin,
                    "not an S&P 500 constituents, changes or start/end CSV (unknown header)",
                )
                continue
            if kind in raw:
                yield FilePayload.failed(doc.origin, f"a second {kind} file")
                continue
            raw[kind] = text
            origins.append(doc.origin)
        if raw:
            yield FilePayload(
                ", ".join(origins),
                SourceRequest(INDEX_TICKER, self.datasets, *FILE_RANGE),
                raw,
            )


def _decode(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{what}: not UTF-8 text") from None
