"""The Parquet store: one hive partition a submission date, the layout Spark, Trino/Presto,
Athena and DuckDB read as one table.

    URL/crash_aggregates/v1/submission_date=YYYY-MM-DD/part-00000.parquet  (object stores:
                                                      /_SUCCESS          part-<run id>.parquet)
    (_SUCCESS is JSON: run, files, counters)

Each ping family has its own table folder, named as its database table: the Glean family's is
`URL/glean_crash_aggregates/v1/...` (with its own `_staging/`), the same layout and swaps.

Columns: `activity_date` string, `dimensions` map<string,string>, `stats` map<string,double>.

Replacing a partition, all or nothing:

- on a local filesystem the new partition is written aside (`crash_aggregates/_staging/`), then
  exchanged with the old one in one step (Linux `renameat2(RENAME_EXCHANGE)`): a reader
  listing the folder finds the old partition or the new one at every moment, never a mix and
  never none. Every local version names its file alike (LOCAL_FILE), so a reader that listed
  the old folder and opens the file by name after the exchange reads the new version; the old
  partition moves to `_retired/` and is deleted RETAIN_SECONDS later, so a reader inside it
  reads on. A job killed at any point leaves the old partition or the new one; opening the
  store clears what it left in the staging folder.
  Where there is no exchange (another system, a filesystem without it), two renames do it (old
  partition out, new one in): a crash between them leaves the date without a partition until
  the store is opened again, which puts the old one back;
- on object storage there are no renames: the new file is written under a name of its own, then
  `_SUCCESS` (one PUT, atomic) is rewritten to list it, then the old files are deleted. A reader
  that lists the folder between those steps can see old and new files together; one that reads
  the files `_SUCCESS` lists always sees one complete version.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import posixpath
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any, Protocol

import numpy as np

from .. import families, faults
from ..aggregate_table import Aggregate, AggregateTable
from ..errors import StoreError
from ..sources import filesystem
from .base import RunRecord, redact, row_sort_key
from .queries import sketch_columns, sketch_names

#: The legacy family's table folder (`families.table(family)` for any family's).
TABLE = families.table(families.DEFAULT)
VERSION = "v1"
MARKER = "_SUCCESS"

BEFORE_SWAP = faults.define("parquet.before_swap", "a date's new partition staged beside the "
                            "old one (in a fill with --db: after the database committed)")
AFTER_EXCHANGE = faults.define("parquet.after_exchange", "the new partition exchanged in; the "
                               "old one, now in the staging folder, not deleted yet")
BETWEEN_RENAMES = faults.define("parquet.between_renames", "without an exchange: the old "
                                "partition moved out, the new one not moved in yet")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
#: errno values of a system or filesystem that has no exchange: two renames instead.
_NO_EXCHANGE = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def _load_renameat2() -> Any:
    """glibc's renameat2 (2.28 and later), or None off Linux or without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
#: Whether this system has the exchange (a filesystem may still refuse it: two renames then).
CAN_EXCHANGE = _renameat2 is not None


def exchange(first: str, second: str) -> bool:
    """Swap two existing folders in one step, so that each path always names one of them.
    False where the system or the filesystem cannot (nothing was changed then)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                  _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), second)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise StoreError("Parquet output needs the parquet extra: "
                         "pip install 'crash-rate-aggregates[parquet]'") from None
    return pyarrow


def to_table(rows: Sequence[Aggregate], family: str = families.DEFAULT) -> Any:
    """The rows as an Arrow table: activity date, dimensions and stats as maps, then one
    binary column per distinct-client sketch (null for none), which Spark's `hll_union_agg`
    and `hll_sketch_estimate` read as they are. An `AggregateTable`'s made from its columns
    (`table_batch`)."""
    pa = _pyarrow()
    if isinstance(rows, AggregateTable):
        return table_batch(rows, 0, len(rows))
    columns = {
        "activity_date": pa.array([r.activity_date for r in rows], pa.string()),
        "dimensions": pa.array([list(r.dimensions.items()) for r in rows],
                               pa.map_(pa.string(), pa.string())),
        "stats": pa.array([list(r.stats.items()) for r in rows], pa.map_(pa.string(),
                                                                          pa.float64())),
    }
    for name, column in zip(sketch_names(family), sketch_columns(family), strict=True):
        columns[column] = pa.array([r.sketches.get(name) for r in rows], pa.binary())
    return pa.table(columns)


def table_batch(table: AggregateTable, start: int, stop: int) -> Any:
    """Rows [start, stop) of an AggregateTable as the Arrow table `to_table` makes of their
    Aggregates (same schema, same values, maps in the same order), built from its arrays: the
    stats map's values are the stats matrix's rows, its keys the family's STATS names."""
    pa = _pyarrow()
    family = families.family(table.family)
    stat_names, dimension_names = _names(table.family)
    stats = np.ascontiguousarray(table.stats[start:stop], dtype=np.float64)
    rows, width = stats.shape
    assert width == len(family.STATS)
    offsets, names, values = table.dimension_items(start, stop)
    columns = {
        "activity_date": pa.array(table.activity_dates(start, stop), pa.string()),
        "dimensions": pa.MapArray.from_arrays(
            pa.array(offsets, pa.int32()), dimension_names.take(pa.array(names)),
            pa.array(values, pa.string()), type=pa.map_(pa.string(), pa.string())),
        "stats": pa.MapArray.from_arrays(
            pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32), pa.int32()),
            stat_names.take(pa.array(np.tile(np.arange(width), rows))),
            pa.array(stats.reshape(-1), pa.float64()),
            type=pa.map_(pa.string(), pa.float64())),
    }
    for name, column in zip(sketch_names(table.family), sketch_columns(table.family),
                            strict=True):
        columns[column] = pa.array(table.sketch_column(name, start, stop), pa.binary())
    return pa.table(columns)


@functools.cache
def _names(family: str) -> tuple[Any, Any]:
    """A family's STATS and DIMENSION_NAMES as Arrow string arrays."""
    pa = _pyarrow()
    module = families.family(family)
    return (pa.array(module.STATS, pa.string()), pa.array(module.DIMENSION_NAMES, pa.string()))


#: Rows an Arrow batch holds when a file is written a batch at a time (`write_rows`).
BATCH_ROWS = 50_000


def write_rows(fs: Any, path: str, rows: Iterable[Aggregate], family: str = families.DEFAULT
               ) -> int:
    """`rows` as one Parquet file at `path` of `fs`, a batch at a time (the Spark engine's
    executors write a date of any size so; an `AggregateTable` from its arrays, `table_batch`);
    the schema and compression of `to_table`'s file. The number of rows written."""
    pq = _pyarrow().parquet
    schema = to_table([], family).schema
    written = 0
    with fs.open(path, "wb") as out, pq.ParquetWriter(out, schema, compression="zstd") as file:
        if isinstance(rows, AggregateTable):  # from its arrays, a batch at a time
            for start in range(0, len(rows), BATCH_ROWS):
                batch = table_batch(rows, start, min(start + BATCH_ROWS, len(rows)))
                file.write_table(batch)
                written += batch.num_rows
            return written
        source = iter(rows)
        while chunk := list(islice(source, BATCH_ROWS)):
            file.write_table(to_table(chunk, family))
            written += len(chunk)
    return written


class PartitionRows(Protocol):
    """A date's rows that write their own Parquet file (the Spark engine's, on its
    executors: `engines.spark.SparkRows`) rather than a list the driver holds."""

    def __len__(self) -> int: ...

    def write_parquet(self, store_url: str, family: str, folder: str, name: str) -> None:
        """Write the rows, sorted as `row_sort_key`, to `folder/name` under `store_url`."""


#: How long an old partition exchanged out is kept (in `<table>/_retired/`) before it is
#: deleted: a reader that resolved the partition's folder just before the exchange lists and
#: reads the old files for that long (as Delta Lake's VACUUM keeps old files for a retention
#: period). Deleting at the next swap, as before, emptied a folder readers were still listing.
RETAIN_SECONDS = 600.0
#: The data file of a local partition, the same in every version (see `prepare`).
LOCAL_FILE = "part-00000.parquet"


class ParquetStore:
    def __init__(self, url: str, family: str = families.DEFAULT,
                 retain_seconds: float = RETAIN_SECONDS) -> None:
        """The table folder of `family` under `url`; another family's folder beside it is
        never read, written or cleared."""
        table = families.table(family)
        _pyarrow()
        self.url = url
        self.family = family
        self.fs, root = filesystem(url, StoreError)
        self.root = posixpath.join(root.rstrip("/"), table, VERSION)
        self.staging = posixpath.join(root.rstrip("/"), table, "_staging")
        #: Old partitions exchanged out, named `<retired at, ns>-<date>`, kept for
        #: `retain_seconds` (see RETAIN_SECONDS).
        self.retired = posixpath.join(root.rstrip("/"), table, "_retired")
        self.retain_seconds = retain_seconds
        self.local = "file" in _protocols(self.fs)
        if self.local:
            self._recover()
            self._delete_retired()

    def partition(self, day: date | str) -> str:
        text = day if isinstance(day, str) else day.isoformat()
        return f"{self.root}/submission_date={text}"

    def replace_date(self, submission_date: date, rows: Sequence[Aggregate] | PartitionRows,
                     run: RunRecord) -> None:
        self.prepare(submission_date, rows, run).commit()

    def prepare(self, submission_date: date, rows: Sequence[Aggregate] | PartitionRows,
                run: RunRecord) -> Staged:
        """Write the date's new version where readers do not look yet (the slow part, and the
        one a full disk breaks); `commit` then makes it the partition, `abort` forgets it.
        fill prepares Parquet, commits the database, then commits Parquet. Rows that write
        themselves (PartitionRows) write the same one file into the same staged folder (or,
        on object storage, under the same name)."""
        # Locally every version of a partition names its file alike: a reader that listed the
        # old folder and opens the file by name after the exchange reads the new version,
        # where a name of the run's own was gone and a listing reader (pyarrow.dataset) went
        # on without the date. Object stores have no exchange: each version a name of its own.
        name = LOCAL_FILE if self.local else f"part-{run.run_id}.parquet"
        marker = {"run_id": run.run_id, "files": [name], "rows": len(rows),
                  "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "run": _run_json(run)}
        target = self.partition(submission_date)
        if self.local:
            # The writer's pid in the names: recovery leaves alone what a live job writes.
            stem = f"{self.staging}/{run.run_id}-{os.getpid()}-{submission_date}"
            staged = Staged(self, submission_date, target, f"{stem}-new", f"{stem}-old", name,
                            marker)
            with self._errors(submission_date):
                try:
                    self._write_file(staged.new, name, rows)
                    self._write_marker(staged.new, marker)
                except BaseException:
                    staged.abort()
                    raise
        else:
            staged = Staged(self, submission_date, target, f"{target}/{name}", "", name, marker)
            with self._errors(submission_date):
                try:
                    self._write_file(target, name, rows)
                except BaseException:
                    staged.abort()
                    raise
        return staged

    @contextmanager
    def _errors(self, day: date) -> Iterator[None]:
        where = f"cannot write Parquet for {day} under {redact(self.url)}"
        try:
            yield
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
        except Exception as exc:  # an object store's own (botocore's expired credentials...)
            raise StoreError(f"{where}: {type(exc).__name__}: {redact(str(exc))}") from None

    def _write_file(self, folder: str, name: str,
                    rows: Sequence[Aggregate] | PartitionRows) -> None:
        self.fs.makedirs(folder, exist_ok=True)
        if not isinstance(rows, Sequence):
            rows.write_parquet(self.url, self.family, folder, name)
            return
        if isinstance(rows, AggregateTable):
            # a batch at a time: a whole day's Arrow table repeats every stat's name a row
            write_rows(self.fs, f"{folder}/{name}", rows, self.family)
            return
        with self.fs.open(f"{folder}/{name}", "wb") as out:
            _pyarrow().parquet.write_table(to_table(rows, self.family), out,
                                           compression="zstd")

    def _write_marker(self, folder: str, marker: dict[str, Any]) -> None:
        with self.fs.open(f"{folder}/{MARKER}", "wb") as out:
            out.write(json.dumps(marker, indent=1).encode())

    def _recover(self) -> None:
        """Finish swaps a killed job left: put back an old partition that was moved out and
        not replaced, and clear what is left in the staging folder, but leave alone what a
        job still running on this machine is writing."""
        if not self.fs.exists(self.staging):
            return
        for path in sorted(self.fs.ls(self.staging, detail=False)):
            base = posixpath.basename(path.rstrip("/"))
            if _writer_alive(base):
                continue
            if base.endswith("-old"):
                day = base[-len("YYYY-MM-DD-old"):-len("-old")]
                if not self.fs.exists(self.partition(day)):
                    self.fs.makedirs(self.root, exist_ok=True)
                    self.fs.mv(path, self.partition(day), recursive=True)
                    continue
            self.fs.rm(path, recursive=True)

    def retire(self, old_partition: str, day: str) -> None:
        """Keep an old partition exchanged out for `retain_seconds`, out of the staging folder
        (a rename: a reader inside it reads on); delete those retired longer ago."""
        os.makedirs(self.retired, exist_ok=True)
        os.rename(old_partition, posixpath.join(self.retired, f"{time.time_ns()}-{day}"))
        self._delete_retired()

    def _delete_retired(self) -> None:
        if not os.path.isdir(self.retired):
            return
        oldest_kept = time.time_ns() - int(self.retain_seconds * 1e9)
        for name in sorted(os.listdir(self.retired)):
            stamp = name.split("-", 1)[0]
            if not stamp.isdigit() or int(stamp) <= oldest_kept:
                shutil.rmtree(posixpath.join(self.retired, name), ignore_errors=True)

    def record_run(self, run: RunRecord) -> None:
        """A failed date leaves its partition as it was; runs are recorded in `--db`."""

    def markers(self) -> dict[str, dict[str, Any]]:
        """Each partition's `_SUCCESS`, by submission date."""
        found: dict[str, dict[str, Any]] = {}
        if not self.fs.exists(self.root):
            return found
        for path in self.fs.glob(f"{self.root}/submission_date=*/{MARKER}"):
            day = path.rsplit("submission_date=", 1)[1].split("/", 1)[0]
            with self.fs.open(path, "rb") as marker:
                found[day] = json.loads(marker.read())
        return found

    def read_rows(self, submission_date: date | None = None) -> list[tuple[str, Aggregate]]:
        """The rows of the files each `_SUCCESS` lists."""
        pq = _pyarrow().parquet
        rows: list[tuple[str, Aggregate]] = []
        for day, marker in sorted(self.markers().items()):
            if submission_date is not None and day != submission_date.isoformat():
                continue
            for name in marker["files"]:
                with self.fs.open(f"{self.partition(day)}/{name}", "rb") as source:
                    table = pq.read_table(source)
                names = zip(sketch_names(self.family), sketch_columns(self.family),
                            strict=True)
                present = [(name, column) for name, column in names
                           if column in table.column_names]  # (files of earlier releases)
                for record in table.to_pylist():
                    rows.append((day, Aggregate(
                        record["activity_date"], dict(record["dimensions"]),
                        dict(record["stats"]),
                        {name: record[column] for name, column in present})))
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        return [marker["run"] for day, marker in sorted(self.markers().items())
                if submission_date is None or day == submission_date.isoformat()]

    def close(self) -> None:
        self._delete_retired()


@dataclass
class Staged:
    """A prepared partition: `new` (a staged folder, or the new file on object storage)."""

    store: ParquetStore
    day: date
    target: str
    new: str
    old: str
    name: str
    marker: dict[str, Any]

    def commit(self) -> None:
        with self.store._errors(self.day):
            if self.store.local:
                self._swap()
            else:
                self._publish()

    def abort(self) -> None:
        fs = self.store.fs
        if fs.exists(self.new):
            fs.rm(self.new, recursive=True)

    def _swap(self) -> None:
        """The staged partition in, the old one out, in one step; or, where there is no
        exchange, two renames. A partition that was never written is one rename."""
        fs = self.store.fs
        fs.makedirs(self.store.root, exist_ok=True)
        try:
            faults.fault_point(BEFORE_SWAP)
            if self._first_version() or self._exchanged():
                return
        except BaseException:  # an error, Ctrl-C or SIGTERM: the partition is whole either way
            self.abort()  # the staged folder: the new partition, or the old one exchanged out
            raise
        self._two_renames()

    def _first_version(self) -> bool:
        """No partition yet: rename the staged one in. False when there is one (perhaps made
        meanwhile by another job)."""
        if os.path.exists(self.target):
            return False
        try:
            os.rename(self.new, self.target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        return True

    def _exchanged(self) -> bool:
        if not exchange(self.new, self.target):
            return False
        faults.fault_point(AFTER_EXCHANGE)
        self.store.retire(self.new, self.day.isoformat())  # the old partition now
        return True

    def _two_renames(self) -> None:
        """The old partition out, the new one in; undone on any interruption. A kill between
        the two leaves no partition until the store is opened again (see _recover)."""
        moved_out = False
        try:
            if os.path.exists(self.target):
                os.rename(self.target, self.old)
                moved_out = True
            faults.fault_point(BETWEEN_RENAMES)
            os.rename(self.new, self.target)
        except BaseException:  # an error, Ctrl-C or SIGTERM: put things back as they were
            if moved_out and not os.path.exists(self.target):
                os.rename(self.old, self.target)
            self.abort()
            raise
        if os.path.exists(self.old):
            shutil.rmtree(self.old)

    def _publish(self) -> None:
        """Object storage: `_SUCCESS` names the new file (one atomic PUT), then old files go."""
        fs = self.store.fs
        self.store._write_marker(self.target, self.marker)
        for path in fs.ls(self.target, detail=False):
            if posixpath.basename(path.rstrip("/")) not in (self.name, MARKER):
                fs.rm(path)


def _writer_alive(staged: str) -> bool:
    """Whether the process named in a staged folder (`<run>-<pid>-<date>-new|old`) runs."""
    parts = staged.rsplit("-", 5)  # run id, pid, YYYY, MM, DD, new|old
    if len(parts) != 6 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # this process is not writing it: a store is opened before writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _run_json(run: RunRecord) -> dict[str, Any]:
    from .base import RUN_COLUMNS

    return dict(zip(RUN_COLUMNS, run.values(), strict=True))
