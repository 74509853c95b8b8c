"""The synthetic ping-store generator: layout, exact counts, determinism, realism, messy cases."""

from __future__ import annotations

import gzip
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from crash_rate_aggregates.synth import GenerateSummary, generate_store

START, END = date(2016, 3, 14), date(2016, 3, 15)
PINGS_PER_DAY = 2000
START_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T00:00:00\.0[+-]\d{2}:00")
BUILD_ID = re.compile(r"[0-9]{14}", re.ASCII)


def read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    assert data.endswith(b"\n") or not data
    return data.split(b"\n")[:-1]


def files_of(root: Path) -> dict[str, bytes]:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


@dataclass
class Store:
    summary: GenerateSummary
    lines: dict[Path, list[bytes]]

    def all_lines(self) -> list[bytes]:
        return [line for lines in self.lines.values() for line in lines]

    def docs(self, lines: list[bytes] | None = None) -> list[Any]:
        """Every line that is a JSON object."""
        out = []
        for line in self.all_lines() if lines is None else lines:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def of_type(self, doc_type: str) -> list[dict[str, Any]]:
        return [d for d in self.docs() if d.get("type") == doc_type]


def make_store(root: Path, **kwargs: Any) -> Store:
    args: dict[str, Any] = {"seed": 7, "heavy": False} | kwargs
    summary = generate_store(root, START, END, PINGS_PER_DAY, **args)
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return Store(summary, {p: read_lines(p) for p in paths})


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("light"))


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("flat"), layout="flat", files_per_day=3)


def get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return KeyError
        doc = doc[key]
    return doc


def valid_main(doc: dict[str, Any]) -> bool:
    """A main ping none of the messy cases touched."""
    info = get(doc, "payload", "info")
    build_id = get(doc, "environment", "build", "buildId")
    return (
        doc.get("type") == "main"
        and get(doc, "meta", "docType") == "main"
        and "clientId" in doc
        and isinstance(build_id, str)
        and BUILD_ID.fullmatch(build_id) is not None
        and type(info.get("subsessionLength")) is int
        and isinstance(info.get("subsessionStartDate"), str)
        and bool(START_DATE.fullmatch(info["subsessionStartDate"]))
        and real_date(info["subsessionStartDate"][:10])
    )


def real_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------


def test_partitioned_layout_and_exact_counts(light: Store) -> None:
    root = light.summary.out_dir
    names = sorted(str(p.relative_to(root)) for p in light.lines)
    assert names == [f"submission_date={d}/part-{k:04d}.json.gz"
                     for d in ("2016-03-14", "2016-03-15") for k in range(4)]
    assert light.summary.files == 8
    for day in ("2016-03-14", "2016-03-15"):
        day_lines = [line for p, lines in light.lines.items() if day in str(p) for line in lines]
        assert sum(1 for line in day_lines if line) == PINGS_PER_DAY
    lines = light.all_lines()
    assert sum(1 for line in lines if line) == light.summary.pings == 2 * PINGS_PER_DAY
    assert lines.count(b"") == light.summary.blank_lines > 0
    assert light.summary.json_bytes == sum(len(line) + 1 for line in lines)
    assert light.summary.compressed_bytes == sum(p.stat().st_size for p in light.lines)


def test_same_seed_same_bytes(light: Store, tmp_path: Path) -> None:
    again = make_store(tmp_path / "again")
    assert files_of(again.summary.out_dir) == files_of(light.summary.out_dir)
    other = make_store(tmp_path / "other", seed=8)
    assert files_of(other.summary.out_dir) != files_of(light.summary.out_dir)


def test_flat_layout(flat: Store) -> None:
    names = [p.name for p in flat.lines]
    assert all(re.fullmatch(r"pings-\d{4}\.(jsonl\.gz|jsonl\.zst|ndjson)", n) for n in names)
    assert len(names) == flat.summary.files == 6
    suffixes = Counter(n.split(".", 1)[1] for n in names)
    assert suffixes["ndjson"] == 1 and suffixes["jsonl.zst"] >= 1
    assert suffixes["jsonl.gz"] > suffixes["jsonl.zst"]
    assert sum(1 for line in flat.all_lines() if line) == flat.summary.pings == 2 * PINGS_PER_DAY

    dates = [get(d, "meta", "submissionDate") for d in flat.docs()]
    assert {"20160314", "2016-03-14", "20160315", "2016-03-15"} <= set(dates)
    assert 1 <= sum(1 for d in dates if d not in ("20160314", "2016-03-14", "20160315",
                                                    "2016-03-15")) < 0.01 * len(dates)
    mixed = 0
    for lines in flat.lines.values():
        days = {get(d, "meta", "submissionDate") for d in flat.docs(lines)}
        mixed += {"20160314", "20160315"} <= {str(d).replace("-", "") for d in days}
    assert mixed >= 1


def test_main_pings_are_realistic(light: Store) -> None:
    mains = light.of_type("main")
    good = [d for d in mains if valid_main(d)]
    assert len(good) > 0.95 * len(mains)
    sample_ids: dict[str, set[int]] = defaultdict(set)
    for doc in good:
        meta = doc["meta"]
        assert meta["documentId"] == doc["id"] and meta["appName"] == "Firefox"
        assert isinstance(meta["geoCountry"], str) and meta["normalizedChannel"]
        assert 0 <= meta["sampleId"] <= 99
        sample_ids[doc["clientId"]].add(meta["sampleId"])
        env = doc["environment"]
        assert env["build"]["version"] and env["build"]["architecture"] in ("x86", "x86-64")
        assert env["build"]["buildId"] == doc["application"]["buildId"]
        assert doc["application"]["channel"] == meta["normalizedChannel"]
        assert env["system"]["os"]["name"] in ("Windows_NT", "Darwin", "Linux")
        assert isinstance(env["system"]["os"]["version"], str)
        assert isinstance(env["settings"]["e10sEnabled"], bool)
        assert isinstance(env["settings"]["e10sCohort"], str)
        assert env["addons"]["activeExperiment"] in ({},) or set(
            env["addons"]["activeExperiment"]) == {"id", "branch"}
        for key in ("content", "plugin", "gmplugin", "gpu"):
            histogram = doc["payload"]["keyedHistograms"]["SUBPROCESS_CRASHES_WITH_DUMP"].get(key)
            n = get(histogram, "values", "0")
            if type(n) is int and n >= 0:  # else one of the few spoilt counts
                assert histogram == {"bucket_count": 3, "histogram_type": 4, "range": [1, 2],
                                     "sum": n, "values": {"0": n, "1": 0}}
    assert all(len(ids) == 1 for ids in sample_ids.values())
    assert len(sample_ids) > 100  # many clients, most sending several pings

    def share(predicate: Any) -> float:
        return sum(1 for d in good if predicate(d)) / len(good)

    info = "payload", "info"
    lag = [(date(2016, 3, int(d["meta"]["submissionDate"][-2:]))
            - date.fromisoformat(get(d, *info, "subsessionStartDate")[:10])).days for d in good]
    assert 0.3 < lag.count(0) / len(lag) < 0.8
    assert sum(1 for x in lag if 1 <= x <= 3) > 0.2 * len(lag)
    assert any(x > 7 for x in lag)
    assert 0.001 < share(lambda d: get(d, *info, "subsessionLength") > 25 * 3600) < 0.05
    experiments = share(lambda d: d["environment"]["addons"]["activeExperiment"] != {})
    assert 0.002 < experiments < 0.1
    compositors = Counter(d["environment"]["system"]["gfx"]["features"]["compositor"]
                          for d in good)
    assert {"d3d11", "basic", "opengl", "none"} <= set(compositors)
    assert compositors.most_common(1)[0][0] == "d3d11"
    channels = Counter(d["meta"]["normalizedChannel"] for d in good)
    assert set(channels) == {"release", "beta", "nightly", "esr"}
    assert channels.most_common(1)[0][0] == "release"
    kills = [get(d, "payload", "keyedHistograms", "SUBPROCESS_KILL_HARD", "ShutDownKill",
                 "values", "0") for d in good]
    assert any(isinstance(k, int) and k > 0 for k in kills)
    assert max(len(orjson.dumps(d)) for d in good) < 12_000  # light pings


def test_crash_pings(light: Store) -> None:
    crashes = light.of_type("crash")
    process = Counter(get(d, "payload", "processType") for d in crashes)
    assert process["main"] > 0.5 * len(crashes)
    assert process[KeyError] > 0 and process["content"] > 0 and process["gpu"] > 0
    dims_by_client = {}
    for doc in light.of_type("main"):
        env = doc["environment"]
        dims_by_client[doc.get("clientId")] = (
            env["system"]["os"]["name"], env["build"]["architecture"],
            env["system"]["gfx"]["features"]["compositor"], env["settings"]["e10sEnabled"],
            env["settings"]["e10sCohort"], doc["meta"]["geoCountry"])
    dates = [get(d, "payload", "crashDate") for d in crashes]
    valid = [d for d in dates if isinstance(d, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", d)]
    assert len(crashes) - 10 < len(valid) < len(crashes)  # a few bad ones
    matched = 0
    for doc in crashes:
        env = doc["environment"]
        dims = (env["system"]["os"]["name"], env["build"]["architecture"],
                env["system"]["gfx"]["features"]["compositor"], env["settings"]["e10sEnabled"],
                env["settings"]["e10sCohort"], doc["meta"]["geoCountry"])
        if doc.get("clientId") in dims_by_client:
            assert dims_by_client[doc["clientId"]] == dims
            matched += 1
    assert matched > 0.5 * len(crashes)


def test_messy_cases_appear(light: Store) -> None:
    lines = [line for line in light.all_lines() if line]
    malformed = not_object = bad_utf8 = 0
    for line in lines:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            malformed += 1
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad_utf8 += 1
            continue
        not_object += not isinstance(doc, dict)
    assert malformed >= 3 and not_object >= 2 and bad_utf8 >= 1
    assert b"[1,2]" in lines and b"not json" in lines

    docs = light.docs()
    by_id: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        if line.startswith(b"{") and (doc_id := re.search(rb'"id":"([0-9a-f-]{36})"', line)):
            by_id[doc_id.group(1).decode()].append(line)
    duplicates = [copies for copies in by_id.values() if len(copies) > 1]
    assert len(duplicates) >= 5 and all(len(set(copies)) == 1 for copies in duplicates)

    assert {"event", "health"} <= {get(d, "meta", "docType") for d in docs}
    build_ids = [get(d, "environment", "build", "buildId") for d in docs
                 if d.get("type") in ("main", "crash")]
    bad = [b for b in build_ids if not (isinstance(b, str) and BUILD_ID.fullmatch(b))]
    assert {type(b) for b in bad} >= {str, int, type(None)}
    assert any(isinstance(b, str) and b.isdigit() for b in bad)  # digits, but not ASCII ones
    lengths = [get(d, "payload", "info", "subsessionLength") for d in light.of_type("main")]
    assert {KeyError, float, bool} <= {x if x is KeyError else type(x) for x in lengths}
    starts = [get(d, "payload", "info", "subsessionStartDate") for d in light.of_type("main")]
    assert sum(1 for s in starts if not (isinstance(s, str) and START_DATE.fullmatch(s))) >= 3
    assert any(get(d, "meta", "docType") is KeyError for d in docs if "payload" in d)

    # a few clients in crash loops send many crash pings a day
    per_client_day = Counter((d.get("clientId"), d["meta"]["submissionDate"])
                             for d in light.of_type("crash"))
    assert per_client_day.most_common(1)[0][1] >= 5

    messy = malformed + not_object + len(duplicates) + len(bad)
    assert 0.005 * len(lines) < messy < 0.03 * len(lines)


def test_crash_rates_differ_by_channel(light: Store) -> None:
    hours: Counter[str] = Counter()
    content: Counter[str] = Counter()
    main_crashes: Counter[str] = Counter()
    for doc in light.docs():
        channel = get(doc, "meta", "normalizedChannel")
        if doc.get("type") == "main" and valid_main(doc):
            hours[channel] += min(25, max(0, doc["payload"]["info"]["subsessionLength"] / 3600))
            histogram = doc["payload"]["keyedHistograms"]["SUBPROCESS_CRASHES_WITH_DUMP"]
            count = get(histogram, "content", "values", "0")
            content[channel] += count if isinstance(count, int) and count > 0 else 0
        elif doc.get("type") == "crash" and get(doc, "payload", "processType") in ("main",
                                                                                  KeyError):
            main_crashes[channel] += 1
    rate = {c: main_crashes[c] / hours[c] for c in hours}
    assert rate["nightly"] > 1.5 * rate["release"]
    assert content["nightly"] / hours["nightly"] > 2 * content["release"] / hours["release"]


def test_heavy_pings(tmp_path: Path) -> None:
    heavy = generate_store(tmp_path / "heavy", START, START, 60, seed=3, files_per_day=2)
    light = generate_store(tmp_path / "light", START, START, 60, seed=3, heavy=False,
                           files_per_day=2)
    assert heavy.pings == light.pings == 60
    part = Path("submission_date=2016-03-14") / "part-0000.json.gz"
    heavy_lines = read_lines(heavy.out_dir / part)
    mains = [line for line in heavy_lines if line.startswith(b"{") and b'"type":"main"' in line]
    sizes = [len(line) for line in mains if line.endswith(b'"type":"main","version":4}')]
    assert len(sizes) > 10
    assert all(50_000 <= size <= 400_000 for size in sizes)
    assert max(sizes) - min(sizes) > 20_000
    doc = orjson.loads(next(line for line in mains if len(line) in sizes))
    assert len(doc["payload"]["histograms"]) > 100
    assert "SUBPROCESS_CRASHES_WITH_DUMP" in doc["payload"]["keyedHistograms"]
    assert "SEARCH_COUNTS" in doc["payload"]["keyedHistograms"]
    # the same plan, heavy or not: the same documents in the same order
    light_lines = read_lines(light.out_dir / part)
    assert len(light_lines) == len(heavy_lines)
    for heavy_line, light_line in zip(heavy_lines, light_lines, strict=True):
        if light_line.startswith(b'{"meta"'):
            assert orjson.loads(heavy_line)["id"] == orjson.loads(light_line)["id"]


def test_tiny_store_and_bad_arguments(tmp_path: Path) -> None:
    summary = generate_store(tmp_path / "tiny", START, START, 7, heavy=False, files_per_day=1)
    lines = read_lines(tmp_path / "tiny" / "submission_date=2016-03-14" / "part-0000.json.gz")
    assert summary.pings == sum(1 for line in lines if line) == 7
    with pytest.raises(ValueError):
        generate_store(tmp_path / "x", END, START, 10)
    with pytest.raises(ValueError):
        generate_store(tmp_path / "x", START, END, 10, files_per_day=0)


def build_date(build_id: object) -> date | None:
    if not (isinstance(build_id, str) and BUILD_ID.fullmatch(build_id)):
        return None  # one of the spoilt build ids
    return date(int(build_id[:4]), int(build_id[4:6]), int(build_id[6:8]))


@pytest.mark.parametrize("store", ["light", "flat"])
def test_no_session_starts_before_its_build(store: str, request: pytest.FixtureRequest) -> None:
    generated: Store = request.getfixturevalue(store)
    checked = 0
    for doc in generated.docs():
        built = build_date(get(doc, "environment", "build", "buildId"))
        if doc.get("type") == "main":
            start = get(doc, "payload", "info", "subsessionStartDate")
            day = start[:10] if isinstance(start, str) and START_DATE.fullmatch(start) else None
        else:
            day = get(doc, "payload", "crashDate")
        if built is None or not (isinstance(day, str) and real_date(day)):
            continue
        assert date.fromisoformat(day) >= built, (doc["id"], day, built)
        checked += 1
    assert checked > 0.9 * generated.summary.pings


def test_the_bad_nightly_build_is_named(light: Store) -> None:
    bad = light.summary.regression_build_id
    nightly = {get(d, "environment", "build", "buildId") for d in light.of_type("main")
               if d["meta"].get("normalizedChannel") == "nightly"}
    assert bad in nightly
    # two days before the middle of the dates: (END - START) // 2 - 2 days after START
    assert build_date(bad) == date(2016, 3, 12)
