"""The engines take a family: a Glean day through the local engine (1 and 2 workers) gives the
rows and counters worked out by hand (the Spark engine too: test_spark.py)."""

from __future__ import annotations

import copy
import json
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from conftest import write_ping_file
from crash_rate_aggregates import rules, sketches
from crash_rate_aggregates.aggregation import Aggregate, DateAggregator, DateBatch
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.families import glean
from crash_rate_aggregates.sources import PingStore

DATA = Path(__file__).parent / "data" / "glean"
DAY = date(2025, 6, 2)
HOUR = Fraction(3600)
DESKTOP_CLIENT = "5f1c7e0a-3b7e-4b5c-9a51-2d0e4c1a7b11"
FENIX_CLIENT = "c2a4f1d8-6b0e-4e7a-8f3c-1d2b3a4c5e6f"
HASH = "9b2f0c8e4a1d7e6f5c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d9e"


def _examples(name: str) -> list[dict[str, Any]]:
    text = (DATA / f"synthetic.all.{name}.ndjson").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


DECODED = _examples("decoded-with-metadata")
BIGQUERY = _examples("bigquery-rows")


def _ping(base: dict[str, Any], doc_id: str, strings: dict[str, str | None] | None = None,
          **top: Any) -> dict[str, Any]:
    """A copy of an example ping with another document id and some crash strings changed
    (None: removed), in the example's own spelling of metric keys."""
    ping = copy.deepcopy(base)
    ping["document_id"] = doc_id
    for name, value in (strings or {}).items():
        dotted = "crash.process_type" in ping["metrics"]["string"]
        key = name if dotted else name.replace(".", "_")
        if value is None:
            ping["metrics"]["string"].pop(key, None)
        else:
            ping["metrics"]["string"][key] = value
    ping.update(top)
    return ping


def _variant(process: str, doc_id: str, digest: str) -> dict[str, Any]:
    """The desktop main crash (D0) as a crash of another process, with its own hash."""
    return _ping(DECODED[0], doc_id, {"crash.process_type": process,
                                      "crash.minidump_sha256_hash": digest})


D0, D1, D2, D3, D4, D5 = DECODED  # the six examples, decoded (dotted metric keys)
B0, B1, _, _, B4, _ = BIGQUERY  # BigQuery rows (underscored keys)
#: B4 (Fenix, 448 s) of another client, 448123 ms long: converted exactly, 448.123 s.
B4_OTHER = _ping(B4, "fenix-2-baseline",
                 client_info={**B4["client_info"], "client_id": "fenix-2"},
                 metrics={"timespan": {"glean_baseline_duration": {
                     "value": 448123, "time_unit": "millisecond"}}})

#: File a, decoded form: by hand, what each line is.
FILE_A: list[bytes | dict[str, Any]] = [
    D0,  # desktop main crash (2025-06-01, its crash.app_* dimensions): processed
    D0,  # the same document id: a duplicate
    D1,  # desktop content crash, ShutDownKill, the empty-file hash: processed
    _ping(D1, "d1-again"),  # another id, the empty-file hash again: not a duplicate
    _variant("content", "v-content", "h-content"),  # (D0's strings have no ipc error)
    _variant("gpu", "v-gpu-1", "h-gpu-1"),
    _variant("gpu", "v-gpu-1", "h-gpu-2"),  # id seen: duplicate, h-gpu-2 not recorded
    _variant("gpu", "v-gpu-2", "h-gpu-2"),  # so this one is kept
    _variant("gmplugin", "v-gmplugin", "h-gmplugin"),
    _variant("rdd", "v-rdd", "h-rdd"),
    _variant("socket", "v-socket", "h-socket"),
    _variant("utility", "v-utility", "h-utility"),
    _variant("forkserver", "v-forkserver", "h-forkserver"),  # any other process: other
    D2,  # Android main crash at startup, no minidump: main and startup crashes
    D3,  # desktop baseline, 412 active ticks: 2060 s (its duration is not read)
    D4,  # Android baseline, duration 448 s
    D5,  # Android active baseline without metrics: 0 hours, still a ping
    b"",  # blank: counted nowhere
    b"{not json",  # malformed (flat layout: undated)
    {"ping_info": {"start_time": "2025-06-02T10:00+02:00"}, "document_id": "m",
     "submission_timestamp": "2025-06-02T08:00:00Z",
     "metadata": {"document_type": "metrics"}},  # another Glean ping type
]
#: File b, BigQuery rows.
FILE_B: list[bytes | dict[str, Any]] = [
    _ping(B0, "from-the-crash-reporter"),  # D0's minidump hash, another id: a duplicate
    B1,  # D1's document id: a duplicate
    B4_OTHER,
]
COUNTERS = {**dict.fromkeys(rules.COUNTERS, 0), rules.CRASH_PROCESSED: 12,
            rules.MAIN_PROCESSED: 4, rules.DUPLICATES: 4, rules.MALFORMED_LINES: 1,
            rules.OTHER_DOC_TYPE: 1}
NO_DEDUPE_COUNTERS = {**COUNTERS, rules.CRASH_PROCESSED: 16, rules.DUPLICATES: 0}

DESKTOP = {"build_version": "139.0.1", "build_id": "20250526194527", "channel": "release",
           "application": "Firefox", "os_name": "Windows", "os_version": "10.0",
           "architecture": "x86_64", "country": "DE"}
DESKTOP_CRASH = {**DESKTOP, "build_version": "139.0", "build_id": "20250519121003"}
FENIX = {"build_version": "139.0", "build_id": "2016093481", "channel": "release",
         "application": "Fenix", "os_name": "Android", "os_version": "14",
         "architecture": "arm64-v8a", "country": "US"}


def _stats(**values: Fraction | int) -> dict[str, float]:
    """The 55 stats: 0 but for `values` (exact), each rounded once."""
    stats = dict.fromkeys(glean.STATS, 0.0)
    for name, value in values.items():
        assert name in stats, name
        stats[name] = float(value)
    return stats


def _crash_counts(**counts: int) -> dict[str, int]:
    """Crash measures of one client's crash pings (0/1 a ping): sums, squares, client
    squares (the one client's sum, squared), the largest client's count (that sum)."""
    out: dict[str, int] = {}
    for name, count in counts.items():
        out |= {name: count, f"{name}_squared": count, f"client_{name}_squared": count**2,
                f"client_{name}_max": count}
    return out


def expected_rows(dedupe: bool = True) -> list[Aggregate]:
    """The day's three aggregates, by hand (usage in hours: seconds / 3600)."""
    # One desktop client's crash pings of 2025-06-01: main, content, two gpu, gmplugin, rdd,
    # socket, utility, other (without dedupe: D0 twice, the gpu copy, the crash reporter's).
    d0_copies = 3 if not dedupe else 1
    gpu = 3 if not dedupe else 2
    crashes_0601 = _stats(client_count=1, **_crash_counts(
        main_crashes=d0_copies, content_crashes=1, gpu_crashes=gpu, gmplugin_crashes=1,
        rdd_crashes=1, socket_crashes=1, utility_crashes=1, other_crashes=1))
    # Desktop, 2025-06-02: two ShutDownKill crashes (three without dedupe: B1) and 2060 s.
    shutdown = 3 if not dedupe else 2
    desktop_hours = Fraction(412 * 5) / HOUR
    desktop = _stats(ping_count=1, usage_hours=desktop_hours,
                     usage_hours_squared=desktop_hours**2, client_count=1,
                     client_usage_hours_squared=desktop_hours**2,
                     client_content_shutdown_crashes_usage_hours=shutdown * desktop_hours,
                     **_crash_counts(content_shutdown_crashes=shutdown))
    # Fenix: client c2a4 (448 s, 0 s, a main crash at startup), client fenix-2 (448.123 s).
    fenix_hours, other_hours = Fraction(448) / HOUR, Fraction(448123, 1000) / HOUR
    fenix = _stats(ping_count=3, usage_hours=fenix_hours + other_hours,
                   usage_hours_squared=fenix_hours**2 + other_hours**2, client_count=2,
                   client_usage_hours_squared=fenix_hours**2 + other_hours**2,
                   client_main_crashes_usage_hours=fenix_hours,
                   client_startup_crashes_usage_hours=fenix_hours,
                   **_crash_counts(main_crashes=1, startup_crashes=1))
    return [Aggregate("2025-06-01", DESKTOP_CRASH, crashes_0601),
            Aggregate("2025-06-02", FENIX, fenix),
            Aggregate("2025-06-02", DESKTOP, desktop)]


def write_day(root: Path, layout: str = "partitioned") -> PingStore:
    """Files a (decoded, plain) and b (BigQuery rows, gzip) of the day."""
    folder = root / "submission_date=2025-06-02" if layout == "partitioned" else root
    write_ping_file(folder / "a.ndjson", FILE_A)
    write_ping_file(folder / "b.ndjson.gz", FILE_B)
    return PingStore(str(root))


def scan_day(store: PingStore, layout: str = "partitioned", workers: int = 1,
             dedupe: bool = True) -> tuple[list[Aggregate], dict[str, int], int]:
    """(rows, counters, undated) of the day, read by the local engine."""
    layout_date = DAY if layout == "partitioned" else None
    files = store.files_for_date(DAY) if layout_date else store.all_files()
    spec = ScanSpec(layout_date, frozenset([DAY]), dedupe=dedupe, family="glean")
    result = scan(store, files, spec, workers)
    aggregator = result.aggregators[DAY]
    counters = dict(aggregator.counters)
    return aggregator.finish(), counters, result.undated


@pytest.mark.parametrize("layout", ["partitioned", "flat"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_glean_day_gives_the_rows_worked_out_by_hand(tmp_path: Path, layout: str,
                                                       workers: int) -> None:
    rows, counters, undated = scan_day(write_day(tmp_path, layout), layout, workers)
    if layout == "flat":  # the malformed line has no date there
        assert (counters, undated) == ({**COUNTERS, rules.MALFORMED_LINES: 0}, 1)
    else:
        assert (counters, undated) == (COUNTERS, 0)
    assert rows == expected_rows()
    assert [len(row.stats) for row in rows] == [55, 55, 55]


def test_workers_do_not_change_a_byte(tmp_path: Path) -> None:
    store = write_day(tmp_path)
    one, two = (scan_day(store, workers=n) for n in (1, 2))
    assert one[1] == two[1]
    assert repr(one[0]) == repr(two[0])  # the same floats, to the last bit


def test_no_dedupe_turns_off_both_duplicate_checks(tmp_path: Path) -> None:
    rows, counters, _ = scan_day(write_day(tmp_path), dedupe=False)
    assert counters == NO_DEDUPE_COUNTERS
    assert rows == expected_rows(dedupe=False)


def test_a_crash_id_counts_only_once_its_ping_was_kept() -> None:
    # (document id, minidump hash) by hand: 1 kept; 2 duplicate by id, its hash y is not
    # recorded; 3 kept (y first seen here); 4 duplicate by hash x; the empty-file hash and
    # no hash never make duplicates.
    empty = glean.EMPTY_FILE_SHA256
    pings = [("1", "x"), ("1", "y"), ("3", "y"), ("4", "x"), ("5", empty), ("6", empty),
             ("7", None), ("8", None)]
    for per_batch in (1, 3, 8):
        aggregator = DateAggregator(family="glean", compact_every=2)
        for start in range(0, len(pings), per_batch):
            batch = DateBatch("glean")
            for doc_id, digest in pings[start:start + per_batch]:
                line = json.dumps(_variant("gpu", doc_id, digest or "")).encode()
                outcome = glean.evaluate_line(line, DAY)
                assert outcome is not None
                batch.add(outcome)
            aggregator.add(batch.freeze())
        assert aggregator.counters[rules.DUPLICATES] == 2
        assert aggregator.counters[rules.CRASH_PROCESSED] == 6
        [row] = aggregator.finish()
        assert row.stats["gpu_crashes"] == 6


def test_usage_squares_past_int64_are_exact() -> None:
    # 100000 s (the most a ping may count) is 1e14 ns: its square, 1e28, is far past int64.
    # Three such pings and one of 1 ns, one client: every stat exact, rounded once.
    top = glean.MAX_USAGE_NANOSECONDS
    aggregator = DateAggregator(family="glean", compact_every=1)
    key = (DAY.toordinal(), *(["x"] * len(glean.DIMENSIONS)))
    for usage in (top, top, top, 1):
        batch = DateBatch("glean")
        measures = (1, usage, *(0,) * 10)
        batch.add(rules.Outcome(rules.MAIN_PROCESSED, DAY, None, key, "c", measures))
        aggregator.add(batch.freeze())
    [row] = aggregator.finish()
    unit = glean.NANOSECONDS_PER_HOUR
    total = 3 * top + 1
    assert row.stats["usage_hours"] == total / unit == float(Fraction(total, unit))
    assert row.stats["usage_hours_squared"] == float(Fraction(3 * top**2 + 1, unit**2))
    assert row.stats["client_usage_hours_squared"] == float(Fraction(total**2, unit**2))



def test_the_day_s_distinct_clients_by_hand(tmp_path: Path) -> None:
    """Each row's sketches, as distinct counts: one desktop client crashed in every process type
    on 2025-06-01; one desktop client had two ShutDownKill crashes on 2025-06-02; on Fenix, c2a4
    had a main crash at startup and fenix-2 none. A kind nobody crashed in has no sketch."""
    rows, _, _ = scan_day(write_day(tmp_path))
    counts = [{name: None if blob is None else sketches.merge([blob]).count
               for name, blob in row.sketches.items()} for row in rows]
    nobody = dict.fromkeys(glean.CRASH_MEASURES, None)
    assert counts == [
        {**nobody, "clients": 1, **dict.fromkeys(
            ("main_crashes", "content_crashes", "gpu_crashes", "gmplugin_crashes",
             "rdd_crashes", "socket_crashes", "utility_crashes", "other_crashes"), 1)},
        {**nobody, "clients": 2, "main_crashes": 1, "startup_crashes": 1},
        {**nobody, "clients": 1, "content_shutdown_crashes": 1},
    ]
