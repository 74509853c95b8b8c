"""Rates and comparisons read from a store: what the `rates` and `compare` commands, the
dashboard and the API show. Sums come from the store's read side; the maths from rates.py.

Every function reads one ping family: the store's (`store.family`, or the query's for
`rate_rows`), whose crash measures (`CRASH_MEASURES`) are the crash types shown. For Glean,
`startup_crashes` is one of them: startup crashes are a part of the main crashes, shown beside
them, never added to them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from . import families, rates, rules, sketches
from .errors import CrashAggregatesError, UsageError
from .incidence import IncidenceComparison, compare_incidence
from .stores.base import ReadableStore
from .stores.queries import DateKind, StatsQuery

#: The legacy family's crash types (the default of callers that name no family).
CRASHES = rules.CRASH_MEASURES


def crash_types(family: str) -> tuple[str, ...]:
    """The crash types a family's rates and comparisons show, in the family's order."""
    return families.family(family).CRASH_MEASURES


def rate_rows(store: ReadableStore, query: StatsQuery,
              crashes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per group: its dimension values (and date), usage, `client_count` (the sum of
    the aggregates' client counts), `clients` (distinct clients, from the sketches),
    `crash_free_users`, and per crash type (default: those of the query's family) the rate per
    1,000 usage hours with its 95% interval, the distinct `crashing_clients` and the
    `incidence` (crashing clients / clients, with a 95% interval)."""
    measures = crash_types(query.family)
    crashes = measures if crashes is None else crashes
    out = []
    names = (["date"] if query.per_date else []) + list(query.by)
    distinct = store.distinct_clients(query)
    for group, stats in store.sum_stats(query):
        row: dict[str, Any] = dict(zip(names, group, strict=True))
        counts = distinct.get(group, {})
        clients = counts.get(sketches.CLIENTS, sketches.NONE).count
        row["usage_hours"] = stats["usage_hours"]
        row["client_count"] = rates.whole(stats["client_count"])
        row["clients"] = clients
        main = rates.incidence(counts.get(MAIN, sketches.NONE).count, clients)
        row["crash_free_users"] = _share(main.complement() if main else None)
        for crash in crashes:
            rate = rates.crash_rate(stats, crash, measures=measures)
            crashing = counts.get(crash, sketches.NONE).count
            row[crash] = {"crashes": rate.crashes, "rate": rate.rate, "lower": rate.lower,
                          "upper": rate.upper, "method": rate.method,
                          "enough_usage": rate.enough_usage, "crashing_clients": crashing,
                          "incidence": _share(rates.incidence(crashing, clients))}
        out.append(row)
    return out


#: The crash type of crash-free users: both families have it.
MAIN = "main_crashes"


def _share(share: rates.Share | None) -> dict[str, float] | None:
    return None if share is None else asdict(share)


def flat_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with one column per crash type and figure (for CSV and tables); the crash types
    are the row's (its dict values), whatever the family."""
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if not isinstance(v, dict) and k not in _SHARES}
        for name in _SHARES:
            if name in row:
                out.update(_flat_share(name, row[name]))
        for crash, cell in row.items():
            if isinstance(cell, dict) and crash not in _SHARES:
                for key in ("crashes", "rate", "lower", "upper"):
                    out[f"{crash}_{key}" if key != "crashes" else crash] = cell[key]
                if "crashing_clients" in cell:
                    out[f"{crash}_crashing_clients"] = cell["crashing_clients"]
                    out.update(_flat_share(f"{crash}_incidence", cell["incidence"]))
        flat.append(out)
    return flat


_SHARES = ("crash_free_users",)


def _flat_share(name: str, share: Mapping[str, float] | None) -> dict[str, float | None]:
    share = share or {}
    return {name: share.get("value"), f"{name}_lower": share.get("lower"),
            f"{name}_upper": share.get("upper")}


def natural_key(value: str) -> tuple[Any, ...]:
    """Versions in numeric order: 9.0 < 45.0 < 100.0a1."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|\D+", value))


class NoEarlierBuild(UsageError):
    """The candidate is the first build or version of its channel: a baseline must be given."""


class NoDataError(CrashAggregatesError):
    """A candidate or baseline without a single row in the selected dates: a typo, or a build
    not ingested yet. Never a verdict: `compare` exits 3 on it."""


@dataclass(frozen=True)
class ComparisonReport:
    dimension: str
    candidate: str
    baseline: str
    channel: str | None
    candidate_dates: tuple[str, str] | None
    baseline_dates: tuple[str, str] | None
    results: list[rates.Comparison]
    # With days since release: usage hours dated before the build's own date, a data error
    # left out of the comparison (None otherwise).
    candidate_hours_before_build: float | None = None
    baseline_hours_before_build: float | None = None
    family: str = families.DEFAULT
    #: Per crash type, the share of clients that crashed, candidate against baseline.
    incidence: list[IncidenceComparison] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return any(c.verdict == "regression" for c in self.results)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["regression"] = self.regression
        return out


def parse_pair(text: str) -> tuple[str, str]:
    """`build_id=20160302030211` -> ("build_id", "20160302030211")."""
    name, sep, value = text.partition("=")
    if not sep or not value:
        raise UsageError(f"{text!r}: write DIMENSION=VALUE, e.g. build_id=20160302030211")
    StatsQuery(by=(name,))  # checks the name (of any family: the query checks it again)
    return name, value


def previous_value(store: ReadableStore, dimension: str, candidate: str,
                   channel: str | None) -> str:
    """The value of `dimension` just before the candidate on the same channel."""
    where = {"channel": channel} if channel else {}
    values = [group[0] for group, _ in store.sum_stats(
        StatsQuery(by=(dimension,), where=where, family=store.family))]
    earlier = sorted((v for v in values if isinstance(v, str)
                      and natural_key(v) < natural_key(candidate)), key=natural_key)
    if not earlier:
        raise NoEarlierBuild(f"no earlier {dimension} than {candidate}"
                         + (f" on {channel}" if channel else "") + ": give --baseline")
    return earlier[-1]


def main_channel(store: ReadableStore, dimension: str, value: str) -> str | None:
    """The channel with the most usage for a build or version."""
    found = store.sum_stats(StatsQuery(by=("channel",), where={dimension: value},
                                       family=store.family))
    ranked = sorted(((s["usage_hours"], g[0]) for g, s in found if g[0]), reverse=True)
    return str(ranked[0][1]) if ranked else None


_BUILD_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})\d{6}", re.ASCII)


def build_date(build_id: str) -> date:
    """The date of a build id's timestamp YYYYMMDDhhmmss."""
    found = _BUILD_DATE.fullmatch(build_id)
    try:
        if found:
            return date(*map(int, found.groups()))
    except ValueError:
        pass
    raise UsageError(f"build id {build_id!r} is not a timestamp YYYYMMDDhhmmss")


@dataclass(frozen=True)
class _Side:
    """One side of a comparison: its summed stats, and with days since release its activity
    dates and the usage hours dated before its build."""

    stats: dict[str, float]
    dates: tuple[str, str] | None = None
    hours_before_build: float | None = None
    #: Distinct clients, and per crash type crashing clients, over the side's dates.
    clients: dict[str, int] = field(default_factory=dict)


def _described(pair: tuple[str, str], channel: str | None) -> str:
    return f"{pair[0]}={pair[1]}" + (f" on {channel}" if channel else "")


def _first_build_date(store: ReadableStore, pair: tuple[str, str],
                      where: Mapping[str, str]) -> date:
    """The build's own date: its build id's, or for a version its first build id's."""
    dimension, value = pair
    if dimension == "build_id":
        return build_date(value)
    if dimension != "build_version":
        raise UsageError(f"days since release count from a build's date: compare build_id=... "
                         f"or build_version=..., not {dimension}")
    ids = sorted(str(group[0]) for group, _ in store.sum_stats(
        StatsQuery(by=("build_id",), where=where, family=store.family)) if group[0])
    if not ids:
        raise NoDataError(f"no data for {_described(pair, where.get('channel'))} in any "
                          "activity date")
    return build_date(ids[0])


def _side_over(store: ReadableStore, pair: tuple[str, str], channel: str | None,
               first: date | None, last: date | None, days_since_release: int | None,
               date_kind: DateKind) -> _Side:
    """Summed stats of a build over the given dates, or over its first N days counted from
    its build date; NoDataError when it has no row there."""
    where = {**({"channel": channel} if channel else {}), pair[0]: pair[1]}
    names = families.family(store.family).STATS
    if days_since_release is None:
        per_day = store.sum_stats(StatsQuery(first=first, last=last, where=where,
                                             date_kind=date_kind, per_date=True,
                                             family=store.family))
        if not per_day:
            raise NoDataError(f"no data for {_described(pair, channel)} in "
                              + _dates_text(date_kind, first, last))
        return _Side(rates.add_stats((s for _, s in per_day), names),
                     clients=_distinct(store, StatsQuery(first=first, last=last, where=where,
                                                         date_kind=date_kind,
                                                         family=store.family)))
    release = _first_build_date(store, pair, where)
    until = release + timedelta(days=days_since_release - 1)
    dated = [(date.fromisoformat(str(g[0])), s) for g, s in store.sum_stats(
        StatsQuery(where=where, date_kind="activity", per_date=True, family=store.family))]
    chosen = [s for day, s in dated if release <= day <= until]
    if not chosen:
        raise NoDataError(f"no data for {_described(pair, channel)} in "
                          + _dates_text("activity", release, until)
                          + f" (its first {days_since_release} days since its build date)")
    early = sum(s["usage_hours"] for day, s in dated if day < release)
    return _Side(rates.add_stats(chosen, names), (release.isoformat(), until.isoformat()),
                 early, _distinct(store, StatsQuery(first=release, last=until, where=where,
                                                    date_kind="activity",
                                                    family=store.family)))


def _distinct(store: ReadableStore, query: StatsQuery) -> dict[str, int]:
    """The distinct clients of each sketch over the query's rows (one group: no `by`)."""
    found = store.distinct_clients(query).get((), {})
    return {name: count.count for name, count in found.items()}


def _dates_text(date_kind: str, first: date | None, last: date | None) -> str:
    if first and last:
        return f"{date_kind} dates {first} to {last}"
    if first or last:
        return f"{date_kind} dates " + (f"from {first}" if first else f"up to {last}")
    return f"any {date_kind} date"


def compare_builds(store: ReadableStore, candidate: tuple[str, str],
                   baseline: tuple[str, str] | None = None, *, channel: str | None = None,
                   first: date | None = None, last: date | None = None,
                   days_since_release: int | None = None, date_kind: DateKind = "submission",
                   min_usage_hours: float = 1000.0) -> ComparisonReport:
    """Candidate against baseline (by default the previous value on the same channel), per
    crash type of the store's family. With `days_since_release`, each side covers its first N
    activity days from its build date. NoDataError when either side has no row in its dates."""
    dimension, value = candidate
    channel = channel or main_channel(store, dimension, value)
    span = (first, last, days_since_release, date_kind)
    new = _side_over(store, candidate, channel, *span)  # a typo fails here, not as "no earlier"
    if baseline is None:
        baseline = (dimension, previous_value(store, dimension, value, channel))
    old = _side_over(store, baseline, channel, *span)
    measures = crash_types(store.family)
    results = [rates.compare(new.stats, old.stats, crash, min_usage_hours=min_usage_hours,
                             measures=measures) for crash in measures]
    clients, base_clients = new.clients.get(sketches.CLIENTS, 0), old.clients.get(
        sketches.CLIENTS, 0)
    shares = [compare_incidence(crash, new.clients.get(crash, 0), clients,
                                old.clients.get(crash, 0), base_clients) for crash in measures]
    return ComparisonReport(dimension, value, baseline[1], channel, new.dates, old.dates,
                            results, new.hours_before_build, old.hours_before_build,
                            store.family, shares)
