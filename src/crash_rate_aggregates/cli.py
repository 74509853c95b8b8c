"""The `crash-aggregates` command: one thin function per command."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
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
    return click.option(
        "--db", "db_url", default=None, envvar="CRASH_AGGREGATES_DB", metavar="URL",
        help="Output store: sqlite:///path.db (default ./crash_aggregates.db) or "
             "postgresql://user@host/db (password from the URL, PGPASSWORD or ~/.pgpass).")(func)


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
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
@click.option("--input", "input_url", required=True, metavar="STORE",
              help="Ping store: a folder or URL (file://, s3://, ...).")
@date_range_options
@db_option
@click.option("--parquet", "parquet_url", default=None, metavar="URL",
              help="Also (or only, without --db) write Parquet partitions under "
              "URL/crash_aggregates/v1/ (a folder, s3://, gs://, az://).")
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
def fill(input_url: str, first: date | None, last: date | None, db_url: str | None,
         parquet_url: str | None, workers: int | None, no_dedupe: bool,
         sample_fraction: float, layout: str, engine: str, spark_master: str | None) -> None:
    """Aggregate the pings of each submission date and replace its rows.

    Each date is written in one transaction, or not at all; the date's summary line lists its
    counters. Exits 1 when any date failed, naming them on the last line.

    Example:

        crash-aggregates fill --input ./pings --from 2016-03-01 --to 2016-03-14
    """
    from .fill import FillSettings
    from .fill import fill as run_fill
    from .report import ConsoleReporter

    first = first or yesterday()
    last = last or yesterday()
    try:
        settings = FillSettings(
            input_url=input_url, first=first, last=last, db_url=db_url,
            parquet_url=parquet_url,
            workers=workers or os.cpu_count() or 1, dedupe=not no_dedupe,
            sample_fraction=sample_fraction, layout=layout,  # type: ignore[arg-type]
            engine=engine, spark_master=spark_master,  # type: ignore[arg-type]
        )
        report = run_fill(settings, ConsoleReporter())
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
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
              show_default=True)
@click.option("--files-per-day", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--light", is_flag=True,
              help="Leave out the histograms the job does not read (pings of ~5 KB, not ~100).")
def generate(out_dir: Path, first: date | None, last: date | None, pings: int, seed: int,
             layout: str, files_per_day: int, light: bool) -> None:
    """Write a realistic synthetic ping store.

    Clients on several channels, OSes and builds with different crash rates, a few in crash
    loops, and a small share of the messy input the rules deal with.

    Example:

        crash-aggregates generate --out ./pings --from 2016-03-08 --to 2016-03-14 --pings 5000
    """
    from .synth import generate_store

    first = first or last or yesterday()
    last = last or first
    if first > last:
        _fail(f"--from {first} is after --to {last}")
    summary = generate_store(out_dir, first, last, pings, seed=seed,
                             layout=layout,  # type: ignore[arg-type]
                             files_per_day=files_per_day, heavy=not light)
    click.echo(f"wrote {summary.pings:,} pings in {summary.files} files "
               f"({summary.json_bytes / 1e6:,.1f} MB of JSON) to {summary.out_dir}")


@cli.command()
@db_option
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True)
@click.option("--pings", type=click.IntRange(min=10), default=3000, show_default=True,
              help="Pings per day.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the CPU count).")
def demo(db_url: str | None, days: int, pings: int, workers: int | None) -> None:
    """Generate a week of sample pings, fill the store and print crash rates by channel.

    Example:

        crash-aggregates demo
    """
    from .demo import run_demo

    try:
        with tempfile.TemporaryDirectory(prefix="crash-aggregates-demo-") as folder:
            text = run_demo(Path(folder), db_url, days, pings, workers or os.cpu_count() or 1)
    except CrashAggregatesError as exc:
        _fail_on(exc)
        return
    click.echo(text)


def main() -> None:
    try:
        cli(prog_name="crash-aggregates")
    except CrashAggregatesError as exc:
        _fail_on(exc)


if __name__ == "__main__":
    main()
