"""The Spark engine gives the local engine's rows and counters, on a real local SparkSession."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conftest import write_ping_file
from crash_rate_aggregates import rules
from crash_rate_aggregates.errors import InputError, UsageError
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.synth import generate_store
from test_invariants import JUNK, lines_for

pytest.importorskip("pyspark")
REFERENCE = Path(__file__).parent / "data" / "reference"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from crash_rate_aggregates.engines.spark import spark_session

    session = spark_session("local[2]")
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"
    yield session
    session.stop()


def both_engines(spark: Any, store: Path, first: date, last: date, tmp_path: Path,
                 **options: Any) -> tuple[Any, Any]:
    """(rows, runs) of each engine for the same store and dates."""
    out = []
    for engine in ("local", "spark"):
        url = f"sqlite:///{tmp_path / f'{engine}.db'}"
        report = fill(FillSettings(str(store), first, last, url, workers=2,
                                   engine=engine, **options))  # type: ignore[arg-type]
        assert not report.failed, report
        db = open_store(url)
        runs = [{k: run[k] for k in (*rules.COUNTERS, rules.UNDATED, "rows_written")}
                for run in db.read_runs()]
        out.append((db.read_rows(), runs))
        db.close()
    return out[0], out[1]


def assert_same(local: Any, spark: Any) -> None:
    (local_rows, local_runs), (spark_rows, spark_runs) = local, spark
    assert spark_runs == local_runs
    assert [(d, r.activity_date, r.dimensions) for d, r in spark_rows] == [
        (d, r.activity_date, r.dimensions) for d, r in local_rows]
    for (_, left), (_, right) in zip(spark_rows, local_rows, strict=True):
        assert left.stats == right.stats  # both sum integers exactly: the same floats


def test_conformance_corpus_partitioned(spark: Any, tmp_path: Path) -> None:
    day = tmp_path / "pings" / "submission_date=2016-03-14"
    real = []  # the real pings, one a line, with the meta the pipeline adds
    for path in sorted(REFERENCE.glob("*.json")):
        ping = json.loads(path.read_text())
        if isinstance(ping, dict) and ping:
            ping["meta"] = {"submissionDate": "20160314", "geoCountry": "DE"}
            # dates moved into the week before the submission date, so they are processed
            info = ping.get("payload", {}).get("info", {})
            if "subsessionStartDate" in info:
                info["subsessionStartDate"] = "2016-03-12T00:00:00.0+01:00"
            if "crashDate" in ping.get("payload", {}):
                ping["payload"]["crashDate"] = "2016-03-13"
                ping["payload"].pop("processType", None)
        real.append(ping)
    write_ping_file(day / "real.json", real)
    write_ping_file(day / "rules.jsonl.gz", lines_for(list(range(41)) * 2 + [-1, -3, -5]))
    local, on_spark = both_engines(spark, tmp_path / "pings", date(2016, 3, 14),
                                   date(2016, 3, 14), tmp_path)
    counters = local[1][0]
    assert counters[rules.DUPLICATES] > 0 and counters[rules.MALFORMED_LINES] > 0
    assert counters[rules.CRASH_PROCESSED] >= 5 and counters[rules.MAIN_PROCESSED] >= 7
    assert_same(local, on_spark)


def test_conformance_corpus_flat_with_undated(spark: Any, tmp_path: Path) -> None:
    root = tmp_path / "flat"
    numbers = list(range(41)) + list(range(0, 41, 3)) + [-1, -2, -3, -4]
    write_ping_file(root / "a.jsonl", lines_for(numbers[::2]))
    write_ping_file(root / "b.ndjson.zst", lines_for(numbers[1::2]) + JUNK)
    local, on_spark = both_engines(spark, root, date(2016, 3, 14), date(2016, 3, 15), tmp_path)
    assert local[1][0][rules.UNDATED] > 0
    assert_same(local, on_spark)


def test_generated_multi_day_store(spark: Any, tmp_path: Path) -> None:
    generate_store(tmp_path / "pings", date(2016, 3, 12), date(2016, 3, 14), 800,
                   layout="flat", heavy=False, files_per_day=3)
    local, on_spark = both_engines(spark, tmp_path / "pings", date(2016, 3, 12),
                                   date(2016, 3, 14), tmp_path, sample_fraction=0.5)
    assert len(local[0]) > 100
    assert_same(local, on_spark)


def test_unreadable_file_fails_the_date_naming_it(spark: Any, tmp_path: Path) -> None:
    from crash_rate_aggregates.engines.local import ScanSpec
    from crash_rate_aggregates.engines.spark import scan_spark
    from crash_rate_aggregates.sources import PingStore

    folder = tmp_path / "pings" / "submission_date=2016-03-14"
    write_ping_file(folder / "good.json", lines_for([1, 2, 3]))
    (folder / "bad.json.gz").write_bytes(b"not gzip at all")
    store = PingStore(str(tmp_path / "pings"))
    day = date(2016, 3, 14)
    with pytest.raises(InputError, match=r"bad\.json\.gz: cannot read or inflate"):
        scan_spark(spark, store.url, store.files_for_date(day), ScanSpec(day, frozenset([day])))


def test_missing_pyspark_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from crash_rate_aggregates.engines.spark import spark_session

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(UsageError, match=r"pip install 'crash-rate-aggregates\[spark\]'"):
        spark_session()


@pytest.mark.parametrize("point", ["spark.session_starting", "spark.job_starting"])
def test_sigterm_during_spark_exits_130(point: str, tmp_path: Path) -> None:
    # while the JVM starts, and with the session up as the day's job starts: status 130, and
    # nothing left running soon after (the JVM ends once it reads the end of its stdin)
    from test_interrupts import assert_interrupted, fill

    store = tmp_path / "pings"
    write_ping_file(store / "submission_date=2016-03-14" / "a.json", lines_for(list(range(41))))
    assert_interrupted(fill(store, tmp_path / "db.sqlite", point, extra=("--engine", "spark"),
                            grace=30))


@pytest.mark.parametrize("dedupe", [True, False])
def test_a_glean_day_gives_the_local_rows_and_counters(spark: Any, tmp_path: Path,
                                                       dedupe: bool) -> None:
    # the mixed Glean day of test_glean_engines.py (both JSON forms, duplicates by document id
    # and by minidump hash, the empty-file hash): the rows worked out by hand, byte for byte
    from crash_rate_aggregates.engines.local import ScanSpec
    from crash_rate_aggregates.engines.spark import scan_spark
    from test_glean_engines import (
        COUNTERS,
        DAY,
        NO_DEDUPE_COUNTERS,
        expected_rows,
        scan_day,
        write_day,
    )

    store = write_day(tmp_path)
    spec = ScanSpec(DAY, frozenset([DAY]), dedupe=dedupe, family="glean")
    by_date, undated = scan_spark(spark, store.url, store.files_for_date(DAY), spec)
    rows, counters, _ = by_date[DAY]
    assert (counters, undated) == (COUNTERS if dedupe else NO_DEDUPE_COUNTERS, 0)
    assert rows == expected_rows(dedupe)
    local_rows, local_counters, _ = scan_day(store, workers=2, dedupe=dedupe)
    assert repr(rows) == repr(local_rows) and counters == local_counters


def test_spark_merges_the_parquet_sketches_with_its_own_functions(spark: Any,
                                                                  tmp_path: Path) -> None:
    """A user of the Parquet output counts distinct clients with Spark SQL alone:
    hll_union_agg and hll_sketch_estimate read the stored sketches as they are."""
    from crash_rate_aggregates import sketches
    from crash_rate_aggregates.stores.parquet import ParquetStore

    first, last = date(2016, 3, 13), date(2016, 3, 14)
    store = tmp_path / "pings"
    generate_store(store, first, last, 3000, seed=16, heavy=False)
    out = tmp_path / "parquet"
    report = fill(FillSettings(str(store), first, last, None, parquet_url=str(out)))
    assert not report.failed
    found = {row["channel"]: (row["clients"], row["crashing"]) for row in spark.sql(
        f"SELECT dimensions['channel'] AS channel, "
        f"hll_sketch_estimate(hll_union_agg(clients_sketch)) AS clients, "
        f"hll_sketch_estimate(hll_union_agg(main_crashes_clients_sketch)) AS crashing "
        f"FROM parquet.`{out / 'crash_aggregates' / 'v1'}` GROUP BY 1").collect()}
    # the same counts as our own merge of the same rows, over both days
    ours: dict[str, tuple[list[bytes | None], list[bytes | None]]] = {}
    for _, row in ParquetStore(str(out)).read_rows():
        clients, crashing = ours.setdefault(row.dimensions["channel"], ([], []))
        clients.append(row.sketches["clients"])
        crashing.append(row.sketches["main_crashes"])
    expected = {channel: (sketches.merge(c).count, sketches.merge(m).count)
                for channel, (c, m) in ours.items()}
    assert found == expected
    assert len(found) >= 3 and all(clients > 0 for clients, _ in found.values())
