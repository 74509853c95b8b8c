"""Invariants that hold for any input (Hypothesis): conservation, totals, idempotence, and
independence from how the input is split across files and workers."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import crash_ping, main_ping, to_bytes, write_ping_file
from crash_rate_aggregates import rules
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.sources import PingStore
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.synth import generate_store

DAYS = [date(2016, 3, 14), date(2016, 3, 15)]
JUNK = [b"{oops", b"[1]", b'"text"', b"\xff\xfe", b'{"meta": {"docType": "event"}}', b"  "]


def ping_for(number: int) -> dict[str, Any]:
    """The ping with document id `number`: the same id always gives the same document, so which
    copy dedupe keeps cannot change a row."""
    day = DAYS[number % 2]
    submission = day.strftime("%Y%m%d") if number % 3 else day.isoformat()
    client = f"client-{number % 4}" if number % 5 else None
    if number % 4 == 3:
        return crash_ping(f"doc-{number}", client, day.isoformat(), submission,
                          **({"processType": "content"} if number % 8 == 7 else {}))
    length: object = [3600, 7200.5, 100_000, -3, True][number % 5]
    build = "2016031403021" if number % 11 == 10 else "20160314030215"
    return main_ping(f"doc-{number}", client, day.isoformat(), submission, length,
                     channel=["nightly", "beta"][number % 2 // 1], build_id=build,
                     content=number % 3)


line_numbers = st.lists(st.one_of(st.integers(0, 40), st.sampled_from([-1, -2, -3, -4, -5, -6])),
                        max_size=60)


def lines_for(numbers: list[int]) -> list[bytes]:
    return [JUNK[-n - 1] if n < 0 else to_bytes(ping_for(n)) for n in numbers]


def scan_lines(root: Path, chunks: list[list[bytes]], workers: int = 1) -> Any:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for index, chunk in enumerate(chunks):
        write_ping_file(root / f"part-{index}.jsonl{['', '.gz', '.zst'][index % 3]}", chunk)
    store = PingStore(str(root))
    return scan(store, store.all_files(), ScanSpec(None, frozenset(DAYS)), workers)


def rows_of(result: Any) -> dict[date, list[Any]]:
    return {day: agg.finish() for day, agg in sorted(result.aggregators.items())}


def assert_same_rows(a: dict[date, list[Any]], b: dict[date, list[Any]]) -> None:
    assert a.keys() == b.keys()
    for day in a:
        assert [(r.activity_date, r.dimensions) for r in a[day]] == [
            (r.activity_date, r.dimensions) for r in b[day]]
        for left, right in zip(a[day], b[day], strict=True):
            assert left.stats == right.stats  # exact sums: equal to the last bit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line_numbers)
def test_every_line_lands_in_exactly_one_counter(numbers: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = scan_lines(Path(folder), [lines_for(numbers)])
    lines = [line for line in lines_for(numbers) if line.strip()]
    counted = result.undated + sum(sum(agg.counters.values())
                                   for agg in result.aggregators.values())
    assert counted == len(lines)
    for aggregator in result.aggregators.values():
        counters = dict(aggregator.counters)
        rows = aggregator.finish()
        assert sum(r.stats["ping_count"] for r in rows) == counters[rules.MAIN_PROCESSED]
        assert sum(r.stats["main_crashes"] for r in rows) == counters[rules.CRASH_PROCESSED]
        assert set(counters) == set(rules.COUNTERS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line_numbers, st.lists(st.integers(0, 60), max_size=4))
def test_splitting_input_across_files_does_not_change_rows(numbers: list[int],
                                                           cuts: list[int]) -> None:
    lines = lines_for(numbers)
    bounds = sorted({0, len(lines), *(min(c, len(lines)) for c in cuts)})
    chunks = [lines[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    with tempfile.TemporaryDirectory() as folder:
        whole = rows_of(scan_lines(Path(folder) / "whole", [lines]))
        split = rows_of(scan_lines(Path(folder) / "split", chunks))
    assert_same_rows(whole, split)


def test_workers_do_not_change_rows_or_counters(tmp_path: Path) -> None:
    numbers = [n % 41 for n in range(0, 400, 3)] + [-1, -2, -5]
    lines = lines_for(numbers)
    chunks = [lines[i::5] for i in range(5)]
    one = scan_lines(tmp_path / "one", chunks, workers=1)
    two = scan_lines(tmp_path / "two", chunks, workers=2)
    assert one.undated == two.undated
    assert {d: dict(a.counters) for d, a in one.aggregators.items()} == {
        d: dict(a.counters) for d, a in two.aggregators.items()}
    assert_same_rows(rows_of(one), rows_of(two))


def _stored_text(db: Path) -> list[tuple[str, str, str, str]]:
    """The rows exactly as SQLite stores them: dates, dimensions and stats as JSON text."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT submission_date, activity_date, dimensions, stats FROM crash_aggregates "
            "ORDER BY submission_date, activity_date, dimensions").fetchall()


def _split_again(store: Path, into: Path, files: int) -> None:
    """The same lines, dealt into another number of files."""
    for folder in sorted(store.glob("submission_date=*")):
        lines = [line for path in sorted(folder.glob("*.json.gz"))
                 for line in gzip.decompress(path.read_bytes()).splitlines()]
        for index in range(files):
            write_ping_file(into / folder.name / f"part-{index}.json.gz", lines[index::files])


def test_stored_rows_are_byte_identical_whatever_the_workers_and_splits(tmp_path: Path) -> None:
    # Sums of floats in the order chunks arrive from workers differed in the last digits in
    # 3-5% of rows; exact integer sums make every stored byte the same.
    first, last = date(2016, 3, 13), date(2016, 3, 14)
    store, resplit = tmp_path / "pings", tmp_path / "resplit"
    generate_store(store, first, last, 2500, seed=7, files_per_day=4, heavy=False)
    _split_again(store, resplit, 7)
    runs = {"workers=1": (store, 1, 1), "workers=2": (store, 2, 1), "workers=3": (store, 3, 1),
            "parallel dates": (store, 3, 2), "7 files, workers=2": (resplit, 2, 1),
            "7 files, workers=1": (resplit, 1, 1)}
    stored = {}
    for name, (root, workers, parallel) in runs.items():
        db = tmp_path / f"{name}.db"
        report = fill(FillSettings(str(root), first, last, f"sqlite:///{db}", workers=workers,
                                   parallel_dates=parallel))
        assert not report.failed and not report.interrupted, name
        stored[name] = _stored_text(db)
    expected = stored["workers=1"]
    assert len(expected) > 500
    for name, rows in stored.items():
        differing = sum(a != b for a, b in zip(rows, expected, strict=True))
        assert differing == 0, f"{name}: {differing} of {len(rows)} rows differ"


def test_rerunning_a_date_gives_identical_rows_and_no_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "pings"
    write_ping_file(root / "all.jsonl", lines_for(list(range(41)) * 2))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings_ = FillSettings(str(root), DAYS[0], DAYS[1], url)
    fill(settings_)
    store = open_store(url)
    first = store.read_rows()
    fill(settings_)
    assert store.read_rows() == first
    assert len({(d, r.activity_date, tuple(sorted(r.dimensions.items()))) for d, r in first}) == \
        len(first)
    assert [run["status"] for run in store.read_runs()] == ["completed"] * 4
    store.close()


# -- blank lines ---------------------------------------------------------------------------------


def _scan_one(path: Path, chunk: int | None = None,
              monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Any, list[Any]]:
    """Scan the one file of a flat store, with the progress calls it made."""
    from crash_rate_aggregates import sources
    from crash_rate_aggregates.engines.local import Progress

    if chunk is not None and monkeypatch is not None:
        monkeypatch.setattr(sources, "LINE_CHUNK", chunk)
    store = PingStore(str(path.parent))
    calls: list[tuple[int, int]] = []
    result = scan(store, store.all_files(), ScanSpec(None, frozenset(DAYS)),
                  progress=Progress(lambda read, lines: calls.append((read, lines))))
    return result, calls


def test_a_file_of_blank_lines_counts_nothing_and_reports_progress(tmp_path: Path) -> None:
    # 12 MiB of newlines stored (gzip level 0) at their size, so that the compressed bytes read
    # advance as the file is read; read a line at a time, it said nothing until its end
    path = tmp_path / "flat" / "blank.json.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"\n" * (12 << 20), compresslevel=0))
    result, calls = _scan_one(path)
    assert result.undated == 0 and result.lines == 0
    for aggregator in result.aggregators.values():
        assert sum(aggregator.counters.values()) == 0 and aggregator.finish() == []
    advancing = [read for read, _ in calls if read > 0]
    assert len(advancing) >= 3, calls  # progress while the file is read, not only at its end
    assert sum(read for read, _ in calls) == path.stat().st_size


@pytest.mark.parametrize("chunk", [None, 4_093, 64])
def test_blank_lines_among_pings_change_no_counter_or_row(
        tmp_path: Path, chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = [n % 41 for n in range(0, 200, 3)] + [-1, -2, -3]
    plain = write_ping_file(tmp_path / "plain" / "pings.jsonl", lines_for(numbers))
    blanks = [b"", b"\r", b" \t ", b"\x0b\x0c", b"\n" * 5000, b"\r\n" * 300]
    spaced = b""
    for index, line in enumerate(lines_for(numbers)):
        spaced += blanks[index % len(blanks)] + b"\n" + b"  " * (index % 2) + line + b"\r\n"
    path = tmp_path / "spaced" / "pings.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(spaced + b"\n" * 70_000 + b"   "))
    expected, _ = _scan_one(plain)
    got, _ = _scan_one(path, chunk, monkeypatch)
    assert got.undated == expected.undated and got.lines == expected.lines
    assert {d: dict(a.counters) for d, a in got.aggregators.items()} == {
        d: dict(a.counters) for d, a in expected.aggregators.items()}
    assert_same_rows(rows_of(got), rows_of(expected))
