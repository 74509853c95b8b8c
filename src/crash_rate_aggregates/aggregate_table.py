"""A date's aggregates as the stores write them: `Aggregate`, one row, and `AggregateTable`,
a day's rows in arrays (`DateAggregator.table()`), read by the stores a block of rows at a time
(`stats_json`, `dimensions_json`, `dimension_items`...) without an `Aggregate` a row.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from . import families, rules


@dataclass(frozen=True)
class Aggregate:
    """One output row: activity date, dimensions and the family's stats."""

    activity_date: str
    dimensions: dict[str, str]
    stats: dict[str, float]
    #: Distinct-client sketches by name (`sketches.names`): None where no client had any.
    #: Not compared: rows equal by their stats; tests compare the sketches' estimates.
    sketches: dict[str, bytes | None] = field(default_factory=dict, compare=False)


class AggregateTable(Sequence[Aggregate]):
    """A date's aggregates in arrays: keys, a float64 row of stats each, sketch columns. An
    `Aggregate` is made only when a row is read, as the stores read them, one at a time: as
    objects (a dict of stats each) a wide day cost ~3 KB an aggregate, here ~8 bytes a stat."""

    def __init__(self, family: str, keys: list[rules.Key], stats: npt.NDArray[np.float64],
                 sketches: dict[str, list[bytes | None]]) -> None:
        self._family = families.family(family)
        self._family_name = family
        self._keys = keys  # in row order
        self._stats = stats  # one row an aggregate, the family's STATS order
        self._sketches = sketches  # by sketch name, one entry an aggregate

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> Aggregate: ...

    @overload
    def __getitem__(self, index: slice) -> list[Aggregate]: ...

    def __getitem__(self, index: int | slice) -> Aggregate | list[Aggregate]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        activity, dims = self._family.key_to_row(self._keys[index])
        stats = dict(zip(self._family.STATS, self._stats[index].tolist(), strict=True))
        return Aggregate(activity, dims, stats,
                         {name: column[index] for name, column in self._sketches.items()})

    def __iter__(self) -> Iterator[Aggregate]:
        return (self[index] for index in range(len(self)))

    # Columnar reads, for the stores to write a day without an `Aggregate` (or a dict) a row:
    # each takes the rows [start, stop) and returns what the Aggregate path would have made of
    # each row (the stores write a day a chunk of rows at a time).

    @property
    def family(self) -> str:
        """The ping family's name (`families.FAMILIES`)."""
        return self._family_name

    @property
    def stats(self) -> npt.NDArray[np.float64]:
        """The stats, one row an aggregate, one column a stat in the family's STATS order."""
        return self._stats

    def sketch_column(self, name: str, start: int = 0, stop: int | None = None
                      ) -> list[bytes | None]:
        """One sketch's entries (None where no client had any; all None for a name the table
        has no column of, as `Aggregate.sketches.get`)."""
        column = self._sketches.get(name)
        if column is None:
            return [None] * len(range(*slice(start, stop).indices(len(self))))
        return column[start:stop]

    def activity_dates(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Each row's activity date, as `key_to_row` spells it."""
        ordinals = [key[0] for key in self._keys[start:stop]]
        text = {ordinal: self._activity_text(ordinal) for ordinal in set(ordinals)}
        return list(map(text.__getitem__, ordinals))

    def distinct_activity_dates(self) -> set[str]:
        """The activity dates of the rows, each once."""
        return {self._activity_text(ordinal) for ordinal in {key[0] for key in self._keys}}

    def _activity_text(self, ordinal: Any) -> str:
        empty = (None,) * len(self._family.DIMENSION_NAMES)
        return self._family.key_to_row((ordinal, *empty))[0]

    def dimensions_json(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Each row's present dimensions as orjson writes its `Aggregate.dimensions` with
        sorted keys: the dict is made in sorted order, so orjson has nothing to sort. (Made
        a column at a time instead, each distinct value's text once, it took twice as long.)"""
        names, places = _sorted_dimensions(self._family_name)
        pick = operator.itemgetter(*places)
        dumps = orjson.dumps
        # (both of a family's length: strict=True cost a sixth of the time)
        return [dumps({name: value for name, value in zip(names, pick(key), strict=False)
                       if value is not None}) for key in self._keys[start:stop]]

    def dimension_items(self, start: int = 0, stop: int | None = None
                        ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.intp],
                                   npt.NDArray[Any]]:
        """The rows' dimensions as a map column (their `Aggregate.dimensions` order, the
        family's DIMENSION_NAMES order, absent ones left out): offsets (one more than rows:
        row i's entries are [offsets[i], offsets[i + 1])), then per entry the index of its
        name in DIMENSION_NAMES and its value (an object array of str)."""
        width = len(self._family.DIMENSION_NAMES)
        keys = self._keys[start:stop]
        values = np.empty((len(keys), width), dtype=object)
        for index in range(width):
            values[:, index] = [key[index + 1] for key in keys]
        present = np.not_equal(values, np.array(None, dtype=object))
        offsets = np.zeros(len(keys) + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        return offsets, np.nonzero(present)[1], values[present]

    def stats_json(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Each row's stats as orjson writes its `Aggregate.stats` with sorted keys: the block
        of rows written by orjson as one array (its numpy floats are written as it writes
        Python floats, NaN and infinities as null), each row's numbers then put in a template
        of the sorted names."""
        order, template = _stats_template(self._family_name)
        block = np.ascontiguousarray(self._stats[start:stop][:, order], dtype=np.float64)
        if block.shape[0] == 0:
            return []
        text = orjson.dumps(block, option=orjson.OPT_SERIALIZE_NUMPY)
        return [template % tuple(row.split(b",")) for row in text[2:-2].split(b"],[")]


@functools.cache
def _sorted_dimensions(family: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A family's dimension names sorted (orjson's OPT_SORT_KEYS order), and where each one's
    value is in a key (after the activity date)."""
    names = families.family(family).DIMENSION_NAMES
    order = sorted(range(len(names)), key=names.__getitem__)
    return tuple(names[i] for i in order), tuple(i + 1 for i in order)


@functools.cache
def _stats_template(family: str) -> tuple[list[int], bytes]:
    """A family's stats in sorted order (their columns), and the JSON object of one row with
    a `%s` for each number."""
    names = families.family(family).STATS
    order = sorted(range(len(names)), key=names.__getitem__)
    pairs = b",".join(orjson.dumps(names[i]) + b":%b" for i in order)
    return order, b"{" + pairs + b"}"
