"""What every output store does: create its schema, replace one submission date atomically with
its aggregates and run record, and read them back.

Each backend is one module of the same shape (sqlite.py, postgres.py...); `open_store` picks one
by the URL's scheme. A database holds every ping family's tables side by side (queries.Tables);
a store object reads and writes one family's, its `family`, so the families never mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from .. import families, rules
from ..aggregate_table import Aggregate
from ..errors import UsageError
from .queries import Distincts, Grouped, StatsQuery

DEFAULT_DB = "sqlite:///crash_aggregates.db"
#: Columns of the run table besides the counters, in order.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "submission_date",
    "status",
    "started_at",
    "duration_seconds",
    "rows_written",
    "input_url",
    "product_version",
    "error",
    *rules.COUNTERS,
    rules.UNDATED,
    rules.CORRUPT_FILES,
)


@dataclass(frozen=True)
class RunRecord:
    """One date of one run: what it read, what it counted, how it ended.

    `undated` is the run's count of flat-layout lines without a usable submission date: the
    same number on every date of that run, not a per-date count.
    """

    run_id: str
    submission_date: date
    status: str  # "completed" or "failed"
    started_at: datetime
    duration_seconds: float
    rows_written: int
    input_url: str
    product_version: str
    counters: dict[str, int]
    undated: int = 0
    error: str | None = None

    def values(self) -> tuple[Any, ...]:
        return (
            self.run_id,
            self.submission_date.isoformat(),
            self.status,
            self.started_at.isoformat(),  # microseconds: two runs in one second still sort
            round(self.duration_seconds, 3),
            self.rows_written,
            self.input_url,
            self.product_version,
            self.error,
            *(int(self.counters.get(name, 0)) for name in rules.COUNTERS),
            self.undated,
            int(self.counters.get(rules.CORRUPT_FILES, 0)),
        )


class Store(Protocol):
    url: str
    #: The ping family whose tables the store reads and writes (`families.FAMILIES`).
    family: str

    def replace_date(
        self, submission_date: date, rows: Sequence[Aggregate], run: RunRecord
    ) -> None:
        """Swap the date's rows for `rows` and record `run`, all or nothing."""

    def record_run(self, run: RunRecord) -> None:
        """Record a run that wrote no rows (a failed date), leaving the date's rows alone."""

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        """(submission date, aggregate) pairs, sorted."""

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        """Run records, oldest first."""

    def close(self) -> None: ...


class ReadableStore(Store, Protocol):
    """A store that sums stats in SQL: what rates, compare, the dashboard and the watchdog
    read through (SQLite and PostgreSQL)."""

    def sum_stats(self, query: StatsQuery) -> Grouped:
        """The family's stats summed per group (see StatsQuery; its family must be the
        store's)."""

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        """The values a dimension takes, sorted."""

    def distinct_clients(self, query: StatsQuery) -> Distincts:
        """Per group of `query`, each sketch's distinct clients (its rows' sketches merged)."""


def open_store(url: str | None, create: bool = True, family: str = families.DEFAULT) -> Store:
    """The store at `url` (default: SQLite at ./crash_aggregates.db), reading and writing the
    tables of the ping family `family` (`families.FAMILIES`).

    `create=False` is for the commands that only read (rates, compare, watchdog, serve): a
    store that does not exist yet, or a database without its tables, is a StoreError saying
    so (`no_store`) instead of an empty store made where none was meant to be.
    """
    url = url or DEFAULT_DB
    families.table(family)  # an unknown family is a UsageError before any connection
    scheme = _scheme(url)
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(url, create=create, family=family)
    if scheme == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(url, create=create, family=family)
    raise _unknown(url)


def families_in(url: str | None) -> list[str]:
    """The families that have rows in the store at `url`, in `families.FAMILIES` order: what a
    reader uses when it is not told the family. Opened read-only: it creates and migrates
    nothing; a missing store is a StoreError (`no_store`)."""
    url = url or DEFAULT_DB
    scheme = _scheme(url)
    if scheme == "sqlite":
        from . import sqlite

        return sqlite.families_in(url)
    if scheme == "postgresql":
        from . import postgres

        return postgres.families_in(url)
    raise _unknown(url)


def _scheme(url: str) -> str:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return "postgresql" if scheme == "postgres" else scheme


def _unknown(url: str) -> UsageError:
    return UsageError(
        f"unknown store URL {redact(url)!r}: use sqlite:///path.db or postgresql://user@host/db"
    )


def no_store(url: str) -> str:
    """The message of a read-only open that finds nothing to read."""
    return f"no store at {redact(url)}: `crash-aggregates fill` creates it"


def redact(url: str) -> str:
    """The URL with any password replaced by *** (see redact.py, the one redaction)."""
    from ..redact import redact_url

    return redact_url(url)


def row_sort_key(row: Aggregate) -> tuple[str, list[tuple[str, str]]]:
    return row.activity_date, sorted(row.dimensions.items())
