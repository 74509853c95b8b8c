"""Fuzzing the rules and the reader with mutated REAL pings (tests/data/reference/).

Each reference ping is loaded, given a `meta` (as the pipeline adds one) and dumped as one
line; the five real crash pings, all from content processes, also come as main-process crash
pings (`payload.processType` "main"), so that mutations reach the crash rules. Hypothesis then
damages them:

- byte by byte: flipped bits, inserted/deleted bytes, truncation, duplicated spans, and inserted
  NUL, invalid UTF-8, an encoded surrogate, a byte order mark, control characters, newlines,
  deep nesting and huge numbers, often right next to the fields the rules read;
- structure by structure: random subtrees (or the fields the rules read) replaced by random JSON
  values of any type: huge integers and strings, nested arrays and objects, lone surrogates,
  nesting beyond 1024 levels.

The lines go to `rules.evaluate_line` in both layouts, and through files written with
`write_ping_file` (plain, .gz, .zst) to the line reader and `engines.local.scan`. Whatever the
input: no exception escapes (a file that cannot be inflated is an InputError naming it); every
non-blank line lands in exactly one counter (the counters of each date plus `undated`, plus
the flat-layout pings of dates not asked for, add up to the non-blank lines); the rows' ping
counts add up to `main_processed`; and the rows can be written (COPY text, Arrow table).

`test_atheris_harness_runs` runs a coverage-guided harness of fuzz/ for a few seconds.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_ping_file
from crash_rate_aggregates import rules, sources
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.errors import InputError
from crash_rate_aggregates.sources import PingStore
from crash_rate_aggregates.stores.postgres import copy_blocks

ROOT = Path(__file__).parents[1]
FUZZ = ROOT / "fuzz"
sys.path.insert(0, str(FUZZ))
import fuzz_common  # noqa: E402  (the harnesses' shared model, in fuzz/)
from fuzz_common import (  # noqa: E402
    DAY,
    WANTED,
    evaluate_everywhere,
    inflate_strictly,
    reference_lines,
)

INT64 = (-(2**63), 2**63 - 1)
UINT64_MAX = 2**64 - 1  # simdjson reads unsigned 64-bit integers too (is_json_int drops them)
MAX_DEPTH = 1024  # docs/rules.md: deeper nesting is a malformed line

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


LINES = [line for _, line in reference_lines()]
DOCS = [orjson.loads(line) for line in LINES]
#: Where mutations are most telling: right at the keys the rules read.
ANCHORS = sorted({f'"{key}"'.encode() for dim in rules.DIMENSIONS for path in dim.paths
                  for key in path} | {f'"{key}"'.encode() for path in rules.RULE_PATHS
                                      for key in path})

# -- byte-level mutations ------------------------------------------------------------------------

SPECIAL = [
    b"\x00", b"\xff", b"\xfe", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf", b"\n", b"\r", b"\r\n", b"\t", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b" ",
    b'"\\ud800"', b'"\\udc00\\ud800"', b"\\u0000", b"1e400", b"-1e400", b"1.5e-400", b"-0",
    b"-9223372036854775809", b"9223372036854775808", b"18446744073709551615",
    b"18446744073709551616", b"9" * 40, b"-" + b"9" * 400, b"[" * 1100, b"{\"a\":" * 1100,
    b"[" * 1100 + b"]" * 1100, b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"true",
    b'"main"', b'"crash"', b'"20160314"', b'"2016-03-14T00:00:00"', b'"20160314030215"',
    b'{"docType": "main"}', b"\\", b'\\"',
]

position = st.one_of(
    st.floats(0, 1).map(lambda f: ("at", f)),
    st.tuples(st.sampled_from(ANCHORS), st.integers(-4, 48)).map(lambda a: ("near", a)),
)
byte_op = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("insert"), position,
              st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from(SPECIAL))),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("duplicate"), position, st.integers(1, 4096), position),
    st.tuples(st.just("nest"), position, st.integers(1, 2000)),
    st.tuples(st.just("bigint"), position, st.integers(19, 2000)),
)


def _offset(data: bytes, where: tuple[str, Any]) -> int:
    kind, value = where
    if kind == "at":
        return min(len(data), int(value * len(data)))
    anchor, shift = value
    found = data.find(anchor)
    if found < 0:
        return len(data) // 2
    return max(0, min(len(data), found + len(anchor) + shift))


def mutate_bytes(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    for op in ops:
        at = _offset(data, op[1])
        if op[0] == "flip":
            if at < len(data):
                data = data[:at] + bytes([data[at] ^ (1 << op[2])]) + data[at + 1:]
        elif op[0] == "insert":
            data = data[:at] + op[2] + data[at:]
        elif op[0] == "delete":
            data = data[:at] + data[at + op[2]:]
        elif op[0] == "truncate":
            data = data[:at]
        elif op[0] == "duplicate":
            span = data[at:at + op[2]]
            to = _offset(data, op[3])
            data = data[:to] + span + data[to:]
        elif op[0] == "nest":
            data = data[:at] + b"[" * op[2] + b"]" * op[2] + data[at:]
        elif op[0] == "bigint":
            data = data[:at] + b"7" * op[2] + data[at:]
    return data


byte_mutants = st.tuples(st.integers(0, len(LINES) - 1),
                         st.lists(byte_op, min_size=1, max_size=4)).map(
    lambda pick: mutate_bytes(LINES[pick[0]], pick[1]))

# -- structure-level mutations -------------------------------------------------------------------

DEEP = "\x01deep:"  # a placeholder string, replaced by real nesting after dumping
DELETE = object()

INTERESTING: list[Any] = [
    "main", "crash", "content", "main ", "MAIN", "", "none", "\x00", "\u0000main", "\ud800",
    "a\udfffb", "20160314", "2016-03-14", "2016-3-14", "2016-02-30", "0000-01-01", "0001-01-01",
    "9999-12-31", "2016-03-14T00:00:00.0+01:00", "2016-03-14T", "2016-03-14Tx\ny",
    "20160314030215", "2016031403021", "201603140302155", "２０１６０３１４０３０２１５",
    3600, 0, -1, -3600, 20160314030215, INT64[0], INT64[1], INT64[1] + 1, UINT64_MAX,
    UINT64_MAX + 1, INT64[0] - 1, 10**30, -(10**30), 3600.0, 1e308, -1e308, 5e-324, True,
    False, None, [], {}, {"0": 5}, {"values": {"0": 3}}, [3600], [[[[[]]]]],
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=24),
    st.text(st.characters(codec="utf-8", categories=["Cs", "Cc", "Co", "Zs"]), max_size=4),
    st.sampled_from(INTERESTING),
    st.integers(1000, 300_000).map(lambda n: "\u00e9x" * n),  # huge strings
    st.integers(1, 3000).map(lambda n: f"{DEEP}{n}"),  # nesting up to 3000 levels
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(["0", "values", "main"])),
                        children, max_size=5),
    ),
    max_leaves=12,
)


def _leaf_paths(tree: rules.FieldTree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, sub in tree.items():
        paths.append((*prefix, key))
        if sub is not None:
            paths.extend(_leaf_paths(sub, (*prefix, key)))
    return paths


READ_PATHS = sorted(_leaf_paths(rules.FIELDS_READ))
target = st.one_of(
    st.sampled_from(READ_PATHS).map(lambda p: ("field", p)),
    st.lists(st.integers(0, 10_000), max_size=8).map(lambda walk: ("walk", walk)),
)
structure_op = st.tuples(target, st.one_of(json_values, st.just(DELETE)))


def _set_field(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    if type(doc) is not dict:
        return doc
    node = doc
    for key in path[:-1]:
        if type(node.get(key)) is not dict:
            node[key] = {}
        node = node[key]
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


def _set_walk(doc: Any, walk: list[int], value: Any) -> Any:
    parent: Any = None
    slot: Any = None
    node = doc
    for step in walk:
        if isinstance(node, dict) and node:
            slot = list(node)[step % len(node)]
        elif isinstance(node, list) and node:
            slot = step % len(node)
        else:
            break
        parent, node = node, node[slot]
    if parent is None:  # the whole document
        return {} if value is DELETE else value
    if value is DELETE:
        del parent[slot]
    else:
        parent[slot] = value
    return doc


def mutate_structure(index: int, ops: list[tuple[Any, Any]], ascii_only: bool) -> tuple[
        Any, bytes]:
    doc: Any = orjson.loads(LINES[index])
    for (kind, where), shared in ops:
        # a value inserted twice must not end up inside itself (DELETE is a marker: kept)
        value = shared if shared is DELETE else copy.deepcopy(shared)
        doc = _set_field(doc, where, value) if kind == "field" else _set_walk(doc, where, value)
    text = json.dumps(doc, ensure_ascii=ascii_only)
    text = re.sub(re.escape(json.dumps(DEEP)[:-1]) + r'(\d+)"',
                  lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)
    return doc, text.encode("utf-8", "surrogatepass")


structure_mutants = st.tuples(
    st.integers(0, len(LINES) - 1), st.lists(structure_op, min_size=1, max_size=4),
    st.booleans()).map(lambda pick: mutate_structure(*pick))

# -- what the docs promise -----------------------------------------------------------------------


def expect_malformed(value: Any) -> bool:
    """docs/rules.md: integers beyond 64 bits, lone surrogates, NaN or infinite numbers and
    nesting deeper than 1024 levels make a line malformed; so does a document that is not an
    object (checked apart). Walked with a stack: the nesting can be deeper than Python's."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is int and not INT64[0] <= item <= UINT64_MAX:
            return True
        if kind is float and (item != item or item in (float("inf"), float("-inf"))):
            return True
        if kind is str:
            if deep_levels(item) is not None:
                if depth - 1 + deep_levels(item) > MAX_DEPTH:  # type: ignore[operator]
                    return True
            elif any("\ud800" <= char <= "\udfff" for char in item):
                return True
        if kind in (list, dict):
            if depth > MAX_DEPTH:
                return True
            children = item if kind is list else [*item.keys(), *item.values()]
            stack.extend((child, depth + 1) for child in children)
    return False


def deep_levels(value: str) -> int | None:
    """The nesting a DEEP placeholder stands for (it becomes arrays once dumped)."""
    rest = value[len(DEEP):]
    return int(rest) if value.startswith(DEEP) and rest.isdigit() else None


def as_parsed(value: Any) -> Any:
    """The document as the product parses it: DEEP placeholders are arrays there, not strings
    (a placeholder in meta.docType is then an array: not main or crash)."""
    if type(value) is str and deep_levels(value) is not None:
        return []
    if type(value) is dict:
        return {key: as_parsed(item) for key, item in value.items()}
    if type(value) is list:
        return [as_parsed(item) for item in value]
    return value


def expect_counter_family(doc: dict[str, Any]) -> str:
    """Rules 1 and 3 on a valid document: other_doc_type, crash_non_main_ignored, or the
    main/crash family the line must land in."""
    meta = doc.get("meta")
    meta = meta if type(meta) is dict else {}
    kind = meta["docType"] if "docType" in meta else doc.get("type")
    if kind not in ("main", "crash"):
        return rules.OTHER_DOC_TYPE
    payload = doc.get("payload")
    payload = payload if type(payload) is dict else {}
    if kind == "crash" and "processType" in payload and payload["processType"] != "main":
        return rules.CRASH_NON_MAIN_IGNORED
    return kind


def expect_flat_date(doc: dict[str, Any]) -> date | None:
    meta = doc.get("meta")
    value = meta.get("submissionDate") if type(meta) is dict else None
    if type(value) is not str or not re.fullmatch(r"[0-9]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2}",
                                                  value):
        return None
    digits = value.replace("-", "")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


# -- the rules -----------------------------------------------------------------------------------


def test_every_reference_line_is_evaluated() -> None:
    """The unmutated base lines: no exception, and the mutations start from real pings."""
    counters: Counter[str] = Counter()
    for line in LINES:
        outcome = evaluate_everywhere(line)[DAY]
        assert outcome is not None
        counters[outcome.counter] += 1
    assert counters[rules.MAIN_PROCESSED] == 7 and counters[rules.CRASH_PROCESSED] == 5
    assert counters[rules.CRASH_NON_MAIN_IGNORED] == 5
    assert counters[rules.MALFORMED_LINES] == 0


@settings(SETTINGS, max_examples=1200)
@given(byte_mutants)
def test_rules_survive_byte_mutations(line: bytes) -> None:
    outcomes = evaluate_everywhere(line)
    if not line.strip():
        assert outcomes[DAY] == rules.Outcome(rules.MALFORMED_LINES, DAY)


@settings(SETTINGS, max_examples=700)
@given(structure_mutants)
def test_rules_survive_structure_mutations(mutant: tuple[Any, bytes]) -> None:
    doc, line = mutant
    outcomes = evaluate_everywhere(line)
    partitioned, flat = outcomes[DAY], outcomes[None]
    assert partitioned is not None
    malformed = type(doc) is not dict or expect_malformed(doc)
    assert (partitioned.counter == rules.MALFORMED_LINES) == malformed, partitioned
    if malformed:
        assert flat == rules.Outcome(rules.MALFORMED_LINES, None)
        return
    family = expect_counter_family(as_parsed(doc))
    if family in ("main", "crash"):
        assert partitioned.counter.startswith(family + "_")
        assert partitioned.counter != rules.CRASH_NON_MAIN_IGNORED
    else:
        assert partitioned.counter == family
    day = expect_flat_date(as_parsed(doc))
    if day is None:
        assert flat == rules.Outcome(rules.UNDATED, None)
    elif day not in WANTED:
        assert flat is None
    else:
        assert flat is not None and flat.submission_date == day
        assert flat.counter == partitioned.counter


def test_the_parser_keeps_no_state_between_lines() -> None:
    """One parser serves every line: a huge or broken line leaves nothing behind."""
    small = LINES[[i for i, d in enumerate(DOCS) if d.get("type") == "crash"][0]]
    first = rules.evaluate_line(small, DAY)
    for other in (max(LINES, key=len), b"[" * 5000, b'{"a": "\xff"}', b"{" + b" " * 10**6,
                  b'{"n": 18446744073709551616}'):
        rules.evaluate_line(other, DAY)
        assert rules.evaluate_line(small, DAY) == first


# -- the reader and the engine -------------------------------------------------------------------

blank = st.sampled_from([b"", b" ", b"\t", b"\r", b"  \r", b"\x0c"])
file_lines = st.lists(st.one_of(byte_mutants, structure_mutants.map(lambda m: m[1]), blank,
                                st.sampled_from(LINES)), min_size=1, max_size=6)
suffixes = st.sampled_from(["json", "jsonl.gz", "ndjson.zst"])
chunk_sizes = st.sampled_from([sources.LINE_CHUNK, 65_536, 4_093])


def check_scan(root: Path, files: list[bytes], layout_date: date | None) -> None:
    store = PingStore(str(root))
    found = store.files_for_date(layout_date) if layout_date else store.all_files()
    assert len(found) == len(files)
    spec = ScanSpec(layout_date, frozenset([layout_date]) if layout_date else WANTED)
    result = scan(store, found, spec)
    rows_by_date = fuzz_common.check_scan_result(result, b"\n".join(files), layout_date)
    for day, rows in rows_by_date.items():
        for row in rows:
            assert row.stats["usage_hours"] <= rules.MAX_USAGE_HOURS * row.stats["ping_count"]
        b"".join(copy_blocks(day.isoformat(), rows))  # the rows can be COPYed...
        if importlib.util.find_spec("pyarrow"):
            from crash_rate_aggregates.stores.parquet import to_table

            assert to_table(rows).num_rows == len(rows)  # ...and written as Parquet


def _write_store(root: Path, files: list[list[bytes]], suffix: str,
                 layout_date: date | None) -> list[bytes]:
    folder = root / f"submission_date={layout_date}" if layout_date else root
    folder.mkdir(parents=True, exist_ok=True)
    contents = []
    for number, lines in enumerate(files):
        write_ping_file(folder / f"part-{number}.{suffix}", lines)
        contents.append(b"".join(line + b"\n" for line in lines))
    return contents


@settings(SETTINGS, max_examples=250)
@given(files=st.lists(file_lines, min_size=1, max_size=2), suffix=suffixes,
       partitioned=st.booleans(), chunk=chunk_sizes)
def test_reader_and_engine_count_every_line(files: list[list[bytes]], suffix: str,
                                            partitioned: bool, chunk: int) -> None:
    layout_date = DAY if partitioned else None
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "LINE_CHUNK", chunk)  # lines across chunk boundaries
        root = Path(folder)
        contents = _write_store(root, files, suffix, layout_date)
        check_scan(root, contents, layout_date)


container_op = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


@settings(SETTINGS, max_examples=200)
@given(lines=file_lines, suffix=st.sampled_from(["json.gz", "json.zst"]),
       ops=st.lists(container_op, min_size=1, max_size=3))
def test_damaged_compressed_files_fail_with_input_error(lines: list[bytes], suffix: str,
                                                        ops: list[tuple[Any, ...]]) -> None:
    """A .gz or .zst file damaged on disk: either it still inflates whole (then every line is
    counted as for the intact content) or the scan raises InputError naming the file in one
    line; never another exception, and never a silently shortened read."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / f"submission_date={DAY}" / f"part-0.{suffix}"
        write_ping_file(path, lines)
        data = path.read_bytes()
        for op in ops:
            at = min(len(data), int(op[1] * len(data))) if op[0] != "append" else len(data)
            if op[0] == "truncate":
                data = data[:at]
            elif op[0] == "flip" and at < len(data):
                data = data[:at] + bytes([data[at] ^ (1 << op[2])]) + data[at + 1:]
            elif op[0] == "append":
                data += op[1]
            elif op[0] == "insert":
                data = data[:at] + op[2] + data[at:]
        path.write_bytes(data)
        inflated = inflate_strictly(data, suffix)
        try:
            check_scan(root, [inflated if inflated is not None else b""], DAY)
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            assert inflated is not None, "the reader accepted a damaged file"


# -- the coverage-guided harness -----------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_harness_runs(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    made = subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_corpus.py"),
                           "--out", str(corpus)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    for harness in ("rules", "reader"):
        assert len(list((corpus / harness).iterdir())) >= 46
    run = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_rules.py"), str(corpus / "rules"),
         "-runs=2000", "-max_total_time=20", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done 2000 runs" in run.stderr or "DONE" in run.stderr, run.stderr[-4000:]
    assert not list(tmp_path.glob("crash-*"))
