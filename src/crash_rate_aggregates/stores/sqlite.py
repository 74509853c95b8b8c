"""The embedded default store: one SQLite file.

The table is the one of PostgreSQL with dates as `YYYY-MM-DD` text and JSON as text, so
`dimensions->>'channel'` and `(stats->>'usage_hours')` read the same way in both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .. import rules
from ..aggregation import Aggregate
from ..errors import StoreError
from .base import RUN_COLUMNS, RunRecord, row_sort_key
from .queries import VIEWS, Grouped, StatsQuery, distinct_sql, grouped

SCHEMA_VERSION = 1
_COUNTER_COLUMNS = ",\n    ".join(f"{name} INTEGER NOT NULL DEFAULT 0"
                                  for name in (*rules.COUNTERS, rules.UNDATED,
                                               rules.CORRUPT_FILES))
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS crash_aggregates (
    submission_date TEXT NOT NULL,
    activity_date TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    stats TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS crash_aggregates_submission_date
    ON crash_aggregates (submission_date);
CREATE TABLE IF NOT EXISTS crash_aggregates_runs (
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
    PRIMARY KEY (run_id, submission_date)
);
CREATE INDEX IF NOT EXISTS crash_aggregates_runs_date
    ON crash_aggregates_runs (submission_date, started_at);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_JSON_OPTIONS = orjson.OPT_SORT_KEYS


def _views_script() -> str:
    """Views are dropped and made again at every open, so they follow the release."""
    return "".join(f"DROP VIEW IF EXISTS {name}; CREATE VIEW {name} AS {body};\n"
                   for name, body in VIEWS)


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
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        try:
            if sqlite3.sqlite_version_info < (3, 38):
                raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the ->> "
                                 "operator of the queries needs 3.38 or newer")
            self.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.executescript(SCHEMA)
            self._migrate()
            self.connection.executescript(_views_script())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None

    def _migrate(self) -> None:
        """Columns added by later releases, to run tables made by earlier ones."""
        have = {row[1] for row in self.connection.execute(
            "PRAGMA table_info(crash_aggregates_runs)")}
        if rules.CORRUPT_FILES not in have:
            self.connection.execute(f"ALTER TABLE crash_aggregates_runs ADD COLUMN "
                                    f"{rules.CORRUPT_FILES} INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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
            raise StoreError(f"cannot write to SQLite store {self.path}: {exc}") from None

    def replace_date(
        self, submission_date: date, rows: Sequence[Aggregate], run: RunRecord
    ) -> None:
        day = submission_date.isoformat()
        records = (
            (day, row.activity_date, orjson.dumps(row.dimensions, option=_JSON_OPTIONS).decode(),
             orjson.dumps(row.stats, option=_JSON_OPTIONS).decode())
            for row in rows
        )
        with self._transaction() as db:
            db.execute("DELETE FROM crash_aggregates WHERE submission_date = ?", (day,))
            db.executemany("INSERT INTO crash_aggregates VALUES (?, ?, ?, ?)", records)
            self._insert_run(db, run)

    def record_run(self, run: RunRecord) -> None:
        with self._transaction() as db:
            self._insert_run(db, run)

    @staticmethod
    def _insert_run(db: sqlite3.Connection, run: RunRecord) -> None:
        marks = ", ".join("?" * len(RUN_COLUMNS))
        db.execute(f"INSERT OR REPLACE INTO crash_aggregates_runs ({', '.join(RUN_COLUMNS)}) "
                   f"VALUES ({marks})", run.values())

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
        sql += " ORDER BY started_at, run_id, submission_date"
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
