"""The crash_free_users_daily table of PostgreSQL, kept by fill (stores/crash_free.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import crash_ping, main_ping, write_ping_file
from crash_rate_aggregates.fill import FillSettings, fill

pytestmark = pytest.mark.postgres
QUERY = ("SELECT activity_date::text, channel, os_name, clients, crashing_clients, "
         "round(crash_free_users::numeric, 6)::float FROM crash_free_users_daily "
         "ORDER BY 1, 2, 3")


def _fill(url: str, root: Path, day: date) -> None:
    report = fill(FillSettings(str(root), day, day, url))
    assert not report.failed


def test_each_activity_date_counts_a_client_once_late_pings_included(
        tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "pings"
    # Submitted 2016-03-14: activity 2016-03-13, clients a, b, c (b with a main crash), and
    # activity 2016-03-14, client a.
    write_ping_file(root / "submission_date=2016-03-14" / "p.json", [
        main_ping("m1", "a", day="2016-03-13"), main_ping("m2", "b", day="2016-03-13"),
        main_ping("m3", "c", day="2016-03-13"), crash_ping("x1", "b", day="2016-03-13"),
        main_ping("m4", "a", day="2016-03-14")])
    _fill(pg_url, root, date(2016, 3, 14))
    # 2 of 3 clients crash-free on 2016-03-13: 0.666667; 1 of 1 on 2016-03-14.
    with psycopg.connect(pg_url) as db:
        assert db.execute(QUERY).fetchall() == [
            ("2016-03-13", "nightly", "Windows_NT", 3, 1, 0.666667),
            ("2016-03-14", "nightly", "Windows_NT", 1, 0, 1.0)]
    # Submitted 2016-03-15: late pings of 2016-03-13 from a (seen) and d (new, crashed).
    write_ping_file(root / "submission_date=2016-03-15" / "p.json", [
        main_ping("m5", "a", day="2016-03-13", submission="20160315"),
        main_ping("m6", "d", day="2016-03-13", submission="20160315"),
        crash_ping("x2", "d", day="2016-03-13", submission="20160315")])
    _fill(pg_url, root, date(2016, 3, 15))
    # 2016-03-13 now has a, b, c, d (a once): 4 clients, 2 crashed (b, d): 0.5.
    with psycopg.connect(pg_url) as db:
        rows: list[Any] = db.execute(QUERY).fetchall()
    assert rows == [("2016-03-13", "nightly", "Windows_NT", 4, 2, 0.5),
                    ("2016-03-14", "nightly", "Windows_NT", 1, 0, 1.0)]
    # Re-running 2016-03-14 without b's crash: its rows are replaced, the table follows.
    write_ping_file(root / "submission_date=2016-03-14" / "p.json", [
        main_ping("m1", "a", day="2016-03-13"), main_ping("m2", "b", day="2016-03-13")])
    _fill(pg_url, root, date(2016, 3, 14))
    with psycopg.connect(pg_url) as db:
        assert db.execute(QUERY).fetchall() == [
            ("2016-03-13", "nightly", "Windows_NT", 3, 1, 0.666667)]
