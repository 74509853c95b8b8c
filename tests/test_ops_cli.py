"""The daily-operation commands end to end: watchdog and compare alerting through a real local
HTTP server, and settings from the environment and a TOML file."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.synth import generate_store
from test_rates_cli import NEW, filled


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ops") / "pings"
    generate_store(root, date(2016, 3, 1), date(2016, 3, 14), 300, heavy=False)
    return root


def test_watchdog_passes_then_alerts_on_a_missing_day(week: Path, tmp_path: Path,
                                                      webhook: tuple[str, list[Any]]) -> None:
    url, received = webhook
    db = f"sqlite:///{tmp_path / 'w.db'}"
    assert invoke("fill", "--input", str(week), "--from", "2016-03-01", "--to", "2016-03-14",
                  "--db", db, "--workers", "1")[0] == 0
    code, out, _ = invoke("watchdog", "--db", db, "--days", "7", "--to", "2016-03-14",
                          "--webhook-url", url)
    assert code == 0, out
    assert received == []
    # 2016-03-15 was never filled: the watchdog must say so and alert
    code, out, err = invoke("watchdog", "--db", db, "--watchdog-days", "2", "--to",
                            "2016-03-15", "--webhook-url", url, "--watchdog-weeks", "3")
    assert code == 1
    assert "2016-03-15" in out and "FAIL" in out
    assert err.strip().startswith("alerted: webhook http://127.0.0.1:")
    [alert] = received
    assert alert["subject"].startswith("crash-aggregates watchdog: ")
    assert any(f["day"] == "2016-03-15" and not f["ok"] for f in alert["details"]["findings"])


def test_compare_regression_alerts(tmp_path: Path, webhook: tuple[str, list[Any]]) -> None:
    url, received = webhook
    db = filled(tmp_path, {"20160301030204": 5, NEW: 40})
    code, _, err = invoke("compare", "--db", db, "--candidate", f"build_id={NEW}",
                          env={"CRASH_AGGREGATES_WEBHOOK_URL": url})
    assert code == 1 and err.strip().startswith("alerted: webhook http://127.0.0.1:")
    [alert] = received
    assert alert["subject"] == f"crash regression: build_id {NEW}"
    assert alert["details"]["regression"] is True
    # the flag, as docs/operations.md says, alerts the same way
    code, _, err = invoke("compare", "--db", db, "--candidate", f"build_id={NEW}",
                          "--webhook-url", url)
    assert code == 1 and err.strip().startswith("alerted: webhook http://127.0.0.1:")
    assert len(received) == 2


def test_settings_come_from_environment_and_toml(week: Path, tmp_path: Path) -> None:
    config = tmp_path / "crash-aggregates.toml"
    db = tmp_path / "from-toml.db"
    config.write_text(f'db = "sqlite:///{db}"\nworkers = 1\n')
    code, out, _ = invoke("fill", "--from", "2016-03-14", "--to", "2016-03-14",
                          "--config", str(config),
                          env={"CRASH_AGGREGATES_INPUT": str(week),
                               "CRASH_AGGREGATES_LOG_FORMAT": "json"})
    assert code == 0
    assert json.loads(out)["status"] == "completed"
    assert db.exists()
    code, _, err = invoke("fill", "--from", "2016-03-14", "--to", "2016-03-14",
                          env={"CRASH_AGGREGATES_WORKERS": "many"})
    assert code == 2
    assert err.strip() == ("error: bad value for workers from CRASH_AGGREGATES_WORKERS: "
                           "'many' is not an integer")


def test_no_input_anywhere_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("fill", "--from", "2016-03-14", "--to", "2016-03-14")
    assert code == 2
    assert err.strip() == "error: no ping store: give --input (or input in the settings)"


def test_every_option_of_every_command_has_help() -> None:
    """A user reading `COMMAND --help` finds each option explained, and each command's help
    carries an example."""
    import click

    from crash_rate_aggregates.cli import cli

    missing = [f"{name} {option.opts[0]}"
               for name, command in cli.commands.items()  # type: ignore[attr-defined]
               for option in command.params
               if isinstance(option, click.Option) and not (option.help or "").strip()]
    assert missing == []
    without_example = [name for name, command in cli.commands.items()  # type: ignore[attr-defined]
                       if "Example" not in (command.help or "")]
    assert without_example == []


def test_every_flag_the_settings_table_shows_exists() -> None:
    """docs/operations.md's table of settings names a flag for each: each is a real option of
    some command (`--watchdog-days`, `--email-from`... used to exist only as variables)."""
    import click

    from crash_rate_aggregates.cli import cli
    from crash_rate_aggregates.settings import SETTINGS

    flags = {opt for command in cli.commands.values()  # type: ignore[attr-defined]
             for option in command.params if isinstance(option, click.Option)
             for opt in option.opts}
    assert [s.flag for s in SETTINGS if s.flag not in flags] == []
