"""In-process scheduling of the collection jobs, and the equivalent crontab lines.

Three jobs, all in UTC:

* ``update`` – every day at ``at`` (default 02:00, after the US close and vendor settlement):
  ``marketlake update``;
* ``gaps`` – weekly on ``weekday`` (default Sunday) one hour after ``at``: backfill the sessions
  missing in the last ``gap_weeks`` weeks;
* ``complete`` – monthly on ``monthday`` (default the 1st) two hours after ``at``: mark finished
  months complete.

:func:`next_run` is a pure function of the current instant; :func:`run_schedule` is a plain loop
over it (sleeping in short steps, so a suspended machine or a clock change is noticed). No
scheduler library is needed for three fixed jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from marketlake.errors import ConfigError

__all__ = [
    "JOBS",
    "ScheduleConfig",
    "cron_lines",
    "next_run",
    "parse_at",
    "run_schedule",
]

log = logging.getLogger("marketlake.schedule")

JOBS = ("update", "gaps", "complete")
"""Job names, in the order they run when due at the same instant."""

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_OFFSETS = {
    "update": dt.timedelta(0),
    "gaps": dt.timedelta(hours=1),
    "complete": dt.timedelta(hours=2),
}


@dataclass(frozen=True)
class ScheduleConfig:
    """When the jobs run (UTC).

    Parameters
    ----------
    at:
        Time of the daily update (``gaps`` runs an hour later, ``complete`` two hours later).
    weekday:
        Day of the weekly gap backfill, 0 = Monday … 6 = Sunday.
    monthday:
        Day of month (1-28) of the completion job.
    """

    at: dt.time = dt.time(2, 0)
    weekday: int = 6
    monthday: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ConfigError(f"weekday must be 0 (Monday) to 6 (Sunday), got {self.weekday}")
        if not 1 <= self.monthday <= 28:
            raise ConfigError(f"monthday must be 1 to 28 (every month has it), got {self.monthday}")

    def due_on(self, job: str, day: dt.date) -> bool:
        """True when ``job`` runs on calendar day ``day`` (before its offset is applied)."""
        if job == "update":
            return True
        if job == "gaps":
            return day.weekday() == self.weekday
        if job == "complete":
            return day.day == self.monthday
        raise ConfigError(f"unknown job {job!r}; jobs: {', '.join(JOBS)}")


def parse_at(text: str) -> dt.time:
    """Parse ``"HH:MM"`` (UTC) into a time; ConfigError naming the value otherwise."""
    try:
        hours, minutes = text.strip().split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError:
        raise ConfigError(f"--at {text!r} is not a time; use HH:MM (UTC), e.g. 02:00") from None


def next_run(
    now: dt.datetime, config: ScheduleConfig | None = None
) -> tuple[dt.datetime, tuple[str, ...]]:
    """Return the next instant strictly after ``now`` at which jobs are due, and those jobs.

    Parameters
    ----------
    now:
        A time-zone aware instant.
    config:
        The schedule (default :class:`ScheduleConfig`).

    Returns
    -------
    tuple[datetime, tuple[str, ...]]
        The UTC instant and the job names due then, in :data:`JOBS` order.
    """
    cfg = config or ScheduleConfig()
    if now.tzinfo is None:
        raise ConfigError(f"now={now.isoformat()} has no time zone; pass an aware datetime")
    now_utc = now.astimezone(dt.UTC)
    best: dt.datetime | None = None
    due: list[str] = []
    for job in JOBS:
        day = now_utc.date() - dt.timedelta(days=1)
        for _ in range(40):  # a monthly job is due within 31 days
            if cfg.due_on(job, day):
                when = dt.datetime.combine(day, cfg.at, dt.UTC) + _OFFSETS[job]
                if when > now_utc:
                    if best is None or when < best:
                        best, due = when, [job]
                    elif when == best:
                        due.append(job)
                    break
            day += dt.timedelta(days=1)
    assert best is not None
    return best, tuple(due)


def run_schedule(
    jobs: Mapping[str, Callable[[], object]],
    config: ScheduleConfig | None = None,
    *,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    max_rounds: int | None = None,
    step: float = 60.0,
) -> int:
    """Run ``jobs`` at their times until ``stop`` is set (or ``max_rounds`` rounds ran).

    A failing job is logged and does not stop the loop; the next round runs as planned.

    Parameters
    ----------
    jobs:
        Callables by job name (names from :data:`JOBS`; a missing name is skipped).
    config:
        The schedule.
    clock, sleep:
        Time source and sleep function (tests pass fakes).
    stop:
        Set it to end the loop.
    max_rounds:
        End after this many rounds of due jobs (None: run forever).
    step:
        Longest single sleep, in seconds.

    Returns
    -------
    int
        Rounds run.
    """
    cfg = config or ScheduleConfig()
    rounds = 0
    while (max_rounds is None or rounds < max_rounds) and not (stop and stop.is_set()):
        when, names = next_run(clock(), cfg)
        log.info("next run at %s: %s", when.isoformat(), ", ".join(names))
        while True:
            left = (when - clock()).total_seconds()
            if left <= 0 or (stop and stop.is_set()):
                break
            sleep(min(left, step))
        if stop and stop.is_set():
            break
        for name in names:
            job = jobs.get(name)
            if job is None:
                continue
            log.info("job %s: starting", name)
            try:
                job()
            except Exception as exc:  # one failed job must not stop the scheduler
                log.error("job %s failed: %s", name, exc)
            else:
                log.info("job %s: done", name)
        rounds += 1
    return rounds


def cron_lines(
    config: ScheduleConfig | None = None,
    *,
    command: str = "marketlake",
    lake: str = "./lake",
    gap_weeks: int = 4,
    extra: str = "",
) -> list[str]:
    """Return crontab lines running the three jobs at the configured UTC times.

    Parameters
    ----------
    config:
        The schedule.
    command:
        The ``marketlake`` executable.
    lake:
        The lake URL passed with ``--lake``.
    gap_weeks:
        Weeks checked by the weekly gap backfill.
    extra:
        Extra options for ``update`` (e.g. ``--source yahoo``).

    Returns
    -------
    list[str]
        ``CRON_TZ=UTC`` then one line per job.
    """
    cfg = config or ScheduleConfig()
    base = dt.datetime.combine(dt.date(2000, 1, 3), cfg.at)  # any Monday

    def hm(job: str) -> tuple[int, int, int]:
        t = base + _OFFSETS[job]
        return t.minute, t.hour, (t.date() - base.date()).days

    lake_opt = f"--lake {lake}"
    m, h, _ = hm("update")
    lines = [
        "# marketlake collection jobs (times in UTC)",
        "CRON_TZ=UTC",
        f"{m} {h} * * * {command} update {lake_opt}{' ' + extra if extra else ''}",
    ]
    m, h, shift = hm("gaps")
    weekday_cron = (cfg.weekday + 1 + shift) % 7  # cron: 0 = Sunday
    lines.append(
        f"{m} {h} * * {weekday_cron} {command} backfill --gaps --weeks {gap_weeks} {lake_opt}"
    )
    m, h, shift = hm("complete")
    lines.append(
        f"{m} {h} {cfg.monthday + shift} * * {command} complete-months {lake_opt} && "
        f"{command} compact {lake_opt}"
    )
    return lines
