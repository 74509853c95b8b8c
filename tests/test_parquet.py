"""Parquet output: the layout of SPEC section 6, read back by PyArrow and DuckDB, replaced all
or nothing on the local filesystem."""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.errors import StoreError
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores import parquet
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.parquet import LOCAL_FILE, ParquetStore
from crash_rate_aggregates.synth import generate_store

DAY = date(2016, 3, 14)
README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated store filled into SQLite and Parquet together: (sqlite file, parquet root)."""
    root = tmp_path_factory.mktemp("parquet")
    generate_store(root / "pings", date(2016, 3, 13), DAY, 700, heavy=False)
    report = fill(FillSettings(str(root / "pings"), date(2016, 3, 13), DAY,
                               db_url=f"sqlite:///{root / 'db.sqlite'}",
                               parquet_url=str(root / "out")))
    assert not report.failed
    return root / "db.sqlite", root / "out"


def test_layout_and_column_types(filled: tuple[Path, Path]) -> None:
    _, out = filled
    partition = out / "crash_aggregates" / "v1" / "submission_date=2016-03-14"
    files = sorted(p.name for p in partition.iterdir())
    assert files[0] == "_SUCCESS" and len(files) == 2
    assert files[1] == LOCAL_FILE  # every version alike, locally (see stores/parquet.py)
    schema = pq.read_schema(partition / files[1])
    assert schema.field("activity_date").type == pa.string()
    assert schema.field("dimensions").type == pa.map_(pa.string(), pa.string())
    assert schema.field("stats").type == pa.map_(pa.string(), pa.float64())
    sketches = ["clients_sketch", *(f"{crash}_clients_sketch" for crash in (
        "main_crashes", "content_crashes", "plugin_crashes", "gmplugin_crashes",
        "content_shutdown_crashes", "gpu_crashes"))]
    assert schema.names == ["activity_date", "dimensions", "stats", *sketches]
    assert all(schema.field(name).type == pa.binary() for name in sketches)


def test_parquet_and_sqlite_hold_the_same_rows(filled: tuple[Path, Path]) -> None:
    db, out = filled
    sqlite_rows = open_store(f"sqlite:///{db}").read_rows()
    assert len(sqlite_rows) > 500
    parquet_rows = ParquetStore(str(out)).read_rows()
    assert parquet_rows == sqlite_rows
    # the sketches too (rows compare by their stats): the same bytes in both stores
    assert [row.sketches for _, row in parquet_rows] == [row.sketches for _, row in sqlite_rows]
    assert any(row.sketches["main_crashes"] for _, row in sqlite_rows)
    # PyArrow's own dataset reader, hive partitions and all
    table = pq.read_table(out / "crash_aggregates" / "v1", partitioning="hive")
    arrow_rows = sorted(
        (str(r["submission_date"]), r["activity_date"], sorted(r["dimensions"]),
         sorted(r["stats"])) for r in table.to_pylist())
    assert arrow_rows == sorted(
        (d, r.activity_date, sorted(r.dimensions.items()), sorted(r.stats.items()))
        for d, r in sqlite_rows)


def test_duckdb_reads_the_partitions_as_one_table(filled: tuple[Path, Path]) -> None:
    db, out = filled
    glob = f"{out}/crash_aggregates/v1/*/*.parquet"
    [(count, dates)] = duckdb.sql(
        f"SELECT count(*), count(DISTINCT submission_date) FROM "
        f"read_parquet('{glob}', hive_partitioning = true)").fetchall()
    assert (count, dates) == (len(open_store(f"sqlite:///{db}").read_rows()), 2)


def test_readme_duckdb_query_matches_sqlite(filled: tuple[Path, Path]) -> None:
    db, out = filled
    [query] = [q for q in re.findall(r"```sql\n(.*?)```", README.read_text(), re.DOTALL)
               if q.startswith("-- DuckDB")]
    on_duckdb = duckdb.sql(query.replace("PARQUET_URL", str(out))).fetchall()
    import sqlite3

    with sqlite3.connect(db) as connection:
        on_sqlite = connection.execute(
            "SELECT dimensions->>'channel', sum(stats->>'usage_hours'), 1000 * "
            "sum(stats->>'main_crashes') / sum(stats->>'usage_hours') FROM crash_aggregates "
            "WHERE submission_date = '2016-03-14' GROUP BY 1 ORDER BY 1").fetchall()
    assert len(on_duckdb) == len(on_sqlite) == 4
    for left, right in zip(on_duckdb, on_sqlite, strict=True):
        assert left[0] == right[0]
        assert left[1:] == pytest.approx(right[1:])


def _rows(count: int, channel: str) -> list[Aggregate]:
    stats = dict.fromkeys(rules.STATS, 1.0)
    return [Aggregate("2016-03-13", {"channel": channel, "os_version": str(i)}, stats)
            for i in range(count)]


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id, DAY, "completed", datetime(2016, 3, 15, tzinfo=UTC), 1.0, 0,
                     "/pings", "test", {})


def test_replace_keeps_only_the_new_version(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    store.replace_date(DAY, _rows(3, "beta"), _run("r1"))
    store.replace_date(DAY, _rows(2, "nightly"), _run("r2"))
    partition = Path(store.partition(DAY))
    assert sorted(p.name for p in partition.iterdir()) == ["_SUCCESS", LOCAL_FILE]
    assert [r.dimensions["channel"] for _, r in store.read_rows()] == ["nightly", "nightly"]
    assert store.markers()["2016-03-14"]["run_id"] == "r2"
    store.close()  # the old partition, exchanged out, is deleted at the latest on close
    assert not list((tmp_path / "crash_aggregates" / "_staging").iterdir())


def test_disk_full_while_writing_keeps_the_old_partition(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = ParquetStore(str(tmp_path))
    store.replace_date(DAY, _rows(3, "beta"), _run("r1"))
    real_write = pq.write_table

    def full_disk(table: Any, where: Any, **kwargs: Any) -> None:
        real_write(table.slice(0, 1), where, **kwargs)  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(StoreError, match="cannot write Parquet for 2016-03-14 .*No space left"):
        store.replace_date(DAY, _rows(5, "nightly"), _run("r2"))
    assert [r.dimensions["channel"] for _, r in store.read_rows()] == ["beta"] * 3
    assert sorted(p.name for p in Path(store.partition(DAY)).iterdir()) == [
        "_SUCCESS", LOCAL_FILE]
    assert not list((tmp_path / "crash_aggregates" / "_staging").iterdir())


class NoCredentialsError(Exception):
    """As botocore raises when credentials expire mid-run: not an OSError."""


def test_an_object_store_error_that_is_not_an_oserror_fails_the_date_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ParquetStore(str(tmp_path))
    store.replace_date(DAY, _rows(3, "beta"), _run("r1"))

    def expired(table: Any, where: Any, **kwargs: Any) -> None:
        raise NoCredentialsError("Unable to locate credentials")

    monkeypatch.setattr(pq, "write_table", expired)
    with pytest.raises(StoreError, match="^cannot write Parquet for 2016-03-14 under .*: "
                                         "NoCredentialsError: Unable to locate credentials$"):
        store.replace_date(DAY, _rows(5, "nightly"), _run("r2"))
    assert [r.dimensions["channel"] for _, r in store.read_rows()] == ["beta"] * 3


WRITER = """
import sys
from datetime import UTC, date, datetime
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.stores.base import RunRecord
from crash_rate_aggregates.stores.parquet import ParquetStore
store = ParquetStore(sys.argv[1])
for version in range(1000):
    stats = dict.fromkeys(rules.STATS, float(version))
    rows = [Aggregate("2016-03-13", {"v": str(version), "n": str(i)}, stats)
            for i in range(20000)]
    run = RunRecord(f"v{version:04d}", date(2016, 3, 14), "completed",
                    datetime.now(UTC), 0.0, len(rows), "/", "test", {})
    store.replace_date(date(2016, 3, 14), rows, run)
    print(version, flush=True)
"""


def test_sigkill_mid_write_never_mixes_versions(tmp_path: Path) -> None:
    rng = random.Random(7)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seen_missing = 0
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        writer.stdout.readline()  # one version is complete
        time.sleep(rng.uniform(0, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        partition = tmp_path / "out" / "crash_aggregates" / "v1" / "submission_date=2016-03-14"
        if partition.exists():  # as a reader finds it, before anything repairs it
            names = sorted(os.listdir(partition))
            assert len(names) == 2 and names[0] == "_SUCCESS", names
            versions = {r["dimensions"][0][1] for r in
                        pq.read_table(partition / names[1]).to_pylist()}
            assert len(versions) == 1
        else:
            seen_missing += 1  # killed between two renames (where there is no exchange)
        store = ParquetStore(str(tmp_path / "out"))  # opening repairs an interrupted swap
        rows = store.read_rows(DAY)
        assert len(rows) == 20000
        assert len({r.dimensions["v"] for _, r in rows}) == 1
    assert seen_missing == 0 or not parquet.CAN_EXCHANGE


def test_missing_pyarrow_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(StoreError, match=r"pip install 'crash-rate-aggregates\[parquet\]'"):
        ParquetStore(str(tmp_path))


# -- readers during replaces: every date, always -------------------------------------------------

DATES = [date(2016, 3, 13), DAY, date(2016, 3, 15)]
OLD_ROWS, NEW_ROWS = 300, 200  # the replaced date holds one or the other; the others OLD_ROWS
REPLACES = 100
LISTINGS_A_READ = 100  # a reader lists the folders this many times between two dataset reads


def _three_dates(out: Path) -> None:
    store = ParquetStore(str(out))
    for day in DATES:
        store.replace_date(day, _rows(OLD_ROWS, "old"), _run(f"first-{day}"))
    store.close()


def _replace_repeatedly(out: str, done: Any) -> None:
    """In a child: replace one date REPLACES times, alternating its row count."""
    store = ParquetStore(out)
    try:
        for version in range(REPLACES):
            count = NEW_ROWS if version % 2 == 0 else OLD_ROWS
            store.replace_date(DAY, _rows(count, f"v{version}"), _run(f"v{version:03d}"))
    finally:
        store.close()
        done.set()


def _listing_problems(root: Path) -> list[str]:
    """What a reader listing the folders finds wrong: a date missing, a partition that is not
    one `_SUCCESS` and one file."""
    problems = []
    partitions = sorted(os.listdir(root))
    if partitions != [f"submission_date={day}" for day in DATES]:
        problems.append(f"listed {partitions}")
    for name in partitions:
        files = sorted(os.listdir(root / name))
        if len(files) != 2 or files[0] != "_SUCCESS":
            problems.append(f"{name} held {files}")
    return problems


def _dataset_problems(root: Path) -> list[str] | None:
    """What pyarrow.dataset reading the folder as one table finds wrong (its row count per
    date); None when a file was deleted between its listing and its read (a loud error the
    reader may retry, never a silently smaller table)."""
    import pyarrow.dataset as ds

    try:
        table = ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
            columns=["submission_date"])
    except FileNotFoundError:
        return None
    counts: dict[str, int] = {}
    for value in table.column("submission_date").to_pylist():
        counts[str(value)] = counts.get(str(value), 0) + 1
    expected = {day.isoformat(): {OLD_ROWS, NEW_ROWS} if day == DAY else {OLD_ROWS}
                for day in DATES}
    if set(counts) != set(expected) or any(counts[d] not in expected[d] for d in counts):
        return [f"read {counts}"]
    return []


def _read_until_done(out: str, done: Any, outcomes: Any) -> None:
    """In a child: list and read the table until the writer is done, then once more."""
    root = Path(out) / "crash_aggregates" / "v1"
    reads = retried = 0
    problems: list[str] = []
    try:
        while True:
            finished = done.is_set()
            for _ in range(LISTINGS_A_READ):
                problems += _listing_problems(root)
            found = _dataset_problems(root)
            if found is None:
                retried += 1
                continue
            problems += found
            reads += 1
            if finished:
                break
    except Exception as exc:  # a folder gone under the reader is a problem too
        problems.append(f"{type(exc).__name__}: {exc}")
    outcomes.put((reads, retried, problems[:10]))


def test_readers_find_every_date_during_repeated_replaces(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _three_dates(out)
    context = multiprocessing.get_context("fork")
    done, outcomes = context.Event(), context.Queue()
    readers = [context.Process(target=_read_until_done, args=(str(out), done, outcomes))
               for _ in range(2)]
    writer = context.Process(target=_replace_repeatedly, args=(str(out), done))
    for process in [*readers, writer]:
        process.start()
    try:
        results = [outcomes.get(timeout=120) for _ in readers]
    finally:
        for process in [writer, *readers]:
            process.join(timeout=60)
    assert writer.exitcode == 0
    for reads, _, problems in results:
        assert problems == []
        assert reads >= 1
    assert [r.dimensions["channel"] for _, r in ParquetStore(str(out)).read_rows(DAY)] == \
        [f"v{REPLACES - 1}"] * OLD_ROWS
    assert not list((out / "crash_aggregates" / "_staging").iterdir())


SWAP_WINDOWS = ("parquet.before_swap", "parquet.after_exchange")
HELD_WRITER = """
import sys
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.stores.parquet import ParquetStore
from datetime import UTC, date, datetime
from crash_rate_aggregates.stores.base import RunRecord
stats = dict.fromkeys(rules.STATS, 1.0)
rows = [Aggregate("2016-03-13", {"channel": "new", "os_version": str(i)}, stats)
        for i in range(int(sys.argv[2]))]
store = ParquetStore(sys.argv[1])
store.replace_date(date(2016, 3, 14), rows, RunRecord("held", date(2016, 3, 14), "completed",
                   datetime.now(UTC), 0.0, len(rows), "/", "test", {}))
store.close()
"""


@pytest.mark.parametrize("window", SWAP_WINDOWS)
def test_a_reader_in_each_window_of_the_swap_finds_every_date(tmp_path: Path,
                                                               window: str) -> None:
    out = tmp_path / "out"
    _three_dates(out)
    env = {**os.environ, "CRASH_AGGREGATES_FAULT_POINT": window,
           "CRASH_AGGREGATES_FAULT_ACTION": "pause"}
    with subprocess.Popen([sys.executable, "-c", HELD_WRITER, str(out), str(NEW_ROWS)],
                          stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as writer:
        assert writer.stderr is not None
        assert writer.stderr.readline() == f"fault point {window} paused\n"
        root = out / "crash_aggregates" / "v1"
        assert _listing_problems(root) == []  # the writer stands in the window
        assert _dataset_problems(root) == []
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert _dataset_problems(root) == []
    assert len(ParquetStore(str(out)).read_rows(DAY)) == NEW_ROWS
