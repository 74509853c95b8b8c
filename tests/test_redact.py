"""Passwords never appear: one redaction for every URL (redact.py), on stdout, stderr,
--log-format json and every column of the run table."""

from __future__ import annotations

import re
import sqlite3
import string
from pathlib import Path
from urllib.parse import quote

import fsspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import main_ping, to_bytes, write_ping_file
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.redact import redact_url, remember, scrub, url_secrets
from crash_rate_aggregates.stores.base import redact

#: Passwords from the full printable set, long and varied enough that finding one in the output
#: cannot be chance.
PASSWORDS = st.text(alphabet=string.printable, min_size=8, max_size=24).filter(
    lambda text: len(set(text)) >= 5)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://crash:s3/cr#t?x@db.example.com:5432/telemetry",
     "postgresql://crash:***@db.example.com:5432/telemetry"),
    ("postgresql://crash:p@ss@db/telemetry", "postgresql://crash:***@db/telemetry"),
    ("s3://AKIDEXAMPLE:wJalr/K7MDENG+bPxRfiCY@bucket/pings", "s3://AKIDEXAMPLE:***@bucket/pings"),
    ("http://user:pw%2Fx@host/p?password=zz&x=1", "http://user:***@host/p?password=***&x=1"),
    ("postgresql://crash@db/telemetry", "postgresql://crash@db/telemetry"),
    ("postgresql://db/telemetry?sslpassword=abc&application_name=x",
     "postgresql://db/telemetry?sslpassword=***&application_name=x"),
    ("/data/pings", "/data/pings"),
    ("s3://bucket/pings@2016", "s3://bucket/pings@2016"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact(url) == shown  # stores.base.redact delegates


def test_secrets_raw_and_decoded_are_scrubbed_from_messages() -> None:
    url = "postgresql://crash:p%40ss%2Fword@db/telemetry"
    assert {"p%40ss%2Fword", "p@ss/word"} <= set(url_secrets(url))
    remember(url)
    text = 'FATAL: password "p@ss/word" rejected for postgresql://crash:p%40ss%2Fword@db/x'
    assert scrub(text) == 'FATAL: password "***" rejected for postgresql://crash:***@db/x'
    # a driver that cut the URL at the `/` of a raw password quotes a piece of it
    remember("postgresql://crash:first-piece/second-piece@db/telemetry")
    assert scrub('invalid integer value "first-piece" for connection option "port"') == \
        'invalid integer value "***" for connection option "port"'


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, encode=st.booleans(),
       template=st.sampled_from(["postgresql://crash:{}@db.example.com:5432/telemetry",
                                 "s3://AKID:{}@bucket/pings", "http://user:{}@host/pings",
                                 "smtps://alerts:{}@mail.example.com:465",
                                 "postgresql://db/telemetry?password={}&x=1"]))
def test_no_redacted_url_or_scrubbed_message_holds_the_password(
        password: str, encode: bool, template: str) -> None:
    if "?" in template:
        assume(not set(password) & set("& \t\n\r\x0b\x0c"))  # one query value, as typed
    written = quote(password, safe="") if encode else password
    url = template.format(written)
    around = template.format("") + " failed: connection refused"
    assume(password not in around and written not in around)
    shown = redact_url(url)
    assert password not in shown and written not in shown
    remember(url)
    message = scrub(f"cannot connect to {url}: password {password!r} rejected ({written})")
    assert password not in message and written not in message


@pytest.fixture(scope="module")
def ping_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redact") / "pings"
    write_ping_file(root / "submission_date=2016-03-14" / "p.json", [main_ping("a")])
    return root


def _outputs(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    return result.stdout + result.stderr


def _run_table(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT * FROM crash_aggregates_runs").fetchall()
    assert rows
    return "\n".join(repr(value) for row in rows for value in row)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS, encode=st.booleans(), log_format=st.sampled_from(["text", "json"]))
def test_no_output_or_run_column_holds_an_input_password(
        tmp_path: Path, password: str, encode: bool, log_format: str) -> None:
    """An input URL with credentials that cannot be opened: stdout, stderr and every column of
    the run records written for its dates."""
    written = quote(password, safe="") if encode else password
    db = tmp_path / f"runs-{abs(hash((password, encode, log_format)))}.db"
    url = f"http://user:{written}@127.0.0.1:9/pings"
    out = _outputs(["fill", "--input", url, "--from", "2016-03-14", "--to", "2016-03-15",
                    "--db", f"sqlite:///{db}", "--log-format", log_format])
    everything = out + _run_table(db)
    assert "http://user:***@127.0.0.1:9/pings" in everything
    assert password not in everything and written not in everything


@pytest.mark.postgres
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS)
def test_no_output_holds_an_unencoded_database_password(ping_store: Path,
                                                       password: str) -> None:
    """A PostgreSQL URL whose password holds unencoded `/`, `#`, `?` or `@` (the driver cuts the
    URL there): nothing printed holds the password, nor a longer piece of it."""
    out = _pg_outputs(ping_store, password)
    assert out.startswith("error: ") and out.count("\n") == 1
    assert password not in out
    # nor any run of 4 characters of it, but those the usual messages hold anyway
    usual = _usual_pg_messages(ping_store)
    shown = out.replace("***", "\n")
    assert not [password[i:i + 4] for i in range(len(password) - 3)
                if password[i:i + 4] in shown and password[i:i + 4] not in usual]


def _pg_outputs(ping_store: Path, password: str) -> str:
    return _outputs(["fill", "--input", str(ping_store), "--from", "2016-03-14", "--to",
                     "2016-03-14", "--db", f"postgresql://crash:{password}@127.0.0.1:1/test"])


_USUAL: list[str] = []


def _usual_pg_messages(ping_store: Path) -> str:
    """What the driver says for passwords without a secret character in the message: a
    refused connection, a query or port it cannot parse."""
    if not _USUAL:
        _USUAL.extend(_pg_outputs(ping_store, password)
                      for password in ("plainpassword", "xx?yy", "xx/yy", "xx#yy", "x@y:z"))
    return "\n".join(_USUAL)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS, log_format=st.sampled_from(["text", "json"]))
def test_a_readable_input_url_with_a_password_is_never_shown(
        tmp_path: Path, password: str, log_format: str) -> None:
    """An input store that opens (fsspec's in-memory filesystem, in this process): a date
    written and a date without files, whose error names the store: output and run table."""
    name = f"store-{abs(hash((password, log_format)))}"
    url = f"memory://user:{password}@/{name}"
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe(f"{root}/submission_date=2016-03-14/p.json", to_bytes(main_ping("a")) + b"\n")
    db = tmp_path / f"{name}.db"
    out = _outputs(["fill", "--input", url, "--from", "2016-03-14", "--to", "2016-03-15",
                    "--db", f"sqlite:///{db}", "--log-format", log_format, "--workers", "1"])
    assert "2016-03-14" in out and f"memory://user:***@/{name}" in out
    everything = out + _run_table(db)
    assert password not in everything


@pytest.mark.postgres
@pytest.mark.parametrize("password",
                         ["hunter@2?Zq9", "Kx/Qv7", "Pq@Ws#Wz?Rd", "aB9/cD8?eF7#gH6@iJ5"])
def test_a_raw_password_with_url_delimiters_connects_and_never_shows(
        password: str, pg_url: str, ping_store: Path) -> None:
    """A password pasted unencoded (raw `/ ? # @`) is percent-encoded before libpq reads the
    URL: the fill connects (the test server trusts, so any password logs in) and no piece of
    it is printed, even when the server is down (port 1)."""
    assert pg_url.startswith("postgresql://postgres@")
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)
    runner = CliRunner()
    done = runner.invoke(cli, ["fill", "--input", str(ping_store), "--from", "2016-03-14",
                               "--to", "2016-03-14", "--db", url, "--workers", "1"])
    assert done.exit_code == 0, done.output
    read = runner.invoke(cli, ["rates", "--db", url, "--format", "json"])
    assert read.exit_code == 0, read.output
    down = url.replace("127.0.0.1:5432", "127.0.0.1:1", 1)
    failed = runner.invoke(cli, ["rates", "--db", down])
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: cannot connect to PostgreSQL"), failed.stderr
    pieces = [p for p in re.split(r"[/?#@]", password) if len(p) >= 2]
    for output in (done.output, read.output, failed.output):
        assert password not in output
        assert not [p for p in pieces if p in output], output
