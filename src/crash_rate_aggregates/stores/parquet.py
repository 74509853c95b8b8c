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
import posixpath
from collections.abc import Sequence
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
        name = f"part-{run.run_id}.parquet"
        marker = {"run_id": run.run_id, "files": [name], "rows": len(rows),
                  "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "run": _run_json(run)}
        try:
            if self.local:
                self._swap_local(submission_date, rows, name, marker)
            else:
                self._replace_remote(submission_date, rows, name, marker)
        except OSError as exc:
            raise StoreError(f"cannot write Parquet for {submission_date} under {self.url}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    def _write(self, folder: str, rows: Sequence[Aggregate], name: str,
               marker: dict[str, Any]) -> None:
        pq = _pyarrow().parquet
        self.fs.makedirs(folder, exist_ok=True)
        with self.fs.open(f"{folder}/{name}", "wb") as out:
            pq.write_table(to_table(rows), out, compression="zstd")
        with self.fs.open(f"{folder}/{MARKER}", "wb") as out:
            out.write(json.dumps(marker, indent=1).encode())

    def _swap_local(self, day: date, rows: Sequence[Aggregate], name: str,
                    marker: dict[str, Any]) -> None:
        target = self.partition(day)
        new = f"{self.staging}/{marker['run_id']}-{day}-new"
        old = f"{self.staging}/{marker['run_id']}-{day}-old"
        try:
            self._write(new, rows, name, marker)
        except BaseException:
            if self.fs.exists(new):
                self.fs.rm(new, recursive=True)
            raise
        self.fs.makedirs(self.root, exist_ok=True)
        if self.fs.exists(target):
            self.fs.mv(target, old, recursive=True)
        self.fs.mv(new, target, recursive=True)
        if self.fs.exists(old):
            self.fs.rm(old, recursive=True)

    def _replace_remote(self, day: date, rows: Sequence[Aggregate], name: str,
                        marker: dict[str, Any]) -> None:
        target = self.partition(day)
        existing = self.fs.ls(target, detail=False) if self.fs.exists(target) else []
        self._write(target, rows, name, marker)
        for path in existing:
            base = posixpath.basename(path.rstrip("/"))
            if base not in (name, MARKER):
                self.fs.rm(path)

    def _recover(self) -> None:
        """Finish swaps a crash interrupted: put back an old partition that was moved out and
        not replaced, and clear what is left in the staging folder."""
        if not self.fs.exists(self.staging):
            return
        for path in sorted(self.fs.ls(self.staging, detail=False)):
            base = posixpath.basename(path.rstrip("/"))
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


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _run_json(run: RunRecord) -> dict[str, Any]:
    from .base import RUN_COLUMNS

    return dict(zip(RUN_COLUMNS, run.values(), strict=True))
