"""``marketlake relayout``: a legacy daily-file tree moves into monthly files, verified before any
source is deleted, resumable after a crash at every step; lake -> lake moves switch the marker."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake.cli.main import app
from marketlake.errors import CorruptObjectError, LayoutError
from marketlake.query.lake import Lake
from marketlake.relayout import RelayoutError, relayout, state_key
from marketlake.sources.base import SourceRequest
from marketlake.sources.synthetic import SyntheticSource
from marketlake.storage.format import MARKER_KEY
from marketlake.storage.layout import Layout, period_bounds
from marketlake.storage.parquet import encode_table

LEGACY = "{dataset}/{YYYY}/{MM}/{DD}/{ticker}_{YYYYMMDD}.parquet"
YEARLY = "{dataset}/v{version}/{TICKER}/{YYYY}/data.parquet"
TICKERS = ("AAPL", "BRK.B", "MSFT")
START, END = dt.date(2024, 1, 25), dt.date(2024, 3, 8)


def synthetic_rows() -> dict[str, pa.Table]:
    src = SyntheticSource()
    out = {}
    for t in TICKERS:
        req = SourceRequest(t, ("prices",), START, END)
        out[t] = src.parse(req, src.fetch(req))["prices"]
    return out


ROWS = synthetic_rows()


def build_legacy(lake: Lake) -> int:
    """Write the seed's one-file-per-ticker-per-day tree; return how many objects."""
    layout = Layout.parse(LEGACY, ticker_first=False)
    n = 0
    for t, table in ROWS.items():
        for i in range(table.num_rows):
            day = table.column("date")[i].as_py()
            lake.store.put(
                layout.key("prices", 1, t, day.isoformat()), encode_table(table.slice(i, 1))
            )
            n += 1
    return n


def legacy_keys(lake: Lake) -> list[str]:
    return sorted(i.key for i in lake.store.list("prices") if "/v1/" not in i.key)


def snapshot(lake: Lake) -> dict[str, bytes]:
    return {i.key: lake.store.get(i.key).data for i in lake.store.list("")}


def assert_lake_holds_rows(lake: Lake) -> None:
    for t, table in ROWS.items():
        assert lake.read(t, "prices", output="arrow").equals(table), t
        meta = lake.meta(t, "prices")
        assert meta is not None and meta.row_count == table.num_rows


@pytest.fixture
def lk(tmp_path: Path) -> Lake:
    lake = marketlake.open(tmp_path / "lake", fsync=False)
    yield lake
    lake.close()


def test_legacy_tree_moves_into_monthly_files(lk: Lake) -> None:
    n = build_legacy(lk)
    assert n == sum(t.num_rows for t in ROWS.values())
    assert lk.read("AAPL", "prices", output="arrow").num_rows == 0
    result = relayout(lk, "prices", source=LEGACY)
    assert result.objects_deleted == n and result.tickers_done == len(TICKERS)
    assert legacy_keys(lk) == []
    assert lk.store.exists("prices/v1/BRK.B/2024/02/data.parquet")
    assert_lake_holds_rows(lk)
    assert json.loads(lk.store.get(state_key("prices")).data)["phase"] == "done"
    assert {p.ticker for p in lk.catalog.partitions(dataset="prices")} == set(TICKERS)
    # a second run finds nothing to move and changes nothing
    before = snapshot(lk)
    again = relayout(lk, "prices", source=LEGACY)
    assert again.plan.objects == 0
    after = snapshot(lk)
    assert {k: v for k, v in after.items() if not k.startswith("_relayout")} == {
        k: v for k, v in before.items() if not k.startswith("_relayout")
    }


def test_dry_run_changes_nothing(lk: Lake) -> None:
    build_legacy(lk)
    before = snapshot(lk)
    result = relayout(lk, "prices", source=LEGACY, dry_run=True)
    assert result.dry_run and result.plan.objects == len(legacy_keys(lk))
    lines = result.plan.describe(limit=3)
    assert (
        "prices/2024/01/25/AAPL_20240125.parquet -> prices/v1/AAPL/2024/01/data.parquet"
        in (lines[2])
    )
    assert snapshot(lk) == before


STEPS = ["planned", "copied:AAPL", "verified:AAPL", "deleted:AAPL", "copied:MSFT", "deleted:MSFT"]


@pytest.mark.parametrize("step", STEPS)
def test_interrupted_relayout_converges(lk: Lake, step: str) -> None:
    build_legacy(lk)

    def crash(s: str) -> None:
        if s == step:
            raise KeyboardInterrupt(s)  # not an Exception: nothing may catch it

    with pytest.raises(KeyboardInterrupt):
        relayout(lk, "prices", source=LEGACY, hook=crash)
    state = json.loads(lk.store.get(state_key("prices")).data)
    assert state["phase"] == "copying"
    # whatever was deleted had been verified: every row is readable from one place or the other
    layout = Layout.parse(LEGACY, ticker_first=False)
    present = set(legacy_keys(lk))
    for t, table in ROWS.items():
        in_lake = set(lk.read(t, "prices", output="arrow").column("date").to_pylist())
        for day in table.column("date").to_pylist():
            assert day in in_lake or layout.key("prices", 1, t, day.isoformat()) in present
    relayout(lk, "prices")  # resumes from the recorded state (no --from needed)
    assert legacy_keys(lk) == []
    assert_lake_holds_rows(lk)


def test_sources_are_kept_when_verification_fails(lk: Lake) -> None:
    n = build_legacy(lk)

    def tamper(s: str) -> None:
        if s == "copied:BRK.B":  # someone rewrites the target between copy and verify
            key = "prices/v1/BRK.B/2024/02/data.parquet"
            feb = lk.read("BRK.B", "prices", "2024-02-01", "2024-02-29", output="arrow")
            lk.store.put(key, encode_table(feb.slice(0, 2)))

    with pytest.raises(RelayoutError, match=r"prices/BRK\.B: the target holds"):
        relayout(lk, "prices", source=LEGACY, hook=tamper)
    remaining = legacy_keys(lk)
    assert len(remaining) == n - ROWS["AAPL"].num_rows  # AAPL was verified and moved, rest kept
    assert all("BRK.B" in k or "MSFT" in k for k in remaining)
    relayout(lk, "prices")  # a clean re-run copies again and finishes
    assert legacy_keys(lk) == []
    assert_lake_holds_rows(lk)


def test_corrupt_source_object_is_named_and_kept(lk: Lake) -> None:
    build_legacy(lk)
    bad = "prices/2024/02/01/MSFT_20240201.parquet"
    lk.store.put(bad, b"PAR1 truncated")
    with pytest.raises(CorruptObjectError, match=bad):
        relayout(lk, "prices", source=LEGACY)
    assert bad in legacy_keys(lk)
    assert any("MSFT" in k for k in legacy_keys(lk))


def test_lake_to_lake_switches_marker(lk: Lake, tmp_path: Path) -> None:
    for t, table in ROWS.items():
        lk.write(t, "prices", table)

    def crash(s: str) -> None:
        if s == "switched":
            raise KeyboardInterrupt(s)

    with pytest.raises(KeyboardInterrupt):
        relayout(lk, "prices", target=YEARLY, hook=crash)
    marker = json.loads(lk.store.get(MARKER_KEY).data)
    assert marker["layouts"]["prices"] == YEARLY
    lk.close()
    with marketlake.open(tmp_path / "lake", fsync=False) as lake2:
        relayout(lake2, "prices")  # resume: deletes the monthly sources, rebuilds _meta
        keys = sorted(i.key for i in lake2.store.list("prices"))
        assert keys == [f"prices/v1/{t}/2024/data.parquet" for t in sorted(TICKERS)]
        assert_lake_holds_rows(lake2)
        meta = lake2.meta("AAPL", "prices")
        assert meta is not None and list(meta.partitions) == ["2024"]


def test_relayout_refuses_nothing_to_do_and_conflicts(lk: Lake) -> None:
    with pytest.raises(RelayoutError, match="already uses"):
        relayout(lk, "prices")
    with pytest.raises(RelayoutError, match="legacy tree can only move into the lake's layout"):
        relayout(lk, "prices", source=LEGACY, target=YEARLY)


def test_cli_relayout_dry_run_and_run(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    with marketlake.open(root, fsync=False) as lake:
        build_legacy(lake)
    runner = CliRunner()
    res = runner.invoke(
        app, ["relayout", "prices", "--lake", str(root), "--from", LEGACY, "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    assert "dry run: nothing changed" in res.output
    assert (root / "prices/2024/01/25/AAPL_20240125.parquet").exists()
    res = runner.invoke(app, ["relayout", "prices", "--lake", str(root), "--from", LEGACY])
    assert res.exit_code == 0, res.output
    assert "deleted" in res.output
    assert not (root / "prices/2024").exists()  # emptied folders are removed too
    res = runner.invoke(app, ["relayout", "prices", "--lake", str(root), "--from", "{dataset}/{x}"])
    assert res.exit_code == 1
    assert "unknown placeholder" in res.output and "Traceback" not in res.output


def test_daily_layout_grain_and_key_parsing() -> None:
    with pytest.raises(LayoutError, match="ticker-first"):
        Layout.parse(LEGACY)  # lake layouts stay ticker-first
    legacy = Layout.parse(LEGACY, ticker_first=False)
    assert legacy.grain == "day"
    day = dt.date(2024, 2, 29)
    key = legacy.key("prices", 1, "BRK.B", legacy.period_of(day))
    assert key == "prices/2024/02/29/BRK.B_20240229.parquet"
    assert legacy.match(key) == ("prices", None, "BRK.B", "2024-02-29")
    assert legacy.match("prices/2024/02/28/BRK.B_20240229.parquet") is None  # parts disagree
    assert legacy.match("prices/2023/02/29/X_20230229.parquet") is None  # no such day
    assert legacy.match("prices/v1/AAPL/2024/02/data.parquet") is None
    assert legacy.periods_between(dt.date(2024, 2, 28), dt.date(2024, 3, 1)) == [
        "2024-02-28",
        "2024-02-29",
        "2024-03-01",
    ]
    assert period_bounds("2024-02-29") == (day, day)
    assert legacy.list_prefix("prices", 1, "AAPL") == "prices"
    daily_lake = Layout.parse("{dataset}/v{version}/{ticker}/{YYYYMMDD}.parquet")
    assert daily_lake.grain == "day" and daily_lake.match("prices/v1/aapl/20240102.parquet") == (
        "prices",
        1,
        "aapl",
        "2024-01-02",
    )
    monthly = Layout.parse("{dataset}/v{version}/{TICKER}/{YYYY}/{MM}/data.parquet")
    assert monthly.list_prefix("prices", 1, "AAPL") == "prices/v1/AAPL"
    assert monthly.match("prices/v1/AAPL/2024/13/data.parquet") is None
    with pytest.raises(LayoutError, match=r"\{DD\} without \{MM\}"):
        Layout.parse("{dataset}/{TICKER}/{YYYY}/{DD}.parquet")
