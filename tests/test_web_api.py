"""The dashboard's JSON API and pages, in-process, on SQLite and PostgreSQL filled with a
generated week of pings plus a few hostile ones (dimension values that are HTML).

The sample is built by `fill_sample`, which test_web_browser.py and test_web_schema.py share.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient

from conftest import crash_ping, main_ping, with_search_path, write_ping_file
from crash_rate_aggregates import rates, rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.errors import StoreError
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.queries import StatsQuery
from crash_rate_aggregates.synth import generate_store
from crash_rate_aggregates.web import views
from crash_rate_aggregates.web.app import create_app
from crash_rate_aggregates.web.readonly import Limits, QueryTimeout, WebStore, open_readonly

FIRST = date(2016, 3, 8)
LAST = date(2016, 3, 14)
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
HOSTILE_HOURS = 5 * 10.0  # five pings of 10 hours on the hostile channel: under 100 hours


def hostile_pings() -> list[dict[str, Any]]:
    """Pings whose channel and country are HTML: they must show as text, never run."""
    pings: list[dict[str, Any]] = [
        main_ping(f"xss-{i}", f"xss-client-{i}", day="2016-03-14", submission="20160314",
                  length=36_000, channel=SCRIPT, geoCountry=IMG, content=1)
        for i in range(5)]
    pings.append(crash_ping("xss-crash", "xss-client-0", day="2016-03-14",
                            submission="20160314", channel=SCRIPT))
    return pings


def write_sample_pings(folder: Path) -> Path:
    """A week of light synthetic pings (seeded) plus the hostile ones."""
    pings = folder / "pings"
    generate_store(pings, FIRST, LAST, 700, seed=11, heavy=False, files_per_day=2)
    write_ping_file(pings / "submission_date=2016-03-14" / "part-hostile.json", hostile_pings())
    return pings


def fill_sample(pings: Path, db_url: str) -> None:
    report = fill(FillSettings(str(pings), FIRST, LAST, db_url=db_url, workers=1))
    assert not report.failed


@pytest.fixture(scope="session")
def sample_pings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_pings(tmp_path_factory.mktemp("web-sample"))


@pytest.fixture(scope="module")
def sqlite_url(sample_pings: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('web-sqlite') / 'rates.db'}"
    fill_sample(sample_pings, url)
    return url


@pytest.fixture(scope="module")
def postgres_url(sample_pings: Path, pg_base_url: str) -> Iterator[str]:
    """A schema of its own, filled once for the module, dropped afterwards."""
    import psycopg

    schema = f"test_web_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_base_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = with_search_path(pg_base_url, schema)
    fill_sample(sample_pings, url)
    yield url
    with psycopg.connect(pg_base_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[WebStore]:
    opened = open_readonly(db_url)
    yield opened
    opened.close()


@pytest.fixture
def client(store: WebStore) -> TestClient:
    return TestClient(create_app(store))


def python_sums(db_url: str, **where: str) -> dict[str, float]:
    """The 29 stats of every row with these dimension values (and submission dates), summed
    in Python from the rows as stored: a path independent of the SQL the API runs."""
    writable = open_store(db_url)
    try:
        rows = [row for _, row in writable.read_rows()
                if all(row.dimensions.get(k) == v for k, v in where.items())]
    finally:
        writable.close()
    return rates.add_stats(row.stats for row in rows)


def assert_error(response: Any, status: int, words: str) -> None:
    """The one error shape, exactly."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "message"}
    assert body["error"]["status"] == status
    assert words in body["error"]["message"]


# -- numbers ----------------------------------------------------------------------------------


def test_rates_by_channel_equal_the_rates_library_on_the_same_sums(
        client: TestClient, db_url: str) -> None:
    answer = client.get("/api/rates", params={"by": "channel", "first": "2016-03-08",
                                              "last": "2016-03-14"}).json()
    assert answer["query"] == {"by": ["channel"], "first": "2016-03-08", "last": "2016-03-14",
                               "date_kind": "submission", "per_date": False, "filters": {}}
    rows = {row["dimensions"]["channel"]: row for row in answer["rows"]}
    assert set(rows) == {"beta", "esr", "nightly", "release", SCRIPT}
    for channel, row in rows.items():
        sums = python_sums(db_url, channel=channel)
        assert row["usage_hours"] == pytest.approx(sums["usage_hours"], rel=1e-9)
        assert row["client_count"] == sums["client_count"]
        for crash in rules.CRASH_MEASURES:
            expected = rates.crash_rate(sums, crash)
            got = row["rates"][crash]
            assert got["crashes"] == expected.crashes
            assert got["rate"] == pytest.approx(expected.rate, rel=1e-9)
            assert got["lower"] == pytest.approx(expected.lower, rel=1e-9, abs=1e-12)
            assert got["upper"] == pytest.approx(expected.upper, rel=1e-9)
            assert got["method"] == expected.method
            assert got["enough_usage"] is expected.enough_usage
    hostile = rows[SCRIPT]
    assert hostile["usage_hours"] == pytest.approx(HOSTILE_HOURS)
    assert hostile["rates"]["main_crashes"]["crashes"] == 1
    assert hostile["rates"]["main_crashes"]["rate"] == pytest.approx(1000 / HOSTILE_HOURS)
    assert hostile["rates"]["main_crashes"]["enough_usage"] is False
    assert rows["release"]["rates"]["main_crashes"]["enough_usage"] is True


def test_filters_and_groups_narrow_the_sums(client: TestClient, db_url: str) -> None:
    answer = client.get("/api/rates", params={"by": "os_name", "channel": "nightly",
                                              "build_version": ""}).json()
    assert answer["query"]["filters"] == {"channel": "nightly"}
    assert answer["rows"], "nightly has usage on some OS"
    for row in answer["rows"]:
        sums = python_sums(db_url, channel="nightly", os_name=row["dimensions"]["os_name"])
        assert row["usage_hours"] == pytest.approx(sums["usage_hours"], rel=1e-9)
        assert row["rates"]["content_crashes"]["crashes"] == sums["content_crashes"]


def test_per_date_rows_cover_each_activity_date(client: TestClient, db_url: str) -> None:
    answer = client.get("/api/rates", params={"by": "", "per_date": "true",
                                              "date_kind": "activity", "first": "2016-03-10",
                                              "last": "2016-03-12"}).json()
    assert [row["date"] for row in answer["rows"]] == ["2016-03-10", "2016-03-11",
                                                       "2016-03-12"]
    assert all(row["dimensions"] == {} for row in answer["rows"])
    backwards = client.get("/api/rates", params={"first": "2016-03-12", "last": "2016-03-10"})
    assert backwards.status_code == 200 and backwards.json()["rows"] == []


def test_overview_is_daily_rates_by_channel_with_the_latest_day(client: TestClient) -> None:
    data = client.get("/api/overview").json()
    # No dates given: the data's last 28 days, here the whole week.
    assert data["selection"] == {"filters": {}, "first": "2016-03-08", "last": "2016-03-14",
                                 "date_kind": "activity"}
    assert data["crash_types"] == list(rules.CRASH_MEASURES)
    channels = {c["channel"]: c for c in data["channels"]}
    assert set(channels) == {"beta", "esr", "nightly", "release", SCRIPT}
    release = channels["release"]
    assert [p["date"] for p in release["series"]] == [
        f"2016-03-{day:02d}" for day in range(8, 15)]
    assert release["latest"] == release["series"][-1]
    hostile = channels[SCRIPT]
    assert [p["date"] for p in hostile["series"]] == ["2016-03-14"]
    assert hostile["latest"]["rates"]["main_crashes"]["enough_usage"] is False

    nightly = client.get("/api/overview", params={"channel": "nightly",
                                                  "first": "2016-03-12"}).json()
    assert [c["channel"] for c in nightly["channels"]] == ["nightly"]
    assert nightly["channels"][0]["series"][0]["date"] == "2016-03-12"


def test_compare_matches_the_rates_library(client: TestClient, db_url: str) -> None:
    answer = client.get("/api/compare", params={"candidate": "build_version=44.0.1",
                                                "min_usage_hours": "100"}).json()
    assert (answer["dimension"], answer["candidate"], answer["baseline"], answer["channel"]) \
        == ("build_version", "44.0.1", "44.0", "release")
    new = python_sums(db_url, channel="release", build_version="44.0.1")
    old = python_sums(db_url, channel="release", build_version="44.0")
    assert [r["crash"] for r in answer["results"]] == list(rules.CRASH_MEASURES)
    for result in answer["results"]:
        expected = rates.compare(new, old, result["crash"], min_usage_hours=100)
        assert result["verdict"] == expected.verdict
        assert result["ratio"] == pytest.approx(expected.ratio, rel=1e-9)
        assert result["lower"] == pytest.approx(expected.lower, rel=1e-9)
        assert result["candidate"]["usage_hours"] == pytest.approx(new["usage_hours"])
    assert answer["regression"] is any(r["verdict"] == "regression" for r in answer["results"])

    # Each side's first 60 days from its build date (44.0's builds are of January).
    by_days = client.get("/api/compare", params={"candidate": "build_version=44.0.1",
                                                 "baseline": "build_version=44.0",
                                                 "days_since_release": 60}).json()
    assert by_days["days_since_release"] == 60
    first, last = by_days["candidate_dates"]
    assert (date.fromisoformat(last) - date.fromisoformat(first)).days == 59


def test_compare_without_enough_usage_says_so(client: TestClient) -> None:
    # the hostile pings' build (50 usage hours on their channel) against itself
    answer = client.get("/api/compare", params={
        "candidate": "build_id=20160314030215", "channel": SCRIPT,
        "baseline": "build_id=20160314030215"}).json()
    assert {r["verdict"] for r in answer["results"]} == {"not enough usage yet"}
    assert all(r["ratio"] is None for r in answer["results"])


def test_dimension_values_and_runs(client: TestClient, db_url: str) -> None:
    assert client.get("/api/dimensions").json() == {"family": "legacy",
                                                     "dimensions": list(rules.DIMENSION_NAMES)}
    values = client.get("/api/dimensions/channel").json()
    assert values == {"family": "legacy", "dimension": "channel", "first": None, "last": None,
                      "values": sorted(["beta", "esr", "nightly", "release", SCRIPT])}
    assert client.get("/api/dimensions/country", params={"first": "2016-03-14"}).json()[
        "values"].count(IMG) == 1

    writable = open_store(db_url)
    try:
        stored = writable.read_runs()
    finally:
        writable.close()
    runs = client.get("/api/runs").json()["runs"]
    assert [r["submission_date"] for r in runs] == [r["submission_date"] for r in stored]
    assert len(runs) == 7
    for got, want in zip(runs, stored, strict=True):
        assert got["counters"] == {name: want[name] for name in got["counters"]}
        assert set(rules.COUNTERS) <= set(got["counters"])
    one = client.get("/api/runs", params={"first": "2016-03-14", "last": "2016-03-14"}).json()
    assert [r["submission_date"] for r in one["runs"]] == ["2016-03-14"]


def test_health_shows_each_dates_latest_run(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert [d["submission_date"] for d in health["days"]] == [
        f"2016-03-{day:02d}" for day in range(8, 15)]
    last = health["days"][-1]
    counters = last["latest"]["counters"]
    assert last["runs"] == 1 and last["latest"]["status"] == "completed"
    assert last["lines_read"] == sum(counters[name] for name in rules.COUNTERS)
    assert last["processed_share"] == pytest.approx(
        (counters["main_processed"] + counters["crash_processed"]) / last["lines_read"])
    assert counters["main_processed"] >= 5  # the hostile pings were processed too

    page = client.get("/health")
    assert page.status_code == 200
    assert "2016-03-14" in page.text and "main processed" in page.text


@pytest.mark.parametrize("backend",
                         ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_health_describes_the_run_that_committed_last(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two overlapping runs of one date: the one that started later committed first. The
    rows in the table are the other's, and that is the run the health page must name."""
    url = (f"sqlite:///{tmp_path / 'order.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    day = date(2016, 3, 14)
    row = Aggregate("2016-03-14", {"channel": "nightly"}, {"usage_hours": 1.0})
    writer = open_store(url)
    try:
        for run_id, started in (("started-late", datetime(2016, 3, 15, 2, tzinfo=UTC)),
                                ("started-early", datetime(2016, 3, 15, 1, tzinfo=UTC))):
            writer.replace_date(day, [row], RunRecord(
                run_id, day, "completed", started, 1.0, 1, "pings", "test",
                {name: 0 for name in rules.COUNTERS}))
    finally:
        writer.close()
    reader = open_readonly(url)
    try:
        health = TestClient(create_app(reader)).get("/api/health").json()
    finally:
        reader.close()
    [only] = health["days"]
    assert only["runs"] == 2
    assert only["latest"]["run_id"] == "started-early"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url", "status", "words"), [
    ("GET", "/api/rates?by=nope", 400, "unknown dimension 'nope'"),
    ("GET", "/api/rates?by=channel,os_name);DROP TABLE crash_aggregates;--", 400,
     "unknown dimension"),
    ("GET", "/api/rates?first=2016-13-01", 400, "first"),
    ("GET", "/api/rates?date_kind=weekly", 400, "date_kind"),
    ("GET", "/api/rates?per_date=maybe", 400, "per_date"),
    ("GET", "/api/rates?channel=a%00b", 400, "NUL"),
    ("GET", "/api/overview?first=yesterday", 400, "first"),
    ("GET", "/api/compare", 400, "candidate"),
    ("GET", "/api/compare?candidate=nonsense", 400, "DIMENSION=VALUE"),
    ("GET", "/api/compare?candidate=flavour=vanilla", 400, "unknown dimension 'flavour'"),
    ("GET", "/api/compare?candidate=build_version=44.0&days_since_release=0", 400,
     "days_since_release"),
    ("GET", "/api/compare?candidate=build_version=1.0", 404,
     "no data for build_version=1.0"),
    ("GET", "/api/dimensions/flavour", 404, "unknown dimension 'flavour'"),
    ("GET", "/api/nowhere", 404, "no such page"),
    ("POST", "/api/rates", 405, "Method Not Allowed"),
])
def test_errors_have_one_shape(client: TestClient, method: str, url: str, status: int,
                               words: str) -> None:
    assert_error(client.request(method, url), status, words)


def test_pages_show_errors_as_html_with_the_same_status(client: TestClient) -> None:
    response = client.get("/", params={"first": SCRIPT})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert SCRIPT not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert client.get("/nowhere").status_code == 404
    # A client that asks for JSON gets the JSON shape on a page too.
    assert_error(client.get("/nowhere", headers={"accept": "application/json"}), 404,
                 "no such page")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_a_query_past_the_time_limit_is_a_504(backend: str,
                                              request: pytest.FixtureRequest) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    slow = open_readonly(url, Limits(timeout_ms=1))
    try:
        response = TestClient(create_app(slow)).get(
            "/api/rates", params={"by": "build_id,os_version,country", "per_date": "true"})
    finally:
        slow.close()
    assert_error(response, 504, "longer than 1 ms")


def test_the_time_limit_stops_a_runaway_query(store: WebStore, db_url: str) -> None:
    limited = open_readonly(db_url, Limits(timeout_ms=300))
    try:
        endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                   "SELECT count(*) FROM n")
        with pytest.raises(QueryTimeout, match="longer than 300 ms"):
            limited.select(endless)
        assert limited.select("SELECT 1")[0][0] == 1  # the connection is still usable
    finally:
        limited.close()


ENDLESS = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
           "SELECT count(*) FROM n")
LIMIT_MS = 200
#: A generous bound on what a request may take past its limit, on a loaded machine.
BOUND_S = 20 * LIMIT_MS / 1000


def test_a_requests_deadline_covers_all_its_statements(db_url: str) -> None:
    """One deadline for the request: a statement started late gets only what is left, and
    once it has passed nothing more runs."""
    limited = open_readonly(db_url, Limits(timeout_ms=LIMIT_MS))
    try:
        request = limited.until(time.monotonic() + LIMIT_MS / 1000)
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match=f"the request took longer than {LIMIT_MS} ms"):
            request.select(ENDLESS)
        assert time.monotonic() - started < BOUND_S
        with pytest.raises(QueryTimeout, match="the request took longer"):
            request.select("SELECT 1")  # out of time: not even a trivial statement runs
        assert limited.select("SELECT 1")[0][0] == 1  # another request still can
    finally:
        limited.close()


def test_python_work_on_the_rows_counts_against_the_deadline(store: WebStore) -> None:
    deadline = time.monotonic() + 2  # ample for the query (some 20 ms), however loaded
    rows = store.until(deadline).sum_stats(StatsQuery(by=("channel",)))
    assert rows[0][0]  # the rows came back in time
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)  # now surely past the deadline
    with pytest.raises(QueryTimeout, match="the request took longer"):
        for _ in rows:  # as reports.rate_rows works out the intervals row by row
            pass


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on uvicorn in a thread, on a loopback port the OS picked: its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    started = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < started, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def fetch(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@contextmanager
def locked(backend: str, url: str) -> Iterator[None]:
    """Another session holds a lock that every read of crash_aggregates waits for: queries
    that would never end, without a big store."""
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url) as connection:  # one transaction, rolled back at the end
            connection.execute("LOCK TABLE crash_aggregates IN ACCESS EXCLUSIVE MODE")
            yield
            connection.rollback()
        return
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # (a store in rollback-journal mode: readers wait)
    try:
        yield
    finally:
        writer.execute("ROLLBACK")
        writer.close()


BURST = 50


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_a_burst_of_requests_ends_within_the_time_limit(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """50 requests at once for rates grouped by all 13 dimensions, each one's query blocked:
    each request is cut at its own deadline (504), or refused when no connection came free
    in time (503), instead of queueing behind the others' full time limits (50 x 200 ms)."""
    url = str(request.getfixturevalue(f"{backend}_url"))
    if backend == "sqlite":
        url = sqlite_copy(url, tmp_path / "copy.db")
        sqlite3.connect(tmp_path / "copy.db").execute("PRAGMA journal_mode = DELETE").close()
    store = open_readonly(url, Limits(timeout_ms=LIMIT_MS))
    by = ",".join(rules.DIMENSION_NAMES)
    try:
        with serving(create_app(store)) as base, locked(backend, url), \
                ThreadPoolExecutor(BURST) as pool:
            started = time.monotonic()
            answers = list(pool.map(fetch, [f"{base}/api/rates?by={by}"] * BURST))
            elapsed = time.monotonic() - started
    finally:
        store.close()
    for status, headers, body in answers:
        assert status in (503, 504)
        assert body == {"error": {"status": status, "message": body["error"]["message"]}}
        if status == 504:
            assert f"longer than {LIMIT_MS} ms" in body["error"]["message"]
        else:
            assert headers["retry-after"] == "1"
    assert elapsed < BOUND_S, f"{BURST} requests took {elapsed:.1f} s"


def test_more_rows_than_the_cap_is_a_400(db_url: str) -> None:
    capped = open_readonly(db_url, Limits(max_rows=5))
    try:
        client = TestClient(create_app(capped))
        assert_error(client.get("/api/rates", params={"by": "build_id"}), 400,
                     "more than 5 rows")
        assert len(client.get("/api/rates", params={"by": "channel"}).json()["rows"]) == 5
    finally:
        capped.close()


def sqlite_copy(sqlite_url: str, path: Path) -> str:
    """A copy of the SQLite sample (SQLite's backup, so the WAL's pages come along)."""
    source = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    target = sqlite3.connect(path)
    source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{path}"


def test_an_unreadable_store_is_a_503(sqlite_url: str, tmp_path: Path) -> None:
    url = sqlite_copy(sqlite_url, tmp_path / "copy.db")
    store = open_readonly(url)
    try:
        # The table goes away while the dashboard runs.
        writer = sqlite3.connect(tmp_path / "copy.db")
        writer.execute("DROP TABLE crash_aggregates")
        writer.commit()
        writer.close()
        client = TestClient(create_app(store))
        assert_error(client.get("/api/rates"), 503, "no such table")
        assert client.get("/").status_code == 503
    finally:
        store.close()


def test_a_database_without_the_tables_is_not_opened(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a database, but not a store
    with pytest.raises(StoreError, match="is not a crash-aggregates store .no table "
                                         "crash_aggregates, crash_aggregates_runs.: fill"):
        open_readonly(f"sqlite:///{empty}")
    assert sqlite3.connect(empty).execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100)
    with pytest.raises(StoreError, match="not a database"):
        open_readonly(f"sqlite:///{text}")
    assert text.read_text() == "not a database\n" * 100


@pytest.mark.postgres
def test_a_postgres_schema_without_the_tables_is_not_opened(pg_url: str) -> None:
    import psycopg

    with pytest.raises(StoreError, match="holds no crash-aggregates store .no table "
                                         "crash_aggregates, crash_aggregates_runs"):
        open_readonly(pg_url)
    with psycopg.connect(pg_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
    assert tables == (0,)  # nothing was created


# -- out-of-range parameters ------------------------------------------------------------------

ENDPOINTS = ["/api/rates", "/api/rates?per_date=true&by=", "/api/overview",
             "/api/compare?candidate=build_version%3D44.0.1",
             "/api/compare?candidate=build_version%3D44.0.1&baseline=build_version%3D44.0",
             "/api/dimensions/channel", "/api/runs", "/api/health"]
PAGES = ["/", "/compare?candidate=build_version%3D44.0.1", "/health"]
OUT_OF_RANGE = [
    ("last=9999-12-31", "9999-12-31 is out of range"),
    ("first=0001-01-01", "0001-01-01 is out of range"),
    ("first=0001-01-01&last=9999-12-31", "out of range"),
    ("date_kind=activity&last=9999-12-31", "out of range"),  # the filters add a week to it
    ("date_kind=activity&first=9999-12-25&last=9999-12-31", "out of range"),
    ("first=1969-12-31", "out of range"),
    ("last=3000-01-01", "use a date from 1970-01-01 to 2999-12-31"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("query", "words"), OUT_OF_RANGE)
def test_out_of_range_dates_are_a_400_on_every_endpoint(
        client: TestClient, path: str, query: str, words: str) -> None:
    if "date_kind" in query and not path.startswith(("/api/rates", "/api/overview",
                                                     "/api/compare")):
        query = query.replace("date_kind=activity&", "")
    response = client.get(f"{path}{'&' if '?' in path else '?'}{query}")
    assert_error(response, 400, words)


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(("query", "words"), OUT_OF_RANGE)
def test_out_of_range_dates_are_a_400_page(client: TestClient, path: str, query: str,
                                           words: str) -> None:
    response = client.get(f"{path}{'&' if '?' in path else '?'}{query}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert words in response.text


@pytest.mark.parametrize("path", ["/api/compare", "/compare"])
@pytest.mark.parametrize("query", [
    "days_since_release=99999999999999999999999999", "days_since_release=-9999999999999999",
    "days_since_release=" + "9" * 5000, "days_since_release=3651",
    "min_usage_hours=1e400", "min_usage_hours=-1e400", "min_usage_hours=nan",
    "min_usage_hours=1e13",
])
def test_huge_numbers_are_a_400(client: TestClient, path: str, query: str) -> None:
    response = client.get(f"{path}?candidate=build_version%3D44.0.1&{query}")
    assert response.status_code == 400
    if path.startswith("/api/"):
        assert_error(response, 400, query.split("=")[0])


@pytest.mark.parametrize("path", ["/api/compare", "/compare"])
def test_a_build_date_shifted_past_the_calendar_is_a_400(client: TestClient, path: str) -> None:
    """Days since release count from the build id's date: 3,650 days after 9999-12-31."""
    response = client.get(path, params={"candidate": "build_id=99991231000000",
                                        "baseline": "build_version=44.0",
                                        "days_since_release": 3650})
    assert response.status_code == 400
    if path.startswith("/api/"):
        assert_error(response, 400, "out of range")


def edge_store(sqlite_url: str, path: Path, day: date) -> str:
    """A store whose one row (a copy of a sample row) and run are dated `day`."""
    sample = open_store(sqlite_url)
    try:
        _, row = sample.read_rows()[0]
    finally:
        sample.close()
    url = f"sqlite:///{path}"
    store = open_store(url)
    try:
        store.replace_date(day, [Aggregate(day.isoformat(), row.dimensions, row.stats)],
                           RunRecord("edge", day, "completed", datetime(2016, 3, 15, tzinfo=UTC),
                                     1.0, 1, "file:///pings", "test", {}))
    finally:
        store.close()
    return url


@pytest.mark.parametrize("day", [date(1, 1, 3), date(9999, 12, 30)])
def test_stored_dates_at_the_calendars_ends_are_shown_without_an_error(
        sqlite_url: str, tmp_path: Path, day: date) -> None:
    """The default dates (the last 28 days) and the filters' extra week are worked out from
    the store's dates: at the calendar's ends they stop there instead of overflowing."""
    store = open_readonly(edge_store(sqlite_url, tmp_path / "edge.db", day))
    try:
        client = TestClient(create_app(store))
        for url in ("/", "/?date_kind=activity", "/health", "/api/overview", "/api/health",
                    "/api/runs"):
            assert client.get(url).status_code == 200, url
        overview = client.get("/api/overview").json()
        assert overview["selection"]["first"] == overview["selection"]["last"] == \
            day.isoformat()
        assert [d["submission_date"] for d in client.get("/api/health").json()["days"]] == [
            day.isoformat()]
    finally:
        store.close()


# -- safety -----------------------------------------------------------------------------------


def test_the_apps_connection_refuses_writes(store: WebStore, db_url: str) -> None:
    before = python_sums(db_url)
    for statement in ("DELETE FROM crash_aggregates",
                      "INSERT INTO crash_aggregates_runs (run_id) VALUES ('x')",
                      "CREATE TABLE intruder (x integer)",
                      "DROP TABLE crash_aggregates"):
        with pytest.raises(StoreError, match="read-?only"):
            store.select(statement)
    # Even the raw driver connection, under the store, refuses.
    with pytest.raises(Exception, match="read-?only"):
        store.connection.execute("DELETE FROM crash_aggregates")  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="read-only"):
        store.replace_date(LAST, [], None)  # type: ignore[arg-type]
    assert python_sums(db_url) == before


def test_serving_every_page_leaves_the_sqlite_file_unchanged(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store = open_readonly(sqlite_url)
    try:
        client = TestClient(create_app(store))
        for url in ("/", "/?channel=beta", "/compare?candidate=build_version%3D44.0.1",
                    "/health", "/api/rates", "/api/overview", "/api/runs", "/api/health",
                    "/api/dimensions/channel", "/api/compare?candidate=build_version%3D44.0.1"):
            assert client.get(url).status_code == 200, url
    finally:
        store.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("payload", [
    "' OR '1'='1", "nightly' --", "x\"); DROP TABLE crash_aggregates; --",
    "%' OR 1=1 OR '%", "\\'", "' UNION SELECT 1, 2, 3 --",
])
def test_injection_in_filter_values_matches_nothing(client: TestClient, db_url: str,
                                                    payload: str) -> None:
    answer = client.get("/api/rates", params={"by": "channel", "channel": payload})
    assert answer.status_code == 200
    assert answer.json()["rows"] == []
    assert client.get("/api/dimensions/channel", params={"first": "2016-03-08"}).json()[
        "values"] == sorted(["beta", "esr", "nightly", "release", SCRIPT])
    # And the table is intact.
    assert python_sums(db_url)["ping_count"] > 4000


def test_a_hostile_value_is_still_an_exact_filter(client: TestClient) -> None:
    answer = client.get("/api/rates", params={"by": "country", "channel": SCRIPT}).json()
    # The hostile main pings, and their crash ping (from conftest's FR).
    assert {r["dimensions"]["country"]: r["usage_hours"] for r in answer["rows"]} == {
        IMG: pytest.approx(HOSTILE_HOURS), "FR": 0.0}


def _json_block(html: str, element_id: str) -> Any:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>',
                      html, re.S)
    assert found, element_id
    return json.loads(found[1])


def test_hostile_values_render_as_text_on_the_page_and_in_the_filters(
        client: TestClient) -> None:
    html = client.get("/").text
    assert "<script>alert" not in html and "<img src=x" not in html
    escaped_script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # In the channel's heading, and as an option of the channel filter.
    assert f'<span class="value">{escaped_script}</span>' in html
    assert f'<option value="{escaped_script}" >{escaped_script}</option>' in html
    assert '<option value="&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" >' in html
    # The chart data is JSON, escaped for the script block, and reads back as the raw value.
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    channels = [c["channel"] for c in _json_block(html, "overview-data")["channels"]]
    assert SCRIPT in channels

    chosen = client.get("/", params={"channel": SCRIPT, "country": IMG}).text
    assert "<script>alert" not in chosen and "<img src=x" not in chosen
    assert f'<option value="{escaped_script}" selected>{escaped_script}</option>' in chosen
    assert [c["channel"] for c in _json_block(chosen, "overview-data")["channels"]] == [SCRIPT]

    compared = client.get("/compare", params={"candidate": f"build_id={SCRIPT}",
                                              "baseline": f"build_version={IMG}"}).text
    assert "<script>alert" not in compared and "<img src=x" not in compared
    assert f"build_id={escaped_script}" in compared


def test_pages_send_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script([^>]*)>", response.text)
    # Only the JSON block and the two shipped files: no inline code, nothing from elsewhere.
    assert sorted(scripts) == sorted([' type="application/json" id="overview-data"',
                                      ' src="/static/chart.umd.min.js"',
                                      ' src="/static/dashboard.js"'])
    chart = client.get("/static/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4" in chart.text[:200]


def test_openapi_describes_the_api_and_its_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/rates", "/api/overview", "/api/compare", "/api/dimensions",
            "/api/dimensions/{name}", "/api/runs", "/api/health"} <= set(spec["paths"])
    assert not [p for p in spec["paths"] if not p.startswith("/api/")]
    rates_get = spec["paths"]["/api/rates"]["get"]
    assert "422" not in rates_get["responses"]
    assert rates_get["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    names = {p["name"] for p in rates_get["parameters"]}
    assert set(rules.DIMENSION_NAMES) | {"by", "first", "last", "date_kind", "per_date",
                                         "family"} == names
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN's scripts
    # The dates' pattern says the range the app checks.
    first = next(p for p in rates_get["parameters"] if p["name"] == "first")
    pattern = re.compile(first["schema"]["pattern"])
    assert pattern.match(views.EARLIEST.isoformat()) and pattern.match(views.LATEST.isoformat())
    assert not pattern.match("1969-12-31") and not pattern.match("3000-01-01")


# -- the command ------------------------------------------------------------------------------


def test_serve_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "crash-aggregates serve" in result.output and "--query-timeout" in result.output


def test_serve_without_the_web_extra_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(cli, ["serve", "--db", "sqlite:///x.db"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: the dashboard needs uvicorn: pip install 'crash-rate-aggregates[web]'"]


def test_serve_on_a_missing_store_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: no SQLite store at {tmp_path / 'none.db'}: fill one first"]
    assert not (tmp_path / "none.db").exists()


def test_every_serve_option_has_help() -> None:
    serve = cli.commands["serve"]
    options = [param for param in serve.params if isinstance(param, click.Option)]
    assert {option.name for option in options} >= {"db_url", "host", "port", "timeout_ms",
                                                   "max_rows"}
    assert [option.name for option in options if not option.help] == []


def run_serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crash_rate_aggregates", "serve", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_serve_on_a_database_without_the_tables_fails_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    before = empty.read_bytes()
    done = run_serve("--db", f"sqlite:///{empty}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {empty} is not a crash-aggregates store (no table crash_aggregates, "
        "crash_aggregates_runs): fill one first"]
    assert empty.read_bytes() == before  # nothing was created in it


@pytest.mark.postgres
def test_serve_on_a_postgres_schema_without_the_tables_fails_in_one_line(pg_url: str) -> None:
    import psycopg

    done = run_serve("--db", pg_url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds no crash-aggregates store (no table" in lines[0]
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM pg_tables "
                                  "WHERE schemaname = current_schema()").fetchone() == (0,)


def test_serve_on_a_busy_port_fails_in_one_line(sqlite_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve("--db", sqlite_url, "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (another server listens there): stop it "
        "or choose another --port"]
    assert done.stdout == ""


def test_serve_serves_on_the_port_it_prints(sqlite_url: str) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "crash_rate_aggregates", "serve", "--db", sqlite_url,
         "--port", "0", "--query-timeout", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        found = re.match(r"crash-aggregates dashboard on http://127\.0\.0\.1:(\d+)/ reading "
                         r"sqlite:///\S+ read-only \(each request limited to 2,000 ms", first)
        assert found, first
        status, _, body = fetch(f"http://127.0.0.1:{found[1]}/api/dimensions")
        assert (status, body) == (200, {"family": "legacy",
                                        "dimensions": list(rules.DIMENSION_NAMES)})
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


def test_serve_stops_on_sigterm_without_fills_message(sqlite_url: str) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "crash_rate_aggregates", "serve", "--db", sqlite_url,
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdout.readline().startswith("crash-aggregates dashboard on http://")
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "interrupted:" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("url", ["/api/rates?from=1900-01-01", "/api/overview?lst=2016-03-14",
                                 "/api/dimensions?x=<script>"])
def test_an_unknown_api_parameter_is_a_400_naming_it(client: TestClient, url: str) -> None:
    # `from` is the CLI's word; the API's is `first`: it used to be ignored silently
    response = client.get(url)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"unknown parameter {url.split('?')[1].split('=')[0]!r}: ")


def test_compare_in_the_api_says_what_the_cli_says(client: TestClient) -> None:
    # a typo'd build is "no data" (404), as the CLI's exit 3, not "no earlier build"
    typo = client.get("/api/compare", params={"candidate": "build_id=2016030916160"})
    assert typo.status_code == 404
    assert typo.json()["error"]["message"].startswith("no data for build_id=2016030916160")
    other = client.get("/api/compare", params={"candidate": "os_name=Linux"})
    assert other.status_code == 400
    assert other.json()["error"]["message"].startswith("candidate compares builds")


def test_the_overview_shows_crash_free_users_beside_the_rates(client: TestClient) -> None:
    data = client.get("/api/overview").json()
    release = next(c for c in data["channels"] if c["channel"] == "release")["latest"]
    free = release["crash_free_users"]
    assert release["clients"] > 0 and 0 < free["lower"] <= free["value"] <= free["upper"] <= 1
    main = release["rates"]["main_crashes"]
    # crash-free users are the complement of the main-crash incidence
    assert free["value"] == pytest.approx(1 - main["incidence"]["value"])
    assert free["value"] == pytest.approx(1 - main["crashing_clients"] / release["clients"])
    page = client.get("/").text
    assert "Crash-free users:" in page
    assert f"{100 * free['value']:,.2f}%" in page  # the release channel's latest day
