"""Coverage-guided fuzzing of `rules.evaluate_line` (atheris, libFuzzer).

    python fuzz/make_corpus.py
    python fuzz/fuzz_rules.py fuzz/corpus/rules -dict=fuzz/json.dict -max_total_time=60

Each input is one line. Half the mutations are libFuzzer's byte mutations; the other half are
structural: the line is parsed as JSON and one field the rules read (or a random subtree) is
replaced by a value of any type (huge integers, lone surrogates, deep arrays, long strings...).
Any exception, or an outcome breaking an invariant of fuzz_common.check_outcome, is a crash.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports():
    from crash_rate_aggregates import rules

from fuzz_common import evaluate_everywhere  # noqa: E402


def _paths(tree: rules.FieldTree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, sub in tree.items():
        found.append((*prefix, key))
        if sub is not None:
            found.extend(_paths(sub, (*prefix, key)))
    return found


READ_PATHS = _paths(rules.FIELDS_READ)
VALUES: list[Any] = [
    None, True, False, 0, -1, 3600, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64,
    10**40, 1.5, -0.0, 1e308, 5e-324, "", "main", "crash", "content", "none", "\x00", "\ud800",
    "\udc00x", "20160314", "2016-03-14", "2016-02-30", "0001-01-01", "9999-12-31",
    "2016-03-14T00:00:00.0+01:00", "20160314030215", "2016031403021", "x" * 100_000, [], {},
    [[[]]], {"0": 7}, {"values": {"0": 7}}, {"content": {"values": {"0": 2}}},
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.6 or depth > 3:
        return copy.deepcopy(rng.choice(VALUES))  # never share a list or dict between docs
    if roll < 0.7:
        nesting = rng.randint(1, 1500)
        return json.loads("[" * min(nesting, 900) + "]" * min(nesting, 900))
    if roll < 0.85:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["0", "values", "main", "a"]): _value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _mutate_structure(doc: Any, rng: random.Random) -> Any:
    if type(doc) is not dict:
        return doc
    if rng.random() < 0.7:  # a field the rules read
        path = rng.choice(READ_PATHS)
        node = doc
        for key in path[:-1]:
            if type(node.get(key)) is not dict:
                node[key] = {}
            node = node[key]
        if rng.random() < 0.15:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = _value(rng)
        return doc
    parent: Any = None
    slot: Any = None
    node = doc
    for _ in range(rng.randint(1, 8)):  # any subtree
        if isinstance(node, dict) and node:
            slot = rng.choice(list(node))
        elif isinstance(node, list) and node:
            slot = rng.randrange(len(node))
        else:
            break
        parent, node = node, node[slot]
    if parent is not None:
        parent[slot] = _value(rng)
    return doc


def _structural(data: bytes, max_size: int, rng: random.Random) -> bytes | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    for _ in range(rng.randint(1, 3)):
        doc = _mutate_structure(doc, rng)
    try:
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None
    out = text.encode("utf-8", "surrogatepass")
    return out if len(out) <= max_size else None


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        try:
            out = _structural(data, max_size, rng)
        except Exception:  # a bug of this mutator must not stop the fuzzing
            out = None
        if out is not None:
            return out
    return atheris.Mutate(data, max_size)


def test_one_input(data: bytes) -> None:
    evaluate_everywhere(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
