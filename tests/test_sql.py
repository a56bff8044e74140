"""SQL through DuckDB (query/sql.py, ``marketlake sql``): results equal pandas on read_batch and
plain DuckDB over the full tables; push-down reads only the partitions of the tickers and
period asked for (counted on the store); clear errors; memory and local lakes."""

from __future__ import annotations

import datetime as dt
import json
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake, MarketlakeError
from marketlake.cli.main import app
from marketlake.ingest.batch import run_batch
from marketlake.query.lake import convert
from marketlake.query.sql import _plain_types, describe_scan, plan_sql, run_sql, sql
from marketlake.schemas.datasets import get_dataset
from marketlake.sources.synthetic import SyntheticSource
from marketlake.storage.store import GetResult, ObjectStore, open_store

D = dt.date
TICKERS = [f"T{i:02d}" for i in range(30)]
START, END = D(2023, 10, 2), D(2024, 3, 28)
runner = CliRunner()


class CountingStore(ObjectStore):
    """A view of another store that counts GETs per key (shares its state, like FaultyStore)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.gets: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def get(self, key: str) -> GetResult:
        with self._count_lock:
            self.gets[key] += 1
        return ObjectStore.get(self, key)

    def data_keys(self) -> set[str]:
        """Keys of data objects read (``_meta`` excluded)."""
        return {k for k in self.gets if not k.startswith("_meta/")}


def _bars(days: list[D], base: float) -> pa.Table:
    ts = [
        dt.datetime.combine(d, dt.time(h, m), dt.UTC)
        for d in days
        for h, m in ((14, 30), (15, 0), (20, 59), (23, 30))
    ]
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "open": [base + i for i in range(n)],
            "high": [base + i + 1 for i in range(n)],
            "low": [base + i - 1 for i in range(n)],
            "close": [base + i + 0.5 for i in range(n)],
            "volume": pa.array([100 + i for i in range(n)], pa.int64()),
            "vwap": [base + i + 0.25 for i in range(n)],
            "trade_count": pa.array([10 + i for i in range(n)], pa.int64()),
        },
        schema=get_dataset("bars_minute").schema,
    )


def _build(url: str) -> tuple[Lake, CountingStore]:
    store = CountingStore(open_store(url, fsync=False))
    lake = marketlake.open(store)
    run_batch(
        lake,
        SyntheticSource(),
        TICKERS,
        ["prices", "signals_technical", "fundamentals"],
        START,
        END,
        workers=4,
    )
    days = [D(2024, 1, 31), D(2024, 2, 1), D(2024, 2, 2)]
    lake.write("T01", "bars_minute", _bars(days, 10.0))
    lake.write("T02", "bars_minute", _bars(days, 20.0))
    return lake, store


@pytest.fixture(scope="module", params=["memory", "local"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Lake, CountingStore]]:
    """A lake of 30 synthetic tickers x 6 months (prices, signals, fundamentals) plus minute
    bars for two tickers, on memory and on local disk."""
    url = "memory://" if request.param == "memory" else str(tmp_path_factory.mktemp("sql") / "l")
    lake, store = _build(url)
    yield lake, store
    lake.close()


@pytest.fixture
def lk(built: tuple[Lake, CountingStore]) -> Lake:
    return built[0]


_FULL: weakref.WeakKeyDictionary[Lake, dict[str, pa.Table]] = weakref.WeakKeyDictionary()


def _reference(lake: Lake, query: str) -> pd.DataFrame:
    """The query run by plain DuckDB over complete tables (no push-down at all)."""
    if lake not in _FULL:
        _FULL[lake] = {
            name: lake.read_batch(lake.tickers(name), name, output="arrow").data
            for name in ("prices", "signals_technical", "fundamentals", "bars_minute")
        }
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, table in _FULL[lake].items():
        con.register(name, table)
    try:
        return convert(_plain_types(con.sql(query).to_arrow_table()), "pandas")
    finally:
        con.close()


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    key = list(a.columns)
    a = a.sort_values(key, ignore_index=True)
    b = b.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


# -- results ----------------------------------------------------------------------------------


def test_aggregate_equals_pandas_and_reads_only_three_partitions(
    built: tuple[Lake, CountingStore],
) -> None:
    lake, store = built
    store.gets.clear()
    res = run_sql(
        lake,
        "SELECT ticker, avg(close) AS mean_close, sum(volume) AS volume, count(*) AS n, "
        "max(high) - min(low) AS span FROM prices "
        "WHERE ticker IN ('T03', 'T11', 'T27') AND date >= '2024-01-01' AND date <= '2024-01-31' "
        "GROUP BY ticker ORDER BY ticker",
    )
    # push-down: the three tickers' January objects, nothing of the other 27 tickers
    assert res.objects_read == 3 and res.tickers_read == {"prices": 3}
    assert store.data_keys() == {
        f"prices/v1/{t}/2024/01/data.parquet" for t in ("T03", "T11", "T27")
    }
    assert not any(t in k for k in store.gets for t in TICKERS if t not in ("T03", "T11", "T27"))
    assert res.warnings == []
    # equal to the same computation in pandas on read_batch
    df = lake.read_batch(["T03", "T11", "T27"], "prices", "2024-01-01", "2024-01-31").data
    want = (
        df.groupby("ticker")
        .agg(
            mean_close=("close", "mean"),
            volume=("volume", "sum"),
            n=("close", "size"),
            hi=("high", "max"),
            lo=("low", "min"),
        )
        .reset_index()
    )
    got = res.data
    assert list(got["ticker"]) == ["T03", "T11", "T27"]
    assert list(got["n"]) == list(want["n"]) and got["volume"].dtype == "int64"
    assert list(got["volume"]) == list(want["volume"])
    pd.testing.assert_series_equal(got["mean_close"], want["mean_close"], check_names=False)
    pd.testing.assert_series_equal(got["span"], want["hi"] - want["lo"], check_names=False)


def test_join_of_two_datasets_equals_pandas_merge(built: tuple[Lake, CountingStore]) -> None:
    lake, store = built
    store.gets.clear()
    res = run_sql(
        lake,
        "SELECT ticker, date, p.close, s.rsi_14, s.sma_20 FROM prices p "
        "JOIN signals_technical s USING (ticker, date) "
        "WHERE ticker IN ('T05', 'T06') AND date BETWEEN DATE '2024-02-01' AND DATE '2024-02-29' "
        "ORDER BY ticker, date",
        output="arrow",
    )
    assert {(s.dataset, s.tickers, s.start, s.end) for s in res.scans} == {
        ("prices", ("T05", "T06"), D(2024, 2, 1), D(2024, 2, 29)),
        ("signals_technical", ("T05", "T06"), D(2024, 2, 1), D(2024, 2, 29)),
    }
    assert res.objects_read == 4 and len(store.data_keys()) == 4
    # only the named columns are decoded
    assert {s.columns for s in res.scans} == {("date", "close"), ("date", "rsi_14", "sma_20")}
    p = lake.read_batch(["T05", "T06"], "prices", "2024-02-01", "2024-02-29").data
    s = lake.read_batch(["T05", "T06"], "signals_technical", "2024-02-01", "2024-02-29").data
    want = p.merge(s, on=["ticker", "date"])[["ticker", "date", "close", "rsi_14", "sma_20"]]
    got = res.data.to_pandas(date_as_object=False, coerce_temporal_nanoseconds=True)
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    assert got["date"].dtype == "datetime64[ns]"


def test_window_function_and_outputs(lk: Lake) -> None:
    q = (
        "SELECT ticker, date, close / lag(close) OVER (PARTITION BY ticker ORDER BY date) - 1 "
        "AS ret FROM prices WHERE ticker = 'T08' AND date >= '2024-03-01' ORDER BY date"
    )
    pdf = run_sql(lk, q).data
    want = lk.read("T08", "prices", "2024-03-01")
    assert list(pdf["date"]) == list(want["date"])
    pd.testing.assert_series_equal(
        pdf["ret"], want["close"].pct_change(), check_names=False, check_exact=False
    )
    assert isinstance(run_sql(lk, q, output="polars").data, pl.DataFrame)
    table = sql(lk, q, output="arrow")
    assert isinstance(table, pa.Table) and table.schema.field("date").type == pa.date32()


def test_minute_bars_timestamps_in_utc(built: tuple[Lake, CountingStore]) -> None:
    lake, store = built
    store.gets.clear()
    q = (
        "SELECT ticker, ts, close FROM bars_minute WHERE ticker = 'T01' "
        "AND ts >= TIMESTAMPTZ '2024-02-01 15:00:00+00' AND ts < '2024-02-02' ORDER BY ts"
    )
    res = run_sql(lake, q, output="arrow")
    (scan,) = res.scans
    assert (scan.tickers, scan.start, scan.end) == (("T01",), D(2024, 2, 1), D(2024, 2, 1))
    assert store.data_keys() == {"bars_minute/v1/T01/2024/02/data.parquet"}
    assert res.data.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert [t.hour for t in res.data.column("ts").to_pylist()] == [15, 20, 23]
    _same(res.data.to_pandas(), _reference(lake, q))
    # a zone offset is converted: 2024-02-01 21:00-05:00 is 02:00 UTC on 2 February
    late = run_sql(
        lake,
        "SELECT count(*) AS n FROM bars_minute WHERE ticker = 'T02' AND ts "
        "BETWEEN '2024-02-01 21:00:00-05:00' AND '2024-02-02 23:59:00+00:00'",
    )
    assert late.scans[0].start == D(2024, 2, 2) and int(late.data["n"][0]) == 4


# -- push-down is an optimisation that never changes results ---------------------------------

TRICKY = [
    # OR at the top: no ticker push-down (lake scan), still exact
    "SELECT ticker, count(*) n FROM prices WHERE ticker = 'T01' OR ticker = 'T02' GROUP BY 1",
    # LEFT JOIN with a filter on the null-supplying side
    "SELECT p.ticker, p.date, s.rsi_14 FROM prices p LEFT JOIN signals_technical s "
    "ON p.ticker = s.ticker AND p.date = s.date WHERE p.ticker = 'T04' AND s.date >= '2024-03-20'",
    # a filter in a LEFT JOIN's ON clause is not a filter of the rows
    "SELECT p.ticker, p.date, s.rsi_14 FROM prices p LEFT JOIN signals_technical s "
    "ON p.ticker = s.ticker AND p.date = s.date AND s.date >= '2024-03-20' "
    "WHERE p.ticker = 'T04' AND p.date > '2024-03-10'",
    "SELECT ticker, date, p.close FROM prices p RIGHT JOIN signals_technical s "
    "USING (ticker, date) WHERE s.ticker = 'T05' AND s.date IN ('2024-01-02', '2024-03-04')",
    # LATERAL subquery correlated with the outer table
    "SELECT p.ticker, p.date, m.hi FROM prices p, LATERAL (SELECT max(close) hi FROM prices q "
    "WHERE q.ticker = p.ticker AND q.date <= p.date) m WHERE p.ticker = 'T02' AND "
    "p.date >= '2024-03-25'",
    # filters in HAVING and QUALIFY are not pushed, still exact
    "SELECT ticker, count(*) n FROM prices GROUP BY ticker HAVING ticker = 'T03'",
    "SELECT ticker, date FROM prices WHERE date >= TIMESTAMP '2024-03-27 10:00:00' "
    "QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) = 1",
    # FULL JOIN USING with the merged key filtered
    "SELECT ticker, date, p.close, s.rsi_14 FROM prices p FULL JOIN signals_technical s "
    "USING (ticker, date) WHERE ticker IN ('T04', 'T09') AND date BETWEEN '2024-01-30' AND "
    "'2024-02-02'",
    # ASOF join: no push-down in that SELECT
    "SELECT p.ticker, p.date, f.period_end FROM prices p ASOF JOIN fundamentals f "
    "ON p.ticker = f.ticker AND p.date >= f.filed "
    "WHERE p.ticker = 'T07' AND p.date <= '2023-11-30'",
    # self-join on lagged dates
    "SELECT a.ticker, a.date, a.close - b.close d FROM prices a JOIN prices b "
    "ON a.ticker = b.ticker AND b.date = a.date - INTERVAL 1 DAY "
    "WHERE a.ticker = 'T12' AND a.date > '2024-02-27'",
    # correlated subquery on the same table (the inner reference is not filtered by literals)
    "SELECT ticker, date FROM prices p WHERE ticker = 'T13' AND close = "
    "(SELECT max(close) FROM prices q WHERE q.ticker = p.ticker)",
    "WITH prices AS (SELECT * FROM main.prices WHERE ticker = 'T14' AND date < '2023-10-10') "
    "SELECT ticker, date FROM prices",
    # EXISTS, CTE shadowing a dataset name, UNION
    "WITH prices AS (SELECT * FROM prices WHERE ticker = 'T14' AND date < '2023-10-10') "
    "SELECT ticker, date FROM prices WHERE EXISTS (SELECT 1 FROM signals_technical s "
    "WHERE s.ticker = prices.ticker AND s.date = prices.date)",
    "SELECT ticker, max(date) FROM prices WHERE ticker = 'T15' GROUP BY 1 UNION ALL "
    "SELECT ticker, min(date) FROM prices WHERE ticker = 'T16' AND date >= '2024-01-02' GROUP BY 1",
    # literals that match nothing, NULLs, NOT BETWEEN, functions of the column
    "SELECT count(*) n FROM prices WHERE ticker = 't01'",
    "SELECT count(*) n FROM prices WHERE ticker IN ('T01', NULL) AND date = '2024-01-02'",
    "SELECT count(*) n FROM prices WHERE ticker = 'T17' AND date NOT BETWEEN '2023-10-05' AND "
    "'2024-03-20'",
    "SELECT count(*) n FROM prices WHERE lower(ticker) = 't18' AND year(date) = 2024",
    "SELECT count(*) n FROM prices WHERE ticker = 'T19' AND date > '2024-01-31 10:00:00'",
    "SELECT count(*) n FROM prices WHERE ticker = 'T19' AND date > '2024-02-01' AND date > "
    "'2024-01-01' AND date < '2024-02-06' AND ticker IN ('T19', 'T20')",
    # whole-row use of a table and star: every column is read
    "SELECT to_json(p) j FROM prices p WHERE ticker = 'T21' AND date = '2024-03-01'",
    "SELECT * EXCLUDE (adj_close) FROM prices WHERE ticker = 'T22' AND date >= '2024-03-25'",
    # implicit cross join with the filter in WHERE, subquery in FROM
    "SELECT a.ticker, s.ticker AS t2, a.date FROM prices a, (SELECT * FROM signals_technical "
    "WHERE ticker = 'T24' AND date = '2024-01-03') s WHERE a.ticker = 'T23' AND a.date = s.date",
    # join keys equated in WHERE (implicit join, and after an outer join)
    "SELECT p.ticker, p.date, s.rsi_14 FROM prices p, signals_technical s WHERE p.ticker = 'T10' "
    "AND s.ticker = p.ticker AND s.date = p.date AND p.date >= '2024-03-26'",
    "SELECT p.ticker, p.date, s.rsi_14 FROM prices p LEFT JOIN signals_technical s "
    "ON p.date = s.date WHERE s.ticker = p.ticker AND p.ticker = 'T10' AND p.date < '2023-10-06'",
    # fundamentals (one file per ticker) with a range on its time column
    "SELECT ticker, period_end, revenue FROM fundamentals WHERE ticker IN ('T25', 'T26') AND "
    "period_end >= '2023-01-01'",
    # one date across the universe: served from the cross-section companions
    "SELECT ticker, close FROM prices WHERE date = '2024-02-15' ORDER BY close DESC LIMIT 5",
    "SELECT ticker, date, p.close, s.rsi_14 FROM prices p JOIN signals_technical s "
    "USING (ticker, date) WHERE date = '2024-03-01'",
    "SELECT count(*) n FROM prices WHERE date = '2024-02-17'",  # a Saturday: no rows
    "SELECT * FROM prices WHERE date = '2023-12-29' AND ticker NOT IN ('T01', 'T02')",
]


@pytest.mark.parametrize("query", TRICKY, ids=range(len(TRICKY)))
def test_results_equal_duckdb_over_the_full_tables(lk: Lake, query: str) -> None:
    try:
        want = _reference(lk, query)
    except duckdb.Error:  # e.g. older DuckDB refuses a CTE named like its table
        with pytest.raises(MarketlakeError, match="SQL error"):
            run_sql(lk, query)
        return
    _same(run_sql(lk, query).data, want)


def test_pushdown_plans(lk: Lake) -> None:
    def scans(q: str) -> dict[str, tuple[Any, ...]]:
        return {s.dataset: (s.tickers, s.start, s.end) for s in plan_sql(lk, q).scans}

    assert scans("SELECT * FROM prices WHERE 'T01' = ticker") == {"prices": (("T01",), None, None)}
    assert scans(
        "SELECT * FROM prices WHERE ticker IN ('T01','T02') AND ticker = 'T01' "
        "AND date > '2024-01-31' AND date < '2024-03-01'"
    ) == {"prices": (("T01",), D(2024, 2, 1), D(2024, 2, 29))}
    assert scans("SELECT * FROM prices WHERE ticker = 'T01' OR ticker = 'T02'") == {
        "prices": (None, None, None)
    }
    # a LEFT JOIN's key equality carries the filter to the other table
    assert scans(
        "SELECT * FROM prices p LEFT JOIN signals_technical s ON p.ticker = s.ticker AND "
        "p.date = s.date WHERE p.ticker = 'T03' AND p.date = '2024-01-05'"
    ) == {
        "prices": (("T03",), D(2024, 1, 5), D(2024, 1, 5)),
        "signals_technical": (("T03",), D(2024, 1, 5), D(2024, 1, 5)),
    }
    assert scans(
        "SELECT * FROM prices p, signals_technical s WHERE p.ticker = 'T02' "
        "AND s.ticker = p.ticker AND s.date = p.date AND p.date >= '2024-02-01'"
    ) == {
        "prices": (("T02",), D(2024, 2, 1), None),
        "signals_technical": (("T02",), D(2024, 2, 1), None),
    }
    # ASOF joins are left alone; two references of one table read their union
    assert scans(
        "SELECT * FROM prices p ASOF JOIN signals_technical s ON p.ticker = s.ticker "
        "AND p.date >= s.date WHERE p.ticker = 'T03'"
    ) == {"prices": (None, None, None), "signals_technical": (None, None, None)}
    assert scans(
        "SELECT * FROM prices WHERE ticker = 'T01' AND date = '2024-01-02' UNION ALL "
        "SELECT * FROM prices WHERE ticker = 'T02' AND date = '2024-03-04'"
    ) == {"prices": (("T01", "T02"), D(2024, 1, 2), D(2024, 3, 4))}
    # a CTE named like a dataset hides it in the main query, not in its own body
    assert scans(
        "WITH prices AS (SELECT * FROM main.prices WHERE ticker = 'T09') SELECT * FROM prices"
    ) == {"prices": (("T09",), None, None)}
    plan = plan_sql(lk, "SELECT count(*) FROM prices WHERE ticker = 'aapl'")
    assert plan.scans[0].schema_only and "did you mean 'AAPL'" in plan.warnings[0]
    describe = plan_sql(lk, "DESCRIBE signals_valuation")
    assert describe.scans[0].schema_only and describe.objects_read == 0


def test_one_date_queries_read_the_cross_section_companion(
    built: tuple[Lake, CountingStore],
) -> None:
    lake, store = built
    q = "SELECT ticker, close FROM prices WHERE date = '2024-01-17' ORDER BY ticker"
    plan = plan_sql(lake, q)
    assert plan.scans[0].cross_section and plan.objects_read == 1 and not plan.warnings
    assert "from its cross-section companion" in describe_scan(plan.scans[0])
    run_sql(lake, q)  # builds the companion if the batch did not
    store.gets.clear()
    res = run_sql(lake, q, tickers_limit=5)  # one object: not a lake scan, not limited
    assert store.data_keys() == {"_xs/prices/v1/2024/01/2024-01-17.parquet"}
    assert res.data["ticker"].tolist() == TICKERS
    _same(res.data, _reference(lake, q))
    # many tickers on that date use the existing companion; a few read their own objects
    many = ", ".join(f"'{t}'" for t in TICKERS[:25])
    wide = plan_sql(lake, f"SELECT * FROM prices WHERE date = '2024-01-17' AND ticker IN ({many})")
    assert wide.scans[0].cross_section and wide.scans[0].tickers == tuple(TICKERS[:25])
    few = plan_sql(lake, "SELECT * FROM prices WHERE date = '2024-01-17' AND ticker = 'T03'")
    assert not few.scans[0].cross_section and few.objects_read == 1
    # a range of dates, and datasets without companions, read per ticker
    span = plan_sql(lake, "SELECT * FROM prices WHERE date BETWEEN '2024-01-16' AND '2024-01-17'")
    assert not span.scans[0].cross_section
    fund = plan_sql(lake, "SELECT * FROM fundamentals WHERE period_end = '2023-12-31'")
    assert not fund.scans[0].cross_section


def test_describe_and_show_tables_read_nothing(built: tuple[Lake, CountingStore]) -> None:
    lake, store = built
    store.gets.clear()
    cols = run_sql(lake, "DESCRIBE prices").data
    assert list(cols["column_name"]) == ["ticker", *get_dataset("prices").schema.names]
    tables = run_sql(lake, "SHOW TABLES").data
    assert {"prices", "signals_technical", "crypto_bars", "fundamentals"} <= set(tables["name"])
    assert not store.data_keys()


def test_lake_scan_warns_and_tickers_limit_refuses(lk: Lake) -> None:
    res = run_sql(lk, "SELECT count(DISTINCT ticker) AS n FROM prices")
    assert int(res.data["n"][0]) == 30 and res.tickers_read == {"prices": 30}
    assert res.objects_read == 30 * 6 and "scanning all 30 tickers" in res.warnings[0]
    assert res.scans[0].columns == ()  # count(DISTINCT ticker) decodes only the time column
    with pytest.raises(MarketlakeError, match="reads 30 tickers of prices, more than"):
        run_sql(lk, "SELECT count(*) FROM prices", tickers_limit=10)
    ok = run_sql(lk, "SELECT count(*) AS n FROM prices WHERE ticker = 'T01'", tickers_limit=1)
    assert int(ok.data["n"][0]) > 0


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC * FROM prices", r"SQL syntax error: .*SELEC.* \(at character 1\)"),
        ("SELECT * FROM nope", r"nope does not exist.*the lake's tables: bars_minute, .*prices"),
        ("SELECT nope FROM prices WHERE ticker = 'T01'", r'column "nope" not found'),
        ("INSERT INTO prices VALUES (1)", r"only read-only SELECT queries can run, not INSERT"),
        ("SELECT 1; SELECT 2", r"one SQL statement at a time"),
        ("   ", r"SQL query is empty"),
    ],
)
def test_errors_are_clear_and_read_nothing(
    built: tuple[Lake, CountingStore], query: str, message: str
) -> None:
    lake, store = built
    store.gets.clear()
    with pytest.raises(MarketlakeError, match=message) as info:
        run_sql(lake, query)
    assert "\n" not in str(info.value)
    assert not store.data_keys()  # refused before any data was read


def test_sql_on_a_remote_like_memory_lake_and_local_lake_agree(tmp_path: Path) -> None:
    q = (
        "SELECT ticker, date_trunc('month', date) AS m, avg(close) AS c FROM prices "
        "WHERE ticker IN ('AA', 'BB') GROUP BY ALL ORDER BY ALL"
    )
    results = []
    for url in ("memory://", str(tmp_path / "lake")):
        with marketlake.open(url, fsync=False) as lake:
            run_batch(lake, SyntheticSource(), ["AA", "BB", "CC"], ["prices"], START, END)
            results.append(run_sql(lake, q).data)
    pd.testing.assert_frame_equal(results[0], results[1])
    assert len(results[0]) == 12


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlcli") / "lake"
    with marketlake.open(path, fsync=False) as lake:
        run_batch(lake, SyntheticSource(), ["AAA", "BBB", "CCC"], ["prices"], START, END)
    return str(path)


Q = "SELECT ticker, date, close FROM prices WHERE ticker IN ('AAA', 'BBB') AND date <= '2023-10-31'"


def test_cli_sql_formats(cli_lake: str, tmp_path: Path) -> None:
    with marketlake.open(cli_lake) as lake:
        want = run_sql(lake, Q, output="arrow").data
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "--limit", "5"])
    assert res.exit_code == 0, res.output
    assert f"{want.num_rows} row(s) (first 5" in res.stdout and "AAA" in res.stdout
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "--format", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0] == '"ticker","date","close"' and len(lines) == want.num_rows + 1
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "-f", "json"])
    rows = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert rows[0] == {"ticker": "AAA", "date": "2023-10-02", "close": want["close"][0].as_py()}
    out = tmp_path / "q.parquet"
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "-f", "parquet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).equals(want)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "--explain"])
    assert res.exit_code == 0 and "prices: 2 ticker(s) AAA, BBB" in res.stdout
    assert "2 partition(s) in all" in res.stdout


def test_cli_sql_errors(cli_lake: str) -> None:
    res = runner.invoke(app, ["sql", "SELECT * FROM nope", "--lake", cli_lake])
    assert res.exit_code == 1 and res.stderr.startswith("error: SQL error: Catalog Error")
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["sql", Q, "--lake", cli_lake, "-f", "parquet"])
    assert res.exit_code == 2 and "needs --output" in res.output
    res = runner.invoke(app, ["sql", "SELECT count(*) FROM prices", "--lake", cli_lake])
    assert res.exit_code == 0 and "warning: prices: no ticker filter" in res.stderr
    res = runner.invoke(
        app, ["sql", "SELECT count(*) FROM prices", "--lake", cli_lake, "--max-tickers", "2"]
    )
    assert res.exit_code == 1 and "more than tickers_limit=2" in res.stderr


def test_concurrent_queries_do_not_see_each_others_tables(lk: Lake) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> float:
        t = TICKERS[i]
        res = run_sql(lk, f"SELECT sum(close) AS s FROM prices WHERE ticker = '{t}'")
        assert res.scans[0].tickers == (t,)
        return float(res.data["s"][0])

    with ThreadPoolExecutor(4) as pool:
        sums = list(pool.map(one, range(24)))
    want = lk.read_batch(TICKERS[:24], "prices").data.groupby("ticker")["close"].sum()
    assert sums == pytest.approx([float(want[t]) for t in TICKERS[:24]], rel=1e-12)
    assert len(set(sums)) == 24
