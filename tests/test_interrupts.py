"""SIGTERM ends `fill` with status 130 (README "Settings and backfills") in every window: before
the job is imported, while workers start, while the pool stops, during the store write, and
when a second SIGTERM comes while the job stops. Each window is a fault point
(`crash_rate_aggregates.faults`) armed in a child process: no sleeps, no timing luck.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import main_ping, write_ping_file

DAY = "2016-03-14"
FOLDER = f"submission_date={DAY}"
INTERRUPTED = "interrupted: 0 dates written; the date in progress was not written"
# The command, with a second fault point armed (TWICE_AT) that sends one more SIGTERM: for a
# second signal while the job stops. faults.py arms one point a process; this adds another.
TWICE = """
import os, runpy, signal
from crash_rate_aggregates import faults
armed, second = faults.fault_point, os.environ["TWICE_AT"]
def fault_point(name):
    if name == second:
        os.kill(os.getpid(), signal.SIGTERM)
    armed(name)
faults.fault_point = fault_point
runpy.run_module("crash_rate_aggregates", run_name="__main__", alter_sys=True)
"""


def session_members(leader: int) -> list[int]:
    """The processes of the session `leader` started (orphaned workers included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == leader:
                    found.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return found


def fill(store: Path, db: Path, point: str, *, workers: int = 2, twice_at: str | None = None,
         extra: tuple[str, ...] = (), grace: float = 0.0) -> subprocess.CompletedProcess[str]:
    """`fill` in a session of its own with `point` armed to send SIGTERM; nothing of it may
    outlive it by more than `grace` seconds (a worker left behind fails the test)."""
    start = [sys.executable, "-c", TWICE] if twice_at else [sys.executable, "-m",
                                                             "crash_rate_aggregates"]
    env = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": point,
           "CRASH_AGGREGATES_FAULT_ACTION": "term", **({"TWICE_AT": twice_at} if twice_at else {})}
    command = [*start, "fill", "--input", str(store), "--from", DAY, "--to", DAY,
               "--db", f"sqlite:///{db}", "--workers", str(workers), *extra]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, env=env) as job:
        try:
            out, err = job.communicate(timeout=90)  # a hang at exit was one of the bugs
        finally:
            deadline = time.monotonic() + grace
            while (left := session_members(job.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if left:
                os.killpg(job.pid, signal.SIGKILL)
                job.communicate(timeout=30)
    assert not left, f"processes left behind: {left}"
    return subprocess.CompletedProcess(command, job.returncode, out, err)


def assert_interrupted(done: subprocess.CompletedProcess[str]) -> None:
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (130, INTERRUPTED), \
        done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "pings"
    for part in range(4):
        write_ping_file(root / FOLDER / f"part-{part}.json",
                        [main_ping(f"doc-{part}-{n}", f"client-{n % 7}") for n in range(200)])
    return root


def test_sigterm_before_the_job_is_imported(store: Path, tmp_path: Path) -> None:
    # The handler came only once the settings were read and the job imported: a SIGTERM
    # before that killed the process (status -15).
    assert_interrupted(fill(store, tmp_path / "db.sqlite", "cli.fill_starts"))


def test_sigterm_while_the_options_are_parsed(store: Path, tmp_path: Path) -> None:
    # Earlier still: main() has started, click has not yet parsed the options nor called fill.
    # That SIGTERM used to kill the process (status -15).
    assert_interrupted(fill(store, tmp_path / "db.sqlite", "cli.main"))


def test_sigterm_while_workers_start_with_many_files(tmp_path: Path) -> None:
    # More queued tasks than a pipe holds: stopped while starting its workers, the job used to
    # hang at exit, waiting for the task queue's thread to flush into a pipe nobody read.
    root = tmp_path / "many"
    for part in range(1500):
        write_ping_file(root / FOLDER / f"part-{part:04d}-{'x' * 80}.json",
                        [main_ping(f"doc-{part}")])
    assert_interrupted(fill(root, tmp_path / "db.sqlite", "local.worker_started"))


def test_sigterm_while_the_pool_stops(store: Path, tmp_path: Path) -> None:
    # armed at every worker stopped: a first SIGTERM once the files are read, more after it
    assert_interrupted(fill(store, tmp_path / "db.sqlite", "local.pool_stopping", workers=3))


def test_sigterm_during_the_store_write_keeps_the_previous_rows(store: Path,
                                                                tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    first = fill(store, db, "none")
    assert first.returncode == 0, first.stderr
    before = _rows(db)
    write_ping_file(store / FOLDER / "part-9.json", [main_ping("late", channel="beta")])
    assert_interrupted(fill(store, db, "sqlite.before_commit"))
    assert _rows(db) == before


@pytest.mark.parametrize(("first", "second"), [
    ("local.worker_started", "local.pool_stopping"),  # while the workers stop
    ("sqlite.before_commit", "cli.interrupted_exit"),  # as the command says it was stopped
])
def test_a_second_sigterm_while_stopping(store: Path, tmp_path: Path, first: str,
                                         second: str) -> None:
    # The first SIGTERM stops the job; the next ones are ignored: they neither cut the clean
    # stop short nor, once the handler was put back, kill the process with status -15.
    assert_interrupted(fill(store, tmp_path / "db.sqlite", first, twice_at=second))


#: The command, reporting how SIGTERM and SIGINT are handled once it says it was stopped.
DISPOSITION = """
import runpy, signal, sys
from crash_rate_aggregates import faults
armed = faults.fault_point
def fault_point(name):
    if name == "cli.interrupted_exit":
        print("dispositions:", signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
              signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
              file=sys.stderr)
    armed(name)
faults.fault_point = fault_point
runpy.run_module("crash_rate_aggregates", run_name="__main__", alter_sys=True)
"""


def test_signals_are_ignored_through_the_interpreters_finalization(store: Path,
                                                                   tmp_path: Path) -> None:
    # CPython resets every Python-level signal handler to the default action as it finalizes:
    # a second SIGTERM there killed the job with -15 after it printed `interrupted:` (4 of 6
    # runs with two SIGTERMs 30-80 ms apart). Only an ignored disposition survives that, so
    # the command sets it before it exits.
    command = [sys.executable, "-c", DISPOSITION, "fill", "--input", str(store), "--from", DAY,
               "--to", DAY, "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--workers", "1"]
    env = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": "sqlite.before_commit",
           "CRASH_AGGREGATES_FAULT_ACTION": "term"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "dispositions: True True" in done.stderr, done.stderr


def test_sigterm_to_a_worker_before_its_handlers_prints_no_traceback(store: Path,
                                                                     tmp_path: Path) -> None:
    # Forked with the command's handler, a worker took a SIGTERM sent before it set its own as
    # a KeyboardInterrupt, with a traceback. Now the signal waits (blocked across the fork) and
    # ends the worker quietly; only the workers were signalled, so the date fails, saying why.
    done = fill(store, tmp_path / "db.sqlite", "local.worker_begins")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "a worker process died (exit code -15)" in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]


def _rows(db: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT * FROM crash_aggregates ORDER BY activity_date, dimensions").fetchall()


# A module run with `python -m`, as the tests and docs run the job: an interrupt that left a
# string exec (here by hand; in the job, a dataclass being defined when the SIGTERM came),
# caught, then the command's own way out.
EXEC_INTERRUPTED = """
from crash_rate_aggregates import cli
try:
    exec("raise KeyboardInterrupt")
except KeyboardInterrupt:
    cli._exit_interrupted([])
"""


def test_an_interrupt_that_left_a_string_exec_still_exits_130(tmp_path: Path) -> None:
    # CPython flags a KeyboardInterrupt that ends a string exec, caught or not, and under `-m`
    # ends the process by SIGINT (-2) after its SystemExit: 2 of 450 SIGTERMed fills did.
    (tmp_path / "exec_interrupted.py").write_text(EXEC_INTERRUPTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "exec_interrupted"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert (done.returncode, done.stderr.strip()) == (130, INTERRUPTED), done.stderr[-2000:]


def test_an_interrupt_inside_a_held_section_comes_at_its_end() -> None:
    # the command's handlers call hold(): inside a section it notes the interrupt, which the
    # outermost section's end raises (a KeyboardInterrupt inside DataSketches' module init
    # aborted fill with status -6)
    from crash_rate_aggregates import interrupts

    assert interrupts.hold() is False  # no section: the handler raises at once
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            with interrupts.held():
                assert interrupts.hold() is True
                done.append("inner")
            done.append("outer")  # the inner section's end does not raise
    assert done == ["inner", "outer"]
    with interrupts.held():  # the interrupt was raised once: the next section is quiet
        pass


@pytest.mark.parametrize("action", ["term", "int"])
def test_an_interrupt_while_datasketches_is_imported_stops_cleanly(
        store: Path, tmp_path: Path, action: str) -> None:
    env = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": "sketches.import",
           "CRASH_AGGREGATES_FAULT_ACTION": action}
    done = subprocess.run(
        [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(store),
         "--from", DAY, "--to", DAY, "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
         "--workers", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert_interrupted(done)
