"""Parquet output: the layout of SPEC section 6, read back by PyArrow and DuckDB, replaced all
or nothing on the local filesystem."""

from __future__ import annotations

import errno
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
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.parquet import ParquetStore
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
    assert re.fullmatch(r"part-\d{8}T\d{6}Z-[0-9a-f]{8}\.parquet", files[1])
    schema = pq.read_schema(partition / files[1])
    assert schema.field("activity_date").type == pa.string()
    assert schema.field("dimensions").type == pa.map_(pa.string(), pa.string())
    assert schema.field("stats").type == pa.map_(pa.string(), pa.float64())
    assert schema.names == ["activity_date", "dimensions", "stats"]


def test_parquet_and_sqlite_hold_the_same_rows(filled: tuple[Path, Path]) -> None:
    db, out = filled
    sqlite_rows = open_store(f"sqlite:///{db}").read_rows()
    assert len(sqlite_rows) > 500
    assert ParquetStore(str(out)).read_rows() == sqlite_rows
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
    assert sorted(p.name for p in partition.iterdir()) == ["_SUCCESS", "part-r2.parquet"]
    assert [r.dimensions["channel"] for _, r in store.read_rows()] == ["nightly", "nightly"]
    assert store.markers()["2016-03-14"]["run_id"] == "r2"
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
        "_SUCCESS", "part-r1.parquet"]
    assert not list((tmp_path / "crash_aggregates" / "_staging").iterdir())


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
            seen_missing += 1  # killed between the two renames
        store = ParquetStore(str(tmp_path / "out"))  # opening repairs an interrupted swap
        rows = store.read_rows(DAY)
        assert len(rows) == 20000
        assert len({r.dimensions["v"] for _, r in rows}) == 1
    assert seen_missing <= 8


def test_missing_pyarrow_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(StoreError, match=r"pip install 'crash-rate-aggregates\[parquet\]'"):
        ParquetStore(str(tmp_path))
