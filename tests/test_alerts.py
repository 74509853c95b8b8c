"""Alerts against real servers on loopback: an HTTP server (http.server in a thread) and SMTP
servers (aiosmtpd), plain, STARTTLS, implicit TLS and with login."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crash_rate_aggregates.alerts import AlertError, notify, send_email, send_webhook
from crash_rate_aggregates.errors import CrashAggregatesError
from crash_rate_aggregates.settings import resolve
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.watchdog import check

PASSWORD = "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Hook:
    port: int
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str = "/hooks/T000/B000/token-xyz") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"path": self.path, "body": body,
                                   "content_type": self.headers["Content-Type"],
                                   "authorization": self.headers["Authorization"]})
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_posts_the_payload_as_json(hook: Hook) -> None:
    payload = {"summary": "2 of 20 checks FAILED", "ok": False, "n": 3,
               "findings": [{"day": "2024-03-18", "check": "run"}], "text": "é ü"}
    send_webhook(hook.url(), payload)
    assert len(hook.received) == 1
    got = hook.received[0]
    assert got["path"] == "/hooks/T000/B000/token-xyz"
    assert got["content_type"] == "application/json"
    assert json.loads(got["body"]) == payload
    assert got["authorization"] is None


def test_webhook_sends_url_credentials_as_basic_auth(hook: Hook) -> None:
    send_webhook(f"http://alerts%40example.com:{PASSWORD}@127.0.0.1:{hook.port}/x?k=v", {"a": 1})
    got = hook.received[0]
    assert (got["path"], json.loads(got["body"])) == ("/x?k=v", {"a": 1})
    login = base64.b64decode(got["authorization"].removeprefix("Basic ")).decode()
    assert login == f"alerts@example.com:{PASSWORD}"


def test_webhook_error_status_is_one_line_without_the_token(hook: Hook) -> None:
    hook.status = 500
    with pytest.raises(AlertError) as caught:
        send_webhook(hook.url(), {"a": 1})
    assert str(caught.value) == (f"webhook http://127.0.0.1:{hook.port} answered HTTP 500 "
                                 "Internal Server Error")
    assert isinstance(caught.value, CrashAggregatesError)


def test_webhook_closed_port_is_one_line_without_credentials() -> None:
    port = free_port()
    url = f"http://alerts:{PASSWORD}@127.0.0.1:{port}/hooks/token-xyz"
    with pytest.raises(AlertError) as caught:
        send_webhook(url, {"a": 1}, timeout=2)
    message = str(caught.value)
    assert message == f"cannot reach webhook http://127.0.0.1:{port}: Connection refused"
    assert "\n" not in message and PASSWORD not in message and "token-xyz" not in message


def test_webhook_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(AlertError) as caught:
            send_webhook(f"http://127.0.0.1:{port}/x", {"a": 1}, timeout=0.3)
    assert str(caught.value) == f"cannot reach webhook http://127.0.0.1:{port}: timed out"


def test_webhook_needs_http() -> None:
    with pytest.raises(AlertError, match=r"^bad webhook URL ftp://example\.com: use http"):
        send_webhook("ftp://example.com/x", {})


# -- SMTP ---------------------------------------------------------------------------------------


class Sink:
    """An aiosmtpd handler keeping what it receives, and whether it came over TLS."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "tls": server.transport.get_extra_info("ssl_object") is not None,
                              "message": email.message_from_bytes(  # SMTP sends CRLF
                                  envelope.original_content.replace(b"\r\n", b"\n"),
                                  policy=email.policy.default)})
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append(data.login.decode())
            if data.login == b"alerts@example.com" and data.password == PASSWORD.encode():
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(),
                            authenticator=sink.authenticate, auth_require_tls=False)
    controller.start()
    yield sink, controller.port
    controller.stop()


def test_email_is_delivered(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    send_email(f"smtp://127.0.0.1:{port}", "watchdog@example.com",
               ["ops@example.com", "dev@example.com"], "watchdog: 2 checks FAILED",
               "2024-03-18  run  FAIL  no run recorded\nsecond line\n")
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert got["from"] == "watchdog@example.com"
    assert got["to"] == ["ops@example.com", "dev@example.com"]
    assert got["tls"] is False
    message = got["message"]
    assert message["Subject"] == "watchdog: 2 checks FAILED"
    assert message["To"] == "ops@example.com, dev@example.com"
    assert message.get_content() == "2024-03-18  run  FAIL  no run recorded\nsecond line\n"
    assert sink.logins == []


def test_email_logs_in_with_the_url_credentials(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    send_email(f"smtp://alerts%40example.com:{PASSWORD}@127.0.0.1:{port}", "a@example.com",
               ["b@example.com"], "subject", "body")
    assert sink.logins == ["alerts@example.com"]
    assert [m["to"] for m in sink.messages] == [["b@example.com"]]


def test_email_wrong_password_is_one_line_without_it(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    with pytest.raises(AlertError) as caught:
        send_email(f"smtp://alerts%40example.com:wrong-{PASSWORD}@127.0.0.1:{port}",
                   "a@example.com", ["b@example.com"], "subject", "body")
    message = str(caught.value)
    assert message.startswith(f"mail server smtp://127.0.0.1:{port} answered 535 ")
    assert PASSWORD not in message and "alerts" not in message and "\n" not in message
    assert sink.messages == []


def test_email_closed_port_is_one_line_without_the_password() -> None:
    port = free_port()
    with pytest.raises(AlertError) as caught:
        send_email(f"smtp://alerts:{PASSWORD}@127.0.0.1:{port}", "a@example.com",
                   ["b@example.com"], "subject", "body", timeout=2)
    assert str(caught.value) == (f"cannot send e-mail through smtp://127.0.0.1:{port}: "
                                 "Connection refused")


def test_email_needs_an_smtp_url_and_recipients() -> None:
    with pytest.raises(AlertError, match=r"^bad SMTP URL http://h: use smtp://"):
        send_email("http://h", "a@example.com", ["b@example.com"], "s", "b")
    with pytest.raises(AlertError, match="^no e-mail recipients$"):
        send_email("smtp://h", "a@example.com", [], "s", "b")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_email_over_tls(tls_files: tuple[Path, Path], implicit: bool,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    cert_path, key_path = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # the client trusts the test CA
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    sink = Sink()
    # aiosmtpd offers AUTH only after STARTTLS unless told the implicit TLS is enough
    options: dict[str, Any] = ({"ssl_context": server_context, "auth_require_tls": False}
                               if implicit else {"tls_context": server_context})
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(),
                            authenticator=sink.authenticate, **options)
    controller.start()
    try:
        scheme = "smtps" if implicit else "smtp"
        send_email(f"{scheme}://alerts%40example.com:{PASSWORD}@127.0.0.1:{controller.port}",
                   "a@example.com", ["b@example.com"], "over TLS", "body")
    finally:
        controller.stop()
    assert sink.logins == ["alerts@example.com"]  # login only after TLS (auth_require_tls)
    assert [(m["tls"], m["message"]["Subject"]) for m in sink.messages] == [(True, "over TLS")]


# -- notify -------------------------------------------------------------------------------------


def test_notify_sends_to_every_configured_channel(hook: Hook, smtp: tuple[Sink, int],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = smtp
    monkeypatch.chdir(tmp_path)
    settings = resolve({"webhook_url": hook.url()}, env={
        "CRASH_AGGREGATES_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "CRASH_AGGREGATES_EMAIL_TO": "ops@example.com, dev@example.com",
        "CRASH_AGGREGATES_EMAIL_FROM": "watchdog@example.com"})
    payload = {"ok": False, "findings": [{"day": "2024-03-18", "check": "run", "ok": False}]}
    sent = notify(settings, "watchdog: 1 check FAILED", "2024-03-18  run  FAIL", payload)
    assert sent == [f"webhook http://127.0.0.1:{hook.port}",
                    "e-mail to ops@example.com, dev@example.com"]
    assert json.loads(hook.received[0]["body"]) == {
        "subject": "watchdog: 1 check FAILED", "text": "2024-03-18  run  FAIL",
        "details": payload}
    got = sink.messages[0]
    assert (got["from"], got["to"]) == ("watchdog@example.com",
                                        ["ops@example.com", "dev@example.com"])
    assert got["message"]["Subject"] == "watchdog: 1 check FAILED"
    assert got["message"].get_content() == "2024-03-18  run  FAIL\n"


def test_notify_tries_every_channel_and_reports_failures(
        smtp: tuple[Sink, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = smtp
    monkeypatch.chdir(tmp_path)
    dead = free_port()
    settings = resolve({"webhook_url": f"http://127.0.0.1:{dead}/hook/token-xyz",
                        "smtp_url": f"smtp://127.0.0.1:{port}",
                        "email_to": ["ops@example.com"]}, env={})
    with pytest.raises(AlertError) as caught:
        notify(settings, "subject", "text", {}, timeout=2)
    assert str(caught.value) == (
        f"alert not delivered: cannot reach webhook http://127.0.0.1:{dead}: Connection refused "
        "(sent: e-mail to ops@example.com)")
    assert len(sink.messages) == 1


def test_notify_with_nothing_configured_sends_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert notify(resolve({}, env={}), "s", "t", {}) == []
    with pytest.raises(AlertError, match="need both smtp_url and email_to"):
        notify(resolve({"email_to": ["a@example.com"]}, env={}), "s", "t", {})


def test_watchdog_report_as_an_alert(hook: Hook, smtp: tuple[Sink, int], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What the watchdog command sends: subject the summary, text the report, details the
    report as data."""
    sink, port = smtp
    monkeypatch.chdir(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        report = check(store, 1, today=dt.date(2024, 3, 19))
    finally:
        store.close()
    settings = resolve({"webhook_url": hook.url(), "smtp_url": f"smtp://127.0.0.1:{port}",
                        "email_to": ["ops@example.com"]}, env={})
    notify(settings, report.summary, report.as_text(), report.as_dict())
    body = json.loads(hook.received[0]["body"])
    assert body["subject"] == ("watchdog 2024-03-18 to 2024-03-18: 1 of 4 checks FAILED, "
                               "3 skipped (on 2024-03-18)")
    assert body["text"].splitlines()[0] == (
        "2024-03-18  run            FAIL  no run recorded for this date")
    assert body["details"]["ok"] is False
    assert body["details"]["findings"][0] == {
        "day": "2024-03-18", "check": "run", "ok": False, "skipped": False,
        "message": "no run recorded for this date", "value": None, "median": None}
    message = sink.messages[0]["message"]
    assert message["Subject"] == body["subject"]
    assert message.get_content() == body["text"] + "\n"
