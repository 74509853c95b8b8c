"""The stores write an `AggregateTable` from its arrays (no Aggregate, no dict a row): exactly
what they write of the same rows as Aggregates, in SQLite, PostgreSQL and Parquet."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crash_rate_aggregates import families
from crash_rate_aggregates.aggregation import AggregateTable
from crash_rate_aggregates.sketches import sketch_of
from crash_rate_aggregates.stores import parquet, postgres
from crash_rate_aggregates.stores.base import RunRecord
from crash_rate_aggregates.stores.queries import sketch_columns, sketch_names
from crash_rate_aggregates.stores.sqlite import SqliteStore

DAY = date(2016, 3, 14)
ACTIVITY = date(2016, 3, 13).toordinal()
HOSTILE = 'tab\there "quoted" back\\slash\nnew line \\N \x01 日本語 é 🦊'
ODD_STATS = (0.0, 0.1, 1 / 3, 2.0 ** 70 / 3, 1.7976931348623157e308, 5e-324, 1e16,
             123456789.125, 3.0, 1e-7)


def varied_table(family: str = "legacy", rows: int = 12) -> AggregateTable:
    """Rows with dimensions missing (one with none at all), hostile dimension values, sketches
    missing, and huge, tiny and fractional stats."""
    module = families.family(family)
    width, stats_width = len(module.DIMENSION_NAMES), len(module.STATS)
    keys = []
    for row in range(rows):
        values: list[str | None] = []
        for index in range(width):
            if row == 1 or (row + index) % 4 == 0:
                values.append(None)
            elif (row + index) % 5 == 0:
                values.append(HOSTILE)
            else:
                values.append(f"{module.DIMENSION_NAMES[index]}-{row % 3}")
        keys.append((ACTIVITY - row % 2, *values))
    stats = np.array([[ODD_STATS[(row * 7 + column) % len(ODD_STATS)] / (1 + row)
                       for column in range(stats_width)] for row in range(rows)])
    names = sketch_names(family)
    sketches = {name: [None if (row + number) % 3 == 1 else sketch_of(
                           np.arange(row + 1, row + 3 + number * 50, dtype=np.uint64),
                           distinct_sorted=True)
                       for row in range(rows)]
                for number, name in enumerate(names)}
    return AggregateTable(family, keys, stats, sketches)


def one_row(dimensions: dict[str, str], stats: dict[str, float],
            sketches: dict[str, bytes | None]) -> AggregateTable:
    """A legacy table of one row (activity date 2016-03-13)."""
    names = families.family("legacy").DIMENSION_NAMES
    key = (ACTIVITY, *(dimensions.get(name) for name in names))
    matrix = np.array([[stats.get(name, 0.0) for name in families.family("legacy").STATS]])
    return AggregateTable("legacy", [key], matrix, {name: [blob]
                                                    for name, blob in sketches.items()})


def run(rows: int) -> RunRecord:
    return RunRecord("r1", DAY, "completed", datetime(2016, 3, 15, tzinfo=UTC), 1.0, rows,
                     "/pings", "test", {})


# -- the columns themselves ---------------------------------------------------------------------

def test_the_json_of_a_hostile_row() -> None:
    table = one_row({"os_name": "Linux", "channel": 'a\tb"c\\d'},
                    {"ping_count": 3.0, "usage_hours": 0.1, "client_count": 1e16},
                    {"clients": b"\x01\xff"})
    assert table.activity_dates() == ["2016-03-13"]
    # sorted names; the tab, quote and backslash escaped
    assert table.dimensions_json() == [b'{"channel":"a\\tb\\"c\\\\d","os_name":"Linux"}']
    [stats] = table.stats_json()
    assert stats.startswith(b'{"client_content_crashes_max":0.0,')
    assert b',"client_count":1e+16,' in stats
    assert b',"ping_count":3.0,' in stats
    assert stats.endswith(b',"usage_hours":0.1,"usage_hours_squared":0.0}')
    assert len(json.loads(stats)) == 35
    assert table.sketch_column("clients") == [b"\x01\xff"]
    assert table.sketch_column("gpu_crashes") == [None]  # no column: none
    offsets, names, values = table.dimension_items()
    assert offsets.tolist() == [0, 2]
    assert names.tolist() == [2, 4]  # channel, os_name: DIMENSION_NAMES order
    assert values.tolist() == ['a\tb"c\\d', "Linux"]


def test_the_copy_line_of_a_hostile_row() -> None:
    table = one_row({"channel": "a\\b"}, {"ping_count": 2.5}, {"clients": b"\x01\xff"})
    names = sketch_names("legacy")
    [line] = list(postgres.table_copy_lines("2016-03-14", table, names))
    fields = line.split(b"\t")
    assert fields[:3] == [b"2016-03-14", b"2016-03-13", b'{"channel":"a\\\\\\\\b"}']
    assert b'"ping_count":2.5' in fields[3]
    assert fields[4:] == [b"\\\\x01ff", *[b"\\N"] * 5, b"\\N\n"]
    assert line == postgres.copy_line("2016-03-14", table[0], names)


def test_stats_that_are_not_finite_are_null_as_orjson_writes_them() -> None:
    table = one_row({}, {"ping_count": float("nan"), "usage_hours": float("inf")}, {})
    [stats] = table.stats_json()
    assert b'"ping_count":null' in stats and b'"usage_hours":null' in stats
    assert table.dimensions_json() == [b"{}"]


@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_the_columns_are_what_the_aggregates_hold(family: str) -> None:
    import orjson

    table = varied_table(family)
    rows = list(table)
    option = orjson.OPT_SORT_KEYS
    assert table.activity_dates() == [row.activity_date for row in rows]
    assert table.dimensions_json() == [orjson.dumps(r.dimensions, option=option) for r in rows]
    assert table.stats_json() == [orjson.dumps(r.stats, option=option) for r in rows]
    assert table.stats_json(3, 7) == [orjson.dumps(r.stats, option=option) for r in rows[3:7]]
    assert table.distinct_activity_dates() == {"2016-03-12", "2016-03-13"}
    assert rows[1].dimensions == {}
    assert any(HOSTILE in row.dimensions.values() for row in rows)


# -- SQLite -------------------------------------------------------------------------------------

def sqlite_rows(path: Path, family: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        table = "crash_aggregates" if family == "legacy" else families.table(family)
        columns = ", ".join(("submission_date", "activity_date", "dimensions", "stats",
                             "typeof(dimensions)", "typeof(stats)", *sketch_columns(family)))
        return db.execute(f"SELECT {columns} FROM {table} ORDER BY rowid").fetchall()


@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_sqlite_writes_a_table_as_its_aggregates(tmp_path: Path, family: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from crash_rate_aggregates.stores import sqlite

    monkeypatch.setattr(sqlite, "_CHUNK_ROWS", 5)  # several chunks, the last one short
    table = varied_table(family)
    written = {}
    for name, rows in (("columns", table), ("aggregates", list(table))):
        store = SqliteStore(f"sqlite:///{tmp_path / name}.db", family=family)
        store.replace_date(DAY, rows, run(len(table)))
        store.close()
        written[name] = sqlite_rows(tmp_path / f"{name}.db", family)
    assert len(written["columns"]) == 12
    assert written["columns"] == written["aggregates"]
    assert {row[4:6] for row in written["columns"]} == {("text", "text")}
    first = written["columns"][0]
    assert first[:2] == ("2016-03-14", "2016-03-13")


def test_sqlite_writes_an_empty_table(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.replace_date(DAY, varied_table(), run(12))
    store.replace_date(DAY, AggregateTable("legacy", [], np.zeros((0, 35)), {}), run(0))
    assert store.read_rows(DAY) == []
    store.close()


# -- PostgreSQL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_copy_blocks_of_a_table_are_its_aggregates_lines(family: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "_CHUNK_ROWS", 5)
    monkeypatch.setattr(postgres, "_COPY_BLOCK", 1000)  # several blocks
    table = varied_table(family)
    names = sketch_names(family)
    blocks = list(postgres.copy_blocks("2016-03-14", table, names))
    assert len(blocks) > 2
    assert blocks == list(postgres.copy_blocks("2016-03-14", list(table), names))
    assert b"".join(blocks).count(b"\n") == 12


@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_postgres_writes_a_table_as_its_aggregates(pg_url: str, family: str) -> None:
    import psycopg

    table = varied_table(family)
    store = postgres.PostgresStore(pg_url, family=family)
    rows_table = store.tables.rows
    columns = ", ".join(("activity_date", "dimensions::text", "stats::text",
                         *sketch_columns(family)))
    written = {}
    try:
        for name, rows in (("columns", table), ("aggregates", list(table))):
            store.replace_date(DAY, rows, run(len(table)))
            with psycopg.connect(pg_url) as connection:
                written[name] = connection.execute(
                    f"SELECT {columns} FROM {rows_table} WHERE submission_date = %s "
                    f"ORDER BY ctid", (DAY,)).fetchall()
            written[f"{name} read"] = store.read_rows(DAY)
    finally:
        store.close()
    assert len(written["columns"]) == 12
    assert written["columns"] == written["aggregates"]
    assert written["columns read"] == written["aggregates read"]
    hostile = [row for row in written["columns read"] if HOSTILE in row[1].dimensions.values()]
    assert hostile


# -- Parquet ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_an_arrow_batch_of_a_table_is_to_table_of_its_aggregates(family: str) -> None:
    table = varied_table(family)
    rows = list(table)
    assert parquet.table_batch(table, 0, 12).equals(parquet.to_table(rows, family))
    assert parquet.table_batch(table, 4, 9).equals(parquet.to_table(rows[4:9], family))
    assert parquet.to_table(table, family).equals(parquet.to_table(rows, family))
    empty = AggregateTable(family, [], np.zeros((0, len(families.family(family).STATS))), {})
    assert parquet.to_table(empty, family).equals(parquet.to_table([], family))


@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_parquet_writes_a_table_as_its_aggregates(tmp_path: Path, family: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(parquet, "BATCH_ROWS", 5)  # three row groups, the last one short
    table = varied_table(family)
    rows = list(table)
    read: dict[str, Any] = {}
    files: dict[str, Any] = {}
    for name, written in (("columns", table), ("aggregates", rows)):
        store = parquet.ParquetStore(str(tmp_path / name), family=family)
        store.replace_date(DAY, written, run(len(table)))
        read[name] = store.read_rows(DAY)
        [path] = (tmp_path / name).rglob(parquet.LOCAL_FILE)
        files[name] = pq.ParquetFile(path)
    assert read["columns"] == read["aggregates"]
    assert len(read["columns"]) == 12
    columns, aggregates = files["columns"], files["aggregates"]
    assert columns.schema_arrow.equals(parquet.to_table([], family).schema)
    assert columns.schema_arrow.equals(aggregates.schema_arrow)
    assert columns.metadata.num_row_groups == 3
    assert {columns.metadata.row_group(0).column(i).compression
            for i in range(columns.metadata.num_columns)} == {"ZSTD"}
    # the raw values, maps in their order (STATS and DIMENSION_NAMES order), as today's file
    expected = parquet.to_table(rows, family).to_pylist()
    assert columns.read().to_pylist() == expected
    assert aggregates.read().to_pylist() == expected
    first = expected[0]
    assert [name for name, _ in first["stats"]] == list(families.family(family).STATS)


def test_parquet_writes_an_empty_table(tmp_path: Path) -> None:
    store = parquet.ParquetStore(str(tmp_path))
    store.replace_date(DAY, AggregateTable("legacy", [], np.zeros((0, 35)), {}), run(0))
    assert store.read_rows(DAY) == []


def test_a_disk_full_while_writing_a_table_keeps_the_old_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from crash_rate_aggregates.errors import StoreError

    monkeypatch.setattr(parquet, "BATCH_ROWS", 5)
    store = parquet.ParquetStore(str(tmp_path))
    store.replace_date(DAY, varied_table(rows=3), run(3))
    real_write = pq.ParquetWriter.write_table
    batches = []

    def full_disk(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        batches.append(table.num_rows)
        if len(batches) == 2:  # the first batch landed, then the disk is full
            raise OSError(28, "No space left on device")
        real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(StoreError, match="cannot write Parquet for 2016-03-14 .*No space left"):
        store.replace_date(DAY, varied_table(rows=12), run(12))
    assert batches == [5, 5]
    assert len(store.read_rows(DAY)) == 3
    assert not list((tmp_path / "crash_aggregates" / "_staging").iterdir())
