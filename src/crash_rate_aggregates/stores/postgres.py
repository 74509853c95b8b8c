"""The PostgreSQL store: the seed's table, loaded with COPY, one transaction per date.

Each ping family has its own tables (queries.Tables); a store object reads and writes one
family's. Replacing a date takes a transaction-scoped advisory lock on that family's date
(a legacy and a Glean job of one date never wait for each other), deletes its rows,
COPYs the new ones and records the run, then commits: readers (MVCC) see the old rows or the
new ones, never a mix; two runs of one date queue up instead of both inserting; a job killed
mid-load leaves an aborted transaction, so the previous rows stay.

Credentials come the libpq way: the URL, the PG* environment variables, ~/.pgpass. A password
never reaches output: URLs are shown redacted and driver messages are scrubbed of it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from .. import families, faults, rules
from ..aggregate_table import Aggregate, AggregateTable
from ..errors import StoreError
from ..redact import encode_userinfo, scrub, url_secrets
from . import crash_free
from .base import RUN_COLUMNS, RunRecord, no_store, redact, row_sort_key
from .queries import (
    ALL_TABLES,
    LEGACY,
    VIEW_RATES,
    VIEWS,
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

APPLICATION_NAME = "crash-aggregates"
# Advisory lock keys: (namespace, item). The namespace is a fixed random-looking int32.
_LOCK_NAMESPACE = 0x0C4A5E
_SCHEMA_LOCK = -1
#: The namespace of each family's date locks: legacy's is the one earlier releases take (so
#: that their jobs and this one's still queue up), the next families' the ones after it.
_DATE_LOCK_NAMESPACES: dict[str, int] = {
    name: _LOCK_NAMESPACE + number for number, name in enumerate(families.FAMILIES)}
assert _DATE_LOCK_NAMESPACES[LEGACY] == _LOCK_NAMESPACE
_COPY_BLOCK = 1 << 20
_COUNTER_COLUMNS = ",\n        ".join(
    f"{name} bigint NOT NULL DEFAULT 0" for name in (*rules.COUNTERS, rules.UNDATED))


def _family_schema(names: Tables) -> str:
    """A later family's tables in the legacy tables' shape of step 5 (columns in the same
    order), with its views."""
    rows, runs = names.rows, names.runs
    made = "".join(f"CREATE OR REPLACE VIEW {name} AS {body};\n"
                   for name, body in views(names.family))
    return f"""
    CREATE TABLE IF NOT EXISTS {rows} (
        submission_date date NOT NULL,
        activity_date date NOT NULL,
        dimensions jsonb NOT NULL,
        stats jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS {rows}_submission_date ON {rows} (submission_date);
    CREATE INDEX IF NOT EXISTS {rows}_dimensions ON {rows} USING gin (dimensions jsonb_path_ops);
    CREATE SEQUENCE IF NOT EXISTS {runs}_commit_seq;
    CREATE TABLE IF NOT EXISTS {runs} (
        run_id text NOT NULL,
        submission_date date NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        duration_seconds double precision NOT NULL,
        rows_written bigint NOT NULL,
        input_url text NOT NULL,
        product_version text NOT NULL,
        error text,
        {_COUNTER_COLUMNS},
        {rules.CORRUPT_FILES} bigint NOT NULL DEFAULT 0,
        commit_seq bigint NOT NULL DEFAULT nextval('{runs}_commit_seq'),
        PRIMARY KEY (run_id, submission_date)
    );
    ALTER SEQUENCE {runs}_commit_seq OWNED BY {runs}.commit_seq;
    CREATE INDEX IF NOT EXISTS {runs}_date ON {runs} (submission_date, started_at);
    CREATE INDEX IF NOT EXISTS {runs}_commit ON {runs} (submission_date, commit_seq);
    {made}"""


#: Schema versions, applied in order, each once. Append; never edit a released step.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    # IF NOT EXISTS: a database of the 2016 job, which has the same table, is adopted as is.
    (1, f"""
    CREATE TABLE IF NOT EXISTS crash_aggregates (
        submission_date date NOT NULL,
        activity_date date NOT NULL,
        dimensions jsonb NOT NULL,
        stats jsonb NOT NULL
    );
    -- One date is replaced and read at a time.
    CREATE INDEX IF NOT EXISTS crash_aggregates_submission_date
        ON crash_aggregates (submission_date);
    -- Filters on any dimension: dimensions @> '{{"channel": "nightly"}}'.
    CREATE INDEX IF NOT EXISTS crash_aggregates_dimensions ON crash_aggregates
        USING gin (dimensions jsonb_path_ops);
    CREATE TABLE IF NOT EXISTS crash_aggregates_runs (
        run_id text NOT NULL,
        submission_date date NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        duration_seconds double precision NOT NULL,
        rows_written bigint NOT NULL,
        input_url text NOT NULL,
        product_version text NOT NULL,
        error text,
        {_COUNTER_COLUMNS},
        PRIMARY KEY (run_id, submission_date)
    );
    CREATE INDEX IF NOT EXISTS crash_aggregates_runs_date
        ON crash_aggregates_runs (submission_date, started_at);
    """),
    # Views for SQL dashboards (docs/rates.md); a later step may CREATE OR REPLACE them.
    (2, "".join(f"CREATE OR REPLACE VIEW {name} AS {body};\n" for name, body in VIEWS)),
    (3, f"ALTER TABLE crash_aggregates_runs ADD COLUMN IF NOT EXISTS {rules.CORRUPT_FILES} "
        f"bigint NOT NULL DEFAULT 0"),
    # The rates view's intervals became Garwood limits of the effective count (same columns).
    (4, "".join(f"CREATE OR REPLACE VIEW {name} AS {body};\n" for name, body in VIEWS
                if name == VIEW_RATES)),
    # Run records carry their order of commit: the default draws it when the record is
    # inserted, the last statement of a date's transaction, under the date's lock. Records
    # of earlier releases are numbered in the order they were read before (start time).
    (5, """
    CREATE SEQUENCE IF NOT EXISTS crash_aggregates_runs_commit_seq;
    ALTER TABLE crash_aggregates_runs ADD COLUMN IF NOT EXISTS commit_seq bigint;
    UPDATE crash_aggregates_runs AS runs SET commit_seq = numbered.n
    FROM (SELECT run_id, submission_date,
                 row_number() OVER (ORDER BY started_at, run_id, submission_date) AS n
          FROM crash_aggregates_runs) AS numbered
    WHERE runs.run_id = numbered.run_id AND runs.submission_date = numbered.submission_date;
    SELECT setval('crash_aggregates_runs_commit_seq',
                  (SELECT coalesce(max(commit_seq), 0) + 1 FROM crash_aggregates_runs), false);
    ALTER TABLE crash_aggregates_runs
        ALTER COLUMN commit_seq SET DEFAULT nextval('crash_aggregates_runs_commit_seq'),
        ALTER COLUMN commit_seq SET NOT NULL;
    ALTER SEQUENCE crash_aggregates_runs_commit_seq OWNED BY crash_aggregates_runs.commit_seq;
    CREATE INDEX IF NOT EXISTS crash_aggregates_runs_commit
        ON crash_aggregates_runs (submission_date, commit_seq);
    """),
    # The Glean family's tables and views (SPEC section 8), beside the legacy ones.
    (6, _family_schema(tables(families.glean.NAME))),
    # Rows carry distinct-client sketches (Apache DataSketches HLL), NULL for none.
    (7, "".join(f"ALTER TABLE {names.rows} ADD COLUMN IF NOT EXISTS {column} bytea;\n"
                for names in ALL_TABLES for column in sketch_columns(names.family))),
    # The stats gained client_<crash>_max: the flat views a column each (at the end), the rates
    # views' upper limits weigh the largest client (same columns).
    (8, "".join(f"CREATE OR REPLACE VIEW {name} AS {body};\n"
                for names in ALL_TABLES for name, body in views(names.family))),
    # Crash-free users by activity date, channel, version and OS, kept by fill (crash_free.py);
    # the rows of earlier releases have no sketches, so the table starts empty.
    (9, "".join(crash_free.schema(names) for names in ALL_TABLES)),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: Runs in the order their writes committed: the last one is the one whose rows are in the
#: table, even when two jobs of one date overlapped (the one started first may commit last).
_RUN_ORDER = " ORDER BY commit_seq, started_at, run_id, submission_date"

BEFORE_REPLACE = faults.define("postgres.before_replace", "a date's rows are ready, its "
                               "transaction not begun (another job may write the date now)")
DURING_COPY = faults.define("postgres.during_copy", "the old rows deleted and the first block "
                            "of new rows sent, inside the date's transaction")
BEFORE_COMMIT = faults.define("postgres.before_commit", "a date's new rows and run record sent, "
                              "the transaction not committed")


def _password(url: str) -> str | None:
    try:
        found = urlsplit(url).password
    except ValueError:
        found = None
    if found:
        return unquote(found)
    match = re.search(r"(?i)password=([^&\s]*)", url)
    return unquote(match[1]) if match and match[1] else None


def loader_conninfo(conninfo: str, pgpassword: str | None) -> str:
    """`conninfo` for a process without this one's environment: with `pgpassword` (the
    driver's PGPASSWORD) as its password when it has none of its own."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if not pgpassword or conninfo_to_dict(conninfo).get("password"):
        return conninfo
    return make_conninfo(conninfo, password=pgpassword)


def copy_line(day: str, row: Aggregate, names: Sequence[str] = ()) -> bytes:
    """One row in COPY's text format. orjson escapes every control character inside JSON
    strings, so only backslashes need doubling; a sketch is bytea's hex form (`\\x...`, its
    backslash doubled), a missing one COPY's NULL."""
    dims = orjson.dumps(row.dimensions, option=orjson.OPT_SORT_KEYS).replace(b"\\", b"\\\\")
    stats = orjson.dumps(row.stats, option=orjson.OPT_SORT_KEYS)
    fields = [day.encode(), row.activity_date.encode(), dims, stats]
    for name in names:  # the sketches, in the order of the COPY's columns
        blob = row.sketches.get(name)
        fields.append(b"\\N" if blob is None else b"\\\\x" + blob.hex().encode())
    return b"\t".join(fields) + b"\n"


def copy_blocks(day: str, rows: Iterable[Aggregate], names: Sequence[str] = ()
                ) -> Iterator[bytes]:
    """The rows as COPY text, in blocks of about a megabyte; an `AggregateTable`'s made from
    its columns (`table_copy_lines`), the same bytes."""
    lines = (table_copy_lines(day, rows, names) if isinstance(rows, AggregateTable)
             else (copy_line(day, row, names) for row in rows))
    block: list[bytes] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line)
        if size >= _COPY_BLOCK:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


#: Rows whose COPY lines are made at a time from a table (`table_copy_lines`).
_CHUNK_ROWS = 10_000


def table_copy_lines(day: str, table: AggregateTable, names: Sequence[str] = ()
                     ) -> Iterator[bytes]:
    """`copy_line` of each row of the table, made from its columns a chunk of rows at a
    time (no Aggregate, no dict a row)."""
    head = day.encode() + b"\t"
    for start in range(0, len(table), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(table))
        fields = [
            [head + text.encode() for text in table.activity_dates(start, stop)],
            [text.replace(b"\\", b"\\\\") for text in table.dimensions_json(start, stop)],
            table.stats_json(start, stop),
            *([b"\\N" if blob is None else b"\\\\x" + blob.hex().encode()
               for blob in table.sketch_column(name, start, stop)] for name in names),
        ]
        lines = map(b"\t".join, zip(*fields, strict=True))
        yield from (line + b"\n" for line in lines)


def _noting_activity(rows: Iterable[Aggregate], seen: set[str]) -> Iterator[Aggregate]:
    """The rows, each activity date added to `seen` as it passes (rows are read once)."""
    for row in rows:
        seen.add(row.activity_date)
        yield row


class _Server:
    """A connection to the server, its errors told without the password."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs the postgres extra: "
                             "pip install 'crash-rate-aggregates[postgres]'") from None
        self._psycopg = psycopg
        self.url = redact(url)
        self._secrets = [*url_secrets(url), *filter(None, [os.environ.get("PGPASSWORD")])]
        self._conninfo = encode_userinfo(url)  # a raw `/ ? # @` in the password connects too
        self.connection = self._connect()

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            # autocommit: every change happens inside an explicit transaction() block.
            connection = psycopg.connect(self._conninfo, application_name=APPLICATION_NAME,
                                         connect_timeout=10, autocommit=True)
            connection.execute("SET TIME ZONE 'UTC'")
        # libpq may read a bad host name out of a URL whose password is not percent-encoded:
        # then the driver raises a bare UnicodeError or ValueError, not a psycopg.Error
        except (psycopg.Error, UnicodeError, ValueError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.url}: "
                             f"{self._message(exc)}") from None
        return connection

    def _reconnect(self, waits: tuple[float, ...] = (0.5, 1, 2, 4, 8)) -> Any:
        for wait in waits:
            try:
                return self._connect()
            except StoreError:
                time.sleep(wait)
        return self._connect()

    def _message(self, exc: BaseException) -> str:
        """The driver's message on one line, without the password."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return scrub(text, self._secrets)

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[Any]:
        psycopg = self._psycopg
        if self.connection.broken or self.connection.closed:
            # the server restarted, or a proxy dropped us: the next date gets a new connection,
            # once the server is back (a restart takes seconds)
            self.connection.close()
            self.connection = self._reconnect()
        try:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                yield cursor
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {self.url}: cannot {doing}: "
                             f"{self._message(exc)}") from None

    def close(self) -> None:
        self.connection.close()


class PostgresStore(_Server):
    def __init__(self, url: str, create: bool = True, family: str = LEGACY) -> None:
        """Connect, creating or migrating the schema (every family's tables); with
        `create=False` (the read-only commands) a database without this schema is a
        StoreError, and nothing is created. Reads and writes go to `family`'s tables."""
        self.family = family
        self.tables = tables(family)
        super().__init__(url)
        try:
            if create:
                self.ensure_schema()
            else:
                self._ensure_existing_schema(url)
        except BaseException:
            self.connection.close()
            raise

    def schema_version(self) -> int:
        with self._transaction("read the schema version") as cursor:
            cursor.execute("SELECT to_regclass('crash_aggregates_schema') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute("SELECT coalesce(max(version), 0) FROM crash_aggregates_schema")
            version: int = cursor.fetchone()[0]
            return version

    def _ensure_existing_schema(self, url: str) -> None:
        """A reader's open: the tables must be there; a schema of an earlier release is
        migrated as a writer would, a current one is left untouched (no lock, no write)."""
        with self._transaction("read the schema") as cursor:
            cursor.execute("SELECT to_regclass('crash_aggregates') IS NOT NULL "
                           "AND to_regclass('crash_aggregates_runs') IS NOT NULL")
            tables = cursor.fetchone()[0]
        version = self.schema_version() if tables else 0
        if version == 0:
            raise StoreError(no_store(url))
        if version != SCHEMA_VERSION:
            self.ensure_schema()

    def ensure_schema(self) -> None:
        """Create or migrate the tables; safe to run from several jobs at once."""
        with self._transaction("create the schema") as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                           (_LOCK_NAMESPACE, _SCHEMA_LOCK))
            cursor.execute("""
                CREATE TABLE IF NOT EXISTS crash_aggregates_schema (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )""")
            cursor.execute("SELECT coalesce(max(version), 0) FROM crash_aggregates_schema")
            current = cursor.fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StoreError(f"the database at {self.url} has schema version {current}, "
                                 f"newer than this release knows ({SCHEMA_VERSION}): upgrade")
            for version, sql in MIGRATIONS:
                if version > current:
                    cursor.execute(sql)
                    cursor.execute("INSERT INTO crash_aggregates_schema (version) VALUES (%s)",
                                   (version,))

    def replace_date(
        self, submission_date: date, rows: Iterable[Aggregate], run: RunRecord
    ) -> None:
        # `rows` is read once, as it is sent (the Spark engine streams them to the driver)
        day = submission_date.isoformat()
        faults.fault_point(BEFORE_REPLACE)
        if not isinstance(rows, AggregateTable):
            rows = iter(rows)  # (a stream's own work, before the date's lock is taken)
        rows_table = self.tables.rows
        with self._transaction(f"replace {day}") as cursor:
            self._lock_date(cursor, submission_date)
            touched = crash_free.activity_dates(cursor, self.tables, submission_date)
            cursor.execute(f"DELETE FROM {rows_table} WHERE submission_date = %s",
                           (submission_date,))
            columns = ", ".join(self._row_columns())
            # the crash-free users of every activity date these rows (old and new) touch
            activity_dates: set[str] = set()
            if isinstance(rows, AggregateTable):  # written from its columns
                activity_dates = rows.distinct_activity_dates()
            else:
                rows = _noting_activity(rows, activity_dates)
            with cursor.copy(f"COPY {rows_table} ({columns}) FROM STDIN") as copy:
                for number, block in enumerate(copy_blocks(
                        day, rows, sketch_names(self.family))):
                    copy.write(block)
                    if number == 0:
                        faults.fault_point(DURING_COPY)
            touched.update(date.fromisoformat(text) for text in activity_dates)
            crash_free.refresh(cursor, self.tables, touched)
            self._insert_run(cursor, run)
            faults.fault_point(BEFORE_COMMIT)

    def record_run(self, run: RunRecord) -> None:
        with self._transaction(f"record the run of {run.submission_date}") as cursor:
            self._lock_date(cursor, run.submission_date)
            self._insert_run(cursor, run)

    def _lock_date(self, cursor: Any, submission_date: date) -> None:
        """The family's date lock, until the transaction ends: two runs of one date and
        family queue up, and their records are numbered (commit_seq) in the order they
        commit; a run of another family's date does not wait."""
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                       (_DATE_LOCK_NAMESPACES[self.family], submission_date.toordinal()))

    def _insert_run(self, cursor: Any, run: RunRecord) -> None:
        marks = ", ".join(["%s"] * len(RUN_COLUMNS))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*RUN_COLUMNS[2:], "commit_seq"))
        cursor.execute(
            f"INSERT INTO {self.tables.runs} ({', '.join(RUN_COLUMNS)}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, submission_date) DO UPDATE SET {updates}", run.values())

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        sql = (f"SELECT submission_date, activity_date, dimensions, stats, "
               f"{', '.join(sketch_columns(self.family))} FROM {self.tables.rows}")
        args: tuple[date, ...] = ()
        if submission_date is not None:
            sql += " WHERE submission_date = %s"
            args = (submission_date,)
        with self._transaction("read rows") as cursor:
            cursor.execute(sql, args)
            found = cursor.fetchall()
        names = sketch_names(self.family)
        rows = [(day.isoformat(), Aggregate(
                    activity.isoformat(), dims, {k: float(v) for k, v in stats.items()},
                    {name: None if blob is None else bytes(blob)
                     for name, blob in zip(names, blobs, strict=True)}))
                for day, activity, dims, stats, *blobs in found]
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM {self.tables.runs}"
        args: tuple[date, ...] = ()
        if submission_date is not None:
            sql += " WHERE submission_date = %s"
            args = (submission_date,)
        sql += _RUN_ORDER
        with self._transaction("read runs") as cursor:
            cursor.execute(sql, args)
            found = cursor.fetchall()
        return [{name: _plain(value) for name, value in zip(RUN_COLUMNS, values, strict=True)}
                for values in found]

    def sum_stats(self, query: StatsQuery) -> Grouped:
        check_family(query, self.family)
        sql, params = query.sql("%s")
        with self._transaction("sum stats") as cursor:
            cursor.execute(sql, params)
            return grouped(cursor.fetchall(), query)

    def distinct_clients(self, query: StatsQuery) -> Distincts:
        """Per group of `query`, the distinct clients of each sketch, merged in Python."""
        check_family(query, self.family)
        sql, params = query.sketch_sql("%s")
        with self._transaction("merge sketches") as cursor:
            cursor.execute(sql, params)
            return distinct_clients(cursor.fetchall(), query)

    def distinct_values(self, dimension: str, first: date | None = None,
                        last: date | None = None) -> list[str]:
        sql, params = distinct_sql(dimension, "%s", first, last, self.family)
        with self._transaction("read dimension values") as cursor:
            cursor.execute(sql, params)
            return [str(row[0]) for row in cursor.fetchall()]

    # A date's rows loaded by others (the Spark engine's executor tasks) into a staging table
    # of this store's rows table, then swapped in by `replace_date_staged` in one transaction.
    STAGING_INFIX = "_staging_"
    #: The namespace of the staging tables' session locks (item: hashtext of the name).
    _STAGING_LOCK_NAMESPACE = _LOCK_NAMESPACE + 0x100

    def staging_table(self, run_id: str) -> str:
        """The run's staging table: `<rows table>_staging_<run id>` (one at a time a run)."""
        return f"{self.tables.rows}{self.STAGING_INFIX}{re.sub('[^a-z0-9]', '_', run_id.lower())}"

    def staging_url(self) -> str:
        """What the executors' loaders connect with: the store's URL, plus the driver's
        PGPASSWORD when the URL has none (a cluster's executors do not share the driver's
        environment; nor its ~/.pgpass, docs/spark.md). It carries the password: never show
        it."""
        return loader_conninfo(self._conninfo, os.environ.get("PGPASSWORD"))

    def open_staging(self, run_id: str) -> tuple[str, list[str]]:
        """Drop the staging tables of runs that are gone (a failed or killed run's: nobody
        holds their lock), then create this run's, empty and unlogged, and hold its lock
        until `close_staging` (a run under way keeps its table from the others' cleanup).
        Returns the table and its COPY columns: `seq` (the row's place in the date's order),
        then the rows table's."""
        staging = self.staging_table(run_id)
        with self._transaction("clean the staging tables") as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                           "AND tablename LIKE %s ORDER BY tablename",
                           (self.tables.rows.replace("_", r"\_") + r"\_staging\_%",))
            for (table,) in cursor.fetchall():
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                               (self._STAGING_LOCK_NAMESPACE, table))
                if cursor.fetchone()[0]:
                    cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
        try:
            with self._transaction("create a staging table") as cursor:
                # the session's lock first: no moment when the table exists unlocked
                cursor.execute("SELECT pg_advisory_lock(%s, hashtext(%s))",
                               (self._STAGING_LOCK_NAMESPACE, staging))
                cursor.execute(f"DROP TABLE IF EXISTS {staging}")
                cursor.execute(f"CREATE UNLOGGED TABLE {staging} "
                               f"(seq bigint NOT NULL, LIKE {self.tables.rows})")
        except BaseException:
            self.close_staging(staging)
            raise
        return staging, ["seq", *self._row_columns()]

    def _row_columns(self) -> list[str]:
        return ["submission_date", "activity_date", "dimensions", "stats",
                *sketch_columns(self.family)]

    def replace_date_staged(self, submission_date: date, staging: str, expected: int,
                            run: RunRecord) -> None:
        """`replace_date` with the rows of `staging` (in `seq` order, the order `replace_date`
        COPYs them in): under the date's lock, in one transaction, delete the date's rows,
        insert the staged ones (exactly `expected` of them, else nothing changes), refresh the
        crash-free users, record the run, drop the staging table."""
        day = submission_date.isoformat()
        faults.fault_point(BEFORE_REPLACE)
        rows_table = self.tables.rows
        columns = ", ".join(self._row_columns())
        with self._transaction(f"replace {day}") as cursor:
            self._lock_date(cursor, submission_date)
            touched = crash_free.activity_dates(cursor, self.tables, submission_date)
            cursor.execute(f"DELETE FROM {rows_table} WHERE submission_date = %s",
                           (submission_date,))
            cursor.execute(f"INSERT INTO {rows_table} ({columns}) "
                           f"SELECT {columns} FROM {staging} ORDER BY seq")
            if cursor.rowcount != expected:
                raise StoreError(f"PostgreSQL at {self.url}: cannot replace {day}: the staging "
                                 f"table holds {cursor.rowcount} rows, not {expected}")
            cursor.execute(f"SELECT DISTINCT activity_date FROM {staging}")
            touched.update(found for (found,) in cursor.fetchall())
            crash_free.refresh(cursor, self.tables, touched)
            self._insert_run(cursor, run)
            cursor.execute(f"DROP TABLE {staging}")
            faults.fault_point(BEFORE_COMMIT)

    def close_staging(self, staging: str) -> None:
        """Drop the staging table (if the swap did not) and release its lock; best effort:
        a table left by a lost connection is the next run's to drop. An interrupted load's
        tasks may still hold the table: the drop waits 10 s at most, then leaves it too."""
        try:
            with self._transaction("drop a staging table") as cursor:
                cursor.execute("SET LOCAL lock_timeout = '10s'")
                cursor.execute(f"DROP TABLE IF EXISTS {staging}")
                cursor.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))",
                               (self._STAGING_LOCK_NAMESPACE, staging))
        except StoreError:
            pass


def families_in(url: str) -> list[str]:
    """The families whose rows table holds rows, read in a read-only transaction: no table or
    migration is made (a database without the store's tables is a StoreError)."""
    server = _Server(url)
    try:
        with server._transaction("read which families it holds") as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            legacy = tables()
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                           (legacy.rows, legacy.runs))
            if not cursor.fetchone()[0]:
                raise StoreError(no_store(url))
            held = []
            for names in ALL_TABLES:
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (names.rows,))
                if not cursor.fetchone()[0]:
                    continue  # a database no writer of this release has opened yet
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {names.rows})")
                if cursor.fetchone()[0]:
                    held.append(names.family)
            return held
    finally:
        server.close()


def _plain(value: object) -> object:
    """Dates and times as ISO text, as the SQLite store returns them."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value
