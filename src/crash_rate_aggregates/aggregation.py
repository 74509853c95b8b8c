"""Summing rule outcomes into aggregates: dedupe, per-client sums, the stats.

Family-neutral: what a ping family says (its measures, their units, its stats and dimension
names) comes from the family module (`families.family(name)`: 35 stats legacy, 55 Glean).
Workers turn lines into `Batch`es of compact per-ping records (numpy arrays, ~100 bytes a
ping); one `DateAggregator` per submission date folds batches in, in any order:

1. dedupe against every document id seen this date (8 bytes an id, see `IdSet`), then, among
   the pings kept, against every second key (`Outcome.crash_id`: a Glean minidump hash) seen;
2. count each kept record in its counter;
3. keep processed records as (key, client) partial sums, compacted from time to time, so memory
   grows with the number of distinct (aggregate, client) pairs, not with the input;
4. at the end, sum the partials per key into the family's stats (docs/rules.md).

Every sum is exact: measures are integers (legacy usage in seconds, Glean usage in nanoseconds)
summed column by column as int64; a square past int64 of a value below 2^48 (Glean usage in
nanoseconds) as five int64 limbs (`Limbs`); any other column whose values or sums could leave
int64 (hostile crash counts) as Python integers; each stat is its integer total divided once by
its unit. So no row depends on the order in which batches arrive (how
files were split among workers), and the Spark engine, which sums the same integers, gives the
same floats to the last bit. Only the columns that need them pay for Python integers.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import budget, families, rules, sketches
from .aggregate_table import Aggregate as Aggregate
from .aggregate_table import AggregateTable as AggregateTable
from .errors import CrashAggregatesError


class TooManyAggregates(CrashAggregatesError):
    """A date has more distinct aggregates than allowed: the cardinality guard."""

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
#: Exact integers: int64, or Python integers (dtype object) once int64 could overflow.
Ints = npt.NDArray[Any]

_KIND_COUNTERS: tuple[str, ...] = (
    rules.MAIN_PROCESSED,
    rules.MAIN_IGNORED,
    rules.CRASH_PROCESSED,
    rules.CRASH_IGNORED,
)
KIND_CODE: dict[str, int] = {name: code for code, name in enumerate(_KIND_COUNTERS)}
_ANONYMOUS = np.uint64(1 << 63)
_CLIENT_MASK = (1 << 63) - 1
#: Non-negative int64 values whose sum stays below this cannot overflow.
_INT64_SAFE = 1 << 62
#: Integers up to this are exact as doubles: dividing them as doubles is correctly rounded.
_DOUBLE_EXACT = 1 << 53
#: Squares of values below 2^48 are summed as `Limbs`.
_LIMB_BELOW = 1 << 48
_DIGIT = 16
_DIGIT_MASK = (1 << _DIGIT) - 1


@dataclass(frozen=True)
class Limbs:
    """Exact sums of squares x * x of values x below 2^48, kept in int64. With x's base-2^16
    digits a, b, c (x = a * 2^32 + b * 2^16 + c), x * x = a*a * 2^64 + 2ab * 2^48 + (b*b +
    2ac) * 2^32 + 2bc * 2^16 + c*c: a row holds the sums of those five terms (each below 2^34
    a value, so 2^28 rows sum without overflow), and its total is their weighted sum. Glean
    usage in nanoseconds (below 2^47) squares past int64, and as Python integers its squares
    took a fifth of the aggregator's time."""

    parts: tuple[Ints, ...]  # the sums of the terms of weight 2^64, 2^48, 2^32, 2^16, 1

    @property
    def size(self) -> int:
        return int(self.parts[0].size)

    def total(self) -> Ints:
        """Each row's total, as Python integers."""
        result: Ints = np.zeros(self.size, dtype=np.int64).astype(object)
        for part in self.parts:
            result = (result << _DIGIT) + _as_python_ints(part)
        return result

    @staticmethod
    def of(values: Ints) -> Limbs:
        """The squares of int64 values in [0, 2^48)."""
        a, b, c = values >> (2 * _DIGIT), (values >> _DIGIT) & _DIGIT_MASK, values & _DIGIT_MASK
        return Limbs((a * a, 2 * a * b, b * b + 2 * a * c, 2 * b * c, c * c))

    @staticmethod
    def lift(sums: Ints) -> Limbs:
        """int64 sums as limbs: all in the units term."""
        zeros = np.zeros_like(sums)
        return Limbs((zeros, zeros, zeros, zeros, sums))


#: One column of exact integers: int64, Python integers, or limbs of squares.
Column = Ints | Limbs
#: A table of exact integers, one column each.
Columns = list[Column]


@functools.cache
def stat_units(family: str = families.DEFAULT) -> tuple[int, ...]:
    """The unit of each of a family's stats, in per-ping measure units: a stat is its total /
    its unit (STATS order: measures, squares, client_count, client squares, client usage,
    client maxima)."""
    units = families.family(family).MEASURE_UNITS
    return (
        *units,
        *(unit * unit for unit in units[1:]),  # <measure>_squared
        1,  # client_count
        *(unit * unit for unit in units[1:]),  # client_<measure>_squared
        *(unit * units[1] for unit in units[2:]),  # client_<crash>_usage_hours
        *(1 for _ in units[2:]),  # client_<crash>_max: crash counts
    )


#: The legacy family's 35 units.
STAT_UNITS: tuple[int, ...] = stat_units()


def hash64(text: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike `hash`)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def client_hash(client_id: str | None) -> int:
    """A client's 63-bit hash; 0 stands for "no client id" (each such ping is its own client)."""
    if client_id is None:
        return 0
    return (hash64(client_id) & _CLIENT_MASK) or 1


class IdSet:
    """The document ids seen so far, as 64-bit hashes in a few sorted runs.

    Runs are merged when one is not more than twice the next (as in a log-structured merge
    tree), so there are O(log n) runs, lookups are vectorised binary searches, and the set costs
    8 bytes an id (16 while two runs merge). Two distinct ids collide with probability about
    n^2 / 2^65: one in 300,000 for a day of ten million pings.
    """

    def __init__(self) -> None:
        self._runs: list[U64] = []

    def __len__(self) -> int:
        return sum(int(run.size) for run in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(int(run.nbytes) for run in self._runs)

    def add(self, hashes: U64) -> npt.NDArray[np.bool_]:
        """Add ids in order; True where an id is new (its first copy, in this batch included)."""
        is_new = np.zeros(hashes.size, dtype=bool)
        if hashes.size == 0:
            return is_new
        unique, first = np.unique(hashes, return_index=True)
        seen = np.zeros(unique.size, dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, unique)
            pos[pos == run.size] = 0
            seen |= run[pos] == unique
        fresh = unique[~seen]
        is_new[first[~seen]] = True
        if fresh.size:
            self._runs.append(fresh)
            while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
                newer = self._runs.pop()
                older = self._runs.pop()
                merged = np.concatenate((older, newer))
                merged.sort(kind="stable")
                self._runs.append(merged)
        return is_new


class KeyIds:
    """Aggregate keys numbered in order of first sight, shared by the batches of one stretch of
    input (a file): a key crosses to the aggregator once a file rather than once a chunk.
    (With two workers, hashing the keys of every unpickled chunk took a third of the
    aggregating process's time.) `source` tells the aggregator whose numbers they are."""

    _next_source = 0

    def __init__(self) -> None:
        self.ids: dict[rules.Key, int] = {}
        self.keys: list[rules.Key] = []  # the keys not sent yet, numbered from `sent`
        self.sent = 0
        # One copy of each dimension value: each parsed line brings its own (a wide file held
        # ~700 bytes of strings a key), and a chunk's keys then pickle each value once.
        self._values: dict[object, object] = {}
        KeyIds._next_source += 1
        self.source = (os.getpid(), KeyIds._next_source)

    def id(self, key: rules.Key) -> int:
        found = self.ids.get(key)
        if found is None:
            setdefault = self._values.setdefault
            key = tuple(map(setdefault, key, key))
            found = self.ids[key] = len(self.ids)
            self.keys.append(key)
        return found

    def take_new(self) -> tuple[int, list[rules.Key]]:
        """The number of the first key not sent yet, and those keys."""
        first, keys = self.sent, self.keys
        self.sent, self.keys = len(self.ids), []
        return first, keys


@dataclass
class DateBatch:
    """Records of one submission date from one stretch of input.

    `counters` holds lines whose counter is final (malformed, other doc type...). Each record
    is a ping that reached the dedupe rule: its id hashes (document id, crash id: when it has
    them), its kind (index into main_processed, main_ignored, crash_processed, crash_ignored),
    and for processed pings its key's number in `key_ids`, its client hash and its measures.
    """

    family: str = families.DEFAULT
    key_ids: KeyIds = field(default_factory=KeyIds)
    counters: Counter[str] = field(default_factory=Counter)
    id_hash: list[int] = field(default_factory=list)
    has_id: list[bool] = field(default_factory=list)
    crash_hash: list[int] = field(default_factory=list)
    has_crash_id: list[bool] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    measures: list[int] = field(default_factory=list)
    _no_measures: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._no_measures = (0,) * len(families.family(self.family).MEASURES)

    def __len__(self) -> int:
        return len(self.kind)

    def add(self, outcome: rules.Outcome) -> None:
        code = KIND_CODE.get(outcome.counter)
        if code is None:
            self.counters[outcome.counter] += 1
            return
        self.kind.append(code)
        doc_id, crash_id = outcome.doc_id, outcome.crash_id
        self.has_id.append(doc_id is not None)
        self.id_hash.append(hash64(doc_id) if doc_id is not None else 0)
        self.has_crash_id.append(crash_id is not None)
        self.crash_hash.append(hash64(crash_id) if crash_id is not None else 0)
        if outcome.key is None or outcome.measures is None:
            self.key.append(-1)
            self.client.append(0)
            self.measures.extend(self._no_measures)
            return
        self.key.append(self.key_ids.id(outcome.key))
        self.client.append(client_hash(outcome.client_id))
        self.measures.extend(outcome.measures)

    def freeze(self) -> FrozenBatch:
        """The compact, picklable form sent from a worker to the aggregator."""
        first_key, keys = self.key_ids.take_new()
        return FrozenBatch(
            counters=dict(self.counters),
            keys=keys,
            first_key=first_key,
            source=self.key_ids.source,
            id_hash=np.array(self.id_hash, dtype=np.uint64),
            has_id=np.array(self.has_id, dtype=bool),
            crash_hash=np.array(self.crash_hash, dtype=np.uint64),
            has_crash_id=np.array(self.has_crash_id, dtype=bool),
            kind=np.array(self.kind, dtype=np.int8),
            key=np.array(self.key, dtype=np.int64),
            client=np.array(self.client, dtype=np.uint64),
            measures=np.array(self.measures, dtype=np.int64).reshape(
                -1, len(self._no_measures)),
        )


@dataclass(frozen=True)
class FrozenBatch:
    counters: dict[str, int]
    keys: list[rules.Key]  # the keys numbered `first_key`, `first_key` + 1... of `source`
    first_key: int
    source: tuple[int, int]
    id_hash: U64
    has_id: npt.NDArray[np.bool_]
    crash_hash: U64
    has_crash_id: npt.NDArray[np.bool_]
    kind: npt.NDArray[np.int8]
    key: I64
    client: U64
    measures: I64


class DateAggregator:
    """Folds the batches of one submission date into aggregates and counters."""

    def __init__(self, dedupe: bool = True, compact_every: int = 250_000,
                 max_aggregates: int | None = None, day: object = None,
                 family: str = families.DEFAULT) -> None:
        self._family = families.family(family)
        self._family_name = family
        self._units = stat_units(family)
        self._n_measures = len(self._family.MEASURES)
        self.counters: Counter[str] = Counter({name: 0 for name in self._family.COUNTERS})
        self._ids: IdSet | None = IdSet() if dedupe else None
        self._crash_ids: IdSet | None = IdSet() if dedupe else None
        self._key_ids: dict[rules.Key, int] = {}
        self._keys: list[rules.Key] = []
        self._key_tables: dict[tuple[int, int], I64] = {}  # a source's key numbers: ours
        self._values: dict[object, object] = {}  # one copy of each dimension value
        self._anonymous = 0
        self._compact_every = compact_every
        self._max_aggregates = (budget.default_max_aggregates() if max_aggregates is None
                                else max_aggregates)  # None: the memory budget (budget.py)
        self._day = day
        self.notes: list[str] = []  # what went wrong on the way: skipped corrupt files
        self._pending: list[tuple[I64, U64, I64]] = []  # (key id, client, per-ping measures)
        self._pending_rows = 0
        # (key id, client) partial sums: the measures then the per-ping squares of all but the
        # first, exact, one column each.
        self._partial_key: I64 = np.zeros(0, dtype=np.int64)
        self._partial_client: U64 = np.zeros(0, dtype=np.uint64)
        self._partial_sums: Columns = [np.zeros(0, dtype=np.int64)
                                       for _ in range(2 * self._n_measures - 1)]
        self._table: AggregateTable | None = None  # once made: `table`

    @property
    def dedupe_bytes(self) -> int:
        return sum(ids.nbytes for ids in (self._ids, self._crash_ids) if ids is not None)

    def add(self, batch: FrozenBatch) -> None:
        if self._table is not None:
            raise AssertionError("a batch was added to a date whose aggregates were made")
        self.counters.update(batch.counters)
        keep = self._dedupe(batch)
        kinds = np.bincount(batch.kind[keep], minlength=len(_KIND_COUNTERS))
        for code, name in enumerate(_KIND_COUNTERS):
            self.counters[name] += int(kinds[code])
        local_to_global = self._key_table(batch)
        rows = keep & (batch.key >= 0)
        if not rows.any():
            return
        key = local_to_global[batch.key[rows]]
        client = batch.client[rows].copy()
        anonymous = np.flatnonzero(client == 0)
        if anonymous.size:
            client[anonymous] = _ANONYMOUS | np.arange(
                self._anonymous, self._anonymous + anonymous.size, dtype=np.uint64
            )
            self._anonymous += int(anonymous.size)
        self._pending.append((key, client, batch.measures[rows]))
        self._pending_rows += int(key.size)
        if self._pending_rows >= self._compact_every:
            self._compact()

    def _dedupe(self, batch: FrozenBatch) -> npt.NDArray[np.bool_]:
        """Which records are kept: not a copy of a document id seen, and then, of those, not a
        copy of a crash id seen (a crash id counts as seen only once its ping was kept)."""
        keep = np.ones(batch.kind.size, dtype=bool)
        for ids, has, hashes in ((self._ids, batch.has_id, batch.id_hash),
                                 (self._crash_ids, batch.has_crash_id, batch.crash_hash)):
            if ids is None or not has.any():
                continue
            candidates = np.flatnonzero(keep & has)
            is_new = ids.add(hashes[candidates])
            keep[candidates[~is_new]] = False
            self.counters[rules.DUPLICATES] += int((~is_new).sum())
        return keep

    def _key_table(self, batch: FrozenBatch) -> I64:
        """Our number of each of the batch's source's key numbers, with the batch's new keys."""
        table = self._key_tables.get(batch.source, np.zeros(0, dtype=np.int64))
        if table.size != batch.first_key:
            raise AssertionError("a stretch of input's batches were folded out of order")
        if batch.keys:
            numbers = self._key_ids_of(batch.keys)
            table = np.concatenate((table, numbers)) if table.size else numbers
            self._key_tables[batch.source] = table
        return table

    def _key_ids_of(self, keys: list[rules.Key]) -> I64:
        """Our numbers of these keys, the new ones numbered as they come."""
        ids, known, setdefault = self._key_ids, self._keys, self._values.setdefault
        get, append = ids.get, known.append
        numbers = np.empty(len(keys), dtype=np.int64)
        for index, key in enumerate(keys):
            found = get(key)
            if found is None:
                if len(known) >= self._max_aggregates:
                    raise TooManyAggregates(self._too_many())
                # Each unpickled chunk brings its own copies of the dimension values: keep one
                # of each, or a wide day holds a dozen strings (~700 bytes) per aggregate.
                key = tuple(map(setdefault, key, key))
                found = ids[key] = len(known)
                append(key)
            numbers[index] = found
        return numbers

    def _too_many(self) -> str:
        """Which dimension blew up: garbage values are what usually does it."""
        names = self._family.DIMENSION_NAMES
        distinct = [len({key[i + 1] for key in self._keys}) for i in range(len(names))]
        worst = max(range(len(distinct)), key=distinct.__getitem__)
        where = f"{self._day}: " if self._day is not None else ""
        return (f"{where}more than {self._max_aggregates:,} distinct aggregates; "
                f"{names[worst]} alone has {distinct[worst]:,} values: "
                f"garbage in the pings? {budget.explain(self._max_aggregates)}")

    def _compact(self) -> None:
        """Sum rows of the same (key, client) into one."""
        if not self._pending:
            return
        key = np.concatenate((self._partial_key, *(p[0] for p in self._pending)))
        client = np.concatenate((self._partial_client, *(p[1] for p in self._pending)))
        measures = np.concatenate([p[2] for p in self._pending])
        self._pending.clear()
        self._pending_rows = 0
        columns = [measures[:, i] for i in range(self._n_measures)]
        fresh: Columns = [*columns, *(_square(column) for column in columns[1:])]
        del measures, columns
        order = np.lexsort((client, key))
        key, client = key[order], client[order]
        starts = _group_starts(key, client)
        self._partial_key = key[starts]
        self._partial_client = client[starts]
        sums: Columns = []
        for old in self._partial_sums:  # one column at a time: temporaries stay small
            new = fresh.pop(0)
            sums.append(_group_sums(_take(_concat(old, new), order), starts))
        self._partial_sums = sums

    def finish(self) -> list[Aggregate]:
        """The aggregates of this date, sorted by key."""
        return list(self.table())

    def table(self) -> AggregateTable:
        """The aggregates of this date, sorted by key, in arrays (`AggregateTable`).

        Made once: it consumes the partial sums and the keys as it goes (a wide day's peak
        memory is here), one stat column at a time, each written in row order; after it no
        batch can be added."""
        if self._table is not None:
            return self._table
        self._compact()
        key, clients, per_client = self._partial_key, self._partial_client, self._partial_sums
        all_keys = self._keys
        self._key_ids, self._key_tables, self._values, self._keys = {}, {}, {}, []
        self._partial_key = np.zeros(0, dtype=np.int64)
        self._partial_client = np.zeros(0, dtype=np.uint64)
        self._partial_sums = []
        if key.size == 0:
            self._table = AggregateTable(self._family_name, [],
                                         np.zeros((0, len(self._units))), {})
            return self._table
        starts = _group_starts(key)
        keys = [all_keys[key_id] for key_id in key[starts].tolist()]
        del key, all_keys
        order = _row_order(keys, self._family.DIMENSION_NAMES)
        keys = [keys[i] for i in order.tolist()]
        measures = [_plain(column) for column in per_client[:self._n_measures]]
        crashes = measures[2:]
        matrix = np.empty((starts.size, len(self._units)), dtype=np.float64)
        for index, total in enumerate(_totals(per_client, measures, starts)):
            matrix[:, index] = _stat_column(total[order], self._units[index])
        del per_client, measures
        groups = _group_sketches(clients, crashes, starts, self._family.CRASH_MEASURES, order)
        self._table = AggregateTable(self._family_name, keys, matrix, groups)
        return self._table


def _group_sketches(clients: U64, crashes: Sequence[Ints], starts: I64, crash_names: Sequence[str],
                    order: I64 | None = None) -> dict[str, list[bytes | None]]:
    """Per run of `starts` (one aggregate's clients), its sketches, one column a sketch name:
    of its clients with a client id, and per crash measure of those with at least one such
    crash; the runs taken in `order` (default: as they come).

    An aggregate of one named client (most of a wide day's) has that client's sketch or None
    in each column: each such client's sketch is made once, and shared. The columns are
    gathered from the sketches made, by number, with numpy (a Python loop an aggregate took
    ~2 µs beyond the sketches)."""
    named = (clients >> np.uint64(63)) == 0  # anonymous pings are in no sketch
    crashed = [np.asarray(column > 0, dtype=bool) & named for column in crashes]
    # only the aggregates with a crash of a kind make that kind's sketch: most have none
    has_crash = [np.add.reduceat(flags.astype(np.int64), starts) > 0 for flags in crashed]
    sizes = np.diff(np.append(starts, clients.size))
    alone = (sizes == 1) & named[starts]  # one client, with a client id
    distinct, which = np.unique(clients[starts[alone]], return_inverse=True)
    made: list[bytes | None] = [sketches.sketch_of(distinct[i:i + 1], distinct_sorted=True)
                                for i in range(distinct.size)]
    none = len(made)
    made.append(None)
    refs = [np.full(starts.size, none, dtype=np.int64) for _ in range(1 + len(crashes))]
    refs[0][alone] = which
    for ref, any_crash in zip(refs[1:], has_crash, strict=True):
        ref[alone & any_crash] = refs[0][alone & any_crash]
    del which
    for index in np.flatnonzero(sizes > 1).tolist():  # the others, as they are
        start, end = int(starts[index]), int(starts[index]) + int(sizes[index])
        group = clients[start:end]  # ascending, each client once: (key, client) partials
        wanted = [True, *(bool(any_crash[index]) for any_crash in has_crash)]
        for ref, flags, want in zip(refs, [named, *crashed], wanted, strict=True):
            if want:
                ref[index] = len(made)
                made.append(sketches.sketch_of(group[flags[start:end]], distinct_sorted=True))
    pool = np.empty(len(made), dtype=object)
    pool[:] = made
    del made
    return {name: pool[ref if order is None else ref[order]].tolist()
            for name, ref in zip((sketches.CLIENTS, *crash_names), refs, strict=True)}


def stats_from_totals(totals: Sequence[int], family: str = families.DEFAULT
                      ) -> dict[str, float]:
    """One aggregate's stats from its exact integer totals (in STATS order), each divided
    once by its unit; Python's int / int is correctly rounded, as `_stat_column` is."""
    units = stat_units(family)
    return dict(zip(families.family(family).STATS,
                    (total / unit for total, unit in zip(totals, units, strict=True)),
                    strict=True))


def _stat_column(totals: Ints, unit: int) -> npt.NDArray[np.float64]:
    """Integer totals as a stat, each total divided once by its unit, correctly rounded: as
    doubles when the totals and the unit are all exact as doubles (IEEE division is then
    correctly rounded too), else in Python integers (whose quotient is a double too)."""
    if totals.dtype != object and _largest(totals) <= _DOUBLE_EXACT and unit <= _DOUBLE_EXACT:
        quotient: npt.NDArray[np.float64] = totals.astype(np.float64) / float(unit)
        return quotient
    return np.array([total / unit for total in totals.tolist()], dtype=np.float64)


def _totals(per_client: Columns, measures: Sequence[Ints], starts: I64) -> Iterator[Ints]:
    """Each stat's integer totals per run of `starts`, in STATS order, one column at a time
    (its temporaries gone before the next), from the per-client sums: the measures then the
    per-ping squares (`per_client`, emptied as it goes; `measures`: its first columns plain)."""
    usage = measures[1]
    while per_client:
        yield _plain(_group_sums(per_client.pop(0), starts))
    yield np.diff(np.append(starts, usage.size))  # client_count: the clients of each run
    for measure in measures[1:]:  # client_<measure>_squared
        yield _plain(_group_sums(_square(measure), starts))
    for crashes in measures[2:]:  # client_<crash>_usage
        yield _plain(_group_sums(_product(crashes, usage), starts))
    for crashes in measures[2:]:  # client_<crash>_max: the largest client's count
        yield np.maximum.reduceat(crashes, starts)


def _largest(values: Ints) -> int:
    return int(values.max()) if values.size else 0


def _as_python_ints(values: Ints) -> Ints:
    return values if values.dtype == object else values.astype(object)


def _product(a: Ints, b: Ints) -> Ints:
    """a * b exactly, for two columns (values are never negative): in int64 when no product
    can overflow, else in Python integers."""
    if a.dtype != object and b.dtype != object and _largest(a) * _largest(b) < _INT64_SAFE:
        return a * b
    return _as_python_ints(a) * _as_python_ints(b)


def _square(values: Ints) -> Column:
    """values * values exactly (values are never negative): in int64 when no square can
    overflow, as limbs when every value is below 2^48, else in Python integers."""
    if values.dtype != object:
        largest = _largest(values)
        if largest * largest < _INT64_SAFE:
            return values * values
        if largest < _LIMB_BELOW:
            return Limbs.of(values)
    return _product(values, values)


def _plain(column: Column) -> Ints:
    """A column as int64 or Python integers (limbs added up)."""
    return column.total() if isinstance(column, Limbs) else column


def _concat(first: Column, second: Column) -> Column:
    """Two columns one after the other, in the wider of their forms (int64, then limbs, then
    Python integers)."""
    if isinstance(first, Limbs) or isinstance(second, Limbs):
        if any(not isinstance(c, Limbs) and c.dtype == object for c in (first, second)):
            return np.concatenate((_plain(first), _plain(second)))
        a, b = (c if isinstance(c, Limbs) else Limbs.lift(c) for c in (first, second))
        return Limbs(tuple(np.concatenate(pair) for pair in zip(a.parts, b.parts, strict=True)))
    return np.concatenate((first, second))


def _take(column: Column, order: I64) -> Column:
    if isinstance(column, Limbs):
        return Limbs(tuple(part[order] for part in column.parts))
    return column[order]


def _group_sums(values: Column, starts: I64) -> Column:
    """Exact sums of the runs of a column that begin at `starts` (values are never negative):
    in int64 when even the column's whole sum cannot overflow, else in Python integers."""
    if isinstance(values, Limbs):
        parts = [_plain(_group_sums(part, starts)) for part in values.parts]
        summed = Limbs(tuple(parts))
        return summed.total() if any(part.dtype == object for part in parts) else summed
    if values.dtype != object and values.size and \
            float(values.sum(dtype=np.float64)) >= _INT64_SAFE:
        values = values.astype(object)
    summed_values: Ints = np.add.reduceat(values, starts)
    return summed_values


def _group_starts(*sorted_columns: npt.NDArray[Any]) -> I64:
    """Indexes where a run of equal values (over all columns) starts."""
    size = sorted_columns[0].size
    change = np.zeros(size, dtype=bool)
    change[0] = True
    for column in sorted_columns:
        change[1:] |= column[1:] != column[:-1]
    return np.flatnonzero(change)


def _row_order(keys: Sequence[rules.Key], names: Sequence[str]) -> I64:
    """The order of the rows of these keys by activity date, then their present dimensions as
    sorted (name, value) pairs (`stores.base.row_sort_key`), made without the rows.

    That is the order of one code a dimension, dimensions by name (stable sorts of the codes,
    least significant first): a present value's rank among the dimension's values; an absent
    one, before them all when no later dimension is present (the key's pairs end there: a
    prefix sorts first), after them all when one is (the next pair's name sorts after this
    one's). A Python sort key a row cost ~200 bytes and ~4 µs an aggregate; values other than
    strings (dates: integers) take `_row_order_by_key`."""
    size = len(keys)
    order = np.arange(size, dtype=np.int64)
    later_present = np.zeros(size, dtype=bool)  # a dimension after this one is present
    by_name = sorted(range(len(names)), key=names.__getitem__)
    for position in [index + 1 for index in reversed(by_name)] + [0]:
        values = [key[position] for key in keys]
        distinct = set(values)
        absent = None in distinct
        distinct.discard(None)
        if any(type(value) is not (str if position else int) for value in distinct) or (
                absent and not position):
            return _row_order_by_key(keys, names)
        rank: dict[Any, int] = {value: number for number, value in enumerate(sorted(distinct), 1)}
        rank[None] = 0
        codes = np.fromiter(map(rank.__getitem__, values), dtype=np.int64, count=size)
        del values
        if absent:
            present = codes != 0
            codes[~present & later_present] = len(rank)
            later_present |= present
        else:
            later_present[:] = True
        if size and codes.min() != codes.max():
            order = order[np.argsort(codes[order], kind="stable")]
    return order


def _row_order_by_key(keys: Sequence[rules.Key], names: Sequence[str]) -> I64:
    """`_row_order` by a Python sort key a row: each (name, value) pair kept once, so the sort
    holds a tuple of references a key."""
    by_name = sorted(range(len(names)), key=names.__getitem__)
    pairs: dict[tuple[str, Any], tuple[str, Any]] = {}

    def order(key: rules.Key) -> tuple[int, tuple[tuple[str, Any], ...]]:
        present = []
        for index in by_name:
            value = key[index + 1]
            if value is not None:
                pair = (names[index], value)
                present.append(pairs.setdefault(pair, pair))
        return key[0], tuple(present)

    return np.array(sorted(range(len(keys)), key=lambda i: order(keys[i])), dtype=np.int64)
