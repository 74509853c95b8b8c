"""The web dashboard and JSON API (`crash-aggregates serve`), read-only over SQLite or
PostgreSQL. Needs the `web` extra; this module imports nothing from it, so the CLI can say what
is missing in one line.

    app.py       the ASGI app (FastAPI): routes, errors, security headers
    readonly.py  read-only stores: a deadline on every request, a row cap on every query
    views.py     one dict per page or API answer
    api.py       /api/...; pages.py the HTML pages (Jinja2, autoescape); schemas.py the models
    server.py    uvicorn
"""

from __future__ import annotations

from importlib.util import find_spec

WEB_EXTRA = "pip install 'crash-rate-aggregates[web]'"
_NEEDS = ("fastapi", "uvicorn", "jinja2")


def missing_extra() -> str | None:
    """One line naming what to install when the web extra is missing, else None."""
    missing = [name for name in _NEEDS if find_spec(name) is None]
    if not missing:
        return None
    return f"the dashboard needs {', '.join(missing)}: {WEB_EXTRA}"
