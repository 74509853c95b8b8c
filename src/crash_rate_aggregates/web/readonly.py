"""The dashboard's way into a store: read-only, with a time limit and a row cap on every request.

* SQLite: the file is opened as `file:PATH?mode=ro` (the library refuses every write) with
  `PRAGMA query_only`; a progress handler aborts a statement past the deadline, and the busy
  timeout (how long a statement waits for a lock) is what is left of it.
* PostgreSQL: the session has `default_transaction_read_only = on` (the server refuses every
  write), and `statement_timeout` is set before each statement to what is left of the deadline.
* Both: every statement gets `LIMIT max_rows + 1` as a bound parameter; more rows than the cap
  is an error (narrow the filters), never a silently cut answer.
* The deadline is the request's: `until(deadline)` gives a view of the store whose statements,
  waits for a connection and per-row work together end by then (a request runs several
  statements). A few connections are shared by the server's threads, one statement at a time
  each; waiting for one past the deadline is `Busy` (503). Without a deadline, each call gets
  the time limit of its own.
* Opening checks the store exists and has its tables: the dashboard never creates one.
* One store serves every ping family it holds (the tables of queries.Tables, one set per
  family): `for_family(name)` gives a view reading that family's tables, as `until` gives one
  with a deadline. Without one, the family is the store's default: the one family with rows,
  else legacy (or, for a store holding only Glean tables, glean).

The SQL is the stores' own (stores/queries.py): dimension names are checked against the
dimension table and bound, values are always bound. Nothing here opens a write transaction,
creates a table or sets a pragma that writes; the stores' own classes are left alone because
they create their schema on open.
"""

from __future__ import annotations

import copy
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from .. import families
from ..aggregate_table import Aggregate
from ..errors import StoreError, UsageError
from ..redact import encode_userinfo, scrub, url_secrets
from ..stores.base import RUN_COLUMNS, ReadableStore, RunRecord, redact, row_sort_key
from ..stores.queries import (
    ALL_TABLES,
    Distincts,
    Grouped,
    StatsQuery,
    check_family,
    date_range,
    distinct_clients,
    distinct_sql,
    grouped,
    tables,
)
from ..stores.sqlite import sqlite_path

Row = Sequence[Any]
#: The run table's counts: every column after `error`.
COUNTER_COLUMNS: tuple[str, ...] = RUN_COLUMNS[RUN_COLUMNS.index("error") + 1:]
#: Connections a store keeps, each running one statement at a time.
POOL_SIZE = 4
#: The tables a store must have, those of one family at least (legacy's named in the message);
#: without them it is not one (the dashboard never makes them).
TABLES = ("crash_aggregates", "crash_aggregates_runs")
FAMILY_TABLES: dict[str, tuple[str, str]] = {t.family: (t.rows, t.runs) for t in ALL_TABLES}
LEGACY = families.DEFAULT
#: How often (in rows) the Python work on a query's rows checks the deadline.
CHECK_EVERY = 64


@dataclass(frozen=True)
class Limits:
    """What one request may cost: wall-clock milliseconds and rows returned per query. The
    sketches of distinct clients come one stored row each (SQL cannot merge them), so their
    query has a cap of its own; the time limit bounds both."""

    timeout_ms: int = 5_000
    max_rows: int = 10_000
    max_sketch_rows: int = 200_000

    def __post_init__(self) -> None:
        if self.timeout_ms < 1 or self.max_rows < 1 or self.max_sketch_rows < 1:
            raise UsageError("the query time limit and the row cap must be at least 1")


class QueryTimeout(StoreError):
    """A request ran past the time limit."""


class TooManyRows(StoreError):
    """A query returned more rows than the cap."""


class Busy(StoreError):
    """Every connection stayed in use for the whole time limit (a 503: try again)."""


class WebStore(ReadableStore, Protocol):
    """What the dashboard reads through: the readable store plus a few read-only helpers."""

    limits: Limits
    #: The families whose tables the store has, the one read when none is asked for, and the
    #: one this view reads.
    families: tuple[str, ...]
    default_family: str
    family: str

    def until(self, deadline: float) -> WebStore:
        """This store for one request: everything it runs ends by `deadline` (monotonic)."""

    def for_family(self, name: str) -> WebStore:
        """This store reading the family `name`'s tables (a UsageError when it has none)."""

    def select(self, sql: str, params: Sequence[object] = (), cap: int | None = None
               ) -> list[Row]:
        """Run one statement with the time limit and the row cap (read-only)."""

    def runs_between(self, first: date | None, last: date | None) -> list[dict[str, Any]]:
        """Run records of submission dates first..last, oldest first."""

    def date_span(self) -> tuple[date, date] | None:
        """The first and last submission date with rows, or None for an empty store."""


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


class _Pool:
    """Up to POOL_SIZE connections shared by the server's threads, each lent to one statement
    at a time; a statement waits for one at most until its deadline."""

    def __init__(self, connect: Callable[[float], Any], healthy: Callable[[Any], bool],
                 first: Any, size: int = POOL_SIZE) -> None:
        self._connect = connect
        self._healthy = healthy
        self._idle: list[Any] = [first]
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    def _take(self, wait: float) -> Any:
        with self._idle_lock:
            while self._idle:
                connection = self._idle.pop()
                if self._healthy(connection):
                    return connection
                connection.close()  # the server restarted: connect again
        return self._connect(wait)

    def _give_back(self, connection: Any) -> None:
        with self._idle_lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    @contextmanager
    def connection(self, deadline: float, timeout_ms: int) -> Iterator[Any]:
        """A connection for one statement, waiting for one at most until `deadline`."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Busy(f"every connection to the store stayed busy for the time limit of "
                       f"{timeout_ms:,} ms: try again")
        try:
            connection = self._take(max(0.0, deadline - time.monotonic()))
            try:
                yield connection
            finally:
                self._give_back(connection)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class _CheckedRows(list[Any]):
    """A query's rows whose iteration checks the deadline: the Python work done per row (the
    intervals of reports.rate_rows) counts against the time limit too."""

    def __init__(self, rows: Iterable[Any], check: Callable[[], object]) -> None:
        super().__init__(rows)
        self._check = check

    def __iter__(self) -> Iterator[Any]:
        for index, row in enumerate(super().__iter__()):
            if index % CHECK_EVERY == 0:
                self._check()
            yield row


class _ReadOnly:
    """The read side shared by both databases, on top of `_fetch(sql, params, deadline)`."""

    url: str
    limits: Limits
    mark: str
    _pool: _Pool
    #: The request's deadline (time.monotonic()), set on the views `until` makes.
    _deadline: float | None = None
    families: tuple[str, ...] = (LEGACY,)
    default_family: str = LEGACY
    #: The family this view reads (`for_family`).
    family: str = LEGACY

    def _fetch(self, sql: str, params: list[object], deadline: float
               ) -> tuple[list[str], list[Row]]:
        """Column names and rows of one statement, ended by `deadline`."""
        raise NotImplementedError

    def until(self, deadline: float) -> WebStore:
        view = copy.copy(self)  # shares the connections
        view._deadline = deadline
        return view

    def for_family(self, name: str) -> WebStore:
        families.family(name)  # an unknown name: a UsageError (400)
        if name not in self.families:
            raise UsageError(f"family: this store holds no {name} tables (it holds "
                             f"{', '.join(self.families)})")
        view = copy.copy(self)
        view.family = name
        return view

    def _choose_family(self, requested: str | None) -> None:
        """The default family: the one asked for (serve --family), else the only one with
        rows, else legacy when its tables are there, else the first family found."""
        if requested is not None:
            self.default_family = requested
            self.family = self.for_family(requested).family
            return
        # Start-up work, not a request's: the time a connection may take, not the request limit.
        opening = self.until(time.monotonic() + CONNECT_SECONDS)
        with_rows = [name for name in self.families if opening.select(
            f"SELECT 1 WHERE EXISTS (SELECT 1 FROM {FAMILY_TABLES[name][0]})")]
        if len(with_rows) == 1:
            chosen = with_rows[0]
        else:
            chosen = LEGACY if LEGACY in self.families else self.families[0]
        self.default_family = self.family = chosen

    def _deadline_now(self) -> float:
        """The request's deadline, or the time limit from now outside a request."""
        if self._deadline is not None:
            return self._deadline
        return time.monotonic() + self.limits.timeout_ms / 1000

    def _timeout(self) -> QueryTimeout:
        what = "request" if self._deadline is not None else "query"
        return QueryTimeout(f"the {what} took longer than {self.limits.timeout_ms:,} ms: "
                            "narrow the dates or filters")

    def _ms_left(self, deadline: float) -> int:
        """Whole milliseconds until `deadline` (at least 1); past it, QueryTimeout."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        return max(1, int(left * 1000))

    def select_named(self, sql: str, params: Sequence[object] = (), cap: int | None = None
                     ) -> tuple[list[str], list[Row]]:
        """Column names and rows, with the time limit and the row cap (`cap`, default
        `max_rows`; read-only)."""
        deadline = self._deadline_now()
        self._ms_left(deadline)  # a request out of time runs nothing more
        cap = self.limits.max_rows if cap is None else cap
        args = list(params)
        if sql.split(None, 1)[0].upper() in ("SELECT", "WITH"):  # a query: cap its rows
            sql = f"{sql} LIMIT {self.mark}"
            args.append(cap + 1)
        columns, rows = self._fetch(sql, args, deadline)
        if len(rows) > cap:
            raise TooManyRows(f"the query returns more than {cap:,} rows: "
                              "narrow the dates or filters, or group by fewer dimensions")
        return columns, rows

    def select(self, sql: str, params: Sequence[object] = (), cap: int | None = None
               ) -> list[Row]:
        return self.select_named(sql, params, cap)[1]

    # -- ReadableStore --------------------------------------------------------------------

    def sum_stats(self, query: StatsQuery) -> Grouped:
        check_family(query, self.family)
        deadline = self._deadline_now()
        sql, params = query.sql(self.mark)
        found = grouped(self.until(deadline).select(sql, params), query)
        return _CheckedRows(found, lambda: self._ms_left(deadline))

    def distinct_clients(self, query: StatsQuery) -> Distincts:
        check_family(query, self.family)
        deadline = self._deadline_now()
        sql, params = query.sketch_sql(self.mark)
        found = self.until(deadline).select(sql, params, self.limits.max_sketch_rows)
        self._ms_left(deadline)
        return distinct_clients(found, query)

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        sql, params = distinct_sql(dimension, self.mark, first, last, family=self.family)
        return [str(row[0]) for row in self.select(sql, params)]

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        sql = ("SELECT submission_date, activity_date, dimensions, stats FROM "
               + tables(self.family).rows)
        params: list[object] = []
        if submission_date is not None:
            sql += f" WHERE submission_date = {self.mark}"
            params.append(submission_date)
        rows = []
        for day, activity, dims, stats in self.select(sql, params):
            dims = orjson.loads(dims) if isinstance(dims, str | bytes) else dims
            stats = orjson.loads(stats) if isinstance(stats, str | bytes) else stats
            rows.append((_day(day).isoformat(), Aggregate(
                _day(activity).isoformat(), dims, {k: float(v) for k, v in stats.items()})))
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        return self.runs_between(submission_date, submission_date)

    def runs_between(self, first: date | None, last: date | None) -> list[dict[str, Any]]:
        # Every column: a store written by an older release lacks the newer counters (read
        # as 0 here; the writing stores add them when they next open it).
        sql = f"SELECT * FROM {tables(self.family).runs}"
        conditions, params = date_range("submission_date", self.mark, first, last)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += " ORDER BY started_at, run_id, submission_date"
        columns, rows = self.select_named(sql, params)
        found = [dict(zip(columns, row, strict=True)) for row in rows]
        # Commit order, as the writing stores read it: the last run is the one whose rows are
        # in the table. A store no writer has migrated yet has no commit_seq: start order.
        found.sort(key=lambda run: run.get("commit_seq") or 0)
        return [{name: _plain(run.get(name, 0 if name in COUNTER_COLUMNS else None))
                 for name in RUN_COLUMNS} for run in found]

    def date_span(self) -> tuple[date, date] | None:
        found = self.select("SELECT min(submission_date), max(submission_date) FROM "
                            + tables(self.family).rows)
        if not found or found[0][0] is None:
            return None
        return _day(found[0][0]), _day(found[0][1])

    def close(self) -> None:
        self._pool.close()

    def _choose_family_or_close(self, requested: str | None) -> None:
        try:
            self._choose_family(requested)
        except BaseException:
            self.close()
            raise

    # -- Store: the writing half is refused here too --------------------------------------

    def replace_date(self, submission_date: date, rows: Sequence[Aggregate],
                     run: RunRecord) -> None:
        raise StoreError(f"{self.url} is open read-only")

    def record_run(self, run: RunRecord) -> None:
        raise StoreError(f"{self.url} is open read-only")


def _plain(value: object) -> object:
    """Dates and times as ISO text, as the SQLite store holds them."""
    return value.isoformat() if isinstance(value, date) else value


def _missing_tables(found: Iterable[object]) -> str:
    present = set(found)
    return ", ".join(name for name in TABLES if name not in present)


def _families_with_tables(found: Iterable[object]) -> tuple[str, ...]:
    """The families whose rows and runs tables are both among the tables `found`."""
    present = set(found)
    return tuple(name for name, needed in FAMILY_TABLES.items() if present.issuperset(needed))


def _all_tables() -> list[str]:
    return [name for pair in FAMILY_TABLES.values() for name in pair]


class ReadOnlySqliteStore(_ReadOnly):
    mark = "?"

    def __init__(self, url: str, limits: Limits = Limits(), family: str | None = None) -> None:
        self.url = url
        self.limits = limits
        self.path = sqlite_path(url)
        if not self.path.is_file():
            raise StoreError(f"no SQLite store at {self.path}: fill one first")
        if sqlite3.sqlite_version_info < (3, 38):
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the ->> operator "
                             "of the queries needs 3.38 or newer")
        self._uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
        #: The connection opened at start-up (to check the store); the pool lends it too.
        self.connection = self._connect(limits.timeout_ms / 1000)
        try:
            tables = self.connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.Error as exc:
            self.connection.close()
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
        names = [row[0] for row in tables]
        self.families = _families_with_tables(names)
        if not self.families:
            self.connection.close()
            raise StoreError(f"{self.path} is not a crash-aggregates store (no table "
                             f"{_missing_tables(names)}): fill one first")
        self._pool = _Pool(self._connect, lambda connection: True, self.connection)
        self._choose_family_or_close(family)

    def _connect(self, wait: float) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self._uri, uri=True, check_same_thread=False,
                                         isolation_level=None, timeout=max(wait, 0.001))
            connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path} read-only: {exc}") from None
        return connection

    def _fetch(self, sql: str, params: list[object], deadline: float
               ) -> tuple[list[str], list[Row]]:
        def past_deadline() -> int:
            return 1 if time.monotonic() > deadline else 0  # non-zero aborts the statement

        plain = [p.isoformat() if isinstance(p, date) else p for p in params]
        with self._pool.connection(deadline, self.limits.timeout_ms) as connection:
            try:
                # A lock held by a writer is waited for only until the deadline too.
                connection.execute(f"PRAGMA busy_timeout = {self._ms_left(deadline):d}")
                connection.set_progress_handler(past_deadline, 1_000)
                cursor = connection.execute(sql, plain)
                rows = cursor.fetchall()
                return [d[0] for d in cursor.description or ()], rows
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline and "interrupt" in str(exc):
                    raise self._timeout() from None
                if "locked" in str(exc):  # a writer held its lock until (about) the deadline
                    raise Busy(f"the SQLite store {self.path} stayed locked by a writer for "
                               f"the time limit of {self.limits.timeout_ms:,} ms: try "
                               "again") from None
                raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
            finally:
                connection.set_progress_handler(None, 0)


class ReadOnlyPostgresStore(_ReadOnly):
    mark = "%s"
    application_name = "crash-aggregates-web"

    def __init__(self, url: str, limits: Limits = Limits(), family: str | None = None) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs the postgres extra: "
                             "pip install 'crash-rate-aggregates[postgres]'") from None
        self._psycopg = psycopg
        self._dsn = encode_userinfo(url)  # a raw `/ ? # @` in the password connects too
        self.url = redact(url)
        self.limits = limits
        self._secrets = [*url_secrets(url), *filter(None, [os.environ.get("PGPASSWORD")])]
        #: The connection opened at start-up (to check the store); the pool lends it too.
        self.connection: Any = self._connect(CONNECT_SECONDS)
        self._check_tables()
        self._pool = _Pool(self._connect, self._healthy, self.connection)
        self._choose_family_or_close(family)

    def _message(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return scrub(text, self._secrets)

    @staticmethod
    def _healthy(connection: Any) -> bool:
        return not (connection.closed or connection.broken)

    def _check_tables(self) -> None:
        psycopg = self._psycopg
        try:
            found = self.connection.execute(
                "SELECT name FROM unnest(%s::text[]) AS name "
                "WHERE to_regclass(quote_ident(name)) IS NOT NULL",
                (_all_tables(),)).fetchall()
        except psycopg.Error as exc:
            self.connection.close()
            raise StoreError(f"cannot read PostgreSQL at {self.url}: "
                             f"{self._message(exc)}") from None
        names = [row[0] for row in found]
        self.families = _families_with_tables(names)
        if not self.families:
            self.connection.close()
            raise StoreError(f"PostgreSQL at {self.url} holds no crash-aggregates store (no "
                             f"table {_missing_tables(names)} on the search path): fill one "
                             "first")

    def _connect(self, wait: float) -> Any:
        psycopg = self._psycopg
        # libpq waits at least 2 s for a connection; within a request, no longer than needed.
        seconds = max(2, min(CONNECT_SECONDS, math.ceil(wait)))
        try:
            connection = psycopg.connect(self._dsn, application_name=self.application_name,
                                         connect_timeout=seconds, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.url}: "
                             f"{self._message(exc)}") from None
        try:
            # Session settings: every later statement is read-only and time-limited.
            connection.execute("SELECT set_config('default_transaction_read_only', 'on', false),"
                               " set_config('statement_timeout', %s, false),"
                               " set_config('TimeZone', 'UTC', false)",
                               (str(self.limits.timeout_ms),))
            found = connection.execute("SHOW default_transaction_read_only").fetchone()
            if not found or found[0] != "on":
                raise StoreError(f"PostgreSQL at {self.url} would not make the session "
                                 "read-only")
        except psycopg.Error as exc:
            connection.close()
            raise StoreError(f"cannot set up a read-only session on PostgreSQL at {self.url}: "
                             f"{self._message(exc)}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def _fetch(self, sql: str, params: list[object], deadline: float
               ) -> tuple[list[str], list[Row]]:
        psycopg = self._psycopg
        with self._pool.connection(deadline, self.limits.timeout_ms) as connection:
            try:
                with connection.cursor() as cursor:
                    # The statement gets what is left of the request's time.
                    cursor.execute("SELECT set_config('statement_timeout', %s, false)",
                                   (str(self._ms_left(deadline)),))
                    cursor.execute(sql, params)
                    if cursor.description is None:
                        return [], []
                    rows: list[Row] = cursor.fetchall()
                    return [d.name for d in cursor.description], rows
            except psycopg.errors.QueryCanceled:
                raise self._timeout() from None
            except psycopg.Error as exc:
                raise StoreError(f"cannot read PostgreSQL at {self.url}: "
                                 f"{self._message(exc)}") from None


#: Seconds a connection to PostgreSQL may take outside a request (at start-up).
CONNECT_SECONDS = 10


def open_readonly(url: str | None, limits: Limits = Limits(),
                  family: str | None = None) -> WebStore:
    """The store at `url` (default: SQLite at ./crash_aggregates.db), read-only; one that
    does not exist or lacks the tables is a StoreError (nothing is created). `family` is the
    one read when a request names none (default: the one family with rows, else legacy)."""
    from ..stores.base import DEFAULT_DB

    url = url or DEFAULT_DB
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return ReadOnlySqliteStore(url, limits, family)
    if scheme in ("postgresql", "postgres"):
        return ReadOnlyPostgresStore(url, limits, family)
    raise UsageError(f"unknown store URL {redact(url)!r}: use sqlite:///path.db or "
                     "postgresql://user@host/db")
