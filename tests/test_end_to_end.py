"""The whole product from the command line: generate a store, fill it, read rates; the demo."""

from __future__ import annotations

import re
import shlex
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from crash_rate_aggregates import rules
from crash_rate_aggregates.cli import cli

README = Path(__file__).parent.parent / "README.md"


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
    out = invoke("demo", "--db", f"sqlite:///{db}", "--workers", "2")  # the defaults: a week
    assert "Crashes per 1,000 usage hours" in out
    table = out[out.index("channel"):].splitlines()
    channels = [line.split()[0] for line in table[2:6]]
    assert channels == ["beta", "esr", "nightly", "release"]
    assert str(db) in out
    with sqlite3.connect(db) as connection:
        [(dates,)] = connection.execute(
            "SELECT count(DISTINCT submission_date) FROM crash_aggregates").fetchall()
    assert dates == 7
    # then the headline case: the bad nightly build, found by compare with its defaults
    comparison = out[out.index("One nightly build was generated to crash more"):].splitlines()
    assert comparison[2] == f"  crash-aggregates compare --db sqlite:///{db} --candidate " + (
        comparison[4].split()[0] + "=" + comparison[4].split()[1])
    assert re.fullmatch(r"build_id \d{14} against \d{14} on nightly", comparison[4])
    verdicts = [line.split()[-1] for line in comparison[8:14]]
    assert "regression" in verdicts, "\n".join(comparison)
    # The README shows this output, run on another day: the same figures, other dates.
    shown = undated(readme_demo_block().replace("sqlite:///crash_aggregates.db", "URL"))
    printed = out[out.index("Crashes per 1,000"):].replace(f"sqlite:///{db}", "URL")
    printed = printed[:printed.index("\nThe aggregates are in")].rstrip() + "\n\n" + printed[
        printed.index("One nightly build"):]
    assert undated(printed.rstrip("\n")) == shown


def undated(text: str) -> str:
    """Dates and the date part of build ids masked: the generator's figures do not depend on
    the dates it is given."""
    text = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", "DATE", text)
    return re.sub(r"\b\d{8}(\d{6})\b", r"BUILD\1", text)


def readme_demo_block() -> str:
    text = README.read_text()
    after = text[text.index("the demo's table, then"):]
    return after[after.index("```text\n") + 8:after.index("\n```\n")]


def readme_compare_run() -> list[tuple[str, list[str]]]:
    """The console block of the README's `compare` section: (command, its output lines)."""
    text = README.read_text()
    section = text[text.index("### `compare`"):]
    block = section[section.index("```console\n") + 11:section.index("\n```\n")]
    run: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            run.append((line[2:], []))
        else:
            run[-1][1].append(line)
    return run


def untimed(lines: list[str]) -> list[str]:
    return [re.sub(r" in \d+\.\ds;", " in _s;", line.rstrip()) for line in lines]


def test_the_readme_compare_example_runs_as_written(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = readme_compare_run()
    assert [command.split()[:2] for command, _ in run] == [
        ["crash-aggregates", "generate"], ["crash-aggregates", "fill"],
        ["crash-aggregates", "compare"], ["echo", "$?"]]
    monkeypatch.chdir(tmp_path)  # the README's relative paths: week/, week.db
    status = None
    for command, shown in run:
        if command == "echo $?":
            assert shown == [str(status)]
            continue
        result = CliRunner().invoke(cli, shlex.split(command)[1:], catch_exceptions=False)
        status = result.exit_code
        assert untimed(result.stdout.splitlines()) == untimed(shown), command
    # the bad nightly build of the README's generate line is a regression: exit status 1
    assert status == 1
    assert any(line.split()[-1] == "regression" for line in run[2][1][3:])


def test_generate_says_file_in_the_singular_and_explains_its_options(tmp_path: Path) -> None:
    out = invoke("generate", "--out", str(tmp_path / "one"), "--from", "2016-03-14",
                 "--pings", "7", "--light", "--files-per-day", "1")
    assert out.startswith("wrote 7 pings in 1 file (")
    help_text = " ".join(invoke("generate", "--help").split())
    assert "--layout [partitioned|flat] partitioned: a folder" in help_text
    assert "--files-per-day INTEGER RANGE Files each submission date" in help_text


def test_demo_never_replaces_the_rows_of_a_real_fill(tmp_path: Path) -> None:
    """The demo's default store is fill's default too: a store a real fill wrote is refused
    (exit 2, rows untouched); a store only demos wrote is the demo's to replace."""
    pings = tmp_path / "pings"
    invoke("generate", "--out", str(pings), "--from", "2016-03-14", "--pings", "200", "--light")
    real = tmp_path / "real.db"
    invoke("fill", "--input", str(pings), "--from", "2016-03-14", "--to", "2016-03-14",
           "--db", f"sqlite:///{real}", "--workers", "1")
    before = real.read_bytes()
    refused = CliRunner().invoke(cli, ["demo", "--db", f"sqlite:///{real}", "--days", "1",
                                       "--pings", "100", "--workers", "1"])
    assert refused.exit_code == 2, refused.output
    assert "holds data the demo did not write" in refused.stderr
    assert real.read_bytes() == before
    demo_db = tmp_path / "demo.db"
    for _ in range(2):  # the second demo replaces the first one's rows
        invoke("demo", "--db", f"sqlite:///{demo_db}", "--days", "1", "--pings", "100",
               "--workers", "1")


def test_generate_never_mixes_two_stores_in_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "pings"
    invoke("generate", "--out", str(out), "--from", "2016-03-14", "--pings", "40", "--light")
    before = sorted(p.name for p in out.rglob("*"))
    again = CliRunner().invoke(cli, ["generate", "--out", str(out), "--from", "2016-03-14",
                                     "--pings", "40", "--light", "--files-per-day", "2"])
    assert again.exit_code == 2
    assert again.stderr.startswith(f"error: {out} is not empty: give --out a new or empty")
    assert sorted(p.name for p in out.rglob("*")) == before
    afile = tmp_path / "afile"
    afile.write_text("x")
    onto_file = CliRunner().invoke(cli, ["generate", "--out", str(afile), "--pings", "10"])
    assert (onto_file.exit_code, onto_file.stderr) == (
        2, f"error: {afile} is a file: give --out a new or empty folder\n")
