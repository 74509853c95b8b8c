"""Ping families: one module per ping format, each of the same shape.

A family module holds its counters (`COUNTERS`, the legacy names), its dimension table
(`DIMENSIONS`, `DIMENSION_NAMES`), its measures and stats (`MEASURES`, `MEASURE_UNITS`,
`SQUARED_MEASURES`, `CRASH_MEASURES`, `STATS`), whether its outcomes carry a second
duplicate key (`CRASH_IDS`: `Outcome.crash_id`), and two functions: `evaluate_line`, one line to
an `Outcome` (the engines' call), and `key_to_row`, an aggregate key to its stored form.
`rules` is the legacy family (SPEC sections 3 to 5), `families.glean` the Glean one (section 8).
Adding a family is one new module and one line in `FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import date
from typing import Protocol

from .. import rules
from ..errors import UsageError
from . import glean


class Family(Protocol):
    """What an engine, store or consumer may use of a family module."""

    COUNTERS: tuple[str, ...]
    DIMENSION_NAMES: tuple[str, ...]
    MEASURES: tuple[str, ...]
    MEASURE_UNITS: tuple[int, ...]
    SQUARED_MEASURES: tuple[str, ...]
    CRASH_MEASURES: tuple[str, ...]
    STATS: tuple[str, ...]
    CRASH_IDS: bool

    def evaluate_line(self, line: bytes | memoryview, layout_date: date | None,
                      wanted: Container[date] | None = None, sample_below: float | None = None,
                      dedupe: bool = True) -> rules.Outcome | None: ...

    def key_to_row(self, key: rules.Key) -> tuple[str, dict[str, str]]: ...


#: Every family by its `--family` name, with the table its rows go to. (mypy checks here that
#: each module has the shape of `Family`.)
FAMILIES: dict[str, tuple[Family, str]] = {
    "legacy": (rules, "crash_aggregates"),
    glean.NAME: (glean, glean.TABLE),
}
DEFAULT = "legacy"


def family(name: str) -> Family:
    """The family module called `name` (a `--family` value)."""
    try:
        return FAMILIES[name][0]
    except KeyError:
        raise UsageError(f"unknown ping family {name!r}: choose one of "
                         f"{', '.join(FAMILIES)}") from None


def table(name: str) -> str:
    """The table (and Parquet folder) of a family's rows."""
    family(name)  # one message for an unknown name
    return FAMILIES[name][1]
