"""The watchdog: did the last days' runs happen, and do their numbers look like the usual?

For each of the last `days` submission dates (ending yesterday, UTC), five checks, in order:

    run            the date has a run record and its last run (the last to commit) completed,
                   wrote rows (not 0), skipped no corrupt file (`corrupt_files`, with
                   --on-corrupt-file skip), and wrote at least `rows_ratio` (50%) of the median
                   row count of the same weekday over the trailing `weeks` weeks
    ping_volume    pings processed (main_processed + crash_processed of the last completed run)
                   are at least `volume_ratio` (50%) of the median of the same weekday over the
                   trailing `weeks` (4) weeks
    usage_hours    the same for the usage hours summed over the date's rows
    ignored_share  the share of ignored lines is at most `ignored_jump` (5 percentage points)
                   above the same-weekday median share
    parquet        (with a Parquet store) the partition has its _SUCCESS marker, the files it
                   lists exist, and its row count is the database's last completed run's

The share of ignored lines of a date is

    ignored / (ignored + processed), where
    ignored   = main_ignored + crash_ignored + crash_non_main_ignored + other_doc_type
                + malformed_lines
    processed = main_processed + crash_processed

Duplicates and sampled-out pings are in neither: they are valid pings set aside on purpose.

The same-weekday history of a date D is D - 7, D - 14, ... D - 7 * weeks, counting only the
dates that have a completed run. With fewer than `min_history` (2) of them the comparison is
skipped, and the finding says so. Nothing here writes anything: the module only reads stores.

The watchdog checks one ping family, the store's (`store.family`): its runs, its rows and its
Parquet partitions. Both families count their lines in the same counters (Glean baseline pings
in main_*, crash pings in crash_*), so the checks are the same.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import rules
from .errors import StoreError, UsageError
from .redact import redact_url, scrub
from .stores.base import ReadableStore
from .stores.queries import StatsQuery

if TYPE_CHECKING:
    from .settings import Settings
    from .stores.parquet import ParquetStore

CHECKS: tuple[str, ...] = ("run", "ping_volume", "usage_hours", "ignored_share", "parquet")
PROCESSED_COUNTERS: tuple[str, ...] = (rules.MAIN_PROCESSED, rules.CRASH_PROCESSED)
IGNORED_COUNTERS: tuple[str, ...] = (
    rules.MAIN_IGNORED,
    rules.CRASH_IGNORED,
    rules.CRASH_NON_MAIN_IGNORED,
    rules.OTHER_DOC_TYPE,
    rules.MALFORMED_LINES,
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

Run = Mapping[str, Any]


@dataclass(frozen=True)
class Thresholds:
    """When a check fails.

    weeks          trailing weeks of the same weekday a date is compared with (default 4)
    volume_ratio   ping volume or usage hours below this fraction of the same-weekday median
                   fail (default 0.5: below 50% of the median; 0 turns both checks off)
    ignored_jump   an ignored-line share more than this above the same-weekday median share
                   fails; absolute (default 0.05: 5 percentage points)
    min_history    the fewest earlier same-weekdays with a completed run to compare with
                   (default 2; with fewer the comparison is skipped with a note)
    rows_ratio     a completed run that wrote fewer rows than this fraction of the
                   same-weekday median fails the run check (default 0.5; 0 turns it off)
    """

    weeks: int = 4
    volume_ratio: float = 0.5
    ignored_jump: float = 0.05
    min_history: int = 2
    rows_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.weeks < 1:
            raise UsageError(f"watchdog weeks must be at least 1, not {self.weeks}")
        if self.min_history < 1:
            raise UsageError(f"watchdog min_history must be at least 1, not {self.min_history}")
        if not 0 <= self.volume_ratio <= 1:
            raise UsageError(f"watchdog volume ratio must be in [0, 1], not {self.volume_ratio}")
        if not 0 <= self.ignored_jump <= 1:
            raise UsageError(f"watchdog ignored jump must be in [0, 1], not {self.ignored_jump}")
        if not 0 <= self.rows_ratio <= 1:
            raise UsageError(f"watchdog rows ratio must be in [0, 1], not {self.rows_ratio}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(weeks=settings.watchdog_weeks, volume_ratio=settings.watchdog_volume_ratio,
                   ignored_jump=settings.watchdog_ignored_jump,
                   rows_ratio=settings.watchdog_rows_ratio)


@dataclass(frozen=True)
class Finding:
    """The outcome of one check on one date. A skipped check is ok (it could not be made: too
    little history, or nothing to compare); `value` and `median` are the figures compared."""

    day: date
    check: str
    ok: bool
    message: str
    skipped: bool = False
    value: float | None = None
    median: float | None = None

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "skip" if self.skipped else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "check": self.check, "ok": self.ok,
                "skipped": self.skipped, "message": self.message, "value": self.value,
                "median": self.median}


@dataclass(frozen=True)
class WatchdogReport:
    first: date
    last: date
    thresholds: Thresholds
    findings: list[Finding] = field(default_factory=list)
    family: str = "legacy"

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    @property
    def summary(self) -> str:
        """One line: the period and how many checks failed (on which dates)."""
        total = len(self.findings)
        skipped = sum(1 for finding in self.findings if finding.skipped)
        note = f", {skipped} skipped" if skipped else ""
        named = "" if self.family == "legacy" else f" ({self.family} pings)"
        period = f"watchdog{named} {self.first} to {self.last}"
        failures = self.failures
        if not failures:
            # the skipped ones could not be made (too little history): not passes
            return f"{period}: {total - skipped} of {total} checks passed{note}"
        days = sorted({finding.day.isoformat() for finding in failures})
        return (f"{period}: {len(failures)} of {total} checks FAILED{note} "
                f"(on {', '.join(days)})")

    def as_text(self) -> str:
        """One line per finding (date, check, ok/FAIL/skip, message), then the summary."""
        lines = [f"{f.day}  {f.check:<13}  {f.status:<4}  {f.message}" for f in self.findings]
        lines.append(self.summary)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ok, period, thresholds, summary and every finding."""
        return {"ok": self.ok, "family": self.family, "first": self.first.isoformat(),
                "last": self.last.isoformat(),
                "thresholds": asdict(self.thresholds), "summary": self.summary,
                "findings": [finding.as_dict() for finding in self.findings]}


def check(store: ReadableStore, days: int, *, today: date | None = None,
          parquet: ParquetStore | None = None,
          thresholds: Thresholds = Thresholds()) -> WatchdogReport:
    """Check the `days` submission dates ending the day before `today` (default: today, UTC).
    Reads run records and per-date usage hours from `store` (and markers from `parquet`)."""
    if days < 1:
        raise UsageError(f"the watchdog checks at least 1 day, not {days}")
    today = today or datetime.now(UTC).date()
    last = today - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    checked = [first + timedelta(days=i) for i in range(days)]
    wanted = sorted({day - timedelta(weeks=k) for day in checked
                     for k in range(thresholds.weeks + 1)})
    runs = {day: store.read_runs(day) for day in wanted}
    usage = _usage_by_day(store, wanted[0], last)
    markers = _markers(parquet) if parquet is not None else None
    history = _History(runs, usage, thresholds)
    report = WatchdogReport(first, last, thresholds, family=store.family)
    for day in checked:
        report.findings.extend(_check_day(day, history, parquet, markers))
    return report


def _usage_by_day(store: ReadableStore, first: date, last: date) -> dict[date, float]:
    found = store.sum_stats(StatsQuery(first=first, last=last, per_date=True,
                                       family=store.family))
    return {date.fromisoformat(str(group[0])): stats["usage_hours"] for group, stats in found}


def _markers(parquet: ParquetStore) -> dict[str, dict[str, Any]]:
    try:
        return parquet.markers()
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the _SUCCESS markers under {redact_url(parquet.url)}: "
                         f"{scrub(str(exc))}") from None


def _started(run: Run) -> datetime:
    value = run["started_at"]
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _latest(runs: Sequence[Run]) -> Run | None:
    """The run that started last (of equal times, the one listed last)."""
    if not runs:
        return None
    return sorted(enumerate(runs), key=lambda pair: (_started(pair[1]), pair[0]))[-1][1]


def _count(run: Run, names: Sequence[str]) -> int:
    return sum(int(run.get(name) or 0) for name in names)


def pings(run: Run) -> int:
    """Pings a run processed: main_processed + crash_processed."""
    return _count(run, PROCESSED_COUNTERS)


def ignored_share(run: Run) -> float | None:
    """Ignored lines over ignored + processed lines (None when the run counted none)."""
    ignored = _count(run, IGNORED_COUNTERS)
    total = ignored + pings(run)
    return ignored / total if total else None


@dataclass
class _History:
    runs: dict[date, list[dict[str, Any]]]
    usage: dict[date, float]
    thresholds: Thresholds

    def last_run(self, day: date) -> Run | None:
        return _latest(self.runs.get(day, []))

    def last_completed(self, day: date) -> Run | None:
        return _latest([run for run in self.runs.get(day, []) if run["status"] == "completed"])

    def earlier(self, day: date) -> list[tuple[date, Run]]:
        """The same weekday over the trailing weeks, with their last completed run."""
        found = []
        for k in range(1, self.thresholds.weeks + 1):
            run = self.last_completed(day - timedelta(weeks=k))
            if run is not None:
                found.append((day - timedelta(weeks=k), run))
        return found


def _check_day(day: date, history: _History, parquet: ParquetStore | None,
               markers: dict[str, dict[str, Any]] | None) -> list[Finding]:
    found = [_check_run(day, history)]
    completed = history.last_completed(day)
    earlier = history.earlier(day)
    weekday = WEEKDAYS[day.weekday()]
    found.append(_compare_volume(
        day, "ping_volume", "pings", history.thresholds,
        None if completed is None else float(pings(completed)),
        [float(pings(run)) for _, run in earlier], weekday))
    found.append(_compare_volume(
        day, "usage_hours", "usage hours", history.thresholds,
        None if completed is None else history.usage.get(day, 0.0),
        [history.usage.get(when, 0.0) for when, _ in earlier], weekday))
    shares = [share for _, run in earlier if (share := ignored_share(run)) is not None]
    found.append(_compare_share(day, history.thresholds,
                                None if completed is None else ignored_share(completed),
                                shares, weekday))
    if parquet is not None and markers is not None:
        found.append(_check_parquet(day, completed, parquet, markers))
    return found


def _check_run(day: date, history: _History) -> Finding:
    last = history.last_run(day)
    if last is None:
        return Finding(day, "run", False, "no run recorded for this date")
    if last["status"] == "completed":
        return _check_completed(day, last, history)
    completed = history.last_completed(day)
    kept = (f"; the rows of run {completed['run_id']} remain" if completed is not None
            else "; no run of this date ever completed")
    error = f": {scrub(str(last['error']))}" if last.get("error") else ""
    return Finding(day, "run", False, f"last run {last['run_id']} {last['status']}{error}{kept}")


def _check_completed(day: date, last: Run, history: _History) -> Finding:
    """A completed run still fails when it wrote nothing, skipped corrupt files (their pings
    are missing), or wrote far fewer rows than the same weekday usually has."""
    rows = int(last["rows_written"])
    done = f"last run {last['run_id']} completed: {rows:,} rows"
    corrupt = int(last.get(rules.CORRUPT_FILES) or 0)
    if rows == 0:
        return Finding(day, "run", False, f"{done}: the date has no data", value=0.0)
    if corrupt:
        return Finding(day, "run", False,
                       f"{done}, but it skipped {corrupt:,} corrupt "
                       f"file{'' if corrupt == 1 else 's'} (--on-corrupt-file skip): their "
                       "pings are missing; fix or remove the files and fill the date again",
                       value=float(rows))
    thresholds = history.thresholds
    earlier = [float(run["rows_written"]) for _, run in history.earlier(day)]
    if thresholds.rows_ratio and len(earlier) >= thresholds.min_history:
        median = statistics.median(earlier)
        if rows < thresholds.rows_ratio * median:
            return Finding(day, "run", False,
                           f"{done}, {rows / median:.0%} of the median {median:,.0f} of "
                           f"{len(earlier)} earlier {WEEKDAYS[day.weekday()]}s (fails below "
                           f"{thresholds.rows_ratio:.0%})", value=float(rows), median=median)
    return Finding(day, "run", True, done)


def _no_history(day: date, check_name: str, count: int, thresholds: Thresholds,
                weekday: str, value: float | None) -> Finding:
    return Finding(day, check_name, True,
                   f"skipped: {count} earlier {weekday}{'' if count == 1 else 's'} with a "
                   f"completed run in the last {thresholds.weeks} weeks, "
                   f"{thresholds.min_history} needed", skipped=True, value=value)


def _compare_volume(day: date, check_name: str, unit: str, thresholds: Thresholds,
                    value: float | None, earlier: list[float], weekday: str) -> Finding:
    if value is None:
        return Finding(day, check_name, True, "skipped: no completed run", skipped=True)
    if len(earlier) < thresholds.min_history:
        return _no_history(day, check_name, len(earlier), thresholds, weekday, value)
    median = statistics.median(earlier)
    floor = thresholds.volume_ratio * median
    share = f"{value / median:.0%}" if median else "n/a"
    text = (f"{value:,.0f} {unit}, {share} of the median {median:,.0f} of {len(earlier)} "
            f"earlier {weekday}s (fails below {thresholds.volume_ratio:.0%})")
    return Finding(day, check_name, value >= floor, text, value=value, median=median)


def _compare_share(day: date, thresholds: Thresholds, value: float | None,
                   earlier: list[float], weekday: str) -> Finding:
    if value is None:
        return Finding(day, "ignored_share", True, "skipped: no completed run with counted lines",
                       skipped=True)
    if len(earlier) < thresholds.min_history:
        return _no_history(day, "ignored_share", len(earlier), thresholds, weekday, value)
    median = statistics.median(earlier)
    text = (f"{value:.2%} of lines ignored, median {median:.2%} of {len(earlier)} earlier "
            f"{weekday}s (fails above +{thresholds.ignored_jump * 100:g} points)")
    return Finding(day, "ignored_share", value <= median + thresholds.ignored_jump, text,
                   value=value, median=median)


def _check_parquet(day: date, completed: Run | None, parquet: ParquetStore,
                   markers: dict[str, dict[str, Any]]) -> Finding:
    marker = markers.get(day.isoformat())
    if marker is None:
        return Finding(day, "parquet", False,
                       f"no _SUCCESS marker in {parquet.partition(day)}")
    if completed is None:
        return Finding(day, "parquet", True,
                       "skipped: no completed run in the database to compare with",
                       skipped=True)
    folder = parquet.partition(day)
    try:
        missing = [name for name in marker.get("files", [])
                   if not parquet.fs.exists(f"{folder}/{name}")]
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot list {folder}: {exc}") from None
    if missing:
        return Finding(day, "parquet", False, f"_SUCCESS lists {missing[0]}, which is missing")
    rows, expected = int(marker.get("rows", -1)), int(completed["rows_written"])
    if rows != expected:
        return Finding(day, "parquet", False,
                       f"_SUCCESS says {rows:,} rows (run {marker.get('run_id')}), the "
                       f"database's last completed run {completed['run_id']} wrote "
                       f"{expected:,}", value=rows, median=None)
    return Finding(day, "parquet", True, f"_SUCCESS says {rows:,} rows, as the database",
                   value=rows)
