"""What the atheris harnesses share: the real pings of tests/data/reference/ as seed lines, and
the invariants every outcome must satisfy (the same as tests/test_fuzz.py asserts)."""

from __future__ import annotations

import gzip
import math
import zlib
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import zstandard

from crash_rate_aggregates import rules

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "reference"
DAY = date(2016, 3, 14)  # the partitioned layout's date
SUB_2015, SUB_GC, SUB_CRASH = date(2015, 11, 5), date(2018, 3, 9), date(2018, 4, 11)
WANTED = frozenset({SUB_2015, SUB_GC, SUB_CRASH, DAY})


def _submission(name: str) -> str:
    if name.startswith("crash."):
        return SUB_CRASH.strftime("%Y%m%d")
    if "gc_sample" in name:
        return SUB_GC.isoformat()
    return SUB_2015.strftime("%Y%m%d")


def reference_lines() -> list[tuple[str, bytes]]:
    """(name, line): each reference ping with a pipeline `meta`, as one NDJSON line; each real
    crash ping (all from content processes) also as a main-process one."""
    lines = []
    for number, path in enumerate(sorted(REFERENCE.glob("*.json"))):
        doc = orjson.loads(path.read_bytes())
        doc["meta"] = {"submissionDate": _submission(path.name), "sampleId": number % 100,
                       "geoCountry": "FR", "documentId": f"doc-{number}",
                       "normalizedChannel": "release"}
        lines.append((path.stem, orjson.dumps(doc)))
        if doc.get("type") == "crash":
            doc["payload"]["processType"] = "main"
            doc["meta"]["documentId"] += "-main"
            lines.append((f"{path.stem}.main-process", orjson.dumps(doc)))
    return lines


def check_outcome(outcome: rules.Outcome | None, layout_date: date | None) -> None:
    """What any outcome of evaluate_line must look like."""
    if layout_date is not None:
        assert outcome is not None
        assert outcome.submission_date == layout_date
    if outcome is None:
        return
    if outcome.submission_date is None:
        assert layout_date is None
        assert outcome.counter in (rules.UNDATED, rules.MALFORMED_LINES)
        return
    assert outcome.counter in rules.COUNTERS
    assert outcome.counter != rules.DUPLICATES  # the engine's verdict, never the rules'
    if layout_date is None:
        assert outcome.submission_date in WANTED
    processed = outcome.counter in (rules.MAIN_PROCESSED, rules.CRASH_PROCESSED)
    assert (outcome.key is not None) == processed
    assert (outcome.measures is not None) == processed
    if outcome.doc_id is not None:
        assert type(outcome.doc_id) is str
    if not processed:
        assert outcome.client_id is None
        return
    assert outcome.key is not None and outcome.measures is not None
    assert len(outcome.measures) == len(rules.MEASURES)
    # integers (usage in seconds) within int64, so that the engines' sums are exact
    assert all(type(m) is int and 0 <= m < 2**63 for m in outcome.measures)
    main = outcome.counter == rules.MAIN_PROCESSED
    assert outcome.measures[0] == (1 if main else 0)
    assert outcome.measures[2] == (0 if main else 1)
    assert 0 <= outcome.measures[1] <= rules.MAX_USAGE_SECONDS
    activity, dims = rules.key_to_row(outcome.key)
    day = date.fromisoformat(activity)
    assert day <= outcome.submission_date
    assert outcome.submission_date - day <= timedelta(days=7) or \
        outcome.submission_date.toordinal() <= 7
    build = dims["build_id"]
    assert len(build) == 14 and build.isascii() and build.isdigit()
    assert set(dims) <= set(rules.DIMENSION_NAMES)
    assert dims.get("gfx_compositor") != "none"
    for value in dims.values():
        assert type(value) is str and "\x00" not in value
        value.encode("utf-8")  # storable: no lone surrogate
    if outcome.client_id is not None:
        outcome.client_id.encode("utf-8")


def evaluate_everywhere(line: bytes) -> dict[date | None, rules.Outcome | None]:
    """evaluate_line in both layouts, on bytes and on a memoryview, with and without sampling
    and dedupe: the same answers, none of them an exception."""
    found: dict[date | None, rules.Outcome | None] = {}
    for layout_date in (DAY, None):
        outcome = rules.evaluate_line(line, layout_date, WANTED)
        check_outcome(outcome, layout_date)
        assert rules.evaluate_line(memoryview(line), layout_date, WANTED) == outcome
        assert rules.evaluate_line(bytearray(line), layout_date, WANTED) == outcome
        sampled = rules.evaluate_line(line, layout_date, WANTED, sample_below=50.0)
        check_outcome(sampled, layout_date)
        if outcome is not None and sampled is not None and \
                sampled.counter != rules.SAMPLED_OUT:
            assert sampled == outcome
        plain = rules.evaluate_line(line, layout_date, WANTED, dedupe=False)
        check_outcome(plain, layout_date)
        if outcome is not None and plain is not None:
            assert plain.counter == outcome.counter and plain.doc_id is None
        found[layout_date] = outcome
    return found


def expected_counts(content: bytes, layout_date: date | None) -> tuple[
        dict[date, Counter[str]], int, int, int]:
    """Per-date counters, undated, pings of dates not asked for, non-blank lines: the content
    split on newlines, each line evaluated alone, dedupe applied in order."""
    counters: dict[date, Counter[str]] = {}
    seen: dict[date, set[str]] = {}
    undated = unwanted = nonblank = 0
    for line in content.split(b"\n"):
        if not line.strip():
            continue
        nonblank += 1
        outcome = rules.evaluate_line(line, layout_date, WANTED)
        if outcome is None:
            unwanted += 1
            continue
        if outcome.submission_date is None:
            undated += 1
            continue
        ids = seen.setdefault(outcome.submission_date, set())
        counter = outcome.counter
        if outcome.doc_id is not None:
            if outcome.doc_id in ids:
                counter = rules.DUPLICATES
            ids.add(outcome.doc_id)
        counters.setdefault(outcome.submission_date, Counter())[counter] += 1
    return counters, undated, unwanted, nonblank


def check_scan_result(result: Any, content: bytes, layout_date: date | None) -> dict[date, Any]:
    """The engine counted every non-blank line once, as the rules say, and its rows add up.
    Returns each date's rows, for further checks."""
    counters, undated, unwanted, nonblank = expected_counts(content, layout_date)
    rows_by_date: dict[date, Any] = {}
    assert result.lines == nonblank, (result.lines, nonblank)
    assert result.undated == undated
    total = undated + unwanted
    for day, aggregator in result.aggregators.items():
        got = {name: aggregator.counters[name] for name in rules.COUNTERS}
        assert got == {name: counters.get(day, Counter())[name] for name in rules.COUNTERS}
        total += sum(got.values())
        rows = rows_by_date[day] = aggregator.finish()
        assert sum(row.stats["ping_count"] for row in rows) == got[rules.MAIN_PROCESSED]
        assert sum(row.stats["main_crashes"] for row in rows) == got[rules.CRASH_PROCESSED]
        for row in rows:
            assert all(math.isfinite(v) and v >= 0 for v in row.stats.values())
    assert total == nonblank  # every non-blank line in exactly one counter
    return rows_by_date


def inflate_strictly(data: bytes, suffix: str) -> bytes | None:
    """The whole content of a .gz (every member) or .zst (every frame), or None when any part
    is damaged or cut short."""
    try:
        if suffix.endswith(".gz"):
            return gzip.decompress(data)
        out = []
        while data:
            frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(frame.decompress(data))
            if not frame.eof:
                return None
            data = frame.unused_data
        return b"".join(out)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError):
        return None
