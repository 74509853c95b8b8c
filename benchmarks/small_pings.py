"""A day of small legacy pings: the local engine against the stdlib baseline, per ping.

    .venv/bin/python benchmarks/small_pings.py [--pings 200000] [--repeat 2] [--data DIR]

Legacy crash pings (~4 KB) and light main pings (5-10 KB: the histograms the rules never read
left out, `synth.generate_store(heavy=False)`), written once; then, on the same gzip files:
- stdlib baseline: gzip and `json.loads`, line by line, then the same rules on the dict
  (`rules.evaluate_doc`), dedupe and sums, in one process (`throughput.seed_baseline`);
- the local engine, `engines.local.scan` and `finish()` (the rows), 1 worker, in a process of
  its own (the engine alone, no store written).

Goal (issue 15): the engine at least as fast per ping as the baseline. Speeds are pings
(non-blank lines) a second from the best of `--repeat` runs; CPU seconds are printed too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from throughput import DAY, seed_baseline  # beside this file

GOAL = 1.0


def light_day(data: Path, pings: int) -> tuple[Path, list[Path]]:
    from crash_rate_aggregates.synth import generate_store

    root = data / f"light-{pings}"
    marker = root / "_DONE"
    if not marker.exists():
        print(f"generating {pings:,} light pings in {root} ...", flush=True)
        generate_store(root, DAY, DAY, pings, seed=6, files_per_day=4, heavy=False)
        marker.write_text("done")
    return root, sorted(root.glob("submission_date=*/*.json.gz"))


def engine_child(store: str) -> None:
    """In a process of its own: scan the day with one worker, print seconds and counters."""
    from crash_rate_aggregates.engines.local import ScanSpec, scan
    from crash_rate_aggregates.sources import PingStore

    pings = PingStore(store)
    started, cpu = time.perf_counter(), time.process_time()
    result = scan(pings, pings.files_for_date(DAY), ScanSpec(DAY, frozenset([DAY])), 1)
    aggregator = result.aggregators[DAY]
    rows = aggregator.finish()
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "cpu_seconds": time.process_time() - cpu, "lines": result.lines,
                      "rows": len(rows), "counters": dict(aggregator.counters)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=200_000)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args.engine_child)
        return

    store, files = light_day(args.data, args.pings)
    size = sum(f.stat().st_size for f in files) / 1e6
    baseline_s = baseline_cpu = float("inf")
    counters = None
    for _ in range(args.repeat):
        started, cpu = time.perf_counter(), time.process_time()
        counters = seed_baseline(files)
        baseline_s = min(baseline_s, time.perf_counter() - started)
        baseline_cpu = min(baseline_cpu, time.process_time() - cpu)
    runs = [json.loads(subprocess.run(
        [sys.executable, __file__, "--engine-child", str(store)], check=True,
        capture_output=True, text=True).stdout) for _ in range(args.repeat)]
    engine = min(runs, key=lambda run: run["seconds"])
    engine_cpu = min(run["cpu_seconds"] for run in runs)
    assert counters is not None
    lines = engine["lines"]
    for name in ("main_processed", "crash_processed", "duplicates", "malformed_lines"):
        assert engine["counters"][name] == counters[name], (name, engine, counters)
    print(f"day: {lines:,} small legacy pings in {len(files)} gzip files ({size:,.0f} MB)")
    for name, seconds, cpu in (("stdlib baseline", baseline_s, baseline_cpu),
                               ("local engine, 1 worker", engine["seconds"], engine_cpu)):
        print(f"{name + ':':26s} {lines / seconds:9,.0f} pings/s  ({1e6 * seconds / lines:5.1f} µs "
              f"a ping; {lines / cpu:9,.0f} pings a CPU second)")
    ratio = baseline_s / engine["seconds"]
    print(f"  engine/baseline, 1 worker   {ratio:6.3f}  goal >= {GOAL}   "
          f"{'MET' if ratio >= GOAL else 'NOT MET'}")


if __name__ == "__main__":
    main()
