"""The HTML pages: the dicts of views.py rendered by Jinja2 templates with autoescape on.

Every value from the store reaches the page either escaped by Jinja or inside the
`<script type="application/json">` block through `|tojson` (which escapes <, >, & and '),
never formatted into HTML or JavaScript by hand. The URL's query string holds the whole
state of a page, so a view can be shared by its address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__, rules
from ..errors import UsageError
from . import views
from .api import Store

HERE = Path(__file__).parent
router = APIRouter(include_in_schema=False)


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = _number
    env.filters["percent"] = _percent
    env.globals.update(version=__version__, crash_labels=views.CRASH_LABELS,
                       dimension_names=rules.DIMENSION_NAMES, date_kinds=views.DATE_KINDS)
    return env


TEMPLATES = environment()


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(template).render(**context),
                        status_code=status)


def _params(request: Request) -> dict[str, str]:
    """The query string, one value per name (the last one wins, as in a form)."""
    return dict(request.query_params.items())


def _family(store: Store, params: dict[str, str]) -> dict[str, Any]:
    """What every page shows of the ping family: the one read (get_store chose it from the
    `family` parameter), the store's families for the form, and the parameter for links."""
    asked = {"family": store.family} if params.get("family") else {}
    return {"family": store.family, "families": store.families, "family_param": asked}


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, store: Store) -> HTMLResponse:
    """Crash rates by channel over time, one line per crash type, with interval bands."""
    params = _params(request)
    selection = views.Selection.from_params(params).with_default_dates(store)
    data = views.overview(store, selection)
    family = _family(store, params)
    return render("overview.html", page="overview", data=data, selection=selection,
                  options=views.filter_options(store, selection),
                  json_link="/api/overview?" + selection.query_string(**family["family_param"]),
                  **family)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, store: Store) -> HTMLResponse:
    """A candidate against a baseline: rate ratio, interval and verdict per crash type."""
    params = _params(request)
    selection = views.Selection.from_params(params, default_kind="submission")
    candidate = params.get("candidate") or None
    baseline = params.get("baseline") or None
    channel = params.get("channel") or None
    days = _int("days_since_release", params.get("days_since_release"), 1, 3650)
    min_usage = _float("min_usage_hours", params.get("min_usage_hours"), 1000.0)
    report = None
    if candidate:
        report = views.comparison(store, candidate, baseline, channel,
                                  views.Selection({}, selection.first, selection.last,
                                                  selection.date_kind), days, min_usage)
    form = {"candidate": candidate or "", "baseline": baseline or "", "channel": channel or "",
            "days_since_release": days, "min_usage_hours": min_usage,
            "first": selection.first, "last": selection.last,
            "date_kind": selection.date_kind}
    family = _family(store, params)
    query = {**family["family_param"],
             **{k: str(v) for k, v in form.items() if v not in (None, "")}}
    return render("compare.html", page="compare", report=report, form=form, **family,
                  choices=views.candidates(store),
                  channels=views.filter_options(store, views.Selection(),
                                                ["channel"])["channel"] or [],
                  json_link=("/api/compare?" + urlencode(query)) if candidate else None)


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, store: Store) -> HTMLResponse:
    """Per submission date, what the runs counted: a data problem or a crash problem?"""
    params = _params(request)
    first = views.parse_day("first", params.get("first"))
    last = views.parse_day("last", params.get("last"))
    data = views.health(store, first, last)
    family = _family(store, params)
    query = urlencode({**family["family_param"],
                       **{k: data[k] for k in ("first", "last") if data[k]}})
    return render("health.html", page="health", data=data, json_link="/api/health?" + query,
                  **family)


def _int(name: str, text: str | None, low: int, high: int) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}: {text[:40]!r} is not a whole number") from None
    if not low <= value <= high:
        raise UsageError(f"{name}: must be between {low} and {high}")
    return value


def _float(name: str, text: str | None, default: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name}: {text[:40]!r} is not a number") from None
    if not 0 <= value <= 1e12:
        raise UsageError(f"{name}: must be between 0 and 1e12")
    return value


def error_page(status: int, message: str) -> HTMLResponse:
    return render("error.html", status=status, page="error", code=status, message=message)

