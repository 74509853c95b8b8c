"""The dashboard in a real headless browser: Debian's chromium driven by Playwright, against
`uvicorn` serving the app on a free loopback port, over a filled SQLite store.

Checks that the charts are drawn with data, that a filter changes the chart and the URL (which
can then be shared), that hostile dimension values show as text and never run, and that the
page breaks no rule of its Content-Security-Policy. Leaves a screenshot in
test-artifacts/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from crash_rate_aggregates.web.app import create_app
from crash_rate_aggregates.web.readonly import open_readonly
from test_web_api import IMG, SCRIPT, fill_sample, write_sample_pings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on uvicorn, in a thread, on a loopback port the OS picked."""
    folder = tmp_path_factory.mktemp("web-browser")
    url = f"sqlite:///{folder / 'rates.db'}"
    fill_sample(write_sample_pings(folder), url)
    store = open_readonly(url)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def on_dialog(dialog: Any) -> None:  # an alert() from a hostile value would land here
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    opened.on("dialog", on_dialog)
    opened.problems = problems
    yield opened
    context.close()


CHARTS = """() => Array.from(document.querySelectorAll('canvas[data-series]')).map(canvas => {
  const chart = Chart.getChart(canvas);
  const lines = chart.data.datasets.filter(d => !d.band);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) painted++; }
  return {heading: canvas.closest('section').querySelector('h2').textContent.trim(),
          datasets: chart.data.datasets.length, labels: chart.data.labels,
          lines: lines.map(d => d.label),
          points: lines.map(d => d.data.filter(v => v !== null).length),
          painted: painted};
})"""


def test_overview_draws_the_charts_and_a_filter_changes_them(page: Any, base_url: str) -> None:
    page.goto(base_url + "/")
    page.wait_for_function("() => document.querySelectorAll('canvas[data-series]').length > 0"
                           " && Chart.getChart(document.querySelector('canvas[data-series]'))")
    charts = page.evaluate(CHARTS)
    by_heading = {c["heading"]: c for c in charts}
    assert sorted(by_heading) == sorted(f"Channel {name}" for name in (
        "beta", "esr", "nightly", "release", SCRIPT))
    release = by_heading["Channel release"]
    assert release["labels"] == [f"2016-03-{day:02d}" for day in range(8, 15)]
    assert release["lines"] == ["main", "content", "plugin", "media plugin",
                                "content shutdown", "GPU"]
    assert release["datasets"] == 18  # per crash type: the line and the two band edges
    assert release["points"] == [7] * 6
    assert all(c["painted"] > 5_000 for c in charts), "every canvas has something drawn"

    # Hostile values are text: in the heading above, in the filter's options, and no dialog.
    options = page.locator("select[name=channel] option").all_text_contents()
    assert SCRIPT in options
    assert IMG in page.locator("select[name=country] option").all_text_contents()
    assert page.locator("img").count() == 0

    page.select_option("select[name=channel]", "nightly")  # submits the form on change
    page.wait_for_url("**/?*channel=nightly*")
    page.wait_for_function("() => Chart.getChart(document.querySelector('canvas[data-series]'))")
    assert "build_id=" not in page.url, "empty filters stay out of the URL"
    charts = page.evaluate(CHARTS)
    assert [c["heading"] for c in charts] == ["Channel nightly"]
    assert charts[0]["points"][0] == 7 and charts[0]["painted"] > 5_000
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The URL is the state: opened anew, it shows the same view.
    shared = page.url
    page.goto(base_url + "/")
    page.goto(shared)
    assert page.locator("select[name=channel]").input_value() == "nightly"
    assert page.evaluate(CHARTS)[0]["heading"] == "Channel nightly"
    assert page.problems == []


def test_compare_and_health_pages_in_the_browser(page: Any, base_url: str) -> None:
    page.goto(base_url + "/compare")
    page.fill("input[name=candidate]", "build_version=44.0.1")
    page.fill("input[name=min_usage_hours]", "100")
    page.click("#compare-form button[type=submit]")
    page.wait_for_url("**/compare?*candidate=build_version%3D44.0.1*")
    rows = page.locator("#comparison tbody tr")
    assert rows.count() == 6
    assert page.locator("#verdict-title").inner_text().startswith(
        "build_version=44.0.1 against 44.0 on release")
    verdicts = set(page.locator("#comparison .badge.verdict").all_text_contents())
    assert verdicts <= {"regression", "improvement", "no significant change",
                        "no significant change (few crashing clients: not a clean bill)"}
    # the incidence table below it: one row a crash type, its verdict one of the known ones
    shares = page.locator("#incidence tbody tr")
    assert shares.count() == 6
    assert set(page.locator("#incidence .badge.verdict").all_text_contents()) <= {
        "regression", "improvement", "no significant change", "no crashing clients"}

    page.goto(base_url + "/health")
    page.wait_for_function("() => Chart.getChart(document.getElementById('health-chart'))")
    shown = page.evaluate("""() => {
      const chart = Chart.getChart(document.getElementById('health-chart'));
      return {labels: chart.data.labels, series: chart.data.datasets.length};
    }""")
    assert shown == {"labels": [f"2016-03-{day:02d}" for day in range(8, 15)], "series": 9}
    assert page.locator("#health-table tbody tr").count() == 7
    assert page.problems == []
