"""SQL shared by the SQLite and PostgreSQL stores: grouped sums, and the views for dashboards.

Each ping family has its own tables and views (`Tables`), made from its dimension table and
stats: `crash_aggregates`, `crash_aggregates_runs`, `crash_aggregates_flat`, `crash_rates_daily`
for legacy pings, the same names with `glean_` in front for Glean pings. The same text runs on
both: `->>` reads JSON in both, `CAST(... AS DOUBLE PRECISION)` makes a
number in both, `NULLIF` avoids PostgreSQL's division-by-zero error. Dimension names are checked
against the dimension table and still passed as bound parameters; values always are. Only
names of stats, fixed in the code, are written into the SQL text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from .. import families, sketches
from ..errors import UsageError
from ..rules import merged_by_max

DateKind = Literal["submission", "activity"]
Z95 = 1.959963984540054
LEGACY = families.DEFAULT


@dataclass(frozen=True)
class Tables:
    """The names of one family's tables and views."""

    family: str
    rows: str
    runs: str
    flat: str
    rates: str


def tables(family: str = LEGACY) -> Tables:
    """A family's tables: rows `families.table(family)`, the others named after it
    (crash_aggregates -> crash_rates_daily, glean_crash_aggregates -> glean_crash_rates_daily)."""
    rows = families.table(family)
    prefix = rows.removesuffix("crash_aggregates")
    return Tables(family, rows, f"{rows}_runs", f"{rows}_flat", f"{prefix}crash_rates_daily")


#: Every family's tables, legacy first.
ALL_TABLES: tuple[Tables, ...] = tuple(tables(name) for name in families.FAMILIES)


def date_range(column: str, mark: str, first: date | None, last: date | None
               ) -> tuple[list[str], list[object]]:
    """Conditions and parameters keeping `column` within [first, last] (either may be open)."""
    conditions: list[str] = []
    params: list[object] = []
    if first is not None:
        conditions.append(f"{column} >= {mark}")
        params.append(first)
    if last is not None:
        conditions.append(f"{column} <= {mark}")
        params.append(last)
    return conditions, params


def number(stat: str, table: str = "") -> str:
    return f"CAST({table}stats->>'{stat}' AS DOUBLE PRECISION)"


def merge(stat: str) -> str:
    """The SQL aggregate that combines a stat over rows: max for client_<crash>_max, else sum."""
    return "max" if merged_by_max(stat) else "sum"


def check_dimensions(names: Sequence[str], family: str = LEGACY) -> None:
    """Every name is one of the family's dimensions (a Glean store has fewer)."""
    known = families.family(family).DIMENSION_NAMES
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"unknown dimension {unknown[0]!r}: use one of " + ", ".join(known))


@dataclass(frozen=True)
class StatsQuery:
    """Sum the family's stats (35 legacy, 55 Glean) per group of dimension values (and per
    date, with `per_date`), from the family's table: the largest client's counts
    (client_<crash>_max) by maximum, the others by sum. Rows written before those stats
    existed have none: a group of only such rows gets NULL, read as 0 (`grouped`)."""

    by: tuple[str, ...] = ()
    first: date | None = None
    last: date | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    date_kind: DateKind = "submission"
    per_date: bool = False
    family: str = LEGACY

    def __post_init__(self) -> None:
        check_dimensions([*self.by, *self.where], self.family)

    @property
    def stats(self) -> tuple[str, ...]:
        """The stats summed, in the order of the query's columns."""
        return families.family(self.family).STATS

    def sql(self, mark: str) -> tuple[str, list[object]]:
        """The query and its parameters; `mark` is the driver's placeholder (? or %s)."""
        return self._select(mark, [f"{merge(stat)}({number(stat)})" for stat in self.stats],
                            True)

    def sketch_sql(self, mark: str) -> tuple[str, list[object]]:
        """Each row's group values and sketches, with the same groups and filters as `sql`:
        SQL cannot merge the sketches, `distinct_clients` does."""
        return self._select(mark, list(sketch_columns(self.family)), False)

    def _select(self, mark: str, values: list[str], sums: bool) -> tuple[str, list[object]]:
        date_column = f"{self.date_kind}_date"
        columns: list[str] = []
        params: list[object] = []
        if self.per_date:
            columns.append(date_column)
        for name in self.by:
            columns.append(f"dimensions->>{mark}")
            params.append(name)
        sql = f"SELECT {', '.join([*columns, *values])} FROM {tables(self.family).rows}"
        conditions, dates = date_range(date_column, mark, self.first, self.last)
        params.extend(dates)
        for name, value in self.where.items():
            conditions.append(f"dimensions->>{mark} = {mark}")
            params.extend([name, value])
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if columns and sums:
            ordinals = ", ".join(str(i + 1) for i in range(len(columns)))
            sql += f" GROUP BY {ordinals} ORDER BY {ordinals}"
        return sql, params


def sketch_names(family: str = LEGACY) -> tuple[str, ...]:
    """The distinct-client sketches of a family's rows (`sketches.names`)."""
    return sketches.names(families.family(family).CRASH_MEASURES)


def sketch_columns(family: str = LEGACY) -> tuple[str, ...]:
    """Their columns, in the same order: `clients_sketch`, `main_crashes_clients_sketch`..."""
    return tuple(sketches.column(name) for name in sketch_names(family))


Distincts = dict[tuple[object, ...], dict[str, sketches.Distinct]]


def distinct_clients(found: Sequence[Sequence[object]], query: StatsQuery) -> Distincts:
    """Rows of `StatsQuery.sketch_sql` merged per group: each sketch's distinct clients
    (dates as ISO text, as in `grouped`)."""
    width = len(query.by) + (1 if query.per_date else 0)
    names = sketch_names(query.family)
    blobs: dict[tuple[object, ...], list[list[bytes | None]]] = {}
    for row in found:
        group = tuple(v.isoformat() if isinstance(v, date) else v for v in row[:width])
        lists = blobs.setdefault(group, [[] for _ in names])
        for index, blob in enumerate(row[width:]):
            lists[index].append(blob)  # type: ignore[arg-type]
    return {group: {name: sketches.merge(column) for name, column in zip(names, lists,
                                                                          strict=True)}
            for group, lists in blobs.items()}


def check_family(query: StatsQuery, family: str) -> None:
    """A store sums only its own family's table: a query of another family is a mistake of
    the caller (it would sum the other family's rows under this one's name)."""
    if query.family != family:
        raise ValueError(f"a {query.family} query on a {family} store: "
                         f"make it StatsQuery(..., family={family!r})")


def distinct_sql(dimension: str, mark: str, first: date | None = None,
                 last: date | None = None, family: str = LEGACY) -> tuple[str, list[object]]:
    """The values a dimension takes (by submission date), for filters."""
    check_dimensions([dimension], family)
    sql = f"SELECT DISTINCT dimensions->>{mark} FROM {tables(family).rows}"
    conditions, params = date_range("submission_date", mark, first, last)
    conditions.insert(0, f"dimensions->>{mark} IS NOT NULL")
    return f"{sql} WHERE {' AND '.join(conditions)} ORDER BY 1", [dimension, dimension, *params]


Grouped = list[tuple[tuple[object, ...], dict[str, float]]]


def grouped(found: Sequence[Sequence[object]], query: StatsQuery) -> Grouped:
    """Rows of StatsQuery.sql as (group values, stats); dates as ISO text."""
    width = len(query.by) + (1 if query.per_date else 0)
    out: Grouped = []
    for row in found:
        group = tuple(v.isoformat() if isinstance(v, date) else v for v in row[:width])
        stats = {name: float(v or 0.0) for name, v in  # type: ignore[arg-type]
                 zip(query.stats, row[width:], strict=True)}
        out.append((group, stats))
    return out


VIEW_FLAT = tables().flat
VIEW_RATES = tables().rates
#: Dimensions of every family's rates view (both families have them).
RATES_VIEW_DIMENSIONS = ("channel", "build_version", "os_name")


def flat_view(family: str = LEGACY) -> str:
    """One typed column per dimension and per stat, for tools that do not read JSON."""
    chosen = families.family(family)
    dims = [f"dimensions->>'{name}' AS {name}" for name in chosen.DIMENSION_NAMES]
    stats = [f"{number(stat)} AS {stat}" for stat in chosen.STATS]
    return (f"SELECT submission_date, activity_date, {', '.join(dims)}, {', '.join(stats)} "
            f"FROM {tables(family).rows}")


def rates_view(family: str = LEGACY) -> str:
    """Daily crash rates per 1,000 usage hours by activity date and the main dimensions, with
    the 95% intervals of rates.crash_rate: the lower limit is Garwood's of the effective count
    k = C/d, scaled by d/H; the upper one Fay and Feuer's gamma limit of shape a = (C + w)^2 /
    (d C + w^2) and mean C + w, over H, whose extra event weighs w = max(d, M), M the largest
    client's count (client_<crash>_max, merged by max; absent from old rows: w = d, which makes
    it d/H times Garwood's upper limit of k). SQL has no gamma quantiles, so the limits use
    Wilson and Hilferty's cube-root approximation, k (1 - 1/(9k) - z/(3 sqrt k))^3 and
    (C + w) (1 - 1/(9a) + z/(3 sqrt a))^3: within 0.6% of the exact limits (docs/rates.md).
    One count, rate and interval per crash measure of the family (`CRASH_MEASURES`)."""
    crashes = families.family(family).CRASH_MEASURES
    dims = RATES_VIEW_DIMENSIONS
    sums = ["sum({}) AS usage_hours".format(number("usage_hours")),
            "sum({}) AS client_count".format(number("client_count")),
            "sum({}) AS usage_sq".format(number("client_usage_hours_squared"))]
    for crash in crashes:
        sums += [f"sum({number(crash)}) AS {crash}",
                 f"sum({number(f'client_{crash}_squared')}) AS {crash}_csq",
                 f"sum({number(f'client_{crash}_usage_hours')}) AS {crash}_cu",
                 f"max({number(f'client_{crash}_max')}) AS {crash}_m"]
    ratios = [f"{c} / NULLIF(usage_hours, 0) AS {c}_r" for c in crashes]
    small = "CASE WHEN client_count > 1 THEN client_count / (client_count - 1) ELSE 1 END"
    # the sandwich times H^2 over C: the design effect before its floor of 1
    sandwiches = [
        f"CASE WHEN {c} > 0 THEN {small} * ({c}_csq - 2 * {c}_r * {c}_cu "
        f"+ {c}_r * {c}_r * usage_sq) / {c} ELSE 1 END AS {c}_raw_d" for c in crashes]
    effects = [f"CASE WHEN {c}_raw_d > 1 THEN {c}_raw_d ELSE 1 END AS {c}_d"
               for c in crashes]
    # the extra event's weight: the largest client's count when it exceeds d (NULL in old rows)
    weights = [f"CASE WHEN coalesce({c}_m, 0) > {c}_d THEN {c}_m ELSE {c}_d END AS {c}_w"
               for c in crashes]
    z = f"{Z95!r}"
    # the cube roots of the Wilson-Hilferty limits: over k = C/d (lower), over the shape a of
    # the upper limit's gamma
    roots = []
    for c in crashes:
        k = f"({c} / {c}_d)"
        a = f"(({c} + {c}_w) * ({c} + {c}_w) / ({c}_d * {c} + {c}_w * {c}_w))"
        roots += [
            f"CASE WHEN {c} > 0 THEN 1 - 1 / (9 * {k}) - {z} / (3 * sqrt({k})) ELSE 0 END "
            f"AS {c}_low_root",
            f"1 - 1 / (9 * {a}) + {z} / (3 * sqrt({a})) AS {c}_high_root",
        ]
    columns = ["activity_date", *dims, "usage_hours", "client_count"]
    for c in crashes:
        low = f"{c}_low_root"
        high = f"{c}_high_root"
        columns += [
            c,
            f"1000 * {c}_r AS {c}_per_1000h",
            # lower: k root^3 crashes times d/H = r root^3; 0 when the root is negative
            f"1000 * {c}_r * CASE WHEN {low} > 0 THEN {low} * {low} * {low} ELSE 0 END "
            f"AS {c}_lower",
            # upper: the gamma's mean C + w times root^3, over H; NULL without usage
            f"1000 * ({c} + {c}_w) / NULLIF(usage_hours, 0) * {high} * {high} * {high} "
            f"AS {c}_upper",
        ]
    group = ", ".join(str(i + 1) for i in range(1 + len(dims)))
    dim_columns = ", ".join(f"dimensions->>'{d}' AS {d}" for d in dims)
    return (
        f"WITH sums AS (SELECT activity_date, {dim_columns}, {', '.join(sums)} "
        f"FROM {tables(family).rows} GROUP BY {group}), "
        f"ratios AS (SELECT *, {', '.join(ratios)} FROM sums), "
        f"sandwiches AS (SELECT *, {', '.join(sandwiches)} FROM ratios), "
        f"effects AS (SELECT *, {', '.join(effects)} FROM sandwiches), "
        f"weights AS (SELECT *, {', '.join(weights)} FROM effects), "
        f"roots AS (SELECT *, {', '.join(roots)} FROM weights) "
        f"SELECT {', '.join(columns)} FROM roots"
    )


def views(family: str = LEGACY) -> tuple[tuple[str, str], ...]:
    """A family's views: (name, body), the flat one first."""
    names = tables(family)
    return (names.flat, flat_view(family)), (names.rates, rates_view(family))


#: The legacy family's views (PostgreSQL migrations 2 and 4 made them, 8 remade them).
VIEWS: tuple[tuple[str, str], ...] = views()
