"""Do the product's 95% crash-rate intervals cover the true rate 95% of the time?

benchmarks/coverage.py simulates clients with a known true rate, sends their pings through the
real pipeline (rules, dedupe, aggregation), and counts how often `rates.crash_rate` and a naive
Poisson interval contain the true rate. The seed is fixed: the figures are deterministic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
# benchmarks/coverage.py, the script (not coverage.py the tool, which is not a dependency).
from coverage import SCENARIOS, draw_clients, in_goal, simulate  # noqa: E402

SEED = 20160314
REPETITIONS = 600  # a scenario
WORKERS = min(2, os.cpu_count() or 1)

# The band, 93%-97%, at a fixed seed, so the test is deterministic. A coverage estimate
# from 600 repetitions is off by about sqrt(0.95 * 0.05 / 600) = 0.9%. With 20,000 repetitions
# (docs/rates.md) the coverage is 95.1%, 93.9% and 95.9% in the three scenarios below, so another
# seed can fall just outside the band: that is the method's margin, not noise to hide.
LOW, HIGH = 0.93, 0.97

CALIBRATED = ("overdispersed", "small_count_loops", "poisson")
OVERDISPERSED = ("overdispersed", "small_count_loops")


@pytest.fixture(scope="module")
def coverage() -> dict[str, float]:
    return simulate(REPETITIONS, SEED, scenarios=CALIBRATED, workers=WORKERS)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", OVERDISPERSED)
def test_product_intervals_cover_about_95_percent(coverage: dict[str, float],
                                                  scenario: str) -> None:
    assert LOW <= coverage[f"{scenario}/product"] <= HIGH, coverage


@pytest.mark.slow
def test_product_intervals_of_poisson_clients(coverage: dict[str, float]) -> None:
    # Weighing the largest client costs over-coverage where nobody loops: among 300 Poisson
    # clients the busiest one's few crashes outweigh d ~ 1, and the product covers 97.7%
    # (1,000 repetitions; 97.8% at this seed), the former interval 96.7%. Never too narrow:
    assert LOW <= coverage["poisson/former"] <= coverage["poisson/product"] <= 0.99, coverage
    # At 3,000 clients, where the goal holds scenarios to the band, it is in it (96.1%).
    result = simulate(REPETITIONS, SEED, clients=3_000, scenarios=["poisson"], workers=WORKERS)
    assert LOW <= result["poisson/product"] <= HIGH, result


@pytest.mark.slow
@pytest.mark.parametrize("scenario", OVERDISPERSED)
def test_naive_poisson_intervals_are_too_narrow_when_clients_differ(
    coverage: dict[str, float], scenario: str
) -> None:
    assert coverage[f"{scenario}/naive"] < 0.90, coverage
    assert coverage[f"{scenario}/product"] > coverage[f"{scenario}/naive"] + 0.05


@pytest.mark.slow
def test_naive_poisson_intervals_are_right_for_poisson_clients(
    coverage: dict[str, float]
) -> None:
    # The control: it checks the simulation itself (the true rate, the pipeline's sums).
    assert LOW <= coverage["poisson/naive"] <= HIGH, coverage


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known limitation, docs/rates.md: with ~9 crash-looping clients among 300 bringing half the"
    " crashes, no interval built from the stats reaches 95% (68-78%; weighing the largest"
    " client, 83.0% in 1,000 repetitions)"))
def test_product_intervals_with_few_clients_in_crash_loops() -> None:
    result = simulate(100, SEED, scenarios=["large_count_loops"])
    assert LOW <= result["large_count_loops/product"] <= HIGH, result


def test_scenarios_are_known() -> None:
    assert set(CALIBRATED) | {"large_count_loops"} <= set(SCENARIOS)
    assert set(HEAVY) <= set(SCENARIOS)


# -- rare, heavy crash loops (issue 16): the largest client's count -----------------------------

HEAVY = ("uniform_loops", "pareto_loops", "zero_inflated_95", "zero_inflated_99")


def test_true_rates_of_the_heavy_scenarios_by_hand() -> None:
    # base x (share able to crash) + loop share x mean extra crashes / mean hours (6 h):
    # uniform 20-200: mean 110; Pareto of minimum 20 and shape 1.5: mean 20 x 1.5 / 0.5 = 60.
    expected = {"uniform_loops": 0.01 + 0.002 * 110 / 6, "pareto_loops": 0.01 + 0.002 * 60 / 6,
                "zero_inflated_95": 0.2 * 0.05 + 0.002 * 110 / 6,
                "zero_inflated_99": 1.0 * 0.01 + 0.002 * 110 / 6}
    for name, rate in expected.items():
        assert SCENARIOS[name].true_rate == pytest.approx(rate, rel=1e-12), name
    # The goal holds 3,000 clients with 2 in 1,000 looping (6 on average), not 300 (0.6).
    assert in_goal(SCENARIOS["uniform_loops"], 3_000)
    assert not in_goal(SCENARIOS["uniform_loops"], 300)


def test_the_model_draws_what_its_true_rate_says() -> None:
    # Two million clients of the zero-inflated scenario (4,000 loopers): the drawn rate is
    # within 0.5% of the analytic one, and only loopers or the 5% able to crash have crashes.
    seconds, crashes, loopers = draw_clients(SCENARIOS["zero_inflated_95"],
                                             np.random.default_rng(1), 2_000_000)
    assert crashes.sum() / (seconds.sum() / 3600) == pytest.approx(
        SCENARIOS["zero_inflated_95"].true_rate, rel=5e-3)
    assert 3_800 < loopers < 4_200  # 2,000,000 x 0.002 = 4,000, sd 63
    assert (crashes > 0).mean() < 0.05 + 0.002


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["uniform_loops", "zero_inflated_95"])
def test_heavy_loops_among_3000_clients_are_covered(scenario: str) -> None:
    # 6 looping clients of 3,000 on average bring ~80% of the crashes: the interval weighing
    # the largest client covers within the band, at a fixed seed (see docs/rates.md for the
    # figures of every scenario, the former interval's among them).
    result = simulate(REPETITIONS, SEED, clients=3_000, scenarios=[scenario], workers=WORKERS)
    assert LOW <= result[f"{scenario}/product"] <= HIGH, result
    assert result[f"{scenario}/product"] >= result[f"{scenario}/former"], result
