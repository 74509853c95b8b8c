"""Crash incidence of a candidate against a baseline: the ratio of two shares of clients.

A side's incidence of a crash type is k / n: its distinct clients with at least one such crash
over its distinct clients (both from the sketches, `rates.incidence`). Clients are the units, so
a crash loop counts once, however many crashes it sends: the incidence ratio answers "do more
users crash?", where the rate ratio answers "are there more crashes per hour of use?".

One test decides (as for rates): the Wald test of log(p1 / p0), with Katz's variance
1/k1 - 1/n1 + 1/k0 - 1/n0; its p-value, its interval exp(log ratio +- z se) and the verdict come
from it together, so the interval excludes 1 exactly when p < 1 - confidence. A side without a
crashing client takes k = 0.5 (Haldane's correction: the log ratio and its variance stay
finite, and the interval is wide, as it should be). No ratio when either side has no clients,
or neither side had a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _dist  # type: ignore[import-untyped]

from .rates import IMPROVEMENT, NO_CHANGE, REGRESSION, Share, incidence


@dataclass(frozen=True)
class IncidenceComparison:
    crash: str
    candidate: Share | None
    baseline: Share | None
    candidate_crashing: int
    candidate_clients: int
    baseline_crashing: int
    baseline_clients: int
    ratio: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    verdict: str


#: The verdicts when there is nothing to compare.
NO_CLIENTS = "no clients"
NO_CRASHING_CLIENTS = "no crashing clients"


def compare_incidence(crash: str, crashing: int, clients: int, base_crashing: int,
                      base_clients: int, confidence: float = 0.95) -> IncidenceComparison:
    """Candidate (`crashing` of `clients`) against baseline (`base_crashing` of
    `base_clients`)."""
    candidate, baseline = incidence(crashing, clients), incidence(base_crashing, base_clients)
    k1, k0 = min(crashing, clients), min(base_crashing, base_clients)
    if candidate is None or baseline is None or k1 + k0 == 0:
        verdict = NO_CRASHING_CLIENTS if clients and base_clients else NO_CLIENTS
        return IncidenceComparison(crash, candidate, baseline, k1, clients, k0, base_clients,
                                   None, None, None, None, verdict)
    a, b = max(k1, 0.5), max(k0, 0.5)  # Haldane's 0.5 for a side without crashes
    log_ratio = math.log((a / clients) / (b / base_clients))
    se = math.sqrt(max(1 / a - 1 / clients + 1 / b - 1 / base_clients, 0.0))
    z = float(_dist.norm.ppf(0.5 + confidence / 2))
    if se == 0:  # every client crashed on both sides: the same share, exactly
        return IncidenceComparison(crash, candidate, baseline, k1, clients, k0, base_clients,
                                   1.0, 1.0, 1.0, 1.0, NO_CHANGE)
    p_value = float(2 * _dist.norm.sf(abs(log_ratio) / se))
    verdict = NO_CHANGE
    if p_value < 1 - confidence:
        verdict = REGRESSION if log_ratio > 0 else IMPROVEMENT
    return IncidenceComparison(crash, candidate, baseline, k1, clients, k0, base_clients,
                               math.exp(log_ratio), math.exp(log_ratio - z * se),
                               math.exp(log_ratio + z * se), p_value, verdict)
