"""The dashboard's ASGI app: pages, the JSON API, static files, and one shape for every error.

Errors under /api/ (and anything that asks for JSON) are `{"error": {"status": S, "message":
M}}`: 400 for bad parameters (dates out of range and arithmetic that would leave the calendar
included), unknown dimensions and answers over the row cap; 404 for unknown paths and
dimensions, a candidate without a baseline and a side without data; 405; 503 when the store
cannot be read or every connection stayed busy for the time limit (with Retry-After); 504 past
the time limit; 500 for anything else (without details, which go to the log). Pages show the
same message as HTML, with the same status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import CrashAggregatesError, StoreError, UsageError
from ..reports import NoDataError
from . import api, pages
from .readonly import Busy, QueryTimeout, TooManyRows, WebStore
from .views import NotFound

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 503 for a busy store.
RETRY_AFTER = "1"
#: Sent with every answer: scripts and styles only from this server, no framing, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def wants_json(request: Request) -> bool:
    path = request.url.path
    return (path.startswith("/api/") or path == "/openapi.json"
            or "application/json" in request.headers.get("accept", ""))


def error_response(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": {"status": status, "message": message}},
                            status_code=status)
    return pages.error_page(status, message)


def status_of(exc: CrashAggregatesError) -> int:
    if isinstance(exc, QueryTimeout):
        return 504
    if isinstance(exc, NotFound | NoDataError):
        return 404
    if isinstance(exc, UsageError | TooManyRows):
        return 400
    if isinstance(exc, StoreError):
        return 503
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where
                        else str(error.get("msg", "invalid")))
    return "; ".join(problems) or "invalid parameters"


def install_error_handlers(app: FastAPI) -> None:
    async def on_project_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CrashAggregatesError)
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        response = error_response(request, status, str(exc))
        if isinstance(exc, Busy):
            response.headers["Retry-After"] = RETRY_AFTER
        return response

    async def on_overflow(request: Request, exc: Exception) -> Response:
        # A date or number from the request that some arithmetic pushed past what it can hold.
        return error_response(request, 400, "a date or number is out of range")

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, 400, _validation_message(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such page: {request.url.path[:200]}"
        response = error_response(request, exc.status_code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(request, 500, "internal error: see the server's log")

    app.add_exception_handler(CrashAggregatesError, on_project_error)
    app.add_exception_handler(OverflowError, on_overflow)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's description, with its 422 answers replaced by the 400 the app gives."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    return build


def create_app(store: WebStore, *, close_store: bool = False) -> FastAPI:
    """The dashboard over an open read-only store (web.readonly.open_readonly)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_store:
            store.close()

    app = FastAPI(
        title="crash-rate-aggregates",
        version=__version__,
        description=("Crash rates per 1,000 usage hours with 95% intervals, build "
                     "comparisons and run health, read-only from the aggregates store. "
                     "Every error is {\"error\": {\"status\": S, \"message\": M}}."),
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN
        lifespan=lifespan,
    )
    app.state.store = store
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app)

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")
    _refuse_unknown_parameters(app)
    return app


def _refuse_unknown_parameters(app: FastAPI) -> None:
    """An API query parameter the endpoint does not take is a 400 naming it: `?from=` (the API
    says `first`) used to be ignored, answering for every date as if asked. (The routes are
    read from the API's router: the app wraps included routers.)"""
    from fastapi.routing import APIRoute
    from starlette.routing import Match

    def query_names(dependant: Any) -> set[str]:  # the route's and its dependencies'
        names = {param.alias for param in dependant.query_params}
        for dependency in dependant.dependencies:
            names |= query_names(dependency)
        return names

    taken = [(route, query_names(route.dependant)) for route in api.router.routes
             if isinstance(route, APIRoute)]

    @app.middleware("http")
    async def known_parameters(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith("/api/"):
            for route, names in taken:
                if route.matches(request.scope)[0] is Match.FULL:
                    unknown = sorted(set(request.query_params) - names)
                    if unknown:
                        return error_response(request, 400, (
                            f"unknown parameter {unknown[0][:100]!r}: {route.path} takes "
                            f"{', '.join(sorted(names)) or 'none'}"))
                    break
        return await call_next(request)
