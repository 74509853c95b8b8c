"""Do the product's 95% crash-rate intervals cover the true rate 95% of the time?

benchmarks/coverage.py simulates clients with a known true rate, sends their pings through the
real pipeline (rules, dedupe, aggregation), and counts how often `rates.crash_rate` and a naive
Poisson interval contain the true rate. The seed is fixed: the figures are deterministic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
# benchmarks/coverage.py, the script (not coverage.py the tool, which is not a dependency).
from coverage import SCENARIOS, simulate  # noqa: E402

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
@pytest.mark.parametrize("scenario", CALIBRATED)
def test_product_intervals_cover_about_95_percent(coverage: dict[str, float],
                                                  scenario: str) -> None:
    assert LOW <= coverage[f"{scenario}/product"] <= HIGH, coverage


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
    " crashes, no interval built from the stats' second moments reaches 95% (68-78%)"))
def test_product_intervals_with_few_clients_in_crash_loops() -> None:
    result = simulate(100, SEED, scenarios=["large_count_loops"])
    assert LOW <= result["large_count_loops/product"] <= HIGH, result


def test_scenarios_are_known() -> None:
    assert set(CALIBRATED) | {"large_count_loops"} <= set(SCENARIOS)
