"""Distinct clients (sketches.py), crash incidence and crash-free users (rates.incidence).

The accuracy test builds a population of 60,000 clients over four days, writes the day's
aggregates to a real SQLite store, and compares `distinct_clients` for 24 selections with the
exact distinct counts of the same generated records.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from crash_rate_aggregates import rates, rules, sketches
from crash_rate_aggregates.aggregation import DateAggregator, DateBatch, client_hash
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.queries import StatsQuery

H = rules.SECONDS_PER_HOUR


def _sketch(*hashes: int) -> bytes | None:
    return sketches.sketch_of(np.array(hashes, dtype=np.uint64))


def test_a_sketch_counts_each_client_once() -> None:
    assert _sketch() is None
    assert sketches.merge([_sketch(5, 7, 5, 2**64 - 1)]).count == 3
    assert sketches.merge([_sketch(1, 2, 3), None, _sketch(3, 4)]).count == 4  # the union
    assert sketches.merge([None, None]) == sketches.NONE


def test_the_same_clients_give_the_same_bytes_in_any_order() -> None:
    values = list(range(1, 3000, 7))
    shuffled = values[:]
    random.Random(1).shuffle(shuffled)
    assert _sketch(*values) == _sketch(*shuffled)


def test_incidence_is_wilsons_interval() -> None:
    # 42 of 179 clients crashed. By hand, z = 1.959964: p = 0.234637, scale = 1 + z^2/179 =
    # 1.021461, center = (p + z^2/358) / scale = 0.240212, half = z / scale * sqrt(p (1 - p)
    # / 179 + z^2 / (4 179^2)) = 0.061678: [0.178534, 0.301890].
    share = rates.incidence(42, 179)
    assert share is not None
    assert share.value == pytest.approx(42 / 179)
    assert share.lower == pytest.approx(0.178534, abs=2e-6)
    assert share.upper == pytest.approx(0.301890, abs=2e-6)
    crash_free = share.complement()
    assert (crash_free.value, crash_free.lower, crash_free.upper) == pytest.approx(
        (1 - 42 / 179, 1 - 0.301890, 1 - 0.178534), abs=2e-6)


def test_incidence_edges() -> None:
    assert rates.incidence(0, 0) is None
    none = rates.incidence(0, 50)
    assert none is not None and none.value == 0 and none.lower == 0
    # z^2 / (n + z^2) = 3.841459 / 53.841459: Wilson's upper limit at k = 0
    assert none.upper == pytest.approx(0.071347, abs=2e-6)
    every = rates.incidence(60, 50)  # sketch estimates: more crashing than clients is all
    assert every is not None and every.value == 1 and every.upper == 1


# -- accuracy against exact distinct counts -----------------------------------------------------

DAYS = [date(2024, 5, 1) + timedelta(days=n) for n in range(4)]
CHANNELS = ("release", "beta", "nightly", "esr")
OSES = ("Windows_NT", "Darwin", "Linux")
COUNTRIES = ("US", "DE", "FR", "BR", "IN", "JP", "GB", "CA", "PL", "TR")
NAMES = rules.DIMENSION_NAMES


def _population(clients: int = 60_000) -> list[tuple[date, dict[str, str], str, int]]:
    """(day, dimensions, client id, main crashes) records: each client has one channel, OS
    and country, a ping on 1 to 4 days, and crashes on a day with probability 0.05."""
    rng = random.Random(16)
    records = []
    for number in range(clients):
        dims = {"channel": rng.choices(CHANNELS, (70, 15, 10, 5))[0],
                "os_name": rng.choices(OSES, (80, 12, 8))[0],
                "country": rng.choice(COUNTRIES), "build_id": "20240501000000"}
        for day in rng.sample(DAYS, rng.randint(1, 4)):
            records.append((day, dims, f"client-{number}", int(rng.random() < 0.05)))
    return records


def _fill(url: str, records: list[tuple[date, dict[str, str], str, int]]) -> None:
    store = open_store(url)
    for day in DAYS:
        aggregator = DateAggregator()
        batch = DateBatch()
        for when, dims, client, crashes in records:
            if when == day:
                key = (day.toordinal(), *(dims.get(name) for name in NAMES))
                batch.add(rules.Outcome(rules.MAIN_PROCESSED, day, None, key, client,
                                        (1, H, crashes, 0, 0, 0, 0, 0)))
        aggregator.add(batch.freeze())
        rows = aggregator.finish()
        store.replace_date(day, rows, RunRecord(
            "accuracy", day, "completed", datetime(2024, 5, 5, tzinfo=UTC), 1.0, len(rows),
            "generated", "test", dict(aggregator.counters)))
    store.close()


#: 24 selections (groupings, filters, date ranges), each of one or more groups.
SELECTIONS: list[tuple[tuple[str, ...], dict[str, str], int, int]] = [
    ((), {}, 0, 3), ((), {}, 0, 0), ((), {}, 1, 2), ((), {}, 3, 3), ((), {}, 2, 3),
    (("channel",), {}, 0, 3), (("channel",), {}, 1, 1), (("os_name",), {}, 0, 3),
    (("os_name",), {}, 0, 1), (("country",), {}, 0, 3), (("country",), {}, 2, 2),
    (("channel", "os_name"), {}, 0, 3), (("channel", "country"), {}, 0, 1),
    ((), {"channel": "esr"}, 0, 3), ((), {"channel": "esr"}, 1, 1),
    ((), {"channel": "nightly", "os_name": "Linux"}, 0, 3), ((), {"os_name": "Darwin"}, 0, 2),
    (("country",), {"channel": "beta"}, 2, 3), ((), {"country": "JP", "os_name": "Darwin"}, 0, 1),
    (("os_name",), {"country": "DE"}, 0, 3), ((), {"country": "BR"}, 0, 0),
    (("channel",), {"os_name": "Windows_NT"}, 1, 3), ((), {"channel": "release"}, 0, 3),
    (("channel", "os_name", "country"), {}, 3, 3),
]


def test_distinct_clients_are_within_2_percent_of_the_exact_counts(tmp_path: Path) -> None:
    records = _population()
    url = f"sqlite:///{tmp_path / 'accuracy.db'}"
    _fill(url, records)
    store = open_store(url, create=False)
    checked = 0
    for by, where, first, last in SELECTIONS:
        query = StatsQuery(by=by, first=DAYS[first], last=DAYS[last], where=where)
        found = store.distinct_clients(query)
        exact: dict[tuple[object, ...], tuple[set[str], set[str]]] = {}
        for day, dims, client, crashes in records:
            if DAYS[first] <= day <= DAYS[last] and all(dims[k] == v for k, v in where.items()):
                seen, crashed = exact.setdefault(tuple(dims[name] for name in by), (set(), set()))
                seen.add(client)
                if crashes:
                    crashed.add(client)
        assert set(found) == set(exact)
        for group, (seen, crashed) in exact.items():
            for name, truth in ((sketches.CLIENTS, len(seen)), ("main_crashes", len(crashed))):
                estimate = found[group][name]
                tolerance = 0.01 if truth < 1000 else 0.02
                assert abs(estimate.estimate - truth) <= tolerance * truth, (by, where, group,
                                                                              name, truth)
                assert estimate.lower <= estimate.estimate <= estimate.upper
                checked += 1
    assert len(SELECTIONS) == 24
    assert checked > 400  # every group's clients and crashing clients: small and large counts


def test_client_ids_hash_the_same_in_every_process() -> None:
    # the sketches hold client_hash values: stable, so that a client counts once across days,
    # files, workers and engines
    assert client_hash("client-1") == client_hash("client-1") != client_hash("client-2")


@pytest.mark.postgres
@pytest.mark.parametrize("family", ["legacy", "glean"])
def test_postgresql_and_sqlite_merge_to_the_same_counts(tmp_path: Path, pg_url: str,
                                                        family: str) -> None:
    """Both stores, both families, groupings, filters and both kinds of dates: the same
    distinct counts from the same rows (PostgreSQL hands back bytea, SQLite bytes)."""
    from crash_rate_aggregates.fill import FillSettings, fill
    from crash_rate_aggregates.synth import generate_store
    from crash_rate_aggregates.synth_glean import generate_glean_store

    first, last = date(2025, 6, 2), date(2025, 6, 3)
    pings = tmp_path / "pings"
    if family == "glean":
        generate_glean_store(pings, first, last, 3000, seed=3)
    else:
        generate_store(pings, first, last, 1500, seed=3, heavy=False)
    urls = [f"sqlite:///{tmp_path / 'm.db'}", pg_url]
    for url in urls:
        assert not fill(FillSettings(str(pings), first, last, url, family=family)).failed
    queries = [StatsQuery(family=family), StatsQuery(by=("channel",), family=family),
               StatsQuery(by=("os_name",), date_kind="activity", per_date=True, family=family),
               StatsQuery(where={"channel": "release"}, first=last, last=last, family=family)]
    for query in queries:
        found = []
        for url in urls:
            store = open_store(url, create=False, family=family)
            found.append({group: {name: count.count for name, count in counts.items()}
                          for group, counts in store.distinct_clients(query).items()})
            store.close()
        assert found[0] == found[1] and found[0], query
    everyone = found[0]
    assert all(counts["clients"] > 0 for counts in everyone.values())
