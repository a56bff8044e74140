"""``marketlake import``: vendor files through the sources' own parsers and the normal writer.

Fixtures: tests/fixtures/yahoo_chart and tests/fixtures/sec_edgar (see their PROVENANCE.md); the
bulk zips are built here from those JSONs. Offline: the API path the imports are compared with
runs on an ``httpx.MockTransport`` serving the same payloads.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import marketlake
from marketlake import Lake
from marketlake.cli.main import app
from marketlake.errors import MarketlakeError, SourceError, UnknownSourceError
from marketlake.ingest.batch import resume_batch, run_batch
from marketlake.ingest.imports import FILE_ITEM, import_files
from marketlake.sources.base import SourceRequest
from marketlake.sources.http import HttpClient
from marketlake.sources.registry import get_source
from marketlake.sources.sec import SecEdgarSource
from marketlake.sources.synthetic import SyntheticSource
from marketlake.sources.yahoo import YahooChartSource

FIXTURES = Path(__file__).parent / "fixtures"
YF = FIXTURES / "yahoo_chart" / "yfinance-rs"
NODE = FIXTURES / "yahoo_chart" / "node-yahoo-finance2"
SEC = FIXTURES / "sec_edgar"
NOW = dt.datetime(2025, 10, 29, 20, 30, tzinfo=dt.UTC)  # just after the AAPL/MSFT recordings
WIDE = (dt.date(1900, 1, 1), dt.date(2100, 12, 31))
DAILY = ("prices", "corporate_actions")
ONE_MINUTE = "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json"
runner = CliRunner()


@pytest.fixture
def lake() -> Iterator[Lake]:
    lk = marketlake.open("memory://")
    yield lk
    lk.close()


@pytest.fixture
def api_lake() -> Iterator[Lake]:
    lk = marketlake.open("memory://")
    yield lk
    lk.close()


def read(lk: Lake, ticker: str, dataset: str) -> Any:
    return lk.read(ticker, dataset, output="arrow")


def sec_json(name: str) -> Any:
    return json.loads(gzip.decompress((SEC / f"{name}.gz").read_bytes()))


def envelope_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((NODE / name).read_text())["response"]["bodyJson"]
    return body


def mock_client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> HttpClient:
    return HttpClient(
        transport=httpx.MockTransport(handler), retries=0, sleep=lambda _s: None, **kw
    )


# --- yahoo ------------------------------------------------------------------------------------


def test_yahoo_files_equal_the_api_path_and_rerun_writes_nothing(
    lake: Lake, api_lake: Lake
) -> None:
    served = {"AAPL": YF / "history_chart_AAPL.json", "MSFT": YF / "history_chart_MSFT.json"}

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=served[request.url.path.rsplit("/", 1)[-1]].read_bytes())

    api = YahooChartSource(client=mock_client(handle), now=lambda: NOW)
    done = run_batch(api_lake, api, ["AAPL", "MSFT"], list(DAILY), *WIDE, workers=2)
    assert done.status == "completed" and done.items_completed == 4

    first = import_files(lake, get_source("yahoo"), list(served.values()))
    assert (first.status, first.items_total, first.items_completed, first.files) == (
        "completed",
        4,
        4,
        2,
    )
    for ticker in served:
        for dataset in DAILY:
            got = read(lake, ticker, dataset)
            assert got.num_rows > 0
            assert got.equals(read(api_lake, ticker, dataset)), (ticker, dataset)
    assert first.rows_added == done.rows_added and first.objects_written > 0
    run = lake.catalog.get_run(first.run_id)
    assert (run.kind, run.source, run.status, run.items_total) == (
        "import",
        "yahoo",
        "completed",
        4,
    )
    items = lake.catalog.run_items(first.run_id)
    assert {(i.ticker, i.dataset) for i in items} == {(t, d) for t in served for d in DAILY}

    again = import_files(lake, get_source("yahoo"), list(served.values()))
    assert again.status == "completed" and again.items_completed == 4
    assert again.objects_written == 0 and again.rows_added == again.rows_updated == 0
    with pytest.raises(MarketlakeError, match="cannot be resumed"):
        resume_batch(lake, again.run_id)


def test_yahoo_recordings_gzip_zip_and_a_bad_file_failing_alone(lake: Lake, tmp_path: Path) -> None:
    # a node-yahoo-finance2 recording, gzip-compressed, with the "no later splits" assertion the
    # user adds to an old recording (AAPL has not split since 2020-08-31)
    doc = json.loads((NODE / "chart-AAPL-2020-08-31-to-2020-11-07.json").read_text())
    doc["response"]["bodyJson"]["later_splits"] = []
    aapl = tmp_path / "aapl-2020.json.gz"
    aapl.write_bytes(gzip.compress(json.dumps(doc).encode()))
    # a class share: Yahoo's BRK-B is the lake's BRK.B
    brk = copy.deepcopy(json.loads((YF / "history_chart_MSFT.json").read_text()))
    brk["chart"]["result"][0]["meta"]["symbol"] = "BRK-B"
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("charts/brk-b.json", json.dumps(brk))
        zf.writestr("charts/aapl-1m.json", (NODE / ONE_MINUTE).read_text())  # empty 1m answer
    bad = tmp_path / "bad.json"
    bad.write_text('{"chart": {"result": [')
    old = NODE / "historical-via-chart-NVDA-split-2021-02-01-to-2022-01-31.csv.json"

    s = import_files(lake, YahooChartSource(), [aapl, bundle, bad, old])
    assert s.files == 5 and s.status == "failed"
    expected = YahooChartSource().parse(
        SourceRequest("AAPL", DAILY, *WIDE),
        {**envelope_body("chart-AAPL-2020-08-31-to-2020-11-07.json"), "later_splits": []},
    )
    assert read(lake, "AAPL", "prices").equals(expected["prices"])
    assert read(lake, "AAPL", "corporate_actions").equals(expected["corporate_actions"])
    assert read(lake, "BRK.B", "prices").num_rows > 100
    failures = {(f.ticker, f.dataset): f.error or "" for f in s.failures}
    assert set(failures) == {
        (str(bad), FILE_ITEM),
        ("NVDA", "prices"),
        ("NVDA", "corporate_actions"),
    }
    assert failures[(str(bad), FILE_ITEM)].startswith(f"{bad}: not valid JSON")
    assert (
        str(old) in failures[("NVDA", "prices")] and "later_splits" in failures[("NVDA", "prices")]
    )
    items = {(i.ticker, i.dataset): i for i in lake.catalog.run_items(s.run_id)}
    assert items[("AAPL", "bars_minute")].status == "completed"  # an empty answer is no error
    assert items[("AAPL", "bars_minute")].rows_fetched == 0
    assert read(lake, "NVDA", "prices").num_rows == 0  # nothing half-written

    # only some datasets
    lk2 = marketlake.open("memory://")
    try:
        only = import_files(lk2, YahooChartSource(), [aapl], datasets=["corporate_actions"])
        assert only.items_total == 1 and read(lk2, "AAPL", "prices").num_rows == 0
        actions = read(lk2, "AAPL", "corporate_actions")["action"].to_pylist()
        assert actions == ["split", "dividend"]  # the 4:1 of 2020-08-31, one dividend
    finally:
        lk2.close()


# --- sec --------------------------------------------------------------------------------------


def sec_handler(request: httpx.Request) -> httpx.Response:
    files = {
        "/files/company_tickers.json": "company_tickers.json",
        "/api/xbrl/companyfacts/CIK0000717423.json": "companyfacts/CIK0000717423.json",
        "/submissions/CIK0000717423.json": "submissions/CIK0000717423.json",
    }
    name = files.get(request.url.path)
    if name is None:
        return httpx.Response(404, text="Not Found")
    return httpx.Response(200, content=gzip.decompress((SEC / f"{name}.gz").read_bytes()))


def test_sec_files_equal_the_api_path(lake: Lake, api_lake: Lake) -> None:
    api = SecEdgarSource(
        client=mock_client(
            sec_handler,
            user_agent="Test Co test@example.com",
            rate_limits={"data.sec.gov": 0, "www.sec.gov": 0},
        )
    )
    assert run_batch(api_lake, api, ["MUR"], ["fundamentals"], *WIDE).status == "completed"
    # the API path also reads the older submissions page (not recorded) when the range reaches
    # before 2013-08-13; the recorded main page starts there
    after = (dt.date(2013, 8, 13), WIDE[1])
    assert run_batch(api_lake, api, ["MUR"], ["filings"], *after).status == "completed"

    # companyfacts first: its ticker comes from the submissions JSON read after it
    files = [SEC / "companyfacts/CIK0000717423.json.gz", SEC / "submissions/CIK0000717423.json.gz"]
    s = import_files(lake, SecEdgarSource(), files)
    assert (s.status, s.items_completed, s.files) == ("completed", 2, 2)
    for dataset in ("fundamentals", "filings"):
        got = read(lake, "MUR", dataset)
        assert got.num_rows > 100 and got.equals(read(api_lake, "MUR", dataset)), dataset
    assert import_files(lake, SecEdgarSource(), files).objects_written == 0

    # a companyfacts file alone has no ticker: a clear failure naming the file and the remedy
    lpa = SEC / "lpa_facts.json.gz"
    alone = import_files(lake, SecEdgarSource(), [lpa])
    assert alone.items_failed == 1
    assert alone.failures[0].ticker == str(lpa)
    assert "CIK 0001997711" in str(alone.failures[0].error)
    assert "--tickers-file" in str(alone.failures[0].error)


def test_sec_bulk_zips(lake: Lake, tmp_path: Path) -> None:
    facts = tmp_path / "companyfacts.zip"
    with zipfile.ZipFile(facts, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "CIK0000717423.json",
            gzip.decompress((SEC / "companyfacts/CIK0000717423.json.gz").read_bytes()),
        )
        zf.writestr("CIK0001997711.json", gzip.decompress((SEC / "lpa_facts.json.gz").read_bytes()))
        zf.writestr(
            "CIK0000000042.json", json.dumps({"cik": 42, "entityName": "No Ticker", "facts": {}})
        )
        zf.writestr("CIK0000000002.json", b'{"cik": 2, "facts": {"us-gaap": ')
    tsla = sec_json("company_submission_TSLA.json")
    recent = tsla["filings"]["recent"]
    # an older page (columns at the top level, no CIK inside): 3 filings from 2012
    page = {k: v[:3] for k, v in recent.items()}
    page["accessionNumber"] = [f"0001318605-12-00000{i}" for i in range(3)]
    page["filingDate"] = ["2012-03-01", "2012-05-01", "2012-08-01"]
    subs = tmp_path / "submissions.zip"
    with zipfile.ZipFile(subs, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("CIK0001318605-submissions-001.json", json.dumps(page))  # before its main
        zf.writestr("CIK0001318605.json", json.dumps(tsla))

    # without SEC's ticker file, companyfacts members have no ticker: skipped, not failed
    s = import_files(lake, SecEdgarSource(), [facts])
    assert (s.skipped, s.items_completed, s.items_failed) == (3, 0, 1)
    assert s.failures[0].ticker == f"{facts}:CIK0000000002.json"
    assert "not valid JSON" in str(s.failures[0].error)

    # with it (given last: files named company_tickers* are read first)
    s = import_files(lake, SecEdgarSource(), [facts, subs, SEC / "company_tickers.json.gz"])
    assert (s.skipped, s.items_completed, s.items_failed) == (1, 3, 1)
    assert read(lake, "MUR", "fundamentals").num_rows > 100
    assert read(lake, "LPA", "fundamentals").num_rows == 6  # the padded-string CIK
    filings = read(lake, "TSLA", "filings")
    assert filings.num_rows == len(recent["accessionNumber"]) + 3
    assert {"0001318605-12-000000", "0001318605-12-000002"} <= set(filings["accession"].to_pylist())
    again = import_files(lake, SecEdgarSource(), [facts, subs, SEC / "company_tickers.json.gz"])
    assert again.objects_written == 0 and again.items_completed == 3


# --- errors and the CLI -----------------------------------------------------------------------


def test_errors_before_anything_is_written(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no such file or directory: .*missing\.json"):
        import_files(
            lake, YahooChartSource(), [YF / "history_chart_AAPL.json", tmp_path / "missing.json"]
        )
    with pytest.raises(SourceError, match="source 'synthetic' cannot import files"):
        import_files(lake, SyntheticSource(), [YF / "history_chart_AAPL.json"])
    with pytest.raises(MarketlakeError, match="does not provide"):
        import_files(lake, YahooChartSource(), [YF], datasets=["fundamentals"])
    with pytest.raises(SourceError, match=r"holds no \.json"):
        import_files(lake, YahooChartSource(), [tmp_path])
    with pytest.raises(UnknownSourceError):
        get_source("nope")
    assert lake.catalog.list_runs() == []  # no run was started
    corrupt = tmp_path / "x.json.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage")
    s = import_files(lake, YahooChartSource(), [corrupt])
    assert s.items_failed == 1 and "corrupt gzip data" in str(s.failures[0].error)


def test_cli_import(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    res = runner.invoke(
        app, ["import", "yahoo", str(YF / "history_chart_AAPL.json"), "--lake", lake]
    )
    assert res.exit_code == 0, res.output
    assert "completed" in res.output and "1 file(s) read" in res.output
    res = runner.invoke(
        app, ["import", "yahoo", str(YF / "history_chart_AAPL.json"), "--lake", lake]
    )
    assert res.exit_code == 0 and "0 skipped" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    res = runner.invoke(app, ["import", "yahoo", str(bad), "--lake", lake])
    assert res.exit_code == 3
    assert "not a Yahoo chart response" in res.output and "run the same import again" in res.output
    res = runner.invoke(
        app,
        ["import", "sec", str(SEC / "lpa_facts.json.gz"), "--lake", lake,
         "--tickers-file", str(SEC / "company_tickers.json.gz")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with marketlake.open(lake) as lk:
        assert read(lk, "LPA", "fundamentals").num_rows == 6
    for args, code, text in [
        (["import", "nope", str(bad)], 1, "unknown source 'nope'"),
        (["import", "yahoo", str(tmp_path / "none.json")], 1, "no such file or directory"),
        (["import", "yahoo", str(bad), "--tickers-file", str(bad)], 2, "sec source only"),
    ]:
        res = runner.invoke(app, [*args, "--lake", lake])
        assert res.exit_code == code and text in res.output, res.output
        assert "Traceback" not in res.output


def test_directories_expand_to_vendor_text_files_too(tmp_path: Path) -> None:
    from marketlake.sources.files import expand_paths

    for name in ("nasdaqlisted.txt", "constituents.csv", "a.json", ".hidden.json", "notes.md"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_paths([tmp_path])] == [
        "a.json",
        "constituents.csv",
        "nasdaqlisted.txt",
    ]
