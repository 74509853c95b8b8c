"""Crash rates with honest intervals, and candidate-versus-baseline comparisons.

Pure functions on the stats of docs/rules.md (35 for the legacy family, 55 for Glean): the
stats of one aggregate, or of several combined key by key with `add_stats`. Nothing here knows a
ping format: a family's crash measures and stats are passed in (`measures=`, `names=`; the
default is the legacy family's), and every crash measure is read the same way, from its count,
client_<crash>_squared, client_<crash>_usage_hours and client_<crash>_max. docs/rates.md
explains the method to release engineers, with a worked example; this is the summary.

Why not a plain Poisson interval: crashes cluster in clients. A client in a crash loop sends
dozens of crash pings that are not independent events, so the total count varies far more than
Poisson says and a Poisson interval is too narrow (see benchmarks/coverage.py). Clients are the
independent units, and the stats keep the client-level sums needed to treat them as clusters.

With C crashes, H usage hours, n clients and c_i, h_i one client's crashes and hours:

* Rate: the ratio estimator r = C / H, reported per 1,000 usage hours.
* Variance (`robust_variance`): the linearization ("sandwich") variance of a ratio estimator with
  clients as clusters,

      Var(r) = n/(n-1) * (sum c_i^2 - 2 r sum c_i h_i + r^2 sum h_i^2) / H^2

  (factor 1 instead of n/(n-1) when n <= 1), from client_<crash>_squared,
  client_<crash>_usage_hours and client_usage_hours_squared.
* Design effect d = max(1, Var(r) / (C / H^2)), 1 when C = 0: how many times the Poisson
  variance the clustering costs. It is never below 1, so an interval is never narrower than
  Poisson's: with one client, or clients that all crash at the same rate, the sandwich says 0,
  which would claim a certainty no data gives.
* Interval (`crash_rate`), at every count: Fay and Feuer's (1997) gamma interval for a total C
  of variance d C, over H. It has the variance of the sandwich (d C / H^2) and, unlike a normal
  interval, a right skew, which grows as the effective count shrinks: when a few clients bring
  most crashes, the total is skewed and a symmetric interval misses high.
  - Lower limit: gamma of shape C/d and scale d, that is d/H times Garwood's exact Poisson
    lower limit of the effective count C/d.
  - Upper limit (`fay_feuer_upper`): the same total plus one extra event of weight w: gamma of
    shape (C + w)^2 / (d C + w^2) and scale (d C + w^2) / (C + w). With w = d it is d/H times
    Garwood's upper limit of C/d. Here w = max(d, M), M the largest single client's count
    (client_<crash>_max): the event a rare, heavy crash loop brings, which the variance of a
    sample that has seen few loops understates (docs/rates.md, "Heavy crash loops").
    Rows stored before client_<crash>_max existed read M = 0: w = d, the former limit.
  Method "exact"; "none" when H = 0.
* Comparison (`compare`) of a candidate (1) to a baseline (0): the rate ratio r1 / r0. One
  test per row decides: its p-value, the verdict and the interval come from it together.
  - Both effective counts C/d >= small_count (20): Wald test of log(r1 / r0), whose variance
    is d1/C1 + d0/C0 (the Poisson 1/C of each log rate times its design effect).
  - Otherwise: exact conditional binomial test on the effective counts k = C/d over the
    effective hours H/d: given k1 + k0 crashes, k1 is binomial with share H1/d1 / (H1/d1 +
    H0/d0) when the rates are equal (the binomial's tails are regularized incomplete beta
    functions, so k need not be whole). The p-value is the central one, twice the smaller
    tail; the Clopper-Pearson interval of the share, which is exactly the set of shares that
    test does not reject, maps to the ratio as p/(1-p) * (H0/d0)/(H1/d1).
  - Verdict from the p-value: "regression" (candidate higher) or "improvement" (lower) when
    p < 1 - confidence, else "no significant change". The interval excludes 1 exactly then.
    "not enough usage yet" (and no numbers) while either side has fewer than min_usage_hours
    (1,000).
  - "No significant change" is not a clean bill when either side's crashes come from fewer
    than few_clients (5) clients' worth (`crashing_clients`: C^2 / sum c_i^2, a lower bound of
    the number of crashing clients): then the verdict says so, NO_CHANGE_FEW_CLIENTS. The test
    itself does not weigh the largest client (docs/rates.md says why).

Approximation: when stats of several aggregates are added, a client present in more than one
(say, two activity dates) counts as several independent clients, which understates the variance
a little.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from scipy import stats as _dist  # type: ignore[import-untyped]
from scipy.special import betainc as _beta_fn  # type: ignore[import-untyped]

# Only the defaults, for callers that give no family: the legacy family's measures and stats.
from .rules import CRASH_MEASURES, STATS, merged_by_max

#: A family's crash measure names (families.Family.CRASH_MEASURES).
Measures = Collection[str]

#: The normal quantile of a two-sided 95% interval.
Z95: float = float(_dist.norm.ppf(0.975))

EXACT = "exact"
NO_METHOD = "none"

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
NO_CHANGE_FEW_CLIENTS = "no significant change (few crashing clients: not a clean bill)"
NOT_ENOUGH_USAGE = "not enough usage yet"


# -- stats ------------------------------------------------------------------------------------


def add_stats(many: Iterable[Mapping[str, float]],
              names: Iterable[str] = STATS) -> dict[str, float]:
    """The key-wise sum of several aggregates' stats, but the largest client's counts
    (client_<crash>_max) key-wise maxima; each of the family's stats `names` is present (0 when
    no input has it). Other keys are summed too, so nothing is silently dropped."""
    total = dict.fromkeys(names, 0.0)
    for stats in many:
        for key, value in stats.items():
            before = total.get(key, 0.0)
            total[key] = max(before, float(value)) if merged_by_max(key) else before + float(value)
    return total


def _stat(stats: Mapping[str, float], key: str) -> float:
    return float(stats.get(key, 0.0))


def whole(value: float) -> int | float:
    """A count as an int when it is whole (stores keep every stat as a float): 52, not 52.0."""
    return int(value) if float(value).is_integer() else value


def _check_crash(crash: str, measures: Measures) -> None:
    if crash not in measures:
        raise ValueError(f"not a crash measure: {crash!r} (one of {', '.join(measures)})")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def _z(confidence: float) -> float:
    """The normal quantile of a two-sided interval of this confidence."""
    _check_confidence(confidence)
    return float(_dist.norm.ppf(0.5 + confidence / 2))


# -- one rate ---------------------------------------------------------------------------------


def robust_variance(stats: Mapping[str, float], crash: str,
                    measures: Measures = CRASH_MEASURES) -> float:
    """The cluster-robust variance of crashes / usage_hours (per hour, squared), clients as
    clusters. Raises ValueError when there are no usage hours (no rate, no variance)."""
    _check_crash(crash, measures)
    hours = _stat(stats, "usage_hours")
    if hours <= 0:
        raise ValueError("no usage hours: the crash rate is undefined")
    rate = _stat(stats, crash) / hours
    # sum over clients of (c_i - r h_i)^2, expanded into the three client-level sums.
    residuals = (
        _stat(stats, f"client_{crash}_squared")
        - 2 * rate * _stat(stats, f"client_{crash}_usage_hours")
        + rate**2 * _stat(stats, "client_usage_hours_squared")
    )
    clients = _stat(stats, "client_count")
    correction = clients / (clients - 1) if clients > 1 else 1.0
    # max(): the expansion can cancel to a tiny negative number in floating point.
    return correction * max(0.0, residuals) / hours**2


def _design_effect(stats: Mapping[str, float], crash: str) -> float:
    """Var(r) over the Poisson variance C/H^2, at least 1 (1 when there is no crash)."""
    crashes, hours = _stat(stats, crash), _stat(stats, "usage_hours")
    if crashes <= 0:
        return 1.0
    return max(1.0, robust_variance(stats, crash, (crash,)) / (crashes / hours**2))


def effective_count(stats: Mapping[str, float], crash: str) -> float:
    """C/d: the number of independent crashes that would be as informative as these."""
    return _stat(stats, crash) / _design_effect(stats, crash)


def heavy_weight(stats: Mapping[str, float], crash: str) -> float:
    """w = max(d, M): the weight of the upper limit's extra event, M the largest client's count
    (client_<crash>_max; 0 in rows stored before it existed, so w = d there)."""
    return max(_design_effect(stats, crash), _stat(stats, f"client_{crash}_max"))


def crashing_clients(stats: Mapping[str, float], crash: str) -> float:
    """C^2 / sum c_i^2: how many clients' worth of crashes (0 without crashes). At most the
    number of clients with a crash (Cauchy-Schwarz), equal when they crashed equally often;
    small when one client's loop brings most crashes."""
    squares = _stat(stats, f"client_{crash}_squared")
    return _stat(stats, crash) ** 2 / squares if squares > 0 else 0.0


def fay_feuer_upper(crashes: float, effect: float, weight: float,
                    confidence: float = 0.95) -> float:
    """Fay and Feuer's upper limit of a total's mean: `crashes` of variance `effect` x crashes,
    plus an extra event of `weight` (> 0), as a gamma of that mean and variance."""
    _check_confidence(confidence)
    mean = crashes + weight
    spread = effect * crashes + weight * weight  # the variance with the extra event
    shape, scale = mean * mean / spread, spread / mean
    return float(_dist.gamma.ppf(0.5 + confidence / 2, shape, scale=scale))


def exact_poisson_limits(count: float, confidence: float = 0.95) -> tuple[float, float]:
    """Garwood's exact limits of a Poisson mean given an observed count, which may be a
    non-integer effective count: chi2 quantiles, the lower limit 0 for a count of 0."""
    if count < 0:
        raise ValueError(f"a count cannot be negative: {count}")
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    lower = 0.0 if count == 0 else float(_dist.chi2.ppf(alpha / 2, 2 * count)) / 2
    upper = float(_dist.chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    return lower, upper


def naive_poisson_interval(
    stats: Mapping[str, float], crash: str, confidence: float = 0.95, per: float = 1000.0,
    measures: Measures = CRASH_MEASURES,
) -> tuple[float, float]:
    """Exact Poisson interval of the rate (per `per` hours) on the raw count, as if every crash
    were independent. For comparison only: it is too narrow when crashes cluster in clients.
    With no usage hours any rate is possible: (0, inf)."""
    _check_crash(crash, measures)
    hours = _stat(stats, "usage_hours")
    if hours <= 0:
        return 0.0, math.inf
    lower, upper = exact_poisson_limits(_stat(stats, crash), confidence)
    return lower / hours * per, upper / hours * per


@dataclass(frozen=True)
class Rate:
    """A crash rate per 1,000 usage hours (or `per`) and its interval."""

    crash: str
    crashes: float
    usage_hours: float
    clients: float
    rate: float | None  # None when usage_hours == 0
    lower: float | None
    upper: float | None
    method: str  # "exact" (the gamma limits of crash_rate) or "none" (no usage)
    enough_usage: bool  # usage_hours >= min_usage_hours


def crash_rate(
    stats: Mapping[str, float],
    crash: str,
    *,
    confidence: float = 0.95,
    min_usage_hours: float = 100.0,
    per: float = 1000.0,
    measures: Measures = CRASH_MEASURES,
) -> Rate:
    """The rate of `crash` (one of the family's `measures`) per `per` usage hours with its
    interval: Fay and Feuer's gamma limits, whose upper one weighs the largest client (see the
    module docstring)."""
    _check_crash(crash, measures)
    _check_confidence(confidence)
    crashes, hours = whole(_stat(stats, crash)), _stat(stats, "usage_hours")
    clients = whole(_stat(stats, "client_count"))
    enough = hours >= min_usage_hours
    if hours <= 0:
        return Rate(crash, crashes, hours, clients, None, None, None, NO_METHOD, enough)
    effect = _design_effect(stats, crash)
    low, _ = exact_poisson_limits(crashes / effect, confidence)
    high = fay_feuer_upper(crashes, effect, heavy_weight(stats, crash), confidence)
    return Rate(crash, crashes, hours, clients, crashes / hours * per,
                low * effect / hours * per, high / hours * per, EXACT, enough)


# -- crashing clients -------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """A share of clients (a fraction of 1) and its interval."""

    value: float
    lower: float
    upper: float

    def complement(self) -> Share:
        """1 - the share: crash-free users from the main-crash incidence."""
        return Share(1.0 - self.value, 1.0 - self.upper, 1.0 - self.lower)


def incidence(crashing: int, clients: int, confidence: float = 0.95) -> Share | None:
    """The share of `clients` with at least one crash, `crashing` of them, with Wilson's score
    interval (a client either crashed or did not: a binomial proportion whose units are the
    clients, so crash loops cannot narrow it). None without clients. The counts come from
    sketches: a crashing count over the clients' (their estimates differ) is taken as all."""
    _check_confidence(confidence)
    if clients <= 0:
        return None
    k = min(max(crashing, 0), clients)
    z = _z(confidence)
    p = k / clients
    scale = 1 + z * z / clients
    center = (p + z * z / (2 * clients)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / clients + z * z / (4 * clients * clients))
    return Share(p, max(0.0, center - half), min(1.0, center + half))


# -- two rates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A candidate's crash rate against a baseline's: their ratio, its interval, a verdict."""

    crash: str
    candidate: Rate
    baseline: Rate
    ratio: float | None  # candidate rate / baseline rate (inf when only the baseline is 0)
    lower: float | None  # interval of the ratio
    upper: float | None
    p_value: float | None  # two-sided, H0: ratio == 1
    verdict: str


def compare(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    crash: str,
    *,
    confidence: float = 0.95,
    min_usage_hours: float = 1000.0,
    small_count: float = 20,
    few_clients: float = 5,
    measures: Measures = CRASH_MEASURES,
) -> Comparison:
    """Is the candidate's crash rate (`crash`, one of the family's `measures`) different from
    the baseline's? "No significant change" warns when either side's crashes are fewer than
    `few_clients` clients' worth (`crashing_clients`)."""
    new = crash_rate(candidate, crash, confidence=confidence, min_usage_hours=min_usage_hours,
                     measures=measures)
    old = crash_rate(baseline, crash, confidence=confidence, min_usage_hours=min_usage_hours,
                     measures=measures)
    if not (new.enough_usage and old.enough_usage and new.usage_hours > 0
            and old.usage_hours > 0):
        return Comparison(crash, new, old, None, None, None, None, NOT_ENOUGH_USAGE)
    ratio = _ratio(new.crashes / new.usage_hours, old.crashes / old.usage_hours)
    effective = min(effective_count(candidate, crash), effective_count(baseline, crash))
    if effective >= small_count and effective > 0:
        test = _wald_ratio(candidate, baseline, crash, confidence)
    else:
        test = _exact_ratio(candidate, baseline, crash, confidence)
    verdict = _verdict(test, confidence)
    if verdict == NO_CHANGE and min(crashing_clients(candidate, crash),
                                    crashing_clients(baseline, crash)) < few_clients:
        verdict = NO_CHANGE_FEW_CLIENTS  # so few clients: a loop could hide or appear
    return Comparison(crash, new, old, ratio, test.lower, test.upper, test.p_value, verdict)


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else None


@dataclass(frozen=True)
class _Test:
    """One test of "the rates are equal": its p-value, the interval of the ratio it does not
    reject, and which side the candidate is on (1 higher, -1 lower, 0 level)."""

    lower: float
    upper: float
    p_value: float
    side: int


def _verdict(test: _Test, confidence: float) -> str:
    # The p-value decides; the interval excludes 1 exactly when p < 1 - confidence.
    if test.p_value >= 1.0 - confidence or test.side == 0:
        return NO_CHANGE
    return REGRESSION if test.side > 0 else IMPROVEMENT


def _side(difference: float) -> int:
    return (difference > 0) - (difference < 0)


def _wald_ratio(
    candidate: Mapping[str, float], baseline: Mapping[str, float], crash: str, confidence: float
) -> _Test:
    """The normal approximation of the log rate ratio: p-value and interval of one z."""
    log_ratio = math.log(
        (_stat(candidate, crash) / _stat(candidate, "usage_hours"))
        / (_stat(baseline, crash) / _stat(baseline, "usage_hours"))
    )
    # Var(log r) = Var(r)/r^2 = d/C: the Poisson 1/C times the design effect.
    se = math.sqrt(
        _design_effect(candidate, crash) / _stat(candidate, crash)
        + _design_effect(baseline, crash) / _stat(baseline, crash)
    )
    half_width = _z(confidence) * se
    p_value = float(2 * _dist.norm.sf(abs(log_ratio) / se))
    return _Test(math.exp(log_ratio - half_width), math.exp(log_ratio + half_width), p_value,
                 _side(log_ratio))


def _exact_ratio(
    candidate: Mapping[str, float], baseline: Mapping[str, float], crash: str, confidence: float
) -> _Test:
    """The exact binomial test conditional on the total count, on effective counts, and the
    Clopper-Pearson interval that inverts it."""
    effect_new, effect_old = _design_effect(candidate, crash), _design_effect(baseline, crash)
    # Effective counts and hours: a Poisson experiment as informative as the clustered one.
    k_new = _stat(candidate, crash) / effect_new
    total = k_new + _stat(baseline, crash) / effect_old
    hours_new = _stat(candidate, "usage_hours") / effect_new
    hours_old = _stat(baseline, "usage_hours") / effect_old
    if total <= 0:
        return _Test(0.0, math.inf, 1.0, 0)  # no crash anywhere: no information on the ratio
    expected = hours_new / (hours_new + hours_old)  # the candidate's share under equal rates
    alpha = 1.0 - confidence
    # Binomial tails as regularized incomplete betas (exact for whole counts):
    # P(X >= k) = I_p(k, n - k + 1), P(X <= k) = I_(1-p)(n - k, k + 1).
    at_least = 1.0 if k_new <= 0 else float(_beta_fn(k_new, total - k_new + 1, expected))
    at_most = 1.0 if k_new >= total else float(_beta_fn(total - k_new, k_new + 1, 1 - expected))
    p_value = min(1.0, 2 * min(at_least, at_most))
    # Clopper-Pearson: the shares whose tails are both above alpha / 2.
    low = 0.0 if k_new <= 0 else float(_dist.beta.ppf(alpha / 2, k_new, total - k_new + 1))
    high = 1.0 if k_new >= total else float(
        _dist.beta.ppf(1 - alpha / 2, k_new + 1, total - k_new))

    def to_ratio(p: float) -> float:
        # The candidate's share of crashes p, as a rate ratio.
        return math.inf if p >= 1 else p / (1 - p) * hours_old / hours_new

    return _Test(to_ratio(low), to_ratio(high), p_value, _side(k_new / total - expected))
