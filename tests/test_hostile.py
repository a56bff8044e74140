"""Hostile input through the public API and the CLI: each case gives exactly one clear, typed
error that names what and where, and the data already in the lake stays readable and byte-for-byte
unchanged (issue 3, item 6)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake.cli.main import app
from marketlake.errors import (
    CorruptObjectError,
    DataValidationError,
    FormatVersionError,
    InvalidTickerError,
    MarketlakeError,
    SchemaError,
    UnknownDatasetError,
    UnknownSourceError,
)
from marketlake.ingest.batch import run_batch
from marketlake.query.lake import Lake
from marketlake.sources.registry import get_source
from marketlake.storage.format import MARKER_KEY
from tests.conftest import price_table, weekdays

DAYS = weekdays(dt.date(2024, 1, 2), dt.date(2024, 2, 29))
ORIGINAL = price_table(DAYS)
JAN_KEY = "prices/v1/AAPL/2024/01/data.parquet"
FEB_KEY = "prices/v1/AAPL/2024/02/data.parquet"
META_KEY = "_meta/v1/prices/AAPL.json"
runner = CliRunner()


@pytest.fixture
def lake_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "lake"
    with marketlake.open(root, fsync=False) as lk:
        lk.write("AAPL", "prices", ORIGINAL)
    yield root


@pytest.fixture
def lk(lake_dir: Path) -> Iterator[Lake]:
    lake = marketlake.open(lake_dir, fsync=False)
    yield lake
    lake.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every object of the lake (not the catalog, lock or staging files)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("_catalog") and not p.name.startswith(".")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def assert_intact(root: Path, before: dict[str, bytes]) -> None:
    assert snapshot(root) == before
    with marketlake.open(root, fsync=False) as lake:
        assert lake.read("AAPL", "prices", "2024-01-01", "2024-02-29", output="arrow").equals(
            ORIGINAL
        )


def one_error(exc: BaseException, *fragments: str) -> None:
    text = str(exc)
    assert "\n" not in text.rstrip("\n"), text
    for f in fragments:
        assert f in text, (f, text)


def cli(*args: str) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exit_code not in (0, None), res.output
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


# --- tickers -------------------------------------------------------------------------------------

BAD_TICKERS = ["../x", "a/b", "..", "\x00", "AAPL\n", "A" * 200, "\U0001f4c8", "", "  ", "A B"]


@pytest.mark.parametrize("ticker", BAD_TICKERS, ids=repr)
def test_bad_ticker_api(lk: Lake, lake_dir: Path, ticker: str) -> None:
    before = snapshot(lake_dir)
    for call in (
        lambda: lk.write(ticker, "prices", ORIGINAL),
        lambda: lk.read(ticker, "prices"),
        lambda: run_batch(lk, get_source("synthetic"), [ticker], ["prices"], DAYS[0], DAYS[0]),
    ):
        with pytest.raises(InvalidTickerError) as info:
            call()
        one_error(info.value, "ticker")
    res = lk.read_batch(["AAPL", ticker], "prices", "2024-01-01", "2024-02-29", output="arrow")
    assert list(res.errors) == [ticker] and isinstance(res.errors[ticker], InvalidTickerError)
    assert res.data.num_rows == ORIGINAL.num_rows
    assert_intact(lake_dir, before)


@pytest.mark.parametrize("ticker", ["../x", "a/b", "AAPL\n", "A" * 200, "\U0001f4c8", "A B"])
def test_bad_ticker_cli(lake_dir: Path, ticker: str) -> None:
    before = snapshot(lake_dir)
    line = cli("read", ticker, "--lake", str(lake_dir))
    assert "ticker" in line
    line = cli("ingest", "--lake", str(lake_dir), "--tickers", ticker, "--date", "2024-03-01")
    assert "ticker" in line
    assert_intact(lake_dir, before)


# --- rows that do not fit ------------------------------------------------------------------------


def _replace(name: str, values: list[Any]) -> pa.Table:
    i = ORIGINAL.schema.get_field_index(name)
    return ORIGINAL.set_column(i, name, pa.array(values))


def _aware() -> pd.DataFrame:
    df = ORIGINAL.to_pandas(date_as_object=False)
    df["date"] = pd.to_datetime(df["date"]).dt.tz_localize("America/New_York")
    return df


N = len(DAYS)
BAD_ROWS: list[tuple[str, Callable[[], Any], type[MarketlakeError], tuple[str, ...]]] = [
    ("string prices", lambda: _replace("close", ["1.5"] * N), SchemaError, ("'close'", "string")),
    ("float volume", lambda: _replace("volume", [1.0] * N), SchemaError, ("'volume'", "integer")),
    ("fractional volume", lambda: _replace("volume", [1.5] * N), SchemaError, ("'volume'",)),
    ("int dates", lambda: _replace("date", list(range(N))), SchemaError, ("'date'", "int64")),
    ("missing key", lambda: ORIGINAL.drop(["date"]), SchemaError, ("missing key column 'date'",)),
    (
        "duplicate keys",
        lambda: pa.concat_tables([ORIGINAL, ORIGINAL.slice(3, 1)]),
        DataValidationError,
        ("duplicate key", "date=2024-01-05"),
    ),
    ("NaN price", lambda: _replace("close", [float("nan")] * N), DataValidationError, ("'close'",)),
    ("inf price", lambda: _replace("high", [float("inf")] * N), DataValidationError, ("'high'",)),
    (
        "negative volume",
        lambda: _replace("volume", [-5] * N),
        DataValidationError,
        ("'volume'", "negative", "date=2024-01-02"),
    ),
    (
        "year 1800",
        lambda: price_table([dt.date(1800, 1, 2)]),
        DataValidationError,
        ("1800-01-02", "out of range"),
    ),
    (
        "year 2200",
        lambda: price_table([dt.date(2200, 1, 2)]),
        DataValidationError,
        ("2200-01-02", "out of range"),
    ),
    ("tz-aware dates", _aware, SchemaError, ("'date'", "time-zone-aware")),
    (
        "time of day",
        lambda: _replace("date", [dt.datetime(2024, 1, 2, 15, 30)] * N),
        SchemaError,
        ("'date'", "time of day"),
    ),
]


@pytest.mark.parametrize(
    ("make", "exc", "fragments"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS]
)
def test_bad_rows_api(
    lk: Lake,
    lake_dir: Path,
    make: Callable[[], Any],
    exc: type[MarketlakeError],
    fragments: tuple[str, ...],
) -> None:
    before = snapshot(lake_dir)
    with pytest.raises(exc) as info:
        lk.write("AAPL", "prices", make())
    one_error(info.value, "prices/AAPL", *fragments)
    assert_intact(lake_dir, before)


def test_naive_midnight_timestamps_are_accepted(lk: Lake, lake_dir: Path) -> None:
    before = snapshot(lake_dir)
    df = ORIGINAL.to_pandas(date_as_object=False)
    df["date"] = pd.to_datetime(df["date"])  # naive datetime64[ns] at midnight
    result = lk.write("AAPL", "prices", df)
    assert result.objects_written == 0 and result.rows_added == 0  # the same rows: no rewrite
    assert_intact(lake_dir, before)


# --- unknown names and bad options ---------------------------------------------------------------


def test_unknown_dataset_and_source(lk: Lake, lake_dir: Path) -> None:
    before = snapshot(lake_dir)
    calls: list[Callable[[], Any]] = [
        lambda: lk.write("AAPL", "nope", ORIGINAL),
        lambda: lk.read("AAPL", "nope"),
        lambda: lk.read_batch(["AAPL"], "nope"),
        lambda: run_batch(lk, get_source("synthetic"), ["AAPL"], ["nope"], DAYS[0], DAYS[0]),
    ]
    for call in calls:
        with pytest.raises(UnknownDatasetError) as info:
            call()
        one_error(info.value, "unknown dataset 'nope'", "prices")
    with pytest.raises(UnknownSourceError) as src:
        get_source("nope")
    one_error(src.value, "unknown source 'nope'", "synthetic")
    assert "dataset 'nope'" in cli("read", "AAPL", "--lake", str(lake_dir), "--dataset", "nope")
    line = cli("ingest", "--lake", str(lake_dir), "-t", "AAPL", "-d", "2024-03-01", "--source", "x")
    assert "unknown source 'x'" in line
    line = cli(
        "ingest", "--lake", str(lake_dir), "-t", "AAPL", "-d", "2024-03-01", "--datasets", "x"
    )
    assert "unknown dataset 'x'" in line
    assert_intact(lake_dir, before)


@pytest.mark.parametrize("flag", ["--start", "--end"])
def test_bad_dates_cli_and_api(lk: Lake, lake_dir: Path, flag: str) -> None:
    before = snapshot(lake_dir)
    line = cli("read", "AAPL", "--lake", str(lake_dir), flag, "2024-13-01")
    assert flag in line and "2024-13-01" in line
    line = cli(
        "ingest", "--lake", str(lake_dir), "-t", "AAPL", "--start", "2024-02-30", "--end", "x"
    )
    assert "2024-02-30" in line
    with pytest.raises(MarketlakeError) as info:
        lk.read("AAPL", "prices", start="2024-13-01")
    one_error(info.value, "start='2024-13-01'", "YYYY-MM-DD")
    assert_intact(lake_dir, before)


# --- corrupt objects in the store ----------------------------------------------------------------

CORRUPT = {
    "truncated parquet": lambda good: good[: len(good) // 2],
    "not parquet": lambda good: b"this is not parquet\n",
    "empty object": lambda good: b"",
}


@pytest.mark.parametrize("corrupt", list(CORRUPT), ids=list(CORRUPT))
def test_corrupt_partition(lk: Lake, lake_dir: Path, corrupt: str) -> None:
    path = lake_dir / FEB_KEY
    path.write_bytes(CORRUPT[corrupt](path.read_bytes()))
    before = snapshot(lake_dir)
    # read: one CorruptObjectError naming the key and the fix
    with pytest.raises(CorruptObjectError) as info:
        lk.read("AAPL", "prices", "2024-01-01", "2024-02-29")
    one_error(info.value, FEB_KEY, "restore it from a backup or delete it")
    assert info.value.context["key"] == FEB_KEY
    # a read that does not touch February still works
    jan = lk.read("AAPL", "prices", "2024-01-01", "2024-01-31", output="arrow")
    assert jan.num_rows == sum(d.month == 1 for d in DAYS)
    # read_batch: reported per ticker, the others are read
    lk.write("MSFT", "prices", ORIGINAL)
    before = snapshot(lake_dir)
    res = lk.read_batch(["AAPL", "MSFT"], "prices", "2024-01-01", "2024-02-29", output="arrow")
    assert list(res.errors) == ["AAPL"] and isinstance(res.errors["AAPL"], CorruptObjectError)
    assert res.data.num_rows == ORIGINAL.num_rows
    # a write touching January (fine) and February (corrupt) refuses before changing anything:
    # the corrupt object's rows are never silently dropped
    new = price_table(weekdays(dt.date(2024, 1, 29), dt.date(2024, 2, 2)), base=500.0)
    with pytest.raises(CorruptObjectError) as winfo:
        lk.write("AAPL", "prices", new)
    one_error(winfo.value, FEB_KEY)
    assert snapshot(lake_dir) == before
    line = cli("read", "AAPL", "--lake", str(lake_dir), "--start", "2024-02-01")
    assert FEB_KEY in line
    # the batch reports the item as failed, naming the key
    summary = run_batch(lk, get_source("synthetic"), ["AAPL"], ["prices"], DAYS[-1], DAYS[-1])
    assert summary.items_failed == 1 and FEB_KEY in (summary.failures[0].error or "")
    assert snapshot(lake_dir) == before
    # repair as the message says: delete the object, re-ingest; January is untouched
    path.unlink()
    lk.write("AAPL", "prices", ORIGINAL)
    assert lk.read("AAPL", "prices", output="arrow").equals(ORIGINAL)
    assert (lake_dir / JAN_KEY).read_bytes() == before[JAN_KEY]


def test_corrupt_meta_is_rebuilt_from_the_data_objects(lk: Lake, lake_dir: Path) -> None:
    (lake_dir / META_KEY).write_bytes(b'{"partitions": [1, 2')
    data_before = {k: v for k, v in snapshot(lake_dir).items() if not k.startswith("_meta")}
    with pytest.raises(CorruptObjectError) as info:
        lk.read("AAPL", "prices")  # an open range needs _meta
    one_error(info.value, META_KEY, "repair-meta")
    # explicit ranges never need _meta
    assert lk.read("AAPL", "prices", "2024-01-01", "2024-02-29", output="arrow").equals(ORIGINAL)
    # the next write rebuilds _meta from the partitions (the data objects are the truth)
    march = price_table(weekdays(dt.date(2024, 3, 1), dt.date(2024, 3, 8)))
    lk.write("AAPL", "prices", march)
    meta = lk.meta("AAPL", "prices")
    assert meta is not None and sorted(meta.partitions) == ["2024-01", "2024-02", "2024-03"]
    assert meta.row_count == ORIGINAL.num_rows + march.num_rows
    after = snapshot(lake_dir)
    assert all(after[k] == v for k, v in data_before.items() if k.startswith("prices/"))
    assert lk.read("AAPL", "prices", output="arrow").num_rows == meta.row_count


def test_repair_meta_cli(lake_dir: Path) -> None:
    good = (lake_dir / META_KEY).read_bytes()
    (lake_dir / META_KEY).write_bytes(b"garbage")
    assert META_KEY in cli("read", "AAPL", "--lake", str(lake_dir))
    res = runner.invoke(app, ["repair-meta", "AAPL", "--lake", str(lake_dir)])
    assert res.exit_code == 0, res.output
    assert "2 partitions" in res.output
    repaired = json.loads((lake_dir / META_KEY).read_bytes())
    assert repaired["partitions"] == {
        k: {**v, "updated_at": repaired["partitions"][k]["updated_at"], "source": None}
        for k, v in json.loads(good)["partitions"].items()
    }


@pytest.mark.parametrize(
    ("body", "exc", "fragment"),
    [
        (
            {"format": "marketlake", "format_version": 99, "created_at": "x", "layouts": {}},
            FormatVersionError,
            "upgrade marketlake",
        ),
        ({"format": "something-else"}, CorruptObjectError, MARKER_KEY),
    ],
    ids=["future format", "foreign marker"],
)
def test_bad_marker(
    lake_dir: Path, body: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    (lake_dir / MARKER_KEY).write_text(json.dumps(body))
    before = snapshot(lake_dir)
    with pytest.raises(exc) as info:
        marketlake.open(lake_dir, fsync=False)
    one_error(info.value, fragment)
    assert fragment in cli("read", "AAPL", "--lake", str(lake_dir))
    assert snapshot(lake_dir) == before


def test_meta_from_a_newer_version_is_refused_not_rebuilt(lk: Lake, lake_dir: Path) -> None:
    body = json.loads((lake_dir / META_KEY).read_bytes())
    (lake_dir / META_KEY).write_text(json.dumps({**body, "meta_version": 7}))
    before = snapshot(lake_dir)
    with pytest.raises(FormatVersionError) as info:
        lk.write("AAPL", "prices", price_table([dt.date(2024, 3, 1)]))
    one_error(info.value, META_KEY, "upgrade marketlake")
    assert snapshot(lake_dir) == before
