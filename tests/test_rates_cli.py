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
    # distinct clients: 60 a build; the new build's 30 crashes came from clients c0 to c29.
    # Wilson's interval for 30 of 60, by hand (z = 1.959964): center 0.5, half = z / (1 +
    # z^2/60) * sqrt(0.25/60 + z^2/14400) = 1.842031 * 0.066584 = 0.122649.
    assert rows[NEW]["clients"] == 60 and rows[OLD]["clients"] == 60
    assert rows[NEW]["main_crashes"]["crashing_clients"] == 30
    assert rows[OLD]["main_crashes"]["crashing_clients"] == 6
    assert rows[NEW]["main_crashes"]["incidence"] == pytest.approx(
        {"value": 0.5, "lower": 0.377351, "upper": 0.622649}, abs=2e-6)
    assert rows[NEW]["crash_free_users"] == pytest.approx(
        {"value": 0.5, "lower": 0.377351, "upper": 0.622649}, abs=2e-6)
    assert rows[OLD]["crash_free_users"]["value"] == pytest.approx(0.9)
    assert rows[NEW]["content_crashes"]["crashing_clients"] == 0


def test_rates_table_and_csv(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 6, NEW: 30})
    code, out = invoke("rates", "--db", url, "--by", "channel", "--where", f"build_id={NEW}")
    assert code == 0
    header, rule, row = out.splitlines()[:3]
    assert header.split()[:8] == ["channel", "usage", "hours", "clients", "crash-free", "users",
                                  "[95%]", "main"]
    assert row.split()[:4] == ["nightly", "1,200", "60", "50.00%"] and "25.00 [" in row
    code, out = invoke("rates", "--db", url, "--by", "build_id", "--format", "csv")
    assert out.splitlines()[0].startswith(
        "build_id,usage_hours,client_count,clients,crash_free_users,crash_free_users_lower,"
        "crash_free_users_upper,main_crashes,main_crashes_rate,main_crashes_lower,"
        "main_crashes_upper,main_crashes_crashing_clients,main_crashes_incidence,")
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


# -- compare as a release gate: no data, no earlier build, days since release ------------------


def test_compare_without_data_for_the_candidate_or_baseline_exits_3(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 5, NEW: 40})
    typo = "20991231000000"
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={typo}")
    assert (code, out) == (3, f"error: no data for build_id={typo} in any submission date\n")
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}",
                       "--from", "2016-03-01", "--to", "2016-03-13")  # not ingested yet
    assert (code, out) == (3, f"error: no data for build_id={NEW} on nightly in submission "
                              "dates 2016-03-01 to 2016-03-13\n")
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}",
                       "--baseline", "build_id=20160101000000")
    assert code == 3
    assert out == ("error: no data for build_id=20160101000000 on nightly in any submission "
                   "date\n")
    assert "--baseline" in invoke("compare", "--help")[1] and "3 no data" in " ".join(
        invoke("compare", "--help")[1].split())


def test_compare_says_when_there_is_no_earlier_build(tmp_path: Path) -> None:
    url = filled(tmp_path, {OLD: 5, NEW: 40})
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={OLD}")
    assert (code, out) == (2, f"error: no earlier build_id than {OLD} on nightly: give "
                              "--baseline\n")


def lifetime_store(root: Path, days: dict[str, dict[str, tuple[int, int]]],
                   versions: dict[str, str] | None = None) -> Path:
    """Pings submitted on 2016-03-14: days[build][activity date] = (main pings of 20 hours, one
    client each, crash pings)."""
    lines: list[Any] = []
    for build, per_day in days.items():
        for day, (pings, crashes) in per_day.items():
            for number in range(pings):
                ping = main_ping(f"{build}-{day}-m{number}", f"{build}-{day}-c{number}",
                                 day=day, length=20 * 3600, build_id=build)
                ping["environment"]["build"]["version"] = (versions or {}).get(build, "48.0a1")
                lines.append(ping)
            for number in range(crashes):
                ping = crash_ping(f"{build}-{day}-x{number}", f"{build}-{day}-c{number % pings}",
                                  day=day)
                ping["environment"]["build"]["buildId"] = build
                ping["environment"]["build"]["version"] = (versions or {}).get(build, "48.0a1")
                lines.append(ping)
    write_ping_file(root / "submission_date=2016-03-14" / "p.json", lines)
    return root


def lifetime_db(tmp_path: Path, days: dict[str, dict[str, tuple[int, int]]],
                versions: dict[str, str] | None = None) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = lifetime_store(tmp_path / "pings", days, versions)
    assert not fill(FillSettings(str(store), date(2016, 3, 14), date(2016, 3, 14), url)).failed
    return url


EARLY, LATE = "20160307030204", "20160310030204"


def test_days_since_release_count_from_the_build_date(tmp_path: Path) -> None:
    # LATE was built on 2016-03-10; 2 pings dated 03-08 are a data error (40 hours), not the
    # start of its life. Its first 3 days are 03-10..03-12, EARLY's 03-07..03-09.
    url = lifetime_db(tmp_path, {
        EARLY: {"2016-03-07": (20, 2), "2016-03-08": (20, 2), "2016-03-09": (20, 2),
                "2016-03-12": (20, 9)},
        LATE: {"2016-03-08": (2, 1), "2016-03-10": (20, 3), "2016-03-11": (20, 3),
               "2016-03-12": (20, 3), "2016-03-13": (20, 9)},
    })
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={LATE}",
                       "--days-since-release", "3", "--format", "json", "--min-usage-hours", "1")
    assert code == 0, out
    report = json.loads(out)
    assert report["baseline"] == EARLY
    assert report["candidate_dates"] == ["2016-03-10", "2016-03-12"]
    assert report["baseline_dates"] == ["2016-03-07", "2016-03-09"]
    assert report["candidate_hours_before_build"] == pytest.approx(40.0)
    assert report["baseline_hours_before_build"] == 0
    main = report["results"][0]
    assert main["candidate"]["usage_hours"] == pytest.approx(60 * 20.0)
    assert main["candidate"]["crashes"] == 9 and main["baseline"]["crashes"] == 6
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={LATE}",
                       "--days-since-release", "3", "--min-usage-hours", "1")
    assert out.splitlines()[:2] == [
        f"build_id {LATE} against {EARLY} on nightly (activity 2016-03-10..2016-03-12 against "
        "2016-03-07..2016-03-09)",
        "usage before build date: 40.0 hours ignored (candidate; a data error: no session can "
        "start before its build)"]


def test_days_since_release_of_a_version_and_when_there_is_nothing(tmp_path: Path) -> None:
    # Version 49.0a1's first build id is of 2016-03-09: its days count from there.
    first_build, next_build = "20160309120000", "20160311120000"
    url = lifetime_db(tmp_path, {
        EARLY: {"2016-03-08": (10, 1)},
        first_build: {"2016-03-09": (10, 1), "2016-03-10": (10, 1)},
        next_build: {"2016-03-11": (10, 1), "2016-03-13": (10, 1)},
    }, versions={first_build: "49.0a1", next_build: "49.0a1"})
    code, out = invoke("compare", "--db", url, "--candidate", "build_version=49.0a1",
                       "--baseline", "build_version=48.0a1", "--days-since-release", "3",
                       "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["candidate_dates"] == ["2016-03-09", "2016-03-11"]
    assert report["results"][0]["candidate"]["usage_hours"] == pytest.approx(30 * 20.0)
    assert report["baseline_dates"] == ["2016-03-07", "2016-03-09"]  # 48.0a1: EARLY's date
    # A build whose first days are not in the store has no data there: exit 3, not a verdict.
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={next_build}",
                       "--baseline", "build_id=20160301000000", "--days-since-release", "2")
    assert (code, out) == (3, "error: no data for build_id=20160301000000 on nightly in "
                              "activity dates 2016-03-01 to 2016-03-02 (its first 2 days since "
                              "its build date)\n")
    code, out = invoke("compare", "--db", url, "--candidate", "channel=nightly",
                       "--baseline", "channel=beta", "--days-since-release", "2")
    assert code == 2 and "build_id=... or build_version=..." in out


# -- what the output says: dates, whole numbers -----------------------------------------------


def test_rates_default_to_every_stored_date_and_counts_are_integers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    root = tmp_path / "pings"
    for day in ("2016-03-13", "2016-03-14"):
        lines: list[Any] = [main_ping(f"{day}-m{n}", f"c{n}", day=day, submission=day,
                                      length=36_000, content=1) for n in range(26)]
        lines.append(crash_ping(f"{day}-x", "c0", day=day, submission=day))
        write_ping_file(root / f"submission_date={day}" / "p.json", lines)
    assert not fill(FillSettings(str(root), date(2016, 3, 13), date(2016, 3, 14), url)).failed
    code, out = invoke("rates", "--db", url, "--by", "channel", "--format", "json")
    [row] = json.loads(out)
    assert row["usage_hours"] == pytest.approx(520.0)  # both dates: every stored one
    assert row["client_count"] == 52 and type(row["client_count"]) is int
    assert row["main_crashes"]["crashes"] == 2 and type(row["main_crashes"]["crashes"]) is int
    assert type(row["content_crashes"]["crashes"]) is int
    code, out = invoke("rates", "--db", url, "--by", "channel", "--format", "csv")
    header, values = out.splitlines()
    record = dict(zip(header.split(","), values.split(","), strict=True))
    assert (record["client_count"], record["main_crashes"], record["content_crashes"]) == (
        "52", "2", "52")
    for command in ("rates", "compare"):
        help_text = " ".join(invoke(command, "--help")[1].split())
        assert "yesterday" not in help_text, command
        assert "(default: the first stored one)" in help_text
    code, out = invoke("compare", "--db", url, "--candidate", "build_id=20160314030215",
                       "--baseline", "build_id=20160314030215", "--format", "json")
    assert json.loads(out)["results"][0]["candidate"]["clients"] == 52


@pytest.mark.parametrize(("args", "message"), [
    (["rates", "--where", "channel=beta", "--where", "channel=nightly"],
     "error: --where names channel twice ('beta' and 'nightly')"),
    (["rates", "--from", "2016-03-14", "--to", "2016-03-10"],
     "error: --from 2016-03-14 is after --to 2016-03-10"),
    (["compare", "--candidate", f"build_id={NEW}", "--from", "2016-03-14", "--to", "2016-03-10"],
     "error: --from 2016-03-14 is after --to 2016-03-10"),
    (["compare", "--candidate", f"build_id={NEW}", "--days-since-release", "3", "--from",
      "2016-03-10"], "error: --days-since-release chooses each side's dates from its build date"),
    (["compare", "--candidate", "os_name=Linux"],
     "error: --candidate compares builds: write build_id=... or build_version=..."),
    (["compare", "--candidate", f"build_id={NEW}", "--baseline", "channel=beta"],
     "error: --baseline compares builds"),
])
def test_options_that_would_be_dropped_or_misread_are_usage_errors(
        tmp_path: Path, args: list[str], message: str) -> None:
    """Nothing a user asked for is dropped silently: each of these used to print a result."""
    url = filled(tmp_path, {OLD: 1, NEW: 1})
    code, out = invoke(*args, "--db", url)
    assert code == 2, out
    assert out.startswith(message), out
