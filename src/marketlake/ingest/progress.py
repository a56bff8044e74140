"""Pluggable progress reporting (dlt-style collectors): Rich bar, log lines, or nothing."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

log = logging.getLogger("marketlake.ingest")


class Progress(Protocol):
    """Receives progress of a long job. Implementations must be cheap: called per item."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1, *, failed: int = 0) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Reports nothing (tests, library use)."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


class LogProgress:
    """Structured log lines at most every ``interval`` seconds (non-terminal runs, schedulers)."""

    def __init__(self, interval: float = 5.0, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.logger = logger
        self.total = self.done = self.failed = 0
        self._last = 0.0
        self._t0 = 0.0
        self.description = ""

    def start(self, total: int, description: str) -> None:
        self.total, self.description = total, description
        self._t0 = self._last = time.monotonic()
        self.logger.info("%s: started, %d items", description, total)

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        self.logger.info(
            "%s: %d/%d items done, %d failed, %.1f s elapsed",
            self.description,
            self.done,
            self.total,
            self.failed,
            now - self._t0,
        )

    def finish(self) -> None:
        self._emit(time.monotonic())


class RichProgress:
    """A Rich progress bar on a terminal (stderr)."""

    def __init__(self, console: Any | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: Any = None
        self._failed = 0

    def start(self, total: int, description: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, failed=0)

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        self._failed += failed
        self._progress.update(self._task, advance=n, failed=self._failed)

    def finish(self) -> None:
        self._progress.stop()
