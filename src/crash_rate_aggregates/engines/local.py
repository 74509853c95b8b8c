"""The local engine: ping files read in parallel worker processes, folded in the parent.

Each worker takes whole files from a task queue, applies the rules to every line and sends back
compact `Chunk`s of a few thousand records through a bounded queue (so a slow parent slows the
workers down instead of piling chunks up in memory). The parent folds chunks into one
`DateAggregator` per submission date: dedupe and sums happen there, and the sums are exact
(integers), so which worker reads which file, and in what order chunks arrive, never changes a
row, to the last bit. With one worker everything runs in the calling process.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .. import budget, families, faults, rules
from ..aggregation import DateAggregator, DateBatch, FrozenBatch, KeyIds
from ..errors import CrashAggregatesError, InputError
from ..sources import PingFile, PingStore, iter_lines

CHUNK_RECORDS = 5000
WORKER_STARTED = faults.define("local.worker_started", "a worker process was started, and "
                               "maybe not the others yet")
WORKER_BEGINS = faults.define("local.worker_begins", "a worker process runs, its own signal "
                              "handlers not set yet (the parent's, inherited, are)")
POOL_STOPPING = faults.define("local.pool_stopping", "the worker pool is being shut down, once "
                              "a worker (each pass: one worker stopped)")


@dataclass(frozen=True)
class ScanSpec:
    """What a scan reads and how.

    `layout_date` is the submission date of every ping read (partitioned layout), or None
    (flat layout: each ping's own date, kept when in `wanted`). `family` names the ping
    family whose rules read the lines (`families.FAMILIES`).
    """

    layout_date: date | None
    wanted: frozenset[date]
    sample_below: float | None = None
    dedupe: bool = True
    max_aggregates: int = field(default_factory=budget.default_max_aggregates)
    skip_corrupt: bool = False  # a file that cannot be read: count it and go on, or fail
    family: str = families.DEFAULT


@dataclass(frozen=True)
class Chunk:
    """What a worker sends back for a stretch of one file."""

    batches: dict[date, FrozenBatch]
    undated: int
    lines: int
    bytes_read: int  # compressed bytes of the file consumed by this chunk


@dataclass
class ScanResult:
    aggregators: dict[date, DateAggregator]
    undated: int = 0
    lines: int = 0
    files: int = 0


@dataclass
class Progress:
    """Called as chunks arrive: (compressed bytes, lines) since the last call."""

    callback: Callable[[int, int], None] | None = None

    def __call__(self, bytes_read: int, lines: int) -> None:
        if self.callback is not None:
            self.callback(bytes_read, lines)


class BlankLines:
    """What `file_outcomes` gives for blank lines read past: no line, only the position."""


BLANK_LINES = BlankLines()


def file_outcomes(store: PingStore, file: PingFile, spec: ScanSpec
                  ) -> Iterator[tuple[int, int, rules.Outcome | BlankLines | None]]:
    """(line number, compressed bytes read, outcome) for every non-blank line of a file; the
    outcome is None for a ping of a date not asked for, and BLANK_LINES (counted nowhere: SPEC
    skips blank lines) now and then in a stretch of blank lines, so that progress goes on.
    Both engines read files through this, with the rules of the spec's family."""
    evaluate = families.family(spec.family).evaluate_line
    for number, (line, position) in enumerate(iter_lines(store, file)):
        if not line:
            yield number, position, BLANK_LINES
            continue
        outcome = evaluate(line, spec.layout_date, spec.wanted, spec.sample_below, spec.dedupe)
        if outcome is not None and outcome.counter == rules.MALFORMED_LINES \
                and not bytes(line).strip():
            continue  # a blank line (spaces, a lone carriage return) is no ping at all
        yield number, position, outcome


def scan_file(store: PingStore, file: PingFile, spec: ScanSpec) -> Iterator[Chunk]:
    """Apply the rules to every line of one file, in chunks: one every CHUNK_RECORDS records,
    and one whenever the read advanced over blank lines alone (to show progress)."""
    batches: dict[date, DateBatch] = {}
    key_ids: dict[date, KeyIds] = {}  # for the whole file: each key is sent once
    undated = lines = records = 0
    position = reported = 0
    for _, position, outcome in file_outcomes(store, file, spec):
        if isinstance(outcome, BlankLines):
            if position > reported:  # the read went on over blank lines: say so
                yield Chunk({d: b.freeze() for d, b in batches.items()}, undated, lines,
                            position - reported)
                reported = position
                batches, undated, lines, records = {}, 0, 0, 0
            continue
        lines += 1
        if outcome is None:
            continue
        day = outcome.submission_date
        if day is None:
            undated += 1
            continue
        batch = batches.get(day)
        if batch is None:
            numbers = key_ids.get(day)
            if numbers is None:
                numbers = key_ids[day] = KeyIds()
            batch = batches[day] = DateBatch(spec.family, numbers)
        batch.add(outcome)
        records += 1
        if records >= CHUNK_RECORDS:
            yield Chunk({d: b.freeze() for d, b in batches.items()}, undated, lines,
                        position - reported)
            reported = position
            batches, undated, lines, records = {}, 0, 0, 0
    yield Chunk({d: b.freeze() for d, b in batches.items()}, undated, lines,
                max(position, file.size) - reported)


@dataclass
class _Folder:
    specs: list[ScanSpec]
    result: ScanResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = ScanResult(aggregators={})
        self._spec = self.specs[0] if self.specs else ScanSpec(None, frozenset())
        for spec in self.specs:  # every date asked for gets its (maybe empty) aggregator
            for day in [spec.layout_date] if spec.layout_date else spec.wanted:
                self._aggregator(day)

    def _aggregator(self, day: date) -> DateAggregator:
        found = self.result.aggregators.get(day)
        if found is None:
            found = self.result.aggregators[day] = DateAggregator(
                dedupe=self._spec.dedupe, max_aggregates=self._spec.max_aggregates, day=day,
                family=self._spec.family)
        return found

    def corrupt(self, spec: ScanSpec, message: str) -> None:
        """A skipped file counts on its date; in a flat store, on every date of the run (its
        pings could have been of any)."""
        for day in [spec.layout_date] if spec.layout_date else spec.wanted:
            aggregator = self._aggregator(day)
            aggregator.counters[rules.CORRUPT_FILES] += 1
            aggregator.notes.append(message)

    def fold(self, chunk: Chunk) -> None:
        for day, batch in chunk.batches.items():
            self._aggregator(day).add(batch)
        self.result.undated += chunk.undated
        self.result.lines += chunk.lines


def scan(
    store: PingStore,
    files: Sequence[PingFile],
    spec: ScanSpec,
    workers: int = 1,
    progress: Progress | None = None,
) -> ScanResult:
    """Read `files` and fold every line into per-date aggregators.

    Raises InputError (naming the file) when a file cannot be read or inflated.
    """
    return scan_jobs(store, [(file, spec) for file in files], workers, progress, [spec])


def scan_jobs(
    store: PingStore,
    jobs: Sequence[tuple[PingFile, ScanSpec]],
    workers: int = 1,
    progress: Progress | None = None,
    specs: Sequence[ScanSpec] = (),
) -> ScanResult:
    """Like `scan`, for files that each come with their own spec: several dates of a
    partitioned store read by one pool of workers (fill --parallel-dates). Every date of
    `specs` and of the jobs' specs gets a result, with or without lines."""
    folder = _Folder([*specs, *(spec for _, spec in jobs)])
    report = progress or Progress()
    if workers <= 1 or len(jobs) <= 1:
        for file, spec in jobs:
            try:
                for chunk in _file_chunks(store, file, spec):
                    folder.fold(chunk)
                    report(chunk.bytes_read, chunk.lines)
            except InputError as exc:
                if not spec.skip_corrupt:
                    raise
                folder.corrupt(spec, str(exc))
    else:
        for index, item in _parallel_chunks(store.url, jobs, min(workers, len(jobs))):
            if isinstance(item, Chunk):
                folder.fold(item)
                report(item.bytes_read, item.lines)
            else:
                folder.corrupt(jobs[index][1], item)
    folder.result.files = len(jobs)
    return folder.result


def _file_chunks(store: PingStore, file: PingFile, spec: ScanSpec) -> Iterable[Chunk]:
    """A file's chunks; when corrupt files are skipped, only once the whole file was read, so
    that none of a file that turns out corrupt is counted (it costs ~100 bytes a ping held)."""
    chunks = scan_file(store, file, spec)
    return list(chunks) if spec.skip_corrupt else chunks


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker when its parent dies (SIGKILL included):
    otherwise a worker can wait for ever to hand its last chunk to nobody."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # then only the queue time-outs below notice an orphan


class _Orphaned(Exception):
    """The parent is gone: nobody will read what this worker makes."""


def _worker(store_url: str, tasks: Any, results: Any) -> None:
    faults.fault_point(WORKER_BEGINS)
    # Ctrl-C reaches the whole process group, and a forked worker inherits the command's
    # SIGTERM handler: the parent stops the workers, so they take neither as their own. Both
    # signals were blocked across the fork (`_start_worker`): one sent meanwhile comes now.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with_parent()
    parent = multiprocessing.parent_process()

    def call(method: Callable[..., Any], *args: Any) -> Any:
        """A queue call that gives up when the parent died (SIGKILL) instead of blocking."""
        while True:
            try:
                return method(*args, timeout=1.0)
            except (queue.Full, queue.Empty):
                if parent is not None and not parent.is_alive():
                    raise _Orphaned from None

    try:
        _work(store_url, lambda: call(tasks.get), lambda item: call(results.put, item))
    except _Orphaned:
        os._exit(1)


def _work(store_url: str, next_task: Callable[[], Any],
          send: Callable[[tuple[str, int, Any]], None]) -> None:
    try:
        store = PingStore(store_url)
    except CrashAggregatesError as exc:
        send(("error", -1, str(exc)))
        return
    while (task := next_task()) is not None:
        index, file, spec = task
        try:
            for chunk in _file_chunks(store, file, spec):
                send(("chunk", index, chunk))
            send(("done", index, None))
        except InputError as exc:
            send(("corrupt" if spec.skip_corrupt else "error", index, str(exc)))
        except CrashAggregatesError as exc:
            send(("error", index, str(exc)))
        except Exception as exc:  # never lose a worker silently: name the file
            send(("error", index, f"{file.path}: {type(exc).__name__}: {exc}"))


def _parallel_chunks(
    store_url: str, jobs: Sequence[tuple[PingFile, ScanSpec]], workers: int
) -> Iterator[tuple[int, Chunk | str]]:
    """(job index, chunk) as workers read, and (job index, message) for a skipped file."""
    # fork starts a worker at once, without importing anything again; but forking a process
    # that runs threads (a driver's, a test runner's) is unsafe, so then spawn.
    forkable = threading.active_count() == 1 and os.name == "posix"
    context: Any = multiprocessing.get_context("fork" if forkable else "spawn")
    tasks = context.Queue()
    results = context.Queue(maxsize=4 * workers)
    # However this stops (an error, Ctrl-C, SIGTERM while the workers start), the process must
    # not wait at exit for a queue's thread to flush tasks into a pipe nobody reads any more:
    # that hung a job stopped while it started its workers.
    tasks.cancel_join_thread()
    results.cancel_join_thread()
    processes: list[Any] = []
    try:
        # Largest files first, so one big file does not start last and run alone.
        for index in sorted(range(len(jobs)), key=lambda i: -jobs[i][0].size):
            tasks.put((index, *jobs[index]))
        for _ in range(workers):
            tasks.put(None)
        for _ in range(workers):
            processes.append(_start_worker(context, store_url, tasks, results))
            faults.fault_point(WORKER_STARTED)
        remaining = len(jobs)
        while remaining:
            try:
                kind, index, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise InputError(
                        f"a worker process died (exit code {dead[0].exitcode}) while reading "
                        f"the ping files") from None
                continue
            if kind == "chunk":
                yield index, payload
            elif kind == "done":
                remaining -= 1
            elif kind == "corrupt":
                remaining -= 1
                yield index, payload
            else:
                raise InputError(payload)
        for process in processes:
            process.join(timeout=10)
    finally:
        _stop_pool(processes, [results, tasks])


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _start_worker(context: Any, store_url: str, tasks: Any, results: Any) -> Any:
    """A started worker process. Until the worker has set its own signal handlers it would
    take a SIGTERM (to the process group) with the parent's, as a KeyboardInterrupt and a
    traceback: the signals stay blocked across the fork, and the worker unblocks them."""
    process = context.Process(target=_worker, args=(store_url, tasks, results), daemon=True)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return process


def _stop_pool(processes: list[Any], queues: list[Any]) -> None:
    """Stop every worker and close the queues. A Ctrl-C (or a first SIGTERM) meanwhile does
    not cut this short, leaving workers behind: it is raised once the pool is down."""
    interrupt: KeyboardInterrupt | None = None
    steps: list[Callable[[], None]] = [
        *(functools.partial(_terminate, process) for process in processes),
        *(functools.partial(process.join, 5) for process in processes),
        *(q.close for q in queues),
    ]
    for step in steps:
        try:
            step()
        except KeyboardInterrupt as exc:
            interrupt = interrupt or exc
    if interrupt is not None:
        raise interrupt


def _terminate(process: Any) -> None:
    faults.fault_point(POOL_STOPPING)
    if process.is_alive():
        process.terminate()
