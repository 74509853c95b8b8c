"""The JSON API against its own OpenAPI description, with schemathesis, in-process.

Schemathesis generates requests from /openapi.json (dimension filters, dates, dimension names,
candidates...) and checks every answer: no server error, a documented status, a body that
matches the documented schema (the error shape included), the documented content type.
Bounded: a few examples per operation, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import sampled_from
from schemathesis.checks import positive_data_acceptance

from crash_rate_aggregates.web.app import create_app
from crash_rate_aggregates.web.readonly import open_readonly
from test_web_api import postgres_url, sample_pings, sqlite_url  # noqa: F401 (fixtures)

EXAMPLES = 20


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                                marks=pytest.mark.postgres)])
def web_schema(request: pytest.FixtureRequest) -> Iterator[Any]:
    store = open_readonly(str(request.getfixturevalue(f"{request.param}_url")))
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(store))
    finally:
        store.close()


# Every operation of the API; a test below checks the description has no other.
OPERATIONS = ["/api/rates", "/api/overview", "/api/compare", "/api/dimensions",
              "/api/dimensions/{name}", "/api/runs", "/api/health"]


def test_every_operation_is_exercised(web_schema: Any) -> None:
    described = [result.ok() for result in web_schema.get_all_operations()]
    assert sorted(op.path for op in described) == sorted(OPERATIONS)
    assert {op.method.upper() for op in described} == {"GET"}


@pytest.mark.parametrize("path", OPERATIONS)
def test_the_api_answers_as_its_openapi_description_says(web_schema: Any, path: str) -> None:
    # Schemathesis' own pytest fixture loader does not run on this pytest, so the cases come
    # from its strategy for the operation, run by Hypothesis here.
    strategy = web_schema[path]["GET"].as_strategy()
    # With days_since_release a candidate must be a build (build_id=YYYYMMDDhhmmss or
    # build_version=...): a rule between two parameters that OpenAPI cannot state, so such
    # schema-valid requests are 400s (whose body is still checked against the description).
    excluded = [positive_data_acceptance] if path == "/api/compare" else []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(excluded_checks=excluded)

    check()


# Operations with a date range, and the dates outside the range they accept.
DATED = ["/api/rates", "/api/overview", "/api/compare", "/api/dimensions/{name}", "/api/runs",
         "/api/health"]
OUT_OF_RANGE = ["9999-12-31", "0001-01-01", "1969-12-31", "3000-01-01"]


@pytest.mark.parametrize("path", DATED)
def test_out_of_range_dates_are_documented_400s(web_schema: Any, path: str) -> None:
    """Generated requests with `first` or `last` moved out of range: a 400 whose body is the
    documented error shape, never a server error."""
    strategy = web_schema[path]["GET"].as_strategy()

    @settings(max_examples=len(OUT_OF_RANGE) * 2, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, day=sampled_from(OUT_OF_RANGE), name=sampled_from(["first", "last"]))
    def check(case: Any, day: str, name: str) -> None:
        case.query = {**(case.query or {}), name: day}
        response = case.call_and_validate()
        assert response.status_code == 400, (case.query, response.text)
        assert response.json()["error"]["status"] == 400

    check()
