"""Synthetic ping stores: realistic Telemetry v4 "main" and "crash" pings, messy lines included.

Pings start from two real example pings shipped as package data (see `data/README.md`). A
population of clients differs by channel, OS and build, so crash rates computed from a store show
real differences (nightly crashes more than release, one nightly build much more, Linux less), and
~1% of the clients are in crash loops. Pings arrive late, but no session or crash is dated
before its build's date (the date in its build id). About 2% of the lines are messy on purpose
(bad build ids, non-main crashes, duplicates, malformed JSON, ...) to exercise every rule of
SPEC.md section 3.

The same arguments and seed give byte-identical files: all randomness comes from
`random.Random(seed)`, and a ping's bytes depend only on its planned record.

Speed: a heavy main ping is ~180 KB, of which only ~10 KB vary between pings. The static parts
(histograms, per-process payloads...) are serialised once and spliced in as bytes.
"""

from __future__ import annotations

import gzip
import math
import random
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import cache
from importlib import resources
from io import BufferedWriter
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import orjson
import zstandard

__all__ = ["GenerateSummary", "generate_store"]

Json = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")  # a generator's record type

MESSY_SHARE = 0.02  # share of a day's lines that are messy on purpose
_FLUSH_BYTES = 8 << 20  # write to the compressor in chunks of this size
_HEAVY_MARK = "@@heavy-payload@@"  # placeholder for the pre-serialised histograms
_HEAVY_MARK_JSON = orjson.dumps(_HEAVY_MARK)
_SUBPROCESS_KEYS = ("content", "plugin", "gmplugin", "gpu")


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate_store` wrote."""

    out_dir: Path
    files: int
    pings: int  # non-blank lines, messy ones included
    blank_lines: int
    json_bytes: int  # uncompressed bytes, newlines included
    compressed_bytes: int  # bytes on disk
    regression_build_id: str = ""  # the nightly build made to crash much more than the others


# --------------------------------------------------------------------------------------------
# Population: builds and clients


@dataclass(frozen=True, slots=True)
class _Build:
    version: str  # environment.build.version
    display_version: str
    build_id: str  # 14 digits
    crash_factor: float  # multiplies every crash rate of the clients running it
    built: date  # the date of its build id: no activity on it can be earlier


@dataclass(frozen=True, slots=True)
class _Catalog:
    fixed: dict[str, tuple[_Build, ...]]  # release, beta, esr: a client keeps one of these
    nightly: dict[date, _Build]  # one nightly a day; nightly clients update daily


@dataclass(frozen=True, slots=True)
class _Client:
    client_id: str
    sample_id: int
    channel: str
    os_name: str
    os_version: str
    architecture: str
    country: str
    tz_hours: int
    compositor: str
    e10s_enabled: bool
    e10s_cohort: str
    experiment: dict[str, str]  # {} or {"id": ..., "branch": ...}
    addon_share: float  # share of the template's add-ons and plugins it has (varies sizes)
    build_slot: int  # index of its fixed build, or update lag in days on nightly
    usage_weight: float  # relative number of main pings it sends
    frailty: float  # client-level crash-rate multiplier, mean 1, heavy tailed
    crash_loop: bool
    sends_process_type: bool  # older builds leave payload.processType out of crash pings
    sparse_histograms: bool  # only the keyed-histogram keys that counted something


@dataclass(frozen=True, slots=True)
class _Population:
    clients: list[_Client]
    cum_weights: list[float]
    loopers: list[_Client]
    catalog: _Catalog


_CHANNELS = (("release", 0.78), ("beta", 0.10), ("nightly", 0.08), ("esr", 0.04))
_CHANNEL_RISK = {"release": 1.0, "beta": 1.6, "nightly": 3.0, "esr": 0.7}
_OS_NAMES = (("Windows_NT", 0.82), ("Darwin", 0.11), ("Linux", 0.07))
_OS_RISK = {"Windows_NT": 1.0, "Darwin": 0.8, "Linux": 0.55}
_OS_VERSIONS = {
    "Windows_NT": (("10.0", 0.5), ("6.1", 0.38), ("6.3", 0.07), ("6.2", 0.02), ("5.1", 0.03)),
    "Darwin": (("17.5.0", 0.4), ("16.7.0", 0.35), ("15.6.0", 0.25)),
    "Linux": (("4.15.0-20-generic", 0.5), ("4.13.0-38-generic", 0.3), ("4.4.0-119-generic", 0.2)),
}
_COUNTRIES: tuple[tuple[tuple[str, tuple[int, ...]], float], ...] = (
    (("US", (-8, -7, -6, -5)), 20), (("DE", (1, 2)), 11), (("FR", (1, 2)), 7),
    (("BR", (-3, -2)), 6), (("RU", (3, 5, 7)), 6), (("IN", (5,)), 5), (("PL", (1, 2)), 5),
    (("GB", (0, 1)), 5), (("IT", (1, 2)), 4), (("ES", (1, 2)), 4), (("CN", (8,)), 4),
    (("JP", (9,)), 4), (("CA", (-8, -5, -4)), 3), (("ID", (7,)), 3), (("MX", (-6, -5)), 3),
    (("KE", (3,)), 1), (("??", (0,)), 1),
)
# (cohort, e10sEnabled) by channel, as in the 2016 e10s roll-out
_E10S: dict[str, tuple[tuple[tuple[str, bool], float], ...]] = {
    "release": ((("test", True), 45), (("control", False), 25), (("disqualified", False), 15),
                (("optedIn", True), 10), (("optedOut", False), 5)),
    "beta": ((("test", True), 60), (("control", False), 20), (("disqualified", False), 15),
             (("optedIn", True), 5)),
    "nightly": ((("unsupportedChannel", True), 95), (("optedOut", False), 5)),
    "esr": ((("unsupportedChannel", False), 90), (("optedIn", True), 10)),
}
_EXPERIMENTS = (
    ("e10s-beta46-noapz@experiments.mozilla.org", ("control", "experiment")),
    ("flash-protectedmode-beta@experiments.mozilla.org", ("control", "disabled")),
    ("pref-flip-quantum-css-style-r1-1381147", ("Control", "Treatment")),
)
_ESR_MAJORS = (38, 45, 52, 60, 68, 78, 91, 102, 115, 128, 140)


def _pick(rng: random.Random, table: Sequence[tuple[T, float]]) -> T:
    return rng.choices([value for value, _ in table], [weight for _, weight in table])[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _make_catalog(rng: random.Random, start: date, end: date) -> _Catalog:
    """Builds dated before `start`, versions following the six-week release train."""
    major = max(30, 46 + (start - date(2016, 4, 26)).days // 42)

    def build(version: str, display: str, day: date, factor: float = 1.0) -> _Build:
        build_id = f"{day:%Y%m%d}{rng.randrange(24):02d}{rng.randrange(60):02d}"
        return _Build(version, display, build_id + f"{rng.randrange(60):02d}", factor, day)

    def ago(days: int) -> date:
        return start - timedelta(days=days)

    esr = max((m for m in _ESR_MAJORS if m <= major), default=major)
    esr_version = f"{esr}.{min(major - esr, 9)}.0"
    fixed = {
        # the dot release fixes crashes
        "release": (build(f"{major}.0", f"{major}.0", ago(40)),
                    build(f"{major}.0.1", f"{major}.0.1", ago(12), 0.8)),
        "beta": tuple(build(f"{major + 1}.0", f"{major + 1}.0b{n}", ago(days), factor)
                      for n, days, factor in ((3, 15, 1.1), (5, 9, 1.0), (7, 4, 0.9))),
        "esr": (build(esr_version, esr_version + "esr", ago(30)),),
    }
    # one nightly, near the middle of the range, is much worse than the others
    bad = start + timedelta(days=(end - start).days // 2 - 2)
    nightly = {}
    for offset in range((end - start).days + 11):
        day = ago(10) + timedelta(days=offset)
        nightly[day] = build(f"{major + 2}.0a1", f"{major + 2}.0a1", day,
                             4.0 if day == bad else 1.0)
    return _Catalog(fixed, nightly)


def _compositors(os_name: str, channel: str) -> tuple[tuple[str, float], ...]:
    webrender = 0.25 if channel == "nightly" else 0.0
    if os_name == "Windows_NT":
        return (("d3d11", 0.78 - webrender), ("webrender", webrender), ("d3d9", 0.05),
                ("basic", 0.15), ("none", 0.02))
    if os_name == "Darwin":
        return (("opengl", 0.9 - webrender), ("webrender", webrender), ("basic", 0.1))
    return (("basic", 0.65), ("opengl", 0.3), ("none", 0.05))


def _make_client(rng: random.Random, crash_loop: bool) -> _Client:
    client_id = _uuid(rng)
    channel = _pick(rng, _CHANNELS)
    os_name = _pick(rng, _OS_NAMES)
    country, zones = _pick(rng, _COUNTRIES)
    cohort, e10s = _pick(rng, _E10S[channel])
    wide = os_name == "Darwin" or rng.random() < (0.6 if os_name == "Windows_NT" else 0.85)
    experiment: dict[str, str] = {}
    if rng.random() < 0.03:
        exp_id, branches = rng.choice(_EXPERIMENTS)
        experiment = {"id": exp_id, "branch": rng.choice(branches)}
    slots = {"release": 2, "beta": 3, "esr": 1, "nightly": 4}[channel]
    return _Client(
        client_id=client_id,
        sample_id=zlib.crc32(client_id.encode()) % 100,  # as the ingestion pipeline does
        channel=channel,
        os_name=os_name,
        os_version=_pick(rng, _OS_VERSIONS[os_name]),
        architecture="x86-64" if wide else "x86",
        country=country,
        tz_hours=rng.choice(zones),
        compositor=_pick(rng, _compositors(os_name, channel)),
        e10s_enabled=e10s,
        e10s_cohort=cohort,
        experiment=experiment,
        addon_share=rng.random(),
        build_slot=rng.choices(range(slots), [7, 3, 2, 1][:slots])[0],
        usage_weight=rng.gammavariate(1.5, 1 / 1.5),
        frailty=rng.gammavariate(0.5, 2.0),
        crash_loop=crash_loop,
        sends_process_type=rng.random() < 0.85,
        sparse_histograms=rng.random() < 0.2,
    )


def _make_population(rng: random.Random, start: date, end: date,
                     pings_per_day: int) -> _Population:
    catalog = _make_catalog(rng, start, end)
    size = max(20, pings_per_day // 3)
    loopers = set(rng.sample(range(size), max(1, round(size * 0.01))))
    clients = [_make_client(rng, i in loopers) for i in range(size)]
    cum: list[float] = []
    total = 0.0
    for client in clients:
        total += client.usage_weight
        cum.append(total)
    return _Population(clients, cum, [c for c in clients if c.crash_loop], catalog)


def _build_of(client: _Client, catalog: _Catalog, day: date) -> _Build:
    if client.channel != "nightly":
        return catalog.fixed[client.channel][client.build_slot]
    # yesterday's nightly, or an older one for clients that update late
    return catalog.nightly[day - timedelta(days=1 + client.build_slot)]


def _risk(client: _Client, build: _Build) -> float:
    return (_CHANNEL_RISK[client.channel] * _OS_RISK[client.os_name] * build.crash_factor
            * client.frailty)


# --------------------------------------------------------------------------------------------
# Records: what one line will be. Rendering a record depends on nothing else, so a record
# written twice gives an exact duplicate line.


class _Drop:
    """Patch value: remove the key."""


_DROP = _Drop()
_Patch = tuple[tuple[str, ...], object]


@dataclass(frozen=True, slots=True)
class _Main:
    client: _Client
    build: _Build
    doc_id: str
    day: date  # submission date
    submission: str  # meta.submissionDate as written
    activity: date  # date of payload.info.subsessionStartDate
    length: int  # payload.info.subsessionLength
    reason: str
    counts: tuple[int, int, int, int, int]  # content, plugin, gmplugin, gpu, shutdown kills
    hist_keep: float  # share of histograms kept (heavy pings)
    processes: int  # 0: no per-process payloads, 1: as the template, 2: more processes
    seed: int  # everything else (session ids, histogram subset, times)
    patches: tuple[_Patch, ...] = ()


@dataclass(frozen=True, slots=True)
class _Crash:
    client: _Client
    build: _Build
    doc_id: str
    day: date
    submission: str
    crash_date: date
    process_type: str | None  # None: key absent, which means "main"
    seed: int
    patches: tuple[_Patch, ...] = ()


@dataclass(frozen=True, slots=True)
class _Raw:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Truncated:
    of: _Main
    cut: float  # share of the line that is kept


_Record = _Main | _Crash | _Raw | _Truncated
_BLANK = _Raw(b"")


def _patched(doc: Json, path: tuple[str, ...], value: object) -> Json:
    """A copy of `doc` with `value` at `path`; shared nested objects are copied, not changed."""
    out = dict(doc)
    key, rest = path[0], path[1:]
    if rest:
        inner = out.get(key)
        out[key] = _patched(inner if isinstance(inner, dict) else {}, rest, value)
    elif isinstance(value, _Drop):
        out.pop(key, None)
    else:
        out[key] = value
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    # Knuth: fine for the small rates of crashes
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _subsession_length(rng: random.Random) -> int:
    u = rng.random()
    if u < 0.003:
        return -rng.randint(1, 7200)  # clock went back
    if u < 0.018:
        return rng.randint(90_001, 600_000)  # > 25 h: sleep, clock skew
    if u < 0.25:
        return rng.randint(3 * 3600, 86_400)  # a browser left open all day
    return min(86_400, int(math.exp(rng.gauss(math.log(1500), 1.3))))


def _activity_lag(rng: random.Random) -> int:
    u = rng.random()
    if u < 0.98:
        return _pick(rng, ((0, 50), (1, 30), (2, 10), (3, 5), (4, 1), (5, 1), (6, 1), (7, 1)))
    return rng.randint(8, 40)  # a ping stuck on a laptop for weeks


# --------------------------------------------------------------------------------------------
# Planning a day


_MESSY_KINDS: tuple[tuple[str, float], ...] = (
    ("duplicate", 3), ("non_main_crash", 2), ("malformed", 2), ("other_doc_type", 1.5),
    ("bad_build_id", 1.5), ("bad_subsession_length", 1), ("bad_start_date", 1),
    ("bad_crash_date", 0.5), ("bad_crash_counts", 0.5), ("no_client_id", 0.5),
    ("meta_fallback", 0.5),
)
FLAT_ONLY_KINDS: tuple[tuple[str, float], ...] = (("undated", 1),)


def _allocate(total: int, weights: Sequence[tuple[str, float]]) -> list[tuple[str, int]]:
    """Split `total` by weight, largest remainders first: every kind shows up when it can."""
    scale = total / sum(w for _, w in weights)
    shares = [(kind, w * scale) for kind, w in weights]
    counts = {kind: int(share) for kind, share in shares}
    left = total - sum(counts.values())
    by_remainder = sorted(shares, key=lambda ks: ks[1] - int(ks[1]), reverse=True)
    for kind, _ in by_remainder[:left]:
        counts[kind] += 1
    return [(kind, counts[kind]) for kind, _ in weights]


class MessyLines(Generic[R]):
    """The messy share of a generated day, for both generators' planners: `messy_kinds` (by
    weight, plus `undated` in the flat layout), each kind's variants in turn."""

    messy_kinds: tuple[tuple[str, float], ...]
    flat: bool
    turns: dict[str, int]  # rotates through the variants of each messy kind

    def _messy_line(self, kind: str, day: date, normal: list[R]) -> R:
        raise NotImplementedError

    def _turn(self, kind: str, options: Sequence[T]) -> T:
        """The next variant of a messy kind, in turn, so that each variant shows up."""
        n = self.turns.get(kind, 0)
        self.turns[kind] = n + 1
        return options[n % len(options)]

    def _messy(self, day: date, total: int, normal: list[R]) -> list[R]:
        kinds = self.messy_kinds + (FLAT_ONLY_KINDS if self.flat else ())
        lines: list[R] = []
        for kind, count in _allocate(total, kinds):
            lines.extend(self._messy_line(kind, day, normal) for _ in range(count))
        return lines


class _Planner(MessyLines[_Record]):
    """Decides every line of a day; all randomness comes from one `random.Random`."""

    messy_kinds = _MESSY_KINDS

    def __init__(self, rng: random.Random, population: _Population, pings_per_day: int,
                 flat: bool) -> None:
        self.rng = rng
        self.pop = population
        self.pings_per_day = pings_per_day
        self.flat = flat
        self.turns = {}

    def plan_day(self, day: date) -> list[_Record]:
        messy = round(self.pings_per_day * MESSY_SHARE)
        normal = self._normal(day, self.pings_per_day - messy)
        return normal + self._messy(day, messy, normal)

    # -- normal lines ------------------------------------------------------------------------

    def _submission(self, day: date) -> str:
        if self.flat and self.rng.random() < 0.3:
            return day.isoformat()
        return f"{day:%Y%m%d}"

    def _normal(self, day: date, budget: int) -> list[_Record]:
        records = self._crash_loops(day, budget // 20)
        while len(records) < budget:
            index = self.rng.choices(range(len(self.pop.clients)), cum_weights=self.pop.cum_weights)
            main = self._main(self.pop.clients[index[0]], day)
            records.append(main)
            records.extend(self._main_crashes(main))
        del records[budget:]
        return records

    def _main(self, client: _Client, day: date, length: int | None = None) -> _Main:
        rng = self.rng
        build = _build_of(client, self.pop.catalog, day)
        length = _subsession_length(rng) if length is None else length
        reason = _pick(rng, (("shutdown", 60), ("daily", 20), ("environment-change", 15),
                             ("aborted-session", 5)))
        # at least 45% of the histograms: no heavy ping is below ~60 KB
        keep = 1.0 if rng.random() < 0.5 else rng.uniform(0.45, 1.0)
        return _Main(
            client=client, build=build, doc_id=_uuid(rng), day=day,
            submission=self._submission(day),
            # a ping can be late, but its session cannot start before its build existed
            activity=max(day - timedelta(days=_activity_lag(rng)), build.built),
            length=length, reason=reason, counts=self._subprocess_crashes(client, build, length),
            hist_keep=keep, processes=_pick(rng, ((0, 15), (1, 65), (2, 20))),
            seed=rng.getrandbits(64),
        )

    def _subprocess_crashes(self, client: _Client, build: _Build,
                            length: int) -> tuple[int, int, int, int, int]:
        """Crash counts per 1,000 hours, scaled by the client's risk and usage."""
        rate = _risk(client, build) * min(25.0, max(0.0, length / 3600)) / 1000
        windows = client.os_name == "Windows_NT"
        gpu_process = windows and client.compositor in ("d3d11", "webrender")
        e10s = client.e10s_enabled

        def draw(per_1000h: float, possible: bool = True) -> int:
            return _poisson(self.rng, rate * per_1000h) if possible else 0

        return (draw(5.0, e10s), draw(2.0 if windows else 0.5), draw(0.3),
                draw(1.5, gpu_process), draw(2.5, e10s))

    def _crash(self, client: _Client, build: _Build, day: date, crash_date: date,
               process_type: str | None = "main") -> _Crash:
        if process_type == "main" and not client.sends_process_type:
            process_type = None
        return _Crash(client, build, _uuid(self.rng), day, self._submission(day), crash_date,
                      process_type, self.rng.getrandbits(64))

    def _main_crashes(self, main: _Main) -> list[_Record]:
        hours = min(25.0, max(0.0, main.length / 3600))
        count = _poisson(self.rng, 3.0 * _risk(main.client, main.build) * hours / 1000)
        return [self._crash(main.client, main.build, main.day, main.activity)
                for _ in range(count)]

    def _crash_loops(self, day: date, cap: int) -> list[_Record]:
        """A looping client sends a short main ping and a burst of crash pings."""
        loopers = [c for c in self.pop.loopers if self.rng.random() < 0.15]
        if not loopers:
            loopers = [self.rng.choice(self.pop.loopers)]
        records: list[_Record] = []
        for client in loopers:
            main = replace(self._main(client, day, length=self.rng.randint(5, 600)),
                           reason="aborted-session")
            build = main.build
            records.append(main)
            records.extend(self._crash(client, build, day, day)
                           for _ in range(self.rng.randint(4, 15)))
        return records[:cap]

    # -- messy lines -------------------------------------------------------------------------

    def _any_client(self) -> _Client:
        return self.rng.choice(self.pop.clients)

    def _some_ping(self, day: date) -> _Main | _Crash:
        """A fresh main or crash ping (in turn) to spoil."""
        main = self._main(self._any_client(), day)
        if self._turn("ping", ("main", "crash")) == "main":
            return main
        return self._crash(main.client, main.build, day, main.activity)

    def _messy_line(self, kind: str, day: date, normal: list[_Record]) -> _Record:
        if kind == "duplicate":
            # the very same record: rendered again, it gives an identical line
            return self.rng.choice(normal) if normal else self._main(self._any_client(), day)
        if kind == "malformed":
            return self._malformed(day)
        if kind == "other_doc_type":
            return self._other_doc_type(day)
        if kind == "non_main_crash":
            main = self._main(self._any_client(), day)
            process = self._turn(kind, ("content", "content", "gpu"))
            return self._crash(main.client, main.build, day, main.activity, process)
        if kind in ("bad_subsession_length", "bad_start_date", "bad_crash_counts"):
            return self._spoil(self._main(self._any_client(), day), self._main_patch(kind, day))
        if kind == "bad_crash_date":
            main = self._main(self._any_client(), day)
            crash = self._crash(main.client, main.build, day, main.activity)
            value = self._turn(kind, (f"{day.year}-02-30", None, f"{day:%Y%m%d}", "yesterday"))
            return self._spoil(crash, [(("payload", "crashDate"), value)])
        ping = self._some_ping(day)
        return self._spoil(ping, self._ping_patch(kind, day, ping.build.build_id))

    @staticmethod
    def _spoil(record: _Main | _Crash, patches: Sequence[_Patch]) -> _Main | _Crash:
        return replace(record, patches=tuple(patches))

    def _main_patch(self, kind: str, day: date) -> list[_Patch]:
        if kind == "bad_subsession_length":
            value = self._turn(kind, (_DROP, 3600.5, True, False))
            return [(("payload", "info", "subsessionLength"), value)]
        if kind == "bad_start_date":
            value = self._turn(kind, (
                f"{day.year}-02-30T00:00:00.0+01:00", "yesterday", None, int(f"{day:%Y%m%d}"),
                f"{day:%d/%m/%Y}", _DROP, "",
            ))
            return [(("payload", "info", "subsessionStartDate"), value)]
        histogram, key = self._turn("counts_path", (
            ("SUBPROCESS_CRASHES_WITH_DUMP", "content"), ("SUBPROCESS_KILL_HARD", "ShutDownKill"),
        ))
        value = self._turn(kind, (-2, 1.5, "3", _DROP, None))
        return [(("payload", "keyedHistograms", histogram, key, "values", "0"), value)]

    def _ping_patch(self, kind: str, day: date, good: str) -> list[_Patch]:
        if kind == "bad_build_id":
            value = self._turn(kind, (
                good[:10], good[:12] + "ab", None, int(good),
                good.translate({ord(d): ord(d) - ord("0") + 0xFF10 for d in "0123456789"}),
                good + "\n", "",
            ))
            return [(("environment", "build", "buildId"), value),
                    (("application", "buildId"), value)]
        if kind == "no_client_id":
            return [(("clientId",), _DROP)]
        if kind == "meta_fallback":  # old ingestion: readers fall back to the document
            return [(("meta", key), _DROP) for key in ("docType", "normalizedChannel", "appName")]
        if kind == "undated":
            key = ("meta", "submissionDate")
            return [self._turn(kind, (
                (key, _DROP), (key, ""), (key, None), (key, f"{day.year}1301"),
                (key, f"{day.year}-02-30"), (key, int(f"{day:%Y%m%d}")), (("meta",), _DROP),
            ))]
        raise ValueError(f"unknown messy kind {kind!r}")

    def _malformed(self, day: date) -> _Record:
        variant = self._turn("malformed", ("truncated", "list", "not_json", "utf8", "null"))
        if variant == "truncated":
            return _Truncated(self._main(self._any_client(), day), self.rng.uniform(0.05, 0.95))
        if variant == "utf8":
            return _Raw(b'{"meta":{"submissionDate":"' + f"{day:%Y%m%d}".encode()
                        + b'","docType":"main"},"id":"' + _uuid(self.rng).encode()
                        + b'","clientId":"\xff\xfe\xc3(","type":"main"}')
        return _Raw({"list": b"[1,2]", "not_json": b"not json", "null": b"null"}[variant])

    def _other_doc_type(self, day: date) -> _Raw:
        doc_type = self._turn("other_doc_type", ("event", "health"))
        client = self._any_client()
        doc_id = _uuid(self.rng)
        payload: Json = (
            {"reason": "periodic", "processStartTimestamp": 1520000000000,
             "events": {"parent": [[1234, "navigation", "search", "urlbar", "enter",
                                    None, {"engine": "google"}]]}}
            if doc_type == "event"
            else {"os": {"name": client.os_name, "version": client.os_version},
                  "reason": "immediate", "sendFailure": {"eUnreachable": 2, "timeout": 1}}
        )
        doc = {
            "meta": {"submissionDate": self._submission(day), "docType": doc_type,
                     "geoCountry": client.country, "normalizedChannel": client.channel,
                     "appName": "Firefox", "sampleId": client.sample_id, "documentId": doc_id},
            "clientId": client.client_id, "id": doc_id, "type": doc_type, "version": 4,
            "creationDate": f"{day:%Y-%m-%d}T12:00:00.000Z", "payload": payload,
        }
        return _Raw(orjson.dumps(doc))


# --------------------------------------------------------------------------------------------
# Rendering records to bytes


@cache
def _template(name: str) -> Json:
    packed = resources.files("crash_rate_aggregates").joinpath("data", name).read_bytes()
    doc: Json = orjson.loads(gzip.decompress(packed))
    return doc


def _count_histogram(n: int) -> Json:
    return {"bucket_count": 3, "histogram_type": 4, "range": [1, 2], "sum": n,
            "values": {"0": n, "1": 0}}


def _head(items: Any, share: float) -> Any:
    """The first `share` of a list or an object's members."""
    if isinstance(items, dict):
        return dict(list(items.items())[: round(len(items) * share)])
    if isinstance(items, list):
        return items[: round(len(items) * share)]
    return items


def _members(obj: Json) -> bytes:
    """`"k":v,...` of a JSON object, to splice into a larger one."""
    return orjson.dumps(obj)[1:-1]


class _Renderer:
    """Turns records into lines; the big static parts are serialised once, here."""

    def __init__(self, heavy: bool) -> None:
        self.heavy = heavy
        main = _template("main_ping_template.json.gz")
        crash = _template("crash_ping_template.json.gz")
        self.main_env: Json = main["environment"]
        self.main_app: Json = main["application"]
        self.crash_env: Json = {**crash["environment"], "addons": main["environment"]["addons"]}
        self.crash_app: Json = crash["application"]
        self.crash_payload: Json = crash["payload"]
        payload: Json = main["payload"]
        self.info: Json = payload["info"]
        self.keyed: Json = {k: v for k, v in payload["keyedHistograms"].items()
                            if k not in ("SUBPROCESS_CRASHES_WITH_DUMP", "SUBPROCESS_KILL_HARD")}
        self.histograms = [_members({k: v}) for k, v in payload["histograms"].items()]
        self.all_histograms = b"{" + b",".join(self.histograms) + b"}"
        rest = {k: v for k, v in payload.items()
                if k not in ("info", "keyedHistograms", "histograms", "processes")}
        self.rest = b"," + _members(rest)
        self.processes = self._process_variants(payload["processes"])

    @staticmethod
    def _process_variants(processes: Json) -> tuple[bytes, bytes, bytes]:
        content = processes["content"]
        more = {**processes, "gpu": {**processes.get("gpu", {}), **content},
                "extension": content}
        return (b"", b',"processes":' + orjson.dumps(processes),
                b',"processes":' + orjson.dumps(more))

    def render(self, record: _Record) -> bytes:
        if isinstance(record, _Raw):
            return record.data
        if isinstance(record, _Truncated):
            line = self.render(record.of)
            return line[: max(1, int(len(line) * record.cut))]
        if isinstance(record, _Crash):
            return orjson.dumps(self._crash_doc(record))
        return self._main_line(record)

    # -- shared parts ------------------------------------------------------------------------

    @staticmethod
    def _meta(client: _Client, submission: str, doc_type: str, doc_id: str) -> Json:
        return {"submissionDate": submission, "docType": doc_type, "geoCountry": client.country,
                "normalizedChannel": client.channel, "appName": "Firefox",
                "sampleId": client.sample_id, "documentId": doc_id}

    @staticmethod
    def _application(base: Json, client: _Client, build: _Build) -> Json:
        abi = "x86_64" if client.architecture == "x86-64" else "x86"
        compiler = "msvc" if client.os_name == "Windows_NT" else "gcc3"
        return {**base, "architecture": client.architecture, "buildId": build.build_id,
                "channel": client.channel, "name": "Firefox", "platformVersion": build.version,
                "version": build.version, "displayVersion": build.display_version,
                "xpcomAbi": f"{abi}-{compiler}"}

    def _environment(self, base: Json, client: _Client, build: _Build) -> Json:
        system = base["system"]
        gfx = system["gfx"]
        settings = base["settings"]
        addons = base["addons"]
        return {
            **base,
            "build": {**base["build"], "architecture": client.architecture,
                      "buildId": build.build_id, "version": build.version,
                      "platformVersion": build.version, "displayVersion": build.display_version},
            "system": {**system,
                       "os": {**system["os"], "name": client.os_name,
                              "version": client.os_version},
                       "gfx": {**gfx, "features": {**gfx["features"],
                                                   "compositor": client.compositor}}},
            "settings": {**settings, "e10sEnabled": client.e10s_enabled,
                         "e10sCohort": client.e10s_cohort,
                         "update": {**settings.get("update", {}), "channel": client.channel}},
            "addons": {**addons, "activeExperiment": client.experiment,
                       "activeAddons": _head(addons["activeAddons"], client.addon_share),
                       "activePlugins": _head(addons["activePlugins"], client.addon_share)},
        }

    @staticmethod
    def _creation_date(day: date, rng: random.Random) -> str:
        return (f"{day:%Y-%m-%d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
                f"{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z")

    @staticmethod
    def _apply(doc: Json, patches: Sequence[_Patch]) -> Json:
        for path, value in patches:
            doc = _patched(doc, path, value)
        return doc

    # -- main pings --------------------------------------------------------------------------

    def _main_line(self, m: _Main) -> bytes:
        rng = random.Random(m.seed)
        client = m.client
        payload: Json = {"info": self._info(m, rng), "keyedHistograms": self._keyed(m)}
        if self.heavy:
            payload["histograms"] = _HEAVY_MARK  # replaced below by the serialised histograms
        doc = {
            "meta": self._meta(client, m.submission, "main", m.doc_id),
            "application": self._application(self.main_app, client, m.build),
            "clientId": client.client_id,
            "creationDate": self._creation_date(m.day, rng),
            "environment": self._environment(self.main_env, client, m.build),
            "id": m.doc_id,
            "payload": payload,
            "type": "main",
            "version": 4,
        }
        line = orjson.dumps(self._apply(doc, m.patches))
        if not self.heavy:
            return line
        head, tail = line.split(_HEAVY_MARK_JSON, 1)
        return b"".join((head, self._histograms(m, rng), self.processes[m.processes],
                         self.rest, tail))

    def _histograms(self, m: _Main, rng: random.Random) -> bytes:
        if m.hist_keep >= 1.0:
            return self.all_histograms
        kept = [h for h in self.histograms if rng.random() < m.hist_keep]
        return b"{" + b",".join(kept) + b"}"

    def _info(self, m: _Main, rng: random.Random) -> Json:
        tz = m.client.tz_hours
        start = f"{m.activity:%Y-%m-%d}T00:00:00.0{'+' if tz >= 0 else '-'}{abs(tz):02d}:00"
        return {
            **self.info,
            "previousBuildId": m.build.build_id,
            "previousSessionId": _uuid(rng),
            "previousSubsessionId": _uuid(rng),
            "profileSubsessionCounter": rng.randint(1, 3000),
            "reason": m.reason,
            "sessionId": _uuid(rng),
            "sessionLength": max(0, m.length) + rng.randrange(7200),
            "sessionStartDate": start,
            "subsessionCounter": rng.randint(1, 6),
            "subsessionId": _uuid(rng),
            "subsessionLength": m.length,
            "subsessionStartDate": start,
            "timezoneOffset": tz * 60,
        }

    def _keyed(self, m: _Main) -> Json:
        sparse = m.client.sparse_histograms  # real pings often list only keys that counted
        content, plugin, gmplugin, gpu, kills = m.counts
        dumps = {key: _count_histogram(n)
                 for key, n in zip(_SUBPROCESS_KEYS, (content, plugin, gmplugin, gpu), strict=True)
                 if n or not sparse}
        kill = {"ShutDownKill": _count_histogram(kills)} if kills or not sparse else {}
        ours = {"SUBPROCESS_CRASHES_WITH_DUMP": dumps, "SUBPROCESS_KILL_HARD": kill}
        return {**self.keyed, **ours} if self.heavy else ours

    # -- crash pings -------------------------------------------------------------------------

    def _crash_doc(self, c: _Crash) -> Json:
        rng = random.Random(c.seed)
        client, build = c.client, c.build
        hour = rng.randrange(24)
        payload = {
            **self.crash_payload,
            "crashDate": c.crash_date.isoformat(),
            "crashTime": f"{c.crash_date.isoformat()}T{hour:02d}:00:00.000Z",
            "crashId": _uuid(rng),
            "sessionId": _uuid(rng),
            "minidumpSha256Hash": f"{rng.getrandbits(256):064x}",
            "metadata": {**self.crash_payload["metadata"], "BuildID": build.build_id,
                         "ReleaseChannel": client.channel, "Version": build.version,
                         "UptimeTS": f"{rng.uniform(1, 9999):.7f}"},
            "processType": c.process_type,
        }
        if c.process_type in ("main", None):  # an IPC error is a child-process matter
            payload["metadata"].pop("ipc_channel_error", None)
        if c.process_type is None:
            del payload["processType"]
        doc = {
            "meta": self._meta(client, c.submission, "crash", c.doc_id),
            "application": self._application(self.crash_app, client, build),
            "clientId": client.client_id,
            "creationDate": self._creation_date(c.day, rng),
            "environment": self._environment(self.crash_env, client, build),
            "id": c.doc_id,
            "payload": payload,
            "type": "crash",
            "version": 4,
        }
        return self._apply(doc, c.patches)


# --------------------------------------------------------------------------------------------
# Writing files


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


@contextmanager
def _open_sink(path: Path) -> Iterator[_Sink]:
    """A binary writer for `path`, compressed by its suffix; no timestamps or names inside."""
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("wb"))
        if path.suffix == ".gz":
            yield stack.enter_context(_gzip_writer(raw))
        elif path.suffix == ".zst":
            yield stack.enter_context(zstandard.ZstdCompressor(level=3).stream_writer(raw))
        else:
            yield raw


def _gzip_writer(raw: BufferedWriter) -> gzip.GzipFile:
    try:  # ISA-L is several times faster than zlib, and as deterministic
        from isal import igzip
    except ImportError:
        return gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)
    return igzip.GzipFile(  # type: ignore[no-untyped-call]
        filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)


@dataclass
class StoreWriter(Generic[R]):
    """Writes records as ping files in either layout (both generators' writer)."""

    out_dir: Path
    flat: bool
    render: Callable[[R], bytes]
    files: int = 0
    pings: int = 0
    blank_lines: int = 0
    json_bytes: int = 0
    compressed_bytes: int = 0

    def write_group(self, day: date, records: list[R], files_per_day: int) -> None:
        """Spread `records` in order over `files_per_day` files for `day`."""
        n = len(records)
        for k in range(files_per_day):
            path = self._path(day, k)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_file(path, records[k * n // files_per_day:(k + 1) * n // files_per_day])

    def _path(self, day: date, k: int) -> Path:
        if not self.flat:
            return self.out_dir / f"submission_date={day:%Y-%m-%d}" / f"part-{k:04d}.json.gz"
        n = self.files
        suffix = ".ndjson" if n == 1 else ".jsonl.zst" if n % 4 == 3 else ".jsonl.gz"
        return self.out_dir / f"pings-{n:04d}{suffix}"

    def _write_file(self, path: Path, records: list[R]) -> None:
        chunk: list[bytes] = []
        size = 0
        with _open_sink(path) as sink:
            for record in records:
                line = self.render(record)
                if line:
                    self.pings += 1
                else:
                    self.blank_lines += 1
                chunk += (line, b"\n")
                size += len(line) + 1
                if size >= _FLUSH_BYTES:
                    sink.write(b"".join(chunk))
                    self.json_bytes += size
                    chunk, size = [], 0
            sink.write(b"".join(chunk))
            self.json_bytes += size
        self.files += 1
        self.compressed_bytes += path.stat().st_size

    def summary(self) -> GenerateSummary:
        return GenerateSummary(self.out_dir, self.files, self.pings, self.blank_lines,
                               self.json_bytes, self.compressed_bytes)


# --------------------------------------------------------------------------------------------


def _arrivals(rng: random.Random, records: list[_Record], late: list[_Record],
              last: bool) -> tuple[list[_Record], list[_Record]]:
    """Flat layout: today's files hold yesterday's late pings and ~75% of today's."""
    arriving, next_late = list(late), list[_Record]()
    for record in records:
        (arriving if last or rng.random() >= 0.25 else next_late).append(record)
    return arriving, next_late


def generate_store(
    out_dir: Path,
    start: date,
    end: date,
    pings_per_day: int,
    *,
    seed: int = 0,
    layout: Literal["partitioned", "flat"] = "partitioned",
    files_per_day: int = 4,
    heavy: bool = True,
) -> GenerateSummary:
    """Write a synthetic ping store for submission dates `start` to `end` into `out_dir`.

    Each day has exactly `pings_per_day` non-blank lines (messy ones included) plus a few blank
    lines. `layout="partitioned"` writes `submission_date=YYYY-MM-DD/part-NNNN.json.gz`;
    `"flat"` writes `pings-NNNN.jsonl.gz` (some `.jsonl.zst`, one `.ndjson`), where a quarter
    of a day's pings arrive in the next day's files. `heavy=False` leaves out the histograms
    the aggregation does not read (~5-10 KB pings instead of 50-300 KB).
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if pings_per_day < 0 or files_per_day < 1:
        raise ValueError("pings_per_day must be >= 0 and files_per_day >= 1")
    if layout not in ("partitioned", "flat"):
        raise ValueError(f"unknown layout {layout!r}")
    out_dir = Path(out_dir)
    flat = layout == "flat"
    rng = random.Random(seed)
    renderer = _Renderer(heavy)
    population = _make_population(rng, start, end, pings_per_day)
    planner = _Planner(rng, population, pings_per_day, flat)
    writer = StoreWriter(out_dir, flat, renderer.render)
    late: list[_Record] = []  # flat layout: yesterday's pings that arrive in today's files
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    for day in days:
        records = planner.plan_day(day)
        if flat:
            records, late = _arrivals(rng, records, late, last=day == days[-1])
        records += [_BLANK] * (1 + len(records) // 800)
        rng.shuffle(records)
        writer.write_group(day, records, files_per_day)
    worst = max(population.catalog.nightly.values(), key=lambda build: build.crash_factor)
    return replace(writer.summary(), regression_build_id=worst.build_id)
