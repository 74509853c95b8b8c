"""Check the installed dependencies for known vulnerabilities.

First pip-audit. It asks an advisory service (PyPI's per-release JSON, or OSV) about each
installed release. On this project's machines neither answers: only the package registries are
reachable, and the registry's per-release JSON pages return 404. pip-audit then skips every
package, so this script falls back to what the registry does answer: a project's JSON page
(https://pypi.org/pypi/NAME/json) lists the known vulnerabilities of the project's *latest*
release, from the same advisory database (OSV, fed by the PyPA and GitHub advisories). A package
whose installed version is that latest release is audited that way; one that is older cannot be,
and is listed as not audited rather than passed.

Fails (exit 1) on any vulnerability found, unless its id is in IGNORED below with a reason.
Where nothing can be reached at all, it prints "nothing audited" and does not fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PROJECT_JSON = "https://pypi.org/pypi/{name}/json"
SELF = "crash-rate-aggregates"

#: Advisory id -> why it does not apply or cannot be fixed. Empty: nothing is ignored.
IGNORED: dict[str, str] = {}


@dataclass
class Audit:
    """What one source could say about the installed packages."""

    source: str
    audited: dict[str, str] = field(default_factory=dict)  # name -> version
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # "name version" -> ids
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why


def pip_audit() -> Audit:
    audit = Audit("pip-audit")
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off",
         "--skip-editable"], capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        audit.skipped["*"] = f"pip-audit did not run: {done.stderr.strip().splitlines()[-1:]}"
        return audit
    for dependency in report.get("dependencies", []):
        name, version = dependency["name"], dependency.get("version", "?")
        if "skip_reason" in dependency:
            audit.skipped[name] = dependency["skip_reason"]
            continue
        audit.audited[name] = version
        ids = [v["id"] for v in dependency.get("vulns", [])]
        if ids:
            audit.vulnerable[f"{name} {version}"] = ids
    return audit


def installed() -> dict[str, str]:
    """The installed distributions (canonical name -> version), this project left out."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonicalize_name(name) != SELF:
            found[canonicalize_name(name)] = dist.version
    return found


def _latest(name: str) -> tuple[str, dict[str, object] | str]:
    try:
        with urllib.request.urlopen(PROJECT_JSON.format(name=name), timeout=30) as answer:
            return name, json.load(answer)
    except (urllib.error.URLError, TimeoutError, ValueError, OSError) as exc:
        return name, f"registry: {exc}"


def registry_audit(packages: dict[str, str]) -> Audit:
    audit = Audit("PyPI project pages (vulnerabilities of the latest release)")
    with ThreadPoolExecutor(16) as pool:
        pages = list(pool.map(_latest, sorted(packages)))
    for name, page in pages:
        if isinstance(page, str):
            audit.skipped[name] = page
            continue
        info = page.get("info")
        latest = info.get("version") if isinstance(info, dict) else None
        version = packages[name]
        if not isinstance(latest, str) or not _same(version, latest):
            audit.skipped[name] = f"installed {version}, latest {latest}: PyPI only answers for " \
                                  "the latest release here"
            continue
        audit.audited[name] = version
        vulns = page.get("vulnerabilities")
        ids = [str(v.get("id")) for v in vulns if isinstance(v, dict)] if isinstance(
            vulns, list) else []
        if ids:
            audit.vulnerable[f"{name} {version}"] = ids
    return audit


def _same(installed_version: str, latest: str) -> bool:
    try:
        return Version(installed_version) == Version(latest)
    except InvalidVersion:
        return installed_version == latest


def report(audit: Audit) -> int:
    """Print the audit; the exit status (1 when a vulnerability is not ignored)."""
    failing = 0
    for package, ids in sorted(audit.vulnerable.items()):
        live = [i for i in ids if i not in IGNORED]
        failing += bool(live)
        for advisory in ids:
            why = f" (ignored: {IGNORED[advisory]})" if advisory in IGNORED else ""
            print(f"VULNERABLE: {package}: {advisory}{why}")
    print(f"{audit.source}: {len(audit.audited)} packages audited, {len(audit.vulnerable)} "
          f"with known vulnerabilities, {len(audit.skipped)} not audited")
    for name, why in sorted(audit.skipped.items()):
        print(f"  not audited: {name}: {why}")
    return 1 if failing else 0


def main() -> int:
    first = pip_audit()
    if first.audited:
        return report(first)
    print(f"pip-audit audited nothing ({len(first.skipped)} packages skipped: its advisory "
          "service is out of reach); asking the registry's project pages instead")
    second = registry_audit(installed())
    if not second.audited:
        print(f"nothing audited: the registry answered for none of {len(second.skipped)} "
              "packages")
        return 0
    return report(second)


if __name__ == "__main__":
    sys.exit(main())
