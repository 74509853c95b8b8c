"""The embedded default store: one SQLite file.

The table is the one of PostgreSQL with dates as `YYYY-MM-DD` text and JSON as text, so
`dimensions->>'channel'` and `(stats->>'usage_hours')` read the same way in both.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .. import faults, rules
from ..aggregation import Aggregate
from ..errors import StoreError
from .base import RUN_COLUMNS, RunRecord, no_store, row_sort_key
from .queries import VIEWS, Grouped, StatsQuery, distinct_sql, grouped

#: 2: run records carry `commit_seq`, their order of commit (see `read_runs`).
SCHEMA_VERSION = 2
TABLES = ("crash_aggregates", "crash_aggregates_runs")
_COUNTER_COLUMNS = ",\n    ".join(f"{name} INTEGER NOT NULL DEFAULT 0"
                                  for name in (*rules.COUNTERS, rules.UNDATED,
                                               rules.CORRUPT_FILES))
#: One statement each: they run inside one write transaction (executescript would commit it).
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS crash_aggregates (
    submission_date TEXT NOT NULL,
    activity_date TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    stats TEXT NOT NULL
)""",
    """CREATE INDEX IF NOT EXISTS crash_aggregates_submission_date
    ON crash_aggregates (submission_date)""",
    f"""CREATE TABLE IF NOT EXISTS crash_aggregates_runs (
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
    """CREATE INDEX IF NOT EXISTS crash_aggregates_runs_date
    ON crash_aggregates_runs (submission_date, started_at)""",
)
#: Columns later releases added to run tables made by earlier ones.
_ADDED_COLUMNS = ((rules.CORRUPT_FILES, "INTEGER NOT NULL DEFAULT 0"), ("commit_seq", "INTEGER"))
#: Records of an earlier release get commit numbers in the order it read them (start time).
_NUMBER_OLD_RUNS = """
UPDATE crash_aggregates_runs SET commit_seq = ? + numbered.n
FROM (SELECT rowid AS id, row_number() OVER (ORDER BY started_at, run_id, submission_date) AS n
      FROM crash_aggregates_runs WHERE commit_seq IS NULL) AS numbered
WHERE crash_aggregates_runs.rowid = numbered.id"""
_JSON_OPTIONS = orjson.OPT_SORT_KEYS
_RUN_INSERT = (
    f"INSERT OR REPLACE INTO crash_aggregates_runs ({', '.join(RUN_COLUMNS)}, commit_seq) "
    f"VALUES ({', '.join('?' * len(RUN_COLUMNS))}, "
    f"(SELECT coalesce(max(commit_seq), 0) + 1 FROM crash_aggregates_runs))")
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


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` (as SQLAlchemy spells them)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///path/to/file.db")
    return Path(url[len(prefix):])


class SqliteStore:
    def __init__(self, url: str, create: bool = True) -> None:
        """Open the store, creating or migrating its schema; with `create=False` (the read-only
        commands) a missing file or one without the tables is a StoreError, and nothing is
        created."""
        self.url = url
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

    def _has_tables(self) -> bool:
        found = {row[0] for row in self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return all(name in found for name in TABLES)

    def _schema_is_current(self) -> bool:
        db = self.connection
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        views = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
        return self._has_tables() and all(views.get(name) == _view_sql(name, body)
                                          for name, body in VIEWS)

    def _create_or_migrate(self, db: sqlite3.Connection) -> None:
        """Inside the write lock: tables, added columns and views, each only when missing or
        different, so that the jobs that queued behind the first one change nothing."""
        for statement in SCHEMA:
            db.execute(statement)
        have = {row[1] for row in db.execute("PRAGMA table_info(crash_aggregates_runs)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in have:
                db.execute(f"ALTER TABLE crash_aggregates_runs ADD COLUMN {column} {kind}")
        [(last,)] = db.execute("SELECT coalesce(max(commit_seq), 0) FROM crash_aggregates_runs")
        db.execute(_NUMBER_OLD_RUNS, (last,))
        db.execute("CREATE INDEX IF NOT EXISTS crash_aggregates_runs_commit "
                   "ON crash_aggregates_runs (submission_date, commit_seq)")
        # Views follow the release: made again when their text differs from this release's.
        views = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
        for name, body in VIEWS:
            if views.get(name) != _view_sql(name, body):
                db.execute(f"DROP VIEW IF EXISTS {name}")
                db.execute(_view_sql(name, body))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
        self, submission_date: date, rows: Sequence[Aggregate], run: RunRecord
    ) -> None:
        day = submission_date.isoformat()
        records = (
            (day, row.activity_date, orjson.dumps(row.dimensions, option=_JSON_OPTIONS).decode(),
             orjson.dumps(row.stats, option=_JSON_OPTIONS).decode())
            for row in rows
        )
        faults.fault_point(BEFORE_REPLACE)
        with self._transaction() as db:
            db.execute("DELETE FROM crash_aggregates WHERE submission_date = ?", (day,))
            db.executemany("INSERT INTO crash_aggregates VALUES (?, ?, ?, ?)", records)
            self._insert_run(db, run)
            faults.fault_point(BEFORE_COMMIT)

    def record_run(self, run: RunRecord) -> None:
        with self._transaction() as db:
            self._insert_run(db, run)

    @staticmethod
    def _insert_run(db: sqlite3.Connection, run: RunRecord) -> None:
        # inside the write lock: the number is one more than every record committed before
        db.execute(_RUN_INSERT, run.values())

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        sql = "SELECT submission_date, activity_date, dimensions, stats FROM crash_aggregates"
        args: tuple[str, ...] = ()
        if submission_date is not None:
            sql += " WHERE submission_date = ?"
            args = (submission_date.isoformat(),)
        try:
            found = self.connection.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None
        rows = [(day, Aggregate(activity, orjson.loads(dims), orjson.loads(stats)))
                for day, activity, dims, stats in found]
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM crash_aggregates_runs"
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
        sql, params = query.sql("?")
        return grouped(self._select(sql, params), query)

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        sql, params = distinct_sql(dimension, "?", first, last)
        return [str(row[0]) for row in self._select(sql, params)]

    def _select(self, sql: str, params: list[object]) -> list[Any]:
        try:
            return self.connection.execute(sql, _plain(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path}: {exc}") from None

    def close(self) -> None:
        self.connection.close()
