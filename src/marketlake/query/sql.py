"""SQL over the lake through DuckDB, with ticker and date push-down.

Every registered dataset is a table (a DuckDB view) named after it: a ``ticker`` column, then the
dataset's own columns (``crypto_bars`` and ``ticker_metadata`` carry ``exchange``). DuckDB never
sees the object store (it cannot load httpfs here, and a remote lake would be a scan anyway):
the query is parsed with DuckDB's own parser (``json_serialize_sql``), and for each dataset table
it references the top-level ``AND`` conjuncts of the ``WHERE`` clause are searched for literal
filters on that table's ``ticker`` (``=``, ``IN``) and time column (``=``, ``<``, ``<=``, ``>``,
``>=``, ``BETWEEN``, ``IN``). Only those tickers and periods are read with
:meth:`~marketlake.query.lake.Lake.read_batch` (local and remote lakes alike) and registered as an
Arrow table under the dataset's name; DuckDB then runs the query unchanged. The rows fetched are a
superset of the rows the query can use, so push-down changes cost, never results.

Push-down is conservative: a filter is used only when it provably holds for every output row
(top-level ``AND`` of the ``WHERE``; of the ``ON`` clauses too when every join is inner), on a
column that resolves to exactly one table (or to tables equated by ``USING`` / ``ON a.x = b.x``
join keys), in a ``SELECT`` without ``ASOF``/``POSITIONAL``/semi/anti joins. Anything else reads
that dimension in full: without a ticker filter every ticker the catalog lists for the dataset is
read (a lake scan; :attr:`SqlResult.warnings` says so). Only the columns the query names are
decoded, unless it uses ``*``, ``COLUMNS(...)``, ``#n``, a ``NATURAL`` join or a whole row.

>>> res = run_sql(lake, "SELECT ticker, avg(close) FROM prices "  # doctest: +SKIP
...               "WHERE ticker IN ('AAPL', 'MSFT') AND date >= '2024-01-01' GROUP BY ticker")
>>> res.objects_read  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from marketlake.errors import InvalidTickerError, MarketlakeError
from marketlake.ingest.xsection import XS_DATASETS
from marketlake.query.lake import Output, convert
from marketlake.schemas.datasets import Dataset, list_datasets
from marketlake.schemas.tickers import normalize_ticker

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

log = logging.getLogger("marketlake.query.sql")

#: A one-date query naming at least this many tickers reads the date's cross-section companion
#: (when it exists) instead of one object per ticker.
XS_MIN_TICKERS = 20
_DATABASE: Any = None  # the process's DuckDB database (see _connect)
_DATABASE_LOCK = threading.Lock()

_COMPARE = {
    "COMPARE_EQUAL": "=",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_GREATERTHANOREQUALTO": ">=",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_LESSTHANOREQUALTO": "<=",
}
_FLIP = {"=": "=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
_TIME_CASTS = frozenset(
    {
        "DATE",
        "TIMESTAMP",
        "TIMESTAMPTZ",
        "TIMESTAMP WITH TIME ZONE",
        "TIMESTAMP_US",
        "DATETIME",
    }
)
_WHEN = re.compile(
    r"\d{4}-\d{2}-\d{2}"  # date
    r"(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"  # optional time
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?"  # optional offset
)
_SAFE_JOIN_REFS = frozenset({"REGULAR", "CROSS", "NATURAL"})
_SAFE_JOIN_TYPES = frozenset({"INNER", "LEFT", "RIGHT", "OUTER"})


@dataclass(frozen=True)
class TableScan:
    """What one dataset table of a query reads.

    ``tickers`` None means every ticker the catalog lists for the dataset (no usable ticker
    filter); ``start``/``end`` (inclusive; UTC dates for bar datasets) None means unbounded;
    ``columns`` None means every column (the time column is always read). ``schema_only``
    tables (``DESCRIBE``, ``SHOW TABLES``, filters that match nothing) read nothing.
    ``objects`` is the number of data partitions the read covers according to the catalog;
    ``tickers_read`` the number of tickers read. ``cross_section``: the scan is one date of a
    daily dataset served from its cross-section companion (one object for every ticker, see
    :meth:`~marketlake.query.lake.Lake.cross_section`) instead of one read per ticker."""

    dataset: str
    tickers: tuple[str, ...] | None
    start: dt.date | None
    end: dt.date | None
    columns: tuple[str, ...] | None
    schema_only: bool = False
    objects: int = 0
    tickers_read: int = 0
    ticker_list: tuple[str, ...] = field(default=(), repr=False)
    cross_section: bool = False


@dataclass
class SqlResult:
    """Result of :func:`run_sql` (and :func:`plan_sql`, with ``data`` None).

    ``data`` is the query's result (pandas, Polars or Arrow); ``scans`` says per dataset table
    what was read; ``tickers_read`` maps a dataset to the number of tickers read for it;
    ``objects_read`` counts the data partitions those reads covered, from the catalog (the
    push-down measure: 3 tickers and one month of monthly files is 3); ``warnings`` names lake
    scans and ticker literals that can match nothing."""

    data: Any
    scans: list[TableScan] = field(default_factory=list)
    tickers_read: dict[str, int] = field(default_factory=dict)
    objects_read: int = 0
    warnings: list[str] = field(default_factory=list)


def dataset_views() -> list[str]:
    """Names of the tables a query can use (one per registered dataset)."""
    return sorted(d.name for d in list_datasets())


def sql(lake: Lake, query: str, output: Output = "pandas") -> Any:
    """Run a read-only SQL query over the lake's datasets and return only the data.

    The method form ``lake.sql(query, output=...)``. See :func:`run_sql` for the tables, the
    push-down and the errors; warnings (lake scans) are logged on ``marketlake.query.sql``.
    """
    res = run_sql(lake, query, output=output)
    for text in res.warnings:
        log.warning("%s", text)
    return res.data


def plan_sql(lake: Lake, query: str) -> SqlResult:
    """What :func:`run_sql` would read for ``query``, without reading any data (``data`` is
    None). The query is parsed and bound (unknown tables and columns raise), the catalog
    counts the partitions."""
    duckdb = _duckdb()
    con = _connect(duckdb)
    try:
        scans, warnings = _plan(lake, con, duckdb, query)
        _bind(con, duckdb, lake, query, scans)
    finally:
        con.close()
    return _result(None, scans, warnings)


def run_sql(
    lake: Lake,
    query: str,
    *,
    output: Output = "pandas",
    tickers_limit: int | None = None,
) -> SqlResult:
    """Run one read-only SQL statement over the lake's datasets through DuckDB.

    Parameters
    ----------
    lake:
        An open :class:`~marketlake.query.lake.Lake` (local or remote).
    query:
        One ``SELECT`` statement (``WITH``, joins, aggregates, windows, ``DESCRIBE``, ``SHOW
        TABLES`` ...). Tables: one per dataset (:func:`dataset_views`), each with a ``ticker``
        column first and the dataset's columns; ``prices`` holds raw (unadjusted) prices.
        Timestamps compare in UTC. Filter on ``ticker`` and the time column with literals so
        that only those partitions are read.
    output:
        ``"pandas"`` (default; dates as ``datetime64[ns]``), ``"polars"`` or ``"arrow"``.
        ``HUGEINT`` results (DuckDB's ``SUM`` of an integer column) come back as int64 when they
        fit.
    tickers_limit:
        Refuse (before reading) a query that needs more than this many tickers of one dataset,
        e.g. to guard a service against accidental lake scans. None: no limit. A one-date
        query of a daily dataset answered from its cross-section companion (one object) is
        not limited.

    Returns
    -------
    SqlResult
        The data, what was read (:attr:`SqlResult.objects_read`, per-table scans) and warnings.

    Raises
    ------
    MarketlakeError
        Syntax errors, unknown tables or columns (DuckDB's message plus the lake's tables; raised
        before any data is read), statements other than ``SELECT``, more tickers than
        ``tickers_limit``, a ticker whose data cannot be read (a corrupt object: the query
        refuses rather than answer without it).
    """
    if output not in ("pandas", "polars", "arrow"):
        raise MarketlakeError(f"output={output!r} is not one of 'pandas', 'polars', 'arrow'")
    duckdb = _duckdb()
    con = _connect(duckdb)
    try:
        scans, warnings = _plan(lake, con, duckdb, query)
        _bind(con, duckdb, lake, query, scans)  # unknown tables/columns fail before any read
        if tickers_limit is not None:
            for scan in scans:
                if scan.tickers_read > tickers_limit and not scan.cross_section:
                    raise MarketlakeError(
                        f"the query reads {scan.tickers_read} tickers of {scan.dataset}, more "
                        f"than tickers_limit={tickers_limit}; filter on ticker "
                        f"(WHERE ticker IN (...)) or raise the limit",
                        dataset=scan.dataset,
                    )
        for scan in scans:
            if not scan.schema_only:
                con.unregister(scan.dataset)
                con.register(scan.dataset, _fetch(lake, scan))
        try:
            table = _to_arrow(con.sql(query))
        except duckdb.Error as exc:
            raise _sql_error(exc) from None
    finally:
        con.close()
    return _result(convert(_plain_types(table), output), scans, warnings)


def describe_scan(s: TableScan) -> str:
    """One line: dataset, tickers, dates, columns and partitions of a :class:`TableScan`."""
    if s.schema_only:
        return f"{s.dataset}: schema only (nothing read)"
    if s.cross_section:
        who = "all tickers" if s.tickers is None else f"{len(s.tickers)} ticker(s)"
        cols = "all columns" if s.columns is None else f"columns {', '.join(s.columns) or '-'}"
        return f"{s.dataset}: {who} on {s.start} from its cross-section companion; {cols}; 1 object"
    if s.tickers is None:
        who = f"all {s.tickers_read} tickers (lake scan)"
    else:
        more = " ..." if len(s.tickers) > 10 else ""
        who = f"{len(s.tickers)} ticker(s) {', '.join(s.tickers[:10])}{more}"
    span = f"{s.start or '-inf'} .. {s.end or '+inf'}"
    cols = "all columns" if s.columns is None else f"columns {', '.join(s.columns) or '-'}"
    return f"{s.dataset}: {who}; dates {span}; {cols}; {s.objects} partition(s)"


def _result(data: Any, scans: list[TableScan], warnings: list[str]) -> SqlResult:
    return SqlResult(
        data=data,
        scans=scans,
        tickers_read={s.dataset: s.tickers_read for s in scans},
        objects_read=sum(s.objects for s in scans),
        warnings=warnings,
    )


# -- DuckDB -----------------------------------------------------------------------------------


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - a core dependency
        raise MarketlakeError("SQL needs the duckdb package: pip install duckdb") from None
    return duckdb


def _connect(duckdb: Any) -> Any:
    """A fresh DuckDB connection (a cursor of one in-memory database per process: creating it
    costs microseconds, a new database tens of milliseconds). Tables registered on it are its
    own and vanish when it closes. The database runs in UTC, never downloads extensions and
    does not resolve unknown names to Python variables (only the lake's tables exist)."""
    global _DATABASE
    with _DATABASE_LOCK:
        if _DATABASE is None:
            db = duckdb.connect(
                config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
            )
            db.execute("SET GLOBAL TimeZone = 'UTC'")
            db.execute("SET GLOBAL python_enable_replacements = false")
            _DATABASE = db
        return _DATABASE.cursor()


def _bind(con: Any, duckdb: Any, lake: Lake, query: str, scans: list[TableScan]) -> None:
    """Bind ``query`` against empty tables of the full schemas: unknown tables and columns,
    type errors in the plan, fail here, before any data is read."""
    for scan in scans:
        con.register(scan.dataset, _empty(lake.dataset(scan.dataset), None))
    try:
        con.sql(query)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None


def _to_arrow(rel: Any) -> pa.Table:
    if rel is None:
        return pa.table({})
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.arrow()  # pragma: no cover - older duckdb


def _one_line(message: str) -> str:
    """DuckDB's message without the ``LINE 1: ...`` / caret lines, on one line."""
    lines = [ln.strip() for ln in message.splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith("LINE ") and set(ln) != {"^"}]
    return " ".join(keep)


def _sql_error(exc: Exception) -> MarketlakeError:
    text = _one_line(str(exc))
    views = ", ".join(dataset_views())
    return MarketlakeError(f"SQL error: {text} (the lake's tables: {views})")


def _plain_types(table: pa.Table) -> pa.Table:
    """HUGEINT results (decimal128(38, 0), e.g. ``SUM(volume)``) as int64 when they fit."""
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type) and f.type.scale == 0 and f.type.precision == 38:
            col = table.column(i)
            try:
                cast = col.cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                cast = col.cast(pa.float64(), safe=False)
            table = table.set_column(i, pa.field(f.name, cast.type, f.nullable), cast)
    return table


# -- planning ---------------------------------------------------------------------------------


def _parse(con: Any, duckdb: Any, query: str) -> dict[str, Any]:
    if not isinstance(query, str) or not query.strip():
        raise MarketlakeError("SQL query is empty")
    got = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [query]).fetchall()[0]
    tree: dict[str, Any] = json.loads(got[0])
    if tree.get("error"):
        message = _one_line(str(tree.get("error_message", "cannot parse")))
        if tree.get("error_type") == "parser":
            pos = str(tree.get("position", ""))
            where = f" (at character {int(pos) + 1})" if pos.isdigit() else ""
            raise MarketlakeError(f"SQL syntax error: {message}{where}")
        kinds = _statement_kinds(duckdb, query).replace("MULTI", "PIVOT/UNPIVOT")
        if kinds == "SELECT":
            raise MarketlakeError(f"cannot analyse this SELECT for push-down: {message}")
        raise MarketlakeError(
            f"only read-only SELECT queries can run, not {kinds or 'this statement'} "
            f"(PIVOT/UNPIVOT statements included: aggregate with FILTER or pivot the result)"
        )
    found = len(tree.get("statements", []))
    if found != 1:
        raise MarketlakeError(
            "the SQL query has no statement"
            if found == 0
            else f"one SQL statement at a time, please (found {found})"
        )
    return tree


def _statement_kinds(duckdb: Any, query: str) -> str:
    try:
        kinds = [str(s.type).rsplit(".", 1)[-1] for s in duckdb.extract_statements(query)]
    except duckdb.Error:
        return ""
    return ", ".join(kinds)


def _plan(lake: Lake, con: Any, duckdb: Any, query: str) -> tuple[list[TableScan], list[str]]:
    tree = _parse(con, duckdb, query)
    datasets = {d.name: d for d in list_datasets()}
    walker = _Walker(datasets)
    walker.visit(tree["statements"], frozenset(), schema_only=False)
    warnings: list[str] = list(dict.fromkeys(walker.warnings))
    refs: dict[str, list[_Ref]] = {}
    for ref in walker.refs:
        refs.setdefault(ref.dataset, []).append(ref)
    if walker.show_tables:  # SHOW TABLES lists every dataset table (schema only)
        for name in datasets:
            refs.setdefault(name, [])
    scans: list[TableScan] = []
    for name in sorted(refs):
        ds = datasets[name]
        columns = walker.columns_of(ds)
        wanted = [
            walker.constraints.get(r.node_id, _Constraint())
            for r in refs[name]
            if not r.schema_only
        ]
        wanted = [c for c in wanted if not c.empty]
        if not wanted:
            scans.append(TableScan(name, (), None, None, columns, schema_only=True))
            continue
        tickers: set[str] | None = set()
        for c in wanted:
            tickers = None if c.tickers is None or tickers is None else tickers | c.tickers
        los = [c.lo for c in wanted if c.lo is not None]
        his = [c.hi for c in wanted if c.hi is not None]
        lo = min(los) if len(los) == len(wanted) else None
        hi = max(his) if len(his) == len(wanted) else None
        scans.append(_scan(lake, ds, tickers, lo, hi, columns, warnings))
    return scans, warnings


def _scan(
    lake: Lake,
    ds: Dataset,
    tickers: set[str] | None,
    lo: dt.date | None,
    hi: dt.date | None,
    columns: tuple[str, ...] | None,
    warnings: list[str],
) -> TableScan:
    """The scan of one dataset, with its partition count from the catalog."""
    if _use_cross_section(lake, ds, tickers, lo, hi):
        chosen = tuple(sorted(tickers)) if tickers is not None else None
        every = chosen or tuple(lake.catalog.tickers(ds.name))
        return TableScan(ds.name, chosen, lo, hi, columns, False, 1, len(every), every, True)
    objects, held = lake.catalog.scan_extent(ds.name, tickers, lo, hi)
    if tickers is not None:
        names = tuple(sorted(tickers))
        return TableScan(ds.name, names, lo, hi, columns, False, objects, len(names), names)
    names = tuple(held)
    if names:
        warnings.append(
            f"{ds.name}: no ticker filter that can be pushed down (WHERE ticker = '...' or "
            f"ticker IN (...) on that table): scanning all {len(names)} tickers in the catalog"
        )
    else:
        warnings.append(
            f"{ds.name}: the catalog lists no tickers, so the table is empty; if the lake was "
            f"written elsewhere, run 'marketlake catalog rebuild'"
        )
    return TableScan(ds.name, None, lo, hi, columns, False, objects, len(names), names)


def _use_cross_section(
    lake: Lake, ds: Dataset, tickers: set[str] | None, lo: dt.date | None, hi: dt.date | None
) -> bool:
    """Serve a scan from the date's cross-section companion: one date of a daily dataset, for
    every ticker or for at least :data:`XS_MIN_TICKERS` of them when the companion exists
    (building a missing one reads every ticker once, worth it only for a whole-lake scan)."""
    if ds.name not in XS_DATASETS or lo is None or lo != hi:
        return False
    if tickers is None:
        return True
    return len(tickers) >= XS_MIN_TICKERS and lake.catalog.cross_section(ds.name, lo) is not None


def _empty(ds: Dataset, columns: tuple[str, ...] | None) -> pa.Table:
    names = ds.schema.names if columns is None else _with_time(ds, columns)
    empty = ds.schema.empty_table().select(names)
    return empty.add_column(0, pa.field("ticker", pa.string(), False), pa.array([], pa.string()))


def _fetch(lake: Lake, scan: TableScan) -> pa.Table:
    """The Arrow table registered for ``scan.dataset``: ``ticker`` plus the columns read."""
    ds = lake.dataset(scan.dataset)
    if not scan.ticker_list:
        return _empty(ds, scan.columns)
    if scan.cross_section:
        table: pa.Table = lake.cross_section(
            scan.dataset,
            scan.start,
            columns=list(scan.columns) if scan.columns is not None else None,
            output="arrow",
            tickers=scan.tickers,
        )
        return table
    res = lake.read_batch(
        list(scan.ticker_list),
        scan.dataset,
        scan.start,
        scan.end,
        columns=list(scan.columns) if scan.columns is not None else None,
        output="arrow",
    )
    if res.errors:
        first, exc = next(iter(res.errors.items()))
        more = f" (and {len(res.errors) - 1} other ticker(s))" if len(res.errors) > 1 else ""
        raise MarketlakeError(
            f"cannot answer the query: reading {scan.dataset} for {first} failed{more}: {exc}",
            dataset=scan.dataset,
            ticker=first,
        )
    data: pa.Table = res.data
    return data


def _with_time(ds: Dataset, columns: tuple[str, ...]) -> list[str]:
    return [ds.time_column, *(c for c in columns if c != ds.time_column)]


# -- the parse-tree walk ----------------------------------------------------------------------


@dataclass
class _Constraint:
    """Rows of one table reference that the query can use: tickers (None = any) and an
    inclusive date range (None = open)."""

    tickers: set[str] | None = None
    lo: dt.date | None = None
    hi: dt.date | None = None

    @property
    def empty(self) -> bool:
        return (self.tickers is not None and not self.tickers) or (
            self.lo is not None and self.hi is not None and self.lo > self.hi
        )

    def narrow(self, tickers: set[str] | None, lo: dt.date | None, hi: dt.date | None) -> None:
        if tickers is not None:
            self.tickers = set(tickers) if self.tickers is None else self.tickers & tickers
        if lo is not None:
            self.lo = lo if self.lo is None else max(self.lo, lo)
        if hi is not None:
            self.hi = hi if self.hi is None else min(self.hi, hi)


@dataclass
class _Ref:
    """One occurrence of a dataset table in the query."""

    dataset: str
    node_id: int
    schema_only: bool


@dataclass(eq=False)
class _Item:
    """One relation in a SELECT's FROM clause: a dataset table or something opaque."""

    binding: str | None
    ds: Dataset | None = None
    node_id: int = 0
    pushable: bool = False

    @property
    def columns(self) -> set[str]:
        if self.ds is None:
            return set()
        return {"ticker", *self.ds.schema.names}

    def dim(self, column: str) -> str | None:
        """``"ticker"`` or ``"time"`` when ``column`` is one this table can be pruned on."""
        if self.ds is None:
            return None
        if column == "ticker":
            return "ticker"
        if column == self.ds.time_column:
            return "time"
        return None


class _Walker:
    """Collects the dataset references of a parsed query, their constraints and the columns
    the query names."""

    def __init__(self, datasets: dict[str, Dataset]) -> None:
        self.datasets = datasets
        self.refs: list[_Ref] = []
        self.constraints: dict[int, _Constraint] = {}
        self.names: set[str] = set()  # every part of every column reference, lower case
        self.whole: set[str] = set()  # one-part references (a column, or a whole table row)
        self.bindings: set[str] = set()
        self.all_columns = False
        self.show_tables = False
        self.warnings: list[str] = []

    def columns_of(self, ds: Dataset) -> tuple[str, ...] | None:
        """The dataset's columns the query names (None = all: a ``*`` or a whole-row use)."""
        if self.all_columns or self.whole & self.bindings:
            return None
        return tuple(c for c in ds.schema.names if c.lower() in self.names)

    def _dataset_of(self, node: dict[str, Any], shadow: frozenset[str]) -> Dataset | None:
        name = str(node.get("table_name", "")).lower()
        schema = str(node.get("schema_name") or "").lower()
        if node.get("catalog_name") or schema not in ("", "main", "temp"):
            return None
        if not schema and name in shadow:  # a CTE of that name; main.prices is the table
            return None
        return self.datasets.get(name)

    def visit(self, obj: Any, shadow: frozenset[str], *, schema_only: bool) -> None:
        """Walk any part of the tree. ``shadow``: CTE names in scope (they hide datasets)."""
        if isinstance(obj, list):
            for x in obj:
                self.visit(x, shadow, schema_only=schema_only)
            return
        if not isinstance(obj, dict):
            return
        kind, cls = obj.get("type"), obj.get("class")
        ctes = obj.get("cte_map")
        if isinstance(ctes, dict) and ctes.get("map"):
            names: list[str] = []
            for entry in ctes["map"]:  # a CTE sees the CTEs defined before it
                self.visit(entry.get("value"), shadow | set(names), schema_only=schema_only)
                names.append(str(entry.get("key", "")).lower())
            shadow = shadow | set(names)
        if kind == "RECURSIVE_CTE_NODE":
            shadow = shadow | {str(obj.get("cte_name", "")).lower()}
        if kind == "SELECT_NODE":
            self._select(obj, shadow)
        elif kind == "BASE_TABLE":
            ds = self._dataset_of(obj, shadow)
            if ds is not None:
                self.refs.append(_Ref(ds.name, id(obj), schema_only))
                self.bindings.add(str(obj.get("alias") or ds.name).lower())
                if obj.get("column_name_alias"):
                    self.all_columns = True
        elif kind == "SHOW_REF":
            show = obj.get("show_type")
            # older DuckDB names the table instead of nesting a query ("TABLES": SHOW TABLES)
            named = str(obj.get("table_name") or "").strip('"').lower()
            if show == "SHOW_SPECIAL" or (show == "DESCRIBE" and named == "tables"):
                self.show_tables = True
            elif show == "DESCRIBE":
                schema_only = True
            if named in self.datasets and named not in shadow and not obj.get("query"):
                self.refs.append(_Ref(named, id(obj), show == "DESCRIBE"))
                self.all_columns = True
        elif kind == "JOIN":
            self.names.update(str(c).lower() for c in obj.get("using_columns") or [])
            if obj.get("ref_type") == "NATURAL":
                self.all_columns = True
        if cls in ("STAR", "POSITIONAL_REFERENCE"):
            self.all_columns = True
        elif cls == "COLUMN_REF":
            parts = [str(p).lower() for p in obj.get("column_names") or []]
            self.names.update(parts)
            if len(parts) == 1:
                self.whole.add(parts[0])
        for key, value in obj.items():
            if key != "cte_map" and isinstance(value, dict | list):
                self.visit(value, shadow, schema_only=schema_only)

    # -- one SELECT -----------------------------------------------------------------------

    def _select(self, node: dict[str, Any], shadow: frozenset[str]) -> None:
        items: list[_Item] = []
        joins: list[dict[str, Any]] = []
        safe = [True]

        def collect(ref: Any) -> None:
            if not isinstance(ref, dict):
                return
            kind = ref.get("type")
            if kind == "BASE_TABLE":
                ds = self._dataset_of(ref, shadow)
                binding = str(ref.get("alias") or ref.get("table_name") or "").lower() or None
                pushable = (
                    ds is not None and not ref.get("sample") and not ref.get("column_name_alias")
                )
                items.append(_Item(binding, ds, id(ref), pushable))
            elif kind == "JOIN":
                joins.append(ref)
                if (
                    ref.get("ref_type") not in _SAFE_JOIN_REFS
                    or ref.get("join_type") not in _SAFE_JOIN_TYPES
                ):
                    safe[0] = False
                collect(ref.get("left"))
                collect(ref.get("right"))
            elif kind != "EMPTY":
                items.append(_Item(str(ref.get("alias") or "").lower() or None))

        collect(node.get("from_table"))
        if not safe[0] or not any(it.pushable for it in items):
            return
        scope = _Scope(items)
        for join in joins:
            scope.add_using(join)
        for join in joins:
            for conj in _conjuncts(join.get("condition")):
                scope.add_equality(conj)
        conjuncts = _conjuncts(node.get("where_clause"))
        if all(j.get("join_type") == "INNER" for j in joins):
            for join in joins:  # ON conditions of inner joins filter like WHERE
                conjuncts.extend(_conjuncts(join.get("condition")))
        for conj in conjuncts:  # WHERE a.ticker = b.ticker: equal in every row kept
            scope.add_equality(conj)
        for conj in conjuncts:
            self._apply(scope, conj)

    def _apply(self, scope: _Scope, conj: dict[str, Any]) -> None:
        pred = _predicate(conj)
        if pred is None:
            return
        colref, op, values = pred
        targets = scope.resolve(colref)
        if not targets:
            return
        column = str(colref["column_names"][-1]).lower()
        dims = {it.dim(column) for it in targets}
        if len(dims) != 1 or None in dims:
            return
        dim = dims.pop()
        assert dim is not None
        tickers = self._tickers(op, values) if dim == "ticker" else None
        if dim == "ticker" and tickers is None:
            return
        for item in scope.equivalent(targets, dim):
            if not item.pushable or item.ds is None:
                continue
            c = self.constraints.setdefault(item.node_id, _Constraint())
            if dim == "ticker":
                c.narrow(tickers, None, None)
            else:
                lo, hi = _time_bounds(item.ds, op, values)
                c.narrow(None, lo, hi)

    def _tickers(self, op: str, values: list[Any]) -> set[str] | None:
        if op not in ("=", "IN"):
            return None
        if not all(isinstance(v, str) for v in values):
            return None
        out: set[str] = set()
        for v in values:
            try:
                norm = normalize_ticker(v)
            except InvalidTickerError:
                norm = None
            if norm != v:
                hint = f"; did you mean '{norm}'?" if norm else ""
                self.warnings.append(
                    f"ticker {v!r} matches no rows: tickers are stored normalised "
                    f"(upper case, share classes with a dot){hint}"
                )
                continue
            out.add(v)
        return out


class _Scope:
    """Name resolution within one SELECT's FROM clause, plus join-key equivalences."""

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.parent = list(range(len(items) * 2))  # union-find over (item, dim) pairs

    def _slot(self, item: _Item, dim: str) -> int:
        return self.items.index(item) * 2 + (0 if dim == "ticker" else 1)

    def _find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _union(self, a: int, b: int) -> None:
        self.parent[self._find(a)] = self._find(b)

    def _in(self, ref: Any) -> list[_Item]:
        """Dataset items in a FROM subtree."""
        if not isinstance(ref, dict):
            return []
        if ref.get("type") == "JOIN":
            return self._in(ref.get("left")) + self._in(ref.get("right"))
        return [it for it in self.items if it.node_id == id(ref) and it.ds is not None]

    def add_using(self, join: dict[str, Any]) -> None:
        """``JOIN ... USING (ticker, date)``: the named columns are equal on both sides."""
        left, right = self._in(join.get("left")), self._in(join.get("right"))
        for raw in join.get("using_columns") or []:
            col = str(raw).lower()
            for a in left:
                for b in right:
                    da, db = a.dim(col), b.dim(col)
                    if da is not None and da == db:
                        self._union(self._slot(a, da), self._slot(b, db))

    def add_equality(self, conj: dict[str, Any]) -> None:
        """``ON a.ticker = b.ticker`` (a top-level conjunct): equal join keys."""
        if conj.get("type") != "COMPARE_EQUAL":
            return
        left, right = conj.get("left"), conj.get("right")
        if not (_is_column(left) and _is_column(right)):
            return
        assert isinstance(left, dict) and isinstance(right, dict)
        a, b = self.resolve(left), self.resolve(right)
        if len(a) != 1 or len(b) != 1:
            return
        da = a[0].dim(str(left["column_names"][-1]).lower())
        db = b[0].dim(str(right["column_names"][-1]).lower())
        if da is not None and da == db:
            self._union(self._slot(a[0], da), self._slot(b[0], db))

    def equivalent(self, items: list[_Item], dim: str) -> list[_Item]:
        """``items`` plus every table whose ``dim`` column is equated with theirs."""
        roots = {self._find(self._slot(it, dim)) for it in items}
        return [
            it
            for it in self.items
            if it.ds is not None and self._find(self._slot(it, dim)) in roots
        ]

    def resolve(self, colref: dict[str, Any]) -> list[_Item]:
        """The dataset table(s) a column reference denotes, or [] when unsure."""
        parts = [str(p).lower() for p in colref.get("column_names") or []]
        if len(parts) == 2:
            qual, col = parts
            hits = [it for it in self.items if it.binding == qual]
            if len(hits) == 1 and hits[0].ds is not None and col in hits[0].columns:
                return hits
            return []
        if len(parts) != 1:
            return []
        col = parts[0]
        if any(it.ds is None for it in self.items):
            return []  # a subquery or other relation might have this column
        hits = [it for it in self.items if col in it.columns]
        if len(hits) <= 1:
            return hits
        dims = {it.dim(col) for it in hits}
        if len(dims) != 1 or None in dims:
            return []
        dim = dims.pop()
        assert dim is not None
        roots = {self._find(self._slot(it, dim)) for it in hits}
        return hits if len(roots) == 1 else []  # ambiguous unless joined USING that column


def _conjuncts(expr: Any) -> list[dict[str, Any]]:
    """Top-level ``AND`` terms of an expression (flattened)."""
    if not isinstance(expr, dict):
        return []
    if expr.get("type") == "CONJUNCTION_AND":
        out: list[dict[str, Any]] = []
        for child in expr.get("children") or []:
            out.extend(_conjuncts(child))
        return out
    return [expr]


def _is_column(expr: Any) -> bool:
    return isinstance(expr, dict) and expr.get("class") == "COLUMN_REF"


def _predicate(conj: dict[str, Any]) -> tuple[dict[str, Any], str, list[Any]] | None:
    """``(column, op, literal values)`` for ``col <op> literal``, ``col IN (...)`` and
    ``col BETWEEN a AND b`` (op ``"BETWEEN"``, values ``[a, b]``); None otherwise."""
    kind = conj.get("type")
    if kind in _COMPARE:
        left, right, op = conj.get("left"), conj.get("right"), _COMPARE[str(kind)]
        if not _is_column(left) and _is_column(right):
            left, right, op = right, left, _FLIP[op]
        value = _literal(right)
        if _is_column(left) and value is not _NO:
            assert isinstance(left, dict)
            return left, op, [value]
        return None
    if kind == "COMPARE_IN":
        children = conj.get("children") or []
        if len(children) < 2 or not _is_column(children[0]):
            return None
        values = [_literal(c) for c in children[1:]]
        if any(v is _NO for v in values):
            return None
        return children[0], "IN", values
    if kind == "COMPARE_BETWEEN":
        col, lower, upper = (
            conj.get("input"),
            _literal(conj.get("lower")),
            _literal(conj.get("upper")),
        )
        if _is_column(col) and lower is not _NO and upper is not _NO:
            assert isinstance(col, dict)
            return col, "BETWEEN", [lower, upper]
    return None


class _NoLiteral:
    pass


_NO: Any = _NoLiteral()


@dataclass(frozen=True)
class _Other:
    """A non-string constant: makes a predicate non-pushable without failing it."""

    value: Any


@dataclass(frozen=True)
class _Cast:
    """A string literal cast to a date or time type (``DATE '2024-01-31'``)."""

    text: str


def _literal(expr: Any) -> Any:
    """A string constant's text (str), a string cast to a date/time type (:class:`_Cast`),
    another constant (:class:`_Other`), or ``_NO`` for anything that is not a literal."""
    if not isinstance(expr, dict):
        return _NO
    if expr.get("class") == "CAST" and not expr.get("try_cast"):
        type_name = (expr.get("type_expr") or {}).get("type_name") or (
            expr.get("cast_type") or {}
        ).get("id")
        inner = _literal(expr.get("child"))
        if not isinstance(inner, str):
            return _NO
        if str(type_name).upper() == "VARCHAR":
            return inner
        return _Cast(inner) if str(type_name).upper() in _TIME_CASTS else _NO
    if expr.get("class") != "CONSTANT":
        return _NO
    if "literal" in expr:  # duckdb >= 2.0
        lit = expr["literal"] or {}
        if lit.get("kind") == "STRING":
            return str(lit.get("text"))
        return _Other(lit.get("text"))
    value = expr.get("value") or {}  # duckdb 1.x
    if value.get("is_null"):
        return _Other(None)
    if (value.get("type") or {}).get("id") == "VARCHAR":
        return str(value.get("value"))
    return _Other(value.get("value"))


def _when(text: Any) -> tuple[dt.date, dt.datetime | None] | None:
    """Parse a date or timestamp literal: ``(date as written, UTC instant or None for a plain
    date)``. Naive timestamps are UTC (the connection's time zone)."""
    if isinstance(text, _Cast):
        text = text.text
    if not isinstance(text, str) or not _WHEN.fullmatch(text.strip()):
        return None
    s = text.strip()
    try:
        if len(s) == 10:
            return dt.date.fromisoformat(s), None
        stamp = dt.datetime.fromisoformat(s.replace(" ", "T", 1))
    except ValueError:
        return None
    utc = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
    return stamp.date(), utc


def _time_bounds(ds: Dataset, op: str, values: list[Any]) -> tuple[dt.date | None, dt.date | None]:
    """Inclusive date bounds implied by ``time_column <op> values`` (a superset: never loses a
    row DuckDB would keep)."""
    parsed = [_when(v) for v in values]
    if not parsed or any(p is None for p in parsed):
        return None, None
    stamps = pa.types.is_timestamp(ds.schema.field(ds.time_column).type)
    ok = [p for p in parsed if p is not None]

    def lower(p: tuple[dt.date, dt.datetime | None], strict: bool) -> dt.date:
        day, instant = p
        if instant is None:
            return day + dt.timedelta(days=1) if strict and not stamps else day
        if stamps:
            return instant.date()
        return day - dt.timedelta(days=1)  # a time of day against a date column: widen

    def upper(p: tuple[dt.date, dt.datetime | None], strict: bool) -> dt.date:
        day, instant = p
        if instant is None:
            return day - dt.timedelta(days=1) if strict else day
        if stamps:
            midnight = instant.time() == dt.time()
            return instant.date() - dt.timedelta(days=1) if strict and midnight else instant.date()
        return day + dt.timedelta(days=1)

    if op in (">", ">="):
        return lower(ok[0], op == ">"), None
    if op in ("<", "<="):
        return None, upper(ok[0], op == "<")
    if op == "BETWEEN":
        return lower(ok[0], False), upper(ok[1], False)
    if op in ("=", "IN"):
        return min(lower(p, False) for p in ok), max(upper(p, False) for p in ok)
    return None, None
