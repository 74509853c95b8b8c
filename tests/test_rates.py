"""Crash rates, intervals and comparisons, against values computed independently of rates.py:
published tables, sums done by hand, closed forms, and a differently written sandwich."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import gammainc  # type: ignore[import-untyped]
from scipy.stats import gamma  # type: ignore[import-untyped]

from conftest import crash_ping, main_ping, to_bytes
from crash_rate_aggregates import rules
from crash_rate_aggregates.aggregation import DateAggregator, DateBatch
from crash_rate_aggregates.rates import (
    NO_CHANGE_FEW_CLIENTS,
    Z95,
    Comparison,
    Rate,
    add_stats,
    compare,
    crash_rate,
    crashing_clients,
    exact_poisson_limits,
    fay_feuer_upper,
    naive_poisson_interval,
    robust_variance,
)

CRASH = "main_crashes"


def client_stats(clients: list[tuple[float, float]], crash: str = CRASH) -> dict[str, float]:
    """The stats of one aggregate whose clients had these (crashes, usage hours)."""
    return add_stats([{
        crash: sum(c for c, _ in clients),
        "usage_hours": sum(h for _, h in clients),
        "client_count": len(clients),
        f"client_{crash}_squared": sum(c * c for c, _ in clients),
        f"client_{crash}_usage_hours": sum(c * h for c, h in clients),
        "client_usage_hours_squared": sum(h * h for _, h in clients),
    }])


def poisson_stats(crashes: float, hours: float) -> dict[str, float]:
    """One client: the sandwich is 0, so the design effect is 1 and the intervals are the plain
    Poisson ones, which published tables give."""
    return client_stats([(crashes, hours)])


# -- add_stats --------------------------------------------------------------------------------


def test_add_stats_sums_key_by_key_and_fills_all_35() -> None:
    total = add_stats([{"usage_hours": 2.5, "main_crashes": 1}, {"usage_hours": 1.5}])
    assert set(total) == set(rules.STATS) and len(total) == 35
    assert total["usage_hours"] == 4.0 and total["main_crashes"] == 1.0
    assert total["client_gpu_crashes_usage_hours"] == 0.0
    assert add_stats([]) == dict.fromkeys(rules.STATS, 0.0)


def test_add_stats_takes_the_largest_client_by_max() -> None:
    # client_<crash>_max is the largest client's count: of two aggregates, the larger one.
    total = add_stats([{CRASH: 7, f"client_{CRASH}_max": 5}, {CRASH: 4, f"client_{CRASH}_max": 3},
                       {CRASH: 1}])
    assert total[CRASH] == 12.0 and total[f"client_{CRASH}_max"] == 5.0


# -- exact Poisson limits: Garwood's table ----------------------------------------------------

# 95% limits of a Poisson mean, as printed in e.g. Sahai & Khurshid (1993), table 1.
GARWOOD_95 = [
    (0, 0.0, 3.689),
    (1, 0.0253, 5.572),
    (2, 0.2422, 7.225),
    (5, 1.624, 11.67),
    (10, 4.795, 18.39),
]


@pytest.mark.parametrize(("count", "lower", "upper"), GARWOOD_95)
def test_exact_poisson_limits_match_published_table(count: int, lower: float,
                                                    upper: float) -> None:
    low, high = exact_poisson_limits(count)
    assert low == pytest.approx(lower, rel=1e-3, abs=1e-9)
    assert high == pytest.approx(upper, rel=1e-3)


def test_exact_poisson_limits_of_a_fractional_count_lie_between_its_neighbours() -> None:
    low, high = exact_poisson_limits(1.5)
    assert 0.0253 < low < 0.2422 and 5.572 < high < 7.225


def test_exact_poisson_limits_at_90_percent() -> None:
    # Count 0 at 90%: the upper limit solves exp(-m) = 0.05.
    low, high = exact_poisson_limits(0, 0.90)
    assert low == 0.0 and high == pytest.approx(-math.log(0.05))


def test_naive_poisson_interval_is_the_table_over_the_hours() -> None:
    stats = client_stats([(5, 100.0), (0, 400.0)])  # clustered, but naive ignores it
    low, high = naive_poisson_interval(stats, CRASH)
    assert low == pytest.approx(1.624 / 500 * 1000, rel=1e-3)
    assert high == pytest.approx(11.67 / 500 * 1000, rel=1e-3)


# -- the cluster-robust variance --------------------------------------------------------------


def test_robust_variance_by_hand() -> None:
    # Clients (crashes c, hours h): a (3, 2), b (0, 4), c (1, 4).
    # C = 4, H = 10, r = 0.4; sum c^2 = 9 + 0 + 1 = 10, sum c h = 6 + 0 + 4 = 10,
    # sum h^2 = 4 + 16 + 16 = 36. Residuals c - r h: 2.2, -1.6, -0.6, squares 4.84 + 2.56 +
    # 0.36 = 7.76 = 10 - 2 * 0.4 * 10 + 0.16 * 36. Var = 3/2 * 7.76 / 10^2 = 0.1164.
    stats = {"main_crashes": 4.0, "usage_hours": 10.0, "client_count": 3.0,
             "client_main_crashes_squared": 10.0, "client_main_crashes_usage_hours": 10.0,
             "client_usage_hours_squared": 36.0}
    assert robust_variance(stats, CRASH) == pytest.approx(0.1164, rel=1e-12)


def test_robust_variance_by_hand_through_the_pipeline() -> None:
    # The same three clients as pings: a's 2 hours in two main pings and 3 crash pings, b one
    # main ping of 4 hours, c one main ping of 4 hours and one crash ping.
    pings = [
        main_ping("a1", "a", length=3600), main_ping("a2", "a", length=3600),
        *(crash_ping(f"ax{i}", "a") for i in range(3)),
        main_ping("b1", "b", length=4 * 3600),
        main_ping("c1", "c", length=4 * 3600), crash_ping("cx", "c"),
    ]
    batch = DateBatch()
    for ping in pings:
        outcome = rules.evaluate_line(to_bytes(ping), date(2016, 3, 14))
        assert outcome is not None
        batch.add(outcome)
    aggregator = DateAggregator()
    aggregator.add(batch.freeze())
    stats = add_stats(row.stats for row in aggregator.finish())
    assert robust_variance(stats, CRASH) == pytest.approx(0.1164, rel=1e-12)


def test_robust_variance_matches_the_delta_method_on_per_client_lists() -> None:
    # Written independently: the delta method for r = mean(c) / mean(h), with the sample
    # covariance matrix of (c_i, h_i) (numpy, ddof=1); equal to the sandwich with n/(n-1).
    rng = np.random.default_rng(7)
    for clients in (2, 5, 40, 1000):
        hours = rng.gamma(0.8, 7.5, clients)
        crashes = rng.poisson(0.05 * hours * rng.gamma(0.5, 2.0, clients)).astype(float)
        crashes[0] += 30  # one client in a crash loop
        ratio = crashes.mean() / hours.mean()
        gradient = np.array([1 / hours.mean(), -ratio / hours.mean()])
        expected = gradient @ np.cov(np.vstack((crashes, hours))) @ gradient / clients
        stats = client_stats(list(zip(crashes.tolist(), hours.tolist(), strict=True)))
        assert robust_variance(stats, CRASH) == pytest.approx(float(expected), rel=1e-9)


def test_robust_variance_of_other_crash_measures_and_bad_names() -> None:
    stats = client_stats([(3, 2.0), (0, 4.0), (1, 4.0)], crash="gpu_crashes")
    assert robust_variance(stats, "gpu_crashes") == pytest.approx(0.1164)
    with pytest.raises(ValueError, match="not a crash measure"):
        robust_variance(stats, "usage_hours")
    with pytest.raises(ValueError, match="no usage hours"):
        robust_variance(client_stats([(1, 0.0)]), CRASH)


# -- one rate ---------------------------------------------------------------------------------


def test_small_count_without_clustering_is_the_exact_poisson_table() -> None:
    # Five clients of 100 hours with one crash each: residuals all 0, design effect 1.
    rate = crash_rate(client_stats([(1, 100.0)] * 5), CRASH)
    assert rate.method == "exact" and rate.rate == pytest.approx(10.0)
    assert rate.lower == pytest.approx(1.624 / 500 * 1000, rel=1e-3)
    assert rate.upper == pytest.approx(11.67 / 500 * 1000, rel=1e-3)


def test_small_count_with_clustering_uses_effective_counts() -> None:
    # Five clients of 10 hours, crashes 4, 0, 4, 0, 2: C = 10, H = 50, r h_i = 2, residuals
    # 2, -2, 2, -2, 0: sum of squares 16; Var H^2 = 5/4 * 16 = 20 = 2 C: design effect 2.
    # Effective count 10 / 2 = 5 over 50 / 2 = 25 hours: the table's (1.624, 11.67) / 25.
    rate = crash_rate(client_stats([(4, 10.0), (0, 10.0), (4, 10.0), (0, 10.0), (2, 10.0)]),
                      CRASH)
    assert rate.method == "exact" and rate.rate == pytest.approx(200.0)
    assert rate.lower == pytest.approx(1.624 / 25 * 1000, rel=1e-3)
    assert rate.upper == pytest.approx(11.67 / 25 * 1000, rel=1e-3)
    assert rate.clients == 5 and rate.crashes == 10 and rate.usage_hours == 50


def test_large_count_is_garwood_of_the_effective_count() -> None:
    # Four clients of 10 hours, crashes 10, 2, 6, 6: C = 24, H = 40, r = 0.6, residuals 4, -4,
    # 0, 0: sum of squares 32; Var H^2 = 4/3 * 32 = 128/3 (more than Poisson's 24): design
    # effect d = (128/3) / 24 = 16/9. Effective count 24 / (16/9) = 13.5 over 40 / (16/9) =
    # 22.5 hours. Garwood's limits of a count k are the m that solve P(Gamma(k) <= m) = 2.5%
    # and P(Gamma(k + 1) <= m) = 97.5%: checked here with the regularized incomplete gamma
    # function, not with the chi-square quantiles crash_rate uses.
    rate = crash_rate(client_stats([(10, 10.0), (2, 10.0), (6, 10.0), (6, 10.0)]), CRASH)
    assert rate.method == "exact" and rate.rate == pytest.approx(600.0)
    assert rate.lower is not None and rate.upper is not None
    assert gammainc(13.5, rate.lower * 22.5 / 1000) == pytest.approx(0.025, rel=1e-9)
    assert gammainc(14.5, rate.upper * 22.5 / 1000) == pytest.approx(0.975, rel=1e-9)
    assert (rate.lower, rate.upper) == pytest.approx((7.2867 / 22.5 * 1000,
                                                      22.8611 / 22.5 * 1000), rel=1e-4)


@pytest.mark.parametrize("clients", [
    [(10, 10.0), (2, 10.0), (6, 10.0), (6, 10.0)],
    [(20, 1.0), (0, 99.0)],
    [(4, 10.0), (0, 10.0), (4, 10.0), (0, 10.0), (2, 10.0)],
    [(0, 200.0), (0, 300.0)],
])
def test_interval_is_fay_and_feuers_gamma_interval(clients: list[tuple[float, float]]) -> None:
    # Fay & Feuer (1997) for a total y with variance v and a largest weight w: gamma quantiles,
    # lower of shape y^2/v and scale v/y, upper of shape (y + w)^2/(v + w^2) and scale
    # (v + w^2)/(y + w). Here y = C, v = d C and w = d, computed from the client lists.
    crashes = sum(c for c, _ in clients)
    hours = sum(h for _, h in clients)
    rate = crashes / hours
    residuals = sum((c - rate * h) ** 2 for c, h in clients)
    n = len(clients)
    variance = n / (n - 1) * residuals  # of the total C, before the Poisson floor
    effect = max(1.0, variance / crashes) if crashes else 1.0
    v, w = effect * crashes, effect
    lower = gamma.ppf(0.025, crashes**2 / v, scale=v / crashes) if crashes else 0.0
    upper = gamma.ppf(0.975, (crashes + w) ** 2 / (v + w * w), scale=(v + w * w) / (crashes + w))
    got = crash_rate(client_stats(clients), CRASH)
    assert got.lower == pytest.approx(lower / hours * 1000, rel=1e-9, abs=1e-12)
    assert got.upper == pytest.approx(upper / hours * 1000, rel=1e-9)


# -- the largest client's weight (docs/rates.md, "Heavy crash loops") -------------------------


def heavy_stats() -> dict[str, float]:
    """100 clients of 10 h: one of 20 crashes, ten of one, 89 of none. C = 30, H = 1000,
    sum c^2 = 410, sum c h = 300, sum h^2 = 10,000: residuals 410 - 2 * 0.03 * 300 + 0.03^2 *
    10,000 = 401, Var(C) = 100/99 * 401, d = Var(C) / 30 = 13.50; the largest client has 20."""
    stats = client_stats([(20, 10.0)] + [(1, 10.0)] * 10 + [(0, 10.0)] * 89)
    return {**stats, f"client_{CRASH}_max": 20}


def test_upper_limit_weighs_the_largest_client_by_hand() -> None:
    stats = heavy_stats()
    d = 100 / 99 * 401 / 30
    assert stats[f"client_{CRASH}_squared"] == 410 and d == pytest.approx(13.5017, abs=1e-4)
    # w = max(d, 20) = 20: shape (30 + 20)^2 / (13.50 * 30 + 20^2) = 2500 / 805.05 = 3.105,
    # scale 805.05 / 50 = 16.10; scipy's gamma quantile, over H = 1000 h, per 1,000 h.
    shape, scale = 50**2 / (d * 30 + 400), (d * 30 + 400) / 50
    assert (shape, scale) == (pytest.approx(3.1054, abs=1e-4), pytest.approx(16.1010, abs=1e-4))
    upper = gamma.ppf(0.975, shape, scale=scale)
    assert upper == pytest.approx(119.01, abs=0.01)
    rate = crash_rate(stats, CRASH)
    assert rate.upper == pytest.approx(upper, rel=1e-12)
    # The lower limit is the former one: Garwood's of k = C/d, times d/H.
    assert rate.lower == pytest.approx(d * exact_poisson_limits(30 / d)[0], rel=1e-12)
    # Without the stat (a row of an earlier release), w = d: d times Garwood's upper of 30 / d,
    # 102.27; the heavy client widens the upper limit by 16%.
    former = crash_rate({k: v for k, v in stats.items() if not k.endswith("_max")}, CRASH)
    assert former.upper == pytest.approx(d * exact_poisson_limits(30 / d)[1], rel=1e-9)
    assert former.upper == pytest.approx(102.27, abs=0.01)
    assert former.lower == rate.lower


@pytest.mark.parametrize(("crashes", "effect"), [(0, 1.0), (1, 1.0), (30, 13.5), (7.5, 2.25),
                                                 (400, 1.0)])
def test_with_w_equal_to_d_the_upper_limit_is_d_times_garwoods(crashes: float,
                                                               effect: float) -> None:
    # w = d: shape (C + d)^2 / (d C + d^2) = (C + d) / d = k + 1, scale d (C + d) / (C + d) = d:
    # d times the gamma(k + 1) quantile, which is Garwood's upper limit of k = C/d.
    garwood = exact_poisson_limits(crashes / effect)[1]
    assert fay_feuer_upper(crashes, effect, effect) == pytest.approx(effect * garwood,
                                                                     rel=1e-12)


def test_a_largest_client_below_d_changes_nothing() -> None:
    # Four clients of 10 h, crashes 10, 2, 6, 6: d = 16/9 (test above), largest client 10 > d;
    # with a (made up) largest client of 1 <= d the weight stays d: Garwood's limits.
    stats = client_stats([(10, 10.0), (2, 10.0), (6, 10.0), (6, 10.0)])
    plain = crash_rate(stats, CRASH)
    assert crash_rate({**stats, f"client_{CRASH}_max": 1}, CRASH) == plain
    heavier = crash_rate({**stats, f"client_{CRASH}_max": 10}, CRASH)
    assert heavier.upper is not None and plain.upper is not None
    assert heavier.upper > plain.upper and heavier.lower == plain.lower


def test_large_poisson_count_is_about_the_normal_interval() -> None:
    # 400 crashes from clients at one rate (design effect 1): Garwood's limits are within 0.5%
    # of the score interval's, which solves (400 - m)^2 = z^2 m: m = 400 + z^2/2 +- z
    # sqrt(400 + z^2/4).
    rate = crash_rate(client_stats([(4, 10.0)] * 100), CRASH)
    z = 1.959964
    assert rate.lower == pytest.approx((400 + z * z / 2 - z * math.sqrt(400 + z * z / 4)),
                                       rel=5e-3)
    assert rate.upper == pytest.approx((400 + z * z / 2 + z * math.sqrt(400 + z * z / 4)),
                                       rel=5e-3)


def test_interval_of_a_crash_loop_is_skewed_upward() -> None:
    # All 20 crashes from a client of 1 hour, among 100 hours: residuals 19.8 and -19.8, Var
    # H^2 = 2 * 2 * 19.8^2 = 1568.16, d = 78.408: an effective count of 0.255, whose Garwood
    # upper limit is far above the rate and whose lower limit is almost 0.
    rate = crash_rate(client_stats([(20, 1.0), (0, 99.0)]), CRASH)
    effect = 2 * 2 * 19.8**2 / 20
    low, high = exact_poisson_limits(20 / effect)
    assert rate.lower == pytest.approx(low * effect / 100 * 1000, rel=1e-9)
    assert rate.upper == pytest.approx(high * effect / 100 * 1000, rel=1e-9)
    assert rate.lower is not None and rate.upper is not None
    assert rate.lower < 1.0 and rate.upper > 3 * 200.0


def test_zero_usage_has_no_rate() -> None:
    rate = crash_rate(add_stats([{"main_crashes": 2.0}]), CRASH)
    assert rate == Rate(CRASH, 2.0, 0.0, 0.0, None, None, None, "none", False)
    assert naive_poisson_interval(add_stats([]), CRASH) == (0.0, math.inf)


def test_zero_crashes_give_the_rule_of_three() -> None:
    rate = crash_rate(client_stats([(0, 200.0), (0, 300.0)]), CRASH)
    assert rate.method == "exact" and rate.rate == 0.0 and rate.lower == 0.0
    assert rate.upper == pytest.approx(3.689 / 500 * 1000, rel=1e-3)
    assert rate.enough_usage


def test_one_client_is_never_narrower_than_poisson() -> None:
    # One client: the sandwich is 0 (nothing to compare the client with); the interval falls
    # back to Poisson's variance C / H^2 instead of collapsing to a point.
    stats = poisson_stats(30, 1000.0)
    assert robust_variance(stats, CRASH) == 0.0
    rate = crash_rate(stats, CRASH)
    assert rate.method == "exact"
    # Garwood's 95% limits of 30: 20.2409 and 42.8269 (Sahai & Khurshid, table 1).
    assert rate.lower == pytest.approx(20.2409, rel=1e-4)
    assert rate.upper == pytest.approx(42.8269, rel=1e-4)


def test_options_of_crash_rate() -> None:
    stats = client_stats([(1, 100.0)] * 5)
    assert not crash_rate(stats, CRASH, min_usage_hours=501).enough_usage
    assert crash_rate(stats, CRASH, min_usage_hours=500).enough_usage
    per_hour = crash_rate(stats, CRASH, per=1.0)
    assert per_hour.rate == pytest.approx(0.01)
    wider = crash_rate(stats, CRASH, confidence=0.99)
    assert wider.lower is not None and wider.upper is not None
    assert wider.lower < 1.624 / 500 * 1000 and wider.upper > 11.67 / 500 * 1000
    assert Z95 == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        crash_rate(stats, CRASH, confidence=95)


# -- comparisons ------------------------------------------------------------------------------


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_compare_textbook_conditional_binomial() -> None:
    # 10 crashes in 1000 h against 2 in 1000 h: given 12 crashes, the candidate's share is
    # binomial(12, 1/2) when the rates are equal. Two-sided p: P(X >= 10) + P(X <= 2) =
    # 2 * (1 + 12 + 66) / 4096 = 158 / 4096.
    result = compare(poisson_stats(10, 1000.0), poisson_stats(2, 1000.0), CRASH)
    assert result.ratio == pytest.approx(5.0)
    assert result.p_value == pytest.approx(158 / 4096, rel=1e-9)
    assert result.p_value == pytest.approx(0.03857, abs=1e-5)
    assert result.verdict == "regression"
    # Clopper-Pearson: the share interval's ends p solve P(X >= 10 | p) = 2.5% and
    # P(X <= 10 | p) = 2.5%; with equal hours the ratio is p / (1 - p).
    assert result.lower is not None and result.upper is not None
    low_share, high_share = result.lower / (1 + result.lower), result.upper / (1 + result.upper)
    assert binomial_tail(10, 12, low_share) == pytest.approx(0.025, rel=1e-6)
    assert 1 - binomial_tail(11, 12, high_share) == pytest.approx(0.025, rel=1e-6)
    assert 1 < result.lower < 5 < result.upper


def test_compare_exact_case_with_unequal_hours() -> None:
    # 0 crashes in 2000 h against 10 in 1000 h: k = 0 of 10, expected share 2/3. The central
    # two-sided p doubles the smaller tail: 2 P(X <= 0) = 2 (1/3)^10.
    # The share's upper end solves (1 - p)^10 = 2.5%; the ratio is p / (1 - p) * 1000 / 2000.
    result = compare(poisson_stats(0, 2000.0), poisson_stats(10, 1000.0), CRASH)
    assert result.ratio == 0.0 and result.lower == 0.0
    share = 1 - 0.025 ** (1 / 10)
    assert result.upper == pytest.approx(share / (1 - share) / 2, rel=1e-6)
    assert result.p_value == pytest.approx(2 * (1 / 3) ** 10, rel=1e-6)
    assert result.verdict == "improvement"


def test_compare_exact_case_uses_design_effects() -> None:
    # The candidate's 10 crashes come with design effect 2 (see the effective-count test
    # above, scaled to 100 hours a client): effective 5 crashes in 250 h, against the
    # baseline's 2 in 500 h. Share of 7 crashes expected under equal rates: 250/750 = 1/3.
    candidate = client_stats([(4, 100.0), (0, 100.0), (4, 100.0), (0, 100.0), (2, 100.0)])
    result = compare(candidate, poisson_stats(2, 500.0), CRASH, min_usage_hours=500)
    assert result.ratio == pytest.approx((10 / 500) / (2 / 500))
    # 5 of 7 is above the expected 7/3: p = 2 P(X >= 5) = 2 (21 * 4 + 7 * 2 + 1) / 3^7.
    two_sided = 2 * binomial_tail(5, 7, 1 / 3)
    assert two_sided == pytest.approx(2 * 99 / 3**7, rel=1e-12)
    assert result.p_value == pytest.approx(two_sided, rel=1e-9)
    # 10^2 / 36 = 2.8 clients' worth of crashes against the baseline's one client: few
    assert result.verdict == NO_CHANGE_FEW_CLIENTS
    assert result.lower is not None and result.lower < 1


def test_compare_chooses_the_exact_test_by_effective_counts() -> None:
    # Candidate: five clients of 100 h, crashes 16, 0, 16, 0, 8: C = 40, H = 500, r h_i = 8,
    # residuals 8, -8, 8, -8, 0, sum of squares 256; Var H^2 = 5/4 * 256 = 320 = 8 C: d = 8.
    # 40 crashes but only 5 effective ones (in 62.5 effective hours): the exact test, not the
    # log ratio. Baseline: 20 crashes in 1000 h, d = 1. Given 25 effective crashes, the
    # candidate's share is binomial(25, 62.5 / 1062.5) under equal rates.
    candidate = client_stats([(16, 100.0), (0, 100.0), (16, 100.0), (0, 100.0), (8, 100.0)])
    result = compare(candidate, poisson_stats(20, 1000.0), CRASH, min_usage_hours=500)
    share = 62.5 / 1062.5
    two_sided = 2 * binomial_tail(5, 25, share)  # 5 is above the expected 25 * share = 1.47
    assert result.ratio == pytest.approx(4.0)
    assert result.p_value == pytest.approx(two_sided, rel=1e-9)
    assert result.verdict == "regression" and result.p_value < 0.05


def test_compare_wald_log_ratio_by_hand() -> None:
    # Candidate: five clients of 200 h, crashes 16, 8, 16, 8, 12: C = 60, H = 1000, r h_i = 12,
    # residuals 4, -4, 4, -4, 0, sum of squares 64; Var H^2 = 5/4 * 64 = 80 = 4/3 C: design
    # effect 4/3. Baseline: one client, 30 crashes in 1000 h: design effect 1.
    # log ratio = ln 2; se^2 = (4/3)/60 + 1/30 = 1/18.
    candidate = client_stats([(16, 200.0), (8, 200.0), (16, 200.0), (8, 200.0), (12, 200.0)])
    result = compare(candidate, poisson_stats(30, 1000.0), CRASH)
    se = math.sqrt(1 / 18)
    assert result.ratio == pytest.approx(2.0)
    assert result.lower == pytest.approx(math.exp(math.log(2) - 1.959964 * se), rel=1e-6)
    assert result.upper == pytest.approx(math.exp(math.log(2) + 1.959964 * se), rel=1e-6)
    assert result.p_value == pytest.approx(math.erfc(math.log(2) / se / math.sqrt(2)), rel=1e-6)
    assert result.verdict == "regression"
    assert result.candidate.method == "exact" and result.baseline.method == "exact"


def test_compare_wald_no_significant_change_and_improvement() -> None:
    # Each side one client (poisson_stats): one crashing client, so "no significant change"
    # warns that it is not a clean bill; the test and its interval are the same.
    same = compare(poisson_stats(50, 1000.0), poisson_stats(45, 1000.0), CRASH)
    assert same.verdict == NO_CHANGE_FEW_CLIENTS
    assert same.lower is not None and same.upper is not None and same.lower < 1 < same.upper
    # ln(58/40) = 0.372, se = sqrt(1/58 + 1/40) = 0.205: the interval starts at 0.97.
    close = compare(poisson_stats(58, 1000.0), poisson_stats(40, 1000.0), CRASH)
    assert close.lower == pytest.approx(0.969, abs=1e-3)
    assert close.verdict == NO_CHANGE_FEW_CLIENTS
    mirrored = compare(poisson_stats(40, 1000.0), poisson_stats(58, 1000.0), CRASH)
    assert mirrored.upper == pytest.approx(1 / 0.969, abs=1e-3)
    assert mirrored.verdict == NO_CHANGE_FEW_CLIENTS
    better = compare(poisson_stats(25, 1000.0), poisson_stats(60, 1000.0), CRASH)
    assert better.verdict == "improvement"
    assert better.upper is not None and better.upper < 1


def test_compare_waits_for_enough_usage() -> None:
    result = compare(poisson_stats(10, 999.0), poisson_stats(2, 5000.0), CRASH)
    assert result.verdict == "not enough usage yet"
    assert (result.ratio, result.lower, result.upper, result.p_value) == (None,) * 4
    assert result.candidate.rate == pytest.approx(10 / 999 * 1000)
    assert not result.candidate.enough_usage and result.baseline.enough_usage
    assert compare(poisson_stats(10, 5000.0), poisson_stats(2, 999.0), CRASH).verdict == (
        "not enough usage yet")
    assert compare(poisson_stats(10, 999.0), poisson_stats(2, 5000.0), CRASH,
                   min_usage_hours=900).verdict == "regression"


def test_compare_without_any_usage_or_crash() -> None:
    nothing = add_stats([])
    result = compare(nothing, nothing, CRASH, min_usage_hours=0)
    assert result.verdict == "not enough usage yet"
    assert result.candidate.method == "none"
    quiet = compare(poisson_stats(0, 1000.0), poisson_stats(0, 1000.0), CRASH)
    assert quiet.ratio is None and quiet.p_value == 1.0
    assert (quiet.lower, quiet.upper) == (0.0, math.inf)
    assert quiet.verdict == NO_CHANGE_FEW_CLIENTS  # no crashing client at all: no clean bill


def test_compare_against_a_baseline_without_crashes() -> None:
    result = compare(poisson_stats(12, 1000.0), poisson_stats(0, 1000.0), CRASH)
    assert result.ratio == math.inf and result.upper == math.inf
    assert result.p_value == pytest.approx(2 * 0.5**12, rel=1e-9)
    assert result.verdict == "regression"


def test_crashing_clients_by_hand() -> None:
    # C^2 / sum c_i^2: 30^2 / 410 = 2.2 clients' worth for the heavy loop (11 crashing clients),
    # 10^2 / 10 = 10 for ten clients of one crash, 0 without crashes.
    assert crashing_clients(heavy_stats(), CRASH) == pytest.approx(900 / 410)
    assert crashing_clients(client_stats([(1, 10.0)] * 10), CRASH) == 10.0
    assert crashing_clients(client_stats([(0, 10.0)] * 3), CRASH) == 0.0


def test_no_change_with_few_crashing_clients_is_not_a_clean_bill() -> None:
    # Candidate: 12 clients of 100 h, one crash each, 1200 h; baseline: 10 of 100 h, one crash
    # each. Equal rates (10 /1000h): p = 1, ratio 1. 12 and 10 clients' worth: a clean bill.
    many_new = client_stats([(1, 100.0)] * 12)
    many_old = client_stats([(1, 100.0)] * 10)
    clean = compare(many_new, many_old, CRASH)
    assert clean.ratio == pytest.approx(1.0) and clean.verdict == "no significant change"
    # The same 12 crashes in the candidate from a loop of 9 and three clients of one: 12^2 /
    # (81 + 3) = 1.7 clients' worth. Not significant either, but not a clean bill.
    looped = client_stats([(9, 100.0)] + [(1, 100.0)] * 3 + [(0, 100.0)] * 8)
    assert crashing_clients(looped, CRASH) == pytest.approx(144 / 84)
    warned = compare(looped, many_old, CRASH)
    assert warned.verdict == NO_CHANGE_FEW_CLIENTS
    assert warned.verdict == "no significant change (few crashing clients: not a clean bill)"
    assert_one_rule(warned)
    # The threshold is an option: 1.7 clients' worth clear a threshold of 1.5.
    assert compare(looped, many_old, CRASH, few_clients=1.5).verdict == "no significant change"
    # Regressions and improvements are never reworded: one client's 60 crashes (one client's
    # worth) against the baseline's 10 in as many hours is a regression.
    worse = compare(poisson_stats(60, 1000.0), many_old, CRASH)
    assert crashing_clients(poisson_stats(60, 1000.0), CRASH) == 1.0
    assert worse.verdict == "regression"


# -- one decision rule ------------------------------------------------------------------------


def assert_one_rule(result: Comparison) -> None:
    """The verdict, p < 0.05 and the interval excluding 1 say the same; the ratio is inside."""
    assert result.p_value is not None and result.lower is not None and result.upper is not None
    significant = result.p_value < 0.05
    assert (not result.verdict.startswith("no significant change")) is significant, result
    assert (result.verdict == "regression") is (result.lower > 1), result
    assert (result.verdict == "improvement") is (result.upper < 1), result
    if result.ratio is not None:
        assert result.lower <= result.ratio * (1 + 1e-9) and result.ratio <= result.upper * (
            1 + 1e-9), result


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300), st.floats(1000, 60_000), st.floats(1000, 60_000))
def test_verdict_p_value_and_interval_never_disagree(new_crashes: int, old_crashes: int,
                                                     new_hours: float, old_hours: float) -> None:
    assert_one_rule(compare(poisson_stats(new_crashes, new_hours),
                            poisson_stats(old_crashes, old_hours), CRASH))


clients = st.lists(st.tuples(st.integers(0, 30), st.floats(50, 2000)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(clients, clients)
def test_one_rule_with_clustered_crashes(new: list[tuple[int, float]],
                                         old: list[tuple[int, float]]) -> None:
    # Design effects above 1 make the effective counts fractional: the same rule must hold.
    assert_one_rule(compare(client_stats(new), client_stats(old), CRASH, min_usage_hours=0))


def test_the_row_that_said_p_0_047_and_no_change() -> None:
    # 0 crashes in 1000 h against 7 in 1500 h, no clustering: the exact test's minimum-likelihood
    # p-value was 0.047 while the Clopper-Pearson interval reached 1.04 ("no significant
    # change"). The central test, which that interval inverts, gives p = 2 P(X = 0 | 7, 2/5).
    result = compare(poisson_stats(0, 1000.0), poisson_stats(7, 1500.0), CRASH)
    assert result.p_value == pytest.approx(2 * 0.6**7, rel=1e-9)  # 0.056
    assert result.verdict == NO_CHANGE_FEW_CLIENTS  # one client a side (0 and 1 crashing)
    assert result.upper == pytest.approx(1.0407, abs=1e-4)
    assert_one_rule(result)


def test_the_worked_comparison_of_docs_rates() -> None:
    # docs/rates.md, "a comparison the naive method gets wrong": effective counts 7.54 and
    # 10.09 (not rounded), p = 0.23, ratio 2.0 in 0.67 to 5.69.
    candidate = {CRASH: 48, "usage_hours": 12_000, "client_count": 2_000,
                 f"client_{CRASH}_squared": 310, f"client_{CRASH}_usage_hours": 900,
                 "client_usage_hours_squared": 160_000}
    baseline = {CRASH: 30, "usage_hours": 15_000, "client_count": 2_500,
                f"client_{CRASH}_squared": 90, f"client_{CRASH}_usage_hours": 400,
                "client_usage_hours_squared": 190_000}
    result = compare(candidate, baseline, CRASH)
    assert result.ratio == pytest.approx(2.0)
    assert result.p_value == pytest.approx(0.234, abs=5e-4)
    assert (result.lower, result.upper) == (pytest.approx(0.670, abs=5e-4),
                                            pytest.approx(5.694, abs=5e-4))
    assert result.verdict == "no significant change"
    assert_one_rule(result)
