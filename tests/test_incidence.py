"""Crash incidence, candidate against baseline (incidence.py), by hand and through `compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crash_rate_aggregates.incidence import NO_CLIENTS, NO_CRASHING_CLIENTS, compare_incidence
from crash_rate_aggregates.rates import IMPROVEMENT, NO_CHANGE, REGRESSION
from test_rates_cli import NEW, OLD, filled, invoke

Z = 1.959963984540054


def test_the_ratio_its_interval_and_p_by_hand() -> None:
    # 30 of 60 against 6 of 60: ratio 5; Katz's se = sqrt(1/30 - 1/60 + 1/6 - 1/60)
    # = sqrt(1/6) = 0.408248; interval exp(ln 5 -+ 1.959964 * 0.408248) = exp(1.609438 -+
    # 0.800152) = [2.246305, 11.129389]; z = 1.609438 / 0.408248 = 3.942309, two-sided p =
    # 2 * 4.0356e-5 = 8.07e-5.
    found = compare_incidence("main_crashes", 30, 60, 6, 60)
    assert found.ratio == pytest.approx(5.0)
    assert found.lower == pytest.approx(2.246305, rel=1e-5)
    assert found.upper == pytest.approx(11.129389, rel=1e-5)
    assert found.p_value == pytest.approx(8.07e-5, rel=2e-3)
    assert found.verdict == REGRESSION
    assert found.candidate is not None and found.candidate.value == 0.5
    assert compare_incidence("main_crashes", 6, 60, 30, 60).verdict == IMPROVEMENT


def test_one_decision_rule() -> None:
    # 14 of 100 against 8 of 100: ratio 1.75, se = sqrt(1/14 - 1/100 + 1/8 - 1/100) = 0.420034,
    # z = ln 1.75 / se = 1.332318 < 1.96: no significant change, and the interval holds 1.
    found = compare_incidence("main_crashes", 14, 100, 8, 100)
    assert found.p_value == pytest.approx(2 * 0.0913791, rel=1e-4)
    assert found.verdict == NO_CHANGE
    assert found.lower is not None and found.upper is not None
    assert found.lower < 1 < found.upper
    assert math.log(found.upper) - math.log(1.75) == pytest.approx(Z * 0.420034, rel=1e-5)


def test_sides_without_crashes_or_clients() -> None:
    # no crash on one side: Haldane's 0.5 keeps the ratio finite. 0.5/50 against 10/50:
    # ratio 0.05, se = sqrt(2 - 1/50 + 1/10 - 1/50) = sqrt(2.06) = 1.435270
    found = compare_incidence("gpu_crashes", 0, 50, 10, 50)
    assert found.ratio == pytest.approx(0.05)
    assert math.log(found.upper or 0) == pytest.approx(math.log(0.05) + Z * 1.435270, rel=1e-5)
    assert found.verdict == IMPROVEMENT
    assert compare_incidence("gpu_crashes", 0, 50, 0, 40).verdict == NO_CRASHING_CLIENTS
    nobody = compare_incidence("gpu_crashes", 0, 0, 3, 40)
    assert (nobody.ratio, nobody.verdict, nobody.candidate) == (None, NO_CLIENTS, None)


def test_compare_prints_and_returns_the_incidence(tmp_path: Path) -> None:
    # 60 clients a build; the new build's 40 crashes came from clients c0 to c39, the old
    # build's 5 from c0 to c4: 40 of 60 against 5 of 60, ratio 8.
    url = filled(tmp_path, {OLD: 5, NEW: 40})
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}",
                       "--format", "json")
    assert code == 1, out
    report = json.loads(out)
    main = next(item for item in report["incidence"] if item["crash"] == "main_crashes")
    assert (main["candidate_crashing"], main["candidate_clients"]) == (40, 60)
    assert (main["baseline_crashing"], main["baseline_clients"]) == (5, 60)
    assert main["ratio"] == pytest.approx(8.0) and main["verdict"] == REGRESSION
    code, out = invoke("compare", "--db", url, "--candidate", f"build_id={NEW}")
    assert "Clients with at least one crash (incidence):" in out
    line = next(row for row in out.splitlines()[out.splitlines().index(
        "Clients with at least one crash (incidence):"):] if row.startswith("main"))
    assert "40 of 60 (66.67%)" in line and "5 of 60 (8.33%)" in line and "8.00 [" in line
