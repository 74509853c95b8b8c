"""The Parquet store: one hive partition a submission date, the layout Spark, Trino/Presto,
Athena and DuckDB read as one table.

    URL/crash_aggregates/v1/submission_date=YYYY-MM-DD/part-<run id>.parquet
                                                      /_SUCCESS   (JSON: run, files, counters)

Columns: `activity_date` string, `dimensions` map<string,string>, `stats` map<string,double>.

Replacing a partition, all or nothing:

- on a local filesystem the new partition is written aside (`crash_aggregates/_staging/`), then
  swapped in with two renames (old partition out, new one in); a reader sees the old files or
  the new ones, never a mix. A crash between the two renames leaves the date without a partition
  until the store is opened again, which puts the old one back (and clears leftovers);
- on object storage there are no renames: the new file is written under a name of its own, then
  `_SUCCESS` (one PUT, atomic) is rewritten to list it, then the old files are deleted. A reader
  that lists the folder between those steps can see old and new files together; one that reads
  the files `_SUCCESS` lists always sees one complete version.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ..aggregation import Aggregate
from ..errors import StoreError
from ..sources import filesystem
from .base import RunRecord, row_sort_key

TABLE = "crash_aggregates"
VERSION = "v1"
MARKER = "_SUCCESS"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise StoreError("Parquet output needs the parquet extra: "
                         "pip install 'crash-rate-aggregates[parquet]'") from None
    return pyarrow


def to_table(rows: Sequence[Aggregate]) -> Any:
    pa = _pyarrow()
    return pa.table({
        "activity_date": pa.array([r.activity_date for r in rows], pa.string()),
        "dimensions": pa.array([list(r.dimensions.items()) for r in rows],
                               pa.map_(pa.string(), pa.string())),
        "stats": pa.array([list(r.stats.items()) for r in rows], pa.map_(pa.string(),
                                                                          pa.float64())),
    })


class ParquetStore:
    def __init__(self, url: str) -> None:
        _pyarrow()
        self.url = url
        self.fs, root = filesystem(url, StoreError)
        self.root = posixpath.join(root.rstrip("/"), TABLE, VERSION)
        self.staging = posixpath.join(root.rstrip("/"), TABLE, "_staging")
        self.local = "file" in _protocols(self.fs)
        if self.local:
            self._recover()

    def partition(self, day: date | str) -> str:
        text = day if isinstance(day, str) else day.isoformat()
        return f"{self.root}/submission_date={text}"

    def replace_date(self, submission_date: date, rows: Sequence[Aggregate],
                     run: RunRecord) -> None:
        self.prepare(submission_date, rows, run).commit()

    def prepare(self, submission_date: date, rows: Sequence[Aggregate],
                run: RunRecord) -> Staged:
        """Write the date's new version where readers do not look yet (the slow part, and the
        one a full disk breaks); `commit` then makes it the partition, `abort` forgets it.
        fill prepares Parquet, commits the database, then commits Parquet."""
        name = f"part-{run.run_id}.parquet"
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
        try:
            yield
        except OSError as exc:
            raise StoreError(f"cannot write Parquet for {day} under {self.url}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    def _write_file(self, folder: str, name: str, rows: Sequence[Aggregate]) -> None:
        pq = _pyarrow().parquet
        self.fs.makedirs(folder, exist_ok=True)
        with self.fs.open(f"{folder}/{name}", "wb") as out:
            pq.write_table(to_table(rows), out, compression="zstd")

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
                for record in table.to_pylist():
                    rows.append((day, Aggregate(record["activity_date"],
                                                dict(record["dimensions"]),
                                                dict(record["stats"]))))
        rows.sort(key=lambda pair: (pair[0], row_sort_key(pair[1])))
        return rows

    def read_runs(self, submission_date: date | None = None) -> list[dict[str, Any]]:
        return [marker["run"] for day, marker in sorted(self.markers().items())
                if submission_date is None or day == submission_date.isoformat()]

    def close(self) -> None:
        pass


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
        """Two renames: the old partition out, the new one in; undone on any interruption."""
        fs = self.store.fs
        moved_out = False
        try:
            fs.makedirs(self.store.root, exist_ok=True)
            if fs.exists(self.target):
                fs.mv(self.target, self.old, recursive=True)
                moved_out = True
            fs.mv(self.new, self.target, recursive=True)
        except BaseException:  # an error, Ctrl-C or SIGTERM: put things back as they were
            if moved_out and not fs.exists(self.target):
                fs.mv(self.old, self.target, recursive=True)
            self.abort()
            raise
        if fs.exists(self.old):
            fs.rm(self.old, recursive=True)

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
