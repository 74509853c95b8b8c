"""Rates and comparisons as text: aligned tables, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from .reports import ComparisonReport, flat_rows

_SHORT = {"main_crashes": "main", "content_crashes": "content", "plugin_crashes": "plugin",
          "gmplugin_crashes": "gmplugin", "content_shutdown_crashes": "shutdown",
          "gpu_crashes": "gpu",
          # Glean's: startup crashes are a part of main's, counted in both.
          "startup_crashes": "startup (of main)"}


def short_name(crash: str) -> str:
    """A crash type's column or row label: `rdd_crashes` -> `rdd`."""
    return _SHORT.get(crash, crash.removesuffix("_crashes"))


def _crash_types(rows: list[dict[str, Any]]) -> list[str]:
    """The crash types of rate rows (their dict values), in their order: the family's."""
    return [key for key, value in rows[0].items()
            if isinstance(value, dict) and key != "crash_free_users"] if rows else []


def _percent(share: dict[str, float] | None) -> str:
    """A share as percentages: `99.12% [98.90, 99.31]`."""
    if share is None:
        return "-"
    return (f"{100 * share['value']:.2f}% [{100 * share['lower']:.2f}, "
            f"{100 * share['upper']:.2f}]")


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _interval(cell: dict[str, Any]) -> str:
    if cell["rate"] is None:
        return "-"
    text = f"{cell['rate']:.2f} [{cell['lower']:.2f}, {cell['upper']:.2f}]"
    return text if cell["enough_usage"] else text + " (low usage)"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    return "\n".join(line.rstrip() for line in lines)  # no trailing blanks to copy or strip


def render_rates(rows: list[dict[str, Any]], by: list[str], output: str) -> str:
    if output == "json":
        return json.dumps(rows, indent=1)
    if output == "csv":
        buffer = io.StringIO()
        flat = flat_rows(rows)
        if flat:
            writer = csv.DictWriter(buffer, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
        return buffer.getvalue().rstrip("\n")
    crashes = _crash_types(rows)
    header = [*by, "usage hours", "clients", "crash-free users [95%]",
              *(short_name(c) + " /1000h [95%]" for c in crashes)]
    body = [[*(str(row.get(d) or "(none)") for d in by), _number(row["usage_hours"], 0),
             _number(row["clients"], 0), _percent(row["crash_free_users"]),
             *(_interval(row[c]) for c in crashes)]
            for row in rows]
    return table(header, body) if body else "no aggregates match"


def render_comparison(report: ComparisonReport, output: str) -> str:
    if output == "json":
        return json.dumps(report.as_dict(), indent=1, default=str)
    head = (f"{report.dimension} {report.candidate} against {report.baseline}"
            + (f" on {report.channel}" if report.channel else "")
            + (f" ({report.family} pings)" if report.family != "legacy" else ""))
    if report.candidate_dates and report.baseline_dates:
        head += (f" (activity {report.candidate_dates[0]}..{report.candidate_dates[1]} "
                 f"against {report.baseline_dates[0]}..{report.baseline_dates[1]})")
    for side, hours in (("candidate", report.candidate_hours_before_build),
                        ("baseline", report.baseline_hours_before_build)):
        if hours:
            head += (f"\nusage before build date: {hours:,.1f} hours ignored ({side}; a data "
                     "error: no session can start before its build)")
    rows = []
    for result in report.results:
        ratio = ("-" if result.ratio is None else
                 f"{result.ratio:.2f} [{_bound(result.lower)}, {_bound(result.upper)}]")
        rows.append([short_name(result.crash), _interval(_cell(result.candidate)),
                     _interval(_cell(result.baseline)), ratio, _p_value(result.p_value),
                     result.verdict])
    text = head + "\n\n" + table(
        ["crash", "candidate /1000h", "baseline /1000h", "ratio [95%]", "p", "verdict"], rows)
    if report.incidence:
        shares = []
        for share in report.incidence:
            ratio = ("-" if share.ratio is None else
                     f"{share.ratio:.2f} [{_bound(share.lower)}, {_bound(share.upper)}]")
            shares.append([short_name(share.crash),
                           _clients(share.candidate_crashing, share.candidate_clients),
                           _clients(share.baseline_crashing, share.baseline_clients), ratio,
                           _p_value(share.p_value), share.verdict])
        text += "\n\nClients with at least one crash (incidence):\n\n" + table(
            ["crash", "candidate", "baseline", "ratio [95%]", "p", "verdict"], shares)
    return text


def _clients(crashing: int, clients: int) -> str:
    """`12 of 1,204 (1.00%)`."""
    if not clients:
        return "-"
    return f"{crashing:,} of {clients:,} ({100 * crashing / clients:.2f}%)"


def _bound(value: float | None) -> str:
    """A bound of the ratio, with the digits that show which side of 1 it is on."""
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return text if text != "1.00" or value == 1 else f"{value:.5f}"


def _p_value(value: float | None) -> str:
    """Three significant digits, more when they would round across the 5% threshold."""
    if value is None:
        return "-"
    text = f"{value:.3g}"
    return text if (float(text) < 0.05) == (value < 0.05) else f"{value:.6g}"


def _cell(rate: Any) -> dict[str, Any]:
    return {"rate": rate.rate, "lower": rate.lower, "upper": rate.upper,
            "enough_usage": rate.enough_usage}
