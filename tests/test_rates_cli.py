"""`rates` and `compare` from the command line, and the SQL views, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from conftest import crash_ping, main_ping, write_ping_file
from crash_rate_aggregates import rates, rules
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.stores.queries import RATES_VIEW_DIMENSIONS, StatsQuery
from crash_rate_aggregates.synth import generate_store

OLD, NEW = "20160301030204", "20160308030204"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def build_store(root: Path, crashes: dict[str, int], hours_each: float = 20.0,
                pings: int = 60) -> Path:
    """Two nightly builds: `pings` main pings of `hours_each` hours (one client each) and
    crashes[build] crash pings spread over those clients."""
    lines: list[Any] = []
    for build in (OLD, NEW):
        for number in range(pings):
            lines.append(main_ping(f"{build}-m{number}", f"{build}-c{number}",
                                   length=int(hours_each * 3600), build_id=build))
        for number in range(crashes[build]):
            ping = crash_ping(f"{build}-x{number}", f"{build}-c{number % pings}")
            ping["environment"]["build"]["buildId"] = build
            lines.append(ping)
    write_ping_file(root / "submission_date=2016-03-14" / "p.json", lines)
    return root


def filled(tmp_path: Path, crashes: dict[str, int], **kwargs: Any) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = build_store(tmp_path / "pings", crashes, **kwargs)
    assert not fill(FillSettings(str(store), date(2016, 3, 14), date(2016, 3, 14), url)).failed
    return url


def test_rates_json_matches_a_hand_computation(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 6, NEW: 30})
    code, out = invoke("rates", "--db", url, "--by", "build_id", "--from", "2016-03-14",
                       "--to", "2016-03-14", "--format", "json")
    assert code == 0, out
    rows = {row["build_id"]: row for row in json.loads(out)}
    assert rows[NEW]["usage_hours"] == pytest.approx(1200.0)
    assert rows[NEW]["client_count"] == 60
    assert rows[NEW]["main_crashes"]["rate"] == pytest.approx(1000 * 30 / 1200)  # 25 /1000h
    assert rows[NEW]["main_crashes"]["method"] == "exact"
    assert rows[OLD]["main_crashes"]["rate"] == pytest.approx(5.0)
    assert rows[OLD]["main_crashes"]["method"] == "exact"
    low, high = rows[OLD]["main_crashes"]["lower"], rows[OLD]["main_crashes"]["upper"]
    assert low < 5.0 < high and high - 5.0 > 5.0 - low  # exact limits are asymmetric


def test_rates_table_and_csv(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 6, NEW: 30})
    code, out = invoke("rates", "--db", url, "--by", "channel", "--where", f"build_id={NEW}")
    assert code == 0
    header, rule, row = out.splitlines()[:3]
    assert header.split()[:4] == ["channel", "usage", "hours", "clients"]
    assert row.startswith("nightly") and "25.00 [" in row
    code, out = invoke("rates", "--db", url, "--by", "build_id", "--format", "csv")
    assert out.splitlines()[0].startswith("build_id,usage_hours,client_count,main_crashes,")
    assert len(out.splitlines()) == 3


def test_rates_rejects_unknown_dimensions_in_one_line(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 1, NEW: 1})
    code, out = invoke("rates", "--db", url, "--by", "channel;DROP TABLE crash_aggregates")
    assert code == 2
    assert out.startswith("error: unknown dimension 'channel;DROP TABLE crash_aggregates'")
    code, out = invoke("rates", "--db", url, "--where", "channel")
    assert code == 2 and "write DIMENSION=VALUE" in out


def test_compare_flags_a_regression_against_the_previous_build(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 5, NEW: 40})
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}")
    assert code == 1, out
    assert out.splitlines()[0] == f"build_id {NEW} against {OLD} on nightly"
    main = next(line for line in out.splitlines() if line.startswith("main"))
    assert main.split()[-1] == "regression"
    assert "8.00 [" in main  # ratio 40/5 on equal usage


def test_compare_no_change_and_not_enough_usage(tmp_path: Path) -> None:
    url = filled(tmp_path / "same", {OLD: 30, NEW: 31})
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}",
                       "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["baseline"] == OLD and result["regression"] is False
    assert result["results"][0]["verdict"] == "no significant change"
    url = filled(tmp_path / "small", {OLD: 1, NEW: 9}, pings=10)  # 200 hours each
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}")
    assert code == 0 and "not enough usage yet" in out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("views") / "pings"
    generate_store(root, date(2016, 3, 10), date(2016, 3, 14), 800, heavy=False)
    return root


def _fill(store: Path, url: str) -> None:
    assert not fill(FillSettings(str(store), date(2016, 3, 10), date(2016, 3, 14), url)).failed


def _views(url: str) -> tuple[list[tuple[Any, ...]], list[str], list[tuple[Any, ...]]]:
    rates_sql = "SELECT * FROM crash_rates_daily ORDER BY 1, 2, 3, 4"
    flat_sql = "SELECT * FROM crash_aggregates_flat"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            cursor = db.execute(rates_sql)
            names = [c[0] for c in cursor.description]
            return cursor.fetchall(), names, db.execute(flat_sql).fetchall()
    with psycopg.connect(url) as db:
        cursor = db.execute(rates_sql)
        names = [c.name for c in cursor.description or []]
        return cursor.fetchall(), names, db.execute(flat_sql).fetchall()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_views_agree_with_the_rates_library(generated: Path, tmp_path: Path, backend: str,
                                            request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("pg_url") if backend == "postgres"
           else f"sqlite:///{tmp_path / 'v.db'}")
    _fill(generated, url)
    rows, names, flat = _views(url)
    store = open_store(url)
    expected = dict(store.sum_stats(StatsQuery(by=RATES_VIEW_DIMENSIONS, date_kind="activity",
                                               per_date=True)))
    table_rows = store.read_rows()
    store.close()
    assert len(flat) == len(table_rows)
    assert len(rows) == len(expected) > 20
    checked = 0
    for row in rows:
        record = dict(zip(names, row, strict=True))
        day = str(record["activity_date"])
        stats = expected[(day, *(record[d] for d in RATES_VIEW_DIMENSIONS))]
        assert record["usage_hours"] == pytest.approx(stats["usage_hours"])
        for crash in rules.CRASH_MEASURES:
            if stats["usage_hours"] == 0:
                assert record[f"{crash}_per_1000h"] is None
                continue
            expected_rate = rates.crash_rate(stats, crash)
            assert expected_rate.upper is not None and expected_rate.lower is not None
            assert record[f"{crash}_per_1000h"] == pytest.approx(expected_rate.rate)
            # The view's cube-root approximation of Garwood's limits (docs/rates.md): the upper
            # limit within 0.6%, the lower one within 0.6% of the upper.
            assert record[f"{crash}_upper"] == pytest.approx(expected_rate.upper, rel=6e-3)
            assert record[f"{crash}_lower"] == pytest.approx(
                expected_rate.lower, abs=6e-3 * expected_rate.upper)
            checked += stats[crash] > 0
    assert checked > 10
