"""`crash-aggregates fill` end to end, through the command line, on real files and SQLite."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import crash_ping, main_ping, write_ping_file
from crash_rate_aggregates.cli import cli

StoreMaker = Callable[..., Path]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def table(db: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT submission_date, activity_date, dimensions->>'channel', stats "
            "FROM crash_aggregates ORDER BY 1, 2, 3").fetchall()


def test_fill_partitioned_store(make_store: StoreMaker, tmp_path: Path) -> None:
    store = make_store({
        "2016-03-14": [main_ping("a", length=7200, content=2), main_ping("a"),
                       crash_ping("c1"), b"{not json", b"", main_ping("b", channel="beta")],
        "2016-03-15": [main_ping("d", submission="20160315", day="2016-03-15")],
    })
    db = tmp_path / "out.db"
    code, out, err = run("fill", "--input", str(store), "--from", "2016-03-14",
                         "--to", "20160315", "--db", f"sqlite:///{db}", "--workers", "1")
    assert code == 0, err
    assert out.splitlines()[0].startswith("2016-03-14 ok: 2 rows")
    assert ("main_processed=2 main_ignored=0 crash_processed=1 crash_ignored=0 "
            "crash_non_main_ignored=0 other_doc_type=0 malformed_lines=1 duplicates=1 "
            "sampled_out=0") in out.splitlines()[0]
    rows = table(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("2016-03-14", "2016-03-14", "beta"),
        ("2016-03-14", "2016-03-14", "nightly"),
        ("2016-03-15", "2016-03-15", "nightly"),
    ]
    with sqlite3.connect(db) as connection:
        nightly = connection.execute(
            "SELECT stats->>'usage_hours', stats->>'content_crashes', stats->>'main_crashes', "
            "stats->>'client_count' FROM crash_aggregates WHERE submission_date = '2016-03-14' "
            "AND dimensions->>'channel' = 'nightly'").fetchone()
    assert nightly == (2.0, 2.0, 1.0, 1.0)


def test_fill_flat_store_counts_undated(make_store: StoreMaker, tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_ping_file(root / "a.ndjson.gz", [
        main_ping("a", submission="2016-03-14"),
        main_ping("b", submission="20160315", day="2016-03-15"),
        main_ping("c", submission="20160316", day="2016-03-16"),  # outside the dates: skipped
        main_ping("d", submission="2016-02-30"),  # no such day: undated
        b"[1, 2]",  # malformed: no date to count it under
    ])
    db = tmp_path / "flat.db"
    code, out, _ = run("fill", "--input", str(root), "--min-submission-date", "2016-03-14",
                       "--max-submission-date", "2016-03-15", "--db", f"sqlite:///{db}")
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()] == ["2016-03-14 ok", "2016-03-15 ok"]
    assert all("main_processed=1 " in line and "undated(run)=2" in line
               for line in out.splitlines())
    with sqlite3.connect(db) as connection:
        runs = connection.execute(
            "SELECT submission_date, status, main_processed, undated, rows_written, input_url "
            "FROM crash_aggregates_runs ORDER BY 1").fetchall()
    assert runs == [("2016-03-14", "completed", 1, 2, 1, str(root)),
                    ("2016-03-15", "completed", 1, 2, 1, str(root))]


def test_dates_default_to_yesterday(make_store: StoreMaker, tmp_path: Path) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1))
    day = yesterday.isoformat()
    store = make_store({day: [main_ping("a", day=day, submission=day)]})
    code, out, _ = run("fill", "--input", str(store), "--db", f"sqlite:///{tmp_path / 'y.db'}")
    assert code == 0
    assert out.startswith(f"{day} ok: 1 rows")


def test_bad_input_fails_its_date_only(make_store: StoreMaker, tmp_path: Path) -> None:
    store = make_store({
        "2016-03-14": [main_ping("a")],
        "2016-03-16": [main_ping("c", submission="20160316", day="2016-03-16")],
    })
    db = tmp_path / "bad.db"
    assert run("fill", "--input", str(store), "--from", "2016-03-14", "--to", "2016-03-14",
               "--db", f"sqlite:///{db}")[0] == 0
    before = table(db)
    # 03-14 now holds a corrupt file, 03-15 has no folder; 03-16 gets a new ping.
    broken = store / "submission_date=2016-03-14" / "part-1.json.gz"
    data = gzip.compress(b"".join(b"{\"n\": %d}\n" % i for i in range(50_000)))
    broken.write_bytes(data[: len(data) // 2])  # truncated
    write_ping_file(store / "submission_date=2016-03-16" / "part-1.json",
                    [main_ping("d", submission="20160316", day="2016-03-16", channel="beta")])
    code, out, err = run("fill", "--input", str(store), "--from", "2016-03-14",
                         "--to", "2016-03-16", "--db", f"sqlite:///{db}", "--workers", "2")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("2016-03-14 FAILED: ")
    assert str(broken) in lines[0]
    assert lines[1] == f"2016-03-15 FAILED: no ping files for 2016-03-15 in {store}"
    assert lines[2].startswith("2016-03-16 ok: 2 rows")
    assert err.splitlines()[-1] == "failed dates: 2016-03-14, 2016-03-15"
    assert "Traceback" not in out + err
    after = table(db)
    assert [r for r in after if r[0] == "2016-03-14"] == [r for r in before if r[0] == "2016-03-14"]
    assert [r[2] for r in after if r[0] == "2016-03-16"] == ["beta", "nightly"]


@pytest.mark.parametrize("content", [b"plain text, not gzip", b""])
def test_file_that_is_not_gzip_fails_the_date(make_store: StoreMaker, tmp_path: Path,
                                               content: bytes) -> None:
    store = make_store({"2016-03-14": [main_ping("a")]})
    (store / "submission_date=2016-03-14" / "bad.json.gz").write_bytes(content + b"x" * 10)
    code, out, err = run("fill", "--input", str(store), "--from", "2016-03-14", "--to",
                         "2016-03-14", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 1
    assert "bad.json.gz" in out and "FAILED" in out
    assert "Traceback" not in out + err


def test_missing_store_fails_once_and_records_every_date(tmp_path: Path) -> None:
    """Not about one date: one line before anything is read, and a failed run per date."""
    code, out, err = run("fill", "--input", str(tmp_path / "nope"), "--from", "2016-03-14",
                         "--to", "2016-03-15", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 1 and out == ""
    message = (f"ping store {tmp_path / 'nope'} does not exist or is not a folder "
               "(no ping was read, no date was written)")
    assert err == f"error: {message}\n"
    with sqlite3.connect(tmp_path / "x.db") as connection:
        runs = connection.execute("SELECT submission_date, status, error "
                                  "FROM crash_aggregates_runs ORDER BY 1").fetchall()
    assert runs == [("2016-03-14", "failed", message), ("2016-03-15", "failed", message)]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = run("fill", "--input", str(tmp_path), "--from", "2016-03-15", "--to",
                       "2016-03-14", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2
    assert err.strip() == "error: --from 2016-03-15 is after --to 2016-03-14"
    code, _, err = run("fill", "--input", str(tmp_path), "--from", "2016-13-01")
    assert code == 2 and "is not a date" in err
    code, _, err = run("fill", "--input", str(tmp_path), "--db", "oracle://x")
    assert code == 2 and err.startswith("error: bad value for db from --db: 'oracle://x'")


def test_no_dedupe_and_sample_fraction(make_store: StoreMaker, tmp_path: Path) -> None:
    store = make_store({"2016-03-14": [main_ping("a", sampleId=5), main_ping("a", sampleId=5),
                                       main_ping("b", sampleId=60), main_ping("c", sampleId=None)]})
    common = ["fill", "--input", str(store), "--from", "2016-03-14", "--to", "2016-03-14"]
    _, out, _ = run(*common, "--db", f"sqlite:///{tmp_path / 'a.db'}", "--no-dedupe")
    assert "main_processed=4 " in out and "duplicates=0" in out
    _, out, _ = run(*common, "--db", f"sqlite:///{tmp_path / 'b.db'}", "--sample-fraction", "0.5")
    assert "main_processed=1 " in out and "duplicates=1 " in out and "sampled_out=2" in out


@pytest.mark.parametrize("command", ["fill", "generate", "demo"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"crash-aggregates {command}" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "crash_rate_aggregates", "--version"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("crash-aggregates, version ")


@pytest.mark.parametrize("debug", ["", "1"])
def test_an_unexpected_error_is_one_line(tmp_path: Path, debug: str) -> None:
    """A bug (here an OSError raised by the armed fault point) is one line with a hint; the
    traceback only with CRASH_AGGREGATES_DEBUG=1; neither shows the password of the URL."""
    env = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": "cli.main",
           "CRASH_AGGREGATES_FAULT_ACTION": "raise", "CRASH_AGGREGATES_DEBUG": debug}
    job = subprocess.run(
        [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(tmp_path),
         "--db", "postgresql://crash:s3cr3t/pw@db.example.com/telemetry"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert job.returncode == 1 and job.stdout == ""
    last = job.stderr.splitlines()[-1]
    assert last == ("error: unexpected OSError: fault point cli.main armed (a bug: please "
                    "report it, with the output of the same command run with "
                    "CRASH_AGGREGATES_DEBUG=1)")
    if debug:
        assert job.stderr.startswith("Traceback (most recent call last):")
    else:
        assert job.stderr == last + "\n"
    assert "s3cr3t" not in job.stderr
