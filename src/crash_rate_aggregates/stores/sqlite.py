"""The embedded default store: one SQLite file.

The table is the one of PostgreSQL with dates as `YYYY-MM-DD` text and JSON as text, so
`dimensions->>'channel'` and `(stats->>'usage_hours')` read the same way in both. One file holds
every ping family's tables (queries.Tables); a store object reads and writes one family's.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .. import faults, rules
from ..aggregate_table import Aggregate, AggregateTable
from ..errors import StoreError
from .base import RUN_COLUMNS, RunRecord, no_store, row_sort_key
from .queries import (
    ALL_TABLES,
    LEGACY,
    Distincts,
    Grouped,
    StatsQuery,
    Tables,
    check_family,
    distinct_clients,
    distinct_sql,
    grouped,
    sketch_columns,
    sketch_names,
    tables,
    views,
)

#: 2: run records carry `commit_seq`, their order of commit (see `read_runs`).
#: 3: the Glean family's tables and views beside the legacy ones.
#: 4: rows carry distinct-client sketches (one BLOB column each, NULL for none).
SCHEMA_VERSION = 4
#: The tables that make a file a store: every release made them (the legacy family's).
TABLES = (tables().rows, tables().runs)
_COUNTER_COLUMNS = ",\n    ".join(f"{name} INTEGER NOT NULL DEFAULT 0"
                                  for name in (*rules.COUNTERS, rules.UNDATED,
                                               rules.CORRUPT_FILES))


def schema(names: Tables) -> tuple[str, ...]:
    """One family's tables, one statement each: they run inside one write transaction
    (executescript would commit it)."""
    return (
        f"""CREATE TABLE IF NOT EXISTS {names.rows} (
    submission_date TEXT NOT NULL,
    activity_date TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    stats TEXT NOT NULL,
    {", ".join(f"{column} BLOB" for column in sketch_columns(names.family))}
)""",
        f"""CREATE INDEX IF NOT EXISTS {names.rows}_submission_date
    ON {names.rows} (submission_date)""",
        f"""CREATE TABLE IF NOT EXISTS {names.runs} (
    run_id TEXT NOT NULL,
    submission_date TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    duration_seconds REAL NOT NULL,
    rows_written INTEGER NOT NULL,
    input_url TEXT NOT NULL,
    product_version TEXT NOT NULL,
    error TEXT,
    {_COUNTER_COLUMNS},
    commit_seq INTEGER,
    PRIMARY KEY (run_id, submission_date)
)""",
        f"""CREATE INDEX IF NOT EXISTS {names.runs}_date
    ON {names.runs} (submission_date, started_at)""",
    )


#: Columns later releases added to run tables made by earlier ones.
_ADDED_COLUMNS = ((rules.CORRUPT_FILES, "INTEGER NOT NULL DEFAULT 0"), ("commit_seq", "INTEGER"))


def _number_old_runs(runs: str) -> str:
    """Records of an earlier release get commit numbers in the order it read them (start
    time), after `?`."""
    return f"""
UPDATE {runs} SET commit_seq = ? + numbered.n
FROM (SELECT rowid AS id, row_number() OVER (ORDER BY started_at, run_id, submission_date) AS n
      FROM {runs} WHERE commit_seq IS NULL) AS numbered
WHERE {runs}.rowid = numbered.id"""


_JSON_OPTIONS = orjson.OPT_SORT_KEYS


def _run_insert(runs: str) -> str:
    return (f"INSERT OR REPLACE INTO {runs} ({', '.join(RUN_COLUMNS)}, commit_seq) "
            f"VALUES ({', '.join('?' * len(RUN_COLUMNS))}, "
            f"(SELECT coalesce(max(commit_seq), 0) + 1 FROM {runs}))")


#: Every family's views: (name, body).
_ALL_VIEWS = tuple(view for names in ALL_TABLES for view in views(names.family))
#: Runs in the order their writes committed: the last one is the one whose rows are in the
#: table, even when two jobs of one date overlapped (the one started first may commit last).
_RUN_ORDER = " ORDER BY commit_seq, started_at, run_id, submission_date"

BEFORE_REPLACE = faults.define("sqlite.before_replace", "a date's rows are ready, its write "
                               "transaction not begun (another job may write the date now)")
BEFORE_COMMIT = faults.define("sqlite.before_commit", "a date's new rows and run record are "
                              "written inside the transaction, not committed")


def _view_sql(name: str, body: str) -> str:
    return f"CREATE VIEW {name} AS {body}"


def _plain(params: list[object]) -> list[object]:
    """Dates as the text the table holds (sqlite3's date adapter is deprecated)."""
    return [p.isoformat() if isinstance(p, date) else p for p in params]


#: Rows whose records are made at a time when a table is written (`_table_records`).
_CHUNK_ROWS = 10_000


def _table_records(day: str, table: AggregateTable, names: Sequence[str]
                   ) -> Iterator[tuple[Any, ...]]:
    """The records of a table's rows, made from its columns a chunk of rows at a time: the
    same values the Aggregate path makes (the JSON texts byte for byte)."""
    for start in range(0, len(table), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(table))
        yield from zip(
            itertools.repeat(day, stop - start), table.activity_dates(start, stop),
            [text.decode() for text in table.dimensions_json(start, stop)],
            [text.decode() for text in table.stats_json(start, stop)],
            *(table.sketch_column(name, start, stop) for name in names), strict=True)


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` (as SQLAlchemy spells them)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///path/to/file.db")
    return Path(url[len(prefix):])


class SqliteStore:
    def __init__(self, url: str, create: bool = True, family: str = LEGACY) -> None:
        """Open the store, creating or migrating its schema (every family's tables); with
        `create=False` (the read-only commands) a missing file or one without the tables is a
        StoreError, and nothing is created. Reads and writes go to `family`'s tables."""
        self.url = url
        self.family = family
        self.tables = tables(family)
        self._sketch_names = sketch_names(family)
        self.path = sqlite_path(url)
        if sqlite3.sqlite_version_info < (3, 38):
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the ->> "
                             "operator of the queries needs 3.38 or newer")
        if not create and not self.path.is_file():
            raise StoreError(no_store(url))
        try:
            # mode=rw: never make a new file where a reader expected one
            target = self.path if create else f"{self.path.absolute().as_uri()}?mode=rw"
            self.connection = sqlite3.connect(target, timeout=60, isolation_level=None,
                                              uri=not create)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        try:
            self._open_schema(create)
        except BaseException:
            self.connection.close()
            raise

    def _open_schema(self, create: bool) -> None:
        try:
            if not create and not self._has_tables():
                raise StoreError(no_store(self.url))
            if create:
                self._use_wal()
            if self._schema_is_current():
                return  # the usual open: no write, no lock
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        # Several jobs may open a new file at once: one creates, the others find it made.
        with self._transaction("open") as locked:
            self._create_or_migrate(locked)

    def _use_wal(self, timeout: float = 60.0) -> None:
        """WAL: readers never wait for a writer. While other jobs open a new file, the switch
        fails at once with "database is locked" (SQLite does not wait on it as it waits for
        a lock), so it is tried again, briefly backing off, until the file is WAL, whoever
        switched it."""
        db = self.connection
        deadline = time.monotonic() + timeout
        backoff = 0.001
        while True:
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(backoff)
            backoff = min(2 * backoff, 0.05)

    def _table_names(self) -> set[str]:
        return {row[0] for row in self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _has_tables(self) -> bool:
        return all(name in self._table_names() for name in TABLES)

    def _schema_is_current(self) -> bool:
        db = self.connection
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        found = self._table_names()
        every_table = all(name in found for names in ALL_TABLES
                          for name in (names.rows, names.runs))
        made = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
        return every_table and all(made.get(name) == _view_sql(name, body)
                                   for name, body in _ALL_VIEWS)

    def _create_or_migrate(self, db: sqlite3.Connection) -> None:
        """Inside the write lock: every family's tables, added columns and views, each only
        when missing or different, so that the jobs that queued behind the first one change
        nothing."""
        for names in ALL_TABLES:
            self._create_or_migrate_tables(db, names)
        # Views follow the release: made again when their text differs from this release's.
        made = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
        for name, body in _ALL_VIEWS:
            if made.get(name) != _view_sql(name, body):
                db.execute(f"DROP VIEW IF EXISTS {name}")
                db.execute(_view_sql(name, body))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _create_or_migrate_tables(db: sqlite3.Connection, names: Tables) -> None:
        for statement in schema(names):
            db.execute(statement)
        have = {row[1] for row in db.execute(f"PRAGMA table_info({names.runs})")}
        for column, kind in _ADDED_COLUMNS:
            if column not in have:
                db.execute(f"ALTER TABLE {names.runs} ADD COLUMN {column} {kind}")
        have = {row[1] for row in db.execute(f"PRAGMA table_info({names.rows})")}
        for column in sketch_columns(names.family):  # schema 4: rows of earlier ones have none
            if column not in have:
                db.execute(f"ALTER TABLE {names.rows} ADD COLUMN {column} BLOB")
        [(last,)] = db.execute(f"SELECT coalesce(max(commit_seq), 0) FROM {names.runs}")
        db.execute(_number_old_runs(names.runs), (last,))
        db.execute(f"CREATE INDEX IF NOT EXISTS {names.runs}_commit "
                   f"ON {names.runs} (submission_date, commit_seq)")

    @contextmanager
    def _transaction(self, doing: str = "write to") -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front: two runs of one date queue up.
        db = self.connection
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {doing} SQLite store {self.path}: {exc}") from None

    def replace_date(
        self, submission_date: date, rows: Iterable[Aggregate], run: RunRecord
    ) -> None:
        # `rows` is read once, as it is inserted (the Spark engine streams them to the driver);
        # the generator takes its iterator here, before the write lock (a stream's own work)
        day = submission_date.isoformat()
        names = self._sketch_names
        records: Iterable[tuple[Any, ...]]
        if isinstance(rows, AggregateTable):  # from its arrays: no Aggregate a row
            records = _table_records(day, rows, names)
        else:
            records = (
                (day, row.activity_date,
                 orjson.dumps(row.dimensions, option=_JSON_OPTIONS).decode(),
                 orjson.dumps(row.stats, option=_JSON_OPTIONS).decode(),
                 *(row.sketches.get(name) for name in names))
                for row in rows
            )
        rows_table = self.tables.rows
        columns = ("submission_date", "activity_date", "dimensions", "stats",
                   *sketch_columns(self.family))
        insert = (f"INSERT INTO {rows_table} ({', '.join(columns)}) "
                  f"VALUES ({', '.join('?' * len(columns))})")
        faults.fault_point(BEFORE_REPLACE)
        with self._transaction() as db:
            db.execute(f"DELETE FROM {rows_table} WHERE submission_date = ?", (day,))
            db.executemany(insert, records)
            self._insert_run(db, run)
            faults.fault_point(BEFORE_COMMIT)

    def record_run(self, run: RunRecord) -> None:
        with self._transaction() as db:
            self._insert_run(db, run)

    def _insert_run(self, db: sqlite3.Connection, run: RunRecord) -> None:
        # inside the write lock: the number is one more than every record committed before
        db.execute(_run_insert(self.tables.runs), run.values())

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        sql = (f"SELECT submission_date, activity_date, dimensions, stats, "
               f"{', '.join(sketch_columns(self.family))} FROM {self.tables.rows}")
        args: tuple[str, ...] = ()
        if submission_date is not None:
            sql += " WHERE submission_date = ?"
            args = (submission_date.isoformat(),)
        try:
            found = self.connection.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
        names = self._sketch_names
        rows = [(day, Aggregate(activity, orjson.loads(dims), orjson.loads(stats),
                                dict(zip(names, blobs, strict=True))))
                for day, activity, dims, stats, *blobs in found]
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM {self.tables.runs}"
        args: tuple[str, ...] = ()
        if submission_date is not None:
            sql += " WHERE submission_date = ?"
            args = (submission_date.isoformat(),)
        sql += _RUN_ORDER
        try:
            found = self.connection.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
        return [dict(zip(RUN_COLUMNS, values, strict=True)) for values in found]

    def sum_stats(self, query: StatsQuery) -> Grouped:
        check_family(query, self.family)
        sql, params = query.sql("?")
        return grouped(self._select(sql, params), query)

    def distinct_clients(self, query: StatsQuery) -> Distincts:
        """Per group of `query`, the distinct clients of each sketch, merged in Python."""
        check_family(query, self.family)
        sql, params = query.sketch_sql("?")
        return distinct_clients(self._select(sql, params), query)

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        sql, params = distinct_sql(dimension, "?", first, last, self.family)
        return [str(row[0]) for row in self._select(sql, params)]

    def _select(self, sql: str, params: list[object]) -> list[Any]:
        try:
            return self.connection.execute(sql, _plain(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None

    def close(self) -> None:
        self.connection.close()


def families_in(url: str) -> list[str]:
    """The families whose rows table holds rows, read through a read-only connection: no
    file, table or migration is made (a file that is not a store is a StoreError)."""
    path = sqlite_path(url)
    if not path.is_file():
        raise StoreError(no_store(url))
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open SQLite store {path}: {exc}") from None
    try:
        found = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not all(name in found for name in TABLES):
            raise StoreError(no_store(url))
        return [names.family for names in ALL_TABLES if names.rows in found
                and db.execute(f"SELECT EXISTS (SELECT 1 FROM {names.rows})").fetchone()[0]]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read SQLite store {path}: {exc}") from None
    finally:
        db.close()
