"""The JSON API under /api/: rates, compare, dimension values, runs, and each page's data."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from .. import families, rules
from ..stores.queries import DateKind
from . import schemas, views
from .readonly import WebStore

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorBody, "description": text}
    for status, text in ((400, "Bad parameters (a date or number out of range too), an "
                          "unknown dimension, or too many rows"),
                         (404, "No such dimension, no baseline to compare with, or no data for "
                          "the candidate or the baseline in the dates"),
                         (503, "The store cannot be read, or stayed busy for the whole time "
                          "limit (with Retry-After)"),
                         (504, "The request took longer than the time limit"))
}

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)

# Patterns that document what the app checks itself (so its own messages stay): values
# without NUL, dimension names from the dimension table.
_NAMES = "|".join(rules.DIMENSION_NAMES)
VALUE = {"pattern": "^[^\\u0000]*$"}
PAIR = {"pattern": f"^({_NAMES})=[^\\u0000]+$"}
BY = {"pattern": f"^(({_NAMES})(,({_NAMES}))*)?$"}
FAMILY = {"pattern": f"^({'|'.join(families.FAMILIES)})$"}
FamilyName = Annotated[str | None, Query(
    max_length=40, json_schema_extra=FAMILY, description=(
        "Ping family: legacy (crash and main pings) or glean (Glean crash and baseline "
        "pings). Default: the one the store holds (or serve --family), else legacy."))]


async def get_store(request: Request, family: FamilyName = None) -> WebStore:
    """The store for this request, reading the family asked for (`?family=glean`): its
    statements, waits and row work end within the time limit from now. (Async, so it runs as
    the request arrives, not when a thread is free.)"""
    store: WebStore = request.app.state.store
    view = store.until(time.monotonic() + store.limits.timeout_ms / 1000)
    return view.for_family(family) if family else view


def _filters_dependency() -> Callable[..., dict[str, str]]:
    """One optional query parameter per dimension (`?channel=nightly&os_name=Linux`); empty
    ones are ignored."""

    def filters(**values: str | None) -> dict[str, str]:
        return {name: value for name, value in values.items() if value}

    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                          default=Query(None, max_length=views.MAX_VALUE_LENGTH,
                                        description=f"Only aggregates whose {name} is this.",
                                        json_schema_extra=VALUE))
        for name in rules.DIMENSION_NAMES
    ]
    setattr(filters, "__signature__",  # noqa: B010 (FastAPI reads the signature)
            inspect.Signature(parameters, return_annotation=dict[str, str]))
    return filters


Store = Annotated[WebStore, Depends(get_store)]
Filters = Annotated[dict[str, str], Depends(_filters_dependency())]
_RANGE = f"{views.EARLIEST.isoformat()} to {views.LATEST.isoformat()}; others are a 400"
# The years of views.EARLIEST..LATEST, for the description (the app checks the dates itself).
DAY = {"pattern": "^(19[7-9][0-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}$"}
First = Annotated[date | None, Query(
    description=f"First date, inclusive (YYYY-MM-DD, {_RANGE}).", json_schema_extra=DAY)]
Last = Annotated[date | None, Query(
    description=f"Last date, inclusive (YYYY-MM-DD, {_RANGE}).", json_schema_extra=DAY)]
Kind = Annotated[DateKind, Query(description="Which date first and last are on.")]


@router.get("/rates", response_model=schemas.Rates)
def rates(store: Store, filters: Filters, first: First = None, last: Last = None,
          date_kind: Kind = "submission",
          by: Annotated[str, Query(max_length=500, json_schema_extra=BY, description=(
              "Dimensions to group by, comma-separated; empty for one overall row."))
          ] = "channel",
          per_date: Annotated[bool, Query(description="One row per date too.")] = False,
          ) -> dict[str, Any]:
    """Crash rates per 1,000 usage hours with 95% intervals, per group.

    Example: `/api/rates?by=channel&first=2016-03-08&last=2016-03-14&os_name=Linux`
    """
    selection = views.Selection.requested(filters, first, last, date_kind)
    return views.rates(store, selection, [d for d in by.split(",") if d], per_date)


@router.get("/overview", response_model=schemas.Overview)
def overview(store: Store, filters: Filters, first: First = None, last: Last = None,
             date_kind: Kind = "activity") -> dict[str, Any]:
    """The overview page's data: daily rates by channel (default: the last 28 days)."""
    selection = views.Selection.requested(filters, first, last, date_kind)
    selection = selection.with_default_dates(store)
    return views.overview(store, selection)


@router.get("/compare", response_model=schemas.Comparison)
def compare(
    store: Store,
    candidate: Annotated[str, Query(
        max_length=views.MAX_VALUE_LENGTH, json_schema_extra=PAIR,
        description="DIMENSION=VALUE to judge, e.g. build_id=20160302030211.")],
    baseline: Annotated[str | None, Query(
        max_length=views.MAX_VALUE_LENGTH, json_schema_extra=PAIR,
        description="DIMENSION=VALUE to judge against (default: the previous value on the "
                    "channel; 404 when there is none).")] = None,
    channel: Annotated[str | None, Query(
        max_length=views.MAX_VALUE_LENGTH, json_schema_extra=VALUE,
        description="Channel (default: the candidate's main one).")] = None,
    first: First = None, last: Last = None, date_kind: Kind = "submission",
    days_since_release: Annotated[int | None, Query(ge=1, le=3650, description=(
        "Compare each side's first N activity days instead of first..last."))] = None,
    min_usage_hours: Annotated[float, Query(ge=0, le=1e12, allow_inf_nan=False, description=(
        "Below this on either side: 'not enough usage yet'."))] = 1000.0,
) -> dict[str, Any]:
    """A candidate build or version against a baseline: per crash type the rate ratio, its
    95% interval and a verdict.

    Example: `/api/compare?candidate=build_id=20160302030211&days_since_release=3`
    """
    selection = views.Selection.requested({}, first, last, date_kind)
    return views.comparison(store, candidate, baseline, channel, selection,
                            days_since_release, min_usage_hours)


@router.get("/dimensions", response_model=schemas.Dimensions)
def dimensions(store: Store) -> dict[str, Any]:
    """The dimensions that filters and groups can use (the family's: Glean has fewer)."""
    return {"family": store.family,
            "dimensions": list(families.family(store.family).DIMENSION_NAMES)}


@router.get("/dimensions/{name}", response_model=schemas.DimensionValues)
def dimension_values(store: Store,
                     name: Annotated[str, Path(json_schema_extra={
                         "enum": list(rules.DIMENSION_NAMES)})],
                     first: First = None, last: Last = None) -> dict[str, Any]:
    """The values a dimension takes on submission dates first..last, sorted.

    Example: `/api/dimensions/channel`
    """
    known = families.family(store.family).DIMENSION_NAMES
    if name not in known:
        raise HTTPException(404, f"unknown dimension {name[:60]!r}: use one of "
                                 + ", ".join(known))
    return views.dimension_values(store, name, first, last)


@router.get("/runs", response_model=schemas.Runs)
def runs(store: Store, first: First = None, last: Last = None) -> dict[str, Any]:
    """Every run record of submission dates first..last, oldest first, with its counters.

    Example: `/api/runs?first=2016-03-14`
    """
    return views.runs(store, first, last)


@router.get("/health", response_model=schemas.Health)
def health(store: Store, first: First = None, last: Last = None) -> dict[str, Any]:
    """The health page's data: per submission date, the latest run's counters."""
    return views.health(store, first, last)
