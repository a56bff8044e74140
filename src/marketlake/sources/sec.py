"""SEC EDGAR: point-in-time quarterly ``fundamentals`` (XBRL companyfacts) and ``filings``.

Endpoints (all JSON, public, no key; SEC asks every client to identify itself with a
``User-Agent`` such as ``"Company Name admin@example.com"`` -- set ``SEC_USER_AGENT`` -- and to
stay at or under 10 requests per second, the :class:`~marketlake.sources.http.HttpClient`
default for ``data.sec.gov`` and ``www.sec.gov``):

* ``https://www.sec.gov/files/company_tickers.json`` -- ticker <-> CIK (read once per source
  instance; SEC spells class shares ``BRK-B``, the lake ``BRK.B``);
* ``https://data.sec.gov/api/xbrl/companyfacts/CIK##########.json`` -- every XBRL fact a company
  filed -> ``fundamentals``;
* ``https://data.sec.gov/submissions/CIK##########.json`` (+ its older pages) -> ``filings``.

A request's ticker may also be a CIK (``"717423"``, ``"0000717423"`` or ``"CIK0000717423"``).

Ticker <-> CIK reference (``ticker_metadata`` under ticker ``SEC``)
-----------------------------------------------------------------
A request for the reference ticker ``SEC`` (:data:`REFERENCE_TICKER_SEC`, dataset
``ticker_metadata`` only; company tickers give ``fundamentals``/``filings`` only) downloads
``company_tickers.json`` and stores it as intervals ``(first_seen, symbol)`` with ``cik`` and
``name`` (SEC's title), accumulated over the stored ones exactly like the NASDAQ Trader listings
(:func:`~marketlake.sources.nasdaq_trader.accumulate_listings`, with ``cik`` and ``name`` as the
interval's identity: a ticker that moves to another CIK, or a company renamed, closes the old
interval and opens a new one; a ticker that disappears gets ``delisted``). ``exchange`` and the
other NASDAQ columns stay null. The *snapshot date* is the UTC date of the response's
``Last-Modified`` header, or the fetch date (UTC) when the header is missing or unreadable. As
for NASDAQ Trader, the stored intervals are read in the I/O stage through ``bind_lake`` (the
batch and import paths call it). ``marketlake import sec company_tickers.json`` stores a file
the same way; its snapshot date is a ``YYYY-MM-DD`` or ``YYYYMMDD`` date in the file name
(``company_tickers_2026-11-20.json``) or else the file's modification date (UTC). A
``company_tickers`` file imported together with companyfacts/submissions files only maps their
CIKs to tickers (import it on its own to store it). Read the stored mapping with
:func:`marketlake.reference.cik_for` and :func:`marketlake.reference.ticker_for_cik`.

How companyfacts become ``fundamentals`` (pure, in :func:`parse_companyfacts`)
-------------------------------------------------------------------------------
*Tags.* Each column reads the first tag of :data:`US_GAAP_TAGS` (then :data:`IFRS_TAGS`, for
``ifrs-full`` filers such as 20-F filers) that a filing reports for a period; the order is the
priority. Amounts are taken in ``USD`` only (EPS in ``USD/shares``, shares in ``shares``): a filer
reporting in another currency gets nulls, never converted or mislabelled values. A value nobody
reported is null, never 0.

*Periods.* A fact's ``fy``/``fp`` describe the *filing* (its fiscal year and period focus), not
the fact, so each period end gets its fiscal label from the filing whose own period it is (or
is nearest to), shifted by the number of quarters between the two ends. Flows (revenue,
gross_profit, operating_income, net_income, eps_diluted, operating_cash_flow, capex) are
quarterly: a ~3-month duration when one is reported; otherwise the quarter is derived by
differencing year-to-date values of the same fiscal year (cash-flow statements in 10-Qs are
YTD: Q2 = 6M - Q1, Q3 = 9M - 6M), and Q4 = FY (the 10-K) - Q1..Q3 (the 9-month YTD, or the
sum of the three quarters). EPS is differenced the same way (an approximation: share counts
differ between quarters); ``shares_diluted`` (weighted-average diluted shares) is never
differenced, so a derived Q4 has it only when the 10-K reports the quarter. Stocks
(total_assets, total_liabilities, cash_and_equivalents) are instants at the period end;
total_liabilities falls back to ``LiabilitiesAndStockholdersEquity`` - equity when
``Liabilities`` is not reported. ``free_cash_flow = operating_cash_flow - capex`` (capex is the
reported payment, a positive outflow). A fiscal year with no interim period at all (an
annual-only filer, or years that appear only as 10-K comparatives) gives one ``FY`` row whose
flows cover the whole year (``fiscal_quarter`` null).

*Point in time.* Filings are replayed in filing-date order; after each filing date the values
of every period are recomputed from what was known on that date (latest filing wins per
period and duration). A period gets a new row ``(period_end, filed)`` whenever its values
change -- the first report, a restatement, an amendment, a comparative restated in a later
filing, a derived quarter whose YTD input changed -- and a filing that repeats known values
adds no row. ``form`` and ``accession`` name the filing of that date (the one reporting the
period when several were filed the same day). Rows never overwrite earlier rows.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from marketlake.errors import (
    ConfigError,
    InvalidTickerError,
    MarketlakeError,
    NoDataError,
    SourceError,
)
from marketlake.schemas.datasets import (
    FUNDAMENTALS,
    REFERENCE_TICKER_SEC,
    TICKER_METADATA,
    get_dataset,
)
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import (
    Document,
    iter_documents,
    load_json,
    read_file,
    read_member,
)
from marketlake.sources.http import HttpClient

__all__ = [
    "COMPANY_TICKERS_URL",
    "IFRS_TAGS",
    "REFERENCE_TICKER_SEC",
    "US_GAAP_TAGS",
    "SecEdgarSource",
    "companyfacts_url",
    "format_cik",
    "parse_cik",
    "parse_company_tickers",
    "parse_companyfacts",
    "parse_submissions",
    "parse_ticker_snapshots",
    "submissions_url",
]

COMPANY_TICKERS_URL = "https://www.sec.gov/files/company_tickers.json"
DATA_URL = "https://data.sec.gov"
USER_AGENT_ENV = "SEC_USER_AGENT"

#: us-gaap tags per column, highest priority first.
US_GAAP_TAGS: dict[str, tuple[str, ...]] = {
    "revenue": (
        "Revenues",
        "RevenueFromContractWithCustomerExcludingAssessedTax",
        "RevenueFromContractWithCustomerIncludingAssessedTax",
        "SalesRevenueNet",
        "SalesRevenueGoodsNet",
        "SalesRevenueServicesNet",
        "RevenuesNetOfInterestExpense",
    ),
    "gross_profit": ("GrossProfit",),
    "operating_income": ("OperatingIncomeLoss",),
    "net_income": (
        "NetIncomeLoss",
        "NetIncomeLossAvailableToCommonStockholdersBasic",
        "ProfitLoss",
    ),
    "eps_diluted": ("EarningsPerShareDiluted", "EarningsPerShareBasicAndDiluted"),
    "shares_diluted": (
        "WeightedAverageNumberOfDilutedSharesOutstanding",
        "WeightedAverageNumberOfShareOutstandingBasicAndDiluted",
    ),
    "total_assets": ("Assets",),
    "total_liabilities": ("Liabilities",),
    "cash_and_equivalents": (
        "CashAndCashEquivalentsAtCarryingValue",
        "CashCashEquivalentsRestrictedCashAndRestrictedCashEquivalents",
        "Cash",
    ),
    "operating_cash_flow": (
        "NetCashProvidedByUsedInOperatingActivities",
        "NetCashProvidedByUsedInOperatingActivitiesContinuingOperations",
    ),
    "capex": (
        "PaymentsToAcquirePropertyPlantAndEquipment",
        "PaymentsToAcquireProductiveAssets",
    ),
    # inputs of the total_liabilities fallback (not columns)
    "_liabilities_and_equity": ("LiabilitiesAndStockholdersEquity",),
    "_equity": (
        "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest",
        "StockholdersEquity",
    ),
}

#: ifrs-full tags per column (used after the us-gaap ones; IFRS filers have no us-gaap facts).
IFRS_TAGS: dict[str, tuple[str, ...]] = {
    "revenue": ("Revenue", "RevenueFromContractsWithCustomers"),
    "gross_profit": ("GrossProfit",),
    "operating_income": ("ProfitLossFromOperatingActivities",),
    "net_income": ("ProfitLossAttributableToOwnersOfParent", "ProfitLoss"),
    "eps_diluted": ("DilutedEarningsLossPerShare", "BasicAndDilutedEarningsLossPerShare"),
    "shares_diluted": ("AdjustedWeightedAverageShares",),
    "total_assets": ("Assets",),
    "total_liabilities": ("Liabilities",),
    "cash_and_equivalents": ("CashAndCashEquivalents",),
    "operating_cash_flow": (
        "CashFlowsFromUsedInOperatingActivities",
        "CashFlowsFromUsedInOperations",
    ),
    "capex": (
        "PurchaseOfPropertyPlantAndEquipmentClassifiedAsInvestingActivities",
        "PurchaseOfPropertyPlantAndEquipment",
    ),
    "_liabilities_and_equity": ("EquityAndLiabilities",),
    "_equity": ("Equity",),
}

_FLOWS = (
    "revenue",
    "gross_profit",
    "operating_income",
    "net_income",
    "eps_diluted",
    "operating_cash_flow",
    "capex",
)
_NOT_DIFFERENCED = ("shares_diluted",)
_STOCKS = (
    "total_assets",
    "total_liabilities",
    "cash_and_equivalents",
    "_liabilities_and_equity",
    "_equity",
)
_UNITS = {"eps_diluted": "USD/shares", "shares_diluted": "shares"}
# the reported values: every fundamentals column from ``revenue`` on (the registry is the truth)
_VALUE_COLUMNS = tuple(FUNDAMENTALS.schema.names[FUNDAMENTALS.schema.get_field_index("revenue") :])
_FP_QUARTER = {"Q1": 1, "Q2": 2, "Q3": 3, "Q4": 4, "FY": 4, "H1": 2, "H2": 4}
_DAYS_PER_QUARTER = 365.2425 / 4


# --- CIKs and tickers ------------------------------------------------------------------------


def parse_cik(value: object) -> int:
    """Return a CIK as an int from ``717423``, ``"717423"``, ``"0000717423"`` or ``"CIK717423"``.

    Raises
    ------
    SourceError
        When ``value`` is not a positive CIK of at most 10 digits.
    """
    if isinstance(value, bool):
        raise SourceError(f"not a CIK: {value!r}")
    if isinstance(value, int):
        cik = value
    elif isinstance(value, str):
        text = value.strip().upper().removeprefix("CIK")
        if not re.fullmatch(r"\d{1,10}", text):
            raise SourceError(f"not a CIK: {value!r} (expected up to 10 digits, e.g. 0000320193)")
        cik = int(text)
    else:
        raise SourceError(f"not a CIK: {value!r}")
    if not 0 < cik < 10**10:
        raise SourceError(f"not a CIK: {value!r} (expected 1..9999999999)")
    return cik


def format_cik(cik: int | str) -> str:
    """The 10-digit zero-padded form SEC uses in URLs: ``0000717423``."""
    return f"{parse_cik(cik):010d}"


def companyfacts_url(cik: int | str) -> str:
    """URL of a company's XBRL companyfacts JSON."""
    return f"{DATA_URL}/api/xbrl/companyfacts/CIK{format_cik(cik)}.json"


def submissions_url(cik: int | str) -> str:
    """URL of a company's submissions (filing index) JSON."""
    return f"{DATA_URL}/submissions/CIK{format_cik(cik)}.json"


_TICKERS_SCHEMA = pa.schema(
    [
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("cik", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
    ]
)


def parse_company_tickers(payload: Any) -> pa.Table:
    """Turn ``company_tickers.json`` into a table ``ticker, cik, title`` (pure).

    Tickers are normalised the lake's way (SEC's ``BRK-B`` becomes ``BRK.B``); a ticker listed
    twice keeps its first entry (SEC orders the file by size); entries whose ticker the lake
    cannot store are skipped. Also accepts the ``{"fields": [...], "data": [[...]]}`` layout of
    ``company_tickers_exchange.json``.

    Raises
    ------
    SourceError
        When the payload has neither layout.
    """
    if isinstance(payload, Mapping) and "fields" in payload and "data" in payload:
        fields = list(payload["fields"])
        try:
            entries: Iterable[Any] = [
                dict(zip(fields, row, strict=True)) for row in payload["data"]
            ]
        except (TypeError, ValueError) as exc:
            raise SourceError(f"company tickers: malformed 'data' rows ({exc})") from None
    elif isinstance(payload, Mapping):
        entries = payload.values()
    else:
        raise SourceError(f"company tickers: expected a JSON object, got {type(payload).__name__}")
    tickers: list[str] = []
    ciks: list[int] = []
    titles: list[str | None] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise SourceError(f"company tickers: expected objects, got {entry!r:.80}")
        raw_cik = entry.get("cik_str", entry.get("cik"))
        raw_ticker = entry.get("ticker")
        if raw_cik is None or raw_ticker is None:
            raise SourceError(f"company tickers: entry without cik/ticker: {entry!r:.120}")
        try:
            ticker = normalize_ticker(str(raw_ticker))
        except InvalidTickerError:
            continue
        if ticker in seen:
            continue
        seen.add(ticker)
        tickers.append(ticker)
        ciks.append(parse_cik(raw_cik))
        title = entry.get("title", entry.get("name"))
        titles.append(None if title is None else str(title))
    return pa.table([tickers, ciks, titles], schema=_TICKERS_SCHEMA)


_IDENTITY = ("cik", "name")


def parse_ticker_snapshots(
    snapshots: Sequence[tuple[dt.date | str, Any]], existing: pa.Table | None
) -> pa.Table:
    """Apply ``company_tickers.json`` snapshots ``(date, payload)`` to the stored intervals.

    Pure. Returns the new or changed ``ticker_metadata`` rows (``symbol``, ``cik``, ``name``;
    other NASDAQ columns null) -- rules in the module docstring.

    Raises
    ------
    SourceError
        A payload is not a company tickers file, a date is not ``YYYY-MM-DD``, or a snapshot
        would drop too many tickers at once.
    """
    from marketlake.sources.nasdaq_trader import Snapshot, apply_snapshots

    snaps: list[Snapshot] = []
    for day, payload in snapshots:
        date = day if isinstance(day, dt.date) else _date(day, "snapshot date", "company tickers")
        tickers = parse_company_tickers(payload)
        table = pa.table(
            {"symbol": tickers["ticker"], "cik": tickers["cik"], "name": tickers["title"]}
        )
        snaps.append(Snapshot(date, dt.datetime.combine(date, dt.time()), table))
    metadata, _renames = apply_snapshots(existing, snaps, source="sec", identity=_IDENTITY)
    return metadata


def _snapshot_date(headers: Mapping[str, str], today: dt.date) -> dt.date:
    """UTC date of a ``Last-Modified`` header, else ``today``."""
    value = next((v for k, v in headers.items() if k.lower() == "last-modified"), None)
    if not value:
        return today
    try:
        stamp = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return today
    if stamp.tzinfo is None:
        return stamp.date()
    return stamp.astimezone(dt.UTC).date()


_NAME_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def _file_snapshot_date(doc: Document) -> dt.date:
    """Snapshot date of an imported company tickers file: a date in its name, else its mtime."""
    match = _NAME_DATE.search(doc.name)
    if match is not None:
        try:
            return dt.date(*(int(g) for g in match.groups()))
        except ValueError:
            pass
    path = doc.archive if doc.archive is not None else Path(doc.origin)
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()
    except OSError:
        return dt.datetime.now(dt.UTC).date()


# --- companyfacts -> fundamentals --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fact:
    field: str
    rank: int  # position of the fact's tag in the column's priority list (0 = first)
    end: dt.date
    months: int  # 0 for an instant
    val: float
    accn: str
    form: str | None
    filed: dt.date
    fy: int | None
    fp: str | None


def _date(value: Any, what: str, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SourceError(f"{where}: {what} {value!r} is not a date (YYYY-MM-DD)") from None


def _months(start: dt.date, end: dt.date) -> int:
    return round(((end - start).days + 1) / (365.2425 / 12))


def _extract(facts: Mapping[str, Any], where: str) -> list[_Fact]:
    """Facts of the mapped tags, each with its tag's priority rank within its column."""
    out: list[_Fact] = []
    taxonomies = (("us-gaap", US_GAAP_TAGS), ("ifrs-full", IFRS_TAGS))
    columns = dict.fromkeys(name for _, tags in taxonomies for name in tags)
    for column in columns:
        unit = _UNITS.get(column, "USD")
        instant = column in _STOCKS
        seen: set[tuple[int, str, dt.date | None, dt.date]] = set()
        rank = -1
        for taxonomy, tags in taxonomies:
            concepts = facts.get(taxonomy)
            for tag in tags.get(column, ()):
                rank += 1
                if not isinstance(concepts, Mapping):
                    continue
                concept = concepts.get(tag)
                if not isinstance(concept, Mapping):
                    continue
                units = concept.get("units")
                items = units.get(unit) if isinstance(units, Mapping) else None
                if not isinstance(items, list):
                    continue
                for item in items:
                    fact = _fact(column, rank, item, instant, f"{where} {taxonomy}:{tag}")
                    if fact is None:
                        continue
                    key = (rank, fact.accn, item.get("start"), fact.end)
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(fact)
    return out


def _fact(column: str, rank: int, item: Any, instant: bool, where: str) -> _Fact | None:
    if not isinstance(item, Mapping):
        raise SourceError(f"{where}: expected fact objects, got {item!r:.80}")
    try:
        end = _date(item["end"], "end", where)
        filed = _date(item["filed"], "filed", where)
        accn = str(item["accn"])
        raw_val = item["val"]
    except KeyError as exc:
        raise SourceError(f"{where}: fact without {exc.args[0]!r}: {dict(item)!r:.160}") from None
    if isinstance(raw_val, bool) or not isinstance(raw_val, int | float):
        raise SourceError(f"{where}: value {raw_val!r} is not a number")
    val = float(raw_val)
    if val != val or val in (float("inf"), float("-inf")):
        return None
    start = item.get("start")
    if instant:
        if start is not None:
            return None
        months = 0
    else:
        if start is None:
            return None
        months = _months(_date(start, "start", where), end)
        if months not in (3, 6, 9, 12):
            return None
    fy = item.get("fy")
    fp = item.get("fp")
    form = item.get("form")
    return _Fact(
        field=column,
        rank=rank,
        end=end,
        months=months,
        val=val,
        accn=accn,
        form=None if form is None else str(form),
        filed=filed,
        fy=fy if isinstance(fy, int) and not isinstance(fy, bool) else None,
        fp=None if fp is None else str(fp),
    )


@dataclass(frozen=True, slots=True)
class _Label:
    fiscal_year: int | None
    quarter: int | None


def _labels(facts: list[_Fact], ends: list[dt.date]) -> dict[dt.date, _Label]:
    """Fiscal year and quarter of each period end, from the filings' own fy/fp (see module doc)."""
    own_end: dict[str, dt.date] = {}
    info: dict[str, tuple[int | None, str | None, dt.date]] = {}
    for f in facts:
        info.setdefault(f.accn, (f.fy, f.fp, f.filed))
        if f.months:
            own_end[f.accn] = max(own_end.get(f.accn, f.end), f.end)
    for f in facts:  # filings without a duration fact: their latest instant
        if f.accn not in own_end:
            own_end[f.accn] = f.end
    reporters: dict[dt.date, set[str]] = defaultdict(set)
    for f in facts:
        reporters[f.end].add(f.accn)
    labels: dict[dt.date, _Label] = {}
    for end in ends:
        best: tuple[int, dt.date, str] | None = None
        label = _Label(None, None)
        for accn in reporters.get(end, ()):
            fy, fp, filed = info[accn]
            quarter = _FP_QUARTER.get(fp or "")
            if fy is None or quarter is None:
                continue
            shift = round((own_end[accn] - end).days / _DAYS_PER_QUARTER)
            rank = (abs(shift), filed, accn)
            if best is None or rank < best:
                best = rank
                index = fy * 4 + quarter - 1 - shift
                label = _Label(index // 4, index % 4 + 1)
        labels[end] = label
    return labels


_Value = tuple[float, int]  # (value, tag rank): only values of the same tag are combined
_Key = tuple[str, dt.date, int]  # (column, period end, months; 0 = instant)


class _Snapshot:
    """Values of every period as known after some filing date (memoised per computation)."""

    def __init__(
        self,
        known: Mapping[_Key, _Value],
        labels: Mapping[dt.date, _Label],
        previous: Mapping[dt.date, dt.date],
        annual_only: set[dt.date],
    ) -> None:
        self.known = known
        self.labels = labels
        self.previous = previous
        self.annual_only = annual_only
        self._memo: dict[tuple[str, str, dt.date, int], _Value | None] = {}

    def quarter(self, field: str, end: dt.date) -> _Value | None:
        key = ("q", field, end, 0)
        if key not in self._memo:
            self._memo[key] = self._quarter(field, end)
        return self._memo[key]

    def _quarter(self, field: str, end: dt.date) -> _Value | None:
        direct = self.known.get((field, end, 3))
        if field in _NOT_DIFFERENCED:
            return direct
        derived = self._derived(field, end)
        if derived is not None and (direct is None or direct[1] != derived[1]):
            # the statements' YTD tag wins over a differently tagged quarter (a 10-K note
            # tagging another concept), so a year's four quarters share one definition
            return derived
        return direct

    def _derived(self, field: str, end: dt.date) -> _Value | None:
        """The quarter as YTD (or FY) minus the YTD of the quarter before, same tag."""
        q = self.labels[end].quarter
        prev = self.previous.get(end)
        if q is None or q == 1 or prev is None or self.labels[prev].quarter != q - 1:
            return None
        ytd = self.known.get((field, end, 3 * q))
        if ytd is None:
            return None
        before = self.cumulative(field, prev, 3 * (q - 1), ytd[1])
        return None if before is None else (ytd[0] - before[0], ytd[1])

    def cumulative(self, field: str, end: dt.date, months: int, rank: int) -> _Value | None:
        """Year-to-date value over ``months`` ending at ``end``, from the tag of ``rank``."""
        key = ("c", field, end, months * 1000 + rank)
        if key not in self._memo:
            self._memo[key] = self._cumulative(field, end, months, rank)
        return self._memo[key]

    def _cumulative(self, field: str, end: dt.date, months: int, rank: int) -> _Value | None:
        direct = self.known.get((field, end, months))
        if direct is not None and direct[1] == rank:
            return direct
        if months == 3:
            this = self.quarter(field, end)
            return this if this is not None and this[1] == rank else None
        prev = self.previous.get(end)
        this = self.quarter(field, end)
        if prev is None or this is None or this[1] != rank:
            return None
        before = self.cumulative(field, prev, months - 3, rank)
        return None if before is None else (this[0] + before[0], rank)

    def values(self, end: dt.date) -> tuple[float | None, ...]:
        got: dict[str, _Value | None] = {}
        annual = end in self.annual_only
        for field in (*_FLOWS, *_NOT_DIFFERENCED):
            got[field] = self.known.get((field, end, 12)) if annual else self.quarter(field, end)
        for field in _STOCKS:
            got[field] = self.known.get((field, end, 0))
        out = {k: None if v is None else v[0] for k, v in got.items()}
        if out["total_liabilities"] is None:
            total, equity = out["_liabilities_and_equity"], out["_equity"]
            if total is not None and equity is not None:
                out["total_liabilities"] = total - equity
        ocf, capex = out["operating_cash_flow"], out["capex"]
        out["free_cash_flow"] = None if ocf is None or capex is None else ocf - capex
        return tuple(out[c] for c in _VALUE_COLUMNS)


def parse_companyfacts(
    payload: Any, *, start: dt.date | None = None, end: dt.date | None = None
) -> pa.Table:
    """Turn one companyfacts JSON into point-in-time ``fundamentals`` rows (pure).

    See the module docstring for the rules. ``start``/``end`` (inclusive) filter on
    ``period_end`` after all derivations (so a Q4 inside the range still uses Q1..Q3 before it).
    The ``cik`` may be an int or a zero-padded string.

    Raises
    ------
    SourceError
        When the payload is not a companyfacts object or a fact is malformed.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("facts"), Mapping):
        raise SourceError(
            "companyfacts: expected a JSON object with 'cik' and 'facts' "
            f"(got {type(payload).__name__})"
        )
    cik = payload.get("cik")
    where = f"companyfacts CIK {format_cik(cik) if cik is not None else '?'}"
    facts = _extract(payload["facts"], where)
    if not facts:
        return FUNDAMENTALS.schema.empty_table()

    flow_ends = {f.end for f in facts if f.months and f.field not in _STOCKS}
    ends = sorted(flow_ends)
    labels = _labels(facts, ends)
    previous: dict[dt.date, dt.date] = {}
    for i, e in enumerate(ends):
        for p in reversed(ends[:i]):
            gap = (e - p).days
            if gap > 105:
                break
            if gap >= 75:
                previous[e] = p
                break
    interim_years = {
        lab.fiscal_year
        for lab in labels.values()
        if lab.quarter in (1, 2, 3) and lab.fiscal_year is not None
    }
    has_quarter = {f.end for f in facts if f.months == 3}
    annual_only = {
        e
        for e, lab in labels.items()
        if lab.quarter == 4 and lab.fiscal_year not in interim_years and e not in has_quarter
    }

    by_filed: dict[dt.date, list[_Fact]] = defaultdict(list)
    for f in facts:
        by_filed[f.filed].append(f)
    known: dict[_Key, _Value] = {}
    last: dict[dt.date, tuple[float | None, ...]] = {}
    rows: list[dict[str, Any]] = []
    for filed in sorted(by_filed):
        group = sorted(by_filed[filed], key=lambda f: (f.accn, f.rank))
        reporters: dict[dt.date, _Fact] = {}
        offered: dict[_Key, dict[int, _Fact]] = defaultdict(dict)
        for f in group:
            offered[(f.field, f.end, f.months)][f.rank] = f  # the last accession of the day
        for key, by_rank in offered.items():
            # A period keeps the tag of its first report: a later filing updates it through
            # that tag only (another tag is another concept, not a restatement).
            current = known.get(key)
            chosen = by_rank.get(current[1]) if current else by_rank[min(by_rank)]
            if chosen is not None:
                known[key] = (chosen.val, chosen.rank)
                reporters[chosen.end] = chosen
        touched = set(reporters)
        if not touched:
            continue
        snap = _Snapshot(known, labels, previous, annual_only)
        for e in ends:
            if not any(0 <= (e - t).days <= 380 for t in touched):
                continue
            values = snap.values(e)
            if all(v is None for v in values) or last.get(e) == values:
                continue
            last[e] = values
            source = reporters.get(e) or reporters[max(touched)]
            label = labels[e]
            annual = e in annual_only
            row: dict[str, Any] = {
                "period_end": e,
                "filed": filed,
                "fiscal_year": label.fiscal_year,
                "fiscal_quarter": None if annual else label.quarter,
                "fiscal_period": (
                    "FY" if annual else None if label.quarter is None else f"Q{label.quarter}"
                ),
                "form": source.form,
                "accession": source.accn,
            }
            row.update(zip(_VALUE_COLUMNS, values, strict=True))
            rows.append(row)
    rows = [
        r
        for r in rows
        if (start is None or r["period_end"] >= start) and (end is None or r["period_end"] <= end)
    ]
    rows.sort(key=lambda r: (r["period_end"], r["filed"]))
    return pa.Table.from_pylist(rows, schema=FUNDAMENTALS.schema)


# --- submissions -> filings --------------------------------------------------------------------


def parse_submissions(
    pages: Iterable[Any], *, start: dt.date | None = None, end: dt.date | None = None
) -> pa.Table:
    """Turn submissions JSON pages into ``filings`` rows (pure).

    ``pages`` are the main ``CIK##########.json`` object (its ``filings.recent`` columns) and/or
    older pages (``CIK##########-submissions-001.json``: the same columns at the top level).
    Rows are deduplicated on ``(filed, accession)``, filtered to ``filed`` in ``[start, end]``
    (inclusive) and sorted.

    Raises
    ------
    SourceError
        When a page has no filing columns or the columns have different lengths.
    """
    schema = get_dataset("filings").schema
    rows: dict[tuple[dt.date, str], dict[str, Any]] = {}
    for page in pages:
        if not isinstance(page, Mapping):
            raise SourceError(f"submissions: expected a JSON object, got {type(page).__name__}")
        filings = page.get("filings")
        columns = filings.get("recent") if isinstance(filings, Mapping) else page
        if not isinstance(columns, Mapping) or "accessionNumber" not in columns:
            raise SourceError("submissions: no filing columns (filings.recent.accessionNumber)")
        accns = columns["accessionNumber"]
        names = ("filingDate", "form", "reportDate", "primaryDocument", "isXBRL")
        cols = {n: columns.get(n, [None] * len(accns)) for n in names}
        bad = [n for n, c in cols.items() if not isinstance(c, list) or len(c) != len(accns)]
        if bad:
            raise SourceError(
                f"submissions: columns {bad} do not have one value per filing ({len(accns)})"
            )
        for i, accn in enumerate(accns):
            filed = _date(cols["filingDate"][i], "filingDate", f"submissions {accn}")
            if (start is not None and filed < start) or (end is not None and filed > end):
                continue
            report = cols["reportDate"][i]
            xbrl = cols["isXBRL"][i]
            rows[(filed, str(accn))] = {
                "filed": filed,
                "accession": str(accn),
                "form": cols["form"][i] or None,
                "report_date": _date(report, "reportDate", f"submissions {accn}")
                if report
                else None,
                "primary_document": cols["primaryDocument"][i] or None,
                "is_xbrl": None if xbrl is None else bool(xbrl),
            }
    return pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=schema)


def _older_pages(main: Any, start: dt.date, end: dt.date) -> list[str]:
    """Names of the older submissions pages whose date range overlaps ``[start, end]``."""
    filings = main.get("filings") if isinstance(main, Mapping) else None
    files = filings.get("files") if isinstance(filings, Mapping) else None
    names: list[str] = []
    for entry in files or ():
        if not isinstance(entry, Mapping) or not entry.get("name"):
            continue
        try:
            lo = dt.date.fromisoformat(str(entry.get("filingFrom")))
            hi = dt.date.fromisoformat(str(entry.get("filingTo")))
        except ValueError:
            lo, hi = dt.date.min, dt.date.max
        if lo <= end and hi >= start:
            names.append(str(entry["name"]))
    return names


# --- the source --------------------------------------------------------------------------------


def _check_user_agent(value: str | None) -> str:
    text = (value or "").strip()
    if not text:
        raise ConfigError(
            f"{USER_AGENT_ENV} is not set: SEC EDGAR requires a User-Agent naming you and an "
            f"e-mail address, e.g. export {USER_AGENT_ENV}='Company Name admin@example.com' "
            "(https://www.sec.gov/os/accessing-edgar-data)"
        )
    if not re.search(r"\S+@\S+\.\S+", text) or not re.search(r"[A-Za-z]", text.split("@")[0]):
        raise ConfigError(
            f"{USER_AGENT_ENV}={text!r} does not look like 'Company Name admin@example.com': "
            "SEC EDGAR requires a name and an e-mail address"
        )
    return text


class SecEdgarSource(Source):
    """SEC EDGAR companyfacts -> ``fundamentals``, submissions -> ``filings``, and
    ``company_tickers.json`` -> ``ticker_metadata`` under ticker ``SEC`` (module docstring).

    Parameters
    ----------
    client:
        The HTTP client to use (tests pass one on an ``httpx.MockTransport``). Default: one is
        created on the first fetch with the ``User-Agent`` from ``user_agent`` or the
        ``SEC_USER_AGENT`` environment variable (a :class:`ConfigError` when neither is set).
    user_agent:
        ``"Company Name admin@example.com"``; overrides ``SEC_USER_AGENT``.
    existing:
        Reader of the stored ``ticker_metadata`` of ``SEC`` (set by :meth:`bind_lake`, which the
        batch and import paths call); without it a ``SEC`` request refuses to run.
    """

    name: ClassVar[str] = "sec"
    datasets: ClassVar[tuple[str, ...]] = ("fundamentals", "filings", "ticker_metadata")
    description: ClassVar[str] = (
        "SEC EDGAR: point-in-time quarterly fundamentals from XBRL companyfacts (restatements "
        "as new rows, derived Q4, IFRS filers), the filing index from submissions, and the "
        "ticker <-> CIK intervals of company_tickers.json (ticker SEC)."
    )
    settings: ClassVar[tuple[str, ...]] = (USER_AGENT_ENV,)
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        user_agent: str | None = None,
        existing: Callable[[str], pa.Table | None] | None = None,
    ) -> None:
        self._client = client
        self._user_agent = user_agent
        self._existing = existing
        self._lock = threading.Lock()
        self._tickers_lock = threading.Lock()
        self._tickers: pa.Table | None = None
        self._cik_by_ticker: dict[str, int] | None = None

    def __repr__(self) -> str:
        return "SecEdgarSource()"

    def __getstate__(self) -> dict[str, Any]:  # worker processes build their own client
        return {"_client": None, "_user_agent": self._user_agent}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(user_agent=state.get("_user_agent"))  # type: ignore[misc]

    def _make_client(self) -> HttpClient:
        """Needs ``SEC_USER_AGENT`` (or ``user_agent=``): SEC refuses anonymous clients."""
        agent = _check_user_agent(self._user_agent or os.environ.get(USER_AGENT_ENV))
        return HttpClient(user_agent=agent)

    def bind_lake(self, lake: Any) -> None:
        """Read the stored ``SEC`` ticker intervals from ``lake`` (a Lake or a batch target)."""
        from marketlake.reference import stored_table

        self._existing = lambda dataset: stored_table(lake, REFERENCE_TICKER_SEC, dataset)

    def _read_existing(self) -> pa.Table | None:
        if self._existing is None:
            raise SourceError(
                "sec accumulates ticker <-> CIK intervals over the stored ones and has no lake "
                "to read them from: run it through 'marketlake ingest/import'",
                source=self.name,
            )
        return self._existing(TICKER_METADATA.name)

    @staticmethod
    def _check(request: SourceRequest) -> None:
        unknown = [d for d in request.datasets if d not in SecEdgarSource.datasets]
        if unknown:
            raise SourceError(
                f"the sec source cannot provide {unknown}; it provides {SecEdgarSource.datasets}"
            )
        reference = request.ticker == REFERENCE_TICKER_SEC
        if reference and set(request.datasets) != {TICKER_METADATA.name}:
            raise SourceError(
                f"sec: ticker {REFERENCE_TICKER_SEC!r} is the ticker <-> CIK reference and has "
                "only dataset 'ticker_metadata'",
                ticker=request.ticker,
            )
        if not reference and TICKER_METADATA.name in request.datasets:
            raise SourceError(
                f"sec: ticker_metadata (SEC's ticker <-> CIK file) is stored under ticker "
                f"{REFERENCE_TICKER_SEC!r}, not {request.ticker!r}: use --tickers "
                f"{REFERENCE_TICKER_SEC} --datasets ticker_metadata",
                ticker=request.ticker,
            )

    def company_tickers(self) -> pa.Table:
        """The ticker -> CIK table (``ticker, cik, title``), fetched once per source instance."""
        with self._tickers_lock:  # one download even when many threads ask at once
            if self._tickers is None:
                table = parse_company_tickers(self.client.get_json(COMPANY_TICKERS_URL))
                self._cik_by_ticker = dict(
                    zip(table["ticker"].to_pylist(), table["cik"].to_pylist(), strict=True)
                )
                self._tickers = table
            return self._tickers

    def cik(self, ticker_or_cik: str | int) -> int:
        """CIK of a ticker (``BRK.B``/``BRK-B``) or of a CIK given as int or (padded) digits.

        Raises
        ------
        NoDataError
            When SEC's ticker file does not list the ticker.
        """
        if isinstance(ticker_or_cik, int) or re.fullmatch(
            r"(?i)(CIK)?\d{1,10}", str(ticker_or_cik).strip()
        ):
            return parse_cik(ticker_or_cik)
        ticker = normalize_ticker(ticker_or_cik)
        self.company_tickers()
        assert self._cik_by_ticker is not None
        cik = self._cik_by_ticker.get(ticker)
        if cik is None:
            raise NoDataError(
                f"SEC's {COMPANY_TICKERS_URL} does not list ticker {ticker!r}; pass its CIK "
                "instead (https://www.sec.gov/edgar/searchedgar/companysearch)",
                ticker=ticker,
            )
        return cik

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download what ``request`` needs: ``{"cik", "companyfacts"?, "submissions"?}``.

        ``submissions`` is a list of pages: the main JSON, then the older pages whose date range
        overlaps the request. For ticker ``SEC``: ``{"tickers": [(snapshot_date, json)],
        "existing": stored ticker_metadata}``.
        """
        self._check(request)
        if request.ticker == REFERENCE_TICKER_SEC:
            existing = self._read_existing()
            response = self.client.get(COMPANY_TICKERS_URL)
            day = _snapshot_date(response.headers, dt.datetime.now(dt.UTC).date())
            return {
                "tickers": [(day.isoformat(), response.json())],
                "existing": existing,
            }
        cik = self.cik(request.ticker)
        raw: dict[str, Any] = {"cik": cik}
        if "fundamentals" in request.datasets:
            raw["companyfacts"] = self.client.get_json(companyfacts_url(cik))
        if "filings" in request.datasets:
            main = self.client.get_json(submissions_url(cik))
            pages = [main]
            for page in _older_pages(main, request.start, request.end):
                pages.append(self.client.get_json(f"{DATA_URL}/submissions/{page}"))
            raw["submissions"] = pages
        return raw

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Pure: ``fundamentals`` and/or ``filings`` tables for ``request`` from :meth:`fetch`'s
        payload (``ticker_metadata`` for ticker ``SEC``: the stored intervals the snapshots
        change; the date range does not filter it); datasets without rows are left out."""
        if not isinstance(raw, Mapping):
            raise SourceError(f"sec: expected the fetch payload (a dict), got {type(raw).__name__}")
        self._check(request)
        out: dict[str, pa.Table] = {}
        if request.ticker == REFERENCE_TICKER_SEC:
            if not isinstance(raw.get("tickers"), list):
                raise SourceError("sec: a SEC payload must be {'tickers': [...], 'existing': ...}")
            table = parse_ticker_snapshots(raw["tickers"], raw.get("existing"))
            if table.num_rows:
                out[TICKER_METADATA.name] = table
            return out
        try:
            if "fundamentals" in request.datasets and raw.get("companyfacts") is not None:
                table = parse_companyfacts(
                    raw["companyfacts"], start=request.start, end=request.end
                )
                if table.num_rows:
                    out["fundamentals"] = table
            if "filings" in request.datasets and raw.get("submissions") is not None:
                table = parse_submissions(raw["submissions"], start=request.start, end=request.end)
                if table.num_rows:
                    out["filings"] = table
        except SourceError as exc:
            raise SourceError(f"{request.ticker}: {exc}", ticker=request.ticker) from None
        return out

    # --- files (marketlake import) ---------------------------------------------------------------

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """SEC JSON files -> payloads for :meth:`parse` (no network).

        Reads single ``companyfacts`` (-> ``fundamentals``) and ``submissions`` JSONs (the main
        ``CIK##########.json`` and older ``CIK##########-submissions-NNN.json`` pages ->
        ``filings``), plain or gzip-compressed, and SEC's nightly bulk ``companyfacts.zip`` /
        ``submissions.zip`` (members read one at a time). The ``cik`` may be an int or a padded
        string.

        Tickers: SEC's ``company_tickers.json`` among ``paths`` (files named
        ``company_tickers*`` are read first; the CLI's ``--tickers-file``) maps each CIK to its
        first listed ticker; without an entry there, a submissions JSON's own ``tickers`` names
        it (and then the company's other files). A single file whose ticker stays unknown fails
        with a message saying so; a bulk-archive member is skipped (most EDGAR filers have no
        ticker).

        Company tickers files given without any companyfacts/submissions file are stored as
        ``ticker_metadata`` snapshots under ticker ``SEC`` (one payload, snapshots in date
        order; dates as the module docstring says).
        """
        files = list(paths)
        by_cik: dict[int, str] = {}  # from company_tickers.json (wins)
        own: dict[int, str] = {}  # from the submissions' own "tickers"
        snapshots: list[tuple[dt.date, str, Any]] = []  # company tickers: (date, origin, json)
        company_files = False
        first = [p for p in files if p.name.lower().startswith("company_tickers")]
        for doc in iter_documents(first):
            try:
                body = _sec_json(doc)
                self._learn_tickers(body, by_cik)
                snapshots.append((_file_snapshot_date(doc), doc.origin, body))
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
        # payloads whose ticker is unknown wait until every file has been seen
        later: list[tuple[Document, str, int, Callable[[], Any]]] = []
        rest = [p for p in files if p not in first]
        for doc in iter_documents(rest):
            try:
                body = _sec_json(doc)
                kind = _sec_kind(body, doc)
                if kind == "tickers":
                    self._learn_tickers(body, by_cik)
                    snapshots.append((_file_snapshot_date(doc), doc.origin, body))
                    continue
                company_files = True
                cik = _file_cik(body, doc, kind)
                mine = _own_ticker(body)
                if mine is not None:
                    own.setdefault(cik, mine)
                ticker = by_cik.get(cik) or own.get(cik)
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            if ticker is None:
                kept = replace(doc, data=None)  # re-read later: bytes are not held meanwhile
                later.append((kept, kind, cik, _reloader(kept)))
                continue
            yield _sec_payload(doc.origin, ticker, kind, cik, body)
        for doc, kind, cik, reload in later:
            ticker = by_cik.get(cik) or own.get(cik)
            if ticker is None:
                if doc.archive is not None:
                    yield FilePayload.skipped(doc.origin, f"no ticker for CIK {cik:010d}")
                else:
                    yield FilePayload.failed(
                        doc.origin,
                        f"cannot tell the ticker of CIK {cik:010d}: give SEC's "
                        "company_tickers.json (--tickers-file, or as an extra path named "
                        "company_tickers.json)",
                    )
                continue
            try:
                body = reload()
            except MarketlakeError as exc:
                yield FilePayload.failed(doc.origin, str(exc))
                continue
            yield _sec_payload(doc.origin, ticker, kind, cik, body)
        if snapshots and not company_files:
            yield from self._ticker_payload(snapshots)

    def _ticker_payload(self, snapshots: list[tuple[dt.date, str, Any]]) -> Iterator[FilePayload]:
        """One ``ticker_metadata`` payload (ticker ``SEC``) for company tickers files."""
        snapshots.sort(key=lambda s: s[0])
        origin = ", ".join(o for _, o, _ in snapshots)
        try:
            existing = self._read_existing()
        except SourceError as exc:
            yield FilePayload.failed(origin, str(exc))
            return
        raw = {"tickers": [(d.isoformat(), body) for d, _, body in snapshots], "existing": existing}
        request = SourceRequest(REFERENCE_TICKER_SEC, (TICKER_METADATA.name,), *FILE_RANGE)
        yield FilePayload(origin, request, raw)

    @staticmethod
    def _learn_tickers(payload: Any, by_cik: dict[int, str]) -> None:
        table = parse_company_tickers(payload)
        for ticker, cik in zip(table["ticker"].to_pylist(), table["cik"].to_pylist(), strict=True):
            by_cik.setdefault(cik, ticker)  # SEC lists a company's main ticker first


_PAGE_NAME = re.compile(r"(?i)^CIK(\d{1,10})-submissions-\d+\.json$")
_KIND_DATASET = {"companyfacts": "fundamentals", "submissions": "filings", "page": "filings"}


def _sec_json(doc: Document) -> Any:
    if doc.data is None:
        raise SourceError(doc.error or f"{doc.origin}: cannot read")
    return load_json(doc.data, doc.origin)


def _sec_kind(body: Any, doc: Document) -> str:
    """``companyfacts``, ``submissions`` (main JSON), ``page`` (older page) or ``tickers``."""
    if isinstance(body, Mapping):
        if isinstance(body.get("facts"), Mapping):
            return "companyfacts"
        filings = body.get("filings")
        if isinstance(filings, Mapping) and isinstance(filings.get("recent"), Mapping):
            return "submissions"
        if "accessionNumber" in body:
            return "page"
        if "fields" in body and "data" in body:
            return "tickers"
        first = next(iter(body.values()), None)
        if isinstance(first, Mapping) and "cik_str" in first and "ticker" in first:
            return "tickers"
    keys = sorted(map(str, body))[:8] if isinstance(body, Mapping) else type(body).__name__
    raise SourceError(
        f"{doc.origin}: not an SEC companyfacts, submissions or company_tickers JSON (got {keys})"
    )


def _file_cik(body: Mapping[str, Any], doc: Document, kind: str) -> int:
    if kind == "page":
        match = _PAGE_NAME.match(doc.name)
        if match is None:
            raise SourceError(
                f"{doc.origin}: an older submissions page must keep SEC's file name "
                "CIK##########-submissions-NNN.json (it holds no CIK itself)"
            )
        return parse_cik(match.group(1))
    if body.get("cik") is None:
        raise SourceError(f"{doc.origin}: the {kind} JSON has no 'cik'")
    try:
        return parse_cik(body["cik"])
    except SourceError as exc:
        raise SourceError(f"{doc.origin}: {exc}") from None


def _own_ticker(body: Mapping[str, Any]) -> str | None:
    tickers = body.get("tickers")
    for raw in tickers if isinstance(tickers, list) else ():
        try:
            return normalize_ticker(str(raw))
        except InvalidTickerError:
            continue
    return None


def _reloader(doc: Document) -> Callable[[], Any]:
    """Read a document again later (its bytes are not kept while waiting)."""

    def reload() -> Any:
        if doc.archive is not None and doc.member is not None:
            data = read_member(doc.archive, doc.member)
        else:
            data = read_file(Path(doc.origin))
        return load_json(data, doc.origin)

    return reload


def _sec_payload(origin: str, ticker: str, kind: str, cik: int, body: Any) -> FilePayload:
    dataset = _KIND_DATASET[kind]
    raw: dict[str, Any] = {"cik": cik}
    if kind == "companyfacts":
        raw["companyfacts"] = body
    else:
        raw["submissions"] = [body]
    return FilePayload(origin, SourceRequest(ticker, (dataset,), *FILE_RANGE), raw)
