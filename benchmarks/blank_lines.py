"""A gzip file of nothing but blank lines against real pings of the same size, and both against
the inflate floor.

    .venv/bin/python benchmarks/blank_lines.py [--mib 64] [--repeat 3] [--data DIR]

Blank lines are no pings (SPEC: skipped, counted nowhere), so a file of millions of them should
cost what reading its bytes costs, not a microsecond a line: the reader steps over runs of blank
lines in bulk. Three files of the same uncompressed size, each read by the local engine (one
worker, in this process) and by the fastest inflater here (ISA-L, parsing nothing):

- `b"\\n" * N`;
- `b"\\r\\n" * N/2` (blank lines with Windows line ends: whitespace that is not a newline);
- heavy synthetic pings.

Prints seconds and the ratios engine / inflate floor for each, and blank / pings. The goal: a
blank-line file within 5x its inflate floor (it was 2,400x: 116 s for 64 MiB of newlines).
"""

from __future__ import annotations

import argparse
import gzip
import time
from datetime import date
from pathlib import Path
from typing import Any

from crash_rate_aggregates.engines.local import ScanSpec, scan
from crash_rate_aggregates.sources import PingStore

DAY = date(2016, 3, 14)
GOAL_VS_FLOOR = 5.0


def blank_store(data: Path, name: str, content: bytes) -> Path:
    root = data / f"blank-{name}-{len(content) >> 20}"
    path = root / f"submission_date={DAY}" / "blank.json.gz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(content, 6))
    return root


def pings_store(data: Path, size: int) -> Path:
    """Heavy synthetic pings, cut to `size` bytes of JSON (whole lines), in one gzip file."""
    from crash_rate_aggregates.synth import generate_store

    root = data / f"pings-{size >> 20}"
    path = root / f"submission_date={DAY}" / "pings.json.gz"
    if path.exists():
        return root
    source = data / "pings-source"
    pings = 200
    while True:
        generate_store(source, DAY, DAY, pings, seed=5, files_per_day=1, heavy=True)
        text = b"".join(gzip.decompress(p.read_bytes()) for p in sorted(source.rglob("*.gz")))
        if len(text) >= size:
            break
        pings *= 2
    cut = text.rfind(b"\n", 0, size) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text[:cut], 6))
    return root


def inflate_floor(root: Path) -> int:
    from isal import igzip

    total = 0
    for path in sorted(root.rglob("*.gz")):
        with igzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


def engine(root: Path) -> Any:
    store = PingStore(str(root))
    return scan(store, store.files_for_date(DAY), ScanSpec(DAY, frozenset([DAY])))


def best(repeat: int, func: Any, *args: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="uncompressed size of each file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    args = parser.parse_args()
    size = args.mib << 20
    stores = {
        "newlines": blank_store(args.data, "lf", b"\n" * size),
        "CRLF blank lines": blank_store(args.data, "crlf", b"\r\n" * (size // 2)),
        "heavy pings": pings_store(args.data, size),
    }
    seconds = {}
    for name, root in stores.items():
        inflate_floor(root)  # warm the page cache
        floor_s, inflated = best(args.repeat, inflate_floor, root)
        engine_s, result = best(args.repeat, engine, root)
        counted = sum(sum(a.counters.values()) for a in result.aggregators.values())
        seconds[name] = engine_s
        print(f"{name:17s} {inflated / 2**20:6.0f} MiB: engine {engine_s:7.3f} s, inflate floor "
              f"{floor_s:6.3f} s, engine / floor {engine_s / floor_s:7.1f}x "
              f"({counted:,} lines counted)")
    for name in ("newlines", "CRLF blank lines"):
        print(f"{name} / heavy pings of the same size: "
              f"{seconds[name] / seconds['heavy pings']:.3f}")
    worst = max(seconds["newlines"], seconds["CRLF blank lines"])
    floor = best(1, inflate_floor, stores["newlines"])[0]
    verdict = "ok" if worst / floor <= GOAL_VS_FLOOR else "MISSED"
    print(f"goal: blank lines within {GOAL_VS_FLOOR:.0f}x the inflate floor: {verdict}")


if __name__ == "__main__":
    main()
