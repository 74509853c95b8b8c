"""The memory budget behind fill's default --max-aggregates (budget.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crash_rate_aggregates import budget
from crash_rate_aggregates.aggregation import DateAggregator
from crash_rate_aggregates.engines.local import ScanSpec

# /proc/meminfo of a 24 GB machine (this one's first lines)
MEMINFO_24GB = """MemTotal:       24683568 kB
MemFree:        22365200 kB
MemAvailable:   23867004 kB
Buffers:           23872 kB
"""
TOTAL_24GB = 24683568 * 1024  # 25,275,973,632 bytes
GIB = 1 << 30


def test_meminfo_total_is_in_bytes() -> None:
    assert budget.meminfo_total(MEMINFO_24GB) == 25_275_973_632 == TOTAL_24GB
    assert budget.meminfo_total("MemFree: 10 kB\n") is None
    assert budget.meminfo_total("") is None


@pytest.mark.parametrize(("text", "limit"), [
    ("4294967296\n", 4 * GIB),  # v2 memory.max of a 4 GB container
    ("max\n", None),  # v2: no limit
    ("9223372036854771712\n", 9223372036854771712),  # v1's "no limit": MemTotal is smaller
    ("", None),
    ("garbage", None),
    ("0", None),
])
def test_cgroup_limit(text: str, limit: int | None) -> None:
    assert budget.cgroup_limit(text) == limit


def test_memory_is_the_smaller_of_total_and_cgroup_limits() -> None:
    assert budget.memory_bytes(MEMINFO_24GB, []) == TOTAL_24GB
    assert budget.memory_bytes(MEMINFO_24GB, ["max\n", "9223372036854771712\n"]) == TOTAL_24GB
    assert budget.memory_bytes(MEMINFO_24GB, ["max\n", "4294967296\n"]) == 4 * GIB
    assert budget.memory_bytes(None, ["4294967296\n"]) == 4 * GIB
    assert budget.memory_bytes(None, ["max"]) is None


def test_limits_for_24_gb_and_4_gb() -> None:
    # 25,275,973,632 * 0.6 = 15,165,584,179.2 bytes; / 2,000 = 7,582,792 aggregates
    assert budget.max_aggregates_for(TOTAL_24GB) == 7_582_792
    # 4,294,967,296 * 0.6 = 2,576,980,377.6; / 2,000 = 1,288,490 (about 2.6 GB)
    assert budget.max_aggregates_for(4 * GIB) == 1_288_490
    # two dates at once share it: 2,576,980,377 // 2 // 2,000 = 644,245
    assert budget.max_aggregates_for(4 * GIB, dates_at_once=2) == 644_245
    # 100 MB: 30,000; 10 MB would be 3,000: the floor
    assert budget.max_aggregates_for(100_000_000) == 30_000
    assert budget.max_aggregates_for(10_000_000) == budget.MIN_MAX_AGGREGATES == 10_000
    assert budget.max_aggregates_for(None) == budget.FALLBACK_MAX_AGGREGATES == 2_000_000


def test_cgroup_limit_files_walk_up_to_the_root() -> None:
    root = Path("/cg")
    base = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    assert budget.cgroup_limit_files("0::/user.slice/job\n", root) == base + [
        root / "user.slice" / "job" / "memory.max", root / "user.slice" / "memory.max"]
    v1 = "5:devices:/\n4:cpu,memory:/process_api/abc\n0::/\n"
    assert budget.cgroup_limit_files(v1, root) == base + [
        root / "memory" / "process_api" / "abc" / "memory.limit_in_bytes",
        root / "memory" / "process_api" / "memory.limit_in_bytes"]
    assert budget.cgroup_limit_files("", root) == base


def _fake_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroups: str,
                  limits: dict[str, str]) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO_24GB)
    (tmp_path / "cgroup").write_text(cgroups)
    for name, text in limits.items():
        path = tmp_path / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(budget, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(budget, "_CGROUPS", tmp_path / "cgroup")
    monkeypatch.setattr(budget, "_CGROUP_ROOT", tmp_path / "sys")
    budget.machine_memory.cache_clear()
    monkeypatch.setattr(budget, "machine_memory", budget.machine_memory.__wrapped__)


def test_default_on_a_machine_without_cgroup_limit(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_machine(tmp_path, monkeypatch, "0::/job\n", {"job/memory.max": "max\n"})
    assert budget.default_max_aggregates() == 7_582_792
    # 15,165,584,179 // 3 // 2,000
    assert budget.default_max_aggregates(dates_at_once=3) == 2_527_597


def test_default_in_a_4_gb_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_machine(tmp_path, monkeypatch, "0::/\n", {"memory.max": "4294967296\n"})
    assert budget.default_max_aggregates() == 1_288_490
    assert ScanSpec(None, frozenset()).max_aggregates == 1_288_490


def test_the_tightest_parent_cgroup_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_machine(tmp_path, monkeypatch, "4:memory:/box/job\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/box/memory.limit_in_bytes": "2147483648\n",  # 2 GiB
        "memory/box/job/memory.limit_in_bytes": "4294967296\n"})
    assert budget.default_max_aggregates() == 644_245  # 2,147,483,648 * 0.6 // 2,000


def test_explain_says_what_the_limit_protects() -> None:
    assert budget.explain(1_000) == (
        "The fill stops before a day's aggregates outgrow memory: 1,000 aggregates is about "
        "2 MB at ~2 KB each; raise --max-aggregates or use --engine spark")
    assert "7,582,792 aggregates is about 15.2 GB at ~2 KB each" in budget.explain(7_582_792)


def test_date_aggregator_default_is_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "machine_memory", lambda: 4 * GIB)
    assert DateAggregator()._max_aggregates == 1_288_490
    assert DateAggregator(max_aggregates=5)._max_aggregates == 5
