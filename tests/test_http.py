"""The shared HTTP client: rate limits, retries, typed errors, redaction (offline, fake clock)."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from marketlake.errors import (
    ConfigError,
    NoDataError,
    SourceError,
    TransientSourceError,
    is_retryable,
)
from marketlake.sources.http import DEFAULT_USER_AGENT, HttpClient

YAHOO = "https://query1.finance.yahoo.com/v8/finance/chart/AAPL"
OTHER = "https://api.example.test/v1/bars"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ThreadClock:
    """Virtual time per thread: every thread starts at 0 and advances only by its own sleeps.

    Threads thus run 'at the same time' in virtual time; only the shared limiter can keep
    their requests apart.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def clock(self) -> float:
        return float(getattr(self._local, "now", 0.0))

    def sleep(self, seconds: float) -> None:
        self._local.now = self.clock() + seconds


def make_client(handler: Handler, fake: FakeClock | None = None, **kw: object) -> HttpClient:
    fake = fake or FakeClock()
    return HttpClient(
        transport=httpx.MockTransport(handler),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


def scripted(*steps: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with ``steps`` in order (exceptions are raised); the last repeats."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        step = steps[min(len(seen), len(steps) - 1)]
        seen.append(request)
        if isinstance(step, Exception):
            raise step
        return step

    return handler, seen


def ok(payload: object = None) -> httpx.Response:
    return httpx.Response(200, json={"ok": True} if payload is None else payload)


# --- rate limiting -------------------------------------------------------------------------------


def test_default_yahoo_limit_spaces_requests_through_the_clock() -> None:
    fake = FakeClock()
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(fake.now)
        return ok()

    with make_client(handler, fake) as client:
        for _ in range(5):
            assert client.get_json(YAHOO) == {"ok": True}
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0]  # 2 req/s on Yahoo by default


def test_unlisted_hosts_are_not_throttled_and_limits_are_configurable() -> None:
    fake = FakeClock()
    times: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append((request.url.host, fake.now))
        return ok()

    client = make_client(
        handler, fake, rate_limits={"query1.finance.yahoo.com": 0, "API.example.test": 4}
    )
    for _ in range(3):
        client.get("https://unlimited.example.test/x")
        client.get(YAHOO)  # default limit removed by 0
    assert fake.sleeps == []
    for _ in range(3):
        client.get(OTHER)
    assert [t for h, t in times if h == "api.example.test"] == [0.0, 0.25, 0.5]
    client.close()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "fast"])
def test_bad_rate_limit_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"api\.example\.test"):
        HttpClient(rate_limits={"api.example.test": bad})  # type: ignore[dict-item]


def test_rate_limit_in_real_time_lower_bound() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return ok()

    client = HttpClient(
        transport=httpx.MockTransport(handler), rate_limits={"api.example.test": 20}
    )
    started = time.monotonic()
    for _ in range(5):
        client.get(OTHER)
    elapsed = time.monotonic() - started
    assert calls == 5
    assert elapsed >= 4 * 0.05 - 0.005  # 5 request starts, 50 ms apart at least


def test_threads_sharing_a_client_respect_the_per_host_rate() -> None:
    tc = ThreadClock()
    times: list[float] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            times.append(tc.clock())
        return ok()

    client = HttpClient(transport=httpx.MockTransport(handler), sleep=tc.sleep, clock=tc.clock)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                client.get(YAHOO)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # 20 requests from 4 threads that all started at virtual time 0: one every 0.5 s in total.
    assert sorted(times) == [i * 0.5 for i in range(20)]


def test_threads_sharing_a_client_real_time_lower_bound() -> None:
    client = HttpClient(
        transport=httpx.MockTransport(lambda r: ok()), rate_limits={"api.example.test": 40}
    )
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: [client.get(OTHER) for _ in range(3)]) for _ in "abcd"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 11 * 0.025 - 0.005  # 12 starts, 25 ms apart overall


# --- retries -------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_then_success(caplog: pytest.LogCaptureFixture) -> None:
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "3"}), ok({"n": 1}))
    fake = FakeClock()
    client = make_client(handler, fake)
    with caplog.at_level(logging.INFO, logger="marketlake.sources.http"):
        assert client.get_json(OTHER) == {"n": 1}
    assert len(seen) == 2
    assert fake.sleeps == [3.0]
    assert fake.now == 3.0
    [record] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert record.levelno == logging.WARNING
    assert "HTTP 429" in record.getMessage() and "retry 1/5 in 3.00 s" in record.getMessage()


def test_429_retry_after_http_date_measured_against_the_date_header() -> None:
    headers = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:28:07 GMT",
    }
    handler, seen = scripted(httpx.Response(429, headers=headers), ok())
    fake = FakeClock()
    make_client(handler, fake).get(OTHER)
    assert fake.sleeps == [7.0]
    assert len(seen) == 2


def test_429_holds_the_host_for_other_requests_too() -> None:
    fake = FakeClock()
    times: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "2"})])

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(fake.now)
        return next(answers, ok())

    client = make_client(handler, fake, rate_limits={"api.example.test": 1})
    client.get(OTHER)  # 429 at t=0, waits 2 s, succeeds at t=2
    client.get(OTHER)  # next slot one second later
    assert times == [0.0, 2.0, 3.0]


def test_retry_after_longer_than_the_cap_fails_at_once() -> None:
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "3600"}), ok())
    fake = FakeClock()
    with pytest.raises(TransientSourceError, match="wait 3600 s") as err:
        make_client(handler, fake).get(OTHER)
    assert len(seen) == 1 and fake.sleeps == []
    assert is_retryable(err.value)


def test_500_then_success_with_jittered_exponential_backoff() -> None:
    handler, seen = scripted(httpx.Response(500), httpx.Response(503), ok({"v": 2}))
    fake = FakeClock()
    assert make_client(handler, fake, backoff=1.0).get_json(OTHER) == {"v": 2}
    assert len(seen) == 3
    first, second = fake.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


def test_backoff_is_capped() -> None:
    handler, _ = scripted(httpx.Response(502))
    fake = FakeClock()
    with pytest.raises(TransientSourceError):
        make_client(handler, fake, backoff=10.0, retries=4, max_backoff=15.0).get(OTHER)
    assert len(fake.sleeps) == 4 and max(fake.sleeps) <= 15.0


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectError("connection refused")],
    ids=["timeout", "connect"],
)
def test_timeouts_and_connection_errors_then_success(exc: Exception) -> None:
    handler, seen = scripted(exc, exc, httpx.Response(200, content=b"raw"))
    fake = FakeClock()
    assert make_client(handler, fake).get_bytes(OTHER) == b"raw"
    assert len(seen) == 3 and len(fake.sleeps) == 2


def test_retries_exhausted_is_a_transient_source_error() -> None:
    handler, seen = scripted(httpx.ReadTimeout("slow"))
    fake = FakeClock()
    with pytest.raises(TransientSourceError, match=r"failed after 3 attempts: timed out") as err:
        make_client(handler, fake, retries=2).get(OTHER)
    assert len(seen) == 3 and len(fake.sleeps) == 2
    assert is_retryable(err.value)
    assert err.value.context["url"] == OTHER


# --- final errors --------------------------------------------------------------------------------


def test_403_names_the_credentials_hint_and_is_not_retried() -> None:
    handler, seen = scripted(httpx.Response(403, text="Forbidden"), ok())
    with pytest.raises(SourceError, match="check TIINGO_API_KEY") as err:
        make_client(handler).get(OTHER, auth_hint="TIINGO_API_KEY")
    assert not is_retryable(err.value)
    assert "HTTP 403 Forbidden" in str(err.value) and len(seen) == 1


def test_401_without_hint_still_says_credentials() -> None:
    handler, _ = scripted(httpx.Response(401))
    with pytest.raises(SourceError, match="credentials"):
        make_client(handler).get(OTHER)


def test_404_is_no_data() -> None:
    handler, seen = scripted(httpx.Response(404, json={"error": "No data found"}), ok())
    with pytest.raises(NoDataError, match=re.escape("no data at " + OTHER)) as err:
        make_client(handler).get(OTHER)
    assert not is_retryable(err.value) and len(seen) == 1
    assert "No data found" in str(err.value)


@pytest.mark.parametrize("status", [400, 422, 501])
def test_other_client_errors_are_final_with_a_one_line_snippet(status: int) -> None:
    handler, seen = scripted(httpx.Response(status, text="bad\nrequest:   symbol"), ok())
    with pytest.raises(SourceError, match=f"HTTP {status}") as err:
        make_client(handler).get(OTHER)
    assert type(err.value) is SourceError and len(seen) == 1
    assert "\n" not in str(err.value) and "bad request: symbol" in str(err.value)


@pytest.mark.parametrize("body", [b"<html>rate limited</html>", b"", b'{"a": 1'])
def test_malformed_json_names_the_url(body: bytes) -> None:
    handler, _ = scripted(httpx.Response(200, content=body))
    with pytest.raises(SourceError, match=re.escape(OTHER)) as err:
        make_client(handler).get_json(OTHER)
    assert not is_retryable(err.value)


def test_invalid_urls_are_source_errors() -> None:
    client = make_client(lambda r: ok())
    with pytest.raises(SourceError, match="invalid URL"):
        client.get("ftp://example.test/file")
    with pytest.raises(SourceError, match="invalid URL"):
        client.get("not a url")


# --- request shape -------------------------------------------------------------------------------


def test_user_agent_default_override_and_params_merged() -> None:
    handler, seen = scripted(ok())
    client = make_client(handler)
    response = client.get(OTHER + "?symbols=AAPL", params={"limit": 10, "start": 1.5})
    assert seen[0].headers["User-Agent"] == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith("marketlake/")
    assert dict(seen[0].url.params) == {"symbols": "AAPL", "limit": "10", "start": "1.5"}
    assert response.status == 200 and response.url.startswith(OTHER)
    sec = make_client(handler, user_agent="Jane Doe jane@example.com")
    sec.get("https://data.sec.gov/api/xbrl/companyfacts/CIK0000320193.json")
    assert seen[1].headers["User-Agent"] == "Jane Doe jane@example.com"
    sec.get(OTHER, headers={"User-Agent": "other"})
    assert seen[2].headers["User-Agent"] == "other"


def test_redirects_are_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(301, headers={"Location": "https://api.example.test/new"})
        return ok()

    response = make_client(handler).get("https://api.example.test/old")
    assert response.url == "https://api.example.test/new"


# --- secrets -------------------------------------------------------------------------------------


SECRET_PARAM = "s3cr3tParamValue"
SECRET_TOKEN = "tok-abcdef123456"
SECRET_APCA = "apcaSecretKey9876"


def _leaks(text: str) -> bool:
    return any(s in text for s in (SECRET_PARAM, SECRET_TOKEN, SECRET_APCA))


def test_secrets_never_in_messages_logs_or_urls(caplog: pytest.LogCaptureFixture) -> None:
    def echo(status: int) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            # A hostile server echoing everything it received back in the body.
            echoed = {"url": str(request.url), "headers": dict(request.headers)}
            return httpx.Response(status, text=json.dumps(echoed))

        return handler

    headers = {
        "Authorization": f"Token {SECRET_TOKEN}",
        "APCA-API-SECRET-KEY": SECRET_APCA,
    }
    kw = {"params": {"apiKey": SECRET_PARAM, "symbol": "AAPL"}, "headers": headers}
    with caplog.at_level(logging.DEBUG, logger="marketlake.sources.http"):
        for status in (400, 401, 404):
            with pytest.raises(SourceError) as err:
                make_client(echo(status)).get(OTHER, secret_params={"apiKey"}, **kw)  # type: ignore[arg-type]
            assert not _leaks(str(err.value)) and "***" in str(err.value)
            assert not _leaks(repr(err.value.context))
        with pytest.raises(TransientSourceError) as terr:
            make_client(echo(503), retries=2).get(OTHER, secret_params={"apiKey"}, **kw)  # type: ignore[arg-type]
        assert not _leaks(str(terr.value)) and "apiKey=***" in str(terr.value)
        response = make_client(echo(200)).get(OTHER, secret_params={"apiKey"}, **kw)  # type: ignore[arg-type]
    assert "apiKey=***" in response.url and "symbol=AAPL" in response.url
    assert _leaks(response.content.decode())  # the secrets were really sent
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    for record in caplog.records:
        assert not _leaks(record.getMessage())


def test_common_credential_params_are_redacted_without_being_named() -> None:
    handler, _ = scripted(httpx.Response(500))
    with pytest.raises(TransientSourceError) as err:
        make_client(handler, retries=0).get(OTHER, params={"token": SECRET_TOKEN})
    assert SECRET_TOKEN not in str(err.value) and "token=***" in str(err.value)


# --- the CLI lists each source's settings ---------------------------------------------------------


def test_sources_command_shows_each_sources_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from marketlake.cli.main import app
    from marketlake.sources import registry

    info = registry.SourceInfo(
        name="demo_http",
        target="marketlake.sources.synthetic:SyntheticSource",
        datasets=("prices",),
        settings=("DEMO_API_KEY", "DEMO_FEED"),
        description="a keyed network source",
    )
    monkeypatch.setitem(registry._SOURCES, "demo_http", info)
    res = CliRunner().invoke(app, ["sources"])
    assert res.exit_code == 0
    assert "demo_http" in res.stdout and "DEMO_API_KEY, DEMO_FEED" in res.stdout
    assert "synthetic" in res.stdout and "(none)" in res.stdout
