"""The job: for each submission date, read its pings, aggregate, replace its rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence, Sized
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol, cast

from . import __version__, budget, families, rules
from .aggregation import Aggregate
from .engines.local import Progress, ScanResult, ScanSpec, scan, scan_jobs
from .errors import CrashAggregatesError, InputError, StoreError, UsageError
from .redact import redact_url, remember, scrub
from .sources import Layout, PingFile, PingStore
from .stores.base import RunRecord, Store, open_store
from .stores.parquet import ParquetStore, PartitionRows


class StreamedRows(PartitionRows, Protocol):
    """Rows the driver does not hold (`engines.spark.SparkRows`): counted, iterated once
    (streamed to a database), or written to Parquet where they are."""

    def __iter__(self) -> Iterator[Aggregate]: ...


#: A date's rows: a list (the local engine's), or the Spark engine's left on its executors.
DayRows = Sequence[Aggregate] | StreamedRows
#: Per date: its rows, its counters, and notes (skipped corrupt files).
DateRows = dict[date, tuple[DayRows, dict[str, int], list[str]]]


@dataclass(frozen=True)
class FillSettings:
    input_url: str
    first: date
    last: date
    db_url: str | None = None
    parquet_url: str | None = None
    workers: int = 1
    dedupe: bool = True
    sample_fraction: float = 1.0
    layout: Literal["auto", "partitioned", "flat"] = "auto"
    engine: Literal["local", "spark"] = "local"
    spark_master: str | None = None
    skip_existing: bool = False
    parallel_dates: int = 1
    max_aggregates: int = field(default_factory=budget.default_max_aggregates)
    #: Spark into PostgreSQL: "staging" (executors COPY into a staging table) or "stream"
    #: (through the driver, for executors without a route to the database); None: staging.
    spark_postgres_load: Literal["staging", "stream"] | None = None
    on_corrupt_file: Literal["fail", "skip"] = "fail"
    #: The ping family read (families.FAMILIES): its rules, its tables, its runs.
    family: str = families.DEFAULT

    def __post_init__(self) -> None:
        families.family(self.family)  # an unknown family is a UsageError, before anything
        if self.first > self.last:
            raise UsageError(f"--from {self.first} is after --to {self.last}")
        if not 0 < self.sample_fraction <= 1:
            raise UsageError("--sample-fraction must be in (0, 1]")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.parallel_dates < 1:
            raise UsageError("--parallel-dates must be at least 1")
        remember(self.input_url, self.db_url, self.parquet_url)

    def dates(self) -> Iterator[date]:
        day = self.first
        while day <= self.last:
            yield day
            day += timedelta(days=1)

    @property
    def sample_below(self) -> float | None:
        """Pings are kept when their `meta.sampleId` is below this (None: keep all)."""
        return None if self.sample_fraction >= 1 else 100 * self.sample_fraction


@dataclass
class DateReport:
    submission_date: date
    status: Literal["completed", "failed", "skipped"]
    counters: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    undated: int = 0
    notes: list[str] = field(default_factory=list)
    family: str = families.DEFAULT


@dataclass
class FillReport:
    run_id: str
    dates: list[DateReport] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C or SIGTERM: the dates reported are the finished ones

    @property
    def failed(self) -> list[date]:
        return [d.submission_date for d in self.dates if d.status == "failed"]


class Reporter(Protocol):
    """Where the job tells what it is doing (the CLI prints it)."""

    def plan(self, dates: int) -> None: ...

    def reading(self, what: str, files: list[PingFile]) -> Progress: ...

    def date_done(self, report: DateReport) -> None: ...


class SilentReporter:
    def plan(self, dates: int) -> None:
        pass

    def reading(self, what: str, files: list[PingFile]) -> Progress:
        return Progress()

    def date_done(self, report: DateReport) -> None:
        pass


class _PartlyWritten(CrashAggregatesError):
    """A date that reached the first `written` stores but not the others."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


class _NothingLeft(CrashAggregatesError):
    """A date left with nothing to write (no valid ping, or every file skipped): its rows are
    kept."""

    def __init__(self, message: str, corrupt_files: int) -> None:
        super().__init__(message)
        self.corrupt_files = corrupt_files


def _check_skipped(day: date, rows: Sized, counters: dict[str, int],
                   notes: list[str], files: int) -> None:
    """A date is never replaced with nothing: when its files hold no valid ping, or (with
    --on-corrupt-file skip) every file of the date was skipped or the files left hold no row,
    the date fails instead and keeps its rows."""
    corrupt = counters.get(rules.CORRUPT_FILES, 0)
    if len(rows) and (not corrupt or corrupt < files):
        return
    if not corrupt:
        # Files of blank lines, of garbage, of other pings only: an outage upstream, never a
        # day with no usage. Replacing the date's rows with none would hide it.
        seen = ", ".join(f"{name}={count}" for name, count in counters.items() if count)
        raise _NothingLeft(f"no valid ping in the {files} ping file{'s' if files != 1 else ''}"
                           f" of {day} ({seen or 'no line'}); that would replace its rows with "
                           "nothing: they are kept", 0)
    first = f" (first: {notes[0]})" if notes else ""
    what = (f"every ping file of {day} is corrupt ({files} skipped)" if corrupt >= files
            else f"{corrupt} of the {files} ping files of {day} are corrupt and the others "
                 "hold no row")
    raise _NothingLeft(f"{what}{first}; with --on-corrupt-file skip that would replace its "
                       "rows with nothing: they are kept", corrupt)


def _rows(result: ScanResult) -> dict[date, tuple[Sequence[Aggregate], dict[str, int], list[str]]]:
    # a table, not a list: each row becomes an `Aggregate` only as a store writes it
    return {day: (aggregator.table(), dict(aggregator.counters), aggregator.notes)
            for day, aggregator in result.aggregators.items()}


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _open_stores(settings: FillSettings) -> tuple[list[Store], CrashAggregatesError | None]:
    """--db, --parquet, both; or the default SQLite file when neither is given. The stores
    that did open are returned (to record why the run failed) beside the error of the one that
    did not."""
    stores: list[Store] = []
    opening = settings.db_url or "the database"
    try:
        if settings.db_url or not settings.parquet_url:
            stores.append(open_store(settings.db_url, family=settings.family))
        opening = settings.parquet_url or ""
        if settings.parquet_url:
            stores.append(ParquetStore(settings.parquet_url, family=settings.family))
    except CrashAggregatesError as exc:
        return stores, exc
    except Exception as exc:  # a driver's error its store did not map (psycopg's UnicodeError)
        return stores, StoreError(f"cannot open {redact_url(opening)}: {_why(exc)}")
    except BaseException:
        for store in stores:
            store.close()
        raise
    return stores, None


def fill(settings: FillSettings, reporter: Reporter | None = None) -> FillReport:
    """Run the job for every date of `settings`; a failed date never stops the others.

    What is not about one date (the ping store cannot be listed, an output store cannot be
    opened or written, an extra is missing) is found before any ping is read: then a failed run
    is recorded for every date in the stores that can hold one, and the error is raised, once.
    """
    say = reporter or SilentReporter()
    stores, problem = _open_stores(settings)
    try:
        job = _Job(settings, stores, say)
        try:
            job.preflight(problem)
        except KeyboardInterrupt:  # nothing was read or written
            job.report.interrupted = True
            return job.report
        return job.run()
    finally:
        for store in stores:
            store.close()


def _why(exc: BaseException) -> str:
    """An exception of any library (botocore, fsspec, pyarrow...) as one line."""
    if isinstance(exc, CrashAggregatesError):
        return str(exc)
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(f"{type(exc).__name__}: {text}".split())


def probe_parquet(store: ParquetStore) -> None:
    """Write and delete a small object under the store's prefix: credentials, a bucket that
    does not exist, a read-only folder fail here, before a day of pings is read."""
    probe = f"{store.root}/_write-probe-{uuid.uuid4().hex[:12]}"
    try:
        if store.local:  # object stores have no folders (and s3fs's makedirs makes buckets)
            store.fs.makedirs(store.root, exist_ok=True)
        with store.fs.open(probe, "wb") as out:
            out.write(b"crash-aggregates write probe\n")
        store.fs.rm(probe)
    except Exception as exc:  # any filesystem's own errors (botocore's are not OSErrors)
        raise StoreError(f"cannot write Parquet under {redact_url(store.url)}: "
                         f"{_why(exc)}") from None


@dataclass
class _Job:
    settings: FillSettings
    stores: list[Store]
    say: Reporter

    def __post_init__(self) -> None:
        self.report = FillReport(new_run_id(datetime.now(UTC)))
        self._spark: Any = None
        self._pings: PingStore | None = None
        self._layout: Layout = "partitioned"

    def preflight(self, problem: CrashAggregatesError | None = None) -> None:
        """Every check that does not depend on a date, before any ping is read: the output
        stores can be written, the ping store can be listed, the engine is installed. On a
        failure, record a failed run for every date where a store can, then raise it once."""
        try:
            if problem is not None:
                raise problem
            for store in self.stores:
                if isinstance(store, ParquetStore):
                    probe_parquet(store)
            self._pings, self._layout = self._open_pings()
            if self.settings.engine == "spark":
                import importlib.util

                if importlib.util.find_spec("pyspark") is None:
                    raise UsageError("the Spark engine needs the spark extra: "
                                     "pip install 'crash-rate-aggregates[spark]'")
        except CrashAggregatesError as exc:
            message = scrub(f"{exc} (no ping was read, no date was written)")
            self._record_everywhere(message)
            kind = (UsageError if isinstance(exc, UsageError)
                    else InputError if isinstance(exc, InputError) else StoreError)
            raise kind(message) from None

    def _open_pings(self) -> tuple[PingStore, Layout]:
        try:
            pings = PingStore(self.settings.input_url)
            folders = pings.date_folders()  # lists the store: the first read of it
        except CrashAggregatesError:
            raise
        except Exception as exc:  # a filesystem's own errors, not mapped by it
            raise StoreError(f"cannot list ping store {redact_url(self.settings.input_url)}: "
                             f"{_why(exc)}") from None
        layout = self.settings.layout
        if layout == "auto":
            layout = "partitioned" if folders else "flat"
        return pings, layout

    def _record_everywhere(self, error: str) -> None:
        """A failed run for every date, in every store that opened (none is reported: the
        caller says it once)."""
        started = datetime.now(UTC)
        for day in self.settings.dates():
            run = self._failed_run(day, started, 0.0, error)
            for store in self.stores:
                try:
                    store.record_run(run)
                except CrashAggregatesError:
                    pass  # that store is the problem, or down too: the error is raised anyway

    @contextmanager
    def _aggregated(self, pings: PingStore, files: list[PingFile], spec: ScanSpec,
                    progress: Progress) -> Iterator[tuple[DateRows, int]]:
        """Per date: rows and counters; and the run's undated lines, from either engine. The
        Spark engine's rows stay on its executors until the block ends (never all on the
        driver: the stores stream them or have the executors write them)."""
        if self.settings.engine == "spark":
            from .engines.spark import scan_spark_rows, spark_session

            if self._spark is None:
                self._spark = spark_session(self.settings.spark_master)
            scanned = scan_spark_rows(self._spark, pings.url, files, spec)
            try:
                yield dict(scanned.days), scanned.undated
            finally:
                scanned.release()
            return
        result = scan(pings, files, spec, self.settings.workers, progress)
        yield dict(_rows(result)), result.undated

    def run(self) -> FillReport:
        days = list(self.settings.dates())
        self.say.plan(len(days))
        try:
            self._run(days)
        except KeyboardInterrupt:
            # The date being written rolled back (a transaction, a staged partition); the
            # finished ones stay. The CLI says which are which.
            self.report.interrupted = True
        return self.report

    def _run(self, days: list[date]) -> None:
        if self._pings is None:
            self.preflight()
        pings, layout = self._pings, self._layout
        assert pings is not None
        if layout == "flat":
            days = [day for day in days if not self._skip(day)]
            if days:
                self._flat(pings, days)
            return
        step = 1 if self.settings.engine == "spark" else self.settings.parallel_dates
        for start in range(0, len(days), step):
            group = [day for day in days[start:start + step] if not self._skip(day)]
            if group:
                self._partitioned_dates(pings, group)

    def _skip(self, day: date) -> bool:
        """--skip-existing: in every store, the date's last run is the same completed run, on
        the same input (a job killed between the database and Parquet is not done)."""
        if not self.settings.skip_existing:
            return False
        last = []
        for store in self.stores:
            runs = store.read_runs(day)
            if not runs:
                return False
            last.append(runs[-1])
        inputs = {self.settings.input_url, redact_url(self.settings.input_url)}
        if any(run["status"] != "completed" or run["input_url"] not in inputs
               or run["run_id"] != last[0]["run_id"] for run in last):
            return False
        self._done(DateReport(day, "skipped", family=self.settings.family))
        return True

    def _partitioned_dates(self, pings: PingStore, days: list[date]) -> None:
        """Several dates through one pool of workers; on a bad file, each date alone, so
        that only the date holding it fails."""
        if len(days) == 1:
            self._partitioned_date(pings, days[0])
            return
        started, clock = datetime.now(UTC), time.monotonic()
        try:
            jobs = []
            file_counts: dict[date, int] = {}
            for day in days:
                files = pings.files_for_date(day)
                if not files:
                    raise CrashAggregatesError(f"no ping files for {day}")
                jobs += [(file, self._spec(day, [day])) for file in files]
                file_counts[day] = len(files)
            progress = self.say.reading(f"{days[0]} to {days[-1]}", [f for f, _ in jobs])
            result = scan_jobs(pings, jobs, self.settings.workers, progress)
        except CrashAggregatesError:
            for day in days:
                self._partitioned_date(pings, day)
            return
        for day, (rows, counters, notes) in sorted(_rows(result).items()):
            try:
                self._write(day, rows, counters, notes, started, clock, 0, file_counts[day])
            except CrashAggregatesError as exc:
                self._failed(day, started, clock, str(exc), written=getattr(exc, "written", 0),
                             corrupt_files=getattr(exc, "corrupt_files", 0))

    def _spec(self, layout_date: date | None, wanted: list[date]) -> ScanSpec:
        return ScanSpec(layout_date, frozenset(wanted), self.settings.sample_below,
                        self.settings.dedupe, self.settings.max_aggregates,
                        self.settings.on_corrupt_file == "skip", family=self.settings.family)

    def _partitioned_date(self, pings: PingStore, day: date) -> None:
        started, clock = datetime.now(UTC), time.monotonic()
        try:
            files = pings.files_for_date(day)
            if not files:
                raise CrashAggregatesError(
                    f"no ping files for {day} in {redact_url(self.settings.input_url)}")
            progress = self.say.reading(day.isoformat(), files)
            with self._aggregated(pings, files, self._spec(day, [day]), progress) as (
                    per_date, _):
                self._write(day, *per_date[day], started, clock, 0, len(files))
        except CrashAggregatesError as exc:
            self._failed(day, started, clock, str(exc), written=getattr(exc, "written", 0),
                         corrupt_files=getattr(exc, "corrupt_files", 0))

    def _flat(self, pings: PingStore, days: list[date]) -> None:
        started, clock = datetime.now(UTC), time.monotonic()
        with ExitStack() as held:
            try:
                files = pings.all_files()
                if not files:
                    raise CrashAggregatesError(
                        f"no ping files in {redact_url(self.settings.input_url)}")
                progress = self.say.reading(f"{days[0]} to {days[-1]}", files)
                per_date, undated = held.enter_context(
                    self._aggregated(pings, files, self._spec(None, days), progress))
            except CrashAggregatesError as exc:
                for day in days:
                    self._failed(day, started, clock, str(exc))
                return
            self._write_flat(days, per_date, undated, started, clock, len(files))

    def _write_flat(self, days: list[date], per_date: DateRows, undated: int,
                    started: datetime, clock: float, files: int) -> None:
        for day in days:
            try:
                self._write(day, *per_date[day], started, clock, undated, files)
            except CrashAggregatesError as exc:
                self._failed(day, started, clock, str(exc), undated,
                             written=getattr(exc, "written", 0),
                             corrupt_files=getattr(exc, "corrupt_files", 0))

    def _write(self, day: date, rows: DayRows, counters: dict[str, int],
               notes: list[str], started: datetime, clock: float, undated: int,
               files: int) -> None:
        _check_skipped(day, rows, counters, notes, files)
        seconds = time.monotonic() - clock
        run = RunRecord(self.report.run_id, day, "completed", started, seconds, len(rows),
                        redact_url(self.settings.input_url), __version__, counters, undated)
        # Two phases across stores: Parquet's new partition is written aside first (what a full
        # disk breaks), then the database commits, then the partition is swapped in (renames).
        staged = []
        try:
            for store in self.stores:
                if isinstance(store, ParquetStore):
                    staged.append((store, store.prepare(day, rows, run)))
            for store in self.stores:
                if not isinstance(store, ParquetStore):
                    # (SQLite and PostgreSQL read the rows once: a stream does; Store's
                    # signature still says Sequence; Spark's may load PostgreSQL itself)
                    load = getattr(rows, "replace_in", None)
                    if load is None or not load(store, run, self.settings.spark_postgres_load):
                        store.replace_date(day, cast(Sequence[Aggregate], rows), run)
        except BaseException:
            for _, partition in staged:
                partition.abort()
            raise
        for store, partition in staged:
            try:
                partition.commit()
            except CrashAggregatesError as exc:
                # Rare (a rename failed): the database holds the new rows and says so; the date
                # still fails, so a re-run (or --skip-existing, which compares the stores)
                # brings Parquet along.
                written = self.stores.index(store)
                if not written:
                    raise
                done = ", ".join(redact_url(s.url) for s in self.stores[:written])
                raise _PartlyWritten(f"written to {done} but not to {redact_url(store.url)}: "
                                     f"{exc}", written) from None
        self._done(DateReport(day, "completed", counters, len(rows), seconds, None, undated,
                              notes, self.settings.family))

    def _failed_run(self, day: date, started: datetime, seconds: float, error: str,
                    undated: int = 0, corrupt_files: int = 0) -> RunRecord:
        counters = {name: 0 for name in families.family(self.settings.family).COUNTERS}
        if corrupt_files:
            counters[rules.CORRUPT_FILES] = corrupt_files
        return RunRecord(self.report.run_id, day, "failed", started, seconds, 0,
                         redact_url(self.settings.input_url), __version__, counters, undated,
                         scrub(error))

    def _failed(self, day: date, started: datetime, clock: float, error: str,
                undated: int = 0, written: int = 0, corrupt_files: int = 0) -> None:
        seconds = time.monotonic() - clock
        error = scrub(error)
        run = self._failed_run(day, started, seconds, error, undated, corrupt_files)
        counters = run.counters
        for store in self.stores[written:]:  # never overwrite a store's completed record
            try:
                store.record_run(run)
            except CrashAggregatesError:
                pass  # the failure is reported below all the same; the rows are untouched
        self._done(DateReport(day, "failed", counters, 0, seconds, error, undated,
                              family=self.settings.family))

    def _done(self, report: DateReport) -> None:
        self.report.dates.append(report)
        self.say.date_done(report)
