"""Ping stores: which files hold a submission date, and the lines in them.

Nothing here knows what a ping means. A store is a folder or an fsspec URL in one of two layouts:

- partitioned: folders `submission_date=YYYY-MM-DD/` (or `YYYYMMDD/`, `YYYY-MM-DD/`); a date's
  pings are every ping file under its folder;
- flat: every ping file anywhere in the store; each ping says its own submission date.

Ping files are named `*.json`, `*.jsonl` or `*.ndjson`, optionally `.gz` or `.zst`; other files
(and names starting with `.` or `_`, like `_SUCCESS`) are not read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import IO, Any, Literal, cast

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
    except ValueError as exc:
        raise error(f"cannot open {url}: {exc}") from None


class PingStore:
    """A ping store at a URL or local path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = filesystem(url, InputError)
        self.root = self.root.rstrip("/") or "/"
        try:
            is_dir = self.fs.isdir(self.root)
        except OSError as exc:
            raise InputError(f"cannot open ping store {url}: {exc}") from None
        if not is_dir:
            raise InputError(f"ping store {url} does not exist or is not a folder")

    def date_folders(self) -> dict[date, list[str]]:
        """Top-level folders named for a submission date."""
        folders: dict[date, list[str]] = {}
        for entry in self._listdir(self.root):
            if entry["type"] != "directory":
                continue
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
        except OSError as exc:
            raise InputError(f"cannot list {path}: {exc}") from None

    def _ping_files(self, folder: str) -> list[PingFile]:
        try:
            found = self.fs.find(folder, detail=True)
        except OSError as exc:
            raise InputError(f"cannot list {folder}: {exc}") from None
        files = [
            PingFile(path, int(info.get("size") or 0))
            for path, info in sorted(found.items())
            if info.get("type") == "file" and _PING_FILE.match(path.rsplit("/", 1)[-1])
        ]
        return files

    def open(self, file: PingFile) -> IO[bytes]:
        try:
            raw: IO[bytes] = self.fs.open(file.path, "rb")
        except OSError as exc:
            raise InputError(f"{file.path}: cannot open: {_reason(exc)}") from None
        return raw


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


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
    joined. Any failure to read or inflate becomes an InputError naming the file.
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
                continue
            view = memoryview(chunk)
            if oversized or len(rest) + end > MAX_LINE_BYTES:
                yield OVERSIZED_LINE, position
            else:
                yield (rest + chunk[:end] if rest else view[:end]), position
            oversized = False
            start = end + 1
            while (end := chunk.find(b"\n", start)) >= 0:
                yield view[start:end], position
                start = end + 1
            rest = chunk[start:]
            if len(rest) > MAX_LINE_BYTES:
                oversized, rest = True, b""
        if oversized:
            yield OVERSIZED_LINE, _tell(raw)
        elif rest:
            yield rest, _tell(raw)
    finally:
        raw.close()


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
