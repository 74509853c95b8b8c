"""Distinct clients that merge across any selection: Apache DataSketches HLL sketches.

`client_count` counts a client once within one aggregate, so adding it over aggregates (two
days, two countries) counts a client active in both twice. Each aggregate row therefore also
carries sketches of its clients: `clients`, every client with a ping in it, and per crash
measure (`main_crashes`...), the clients with at least one such crash. A union of the sketches
of any set of rows estimates the distinct clients of that set, each counted once.

A client is its 64-bit client hash (`aggregation.client_hash`, the same in both engines),
given to the sketch as a signed 64-bit integer, which DataSketches hashes as Java's
`HllSketch.update(long)` does. Pings without a client id are in no sketch: nothing tells two of
them apart as clients. The hashes go in ascending order, so that both engines write the same
bytes.

HLL with lg_k = 14, HLL_4 (docs/rates.md, "Crash-free users"): exact in its list and set modes
(up to about 1,500 clients here), then a relative standard error of about 0.8%; the compact
serialization of a sketch of n < 1,500 clients is 8 + 4n bytes, at most 8 KB beyond. HLL
rather than CPC (smaller for the same error) because Spark's own `hll_union_agg` and
`hll_sketch_estimate` read these bytes: a user of the Parquet output merges them with no code
of ours. A crash measure nobody had stores no sketch (NULL), not an empty one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import faults, interrupts

LG_K = 14
CLIENTS = "clients"
#: Standard deviations of the bounds DataSketches gives: 2, about a 95% interval.
_BOUND_STD_DEVS = 2


SKETCHES_IMPORT = faults.define("sketches.import", "DataSketches, a pybind11 extension, is "
                                "about to be imported (a KeyboardInterrupt inside its module "
                                "init aborted the process)")


@functools.cache
def _lib() -> Any:
    with interrupts.held():  # an interrupt comes after the import, not inside it
        faults.fault_point(SKETCHES_IMPORT)
        import datasketches  # lazily: only a fill, `rates` and the views' readers need it

    return datasketches


def names(crash_measures: Iterable[str]) -> tuple[str, ...]:
    """The sketches of a family's rows: `clients`, then one per crash measure."""
    return (CLIENTS, *crash_measures)


def column(name: str) -> str:
    """The store column (and Parquet field) holding sketch `name`."""
    return f"{name}_sketch" if name == CLIENTS else f"{name}_clients_sketch"


def sketch_of(hashes: npt.NDArray[np.uint64], distinct_sorted: bool = False) -> bytes | None:
    """The compact serialization of a sketch of these client hashes (any order, repeats
    allowed; or, with `distinct_sorted`, already ascending without repeats, as an aggregator's
    per-client partials are: np.unique's own cost was half of a small sketch's); None for none."""
    if hashes.size == 0:
        return None
    lib = _lib()
    sketch = lib.hll_sketch(LG_K, lib.tgt_hll_type.HLL_4)
    update = sketch.update
    ordered = hashes if distinct_sorted else np.unique(hashes)
    for value in ordered.view(np.int64).tolist():
        update(value)
    data: bytes = sketch.serialize_compact()
    return data


@dataclass(frozen=True)
class Distinct:
    """An estimated number of distinct clients, with DataSketches' ~95% bounds."""

    estimate: float
    lower: float
    upper: float

    @property
    def count(self) -> int:
        return round(self.estimate)


NONE = Distinct(0.0, 0.0, 0.0)


def merge(blobs: Iterable[bytes | None]) -> Distinct:
    """The distinct clients of the union of these sketches (None: a row without any)."""
    lib = _lib()
    union = None
    for blob in blobs:
        if blob is None:
            continue
        if union is None:
            union = lib.hll_union(LG_K)
        union.update(lib.hll_sketch.deserialize(bytes(blob)))
    if union is None:
        return NONE
    result = union.get_result(lib.tgt_hll_type.HLL_4)
    return Distinct(result.get_estimate(), result.get_lower_bound(_BOUND_STD_DEVS),
                    result.get_upper_bound(_BOUND_STD_DEVS))
