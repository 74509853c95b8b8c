"""The rules on the 46 real pings of tests/data/reference/ (provenance in its README.md).

Every expected value below was worked out by reading the JSON files, not by running the code:

- main.4.sample.pass.json, profile.pass, latewrites.pass/.fail, GMPlugins.fail: Firefox 45.0
  beta on Darwin 14.5.0 x86-64, buildId 20151103030248, subsessionStartDate
  "2015-11-04T00:00:00.0-08:00", subsessionLength 38376 (= 10.66 hours),
  SUBPROCESS_CRASHES_WITH_DUMP is {} and there is no SUBPROCESS_KILL_HARD, e10sEnabled true,
  e10sCohort "unknown", activeExperiment {}, compositor "none" (absent).
- main.4.gc_sample{,_2}.pass.json: Firefox 60.0a1 nightly on Darwin 17.4.0 x86-64, buildId
  20180209220324, subsessionStartDate "2018-03-08T00:00:00.0-04:00", subsessionLength 44742,
  no crash histograms, e10sEnabled true, no e10sCohort, activeExperiment {}, compositor
  "opengl".
- the 33 other main.4.* files are fragments without payload.info.subsessionStartDate: ignored by
  rule 5 (after rule 4, so they carry their id); main.4.empty.fail.json is `{}`: no doc type.
- crash.4.*: payload.processType "content": rule 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import write_compressed
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate, DateAggregator, DateBatch
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.rules import (
    CRASH_NON_MAIN_IGNORED,
    CRASH_PROCESSED,
    DUPLICATES,
    MAIN_IGNORED,
    MAIN_PROCESSED,
    OTHER_DOC_TYPE,
    Outcome,
)
from crash_rate_aggregates.sources import PingStore

REFERENCE = Path(__file__).parent / "data" / "reference"

ID_2015 = "0fdac909-d2ec-454c-b625-261a3e5d5c9b"
CLIENT_2015 = "6fd3eb50-8bec-4b9c-8778-59406171312a"
ID_GC = "1822b5c3-619a-084a-ba04-b566e76b90cf"
CLIENT_GC = "c4582ba1-79fc-1f47-ae2a-671118dccd8b"
ID_CRASH = "89ba9d98-b041-46f3-8b1a-36dfeb5e1b15"
CLIENT_CRASH = "a136763f-3b9a-492d-8964-bfe783b68dc6"

SUB_2015 = date(2015, 11, 5)  # the day after the 2015 pings' subsession start
SUB_GC = date(2018, 3, 9)  # the day after the gc_sample pings' subsession start
SUB_CRASH = date(2018, 4, 11)  # the day after the crash pings' crashDate

DIMS_2015 = {
    "build_version": "45.0",
    "build_id": "20151103030248",
    "channel": "beta",  # application.channel (no meta.normalizedChannel)
    "application": "Firefox",  # application.name
    "os_name": "Darwin",
    "os_version": "14.5.0",
    "architecture": "x86-64",
    "e10s_enabled": "True",
    "e10s_cohort": "unknown",
    # no country (no meta.geoCountry), no experiment (activeExperiment {}),
    # no gfx_compositor ("none")
}
DIMS_GC = {
    "build_version": "60.0a1",
    "build_id": "20180209220324",
    "channel": "nightly",
    "application": "Firefox",
    "os_name": "Darwin",
    "os_version": "17.4.0",
    "architecture": "x86-64",
    "e10s_enabled": "True",
    "gfx_compositor": "opengl",
}
DIMS_CRASH = {
    "build_version": "61.0a1",
    "build_id": "20180409100035",
    "channel": "nightly",
    "application": "Firefox",
    "os_name": "Windows_NT",
    "os_version": "6.1",
    "architecture": "x86",
    "e10s_enabled": "True",
    "gfx_compositor": "d3d11",
}
HOURS_2015 = 10.66  # 38376 / 3600
HOURS_GC = 44742 / 3600  # 12.4283...
SECONDS_2015, SECONDS_GC = 38376, 44742  # the measures count usage in whole seconds


@dataclass(frozen=True)
class Ignored:
    """Not aggregated: the counter and the document id it reached rule 4 with (if it did)."""

    counter: str
    doc_id: str | None = None


@dataclass(frozen=True)
class Processed:
    counter: str
    activity: str
    dimensions: dict[str, str]
    measures: tuple[int, ...]
    doc_id: str
    client_id: str


MAIN_2015 = Processed(MAIN_PROCESSED, "2015-11-04", DIMS_2015,
                      (1, SECONDS_2015, 0, 0, 0, 0, 0, 0), ID_2015, CLIENT_2015)
MAIN_GC = Processed(MAIN_PROCESSED, "2018-03-08", DIMS_GC,
                    (1, SECONDS_GC, 0, 0, 0, 0, 0, 0), ID_GC, CLIENT_GC)
FRAGMENT = Ignored(MAIN_IGNORED, ID_2015)  # no payload.info.subsessionStartDate (rule 5)
CONTENT_CRASH = Ignored(CRASH_NON_MAIN_IGNORED)  # payload.processType "content" (rule 3)

#: Every file, with the submission date it is given and its expected outcome.
EXPECTED: dict[str, tuple[date, Ignored | Processed]] = {
    "crash.4.null_minidumphashsha256.pass.json": (SUB_CRASH, CONTENT_CRASH),
    "crash.4.null_stackTraces.pass.json": (SUB_CRASH, CONTENT_CRASH),
    "crash.4.null_vendor.pass.json": (SUB_CRASH, CONTENT_CRASH),
    "crash.4.sample.pass.json": (SUB_CRASH, CONTENT_CRASH),
    "crash.4.stackTraces.pass.json": (SUB_CRASH, CONTENT_CRASH),
    "main.4.GMPlugins.fail.json": (SUB_2015, MAIN_2015),
    "main.4.activeplugins.fail.json": (SUB_2015, FRAGMENT),
    "main.4.adapter.fail.json": (SUB_2015, FRAGMENT),
    "main.4.adapter_null_gpuactive.pass.json": (SUB_2015, FRAGMENT),
    "main.4.addon.fail.json": (SUB_2015, FRAGMENT),
    "main.4.attribution.pass.json": (SUB_2015, FRAGMENT),
    "main.4.bad-profile-group-id.fail.json": (SUB_2015, FRAGMENT),
    "main.4.device.fail.json": (SUB_2015, FRAGMENT),
    "main.4.displayversion.fail.json": (SUB_2015, FRAGMENT),
    "main.4.empty.fail.json": (SUB_2015, Ignored(OTHER_DOC_TYPE)),  # {}: no doc type
    "main.4.experiments.fail.json": (SUB_2015, FRAGMENT),
    "main.4.features.fail.json": (SUB_2015, FRAGMENT),
    "main.4.gc_sample.pass.json": (SUB_GC, MAIN_GC),
    "main.4.gc_sample_2.pass.json": (SUB_GC, MAIN_GC),
    "main.4.good_histogram.pass.json": (SUB_2015, FRAGMENT),
    "main.4.hdd_type.fail.json": (SUB_2015, FRAGMENT),
    "main.4.hdd_type.pass.json": (SUB_2015, FRAGMENT),
    "main.4.hdd_type_empty.fail.json": (SUB_2015, FRAGMENT),
    "main.4.hdd_type_null.pass.json": (SUB_2015, FRAGMENT),
    "main.4.headless.fail.json": (SUB_2015, FRAGMENT),
    "main.4.headless.pass.json": (SUB_2015, FRAGMENT),
    "main.4.histogram.fail.json": (SUB_2015, FRAGMENT),
    "main.4.intl_alldata.pass.json": (SUB_2015, FRAGMENT),
    "main.4.intl_nosection.pass.json": (SUB_2015, FRAGMENT),
    "main.4.intl_null.fail.json": (SUB_2015, FRAGMENT),
    "main.4.intl_null.pass.json": (SUB_2015, FRAGMENT),
    "main.4.latewrites.fail.json": (SUB_2015, MAIN_2015),
    "main.4.latewrites.pass.json": (SUB_2015, MAIN_2015),
    "main.4.min.pass.json": (SUB_2015, FRAGMENT),
    "main.4.monitors.fail.json": (SUB_2015, FRAGMENT),
    "main.4.negative_count.fail.json": (SUB_2015, FRAGMENT),
    "main.4.privatesearchengine.fail.json": (SUB_2015, FRAGMENT),
    "main.4.privatesearchenginedataloadpath.fail.json": (SUB_2015, FRAGMENT),
    "main.4.privatesearchenginedataname.fail.json": (SUB_2015, FRAGMENT),
    "main.4.privatesearchenginedataorigin.fail.json": (SUB_2015, FRAGMENT),
    "main.4.privatesearchenginedataurl.fail.json": (SUB_2015, FRAGMENT),
    "main.4.profile.pass.json": (SUB_2015, MAIN_2015),
    "main.4.sample.pass.json": (SUB_2015, MAIN_2015),
    "main.4.sec.fail.json": (SUB_2015, FRAGMENT),
    "main.4.services.pass.json": (SUB_2015, FRAGMENT),
    "main.4.slow_sql.fail.json": (SUB_2015, FRAGMENT),
}
PROCESSED_MAIN = sorted(name for name, (_, want) in EXPECTED.items()
                        if isinstance(want, Processed))


def load(name: str) -> dict[str, Any]:
    doc = orjson.loads((REFERENCE / name).read_bytes())
    assert type(doc) is dict
    return doc


def with_meta(doc: dict[str, Any], submission: date) -> bytes:
    """The ping as one NDJSON line, with the meta added at ingestion."""
    return orjson.dumps({**doc, "meta": {"submissionDate": submission.strftime("%Y%m%d")}})


def check(outcome: Outcome | None, submission: date, expected: Ignored | Processed) -> None:
    assert outcome is not None
    assert outcome.submission_date == submission
    assert outcome.counter == expected.counter
    assert outcome.doc_id == expected.doc_id
    if isinstance(expected, Ignored):
        assert (outcome.key, outcome.client_id, outcome.measures) == (None, None, None)
        return
    assert outcome.key is not None
    assert rules.key_to_row(outcome.key) == (expected.activity, expected.dimensions)
    assert outcome.client_id == expected.client_id
    assert outcome.measures == expected.measures


def test_the_table_lists_every_reference_file() -> None:
    files = sorted(p.name for p in REFERENCE.iterdir() if p.name != "README.md")
    assert len(files) == 46
    assert files == sorted(EXPECTED)
    assert sum(1 for name in files if name.startswith("crash.4.")) == 5
    assert sum(1 for name in files if name.startswith("main.4.")) == 41
    assert len(PROCESSED_MAIN) == 7


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_ping_flat_layout(name: str) -> None:
    submission, expected = EXPECTED[name]
    line = with_meta(load(name), submission)
    check(rules.evaluate_line(line, None, frozenset({submission})), submission, expected)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_ping_partitioned_layout(name: str) -> None:
    # as the client sent it (no meta), in the folder of its submission date
    submission, expected = EXPECTED[name]
    line = orjson.dumps(load(name))
    check(rules.evaluate_line(line, submission), submission, expected)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_ping_outside_the_wanted_dates_is_skipped(name: str) -> None:
    submission, _ = EXPECTED[name]
    assert rules.evaluate_line(with_meta(load(name), submission), None,
                               frozenset({date(2020, 1, 1)})) is None


def test_sample_ping_usage_is_exactly_10_66_hours() -> None:
    outcome = rules.evaluate_line(orjson.dumps(load("main.4.sample.pass.json")), SUB_2015)
    assert outcome is not None and outcome.measures is not None
    assert outcome.measures[1] / rules.SECONDS_PER_HOUR == 10.66
    assert outcome.key is not None
    assert outcome.key[0] == date(2015, 11, 4).toordinal()
    assert "gfx_compositor" not in rules.key_to_row(outcome.key)[1]


def test_reference_ping_with_meta_dimensions() -> None:
    doc = {**load("main.4.sample.pass.json"),
           "meta": {"submissionDate": "2015-11-05", "normalizedChannel": "release",
                    "appName": "Thunderbird", "geoCountry": "CA", "docType": "main"}}
    outcome = rules.evaluate_line(orjson.dumps(doc), None, frozenset({SUB_2015}))
    assert outcome is not None and outcome.key is not None
    assert rules.key_to_row(outcome.key) == (
        "2015-11-04",
        {**DIMS_2015, "channel": "release", "application": "Thunderbird", "country": "CA"},
    )


def test_meta_doc_type_turns_the_empty_ping_into_an_ignored_main_ping() -> None:
    doc = {"meta": {"submissionDate": "20151105", "docType": "main"}}
    assert rules.evaluate_line(orjson.dumps({**load("main.4.empty.fail.json"), **doc}), None,
                               frozenset({SUB_2015})) == Outcome(MAIN_IGNORED, SUB_2015)


@pytest.mark.parametrize("process", ["main", None])
def test_crash_sample_as_a_main_process_crash(process: str | None) -> None:
    doc = load("crash.4.sample.pass.json")
    if process is None:
        del doc["payload"]["processType"]
    else:
        doc["payload"]["processType"] = process
    outcome = rules.evaluate_line(with_meta(doc, SUB_CRASH), None, frozenset({SUB_CRASH}))
    check(outcome, SUB_CRASH, Processed(CRASH_PROCESSED, "2018-04-10", DIMS_CRASH,
                                        (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                                        ID_CRASH, CLIENT_CRASH))


# -- the activity date clamped into [submission - 7 days, submission] --------------------------

#: (file, submission date, expected activity date), by hand
CLAMPED = [
    *((name, "2016-01-01", "2015-12-25") for name in PROCESSED_MAIN if "gc_sample" not in name),
    *((name, "2015-11-11", "2015-11-04") for name in PROCESSED_MAIN if "gc_sample" not in name),
    *((name, "2015-11-12", "2015-11-05") for name in PROCESSED_MAIN if "gc_sample" not in name),
    *((name, "2015-11-01", "2015-11-01") for name in PROCESSED_MAIN if "gc_sample" not in name),
    *((name, "2018-06-01", "2018-05-25") for name in PROCESSED_MAIN if "gc_sample" in name),
    *((name, "2019-03-02", "2019-02-23") for name in PROCESSED_MAIN if "gc_sample" in name),
    *((name, "2018-03-15", "2018-03-08") for name in PROCESSED_MAIN if "gc_sample" in name),
    *((name, "2018-03-01", "2018-03-01") for name in PROCESSED_MAIN if "gc_sample" in name),
]


@pytest.mark.parametrize(("name", "submission", "activity"), CLAMPED)
def test_reference_main_ping_activity_date_is_clamped(name: str, submission: str,
                                                      activity: str) -> None:
    day = date.fromisoformat(submission)
    outcome = rules.evaluate_line(with_meta(load(name), day), None, frozenset({day}))
    assert outcome is not None
    assert (outcome.counter, outcome.submission_date) == (MAIN_PROCESSED, day)
    assert outcome.key is not None
    assert rules.key_to_row(outcome.key)[0] == activity


def test_clamped_cases_cover_every_processed_main_ping() -> None:
    assert len(CLAMPED) == 5 * 4 + 2 * 4
    assert {name for name, _, _ in CLAMPED} == set(PROCESSED_MAIN)


# -- all 46 in one submission date ------------------------------------------------------------


def _stats(**nonzero: float) -> dict[str, float]:
    return {**dict.fromkeys(rules.STATS, 0.0), **nonzero}


# All 46 files in sorted order in the folder of 2015-11-05. crash.4.* sort first (rule 3, never
# duplicates); main.4.GMPlugins.fail.json is the first of the 38 main pings with id ID_2015: it is
# kept and the other 37 are duplicates; gc_sample is kept (activity 2018-03-08 clamped to
# 2015-11-05) and gc_sample_2, same id, is a duplicate; main.4.empty.fail.json has no doc type.
DEDUPED_COUNTERS = {CRASH_NON_MAIN_IGNORED: 5, MAIN_PROCESSED: 2, DUPLICATES: 38,
                    OTHER_DOC_TYPE: 1}
DEDUPED_ROWS = [
    ("2015-11-04", DIMS_2015, _stats(
        ping_count=1.0, usage_hours=10.66, usage_hours_squared=10.66**2, client_count=1.0,
        client_usage_hours_squared=10.66**2)),
    ("2015-11-05", DIMS_GC, _stats(
        ping_count=1.0, usage_hours=HOURS_GC, usage_hours_squared=HOURS_GC**2,
        client_count=1.0, client_usage_hours_squared=HOURS_GC**2)),
]
# Without dedupe: the 7 full main pings are processed, the 33 fragments ignored.
ALL_KEPT_COUNTERS = {CRASH_NON_MAIN_IGNORED: 5, MAIN_PROCESSED: 7, MAIN_IGNORED: 33,
                     OTHER_DOC_TYPE: 1}
ALL_KEPT_ROWS = [
    # 5 pings of 10.66 h, one client: 53.3 h; per-ping squares 5 * 113.6356
    ("2015-11-04", DIMS_2015, _stats(
        ping_count=5.0, usage_hours=53.3, usage_hours_squared=568.178, client_count=1.0,
        client_usage_hours_squared=53.3**2)),
    ("2015-11-05", DIMS_GC, _stats(
        ping_count=2.0, usage_hours=2 * HOURS_GC, usage_hours_squared=2 * HOURS_GC**2,
        client_count=1.0, client_usage_hours_squared=(2 * HOURS_GC) ** 2)),
]


def check_rows(rows: list[Aggregate], expected: list[tuple[str, dict[str, str],
                                                         dict[str, float]]]) -> None:
    assert [(row.activity_date, row.dimensions) for row in rows] == [
        (activity, dims) for activity, dims, _ in expected]
    for row, (_, _, stats) in zip(rows, expected, strict=True):
        assert row.stats == pytest.approx(stats)


@pytest.mark.parametrize(("dedupe", "counters", "expected"), [
    (True, DEDUPED_COUNTERS, DEDUPED_ROWS),
    (False, ALL_KEPT_COUNTERS, ALL_KEPT_ROWS),
])
def test_all_reference_pings_in_one_date(dedupe: bool, counters: dict[str, int],
                                         expected: list[Any]) -> None:
    aggregator = DateAggregator(dedupe=dedupe)
    batch = DateBatch()
    for name in sorted(EXPECTED):
        outcome = rules.evaluate_line(orjson.dumps(load(name)), SUB_2015, dedupe=dedupe)
        assert outcome is not None
        batch.add(outcome)
    aggregator.add(batch.freeze())
    check_rows(aggregator.finish(), expected)
    assert {k: v for k, v in aggregator.counters.items() if v} == counters


# -- end to end: every file format gives the same rows ----------------------------------------

FORMATS = [f"{ext}{compression}" for ext in (".json", ".jsonl", ".ndjson")
           for compression in ("", ".gz", ".zst")]


def reference_lines(with_dates: bool) -> bytes:
    lines = []
    for name in sorted(EXPECTED):
        doc = load(name)
        lines.append(with_meta(doc, EXPECTED[name][0]) if with_dates else orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize(("dedupe", "counters", "expected"), [
    (True, DEDUPED_COUNTERS, DEDUPED_ROWS),
    (False, ALL_KEPT_COUNTERS, ALL_KEPT_ROWS),
])
def test_scan_partitioned_reference_pings_in_every_format(
    tmp_path: Path, suffix: str, dedupe: bool, counters: dict[str, int], expected: list[Any],
) -> None:
    write_compressed(tmp_path / "submission_date=2015-11-05" / f"part-0{suffix}",
                     reference_lines(False))
    store = PingStore(str(tmp_path))
    files = store.files_for_date(SUB_2015)
    assert [Path(f.path).name for f in files] == [f"part-0{suffix}"]
    result = scan(store, files, ScanSpec(SUB_2015, frozenset({SUB_2015}), dedupe=dedupe))
    assert result.lines == 46
    check_rows(result.aggregators[SUB_2015].finish(), expected)
    assert {k: v for k, v in result.aggregators[SUB_2015].counters.items() if v} == counters


@pytest.mark.parametrize("suffix", FORMATS)
def test_scan_flat_reference_pings_in_every_format(tmp_path: Path, suffix: str) -> None:
    # each ping with the submission date of the EXPECTED table, in one flat file
    write_compressed(tmp_path / f"pings{suffix}", reference_lines(True))
    store = PingStore(str(tmp_path))
    assert store.layout() == "flat"
    wanted = frozenset({SUB_2015, SUB_GC, SUB_CRASH})
    result = scan(store, store.all_files(), ScanSpec(None, wanted))
    assert result.undated == 0
    assert result.lines == 46
    counters = {day: {k: v for k, v in agg.counters.items() if v}
                for day, agg in result.aggregators.items()}
    assert counters == {
        # GMPlugins kept, the 37 other ID_2015 pings duplicates, {} other doc type
        SUB_2015: {MAIN_PROCESSED: 1, DUPLICATES: 37, OTHER_DOC_TYPE: 1},
        SUB_GC: {MAIN_PROCESSED: 1, DUPLICATES: 1},
        SUB_CRASH: {CRASH_NON_MAIN_IGNORED: 5},
    }
    check_rows(result.aggregators[SUB_2015].finish(), DEDUPED_ROWS[:1])
    check_rows(result.aggregators[SUB_GC].finish(), [("2018-03-08", DIMS_GC, DEDUPED_ROWS[1][2])])
    assert result.aggregators[SUB_CRASH].finish() == []
