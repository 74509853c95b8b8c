"""How many distinct aggregates a date may hold: a memory budget (issue 17).

The local engine holds every aggregate of a date in memory until the date is written. A wide
day (every ping its own aggregate; benchmarks/aggregate_scale.py) costs ~1.4-1.8 KB of peak
RSS an aggregate, fill's process tree with its workers included; `BYTES_PER_AGGREGATE` rounds
that up to 2 KB. The default `--max-aggregates` is what fits in `MEMORY_SHARE` of this
machine's memory at that cost: the smaller of MemTotal (/proc/meminfo) and the memory limit
of our cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`, ours and our parents'), the rest
being the margin for the interpreter, the workers, the store's driver and the estimate's
error. When the memory cannot be read (not Linux) the limit is `FALLBACK_MAX_AGGREGATES`.

A date over the limit fails before its aggregates outgrow memory (`DateAggregator`), in one
line saying so; `--max-aggregates N` sets another limit, `--engine spark` has none.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

#: Peak RSS an aggregate of a wide day (measured 1.4-1.8 KB), rounded up.
BYTES_PER_AGGREGATE = 2_000
#: The share of the memory the aggregates may take: the rest is the safety margin.
MEMORY_SHARE = 0.6
#: The limit when the memory cannot be read.
FALLBACK_MAX_AGGREGATES = 2_000_000
#: Never below this, however small the memory: a small day still fills.
MIN_MAX_AGGREGATES = 10_000

_MEMINFO = Path("/proc/meminfo")
_CGROUPS = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def meminfo_total(text: str) -> int | None:
    """MemTotal, in bytes, from the text of /proc/meminfo (None when absent)."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "MemTotal":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024  # the kernel writes kB (KiB)
    return None


def cgroup_limit(text: str) -> int | None:
    """The bytes of a cgroup memory limit file (`memory.max`, `memory.limit_in_bytes`); None
    for no limit (`max`) or what cannot be read."""
    value = text.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def cgroup_limit_files(cgroups: str, root: Path = _CGROUP_ROOT) -> list[Path]:
    """The memory limit files that may bound us, from the text of /proc/self/cgroup: for v2
    (`0::/path`) `memory.max` of our cgroup and each parent; for v1 (`N:memory:/path`)
    `memory.limit_in_bytes` likewise under `root/memory`. In a container the namespace's root
    is the container's cgroup, so `root/memory.max` is always among them."""
    found: list[Path] = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        folders = [part for part in path.strip().split("/") if part and part not in (".", "..")]
        for depth in range(len(folders), 0, -1):
            found.append(base.joinpath(*folders[:depth]) / name)
    return list(dict.fromkeys(found))


def memory_bytes(meminfo: str | None, limits: Iterable[str]) -> int | None:
    """The memory we may use: the smaller of MemTotal and every cgroup limit given (the texts
    of the limit files); None when neither says anything."""
    known = [cgroup_limit(text) for text in limits]
    known.append(meminfo_total(meminfo) if meminfo is not None else None)
    values = [value for value in known if value is not None]
    return min(values) if values else None


def max_aggregates_for(memory: int | None, dates_at_once: int = 1) -> int:
    """The default --max-aggregates for `memory` bytes, `dates_at_once` dates held together:
    `MEMORY_SHARE` of it at `BYTES_PER_AGGREGATE` an aggregate, at least
    `MIN_MAX_AGGREGATES`; `FALLBACK_MAX_AGGREGATES` when the memory is unknown."""
    if memory is None:
        return FALLBACK_MAX_AGGREGATES
    share = int(memory * MEMORY_SHARE) // max(dates_at_once, 1)
    return max(share // BYTES_PER_AGGREGATE, MIN_MAX_AGGREGATES)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


@functools.cache
def machine_memory() -> int | None:
    """This process's memory: MemTotal, or the cgroup limit when smaller (read once)."""
    cgroups = _read(_CGROUPS) or ""
    files = cgroup_limit_files(cgroups, _CGROUP_ROOT)
    limits = [text for text in map(_read, files) if text is not None]
    return memory_bytes(_read(_MEMINFO), limits)


def default_max_aggregates(dates_at_once: int = 1) -> int:
    """The default --max-aggregates on this machine."""
    return max_aggregates_for(machine_memory(), dates_at_once)


def _size(size: float) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e3:.0f} KB"


def explain(max_aggregates: int) -> str:
    """What the limit protects, for the error of a date over it."""
    return (f"The fill stops before a day's aggregates outgrow memory: {max_aggregates:,} "
            f"aggregates is about {_size(max_aggregates * BYTES_PER_AGGREGATE)} at "
            f"~{_size(BYTES_PER_AGGREGATE)} each; raise --max-aggregates or use --engine spark")
