"""The whole product from the command line: generate a store, fill it, read rates; the demo."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from crash_rate_aggregates import rules
from crash_rate_aggregates.cli import cli


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("layout", ["partitioned", "flat"])
def test_generated_store_fills_and_every_line_is_counted(tmp_path: Path, layout: str) -> None:
    out = invoke("generate", "--out", str(tmp_path / "pings"), "--from", "2016-03-13",
                 "--to", "2016-03-14", "--pings", "1500", "--light", "--layout", layout)
    assert out.startswith("wrote 3,000 pings")
    db = tmp_path / "db.sqlite"
    invoke("fill", "--input", str(tmp_path / "pings"), "--from", "2016-03-13", "--to",
           "2016-03-14", "--db", f"sqlite:///{db}", "--workers", "2")
    with sqlite3.connect(db) as connection:
        runs = connection.execute(
            f"SELECT {', '.join(rules.COUNTERS)}, undated, status FROM crash_aggregates_runs"
        ).fetchall()
        totals = connection.execute(
            "SELECT sum(stats->>'ping_count'), sum(stats->>'main_crashes') FROM crash_aggregates"
        ).fetchone()
        rates = dict(connection.execute(
            "SELECT dimensions->>'channel', 1000 * sum(stats->>'main_crashes') "
            "/ sum(stats->>'usage_hours') FROM crash_aggregates GROUP BY 1").fetchall())
    assert [run[-1] for run in runs] == ["completed", "completed"]
    undated = runs[0][-2]
    assert sum(sum(run[:-2]) for run in runs) + undated == 3000
    main_index = rules.COUNTERS.index(rules.MAIN_PROCESSED)
    crash_index = rules.COUNTERS.index(rules.CRASH_PROCESSED)
    assert totals == (sum(r[main_index] for r in runs), sum(r[crash_index] for r in runs))
    # the messy lines of the generator show up; in a flat store malformed lines are undated
    messy = [rules.DUPLICATES, rules.CRASH_NON_MAIN_IGNORED, rules.OTHER_DOC_TYPE,
             rules.MAIN_IGNORED, rules.CRASH_IGNORED]
    messy.append(rules.MALFORMED_LINES if layout == "partitioned" else rules.UNDATED)
    found = {name: sum(run[rules.COUNTERS.index(name)] for run in runs)
             for name in messy if name != rules.UNDATED}
    assert all(found.values()), found
    assert (undated > 0) == (layout == "flat")
    assert rates["nightly"] > rates["release"]  # the population crashes more on nightly


def test_demo_prints_rates_and_says_where_the_database_is(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    out = invoke("demo", "--db", f"sqlite:///{db}", "--days", "2", "--pings", "400",
                 "--workers", "1")
    assert "Crashes per 1,000 usage hours" in out
    table = out[out.index("channel"):].splitlines()
    channels = [line.split()[0] for line in table[2:6]]
    assert channels == ["beta", "esr", "nightly", "release"]
    assert str(db) in out
    with sqlite3.connect(db) as connection:
        [(dates,)] = connection.execute(
            "SELECT count(DISTINCT submission_date) FROM crash_aggregates").fetchall()
    assert dates == 2
