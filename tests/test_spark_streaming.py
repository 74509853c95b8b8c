"""The Spark engine never brings a day's rows to the driver all at once: with
`spark.driver.maxResultSize` far below the size of the day's rows (a plain collect of them
fails), the fill passes, its executors write the Parquet partition (one file, the local
engine's bytes of table), and the databases get the rows streamed, a partition at a time."""

from __future__ import annotations

import os
import pickle
import socket
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pytest

from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.stores.parquet import LOCAL_FILE, MARKER, ParquetStore
from crash_rate_aggregates.synth import generate_store

pytest.importorskip("pyspark")
DAY = date(2016, 3, 14)
LIMIT = 1 << 20  # spark.driver.maxResultSize: 1 MiB, the least Spark takes


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 and the AWS variables that find it (none without moto)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield {}
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    server.stop()


@pytest.fixture(scope="module")
def small_results(s3_env: dict[str, str]) -> Iterator[Any]:
    """A session of its own whose driver takes at most 1 MiB of results a job (a session
    another module started is stopped first: a running context keeps its limit). Its
    executors get the S3 variables (spark.executorEnv: the JVM may predate them)."""
    from pyspark.sql import SparkSession

    from crash_rate_aggregates.engines.spark import spark_session

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # (as spark_session does)
    builder = (SparkSession.builder.master("local[2]").appName("streaming-test")
               .config("spark.driver.maxResultSize", str(LIMIT))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false"))
    for name, value in s3_env.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    assert spark_session() is session  # what fill uses: the active session
    yield session
    session.stop()


@pytest.fixture(scope="module")
def big_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A day of 15,000 pings (about 5,400 aggregates, 3 MB pickled), and its local fill."""
    root = tmp_path_factory.mktemp("big")
    generate_store(root / "pings", DAY, DAY, 15_000, seed=3, heavy=False)
    local = root / "local"
    local.mkdir()
    report = fill(FillSettings(str(root / "pings"), DAY, DAY, f"sqlite:///{local / 'db'}",
                               parquet_url=str(local / "parquet"), workers=2))
    assert not report.failed
    return root / "pings", local


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # streamed partitions of ~500 rows (~300 KB pickled): each fetch fits under the limit
    from crash_rate_aggregates.engines import spark

    monkeypatch.setattr(spark, "ROWS_PER_CHUNK", 500)


def local_rows(local: Path) -> list[Any]:
    db = open_store(f"sqlite:///{local / 'db'}")
    rows = db.read_rows()
    db.close()
    return rows


def test_a_plain_collect_of_the_day_fails(small_results: Any, big_day: tuple[Path, Path]
                                          ) -> None:
    rows = [row for _, row in local_rows(big_day[1])]
    assert len(rows) > 4_000 and len(pickle.dumps(rows)) > 2 * LIMIT
    with pytest.raises(Exception, match="maxResultSize"):
        small_results.sparkContext.parallelize(rows, 4).collect()


def parquet_table(url: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(url / "crash_aggregates" / "v1" / f"submission_date={DAY}" / LOCAL_FILE)


def test_the_fill_passes_and_stores_the_local_rows(small_results: Any, small_chunks: None,
                                                   big_day: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    pings, local = big_day
    db_url, parquet = f"sqlite:///{tmp_path / 'spark.db'}", tmp_path / "parquet"
    report = fill(FillSettings(str(pings), DAY, DAY, db_url, parquet_url=str(parquet),
                               engine="spark"))
    assert not report.failed, report
    expected = local_rows(local)
    db = open_store(db_url)
    assert repr(db.read_rows()) == repr(expected)  # the same rows, stats to the last bit
    assert [run["rows_written"] for run in db.read_runs()] == [len(expected)]
    db.close()
    # Parquet: one file and its marker, as the local engine writes them; the same table, in
    # the same order, with the same schema
    partition = parquet / "crash_aggregates" / "v1" / f"submission_date={DAY}"
    assert sorted(p.name for p in partition.iterdir()) == [MARKER, LOCAL_FILE]
    store = ParquetStore(str(parquet))
    marker = store.markers()[DAY.isoformat()]
    assert (marker["files"], marker["rows"]) == ([LOCAL_FILE], len(expected))
    assert parquet_table(parquet).equals(parquet_table(local / "parquet"))
    assert repr(store.read_rows()) == repr(ParquetStore(str(local / "parquet")).read_rows())
    assert not list((parquet / "crash_aggregates" / "_staging").iterdir())


def test_a_second_fill_swaps_the_partition_in(small_results: Any, small_chunks: None,
                                              big_day: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    # a smaller day first, then the big one over it: the staged partition replaces it whole
    pings, local = big_day
    small = tmp_path / "small"
    generate_store(small, DAY, DAY, 300, seed=5, heavy=False)
    parquet = tmp_path / "parquet"
    for store in (small, pings):
        report = fill(FillSettings(str(store), DAY, DAY, None, parquet_url=str(parquet),
                                   engine="spark"))
        assert not report.failed, report
    assert parquet_table(parquet).equals(parquet_table(local / "parquet"))


def staging_tables(pg_url: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as connection:
        return [name for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE '%staging%' ORDER BY tablename").fetchall()]


@pytest.mark.parametrize("load", ["stream", "staging"])
def test_postgres_gets_the_rows_without_the_driver_holding_them(
        small_results: Any, small_chunks: None, big_day: tuple[Path, Path], pg_url: str,
        load: Literal["stream", "staging"]) -> None:
    # streamed through the driver a partition at a time, or COPYed by the executor tasks
    # (11 partitions of ~500 rows) into a staging table swapped in: the local rows either way
    pings, local = big_day
    report = fill(FillSettings(str(pings), DAY, DAY, pg_url, engine="spark",
                               spark_postgres_load=load))
    assert not report.failed, report
    db = open_store(pg_url)
    try:
        expected = local_rows(local)
        assert db.read_rows() == expected  # (jsonb orders a row's stats its own way)
        assert [run["rows_written"] for run in db.read_runs()] == [len(expected)]
    finally:
        db.close()
    assert staging_tables(pg_url) == []
    # stored in the local engine's order too (the table's physical order)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as connection:
        stored = connection.execute("SELECT activity_date::text, dimensions "
                                    "FROM crash_aggregates ORDER BY ctid").fetchall()
    assert stored == [(row.activity_date, row.dimensions) for _, row in expected]


def small_day_stored(tmp_path: Path, pg_url: str) -> tuple[Any, list[Any]]:
    """A small day filled by Spark into PostgreSQL: the store, open, and its rows."""
    small = tmp_path / "small"
    generate_store(small, DAY, DAY, 300, seed=5, heavy=False)
    assert not fill(FillSettings(str(small), DAY, DAY, pg_url, engine="spark")).failed
    db = open_store(pg_url)
    return db, db.read_rows()


def test_a_failed_staging_load_keeps_the_old_rows(small_results: Any, small_chunks: None,
                                                  big_day: tuple[Path, Path], pg_url: str,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the big day over a small one; the task of partition 3 fails after the others loaded
    # theirs: the date fails with the task's error, the small day's rows stay, whole
    from crash_rate_aggregates.engines import spark
    from crash_rate_aggregates.errors import StoreError

    monkeypatch.setattr(spark, "POSTGRES_LOAD", "staging")
    db, before = small_day_stored(tmp_path, pg_url)
    assert 0 < len(before) < 500
    real = spark._copy_part

    def failing(*args: Any) -> Any:  # (defined here: Spark ships it to the executor by value)
        if args[-2] == 3:
            raise StoreError("PostgreSQL at somewhere: cannot load: disk full")
        return real(*args)

    monkeypatch.setattr(spark, "_copy_part", failing)
    report = fill(FillSettings(str(big_day[0]), DAY, DAY, pg_url, engine="spark"))
    assert report.failed == [DAY]
    assert report.dates[0].error == "PostgreSQL at somewhere: cannot load: disk full"
    try:
        assert db.read_rows() == before
        assert [run["status"] for run in db.read_runs()] == ["completed", "failed"]
    finally:
        db.close()
    assert staging_tables(pg_url) == []  # the failed run dropped its own


def test_staged_rows_are_invisible_until_the_swap(small_results: Any, small_chunks: None,
                                                  big_day: tuple[Path, Path], pg_url: str,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # at the fault point after the executors' load, the staging table holds the whole day
    # and the rows table the old day; a failure there changes nothing, and drops the table
    import psycopg

    from crash_rate_aggregates import faults
    from crash_rate_aggregates.engines import spark

    monkeypatch.setattr(spark, "POSTGRES_LOAD", "staging")
    db, before = small_day_stored(tmp_path, pg_url)
    seen: list[tuple[int, int]] = []
    real = faults.fault_point

    def at_point(name: str) -> None:
        if name != spark.STAGED:
            real(name)
            return
        [table] = staging_tables(pg_url)
        with psycopg.connect(pg_url, autocommit=True) as connection:
            seen.append((connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
                         connection.execute("SELECT count(*) FROM crash_aggregates")
                         .fetchone()[0]))
        raise OSError("fault point spark.staged armed")

    monkeypatch.setattr(faults, "fault_point", at_point)
    with pytest.raises(OSError, match="spark.staged"):
        fill(FillSettings(str(big_day[0]), DAY, DAY, pg_url, engine="spark"))
    assert seen == [(len(local_rows(big_day[1])), len(before))]
    try:
        assert db.read_rows() == before
    finally:
        db.close()
    assert staging_tables(pg_url) == []


def test_a_killed_run_s_staging_table_is_dropped_by_the_next(
        small_results: Any, pg_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A run killed while its executors load: its session's lock went with its connection,
    # its table stayed. The next run drops it, and leaves the table of a run under way (its
    # lock held) and a table that only looks like one (another rows table's) alone.
    import psycopg

    from crash_rate_aggregates.engines import spark
    from crash_rate_aggregates.stores.postgres import PostgresStore

    monkeypatch.setattr(spark, "POSTGRES_LOAD", "staging")
    pings = tmp_path / "pings"
    generate_store(pings, DAY, DAY, 300, seed=5, heavy=False)
    assert not fill(FillSettings(str(pings), DAY, DAY, pg_url, engine="spark")).failed
    db = open_store(pg_url)
    rows = db.read_rows()
    assert isinstance(db, PostgresStore)
    killed, running = (db.staging_table(f"20160314T000000Z-{n}") for n in ("dead0001", "live0002"))
    db.close()
    namespace = PostgresStore._STAGING_LOCK_NAMESPACE
    killed_session = psycopg.connect(pg_url, autocommit=True)
    for name in (killed, running, "glean_crash_aggregates_staging_x"):
        killed_session.execute(f"CREATE UNLOGGED TABLE {name} (seq bigint)")
    killed_session.execute(f"INSERT INTO {killed} VALUES (1)")
    killed_session.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (namespace, killed))
    killed_session.close()  # (as a killed driver's connection ends)
    with psycopg.connect(pg_url, autocommit=True) as live:
        live.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (namespace, running))
        report = fill(FillSettings(str(pings), DAY, DAY, pg_url, engine="spark"))
        assert not report.failed, report
        assert staging_tables(pg_url) == [running, "glean_crash_aggregates_staging_x"]
    db = open_store(pg_url)
    try:
        assert db.read_rows() == rows
        assert [run["status"] for run in db.read_runs()] == ["completed", "completed"]
    finally:
        db.close()


def test_a_flat_store_of_three_dates(small_results: Any, small_chunks: None,
                                     tmp_path: Path) -> None:
    # several dates of one scan: each date's rows are its own (streamed, and each its own
    # Parquet file), as the local engine's
    first, last = date(2016, 3, 13), date(2016, 3, 15)
    generate_store(tmp_path / "pings", first, last, 2_000, seed=7, heavy=False, layout="flat")
    outputs = {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        out.mkdir()
        report = fill(FillSettings(str(tmp_path / "pings"), first, last,
                                   f"sqlite:///{out / 'db'}", parquet_url=str(out / "parquet"),
                                   engine=engine))  # type: ignore[arg-type]
        assert not report.failed, report
        db = open_store(f"sqlite:///{out / 'db'}")
        outputs[engine] = (db.read_rows(), db.read_runs(),
                           ParquetStore(str(out / "parquet")).read_rows())
        db.close()
    (local_db, local_runs, local_parquet) = outputs["local"]
    (spark_db, spark_runs, spark_parquet) = outputs["spark"]
    assert len({day for day, _ in local_db}) == 3
    assert repr(spark_db) == repr(local_db) and repr(spark_parquet) == repr(local_parquet)
    assert [(r["submission_date"], r["rows_written"]) for r in spark_runs] == [
        (r["submission_date"], r["rows_written"]) for r in local_runs]


def test_an_executor_that_cannot_write_fails_the_date_and_keeps_its_rows(
        small_results: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crash_rate_aggregates.engines import spark
    from crash_rate_aggregates.errors import StoreError

    pings = tmp_path / "pings"
    generate_store(pings, DAY, DAY, 300, seed=5, heavy=False)
    db_url, parquet = f"sqlite:///{tmp_path / 'db'}", tmp_path / "parquet"
    settings = FillSettings(str(pings), DAY, DAY, db_url, parquet_url=str(parquet),
                            engine="spark")
    assert not fill(settings).failed
    before = parquet_table(parquet)
    db = open_store(db_url)
    rows_before = db.read_rows()

    def full_disk(*_: Any) -> Any:  # (defined here: Spark ships it to the executor by value)
        raise StoreError("OSError: [Errno 28] No space left on device")

    monkeypatch.setattr(spark, "_write_part", full_disk)
    report = fill(settings)
    assert report.failed == [DAY]
    assert report.dates[0].error == (
        f"cannot write Parquet for {DAY} under {parquet}: OSError: [Errno 28] No space left "
        "on device")
    # nothing changed: the old partition, the database's rows (Parquet is staged first)
    assert parquet_table(parquet).equals(before)
    assert db.read_rows() == rows_before
    assert [run["status"] for run in db.read_runs()] == ["completed", "failed"]
    db.close()
    assert not list((parquet / "crash_aggregates" / "_staging").iterdir())


def test_parquet_on_s3_is_written_by_the_executors(small_results: Any, s3_env: dict[str, str],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # object storage: the executor PUTs part-<run id>.parquet into the date's folder, the
    # driver rewrites _SUCCESS to name it and deletes the older version's file
    if not s3_env:
        pytest.skip("moto is not installed")
    import s3fs

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("spark-aggregates")  # a bucket of its own: the S3 server is shared by the run
    pings = tmp_path / "pings"
    generate_store(pings, DAY, DAY, 2_000, seed=9, heavy=False)
    reports = [fill(FillSettings(str(pings), DAY, DAY, None, parquet_url=f"s3://spark-aggregates/{to}",
                                 engine=engine))  # type: ignore[arg-type]
               for engine, to in (("local", "local"), ("spark", "spark"), ("spark", "spark"))]
    assert not any(report.failed for report in reports)
    local = ParquetStore("s3://spark-aggregates/local")
    spark = ParquetStore("s3://spark-aggregates/spark")
    assert repr(spark.read_rows()) == repr(local.read_rows())
    name = f"part-{reports[2].run_id}.parquet"
    assert spark.markers()[DAY.isoformat()]["files"] == [name]
    assert sorted(path.rsplit("/", 1)[1] for path in fs.ls(
        f"spark-aggregates/spark/crash_aggregates/v1/submission_date={DAY}")) == [MARKER, name]
    s3fs.S3FileSystem.clear_instance_cache()
