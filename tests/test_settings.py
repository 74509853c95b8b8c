"""One settings table: flags > CRASH_AGGREGATES_* > TOML file > defaults, typed and checked,
shown redacted, and documented by a table generated from it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from crash_rate_aggregates.errors import UsageError
from crash_rate_aggregates.settings import (
    SETTINGS,
    Settings,
    fields_match_table,
    resolve,
    settings_table_markdown,
)

ROOT = Path(__file__).parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
PASSWORD = "hunter2-xyz"


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in a folder of its own: no ./crash-aggregates.toml unless it writes one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings = resolve({}, env={})
    assert settings == Settings(
        db="sqlite:///crash_aggregates.db", parquet=None, input=None, family=None,
        workers=None, parallel_dates=1, log_format="text", webhook_url=None, smtp_url=None,
        email_from="crash-aggregates@localhost", email_to=(), watchdog_days=7,
        watchdog_weeks=4, watchdog_volume_ratio=0.5, watchdog_ignored_jump=0.05,
        watchdog_rows_ratio=0.5, min_usage_hours=1000.0)
    assert set(settings.sources.values()) == {"default"}


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('workers = 3\nlog_format = "json"\nemail_to = ["a@example.com"]\n'
                      'watchdog_days = 14\n')
    env = {"CRASH_AGGREGATES_WORKERS": "5", "CRASH_AGGREGATES_LOG_FORMAT": "text",
           "PATH": "/usr/bin"}
    settings = resolve({"workers": 7, "db": None}, env=env, config_path=config)
    assert (settings.workers, settings.log_format, settings.email_to, settings.watchdog_days,
            settings.db) == (7, "text", ("a@example.com",), 14, "sqlite:///crash_aggregates.db")
    assert settings.sources["workers"] == "--workers"
    assert settings.sources["log_format"] == "CRASH_AGGREGATES_LOG_FORMAT"
    assert settings.sources["watchdog_days"] == f"{config} key watchdog_days"
    assert settings.sources["db"] == "default"
    assert resolve({}, env=env, config_path=config).workers == 5
    assert resolve({}, env={}, config_path=config).workers == 3
    assert resolve({}, env={"CRASH_AGGREGATES_WORKERS": ""}, config_path=config).workers == 3


def test_default_config_file_is_read_when_present(empty_cwd: Path) -> None:
    assert resolve({}, env={}).parallel_dates == 1
    (empty_cwd / "crash-aggregates.toml").write_text("parallel_dates = 4\n")
    settings = resolve({}, env={})
    assert settings.parallel_dates == 4
    assert settings.sources["parallel_dates"] == "crash-aggregates.toml key parallel_dates"


def test_config_file_named_by_the_environment(tmp_path: Path, empty_cwd: Path) -> None:
    (empty_cwd / "crash-aggregates.toml").write_text("parallel_dates = 4\n")
    named = tmp_path / "etc.toml"
    named.write_text("parallel_dates = 2\n")
    env = {"CRASH_AGGREGATES_CONFIG": str(named)}
    assert resolve({}, env=env).parallel_dates == 2
    other = tmp_path / "other.toml"
    other.write_text("parallel_dates = 3\n")
    assert resolve({}, env=env, config_path=other).parallel_dates == 3  # --config wins
    with pytest.raises(UsageError, match="missing.toml does not exist"):
        resolve({}, env={"CRASH_AGGREGATES_CONFIG": str(tmp_path / "missing.toml")})


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRASH_AGGREGATES_WATCHDOG_DAYS", "3")
    assert resolve({}).watchdog_days == 3


def test_typed_values_from_each_source(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("watchdog_ignored_jump = 0\nmin_usage_hours = 250\n"
                      'email_to = "x@example.com, y@example.com"\n')
    settings = resolve({"email_to": ("a@example.com", "b@example.com,c@example.com")},
                       env={"CRASH_AGGREGATES_WATCHDOG_VOLUME_RATIO": " 0.25 "},
                       config_path=config)
    assert settings.email_to == ("a@example.com", "b@example.com", "c@example.com")
    assert settings.watchdog_volume_ratio == 0.25
    assert settings.watchdog_ignored_jump == 0.0 and isinstance(settings.watchdog_ignored_jump,
                                                                float)
    assert settings.min_usage_hours == 250.0
    assert resolve({"email_to": ()}, env={}, config_path=config).email_to == (
        "x@example.com", "y@example.com")  # a repeatable flag given no time is not given
    assert resolve({}, env={"CRASH_AGGREGATES_EMAIL_TO": "ops@example.com"}).email_to == (
        "ops@example.com",)


@pytest.mark.parametrize(("flags", "env", "toml", "message"), [
    ({}, {"CRASH_AGGREGATES_WORKERS": "abc"}, "",
     "bad value for workers from CRASH_AGGREGATES_WORKERS: 'abc' is not an integer"),
    ({"workers": 0}, {}, "", "bad value for workers from --workers: 0 is below the minimum 1"),
    ({"log_format": "xml"}, {}, "",
     "bad value for log_format from --log-format: 'xml' is not one of text, json"),
    ({}, {}, "watchdog_volume_ratio = 1.5",
     "bad value for watchdog_volume_ratio from {config} key watchdog_volume_ratio: 1.5 is "
     "above the maximum 1"),
    ({}, {}, "watchdog_days = true",
     "bad value for watchdog_days from {config} key watchdog_days: True is not an integer"),
    ({}, {}, "email_to = [1]",
     "bad value for email_to from {config} key email_to: 1 is not text"),
    ({}, {"CRASH_AGGREGATES_WATCHDOG_IGNORED_JUMP": "nan"}, "",
     "bad value for watchdog_ignored_jump from CRASH_AGGREGATES_WATCHDOG_IGNORED_JUMP: 'nan' "
     "is not a number"),
    ({}, {"CRASH_AGGREGATES_SMTP_URL": f"http://ops:{PASSWORD}@mail.example.com"}, "",
     "bad value for smtp_url from CRASH_AGGREGATES_SMTP_URL: 'http://ops:***@mail.example.com' "
     "is not a smtp:// or smtps:// URL"),
    ({"db": f"mysql://u:{PASSWORD}@h/db"}, {}, "",
     "bad value for db from --db: 'mysql://u:***@h/db' is not a sqlite:// or postgresql:// or "
     "postgres:// URL"),
    ({}, {}, "wokers = 3",
     "config file {config}: unknown setting 'wokers' (known: db, parquet, input, family, workers, "
     "parallel_dates, log_format, webhook_url, smtp_url, email_from, email_to, watchdog_days, "
     "watchdog_weeks, watchdog_volume_ratio, watchdog_ignored_jump, watchdog_rows_ratio, "
         "min_usage_hours)"),
    ({}, {}, "workers = ",
     "config file {config} is not valid TOML: Invalid value (at line 1, column 11)"),
])
def test_bad_values_name_the_setting_and_the_source(
        tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str,
        message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml + "\n")
    with pytest.raises(UsageError) as caught:
        resolve(flags, env=env, config_path=config)
    assert str(caught.value) == message.format(config=config)
    assert PASSWORD not in str(caught.value)


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^config file .*nope\.toml does not exist$"):
        resolve({}, env={}, config_path=tmp_path / "nope.toml")


def test_unknown_flag_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown setting 'colour' in flags"):
        resolve({"colour": "blue"}, env={})


def test_redacted_hides_passwords_and_webhook_tokens() -> None:
    settings = resolve({
        "db": f"postgresql://crash:{PASSWORD}@db.example.com:5432/telemetry",
        "smtp_url": f"smtps://alerts:{PASSWORD}@mail.example.com:465",
        "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
        "parquet": "s3://bucket/aggregates",
        "email_to": ["ops@example.com"],
    }, env={"CRASH_AGGREGATES_INPUT": f"file:///pings?password={PASSWORD}"})
    shown = settings.redacted()
    assert shown["db"] == "postgresql://crash:***@db.example.com:5432/telemetry"
    assert shown["smtp_url"] == "smtps://alerts:***@mail.example.com:465"
    assert shown["webhook_url"] == "https://hooks.slack.com/***"
    assert shown["parquet"] == "s3://bucket/aggregates"
    assert shown["input"] == "file:///pings?password=***"
    assert shown["email_to"] == ["ops@example.com"]
    assert shown["workers"] is None
    text = settings.describe()
    assert PASSWORD not in text and "XXXXSECRET" not in text
    assert "smtp_url              = 'smtps://alerts:***@mail.example.com:465'  (--smtp-url)" \
        in text.splitlines()
    # the real values stay usable
    assert settings.webhook_url == "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def test_settings_fields_are_the_table() -> None:
    assert fields_match_table()
    hints = typing.get_type_hints(Settings)
    for setting in SETTINGS:
        python_type = tuple[str, ...] if setting.type is list else setting.type
        expected = python_type | None if setting.default is None else python_type
        assert hints[setting.name] == expected, setting.name
    assert {s.env for s in SETTINGS} == {f"CRASH_AGGREGATES_{s.name.upper()}" for s in SETTINGS}


def test_operations_doc_has_the_generated_table() -> None:
    """docs/operations.md holds settings_table_markdown() verbatim: regenerate the table with
    `python -c 'from crash_rate_aggregates.settings import settings_table_markdown as t;
    print(t(), end="")'` when a setting changes."""
    table = settings_table_markdown()
    assert table.startswith("| flag | environment variable | TOML key | default | meaning |\n")
    assert "| `--watchdog-volume-ratio` | `CRASH_AGGREGATES_WATCHDOG_VOLUME_RATIO` | " \
           "`watchdog_volume_ratio` | `0.5` |" in table
    assert table in OPERATIONS.read_text()


def test_deploy_example_config_resolves() -> None:
    settings = resolve({}, env={}, config_path=ROOT / "deploy" / "crash-aggregates.toml")
    assert settings.db == "postgresql://crash:CHANGE-ME@db.example.com:5432/telemetry"
    assert (settings.workers, settings.log_format, settings.email_to) == (
        8, "json", ("telemetry-oncall@example.com",))
    assert settings.redacted()["smtp_url"] == "smtp://alerts:***@mail.example.com:587"
    assert settings.redacted()["webhook_url"] == "https://hooks.slack.com/***"
