"""Synthetic Glean ping stores: Firefox desktop and Android `baseline` and `crash` pings.

The Glean counterpart of `synth` (SPEC section 8, docs/glean.md), of the same design: a
population of clients differing by application, channel, OS and build; one desktop nightly
build made to crash much more than the others; ~1% of the clients in crash loops; pings that
arrive late, but no session or crash dated before its build existed; and ~2% of the lines messy
on purpose (malformed lines, other ping types, duplicates by document id, values of the wrong
type, ...). Field names and shapes are those of the example pings in tests/data/glean/ (see its
README): `ping_info`, `client_info`, the pipeline's metadata, metrics by type.

Each line is written in one of the two JSON forms the rules read: *decoded* (dotted metric keys,
`metadata.document_type`, `submission_timestamp` `2025-06-02T07:01:14.123456Z`) or *BigQuery*
rows (underscored metric keys, experiments as key/value lists, no document type,
`submission_timestamp` `2025-06-02 07:01:14.123456 UTC`); `form="mixed"` picks one per line.

Every planned line carries its intent (`Intent`): the counter it must land in and what it
must count, so a test can check the rules against the plan line by line. The same arguments
and seed give byte-identical files: all randomness comes from `random.Random(seed)`, and a
line's bytes depend only on its planned record.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from .families import glean
from .synth import (
    _COUNTRIES,
    _DROP,
    MESSY_SHARE,
    GenerateSummary,
    MessyLines,
    StoreWriter,
    _patched,
    _pick,
    _poisson,
    _uuid,
)

__all__ = ["FORMS", "GenerateSummary", "Intent", "Ping", "Raw", "Record", "Truncated",
           "generate_glean_store", "plan_glean_store", "render", "version_code_date"]

Json = dict[str, Any]
T = TypeVar("T")
Form = Literal["decoded", "bigquery"]
FORMS = ("decoded", "bigquery", "mixed")
_FLUSH_BYTES = 8 << 20
_EPOCH_ANDROID = datetime(2014, 9, 1)  # Fenix version codes count hours from about here
_VERSION_CODE_BASE = 2_016_000_000

# --------------------------------------------------------------------------------------------
# Population: builds and clients


@dataclass(frozen=True, slots=True, eq=False)  # by identity: a cache key, quickly hashed
class _Build:
    desktop: bool
    channel: str
    display_version: str
    app_build: str  # desktop: 14 digits of its date; Android: a version code
    built: date  # no activity on it can be earlier
    crash_factor: float = 1.0


@dataclass(frozen=True, slots=True)
class _Catalog:
    fixed: dict[tuple[bool, str], tuple[_Build, ...]]  # (desktop, channel): builds to keep
    nightly: dict[tuple[bool, date], _Build]  # one nightly a day per application


@dataclass(frozen=True, slots=True, eq=False)  # by identity: a cache key, quickly hashed
class _Client:
    client_id: str
    sample_id: int
    desktop: bool
    channel: str
    os: str  # client_info.os
    os_version: str
    architecture: str
    country: str
    tz_minutes: int
    locale: str
    first_run: str  # client_info.first_run_date
    device: tuple[str, ...]  # Android: manufacturer, model, SDK version; desktop: ()
    windows_build: int  # desktop Windows only, else 0
    build_slot: int  # index of its fixed build, or update lag in days on nightly
    usage_weight: float
    frailty: float  # client-level crash-rate multiplier, mean 1, heavy tailed
    crash_loop: bool
    default_browser: bool
    experiment: tuple[str, ...]  # () or (slug, branch)


@dataclass(frozen=True, slots=True)
class _Population:
    clients: list[_Client]
    cum_weights: list[float]
    loopers: list[_Client]
    catalog: _Catalog


_CHANNELS = {
    True: (("release", 0.80), ("beta", 0.08), ("nightly", 0.08), ("esr", 0.04)),
    False: (("release", 0.85), ("beta", 0.09), ("nightly", 0.06)),
}
_CHANNEL_RISK = {"release": 1.0, "beta": 1.5, "nightly": 2.5, "esr": 0.7}
_DESKTOP_OS = (("Windows", 0.75), ("Darwin", 0.15), ("Linux", 0.10))
_OS_RISK = {"Windows": 1.0, "Darwin": 0.8, "Linux": 0.6, "Android": 1.2}
_OS_VERSIONS = {
    "Windows": (("10.0", 0.92), ("6.1", 0.05), ("6.3", 0.03)),
    "Darwin": (("24.5.0", 0.45), ("23.6.0", 0.35), ("22.6.0", 0.2)),
    "Linux": (("6.8.0", 0.5), ("6.14.2", 0.3), ("5.15.0", 0.2)),
    "Android": (("14", 0.35), ("15", 0.25), ("13", 0.2), ("12", 0.12), ("10", 0.08)),
}
_NORMALIZED_OS = {"Windows": "Windows", "Darwin": "Mac", "Linux": "Linux", "Android": "Android"}
_ANDROID_SDK = {"15": "35", "14": "34", "13": "33", "12": "31", "10": "29"}
_DEVICES = (("Google", "Pixel 7", 3), ("samsung", "SM-S918B", 4), ("samsung", "SM-A546B", 3),
            ("Xiaomi", "2201117TG", 2), ("motorola", "moto g54 5G", 1), ("OnePlus", "CPH2449", 1))
_LOCALES = {"US": "en-US", "DE": "de-DE", "FR": "fr-FR", "BR": "pt-BR", "RU": "ru-RU",
            "IN": "en-IN", "PL": "pl-PL", "GB": "en-GB", "IT": "it-IT", "ES": "es-ES",
            "CN": "zh-CN", "JP": "ja-JP", "CA": "en-CA", "ID": "id-ID", "MX": "es-MX"}
_CITIES = {"US": ("Chicago", "IL"), "DE": ("Berlin", "BE"), "FR": ("Paris", "IDF"),
           "BR": ("São Paulo", "SP"), "JP": ("Tokyo", "13"), "CA": ("Toronto", "ON")}
_EXPERIMENTS = (("new-tab-layout-test", ("control", "treatment-a")),
                ("long-term-holdback-2025h1", ("delivery",)),
                ("tab-groups-rollout", ("control", "treatment")))
#: Crashes per 1,000 usage hours of an average client, by process type (desktop, Android).
_PROCESS_RATES: dict[bool, tuple[tuple[str, float], ...]] = {
    True: (("main", 4.0), ("content", 10.0), ("gpu", 1.5), ("rdd", 0.6), ("socket", 0.8),
           ("utility", 0.8), ("gmplugin", 0.4), ("vr", 0.06), ("forkserver", 0.04)),
    False: (("main", 5.0), ("content", 6.0), ("gpu", 0.6), ("utility", 0.4),
            ("remotesandboxbroker", 0.06)),
}
_REMOTE_TYPES = (("web", 5), ("webIsolated=https://example.com", 3), ("extension", 1),
                 ("privilegedabout", 0.5))


def _version_code(moment: datetime) -> str:
    return str(_VERSION_CODE_BASE + int((moment - _EPOCH_ANDROID).total_seconds() // 3600))


def version_code_date(code: str) -> date:
    """The build date of a generated Android version code (for tests)."""
    return (_EPOCH_ANDROID + timedelta(hours=int(code) - _VERSION_CODE_BASE)).date()


def _make_catalog(rng: random.Random, start: date, end: date) -> tuple[_Catalog, _Build]:
    """Builds dated before `start`, majors following the four-week release train (139 on
    2025-05-27); the desktop nightly near the middle of the range is much worse."""
    major = max(100, 139 + (start - date(2025, 5, 27)).days // 28)

    def build(desktop: bool, channel: str, display: str, day: date, factor: float = 1.0
              ) -> _Build:
        moment = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60),
                          rng.randrange(60))
        app_build = f"{moment:%Y%m%d%H%M%S}" if desktop else _version_code(moment)
        return _Build(desktop, channel, display, app_build, day, factor)

    def ago(days: int) -> date:
        return start - timedelta(days=days)

    fixed: dict[tuple[bool, str], tuple[_Build, ...]] = {}
    for desktop in (True, False):
        fixed[desktop, "release"] = (build(desktop, "release", f"{major}.0", ago(27)),
                                     build(desktop, "release", f"{major}.0.1", ago(12), 0.8))
        fixed[desktop, "beta"] = tuple(
            build(desktop, "beta", f"{major + 1}.0b{n}", ago(days), factor)
            for n, days, factor in ((3, 15, 1.1), (5, 9, 1.0), (7, 4, 0.9)))
    esr = max((m for m in (91, 102, 115, 128, 140, 153) if m <= major), default=major)
    fixed[True, "esr"] = (build(True, "esr", f"{esr}.{min(major - esr, 12)}.0esr", ago(30)),)
    bad_day = start + timedelta(days=(end - start).days // 2 - 2)
    nightly: dict[tuple[bool, date], _Build] = {}
    for offset in range((end - start).days + 11):
        day = ago(10) + timedelta(days=offset)
        for desktop in (True, False):
            factor = 6.0 if desktop and day == bad_day else 1.0
            nightly[desktop, day] = build(desktop, "nightly", f"{major + 2}.0a1", day, factor)
    return _Catalog(fixed, nightly), nightly[True, bad_day]


def _make_client(rng: random.Random, crash_loop: bool, start: date) -> _Client:
    client_id = _uuid(rng)
    desktop = rng.random() < 0.7
    channel = _pick(rng, _CHANNELS[desktop])
    os_name = _pick(rng, _DESKTOP_OS) if desktop else "Android"
    os_version = _pick(rng, _OS_VERSIONS[os_name])
    if desktop:
        arch = "aarch64" if (os_name == "Darwin" and rng.random() < 0.7) else (
            "x86" if rng.random() < 0.05 else "x86_64")
    else:
        arch = _pick(rng, (("arm64-v8a", 85), ("armeabi-v7a", 12), ("x86_64", 3)))
    country, zones = _pick(rng, _COUNTRIES)
    tz_minutes = rng.choice(zones) * 60
    device: tuple[str, ...] = ()
    if not desktop:
        maker, model = _pick(rng, tuple(((m, n), w) for m, n, w in _DEVICES))
        device = (maker, model, _ANDROID_SDK[os_version])
    first_run = start - timedelta(days=rng.randint(1, 2000))
    sign = "+" if tz_minutes >= 0 else "-"
    experiment: tuple[str, ...] = ()
    if rng.random() < 0.2:
        slug, branches = rng.choice(_EXPERIMENTS)
        experiment = (slug, rng.choice(branches))
    slots = {"release": 2, "beta": 3, "esr": 1, "nightly": 4}[channel]
    return _Client(
        client_id=client_id,
        sample_id=zlib.crc32(client_id.encode()) % 100,  # as the ingestion pipeline does
        desktop=desktop, channel=channel, os=os_name, os_version=os_version, architecture=arch,
        country=country, tz_minutes=tz_minutes, locale=_LOCALES.get(country, "en-US"),
        first_run=f"{first_run}{sign}{abs(tz_minutes) // 60:02d}:00",
        device=device,
        windows_build=rng.choice((19045, 22631, 26100)) if os_name == "Windows" else 0,
        build_slot=rng.choices(range(slots), [7, 3, 2, 1][:slots])[0],
        usage_weight=rng.gammavariate(1.5, 1 / 1.5),
        frailty=rng.gammavariate(0.5, 2.0),
        crash_loop=crash_loop,
        default_browser=rng.random() < 0.4,
        experiment=experiment,
    )


def _make_population(rng: random.Random, start: date, end: date, pings_per_day: int
                     ) -> tuple[_Population, _Build]:
    catalog, bad = _make_catalog(rng, start, end)
    size = max(20, pings_per_day // 4)
    loopers = set(rng.sample(range(size), max(1, round(size * 0.01))))
    clients = [_make_client(rng, i in loopers, start) for i in range(size)]
    cum: list[float] = []
    total = 0.0
    for client in clients:
        total += client.usage_weight
        cum.append(total)
    return _Population(clients, cum, [c for c in clients if c.crash_loop], catalog), bad


def _build_of(client: _Client, catalog: _Catalog, day: date) -> _Build:
    if client.channel != "nightly":
        return catalog.fixed[client.desktop, client.channel][client.build_slot]
    # yesterday's nightly, or an older one for clients that update late
    return catalog.nightly[client.desktop, day - timedelta(days=1 + client.build_slot)]


def _risk(client: _Client, build: _Build) -> float:
    return (_CHANNEL_RISK[client.channel] * _OS_RISK[client.os] * build.crash_factor
            * client.frailty)


# --------------------------------------------------------------------------------------------
# Records: what one line will be, and what it must count (its intent)


@dataclass(frozen=True, slots=True)
class Intent:
    """Where a line must land: its counter, and for a processed ping its measure (a crash
    measure, or "usage" with `usage` nanoseconds), its activity date (before the clamp) and
    whether it names its client. `doc_id` and `crash_id` are its duplicate keys, as the rules
    give them (None for a line that does not reach rule 3)."""

    counter: str
    measure: str | None = None
    usage: int = 0
    activity: date | None = None
    doc_id: str | None = None
    crash_id: str | None = None
    has_client: bool = True


_Patch = tuple[tuple[str, ...], object]


@dataclass(frozen=True, slots=True)
class Ping:
    """A baseline or crash ping. Times are local to the client, seconds after midnight of
    `activity` (baseline: ping_info.start_time; crash: crash.time)."""

    kind: Literal["baseline", "crash"]
    client: _Client
    build: _Build
    doc_id: str
    day: date  # submission date
    sent: int  # seconds after midnight UTC of `day`
    form: Form
    reason: str
    activity: date
    start: int
    length: int  # seconds between ping_info.start_time and end_time
    seq: int
    # baseline: active ticks (None: absent), duration (value, unit; None: absent)
    ticks: int | None = None
    duration: tuple[int, str] | None = None
    # crash
    process: str = "main"
    startup: bool = False
    ipc_error: str | None = None
    minidump: str | None = None  # None: the key is absent
    java: bool = False
    patches: tuple[_Patch, ...] = ()
    planned: Intent | None = None  # set for spoilt pings; else `intent` works it out

    @property
    def intent(self) -> Intent:
        return self.planned or _intent_of(self)


@dataclass(frozen=True, slots=True)
class Raw:
    """A line written as is (malformed, other ping types, blank)."""

    data: bytes
    intent: Intent
    day: date | None = None  # its submission date, if it has one


@dataclass(frozen=True, slots=True)
class Truncated:
    """A ping's line cut short: malformed."""

    of: Ping
    cut: float
    intent: Intent = Intent(glean.MALFORMED_LINES)


Record = Ping | Raw | Truncated
_BLANK = Raw(b"", Intent(""))


def _usage_intent(ticks: int | None, duration: tuple[int, str] | None) -> int:
    """Rule 5, as the plan intends it: ticks × 5 s, else the duration; 0 out of bounds."""
    if ticks is not None:
        usage = ticks * 5 * glean.NANOSECONDS_PER_SECOND
    elif duration is not None:
        usage = duration[0] * glean.TIME_UNITS[duration[1]]
    else:
        usage = 0
    return usage if usage <= glean.MAX_USAGE_NANOSECONDS else 0


def _crash_intent(ping: Ping) -> str:
    if ping.process == "main":
        return "startup_crashes" if ping.startup else "main_crashes"
    if ping.process == "content" and ping.ipc_error and "ShutDownKill" in ping.ipc_error:
        return "content_shutdown_crashes"
    return glean.PROCESS_MEASURES.get(ping.process, "other_crashes")


def _intent_of(ping: Ping) -> Intent:
    """The intent of an untouched ping."""
    if ping.kind == "crash":
        digest = ping.minidump if ping.minidump != glean.EMPTY_FILE_SHA256 else None
        intent = Intent(glean.CRASH_PROCESSED, _crash_intent(ping), 0, ping.activity,
                         ping.doc_id, digest or None)
    elif ping.form == "bigquery" and ping.ticks is None and ping.duration is None:
        # a BigQuery row has no document type, and no key tells a baseline ping without
        # usage metrics from other pings (SPEC 8 rule 1): its type is unknown
        intent = Intent(glean.OTHER_DOC_TYPE)
    else:
        usage = _usage_intent(ping.ticks, ping.duration)
        intent = Intent(glean.MAIN_PROCESSED, "usage", usage, ping.activity, ping.doc_id)
    return intent


# --------------------------------------------------------------------------------------------
# Planning a day


_MESSY_KINDS: tuple[tuple[str, float], ...] = (
    ("duplicate", 3), ("malformed", 2), ("other_ping_type", 2), ("wrong_type", 3),
    ("no_client_id", 0.5), ("null_document_id", 0.5),
)


class _Planner(MessyLines[Record]):
    """Decides every line of a day; all randomness comes from one `random.Random`."""

    messy_kinds = _MESSY_KINDS

    def __init__(self, rng: random.Random, population: _Population, pings_per_day: int,
                 flat: bool, form: str) -> None:
        self.rng = rng
        self.pop = population
        self.pings_per_day = pings_per_day
        self.flat = flat
        self.form = form
        self.turns = {}

    def plan_day(self, day: date) -> list[Record]:
        messy = round(self.pings_per_day * MESSY_SHARE)
        normal = self._normal(day, self.pings_per_day - messy)
        return normal + self._messy(day, messy, normal)

    # -- normal lines ------------------------------------------------------------------------

    def _form(self) -> Form:
        if self.form == "mixed":
            return "decoded" if self.rng.random() < 0.5 else "bigquery"
        return "bigquery" if self.form == "bigquery" else "decoded"

    def _normal(self, day: date, budget: int) -> list[Record]:
        records: list[Record] = list(self._crash_loops(day, budget // 50))
        while len(records) < budget:
            index = self.rng.choices(range(len(self.pop.clients)),
                                     cum_weights=self.pop.cum_weights)[0]
            records.extend(self._client_day(self.pop.clients[index], day))
        del records[budget:]
        return records

    def _activity(self, day: date, build: _Build) -> date:
        """The local date of a client's activity sent on `day`: mostly the same day, some
        late (offline), a few a day ahead (time zones east of UTC, clamped by the rules)."""
        lag = _pick(self.rng, ((0, 88), (1, 8), (2, 1.5), (3, 0.5), (-1, 1), (99, 1)))
        if lag == 99:
            lag = self.rng.randint(4, 20)
        return max(day - timedelta(days=lag), build.built)

    def _ping(self, kind: Literal["baseline", "crash"], client: _Client, build: _Build,
              day: date, activity: date, start: int, length: int, reason: str, **extra: Any
              ) -> Ping:
        rng = self.rng
        sent = min(86_399, max(0, start - client.tz_minutes * 60 + length + rng.randint(1, 900)))
        if activity != day:  # sent later, or earlier in UTC: any time of the day
            sent = rng.randrange(86_400)
        return Ping(kind, client, build, _uuid(rng), day, sent, self._form(), reason,
                    activity, start, length, rng.randint(1, 5000), **extra)

    def _client_day(self, client: _Client, day: date) -> list[Record]:
        """A client's sessions of one day: for each, a baseline ping at its start (`active`,
        or `dirty_startup` after an unclean exit), one at its end (`inactive`, with usage),
        and its crashes."""
        rng = self.rng
        build = _build_of(client, self.pop.catalog, day)
        activity = self._activity(day, build)
        records: list[Record] = []
        clock = rng.randint(6 * 3600, 14 * 3600)
        sessions = 1 + min(5, int(rng.expovariate(1.2)))
        for _ in range(sessions):
            if clock >= 86_000:
                break
            length = self._session_length()
            dirty = rng.random() < 0.04
            records.append(self._ping("baseline", client, build, day, activity, clock,
                                      rng.randint(1, 3600),
                                      "dirty_startup" if dirty else "active"))
            records.append(self._inactive(client, build, day, activity, clock, length))
            records.extend(self._crashes(client, build, day, activity, clock, length))
            clock += length + rng.randint(60, 4 * 3600)
        return records

    def _session_length(self) -> int:
        u = self.rng.random()
        if u < 0.002:
            return self.rng.randint(100_001, 300_000)  # left open for days: counts 0
        return max(5, min(40_000, int(self.rng.lognormvariate(7.8, 1.2))))

    def _inactive(self, client: _Client, build: _Build, day: date, activity: date,
                  clock: int, length: int) -> Ping:
        rng = self.rng
        if client.desktop:  # active ticks: 5 s of use each; a zero counter is not sent
            ticks = int(length * rng.uniform(0.2, 1.0) / 5) or None
            extra: dict[str, Any] = {"ticks": ticks, "duration": (length, "second")}
        else:
            unit = _pick(rng, (("second", 85), ("millisecond", 8), ("nanosecond", 3),
                               ("microsecond", 2), ("minute", 2)))
            scale = glean.TIME_UNITS[unit] // glean.NANOSECONDS_PER_SECOND
            value = length // scale if scale else (
                length * (glean.NANOSECONDS_PER_SECOND // glean.TIME_UNITS[unit])
                + rng.randrange(glean.NANOSECONDS_PER_SECOND // glean.TIME_UNITS[unit]))
            extra = {"duration": (value, unit)}
        return self._ping("baseline", client, build, day, activity, clock, length, "inactive",
                          **extra)

    def _crashes(self, client: _Client, build: _Build, day: date, activity: date,
                 clock: int, length: int) -> list[Record]:
        hours = min(25.0, length / 3600)
        risk = _risk(client, build)
        records: list[Record] = []
        for process, per_1000h in _PROCESS_RATES[client.desktop]:
            if process == "gpu" and client.desktop and client.os != "Windows":
                continue
            for _ in range(_poisson(self.rng, risk * per_1000h * hours / 1000)):
                at = clock + self.rng.randrange(max(1, length))
                records.extend(self._crash(client, build, day, activity, at, process))
        return records

    def _crash(self, client: _Client, build: _Build, day: date, activity: date, at: int,
               process: str, startup: bool | None = None) -> list[Record]:
        """One crash: its ping, sometimes reported days later (`event_found`), sometimes
        twice (the crash reporter and the browser: one minidump hash, two documents)."""
        rng = self.rng
        if startup is None:
            startup = process == "main" and rng.random() < (0.1 if client.desktop else 0.2)
        java = not client.desktop and process == "main" and rng.random() < 0.6
        ipc_error = None
        if process == "content" and rng.random() < 0.35:
            ipc_error = "ShutDownKill"
        elif process != "main" and rng.random() < 0.05:
            ipc_error = "ChannelError"
        minidump: str | None = None if java else f"{rng.getrandbits(256):064x}"
        if minidump and rng.random() < (0.6 if ipc_error == "ShutDownKill" else 0.03):
            minidump = glean.EMPTY_FILE_SHA256  # a crash without a minidump
        reason, crash_day = "crash", activity
        if client.desktop and process == "main" and rng.random() < 0.3:
            # found at the next start: crash.time can be days before the submission
            reason = "event_found"
            lag = _pick(rng, ((0, 50), (1, 25), (2, 10), (4, 7), (9, 5), (15, 3)))
            crash_day = max(min(activity, day) - timedelta(days=lag), build.built)
        at = min(at, 86_399)
        ping = self._ping("crash", client, build, day, crash_day, at, rng.randint(0, 2),
                          reason, process=process, startup=startup, ipc_error=ipc_error,
                          minidump=minidump, java=java)
        if reason == "event_found":
            ping = replace(ping, sent=rng.randrange(86_400))
        records: list[Record] = [ping]
        real_dump = minidump is not None and minidump != glean.EMPTY_FILE_SHA256
        if real_dump and rng.random() < 0.04:
            twin = replace(ping, doc_id=_uuid(rng), form=self._form(),
                           reason="event_found" if reason == "crash" else "crash",
                           sent=rng.randrange(86_400))
            records.append(twin)
        return records

    def _crash_loops(self, day: date, cap: int) -> list[Record]:
        """A looping client starts again and again, crashing at startup each time."""
        loopers = [c for c in self.pop.loopers if self.rng.random() < 0.15]
        if not loopers:
            loopers = [self.rng.choice(self.pop.loopers)]
        records: list[Record] = []
        for client in loopers:
            build = _build_of(client, self.pop.catalog, day)
            activity = max(day, build.built)
            clock = self.rng.randint(8 * 3600, 12 * 3600)
            for _ in range(self.rng.randint(4, 15)):
                records.append(self._ping("baseline", client, build, day, activity, clock,
                                          self.rng.randint(1, 600), "dirty_startup"))
                records.extend(self._crash(client, build, day, activity, clock + 3, "main",
                                           startup=True))
                clock += self.rng.randint(5, 120)
        return records[:cap]

    # -- messy lines -------------------------------------------------------------------------

    def _some_ping(self, day: date, kind: str | None = None) -> Ping:
        """A fresh baseline (`inactive`, with usage) or crash ping, in turn, to spoil."""
        client = self.rng.choice(self.pop.clients)
        build = _build_of(client, self.pop.catalog, day)
        activity = max(day, build.built)
        kind = kind or self._turn("ping", ("baseline", "crash"))
        if kind == "baseline":
            return self._inactive(client, build, day, activity, 40_000, 1800)
        process = self._turn("process", ("main", "content", "gpu"))
        found = self._crash(client, build, day, activity, 40_000, process)[0]
        assert isinstance(found, Ping)
        return found

    def _messy_line(self, kind: str, day: date, normal: list[Record]) -> Record:
        if kind == "duplicate":
            # the very same record: rendered again, it gives an identical line
            pings = [r for r in normal[-200:] if isinstance(r, Ping)]
            return self.rng.choice(pings) if pings else self._some_ping(day)
        if kind == "malformed":
            return self._malformed(day)
        if kind == "other_ping_type":
            return self._other_ping(day)
        if kind == "wrong_type":
            return self._wrong_type(day)
        if kind == "no_client_id":
            ping = self._some_ping(day)
            return replace(ping, patches=((("client_info", "client_id"), _DROP),),
                           planned=replace(ping.intent, has_client=False))
        if kind == "null_document_id":
            ping = self._some_ping(day)
            return replace(ping, patches=((("document_id",), None),),
                           planned=replace(ping.intent, doc_id=None))
        if kind == "undated":
            ping = self._some_ping(day)
            value = self._turn(kind, (_DROP, "", None, f"{day}", f"{day.year}-13-01T00:00:00Z",
                                      int(f"{day:%Y%m%d}"), f"{day:%d/%m/%Y} 10:00:00"))
            return replace(ping, patches=((("submission_timestamp",), value),),
                           planned=Intent(glean.UNDATED))
        raise ValueError(f"unknown messy kind {kind!r}")

    def _wrong_type(self, day: date) -> Ping:
        """A value of the wrong type for a rule input: the ping is ignored."""
        variant = self._turn("wrong_type", (
            "ticks_string", "ticks_float", "duration_float", "duration_unit", "duration_number",
            "process_type", "crash_time", "crash_time_int", "start_time", "start_time_missing"))
        crash = variant in ("process_type", "crash_time", "crash_time_int")
        ping = self._some_ping(day, "crash" if crash else "baseline")
        counter = glean.CRASH_IGNORED if crash else glean.MAIN_IGNORED
        if variant.startswith(("ticks", "duration")) and ping.client.desktop == (
                variant.startswith("duration")):
            variant = "start_time"  # ticks are desktop's, a duration alone Android's
        patch: _Patch = {
            "ticks_string": (("metrics", "counter", "browser.engagement.active_ticks"), "412"),
            "ticks_float": (("metrics", "counter", "browser.engagement.active_ticks"), 41.5),
            "duration_float": (("metrics", "timespan", "glean.baseline.duration", "value"),
                               448.5),
            "duration_unit": (("metrics", "timespan", "glean.baseline.duration", "time_unit"),
                              "fortnight"),
            "duration_number": (("metrics", "timespan", "glean.baseline.duration"), 448),
            "process_type": (("metrics", "string", "crash.process_type"), 3),
            "crash_time": (("metrics", "datetime", "crash.time"), f"{day.year}-02-30T10:00:00Z"),
            "crash_time_int": (("metrics", "datetime", "crash.time"), int(f"{day:%Y%m%d}")),
            "start_time": (("ping_info", "start_time"), "yesterday"),
            "start_time_missing": (("ping_info", "start_time"), _DROP),
        }[variant]
        return replace(ping, patches=(patch,), planned=replace(
            ping.intent, counter=counter, measure=None, usage=0, activity=None))

    def _malformed(self, day: date) -> Record:
        variant = self._turn("malformed", ("truncated", "list", "not_json", "utf8", "null"))
        intent = Intent(glean.MALFORMED_LINES)
        if variant == "truncated":
            return Truncated(self._some_ping(day, "baseline"), self.rng.uniform(0.05, 0.95))
        if variant == "utf8":
            return Raw(b'{"submission_timestamp":"' + f"{day}T10:00:00.000000Z".encode()
                       + b'","ping_info":{"reason":"\xff\xfe\xc3("}}', intent, day)
        return Raw({"list": b"[1,2]", "not_json": b"not json", "null": b"null"}[variant],
                   intent, day)

    def _other_ping(self, day: date) -> Raw:
        """Another Glean ping (metrics, events, deletion-request), a legacy Telemetry ping, or
        an object whose `ping_info` is not an object: all count in `other_doc_type`."""
        client = self.rng.choice(self.pop.clients)
        variant = self._turn("other", ("metrics", "events", "deletion-request", "telemetry",
                                       "no_ping_info"))
        form = self._form()
        ts = _timestamp(day, self.rng.randrange(86_400), form)
        doc_id = _uuid(self.rng)
        if variant == "telemetry":
            doc: Json = {"meta": {"submissionDate": f"{day:%Y%m%d}", "docType": "main"},
                         "id": doc_id, "clientId": client.client_id, "type": "main",
                         "payload": {"info": {"subsessionLength": 3600}}}
        elif variant == "no_ping_info":
            doc = {"submission_timestamp": ts, "document_id": doc_id, "ping_info": "crash",
                   "metrics": {"string": {"crash.process_type": "main"}}}
        else:
            by_type: dict[str, Json] = {
                "metrics": {"counter": {"browser.engagement.uri_count": 12},
                            "boolean": {"usage.is_default_browser": client.default_browser}},
                "events": {},
                "deletion-request": {"uuid": {"legacy.telemetry.client_id": _uuid(self.rng)}},
            }
            metrics = by_type[variant]
            doc = {"submission_timestamp": ts, "document_id": doc_id,
                   "metadata": {"document_type": variant, "document_version": "1"},
                   "ping_info": {"seq": 3, "start_time": f"{day}T00:00:00.000+00:00",
                                 "end_time": f"{day}T04:00:00.000+00:00", "reason": "overdue"},
                   "client_info": {"client_id": client.client_id}, "metrics": metrics}
            if variant == "events":
                doc["events"] = [{"timestamp": 0, "category": "nimbus_events",
                                  "name": "enrollment", "extra": {"branch": "control"}}]
            if form == "bigquery":  # no document type; metric names underscored
                doc["metadata"] = {"document_version": "1"}
                doc["metrics"] = {kind: {_metric_key(name, form): value
                                         for name, value in values.items()}
                                  for kind, values in metrics.items()}
        undated = self.flat and "submission_timestamp" not in doc  # a legacy ping has none
        counter = glean.UNDATED if undated else glean.OTHER_DOC_TYPE
        return Raw(orjson.dumps(doc), Intent(counter), day)


# --------------------------------------------------------------------------------------------
# Rendering records to bytes

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _timestamp(day: date, seconds: int, form: Form) -> str:
    """`submission_timestamp` as the decoded pings (ISO, `Z`) or BigQuery (` UTC`) write it."""
    micros = (seconds * 7919 + day.toordinal()) % 1_000_000  # arbitrary but deterministic
    if form == "decoded":
        return f"{day}T{_clock(seconds)}.{micros:06d}Z"
    return f"{day} {_clock(seconds)}.{micros:06d} UTC"


_ZONES: dict[int, str] = {}


def _local(day: date, seconds: int, tz_minutes: int, precision: str = "ms") -> str:
    """A Glean datetime in the client's time zone; `seconds` may run past midnight."""
    if not 0 <= seconds < 86_400:
        day += timedelta(days=seconds // 86_400)
        seconds %= 86_400
    zone = _ZONES.get(tz_minutes)
    if zone is None:
        sign = "+" if tz_minutes >= 0 else "-"
        zone = _ZONES[tz_minutes] = f"{sign}{abs(tz_minutes) // 60:02d}:{abs(tz_minutes) % 60:02d}"
    if precision == "minute":
        return f"{day}T{_clock(seconds)[:5]}{zone}"
    if precision == "second":
        return f"{day}T{_clock(seconds)}{zone}"
    return f"{day}T{_clock(seconds)}.{seconds * 37 % 1000:03d}{zone}"


def _metric_key(name: str, form: Form) -> str:
    return name if form == "decoded" else name.replace(".", "_")


def _apply(doc: Json, patches: Sequence[_Patch], form: Form) -> Json:
    for path, value in patches:
        if path[0] == "metrics" and len(path) > 2:  # metric names are spelt by form
            path = (*path[:2], _metric_key(path[2], form), *path[3:])
        doc = _patched(doc, path, value)
    return doc


def render(record: Record) -> bytes:
    """One record as its line (blank for `_BLANK`)."""
    if isinstance(record, Raw):
        return record.data
    if isinstance(record, Truncated):
        line = render(record.of)
        return line[: max(1, int(len(line) * record.cut))]
    return orjson.dumps(_apply(_doc(record), record.patches, record.form))


_Static = tuple[Json, Json, Json, Json, object]
#: The parts of a ping that depend only on its client, build and form, built once each.
_STATIC: dict[tuple[_Client, _Build, Form], _Static] = {}
_HEADER_DAYS: dict[date, str] = {}


def _static(c: _Client, b: _Build, form: Form) -> _Static:
    """Top-level fields, the metadata before and after `header`, client_info, experiments."""
    found = _STATIC.get((c, b, form))
    if found is not None:
        return found
    if len(_STATIC) >= 200_000:
        _STATIC.clear()
    top: Json = {
        "normalized_app_name": "Firefox" if c.desktop else "Fenix",
        "normalized_channel": c.channel,
        "normalized_os": _NORMALIZED_OS[c.os],
        "normalized_os_version": c.os_version,
        "normalized_country_code": c.country,
        "sample_id": c.sample_id,
    }
    city, subdivision = _CITIES.get(c.country, (None, None))
    geo: Json = {"country": c.country, "db_version": f"{b.built}T12:00:00Z"}
    if city:
        geo |= {"city": city, "subdivision1": subdivision}
    head: Json = {
        "geo": geo,
        "isp": {"name": "Example ISP", "organization": "Example ISP",
                "db_version": f"{b.built}T12:00:00Z"},
        "user_agent": {"browser": "Firefox", "os": _NORMALIZED_OS[c.os] if c.desktop
                       else "Android", "version": b.display_version.split("a")[0]},
    }
    tail: Json = {}
    if form == "decoded":
        namespace = "firefox-desktop" if c.desktop else {
            "release": "org-mozilla-firefox", "beta": "org-mozilla-firefox-beta"}.get(
            c.channel, "org-mozilla-fenix")
        tail = {"document_namespace": namespace, "document_type": "", "document_version": "1"}
    experiments: object = None
    if c.experiment:
        slug, branch = c.experiment
        value = {"branch": branch, "extra": {"type": "nimbus-nimbus",
                                             "enrollment_id": c.client_id[::-1]}}
        experiments = {slug: value} if form == "decoded" else [{"key": slug, "value": value}]
    found = _STATIC[c, b, form] = (top, head, tail, _client_info(c, b), experiments)
    return found


def _header_date(day: date, seconds: int) -> str:
    prefix = _HEADER_DAYS.get(day)
    if prefix is None:
        prefix = _HEADER_DAYS[day] = (f"{_DAYS[day.weekday()]}, {day.day:02d} "
                                      f"{_MONTHS[day.month - 1]} {day.year}")
    return f"{prefix} {_clock(seconds)} GMT"


def _doc(p: Ping) -> Json:
    c, form = p.client, p.form
    top, head, tail, client_info, experiments = _static(c, p.build, form)
    metadata: Json = {**head, "header": {"date": _header_date(p.day, p.sent)}}
    if tail:
        metadata |= tail
        metadata["document_type"] = p.kind
    if p.kind == "baseline":
        start = _local(p.activity, p.start, c.tz_minutes)
        end = _local(p.activity, p.start + p.length, c.tz_minutes)
    else:  # the ping is made when the crash is sent: on the submission day
        sent = p.sent + c.tz_minutes * 60 - 2
        start = _local(p.day, sent, c.tz_minutes)
        end = _local(p.day, sent + p.length, c.tz_minutes)
    ping_info: Json = {"seq": p.seq, "start_time": start, "end_time": end, "reason": p.reason}
    if experiments is not None:
        ping_info["experiments"] = experiments
    metrics = _baseline_metrics(p, form) if p.kind == "baseline" else _crash_metrics(p)
    doc: Json = {
        "submission_timestamp": _timestamp(p.day, p.sent, form),
        "document_id": p.doc_id,
        **top,
        "metadata": metadata,
        "ping_info": ping_info,
        "client_info": client_info,
    }
    if form == "bigquery":
        doc["metrics"] = {kind: {name.replace(".", "_"): value for name, value in values.items()}
                          for kind, values in metrics.items()}
    elif metrics:  # a raw client body leaves out an empty `metrics`
        doc["metrics"] = metrics
    return doc


def _client_info(c: _Client, b: _Build) -> Json:
    info: Json = {
        "client_id": c.client_id, "app_build": b.app_build, "app_channel": c.channel,
        "app_display_version": b.display_version, "architecture": c.architecture,
        "os": c.os, "os_version": c.os_version,
    }
    if c.desktop:
        if c.windows_build:
            info["windows_build_number"] = c.windows_build
    else:
        info |= {"android_sdk_version": c.device[2], "device_manufacturer": c.device[0],
                 "device_model": c.device[1]}
    info |= {"first_run_date": c.first_run, "locale": c.locale, "telemetry_sdk_build": "64.2.0"}
    if c.desktop:
        info["build_date"] = "1970-01-01T00:00:00+00:00"
    return info


def _baseline_metrics(p: Ping, form: Form) -> Json:
    metrics: Json = {}
    if p.ticks is not None:
        metrics["counter"] = {"browser.engagement.active_ticks": p.ticks,
                              "browser.engagement.uri_count": 1 + p.ticks // 40}
    if p.duration is not None:
        value, unit = p.duration
        metrics["timespan"] = {"glean.baseline.duration": {"value": value, "time_unit": unit}}
    if p.client.desktop:
        metrics["boolean"] = {"usage.is_default_browser": p.client.default_browser}
        if p.reason == "inactive":
            metrics["uuid"] = {"legacy.telemetry.client_id": p.client.client_id[::-1]}
    return metrics


def _crash_metrics(p: Ping) -> Json:
    c, b = p.client, p.build
    strings: Json = {"crash.process_type": p.process}
    if p.process == "content":
        strings["crash.remote_type"] = _pick(random.Random(p.seq), _REMOTE_TYPES)
    if p.ipc_error:
        strings["crash.ipc_channel_error"] = p.ipc_error
    if p.java:
        strings["crash.cause"] = "java_exception"
    strings |= {"crash.app_channel": c.channel, "crash.app_display_version": b.display_version,
                "crash.app_build": b.app_build}
    if p.minidump is not None:
        strings["crash.minidump_sha256_hash"] = p.minidump
    if p.process == "main" and c.desktop:
        strings |= {"crash.moz_crash_reason": "MOZ_CRASH(example)",
                    "crash.product_name": "Firefox"}
    precision = "second" if c.desktop else "minute"
    metrics: Json = {
        "string": strings,
        "boolean": {"crash.startup": p.startup},
        "datetime": {"crash.time": _local(p.activity, p.start, c.tz_minutes, precision)},
    }
    if p.java:
        metrics["object"] = {"crash.java_exception": {"throwables": [{
            "type_name": "java.lang.IllegalStateException",
            "stack": [{"class_name": "org.example.Foo", "method_name": "bar",
                       "file": "Foo.kt", "line": 42, "is_native": False}]}]}}
    if c.experiment:
        metrics["string_list"] = {"environment.nimbus_enrollments": [":".join(c.experiment)]}
    return metrics


# --------------------------------------------------------------------------------------------
# Writing files


def _checked(first: date, last: date, pings: int, layout: str, form: str) -> None:
    if last < first:
        raise ValueError(f"last date {last} is before the first {first}")
    if pings < 0:
        raise ValueError("pings must be >= 0")
    if layout not in ("partitioned", "flat"):
        raise ValueError(f"unknown layout {layout!r}")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: choose one of {', '.join(FORMS)}")


def _plan(first: date, last: date, pings: int, seed: int, layout: str, form: str
          ) -> tuple[Iterator[tuple[date, list[Record]]], _Build]:
    _checked(first, last, pings, layout, form)
    _STATIC.clear()
    flat = layout == "flat"
    rng = random.Random(seed)
    population, bad = _make_population(rng, first, last, pings)
    planner = _Planner(rng, population, pings, flat, form)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def each_day() -> Iterator[tuple[date, list[Record]]]:
        late: list[Record] = []
        for day in days:
            records = planner.plan_day(day)
            if flat:  # today's files hold yesterday's late pings and ~75% of today's
                arriving: list[Record] = list(late)
                late = []
                for record in records:
                    last_day = day == days[-1]
                    (arriving if last_day or rng.random() >= 0.25 else late).append(record)
                records = arriving
            records += [_BLANK] * (1 + len(records) // 800)
            rng.shuffle(records)
            yield day, records

    return each_day(), bad


def plan_glean_store(
    first: date, last: date, pings: int, seed: int = 0,
    layout: Literal["partitioned", "flat"] = "partitioned", form: str = "mixed",
) -> Iterator[tuple[date, list[Record]]]:
    """Each date's records in file order (partitioned layout: the date's folder; flat layout:
    the date's files, which hold late pings of the day before), blank lines included.
    `generate_glean_store` writes exactly these (`render`); tests read their intents."""
    return _plan(first, last, pings, seed, layout, form)[0]


def generate_glean_store(
    out_dir: Path,
    first: date,
    last: date,
    pings: int,
    seed: int = 0,
    layout: Literal["partitioned", "flat"] = "partitioned",
    files_per_day: int = 4,
    form: str = "mixed",
) -> GenerateSummary:
    """Write a synthetic Glean ping store for submission dates `first` to `last`.

    Each date has exactly `pings` non-blank lines (messy ones included) plus a few blank
    lines, in the layouts of `synth.generate_store`. `form`: `decoded`, `bigquery` or `mixed`
    (either, line by line). The summary names the bad desktop nightly build (its app_build).
    """
    if files_per_day < 1:
        raise ValueError("files_per_day must be >= 1")
    planned, bad = _plan(first, last, pings, seed, layout, form)
    writer = StoreWriter(Path(out_dir), layout == "flat", render)
    for day, records in planned:
        writer.write_group(day, records, files_per_day)
    return GenerateSummary(writer.out_dir, writer.files, writer.pings, writer.blank_lines,
                           writer.json_bytes, writer.compressed_bytes, bad.app_build)
