"""scripts/audit.py's fallback audit, against a real HTTP server on loopback that answers as the
registry's project pages do (https://pypi.org/pypi/NAME/json: the latest release and its known
vulnerabilities)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import audit  # noqa: E402

PAGES = {
    "clean": {"info": {"version": "2.0"}, "vulnerabilities": []},
    "flawed": {"info": {"version": "1.5"},
               "vulnerabilities": [{"id": "PYSEC-2026-1"}, {"id": "GHSA-aaaa-bbbb-cccc"}]},
    "moved-on": {"info": {"version": "3.0"}, "vulnerabilities": []},
    "odd": {"info": "not a mapping"},
}


class _Registry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        name = self.path.removeprefix("/pypi/").removesuffix("/json")
        page = PAGES.get(name)
        body = json.dumps(page).encode() if page is not None else b"not found"
        self.send_response(200 if page is not None else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(audit, "PROJECT_JSON",
                        f"http://127.0.0.1:{server.server_port}/pypi/{{name}}/json")
    yield
    server.shutdown()
    server.server_close()


def test_latest_releases_are_audited_and_older_ones_are_not(registry: None) -> None:
    result = audit.registry_audit({"clean": "2.0", "flawed": "1.5", "moved-on": "2.9",
                                   "missing": "1.0", "odd": "1.0"})
    assert result.audited == {"clean": "2.0", "flawed": "1.5"}
    assert result.vulnerable == {"flawed 1.5": ["PYSEC-2026-1", "GHSA-aaaa-bbbb-cccc"]}
    assert set(result.skipped) == {"moved-on", "missing", "odd"}
    assert result.skipped["moved-on"].startswith("installed 2.9, latest 3.0")
    assert "404" in result.skipped["missing"]


def test_versions_compare_as_versions(registry: None) -> None:
    assert audit.registry_audit({"clean": "2.0.0"}).audited == {"clean": "2.0.0"}


def test_a_vulnerability_fails_unless_ignored_with_a_reason(
    registry: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = audit.registry_audit({"clean": "2.0", "flawed": "1.5"})
    assert audit.report(result) == 1
    out = capsys.readouterr().out
    assert "VULNERABLE: flawed 1.5: PYSEC-2026-1\n" in out
    assert "2 packages audited, 1 with known vulnerabilities, 0 not audited" in out
    monkeypatch.setattr(audit, "IGNORED", {"PYSEC-2026-1": "no fix yet; not reachable here",
                                           "GHSA-aaaa-bbbb-cccc": "same advisory"})
    assert audit.report(result) == 0
    assert "(ignored: no fix yet; not reachable here)" in capsys.readouterr().out


def test_an_unreachable_registry_audits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A port nobody listens on: every package is skipped with the reason, none passed.
    monkeypatch.setattr(audit, "PROJECT_JSON", "http://127.0.0.1:9/pypi/{name}/json")
    result = audit.registry_audit({"clean": "2.0"})
    assert result.audited == {} and result.skipped["clean"].startswith("registry: ")


def test_installed_packages_leave_this_project_out() -> None:
    found = audit.installed()
    assert "crash-rate-aggregates" not in found
    assert found["numpy"] and found["scipy"]
