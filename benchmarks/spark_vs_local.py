"""The Spark engine on local[2] against the local engine with 2 workers, on a day of heavy pings.

    .venv/bin/python benchmarks/spark_vs_local.py [--pings 20000] [--repeat 3]

Same files as benchmarks/throughput.py (generated once under benchmarks/.data/). Each engine
runs the whole `fill` of the day into SQLite, in this process, best of `--repeat`; the
SparkSession is started before the clock (on a cluster it exists already) and its start-up is
printed apart. Goal: Spark at least 0.5x the local engine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from crash_rate_aggregates.engines.spark import spark_session
from crash_rate_aggregates.fill import FillSettings, fill
from throughput import DAY, heavy_day


def best_fill(store: Path, engine: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            settings = FillSettings(str(store), DAY, DAY, f"sqlite:///{folder}/bench.db",
                                    workers=2, engine=engine)  # type: ignore[arg-type]
            started = time.perf_counter()
            report = fill(settings)
            best = min(best, time.perf_counter() - started)
            assert not report.failed, report
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    args = parser.parse_args()
    store, _, json_bytes = heavy_day(args.data, args.pings)
    megabytes = json_bytes / 1e6

    started = time.perf_counter()
    spark = spark_session("local[2]")
    session_s = time.perf_counter() - started
    local_s = best_fill(store, "local", args.repeat)
    spark_s = best_fill(store, "spark", args.repeat)
    spark.stop()

    ratio = local_s / spark_s
    print(f"day: {args.pings:,} pings, {megabytes:,.0f} MB of JSON")
    print(f"local engine, 2 workers: {megabytes / local_s:8.1f} MB/s  ({local_s:6.2f} s)")
    print(f"spark engine, local[2]:  {megabytes / spark_s:8.1f} MB/s  ({spark_s:6.2f} s)"
          f"  (+ {session_s:.1f} s to start the session, not counted)")
    print(f"spark / local: {ratio:.3f}x  (goal: at least 0.5x) -> "
          f"{'MET' if ratio >= 0.5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
