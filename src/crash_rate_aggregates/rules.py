"""The per-ping rules: the only module that knows what a ping looks like.

One line of a ping file becomes an `Outcome`: the counter it lands in and, for a ping that is
aggregated, its key (activity date + dimensions) and its measures. Pure: no I/O, no engine,
so the local and Spark engines share every rule.

The rules run in the order of docs/rules.md (SPEC section 3). Deduplication (rule 4) needs
state across pings, so the engine applies it: `evaluate_line` returns the document id of every
ping that reached rule 4, together with the outcome of rules 5 to 9, and the engine turns the
outcome into a `duplicates` count when the id was already seen.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeGuard

import simdjson

# -- counters ---------------------------------------------------------------------------------

MAIN_PROCESSED = "main_processed"
MAIN_IGNORED = "main_ignored"
CRASH_PROCESSED = "crash_processed"
CRASH_IGNORED = "crash_ignored"
CRASH_NON_MAIN_IGNORED = "crash_non_main_ignored"
OTHER_DOC_TYPE = "other_doc_type"
MALFORMED_LINES = "malformed_lines"
DUPLICATES = "duplicates"
SAMPLED_OUT = "sampled_out"
#: Counters kept per submission date. Every non-blank line lands in exactly one of them,
#: or in the run-wide `undated` counter (flat layout only).
COUNTERS: tuple[str, ...] = (
    MAIN_PROCESSED,
    MAIN_IGNORED,
    CRASH_PROCESSED,
    CRASH_IGNORED,
    CRASH_NON_MAIN_IGNORED,
    OTHER_DOC_TYPE,
    MALFORMED_LINES,
    DUPLICATES,
    SAMPLED_OUT,
)
UNDATED = "undated"
#: Files, not lines: ping files that could not be read or inflated and were skipped
#: (fill --on-corrupt-file skip). Their lines are in no counter.
CORRUPT_FILES = "corrupt_files"
#: Whether outcomes carry a second duplicate key (`Outcome.crash_id`): not legacy pings.
CRASH_IDS = False

# -- dimensions -------------------------------------------------------------------------------

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dimension:
    """A dimension: its name, where to find it (first path with a value wins), and the
    string values that count as absent."""

    name: str
    paths: tuple[Path, ...]
    absent: frozenset[str] = frozenset()


def _dim(name: str, *dotted: str, absent: tuple[str, ...] = ()) -> Dimension:
    return Dimension(name, tuple(tuple(p.split(".")) for p in dotted), frozenset(absent))


#: The dimensions of an aggregate. Adding one is one line here.
DIMENSIONS: tuple[Dimension, ...] = (
    _dim("build_version", "environment.build.version"),
    _dim("build_id", "environment.build.buildId"),
    _dim("channel", "meta.normalizedChannel", "application.channel"),
    _dim("application", "meta.appName", "application.name"),
    _dim("os_name", "environment.system.os.name"),
    _dim("os_version", "environment.system.os.version"),
    _dim("architecture", "environment.build.architecture"),
    _dim("country", "meta.geoCountry"),
    _dim("experiment_id", "environment.addons.activeExperiment.id"),
    _dim("experiment_branch", "environment.addons.activeExperiment.branch"),
    _dim("e10s_enabled", "environment.settings.e10sEnabled"),
    _dim("e10s_cohort", "environment.settings.e10sCohort"),
    _dim("gfx_compositor", "environment.system.gfx.features.compositor", absent=("none",)),
)
DIMENSION_NAMES: tuple[str, ...] = tuple(d.name for d in DIMENSIONS)
_BUILD_ID_INDEX = DIMENSION_NAMES.index("build_id")

# -- stats ------------------------------------------------------------------------------------

#: Per-ping measures, in the order of `Outcome.measures`. Each is an integer (usage in whole
#: seconds), so that sums are exact and do not depend on the order pings are added in; a stat is
#: its integer total divided once by its unit (`MEASURE_UNITS`: 3,600 seconds an hour).
MEASURES: tuple[str, ...] = (
    "ping_count",
    "usage_hours",
    "main_crashes",
    "content_crashes",
    "plugin_crashes",
    "gmplugin_crashes",
    "content_shutdown_crashes",
    "gpu_crashes",
)
SECONDS_PER_HOUR = 3600
#: What one unit of each measure is worth in its stat: usage is counted in seconds.
MEASURE_UNITS: tuple[int, ...] = (1, SECONDS_PER_HOUR, 1, 1, 1, 1, 1, 1)
#: The measures that get squared sums: all but ping_count.
SQUARED_MEASURES: tuple[str, ...] = MEASURES[1:]
CRASH_MEASURES: tuple[str, ...] = MEASURES[2:]
#: The 35 stats of one aggregate: the 29 of SPEC section 5, then the largest client's count of
#: each crash measure (client_<crash>_max: docs/rates.md, "Heavy crash loops"), appended later.
STATS: tuple[str, ...] = (
    *MEASURES,
    *(f"{m}_squared" for m in SQUARED_MEASURES),
    "client_count",
    *(f"client_{m}_squared" for m in SQUARED_MEASURES),
    *(f"client_{c}_usage_hours" for c in CRASH_MEASURES),
    *(f"client_{c}_max" for c in CRASH_MEASURES),
)


def merged_by_max(stat: str) -> bool:
    """Whether a stat combines over aggregates by maximum (client_<crash>_max), not by sum."""
    return stat.startswith("client_") and stat.endswith("_max")

#: Keyed count histograms that hold child-process crash counts (rule 8), per crash measure.
CRASH_COUNT_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("content_crashes", "SUBPROCESS_CRASHES_WITH_DUMP", "content"),
    ("plugin_crashes", "SUBPROCESS_CRASHES_WITH_DUMP", "plugin"),
    ("gmplugin_crashes", "SUBPROCESS_CRASHES_WITH_DUMP", "gmplugin"),
    ("content_shutdown_crashes", "SUBPROCESS_KILL_HARD", "ShutDownKill"),
    ("gpu_crashes", "SUBPROCESS_CRASHES_WITH_DUMP", "gpu"),
)
_CHILD_CRASH_ORDER = tuple(
    next(h for h in CRASH_COUNT_HISTOGRAMS if h[0] == m) for m in MEASURES[3:]
)

MAX_USAGE_HOURS = 25.0
MAX_USAGE_SECONDS = 25 * SECONDS_PER_HOUR
#: Longer dimension values are cut to this many characters: real ones are short (an OS version,
#: an experiment id), and a value of megabytes would be copied into every row it keys.
MAX_DIMENSION_CHARS = 1024
ACTIVITY_WINDOW = timedelta(days=7)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# -- outcome ----------------------------------------------------------------------------------

#: (activity date as an ordinal, then one value or None per dimension, in DIMENSIONS order)
Key = tuple[Any, ...]


@dataclass(slots=True)  # not frozen: a frozen instance costs 1 µs to make, this 0.25 µs
class Outcome:
    """Where one line lands.

    `counter` is its counter; `submission_date` None means the run's `undated` counter.
    `doc_id` is set when the ping reached rule 4 and has an id: if that id was already seen
    this date, the line is a duplicate instead. `key`, `client_id` and `measures` are set
    for processed pings only. `crash_id` is a second duplicate key, checked only for pings
    that are not duplicates by `doc_id`: a Glean crash ping's minidump hash (never set by the
    legacy rules).
    """

    counter: str
    submission_date: date | None
    doc_id: str | None = None
    key: Key | None = None
    client_id: str | None = None
    measures: tuple[int, ...] | None = None  # integers, in the family's MEASURE_UNITS
    crash_id: str | None = None

    @property
    def dedupable(self) -> bool:
        return self.doc_id is not None or self.crash_id is not None


# -- value helpers ----------------------------------------------------------------------------


def is_json_int(value: object) -> TypeGuard[int]:
    """A JSON integer within the signed 64-bit range (`true`/`false` are not integers)."""
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def lookup(doc: object, path: Path) -> object:
    """The value at `path` in nested objects, or None when any step is missing."""
    for key in path:
        if type(doc) is not dict:
            return None
        doc = doc.get(key)
    return doc


def dimension_string(value: object) -> str | None:
    """A dimension value as stored: strings as they are (NUL replaced, PostgreSQL cannot
    store it), booleans as "True"/"False", integers in decimal; anything else is absent."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if len(text) > MAX_DIMENSION_CHARS:
            text = text[:MAX_DIMENSION_CHARS]
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    if kind is bool:
        return "True" if value else "False"
    if is_json_int(value):
        return str(value)
    return None


def dimension_values(doc: dict[str, Any]) -> tuple[str | None, ...]:
    """One value (or None for absent) per dimension, in DIMENSIONS order."""
    values: list[str | None] = []
    for dim in DIMENSIONS:
        found = None
        for path in dim.paths:
            # "X, else Y": Y is read only when X's key is missing (an object on the way that
            # is not an object holds no keys); a present X of another type, null included, is
            # X's value, and the dimension is absent.
            node: Any = doc
            for key in path:  # lookup(), inlined: this runs 13 times a ping
                node = node.get(key, _MISSING) if type(node) is dict else _MISSING
                if node is _MISSING:
                    break
            if node is not _MISSING:
                found = dimension_string(node)
                break
        values.append(None if found in dim.absent else found)
    return tuple(values)


_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")
_DATE_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T.+)?\Z", re.DOTALL)
_SUBMISSION_DATE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})\Z")


def _calendar_date(match: re.Match[str] | None) -> date | None:
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_submission_date(value: object) -> date | None:
    """`YYYYMMDD` or `YYYY-MM-DD`, a real calendar date; else None."""
    if type(value) is not str:
        return None
    if len(value) not in (8, 10) or (len(value) == 10 and (value[4] != "-" or value[7] != "-")):
        return None
    return _calendar_date(_SUBMISSION_DATE.match(value))


def _date_prefix(value: object, pattern: re.Pattern[str]) -> date | None:
    if type(value) is not str:
        return None
    return _calendar_date(pattern.match(value))


def clamp_activity_date(activity: date, submission: date) -> date:
    """Rule 5: activity dates are kept within the 7 days up to the submission date."""
    if submission.toordinal() > ACTIVITY_WINDOW.days:
        activity = max(activity, submission - ACTIVITY_WINDOW)
    return min(activity, submission)  # (in year 1's first week there is nothing to clamp to)


def _count(histograms: object, name: str, key: str) -> int:
    """Rule 8: the bucket "0" of a keyed count histogram; missing, odd or negative is 0."""
    count = lookup(histograms, (name, key, "values", "0"))
    return count if is_json_int(count) and count >= 0 else 0


def _build_id_ok(value: str | None) -> bool:
    return value is not None and len(value) == 14 and value.isascii() and value.isdigit()


# -- reading a ping ---------------------------------------------------------------------------

#: Where the rules look, besides the dimensions. Together they are FIELDS_READ.
RULE_PATHS: tuple[Path, ...] = (
    ("type",),
    ("id",),
    ("clientId",),
    *(("meta", key) for key in ("submissionDate", "docType", "sampleId", "documentId")),
    ("payload", "processType"),
    ("payload", "crashDate"),
    ("payload", "info", "subsessionStartDate"),
    ("payload", "info", "subsessionLength"),
    *(("payload", "keyedHistograms", name, key, "values", "0")
      for _, name, key in CRASH_COUNT_HISTOGRAMS),
)

FieldTree = dict[str, "FieldTree | None"]


def _field_tree(paths: Iterable[Path]) -> FieldTree:
    """Paths as a tree of keys; None marks a leaf."""
    tree: FieldTree = {}
    for path in paths:
        node = tree
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node.setdefault(path[-1], None)
    return tree


#: Every field the rules read: the only parts of a ping turned into Python values.
FIELDS_READ: FieldTree = _field_tree(
    (*RULE_PATHS, *(path for dim in DIMENSIONS for path in dim.paths)))

_MISSING = object()
#: The decoder every family uses: one parser a process, reused (it keeps its buffers between
#: lines), and the types of the objects and arrays it gives.
PARSER = simdjson.Parser()
OBJECT, ARRAY = simdjson.Object, simdjson.Array


def _pick(obj: Any, tree: FieldTree) -> dict[str, Any]:
    """The fields of `tree` found in a simdjson object, as plain Python values. An object or
    array where a leaf is expected becomes {} or [], which no rule takes for a value; of a
    repeated key, the first occurrence counts.

    It walks the object's keys rather than asking for each wanted key: simdjson answers a
    present key in 0.05 µs but a missing one in 2 µs (an exception inside), and most pings lack
    some of the keys asked for."""
    out: dict[str, Any] = {}
    for key in obj.keys():
        if key not in tree or key in out:
            continue
        subtree = tree[key]
        value = obj[key]  # (the first occurrence)
        kind = type(value)
        if kind is OBJECT:
            value = _pick(value, subtree) if subtree is not None else {}
        elif kind is ARRAY:
            value = []
        out[key] = value
    return out


# -- the rules --------------------------------------------------------------------------------


def parse_line(line: bytes | memoryview) -> dict[str, Any] | None:
    """The parts of a ping the rules read, as plain values; None for a malformed line (not
    UTF-8 JSON, or not an object).

    simdjson validates the whole line (syntax, UTF-8, numbers) at gigabytes a second, and only
    the fields in FIELDS_READ become Python objects: a main ping's histograms, most of its
    bytes, are never built.
    """
    try:
        doc = PARSER.parse(line)
    except (ValueError, RuntimeError):  # RuntimeError: too deep, or an integer over 64 bits
        return None
    try:
        return _pick(doc, FIELDS_READ) if type(doc) is OBJECT else None
    finally:
        del doc  # the parser is reused: no view into its buffer may outlive this call


def evaluate_line(
    line: bytes | memoryview,
    layout_date: date | None,
    wanted: Container[date] | None = None,
    sample_below: float | None = None,
    dedupe: bool = True,
) -> Outcome | None:
    """Apply the rules to one non-blank line.

    `layout_date` is the folder's submission date (partitioned layout) or None (flat layout:
    the ping's own `meta.submissionDate` decides, and pings outside `wanted` give None).
    `sample_below`: keep only pings whose `meta.sampleId` is an integer below it.
    """
    doc = parse_line(line)
    if doc is None:
        return Outcome(MALFORMED_LINES, layout_date)
    meta = doc.get("meta")
    if type(meta) is not dict:
        meta = {}
    submission = layout_date
    if submission is None:  # rule 2, flat layout
        submission = parse_submission_date(meta.get("submissionDate"))
        if submission is None:
            return Outcome(UNDATED, None)
        if wanted is not None and submission not in wanted:
            return None
    return evaluate_doc(doc, meta, submission, sample_below, dedupe)


def doc_type(doc: dict[str, Any], meta: dict[str, Any]) -> object:
    """Rule 1: `meta.docType`, else (only when the key is missing) the top-level `type`."""
    return meta["docType"] if "docType" in meta else doc.get("type")


def document_id(doc: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """Rule 4's id: top-level `id`, else (only when the key is missing) `meta.documentId`;
    only strings count: a present id of another type, null included, is no id."""
    doc_id = doc["id"] if "id" in doc else meta.get("documentId")
    return doc_id if type(doc_id) is str else None


def evaluate_doc(
    doc: dict[str, Any],
    meta: dict[str, Any],
    submission: date,
    sample_below: float | None = None,
    dedupe: bool = True,
) -> Outcome:
    """Rules 1 and 3 to 9 for one parsed ping of a known submission date."""
    kind = doc_type(doc, meta)
    if kind != "main" and kind != "crash":
        return Outcome(OTHER_DOC_TYPE, submission)
    if sample_below is not None:
        sample_id = meta.get("sampleId")
        if not (is_json_int(sample_id) and sample_id < sample_below):
            return Outcome(SAMPLED_OUT, submission)
    payload = doc.get("payload")
    if type(payload) is not dict:
        payload = {}
    is_main = kind == "main"
    if not is_main and "processType" in payload and payload["processType"] != "main":
        return Outcome(CRASH_NON_MAIN_IGNORED, submission)  # rule 3
    doc_id = document_id(doc, meta) if dedupe else None  # rule 4 is the engine's

    ignored = MAIN_IGNORED if is_main else CRASH_IGNORED
    if is_main:  # rule 5
        activity = _date_prefix(lookup(payload, ("info", "subsessionStartDate")), _DATE_TIME)
    else:
        activity = _date_prefix(payload.get("crashDate"), _DATE)
    if activity is None:
        return Outcome(ignored, submission, doc_id)
    activity = clamp_activity_date(activity, submission)

    dims = dimension_values(doc)
    if not _build_id_ok(dims[_BUILD_ID_INDEX]):  # rule 6
        return Outcome(ignored, submission, doc_id)

    if is_main:
        length = lookup(payload, ("info", "subsessionLength"))
        if not is_json_int(length):  # rule 7
            return Outcome(ignored, submission, doc_id)
        # min(25, max(0, length / 3600)) hours, as seconds: divided once per aggregate
        usage_seconds = min(MAX_USAGE_SECONDS, max(0, length))
        histograms = payload.get("keyedHistograms")
        measures: tuple[int, ...] = (
            1,
            usage_seconds,
            0,
            *(_count(histograms, name, key) for _, name, key in _CHILD_CRASH_ORDER),
        )
        processed = MAIN_PROCESSED
    else:
        measures = (0, 0, 1, 0, 0, 0, 0, 0)
        processed = CRASH_PROCESSED
    client = doc.get("clientId")
    return Outcome(
        processed,
        submission,
        doc_id,
        key=(activity.toordinal(), *dims),
        client_id=client if type(client) is str else None,
        measures=measures,
    )


def key_to_row(key: Key) -> tuple[str, dict[str, str]]:
    """An aggregate key as stored: the activity date as text and the present dimensions."""
    activity = date.fromordinal(key[0]).isoformat()
    dims = {name: value for name, value in zip(DIMENSION_NAMES, key[1:], strict=True)
            if value is not None}
    return activity, dims
