"""`fill --family glean` and the readers of its rows: `rates`, `compare`, `watchdog`, the API.

One small Glean submission date, made by hand (decoded pings as in tests/data/glean): two
nightly builds of 4 clients, each client one baseline ping of 7,200 active ticks (10 hours),
and crash pings whose counts are worked out below. Every expected number is computed here from
those counts, with the formulas of docs/rates.md; none is read back from the code under test.

Build A (20250519121003, 139.0), clients a1..a4, 40 hours:
    a1: 2 main crashes, one of them a startup crash (a part of main, counted in both)
    a2: 1 main crash, and a second ping of the same crash (same minidump hash): a duplicate
    a3: 1 content crash, 1 content crash killed at shutdown (ShutDownKill)
    a4: 1 GPU crash, and a copy of its baseline ping (same document id): a duplicate
    -> main 3, startup 1, content 1, content_shutdown 1, gpu 1; others 0
Build B (20250526194527, 139.0.1), clients b1..b4, 40 hours:
    b1: 1 main crash; b2: 1 content crash
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from scipy import stats as dist  # type: ignore[import-untyped]

from conftest import crash_ping, main_ping, write_ping_file
from crash_rate_aggregates import families
from crash_rate_aggregates.cli import cli
from crash_rate_aggregates.families import glean
from crash_rate_aggregates.web.app import create_app
from crash_rate_aggregates.web.readonly import open_readonly

DAY = "2025-06-02"
BUILD_A, BUILD_B = "20250519121003", "20250526194527"
VERSIONS = {BUILD_A: "139.0", BUILD_B: "139.0.1"}
HOURS_EACH = 10.0  # 7,200 active ticks of 5 seconds
GLEAN_CRASHES = list(glean.CRASH_MEASURES)
LEGACY_DAY = "2016-03-14"


def _top(client: str, build: str) -> dict[str, Any]:
    return {
        "submission_timestamp": f"{DAY}T07:01:14.123456Z",
        "sample_id": 42,
        "normalized_app_name": "Firefox",
        "normalized_channel": "nightly",
        "normalized_os": "Windows",
        "normalized_os_version": "10.0",
        "metadata": {"geo": {"country": "DE"}},
        "client_info": {"client_id": client, "app_build": build,
                        "app_display_version": VERSIONS[build], "architecture": "x86_64"},
        "ping_info": {"seq": 1, "start_time": "2025-06-01T09:00:00.000+02:00"},
    }


def baseline(doc_id: str, client: str, build: str) -> dict[str, Any]:
    ping = _top(client, build)
    ping["document_id"] = doc_id
    ping["metadata"]["document_type"] = "baseline"
    ping["ping_info"]["reason"] = "inactive"
    ping["metrics"] = {"counter": {"browser.engagement.active_ticks": 7200}}
    return ping


def crash(doc_id: str, client: str, build: str, process: str = "main", *,
          startup: bool = False, minidump: str | None = None,
          ipc_error: str | None = None) -> dict[str, Any]:
    ping = _top(client, build)
    ping["document_id"] = doc_id
    ping["metadata"]["document_type"] = "crash"
    ping["ping_info"]["reason"] = "crash"
    strings = {"crash.process_type": process,
               "crash.minidump_sha256_hash": minidump or f"{doc_id:0>64}"}
    if ipc_error:
        strings["crash.ipc_channel_error"] = ipc_error
    ping["metrics"] = {"string": strings, "boolean": {"crash.startup": startup},
                       "datetime": {"crash.time": "2025-06-01T23:58:41+02:00"}}
    return ping


def glean_day() -> list[dict[str, Any]]:
    pings = [baseline(f"b-{build}-{n}", f"{build}-c{n}", build)
             for build in (BUILD_A, BUILD_B) for n in range(1, 5)]
    a = {n: f"{BUILD_A}-c{n}" for n in range(1, 5)}
    b = {n: f"{BUILD_B}-c{n}" for n in range(1, 5)}
    pings += [
        crash("x1", a[1], BUILD_A, startup=True),
        crash("x2", a[1], BUILD_A),
        crash("x3", a[2], BUILD_A, minidump="f" * 64),
        crash("x3-again", a[2], BUILD_A, minidump="f" * 64),  # the same crash: not counted
        crash("x4", a[3], BUILD_A, "content"),
        crash("x5", a[3], BUILD_A, "content", ipc_error="ShutDownKill"),
        crash("x6", a[4], BUILD_A, "gpu"),
        copy.deepcopy(pings[3]),  # a4's baseline ping again: a duplicate document id
        crash("y1", b[1], BUILD_B),
        crash("y2", b[2], BUILD_B, "content"),
    ]
    return pings


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)
    return result.exit_code, result.stdout + result.stderr


def fill_glean(url: str, root: Path, *extra: str) -> str:
    write_ping_file(root / f"submission_date={DAY}" / "part-0.json.gz", glean_day())
    code, out = invoke("fill", "--family", "glean", "--input", str(root), "--from", DAY,
                       "--to", DAY, "--db", url, "--workers", "1", *extra)
    assert code == 0, out
    return out


def fill_legacy(url: str, root: Path) -> None:
    """One legacy date: 2 main pings of 1 hour, 1 main crash."""
    lines = [main_ping("m1", "c1", length=3600), main_ping("m2", "c2", length=3600),
             crash_ping("k1", "c1")]
    write_ping_file(root / f"submission_date={LEGACY_DAY}" / "part-0.json", lines)
    code, out = invoke("fill", "--input", str(root), "--from", LEGACY_DAY, "--to", LEGACY_DAY,
                       "--db", url, "--workers", "1")
    assert code == 0, out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def glean_url(db_url: str, tmp_path: Path) -> str:
    fill_glean(db_url, tmp_path / "glean-pings")
    return db_url


def garwood(count: float, hours: float, effect: float = 1.0, largest: float = 0.0
            ) -> tuple[float, float]:
    """docs/rates.md: the exact Poisson lower limit of the effective count C/d, times d/H; the
    upper limit Fay and Feuer's gamma with an extra event of weight w = max(d, the largest
    client's count): shape (C + w)^2 / (d C + w^2), scale (d C + w^2) / (C + w); per 1,000 h."""
    k = count / effect
    lower = 0.0 if k == 0 else dist.chi2.ppf(0.025, 2 * k) / 2
    w = max(effect, largest)
    spread = effect * count + w * w
    upper = dist.gamma.ppf(0.975, (count + w) ** 2 / spread, scale=spread / (count + w))
    return lower * effect / hours * 1000, upper / hours * 1000


def design_effect(per_client: list[int], hours: list[float]) -> float:
    """d = max(1, Var(r) / (C / H^2)), Var(r) = n/(n-1) sum (c_i - r h_i)^2 / H^2."""
    crashes, total = sum(per_client), sum(hours)
    if crashes == 0:
        return 1.0
    rate = crashes / total
    n = len(per_client)
    variance = n / (n - 1) * sum((c - rate * h) ** 2
                                 for c, h in zip(per_client, hours, strict=True)) / total**2
    return max(1.0, variance / (crashes / total**2))


# -- fill ---------------------------------------------------------------------------------------


def test_fill_glean_names_the_family_and_counts_by_hand(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = fill_glean(url, tmp_path / "pings", "--log-format", "json")
    [record] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert record["family"] == "glean" and record["status"] == "completed"
    # 9 baseline pings (one a duplicate), 9 crash pings (one a duplicate crash).
    assert record["counters"]["main_processed"] == 8
    assert record["counters"]["crash_processed"] == 8
    assert record["counters"]["duplicates"] == 2
    code, text = invoke("fill", "--family", "glean", "--input", str(tmp_path / "pings"),
                        "--from", DAY, "--to", DAY, "--db", url, "--workers", "1")
    assert code == 0 and text.startswith(f"{DAY} ok (glean): "), text


def test_the_family_setting_comes_from_the_environment_and_toml(tmp_path: Path) -> None:
    root = tmp_path / "pings"
    write_ping_file(root / f"submission_date={DAY}" / "part-0.json", glean_day())
    args = ("fill", "--input", str(root), "--from", DAY, "--to", DAY, "--workers", "1")
    code, out = invoke(*args, "--db", f"sqlite:///{tmp_path / 'env.db'}",
                       env={"CRASH_AGGREGATES_FAMILY": "glean"})
    assert code == 0 and out.startswith(f"{DAY} ok (glean): "), out
    config = tmp_path / "settings.toml"
    config.write_text('family = "glean"\n')
    code, out = invoke(*args, "--db", f"sqlite:///{tmp_path / 'toml.db'}",
                       "--config", str(config))
    assert code == 0 and out.startswith(f"{DAY} ok (glean): "), out
    code, out = invoke(*args, "--family", "gleam")
    assert code == 2
    assert "bad value for family from --family: 'gleam' is not one of legacy, glean" in out


# -- rates --------------------------------------------------------------------------------------


def test_rates_of_glean_rows_match_a_hand_computation(glean_url: str) -> None:
    code, out = invoke("rates", "--db", glean_url, "--family", "glean", "--by", "build_id",
                       "--format", "json")
    assert code == 0, out
    rows = {row["build_id"]: row for row in json.loads(out)}
    assert set(rows) == {BUILD_A, BUILD_B}
    a = rows[BUILD_A]
    assert a["usage_hours"] == pytest.approx(40.0) and a["client_count"] == 4
    assert [key for key, value in a.items()
            if isinstance(value, dict) and key != "crash_free_users"] == GLEAN_CRASHES
    hours = [HOURS_EACH] * 4
    # Per client (a1..a4): main 2,1,0,0; startup 1,0,0,0; content 0,0,1,0; gpu 0,0,0,1.
    expected = {"main_crashes": [2, 1, 0, 0], "startup_crashes": [1, 0, 0, 0],
                "content_crashes": [0, 0, 1, 0], "content_shutdown_crashes": [0, 0, 1, 0],
                "gpu_crashes": [0, 0, 0, 1], "rdd_crashes": [0, 0, 0, 0]}
    for crash, per_client in expected.items():
        cell = a[crash]
        assert cell["crashes"] == sum(per_client), crash
        assert cell["rate"] == pytest.approx(sum(per_client) / 40.0 * 1000), crash
        lower, upper = garwood(sum(per_client), 40.0, design_effect(per_client, hours),
                               max(per_client))
        assert (cell["lower"], cell["upper"]) == (pytest.approx(lower), pytest.approx(upper))
    # By hand: main's d = (4/3 * 2.75) / 3 = 11/9; one crash per client: d = 1. Main's
    # largest client, a1's 2 crashes, weighs more than d: w = 2.
    assert design_effect(expected["main_crashes"], hours) == pytest.approx(11 / 9)
    assert a["main_crashes"]["upper"] > garwood(3, 40.0, 11 / 9)[1]
    assert a["main_crashes"]["rate"] == pytest.approx(75.0)
    assert a["startup_crashes"]["rate"] == pytest.approx(25.0)  # a part of main's 75
    assert rows[BUILD_B]["main_crashes"]["crashes"] == 1
    assert rows[BUILD_B]["content_crashes"]["rate"] == pytest.approx(25.0)


def test_the_rates_table_shows_startup_as_a_part_of_main(glean_url: str) -> None:
    code, out = invoke("rates", "--db", glean_url, "--by", "build_id")
    assert code == 0, out
    header = out.splitlines()[0]
    for label in ("main /1000h", "content /1000h", "gpu /1000h", "rdd /1000h",
                  "socket /1000h", "utility /1000h", "gmplugin /1000h", "other /1000h",
                  "startup (of main) /1000h"):
        assert label in header, label
    assert "plugin /1000h" not in header.replace("gmplugin", "")  # no legacy NPAPI plugins
    assert header.index("main /1000h") < header.index("startup (of main)")


def test_a_store_of_glean_rows_only_is_read_without_family(glean_url: str) -> None:
    with_flag = invoke("rates", "--db", glean_url, "--family", "glean", "--by", "build_id",
                       "--format", "json")
    without = invoke("rates", "--db", glean_url, "--by", "build_id", "--format", "json")
    assert with_flag == without and with_flag[0] == 0
    assert "startup_crashes" in without[1]


def test_a_store_of_both_families_keeps_them_apart(glean_url: str, tmp_path: Path) -> None:
    code, before = invoke("rates", "--db", glean_url, "--by", "build_id", "--format", "json")
    fill_legacy(glean_url, tmp_path / "legacy-pings")
    # Both families hold rows: without --family, legacy (as before Glean).
    code, out = invoke("rates", "--db", glean_url, "--by", "", "--format", "json")
    assert code == 0, out
    [legacy] = json.loads(out)
    assert legacy["usage_hours"] == pytest.approx(2.0) and legacy["main_crashes"]["crashes"] == 1
    assert "startup_crashes" not in legacy and "plugin_crashes" in legacy
    code, after = invoke("rates", "--db", glean_url, "--family", "glean", "--by", "build_id",
                         "--format", "json")
    assert code == 0 and after == before  # the legacy fill left the Glean rows alone
    # Re-filling the Glean date leaves the legacy rows alone.
    fill_glean(glean_url, tmp_path / "glean-again")
    assert invoke("rates", "--db", glean_url, "--by", "", "--format", "json") == (0, out)


# -- compare ------------------------------------------------------------------------------------


def test_compare_two_glean_builds(glean_url: str) -> None:
    code, out = invoke("compare", "--db", glean_url, "--candidate", f"build_id={BUILD_A}",
                       "--baseline", f"build_id={BUILD_B}", "--min-usage-hours", "10",
                       "--format", "json")
    assert code == 0, out  # no regression: too few crashes to say
    report = json.loads(out)
    assert report["family"] == "glean" and report["channel"] == "nightly"
    results = {r["crash"]: r for r in report["results"]}
    assert list(results) == GLEAN_CRASHES
    # Same hours on both sides: the ratio is the ratio of the counts.
    assert results["main_crashes"]["ratio"] == pytest.approx(3.0)
    assert results["content_crashes"]["ratio"] == pytest.approx(1.0)
    assert results["rdd_crashes"]["ratio"] is None  # 0 against 0
    # a handful of crashes from at most 3 clients a side: not a clean bill
    assert {r["verdict"] for r in results.values()} == {
        "no significant change (few crashing clients: not a clean bill)"}
    code, text = invoke("compare", "--db", glean_url, "--candidate", f"build_id={BUILD_A}",
                        "--baseline", f"build_id={BUILD_B}", "--min-usage-hours", "10")
    assert code == 0 and "(glean pings)" in text.splitlines()[0]
    assert any(line.startswith("startup (of main)") for line in text.splitlines())
    # The previous build on the channel, found among Glean rows: B is older than A by id.
    code, out = invoke("compare", "--db", glean_url, "--candidate", f"build_id={BUILD_B}",
                       "--min-usage-hours", "10", "--format", "json")
    assert code == 0 and json.loads(out)["baseline"] == BUILD_A


# -- watchdog -----------------------------------------------------------------------------------


def test_watchdog_checks_the_glean_runs(glean_url: str, tmp_path: Path) -> None:
    args = ("watchdog", "--db", glean_url, "--days", "1", "--to", DAY, "--log-format", "json")
    code, out = invoke(*args)  # the store holds Glean rows only: they are checked
    assert code == 0, out
    report = json.loads(out)
    assert report["family"] == "glean" and report["ok"]
    [run] = [f for f in report["findings"] if f["check"] == "run"]
    assert run["ok"] and not run["skipped"]
    # The legacy family has no run that date: the legacy watchdog says so.
    fill_legacy(glean_url, tmp_path / "legacy-pings")
    code, out = invoke(*args, "--family", "legacy")
    assert code == 1
    legacy = json.loads(out.splitlines()[0])
    assert legacy["family"] == "legacy" and not legacy["ok"]
    code, out = invoke(*args, "--family", "glean")
    assert code == 0 and json.loads(out)["ok"]


def test_watchdog_checks_the_glean_parquet_partitions(tmp_path: Path) -> None:
    url, parquet = f"sqlite:///{tmp_path / 'db.sqlite'}", str(tmp_path / "parquet")
    fill_glean(url, tmp_path / "pings", "--parquet", parquet)
    args = ("watchdog", "--db", url, "--parquet", parquet, "--days", "1", "--to", DAY,
            "--log-format", "json")
    code, out = invoke(*args)
    assert code == 0, out
    [found] = [f for f in json.loads(out)["findings"] if f["check"] == "parquet"]
    assert found["ok"] and found["value"] == 2  # one aggregate per build: one activity date
    code, out = invoke(*args, "--family", "legacy")  # no legacy partition: both checks fail
    failed = {f["check"] for f in json.loads(out.splitlines()[0])["findings"] if not f["ok"]}
    assert code == 1 and failed == {"run", "parquet"}


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture
def api(glean_url: str) -> Iterator[TestClient]:
    store = open_readonly(glean_url)
    try:
        yield TestClient(create_app(store))
    finally:
        store.close()


def test_api_rates_of_the_glean_family(api: TestClient) -> None:
    for params in ({"family": "glean", "by": "build_id"}, {"by": "build_id"}):
        answer = api.get("/api/rates", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["family"] == "glean"
        rows = {row["dimensions"]["build_id"]: row for row in body["rows"]}
        a = rows[BUILD_A]
        assert list(a["rates"]) == GLEAN_CRASHES
        assert a["usage_hours"] == pytest.approx(40.0)
        assert a["rates"]["main_crashes"]["rate"] == pytest.approx(75.0)
        assert a["rates"]["startup_crashes"]["rate"] == pytest.approx(25.0)
        assert a["rates"]["gpu_crashes"]["rate"] == pytest.approx(25.0)
    overview = api.get("/api/overview").json()
    assert overview["crash_types"] == GLEAN_CRASHES
    assert overview["crash_labels"]["startup_crashes"] == "startup (part of main)"
    assert api.get("/api/dimensions").json()["dimensions"] == list(glean.DIMENSION_NAMES)
    runs = api.get("/api/runs", params={"family": "glean"}).json()["runs"]
    assert [r["submission_date"] for r in runs] == [DAY]
    missing = api.get("/api/rates", params={"family": "legacy"})
    # The Glean fill made no legacy rows; whether their tables exist is the store's business.
    assert missing.status_code in (200, 400)
    assert api.get("/api/rates", params={"family": "gleam"}).status_code == 400


def test_api_keeps_the_families_apart(glean_url: str, tmp_path: Path) -> None:
    fill_legacy(glean_url, tmp_path / "legacy-pings")
    store = open_readonly(glean_url)
    try:
        client = TestClient(create_app(store))
        legacy = client.get("/api/rates", params={"by": ""}).json()  # both: legacy by default
        assert legacy["family"] == "legacy"
        assert "startup_crashes" not in legacy["rows"][0]["rates"]
        assert legacy["rows"][0]["usage_hours"] == pytest.approx(2.0)
        glean_rows = client.get("/api/rates", params={"by": "", "family": "glean"}).json()
        assert glean_rows["rows"][0]["usage_hours"] == pytest.approx(80.0)
        runs = {name: [r["submission_date"] for r in client.get(
            "/api/runs", params={"family": name}).json()["runs"]] for name in families.FAMILIES}
        assert runs == {"legacy": [LEGACY_DAY], "glean": [DAY]}
        compare = client.get("/api/compare", params={
            "family": "glean", "candidate": f"build_id={BUILD_A}",
            "baseline": f"build_id={BUILD_B}", "min_usage_hours": "10"}).json()
        assert compare["family"] == "glean"
        assert compare["results"][0]["ratio"] == pytest.approx(3.0)
    finally:
        store.close()


def test_every_api_endpoint_takes_a_family(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            family = [p for p in operation["parameters"] if p["name"] == "family"]
            assert family and family[0]["in"] == "query", path
    assert {p for p in spec["paths"]} >= {"/api/rates", "/api/compare", "/api/runs"}


def test_serve_names_the_family_it_shows() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--family" in result.output


def test_api_legacy_only_dimensions_are_absent_from_glean_rows(api: TestClient) -> None:
    """Glean pings have no experiment_id: a filter on it matches nothing, grouping by it gives
    null, a comparison on it has no data (404), as for any absent dimension."""
    none = api.get("/api/rates", params={"family": "glean", "experiment_id": "x"})
    assert none.status_code == 200 and none.json()["rows"] == []
    grouped = api.get("/api/rates", params={"family": "glean", "by": "build_id,experiment_id"})
    assert grouped.status_code == 200, grouped.text
    rows = grouped.json()["rows"]
    assert sorted(r["dimensions"]["build_id"] for r in rows) == [BUILD_A, BUILD_B]
    assert {r["dimensions"]["experiment_id"] for r in rows} == {None}
    answer = api.get("/api/compare", params={"family": "glean",
                                             "candidate": "experiment_id=x"})
    assert answer.status_code == 404 and "glean pings have no experiment_id" in answer.text
