"""The store contract: every backend replaces a date all or nothing and reads back the same rows.

Runs on every backend the `store_url` fixture offers.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import main_ping, write_ping_file
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.errors import StoreError, UsageError
from crash_rate_aggregates.stores import sqlite
from crash_rate_aggregates.stores.base import RunRecord, Store, no_store, open_store
from crash_rate_aggregates.stores.sqlite import sqlite_path

DAY = date(2016, 3, 14)
OTHER = date(2016, 3, 15)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(store_url: str) -> Store:
    opened = open_store(store_url)
    yield opened  # type: ignore[misc]
    opened.close()


def _row(channel: str, hours: float, crashes: float = 0.0,
         activity: str = "2016-03-13") -> Aggregate:
    stats = dict.fromkeys(rules.STATS, 0.0)
    stats.update(usage_hours=hours, main_crashes=crashes, ping_count=1.0)
    return Aggregate(activity, {"channel": channel, "os_name": "Linux"}, stats)


def _run(day: date, run_id: str = "run-1", rows: int = 0) -> RunRecord:
    counters = {name: index for index, name in enumerate(rules.COUNTERS)}
    return RunRecord(run_id, day, "completed", datetime(2016, 3, 15, 4, tzinfo=UTC), 1.5, rows,
                     "/pings", "test", counters, undated=7)


def test_rows_read_back_as_written(store: Store) -> None:
    rows = [_row("nightly", 10.5, 2), _row("beta", 3.25)]
    store.replace_date(DAY, rows, _run(DAY, rows=2))
    back = store.read_rows(DAY)
    assert [day for day, _ in back] == ["2016-03-14", "2016-03-14"]
    assert [row for _, row in back] == sorted(rows, key=lambda r: r.dimensions["channel"])


def test_replace_swaps_only_that_date(store: Store) -> None:
    store.replace_date(DAY, [_row("nightly", 1), _row("beta", 2)], _run(DAY, "r1"))
    store.replace_date(OTHER, [_row("release", 5)], _run(OTHER, "r1"))
    store.replace_date(DAY, [_row("aurora", 7)], _run(DAY, "r2"))
    assert [r.dimensions["channel"] for _, r in store.read_rows(DAY)] == ["aurora"]
    assert [r.dimensions["channel"] for _, r in store.read_rows(OTHER)] == ["release"]


def test_same_rows_twice_give_the_same_table(store: Store) -> None:
    rows = [_row("nightly", 1), _row("beta", 2)]
    store.replace_date(DAY, rows, _run(DAY, "r1"))
    first = store.read_rows()
    store.replace_date(DAY, rows, _run(DAY, "r2"))
    assert store.read_rows() == first


def test_failed_write_keeps_previous_rows(store: Store) -> None:
    store.replace_date(DAY, [_row("nightly", 1)], _run(DAY, "r1"))

    def exploding() -> object:
        yield _row("beta", 2)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.replace_date(DAY, exploding(), _run(DAY, "r2"))  # type: ignore[arg-type]
    assert [r.dimensions["channel"] for _, r in store.read_rows(DAY)] == ["nightly"]
    assert [run["run_id"] for run in store.read_runs(DAY)] == ["r1"]


def test_run_records_hold_every_counter(store: Store) -> None:
    store.replace_date(DAY, [_row("nightly", 1)], _run(DAY, "r1", rows=1))
    [run] = store.read_runs(DAY)
    assert run["status"] == "completed"
    assert run["rows_written"] == 1
    assert run["input_url"] == "/pings"
    assert run["duration_seconds"] == 1.5
    assert run["started_at"].startswith("2016-03-15T04:00:00")
    assert run["undated"] == 7
    assert {name: run[name] for name in rules.COUNTERS} == {
        name: index for index, name in enumerate(rules.COUNTERS)}


def test_failed_run_is_recorded_without_touching_rows(store: Store) -> None:
    store.replace_date(DAY, [_row("nightly", 1)], _run(DAY, "r1"))
    failed = RunRecord("r2", DAY, "failed", datetime(2016, 3, 16, tzinfo=UTC), 0.1, 0, "/pings",
                       "test", {}, error="part-1.json.gz: cannot inflate")
    store.record_run(failed)
    assert len(store.read_rows(DAY)) == 1
    assert [(r["run_id"], r["status"], r["error"]) for r in store.read_runs(DAY)] == [
        ("r1", "completed", None), ("r2", "failed", "part-1.json.gz: cannot inflate")]


def test_seed_query_adapted_to_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    store = open_store(url)
    store.replace_date(DAY, [_row("nightly", 10, 2), _row("nightly", 30, 1, "2016-03-12"),
                             _row("beta", 100, 50)], _run(DAY))
    store.close()
    with sqlite3.connect(tmp_path / "seed.db") as db:
        [(rate,)] = db.execute(
            "SELECT sum(CAST(stats->>'main_crashes' AS REAL)) "
            "/ sum(CAST(stats->>'usage_hours' AS REAL)) FROM crash_aggregates "
            "WHERE dimensions->>'channel' = 'nightly' AND submission_date = '2016-03-14'"
        ).fetchall()
    assert rate == pytest.approx(3 / 40)


def test_bad_urls_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown store URL"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")


# -- concurrency: many jobs opening one SQLite file at once ------------------------------------

OPENERS = 12
ROUNDS = 4


def _open_at_the_barrier(url: str, barrier: Any, outcomes: Any) -> None:
    """In a child: wait for every other opener, then open the store and say how it went."""
    barrier.wait()
    try:
        open_store(url).close()
        outcomes.put("ok")
    except Exception as exc:  # the outcome is for the test to judge
        outcomes.put(f"{type(exc).__name__}: {exc}")


def _open_all_at_once(url: str) -> list[str]:
    context = multiprocessing.get_context("fork")
    barrier, outcomes = context.Barrier(OPENERS), context.Queue()
    openers = [context.Process(target=_open_at_the_barrier, args=(url, barrier, outcomes))
               for _ in range(OPENERS)]
    for opener in openers:
        opener.start()
    try:
        return [outcomes.get(timeout=120) for _ in openers]
    finally:
        for opener in openers:
            opener.join(timeout=30)


def test_simultaneous_opens_of_one_sqlite_file_all_succeed(tmp_path: Path) -> None:
    for round_number in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'shared-{round_number}.db'}"
        assert _open_all_at_once(url) == ["ok"] * OPENERS, "a new file"
        assert _open_all_at_once(url) == ["ok"] * OPENERS, "an existing file"


# -- the read-only commands never create a store -------------------------------------------------

READERS = (("rates",), ("compare", "--candidate", "build_version=20160314"), ("watchdog",))


@pytest.mark.parametrize("command", READERS, ids=[c[0] for c in READERS])
def test_readers_of_a_missing_sqlite_file_say_so_and_create_nothing(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "nowhere.db"
    url = f"sqlite:///{path}"
    result = CliRunner().invoke(cli, [*command, "--db", url], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {no_store(url)}"]
    assert result.stderr.startswith(f"error: no store at {url}")
    assert not path.exists()


@pytest.mark.parametrize("command", READERS, ids=[c[0] for c in READERS])
def test_readers_of_a_database_without_the_schema_say_so_and_create_nothing(
        store_url: str, command: tuple[str, ...]) -> None:
    if store_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(store_url)) as other:  # some other program's file
            other.execute("CREATE TABLE notes (text TEXT)")
    result = CliRunner().invoke(cli, [*command, "--db", store_url], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {no_store(store_url)}"]
    with pytest.raises(StoreError, match="^no store at "):
        open_store(store_url, create=False)
    assert _tables(store_url) == ({"notes"} if store_url.startswith("sqlite") else set())


def test_no_store_message_hides_the_password() -> None:
    url = "postgresql://crash:hunter2-secret@127.0.0.1:1/telemetry"
    assert no_store(url).startswith("no store at postgresql://crash:***@127.0.0.1:1/telemetry")
    assert "hunter2" not in no_store(url)


def test_readers_open_a_filled_store_without_writing_it(store: Store, store_url: str) -> None:
    store.replace_date(DAY, [_row("nightly", 1)], _run(DAY, "r1"))
    before = _tables(store_url)
    reader = open_store(store_url, create=False)
    try:
        assert [r.dimensions["channel"] for _, r in reader.read_rows(DAY)] == ["nightly"]
    finally:
        reader.close()
    assert _tables(store_url) == before


def _tables(url: str) -> set[str]:
    """The tables and views of the store's database (its schema, for PostgreSQL)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type IN ('table', 'view')")}
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()").fetchall()}


# -- the last run is the one whose rows are in the table ---------------------------------------


def _pings(root: Path, channel: str) -> str:
    write_ping_file(root / f"submission_date={DAY}" / "part-0.json",
                    [main_ping(f"{channel}-{n}", f"client-{n}", channel=channel)
                     for n in range(5)])
    return str(root)


def _fill_command(pings: str, store_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", pings, "--from",
            DAY.isoformat(), "--to", DAY.isoformat(), "--db", store_url, "--workers", "1",
            *extra]


def test_overlapping_fills_describe_the_run_whose_rows_are_in_the_table(
        tmp_path: Path, store_url: str) -> None:
    """The first job to start commits last: its rows stay, and so must its record be the
    date's last run (for health, the watchdog and --skip-existing), not the later-started
    job's. The first job is held, deterministically, just before its write transaction."""
    first, second = _pings(tmp_path / "first", "first"), _pings(tmp_path / "second", "second")
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    held = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": f"{backend}.before_replace",
            "CRASH_AGGREGATES_FAULT_ACTION": "pause"}
    with subprocess.Popen(_fill_command(first, store_url), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=held) as job:
        assert job.stderr is not None
        while not (line := job.stderr.readline()).startswith("fault point "):
            assert line, "the first job ended before its write"
        later = subprocess.run(_fill_command(second, store_url), capture_output=True,
                               text=True, timeout=120)
        assert later.returncode == 0, later.stdout + later.stderr
        out, err = job.communicate(timeout=120)  # let the first job write, last
    assert job.returncode == 0, out + err
    store = open_store(store_url, create=False)
    try:
        assert {row.dimensions["channel"] for _, row in store.read_rows(DAY)} == {"first"}
        runs = store.read_runs(DAY)
    finally:
        store.close()
    [rows_run] = [run for run in runs if run["input_url"] == first]
    assert [run["input_url"] for run in runs] == [second, first]
    assert runs[-1]["run_id"] == rows_run["run_id"]
    assert rows_run["started_at"] < runs[0]["started_at"]  # it did start first
    # --skip-existing sees the first job's run as the date's last: nothing to do
    again = subprocess.run(_fill_command(first, store_url, "--skip-existing"),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr, again.stdout


def test_an_earlier_sqlite_file_gets_its_runs_numbered_in_their_order(tmp_path: Path) -> None:
    # A file of the release before commit numbers (schema 1): its runs are numbered in the
    # order they were read before (start time), and the next record comes after them all.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("DROP INDEX crash_aggregates_runs_commit")
        db.execute("ALTER TABLE crash_aggregates_runs DROP COLUMN commit_seq")
        db.execute("PRAGMA user_version = 1")
        for run_id, started in (("late", "2016-03-15T05:00:00+00:00"),
                                ("early", "2016-03-15T04:00:00+00:00")):
            db.execute("INSERT INTO crash_aggregates_runs (run_id, submission_date, status, "
                       "started_at, duration_seconds, rows_written, input_url, product_version)"
                       " VALUES (?, '2016-03-14', 'completed', ?, 1, 0, '/pings', 'old')",
                       (run_id, started))
    reader = open_store(url, create=False)  # a reader of an earlier file migrates it too
    try:
        assert [run["run_id"] for run in reader.read_runs(DAY)] == ["early", "late"]
    finally:
        reader.close()
    store = open_store(url)
    try:
        store.record_run(RunRecord("next", DAY, "failed", datetime(2016, 3, 1, tzinfo=UTC),
                                   0.0, 0, "/pings", "new", {}))
        assert [run["run_id"] for run in store.read_runs(DAY)] == ["early", "late", "next"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert db.execute("SELECT run_id, commit_seq FROM crash_aggregates_runs "
                          "ORDER BY 2").fetchall() == [("early", 1), ("late", 2), ("next", 3)]
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite.SCHEMA_VERSION,)
