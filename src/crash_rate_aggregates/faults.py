"""Named fault points, so that tests hit a failure window deterministically.

A test that must prove "a kill between these two steps leaves the store old or new" cannot rely
on a random kill landing in a window a few microseconds wide. Instead the code calls
`fault_point("parquet.after_exchange")` at each such window, and a test arms one of them by
environment variable, for a whole child process:

    CRASH_AGGREGATES_FAULT_POINT=parquet.after_exchange
    CRASH_AGGREGATES_FAULT_ACTION=kill        # kill (SIGKILL), term (SIGTERM), int (SIGINT),
                                              # raise (an OSError, as a failed syscall), or
                                              # pause (see below)
    CRASH_AGGREGATES_FAULT_AFTER=0            # how many passes to let through first

`pause` holds the process in the window for as long as a test needs, without sleeping: it
writes `fault point NAME paused` to stderr, then waits for a line on stdin (or its end). A test
starts the job with stdin a pipe, reads stderr up to that line, does what it must while the job
stands in the window (read the store, run another job, send a signal), then writes a line or
closes stdin to let it go on.

Unarmed (the variable unset, as in every real run) a fault point is one dictionary lookup.
The names in use are listed in `POINTS`, and docs/reliability.md says which test arms each.
"""

from __future__ import annotations

import os
import signal
import sys

#: Every fault point the code defines, with the window it marks.
POINTS: dict[str, str] = {}

_passes: dict[str, int] = {}


def define(name: str, window: str) -> str:
    """Declare a fault point (at import time of the module that uses it); returns its name."""
    POINTS[name] = window
    return name


def fault_point(name: str) -> None:
    """Fail here, as armed, when this is the armed point; otherwise do nothing."""
    armed = os.environ.get("CRASH_AGGREGATES_FAULT_POINT")
    if armed is None or armed != name:
        return
    passes = _passes.get(name, 0)
    _passes[name] = passes + 1
    if passes < int(os.environ.get("CRASH_AGGREGATES_FAULT_AFTER", "0")):
        return
    action = os.environ.get("CRASH_AGGREGATES_FAULT_ACTION", "kill")
    if action == "raise":
        raise OSError(f"fault point {name} armed")
    if action == "pause":
        print(f"fault point {name} paused", file=sys.stderr, flush=True)
        sys.stdin.readline()
        return
    sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}[action]
    os.kill(os.getpid(), sig)
