"""Rates and comparisons read from a store: what the `rates` and `compare` commands, the
dashboard and the API show. Sums come from the store's read side; the maths from rates.py."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from . import rates, rules
from .errors import UsageError
from .stores.base import ReadableStore
from .stores.queries import DateKind, StatsQuery

CRASHES = rules.CRASH_MEASURES


def rate_rows(store: ReadableStore, query: StatsQuery,
              crashes: Sequence[str] = CRASHES) -> list[dict[str, Any]]:
    """One dict per group: its dimension values (and date), usage, clients, and per crash type
    the rate per 1,000 usage hours with its 95% interval."""
    out = []
    names = (["date"] if query.per_date else []) + list(query.by)
    for group, stats in store.sum_stats(query):
        row: dict[str, Any] = dict(zip(names, group, strict=True))
        row["usage_hours"] = stats["usage_hours"]
        row["client_count"] = stats["client_count"]
        for crash in crashes:
            rate = rates.crash_rate(stats, crash)
            row[crash] = {"crashes": rate.crashes, "rate": rate.rate, "lower": rate.lower,
                          "upper": rate.upper, "method": rate.method,
                          "enough_usage": rate.enough_usage}
        out.append(row)
    return out


def flat_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with one column per crash type and figure (for CSV and tables)."""
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if not isinstance(v, dict)}
        for crash in CRASHES:
            if crash in row:
                for key in ("crashes", "rate", "lower", "upper"):
                    out[f"{crash}_{key}" if key != "crashes" else crash] = row[crash][key]
        flat.append(out)
    return flat


def natural_key(value: str) -> tuple[Any, ...]:
    """Versions in numeric order: 9.0 < 45.0 < 100.0a1."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|\D+", value))


@dataclass(frozen=True)
class ComparisonReport:
    dimension: str
    candidate: str
    baseline: str
    channel: str | None
    candidate_dates: tuple[str, str] | None
    baseline_dates: tuple[str, str] | None
    results: list[rates.Comparison]

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
    StatsQuery(by=(name,))  # checks the name
    return name, value


def previous_value(store: ReadableStore, dimension: str, candidate: str,
                   channel: str | None) -> str:
    """The value of `dimension` just before the candidate on the same channel."""
    where = {"channel": channel} if channel else {}
    values = [group[0] for group, _ in store.sum_stats(StatsQuery(by=(dimension,),
                                                                  where=where))]
    earlier = sorted((v for v in values if isinstance(v, str)
                      and natural_key(v) < natural_key(candidate)), key=natural_key)
    if not earlier:
        raise UsageError(f"no {dimension} before {candidate}"
                         + (f" on {channel}" if channel else "") + ": give --baseline")
    return earlier[-1]


def main_channel(store: ReadableStore, dimension: str, value: str) -> str | None:
    """The channel with the most usage for a build or version."""
    found = store.sum_stats(StatsQuery(by=("channel",), where={dimension: value}))
    ranked = sorted(((s["usage_hours"], g[0]) for g, s in found if g[0]), reverse=True)
    return str(ranked[0][1]) if ranked else None


def _stats_over(store: ReadableStore, where: Mapping[str, str], first: date | None,
                last: date | None, days_since_release: int | None,
                date_kind: DateKind) -> tuple[dict[str, float], tuple[str, str] | None]:
    """Summed stats of a build, over the given dates or its first N activity days."""
    if days_since_release is None:
        found = store.sum_stats(StatsQuery(first=first, last=last, where=where,
                                           date_kind=date_kind))
        return (found[0][1] if found else rates.add_stats([])), None
    per_day = store.sum_stats(StatsQuery(where=where, date_kind="activity", per_date=True))
    if not per_day:
        return rates.add_stats([]), None
    release = date.fromisoformat(str(per_day[0][0][0]))
    until = release + timedelta(days=days_since_release - 1)
    chosen = [s for g, s in per_day if date.fromisoformat(str(g[0])) <= until]
    return rates.add_stats(chosen), (release.isoformat(), until.isoformat())


def compare_builds(store: ReadableStore, candidate: tuple[str, str],
                   baseline: tuple[str, str] | None = None, *, channel: str | None = None,
                   first: date | None = None, last: date | None = None,
                   days_since_release: int | None = None, date_kind: DateKind = "submission",
                   min_usage_hours: float = 1000.0) -> ComparisonReport:
    """Candidate against baseline (by default the previous value on the same channel), per
    crash type. With `days_since_release`, each side covers its own first N activity days."""
    dimension, value = candidate
    channel = channel or main_channel(store, dimension, value)
    if baseline is None:
        baseline = (dimension, previous_value(store, dimension, value, channel))
    where_channel = {"channel": channel} if channel else {}
    cand_stats, cand_dates = _stats_over(store, {**where_channel, dimension: value}, first,
                                         last, days_since_release, date_kind)
    base_stats, base_dates = _stats_over(store, {**where_channel, baseline[0]: baseline[1]},
                                         first, last, days_since_release, date_kind)
    results = [rates.compare(cand_stats, base_stats, crash, min_usage_hours=min_usage_hours)
               for crash in CRASHES]
    return ComparisonReport(dimension, value, baseline[1], channel, cand_dates, base_dates,
                            results)
