"""`crash-aggregates serve`: the dashboard on uvicorn, over a store opened read-only."""

from __future__ import annotations

import uvicorn

from ..stores.base import redact
from .app import create_app
from .readonly import Limits, open_readonly


def serve(db_url: str | None, host: str, port: int, limits: Limits) -> None:
    """Serve until interrupted. Store errors at start-up raise StoreError (one line)."""
    store = open_readonly(db_url, limits)
    app = create_app(store, close_store=True)
    print(f"crash-aggregates dashboard on http://{host}:{port}/ reading {redact(store.url)} "
          f"read-only (queries limited to {limits.timeout_ms:,} ms and "
          f"{limits.max_rows:,} rows)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
