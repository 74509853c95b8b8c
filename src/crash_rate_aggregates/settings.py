"""The settings of every command, from one table.

`SETTINGS` is the only place a setting is declared: its name, type, default, help and whether it
may hold a secret. Everything else follows from it: the flag (`--name-with-dashes`), the
environment variable (`CRASH_AGGREGATES_<NAME>`), the TOML key (`name`), the parsing and checks,
the redacted view, and the table of docs/operations.md (`settings_table_markdown`).

A value is taken from the first place that gives one:

    1. a command-line flag
    2. the environment variable CRASH_AGGREGATES_<NAME> (an empty value counts as unset)
    3. the TOML file: --config PATH, else $CRASH_AGGREGATES_CONFIG, else
       ./crash-aggregates.toml when it exists
    4. the default

A bad value is a UsageError whose one line names the setting and where the value came from;
secrets never appear in it other than redacted.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UsageError
from .families import FAMILIES
from .redact import remember, remember_secret
from .stores.base import DEFAULT_DB, redact

ENV_PREFIX = "CRASH_AGGREGATES_"
DEFAULT_CONFIG = Path("crash-aggregates.toml")
#: Where the TOML file is when --config is not given (else ./crash-aggregates.toml).
CONFIG_ENV = "CRASH_AGGREGATES_CONFIG"


@dataclass(frozen=True)
class Setting:
    """One setting. `type` is str, int, float or list (a list of strings); a default of None
    makes it optional. `secret` marks values that may carry credentials (URLs with a password
    or a token): they are shown redacted."""

    name: str
    type: type
    default: object
    help: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    schemes: tuple[str, ...] = ()  # allowed URL schemes, when not empty

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def toml_key(self) -> str:
        return self.name


SETTINGS: tuple[Setting, ...] = (
    Setting("db", str, DEFAULT_DB,
            "The database `fill` writes and `rates`, `compare` and `watchdog` read: "
            "`sqlite:///path.db` or `postgresql://user:password@host/db`.",
            secret=True, schemes=("sqlite", "postgresql", "postgres")),
    Setting("parquet", str, None,
            "Also write (or read, for the watchdog) Parquet partitions under this folder or "
            "URL (`s3://`, `gs://`, `az://`).", secret=True),
    Setting("input", str, None,
            "`fill`: the ping store to read, a folder or an fsspec URL.", secret=True),
    Setting("family", str, None,
            "Ping family: `legacy` (crash and main pings) or `glean` (Glean crash and "
            "baseline pings), each in its own tables. `fill` reads that family (unset: "
            "`legacy`); `rates`, `compare`, `watchdog` and `serve` read it (unset: the one "
            "family the store holds, else `legacy`).", choices=tuple(FAMILIES)),
    Setting("workers", int, None,
            "`fill`: worker processes reading ping files (unset: the CPU count).", minimum=1),
    Setting("parallel_dates", int, 1,
            "`fill`: submission dates read at once, sharing the workers.", minimum=1),
    Setting("log_format", str, "text",
            "`text`: a summary line per date and progress; `json`: one JSON object per date "
            "with its counters, no progress.", choices=("text", "json")),
    Setting("webhook_url", str, None,
            "Alerts: POST a JSON document here (Slack, Mattermost or any HTTP endpoint). Its "
            "path is shown as `***`, as services put a token there.",
            secret=True, schemes=("http", "https")),
    Setting("smtp_url", str, None,
            "Alerts: mail server, `smtp://user:password@host:587` (STARTTLS when offered) or "
            "`smtps://user:password@host:465`.", secret=True, schemes=("smtp", "smtps")),
    Setting("email_from", str, "crash-aggregates@localhost", "Alerts: the sender address."),
    Setting("email_to", list, (),
            "Alerts: recipient addresses (TOML: a list of strings; the flag repeats or takes "
            "a comma-separated list, as the environment variable does)."),
    Setting("watchdog_days", int, 7,
            "Submission dates the watchdog checks, ending yesterday (UTC).",
            minimum=1, maximum=366),
    Setting("watchdog_weeks", int, 4,
            "Trailing weeks of the same weekday the watchdog compares each date with.",
            minimum=2, maximum=52),
    Setting("watchdog_volume_ratio", float, 0.5,
            "A date's pings or usage hours below this fraction of its same-weekday median fail "
            "the watchdog (0 turns the check off).", minimum=0.0, maximum=1.0),
    Setting("watchdog_ignored_jump", float, 0.05,
            "A date's share of ignored lines more than this (absolute: 0.05 is 5 percentage "
            "points) above its same-weekday median fails the watchdog.",
            minimum=0.0, maximum=1.0),
    Setting("watchdog_rows_ratio", float, 0.5,
            "A date whose last run wrote fewer rows than this fraction of its same-weekday "
            "median fails the watchdog's run check (0 turns the comparison off; 0 rows always "
            "fail).", minimum=0.0, maximum=1.0),
    Setting("min_usage_hours", float, 1000.0,
            "`compare`: below this many usage hours a side says `not enough usage yet`.",
            minimum=0.0),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: Settings whose URL path is itself a secret (webhook tokens).
_SECRET_PATHS = frozenset({"webhook_url"})


@dataclass(frozen=True)
class Settings:
    """Resolved settings, typed. `sources` says where each value came from: a flag (`--db`),
    an environment variable, `<config file> key <name>`, or `default`."""

    db: str
    parquet: str | None
    input: str | None
    family: str | None
    workers: int | None
    parallel_dates: int
    log_format: str
    webhook_url: str | None
    smtp_url: str | None
    email_from: str
    email_to: tuple[str, ...]
    watchdog_days: int
    watchdog_weeks: int
    watchdog_volume_ratio: float
    watchdog_ignored_jump: float
    watchdog_rows_ratio: float
    min_usage_hours: float
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def redacted(self) -> dict[str, object]:
        """Every setting by name, JSON-ready, secrets (passwords, webhook tokens) as ***."""
        return {s.name: redact_value(s, getattr(self, s.name)) for s in SETTINGS}

    def describe(self) -> str:
        """One line per setting: `name = value  (source)`, redacted."""
        shown = self.redacted()
        width = max(len(s.name) for s in SETTINGS)
        return "\n".join(
            f"{s.name:<{width}} = {shown[s.name]!r}  ({self.sources.get(s.name, 'default')})"
            for s in SETTINGS)


def redact_value(setting: Setting, value: object) -> object:
    """The value as it may be shown: lists as lists, secret URLs redacted."""
    if isinstance(value, tuple):
        return list(value)
    if not setting.secret or not isinstance(value, str):
        return value
    if setting.name in _SECRET_PATHS:
        value = _hide_path(value)
    return redact(value)


def _hide_path(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return "***"
    hidden = "/***" if parts.path not in ("", "/") or parts.query else parts.path
    return urlunsplit((parts.scheme, parts.netloc, hidden, "", ""))


def resolve(flags: Mapping[str, object | None], env: Mapping[str, str] | None = None,
            config_path: Path | None = None) -> Settings:
    """Settings from flags (by setting name; None or an empty list means not given), the
    environment (default: os.environ), the TOML file (`config_path`, else the file
    $CRASH_AGGREGATES_CONFIG names, else ./crash-aggregates.toml when it exists) and the
    defaults, in that order."""
    unknown = sorted(set(flags) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r} in flags")
    environment = os.environ if env is None else env
    if config_path is None and environment.get(CONFIG_ENV, "").strip():
        config_path = Path(environment[CONFIG_ENV].strip())
    config, config_name = _read_config(config_path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        raw: object
        flag_value = flags.get(setting.name)
        if isinstance(flag_value, list | tuple) and not flag_value:
            flag_value = None  # a repeatable flag given no time
        env_value = environment.get(setting.env, "")
        if flag_value is not None:
            raw, source = flag_value, setting.flag
        elif env_value.strip():
            raw, source = env_value, setting.env
        elif setting.toml_key in config:
            raw, source = config[setting.toml_key], f"{config_name} key {setting.toml_key}"
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
            continue
        values[setting.name] = parse_value(setting, raw, source)
        sources[setting.name] = source
    _remember_secrets(values)
    return Settings(**values, sources=sources)


def _remember_secrets(values: Mapping[str, Any]) -> None:
    """Every message printed from now on is scrubbed of these settings' passwords (and of a
    webhook's path, its token)."""
    for setting in SETTINGS:
        value = values.get(setting.name)
        if not setting.secret or not isinstance(value, str):
            continue
        remember(value)
        if setting.name in _SECRET_PATHS:
            remember_secret(_path_of(value))


def _path_of(url: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        return url
    return path if len(path) > 1 else ""


def _read_config(path: Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return {}, ""
        path = DEFAULT_CONFIG
    name = str(path)
    try:
        with open(path, "rb") as source:
            config = tomllib.load(source)
    except FileNotFoundError:
        raise UsageError(f"config file {name} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {name}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {name} is not valid TOML: {_one_line(exc)}") from None
    unknown = sorted(set(config) - {s.toml_key for s in SETTINGS})
    if unknown:
        raise UsageError(f"config file {name}: unknown setting {unknown[0]!r} (known: "
                         + ", ".join(s.toml_key for s in SETTINGS) + ")")
    return config, name


def parse_value(setting: Setting, raw: object, source: str) -> object:
    """`raw` (text from the environment, a TOML value or a flag's value) as the setting's type,
    checked; a UsageError naming the setting and `source` otherwise."""

    def bad(why: str) -> UsageError:
        return UsageError(f"bad value for {setting.name} from {source}: {why}")

    shown = redact_value(setting, raw) if isinstance(raw, str) else raw
    if setting.type is list:
        return _parse_list(raw, bad)
    if setting.type is int:
        value: Any = _parse_int(raw, shown, bad)
    elif setting.type is float:
        value = _parse_float(raw, shown, bad)
    elif isinstance(raw, str):
        value = raw.strip()
        if not value:
            raise bad("empty")
    else:
        raise bad(f"{shown!r} is not text")
    if setting.choices and value not in setting.choices:
        raise bad(f"{shown!r} is not one of {', '.join(setting.choices)}")
    if setting.minimum is not None and value < setting.minimum:
        raise bad(f"{shown!r} is below the minimum {_number(setting.minimum)}")
    if setting.maximum is not None and value > setting.maximum:
        raise bad(f"{shown!r} is above the maximum {_number(setting.maximum)}")
    if setting.schemes:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme not in setting.schemes:
            raise bad(f"{shown!r} is not a {' or '.join(s + '://' for s in setting.schemes)} "
                      "URL")
    return value


_Bad = Callable[[str], UsageError]


def _parse_int(raw: object, shown: object, bad: _Bad) -> int:
    if isinstance(raw, bool):
        raise bad(f"{shown!r} is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise bad(f"{shown!r} is not an integer")


def _parse_float(raw: object, shown: object, bad: _Bad) -> float:
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        raise bad(f"{shown!r} is not a number")
    return value


def _parse_list(raw: object, bad: _Bad) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, list | tuple):
        items = []
        for item in raw:
            if not isinstance(item, str):
                raise bad(f"{item!r} is not text")
            items.extend(item.split(","))
    else:
        raise bad(f"{raw!r} is not a list of text")
    return tuple(item.strip() for item in items if item.strip())


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _default_text(setting: Setting) -> str:
    if setting.default is None:
        return "unset"
    if isinstance(setting.default, tuple):
        return ", ".join(f"`{item}`" for item in setting.default) or "empty"
    return f"`{setting.default}`"


def settings_table_markdown() -> str:
    """The table of settings in docs/operations.md, generated from SETTINGS."""
    lines = ["| flag | environment variable | TOML key | default | meaning |",
             "|---|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `{s.flag}` | `{s.env}` | `{s.toml_key}` | {_default_text(s)} | "
                     f"{s.help} |")
    return "\n".join(lines) + "\n"


def fields_match_table() -> bool:
    """The typed Settings fields are exactly the table's names, in order (tested)."""
    names = [f.name for f in fields(Settings) if f.name != "sources"]
    return names == [s.name for s in SETTINGS]
