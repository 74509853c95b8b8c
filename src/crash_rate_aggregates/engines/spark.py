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
   engine does). Only those aggregates and the counters reach the driver.

Every sum is of integers (the family's measures: legacy usage in seconds, Glean usage in
nanoseconds), in Python's exact arithmetic,
so the order in which Spark combines values never shows; the driver divides each total once
by its unit (`aggregation.stats_from_totals`), as the local engine does: the same floats.

Shuffles carry ~100 bytes a ping (hashes, key, 8 measures), against ~100 KB of JSON read.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

import numpy as np

from .. import families, faults, rules, sketches
from ..aggregation import Aggregate, client_hash, hash64, stats_from_totals
from ..errors import InputError, UsageError
from ..sources import PingFile, PingStore
from .local import BlankLines, ScanSpec, file_outcomes

SESSION_STARTING = faults.define("spark.session_starting", "the Spark session (a JVM) is about to "
                                 "be started")
JOB_STARTING = faults.define("spark.job_starting", "the session is up and the day's Spark job "
                             "is about to run")
DateRows = dict[date, tuple[list[Aggregate], dict[str, int], list[str]]]
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
    if a and isinstance(a[0], tuple):
        return _sum(a[0], b[0]), tuple(max(x, y) for x, y in zip(a[1], b[1], strict=True))
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
    # (sums, maxima): the stats summed over clients, then each crash measure's largest client
    yield ("stats", day, agg_key), ((*sums, 1, *(s * s for s in sums[1:n]),
                                     *(c * usage for c in sums[2:n])), tuple(sums[2:n]))
    if isinstance(client, int):  # (a ping without client id has its order for a client)
        yield ("clients", day, agg_key), [(client, tuple(c > 0 for c in sums[2:n]))]


def _sketches_of(item: tuple[tuple[Any, ...], Any]) -> tuple[tuple[Any, ...], Any]:
    """An aggregate's list of clients becomes its sketches (in the executor), as the local
    engine makes them from the same client hashes."""
    key, value = item
    if key[0] != "clients":
        return item
    hashes = np.array([client for client, _ in value], dtype=np.uint64)
    found: dict[int, bytes | None] = {-1: sketches.sketch_of(hashes)}
    for index in range(len(value[0][1])):
        chosen = [client for client, crashed in value if crashed[index]]
        found[index] = sketches.sketch_of(np.array(chosen, dtype=np.uint64))
    return key, found


def scan_spark(spark: Any, store_url: str, files: list[PingFile], spec: ScanSpec
               ) -> tuple[DateRows, int]:
    """Per date: its aggregates and counters; and the run's undated lines."""
    try:
        return _scan(spark, store_url, files, spec)
    except Exception as exc:  # a task's InputError arrives wrapped in a Java exception
        found = re.search(r"crash_rate_aggregates\.errors\.\w+: (.*)", str(exc))
        if found is None:
            raise
        raise InputError(found[1].strip()) from None


def _scan(spark: Any, store_url: str, files: list[PingFile], spec: ScanSpec
          ) -> tuple[DateRows, int]:
    # One job, three reduces: dedupe (and counts), per client, per aggregate; one more for the
    # crash ids of a family that has them. Fewer, larger stages: Spark's cost here is per task,
    # not per record.
    family = families.family(spec.family)
    context = spark.sparkContext
    partitions = max(1, context.defaultParallelism)
    faults.fault_point(JOB_STARTING)
    deduped = (context.parallelize(list(enumerate(files)), max(1, len(files)))
               .mapPartitions(lambda part: _read_file(store_url, spec, part))
               .reduceByKey(_first_read, partitions))
    if family.CRASH_IDS and spec.dedupe:
        deduped = deduped.map(_by_crash_id).reduceByKey(_first_read, partitions)
    results = (deduped
               .flatMap(_after_dedupe)
               .reduceByKey(_sum, partitions)
               .flatMap(_client_to_key)
               .reduceByKey(_sum, partitions)
               .map(_sketches_of)
               .collect())
    counts = {(key[1], key[2]): value for key, value in results if key[0] == "count"}
    totals = [((key[1], key[2]), (*value[0], *value[1])) for key, value in results
              if key[0] == "stats"]
    clients = {(key[1], key[2]): value for key, value in results if key[0] == "clients"}
    names = sketches.names(family.CRASH_MEASURES)

    wanted = [spec.layout_date] if spec.layout_date is not None else sorted(spec.wanted)
    out: DateRows = {day: ([], {name: 0 for name in family.COUNTERS}, []) for day in wanted}
    for (day_ordinal, key), values in totals:
        activity, dims = family.key_to_row(key)
        rows = out[date.fromordinal(day_ordinal)][0]
        made = clients.get((day_ordinal, key), {})
        rows.append(Aggregate(activity, dims, stats_from_totals(values, spec.family),
                              {name: made.get(index) for name, index in
                               zip(names, range(-1, len(names) - 1), strict=True)}))
    undated = 0
    for (day_ordinal, counter), count in counts.items():
        if day_ordinal is None:
            undated += count
        else:
            counters = out[date.fromordinal(day_ordinal)][1]
            counters[counter] = counters.get(counter, 0) + count
    for rows, _, _ in out.values():
        rows.sort(key=lambda row: (row.activity_date, sorted(row.dimensions.items())))
    return out, undated
