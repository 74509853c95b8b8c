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
#: The Glean family's rates: child processes other than content and GPU in one column.
GLEAN_RATES_BY_CHANNEL = """
SELECT dimensions->>'channel' AS channel,
       sum(stats->>'usage_hours') AS usage_hours,
       1000 * sum(stats->>'main_crashes') / sum(stats->>'usage_hours') AS main,
       1000 * sum(stats->>'content_crashes') / sum(stats->>'usage_hours') AS content,
       1000 * sum(stats->>'content_shutdown_crashes') / sum(stats->>'usage_hours') AS shutdown,
       1000 * sum(stats->>'gpu_crashes') / sum(stats->>'usage_hours') AS gpu,
       1000 * sum(coalesce(stats->>'rdd_crashes', 0) + coalesce(stats->>'socket_crashes', 0)
                  + coalesce(stats->>'utility_crashes', 0)
                  + coalesce(stats->>'gmplugin_crashes', 0)
                  + coalesce(stats->>'other_crashes', 0)) / sum(stats->>'usage_hours') AS other
FROM glean_crash_aggregates
WHERE submission_date BETWEEN ? AND ?
GROUP BY channel
ORDER BY channel
"""
#: Glean pings hold less usage than legacy main pings (a baseline ping is one session): the
#: demo's bad nightly build has a few hundred hours, judged from this many on.
GLEAN_MIN_USAGE_HOURS = 100.0


def run_demo(folder: Path, db_url: str | None, days: int, pings: int, workers: int,
             family: str = "legacy") -> str:
    """Generate `days` days of pings of `family` in `folder`, fill the store, return the rates
    table and the comparison of the generated bad nightly build with the nightly before it."""
    from .synth import generate_store
    from .synth_glean import generate_glean_store

    db_url = db_url or DEFAULT_DB
    if not db_url.startswith("sqlite:"):
        from .errors import UsageError

        raise UsageError("the demo writes to SQLite: give --db sqlite:///path.db")
    refuse_a_store_of_real_data(db_url)
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    if family == "glean":
        # decoded pings: as BigQuery rows, baseline pings without usage metrics would count
        # in other_doc_type (SPEC 8 rule 1: no key tells their type), a puzzle in a demo
        summary = generate_glean_store(folder / "pings", first, last, pings, seed=2016,
                                       form="decoded")
    else:
        summary = generate_store(folder / "pings", first, last, pings, seed=2016, heavy=False)
    print(f"generated {summary.pings:,} pings for {first} to {last} in {summary.out_dir}")
    settings = FillSettings(str(folder / "pings"), first, last, db_url=db_url, workers=workers,
                            family=family)
    report = fill(settings, ConsoleReporter())
    if report.failed:
        from .errors import CrashAggregatesError

        raise CrashAggregatesError("the demo could not fill " + ", ".join(map(str, report.failed)))
    table = _rates_table(sqlite_path(db_url), first.isoformat(), last.isoformat(), family)
    return table + "\n\n" + _bad_build(db_url, summary.regression_build_id, family)


#: The demo's ping folders are temporary folders named so: a run whose input was one is a demo's.
DEMO_FOLDER_PREFIX = "crash-aggregates-demo-"


def refuse_a_store_of_real_data(db_url: str) -> None:
    """The demo replaces the last days' rows of its store: never those of a store a real fill
    wrote (the default ./crash_aggregates.db is also fill's default)."""
    import sqlite3

    from .errors import UsageError
    from .redact import redact_url

    path = sqlite_path(db_url)
    if not path.exists():
        return
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            run_tables = [name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%_runs'")]
            real = sum(db.execute(f'SELECT count(*) FROM "{table}" '  # names from the schema
                                  "WHERE instr(input_url, ?) = 0",
                                  (DEMO_FOLDER_PREFIX,)).fetchone()[0] for table in run_tables)
    except sqlite3.Error:
        real = 1  # not a SQLite database the demo made
    if real:
        raise UsageError(f"{redact_url(db_url)} holds data the demo did not write, which it "
                         "would replace: give the demo a store of its own, e.g. "
                         "--db sqlite:///demo.db")


def _bad_build(db_url: str, build_id: str, family: str = "legacy") -> str:
    """What `crash-aggregates compare` says of the build generated to crash more."""
    from .errors import CrashAggregatesError
    from .render import render_comparison
    from .reports import compare_builds
    from .stores.base import ReadableStore, open_store

    store = cast(ReadableStore, open_store(db_url, family=family))  # the demo's is SQLite
    options = ""
    try:
        if family == "glean":
            options = f" --family glean --min-usage-hours {GLEAN_MIN_USAGE_HOURS:g}"
            report = compare_builds(store, ("build_id", build_id),
                                    min_usage_hours=GLEAN_MIN_USAGE_HOURS)
        else:
            report = compare_builds(store, ("build_id", build_id))
    except CrashAggregatesError as exc:  # a window too short to hold it and the one before
        return f"No comparison of the bad nightly build {build_id}: {exc}"
    finally:
        store.close()
    return "\n".join([
        "One nightly build was generated to crash more. compare finds it:",
        "",
        f"  crash-aggregates compare --db {db_url}{options} --candidate build_id={build_id}",
        "",
        render_comparison(report, "table"),
    ])


def _rates_table(path: Path, first: str, last: str, family: str = "legacy") -> str:
    import sqlite3

    glean = family == "glean"
    table = "glean_crash_aggregates" if glean else "crash_aggregates"
    columns = ("main", "content", "shutdown", "gpu", "other") if glean else (
        "main", "content", "plugin", "gpu")
    with sqlite3.connect(path) as db:
        rows = db.execute(GLEAN_RATES_BY_CHANNEL if glean else RATES_BY_CHANNEL,
                          (first, last)).fetchall()
    header = f"{'channel':<10} {'usage hours':>12}" + "".join(
        f" {name:>8}" for name in columns)
    lines = [
        "",
        f"Crashes per 1,000 usage hours, submission dates {first} to {last}:",
        "",
        header,
        "-" * len(header),
    ]
    for channel, hours, *rates in rows:
        cells = " ".join("       -" if rate is None else f"{rate:8.2f}" for rate in rates)
        lines.append(f"{channel or '(none)':<10} {hours or 0:12,.0f} {cells}")
    if glean:
        lines += ["", "(main includes startup crashes; shutdown: content processes killed "
                  "at shutdown, ShutDownKill; other: rdd, socket, utility, gmplugin and "
                  "unknown processes)"]
    lines += [
        "",
        f"The aggregates are in {path.resolve()} (table {table}, runs in",
        f"{table}_runs). Query them with any SQLite client, for example:",
        "",
        f"  sqlite3 {path} \"SELECT dimensions->>'channel', "
        "1000 * sum(stats->>'main_crashes') / sum(stats->>'usage_hours') "
        f"FROM {table} GROUP BY 1\"",
    ]
    return "\n".join(lines)
