"""Faults against the real PostgreSQL server and the local filesystem: a job killed (SIGKILL)
or stopped (SIGTERM) at random points, the database connection lost mid-COPY, and a disk that
fills up while Parquet is written. Nothing is mocked: every job is `python -m
crash_rate_aggregates fill` in its own process.

Each version of the input carries its own channel value, so a date's rows say which run wrote
them: "previous" and "new" are told apart, and a mix (or a partial load) shows up as two
channels or a wrong row count.

Every window of a date's write that a kill could land in (mid-COPY, before the database
commits, between the database commit and the Parquet swap, after the exchange) is also hit
deterministically: the code marks it with a fault point (src/crash_rate_aggregates/faults.py)
and a test arms it in the job's environment, to kill the job there or to hold it there
(`pause`) while the test looks at the stores or starts another job. The random trials are kept
as extra coverage; no assertion depends on where a random kill lands.

`NO_EXCHANGE` is the same command on a system without the atomic exchange of folders (the
fallback of two renames), to prove that path too.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import zstandard

from conftest import main_ping

pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

# Dates no other test uses: the store's advisory locks are per database, not per schema.
DAYS = [date(2011, 7, 1) + timedelta(days=n) for n in range(4)]
SUFFIXES = ["json", "json.gz", "json.zst", "jsonl"]
PINGS = 3000  # a date: distinct aggregates (one os_version each), so COPY takes a while
TRIALS = 50
NO_EXCHANGE = """
import runpy
from crash_rate_aggregates.stores import parquet
parquet._renameat2 = None  # as on a system without renameat2: two renames
runpy.run_module("crash_rate_aggregates", run_name="__main__", alter_sys=True)
"""


# -- pings -------------------------------------------------------------------------------------


def ping_file(day: date, count: int, channel: str, number: int = 0) -> bytes:
    """`count` main pings of `day`, each its own aggregate (os_version 10.0.<n>)."""
    template = orjson.dumps(main_ping("ID", "CLIENT", day.isoformat(), day.strftime("%Y%m%d"),
                                      channel="CHANNEL")).decode()
    template = template.replace("{", "{{").replace("}", "}}")
    template = template.replace('"version":"10.0"', '"version":"10.0.{0}"')
    assert template.count("{0}") == 1, "main_ping's os version changed: fix this template"
    template = template.replace('"ID"', f'"{day}-{number}-{{0}}"').replace(
        '"CLIENT"', '"client-{1}"').replace('"CHANNEL"', json.dumps(channel))
    return "".join(template.format(n, n % 97) + "\n" for n in range(count)).encode()


def write_store(root: Path, channel: str, days: list[date] = DAYS, count: int = PINGS,
                files: int = 1) -> None:
    """A partitioned store: plain, .gz and .zst files, the same names every time."""
    for index, day in enumerate(days):
        for number in range(files):
            data = ping_file(day, count, channel, number)
            suffix = SUFFIXES[index % len(SUFFIXES)]
            if suffix.endswith(".gz"):
                data = gzip.compress(data, compresslevel=1)
            elif suffix.endswith(".zst"):
                data = zstandard.ZstdCompressor(level=1).compress(data)
            path = root / f"submission_date={day}" / f"part-{number}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def fill_command(store: Path, days: list[date], *outputs: str, exchange: bool = True,
                 workers: int = 1) -> list[str]:
    start = [sys.executable, "-m", "crash_rate_aggregates"] if exchange else \
        [sys.executable, "-c", NO_EXCHANGE]
    return [*start, "fill", "--input", str(store), "--from", days[0].isoformat(),
            "--to", days[-1].isoformat(), "--workers", str(workers), *outputs]


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@contextmanager
def started(command: list[str], **env: str) -> Iterator[subprocess.Popen[str]]:
    """A job in a session of its own; whatever is left of it is killed on the way out. Its
    stdin is a pipe, which a job held at a fault point (`pause`) waits on."""
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={**os.environ, **env}) as job:
        try:
            yield job
        finally:
            if session_members(job.pid):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
            for pipe in (job.stdin, job.stdout, job.stderr):  # orphaned workers may hold them
                if pipe is not None:
                    try:
                        pipe.close()
                    except BrokenPipeError:
                        pass


def armed(point: str, action: str = "kill", after: int = 0) -> dict[str, str]:
    """The environment that arms one fault point of faults.py in a job."""
    return {"CRASH_AGGREGATES_FAULT_POINT": point, "CRASH_AGGREGATES_FAULT_ACTION": action,
            "CRASH_AGGREGATES_FAULT_AFTER": str(after)}


def wait_for_pause(job: subprocess.Popen[str], point: str) -> None:
    """Read the job's stderr up to its pause at the fault point (armed with `pause`)."""
    assert job.stderr is not None
    for line in job.stderr:
        if line == f"fault point {point} paused\n":
            return
    pytest.fail(f"the job ended without reaching {point}")


def session_members(leader: int) -> list[int]:
    """The processes of the session `leader` started (orphans included)."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == leader:
                    alive.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return alive


# -- what readers find -------------------------------------------------------------------------


def pg_versions(connection: psycopg.Connection[Any], count: int = PINGS
                ) -> dict[date, str]:
    """Each date's one version (its channel) in PostgreSQL; a mix or a partial load fails."""
    found = {}
    for day, channels, rows, distinct, pings in connection.execute(
            "SELECT submission_date, array_agg(DISTINCT dimensions->>'channel'), count(*), "
            "count(DISTINCT dimensions), sum((stats->>'ping_count')::float) "
            "FROM crash_aggregates GROUP BY 1 ORDER BY 1").fetchall():
        assert len(channels) == 1, f"{day}: rows of several runs: {channels}"
        assert (rows, distinct, pings) == (count, count, count), f"{day}: partial load"
        found[day] = channels[0]
    return found


def completed_runs(connection: psycopg.Connection[Any]) -> Counter[date]:
    return Counter(dict(connection.execute(
        "SELECT submission_date, count(*) FROM crash_aggregates_runs "
        "WHERE status = 'completed' GROUP BY 1").fetchall()))


def wait_for_dead_transactions(connection: psycopg.Connection[Any]) -> None:
    """A killed job's server backend may still hold its transaction (even a COMMIT in flight):
    wait until no other backend holds a lock on this schema's tables."""
    deadline = time.monotonic() + 30
    while connection.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.backend_type = 'client backend' AND l.pid <> pg_backend_pid() AND "
            "l.relation IN ('crash_aggregates'::regclass, 'crash_aggregates_runs'::regclass)"
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "a killed job's transaction never ended"
        time.sleep(0.02)


def partition(out: Path, day: date) -> Path:
    return out / "crash_aggregates" / "v1" / f"submission_date={day}"


def staging(out: Path) -> list[str]:
    folder = out / "crash_aggregates" / "_staging"
    return sorted(os.listdir(folder)) if folder.exists() else []


def parquet_as_listed(out: Path, day: date, count: int = PINGS) -> str | None:
    """What a reader listing the partition folder finds, before anything repairs it: the one
    version (channel) there, or None when the folder is missing."""
    folder = partition(out, day)
    if not folder.exists():
        return None
    names = sorted(os.listdir(folder))
    assert len(names) == 2 and names[0] == "_SUCCESS", f"{day}: {names}"
    assert names[1].startswith("part-") and names[1].endswith(".parquet"), names
    marker = json.loads((folder / "_SUCCESS").read_bytes())
    assert marker["files"] == [names[1]] and marker["rows"] == count
    table = pq.read_table(folder / names[1])
    channels = {dict(d)["channel"] for d in table.column("dimensions").to_pylist()}
    assert len(channels) == 1, f"{day}: a partition of several runs: {channels}"
    assert table.num_rows == count, f"{day}: a partial partition"
    return channels.pop()


def parquet_versions(out: Path, count: int = PINGS) -> dict[str, str]:
    """Each date's version as ParquetStore reads it (opening it repairs interrupted swaps)."""
    from crash_rate_aggregates.stores.parquet import ParquetStore

    found: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for day, row in ParquetStore(str(out)).read_rows():
        found.setdefault(day, set()).add(row.dimensions["channel"])
        counts[day] += 1
    assert all(len(channels) == 1 for channels in found.values()), found
    assert all(n == count for n in counts.values()), counts
    return {day: channels.pop() for day, channels in found.items()}


def prefix_length(flags: list[bool]) -> int:
    """Dates are written in order: the rewritten ones must be the first k."""
    k = flags.index(False) if False in flags else len(flags)
    assert not any(flags[k:]), f"dates rewritten out of order: {flags}"
    return k


def require(condition: object, message: str = "") -> None:
    """A precondition of an expected failure: when it does not hold, the test fails outright
    (pytest.fail), instead of passing for an xfail (those expect an AssertionError)."""
    if not condition:
        pytest.fail(f"precondition not met: {message}")


@pytest.fixture
def pg(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        yield connection


@dataclass
class State:
    """What the stores hold after a job: each date's version (channel) in PostgreSQL and in
    Parquet, the completed runs per date, and how many dates the job rewrote in each."""

    pg: dict[date, str]
    parquet: dict[str, str]
    runs: Counter[date]
    k_pg: int = 0
    k_parquet: int = 0
    listed: dict[date, str | None] = field(default_factory=dict)
    staging_left: bool = False

    @property
    def parquet_behind(self) -> bool:
        return self.k_parquet < self.k_pg


def first_state(pg: psycopg.Connection[Any], out: Path, channel: str) -> State:
    state = State(pg_versions(pg), parquet_versions(out), completed_runs(pg))
    assert state.pg == dict.fromkeys(DAYS, channel)
    assert state.parquet == {day.isoformat(): channel for day in DAYS}
    return state


def check_old_or_new(pg: psycopg.Connection[Any], out: Path, before: State, channel: str,
                     where: str, partition_may_be_missing: bool = False) -> State:
    """After a job writing `channel` stopped, however it stopped: every date old or new in
    both stores, never a mix; the run records with their rows; dates rewritten in order, the
    database first and Parquet at most one date behind; a reader listing the Parquet folders
    finds every partition (unless the job ran without the exchange, which a reopen repairs)."""
    wait_for_dead_transactions(pg)
    now_pg = pg_versions(pg)
    assert set(now_pg) == set(DAYS)
    for day in DAYS:
        assert now_pg[day] in (before.pg[day], channel), f"{where}, {day}"
    rewritten = [now_pg[day] == channel != before.pg[day] for day in DAYS]
    k_pg = prefix_length(rewritten)
    now_runs = completed_runs(pg)
    assert [now_runs[d] - before.runs[d] for d in DAYS] == [int(flag) for flag in rewritten]

    # Parquet, as a reader listing the folders finds it, before any repair
    listed = {day: parquet_as_listed(out, day) for day in DAYS}
    if not partition_may_be_missing:
        assert None not in listed.values(), f"{where}: a partition missing: {listed}"
    staging_left = bool(staging(out))
    for day in DAYS:
        assert listed[day] in (None, before.parquet[day.isoformat()], channel)
    # ... and once opened, which clears leftovers and puts back a partition moved out
    now_parquet = parquet_versions(out)
    assert set(now_parquet) == {day.isoformat() for day in DAYS}
    assert staging(out) == []
    for day in DAYS:
        text = day.isoformat()
        if listed[day] is None:
            assert now_parquet[text] == before.parquet[text], f"{where}, {day}"
        else:
            assert now_parquet[text] == listed[day]
    k_parquet = prefix_length([now_parquet[d.isoformat()] == channel != before.parquet[
        d.isoformat()] for d in DAYS])
    # the database first, then Parquet: Parquet is at most one date behind
    assert k_pg - 1 <= k_parquet <= k_pg, (where, k_pg, k_parquet)
    return State(now_pg, now_parquet, now_runs, k_pg, k_parquet, listed, staging_left)


# -- a. kills at random points ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_fills_leave_each_date_old_or_new(tmp_path: Path, pg_url: str,
                                                  pg: psycopg.Connection[Any]) -> None:
    rng = random.Random(20110701)
    store, out = tmp_path / "pings", tmp_path / "parquet"
    outputs = ("--db", pg_url, "--parquet", str(out))
    write_store(store, "trial-000")
    began = time.monotonic()
    first = run(fill_command(store, DAYS, *outputs))
    assert first.returncode == 0, first.stderr
    warm = time.monotonic()  # the kills land within a run like the trials', schema made
    again = run(fill_command(store, DAYS, *outputs))
    duration = time.monotonic() - warm
    assert again.returncode == 0, again.stderr
    before = first_state(pg, out, "trial-000")

    seen: Counter[str] = Counter()
    for trial in range(1, TRIALS + 1):
        channel = f"trial-{trial:03d}"
        write_store(store, channel)
        kind = signal.SIGKILL if trial % 2 else signal.SIGTERM
        delay = rng.uniform(0.0, duration)
        with started(fill_command(store, DAYS, *outputs)) as job:
            time.sleep(delay)
            if job.poll() is None:
                job.send_signal(kind)
                seen[f"sent {kind.name}"] += 1
            else:
                seen["finished before the signal"] += 1
            _, err = job.communicate(timeout=600)  # generous: CI may share its 2 cores
        code = job.returncode
        if kind == signal.SIGKILL:
            assert code in (0, -signal.SIGKILL), err
        else:  # stopped between dates' writes, or before its handler was installed
            assert code in (0, 130, -signal.SIGTERM), err
            if code == 130:
                assert "interrupted: " in err and "Traceback" not in err, err
        seen[f"exit {code}"] += 1
        wait_for_dead_transactions(pg)

        now = check_old_or_new(pg, out, before, channel, f"trial {trial}")
        if now.staging_left:
            seen["staging left over"] += 1
        if now.parquet_behind:
            seen["database ahead of Parquet by a date"] += 1
        seen[f"dates rewritten: {now.k_pg}"] += 1
        before = now

    elapsed = time.monotonic() - began
    print(f"\n{TRIALS} trials in {elapsed:.1f}s (a clean run: {duration:.2f}s):")
    for what, count in sorted(seen.items()):
        print(f"  {what}: {count}")
    # How many signals landed mid-run depends on the machine's load: the windows that must be
    # hit are hit by the fault-point tests below; these trials only add random positions.

    # a clean run puts the newest rows everywhere
    final = run(fill_command(store, DAYS, *outputs))
    assert final.returncode == 0, final.stderr
    assert pg_versions(pg) == dict.fromkeys(DAYS, f"trial-{TRIALS:03d}")
    assert parquet_versions(out) == {d.isoformat(): f"trial-{TRIALS:03d}" for d in DAYS}
    assert staging(out) == []


#: Each window of a date's write, whether the job has the exchange, and the dates a kill
#: there leaves rewritten when it lands on the second date: (in PostgreSQL, in Parquet).
WINDOWS = [
    ("postgres.during_copy", True, (1, 1)),  # the date's transaction rolls back
    ("postgres.before_commit", True, (1, 1)),
    ("parquet.before_swap", True, (2, 1)),  # the database committed, Parquet not swapped
    ("parquet.after_exchange", True, (2, 2)),  # swapped; the old partition not deleted yet
    ("parquet.between_renames", False, (2, 1)),  # no exchange: the date missing until reopened
]


@pytest.mark.postgres
@pytest.mark.parametrize(("point", "exchange", "rewritten"), WINDOWS,
                         ids=[point for point, _, _ in WINDOWS])
def test_a_kill_in_each_window_leaves_each_date_old_or_new(
        tmp_path: Path, pg_url: str, pg: psycopg.Connection[Any], point: str, exchange: bool,
        rewritten: tuple[int, int]) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    outputs = ("--db", pg_url, "--parquet", str(out))
    write_store(store, "before")
    require(run(fill_command(store, DAYS, *outputs)).returncode == 0, "first run")
    before = first_state(pg, out, "before")
    write_store(store, "after")
    command = fill_command(store, DAYS, *outputs, exchange=exchange)
    with started(command, **armed(point, after=1)) as job:  # on the second date
        _, err = job.communicate(timeout=300)
    require(job.returncode == -signal.SIGKILL, f"killed at {point}: {err[-2000:]}")
    now = check_old_or_new(pg, out, before, "after", point,
                           partition_may_be_missing=not exchange)
    assert (now.k_pg, now.k_parquet) == rewritten
    if point == "parquet.between_renames":
        assert now.listed[DAYS[1]] is None  # what the exchange prevents; the reopen repaired it
    if point == "parquet.after_exchange":
        assert now.staging_left  # the old partition, which the reopen cleared
    again = run(fill_command(store, DAYS, *outputs))
    assert again.returncode == 0, again.stdout + again.stderr
    assert pg_versions(pg) == dict.fromkeys(DAYS, "after")
    assert parquet_versions(out) == {day.isoformat(): "after" for day in DAYS}


#: Where SIGTERM (or Ctrl-C) may stop a swap, and the partition it leaves in place.
STOPS = [
    ("parquet.before_swap", True, "before"),
    ("parquet.after_exchange", True, "after"),
    ("parquet.between_renames", False, "before"),  # the old partition moved back on the spot
]


@pytest.mark.parametrize(("point", "exchange", "left"), STOPS, ids=[p for p, _, _ in STOPS])
def test_sigterm_in_each_window_of_the_swap_leaves_a_whole_partition(
        tmp_path: Path, point: str, exchange: bool, left: str) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    day = DAYS[:1]
    write_store(store, "before", day, 50)
    require(run(fill_command(store, day, "--parquet", str(out))).returncode == 0, "first run")
    write_store(store, "after", day, 50)
    command = fill_command(store, day, "--parquet", str(out), exchange=exchange)
    with started(command, **armed(point, "pause")) as job:
        wait_for_pause(job, point)
        if point == "parquet.between_renames":
            require(not partition(out, day[0]).exists(), "in the window between the renames")
        else:
            require(parquet_as_listed(out, day[0], 50) == left, "a whole partition meanwhile")
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=300)
    require(job.returncode == 130 and "interrupted: " in err, err)
    # a reader (DuckDB, Spark...) right after the job stopped cleanly, before any repair:
    assert parquet_as_listed(out, day[0], 50) == left
    assert staging(out) == []


def test_a_concurrent_job_on_other_dates_leaves_the_partition_in_place(tmp_path: Path) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    mine, theirs = DAYS[:1], DAYS[1:2]
    write_store(store, "before", DAYS[:2], 50)
    require(run(fill_command(store, DAYS[:2], "--parquet", str(out))).returncode == 0, "first")
    write_store(store, "after", DAYS[:2], 50)
    command = fill_command(store, mine, "--parquet", str(out))
    with started(command, **armed("parquet.before_swap", "pause")) as job:
        wait_for_pause(job, "parquet.before_swap")  # my partition is staged, the old in place
        other = run(fill_command(store, theirs, "--parquet", str(out)))  # another backfill
        out_text, _ = job.communicate(timeout=300)  # goes on
    require(other.returncode == 0, other.stdout + other.stderr)
    require(parquet_as_listed(out, theirs[0], 50) == "after", "the other job's date")
    assert job.returncode == 0, out_text  # the other job's open left my staged folder alone
    assert parquet_as_listed(out, mine[0], 50) == "after"
    assert staging(out) == []


@pytest.mark.postgres
def test_resuming_after_a_kill_between_the_stores_rewrites_parquet(
        tmp_path: Path, pg_url: str, pg: psycopg.Connection[Any]) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    day = DAYS[:1]
    outputs = ("--db", pg_url, "--parquet", str(out))
    write_store(store, "before", day, 50)
    require(run(fill_command(store, day, *outputs)).returncode == 0, "first run")
    write_store(store, "after", day, 50)
    # killed once the database has committed, before the Parquet swap
    with started(fill_command(store, day, *outputs), **armed("parquet.before_swap")) as job:
        require(job.wait(timeout=60) == -signal.SIGKILL, "killed")
    wait_for_dead_transactions(pg)
    require(pg_versions(pg, 50) == {day[0]: "after"}, "the database was written")
    require(parquet_versions(out, 50) == {day[0].isoformat(): "before"}, "Parquet was not")
    resumed = run([*fill_command(store, day, *outputs), "--skip-existing"])
    require(resumed.returncode == 0, resumed.stdout + resumed.stderr)
    assert parquet_versions(out, 50) == {day[0].isoformat(): "after"}, resumed.stdout


def _reading_with_workers(tmp_path: Path, job: subprocess.Popen[str]) -> None:
    """Wait until the job's two worker processes read its two big files."""
    assert job.stderr is not None
    line = job.stderr.readline()
    require(": reading 2 files" in line, line)
    time.sleep(0.5)
    require(len(session_members(job.pid)) == 3, "the job and its two workers")


def _two_big_files(tmp_path: Path) -> list[str]:
    store = tmp_path / "pings"
    write_store(store, "workers", DAYS[:1], 25_000, files=2)
    return fill_command(store, DAYS[:1], "--db", f"sqlite:///{tmp_path / 'w.db'}", workers=2)


def test_sigterm_with_worker_processes_prints_no_traceback(tmp_path: Path) -> None:
    with started(_two_big_files(tmp_path)) as job:
        _reading_with_workers(tmp_path, job)
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=300)
    require(job.returncode == 130 and "interrupted: 0 dates written" in err, err[-2000:])
    assert "Traceback" not in err, err[-2000:]


def test_sigkill_of_the_job_leaves_no_worker_processes_behind(tmp_path: Path) -> None:
    with started(_two_big_files(tmp_path)) as job:
        _reading_with_workers(tmp_path, job)
        job.send_signal(signal.SIGKILL)
        require(job.wait(timeout=30) == -signal.SIGKILL, "killed")
        deadline = time.monotonic() + 5
        while session_members(job.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = session_members(job.pid)
    assert orphans == [], "worker processes still running 5 s after the job was killed"


# -- b. the database connection lost mid-COPY ---------------------------------------------------


def _terminate_during_copy(pg: psycopg.Connection[Any], job: subprocess.Popen[str]) -> bool:
    """Wait for the job's COPY into this schema's table, then end its backend as a server
    restart would. False when the job finished first."""
    deadline = time.monotonic() + 60
    while job.poll() is None and time.monotonic() < deadline:
        found = pg.execute(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = 'crash-aggregates' AND a.state = 'active' "
            "AND a.query LIKE 'COPY crash_aggregates%%' "
            "AND l.relation = 'crash_aggregates'::regclass").fetchall()
        if found:
            assert pg.execute("SELECT pg_terminate_backend(%s)",
                              (found[0][0],)).fetchone() == (True,)
            return True
        time.sleep(0.002)
    return False


@pytest.mark.postgres
def test_connection_lost_mid_copy_fails_the_date_and_keeps_previous_rows(
        tmp_path: Path, pg_url: str, pg: psycopg.Connection[Any]) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    day = DAYS[:1]
    outputs = ("--db", pg_url, "--parquet", str(out))
    write_store(store, "before", day, 20_000)
    assert run(fill_command(store, day, *outputs)).returncode == 0
    write_store(store, "after", day, 20_000)
    with started(fill_command(store, day, *outputs)) as job:
        assert _terminate_during_copy(pg, job), "the job ended before its COPY was seen"
        out_text, err = job.communicate(timeout=300)
    assert job.returncode == 1
    [line] = out_text.splitlines()  # one line for the date, naming the cause
    assert line.startswith(f"{day[0]} FAILED: PostgreSQL at ")
    assert f"cannot replace {day[0]}: " in line
    assert "server closed the connection" in line or "terminating connection" in line, line
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"failed dates: {day[0]}"
    wait_for_dead_transactions(pg)
    assert pg_versions(pg, 20_000) == {day[0]: "before"}
    assert parquet_as_listed(out, day[0], 20_000) == "before"  # never reached

    again = run(fill_command(store, day, *outputs))
    assert again.returncode == 0, again.stderr
    assert pg_versions(pg, 20_000) == {day[0]: "after"}
    assert parquet_versions(out, 20_000) == {day[0].isoformat(): "after"}


@pytest.mark.postgres
def test_connection_lost_on_one_date_the_next_dates_are_still_written(
        tmp_path: Path, pg_url: str, pg: psycopg.Connection[Any]) -> None:
    store = tmp_path / "pings"
    days = DAYS[:2]
    write_store(store, "before", days, 50)
    require(run(fill_command(store, days, "--db", pg_url)).returncode == 0, "first run")
    write_store(store, "after", days, 20_000)
    with started(fill_command(store, days, "--db", pg_url)) as job:
        copying = _terminate_during_copy(pg, job)
        out_text, _ = job.communicate(timeout=300)
    require(copying, "the job ended before its COPY was seen")
    require(job.returncode == 1, out_text)
    assert [line.split(" ", 2)[1] for line in out_text.splitlines()] == ["FAILED:", "ok:"]


@pytest.mark.postgres
def test_connection_lost_mid_copy_adds_no_driver_noise(
        tmp_path: Path, pg_url: str, pg: psycopg.Connection[Any]) -> None:
    store = tmp_path / "pings"
    write_store(store, "before", DAYS[:1], 50)
    require(run(fill_command(store, DAYS[:1], "--db", pg_url)).returncode == 0, "first run")
    write_store(store, "after", DAYS[:1], 20_000)
    with started(fill_command(store, DAYS[:1], "--db", pg_url)) as job:
        copying = _terminate_during_copy(pg, job)
        _, err = job.communicate(timeout=300)
    require(copying, "the job ended before its COPY was seen")
    require(job.returncode == 1, err)
    unexpected = [line for line in err.splitlines()
                  if not line.startswith((f"{DAYS[0]}: reading", "[1/1 dates]", "failed dates"))]
    assert unexpected == []


# -- c. disk full while writing Parquet ---------------------------------------------------------


def _small_files() -> None:
    """In the child: files may not grow past 8 KB; writes beyond fail with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 10, 8 << 10))


class Tmpfs:
    """A tmpfs of a given size mounted on a folder (root only)."""

    def __init__(self, where: Path, size: str) -> None:
        where.mkdir(parents=True)
        self.where = where
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.where)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False)


def _disk_full_checks(out: Path, done: subprocess.CompletedProcess[str], cause: str) -> None:
    day = DAYS[0]
    assert done.returncode == 1, done.stderr
    [line] = done.stdout.splitlines()
    assert line == f"{day} FAILED: cannot write Parquet for {day} under {out}: {cause}"
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"failed dates: {day}"
    # the previous partition, whole, and nothing else for a reader to trip on
    assert parquet_as_listed(out, day, 50) == "before"
    assert staging(out) == []
    assert sorted(os.listdir(out / "crash_aggregates" / "v1")) == [f"submission_date={day}"]
    glob = f"{out}/crash_aggregates/v1/*/*.parquet"
    assert duckdb.sql(f"SELECT dimensions['channel'], count(*) FROM read_parquet('{glob}', "
                      f"hive_partitioning = true) GROUP BY 1").fetchall() == [("before", 50)]


def test_file_size_limit_while_writing_parquet(tmp_path: Path) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    write_store(store, "before", DAYS[:1], 50)
    assert run(fill_command(store, DAYS[:1], "--parquet", str(out))).returncode == 0
    write_store(store, "after", DAYS[:1], 10_000)
    done = run(fill_command(store, DAYS[:1], "--parquet", str(out)), preexec_fn=_small_files)
    _disk_full_checks(out, done, "File too large")
    again = run(fill_command(store, DAYS[:1], "--parquet", str(out)))
    assert again.returncode == 0, again.stderr
    assert parquet_versions(out, 10_000) == {DAYS[0].isoformat(): "after"}


def test_disk_full_while_writing_parquet(tmp_path: Path) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    disk = Tmpfs(out, "32k")
    try:
        write_store(store, "before", DAYS[:1], 50)
        assert run(fill_command(store, DAYS[:1], "--parquet", str(out))).returncode == 0
        write_store(store, "after", DAYS[:1], 20_000)
        done = run(fill_command(store, DAYS[:1], "--parquet", str(out)))
        _disk_full_checks(out, done, "No space left on device")
        disk.resize("64m")
        again = run(fill_command(store, DAYS[:1], "--parquet", str(out)))
        assert again.returncode == 0, again.stderr
        assert parquet_versions(out, 20_000) == {DAYS[0].isoformat(): "after"}
    finally:
        disk.unmount()


@pytest.mark.postgres
def test_parquet_failure_after_the_database_commit(tmp_path: Path, pg_url: str,
                                                   pg: psycopg.Connection[Any]) -> None:
    store, out = tmp_path / "pings", tmp_path / "parquet"
    outputs = ("--db", pg_url, "--parquet", str(out))
    write_store(store, "before", DAYS[:1], 50)
    require(run(fill_command(store, DAYS[:1], *outputs)).returncode == 0, "first run")
    write_store(store, "after", DAYS[:1], 20_000)
    done = run(fill_command(store, DAYS[:1], *outputs), preexec_fn=_small_files)
    require(done.returncode == 1 and " FAILED: cannot write Parquet" in done.stdout, done.stdout)
    require(parquet_as_listed(out, DAYS[0], 50) == "before", "Parquet keeps its rows")
    runs = pg.execute("SELECT status, rows_written FROM crash_aggregates_runs ORDER BY 1")
    require(runs.fetchall() == [("completed", 50), ("failed", 0)], "the run recorded failed")
    in_pg = pg.execute("SELECT dimensions->>'channel', count(*) FROM crash_aggregates "
                       "GROUP BY 1").fetchall()
    assert in_pg == [("before", 50)]  # as in Parquet, as the run record says


# -- b'. the database server itself restarted mid-COPY -------------------------------------------


def _postgres_binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@pytest.fixture
def private_server() -> Iterator[tuple[str, Any]]:
    """A PostgreSQL cluster of this test's own (the shared one must not be restarted), and a
    function that restarts it."""
    bindir = _postgres_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (scripts/check installs them)")
    # in /tmp itself: pytest's folders are closed to the postgres user the server runs as
    data = Path(tempfile.mkdtemp(prefix="crash-aggregates-restart-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        subprocess.run(["chown", "-R", "postgres", str(data)], check=True)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log")]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres",
                    "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*ctl, "-w", "-o", options, "start"], check=True, capture_output=True)

    def restart() -> None:
        subprocess.run([*ctl, "-w", "-m", "fast", "-o", options, "restart"], check=True,
                       capture_output=True)

    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.postgres
def test_server_restarted_mid_copy_keeps_previous_rows(
        tmp_path: Path, private_server: tuple[str, Any]) -> None:
    url, restart = private_server
    store = tmp_path / "pings"
    day = DAYS[:2]
    write_store(store, "before", day, 50)
    require(run(fill_command(store, day, "--db", url)).returncode == 0, "first run")
    write_store(store, "after", day[:1], 40_000)
    with started(fill_command(store, day, "--db", url)) as job, \
            psycopg.connect(url, autocommit=True) as watch:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if watch.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY%%' "
                             "AND application_name = 'crash-aggregates'").fetchall():
                break
            time.sleep(0.01)
        require(job.poll() is None, "the job ended before its COPY was seen")
        restart()  # every connection is dropped, the COPY's transaction rolled back
        out, err = job.communicate(timeout=300)
    lines = out.splitlines()
    assert job.returncode == 1, out + err
    assert lines[0].startswith(f"{day[0]} FAILED: ") and "Traceback" not in out + err
    assert lines[1].startswith(f"{day[1]} ok: ")  # the next date reconnects
    with psycopg.connect(url) as connection:
        kept = connection.execute(
            "SELECT dimensions->>'channel', count(*) FROM crash_aggregates "
            "WHERE submission_date = %s GROUP BY 1", (day[0],)).fetchall()
    assert kept == [("before", 50)]
    again = run(fill_command(store, day[:1], "--db", url))
    assert again.returncode == 0, again.stdout + again.stderr
    with psycopg.connect(url) as connection:
        assert connection.execute(
            "SELECT dimensions->>'channel', count(*) FROM crash_aggregates "
            "WHERE submission_date = %s GROUP BY 1", (day[0],)).fetchall() == [("after", 40_000)]
