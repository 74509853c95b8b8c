"""What `fill` prints: progress on stderr, one summary line per date."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from . import families, rules
from .engines.local import Progress
from .fill import DateReport
from .redact import scrub
from .sources import PingFile


def summary_line(report: DateReport) -> str:
    """One line per date: its status, rows and every counter. A family other than legacy is
    named after the status (`2025-06-02 ok (glean): ...`); legacy lines are as they were."""
    day = report.submission_date.isoformat()
    named = "" if report.family == families.DEFAULT else f" ({report.family})"
    if report.status == "failed":
        return f"{day} FAILED{named}: {' '.join(scrub(str(report.error)).split())}"
    if report.status == "skipped":
        return (f"{day} skipped{named}: its last run completed on the same input "
                "(--skip-existing)")
    counters = families.family(report.family).COUNTERS
    counts = " ".join(f"{name}={report.counters.get(name, 0)}" for name in counters)
    undated = f" undated(run)={report.undated}" if report.undated else ""
    corrupt = report.counters.get(rules.CORRUPT_FILES, 0)
    skipped = f" corrupt_files={corrupt} (skipped)" if corrupt else ""
    return (f"{day} ok{named}: {report.rows} rows in {report.seconds:.1f}s; "
            f"{counts}{undated}{skipped}")


class ConsoleReporter:
    """A progress bar on a terminal, a plain line every `every` seconds otherwise."""

    def __init__(self, stream: TextIO | None = None, out: TextIO | None = None,
                 every: float = 10.0) -> None:
        self.stream = stream or sys.stderr  # progress
        self.out = out or sys.stdout  # one summary line per date
        self.every = every
        self.tty = self.stream.isatty()
        self.total_dates = 0
        self.done_dates = 0
        self.started = time.monotonic()
        self.lines = 0

    def plan(self, dates: int) -> None:
        self.total_dates = dates
        self.started = time.monotonic()

    def reading(self, what: str, files: list[PingFile]) -> Progress:
        total = sum(f.size for f in files) or 1
        started = time.monotonic()
        state = {"bytes": 0, "lines": 0, "last": started}
        if not self.tty:
            self._say(f"{what}: reading {len(files)} file{'' if len(files) == 1 else 's'} "
                      f"({total / 1e6:.1f} MB)")

        def update(bytes_read: int, lines: int) -> None:
            self.lines += lines
            state["bytes"] += bytes_read
            state["lines"] += lines
            now = time.monotonic()
            if now - state["last"] < (0.2 if self.tty else self.every):
                return
            state["last"] = now
            done = min(1.0, state["bytes"] / total)
            rate = state["lines"] / max(now - started, 1e-9)
            text = f"{what}: {done:6.1%} {int(state['lines']):,} lines, {rate:,.0f} lines/s"
            if self.tty:
                bar = "#" * int(done * 30)
                self.stream.write(f"\r[{bar:<30}] {text}")
                self.stream.flush()
            else:
                self._say(text)

        return Progress(update)

    def date_done(self, report: DateReport) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.out.write(summary_line(report) + "\n")
        self.out.flush()
        for note in report.notes:
            self._say(f"{report.submission_date} skipped a corrupt file: {scrub(note)}")
        self.done_dates += 1
        if self.total_dates > 1:
            self._say(self.overall())

    def overall(self) -> str:
        """Dates done, pings a second, and the time left at that pace."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        left = elapsed / self.done_dates * (self.total_dates - self.done_dates)
        return (f"[{self.done_dates}/{self.total_dates} dates] {self.lines / elapsed:,.0f} "
                f"lines/s, about {_duration(left)} left")

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


class JsonReporter:
    """--log-format json: one JSON object per date on stdout, for schedulers; no progress."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def plan(self, dates: int) -> None:
        pass

    def reading(self, what: str, files: list[PingFile]) -> Progress:
        return Progress()

    def date_done(self, report: DateReport) -> None:
        record = {"submission_date": report.submission_date.isoformat(),
                  "family": report.family, "status": report.status, "rows": report.rows,
                  "seconds": round(report.seconds, 3), "counters": report.counters,
                  "undated": report.undated,
                  "error": None if report.error is None else scrub(report.error),
                  "notes": [scrub(note) for note in report.notes]}
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
