"""Ping stores and Parquet output on S3: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from conftest import assert_same_rows
from crash_rate_aggregates.errors import InputError
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.sources import PingStore
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.stores.parquet import ParquetStore
from crash_rate_aggregates.synth import generate_store

FIRST, LAST = date(2016, 3, 13), date(2016, 3, 14)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A moto S3 server on 127.0.0.1, found by the standard AWS variables, and an s3fs client."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        patch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("pings")
    fs.mkdir("aggregates")
    local = tmp_path_factory.mktemp("s3") / "pings"
    generate_store(local, FIRST, LAST, 500, heavy=False, files_per_day=3)
    fs.put(str(local), "pings/store", recursive=True)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()


def test_fill_reads_s3_and_writes_parquet_to_s3(s3: object, tmp_path: Path) -> None:
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    s3_url = f"sqlite:///{tmp_path / 's3.db'}"
    report = fill(FillSettings("s3://pings/store", FIRST, LAST, db_url=s3_url,
                               parquet_url="s3://aggregates/out", workers=2))
    assert not report.failed, report
    # the same pings read from S3 and from a local copy give the same rows
    local_copy = tmp_path / "copy"
    s3.get("pings/store", str(local_copy), recursive=True)  # type: ignore[attr-defined]
    assert not fill(FillSettings(str(local_copy), FIRST, LAST, db_url=local_url)).failed
    rows = open_store(s3_url).read_rows()
    assert len(rows) > 300
    assert_same_rows(open_store(local_url).read_rows(), rows)
    assert ParquetStore("s3://aggregates/out").read_rows() == rows  # the same run: exactly
    listed = s3.ls("aggregates/out/crash_aggregates/v1/submission_date=2016-03-14")  # type: ignore[attr-defined]
    assert sorted(p.rsplit("/", 1)[1][:5] for p in listed) == ["_SUCC", "part-"]


def test_replace_on_s3_deletes_the_old_version(s3: object) -> None:
    settings = FillSettings("s3://pings/store", LAST, LAST, parquet_url="s3://aggregates/again")
    first = fill(settings)
    second = fill(settings)
    assert not first.failed and not second.failed
    store = ParquetStore("s3://aggregates/again")
    marker = store.markers()["2016-03-14"]
    assert marker["run_id"] == second.run_id
    listed = s3.ls(store.partition(LAST))  # type: ignore[attr-defined]
    assert sorted(p.rsplit("/", 1)[1] for p in listed) == [
        "_SUCCESS", f"part-{second.run_id}.parquet"]


def test_missing_bucket_folder_is_one_line(s3: object) -> None:
    with pytest.raises(InputError, match="ping store s3://pings/nowhere does not exist"):
        PingStore("s3://pings/nowhere")


def test_missing_s3fs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec  # noqa: F401  (loads fsspec.registry)

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)
    with pytest.raises(InputError, match=r"s3:// URLs need pip install "
                                         r"'crash-rate-aggregates\[s3\]'"):
        PingStore("s3://pings/store")


def _fill_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`crash-aggregates fill` in a child process with the fault point before each ping file
    is opened armed to kill it: an exit status of 1 proves no ping file was opened."""
    armed = {**env, "CRASH_AGGREGATES_FAULT_POINT": "sources.open_file",
             "CRASH_AGGREGATES_FAULT_ACTION": "kill"}
    return subprocess.run([sys.executable, "-m", "crash_rate_aggregates", "fill", *args],
                          env=armed, capture_output=True, text=True, timeout=120)


def _without_credentials() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    # no profile file, no instance metadata: botocore finds no credentials at all
    return {**env, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.mark.parametrize("case", ["no credentials", "missing bucket", "input: no credentials",
                                  "input: missing bucket"])
def test_store_errors_fail_once_before_any_ping_is_read(s3: object, tmp_path: Path,
                                                        case: str) -> None:
    local = tmp_path / "pings"
    generate_store(local, LAST, LAST, 50, heavy=False, files_per_day=2)
    db = tmp_path / "runs.db"
    env = _without_credentials() if "credentials" in case else dict(os.environ)
    bucket = "s3://no-such-bucket/out" if "bucket" in case else "s3://aggregates/probed"
    if case.startswith("input"):
        args = ["--input", bucket, "--db", f"sqlite:///{db}"]
    else:
        args = ["--input", str(local), "--db", f"sqlite:///{db}", "--parquet", bucket]
    job = _fill_process([*args, "--from", str(FIRST), "--to", str(LAST), "--workers", "1"], env)
    assert job.returncode == 1, job.stderr  # not killed (-9): no ping file was opened
    assert job.stdout == "" and "Traceback" not in job.stderr
    [line] = job.stderr.splitlines()
    reason = ("NoCredentialsError: Unable to locate credentials" if "credentials" in case
              else "FileNotFoundError: The specified bucket does not exist"
              if not case.startswith("input") else "does not exist or is not a folder")
    assert line.startswith("error: ") and reason in line, line
    assert line.endswith("(no ping was read, no date was written)")
    # a run record per date where a store can hold one (the database)
    runs = open_store(f"sqlite:///{db}").read_runs()
    assert [(r["submission_date"], r["status"]) for r in runs] == [
        (str(FIRST), "failed"), (str(LAST), "failed")]
    assert all(r["error"] == line.removeprefix("error: ") for r in runs)


def test_the_probe_leaves_nothing_and_the_fault_point_is_live(s3: object,
                                                               tmp_path: Path) -> None:
    """The control of the test above: with a writable bucket the job gets to the first ping
    file (and the armed fault point kills it there); the write probe left no object."""
    local = tmp_path / "pings"
    generate_store(local, LAST, LAST, 50, heavy=False, files_per_day=1)
    job = _fill_process(["--input", str(local), "--from", str(LAST), "--to", str(LAST),
                         "--db", f"sqlite:///{tmp_path / 'x.db'}", "--parquet",
                         "s3://aggregates/control", "--workers", "1"], dict(os.environ))
    assert job.returncode == -signal.SIGKILL, job.stderr
    assert s3.find("aggregates/control") == []  # type: ignore[attr-defined]
