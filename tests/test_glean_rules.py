"""Every rule of SPEC section 8 (Glean pings), by hand.

Pings are built from two base pings, a main-process crash and a desktop baseline ping, in the
decoded form (dotted metric keys); `bigquery` rewrites one into a BigQuery row (underscored
keys, no `document_type`, the other timestamp format). Each place a dimension can come from
holds a different value in the base pings, so a test shows which place was read. Every
expected counter, key and measure is worked out by hand from the SPEC, not by running the code.
The last section takes each example ping of tests/data/glean/ (see its README).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import write_ping_file
from crash_rate_aggregates import families, rules
from crash_rate_aggregates.errors import UsageError
from crash_rate_aggregates.families import glean
from crash_rate_aggregates.families.glean import (
    CRASH_IGNORED,
    CRASH_PROCESSED,
    MAIN_IGNORED,
    MAIN_PROCESSED,
    MALFORMED_LINES,
    OTHER_DOC_TYPE,
    SAMPLED_OUT,
    UNDATED,
    GleanOutcome,
)
from crash_rate_aggregates.sources import PingStore, iter_lines

DATA = Path(__file__).parent / "data" / "glean"
DAY = date(2025, 6, 2)  # the submission date of the base pings
WANTED = frozenset({DAY})
DROP = object()  # as a change: remove the key
HASH = "9b2f0c8e4a1d7e6f5c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d9e"
EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
NS_PER_S = 1_000_000_000
HOUR_NS = 3600 * NS_PER_S

_TOP: dict[str, Any] = {
    "submission_timestamp": "2025-06-02T07:01:14.123456Z",
    "sample_id": 42,
    "normalized_app_name": "Firefox",
    "normalized_channel": "beta",
    "normalized_os": "Windows",
    "normalized_os_version": "10.0",
    "normalized_country_code": "FR",
    "client_info": {
        "client_id": "client-1",
        "app_build": "20250526194527",
        "app_channel": "release",
        "app_display_version": "139.0.1",
        "architecture": "x86_64",
        "os": "Windows_NT",
        "os_version": "10.1",
    },
}
BASE_CRASH: dict[str, Any] = {
    **copy.deepcopy(_TOP),
    "document_id": "crash-1",
    "metadata": {"geo": {"country": "DE"}, "document_type": "crash"},
    "ping_info": {"seq": 1, "start_time": "2025-06-01T09:00:00.000+02:00", "reason": "crash"},
    "metrics": {
        "string": {
            "crash.process_type": "main",
            "crash.app_channel": "nightly",
            "crash.app_display_version": "139.0",
            "crash.app_build": "20250519121003",
            "crash.minidump_sha256_hash": HASH,
        },
        "boolean": {"crash.startup": False},
        "datetime": {"crash.time": "2025-05-31T23:58:41+02:00"},
    },
}
BASE_BASELINE: dict[str, Any] = {
    **copy.deepcopy(_TOP),
    "document_id": "baseline-1",
    "metadata": {"geo": {"country": "DE"}, "document_type": "baseline"},
    "ping_info": {"seq": 7, "start_time": "2025-06-01T09:00:00.000+02:00", "reason": "inactive"},
    "metrics": {"counter": {"browser.engagement.active_ticks": 720}},  # 720 × 5 s = 1 hour
}
#: By hand: the crash ping's crash.app_* metrics win; country from metadata.geo.
CRASH_DIMS = {"build_version": "139.0", "build_id": "20250519121003", "channel": "nightly",
              "application": "Firefox", "os_name": "Windows", "os_version": "10.0",
              "architecture": "x86_64", "country": "DE"}
BASELINE_DIMS = {**CRASH_DIMS, "build_version": "139.0.1", "build_id": "20250526194527",
                 "channel": "beta"}
CRASH_ACTIVITY = date(2025, 5, 31)  # crash.time, the client's local date
BASELINE_ACTIVITY = date(2025, 6, 1)  # ping_info.start_time
MEASURE = {name: i for i, name in enumerate(glean.MEASURES)}


def crash_row(*names: str) -> tuple[int, ...]:
    """The 12 measures of a crash ping counting 1 in each of `names`."""
    return tuple(1 if name in names else 0 for name in glean.MEASURES)


def baseline_row(usage_ns: int) -> tuple[int, ...]:
    return (1, usage_ns, *(0,) * 10)


def _change(doc: dict[str, Any], path: str, value: object) -> None:
    """Set `path` ("/"-separated: metric names hold dots) to value, or remove it (DROP)."""
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DROP:
        node.pop(last, None)
    else:
        node[last] = value


def make(base: dict[str, Any], changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in (changes or {}).items():
        _change(doc, path, value)
    return doc


def crash(changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    return make(BASE_CRASH, changes)


def baseline(changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    return make(BASE_BASELINE, changes)


def bigquery(doc: dict[str, Any]) -> dict[str, Any]:
    """The same ping as a BigQuery row: underscored metric keys, no metadata.document_type, the
    BigQuery timestamp format."""
    row = copy.deepcopy(doc)
    row.get("metadata", {}).pop("document_type", None)
    row["submission_timestamp"] = "2025-06-02 07:01:14.123456 UTC"
    for kind, values in row.get("metrics", {}).items():
        row["metrics"][kind] = {name.replace(".", "_"): v for name, v in values.items()}
    return row


def line(doc: object) -> bytes:
    return doc if isinstance(doc, bytes) else orjson.dumps(doc)


def flat(doc: object, wanted: frozenset[date] | None = WANTED, **kwargs: Any
         ) -> GleanOutcome | None:
    """The outcome in the flat layout (the ping's submission_timestamp decides)."""
    outcome = glean.evaluate_line(line(doc), None, wanted, **kwargs)
    assert outcome is None or isinstance(outcome, GleanOutcome)
    return outcome


def part(doc: object, day: date = DAY, **kwargs: Any) -> GleanOutcome:
    """The outcome in the partitioned layout (the folder says `day`)."""
    outcome = glean.evaluate_line(line(doc), day, None, **kwargs)
    assert isinstance(outcome, GleanOutcome)
    return outcome


def counter(doc: object, **kwargs: Any) -> str:
    outcome = flat(doc, **kwargs)
    assert outcome is not None
    return outcome.counter


def processed(doc: object, **kwargs: Any) -> GleanOutcome:
    outcome = flat(doc, **kwargs)
    assert outcome is not None
    assert outcome.counter in (MAIN_PROCESSED, CRASH_PROCESSED), outcome
    return outcome


def dims_of(doc: object) -> dict[str, str]:
    key = processed(doc).key
    assert key is not None
    return glean.key_to_row(key)[1]


def activity_of(doc: object) -> str:
    key = processed(doc).key
    assert key is not None
    return glean.key_to_row(key)[0]


def measures_of(doc: object) -> tuple[int, ...]:
    measures = processed(doc).measures
    assert measures is not None
    return measures


def usage_of(doc: object) -> int:
    return measures_of(doc)[MEASURE["usage_hours"]]


# -- the family's shape -------------------------------------------------------------------------


def test_the_55_stats_of_section_8() -> None:
    crashes = ["main_crashes", "content_crashes", "content_shutdown_crashes", "gpu_crashes",
               "gmplugin_crashes", "rdd_crashes", "socket_crashes", "utility_crashes",
               "other_crashes", "startup_crashes"]
    assert glean.MEASURES == ("ping_count", "usage_hours", *crashes)
    squared = ["usage_hours", *crashes]
    assert glean.STATS == (
        "ping_count", "usage_hours", *crashes,
        *(f"{m}_squared" for m in squared),
        "client_count",
        *(f"client_{m}_squared" for m in squared),
        *(f"client_{c}_usage_hours" for c in crashes),
        *(f"client_{c}_max" for c in crashes),
    )
    assert len(glean.STATS) == 12 + 11 + 1 + 11 + 10 + 10 == 55
    # usage is counted in nanoseconds: one hour is 3.6e12 of them
    assert glean.MEASURE_UNITS == (1, HOUR_NS, *(1,) * 10)


def test_counters_are_the_legacy_ones() -> None:
    assert glean.COUNTERS == rules.COUNTERS
    assert (glean.UNDATED, glean.CORRUPT_FILES) == (rules.UNDATED, rules.CORRUPT_FILES)


def test_dimension_names() -> None:
    assert glean.DIMENSION_NAMES == ("build_version", "build_id", "channel", "application",
                                     "os_name", "os_version", "architecture", "country")


def test_families_by_name() -> None:
    assert families.family("glean") is glean
    assert families.family("legacy") is rules
    assert families.table("glean") == "glean_crash_aggregates"
    assert families.table("legacy") == "crash_aggregates"
    with pytest.raises(UsageError, match="unknown ping family 'thunderbird'"):
        families.family("thunderbird")


# -- the base pings, in both JSON forms ---------------------------------------------------------


def test_base_crash_ping() -> None:
    outcome = processed(BASE_CRASH)
    assert outcome.counter == CRASH_PROCESSED
    assert outcome.submission_date == DAY
    assert outcome.key == (CRASH_ACTIVITY.toordinal(), "139.0", "20250519121003", "nightly",
                           "Firefox", "Windows", "10.0", "x86_64", "DE")
    assert glean.key_to_row(outcome.key) == ("2025-05-31", CRASH_DIMS)
    assert outcome.measures == crash_row("main_crashes")
    assert (outcome.client_id, outcome.doc_id, outcome.crash_id) == ("client-1", "crash-1", HASH)
    assert outcome.dedupable


def test_base_baseline_ping() -> None:
    outcome = processed(BASE_BASELINE)
    assert outcome.counter == MAIN_PROCESSED
    assert glean.key_to_row(outcome.key or ()) == ("2025-06-01", BASELINE_DIMS)
    assert outcome.measures == baseline_row(HOUR_NS)
    assert (outcome.client_id, outcome.doc_id, outcome.crash_id) == (
        "client-1", "baseline-1", None)


@pytest.mark.parametrize("base", [BASE_CRASH, BASE_BASELINE], ids=["crash", "baseline"])
def test_bigquery_rows_give_the_same_outcome(base: dict[str, Any]) -> None:
    row = bigquery(base)
    assert "crash_process_type" in str(row) or "browser_engagement_active_ticks" in str(row)
    assert "document_type" not in row["metadata"]  # so the type comes from the keys present
    assert flat(row) == flat(base)


def test_the_dotted_key_wins_and_hides_the_underscored_one() -> None:
    both = crash({"metrics/string/crash_app_channel": "aurora"})
    assert dims_of(both)["channel"] == "nightly"
    only_underscored = crash({"metrics/string/crash.app_channel": DROP,
                              "metrics/string/crash_app_channel": "aurora"})
    assert dims_of(only_underscored)["channel"] == "aurora"
    null_dotted = crash({"metrics/string/crash.app_channel": None,
                         "metrics/string/crash_app_channel": "aurora"})
    assert "channel" not in dims_of(null_dotted)  # present: no fall back, and null is absent
    assert counter(crash({"metrics/string/crash.process_type": None,
                          "metrics/string/crash_process_type": "main"})) == CRASH_IGNORED


def test_both_forms_mixed_in_one_compressed_file(tmp_path: Path) -> None:
    lines: list[bytes | dict[str, Any]] = [
        BASE_CRASH,
        bigquery(BASE_BASELINE),
        bigquery(crash({"document_id": "crash-2",
                        "metrics/string/crash.process_type": "gpu"})),
        baseline({"document_id": "baseline-2",
                  "metrics/counter": {},
                  "metrics/timespan/glean.baseline.duration": {"value": 90,
                                                               "time_unit": "minute"}}),
        b"{not json",
        make(bigquery(crash({"document_id": "crash-3"})), {"submission_timestamp": DROP}),
    ]
    path = write_ping_file(tmp_path / "mixed.ndjson.gz", lines)
    store = PingStore(str(tmp_path))
    (ping_file,) = store.all_files()
    assert ping_file.path.endswith("mixed.ndjson.gz")
    outcomes = [glean.evaluate_line(text, None, WANTED)
                for text, _ in iter_lines(store, ping_file)]
    assert [o.counter if o else None for o in outcomes] == [
        CRASH_PROCESSED, MAIN_PROCESSED, CRASH_PROCESSED, MAIN_PROCESSED, MALFORMED_LINES,
        UNDATED]
    assert [o.measures for o in outcomes if o and o.measures] == [
        crash_row("main_crashes"), baseline_row(HOUR_NS), crash_row("gpu_crashes"),
        baseline_row(5400 * NS_PER_S)]
    assert path.exists()


# -- rule 1: ping type --------------------------------------------------------------------------


def test_document_type_then_ping_type() -> None:
    # document_type wins over ping_type, compared exactly
    assert counter(baseline({"ping_info/ping_type": "crash"})) == MAIN_PROCESSED
    assert counter(baseline({"metadata/document_type": "Baseline"})) == OTHER_DOC_TYPE
    assert counter(baseline({"metadata/document_type": "metrics"})) == OTHER_DOC_TYPE
    # ping_type when document_type is missing (metadata without it, or no metadata at all)
    assert counter(baseline({"metadata/document_type": DROP, "ping_info/ping_type": "crash"})
                   ) == CRASH_PROCESSED
    assert counter(baseline({"metadata": DROP, "ping_info/ping_type": "crash"})
                   ) == CRASH_PROCESSED
    assert counter(crash({"metadata/document_type": DROP, "ping_info/ping_type": "full"})
                   ) == OTHER_DOC_TYPE
    # a present document_type of another type is its value: no fall back
    for odd in (None, 5, ["crash"]):
        assert counter(crash({"metadata/document_type": odd, "ping_info/ping_type": "crash"})
                       ) == OTHER_DOC_TYPE


@pytest.mark.parametrize(("changes", "expected"), [
    ({"metrics/string/crash.process_type": "content"}, CRASH_PROCESSED),
    ({"metrics/string/crash_process_type": "content"}, CRASH_PROCESSED),
    ({"metrics/datetime/crash.time": "2025-06-01"}, CRASH_PROCESSED),
    ({"metrics/datetime/crash_time": "2025-06-01"}, CRASH_PROCESSED),
    ({"metrics/timespan/glean.baseline.duration": {"value": 60, "time_unit": "second"}},
     MAIN_PROCESSED),
    ({"metrics/timespan/glean_baseline_duration": {"value": 60, "time_unit": "second"}},
     MAIN_PROCESSED),
    ({"metrics/counter/browser.engagement.active_ticks": 12}, MAIN_PROCESSED),
    ({"metrics/counter/browser_engagement_active_ticks": 12}, MAIN_PROCESSED),
    # crash keys are looked for first
    ({"metrics/string/crash.process_type": "main",
      "metrics/counter/browser.engagement.active_ticks": 12}, CRASH_PROCESSED),
    # a key present with null still says the type (then the rules ignore the ping)
    ({"metrics/string/crash.process_type": None}, CRASH_IGNORED),
    ({"metrics/counter/browser.engagement.active_ticks": None}, MAIN_IGNORED),
    ({"metrics/string/crash.remote_type": "web"}, OTHER_DOC_TYPE),  # no telling key
    ({}, OTHER_DOC_TYPE),  # unknown
])
def test_ping_type_from_the_keys_present(changes: dict[str, object], expected: str) -> None:
    doc = crash({"metadata/document_type": DROP, "metrics": {}, **changes})
    assert counter(doc) == expected


def test_not_a_glean_ping() -> None:
    for ping_info in (DROP, None, "x", [], 5):
        assert counter(crash({"ping_info": ping_info})) == OTHER_DOC_TYPE
    legacy = {"type": "crash", "meta": {"submissionDate": "20250602"}, "payload": {}}
    assert part(legacy).counter == OTHER_DOC_TYPE
    assert counter(legacy) == UNDATED  # no submission_timestamp to count it under


def test_malformed_lines() -> None:
    for bad in (b"{not json", b"[1, 2]", b'"crash"', b"\xff\xfe{}", b'{"a": 1e400}'):
        assert part(bad) == GleanOutcome(MALFORMED_LINES, DAY)
        assert flat(bad) == GleanOutcome(MALFORMED_LINES, None)


# -- rule 2: submission date (flat layout) ------------------------------------------------------


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2025-06-02T07:01:14.123Z", DAY),
    ("2025-06-02 07:01:14.123456 UTC", DAY),
    ("2025-06-02T23:59:59.999999Z", DAY),
    ("2025-06-02T", DAY),
    ("2024-02-29T00:00:00Z", date(2024, 2, 29)),
    ("2025-06-02", None),  # no T or space after the date
    ("2025-06-02X07:01:14Z", None),
    ("20250602T070114Z", None),
    ("2025-02-29T00:00:00Z", None),  # not a real date
    ("2025-13-01 00:00:00 UTC", None),
    ("２０２５-06-02T00:00:00Z", None),  # full-width digits
    (1748847674, None),
    (None, None),
])
def test_submission_date_from_submission_timestamp(stamp: object, expected: date | None) -> None:
    assert glean.parse_submission_timestamp(stamp) == expected
    outcome = flat(crash({"submission_timestamp": stamp}), wanted=None)
    assert outcome is not None
    if expected is None:
        assert outcome == GleanOutcome(UNDATED, None)
    else:
        assert (outcome.counter, outcome.submission_date) == (CRASH_PROCESSED, expected)


def test_submission_date_missing_and_outside_the_dates_asked_for() -> None:
    assert flat(crash({"submission_timestamp": DROP})) == GleanOutcome(UNDATED, None)
    assert flat(crash({"submission_timestamp": "2025-06-03T00:00:00Z"})) is None
    # the partitioned layout: the folder says the date, the timestamp is not read
    for stamp in (DROP, "2025-06-03T00:00:00Z", "garbage"):
        outcome = part(crash({"submission_timestamp": stamp}), day=date(2025, 6, 4))
        assert (outcome.counter, outcome.submission_date) == (CRASH_PROCESSED, date(2025, 6, 4))


def test_sampling_by_sample_id() -> None:
    assert counter(BASE_CRASH, sample_below=50) == CRASH_PROCESSED  # sample_id 42
    assert counter(BASE_CRASH, sample_below=42) == SAMPLED_OUT
    for odd in ("5", None, DROP, 5.0):
        assert counter(crash({"sample_id": odd}), sample_below=50) == SAMPLED_OUT


# -- rule 3: duplicates -------------------------------------------------------------------------


def test_document_id() -> None:
    assert processed(BASE_BASELINE).doc_id == "baseline-1"
    for odd in (None, 17, DROP):
        outcome = processed(baseline({"document_id": odd}))
        assert outcome.doc_id is None and not outcome.dedupable


@pytest.mark.parametrize(("place", "value", "expected"), [
    ("metrics/string/crash.minidump_sha256_hash", HASH, HASH),
    ("metrics/string/crash_minidump_sha256_hash", HASH, HASH),
    ("metrics/string/crash.minidump_sha256_hash", EMPTY_HASH, None),  # the empty file's
    ("metrics/string/crash.minidump_sha256_hash", "", None),
    ("metrics/string/crash.minidump_sha256_hash", None, None),
    ("metrics/string/crash.minidump_sha256_hash", 12, None),
    ("metrics/string/crash_minidump_sha_256_hash", HASH, None),  # read from one metric only
])
def test_minidump_hash(place: str, value: object, expected: str | None) -> None:
    doc = crash({"metrics/string/crash.minidump_sha256_hash": DROP, place: value})
    outcome = processed(doc)
    assert outcome.crash_id == expected
    assert outcome.doc_id == "crash-1"


def test_duplicate_keys_of_ignored_pings_and_baseline_pings() -> None:
    # an ignored ping reached rule 3: its copies are duplicates too
    ignored = flat(crash({"metrics/datetime/crash.time": "yesterday"}))
    assert ignored == GleanOutcome(CRASH_IGNORED, DAY, "crash-1", crash_id=HASH)
    # a baseline ping has no minidump hash, whatever its metrics say
    odd = baseline({"metrics/string/crash.minidump_sha256_hash": HASH})
    assert processed(odd).crash_id is None


def test_no_dedupe_turns_off_both_keys() -> None:
    outcome = processed(BASE_CRASH, dedupe=False)
    assert (outcome.doc_id, outcome.crash_id, outcome.dedupable) == (None, None, False)
    assert outcome.measures == crash_row("main_crashes")


# -- rule 4: activity date ----------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, "2025-05-31"),  # crash.time
    ({"metrics/datetime/crash.time": "2025-06-01T08:12+00:00"}, "2025-06-01"),  # minutes
    ({"metrics/datetime/crash.time": "2025-06-01"}, "2025-06-01"),
    ({"metrics/datetime/crash.time": "2025-06-01T23:30:00-05:00"}, "2025-06-01"),  # local
    ({"metrics/datetime/crash.time": DROP}, "2025-06-01"),  # else ping_info.start_time
    ({"metrics/datetime": "not an object"}, "2025-06-01"),  # holds no crash.time
    ({"metrics/datetime/crash.time": DROP, "metrics/datetime/crash_time": "2025-05-30"},
     "2025-05-30"),
])
def test_crash_activity_date(changes: dict[str, object], expected: str) -> None:
    assert activity_of(crash(changes)) == expected


@pytest.mark.parametrize("value", [
    None, "yesterday", 20250601, "2025-06-01 10:00:00", "2025-06-01T", "2025-02-29T10:00",
    "2025-6-1", {"date": "2025-06-01"},
])
def test_invalid_crash_time_ignores_the_ping_without_falling_back(value: object) -> None:
    assert counter(crash({"metrics/datetime/crash.time": value})) == CRASH_IGNORED


def test_baseline_activity_date() -> None:
    assert activity_of(BASE_BASELINE) == "2025-06-01"
    # a baseline ping reads start_time only
    assert activity_of(baseline({"metrics/datetime/crash.time": "2025-05-30"})) == "2025-06-01"
    for odd in (DROP, None, "2025-06-01 09:00:00-04:00", "2025-04-31T00:00"):
        assert counter(baseline({"ping_info/start_time": odd})) == MAIN_IGNORED
    # a crash ping without crash.time and with a bad start_time is ignored too
    assert counter(crash({"metrics/datetime/crash.time": DROP, "ping_info/start_time": 5})
                   ) == CRASH_IGNORED


@pytest.mark.parametrize(("written", "counted"), [
    ("2025-05-01T10:00:00+02:00", "2025-05-26"),  # more than 7 days old: the window's start
    ("2025-05-26T10:00:00+02:00", "2025-05-26"),
    ("2025-05-25T23:59:59+02:00", "2025-05-26"),
    ("2025-06-02T10:00:00+02:00", "2025-06-02"),
    ("2025-06-10T10:00:00+02:00", "2025-06-02"),  # the future: the submission date
])
def test_activity_date_clamped_into_the_week_before_submission(written: str, counted: str
                                                               ) -> None:
    assert activity_of(baseline({"ping_info/start_time": written})) == counted
    assert activity_of(crash({"metrics/datetime/crash.time": written})) == counted


# -- rule 5: usage ------------------------------------------------------------------------------


def ticks(value: object) -> dict[str, Any]:
    return baseline({"metrics/counter/browser.engagement.active_ticks": value})


def duration(value: object, unit: object = "second", spelling: str = "glean.baseline.duration"
             ) -> dict[str, Any]:
    return baseline({"metrics/counter": DROP,
                     f"metrics/timespan/{spelling}": {"value": value, "time_unit": unit}})


@pytest.mark.parametrize(("ticks_sent", "seconds"), [
    (720, 3600), (1, 5), (0, 0), (20_000, 100_000), (20_001, 0), (-1, 0), (2**62, 0),
])
def test_usage_from_active_ticks(ticks_sent: int, seconds: int) -> None:
    assert usage_of(ticks(ticks_sent)) == seconds * NS_PER_S
    assert usage_of(baseline({"metrics/counter": {
        "browser_engagement_active_ticks": ticks_sent}})) == seconds * NS_PER_S


def test_active_ticks_win_over_the_duration() -> None:
    both = baseline({"metrics/timespan/glean.baseline.duration": {"value": 60,
                                                                  "time_unit": "second"}})
    assert usage_of(both) == 3600 * NS_PER_S


@pytest.mark.parametrize(("value", "unit", "nanoseconds"), [
    (448123, "millisecond", 448_123_000_000),  # 448.123 s, exactly
    (448, "second", 448 * NS_PER_S),
    (1, "nanosecond", 1),
    (1_500_000, "microsecond", 1_500_000_000),
    (90, "minute", 5400 * NS_PER_S),
    (2, "hour", 7200 * NS_PER_S),
    (1, "day", 86400 * NS_PER_S),
    (2, "day", 0),  # 172,800 s: over the bound
    (100_000, "second", 100_000 * NS_PER_S),  # the bound is inclusive
    (100_001, "second", 0),
    (100_000 * NS_PER_S + 1, "nanosecond", 0),
    (-1, "second", 0),
    (0, "second", 0),
])
def test_usage_from_the_duration_in_every_unit(value: int, unit: str, nanoseconds: int) -> None:
    assert usage_of(duration(value, unit)) == nanoseconds
    assert usage_of(duration(value, unit, spelling="glean_baseline_duration")) == nanoseconds


def test_unit_conversion_is_exact() -> None:
    usage = usage_of(duration(448123, "millisecond"))
    assert Fraction(usage, glean.MEASURE_UNITS[MEASURE["usage_hours"]]) == \
        Fraction(448123, 1000 * 3600)  # 448.123 s / 3600 s an hour
    assert usage_of(duration(1, "nanosecond")) + usage_of(duration(2, "nanosecond")) == \
        usage_of(duration(3, "nanosecond"))


@pytest.mark.parametrize("doc", [
    ticks("720"), ticks(7.5), ticks(True), ticks(None), ticks({"value": 720}),
    duration(448.0), duration(True), duration("448"), duration(None), duration(448, "seconds"),
    duration(448, "Second"), duration(448, None), duration(448, 1),
    baseline({"metrics/counter": DROP, "metrics/timespan/glean.baseline.duration": 448}),
    baseline({"metrics/counter": DROP, "metrics/timespan/glean.baseline.duration": None}),
    baseline({"metrics/counter": DROP,
              "metrics/timespan/glean.baseline.duration": {"value": 448}}),
    baseline({"metrics/counter": DROP,
              "metrics/timespan/glean.baseline.duration": {"time_unit": "second"}}),
], ids=lambda doc: orjson.dumps(doc["metrics"]).decode())
def test_usage_of_the_wrong_type_ignores_the_ping(doc: dict[str, Any]) -> None:
    assert counter(doc) == MAIN_IGNORED


def test_baseline_pings_without_usage_count_zero_hours() -> None:
    for metrics in ({}, DROP, "not an object", {"counter": {}}, {"counter": "x"},
                    {"counter": None, "timespan": []}):
        doc = baseline({"metrics": metrics, "ping_info/reason": "active"})
        assert flat(doc) == GleanOutcome(
            MAIN_PROCESSED, DAY, "baseline-1",
            key=(BASELINE_ACTIVITY.toordinal(), *BASELINE_DIMS.values()),
            client_id="client-1", measures=baseline_row(0))
    # a counter section that is not an object holds no ticks: the duration is read
    assert usage_of(baseline({"metrics/counter": 5, "metrics/timespan/glean.baseline.duration":
                              {"value": 448, "time_unit": "second"}})) == 448 * NS_PER_S


def test_crash_pings_have_no_usage() -> None:
    doc = crash({"metrics/counter/browser.engagement.active_ticks": 720})
    assert measures_of(doc) == crash_row("main_crashes")


# -- rule 6: the crash measure ------------------------------------------------------------------


@pytest.mark.parametrize(("process", "measure"), [
    ("main", "main_crashes"),
    (DROP, "main_crashes"),  # missing: a main crash
    ("content", "content_crashes"),
    ("gpu", "gpu_crashes"),
    ("gmplugin", "gmplugin_crashes"),
    ("rdd", "rdd_crashes"),
    ("socket", "socket_crashes"),
    ("utility", "utility_crashes"),
    ("plugin", "other_crashes"),
    ("vr", "other_crashes"),
    ("Main", "other_crashes"),  # compared exactly
    ("", "other_crashes"),
])
def test_crash_measure_by_process_type(process: object, measure: str) -> None:
    outcome = processed(crash({"metrics/string/crash.process_type": process}))
    assert outcome.counter == CRASH_PROCESSED  # never crash_non_main_ignored
    assert outcome.measures == crash_row(measure)


@pytest.mark.parametrize("process", [None, 5, True, ["main"], {"type": "main"}])
def test_a_process_type_that_is_not_a_string_ignores_the_ping(process: object) -> None:
    assert counter(crash({"metrics/string/crash.process_type": process})) == CRASH_IGNORED


@pytest.mark.parametrize(("startup", "measures"), [
    (True, crash_row("main_crashes", "startup_crashes")),
    (False, crash_row("main_crashes")),
    ("true", crash_row("main_crashes")),  # only JSON true counts
    (1, crash_row("main_crashes")),
    (None, crash_row("main_crashes")),
    (DROP, crash_row("main_crashes")),
])
def test_startup_crashes(startup: object, measures: tuple[int, ...]) -> None:
    assert measures_of(crash({"metrics/boolean/crash.startup": startup})) == measures
    assert measures_of(crash({"metrics/boolean/crash.startup": DROP,
                              "metrics/boolean/crash_startup": startup})) == measures


def test_startup_counts_for_main_crashes_only() -> None:
    doc = crash({"metrics/string/crash.process_type": "content",
                 "metrics/boolean/crash.startup": True})
    assert measures_of(doc) == crash_row("content_crashes")


@pytest.mark.parametrize(("process", "error", "measure"), [
    ("content", "ShutDownKill", "content_shutdown_crashes"),
    ("content", "MsgDropped ShutDownKill (pid 42)", "content_shutdown_crashes"),
    ("content", "shutdownkill", "content_crashes"),  # case matters
    ("content", ["ShutDownKill"], "content_crashes"),  # only a string counts
    ("content", None, "content_crashes"),
    ("content", DROP, "content_crashes"),
    ("gpu", "ShutDownKill", "gpu_crashes"),  # content crashes only
    ("main", "ShutDownKill", "main_crashes"),
])
def test_content_shutdown_crashes(process: str, error: object, measure: str) -> None:
    doc = crash({"metrics/string/crash.process_type": process,
                 "metrics/string/crash.ipc_channel_error": error})
    assert measures_of(doc) == crash_row(measure)
    row = bigquery(doc)
    assert measures_of(row) == crash_row(measure)


def test_each_crash_ping_counts_one_crash() -> None:
    for process in ("main", "content", "gpu", "gmplugin", "rdd", "socket", "utility", "x"):
        measures = measures_of(crash({"metrics/string/crash.process_type": process}))
        crashes = measures[MEASURE["main_crashes"]:MEASURE["startup_crashes"]]
        assert sum(crashes) == 1 and measures[:2] == (0, 0)  # no ping count, no usage


# -- dimensions ---------------------------------------------------------------------------------

#: (dimension, its places in order for a crash ping, the value each place holds in BASE_CRASH)
CRASH_PLACES = [
    ("build_version", [("metrics/string/crash.app_display_version", "139.0"),
                       ("client_info/app_display_version", "139.0.1")]),
    ("build_id", [("metrics/string/crash.app_build", "20250519121003"),
                  ("client_info/app_build", "20250526194527")]),
    ("channel", [("metrics/string/crash.app_channel", "nightly"),
                 ("normalized_channel", "beta"), ("client_info/app_channel", "release")]),
    ("application", [("normalized_app_name", "Firefox")]),
    ("os_name", [("normalized_os", "Windows"), ("client_info/os", "Windows_NT")]),
    ("os_version", [("normalized_os_version", "10.0"), ("client_info/os_version", "10.1")]),
    ("architecture", [("client_info/architecture", "x86_64")]),
    ("country", [("metadata/geo/country", "DE"), ("normalized_country_code", "FR")]),
]
BASELINE_PLACES = [
    (name, [(path, value) for path, value in places if not path.startswith("metrics/")])
    for name, places in CRASH_PLACES
]


@pytest.mark.parametrize(("make_ping", "table"), [(crash, CRASH_PLACES),
                                                  (baseline, BASELINE_PLACES)],
                         ids=["crash", "baseline"])
def test_every_dimension_from_each_place(make_ping: Any, table: list[Any]) -> None:
    for name, places in table:
        dropped: dict[str, object] = {}
        for path, value in places:  # drop the places one by one: the next one is read
            assert dims_of(make_ping(dropped)).get(name) == value, (name, path)
            dropped[path] = DROP
        assert name not in dims_of(make_ping(dropped))  # no place left: absent


@pytest.mark.parametrize(("make_ping", "table"), [(crash, CRASH_PLACES),
                                                  (baseline, BASELINE_PLACES)],
                         ids=["crash", "baseline"])
def test_a_present_value_of_another_type_is_absent_without_fall_back(
        make_ping: Any, table: list[Any]) -> None:
    for name, places in table:
        first = places[0][0]
        for odd in (None, 1.5, {"a": "b"}, ["x"]):
            assert name not in dims_of(make_ping({first: odd})), (name, odd)


def test_dimension_values_as_strings() -> None:
    channel = "metrics/string/crash.app_channel"
    assert dims_of(crash({channel: 5}))["channel"] == "5"
    assert dims_of(crash({channel: True}))["channel"] == "True"
    assert dims_of(crash({channel: "a\x00b"}))["channel"] == "a\ufffdb"
    assert dims_of(crash({channel: "x" * 5000}))["channel"] == "x" * 1024
    # the build id is not checked for 14 digits (Android's is a version code)
    for build in ("2016093481", "not a build id", 2016093481):
        assert dims_of(crash({"metrics/string/crash.app_build": build}))["build_id"] == \
            str(build)


def test_a_crash_dimension_metric_in_a_baseline_ping_is_not_read() -> None:
    doc = baseline({"metrics/string/crash.app_channel": "nightly",
                    "metrics/string/crash.app_build": "20250519121003"})
    assert dims_of(doc) == BASELINE_DIMS


def test_a_step_through_something_not_an_object_finds_no_key() -> None:
    assert dims_of(crash({"metadata/geo": "DE"}))["country"] == "FR"
    assert dims_of(crash({"metadata": None, "ping_info/ping_type": "crash"}))["country"] == "FR"
    assert dims_of(crash({"metrics/string": "x"}))["channel"] == "beta"
    assert dims_of(crash({"metrics": []}))["build_id"] == "20250526194527"
    assert dims_of(crash({"client_info": "x", "normalized_os": DROP})).get("os_name") is None


def test_the_client() -> None:
    assert processed(BASE_CRASH).client_id == "client-1"
    for odd in (None, 5, DROP):
        assert processed(crash({"client_info/client_id": odd})).client_id is None


def test_the_last_of_repeated_keys_counts() -> None:
    """As json.loads and orjson (the stdlib baseline) read them; also on the general path, taken
    when a place is of a type the compiled picker cannot hold (here `client_info` a string)."""
    repeated = (b'"crash.process_type":"main"',
                b'"crash.process_type":"gpu","crash.process_type":"main"')
    text = line(BASE_CRASH).replace(*repeated)
    assert text.count(b"crash.process_type") == 2
    assert measures_of(text) == crash_row("main_crashes")
    assert measures_of(line(crash({"client_info": "x"})).replace(*repeated)) == \
        crash_row("main_crashes")
    flipped = line(BASE_CRASH).replace(
        repeated[0], b'"crash.process_type":"rdd","crash.process_type":"gpu"')
    assert measures_of(flipped) == crash_row("gpu_crashes")


def test_the_general_path_gives_what_the_picker_gives() -> None:
    """A line the compiled picker cannot type goes through orjson and a dict walk, a line with
    a byte order mark through the picker: the outcome is the dict path's."""
    for doc in (crash({"client_info": "x"}), crash({"metrics/string": []}),
                crash({"ping_info/ping_type": {"a": 1}}), baseline_doc_with_bom()):
        text = line(doc) if isinstance(doc, dict) else doc
        assert glean.parse_line(text) is not None
        body = text.removeprefix(b"\xef\xbb\xbf")
        assert glean.evaluate_line(text, DAY) == glean.evaluate_doc(orjson.loads(body), DAY)


def baseline_doc_with_bom() -> bytes:
    return b"\xef\xbb\xbf" + line(BASE_BASELINE)


def test_the_stdlib_path_gives_the_same_outcomes() -> None:
    docs = [BASE_CRASH, BASE_BASELINE, bigquery(BASE_CRASH), duration(448123, "millisecond"),
            crash({"metrics/string/crash.process_type": None}), crash({"ping_info": 5})]
    for doc in docs:
        assert glean.evaluate_doc(orjson.loads(line(doc)), DAY) == part(doc)


# -- what the engine must make of the outcomes --------------------------------------------------
# Dedupe and sums live in the engine (aggregation.py), which does not take a family yet. This
# small model says what it must do with Glean outcomes; the expected numbers are by hand.


def model_fold(outcomes: list[GleanOutcome]) -> tuple[dict[str, int], dict[Any, dict[str, float]]]:
    """Two-stage dedupe (document id, then minidump hash among the pings kept), counters, and
    section 5's stats per key, exactly (integers, each stat divided once by its unit)."""
    counters: dict[str, int] = {}
    doc_ids: set[str] = set()
    hashes: set[str] = set()
    kept: list[GleanOutcome] = []
    for outcome in outcomes:
        name = outcome.counter
        if outcome.doc_id is not None and outcome.doc_id in doc_ids:
            name = rules.DUPLICATES
        elif outcome.crash_id is not None and outcome.crash_id in hashes:
            name = rules.DUPLICATES
        else:
            if outcome.doc_id is not None:
                doc_ids.add(outcome.doc_id)
            if outcome.crash_id is not None:
                hashes.add(outcome.crash_id)
            if outcome.key is not None:
                kept.append(outcome)
        counters[name] = counters.get(name, 0) + 1
    units = glean.MEASURE_UNITS
    rows: dict[Any, dict[str, float]] = {}
    for key in {o.key for o in kept}:
        pings = [o for o in kept if o.key == key]
        clients: dict[object, list[int]] = {}
        for i, o in enumerate(pings):
            assert o.measures is not None
            client = o.client_id or ("anonymous", i)  # no client id: a client of its own
            sums = clients.get(client, [0] * len(units))
            clients[client] = [a + b for a, b in zip(sums, o.measures, strict=True)]
        per_ping = [o.measures or () for o in pings]
        totals = [Fraction(sum(m[i] for m in per_ping), units[i]) for i in range(12)]
        squares = [Fraction(sum(m[i] ** 2 for m in per_ping), units[i] ** 2) for i in range(1, 12)]
        client_squares = [Fraction(sum(c[i] ** 2 for c in clients.values()), units[i] ** 2)
                          for i in range(1, 12)]
        client_usage = [Fraction(sum(c[i] * c[1] for c in clients.values()), units[1])
                        for i in range(2, 12)]
        client_max = [max(c[i] for c in clients.values()) for i in range(2, 12)]
        values = [*totals, *squares, len(clients), *client_squares, *client_usage, *client_max]
        rows[key] = dict(zip(glean.STATS, (float(v) for v in values), strict=True))
    return counters, rows


def test_the_55_stats_of_an_aggregate_by_hand() -> None:
    same_dims = {"metrics/string/crash.app_channel": DROP,
                 "metrics/string/crash.app_build": DROP,
                 "metrics/string/crash.app_display_version": DROP,
                 "metrics/datetime/crash.time": DROP}  # so that all five share one key
    docs = [
        baseline({"document_id": "a1"}),  # client A: 720 ticks, 1 h
        baseline({"document_id": "a2", "metrics/counter": DROP,
                  "metrics/timespan/glean.baseline.duration": {"value": 1800,
                                                               "time_unit": "second"}}),
        crash({**same_dims, "document_id": "a3", "metrics/boolean/crash.startup": True}),
        baseline({"document_id": "b1", "client_info/client_id": "client-2",  # client B: 2 h
                  "metrics/counter/browser.engagement.active_ticks": 1440}),
        crash({**same_dims, "document_id": "b2", "client_info/client_id": "client-2",
               "metrics/string/crash.process_type": "content",
               "metrics/string/crash.minidump_sha256_hash": DROP}),
    ]
    counters, rows = model_fold([processed(doc) for doc in docs])
    assert counters == {MAIN_PROCESSED: 3, CRASH_PROCESSED: 2}
    ((key, stats),) = rows.items()
    assert glean.key_to_row(key) == ("2025-06-01", BASELINE_DIMS)
    expected = dict.fromkeys(glean.STATS, 0.0)
    expected.update({
        "ping_count": 3, "usage_hours": 3.5, "usage_hours_squared": 1 + 0.25 + 4,
        "main_crashes": 1, "main_crashes_squared": 1, "startup_crashes": 1,
        "startup_crashes_squared": 1, "content_crashes": 1, "content_crashes_squared": 1,
        "client_count": 2, "client_usage_hours_squared": 1.5**2 + 2**2,
        "client_main_crashes_squared": 1, "client_startup_crashes_squared": 1,
        "client_content_crashes_squared": 1, "client_main_crashes_usage_hours": 1 * 1.5,
        "client_startup_crashes_usage_hours": 1 * 1.5,
        "client_content_crashes_usage_hours": 1 * 2,
        # the largest client: A's main and startup crash, B's content crash
        "client_main_crashes_max": 1, "client_startup_crashes_max": 1,
        "client_content_crashes_max": 1,
    })
    assert stats == expected


def test_the_duplicates_example_of_the_docs() -> None:
    a = crash({"document_id": "a"})
    b = crash({"document_id": "b"})  # the same crash (hash) from the crash reporter
    c = crash({"document_id": "c", "metrics/string/crash.minidump_sha256_hash": EMPTY_HASH})
    d = crash({"document_id": "d", "metrics/string/crash.minidump_sha256_hash": EMPTY_HASH})
    outcomes = [processed(doc) for doc in (a, a, b, c, d)]
    assert model_fold(outcomes)[0] == {CRASH_PROCESSED: 3, rules.DUPLICATES: 2}
    no_dedupe = [processed(doc, dedupe=False) for doc in (a, a, b, c, d)]
    assert model_fold(no_dedupe)[0] == {CRASH_PROCESSED: 5}


# -- the example pings of tests/data/glean/ -----------------------------------------------------

DESKTOP = {"build_version": "139.0.1", "build_id": "20250526194527", "channel": "release",
           "application": "Firefox", "os_name": "Windows", "os_version": "10.0",
           "architecture": "x86_64", "country": "DE"}
FENIX = {"build_version": "139.0", "build_id": "2016093481", "channel": "release",
         "application": "Fenix", "os_name": "Android", "os_version": "14",
         "architecture": "arm64-v8a", "country": "US"}
DESKTOP_CLIENT = "5f1c7e0a-3b7e-4b5c-9a51-2d0e4c1a7b11"
FENIX_CLIENT = "c2a4f1d8-6b0e-4e7a-8f3c-1d2b3a4c5e6f"
#: The six synthetic pings, by hand: counter, activity date, dimensions, measures, client.
SYNTHETIC = [
    # desktop main crash found at the next start: crash.time's local date, crash.app_* win
    (CRASH_PROCESSED, "2025-06-01", {**DESKTOP, "build_version": "139.0",
                                     "build_id": "20250519121003"},
     crash_row("main_crashes"), DESKTOP_CLIENT),
    # desktop content crash with ShutDownKill
    (CRASH_PROCESSED, "2025-06-02", DESKTOP, crash_row("content_shutdown_crashes"),
     DESKTOP_CLIENT),
    # Android main crash at startup
    (CRASH_PROCESSED, "2025-06-02", FENIX, crash_row("main_crashes", "startup_crashes"),
     FENIX_CLIENT),
    # desktop inactive baseline: 412 ticks × 5 s = 2060 s (the duration's 6052 s is not read)
    (MAIN_PROCESSED, "2025-06-02", DESKTOP, baseline_row(2060 * NS_PER_S), DESKTOP_CLIENT),
    # Android inactive baseline: 448 s
    (MAIN_PROCESSED, "2025-06-02", FENIX, baseline_row(448 * NS_PER_S), FENIX_CLIENT),
    # Android active baseline: no metrics, 0 hours
    (MAIN_PROCESSED, "2025-06-02", FENIX, baseline_row(0), FENIX_CLIENT),
]
SYNTHETIC_IDS = ["3f7d2c1b-9a8e-4b6d-a5c4-0e1f2a3b4c5d", "8a9b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d",
                 "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c",
                 "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918", "0918a7b6-c5d4-4e3f-a2b1-c0d9e8f7a6b5"]
#: Only the first has a minidump hash that can make a duplicate (the second's is the empty file's).
SYNTHETIC_HASHES = [HASH, None, None, None, None, None]


def _expected(counter_name: str, activity: str, dims: dict[str, str],
              measures: tuple[int, ...], client: str, doc_id: str | None,
              crash_id: str | None) -> GleanOutcome:
    dimensions = tuple(dims.get(name) for name in glean.DIMENSION_NAMES)
    return GleanOutcome(counter_name, DAY, doc_id,
                        key=(date.fromisoformat(activity).toordinal(), *dimensions),
                        client_id=client, measures=measures, crash_id=crash_id)


def _lines(name: str) -> list[bytes]:
    return [text for text in (DATA / name).read_bytes().splitlines() if text.strip()]


def test_synthetic_decoded_pings() -> None:
    outcomes = [flat(text) for text in _lines("synthetic.all.decoded-with-metadata.ndjson")]
    assert outcomes == [
        _expected(*expected, doc_id, crash_id)
        for expected, doc_id, crash_id in zip(SYNTHETIC, SYNTHETIC_IDS, SYNTHETIC_HASHES,
                                              strict=True)]


def test_synthetic_bigquery_rows() -> None:
    outcomes = [flat(text) for text in _lines("synthetic.all.bigquery-rows.ndjson")]
    expected = [_expected(*row, doc_id, crash_id)
                for row, doc_id, crash_id in zip(SYNTHETIC, SYNTHETIC_IDS, SYNTHETIC_HASHES,
                                                 strict=True)]
    # A BigQuery row says no ping type: the active baseline ping, without metrics, has no key
    # that tells its type, so it is an unknown type.
    assert outcomes[:5] == expected[:5]
    assert outcomes[5] == GleanOutcome(OTHER_DOC_TYPE, DAY)


def _raw(name: str) -> bytes:
    return orjson.dumps(orjson.loads((DATA / name).read_bytes()))


#: Raw client bodies (no submission_timestamp, document_id, normalized_* or metadata): in a
#: folder of 2025-06-02, by hand. The type comes from the keys present.
RAW_DESKTOP = {k: v for k, v in DESKTOP.items() if k not in ("application", "country")}
RAW_FENIX = {k: v for k, v in FENIX.items() if k not in ("application", "country")}
RAW = {
    "synthetic.firefox-desktop.crash.main.raw.json": _expected(
        CRASH_PROCESSED, "2025-06-01", {**RAW_DESKTOP, "build_version": "139.0",
                                        "build_id": "20250519121003"},
        crash_row("main_crashes"), DESKTOP_CLIENT, None, HASH),
    "synthetic.firefox-desktop.crash.content-shutdownkill.raw.json": _expected(
        CRASH_PROCESSED, "2025-06-02", RAW_DESKTOP, crash_row("content_shutdown_crashes"),
        DESKTOP_CLIENT, None, None),
    "synthetic.org-mozilla-fenix.crash.main.raw.json": _expected(
        CRASH_PROCESSED, "2025-06-02", RAW_FENIX, crash_row("main_crashes", "startup_crashes"),
        FENIX_CLIENT, None, None),
    # os_name and os_version come from client_info (no normalized_os here)
    "synthetic.firefox-desktop.baseline.inactive.raw.json": _expected(
        MAIN_PROCESSED, "2025-06-02", RAW_DESKTOP, baseline_row(2060 * NS_PER_S),
        DESKTOP_CLIENT, None, None),
    "synthetic.org-mozilla-fenix.baseline.inactive.raw.json": _expected(
        MAIN_PROCESSED, "2025-06-02", RAW_FENIX, baseline_row(448 * NS_PER_S), FENIX_CLIENT,
        None, None),
    # no metrics, no type: unknown
    "synthetic.org-mozilla-fenix.baseline.active.raw.json": GleanOutcome(OTHER_DOC_TYPE, DAY),
    # Glean's docs example: started 2019-03-29 (clamped to 2025-05-26), 52 s, no channel
    "glean-docs.baseline.example.json": _expected(
        MAIN_PROCESSED, "2025-05-26",
        {"build_version": "1.0", "build_id": "1", "os_name": "Android", "os_version": "8.1.0",
         "architecture": "x86"},
        baseline_row(52 * NS_PER_S), "35dab852-74db-43f4-8aa0-88884211e545", None, None),
    # upstream's schema test pings say ping_type "full"
    "pipeline-schemas.glean.1.baseline.pass.json": GleanOutcome(OTHER_DOC_TYPE, DAY),
    "pipeline-schemas.glean.1.metrics.pass.json": GleanOutcome(OTHER_DOC_TYPE, DAY),
    # pipeline metadata alone: no ping_info
    "metadata.structured-ingestion.1.sample.pass.json": GleanOutcome(OTHER_DOC_TYPE, DAY),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_example_ping_in_a_dated_folder(name: str) -> None:
    assert part(_raw(name)) == RAW[name]


@pytest.mark.parametrize("name", sorted(RAW))
def test_example_ping_in_the_flat_layout(name: str) -> None:
    outcome = flat(_raw(name), wanted=None)
    if name.startswith("metadata."):  # the one with a submission_timestamp
        assert outcome == GleanOutcome(OTHER_DOC_TYPE, date(2018, 3, 12))
    else:
        assert outcome == GleanOutcome(UNDATED, None)


def test_every_example_file_is_tested() -> None:
    names = {path.name for path in DATA.iterdir() if path.suffix in (".json", ".ndjson")}
    assert names == {*RAW, "synthetic.all.decoded-with-metadata.ndjson",
                     "synthetic.all.bigquery-rows.ndjson"}
