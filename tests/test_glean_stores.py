"""The stores take a family (issue 15, SPEC section 8 "Output"): the Glean family's rows, runs
and views live beside the legacy ones, in SQLite, PostgreSQL and Parquet, and never mix."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import main_ping, write_ping_file
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.errors import StoreError, UsageError
from crash_rate_aggregates.families import glean
from crash_rate_aggregates.stores import postgres, sqlite
from crash_rate_aggregates.stores.base import (
    ReadableStore,
    RunRecord,
    Store,
    families_in,
    no_store,
    open_store,
)
from crash_rate_aggregates.stores.parquet import LOCAL_FILE, ParquetStore
from crash_rate_aggregates.stores.queries import Z95, StatsQuery, flat_view, rates_view

DAY = date(2025, 6, 2)
OTHER = date(2025, 6, 3)
GLEAN_TABLES = {"glean_crash_aggregates", "glean_crash_aggregates_runs"}
GLEAN_VIEWS = {"glean_crash_aggregates_flat", "glean_crash_rates_daily"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def both(db_url: str) -> Iterator[tuple[ReadableStore, ReadableStore]]:
    """(legacy store, Glean store) on one database."""
    legacy = cast(ReadableStore, open_store(db_url))
    glean_store = cast(ReadableStore, open_store(db_url, family="glean"))
    yield legacy, glean_store
    legacy.close()
    glean_store.close()


def glean_row(channel: str = "nightly", os_version: str = "10.0", activity: str = "2025-06-01",
              **stats: float) -> Aggregate:
    """A Glean aggregate with every dimension and all 55 stats, each a distinct value that
    JSON text must carry exactly (thirds, a large square, a tiny usage)."""
    values = {name: (number + 1) / 3 for number, name in enumerate(glean.STATS)}
    values.update(usage_hours_squared=1.2345678901234567e25, usage_hours=1e-9)
    values.update(stats)
    dimensions = {"build_version": "140.0", "build_id": "20250601000000", "channel": channel,
                  "application": "Firefox", "os_name": "Windows", "os_version": os_version,
                  "architecture": "x86_64", "country": "FR"}
    assert set(dimensions) == set(glean.DIMENSION_NAMES)
    return Aggregate(activity, dimensions, values)


def legacy_row(channel: str = "nightly", hours: float = 5.0) -> Aggregate:
    stats = dict.fromkeys(rules.STATS, 0.0)
    stats.update(usage_hours=hours, main_crashes=1.0, ping_count=2.0)
    return Aggregate("2025-06-01", {"channel": channel, "build_version": "140.0",
                                    "os_name": "Windows"}, stats)


def run(day: date, run_id: str, rows: int = 1) -> RunRecord:
    counters = {name: number + 10 for number, name in enumerate(rules.COUNTERS)}
    return RunRecord(run_id, day, "completed", datetime(2025, 6, 3, 4, tzinfo=UTC), 2.5, rows,
                     f"/pings/{run_id}", "test", counters, undated=3)


def raw(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every column of every row of a table, as the database holds it, in a fixed order."""
    sql = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(url)) as db:
            return db.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return [tuple(row) for row in connection.execute(sql).fetchall()]


def named_rows(url: str, sql: str) -> list[dict[str, Any]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(url)) as db:
            cursor = db.execute(sql)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def relations(url: str) -> set[str]:
    """The tables and views of the store's database (its schema, for PostgreSQL)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(url)) as db:
            return {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()").fetchall()}


# -- rows and runs -----------------------------------------------------------------------------


def test_the_glean_family_has_55_stats() -> None:
    assert len(glean.STATS) == 55 and len(set(glean.STATS)) == 55


def test_glean_rows_read_back_exactly(both: tuple[ReadableStore, ReadableStore]) -> None:
    _, store = both
    rows = [glean_row("release"), glean_row("beta", "11.0", main_crashes=7.0)]
    store.replace_date(DAY, rows, run(DAY, "g1", rows=2))
    back = store.read_rows(DAY)
    assert store.family == "glean"
    assert back == [("2025-06-02", rows[1]), ("2025-06-02", rows[0])]  # sorted: beta first
    assert all(set(row.stats) == set(glean.STATS) for _, row in back)


def test_the_families_never_mix(both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    legacy.replace_date(DAY, [legacy_row("nightly")], run(DAY, "legacy-1"))
    glean_store.replace_date(DAY, [glean_row("beta")], run(DAY, "glean-1"))
    assert [r.dimensions["channel"] for _, r in legacy.read_rows(DAY)] == ["nightly"]
    assert [r.dimensions["channel"] for _, r in glean_store.read_rows()] == ["beta"]
    assert [r["run_id"] for r in legacy.read_runs()] == ["legacy-1"]
    assert [r["run_id"] for r in glean_store.read_runs(DAY)] == ["glean-1"]


@pytest.mark.parametrize("replaced", ["legacy", "glean"])
def test_replacing_one_familys_date_leaves_the_others_rows_and_runs_byte_identical(
        db_url: str, both: tuple[ReadableStore, ReadableStore], replaced: str) -> None:
    legacy, glean_store = both
    for day in (DAY, OTHER):
        legacy.replace_date(day, [legacy_row("nightly"), legacy_row("beta", 2)],
                            run(day, "legacy-1", 2))
        glean_store.replace_date(day, [glean_row("nightly"), glean_row("beta")],
                                 run(day, "glean-1", 2))
    store, kept = (legacy, "glean_crash_aggregates") if replaced == "legacy" else (
        glean_store, "crash_aggregates")
    before = raw(db_url, kept), raw(db_url, f"{kept}_runs")
    new_row = legacy_row("aurora") if replaced == "legacy" else glean_row("aurora")
    store.replace_date(DAY, [new_row], run(DAY, f"{replaced}-2"))
    store.record_run(RunRecord(f"{replaced}-3", DAY, "failed", datetime(2025, 6, 4, tzinfo=UTC),
                               0.1, 0, "/pings", "test", {}, error="boom"))
    assert (raw(db_url, kept), raw(db_url, f"{kept}_runs")) == before
    assert [r.dimensions["channel"] for _, r in store.read_rows(DAY)] == ["aurora"]
    assert len(store.read_rows(OTHER)) == 2


def test_runs_are_recorded_and_numbered_per_family(
        db_url: str, both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    legacy.replace_date(DAY, [legacy_row()], run(DAY, "l1"))
    glean_store.replace_date(DAY, [glean_row()], run(DAY, "g1"))
    glean_store.replace_date(DAY, [glean_row()], run(DAY, "g2"))
    legacy.replace_date(DAY, [legacy_row()], run(DAY, "l2"))
    [first, _] = glean_store.read_runs(DAY)
    assert {name: first[name] for name in rules.COUNTERS} == {
        name: number + 10 for number, name in enumerate(rules.COUNTERS)}
    assert (first["undated"], first["input_url"], first["rows_written"]) == (3, "/pings/g1", 1)
    # each family's commit numbers count its own records only
    sequence = "SELECT run_id, commit_seq FROM {} ORDER BY commit_seq"
    assert named_rows(db_url, sequence.format("crash_aggregates_runs")) == [
        {"run_id": "l1", "commit_seq": 1}, {"run_id": "l2", "commit_seq": 2}]
    assert named_rows(db_url, sequence.format("glean_crash_aggregates_runs")) == [
        {"run_id": "g1", "commit_seq": 1}, {"run_id": "g2", "commit_seq": 2}]
    columns = "SELECT * FROM {} WHERE 1 = 0"
    assert _columns(db_url, columns.format("glean_crash_aggregates_runs")) == _columns(
        db_url, columns.format("crash_aggregates_runs"))
    assert _columns(db_url, columns.format("glean_crash_aggregates")) == [
        "submission_date", "activity_date", "dimensions", "stats", "clients_sketch",
        *(f"{crash}_clients_sketch" for crash in (
            "main_crashes", "content_crashes", "content_shutdown_crashes", "gpu_crashes",
            "gmplugin_crashes", "rdd_crashes", "socket_crashes", "utility_crashes",
            "other_crashes", "startup_crashes"))]


def _columns(url: str, sql: str) -> list[str]:
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(url)) as db:
            return [c[0] for c in db.execute(sql).description]
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return [c.name for c in connection.execute(sql).description or []]


def test_an_unknown_family_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown ping family 'fennec'"):
        open_store(f"sqlite:///{tmp_path / 'x.db'}", family="fennec")
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(UsageError, match="unknown ping family"):
        ParquetStore(str(tmp_path / "out"), family="fennec")


# -- queries -----------------------------------------------------------------------------------


def test_stats_queries_sum_the_familys_table_stats_and_dimensions(
        both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    legacy.replace_date(DAY, [legacy_row("nightly", 1000)], run(DAY, "l1"))
    glean_store.replace_date(DAY, [glean_row("nightly", usage_hours=2.0, main_crashes=1.0),
                                   glean_row("nightly", "11.0", usage_hours=3.0,
                                             main_crashes=4.0),
                                   glean_row("beta", usage_hours=7.0)], run(DAY, "g1", 3))
    query = StatsQuery(by=("channel",), family="glean")
    found = dict(glean_store.sum_stats(query))
    assert list(found) == [("beta",), ("nightly",)]
    assert list(found[("nightly",)]) == list(glean.STATS)
    assert found[("nightly",)]["usage_hours"] == 5.0  # not the legacy row's 1000 hours
    assert found[("nightly",)]["main_crashes"] == 5.0
    assert found[("nightly",)]["rdd_crashes"] == 2 * (glean.STATS.index("rdd_crashes") + 1) / 3
    # the largest client's count merges by max: both rows' value once, not twice
    largest = "client_rdd_crashes_max"
    assert found[("nightly",)][largest] == (glean.STATS.index(largest) + 1) / 3
    assert glean_store.distinct_values("os_version") == ["10.0", "11.0"]
    legacy_found = dict(legacy.sum_stats(StatsQuery(by=("channel",))))
    assert list(legacy_found) == [("nightly",)]
    assert legacy_found[("nightly",)]["usage_hours"] == 1000.0
    assert len(legacy_found[("nightly",)]) == 35


def test_dimension_names_are_checked_against_the_familys_table() -> None:
    StatsQuery(by=("e10s_cohort",))  # a legacy dimension
    with pytest.raises(UsageError, match="unknown dimension 'e10s_cohort'") as raised:
        StatsQuery(by=("e10s_cohort",), family="glean")
    assert str(raised.value).endswith(", ".join(glean.DIMENSION_NAMES))
    with pytest.raises(UsageError, match="unknown dimension 'gfx_compositor'"):
        StatsQuery(where={"gfx_compositor": "d3d11"}, family="glean")


def test_a_query_of_another_family_is_refused(both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    with pytest.raises(ValueError, match="a legacy query on a glean store"):
        glean_store.sum_stats(StatsQuery())
    with pytest.raises(ValueError, match="a glean query on a legacy store"):
        legacy.sum_stats(StatsQuery(family="glean"))


# -- views -------------------------------------------------------------------------------------


def _wilson_hilferty(crashes: float, hours: float, effect: float) -> tuple[float, float]:
    """The lower and upper limits per 1,000 hours, as docs/rates.md writes them."""
    k = crashes / effect
    rate = crashes / hours
    low = 1 - 1 / (9 * k) - Z95 / (3 * math.sqrt(k)) if crashes else 0.0
    high = 1 - 1 / (9 * (k + 1)) + Z95 / (3 * math.sqrt(k + 1))
    return 1000 * rate * max(low, 0.0) ** 3, 1000 * (rate + effect / hours) * high ** 3


def _tiny_glean_table(store: Store) -> None:
    """Two rows of one group (nightly, 140.0, Windows) summing to 1000 hours, and a group
    (beta) without usage. One client in all: the small-sample factor is 1."""
    zero = dict.fromkeys(glean.STATS, 0.0)
    first = {**zero, "usage_hours": 300.0, "main_crashes": 2.0, "content_crashes": 4.0,
             "client_count": 1.0, "client_content_crashes_squared": 8.0, "ping_count": 3.0}
    second = {**zero, "usage_hours": 700.0, "main_crashes": 3.0, "startup_crashes": 1.0}
    beta = {**zero, "main_crashes": 1.0}
    rows = [glean_row("nightly", "10.0", **first), glean_row("nightly", "11.0", **second),
            glean_row("beta", **beta)]
    store.replace_date(DAY, rows, run(DAY, "g1", 3))


def test_the_glean_rates_view_gives_hand_computed_values(
        db_url: str, both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    legacy.replace_date(DAY, [legacy_row("nightly", 1e6)], run(DAY, "l1"))  # not in the view
    _tiny_glean_table(glean_store)
    found = named_rows(db_url, "SELECT * FROM glean_crash_rates_daily ORDER BY channel")
    columns = ["activity_date", "channel", "build_version", "os_name", "usage_hours",
               "client_count"]
    for crash in glean.CRASH_MEASURES:
        columns += [crash, f"{crash}_per_1000h", f"{crash}_lower", f"{crash}_upper"]
    assert list(found[0]) == columns
    beta, nightly = found
    assert [str(nightly["activity_date"]), nightly["channel"], nightly["build_version"],
            nightly["os_name"]] == ["2025-06-01", "nightly", "140.0", "Windows"]
    assert (nightly["usage_hours"], nightly["client_count"]) == (1000.0, 1.0)
    # main: 5 crashes in 1000 hours, no client sums: design effect 1, k = 5
    assert (nightly["main_crashes"], nightly["main_crashes_per_1000h"]) == (5.0, 5.0)
    lower, upper = _wilson_hilferty(5, 1000, 1)
    assert nightly["main_crashes_lower"] == pytest.approx(lower, rel=1e-12)
    assert nightly["main_crashes_upper"] == pytest.approx(upper, rel=1e-12)
    # Garwood's exact limits for 5 are 1.6235 and 11.668: the view is within 0.6% of them
    assert lower == pytest.approx(1.6235, abs=6e-3 * 11.668)
    assert upper == pytest.approx(11.668, rel=6e-3)
    # content: 4 crashes, client squares 8: design effect 8 / 4 = 2, k = 2
    assert nightly["content_crashes_per_1000h"] == 4.0
    lower, upper = _wilson_hilferty(4, 1000, 2)
    assert nightly["content_crashes_lower"] == pytest.approx(lower, rel=1e-12)
    assert nightly["content_crashes_upper"] == pytest.approx(upper, rel=1e-12)
    # startup: its own measure (1 crash); gpu: none, lower 0 and upper 1000 (1/H) root^3
    assert nightly["startup_crashes_per_1000h"] == 1.0
    assert nightly["gpu_crashes"] == 0.0 and nightly["gpu_crashes_lower"] == 0.0
    assert nightly["gpu_crashes_upper"] == pytest.approx(
        (1 - 1 / 9 + Z95 / 3) ** 3, rel=1e-12)
    # beta has no usage: no rate, no interval
    assert beta["main_crashes"] == 1.0 and beta["usage_hours"] == 0.0
    assert beta["main_crashes_per_1000h"] is None and beta["main_crashes_upper"] is None


def test_the_glean_flat_view_has_a_column_per_dimension_and_stat(
        db_url: str, both: tuple[ReadableStore, ReadableStore]) -> None:
    legacy, glean_store = both
    legacy.replace_date(DAY, [legacy_row("nightly")], run(DAY, "l1"))
    row = glean_row("nightly")
    glean_store.replace_date(DAY, [row], run(DAY, "g1"))
    [flat] = named_rows(db_url, "SELECT * FROM glean_crash_aggregates_flat")
    assert list(flat) == ["submission_date", "activity_date", *glean.DIMENSION_NAMES,
                          *glean.STATS]
    assert [str(flat["submission_date"]), str(flat["activity_date"])] == [
        "2025-06-02", "2025-06-01"]
    assert {name: flat[name] for name in glean.DIMENSION_NAMES} == row.dimensions
    assert {name: flat[name] for name in glean.STATS} == row.stats
    assert len(named_rows(db_url, "SELECT * FROM crash_aggregates_flat")) == 1


def test_the_view_bodies_are_made_from_the_familys_measures() -> None:
    assert "FROM glean_crash_aggregates GROUP BY" in rates_view("glean")
    assert "rdd_crashes_per_1000h" in rates_view("glean")
    assert "rdd_crashes" not in rates_view() and "plugin_crashes_upper" in rates_view()
    assert flat_view("glean").endswith("FROM glean_crash_aggregates")
    assert "e10s_cohort" not in flat_view("glean")


# -- migrations of a store made by the release before families ----------------------------------


def _as_release_before(url: str) -> None:
    """Make a store of this release look like one of the release before (legacy only)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(url)) as db:
            for view in sorted(GLEAN_VIEWS):
                db.execute(f"DROP VIEW {view}")
            for table in sorted(GLEAN_TABLES):
                db.execute(f"DROP TABLE {table}")
            db.execute("PRAGMA user_version = 2")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE glean_crash_aggregates, glean_crash_aggregates_runs "
                           "CASCADE")
        connection.execute("DELETE FROM crash_aggregates_schema WHERE version >= 6")


@pytest.mark.parametrize("opener", ["writer", "reader"])
def test_a_legacy_store_of_the_release_before_gains_the_glean_tables(
        db_url: str, opener: str) -> None:
    store = open_store(db_url)
    store.replace_date(DAY, [legacy_row("nightly")], run(DAY, "l1"))
    store.close()
    _as_release_before(db_url)
    assert not (GLEAN_TABLES | GLEAN_VIEWS) & relations(db_url)
    before = raw(db_url, "crash_aggregates"), raw(db_url, "crash_aggregates_runs")
    reopened = open_store(db_url, create=opener == "writer", family="glean")
    try:
        assert reopened.read_rows() == [] and reopened.read_runs() == []
        reopened.replace_date(DAY, [glean_row("beta")], run(DAY, "g1"))
        assert [r.dimensions["channel"] for _, r in reopened.read_rows()] == ["beta"]
    finally:
        reopened.close()
    assert (GLEAN_TABLES | GLEAN_VIEWS) <= relations(db_url)
    assert (raw(db_url, "crash_aggregates"), raw(db_url, "crash_aggregates_runs")) == before
    if db_url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(db_url)) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (sqlite.SCHEMA_VERSION,)
    else:
        assert [r["version"] for r in named_rows(
            db_url, "SELECT version FROM crash_aggregates_schema ORDER BY 1")] == [
            version for version, _ in postgres.MIGRATIONS]


# -- families_in -------------------------------------------------------------------------------


def test_families_in_lists_the_families_with_rows(db_url: str) -> None:
    legacy, glean_store = open_store(db_url), open_store(db_url, family="glean")
    try:
        assert families_in(db_url) == []
        glean_store.replace_date(DAY, [glean_row()], run(DAY, "g1"))
        assert families_in(db_url) == ["glean"]
        legacy.record_run(run(DAY, "l0"))  # a run without rows holds no rows
        assert families_in(db_url) == ["glean"]
        legacy.replace_date(DAY, [legacy_row()], run(DAY, "l1"))
        assert families_in(db_url) == ["legacy", "glean"]
        glean_store.replace_date(DAY, [], run(DAY, "g2"))
        assert families_in(db_url) == ["legacy"]
    finally:
        legacy.close()
        glean_store.close()


def test_families_in_a_store_of_the_release_before_migrates_nothing(db_url: str) -> None:
    store = open_store(db_url)
    store.replace_date(DAY, [legacy_row()], run(DAY, "l1"))
    store.close()
    _as_release_before(db_url)
    before = relations(db_url)
    assert families_in(db_url) == ["legacy"]
    assert relations(db_url) == before
    if db_url.startswith("sqlite"):
        with sqlite3.connect(sqlite.sqlite_path(db_url)) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (2,)


def test_families_in_a_missing_store_says_so_and_creates_nothing(tmp_path: Path,
                                                                 pg_url: str) -> None:
    path = tmp_path / "nowhere.db"
    url = f"sqlite:///{path}"
    with pytest.raises(StoreError, match="^no store at ") as raised:
        families_in(url)
    assert str(raised.value) == no_store(url)
    assert not path.exists()
    other = tmp_path / "other.db"  # some other program's file
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreError, match="^no store at "):
        families_in(f"sqlite:///{other}")
    assert relations(f"sqlite:///{other}") == {"notes"}
    with pytest.raises(StoreError, match="^no store at "):
        families_in(pg_url)
    assert relations(pg_url) == set()
    with pytest.raises(UsageError, match="unknown store URL"):
        families_in("mysql://x")


# -- PostgreSQL: one lock per family and date ---------------------------------------------------


def test_a_legacy_fill_holding_its_date_lets_a_glean_write_of_that_date_through(
        tmp_path: Path, pg_url: str) -> None:
    """A legacy job held inside its date's transaction (its lock taken, not committed): a
    legacy write of that date waits for it, a Glean write of that date does not."""
    pings = tmp_path / "pings"
    write_ping_file(pings / f"submission_date={DAY}" / "part-0.json",
                    [main_ping(f"doc-{n}", f"client-{n}", day="2025-06-01",
                               submission="20250602") for n in range(3)])
    open_store(pg_url).close()
    held = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": "postgres.before_commit",
            "CRASH_AGGREGATES_FAULT_ACTION": "pause"}
    command = [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(pings),
               "--from", DAY.isoformat(), "--to", DAY.isoformat(), "--db", pg_url,
               "--workers", "1"]
    legacy_writer = open_store(pg_url)
    glean_writer = open_store(pg_url, family="glean")
    try:
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=held) as job:
            assert job.stderr is not None
            while not (line := job.stderr.readline()).startswith("fault point "):
                assert line, "the legacy job ended before its commit"
            # the lock is held for as long as the job is paused: a wait is a lock timeout
            for writer in (legacy_writer, glean_writer):
                cast(postgres.PostgresStore, writer).connection.execute(
                    "SET lock_timeout = '200ms'")
            with pytest.raises(StoreError, match="lock timeout"):
                legacy_writer.replace_date(DAY, [legacy_row("blocked")], run(DAY, "l-blocked"))
            glean_writer.replace_date(DAY, [glean_row("through")], run(DAY, "g1"))
            out, err = job.communicate(timeout=120)
        assert job.returncode == 0, out + err
        assert [r.dimensions["channel"] for _, r in glean_writer.read_rows(DAY)] == ["through"]
        assert {r.dimensions["channel"] for _, r in legacy_writer.read_rows(DAY)} == {"nightly"}
        assert [r["run_id"] for r in glean_writer.read_runs()] == ["g1"]
    finally:
        legacy_writer.close()
        glean_writer.close()


# -- Parquet -----------------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, str]:
    """Every file under a folder by relative path, with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_parquet_glean_partitions_live_in_their_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    legacy, glean_store = ParquetStore(str(out)), ParquetStore(str(out), family="glean")
    assert (legacy.family, glean_store.family) == ("legacy", "glean")
    legacy.replace_date(DAY, [legacy_row("nightly")], run(DAY, "legacy-1"))
    rows = [glean_row("release"), glean_row("beta", main_crashes=3.0)]
    glean_store.replace_date(DAY, rows, run(DAY, "glean-1", 2))
    partition = out / "glean_crash_aggregates" / "v1" / f"submission_date={DAY}"
    assert sorted(p.name for p in partition.iterdir()) == ["_SUCCESS", LOCAL_FILE]
    assert glean_store.read_rows() == [("2025-06-02", rows[1]), ("2025-06-02", rows[0])]
    assert [r["run_id"] for r in glean_store.read_runs()] == ["glean-1"]
    assert [r.dimensions["channel"] for _, r in legacy.read_rows()] == ["nightly"]
    assert [r["run_id"] for r in legacy.read_runs()] == ["legacy-1"]
    legacy_files = _files(out / "crash_aggregates")
    glean_store.replace_date(DAY, [glean_row("aurora")], run(DAY, "glean-2"))  # the exchange
    glean_store.replace_date(OTHER, [glean_row("aurora")], run(OTHER, "glean-2"))
    glean_store.close()
    assert _files(out / "crash_aggregates") == legacy_files
    assert [r.dimensions["channel"] for _, r in ParquetStore(str(out), "glean").read_rows(DAY)
            ] == ["aurora"]
    glean_files = _files(out / "glean_crash_aggregates")
    legacy.replace_date(DAY, [legacy_row("beta")], run(DAY, "legacy-2"))
    legacy.close()
    assert _files(out / "glean_crash_aggregates") == glean_files


def test_opening_one_familys_parquet_store_never_clears_the_others_staging(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    ParquetStore(str(out)).replace_date(DAY, [legacy_row()], run(DAY, "legacy-1"))
    # what a killed legacy job left: an old partition moved out, the new one not moved in
    legacy_partition = out / "crash_aggregates" / "v1" / f"submission_date={DAY}"
    moved_out = out / "crash_aggregates" / "_staging" / f"legacy-1-999999999-{DAY}-old"
    legacy_partition.rename(moved_out)
    ParquetStore(str(out), family="glean").close()
    assert moved_out.is_dir() and not legacy_partition.exists()
    ParquetStore(str(out)).close()  # the legacy store's own open puts it back
    assert legacy_partition.is_dir() and not moved_out.exists()
