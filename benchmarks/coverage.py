"""Do the 95% crash-rate intervals cover the true rate 95% of the time? A simulation.

    .venv/bin/python benchmarks/coverage.py [--repetitions 1000] [--seed 20160314]
                                            [--clients 300 --clients 3000 ...]
                                            [--scenario NAME ...] [--workers N]

Each repetition of a scenario draws a population of clients (300, 3,000 and 30,000 by default)
from a known model:

- usage hours: gamma, rounded to whole seconds;
- a share of clients never crash (zero-inflated scenarios: 95% or 99%); the others' crash rate
  is a base rate x a gamma multiplier of mean 1 (clients differ: over-dispersion);
- a few clients (`loop_share` of all, among those that can crash) are in a crash loop, of one
  of three kinds: their rate x a factor uniform in [20, 50] ("factor"); or, heavy-tailed loop
  sizes, extra crashes uniform in 20-200 ("uniform"), or Poisson of a Pareto mean (minimum
  20, shape 1.5: mean 60, infinite variance; "pareto");
- crashes: Poisson(client's rate x client's hours), plus the loop's extra crashes.

The true rate is E[total crashes] / E[total hours], known analytically from the model
(`Scenario.true_rate`). Populations of 300 clients become real ping lines (main pings of at
most 25 hours each, one crash ping per main crash) that go through the real pipeline:
`rules.evaluate_line` -> `DateBatch` -> `DateAggregator.finish()`. Larger populations would take
minutes a repetition that way (`rules.parse_line` is ~30 us a ping): their clients go into
`DateBatch` as `rules.Outcome`s straight, one per client (its usage and crashes: the client-level
sums the intervals use are the same), then through the same aggregator. The rows (one per
country) are combined with `rates.add_stats`, then `rates.crash_rate` gives the product's
interval (its upper limit weighs the largest client, client_<crash>_max), the same without that
stat the former interval (w = d), and `rates.naive_poisson_interval` a plain Poisson interval
on the raw count, for comparison. Coverage is the share of repetitions whose interval contains
the true rate; width is the mean of upper - lower over the true rate.

The goal line: 93%-97% coverage in every scenario with at least 3,000 clients and the crash
mode (the looping clients; for a scenario without loops, the clients that can crash) in 5 or
more of them on average.

Speed: a 300-client repetition is ~450 pings, ~15 ms; a 30,000-client one 0.1-0.15 s of outcomes
(1,000 repetitions of all scenarios and populations: ~10 minutes on 2 workers).
`--workers` spreads blocks of repetitions over processes without changing any figure.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass
from datetime import date

import numpy as np

from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import DateAggregator, DateBatch
from crash_rate_aggregates.rates import (
    add_stats,
    crash_rate,
    effective_count,
    naive_poisson_interval,
)
from crash_rate_aggregates.rules import merged_by_max

DAY = date(2016, 3, 14)
CRASH = "main_crashes"
MAX_PING_SECONDS = int(rules.MAX_USAGE_HOURS * 3600)  # the rules cap a ping's usage at 25 h
COUNTRIES = ("DE", "FR", "US")
#: Populations up to this go through real ping lines; larger ones as outcomes (see above).
LINES_UP_TO = 300
POPULATIONS = (300, 3_000, 30_000)
#: The goal: coverage within these, where the crash mode has enough clients to be seen.
GOAL = (0.93, 0.97)
GOAL_CLIENTS = 3_000
GOAL_MODE_CLIENTS = 5.0

# Tiny pings with what the rules need: dates, a 14-digit build id, ids, a client, a country.
_MAIN = (
    '{"type":"main","id":"%s","clientId":"%s",'
    '"meta":{"submissionDate":"20160314","docType":"main","normalizedChannel":"release",'
    '"appName":"Firefox","geoCountry":"%s"},'
    '"environment":{"build":{"version":"45.0","buildId":"20160301030215"}},'
    '"payload":{"info":{"subsessionStartDate":"2016-03-13T00:00:00.0+01:00",'
    '"subsessionLength":%d}}}'
)
_CRASH = (
    '{"type":"crash","id":"%s","clientId":"%s",'
    '"meta":{"submissionDate":"20160314","docType":"crash","normalizedChannel":"release",'
    '"appName":"Firefox","geoCountry":"%s"},'
    '"environment":{"build":{"version":"45.0","buildId":"20160301030215"}},'
    '"payload":{"crashDate":"2016-03-13"}}'
)


@dataclass(frozen=True)
class Scenario:
    """A generating model of clients' usage and crashes."""

    name: str
    base_rate: float  # crashes per usage hour of a client with multiplier 1 and no loop
    dispersion_shape: float | None  # gamma shape of the rate multiplier (mean 1); None: all 1
    loop_share: float  # share of all clients in a crash loop (all of them can crash)
    loop_factor: tuple[float, float] = (20.0, 50.0)  # "factor": rate x U(low, high)
    mean_hours: float = 6.0  # a client's mean usage hours
    hours_shape: float = 0.8  # gamma shape of usage hours (smaller: more unequal)
    zero_share: float = 0.0  # share of clients that never crash
    loop_kind: str = "factor"  # "factor", "uniform" (extra crashes), "pareto" (extra crashes)
    loop_extra: tuple[int, int] = (20, 200)  # "uniform": extra crashes, both ends included
    pareto: tuple[float, float] = (20.0, 1.5)  # "pareto": minimum and shape of the mean

    @property
    def mean_extra(self) -> float:
        """E[a looping client's extra crashes] ("uniform", "pareto"; 0 for "factor")."""
        if self.loop_kind == "uniform":
            return sum(self.loop_extra) / 2
        if self.loop_kind == "pareto":
            low, shape = self.pareto
            return low * shape / (shape - 1)
        return 0.0

    @property
    def true_rate(self) -> float:
        """E[total crashes] / E[total hours] per hour. Hours and rates are independent and the
        multiplier has mean 1; extra crashes do not depend on hours."""
        capable = 1 - self.zero_share
        if self.loop_kind == "factor":
            mean_loop = sum(self.loop_factor) / 2
            return self.base_rate * (capable - self.loop_share + self.loop_share * mean_loop)
        return self.base_rate * capable + self.loop_share * self.mean_extra / self.mean_hours

    def mode_clients(self, clients: int) -> float:
        """The expected number of clients in the crash mode: the looping ones, or without
        loops, those that can crash."""
        share = self.loop_share if self.loop_share > 0 else 1 - self.zero_share
        return share * clients


#: Expected crashes are for 300 clients (1,800 usage hours).
SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        # ~145 crashes, clients' rates vary (gamma, shape 1).
        Scenario("overdispersed", base_rate=0.08, dispersion_shape=1.0, loop_share=0.0),
        # ~7 crashes, half of them from crash loops.
        Scenario("small_count_loops", base_rate=0.002, dispersion_shape=0.5, loop_share=0.03),
        # ~145 crashes, half of them from ~9 looping clients: no interval from the stats reaches
        # 95% with 300 clients (docs/rates.md, "When the interval is too narrow").
        Scenario("large_count_loops", base_rate=0.04, dispersion_shape=0.5, loop_share=0.03),
        # ~145 crashes, every client at the same rate: Poisson, where naive intervals are right.
        Scenario("poisson", base_rate=0.08, dispersion_shape=None, loop_share=0.0),
        # Rare, heavy loops (issue 16): 2 clients in 1,000 (6 of 3,000) add 20-200 crashes
        # each, ~80% of all crashes.
        Scenario("uniform_loops", base_rate=0.01, dispersion_shape=0.5, loop_share=0.002,
                 loop_kind="uniform"),
        # The same share with Pareto loop sizes (mean 60, a few huge ones): ~67% of crashes.
        Scenario("pareto_loops", base_rate=0.01, dispersion_shape=0.5, loop_share=0.002,
                 loop_kind="pareto"),
        # 95% of clients never crash; the others crash often, and 2 in 1,000 loop (uniform).
        Scenario("zero_inflated_95", base_rate=0.2, dispersion_shape=0.5, loop_share=0.002,
                 zero_share=0.95, loop_kind="uniform"),
        # 99% never crash: the crashing 1% (30 of 3,000) and the loops bring everything.
        Scenario("zero_inflated_99", base_rate=1.0, dispersion_shape=0.5, loop_share=0.002,
                 zero_share=0.99, loop_kind="uniform"),
    )
}


@dataclass
class Tally:
    """What repetitions of one scenario gave."""

    repetitions: int = 0
    product_covers: int = 0
    former_covers: int = 0  # the interval without client_<crash>_max (w = d)
    naive_covers: int = 0
    product_width: float = 0.0  # (upper - lower) / true rate, summed over repetitions
    former_width: float = 0.0
    effective_count: float = 0.0  # C/d, summed over repetitions
    crashes: float = 0.0
    loopers: float = 0.0  # clients in a crash loop, summed over repetitions
    seconds: float = 0.0  # of computing, summed over workers

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def draw_clients(
    scenario: Scenario, rng: np.random.Generator, clients: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each client's usage in whole seconds and number of crashes, and how many loop. (The
    draws of the first four scenarios are those of earlier releases: same figures.)"""
    hours = rng.gamma(scenario.hours_shape, scenario.mean_hours / scenario.hours_shape, clients)
    seconds = np.rint(hours * 3600).astype(np.int64)
    rate = np.full(clients, scenario.base_rate)
    if scenario.dispersion_shape is not None:
        shape = scenario.dispersion_shape
        rate *= rng.gamma(shape, 1 / shape, clients)
    draw = rng.random(clients)
    looping = draw < scenario.loop_share
    if scenario.zero_share:
        rate[draw >= 1 - scenario.zero_share] = 0.0  # never crash; loopers all can
    loopers = int(looping.sum())
    if scenario.loop_kind == "factor":
        rate[looping] *= rng.uniform(*scenario.loop_factor, loopers)
    crashes = rng.poisson(rate * seconds / 3600)
    if scenario.loop_kind == "uniform":
        low, high = scenario.loop_extra
        crashes[looping] += rng.integers(low, high + 1, loopers)
    elif scenario.loop_kind == "pareto":
        low, shape = scenario.pareto
        crashes[looping] += rng.poisson(low * (1 + rng.pareto(shape, loopers)))
    return seconds, crashes, loopers


def ping_lines(
    seconds: np.ndarray, crashes: np.ndarray, rng: np.random.Generator
) -> list[bytes]:
    """The clients as ping lines: usage split into main pings of at most 25 hours, one crash
    ping per crash; each client in one of a few countries, so there are several rows to add."""
    lines: list[bytes] = []
    countries = rng.integers(0, len(COUNTRIES), seconds.size)
    for client, (total, count, country_index) in enumerate(
        zip(seconds.tolist(), crashes.tolist(), countries.tolist(), strict=True)
    ):
        client_id = f"client-{client}"
        country = COUNTRIES[country_index]
        pings = max(1, math.ceil(total / MAX_PING_SECONDS))
        for ping in range(pings):
            length = min(MAX_PING_SECONDS, total - ping * MAX_PING_SECONDS)
            lines.append((_MAIN % (f"m-{client}-{ping}", client_id, country, length)).encode())
        for crash in range(count):
            lines.append((_CRASH % (f"c-{client}-{crash}", client_id, country)).encode())
    return lines


def aggregate(lines: list[bytes]) -> dict[str, float]:
    """The lines through the real pipeline, its rows added up."""
    batch = DateBatch()
    wanted = {DAY}
    for line in lines:
        outcome = rules.evaluate_line(line, None, wanted)
        assert outcome is not None
        batch.add(outcome)
    aggregator = DateAggregator()
    aggregator.add(batch.freeze())
    rows = aggregator.finish()
    processed = aggregator.counters[rules.MAIN_PROCESSED] + aggregator.counters[
        rules.CRASH_PROCESSED]
    assert processed == len(lines), f"pings were dropped: {dict(aggregator.counters)}"
    return add_stats(row.stats for row in rows)


def aggregate_outcomes(seconds: np.ndarray, crashes: np.ndarray,
                       rng: np.random.Generator) -> dict[str, float]:
    """The clients as one outcome each (usage and crashes) through `DateBatch` and the
    aggregator, in a few countries, their rows added up: for populations too large for lines."""
    batch = DateBatch()
    dims = ["release" if d.name == "channel" else "x" for d in rules.DIMENSIONS]
    keys = [(DAY.toordinal(), *dims[:-1], country) for country in COUNTRIES]
    countries = rng.integers(0, len(COUNTRIES), seconds.size)
    zeros = (0,) * (len(rules.MEASURES) - 3)
    for client, (total, count, country) in enumerate(
        zip(seconds.tolist(), crashes.tolist(), countries.tolist(), strict=True)
    ):
        batch.add(rules.Outcome(rules.MAIN_PROCESSED, DAY, None, keys[country],
                                f"client-{client}", (1, total, count, *zeros)))
    aggregator = DateAggregator(dedupe=False)
    aggregator.add(batch.freeze())
    return add_stats(row.stats for row in aggregator.finish())


def former(stats: dict[str, float]) -> dict[str, float]:
    """The stats without client_<crash>_max, as an earlier release stored them (w = d)."""
    return {name: value for name, value in stats.items() if not merged_by_max(name)}


def run_scenario(
    scenario: Scenario, repetitions: int, rng: np.random.Generator, clients: int
) -> Tally:
    true_rate = scenario.true_rate * 1000  # per 1,000 hours, as the intervals are
    tally = Tally()
    start = time.perf_counter()
    for _ in range(repetitions):
        seconds, crashes, loopers = draw_clients(scenario, rng, clients)
        if clients <= LINES_UP_TO:
            stats = aggregate(ping_lines(seconds, crashes, rng))
        else:
            stats = aggregate_outcomes(seconds, crashes, rng)
        if stats[CRASH] != crashes.sum() or not math.isclose(
            stats["usage_hours"], seconds.sum() / 3600, rel_tol=1e-9
        ) or stats[f"client_{CRASH}_max"] != crashes.max():
            raise RuntimeError("the pipeline's sums differ from the simulated clients'")
        rate, old = crash_rate(stats, CRASH), crash_rate(former(stats), CRASH)
        naive_low, naive_high = naive_poisson_interval(stats, CRASH)
        assert rate.lower is not None and rate.upper is not None  # usage is never 0 here
        assert old.lower is not None and old.upper is not None
        tally.repetitions += 1
        tally.product_covers += rate.lower <= true_rate <= rate.upper
        tally.former_covers += old.lower <= true_rate <= old.upper
        tally.naive_covers += naive_low <= true_rate <= naive_high
        tally.product_width += (rate.upper - rate.lower) / true_rate
        tally.former_width += (old.upper - old.lower) / true_rate
        tally.effective_count += effective_count(stats, CRASH)
        tally.crashes += stats[CRASH]
        tally.loopers += loopers
    tally.seconds = time.perf_counter() - start
    return tally


#: Repetitions are run in blocks, each from its own random stream: blocks can go to several
#: processes and the figures stay the same whatever the number of processes.
BLOCK = 50

Job = tuple[str, int, np.random.SeedSequence, int]


def _run_job(job: Job) -> tuple[str, Tally]:
    name, repetitions, stream, clients = job
    rng = np.random.default_rng(stream)
    return name, run_scenario(SCENARIOS[name], repetitions, rng, clients)


def run(
    repetitions: int,
    seed: int,
    clients: int = 300,
    scenarios: Iterable[str] | None = None,
    workers: int = 1,
) -> dict[str, Tally]:
    """`repetitions` of each scenario (all by default). A scenario's figures depend only on
    the seed and the repetitions: not on which other scenarios run, nor on `workers`."""
    names = list(SCENARIOS) if scenarios is None else list(scenarios)
    # 300 clients keep the streams of earlier releases; other populations have their own.
    entropy = seed if clients == LINES_UP_TO else [seed, clients]
    scenario_streams = np.random.SeedSequence(entropy).spawn(len(SCENARIOS))
    jobs: list[Job] = []
    for name in names:
        blocks = scenario_streams[list(SCENARIOS).index(name)].spawn(-(-repetitions // BLOCK))
        for index, stream in enumerate(blocks):
            size = min(BLOCK, repetitions - index * BLOCK)
            jobs.append((name, size, stream, clients))
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process that runs threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            results = list(pool.map(_run_job, jobs))
    else:
        results = [_run_job(job) for job in jobs]
    tallies = dict.fromkeys(names, Tally())
    for name, tally in results:
        tallies[name] += tally
    return tallies


def simulate(
    repetitions: int,
    seed: int,
    clients: int = 300,
    scenarios: Iterable[str] | None = None,
    workers: int = 1,
) -> dict[str, float]:
    """Coverage of 95% intervals per scenario: keys "<scenario>/product" (`crash_rate`),
    "<scenario>/former" (the same without client_<crash>_max: w = d) and "<scenario>/naive"
    (`naive_poisson_interval`)."""
    coverage: dict[str, float] = {}
    for name, tally in run(repetitions, seed, clients, scenarios, workers).items():
        coverage[f"{name}/product"] = tally.product_covers / tally.repetitions
        coverage[f"{name}/former"] = tally.former_covers / tally.repetitions
        coverage[f"{name}/naive"] = tally.naive_covers / tally.repetitions
    return coverage


def in_goal(scenario: Scenario, clients: int) -> bool:
    """Whether the goal holds this scenario and population to 93%-97%."""
    return clients >= GOAL_CLIENTS and scenario.mode_clients(clients) >= GOAL_MODE_CLIENTS


def print_table(clients: int, tallies: dict[str, Tally]) -> list[tuple[str, int, float]]:
    """One population's figures; returns the (scenario, clients, coverage) the goal holds."""
    print(f"\n{clients:,} clients")
    header = (f"{'scenario':<18} {'mode':>7} {'crashes':>9} {'effective':>9} {'product':>8} "
              f"{'former':>7} {'naive':>6} {'width':>6} {'former':>7} {'seconds':>7}")
    print(header)
    print("-" * len(header))
    held: list[tuple[str, int, float]] = []
    for name, t in tallies.items():
        n = t.repetitions
        mode = SCENARIOS[name].mode_clients(clients)
        product = t.product_covers / n
        mark = "*" if in_goal(SCENARIOS[name], clients) else " "
        if mark == "*":
            held.append((name, clients, product))
        print(f"{name:<18} {mode:>7.1f} {t.crashes / n:>9.1f} {t.effective_count / n:>9.1f} "
              f"{product:>7.1%}{mark} {t.former_covers / n:>7.1%} {t.naive_covers / n:>6.1%} "
              f"{t.product_width / n:>6.2f} {t.former_width / n:>7.2f} {t.seconds:>7.1f}")
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=1000, help="per scenario")
    parser.add_argument("--seed", type=int, default=20160314)
    parser.add_argument("--clients", type=int, action="append",
                        help="per repetition (repeatable); default: 300, 3,000 and 30,000")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes (scenarios run in parallel); default: one a CPU")
    args = parser.parse_args()
    populations = args.clients or list(POPULATIONS)
    started = time.perf_counter()
    se = math.sqrt(0.95 * 0.05 / args.repetitions)
    print(f"{args.repetitions} repetitions a scenario, seed {args.seed}; coverage of 95% "
          f"intervals (Monte Carlo standard error at 95%: {se:.1%})")
    print("mode: expected clients in the crash mode (looping, else able to crash); product: "
          "rates.crash_rate; former: the same with w = d (no client_<crash>_max); naive: "
          "rates.naive_poisson_interval; width: mean (upper - lower) / true rate; "
          "*: held to the goal")
    held: list[tuple[str, int, float]] = []
    for clients in populations:
        tallies = run(args.repetitions, args.seed, clients, args.scenario, args.workers)
        held += print_table(clients, tallies)
    low, high = GOAL
    missed = [(name, clients, c) for name, clients, c in held if not low <= c <= high]
    verdict = "met" if held and not missed else "NOT met"
    print(f"\ngoal ({low:.0%}-{high:.0%} in every scenario with >= {GOAL_CLIENTS:,} clients and "
          f"the crash mode in >= {GOAL_MODE_CLIENTS:g} of them): {verdict}, "
          f"{len(held) - len(missed)} of {len(held)}"
          + "".join(f"; missed: {name} at {clients:,} clients, {c:.1%}"
                    for name, clients, c in missed))
    print(f"{time.perf_counter() - started:.1f} s in all, {args.workers} worker(s)")


if __name__ == "__main__":
    main()
