"""Alerts (quality/alerts.py, ``marketlake alerts check``): what raises an alert, and delivery to
a real local HTTP receiver (http.server in a thread) and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from typer.testing import CliRunner

import marketlake
from marketlake import Lake, calendars
from marketlake.catalog import MonitoredAsset, RunItemRow, ViolationRow
from marketlake.cli.main import app
from marketlake.errors import ConfigError
from marketlake.quality.alerts import (
    Alert,
    AlertDeliveryError,
    SmtpSettings,
    alert_payload,
    collect_alerts,
    send_email,
    send_webhook,
)
from tests.conftest import price_table

D = dt.date
NOW = dt.datetime(2024, 6, 17, 12, 0, tzinfo=dt.UTC)  # Monday: Friday 2024-06-14 is expected
runner = CliRunner()


# --- a local HTTP receiver and a local SMTP server -------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            time.sleep(state.delay)
            reply = b"ok" if state.status < 300 else b"receiver is down\nsorry"
            try:
                self.send_response(state.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out on purpose

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET-TOKEN"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ml", b"pw")
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    port = _free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=auth, auth_require_tls=False
    )
    controller.start()
    yield box, port
    controller.stop()


# --- a lake with something to alert about ----------------------------------------------------


def _run(lk: Lake, run_id: str, source: str, statuses: dict[str, str]) -> None:
    lk.catalog.create_run(run_id, "daily", source, {}, [(t, "prices") for t in statuses])
    lk.catalog.record_items(
        run_id,
        [
            RunItemRow(
                run_id=run_id,
                ticker=t,
                dataset="prices",
                status=s,
                error="HTTP 500 from the vendor" if s == "failed" else None,
            )
            for t, s in statuses.items()
        ],
    )
    lk.catalog.finish_run(run_id)


@pytest.fixture
def lk(tmp_path: Path) -> Iterator[Lake]:
    lake = marketlake.open(tmp_path / "lake", fsync=False)
    days = calendars.sessions(D(2024, 5, 1), D(2024, 6, 14))
    lake.write("OLD", "prices", price_table([d for d in days if d <= D(2024, 5, 31)]), source="y")
    lake.write("NOW", "prices", price_table(days), source="y")
    lake.write("GONE", "prices", price_table(days[:5]), source="y")  # stale, not monitored
    lake.catalog.upsert_monitored(
        [
            MonitoredAsset(ticker=t, source="y", datasets=("prices",), added_at="2024-01-01")
            for t in ("OLD", "NOW")
        ]
        + [MonitoredAsset(ticker="PAUSED", source="y", datasets=("prices",), active=False)]
    )
    yield lake
    lake.close()


def _violations(lk: Lake) -> None:
    rows = [
        ViolationRow(
            ticker="NOW",
            dataset="prices",
            date=D(2024, 6, 3),
            rule="prices.high_low",
            severity="error",
            detail="high 10.0 < low 11.0",
        ),
        ViolationRow(
            ticker="NOW",
            dataset="prices",
            date=D(2024, 6, 4),
            rule="prices.jump",
            severity="warning",
            detail="close moved 60%",
        ),
    ]
    lk.catalog.record_violations("check-1", "2024-06-17T10:00:00.000000Z", rows)


def test_collect_alerts_finds_each_kind(lk: Lake) -> None:
    _run(lk, "r1", "y", {"OLD": "completed", "NOW": "failed"})
    _violations(lk)
    alerts = collect_alerts(lk, NOW)
    assert [a.kind for a in alerts] == ["run_failed", "stale_data", "violations"]
    run, stale, bad = alerts
    assert run.title == "partly failed daily run r1 (y): 1 of 2 items failed"
    assert "NOW/prices: HTTP 500 from the vendor" in run.body
    assert "marketlake ingest --resume r1" in run.body
    assert stale.title == "stale data: 1 monitored series older than 48 h"
    assert "OLD/prices (y): last 2024-05-31, expected 2024-06-14, 10 behind" in stale.body
    assert "GONE" not in stale.body and "NOW" not in stale.body  # not monitored / fresh
    assert bad.title == "1 data-quality error(s) in 1 rule(s)"
    assert "prices prices.high_low: 1" in bad.body and "jump" not in bad.body
    assert {a.severity for a in alerts} == {"error"}


def test_no_alerts_when_all_is_well(lk: Lake) -> None:
    _run(lk, "r1", "y", {"OLD": "failed"})
    time.sleep(0.002)  # started_at orders runs
    _run(lk, "r2", "y", {"OLD": "completed"})  # the latest daily run of the source succeeded
    lk.catalog.remove_monitored(["OLD"])
    assert collect_alerts(lk, NOW) == []
    # a monitored asset never collected alerts once it has been monitored for 48 h
    lk.catalog.upsert_monitored(
        [MonitoredAsset(ticker="NEVER", source="y", datasets=("prices",), added_at="2024-06-01")]
    )
    [alert] = collect_alerts(lk, NOW)
    assert alert.kind == "stale_data" and "never collected: NEVER (y)" in alert.body
    with pytest.raises(marketlake.MarketlakeError, match="time zone"):
        collect_alerts(lk, dt.datetime(2024, 6, 17))


ALERTS = [
    Alert("run_failed", "error", "failed daily run r1 (y): 1 of 2 items failed", "line 1\nline 2"),
    Alert("stale_data", "error", "stale data: 1 monitored series older than 48 h", "OLD ..."),
]


def test_webhook_receives_the_payload(receiver: Receiver) -> None:
    status = send_webhook(receiver.url, ALERTS, lake="/data/lake", now=NOW)
    assert status == 200
    [req] = receiver.requests
    assert req["path"] == "/hooks/SECRET-TOKEN"
    assert req["headers"]["Content-Type"] == "application/json"
    payload = json.loads(req["body"])
    assert payload == alert_payload(ALERTS, lake="/data/lake", now=NOW)
    assert payload["count"] == 2 and payload["generated_at"] == "2024-06-17T12:00:00Z"
    assert payload["alerts"][0] == {
        "kind": "run_failed",
        "severity": "error",
        "title": "failed daily run r1 (y): 1 of 2 items failed",
        "body": "line 1\nline 2",
    }
    assert send_webhook(receiver.url, []) == 0 and len(receiver.requests) == 1


def test_webhook_errors_are_clear_and_keep_the_token_secret(receiver: Receiver) -> None:
    receiver.status = 503
    with pytest.raises(AlertDeliveryError) as info:
        send_webhook(receiver.url, ALERTS)
    msg = str(info.value)
    assert "answered 503: receiver is down sorry" in msg and "SECRET" not in msg
    receiver.status, receiver.delay = 200, 1.0
    with pytest.raises(AlertDeliveryError, match=r"did not answer within 0\.2 s"):
        send_webhook(receiver.url, ALERTS, timeout=0.2)
    closed = f"http://127.0.0.1:{_free_port()}/x"
    with pytest.raises(
        AlertDeliveryError, match=re.escape("cannot reach alert webhook http://127.0.0.1")
    ):
        send_webhook(closed, ALERTS, timeout=2)
    with pytest.raises(ConfigError, match="not an http"):
        send_webhook("ftp://example/x", ALERTS)


def test_email_reaches_a_local_smtp_server(smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    env = {
        "MARKETLAKE_SMTP_HOST": "127.0.0.1",
        "MARKETLAKE_SMTP_PORT": str(port),
        "MARKETLAKE_SMTP_FROM": "lake@example.org",
        "MARKETLAKE_SMTP_USER": "ml",
        "MARKETLAKE_SMTP_PASSWORD": "pw",
        "MARKETLAKE_ALERT_EMAIL_TO": "ops@example.org, data@example.org",
    }
    settings = SmtpSettings.from_env(env=env)
    assert "pw" not in repr(settings)
    assert send_email(settings, ALERTS, lake="/data/lake", now=NOW) == 2
    [env_] = box.envelopes
    assert env_.mail_from == "lake@example.org"
    assert env_.rcpt_tos == ["ops@example.org", "data@example.org"]
    msg = email.message_from_bytes(env_.content, policy=email.policy.default)
    assert msg["Subject"] == "[marketlake] 2 alert(s): run failed, stale data"
    assert msg["To"] == "ops@example.org, data@example.org"
    text = msg.get_content().replace("\r\n", "\n")
    assert "marketlake alerts for lake /data/lake at 2024-06-17 12:00 UTC" in text
    assert "[ERROR] failed daily run r1 (y): 1 of 2 items failed\nline 1\nline 2" in text
    wrong = SmtpSettings.from_env(env={**env, "MARKETLAKE_SMTP_PASSWORD": "nope"})
    with pytest.raises(AlertDeliveryError, match="refused the login of 'ml'"):
        send_email(wrong, ALERTS)
    gone = SmtpSettings.from_env(env={**env, "MARKETLAKE_SMTP_PORT": str(_free_port())})
    with pytest.raises(AlertDeliveryError, match=re.escape("cannot reach SMTP server 127.0.0.1")):
        send_email(gone, ALERTS)
    assert len(box.envelopes) == 1


def test_smtp_settings_from_env() -> None:
    with pytest.raises(ConfigError, match="MARKETLAKE_SMTP_HOST"):
        SmtpSettings.from_env(to="a@b", env={})
    with pytest.raises(ConfigError, match="--email or set MARKETLAKE_ALERT_EMAIL_TO"):
        SmtpSettings.from_env(env={"MARKETLAKE_SMTP_HOST": "h"})
    with pytest.raises(ConfigError, match="MARKETLAKE_SMTP_PORT='x'"):
        SmtpSettings.from_env(
            to="a@b", env={"MARKETLAKE_SMTP_HOST": "h", "MARKETLAKE_SMTP_PORT": "x"}
        )
    with pytest.raises(ConfigError, match="MARKETLAKE_SMTP_STARTTLS='maybe'"):
        SmtpSettings.from_env(
            to="a@b", env={"MARKETLAKE_SMTP_HOST": "h", "MARKETLAKE_SMTP_STARTTLS": "maybe"}
        )
    tls = SmtpSettings.from_env(
        to=["a@b"], env={"MARKETLAKE_SMTP_HOST": "h", "MARKETLAKE_SMTP_STARTTLS": "yes"}
    )
    assert (tls.port, tls.starttls, tls.ssl, tls.to) == (587, True, False, ("a@b",))
    implicit = SmtpSettings.from_env(
        to="a@b", env={"MARKETLAKE_SMTP_HOST": "h", "MARKETLAKE_SMTP_SSL": "1"}
    )
    assert implicit.port == 465


def test_cli_alerts_check(
    lk: Lake,
    receiver: Receiver,
    smtp: tuple[Mailbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box, port = smtp
    url = lk.url
    _violations(lk)
    lk.close()
    base = ["alerts", "check", "--lake", url, "--now", "2024-06-17T12:00:00Z"]
    dry = runner.invoke(app, [*base, "--dry-run", "--webhook", receiver.url])
    assert dry.exit_code == 0, dry.output
    assert "stale data: 1 monitored series" in dry.output and "dry run: 2 alert(s)" in dry.output
    assert receiver.requests == []

    monkeypatch.setenv("MARKETLAKE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MARKETLAKE_SMTP_PORT", str(port))
    monkeypatch.setenv("MARKETLAKE_SMTP_USER", "ml")
    monkeypatch.setenv("MARKETLAKE_SMTP_PASSWORD", "pw")
    monkeypatch.setenv("MARKETLAKE_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("MARKETLAKE_ALERT_EMAIL_TO", "ops@example.org")
    sent = runner.invoke(app, base)
    assert sent.exit_code == 0, sent.output
    assert "sent 2 alert(s) to the webhook (HTTP 200)" in sent.output
    assert "emailed 2 alert(s) to 1 recipient(s)" in sent.output
    kinds = [a["kind"] for a in json.loads(receiver.requests[0]["body"])["alerts"]]
    assert kinds == ["stale_data", "violations"] and len(box.envelopes) == 1

    receiver.status = 500
    failed = runner.invoke(app, base)
    assert failed.exit_code == 1
    assert "error:" in failed.output and "answered 500" in failed.output
    assert "Traceback" not in failed.output and len(box.envelopes) == 2  # email still sent

    with marketlake.open(url) as again:
        again.catalog.remove_monitored(["OLD"])
        again.catalog.record_violations(
            "check-2", "2024-06-17T11:00:00.000000Z", [], scope=[("prices", None, None)]
        )
    quiet = runner.invoke(app, base)
    assert quiet.exit_code == 0 and "no alerts" in quiet.output
