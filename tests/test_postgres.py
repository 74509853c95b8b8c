"""The PostgreSQL store on a real server: schema, atomic replace under SIGKILL, concurrency,
credentials, and the seed's query as written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from conftest import main_ping, write_ping_file
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.stores import postgres
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.queries import rates_view

DAY = date(2016, 3, 14)
SECRET = "s3cret-Pa55word"


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql, args).fetchall()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql)


def fill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["fill", *args], catch_exceptions=False)
    return result.exit_code, result.output


def pings_with_distinct_rows(count: int, channel: str = "nightly") -> list[dict[str, Any]]:
    """`count` main pings, each its own aggregate (a distinct os_version)."""
    pings = []
    for number in range(count):
        ping = main_ping(f"doc-{number}", f"client-{number % 97}", channel=channel)
        ping["environment"]["system"]["os"]["version"] = f"10.0.{number}"
        pings.append(ping)
    return pings


# -- schema ------------------------------------------------------------------------------------


def test_schema_matches_the_seed_table(pg_url: str) -> None:
    open_store(pg_url).close()
    columns = query(pg_url, """
        SELECT column_name, data_type, is_nullable FROM information_schema.columns
        WHERE table_name = 'crash_aggregates' AND table_schema = current_schema()
        ORDER BY ordinal_position""")
    # the seed's four columns, then (migration 7) one nullable sketch per set of clients
    sketch_columns = ["clients_sketch", "main_crashes_clients_sketch",
                      "content_crashes_clients_sketch", "plugin_crashes_clients_sketch",
                      "gmplugin_crashes_clients_sketch",
                      "content_shutdown_crashes_clients_sketch", "gpu_crashes_clients_sketch"]
    assert columns == [("submission_date", "date", "NO"), ("activity_date", "date", "NO"),
                       ("dimensions", "jsonb", "NO"), ("stats", "jsonb", "NO"),
                       *((name, "bytea", "YES") for name in sketch_columns)]
    indexes = dict(query(pg_url, "SELECT indexname, indexdef FROM pg_indexes "
                                 "WHERE tablename = 'crash_aggregates' "
                                 "AND schemaname = current_schema()"))
    assert "(submission_date)" in indexes["crash_aggregates_submission_date"]
    assert "gin (dimensions jsonb_path_ops)" in indexes["crash_aggregates_dimensions"]


def test_schema_creation_is_idempotent(pg_url: str) -> None:
    for _ in range(3):
        store = open_store(pg_url)
        store.close()
    assert query(pg_url, "SELECT version FROM crash_aggregates_schema ORDER BY 1") == [
        (version,) for version, _ in postgres.MIGRATIONS]


def test_a_seed_database_is_adopted_without_losing_rows(pg_url: str) -> None:
    execute(pg_url, """
        CREATE TABLE crash_aggregates (submission_date date NOT NULL, activity_date date NOT NULL,
                                       dimensions jsonb NOT NULL, stats jsonb NOT NULL);
        INSERT INTO crash_aggregates VALUES
            ('2016-03-01', '2016-02-29', '{"channel": "nightly"}', '{"usage_hours": 5}')""")
    store = open_store(pg_url)
    assert [(d, r.dimensions) for d, r in store.read_rows()] == [
        ("2016-03-01", {"channel": "nightly"})]
    store.close()
    assert query(pg_url, "SELECT version FROM crash_aggregates_schema ORDER BY 1") == [
        (version,) for version, _ in postgres.MIGRATIONS]


def test_migration_4_replaces_the_rates_view_of_an_older_database(pg_url: str) -> None:
    # A database left at version 3 still has the symmetric normal interval in its view; the
    # next open brings it to the effective-count limits of docs/rates.md.
    open_store(pg_url).close()
    execute(pg_url, "DELETE FROM crash_aggregates_schema WHERE version >= 4")
    # an older body with the same columns (as the real one had): renamed inner columns mark it
    older = rates_view().replace("_high_root", "_older_root")
    execute(pg_url, f"CREATE OR REPLACE VIEW crash_rates_daily AS {older}")
    open_store(pg_url).close()
    definition = query(pg_url, "SELECT pg_get_viewdef('crash_rates_daily')")[0][0]
    assert "_high_root" in definition and "_older_root" not in definition


def test_migration_5_numbers_the_runs_of_an_older_database_in_their_order(pg_url: str) -> None:
    # A database left at version 4 has no commit numbers: its runs get them in the order
    # they were read before (start time), and the next record comes after them all.
    open_store(pg_url).close()
    execute(pg_url, "DELETE FROM crash_aggregates_schema WHERE version >= 5; "
                    "ALTER TABLE crash_aggregates_runs DROP COLUMN commit_seq")
    for run_id, started in (("late", "2016-03-15 05:00"), ("early", "2016-03-15 04:00")):
        execute(pg_url, "INSERT INTO crash_aggregates_runs (run_id, submission_date, status, "
                        "started_at, duration_seconds, rows_written, input_url, product_version)"
                        f" VALUES ('{run_id}', '2016-03-14', 'completed', '{started}+00', 1, 0,"
                        " '/pings', 'old')")
    store = open_store(pg_url)
    try:
        assert [run["run_id"] for run in store.read_runs(DAY)] == ["early", "late"]
        store.record_run(RunRecord("next", DAY, "failed", datetime(2016, 3, 1, tzinfo=UTC),
                                   0.0, 0, "/pings", "new", {}))
        assert [run["run_id"] for run in store.read_runs(DAY)] == ["early", "late", "next"]
    finally:
        store.close()
    assert query(pg_url, "SELECT run_id, commit_seq FROM crash_aggregates_runs ORDER BY 2") == [
        ("early", 1), ("late", 2), ("next", 3)]


def test_a_later_migration_keeps_rows(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(pg_url).close()
    execute(pg_url, "INSERT INTO crash_aggregates VALUES ('2016-03-01', '2016-03-01', "
                  "'{\"channel\": \"beta\"}', '{\"usage_hours\": 2}')")
    later = (*postgres.MIGRATIONS,
             (99, "ALTER TABLE crash_aggregates_runs ADD COLUMN host text"))
    monkeypatch.setattr(postgres, "MIGRATIONS", later)
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", 99)
    open_store(pg_url).close()
    assert query(pg_url, "SELECT version FROM crash_aggregates_schema ORDER BY 1") == [
        (version,) for version, _ in later]
    assert query(pg_url, "SELECT count(*) FROM crash_aggregates") == [(1,)]
    monkeypatch.undo()
    with pytest.raises(Exception, match="newer than this release knows"):
        open_store(pg_url)


# -- atomic replace ------------------------------------------------------------------------------


def test_sigkill_mid_copy_keeps_previous_rows(tmp_path: Path, pg_url: str) -> None:
    folder = tmp_path / "pings" / "submission_date=2016-03-14"
    write_ping_file(folder / "part-0.json", pings_with_distinct_rows(3))
    common = ["--input", str(tmp_path / "pings"), "--from", "2016-03-14", "--to", "2016-03-14",
              "--db", pg_url, "--workers", "1"]
    assert fill(*common)[0] == 0
    before = query(pg_url, "SELECT dimensions, stats FROM crash_aggregates ORDER BY 1::text")
    assert len(before) == 3

    write_ping_file(folder / "part-0.json", pings_with_distinct_rows(120_000, channel="beta"))
    job = subprocess.Popen([sys.executable, "-m", "crash_rate_aggregates", "fill", *common],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            copying = query(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                    "'crash-aggregates' AND query LIKE 'COPY crash_aggregates%%' "
                                    "AND state = 'active'")
            if copying:
                job.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        assert job.wait(timeout=30) == -signal.SIGKILL, "the job ended before its COPY was seen"
    finally:
        if job.poll() is None:
            job.kill()
    # the server notices the dead client and rolls its transaction back
    deadline = time.monotonic() + 30
    while query(pg_url, "SELECT 1 FROM pg_stat_activity WHERE application_name = "
                        "'crash-aggregates'") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert query(pg_url, "SELECT dimensions, stats FROM crash_aggregates ORDER BY 1::text") == \
        before
    code, _ = fill(*common)
    assert code == 0
    assert query(pg_url, "SELECT count(*), count(DISTINCT dimensions), "
                         "min(dimensions->>'channel') FROM crash_aggregates") == \
        [(120_000, 120_000, "beta")]


def test_parallel_runs_of_one_date_leave_no_duplicates(tmp_path: Path, pg_url: str) -> None:
    store = tmp_path / "pings"
    write_ping_file(store / "submission_date=2016-03-14" / "part-0.json",
                    pings_with_distinct_rows(20_000))
    command = [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(store),
               "--from", "2016-03-14", "--to", "2016-03-14", "--db", pg_url, "--workers", "1"]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)]
    outputs = [job.communicate(timeout=180) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    assert query(pg_url, "SELECT count(*), count(DISTINCT dimensions) FROM crash_aggregates") == \
        [(20_000, 20_000)]
    assert query(pg_url, "SELECT count(*) FROM crash_aggregates_runs "
                         "WHERE status = 'completed'") == [(3,)]


# -- credentials ---------------------------------------------------------------------------------


def test_server_down_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://crash:{SECRET}@127.0.0.1:1/test"
    code, output = fill("--input", str(tmp_path), "--db", url)
    assert code == 1
    assert output.count("\n") == 1
    assert output.startswith("error: cannot connect to PostgreSQL at "
                             "postgresql://crash:***@127.0.0.1:1/test: ")
    assert SECRET not in output


def test_refused_login_is_one_line_without_the_password(pg_base_url: str,
                                                        tmp_path: Path) -> None:
    host = pg_base_url.split("@", 1)[1]
    url = f"postgresql://no_such_role:{SECRET}@{host}"
    code, output = fill("--input", str(tmp_path), "--db", url, "--from", "2016-03-14",
                        "--to", "2016-03-14")
    assert code == 1
    assert output.count("\n") == 1
    assert 'role "no_such_role" does not exist' in output
    assert SECRET not in output


def test_pgpassword_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    code, output = fill("--input", str(tmp_path), "--db", "postgresql://u@127.0.0.1:1/x")
    assert code == 1 and SECRET not in output


def test_connection_from_pg_environment_variables(pg_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    for name, key in [("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"),
                      ("PGDATABASE", "dbname"), ("PGOPTIONS", "options")]:
        monkeypatch.setenv(name, str(info[key]))
    store = tmp_path / "pings"
    write_ping_file(store / "submission_date=2016-03-14" / "p.json", [main_ping()])
    code, output = fill("--input", str(store), "--from", "2016-03-14", "--to", "2016-03-14",
                        "--db", "postgresql://")
    assert code == 0, output
    assert query(pg_url, "SELECT count(*) FROM crash_aggregates") == [(1,)]


# -- queries -------------------------------------------------------------------------------------


def test_the_seed_query_works_as_written(tmp_path: Path, pg_url: str) -> None:
    store = tmp_path / "pings"
    write_ping_file(store / "submission_date=2016-03-14" / "p.json", [
        main_ping("a", "c1", length=7200), main_ping("b", "c2", length=3600, day="2016-03-13"),
        main_ping("c", "c3", length=3600, channel="beta"),
        {**main_ping("d", "c1"), "type": "crash",
         "meta": {**main_ping()["meta"], "docType": "crash"},
         "payload": {"crashDate": "2016-03-14"}},
    ])
    assert fill("--input", str(store), "--from", "2016-03-14", "--to", "2016-03-14",
                "--db", pg_url)[0] == 0
    [(rate,)] = query(pg_url, "SELECT sum((stats->>'main_crashes')::float) / "
                              "sum((stats->>'usage_hours')::float) FROM crash_aggregates "
                              "WHERE dimensions->>'channel' = 'nightly' "
                              "AND submission_date = '2016-03-14'")
    assert rate == pytest.approx(1 / 3)


def test_password_in_url_is_redacted() -> None:
    assert postgres.redact(f"postgresql://u:{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert postgres.redact(f"postgresql://h/db?password={SECRET}&x=1") == \
        "postgresql://h/db?password=***&x=1"
    assert os.environ.get("PGPASSWORD") != SECRET



def test_the_executors_get_the_drivers_pgpassword_when_the_url_has_none() -> None:
    # Spark's executors on a cluster do not inherit the driver's environment: the staging
    # load's conninfo carries PGPASSWORD; a password in the URL stays the one used
    from psycopg.conninfo import conninfo_to_dict

    from crash_rate_aggregates.stores.postgres import loader_conninfo

    url = "postgresql://crash@db.example:5432/stats"
    assert loader_conninfo(url, None) == url
    assert loader_conninfo(url, "") == url
    given = conninfo_to_dict(loader_conninfo(url, "s3cr'et \\x"))
    assert given == {"user": "crash", "host": "db.example", "port": "5432", "dbname": "stats",
                     "password": "s3cr'et \\x"}
    own = "postgresql://crash:inurl@db.example/stats"
    assert loader_conninfo(own, "s3cr'et") == own
