"""Backfills: overall progress, --skip-existing, --parallel-dates, JSON logs, Ctrl-C/SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_same_rows, main_ping, write_ping_file
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.synth import generate_store

DAYS = ["2016-03-12", "2016-03-13", "2016-03-14"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "pings"
    generate_store(root, date(2016, 3, 12), date(2016, 3, 14), 400, heavy=False)
    return root


def runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT submission_date, status FROM crash_aggregates_runs "
                                  "ORDER BY started_at, submission_date").fetchall()


def test_progress_skip_existing_and_plain_rerun(store: Path, tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    common = ["fill", "--input", str(store), "--from", DAYS[0], "--to", DAYS[-1],
              "--db", f"sqlite:///{db}", "--workers", "1"]
    code, out, err = invoke(*common)
    assert code == 0
    assert "[3/3 dates]" in err and "lines/s" in err
    first = open_store(f"sqlite:///{db}").read_rows()
    code, out, _ = invoke(*common, "--skip-existing")
    assert code == 0
    assert [line.split(" ", 2)[1] for line in out.splitlines()] == ["skipped:"] * 3
    assert len(runs(db)) == 3
    code, out, _ = invoke(*common)  # a plain re-run replaces: same rows, new run records
    assert code == 0 and len(runs(db)) == 6
    assert open_store(f"sqlite:///{db}").read_rows() == first


def test_skip_existing_redoes_failed_dates_and_other_inputs(store: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    bad = store / "submission_date=2016-03-13" / "zz-bad.json.gz"
    bad.write_bytes(b"not gzip")
    common = ["--from", DAYS[0], "--to", DAYS[-1], "--db", f"sqlite:///{db}"]
    assert invoke("fill", "--input", str(store), *common)[0] == 1
    bad.unlink()
    code, out, _ = invoke("fill", "--input", str(store), *common, "--skip-existing")
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "2016-03-12 skipped", "2016-03-13 ok", "2016-03-14 skipped"]
    code, out, _ = invoke("fill", "--input", f"{store}/", *common, "--skip-existing")
    assert out.count(" ok: ") == 3  # another input URL: nothing is skipped


def test_parallel_dates_give_the_same_rows(store: Path, tmp_path: Path) -> None:
    one, many = tmp_path / "one.db", tmp_path / "many.db"
    common = ["fill", "--input", str(store), "--from", DAYS[0], "--to", DAYS[-1]]
    assert invoke(*common, "--db", f"sqlite:///{one}", "--workers", "1")[0] == 0
    code, out, _ = invoke(*common, "--db", f"sqlite:///{many}", "--workers", "2",
                          "--parallel-dates", "3")
    assert code == 0 and out.count(" ok: ") == 3
    assert_same_rows(open_store(f"sqlite:///{many}").read_rows(),
                     open_store(f"sqlite:///{one}").read_rows())


def test_parallel_dates_fail_only_the_bad_date(store: Path, tmp_path: Path) -> None:
    (store / "submission_date=2016-03-13" / "zz-bad.json.gz").write_bytes(b"not gzip")
    code, out, err = invoke("fill", "--input", str(store), "--from", DAYS[0], "--to", DAYS[-1],
                            "--db", f"sqlite:///{tmp_path / 'p.db'}", "--workers", "2",
                            "--parallel-dates", "3")
    assert code == 1
    assert [line.split(" ")[1] for line in out.splitlines()] == ["ok:", "FAILED:", "ok:"]
    assert err.splitlines()[-1] == "failed dates: 2016-03-13"


def test_json_log_lines(store: Path, tmp_path: Path) -> None:
    code, out, err = invoke("fill", "--input", str(store), "--from", DAYS[0], "--to", DAYS[0],
                            "--db", f"sqlite:///{tmp_path / 'j.db'}", "--log-format", "json")
    assert code == 0 and err == ""
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["submission_date"] == DAYS[0] and record["status"] == "completed"
    assert record["counters"]["main_processed"] > 300
    assert sum(record["counters"].values()) == 400


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_dates_and_nothing_half_written(tmp_path: Path,
                                                                 stop: int) -> None:
    root = tmp_path / "pings"
    for number, day in enumerate(["2016-03-10", "2016-03-11", "2016-03-12", "2016-03-13"]):
        pings = [main_ping(f"{day}-{i}", f"c{i}", day=day, submission=day.replace("-", ""))
                 for i in range(1 if number == 0 else 60_000)]
        write_ping_file(root / f"submission_date={day}" / "p.json", pings)
    db = tmp_path / "i.db"
    job = subprocess.Popen(
        [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(root), "--from",
         "2016-03-10", "--to", "2016-03-13", "--db", f"sqlite:///{db}", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background commands with SIGINT ignored, and
        # Python keeps it ignored: give the job the Ctrl-C of an interactive terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert job.stdout is not None
    first_line = job.stdout.readline()
    assert first_line.startswith("2016-03-10 ok")
    job.send_signal(stop)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert "interrupted: " in err and "Traceback" not in err
    written = [row[0] for row in runs(db)]
    with sqlite3.connect(db) as connection:
        per_date = dict(connection.execute(
            "SELECT submission_date, sum(stats->>'ping_count') FROM crash_aggregates "
            "GROUP BY 1").fetchall())
    assert written[0] == "2016-03-10" and set(written) == set(per_date)
    # every date there is complete: 1 ping on the first, 60,000 on the others
    assert all(count == (1 if day == "2016-03-10" else 60_000) for day, count in per_date.items())
