"""Check the installed dependencies for known vulnerabilities with pip-audit.

Fails when pip-audit reports a vulnerability. Where the advisory service cannot be reached (this
project's CI machines reach only the package registries, whose mirror answers no vulnerability
queries), pip-audit skips every package: that is printed as what it is, "nothing audited", and
does not fail the checks.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off",
         "--skip-editable"], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit did not run: {done.stderr.strip().splitlines()[-1:]}")
        return 0
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        ids = ", ".join(v["id"] for v in dependency["vulns"])
        print(f"VULNERABLE: {dependency['name']} {dependency['version']}: {ids}")
    if not audited:
        print(f"pip-audit: nothing audited ({len(dependencies)} packages skipped: the advisory "
              "service is out of reach here)")
    else:
        print(f"pip-audit: {len(audited)} packages audited, {len(vulnerable)} vulnerable, "
              f"{len(dependencies) - len(audited)} skipped")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
