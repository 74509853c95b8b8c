"""The watchdog: run status, same-weekday volume and ignored-share checks, Parquet markers,
on real SQLite and PostgreSQL stores and a real fill."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import main_ping, write_ping_file
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.errors import UsageError
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.settings import resolve
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.parquet import ParquetStore
from crash_rate_aggregates.watchdog import (
    Finding,
    Thresholds,
    WatchdogReport,
    check,
    ignored_share,
    pings,
)

# today = Tuesday 2024-03-19, so the last checked date is Monday 2024-03-18.
TODAY = date(2024, 3, 19)
MONDAY = date(2024, 3, 18)
SUNDAY = date(2024, 3, 17)
SATURDAY = date(2024, 3, 16)


def counters(processed: int, ignored: int, crash: int = 0) -> dict[str, int]:
    """`processed` main pings (plus `crash` crash pings) and `ignored` lines spread over the
    five ignored counters; duplicates and sampled-out pings, which are in neither, on top."""
    spread = [ignored // 5 + (1 if i < ignored % 5 else 0) for i in range(5)]
    return {
        rules.MAIN_PROCESSED: processed - crash, rules.CRASH_PROCESSED: crash,
        rules.MAIN_IGNORED: spread[0], rules.CRASH_IGNORED: spread[1],
        rules.CRASH_NON_MAIN_IGNORED: spread[2], rules.OTHER_DOC_TYPE: spread[3],
        rules.MALFORMED_LINES: spread[4], rules.DUPLICATES: 77, rules.SAMPLED_OUT: 55,
    }


def rows_with_usage(day: date, hours: float) -> list[Aggregate]:
    """Two aggregates whose usage hours add up to `hours`."""
    stats = {name: 0.0 for name in rules.STATS}
    return [Aggregate(day.isoformat(), {"channel": channel}, {**stats, "usage_hours": part})
            for channel, part in (("release", hours * 0.75), ("beta", hours * 0.25))]


def completed(store: Any, day: date, run_id: str, processed: int, ignored: int, hours: float,
              started: datetime | None = None, crash: int = 0) -> None:
    rows = rows_with_usage(day, hours)
    when = started or datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    store.replace_date(day, rows, RunRecord(run_id, day, "completed", when, 12.5, len(rows),
                                            "file:///pings", "0.1.0",
                                            counters(processed, ignored, crash)))


def failed(store: Any, day: date, run_id: str, started: datetime, error: str) -> None:
    store.record_run(RunRecord(run_id, day, "failed", started, 1.0, 0, "file:///pings", "0.1.0",
                               counters(0, 0), error=error))


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def fill_history(store: Any) -> None:
    """Four earlier Mondays and one earlier Sunday, then the checked dates:

    Monday     processed  ignored  share  usage hours
    03-11          990       10     1%        100
    03-04         1188       12     1%        120
    02-26          873       27     3%         80
    02-19         1078       22     2%        110
    median        1034              1.5%       105
    03-18          500      100    16.7%        60   <- 48% of the pings, +15.2 points ignored

    Sunday 03-17: a completed run, then a later failed one; only one earlier Sunday (03-10).
    Saturday 03-16: no run at all.
    """
    for day, processed, ignored, hours in ((date(2024, 3, 11), 990, 10, 100.0),
                                           (date(2024, 3, 4), 1188, 12, 120.0),
                                           (date(2024, 2, 26), 873, 27, 80.0),
                                           (date(2024, 2, 19), 1078, 22, 110.0)):
        completed(store, day, f"run-{day}", processed, ignored, hours, crash=90)
    # older than 4 weeks: outside the window, must not count
    completed(store, date(2024, 2, 12), "run-old", 10, 0, 1.0)
    completed(store, MONDAY, "run-monday", 500, 100, 60.0, crash=40)
    completed(store, date(2024, 3, 10), "run-sunday-before", 800, 8, 50.0)
    completed(store, SUNDAY, "run-sunday-ok", 790, 10, 49.0, started=at(TODAY, 1))
    failed(store, SUNDAY, "run-sunday-bad", at(TODAY, 2), "no ping files for 2024-03-17")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Any]:
    store = open_store(f"sqlite:///{tmp_path / 'watch.db'}")
    yield store
    store.close()


def by_key(report: WatchdogReport) -> dict[tuple[date, str], Finding]:
    return {(f.day, f.check): f for f in report.findings}


EXPECTED_TEXT = """\
2024-03-16  run            FAIL  no run recorded for this date
2024-03-16  ping_volume    skip  skipped: no completed run
2024-03-16  usage_hours    skip  skipped: no completed run
2024-03-16  ignored_share  skip  skipped: no completed run with counted lines
2024-03-17  run            FAIL  last run run-sunday-bad failed: no ping files for 2024-03-17; \
the rows of run run-sunday-ok remain
2024-03-17  ping_volume    skip  skipped: 1 earlier Sunday with a completed run in the last 4 \
weeks, 2 needed
2024-03-17  usage_hours    skip  skipped: 1 earlier Sunday with a completed run in the last 4 \
weeks, 2 needed
2024-03-17  ignored_share  skip  skipped: 1 earlier Sunday with a completed run in the last 4 \
weeks, 2 needed
2024-03-18  run            ok    last run run-monday completed: 2 rows
2024-03-18  ping_volume    FAIL  500 pings, 48% of the median 1,034 of 4 earlier Mondays \
(fails below 50%)
2024-03-18  usage_hours    ok    60 usage hours, 57% of the median 105 of 4 earlier Mondays \
(fails below 50%)
2024-03-18  ignored_share  FAIL  16.67% of lines ignored, median 1.50% of 4 earlier Mondays \
(fails above +5 points)
watchdog 2024-03-16 to 2024-03-18: 4 of 12 checks FAILED, 6 skipped \
(on 2024-03-16, 2024-03-17, 2024-03-18)"""


def test_report_against_hand_computed_medians(sqlite_store: Any) -> None:
    fill_history(sqlite_store)
    report = check(sqlite_store, 3, today=TODAY)
    assert (report.first, report.last) == (SATURDAY, MONDAY)
    assert not report.ok
    found = by_key(report)
    volume = found[MONDAY, "ping_volume"]
    assert (volume.ok, volume.value, volume.median) == (False, 500, 1034)  # (990 + 1078) / 2
    usage = found[MONDAY, "usage_hours"]
    assert usage.ok and usage.value == pytest.approx(60)
    assert usage.median == pytest.approx(105)  # (100 + 110) / 2
    share = found[MONDAY, "ignored_share"]
    assert not share.ok
    assert share.value == pytest.approx(100 / 600)
    assert share.median == pytest.approx(0.015)  # (0.01 + 0.02) / 2
    assert report.as_text() == EXPECTED_TEXT
    assert [f.check for f in report.findings] == ["run", "ping_volume", "usage_hours",
                                                  "ignored_share"] * 3


def test_thresholds_are_configurable(sqlite_store: Any) -> None:
    fill_history(sqlite_store)
    # 500 >= 0.4 * 1034 = 413.6; 16.67% <= 1.5% + 20 points; 60 < 0.6 * 105 = 63
    report = check(sqlite_store, 1, today=TODAY,
                   thresholds=Thresholds(volume_ratio=0.4, ignored_jump=0.2))
    assert [(f.check, f.ok) for f in report.findings] == [
        ("run", True), ("ping_volume", True), ("usage_hours", True), ("ignored_share", True)]
    report = check(sqlite_store, 1, today=TODAY,
                   thresholds=Thresholds(volume_ratio=0.6, ignored_jump=0.2))
    assert [(f.check, f.ok) for f in report.findings] == [
        ("run", True), ("ping_volume", False), ("usage_hours", False), ("ignored_share", True)]
    assert report.findings[2].message == ("60 usage hours, 57% of the median 105 of 4 earlier "
                                          "Mondays (fails below 60%)")
    # two weeks back: 03-11 and 03-04 only, median (990 + 1188) / 2 = 1089
    report = check(sqlite_store, 1, today=TODAY, thresholds=Thresholds(weeks=2))
    assert report.findings[1].median == 1089
    # three earlier Mondays needed: Sunday's single one is still too few, Monday passes
    report = check(sqlite_store, 2, today=TODAY, thresholds=Thresholds(min_history=3))
    assert by_key(report)[SUNDAY, "ping_volume"].message == (
        "skipped: 1 earlier Sunday with a completed run in the last 4 weeks, 3 needed")


def test_ignored_share_definition() -> None:
    run = {**counters(90, 10, crash=15)}
    # ignored = 2 + 2 + 2 + 2 + 2 = 10 over 10 + 75 + 15 lines; duplicates/sampled-out excluded
    assert pings(run) == 90
    assert ignored_share(run) == pytest.approx(0.1)
    assert ignored_share(counters(0, 0)) is None


def test_last_run_is_the_latest_started_not_the_latest_written(sqlite_store: Any) -> None:
    day = MONDAY
    completed(sqlite_store, day, "run-late", 100, 0, 5.0, started=at(TODAY, 5))
    failed(sqlite_store, day, "run-early", at(TODAY, 3), "boom")  # recorded after, started first
    report = check(sqlite_store, 1, today=TODAY)
    assert report.findings[0] == Finding(day, "run", True, "last run run-late completed: 2 rows")
    failed(sqlite_store, day, "run-latest", at(TODAY, 6), "store down")
    report = check(sqlite_store, 1, today=TODAY)
    assert report.findings[0].message == (
        "last run run-latest failed: store down; the rows of run run-late remain")
    assert not report.ok


def test_default_period_ends_yesterday_utc(sqlite_store: Any) -> None:
    report = check(sqlite_store, 2)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert (report.first, report.last) == (yesterday - timedelta(days=1), yesterday)
    assert [f.day for f in report.findings if f.check == "run"] == [report.first, report.last]
    assert report.summary == (f"watchdog {report.first} to {report.last}: 2 of 8 checks FAILED, "
                              f"6 skipped (on {report.first}, {report.last})")


def test_as_dict_is_json_ready(sqlite_store: Any) -> None:
    fill_history(sqlite_store)
    report = check(sqlite_store, 1, today=TODAY)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is False
    assert (data["first"], data["last"]) == ("2024-03-18", "2024-03-18")
    assert data["thresholds"] == {"weeks": 4, "volume_ratio": 0.5, "ignored_jump": 0.05,
                                  "min_history": 2, "rows_ratio": 0.5}
    assert data["summary"] == ("watchdog 2024-03-18 to 2024-03-18: 2 of 4 checks FAILED "
                               "(on 2024-03-18)")
    assert data["findings"][1] == {
        "day": "2024-03-18", "check": "ping_volume", "ok": False, "skipped": False,
        "message": "500 pings, 48% of the median 1,034 of 4 earlier Mondays (fails below 50%)",
        "value": 500.0, "median": 1034.0}


def test_bad_arguments_are_usage_errors(sqlite_store: Any) -> None:
    with pytest.raises(UsageError, match="at least 1 day"):
        check(sqlite_store, 0)
    with pytest.raises(UsageError, match=r"volume ratio must be in \[0, 1\], not 1.5"):
        Thresholds(volume_ratio=1.5)


def test_thresholds_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = resolve({"watchdog_volume_ratio": 0.3},
                       env={"CRASH_AGGREGATES_WATCHDOG_WEEKS": "6",
                            "CRASH_AGGREGATES_WATCHDOG_IGNORED_JUMP": "0.1"})
    assert Thresholds.from_settings(settings) == Thresholds(weeks=6, volume_ratio=0.3,
                                                            ignored_jump=0.1)
    assert Thresholds.from_settings(resolve({}, env={})) == Thresholds()


@pytest.mark.postgres
def test_postgres_store_gives_the_same_findings(pg_url: str, sqlite_store: Any) -> None:
    store = open_store(pg_url)
    try:
        fill_history(store)
        fill_history(sqlite_store)
        on_pg = check(store, 3, today=TODAY)
    finally:
        store.close()
    assert on_pg.as_text() == EXPECTED_TEXT
    assert on_pg.as_dict() == check(sqlite_store, 3, today=TODAY).as_dict()


# -- a real fill, into SQLite and Parquet ---------------------------------------------------

FIRST = date(2016, 3, 12)
LAST = date(2016, 3, 14)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[str, Path]:
    for offset in range(3):
        day = FIRST + timedelta(days=offset)
        lines = [main_ping(f"id-{day}-{i}", f"client-{i}", day=day.isoformat(),
                           submission=day.strftime("%Y%m%d"), channel=channel)
                 for i, channel in enumerate(["release", "beta", "nightly"][: offset + 1])]
        write_ping_file(tmp_path / "pings" / f"submission_date={day}" / "part-0.json",
                        [*lines, b"{not json"])
    db = f"sqlite:///{tmp_path / 'filled.db'}"
    report = fill(FillSettings(str(tmp_path / "pings"), FIRST, LAST, db_url=db,
                               parquet_url=str(tmp_path / "parquet")))
    assert not report.failed
    return db, tmp_path / "parquet"


def test_after_a_real_fill_with_parquet(filled: tuple[str, Path]) -> None:
    db, parquet_root = filled
    store = open_store(db)
    parquet = ParquetStore(str(parquet_root))
    try:
        report = check(store, 3, today=LAST + timedelta(days=1), parquet=parquet)
        assert report.ok
        assert [(f.day, f.check, f.status) for f in report.findings if f.check in
                ("run", "parquet")] == [(FIRST + timedelta(days=i), name, "ok")
                                        for i in range(3) for name in ("run", "parquet")]
        assert by_key(report)[LAST, "parquet"].message == "_SUCCESS says 3 rows, as the database"
        assert report.summary == "watchdog 2016-03-12 to 2016-03-14: 6 of 15 checks passed, " \
                                 "9 skipped"

        # A partition without its marker, and one whose marker disagrees with the database.
        (parquet_root / "crash_aggregates/v1/submission_date=2016-03-12/_SUCCESS").unlink()
        marker_path = parquet_root / "crash_aggregates/v1/submission_date=2016-03-14/_SUCCESS"
        marker = json.loads(marker_path.read_text())
        marker["rows"] = 2
        marker_path.write_text(json.dumps(marker))
        run_id = marker["run_id"]
        report = check(store, 3, today=LAST + timedelta(days=1), parquet=parquet)
        found = by_key(report)
        assert not found[FIRST, "parquet"].ok
        assert found[FIRST, "parquet"].message == (
            f"no _SUCCESS marker in {parquet.partition(FIRST)}")
        assert found[date(2016, 3, 13), "parquet"].ok
        assert found[LAST, "parquet"].message == (
            f"_SUCCESS says 2 rows (run {run_id}), the database's last completed run "
            f"{run_id} wrote 3")
        assert [f.day for f in report.failures] == [FIRST, LAST]

        # A listed file that is gone.
        (marker_path.parent / marker["files"][0]).unlink()
        found = by_key(check(store, 1, today=LAST + timedelta(days=1), parquet=parquet))
        assert found[LAST, "parquet"].message == (
            f"_SUCCESS lists {marker['files'][0]}, which is missing")
    finally:
        store.close()


def write_rows(store: Any, day: date, run_id: str, rows: int, corrupt_files: int = 0) -> None:
    """A completed run of `day` that wrote `rows` rows (one per channel) and skipped
    `corrupt_files` files."""
    stats = {name: 0.0 for name in rules.STATS}
    aggregates = [Aggregate(day.isoformat(), {"channel": f"c{i}"}, {**stats, "usage_hours": 1.0})
                  for i in range(rows)]
    when = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    store.replace_date(day, aggregates, RunRecord(
        run_id, day, "completed", when, 1.0, rows, "file:///pings", "0.1.0",
        {**counters(100, 0), rules.CORRUPT_FILES: corrupt_files}))


def run_finding(store: Any, thresholds: Thresholds | None = None) -> Finding:
    report = check(store, 1, today=TODAY, thresholds=thresholds or Thresholds())
    [found] = [f for f in report.findings
               if f.check == "run"]
    return found


def test_a_date_with_no_rows_fails_the_run_check(sqlite_store: Any) -> None:
    write_rows(sqlite_store, MONDAY, "run-empty", 0)
    found = run_finding(sqlite_store)
    assert not found.ok
    assert found.message == "last run run-empty completed: 0 rows: the date has no data"


def test_skipped_corrupt_files_fail_the_run_check(sqlite_store: Any) -> None:
    write_rows(sqlite_store, MONDAY, "run-skipped", 40, corrupt_files=2)
    found = run_finding(sqlite_store)
    assert not found.ok
    assert found.message == (
        "last run run-skipped completed: 40 rows, but it skipped 2 corrupt files "
        "(--on-corrupt-file skip): their pings are missing; fix or remove the files and fill "
        "the date again")


def test_rows_far_below_the_same_weekday_median_fail_the_run_check(sqlite_store: Any) -> None:
    for weeks, rows in ((1, 100), (2, 120), (3, 80), (4, 110)):
        write_rows(sqlite_store, MONDAY - timedelta(weeks=weeks), f"run-{weeks}", rows)
    write_rows(sqlite_store, MONDAY, "run-few", 30)
    found = run_finding(sqlite_store)
    assert (found.ok, found.value, found.median) == (False, 30, 105)  # (100 + 110) / 2
    assert found.message == ("last run run-few completed: 30 rows, 29% of the median 105 of 4 "
                             "earlier Mondays (fails below 50%)")
    assert run_finding(sqlite_store, Thresholds(rows_ratio=0.25)).ok
    assert run_finding(sqlite_store, Thresholds(rows_ratio=0)).ok  # off
    settings = resolve({}, env={"CRASH_AGGREGATES_WATCHDOG_ROWS_RATIO": "0.2"})
    assert Thresholds.from_settings(settings).rows_ratio == 0.2
    with pytest.raises(UsageError, match=r"rows ratio must be in \[0, 1\], not 2"):
        Thresholds(rows_ratio=2)


def test_a_date_whose_files_were_all_skipped_is_flagged(tmp_path: Path) -> None:
    """The whole chain: fill --on-corrupt-file skip fails the date and keeps its rows, and the
    watchdog names it."""
    day = MONDAY
    folder = tmp_path / "pings" / f"submission_date={day}"
    write_ping_file(folder / "p.json", [main_ping("a", submission=day.strftime("%Y%m%d"),
                                                  day=day.isoformat())])
    db = f"sqlite:///{tmp_path / 'out.db'}"
    settings = FillSettings(str(tmp_path / "pings"), day, day, db_url=db, workers=1,
                            on_corrupt_file="skip")
    assert not fill(settings).failed
    (folder / "p.json").unlink()
    (folder / "p.json.gz").write_bytes(b"not gzip")
    report = fill(settings)
    assert report.failed == [day]
    store = open_store(db)
    try:
        assert len(store.read_rows(day)) == 1  # kept
        found = run_finding(store)
        assert not found.ok and "every ping file of 2024-03-18 is corrupt" in found.message
        assert store.read_runs(day)[-1][rules.CORRUPT_FILES] == 1
    finally:
        store.close()
