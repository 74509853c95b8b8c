"""Shared test helpers: small ping stores written from Python values."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import settings

# In CI (CI=true) Hypothesis draws the same examples every run, so a red build always means a
# change broke something; locally each run explores new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

Line = bytes | dict[str, Any]


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Each test starts without the passwords earlier tests' commands remembered (the CLI
    remembers them for its one process; a suite runs many commands in one)."""
    from crash_rate_aggregates import redact

    yield
    redact.forget()


def to_bytes(line: Line) -> bytes:
    return line if isinstance(line, bytes) else orjson.dumps(line)


def write_ping_file(path: Path, lines: Iterable[Line]) -> Path:
    """Write lines to `path`, compressed as its suffix says (.gz, .zst or plain)."""
    return write_compressed(path, b"".join(to_bytes(line) + b"\n" for line in lines))


def write_compressed(path: Path, data: bytes) -> Path:
    """Write data to `path`, compressed as its suffix says (.gz, .zst or plain), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def main_ping(
    doc_id: str | None = "id-1",
    client: str | None = "client-1",
    day: str = "2016-03-14",
    submission: str = "20160314",
    length: object = 3600,
    channel: str = "nightly",
    build_id: object = "20160314030215",
    content: int = 0,
    **meta: Any,
) -> dict[str, Any]:
    """A small valid main ping."""
    ping: dict[str, Any] = {
        "type": "main",
        "application": {"channel": "ignored-by-meta", "name": "Firefox"},
        "environment": {
            "build": {"version": "48.0a1", "buildId": build_id, "architecture": "x86-64"},
            "system": {"os": {"name": "Windows_NT", "version": "10.0"},
                       "gfx": {"features": {"compositor": "d3d11"}}},
            "settings": {"e10sEnabled": True, "e10sCohort": "test"},
            "addons": {"activeExperiment": {}},
        },
        "payload": {
            "info": {"subsessionStartDate": f"{day}T00:00:00.0+01:00", "subsessionLength": length},
            "keyedHistograms": {
                "SUBPROCESS_CRASHES_WITH_DUMP": {"content": {"values": {"0": content}}},
            },
        },
        "meta": {"submissionDate": submission, "docType": "main", "normalizedChannel": channel,
                 "appName": "Firefox", "geoCountry": "FR", "sampleId": 10, **meta},
    }
    if doc_id is not None:
        ping["id"] = doc_id
    if client is not None:
        ping["clientId"] = client
    return ping


def crash_ping(
    doc_id: str | None = "crash-1",
    client: str | None = "client-1",
    day: str = "2016-03-14",
    submission: str = "20160314",
    channel: str = "nightly",
    **payload: Any,
) -> dict[str, Any]:
    """A small valid main-process crash ping."""
    ping = main_ping(doc_id, client, day, submission, channel=channel)
    ping["type"] = "crash"
    ping["meta"]["docType"] = "crash"
    ping["payload"] = {"crashDate": day, **payload}
    return ping


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., Path]:
    """make_store({"2016-03-14": [lines, ...]}) -> a partitioned store; flat=True for flat."""

    def make(days: dict[str, list[Line]], flat: bool = False, name: str = "part-0.json") -> Path:
        root = tmp_path / "pings"
        for day, lines in days.items():
            folder = root if flat else root / f"submission_date={day}"
            write_ping_file(folder / (f"{day}-{name}" if flat else name), lines)
        root.mkdir(exist_ok=True)
        return root

    return make


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """The PostgreSQL server scripts/check provides (a real one, never a mock)."""
    url = os.environ.get("CRASH_AGGREGATES_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CRASH_AGGREGATES_TEST_PG_URL is not set: run the tests with scripts/check")
        pytest.skip("no PostgreSQL server: run the tests with scripts/check")
    return url


def with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema of their own, dropped afterwards."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    yield with_search_path(pg_base_url, schema)
    with psycopg.connect(pg_base_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def assert_same_rows(left: list[Any], right: list[Any]) -> None:
    """Two stores' (submission date, aggregate) lists: keys exactly, stats within 1e-9."""
    assert [(d, r.activity_date, r.dimensions) for d, r in left] == [
        (d, r.activity_date, r.dimensions) for d, r in right]
    for (_, a), (_, b) in zip(left, right, strict=True):
        assert a.stats == pytest.approx(b.stats, rel=1e-9)


def fold(outcomes: list[Any], per_batch: int = 1000, compact_every: int = 1_000_000
         ) -> list[Any]:
    """The aggregates of legacy outcomes of one date, folded in batches of `per_batch`."""
    from crash_rate_aggregates.aggregation import DateAggregator, DateBatch

    aggregator = DateAggregator(compact_every=compact_every)
    for start in range(0, len(outcomes), per_batch):
        batch = DateBatch()
        for outcome in outcomes[start:start + per_batch]:
            batch.add(outcome)
        aggregator.add(batch.freeze())
    return aggregator.finish()
