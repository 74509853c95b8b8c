"""Coverage-guided fuzzing of the line reader and the local engine (atheris, libFuzzer).

    python fuzz/make_corpus.py
    python fuzz/fuzz_reader.py fuzz/corpus/reader -dict=fuzz/json.dict -max_total_time=60

Each input is an options byte, then the content of one ping file. The options byte picks:

    bits 0-1  the file: 0 plain .json, 1 .jsonl.gz, 2 .ndjson.zst, 3 plain .jsonl
    bit 2     the layout: 0 partitioned (submission_date=2016-03-14/), 1 flat
    bits 3-4  the reader's chunk size: 4 MB (the default), 64 KB, 4093 or 17 bytes
    bit 5     damage the compressed file: cut it at a point given by bits 6-7

The file is written to a temporary store and read with `engines.local.scan`. The invariants:
no exception but an InputError naming the file (and that only for a damaged file); every
non-blank line in exactly one counter, as `rules.evaluate_line` alone would place it; the rows'
ping counts add up to main_processed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports():
    from crash_rate_aggregates import sources
    from crash_rate_aggregates.engines.local import ScanSpec, scan
    from crash_rate_aggregates.errors import InputError
    from crash_rate_aggregates.sources import PingStore

from fuzz_common import DAY, WANTED, check_scan_result, inflate_strictly  # noqa: E402

SUFFIXES = ("json", "jsonl.gz", "ndjson.zst", "jsonl")
CHUNKS = (sources.LINE_CHUNK, 65_536, 4_093, 17)
WORK = Path(tempfile.gettempdir()) / f"fuzz-reader-{os.getpid()}"  # emptied after each input


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        check_file(data[0], data[1:])
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


def check_file(options: int, content: bytes) -> None:
    suffix = SUFFIXES[options & 3]
    flat = bool(options & 4)
    chunk = CHUNKS[(options >> 3) & 3]
    if chunk == 17 and len(content) > 20_000:
        chunk = 4_093  # tiny chunks on a big line would only measure the joining
    folder = WORK if flat else WORK / f"submission_date={DAY}"
    folder.mkdir(parents=True)
    blob = content
    if suffix.endswith(".gz"):
        blob = gzip.compress(content, compresslevel=1)
    elif suffix.endswith(".zst"):
        blob = zstandard.ZstdCompressor(level=1).compress(content)
    damaged = bool(options & 32) and suffix.endswith((".gz", ".zst"))
    if damaged:
        blob = blob[:len(blob) * (1 + (options >> 6)) // 5]
    path = folder / f"part-0.{suffix}"
    path.write_bytes(blob)
    expected = inflate_strictly(blob, suffix) if damaged else content
    sources.LINE_CHUNK = chunk
    store = PingStore(str(WORK))
    files = store.all_files() if flat else store.files_for_date(DAY)
    assert [f.path for f in files] == [str(path)]
    layout_date = None if flat else DAY
    spec = ScanSpec(layout_date, WANTED if flat else frozenset([DAY]))
    try:
        result = scan(store, files, spec)
    except InputError as exc:
        assert damaged and expected is None, f"InputError on a sound file: {exc}"
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert expected is not None, "the reader accepted a damaged file"
    check_scan_result(result, expected, layout_date)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
