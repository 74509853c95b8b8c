"""Replacing one submission date of 1,000,000 aggregate rows in PostgreSQL, against a bare COPY.

    .venv/bin/python benchmarks/pg_replace.py [--url postgresql://...] [--rows 1000000]

In one run, on the same server and the same rows:
- bare COPY: the rows, already in COPY text form, copied into an empty table with the same
  columns and indexes (the fastest a load can be);
- replace: `PostgresStore.replace_date` on a date that already holds as many rows: advisory
  lock, DELETE, formatting and COPY of the new rows, run record, commit.
Prints both times and the ratio; the goal is a ratio of at most 2.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from datetime import UTC, date, datetime

import psycopg

from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.stores.base import RunRecord
from crash_rate_aggregates.stores.postgres import PostgresStore, copy_blocks

DAY = date(2016, 3, 14)


def make_rows(count: int) -> list[Aggregate]:
    """`count` distinct aggregates shaped like real ones: 13 dimensions, 29 stats."""
    rng = random.Random(1)
    stats_pool = []
    for _ in range(1000):
        hours = rng.uniform(0, 300)
        stats = {name: float(rng.randint(0, 40)) for name in rules.STATS}
        stats.update(usage_hours=hours, usage_hours_squared=hours * hours / 3)
        stats_pool.append(stats)
    rows = []
    for number in range(count):
        dims = {
            "build_version": rng.choice(["45.0", "46.0", "47.0a2", "48.0a1"]),
            "build_id": f"201603{rng.randint(1, 14):02d}030215",
            "channel": rng.choice(["release", "beta", "aurora", "nightly"]),
            "application": "Firefox",
            "os_name": rng.choice(["Windows_NT", "Darwin", "Linux"]),
            "os_version": f"10.0.{number}",
            "architecture": rng.choice(["x86", "x86-64"]),
            "country": rng.choice(["US", "DE", "FR", "BR", "IN", "JP"]),
            "e10s_enabled": rng.choice(["True", "False"]),
            "e10s_cohort": "test",
            "gfx_compositor": rng.choice(["d3d11", "opengl", "basic"]),
        }
        activity = date(2016, 3, rng.randint(7, 14)).isoformat()
        rows.append(Aggregate(activity, dims, stats_pool[number % len(stats_pool)]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get(
        "CRASH_AGGREGATES_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
    try:
        print(f"making {args.rows:,} rows...", flush=True)
        rows = make_rows(args.rows)
        store = PostgresStore(url)
        run = RunRecord("bench", DAY, "completed", datetime.now(UTC), 0.0, len(rows), "bench",
                        "bench", {})
        store.replace_date(DAY, rows, run)  # the date now holds the rows to be replaced

        blocks = list(copy_blocks(DAY.isoformat(), rows))
        megabytes = sum(len(b) for b in blocks) / 1e6
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE bare (LIKE crash_aggregates INCLUDING ALL)")
            connection.execute("CHECKPOINT")
            started = time.perf_counter()
            with connection.cursor() as cursor, cursor.copy(
                    "COPY bare (submission_date, activity_date, dimensions, stats) "
                    "FROM STDIN") as copy:
                for block in blocks:
                    copy.write(block)
            bare = time.perf_counter() - started
            connection.execute("CHECKPOINT")
        del blocks

        started = time.perf_counter()
        store.replace_date(DAY, rows, run)
        replace = time.perf_counter() - started
        [(count,)] = store.connection.execute(
            "SELECT count(*) FROM crash_aggregates WHERE submission_date = %s", (DAY,)).fetchall()
        assert count == len(rows), count
        store.close()
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")

    ratio = replace / bare
    print(f"rows:            {args.rows:,} ({megabytes:,.0f} MB of COPY text)")
    print(f"bare COPY:       {bare:7.2f} s  (into an empty table with the same indexes)")
    print(f"replace a date:  {replace:7.2f} s  (lock, delete {args.rows:,}, format, COPY, commit)")
    verdict = "MET" if ratio <= 2 else "NOT MET"
    print(f"ratio:           {ratio:7.2f}x  (goal: at most 2x) -> {verdict}")


if __name__ == "__main__":
    main()
