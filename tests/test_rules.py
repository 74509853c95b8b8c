"""Every rule of SPEC sections 3 (one ping), 4 (dimensions) and 5 (stats), by hand.

Pings are small synthetic documents built by `make_main` / `make_crash` from one base ping,
with dotted-path changes (`DROP` removes a key). Every expected counter, key and stat below is
worked out by hand from the SPEC, not by running the code. The last section runs a few stores
end to end through `engines.local.scan`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import write_compressed
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate, DateAggregator, DateBatch
from crash_rate_aggregates.engines.local import ScanResult, ScanSpec, scan
from crash_rate_aggregates.rules import (
    CRASH_IGNORED,
    CRASH_NON_MAIN_IGNORED,
    CRASH_PROCESSED,
    DUPLICATES,
    MAIN_IGNORED,
    MAIN_PROCESSED,
    MALFORMED_LINES,
    OTHER_DOC_TYPE,
    SAMPLED_OUT,
    UNDATED,
    Outcome,
)
from crash_rate_aggregates.sources import PingStore

DAY = date(2016, 3, 14)  # the submission date of the base pings
ACTIVITY = date(2016, 3, 13)  # the activity date of the base pings
WANTED = frozenset({DAY})
DROP = object()  # as a change: remove the key

BASE_MAIN: dict[str, Any] = {
    "type": "main",
    "id": "doc-1",
    "clientId": "client-1",
    "meta": {
        "submissionDate": "20160314",
        "docType": "main",
        "normalizedChannel": "nightly",
        "appName": "Fennec",
        "geoCountry": "DE",
        "sampleId": 42,
    },
    "application": {"channel": "release", "name": "Firefox", "buildId": "20990101000000"},
    "environment": {
        "build": {"version": "45.0", "buildId": "20160301000000", "architecture": "x86"},
        "system": {
            "os": {"name": "Windows_NT", "version": "10.0"},
            "gfx": {"features": {"compositor": "d3d11"}},
        },
        "settings": {"e10sEnabled": False, "e10sCohort": "test"},
        "addons": {"activeExperiment": {"id": "exp-1", "branch": "control"}},
    },
    "payload": {
        "info": {"subsessionStartDate": "2016-03-13T00:00:00.0+01:00", "subsessionLength": 7200},
        "keyedHistograms": {},
    },
}
BASE_CRASH: dict[str, Any] = {
    **copy.deepcopy(BASE_MAIN),
    "type": "crash",
    "id": "crash-1",
    "meta": {**BASE_MAIN["meta"], "docType": "crash"},
    "payload": {"crashDate": "2016-03-13"},
}
#: The dimensions of the base pings, by hand from BASE_MAIN (all 13 present).
BASE_DIMS = {
    "build_version": "45.0",
    "build_id": "20160301000000",
    "channel": "nightly",
    "application": "Fennec",
    "os_name": "Windows_NT",
    "os_version": "10.0",
    "architecture": "x86",
    "country": "DE",
    "experiment_id": "exp-1",
    "experiment_branch": "control",
    "e10s_enabled": "False",
    "e10s_cohort": "test",
    "gfx_compositor": "d3d11",
}
BASE_KEY = (
    ACTIVITY.toordinal(),
    "45.0", "20160301000000", "nightly", "Fennec", "Windows_NT", "10.0", "x86", "DE",
    "exp-1", "control", "False", "test", "d3d11",
)
MAIN_MEASURES = (1, 7200, 0, 0, 0, 0, 0, 0)  # integers: usage in seconds (2 usage hours)
CRASH_MEASURES = (0, 0, 1, 0, 0, 0, 0, 0)
ARABIC_INDIC_BUILD_ID = "".join(chr(0x0660 + int(c)) for c in "20160301000000")
FULLWIDTH_BUILD_ID = "".join(chr(0xFF10 + int(c)) for c in "20160301000000")


def _change(doc: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DROP:
        node.pop(last, None)
    else:
        node[last] = value


def _make(base: dict[str, Any], changes: Mapping[str, object] | None,
          top: Mapping[str, object]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for dotted, value in {**top, **(changes or {})}.items():
        _change(doc, dotted, value)
    return doc


def make_main(changes: Mapping[str, object] | None = None, **top: object) -> dict[str, Any]:
    """A minimal valid main ping; `changes` maps dotted paths to values (or DROP)."""
    return _make(BASE_MAIN, changes, top)


def make_crash(changes: Mapping[str, object] | None = None, **top: object) -> dict[str, Any]:
    """A minimal valid main-process crash ping (no payload.processType)."""
    return _make(BASE_CRASH, changes, top)


def hist(content: object = 0, plugin: object = 0, gmplugin: object = 0, shutdown: object = 0,
         gpu: object = 0) -> dict[str, Any]:
    """payload.keyedHistograms with these bucket-"0" counts."""
    return {
        "SUBPROCESS_CRASHES_WITH_DUMP": {
            "content": {"values": {"0": content}},
            "plugin": {"values": {"0": plugin}},
            "gmplugin": {"values": {"0": gmplugin}},
            "gpu": {"values": {"0": gpu}},
        },
        "SUBPROCESS_KILL_HARD": {"ShutDownKill": {"values": {"0": shutdown}}},
    }


def line(doc: object) -> bytes:
    return doc if isinstance(doc, bytes) else orjson.dumps(doc)


def flat(doc: object, wanted: frozenset[date] | None = WANTED, **kwargs: Any) -> Outcome | None:
    """The outcome in the flat layout (the ping's meta.submissionDate decides)."""
    return rules.evaluate_line(line(doc), None, wanted, **kwargs)


def part(doc: object, day: date = DAY, **kwargs: Any) -> Outcome | None:
    """The outcome in the partitioned layout (the folder says `day`)."""
    return rules.evaluate_line(line(doc), day, None, **kwargs)


def processed(doc: object, **kwargs: Any) -> Outcome:
    outcome = flat(doc, **kwargs)
    assert outcome is not None
    assert outcome.counter in (MAIN_PROCESSED, CRASH_PROCESSED), outcome
    return outcome


def dims_of(outcome: Outcome) -> dict[str, str]:
    assert outcome.key is not None
    return rules.key_to_row(outcome.key)[1]


def activity_of(outcome: Outcome) -> str:
    assert outcome.key is not None
    return rules.key_to_row(outcome.key)[0]


def aggregate(batches: Iterable[Iterable[object]], dedupe: bool = True,
              compact_every: int = 1_000_000) -> tuple[list[Aggregate], dict[str, int]]:
    """Flat-layout outcomes of each batch of pings, folded into one DateAggregator.

    Returns the rows and the non-zero counters."""
    aggregator = DateAggregator(dedupe=dedupe, compact_every=compact_every)
    for docs in batches:
        batch = DateBatch()
        for doc in docs:
            outcome = flat(doc, dedupe=dedupe)
            assert outcome is not None and outcome.submission_date == DAY
            batch.add(outcome)
        aggregator.add(batch.freeze())
    rows = aggregator.finish()
    return rows, {name: n for name, n in aggregator.counters.items() if n}


# -- the base pings -----------------------------------------------------------------------------


def test_dimension_names_and_order() -> None:
    assert rules.DIMENSION_NAMES == (
        "build_version", "build_id", "channel", "application", "os_name", "os_version",
        "architecture", "country", "experiment_id", "experiment_branch", "e10s_enabled",
        "e10s_cohort", "gfx_compositor",
    )


def test_base_main_ping_outcome() -> None:
    assert flat(make_main()) == Outcome(
        MAIN_PROCESSED, DAY, "doc-1", key=BASE_KEY, client_id="client-1",
        measures=MAIN_MEASURES,
    )
    assert rules.key_to_row(BASE_KEY) == ("2016-03-13", BASE_DIMS)


def test_base_crash_ping_outcome() -> None:
    assert flat(make_crash()) == Outcome(
        CRASH_PROCESSED, DAY, "crash-1", key=BASE_KEY, client_id="client-1",
        measures=CRASH_MEASURES,
    )


def test_counter_names() -> None:
    assert rules.COUNTERS == (
        "main_processed", "main_ignored", "crash_processed", "crash_ignored",
        "crash_non_main_ignored", "other_doc_type", "malformed_lines", "duplicates",
        "sampled_out",
    )
    assert UNDATED == "undated"


# -- rule 1: doc type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta_type", "top_type", "expected"),
    [
        ("main", "crash", MAIN_PROCESSED),  # meta.docType wins over type
        ("crash", "main", CRASH_IGNORED),  # read as a crash ping: no payload.crashDate
        (DROP, "main", MAIN_PROCESSED),  # falls back to type
        (DROP, "crash", CRASH_IGNORED),
        # a present docType of another type is its value (SPEC: "else" reads type only
        # when the key is missing): not main or crash
        (5, "main", OTHER_DOC_TYPE),
        (None, "main", OTHER_DOC_TYPE),
        (["main"], "main", OTHER_DOC_TYPE),
        (None, "crash", OTHER_DOC_TYPE),
        ("event", "main", OTHER_DOC_TYPE),
        ("Main", "main", OTHER_DOC_TYPE),
        ("", "main", OTHER_DOC_TYPE),  # an empty string is a string: no fallback
        (DROP, "saved-session", OTHER_DOC_TYPE),
        (DROP, DROP, OTHER_DOC_TYPE),
        (DROP, 1, OTHER_DOC_TYPE),
        (7, "core", OTHER_DOC_TYPE),
    ],
)
def test_rule1_doc_type(meta_type: object, top_type: object, expected: str) -> None:
    outcome = flat(make_main({"meta.docType": meta_type, "type": top_type}))
    assert outcome is not None
    assert outcome.counter == expected
    if expected == OTHER_DOC_TYPE:
        assert outcome == Outcome(OTHER_DOC_TYPE, DAY)


def test_rule1_meta_not_an_object_falls_back_to_type_in_partitioned_layout() -> None:
    outcome = part(make_main(meta=[1]))
    assert outcome is not None and outcome.counter == MAIN_PROCESSED
    # channel and application fall back to application.*, no country
    expected = {**BASE_DIMS, "channel": "release", "application": "Firefox"}
    del expected["country"]
    assert dims_of(outcome) == expected


def test_rule1_empty_object_is_other_doc_type() -> None:
    assert part(b"{}") == Outcome(OTHER_DOC_TYPE, DAY)


# -- sampling (after rule 1, before rule 3) -----------------------------------------------------


@pytest.mark.parametrize(
    ("sample_id", "sample_below", "expected"),
    [
        (42, 50.0, MAIN_PROCESSED),
        (49, 50.0, MAIN_PROCESSED),
        (50, 50.0, SAMPLED_OUT),
        (99, 50.0, SAMPLED_OUT),
        (99, 100.0, MAIN_PROCESSED),  # --sample-fraction 1
        (0, 0.0, SAMPLED_OUT),  # --sample-fraction 0
        (24, 25.0, MAIN_PROCESSED),  # --sample-fraction 0.25
        (25, 25.0, SAMPLED_OUT),
        (0, 0.5, MAIN_PROCESSED),  # --sample-fraction 0.005
        (1, 0.5, SAMPLED_OUT),
        ("10", 50.0, SAMPLED_OUT),
        (10.0, 50.0, SAMPLED_OUT),
        (True, 50.0, SAMPLED_OUT),  # a boolean is not an integer
        (None, 50.0, SAMPLED_OUT),
        (DROP, 50.0, SAMPLED_OUT),
        (DROP, None, MAIN_PROCESSED),  # no sampling: sampleId not needed
        ("x", None, MAIN_PROCESSED),
    ],
)
def test_sampling(sample_id: object, sample_below: float | None, expected: str) -> None:
    outcome = flat(make_main({"meta.sampleId": sample_id}), sample_below=sample_below)
    assert outcome is not None and outcome.counter == expected
    if expected == SAMPLED_OUT:
        assert outcome == Outcome(SAMPLED_OUT, DAY)  # no doc id: never a duplicate


def test_sampling_comes_after_rule1_and_before_rules_3_to_9() -> None:
    out = {"meta.sampleId": 99}
    kept = {"meta.sampleId": 10}
    assert flat(make_main({**out, "type": "event", "meta.docType": DROP}),
                sample_below=50.0) == Outcome(OTHER_DOC_TYPE, DAY)
    content_crash = {"payload.processType": "content"}
    assert flat(make_crash({**out, **content_crash}), sample_below=50.0) == Outcome(
        SAMPLED_OUT, DAY)
    assert flat(make_crash({**kept, **content_crash}), sample_below=50.0) == Outcome(
        CRASH_NON_MAIN_IGNORED, DAY)
    no_start = {"payload.info.subsessionStartDate": DROP}
    assert flat(make_main({**out, **no_start}), sample_below=50.0) == Outcome(SAMPLED_OUT, DAY)
    assert flat(make_main({**kept, **no_start}), sample_below=50.0) == Outcome(
        MAIN_IGNORED, DAY, "doc-1")
    # malformed lines and (flat layout) undated lines are what they are, sampled or not
    assert part(b"[1]", sample_below=50.0) == Outcome(MALFORMED_LINES, DAY)
    assert flat(make_main({**out, "meta.submissionDate": DROP}), sample_below=50.0) == Outcome(
        UNDATED, None)


def test_sampled_out_copies_are_not_duplicates() -> None:
    aggregator = DateAggregator()
    batch = DateBatch()
    for _ in range(2):
        outcome = flat(make_main({"meta.sampleId": 99}), sample_below=50.0)
        assert outcome is not None
        batch.add(outcome)
    aggregator.add(batch.freeze())
    assert aggregator.finish() == []
    assert aggregator.counters[SAMPLED_OUT] == 2
    assert aggregator.counters[DUPLICATES] == 0


# -- rule 2: submission date --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["20160314", "2016-03-14"])
def test_rule2_submission_date_forms(text: str) -> None:
    outcome = flat(make_main({"meta.submissionDate": text}))
    assert outcome is not None
    assert outcome.submission_date == DAY
    assert outcome.counter == MAIN_PROCESSED


def test_rule2_leap_day_is_a_real_date() -> None:
    outcome = flat(make_main({"meta.submissionDate": "20160229"}), wanted=None)
    assert outcome is not None and outcome.submission_date == date(2016, 2, 29)


@pytest.mark.parametrize(
    "value",
    [
        "20160230",  # not a calendar date
        "2016-02-30",
        "20150229",  # 2015 is not a leap year
        "20161301",
        "00000101",  # year 0
        "2016-3-14",
        "2016-0314",
        "201603-14",
        "2016/03/14",
        "16-03-14",
        "201603140",
        "2016031",
        "2016-03-1x",
        "2016-03-14T00:00:00",
        " 20160314",
        "20160314 ",
        "2016-03-14\n",
        "",
        "".join(chr(0x0660 + int(c)) for c in "20160314"),  # Arabic-Indic digits
        20160314,
        None,
        ["20160314"],
        DROP,
    ],
)
def test_rule2_invalid_or_missing_submission_date_is_undated(value: object) -> None:
    assert flat(make_main({"meta.submissionDate": value})) == Outcome(UNDATED, None)
    assert flat(make_main({"meta.submissionDate": value}), wanted=None) == Outcome(UNDATED, None)


@pytest.mark.parametrize("meta", [DROP, None, [1], "20160314", {}])
def test_rule2_no_meta_object_is_undated(meta: object) -> None:
    assert flat(make_main(meta=meta)) == Outcome(UNDATED, None)


@pytest.mark.parametrize("value", ["20160313", "2016-03-15", "20150314"])
def test_rule2_outside_wanted_dates_is_skipped(value: str) -> None:
    assert flat(make_main({"meta.submissionDate": value})) is None
    # even pings that would be ignored or of another doc type are skipped, not counted
    assert flat(make_main({"meta.submissionDate": value, "payload": DROP})) is None
    assert flat(make_main({"meta.submissionDate": value, "meta.docType": "event"})) is None


def test_rule2_without_wanted_every_date_is_kept() -> None:
    outcome = flat(make_main({"meta.submissionDate": "20160101"}), wanted=None)
    assert outcome is not None
    assert outcome.submission_date == date(2016, 1, 1)
    # activity 2016-03-13 is after the submission date: clamped to it (rule 5)
    assert activity_of(outcome) == "2016-01-01"


def test_rule2_two_wanted_dates() -> None:
    wanted = frozenset({DAY, date(2016, 3, 13)})
    outcome = flat(make_main({"meta.submissionDate": "2016-03-13"}), wanted=wanted)
    assert outcome is not None
    assert (outcome.counter, outcome.submission_date) == (MAIN_PROCESSED, date(2016, 3, 13))


def test_rule2_other_doc_type_without_a_date_is_undated_in_flat_layout() -> None:
    doc = make_main({"meta.docType": "event", "meta.submissionDate": DROP})
    assert flat(doc) == Outcome(UNDATED, None)


MALFORMED = [
    b"{",
    b"not json",
    b"{'type': 'main'}",
    b'{"type": "main"',
    b"[1]",
    b'"x"',
    b"1",
    b"null",
    b"true",
    b"[]",
    b"\xff\xfe",
    b'{"type": "main\xff"}',  # invalid UTF-8 inside a string
    b'{"type": "main", "id": "\xc3"}',  # truncated UTF-8 sequence
    b'{"a": 1} {"b": 2}',
    b'{"type": "main", "x": 123456789012345678901234567890}',  # integer over 64 bits
    b'{"type": "main", "x": 1e400}',  # beyond a double
    b'{"type": "main", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
    b'{"type": "main", "x": "\\ud800"}',  # a lone surrogate is not Unicode
]


def test_a_byte_order_mark_is_ignored() -> None:
    # RFC 8259 lets a parser ignore a leading byte order mark; the decoder does.
    line = b"\xef\xbb\xbf" + orjson.dumps(make_main())
    outcome = rules.evaluate_line(line, DAY)
    assert outcome is not None and outcome.counter == MAIN_PROCESSED


@pytest.mark.parametrize("raw", MALFORMED)
def test_rule2_malformed_line_in_flat_layout_is_undated(raw: bytes) -> None:
    outcome = rules.evaluate_line(raw, None, WANTED)
    # submission_date None is what sends a line to the run's `undated` counter (see
    # test_scan_flat_layout); the counter name it carries is then unused. The code says
    # "malformed_lines", the design note says "undated": either is fine.
    assert outcome is not None
    assert outcome.submission_date is None
    assert outcome.counter in (UNDATED, MALFORMED_LINES)
    assert (outcome.doc_id, outcome.key, outcome.client_id, outcome.measures) == (None,) * 4


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_line_in_partitioned_layout(raw: bytes) -> None:
    assert rules.evaluate_line(raw, DAY) == Outcome(MALFORMED_LINES, DAY)


@pytest.mark.parametrize("value", ["20150101", "20160230", DROP, 7])
def test_partitioned_layout_folder_date_wins_over_meta(value: object) -> None:
    outcome = part(make_main({"meta.submissionDate": value}))
    assert outcome is not None
    assert (outcome.counter, outcome.submission_date) == (MAIN_PROCESSED, DAY)


def test_partitioned_layout_needs_no_meta() -> None:
    outcome = part(make_main(meta=DROP))
    assert outcome is not None and outcome.counter == MAIN_PROCESSED
    expected = {**BASE_DIMS, "channel": "release", "application": "Firefox"}
    del expected["country"]
    assert dims_of(outcome) == expected


# -- rule 3: crash process ----------------------------------------------------------------------


@pytest.mark.parametrize("process", ["content", "gpu", "plugin", "gmplugin", None, "", "Main", 5,
                                     {}, ["main"]])
def test_rule3_non_main_crash_is_ignored(process: object) -> None:
    outcome = flat(make_crash({"payload.processType": process}))
    assert outcome == Outcome(CRASH_NON_MAIN_IGNORED, DAY)


@pytest.mark.parametrize("process", ["main", DROP])
def test_rule3_main_or_absent_process_goes_on(process: object) -> None:
    outcome = flat(make_crash({"payload.processType": process}))
    assert outcome is not None
    assert (outcome.counter, outcome.measures) == (CRASH_PROCESSED, CRASH_MEASURES)


def test_rule3_applies_to_crash_pings_only() -> None:
    outcome = flat(make_main({"payload.processType": "content"}))
    assert outcome is not None
    assert (outcome.counter, outcome.measures) == (MAIN_PROCESSED, MAIN_MEASURES)


def test_rule3_crash_payload_not_an_object() -> None:
    # no processType, so it goes on, and then has no crashDate: ignored (after rule 4)
    assert flat(make_crash(payload="x")) == Outcome(CRASH_IGNORED, DAY, "crash-1")


def test_rule3_non_main_crashes_are_never_duplicates() -> None:
    content = make_crash({"payload.processType": "content"})
    rows, counters = aggregate([[content, content, content]])
    assert rows == []
    assert counters == {CRASH_NON_MAIN_IGNORED: 3}


# -- rule 4: duplicates -------------------------------------------------------------------------


def _stats(row: Aggregate, *names: str) -> tuple[float, ...]:
    return tuple(row.stats[name] for name in names)


def test_rule4_second_copy_is_a_duplicate_and_only_the_first_counts() -> None:
    first = make_main({"payload.info.subsessionLength": 3600}, id="a")
    second = make_main({"payload.info.subsessionLength": 7200}, id="a")
    rows, counters = aggregate([[first, second]])
    assert counters == {MAIN_PROCESSED: 1, DUPLICATES: 1}
    [row] = rows
    assert _stats(row, "ping_count", "usage_hours") == (1.0, 1.0)


def test_rule4_duplicates_across_batches() -> None:
    first = make_main({"payload.info.subsessionLength": 3600}, id="a")
    second = make_main({"payload.info.subsessionLength": 7200}, id="a")
    other = make_main(id="b")
    rows, counters = aggregate([[first], [second, other], [first]])
    assert counters == {MAIN_PROCESSED: 2, DUPLICATES: 2}
    [row] = rows
    assert _stats(row, "ping_count", "usage_hours") == (2.0, 3.0)


def test_rule4_document_id_falls_back_to_meta_document_id() -> None:
    assert processed(make_main({"meta.documentId": "m-1"}, id=DROP)).doc_id == "m-1"
    # a present id of another type (null included) is no id: no fall back
    assert processed(make_main({"meta.documentId": "m-1"}, id=7)).doc_id is None
    assert processed(make_main({"meta.documentId": "m-1"}, id=None)).doc_id is None
    assert processed(make_main({"meta.documentId": "m-1"}, id="top")).doc_id == "top"
    assert processed(make_main({"meta.documentId": 8}, id=7)).doc_id is None
    assert processed(make_main(id=None)).doc_id is None
    by_meta = make_main({"meta.documentId": "m-1"}, id=DROP)
    by_top = make_main(id="m-1")
    by_meta_non_string_top = make_main({"meta.documentId": "m-1"}, id=["x"])
    rows, counters = aggregate([[by_top, by_meta, by_meta_non_string_top]])
    assert counters == {MAIN_PROCESSED: 2, DUPLICATES: 1}  # the ["x"] id is no id
    # the top-level id wins: same meta.documentId, different ids, no duplicate
    rows, counters = aggregate([[make_main({"meta.documentId": "shared"}, id="a"),
                                 make_main({"meta.documentId": "shared"}, id="b")]])
    assert counters == {MAIN_PROCESSED: 2}


def test_rule4_pings_without_an_id_are_never_duplicates() -> None:
    anonymous = make_main(id=DROP)
    non_string = make_main(id=12345)
    rows, counters = aggregate([[anonymous, anonymous], [anonymous, non_string, non_string]])
    assert counters == {MAIN_PROCESSED: 5}
    [row] = rows
    assert row.stats["ping_count"] == 5.0


def test_rule4_no_dedupe_keeps_every_copy() -> None:
    ping = make_main(id="a")
    assert processed(ping, dedupe=False).doc_id is None
    rows, counters = aggregate([[ping, ping], [ping]], dedupe=False)
    assert counters == {MAIN_PROCESSED: 3}
    [row] = rows
    assert _stats(row, "ping_count", "usage_hours") == (3.0, 6.0)
    # a DateAggregator without dedupe keeps copies even of outcomes that carry an id
    aggregator = DateAggregator(dedupe=False)
    batch = DateBatch()
    for _ in range(2):
        batch.add(processed(ping))
    aggregator.add(batch.freeze())
    assert aggregator.counters[MAIN_PROCESSED] == 2
    assert aggregator.counters[DUPLICATES] == 0


def test_rule4_a_copy_of_an_ignored_ping_is_a_duplicate() -> None:
    ignored = make_main({"payload.info.subsessionStartDate": DROP}, id="a")
    good = make_main(id="a")
    assert flat(ignored) == Outcome(MAIN_IGNORED, DAY, "a")
    rows, counters = aggregate([[ignored, good]])
    assert rows == []
    assert counters == {MAIN_IGNORED: 1, DUPLICATES: 1}
    rows, counters = aggregate([[good, ignored]])
    assert len(rows) == 1
    assert counters == {MAIN_PROCESSED: 1, DUPLICATES: 1}
    # the same for crash pings ignored by rule 5 or 6
    bad_crash = make_crash({"payload.crashDate": DROP}, id="c")
    rows, counters = aggregate([[bad_crash, make_crash(id="c")]])
    assert rows == []
    assert counters == {CRASH_IGNORED: 1, DUPLICATES: 1}


def test_rule4_ids_are_shared_by_main_and_crash_pings() -> None:
    rows, counters = aggregate([[make_crash(id="x"), make_main(id="x")]])
    assert counters == {CRASH_PROCESSED: 1, DUPLICATES: 1}
    [row] = rows
    assert _stats(row, "ping_count", "main_crashes") == (0.0, 1.0)


def test_rule4_other_doc_types_are_never_duplicates() -> None:
    event = make_main({"meta.docType": "event"}, id="e")
    rows, counters = aggregate([[event, event]])
    assert rows == []
    assert counters == {OTHER_DOC_TYPE: 2}


# -- rule 5: activity date ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2016-03-10", "2016-03-10"),
        ("2016-03-10T00:00:00.0-08:00", "2016-03-10"),
        ("2016-03-10T23:30:00.0-08:00", "2016-03-10"),  # UTC would be the 11th: not converted
        ("2016-03-10T00:30:00.0+05:00", "2016-03-10"),  # UTC would be the 9th
        ("2016-03-10T12:00:00Z", "2016-03-10"),
        ("2016-02-29", "2016-03-07"),  # a real date, then clamped
        # clamped into [submission - 7 days, submission]
        ("2016-03-20", "2016-03-14"),
        ("2016-03-15T00:00:00.0+01:00", "2016-03-14"),
        ("2099-01-01", "2016-03-14"),
        ("2016-03-14", "2016-03-14"),
        ("2016-03-07", "2016-03-07"),  # exactly 7 days before: kept
        ("2016-03-06", "2016-03-07"),
        ("2016-03-04", "2016-03-07"),  # 10 days before
        ("1970-01-01T00:00:00.0+00:00", "2016-03-07"),
        ("0001-01-01", "2016-03-07"),
        # ignored
        ("2016-3-10", None),
        ("2016-03-1", None),
        ("2016-02-30", None),
        ("2015-02-29", None),
        ("2016-13-01", None),
        ("0000-01-01", None),
        ("20160310", None),
        ("2016/03/10", None),
        ("10/03/2016", None),
        ("2016-03-10 00:00:00", None),  # a space, not T
        ("2016-03-10Z", None),
        ("2016-03-10T", None),  # T without a time
        (" 2016-03-10", None),
        ("", None),
        ("".join(chr(0x0660 + int(c)) for c in "2016") + "-03-10", None),
        (20160310, None),
        (None, None),
        (["2016-03-10"], None),
        ({"date": "2016-03-10"}, None),
        (DROP, None),
    ],
)
def test_rule5_main_activity_date(start: object, expected: str | None) -> None:
    outcome = flat(make_main({"payload.info.subsessionStartDate": start}))
    if expected is None:
        assert outcome == Outcome(MAIN_IGNORED, DAY, "doc-1")
    else:
        assert outcome is not None and outcome.counter == MAIN_PROCESSED
        assert activity_of(outcome) == expected


@pytest.mark.parametrize("info", [DROP, None, "x", [1]])
def test_rule5_no_info_object_is_ignored(info: object) -> None:
    assert flat(make_main({"payload.info": info})) == Outcome(MAIN_IGNORED, DAY, "doc-1")
    assert flat(make_main(payload=info)) == Outcome(MAIN_IGNORED, DAY, "doc-1")


@pytest.mark.parametrize(
    ("start", "expected"),
    [("2016-02-29", "2016-02-29"), ("2016-02-23", "2016-02-23"), ("2016-02-22", "2016-02-23"),
     ("2016-03-02", "2016-03-01")],
)
def test_rule5_clamp_across_a_leap_day(start: str, expected: str) -> None:
    outcome = part(make_main({"payload.info.subsessionStartDate": start}), day=date(2016, 3, 1))
    assert outcome is not None and outcome.counter == MAIN_PROCESSED
    assert activity_of(outcome) == expected


@pytest.mark.parametrize(
    ("submission", "start", "expected"),
    [
        # year 1's first week: nothing before date.min to clamp to (was an OverflowError)
        ("00010103", "0001-01-02", "0001-01-02"),
        ("00010101", "0001-01-01", "0001-01-01"),
        ("00010107", "0001-01-01", "0001-01-01"),
        ("00010103", "0001-01-05", "0001-01-03"),
        ("00010108", "0001-01-01", "0001-01-01"),  # 0001-01-08 - 7 days = date.min
        ("00010109", "0001-01-01", "0001-01-02"),
    ],
)
@pytest.mark.parametrize("layout", ["flat", "partitioned"])
def test_rule5_clamp_in_the_first_week_of_year_one(layout: str, submission: str, start: str,
                                                   expected: str) -> None:
    doc = make_main({"meta.submissionDate": submission,
                     "payload.info.subsessionStartDate": start})
    day = date(1, 1, int(submission[-2:]))
    outcome = flat(doc, wanted=frozenset({day})) if layout == "flat" else part(doc, day=day)
    assert outcome is not None
    assert (outcome.counter, outcome.submission_date) == (MAIN_PROCESSED, day)
    assert activity_of(outcome) == expected


@pytest.mark.parametrize(
    ("crash_date", "expected"),
    [
        ("2016-03-12", "2016-03-12"),
        ("2016-03-30", "2016-03-14"),
        ("2016-03-01", "2016-03-07"),
        ("2016-03-07", "2016-03-07"),
        ("2016-03-12T10:00:00Z", None),  # a crash date has no time part
        ("2016-03-12T10:00:00.0+01:00", None),
        ("2016-3-12", None),
        ("2016-02-30", None),
        ("20160312", None),
        (20160312, None),
        (None, None),
        (DROP, None),
    ],
)
def test_rule5_crash_activity_date(crash_date: object, expected: str | None) -> None:
    outcome = flat(make_crash({"payload.crashDate": crash_date}))
    if expected is None:
        assert outcome == Outcome(CRASH_IGNORED, DAY, "crash-1")
    else:
        assert outcome is not None and outcome.counter == CRASH_PROCESSED
        assert activity_of(outcome) == expected


def test_rule5_each_kind_uses_its_own_date_field() -> None:
    crash_with_start = make_crash({"payload.crashDate": DROP,
                                   "payload.info.subsessionStartDate": "2016-03-12"})
    assert flat(crash_with_start) == Outcome(CRASH_IGNORED, DAY, "crash-1")
    main_with_crash_date = make_main({"payload.info.subsessionStartDate": DROP,
                                      "payload.crashDate": "2016-03-12"})
    assert flat(main_with_crash_date) == Outcome(MAIN_IGNORED, DAY, "doc-1")


# -- rule 6: build id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build_id", "expected"),
    [
        ("20160301000000", "20160301000000"),
        ("99999999999999", "99999999999999"),
        (20160301000000, "20160301000000"),  # a JSON integer of 14 digits
        ("2016030100000", None),  # 13 digits
        ("201603010000000", None),  # 15 digits
        (2016030100000, None),  # 13-digit integer
        (201603010000000, None),
        (-2016030100000, None),  # "-" and 13 digits
        ("2016030100000a", None),
        ("2016-03-010000", None),
        (" 2016030100000", None),
        ("2016030100000\u0000", None),  # NUL becomes U+FFFD
        (ARABIC_INDIC_BUILD_ID, None),
        (FULLWIDTH_BUILD_ID, None),
        ("", None),
        (2.0160301e13, None),
        (True, None),
        (None, None),
        (["20160301000000"], None),
        (DROP, None),
    ],
)
def test_rule6_build_id(build_id: object, expected: str | None) -> None:
    changes = {"environment.build.buildId": build_id}
    outcome = flat(make_main(changes))
    crash = flat(make_crash(changes))
    if expected is None:
        assert outcome == Outcome(MAIN_IGNORED, DAY, "doc-1")
        assert crash == Outcome(CRASH_IGNORED, DAY, "crash-1")
    else:
        assert outcome is not None and outcome.counter == MAIN_PROCESSED
        assert dims_of(outcome)["build_id"] == expected
        assert crash is not None and crash.counter == CRASH_PROCESSED


def test_rule6_application_build_id_is_not_used() -> None:
    # BASE_MAIN has application.buildId "20990101000000": never a fallback
    outcome = flat(make_main({"environment.build.buildId": DROP}))
    assert outcome == Outcome(MAIN_IGNORED, DAY, "doc-1")


# -- rule 7: usage hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "hours"),
    [
        (7200, 2.0),
        (3600, 1.0),
        (1800, 0.5),
        (38376, 10.66),
        (0, 0.0),
        (-5, 0.0),
        (-(2**63), 0.0),
        (90000, 25.0),
        (90001, 25.0),
        (200000, 25.0),
        (2**63 - 1, 25.0),
        (True, None),
        (False, None),
        (3.5, None),
        (3.0, None),  # a JSON float, even a whole one, is not an integer
        ("100", None),
        (None, None),
        ([100], None),
        ({}, None),
        (2**63, None),  # outside the signed 64-bit range
        (2**64 - 1, None),
        (DROP, None),
    ],
)
def test_rule7_usage_hours(length: object, hours: float | None) -> None:
    outcome = flat(make_main({"payload.info.subsessionLength": length}))
    if hours is None:
        assert outcome == Outcome(MAIN_IGNORED, DAY, "doc-1")
    else:
        assert outcome is not None and outcome.counter == MAIN_PROCESSED
        assert outcome.measures is not None
        seconds = outcome.measures[1]  # whole seconds, divided by 3600 once per aggregate
        assert type(seconds) is int and seconds / rules.SECONDS_PER_HOUR == hours
        assert outcome.measures == (1, seconds, 0, 0, 0, 0, 0, 0)


def test_rule7_one_second() -> None:
    outcome = processed(make_main({"payload.info.subsessionLength": 1}))
    assert outcome.measures is not None
    assert outcome.measures[1] == 1


def test_rule7_integer_beyond_64_bits_is_not_counted() -> None:
    raw = line(make_main()).replace(b'"subsessionLength":7200', b'"subsessionLength":'
                                    + str(2**64).encode())
    assert str(2**64).encode() in raw
    outcome = flat(raw)
    # SPEC: "may be counted as a malformed line instead": the decoder refuses it, so in a flat
    # store the line has no date to be counted under (undated)
    assert outcome == Outcome(MALFORMED_LINES, None)
    assert part(raw) == Outcome(MALFORMED_LINES, DAY)


def test_rule7_crash_pings_have_no_usage() -> None:
    outcome = processed(make_crash({"payload.info.subsessionLength": 7200}))
    assert outcome.measures == CRASH_MEASURES


# -- rule 8: crash counts -----------------------------------------------------------------------


def test_rule8_all_five_counts() -> None:
    doc = make_main({"payload.keyedHistograms": hist(1, 2, 3, 4, 5)})
    # order of MEASURES: ping_count, usage_hours, main_crashes, content, plugin, gmplugin,
    # content_shutdown, gpu
    assert processed(doc).measures == (1, 7200, 0, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("histogram", "key", "index"),
    [
        ("SUBPROCESS_CRASHES_WITH_DUMP", "content", 3),
        ("SUBPROCESS_CRASHES_WITH_DUMP", "plugin", 4),
        ("SUBPROCESS_CRASHES_WITH_DUMP", "gmplugin", 5),
        ("SUBPROCESS_KILL_HARD", "ShutDownKill", 6),
        ("SUBPROCESS_CRASHES_WITH_DUMP", "gpu", 7),
    ],
)
def test_rule8_each_count_from_bucket_zero(histogram: str, key: str, index: int) -> None:
    doc = make_main({"payload.keyedHistograms": {
        histogram: {key: {"bucket_count": 3, "histogram_type": 4, "range": [1, 2], "sum": 10,
                          "values": {"0": 3, "1": 7}}}}})
    expected = [1, 7200, 0, 0, 0, 0, 0, 0]
    expected[index] = 3
    assert processed(doc).measures == tuple(expected)


@pytest.mark.parametrize("count", [DROP, -1, -(2**63), 2.5, 3.0, True, False, "3", None, [3],
                                   {"0": 3}, 2**63])
def test_rule8_missing_or_invalid_count_is_zero(count: object) -> None:
    doc = make_main({"payload.keyedHistograms": hist(1, 2, 3, 4, 5)})
    _change(doc, "payload.keyedHistograms.SUBPROCESS_CRASHES_WITH_DUMP.plugin.values.0", count)
    _change(doc, "payload.keyedHistograms.SUBPROCESS_KILL_HARD.ShutDownKill.values.0", count)
    assert processed(doc).measures == (1, 7200, 0, 1, 0, 3, 0, 5)


@pytest.mark.parametrize(
    "histograms",
    [
        DROP,
        None,
        "x",
        [],
        {"SUBPROCESS_CRASHES_WITH_DUMP": None},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"content": {"values": None}}},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"content": {"values": [3, 7]}}},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"content": {"values": {"1": 7}}}},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"content": {"0": 3}}},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"Content": {"values": {"0": 3}}}},
        {"SUBPROCESS_KILL_HARD": {"content": {"values": {"0": 3}}}},
        {"SUBPROCESS_ABNORMAL_ABORT": {"content": {"values": {"0": 3}}}},
        {"SUBPROCESS_CRASHES_WITH_DUMP": {"ShutDownKill": {"values": {"0": 3}}}},
    ],
)
def test_rule8_no_count_found_is_zero(histograms: object) -> None:
    doc = make_main({"payload.keyedHistograms": histograms})
    assert processed(doc).measures == MAIN_MEASURES


def test_rule8_histograms_outside_keyed_histograms_are_not_used() -> None:
    doc = make_main({"payload.histograms": hist(1, 2, 3, 4, 5),
                     "payload.processes.content.keyedHistograms": hist(1, 2, 3, 4, 5)})
    assert processed(doc).measures == MAIN_MEASURES


def test_rule8_crash_pings_have_no_child_crash_counts() -> None:
    doc = make_crash({"payload.keyedHistograms": hist(1, 2, 3, 4, 5)})
    assert processed(doc).measures == CRASH_MEASURES


# -- rule 9: main crashes and ping count --------------------------------------------------------


def test_rule9_main_crashes_and_ping_count() -> None:
    main, crash = processed(make_main()), processed(make_crash())
    assert main.measures is not None and crash.measures is not None
    ping_count, main_crashes = rules.MEASURES.index("ping_count"), rules.MEASURES.index(
        "main_crashes")
    assert (main.measures[ping_count], main.measures[main_crashes]) == (1.0, 0.0)
    assert (crash.measures[ping_count], crash.measures[main_crashes]) == (0.0, 1.0)
    assert crash.measures == (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # usage 0


# -- section 4: dimensions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dimension", "path"),
    [
        ("build_version", "environment.build.version"),
        ("build_id", "environment.build.buildId"),
        ("channel", "meta.normalizedChannel"),
        ("application", "meta.appName"),
        ("os_name", "environment.system.os.name"),
        ("os_version", "environment.system.os.version"),
        ("architecture", "environment.build.architecture"),
        ("country", "meta.geoCountry"),
        ("experiment_id", "environment.addons.activeExperiment.id"),
        ("experiment_branch", "environment.addons.activeExperiment.branch"),
        ("e10s_enabled", "environment.settings.e10sEnabled"),
        ("e10s_cohort", "environment.settings.e10sCohort"),
        ("gfx_compositor", "environment.system.gfx.features.compositor"),
    ],
)
def test_dimension_paths(dimension: str, path: str) -> None:
    value = "20161231235959" if dimension == "build_id" else "changed"
    for make in (make_main, make_crash):
        outcome = processed(make({path: value}))
        assert dims_of(outcome) == {**BASE_DIMS, dimension: value}
    if dimension in ("channel", "application"):
        return  # these fall back (next test)
    if dimension == "build_id":
        return  # required by rule 6
    outcome = processed(make_main({path: DROP}))
    expected = dict(BASE_DIMS)
    del expected[dimension]
    assert dims_of(outcome) == expected


@pytest.mark.parametrize(
    ("changes", "channel", "application"),
    [
        ({}, "nightly", "Fennec"),
        ({"meta.normalizedChannel": DROP, "meta.appName": DROP}, "release", "Firefox"),
        # present but not a string, an integer or a boolean: absent, no fall back
        ({"meta.normalizedChannel": None, "meta.appName": None}, None, None),
        ({"meta.normalizedChannel": 1.5, "meta.appName": {}}, None, None),
        ({"meta.normalizedChannel": [], "application.channel": "beta"}, None, "Fennec"),
        ({"meta.normalizedChannel": "", "meta.appName": ""}, "", ""),  # strings are kept
        ({"meta.normalizedChannel": True}, "True", "Fennec"),
        ({"meta.normalizedChannel": DROP, "application.channel": 7}, "7", "Fennec"),
        ({"meta.normalizedChannel": DROP, "application.channel": DROP}, None, "Fennec"),
        ({"meta.appName": DROP, "application.name": None}, "nightly", None),
        ({"meta.normalizedChannel": DROP, "meta.appName": DROP, "application": DROP}, None, None),
        ({"meta.normalizedChannel": DROP, "application": "beta"}, None, "Fennec"),
    ],
)
def test_dimension_fallbacks(changes: dict[str, object], channel: str | None,
                             application: str | None) -> None:
    dims = dims_of(processed(make_main(changes)))
    assert dims.get("channel") == channel
    assert dims.get("application") == application
    assert ("channel" in dims, "application" in dims) == (channel is not None,
                                                          application is not None)


def test_country_has_no_fallback() -> None:
    dims = dims_of(processed(make_main({"meta.geoCountry": DROP, "geoCountry": "US"})))
    assert "country" not in dims


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("unknown", "unknown"),
        (True, "True"),
        (False, "False"),
        (42, "42"),
        (0, "0"),
        (-3, "-3"),
        (2**63 - 1, "9223372036854775807"),
        (-(2**63), "-9223372036854775808"),
        ("a\u0000b", "a\ufffdb"),
        ("\u0000\u0000", "\ufffd\ufffd"),
        ("", ""),
        ("none", "none"),  # "none" is absent for gfx_compositor only
        ("h\u00e9llo \u2713", "h\u00e9llo \u2713"),
        (" padded ", " padded "),
        (1.5, None),
        (1.0, None),
        (2**63, None),
        (None, None),
        ({}, None),
        ([], None),
        (["a"], None),
        ({"a": "b"}, None),
        (DROP, None),
    ],
)
def test_dimension_value_conversion(value: object, expected: str | None) -> None:
    dims = dims_of(processed(make_main({"environment.settings.e10sCohort": value})))
    assert dims.get("e10s_cohort") == expected
    assert ("e10s_cohort" in dims) == (expected is not None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", None), ("None", "None"), ("NONE", "NONE"), ("opengl", "opengl"), ("", ""),
     (None, None), (DROP, None)],
)
def test_gfx_compositor_none_is_absent(value: object, expected: str | None) -> None:
    dims = dims_of(processed(make_main({"environment.system.gfx.features.compositor": value})))
    assert dims.get("gfx_compositor") == expected
    assert ("gfx_compositor" in dims) == (expected is not None)


def test_dimension_under_a_non_object_is_absent() -> None:
    dims = dims_of(processed(make_main({"environment.system": "x",
                                        "environment.addons.activeExperiment": {}})))
    expected = dict(BASE_DIMS)
    for name in ("os_name", "os_version", "gfx_compositor", "experiment_id",
                 "experiment_branch"):
        del expected[name]
    assert dims == expected


def test_dimensions_split_aggregates() -> None:
    rows, counters = aggregate([[make_main(id="a"), make_main(id="b"),
                                 make_main({"environment.system.os.name": "Linux"}, id="c"),
                                 make_main({"environment.system.os.name": DROP}, id="d")]])
    assert counters == {MAIN_PROCESSED: 4}
    by_os = {row.dimensions.get("os_name"): row for row in rows}
    assert set(by_os) == {"Windows_NT", "Linux", None}
    assert by_os["Windows_NT"].stats["ping_count"] == 2.0
    assert by_os["Linux"].stats["ping_count"] == 1.0
    assert by_os[None].stats["ping_count"] == 1.0
    assert by_os["Windows_NT"].dimensions == BASE_DIMS
    assert all(row.activity_date == "2016-03-13" for row in rows)


# -- section 5: stats ---------------------------------------------------------------------------

ALL_STATS = {
    "ping_count", "usage_hours", "main_crashes", "content_crashes", "plugin_crashes",
    "gmplugin_crashes", "content_shutdown_crashes", "gpu_crashes",
    "usage_hours_squared", "main_crashes_squared", "content_crashes_squared",
    "plugin_crashes_squared", "gmplugin_crashes_squared", "content_shutdown_crashes_squared",
    "gpu_crashes_squared",
    "client_count",
    "client_usage_hours_squared", "client_main_crashes_squared",
    "client_content_crashes_squared", "client_plugin_crashes_squared",
    "client_gmplugin_crashes_squared", "client_content_shutdown_crashes_squared",
    "client_gpu_crashes_squared",
    "client_main_crashes_usage_hours", "client_content_crashes_usage_hours",
    "client_plugin_crashes_usage_hours", "client_gmplugin_crashes_usage_hours",
    "client_content_shutdown_crashes_usage_hours", "client_gpu_crashes_usage_hours",
    "client_main_crashes_max", "client_content_crashes_max", "client_plugin_crashes_max",
    "client_gmplugin_crashes_max", "client_content_shutdown_crashes_max",
    "client_gpu_crashes_max",
}


def test_the_35_stats() -> None:
    assert len(ALL_STATS) == 35
    assert set(rules.STATS) == ALL_STATS
    assert len(rules.STATS) == 35
    assert rules.STATS[-6:] == tuple(f"client_{c}_max" for c in rules.CRASH_MEASURES)


def _main(doc_id: str, client: object, seconds: int, **counts: int) -> dict[str, Any]:
    return make_main({"payload.info.subsessionLength": seconds,
                      "payload.keyedHistograms": hist(**counts)}, id=doc_id, clientId=client)


def _crash(doc_id: str, client: object) -> dict[str, Any]:
    return make_crash(id=doc_id, clientId=client)


# Client A: m1 (2 h; content 1, gmplugin 1, shutdown 2), m2 (1 h; content 2, plugin 3, gpu 1),
#           c1, c2 (main crashes)
# Client B: m3 (0.5 h; content 4, shutdown 1, gpu 2)
# Client sums s_i: A: usage 3, main 2, content 3, plugin 3, gmplugin 1, shutdown 2, gpu 1
#                  B: usage 0.5, main 0, content 4, plugin 0, gmplugin 0, shutdown 1, gpu 2
HAND_STATS = {
    "ping_count": 3.0,
    "usage_hours": 3.5,  # 2 + 1 + 0.5
    "main_crashes": 2.0,
    "content_crashes": 7.0,  # 1 + 2 + 4
    "plugin_crashes": 3.0,
    "gmplugin_crashes": 1.0,
    "content_shutdown_crashes": 3.0,  # 2 + 1
    "gpu_crashes": 3.0,  # 1 + 2
    "usage_hours_squared": 5.25,  # 4 + 1 + 0.25
    "main_crashes_squared": 2.0,  # 1 + 1
    "content_crashes_squared": 21.0,  # 1 + 4 + 16
    "plugin_crashes_squared": 9.0,
    "gmplugin_crashes_squared": 1.0,
    "content_shutdown_crashes_squared": 5.0,  # 4 + 1
    "gpu_crashes_squared": 5.0,  # 1 + 4
    "client_count": 2.0,
    "client_usage_hours_squared": 9.25,  # 3^2 + 0.5^2
    "client_main_crashes_squared": 4.0,  # 2^2 + 0
    "client_content_crashes_squared": 25.0,  # 3^2 + 4^2
    "client_plugin_crashes_squared": 9.0,  # 3^2
    "client_gmplugin_crashes_squared": 1.0,
    "client_content_shutdown_crashes_squared": 5.0,  # 2^2 + 1^2
    "client_gpu_crashes_squared": 5.0,  # 1^2 + 2^2
    "client_main_crashes_usage_hours": 6.0,  # 2*3 + 0*0.5
    "client_content_crashes_usage_hours": 11.0,  # 3*3 + 4*0.5
    "client_plugin_crashes_usage_hours": 9.0,  # 3*3
    "client_gmplugin_crashes_usage_hours": 3.0,  # 1*3
    "client_content_shutdown_crashes_usage_hours": 6.5,  # 2*3 + 1*0.5
    "client_gpu_crashes_usage_hours": 4.0,  # 1*3 + 2*0.5
    "client_main_crashes_max": 2.0,  # max(A 2, B 0)
    "client_content_crashes_max": 4.0,  # max(A 3, B 4)
    "client_plugin_crashes_max": 3.0,  # A
    "client_gmplugin_crashes_max": 1.0,  # A
    "client_content_shutdown_crashes_max": 2.0,  # max(A 2, B 1)
    "client_gpu_crashes_max": 2.0,  # max(A 1, B 2)
}
HAND_PINGS = [
    _main("m1", "A", 7200, content=1, gmplugin=1, shutdown=2),
    _crash("c1", "A"),
    _main("m3", "B", 1800, content=4, shutdown=1, gpu=2),
    _main("m2", "A", 3600, content=2, plugin=3, gpu=1),
    _crash("c2", "A"),
]
# another key (os_name Linux) for client B: its own row, not mixed in
OTHER_KEY_PING = make_main({"environment.system.os.name": "Linux",
                            "payload.keyedHistograms": hist(content=5)}, id="m5", clientId="B")


@pytest.mark.parametrize(("per_batch", "compact_every"), [(100, 1_000_000), (1, 1), (2, 3)])
def test_section5_hand_computed_aggregate(per_batch: int, compact_every: int) -> None:
    pings = [*HAND_PINGS, OTHER_KEY_PING]
    batches = [pings[i:i + per_batch] for i in range(0, len(pings), per_batch)]
    rows, counters = aggregate(batches, compact_every=compact_every)
    assert counters == {MAIN_PROCESSED: 4, CRASH_PROCESSED: 2}
    by_os = {row.dimensions["os_name"]: row for row in rows}
    assert set(by_os) == {"Windows_NT", "Linux"}
    row = by_os["Windows_NT"]
    assert (row.activity_date, row.dimensions) == ("2016-03-13", BASE_DIMS)
    assert set(row.stats) == ALL_STATS
    assert row.stats == pytest.approx(HAND_STATS)
    assert row.stats["client_count"] == 2.0
    assert row.stats["ping_count"] == 3.0
    other = by_os["Linux"].stats
    assert other == pytest.approx({
        **dict.fromkeys(ALL_STATS, 0.0),
        "ping_count": 1.0, "usage_hours": 2.0, "content_crashes": 5.0,
        "usage_hours_squared": 4.0, "content_crashes_squared": 25.0,
        "client_count": 1.0, "client_usage_hours_squared": 4.0,
        "client_content_crashes_squared": 25.0, "client_content_crashes_usage_hours": 10.0,
        "client_content_crashes_max": 5.0,
    })


@pytest.mark.parametrize(("per_batch", "compact_every"), [(100, 1_000_000), (1, 1), (3, 2)])
def test_section5_pings_without_a_string_client_id_are_clients_of_their_own(
    per_batch: int, compact_every: int,
) -> None:
    pings = [
        _main("p1", DROP, 3600, content=1),  # no clientId: a client of its own
        _main("p2", DROP, 3600, content=1),
        _crash("p3", 5),  # a non-string clientId: a client of its own, each time
        _crash("p4", 5),
        _main("p5", "A", 7200),
        _crash("p6", "B"),  # the same string clientId: one client
        _crash("p7", "B"),
        _crash("p8", None),
    ]
    batches = [pings[i:i + per_batch] for i in range(0, len(pings), per_batch)]
    [row], counters = aggregate(batches, compact_every=compact_every)
    assert counters == {MAIN_PROCESSED: 3, CRASH_PROCESSED: 5}
    # clients: p1, p2, p3, p4, p8 (one each), A, B
    assert row.stats == pytest.approx({
        **dict.fromkeys(ALL_STATS, 0.0),
        "ping_count": 3.0,
        "usage_hours": 4.0,  # 1 + 1 + 2
        "main_crashes": 5.0,
        "content_crashes": 2.0,
        "usage_hours_squared": 6.0,  # 1 + 1 + 4
        "main_crashes_squared": 5.0,
        "content_crashes_squared": 2.0,
        "client_count": 7.0,
        "client_usage_hours_squared": 6.0,  # 1 + 1 + 0 + 0 + 0 + 4 + 0
        "client_main_crashes_squared": 7.0,  # p3 1, p4 1, p8 1, B 2^2
        "client_content_crashes_squared": 2.0,  # p1 1, p2 1
        "client_main_crashes_usage_hours": 0.0,  # crashing clients have no usage
        "client_content_crashes_usage_hours": 2.0,  # p1 1*1, p2 1*1
        "client_main_crashes_max": 2.0,  # B's 2 (p3, p4, p8: 1 each)
        "client_content_crashes_max": 1.0,  # p1, p2: 1 each
    })


def test_section5_stats_are_floats() -> None:
    [row], _ = aggregate([HAND_PINGS])
    assert all(type(value) is float for value in row.stats.values())


def test_section5_client_grouping_is_per_aggregate() -> None:
    # client A in two activity dates: one client in each aggregate
    pings = [_main("a1", "A", 3600, content=1),
             make_main({"payload.info.subsessionStartDate": "2016-03-12",
                        "payload.keyedHistograms": hist(content=2)}, id="a2", clientId="A"),
             make_main({"payload.info.subsessionStartDate": "2016-03-12",
                        "payload.info.subsessionLength": 3600}, id="a3", clientId="A")]
    rows, _ = aggregate([pings])
    by_day = {row.activity_date: row.stats for row in rows}
    assert set(by_day) == {"2016-03-12", "2016-03-13"}
    assert _pick(by_day["2016-03-13"]) == (1.0, 1.0, 1.0, 1.0)
    # 2016-03-12: a2 (2 h, content 2) + a3 (1 h): s_A = usage 3, content 2
    assert _pick(by_day["2016-03-12"]) == (1.0, 9.0, 4.0, 6.0)


def _pick(stats: dict[str, float]) -> tuple[float, ...]:
    return (stats["client_count"], stats["client_usage_hours_squared"],
            stats["client_content_crashes_squared"], stats["client_content_crashes_usage_hours"])


# -- end to end through engines.local.scan ------------------------------------------------------


def write_ping_file(path: Path, lines: Iterable[object], newline: bytes = b"\n") -> None:
    write_compressed(path, b"".join(line(doc) + newline for doc in lines))


def counters_of(result: ScanResult, day: date) -> dict[str, int]:
    return {name: n for name, n in result.aggregators[day].counters.items() if n}


def scan_partitioned(root: Path, day: date, **spec: Any) -> tuple[ScanResult, list[Aggregate]]:
    store = PingStore(str(root))
    assert store.layout() == "partitioned"
    files = store.files_for_date(day)
    result = scan(store, files, ScanSpec(day, frozenset({day}), **spec))
    return result, result.aggregators[day].finish()


MIXED_DAY = [
    _main("m1", "A", 7200, content=1, gmplugin=1, shutdown=2),
    b"",
    b"   ",
    _crash("c1", "A"),
    b"{not json",
    make_main({"meta.docType": "event"}, id="e1"),
    make_crash({"payload.processType": "content"}, id="cc"),
    _main("m1", "A", 9999),  # duplicate of m1
    make_main({"payload.info.subsessionLength": 2.5}, id="bad-length"),
    make_crash({"payload.crashDate": DROP}, id="no-date"),
    _main("m3", "B", 1800, content=4, shutdown=1, gpu=2),
    _main("m2", "A", 3600, content=2, plugin=3, gpu=1),
    _crash("c2", "A"),
]
MIXED_COUNTERS = {MAIN_PROCESSED: 3, CRASH_PROCESSED: 2, MALFORMED_LINES: 1, OTHER_DOC_TYPE: 1,
                  CRASH_NON_MAIN_IGNORED: 1, DUPLICATES: 1, MAIN_IGNORED: 1, CRASH_IGNORED: 1}


@pytest.mark.parametrize("folder", ["submission_date=2016-03-14", "2016-03-14", "20160314"])
def test_scan_partitioned_layout(tmp_path: Path, folder: str) -> None:
    write_ping_file(tmp_path / folder / "part-0.json", MIXED_DAY[:6])
    write_ping_file(tmp_path / folder / "sub" / "part-1.jsonl.gz", MIXED_DAY[6:])
    # other dates' folders are not read
    write_ping_file(tmp_path / "submission_date=2016-03-13" / "part-0.json", HAND_PINGS)
    result, rows = scan_partitioned(tmp_path, DAY)
    assert result.files == 2
    assert result.lines == 11  # non-blank lines
    assert result.undated == 0
    assert set(result.aggregators) == {DAY}
    assert counters_of(result, DAY) == MIXED_COUNTERS
    [row] = rows
    assert (row.activity_date, row.dimensions) == ("2016-03-13", BASE_DIMS)
    assert row.stats == pytest.approx(HAND_STATS)


def test_scan_partitioned_layout_ignores_non_ping_files(tmp_path: Path) -> None:
    folder = tmp_path / "submission_date=2016-03-14"
    write_ping_file(folder / "part-0.ndjson", HAND_PINGS)
    for name in ("notes.txt", "_SUCCESS", ".hidden.json", "_temporary.json", "x.json.bz2",
                 "x.jsonx", "x.json.gz.tmp"):
        write_ping_file(folder / name, [b"{not json", make_main(id=name)])
    result, [row] = scan_partitioned(tmp_path, DAY)
    assert result.files == 1
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 3, CRASH_PROCESSED: 2}
    assert row.stats == pytest.approx(HAND_STATS)


def test_scan_crlf_and_no_final_newline(tmp_path: Path) -> None:
    folder = tmp_path / "submission_date=2016-03-14"
    folder.mkdir()
    data = b"\r\n".join(line(doc) for doc in HAND_PINGS)  # no newline after the last line
    (folder / "part-0.json").write_bytes(data + b"\r\n\r\n" + line(make_main(id="last")))
    result, [row] = scan_partitioned(tmp_path, DAY)
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 4, CRASH_PROCESSED: 2}
    assert row.stats["ping_count"] == 4.0
    assert row.stats["usage_hours"] == 5.5


def test_scan_partitioned_empty_date_folder(tmp_path: Path) -> None:
    (tmp_path / "submission_date=2016-03-14").mkdir()
    write_ping_file(tmp_path / "submission_date=2016-03-13" / "part-0.json", HAND_PINGS)
    result, rows = scan_partitioned(tmp_path, DAY)
    assert result.files == 0
    assert rows == []
    assert counters_of(result, DAY) == {}


def test_scan_sampling_and_no_dedupe(tmp_path: Path) -> None:
    pings = [make_main({"meta.sampleId": sample}, id="same") for sample in (3, 3, 60, 99)]
    write_ping_file(tmp_path / "submission_date=2016-03-14" / "part-0.json", pings)
    result, [row] = scan_partitioned(tmp_path, DAY, sample_below=50.0)
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 1, DUPLICATES: 1, SAMPLED_OUT: 2}
    assert row.stats["ping_count"] == 1.0
    result, [row] = scan_partitioned(tmp_path, DAY, sample_below=50.0, dedupe=False)
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 2, SAMPLED_OUT: 2}
    assert row.stats["ping_count"] == 2.0
    result, [row] = scan_partitioned(tmp_path, DAY)
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 1, DUPLICATES: 3}


def test_scan_flat_layout(tmp_path: Path) -> None:
    day13 = date(2016, 3, 13)

    def dated(doc: dict[str, Any], text: object) -> dict[str, Any]:
        _change(doc, "meta.submissionDate", text)
        return doc

    write_ping_file(tmp_path / "a.json", [
        *HAND_PINGS,  # 2016-03-14
        dated(make_main(id="m1"), "2016-03-13"),  # same id, other date: not a duplicate
        dated(make_main(id="x13"), "20160313"),
        dated(make_main(id="x13"), "20160313"),  # a duplicate on the 13th
        dated(make_main(id="late"), "20160315"),  # not wanted: skipped, uncounted
        dated(make_main(id="early"), "2016-03-01"),
        dated(make_main(id="undated-1"), DROP),
        dated(make_main(id="undated-2"), "20160230"),
        b"[1]",  # malformed: no date to count it under
    ])
    write_ping_file(tmp_path / "nested" / "deeper" / "b.ndjson.zst", [
        dated(make_crash(id="c13"), "2016-03-13"),
        b"{",
    ])
    store = PingStore(str(tmp_path))
    assert store.layout() == "flat"
    files = store.all_files()
    assert len(files) == 2
    result = scan(store, files, ScanSpec(None, frozenset({DAY, day13})))
    assert result.undated == 4
    assert result.lines == 15
    assert set(result.aggregators) == {DAY, day13}
    assert counters_of(result, DAY) == {MAIN_PROCESSED: 3, CRASH_PROCESSED: 2}
    assert counters_of(result, day13) == {MAIN_PROCESSED: 2, CRASH_PROCESSED: 1, DUPLICATES: 1}
    [row14] = result.aggregators[DAY].finish()
    assert row14.stats == pytest.approx(HAND_STATS)
    [row13] = result.aggregators[day13].finish()
    # all three activity dates 2016-03-13 (kept: not after the 13th)
    assert (row13.activity_date, row13.dimensions) == ("2016-03-13", BASE_DIMS)
    assert row13.stats["ping_count"] == 2.0
    assert row13.stats["usage_hours"] == 4.0
    assert row13.stats["main_crashes"] == 1.0
    assert row13.stats["client_count"] == 1.0  # all client-1
    assert row13.stats["client_main_crashes_usage_hours"] == 4.0


def test_scan_flat_layout_wanted_date_without_pings(tmp_path: Path) -> None:
    write_ping_file(tmp_path / "a.json", HAND_PINGS)
    store = PingStore(str(tmp_path))
    other = date(2016, 3, 20)
    result = scan(store, store.all_files(), ScanSpec(None, frozenset({other})))
    assert set(result.aggregators) == {other}
    assert result.aggregators[other].finish() == []
    assert counters_of(result, other) == {}
    assert result.undated == 0


def test_scan_with_two_workers_gives_the_same_rows(tmp_path: Path) -> None:
    folder = tmp_path / "submission_date=2016-03-14"
    # which copy of a duplicate is kept depends on the order files are read: identical copies
    write_ping_file(folder / "a.json", MIXED_DAY[:7])
    write_ping_file(folder / "b.json.zst", MIXED_DAY[8:])
    write_ping_file(folder / "c.json.gz", [OTHER_KEY_PING, HAND_PINGS[0]])
    store = PingStore(str(tmp_path))
    spec = ScanSpec(DAY, frozenset({DAY}))
    one = scan(store, store.files_for_date(DAY), spec, workers=1)
    two = scan(store, store.files_for_date(DAY), spec, workers=2)
    expected_counters = Counter(MIXED_COUNTERS)
    expected_counters.update({MAIN_PROCESSED: 1})  # OTHER_KEY_PING
    for result in (one, two):
        assert counters_of(result, DAY) == dict(expected_counters)
        rows = result.aggregators[DAY].finish()
        assert [row.dimensions["os_name"] for row in rows] == ["Linux", "Windows_NT"]
        assert rows[1].stats == pytest.approx(HAND_STATS)
