"""Alerts: a failed run, stale data, error-severity violations -> a webhook and/or an email.

:func:`collect_alerts` looks at the catalog only (no data read):

* ``run_failed`` – the latest finished run of a (kind, source) failed, or partly failed (some
  items failed): its counts and first errors;
* ``stale_data`` – an active monitored asset (``marketlake assets``) whose first missing session
  settled more than :data:`~marketlake.quality.coverage.STALE_HOURS` (48 h) ago (watermarks from
  ``collection_progress``; crypto on UTC days), or that was never collected although it has been
  monitored that long;
* ``violations`` – open error-severity violations (the latest check of each dataset).

:func:`send_webhook` POSTs one JSON document (``{"source": "marketlake", "lake": ...,
"generated_at": ..., "alerts": [{"kind", "severity", "title", "body"}, ...]}``);
:func:`send_email` sends one plain-text email over SMTP. Configuration comes from the
environment: ``MARKETLAKE_ALERT_WEBHOOK`` (URL), ``MARKETLAKE_ALERT_EMAIL_TO`` (comma-separated
addresses) and ``MARKETLAKE_SMTP_HOST``, ``_PORT``, ``_FROM``, ``_STARTTLS``, ``_SSL``, ``_USER``,
``_PASSWORD``. Nothing is remembered between checks: every check reports every current alert.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import smtplib
import socket
import ssl
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from marketlake.errors import ConfigError, MarketlakeError
from marketlake.quality.coverage import (
    STALE_HOURS,
    assess_freshness,
    freshness_inputs_from_progress,
)

if TYPE_CHECKING:
    from marketlake.query.lake import Lake

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "AlertDeliveryError",
    "SmtpSettings",
    "alert_payload",
    "collect_alerts",
    "send_email",
    "send_webhook",
]

AlertKind = Literal["run_failed", "stale_data", "violations"]
ALERT_KINDS: tuple[str, ...] = ("run_failed", "stale_data", "violations")
"""The kinds of alert :func:`collect_alerts` raises."""

WEBHOOK_ENV = "MARKETLAKE_ALERT_WEBHOOK"
EMAIL_TO_ENV = "MARKETLAKE_ALERT_EMAIL_TO"
LISTED = 10  # items named in an alert body


class AlertDeliveryError(MarketlakeError):
    """An alert could not be delivered (webhook refused or unreachable, SMTP failure)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert.

    Parameters
    ----------
    kind:
        ``run_failed``, ``stale_data`` or ``violations``.
    severity:
        ``error`` or ``warning``.
    title:
        One line.
    body:
        Details, plain text (several lines).
    """

    kind: str
    severity: str
    title: str
    body: str

    def to_json(self) -> dict[str, str]:
        """The alert as a JSON object."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "body": self.body,
        }


# --- collecting -----------------------------------------------------------------------------------


def _parse(stamp: str) -> dt.datetime:
    """A catalog timestamp (UTC ISO text; a bare date or naive time counts as UTC)."""
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _run_alerts(lake: Lake) -> list[Alert]:
    latest: dict[tuple[str, str], Any] = {}
    for run in lake.catalog.list_runs(200):  # newest first
        if run.status in ("completed", "failed"):
            latest.setdefault((run.kind, run.source), run)
    alerts: list[Alert] = []
    for (kind, source), run in sorted(latest.items()):
        if run.status != "failed" and not run.items_failed:
            continue
        failed = lake.catalog.run_items(run.run_id, status="failed")
        partly = 0 < run.items_failed < run.items_total
        lines = [
            f"run {run.run_id} ({kind}, source {source}) started {run.started_at}, finished "
            f"{run.finished_at}: {run.items_completed:,} of {run.items_total:,} items completed, "
            f"{run.items_failed:,} failed.",
        ]
        if run.error:
            lines.append(f"error: {run.error}")
        lines += [f"- {i.ticker}/{i.dataset}: {i.error or 'failed'}" for i in failed[:LISTED]]
        if len(failed) > LISTED:
            lines.append(f"... and {len(failed) - LISTED:,} more")
        lines.append(f"resume it with: marketlake ingest --resume {run.run_id}")
        alerts.append(
            Alert(
                kind="run_failed",
                severity="error",
                title=f"{'partly ' if partly else ''}failed {kind} run {run.run_id} ({source}): "
                f"{run.items_failed:,} of {run.items_total:,} items failed",
                body="\n".join(lines),
            )
        )
    return alerts


def _stale_alerts(lake: Lake, now: dt.datetime) -> list[Alert]:
    items, never = freshness_inputs_from_progress(lake, monitored_only=True, active_only=True)
    table = assess_freshness(items, now)
    stale = [r for r in table.to_pylist() if r["status"] == "stale"]
    cutoff = now - dt.timedelta(hours=STALE_HOURS)
    never = [a for a in never if _parse(a.added_at) < cutoff]
    if not stale and not never:
        return []
    lines = [
        f"{len(stale):,} monitored series have had no new data for more than "
        f"{STALE_HOURS:g} h after their expected session:"
    ]
    for r in stale[:LISTED]:
        due = r["due_at"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(
            f"- {r['ticker']}/{r['dataset']} ({r['source']}): last {r['last']}, expected "
            f"{r['expected']}, {r['behind']} behind, due since {due}"
        )
    if len(stale) > LISTED:
        lines.append(f"... and {len(stale) - LISTED:,} more")
    if never:
        lines.append(
            f"{len(never):,} monitored asset(s) never collected: "
            + ", ".join(f"{a.ticker} ({a.source})" for a in never[:LISTED])
            + (" ..." if len(never) > LISTED else "")
        )
    lines.append("run 'marketlake update' (or check the schedule and the last runs)")
    n = len(stale) + len(never)
    return [
        Alert(
            kind="stale_data",
            severity="error",
            title=f"stale data: {n:,} monitored series older than {STALE_HOURS:g} h",
            body="\n".join(lines),
        )
    ]


def _violation_alerts(lake: Lake) -> list[Alert]:
    rows = lake.catalog.violations(severity="error", latest_only=True)
    if not rows:
        return []
    by_rule: Counter[tuple[str, str]] = Counter((v.dataset, v.rule) for v in rows)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in rows:
        bucket = examples[(v.dataset, v.rule)]
        if len(bucket) < 3:
            when = v.date.isoformat() if v.date else (v.ts.isoformat() if v.ts else "")
            bucket.append(f"{v.ticker} {when}: {v.detail}".strip())
    lines = [f"{len(rows):,} open error-severity violation(s) (latest check of each dataset):"]
    for (dataset, rule), n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"- {dataset} {rule}: {n:,}")
        lines += [f"    {e}" for e in examples[(dataset, rule)]]
    lines.append("details: marketlake validate; the coverage report lists them by rule over time")
    return [
        Alert(
            kind="violations",
            severity="error",
            title=f"{len(rows):,} data-quality error(s) in {len(by_rule)} rule(s)",
            body="\n".join(lines),
        )
    ]


def collect_alerts(lake: Lake, now: dt.datetime | None = None) -> list[Alert]:
    """The alerts the lake's catalog calls for at ``now``.

    Parameters
    ----------
    lake:
        The lake (only its catalog is read).
    now:
        Aware instant (default: the current time).

    Returns
    -------
    list[Alert]
        Failed runs, then stale data, then violations; empty when all is well.
    """
    if now is not None and now.tzinfo is None:
        raise MarketlakeError(f"now={now.isoformat()} has no time zone; pass an aware time")
    instant = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return [*_run_alerts(lake), *_stale_alerts(lake, instant), *_violation_alerts(lake)]


def alert_payload(
    alerts: Sequence[Alert], *, lake: str | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The JSON document a webhook receives."""
    instant = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return {
        "source": "marketlake",
        "lake": lake,
        "generated_at": instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": len(alerts),
        "alerts": [a.to_json() for a in alerts],
    }


# --- delivery -------------------------------------------------------------------------------------


def _where(url: str) -> str:
    """``scheme://host:port`` of a URL: webhook paths often carry a secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}" if parts.netloc else "?"


def send_webhook(
    url: str,
    alerts: Sequence[Alert],
    *,
    lake: str | None = None,
    now: dt.datetime | None = None,
    timeout: float = 10.0,
) -> int:
    """POST the alerts as one JSON document to ``url``.

    Parameters
    ----------
    url:
        ``http://`` or ``https://`` URL of the receiver (Slack-style incoming webhooks, a
        monitoring endpoint, ...). Only its scheme and host appear in error messages.
    alerts:
        The alerts (an empty list sends nothing).
    lake, now:
        Named in the payload.
    timeout:
        Seconds for connecting and for the answer.

    Returns
    -------
    int
        The HTTP status of the answer (2xx), or 0 when there was nothing to send.

    Raises
    ------
    ConfigError
        The URL is not http(s).
    AlertDeliveryError
        The receiver is unreachable, timed out or answered with a non-2xx status.
    """
    import httpx

    if not alerts:
        return 0
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"alert webhook {url!r} is not an http(s) URL")
    where = _where(url)
    body = json.dumps(alert_payload(alerts, lake=lake, now=now), sort_keys=True).encode()
    try:
        answer = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": "marketlake-alerts"},
            timeout=httpx.Timeout(timeout),
        )
    except httpx.TimeoutException:
        raise AlertDeliveryError(
            f"alert webhook {where} did not answer within {timeout:g} s", url=where
        ) from None
    except httpx.HTTPError as exc:
        raise AlertDeliveryError(
            f"cannot reach alert webhook {where}: {type(exc).__name__} ({exc})", url=where
        ) from None
    if not 200 <= answer.status_code < 300:
        text = answer.text.strip().replace("\n", " ")[:200]
        raise AlertDeliveryError(
            f"alert webhook {where} answered {answer.status_code}" + (f": {text}" if text else ""),
            url=where,
            status=answer.status_code,
        )
    return answer.status_code


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send alert emails. Build from the environment with :meth:`from_env`.

    ``starttls`` upgrades a plain connection (port 587); ``ssl`` connects with TLS from the start
    (port 465). The password never appears in ``repr`` or messages.
    """

    host: str
    to: tuple[str, ...]
    port: int = 25
    sender: str = "marketlake@localhost"
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    @classmethod
    def from_env(
        cls, to: Sequence[str] | str | None = None, env: Mapping[str, str] | None = None
    ) -> SmtpSettings:
        """Settings from ``MARKETLAKE_SMTP_*`` and ``MARKETLAKE_ALERT_EMAIL_TO``.

        Parameters
        ----------
        to:
            Recipients (overrides ``MARKETLAKE_ALERT_EMAIL_TO``); a string may list several,
            comma-separated.
        env:
            The environment (default ``os.environ``).

        Raises
        ------
        ConfigError
            No host, no recipient, or a bad port / flag value (the variable is named).
        """
        e = os.environ if env is None else env
        raw_to = to if to is not None else e.get(EMAIL_TO_ENV, "")
        items = raw_to.split(",") if isinstance(raw_to, str) else list(raw_to)
        recipients = tuple(a.strip() for a in items if a.strip())
        if not recipients:
            raise ConfigError(f"no alert email recipient: pass --email or set {EMAIL_TO_ENV}")
        host = e.get("MARKETLAKE_SMTP_HOST", "").strip()
        if not host:
            raise ConfigError("alert email needs an SMTP server: set MARKETLAKE_SMTP_HOST")
        use_ssl = _flag(e, "MARKETLAKE_SMTP_SSL")
        starttls = _flag(e, "MARKETLAKE_SMTP_STARTTLS")
        port_text = e.get("MARKETLAKE_SMTP_PORT", "").strip()
        default_port = 465 if use_ssl else 587 if starttls else 25
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigError(f"MARKETLAKE_SMTP_PORT={port_text!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"MARKETLAKE_SMTP_PORT={port} is not a port number (1-65535)")
        sender = e.get("MARKETLAKE_SMTP_FROM", "").strip() or f"marketlake@{socket.getfqdn()}"
        return cls(
            host=host,
            to=recipients,
            port=port,
            sender=sender,
            starttls=starttls,
            ssl=use_ssl,
            user=e.get("MARKETLAKE_SMTP_USER") or None,
            password=e.get("MARKETLAKE_SMTP_PASSWORD") or None,
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={value!r} is not a boolean; use 1/0, true/false, yes/no")


def email_message(
    settings: SmtpSettings,
    alerts: Sequence[Alert],
    *,
    lake: str | None = None,
    now: dt.datetime | None = None,
) -> EmailMessage:
    """The plain-text email :func:`send_email` sends."""
    instant = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    kinds = ", ".join(dict.fromkeys(a.kind.replace("_", " ") for a in alerts))
    msg = EmailMessage()
    msg["Subject"] = f"[marketlake] {len(alerts)} alert(s): {kinds}"
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.to)
    msg["Date"] = instant.strftime("%a, %d %b %Y %H:%M:%S +0000")
    lines = [f"marketlake alerts for lake {lake or '?'} at {instant:%Y-%m-%d %H:%M UTC}", ""]
    for a in alerts:
        lines += [f"[{a.severity.upper()}] {a.title}", a.body, ""]
    msg.set_content("\n".join(lines))
    return msg


def send_email(
    settings: SmtpSettings,
    alerts: Sequence[Alert],
    *,
    lake: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Send the alerts as one plain-text email.

    Parameters
    ----------
    settings:
        SMTP server, sender and recipients (:meth:`SmtpSettings.from_env`).
    alerts:
        The alerts (an empty list sends nothing).
    lake, now:
        Named in the message.

    Returns
    -------
    int
        Recipients the server accepted (0 when there was nothing to send).

    Raises
    ------
    AlertDeliveryError
        The server is unreachable, refuses the login, the sender or every recipient.
    """
    if not alerts:
        return 0
    msg = email_message(settings, alerts, lake=lake, now=now)
    where = f"{settings.host}:{settings.port}"
    try:
        server: smtplib.SMTP
        if settings.ssl:
            server = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=ssl.create_default_context(),
            )
        else:
            server = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with server:
            server.ehlo()
            if settings.starttls:
                server.starttls(context=ssl.create_default_context())
                server.ehlo()
            if settings.user:
                server.login(settings.user, settings.password or "")
            refused = server.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise AlertDeliveryError(
            f"SMTP server {where} refused the login of {settings.user!r} ({exc.smtp_code}); "
            "check MARKETLAKE_SMTP_USER / MARKETLAKE_SMTP_PASSWORD",
            server=where,
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertDeliveryError(
            f"SMTP server {where} refused every recipient: {', '.join(sorted(exc.recipients))}",
            server=where,
        ) from None
    except smtplib.SMTPException as exc:
        raise AlertDeliveryError(
            f"SMTP server {where} failed: {type(exc).__name__} ({exc})", server=where
        ) from None
    except OSError as exc:
        raise AlertDeliveryError(
            f"cannot reach SMTP server {where}: {exc.strerror or exc}", server=where
        ) from None
    return len(settings.to) - len(refused)
