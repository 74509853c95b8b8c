"""Alerts: a JSON POST to a webhook, an e-mail through SMTP, or both (`notify`).

Failures raise AlertError with one line that names the server by scheme, host and port only:
never a password, a user name, or a webhook's path (where services put their token).
"""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from . import __version__
from .errors import CrashAggregatesError
from .redact import encode_userinfo

if TYPE_CHECKING:
    from .settings import Settings

USER_AGENT = f"crash-aggregates/{__version__}"


class AlertError(CrashAggregatesError):
    """An alert that could not be delivered; its message is one line without credentials."""


def _server(url: str) -> str:
    """scheme://host:port of a URL, without user, password, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<bad URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def _one_line(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split()) or "no details"


def send_webhook(url: str, payload: Mapping[str, Any], timeout: float = 10) -> None:
    """POST `payload` as JSON (`Content-Type: application/json`) to `url`; any answer other
    than 2xx, or no answer within `timeout` seconds, raises AlertError. A `user:password@` in
    the URL is sent as HTTP basic authentication."""
    url = encode_userinfo(url)  # a password pasted with a raw `/`, `?`, `#` or `@`
    where = _server(url)
    try:
        parts = urlsplit(url)
        secrets = (parts.password, parts.path if len(parts.path) > 1 else None, parts.query)
    except ValueError:
        raise AlertError(f"bad webhook URL {where}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertError(f"bad webhook URL {where}: use http:// or https://")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if parts.username is not None:  # user:password@ becomes HTTP basic auth
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        exc.close()
        raise AlertError(f"webhook {where} answered HTTP {exc.code} "
                         f"{_one_line(str(exc.reason), *secrets)}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else _os_reason(exc.reason)
        raise AlertError(f"cannot reach webhook {where}: {_one_line(reason, *secrets)}") from None
    except (OSError, ValueError) as exc:  # timeouts while reading, bad responses
        raise AlertError(f"cannot reach webhook {where}: "
                         f"{_one_line(_os_reason(exc), *secrets)}") from None
    if not 200 <= status < 300:
        raise AlertError(f"webhook {where} answered HTTP {status}")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def send_email(smtp_url: str, sender: str, recipients: Sequence[str], subject: str, body: str,
               timeout: float = 10) -> None:
    """Send a plain-text e-mail through `smtp_url`:

    - `smtp://[user:password@]host[:port]` (port 25 by default): STARTTLS when the server
      offers it, then login when a user is given;
    - `smtps://[user:password@]host[:port]` (port 465 by default): TLS from the start.

    User and password are URL-decoded (`%40` for `@`). Raises AlertError on any failure."""
    smtp_url = encode_userinfo(smtp_url)  # a password pasted with a raw `/`, `?`, `#` or `@`
    where = _server(smtp_url)
    try:
        parts = urlsplit(smtp_url)
        host, port = parts.hostname, parts.port
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
    except ValueError:
        raise AlertError(f"bad SMTP URL {where}") from None
    if parts.scheme not in ("smtp", "smtps") or not host:
        raise AlertError(f"bad SMTP URL {where}: use smtp://host:port or smtps://host:port")
    if not recipients:
        raise AlertError("no e-mail recipients")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["User-Agent"] = USER_AGENT
    message.set_content(body)
    secrets = (password, parts.password)
    try:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port or 465, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port or 25, timeout=timeout)
        with client:
            client.ehlo()
            if parts.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if user is not None:
                client.login(user, password or "")
            client.send_message(message, from_addr=sender, to_addrs=list(recipients))
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{address} ({code})"
                            for address, (code, _) in exc.recipients.items())
        raise AlertError(f"mail server {where} refused every recipient: {refused}") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        raise AlertError(f"mail server {where} answered {exc.smtp_code} "
                         f"{_one_line(text, *secrets)}") from None
    except smtplib.SMTPException as exc:
        raise AlertError(f"cannot send e-mail through {where}: "
                         f"{_one_line(str(exc), *secrets)}") from None
    except OSError as exc:  # refused, unreachable, timed out, TLS errors
        raise AlertError(f"cannot send e-mail through {where}: "
                         f"{_one_line(_os_reason(exc), *secrets)}") from None


def notify(settings: Settings, subject: str, text: str, payload: Mapping[str, Any],
           timeout: float = 10) -> list[str]:
    """Send an alert to every channel `settings` configures; return what was sent to (e.g.
    `["webhook https://hooks.example.com", "e-mail to ops@example.com"]`; empty when nothing
    is configured).

    - webhook (`webhook_url`): `{"subject": subject, "text": text, "details": payload}`;
      `text` is what Slack and Mattermost show;
    - e-mail (`smtp_url` and `email_to`): from `email_from`, with `subject`, and `text` as body.

    Each channel is tried even when another fails; then one AlertError lists the failures."""
    sent: list[str] = []
    errors: list[str] = []
    if settings.webhook_url:
        try:
            send_webhook(settings.webhook_url,
                         {"subject": subject, "text": text, "details": dict(payload)}, timeout)
            sent.append(f"webhook {_server(settings.webhook_url)}")
        except AlertError as exc:
            errors.append(str(exc))
    if settings.smtp_url and settings.email_to:
        try:
            send_email(settings.smtp_url, settings.email_from, list(settings.email_to), subject,
                       text, timeout)
            sent.append(f"e-mail to {', '.join(settings.email_to)}")
        except AlertError as exc:
            errors.append(str(exc))
    elif settings.smtp_url or settings.email_to:
        errors.append("e-mail alerts need both smtp_url and email_to")
    if errors:
        done = f" (sent: {'; '.join(sent)})" if sent else ""
        raise AlertError("alert not delivered: " + "; ".join(errors) + done)
    return sent
