"""One redaction for every URL and message the package prints or stores.

A URL's password is hidden wherever the URL is shown: `scheme://user:***@host/...`, and the
values of `password=` (and the like) query parameters as `***`. Passwords are often pasted
unencoded: urllib.parse finds the userinfo, except that its netloc ends at the first `/`, `?` or
`#`, which may be inside the password; when an `@` follows that netloc, everything up to the last
`@` of the URL counts as userinfo (when a `:` comes before it).

Messages (a driver's error, an exception) are scrubbed too: every password of a URL this process
was given (`remember`), raw and percent-decoded, becomes `***` wherever it occurs, and any
`scheme://user:password@` left in the text is redacted as above.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

HIDDEN = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: Query or conninfo parameters whose value is a secret.
_SECRET_PARAMS = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:ssl)?password|passwd|pwd|secret|secret_?key|access_?token|token)"
    r"=([^&\s]*)")
#: Secrets shorter than this are not searched for in messages (they would hit ordinary text).
_MIN_SECRET = 3
_MIN_PIECE = 4

_remembered: set[str] = set()
#: Raw passwords that hold a character where a driver cuts a URL: any run of _MIN_PIECE or more
#: of their characters is hidden (a driver's message may quote any piece of them).
_cut: set[str] = set()
_CUTTING = re.compile(r"[/?#@:\s]")


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of `rest` (a URL after `scheme://`) ends: the index of its `@`, or
    -1 when it has no password to hide.

    urllib.parse decides first; its netloc is the answer unless an `@` follows it, which
    means it stopped at a `/`, `?` or `#` inside the password: then the userinfo runs to the
    last `@` (hiding too much is safe, showing a piece of the password is not)."""
    try:
        parts = urlsplit("x://" + rest)
    except ValueError:  # an invalid IPv6 netloc and the like: the plain rule below
        parts = None
    # urlsplit drops tabs and line breaks: its netloc must be this very text to be used
    if parts is not None and rest.startswith(parts.netloc) \
            and "@" not in rest[len(parts.netloc):]:
        at = parts.netloc.rfind("@")
        return at if parts.password is not None else -1
    at = rest.rfind("@")
    if at < 0 or ":" not in rest[:at]:
        return -1
    return at


def redact_url(url: str) -> str:
    """`url` with its password (and any `password=`-like parameter) replaced by ***."""
    match = _SCHEME.match(url)
    if match is not None:
        rest = url[match.end():]
        at = _userinfo_end(rest)
        if at >= 0:
            user = rest[:rest.index(":")]
            shown = user if user and not re.search(r"[/?#\s]", user) else HIDDEN
            url = f"{match.group()}{shown}:{HIDDEN}@{rest[at + 1:]}"
    return _SECRET_PARAMS.sub(lambda m: f"{m[1]}={HIDDEN}", url)


#: What a password may hold as it is; the rest (`/ ? # @ [ ]`, spaces...) is percent-encoded.
_USERINFO_SAFE = "%!$&'()*+,;=:"


def encode_userinfo(url: str) -> str:
    """`url` as a driver can parse it: a user or password pasted with a raw `/`, `?`, `#` or
    `@` (which ends the host part for libpq, urllib and smtplib alike) percent-encoded, as the
    same rule `redact_url` reads them by. A URL without such a character is returned as is,
    so an already encoded password (`p%40ss`) is never encoded twice."""
    match = _SCHEME.match(url)
    if match is None:
        return url
    rest = url[match.end():]
    at = _userinfo_end(rest)
    if at < 0:
        return url
    user, _, password = rest[:at].partition(":")
    if not re.search(r"[/?#@\[\]\s]", user + password):
        return url
    return (f"{match.group()}{_encoded(user, _USERINFO_SAFE.replace(':', ''))}:"
            f"{_encoded(password, _USERINFO_SAFE)}@{rest[at + 1:]}")


def _encoded(text: str, safe: str) -> str:
    """`text` percent-encoded, keeping what already is an escape (`%40`); a `%` that starts
    none is encoded too (a driver refuses it, quoting the password's text around it)."""
    return quote(re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", text), safe=safe)


def _raw_password(url: str) -> str | None:
    match = _SCHEME.match(url)
    if match is None:
        return None
    rest = url[match.end():]
    at = _userinfo_end(rest)
    return rest[rest.index(":") + 1:at] if at >= 0 else None


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries (its password, `password=` values), raw and percent-decoded,
    longest first."""
    found: set[str] = set()
    match = _SCHEME.match(url)
    if match is not None:
        rest = url[match.end():]
        at = _userinfo_end(rest)
        if at >= 0:
            password = rest[rest.index(":") + 1:at]
            found.add(password)
            # A driver that cut the URL at a `/`, `?`, `#` or `@` of the password may quote a
            # piece of it ("invalid port"): the longer pieces are hidden too.
            found.update(p for p in re.split(r"[/?#@]", password) if len(p) >= _MIN_PIECE)
    found.update(m[2] for m in _SECRET_PARAMS.finditer(url))
    found |= {unquote(secret) for secret in found}
    found |= {unquote(secret.replace("+", " ")) for secret in found}
    return sorted((s for s in found if s), key=lambda s: (-len(s), s))


def remember(*urls: str | None) -> None:
    """Scrub the secrets of these URLs from every message `scrub` sees from now on."""
    for url in urls:
        if url:
            _remembered.update(s for s in url_secrets(url) if len(s) >= _MIN_SECRET)
            password = _raw_password(url)
            if password and _CUTTING.search(password) and len(password) > _MIN_PIECE:
                _cut.add(password)


def forget() -> None:
    """Forget every remembered secret: for a process that runs several commands in turn (a
    test suite, a scheduler's worker), so that one command's passwords do not blank out words
    of the next one's messages."""
    _remembered.clear()
    _cut.clear()


def remember_secret(secret: str) -> None:
    """Scrub this text (a token) from every message `scrub` sees from now on."""
    if len(secret) >= _MIN_SECRET:
        _remembered.add(secret)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without any remembered secret or one of `secrets`, and with every URL in it
    redacted."""
    hidden = {s for s in secrets if s and len(s) >= _MIN_SECRET} | _remembered
    for secret in sorted(hidden, key=lambda s: (-len(s), s)):
        text = text.replace(secret, HIDDEN)
    for password in _cut:
        text = _hide_pieces(text, password)
    return _redact_urls_in(text)


def _hide_pieces(text: str, password: str) -> str:
    """`text` with every run of at least _MIN_PIECE characters that is also in `password`
    replaced by ***, longest runs first (greedy, left to right)."""
    out = []
    position = 0
    start = 0
    while position <= len(text) - _MIN_PIECE:
        if text[position:position + _MIN_PIECE] not in password:
            position += 1
            continue
        end = position + _MIN_PIECE
        while end < len(text) and text[position:end + 1] in password:
            end += 1
        out.append(text[start:position])
        out.append(HIDDEN)
        position = start = end
    out.append(text[start:])
    return "".join(out)


def _redact_urls_in(text: str) -> str:
    """Every `scheme://...` token of `text` (up to white space) redacted."""
    out = []
    position = 0
    for match in _SCHEME.finditer(text):
        if match.start() < position:
            continue
        end = match.end()
        while end < len(text) and not text[end].isspace():
            end += 1
        out.append(text[position:match.start()])
        out.append(redact_url(text[match.start():end]))
        position = end
    out.append(text[position:])
    return _SECRET_PARAMS.sub(lambda m: f"{m[1]}={HIDDEN}", "".join(out))
