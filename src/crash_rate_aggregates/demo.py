"""`crash-aggregates demo`: sample pings in, a table of crash rates out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from .fill import FillSettings, fill
from .progress import ConsoleReporter
from .stores.base import DEFAULT_DB
from .stores.sqlite import sqlite_path

RATES_BY_CHANNEL = """
SELECT dimensions->>'channel' AS channel,
       sum(stats->>'usage_hours') AS usage_hours,
       1000 * sum(stats->>'main_crashes') / sum(stats->>'usage_hours') AS main,
       1000 * sum(stats->>'content_crashes') / sum(stats->>'usage_hours') AS content,
       1000 * sum(stats->>'plugin_crashes') / sum(stats->>'usage_hours') AS plugin,
       1000 * sum(stats->>'gpu_crashes') / sum(stats->>'usage_hours') AS gpu
FROM crash_aggregates
WHERE submission_date BETWEEN ? AND ?
GROUP BY channel
ORDER BY channel
"""


def run_demo(folder: Path, db_url: str | None, days: int, pings: int, workers: int) -> str:
    """Generate `days` days of pings in `folder`, fill the store, return the rates table and
    the comparison of the generated bad nightly build with the nightly before it."""
    from .synth import generate_store

    db_url = db_url or DEFAULT_DB
    if not db_url.startswith("sqlite:"):
        from .errors import UsageError

        raise UsageError("the demo writes to SQLite: give --db sqlite:///path.db")
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    summary = generate_store(folder / "pings", first, last, pings, seed=2016, heavy=False)
    print(f"generated {summary.pings:,} pings for {first} to {last} in {summary.out_dir}")
    settings = FillSettings(str(folder / "pings"), first, last, db_url=db_url, workers=workers)
    report = fill(settings, ConsoleReporter())
    if report.failed:
        from .errors import CrashAggregatesError

        raise CrashAggregatesError("the demo could not fill " + ", ".join(map(str, report.failed)))
    table = _rates_table(sqlite_path(db_url), first.isoformat(), last.isoformat())
    return table + "\n\n" + _bad_build(db_url, summary.regression_build_id)


def _bad_build(db_url: str, build_id: str) -> str:
    """What `crash-aggregates compare` says of the build generated to crash more."""
    from .errors import CrashAggregatesError
    from .render import render_comparison
    from .reports import compare_builds
    from .stores.base import ReadableStore, open_store

    store = cast(ReadableStore, open_store(db_url))  # the demo's store is SQLite
    try:
        report = compare_builds(store, ("build_id", build_id))
    except CrashAggregatesError as exc:  # a window too short to hold it and the one before
        return f"No comparison of the bad nightly build {build_id}: {exc}"
    finally:
        store.close()
    return "\n".join([
        "One nightly build was generated to crash more. compare finds it:",
        "",
        f"  crash-aggregates compare --db {db_url} --candidate build_id={build_id}",
        "",
        render_comparison(report, "table"),
    ])


def _rates_table(path: Path, first: str, last: str) -> str:
    import sqlite3

    with sqlite3.connect(path) as db:
        rows = db.execute(RATES_BY_CHANNEL, (first, last)).fetchall()
    header = f"{'channel':<10} {'usage hours':>12}" + "".join(
        f" {name:>8}" for name in ("main", "content", "plugin", "gpu"))
    lines = [
        "",
        f"Crashes per 1,000 usage hours, submission dates {first} to {last}:",
        "",
        header,
        "-" * len(header),
    ]
    for channel, hours, *rates in rows:
        cells = " ".join(f"{rate:8.2f}" for rate in rates)
        lines.append(f"{channel or '(none)':<10} {hours:12,.0f} {cells}")
    lines += [
        "",
        f"The aggregates are in {path.resolve()} (table crash_aggregates, runs in",
        "crash_aggregates_runs). Query them with any SQLite client, for example:",
        "",
        f"  sqlite3 {path} \"SELECT dimensions->>'channel', "
        "1000 * sum(stats->>'main_crashes') / sum(stats->>'usage_hours') "
        "FROM crash_aggregates GROUP BY 1\"",
    ]
    return "\n".join(lines)
