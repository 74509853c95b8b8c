"""A day of heavy pings: the local engine against the inflate floor and the seed's way.

    .venv/bin/python benchmarks/throughput.py [--pings 20000] [--repeat 3] [--data DIR]

On the same gzip files, in one run:
- inflate floor: read and decompress every file with the fastest inflater here (ISA-L), parse
  nothing;
- seed baseline: the standard library's gzip and json, line by line, then the same rules as
  dictionary walks, in one process (what the 2016 job did per executor);
- `crash-aggregates fill --workers 1` and `--workers 2`, each as a whole process (start-up,
  listing, writing the SQLite store included), with the peak memory (RSS) of its process tree;
- the dedupe state of the day, in bytes per ping.

Every speed is MB of JSON (uncompressed) per second, from the best of `--repeat` runs of each
contender; peak memory is the largest seen. The machine is shared and noisy: read the ratios,
not the seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import psutil

from crash_rate_aggregates import rules
from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.sources import PingStore

DAY = date(2016, 3, 14)
GOALS = {"vs_baseline": 8.0, "vs_floor": 0.4, "scaling": 1.7, "rss_mb": 400.0, "dedupe": 32.0}


def heavy_day(data: Path, pings: int) -> tuple[Path, list[Path], int]:
    """The store (generated once, then reused), its files and its bytes of JSON."""
    from crash_rate_aggregates.synth import generate_store

    root = data / f"heavy-{pings}"
    marker = root / "_JSON_BYTES"
    if not marker.exists():
        print(f"generating {pings:,} heavy pings in {root} ...", flush=True)
        summary = generate_store(root, DAY, DAY, pings, seed=4, files_per_day=8, heavy=True)
        marker.write_text(str(summary.json_bytes))
    files = sorted(root.glob("submission_date=*/*.json.gz"))
    return root, files, int(marker.read_text())


def inflate_floor(files: list[Path]) -> int:
    from isal import igzip

    total = 0
    for path in files:
        with igzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


def seed_baseline(files: list[Path]) -> Counter[str]:
    """The standard library, line by line, the same rules as dictionary walks."""
    counters: Counter[str] = Counter()
    seen: set[str] = set()
    sums: dict[Any, list[float]] = {}
    for path in files:
        with gzip.open(path, "rb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    counters[rules.MALFORMED_LINES] += 1
                    continue
                if not isinstance(doc, dict):
                    counters[rules.MALFORMED_LINES] += 1
                    continue
                meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
                outcome = rules.evaluate_doc(doc, meta, DAY)
                if outcome.doc_id is not None:
                    if outcome.doc_id in seen:
                        counters[rules.DUPLICATES] += 1
                        continue
                    seen.add(outcome.doc_id)
                counters[outcome.counter] += 1
                if outcome.key is not None and outcome.measures is not None:
                    total = sums.setdefault(outcome.key, [0.0] * len(outcome.measures))
                    for index, value in enumerate(outcome.measures):
                        total[index] += value
    return counters


def timed(repeat: int, func: Any, *args: Any) -> tuple[float, Any]:
    """The best time of `repeat` runs (the least disturbed by the rest of the machine)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def best_fill(repeat: int, store: Path, workers: int) -> tuple[float, float, str]:
    runs = [run_fill(store, workers) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]


def run_fill(store: Path, workers: int) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB, whole process tree) and output of one `fill`."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "crash_rate_aggregates", "fill", "--input", str(store),
                   "--from", DAY.isoformat(), "--to", DAY.isoformat(),
                   "--db", f"sqlite:///{folder}/bench.db", "--workers", str(workers)]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        out, err, peak = communicate_with_peak_rss(process, interval=0.1)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"fill failed ({process.returncode}): {err.strip()}")
    return seconds, peak, out.strip()


def communicate_with_peak_rss(process: subprocess.Popen[str],
                              interval: float) -> tuple[str, str, float]:
    """`process.communicate()`, and the peak RSS (MB) of its whole process tree, sampled every
    `interval` seconds meanwhile (the benchmarks' memory figures)."""
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                rss = 0
            peak = max(peak, rss / 1e6)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    return out, err, peak


def dedupe_bytes_per_ping(store: Path) -> tuple[float, int]:
    pings = PingStore(str(store))
    result = scan(pings, pings.files_for_date(DAY), ScanSpec(DAY, frozenset([DAY])))
    aggregator = result.aggregators[DAY]
    ids = sum(aggregator.counters.values()) - aggregator.counters[rules.MALFORMED_LINES]
    return aggregator.dedupe_bytes / max(ids, 1), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each contender; the best time counts")
    args = parser.parse_args()

    store, files, json_bytes = heavy_day(args.data, args.pings)
    megabytes = json_bytes / 1e6
    compressed = sum(f.stat().st_size for f in files) / 1e6
    print(f"day: {args.pings:,} pings, {megabytes:,.0f} MB of JSON in {len(files)} gzip files "
          f"({compressed:,.0f} MB)", flush=True)
    inflate_floor(files)  # warm the page cache so every contender reads from memory

    floor_s, inflated = timed(args.repeat, inflate_floor, files)
    assert inflated == json_bytes, (inflated, json_bytes)
    seed_s, seed_counters = timed(args.repeat, seed_baseline, files)
    one_s, one_rss, one_out = best_fill(args.repeat, store, 1)
    two_s, two_rss, _ = best_fill(args.repeat, store, 2)
    per_ping, ids = dedupe_bytes_per_ping(store)
    assert f"main_processed={seed_counters[rules.MAIN_PROCESSED]} " in one_out, (
        "fill and the seed baseline disagree", one_out, seed_counters)

    def speed(seconds: float) -> str:
        return f"{megabytes / seconds:8.1f} MB/s  ({seconds:6.2f} s)"

    ratios = {
        "vs_baseline": seed_s / one_s,
        "vs_floor": floor_s / one_s,
        "scaling": one_s / two_s,
    }
    print(f"inflate floor (ISA-L, no parsing):  {speed(floor_s)}")
    print(f"seed baseline (gzip + json, 1 proc): {speed(seed_s)}")
    print(f"fill --workers 1:                   {speed(one_s)}  peak RSS {one_rss:6.0f} MB")
    print(f"fill --workers 2:                   {speed(two_s)}  peak RSS {two_rss:6.0f} MB")
    print(f"dedupe state: {per_ping:.1f} bytes a ping ({ids:,} ids)")
    checks = [
        ("fill/baseline, 1 worker", ratios["vs_baseline"], ">=", GOALS["vs_baseline"]),
        ("fill/floor, 1 worker", ratios["vs_floor"], ">=", GOALS["vs_floor"]),
        ("2 workers / 1 worker", ratios["scaling"], ">=", GOALS["scaling"]),
        ("peak RSS MB, 1 worker", one_rss, "<", GOALS["rss_mb"]),
        ("peak RSS MB, 2 workers", two_rss, "<", GOALS["rss_mb"]),
        ("dedupe bytes a ping", per_ping, "<=", GOALS["dedupe"]),
    ]
    failed = 0
    for name, value, op, goal in checks:
        met = value >= goal if op == ">=" else value < goal if op == "<" else value <= goal
        failed += not met
        print(f"  {name:<24} {value:9.3f}  goal {op} {goal:<6}  {'MET' if met else 'NOT MET'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
