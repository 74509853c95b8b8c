"""Crash-free users in plain PostgreSQL: a table kept up to date at fill time.

PostgreSQL cannot merge HLL sketches without an extension, so `fill` does it: in the
transaction that replaces a submission date's rows, the crash-free users of every activity
date those rows touch (before and after) are computed again from the sketches of all stored
rows of that activity date, whatever their submission date, by channel, version and OS, and
replace that activity date's rows of the table. A client active on that day counts once, late
pings included. (`rates` merges the sketches itself for any other selection.)

    SELECT activity_date, channel, build_version, os_name, clients, crashing_clients,
           crash_free_users, crash_free_users_lower, crash_free_users_upper
    FROM crash_free_users_daily
    WHERE channel = 'release' AND activity_date >= current_date - 28
    ORDER BY activity_date, build_version;
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from .. import families, rates, sketches
from .queries import Tables

#: The groups of the table: the dimensions release managers chart crash-free users by.
DIMENSIONS = ("channel", "build_version", "os_name")
#: An advisory lock a family (its namespace, then the family's index): two fills of different
#: dates of one family that touch one activity date recompute it one after the other, each
#: seeing the other's committed rows; another family's fill does not wait.
LOCK_NAMESPACE = 0x43465544


def table(names: Tables) -> str:
    """The family's table: crash_free_users_daily, glean_crash_free_users_daily."""
    return f"{names.rows.removesuffix('crash_aggregates')}crash_free_users_daily"


def schema(names: Tables) -> str:
    name = table(names)
    return f"""
    CREATE TABLE IF NOT EXISTS {name} (
        activity_date date NOT NULL,
        {", ".join(f"{d} text" for d in DIMENSIONS)},
        clients bigint NOT NULL,
        crashing_clients bigint NOT NULL,
        crash_free_users double precision,
        crash_free_users_lower double precision,
        crash_free_users_upper double precision
    );
    CREATE INDEX IF NOT EXISTS {name}_activity_date ON {name} (activity_date);
    """


def activity_dates(cursor: Any, names: Tables, submission_date: date) -> set[date]:
    """The activity dates of a submission date's stored rows."""
    cursor.execute(f"SELECT DISTINCT activity_date FROM {names.rows} "
                   "WHERE submission_date = %s", (submission_date,))
    return {row[0] for row in cursor.fetchall()}


def refresh(cursor: Any, names: Tables, days: Iterable[date]) -> None:
    """Recompute the table's rows of these activity dates from every stored row's sketches
    (inside the caller's transaction)."""
    days = sorted(set(days))
    if not days:
        return
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                   (LOCK_NAMESPACE, list(families.FAMILIES).index(names.family)))
    dims = ", ".join(f"dimensions->>'{d}'" for d in DIMENSIONS)
    cursor.execute(f"SELECT activity_date, {dims}, clients_sketch, main_crashes_clients_sketch "
                   f"FROM {names.rows} WHERE activity_date = ANY(%s)", (days,))
    groups: dict[tuple[Any, ...], tuple[list[bytes | None], list[bytes | None]]] = {}
    for activity, *values, clients, crashing in cursor.fetchall():
        seen, crashed = groups.setdefault((activity, *values), ([], []))
        seen.append(None if clients is None else bytes(clients))
        crashed.append(None if crashing is None else bytes(crashing))
    name = table(names)
    cursor.execute(f"DELETE FROM {name} WHERE activity_date = ANY(%s)", (days,))
    records = []
    for group, (seen, crashed) in sorted(groups.items(), key=lambda item: str(item[0])):
        clients = sketches.merge(seen).count
        crashing = min(sketches.merge(crashed).count, clients)
        share = rates.incidence(crashing, clients)
        free = share.complement() if share else None
        records.append((*group, clients, crashing,
                        *((free.value, free.lower, free.upper) if free else (None,) * 3)))
    if records:
        marks = ", ".join(["%s"] * len(records[0]))
        cursor.executemany(f"INSERT INTO {name} VALUES ({marks})", records)
