"""One dict per page and API answer, read from a store: the HTML pages render these dicts and
the JSON API returns them as they are, so both always show the same numbers.

No web framework here: plain functions of a store and the parsed request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from .. import families, rules
from ..errors import CrashAggregatesError, UsageError
from ..reports import (
    NoEarlierBuild,
    compare_builds,
    crash_types,
    main_channel,
    natural_key,
    parse_pair,
    rate_rows,
)
from ..stores.queries import DateKind, StatsQuery, check_dimensions
from .readonly import COUNTER_COLUMNS, TooManyRows, WebStore

#: Every dimension some family has (filters and groups may name any of them).
_ANY_FAMILY_DIMENSIONS: tuple[str, ...] = tuple(dict.fromkeys(
    name for f in families.FAMILIES.values() for name in f[0].DIMENSION_NAMES))
#: The legacy family's crash types; a view shows its store's family's (reports.crash_types).
CRASH_TYPES: tuple[str, ...] = rules.CRASH_MEASURES
CRASH_LABELS: dict[str, str] = {
    "main_crashes": "main",
    "content_crashes": "content",
    "plugin_crashes": "plugin",
    "gmplugin_crashes": "media plugin",
    "content_shutdown_crashes": "content shutdown",
    "gpu_crashes": "GPU",
    # Glean's other process types; startup crashes are a part of main's, counted in both.
    "rdd_crashes": "RDD",
    "socket_crashes": "socket",
    "utility_crashes": "utility",
    "other_crashes": "other",
    "startup_crashes": "startup (part of main)",
}
DATE_KINDS: tuple[DateKind, ...] = ("submission", "activity")
#: Days the overview and health pages show when the URL gives no dates.
DEFAULT_DAYS = 28
#: More values than this and a filter is a text box instead of a list.
MAX_OPTIONS = 500
#: Filter values are at most this long (longer ones cannot be in the store's keys anyway).
MAX_VALUE_LENGTH = 500
#: The dates a request may name: wide enough for any telemetry, and far from the calendar's
#: ends, so that the days the views add or subtract never leave it.
EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)


class NotFound(CrashAggregatesError):
    """What was asked for is not in the store (a 404)."""


def finite(value: Any) -> Any:
    """`value` with every infinite or NaN float replaced by None (JSON has no infinity): an
    unbounded interval end or an undefined ratio reads as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def check_value(name: str, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise UsageError(f"{name}: a value is at most {MAX_VALUE_LENGTH} characters")
    if "\x00" in value:
        raise UsageError(f"{name}: a value cannot contain a NUL character")


def check_day(name: str, day: date | None) -> None:
    if day is not None and not EARLIEST <= day <= LATEST:
        raise UsageError(f"{name}: {day.isoformat()} is out of range: use a date from "
                         f"{EARLIEST.isoformat()} to {LATEST.isoformat()}")


def check_days(first: date | None, last: date | None) -> None:
    check_day("first", first)
    check_day("last", last)


def shift(day: date, days: int) -> date:
    """`day` moved by `days`, stopping at the calendar's ends (dates read from the store may
    be anywhere in it)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def parse_day(name: str, text: str | None) -> date | None:
    """A date parameter of a page: empty means none, anything but YYYY-MM-DD (or a date out
    of range) is an error."""
    if text is None or not text.strip():
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{name}: {text[:40]!r} is not a date: use YYYY-MM-DD") from None
    check_day(name, day)
    return day


@dataclass(frozen=True)
class Selection:
    """What a view shows: dimension filters, a date range and which date it is on."""

    filters: dict[str, str] = field(default_factory=dict)
    first: date | None = None
    last: date | None = None
    date_kind: DateKind = "activity"

    def __post_init__(self) -> None:
        check_dimensions(list(self.filters))
        for name, value in self.filters.items():
            check_value(name, value)
        if self.date_kind not in DATE_KINDS:
            raise UsageError(f"date_kind: use one of {', '.join(DATE_KINDS)}")

    @classmethod
    def requested(cls, filters: dict[str, str], first: date | None, last: date | None,
                  date_kind: DateKind) -> Selection:
        """From a request's parameters: their dates must be in range (dates worked out from
        the store's, such as the default ones, need not be)."""
        check_days(first, last)
        return cls(filters, first, last, date_kind)

    @classmethod
    def from_params(cls, params: Mapping[str, str], default_kind: DateKind = "activity"
                    ) -> Selection:
        """From a page's query string; empty fields (an "any" filter) are left out."""
        kind = params.get("date_kind") or default_kind
        if kind not in DATE_KINDS:
            raise UsageError(f"date_kind: {kind[:40]!r} is not one of {', '.join(DATE_KINDS)}")
        filters = {name: params[name] for name in rules.DIMENSION_NAMES if params.get(name)}
        return cls(filters, parse_day("first", params.get("first")),
                   parse_day("last", params.get("last")), kind)

    def with_default_dates(self, store: WebStore, days: int = DEFAULT_DAYS) -> Selection:
        """The last `days` days of data when no date is given."""
        if self.first or self.last:
            return self
        span = store.date_span()
        if span is None:
            return self
        first = max(span[0], shift(span[1], 1 - days))
        return Selection(self.filters, first, span[1], self.date_kind)

    def as_dict(self) -> dict[str, Any]:
        return {"filters": dict(self.filters),
                "first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None,
                "date_kind": self.date_kind}

    def query(self, family: str, by: Sequence[str] = (), per_date: bool = False
              ) -> StatsQuery:
        return StatsQuery(by=tuple(by), first=self.first, last=self.last, where=self.filters,
                          date_kind=self.date_kind, per_date=per_date, family=family)

    def query_string(self, **extra: str | None) -> str:
        """The URL query that shows this selection (for links that keep it)."""
        params: dict[str, str] = {**self.filters}
        for key, value in (("first", self.first), ("last", self.last)):
            if value:
                params[key] = value.isoformat()
        params["date_kind"] = self.date_kind
        params.update({k: v for k, v in extra.items() if v})
        return urlencode(params)


def _rate_row(row: Mapping[str, Any], by: Sequence[str], crashes: Sequence[str]
              ) -> dict[str, Any]:
    return {
        "date": row.get("date"),
        "dimensions": {name: row.get(name) for name in by},
        "usage_hours": row["usage_hours"],
        "client_count": row["client_count"],
        "clients": row["clients"],
        "crash_free_users": row["crash_free_users"],
        "rates": {crash: row[crash] for crash in crashes},
    }


def rates(store: WebStore, selection: Selection, by: Sequence[str],
          per_date: bool = False) -> dict[str, Any]:
    """Rates per 1,000 usage hours with 95% intervals, per group (and date), of the store's
    family's crash types."""
    known = families.family(store.family).DIMENSION_NAMES
    crashes = crash_types(store.family)
    found: list[dict[str, Any]] = []
    # A dimension of another family that this family's pings lack (Glean has no
    # experiment_id) is absent from every row: a filter on it matches nothing, and grouping by
    # it gives null, as for any absent dimension. A name no family has is still an error.
    lacking = set(_ANY_FAMILY_DIMENSIONS) - set(known)
    if not lacking.intersection(selection.filters):
        query = selection.query(store.family, [d for d in by if d not in lacking], per_date)
        found = rate_rows(store, query)
    rows = [_rate_row(row, by, crashes) for row in found]
    out: dict[str, Any] = finite({"family": store.family,
                                  "query": {**selection.as_dict(), "by": list(by),
                                            "per_date": per_date}, "rows": rows})
    return out


def overview(store: WebStore, selection: Selection) -> dict[str, Any]:
    """Daily rates by channel, one series per channel, and each channel's latest day."""
    found = rates(store, selection, ("channel",), per_date=True)
    channels: dict[str | None, list[dict[str, Any]]] = {}
    for row in found["rows"]:
        channels.setdefault(row["dimensions"]["channel"], []).append(row)
    ordered = sorted(channels.items(), key=lambda item: (item[0] is None, item[0] or ""))
    crashes = crash_types(store.family)
    return {
        "family": store.family,
        "selection": selection.as_dict(),
        "crash_types": list(crashes),
        "crash_labels": {crash: CRASH_LABELS.get(crash, crash) for crash in crashes},
        "channels": [{"channel": channel, "series": series, "latest": series[-1]}
                     for channel, series in ordered],
    }


def comparison(store: WebStore, candidate: str, baseline: str | None, channel: str | None,
               selection: Selection, days_since_release: int | None,
               min_usage_hours: float) -> dict[str, Any]:
    """A candidate build or version against a baseline, per crash type (reports.compare_builds).
    """
    for name, value in (("candidate", candidate), ("baseline", baseline),
                        ("channel", channel)):
        if value is not None:
            check_value(name, value)
    dimension, value = parse_pair(candidate)
    against = parse_pair(baseline) if baseline else None
    lacking = set(_ANY_FAMILY_DIMENSIONS) - set(families.family(store.family).DIMENSION_NAMES)
    for pair in (dimension, value), against:
        if pair is not None and pair[0] in lacking:
            raise NotFound(f"{store.family} pings have no {pair[0]}: no data for "
                           f"{pair[0]}={pair[1]}")
    for name, pair in (("candidate", (dimension, value)), ("baseline", against)):
        if pair is not None and pair[0] not in ("build_id", "build_version"):
            raise UsageError(f"{name} compares builds: write build_id=... or "
                             f"build_version=..., not {pair[0]}=")
    channel = channel or main_channel(store, dimension, value)
    try:
        # The candidate's rows are looked for first: a typo is "no data", as on the CLI.
        report = compare_builds(
            store, (dimension, value), against,
            channel=channel, first=selection.first, last=selection.last,
            days_since_release=days_since_release, date_kind=selection.date_kind,
            min_usage_hours=min_usage_hours)
    except NoEarlierBuild:
        raise NotFound(f"no {dimension} before {value}"
                       + (f" on {channel}" if channel else "")
                       + ": give a baseline") from None
    out: dict[str, Any] = finite(report.as_dict())
    out["min_usage_hours"] = min_usage_hours
    out["days_since_release"] = days_since_release
    return out


def _run(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run record with its counters in one object."""
    out = {k: record[k] for k in ("run_id", "submission_date", "status", "started_at",
                                  "duration_seconds", "rows_written", "input_url",
                                  "product_version", "error")}
    out["counters"] = {name: int(record[name] or 0) for name in COUNTER_COLUMNS}
    return out


def runs(store: WebStore, first: date | None, last: date | None) -> dict[str, Any]:
    """Every run record of submission dates first..last, oldest first."""
    check_days(first, last)
    return {"family": store.family, "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
            "runs": _runs(store, first, last)}


def _runs(store: WebStore, first: date | None, last: date | None) -> list[dict[str, Any]]:
    return [_run(r) for r in store.runs_between(first, last)]


def health(store: WebStore, first: date | None, last: date | None) -> dict[str, Any]:
    """Per submission date, the latest run's counters: a data problem (fewer pings processed,
    more ignored, duplicates, malformed lines, a failed run) shows here, not as a crash rate."""
    check_days(first, last)
    if first is None and last is None:
        span = store.date_span()
        if span is not None:
            last = span[1]
            first = max(span[0], shift(last, 1 - DEFAULT_DAYS))
    by_day: dict[str, list[dict[str, Any]]] = {}
    for record in _runs(store, first, last):
        by_day.setdefault(record["submission_date"], []).append(record)
    days = []
    for day in sorted(by_day):
        history = by_day[day]
        latest = history[-1]
        counts = latest["counters"]
        processed = counts[rules.MAIN_PROCESSED] + counts[rules.CRASH_PROCESSED]
        read = sum(counts[name] for name in rules.COUNTERS)
        days.append({"submission_date": day, "runs": len(history), "latest": latest,
                     "lines_read": read,
                     "processed_share": processed / read if read else None})
    return {"family": store.family, "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
            "counters": list(rules.COUNTERS),
            "run_counters": [c for c in COUNTER_COLUMNS if c not in rules.COUNTERS],
            "days": days}


def dimension_values(store: WebStore, name: str, first: date | None,
                     last: date | None) -> dict[str, Any]:
    """The values a dimension takes (on submission dates first..last), sorted."""
    check_days(first, last)
    return {"family": store.family, "dimension": name,
            "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
            "values": store.distinct_values(name, first, last)}


def filter_options(store: WebStore, selection: Selection,
                   names: Iterable[str] | None = None) -> dict[str, list[str] | None]:
    """Per dimension (default: every one of the store's family), the values the filters offer
    over the selection's dates (None: too many, type one instead); the value a filter is set
    to is always offered."""
    if names is None:
        names = families.family(store.family).DIMENSION_NAMES
    first, last = selection.first, selection.last
    if last is not None and selection.date_kind == "activity":
        last = shift(last, 7)  # pings of an activity date arrive up to a week later
    options: dict[str, list[str] | None] = {}
    for name in names:
        try:
            values = store.distinct_values(name, first, last)
        except TooManyRows:
            options[name] = None
            continue
        if len(values) > MAX_OPTIONS:
            options[name] = None
            continue
        chosen = selection.filters.get(name)
        if chosen is not None and chosen not in values:
            values = sorted([*values, chosen])
        options[name] = values
    return options


def candidates(store: WebStore) -> list[str]:
    """`build_id=...` and `build_version=...` choices for the compare form (newest first)."""
    out: list[str] = []
    for name in ("build_id", "build_version"):
        try:
            values = store.distinct_values(name)
        except TooManyRows:
            continue
        out += [f"{name}={v}" for v in sorted(values, key=natural_key, reverse=True)
                [:MAX_OPTIONS]]
    return out
