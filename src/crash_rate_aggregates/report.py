"""What `fill` prints: progress on stderr, one summary line per date."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from . import rules
from .engines.local import Progress
from .fill import DateReport
from .sources import PingFile


def summary_line(report: DateReport) -> str:
    """One line per date: its status, rows and every counter."""
    day = report.submission_date.isoformat()
    if report.status == "failed":
        return f"{day} FAILED: {report.error}"
    counts = " ".join(f"{name}={report.counters.get(name, 0)}" for name in rules.COUNTERS)
    undated = f" undated(run)={report.undated}" if report.undated else ""
    return f"{day} ok: {report.rows} rows in {report.seconds:.1f}s; {counts}{undated}"


class ConsoleReporter:
    """A progress bar on a terminal, a plain line every `every` seconds otherwise."""

    def __init__(self, stream: TextIO | None = None, out: TextIO | None = None,
                 every: float = 10.0) -> None:
        self.stream = stream or sys.stderr  # progress
        self.out = out or sys.stdout  # one summary line per date
        self.every = every
        self.tty = self.stream.isatty()

    def reading(self, what: str, files: list[PingFile]) -> Progress:
        total = sum(f.size for f in files) or 1
        started = time.monotonic()
        state = {"bytes": 0, "lines": 0, "last": started}
        if not self.tty:
            self._say(f"{what}: reading {len(files)} files ({total / 1e6:.1f} MB)")

        def update(bytes_read: int, lines: int) -> None:
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

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
