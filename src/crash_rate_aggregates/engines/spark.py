"""The Spark engine: the same rules and the same rows, spread over a SparkSession.

The driver lists the day's files (as the local engine does) and makes one task per file.
Each task reads its file's bytes with `sources.iter_lines` and applies the spec's family's
`evaluate_line` (`rules` for legacy pings, `families.glean`): the one rules module, shipped
to the executors with the package, never rewritten as Spark expressions. Bytes, not Spark's
text reader, because the text reader decodes lines as UTF-8 and silently replaces invalid
bytes, which would turn malformed lines into pings.

Then, in one Spark job of three reduces (four for a family with crash ids), without
collecting pings to the driver:

1. dedupe: pings with a document id are reduced by (date, id) to the copy read first (lowest
   file index, then line number: the order the local engine reads them in with one worker),
   counting the copies; counters of lines that were final where they were read ride along;
   then (Glean) the pings kept that have a crash id (minidump hash) are reduced by (date,
   crash id) the same way;
2. kept pings become counts of their kind, and processed ones their measures and squares,
   summed per (date, key, client);
3. each client's sums become its share of the family's stats, summed per (date, key) (the
   largest client's crash counts, client_<crash>_max, taken by maximum), and
   each client with a client id joins its aggregate's list of clients, from which the
   executor makes the aggregate's distinct-client sketches (`sketches.sketch_of`, as the local
   engine does), then its stored row (`_to_row`). The rows stay on the executors, cached
   (memory and disk); only the counters and each date's number of rows reach the driver.

Then the stores take each date's rows (`SparkRows`) without the driver holding them: Parquet
has one executor task sort the date's rows and write them, a batch at a time, as the one file
the local engine writes, into the store's staging folder (the driver then swaps it in as
before); PostgreSQL has each executor task COPY a range partition of ROWS_PER_CHUNK sorted
rows into the run's staging table, which the date's one transaction swaps in
(`SparkRows.replace_in`); SQLite gets them streamed, a partition at a time
(`toLocalIterator`), into the date's one transaction. `scan_spark` collects them instead,
for tests and small runs.

Every sum is of integers (the family's measures: legacy usage in seconds, Glean usage in
nanoseconds), in Python's exact arithmetic,
so the order in which Spark combines values never shows; the executor divides each total once
by its unit (`aggregation.stats_from_totals`), as the local engine does: the same floats.

Shuffles carry ~100 bytes a ping (hashes, key, 8 measures), against ~100 KB of JSON read.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any, TypeVar

import numpy as np

from .. import families, faults, rules, sketches
from ..aggregation import Aggregate, client_hash, hash64, stats_from_totals
from ..errors import CrashAggregatesError, InputError, StoreError, UsageError
from ..redact import redact_url
from ..sources import PingFile, PingStore, filesystem
from ..stores.base import row_sort_key
from .local import BlankLines, ScanSpec, file_outcomes

SESSION_STARTING = faults.define("spark.session_starting", "the Spark session (a JVM) is about to "
                                 "be started")
JOB_STARTING = faults.define("spark.job_starting", "the session is up and the day's Spark job "
                             "is about to run")
STAGED = faults.define("spark.staged", "the executors COPYed a date's rows into the run's "
                       "PostgreSQL staging table; the date's transaction not begun")
DateRows = dict[date, tuple[list[Aggregate], dict[str, int], list[str]]]
_T = TypeVar("_T")
_KINDS = (rules.MAIN_PROCESSED, rules.MAIN_IGNORED, rules.CRASH_PROCESSED, rules.CRASH_IGNORED)


def spark_session(master: str | None = None) -> Any:
    """The active session (spark-submit's), else a new one: `master`, default local[*], UTC."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("the Spark engine needs the spark extra: "
                         "pip install 'crash-rate-aggregates[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    # Local Python workers run this interpreter, the one that has the package installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("crash-aggregates")
    # Under spark-submit (which starts the JVM and says so in PYSPARK_GATEWAY_PORT) the master
    # comes from its --master and configuration; run by hand, the default is a local session.
    if master is not None or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or "local[*]")
    faults.fault_point(SESSION_STARTING)
    session = (builder.config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


def _read_file(store_url: str, spec: ScanSpec, indexed: Iterable[tuple[int, PingFile]]
               ) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """One task, as (key, value) pairs for one reduce:

    - (("count", date, counter), n) for lines whose counter is final where they are read;
    - (("id", date, id hash), (record, 1)) for pings with a document id (to dedupe);
    - (("once", date, order), (record, 1)) for pings without one.

    A record is (date ordinal, order, kind, key, client, measures, crash id hash or None);
    `order` is (file index, line number), the order in which the local engine reads lines with
    one worker.
    """
    store = PingStore(store_url)
    corrupt: Counter[tuple[int | None, str]] = Counter()
    for file_index, file in indexed:
        items = _file_items(store, file_index, file, spec)
        try:
            # when corrupt files are skipped, a file's items go out only once it was all read
            yield from list(items) if spec.skip_corrupt else items
        except InputError:
            if not spec.skip_corrupt:
                raise
            for day in [spec.layout_date] if spec.layout_date else sorted(spec.wanted):
                corrupt[(day.toordinal(), rules.CORRUPT_FILES)] += 1
    for (day_ordinal, counter), count in corrupt.items():
        yield ("count", day_ordinal, counter), count


def _file_items(store: PingStore, file_index: int, file: PingFile, spec: ScanSpec
                ) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """One file's pings, then its counts."""
    counts: Counter[tuple[int | None, str]] = Counter()
    for line_number, _, outcome in file_outcomes(store, file, spec):
        if outcome is None or isinstance(outcome, BlankLines):
            continue
        day = outcome.submission_date
        if day is None or outcome.counter not in _KINDS:
            counts[(day.toordinal() if day else None, outcome.counter)] += 1
            continue
        order = (file_index, line_number)
        client = client_hash(outcome.client_id) if outcome.key is not None else 0
        crash_id = outcome.crash_id
        record = (day.toordinal(), order, _KINDS.index(outcome.counter), outcome.key,
                  client if client else order,  # no client id: a client of its own
                  outcome.measures, hash64(crash_id) if crash_id is not None else None)
        if outcome.doc_id is None:
            yield ("once", day.toordinal(), order), (record, 1)
        else:
            yield ("id", day.toordinal(), hash64(outcome.doc_id)), (record, 1)
    for (day_ordinal, counter), count in counts.items():
        yield ("count", day_ordinal, counter), count


def _first_read(a: Any, b: Any) -> Any:
    """Counts add up; of two copies of a ping, the one read first is kept."""
    if isinstance(a, int):
        return a + b
    keep = a[0] if a[0][1] <= b[0][1] else b[0]
    return keep, a[1] + b[1]


def _by_crash_id(item: tuple[tuple[Any, ...], Any]) -> tuple[tuple[Any, ...], Any]:
    """The second dedupe key: a ping kept by document id that has a crash id goes under
    (date, crash id); everything else keeps its key (unique after the first reduce)."""
    key, value = item
    if key[0] == "count" or value[0][6] is None:
        return item
    record = value[0]
    return ("crash", record[0], record[6]), value


def _after_dedupe(item: tuple[tuple[Any, ...], Any]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Counts go on; a kept ping becomes its kind's count, the count of its extra copies, and
    (processed pings) its measures and squares under (date, key, client)."""
    key, value = item
    if key[0] == "count":
        yield key, value
        return
    (day, _, kind, agg_key, client, measures, _), copies = value
    yield ("count", day, _KINDS[kind]), 1
    if copies > 1:
        yield ("count", day, rules.DUPLICATES), copies - 1
    if agg_key is not None:
        yield ("client", day, agg_key, client), (*measures, *(m * m for m in measures[1:]))


def _sum(a: Any, b: Any) -> Any:
    """Counts and integer sums, exactly (Python integers do not overflow); lists of clients
    (for the sketches) join; an aggregate's (sums, maxima) pair sums its sums and takes the
    larger of its maxima (client_<crash>_max)."""
    if isinstance(a, int | list):
        return a + b
    if a and isinstance(a[0], tuple):  # an aggregate's (sums, maxima, clients)
        return (_sum(a[0], b[0]), tuple(max(x, y) for x, y in zip(a[1], b[1], strict=True)),
                a[2] + b[2])
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _client_to_key(item: tuple[tuple[Any, ...], Any]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """A client's sums within an aggregate (its N measures, then N - 1 squares) become its
    share of the aggregate's stats; a client with a client id also joins the aggregate's list
    of clients, with which of its crash measures are not 0 (for the sketches)."""
    key, sums = item
    if key[0] == "count":
        yield key, sums
        return
    _, day, agg_key, client = key
    n = (len(sums) + 1) // 2
    usage = sums[1]
    # (sums, maxima, clients): the stats summed over clients, each crash measure's largest
    # client, and the clients with a client id (a ping without one has its order for one)
    clients = ([(client, tuple(c > 0 for c in sums[2:n]))] if isinstance(client, int)
               else [])
    yield ("agg", day, agg_key), ((*sums, 1, *(s * s for s in sums[1:n]),
                                   *(c * usage for c in sums[2:n])), tuple(sums[2:n]), clients)


def _sketches_of(clients: list[tuple[int, tuple[bool, ...]]], crash_measures: int
                 ) -> dict[int, bytes | None]:
    """An aggregate's clients as its sketches (-1: all its clients; i: those whose crash
    measure i is not 0), made in the executor from the client hashes the local engine uses."""
    if not clients:
        return {}
    hashes = np.array([client for client, _ in clients], dtype=np.uint64)
    found: dict[int, bytes | None] = {-1: sketches.sketch_of(hashes)}
    for index in range(crash_measures):
        chosen = [client for client, crashed in clients if crashed[index]]
        found[index] = sketches.sketch_of(np.array(chosen, dtype=np.uint64))
    return found


def _to_row(family_name: str, item: tuple[tuple[Any, ...], Any]) -> tuple[tuple[Any, ...], Any]:
    """An aggregate's sums, maxima and clients become its stored row, in the executor (each
    total divided once by `stats_from_totals`, as the local engine does: the same floats).
    Counts pass as they are."""
    key, value = item
    if key[0] != "agg":
        return item
    _, day_ordinal, agg_key = key
    sums, maxima, clients = value
    family = families.family(family_name)
    activity, dims = family.key_to_row(agg_key)
    made = _sketches_of(clients, len(maxima))
    names = sketches.names(family.CRASH_MEASURES)
    return ("row", day_ordinal), Aggregate(
        activity, dims, stats_from_totals((*sums, *maxima), family_name),
        {name: made.get(index) for name, index in
         zip(names, range(-1, len(names) - 1), strict=True)})


def _tally(item: tuple[tuple[Any, ...], Any]) -> tuple[tuple[Any, ...], int]:
    """What the driver collects: counters as they are, and each row as one of its date's."""
    key, value = item
    return (key, 1) if key[0] == "row" else (key, value)


def _add(a: int, b: int) -> int:
    return a + b


def _row_of(day_ordinal: int, item: tuple[tuple[Any, ...], Any]) -> bool:
    return item[0] == ("row", day_ordinal)


def _write_part(store_url: str, family: str, folder: str, name: str,
                rows: Iterable[tuple[Any, Aggregate]]) -> Iterator[int]:
    """One task: its (sorted) rows as one Parquet file, a batch at a time; its row count."""
    from pyspark import TaskContext

    from ..stores.parquet import write_rows

    fs, _ = filesystem(store_url, StoreError)
    path = f"{folder}/{name}"
    # Locally each attempt of the task writes a file of its own, renamed over the name when
    # whole: a retried or speculative attempt never writes into another's file. (An object
    # store's PUT is whole or nothing already.)
    local = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)
    task = TaskContext.get()
    written_to = f"{folder}/.{name}.{task.taskAttemptId() if task else 0}" if local else path
    try:
        fs.makedirs(folder, exist_ok=True)  # (on another machine than the driver's: its own)
        count = write_rows(fs, written_to, (row for _, row in rows), family)
        if local:
            os.replace(written_to, path)
    except Exception as exc:  # a full disk, an object store's refusal: one line, to the driver
        raise StoreError(f"{type(exc).__name__}: {exc}") from None
    yield count


def _copy_part(url: str, secrets: list[str], shown: str, staging: str, columns: list[str],
               day: str, names: tuple[str, ...], index: int,
               rows: Iterable[tuple[Any, Aggregate]]) -> Iterator[int]:
    """One task: its (sorted) rows COPYed into the staging table, as the store's COPY text
    (`copy_line`) after their place in the date's order (`seq`: the partition, then the row),
    in one transaction of its own; its row count. A retried or speculative attempt of the task
    replaces the partition's rows (under a lock of the partition), never adds to them."""
    import psycopg

    from ..redact import scrub
    from ..stores.postgres import _COPY_BLOCK, APPLICATION_NAME, copy_line

    count = 0
    try:
        with psycopg.connect(url, application_name=APPLICATION_NAME, connect_timeout=10
                             ) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (staging, index))
            # every attempt: a speculative one, or a stage's retry (its attempts count from
            # 0 again), may come after another attempt of this partition committed
            cursor.execute(f"DELETE FROM {staging} WHERE seq >> 32 = %s", (index,))
            with cursor.copy(f"COPY {staging} ({', '.join(columns)}) FROM STDIN") as copy:
                block: list[bytes] = []
                size = 0
                for _, row in rows:
                    line = b"%d\t%b" % ((index << 32) | count, copy_line(day, row, names))
                    block.append(line)
                    size += len(line)
                    count += 1
                    if size >= _COPY_BLOCK:
                        copy.write(b"".join(block))
                        block, size = [], 0
                if block:
                    copy.write(b"".join(block))
    except psycopg.Error as exc:  # one line, to the driver, without the password
        message = scrub(" ".join(str(exc).split()) or type(exc).__name__, secrets)
        raise StoreError(f"PostgreSQL at {shown}: cannot load {day} into {staging}: "
                         f"{message}") from None
    yield count


#: How a date's rows reach PostgreSQL unless `fill --spark-postgres-load` says (its default):
#: "staging", each executor task COPYs its partition
#: into a staging table that one transaction swaps in (`SparkRows.replace_in`); "stream",
#: through the driver a partition at a time (`SparkRows.__iter__`), as SQLite gets them.
POSTGRES_LOAD = "staging"

#: The most rows of a date that reach the driver at once when they are streamed to a
#: database (`SparkRows.__iter__`): a partition of that many, give or take Spark's sampling
#: (at most a few hundred bytes to a few KB each).
ROWS_PER_CHUNK = 20_000


class SparkRows:
    """A date's rows, left on the executors (cached there, memory and disk) until a store
    takes them: `len` counts them, iterating streams them to the driver a partition at a
    time, sorted as the local engine's; `write_parquet` has one executor task write them."""

    def __init__(self, made: Any, day: date, count: int) -> None:
        self._made = made
        self.day = day
        self.count = count

    def __len__(self) -> int:
        return self.count

    def _rows(self) -> Any:
        """(sort key, row) pairs of this date."""
        return (self._made.filter(partial(_row_of, self.day.toordinal()))
                .map(lambda item: (row_sort_key(item[1]), item[1])))

    def _sorted(self) -> Any:
        """The pairs in range partitions of about ROWS_PER_CHUNK in key order, each sorted."""
        return self._rows().sortByKey(True, -(-self.count // ROWS_PER_CHUNK))

    def replace_in(self, store: Any, run: Any, load: str | None = None) -> bool:
        """PostgreSQL's `replace_date`, the rows never on the driver (POSTGRES_LOAD
        "staging"): the executor tasks COPY them into the run's staging table, then one
        transaction swaps them in (`PostgresStore.replace_date_staged`); a failed or killed
        load leaves the old rows, and a killed one a staging table that the next run drops.
        False (nothing done) for another store, or when `load` (else POSTGRES_LOAD) is
        "stream"."""
        from ..stores.postgres import PostgresStore

        if (load or POSTGRES_LOAD) != "staging" or not isinstance(store, PostgresStore):
            return False
        staging, columns = store.open_staging(run.run_id)
        try:
            if self.count:
                from ..redact import url_secrets

                url = store.staging_url()
                copies = self._sorted().mapPartitionsWithIndex(partial(
                    _copy_part, url, [*url_secrets(url), *filter(None, [
                        os.environ.get("PGPASSWORD")])], store.url, staging, columns,
                    self.day.isoformat(), sketches.names(
                        families.family(store.family).CRASH_MEASURES)))
                _mapped_errors(copies.collect)
            faults.fault_point(STAGED)
            store.replace_date_staged(self.day, staging, self.count, run)
        finally:
            store.close_staging(staging)
        return True

    def __iter__(self) -> Iterator[Aggregate]:
        """Sorts the rows on the executors now, then streams them: a store that takes the
        iterator before its transaction (SQLite's write lock, PostgreSQL's date lock) holds
        its lock only while the sorted partitions are fetched."""
        if not self.count:
            return iter(())
        from pyspark import StorageLevel

        # range partitions in key order, each sorted: toLocalIterator fetches them one by one
        ordered = self._sorted().persist(StorageLevel.MEMORY_AND_DISK)
        try:
            _mapped_errors(ordered.count)
        except BaseException:
            ordered.unpersist()
            raise
        return self._fetched(ordered)

    @staticmethod
    def _fetched(ordered: Any) -> Iterator[Aggregate]:
        try:
            pairs = ordered.toLocalIterator()
            while True:
                try:
                    _, row = _mapped_errors(partial(next, pairs))
                except StopIteration:
                    return
                yield row
        finally:
            ordered.unpersist()

    def write_parquet(self, store_url: str, family: str, folder: str, name: str) -> None:
        """The rows as `folder/name` (one file, as the local engine's; rows in the same
        order), written by one task: sorted in it by Spark's external sorter, which spills to
        disk, and written a batch at a time."""
        job = (self._rows()
               .repartitionAndSortWithinPartitions(1, lambda _: 0)
               .mapPartitions(partial(_write_part, store_url, family, folder, name)))
        try:
            written = sum(_mapped_errors(job.collect))
        except StoreError as exc:
            raise StoreError(f"cannot write Parquet for {self.day} under "
                             f"{redact_url(store_url)}: {exc}") from None
        if written != self.count:  # (a task run twice writes the same file again, whole)
            raise StoreError(f"wrote {written} rows of {self.day} to Parquet, not {self.count}")


@dataclass
class SparkScan:
    """A run's aggregates, on the executors until `release`: per date, its rows and
    counters (and notes: none, as the engine does not skip files silently); the undated
    lines."""

    days: dict[date, tuple[SparkRows, dict[str, int], list[str]]]
    undated: int
    _made: Any

    def release(self) -> None:
        try:
            self._made.unpersist()
        except Exception:  # the session is gone (interrupted): its cache went with it
            pass


def scan_spark(spark: Any, store_url: str, files: list[PingFile], spec: ScanSpec
               ) -> tuple[DateRows, int]:
    """Per date: its aggregates (collected: for tests and small runs) and counters; and the
    run's undated lines."""
    scanned = scan_spark_rows(spark, store_url, files, spec)
    try:
        return {day: (list(rows), counters, notes)
                for day, (rows, counters, notes) in scanned.days.items()}, scanned.undated
    finally:
        scanned.release()


def scan_spark_rows(spark: Any, store_url: str, files: list[PingFile], spec: ScanSpec
                    ) -> SparkScan:
    """Per date: its aggregates, left on the executors, and counters; the run's undated
    lines. Only counters and row counts reach the driver here."""
    return _mapped_errors(partial(_scan, spark, store_url, files, spec))


def _mapped_errors(action: Callable[[], _T]) -> _T:
    """A task's error of ours arrives wrapped in a Java exception: raised as itself."""
    try:
        return action()
    except CrashAggregatesError:
        raise
    except Exception as exc:
        found = re.search(r"crash_rate_aggregates\.errors\.(\w+): (.*)", str(exc))
        if found is None:
            raise
        kind = StoreError if found[1] == "StoreError" else InputError
        raise kind(found[2].strip()) from None


def _scan(spark: Any, store_url: str, files: list[PingFile], spec: ScanSpec) -> SparkScan:
    # One job, three reduces: dedupe (and counts), per client, per aggregate; one more for the
    # crash ids of a family that has them. Fewer, larger stages: Spark's cost here is per task,
    # not per record.
    from pyspark import StorageLevel

    family = families.family(spec.family)
    context = spark.sparkContext
    partitions = max(1, context.defaultParallelism)
    faults.fault_point(JOB_STARTING)
    deduped = (context.parallelize(list(enumerate(files)), max(1, len(files)))
               .mapPartitions(lambda part: _read_file(store_url, spec, part))
               .reduceByKey(_first_read, partitions))
    if family.CRASH_IDS and spec.dedupe:
        deduped = deduped.map(_by_crash_id).reduceByKey(_first_read, partitions)
    made = (deduped
            .flatMap(_after_dedupe)
            .reduceByKey(_sum, partitions)
            .flatMap(_client_to_key)
            .reduceByKey(_sum, partitions)
            .map(partial(_to_row, spec.family))
            .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        # the counters and each date's number of rows: what the driver holds of the run
        tallies = made.map(_tally).reduceByKey(_add, partitions).collect()
    except BaseException:
        made.unpersist()
        raise
    wanted = [spec.layout_date] if spec.layout_date is not None else sorted(spec.wanted)
    counters = {day: {name: 0 for name in family.COUNTERS} for day in wanted}
    row_counts = dict.fromkeys(wanted, 0)
    undated = 0
    for key, count in tallies:
        if key[0] == "row":
            row_counts[date.fromordinal(key[1])] = count
        elif key[1] is None:
            undated += count
        else:
            found = counters[date.fromordinal(key[1])]
            found[key[2]] = found.get(key[2], 0) + count
    days: dict[date, tuple[SparkRows, dict[str, int], list[str]]] = {
        day: (SparkRows(made, day, row_counts[day]), counters[day], []) for day in wanted}
    return SparkScan(days, undated, made)
