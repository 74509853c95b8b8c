"""Summing rule outcomes into aggregates: dedupe, per-client sums, the 29 stats.

Workers turn lines into `Batch`es of compact per-ping records (numpy arrays, ~90 bytes a
ping); one `DateAggregator` per submission date folds batches in, in any order:

1. dedupe (rule 4) against every document id seen this date: 8 bytes an id, see `IdSet`;
2. count each kept record in its counter;
3. keep processed records as (key, client) partial sums, compacted from time to time, so memory
   grows with the number of distinct (aggregate, client) pairs, not with the input;
4. at the end, sum the partials per key into the 29 stats of docs/rules.md.

Every sum is exact: measures are integers (usage in seconds, `rules.MEASURES`) summed as int64,
or as Python integers where int64 could overflow (hostile crash counts), and each stat is its
integer total divided once by its unit. So no row depends on the order in which batches arrive
(how files were split among workers), and the Spark engine, which sums the same integers,
gives the same floats to the last bit.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import rules
from .errors import CrashAggregatesError


class TooManyAggregates(CrashAggregatesError):
    """A date has more distinct aggregates than allowed: the cardinality guard."""

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
#: Exact integers: int64, or Python integers (dtype object) once int64 could overflow.
Ints = npt.NDArray[Any]

_N_MEASURES = len(rules.MEASURES)
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
_UNITS = rules.MEASURE_UNITS
#: The unit of each of the 29 stats, in per-ping measure units: a stat is its total / its unit.
STAT_UNITS: tuple[int, ...] = (
    *_UNITS,
    *(unit * unit for unit in _UNITS[1:]),  # <measure>_squared
    1,  # client_count
    *(unit * unit for unit in _UNITS[1:]),  # client_<measure>_squared
    *(unit * _UNITS[1] for unit in _UNITS[2:]),  # client_<crash>_usage_hours
)
_STAT_UNITS_F = np.array(STAT_UNITS, dtype=np.float64)


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


@dataclass
class DateBatch:
    """Records of one submission date from one stretch of input.

    `counters` holds lines whose counter is final (malformed, other doc type...). Each record
    is a ping that reached rule 4: its id hash (when it has an id), its kind (index into
    main_processed, main_ignored, crash_processed, crash_ignored), and for processed pings the
    index of its key in `keys`, its client hash and its measures.
    """

    counters: Counter[str] = field(default_factory=Counter)
    keys: list[rules.Key] = field(default_factory=list)
    key_index: dict[rules.Key, int] = field(default_factory=dict)
    id_hash: list[int] = field(default_factory=list)
    has_id: list[bool] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    measures: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.kind)

    def add(self, outcome: rules.Outcome) -> None:
        code = KIND_CODE.get(outcome.counter)
        if code is None:
            self.counters[outcome.counter] += 1
            return
        self.kind.append(code)
        doc_id = outcome.doc_id
        self.has_id.append(doc_id is not None)
        self.id_hash.append(hash64(doc_id) if doc_id is not None else 0)
        if outcome.key is None or outcome.measures is None:
            self.key.append(-1)
            self.client.append(0)
            self.measures.extend((0,) * _N_MEASURES)
            return
        index = self.key_index.get(outcome.key)
        if index is None:
            index = self.key_index[outcome.key] = len(self.keys)
            self.keys.append(outcome.key)
        self.key.append(index)
        self.client.append(client_hash(outcome.client_id))
        self.measures.extend(outcome.measures)

    def freeze(self) -> FrozenBatch:
        """The compact, picklable form sent from a worker to the aggregator."""
        return FrozenBatch(
            counters=dict(self.counters),
            keys=self.keys,
            id_hash=np.array(self.id_hash, dtype=np.uint64),
            has_id=np.array(self.has_id, dtype=bool),
            kind=np.array(self.kind, dtype=np.int8),
            key=np.array(self.key, dtype=np.int64),
            client=np.array(self.client, dtype=np.uint64),
            measures=np.array(self.measures, dtype=np.int64).reshape(-1, _N_MEASURES),
        )


@dataclass(frozen=True)
class FrozenBatch:
    counters: dict[str, int]
    keys: list[rules.Key]
    id_hash: U64
    has_id: npt.NDArray[np.bool_]
    kind: npt.NDArray[np.int8]
    key: I64
    client: U64
    measures: I64


@dataclass(frozen=True)
class Aggregate:
    """One output row: activity date, dimensions and the 29 stats."""

    activity_date: str
    dimensions: dict[str, str]
    stats: dict[str, float]


class DateAggregator:
    """Folds the batches of one submission date into aggregates and counters."""

    def __init__(self, dedupe: bool = True, compact_every: int = 1_000_000,
                 max_aggregates: int = 2_000_000, day: object = None) -> None:
        self.counters: Counter[str] = Counter({name: 0 for name in rules.COUNTERS})
        self._ids: IdSet | None = IdSet() if dedupe else None
        self._key_ids: dict[rules.Key, int] = {}
        self._keys: list[rules.Key] = []
        self._anonymous = 0
        self._compact_every = compact_every
        self._max_aggregates = max_aggregates
        self._day = day
        self.notes: list[str] = []  # what went wrong on the way: skipped corrupt files
        self._pending: list[tuple[I64, U64, Ints]] = []
        self._pending_rows = 0
        # (key id, client) partial sums: the 8 measures then 7 per-ping squares, exact.
        self._partial_key: I64 = np.zeros(0, dtype=np.int64)
        self._partial_client: U64 = np.zeros(0, dtype=np.uint64)
        self._partial_sums: Ints = np.zeros((0, 2 * _N_MEASURES - 1), dtype=np.int64)

    @property
    def dedupe_bytes(self) -> int:
        return self._ids.nbytes if self._ids is not None else 0

    def add(self, batch: FrozenBatch) -> None:
        self.counters.update(batch.counters)
        keep = np.ones(batch.kind.size, dtype=bool)
        if self._ids is not None and batch.has_id.any():
            with_id = np.flatnonzero(batch.has_id)
            is_new = self._ids.add(batch.id_hash[with_id])
            keep[with_id[~is_new]] = False
            self.counters[rules.DUPLICATES] += int((~is_new).sum())
        kinds = np.bincount(batch.kind[keep], minlength=len(_KIND_COUNTERS))
        for code, name in enumerate(_KIND_COUNTERS):
            self.counters[name] += int(kinds[code])
        rows = keep & (batch.key >= 0)
        if not rows.any():
            return
        local_to_global = np.array([self._key_id(k) for k in batch.keys], dtype=np.int64)
        key = local_to_global[batch.key[rows]]
        client = batch.client[rows].copy()
        anonymous = np.flatnonzero(client == 0)
        if anonymous.size:
            client[anonymous] = _ANONYMOUS | np.arange(
                self._anonymous, self._anonymous + anonymous.size, dtype=np.uint64
            )
            self._anonymous += int(anonymous.size)
        measures = batch.measures[rows]
        sums = np.concatenate((measures, _product(measures[:, 1:], measures[:, 1:])), axis=1)
        self._pending.append((key, client, sums))
        self._pending_rows += int(key.size)
        if self._pending_rows >= self._compact_every:
            self._compact()

    def _key_id(self, key: rules.Key) -> int:
        found = self._key_ids.get(key)
        if found is None:
            if len(self._keys) >= self._max_aggregates:
                raise TooManyAggregates(self._too_many())
            found = self._key_ids[key] = len(self._keys)
            self._keys.append(key)
        return found

    def _too_many(self) -> str:
        """Which dimension blew up: garbage values are what usually does it."""
        distinct = [len({key[i + 1] for key in self._keys}) for i in range(len(rules.DIMENSIONS))]
        worst = max(range(len(distinct)), key=distinct.__getitem__)
        where = f"{self._day}: " if self._day is not None else ""
        return (f"{where}more than {self._max_aggregates:,} distinct aggregates; "
                f"{rules.DIMENSION_NAMES[worst]} alone has {distinct[worst]:,} values: "
                f"garbage in the pings? (--max-aggregates raises the limit)")

    def _compact(self) -> None:
        """Sum rows of the same (key, client) into one."""
        if not self._pending:
            return
        key = np.concatenate((self._partial_key, *(p[0] for p in self._pending)))
        client = np.concatenate((self._partial_client, *(p[1] for p in self._pending)))
        sums = np.concatenate((self._partial_sums, *(p[2] for p in self._pending)))
        self._pending.clear()
        self._pending_rows = 0
        order = np.lexsort((client, key))
        key, client, sums = key[order], client[order], sums[order]
        starts = _group_starts(key, client)
        self._partial_key = key[starts]
        self._partial_client = client[starts]
        self._partial_sums = _group_sums(sums, starts)

    def finish(self) -> list[Aggregate]:
        """The aggregates of this date, sorted by key."""
        self._compact()
        key, per_client = self._partial_key, self._partial_sums
        if key.size == 0:
            return []
        starts = _group_starts(key)
        measures = per_client[:, :_N_MEASURES]
        usage = measures[:, 1:2]
        crashes = measures[:, 2:]
        stacked = np.concatenate(
            (
                per_client,  # 8 sums, then 7 per-ping squares
                np.ones((key.size, 1), dtype=np.int64),  # client_count
                _product(measures[:, 1:], measures[:, 1:]),  # client_<measure>_squared
                _product(crashes, usage),  # client_<crash>_usage_hours
            ),
            axis=1,
        )
        totals = _group_sums(stacked, starts)
        out: list[Aggregate] = []
        for key_id, values in zip(key[starts].tolist(), _stat_rows(totals), strict=True):
            activity, dims = rules.key_to_row(self._keys[key_id])
            out.append(Aggregate(activity, dims, dict(zip(rules.STATS, values, strict=True))))
        out.sort(key=_row_order)
        return out


def stats_from_totals(totals: Sequence[int]) -> dict[str, float]:
    """One aggregate's 29 stats from its exact integer totals (in STATS order), each divided
    once by its unit; Python's int / int is correctly rounded, as `_stat_rows` is."""
    return dict(zip(rules.STATS, (total / unit for total, unit in
                                  zip(totals, STAT_UNITS, strict=True)), strict=True))


def _stat_rows(totals: Ints) -> list[list[float]]:
    """Each row of integer totals as its stats: as doubles when every total is exact as one
    (IEEE division is then correctly rounded too), else in Python integers."""
    if totals.dtype != object and _largest(totals) <= _DOUBLE_EXACT:
        rows: list[list[float]] = (totals.astype(np.float64) / _STAT_UNITS_F).tolist()
        return rows
    return [[total / unit for total, unit in zip(row, STAT_UNITS, strict=True)]
            for row in totals.tolist()]


def _largest(values: Ints) -> int:
    return int(values.max()) if values.size else 0


def _as_python_ints(values: Ints) -> Ints:
    return values if values.dtype == object else values.astype(object)


def _product(a: Ints, b: Ints) -> Ints:
    """a * b exactly (values are never negative): in int64 when no product can overflow,
    else in Python integers."""
    if a.dtype != object and b.dtype != object and _largest(a) * _largest(b) < _INT64_SAFE:
        return a * b
    return _as_python_ints(a) * _as_python_ints(b)


def _group_sums(values: Ints, starts: I64) -> Ints:
    """Exact sums of the runs of rows that begin at `starts` (values are never negative): in
    int64 when even a column's whole sum cannot overflow, else in Python integers."""
    if values.dtype != object and values.size and \
            float(values.sum(axis=0, dtype=np.float64).max()) >= _INT64_SAFE:
        values = values.astype(object)
    return np.add.reduceat(values, starts, axis=0)


def _group_starts(*sorted_columns: npt.NDArray[Any]) -> I64:
    """Indexes where a run of equal values (over all columns) starts."""
    size = sorted_columns[0].size
    change = np.zeros(size, dtype=bool)
    change[0] = True
    for column in sorted_columns:
        change[1:] |= column[1:] != column[:-1]
    return np.flatnonzero(change)


def _row_order(row: Aggregate) -> tuple[str, list[tuple[str, str]]]:
    return row.activity_date, sorted(row.dimensions.items())
