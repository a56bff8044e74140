"""NASDAQ Trader symbol directory: US listings (``ticker_metadata``), renames (``ticker_history``).

``https://www.nasdaqtrader.com/dynamic/SymDir/nasdaqlisted.txt`` (NASDAQ-listed securities) and
``.../otherlisted.txt`` (NYSE, NYSE American, NYSE Arca, Cboe BZX, IEX, ... listings) are
pipe-delimited files regenerated every day; each ends with a trailer line
``File Creation Time: MMDDYYYYHH:MM|||...`` whose date is the *snapshot date*.

Both tables are stored under the universe name ``US`` in the ticker slot
(``ticker_metadata/v1/US/data.parquet``), so the ordinary write path holds them.

Parsing one snapshot (pure, :func:`parse_snapshot`)
---------------------------------------------------
* Columns are found by their header names (order does not matter); CRLF or LF line ends.
* Test issues (``Test Issue`` = ``Y``) are excluded. ``ETF`` = ``Y`` -> ``is_etf``.
* ``exchange``: NASDAQ market category Q/G/S -> ``Nasdaq Global Select`` / ``Nasdaq Global
  Market`` / ``Nasdaq Capital Market``; otherlisted codes N -> ``NYSE``, A -> ``NYSE American``,
  P -> ``NYSE Arca``, Z -> ``Cboe BZX``, V -> ``IEX``, M -> ``NYSE Texas``; an unknown code is
  kept as given.
* Symbols (otherlisted uses the ACT symbol): ordinary symbols, class shares, units and warrants
  (``BF.B``, ``AACT.U``, ``ACHR.W``) are kept as
  :func:`~marketlake.schemas.tickers.normalize_ticker` spells them; a preferred series
  ``ABR$D`` becomes ``ABR-PD`` (Yahoo's spelling). Rejected (skipped and counted, never
  fatal): a preferred without a series letter (``ETI$``: no unambiguous spelling, ``ETI-P``
  would read as class share ``ETI.P``), any symbol the ticker rules refuse, and a second row
  of a symbol already seen in the snapshot.
* A file without the trailer (a truncated download) or two files of different snapshot dates
  are refused with :class:`~marketlake.errors.SourceError`: a partial snapshot would "delist"
  every symbol it lacks.

Accumulating snapshots (pure, :func:`accumulate_listings`)
----------------------------------------------------------
``ticker_metadata`` rows are listing intervals keyed ``(first_seen, symbol)``. Applying a
snapshot of date D to the stored rows: a symbol without an open interval starts one
(``first_seen = last_seen = D``; a symbol that re-appears after a delisting therefore gets a
*new* row); an open interval of a listed symbol gets ``last_seen = D`` and the snapshot's name,
exchange, ETF flag, round lot and financial status; an open interval whose symbol is missing
gets ``delisted = D``. Columns a snapshot does not carry stay null (NASDAQ snapshots have no
``cik``; SEC's ``company_tickers.json`` has no exchange). With ``identity`` columns (SEC uses
``cik`` and ``name``), an open interval whose identity differs from the snapshot's is closed
(``delisted = D``) and a new interval starts, so a symbol reused by another company keeps both
intervals. Only new or changed rows are returned (the writer upserts them), so
applying the same snapshot twice writes nothing. A snapshot older than the latest one applied
(``max(last_seen, delisted)``) is stale and ignored; one that would delist more than
:data:`MAX_DELIST_FRACTION` of the listed symbols at once is refused as implausible.

Renames (pure, :func:`derive_renames`): on a snapshot date, a symbol delisted that day and a
symbol first seen that day whose security names are equal after normalisation (case, punctuation
and spacing ignored) form a rename ``old_symbol -> new_symbol``, when the name is unique among
both the delisted and the new symbols of that day. A rename that also changes the company name
(FB -> META) is not detected.

Why the source reads the lake
-----------------------------
Accumulation needs the stored intervals, which ``parse`` (pure) cannot read. The batch and import
paths call the optional ``bind_lake(lake)`` hook of a source before they start; this source then
reads the stored ``ticker_metadata`` of ``US`` in :meth:`NasdaqTraderSource.fetch` /
:meth:`NasdaqTraderSource.read_files` (its I/O stages) and passes it to ``parse`` inside the raw
payload. Without a lake (or an explicit ``existing`` reader) the source refuses to fetch, rather
than write intervals that ignore history. Two collectors running at the same moment could both
apply a snapshot to the same stored state; the daily job runs alone, and a re-run repairs it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from marketlake.errors import InvalidTickerError, SourceError
from marketlake.schemas.datasets import REFERENCE_TICKER_US, TICKER_HISTORY, TICKER_METADATA
from marketlake.schemas.tickers import normalize_ticker
from marketlake.sources.base import FILE_RANGE, FilePayload, Source, SourceRequest
from marketlake.sources.files import iter_documents

if TYPE_CHECKING:
    from marketlake.sources.http import HttpClient

__all__ = [
    "MAX_DELIST_FRACTION",
    "NASDAQLISTED_URL",
    "OTHERLISTED_URL",
    "NasdaqTraderSource",
    "Snapshot",
    "accumulate_listings",
    "apply_snapshots",
    "derive_renames",
    "parse_snapshot",
]

log = logging.getLogger(__name__)

NASDAQLISTED_URL = "https://www.nasdaqtrader.com/dynamic/SymDir/nasdaqlisted.txt"
OTHERLISTED_URL = "https://www.nasdaqtrader.com/dynamic/SymDir/otherlisted.txt"
SOURCE_NAME = "nasdaq_trader"
MAX_DELIST_FRACTION = 0.2
"""A snapshot delisting more than this share of the listed symbols at once is refused."""

NASDAQ_MARKETS = {
    "Q": "Nasdaq Global Select",
    "G": "Nasdaq Global Market",
    "S": "Nasdaq Capital Market",
}
OTHER_EXCHANGES = {
    "N": "NYSE",
    "A": "NYSE American",
    "P": "NYSE Arca",
    "Z": "Cboe BZX",
    "V": "IEX",
    "M": "NYSE Texas",
}

SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("exchange", pa.string()),
        pa.field("is_etf", pa.bool_()),
        pa.field("round_lot", pa.int64()),
        pa.field("financial_status", pa.string()),
    ]
)
_INTERVAL_COLUMNS = ("first_seen", "symbol", "last_seen", "delisted", "source")
_TRAILER = re.compile(r"^File Creation Time:\s*(\d{2})(\d{2})(\d{4})(\d{2}):(\d{2})")
_NASDAQ_HEADER = "Symbol"
_OTHER_HEADER = "ACT Symbol"


@dataclass(frozen=True)
class Snapshot:
    """One parsed snapshot: its date and creation time, current listings, rejected symbols."""

    date: dt.date
    created: dt.datetime
    table: pa.Table
    rejected: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``(date, table)``."""
        return iter((self.date, self.table))


# --- parsing one snapshot ---------------------------------------------------------------------


def _text(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _split(text: str, what: str, first: str) -> tuple[list[str], list[list[str]], dt.datetime]:
    """Header, data rows and creation time of one directory file."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise SourceError(f"{what}: empty file")
    header = [h.strip() for h in lines[0].split("|")]
    if header[0] != first:
        raise SourceError(
            f"{what}: not a NASDAQ Trader {'nasdaqlisted' if first == 'Symbol' else 'otherlisted'}"
            f" file (header starts with {header[0]!r}, expected {first!r})"
        )
    match = _TRAILER.match(lines[-1])
    if match is None:
        raise SourceError(
            f"{what}: no 'File Creation Time' trailer line: the file is truncated or not a "
            "complete symbol directory snapshot"
        )
    month, day, year, hour, minute = (int(g) for g in match.groups())
    try:
        created = dt.datetime(year, month, day, hour, minute)
    except ValueError:
        raise SourceError(f"{what}: bad File Creation Time {lines[-1]!r}") from None
    rows = [ln.split("|") for ln in lines[1:-1]]
    return header, rows, created


def _symbol(raw: str) -> str:
    """Lake spelling of a directory symbol (raises InvalidTickerError when there is none)."""
    text = raw.strip()
    if "$" in text:
        head, _, series = text.partition("$")
        if not series:
            raise InvalidTickerError(
                f"preferred {text!r} has no series letter (no unambiguous lake spelling)",
                ticker=text,
            )
        text = f"{head}-P{series}"
    return normalize_ticker(text)


def _yes(value: str | None) -> bool | None:
    v = (value or "").strip().upper()
    return True if v == "Y" else False if v == "N" else None


def _int(value: str | None) -> int | None:
    v = (value or "").strip()
    try:
        n = int(v)
    except ValueError:
        return None
    return n if n >= 0 else None


def parse_snapshot(
    nasdaqlisted: str | bytes,
    otherlisted: str | bytes,
    *,
    origin: tuple[str, str] = ("nasdaqlisted.txt", "otherlisted.txt"),
) -> Snapshot:
    """Parse one day's ``nasdaqlisted.txt`` and ``otherlisted.txt`` into the current listings.

    Pure. Returns a :class:`Snapshot` (unpacks as ``(snapshot_date, table)``) whose table has
    :data:`SNAPSHOT_SCHEMA` columns, sorted by symbol; rules in the module docstring.

    Raises
    ------
    SourceError
        A file is not a symbol directory, lacks its trailer, or the two dates differ.
    """
    n_header, n_rows, n_created = _split(_text(nasdaqlisted, origin[0]), origin[0], _NASDAQ_HEADER)
    o_header, o_rows, o_created = _split(_text(otherlisted, origin[1]), origin[1], _OTHER_HEADER)
    if n_created.date() != o_created.date():
        raise SourceError(
            f"{origin[0]} was created {n_created:%Y-%m-%d %H:%M} but {origin[1]} "
            f"{o_created:%Y-%m-%d %H:%M}: both files must come from the same day's snapshot"
        )
    out: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []

    def column(header: list[str], name: str, what: str) -> int:
        try:
            return header.index(name)
        except ValueError:
            raise SourceError(f"{what}: no {name!r} column in the header") from None

    def add(raw_symbol: str, row: dict[str, Any], what: str) -> None:
        try:
            symbol = _symbol(raw_symbol)
        except InvalidTickerError as exc:
            rejected.append(f"{what}: {raw_symbol!r}: {exc}")
            return
        if symbol in out:
            rejected.append(f"{what}: {raw_symbol!r}: duplicate of {symbol}")
            return
        out[symbol] = {"symbol": symbol, **row}

    idx = {
        n: column(n_header, n, origin[0])
        for n in (
            "Symbol",
            "Security Name",
            "Market Category",
            "Test Issue",
            "Financial Status",
            "Round Lot Size",
            "ETF",
        )
    }
    for cells in n_rows:
        cells = cells + [""] * (len(n_header) - len(cells))
        if _yes(cells[idx["Test Issue"]]):
            continue
        market = cells[idx["Market Category"]].strip()
        status = cells[idx["Financial Status"]].strip()
        add(
            cells[idx["Symbol"]],
            {
                "name": cells[idx["Security Name"]].strip() or None,
                "exchange": NASDAQ_MARKETS.get(market, market or None),
                "is_etf": _yes(cells[idx["ETF"]]),
                "round_lot": _int(cells[idx["Round Lot Size"]]),
                "financial_status": status or None,
            },
            origin[0],
        )
    odx = {
        n: column(o_header, n, origin[1])
        for n in ("ACT Symbol", "Security Name", "Exchange", "ETF", "Round Lot Size", "Test Issue")
    }
    for cells in o_rows:
        cells = cells + [""] * (len(o_header) - len(cells))
        if _yes(cells[odx["Test Issue"]]):
            continue
        code = cells[odx["Exchange"]].strip()
        add(
            cells[odx["ACT Symbol"]],
            {
                "name": cells[odx["Security Name"]].strip() or None,
                "exchange": OTHER_EXCHANGES.get(code, code or None),
                "is_etf": _yes(cells[odx["ETF"]]),
                "round_lot": _int(cells[odx["Round Lot Size"]]),
                "financial_status": None,
            },
            origin[1],
        )
    if rejected:
        log.info("nasdaq_trader snapshot %s: %d symbol(s) skipped", n_created.date(), len(rejected))
    rows = [out[s] for s in sorted(out)]
    table = pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)
    return Snapshot(n_created.date(), max(n_created, o_created), table, tuple(rejected))


# --- accumulating snapshots -------------------------------------------------------------------


def _rows(table: pa.Table | None) -> list[dict[str, Any]]:
    if table is None or table.num_rows == 0:
        return []
    return [{n: r.get(n) for n in TICKER_METADATA.schema.names} for r in table.to_pylist()]


def _latest(rows: Sequence[Mapping[str, Any]]) -> dt.date | None:
    days = [r["last_seen"] for r in rows] + [r["delisted"] for r in rows if r["delisted"]]
    return max(days) if days else None


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, key: Sequence[str]) -> pa.Table:
    ordered = sorted(rows, key=lambda r: tuple(r[k] for k in key))
    return pa.Table.from_pylist(list(ordered), schema=schema)


def accumulate_listings(
    existing: pa.Table | None,
    snapshot: pa.Table,
    snapshot_date: dt.date,
    *,
    source: str = SOURCE_NAME,
    max_delist_fraction: float = MAX_DELIST_FRACTION,
    identity: Sequence[str] = (),
) -> pa.Table:
    """Apply one snapshot to the stored listing intervals; return the rows to write.

    Pure. ``existing`` holds ``ticker_metadata`` rows (or None), ``snapshot`` the current
    listings of ``snapshot_date`` (:func:`parse_snapshot`, or any table with a ``symbol`` column
    and some ``ticker_metadata`` value columns). ``identity`` names value columns whose change
    closes the open interval and starts a new one (default: none; values are updated in place).
    The result has the ``ticker_metadata`` schema and holds only new or changed rows (empty when
    the snapshot is stale or already applied); rules in the module docstring.

    Raises
    ------
    SourceError
        The snapshot would delist more than ``max_delist_fraction`` of the listed symbols.
    """
    rows = _rows(existing)
    latest = _latest(rows)
    if latest is not None and snapshot_date < latest:
        log.warning(
            "%s: snapshot of %s is older than the latest applied (%s); ignored",
            source,
            snapshot_date,
            latest,
        )
        return TICKER_METADATA.schema.empty_table()
    current = {r["symbol"]: r for r in snapshot.to_pylist()}
    open_rows: dict[str, dict[str, Any]] = {}
    closed_today: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["delisted"] is None:
            prev = open_rows.get(r["symbol"])
            if prev is None or r["first_seen"] > prev["first_seen"]:
                open_rows[r["symbol"]] = r
        elif r["delisted"] == snapshot_date:
            closed_today[r["symbol"]] = r
    missing = [s for s in open_rows if s not in current]
    if open_rows and len(missing) > max_delist_fraction * len(open_rows):
        raise SourceError(
            f"{source}: the snapshot of {snapshot_date} lacks {len(missing)} of "
            f"{len(open_rows)} listed symbols (more than {max_delist_fraction:.0%}): refusing "
            "to delist them; is one of the files truncated?"
        )
    names = TICKER_METADATA.schema.names
    values = [c for c in snapshot.column_names if c in names and c not in _INTERVAL_COLUMNS]
    changed: list[dict[str, Any]] = []
    for symbol, listing in current.items():
        base = open_rows.get(symbol) or closed_today.get(symbol)
        if (
            base is not None
            and base["first_seen"] < snapshot_date
            and any(base[c] != listing[c] for c in identity)
        ):  # another identity (e.g. CIK) under the same symbol: close, start a new interval
            if base["delisted"] is None:
                changed.append({**base, "delisted": snapshot_date})
            base = None
        if base is None:
            new = {
                **dict.fromkeys(names),
                "first_seen": snapshot_date,
                "symbol": symbol,
                **{c: listing[c] for c in values},
                "last_seen": snapshot_date,
                "delisted": None,
                "source": source,
            }
        else:  # listed (or re-applied on the day it was marked delisted: reopened)
            new = {
                **base,
                **{c: listing[c] for c in values},
                "last_seen": max(base["last_seen"], snapshot_date),
                "delisted": None,
                "source": source,
            }
        if new != base:
            changed.append(new)
    for symbol in missing:
        changed.append({**open_rows[symbol], "delisted": snapshot_date})
    return _table(changed, TICKER_METADATA.schema, TICKER_METADATA.key)


def _name_key(name: str | None) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", (name or "").lower()).split())


def derive_renames(
    changes: pa.Table, snapshot_date: dt.date, *, source: str = SOURCE_NAME
) -> pa.Table:
    """Renames on ``snapshot_date`` from the rows :func:`accumulate_listings` returned.

    Pure. A symbol delisted on that date and a symbol first seen on that date with the same
    normalised security name, unique on both sides, make one ``ticker_history`` row.
    """
    gone: dict[str, list[dict[str, Any]]] = {}
    came: dict[str, list[dict[str, Any]]] = {}
    for r in changes.to_pylist():
        key = _name_key(r["name"])
        if not key:
            continue
        if r["delisted"] == snapshot_date:
            gone.setdefault(key, []).append(r)
        elif r["first_seen"] == snapshot_date and r["delisted"] is None:
            came.setdefault(key, []).append(r)
    out = [
        {
            "date": snapshot_date,
            "old_symbol": gone[k][0]["symbol"],
            "new_symbol": came[k][0]["symbol"],
            "name": came[k][0]["name"],
            "source": source,
        }
        for k in sorted(gone.keys() & came.keys())
        if len(gone[k]) == 1 and len(came[k]) == 1
    ]
    return _table(out, TICKER_HISTORY.schema, TICKER_HISTORY.key)


def apply_snapshots(
    existing: pa.Table | None,
    snapshots: Sequence[Snapshot],
    *,
    source: str = SOURCE_NAME,
    identity: Sequence[str] = (),
) -> tuple[pa.Table, pa.Table]:
    """Apply snapshots in date order; return ``(ticker_metadata rows, ticker_history rows)``.

    Pure: the changed interval rows over all snapshots (latest version of each) and every
    rename found on the way (``identity`` as in :func:`accumulate_listings`).
    """
    state = {(r["first_seen"], r["symbol"]): r for r in _rows(existing)}
    written: dict[tuple[dt.date, str], dict[str, Any]] = {}
    renames: list[dict[str, Any]] = []
    for snap in sorted(snapshots, key=lambda s: s.created):
        current = _table(list(state.values()), TICKER_METADATA.schema, TICKER_METADATA.key)
        changes = accumulate_listings(
            current if state else None, snap.table, snap.date, source=source, identity=identity
        )
        for r in _rows(changes):
            state[(r["first_seen"], r["symbol"])] = r
            written[(r["first_seen"], r["symbol"])] = r
        renames.extend(derive_renames(changes, snap.date, source=source).to_pylist())
    return (
        _table(list(written.values()), TICKER_METADATA.schema, TICKER_METADATA.key),
        _table(renames, TICKER_HISTORY.schema, TICKER_HISTORY.key),
    )


# --- the source -------------------------------------------------------------------------------

ExistingReader = Callable[[str], "pa.Table | None"]
"""Reads the stored table of a dataset (``"ticker_metadata"``) for ticker ``US``."""


class NasdaqTraderSource(Source):
    """NASDAQ Trader symbol directory -> ``ticker_metadata`` and ``ticker_history`` under ``US``.

    Parameters
    ----------
    client:
        HTTP client (default: one created on first use).
    existing:
        Reader of the stored ``ticker_metadata`` of ``US`` (set by :meth:`bind_lake`, which the
        batch and import paths call); without it :meth:`fetch` refuses to run.
    nasdaqlisted_url, otherlisted_url:
        Where to download the two files.
    """

    name: ClassVar[str] = SOURCE_NAME
    datasets: ClassVar[tuple[str, ...]] = ("ticker_metadata", "ticker_history")
    description: ClassVar[str] = (
        "NASDAQ Trader symbol directory (nasdaqlisted/otherlisted): US listings with exchange, "
        "ETF flag and listing/delisting dates from daily snapshots, and derived renames; "
        "ticker US; no key."
    )
    settings: ClassVar[tuple[str, ...]] = ()
    network: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client: HttpClient | None = None,
        existing: ExistingReader | None = None,
        nasdaqlisted_url: str = NASDAQLISTED_URL,
        otherlisted_url: str = OTHERLISTED_URL,
    ) -> None:
        self._client = client
        self._existing = existing
        self.nasdaqlisted_url = nasdaqlisted_url
        self.otherlisted_url = otherlisted_url

    def bind_lake(self, lake: Any) -> None:
        """Read the stored listings from ``lake`` (a Lake or a batch target) when fetching."""
        from marketlake.reference import stored_table

        self._existing = lambda dataset: stored_table(lake, REFERENCE_TICKER_US, dataset)

    def _read_existing(self) -> pa.Table | None:
        if self._existing is None:
            raise SourceError(
                "nasdaq_trader accumulates listings over the stored ones and has no lake to read "
                "them from: run it through 'marketlake ingest/update/import' or "
                "marketlake.reference.update_listings(lake)",
                source=self.name,
            )
        return self._existing(TICKER_METADATA.name)

    @staticmethod
    def _check(request: SourceRequest) -> None:
        if request.ticker != REFERENCE_TICKER_US:
            raise SourceError(
                f"nasdaq_trader covers the US listing universe: use ticker "
                f"{REFERENCE_TICKER_US!r}, not {request.ticker!r}",
                ticker=request.ticker,
                source=SOURCE_NAME,
            )

    def fetch(self, request: SourceRequest) -> dict[str, Any]:
        """Download both directory files and read the stored listings.

        Returns ``{"snapshots": [(nasdaqlisted_bytes, otherlisted_bytes)], "existing": table}``.
        """
        self._check(request)
        existing = self._read_existing()
        nasdaq = self.client.get_bytes(self.nasdaqlisted_url)
        other = self.client.get_bytes(self.otherlisted_url)
        return {"snapshots": [(nasdaq, other)], "existing": existing}

    def parse(self, request: SourceRequest, raw: Any) -> dict[str, pa.Table]:
        """Apply the payload's snapshots to ``raw["existing"]``; see the module docstring.

        Pure. The request's date range does not filter: a snapshot describes the listings on its
        own date, and an interval that started long ago still gets its ``last_seen`` moved.
        """
        self._check(request)
        if not isinstance(raw, Mapping) or "snapshots" not in raw:
            raise SourceError(
                "nasdaq_trader: payload must be {'snapshots': [...], 'existing': ...}"
            )
        origins = raw.get("origins") or [("nasdaqlisted.txt", "otherlisted.txt")] * len(
            raw["snapshots"]
        )
        snaps = [
            parse_snapshot(n, o, origin=tuple(org))
            for (n, o), org in zip(raw["snapshots"], origins, strict=True)
        ]
        metadata, history = apply_snapshots(raw.get("existing"), snaps, source=self.name)
        out: dict[str, pa.Table] = {}
        if "ticker_metadata" in request.datasets and metadata.num_rows:
            out["ticker_metadata"] = metadata
        if "ticker_history" in request.datasets and history.num_rows:
            out["ticker_history"] = history
        return out

    def read_files(self, paths: Sequence[Path]) -> Iterator[FilePayload]:
        """Pair ``nasdaqlisted`` and ``otherlisted`` files by snapshot date; one payload for all.

        Files are recognised by their header (any file name). Every snapshot needs both files
        of the same date; an unpaired or unreadable file fails alone (it is named).
        """
        nasdaq: dict[dt.date, tuple[str, bytes]] = {}
        other: dict[dt.date, tuple[str, bytes]] = {}
        failed: list[FilePayload] = []
        for doc in iter_documents(paths):
            if doc.data is None:
                failed.append(FilePayload.failed(doc.origin, doc.error or "cannot read"))
                continue
            text = _text(doc.data, doc.origin)
            first = text.split("|", 1)[0].strip()
            target = (
                nasdaq if first == _NASDAQ_HEADER else other if first == _OTHER_HEADER else None
            )
            if target is None:
                failed.append(
                    FilePayload.failed(
                        doc.origin, "not a NASDAQ Trader nasdaqlisted.txt or otherlisted.txt file"
                    )
                )
                continue
            try:
                _, _, created = _split(text, doc.origin, first)
            except SourceError as exc:
                failed.append(FilePayload.failed(doc.origin, str(exc)))
                continue
            if created.date() in target:
                failed.append(
                    FilePayload.failed(
                        doc.origin,
                        f"a second file of the {created.date()} snapshot "
                        f"(first: {target[created.date()][0]})",
                    )
                )
                continue
            target[created.date()] = (doc.origin, doc.data)
        yield from failed
        for day in sorted(nasdaq.keys() ^ other.keys()):
            origin = (nasdaq.get(day) or other[day])[0]
            yield FilePayload.failed(
                origin, f"the {day} snapshot needs both nasdaqlisted.txt and otherlisted.txt"
            )
        days = sorted(nasdaq.keys() & other.keys())
        if not days:
            return
        request = SourceRequest(REFERENCE_TICKER_US, self.datasets, *FILE_RANGE)
        origin = ", ".join(f"{nasdaq[d][0]}+{other[d][0]}" for d in days)
        try:
            existing = self._read_existing()
        except SourceError as exc:
            yield FilePayload.failed(origin, str(exc))
            return
        raw = {
            "snapshots": [(nasdaq[d][1], other[d][1]) for d in days],
            "origins": [(nasdaq[d][0], other[d][0]) for d in days],
            "existing": existing,
        }
        yield FilePayload(origin, request, raw)
