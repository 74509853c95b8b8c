"""The largest client's crash count, client_<crash>_max: made by the local engine, merged by
maximum by the stores' queries and the rates view, and weighed by the rates view's upper limit
(docs/rates.md, "Heavy crash loops"). Every expected value is worked out by hand here."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from scipy.stats import gamma  # type: ignore[import-untyped]

from conftest import fold
from crash_rate_aggregates import rates, rules
from crash_rate_aggregates.aggregation import Aggregate
from crash_rate_aggregates.stores.base import RunRecord, open_store
from crash_rate_aggregates.stores.queries import StatsQuery

DAY = date(2016, 3, 14)
H = 3600  # legacy usage is counted in seconds
CRASH = "main_crashes"
KEY = (DAY.toordinal(), *(["x"] * len(rules.DIMENSIONS)))
OTHER_KEY = (DAY.toordinal(), *(["y"] * len(rules.DIMENSIONS)))


def ping(client: str | None, main: int = 0, content: int = 0, hours: int = 0,
         key: rules.Key = KEY) -> rules.Outcome:
    measures = (1 if hours else 0, hours * H, main, content, 0, 0, 0, 0)
    counter = rules.MAIN_PROCESSED if hours else rules.CRASH_PROCESSED
    return rules.Outcome(counter, DAY, None, key, client, measures)


# -- the local engine -------------------------------------------------------------------------


DAY_PINGS = [
    ping("a", content=2, hours=1),  # client a: content 2 + 3 = 5, main 1
    ping("a", main=1),
    ping("b", main=1), ping("b", main=1), ping("b", main=1),  # client b: main 3, content 4
    ping("a", content=3, hours=2),
    ping("b", content=4, hours=1),
    ping(None, main=1), ping(None, main=1),  # no client id: two clients of one crash each
    ping("a", content=9, hours=1, key=OTHER_KEY),  # a again, in another aggregate
]


@pytest.mark.parametrize(("per_batch", "compact_every"), [(1000, 1_000_000), (1, 1), (3, 2)])
def test_the_largest_client_of_each_aggregate_by_hand(per_batch: int,
                                                      compact_every: int) -> None:
    rows = fold(DAY_PINGS, per_batch, compact_every)
    by_key = {row.dimensions["channel"]: row.stats for row in rows}
    first, other = by_key["x"], by_key["y"]
    # main: a 1, b 3, the two anonymous 1 each: the largest is b's 3, of C = 1 + 3 + 2 = 6
    assert (first[CRASH], first["client_main_crashes_max"]) == (6.0, 3.0)
    # content: a 2 + 3 = 5 (its pings are summed first), b 4: the largest is a's 5, of 9
    assert (first["content_crashes"], first["client_content_crashes_max"]) == (9.0, 5.0)
    assert first["client_gpu_crashes_max"] == 0.0
    # the other aggregate has only a's 9 content crashes there, not a's 5 of the first
    assert other["client_content_crashes_max"] == 9.0 and other["client_main_crashes_max"] == 0
    assert list(first)[-6:] == [f"client_{c}_max" for c in rules.CRASH_MEASURES]


def test_the_largest_client_beyond_int64() -> None:
    # Two pings of 2^62 content crashes from client a: its sum, 2^63, leaves int64 (the sums
    # become Python integers); b's one crash is smaller. The stat is 2^63 as a double, exactly.
    big = 1 << 62
    [row] = fold([ping("a", content=big, hours=1), ping("a", content=big),
                  ping("b", content=1, hours=1)], per_batch=1)
    assert row.stats["client_content_crashes_max"] == float(1 << 63)
    assert row.stats["content_crashes"] == float((1 << 63) + 1)


# -- merged by maximum in the stores ----------------------------------------------------------


def stats_of(**values: float) -> dict[str, float]:
    stats = dict.fromkeys(rules.STATS, 0.0)
    stats.update(values)
    return stats


def row(country: str, stats: dict[str, float], channel: str = "nightly") -> Aggregate:
    dims = {"channel": channel, "build_version": "45.0", "os_name": "Windows_NT",
            "country": country}
    return Aggregate("2016-03-14", dims, stats)


def run(rows: int) -> RunRecord:
    return RunRecord("run-1", DAY, "completed", datetime(2016, 3, 15, tzinfo=UTC), 1.0, rows,
                     "/pings", "test", dict.fromkeys(rules.COUNTERS, 0), undated=0)


# The heavy-loop group of docs/rates.md: 100 clients of 10 h, one of 20 crashes and ten of one,
# stored as two rows (the looping client's country, the others'). Sums: C = 30, H = 1000,
# sum c^2 = 400 + 10 = 410, sum c h = 20 * 10 + 10 * 10 = 300, sum h^2 = 100 * 100 = 10,000.
LOOP = stats_of(main_crashes=20, usage_hours=10, client_count=1, client_main_crashes_squared=400,
                client_main_crashes_usage_hours=200, client_usage_hours_squared=100,
                client_main_crashes_max=20)
REST = stats_of(main_crashes=10, usage_hours=990, client_count=99, client_main_crashes_squared=10,
                client_main_crashes_usage_hours=100, client_usage_hours_squared=9900,
                client_main_crashes_max=1)


def old_row_stats(stats: dict[str, float]) -> dict[str, float]:
    """A row written before client_<crash>_max existed: the 29 stats only."""
    return {name: value for name, value in stats.items() if not rules.merged_by_max(name)}


def store_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'max.db'}"


def view_rows(url: str) -> list[dict[str, Any]]:
    sql = "SELECT * FROM crash_rates_daily ORDER BY channel"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            cursor = db.execute(sql)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    with psycopg.connect(url) as db:
        cursor = db.execute(sql)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_stores_merge_the_largest_client_by_max(backend: str, tmp_path: Any,
                                                request: pytest.FixtureRequest) -> None:
    url = store_url(backend, tmp_path, request)
    store = open_store(url)
    try:
        store.replace_date(DAY, [row("DE", LOOP), row("FR", REST),
                                 row("DE", old_row_stats(LOOP), channel="old")], run(3))
        found = dict(store.sum_stats(StatsQuery(by=("channel",))))
    finally:
        store.close()
    nightly, old = found[("nightly",)], found[("old",)]
    assert nightly[CRASH] == 30.0  # 20 + 10: summed
    assert nightly["client_main_crashes_max"] == 20.0  # max(20, 1): not 21
    assert nightly["client_count"] == 100.0
    # the old row has no such stat: the query reads 0, and the interval falls back to w = d
    assert old[CRASH] == 20.0 and old["client_main_crashes_max"] == 0.0
    assert rates.add_stats([LOOP, REST]) == pytest.approx(nightly)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_rates_view_weighs_the_largest_client(backend: str, tmp_path: Any,
                                                  request: pytest.FixtureRequest) -> None:
    url = store_url(backend, tmp_path, request)
    store = open_store(url)
    try:
        store.replace_date(DAY, [row("DE", LOOP), row("FR", REST),
                                 row("DE", old_row_stats(LOOP), channel="old"),
                                 row("FR", old_row_stats(REST), channel="old")], run(4))
    finally:
        store.close()
    by_channel = {r["channel"]: r for r in view_rows(url)}
    # r = 0.03, r h_i = 0.3; residuals 410 - 2 * 0.03 * 300 + 0.03^2 * 10,000 = 401;
    # Var(C) = 100/99 * 401 = 405.05, d = 405.05 / 30 = 13.50. The largest client's 20 > d:
    # w = 20, shape (30 + 20)^2 / (13.50 * 30 + 400) = 3.105, scale 805.05 / 50 = 16.10.
    d = 100 / 99 * 401 / 30
    spread = d * 30 + 20 * 20
    upper = gamma.ppf(0.975, 50**2 / spread, scale=spread / 50)  # over H = 1,000 h: per 1,000 h
    assert upper == pytest.approx(119.01, abs=0.01)
    nightly = by_channel["nightly"]
    assert nightly[CRASH] == 30.0 and nightly["main_crashes_per_1000h"] == pytest.approx(30.0)
    # Wilson-Hilferty's cube root for the gamma quantile: within 0.6% (here 0.05%)
    assert nightly["main_crashes_upper"] == pytest.approx(upper, rel=6e-3)
    assert nightly["main_crashes_upper"] == pytest.approx(
        rates.crash_rate(rates.add_stats([LOOP, REST]), CRASH).upper, rel=6e-3)
    # Old rows, without the stat: w = d, d times Garwood's upper limit of k = 30 / d: 102.27
    garwood = d * rates.exact_poisson_limits(30 / d)[1]
    assert garwood == pytest.approx(102.27, abs=0.01)
    assert by_channel["old"]["main_crashes_upper"] == pytest.approx(garwood, rel=6e-3)
    # the lower limit does not depend on the largest client
    assert nightly["main_crashes_lower"] == pytest.approx(by_channel["old"]["main_crashes_lower"])
