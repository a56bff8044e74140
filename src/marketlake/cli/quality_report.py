"""Monitoring commands: ``report coverage`` and ``alerts check``. Registered on the main app by
:mod:`marketlake.cli.main`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from marketlake.cli.main import DEFAULT_LAKE, LakeOpt, _run, app, err, out

report_app = typer.Typer(help="Reports on the lake's data.", no_args_is_help=True)
app.add_typer(report_app, name="report")
alerts_app = typer.Typer(
    help="Alerts on failed runs, stale data and data-quality errors.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        help="Judge freshness at this instant (ISO 8601, UTC when no offset is given; default: "
        "the current time). Makes a report reproducible.",
    ),
]


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _instant(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2024-06-17T22:00:00Z", param_hint="--now"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


@report_app.command("coverage")
def report_coverage(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for coverage.html, .md, CSV files.")
    ],
    lake: LakeOpt = DEFAULT_LAKE,
    datasets: Annotated[
        str | None, typer.Option(help="Comma-separated datasets (default: all).")
    ] = None,
    tickers: Annotated[
        str | None, typer.Option("--tickers", "-t", help="Comma-separated tickers (default: all).")
    ] = None,
    exact: Annotated[
        bool,
        typer.Option(
            help="Read every session date (default: complete partitions from row counts)."
        ),
    ] = False,
    now: NowOpt = None,
) -> None:
    """Write the coverage report: coverage by dataset x source x year, per-ticker gaps, the
    largest holes, freshness, violations by rule over time, storage, plots, known limitations.
    The HTML page is self-contained (inline CSS and SVG, no scripts, no external URLs)."""

    def go() -> None:
        import marketlake
        from marketlake.quality.report import write_coverage_report

        with marketlake.open(lake, create=False) as lk:
            files = write_coverage_report(
                lk,
                output,
                now=_instant(now),
                datasets=_split(datasets) or None,
                tickers=_split(tickers) or None,
                exact=exact,
            )
        out.print(f"wrote {files.html} and {files.markdown} ({len(files.files)} files)")

    _run(go)


@alerts_app.command("check")
def alerts_check(
    lake: LakeOpt = DEFAULT_LAKE,
    webhook: Annotated[
        str | None,
        typer.Option(
            "--webhook",
            envvar="MARKETLAKE_ALERT_WEBHOOK",
            help="POST the alerts as JSON to this URL (env MARKETLAKE_ALERT_WEBHOOK).",
            show_envvar=False,
        ),
    ] = None,
    email: Annotated[
        str | None,
        typer.Option(
            "--email",
            envvar="MARKETLAKE_ALERT_EMAIL_TO",
            help="Email the alerts to these comma-separated addresses over SMTP "
            "(MARKETLAKE_SMTP_HOST, _PORT, _FROM, _STARTTLS, _SSL, _USER, _PASSWORD; env "
            "MARKETLAKE_ALERT_EMAIL_TO).",
            show_envvar=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the alerts; send nothing.")
    ] = False,
    now: NowOpt = None,
) -> None:
    """Check for a failed last run, data older than 48 h after its expected session (active
    monitored assets) and open error-severity violations; send them to a webhook and/or by
    email. Exit 0 when the check ran (alerts or not), 1 when a delivery failed."""

    def go() -> None:
        import marketlake
        from marketlake.errors import MarketlakeError
        from marketlake.quality.alerts import (
            SmtpSettings,
            collect_alerts,
            send_email,
            send_webhook,
        )

        instant = _instant(now) or dt.datetime.now(dt.UTC)
        with marketlake.open(lake, create=False) as lk:
            alerts = collect_alerts(lk, instant)
            url = lk.url
        if not alerts:
            out.print("no alerts")
            return
        for a in alerts:
            colour = "red" if a.severity == "error" else "yellow"
            out.print(f"[{colour}]{a.severity}[/{colour}] {a.title}", highlight=False)
            out.print(a.body, highlight=False, markup=False)
        if dry_run:
            out.print(f"dry run: {len(alerts)} alert(s) not sent")
            return
        if not webhook and not email:
            err.print(
                "no destination: pass --webhook URL and/or --email ADDRESS (or set "
                "MARKETLAKE_ALERT_WEBHOOK / MARKETLAKE_ALERT_EMAIL_TO); nothing sent"
            )
            return
        failures: list[str] = []
        if webhook:
            try:
                status = send_webhook(webhook, alerts, lake=url, now=instant)
                out.print(f"sent {len(alerts)} alert(s) to the webhook (HTTP {status})")
            except MarketlakeError as exc:
                failures.append(str(exc))
        if email:
            try:
                settings = SmtpSettings.from_env(to=email)
                n = send_email(settings, alerts, lake=url, now=instant)
                out.print(f"emailed {len(alerts)} alert(s) to {n} recipient(s)")
            except MarketlakeError as exc:
                failures.append(str(exc))
        if failures:
            raise MarketlakeError("; ".join(failures))

    _run(go)
