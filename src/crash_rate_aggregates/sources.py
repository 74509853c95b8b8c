"""Ping stores: which files hold a submission date, and the lines in them.

Nothing here knows what a ping means. A store is a folder or an fsspec URL in one of two layouts:

- partitioned: folders `submission_date=YYYY-MM-DD/` (or `YYYYMMDD/`, `YYYY-MM-DD/`); a date's
  pings are every ping file under its folder;
- flat: every ping file anywhere in the store; each ping says its own submission date.

Ping files are named `*.json`, `*.jsonl` or `*.ndjson`, optionally `.gz` or `.zst`; other files
(and names starting with `.` or `_`, like `_SUCCESS`) are not read.

On a local filesystem symbolic links are followed, to files and to folders (date folders too).
A link that leads nowhere (dangling, or a loop) or back to a folder being read is listed like a
ping file, and opening it fails naming it: its date fails, or the file is skipped and counted.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import IO, Any, Literal, cast

from . import faults
from .errors import InputError

Layout = Literal["partitioned", "flat"]
LINE_CHUNK = 4 << 20
#: Longer lines are not buffered: a real ping is at most a few MB, and a line of hundreds of MB
#: would cost that much memory in every worker. Such a line is read past and handed on as
#: OVERSIZED_LINE, one byte that is not JSON, so the rules count it as a malformed line.
MAX_LINE_BYTES = 16 << 20
OVERSIZED_LINE = b"\xff"
_PING_FILE = re.compile(r"[^./_][^/]*\.(json|jsonl|ndjson)(\.gz|\.zst)?\Z")
_DATE_FOLDER = re.compile(r"(?:submission_date=)?([0-9]{4})-?([0-9]{2})-?([0-9]{2})\Z")
OPEN_FILE = faults.define("sources.open_file", "a ping file is about to be opened")


@dataclass(frozen=True, slots=True)
class PingFile:
    path: str  # as the filesystem names it
    size: int  # bytes on storage (compressed)


#: The extra that brings each object store's fsspec implementation.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure", "adl": "azure"}


def filesystem(url: str, error: type[Exception]) -> tuple[Any, str]:
    """The fsspec filesystem and path of a URL or local path. Credentials are each
    filesystem's own (AWS_* variables and profiles, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*);
    FSSPEC_<PROTOCOL>_<OPTION> variables set options such as FSSPEC_S3_ENDPOINT_URL."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError:
        scheme = url.split("://", 1)[0].lower()
        extra = _EXTRAS.get(scheme)
        hint = f"pip install 'crash-rate-aggregates[{extra}]'" if extra else "an fsspec package"
        raise error(f"{scheme}:// URLs need {hint}") from None
    except Exception as exc:  # ValueError mostly; any library's error is one line here
        from .redact import redact_url, scrub

        raise error(f"cannot open {redact_url(url)}: {scrub(_why(exc))}") from None


class PingStore:
    """A ping store at a URL or local path."""

    def __init__(self, url: str) -> None:
        from .redact import redact_url

        self.url = url
        shown = redact_url(url)
        self.fs, self.root = filesystem(url, InputError)
        self.root = self.root.rstrip("/") or "/"
        self.local = "file" in _protocols(self.fs)
        try:
            is_dir = self.fs.isdir(self.root)
        except Exception as exc:  # OSError, or a filesystem's own (botocore's NoCredentials)
            raise InputError(f"cannot open ping store {shown}: {_why(exc)}") from None
        if not is_dir:
            raise InputError(f"ping store {shown} does not exist or is not a folder")

    def date_folders(self) -> dict[date, list[str]]:
        """Top-level folders named for a submission date."""
        folders: dict[date, list[str]] = {}
        for entry in self._listdir(self.root):
            if entry["type"] != "directory" and not entry.get("islink"):
                continue  # a link is a date folder by its name (a dangling one fails its date)
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            match = _DATE_FOLDER.match(name)
            if match is None:
                continue
            try:
                day = date(int(match[1]), int(match[2]), int(match[3]))
            except ValueError:
                continue
            folders.setdefault(day, []).append(entry["name"].rstrip("/"))
        return folders

    def layout(self) -> Layout:
        return "partitioned" if self.date_folders() else "flat"

    def files_for_date(self, day: date) -> list[PingFile]:
        """Partitioned layout: every ping file under the date's folder(s)."""
        files: list[PingFile] = []
        for folder in sorted(self.date_folders().get(day, [])):
            files.extend(self._ping_files(folder))
        return files

    def all_files(self) -> list[PingFile]:
        """Flat layout: every ping file in the store."""
        return self._ping_files(self.root)

    def _listdir(self, path: str) -> list[dict[str, Any]]:
        try:
            return list(self.fs.ls(path, detail=True))
        except Exception as exc:  # OSError, or a filesystem's own
            problem = _link_problem(path) if self.local else None
            raise InputError(f"cannot list {path}: {problem or _why(exc)}") from None

    def _ping_files(self, folder: str) -> list[PingFile]:
        if self.local:
            return sorted(self._local_ping_files(folder), key=lambda file: file.path)
        try:
            found = self.fs.find(folder, detail=True)
        except Exception as exc:  # OSError, or a filesystem's own
            raise InputError(f"cannot list {folder}: {_why(exc)}") from None
        files = [
            PingFile(path, int(info.get("size") or 0))
            for path, info in sorted(found.items())
            if info.get("type") == "file" and _PING_FILE.match(path.rsplit("/", 1)[-1])
        ]
        return files

    def _local_ping_files(self, folder: str) -> Iterator[PingFile]:
        """The ping files under a local folder, following symbolic links (fsspec's find does
        not: it reports a link as type 'other'). A link that cannot be followed, or that leads
        back to a folder already read, is listed so that opening it fails naming it."""
        seen = {os.path.realpath(folder)}
        pending = [folder]
        while pending:
            current = pending.pop()
            for entry in self._listdir(current):
                path = entry["name"].rstrip("/")
                name = path.rsplit("/", 1)[-1]
                kind, size = entry["type"], int(entry.get("size") or 0)
                if entry.get("islink"):
                    kind, size = _followed(path)
                if kind == "directory":
                    real = os.path.realpath(path)
                    if entry.get("islink") and (real in seen or _encloses(real, current)):
                        yield PingFile(path, 0)  # back to a folder being read: open() says so
                        continue
                    seen.add(real)
                    pending.append(path)
                elif kind in ("file", "broken") and _PING_FILE.match(name):
                    yield PingFile(path, size)

    def open(self, file: PingFile) -> IO[bytes]:
        faults.fault_point(OPEN_FILE)
        try:
            raw: IO[bytes] = self.fs.open(file.path, "rb")
        except Exception as exc:  # OSError, or a filesystem's own
            problem = _link_problem(file.path) if self.local else None
            raise InputError(f"{file.path}: cannot open: {problem or _reason(exc)}") from None
        return raw


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _encloses(real: str, folder: str) -> bool:
    """Whether the real path `real` is `folder` or one of the folders holding it."""
    inside = os.path.realpath(folder)
    return os.path.commonpath([real, inside]) == real


def _followed(path: str) -> tuple[str, int]:
    """What a symbolic link leads to: ("file" | "directory" | "other", size), or ("broken",
    0) for a dangling link or a loop."""
    import stat

    try:
        status = os.stat(path)
    except OSError:
        return "broken", 0
    if stat.S_ISDIR(status.st_mode):
        return "directory", 0
    return ("file" if stat.S_ISREG(status.st_mode) else "other"), status.st_size


def _link_problem(path: str) -> str | None:
    """Why a local path that is a symbolic link cannot be read, in words (None: not a link)."""
    try:
        if not os.path.islink(path):
            return None
        target = os.readlink(path)
    except OSError:
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symbolic link loop (it points to {target})"
        return f"a dangling symbolic link (it points to {target}, which does not exist)"
    if os.path.isdir(path):
        return (f"a symbolic link back to a folder being read (it points to {target}): "
                "a loop, or the same files twice")
    return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _why(exc: BaseException) -> str:
    """A filesystem's exception as one line, with its type when it is not an OSError (a
    botocore NoCredentialsError says nothing without its name)."""
    text = " ".join(_reason(exc).split())
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def inflating_reader(raw: IO[bytes], path: str) -> IO[bytes]:
    """A reader of the decompressed bytes of a ping file, chosen by its suffix."""
    if path.endswith(".gz"):
        try:
            from isal import igzip  # ISA-L: several times faster than zlib at inflating

            return cast(IO[bytes], igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
        except ImportError:
            import gzip

            return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if path.endswith(".zst"):
        return cast(IO[bytes], _ZstdFrames(raw))
    return raw


class _ZstdFrames:
    """Every zstd frame of a file, one after the other, and an error for a file that ends
    inside a frame (zstandard's stream reader stops after the first frame and takes a truncated
    one for the end of the data)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw = raw
        self._zstd = zstandard.ZstdDecompressor()
        self._frame = self._zstd.decompressobj()
        self._in_frame = False

    def read(self, size: int = -1) -> bytes:
        while data := self._raw.read(max(size, 1 << 20)):
            out = self._frame.decompress(data)
            self._in_frame = True
            while self._frame.eof:  # a frame ended: the bytes after it start the next one
                rest = self._frame.unused_data
                self._frame = self._zstd.decompressobj()
                self._in_frame = bool(rest)
                if rest:
                    out += self._frame.decompress(rest)
            if out:
                return out
        if self._in_frame:
            raise EOFError("the file ends inside a zstd frame (truncated)")
        return b""


def iter_lines(store: PingStore, file: PingFile) -> Iterator[tuple[bytes | memoryview, int]]:
    """The file's lines (without the newline) and the compressed bytes read so far.

    Reads big chunks and hands out zero-copy views of the lines in them (a main ping is ~100 KB:
    copying each line would cost as much as parsing it); only a line that spans two chunks is
    joined. Runs of blank lines (ASCII whitespace only, which no rule counts) are stepped over
    in bulk, at the speed of reading them; a chunk read that gives no other line gives one empty
    line, so that a caller still sees the position advance. Any failure to read or inflate
    becomes an InputError naming the file.
    """
    raw = store.open(file)
    try:
        reader = inflating_reader(raw, file.path)
        rest = b""
        oversized = False  # inside a line longer than MAX_LINE_BYTES: skipping to its end
        while chunk := _read(reader, file):
            position = _tell(raw)
            end = chunk.find(b"\n")
            if end < 0:
                if oversized or len(rest) + len(chunk) > MAX_LINE_BYTES:
                    oversized, rest = True, b""
                else:
                    rest += chunk
                yield b"", position  # no line ended in this chunk: the position only
                continue
            view = memoryview(chunk)
            if oversized or len(rest) + end > MAX_LINE_BYTES:
                yield OVERSIZED_LINE, position
            else:
                yield (rest + chunk[:end] if rest else view[:end]), position
            oversized = False
            if chunk.isspace():  # nothing but blank lines (the first one aside): skip them all
                start = chunk.rfind(b"\n") + 1
            else:
                start = _past_blank_lines(chunk, end + 1)
            last = len(chunk) - 1
            while (end := chunk.find(b"\n", start)) >= 0:
                yield view[start:end], position
                start = end + 1
                if start <= last and chunk[start] in _BLANK_BYTES:  # (a ping starts with "{")
                    start = _past_blank_lines(chunk, start)
            rest = chunk[start:]
            if len(rest) > MAX_LINE_BYTES:
                oversized, rest = True, b""
        if oversized:
            yield OVERSIZED_LINE, _tell(raw)
        elif rest:
            yield rest, _tell(raw)
    finally:
        raw.close()


_BLANK_RUN = re.compile(rb"\s*")  # bytes: ASCII whitespace, what bytes.strip() removes
_BLANK_BYTES = frozenset(b" \t\n\r\x0b\x0c")


def _past_blank_lines(chunk: bytes, start: int) -> int:
    """Where the first line at or after `start` that is not blank begins (a regex runs over a
    run of blank lines at a byte a nanosecond; a line at a time costs a microsecond each)."""
    match = _BLANK_RUN.match(chunk, start)
    if match is None or match.end() == start:
        return start
    last_newline = chunk.rfind(b"\n", start, match.end())
    return last_newline + 1 if last_newline >= 0 else start


def _read(reader: IO[bytes], file: PingFile) -> bytes:
    try:
        return reader.read(LINE_CHUNK)
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{file.path}: cannot read or inflate: {_reason(exc)}") from None
    except Exception as exc:  # zstandard.ZstdError and the like
        raise InputError(f"{file.path}: cannot inflate: {_reason(exc)}") from None


def _tell(raw: IO[bytes]) -> int:
    try:
        return raw.tell()
    except (OSError, ValueError):
        return 0
