"""The `crash-aggregates` command: one thin function per command."""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from . import __version__, faults, interrupts
from .errors import CrashAggregatesError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def parse_date(text: str) -> date:
    """`YYYY-MM-DD` or `YYYYMMDD`."""
    from .rules import parse_submission_date

    day = parse_submission_date(text)
    if day is None:
        raise click.BadParameter(f"{text!r} is not a date: use YYYY-MM-DD or YYYYMMDD")
    return day


class DateParam(click.ParamType):  # type: ignore[type-arg]
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return parse_date(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


DATE = DateParam()


def date_range_options(func: F) -> F:
    func = click.option("--to", "--max-submission-date", "last", type=DATE, default=None,
                        help="Last submission date (default: yesterday, UTC).")(func)
    func = click.option("--from", "--min-submission-date", "first", type=DATE, default=None,
                        help="First submission date (default: yesterday, UTC).")(func)
    return func


def db_option(func: F) -> F:
    func = click.option(
        "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
        default=None, help="TOML settings file (default ./crash-aggregates.toml if present); "
        "flags, then CRASH_AGGREGATES_* variables, then this file: docs/operations.md.")(func)
    return click.option(
        "--db", "db_url", default=None, metavar="URL",
        help="Output store: sqlite:///path.db (default ./crash_aggregates.db) or "
             "postgresql://user@host/db (password from the URL, PGPASSWORD or ~/.pgpass).")(func)


def settings_from(config_path: Path | None, **flags: object) -> Any:
    """The one settings model: flags > CRASH_AGGREGATES_* > TOML file > defaults."""
    from .settings import resolve

    return resolve(flags, config_path=config_path)


FILL_STARTS = faults.define("cli.fill_starts", "fill begins: its settings not read, the job "
                            "not imported (a SIGTERM here once killed the process, status -15)")
INTERRUPTED_EXIT = faults.define("cli.interrupted_exit", "fill was interrupted and is about to "
                                 "say so and exit 130")


class _Stopping:
    """Whether the command is already stopping (Ctrl-C or SIGTERM came)."""

    now = False


def _on_sigterm(signum: int, frame: object) -> None:
    if _Stopping.now:
        return  # already stopping: this one changes nothing
    _Stopping.now = True
    if not interrupts.hold():  # else it comes at the end of the held section
        raise KeyboardInterrupt


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C, as Python's own handler, but never inside a held section (`interrupts`)."""
    if not interrupts.hold():
        raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A scheduler's SIGTERM stops the job as Ctrl-C does: cleanly, between dates' writes.

    Only the first SIGTERM interrupts. Later ones (a scheduler that repeats it, an impatient
    operator) are ignored while the job stops, so that they cannot cut the clean stop short
    or end the process with another status than 130; so is any SIGTERM once the command stops
    for Ctrl-C. Once stopping, the handler stays until the process exits: the default action
    (death by signal, status -15) never comes back.
    """
    _Stopping.now = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # an inherited SIG_IGN stays
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        if not _Stopping.now:
            signal.signal(signal.SIGTERM, previous)
            if previous_int is signal.default_int_handler:
                signal.signal(signal.SIGINT, previous_int)


def _stops_cleanly(command: F) -> F:
    """A command that SIGTERM stops as Ctrl-C does, with status 130, from its first line on
    (the handler used to come only once settings were read and the job imported)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _sigterm_as_interrupt():
            try:
                faults.fault_point(FILL_STARTS)
                return command(*args, **kwargs)
            except KeyboardInterrupt:  # before the job started: nothing was written
                _exit_interrupted([])
    return cast(F, run)


class _Written:
    """A reporter, and the dates it was told were written: the job's report is lost when an
    interrupt leaves `fill` before it returns (while stores close), these are not."""

    def __init__(self) -> None:
        self._reporter: Any = None
        self.dates: list[str] = []

    def wrap(self, reporter: Any) -> _Written:
        self._reporter = reporter
        return self

    def plan(self, dates: int) -> None:
        self._reporter.plan(dates)

    def reading(self, what: str, files: list[Any]) -> Any:
        return self._reporter.reading(what, files)

    def date_done(self, report: Any) -> None:
        if report.status == "completed":
            self.dates.append(report.submission_date.isoformat())
        self._reporter.date_done(report)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)


def _exit_interrupted(written: list[str]) -> None:
    """Ctrl-C or SIGTERM: which dates were written, then status 130 (README)."""
    _Stopping.now = True  # a SIGTERM from here on is ignored
    # ...also once the interpreter finalizes: it resets every Python-level handler to the
    # default action there, and a SIGTERM in that window ended the process with -15. Only an
    # ignored disposition survives finalization.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faults.fault_point(INTERRUPTED_EXIT)
    click.echo(f"interrupted: {len(written)} date{'' if len(written) == 1 else 's'} written"
               + (f" ({', '.join(written)})" if written else "")
               + "; the date in progress was not written", err=True)
    # Under `python -m`, CPython ends a process that saw a KeyboardInterrupt leave a string
    # exec (a dataclass being defined when the SIGTERM came), even one caught since, by
    # SIGINT (-2) after the SystemExit, not with 130. A string exec of its own clears that
    # flag; no interrupt can follow it, both signals are ignored.
    exec("")  # noqa: S102
    sys.exit(130)


def _fail(message: str, status: int = 2) -> None:
    from .redact import scrub

    click.echo(f"error: {' '.join(scrub(message).split())}", err=True)
    sys.exit(status)


def _fail_on(exc: CrashAggregatesError) -> None:
    """Usage errors exit 2, everything else (a store that is down...) 1."""
    _fail(str(exc), 2 if isinstance(exc, UsageError) else 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crash-aggregates")
def cli() -> None:
    """Daily crash-rate aggregates from browser telemetry pings.

    Reads a day of main and crash pings, sums usage hours and crash counts per combination of
    dimensions (channel, build, OS, country...) and replaces that day's rows in a database,
    where crashes per 1,000 usage hours can be charted by anything.

    Start with `crash-aggregates demo`.
    """


@cli.command()
@click.option("--input", "input_url", default=None, metavar="STORE",
              help="Ping store: a folder or URL (file://, s3://, ...). Required, here or in "
              "the settings.")
@date_range_options
@db_option
@click.option("--parquet", "parquet_url", default=None, metavar="URL",
              help="Also (or only, without --db) write Parquet partitions under "
              "URL/crash_aggregates/v1/ (Glean: URL/glean_crash_aggregates/v1/; a folder, "
              "s3://, gs://, az://).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes reading files (default: the CPU count).")
@click.option("--no-dedupe", is_flag=True, help="Keep pings whose document id was seen.")
@click.option("--sample-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True,
              help="Keep pings with meta.sampleId < 100 * F (pings without one are dropped).")
@click.option("--layout", type=click.Choice(["auto", "partitioned", "flat"]), default="auto",
              show_default=True, help="Ping store layout (auto: partitioned when date "
              "folders exist).")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
              show_default=True, help="local: worker processes on this machine; spark: a "
              "SparkSession (needs the spark extra).")
@click.option("--spark-master", default=None, metavar="URL",
              help="Spark master (default: spark-submit's, else local[*]).")
@click.option("--skip-existing", is_flag=True,
              help="Skip dates whose last run completed on the same input (resume a backfill).")
@click.option("--parallel-dates", type=click.IntRange(min=1), default=None,
              help="Dates read at once by the worker pool (partitioned stores; default 1).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="json: one JSON object per date on stdout, no progress (default text).")
@click.option("--on-corrupt-file", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="A file that cannot be read or inflated fails its date, "
              "or is skipped and counted in corrupt_files.")
@click.option("--max-aggregates", type=click.IntRange(min=1), default=None,
              help="A memory budget: a date with more distinct aggregates fails, so the fill "
              "stops before a day's aggregates outgrow memory (and garbage dimension values "
              "are caught). Default: 300,000 per GB of this machine's memory or cgroup limit "
              "(60% of it at ~2 KB an aggregate), shared by the dates read at once: ~7.5 "
              "million on 24 GB, ~1.2 million on 4 GB. --engine spark has no such limit.")
@click.option("--spark-postgres-load", type=click.Choice(["staging", "stream"]), default=None,
              help="--engine spark into PostgreSQL: the executors COPY the rows into a "
              "staging table swapped in by one transaction (staging, the default), or the "
              "rows pass through the driver a partition at a time (stream: for executors "
              "without a route to the database).")
@click.option("--family", default=None, metavar="legacy|glean",
              help="Ping family: legacy (crash and main pings, table crash_aggregates) or "
              "glean (Glean crash and baseline pings, table glean_crash_aggregates); default "
              "legacy. Each family has its own rows and runs.")
@_stops_cleanly
def fill(input_url: str | None, first: date | None, last: date | None, db_url: str | None,
         config_path: Path | None, parquet_url: str | None, workers: int | None,
         no_dedupe: bool, sample_fraction: float, layout: str, engine: str,
         spark_master: str | None, skip_existing: bool, parallel_dates: int | None,
         log_format: str | None, on_corrupt_file: str, max_aggregates: int | None,
         spark_postgres_load: str | None, family: str | None) -> None:
    """Aggregate the pings of each submission date and replace its rows.

    Each date is written in one transaction, or not at all; the date's summary line lists its
    counters. Exits 1 when any date failed, naming them on the last line.

    Example:

        crash-aggregates fill --input ./pings --from 2016-03-01 --to 2016-03-14
    """
    from .budget import default_max_aggregates
    from .fill import FillSettings
    from .fill import fill as run_fill
    from .progress import ConsoleReporter, JsonReporter

    first = first or yesterday()
    last = last or yesterday()
    written = _Written()
    try:
        given = settings_from(config_path, input=input_url, db=db_url, parquet=parquet_url,
                              workers=workers, parallel_dates=parallel_dates,
                              log_format=log_format, family=family)
        if not given.input:
            raise UsageError("no ping store: give --input (or input in the settings)")
        # --db, --parquet or neither: the default SQLite file only when neither is set
        db = given.db if given.sources["db"] != "default" or not given.parquet else None
        settings = FillSettings(
            input_url=given.input, first=first, last=last, db_url=db,
            parquet_url=given.parquet, parallel_dates=given.parallel_dates,
            workers=given.workers or os.cpu_count() or 1, dedupe=not no_dedupe,
            sample_fraction=sample_fraction, layout=layout,  # type: ignore[arg-type]
            engine=engine, spark_master=spark_master,  # type: ignore[arg-type]
            skip_existing=skip_existing,
            on_corrupt_file=on_corrupt_file,  # type: ignore[arg-type]
            max_aggregates=max_aggregates or default_max_aggregates(
                given.parallel_dates if engine == "local" else 1),
            spark_postgres_load=spark_postgres_load,  # type: ignore[arg-type]
            family=given.family or "legacy",
        )
        reporter = written.wrap(
            JsonReporter() if given.log_format == "json" else ConsoleReporter())
        report = run_fill(settings, reporter)  # SIGTERM is Ctrl-C here: see _stops_cleanly
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    except KeyboardInterrupt:  # it left the job before its report: while stores opened, closed
        _exit_interrupted(written.dates)
    if report.interrupted:
        _exit_interrupted([d.submission_date.isoformat() for d in report.dates
                           if d.status == "completed"])
    if report.failed:
        click.echo("failed dates: " + ", ".join(d.isoformat() for d in report.failed), err=True)
        sys.exit(1)


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the ping store into.")
@date_range_options
@click.option("--pings", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Lines per submission date.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed gives the same files.")
@click.option("--layout", type=click.Choice(["partitioned", "flat"]), default="partitioned",
              show_default=True, help="partitioned: a folder submission_date=YYYY-MM-DD per "
              "day; flat: files pings-NNNN.jsonl.gz (some .zst, one .ndjson) where a quarter "
              "of a day's pings arrive in the next day's file.")
@click.option("--files-per-day", type=click.IntRange(min=1), default=4, show_default=True,
              help="Files each submission date is spread over.")
@click.option("--light", is_flag=True,
              help="Leave out the histograms the job does not read (pings of ~7 KB, not 60-290 "
              "KB; legacy pings only).")
@click.option("--family", type=click.Choice(["legacy", "glean"]), default="legacy",
              show_default=True, help="legacy: Telemetry main and crash pings; glean: Glean "
              "baseline and crash pings of Firefox desktop and Android (fill --family glean).")
@click.option("--form", type=click.Choice(["decoded", "bigquery", "mixed"]), default=None,
              help="Glean pings only: decoded JSON (dotted metric names), BigQuery rows "
              "(underscored names, no document type) or mixed, line by line  [default: mixed].")
def generate(out_dir: Path, first: date | None, last: date | None, pings: int, seed: int,
             layout: str, files_per_day: int, light: bool, family: str,
             form: str | None) -> None:
    """Write a realistic synthetic ping store.

    Clients on several channels, OSes and builds with different crash rates, a few in crash
    loops, and a small share of the messy input the rules deal with.

    Example:

        crash-aggregates generate --out ./pings --from 2016-03-08 --to 2016-03-14 --light

        crash-aggregates generate --family glean --out ./glean-pings --from 2025-06-01
    """
    from .synth import generate_store
    from .synth_glean import generate_glean_store

    first = first or last or yesterday()
    last = last or first
    if first > last:
        _fail(f"--from {first} is after --to {last}")
    _refuse_to_mix_stores(out_dir)
    if family == "glean":
        if light:
            _fail("--light is for legacy pings: Glean pings are light already")
            return
        summary = generate_glean_store(out_dir, first, last, pings, seed=seed,
                                       layout=layout,  # type: ignore[arg-type]
                                       files_per_day=files_per_day, form=form or "mixed")
    elif form is not None:
        _fail("--form is for Glean pings: add --family glean")
        return
    else:
        summary = generate_store(out_dir, first, last, pings, seed=seed,
                                 layout=layout,  # type: ignore[arg-type]
                                 files_per_day=files_per_day, heavy=not light)
    files = "1 file" if summary.files == 1 else f"{summary.files:,} files"
    click.echo(f"wrote {summary.pings:,} pings in {files} "
               f"({summary.json_bytes / 1e6:,.1f} MB of JSON) to {summary.out_dir}")


def _refuse_to_mix_stores(out_dir: Path) -> None:
    """A folder that holds anything already would end up a mix of two stores (a smaller
    --files-per-day leaves the old part files beside the new ones): generate writes new ones."""
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"{out_dir} is a file: give --out a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        _fail(f"{out_dir} is not empty: give --out a new or empty folder (or remove it first), "
              "so that the store holds one generation of pings")


@cli.command()
@db_option
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True,
              help="Submission dates of sample pings, ending yesterday (UTC).")
@click.option("--pings", type=click.IntRange(min=10), default=None,
              help="Pings per day (default 5,000 legacy, 20,000 Glean pings: enough usage of "
              "the bad nightly build to judge it; a Glean baseline ping is one session).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the CPU count).")
@click.option("--family", type=click.Choice(["legacy", "glean"]), default="legacy",
              show_default=True, help="Ping family to generate and fill: legacy (main and "
              "crash pings) or glean (baseline and crash pings, table glean_crash_aggregates).")
def demo(db_url: str | None, config_path: Path | None, days: int, pings: int | None,
         workers: int | None, family: str) -> None:
    """Generate a week of sample pings, fill the store, print crash rates by channel and the
    comparison of the generated bad nightly build with the one before (a regression).

    Example:

        crash-aggregates demo

        crash-aggregates demo --family glean --db sqlite:///glean-demo.db
    """
    from .demo import run_demo

    try:
        db_url = settings_from(config_path, db=db_url).db
        with tempfile.TemporaryDirectory(prefix="crash-aggregates-demo-") as folder:
            pings = pings or (20_000 if family == "glean" else 5000)
            text = run_demo(Path(folder), db_url, days, pings, workers or os.cpu_count() or 1,
                            family)
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    click.echo(text)


def read_range_options(func: F) -> F:
    """--from/--to of the commands that read the store: open ends mean every stored date."""
    func = click.option("--to", "--max-submission-date", "last", type=DATE, default=None,
                        help="Last date (default: the last stored one).")(func)
    func = click.option("--from", "--min-submission-date", "first", type=DATE, default=None,
                        help="First date (default: the first stored one). Without --from and "
                        "--to every stored date counts.")(func)
    return func


def _gathered(name: str, options: list[tuple[str, Callable[[F], F]]]) -> Callable[[F], F]:
    """Options that travel together (alerting, watchdog thresholds): the command receives them
    as one dict `name`, setting name to value, for `settings_from`."""
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = {setting: kwargs.pop(setting) for setting, _ in options}
            return func(*args, **kwargs)
        command = cast(F, run)
        for _, option in reversed(options):
            command = option(command)
        return command
    return decorate


#: How `compare` and `watchdog` alert (docs/operations.md): each also a setting.
alert_options = _gathered("alerting", [
    ("webhook_url", click.option("--webhook-url", default=None, metavar="URL",
                                 help="Alert by JSON POST to this URL.")),
    ("smtp_url", click.option("--smtp-url", default=None, metavar="URL",
                              help="Alert by mail: smtp[s]://user:pw@host:port.")),
    ("email_to", click.option("--email-to", multiple=True, metavar="ADDRESS",
                              help="Alert recipients (repeatable, or comma-separated).")),
    ("email_from", click.option("--email-from", default=None, metavar="ADDRESS",
                                help="Sender of alert mail (default crash-aggregates@localhost).")),
])

#: The watchdog's thresholds (docs/operations.md): each also a setting.
threshold_options = _gathered("thresholds", [
    ("watchdog_weeks", click.option(
        "--watchdog-weeks", type=int, default=None,
        help="Trailing weeks of the same weekday each date is compared with (2 or more, "
        "default 4).")),
    ("watchdog_volume_ratio", click.option(
        "--watchdog-volume-ratio", type=float, default=None,
        help="Pings or usage hours below this share of the usual fail (default 0.5; 0: off).")),
    ("watchdog_ignored_jump", click.option(
        "--watchdog-ignored-jump", type=float, default=None,
        help="A share of ignored lines this much above the usual fails (default 0.05).")),
    ("watchdog_rows_ratio", click.option(
        "--watchdog-rows-ratio", type=float, default=None,
        help="Rows written below this share of the usual fail (default 0.5; 0: off).")),
])


def family_option(func: F) -> F:
    """--family of the commands that read the store."""
    return click.option(
        "--family", default=None, metavar="legacy|glean",
        help="Ping family to read: legacy (crash_aggregates) or glean "
        "(glean_crash_aggregates). Default: the one family the store holds, else legacy.")(func)


def store_family(db_url: str | None, family: str | None) -> str:
    """The family a reader reads: the one given, else the only one the store holds, else
    legacy (an empty or missing store: its own error comes when it is opened)."""
    from .stores.base import families_in

    if family:
        return family
    found = families_in(db_url)
    return found[0] if len(found) == 1 else "legacy"


def _readable_store(db_url: str | None, family: str | None = None) -> Any:
    from .stores.base import open_store

    family = store_family(db_url, family)
    # A reader never makes an empty store.
    store = open_store(db_url, create=False, family=family)
    if not hasattr(store, "sum_stats"):
        store.close()
        raise UsageError("rates are read from SQLite or PostgreSQL: give --db")
    return store


def _build_side(text: str, option: str) -> tuple[str, str]:
    """A side of `compare`: a build or a version, never another dimension (`os_name=Linux`
    against Darwin is no release comparison)."""
    from .reports import parse_pair

    dimension, value = parse_pair(text)
    if dimension not in ("build_id", "build_version"):
        raise UsageError(f"{option} compares builds: write build_id=... or build_version=..., "
                         f"not {dimension}=")
    return dimension, value


def _ordered(first: date | None, last: date | None) -> None:
    """--from after --to selects nothing: say so instead of "no aggregates match"."""
    if first and last and first > last:
        raise UsageError(f"--from {first} is after --to {last}")


def _where(pairs: tuple[str, ...]) -> dict[str, str]:
    """--where DIM=VALUE, repeated for several dimensions. One dimension given twice would
    silently keep the last value: a usage error instead."""
    from .reports import parse_pair

    found: dict[str, str] = {}
    for dimension, value in map(parse_pair, pairs):
        if dimension in found:
            raise UsageError(f"--where names {dimension} twice ({found[dimension]!r} and "
                             f"{value!r}): an aggregate has one value of each dimension")
        found[dimension] = value
    return found


@cli.command()
@db_option
@click.option("--by", "by", default="channel", show_default=True, metavar="DIM[,DIM...]",
              help="Dimensions to group by (none: one overall row).")
@read_range_options
@click.option("--where", "where", multiple=True, metavar="DIM=VALUE",
              help="Keep only aggregates with this dimension value (repeatable).")
@click.option("--date", "date_kind", type=click.Choice(["submission", "activity"]),
              default="submission", show_default=True, help="Which date --from/--to filter.")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True,
              help="table for people; csv or json (counts as integers) for scripts.")
@family_option
def rates(db_url: str | None, config_path: Path | None, by: str, first: date | None,
          last: date | None,
          where: tuple[str, ...], date_kind: str, output: str, family: str | None) -> None:
    """Crash rates per 1,000 usage hours with 95% intervals, per group.

    Intervals use the client-level sums (robust to clients in crash loops): exact Poisson
    limits of the effective count; see docs/rates.md. Without --from/--to, every stored date.

    Example:

        crash-aggregates rates --by channel,os_name --from 2016-03-08 --to 2016-03-14
    """
    import dataclasses

    from .render import render_rates
    from .reports import rate_rows
    from .stores.queries import StatsQuery

    try:
        _ordered(first, last)
        # Names no family knows fail here, before the store is opened.
        query = StatsQuery(by=tuple(d for d in by.split(",") if d), first=first, last=last,
                           where=_where(where), date_kind=date_kind)  # type: ignore[arg-type]
        given = settings_from(config_path, db=db_url, family=family)
        store = _readable_store(given.db, given.family)
        try:
            query = dataclasses.replace(query, family=store.family)  # checks its dimensions
            rows = rate_rows(store, query)
        finally:
            store.close()
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    click.echo(render_rates(rows, list(query.by), output))


@cli.command()
@db_option
@click.option("--candidate", required=True, metavar="DIM=VALUE",
              help="The build or version to judge, e.g. build_id=20160302030211.")
@click.option("--baseline", default=None, metavar="DIM=VALUE",
              help="What to judge it against (default: the previous value on its channel).")
@click.option("--channel", default=None, help="Channel (default: the candidate's main one).")
@read_range_options
@click.option("--days-since-release", type=click.IntRange(min=1), default=None,
              help="Compare each side's first N activity days, counted from its build date "
              "(a build_version's first build id), instead of --from/--to.")
@click.option("--min-usage-hours", type=float, default=None,
              help="Below this on either side: 'not enough usage yet', no number (default "
              "1000).")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="table for people; json for scripts (the exit status "
              "is the same).")
@alert_options
@family_option
def compare(db_url: str | None, config_path: Path | None, candidate: str,
            baseline: str | None, channel: str | None, first: date | None, last: date | None,
            days_since_release: int | None, min_usage_hours: float | None,
            output: str, alerting: dict[str, Any], family: str | None) -> None:
    """Is a build or version crashing more than the one before? Rate ratios per crash type.

    Without --from/--to, every stored submission date. Per crash type one test gives the
    p-value, the 95% interval of the rate ratio and the verdict (regression when p < 0.05 and
    the candidate is higher); see docs/rates.md.

    Exit status, so scripts can gate on it: 0 no regression, 1 a crash type regressed, 2 a
    usage error (including no earlier build to compare with: give --baseline), 3 no data for
    the candidate or the baseline in the selected dates (a typo, a build not ingested yet).

    Example:

        crash-aggregates compare --db sqlite:///week.db --candidate build_id=20160309161603
    """
    from .render import render_comparison
    from .reports import NoDataError, compare_builds

    try:
        _ordered(first, last)
        if days_since_release and (first or last):
            raise UsageError("--days-since-release chooses each side's dates from its build "
                             "date: leave out --from and --to")
        judged = _build_side(candidate, "--candidate")
        against = _build_side(baseline, "--baseline") if baseline else None
        given = settings_from(config_path, db=db_url, min_usage_hours=min_usage_hours,
                              family=family, **alerting)
        store = _readable_store(given.db, given.family)
        try:
            report = compare_builds(
                store, judged, against,
                channel=channel, first=first, last=last, days_since_release=days_since_release,
                min_usage_hours=given.min_usage_hours)
        finally:
            store.close()
    except NoDataError as exc:
        _fail(str(exc), NO_DATA_STATUS)  # never "no regression": a typo must not pass a gate
        return
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    text = render_comparison(report, output)
    click.echo(text)
    if report.regression:
        _alert(given, f"crash regression: {report.dimension} {report.candidate}", text,
               report.as_dict())
        sys.exit(1)


#: `compare`'s exit status when the candidate or the baseline has no row in the dates.
NO_DATA_STATUS = 3


def _alert(settings: Any, subject: str, text: str, payload: dict[str, Any]) -> None:
    """Send to the configured webhook and mailbox, if any; a failure is one line on stderr."""
    from .alerts import notify

    try:
        sent = notify(settings, subject, text, payload)
    except CrashAggregatesError as exc:
        _fail(str(exc), 1)
    if sent:
        click.echo("alerted: " + ", ".join(sent), err=True)


@cli.command()
@db_option
@click.option("--parquet", "parquet_url", default=None, metavar="URL",
              help="Also check these Parquet partitions (_SUCCESS and row counts).")
@click.option("--days", "--watchdog-days", "days", type=click.IntRange(min=1), default=None,
              help="Submission dates to check, ending yesterday (default 7).")
@click.option("--to", "last", type=DATE, default=None,
              help="Last submission date to check (default: yesterday, UTC).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="json: the report as one JSON object on stdout (default text).")
@threshold_options
@alert_options
@family_option
def watchdog(db_url: str | None, config_path: Path | None, parquet_url: str | None,
             days: int | None, last: date | None, log_format: str | None,
             thresholds: dict[str, Any], alerting: dict[str, Any],
             family: str | None) -> None:
    """Check the last days' output: present, complete, usual volume, no jump in ignored pings.

    Checks each date's last run completed; pings and usage hours against the median of the
    same weekday in the previous weeks; the share of ignored lines; Parquet markers and row
    counts. Prints a report; alerts and exits 1 when anything fails. docs/operations.md.

    Example:

        crash-aggregates watchdog --db postgresql://crash@db/telemetry --days 7
    """
    import json

    from .stores.parquet import ParquetStore
    from .watchdog import Thresholds, check

    try:
        given = settings_from(config_path, db=db_url, parquet=parquet_url, watchdog_days=days,
                              log_format=log_format, family=family, **thresholds, **alerting)
        store = _readable_store(given.db, given.family)
        try:
            parquet = (ParquetStore(given.parquet, family=store.family) if given.parquet
                       else None)
            report = check(store, given.watchdog_days,
                           today=(last or yesterday()) + timedelta(days=1), parquet=parquet,
                           thresholds=Thresholds.from_settings(given))
        finally:
            store.close()
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    from .redact import scrub

    text = scrub(report.as_text())  # run errors recorded by older releases may hold a password
    click.echo(scrub(json.dumps(report.as_dict())) if given.log_format == "json" else text)
    if not report.ok:
        _alert(given, f"crash-aggregates watchdog: {report.summary}", text, report.as_dict())
        sys.exit(1)


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: one the system picks, printed at start-up).")
@click.option("--query-timeout", "timeout_ms", type=click.IntRange(min=1), default=5000,
              show_default=True, metavar="MS",
              help="Time limit of each request: all its queries, and the wait for a database "
              "connection (past it: 504, or 503 when every connection stayed busy).")
@click.option("--max-rows", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Row cap of each database query (more is an error: narrow the filters).")
@click.option("--family", default=None, metavar="legacy|glean",
              help="The ping family pages and the API show when a request names none (its "
              "`family` parameter). Default: the one family the store holds, else legacy.")
def serve(db_url: str | None, config_path: Path | None, host: str, port: int,
          timeout_ms: int, max_rows: int, family: str | None) -> None:
    """Serve the dashboard and its JSON API, reading the store read-only.

    Pages: / (crash rates by channel over time), /compare (a build against its baseline),
    /health (what each run counted); JSON under /api/, described at /openapi.json. Needs the
    web extra; see docs/dashboard.md. It never creates a store: a missing one, a database
    without the tables, or a port in use is one line and exit status 1 (2 for a bad option).

    Example:

        crash-aggregates serve --db sqlite:///crash_aggregates.db --port 8000
    """
    from .web import missing_extra

    missing = missing_extra()
    if missing:
        _fail(missing, 1)
    from .web.readonly import Limits
    from .web.server import serve as run_server

    try:
        given = settings_from(config_path, db=db_url, family=family)
        run_server(given.db, host, port, Limits(timeout_ms, max_rows), given.family)
    except CrashAggregatesError as exc:
        _fail_on(exc)


#: Set to 1 to see the traceback of an unexpected error (a bug) besides its one line.
DEBUG_ENV = "CRASH_AGGREGATES_DEBUG"
UNEXPECTED = faults.define("cli.main", "a command starts, its options not parsed (raise: as a "
                           "bug would; term: a SIGTERM before the command runs)")


def _remember_argv_secrets(argv: list[str]) -> None:
    """Scrub the passwords of every URL on the command line from any message, before a
    setting is even parsed (an unexpected error may come first)."""
    from .redact import remember

    for arg in argv:
        if "://" in arg:
            remember(arg, arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else None)


def _unexpected(exc: BaseException) -> None:
    """A bug: one line and a hint, the traceback only with CRASH_AGGREGATES_DEBUG=1."""
    from .redact import scrub

    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        import traceback

        text = "".join(traceback.format_exception(exc))
        click.echo(scrub(text).rstrip("\n"), err=True)
    _fail(f"unexpected {type(exc).__name__}: {exc} (a bug: please report it, with the output "
          f"of the same command run with {DEBUG_ENV}=1)", 1)


def _terminated_before_start(signum: int, frame: object) -> None:
    _exit_interrupted([])


def main() -> None:
    import logging

    # Driver warnings (psycopg's "error ignored terminating Copy" after a lost connection)
    # would print beside the one-line errors this command gives for the same event.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    logging.getLogger("psycopg").propagate = False
    _remember_argv_secrets(sys.argv[1:])
    # From here until fill installs its own handler (_stops_cleanly), a SIGTERM ends it before
    # it did anything, with its documented status 130 (the other commands keep the default
    # action, and serve its server's). An inherited SIG_IGN (a shell without job control) is
    # kept.
    if sys.argv[1:2] == ["fill"] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated_before_start)
    try:
        faults.fault_point(UNEXPECTED)
        cli(prog_name="crash-aggregates")
    except CrashAggregatesError as exc:
        _fail_on(exc)
    except Exception as exc:  # never a traceback: one line (SystemExit and Ctrl-C pass)
        _unexpected(exc)


if __name__ == "__main__":
    main()
