"""The dashboard's way into a store: read-only, with a time limit and a row cap on every query.

* SQLite: the file is opened as `file:PATH?mode=ro` (the library refuses every write) with
  `PRAGMA query_only`, and a progress handler aborts a statement once it has run longer than
  the limit.
* PostgreSQL: the session has `default_transaction_read_only = on` (the server refuses every
  write) and `statement_timeout` set to the limit.
* Both: every statement gets `LIMIT max_rows + 1` as a bound parameter; more rows than the cap
  is an error (narrow the filters), never a silently cut answer.

The SQL is the stores' own (stores/queries.py): dimension names are checked against the
dimension table and bound, values are always bound. Nothing here opens a write transaction,
creates a table or sets a pragma that writes; the stores' own classes are left alone because
they create their schema on open.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from ..aggregation import Aggregate
from ..errors import StoreError, UsageError
from ..stores.base import RUN_COLUMNS, ReadableStore, RunRecord, redact, row_sort_key
from ..stores.postgres import _password
from ..stores.queries import Grouped, StatsQuery, date_range, distinct_sql, grouped
from ..stores.sqlite import sqlite_path

Row = Sequence[Any]
#: The run table's counts: every column after `error`.
COUNTER_COLUMNS: tuple[str, ...] = RUN_COLUMNS[RUN_COLUMNS.index("error") + 1:]


@dataclass(frozen=True)
class Limits:
    """What one query may cost: wall-clock milliseconds and rows returned."""

    timeout_ms: int = 5_000
    max_rows: int = 10_000

    def __post_init__(self) -> None:
        if self.timeout_ms < 1 or self.max_rows < 1:
            raise UsageError("the query time limit and the row cap must be at least 1")


class QueryTimeout(StoreError):
    """A query ran past the time limit."""


class TooManyRows(StoreError):
    """A query returned more rows than the cap."""


class WebStore(ReadableStore, Protocol):
    """What the dashboard reads through: the readable store plus a few read-only helpers."""

    limits: Limits

    def select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement with the time limit and the row cap (read-only)."""

    def runs_between(self, first: date | None, last: date | None) -> list[dict[str, Any]]:
        """Run records of submission dates first..last, oldest first."""

    def date_span(self) -> tuple[date, date] | None:
        """The first and last submission date with rows, or None for an empty store."""


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


class _ReadOnly:
    """The read side shared by both databases, on top of `_fetch(sql, params)`."""

    url: str
    limits: Limits
    mark: str

    def _fetch(self, sql: str, params: list[object]) -> tuple[list[str], list[Row]]:
        """Column names and rows of one statement, within the time limit."""
        raise NotImplementedError

    def select_named(self, sql: str, params: Sequence[object] = ()
                     ) -> tuple[list[str], list[Row]]:
        """Column names and rows, with the time limit and the row cap (read-only)."""
        args = list(params)
        if sql.split(None, 1)[0].upper() in ("SELECT", "WITH"):  # a query: cap its rows
            sql = f"{sql} LIMIT {self.mark}"
            args.append(self.limits.max_rows + 1)
        columns, rows = self._fetch(sql, args)
        if len(rows) > self.limits.max_rows:
            raise TooManyRows(f"the query returns more than {self.limits.max_rows:,} rows: "
                              "narrow the dates or filters, or group by fewer dimensions")
        return columns, rows

    def select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.select_named(sql, params)[1]

    # -- ReadableStore --------------------------------------------------------------------

    def sum_stats(self, query: StatsQuery) -> Grouped:
        sql, params = query.sql(self.mark)
        return grouped(self.select(sql, params), query)

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        sql, params = distinct_sql(dimension, self.mark, first, last)
        return [str(row[0]) for row in self.select(sql, params)]

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        sql = "SELECT submission_date, activity_date, dimensions, stats FROM crash_aggregates"
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
        sql = "SELECT * FROM crash_aggregates_runs"
        conditions, params = date_range("submission_date", self.mark, first, last)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += " ORDER BY started_at, run_id, submission_date"
        columns, rows = self.select_named(sql, params)
        out = []
        for row in rows:
            found = dict(zip(columns, row, strict=True))
            out.append({name: _plain(found.get(name, 0 if name in COUNTER_COLUMNS else None))
                        for name in RUN_COLUMNS})
        return out

    def date_span(self) -> tuple[date, date] | None:
        found = self.select("SELECT min(submission_date), max(submission_date) "
                            "FROM crash_aggregates")
        if not found or found[0][0] is None:
            return None
        return _day(found[0][0]), _day(found[0][1])

    # -- Store: the writing half is refused here too --------------------------------------

    def replace_date(self, submission_date: date, rows: Sequence[Aggregate],
                     run: RunRecord) -> None:
        raise StoreError(f"{self.url} is open read-only")

    def record_run(self, run: RunRecord) -> None:
        raise StoreError(f"{self.url} is open read-only")


def _plain(value: object) -> object:
    """Dates and times as ISO text, as the SQLite store holds them."""
    return value.isoformat() if isinstance(value, date) else value


class ReadOnlySqliteStore(_ReadOnly):
    mark = "?"

    def __init__(self, url: str, limits: Limits = Limits()) -> None:
        self.url = url
        self.limits = limits
        self.path = sqlite_path(url)
        if not self.path.is_file():
            raise StoreError(f"no SQLite store at {self.path}: fill one first")
        if sqlite3.sqlite_version_info < (3, 38):
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the ->> operator "
                             "of the queries needs 3.38 or newer")
        uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
        self._lock = threading.Lock()
        try:
            # One connection shared by the server's worker threads, one statement at a time.
            self.connection = sqlite3.connect(uri, uri=True, check_same_thread=False,
                                              isolation_level=None,
                                              timeout=limits.timeout_ms / 1000)
            self.connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path} read-only: {exc}") from None

    def _fetch(self, sql: str, params: list[object]) -> tuple[list[str], list[Row]]:
        deadline = time.monotonic() + self.limits.timeout_ms / 1000

        def past_deadline() -> int:
            return 1 if time.monotonic() > deadline else 0  # non-zero aborts the statement

        plain = [p.isoformat() if isinstance(p, date) else p for p in params]
        with self._lock:
            self.connection.set_progress_handler(past_deadline, 1_000)
            try:
                cursor = self.connection.execute(sql, plain)
                rows = cursor.fetchall()
                return [d[0] for d in cursor.description or ()], rows
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline and "interrupt" in str(exc):
                    raise QueryTimeout(f"the query took longer than {self.limits.timeout_ms:,} "
                                       "ms: narrow the dates or filters") from None
                raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
            finally:
                self.connection.set_progress_handler(None, 0)

    def close(self) -> None:
        self.connection.close()


class ReadOnlyPostgresStore(_ReadOnly):
    mark = "%s"
    application_name = "crash-aggregates-web"

    def __init__(self, url: str, limits: Limits = Limits()) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs the postgres extra: "
                             "pip install 'crash-rate-aggregates[postgres]'") from None
        self._psycopg = psycopg
        self._dsn = url
        self.url = redact(url)
        self.limits = limits
        self._secrets = [s for s in (_password(url), os.environ.get("PGPASSWORD")) if s]
        self._lock = threading.Lock()
        self.connection: Any = self._connect()

    def _message(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(self._dsn, application_name=self.application_name,
                                         connect_timeout=10, autocommit=True)
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

    def _fetch(self, sql: str, params: list[object]) -> tuple[list[str], list[Row]]:
        psycopg = self._psycopg
        with self._lock:
            if self.connection.closed or self.connection.broken:
                self.connection = self._connect()  # the server restarted: connect again
            try:
                with self.connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    if cursor.description is None:
                        return [], []
                    rows: list[Row] = cursor.fetchall()
                    return [d.name for d in cursor.description], rows
            except psycopg.errors.QueryCanceled:
                raise QueryTimeout(f"the query took longer than {self.limits.timeout_ms:,} ms: "
                                   "narrow the dates or filters") from None
            except psycopg.Error as exc:
                raise StoreError(f"cannot read PostgreSQL at {self.url}: "
                                 f"{self._message(exc)}") from None

    def close(self) -> None:
        self.connection.close()


def open_readonly(url: str | None, limits: Limits = Limits()) -> WebStore:
    """The store at `url` (default: SQLite at ./crash_aggregates.db), read-only."""
    from ..stores.base import DEFAULT_DB

    url = url or DEFAULT_DB
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return ReadOnlySqliteStore(url, limits)
    if scheme in ("postgresql", "postgres"):
        return ReadOnlyPostgresStore(url, limits)
    raise UsageError(f"unknown store URL {redact(url)!r}: use sqlite:///path.db or "
                     "postgresql://user@host/db")
