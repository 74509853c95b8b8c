"""The Glean family: Firefox's `crash` and `baseline` pings (SPEC section 8, docs/glean.md).

The same shape as `rules` (the legacy family): counters, a dimension table, the measures and
stats, and `evaluate_line`, which turns one line into an `Outcome`. Pure: no I/O, no engine.

Two JSON forms are read line by line: the decoded one, where a metric is keyed by its dotted
name (`metrics.string["crash.process_type"]`), and BigQuery rows, where the dots are underscores
(`metrics.string.crash_process_type`). Everywhere below, "X, else Y" reads Y only when X's key is
missing: a present value of the wrong type is X's value (a dimension is then absent, a rule
input ignores the ping). A step through something that is not an object finds no key.

Deduplication needs state across pings, so the engine applies it (as for legacy pings), in two
stages: a ping whose `doc_id` was seen is a duplicate; of the others, a crash ping whose
`crash_id` (its minidump hash) was seen is a duplicate. `GleanOutcome` carries both.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from .. import rules
from ..rules import (  # the counters are the legacy ones (SPEC section 8: "Counters")
    CORRUPT_FILES,
    COUNTERS,
    CRASH_IGNORED,
    CRASH_NON_MAIN_IGNORED,
    CRASH_PROCESSED,
    DUPLICATES,
    MAIN_IGNORED,
    MAIN_PROCESSED,
    MALFORMED_LINES,
    OTHER_DOC_TYPE,
    SAMPLED_OUT,
    UNDATED,
    Key,
    Outcome,
    Path,
    clamp_activity_date,
    dimension_string,
    is_json_int,
)
from . import picking

__all__ = [
    "COUNTERS", "CORRUPT_FILES", "CRASH_IGNORED", "CRASH_NON_MAIN_IGNORED", "CRASH_PROCESSED",
    "DUPLICATES", "MAIN_IGNORED", "MAIN_PROCESSED", "MALFORMED_LINES", "OTHER_DOC_TYPE",
    "SAMPLED_OUT", "UNDATED", "NAME", "TABLE", "Key", "Outcome", "GleanOutcome", "Dimension",
    "DIMENSIONS", "DIMENSION_NAMES", "MEASURES", "MEASURE_UNITS", "SQUARED_MEASURES",
    "CRASH_MEASURES", "STATS", "CRASH_IDS", "NANOSECONDS_PER_HOUR", "TIME_UNITS",
    "EMPTY_FILE_SHA256",
    "FIELDS_READ", "FIELD_INDEX", "parse_line", "fields_of", "evaluate_line", "evaluate_fields",
    "evaluate_doc", "ping_type", "minidump_hash", "parse_submission_timestamp", "activity_date",
    "usage_nanoseconds", "crash_measure", "key_to_row",
]

NAME = "glean"
#: Where this family's rows go: a table of the same columns as the legacy `crash_aggregates`.
TABLE = "glean_crash_aggregates"
CRASH = "crash"
BASELINE = "baseline"

# -- where things are ---------------------------------------------------------------------------


def metric(kind: str, dotted: str) -> tuple[Path, Path]:
    """`m.TYPE[name]`: the dotted key (decoded pings), else the underscored one (BigQuery)."""
    return ("metrics", kind, dotted), ("metrics", kind, dotted.replace(".", "_"))


PROCESS_TYPE = metric("string", "crash.process_type")
IPC_CHANNEL_ERROR = metric("string", "crash.ipc_channel_error")
MINIDUMP_HASH = metric("string", "crash.minidump_sha256_hash")
STARTUP = metric("boolean", "crash.startup")
CRASH_TIME = metric("datetime", "crash.time")
ACTIVE_TICKS = metric("counter", "browser.engagement.active_ticks")
DURATION = metric("timespan", "glean.baseline.duration")
DURATION_VALUE = tuple((*path, "value") for path in DURATION)
DURATION_UNIT = tuple((*path, "time_unit") for path in DURATION)
SUBMISSION_TIMESTAMP: Path = ("submission_timestamp",)
DOCUMENT_ID: Path = ("document_id",)
SAMPLE_ID: Path = ("sample_id",)
DOCUMENT_TYPE: Path = ("metadata", "document_type")
PING_INFO: Path = ("ping_info",)
PING_TYPE: Path = ("ping_info", "ping_type")
START_TIME: Path = ("ping_info", "start_time")
CLIENT_ID: Path = ("client_info", "client_id")


@dataclass(frozen=True, slots=True)
class Dimension:
    """A dimension: its name and, per ping type, the places to read in order (the first whose
    key is present gives the value)."""

    name: str
    crash: tuple[Path, ...]
    baseline: tuple[Path, ...]


def _dim(name: str, *places: str | tuple[Path, Path], crash_first: str | None = None
         ) -> Dimension:
    """`places` as dotted paths (top-level Glean keys have no dots in them); `crash_first`, a
    crash-ping metric string read before them."""
    paths = tuple(path for place in places for path in (
        (tuple(place.split(".")),) if isinstance(place, str) else place))
    first = metric("string", crash_first) if crash_first else ()
    return Dimension(name, (*first, *paths), paths)


#: The dimensions of a Glean aggregate (SPEC section 8). Adding one is one line here.
DIMENSIONS: tuple[Dimension, ...] = (
    _dim("build_version", "client_info.app_display_version",
         crash_first="crash.app_display_version"),
    _dim("build_id", "client_info.app_build", crash_first="crash.app_build"),
    _dim("channel", "normalized_channel", "client_info.app_channel",
         crash_first="crash.app_channel"),
    _dim("application", "normalized_app_name"),
    _dim("os_name", "normalized_os", "client_info.os"),
    _dim("os_version", "normalized_os_version", "client_info.os_version"),
    _dim("architecture", "client_info.architecture"),
    _dim("country", "metadata.geo.country", "normalized_country_code"),
)
DIMENSION_NAMES: tuple[str, ...] = tuple(d.name for d in DIMENSIONS)

# -- stats --------------------------------------------------------------------------------------

#: Per-ping measures, in the order of `Outcome.measures`: integers, usage in nanoseconds (the
#: one unit every Glean time unit converts to exactly), so that sums are exact.
MEASURES: tuple[str, ...] = (
    "ping_count",
    "usage_hours",
    "main_crashes",
    "content_crashes",
    "content_shutdown_crashes",
    "gpu_crashes",
    "gmplugin_crashes",
    "rdd_crashes",
    "socket_crashes",
    "utility_crashes",
    "other_crashes",
    "startup_crashes",
)
NANOSECONDS_PER_SECOND = 1_000_000_000
NANOSECONDS_PER_HOUR = 3600 * NANOSECONDS_PER_SECOND
#: What one unit of each measure is worth in its stat: usage is counted in nanoseconds.
MEASURE_UNITS: tuple[int, ...] = (1, NANOSECONDS_PER_HOUR, *(1,) * (len(MEASURES) - 2))
SQUARED_MEASURES: tuple[str, ...] = MEASURES[1:]
CRASH_MEASURES: tuple[str, ...] = MEASURES[2:]
#: The 55 stats of one Glean aggregate: section 5's construction over these measures, then the
#: largest client's count of each crash measure (client_<crash>_max).
STATS: tuple[str, ...] = (
    *MEASURES,
    *(f"{m}_squared" for m in SQUARED_MEASURES),
    "client_count",
    *(f"client_{m}_squared" for m in SQUARED_MEASURES),
    *(f"client_{c}_usage_hours" for c in CRASH_MEASURES),
    *(f"client_{c}_max" for c in CRASH_MEASURES),
)
_INDEX = {name: i for i, name in enumerate(MEASURES)}
#: The measure a crash ping counts in, by `crash.process_type` (others: `other_crashes`).
PROCESS_MEASURES: dict[str, str] = {
    "main": "main_crashes",
    "content": "content_crashes",
    "gpu": "gpu_crashes",
    "gmplugin": "gmplugin_crashes",
    "rdd": "rdd_crashes",
    "socket": "socket_crashes",
    "utility": "utility_crashes",
}


def _one_crash(*names: str) -> tuple[int, ...]:
    return tuple(1 if name in names else 0 for name in MEASURES)


#: The measures of each kind of crash ping, built once.
_CRASH_ROWS: dict[str, tuple[int, ...]] = {
    **{measure: _one_crash(measure) for measure in (*PROCESS_MEASURES.values(), "other_crashes",
                                                   "content_shutdown_crashes")},
    "startup_crashes": _one_crash("main_crashes", "startup_crashes"),
}
_NO_USAGE = _one_crash("ping_count")  # a baseline ping without usage
_USAGE = _INDEX["usage_hours"]

#: Nanoseconds in one unit of a Glean timespan.
TIME_UNITS: dict[str, int] = {
    "nanosecond": 1,
    "microsecond": 1_000,
    "millisecond": 1_000_000,
    "second": NANOSECONDS_PER_SECOND,
    "minute": 60 * NANOSECONDS_PER_SECOND,
    "hour": 3600 * NANOSECONDS_PER_SECOND,
    "day": 86400 * NANOSECONDS_PER_SECOND,
}
SECONDS_PER_TICK = 5
#: Usage outside [0, 100000] seconds counts 0 (as bigquery-etl's baseline_clients_daily).
MAX_USAGE_NANOSECONDS = 100_000 * NANOSECONDS_PER_SECOND
#: SHA-256 of an empty file: a crash without a minidump, never a duplicate by its hash.
EMPTY_FILE_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: Outcomes carry a second duplicate key, `crash_id`: a crash ping's minidump hash.
CRASH_IDS = True

# -- outcome ------------------------------------------------------------------------------------


#: A Glean outcome is an `Outcome` whose `crash_id` (second duplicate key, checked by the engine
#: only for pings that are not duplicates by `doc_id`) is a crash ping's minidump hash.
GleanOutcome = Outcome


# -- reading a ping -----------------------------------------------------------------------------

_MISSING: Any = picking.MISSING  # a key that is not there (JSON null is None, a present value)

#: Every place the rules read besides the dimensions (each metric in both spellings).
RULE_PATHS: tuple[Path, ...] = (
    SUBMISSION_TIMESTAMP, DOCUMENT_ID, SAMPLE_ID, DOCUMENT_TYPE, PING_INFO, PING_TYPE, START_TIME,
    CLIENT_ID, *PROCESS_TYPE, *IPC_CHANNEL_ERROR, *MINIDUMP_HASH, *STARTUP, *CRASH_TIME,
    *ACTIVE_TICKS, *DURATION, *DURATION_VALUE, *DURATION_UNIT,
)
_PICKER = picking.StructPicker((*RULE_PATHS, *(path for dim in DIMENSIONS for path in dim.crash)))
#: Each place's index in the fields that `parse_line` gives.
FIELD_INDEX: dict[Path, int] = _PICKER.index
#: Every field the rules read, as a tree of keys: the only parts of a ping turned into values.
FIELDS_READ: dict[str, picking.Node] = _PICKER.tree
#: What a place holds when it is an object.
_OBJECT_TYPES = _PICKER.object_types
_BOM = b"\xef\xbb\xbf"


def _ids(paths: tuple[Path, ...]) -> tuple[int, ...]:
    return tuple(FIELD_INDEX[path] for path in paths)


Fields = picking.Fields


def parse_line(line: bytes | memoryview) -> Fields | None:
    """The places the rules read (`FIELD_INDEX`), as plain values, `_MISSING` where a key is
    missing or a step is not an object; None for a malformed line (not UTF-8 JSON, or not an
    object). The decoder is the legacy family's (simdjson) for validating the whole line, and
    msgspec for picking the places; a repeated key's last value counts (docs/performance.md)."""
    try:
        doc = rules.PARSER.parse(line)
    except (ValueError, RuntimeError):  # RuntimeError: too deep, or an integer over 64 bits
        return None
    is_object = type(doc) is rules.OBJECT
    del doc  # the parser is reused: no view into its buffer may outlive this call
    if not is_object:
        return None
    if line[:3] == _BOM:  # simdjson ignores it; msgspec and orjson refuse it
        line = line[3:]
    fields = _PICKER.pick(line)
    if fields is None:  # a place of an unusual type: the slow, general way
        try:
            return _PICKER.fields_of_dict(orjson.loads(line))
        except orjson.JSONDecodeError:  # (nothing simdjson accepts, but never a crash)
            return None
    return fields


def fields_of(doc: dict[str, Any]) -> Fields:
    """The fields of a ping decoded by another JSON parser (tests, the stdlib baseline)."""
    return _PICKER.fields_of_dict(doc)


_YMD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
#: Dates by their text, memoised: a day's pings hold a few distinct dates, and parsing one
#: costs more than the rest of the rules of a ping.
_DATES: dict[str, date | None] = {}
_MAX_MEMO = 10_000


def _real_date(text: str) -> date | None:
    """`YYYY-MM-DD` (ASCII digits), a real calendar date; else None."""
    if text in _DATES:
        return _DATES[text]
    found = None
    if _YMD.match(text):
        try:
            found = date(int(text[:4]), int(text[5:7]), int(text[8:]))
        except ValueError:
            pass
    if len(_DATES) >= _MAX_MEMO:  # hostile input with many distinct dates: start over
        _DATES.clear()
    _DATES[text] = found
    return found


def parse_submission_timestamp(value: object) -> date | None:
    """Rule 2: the UTC date of `submission_timestamp`, a string whose first 10 characters are a
    real date `YYYY-MM-DD` followed by `T` or a space; else None."""
    if type(value) is not str or len(value) < 11 or value[10] not in "T ":
        return None
    return _real_date(value[:10])


def activity_date(value: object) -> date | None:
    """Rule 4: a string `YYYY-MM-DD`, alone or followed by `T` and a time, a real date (the
    client's local date as written); else None."""
    if type(value) is not str or not (len(value) == 10 or (len(value) > 11 and value[10] == "T")):
        return None
    return _real_date(value[:10])


_I = FIELD_INDEX
_SUBMISSION, _DOC_ID, _SAMPLE, _CLIENT = (
    _I[SUBMISSION_TIMESTAMP], _I[DOCUMENT_ID], _I[SAMPLE_ID], _I[CLIENT_ID])
_DOC_TYPE, _PING_INFO, _PING_TYPE, _START = (
    _I[DOCUMENT_TYPE], _I[PING_INFO], _I[PING_TYPE], _I[START_TIME])
_PROCESS, _IPC_ERROR, _HASH = _ids(PROCESS_TYPE), _ids(IPC_CHANNEL_ERROR), _ids(MINIDUMP_HASH)
_STARTUP, _CRASH_TIME, _TICKS = _ids(STARTUP), _ids(CRASH_TIME), _ids(ACTIVE_TICKS)
_DURATION, _DURATION_VALUE, _DURATION_UNIT = (
    _ids(DURATION), _ids(DURATION_VALUE), _ids(DURATION_UNIT))
_CRASH_PLACES = tuple(_ids(d.crash) for d in DIMENSIONS)
_BASELINE_PLACES = tuple(_ids(d.baseline) for d in DIMENSIONS)


def _metric(fields: Fields, places: tuple[int, ...]) -> Any:
    """`m.TYPE[name]`: the dotted key's value, else the underscored one's, else _MISSING."""
    value = fields[places[0]]
    return fields[places[1]] if value is _MISSING else value


def ping_type(fields: Fields) -> object:
    """Rule 1: `metadata.document_type`, else `ping_info.ping_type`, else by the keys present:
    `crash`, `baseline`, or None (unknown)."""
    kind = fields[_DOC_TYPE]
    if kind is _MISSING:
        kind = fields[_PING_TYPE]
    if kind is not _MISSING:
        return kind
    if _metric(fields, _PROCESS) is not _MISSING or _metric(fields, _CRASH_TIME) is not _MISSING:
        return CRASH
    if _metric(fields, _DURATION) is not _MISSING or _metric(fields, _TICKS) is not _MISSING:
        return BASELINE
    return None


def usage_nanoseconds(fields: Fields) -> int | None:
    """Rule 5, a baseline ping's usage in nanoseconds: active ticks × 5 s, else the duration
    converted exactly; 0 outside [0, 100000] s or when neither is there; None (ignore the ping)
    for a value of the wrong type."""
    ticks = _metric(fields, _TICKS)
    if ticks is not _MISSING:
        if not is_json_int(ticks):
            return None
        usage = ticks * SECONDS_PER_TICK * NANOSECONDS_PER_SECOND
    else:
        spelling = 0 if fields[_DURATION[0]] is not _MISSING else 1
        duration = fields[_DURATION[spelling]]
        if duration is _MISSING:
            return 0  # reason `active` or `dirty_startup`: no usage, still a ping
        value = fields[_DURATION_VALUE[spelling]]
        unit = fields[_DURATION_UNIT[spelling]]
        if type(duration) not in _OBJECT_TYPES or not is_json_int(value) or type(unit) is not str \
                or unit not in TIME_UNITS:
            return None
        usage = value * TIME_UNITS[unit]
    return usage if 0 <= usage <= MAX_USAGE_NANOSECONDS else 0


def crash_measure(fields: Fields) -> str | None:
    """Rule 6: the measure a crash ping counts its one crash in (`startup_crashes` stands for a
    main crash at startup, which counts in main_crashes too); None (ignore the ping) for a
    process type that is not a string."""
    process = _metric(fields, _PROCESS)
    if process is _MISSING:
        process = "main"
    elif type(process) is not str:
        return None
    if process == "main":
        return "startup_crashes" if _metric(fields, _STARTUP) is True else "main_crashes"
    if process == "content":
        error = _metric(fields, _IPC_ERROR)
        if type(error) is str and "ShutDownKill" in error:
            return "content_shutdown_crashes"
    return PROCESS_MEASURES.get(process, "other_crashes")


def minidump_hash(fields: Fields) -> str | None:
    """Rule 3's second key: the minidump hash, when a non-empty string other than the empty-file
    hash (a crash without a minidump is never a duplicate by it)."""
    digest = _metric(fields, _HASH)
    if type(digest) is str and digest and digest != EMPTY_FILE_SHA256:
        return digest
    return None


def _dimension_values(fields: Fields, places: tuple[tuple[int, ...], ...]
                      ) -> tuple[str | None, ...]:
    """One value (None for absent) per dimension: the first place whose key is present."""
    values: list[str | None] = []
    for indexes in places:
        for index in indexes:
            value = fields[index]
            if value is not _MISSING:
                # (the usual short string, without the call: 8 of them a ping)
                values.append(value if type(value) is str and len(value) <= _SHORT
                              and "\x00" not in value else dimension_string(value))
                break
        else:
            values.append(None)
    return tuple(values)


_SHORT = rules.MAX_DIMENSION_CHARS


# -- the rules ----------------------------------------------------------------------------------


def evaluate_line(
    line: bytes | memoryview,
    layout_date: date | None,
    wanted: Container[date] | None = None,
    sample_below: float | None = None,
    dedupe: bool = True,
) -> Outcome | None:
    """Apply the rules to one non-blank line (the signature of `rules.evaluate_line`).

    `layout_date` is the folder's submission date (partitioned layout) or None (flat layout:
    the ping's `submission_timestamp` decides, and pings outside `wanted` give None).
    `sample_below`: keep only pings whose `sample_id` is an integer below it.
    """
    fields = parse_line(line)
    if fields is None:
        return GleanOutcome(MALFORMED_LINES, layout_date)
    submission = layout_date
    if submission is None:  # rule 2, flat layout
        submission = parse_submission_timestamp(fields[_SUBMISSION])
        if submission is None:
            return GleanOutcome(UNDATED, None)
        if wanted is not None and submission not in wanted:
            return None
    return evaluate_fields(fields, submission, sample_below, dedupe)


def evaluate_fields(
    fields: Fields,
    submission: date,
    sample_below: float | None = None,
    dedupe: bool = True,
) -> GleanOutcome:
    """Rules 1 and 3 to 6 for the fields of one line of a known submission date."""
    if type(fields[_PING_INFO]) not in _OBJECT_TYPES:
        return GleanOutcome(OTHER_DOC_TYPE, submission)  # not a Glean ping
    kind = ping_type(fields)
    if kind != CRASH and kind != BASELINE:
        return GleanOutcome(OTHER_DOC_TYPE, submission)
    if sample_below is not None:
        sample_id = fields[_SAMPLE]
        if not (is_json_int(sample_id) and sample_id < sample_below):
            return GleanOutcome(SAMPLED_OUT, submission)
    is_crash = kind == CRASH
    doc_id = crash_id = None
    if dedupe:  # rule 3 is the engine's
        found = fields[_DOC_ID]
        doc_id = found if type(found) is str else None
        crash_id = minidump_hash(fields) if is_crash else None

    ignored = CRASH_IGNORED if is_crash else MAIN_IGNORED
    start = _metric(fields, _CRASH_TIME) if is_crash else _MISSING  # rule 4
    if start is _MISSING:
        start = fields[_START]
    activity = activity_date(start)
    if activity is None:
        return GleanOutcome(ignored, submission, doc_id, crash_id=crash_id)
    activity = clamp_activity_date(activity, submission)

    if is_crash:
        measure = crash_measure(fields)  # rule 6
        if measure is None:
            return GleanOutcome(ignored, submission, doc_id, crash_id=crash_id)
        measures = _CRASH_ROWS[measure]
        dims = _dimension_values(fields, _CRASH_PLACES)
        processed = CRASH_PROCESSED
    else:
        usage = usage_nanoseconds(fields)  # rule 5
        if usage is None:
            return GleanOutcome(ignored, submission, doc_id, crash_id=crash_id)
        measures = _NO_USAGE
        if usage:
            measures = (*_NO_USAGE[:_USAGE], usage, *_NO_USAGE[_USAGE + 1:])
        dims = _dimension_values(fields, _BASELINE_PLACES)
        processed = MAIN_PROCESSED
    client = fields[_CLIENT]
    return GleanOutcome(
        processed,
        submission,
        doc_id,
        key=(activity.toordinal(), *dims),
        client_id=client if type(client) is str else None,
        measures=measures,
        crash_id=crash_id,
    )


def evaluate_doc(doc: dict[str, Any], submission: date, sample_below: float | None = None,
                 dedupe: bool = True) -> GleanOutcome:
    """The rules for a ping decoded by another JSON parser (tests, the stdlib baseline)."""
    return evaluate_fields(fields_of(doc), submission, sample_below, dedupe)


def key_to_row(key: Key) -> tuple[str, dict[str, str]]:
    """An aggregate key as stored: the activity date as text and the present dimensions."""
    activity = date.fromordinal(key[0]).isoformat()
    dims = {name: value for name, value in zip(DIMENSION_NAMES, key[1:], strict=True)
            if value is not None}
    return activity, dims
