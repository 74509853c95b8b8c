"""The store contract: every backend replaces a date all or nothing and reads back the same rows.

Runs on every backend the `store_url` fixture offers.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.errors import StoreError, UsageError
from crash_rate_aggregates.stores.base import RunRecord, Store, open_store

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
