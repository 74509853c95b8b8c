"""Hostile and broken input: corrupt files, huge lines, deep nesting, garbage dimensions."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from click.testing import CliRunner

from conftest import main_ping, write_ping_file
from crash_rate_aggregates import budget, rules
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.sources import MAX_LINE_BYTES, PingFile, PingStore
from crash_rate_aggregates.stores.base import open_store

DAY = date(2016, 3, 14)
FOLDER = "submission_date=2016-03-14"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def good_store(root: Path, files: int = 3) -> Path:
    for index in range(files):
        write_ping_file(root / FOLDER / f"part-{index}.json.gz",
                        [main_ping(f"d{index}-{i}", f"c{i}") for i in range(50)])
    return root


def _truncated_gzip() -> bytes:
    data = gzip.compress(b"".join(orjson.dumps(main_ping(f"t{i}")) + b"\n" for i in range(500)))
    return data[: len(data) // 2]


def _truncated_zstd() -> bytes:
    data = zstandard.ZstdCompressor().compress(
        b"".join(orjson.dumps(main_ping(f"z{i}")) + b"\n" for i in range(500)))
    return data[: len(data) // 2]


CORRUPT = {
    "truncated.json.gz": _truncated_gzip(),
    "truncated.json.zst": _truncated_zstd(),
    "not-compressed.json.gz": orjson.dumps(main_ping("plain")) + b"\n",
    "garbage.ndjson.zst": b"\x00\x01 not zstd at all",
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
@pytest.mark.parametrize("workers", ["1", "2"])
def test_corrupt_file_fails_the_date_by_default(tmp_path: Path, name: str, workers: str) -> None:
    root = good_store(tmp_path / "pings")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--db", db, "--workers", workers]
    assert invoke(*common)[0] == 0
    before = open_store(db).read_rows()
    (root / FOLDER / name).write_bytes(CORRUPT[name])
    code, out, err = invoke(*common)
    assert code == 1
    assert out.startswith("2016-03-14 FAILED: ") and name in out and out.count("\n") == 1
    assert "Traceback" not in out + err
    assert open_store(db).read_rows() == before


@pytest.mark.parametrize("name", sorted(CORRUPT))
@pytest.mark.parametrize("workers", ["1", "2"])
def test_skip_counts_the_corrupt_file_and_keeps_the_rest(tmp_path: Path, name: str,
                                                         workers: str) -> None:
    root = good_store(tmp_path / "pings")
    clean = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    skipped = f"sqlite:///{tmp_path / 'skip.sqlite'}"
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--workers", workers]
    assert invoke(*common, "--db", clean)[0] == 0
    (root / FOLDER / name).write_bytes(CORRUPT[name])
    code, out, err = invoke(*common, "--db", skipped, "--on-corrupt-file", "skip")
    assert code == 0, out + err
    assert "main_processed=150 " in out and "corrupt_files=1 (skipped)" in out
    assert f"skipped a corrupt file: {root / FOLDER / name}" in err
    assert open_store(skipped).read_rows() == open_store(clean).read_rows()
    [run] = open_store(skipped).read_runs()
    assert run[rules.CORRUPT_FILES] == 1 and run[rules.MAIN_PROCESSED] == 150


def test_a_file_gone_between_listing_and_reading(tmp_path: Path) -> None:
    store = PingStore(str(good_store(tmp_path / "pings", files=1)))
    ghost = PingFile(str(tmp_path / "pings" / FOLDER / "vanished.json"), 10)
    files = [*store.files_for_date(DAY), ghost]
    with pytest.raises(Exception, match=r"vanished\.json: cannot open"):
        scan(store, files, ScanSpec(DAY, frozenset([DAY])))
    result = scan(store, files, ScanSpec(DAY, frozenset([DAY]), skip_corrupt=True))
    counters = result.aggregators[DAY].counters
    assert counters[rules.CORRUPT_FILES] == 1 and counters[rules.MAIN_PROCESSED] == 50


def _counters(tmp_path: Path, lines: list[Any]) -> dict[str, int]:
    write_ping_file(tmp_path / "pings" / FOLDER / "p.json", lines)
    store = PingStore(str(tmp_path / "pings"))
    result = scan(store, store.files_for_date(DAY), ScanSpec(DAY, frozenset([DAY])))
    return {k: v for k, v in result.aggregators[DAY].counters.items() if v}


def test_hostile_documents_are_counted_not_fatal(tmp_path: Path) -> None:
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_int = orjson.dumps(main_ping("h")).replace(b'"subsessionLength":3600',
                                                    b'"subsessionLength":' + b"9" * 5000)
    nul_bytes = b'{"type": "main",\x00 "id": "n"}'
    control = main_ping("ctl")
    control["environment"]["system"]["os"]["version"] = "10\x01\x1f\x7f\u2028\x00end"
    counters = _counters(tmp_path, [deep, huge_int, nul_bytes, control, b"\xc0\xaf{}"])
    assert counters == {rules.MALFORMED_LINES: 4, rules.MAIN_PROCESSED: 1}


def test_dimension_values_of_megabytes_are_cut(tmp_path: Path) -> None:
    ping = main_ping("big")
    ping["environment"]["system"]["os"]["version"] = "v" * (3 << 20)
    write_ping_file(tmp_path / "pings" / FOLDER / "p.json", [ping])
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert invoke("fill", "--input", str(tmp_path / "pings"), "--from", "2016-03-14",
                  "--to", "2016-03-14", "--db", db)[0] == 0
    [(_, row)] = open_store(db).read_rows()
    assert row.dimensions["os_version"] == "v" * rules.MAX_DIMENSION_CHARS


def test_a_line_of_hundreds_of_megabytes_in_bounded_memory(tmp_path: Path) -> None:
    folder = tmp_path / "pings" / FOLDER
    folder.mkdir(parents=True)
    with gzip.open(folder / "huge.json.gz", "wb", compresslevel=1) as out:
        out.write(orjson.dumps(main_ping("before")) + b"\n")
        out.write(b'{"type": "main", "junk": "')
        block = b"x" * (1 << 20)
        for _ in range(400):  # a 400 MB line
            out.write(block)
        out.write(b'"}\n')
        out.write(orjson.dumps(main_ping("after")) + b"\n")
    assert 400 * (1 << 20) > 20 * MAX_LINE_BYTES
    job = subprocess.run(
        [sys.executable, "-c",
         "import resource, sys\n"
         "from crash_rate_aggregates.cli import main\n"
         "sys.argv = ['crash-aggregates', 'fill', '--input', sys.argv[1], '--from', "
         "'2016-03-14', '--to', '2016-03-14', '--db', sys.argv[2], '--workers', '1']\n"
         "try:\n    main()\nfinally:\n"
         # VmHWM: the peak of this program (ru_maxrss would include the forking parent's)
         "    print('maxrss', [line.split()[1] for line in open('/proc/self/status')\n"
         "                     if line.startswith('VmHWM')][0])\n",
         str(tmp_path / "pings"), f"sqlite:///{tmp_path / 'db.sqlite'}"],
        capture_output=True, text=True, timeout=120)
    assert "main_processed=2 " in job.stdout and "malformed_lines=1 " in job.stdout, job.stderr
    peak_mb = int(job.stdout.split("maxrss")[1]) / 1024
    assert 20 < peak_mb < 250, peak_mb


def test_garbage_dimensions_trip_the_cardinality_guard(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pings = []
    for number in range(3000):
        ping = main_ping(f"g{number}", f"c{number}")
        ping["meta"]["geoCountry"] = f"garbage-{number}"
        pings.append(ping)
    write_ping_file(tmp_path / "pings" / FOLDER / "p.json", pings)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    common = ["fill", "--input", str(tmp_path / "pings"), "--from", "2016-03-14", "--to",
              "2016-03-14", "--db", db, "--workers", "1"]
    code, out, _ = invoke(*common, "--max-aggregates", "1000")
    assert code == 1
    assert out.strip() == ("2016-03-14 FAILED: 2016-03-14: more than 1,000 distinct aggregates; "
                           "country alone has 1,000 values: garbage in the pings? The fill "
                           "stops before a day's aggregates outgrow memory: 1,000 aggregates is "
                           "about 2 MB at ~2 KB each; raise --max-aggregates or use --engine "
                           "spark")
    code, out, _ = invoke(*common)  # under the default limit the same day is fine
    assert code == 0 and out.startswith("2016-03-14 ok: 3000 rows")
    # the default is the memory budget: 5 MB of memory holds 5e6 * 0.6 / 2000 = 1,500
    # aggregates, half that for each of two dates read at once
    monkeypatch.setattr(budget, "machine_memory", lambda: 5_000_000)
    monkeypatch.setattr(budget, "MIN_MAX_AGGREGATES", 1)
    code, out, _ = invoke(*common)
    assert code == 1 and "FAILED: 2016-03-14: more than 1,500 distinct aggregates;" in out
    code, out, _ = invoke(*common, "--parallel-dates", "2")
    assert code == 1 and "FAILED: 2016-03-14: more than 750 distinct aggregates;" in out
    code, out, _ = invoke(*common, "--max-aggregates", "3000")  # explicit: as given
    assert code == 0 and out.startswith("2016-03-14 ok: 3000 rows")


def test_every_zstd_frame_is_read(tmp_path: Path) -> None:
    compressor = zstandard.ZstdCompressor()
    frames = [compressor.compress(orjson.dumps(main_ping(f"f{i}", f"c{i}")) + b"\n")
              for i in range(3)]
    path = tmp_path / "pings" / FOLDER / "frames.json.zst"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(frames))  # as `cat a.zst b.zst c.zst` makes
    store = PingStore(str(tmp_path / "pings"))
    result = scan(store, store.files_for_date(DAY), ScanSpec(DAY, frozenset([DAY])))
    assert result.aggregators[DAY].counters[rules.MAIN_PROCESSED] == 3


@pytest.mark.parametrize("extra", [[], ["--workers", "2"],
                                   ["--parallel-dates", "2", "--to", "2016-03-15"]])
def test_skip_never_replaces_a_date_with_nothing(tmp_path: Path, extra: list[str]) -> None:
    """Every file of the date corrupt: with skip the date fails in one line and keeps its rows
    (the other date of the group is written)."""
    root = good_store(tmp_path / "pings", files=2)
    write_ping_file(root / "submission_date=2016-03-15" / "p.json",
                    [main_ping("x", submission="20160315", day="2016-03-15")])
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--db", db, "--workers", "1", "--on-corrupt-file", "skip", *extra]
    assert invoke(*common)[0] == 0
    before = open_store(db).read_rows(DAY)
    assert before
    for index in range(2):
        (root / FOLDER / f"part-{index}.json.gz").write_bytes(CORRUPT["truncated.json.gz"])
    code, out, err = invoke(*common)
    assert code == 1
    [failed] = [line for line in out.splitlines() if line.startswith("2016-03-14")]
    assert failed.startswith("2016-03-14 FAILED: every ping file of 2016-03-14 is corrupt "
                             "(2 skipped) (first: ")
    assert failed.endswith("with --on-corrupt-file skip that would replace its rows with "
                           "nothing: they are kept")
    assert "skipped a corrupt file" not in err and "Traceback" not in out + err
    assert open_store(db).read_rows(DAY) == before
    last = open_store(db).read_runs(DAY)[-1]
    assert (last["status"], last[rules.CORRUPT_FILES]) == ("failed", 2)


@pytest.mark.parametrize(("content", "seen"), [
    (b"this is not json\n" * 100, "malformed_lines=100"),
    (b"\n" * 10_000, "no line"),
    (b"", "no line"),
    (orjson.dumps({"meta": {"docType": "event"}}) + b"\n", "other_doc_type=1"),
])
def test_a_date_whose_files_hold_no_valid_ping_fails_and_keeps_its_rows(
        tmp_path: Path, content: bytes, seen: str) -> None:
    """An upstream outage (garbage, blank or empty files, other pings only) is never a day of
    no usage: the date fails in one line, exit 1, and its rows stay."""
    root = good_store(tmp_path / "pings", files=1)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--db", db, "--workers", "1"]
    assert invoke(*common)[0] == 0
    before = open_store(db).read_rows(DAY)
    assert before
    for old in (root / FOLDER).iterdir():
        old.unlink()
    with gzip.open(root / FOLDER / "part-0.json.gz", "wb") as out:
        out.write(content)
    code, out_text, err = invoke(*common)
    assert code == 1
    [failed] = [line for line in out_text.splitlines() if line.startswith("2016-03-14")]
    assert failed == (f"2016-03-14 FAILED: no valid ping in the 1 ping file of 2016-03-14 "
                      f"({seen}); that would replace its rows with nothing: they are kept")
    assert open_store(db).read_rows(DAY) == before
    assert open_store(db).read_runs(DAY)[-1]["status"] == "failed"


def test_skip_fails_a_date_left_with_no_row(tmp_path: Path) -> None:
    root = good_store(tmp_path / "pings", files=1)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--db", db, "--on-corrupt-file", "skip"]
    assert invoke(*common)[0] == 0
    before = open_store(db).read_rows(DAY)
    (root / FOLDER / "part-0.json.gz").write_bytes(gzip.compress(b"{not a ping}\n"))
    (root / FOLDER / "part-1.json.gz").write_bytes(CORRUPT["truncated.json.gz"])
    code, out, _ = invoke(*common)
    assert code == 1 and out.startswith(
        "2016-03-14 FAILED: 1 of the 2 ping files of 2016-03-14 are corrupt and the others "
        "hold no row")
    assert open_store(db).read_rows(DAY) == before


def test_symlinked_ping_files_and_date_folders_are_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_ping_file(elsewhere / "a.json", [main_ping("a", "c1")])
    write_ping_file(elsewhere / "day15" / "nested" / "b.json",
                    [main_ping("b", "c2", submission="20160315", day="2016-03-15")])
    write_ping_file(elsewhere / "more" / "c.json", [main_ping("c", "c3")])
    root = tmp_path / "pings"
    (root / FOLDER).mkdir(parents=True)
    (root / FOLDER / "linked.json").symlink_to(elsewhere / "a.json")
    (root / FOLDER / "linked-folder").symlink_to(elsewhere / "more")
    (root / "submission_date=2016-03-15").symlink_to(elsewhere / "day15")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    code, out, err = invoke("fill", "--input", str(root), "--from", "2016-03-14", "--to",
                            "2016-03-15", "--db", db, "--workers", "1")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("2016-03-14 ok: ") and "main_processed=2 " in lines[0]
    assert lines[1].startswith("2016-03-15 ok: ") and "main_processed=1 " in lines[1]


def test_symlinks_in_a_flat_store_are_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_ping_file(elsewhere / "a.json", [main_ping("a", "c1")])
    write_ping_file(elsewhere / "more" / "b.json.gz", [main_ping("b", "c2")])
    root = tmp_path / "pings"
    root.mkdir()
    (root / "a.json").symlink_to(elsewhere / "a.json")
    (root / "more").symlink_to(elsewhere / "more")
    (root / "back").symlink_to(root)  # a loop: named, and skipped with skip
    code, out, err = invoke("fill", "--input", str(root), "--from", "2016-03-14", "--to",
                            "2016-03-14", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
                            "--layout", "flat", "--on-corrupt-file", "skip", "--workers", "1")
    assert code == 0, out + err
    assert "main_processed=2 " in out and "corrupt_files=1 (skipped)" in out
    assert f"{root / 'back'}: cannot open: a symbolic link back to a folder being read" in err


BROKEN_LINKS = {
    "dangling.json": ("nowhere.json", "a dangling symbolic link (it points to nowhere.json, "
                                      "which does not exist)"),
    "loop.json": ("loop.json", "a symbolic link loop (it points to loop.json)"),
    "up": ("..", "a symbolic link back to a folder being read (it points to ..): a loop, or "
                 "the same files twice"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_LINKS))
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_broken_link_is_named(tmp_path: Path, name: str, workers: str) -> None:
    root = good_store(tmp_path / "pings", files=2)
    target, why = BROKEN_LINKS[name]
    (root / FOLDER / name).symlink_to(target)
    common = ["fill", "--input", str(root), "--from", "2016-03-14", "--to", "2016-03-14",
              "--workers", workers]
    code, out, err = invoke(*common, "--db", f"sqlite:///{tmp_path / 'a.sqlite'}")
    assert code == 1
    assert out == f"2016-03-14 FAILED: {root / FOLDER / name}: cannot open: {why}\n"
    assert "Traceback" not in out + err
    code, out, err = invoke(*common, "--db", f"sqlite:///{tmp_path / 'b.sqlite'}",
                            "--on-corrupt-file", "skip")
    assert code == 0, out + err
    assert "main_processed=100 " in out and "corrupt_files=1 (skipped)" in out
    assert f"skipped a corrupt file: {root / FOLDER / name}: cannot open: {why}" in err
