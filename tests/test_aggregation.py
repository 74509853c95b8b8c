"""Dedupe and the stats of aggregates (aggregation.py)."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fold
from crash_rate_aggregates import aggregation, rules
from crash_rate_aggregates.aggregation import DateAggregator, DateBatch, IdSet, client_hash

DAY = date(2016, 3, 14)
H = rules.SECONDS_PER_HOUR  # measures count usage in seconds


@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=12))
def test_idset_marks_exactly_first_copies(batches: list[list[int]]) -> None:
    ids, seen = IdSet(), set()
    for batch in batches:
        is_new = ids.add(np.array(batch, dtype=np.uint64))
        expected = []
        for value in batch:
            expected.append(value not in seen)
            seen.add(value)
        assert is_new.tolist() == expected
    assert len(ids) == len(seen)


def test_idset_costs_eight_bytes_an_id() -> None:
    ids = IdSet()
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids.add(rng.integers(0, 2**63, size=2000, dtype=np.uint64))
    assert len(ids) == 100_000
    assert ids.nbytes == 8 * 100_000


def _outcome(client: str | None, measures: tuple[int, ...], doc_id: str | None = None,
             key: rules.Key | None = None) -> rules.Outcome:
    counter = rules.MAIN_PROCESSED if measures[0] else rules.CRASH_PROCESSED
    key = key or (DAY.toordinal(), *(["x"] * len(rules.DIMENSIONS)))
    return rules.Outcome(counter, DAY, doc_id, key, client, measures)


def _rows(outcomes: list[rules.Outcome], compact_every: int = 1_000_000,
          per_batch: int = 1000) -> list[dict[str, float]]:
    return [row.stats for row in fold(outcomes, per_batch, compact_every)]


def test_client_level_sums_by_hand() -> None:
    # client a: main (2 h, 1 content crash), crash; client b: main (1 h); anonymous: crash.
    main_a = (1, 2 * H, 0, 1, 0, 0, 0, 0)
    crash = (0, 0, 1, 0, 0, 0, 0, 0)
    main_b = (1, 1 * H, 0, 0, 0, 0, 0, 0)
    [stats] = _rows([_outcome("a", main_a), _outcome("a", crash), _outcome("b", main_b),
                     _outcome(None, crash)])
    assert stats["ping_count"] == 2
    assert stats["usage_hours"] == 3
    assert stats["usage_hours_squared"] == 4 + 1
    assert stats["main_crashes"] == 2
    assert stats["main_crashes_squared"] == 2
    assert stats["client_count"] == 3
    assert stats["client_usage_hours_squared"] == 4 + 1 + 0
    assert stats["client_main_crashes_squared"] == 1 + 0 + 1
    assert stats["client_main_crashes_usage_hours"] == 1 * 2 + 0 + 0
    assert stats["client_content_crashes_usage_hours"] == 1 * 2
    # largest client: a's 1 and the anonymous ping's 1 main crash; a's 1 content crash
    assert stats["client_main_crashes_max"] == 1
    assert stats["client_content_crashes_max"] == 1 and stats["client_gpu_crashes_max"] == 0
    assert len(stats) == 35


@pytest.mark.parametrize("compact_every", [1, 3, 1_000_000])
@pytest.mark.parametrize("per_batch", [1, 4, 1000])
def test_compaction_and_batching_do_not_change_rows(compact_every: int, per_batch: int) -> None:
    outcomes = [
        _outcome(f"c{i % 5}" if i % 7 else None, (1, i * 360, 0, i % 3, 0, 0, 0, 0),
                 key=(DAY.toordinal(), *([str(i % 2)] * len(rules.DIMENSIONS))))
        for i in range(40)
    ]
    expected = _rows(outcomes)
    got = _rows(outcomes, compact_every, per_batch)
    assert len(got) == len(expected) == 2
    assert got == expected  # exact sums: not a digit depends on batching or compaction
    # per key: the 5 named clients, plus 3 pings without a client id, each its own client
    assert [r["client_count"] for r in expected] == [8, 8]


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 3),
                          st.integers(0, rules.MAX_USAGE_SECONDS)), min_size=1, max_size=30))
def test_client_stats_match_a_direct_computation(
    pings: list[tuple[str | None, int, int]],
) -> None:
    outcomes = [_outcome(c, (1, seconds, 0, n, 0, 0, 0, 0)) for c, n, seconds in pings]
    [stats] = _rows(outcomes, compact_every=2, per_batch=3)
    per_client: dict[object, list[int]] = {}
    for index, (client, n, seconds) in enumerate(pings):
        sums = per_client.setdefault(client if client is not None else index, [0, 0])
        sums[0] += seconds
        sums[1] += n
    # each stat is the exact sum, divided once: correctly rounded
    assert stats["usage_hours"] == sum(s for _, _, s in pings) / H
    assert stats["usage_hours_squared"] == sum(s * s for _, _, s in pings) / H**2
    assert stats["client_count"] == len(per_client)
    assert stats["client_usage_hours_squared"] == sum(s * s for s, _ in per_client.values()) / H**2
    assert stats["client_content_crashes_usage_hours"] == \
        sum(s * n for s, n in per_client.values()) / H
    assert stats["content_crashes_squared"] == sum(n * n for _, n, _ in pings)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]),
                          st.integers(0, rules.MAX_USAGE_SECONDS)), min_size=2, max_size=40),
       st.randoms(use_true_random=False))
def test_rows_do_not_depend_on_the_order_pings_arrive_in(
    pings: list[tuple[str | None, int]], shuffle: random.Random,
) -> None:
    outcomes = [_outcome(c, (1, seconds, 0, seconds % 3, 0, 0, 0, 0)) for c, seconds in pings]
    expected = _rows(outcomes)
    shuffle.shuffle(outcomes)
    assert _rows(outcomes, compact_every=3, per_batch=2) == expected  # equal, not approx


def test_huge_crash_counts_are_summed_exactly() -> None:
    # Counts up to 2**63 - 1 are valid JSON integers (rule 8): their squares and sums leave
    # int64, and are summed as Python integers instead of overflowing.
    big = 2**63 - 1
    pings = [("a", big), ("a", big), ("b", 3), (None, 2**40)]
    outcomes = [_outcome(c, (1, 60, 0, n, 0, 0, 0, 0)) for c, n in pings]
    [stats] = _rows(outcomes, compact_every=2, per_batch=1)
    assert stats["content_crashes"] == float(2 * big + 3 + 2**40)
    assert stats["content_crashes_squared"] == float(2 * big**2 + 9 + 2**80)
    assert stats["client_content_crashes_squared"] == float((2 * big) ** 2 + 9 + 2**80)
    assert stats["client_content_crashes_usage_hours"] == (2 * big * 120 + 3 * 60 + 2**40 * 60) / H


def test_duplicates_are_counted_and_first_copy_kept() -> None:
    aggregator = DateAggregator()
    for doc_id in ("x", "x", None, None, "y", "x"):
        batch = DateBatch()
        batch.add(_outcome("a", (1, H, 0, 0, 0, 0, 0, 0), doc_id))
        aggregator.add(batch.freeze())
    [row] = aggregator.finish()
    assert aggregator.counters[rules.DUPLICATES] == 2
    assert aggregator.counters[rules.MAIN_PROCESSED] == 4
    assert row.stats["ping_count"] == 4


def test_client_hash_is_stable_and_never_zero() -> None:
    assert client_hash(None) == 0
    assert client_hash("a") == client_hash("a") != client_hash("b")
    assert 0 < client_hash("a") < 2**63


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]),
                          st.one_of(st.integers(0, 3), st.integers(2**31, 2**48 - 1),
                                    st.integers(2**48, 2**63 - 1))),
                min_size=1, max_size=25),
       st.integers(1, 6), st.integers(1, 5))
def test_squares_are_exact_in_every_form(pings: list[tuple[str | None, int]],
                                         compact_every: int, per_batch: int) -> None:
    # A square is summed in int64 while it fits, in int64 limbs for values below 2^48 (Glean
    # usage in nanoseconds), else as a Python integer; batches and compactions mix the forms.
    outcomes = [_outcome(c, (1, 60, 0, n, 0, 0, 0, 0)) for c, n in pings]
    [stats] = _rows(outcomes, compact_every=compact_every, per_batch=per_batch)
    per_client: dict[object, int] = {}
    for index, (client, n) in enumerate(pings):
        key = client if client is not None else index
        per_client[key] = per_client.get(key, 0) + n
    assert stats["content_crashes_squared"] == sum(n * n for _, n in pings) / 1
    assert stats["client_content_crashes_squared"] == sum(n * n for n in per_client.values()) / 1
    assert stats["content_crashes"] == sum(n for _, n in pings) / 1


def test_limbs_hold_squares_below_two_to_the_48_exactly() -> None:
    values = np.array([0, 1, 2**16 - 1, 2**16, 2**32 + 7, 2**47 + 12345, 2**48 - 1],
                      dtype=np.int64)
    limbs = aggregation.Limbs.of(values)
    assert limbs.total().tolist() == [v * v for v in values.tolist()]
    # every term stays below 2^34, so 2^28 rows of the largest value sum without overflow
    assert max(int(part.max()) for part in limbs.parts) < 2**34
    starts = np.array([0, 3], dtype=np.int64)
    summed = aggregation._group_sums(limbs, starts)
    assert isinstance(summed, aggregation.Limbs)
    assert summed.total().tolist() == [sum(v * v for v in values[:3].tolist()),
                                       sum(v * v for v in values[3:].tolist())]
    assert isinstance(aggregation._square(np.array([3, 2**31 - 1], dtype=np.int64)), np.ndarray)
    assert isinstance(aggregation._square(values), aggregation.Limbs)
    assert aggregation._square(np.array([2**48], dtype=np.int64)).dtype == object  # type: ignore[union-attr]


def test_keys_from_different_batches_share_their_dimension_values() -> None:
    # Every unpickled batch brings its own copies of the strings: the aggregator keeps one.
    import pickle

    aggregator = DateAggregator()
    for index in range(2):
        batch = DateBatch()
        key = (DAY.toordinal(), *[f"value-{i}" for i in range(len(rules.DIMENSIONS) - 1)],
               f"last-{index}")
        batch.add(_outcome("a", (1, 60, 0, 0, 0, 0, 0, 0), doc_id=f"d{index}", key=key))
        aggregator.add(pickle.loads(pickle.dumps(batch.freeze())))
    first, second = aggregator._keys
    assert first[1] == second[1] and first[1] is second[1]
    assert first[-1] != second[-1]
    assert len(aggregator.finish()) == 2


def test_the_table_reads_as_the_rows_finish_makes() -> None:
    # Three aggregates (two activity dates, one with a dimension absent), rows made on reading.
    def aggregator() -> DateAggregator:
        found = DateAggregator()
        batch = DateBatch()
        dims = ["x"] * len(rules.DIMENSIONS)
        keys = [(DAY.toordinal(), *dims), (DAY.toordinal() - 1, *dims),
                (DAY.toordinal(), None, *dims[1:])]
        for index, key in enumerate(keys):
            batch.add(_outcome(f"c{index}", (1, (index + 1) * H, 0, index, 0, 0, 0, 0),
                               doc_id=f"d{index}", key=key))
        found.add(batch.freeze())
        return found

    rows = aggregator().finish()
    table = aggregator().table()
    assert len(table) == 3 and list(table) == rows and table[-1] == rows[-1]
    assert table[1:] == rows[1:]
    # row order: by activity date, then by the present dimensions as sorted (name, value)
    # pairs, the order every store and the Spark engine use
    assert [r.activity_date for r in rows] == ["2016-03-13", "2016-03-14", "2016-03-14"]
    assert rows == sorted(rows, key=lambda r: (r.activity_date, sorted(r.dimensions.items())))
    absent = rules.DIMENSION_NAMES[0]
    first_missing = sorted(rules.DIMENSION_NAMES).index(absent) < len(rules.DIMENSION_NAMES) - 1
    assert [r.stats["usage_hours"] for r in rows] == ([2.0, 1.0, 3.0] if first_missing
                                                      else [2.0, 3.0, 1.0])
    assert [r.sketches == s.sketches for r, s in zip(rows, table, strict=True)] == [True] * 3


def test_row_order_with_absent_dimensions_by_hand() -> None:
    # names "b", "a": rows sort by date, then by the present (name, value) pairs, "a" first.
    # A key whose pairs are a prefix of another's sorts first; an absent "a" followed by a
    # present "b" sorts after every present "a" ("b" > "a").
    keys = [(1, "x", None), (1, None, "y"), (1, None, None), (0, "z", "z"), (1, "w", "y")]
    expected = [3, 2, 1, 4, 0]
    assert aggregation._row_order(keys, ("b", "a")).tolist() == expected
    assert aggregation._row_order_by_key(keys, ("b", "a")).tolist() == expected
    present = [(1, "p", "q"), (1, "a", "r"), (1, "z", "a"), (0, "z", "z")]
    assert aggregation._row_order(present, ("b", "a")).tolist() == [3, 2, 0, 1]
    # values that are not strings sort as Python sorts them, through the sort key
    mixed = [(1, 2, "q"), (1, 1, "q")]
    assert aggregation._row_order(mixed, ("b", "a")).tolist() == [1, 0]


def test_table_is_made_once_and_then_no_batch_is_added() -> None:
    aggregator = DateAggregator()
    batch = DateBatch()
    batch.add(_outcome("a", (1, H, 0, 0, 0, 0, 0, 0), doc_id="d1"))
    aggregator.add(batch.freeze())
    table = aggregator.table()
    assert aggregator.table() is table and len(table) == 1
    assert table[0].stats["usage_hours"] == 1.0
    with pytest.raises(AssertionError, match="aggregates were made"):
        aggregator.add(batch.freeze())


def test_aggregates_of_one_client_share_that_clients_sketch() -> None:
    # client a alone in two aggregates (one with a main crash), with b in a third; an
    # anonymous ping alone in a fourth: it is in no sketch.
    from crash_rate_aggregates import sketches

    def key(value: str) -> rules.Key:
        return (DAY.toordinal(), value, *(["x"] * (len(rules.DIMENSIONS) - 1)))

    rows = fold([_outcome("a", (1, H, 1, 0, 0, 0, 0, 0), "d1", key("k1")),
                 _outcome("a", (1, H, 0, 0, 0, 0, 0, 0), "d2", key("k2")),
                 _outcome("a", (1, H, 0, 0, 0, 0, 0, 0), "d3", key("k3")),
                 _outcome("b", (1, H, 0, 0, 0, 0, 0, 0), "d4", key("k3")),
                 _outcome(None, (1, H, 1, 0, 0, 0, 0, 0), "d5", key("k4"))], 1000, 1000)
    by_key = {row.dimensions[rules.DIMENSION_NAMES[0]]: row.sketches for row in rows}
    alone = sketches.sketch_of(np.array([client_hash("a")], dtype=np.uint64))
    both = sketches.sketch_of(np.array([client_hash("a"), client_hash("b")], dtype=np.uint64))
    assert by_key["k1"]["clients"] == alone and by_key["k1"]["main_crashes"] == alone
    assert by_key["k1"]["clients"] is by_key["k2"]["clients"]  # one copy
    assert by_key["k2"]["clients"] == alone and by_key["k2"]["main_crashes"] is None
    assert by_key["k3"]["clients"] == both and by_key["k3"]["main_crashes"] is None
    assert by_key["k4"]["clients"] is None and by_key["k4"]["main_crashes"] is None


def test_a_stretch_of_inputs_keys_share_values_and_cross_once() -> None:
    numbers = aggregation.KeyIds()
    first = (1, "".join(["ab", "c"]), None)
    second = (1, "".join(["a", "bc"]), "y")
    assert first[1] is not second[1]
    assert [numbers.id(first), numbers.id(second), numbers.id((1, "abc", None))] == [0, 1, 0]
    assert numbers.take_new() == (0, [first, second])
    assert numbers.id((2, "abc", None)) == 2
    start, keys = numbers.take_new()
    assert start == 2 and keys == [(2, "abc", None)] and keys[0][1] is first[1]
    assert numbers.take_new() == (3, [])
