"""docs/spark.md's cluster recipe, run as written on a real Spark standalone cluster.

A master and two workers run as separate processes on loopback, started from the PySpark
installation (no download). The recipe packs the package into an environment that Spark ships
to the executors; the rows and counters must be the local engine's, for both ping families,
and every executor must have imported the package from the environment it unpacked, not from
the driver's (editable) installation.

Cost, measured on a 2-core machine that other jobs kept at a load of 8-10: 170-220 s, 90 s of
CPU (the recipe's pip install and venv-pack about 30 s of it, while the cluster starts; then two
applications, each starting a driver and two executors that unpack the 70 MB environment).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from crash_rate_aggregates import rules, sketches
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.stores.base import open_store
from crash_rate_aggregates.synth import generate_store

pyspark = pytest.importorskip("pyspark")
ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "spark.md"
LEGACY_DAY = date(2016, 3, 14)
# the recipe's site-specific values, which the test replaces with its own
DOC_MASTER = "spark://master.internal:7077"
DOC_INPUT = "/mnt/telemetry/pings"
DOC_DB = "postgresql://crash@db.internal/telemetry"
DOC_DATES = "--from 2016-03-14 --to 2016-03-14"
WAIT = 120.0  # seconds: the longest wait for a JVM to come up on a busy 2-core machine

# Installed on the workers' PYTHONPATH, which their executors' Python workers inherit: it
# records where each Python worker found the package, without changing what it imports.
PROBE = '''
import sys
from importlib.machinery import PathFinder


class _ReportWhereFound:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "crash_rate_aggregates":
            return None
        spec = PathFinder.find_spec(name, path)
        with open(LOG, "a") as log:
            log.write(f"{sys.executable}\\t{spec.origin if spec else None}\\n")
        return spec


sys.meta_path.insert(0, _ReportWhereFound)
'''


def recipe() -> str:
    """The first sh block of docs/spark.md's section "On a cluster"."""
    section = DOC.read_text().split("## On a cluster", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "docs/spark.md: no sh block under 'On a cluster'"
    return found.group(1)


class Cluster:
    """A standalone master and workers, each a JVM in a process group of its own, on ports
    they pick themselves (read from the master's log: no port is guessed free in advance)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = self.ui = ""

    def _start(self, name: str, *args: str, env: dict[str, str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:  # the JVM keeps its own copy
            self.processes.append(subprocess.Popen(
                [str(Path(self.env["SPARK_HOME"]) / "bin" / "spark-class"), *args],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as answer:
            return dict(json.load(answer))

    def start(self, workers: int, worker_env: dict[str, str]) -> None:
        """The master, then once it says where it listens, the workers; returns when every
        worker is registered."""
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", "0", "--webui-port", "0",
                    # no REST submission server: it would take the fixed port 6066
                    env={**self.env, "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"})
        log = self.root / "master.log"

        def listening() -> bool:
            text = log.read_text(errors="replace")
            url = re.search(r"Starting Spark master at (spark://127\.0\.0\.1:\d+)", text)
            ui = re.search(r"Bound MasterWebUI to 127\.0\.0\.1, and started at "
                           r"http://[\w.]+:(\d+)", text)
            if url and ui:
                self.url, self.ui = url.group(1), f"http://127.0.0.1:{ui.group(1)}"
            return bool(url and ui)

        self.wait_for(listening, "master listening")
        for number in range(workers):
            local = self.root / f"local-{number}"  # the executors' shuffle and block files
            local.mkdir()
            self._start(f"worker-{number}", "org.apache.spark.deploy.worker.Worker", self.url,
                        "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
                        "--cores", "1", "--memory", "1g",
                        "--work-dir", str(self.root / f"work-{number}"),
                        env={**worker_env, "SPARK_LOCAL_DIRS": str(local)})

        def registered() -> bool:
            try:
                state = self.state()
            except OSError:
                return False
            return sum(w["state"] == "ALIVE" for w in state["workers"]) == workers

        self.wait_for(registered, f"{workers} workers registered")

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Poll until `ready()`, for WAIT seconds at most; fail early if a JVM ended."""
        deadline = time.monotonic() + WAIT
        while not ready():
            ended = [p.args[1] for p in self.processes if p.poll() is not None]
            if ended:
                pytest.fail(f"{ended} ended before {what}: {self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {WAIT:.0f} s: {self.logs()}")
            time.sleep(0.25)  # a polling interval, not a synchronisation

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for log in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        # workers first (each stops its executors), then the master; each whole group
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def spark_env(tmp_path: Path) -> dict[str, str]:
    """The environment of the cluster and of the recipe: loopback, files under tmp_path."""
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("no Java: a Spark cluster needs Java 17+")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYSPARK_", "SPARK_")) and k != "PYTHONPATH"}
    driver_local, java_tmp = tmp_path / "driver-local", tmp_path / "java-tmp"
    driver_local.mkdir()
    java_tmp.mkdir()
    return {**env, "SPARK_HOME": str(Path(pyspark.__file__).parent),
            "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(driver_local),
            "SPARK_DAEMON_MEMORY": "512m",
            # every JVM's temporary files (the executors fetch archives there) too; and for
            # these short-lived JVMs, the quick compiler only and one GC thread: less CPU
            "JDK_JAVA_OPTIONS": f"-Djava.io.tmpdir={java_tmp} -XX:TieredStopAtLevel=1 "
                                "-XX:+UseSerialGC",
            # `python3` and `crash-aggregates` in the recipe: this virtual environment's
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture
def cluster(tmp_path: Path, spark_env: dict[str, str]) -> Iterator[Cluster]:
    """A cluster to start (`start`), stopped whatever happens."""
    root = tmp_path / "cluster"
    root.mkdir()
    created = Cluster(root, spark_env)
    try:
        yield created
    finally:
        created.stop()


def probe_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with PROBE on the Python path, logging to tmp_path/imports.log."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        f"LOG = {str(tmp_path / 'imports.log')!r}\n{PROBE}")
    return {**env, "PYTHONPATH": str(probe)}


def checkout_copy(to: Path) -> Path:
    """What the recipe's `pip install .` needs of the checkout, so it builds outside it."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, to / name)
    shutil.copytree(ROOT / "src", to / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return to


def start_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """bash -e `script`, in a process group of its own."""
    return subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish_script(process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    """Wait for the script; its whole group is ended if it outlives `timeout` or the test."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the recipe did not finish:\n{output.decode(errors='replace')}")
    assert process.returncode == 0, output.decode(errors="replace")


def rows_and_runs(url: str, family: str) -> tuple[list[Any], list[dict[str, Any]]]:
    store = open_store(url, family=family)
    try:
        runs = [{k: run[k] for k in ("status", *rules.COUNTERS, rules.UNDATED, "rows_written")}
                for run in store.read_runs()]
        return store.read_rows(), runs
    finally:
        store.close()


def estimates(row: Any) -> dict[str, float | None]:
    return {name: sketches.merge([sketch]).count if sketch else None
            for name, sketch in row.sketches.items()}


def assert_same_as_local(spark_url: str, local_url: str, family: str) -> None:
    spark_rows, spark_runs = rows_and_runs(spark_url, family)
    local_rows, local_runs = rows_and_runs(local_url, family)
    assert spark_runs == local_runs and spark_runs[0]["status"] == "completed"
    assert [(d, r.activity_date, r.dimensions) for d, r in spark_rows] == [
        (d, r.activity_date, r.dimensions) for d, r in local_rows]
    for (_, on_spark), (_, local) in zip(spark_rows, local_rows, strict=True):
        assert on_spark.stats == local.stats  # both sum integers exactly: the same floats
        assert estimates(on_spark) == estimates(local)


def test_the_documented_recipe_on_a_standalone_cluster(tmp_path: Path, cluster: Cluster,
                                                       spark_env: dict[str, str]) -> None:
    from test_glean_engines import DAY as GLEAN_DAY
    from test_glean_engines import expected_rows, write_day

    legacy_store = tmp_path / "legacy"
    generate_store(legacy_store, LEGACY_DAY, LEGACY_DAY, 600, heavy=False, files_per_day=4)
    glean_store = tmp_path / "glean"
    write_day(glean_store)
    spark_db = f"sqlite:///{tmp_path / 'spark.db'}"

    script = recipe()
    for placeholder in (DOC_MASTER, DOC_INPUT, DOC_DB, DOC_DATES):
        assert script.count(placeholder) == 1, placeholder
    script = script.replace(DOC_INPUT, str(legacy_store)).replace(DOC_DB, spark_db)
    # the environment is built and packed while the cluster's JVMs start
    packing, running = script[:script.index("export ")], script[script.index("export "):]
    fill_command = running[running.index("crash-aggregates fill"):].strip()
    # the doc's "the same command with --family glean", on the Glean day
    glean_day = f"--from {GLEAN_DAY} --to {GLEAN_DAY}"
    running += "\n" + (fill_command.replace(str(legacy_store), str(glean_store))
                       .replace(DOC_DATES, glean_day) + " --family glean") + "\n"
    checkout = checkout_copy(tmp_path / "checkout")
    started = time.monotonic()
    packing_process = start_script(packing, checkout, spark_env)
    try:
        cluster.start(2, probe_env(tmp_path, spark_env))
    except BaseException:
        os.killpg(packing_process.pid, signal.SIGKILL)
        packing_process.communicate()
        raise
    ready = time.monotonic()
    finish_script(packing_process)
    packed = time.monotonic()
    running = running.replace(DOC_MASTER, cluster.url)
    finish_script(start_script(running, checkout, spark_env))  # exits 1 if a date failed
    filled = time.monotonic()

    for family, store, day in (("legacy", legacy_store, LEGACY_DAY),
                               ("glean", glean_store, GLEAN_DAY)):
        local_db = f"sqlite:///{tmp_path / f'local-{family}.db'}"
        report = fill(FillSettings(str(store), day, day, local_db, workers=2,
                                   family=family))  # type: ignore[arg-type]
        assert not report.failed, report
        assert_same_as_local(spark_db, local_db, family)
    glean_rows, _ = rows_and_runs(spark_db, "glean")
    assert [row for _, row in glean_rows] == expected_rows()  # worked out by hand
    legacy_rows, _ = rows_and_runs(spark_db, "legacy")
    assert len(legacy_rows) > 20

    # Every Python worker of both applications found the package in the env/ that its
    # executor unpacked from env.tar.gz, under the workers' work folders: never /work/.../src.
    apps = {app["id"] for app in cluster.state()["completedapps"]}
    assert len(apps) == 2
    imports = (tmp_path / "imports.log").read_text().splitlines()
    assert imports
    pattern = re.compile(
        rf"({re.escape(str(cluster.root))}/work-[01]/(app-[\w-]+)/\d+)/(?:\./)?env/bin/"
        r"python\t\1/env/lib/python3\.\d+/site-packages/crash_rate_aggregates/__init__\.py")
    seen = set()
    for line in imports:
        found = pattern.fullmatch(line)
        assert found, line
        seen.add(found.group(2))
    assert seen == apps  # both applications' executors reported
    # passed: the unpacked environments (1 GB of this test's 1.3 GB) need not be kept
    for unpacked in [checkout / "env", *cluster.root.glob("work-*/app-*/*/env")]:
        shutil.rmtree(unpacked)
    print(f"\ncluster ready {ready - started:.1f} s, environment packed "
          f"{packed - started:.1f} s, both fills {filled - packed:.1f} s")
