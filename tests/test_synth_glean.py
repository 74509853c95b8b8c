"""The synthetic Glean store generator: every line lands where its plan says (by the family's
own `evaluate_line`), both JSON forms, determinism, realism, the bad build, no activity before
a build existed, field names of the real examples."""

from __future__ import annotations

import gzip
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from click.testing import CliRunner

from crash_rate_aggregates import rules
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.families import glean
from crash_rate_aggregates.synth_glean import (
    Ping,
    Record,
    Truncated,
    generate_glean_store,
    plan_glean_store,
    render,
    version_code_date,
)

FIRST, LAST = date(2025, 6, 1), date(2025, 6, 3)
PINGS = 3000
DATA = Path(__file__).parent / "data" / "glean"
MEASURE = {name: i for i, name in enumerate(glean.MEASURES)}


def read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return data.split(b"\n")[:-1]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def planned(form: str, layout: str = "partitioned", seed: int = 5, pings: int = PINGS,
            last: date = LAST) -> Iterator[tuple[date, Record, bytes]]:
    for day, records in plan_glean_store(FIRST, last, pings, seed, layout,  # type: ignore[arg-type]
                                         form):
        for record in records:
            line = render(record)
            if line:
                yield day, record, line


def evaluate(line: bytes, day: date, flat: bool) -> glean.GleanOutcome:
    outcome = glean.evaluate_line(line, None if flat else day)
    assert isinstance(outcome, glean.GleanOutcome)
    return outcome


def fold(outcomes: list[glean.GleanOutcome]) -> Counter[str]:
    """The engine's two-stage dedupe (SPEC 8 rule 3) over one date's outcomes, in order."""
    counters: Counter[str] = Counter()
    doc_ids: set[str] = set()
    hashes: set[str] = set()
    for o in outcomes:
        if (o.doc_id is not None and o.doc_id in doc_ids) or (
                o.crash_id is not None and o.crash_id in hashes):
            counters[rules.DUPLICATES] += 1
            continue
        doc_ids.update([o.doc_id] if o.doc_id else [])
        hashes.update([o.crash_id] if o.crash_id else [])
        counters[o.counter] += 1
    return counters


def check_line(record: Record, outcome: glean.GleanOutcome, day: date, flat: bool) -> None:
    """The outcome the rules give a line is the one its record was planned to have."""
    intent = record.intent
    assert outcome.counter == intent.counter, (intent, outcome, render(record)[:400])
    if intent.counter in (rules.UNDATED, rules.MALFORMED_LINES) and flat:
        assert outcome.submission_date is None
    elif intent.counter != rules.UNDATED:
        assert outcome.submission_date == day
    if intent.counter in (rules.MAIN_PROCESSED, rules.CRASH_PROCESSED,
                          rules.MAIN_IGNORED, rules.CRASH_IGNORED):
        assert (outcome.doc_id, outcome.crash_id) == (intent.doc_id, intent.crash_id)
    if intent.counter not in (rules.MAIN_PROCESSED, rules.CRASH_PROCESSED):
        return
    assert isinstance(record, Ping) and outcome.key and outcome.measures
    assert intent.activity is not None
    activity = rules.clamp_activity_date(intent.activity, day)
    assert outcome.key[0] == activity.toordinal()
    assert (outcome.client_id is not None) == intent.has_client
    dims = dict(zip(glean.DIMENSION_NAMES, outcome.key[1:], strict=True))
    assert dims["build_id"] == record.build.app_build
    assert dims["channel"] == record.client.channel
    assert dims["application"] == ("Firefox" if record.client.desktop else "Fenix")
    measures = list(outcome.measures)
    if intent.measure == "usage":
        assert measures == [1, intent.usage, *[0] * 10]
    else:
        assert intent.measure is not None
        expected = [0] * len(glean.MEASURES)
        expected[MEASURE[intent.measure]] = 1
        if intent.measure == "startup_crashes":
            expected[MEASURE["main_crashes"]] = 1
        assert measures == expected


@pytest.fixture(scope="module")
def decoded() -> list[tuple[date, Record, bytes]]:
    return list(planned("decoded"))


# ---------------------------------------------------------------------------------------------


def test_layout_exact_counts_and_same_seed_same_bytes(tmp_path: Path) -> None:
    summary = generate_glean_store(tmp_path / "a", FIRST, FIRST + timedelta(days=1), 800,
                                   seed=3)
    root = summary.out_dir
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.gz"))
    assert names == [f"submission_date={d}/part-{k:04d}.json.gz"
                     for d in ("2025-06-01", "2025-06-02") for k in range(4)]
    lines = [line for p in sorted(root.rglob("*.gz")) for line in read_lines(p)]
    assert summary.files == 8 and summary.pings == sum(1 for x in lines if x) == 1600
    assert summary.blank_lines == lines.count(b"") > 0
    assert summary.json_bytes == sum(len(x) + 1 for x in lines)
    assert summary.compressed_bytes == sum(p.stat().st_size for p in root.rglob("*.gz"))
    again = generate_glean_store(tmp_path / "b", FIRST, FIRST + timedelta(days=1), 800, seed=3)
    assert files_of(again.out_dir) == files_of(root)
    other = generate_glean_store(tmp_path / "c", FIRST, FIRST + timedelta(days=1), 800, seed=4)
    assert files_of(other.out_dir) != files_of(root)


@pytest.mark.parametrize("form", ["decoded", "bigquery", "mixed"])
def test_every_line_lands_in_its_planned_counter(form: str) -> None:
    by_day: dict[date, list[glean.GleanOutcome]] = {}
    planned_counts: Counter[str] = Counter()
    for day, record, line in planned(form):
        outcome = evaluate(line, day, flat=False)
        check_line(record, outcome, day, flat=False)
        by_day.setdefault(day, []).append(outcome)
        planned_counts[record.intent.counter] += 1
    assert set(planned_counts) == {rules.MAIN_PROCESSED, rules.MAIN_IGNORED,
                                   rules.CRASH_PROCESSED, rules.CRASH_IGNORED,
                                   rules.OTHER_DOC_TYPE, rules.MALFORMED_LINES}
    for outcomes in by_day.values():
        assert len(outcomes) == PINGS
        assert fold(outcomes)[rules.DUPLICATES] >= 5


def test_flat_layout_lines_are_dated_by_their_submission_timestamp(tmp_path: Path) -> None:
    checked = Counter[str]()
    for day, record, line in planned("mixed", layout="flat"):
        outcome = evaluate(line, day, flat=True)
        day = record.of.day if isinstance(record, Truncated) else record.day or day
        check_line(record, outcome, day, flat=True)
        checked[outcome.counter] += 1
    assert checked[rules.UNDATED] >= 10 and checked[rules.MAIN_PROCESSED] > 0.6 * sum(
        checked.values())
    summary = generate_glean_store(tmp_path, FIRST, LAST, 500, layout="flat", files_per_day=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["pings-0000.jsonl.gz", "pings-0001.ndjson", "pings-0002.jsonl.gz",
                     "pings-0003.jsonl.zst", "pings-0004.jsonl.gz", "pings-0005.jsonl.gz"]
    assert summary.pings == 1500


def test_both_forms_give_the_same_outcomes() -> None:
    """The same plan in both forms; the one difference is the one SPEC 8 rule 1 makes: a
    BigQuery row has no document type, so a baseline ping without usage metrics (reason
    `active` or `dirty_startup`) is of no known type."""
    untyped = 0
    pairs = zip(planned("decoded", pings=1500), planned("bigquery", pings=1500), strict=True)
    for (day, record, line), (_, _, bq_line) in pairs:
        assert bq_line != line or not isinstance(record, Ping)
        a, b = evaluate(line, day, flat=False), evaluate(bq_line, day, flat=False)
        if isinstance(record, Ping) and record.kind == "baseline" and record.ticks is None \
                and record.duration is None and not record.patches:
            assert b.counter == rules.OTHER_DOC_TYPE and a.counter == rules.MAIN_PROCESSED
            untyped += 1
            continue
        assert a == b, (line[:300], bq_line[:300])
    assert untyped > 100
    line = next(x for _, r, x in planned("bigquery", pings=200) if isinstance(r, Ping))
    doc = orjson.loads(line)
    assert doc["submission_timestamp"].endswith(" UTC") and "document_type" not in doc["metadata"]
    assert all("." not in name for kind in doc["metrics"].values() for name in kind)


def test_mixed_form_mixes_line_by_line() -> None:
    stamps = Counter[str]()
    for _, record, line in planned("mixed", pings=1000, last=FIRST):
        if isinstance(record, Ping) and not record.patches:
            stamp = orjson.loads(line)["submission_timestamp"]
            stamps["bigquery" if stamp.endswith(" UTC") else "decoded"] += 1
            assert stamp.endswith(("Z", " UTC"))
    assert stamps["decoded"] > 300 and stamps["bigquery"] > 300


def test_counter_shares_and_what_the_pings_hold(decoded: list[tuple[date, Record, bytes]]
                                                ) -> None:
    outcomes = [evaluate(line, day, flat=False) for day, _, line in decoded]
    by_day: dict[date, list[glean.GleanOutcome]] = {}
    for (day, _, _), outcome in zip(decoded, outcomes, strict=True):
        by_day.setdefault(day, []).append(outcome)
    counters = sum((fold(day_outcomes) for day_outcomes in by_day.values()), Counter[str]())
    total = sum(counters.values())
    assert total == 3 * PINGS
    share = {name: n / total for name, n in counters.items()}
    assert 0.9 < share[rules.MAIN_PROCESSED] < 0.98
    assert 0.005 < share[rules.CRASH_PROCESSED] < 0.05
    # the messy 2%: malformed lines, other ping types, duplicates, values of the wrong type
    for name in (rules.MALFORMED_LINES, rules.OTHER_DOC_TYPE, rules.DUPLICATES,
                 rules.MAIN_IGNORED, rules.CRASH_IGNORED):
        assert 0.0005 < share[name] < 0.01, (name, share)
    assert 0.01 < sum(share[name] for name in (rules.MALFORMED_LINES, rules.OTHER_DOC_TYPE,
                                               rules.MAIN_IGNORED, rules.CRASH_IGNORED)) < 0.03

    measures = Counter(glean.MEASURES[m.index(1, 2)] for o in outcomes
                       if o.counter == rules.CRASH_PROCESSED and (m := o.measures))
    assert set(measures) == set(glean.CRASH_MEASURES) - {"startup_crashes"}
    startups = sum(1 for o in outcomes if o.measures and o.measures[MEASURE["startup_crashes"]])
    assert 0.05 * measures["main_crashes"] < startups
    assert measures["content_shutdown_crashes"] > 0.2 * measures["content_crashes"]

    pings = [r for _, r, _ in decoded if isinstance(r, Ping)]
    reasons = Counter((r.kind, r.reason) for r in pings)
    assert {("baseline", "active"), ("baseline", "inactive"), ("baseline", "dirty_startup"),
            ("crash", "crash"), ("crash", "event_found")} == set(reasons)
    units = Counter(r.duration[1] for r in pings if r.duration and not r.client.desktop)
    assert set(units) == {"second", "millisecond", "microsecond", "nanosecond", "minute"}
    assert units.most_common(1)[0][0] == "second"
    assert {r.client.os for r in pings} == {"Windows", "Darwin", "Linux", "Android"}
    desktop = [r for r in pings if r.kind == "baseline" and r.reason == "inactive"
               and r.client.desktop]
    assert all(r.duration for r in desktop) and sum(r.ticks is not None for r in desktop) > 0.9 * (
        len(desktop))
    assert not any(r.duration or r.ticks for r in pings if r.reason != "inactive")
    dumps = Counter(r.minidump for r in pings if r.kind == "crash")
    assert dumps[glean.EMPTY_FILE_SHA256] >= 5 and dumps[None] >= 5  # Java crashes: no dump
    twins = [h for h, n in dumps.items() if n > 1 and h and h != glean.EMPTY_FILE_SHA256]
    assert len(twins) >= 2
    late = [(r.day - r.activity).days for r in pings if r.reason == "event_found"]
    assert max(late) > 7 and sum(1 for x in late if x >= 2) >= 5  # clamped to 7 by the rules
    per_client = Counter((r.client.client_id, r.day) for r in pings
                         if r.kind == "crash" and r.startup)
    assert per_client.most_common(1)[0][1] >= 4  # a crash loop


def rates_by_build(lines: list[tuple[date, Record, bytes]]) -> tuple[Counter[str],
                                                                      Counter[str]]:
    hours, crashes = Counter[str](), Counter[str]()
    for day, _, line in lines:
        o = evaluate(line, day, flat=False)
        if o.key and o.measures and o.counter in (rules.MAIN_PROCESSED, rules.CRASH_PROCESSED):
            build = str(o.key[2])
            hours[build] += o.measures[1] / glean.NANOSECONDS_PER_HOUR
            crashes[build] += sum(o.measures[2:11])
    return hours, crashes


def test_the_bad_nightly_build_crashes_several_times_more(tmp_path: Path) -> None:
    last = FIRST + timedelta(days=6)
    lines = list(planned("decoded", pings=4000, last=last))
    # the summary names it (the builds do not depend on the number of pings)
    bad = generate_glean_store(tmp_path, FIRST, last, 30, seed=5).regression_build_id
    assert bad[:8] == f"{FIRST + timedelta(days=6 // 2 - 2):%Y%m%d}"  # before the middle
    hours, crashes = rates_by_build(lines)
    nightly = {r.build.app_build for _, r, _ in lines if isinstance(r, Ping)
               and r.build.channel == "nightly" and r.build.desktop}
    assert bad in nightly and hours[bad] > 20
    others = nightly - {bad}
    other_rate = sum(crashes[b] for b in others) / sum(hours[b] for b in others)
    assert crashes[bad] / hours[bad] > 3 * other_rate


def build_date(app_build: str) -> date:
    if len(app_build) == 14:
        return date(int(app_build[:4]), int(app_build[4:6]), int(app_build[6:8]))
    return version_code_date(app_build)


@pytest.mark.parametrize("layout", ["partitioned", "flat"])
def test_no_session_or_crash_before_its_build(layout: str) -> None:
    checked = 0
    for _, record, line in planned("mixed", layout=layout):
        if not isinstance(record, Ping) or record.patches:
            continue
        doc = orjson.loads(line)
        built = build_date(doc["client_info"]["app_build"])
        metrics = doc["metrics"] if "metrics" in doc else {}
        crash_time = metrics.get("datetime", {})
        start = next(iter(crash_time.values())) if crash_time else doc["ping_info"]["start_time"]
        assert date.fromisoformat(start[:10]) >= built, (start, built)
        checked += 1
    assert checked > 0.95 * 3 * PINGS


def key_paths(doc: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path of a document; experiment slugs stand for one name."""
    if isinstance(doc, list):
        return {p for item in doc for p in key_paths(item, prefix)}
    if not isinstance(doc, dict):
        return set()
    paths = set()
    for key, value in doc.items():
        name = "SLUG" if prefix == ("ping_info", "experiments") else key
        paths.add((*prefix, name))
        paths |= key_paths(value, (*prefix, name))
    return paths


@pytest.mark.parametrize(("form", "example"), [
    ("decoded", "synthetic.all.decoded-with-metadata.ndjson"),
    ("bigquery", "synthetic.all.bigquery-rows.ndjson"),
])
def test_field_names_are_those_of_the_real_examples(form: str, example: str) -> None:
    known = set[tuple[str, ...]]()
    for line in (DATA / example).read_bytes().splitlines():
        known |= key_paths(orjson.loads(line))
    seen = set[tuple[str, ...]]()
    for _, record, line in planned(form, pings=2000, last=FIRST):
        if isinstance(record, Ping) and not record.patches:
            seen |= key_paths(orjson.loads(line))
    assert seen - known == set()
    assert len(seen) > 0.9 * len(known)  # and most of the examples' fields are used


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_glean_store(tmp_path, LAST, FIRST, 10)
    with pytest.raises(ValueError):
        generate_glean_store(tmp_path, FIRST, LAST, 10, form="xml")
    with pytest.raises(ValueError):
        generate_glean_store(tmp_path, FIRST, LAST, 10, files_per_day=0)
    tiny = generate_glean_store(tmp_path / "tiny", FIRST, FIRST, 7, files_per_day=1)
    assert tiny.pings == 7


def test_generate_command(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pings"
    result = runner.invoke(cli, ["generate", "--family", "glean", "--form", "bigquery", "--out",
                                 str(out), "--from", "2025-06-01", "--pings", "300"])
    assert result.exit_code == 0, result.output
    assert "wrote 300 pings in 4 files" in result.output
    docs = [orjson.loads(x) for p in sorted(out.rglob("*.gz"))
            for x in read_lines(p) if x.startswith(b'{"submission_timestamp"') and x[-1:] == b"}"]
    stamps = [doc["submission_timestamp"] for doc in docs]
    assert len(stamps) > 250 and all(s.endswith(" UTC") for s in stamps)
    for args in (["--form", "mixed"], ["--family", "glean", "--light"]):
        result = runner.invoke(cli, ["generate", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and "error:" in result.output


def planned_counters(form: str, layout: str, pings: int, last: date) -> Counter[str]:
    """What a fill must count, from the plan: each line's intent, duplicates by the
    two-stage rule over each submission date (undated lines: the run's)."""
    by_day: dict[date | None, list[Any]] = {}
    for day, record, _ in planned(form, layout=layout, pings=pings, last=last):
        intent = record.intent
        submitted: date | None = (record.of.day if isinstance(record, Truncated)
                                  else record.day or day)
        if layout == "flat" and intent.counter in (rules.UNDATED, rules.MALFORMED_LINES):
            submitted = None
        by_day.setdefault(submitted, []).append(glean.GleanOutcome(
            intent.counter, submitted, intent.doc_id, crash_id=intent.crash_id))
    counters: Counter[str] = Counter()
    for submitted, outcomes in by_day.items():
        if submitted is None:
            counters[rules.UNDATED] += len(outcomes)
        else:
            counters += fold(outcomes)
    return counters


@pytest.mark.parametrize("layout", ["partitioned", "flat"])
def test_fill_counts_what_the_plan_says(tmp_path: Path, layout: str) -> None:
    last = FIRST + timedelta(days=1)
    out = tmp_path / "pings"
    result = CliRunner().invoke(cli, [
        "generate", "--family", "glean", "--out", str(out), "--from", str(FIRST), "--to",
        str(last), "--pings", "2000", "--seed", "5", "--layout", layout])
    assert result.exit_code == 0, result.output
    db = tmp_path / "glean.db"
    result = CliRunner().invoke(cli, ["fill", "--family", "glean", "--input", str(out),
                                      "--from", str(FIRST), "--to", str(last), "--db",
                                      f"sqlite:///{db}", "--workers", "1"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        runs = connection.execute(f"SELECT {', '.join(rules.COUNTERS)}, undated "
                                  "FROM glean_crash_aggregates_runs").fetchall()
        pings, crashes = connection.execute(
            "SELECT sum(stats->>'ping_count'), sum(stats->>'main_crashes') "
            "+ sum(stats->>'content_crashes') FROM glean_crash_aggregates").fetchone()
    counted = Counter({name: sum(run[i] for run in runs)
                       for i, name in enumerate(rules.COUNTERS)})
    counted[rules.UNDATED] = runs[0][-1]  # the run's, on each date's row
    expected = planned_counters("mixed", layout, 2000, last)
    assert +counted == +expected
    assert pings == counted[rules.MAIN_PROCESSED] and crashes > 0


def test_demo_of_glean_pings_finds_the_bad_build(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(cli, ["demo", "--family", "glean", "--db", f"sqlite:///{db}",
                                      "--workers", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    table = out[out.index("channel"):].splitlines()
    assert table[0].split() == ["channel", "usage", "hours", "main", "content", "shutdown",
                                "gpu", "other"]
    assert [line.split()[0] for line in table[2:6]] == ["beta", "esr", "nightly", "release"]
    assert "table glean_crash_aggregates" in out
    comparison = out[out.index("One nightly build was generated to crash more"):].splitlines()
    assert comparison[2].startswith(f"  crash-aggregates compare --db sqlite:///{db} "
                                    "--family glean --min-usage-hours 100 --candidate build_id=")
    assert comparison[4].endswith("on nightly (glean pings)")
    verdicts = {line.split()[0]: line.split()[-1] for line in comparison[8:11]}
    assert verdicts == {"main": "regression", "content": "regression",
                        "shutdown": "regression"}, "\n".join(comparison)
    with sqlite3.connect(db) as connection:
        [(dates,)] = connection.execute(
            "SELECT count(DISTINCT submission_date) FROM glean_crash_aggregates").fetchall()
    assert dates == 7
